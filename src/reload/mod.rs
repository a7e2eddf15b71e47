//! The reloader: keeps the [`Store`] current while connd runs. It re-resolves
//! - at once on start, then every `refresh_interval` (jittered; sooner, with backoff,
//!   while failing): a full resolution, `Sources::fetch` included, which is how
//!   control-plane changes and token refreshes arrive;
//! - when the config directory (or a folder holding a `file:` source) changes, after a
//!   short debounce: inotify (its `watcher`), which sees the kubelet's atomic writer as a
//!   create of `..data_tmp` and its rename over `..data`. Hidden files are ignored, and
//!   the reload is of the files alone: it fetches only when the files now ask for
//!   other remote values;
//! - every `rescan_interval`, from the files alone (a backstop for missed events);
//! - when asked through [`Reloader::reload`] (SIGHUP, in `serve`).
//!
//! A failure never replaces the last good values: it is counted, published as the
//! snapshot's `failure` (and so logged once per distinct error) and retried.
//! Signals are not handled here: `serve` maps SIGHUP to `reload`, while `run` forwards
//! it to its child.

pub mod snapshot;
pub mod watcher;

use crate::error::{Class, Classify};
use crate::metrics::{Metrics, Reload};
use crate::reload::snapshot::{changed_names, Resolved, Snapshot, Store};
use crate::reload::watcher::DirWatcher;
use crate::resolve::{self, Plan};
use crate::retry::{self, Backoff, Next};
use crate::source::values::{self, Fetched};
use crate::source::{Sources, Tokens};
use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

/// What the reloader resolves, and how often.
#[derive(Debug, Clone)]
pub struct ReloadConfig {
    pub dir: PathBuf,
    pub options: resolve::Options,
    /// Full re-resolution (the control plane re-checked, tokens refreshed), jittered.
    pub refresh_interval: Duration,
    /// Re-reading the files without a change event.
    pub rescan_interval: Duration,
    /// Quiet time after a change event before reloading, so that a burst of writes is
    /// read once, complete.
    pub debounce: Duration,
    /// How long a `file:` source must have been left alone before it is read: one
    /// written in place (truncated, then written by a tool that does not rename) is read
    /// once its writer is done, not between the two (docs/api.md).
    pub file_settle: Duration,
    /// Which tokens each resolution obtains: all for an API, the mapped ones for `run`
    /// without one (a token nobody reads must not hold up the workload's start).
    pub tokens: Tokens,
}

impl ReloadConfig {
    pub fn new(dir: PathBuf, options: resolve::Options, refresh_interval: Duration, rescan_interval: Duration) -> Self {
        ReloadConfig {
            dir,
            options,
            refresh_interval,
            rescan_interval,
            debounce: Duration::from_millis(10),
            file_settle: FILE_SETTLE,
            tokens: Tokens::All,
        }
    }
}

/// The first full resolution did not happen in time.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("no complete set of values after {}s: {message}", waited.as_secs_f32())]
    NotReady { waited: Duration, message: String, class: Class },
    #[error("the reloader stopped before the first resolution")]
    Stopped,
}

/// Not ready: the class of the failure that kept it so (unavailable while none is known).
impl Classify for StartupError {
    fn class(&self) -> Class {
        match self {
            StartupError::NotReady { class, .. } => *class,
            StartupError::Stopped => Class::Unavailable,
        }
    }
}

/// Owns the reload task; dropping it stops the task.
pub struct Reloader {
    store: Arc<Store>,
    /// Full-reload requests; each carries the sender that says it is done.
    requests: mpsc::Sender<oneshot::Sender<()>>,
    /// `None` once awaited.
    task: Option<AbortOnDropHandle<()>>,
}

impl Reloader {
    /// Starts the reload task (inside a tokio runtime). It resolves at once, then keeps
    /// resolving until `shutdown` completes (a `CancellationToken`'s `cancelled_owned()`,
    /// say).
    pub fn start<S: Sources>(
        config: ReloadConfig,
        sources: Arc<S>,
        metrics: Arc<Metrics>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Reloader {
        let store = Arc::new(Store::default());
        let (requests, requests_rx) = mpsc::channel(8);
        let (events_tx, events) = mpsc::channel(1);
        let watcher = match DirWatcher::new(events_tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for file changes, relying on the periodic re-scan");
                None
            }
        };
        let task = Task {
            config,
            sources,
            metrics,
            store: store.clone(),
            watcher,
            fetched: None,
            needs: Vec::new(),
            source_failure: None,
            failures: 0,
            retry_after: None,
            warned: Vec::new(),
            cached: None,
            refreshed: false,
        };
        let task = AbortOnDropHandle::new(tokio::spawn(task.run(requests_rx, events, shutdown)));
        Reloader { store, requests, task: Some(task) }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.store.load()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.store.subscribe()
    }

