//! `connd serve`: the reloader and the API server together, with the lifecycle docs/api.md
//! asks for. `run` takes its listener, settings, sources and shutdown future, so tests
//! run it in-process; `command` is what the binary calls (runtime, socket, signals).
//!
//! Lifecycle: serve at once (`/readyz` says 503 and why), `READY=1` after the first full
//! resolution, or exit with that resolution's error after the startup timeout; SIGHUP
//! reloads (`RELOADING=1`, then `READY=1`); shutdown sends `STOPPING=1`, stops the
//! reloader and drains the server within its grace period.

pub mod api;
pub mod metrics_listen;
pub mod probe;
pub mod sdnotify;

use crate::listen::auth::Allow;
use crate::metrics::Metrics;
use crate::reload::{ReloadConfig, Reloader};
use crate::serve::api::server::{self, ApiStateParts};
use crate::serve::sdnotify::Notifier;
use crate::signal;
use crate::source::outbound::{self, Outbound};
use crate::source::Sources;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub reload: ReloadConfig,
    pub allow: Allow,
    pub startup_timeout: Duration,
    /// How long in-flight requests get once shutdown starts.
    pub grace: Duration,
    /// `NOTIFY_SOCKET`, if connd runs under systemd.
    pub notify_socket: Option<String>,
    /// Reload on SIGHUP. Off for in-process tests, which share the process's signals.
    pub sighup: bool,
    /// What one caller may hold of the API.
    pub limits: server::Limits,
    /// `--metrics-listen`, bound: `/metrics`, `/healthz` and `/readyz` over TCP.
    pub metrics_listener: Option<Arc<std::net::TcpListener>>,
}

/// The API's socket file: where it is made and who may open it (`serve`, `run --socket`).
#[derive(Debug, Clone)]
pub struct Socket {
    /// Its directory is created.
    pub path: PathBuf,
    /// Permission bits.
    pub mode: u32,
    /// The group it is given, if any.
    pub group: Option<u32>,
}

async fn hangup(hangups: &mut Option<tokio::signal::unix::Signal>) {
    match hangups {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Serves until `shutdown`; an error only when the first resolution failed for
/// `startup_timeout` (its exit code is that failure's). `metrics` is the one set of
/// counters `/metrics` shows: the reloader and the API count into it, and so should
/// `sources` (the control-plane and token calls).
pub async fn run<S: Sources>(
    listener: UnixListener,
    settings: ServeSettings,
    sources: Arc<S>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with_proxy(listener, None, settings, sources, metrics, shutdown).await
}

/// [`run`], with the egress proxy (docs/proxy.md) on its bound listeners when given: it
/// serves the reloader's snapshot with the same sources and metrics as the API.
pub async fn run_with_proxy<S: Sources>(
    listener: UnixListener,
    proxy: Option<crate::proxy::Bound>,
    settings: ServeSettings,
    sources: Arc<S>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let notifier = Notifier::new(settings.notify_socket.as_deref());
    // Stops the reloader and the server, each through a child token.
    let stop = CancellationToken::new();
    let mut reloader =
        Reloader::start(settings.reload, sources.clone(), metrics.clone(), stop.child_token().cancelled_owned());
    // Files (docs/files.md) follow the same snapshots, and token renewals.
    let _files = crate::files::keep::Keeper::start(
        reloader.store().clone(),
        sources.clone(),
        metrics.clone(),
        None,
        stop.child_token().cancelled_owned(),
    );
    let metrics_server = settings.metrics_listener.map(|listener| {
        let (store, metrics) = (reloader.store().clone(), metrics.clone());
        AbortOnDropHandle::new(tokio::spawn(metrics_listen::serve(
            listener,
            store,
            metrics,
            stop.child_token().cancelled_owned(),
        )))
    });
    let proxy = proxy.map(|bound| {
        let (store, sources, metrics) = (reloader.store().clone(), sources.clone(), metrics.clone());
        let serving = bound.serve(store, sources, metrics, stop.child_token().cancelled_owned());
        AbortOnDropHandle::new(tokio::spawn(serving))
    });
    let parts = ApiStateParts { store: reloader.store().clone(), sources, metrics };
    let (allow, grace, limits) = (settings.allow, settings.grace, settings.limits);
    let serving = server::serve_with(listener, parts, allow, grace, limits, stop.child_token().cancelled_owned());
    let server = AbortOnDropHandle::new(tokio::spawn(serving));
    let mut hangups = if settings.sighup { Some(signal::hangups()?) } else { None };
    tokio::pin!(shutdown);

    let store = reloader.store().clone();
    let started = tokio::select! {
        ready = crate::reload::ready(&store, settings.startup_timeout) => Some(ready.map_err(anyhow::Error::from)),
        e = reloader.failed() => Some(Err(e)),
        () = &mut shutdown => None,
    };
    let mut result = Ok(());
    match started {
        Some(Ok(_)) => {
            tracing::info!("ready: values resolved");
            notifier.ready();
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    e = reloader.failed() => {
                        result = Err(e);
                        break;
                    }
                    () = hangup(&mut hangups) => {
                        tracing::info!("SIGHUP: reloading");
                        notifier.reloading();
                        // Shutdown must not wait for a reload (a control plane may be
                        // slow to answer): the grace period bounds it either way.
                        tokio::select! {
                            () = reloader.reload() => notifier.ready(),
                            () = &mut shutdown => break,
                        }
                    }
                }
            }
        }
        Some(Err(e)) => result = Err(e),
        None => {}
    }
    notifier.stopping();
    stop.cancel();
    let _ = server.await;
    if let Some(proxy) = proxy {
        let _ = proxy.await;
    }
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    reloader.stopped().await;
    result
}

/// The binary's `serve`: binds the socket, runs until SIGTERM/SIGINT, removes the socket.
pub fn command(
    settings: ServeSettings,
    socket: &Socket,
    outbound: &outbound::Settings,
    proxy: &crate::proxy::ProxySettings,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(async {
        let shutdown = signal::shutdown()?;
        // Installed now, so that a SIGHUP before `run` takes over does not kill connd
        // (the handler stays installed once made).
        let _early_hangups = signal::hangups()?;
        // Everything that can fail is set up before the socket exists, so that an
        // error leaves no socket file behind.
        let metrics = Arc::new(Metrics::default());
        let sources = Arc::new(Outbound::new(outbound, crate::retry::Until::Cancelled, metrics.clone())?);
        let proxy = crate::proxy::bind(proxy.clone())?;
        let listener = server::bind(&socket.path, socket.mode, socket.group)?;
        tracing::info!(socket = %socket.path.display(), "serving");
        for warning in settings.allow.unreachable(&socket.path) {
            tracing::warn!("{warning}");
        }
        let result = run_with_proxy(listener, proxy, settings, sources.clone(), metrics, shutdown).await;
        sources.token_cache().shutdown().await;
        let _ = std::fs::remove_file(&socket.path);
        result
    });
    // In-flight work is done or past its grace period; do not wait on stray tasks.
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}
