//! `remote: true` parameters from a fake control plane over TLS: each scripted answer's
//! exit code and message, conditional requests, the bearer credential, CA and mTLS.

use crate::support::control_plane::{FakeControlPlane, Reply};
use crate::support::*;
use connd::source::{Sources, Tokens};
use std::sync::Arc;
use std::time::Duration;

const ID: &str = "19d2648b-d29c-4452-afdd-1b9311e81412";
const BEARER: &str = "sa-token-abc123";

/// A directory whose `hr-connection` has a literal URL and two remote parameters.
fn fixture() -> Fixture {
    Fixture::with(
        &component_yaml(&[("hr-connection", "service:/HRProject/users/v1/ad088/PUBLIC")]),
        &connection(
            ID,
            "hr-connection",
            &[
                ("ServiceURL", "https://hr.internal/v1"),
                ("ConsumerKey", "{ remote: true }"),
                ("ConsumerSecret", "{ remote: true, secret: true }"),
            ],
        ),
    )
    .file("token", &format!("{BEARER}\n"))
}

fn good() -> Reply {
    Reply::ok("7", &[("ConsumerKey", "key-1"), ("ConsumerSecret", "remote-secret-1"), ("Other", "x")])
}

/// `connd env` against `cp`, trusting its CA, with a startup timeout generous enough for
/// a loaded machine: for runs expected to succeed, or to fail at once.
fn env(fx: &Fixture, cp: &FakeControlPlane, extra: &[&str]) -> Run {
    env_within(fx, cp, "30s", extra)
}

/// `connd env` with a short startup timeout: for runs expected to give up.
fn env_failing(fx: &Fixture, cp: &FakeControlPlane, extra: &[&str]) -> Run {
    env_within(fx, cp, "1s", extra)
}

fn env_within(fx: &Fixture, cp: &FakeControlPlane, startup_timeout: &str, extra: &[&str]) -> Run {
    let (url, ca, token) = (cp.url(), cp.ca_file().display().to_string(), fx.join("token").display().to_string());
    let mut args =
        vec!["--control-plane", &url, "--ca-file", &ca, "--token-file", &token, "--startup-timeout", startup_timeout];
    args.extend_from_slice(extra);
    fx.run("env", &args)
}

fn url_of(cp: &FakeControlPlane) -> String {
    format!("{}/v1/projects/hr-project/components/user-portal/connections/{ID}", cp.url())
}

#[test]
fn env_prints_remote_parameters_fetched_with_the_bearer_credential() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![good()]);
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(
        &out.stdout,
        &["CHOREO_HR_CONNECTION_CONSUMERKEY='key-1'", "CHOREO_HR_CONNECTION_CONSUMERSECRET='remote-secret-1'"],
    );
    let requests = cp.requests_for(ID);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, format!("/v1/projects/hr-project/components/user-portal/connections/{ID}"));
    assert_eq!(requests[0].authorization.as_deref(), Some(format!("Bearer {BEARER}").as_str()));
    assert_eq!(requests[0].if_none_match, None);
}

#[test]
fn check_accepts_remote_parameters_without_contacting_the_control_plane() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![good()]);
    let out = fx.run("check", &["--control-plane", &cp.url()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(cp.requests().is_empty(), "check contacted the control plane");
    // Without one too: `check` contacts nothing (docs/commands.md).
    let without = fx.run("check", &[]);
    assert_eq!(without.code, 0, "{without:?}");
    assert_contains(&without.stdout, &["hr-connection.ConsumerKey", "<remote>"]);
}

#[test]
fn refused_401_exits_77_naming_connection_and_url() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Status(401)]);
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 77, "{out:?}");
    assert_contains(
        &out.stderr,
        &[
            "\"hr-connection\"",
            "parameters ConsumerKey, ConsumerSecret",
            &url_of(&cp),
            "refused",
            "401 Unauthorized",
            "--token-file",
        ],
    );
    assert!(!out.stderr.contains(BEARER), "the bearer credential leaked:\n{out:?}");
    assert_eq!(cp.requests_for(ID).len(), 1, "a 401 is permanent and must not be retried");
}

#[test]
fn forbidden_403_exits_77() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Status(403)]);
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 77, "{out:?}");
    assert_contains(&out.stderr, &["403 Forbidden"]);
}

