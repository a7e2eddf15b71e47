//! The reloader: keeps the [`Store`] current while connd runs. It re-resolves
//! - at once on start, then every `refresh_interval` (jittered; sooner, with backoff,
//!   while failing): a full resolution, `Sources::fetch` included, which is how
//!   control-plane changes and token refreshes arrive;
//! - when the config directory (or a folder holding a `file:` source) changes, after a
//!   short debounce: inotify via `notify`, which sees the kubelet's atomic writer as a
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

use crate::config::model::Source;
use crate::error::{Class, Classify};
use crate::metrics::{Metrics, Reload};
use crate::reload::snapshot::{Snapshot, Store};
use crate::resolve::{self, Plan};
use crate::source::values::{self, Fetched};
use crate::source::{Sources, Tokens};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

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
    task: Option<JoinHandle<()>>,
}

impl Reloader {
    /// Starts the reload task (inside a tokio runtime). It resolves at once, then keeps
    /// resolving until `shutdown` completes.
    pub fn start<S: Sources>(
        config: ReloadConfig,
        sources: Arc<S>,
        metrics: Arc<Metrics>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Reloader {
        let store = Arc::new(Store::default());
        let (requests, requests_rx) = mpsc::channel(8);
        let (events_tx, events) = mpsc::channel(1);
        // The watcher calls back on its own thread; a full channel means a reload is
        // already due, so the event can be dropped. Reads (opens and closes without a
        // write) are our own and change nothing, and hidden files (editor swap files,
        // other tools' state) are not connd's, except the kubelet's swap entries and
        // files that `file:` sources name.
        let shared = Arc::new(Mutex::new(Shared::default()));
        let seen = shared.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            use notify::event::{AccessKind, AccessMode, EventKind};
            let ours = |k: &EventKind| matches!(k, EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write));
            let Ok(event) = res else { return };
            if ours(&event.kind) {
                return;
            }
            let mut seen = lock(&seen);
            let seen = &mut *seen;
            // An event on a watched folder itself (renamed, removed, replaced): its watch
            // follows the old inode, so the path is to be watched afresh.
            for path in event.paths.iter().filter(|p| seen.dirs.contains(*p)) {
                seen.gone.insert(path.clone());
            }
            if event.paths.is_empty() || event.paths.iter().any(|p| relevant(p, &seen.files)) {
                let _ = events_tx.try_send(());
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("cannot watch for file changes, relying on the periodic re-scan: {e}");
                None
            }
        };
        let task = Task {
            config,
            sources,
            metrics,
            store: store.clone(),
            watcher,
            watched: BTreeSet::new(),
            shared,
            wanted: BTreeSet::new(),
            fetched: None,
            needs: Vec::new(),
            source_failure: None,
            failures: 0,
        };
        let task = tokio::spawn(task.run(requests_rx, events, shutdown));
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

