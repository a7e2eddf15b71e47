//! The egress proxy end to end: the real `connd serve` with `--proxy-listen`, a hyper
//! upstream over TLS with its own CA, and the real OpenID provider for tokens.

use crate::support::flaky::{Closes, Flaky};
use crate::support::oidc::{Client, OidcProvider};
use crate::support::proxy::*;
use crate::support::tinyproxy::{Options, Tinyproxy};
use crate::support::upstream::{Generated, Upstream};
use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const HR: &str = "19d2648b-d29c-4452-afdd-1b9311e81412";
const KEYED: &str = "0b9e5d3a-7c41-4e8f-b2d6-5a1f3c9e7d40";
const BARE: &str = "5c0a1e2b-3d4f-4a5b-8c6d-7e8f9a0b1c2d";
const SECRET: &str = "portal-s3cr3t-value";
const API_KEY: &str = "k3y-0f-the-api";

/// An OAuth connection to `service_url` with tokens from `token_url`.
fn oauth_connection(id: &str, name: &str, service_url: &str, token_url: &str) -> String {
    format!(
        "---\nkind: Connection\nid: {id}\nname: {name}\nproject: hr-project\nvisibility: project\nsecurity: oauth2\n\
         oauth: {{ scopes: [read] }}\nparameters:\n  ServiceURL: {service_url}\n  TokenURL: {token_url}\n  \
         ConsumerKey: portal\n  ConsumerSecret: {{ value: \"{SECRET}\" }}\n"
    )
}

/// An apiKey connection to `service_url`, with one more header from a parameter.
fn api_key_connection(id: &str, name: &str, service_url: &str) -> String {
    format!(
        "---\nkind: Connection\nid: {id}\nname: {name}\nproject: hr-project\nvisibility: project\nsecurity: apiKey\n\
         proxy: {{ headers: {{ X-Region: Region }} }}\nparameters:\n  ServiceURL: {service_url}\n  \
         ChoreoAPIKey: {{ value: \"{API_KEY}\" }}\n  Region: eu-west\n"
    )
}

fn component(names: &[&str]) -> String {
    component_yaml(&names.iter().map(|n| (*n, "thirdparty:svc/v1")).collect::<Vec<_>>())
}

#[tokio::test]
async fn bearer_and_api_key_are_attached_and_the_callers_replaced() {
    let idp = OidcProvider::start(&[Client::basic("portal", SECRET, "read")], 300);
    let up = Upstream::tls();
    let service = format!("{}/api/v1", up.url());
    let connections = oauth_connection(HR, "hr-connection", &service, idp.token_url())
        + &api_key_connection(KEYED, "keyed", &format!("{}/", up.url()));
    let fx = Fixture::with(&component(&["hr-connection", "keyed"]), &connections);
    let ca = up.ca_file().display().to_string();
    let daemon = ProxyDaemon::start(fx.path(), &["--ca-file", &ca, "--log-level", "trace"]);
    daemon.ready().await;

    let caller = [("authorization", "Bearer the-callers-own"), ("x-app", "kept")];
    let r = call(daemon.addr, "GET", "/hr-connection/users/42?x=1&y=%20z", &caller, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["target"], "/api/v1/users/42?x=1&y=%20z");
    let bearer = r.echoed("authorization").expect("an Authorization header");
    assert!(bearer.starts_with("Bearer ") && bearer.len() == "Bearer ".len() + 43, "{bearer}");
    assert_eq!(echo["headers"]["authorization"].as_array().unwrap().len(), 1, "replaced, not merged: {echo}");
    assert_eq!(r.echoed("host").as_deref(), Some(format!("127.0.0.1:{}", up.port()).as_str()));
    assert_eq!(r.echoed("x-app").as_deref(), Some("kept"));

    // A second call reuses the cached token: one token request in all.
    let again = call(daemon.addr, "POST", "/hr-connection", &[], "{\"a\":1}").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["target"], "/api/v1");
    assert_eq!(again.json()["body"], "{\"a\":1}");
    assert_eq!(again.echoed("authorization"), Some(bearer.clone()));
    assert_eq!(idp.token_requests(), 1);

    let caller = [("choreo-api-key", "the-callers-key"), ("x-region", "elsewhere")];
    let k = call(daemon.addr, "GET", "/keyed/a%2Fb/c", &caller, "").await;
    assert_eq!(k.status, 200, "{}", k.text());
    assert_eq!(k.json()["target"], "/a%2Fb/c");
    assert_eq!(k.json()["headers"]["choreo-api-key"], serde_json::json!([API_KEY]));
    assert_eq!(k.json()["headers"]["x-region"], serde_json::json!(["eu-west"]));
    assert!(k.echoed("authorization").is_none());

    // Nothing secret in a trace-level log: not the token, the client secret, the key.
    let log = daemon.log_with("/a%2Fb/c").await;
    let token = bearer.trim_start_matches("Bearer ");
    for secret in [token, SECRET, API_KEY] {
        assert!(!log.contains(secret), "{secret:?} is in the log:\n{log}");
    }
    assert!(!log.contains("x=1"), "a query string is in the log:\n{log}");
    assert_contains(&log, &["proxied", "connection=hr-connection", "path=/api/v1/users/42"]);
}

