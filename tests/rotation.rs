//! Rotation without a database: the built-in rotator, the external command rotator (the
//! value on standard input only, failures leaving AWSCURRENT in place, timeouts), retries with
//! backoff, scheduled rotation under paused time, and rotations missed while arca was down.
#![allow(clippy::unwrap_used)]

mod rotation_common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arca::lifecycle::rotation::{
    BUILTIN_ROTATOR, Clock, CommandSpec, RotateRequest, RotationSettings, Scheduler,
    SchedulerOptions, next_rotation, rotate_now, unix_now,
};
use arca::lifecycle::{AWSPENDING, AWSPREVIOUS, RotationRules, SecretType, SecretsError};
use arca::storage::MemoryBackend;
use rotation_common::*;

fn rules(expression: &str) -> RotationRules {
    RotationRules {
        schedule_expression: Some(expression.into()),
        ..RotationRules::default()
    }
}

fn immediately(rotator: Option<&str>) -> RotateRequest {
    RotateRequest {
        rotator: rotator.map(str::to_owned),
        rotate_immediately: true,
        ..RotateRequest::default()
    }
}

#[tokio::test]
async fn builtin_rotation_moves_the_labels() {
    let arca = memory_arca().await;
    let first = arca::lifecycle::generate::api_key().unwrap();
    create(
        &arca,
        "svc/key",
        SecretType::ApiKey,
        &format!(r#"{{"api_key": "{}"}}"#, first.as_str()),
        "{}",
    )
    .await;
    let before = current(&arca, "svc/key").await;
    let rotated = rotate_now(&arca, REGION, "svc/key", immediately(None))
        .await
        .unwrap();
    let after = current(&arca, "svc/key").await;
    assert_eq!(
        rotated.version_id.as_deref(),
        Some(after.version_id.as_str())
    );
    assert_ne!(after.version_id, before.version_id);
    let key = json_of(&after)["api_key"].as_str().unwrap().to_owned();
    assert!(arca::lifecycle::generate::validate_api_key(&key));
    assert_ne!(key, first.as_str());
    assert_eq!(
        version(&arca, "svc/key", AWSPREVIOUS).await.version_id,
        before.version_id
    );
    let described = describe(&arca, "svc/key").await;
    assert!(described.rotation.last_rotated.is_some());
    assert!(
        described
            .versions
            .iter()
            .all(|v| !v.stages.iter().any(|s| s == AWSPENDING))
    );

    // The same token again is the same rotation: AWSCURRENT already holds it.
    let token = "0123456789abcdef0123456789abcdef";
    let once = rotate_now(
        &arca,
        REGION,
        "svc/key",
        RotateRequest {
            client_request_token: Some(token.into()),
            ..immediately(Some(BUILTIN_ROTATOR))
        },
    )
    .await
    .unwrap();
    assert_eq!(once.version_id.as_deref(), Some(token));

    // Unknown rotators and paths are refused before anything happens.
    for bad in [
        "arca:rotator:command:none",
        "/bin/sh",
        "arn:aws:lambda:us-east-1:1:function:f",
    ] {
        let refused = rotate_now(&arca, REGION, "svc/key", immediately(Some(bad))).await;
        assert!(
            matches!(refused, Err(SecretsError::InvalidParameter(_))),
            "{bad}: {refused:?}"
        );
    }
    assert_eq!(current(&arca, "svc/key").await.version_id, token);
}

/// A command rotator script that logs each call's arguments, environment and input to files
/// in `dir`, and fails the step named in `dir/fail` (if that file exists).
fn write_script(dir: &Path) -> PathBuf {
    let script = dir.join("rotate.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
[ "$1" = "rotate" ] || exit 9
step="$2"
log="{dir}"
cat > "$log/stdin.$step"
printf '%s\n' "$@" > "$log/argv.$step"
env > "$log/env.$step"
echo "$step" >> "$log/steps"
if [ -f "$log/sleep" ] && [ "$step" = "setSecret" ]; then sleep 30; fi
if [ -f "$log/fail" ] && [ "$(cat "$log/fail")" = "$step" ]; then exit 3; fi
exit 0
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn command_settings(script: &Path, timeout_secs: u64) -> RotationSettings {
    RotationSettings {
        commands: BTreeMap::from([(
            "app".to_owned(),
            CommandSpec {
                command: script.to_owned(),
                args: vec!["rotate".into()],
                timeout_secs,
            },
        )]),
        retry_base_secs: 60,
        retry_max_secs: 3600,
        ..RotationSettings::default()
    }
}

#[tokio::test]
async fn command_rotator_gets_the_value_on_stdin_only() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path());
    let arca = memory_arca().await;
    arca.rotations()
        .configure(command_settings(&script, 10))
        .unwrap();
    let audit_path = dir.path().join("audit.log");
    arca.audit()
        .enable(arca::audit::Device::from_config(&audit_path).unwrap());
    create(
        &arca,
        "app/token",
        SecretType::Generic,
        "initial-value",
        r#"{"password_length": 40, "exclude_punctuation": true}"#,
    )
    .await;

    let rotated = rotate_now(
        &arca,
        REGION,
        "app/token",
        immediately(Some("arca:rotator:command:app")),
    )
    .await
    .unwrap();
    let new_value = value_text(&current(&arca, "app/token").await);
    assert_eq!(new_value.len(), 40);
    let steps = std::fs::read_to_string(dir.path().join("steps")).unwrap();
    assert_eq!(steps, "setSecret\ntestSecret\nfinishSecret\n");
    for step in ["setSecret", "testSecret", "finishSecret"] {
        let stdin = std::fs::read_to_string(dir.path().join(format!("stdin.{step}"))).unwrap();
        assert_eq!(stdin, new_value, "{step} got another value");
        let argv = std::fs::read_to_string(dir.path().join(format!("argv.{step}"))).unwrap();
        assert_eq!(argv, format!("rotate\n{step}\n"));
        let env = std::fs::read_to_string(dir.path().join(format!("env.{step}"))).unwrap();
        assert!(
            !env.contains(&new_value),
            "the value leaked into the environment"
        );
        assert!(env.contains(&format!(
            "ARCA_SECRET_VERSION_ID={}",
            rotated.version_id.as_deref().unwrap()
        )));
        assert!(env.contains("ARCA_SECRET_NAME=app/token"));
        assert!(!env.contains("CARGO"), "arca's environment was passed on");
    }
    let log = std::fs::read_to_string(&audit_path).unwrap();
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        assert!(
            log.contains(&format!("rotation:{step}")),
            "no audit line for {step}"
        );
    }
    assert!(!log.contains(&new_value), "the value reached the audit log");
    // The secret remembers its rotator.
    assert_eq!(
        describe(&arca, "app/token")
            .await
            .rotation
            .rotator
            .as_deref(),
        Some("arca:rotator:command:app")
    );
}

