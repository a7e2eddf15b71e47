//! One resolution, from the directory to values, as `env`, `exec` and `run`'s first
//! start do it: the plan, then what the plan needs from the sources (control-plane
//! parameters and the tokens variables map; nothing is fetched when it needs none), then
//! the values.
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
use tokio::time::Instant;

/// One resolution of `dir`: the plan, the fetch (only when the plan needs the sources;
/// `fetch` is not called otherwise), then the values.
pub async fn resolve<F, Fut>(dir: &Path, options: &resolve::Options, fetch: F) -> anyhow::Result<(Arc<Plan>, Values)>
where
    F: FnOnce(Arc<Plan>) -> Fut,
    Fut: Future<Output = anyhow::Result<Fetched>>,
{
    let plan = plan(dir, options)?;
    let fetched = if plan.needs_fetch() { fetch(plan.clone()).await? } else { Fetched::default() };
    finish(plan, &fetched)
}

/// [`resolve()`] on this thread, for a `fetch` that does not wait on a runtime (it makes
/// its own): a directory that needs nothing from the sources starts no runtime at all.
pub fn resolve_blocking(
    dir: &Path,
    options: &resolve::Options,
    fetch: impl FnOnce(&Plan) -> anyhow::Result<Fetched>,
) -> anyhow::Result<(Arc<Plan>, Values)> {
    let plan = plan(dir, options)?;
    let fetched = if plan.needs_fetch() { fetch(&plan)? } else { Fetched::default() };
    finish(plan, &fetched)
}

/// The first step of a resolution: the plan of `dir`, its warnings logged.
fn plan(dir: &Path, options: &resolve::Options) -> anyhow::Result<Arc<Plan>> {
    let plan = Arc::new(resolve::plan(dir, options)?);
    plan.log_warnings();
    Ok(plan)
}

/// The last step: the values of `plan` from what was fetched.
fn finish(plan: Arc<Plan>, fetched: &Fetched) -> anyhow::Result<(Arc<Plan>, Values)> {
    let values = values::materialize(&plan, fetched)?;
    tracing::debug!(connections = plan.connections.len(), variables = values.env.len(), "resolved");
    Ok((plan, values))
}

/// Fetches what `plan` needs (the tokens variables map) from `sources`, retrying
/// transient failures as `until` says, up to `deadline` (the last attempt at it).
pub async fn fetch<S: Sources>(
    plan: &Plan,
    sources: &S,
    until: Until,
    deadline: Instant,
) -> Result<Fetched, FetchError> {
    let attempt = |_| async {
        sources.fetch(plan, Tokens::Mapped).await.map_err(|e| match e.class().is_transient() {
            true => Failure::transient(e),
            false => Failure::Permanent(e),
        })
    };
    retry::retry(&retry::REQUESTS, until, deadline, "resolution", attempt).await.map_err(|gave_up| gave_up.error)
}
