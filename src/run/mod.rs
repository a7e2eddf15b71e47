//! `connd run` as the binary calls it: the reloader keeps the values current, the
//! supervisor runs the workload on them, and, with `--socket`, the local API serves the
//! same snapshot so that the workload can ask for fresh tokens.
//!
//! Boundary: `run` is the daemon's parts (`daemon`: the reloader and, as asked, the API,
//! the egress proxy and the connections' own proxy ports, the metrics listener, the files
//! keeper) plus the supervisor. The ports of the first plan are open before the workload
//! starts (one that cannot be is the startup's error), and follow every new plan. Change
//! detection is the reloader's (`reload`), which changes count is `changes`', the
//! process work is `supervise`'s.

pub mod changes;
pub mod deathsig;
pub mod reap;
pub mod supervise;
pub mod terminal;

use crate::daemon::{Daemon, Door};
use crate::listen::auth::Allow;
use crate::metrics::Metrics;
use crate::proxy::ports::{Ports, Wanted};
use crate::reload::snapshot::Snapshot;
use crate::reload::{ReloadConfig, Reloader};
use crate::retry::Until;
use crate::run::changes::Env;
use crate::serve::api::server;
use crate::serve::{Api, MetricsDoor, Socket};
use crate::source::once;
use crate::source::outbound::{self, Outbound};
use crate::source::{Sources, Tokens};
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;
use supervise::{Forwarded, SuperviseError};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

/// How long API requests in flight get once the workload has exited.
const API_GRACE: Duration = Duration::from_secs(1);

/// How long the workload runs before the reloader starts watching (without a front door).
/// A workload that is over by then never pays for the watcher: closing an inotify
/// instance that has watches waits for a kernel grace period (about 10 ms) at exit.
/// The reloader's first resolution catches up on anything that changed meanwhile.
const WATCH_DELAY: Duration = Duration::from_millis(100);

/// What `connd run` does, as its flags say.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The workload's command and its arguments.
    pub command: Vec<OsString>,
    pub supervise: supervise::Settings,
    /// What is resolved and how often; its `tokens` are set here.
    pub reload: ReloadConfig,
    pub outbound: outbound::Settings,
    /// With `--socket`: the local API's socket and who may call it.
    pub api: Option<(Socket, Allow)>,
    /// The egress proxy (`--proxy-listen`, `--proxy-socket`); off when neither is given.
    pub proxy: crate::proxy::ProxySettings,
    /// `--metrics-listen`, bound: `/metrics`, `/healthz` and `/readyz` over TCP.
    pub metrics_listener: Option<Arc<std::net::TcpListener>>,
}

/// The binary's `run`: returns the workload's exit code (or 128+N).
pub fn command(args: &Settings) -> anyhow::Result<u8> {
    // One thread: spawning (std's fork/exec) and reaping (`waitpid(-1)`) must never run
    // at the same time, or a failed spawn's own wait could find its child gone.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn run(args: &Settings) -> anyhow::Result<u8> {
    // First of all: a SIGTERM while values are fetched must end connd, even as PID 1.
    let signals = Forwarded::new().map_err(SuperviseError::Signals)?;
    let metrics = Arc::new(Metrics::default());
    let sources = Arc::new(Outbound::new(&args.outbound, Until::Cancelled, metrics.clone())?);
    // A directory that cannot be read is said (exit 78) before a door is bound, logged as
    // serving or leaves a socket folder behind.
    if args.api.is_some()
        || args.metrics_listener.is_some()
        || args.proxy.listen.is_some()
        || args.proxy.socket.is_some()
    {
        let (dir, options) = (args.reload.dir.clone(), args.reload.options.clone());
        tokio::task::spawn_blocking(move || crate::resolve::plan(&dir, &options)).await??;
    }
    let socket_dir = args.api.as_ref().and_then(|(s, _)| s.path.parent()).filter(|d| !d.exists());
    let doors = doors(args)?;
    // With a front door, the daemon starts at once: its doors serve the reloader's snapshot.
    let mut daemon =
        (!doors.is_empty()).then(|| Daemon::start(reload_config(args), sources.clone(), metrics.clone(), doors));
    // Its doors say "not ready" until the files keeper, started with the workload, wrote
    // the files once.
    if let Some(daemon) = &daemon {
        daemon.reloader().store().files_pending();
        daemon.reloader().store().ports_pending();
    }
    let result = workload(args, &sources, &metrics, &mut daemon, signals).await;
    if let Some(daemon) = daemon {
        daemon.shut_down().await;
    }
    sources.token_cache().shutdown().await;
    if let Some((socket, _)) = &args.api {
        let _ = std::fs::remove_file(&socket.path);
    }
    // The folder made for the socket goes with it (only if left empty).
    if let Some(dir) = socket_dir {
        let _ = std::fs::remove_dir(dir);
    }
    result
}

/// The front doors `args` asks for, bound: the egress proxy, then the API.
fn doors(args: &Settings) -> anyhow::Result<Vec<Box<dyn Door<Outbound>>>> {
    let mut doors: Vec<Box<dyn Door<Outbound>>> = Vec::new();
    if let Some(bound) = crate::proxy::bind(args.proxy.clone())? {
        doors.push(Box::new(bound));
    }
    if let Some((socket, allow)) = &args.api {
        doors.push(Box::new(Api::bind(socket, allow.clone(), API_GRACE, server::Limits::default())?));
    }
    if let Some(listener) = &args.metrics_listener {
        doors.push(Box::new(MetricsDoor(listener.clone())));
    }
    Ok(doors)
}