/// A ready proxy with the OAuth connection `hr-connection` (its token from a real OpenID
/// provider) to a TLS upstream under `/api`: the provider, the upstream, the directory and
/// the daemon.
async fn oauth_over_tls() -> (OidcProvider, Upstream, Fixture, ProxyDaemon) {
    let idp = OidcProvider::start(&[Client::basic("portal", SECRET, "read")], 300);
    let up = Upstream::tls();
    let fx = Fixture::with(
        &component(&["hr-connection"]),
        &oauth_connection(HR, "hr-connection", &format!("{}/api", up.url()), idp.token_url()),
    );
    let ca = up.ca_file().display().to_string();
    let daemon = ProxyDaemon::start(fx.path(), &["--ca-file", &ca]);
    daemon.ready().await;
    (idp, up, fx, daemon)
}

#[tokio::test]
async fn an_upstream_401_drops_the_token_and_retries_once_with_a_fresh_one() {
    let (idp, up, _fx, daemon) = oauth_over_tls().await;
    let first = call(daemon.addr, "GET", "/hr-connection/me", &[], "").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let old = first.echoed("authorization").unwrap();
    let before = idp.token_requests();

    up.revoke(&old);
    let r = call(daemon.addr, "PUT", "/hr-connection/me", &[("content-type", "text/plain")], "small body").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh = r.echoed("authorization").unwrap();
    assert_ne!(fresh, old);
    assert_eq!(r.json()["body"], "small body", "the kept body is sent again");
    assert_eq!(idp.token_requests(), before + 1, "one fresh token");
    let puts: Vec<_> = up.seen().into_iter().filter(|s| s.method == "PUT").collect();
    assert_eq!(puts.iter().map(|s| s.status).collect::<Vec<_>>(), [401, 200], "exactly one retry");

    // A body over 64 KiB is not kept: its 401 is passed on, with no second try.
    up.revoke(&fresh);
    let big = "b".repeat(100 * 1024);
    let r = call(daemon.addr, "PUT", "/hr-connection/me", &[], &big).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let puts: Vec<_> = up.seen().into_iter().filter(|s| s.method == "PUT").collect();
    assert_eq!(puts.iter().map(|s| s.status).collect::<Vec<_>>(), [401, 200, 401], "no retry of a large body");
    assert_eq!(puts[2].body_len, 100 * 1024);
}

