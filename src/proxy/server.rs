//! The proxy's listeners: TCP (`--proxy-listen`, loopback unless `--proxy-allow-remote`)
//! and a Unix socket (`--proxy-socket`, callers checked by SO_PEERCRED as the API's).
//! HTTP/1.1 with keep-alive and HTTP/2 with prior knowledge on hyper, under the API's [`Limits`]: a header-read timeout
//! (which also closes idle kept-alive connections) and a cap on open connections (a
//! caller beyond it gets a 503 and a closed connection at once). On shutdown: no new
//! connections, in-flight requests finish within the grace period, the rest are closed.
//! The accept loop, the limits and the drain are `listen::conn`'s, as for the API.

use super::forward::{Caller, Proxy};
use super::upgrade::Tunnels;
use crate::error::{Class, Classify};
use crate::listen::auth::Allow;
use crate::listen::conn::{self, WhenFull};
use crate::listen::{conn::Limits, socket::BindError};
use crate::source::Sources;
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

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("--proxy-listen {addr} is not a loopback address: the proxy attaches credentials for whoever calls it; listen on 127.0.0.1 or [::1], or pass --proxy-allow-remote")]
    NotLoopback { addr: SocketAddr },
    #[error("cannot listen on {addr} (--proxy-listen): {source}")]
    Tcp { addr: SocketAddr, source: std::io::Error },
    #[error("--proxy-socket: {0}")]
    Unix(#[from] BindError),
    #[error(transparent)]
    ProxyVariable(#[from] crate::http::proxy::ProxyError),
}

/// A listen address the flags forbid is a usage error; a port or socket in use, a
/// socket that cannot be made, cannot-create; a bad proxy variable, a setting.
impl Classify for ListenError {
    fn class(&self) -> Class {
        match self {
            ListenError::NotLoopback { .. } => Class::Usage,
            ListenError::Tcp { .. } | ListenError::Unix(_) => Class::CantCreate,
            ListenError::ProxyVariable(_) => Class::Config,
        }
    }
}

/// A bound listener of the proxy, not yet tied to a runtime: the proxy serves on a
/// thread of its own (see `Bound::serve`).
pub enum Listener {
    Tcp(std::net::TcpListener),
    /// With who may call through it.
    Unix(std::os::unix::net::UnixListener, Allow),
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
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
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
    let live = match listener {
        Listener::Tcp(l) => TcpListener::from_std(l).map(Live::Tcp),
        Listener::Unix(l, allow) => UnixListener::from_std(l).map(|l| Live::Unix(l, allow)),
    };
    let listener = match live {
        Ok(live) => live,
        Err(e) => {
            tracing::error!(error = %e, "egress proxy: cannot use a listener");
            return;
        }
    };
    let draining = CancellationToken::new();
    let refuse = |(stream, _): (Accepted, Caller)| {
        let _ = stream.try_write(OVER_CAPACITY);
        proxy.metrics.proxied("", 503, Duration::ZERO);
    };
    let conns = conn::serve(
        listener,
        limits.max_connections,
        WhenFull::Refuse(refuse),
        grace,
        draining.clone(),
        shutdown,
        |(stream, caller)| {
            let (proxy, draining) = (proxy.clone(), draining.clone());
            async move {
                match stream {
                    Accepted::Tcp(s) => connection(s, caller, proxy, draining, limits).await,
                    Accepted::Unix(s) => connection(s, caller, proxy, draining, limits).await,
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
            Ok((Accepted::Tcp(stream), Caller { tcp: true, allowed: true }))
        }
        Live::Unix(l, allow) => {
            let (stream, _) = l.accept().await?;
            let allowed = allow.permits(&stream);
            Ok((Accepted::Unix(stream), Caller { tcp: false, allowed }))
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

async fn connection<IO, S>(io: IO, caller: Caller, proxy: Arc<Proxy<S>>, draining: CancellationToken, limits: Limits)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Sources,
{
    let tunnels = Tunnels::default();
    let joined = tunnels.clone();
    let service = service_fn(move |req| {
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