/// What the reloader resolves: every token for an API, else only the mapped ones.
fn reload_config(args: &Settings) -> ReloadConfig {
    let mut reload = args.reload.clone();
    if args.api.is_none() {
        reload.tokens = Tokens::Mapped;
    }
    reload
}

/// The first resolution, then the workload supervised until it exits for good; the
/// daemon (started now if it has not been) keeps its variables and files current.
async fn workload(
    args: &Settings,
    sources: &Arc<Outbound>,
    metrics: &Arc<Metrics>,
    daemon: &mut Option<Daemon<Outbound>>,
    mut signals: Forwarded,
) -> anyhow::Result<u8> {
    let (first, wanted) = tokio::select! {
        first = first_resolution(args, &**sources, daemon.as_ref().map(Daemon::reloader)) => first?,
        code = startup_signal(&mut signals) => return Ok(code),
    };
    let start = || Daemon::start(reload_config(args), sources.clone(), metrics.clone(), Vec::new());
    // The workload finds its connections' ports listening (docs/proxy.md).
    let mut ports = Ports::new(args.proxy.clone());
    if let Some(addr) = args.metrics_listener.as_ref().and_then(|l| l.local_addr().ok()) {
        ports = ports.reserve(addr, "--metrics-listen");
    }
    if !wanted.is_empty() {
        let fresh = daemon.is_none();
        let daemon = daemon.get_or_insert_with(start);
        ports.apply(daemon, wanted).await?;
        // The ports answer from the daemon's own snapshot: a daemon started for them is
        // waited for, as one with a door is by `first_resolution`.
        if fresh {
            tokio::select! {
                ready = daemon.reloader().ready(args.outbound.startup_timeout) => drop(ready?),
                code = startup_signal(&mut signals) => return Ok(code),
            }
        }
    }
    if let Some(daemon) = daemon {
        daemon.reloader().store().ports_opened();
    }
    let (env_tx, env_rx) = watch::channel(first);
    let inherited = std::env::vars_os().collect();
    let (file_tx, file_rx) = tokio::sync::mpsc::channel(1);
    let file_changes = (args.supervise.on_file_change != supervise::OnChange::None).then_some(file_rx);
    let supervised = supervise::supervise(&args.command, inherited, env_rx, &args.supervise, signals, file_changes);
    tokio::pin!(supervised);
    let delay = if daemon.is_some() { Duration::ZERO } else { WATCH_DELAY };
    tokio::select! {
        code = &mut supervised => Ok(code?),
        () = tokio::time::sleep(delay) => {
            let daemon = daemon.get_or_insert_with(start);
            let _forward = AbortOnDropHandle::new(tokio::spawn(forward_env(daemon.reloader().subscribe(), env_tx)));
            // Files written before the start are kept current from now on.
            daemon.keep_files(Some(file_tx));
            let store = daemon.reloader().store().clone();
            loop {
                tokio::select! {
                    code = &mut supervised => return Ok(code?),
                    wanted = ports.changed(&store) => ports.reload(daemon, wanted).await,
                }
            }
        }
    }
}

/// The first full resolution, as `exec` does it: the same errors and exit codes, and
/// only the tokens variables map. The long-running sources fail a transient failure at
/// once, so it is retried here, with backoff, until `--startup-timeout`.
/// With an API, the workload then starts once the API is ready too, on its values.
/// Also the proxy ports the plan asks for.
async fn first_resolution(
    args: &Settings,
    sources: &impl Sources,
    api: Option<&Reloader>,
) -> anyhow::Result<(Env, Wanted)> {
    let fetch = |plan: Arc<_>| async move {
        let deadline = crate::http::deadline::deadline_after(args.outbound.startup_timeout);
        Ok(once::fetch(&plan, sources, Until::Deadline, deadline).await?)
    };
    let (plan, values) = once::resolve(&args.reload.dir, &args.reload.options, fetch).await?;
    let wanted = Ports::of(&plan);
    // As `exec`: the workload never starts with a file missing or partly rendered.
    if !plan.files.is_empty() {
        crate::files::write_all(&plan, &values)?;
    }
    if let Some(reloader) = api {
        let ready = reloader.ready(args.outbound.startup_timeout).await?;
        if let Some((env, _)) = ready.env() {
            return Ok((Arc::new(env.clone()), wanted));
        }
    }
    Ok((Arc::new(values.env), wanted))
}

/// Completes with 128+N when a signal that ends connd arrives before the workload runs.
async fn startup_signal(signals: &mut Forwarded) -> u8 {
    loop {
        let sig = signals.recv().await;
        if supervise::ends_startup(sig) {
            tracing::info!(signal = sig.as_str(), "stopping before the workload started");
            return 128 + sig as i32 as u8;
        }
    }
}

/// Passes every published set of variables on, the current one first; `changes`
/// compares them with what the workload has.
async fn forward_env(mut snapshots: watch::Receiver<Arc<Snapshot>>, env: watch::Sender<Env>) {
    loop {
        let s = snapshots.borrow_and_update().clone();
        if let Some((vars, _)) = s.env() {
            env.send_replace(Arc::new(vars.clone()));
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}
