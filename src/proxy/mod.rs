//! The egress proxy of docs/proxy.md: the workload calls `http://127.0.0.1:PORT/<connection>/...`
//! and connd forwards the call to the connection's `ServiceURL` with its credentials
//! attached, so the workload never holds them.
//!
//! - `route`: which connection and which upstream path a target names; what is refused.
//! - `forward`: one request, credentials, streaming, retries on 401, error answers.
//! - `loops`: the `Via` mark that refuses a request coming back to this connd (508).
//! - `upgrade`: WebSocket and other HTTP/1.1 upgrades: the two connections joined.
//! - `upstream`: the pools (one per wire protocol), their TCP/TLS connector, and what a
//!   failed exchange means; `pool`: the kept connections themselves, on hyper's
//!   `client::conn`.
//! - `server`: the TCP and Unix-socket listeners, their limits and drain.
//! - `ports`: the connections' own ports (`proxy.port`), opened and closed as the plan's
//!   ports change, each a door of the daemon.
//!
//! Boundary: it reads the reloader's snapshot (values, plan) and asks the sources for
//! tokens; it changes neither.

pub mod forward;
pub mod loops;
pub mod pool;
pub mod ports;
pub mod route;
pub mod server;
pub mod upgrade;
pub mod upstream;

use crate::daemon::{Door, Serving, Shared};
use crate::http::proxy::Proxies;
use crate::http::tls::TlsSettings;
use crate::listen::auth::Allow;
use crate::listen::conn::Limits;
use crate::metrics::Metrics;
use crate::reload::snapshot::Store;
use crate::source::Sources;
pub use forward::{Forwarding, Proxy};
pub use server::{ListenError, Listener};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Default time allowed to connect to an upstream, TLS handshake included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time allowed for an upstream's response head after the request was sent.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how the proxy serves.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// `--proxy-listen`.
    pub listen: Option<SocketAddr>,
    /// `--proxy-allow-remote`: `listen` may be a non-loopback address.
    pub allow_remote: bool,
    /// `--proxy-socket`, with the API's mode, group and caller rules.
    pub socket: Option<PathBuf>,
    pub socket_mode: u32,
    pub socket_group: Option<u32>,
    pub allow: Allow,
    /// Trust and client certificate for upstreams (`--ca-file`, `--client-cert`).
    pub tls: TlsSettings,
    /// `--no-proxy-env`: upstreams are connected directly whatever `HTTPS_PROXY` says.
    pub no_proxy_env: bool,
    pub connect_timeout: Duration,
    pub forwarding: Forwarding,
    pub limits: Limits,
    /// How long in-flight requests get once shutdown starts.
    pub grace: Duration,
}

impl ProxySettings {
    /// No listener: the proxy is off. The rest are the defaults.
    pub fn off() -> ProxySettings {
        ProxySettings {
            listen: None,
            allow_remote: false,
            socket: None,
            socket_mode: 0o660,
            socket_group: None,
            allow: Allow::new(Vec::new(), Vec::new()),
            tls: TlsSettings::default(),
            no_proxy_env: false,
            connect_timeout: CONNECT_TIMEOUT,
            forwarding: Forwarding { allow_insecure_http: false, response_timeout: RESPONSE_TIMEOUT },
            limits: Limits::default(),
            grace: Duration::from_secs(5),
        }
    }

    /// Whether any listener is asked for.
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || self.socket.is_some()
    }
}

/// The proxy's listeners, bound at startup (so that a taken port fails before anything
/// runs), and what serving them needs: the shared ones (`--proxy-listen`,
/// `--proxy-socket`), or one connection's own port ([`ports`]).
pub struct Bound {
    /// What it is, for the daemon's log line when it does not stop in time.
    name: &'static str,
    listeners: Vec<Listener>,
    settings: ProxySettings,
    connector: upstream::Connector,
}

/// Binds what `settings` asks for; `None` when it asks for nothing. Also reads the
/// outbound proxy variables, the ones the rest of connd uses.
pub fn bind(settings: ProxySettings) -> Result<Option<Bound>, ListenError> {
    if !settings.enabled() {
        return Ok(None);
    }
    let mut listeners = Vec::new();
    if let Some(addr) = settings.listen {
        listeners.push(server::bind_tcp(addr, settings.allow_remote)?);
    }
    if let Some(path) = &settings.socket {
        listeners.push(server::bind_unix(path, settings.socket_mode, settings.socket_group, settings.allow.clone())?);
    }
    Ok(Some(Bound::new("the egress proxy", listeners, settings)?))
}

