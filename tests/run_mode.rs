//! `connd run` as a real process supervising real processes: signals forwarded and exit
//! codes propagated, the stop timeout, orphans reaped as PID 1 (a fresh PID namespace)
//! and as a subreaper, restarts and signals on changed values (and none on equal ones),
//! stdin passed through, the API socket while the workload runs. The behaviours follow
//! what tini's and dumb-init's own test suites check.

use crate::support::kubelet::AtomicDir;
use crate::support::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long any expected event may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// `connd run --config-dir DIR ARGS... -- sh -c SCRIPT`, its stdin a pipe the test writes.
fn start(dir: &std::path::Path, args: &[&str], script: &str) -> Supervised {
    spawn(run_command(dir, args, script))
}

/// Starts `cmd` (connd run, or a wrapper of it) with its stdin a pipe the test writes.
fn spawn(mut cmd: Command) -> Supervised {
    cmd.stdin(Stdio::piped());
    Supervised::spawn(cmd).patience(PATIENCE)
}

/// A directory with a `main-db` whose Port is `port`: `CHOREO_MAIN_DB_PORT`.
fn dir(port: &str) -> AtomicDir {
    let f = files(port);
    AtomicDir::new(&refs(&f))
}

#[test]
fn sigterm_is_forwarded_and_143_returned() {
    let d = dir("5432");
    let mut s = start(d.path(), &[], "echo ready; exec sleep 30");
    s.expect("ready");
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait(), 143, "{}", s.transcript());
}

#[test]
fn every_forwarded_signal_reaches_the_child() {
    let d = dir("5432");
    let script = "for s in INT HUP QUIT USR1 USR2 WINCH; do trap \"echo got-$s\" $s; done
        trap 'echo got-TERM; exit 7' TERM
        echo ready
        while :; do sleep 0.02; done";
    let mut s = start(d.path(), &[], script);
    s.expect("ready");
    for (sig, name) in [
        (Signal::SIGINT, "INT"),
        (Signal::SIGHUP, "HUP"),
        (Signal::SIGQUIT, "QUIT"),
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGUSR2, "USR2"),
        (Signal::SIGWINCH, "WINCH"),
    ] {
        s.signal(sig);
        s.expect(&format!("got-{name}"));
    }
    s.signal(Signal::SIGTERM);
    s.expect("got-TERM");
    assert_eq!(s.wait(), 7, "the child's own code after a trapped SIGTERM:\n{}", s.transcript());
}

#[test]
fn a_child_ignoring_sigterm_is_killed_after_the_stop_timeout() {
    let d = dir("5432");
    let mut s = start(d.path(), &["--stop-timeout", "300ms"], "trap '' TERM; echo ready; exec sleep 30");
    s.expect("ready");
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait(), 137, "{}", s.transcript());
    s.expect("did not stop in time; sending SIGKILL");
}

#[test]
fn exit_codes_are_returned_as_is() {
    let d = dir("5432");
    for code in [0, 1, 255] {
        let mut s = start(d.path(), &[], &format!("exit {code}"));
        assert_eq!(s.wait(), code, "{}", s.transcript());
    }
    // Death by a signal connd does not forward: 128 + 10.
    let mut s = start(d.path(), &[], "kill -USR1 $$");
    assert_eq!(s.wait(), 138, "{}", s.transcript());
}

#[test]
fn stdin_and_variables_reach_the_child() {
    let d = dir("5432");
    let mut s = start(d.path(), &[], "echo \"port=$CHOREO_MAIN_DB_PORT\"; read line; echo \"read:$line\"");
    s.expect("port=5432");
    s.write_stdin("hello from stdin\n");
    s.expect("read:hello from stdin");
    assert_eq!(s.wait(), 0, "{}", s.transcript());
}

#[test]
fn a_missing_command_is_127_and_a_bad_directory_78() {
    let d = dir("5432");
    let out = connd().args(["run", "--config-dir"]).arg(d.path()).args(["--", "no-such-command-xyz"]).output();
    let out: crate::support::Run = out.unwrap().into();
    assert_eq!(out.code, 127, "{out:?}");
    assert_contains(&out.stderr, &["cannot run \"no-such-command-xyz\": not found in PATH"]);
    let out = run(&["run", "--config-dir", "/nonexistent/connd", "--", "true"]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["cannot read the config directory"]);
}

