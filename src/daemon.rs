//! The one assembly of the long-running parts that `serve` and `run` share: the reloader,
//! and on its snapshot the front doors (the local API, the egress proxy's listeners, the
//! metrics listener) and the files keeper. Every part but the reloader is optional, and
//! every part is owned the same way: a `Part` holds its task, stopped through a child
//! of the daemon's token, and [`Daemon::shut_down`] stops them all at once, then waits
//! for each within a bound (its own drain, then [`STOP_MARGIN`]) before abandoning it.
//!
//! A new front door (a webhook server, a listener per connection) is a type of its own
//! module, bound at startup, that implements [`Door`]; the mode that wants it adds it to
//! the doors it starts the daemon with (or opens it later with [`Daemon::open`]). A door
//! opened later may be stopped alone with [`Daemon::close`] (a connection's proxy port
//! that a reload removed): its own token is cancelled, the others serve on, and it is
//! waited for within its own bound in the background, then at shutdown with the rest.
//!
//! Boundary: wiring and lifecycle only. What each part does is its module's (`reload`,
//! `files::keep`, and the doors: `serve`'s API and metrics listener, `proxy`); what the
//! process does around them (signals, readiness, the workload) is `serve`'s and `run`'s.
//! It names no door, so the doors' modules may use it.

use crate::files::keep::keep;
use crate::metrics::Metrics;
use crate::reload::snapshot::Store;
use crate::reload::{ReloadConfig, Reloader};
use crate::source::Sources;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::AbortOnDropHandle;

/// Beyond a part's own drain, how long its task may take to end once stopped before it
/// is abandoned (aborted): the proxy's thread, say, ends its runtime within 100 ms.
pub const STOP_MARGIN: Duration = Duration::from_secs(1);

/// What every part serves from: the reloader's snapshot, the sources, and the one set
/// of metrics that `/metrics` reports.
pub struct Shared<S> {
    /// The reloader's snapshot: values, plan, readiness.
    pub store: Arc<Store>,
    /// Where tokens are asked for (and dropped when an upstream refuses one).
    pub sources: Arc<S>,
    /// What every part counts into.
    pub metrics: Arc<Metrics>,
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared { store: self.store.clone(), sources: self.sources.clone(), metrics: self.metrics.clone() }
    }
}

