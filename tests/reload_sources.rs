//! The reloader on changing sources: a files-only re-scan during a control-plane
//! outage keeps the outage reported, a file change re-reads the files without a
//! control-plane round, and a replaced config directory is watched afresh.

use crate::support::control_plane::{FakeControlPlane, Reply};
use crate::support::kubelet::AtomicDir;
use crate::support::*;
use connd::metrics::Metrics;
use connd::reload::snapshot::Snapshot;
use connd::reload::{ReloadConfig, Reloader};
use connd::source::outbound::Outbound;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(10);

fn remote(cp: &FakeControlPlane, metrics: &Arc<Metrics>) -> Arc<Outbound> {
    let args = cp.remote_args();
    Arc::new(Outbound::new(&args, connd::retry::Until::Cancelled, metrics.clone()).expect("remote"))
}

fn remote_config(dir: &std::path::Path, refresh: Duration, rescan: Duration) -> ReloadConfig {
    let mut cfg = config(dir, refresh);
    cfg.rescan_interval = rescan;
    cfg.options.control_plane = true;
    cfg
}

fn env(s: &Snapshot, var: &str) -> Option<String> {
    s.env().and_then(|(env, _)| env.get(var).map(|v| v.expose().to_owned()))
}

/// The value of a sample in `/metrics` text.
fn sample(text: &str, name: &str) -> f64 {
    let line = text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '));
    line.and_then(|l| l[name.len()..].trim().parse().ok()).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

async fn metrics_until(metrics: &Metrics, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = metrics.render();
        if pred(&text) {
            return text;
        }
        assert!(start.elapsed() < PATIENCE, "the metrics never showed {what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_rescan_during_an_outage_keeps_the_failure_and_its_age() {
    let mut dir = AtomicDir::new(&refs(&remote_files()));
    let cp = FakeControlPlane::start(false);
    cp.script(DB_ID, vec![Reply::ok("1", &[("Password", "pw-1")])]);
    let metrics = Arc::new(Metrics::default());
    // Re-scans far more often than full rounds: each would clear the outage if a
    // re-scan on cached values counted as a success.
    let cfg = remote_config(dir.path(), Duration::from_millis(300), Duration::from_millis(20));
    let reloader = Reloader::start(cfg, remote(&cp, &metrics), metrics.clone(), std::future::pending());
    reloader.ready(PATIENCE).await.expect("ready");
    let mut rx = reloader.subscribe();

    cp.script(DB_ID, vec![Reply::Status(503)]);
    let s = wait_for(&mut rx, "the outage is reported", |s| s.failure.is_some()).await;
    let since = s.failure.as_ref().unwrap().since;
    let unchanged = sample(&metrics.render(), "connd_reloads_total{result=\"unchanged\"}");
    let text = metrics_until(&metrics, "re-scans and failed rounds after the outage began", |t| {
        sample(t, "connd_reloads_total{result=\"unchanged\"}") >= unchanged + 5.0
            && sample(t, "connd_reloads_total{result=\"error\"}") >= 3.0
    })
    .await;
    let s = reloader.current();
    let failure = s.failure.as_ref().expect("the outage is still reported after re-scans");
    assert_eq!(failure.since, since, "the outage is one failure, its age kept across re-scans");
    assert!(sample(&text, "connd_error_age_seconds") > 0.0, "{text}");

    // A file change during the outage is served, and the outage stays reported.
    let mut changed = remote_files();
    changed[2].1 = changed[2].1.replace("\"5432\"", "\"6543\"");
    dir.update(&refs(&changed));
    let s = wait_for(&mut rx, "the new port", |s| env(s, "CHOREO_MAIN_DB_PORT").as_deref() == Some("6543")).await;
    assert_eq!(env(&s, "CHOREO_MAIN_DB_PASSWORD").as_deref(), Some("pw-1"), "the last fetched values stay");
    assert_eq!(s.failure.as_ref().map(|f| f.since), Some(since), "still the same outage: {:?}", s.failure);

    // Only a successful fetch ends it.
    cp.script(DB_ID, vec![Reply::ok("2", &[("Password", "pw-2")])]);
    let s = wait_for(&mut rx, "recovered", |s| s.failure.is_none()).await;
    assert_eq!(env(&s, "CHOREO_MAIN_DB_PASSWORD").as_deref(), Some("pw-2"));
    assert_eq!(sample(&metrics.render(), "connd_error_age_seconds"), 0.0);
}

#[tokio::test]
async fn a_file_change_rereads_the_files_without_a_control_plane_round() {
    let mut dir = AtomicDir::new(&refs(&remote_files()));
    let cp = FakeControlPlane::start(false);
    cp.script(DB_ID, vec![Reply::ok("1", &[("Password", "pw-1")])]);
    let metrics = Arc::new(Metrics::default());
    // No full round but the first in this test's lifetime, and no re-scan.
    let cfg = remote_config(dir.path(), Duration::from_secs(3600), Duration::from_secs(3600));
    let reloader = Reloader::start(cfg, remote(&cp, &metrics), metrics.clone(), std::future::pending());
    reloader.ready(PATIENCE).await.expect("ready");
    let mut rx = reloader.subscribe();
    assert_eq!(cp.requests_for(DB_ID).len(), 1);

    // Another tool's hidden files next to the config, written many times.
    for i in 0..100 {
        std::fs::write(dir.path().join(".editor.swp"), format!("{i}")).unwrap();
    }
    let mut changed = remote_files();
    changed[2].1 = changed[2].1.replace("\"5432\"", "\"6543\"");
    dir.update(&refs(&changed));
    let s = wait_for(&mut rx, "the new port", |s| env(s, "CHOREO_MAIN_DB_PORT").as_deref() == Some("6543")).await;
    assert_eq!(env(&s, "CHOREO_MAIN_DB_PASSWORD").as_deref(), Some("pw-1"));
    assert_eq!(cp.requests_for(DB_ID).len(), 1, "a file change is no control-plane round");
    assert!(s.failure.is_none());
}

#[tokio::test]
async fn a_replaced_config_directory_is_watched_afresh() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("cfg");
    let write = |dir: &std::path::Path, port: &str| {
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in crate::support::files(port) {
            std::fs::write(dir.join(name), text).unwrap();
        }
    };
    write(&cfg, "5432");
    // Neither rounds nor re-scans in this test's lifetime: only watches see changes.
    let mut reload = config(&cfg, Duration::from_secs(3600));
    reload.rescan_interval = Duration::from_secs(3600);
    let metrics = Arc::new(Metrics::default());
    let reloader = Reloader::start(reload, Arc::new(connd::source::Local), metrics, std::future::pending());
    reloader.ready(PATIENCE).await.expect("ready");
    let mut rx = reloader.subscribe();

    // The directory replaced by another: `mv cfg cfg.old; mv new cfg`.
    let new = tmp.path().join("new");
    write(&new, "6543");
    std::fs::rename(&cfg, tmp.path().join("cfg.old")).unwrap();
    std::fs::rename(&new, &cfg).unwrap();
    wait_for(&mut rx, "the replaced directory's port", |s| env(s, "CHOREO_MAIN_DB_PORT").as_deref() == Some("6543"))
        .await;

    // An edit in the new directory is seen: the watch is on it, not on cfg.old.
    let conns = crate::support::files("7000").remove(2);
    std::fs::write(cfg.join(conns.0), conns.1).unwrap();
    wait_for(&mut rx, "the edit in the new directory", |s| env(s, "CHOREO_MAIN_DB_PORT").as_deref() == Some("7000"))
        .await;
}

/// The control plane's `Retry-After` is a floor for the reloader's next round (docs/control-plane.md):
/// its own backoff after one failure would try again within 200 ms. (A loaded machine
/// can only make the wait longer.)
#[tokio::test]
async fn the_reloader_waits_out_retry_after() {
    let dir = AtomicDir::new(&refs(&remote_files()));
    let cp = FakeControlPlane::start(false);
    cp.script(DB_ID, vec![Reply::TooMany { retry_after_secs: 2 }, Reply::ok("1", &[("Password", "pw-1")])]);
    let metrics = Arc::new(Metrics::default());
    // Neither rounds nor re-scans but the backoff's in this test's lifetime.
    let cfg = remote_config(dir.path(), Duration::from_secs(3600), Duration::from_secs(3600));
    let reloader = Reloader::start(cfg, remote(&cp, &metrics), metrics.clone(), std::future::pending());
    let s = reloader.ready(PATIENCE).await.expect("ready after the wait");
    assert_eq!(env(&s, "CHOREO_MAIN_DB_PASSWORD").as_deref(), Some("pw-1"));
    let requests = cp.requests_for(DB_ID);
    assert_eq!(requests.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?} despite Retry-After: 2");
}
