//! Retries go on until `--startup-timeout`, and the last attempt is made at the deadline
//! rather than skipped because the next backoff would cross it (docs/commands.md): `env` against
//! the control plane and a token endpoint, `run`'s and `serve`'s first resolution. A
//! fake that always answers 503 records when each request arrived; the last one must
//! arrive no earlier than the timeout after the process started.

use crate::support::control_plane::{FakeControlPlane, Reply};
use crate::support::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

const ID: &str = HR_ID;

/// Far from any point where the old code happened to try (its attempts cluster
/// around 0.2, 0.6, 1.4, 3.0 and 6.2 s, jittered).
const TIMEOUT: Duration = Duration::from_secs(5);

/// The process computes its deadline after it started, so the attempt made at the
/// deadline arrives at or after `started + TIMEOUT`; this only absorbs clock rounding.
const SLACK: Duration = Duration::from_millis(10);

/// `hr-connection` with a remote `ConsumerKey`.
fn remote_fixture() -> Fixture {
    hr_remote()
}

/// `hr-connection` under OAuth, its token from `token_url` mapped to `HR_TOKEN`.
fn oauth_fixture(token_url: &str) -> Fixture {
    let mut component = component_yaml(&[("hr-connection", "thirdparty:svc/v1")]);
    component.push_str(
        "configurations:\n  env:\n    - name: HR_TOKEN\n      valueFrom:\n        \
         connectionRef: { name: hr-connection, key: AccessToken }\n",
    );
    let descriptor = format!(
        "---\nkind: Connection\nid: {ID}\nname: hr-connection\nproject: hr-project\nvisibility: project\n\
         security: oauth2\nparameters:\n  TokenURL: {token_url}\n  ConsumerKey: portal\n  ConsumerSecret: s3cr3t\n"
    );
    Fixture::with(&component, &descriptor)
}

fn timeout_arg() -> String {
    format!("{}ms", TIMEOUT.as_millis())
}

/// Runs `connd <sub> --config-dir <fx> <args>` to its end; returns it with its start.
fn run_timed(fx: &Fixture, sub: &str, args: &[&str]) -> (Run, Instant) {
    let started = Instant::now();
    let out = connd().arg(sub).arg("--config-dir").arg(fx.path()).args(args).output().expect("connd runs");
    (out.into(), started)
}

#[track_caller]
fn assert_last_attempt_at_the_deadline(cp: &FakeControlPlane, id: &str, started: Instant) {
    let requests = cp.requests_for(id);
    let last = requests.last().expect("at least one attempt").at;
    let after = last.duration_since(started);
    assert!(
        after + SLACK >= TIMEOUT,
        "the last of {} attempts came {after:?} after the start, before the {TIMEOUT:?} deadline",
        requests.len()
    );
}

#[test]
fn env_tries_the_control_plane_at_the_deadline() {
    let (fx, cp) = (remote_fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Status(503)]);
    let ca = cp.ca_file().display().to_string();
    let args = ["--control-plane", &cp.url(), "--ca-file", &ca, "--startup-timeout", &timeout_arg()];
    let (out, started) = run_timed(&fx, "env", &args);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["is unavailable", "last cause: status 503"]);
    assert_last_attempt_at_the_deadline(&cp, ID, started);
}

#[test]
fn env_tries_the_token_endpoint_at_the_deadline() {
    let cp = FakeControlPlane::start(false);
    cp.script("/token", vec![Reply::raw(503, "")]);
    let fx = oauth_fixture(&format!("{}/token", cp.url()));
    let ca = cp.ca_file().display().to_string();
    let (out, started) = run_timed(&fx, "env", &["--ca-file", &ca, "--startup-timeout", &timeout_arg()]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["token endpoint", "is unavailable"]);
    assert_last_attempt_at_the_deadline(&cp, "/token", started);
}

#[test]
fn run_tries_at_the_deadline_before_giving_up() {
    let (fx, cp) = (remote_fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Status(503)]);
    let ca = cp.ca_file().display().to_string();
    let args = ["--control-plane", &cp.url(), "--ca-file", &ca, "--startup-timeout", &timeout_arg(), "--", "true"];
    let (out, started) = run_timed(&fx, "run", &args);
    assert_eq!(out.code, 69, "{out:?}");
    assert_last_attempt_at_the_deadline(&cp, ID, started);
}

#[test]
fn serve_tries_at_the_deadline_before_giving_up() {
    let (fx, cp) = (remote_fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Status(503)]);
    let ca = cp.ca_file().display().to_string();
    let socket = fx.join("connd.sock").display().to_string();
    let args =
        ["--control-plane", &cp.url(), "--ca-file", &ca, "--startup-timeout", &timeout_arg(), "--socket", &socket];
    let started = Instant::now();
    let child = connd()
        .arg("serve")
        .arg("--config-dir")
        .arg(fx.path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("connd runs");
    let out = Run::from(child);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["no complete set of values after 5s", "status 503"]);
    assert_last_attempt_at_the_deadline(&cp, ID, started);
}

/// JSON logs carry an error as a field under a fixed message, inside the span of the
/// connection it concerns, so that they can be filtered on either.
#[test]
fn a_retried_request_is_logged_with_its_connection_and_error_as_fields() {
    let (fx, cp) = (remote_fixture(), FakeControlPlane::start(false));
    cp.script(ID, vec![Reply::Status(503)]);
    let ca = cp.ca_file().display().to_string();
    let args = ["--control-plane", &cp.url(), "--ca-file", &ca, "--startup-timeout", "1s", "--log-format", "json"];
    let (out, _) = run_timed(&fx, "env", &args);
    assert_eq!(out.code, 69, "{out:?}");
    let records: Vec<serde_json::Value> = out.stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let retried = records
        .iter()
        .find(|r| r["message"] == "control-plane request failed, will retry")
        .unwrap_or_else(|| panic!("no retry record in:\n{}", out.stderr));
    assert_eq!(retried["connection"], "hr-connection", "{retried}");
    assert_eq!(retried["level"], "WARN", "{retried}");
    let error = retried["error"].as_str().unwrap_or_default();
    assert!(error.contains("status 503"), "{retried}");
}