/// A part's serving future, as a door gives it.
pub type Serving = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A front door: a listener bound at startup (so that a taken address fails before
/// anything runs), served on the daemon's snapshot until it is asked to stop.
pub trait Door<S>: Send {
    /// What it is, for the log line when it does not stop in time.
    fn name(&self) -> &'static str;
    /// [`Door::name`], or more when one name stands for many doors (a connection's proxy
    /// port names its port and connection): what the log line says.
    fn label(&self) -> String {
        self.name().to_owned()
    }
    /// How long it takes to drain once asked to stop.
    fn drain(&self) -> Duration;
    /// Serves until `until` completes, then drains.
    fn serve(self: Box<Self>, shared: Shared<S>, until: WaitForCancellationFutureOwned) -> Serving;
}

/// Names a door opened on a daemon, for [`Daemon::close`]; never reused by that daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DoorId(u64);

/// One long-running part: its task, how long it may take to stop, and the token that
/// asks it to stop (a child of the daemon's, so that shutdown reaches it too).
struct Part {
    /// For [`Daemon::close`].
    id: DoorId,
    /// For the log line when it does not stop in time.
    name: String,
    /// How long it may take to end once stopped, its own drain included.
    bound: Duration,
    /// Cancelled, this part alone begins to stop.
    stop: CancellationToken,
    /// Aborts the task when dropped.
    task: AbortOnDropHandle<()>,
}

impl Part {
    /// Waits for the part, asked to stop at `asked`, until its bound from then; then
    /// abandons it.
    async fn stopped(self, asked: Instant) {
        if tokio::time::timeout_at(asked + self.bound, self.task).await.is_err() {
            tracing::warn!(part = %self.name, bound = ?self.bound, "did not stop in time; abandoned");
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
    /// Parts closed alone ([`Daemon::close`]), each waited for within its bound; what
    /// is left of them at shutdown is waited for with the rest, and aborted on drop.
    closing: JoinSet<()>,
    /// The next [`DoorId`].
    next_id: u64,
}

/// Completes once a door closed alone has stopped (or was abandoned at its bound); see
/// [`Daemon::close`]. Dropping it does not stop the waiting, which the daemon owns.
pub struct Closed(oneshot::Receiver<()>);

impl Closed {
    /// Waits for the door's end.
    pub async fn stopped(self) {
        let _ = self.0.await;
    }
}

impl<S: Sources> Daemon<S> {
    /// Starts the reloader, then serves every door of `doors` on its snapshot, with the
    /// same sources and the same `metrics` for all.
    pub fn start(reload: ReloadConfig, sources: Arc<S>, metrics: Arc<Metrics>, doors: Vec<Box<dyn Door<S>>>) -> Self {
        let stop = CancellationToken::new();
        let reloader = Reloader::start(reload, sources.clone(), metrics.clone(), stop.child_token().cancelled_owned());
        let (parts, closing) = (Vec::new(), JoinSet::new());
        let mut daemon = Daemon { reloader, sources, metrics, stop, parts, closing, next_id: 0 };
        for door in doors {
            daemon.open(door);
        }
        daemon
    }

    /// Serves one more door, from now on; the id closes it alone.
    pub fn open(&mut self, door: Box<dyn Door<S>>) -> DoorId {
        let (name, drain) = (door.label(), door.drain());
        self.spawn(name, drain, |shared, until| door.serve(shared, until))
    }

    /// Stops the door `id` alone: asked now, its listener closes and it drains within its
    /// own bound (its drain, then [`STOP_MARGIN`]) while every other part serves on. The
    /// waiting is the daemon's (in the background, and at [`Daemon::shut_down`]); the
    /// answer says when it is over, for a caller that must wait (to bind the same port
    /// again, say). `None` when no open door has that id.
    pub fn close(&mut self, id: DoorId) -> Option<Closed> {
        let at = self.parts.iter().position(|p| p.id == id)?;
        let part = self.parts.remove(at);
        let asked = Instant::now();
        part.stop.cancel();
        let (done, closed) = oneshot::channel();
        // Those already over are reaped here, so that the set does not grow with reloads.
        while self.closing.try_join_next().is_some() {}
        self.closing.spawn(async move {
            part.stopped(asked).await;
            let _ = done.send(());
        });
        Some(Closed(closed))
    }

    /// Keeps the files of the plan current (docs/files.md) from now on. With
    /// `file_changes`, it says when files changed while the variables did not.
    pub fn keep_files(&mut self, file_changes: Option<mpsc::Sender<()>>) {
        // Not ready until the keeper wrote the files once: said now, before any request.
        self.reloader.store().files_pending();
        // Nothing to drain: a sync under way is dropped (a write in progress ends on its
        // blocking thread whatever becomes of the task, and every write is atomic).
        self.spawn("the files keeper".to_owned(), Duration::ZERO, |shared, until| {
            Box::pin(keep(shared.store, shared.sources, shared.metrics, file_changes, until))
        });
    }

    /// Spawns one part's serving future, made by `serve` from what parts share and the
    /// future that completes when the part is asked to stop; `drain` is how long the
    /// part takes to drain once asked.
    fn spawn(
        &mut self,
        name: String,
        drain: Duration,
        serve: impl FnOnce(Shared<S>, WaitForCancellationFutureOwned) -> Serving,
    ) -> DoorId {
        let stop = self.stop.child_token();
        let task = AbortOnDropHandle::new(tokio::spawn(serve(self.shared(), stop.clone().cancelled_owned())));
        let id = DoorId(self.next_id);
        self.next_id += 1;
        self.parts.push(Part { id, name, bound: drain + STOP_MARGIN, stop, task });
        id
    }

    /// What the parts share.
    pub fn shared(&self) -> Shared<S> {
        Shared { store: self.reloader.store().clone(), sources: self.sources.clone(), metrics: self.metrics.clone() }
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
    /// now; a part closed alone before, from when it was asked), then for the reloader.
    pub async fn shut_down(mut self) {
        let asked = Instant::now();
        self.stop.cancel();
        for part in self.parts {
            part.stopped(asked).await;
        }
        while self.closing.join_next().await.is_some() {}
        if tokio::time::timeout_at(asked + STOP_MARGIN, self.reloader.stopped()).await.is_err() {
            tracing::warn!(part = "the reloader", bound = ?STOP_MARGIN, "did not stop in time; abandoned");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Local;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A door that serves until asked, then says it stopped.
    struct Flag(Arc<AtomicBool>);

    impl Door<Local> for Flag {
        fn name(&self) -> &'static str {
            "a test door"
        }

        fn drain(&self) -> Duration {
            Duration::ZERO
        }

        fn serve(self: Box<Self>, _: Shared<Local>, until: WaitForCancellationFutureOwned) -> Serving {
            Box::pin(async move {
                until.await;
                self.0.store(true, Ordering::SeqCst);
            })
        }
    }

    #[tokio::test]
    async fn a_door_closed_alone_stops_while_the_others_serve_on() {
        let dir = tempfile::tempdir().unwrap();
        let reload =
            ReloadConfig::new(dir.path().into(), Default::default(), Duration::from_secs(60), Duration::from_secs(60));
        let (a, b) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let mut daemon = Daemon::start(reload, Arc::new(Local), Arc::new(Metrics::default()), Vec::new());
        let first = daemon.open(Box::new(Flag(a.clone())));
        let second = daemon.open(Box::new(Flag(b.clone())));
        assert_ne!(first, second);
        let closed = daemon.close(first).expect("an open door");
        tokio::time::timeout(Duration::from_secs(5), closed.stopped()).await.expect("stopped within its bound");
        assert!(a.load(Ordering::SeqCst), "the closed door was asked to stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!b.load(Ordering::SeqCst), "the other door serves on");
        assert!(daemon.close(first).is_none(), "a door closes once");
        daemon.shut_down().await;
        assert!(b.load(Ordering::SeqCst), "shutdown stops the rest");
    }
}
