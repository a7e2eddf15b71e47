//! The proxy's way out: hyper-util's pooled client over a connector that speaks TCP or
//! TLS (rustls, configured by `crate::http::tls` from `--ca-file` and the client
//! certificate flags) and bounds the connect, the TLS handshake included, by one
//! timeout. Failures are sorted into what the caller is told: a timeout (504), a
//! certificate the trust store refuses, or an unreachable upstream (502).
//!
//! Not here yet: the outbound proxy variables of SPEC §3 (`HTTPS_PROXY`, `NO_PROXY`);
//! upstreams are connected directly.

use crate::http::tls::{self, TlsError, TlsSettings};
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long an idle pooled connection to an upstream is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream host.
const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// A connection to an upstream: plain TCP (`http://`, loopback or `--allow-insecure-http`)
/// or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Why a connection to an upstream could not be made. Found again in the client's error
/// chain by [`classify`].
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// The cause chain in words (`tcp connect error: Connection refused (os error 111)`).
    #[error("cannot connect: {0}")]
    Tcp(String),
    #[error("the upstream's certificate is not trusted ({0}): pass --ca-file with the CA that signed it")]
    Untrusted(rustls::Error),
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    #[error("{0}")]
    Tls(Arc<TlsError>),
    #[error("the URL has no host")]
    NoHost,
}

/// An error and its causes, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Makes TCP or TLS connections for the pooled client.
#[derive(Clone)]
pub struct Connector {
    tcp: HttpConnector,
    /// Built once at startup; an error is kept and reported per https request (a plain
    /// http setup with an unusable CA file still works).
    tls: Result<tokio_rustls::TlsConnector, Arc<TlsError>>,
    connect_timeout: Duration,
}

impl Connector {
    pub fn new(tls_settings: &TlsSettings, connect_timeout: Duration) -> Connector {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(60)));
        let tls = tls::client_config(tls_settings).map(tokio_rustls::TlsConnector::from).map_err(Arc::new);
        Connector { tcp, tls, connect_timeout }
    }

    /// The TLS setup's error, if the TLS files given cannot be used.
    pub fn tls_error(&self) -> Option<&TlsError> {
        self.tls.as_ref().err().map(|e| e.as_ref())
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.tcp.poll_ready(cx).map_err(|e| ConnectError::Tcp(chain(&e)))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned());
        let tcp = self.tcp.call(uri);
        let (tls, timeout) = (self.tls.clone(), self.connect_timeout);
        Box::pin(async move {
            let connect = async move {
                let host = host.ok_or(ConnectError::NoHost)?;
                let stream = tcp.await.map_err(|e| ConnectError::Tcp(chain(&e)))?.into_inner();
                if !https {
                    return Ok(TokioIo::new(Stream::Plain(stream)));
                }
                let tls = tls.map_err(ConnectError::Tls)?;
                let name = rustls::pki_types::ServerName::try_from(host).map_err(|_| ConnectError::NoHost)?;
                let stream = tls.connect(name, stream).await.map_err(|e| {
                    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                        Some(rustls::Error::InvalidCertificate(c)) => {
                            ConnectError::Untrusted(rustls::Error::InvalidCertificate(c.clone()))
                        }
                        _ => ConnectError::Handshake(e),
                    }
                })?;
                Ok(TokioIo::new(Stream::Tls(Box::new(stream))))
            };
            tokio::time::timeout(timeout, connect).await.unwrap_or(Err(ConnectError::Timeout(timeout)))
        })
    }
}

/// The pooled client, generic over the request body.
pub fn client<B>(connector: Connector) -> Client<Connector, B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// What went wrong with an upstream exchange, as the caller is told.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Connect (or TLS handshake) timeout: 504.
    ConnectTimeout,
    /// Refused, reset, unresolvable, TLS refused: 502.
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
                _ => Failure::Unreachable,
            };
            return (failure, ce.to_string());
        }
        cause = c.source();
    }
    let text = match std::error::Error::source(err) {
        Some(source) => chain(source),
        None => err.to_string(),
    };
    if err.is_connect() {
        (Failure::Unreachable, format!("cannot connect: {text}"))
    } else {
        (Failure::Broken, format!("the exchange failed: {text}"))
    }
}
