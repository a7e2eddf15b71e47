//! The reloader on real files: the kubelet's `..data` swap, invalid updates that keep
//! the last good values, and a first resolution that waits for the control plane.

use crate::support::control_plane::{FakeControlPlane, Reply};
use crate::support::kubelet::AtomicDir;
use crate::support::*;
use connd::error::Classify;
use connd::metrics::Metrics;
use connd::reload::snapshot::Snapshot;
use connd::reload::{Reloader, StartupError};
use connd::source::outbound::Outbound;
use std::sync::Arc;
use std::time::Duration;

fn env(s: &Snapshot, var: &str) -> Option<String> {
    s.env().and_then(|(env, _)| env.get(var).map(|v| v.expose().to_owned()))
}

#[tokio::test]
async fn a_kubelet_update_is_picked_up_by_the_watcher() {
    let mut dir = AtomicDir::new(&refs(&files("5432")));
    let metrics = Arc::new(Metrics::default());
    // A refresh interval of an hour: only the file watcher can notice the update.
    let cfg = config(dir.path(), Duration::from_secs(3600));
    let reloader = Reloader::start(cfg, Arc::new(connd::source::Local), metrics.clone(), std::future::pending());
    let first = reloader.ready(Duration::from_secs(5)).await.expect("ready");
    assert_eq!(env(&first, "CHOREO_MAIN_DB_PORT").as_deref(), Some("5432"));
    let r = first.resolved.clone().unwrap();

    let mut rx = reloader.subscribe();
    dir.update(&refs(&files("6543")));
    let next =
        wait_for(&mut rx, "the port is 6543", |s| env(s, "CHOREO_MAIN_DB_PORT").as_deref() == Some("6543")).await;
    let n = next.resolved.clone().unwrap();
    assert!(n.env_index > r.env_index);
    assert_eq!(n.connections_index, r.connections_index, "the listing did not change");
    let api = n.position("api-x").unwrap();
    assert_eq!(n.connection_index[api], r.connection_index[r.position("api-x").unwrap()]);
    assert!(metrics.render().contains("connd_reloads_total{result=\"changed\"} 2"), "{}", metrics.render());
}

#[tokio::test]
async fn an_invalid_update_keeps_the_last_good_values() {
    let mut dir = AtomicDir::new(&refs(&files("5432")));
    let metrics = Arc::new(Metrics::default());
    let cfg = config(dir.path(), Duration::from_secs(3600));
    let reloader = Reloader::start(cfg, Arc::new(connd::source::Local), metrics.clone(), std::future::pending());
    reloader.ready(Duration::from_secs(5)).await.expect("ready");
    let mut rx = reloader.subscribe();

    let mut broken = files("5432");
    broken[2].1 = broken[2].1.replace("name: api-x", "name: api-x\nbogus: 1");
    dir.update(&refs(&broken));
    let s = wait_for(&mut rx, "a failure is reported", |s| s.failure.is_some()).await;
    let failure = s.failure.clone().unwrap();
    assert_contains(&failure.message, &["connections.yaml", "bogus"]);
    assert_eq!(failure.class.exit_code(), 78);
    assert_eq!(env(&s, "CHOREO_MAIN_DB_PORT").as_deref(), Some("5432"), "the last good values stay");
    assert!(metrics.render().contains("connd_reloads_total{result=\"error\"} 1"), "{}", metrics.render());

    dir.update(&refs(&files("7000")));
    wait_for(&mut rx, "recovered with the new port", |s| {
        s.failure.is_none() && env(s, "CHOREO_MAIN_DB_PORT").as_deref() == Some("7000")
    })
    .await;
}

#[tokio::test]
async fn not_ready_while_the_control_plane_is_down_then_ready() {
    let dir = AtomicDir::new(&refs(&remote_files()));
    let cp = FakeControlPlane::start(false);
    cp.script(DB_ID, vec![Reply::Status(503)]);
    let args = cp.remote_args();
    let metrics = Arc::new(Metrics::default());
    // Long-running: one attempt per round, so the failure shows at once, not after 30s.
    let remote = Arc::new(Outbound::new(&args, connd::retry::Until::Cancelled, metrics.clone()).expect("remote"));
    let mut cfg = config(dir.path(), Duration::from_millis(100));
    cfg.options.control_plane = true;
    let reloader = Reloader::start(cfg, remote, metrics.clone(), std::future::pending());

    let mut rx = reloader.subscribe();
    wait_for(&mut rx, "the outage is reported", |s| s.failure.is_some()).await;
    let err = reloader.ready(Duration::from_millis(100)).await.expect_err("not ready while down");
    assert!(matches!(err, StartupError::NotReady { .. }));
    assert_eq!(err.class().exit_code(), 69);
    assert_contains(
        &err.to_string(),
        &[
            "no complete set of values after",
            "connection \"main-db\"",
            &cp.url(),
            "is unavailable: status 503",
            "retrying",
        ],
    );

    cp.script(DB_ID, vec![Reply::ok("1", &[("Password", "pw-1")])]);
    let s = reloader.ready(Duration::from_secs(5)).await.expect("ready once up");
    assert_eq!(env(&s, "CHOREO_MAIN_DB_PASSWORD").as_deref(), Some("pw-1"));
    let text = metrics.render();
    assert_contains(
        &text,
        &["connd_control_plane_requests_total{result=\"ok\"} 1\n", "connd_reloads_total{result=\"changed\"} 1\n"],
    );
    assert!(!text.contains("connd_control_plane_requests_total{result=\"error\"} 0\n"), "{text}");
    assert!(!text.contains("pw-1"), "{text}");
}

#[tokio::test]
async fn reload_on_request_and_stop_on_shutdown() {
    let dir = Fixture::with(&files("5432")[0].1, &files("5432")[2].1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cfg = config(dir.path(), Duration::from_secs(3600));
    let reloader = Reloader::start(cfg, Arc::new(connd::source::Local), Arc::new(Metrics::default()), async {
        let _ = stopped.await;
    });
    reloader.ready(Duration::from_secs(5)).await.expect("ready");
    // Written in place (no event is missed, but `reload` must not depend on one).
    std::fs::write(dir.join("connections.yaml"), &files("9999")[2].1).unwrap();
    reloader.reload().await;
    assert_eq!(env(&reloader.current(), "CHOREO_MAIN_DB_PORT").as_deref(), Some("9999"));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), reloader.stopped()).await.expect("the task ends on shutdown");
}