    /// A full reload now; returns once it is done (or the reloader has stopped).
    pub async fn reload(&self) {
        let (done, wait) = oneshot::channel();
        if self.requests.send(done).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Waits for the first full resolution; see [`ready`].
    pub async fn ready(&self, timeout: Duration) -> Result<Arc<Snapshot>, StartupError> {
        ready(&self.store, timeout).await
    }

    /// Completes only if the task ends although its shutdown future has not completed
    /// (it panicked): the error a long-running mode must stop with, rather than serve
    /// values nobody keeps current. Cancel-safe.
    pub async fn failed(&mut self) -> anyhow::Error {
        let Some(task) = self.task.as_mut() else { return std::future::pending().await };
        let result = task.await;
        self.task = None;
        match result {
            Err(e) if e.is_panic() => anyhow::anyhow!("the reloader stopped unexpectedly: it panicked"),
            Err(e) => anyhow::anyhow!("the reloader stopped unexpectedly: {e}"),
            Ok(()) => anyhow::anyhow!("the reloader stopped unexpectedly"),
        }
    }

    /// Waits for the task to end (after its shutdown future completed).
    pub async fn stopped(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// How long past its deadline the first resolution's verdict may wait for the attempt
/// made at the deadline: one request's own limit (10 s) and some.
const LAST_ATTEMPT_WAIT: Duration = Duration::from_secs(15);

/// Waits for the first full resolution published in `store`. Its deadline, `timeout`
/// from now, is also the reloader's: its last attempt is made at the deadline (docs/commands.md),
/// and the verdict is that attempt's (or that of the one in flight at the deadline),
/// waited for at most `LAST_ATTEMPT_WAIT` more. On failure, the current failure.
pub async fn ready(store: &Store, timeout: Duration) -> Result<Arc<Snapshot>, StartupError> {
    let deadline = crate::http::deadline::deadline_after(timeout);
    store.set_startup_deadline(deadline);
    let mut rx = store.subscribe();
    let resolved = async {
        loop {
            let s = rx.borrow_and_update().clone();
            if s.resolved.is_some() {
                return Ok(s);
            }
            if rx.changed().await.is_err() {
                return Err(StartupError::Stopped);
            }
        }
    };
    if let Ok(result) = tokio::time::timeout_at(deadline, resolved).await {
        return result;
    }
    let mut finished = store.subscribe_finished();
    let last_attempt = async {
        while !finished.borrow_and_update().is_some_and(|at| at >= deadline) {
            if finished.changed().await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(LAST_ATTEMPT_WAIT, last_attempt).await;
    let s = store.load();
    if s.resolved.is_some() {
        return Ok(s);
    }
    let (message, class) = match &s.failure {
        Some(f) => (f.message.clone(), f.class),
        None => ("the first resolution is still running".to_owned(), Class::Unavailable),
    };
    Err(StartupError::NotReady { waited: timeout, message, class })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Files and sources.
    Full,
    /// Files only; sources only if the plan now needs different remote values.
    Local,
}

struct Task<S> {
    config: ReloadConfig,
    sources: Arc<S>,
    metrics: Arc<Metrics>,
    store: Arc<Store>,
    /// `None` when inotify is unavailable: the re-scan is the only backstop then.
    watcher: Option<DirWatcher>,
    /// The last fetch, reused by `Local` reloads.
    fetched: Option<Fetched>,
    /// What `fetched` was fetched for (see `remote_needs`).
    needs: Vec<(String, Vec<String>, bool)>,
    /// Why the last fetch failed (message, class), until a fetch succeeds: a
    /// reload that reuses `fetched` meanwhile must not report the outage over.
    source_failure: Option<(String, Class)>,
    /// Consecutive failed full reloads, for the retry backoff.
    failures: u32,
    /// The control plane's `Retry-After` with the last reload's failed fetch: the
    /// least wait before the next full reload (docs/control-plane.md).
    retry_after: Option<Duration>,
    /// The config warnings last logged: each is logged when it appears, not at every reload.
    warned: Vec<crate::config::Diagnostic>,
    /// When the values of the last fetch were written to the outage cache, if that
    /// fetch fell back on it (docs/cache.md), until they are published as stale.
    cached: Option<std::time::SystemTime>,
    /// Whether a full reload has succeeded yet: the first refresh after it is spread
    /// over the whole interval, so that a fleet started together does not refresh in step.
    refreshed: bool,
}

/// The default of [`ReloadConfig::file_settle`]: as `run --change-debounce`'s.
pub const FILE_SETTLE: Duration = Duration::from_millis(250);
/// The failures in a row a start on the outage cache counts as: enough for the backoff's
/// ceiling to be its cap, the refresh interval.
const STALE_START_FAILURES: u32 = 16;

/// How often watching a wanted folder that could not be watched is tried again.
const REWATCH: Duration = Duration::from_millis(100);

/// What a fetch depends on: the connections with remote parameters or tokens.
fn remote_needs(plan: &Plan) -> Vec<(String, Vec<String>, bool)> {
    plan.connections
        .iter()
        .filter_map(|p| {
            let c = &p.connection;
            let remote: Vec<String> = c.control_plane_keys().map(str::to_owned).collect();
            let oauth = c.is_oauth();
            (oauth || !remote.is_empty()).then(|| (c.id.clone(), remote, oauth))
        })
        .collect()
}

/// The folders to watch for `plan` (the config directory and those of `file:`
/// sources), and the files `file:` sources name.
fn watched_paths(dir: &std::path::Path, plan: &Plan) -> (BTreeSet<PathBuf>, BTreeSet<PathBuf>) {
    let mut dirs = BTreeSet::from([dir.to_path_buf()]);
    let mut files = BTreeSet::new();
    for p in &plan.connections {
        for param in p.connection.parameters.values() {
            if let Some(path) = param.source.file() {
                if let Some(parent) = path.parent() {
                    dirs.insert(parent.to_path_buf());
                }
                files.insert(path.clone());
            }
        }
    }
    (dirs, files)
}

impl<S: Sources> Task<S> {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<oneshot::Sender<()>>,
        mut events: mpsc::Receiver<()>,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        self.sync_watches(None);
        let mut next_full = Instant::now();
        let mut rescan = tokio::time::interval_at(
            crate::http::deadline::deadline_after(self.config.rescan_interval),
            self.config.rescan_interval,
        );
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut done = None;
            let unwatched = self.watcher.as_ref().is_some_and(DirWatcher::incomplete);
            let kind = tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(reply) = requests.recv() => {
                    done = Some(reply);
                    Kind::Full
                }
                // Files changed: re-read them, and fetch only if they now ask for other
                // remote values; the control plane is polled on its own schedule.
                Some(()) = events.recv() => {
                    self.debounce(&mut events).await;
                    Kind::Local
                }
                () = sleep_until(next_full) => Kind::Full,
                _ = rescan.tick() => Kind::Local,
                () = tokio::time::sleep(REWATCH), if unwatched => {
                    if !self.sync_watches(None) {
                        continue;
                    }
                    Kind::Local
                }
            };
            let span = tracing::info_span!("reload", kind = ?kind);
            let ok = tokio::select! {
                () = &mut shutdown => break,
                ok = self.reload(kind).instrument(span) => ok,
            };
            self.store.finished();
            if let Some(done) = done {
                let _ = done.send(());
            }
            if kind == Kind::Full {
                next_full = self.next_full(ok);
            }
        }
        tracing::debug!("reloader stopped");
    }

    /// When the next full reload is due after one that succeeded (`ok`) or failed: the
    /// refresh interval, jittered; after failures, the backoff (up to the refresh
    /// interval, and never under the control plane's `Retry-After`), stopping at the
    /// first resolution's deadline so that an attempt is made there.
    fn next_full(&mut self, ok: bool) -> Instant {
        let (refresh, now) = (self.config.refresh_interval, Instant::now());
        if ok {
            self.failures = 0;
            // The first refresh anywhere in the interval (a fleet restarted together
            // spreads out at once), then shifted by up to ±10%, so that many replicas
            // do not call in step (docs/control-plane.md).
            let factors = if std::mem::replace(&mut self.refreshed, true) { 0.9..=1.1 } else { 0.0..=1.0 };
            return now + retry::jitter(refresh, factors).max(retry::MIN_DELAY);
        }
        self.failures = self.failures.saturating_add(1);
        // While values are served, a failing round is not urgent: the ramp starts at an
        // eighth of the interval, not 100 ms, so that an outage costs the control plane
        // a few times its steady rate, not tens (benches/fleet). The first resolution
        // keeps the short ramp: nothing is served yet.
        let serving = self.store.load().resolved.is_some();
        let base = if serving { (refresh / 8).max(Duration::from_millis(100)) } else { Duration::from_millis(100) };
        let backoff = Backoff::new(base, refresh);
        let retry_after = self.retry_after;
        match backoff.next(self.failures, retry_after, now, self.store.startup_deadline()) {
            Next::At(at) => at,
            // Past the first resolution's deadline, or asked to wait past it.
            Next::Deadline | Next::RetryAfter(_) => {
                now.checked_add(backoff.delay(self.failures, retry_after)).unwrap_or(now + refresh)
            }
        }
    }

    /// Waits until no event has arrived for `debounce` (at most 20 debounce periods).
    async fn debounce(&self, events: &mut mpsc::Receiver<()>) {
        let limit = Instant::now() + self.config.debounce * 20;
        while let Ok(Some(())) =
            tokio::time::timeout_at(limit.min(Instant::now() + self.config.debounce), events.recv()).await
        {}
    }

    /// Waits while a `file:` source of `plan` was modified less than `file_settle` ago,
    /// so that a writer's truncation and its write count as one change (at most 20
    /// settle periods). Events meanwhile stay queued: they cause one more, cheap, reload.
    async fn settle(&self, plan: &Plan) {
        let (_, files) = watched_paths(&self.config.dir, plan);
        let settle = self.config.file_settle;
        if files.is_empty() || settle.is_zero() {
            return;
        }
        let limit = Instant::now() + settle * 20;
        loop {
            let now = std::time::SystemTime::now();
            let youngest = files
                .iter()
                .filter_map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
                .filter_map(|at| now.duration_since(at).ok())
                .min();
            let Some(wait) = youngest.and_then(|age| settle.checked_sub(age)) else { return };
            if Instant::now() >= limit {
                return;
            }
            tracing::debug!(?wait, "a file source was just written; waiting for its writer");
            tokio::time::sleep_until((Instant::now() + wait).min(limit)).await;
        }
    }

    /// One resolution; true when it succeeded.
    async fn reload(&mut self, kind: Kind) -> bool {
        // Before reading: a replaced config directory is watched afresh even if it
        // cannot be read yet.
        self.sync_watches(None);
        self.retry_after = None;
        let (dir, options) = (self.config.dir.clone(), self.config.options.clone());
        let plan = match tokio::task::spawn_blocking(move || resolve::plan(&dir, &options)).await {
            Ok(Ok(plan)) => {
                if plan.warnings != self.warned {
                    plan.log_warnings();
                    self.warned = plan.warnings.clone();
                }
                Arc::new(plan)
            }
            Ok(Err(e)) => return self.failed(e.class(), e.into()),
            Err(e) => return self.failed(Class::Internal, anyhow::anyhow!("reading the config directory failed: {e}")),
        };
        self.sync_watches(Some(&plan));
        self.settle(&plan).await;
        let fetched = match self.fetch(&plan, kind).await {
            Ok(fetched) => fetched,
            Err((class, e)) => return self.failed(class, e),
        };
        let for_values = plan.clone();
        let materialized = tokio::task::spawn_blocking(move || values::materialize(&for_values, &fetched)).await;
        let values = match materialized {
            Ok(Ok(values)) => values,
            Ok(Err(e)) => return self.failed(e.class(), e.into()),
            Err(e) => return self.failed(Class::Internal, anyhow::anyhow!("reading the values failed: {e}")),
        };
        let before = self.store.load();
        let changed = match self.source_failure.clone() {
            // The files resolved, but on values fetched before the outage: publish what
            // the files changed, and leave the failure, its age and the success
            // metrics as they are.
            Some(source_failure) => {
                let changed = match self.cached.take() {
                    Some(at) => {
                        // Started on the outage cache: the control plane is known to be
                        // down, so retry as a fleet long in an outage does, over the whole
                        // interval at once, not from 100 ms up (a rolling restart would
                        // otherwise multiply its load by the restarts; benches/fleet).
                        self.failures = self.failures.max(STALE_START_FAILURES);
                        self.store.succeed_cached(plan, values, source_failure, at)
                    }
                    None => self.store.succeed_files(plan, values, source_failure),
                };
                self.metrics.files_reload(changed);
                changed
            }
            None => {
                let changed = self.store.succeed(plan, values);
                self.metrics.reload(if changed { Reload::Changed } else { Reload::Unchanged });
                if before.failure.is_some() {
                    tracing::info!("values resolved again; the error above is over");
                }
                changed
            }
        };
        // The first resolution is no change: `serve` says "ready", `run` starts the workload.
        if let (true, Some(before)) = (changed, &before.resolved) {
            log_change(before, &self.store.load());
        }
        self.source_failure.is_none()
    }

    /// The remote values for `plan`: the last fetch when a `Local` reload's plan needs
    /// the same ones, else a fetch, whose failure is remembered until one succeeds.
    async fn fetch(&mut self, plan: &Plan, kind: Kind) -> Result<Fetched, (Class, anyhow::Error)> {
        let needs = remote_needs(plan);
        if let (Some(fetched), Kind::Local) = (&self.fetched, kind) {
            if needs == self.needs {
                return Ok(fetched.clone());
            }
        }
        match self.sources.fetch(plan, self.config.tokens).await {
            Ok(fetched) => {
                self.fetched = Some(fetched.clone());
                self.needs = needs;
                // Values from the outage cache: published stale, the outage kept showing.
                self.source_failure = self.sources.stale().map(|stale| {
                    self.cached = Some(stale.written_at);
                    (stale.cause, stale.class)
                });
                Ok(fetched)
            }
            Err(e) => {
                self.retry_after = e.retry_after();
                let (class, e) = (e.class(), anyhow::Error::from(e));
                self.source_failure = Some((crate::error::chain(e.as_ref()), class));
                Err((class, e))
            }
        }
    }

    fn failed(&mut self, class: Class, e: anyhow::Error) -> bool {
        self.metrics.reload(Reload::Error);
        let serving = self.store.load().resolved.is_some();
        let error = crate::error::chain(e.as_ref());
        if self.store.fail(error.clone(), class) {
            let problems = crate::logging::problems(&e);
            if serving {
                tracing::warn!(error = %error, problems = problems.as_deref(), "reload failed, the last good values stay");
            } else {
                tracing::warn!(error = %error, problems = problems.as_deref(), "resolution failed, will retry");
            }
        }
        false
    }

    /// Points the watcher at the config directory and the folders of `file:` sources
    /// (those of `plan`, or of the last plan without one). True when a folder that was
    /// not watched now is, so that what changed meanwhile is read.
    fn sync_watches(&mut self, plan: Option<&Plan>) -> bool {
        let Some(watcher) = &mut self.watcher else { return false };
        match plan {
            Some(plan) => {
                let (dirs, files) = watched_paths(&self.config.dir, plan);
                watcher.want(dirs, files);
            }
            None if watcher.wants_nothing() => {
                watcher.want(BTreeSet::from([self.config.dir.clone()]), BTreeSet::new());
            }
            None => {}
        }
        watcher.sync()
    }
}

/// Logs which variables and connections a reload changed: names only, never values.
fn log_change(before: &Resolved, now: &Snapshot) {
    let Some(after) = &now.resolved else { return };
    let variables = changed_names(&before.values.env, &after.values.env);
    let connections: Vec<&str> = after
        .plan
        .connections
        .iter()
        .zip(&after.connection_index)
        .filter(|(_, index)| **index == now.generation)
        .map(|(c, _)| c.name.as_str())
        .collect();
    if variables.is_empty() && connections.is_empty() {
        // Only the plan's shape changed: its proxy ports (logged as they are applied) or
        // its files.
        let ports =
            |r: &Resolved| r.plan.proxy_ports().into_iter().map(|(p, c)| format!("{p}={c}")).collect::<Vec<_>>();
        let (was, is) = (ports(before), ports(after));
        if was != is {
            tracing::info!(
                generation = now.generation,
                proxy_ports = is.join(","),
                "proxy ports changed; no value did"
            );
        } else {
            tracing::info!(generation = now.generation, "the plan changed; no value did");
        }
        return;
    }
    tracing::info!(generation = now.generation, variables, connections = connections.join(","), "values changed");
}
