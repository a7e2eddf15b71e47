//! `connd run` as the binary calls it: the reloader keeps the values current, the
//! supervisor runs the workload on them, and, with `--socket`, the local API serves the
//! same snapshot so that the workload can ask for fresh tokens.
//!
//! Boundary: wiring and lifecycle only. Change detection is the reloader's (`reload`),
//! which changes count is `changes`', the process work is `supervise`'s.

pub mod changes;
pub mod reap;
pub mod supervise;
pub mod terminal;

use crate::listen::auth::Allow;
use crate::metrics::Metrics;
use crate::reload::snapshot::Snapshot;
use crate::reload::{ReloadConfig, Reloader};
use crate::retry::Until;
use crate::run::changes::Env;
use crate::serve::api::server::{self, ApiStateParts};
use crate::serve::{metrics_listen, Socket};
use crate::source::once;
use crate::source::outbound::{self, Outbound};
use crate::source::{Sources, Tokens};
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;
use supervise::{Forwarded, SuperviseError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// How long API requests in flight get once the workload has exited.
const API_GRACE: Duration = Duration::from_secs(1);

/// How long the workload runs before the reloader starts watching (without `--socket`).
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

// Long by design: the order of start-up (signals, sources, API, metrics listener, first
// resolution, workload) and its reverse on the way out is the point, read top to bottom.
async fn run(args: &Settings) -> anyhow::Result<u8> {
    // First of all: a SIGTERM while values are fetched must end connd, even as PID 1.
    let mut signals = Forwarded::new().map_err(SuperviseError::Signals)?;
    let metrics = Arc::new(Metrics::default());
    let sources = Arc::new(Outbound::new(&args.outbound, Until::Cancelled, metrics.clone())?);
    // Stops the reloader and the API, each through a child token.
    let stop = CancellationToken::new();
    let start_reloader = || {
        let mut reload = args.reload.clone();
        if args.api.is_none() {
            reload.tokens = Tokens::Mapped;
        }
        Reloader::start(reload, sources.clone(), metrics.clone(), stop.child_token().cancelled_owned())
    };
    let proxy = crate::proxy::bind(args.proxy.clone())?;
    // With an API or the proxy, the reloader starts at once: they serve its snapshot.
    let mut reloader = None;
    let mut server = None;
    let mut proxy_task = None;
    if let Some(bound) = proxy {
        let r = start_reloader();
        let serving =
            bound.serve(r.store().clone(), sources.clone(), metrics.clone(), stop.child_token().cancelled_owned());
        proxy_task = Some(AbortOnDropHandle::new(tokio::spawn(serving)));
        reloader = Some(r);
    }
    if let Some((socket, allow)) = &args.api {
        let listener = server::bind(&socket.path, socket.mode, socket.group)?;
        tracing::info!(socket = %socket.path.display(), "serving");
        for warning in allow.unreachable(&socket.path) {
            tracing::warn!("{warning}");
        }
        let r = reloader.get_or_insert_with(start_reloader);
        // The same metrics the reloader and the sources count in: `/metrics` reports them.
        let parts = ApiStateParts { store: r.store().clone(), sources: sources.clone(), metrics: metrics.clone() };
        let serving = server::serve(listener, parts, allow.clone(), API_GRACE, stop.child_token().cancelled_owned());
        server = Some(AbortOnDropHandle::new(tokio::spawn(serving)));
    }
    // Probes and scrapes read the reloader's snapshot, so it starts at once too.
    let mut metrics_server = None;
    if let Some(listener) = &args.metrics_listener {
        let r = reloader.get_or_insert_with(start_reloader);
        let serving = metrics_listen::serve(
            listener.clone(),
            r.store().clone(),
            metrics.clone(),
            stop.child_token().cancelled_owned(),
        );
        metrics_server = Some(AbortOnDropHandle::new(tokio::spawn(serving)));
    }

    let result = async {
        let first = tokio::select! {
            first = first_resolution(args, &*sources, reloader.as_ref()) => first?,
            code = startup_signal(&mut signals) => return Ok(code),
        };
        let (env_tx, env_rx) = watch::channel(first);
        let inherited = std::env::vars_os().collect();
        let (file_tx, file_rx) = tokio::sync::mpsc::channel(1);
        let file_changes = (args.supervise.on_file_change != supervise::OnChange::None).then_some(file_rx);
        let supervised = supervise::supervise(&args.command, inherited, env_rx, &args.supervise, signals, file_changes);
        tokio::pin!(supervised);
        let delay = if reloader.is_some() { Duration::ZERO } else { WATCH_DELAY };
        let code = tokio::select! {
            code = &mut supervised => code?,
            () = tokio::time::sleep(delay) => {
                let r = reloader.get_or_insert_with(start_reloader);
                let _forward = AbortOnDropHandle::new(tokio::spawn(forward_env(r.subscribe(), env_tx)));
                // Files written before the start are kept current from now on.
                let _files = crate::files::keep::Keeper::start(
                    r.store().clone(),
                    sources.clone(),
                    metrics.clone(),
                    Some(file_tx),
                    stop.child_token().cancelled_owned(),
                );
                supervised.await?
            }
        };
        Ok(code)
    }
    .await;

    stop.cancel();
    if let Some(server) = server {
        let _ = server.await;
    }
    if let Some(proxy) = proxy_task {
        let _ = proxy.await;
    }
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    if let Some(reloader) = reloader {
        reloader.stopped().await;
    }
    sources.token_cache().shutdown().await;
    if let Some((socket, _)) = &args.api {
        let _ = std::fs::remove_file(&socket.path);
    }
    result
}

/// The first full resolution, as `exec` does it: the same errors and exit codes, and
/// only the tokens variables map. The long-running sources fail a transient failure at
/// once, so it is retried here, with backoff, until `--startup-timeout`.
/// With an API, the workload then starts once the API is ready too, on its values.
async fn first_resolution(args: &Settings, sources: &impl Sources, api: Option<&Reloader>) -> anyhow::Result<Env> {
    let fetch = |plan: Arc<_>| async move {
        let deadline = crate::http::deadline::deadline_after(args.outbound.startup_timeout);
        Ok(once::fetch(&plan, sources, Until::Deadline, deadline).await?)
    };
    let (plan, values) = once::resolve(&args.reload.dir, &args.reload.options, fetch).await?;
    // As `exec`: the workload never starts with a file missing or partly rendered.
    if !plan.files.is_empty() {
        crate::files::write_all(&plan, &values)?;
    }
    if let Some(reloader) = api {
        let ready = reloader.ready(args.outbound.startup_timeout).await?;
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
