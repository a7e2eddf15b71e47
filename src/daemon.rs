//! The one assembly of the long-running parts that `serve` and `run` share: the reloader,
//! and on its snapshot the front doors (the local API, the egress proxy's listeners, the
//! metrics listener) and the files keeper. Every part but the reloader is optional, and
//! every part is owned the same way: a `Part` holds its task, stopped through a child
//! of the daemon's token, and [`Daemon::shut_down`] stops them all at once, then waits
//! for each within a bound (its own drain, then [`STOP_MARGIN`]) before abandoning it.
//!
//! A new front door (a webhook server, a listener per connection) is a field of [`Doors`],
//! bound at startup by the caller, and one line in [`Daemon::start`] that spawns its
//! serving future through [`Daemon::spawn`].
//!
//! Boundary: wiring and lifecycle only. What each part does is its module's (`reload`,
//! `serve::api`, `serve::metrics_listen`, `proxy`, `files::keep`); what the process does
//! around them (signals, readiness, the workload) is `serve`'s and `run`'s.

use crate::files::keep::keep;
use crate::listen::auth::Allow;
use crate::listen::conn::Limits;
use crate::metrics::Metrics;
use crate::reload::{ReloadConfig, Reloader};
use crate::serve::api::server::{self, ApiStateParts, BindError};
use crate::serve::metrics_listen;
use crate::source::Sources;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::AbortOnDropHandle;

/// Beyond a part's own drain, how long its task may take to end once stopped before it
/// is abandoned (aborted): the proxy's thread, say, ends its runtime within 100 ms.
pub const STOP_MARGIN: Duration = Duration::from_secs(1);

/// The front doors, each bound at startup (so that a taken address fails before
/// anything runs) and each optional.
#[derive(Default)]
pub struct Doors {
    /// The local API on its Unix socket.
    pub api: Option<Api>,
    /// The egress proxy's listeners.
    pub proxy: Option<crate::proxy::Bound>,
    /// `--metrics-listen`: `/metrics`, `/healthz` and `/readyz` over TCP.
    pub metrics: Option<Arc<std::net::TcpListener>>,
}

impl Doors {
    /// Whether any door is open: each serves the reloader's snapshot, so the reloader
    /// must run from the start.
    pub fn any(&self) -> bool {
        self.api.is_some() || self.proxy.is_some() || self.metrics.is_some()
    }
}

/// The local API's bound socket and how it serves.
pub struct Api {
    pub listener: UnixListener,
    pub allow: Allow,
    /// How long in-flight requests get once shutdown starts.
    pub grace: Duration,
    pub limits: Limits,
}

impl Api {
    /// Binds the socket at `path` (its folder created, a stale file replaced, `mode` and
    /// `group` given) and says so, warning of allowed callers the socket keeps out.
    pub fn bind(
        path: &Path,
        mode: u32,
        group: Option<u32>,
        allow: Allow,
        grace: Duration,
        limits: Limits,
    ) -> Result<Api, BindError> {
        let listener = server::bind(path, mode, group)?;
        tracing::info!(socket = %path.display(), "serving");
        for warning in allow.unreachable(path) {
            tracing::warn!("{warning}");
        }
        Ok(Api { listener, allow, grace, limits })
    }
}

/// One long-running part: its task, and how long it may take to stop. The token that
/// asks it to stop is a child of the daemon's.
struct Part {
    /// For the log line when it does not stop in time.
    name: &'static str,
    /// How long it may take to end once stopped, its own drain included.
    bound: Duration,
    /// Aborts the task when dropped.
    task: AbortOnDropHandle<()>,
}

impl Part {
    /// Waits for the part, asked to stop at `asked`, until its bound from then; then
    /// abandons it.
    async fn stopped(self, asked: Instant) {
        if tokio::time::timeout_at(asked + self.bound, self.task).await.is_err() {
            tracing::warn!(part = self.name, bound = ?self.bound, "did not stop in time; abandoned");
        }
    }
}

