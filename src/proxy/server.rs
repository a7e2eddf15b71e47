//! The proxy's listeners: TCP (`--proxy-listen`, loopback unless `--proxy-allow-remote`),
//! a Unix socket (`--proxy-socket`, callers checked by SO_PEERCRED as the API's), and a
//! connection's own port (`proxy.port`, on 127.0.0.1), whose every request names that
//! connection as the shared listener's `Connd-Connection` header does: the header is set
//! on each request (a caller's own replaced), so that routing has one rule.
//! HTTP/1.1 with keep-alive and HTTP/2 with prior knowledge on hyper, under the API's [`Limits`]: a header-read timeout
//! (which also closes idle kept-alive connections) and a cap on open connections (a
//! caller beyond it gets a 503 and a closed connection at once). On shutdown: no new
//! connections, in-flight requests finish within the grace period, the rest are closed.
//! The accept loop, the limits and the drain are `listen::conn`'s, as for the API.

use super::forward::{Caller, Proxy, CONND_CONNECTION};
use super::upgrade::Tunnels;
use crate::error::{Class, Classify};
use crate::listen::auth::Allow;
use crate::listen::conn::{self, WhenFull};
use crate::listen::{conn::Limits, socket::BindError};
use crate::source::Sources;
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

/// Largest request head hyper reads (request line and headers). It is well above the
/// limits `forward` judges (target, header bytes, header fields), so that a caller over
/// those reads connd's JSON answer; only a head beyond this gets hyper's bare 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields hyper parses in one request head; above `forward::MAX_HEADER_FIELDS`
/// for the same reason.
pub const MAX_HEAD_FIELDS: usize = 256;

/// What a caller over the connection cap reads before its connection is closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 74\r\n\r\n\
{\"error\":\"too many open connections to connd; retry later\",\"code\":\"busy\"}\n";

/// What a caller over a connection's own port's cap reads: the port and the connection
/// named, the flag that sets the cap.
fn port_over_capacity(connection: &str) -> Vec<u8> {
    let error = format!(
        "too many open connections to the proxy port of connection {connection:?} (--max-connections); retry later"
    );
    let body = serde_json::json!({ "error": error, "code": "busy", "connection": connection }).to_string() + "\n";
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    (head + &body).into_bytes()
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("--proxy-listen {addr} is not a loopback address: the proxy attaches credentials for whoever calls it; listen on 127.0.0.1 or [::1], or pass --proxy-allow-remote")]
    NotLoopback { addr: SocketAddr },
    #[error("cannot listen on {addr} (--proxy-listen): {source}")]
    Tcp { addr: SocketAddr, source: std::io::Error },
    #[error("--proxy-socket: {0}")]
    Unix(#[from] BindError),
    #[error(
        "cannot listen on 127.0.0.1:{port}, the proxy port of connection {connection:?}: {source}; {}",
        port_fix(source)
    )]
    Port { connection: String, port: u16, source: std::io::Error },
    #[error(
        "proxy port {port} of connection {connection:?} is the port of connd's own {listener}: give the connection \
         another `proxy.port`, or move the listener to another port"
    )]
    Ours { connection: String, port: u16, listener: String },
    #[error(transparent)]
    ProxyVariable(#[from] crate::http::proxy::ProxyError),
}

/// A listen address the flags forbid is a usage error; a port or socket in use, a
/// socket that cannot be made, cannot-create; a bad proxy variable, a setting; a
/// connection's port on one of connd's own listeners, the directory's error.
impl Classify for ListenError {
    fn class(&self) -> Class {
        match self {
            ListenError::NotLoopback { .. } => Class::Usage,
            ListenError::Tcp { .. } | ListenError::Unix(_) | ListenError::Port { .. } => Class::CantCreate,
            ListenError::ProxyVariable(_) | ListenError::Ours { .. } => Class::Config,
        }
    }
}

