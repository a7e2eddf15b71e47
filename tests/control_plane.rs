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

/// `connd env` against `cp`, trusting its CA, with a short startup timeout.
fn env(fx: &Fixture, cp: &FakeControlPlane, extra: &[&str]) -> Run {
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
    let without = fx.run("check", &[]);
    assert_eq!(without.code, 78, "{without:?}");
    assert_contains(&without.stderr, &["`remote: true`, which needs a control plane", "--control-plane URL"]);
}

#[test]
fn refused_401_exits_77_naming_connection_and_url() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Status(401)]);
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 77, "{out:?}");
    assert_contains(&out.stderr, &["\"hr-connection\"", &url_of(&cp), "refused", "401 Unauthorized", "--token-file"]);
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
fn too_many_requests_waits_for_retry_after_then_succeeds() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::TooMany { retry_after_secs: 1 }, good()]);
    let out = env_within(&fx, &cp, "5s", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let requests = cp.requests_for(ID);
    assert_eq!(requests.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}, before the Retry-After of 1s");
}

#[test]
fn retry_after_past_the_startup_timeout_gives_up_with_69() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::TooMany { retry_after_secs: 30 }]);
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["unavailable", "429 Too Many Requests", "retry after 30s"]);
}

#[test]
fn server_errors_are_retried() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Status(500), Reply::Status(503), good()]);
    let out = env_within(&fx, &cp, "10s", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(cp.requests_for(ID).iter().map(|r| r.status).collect::<Vec<_>>(), [500, 503, 200]);
}

#[test]
fn a_server_error_past_the_startup_timeout_exits_69_with_the_last_cause() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Status(500)]);
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(
        &out.stderr,
        &["\"hr-connection\"", &url_of(&cp), "is unavailable", "last cause: status 500 Internal Server Error"],
    );
    assert!(cp.requests_for(ID).len() >= 2, "a 500 must be retried");
}

#[test]
fn a_slow_answer_times_out_within_the_startup_timeout() {
    let (fx, cp) = (fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Slow(Duration::from_secs(10))]);
    let started = std::time::Instant::now();
    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["\"hr-connection\"", "is unavailable", "last cause: no answer within"]);
    assert!(started.elapsed() < Duration::from_secs(5), "did not stop at the startup timeout");
}

#[test]
fn a_refused_connection_exits_69() {
    let fx = fixture();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let token = fx.join("token").display().to_string();
    let out = fx.run("env", &["--control-plane", &url, "--token-file", &token, "--startup-timeout", "500ms"]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["is unavailable", "cannot connect", "Connection refused"]);
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
        fx.run("env", &["--control-plane", &url, "--ca-file", &ca, "--token-file", &token, "--startup-timeout", "1s"]);
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

    let out = env(&fx, &cp, &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["\"hr-connection\"", "is unavailable"]);
    assert_eq!(cp.requests().len(), 1, "only the mTLS client got through");
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let fx = fixture();
    let out = fx.run("env", &["--control-plane", "http://cp.example.com"]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["refusing plain http:// to \"cp.example.com\"", "--allow-insecure-http"]);
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
    let args = connd::cli::RemoteArgs {
        control_plane: Some(cp.url()),
        token_file: Some(fx.join("token")),
        ca_file: Some(cp.ca_file().to_path_buf()),
        client_cert: None,
        client_key: None,
        allow_insecure_http: false,
        startup_timeout: Duration::from_secs(2),
    };
    let opts = connd::resolve::Options { control_plane: true, ..Default::default() };
    let plan = connd::resolve::plan(fx.path(), &opts).expect("plan");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let metrics = Arc::new(connd::metrics::Metrics::default());
    runtime.block_on(async {
        let remote = connd::remote::Remote::new(&args, false, metrics.clone()).expect("remote");
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
