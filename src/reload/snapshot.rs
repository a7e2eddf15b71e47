//! The resolved state as every long-running mode sees it: the plan, its values and, per
//! answer of the local API, an index that grows only when that answer's content changes.
//! A [`Store`] holds the current [`Snapshot`] in an `ArcSwap` (lock-free reads on the
//! request path) and announces each new one on a `watch` channel (for blocking queries
//! and for `run`). Only the reloader publishes; everything else reads.

use crate::error::Class;
use crate::resolve::Plan;
use crate::secret::Secret;
use crate::source::values::Values;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;
use tokio::time::Instant;

/// A connection's fields as the connection routes show them (see `Resolved::describe`).
pub type Fields = [(&'static str, String); 5];

/// The last good resolution, with the index of every answer built from it. Its Debug
/// (below) shows names and indexes only: the plan holds literal values and `values`
/// and `env_json` hold everything in clear.
pub struct Resolved {
    pub plan: Arc<Plan>,
    pub values: Values,
    /// Index of `/v1/env`: grows only when the variables change.
    pub env_index: u64,
    /// Index of `/v1/connections`: grows only when the listing changes.
    pub connections_index: u64,
    /// Index of `/v1/connections/{name}`, same order as `plan.connections`.
    pub connection_index: Vec<u64>,
    pub resolved_at: SystemTime,
    /// `/v1/env` as JSON, rendered once per change: it is the hot path of the API.
    pub env_json: RenderedEnv,
}

/// A rendered answer holding values in clear; its Debug shows only its length, so a
/// snapshot printed in a log or a failed assertion leaks nothing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RenderedEnv(pub bytes::Bytes);

impl std::fmt::Debug for RenderedEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RenderedEnv(<{} bytes redacted>)", self.0.len())
    }
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.plan.connections.iter().map(|c| c.name.as_str()).collect();
        let vars: Vec<&str> = self.values.env.keys().map(String::as_str).collect();
        f.debug_struct("Resolved")
            .field("connections", &names)
            .field("variables", &vars)
            .field("env_index", &self.env_index)
            .field("connections_index", &self.connections_index)
            .field("connection_index", &self.connection_index)
            .field("resolved_at", &self.resolved_at)
            .field("env_json", &self.env_json)
            .finish()
    }
}

/// The variables as one JSON object, with a trailing newline.
fn render_env_json(env: &BTreeMap<String, Secret>) -> bytes::Bytes {
    let map: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
    let mut body = serde_json::to_vec(&map).unwrap_or_default();
    body.push(b'\n');
    body.into()
}

impl Resolved {
    /// The planned connection named `name`, as its position.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.plan.connections.iter().position(|c| c.name == name)
    }

    /// The keys `/v1/connections` lists for connection `i`: its parameters and, under
    /// OAuth, `AccessToken`.
    pub fn keys(&self, i: usize) -> Vec<&str> {
        self.plan.connections[i].connection.keys().collect()
    }

    /// What both connection routes show of connection `i` besides keys and values:
    /// name, id, type, visibility and security. The routes render these fields, and
    /// the change checks below compare them, so neither can omit one the other has.
    pub fn describe(&self, i: usize) -> Fields {
        let c = &self.plan.connections[i];
        [
            ("name", c.name.clone()),
            ("id", c.connection.id.clone()),
            ("type", c.kind.as_str().to_owned()),
            ("visibility", format!("{:?}", c.connection.visibility).to_lowercase()),
            ("security", format!("{:?}", c.connection.security).to_lowercase()),
        ]
    }

    /// What `/v1/connections` shows, compared to decide whether its index grows.
    fn listing(&self) -> Vec<(Fields, Vec<&str>)> {
        (0..self.plan.connections.len()).map(|i| (self.describe(i), self.keys(i))).collect()
    }

    /// What `/v1/connections/{name}` shows for connection `i`.
    fn detail(&self, i: usize) -> (Fields, &BTreeMap<String, Secret>) {
        (self.describe(i), &self.values.connections[i])
    }
}