/// What to do about a proxy port that cannot be listened on, by its cause.
fn port_fix(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "another process listens there: stop it, or give the connection another `proxy.port`"
        }
        std::io::ErrorKind::PermissionDenied => {
            "a port below 1024 needs the CAP_NET_BIND_SERVICE capability: grant it to connd, or use a port from 1024 up"
        }
        _ => "give the connection another `proxy.port`",
    }
}

/// A bound listener of the proxy, not yet tied to a runtime: the proxy serves on a
/// thread of its own (see `Bound::serve`).
pub enum Listener {
    Tcp(std::net::TcpListener),
    /// With who may call through it.
    Unix(std::os::unix::net::UnixListener, Allow),
    /// A connection's own port, with the connection every request on it goes to.
    Port(std::net::TcpListener, Pinned),
}

/// The connection a port listener serves.
#[derive(Debug, Clone)]
pub struct Pinned {
    /// Its name in the plan, for logs and metrics.
    pub connection: Arc<str>,
    /// The same as the `Connd-Connection` value set on every request.
    header: HeaderValue,
}

/// A listener registered with the serving runtime.
enum Live {
    Tcp(TcpListener),
    Unix(UnixListener, Allow),
}

/// Binds the TCP listener; a non-loopback address needs `allow_remote`.
pub fn bind_tcp(addr: SocketAddr, allow_remote: bool) -> Result<Listener, ListenError> {
    if !allow_remote && !addr.ip().is_loopback() {
        return Err(ListenError::NotLoopback { addr });
    }
    let tcp = || -> std::io::Result<std::net::TcpListener> {
        let std = std::net::TcpListener::bind(addr)?;
        std.set_nonblocking(true)?;
        Ok(std)
    };
    tcp().map(Listener::Tcp).map_err(|source| ListenError::Tcp { addr, source })
}

