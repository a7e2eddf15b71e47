//! The proxy's way out: hyper-util's pooled client over `crate::http::connect`'s
//! connector (TCP, the outbound proxy variables with CONNECT tunnels, rustls with
//! `--ca-file` and the client certificate), with one timeout over the whole connect, TLS
//! handshake included. Failures are sorted into what the caller is told: a timeout (504),
//! or an upstream that cannot be reached or refused the handshake (502), in words.

use crate::http::client::HttpError;
use crate::http::connect::{self, Conn};
use crate::http::proxy::{Proxies, Route};
use crate::http::tls::{self, PemTls, TlsError, TlsSettings};
use http::header::HeaderValue;
use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

/// How long an idle pooled connection to an upstream is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream host.
const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// Why a connection to an upstream could not be made. Found again in the client's error
/// chain by [`classify`].
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(HttpError),
}

/// Makes TCP or TLS connections, directly or through the outbound proxy, within the
/// connect timeout; cheap to clone.
#[derive(Clone)]
pub struct Connector {
    inner: connect::Connector,
    timeout: Duration,
}

impl Connector {
    pub fn new(tls: TlsSettings, proxies: Proxies, timeout: Duration) -> Connector {
        let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Connector { inner: connect::Connector::with_alpn(tls, proxies, alpn), timeout }
    }

    /// The `Proxy-Authorization` a plain `http://` request to `uri` carries when it goes
    /// through an outbound proxy whose URL has credentials (the pooled client does not
    /// add it itself).
    pub fn proxy_authorization(&self, uri: &Uri) -> Option<HeaderValue> {
        if uri.scheme_str() != Some("http") {
            return None;
        }
        match self.inner.route(uri) {
            Route::Proxy { authorization, .. } => authorization,
            Route::Direct => None,
        }
    }
}

impl Connector {
    /// The same connector with `pem`'s trust and client certificate for TLS (the own of
    /// `connection`, which an upstream's refusal of the certificate names, docs/proxy.md);
    /// the rest of the trust from `--ca-file`.
    pub fn with_pem(&self, pem: &PemTls<'_>, connection: &str) -> Result<Connector, TlsError> {
        let config = tls::client_config_pem(self.inner.tls_settings(), pem)?;
        let mut inner = self.inner.with_tls_config(config);
        if pem.client.is_some() {
            inner = inner.presenting(&format!("ClientCertificate and ClientKey of connection {connection}"));
        }
        Ok(Connector { inner, timeout: self.timeout })
    }

    /// The same connector, HTTP/1.1 only (for upgrades).
    pub fn http1_only(&self) -> Connector {
        Connector { inner: self.inner.without_alpn(), timeout: self.timeout }
    }

    /// How a request to `uri` goes: HTTP/2 with prior knowledge when the caller spoke
    /// HTTP/2 (`caller_h2`) and the upstream is plain `http` reached directly (a forward
    /// proxy takes plain-http requests in HTTP/1.1); else HTTP/1.1 or what TLS negotiates.
    pub fn wire(&self, uri: &Uri, caller_h2: bool) -> Wire {
        let direct = matches!(self.inner.route(uri), Route::Direct);
        if caller_h2 && direct && uri.scheme_str() == Some("http") {
            Wire::H2c
        } else {
            Wire::Negotiated
        }
    }
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (inner, timeout) = (self.inner.clone(), self.timeout);
        Box::pin(async move {
            match tokio::time::timeout(timeout, inner.connect(uri)).await {
                Ok(connected) => connected.map_err(ConnectError::Failed),
                Err(_) => Err(ConnectError::Timeout(timeout)),
            }
        })
    }
}

/// Largest answer head read from an upstream (status line and header fields); a larger
/// one is a 502 naming this limit.
pub const MAX_ANSWER_HEAD: usize = 64 * 1024;
/// Most header fields read in one answer head (hyper's default of 100 is too few for
/// some services' answers).
const MAX_ANSWER_FIELDS: usize = 256;

/// How requests reach an upstream, each with a pool of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// HTTP/1.1, or over TLS whatever ALPN chose (`h2` or `http/1.1`).
    Negotiated,
    /// HTTP/2 with prior knowledge over plain TCP (h2c): for a caller that spoke HTTP/2
    /// (gRPC) to a plain-`http` upstream.
    H2c,
    /// HTTP/1.1 whatever TLS could negotiate: an upgrade (WebSocket) handshake.
    Http1,
}

/// The clients of one [`Wire`]: the pool, and one that makes a new connection for every
/// request and keeps none (for the one resend after a keep-alive race, which must not
/// meet another stale pooled connection).
pub struct Pools<B> {
    pub pooled: Client<Connector, B>,
    pub fresh: Client<Connector, B>,
}

