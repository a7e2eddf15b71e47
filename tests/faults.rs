//! Faults of the README's fault matrix that no other module shows, on the real binary:
//! a control plane that turns slow, garbled, refusing or throttling after the first good
//! answer (`serve` and `run`), a config directory made invalid under `run`, and a `file:`
//! source whose folder loses the file (what a writer on a full disk leaves). Each asserts
//! what the user reads and that the last good values survive.

use crate::support::control_plane::{FakeControlPlane, Reply};
use crate::support::kubelet::AtomicDir;
use crate::support::*;
use connd::serve::api::client::{request, Answer};
use http::Method;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long any awaited event may take: generous, for a loaded machine. A slow answer
/// needs the control-plane request timeout (10 s) before it counts as failed.
const PATIENCE: Duration = Duration::from_secs(40);

async fn get(socket: &Path, target: &str) -> Answer {
    request(socket, Method::GET, target).await.expect("request")
}

fn password(a: &Answer) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", a.text()));
    v["CHOREO_MAIN_DB_PASSWORD"].as_str().unwrap_or_default().to_owned()
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

/// Polls `/metrics` until `pred` holds for it; returns that text.
async fn metrics_until(socket: &Path, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        // The socket may not be there yet (`run` binds it as it starts).
        let text = request(socket, Method::GET, "/metrics").await.map(|a| a.text()).unwrap_or_default();
        if !text.is_empty() && pred(&text) {
            return text;
        }
        assert!(start.elapsed() < PATIENCE, "/metrics never showed {what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `serve` gets `pw-1` from the control plane; then every answer is `fault`. Until
/// `/metrics` counts a failed call as `counted`, and after it, `/v1/env` keeps `pw-1` and
/// `/readyz` stays 200; the log says the last good values stay, with `cause`.
async fn serve_through(fault: Reply, counted: &str, cause: &str) {
    let dir = AtomicDir::new(&refs(&remote_files()));
    let cp = FakeControlPlane::start(false);
    cp.script(DB_ID, vec![Reply::ok("1", &[("Password", "pw-1")])]);
    let ca = cp.ca_file().display().to_string();
    let flags = ["--control-plane", &cp.url(), "--ca-file", &ca, "--refresh-interval", "200ms"];
    let daemon = Daemon::start(dir.path(), &flags, &[]);
    daemon.ready().await;
    let socket = daemon.socket.clone();
    assert_eq!(password(&get(&socket, "/v1/env").await), "pw-1");

    cp.script(DB_ID, vec![fault]);
    let text = metrics_until(&socket, counted, |t| {
        sample(t, &cp_calls(counted)) >= 1.0 && sample(t, "connd_reloads_total{result=\"error\"}") >= 1.0
    })
    .await;
    assert_eq!(sample(&text, "connd_ready"), 1.0, "{text}");
    assert_eq!(get(&socket, "/readyz").await.status, 200, "ready stays ready");
    assert_eq!(password(&get(&socket, "/v1/env").await), "pw-1", "the last good values stay");

    daemon.signal(Signal::SIGTERM);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    assert_contains(&stderr, &["reload failed, the last good values stay", "\"main-db\"", &cp.url(), cause]);
    assert!(!stderr.contains("pw-1"), "a value leaked into the log:\n{stderr}");
}

#[tokio::test]
async fn serve_keeps_the_last_good_values_when_the_control_plane_answers_garbage() {
    serve_through(Reply::Garbage, "bad_answer", "not the expected JSON").await;
}

#[tokio::test]
async fn serve_keeps_the_last_good_values_when_the_control_plane_answers_401() {
    serve_through(Reply::Status(401), "refused", "401 Unauthorized").await;
}

#[tokio::test]
async fn serve_keeps_the_last_good_values_when_the_control_plane_answers_429() {
    serve_through(Reply::TooMany { retry_after_secs: 1 }, "error", "429 Too Many Requests").await;
}

#[tokio::test]
async fn serve_keeps_the_last_good_values_when_the_control_plane_is_slower_than_the_request_timeout() {
    serve_through(Reply::Slow(Duration::from_secs(60)), "error", "no answer within").await;
}

/// `connd run --config-dir DIR ARGS... -- sh -c SCRIPT`.
fn start(dir: &Path, args: &[&str], script: &str) -> Supervised {
    Supervised::start(dir, args, script).patience(PATIENCE)
}

const SHOW_PASSWORD: &str = "echo \"start password=$CHOREO_MAIN_DB_PASSWORD\"; exec sleep 60";

/// `run` started on `pw-1`; then, in turn, garbage, a 401, a 429 and an answer slower
/// than the request timeout: each is logged, none restarts the workload; a new value
/// afterwards restarts it once.
#[test]
fn run_keeps_its_workload_through_control_plane_faults() {
    let dir = AtomicDir::new(&refs(&remote_files()));
    let cp = FakeControlPlane::start(false);
    cp.script(DB_ID, vec![Reply::ok("1", &[("Password", "pw-1")])]);
    let (url, ca) = (cp.url(), cp.ca_file().display().to_string());
    let flags = ["--control-plane", &url, "--ca-file", &ca, "--refresh-interval", "200ms", "--change-debounce", "50ms"];
    let mut s = start(dir.path(), &flags, SHOW_PASSWORD);
    s.expect_count("start password=pw-1", 1);
    // The start's own fetch, then the reloader's first round (its watcher starts 100 ms
    // into the workload's life) answered before a third request arrives.
    s.until("a reloader round", || cp.requests_for(DB_ID).len() >= 3);

    let faults = [
        (Reply::Garbage, 200, "not the expected JSON"),
        (Reply::Status(401), 401, "401 Unauthorized"),
        (Reply::TooMany { retry_after_secs: 1 }, 429, "429 Too Many Requests"),
    ];
    for (fault, status, cause) in faults {
        let before = cp.requests_for(DB_ID).len();
        cp.script(DB_ID, vec![fault]);
        let answered = || cp.requests_for(DB_ID)[before..].iter().filter(|r| r.status == status).count() >= 2;
        s.until(&format!("two answers {status}"), answered);
        s.expect_count(cause, 1);
    }
    // Slow: the request is cut at the request timeout, then counted as an outage.
    let arrivals = cp.requests_for(DB_ID).len();
    cp.script(DB_ID, vec![Reply::Slow(Duration::from_secs(60))]);
    s.expect_count("no answer within", 1);
    assert!(cp.requests_for(DB_ID).len() >= arrivals, "the slow answers were never asked for");
    assert_eq!(s.count("start password="), 1, "a fault restarted the workload:\n{}", s.transcript());
    assert!(s.count("reload failed, the last good values stay") >= 1, "{}", s.transcript());

    cp.script(DB_ID, vec![Reply::ok("2", &[("Password", "pw-2")])]);
    s.expect_count("start password=pw-2", 1);
    assert_eq!(s.stop(), 143, "{}", s.transcript());
    assert_eq!(s.count("start password="), 2, "one restart, for the new value:\n{}", s.transcript());
    assert!(!s.seen().iter().any(|l| l.starts_with("err: ") && l.contains("pw-")), "a value leaked into the log");
}

const SHOW_PORT: &str = "echo \"start port=$CHOREO_MAIN_DB_PORT\"; exec sleep 60";

/// The directory made invalid under `run`: the error is logged with its file and line,
/// the workload keeps running on its values; a valid update afterwards restarts it.
#[test]
fn run_keeps_its_workload_when_the_directory_turns_invalid() {
    let mut dir = AtomicDir::new(&refs(&files("5432")));
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("connd.sock");
    let args = ["--change-debounce", "50ms", "--socket", socket.to_str().unwrap()];
    let mut s = start(dir.path(), &args, SHOW_PORT);
    s.expect_count("start port=5432", 1);
    // The reloader's first resolution (100 ms into the workload's life) is done.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(metrics_until(&socket, "a first success", |t| sample(t, "connd_last_success_age_seconds") >= 0.0));
    let mut broken = files("6543");
    broken[2].1 = broken[2].1.replace("visibility: project", "visiblity: project");
    dir.update(&refs(&broken));
    s.expect_count("reload failed, the last good values stay", 1);
    s.expect_count("connections.yaml:", 1);
    dir.update(&refs(&files("7000")));
    s.expect_count("start port=7000", 1);
    assert_eq!(s.stop(), 143, "{}", s.transcript());
    assert_eq!(s.count("start port="), 2, "no start on the invalid directory:\n{}", s.transcript());
    assert_eq!(s.count("start port=6543"), 0, "{}", s.transcript());
}

/// A `file:` source in a folder of its own (a mounted secret). A writer on a full disk
/// that writes a temporary file and renames it leaves the temporary file half written
/// and the old file in place; one that deletes first leaves no file. `serve` keeps the
/// last good value through both and says which file it cannot read; a new file is
/// served. A writer that truncates in place and then fails leaves an empty file, which
/// connd cannot tell from an empty value: it is served as such.
#[tokio::test]
async fn serve_keeps_a_file_source_s_last_value_when_its_file_goes() {
    let secrets = tempfile::tempdir().unwrap();
    let key = secrets.path().join("db-password");
    std::fs::write(&key, "pw-1\n").unwrap();
    let mut f = files("5432");
    let source = format!("  Password: {{ file: {} }}\n", key.display());
    f[2].1 = f[2].1.replace("  HostName: pg.internal\n", &format!("  HostName: pg.internal\n{source}"));
    let dir = AtomicDir::new(&refs(&f));
    let daemon = Daemon::start(dir.path(), &["--rescan-interval", "200ms"], &[]);
    daemon.ready().await;
    let socket = daemon.socket.clone();
    assert_eq!(password(&get(&socket, "/v1/env").await), "pw-1");

    // The half-written temporary file of a failed write-and-rename: nothing changes.
    std::fs::write(secrets.path().join(".db-password.tmp"), "pw-").unwrap();
    let text =
        metrics_until(&socket, "a re-read", |t| sample(t, "connd_reloads_total{result=\"unchanged\"}") >= 1.0).await;
    assert_eq!(sample(&text, "connd_reloads_total{result=\"error\"}"), 0.0, "{text}");
    assert_eq!(password(&get(&socket, "/v1/env").await), "pw-1");

    // The file gone: the last good value stays, the failure is counted.
    std::fs::remove_file(&key).unwrap();
    let text =
        metrics_until(&socket, "a failed reload", |t| sample(t, "connd_reloads_total{result=\"error\"}") >= 1.0).await;
    assert!(sample(&text, "connd_error_age_seconds") >= 0.0, "{text}");
    assert_eq!(get(&socket, "/readyz").await.status, 200, "ready stays ready");
    assert_eq!(password(&get(&socket, "/v1/env").await), "pw-1", "the last good value stays");

    // Written again: served.
    std::fs::write(&key, "pw-2\n").unwrap();
    let start = Instant::now();
    while password(&get(&socket, "/v1/env").await) != "pw-2" {
        assert!(start.elapsed() < PATIENCE, "the new file was never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Truncated in place: an empty value, served as written (out of connd's reach).
    std::fs::write(&key, "").unwrap();
    let start = Instant::now();
    while !password(&get(&socket, "/v1/env").await).is_empty() {
        assert!(start.elapsed() < PATIENCE, "the empty file was never read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    daemon.signal(Signal::SIGTERM);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    assert_contains(
        &stderr,
        &[
            "reload failed, the last good values stay",
            "cannot read Password of connection \"main-db\" from",
            &key.display().to_string(),
            "No such file",
            "values resolved again",
        ],
    );
    assert!(!stderr.contains("pw-1") && !stderr.contains("pw-2"), "a value leaked into the log:\n{stderr}");
}

/// Whether `pid` runs: exists and is not a zombie.
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rfind(')').and_then(|i| stat[i + 2..].chars().next()).is_some_and(|state| state != 'Z'),
        Err(_) => false,
    }
}

/// The workload killed by SIGKILL from outside (the OOM killer, `kill -9`): `run` exits
/// 137 as a shell would, and what the workload started is stopped with it.
#[test]
fn a_workload_killed_by_sigkill_ends_run_with_137_and_its_children() {
    let dir = AtomicDir::new(&refs(&files("5432")));
    let script = "sleep 100 & echo \"grandchild=$!\"; echo \"main=$$\"; wait";
    let mut s = start(dir.path(), &["--stop-timeout", "5s"], script);
    s.expect_count("main=", 1);
    let pid_of = |s: &Supervised, key: &str| -> i32 {
        let line = s.seen().iter().find(|l| l.starts_with(key)).unwrap();
        line[key.len()..].trim().parse().unwrap()
    };
    let (main, grandchild) = (pid_of(&s, "main="), pid_of(&s, "grandchild="));
    kill(Pid::from_raw(main), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let code = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "connd did not exit after its workload died");
        std::thread::sleep(Duration::from_millis(20));
    };
    let alive = running(grandchild);
    let _ = kill(Pid::from_raw(grandchild), Signal::SIGKILL);
    assert_eq!(code, Some(137), "128 + SIGKILL");
    assert!(!alive, "the workload's child outlived it and connd");
}

/// `run --config-dir current` where `current` is a symlink retargeted as a release tool
/// does (`ln -s release-2 tmp && mv -T tmp current`): the workload restarts with the new
/// release's values, seen by the watcher (re-scans and refreshes are 10 minutes apart).
#[test]
fn run_sees_a_retargeted_config_dir_symlink() {
    let root = tempfile::tempdir().unwrap();
    for (release, port) in [("release-1", "5432"), ("release-2", "6543")] {
        let dir = root.path().join(release);
        std::fs::create_dir(&dir).unwrap();
        for (file, text) in refs(&files(port)) {
            std::fs::write(dir.join(file), text).unwrap();
        }
    }
    std::os::unix::fs::symlink("release-1", root.path().join("current")).unwrap();
    let current = root.path().join("current");
    let socket = root.path().join("connd.sock");
    let args = ["--rescan-interval", "10m", "--refresh-interval", "10m", "--change-debounce", "50ms", "--socket"];
    let mut s = start(&current, &[&args[..], &[socket.to_str().unwrap()]].concat(), SHOW_PORT);
    s.expect_count("start port=5432", 1);
    // The watcher is up once the reloader's first resolution is done (100 ms into the
    // workload's life): from then on, only the watcher can see the retarget.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(metrics_until(&socket, "a first success", |t| sample(t, "connd_last_success_age_seconds") >= 0.0));
    std::os::unix::fs::symlink("release-2", root.path().join("tmp")).unwrap();
    std::fs::rename(root.path().join("tmp"), &current).unwrap();
    s.expect_count("start port=6543", 1);
    assert_eq!(s.stop(), 143, "{}", s.transcript());
    assert_eq!(s.count("start port="), 2, "{}", s.transcript());
}

/// A token endpoint that refuses the client when `run` starts: exit 77 naming the
/// connection and the refusal, and the workload never starts.
#[test]
fn run_with_a_refusing_token_endpoint_exits_77_without_starting() {
    let cp = FakeControlPlane::start(false);
    cp.script("/token", vec![Reply::raw(401, r#"{"error":"invalid_client"}"#)]);
    let mut component = component_yaml(&[("hr-connection", "thirdparty:svc/v1")]);
    component.push_str(
        "configurations:\n  env:\n    - name: HR_TOKEN\n      valueFrom:\n        \
         connectionRef: { name: hr-connection, key: AccessToken }\n",
    );
    let descriptor =
        oauth_connection(DB_ID, "hr-connection", &format!("{}/token", cp.url()), "portal", "s3cr3t", "basic");
    let fx = Fixture::with(&component, &descriptor);
    let ca = cp.ca_file().display().to_string();
    let mut s = start(fx.path(), &["--ca-file", &ca, "--startup-timeout", "10s"], "echo started");
    let deadline = Instant::now() + PATIENCE;
    let code = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "connd did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    s.collect(Duration::from_millis(200));
    assert_eq!(code, Some(77), "{}", s.transcript());
    assert_eq!(s.count("started"), 0, "the workload started without its token:\n{}", s.transcript());
    assert_contains(&s.transcript(), &["\"hr-connection\"", "refused client \"portal\"", "invalid_client"]);
    assert!(!s.transcript().contains("s3cr3t"), "the secret leaked");
    assert_eq!(cp.requests_for("/token").len(), 1, "a refusal is not retried");
}
