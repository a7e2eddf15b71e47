//! `connd serve`: the reloader and the API server together, with the lifecycle docs/api.md
//! asks for. `run` takes its listener, settings, sources and shutdown future, so tests
//! run it in-process; `command` is what the binary calls (runtime, socket, signals).
//!
//! Lifecycle: serve at once (`/readyz` says 503 and why), `READY=1` after the first full
//! resolution, or exit with that resolution's error after the startup timeout; SIGHUP
//! reloads (`RELOADING=1`, then `READY=1`); shutdown sends `STOPPING=1`, stops the
//! reloader and drains the server within its grace period. The parts (reloader, API,
//! egress proxy, metrics listener, files keeper) are assembled by `daemon`, as `run`'s.
//! The connections' own proxy ports (docs/proxy.md) open before `READY=1` (one that
//! cannot is the startup's error) and follow every new plan after.

pub mod api;
pub mod metrics_listen;
pub mod probe;
pub mod sdnotify;

use crate::daemon::{Daemon, Door, Serving, Shared};
use crate::listen::auth::Allow;
use crate::metrics::Metrics;
use crate::proxy::ports::Ports;
use crate::reload::ReloadConfig;
use crate::serve::api::server::{self, ApiStateParts, BindError};
use crate::serve::sdnotify::Notifier;
use crate::signal;
use crate::source::outbound::{self, Outbound};
use crate::source::Sources;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_util::sync::WaitForCancellationFutureOwned;

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

/// The local API's bound socket and how it serves: a door of the daemon.
pub struct Api {
    /// The socket, bound (see [`Api::bind`]).
    pub listener: UnixListener,
    /// Who may call it, besides connd's own uid (`--allow-uid`, `--allow-gid`).
    pub allow: Allow,
    /// How long in-flight requests get once shutdown starts.
    pub grace: Duration,
    /// What one caller may hold of it.
    pub limits: server::Limits,
}

impl Api {
    /// Binds `socket` (its folder created, a stale file replaced, its mode and group
    /// given) and says so, warning of allowed callers the socket keeps out.
    pub fn bind(socket: &Socket, allow: Allow, grace: Duration, limits: server::Limits) -> Result<Api, BindError> {
        let listener = server::bind(&socket.path, socket.mode, socket.group)?;
        tracing::info!(socket = %socket.path.display(), "serving");
        for warning in allow.unreachable(&socket.path) {
            tracing::warn!("{warning}");
        }
        Ok(Api { listener, allow, grace, limits })
    }
}

impl<S: Sources> Door<S> for Api {
    fn name(&self) -> &'static str {
        "the local API"
    }

    fn drain(&self) -> Duration {
        self.grace
    }

    fn serve(self: Box<Self>, shared: Shared<S>, until: WaitForCancellationFutureOwned) -> Serving {
        let parts = ApiStateParts { store: shared.store, sources: shared.sources, metrics: shared.metrics };
        Box::pin(server::serve_with(self.listener, parts, self.allow, self.grace, self.limits, until))
    }
}

/// `--metrics-listen`, bound: `/metrics`, `/healthz` and `/readyz` over TCP, a door of
/// the daemon.
pub struct MetricsDoor(pub Arc<std::net::TcpListener>);

impl<S: Sources> Door<S> for MetricsDoor {
    fn name(&self) -> &'static str {
        "the metrics listener"
    }

    /// Scrapes and probes are short: the listener closes every connection at once.
    fn drain(&self) -> Duration {
        Duration::ZERO
    }

    fn serve(self: Box<Self>, shared: Shared<S>, until: WaitForCancellationFutureOwned) -> Serving {
        Box::pin(metrics_listen::serve(self.0, shared.store, shared.metrics, until))
    }
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
    let api = Api { listener, allow: settings.allow.clone(), grace: settings.grace, limits: settings.limits };
    let ports = Ports::new(crate::proxy::ProxySettings::off());
    run_with(api, None, ports, settings, sources, metrics, shutdown).await
}

