//! `arca bench load` against the real server: every secret it counts is readable afterwards
//! with the name and size it promised, its summary is exact, and a refused write stops it
//! with exit code 1 and the server's reason, never a value.

mod common;

use common::{ArcaServer, arca_cli};
use serde_json::Value;

fn dev_server(dir: &std::path::Path) -> ArcaServer {
    ArcaServer::start_with(&[
        "--dev".into(),
        "--data-dir".into(),
        dir.join("data").into_os_string(),
        "--dev-root-token".into(),
        "bench-root".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn loads_numbered_secrets_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = dev_server(dir.path());
    let env = [("ARCA_ADDR", server.addr()), ("ARCA_TOKEN", "bench-root")];
    let run = arca_cli(
        &[
            "bench",
            "load",
            "--count",
            "120",
            "--start",
            "5",
            "--prefix",
            "scale/",
            "--width",
            "6",
            "--concurrency",
            "8",
            "--size",
            "100",
            "--format",
            "json",
        ],
        &env,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let summary: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(summary["written"], 120, "{summary}");
    assert_eq!(summary["first"], 5);
    assert_eq!(summary["width"], 6);
    assert!(summary["per_second"].as_f64().unwrap() > 0.0);

    let api = server.api().with_token("bench-root");
    let list = api.get("secret/metadata/scale/?list=true").await;
    assert_eq!(list.status, 200, "{}", list.text);
    let keys: Vec<&str> = list.json["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let expected: Vec<String> = (5..125).map(|n| format!("{n:06}")).collect();
    assert_eq!(keys, expected, "exactly the numbers promised, zero-padded");

    let mut values = std::collections::HashSet::new();
    for name in ["000005", "000064", "000124"] {
        let read = api.get(&format!("secret/data/scale/{name}")).await;
        assert_eq!(read.status, 200, "{}", read.text);
        let data = &read.json["data"]["data"];
        assert_eq!(
            serde_json::to_string(data).unwrap().len(),
            100,
            "the data object is --size bytes of JSON: {data}"
        );
        assert_eq!(read.json["data"]["metadata"]["version"], 1);
        values.insert(data["value"].as_str().unwrap().to_owned());
    }
    assert_eq!(values.len(), 3, "values are random, not repeated");

    // The default table output names the range written.
    let run = arca_cli(&["bench", "load", "--count", "3"], &env);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout
            .contains("wrote 3 secrets to secret/data/load/[0..2]"),
        "{run:?}"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_write_stops_the_load_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = dev_server(dir.path());
    let run = arca_cli(
        &["bench", "load", "--count", "10", "--format", "json"],
        &[("ARCA_ADDR", server.addr()), ("ARCA_TOKEN", "not-a-token")],
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("403"), "{run:?}");
    assert!(run.stderr.contains("secret/data/load/"), "{run:?}");
    let summary: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(summary["written"], 0);

    let run = arca_cli(
        &["bench", "load", "--count", "10"],
        &[("ARCA_ADDR", server.addr())],
    );
    assert_eq!(run.code, Some(1), "no token: {run:?}");
    assert!(run.stderr.contains("token"), "{run:?}");
    server.stop();
}
