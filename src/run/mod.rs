//! `connd run` as the binary calls it: the reloader keeps the values current, the
//! supervisor runs the workload on them, and, with `--socket`, the local API serves the
//! same snapshot so that the workload can ask for fresh tokens.
//!
//! Boundary: wiring and lifecycle only. Change detection is the reloader's (`watch`),
//! which changes count is `changes`', the process work is `supervise`'s.

pub mod changes;
pub mod reap;
pub mod supervise;
pub mod terminal;

use crate::cli::RunArgs;
use crate::metrics::Metrics;
use crate::reload::snapshot::Snapshot;
use crate::reload::{ReloadConfig, Reloader};
use crate::resolve;
use crate::run::changes::Env;
use crate::serve::api::auth::Allow;
use crate::serve::api::server::{self, ApiStateParts};
use crate::source::values::{self, Fetched};
use crate::source::{Sources, Tokens};
use std::sync::Arc;
use std::time::Duration;
use supervise::{Forwarded, SuperviseError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long API requests in flight get once the workload has exited.
const API_GRACE: Duration = Duration::from_secs(1);

/// How long the workload runs before the reloader starts watching (without `--socket`).
/// A workload that is over by then never pays for the watcher: closing an inotify
/// instance that has watches waits for a kernel grace period (about 10 ms) at exit.
/// The reloader's first resolution catches up on anything that changed meanwhile.
const WATCH_DELAY: Duration = Duration::from_millis(100);

/// The binary's `run`: returns the workload's exit code (or 128+N).
pub fn command(args: &RunArgs) -> anyhow::Result<u8> {
    // One thread: spawning (std's fork/exec) and reaping (`waitpid(-1)`) must never run
    // at the same time, or a failed spawn's own wait could find its child gone.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn until(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn run(args: &RunArgs) -> anyhow::Result<u8> {
    // First of all: a SIGTERM while values are fetched must end connd, even as PID 1.
    let mut signals = Forwarded::new().map_err(SuperviseError::Signals)?;
    let metrics = Arc::new(Metrics::default());
    let sources = Arc::new(crate::source::remote::Remote::new(&args.config.remote, true, metrics.clone())?);
    let (stop_tx, stop) = watch::channel(false);
    let start_reloader = || {
        let mut reload = ReloadConfig::new(&args.config, args.reload.refresh_interval, args.reload.rescan_interval);
        if args.socket.is_none() {
            reload.tokens = Tokens::Mapped;
        }
        Reloader::start(reload, sources.clone(), metrics.clone(), until(stop.clone()))
    };
    let proxy_settings =
        args.proxy.settings(&args.access, &args.config.remote, crate::serve::api::server::Limits::default(), API_GRACE);
    let proxy = crate::proxy::bind(proxy_settings)?;
    // With an API or the proxy, the reloader starts at once: they serve its snapshot.
    let mut reloader = None;
    let mut server = None;
    let mut proxy_task = None;
    if let Some(bound) = proxy {
        let r = start_reloader();
        let serving = bound.serve(r.store().clone(), sources.clone(), metrics.clone(), until(stop.clone()));
        proxy_task = Some(tokio::spawn(serving));
        reloader = Some(r);
    }
    if let Some(path) = &args.socket {
        let listener = server::bind(path, args.access.socket_mode, args.access.socket_group)?;
        tracing::info!(socket = %path.display(), "serving");
        let r = reloader.get_or_insert_with(start_reloader);
        // The same metrics the reloader and the sources count in: `/metrics` reports them.
        let parts = ApiStateParts { store: r.store().clone(), sources: sources.clone(), metrics: metrics.clone() };
        let allow = Allow::new(args.access.allow_uid.clone(), args.access.allow_gid.clone());
        server = Some(tokio::spawn(server::serve(listener, parts, allow, API_GRACE, until(stop.clone()))));
    }

    let result = async {
        let first = tokio::select! {
            first = first_resolution(args, &*sources, reloader.as_ref()) => first?,
            code = startup_signal(&mut signals) => return Ok(code),
        };
        let (env_tx, env_rx) = watch::channel(first);
        let inherited = std::env::vars_os().collect();
        let settings = args.settings();
        let supervised = supervise::supervise(&args.command, inherited, env_rx, &settings, signals);
        tokio::pin!(supervised);
        let delay = if reloader.is_some() { Duration::ZERO } else { WATCH_DELAY };
        let code = tokio::select! {
            code = &mut supervised => code?,
            () = tokio::time::sleep(delay) => {
                let r = reloader.get_or_insert_with(start_reloader);
                let _forward = Forward(tokio::spawn(forward_env(r.subscribe(), env_tx)));
                supervised.await?
            }
        };
        Ok(code)
    }
    .await;

    let _ = stop_tx.send(true);
    if let Some(server) = server {
        let _ = server.await;
    }
    if let Some(proxy) = proxy_task {
        let _ = proxy.await;
    }
    if let Some(reloader) = reloader {
        reloader.stopped().await;
    }
    sources.shutdown();
    if let Some(path) = &args.socket {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// The first full resolution, as `exec` does it: the same errors and exit codes, and
/// only the tokens variables map. The long-running sources fail a transient failure at
/// once, so it is retried here, with backoff, until `--startup-timeout`.
/// With an API, the workload then starts once the API is ready too, on its values.
async fn first_resolution(args: &RunArgs, sources: &impl Sources, api: Option<&Reloader>) -> anyhow::Result<Env> {
    let plan = resolve::plan(&args.config.config_dir, &args.config.options())?;
    let fetched = if plan.needs_remote() || plan.token_vars().next().is_some() {
        let deadline = Instant::now() + args.config.remote.startup_timeout;
        let mut backoff = Duration::from_millis(100);
        loop {
            match sources.fetch(&plan, Tokens::Mapped).await {
                Ok(fetched) => break fetched,
                Err(e) if crate::exit_code(&e) == crate::exit::UNAVAILABLE && Instant::now() + backoff < deadline => {
                    tracing::warn!(retry_in = ?backoff, "values unavailable, will retry: {e:#}");
                    tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64() * 0.5)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    } else {
        Fetched::default()
    };
    let values = values::materialize(&plan, &fetched)?;
    tracing::debug!(connections = plan.connections.len(), variables = values.env.len(), "resolved");
    if let Some(reloader) = api {
        let ready = reloader.ready(args.config.remote.startup_timeout).await?;
        if let Some((env, _)) = ready.env() {
            return Ok(Arc::new(env.clone()));
        }
    }
    Ok(Arc::new(values.env))
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

/// The forwarding task, stopped with the supervisor that reads it.
struct Forward(JoinHandle<()>);

impl Drop for Forward {
    fn drop(&mut self) {
        self.0.abort();
    }
}
