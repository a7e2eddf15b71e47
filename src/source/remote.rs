//! The real [`Sources`]: the control plane (when `--control-plane` is set) for
//! `remote: true` parameters, and the OAuth token cache for `security: oauth2`
//! connections (always available: their client credentials may be local values). It maps
//! connections to OAuth applications; the fetching itself is in `controlplane` and `oauth`,
//! reading the client credentials in `credentials`.

use crate::http::client::HttpClient;
use crate::http::deadline::deadline_after;
use crate::http::proxy::Proxies;
use crate::http::tls::TlsSettings;
use crate::http::url::check_base_url;
use crate::metrics::Metrics;
use crate::resolve::{Plan, PlannedConnection};
use crate::secret::Secret;
use crate::source::controlplane::{ControlPlane, Retries};
use crate::source::credentials;
use crate::source::oauth::{Credentials, TokenCache};
use crate::source::values::Fetched;
use crate::source::{FetchError, SetupError, SourceError, Sources, Token, Tokens};
use anyhow::Context;
use futures_util::future::join_all;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// Where remote values and tokens come from, and how to reach them.
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

/// Control plane plus token cache, shared by every caller of one process.
pub struct Remote {
    control_plane: Option<ControlPlane>,
    tokens: TokenCache,
    /// The limit of one call, its retries included when it retries itself.
    startup_timeout: Duration,
    allow_insecure_http: bool,
}

impl Remote {
    /// Builds the sources from settings; reads the TLS files when a control plane uses
    /// https. `long_running` (serve, run): tokens are renewed in the background, and a
    /// transient failure fails the call at once, for the reloader to retry (see
    /// [`Retries`]); otherwise (env, exec) each call retries until `--startup-timeout`.
    /// Every control-plane and token-endpoint call is counted into `metrics`.
    pub fn new(args: &Settings, long_running: bool, metrics: Arc<Metrics>) -> Result<Remote, SetupError> {
        let retries = if long_running { Retries::Caller } else { Retries::UntilDeadline };
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
                Some(ControlPlane::new(&uri, args.token_file.clone(), http.clone(), metrics.clone(), retries))
            }
            None => None,
        };
        // TLS files given are read now, whoever uses them (the control plane or a token
        // endpoint seen only later): a bad one is a config error at startup, reported once.
        let https_control_plane = args.control_plane.as_deref().is_some_and(|u| u.starts_with("https:"));
        if https_control_plane || args.ca_file.is_some() || args.client_cert.is_some() || args.client_key.is_some() {
            http.prepare_tls().map_err(SetupError::Tls)?;
        }
        Ok(Remote {
            control_plane,
            tokens: TokenCache::new(http, long_running, metrics),
            startup_timeout: args.startup_timeout,
            allow_insecure_http: args.allow_insecure_http,
        })
    }

    pub fn token_cache(&self) -> &TokenCache {
        &self.tokens
    }

    async fn remote_params(
        &self,
        plan: &Plan,
        deadline: Instant,
    ) -> Result<HashMap<String, HashMap<String, Secret>>, FetchError> {
        match &self.control_plane {
            Some(cp) if plan.needs_remote() => Ok(cp.fetch(plan, deadline).await?),
            _ => Ok(HashMap::new()),
        }
    }

    async fn token_for(
        &self,
        p: &PlannedConnection,
        params: &HashMap<String, HashMap<String, Secret>>,
        deadline: Instant,
    ) -> Result<Arc<crate::source::oauth::CachedToken>, FetchError> {
        let creds = credentials::read_async(p, params.get(&p.connection.id), self.allow_insecure_http).await?;
        self.token_with(p, creds, deadline).await
    }

    async fn token_with(
        &self,
        p: &PlannedConnection,
        creds: Credentials,
        deadline: Instant,
    ) -> Result<Arc<crate::source::oauth::CachedToken>, FetchError> {
        let span = tracing::info_span!("connection", connection = %p.name);
        let token = self.tokens.get(creds, deadline).instrument(span).await;
        token.map_err(|source| FetchError::Token { connection: p.name.clone(), source })
    }
}