/// The names (never the values) of the variables added, removed or changed, joined
/// with `,`: what a log line about a change may say.
pub fn changed_names(old: &BTreeMap<String, Secret>, new: &BTreeMap<String, Secret>) -> String {
    let mut names: Vec<&str> = new.iter().filter(|(k, v)| old.get(*k) != Some(v)).map(|(k, _)| k.as_str()).collect();
    names.extend(old.keys().filter(|k| !new.contains_key(*k)).map(String::as_str));
    names.sort_unstable();
    names.join(",")
}

/// Why the latest resolution failed. The last good values stay served meanwhile.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The whole error chain, as a user reads it (values are never part of it).
    pub message: String,
    /// What kind of failure it is: the exit code it means when it stops a start.
    pub class: Class,
    /// When this failure (this message) was first seen.
    pub since: SystemTime,
}

/// One published state. Cheap to clone: both halves are shared.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Grows with every publication; answer indexes are taken from it.
    pub generation: u64,
    /// `None` until the first full resolution succeeds.
    pub resolved: Option<Arc<Resolved>>,
    /// The current error, if the latest resolution failed.
    pub failure: Option<Arc<Failure>>,
    /// When the values served were written to the outage cache, while they are its
    /// (docs/cache.md): stale, until the control plane answers.
    pub cached: Option<SystemTime>,
}

impl Snapshot {
    /// The variables and their index, once resolved: what `run` compares.
    pub fn env(&self) -> Option<(&BTreeMap<String, Secret>, u64)> {
        self.resolved.as_ref().map(|r| (&r.values.env, r.env_index))
    }
}

/// Holds the current snapshot and announces new ones.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<Snapshot>,
    tx: watch::Sender<Arc<Snapshot>>,
    /// When the latest resolution (good or not) finished: past the startup deadline,
    /// `reload::ready` waits for the one made at the deadline, not the one before.
    finished: watch::Sender<Option<Instant>>,
    /// The first resolution's deadline, set by whoever waits for it (`reload::ready`):
    /// until then the reloader's retries stop at it, so that one is made there.
    startup_deadline: Mutex<Option<Instant>>,
    /// True from when a files keeper starts until it wrote every planned file once:
    /// until then connd is not ready (docs/api.md), whatever the values.
    files_pending: watch::Sender<bool>,
    /// True from when a mode says the first plan's proxy ports (docs/proxy.md) are to be
    /// opened until they are: until then connd is not ready, so that a workload started
    /// on readiness finds them listening.
    ports_pending: AtomicBool,
    /// Why a port the current plan asks for does not listen (taken, privileged), while
    /// it is retried: connd is not ready meanwhile (docs/proxy.md).
    ports_missing: Mutex<Option<String>>,
}

impl Default for Store {
    fn default() -> Self {
        let first = Arc::new(Snapshot::default());
        Store {
            current: ArcSwap::new(first.clone()),
            tx: watch::Sender::new(first),
            finished: watch::Sender::new(None),
            startup_deadline: Mutex::new(None),
            files_pending: watch::Sender::new(false),
            ports_pending: AtomicBool::new(false),
            ports_missing: Mutex::new(None),
        }
    }
}

impl Store {
    /// The current snapshot, without locking.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A receiver that sees every snapshot published from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Records that a resolution (good or not) finished now; after its snapshot, if any,
    /// was published.
    pub fn finished(&self) {
        self.finished.send_replace(Some(Instant::now()));
    }

    /// When resolutions finish (see [`Self::finished`]).
    pub fn subscribe_finished(&self) -> watch::Receiver<Option<Instant>> {
        self.finished.subscribe()
    }

    /// Says that files are to be written before connd is ready (`Daemon::keep_files`).
    pub fn files_pending(&self) {
        self.files_pending.send_replace(true);
    }

    /// Says that every planned file was written once (the files keeper).
    pub fn files_written(&self) {
        self.files_pending.send_replace(false);
    }

    /// Whether files are still to be written once before connd is ready.
    pub fn files_are_pending(&self) -> bool {
        *self.files_pending.borrow()
    }

