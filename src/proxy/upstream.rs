//! The proxy's way out: its pools (`pool`) over `crate::http::connect`'s
//! connector (TCP, the outbound proxy variables with CONNECT tunnels, rustls with
//! `--ca-file` and the client certificate), with one timeout over the whole connect, TLS
//! handshake included. Failures are sorted into what the caller is told: a timeout (504),
//! or an upstream that cannot be reached or refused the handshake (502), in words.

use super::pool::{Pool, SendError};
use crate::http::client::HttpError;
use crate::http::connect::{self, Conn};
use crate::http::proxy::{Proxies, Route};
use crate::http::tls::{self, PemTls, TlsError, TlsSettings};
use http::header::HeaderValue;
use http::Uri;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

/// Why a connection to an upstream could not be made.
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
    /// through an outbound proxy whose URL has credentials (the pool does not
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
pub const MAX_ANSWER_FIELDS: usize = 256;

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

/// The pools of one [`Wire`]: the kept connections, and one that makes a new connection
/// for every request and keeps none (for the one resend after a keep-alive race, which
/// must not meet another stale kept connection).
pub struct Pools<B> {
    pub pooled: Pool<B>,
    pub fresh: Pool<B>,
}

impl<B> Pools<B>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(connector: &Connector, wire: Wire) -> Pools<B> {
        Pools { pooled: Pool::new(connector.clone(), wire, true), fresh: Pool::new(connector.clone(), wire, false) }
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
    B: hyper::body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
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

/// Whether `err` says the connection ended before any byte of the answer arrived: the
/// upstream closed it (hyper's "connection closed before message completed"), reset it,
/// or the request could not be written. On a reused connection that is a keep-alive
/// race (the upstream closed it while idle), not an answer.
pub fn nothing_arrived(err: &SendError) -> bool {
    let e = match err {
        SendError::Connect(_) | SendError::NoAuthority => return false,
        SendError::ClosedUnsent => return true,
        SendError::Exchange(e) | SendError::PriorKnowledge(e) => e,
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
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
pub fn head_too_large(err: &SendError) -> bool {
    matches!(err, SendError::Exchange(e) if e.is_parse_too_large())
}

/// The refusal of connd's client certificate, in words that name where to fix it: at the
/// handshake (in the connect error), or after it, from the TLS alert the exchange's
/// connection noted (TLS 1.3 refuses a client certificate at the first read, and an
/// HTTP/2 stream on it reads only "connection closed").
pub fn certificate_refused(failed: &super::pool::Failed) -> Option<String> {
    let fault = match &failed.error {
        SendError::Connect(ConnectError::Failed(HttpError::TlsFault(fault))) => Some(fault),
        SendError::Connect(_)
        | SendError::Exchange(_)
        | SendError::PriorKnowledge(_)
        | SendError::ClosedUnsent
        | SendError::NoAuthority => failed.refused.as_ref().and_then(connect::Refused::fault),
    }?;
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

/// Sorts a failed exchange, and says it in words (never a header value: the causes are
/// connect and protocol errors only).
pub fn classify(err: &SendError) -> (Failure, String) {
    match err {
        SendError::Connect(e @ ConnectError::Timeout(_)) => (Failure::ConnectTimeout, e.to_string()),
        SendError::Connect(e @ ConnectError::Failed(_)) => (Failure::Unreachable, e.to_string()),
        SendError::Exchange(e) => (Failure::Broken, crate::error::chain(e)),
        SendError::PriorKnowledge(e) => (
            Failure::Broken,
            format!(
                "{}; connd calls a plain http:// upstream over HTTP/2 with prior knowledge (h2c) when \
                 the caller speaks HTTP/2: if the upstream speaks HTTP/1.1 only, call connd over HTTP/1.1",
                crate::error::chain(e)
            ),
        ),
        SendError::ClosedUnsent | SendError::NoAuthority => (Failure::Broken, err.to_string()),
    }
}