#[test]
fn not_found_404_is_a_config_error() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["\"hr-connection\"", &url_of(&cp), "no such connection", "404 Not Found"]);
}

#[test]
fn too_many_requests_is_retried_then_succeeds() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::TooMany { retry_after_secs: 1 }, good()]);
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let requests = cp.requests_for(ID);
    assert_eq!(requests.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
}

/// `Retry-After: 1` within 1.9 s leaves room for at most one retry if it is honoured: a
/// client that ignored it would make dozens. (A loaded machine can only make fewer.)
#[test]
fn retry_after_is_honoured() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::TooMany { retry_after_secs: 1 }]);
    let out = env_within(&fx, &cp, "1900ms", &[]);
    assert_eq!(out.code, 69, "{out:?}");
    let requests = cp.requests_for(ID).len();
    assert!((1..=2).contains(&requests), "{requests} requests within 1.9 s despite Retry-After: 1");
    assert_contains(
        &out.stderr,
        &["429 Too Many Requests", "the server asked to retry after 1s, past the startup timeout"],
    );
}

#[test]
fn retry_after_past_the_startup_timeout_gives_up_with_69() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::TooMany { retry_after_secs: 30 }]);
    let out = env_failing(&fx, &cp, &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["unavailable", "429 Too Many Requests", "retry after 30s"]);
    assert_eq!(cp.requests_for(ID).len(), 1);
}

#[test]
fn a_huge_retry_after_gives_up_without_a_panic() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::TooMany { retry_after_secs: 9_999_999_999_999_999_999 }]);
    let out = env_failing(&fx, &cp, &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["is unavailable", "retry after 9999999999999999999s, past the startup timeout"]);
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}

/// `Retry-After: 0` must not disable backoff: connd waits at least 50 ms between
/// attempts, so 2 s allow at most 41 of them whatever the machine's speed.
#[test]
fn retry_after_zero_still_backs_off() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::TooMany { retry_after_secs: 0 }]);
    let out = env_within(&fx, &cp, "2s", &[]);
    assert_eq!(out.code, 69, "{out:?}");
    let requests = cp.requests_for(ID).len();
    assert!((2..=41).contains(&requests), "{requests} requests in 2 s with Retry-After: 0");
    assert_contains(&out.stderr, &["is unavailable", "last cause: status 429 Too Many Requests"]);
    assert!(!out.stderr.contains("retry after 0"), "{out:?}");
}

#[test]
fn a_huge_startup_timeout_is_not_a_panic() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![good()]);
    let out = env_within(&fx, &cp, "10000000000000000000s", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, &["CHOREO_HR_CONNECTION_CONSUMERKEY='key-1'"]);
}

#[test]
fn server_errors_are_retried() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Status(500), Reply::Status(503), good()]);
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(cp.requests_for(ID).iter().map(|r| r.status).collect::<Vec<_>>(), [500, 503, 200]);
}

#[test]
fn a_server_error_past_the_startup_timeout_exits_69_with_the_last_cause() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Status(500)]);
    // Long enough that the last attempt is a 500 rather than one cut short by the deadline.
    let out = env_within(&fx, &cp, "3s", &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(
        &out.stderr,
        &[
            "\"hr-connection\"",
            "parameters ConsumerKey, ConsumerSecret",
            &url_of(&cp),
            "is unavailable",
            "last cause: status 500 Internal Server Error",
        ],
    );
    assert!(cp.requests_for(ID).len() >= 2, "a 500 must be retried");
}

#[test]
fn a_slow_answer_times_out_within_the_startup_timeout() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Slow(Duration::from_secs(10))]);
    let out = env_failing(&fx, &cp, &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["\"hr-connection\"", "is unavailable", "last cause: no answer within"]);
}

/// The port is bound and released, so nothing listens: a refused connection. Another
/// process could take the port in between (a tiny window); then the attempt fails some
/// other way, so only the exit code and "cannot connect"'s class are asserted, not the
/// OS's wording.
#[test]
fn a_refused_connection_exits_69() {
    let fx = fixture();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let token = fx.join("token").display().to_string();
    let out = fx.run("env", &["--control-plane", &url, "--token-file", &token, "--startup-timeout", "500ms"]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["\"hr-connection\"", "is unavailable", "last cause:"]);
}

