//! The proxy's way out: hyper-util's pooled client over `crate::http::connect`'s
//! connector (TCP, the outbound proxy variables with CONNECT tunnels, rustls with
//! `--ca-file` and the client certificate), with one timeout over the whole connect, TLS
//! handshake included. Failures are sorted into what the caller is told: a timeout (504),
//! or an upstream that cannot be reached or refused the handshake (502), in words.

use crate::http::client::HttpError;
use crate::http::connect::{self, Conn};
use crate::http::proxy::{Proxies, Route};
use crate::http::tls::TlsSettings;
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
        Connector { inner: connect::Connector::new(tls, proxies), timeout }
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

/// A client that makes a new connection for every request and keeps none: for the one
/// resend after a keep-alive race, which must not meet another stale pooled connection.
pub fn fresh_client<B>(connector: Connector) -> Client<Connector, B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).timer(TokioTimer::new()).build(connector)
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
