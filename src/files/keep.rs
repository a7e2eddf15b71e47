//! Keeps the rendered files current in `run` and `serve` (docs/files.md). It follows the
//! reloader's snapshots (a changed value, a changed directory) and the token cache's
//! renewals (a renewed `AccessToken` is rewritten as soon as it is obtained, well before
//! the old one expires), renders every planned file and writes those whose bytes
//! changed. A file that cannot be rendered or written keeps its last good content, is
//! logged (once per distinct error) and counted, and is retried with backoff. A file
//! this process wrote that the plan no longer holds is removed.
//!
//! Drift is repaired: after every resolution the reloader finishes (each re-scan, each
//! SIGHUP, each refresh), every planned file is compared with the disk as `render`
//! compares it (bytes, mode, owner; `write::write`), and one changed, re-moded or deleted
//! behind connd's back is put back.
//!
//! Boundary: what to render and how to write are `render`'s and `write`'s; when values
//! change is the reloader's.

use super::record;
use super::write::{self, Outcome};
use super::FileError;
use crate::config::model::ACCESS_TOKEN;
use crate::metrics::{FileWrite, Metrics};
use crate::reload::snapshot::{Resolved, Store};
use crate::resolve::Plan;
use crate::retry::Backoff;
use crate::source::values::Values;
use crate::source::Sources;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Retries of failing files: from about half a second, doubling, up to 30 s.
const RETRY: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));

/// Keeps the files of `store`'s snapshots until `shutdown`; the caller owns the task
/// (`daemon`). When `file_changes` is given, it gets a message each time files changed
/// while the variables did not (for `run --on-file-change`).
pub async fn keep<S: Sources>(
    store: Arc<Store>,
    sources: Arc<S>,
    metrics: Arc<Metrics>,
    file_changes: Option<mpsc::Sender<()>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let state = State { sources, metrics, written: BTreeSet::new(), errors: BTreeMap::new(), failures: 0, first: true };
    state.run(store, file_changes, shutdown).await;
}

struct State<S> {
    sources: Arc<S>,
    metrics: Arc<Metrics>,
    /// Targets this process wrote (or found already right): removed when unplanned.
    written: BTreeSet<PathBuf>,
    /// The current error of each failing target, so that each is logged once.
    errors: BTreeMap<PathBuf, String>,
    /// Consecutive rounds with a failing file, for the retry backoff.
    failures: u32,
    /// No sync ran yet: the records of an earlier process are still to be read.
    first: bool,
}