/// Binds connection `connection`'s own port on 127.0.0.1, served as the shared listeners
/// are (limits, drain, forwarding) on a thread of its own.
pub fn bind_port(settings: &ProxySettings, port: u16, connection: &str) -> Result<Bound, ListenError> {
    let listener = server::bind_port(port, connection)?;
    Bound::new("a connection's proxy port", vec![listener], settings.clone())
}

impl Bound {
    /// `listeners`, served with `settings` and the upstream connector they ask for (which
    /// reads the outbound proxy variables).
    fn new(name: &'static str, listeners: Vec<Listener>, settings: ProxySettings) -> Result<Bound, ListenError> {
        let proxies = if settings.no_proxy_env { Proxies::none() } else { Proxies::from_env()? };
        let connector = upstream::Connector::new(settings.tls.clone(), proxies, settings.connect_timeout);
        Ok(Bound { name, listeners, settings, connector })
    }

    /// The TCP address bound (port 0 resolved).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.listeners.iter().find_map(Listener::local_addr)
    }

    /// Serves every listener until `shutdown`, drains, and removes the socket file.
    ///
    /// The proxy runs on a thread of its own with a single-threaded runtime, as one
    /// nginx worker does: a request and its upstream exchange then never hop between
    /// threads (each hop a wake-up across cores; `benches/proxy.rs` measured about a
    /// sixth less CPU per request than on the API's multi-threaded runtime), and the
    /// API's runtime stays free for the API.
    pub async fn serve<S: Sources>(
        self,
        store: Arc<Store>,
        sources: Arc<S>,
        metrics: Arc<Metrics>,
        shutdown: impl Future<Output = ()>,
    ) {
        let Bound { listeners, settings, connector, .. } = self;
        for listener in &listeners {
            listener.announce();
        }
        if let Some(path) = &settings.socket {
            tracing::info!(socket = %path.display(), "egress proxy listening");
        }
        // Dropped (this future aborted) or cancelled (shutdown), it stops the proxy's thread.
        let stop = CancellationToken::new();
        let stop_on_drop = stop.clone().drop_guard();
        let (done_tx, mut done) = tokio::sync::oneshot::channel::<()>();
        let socket = settings.socket.clone();
        let serving = move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!(error = %e, "egress proxy: cannot start its runtime");
                    return;
                }
            };
            runtime.block_on(serve_all(listeners, settings, connector, store, sources, metrics, stop));
            runtime.shutdown_timeout(Duration::from_millis(100));
            drop(done_tx);
        };
        if let Err(e) = std::thread::Builder::new().name("connd-proxy".into()).spawn(serving) {
            tracing::error!(error = %e, "egress proxy: cannot start its thread");
            return;
        }
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => {
                drop(stop_on_drop);
                let _ = (&mut done).await;
            }
            // The proxy's thread ended by itself (it logged why).
            _ = &mut done => {}
        }
        if let Some(path) = &socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The proxy's listeners are a door of the daemon.
impl<S: Sources> Door<S> for Bound {
    fn name(&self) -> &'static str {
        self.name
    }

    /// A connection's port says which port and connection, for the warning when its
    /// drain outlasts the grace period.
    fn label(&self) -> String {
        match self.listeners.as_slice() {
            [server::Listener::Port(l, pinned)] => {
                let port = l.local_addr().map(|a| a.port()).unwrap_or_default();
                format!("the proxy port 127.0.0.1:{port} of connection {:?}", pinned.connection)
            }
            _ => self.name.to_owned(),
        }
    }

    fn drain(&self) -> Duration {
        self.settings.grace
    }

    fn serve(self: Box<Self>, shared: Shared<S>, until: WaitForCancellationFutureOwned) -> Serving {
        Box::pin((*self).serve(shared.store, shared.sources, shared.metrics, until))
    }
}

/// Every listener, each until `stop`, on the current (the proxy's own) runtime.
async fn serve_all<S: Sources>(
    listeners: Vec<Listener>,
    settings: ProxySettings,
    connector: upstream::Connector,
    store: Arc<Store>,
    sources: Arc<S>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let proxy = Arc::new(Proxy::new(store, sources, metrics, connector, settings.forwarding.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        let until = stop.clone().cancelled_owned();
        tasks.spawn(server::serve(listener, proxy.clone(), settings.limits, settings.grace, until));
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Local;

    #[test]
    fn a_ports_door_names_its_port_and_connection_for_the_drain_warning() {
        let mut settings = ProxySettings::off();
        settings.no_proxy_env = true;
        let bound = bind_port(&settings, 0, "orders").expect("a free port");
        let port = bound.tcp_addr().expect("bound").port();
        let label = <Bound as Door<Local>>::label(&bound);
        assert_eq!(label, format!("the proxy port 127.0.0.1:{port} of connection \"orders\""));
    }
}
