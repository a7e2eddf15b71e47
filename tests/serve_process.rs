//! `connd serve` and `connd probe` as real processes: signals (drain on SIGTERM, reload
//! on SIGHUP), sd_notify, callers of another uid, the socket file, startup failures.

use crate::support::kubelet::AtomicDir;
use crate::support::*;
use connd::serve::api::client::request;
use http::Method;
use nix::sys::signal::Signal;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[tokio::test]
async fn sigterm_answers_an_in_flight_blocking_query_then_exits_0() {
    let dir = AtomicDir::new(&refs(&files("5432")));
    let daemon = Daemon::start(dir.path(), &["--shutdown-grace", "5s"], &[]);
    daemon.ready().await;
    let socket = daemon.socket.clone();
    let waiting = tokio::spawn(async move { request(&socket, Method::GET, "/v1/env?index=1&wait=60s").await });
    let start = Instant::now();
    loop {
        let text = request(&daemon.socket, Method::GET, "/metrics").await.expect("metrics").text();
        if text.contains("\nconnd_api_parked_queries 1\n") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the blocking query never parked:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.signal(Signal::SIGTERM);
    // Answered by the drain, long before its 60s wait.
    let answer = tokio::time::timeout(Duration::from_secs(30), waiting).await.expect("answered").unwrap().unwrap();
    assert_eq!(answer.status, 200);
    assert_contains(&answer.text(), &["\"CHOREO_MAIN_DB_PORT\":\"5432\""]);
    let socket = daemon.socket.clone();
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    assert_contains(&stderr, &["SIGTERM: draining"]);
    assert!(!socket.exists(), "the socket file is removed on exit");
}

#[tokio::test]
async fn sd_notify_ready_reloading_stopping() {
    let dir = AtomicDir::new(&refs(&files("5432")));
    let tmp = tempfile::tempdir().unwrap();
    let notify_path = tmp.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let recv = || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let daemon = Daemon::start(dir.path(), &[], &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())]);
    assert_eq!(recv(), "READY=1");
    daemon.signal(Signal::SIGHUP);
    let reloading = recv();
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading}");
    assert!(reloading["RELOADING=1\nMONOTONIC_USEC=".len()..].parse::<u64>().is_ok(), "{reloading}");
    assert_eq!(recv(), "READY=1");
    daemon.signal(Signal::SIGTERM);
    assert_eq!(recv(), "STOPPING=1");
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    assert_contains(&stderr, &["SIGHUP: reloading"]);
}

/// `connd probe` run as uid/gid 65534 (nobody), through setpriv from util-linux.
fn probe_as_nobody(socket: &Path) -> Run {
    probe_as_nobody_with_pid(socket).1
}

/// The same, and the prober's pid (setpriv execs connd in its place).
fn probe_as_nobody_with_pid(socket: &Path) -> (u32, Run) {
    let child = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"])
        .arg(connd_bin())
        .args(["probe", "--socket"])
        .arg(socket)
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv runs");
    (child.id(), child.wait_with_output().expect("setpriv ends").into())
}