/// Binds connection `connection`'s own port on 127.0.0.1 (docs/proxy.md).
pub fn bind_port(port: u16, connection: &str) -> Result<Listener, ListenError> {
    let failed = |source| ListenError::Port { connection: connection.to_owned(), port, source };
    // Names follow the platform's naming rule; one that is no header value is refused
    // rather than routed some other way.
    let header = HeaderValue::from_str(connection)
        .map_err(|_| failed(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the name is not a header value")))?;
    let std = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).map_err(failed)?;
    std.set_nonblocking(true).map_err(failed)?;
    Ok(Listener::Port(std, Pinned { connection: connection.into(), header }))
}

/// Binds the Unix socket as the API's is bound (directory, stale file, mode, group).
pub fn bind_unix(path: &Path, mode: u32, group: Option<u32>, allow: Allow) -> Result<Listener, ListenError> {
    let listener = crate::listen::socket::bind(path, mode, group)?;
    let listener = listener
        .into_std()
        .map_err(|source| ListenError::Unix(BindError::Bind { path: path.to_path_buf(), source }))?;
    Ok(Listener::Unix(listener, allow))
}

impl Listener {
    /// The TCP address bound (port 0 resolved), for logs and tests.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) | Listener::Port(l, _) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    /// Says where it listens, once serving starts.
    pub fn announce(&self) {
        match self {
            Listener::Tcp(l) => {
                if let Ok(addr) = l.local_addr() {
                    tracing::info!(%addr, "egress proxy listening");
                }
            }
            Listener::Port(l, pinned) => {
                if let Ok(addr) = l.local_addr() {
                    tracing::info!(%addr, connection = %pinned.connection, "proxy port listening");
                }
            }
            // Said by `Bound::serve`, with the path.
            Listener::Unix(..) => {}
        }
    }
}

/// Serves `listener` until `shutdown`, then drains within `grace`. Runs in the runtime
/// that serves the proxy (its listeners are registered there).
pub async fn serve<S: Sources>(
    listener: Listener,
    proxy: Arc<Proxy<S>>,
    limits: Limits,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let (live, pinned) = match listener {
        Listener::Tcp(l) => (TcpListener::from_std(l).map(Live::Tcp), None),
        Listener::Port(l, pinned) => (TcpListener::from_std(l).map(Live::Tcp), Some(pinned)),
        Listener::Unix(l, allow) => (UnixListener::from_std(l).map(|l| Live::Unix(l, allow)), None),
    };
    let listener = match live {
        Ok(live) => live,
        Err(e) => {
            tracing::error!(error = %e, "egress proxy: cannot use a listener");
            return;
        }
    };
    let draining = CancellationToken::new();
    let counted_as = pinned.as_ref().map_or("", |p| &*p.connection);
    let over_capacity = pinned.as_ref().map_or_else(|| OVER_CAPACITY.to_vec(), |p| port_over_capacity(&p.connection));
    let refuse = |(stream, _): (Accepted, Caller)| {
        let _ = stream.try_write(&over_capacity);
        proxy.metrics.proxied(counted_as, 503, Duration::ZERO);
    };
    let conns = conn::serve(
        listener,
        limits.max_connections,
        WhenFull::Refuse(refuse),
        grace,
        draining.clone(),
        shutdown,
        |(stream, mut caller)| {
            caller.pinned = pinned.is_some();
            let (proxy, draining, pinned) = (proxy.clone(), draining.clone(), pinned.clone());
            async move {
                match stream {
                    Accepted::Tcp(s) => connection(s, caller, pinned, proxy, draining, limits).await,
                    Accepted::Unix(s) => connection(s, caller, pinned, proxy, draining, limits).await,
                }
            }
        },
    );
    conns.await;
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Accepted {
    fn try_write(&self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Accepted::Tcp(s) => s.try_write(bytes),
            Accepted::Unix(s) => s.try_write(bytes),
        }
    }
}

impl conn::Listener for Live {
    type Io = (Accepted, Caller);
    async fn accept(&self) -> std::io::Result<(Accepted, Caller)> {
        accept(self).await
    }
}

async fn accept(listener: &Live) -> std::io::Result<(Accepted, Caller)> {
    match listener {
        Live::Tcp(l) => {
            let (stream, _) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok((Accepted::Tcp(stream), Caller { tcp: true, allowed: true, pinned: false }))
        }
        Live::Unix(l, allow) => {
            let (stream, _) = l.accept().await?;
            let allowed = allow.permits(&stream);
            Ok((Accepted::Unix(stream), Caller { tcp: false, allowed, pinned: false }))
        }
    }
}

/// HTTP/1.1 and HTTP/2 with prior knowledge (h2c, what a gRPC client speaks to an
/// `http://` target) on one listener, under the proxy's head limits.
fn builder(limits: Limits) -> AutoBuilder<TokioExecutor> {
    let mut builder = AutoBuilder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEAD_FIELDS)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEAD_BYTES as u32);
    builder
}

/// One caller's connection; on a connection's own port (`pinned`), every request is
/// named for that connection.
async fn connection<IO, S>(
    io: IO,
    caller: Caller,
    pinned: Option<Pinned>,
    proxy: Arc<Proxy<S>>,
    draining: CancellationToken,
    limits: Limits,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Sources,
{
    let tunnels = Tunnels::default();
    let joined = tunnels.clone();
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if let Some(pinned) = &pinned {
            req.headers_mut().insert(CONND_CONNECTION, pinned.header.clone());
        }
        let (proxy, tunnels) = (proxy.clone(), tunnels.clone());
        async move { Ok::<_, Infallible>(proxy.handle(caller, req, &tunnels).await) }
    });
    conn::auto(&builder(limits), io, service, limits, draining).await;
    // An upgraded connection (WebSocket) lives on here, in this connection's task: its
    // slot is held, and the drain bounds it.
    if let Some(tunnel) = joined.take() {
        tunnel.await;
    }
}
