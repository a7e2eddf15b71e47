//! The token endpoint's odd answers, scripted by the fake control plane playing a token
//! endpoint at `/token`: what the user reads (and never reads: the secrets), the exit
//! code, retries, and the cache's background renewal after failures.

use crate::support::control_plane::{FakeControlPlane, Reply};
use crate::support::*;
use connd::http::client::HttpClient;
use connd::http::proxy::Proxies;
use connd::http::tls::TlsSettings;
use connd::http::url::check_url;
use connd::retry::Until;
use connd::source::client_auth::Material;
use connd::source::oauth::{AppKey, Credentials, TokenCache};
use connd::source::{Sources, Tokens};
use std::sync::Arc;
use std::time::Duration;

const HR: &str = "19d2648b-d29c-4452-afdd-1b9311e81412";
const PAYROLL: &str = "0b9e5d3a-7c41-4e8f-b2d6-5a1f3c9e7d40";
const SECRET: &str = "portal-s3cr3t";

/// An OAuth connection whose client secret is `secret` (a YAML value).
fn descriptor(id: &str, name: &str, token_url: &str, client: &str, secret: &str) -> String {
    format!(
        "---\nkind: Connection\nid: {id}\nname: {name}\nproject: hr-project\nvisibility: project\nsecurity: oauth2\n\
         parameters:\n  TokenURL: {token_url}\n  ConsumerKey: {client}\n  ConsumerSecret: {secret}\n"
    )
}

/// `hr-connection` with its `AccessToken` mapped to `HR_TOKEN`.
fn fixture(token_url: &str, secret: &str) -> Fixture {
    let mut component = component_yaml(&[("hr-connection", "thirdparty:svc/v1")]);
    component.push_str(
        "configurations:\n  env:\n    - name: HR_TOKEN\n      valueFrom:\n        \
         connectionRef: { name: hr-connection, key: AccessToken }\n",
    );
    Fixture::with(&component, &descriptor(HR, "hr-connection", token_url, "portal", secret))
}

fn token_body(token: &str, expires_in: &str) -> String {
    format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{expires_in}}}"#)
}

/// `connd env` trusting the fake's CA.
fn env(fx: &Fixture, cp: &FakeControlPlane, startup_timeout: &str) -> Run {
    let ca = cp.ca_file().display().to_string();
    fx.run("env", &["--ca-file", &ca, "--startup-timeout", startup_timeout])
}

fn token_url(cp: &FakeControlPlane) -> String {
    format!("{}/token", cp.url())
}

#[test]
fn a_badly_typed_token_body_is_reported_without_the_token() {
    let cp = FakeControlPlane::start(false);
    let inner = token_body("AT-SECRET", "60");
    cp.script("/token", vec![Reply::raw(200, &serde_json::to_string(&inner).unwrap())]);
    let out = env(&fixture(&token_url(&cp), SECRET), &cp, "2s");
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["\"hr-connection\"", "bad answer from the token endpoint", "not a token response"]);
    assert!(!out.stderr.contains("AT-SECRET"), "the token leaked:\n{out:?}");
    assert!(cp.requests_for("/token").len() > 1, "an unusable answer is retried until the deadline");
}

/// docs/oauth.md: an answer connd cannot use (an empty body, a body that is not JSON, JSON
/// without `access_token`, a 5xx) is transient: retried with backoff until a good one.
#[test]
fn every_unusable_answer_is_retried_until_a_good_one() {
    let cp = FakeControlPlane::start(false);
    cp.script(
        "/token",
        vec![
            Reply::raw(200, ""),
            Reply::raw(200, "<html>upstream reset</html>"),
            Reply::raw(200, r#"{"token_type":"Bearer","expires_in":60}"#),
            Reply::raw(502, ""),
            Reply::raw(200, &token_body("AT-GOOD", "60")),
        ],
    );
    let out = env(&fixture(&token_url(&cp), SECRET), &cp, "30s");
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, &["HR_TOKEN='AT-GOOD'"]);
    let statuses: Vec<u16> = cp.requests_for("/token").iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 502, 200]);
}

