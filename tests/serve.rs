//! `connd serve` in-process over a real Unix socket, on local values: every route and
//! error, readiness, blocking queries. The remote sources (control plane down and back,
//! token refresh) are tested on the binary in `serve_remote`.

use crate::support::kubelet::AtomicDir;
use crate::support::*;
use connd::serve::api::auth::Allow;
use connd::serve::api::client::{request, Answer};
use connd::serve::{run, ServeSettings};
use connd::source::Local;
use http::Method;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Server {
    pub socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    _tmp: tempfile::TempDir,
}

impl Server {
    pub async fn start(dir: &Path, refresh: Duration) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("run/connd.sock");
        let listener = connd::serve::api::server::bind(&socket, 0o660, None).expect("bind");
        let settings = ServeSettings {
            reload: crate::support::config(dir, refresh),
            allow: Allow::new(vec![], vec![]),
            startup_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(2),
            notify_socket: None,
            sighup: false,
            limits: Default::default(),
            metrics_listener: None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, settings, Arc::new(Local), Arc::default(), async {
            let _ = stopped.await;
        }));
        Server { socket, stop: Some(stop), task, _tmp: tmp }
    }

    pub async fn get(&self, target: &str) -> Answer {
        self.call(Method::GET, target).await
    }

    pub async fn call(&self, method: Method, target: &str) -> Answer {
        request(&self.socket, method, target).await.expect("request")
    }

    /// Waits (up to 5 s) until `/readyz` says 200.
    pub async fn ready(&self) {
        let start = Instant::now();
        while self.get("/readyz").await.status != 200 {
            assert!(start.elapsed() < Duration::from_secs(5), "not ready: {}", self.get("/readyz").await.text());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), &mut self.task).await.expect("stops").unwrap().unwrap();
    }
}

fn json(a: &Answer) -> Value {
    serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", a.text()))
}

fn index(a: &Answer) -> u64 {
    a.headers["x-connd-index"].to_str().unwrap().parse().unwrap()
}

#[track_caller]
fn assert_error(a: &Answer, status: u16, code: &str, needles: &[&str]) {
    assert_eq!(a.status, status, "{}", a.text());
    let v = json(a);
    assert_eq!(v["code"], code, "{}", a.text());
    assert_contains(v["error"].as_str().unwrap(), needles);
}