impl<B> Pools<B>
where
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(connector: &Connector, wire: Wire) -> Pools<B> {
        let mut pooled = builder(wire);
        pooled.pool_idle_timeout(POOL_IDLE).pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST);
        let mut fresh = builder(wire);
        fresh.pool_max_idle_per_host(0);
        Pools { pooled: pooled.build(connector.clone()), fresh: fresh.build(connector.clone()) }
    }
}

/// The pools of every [`Wire`] over one connector: the proxy's (`--ca-file`,
/// `--client-cert`), or one connection's with its own certificates.
pub struct Clients<B> {
    negotiated: Pools<B>,
    h2c: Pools<B>,
    http1: Pools<B>,
}

impl<B> Clients<B>
where
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(connector: &Connector) -> Clients<B> {
        Clients {
            negotiated: Pools::new(connector, Wire::Negotiated),
            h2c: Pools::new(connector, Wire::H2c),
            http1: Pools::new(&connector.http1_only(), Wire::Http1),
        }
    }

    /// The pools of `wire`.
    pub fn of(&self, wire: Wire) -> &Pools<B> {
        match wire {
            Wire::Negotiated => &self.negotiated,
            Wire::H2c => &self.h2c,
            Wire::Http1 => &self.http1,
        }
    }
}

fn builder(wire: Wire) -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http1_max_buf_size(MAX_ANSWER_HEAD)
        .http1_max_headers(MAX_ANSWER_FIELDS)
        .http2_max_header_list_size(MAX_ANSWER_HEAD as u32)
        .http2_only(wire == Wire::H2c);
    builder
}

/// Whether `err` says the connection ended before any byte of the answer arrived: the
/// upstream closed it (hyper's "connection closed before message completed"), reset it,
/// or the request could not be written. On a reused connection that is a keep-alive
/// race (the upstream closed it while idle), not an answer.
pub fn nothing_arrived(err: &hyper_util::client::legacy::Error) -> bool {
    if err.is_connect() {
        return false;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(c) = cause {
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
            return matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof);
        }
        cause = c.source();
    }
    false
}

/// Whether `err` is an answer head over [`MAX_ANSWER_HEAD`] (or over its field count).
pub fn head_too_large(err: &hyper_util::client::legacy::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(c) = cause {
        if c.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_parse_too_large) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The refusal of connd's client certificate in `err`'s chain, at the handshake, in
/// words that name where to fix it.
pub fn certificate_refused(err: &hyper_util::client::legacy::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(c) = cause {
        if let Some(ConnectError::Failed(HttpError::TlsFault(fault))) = c.downcast_ref::<ConnectError>() {
            return fault.own_settings.then(|| fault.message.clone());
        }
        cause = c.source();
    }
    None
}

/// The same after the handshake (TLS 1.3 refuses a client certificate at the first
/// read), from the exchange's connection (`captured`): an HTTP/2 stream on it reads
/// only "connection closed".
pub fn certificate_refused_on(captured: &hyper_util::client::legacy::connect::CaptureConnection) -> Option<String> {
    let connected = captured.connection_metadata();
    let mut extensions = http::Extensions::new();
    connected.as_ref()?.get_extras(&mut extensions);
    let fault = extensions.get::<connect::Refused>()?.fault()?;
    fault.own_settings.then(|| fault.message.clone())
}

/// What went wrong with an upstream exchange, as the caller is told.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Connect (or TLS handshake) timeout: 504.
    ConnectTimeout,
    /// Refused, reset, unresolvable, TLS refused, a proxy that would not tunnel: 502.
    Unreachable,
    /// The exchange broke after the connection was made: 502.
    Broken,
}

/// Sorts a client error by its cause chain, and says it in words (never a header value:
/// the chain holds connect and protocol errors only).
pub fn classify(err: &hyper_util::client::legacy::Error) -> (Failure, String) {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(c) = cause {
        if let Some(ce) = c.downcast_ref::<ConnectError>() {
            let failure = match ce {
                ConnectError::Timeout(_) => Failure::ConnectTimeout,
                ConnectError::Failed(_) => Failure::Unreachable,
            };
            return (failure, ce.to_string());
        }
        cause = c.source();
    }
    let text = match std::error::Error::source(err) {
        Some(source) => crate::error::chain(source),
        None => err.to_string(),
    };
    if err.is_connect() {
        (Failure::Unreachable, format!("cannot connect: {text}"))
    } else {
        (Failure::Broken, text)
    }
}