#[test]
fn garbage_is_a_bad_answer() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Garbage]);
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["\"hr-connection\"", &url_of(&cp), "bad answer", "not the expected JSON"]);
}

#[test]
fn an_oversized_body_is_refused() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Oversized(2 * 1024 * 1024)]);
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["\"hr-connection\"", "bad answer", "over 1048576 bytes"]);
}

#[test]
fn an_answer_without_a_remote_key_names_the_key() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::ok("1", &[("ConsumerKey", "key-1")])]);
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["\"hr-connection\"", &url_of(&cp), "has no parameter ConsumerSecret"]);
}

#[test]
fn an_unknown_ca_is_refused_with_a_hint() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![good()]);
    let other = FakeControlPlane::start(false);
    let (url, ca) = (cp.url(), other.ca_file().display().to_string());
    let token = fx.join("token").display().to_string();
    let out =
        fx.run("env", &["--control-plane", &url, "--ca-file", &ca, "--token-file", &token, "--startup-timeout", "30s"]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(
        &out.stderr,
        &[
            "\"hr-connection\"",
            "cannot talk to the control plane",
            "certificate is not trusted",
            "UnknownIssuer",
            "--ca-file",
        ],
    );
    assert!(cp.requests().is_empty());
}

#[test]
fn mtls_is_accepted_with_a_client_certificate_and_refused_without() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(true));
    cp.script(ID, vec![good()]);
    let (cert, key) = (cp.pki.client_cert.display().to_string(), cp.pki.client_key.display().to_string());
    let out = env(&fx, &cp, &["--client-cert", &cert, "--client-key", &key]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, &["CHOREO_HR_CONNECTION_CONSUMERKEY='key-1'"]);

    // Without one: the true cause and its fix, at once (a 30 s startup timeout would
    // allow many retries), as a config error.
    let (arrivals, connections) = (cp.arrivals(), cp.connections());
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(
        &out.stderr,
        &["\"hr-connection\"", "requires a client certificate (mTLS)", "pass --client-cert and --client-key"],
    );
    assert!(!out.stderr.contains("retrying") && !out.stderr.contains("attempt"), "{out:?}");
    assert_eq!(cp.requests().len(), 1, "only the mTLS client got through");
    assert_eq!(cp.arrivals(), arrivals, "no request got past the handshake");
    assert_eq!(cp.connections(), connections + 1, "a missing client certificate is not retried");
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let fx = fixture();
    let out = fx.run("env", &["--control-plane", "http://cp.example.com"]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["refusing plain http:// to \"cp.example.com\"", "--allow-insecure-http"]);
    assert_eq!(out.stderr.matches("refusing plain http://").count(), 1, "the cause is printed twice:\n{out:?}");
}

#[test]
fn credentials_in_the_control_plane_url_are_not_echoed() {
    let fx = fixture();
    let out = fx.run("env", &["--control-plane", "https://admin:Sup3rS3cret@127.0.0.1:9/"]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["--control-plane: https://127.0.0.1 carries credentials in the URL"]);
    assert!(!out.stderr.contains("Sup3rS3cret") && !out.stderr.contains("admin"), "a credential leaked:\n{out:?}");
    assert_eq!(out.stderr.matches("carries credentials").count(), 1, "the cause is printed twice:\n{out:?}");
}

/// serde_json's own message for a wrongly typed body quotes the value: a double-encoded
/// answer must not print the secret inside it.
#[test]
fn a_badly_typed_body_is_reported_without_its_content() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    let inner = r#"{"parameters":{"ConsumerKey":"key-1","ConsumerSecret":"TOPSECRET-remote"}}"#;
    cp.script(ID, vec![Reply::raw(200, &serde_json::to_string(inner).unwrap())]);
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["\"hr-connection\"", "bad answer", "not the expected JSON", "line 1 column"]);
    assert!(!out.stderr.contains("TOPSECRET"), "the body leaked:\n{out:?}");
}