/// `(pid, comm, state, ppid)` of every process whose parent is `parent`.
fn children_of(parent: i32) -> Vec<(i32, String, char, i32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces or parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = stat[open + 1..close].to_owned();
        let mut rest = stat[close + 2..].split(' ');
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == parent {
            found.push((pid, comm, state, ppid));
        }
    }
    found
}

/// The workload leaves orphans: one that exits at once, two that live until the test
/// ends them. Each must be seen re-parented to connd, then gone: reaped, not a zombie.
const ORPHANS: &str = "sh -c 'true & sleep 60 & sleep 60 & exit 0'
    echo spawned
    read line
    exit 7";

#[track_caller]
fn assert_orphans_reaped(s: &mut Supervised, connd_pid: i32) {
    s.expect("spawned");
    let deadline = Instant::now() + PATIENCE;
    // The sleeps, re-parented to connd (the workload's shell is the other child).
    let sleeps = loop {
        let sleeps: Vec<i32> = children_of(connd_pid).iter().filter(|c| c.1 == "sleep").map(|c| c.0).collect();
        if sleeps.len() == 2 {
            break sleeps;
        }
        assert!(Instant::now() < deadline, "the orphans never became connd's: {:?}", children_of(connd_pid));
        std::thread::sleep(Duration::from_millis(10));
    };
    // Then they exit, when the test says so; connd must reap them, leaving only the workload.
    for pid in sleeps {
        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("end an orphan");
    }
    loop {
        let children = children_of(connd_pid);
        if children.len() == 1 && children[0].2 != 'Z' {
            break;
        }
        assert!(Instant::now() < deadline, "orphans left behind (Z = zombie): {children:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    s.write_stdin("done\n");
    assert_eq!(s.wait(), 7, "the workload's status survives the reaping:\n{}", s.transcript());
}

#[test]
fn orphans_are_reaped_when_connd_is_pid_1() {
    let d = dir("5432");
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", connd_bin(), "run", "--config-dir"]).arg(d.path());
    cmd.args(["--", "sh", "-c", ORPHANS]);
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    let mut s = spawn(cmd);
    s.expect("spawned");
    // unshare forks connd into the new namespace, where it is PID 1.
    let connd_pid = children_of(s.pid()).first().map(|c| c.0).expect("connd under unshare");
    let status = std::fs::read_to_string(format!("/proc/{connd_pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap_or_default();
    assert!(nspid.split_whitespace().last() == Some("1"), "connd is not PID 1 in its namespace: {nspid}");
    assert_orphans_reaped(&mut s, connd_pid);
}

#[test]
fn orphans_are_reaped_as_a_subreaper() {
    let d = dir("5432");
    let mut s = start(d.path(), &[], ORPHANS);
    let pid = s.pid();
    assert_orphans_reaped(&mut s, pid);
}

#[test]
fn forward_to_group_reaches_the_workloads_children() {
    let d = dir("5432");
    // The grandchild traps TERM; only a signal to the whole group reaches it.
    let script = "sh -c 'trap \"echo grandchild-TERM; exit 0\" TERM; echo ready; while :; do sleep 0.02; done'";
    let mut s = start(d.path(), &["--forward-to-group"], script);
    s.expect("ready");
    s.signal(Signal::SIGTERM);
    s.expect("grandchild-TERM");
    assert_eq!(s.wait(), 143, "{}", s.transcript());
}

/// `connd run --config-dir DIR ARGS... -- sh -c SCRIPT` on a terminal of its own: a pty
/// from `script`, which types the test's stdin into it and prints what appears on it.
/// The shell there then reads the terminal too: it can once connd has given it back.
fn start_on_a_terminal(dir: &std::path::Path, args: &[&str], script: &str) -> Supervised {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = vec![quote(connd_bin()), "run".into(), "--config-dir".into(), quote(&dir.display().to_string())];
    line.extend(args.iter().map(|a| quote(a)));
    line.extend(["--".into(), "sh".into(), "-c".into(), quote(script)]);
    let mut cmd = Command::new("script");
    let line = line.join(" ") + "; echo \"connd exited $?\"; read after; echo \"after:$after\"";
    cmd.args(["--quiet", "--return", "--command", &line, "/dev/null"]);
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    spawn(cmd)
}

#[test]
fn forward_to_group_on_a_terminal_gives_the_workload_the_terminal() {
    let mut d = dir("5432");
    // Reads the terminal in each start; the restarted one then exits on its own.
    let script = "echo \"start port=$CHOREO_MAIN_DB_PORT\"
        read line; echo \"read:$line port=$CHOREO_MAIN_DB_PORT\"
        [ \"$CHOREO_MAIN_DB_PORT\" = 6543 ] && exit 5
        exec sleep 30";
    let args = ["--forward-to-group", "--change-debounce", "50ms"];
    let mut s = start_on_a_terminal(d.path(), &args, script);
    s.expect("start port=5432");
    s.write_stdin("one\n");
    s.expect("read:one port=5432");
    // The restarted workload is a new group: it gets the terminal too.
    let f = files("6543");
    d.update(&refs(&f));
    s.expect("start port=6543");
    s.write_stdin("two\n");
    s.expect("read:two port=6543");
    s.expect("connd exited 5");
    s.write_stdin("three\n");
    s.expect("after:three");
    assert_eq!(s.wait(), 0, "{}", s.transcript());
}

/// Each start prints the variable and its pid, then waits.
const SHOW: &str = "echo \"start port=$CHOREO_MAIN_DB_PORT pid=$$\"; exec sleep 30";

#[test]
fn a_changed_value_restarts_the_child_with_it() {
    let mut d = dir("5432");
    let mut s = start(d.path(), &["--change-debounce", "50ms", "--stop-timeout", "5s"], SHOW);
    let first = s.expect("start port=5432");
    let f = files("6543");
    d.update(&refs(&f));
    let second = s.expect("start port=6543");
    assert_ne!(first.split("pid=").nth(1), second.split("pid=").nth(1), "a new process:\n{}", s.transcript());
    s.expect("restarting the workload");
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait(), 143, "{}", s.transcript());
    assert_eq!(s.count("start port="), 2, "exactly one restart:\n{}", s.transcript());
}

#[test]
fn with_a_restart_splay_a_change_still_restarts_once() {
    let mut d = dir("5432");
    let args = ["--change-debounce", "50ms", "--restart-splay", "500ms"];
    let mut s = start(d.path(), &args, SHOW);
    s.expect("start port=5432");
    let f = files("6543");
    d.update(&refs(&f));
    s.expect("waiting out the restart splay");
    s.expect("start port=6543");
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait(), 143, "{}", s.transcript());
    assert_eq!(s.count("start port="), 2, "exactly one restart:\n{}", s.transcript());
    assert_eq!(s.count("waiting out the restart splay"), 1, "{}", s.transcript());
}

/// A legacy service reference maps only HostName, so a new Port changes the connection
/// (the reloader publishes) but not the workload's variables.
fn legacy(host: &str, port: &str) -> Vec<(&'static str, String)> {
    let component = format!(
        "schemaVersion: 1.0\ndependencies:\n  serviceReferences:\n    - name: main-db\n      connectionConfig: {DB_ID}\n      env:\n        - from: HostName\n          to: DB_HOST\n"
    );
    vec![
        ("component.yaml", component),
        ("identity.yaml", IDENTITY.to_owned()),
        ("connections.yaml", connection(DB_ID, "main-db", &[("HostName", host), ("Port", &format!("\"{port}\""))])),
    ]
}

#[test]
fn values_re_read_but_equal_do_not_restart() {
    let f = legacy("pg-a", "5432");
    let mut d = AtomicDir::new(&refs(&f));
    let args = ["--change-debounce", "50ms", "--log-level", "debug"];
    let mut s = start(d.path(), &args, "echo \"start host=$DB_HOST\"; exec sleep 30");
    s.expect("start host=pg-a");
    // The reloader's own first resolution: the same values.
    s.expect_count("the workload's variables are unchanged", 1);
    let f = legacy("pg-a", "6543");
    d.update(&refs(&f));
    s.expect_count("the workload's variables are unchanged", 2);
    s.collect(Duration::from_millis(300));
    assert_eq!(s.count("start host="), 1, "restarted on equal values:\n{}", s.transcript());
    // The same setup does restart on a real change.
    let f = legacy("pg-b", "6543");
    d.update(&refs(&f));
    s.expect("start host=pg-b");
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait(), 143, "{}", s.transcript());
}

#[test]
fn on_change_signal_sends_the_named_signal_instead() {
    let mut d = dir("5432");
    let script = "trap 'echo got-USR2' USR2; echo \"start pid=$$\"; while :; do sleep 0.02; done";
    let mut s = start(d.path(), &["--change-debounce", "50ms", "--on-change", "signal:USR2"], script);
    s.expect("start pid=");
    let f = files("6543");
    d.update(&refs(&f));
    s.expect("got-USR2");
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait(), 143, "{}", s.transcript());
    assert_eq!(s.count("start pid="), 1, "signalled, not restarted:\n{}", s.transcript());
}

#[test]
fn a_burst_of_changes_restarts_once() {
    let mut d = dir("5432");
    let mut s = start(d.path(), &["--change-debounce", "1s"], SHOW);
    s.expect("start port=5432");
    for port in ["1", "2", "3", "4"] {
        let f = files(port);
        d.update(&refs(&f));
        std::thread::sleep(Duration::from_millis(50));
    }
    s.expect("start port=4");
    s.collect(Duration::from_millis(600));
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait(), 143, "{}", s.transcript());
    assert_eq!(s.count("start port="), 2, "one restart for the burst:\n{}", s.transcript());
}

