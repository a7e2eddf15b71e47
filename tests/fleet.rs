//! A fleet on one control plane (docs/control-plane.md): replicas started together do not
//! refresh in step.

use crate::support::control_plane::{FakeControlPlane, Reply};
use crate::support::{config, hr_remote, HR_ID};
use connd::metrics::Metrics;
use connd::reload::Reloader;
use connd::source::outbound::Outbound;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_fleet_started_together_spreads_its_first_refresh_over_the_interval() {
    const REPLICAS: usize = 16;
    let f = hr_remote();
    let cp = FakeControlPlane::start(false);
    cp.script(HR_ID, vec![Reply::ok("1", &[("ConsumerKey", "key-1")])]);
    let refresh = Duration::from_secs(2);
    let metrics = Arc::new(Metrics::default());
    let mut fleet = Vec::new();
    for _ in 0..REPLICAS {
        let mut cfg = config(f.path(), refresh);
        cfg.options.control_plane = true;
        let sources =
            Arc::new(Outbound::new(&cp.remote_args(), connd::retry::Until::Cancelled, metrics.clone()).unwrap());
        fleet.push(Reloader::start(cfg, sources, metrics.clone(), std::future::pending()));
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) && cp.requests().len() < 2 * REPLICAS {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = cp.requests();
    let first = requests.iter().map(|r| r.at).min().expect("the fleet asked");
    // In step, each replica's second request would come a whole interval (±10%) after its
    // first: none before `first` + 1.4 s. Spread over the interval, many do.
    let early = requests.iter().filter(|r| r.at < first + Duration::from_millis(1400)).count();
    assert!(early > REPLICAS, "{early} requests in the first 1.4 s of a 2 s interval for {REPLICAS} replicas");
    drop(fleet);
}
