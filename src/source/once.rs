//! One resolution, from the directory to values, as `env`, `exec` and `run`'s first
//! start do it: the plan, then what the plan needs from the sources (remote parameters
//! and the tokens variables map; nothing is fetched when it needs none), then the values.
//! The reloader repeats the same steps, keeping the fetch between rounds.
//!
//! Boundary: the order of the steps and whether to retry; the steps themselves are
//! `resolve::plan`, [`Sources::fetch`] and `values::materialize`.

use crate::error::Classify;
use crate::resolve::{self, Plan};
use crate::retry::{self, Failure, Until};
use crate::source::values::{self, Fetched, Values};
use crate::source::{FetchError, Sources, Tokens};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use tokio::time::Instant;

/// Whether a failed fetch is tried again.
#[derive(Debug, Clone, Copy)]
pub enum Retry {
    /// No: the sources retry themselves (`env`, `exec`), or the caller does.
    Never,
    /// Transient failures, with backoff, until this instant (`run`, whose long-running
    /// sources make one attempt per call).
    Until(Instant),
}

/// One resolution of `dir`: the plan, the fetch (only when the plan needs the sources;
/// `fetch` is not called otherwise), then the values.
pub async fn resolve<F, Fut>(dir: &Path, options: &resolve::Options, fetch: F) -> anyhow::Result<(Arc<Plan>, Values)>
where
    F: FnOnce(Arc<Plan>) -> Fut,
    Fut: Future<Output = anyhow::Result<Fetched>>,
{
    let plan = Arc::new(resolve::plan(dir, options)?);
    plan.log_warnings();
    let fetched = if plan.needs_fetch() { fetch(plan.clone()).await? } else { Fetched::default() };
    let values = values::materialize(&plan, &fetched)?;
    tracing::debug!(connections = plan.connections.len(), variables = values.env.len(), "resolved");
    Ok((plan, values))
}

/// [`resolve()`] on this thread, for a `fetch` that does not wait on a runtime (it makes
/// its own): a directory that needs nothing remote starts no runtime at all.
pub fn resolve_blocking(
    dir: &Path,
    options: &resolve::Options,
    fetch: impl FnOnce(&Plan) -> anyhow::Result<Fetched>,
) -> anyhow::Result<(Arc<Plan>, Values)> {
    let resolution = resolve(dir, options, |plan| std::future::ready(fetch(&plan)));
    let mut resolution = std::pin::pin!(resolution);
    // Every step above completes when first polled: nothing in it waits.
    let waker = Waker::from(Arc::new(NoWake));
    match resolution.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(anyhow::anyhow!("a one-shot resolution waited, which it never should")),
    }
}

/// A waker for a future that never waits.
struct NoWake;

impl Wake for NoWake {
    fn wake(self: Arc<Self>) {}
}

/// Fetches what `plan` needs (the tokens variables map) from `sources`, retrying
/// transient failures as `again` says (the last attempt at the deadline: `retry`).
pub async fn fetch<S: Sources>(plan: &Plan, sources: &S, again: Retry) -> Result<Fetched, FetchError> {
    let until = match again {
        Retry::Never => Until::Once(Instant::now()),
        Retry::Until(deadline) => Until::Deadline(deadline),
    };
    let attempt = |_| async {
        sources.fetch(plan, Tokens::Mapped).await.map_err(|e| match e.class().is_transient() {
            true => Failure::transient(e),
            false => Failure::Permanent(e),
        })
    };
    retry::retry(&retry::REQUESTS, until, "resolution", attempt).await.map_err(|gave_up| gave_up.error)
}