/// [`run`] on the bound API, with the egress proxy (docs/proxy.md) on its bound listeners
/// when given and the connections' own ports as `ports` serves them: the daemon's parts,
/// with the files kept current, and serve's lifecycle.
pub async fn run_with<S: Sources>(
    api: Api,
    proxy: Option<crate::proxy::Bound>,
    ports: Ports,
    settings: ServeSettings,
    sources: Arc<S>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let notifier = Notifier::new(settings.notify_socket.as_deref());
    let mut doors: Vec<Box<dyn Door<S>>> = vec![Box::new(api)];
    doors.extend(proxy.map(|bound| Box::new(bound) as Box<dyn Door<S>>));
    doors.extend(settings.metrics_listener.map(|listener| Box::new(MetricsDoor(listener)) as Box<dyn Door<S>>));
    let mut daemon = Daemon::start(settings.reload, sources, metrics, doors);
    // Not ready until the first plan's proxy ports are open: said now, before any request.
    daemon.reloader().store().ports_pending();
    // Files (docs/files.md) follow the same snapshots, and token renewals.
    daemon.keep_files(None);
    let hangups = if settings.sighup { Some(signal::hangups()?) } else { None };
    let result = lifecycle(&mut daemon, ports, &notifier, settings.startup_timeout, hangups, shutdown).await;
    notifier.stopping();
    daemon.shut_down().await;
    result
}

/// Waits for the first full resolution and opens its proxy ports (then `READY=1`), then
/// serves until `shutdown` or until the reloader fails, reloading on SIGHUP and
/// following the plan's ports.
async fn lifecycle<S: Sources>(
    daemon: &mut Daemon<S>,
    mut ports: Ports,
    notifier: &Notifier,
    startup_timeout: Duration,
    mut hangups: Option<tokio::signal::unix::Signal>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let store = daemon.reloader().store().clone();
    let first = tokio::select! {
        ready = crate::reload::ready(&store, startup_timeout) => ready?,
        e = daemon.reloader_mut().failed() => return Err(e),
        () = &mut shutdown => return Ok(()),
    };
    // A port that cannot be listened on at startup is an error (docs/commands.md).
    ports.apply(daemon, Ports::wanted(&first).unwrap_or_default()).await?;
    store.ports_opened();
    // Ready when the workload can read its files too (docs/files.md).
    tokio::select! {
        () = store.files_settled() => {}
        e = daemon.reloader_mut().failed() => return Err(e),
        () = &mut shutdown => return Ok(()),
    }
    tracing::info!("ready: values resolved");
    notifier.ready();
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            e = daemon.reloader_mut().failed() => return Err(e),
            wanted = ports.changed(&store) => ports.reload(daemon, wanted).await,
            () = hangup(&mut hangups) => {
                tracing::info!("SIGHUP: reloading");
                notifier.reloading();
                // Shutdown must not wait for a reload (a control plane may be
                // slow to answer): the grace period bounds it either way.
                tokio::select! {
                    () = daemon.reloader().reload() => {}
                    () = &mut shutdown => return Ok(()),
                }
                // The plan's ports, tried again even when unchanged: a port that was
                // taken may have been freed since.
                let wanted = Ports::wanted(&store.load()).unwrap_or_default();
                ports.reload(daemon, wanted).await;
                notifier.ready();
            }
        }
    }
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
        signal::ignore_stray()?;
        // Everything that can fail is set up before the socket exists, so that an
        // error leaves no socket file behind.
        let metrics = Arc::new(Metrics::default());
        let sources = Arc::new(Outbound::new(outbound, crate::retry::Until::Cancelled, metrics.clone())?);
        let mut ports = Ports::new(proxy.clone());
        if let Some(addr) = settings.metrics_listener.as_ref().and_then(|l| l.local_addr().ok()) {
            ports = ports.reserve(addr, "--metrics-listen");
        }
        let proxy = crate::proxy::bind(proxy.clone())?;
        let (allow, grace, limits) = (settings.allow.clone(), settings.grace, settings.limits);
        let api = Api::bind(socket, allow, grace, limits)?;
        let result = run_with(api, proxy, ports, settings, sources.clone(), metrics, shutdown).await;
        sources.token_cache().shutdown().await;
        let _ = std::fs::remove_file(&socket.path);
        result
    });
    // In-flight work is done or past its grace period; do not wait on stray tasks.
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}