#[test]
fn exec_fails_closed_without_the_remote_values() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Status(500)]);
    let marker = fx.join("started");
    let script = format!("touch {}", marker.display());
    let (url, ca, token) = (cp.url(), cp.ca_file().display().to_string(), fx.join("token").display().to_string());
    let out = fx.run(
        "exec",
        &[
            "--control-plane",
            &url,
            "--ca-file",
            &ca,
            "--token-file",
            &token,
            "--startup-timeout",
            "300ms",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_eq!(out.code, 69, "{out:?}");
    assert!(!marker.exists(), "the workload started without its values");
}

/// The library path that `serve` repeats: a second round sends If-None-Match, reuses the
/// values of the 304, and picks up a rotated bearer credential.
#[test]
fn later_rounds_are_conditional_and_reread_the_token_file() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![good()]);
    let args = connd::source::outbound::Settings { token_file: Some(fx.join("token")), ..cp.remote_args() };
    let opts = connd::resolve::Options { control_plane: true, ..Default::default() };
    let plan = connd::resolve::plan(fx.path(), &opts).expect("plan");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let metrics = Arc::new(connd::metrics::Metrics::default());
    runtime.block_on(async {
        let remote = connd::source::outbound::Outbound::new(&args, connd::retry::Until::Deadline, metrics.clone())
            .expect("remote");
        let first = remote.fetch(&plan, Tokens::Mapped).await.expect("first round");
        // A rotated credential: a new file swapped in, as the kubelet does.
        std::fs::write(fx.join("token.new"), "rotated-token\n").unwrap();
        std::fs::rename(fx.join("token.new"), fx.join("token")).unwrap();
        let second = remote.fetch(&plan, Tokens::Mapped).await.expect("second round");
        for fetched in [&first, &second] {
            assert_eq!(fetched.params[ID]["ConsumerSecret"].expose(), "remote-secret-1");
        }
    });
    let requests = cp.requests_for(ID);
    assert_eq!(requests.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 304]);
    assert_eq!(requests[1].if_none_match.as_deref(), Some("\"7\""));
    assert_eq!(requests[1].authorization.as_deref(), Some("Bearer rotated-token"));
    let text = metrics.render();
    assert_contains(
        &text,
        &[
            "connd_control_plane_requests_total{result=\"ok\"} 1\n",
            "connd_control_plane_requests_total{result=\"not_modified\"} 1\n",
            "connd_control_plane_requests_total{result=\"error\"} 0\n",
        ],
    );
    assert!(!text.contains("rotated-token") && !text.contains("remote-secret"), "{text}");
}

#[test]
fn an_unreadable_ca_file_is_a_config_error() {
    let fx = fixture();
    let out = fx.run("env", &["--control-plane", "https://127.0.0.1:9", "--ca-file", "/nonexistent/ca.pem"]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["cannot use CA file /nonexistent/ca.pem", "No such file"]);
}

/// A descriptor that adds a remote key after a first round: the 304 of the next round is
/// answered from the whole cached 200, which had the key all along.
#[test]
fn a_key_added_later_is_fetched_although_the_version_did_not_change() {
    let fx = Fixture::with(
        &component_yaml(&[("hr-connection", "service:/HRProject/users/v1/ad088/PUBLIC")]),
        &connection(
            ID,
            "hr-connection",
            &[("ServiceURL", "https://hr.internal/v1"), ("ConsumerKey", "{ remote: true }")],
        ),
    )
    .file("token", &format!("{BEARER}\n"));
    let cp = FakeControlPlane::start(false);
    cp.script(ID, vec![good()]);
    let remote = remote_for(&fx, &cp);
    let opts = connd::resolve::Options { control_plane: true, ..Default::default() };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let plan = connd::resolve::plan(fx.path(), &opts).expect("plan");
        let first = remote.fetch(&plan, Tokens::Mapped).await.expect("first round");
        assert_eq!(first.params[ID]["ConsumerKey"].expose(), "key-1");
        let more = connection(
            ID,
            "hr-connection",
            &[
                ("ServiceURL", "https://hr.internal/v1"),
                ("ConsumerKey", "{ remote: true }"),
                ("Other", "{ remote: true }"),
            ],
        );
        std::fs::write(fx.join("connections.yaml"), more).unwrap();
        let plan = connd::resolve::plan(fx.path(), &opts).expect("plan");
        let second = remote.fetch(&plan, Tokens::Mapped).await.expect("second round");
        assert_eq!(second.params[ID]["Other"].expose(), "x");
        // A third round has everything cached: conditional again.
        let third = remote.fetch(&plan, Tokens::Mapped).await.expect("third round");
        assert_eq!(third.params[ID]["Other"].expose(), "x");
    });
    let requests = cp.requests_for(ID);
    assert_eq!(requests.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 304, 304], "{requests:?}");
}

