//! The outbound sources, composed: the control plane (`controlplane`, when
//! `--control-plane` is set) for `remote: true` parameters, then the token endpoint
//! (`token_endpoint`, always available: a client's credentials may be local values) for
//! `security: oauth2` connections, its client credentials resolved with the control
//! plane's answer of the same round. Both share one HTTP client (TLS, proxy variables).
//!
//! Boundary: builds the backends from settings and says in which order a round asks
//! them; each backend does its own fetching. A new outbound backend is a field here and
//! a step in [`Sources::fetch`]; the values it brings are a [`Source`] variant, whose
//! exhaustive matches name the other places.
//!
//! [`Source`]: crate::config::model::Source

use crate::http::client::HttpClient;
use crate::http::deadline::deadline_after;
use crate::http::proxy::Proxies;
use crate::http::tls::TlsSettings;
use crate::http::url::check_base_url;
use crate::metrics::Metrics;
use crate::resolve::Plan;
use crate::retry::Until;
use crate::secret::Secret;
use crate::source::controlplane::ControlPlane;
use crate::source::oauth::TokenCache;
use crate::source::token_endpoint::TokenEndpoint;
use crate::source::values::Fetched;
use crate::source::{FetchError, SetupError, SourceError, Sources, Token, Tokens};
use anyhow::Context;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Where the outbound sources are and how to reach them (`cli::OutboundArgs`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL of the control plane; `None` when no parameter is `remote: true`.
    pub control_plane: Option<String>,
    /// File holding the control plane's bearer credential, re-read when it changes.
    pub token_file: Option<PathBuf>,
    /// PEM CA certificates trusted for HTTPS instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and its key, for mTLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Plain http:// to hosts other than loopback.
    pub allow_insecure_http: bool,
    /// How long one-shot modes keep retrying an unavailable peer.
    pub startup_timeout: Duration,
    /// Ignore the proxy variables (`--no-proxy-env`): every request goes direct.
    pub no_proxy_env: bool,
}

/// The control plane and the token endpoint, shared by every caller of one process.
pub struct Outbound {
    /// `None` without `--control-plane`: no parameter may then be `remote: true`.
    control_plane: Option<ControlPlane>,
    token_endpoint: TokenEndpoint,
    /// The limit of one call, its retries included when it retries itself.
    startup_timeout: Duration,
}

impl Outbound {
    /// Builds the sources from settings; reads the TLS files when a control plane uses
    /// https. `until` says who retries a transient failure ([`Until::Cancelled`] in
    /// `serve` and `run`, whose tokens are then renewed in the background;
    /// [`Until::Deadline`] in `env` and `exec`, each call retrying until
    /// `--startup-timeout`). Every control-plane and token-endpoint call is counted into
    /// `metrics`.
    pub fn new(args: &Settings, until: Until, metrics: Arc<Metrics>) -> Result<Outbound, SetupError> {
        let proxies =
            if args.no_proxy_env { Proxies::none() } else { Proxies::from_env().map_err(SetupError::Proxy)? };
        let tls = TlsSettings {
            ca_file: args.ca_file.clone(),
            client_cert: args.client_cert.clone(),
            client_key: args.client_key.clone(),
        };
        let http = Arc::new(HttpClient::new(tls, proxies));
        let control_plane = match &args.control_plane {
            Some(url) => {
                let uri = check_base_url(url, args.allow_insecure_http).map_err(SetupError::Url)?;
                Some(ControlPlane::new(&uri, args.token_file.clone(), http.clone(), metrics.clone(), until))
            }
            None => None,
        };
        // TLS files given are read now, whoever uses them (the control plane or a token
        // endpoint seen only later): a bad one is a config error at startup, reported once.
        let https_control_plane = args.control_plane.as_deref().is_some_and(|u| u.starts_with("https:"));
        if https_control_plane || args.ca_file.is_some() || args.client_cert.is_some() || args.client_key.is_some() {
            http.prepare_tls().map_err(SetupError::Tls)?;
        }
        let cache = TokenCache::new(http, until, metrics);
        Ok(Outbound {
            control_plane,
            token_endpoint: TokenEndpoint::new(cache, args.allow_insecure_http),
            startup_timeout: args.startup_timeout,
        })
    }

    /// The token cache, for its owner's shutdown and for tests.
    pub fn token_cache(&self) -> &TokenCache {
        self.token_endpoint.cache()
    }

    /// The control plane's parameters for `plan`, by connection id: none when it needs
    /// none (or no control plane is set, which planning has refused already).
    async fn control_plane_params(
        &self,
        plan: &Plan,
        deadline: Instant,
    ) -> Result<HashMap<String, HashMap<String, Secret>>, FetchError> {
        match &self.control_plane {
            Some(cp) if plan.needs_control_plane() => Ok(cp.fetch(plan, deadline).await?),
            Some(_) | None => Ok(HashMap::new()),
        }
    }
}

impl Sources for Outbound {
    async fn fetch(&self, plan: &Plan, tokens: Tokens) -> Result<Fetched, FetchError> {
        let deadline = deadline_after(self.startup_timeout);
        let mut fetched = Fetched { params: self.control_plane_params(plan, deadline).await?, tokens: HashMap::new() };
        fetched.tokens = self.token_endpoint.fetch(plan, tokens, &fetched, deadline).await?;
        Ok(fetched)
    }

    async fn token(&self, plan: &Plan, conn: usize, params: &BTreeMap<String, Secret>) -> Result<Token, SourceError> {
        let p = &plan.connections[conn];
        if !p.connection.is_oauth() {
            return Err(SourceError::NotOAuth { connection: p.name.clone() });
        }
        let deadline = deadline_after(self.startup_timeout);
        let token = self.token_endpoint.token(p, params, deadline).await.map_err(anyhow::Error::from)?;
        Ok(Token {
            access_token: token.access_token.clone(),
            token_type: token.token_type.clone(),
            expires_in: token.expires_at.saturating_duration_since(Instant::now()),
        })
    }

    async fn invalidate_token(&self, plan: &Plan, conn: usize, params: &BTreeMap<String, Secret>, token: &Secret) {
        let p = &plan.connections[conn];
        if p.connection.is_oauth() {
            self.token_endpoint.invalidate(p, params, token);
        }
    }

    fn renewals(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.token_cache().renewals())
    }
}

/// One resolution on a private single-threaded runtime, for `env` and `exec`: only the
/// mapped tokens, no background renewal, and no one to report metrics to.
pub fn fetch_once(args: &Settings, plan: &Plan) -> anyhow::Result<Fetched> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the runtime")?;
    runtime.block_on(async {
        let outbound = Outbound::new(args, Until::Deadline, Arc::default())?;
        Ok(outbound.fetch(plan, Tokens::Mapped).await?)
    })
}