#[tokio::test]
async fn the_api_socket_serves_while_the_workload_runs() {
    let d = dir("5432");
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("connd.sock");
    let socket_arg = socket.display().to_string();
    let mut s = start(d.path(), &["--socket", &socket_arg], "echo ready; read line; exit 3");
    s.expect("ready");
    let answer =
        connd::serve::api::client::request(&socket, http::Method::GET, "/v1/env").await.expect("the API answers");
    assert_eq!(answer.status, 200);
    assert_contains(&String::from_utf8_lossy(&answer.body), &["\"CHOREO_MAIN_DB_PORT\":\"5432\""]);
    s.write_stdin("done\n");
    assert_eq!(s.wait(), 3, "{}", s.transcript());
    assert!(!socket.exists(), "the socket file is removed on exit");
}

/// The value of the sample line `name` (with its labels) in a `/metrics` text, 0 if absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

/// Polls the API's `/metrics` until `pred` holds for it; returns that text.
async fn metrics_until(socket: &std::path::Path, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer =
            connd::serve::api::client::request(socket, http::Method::GET, "/metrics").await.expect("the API answers");
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        if pred(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "/metrics never showed {what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_api_socket_reports_the_metrics_of_the_running_reloader() {
    let mut d = dir("5432");
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("connd.sock");
    let socket_arg = socket.display().to_string();
    let mut s = start(d.path(), &["--socket", &socket_arg, "--change-debounce", "50ms"], SHOW);
    s.expect("start port=5432");
    let text = metrics_until(&socket, "ready", |t| sample(t, "connd_ready") == 1.0).await;
    assert!(sample(&text, "connd_last_success_age_seconds") >= 0.0, "{text}");
    let changed = "connd_reloads_total{result=\"changed\"}";
    let before = sample(&text, changed);
    assert!(before >= 1.0, "the first resolution is counted:\n{text}");
    let f = files("6543");
    d.update(&refs(&f));
    s.expect("start port=6543");
    metrics_until(&socket, "the reload", |t| sample(t, changed) > before).await;
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait(), 143, "{}", s.transcript());
}

