//! Where values come from, one backend per module, behind the [`Sources`] seam that
//! every mode sees:
//! - local values (`value:`, `file:`): read by `values`, which also materialises the rest;
//! - the control plane (`remote: true`): `controlplane`;
//! - the token endpoint (`AccessToken` of `security: oauth2`): `token_endpoint` over the
//!   token cache `oauth`, its client credentials read by `credentials` from the
//!   connection's resolved parameters, whatever their source;
//! - the last known good of both, on disk (`--cache-dir`, docs/cache.md): `cache`, which
//!   `outbound` writes after every fetch that reached them and starts on when they are
//!   unavailable at start.
//!
//! [`Local`] is the embedded default (no outbound source); `outbound::Outbound` composes
//! the control plane and the token endpoint. Both implement [`Sources`], so `exec`, `run`
//! and `serve` resolve the same way whichever is configured. Which backend serves a
//! parameter is its [`Source`] kind, matched exhaustively wherever it matters; `once` is
//! the one resolution (plan → fetch → materialise).
//!
//! Boundary: below the reloader and the modes, above `resolve`; a failed fetch is a
//! [`FetchError`], whose class says whether it is worth retrying; unusable settings are a
//! [`SetupError`].
//!
//! [`Source`]: crate::config::model::Source

pub mod cache;
pub mod client_auth;

pub mod controlplane;
pub mod credentials;
pub mod oauth;
pub mod once;
pub mod outbound;
pub mod token_endpoint;
pub mod values;

use crate::config::model::ACCESS_TOKEN;
use crate::error::{Class, Classify};
use crate::http::client::HttpError;
use crate::http::proxy::ProxyError;
use crate::http::url::UrlError;
use crate::resolve::Plan;
use crate::secret::Secret;
use crate::source::controlplane::ControlPlaneError;
use crate::source::oauth::OAuthError;
use crate::source::values::{Fetched, ValueError};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// An OAuth access token as the local API hands it out.
#[derive(Debug, Clone)]
pub struct Token {
    pub access_token: Secret,
    pub token_type: String,
    /// Seconds left before it expires, counted from when it was handed out.
    pub expires_in: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("connection {connection:?} is not under OAuth (security: oauth2), so it has no token")]
    NotOAuth { connection: String },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Why a fetch failed. Each variant prints as its cause does (a token's names its
/// connection first), so `{:#}` of the chain reads as the user needs it.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
    #[error("no {ACCESS_TOKEN} for connection {connection:?}")]
    Token {
        connection: String,
        #[source]
        source: OAuthError,
    },
    /// The sources' settings, or a connection's OAuth client settings.
    #[error(transparent)]
    Setup(#[from] SetupError),
}

impl FetchError {
    /// The control plane's `Retry-After` with a transient failure: a floor for the
    /// caller's next attempt (docs/control-plane.md); see [`ControlPlaneError::retry_after`].
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            FetchError::ControlPlane(e) => e.retry_after(),
            FetchError::Token { .. } | FetchError::Setup(_) => None,
        }
    }
}

impl Classify for FetchError {
    fn class(&self) -> Class {
        match self {
            FetchError::ControlPlane(e) => e.class(),
            FetchError::Token { source, .. } => source.class(),
            FetchError::Setup(e) => e.class(),
        }
    }
}