#[tokio::test]
async fn a_failed_test_step_leaves_awscurrent_and_retries_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path());
    let arca = memory_arca().await;
    arca.rotations()
        .configure(command_settings(&script, 10))
        .unwrap();
    let audit_path = dir.path().join("audit.log");
    arca.audit()
        .enable(arca::audit::Device::from_config(&audit_path).unwrap());
    create(
        &arca,
        "app/token",
        SecretType::Generic,
        "initial-value",
        "{}",
    )
    .await;
    let before = current(&arca, "app/token").await;
    std::fs::write(dir.path().join("fail"), "testSecret").unwrap();

    // With a schedule, so the failure is retried by the scheduler.
    let start = unix_now();
    let failed = rotate_now(
        &arca,
        REGION,
        "app/token",
        RotateRequest {
            rules: Some(rules("rate(1 days)")),
            ..immediately(Some("arca:rotator:command:app"))
        },
    )
    .await;
    let Err(SecretsError::InvalidRequest(message)) = failed else {
        panic!("the rotation should fail: {failed:?}");
    };
    assert!(message.contains("testSecret"), "{message}");
    assert!(message.contains("exited"), "{message}");
    let after = current(&arca, "app/token").await;
    assert_eq!(after.version_id, before.version_id, "AWSCURRENT moved");
    assert_eq!(value_text(&after), "initial-value");
    let pending = version(&arca, "app/token", AWSPENDING).await;
    let state = describe(&arca, "app/token").await.rotation;
    let failure = state.last_failure.clone().unwrap();
    assert_eq!(failure.step, "testSecret");
    assert_eq!(failure.attempts, 1);
    assert!(!failure.message.contains(&value_text(&pending)));
    // First retry: 60 s, minus up to half of it for jitter.
    let retry = state.next_rotation.unwrap();
    assert!(
        (start + 30..=unix_now() + 60).contains(&retry),
        "retry at {retry}, start {start}"
    );
    let log = std::fs::read_to_string(&audit_path).unwrap();
    assert!(log.contains("\"failed\"") && log.contains("rotation:testSecret"));
    assert!(!log.contains(&value_text(&pending)));

    // A second failure doubles the delay (120 s, jitter up to half).
    let again = rotate_now(&arca, REGION, "app/token", immediately(None)).await;
    assert!(again.is_err());
    let state = describe(&arca, "app/token").await.rotation;
    assert_eq!(state.last_failure.as_ref().unwrap().attempts, 2);
    let retry = state.next_rotation.unwrap();
    assert!(
        (start + 60..=unix_now() + 120).contains(&retry),
        "second retry at {retry}"
    );
    // The same pending version is reused: no new version per attempt.
    assert_eq!(
        version(&arca, "app/token", AWSPENDING).await.version_id,
        pending.version_id
    );

    // Once the target accepts it, the rotation resumes with that version and clears the failure.
    std::fs::remove_file(dir.path().join("fail")).unwrap();
    let done = rotate_now(&arca, REGION, "app/token", immediately(None))
        .await
        .unwrap();
    assert_eq!(
        done.version_id.as_deref(),
        Some(pending.version_id.as_str())
    );
    assert_eq!(
        value_text(&current(&arca, "app/token").await),
        value_text(&pending)
    );
    let state = describe(&arca, "app/token").await.rotation;
    assert!(state.last_failure.is_none());
    assert_eq!(
        state.next_rotation,
        next_rotation(&rules("rate(1 days)"), state.last_rotated.unwrap()).unwrap()
    );
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_and_the_step_fails() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path());
    std::fs::write(dir.path().join("sleep"), "").unwrap();
    let arca = memory_arca().await;
    arca.rotations()
        .configure(command_settings(&script, 1))
        .unwrap();
    create(
        &arca,
        "app/slow",
        SecretType::Generic,
        "initial-value",
        "{}",
    )
    .await;
    let started = std::time::Instant::now();
    let failed = rotate_now(
        &arca,
        REGION,
        "app/slow",
        immediately(Some("arca:rotator:command:app")),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(15));
    let Err(SecretsError::InvalidRequest(message)) = failed else {
        panic!("{failed:?}");
    };
    assert!(
        message.contains("setSecret") && message.contains("killed"),
        "{message}"
    );
    assert_eq!(
        value_text(&current(&arca, "app/slow").await),
        "initial-value"
    );
}

