//! The one error of outbound HTTP, shared by the client and its connector: what failed
//! (the TLS files, the TCP connection, a proxy, the handshake, the deadline, the
//! exchange, the body cap), said in words, and its `error::Class`, which says whether a
//! retry may help.

use crate::error::{Class, Classify};
use crate::http::tls::TlsError;
use crate::http::tls_fault::TlsFault;
use std::sync::Arc;
use std::time::Duration;

/// Bodies larger than this are refused: parameters and tokens are small.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The TLS files (`--ca-file`, `--client-cert`, `--client-key`) are unusable.
    #[error("{0}")]
    Tls(Arc<TlsError>),
    /// No TCP connection to `to` (`host:port`, or "the proxy http://host:port").
    #[error("cannot connect to {to}: {cause}")]
    Connect { to: String, cause: String },
    /// The proxy would not (or could not) open the way; `permanent` when retrying cannot
    /// help (it wants other credentials).
    #[error("{message}")]
    Proxy { message: String, permanent: bool },
    /// rustls refused the handshake or the peer did: a certificate, a missing client
    /// certificate. The same handshake fails the same way again.
    #[error("{0}")]
    TlsFault(TlsFault),
    /// The connection broke during the handshake.
    #[error("TLS handshake with {host} failed: {cause}")]
    Handshake { host: String, cause: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the exchange failed: {0}")]
    Protocol(String),
    #[error("the response body is over {MAX_BODY_BYTES} bytes")]
    TooLarge,
}

/// The network or the server (worth retrying), unusable TLS settings (a setup error), or
/// a peer connd cannot use.
impl Classify for HttpError {
    fn class(&self) -> Class {
        match self {
            HttpError::Connect { .. }
            | HttpError::Handshake { .. }
            | HttpError::Timeout(_)
            | HttpError::Protocol(_)
            | HttpError::Proxy { permanent: false, .. } => Class::Unavailable,
            // connd's own settings: the TLS files, a client certificate the server
            // requires or refuses.
            HttpError::Tls(_) => Class::Config,
            HttpError::TlsFault(fault) if fault.own_settings => Class::Config,
            HttpError::TlsFault(_) | HttpError::Proxy { permanent: true, .. } | HttpError::TooLarge => Class::BadAnswer,
        }
    }
}