/// RFC 6749 §7.1: a token of a type connd does not understand (`mac`) is never used as
/// Bearer; it is a bad answer, asked again. `bearer` in any case is Bearer.
#[test]
fn a_token_type_other_than_bearer_is_a_bad_answer() {
    let cp = FakeControlPlane::start(false);
    let typed =
        |token: &str, kind: &str| format!(r#"{{"access_token":"{token}","token_type":"{kind}","expires_in":60}}"#);
    cp.script("/token", vec![Reply::raw(200, &typed("AT-MAC", "mac")), Reply::raw(200, &typed("AT-BEARER", "bEaReR"))]);
    let ca = cp.ca_file().display().to_string();
    let fx = fixture(&token_url(&cp), SECRET);
    let out = fx.run("env", &["--ca-file", &ca, "--log-level", "debug"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, &["HR_TOKEN='AT-BEARER'"]);
    assert!(!out.stdout.contains("AT-MAC"), "a mac token was used as Bearer:\n{out:?}");
    assert_contains(&out.stderr, &["the token_type is", "mac", "not Bearer"]);
    assert_eq!(cp.requests_for("/token").len(), 2);

    // Only ever `mac`: the deadline passes, 69 with the cause.
    cp.script("/token", vec![Reply::raw(200, &typed("AT-MAC", "mac"))]);
    let out = env(&fx, &cp, "1s");
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["bad answer from the token endpoint", "not Bearer"]);
}

/// envoy#42009: one empty answer during a background renewal must not stop it. `serve`
/// renders the token into a file; the renewal meets an empty body, JSON without a token,
/// a 503 and a `mac` token, and the file (and the API) get the next good token long
/// before any re-scan.
#[tokio::test]
async fn one_bad_answer_does_not_stop_the_renewal_of_a_token_file() {
    let cp = FakeControlPlane::start(false);
    cp.script(
        "/token",
        vec![
            Reply::raw(200, &token_body("AT-1", "2")),
            Reply::raw(200, ""),
            Reply::raw(200, r#"{"token_type":"Bearer"}"#),
            Reply::raw(503, ""),
            Reply::raw(200, r#"{"access_token":"AT-MAC","token_type":"mac","expires_in":60}"#),
            Reply::raw(200, &token_body("AT-2", "60")),
        ],
    );
    let fx = fixture(&token_url(&cp), SECRET).file(
        "token.yaml",
        "kind: File\npath: /run/secrets/token\nformat: template\ntemplate: \"{{ connections['hr-connection'].AccessToken }}\"\n",
    );
    let root = tempfile::tempdir().unwrap();
    let ca = cp.ca_file().display().to_string();
    let args = ["--ca-file", &ca, "--files-root", &root.path().display().to_string(), "--refresh-interval", "3600s"];
    let daemon = Daemon::start(fx.path(), &args, &[]);
    daemon.ready().await;
    let file = root.path().join("run/secrets/token");
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    let start = std::time::Instant::now();
    while read() != "AT-1" && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read(), "AT-1");
    // AT-1 expires 2 s after it was issued; the backoff after four failures stays under 2 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while read() != "AT-2" && std::time::Instant::now() < deadline {
        assert_ne!(read(), "AT-MAC", "a mac token was rendered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read(), "AT-2", "the token file was left with the expired token: {:?}", cp.requests_for("/token"));
    let answer =
        connd::serve::api::client::request(&daemon.socket, http::Method::GET, "/v1/connections/hr-connection/token")
            .await
            .unwrap();
    assert_contains(&answer.text(), &["AT-2"]);
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("renewal stopped"), "{stderr}");
}

#[test]
fn a_401_without_a_json_body_is_a_refusal() {
    let cp = FakeControlPlane::start(false);
    cp.script("/token", vec![Reply::raw(401, "Unauthorized")]);
    let out = env(&fixture(&token_url(&cp), SECRET), &cp, "30s");
    assert_eq!(out.code, 77, "{out:?}");
    assert_contains(&out.stderr, &["\"hr-connection\"", "refused client \"portal\"", "401 Unauthorized", "permanent"]);
    assert_eq!(cp.requests_for("/token").len(), 1, "a refusal must not be retried");
}

#[test]
fn a_secret_consumer_key_is_not_shown_in_a_refusal() {
    let cp = FakeControlPlane::start(false);
    cp.script("/token", vec![Reply::raw(401, "Unauthorized")]);
    let fx = fixture(&token_url(&cp), SECRET);
    let conns = fx.join("connections.yaml");
    let text = std::fs::read_to_string(&conns).unwrap();
    let text = text.replace("ConsumerKey: portal", "ConsumerKey: { value: portal-id-9, secret: true }");
    std::fs::write(&conns, text).unwrap();
    let out = env(&fx, &cp, "30s");
    assert_eq!(out.code, 77, "{out:?}");
    assert_contains(&out.stderr, &["refused client (ConsumerKey, secret)", "401 Unauthorized"]);
    assert!(!out.stderr.contains("portal-id-9"), "the secret client ID leaked:\n{out:?}");
}

#[test]
fn expires_in_may_be_a_numeric_string() {
    let cp = FakeControlPlane::start(false);
    cp.script("/token", vec![Reply::raw(200, &token_body("AT-1", "\"3599\""))]);
    let out = env(&fixture(&token_url(&cp), SECRET), &cp, "30s");
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, &["HR_TOKEN='AT-1'"]);
}

#[test]
fn a_huge_expires_in_is_not_a_panic() {
    let cp = FakeControlPlane::start(false);
    cp.script("/token", vec![Reply::raw(200, &token_body("AT-1", "1e20"))]);
    let out = env(&fixture(&token_url(&cp), SECRET), &cp, "30s");
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, &["HR_TOKEN='AT-1'"]);
}