    /// Says that the first plan's proxy ports are to be opened before connd is ready.
    pub fn ports_pending(&self) {
        self.ports_pending.store(true, Ordering::SeqCst);
    }

    /// Says that the first plan's proxy ports were opened.
    pub fn ports_opened(&self) {
        self.ports_pending.store(false, Ordering::SeqCst);
    }

    /// Whether the first plan's proxy ports are still to be opened.
    pub fn ports_are_pending(&self) -> bool {
        self.ports_pending.load(Ordering::SeqCst)
    }

    /// Says which of the plan's proxy ports do not listen, and why (`None`: all listen).
    pub fn set_ports_missing(&self, why: Option<String>) {
        *self.ports_missing.lock() = why;
    }

    /// Why a port the plan asks for does not listen, if one does not.
    pub fn ports_missing(&self) -> Option<String> {
        self.ports_missing.lock().clone()
    }

    /// Completes once no file is pending (at once when none is).
    pub async fn files_settled(&self) {
        let mut rx = self.files_pending.subscribe();
        // The sender lives as long as `self`: `wait_for` cannot fail while borrowed.
        let _ = rx.wait_for(|pending| !pending).await;
    }

    /// Sets the first resolution's deadline (the earliest one set wins).
    pub fn set_startup_deadline(&self, deadline: Instant) {
        let mut current = self.startup_deadline.lock();
        *current = Some(current.map_or(deadline, |d| d.min(deadline)));
    }

    /// The first resolution's deadline, while it has not succeeded.
    pub fn startup_deadline(&self) -> Option<Instant> {
        let deadline = *self.startup_deadline.lock();
        deadline.filter(|_| self.load().resolved.is_none())
    }

    fn publish(&self, next: Snapshot) {
        let next = Arc::new(next);
        self.current.store(next.clone());
        self.tx.send_replace(next);
    }

    /// Records a successful resolution. Publishes when some answer changed or a
    /// failure is cleared; returns true only when some answer changed. Indexes of
    /// unchanged answers are kept.
    pub fn succeed(&self, plan: Arc<Plan>, values: Values) -> bool {
        self.update(plan, values, None, None)
    }

    /// Records a resolution on the outage cache's values, written at `cached`, taken
    /// because the sources fail with `source_failure` (message, class): published as
    /// [`Self::succeed_files`] does, and marked stale until a fetch succeeds.
    pub fn succeed_cached(
        &self,
        plan: Arc<Plan>,
        values: Values,
        source_failure: (String, Class),
        cached: SystemTime,
    ) -> bool {
        self.update(plan, values, Some(source_failure), Some(cached))
    }

    /// Records a resolution of the files that reused the last fetch while the sources
    /// are failing with `source_failure` (message, class): changed answers are
    /// published, but the failure stays, with its age if it is the current one. Only
    /// a successful fetch ends a source failure.
    pub fn succeed_files(&self, plan: Arc<Plan>, values: Values, source_failure: (String, Class)) -> bool {
        let cached = self.load().cached;
        self.update(plan, values, Some(source_failure), cached)
    }