/// Polls `check` with tokio's clock, a virtual second at a time.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(start_paused = true)]
async fn the_scheduler_rotates_when_the_window_opens() {
    let arca = memory_arca().await;
    create(
        &arca,
        "app/daily",
        SecretType::Generic,
        "initial-value",
        "{}",
    )
    .await;
    let start = unix_now();
    let scheduler = Scheduler::start_with(
        Arc::clone(&arca),
        SchedulerOptions {
            clock: Clock::tokio_from(start),
            ..SchedulerOptions::default()
        },
    );
    // Set the schedule without rotating now: the next window opens at the next UTC midnight.
    let saved = rotate_now(
        &arca,
        REGION,
        "app/daily",
        RotateRequest {
            rules: Some(rules("rate(1 days)")),
            ..RotateRequest::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(saved.version_id, None);
    let due = describe(&arca, "app/daily")
        .await
        .rotation
        .next_rotation
        .unwrap();
    assert_eq!(due % 86_400, 0);
    assert!(due > start);

    // A minute before the window nothing has happened.
    tokio::time::sleep(Duration::from_secs(due - start - 60)).await;
    assert_eq!(
        value_text(&current(&arca, "app/daily").await),
        "initial-value"
    );

    // Then the scheduler wakes and rotates, and schedules the next day.
    tokio::time::sleep(Duration::from_secs(120)).await;
    eventually("the scheduled rotation", || async {
        value_text(&current(&arca, "app/daily").await) != "initial-value"
    })
    .await;
    let state = describe(&arca, "app/daily").await.rotation;
    let rotated_at = state.last_rotated.unwrap();
    assert!(
        (due..due + 180).contains(&rotated_at),
        "rotated at {rotated_at}, due {due}"
    );
    assert_eq!(state.next_rotation, Some(due + 86_400));

    // And the day after, again.
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    eventually("the second rotation", || async {
        describe(&arca, "app/daily")
            .await
            .rotation
            .last_rotated
            .unwrap()
            >= due + 86_400
    })
    .await;
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn rotations_missed_while_down_run_at_startup_after_unseal() {
    let backend = Arc::new(MemoryBackend::new());
    let (arca, share) = open_unsealed(backend.clone(), None).await;
    create(
        &arca,
        "app/missed",
        SecretType::Generic,
        "initial-value",
        "{}",
    )
    .await;
    rotate_now(
        &arca,
        REGION,
        "app/missed",
        RotateRequest {
            rules: Some(rules("rate(1 days)")),
            ..RotateRequest::default()
        },
    )
    .await
    .unwrap();
    let due = describe(&arca, "app/missed")
        .await
        .rotation
        .next_rotation
        .unwrap();
    drop(arca);

    // arca comes back three days later, sealed: the scheduler waits for the unseal.
    let reopened = Arc::new(
        arca::Arca::open(
            backend,
            arca::config::StorageKind::Memory,
            arca::seal::SealConfig::Shamir,
        )
        .await
        .unwrap(),
    );
    let restart = due + 3 * 86_400;
    let scheduler = Scheduler::start_with(
        Arc::clone(&reopened),
        SchedulerOptions {
            clock: Clock::tokio_from(restart),
            ..SchedulerOptions::default()
        },
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(reopened.barrier().is_sealed());
    reopened.seal().submit_share(&share).await.unwrap();
    eventually("the missed rotation", || async {
        value_text(&current(&reopened, "app/missed").await) != "initial-value"
    })
    .await;
    let state = describe(&reopened, "app/missed").await.rotation;
    let rotated_at = state.last_rotated.unwrap();
    assert!(
        (restart..restart + 60).contains(&rotated_at),
        "rotated at {rotated_at}"
    );
    // Once, not three times: the next window is the one after the catch-up.
    assert_eq!(
        state.next_rotation,
        Some((rotated_at / 86_400 + 1) * 86_400)
    );
    scheduler.shutdown().await;
}
