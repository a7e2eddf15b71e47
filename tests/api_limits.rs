//! What one caller can hold of the API: a slow or idle connection is closed after the
//! header-read timeout (a blocking query in flight is not), and connections over the cap
//! are answered 503 and closed at once.

use crate::support::kubelet::AtomicDir;
use crate::support::*;
use connd::metrics::Metrics;
use connd::reload::Reloader;
use connd::serve::api::auth::Allow;
use connd::serve::api::client::request;
use connd::serve::api::server::{self, ApiStateParts, Limits};
use http::Method;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PATIENCE: Duration = Duration::from_secs(10);

struct Api {
    socket: PathBuf,
    _reloader: Reloader,
    _tmp: tempfile::TempDir,
    _dir: AtomicDir,
    _server: tokio::task::JoinHandle<()>,
}

async fn start(limits: Limits) -> Api {
    let dir = AtomicDir::new(&refs(&files("5432")));
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("connd.sock");
    let listener = server::bind(&socket, 0o600, None).expect("bind");
    let metrics = Arc::new(Metrics::default());
    let sources = Arc::new(connd::source::Local);
    let cfg = config(dir.path(), Duration::from_secs(3600));
    let reloader = Reloader::start(cfg, sources.clone(), metrics.clone(), std::future::pending());
    reloader.ready(PATIENCE).await.expect("ready");
    let parts = ApiStateParts { store: reloader.store().clone(), sources, metrics };
    let allow = Allow::new(vec![], vec![]);
    let grace = Duration::from_secs(1);
    let server = tokio::spawn(server::serve_with(listener, parts, allow, grace, limits, std::future::pending()));
    Api { socket, _reloader: reloader, _tmp: tmp, _dir: dir, _server: server }
}

/// Reads until the server closes the connection; what it sent.
async fn read_to_close(stream: &mut UnixStream, what: &str) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("the server never closed {what}"))
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

async fn connect(socket: &Path) -> UnixStream {
    UnixStream::connect(socket).await.expect("connect")
}

#[tokio::test]
async fn a_partial_head_and_an_idle_connection_are_closed() {
    let api = start(Limits { header_read_timeout: Duration::from_millis(200), max_connections: 64 }).await;
    let mut slow = connect(&api.socket).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    read_to_close(&mut slow, "a connection whose head never ends").await;

    let mut idle = connect(&api.socket).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let text = read_to_close(&mut idle, "a kept-alive connection left idle").await;
    assert!(text.starts_with("HTTP/1.1 200"), "the request itself was answered: {text}");
}

#[tokio::test]
async fn a_blocking_query_outlives_the_header_timeout() {
    let api = start(Limits { header_read_timeout: Duration::from_millis(100), max_connections: 64 }).await;
    // Parked for a second, ten header timeouts: answered when `wait` runs out, not cut.
    let a = request(&api.socket, Method::GET, "/v1/env?index=1&wait=1s").await.expect("answered");
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.text().contains("CHOREO_MAIN_DB_PORT"), "{}", a.text());
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_are_closed() {
    let api = start(Limits { header_read_timeout: Duration::from_secs(60), max_connections: 2 }).await;
    // Two connections that send nothing hold both slots.
    let first = connect(&api.socket).await;
    let _second = connect(&api.socket).await;
    let mut third = connect(&api.socket).await;
    let text = read_to_close(&mut third, "a connection over the cap").await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("\"code\":\"busy\"") && text.contains("too many open connections"), "{text}");

    // A slot freed is a slot reused.
    drop(first);
    let start = std::time::Instant::now();
    loop {
        let a = request(&api.socket, Method::GET, "/healthz").await.expect("request");
        if a.status == 200 {
            break;
        }
        assert_eq!(a.status, 503, "{}", a.text());
        assert!(start.elapsed() < PATIENCE, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