#[test]
fn a_restart_kills_a_child_that_ignores_the_stop_signal() {
    let mut d = dir("5432");
    let args = ["--change-debounce", "50ms", "--stop-timeout", "200ms"];
    let script = "trap '' TERM; echo \"start port=$CHOREO_MAIN_DB_PORT\"; exec sleep 30";
    let mut s = start(d.path(), &args, script);
    s.expect("start port=5432");
    let f = files("6543");
    d.update(&refs(&f));
    s.expect("did not stop in time; sending SIGKILL");
    s.expect("start port=6543");
    // This one ignores SIGTERM too: connd's own SIGTERM ends in SIGKILL as well.
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait(), 137, "{}", s.transcript());
}

mod remote {
    //! `run` over the fake control plane: startup retries, and re-fetches every
    //! `--refresh-interval` that restart the workload only when a value changed.

    use super::*;
    use crate::support::control_plane::{FakeControlPlane, Reply};

    const ID: &str = HR_ID;

    fn fixture() -> Fixture {
        hr_remote().file("token", "sa-token\n")
    }

    fn key(v: &str) -> Reply {
        Reply::ok(v, &[("ConsumerKey", &format!("key-{v}"))])
    }

    fn start(fx: &Fixture, cp: &FakeControlPlane, startup_timeout: &str) -> Supervised {
        let (url, ca, token) = (cp.url(), cp.ca_file().display().to_string(), fx.join("token").display().to_string());
        let args = [
            "--control-plane",
            &url,
            "--ca-file",
            &ca,
            "--token-file",
            &token,
            "--startup-timeout",
            startup_timeout,
            "--refresh-interval",
            "200ms",
            "--change-debounce",
            "50ms",
        ];
        super::start(fx.path(), &args, "echo \"start key=$CHOREO_HR_CONNECTION_CONSUMERKEY\"; exec sleep 30")
    }