/// The reloader and the parts started on its snapshot; dropped, every task is aborted.
pub struct Daemon<S> {
    reloader: Reloader,
    sources: Arc<S>,
    metrics: Arc<Metrics>,
    /// Every part's token is a child of it: cancelled, all begin to stop at once.
    stop: CancellationToken,
    /// The started parts, in start order.
    parts: Vec<Part>,
}

impl<S: Sources> Daemon<S> {
    /// Starts the reloader, then serves every door of `doors` on its snapshot, with the
    /// same sources and the same `metrics` (what `/metrics` reports) for all.
    pub fn start(reload: ReloadConfig, sources: Arc<S>, metrics: Arc<Metrics>, doors: Doors) -> Daemon<S> {
        let stop = CancellationToken::new();
        let reloader = Reloader::start(reload, sources.clone(), metrics.clone(), stop.child_token().cancelled_owned());
        let mut daemon = Daemon { reloader, sources, metrics, stop, parts: Vec::new() };
        let Doors { api, proxy, metrics: metrics_listener } = doors;
        if let Some(api) = api {
            let grace = api.grace;
            daemon.spawn("the local API", grace, |d, until| d.serve_api(api, until));
        }
        if let Some(bound) = proxy {
            let grace = bound.grace();
            daemon.spawn("the egress proxy", grace, |d, until| {
                bound.serve(d.reloader.store().clone(), d.sources.clone(), d.metrics.clone(), until)
            });
        }
        if let Some(listener) = metrics_listener {
            // Scrapes and probes are short: the listener closes every connection at once.
            daemon.spawn("the metrics listener", Duration::ZERO, |d, until| {
                metrics_listen::serve(listener, d.reloader.store().clone(), d.metrics.clone(), until)
            });
        }
        daemon
    }

    /// Keeps the files of the plan current (docs/files.md) from now on. With
    /// `file_changes`, it says when files changed while the variables did not.
    pub fn keep_files(&mut self, file_changes: Option<mpsc::Sender<()>>) {
        // Nothing to drain: a sync under way is dropped (a write in progress ends on its
        // blocking thread whatever becomes of the task, and every write is atomic).
        self.spawn("the files keeper", Duration::ZERO, |d, until| {
            keep(d.reloader.store().clone(), d.sources.clone(), d.metrics.clone(), file_changes, until)
        });
    }

    /// Spawns one part's serving future, made by `serve` from the daemon and the future
    /// that completes when the part is asked to stop; `drain` is how long the part takes
    /// to drain once asked.
    pub fn spawn<F>(
        &mut self,
        name: &'static str,
        drain: Duration,
        serve: impl FnOnce(&Self, WaitForCancellationFutureOwned) -> F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let until = self.stop.child_token().cancelled_owned();
        let task = AbortOnDropHandle::new(tokio::spawn(serve(self, until)));
        self.parts.push(Part { name, bound: drain + STOP_MARGIN, task });
    }

    /// The local API until `until`, then drained within its grace period.
    fn serve_api(&self, api: Api, until: WaitForCancellationFutureOwned) -> impl Future<Output = ()> + Send + 'static {
        let parts = ApiStateParts {
            store: self.reloader.store().clone(),
            sources: self.sources.clone(),
            metrics: self.metrics.clone(),
        };
        server::serve_with(api.listener, parts, api.allow, api.grace, api.limits, until)
    }

    /// The reloader whose snapshot every part serves.
    pub fn reloader(&self) -> &Reloader {
        &self.reloader
    }

    /// For [`Reloader::failed`], which needs it mutably.
    pub fn reloader_mut(&mut self) -> &mut Reloader {
        &mut self.reloader
    }

    /// Stops every part at once, then waits for each within its bound (counted from
    /// now), then for the reloader.
    pub async fn shut_down(self) {
        let asked = Instant::now();
        self.stop.cancel();
        for part in self.parts {
            part.stopped(asked).await;
        }
        if tokio::time::timeout_at(asked + STOP_MARGIN, self.reloader.stopped()).await.is_err() {
            tracing::warn!(part = "the reloader", bound = ?STOP_MARGIN, "did not stop in time; abandoned");
        }
    }
}