    /// Waits for the first full resolution; after `timeout`, the current failure.
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

impl Drop for Reloader {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Waits for the first full resolution published in `store`; after `timeout`, the
/// current failure.
pub async fn ready(store: &Store, timeout: Duration) -> Result<Arc<Snapshot>, StartupError> {
    let mut rx = store.subscribe();
    let wait = async {
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
    match tokio::time::timeout(timeout, wait).await {
        Ok(result) => result,
        Err(_) => {
            let s = store.load();
            let (message, class) = match &s.failure {
                Some(f) => (f.message.clone(), f.class),
                None => ("the first resolution is still running".to_owned(), Class::Unavailable),
            };
            Err(StartupError::NotReady { waited: timeout, message, class })
        }
    }
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
    watcher: Option<notify::RecommendedWatcher>,
    /// Folders currently watched: the config directory and those of `file:` sources.
    watched: BTreeSet<PathBuf>,
    /// What the watcher's callback needs to know, and what it reports back.
    shared: Arc<Mutex<Shared>>,
    /// Folders to watch: the config directory and those of the last plan's `file:`
    /// sources. While one of them is not watched, watching it is retried.
    wanted: BTreeSet<PathBuf>,
    /// The last fetch, reused by `Local` reloads.
    fetched: Option<Fetched>,
    /// What `fetched` was fetched for (see `remote_needs`).
    needs: Vec<(String, Vec<String>, bool)>,
    /// Why the last fetch failed (message, class), until a fetch succeeds: a
    /// reload that reuses `fetched` meanwhile must not report the outage over.
    source_failure: Option<(String, Class)>,
    /// Consecutive failed full reloads, for the retry backoff.
    failures: u32,
}

/// A duration shifted by up to ±10%, so that many replicas do not call in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.9 + fastrand::f64() * 0.2)
}

/// Shared by the reload task and the watcher's callback (which runs on its own thread).
#[derive(Default)]
struct Shared {
    /// The files `file:` sources name: hidden or not, their changes count.
    files: BTreeSet<PathBuf>,
    /// The folders watched.
    dirs: BTreeSet<PathBuf>,
    /// Watched folders that were renamed or removed since the last sync.
    gone: BTreeSet<PathBuf>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How often watching a wanted folder that could not be watched is tried again.
const REWATCH: Duration = Duration::from_millis(100);

/// Whether a change to `path` may change what connd resolves: not for hidden files,
/// except the kubelet's `..data`, `..data_tmp` and timestamped `..2024_...` entries
/// and the files in `named` (those of `file:` sources).
fn relevant(path: &std::path::Path, named: &BTreeSet<PathBuf>) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return true };
    if !name.starts_with('.') || named.contains(path) {
        return true;
    }
    name == "..data" || name == "..data_tmp" || name.strip_prefix("..").is_some_and(|n| n.starts_with("20"))
}

/// What a fetch depends on: the connections with remote parameters or tokens.
fn remote_needs(plan: &Plan) -> Vec<(String, Vec<String>, bool)> {
    plan.connections
        .iter()
        .filter_map(|p| {
            let c = &p.connection;
            let remote: Vec<String> = c.remote_keys().map(str::to_owned).collect();
            let oauth = c.is_oauth();
            (oauth || !remote.is_empty()).then(|| (c.id.clone(), remote, oauth))
        })
        .collect()
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
                () = tokio::time::sleep(REWATCH), if self.unwatched() => {
                    if !self.sync_watches(None) {
                        continue;
                    }
                    Kind::Local
                }
            };
            let ok = tokio::select! {
                () = &mut shutdown => break,
                ok = self.reload(kind) => ok,
            };
            if let Some(done) = done {
                let _ = done.send(());
            }
            if kind == Kind::Full {
                let refresh = self.config.refresh_interval;
                next_full = Instant::now()
                    + if ok {
                        self.failures = 0;
                        jitter(refresh)
                    } else {
                        self.failures = self.failures.saturating_add(1);
                        let backoff = Duration::from_millis(100).saturating_mul(1 << self.failures.min(10));
                        jitter(backoff.min(refresh))
                    };
            }
        }
        tracing::debug!("reloader stopped");
    }

    /// Waits until no event has arrived for `debounce` (at most 20 debounce periods).
    async fn debounce(&self, events: &mut mpsc::Receiver<()>) {
        let limit = Instant::now() + self.config.debounce * 20;
        while let Ok(Some(())) =
            tokio::time::timeout_at(limit.min(Instant::now() + self.config.debounce), events.recv()).await
        {}
    }

    /// One resolution; true when it succeeded.
    async fn reload(&mut self, kind: Kind) -> bool {
        // Before reading: a replaced config directory is watched afresh even if it
        // cannot be read yet.
        self.sync_watches(None);
        let (dir, options) = (self.config.dir.clone(), self.config.options.clone());
        let plan = match tokio::task::spawn_blocking(move || resolve::plan(&dir, &options)).await {
            Ok(Ok(plan)) => Arc::new(plan),
            Ok(Err(e)) => return self.failed(e.class(), e.into()),
            Err(e) => return self.failed(Class::Internal, anyhow::anyhow!("reading the config directory failed: {e}")),
        };
        self.sync_watches(Some(&plan));
        let needs = remote_needs(&plan);
        let reused = match (&self.fetched, kind) {
            (Some(fetched), Kind::Local) if needs == self.needs => Some(fetched.clone()),
            _ => None,
        };
        let fetched = match reused {
            Some(fetched) => fetched,
            None => match self.sources.fetch(&plan, self.config.tokens).await {
                Ok(fetched) => {
                    self.fetched = Some(fetched.clone());
                    self.needs = needs;
                    self.source_failure = None;
                    fetched
                }
                Err(e) => {
                    let (class, e) = (e.class(), anyhow::Error::from(e));
                    self.source_failure = Some((format!("{e:#}"), class));
                    return self.failed(class, e);
                }
            },
        };
        let for_values = plan.clone();
        let materialized = tokio::task::spawn_blocking(move || values::materialize(&for_values, &fetched)).await;
        let values = match materialized {
            Ok(Ok(values)) => values,
            Ok(Err(e)) => return self.failed(e.class(), e.into()),
            Err(e) => return self.failed(Class::Internal, anyhow::anyhow!("reading the values failed: {e}")),
        };
        let failing = self.store.load().failure.is_some();
        let changed = match self.source_failure.clone() {
            // The files resolved, but on values fetched before the outage: publish what
            // the files changed, and leave the failure, its age and the success
            // metrics as they are.
            Some(source_failure) => {
                let changed = self.store.succeed_files(plan, values, source_failure.clone());
                self.metrics.files_reload(changed);
                changed
            }
            None => {
                let changed = self.store.succeed(plan, values);
                self.metrics.reload(if changed { Reload::Changed } else { Reload::Unchanged });
                if failing {
                    tracing::info!("values resolved again; the error above is over");
                }
                changed
            }
        };
        if changed {
            let s = self.store.load();
            tracing::info!(generation = s.generation, "values changed");
        }
        self.source_failure.is_none()
    }

    fn failed(&mut self, class: Class, e: anyhow::Error) -> bool {
        self.metrics.reload(Reload::Error);
        let serving = self.store.load().resolved.is_some();
        if self.store.fail(format!("{e:#}"), class) {
            if serving {
                tracing::warn!("reload failed, the last good values stay: {e:#}");
            } else {
                tracing::warn!("resolution failed, will retry: {e:#}");
            }
        }
        false
    }

    /// Watches the config directory and the folders of `file:` sources (those of `plan`,
    /// or of the last plan without one); folders no longer needed are dropped, and
    /// folders renamed or removed are watched afresh. True when a folder that was not
    /// watched now is, so that what changed meanwhile is read.
    fn sync_watches(&mut self, plan: Option<&Plan>) -> bool {
        let Some(watcher) = &mut self.watcher else { return false };
        if plan.is_some() || self.wanted.is_empty() {
            let mut wanted = BTreeSet::from([self.config.dir.clone()]);
            let mut files = BTreeSet::new();
            for p in plan.iter().flat_map(|plan| &plan.connections) {
                for param in p.connection.parameters.values() {
                    if let Source::File(path) = &param.source {
                        if let Some(parent) = path.parent() {
                            wanted.insert(parent.to_path_buf());
                        }
                        files.insert(path.clone());
                    }
                }
            }
            if plan.is_some() {
                lock(&self.shared).files = files;
            }
            self.wanted = wanted;
        }
        let gone = std::mem::take(&mut lock(&self.shared).gone);
        for dir in gone.iter().chain(self.watched.difference(&self.wanted)).cloned().collect::<Vec<_>>() {
            let _ = watcher.unwatch(&dir);
            self.watched.remove(&dir);
        }
        let mut added = false;
        for dir in &self.wanted {
            if !self.watched.contains(dir) && watcher.watch(dir, RecursiveMode::NonRecursive).is_ok() {
                self.watched.insert(dir.clone());
                added = true;
            }
        }
        lock(&self.shared).dirs = self.watched.clone();
        added
    }

    /// Whether some wanted folder is not watched (missing, or just replaced).
    fn unwatched(&self) -> bool {
        self.watcher.is_some() && (!self.wanted.is_subset(&self.watched) || !lock(&self.shared).gone.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::relevant;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    #[test]
    fn hidden_files_are_not_connds_but_the_kubelets_are() {
        let none = BTreeSet::new();
        for path in ["/c/component.yaml", "/c/..data", "/c/..data_tmp", "/c/..2026_11_22_03_00_01.123"] {
            assert!(relevant(Path::new(path), &none), "{path}");
        }
        for path in ["/c/.editor.swp", "/c/.git", "/c/..other"] {
            assert!(!relevant(Path::new(path), &none), "{path}");
        }
        let named = BTreeSet::from([PathBuf::from("/s/.token")]);
        assert!(relevant(Path::new("/s/.token"), &named), "a file a `file:` source names");
    }
}
