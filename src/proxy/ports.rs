//! The connections' own proxy ports (docs/proxy.md, "Routing without a path prefix"): a
//! descriptor's `proxy: { port: N }` opens a listener on `127.0.0.1:N` in `serve` and
//! `run`, with or without `--proxy-listen`, whose every request goes to that connection
//! with its whole path (what a gRPC client needs). Each port is a door of the daemon,
//! served as the shared listeners are ([`super::bind_port`]: limits, drain, forwarding),
//! and opened or closed alone as the plan's ports change.
//!
//! A change is applied whole where it can be: every new port is bound before any old one
//! is closed, so a port another process holds leaves the last good listeners serving (the
//! error logged and counted). A port that moves from one connection to another is closed,
//! then bound again once its listener has stopped. An unchanged port is left alone, with
//! its open connections.
//!
//! Boundary: which ports a plan asks for is `resolve`'s (`Plan::proxy_ports`); serving a
//! port is `server`'s; when to look is the mode's (`serve`, `run`).

use super::{bind_port, ListenError, ProxySettings};
use crate::daemon::{Daemon, DoorId};
use crate::metrics::{Metrics, Reload};
use crate::reload::snapshot::{Snapshot, Store};
use crate::resolve::Plan;
use crate::source::Sources;
use std::collections::{BTreeMap, HashMap};

/// The ports a plan asks for: port → the name of the connection it serves.
pub type Wanted = BTreeMap<u16, String>;

/// The connections' ports open on a daemon, and the last ports asked for.
pub struct Ports {
    /// How each port serves: the shared listeners' limits, drain, TLS and forwarding.
    settings: ProxySettings,
    /// Listening now: port → what serves it.
    open: BTreeMap<u16, Open>,
    /// What the last [`Ports::apply`] was asked for, done or not: a snapshot asking the
    /// same is no news (a port that failed is tried again on a change or a SIGHUP).
    asked: Wanted,
}

/// One port listening.
struct Open {
    /// The connection its requests go to.
    connection: String,
    /// Its door, to close it alone.
    door: DoorId,
}

impl Ports {
    /// None open yet; each will serve with `settings` (its `listen` and `socket` unused).
    pub fn new(settings: ProxySettings) -> Ports {
        Ports { settings, open: BTreeMap::new(), asked: Wanted::new() }
    }

    /// The ports `snapshot`'s plan asks for; `None` before a first resolution.
    pub fn wanted(snapshot: &Snapshot) -> Option<Wanted> {
        Some(Ports::of(&snapshot.resolved.as_ref()?.plan))
    }

    /// The ports `plan` asks for.
    pub fn of(plan: &Plan) -> Wanted {
        plan.proxy_ports().into_iter().map(|(port, c)| (port, c.to_owned())).collect()
    }

    /// Completes with the ports `store`'s snapshot asks for once they differ from those
    /// last asked for. Cancel-safe: each call starts from the current snapshot.
    pub async fn changed(&self, store: &Store) -> Wanted {
        let mut snapshots = store.subscribe();
        loop {
            if let Some(wanted) = Ports::wanted(&snapshots.borrow_and_update()) {
                if wanted != self.asked {
                    return wanted;
                }
            }
            if snapshots.changed().await.is_err() {
                // The reloader is gone: no plan will come.
                return std::future::pending().await;
            }
        }
    }

    /// Opens and closes ports on `daemon` until those listening are `wanted`. New ports
    /// are bound first: if one cannot be (taken, privileged), nothing changes and the
    /// first such error is returned (any others are logged). A port moving to another
    /// connection is closed, waited for (its drain), and bound again.
    pub async fn apply<S: Sources>(&mut self, daemon: &mut Daemon<S>, wanted: Wanted) -> Result<(), ListenError> {
        self.asked = wanted.clone();
        let stale: Vec<u16> =
            self.open.iter().filter(|(port, o)| wanted.get(port) != Some(&o.connection)).map(|(p, _)| *p).collect();
        let new: Vec<(u16, String)> =
            wanted.into_iter().filter(|(port, c)| self.open.get(port).map(|o| &o.connection) != Some(c)).collect();
        let (mut bound, mut failures, mut moved) = (Vec::new(), Vec::new(), Vec::new());
        for (port, connection) in new {
            if self.open.contains_key(&port) {
                moved.push((port, connection));
                continue;
            }
            match bind_port(&self.settings, port, &connection) {
                Ok(b) => bound.push((port, connection, b)),
                Err(e) => failures.push(e),
            }
        }
        let metrics = daemon.shared().metrics;
        if !failures.is_empty() {
            // Dropped unserved, the ports just bound are closed again.
            return verdict(failures, &metrics);
        }
        let mut closing = HashMap::new();
        for port in stale {
            let Some(open) = self.open.remove(&port) else { continue };
            tracing::info!(port, connection = %open.connection, "proxy port closing");
            closing.extend(daemon.close(open.door).map(|closed| (port, closed)));
        }
        for (port, connection) in moved {
            if let Some(closed) = closing.remove(&port) {
                closed.stopped().await;
            }
            match bind_port(&self.settings, port, &connection) {
                Ok(b) => bound.push((port, connection, b)),
                Err(e) => failures.push(e),
            }
        }
        for (port, connection, b) in bound {
            let door = daemon.open(Box::new(b));
            self.open.insert(port, Open { connection, door });
        }
        metrics.proxy_ports(self.open.iter().map(|(port, o)| (*port, o.connection.as_str())));
        verdict(failures, &metrics)
    }

    /// A reload's ports, applied: on failure the last good listeners serve on, and the
    /// error is logged and counted as a failed reload (docs/proxy.md).
    pub async fn reload<S: Sources>(&mut self, daemon: &mut Daemon<S>, wanted: Wanted) {
        if let Err(e) = self.apply(daemon, wanted).await {
            tracing::error!(error = %e, "reload: a proxy port could not be opened; the last good listeners serve on");
            let metrics = daemon.shared().metrics;
            metrics.reload(Reload::Error);
        }
    }
}

/// Ok when nothing failed, else the first failure; each is counted, and those after the
/// first are logged here, since only one is returned.
fn verdict(failures: Vec<ListenError>, metrics: &Metrics) -> Result<(), ListenError> {
    let mut failures = failures.into_iter();
    let Some(first) = failures.next() else { return Ok(()) };
    metrics.proxy_port_error();
    for other in failures {
        metrics.proxy_port_error();
        tracing::error!(error = %other, "a proxy port could not be opened");
    }
    Err(first)
}
