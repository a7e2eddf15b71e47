//! The egress proxy's protocols with real peers: gRPC through the real `grpcio` client
//! and server, WebSocket through the real `websockets` client and server, HTTP/2 with
//! prior knowledge from `curl`, server-sent events timed per event, and wide answer heads.

use crate::support::h2raw::{self, H2};
use crate::support::proxy::*;
use crate::support::upstream::{Upstream, EVENT_GAP};
use crate::support::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const UP: &str = "0b9e5d3a-7c41-4e8f-b2d6-5a1f3c9e7d40";
const DOWN: &str = "5c0a1e2b-3d4f-4a5b-8c6d-7e8f9a0b1c2d";
const BEARER: &str = "Bearer upstream-t0ken";

/// A Python peer from `tests/support/NAME`: started, its port read from its first line;
/// it stops when its stdin closes (dropped).
struct Peer {
    child: Child,
    port: u16,
}

impl Peer {
    fn start(script: &str) -> Peer {
        Peer::start_with(script, &[])
    }

    fn start_with(script: &str, args: &[&str]) -> Peer {
        let path = format!("{}/tests/support/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("python3")
            .arg(&path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("a port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{script} printed no port: {line:?} (pip install grpcio websockets)"));
        Peer { child, port }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection `name` to `url` whose proxy header `Authorization` carries [`BEARER`].
fn bearer_connection(id: &str, name: &str, url: &str) -> String {
    format!(
        "---\nkind: Connection\nid: {id}\nname: {name}\nproject: hr-project\nvisibility: project\n\
         proxy: {{ headers: {{ Authorization: Tok }} }}\nparameters:\n  ServiceURL: {url}\n  Tok: \"{BEARER}\"\n"
    )
}

/// An OAuth connection whose token endpoint is down: no credentials.
fn tokenless_connection(id: &str, name: &str, url: &str) -> String {
    format!(
        "---\nkind: Connection\nid: {id}\nname: {name}\nproject: hr-project\nvisibility: project\nsecurity: oauth2\n\
         parameters:\n  ServiceURL: {url}\n  TokenURL: http://127.0.0.1:9/token\n  ConsumerKey: portal\n  \
         ConsumerSecret: {{ value: \"s3cret\" }}\n"
    )
}

fn fixture(names: &[&str], connections: &str) -> Fixture {
    Fixture::with(&component_yaml(&names.iter().map(|n| (*n, "thirdparty:svc/v1")).collect::<Vec<_>>()), connections)
}

/// Runs a Python client script; its one JSON line.
fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let path = format!("{}/tests/support/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3").arg(&path).args(args).output().expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{script}: {e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn grpc_calls_of_every_shape_pass_with_credentials_and_trailers() {
    let grpc = Peer::start("grpc/server.py");
    let url = format!("http://127.0.0.1:{}", grpc.port);
    let fx = fixture(&["grpc-up"], &bearer_connection(UP, "grpc-up", &url));
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    let target = daemon.addr.to_string();
    let out = tokio::task::spawn_blocking(move || python_json("grpc/client.py", &[&target, "grpc-up"])).await.unwrap();
    assert_eq!(out["unary"]["ok"][0], format!("echo:hello|auth={BEARER}"), "{out}");
    assert_eq!(out["unary"]["ok"][1], "kept", "the upstream's trailer passed: {out}");
    assert_eq!(out["server_stream"]["ok"], serde_json::json!(["item-0", "item-1", "item-2", "item-3"]), "{out}");
    assert_eq!(out["client_stream"]["ok"], "a+b+c", "{out}");
    assert_eq!(out["bidi"]["ok"], serde_json::json!(["bidi:x", "bidi:y"]), "{out}");
    assert_eq!(out["error"]["code"], "PERMISSION_DENIED", "the upstream's status passed: {out}");
    assert_eq!(out["error"]["details"], "the upstream says no", "{out}");
}

#[tokio::test]
async fn grpc_reaches_an_h2_only_tls_upstream_with_credentials() {
    let pki = crate::support::control_plane::Pki::new();
    let (cert, key) = pki.server_files();
    let grpc = Peer::start_with("grpc/server.py", &[&cert.display().to_string(), &key.display().to_string()]);
    let url = format!("https://localhost:{}", grpc.port);
    let ca = pki.ca_file.display().to_string();
    let fx = fixture(&["grpc-tls"], &bearer_connection(UP, "grpc-tls", &url));
    let daemon = ProxyDaemon::start(fx.path(), &["--ca-file", &ca]);
    daemon.ready().await;
    let target = daemon.addr.to_string();
    let out = tokio::task::spawn_blocking(move || python_json("grpc/client.py", &[&target, "grpc-tls"])).await.unwrap();
    assert_eq!(out["unary"]["ok"][0], format!("echo:hello|auth={BEARER}"), "the upstream saw the credentials: {out}");
    assert_eq!(out["unary"]["ok"][1], "kept", "{out}");
    assert_eq!(out["server_stream"]["ok"], serde_json::json!(["item-0", "item-1", "item-2", "item-3"]), "{out}");
    assert_eq!(out["client_stream"]["ok"], "a+b+c", "{out}");
    assert_eq!(out["bidi"]["ok"], serde_json::json!(["bidi:x", "bidi:y"]), "{out}");
    assert_eq!(out["error"]["code"], "PERMISSION_DENIED", "{out}");
}

#[tokio::test]
async fn connds_own_grpc_refusals_are_grpc_statuses() {
    let grpc = Peer::start("grpc/server.py");
    let url = format!("http://127.0.0.1:{}", grpc.port);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let connections = tokenless_connection(UP, "payments-api", &url) + &bearer_connection(DOWN, "gone", &closed_url);
    let fx = fixture(&["payments-api", "gone"], &connections);
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    let target = daemon.addr.to_string();
    let call = |name: &'static str| {
        let target = target.clone();
        tokio::task::spawn_blocking(move || python_json("grpc/client.py", &[&target, name, "unary-only"]))
    };
    let out = call("payments-api").await.unwrap();
    assert_eq!(out["unary"]["code"], "UNAVAILABLE", "{out}");
    assert_contains(out["unary"]["details"].as_str().unwrap(), &["payments-api", "credentials_unavailable"]);
    let out = call("nothing-here").await.unwrap();
    assert_eq!(out["unary"]["code"], "NOT_FOUND", "{out}");
    assert_contains(out["unary"]["details"].as_str().unwrap(), &["nothing-here", "payments-api, gone"]);
    let out = call("gone").await.unwrap();
    assert_eq!(out["unary"]["code"], "UNAVAILABLE", "{out}");
    assert_contains(out["unary"]["details"].as_str().unwrap(), &["gone", "unreachable"]);
    // Without the header the first path segment names the connection: `test.Echo` is none.
    let out = call("").await.unwrap();
    assert_eq!(out["unary"]["code"], "NOT_FOUND", "{out}");
    wait_for_metric(&daemon, "connd_proxy_requests_total{connection=\"payments-api\",class=\"5xx\"} 1").await;
}

#[tokio::test]
async fn h2c_with_prior_knowledge_and_http1_share_the_listener() {
    let up = Upstream::plain();
    let fx = fixture(&["keyed"], &bearer_connection(UP, "keyed", &up.url()));
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    for extra in [&["--http2-prior-knowledge"][..], &["--http1.1"][..]] {
        let url = format!("http://{}/keyed/echo", daemon.addr);
        let out = Command::new("curl").args(["-sS", "-w", "\n%{http_version}"]).args(extra).arg(&url).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, version) = text.rsplit_once('\n').unwrap();
        assert_eq!(version, if extra[0].contains("http2") { "2" } else { "1.1" }, "{text}");
        let echo: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(echo["headers"]["authorization"][0], BEARER, "{text}");
    }
    // Connd-Connection names the connection on the shared listener: the whole path goes
    // upstream, the header does not.
    let r = call(daemon.addr, "GET", "/pkg.Service/Method", &[("connd-connection", "keyed")], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/pkg.Service/Method");
    assert_eq!(r.echoed("connd-connection"), None);
}

#[tokio::test]
async fn an_h2_caller_to_an_http1_only_upstream_is_told_to_call_over_http1() {
    // The websockets server speaks HTTP/1.1 only.
    let http1_only = Peer::start("ws/server.py");
    let url = format!("http://127.0.0.1:{}", http1_only.port);
    let fx = fixture(&["old"], &bearer_connection(UP, "old", &url));
    let daemon = ProxyDaemon::start(fx.path(), &["--log-level", "debug"]);
    daemon.ready().await;
    let target = format!("http://{}/old/echo", daemon.addr);
    let out = Command::new("curl").args(["-sS", "--http2-prior-knowledge", &target]).output().unwrap();
    let body: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(body["code"], "upstream_failed", "{body}");
    let error = body["error"].as_str().unwrap();
    assert_contains(error, &["HTTP/2 with prior knowledge (h2c)", "call connd over HTTP/1.1"]);
    // At debug, connd's own records and not the HTTP/2 codec's one per frame.
    let log = daemon.log_with("proxied").await;
    assert_contains(&log, &["DEBUG", "proxied"]);
    assert!(!log.contains("frame="), "{log}");
}

#[tokio::test]
async fn a_websocket_is_joined_with_credentials_and_a_refusal_passed_on() {
    let ws = Peer::start("ws/server.py");
    let url = format!("http://127.0.0.1:{}", ws.port);
    let fx = fixture(&["chat"], &bearer_connection(UP, "chat", &url));
    let daemon = ProxyDaemon::start(fx.path(), &["--proxy-response-timeout", "1s"]);
    daemon.ready().await;
    let target = format!("ws://{}/chat/room", daemon.addr);
    let out = tokio::task::spawn_blocking(move || python_json("ws/client.py", &[&target, "50"])).await.unwrap();
    assert_eq!(out["first"], format!("auth={BEARER}"), "{out}");
    assert_eq!(out["answers"], serde_json::json!(["echo:m0", "echo:m1", "echo:m2"]), "{out}");
    assert_eq!(out["n"], 50, "{out}");
    let refused = format!("ws://{}/chat/refuse", daemon.addr);
    let out = tokio::task::spawn_blocking(move || python_json("ws/client.py", &[&refused, "1"])).await.unwrap();
    assert_eq!((out["status"].as_u64(), out["body"].as_str()), (Some(403), Some("the upstream refuses\n")), "{out}");
}

#[tokio::test]
async fn an_open_websocket_outlives_the_response_timeout() {
    let ws = Peer::start("ws/server.py");
    let url = format!("http://127.0.0.1:{}", ws.port);
    let fx = fixture(&["chat"], &bearer_connection(UP, "chat", &url));
    let daemon = ProxyDaemon::start(fx.path(), &["--proxy-response-timeout", "1s", "--idle-timeout", "1s"]);
    daemon.ready().await;
    // One message every 300 ms for 3 s: three response timeouts, three idle timeouts.
    let target = format!("ws://{}/chat/room", daemon.addr);
    let script = "import sys, time\nfrom websockets.sync.client import connect\n\
                  with connect(sys.argv[1]) as ws:\n    ws.recv()\n    for i in range(10):\n        \
                  time.sleep(0.3)\n        ws.send(str(i))\n        print(ws.recv(timeout=5), flush=True)\n";
    let out =
        tokio::task::spawn_blocking(move || Command::new("python3").args(["-c", script, &target]).output().unwrap())
            .await
            .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 10, "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.lines().last(), Some("echo:9"));
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one() {
    let up = Upstream::plain();
    let fx = fixture(&["keyed"], &bearer_connection(UP, "keyed", &up.url()));
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    let mut curl = Command::new("curl")
        .args(["-sN", &format!("http://{}/keyed/events", daemon.addr)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut lines = BufReader::new(curl.stdout.take().unwrap()).lines();
    let mut arrivals = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        if line.starts_with("data: ") {
            arrivals.push(started.elapsed());
        }
    }
    let _ = curl.wait();
    assert_eq!(arrivals.len(), 3, "{arrivals:?}");
    for (i, at) in arrivals.iter().enumerate() {
        let due = EVENT_GAP * (i as u32 + 1);
        assert!(
            *at >= due - Duration::from_millis(50) && *at < due + Duration::from_millis(300),
            "event {i} at {at:?}, due {due:?}"
        );
    }
}

#[tokio::test]
async fn wide_answer_heads_pass_up_to_64_kib() {
    let up = Upstream::plain();
    let fx = fixture(&["keyed"], &bearer_connection(UP, "keyed", &up.url()));
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    // More than hyper's default of 100 fields, under 64 KiB.
    let r = call(daemon.addr, "GET", "/keyed/wide?n=200&size=300", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers.get("x-wide-199").map(|v| v.len()), Some(300));
    let r = call(daemon.addr, "GET", "/keyed/wide?n=56", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Over 64 KiB: a 502 that names the limit.
    let r = call(daemon.addr, "GET", "/keyed/wide?n=98", &[], "").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_contains(&r.text(), &["64 KiB"]);
}

#[tokio::test]
async fn a_connections_own_certificate_reaches_an_h2_only_mtls_upstream_and_a_renewal_is_used() {
    let up = Upstream::mtls_h2();
    let pki = up.pki.as_ref().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let at = |name: &str| certs.path().join(name).display().to_string();
    // As a Secret volume swaps them: written beside, renamed over.
    let put = |name: &str, text: &str| {
        std::fs::write(certs.path().join(format!(".{name}.new")), text).unwrap();
        std::fs::rename(certs.path().join(format!(".{name}.new")), certs.path().join(name)).unwrap();
    };
    put("tls.crt", &std::fs::read_to_string(&pki.client_cert).unwrap());
    put("tls.key", &std::fs::read_to_string(&pki.client_key).unwrap());
    put("ca.crt", &std::fs::read_to_string(&pki.ca_file).unwrap());
    let own = format!(
        "---\nkind: Connection\nid: {UP}\nname: partner\nproject: hr-project\nvisibility: project\n\
         parameters:\n  ServiceURL: {}\n  ClientCertificate: {{ file: {} }}\n  ClientKey: {{ file: {}, secret: true }}\n  \
         CACertificate: {{ file: {} }}\n",
        up.url(),
        at("tls.crt"),
        at("tls.key"),
        at("ca.crt")
    );
    let connections = own + &bearer_connection(DOWN, "no-cert", &up.url());
    let fx = fixture(&["partner", "no-cert"], &connections);
    let ca = up.ca_file().display().to_string();
    let daemon = ProxyDaemon::start(fx.path(), &["--ca-file", &ca]);
    daemon.ready().await;

    let r = call(daemon.addr, "GET", "/partner/echo", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.seen().last().unwrap().version, http::Version::HTTP_2, "ALPN chose h2");
    // The same upstream without a client certificate refuses the handshake.
    let r = call(daemon.addr, "GET", "/no-cert/echo", &[], "").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_ne!(r.json()["code"], "bad_client_certificate", "{}", r.text());

    // A renewed certificate (here one the upstream does not trust) is used for new
    // connections within the reload latency; the good one again, too.
    let stranger = crate::support::control_plane::Pki::new();
    put("tls.crt", &std::fs::read_to_string(&stranger.client_cert).unwrap());
    put("tls.key", &std::fs::read_to_string(&stranger.client_key).unwrap());
    // (A certificate and key caught mid-swap do not match: `bad_client_certificate`.)
    let until = |status: u16| {
        let addr = daemon.addr;
        async move {
            let start = Instant::now();
            loop {
                let r = call(addr, "GET", "/partner/echo", &[], "").await;
                if r.status == status && (status == 200 || r.json()["code"].as_str() != Some("bad_client_certificate"))
                {
                    return;
                }
                assert!(start.elapsed() < PATIENCE, "still {} after {PATIENCE:?}: {}", r.status, r.text());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    until(502).await;
    put("tls.crt", &std::fs::read_to_string(&pki.client_cert).unwrap());
    put("tls.key", &std::fs::read_to_string(&pki.client_key).unwrap());
    until(200).await;
    assert!(!daemon.log().contains("BEGIN"), "no PEM in the log");
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_with_a_goaway_and_a_slow_stream_is_not() {
    let up = Upstream::plain();
    let grpc = Peer::start("grpc/server.py");
    let connections = bearer_connection(UP, "keyed", &up.url())
        + &bearer_connection(DOWN, "grpc-up", &format!("http://127.0.0.1:{}", grpc.port));
    let fx = fixture(&["keyed", "grpc-up"], &connections);
    let daemon = ProxyDaemon::start(fx.path(), &["--idle-timeout", "1s"]);
    daemon.ready().await;

    // One request, then nothing: a GOAWAY (NO_ERROR) after the idle timeout, then the close.
    let mut h2 = H2::connect(daemon.addr).await;
    let stream = h2.request("GET", "/keyed/echo", &daemon.addr.to_string(), &[]).await;
    let answer = h2.answer(stream, PATIENCE).await;
    assert!(answer[0].is_ok_head(), "{answer:?}");
    let done = Instant::now();
    let goaway = h2.next(PATIENCE).await.expect("a GOAWAY before the close");
    assert_eq!((goaway.kind, goaway.error_code()), (h2raw::GOAWAY, Some(0)), "{goaway:?}");
    while let Some(frame) = h2.next(PATIENCE).await {
        assert_eq!(frame.kind, h2raw::GOAWAY, "only GOAWAYs before the close: {frame:?}");
    }
    let closed = done.elapsed();
    assert!(closed >= Duration::from_millis(900) && closed < Duration::from_secs(3), "closed after {closed:?}");

    // A server stream whose messages come slower than the idle timeout is open: not cut.
    let target = daemon.addr.to_string();
    let script = "import json, sys, grpc\nchannel = grpc.insecure_channel(sys.argv[1])\n\
                  call = channel.unary_stream('/test.Echo/ServerStream')\n\
                  items = call(b'3/1.5', metadata=(('connd-connection', 'grpc-up'),), timeout=20)\n\
                  print(json.dumps([m.decode() for m in items]))\n";
    let out =
        tokio::task::spawn_blocking(move || Command::new("python3").args(["-c", script, &target]).output().unwrap())
            .await
            .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), r#"["item-0", "item-1", "item-2"]"#, "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_connection_specific_h2_field_resets_its_stream_and_the_connection_goes_on() {
    let up = Upstream::plain();
    let fx = fixture(&["keyed"], &bearer_connection(UP, "keyed", &up.url()));
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    let authority = daemon.addr.to_string();
    let mut h2 = H2::connect(daemon.addr).await;
    // RFC 9113 §8.2.2: malformed, a stream error of PROTOCOL_ERROR.
    for field in [
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
    ] {
        let stream = h2.request("GET", "/keyed/echo", &authority, &[field]).await;
        let answer = h2.answer(stream, PATIENCE).await;
        let last = answer.last().unwrap();
        assert_eq!(
            (last.kind, last.error_code()),
            (h2raw::RST_STREAM, Some(h2raw::PROTOCOL_ERROR)),
            "{field:?}: {answer:?}"
        );
    }
    // The same connection serves the next stream; `te: trailers` is allowed.
    let stream = h2.request("GET", "/keyed/echo", &authority, &[("te", "trailers")]).await;
    let answer = h2.answer(stream, PATIENCE).await;
    assert!(answer[0].is_ok_head(), "{answer:?}");
    assert_eq!(up.seen().len(), 1, "only the well-formed request reached the upstream");
}

#[tokio::test]
async fn an_upstream_refusing_the_connections_certificate_after_a_tls13_handshake_is_named() {
    // An HTTP caller to an HTTP/1.1 upstream, a gRPC caller to an HTTP/2 one.
    let up = Upstream::mtls_http1();
    let grpc_up = Upstream::mtls_h2();
    let stranger = crate::support::control_plane::Pki::new();
    let pem = |path: &std::path::Path| path.display().to_string();
    // Signed by a CA the upstream does not trust: TLS 1.3 ends the handshake on connd's
    // side first, and the upstream's alert (unknown CA) arrives at the first read.
    let own = |id: &str, name: &str, url: &str| {
        format!(
            "---\nkind: Connection\nid: {id}\nname: {name}\nproject: hr-project\nvisibility: project\n\
             parameters:\n  ServiceURL: {url}\n  ClientCertificate: {{ file: {} }}\n  ClientKey: {{ file: {}, secret: true }}\n",
            pem(&stranger.client_cert),
            pem(&stranger.client_key)
        )
    };
    let connections = own(UP, "partner", &up.url()) + &own(DOWN, "partner-grpc", &grpc_up.url());
    let fx = fixture(&["partner", "partner-grpc"], &connections);
    let ca = up.ca_file().display().to_string();
    let grpc_ca = grpc_up.ca_file().display().to_string();
    // One --ca-file for both upstreams: a file with both CAs.
    let both = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(both.path(), std::fs::read_to_string(&ca).unwrap() + &std::fs::read_to_string(&grpc_ca).unwrap())
        .unwrap();
    let daemon = ProxyDaemon::start(fx.path(), &["--ca-file", &pem(both.path())]);
    daemon.ready().await;

    let r = call(daemon.addr, "GET", "/partner/echo", &[], "").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["code"], "client_certificate_refused", "{}", r.text());
    assert_contains(&r.text(), &["refused", "UnknownCA", "ClientCertificate", "ClientKey", "connection partner"]);
    assert!(!r.text().contains("connection closed"), "{}", r.text());

    let target = daemon.addr.to_string();
    let out =
        tokio::task::spawn_blocking(move || python_json("grpc/client.py", &[&target, "partner-grpc", "unary-only"]))
            .await
            .unwrap();
    assert_eq!(out["unary"]["code"], "UNAVAILABLE", "{out}");
    eprintln!("{}", daemon.log());
    assert_contains(
        out["unary"]["details"].as_str().unwrap(),
        &["refused", "UnknownCA", "ClientCertificate", "connection partner-grpc"],
    );
    assert!(up.seen().is_empty() && grpc_up.seen().is_empty(), "no request was answered");
}