/// Unusable settings: the sources' own (`outbound::Settings`: the control-plane URL, the
/// TLS files, the proxy variables) or a connection's OAuth client (`credentials`). A
/// config error, or a usage error when `--control-plane` is not a base URL.
///
/// Messages leave their cause to the `#[source]` chain, which the binary prints with
/// `{:#}`: repeating it in the message would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("--control-plane")]
    Url(#[source] UrlError),
    #[error(transparent)]
    Tls(HttpError),
    #[error(transparent)]
    Proxy(ProxyError),
    #[error("connection {connection:?}: {key}")]
    TokenUrl {
        connection: String,
        key: &'static str,
        #[source]
        source: UrlError,
    },
    #[error("connection {connection:?} has no value for {key}, which its OAuth client needs")]
    Credential { connection: String, key: &'static str },
    /// A client parameter that cannot be resolved (an unreadable `file:`).
    #[error(transparent)]
    Value(#[from] ValueError),
    /// A key or certificate its client authentication cannot use (docs/oauth.md).
    #[error("connection {connection:?}: {source}")]
    ClientAuth {
        connection: String,
        #[source]
        source: client_auth::ClientAuthError,
    },
    /// `--cache-key-file` cannot be used (docs/cache.md).
    #[error(transparent)]
    CacheKey(cache::KeyError),
}

impl Classify for SetupError {
    fn class(&self) -> Class {
        match self {
            SetupError::Url(e) if e.is_usage() => Class::Usage,
            SetupError::Url(_)
            | SetupError::Tls(_)
            | SetupError::Proxy(_)
            | SetupError::TokenUrl { .. }
            | SetupError::Credential { .. } => Class::Config,
            SetupError::Value(e) => e.class(),
            SetupError::ClientAuth { source, .. } => source.class(),
            SetupError::CacheKey(e) => e.class(),
        }
    }
}

/// Which tokens a fetch obtains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    /// Only those some variable maps (`env`, `exec`, `run`: an environment cannot refresh).
    Mapped,
    /// Every OAuth connection's (`serve`: the local API offers them all).
    All,
}

/// The seam every mode resolves through: what a plan needs from outside the directory
/// (control-plane parameters, tokens), fetched by whichever backends the process has
/// ([`Local`]: none; `outbound::Outbound`: the control plane and the token endpoint).
pub trait Sources: Send + Sync + 'static {
    /// Control-plane parameters and tokens for `plan`. Long-running callers call it again on
    /// every refresh; implementations keep what they need (ETags, cached tokens).
    fn fetch(&self, plan: &Plan, tokens: Tokens) -> impl Future<Output = Result<Fetched, FetchError>> + Send;

    /// A token for `plan.connections[conn]`, fresh from the cache. `params` are that
    /// connection's resolved parameters (key → value, as the snapshot holds them), where
    /// its client credentials are read, whatever their source.
    fn token(
        &self,
        plan: &Plan,
        conn: usize,
        params: &BTreeMap<String, Secret>,
    ) -> impl Future<Output = Result<Token, SourceError>> + Send;

    /// Forgets `token`, handed out for `plan.connections[conn]` (resolved parameters
    /// `params`), if the cache still holds it, so that the next [`Sources::token`] asks
    /// the token endpoint afresh: an upstream refused it (a 401 to the egress proxy).
    /// Sources without a cache ignore it.
    fn invalidate_token(
        &self,
        plan: &Plan,
        conn: usize,
        params: &BTreeMap<String, Secret>,
        token: &Secret,
    ) -> impl Future<Output = ()> + Send {
        let _ = (plan, conn, params, token);
        async {}
    }

    /// Whether the last [`Sources::fetch`] that succeeded gave the on-disk cache's values
    /// (docs/cache.md) because the sources were unavailable, and why: the reloader
    /// then shows them stale and keeps asking. `None` for fresh values.
    fn stale(&self) -> Option<Stale> {
        None
    }

    /// Changes whenever a new token is obtained (renewals included), for what keeps a
    /// copy of tokens (rendered files, docs/files.md); `None` for sources without tokens.
    fn renewals(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// Values started on from the on-disk cache (docs/cache.md) while the sources fail.
#[derive(Debug, Clone)]
pub struct Stale {
    /// When the cached values were last confirmed by the control plane.
    pub written_at: std::time::SystemTime,
    /// The failure that made connd fall back on them (its whole chain).
    pub cause: String,
    pub class: Class,
}

/// No outbound source (no control plane, no token endpoint): every value is local.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

impl Sources for Local {
    async fn fetch(&self, _plan: &Plan, _tokens: Tokens) -> Result<Fetched, FetchError> {
        Ok(Fetched::default())
    }

    async fn token(&self, plan: &Plan, conn: usize, _params: &BTreeMap<String, Secret>) -> Result<Token, SourceError> {
        Err(SourceError::NotOAuth { connection: plan.connections[conn].name.clone() })
    }
}

impl crate::retry::Report for FetchError {
    fn report(&self) -> String {
        crate::error::chain(self)
    }
}