#[tokio::test]
async fn every_route_and_error() {
    let dir = AtomicDir::new(&refs(&files("5432")));
    let server = Server::start(dir.path(), Duration::from_secs(3600)).await;
    server.ready().await;

    let env = server.get("/v1/env").await;
    assert_eq!(env.status, 200);
    assert_eq!(env.headers["content-type"], "application/json");
    let v = json(&env);
    assert_eq!(v["CHOREO_MAIN_DB_PORT"], "5432");
    assert_eq!(v["CHOREO_API_X_SERVICEURL"], "https://api.example");
    assert_eq!(index(&env), 1);

    let dotenv = server.get("/v1/env?format=dotenv").await;
    assert_contains(&dotenv.text(), &["CHOREO_MAIN_DB_PORT='5432'\n", "CHOREO_MAIN_DB_HOSTNAME='pg.internal'\n"]);

    let head = server.call(Method::HEAD, "/v1/env").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.headers["content-length"].to_str().unwrap(), env.body.len().to_string());

    let list = json(&server.get("/v1/connections").await);
    let names: Vec<&str> =
        list["connections"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["main-db", "api-x"]);
    let db = &list["connections"][0];
    assert_eq!((db["id"].as_str(), db["type"].as_str()), (Some(DB_ID), Some("database")));
    assert_eq!(db["keys"], serde_json::json!(["HostName", "Port"]));
    assert!(!list.to_string().contains("pg.internal"), "the listing holds no values: {list}");

    let one = server.get("/v1/connections/api-x").await;
    let v = json(&one);
    assert_eq!((v["id"].as_str(), v["visibility"].as_str()), (Some(API_ID), Some("project")));
    assert_eq!(v["parameters"]["ServiceURL"], "https://api.example");
    assert_eq!(index(&one), 1);

    assert_eq!(json(&server.get("/healthz").await)["status"], "serving");
    assert_eq!(json(&server.get("/readyz").await)["status"], "ready");

    assert_error(&server.get("/v1/connections/nope").await, 404, "no_such_connection", &["\"nope\"", "main-db, api-x"]);
    assert_error(&server.get("/v1/connections/api-x/token").await, 404, "not_oauth", &["api-x", "oauth2"]);
    assert_error(&server.get("/v2/things").await, 404, "not_found", &["/v2/things"]);
    assert_error(&server.get("/v1/env?index=abc").await, 400, "bad_query", &["index=\"abc\" is not a whole number"]);
    assert_error(&server.get("/v1/env?wait=soon").await, 400, "bad_query", &["\"soon\" is not a duration"]);
    assert_error(&server.get("/v1/env?format=yaml").await, 400, "bad_query", &["use json or dotenv"]);
    // Routes that read no query ignore one.
    assert_eq!(server.get("/healthz?index=x").await.status, 200);
    assert_eq!(server.get("/readyz?index=x&wait=soon").await.status, 200);
    let post = server.call(Method::POST, "/v1/env").await;
    assert_error(&post, 405, "method_not_allowed", &["POST is not allowed"]);
    assert_eq!(post.headers["allow"], "GET, HEAD");
    let long = format!("/v1/connections/{}", "a".repeat(2000));
    assert_error(&server.get(&long).await, 414, "uri_too_long", &["over the limit of 1024"]);

    // A request head over the limit is refused before routing. It is sent in pieces, so
    // that the server has read all of it when it answers and closes.
    let raw = tokio::net::UnixStream::connect(&server.socket).await.unwrap();
    let (mut rd, mut wr) = raw.into_split();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let _ = rd.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    });
    let _ = wr.write_all(b"GET /v1/env HTTP/1.1\r\nHost: x\r\n").await;
    for _ in 0..40 {
        if wr.write_all(format!("X-Big: {}\r\n", "b".repeat(1000)).as_bytes()).await.is_err() || reader.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let answer = reader.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let metrics = server.get("/metrics").await;
    assert_eq!(metrics.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    assert_contains(
        &metrics.text(),
        &[
            "connd_api_requests_total{route=\"env\",code=\"200\"} 3",
            "connd_api_requests_total{route=\"env\",code=\"400\"} 3",
            "connd_api_requests_total{route=\"other\",code=\"405\"} 1",
            "connd_api_requests_total{route=\"connection\",code=\"404\"} 1",
            "connd_reloads_total{result=\"changed\"} 1",
            "connd_ready 1",
        ],
    );
    for secret in ["5432", "pg.internal"] {
        assert!(!metrics.text().contains(secret));
    }
    server.stop().await;
}

#[tokio::test]
async fn not_ready_with_the_reason_until_the_directory_is_fixed() {
    let mut broken = files("5432");
    broken[2].1 = broken[2].1.replace("name: api-x", "name: api-x\nbogus: 1");
    let mut dir = AtomicDir::new(&refs(&broken));
    let server = Server::start(dir.path(), Duration::from_secs(3600)).await;
    let start = Instant::now();
    let not_ready = loop {
        let a = server.get("/readyz").await;
        if json(&a)["error"].as_str().is_some_and(|e| e.contains("bogus")) {
            break a;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no reason on /readyz: {}", a.text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_error(&not_ready, 503, "not_ready", &["not ready", "connections.yaml", "bogus"]);
    assert_error(&server.get("/v1/env").await, 503, "not_ready", &["bogus"]);
    assert_eq!(server.get("/healthz").await.status, 200);

    dir.update(&refs(&files("5432")));
    server.ready().await;
    assert_eq!(json(&server.get("/v1/env").await)["CHOREO_MAIN_DB_PORT"], "5432");
    server.stop().await;
}

#[tokio::test]
async fn a_blocking_query_is_woken_by_a_change() {
    let mut dir = AtomicDir::new(&refs(&files("5432")));
    let server = Arc::new(Server::start(dir.path(), Duration::from_secs(3600)).await);
    server.ready().await;
    let first = server.get("/v1/env").await;
    let i = index(&first);

    // `wait` runs out: the same index and body again.
    let same = server.get(&format!("/v1/env?index={i}&wait=200ms")).await;
    assert_eq!((index(&same), same.body.clone()), (i, first.body.clone()));
    // An older index answers at once.
    assert_eq!(index(&server.get("/v1/env?index=0&wait=30s").await), i);

    let socket = server.socket.clone();
    let env_waiter =
        tokio::spawn(async move { request(&socket, Method::GET, &format!("/v1/env?index={i}&wait=30s")).await });
    let socket = server.socket.clone();
    let api_waiter =
        tokio::spawn(async move { request(&socket, Method::GET, "/v1/connections/api-x?index=1&wait=30s").await });
    parked_until(&server, |n| n == 2).await;
    dir.update(&refs(&files("6543")));
    let woken = tokio::time::timeout(Duration::from_secs(5), env_waiter).await.expect("woken").unwrap().unwrap();
    assert!(index(&woken) > i);
    assert_eq!(json(&woken)["CHOREO_MAIN_DB_PORT"], "6543");
    // api-x did not change: its query stays parked after the db change was served ...
    parked_until(&server, |n| n <= 1).await;
    assert_eq!(index(&server.get("/v1/env").await), index(&woken));
    assert_eq!(parked(&server).await, 1, "the api-x query was woken by the db change");
    assert!(!api_waiter.is_finished());
    // ... until draining answers it, with its unchanged index.
    let server = Arc::into_inner(server).expect("one owner");
    server.stop().await;
    let api = tokio::time::timeout(Duration::from_secs(5), api_waiter).await.expect("answered").unwrap().unwrap();
    assert_eq!(index(&api), 1);
}

/// Blocking queries parked now, from `/metrics`.
pub async fn parked(server: &Server) -> u64 {
    let text = server.get("/metrics").await.text();
    let line = text.lines().find_map(|l| l.strip_prefix("connd_api_parked_queries "));
    line.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no parked-queries gauge in:\n{text}"))
}

/// Waits (up to 5 s) until the number of parked queries satisfies `pred`.
pub async fn parked_until(server: &Server, pred: impl Fn(u64) -> bool) {
    let start = Instant::now();
    loop {
        let n = parked(server).await;
        if pred(n) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{n} queries parked, not the number awaited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
