//! `connd serve` as a process with its real sources: the fake control plane over TLS
//! going down and coming back, OAuth tokens from the real OpenID provider renewed in the
//! background, refusals, and what `/metrics` counts of all that.

use crate::support::control_plane::{FakeControlPlane, Reply};
use crate::support::kubelet::AtomicDir;
use crate::support::oidc::{Client, OidcProvider};
use crate::support::*;
use connd::serve::api::client::{request, Answer};
use http::Method;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const HR: &str = "39d2648b-d29c-4452-afdd-1b9311e81412";
const SECRET: &str = "portal-s3cr3t";
/// How long any awaited change may take before the test gives up: generous, since CI
/// machines are shared; the tests take far less when all is well.
const PATIENCE: Duration = Duration::from_secs(10);

async fn get(socket: &Path, target: &str) -> Answer {
    request(socket, Method::GET, target).await.expect("request")
}

fn json(a: &Answer) -> Value {
    serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", a.text()))
}

fn index(a: &Answer) -> u64 {
    a.headers["x-connd-index"].to_str().unwrap().parse().unwrap()
}

/// The value of the sample `name` (with its labels) in a Prometheus text.
#[track_caller]
fn sample(text: &str, name: &str) -> f64 {
    let line = text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '));
    let line = line.unwrap_or_else(|| panic!("no sample {name} in:\n{text}"));
    line[name.len()..].trim().parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

fn cp_calls(result: &str) -> String {
    format!("connd_control_plane_requests_total{{result=\"{result}\"}}")
}

fn token_calls(result: &str) -> String {
    format!("connd_token_requests_total{{result=\"{result}\"}}")
}

/// Polls `/metrics` until `pred` holds for it; returns that text.
async fn metrics_until(socket: &Path, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = get(socket, "/metrics").await.text();
        if pred(&text) {
            return text;
        }
        assert!(start.elapsed() < PATIENCE, "/metrics never showed {what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_control_plane_down_and_back() {
    let dir = AtomicDir::new(&refs(&remote_files()));
    let cp = FakeControlPlane::start(false);
    cp.script(DB_ID, vec![Reply::ok("1", &[("Password", "pw-1")])]);
    let ca = cp.ca_file().display().to_string();
    // The default --startup-timeout (30s) bounds the first resolution only: a round during
    // the outage fails at its first 503, rather than retrying for 30s with reloads held up.
    // Re-scans of the files, far more often than rounds, must not end the outage.
    let flags =
        ["--control-plane", &cp.url(), "--ca-file", &ca, "--refresh-interval", "200ms", "--rescan-interval", "50ms"];
    let daemon = Daemon::start(dir.path(), &flags, &[]);
    daemon.ready().await;
    let socket = daemon.socket.clone();
    let first = get(&socket, "/v1/env").await;
    assert_eq!(json(&first)["CHOREO_MAIN_DB_PASSWORD"], "pw-1");
    let i = index(&first);

    // Later rounds are conditional: the fake answers 304 and nothing changes.
    metrics_until(&socket, "a 304", |t| sample(t, &cp_calls("not_modified")) >= 1.0).await;

    cp.script(DB_ID, vec![Reply::Status(503)]);
    // An age of many re-scan intervals: re-scans on the cached values do not reset it.
    let text = metrics_until(&socket, "a failed reload with its age", |t| {
        sample(t, "connd_reloads_total{result=\"error\"}") >= 1.0 && sample(t, "connd_error_age_seconds") >= 0.6
    })
    .await;
    assert!(sample(&text, &cp_calls("error")) >= 1.0, "{text}");
    assert_eq!(sample(&text, "connd_ready"), 1.0, "{text}");
    assert_eq!(get(&socket, "/readyz").await.status, 200, "ready stays ready");
    let during = get(&socket, "/v1/env").await;
    assert_eq!(json(&during)["CHOREO_MAIN_DB_PASSWORD"], "pw-1", "the last good values stay");
    assert_eq!(index(&during), i);

    // Back, with a new value: a blocking query on the last index sees it arrive.
    cp.script(DB_ID, vec![Reply::ok("2", &[("Password", "pw-2")])]);
    let woken = get(&socket, &format!("/v1/env?index={i}&wait={}s", PATIENCE.as_secs())).await;
    assert_eq!(json(&woken)["CHOREO_MAIN_DB_PASSWORD"], "pw-2", "{}", woken.text());
    assert!(index(&woken) > i);
    let text = get(&socket, "/metrics").await.text();
    assert_eq!(sample(&text, "connd_error_age_seconds"), 0.0, "{text}");
    assert!(sample(&text, &cp_calls("ok")) >= 2.0, "{text}");
    assert_eq!(sample(&text, &cp_calls("refused")), 0.0, "{text}");
    assert!(sample(&text, "connd_reloads_total{result=\"changed\"}") >= 2.0, "{text}");
    assert!(!text.contains("pw-1") && !text.contains("pw-2"), "a value leaked into /metrics:\n{text}");

    daemon.signal(Signal::SIGTERM);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    assert_contains(&stderr, &["reload failed, the last good values stay", "status 503", "values resolved again"]);
    let logged = stderr.matches("reload failed").count();
    assert_eq!(logged, 1, "one outage is logged once, however many rounds fail:\n{stderr}");
    assert!(!stderr.contains("pw-1"), "a value leaked into the log:\n{stderr}");
}

#[tokio::test]
async fn a_token_refresh_is_visible_on_token() {
    let idp = OidcProvider::start(&[Client::basic("portal", SECRET, "read")], 2);
    let fx = Fixture::with(
        &component_yaml(&[("hr-connection", "thirdparty:svc/v1")]),
        &oauth_connection(HR, "hr-connection", idp.token_url(), "portal", SECRET, "basic"),
    );
    // No refresh rounds: only the token cache's own renewal can bring a new token.
    let daemon = Daemon::start(fx.path(), &["--refresh-interval", "3600s"], &[]);
    daemon.ready().await;
    let socket = daemon.socket.clone();
    let token = |a: &Answer| -> (String, u64) {
        assert_eq!(a.status, 200, "{}", a.text());
        let v = json(a);
        assert_eq!(v["token_type"], "Bearer");
        (v["access_token"].as_str().unwrap().to_owned(), v["expires_in"].as_u64().unwrap())
    };

    // Many requests within one lifetime: one token-endpoint call per distinct token.
    let mut seen = std::collections::BTreeSet::new();
    let mut last = (String::new(), 0);
    for _ in 0..20 {
        last = token(&get(&socket, "/v1/connections/hr-connection/token").await);
        assert!(last.1 <= 2, "expires_in {} is past the provider's TTL", last.1);
        seen.insert(last.0.clone());
    }
    assert_eq!(idp.token_requests(), seen.len() as u64, "requests were not served from the cache");

    // Renewal is due at 75-85% of the 2s lifetime: a later request gets a new token.
    let start = Instant::now();
    let renewed = loop {
        let t = token(&get(&socket, "/v1/connections/hr-connection/token").await);
        if t.0 != last.0 {
            break t;
        }
        last = t;
        assert!(start.elapsed() < PATIENCE, "the token was never renewed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    seen.insert(renewed.0.clone());
    assert!(renewed.1 >= 1 && renewed.1 >= last.1, "a fresh expires_in: {} after {}", renewed.1, last.1);
    let stats = idp.stats();
    assert_eq!(stats.token_requests, seen.len() as u64, "one call per token: {stats:?}");
    assert_eq!(stats.token_successes, stats.token_requests, "{stats:?}");

    let text = get(&socket, "/metrics").await.text();
    assert_eq!(sample(&text, &token_calls("ok")), stats.token_successes as f64, "{text}");
    assert_eq!(sample(&text, &token_calls("error")), 0.0, "{text}");
    assert_eq!(sample(&text, &cp_calls("ok")), 0.0, "no control plane is configured:\n{text}");
    assert!(!text.contains(&renewed.0) && !text.contains(SECRET), "{text}");
    daemon.signal(Signal::SIGTERM);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains(&renewed.0) && !stderr.contains(SECRET), "a secret leaked into the log:\n{stderr}");
}

#[tokio::test]
async fn a_refused_client_is_a_502_on_token_and_counted() {
    let idp = OidcProvider::start(&[Client::basic("portal", SECRET, "read")], 60);
    let fx = Fixture::with(
        &component_yaml(&[("hr-connection", "thirdparty:svc/v1")]),
        &oauth_connection(HR, "hr-connection", idp.token_url(), "portal", "not-the-secret", "basic"),
    );
    let daemon = Daemon::start(fx.path(), &["--refresh-interval", "3600s"], &[]);
    // No variable maps the token, so the values are complete without it.
    daemon.ready().await;
    let failed = get(&daemon.socket, "/v1/connections/hr-connection/token").await;
    assert_eq!(failed.status, 502, "{}", failed.text());
    let v = json(&failed);
    assert_eq!(v["code"], "token_unavailable");
    assert_contains(
        v["error"].as_str().unwrap(),
        &["no token for \"hr-connection\"", idp.token_url(), "refused client \"portal\"", "invalid_client"],
    );
    assert!(!failed.text().contains("not-the-secret"));
    let text = get(&daemon.socket, "/metrics").await.text();
    assert!(sample(&text, &token_calls("refused")) >= 1.0, "{text}");
    assert_eq!(sample(&text, &token_calls("ok")), 0.0, "{text}");
    assert_eq!(idp.token_successes(), 0);
}

#[tokio::test]
async fn a_refusing_control_plane_is_counted_then_serve_exits_77() {
    let dir = AtomicDir::new(&refs(&remote_files()));
    let cp = FakeControlPlane::start(false);
    cp.script(DB_ID, vec![Reply::Status(403)]);
    let ca = cp.ca_file().display().to_string();
    let flags = ["--control-plane", &cp.url(), "--ca-file", &ca, "--startup-timeout", "3s"];
    let daemon = Daemon::start(dir.path(), &flags, &[]);
    let socket = daemon.socket.clone();
    let start = Instant::now();
    while request(&socket, Method::GET, "/healthz").await.is_err() {
        assert!(start.elapsed() < PATIENCE, "connd serve never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = metrics_until(&socket, "the refusal", |t| sample(t, &cp_calls("refused")) >= 1.0).await;
    assert_eq!(sample(&text, "connd_ready"), 0.0, "{text}");
    assert_eq!(sample(&text, &cp_calls("error")), 0.0, "a refusal is not retried as transient:\n{text}");
    let readyz = get(&socket, "/readyz").await;
    assert_eq!(readyz.status, 503);
    assert_contains(json(&readyz)["error"].as_str().unwrap(), &["not ready", "refused", "403"]);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 77, "{stderr}");
    assert_contains(&stderr, &["no complete set of values after 3", "refused the request", "--token-file"]);
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_a_prompt_502_and_counted() {
    // A port that nothing listens on: every token request fails to connect.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/token");
    let fx = Fixture::with(
        &component_yaml(&[("hr-connection", "thirdparty:svc/v1")]),
        &oauth_connection(HR, "hr-connection", &url, "portal", SECRET, "basic"),
    );
    let daemon = Daemon::start(fx.path(), &["--refresh-interval", "3600s"], &[]);
    daemon.ready().await;
    // One attempt per request, not retries for the 30s startup timeout: the caller retries.
    let answer = tokio::time::timeout(PATIENCE, get(&daemon.socket, "/v1/connections/hr-connection/token")).await;
    let failed = answer.expect("the token request answers without retrying for the startup timeout");
    assert_eq!(failed.status, 502, "{}", failed.text());
    assert_contains(json(&failed)["error"].as_str().unwrap(), &[&url, "is unavailable", "cannot connect", "retrying"]);
    let text = get(&daemon.socket, "/metrics").await.text();
    assert!(sample(&text, &token_calls("error")) >= 1.0, "{text}");
    assert_eq!(sample(&text, &token_calls("ok")), 0.0, "{text}");
}