#[tokio::test]
async fn a_caller_of_another_uid_is_refused_unless_allowed() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test switches uid with setpriv, so it must run as root (CI does)");
    }
    let dir = AtomicDir::new(&refs(&files("5432")));
    // A socket anyone may connect to: only the peer-credential check stands in the way.
    let refused = Daemon::start(dir.path(), &["--socket-mode", "0666"], &[]);
    refused.ready().await;
    std::fs::set_permissions(refused.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(refused.socket.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(std::fs::metadata(&refused.socket).unwrap().permissions().mode() & 0o777, 0o666);
    let (pid, out) = probe_as_nobody_with_pid(&refused.socket);
    assert_eq!(out.code, 69, "{out:?}");
    // A refusal is no verdict on readiness: said as such, with the uid to allow.
    assert_contains(&out.stderr, &["refused (403)", "uid 65534", "readiness unknown", "--allow-uid 65534"]);
    assert!(!out.stderr.contains("not ready"), "{out:?}");
    // The operator learns who knocked.
    refused.signal(Signal::SIGTERM);
    let (_, log) = refused.wait();
    let line = log.lines().find(|l| l.contains("refused an API caller")).unwrap_or_else(|| panic!("{log}"));
    assert_contains(line, &["uid=65534", "gid=65534", &format!("pid={pid}"), "--allow-uid"]);

    let allowed = Daemon::start(dir.path(), &["--socket-mode", "0666", "--allow-uid", "1,65534"], &[]);
    allowed.ready().await;
    std::fs::set_permissions(allowed.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(allowed.socket.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = probe_as_nobody(&allowed.socket);
    assert_eq!(out.code, 0, "{out:?}");
}

#[tokio::test]
async fn the_socket_file_stale_in_use_and_mode() {
    let dir = AtomicDir::new(&refs(&files("5432")));
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("connd.sock");
    // A socket file left by a process that died: nothing listens on it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut first = connd()
        .args(["serve", "--config-dir"])
        .arg(dir.path())
        .arg("--socket")
        .arg(&socket)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while request(&socket, Method::GET, "/readyz").await.map(|a| a.status != 200).unwrap_or(true) {
        assert!(start.elapsed() < Duration::from_secs(10), "never ready on the stale socket's path");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o660, "the default mode");

    let second =
        run(&["serve", "--config-dir", &dir.path().display().to_string(), "--socket", socket.to_str().unwrap()]);
    assert_eq!(second.code, 73, "{second:?}");
    assert_contains(&second.stderr, &["is in use by a running server", "choose another --socket"]);
    let _ = first.kill();
    let _ = first.wait();

    let file = tmp.path().join("plain");
    std::fs::write(&file, "x").unwrap();
    let out = run(&["serve", "--config-dir", "/nonexistent", "--socket", file.to_str().unwrap()]);
    assert_eq!(out.code, 73, "{out:?}");
    assert_contains(&out.stderr, &["exists and is not a socket"]);
}

#[test]
fn an_invalid_directory_past_the_startup_timeout_exits_78() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("connd.sock");
    let args = ["serve", "--config-dir", "/nonexistent/connd", "--startup-timeout", "300ms", "--socket"];
    let out: Run = connd().args(args).arg(&socket).output().unwrap().into();
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["no complete set of values after 0.3s", "cannot read the config directory"]);
}

#[test]
fn probe_without_a_server_fails() {
    let out = run(&["probe", "--socket", "/nonexistent/connd.sock"]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["cannot connect to /nonexistent/connd.sock: No such file or directory"]);
    assert_eq!(out.stderr.matches("No such file or directory").count(), 1, "the cause once: {out:?}");
}

#[tokio::test]
async fn an_allowed_user_the_socket_keeps_out_is_a_warning_naming_the_fix() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test switches uid with setpriv, so it must run as root (CI does)");
    }
    let dir = AtomicDir::new(&refs(&files("5432")));
    // By name: `nobody` is uid 65534. The default 0660 root:root socket keeps it out.
    let kept_out = Daemon::start(dir.path(), &["--allow-uid", "nobody"], &[]);
    kept_out.ready().await;
    kept_out.signal(Signal::SIGTERM);
    let (code, stderr) = kept_out.wait();
    assert_eq!(code, 0, "{stderr}");
    assert_contains(
        &stderr,
        &[
            "--allow-uid 65534: nobody (uid 65534) may not connect",
            "is 0660 root (uid 0):root (gid 0)",
            "connd cannot see groups given when a process starts",
            "--socket-group",
        ],
    );
    assert!(!stderr.contains("0666"), "loosening the mode is never the fix offered:\n{stderr}");

    // The fix the warning names works: the socket's group is nobody's group.
    let fixed = Daemon::start(dir.path(), &["--allow-uid", "nobody", "--socket-group", "65534"], &[]);
    fixed.ready().await;
    std::fs::set_permissions(fixed.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(fixed.socket.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = probe_as_nobody(&fixed.socket);
    assert_eq!(out.code, 0, "{out:?}");
    fixed.signal(Signal::SIGTERM);
    let (_, stderr) = fixed.wait();
    assert!(!stderr.contains("connect"), "{stderr}");

    let group = Daemon::start(dir.path(), &["--allow-gid", "65534"], &[]);
    group.ready().await;
    group.signal(Signal::SIGTERM);
    let (_, stderr) = group.wait();
    assert_contains(&stderr, &["--allow-gid 65534: processes of group", "cannot connect", "pass --socket-group 65534"]);
    assert!(!stderr.contains("0666"), "{stderr}");
}

/// The shipped sidecar: the workload's uid has no user in connd's container and gets the
/// socket's group from the pod's `fsGroup`, which connd cannot see: no warning.
#[tokio::test]
async fn an_allowed_uid_unknown_here_with_a_group_writable_socket_is_no_warning() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test sets the socket's group, so it must run as root (CI does)");
    }
    assert!(nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(10001)).unwrap().is_none(), "uid 10001 exists here");
    let dir = AtomicDir::new(&refs(&files("5432")));
    let daemon = Daemon::start(dir.path(), &["--allow-uid", "10001", "--socket-group", "65532"], &[]);
    daemon.ready().await;
    daemon.signal(Signal::SIGTERM);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("10001") && !stderr.contains("0666"), "a false warning:\n{stderr}");
    // The socket's group keeps out a uid without it: still said, without a looser mode.
    let daemon = Daemon::start(dir.path(), &["--allow-uid", "10001", "--socket-mode", "0600"], &[]);
    daemon.ready().await;
    daemon.signal(Signal::SIGTERM);
    let (_, stderr) = daemon.wait();
    assert_contains(
        &stderr,
        &["--allow-uid 10001: uid 10001 cannot connect", "its group cannot write", "--socket-mode 0660"],
    );
}

#[test]
fn unknown_user_and_group_names_are_usage_errors() {
    for (flag, needle) in
        [("--allow-uid", "no user named \"no-such-user\""), ("--allow-gid", "no group named \"no-such-user\"")]
    {
        let out = run(&["serve", "--config-dir", "/nonexistent", flag, "no-such-user"]);
        assert_eq!(out.code, 64, "{out:?}");
        assert_contains(&out.stderr, &[needle, "give a"]);
        assert!(!out.stderr.contains("invalid digit"), "{out:?}");
    }
}

#[tokio::test]
async fn stray_signals_do_not_end_serve() {
    let dir = AtomicDir::new(&refs(&files("5432")));
    let daemon = Daemon::start(dir.path(), &[], &[]);
    daemon.ready().await;
    for signal in [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGALRM] {
        daemon.signal(signal);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = request(&daemon.socket, Method::GET, "/healthz").await.expect("still serving");
        assert_eq!(answer.status, 200, "after {signal}");
    }
    daemon.signal(Signal::SIGTERM);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
}