/// elasticsearch#151592: a 401 to a request whose body connd did not keep (chunked, or
/// over 64 KiB) is passed on, but the token is dropped all the same: the next request
/// goes out with a fresh one, not the revoked one.
#[tokio::test]
async fn an_upstream_401_to_an_unkept_body_still_drops_the_token() {
    let (idp, up, _fx, daemon) = oauth_over_tls().await;
    let first = call(daemon.addr, "GET", "/hr-connection/me", &[], "").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let mut token = first.echoed("authorization").unwrap();

    let big = "b".repeat(100 * 1024);
    let chunked = [("transfer-encoding", "chunked")];
    for (headers, body) in [(&[][..], big.as_str()), (&chunked[..], "a chunked body")] {
        up.revoke(&token);
        let before = idp.token_requests();
        let r = call(daemon.addr, "POST", "/hr-connection/me", headers, body).await;
        assert_eq!(r.status, 401, "{}", r.text());
        let next = call(daemon.addr, "GET", "/hr-connection/me", &[], "").await;
        assert_eq!(next.status, 200, "the revoked token was sent again: {}", next.text());
        let fresh = next.echoed("authorization").unwrap();
        assert_ne!(fresh, token);
        assert_eq!(idp.token_requests(), before + 1, "one fresh token");
        token = fresh;
    }
    let statuses: Vec<u16> = up.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [200, 401, 200, 401, 200], "no retry of an unkept body, no revoked token reused");
}

#[tokio::test]
async fn no_token_means_503_and_no_upstream_call() {
    let up = Upstream::tls();
    // Nothing listens there: the token endpoint is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let token_url = format!("http://127.0.0.1:{}/token", closed.local_addr().unwrap().port());
    drop(closed);
    let fx = Fixture::with(
        &component(&["hr-connection"]),
        &oauth_connection(HR, "hr-connection", &format!("{}/api", up.url()), &token_url),
    );
    let ca = up.ca_file().display().to_string();
    let daemon = ProxyDaemon::start(fx.path(), &["--ca-file", &ca]);
    daemon.ready().await;
    let r = call(daemon.addr, "GET", "/hr-connection/me", &[], "").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["code"], "credentials_unavailable");
    assert_eq!(r.json()["connection"], "hr-connection");
    assert_eq!(up.arrivals(), 0, "the upstream was called");
    wait_for_metric(&daemon, "connd_proxy_credential_failures_total{connection=\"hr-connection\"} 1").await;
    wait_for_metric(&daemon, "connd_proxy_requests_total{connection=\"hr-connection\",class=\"5xx\"} 1").await;
}

#[tokio::test]
async fn fifty_megabytes_stream_both_ways_in_bounded_memory() {
    const SIZE: u64 = 50 * 1000 * 1000;
    let up = Upstream::tls();
    let fx = Fixture::with(&component(&["keyed"]), &api_key_connection(KEYED, "keyed", &up.url()));
    let ca = up.ca_file().display().to_string();
    let daemon = ProxyDaemon::start(fx.path(), &["--ca-file", &ca]);
    daemon.ready().await;
    let baseline = daemon.peak_rss_kib();

    // Upload: chunked, 64 KiB at a time, made as it is sent.
    let tcp = TcpStream::connect(daemon.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let body = Generated::new(SIZE);
    let req = http::Request::post("/keyed/upload").header("host", daemon.addr.to_string()).body(body).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(120), sender.send_request(req)).await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    let answer = res.into_body().collect().await.unwrap().to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["received"], SIZE);

    // Download: counted frame by frame, never held whole here either.
    let target = format!("/keyed/download?n={SIZE}");
    let req = http::Request::get(target).header("host", daemon.addr.to_string()).body(Generated::new(0)).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(120), sender.send_request(req)).await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, SIZE);
    let peak = daemon.peak_rss_kib();
    // Either body held whole would add 48 MiB; streaming adds buffers only.
    assert!(peak < baseline + 24 * 1024, "peak RSS {peak} KiB against {baseline} KiB before the transfers");
}

