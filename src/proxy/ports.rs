//! The connections' own proxy ports (docs/proxy.md, "A connection's own port"): a
//! descriptor's `proxy: { port: N }` opens a listener on `127.0.0.1:N` in `serve` and
//! `run`, with or without `--proxy-listen`, whose every request goes to that connection
//! with its whole path (what a gRPC client needs). Each port is a door of the daemon,
//! served as the shared listeners are ([`super::bind_port`]: limits, drain, forwarding),
//! and opened or closed alone as the plan's ports change.
//!
//! A port is never served for a connection the current plan does not give it: a change
//! closes every port removed or handed to another connection, then opens every port it
//! can. One that cannot be opened (another process holds it) does not hold the others
//! back: it is logged, counted, shown as not listening in `/metrics`, makes connd not
//! ready, and is tried again on the daemon's own timer ([`RETRY`], the project's backoff)
//! until it opens or the plan stops asking for it. An unchanged port is left alone, with
//! its open connections.
//!
//! Boundary: which ports a plan asks for is `resolve`'s (`Plan::proxy_ports`); serving a
//! port is `server`'s; when to look is the mode's (`serve`, `run`), which awaits
//! [`Ports::changed`] (a new plan, or a retry due) and hands the answer to [`Ports::reload`].

use super::{bind_port, ListenError, ProxySettings};
use crate::daemon::{Daemon, DoorId};
use crate::metrics::Reload;
use crate::reload::snapshot::{Snapshot, Store};
use crate::resolve::Plan;
use crate::retry::Backoff;
use crate::source::Sources;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// The ports a plan asks for: port → the name of the connection it serves.
pub type Wanted = BTreeMap<u16, String>;

/// How often a port that could not be listened on is tried again: 250 ms doubling (full
/// jitter), up to 10 s between tries, for as long as the plan asks for it.
pub const RETRY: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));

/// The connections' ports open on a daemon, and the last ports asked for.
pub struct Ports {
    /// How each port serves: the shared listeners' limits, drain, TLS and forwarding.
    settings: ProxySettings,
    /// Listening now: port → what serves it.
    open: BTreeMap<u16, Open>,
    /// What the last [`Ports::apply`] was asked for, done or not: a snapshot asking the
    /// same is no news.
    asked: Wanted,
    /// The last ports refused whole (one of them is connd's own listener's): the same
    /// asked again is no news, and `asked` (the last good) goes on being retried.
    refused: Option<Wanted>,
    /// The ports of `asked` not listening at the last apply, for the summary line.
    missing: Vec<u16>,
    /// Tries in a row that left a port of `asked` not listening, for the backoff.
    failures: u32,
    /// When to try the ports of `asked` that do not listen again; `None` when all listen.
    retry_at: Option<Instant>,
    /// connd's own TCP listeners (port, which flag and address), which no connection's
    /// port may take: `--proxy-listen`, `--metrics-listen`.
    reserved: Vec<(u16, String)>,
    /// Whether a first apply was made: a failure before is the startup's error, said by
    /// the caller; after, it is logged here.
    started: bool,
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
    /// `--proxy-listen`'s port is reserved (see [`Ports::reserve`]).
    pub fn new(settings: ProxySettings) -> Ports {
        let listen = settings.listen;
        let ports = Ports {
            settings,
            open: BTreeMap::new(),
            asked: Wanted::new(),
            refused: None,
            missing: Vec::new(),
            failures: 0,
            retry_at: None,
            reserved: Vec::new(),
            started: false,
        };
        match listen {
            Some(addr) => ports.reserve(addr, "--proxy-listen"),
            None => ports,
        }
    }

    /// Reserves the port of connd's own listener `flag` at `addr` (any address): a plan
    /// that gives it to a connection is refused as a whole, naming both (docs/proxy.md).
    pub fn reserve(mut self, addr: std::net::SocketAddr, flag: &str) -> Ports {
        if addr.port() != 0 {
            self.reserved.push((addr.port(), format!("{flag} {addr}")));
        }
        self
    }

    /// The first port of `wanted` that is one of connd's own listeners'.
    fn clash(&self, wanted: &Wanted) -> Option<ListenError> {
        self.reserved.iter().find_map(|(port, listener)| {
            let connection = wanted.get(port)?;
            Some(ListenError::Ours { connection: connection.clone(), port: *port, listener: listener.clone() })
        })
    }

    /// The ports `snapshot`'s plan asks for; `None` before a first resolution.
    pub fn wanted(snapshot: &Snapshot) -> Option<Wanted> {
        Some(Ports::of(&snapshot.resolved.as_ref()?.plan))
    }

    /// The ports `plan` asks for.
    pub fn of(plan: &Plan) -> Wanted {
        plan.proxy_ports().into_iter().map(|(port, c)| (port, c.to_owned())).collect()
    }

    /// Completes with the ports to apply: those `store`'s snapshot asks for once they
    /// differ from those last asked for, or those last asked for when a port of theirs
    /// that does not listen is due to be tried again. Cancel-safe: each call starts from
    /// the current snapshot.
    pub async fn changed(&self, store: &Store) -> Wanted {
        let mut snapshots = store.subscribe();
        // The reloader gone, no plan will come; retries go on.
        let mut gone = false;
        loop {
            if let Some(wanted) = Ports::wanted(&snapshots.borrow_and_update()) {
                if wanted != self.asked && Some(&wanted) != self.refused.as_ref() {
                    return wanted;
                }
            }
            let retry = async {
                match self.retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = snapshots.changed(), if !gone => gone = changed.is_err(),
                () = retry => return self.asked.clone(),
            }
        }
    }