    fn update(
        &self,
        plan: Arc<Plan>,
        values: Values,
        keep: Option<(String, Class)>,
        cached: Option<SystemTime>,
    ) -> bool {
        let prev = self.load();
        let generation = prev.generation + 1;
        let mut next = Resolved {
            connection_index: vec![generation; plan.connections.len()],
            plan,
            values,
            env_index: generation,
            connections_index: generation,
            resolved_at: SystemTime::now(),
            env_json: RenderedEnv::default(),
        };
        let mut changed = true;
        if let Some(old) = &prev.resolved {
            changed = false;
            if old.values.env == next.values.env {
                next.env_index = old.env_index;
            } else {
                changed = true;
            }
            // Files (docs/files.md) are rendered from the plan: a changed file entry is a change.
            if old.plan.files != next.plan.files {
                changed = true;
            }
            // So are the proxy's ports (docs/proxy.md): their listeners follow the plan.
            if old.plan.proxy_ports() != next.plan.proxy_ports() {
                changed = true;
            }
            if old.listing() == next.listing() {
                next.connections_index = old.connections_index;
            } else {
                changed = true;
            }
            for i in 0..next.plan.connections.len() {
                match old.position(&next.plan.connections[i].name) {
                    Some(j) if old.detail(j) == next.detail(i) => next.connection_index[i] = old.connection_index[j],
                    _ => changed = true,
                }
            }
        }
        let failure = match keep {
            None => None,
            Some((message, _)) if prev.failure.as_ref().is_some_and(|f| f.message == message) => prev.failure.clone(),
            Some((message, class)) => Some(Arc::new(Failure { message, class, since: SystemTime::now() })),
        };
        let same_failure = match (&prev.failure, &failure) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if !changed && same_failure && cached == prev.cached {
            return false;
        }
        if changed {
            next.env_json = RenderedEnv(render_env_json(&next.values.env));
        }
        let resolved = if changed { Arc::new(next) } else { prev.resolved.clone().expect("resolved before") };
        self.publish(Snapshot { generation, resolved: Some(resolved), failure, cached });
        changed
    }