#[tokio::test]
async fn refusals_never_reach_the_upstream() {
    let up = Upstream::plain();
    let connections = api_key_connection(KEYED, "keyed", &format!("{}/base/", up.url()))
        + &connection(BARE, "no-url", &[("Region", "eu")])
        + &connection(HR, "far-away", &[("ServiceURL", "http://hr.example/v1")]);
    let fx = Fixture::with(&component(&["keyed", "no-url", "far-away"]), &connections);
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    let a = daemon.addr;

    let r = call(a, "GET", "/nothing/x", &[], "").await;
    assert_eq!((r.status, r.json()["code"].as_str()), (404, Some("no_such_connection")));
    assert_contains(&r.text(), &["nothing", "keyed, no-url, far-away"]);
    let r = call(a, "GET", "/", &[], "").await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = call(a, "GET", "/no-url/x", &[], "").await;
    assert_eq!((r.status, r.json()["code"].as_str()), (404, Some("no_service_url")), "{}", r.text());
    let r = call(a, "GET", "/far-away/x", &[], "").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_contains(&r.text(), &["refusing plain http://", "--allow-insecure-http", "far-away"]);

    for target in [
        "/keyed/../../admin",
        "/keyed/%2e%2e/admin",
        "/keyed/%2E%2e/%2e%2E/admin",
        "/keyed/..%2f..%2fadmin",
        "/keyed/x/..%2F..%2F..%2Fadmin",
        "/keyed/%252e%252e/admin",
        "/keyed/..%5cadmin",
    ] {
        let answer =
            raw(a, format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{target}: {answer}");
        assert!(answer.contains("path_escape"), "{target}: {answer}");
    }
    // Another host, by Host or by an absolute-form target: refused, not forwarded.
    let answer = raw(a, b"GET /keyed/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    let answer =
        raw(a, b"GET http://evil.example/keyed/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    let answer = raw(a, b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 421") || answer.starts_with("HTTP/1.1 501"), "{answer}");
    // Over the limits: a long target, a huge header block.
    let long = format!("GET /keyed/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", "a".repeat(10_000));
    let answer = raw(a, long.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    let huge = format!("GET /keyed/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n", "b".repeat(40_000));
    let answer = raw(a, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(300)]);
    assert_eq!(up.arrivals(), 0, "a refused request reached the upstream");

    // And one that passes, with the base path's trailing slash not doubled.
    let r = call(a, "GET", "/keyed/ok", &[], "").await;
    assert_eq!(r.json()["target"], "/base/ok");
}

#[tokio::test]
async fn hop_by_hop_headers_stay_on_their_hop() {
    let up = Upstream::plain();
    let fx = Fixture::with(&component(&["keyed"]), &api_key_connection(KEYED, "keyed", &up.url()));
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    let headers = [
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "this hop only"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers, deflate"),
        ("proxy-authorization", "Basic c2VjcmV0"),
        ("x-end", "kept"),
    ];
    let r = call(daemon.addr, "GET", "/keyed/echo", &headers, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent: Vec<String> = r.json()["headers"].as_object().unwrap().keys().cloned().collect();
    for name in ["connection", "x-hop", "keep-alive", "proxy-authorization"] {
        assert!(!sent.contains(&name.to_owned()), "{name} reached the upstream: {sent:?}");
    }
    // `te: trailers` says the caller reads trailers (gRPC): kept, and only that.
    assert_eq!(r.echoed("te").as_deref(), Some("trailers"));
    assert_eq!(r.echoed("x-end").as_deref(), Some("kept"));

    let r = call(daemon.addr, "GET", "/keyed/hop", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get("x-up").is_none() && r.headers.get("keep-alive").is_none(), "{:?}", r.headers);
    assert_eq!(r.headers.get("x-end").map(|v| v.to_str().unwrap()), Some("kept"));
}

#[tokio::test]
async fn timeouts_give_504_and_an_unreachable_upstream_502() {
    let up = Upstream::plain();
    // Accepts TCP (the kernel does) but never speaks TLS.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let connections = api_key_connection(KEYED, "keyed", &up.url())
        + &connection(
            BARE,
            "mute",
            &[("ServiceURL", &format!("https://127.0.0.1:{}", mute.local_addr().unwrap().port()))],
        )
        + &connection(HR, "gone", &[("ServiceURL", &format!("http://127.0.0.1:{closed_port}"))]);
    let fx = Fixture::with(&component(&["keyed", "mute", "gone"]), &connections);
    let daemon = ProxyDaemon::start(fx.path(), &["--proxy-connect-timeout", "1s", "--proxy-response-timeout", "3s"]);
    daemon.ready().await;

    let r = call(daemon.addr, "GET", "/keyed/never", &[], "").await;
    assert_eq!((r.status, r.json()["code"].as_str()), (504, Some("upstream_timeout")), "{}", r.text());
    assert_contains(&r.text(), &["response head", "keyed"]);
    let r = call(daemon.addr, "GET", "/mute/x", &[], "").await;
    assert_eq!((r.status, r.json()["code"].as_str()), (504, Some("upstream_timeout")), "{}", r.text());
    assert_contains(&r.text(), &["connection in time", "mute"]);
    let r = call(daemon.addr, "GET", "/gone/x", &[], "").await;
    assert_eq!((r.status, r.json()["code"].as_str()), (502, Some("upstream_unreachable")), "{}", r.text());
    assert_contains(&r.text(), &["refused", "gone"]);

    let text = daemon.metrics().await;
    assert_contains(
        &text,
        &[
            "connd_proxy_requests_total{connection=\"keyed\",class=\"5xx\"} 1",
            "connd_proxy_requests_total{connection=\"gone\",class=\"5xx\"} 1",
            "connd_proxy_request_duration_seconds_count{connection=\"mute\"} 1",
        ],
    );
    drop(mute);
}

#[tokio::test]
async fn metrics_count_by_connection_and_class() {
    let up = Upstream::plain();
    let fx = Fixture::with(&component(&["keyed"]), &api_key_connection(KEYED, "keyed", &up.url()));
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    for _ in 0..3 {
        assert_eq!(call(daemon.addr, "GET", "/keyed/echo", &[], "").await.status, 200);
    }
    assert_eq!(call(daemon.addr, "GET", "/nothing", &[], "").await.status, 404);
    let text = daemon.metrics().await;
    assert_contains(
        &text,
        &[
            "connd_proxy_requests_total{connection=\"keyed\",class=\"2xx\"} 3",
            "connd_proxy_requests_total{connection=\"\",class=\"4xx\"} 1",
            "connd_proxy_request_duration_seconds_bucket{connection=\"keyed\",le=\"+Inf\"} 3",
            "connd_proxy_credential_failures_total{connection=\"keyed\"} 0",
        ],
    );
}

#[tokio::test]
async fn idle_callers_are_bounded_and_timed_out() {
    let up = Upstream::plain();
    let fx = Fixture::with(&component(&["keyed"]), &api_key_connection(KEYED, "keyed", &up.url()));
    let daemon = ProxyDaemon::start(fx.path(), &["--max-connections", "4", "--idle-timeout", "3s"]);
    daemon.ready().await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(daemon.addr).await.unwrap());
    }
    // Wait until the four are accepted (each counts once it is served or refused).
    let mut over = TcpStream::connect(daemon.addr).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, over.read_to_end(&mut answer)).await.expect("closed at once");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503"), "{}", String::from_utf8_lossy(&answer));
    // The idle ones are closed by the header-read timeout, and their slots freed.
    for mut s in idle {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest)).await.expect("an idle caller was closed");
    }
    let r = call(daemon.addr, "GET", "/keyed/echo", &[], "").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn the_unix_socket_serves_allowed_callers() {
    let up = Upstream::plain();
    let fx = Fixture::with(&component(&["keyed"]), &api_key_connection(KEYED, "keyed", &up.url()));
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("proxy.sock");
    let daemon = ProxyDaemon::start(fx.path(), &["--proxy-socket", path.to_str().unwrap()]);
    daemon.ready().await;
    let stream = tokio::net::UnixStream::connect(&path).await.expect("the proxy socket");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    // Over the socket, Host is free text (Python's requests-unixsocket sends the path).
    let req = http::Request::get("/keyed/echo")
        .header("host", "%2Frun%2Fconnd%2Fproxy.sock")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["headers"]["choreo-api-key"], serde_json::json!([API_KEY]));
}