    /// Opens and closes ports on `daemon` until those listening are `wanted`, as far as
    /// can be: every port removed or handed to another connection is closed (a port
    /// handed over is waited for, its drain, and bound again), then every port of
    /// `wanted` not listening is bound. Those that cannot be are left to be tried again
    /// (see [`Ports::changed`]); the first such error is returned (all are logged).
    ///
    /// A plan that gives a connection the port of one of connd's own listeners changes
    /// nothing: the last good ports serve on, and that error is returned.
    pub async fn apply<S: Sources>(&mut self, daemon: &mut Daemon<S>, wanted: Wanted) -> Result<(), ListenError> {
        if let Some(e) = self.clash(&wanted) {
            self.refused = Some(wanted);
            return Err(e);
        }
        // A new plan (not a retry of the last good one) ends the refusal.
        if wanted != self.asked {
            self.refused = None;
        }
        let stale: Vec<u16> =
            self.open.iter().filter(|(port, o)| wanted.get(port) != Some(&o.connection)).map(|(p, _)| *p).collect();
        let (mut closed, mut closing) = (Vec::new(), HashMap::new());
        for port in stale {
            let Some(open) = self.open.remove(&port) else { continue };
            closed.push(port);
            tracing::info!(port, connection = %open.connection, "proxy port closing: the plan no longer gives it to this connection");
            closing.extend(daemon.close(open.door).map(|done| (port, done)));
        }
        let (mut opened, mut failures) = (Vec::new(), Vec::new());
        for (port, connection) in &wanted {
            if self.open.contains_key(port) {
                continue;
            }
            // Handed from another connection: bound again once its old listener stopped.
            if let Some(done) = closing.remove(port) {
                done.stopped().await;
            }
            match bind_port(&self.settings, *port, connection) {
                Ok(bound) => {
                    let door = daemon.open(Box::new(bound));
                    self.open.insert(*port, Open { connection: connection.clone(), door });
                    opened.push(*port);
                }
                Err(e) => failures.push(e),
            }
        }
        self.asked = wanted;
        self.settle(daemon, &opened, &closed, failures)
    }

    /// After an apply: metrics, readiness, the retry timer and the summary log line.
    fn settle<S: Sources>(
        &mut self,
        daemon: &Daemon<S>,
        opened: &[u16],
        closed: &[u16],
        failures: Vec<ListenError>,
    ) -> Result<(), ListenError> {
        let shared = daemon.shared();
        let listening = |port: &u16| self.open.contains_key(port);
        shared.metrics.proxy_ports(self.asked.iter().map(|(port, c)| (*port, c.as_str(), listening(port))));
        let missing: Vec<u16> = self.asked.keys().filter(|p| !listening(p)).copied().collect();
        if missing.is_empty() {
            (self.failures, self.retry_at) = (0, None);
            shared.store.set_ports_missing(None);
        } else {
            let delay = RETRY.delay(self.failures, None);
            self.failures = self.failures.saturating_add(1);
            self.retry_at = Some(Instant::now() + delay);
            let why = failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            shared.store.set_ports_missing(Some(format!("proxy ports {missing:?} do not listen (retried): {why}")));
        }
        if !opened.is_empty() || !closed.is_empty() || missing != self.missing {
            tracing::info!(opened = ?opened, closed = ?closed, not_listening = ?missing, "proxy ports applied");
        }
        self.missing = missing;
        let again = self.retry_at.map(|at| at.saturating_duration_since(Instant::now())).unwrap_or_default();
        let log = std::mem::replace(&mut self.started, true);
        for e in &failures {
            shared.metrics.proxy_port_error();
            if !log {
                continue;
            }
            match e {
                ListenError::Port { connection, port, .. } => {
                    tracing::error!(connection = %connection, port, error = %e, retry_in = ?again, "a proxy port could not be listened on; it is tried again");
                }
                ListenError::NotLoopback { .. }
                | ListenError::Ours { .. }
                | ListenError::Tcp { .. }
                | ListenError::Unix(_)
                | ListenError::ProxyVariable(_) => {
                    tracing::error!(error = %e, retry_in = ?again, "a proxy port could not be listened on; it is tried again");
                }
            }
        }
        let first = failures.into_iter().next();
        first.map_or(Ok(()), Err)
    }

    /// A reload's ports (or a retry's), applied: every port that can listen does, and
    /// a new plan with a port that cannot is a failed reload (docs/proxy.md).
    pub async fn reload<S: Sources>(&mut self, daemon: &mut Daemon<S>, wanted: Wanted) {
        let news = wanted != self.asked && Some(&wanted) != self.refused.as_ref();
        self.started = true;
        let Err(e) = self.apply(daemon, wanted).await else { return };
        if let ListenError::Ours { .. } = e {
            tracing::error!(error = %e, "reload: the proxy ports are refused; the last good ports serve on");
        }
        if news {
            daemon.shared().metrics.reload(Reload::Error);
        }
    }
}