    /// Records a failed resolution; the last good values stay. Publishes, and returns
    /// true, only when the message differs from the current failure's, so each distinct
    /// error is announced (and logged) once.
    pub fn fail(&self, message: String, class: Class) -> bool {
        let prev = self.load();
        if prev.failure.as_ref().is_some_and(|f| f.message == message) {
            return false;
        }
        let failure = Failure { message, class, since: SystemTime::now() };
        self.publish(Snapshot {
            generation: prev.generation + 1,
            resolved: prev.resolved.clone(),
            failure: Some(Arc::new(failure)),
            cached: prev.cached,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::{plan, Options};

    fn fixture(port: &str, level: &str) -> (tempfile::TempDir, Arc<Plan>, Values) {
        let dir = tempfile::tempdir().unwrap();
        let component = "schemaVersion: 1.2\ndependencies:\n  connectionReferences:\n    - name: main-db\n      resourceRef: database:pg/main\n    - name: api-x\n      resourceRef: thirdparty:api/v1\nconfigurations:\n  env:\n    - name: LEVEL\n      value: ";
        std::fs::write(dir.path().join("component.yaml"), format!("{component}{level}\n")).unwrap();
        let conns = format!(
            "kind: Component\nproject: p1\nname: c1\n---\nkind: Connection\nid: 19d2648b-d29c-4452-afdd-1b9311e81412\nname: main-db\nproject: p1\nvisibility: project\nparameters:\n  Port: \"{port}\"\n---\nkind: Connection\nid: 29d2648b-d29c-4452-afdd-1b9311e81412\nname: api-x\nproject: p1\nvisibility: project\nparameters:\n  ServiceURL: https://api\n"
        );
        std::fs::write(dir.path().join("c.yaml"), conns).unwrap();
        let plan = Arc::new(plan(dir.path(), &Options::default()).unwrap());
        let values = crate::source::values::materialize(&plan, &Default::default()).unwrap();
        (dir, plan, values)
    }

    #[test]
    fn indexes_grow_only_for_answers_that_changed() {
        let store = Store::default();
        let mut rx = store.subscribe();
        assert!(store.load().resolved.is_none());
        let (_d, plan, values) = fixture("5432", "info");
        assert!(store.succeed(plan.clone(), values.clone()));
        assert!(rx.has_changed().unwrap());
        let first = rx.borrow_and_update().clone();
        let r = first.resolved.as_ref().unwrap();
        assert_eq!((r.env_index, r.connections_index, r.connection_index.clone()), (1, 1, vec![1, 1]));

        // The same again: nothing published.
        assert!(!store.succeed(plan, values));
        assert!(!rx.has_changed().unwrap());

        // Only the db port changes: env and db grow, the listing and api keep theirs.
        let (_d, plan, values) = fixture("6543", "info");
        assert!(store.succeed(plan, values));
        let s = store.load();
        let r = s.resolved.as_ref().unwrap();
        let db = r.position("main-db").unwrap();
        let api = r.position("api-x").unwrap();
        assert_eq!((r.env_index, r.connections_index), (2, 1));
        assert_eq!((r.connection_index[db], r.connection_index[api]), (2, 1));

        // Only a literal variable changes: only env grows.
        let (_d, plan, values) = fixture("6543", "debug");
        assert!(store.succeed(plan, values));
        let s = store.load();
        let r = s.resolved.as_ref().unwrap();
        assert_eq!((r.env_index, r.connections_index, r.connection_index[db]), (3, 1, 2));
        assert_eq!(s.env().unwrap().0["LEVEL"].expose(), "debug");
    }

    #[test]
    fn a_failure_keeps_the_values_and_is_announced_once() {
        let store = Store::default();
        let (_d, plan, values) = fixture("5432", "info");
        store.succeed(plan.clone(), values.clone());
        assert!(store.fail("boom".into(), Class::Unavailable));
        assert!(!store.fail("boom".into(), Class::Unavailable));
        assert!(store.fail("other".into(), Class::Config));
        let s = store.load();
        assert_eq!(s.failure.as_ref().unwrap().message, "other");
        assert_eq!(s.env().unwrap().1, 1);
        // Success with the same values clears the failure without moving any index (and
        // says that no answer changed).
        let generation = store.load().generation;
        assert!(!store.succeed(plan, values));
        let s = store.load();
        assert_eq!(s.generation, generation + 1, "the cleared failure is published");
        assert!(s.failure.is_none());
        assert_eq!(s.env().unwrap().1, 1);
    }

    #[test]
    fn a_files_only_success_keeps_the_source_failure() {
        let store = Store::default();
        let (_d, plan, values) = fixture("5432", "info");
        store.succeed(plan.clone(), values.clone());
        assert!(store.fail("control plane down".into(), Class::Unavailable));
        let since = store.load().failure.as_ref().unwrap().since;
        let generation = store.load().generation;
        let down = || ("control plane down".to_owned(), Class::Unavailable);
        // Nothing changed in the files: nothing published, the failure stays.
        assert!(!store.succeed_files(plan, values, down()));
        assert_eq!(store.load().generation, generation);
        // The files changed: published, the same failure (same age) kept.
        let (_d, plan, values) = fixture("6543", "info");
        assert!(store.succeed_files(plan, values, down()));
        let s = store.load();
        assert_eq!(s.failure.as_ref().map(|f| f.since), Some(since));
        assert_eq!(s.env().unwrap().0["CHOREO_MAIN_DB_PORT"].expose(), "6543");
    }

    #[test]
    fn a_snapshot_debug_shows_no_value() {
        let store = Store::default();
        let (_d, plan, values) = fixture("5432", "s3cr3t-level");
        store.succeed(plan, values);
        let shown = format!("{:?}", store.load());
        assert!(shown.contains("redacted"), "{shown}");
        assert!(!shown.contains("s3cr3t-level"), "a value leaked through Debug: {shown}");
    }

    #[test]
    fn a_changed_security_moves_the_connection_indexes() {
        let store = Store::default();
        let (d, first, values) = fixture("5432", "info");
        store.succeed(first, values);
        let conns = std::fs::read_to_string(d.path().join("c.yaml")).unwrap();
        let conns = conns.replace("name: api-x\n", "name: api-x\nsecurity: apiKey\n");
        std::fs::write(d.path().join("c.yaml"), conns).unwrap();
        let plan = Arc::new(plan(d.path(), &Options::default()).unwrap());
        let values = crate::source::values::materialize(&plan, &Default::default()).unwrap();
        assert!(store.succeed(plan, values), "a changed security is a changed answer");
        let s = store.load();
        let r = s.resolved.as_ref().unwrap();
        let api = r.position("api-x").unwrap();
        assert_eq!((r.env_index, r.connections_index, r.connection_index[api]), (1, 2, 2));
        assert_eq!(r.describe(api)[4], ("security", "apikey".to_owned()));
    }
}
