//! The HTTP ceiling of the comparison harness (`benches/compare/run.sh`): an axum server on
//! the same stack as arca (axum 0.8, hyper, the multi-threaded tokio runtime) that answers
//! every request, whatever its method and path, with a small JSON body and does nothing else.
//!
//! Whatever a real server does per request comes on top of this, so the rate this server
//! reaches for a request shape is the most any server on this stack could reach on the same
//! machine with the same load generator, which shares the machine's cores. The harness sends
//! it every workload's requests unchanged and reports each server as a fraction of it.
//!
//! It reads the request body (as a real handler would) and prints
//! `hello listening on http://ADDR` once it listens, like `arca server`, so the harness learns
//! the port of a `127.0.0.1:0` listener. It stops on SIGTERM or SIGINT.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;

/// The answer to every request: about the size of a small Vault answer's envelope.
const BODY: &str =
    r#"{"request_id":"00000000-0000-0000-0000-000000000000","data":{"hello":"world"}}"#;

async fn hello(body: Bytes) -> impl IntoResponse {
    // Read the body like a real handler; its length is of no interest.
    drop(body);
    ([(header::CONTENT_TYPE, "application/json")], BODY)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("usage: compare-hello [127.0.0.1:PORT]: {e}"),
            )
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("hello listening on http://{}", listener.local_addr()?);
    let app = Router::new().fallback(hello);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("cannot install signal handlers; stop compare-hello with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