#[test]
fn server_errors_of_the_token_endpoint_are_retried() {
    let cp = FakeControlPlane::start(false);
    cp.script("/token", vec![Reply::raw(503, ""), Reply::raw(200, &token_body("AT-1", "60"))]);
    let out = env(&fixture(&token_url(&cp), SECRET), &cp, "30s");
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, &["HR_TOKEN='AT-1'"]);
    assert_eq!(cp.requests_for("/token").iter().map(|r| r.status).collect::<Vec<_>>(), [503, 200]);
}

#[test]
fn credentials_in_a_token_url_are_not_echoed() {
    let fx = fixture("https://cid:CLIENTPW@127.0.0.1:9/token", SECRET);
    let out = fx.run("env", &[]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["\"hr-connection\"", "TokenURL", "https://127.0.0.1 carries credentials"]);
    assert!(!out.stderr.contains("CLIENTPW") && !out.stderr.contains("cid:"), "a credential leaked:\n{out:?}");
    assert_eq!(out.stderr.matches("carries credentials").count(), 1, "the cause is printed twice:\n{out:?}");
}

/// The same message and code as for the control plane: the file is the problem, not the
/// token endpoint's answer.
#[test]
fn a_bad_ca_file_seen_only_by_a_token_url_is_a_config_error() {
    let fx = fixture("https://127.0.0.1:9/token", SECRET);
    let out = fx.run("env", &["--ca-file", "/nonexistent/ca.pem"]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["cannot use CA file /nonexistent/ca.pem", "No such file"]);
    assert_eq!(out.stderr.matches("No such file").count(), 1, "{out:?}");
}