#[test]
fn a_remote_listen_address_needs_the_flag() {
    let fx = Fixture::with(&component(&["keyed"]), &api_key_connection(KEYED, "keyed", "http://127.0.0.1:9"));
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("s.sock");
    let out = fx.run("serve", &["--socket", socket.to_str().unwrap(), "--proxy-listen", "0.0.0.0:0"]);
    assert_eq!(out.code, 64, "{out:?}");
    assert_contains(&out.stderr, &["0.0.0.0:0", "not a loopback address", "--proxy-allow-remote"]);
    assert!(!socket.exists(), "the API socket was left behind");
}

#[test]
fn proxy_headers_are_checked() {
    let bad = "---\nkind: Connection\nid: 0b9e5d3a-7c41-4e8f-b2d6-5a1f3c9e7d40\nname: keyed\nproject: hr-project\n\
               visibility: project\nproxy:\n  headers:\n    \"Bad Header\": Region\n    Host: Region\n    X-Token: AccessToken\n    \
               X-Key: Missing\nparameters:\n  ServiceURL: https://x.example\n  Region: eu\n";
    let fx = Fixture::with(&component(&["keyed"]), bad);
    let out = fx.run("check", &[]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(
        &out.stderr,
        &[
            "proxy header \"Bad Header\" of connection \"keyed\" is not a valid HTTP field name",
            "proxy header \"Host\" of connection \"keyed\" is one the proxy manages itself",
            "proxy header \"X-Token\" of connection \"keyed\" names \"AccessToken\", which it does not offer",
            "proxy header \"X-Key\" of connection \"keyed\" names \"Missing\", which it does not offer",
            "name one of its keys: Region, ServiceURL",
        ],
    );
    // Each at its own line (the document starts at line 2, after `---`).
    for (line, name) in [(9, "Bad Header"), (10, "Host"), (11, "X-Token"), (12, "X-Key")] {
        assert_contains(&out.stderr, &[&format!(":{line}: proxy header \"{name}\"")]);
    }
    // In a flow map, a header has no line of its own: the `proxy` line is named, not the
    // document's first.
    let flow = "---\nkind: Connection\nid: 0b9e5d3a-7c41-4e8f-b2d6-5a1f3c9e7d40\nname: keyed\nproject: hr-project\n\
                visibility: project\nproxy: { headers: { Host: Region } }\nparameters:\n  ServiceURL: https://x.example\n  \
                Region: eu\n";
    let out = Fixture::with(&component(&["keyed"]), flow).run("check", &[]);
    assert_contains(
        &out.stderr,
        &[":7: proxy header \"Host\" of connection \"keyed\" is one the proxy manages itself"],
    );
}

#[tokio::test]
async fn a_caller_that_goes_away_stops_an_endless_download() {
    let up = Upstream::plain();
    let fx = Fixture::with(&component(&["keyed"]), &api_key_connection(KEYED, "keyed", &up.url()));
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    let tcp = TcpStream::connect(daemon.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    let conn = tokio::spawn(conn);
    let target = format!("/keyed/download?n={}", u64::MAX);
    let req = http::Request::get(target).header("host", daemon.addr.to_string()).body(Generated::new(0)).unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut received = 0usize;
    while received < 1 << 20 {
        received += body.frame().await.unwrap().unwrap().data_ref().map_or(0, |d| d.len());
    }
    drop(body);
    drop(sender);
    conn.abort();
    let start = Instant::now();
    while up.cut_downloads() == 0 {
        assert!(start.elapsed() < PATIENCE, "the upstream is still sending to a caller that left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn run_serves_the_proxy_while_the_workload_runs() {
    let up = Upstream::plain();
    let fx = Fixture::with(&component(&["keyed"]), &api_key_connection(KEYED, "keyed", &up.url()));
    let daemon = ProxyDaemon::run(fx.path(), &[], &["sleep", "60"]);
    daemon.ready().await;
    let r = call(daemon.addr, "GET", "/keyed/from-run", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["choreo-api-key"], serde_json::json!([API_KEY]));
    assert_eq!(r.json()["target"], "/from-run");
}

#[tokio::test]
async fn upstreams_are_reached_through_https_proxy() {
    let up = Upstream::tls();
    let fx = Fixture::with(&component(&["keyed"]), &api_key_connection(KEYED, "keyed", &up.url()));
    let forward = Tinyproxy::start(Options::default());
    let ca = up.ca_file().display().to_string();
    let daemon = ProxyDaemon::start_with_env(fx.path(), &["--ca-file", &ca], &[("HTTPS_PROXY", &forward.url(None))]);
    daemon.ready().await;
    let r = call(daemon.addr, "GET", "/keyed/via-proxy", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/via-proxy");
    let connects: Vec<String> = forward.requests().into_iter().filter(|l| l.starts_with("CONNECT ")).collect();
    assert_eq!(connects, [format!("CONNECT 127.0.0.1:{} HTTP/1.1", up.port())], "{}", forward.log());
}

/// A plain-http apiKey connection named `name` to `url`, alone in a directory.
fn keyed_fixture(url: &str) -> Fixture {
    Fixture::with(&component(&["keyed"]), &api_key_connection(KEYED, "keyed", url))
}

#[tokio::test]
async fn a_keep_alive_race_is_sent_again_on_a_new_connection() {
    let up = Flaky::start(Closes::EveryReused);
    let fx = keyed_fixture(&up.url());
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    for i in 0..40 {
        let r = call(daemon.addr, "GET", "/keyed/x", &[], "").await;
        assert_eq!(r.status, 200, "GET {i}: {}", r.text());
    }
    // A POST whose body was kept (a Content-Length within 64 KiB) is sent again too, whole.
    let body = "p".repeat(1000);
    for i in 0..4 {
        let r = call(daemon.addr, "POST", "/keyed/x", &[], &body).await;
        assert_eq!((r.status, r.json()["body_len"].as_u64()), (200, Some(1000)), "POST {i}: {}", r.text());
    }
    assert!(up.closed_on() > 0, "the upstream never closed a reused connection: the test shows nothing");
    assert_eq!(up.answered(), 44, "each request answered once");
    assert!(up.connections() >= up.closed_on(), "each resend on a new connection");
}

#[tokio::test]
async fn an_upstream_with_a_1s_idle_timeout_gives_no_502() {
    let up = Flaky::start(Closes::IdleAfter(Duration::from_secs(1)));
    let fx = keyed_fixture(&up.url());
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    let mut failed = Vec::new();
    for i in 0..40 {
        // Some requests reuse a connection still fresh, some one the upstream gave up.
        let pause = if i % 3 == 2 { 1100 } else { 150 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let r = call(daemon.addr, "GET", "/keyed/x", &[], "").await;
        if r.status != 200 {
            failed.push(format!("GET {i}: {} {}", r.status, r.text()));
        }
    }
    assert!(failed.is_empty(), "{} of 40 failed:\n{}", failed.len(), failed.join("\n"));
    assert!(up.closed_on() >= 10, "only {} requests met an idle close", up.closed_on());
}

#[tokio::test]
async fn host_fields_follow_rfc_9112() {
    let up = Upstream::plain();
    let fx = keyed_fixture(&up.url());
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    let a = daemon.addr;
    let two =
        raw(a, b"GET /keyed/x HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n").await;
    assert!(two.starts_with("HTTP/1.1 400"), "{two}");
    assert_contains(&two, &["application/json", "\"code\":\"bad_host\"", "2 Host fields"]);
    let none = raw(a, b"GET /keyed/x HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(none.starts_with("HTTP/1.1 400"), "{none}");
    assert_contains(&none, &["application/json", "\"code\":\"bad_host\"", "needs a Host field"]);
    assert_eq!(up.arrivals(), 0, "a request with bad Host fields reached the upstream");
    // HTTP/1.0 has no Host rule.
    let old = raw(a, b"GET /keyed/x HTTP/1.0\r\n\r\n").await;
    assert!(old.starts_with("HTTP/1.0 200") || old.starts_with("HTTP/1.1 200"), "{old}");
}

#[tokio::test]
async fn connds_own_answers_are_json_and_a_callers_bad_body_is_a_400() {
    let up = Upstream::plain();
    let fx = keyed_fixture(&up.url());
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    let a = daemon.addr;
    // Too many header fields, and too many header bytes.
    let mut many = String::from("GET /keyed/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-Field-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let answer = raw(a, many.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_contains(
        &answer,
        &["application/json", "\"code\":\"headers_too_large\"", "152 header fields, over the limit of 100"],
    );
    let huge = format!("GET /keyed/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n", "b".repeat(40_000));
    let answer = raw(a, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(300)]);
    assert_contains(&answer, &["application/json", "\"code\":\"headers_too_large\""]);
    // A malformed chunked body is the caller's fault: 400, counted as a 4xx.
    let bad = b"POST /keyed/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nxx\r\n";
    let answer = raw(a, bad).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_contains(&answer, &["application/json", "\"code\":\"bad_body\"", "\"connection\":\"keyed\""]);
    let metrics = daemon.metrics().await;
    assert_contains(&metrics, &["connd_proxy_requests_total{connection=\"keyed\",class=\"4xx\"} 1"]);
    assert_contains(&metrics, &["connd_proxy_requests_total{connection=\"keyed\",class=\"5xx\"} 0"]);
}

/// A connection's new key and ServiceURL (after a reload) go out with the first request
/// after the API serves them, together, and the old ones never again: what the proxy keeps
/// between requests is made from one snapshot (docs/proxy.md).
#[tokio::test]
async fn a_reloaded_key_and_service_url_go_out_at_once_and_together() {
    let up = Upstream::plain();
    let fx = keyed_fixture(&format!("{}/one", up.url()));
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    let sent = |r: &Reply| (r.json()["target"].as_str().unwrap_or("").to_owned(), r.echoed("choreo-api-key"));
    let old = ("/one/x".to_owned(), Some(API_KEY.to_owned()));
    let new = ("/two/x".to_owned(), Some("n3w-k3y".to_owned()));
    assert_eq!(sent(&call(daemon.addr, "GET", "/keyed/x", &[], "").await), old);
    let changed = api_key_connection(KEYED, "keyed", &format!("{}/two", up.url())).replace(API_KEY, "n3w-k3y");
    std::fs::write(fx.join("connections.yaml"), changed).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the API never served the new ServiceURL:\n{}", daemon.log());
        let env = connd::serve::api::client::request(&daemon.socket, http::Method::GET, "/v1/env").await.unwrap();
        let env: serde_json::Value = serde_json::from_slice(&env.body).unwrap();
        if env["CHOREO_KEYED_SERVICEURL"].as_str().is_some_and(|u| u.ends_with("/two")) {
            break;
        }
        // Meanwhile: the old values or the new ones, never a mix.
        let seen = sent(&call(daemon.addr, "GET", "/keyed/x", &[], "").await);
        assert!(seen == old || seen == new, "{seen:?}");
    }
    for i in 0..20 {
        assert_eq!(sent(&call(daemon.addr, "GET", "/keyed/x", &[], "").await), new, "request {i} after the reload");
    }
}