async fn renewal(rx: &mut Option<watch::Receiver<u64>>) {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl<S: Sources> State<S> {
    async fn run(
        mut self,
        store: Arc<Store>,
        file_changes: Option<mpsc::Sender<()>>,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        let mut snapshots = store.subscribe();
        let mut finished = store.subscribe_finished();
        let mut renewals = self.sources.renewals();
        let mut env_index = None;
        let mut retry_at = None;
        // Whether this round runs only to put back files changed behind connd's back.
        let mut repair = false;
        let mut announced = false;
        loop {
            finished.borrow_and_update();
            let snapshot = snapshots.borrow_and_update().clone();
            if let Some(resolved) = &snapshot.resolved {
                let env_changed = env_index.is_some_and(|i| i != resolved.env_index);
                env_index = Some(resolved.env_index);
                // Stopping drops a sync under way: a write in progress ends on its blocking
                // thread anyway, and every write is atomic.
                let changed = tokio::select! {
                    biased;
                    () = &mut shutdown => return,
                    changed = self.sync(resolved, repair) => changed,
                };
                // A repair gives the workload back the file it had: nothing new to tell it.
                if changed > 0 && !env_changed && !repair {
                    if let Some(tx) = &file_changes {
                        let _ = tx.try_send(());
                    }
                }
                // Ready (`/readyz`) once every planned file was written once.
                if !announced && self.errors.is_empty() {
                    announced = true;
                    store.files_written();
                }
                retry_at = (!self.errors.is_empty()).then(|| {
                    self.failures = self.failures.saturating_add(1);
                    Instant::now() + RETRY.delay(self.failures, None)
                });
                if self.errors.is_empty() {
                    self.failures = 0;
                }
            }
            repair = false;
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                changed = snapshots.changed() => if changed.is_err() { return },
                () = renewal(&mut renewals) => {}
                () = sleep_until(retry_at) => {}
                changed = finished.changed() => match changed {
                    Ok(()) => repair = true,
                    Err(_) => return,
                },
            }
        }
    }

    /// Renders and writes every planned file of `resolved`; returns how many changed.
    /// `repair`: the values did not change, so a file written was one changed on disk.
    async fn sync(&mut self, resolved: &Arc<Resolved>, repair: bool) -> usize {
        let plan = resolved.plan.clone();
        if plan.files.is_empty() && self.written.is_empty() {
            return 0;
        }
        let values = self.live_tokens(&plan, resolved.values.clone()).await;
        let written = std::mem::take(&mut self.written);
        let first = std::mem::replace(&mut self.first, false);
        let for_job = plan.clone();
        let job = tokio::task::spawn_blocking(move || write_files(&for_job, &values, written, first));
        let (results, removed, mut written) = match job.await {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "writing the files stopped");
                return 0;
            }
        };
        let changed = self.record_writes(results, &mut written, repair) + self.record_removals(removed, &mut written);
        self.metrics.files_failing(self.errors.len());
        if changed > 0 || first {
            let (before, now) = (self.written.clone(), written.clone());
            if let Err(e) = tokio::task::spawn_blocking(move || keep_record(&plan, &before, &now)).await {
                tracing::error!(error = %e, "recording the written files stopped");
            }
        }
        self.written = written;
        changed
    }

    /// `values` with the tokens the files use as the cache has them now: the snapshot's
    /// may be older than a renewal. A token that cannot be had is left out, so that the
    /// files using it keep their last content.
    async fn live_tokens(&self, plan: &Plan, mut values: Values) -> Values {
        let wanted: BTreeSet<usize> = plan.files.iter().flat_map(|f| f.tokens.iter().copied()).collect();
        for conn in wanted {
            let live = self.sources.token(plan, conn, &values.connections[conn]).await;
            let Some(slot) = values.connections.get_mut(conn) else { continue };
            match live {
                Ok(token) => {
                    slot.insert(ACCESS_TOKEN.to_owned(), token.access_token);
                }
                Err(e) => {
                    tracing::warn!(
                        connection = %plan.connections[conn].name,
                        error = %crate::error::chain(&e),
                        "no access token for the files that use it; they keep their last content"
                    );
                    slot.remove(ACCESS_TOKEN);
                }
            }
        }
        values
    }

    /// Counts and logs each file's outcome, once per distinct error; returns how many
    /// were rewritten.
    fn record_writes(&mut self, results: Writes, written: &mut BTreeSet<PathBuf>, repair: bool) -> usize {
        let mut changed = 0;
        for (target, result) in results {
            match result {
                Ok(outcome) => {
                    written.insert(target.clone());
                    if self.errors.remove(&target).is_some() {
                        tracing::info!(file = %target.display(), "file written again; the error above is over");
                    }
                    if outcome == Outcome::Written {
                        changed += 1;
                        if repair {
                            tracing::warn!(
                                file = %target.display(),
                                "file changed, re-moded or deleted behind connd's back: put back as rendered"
                            );
                        } else {
                            tracing::info!(file = %target.display(), "file rendered");
                        }
                        self.metrics.file_write(FileWrite::Written);
                    } else {
                        self.metrics.file_write(FileWrite::Unchanged);
                    }
                }
                Err(e) => {
                    self.metrics.file_write(FileWrite::Error);
                    let message = e.to_string();
                    if self.errors.get(&target) != Some(&message) {
                        tracing::warn!(error = %message, "the last good file stays, will retry");
                        self.errors.insert(target, message);
                    }
                }
            }
        }
        changed
    }

    /// Forgets the files no longer planned and logs their removal; returns how many went.
    fn record_removals(&mut self, removed: Removals, written: &mut BTreeSet<PathBuf>) -> usize {
        let mut changed = 0;
        for (target, result) in removed {
            written.remove(&target);
            self.errors.remove(&target);
            match result {
                Ok(()) => {
                    changed += 1;
                    tracing::info!(file = %target.display(), "file no longer planned: removed");
                }
                Err(e) => {
                    tracing::warn!(file = %target.display(), error = %e, "cannot remove a file no longer planned")
                }
            }
        }
        changed
    }
}