    #[test]
    fn a_failing_control_plane_is_retried_before_the_start() {
        let (fx, cp) = (fixture(), FakeControlPlane::start(false));
        cp.script(ID, vec![Reply::Status(500), Reply::Status(503), key("7")]);
        let mut s = start(&fx, &cp, "10s");
        s.expect("start key=key-7");
        s.signal(Signal::SIGTERM);
        assert_eq!(s.wait(), 143, "{}", s.transcript());
        assert_eq!(&cp.requests_for(ID).iter().map(|r| r.status).take(3).collect::<Vec<_>>(), &[500, 503, 200]);
    }

    #[test]
    fn an_unavailable_control_plane_past_the_startup_timeout_is_69_and_no_start() {
        let (fx, cp) = (fixture(), FakeControlPlane::start(false));
        cp.script(ID, vec![Reply::Status(500)]);
        let mut s = start(&fx, &cp, "1s");
        assert_eq!(s.wait(), 69, "{}", s.transcript());
        assert_eq!(s.count("start key="), 0, "{}", s.transcript());
        assert_contains(&s.transcript(), &["is unavailable", "status 500"]);
    }

    #[test]
    fn re_fetches_restart_only_when_a_value_changed() {
        let (fx, cp) = (fixture(), FakeControlPlane::start(false));
        cp.script(ID, vec![key("7")]);
        let mut s = start(&fx, &cp, "10s");
        s.expect("start key=key-7");
        // Several refreshes that bring the same values (304 or the same 200).
        let deadline = Instant::now() + PATIENCE;
        while cp.requests_for(ID).len() < 4 {
            assert!(Instant::now() < deadline, "no refreshes: {:?}", cp.requests_for(ID));
            s.collect(Duration::from_millis(50));
        }
        s.collect(Duration::from_millis(200));
        assert_eq!(s.count("start key="), 1, "restarted on equal values:\n{}", s.transcript());
        cp.script(ID, vec![key("8")]);
        s.expect("start key=key-8");
        s.signal(Signal::SIGTERM);
        assert_eq!(s.wait(), 143, "{}", s.transcript());
        assert_eq!(s.count("start key="), 2, "{}", s.transcript());
    }
}

/// `run --socket` on a directory that cannot be read: exit 78 before anything is bound
/// or said to serve, and no socket folder left behind.
#[test]
fn run_with_a_socket_and_a_bad_directory_leaves_nothing_behind() {
    let bad = Fixture::with(&component_yaml(&[("hr-service", "service:/x")]), "kind: Connection\nid: [\n");
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("sub/connd.sock");
    let out = bad.run("run", &["--socket", &socket.display().to_string(), "--", "true"]);
    assert_eq!(out.code, 78, "{out:?}");
    assert!(!out.stderr.contains("serving"), "{out:?}");
    assert!(!tmp.path().join("sub").exists(), "the socket folder was left behind");
}