#[test]
fn an_unreadable_client_secret_file_names_the_file_and_the_cause() {
    let fx = fixture("https://127.0.0.1:9/token", "{ file: /nonexistent/client-secret }");
    let out = fx.run("env", &[]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(
        &out.stderr,
        &["\"hr-connection\"", "ConsumerSecret", "/nonexistent/client-secret", "No such file"],
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// `Until::Cancelled`: background renewal, one attempt per call (as in `serve`).
fn cache_for(cp: &FakeControlPlane, until: Until) -> TokenCache {
    let tls = TlsSettings { ca_file: Some(cp.ca_file().to_path_buf()), ..Default::default() };
    TokenCache::new(Arc::new(HttpClient::new(tls, Proxies::none())), until, Arc::default())
}

fn creds(cp: &FakeControlPlane) -> Credentials {
    let url = token_url(cp);
    Credentials {
        key: AppKey::new(&url, "portal", &[]),
        url: check_url(&url, false).unwrap(),
        auth: Material::Basic { secret: SECRET.into() },
    }
}

/// Waits (up to a generous deadline) until the fake has answered `n` token requests.
async fn requests_reach(cp: &FakeControlPlane, n: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while cp.requests_for("/token").len() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cp.requests_for("/token").len()
}

/// The renewal of a 10 s token is due from 7.5-8.5 s; at 8.6 s the endpoint fails, and the
/// caller still gets the last good token, which has 1.4 s left.
#[test]
fn a_failed_renewal_keeps_the_last_good_token() {
    let cp = FakeControlPlane::start(false);
    cp.script("/token", vec![Reply::raw(200, &token_body("AT-1", "10")), Reply::raw(500, "")]);
    runtime().block_on(async {
        let cache = cache_for(&cp, Until::Deadline);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let first = cache.get(creds(&cp), deadline).await.expect("first token");
        tokio::time::sleep_until(first.expires_at - Duration::from_millis(1400)).await;
        let kept = cache.get(creds(&cp), deadline).await.expect("the last good token");
        assert_eq!(kept.access_token.expose(), "AT-1");
    });
    assert_eq!(cp.requests_for("/token").iter().map(|r| r.status).collect::<Vec<_>>(), [200, 500]);
}

/// `invalid_client` during a background renewal stops it: a wrong secret does not fix
/// itself, and retrying every few seconds forever only loads the provider.
#[test]
fn no_background_retries_after_invalid_client() {
    let cp = FakeControlPlane::start(false);
    let refusal = r#"{"error":"invalid_client","error_description":"client authentication failed"}"#;
    cp.script("/token", vec![Reply::raw(200, &token_body("AT-1", "2")), Reply::raw(401, refusal)]);
    runtime().block_on(async {
        let cache = cache_for(&cp, Until::Cancelled);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        cache.get(creds(&cp), deadline).await.expect("first token");
        assert_eq!(requests_reach(&cp, 2).await, 2, "no background renewal");
        // Before the fix, the renewal retried within 50-200 ms, then ever more slowly, ≤ 5 s.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let apps = cache.apps();
        assert_eq!(apps.len(), 1);
        assert!(!apps[0].1, "the background renewal still runs after invalid_client");
        cache.shutdown().await;
    });
    assert_eq!(cp.requests_for("/token").len(), 2, "retried after invalid_client");
}

/// In long-running mode a 503 during a background renewal fails that one attempt
/// (transient, not permanent): the renewal goes on, and the next attempt renews the
/// token. Every attempt is counted in the metrics by its result.
#[test]
fn background_renewal_goes_on_after_a_transient_failure() {
    let cp = FakeControlPlane::start(false);
    cp.script(
        "/token",
        vec![
            Reply::raw(200, &token_body("AT-1", "2")),
            Reply::raw(503, ""),
            Reply::raw(200, &token_body("AT-2", "60")),
        ],
    );
    let metrics = Arc::new(connd::metrics::Metrics::default());
    runtime().block_on(async {
        let tls = TlsSettings { ca_file: Some(cp.ca_file().to_path_buf()), ..Default::default() };
        let cache = TokenCache::new(
            Arc::new(HttpClient::new(tls, Proxies::none())),
            connd::retry::Until::Cancelled,
            metrics.clone(),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        cache.get(creds(&cp), deadline).await.expect("first token");
        assert_eq!(requests_reach(&cp, 3).await, 3, "the renewal stopped after a 503");
        let renewed = cache.get(creds(&cp), deadline).await.expect("renewed token");
        assert_eq!(renewed.access_token.expose(), "AT-2");
        let apps = cache.apps();
        assert!(apps.len() == 1 && apps[0].1, "the background renewal is no longer armed: {apps:?}");
        cache.shutdown().await;
    });
    assert_eq!(cp.requests_for("/token").iter().map(|r| r.status).collect::<Vec<_>>(), [200, 503, 200]);
    let text = metrics.render();
    for line in ["connd_token_requests_total{result=\"ok\"} 2", "connd_token_requests_total{result=\"error\"} 1"] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

/// `serve`'s fetch keeps only the OAuth applications of the latest plan: a connection
/// removed from the directory no longer has its token renewed.
#[test]
fn applications_no_longer_planned_are_evicted() {
    let cp = FakeControlPlane::start(false);
    cp.script("/token", vec![Reply::raw(200, &token_body("AT-1", "60"))]);
    let url = token_url(&cp);
    let both = descriptor(HR, "hr-connection", &url, "portal", SECRET)
        + &descriptor(PAYROLL, "payroll", &url, "payroll-client", SECRET);
    let fx = Fixture::with(
        &component_yaml(&[("hr-connection", "thirdparty:svc/v1"), ("payroll", "thirdparty:svc/v1")]),
        &both,
    );
    let args = connd::source::outbound::Settings { control_plane: None, ..cp.remote_args() };
    let opts = connd::resolve::Options::default();
    runtime().block_on(async {
        let remote = connd::source::outbound::Outbound::new(&args, connd::retry::Until::Cancelled, Arc::default())
            .expect("remote");
        let plan = connd::resolve::plan(fx.path(), &opts).expect("plan");
        remote.fetch(&plan, Tokens::All).await.expect("first round");
        assert_eq!(remote.token_cache().apps().len(), 2);

        let component = component_yaml(&[("hr-connection", "thirdparty:svc/v1")]);
        std::fs::write(fx.join("component.yaml"), component).unwrap();
        let plan = connd::resolve::plan(fx.path(), &opts).expect("plan");
        remote.fetch(&plan, Tokens::All).await.expect("second round");
        let apps = remote.token_cache().apps();
        assert_eq!(apps.iter().map(|(k, _)| k.client_id.as_str()).collect::<Vec<_>>(), ["portal"], "{apps:?}");
        remote.token_cache().shutdown().await;
    });
}

#[test]
fn an_oauth_error_body_with_200_is_a_refusal_of_the_client() {
    let cp = FakeControlPlane::start(false);
    let refusal = r#"{"error":"invalid_client","error_description":"unknown client"}"#;
    cp.script("/token", vec![Reply::raw(200, refusal)]);
    let out = env(&fixture(&token_url(&cp), SECRET), &cp, "30s");
    assert_eq!(out.code, 77, "{out:?}");
    assert_contains(
        &out.stderr,
        &["refused client \"portal\": invalid_client (unknown client)", "check ConsumerKey and ConsumerSecret"],
    );
    assert!(!out.stderr.contains("not a token response"), "{out:?}");
    assert_eq!(cp.requests_for("/token").len(), 1, "a refusal must not be retried");

    // Any other OAuth error in a 200 is the endpoint's rejection of the request, also 77.
    cp.script("/token", vec![Reply::raw(200, r#"{"error":"invalid_scope"}"#)]);
    let out = env(&fixture(&token_url(&cp), SECRET), &cp, "30s");
    assert_eq!(out.code, 77, "{out:?}");
    assert_contains(&out.stderr, &["rejected the request of client \"portal\": invalid_scope"]);
}

/// The endpoint's own words are shown, but never the client secret they may quote back.
#[test]
fn an_error_description_that_quotes_the_secret_is_shown_without_it() {
    let cp = FakeControlPlane::start(false);
    let echo = format!(r#"{{"error":"invalid_grant","error_description":"bad secret {SECRET} for portal"}}"#);
    cp.script("/token", vec![Reply::raw(400, &echo)]);
    let out = env(&fixture(&token_url(&cp), SECRET), &cp, "30s");
    assert_eq!(out.code, 77, "{out:?}");
    assert_contains(
        &out.stderr,
        &["rejected the request of client \"portal\": invalid_grant (bad secret", "for portal)"],
    );
    assert!(!out.stderr.contains(SECRET), "{out:?}");
}

#[test]
fn a_missing_expires_in_is_300_seconds_said_at_debug_level() {
    let cp = FakeControlPlane::start(false);
    cp.script("/token", vec![Reply::raw(200, r#"{"access_token":"AT-1","token_type":"Bearer"}"#)]);
    let fx = fixture(&token_url(&cp), SECRET);
    let ca = cp.ca_file().display().to_string();
    let said = "the token response has no expires_in: taking the default lifetime";
    let out = fx.run("env", &["--ca-file", &ca, "--log-level", "debug"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stderr, &[said, "300s"]);
    let quiet = fx.run("env", &["--ca-file", &ca]);
    assert_eq!(quiet.code, 0, "{quiet:?}");
    assert!(!quiet.stderr.contains(said), "said above debug level:\n{quiet:?}");

    runtime().block_on(async {
        let cache = cache_for(&cp, Until::Deadline);
        let asked = tokio::time::Instant::now();
        let token = cache.get(creds(&cp), asked + Duration::from_secs(60)).await.expect("a token");
        let (answered, ttl) = (tokio::time::Instant::now(), Duration::from_secs(300));
        // Counted from when the request was sent: between asking and the answer.
        assert!(token.expires_at >= asked + ttl && token.expires_at <= answered + ttl, "{token:?}");
    });
}