/// An answer lacking a wanted key is an error naming the key, and it is not cached: the
/// next round asks again unconditionally rather than trusting a 304.
#[test]
fn a_304_for_a_key_the_server_never_had_names_the_key() {
    let fx = fixture();
    let cp = FakeControlPlane::start(false);
    cp.script(ID, vec![Reply::ok("7", &[("ConsumerKey", "key-1")])]);
    let remote = remote_for(&fx, &cp);
    let opts = connd::resolve::Options { control_plane: true, ..Default::default() };
    let plan = connd::resolve::plan(fx.path(), &opts).expect("plan");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        for _ in 0..2 {
            let err = remote.fetch(&plan, Tokens::Mapped).await.expect_err("ConsumerSecret is missing");
            assert_contains(&format!("{err:#}"), &["\"hr-connection\"", "has no parameter ConsumerSecret"]);
        }
    });
    let requests = cp.requests_for(ID);
    assert!(requests.iter().all(|r| r.if_none_match.is_none()), "{requests:?}");
}

fn remote_for(fx: &Fixture, cp: &FakeControlPlane) -> connd::source::outbound::Outbound {
    let args = connd::source::outbound::Settings { token_file: Some(fx.join("token")), ..cp.remote_args() };
    connd::source::outbound::Outbound::new(&args, connd::retry::Until::Deadline, Arc::default()).expect("remote")
}

#[test]
fn a_control_plane_url_with_a_query_or_fragment_is_a_usage_error() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![good()]);
    for (url, part) in [(format!("{}?x=1", cp.url()), "has a query"), (format!("{}/#top", cp.url()), "has a fragment")]
    {
        let out = fx.run("env", &["--control-plane", &url, "--ca-file", &cp.ca_file().display().to_string()]);
        assert_eq!(out.code, 64, "{out:?}");
        assert_contains(&out.stderr, &["--control-plane", part, "give scheme, host, port and optional path only"]);
    }
    assert!(cp.requests().is_empty(), "{:?}", cp.requests());
}

/// A port outside 0-65535 is not a port: never read as "no port", which would call 80/443.
#[test]
fn a_control_plane_url_with_a_port_out_of_range_is_refused() {
    let fx = fixture();
    for url in ["http://127.0.0.1:99999", "https://cp.example:65536/api"] {
        let out = fx.run("env", &["--control-plane", url, "--startup-timeout", "1s"]);
        assert_eq!(out.code, 64, "{out:?}");
        assert_contains(&out.stderr, &["--control-plane", "port", "0-65535"]);
        assert!(!out.stderr.contains(":80") && !out.stderr.contains("unavailable"), "{out:?}");
    }
}

#[test]
fn a_token_file_with_a_byte_order_mark_sends_the_token_without_it() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![good()]);
    let fx = fx.file("token", &format!("\u{feff}{BEARER}\r\n"));
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let requests = cp.requests_for(ID);
    assert_eq!(requests[0].authorization.as_deref(), Some(format!("Bearer {BEARER}").as_str()));
}

/// A parameter sent as `null` is there without a value: said so, not "has no parameter".
#[test]
fn a_null_parameter_is_said_to_be_null() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    let body = r#"{"parameters": {"ConsumerKey": "key-1", "ConsumerSecret": null}}"#;
    cp.script(ID, vec![Reply::raw_with(200, &[("ETag", "\"1\"")], body)]);
    let out = env(&fx, &cp, &[]);
    assert_ne!(out.code, 0, "{out:?}");
    assert_contains(&out.stderr, &["\"hr-connection\"", "parameter ConsumerSecret is null", "set one there"]);
    assert!(!out.stderr.contains("has no parameter"), "{out:?}");
}
