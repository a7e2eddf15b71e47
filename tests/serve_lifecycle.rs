//! `serve`'s lifecycle edges: SIGTERM while a SIGHUP reload waits on a slow control
//! plane, intervals that would spin or panic, a reloader that dies, and the socket
//! file after a setup error.

use crate::support::control_plane::{FakeControlPlane, Reply};
use crate::support::kubelet::AtomicDir;
use crate::support::*;
use connd::serve::api::auth::Allow;
use connd::serve::{run, ServeSettings};
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn sigterm_during_a_slow_sighup_reload_exits_within_the_grace() {
    let dir = AtomicDir::new(&refs(&remote_files()));
    let cp = FakeControlPlane::start(false);
    cp.script(DB_ID, vec![Reply::ok("1", &[("Password", "pw-1")])]);
    let ca = cp.ca_file().display().to_string();
    let flags = ["--control-plane", &cp.url(), "--ca-file", &ca, "--refresh-interval", "1h", "--shutdown-grace", "1s"];
    let daemon = Daemon::start(dir.path(), &flags, &[]);
    daemon.ready().await;
    let before = cp.arrivals();

    // The reload's round hangs on the control plane (for longer than `wait` allows).
    cp.script(DB_ID, vec![Reply::Slow(Duration::from_secs(60))]);
    daemon.signal(Signal::SIGHUP);
    let start = Instant::now();
    while cp.arrivals() == before {
        assert!(start.elapsed() < PATIENCE, "the SIGHUP reload never asked the control plane");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.signal(Signal::SIGTERM);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    assert_contains(&stderr, &["SIGHUP: reloading", "SIGTERM: draining"]);
}

#[test]
fn zero_intervals_and_limits_are_usage_errors() {
    let dir = Fixture::with(&files("5432")[0].1, &files("5432")[2].1);
    let cases = [
        ("--rescan-interval", "0s", "too short for an interval"),
        ("--refresh-interval", "0ms", "at least 1ms"),
        ("--rescan-interval", "0.1ms", "at least 1ms"),
        ("--idle-timeout", "0s", "at least 1ms"),
        ("--max-connections", "0", "0 is not in 1.."),
    ];
    for (flag, value, message) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("connd.sock");
        let out = connd()
            .args(["serve", "--config-dir"])
            .arg(dir.path())
            .arg("--socket")
            .arg(&socket)
            .args([flag, value])
            .output()
            .expect("connd runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{flag} {value}: {stderr}");
        assert_contains(&stderr, &[flag, message]);
        assert!(!socket.exists(), "no socket for a usage error");
    }
}

#[tokio::test]
async fn a_reloader_that_dies_stops_serve_with_an_error() {
    let dir = AtomicDir::new(&refs(&files("5432")));
    let tmp = tempfile::tempdir().unwrap();
    let listener = connd::serve::api::server::bind(&tmp.path().join("connd.sock"), 0o660, None).expect("bind");
    let mut reload = crate::support::config(dir.path(), Duration::from_secs(3600));
    // A zero period (which the command line refuses) makes the reloader panic.
    reload.rescan_interval = Duration::ZERO;
    let settings = ServeSettings {
        reload,
        allow: Allow::new(vec![], vec![]),
        startup_timeout: Duration::from_secs(3600),
        grace: Duration::from_secs(1),
        notify_socket: None,
        sighup: false,
        limits: Default::default(),
        metrics_listener: None,
    };
    let served = run(listener, settings, Arc::new(connd::source::Local), Arc::default(), std::future::pending());
    let result = tokio::time::timeout(PATIENCE, served).await.expect("serve ends when its reloader dies");
    let err = result.expect_err("an error, not a clean exit");
    assert_contains(&err.to_string(), &["the reloader stopped unexpectedly"]);
}

#[test]
fn a_setup_error_leaves_no_socket_file() {
    let dir = Fixture::with(&files("5432")[0].1, &files("5432")[2].1);
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("run/connd.sock");
    let missing = tmp.path().join("no-such-ca.pem");
    let out = connd()
        .args(["serve", "--config-dir"])
        .arg(dir.path())
        .arg("--socket")
        .arg(&socket)
        .args(["--control-plane", "https://cp.example"])
        .arg("--ca-file")
        .arg(&missing)
        .output()
        .expect("connd runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert_contains(&stderr, &["no-such-ca.pem"]);
    assert!(!socket.exists(), "a socket file was left behind: {stderr}");
}