impl Sources for Remote {
    async fn fetch(&self, plan: &Plan, tokens: Tokens) -> Result<Fetched, FetchError> {
        let deadline = deadline_after(self.startup_timeout);
        let params = self.remote_params(plan, deadline).await?;
        let mapped: Vec<usize> = plan.token_vars().collect();
        let wanted: Vec<usize> = match tokens {
            Tokens::Mapped => mapped.clone(),
            Tokens::All => (0..plan.connections.len()).filter(|&i| plan.connections[i].connection.is_oauth()).collect(),
        };
        let mut fetched = Fetched { params, tokens: HashMap::new() };
        // The plan's applications: those kept in the token cache once this round succeeds.
        let mut creds = Vec::with_capacity(wanted.len());
        let mut apps = HashSet::new();
        for &i in &wanted {
            let p = &plan.connections[i];
            let c = credentials::read_async(p, fetched.params.get(&p.connection.id), self.allow_insecure_http).await;
            if let Ok(c) = &c {
                apps.insert(c.key.clone());
            }
            creds.push(c);
        }
        // Each application is requested once however many connections share it (the
        // cache's single flight), and distinct applications in parallel.
        let results = join_all(
            wanted
                .iter()
                .zip(creds)
                .map(|(&i, c)| async move { self.token_with(&plan.connections[i], c?, deadline).await }),
        )
        .await;
        for (&i, result) in wanted.iter().zip(results) {
            let p = &plan.connections[i];
            match result {
                Ok(token) => {
                    fetched.tokens.insert(p.connection.id.clone(), token.access_token.clone());
                }
                Err(e) if mapped.contains(&i) => return Err(e),
                // Unmapped tokens are served live by the local API, which reports the error there.
                Err(e) => {
                    let error = anyhow::Error::from(e);
                    tracing::warn!(connection = %p.name, error = %format_args!("{error:#}"), "no token");
                }
            }
        }
        // Only after a good round: a failing one keeps what was (docs/api.md: the last good values stay).
        if tokens == Tokens::All {
            self.tokens.retain(&apps);
        }
        Ok(fetched)
    }

    async fn token(&self, plan: &Plan, conn: usize) -> Result<Token, SourceError> {
        let p = &plan.connections[conn];
        if !p.connection.is_oauth() {
            return Err(SourceError::NotOAuth { connection: p.name.clone() });
        }
        let deadline = deadline_after(self.startup_timeout);
        let mut params = HashMap::new();
        if let (Some(cp), true) = (&self.control_plane, p.connection.needs_remote()) {
            let cached = match cp.cached(&p.connection.id) {
                Some(values) => values,
                None => {
                    let mut all = cp.fetch(plan, deadline).await.map_err(anyhow::Error::new)?;
                    all.remove(&p.connection.id).unwrap_or_default()
                }
            };
            params.insert(p.connection.id.clone(), cached);
        }
        let token = self.token_for(p, &params, deadline).await.map_err(anyhow::Error::from)?;
        Ok(Token {
            access_token: token.access_token.clone(),
            token_type: token.token_type.clone(),
            expires_in: token.expires_at.saturating_duration_since(Instant::now()),
        })
    }

    async fn invalidate_token(&self, plan: &Plan, conn: usize, token: &Secret) {
        let p = &plan.connections[conn];
        if !p.connection.is_oauth() {
            return;
        }
        let mut params = HashMap::new();
        if let Some(values) = self.control_plane.as_ref().and_then(|cp| cp.cached(&p.connection.id)) {
            params.insert(p.connection.id.clone(), values);
        }
        if let Ok(creds) = credentials::read_async(p, params.get(&p.connection.id), self.allow_insecure_http).await {
            if self.tokens.invalidate(&creds.key, token) {
                tracing::debug!(connection = %p.name, "an upstream refused the cached token: dropped it");
            }
        }
    }

    fn renewals(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.tokens.renewals())
    }
}

/// One resolution on a private single-threaded runtime, for `env` and `exec`: only the
/// mapped tokens, no background renewal, and no one to report metrics to.
pub fn fetch_once(args: &Settings, plan: &Plan) -> anyhow::Result<Fetched> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the runtime")?;
    runtime.block_on(async {
        let remote = Remote::new(args, false, Arc::default())?;
        Ok(remote.fetch(plan, Tokens::Mapped).await?)
    })
}