/// Each planned file's target and what became of it.
type Writes = Vec<(PathBuf, Result<Outcome, FileError>)>;
/// The files no longer planned that were removed, or why one could not be.
type Removals = Vec<(PathBuf, std::io::Result<()>)>;

/// Renders and writes every planned file (on a blocking thread), and removes those of
/// `written` the plan no longer holds, and on the `first` round those an earlier process
/// recorded; gives `written` back for the caller to update.
fn write_files(
    plan: &Plan,
    values: &Values,
    written: BTreeSet<PathBuf>,
    first: bool,
) -> (Writes, Removals, BTreeSet<PathBuf>) {
    let mut results = Vec::with_capacity(plan.files.len());
    let batch = super::render::Batch::new(plan, values);
    let root = crate::fileplan::resolve_root(&plan.files_root).map_err(write::WriteError::Escapes);
    for file in &plan.files {
        let result = super::render_one(&batch, file).and_then(|bytes| {
            let root = root.as_ref().map_err(|e| write::WriteError::Escapes(e.to_string()));
            root.and_then(|root| write::write(root, file, &bytes))
                .map_err(|source| FileError::Write { path: file.target.clone(), source })
        });
        results.push((file.target.clone(), result));
    }
    let planned: BTreeSet<&PathBuf> = plan.files.iter().map(|f| &f.target).collect();
    let mut removed = Vec::new();
    for target in written.iter().filter(|t| !planned.contains(t)) {
        removed.push((target.clone(), write::remove(target)));
    }
    if first {
        removed.extend(leftovers(plan, &planned));
    }
    (results, removed, written)
}

/// The files an earlier connd process recorded in the planned folders, no longer planned
/// and still as it left them, removed.
fn leftovers(plan: &Plan, planned: &BTreeSet<&PathBuf>) -> Removals {
    let folders: BTreeSet<&std::path::Path> = plan.files.iter().filter_map(|f| f.target.parent()).collect();
    record::load(folders)
        .into_iter()
        .filter(|e| !planned.contains(&e.path) && e.path.starts_with(&plan.files_root) && e.still_ours())
        .map(|e| {
            let removed = write::remove(&e.path);
            (e.path, removed)
        })
        .collect()
}

/// Writes the record of the files `now` holds into each folder holding one, and removes
/// the records of folders that held one of `before` and hold none of `now`.
fn keep_record(plan: &Plan, before: &BTreeSet<PathBuf>, now: &BTreeSet<PathBuf>) {
    let entries = now.iter().filter_map(|t| record::Entry::of(t)).collect();
    let folders: BTreeSet<&std::path::Path> = now.iter().filter_map(|t| t.parent()).collect();
    if let Err(e) = record::save(folders.iter().copied(), &entries) {
        tracing::warn!(
            error = %e,
            root = %plan.files_root.display(),
            "cannot record the written files; a later connd may leave a file no longer planned"
        );
    }
    for gone in before.iter().filter_map(|t| t.parent()).filter(|f| !folders.contains(f)) {
        let _ = write::remove(&gone.join(record::RECORD));
    }
}
