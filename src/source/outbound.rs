//! The outbound sources, composed: the control plane (`controlplane`, when
//! `--control-plane` is set) for `remote: true` parameters, then the token endpoint
//! (`token_endpoint`, always available: a client's credentials may be local values) for
//! `security: oauth2` connections, its client credentials resolved with the control
//! plane's answer of the same round. Both share one HTTP client (TLS, proxy variables).
//! With `--cache-dir`, every round that succeeds is kept on disk (`cache`), and a round
//! that fails transiently before any has succeeded starts on it (docs/cache.md): `env`,
//! `exec` and `render` after retrying until `--startup-timeout` (their values are never
//! replaced), `serve` and `run` at once (the reloader keeps asking, and replaces them).
//! A refusal never falls back.
//!
//! Boundary: builds the backends from settings and says in which order a round asks
//! them; each backend does its own fetching. A new outbound backend is a field here and
//! a step in [`Sources::fetch`]; the values it brings are a [`Source`] variant, whose
//! exhaustive matches name the other places.
//!
//! [`Source`]: crate::config::model::Source

use crate::error::Classify;
use crate::http::client::HttpClient;
use crate::http::deadline::deadline_after;
use crate::http::proxy::Proxies;
use crate::http::tls::TlsSettings;
use crate::http::url::check_base_url;
use crate::metrics::Metrics;
use crate::resolve::Plan;
use crate::retry::Until;
use crate::secret::Secret;
use crate::source::cache::{self, Cache};
use crate::source::controlplane::ControlPlane;
use crate::source::credentials;
use crate::source::oauth::TokenCache;
use crate::source::token_endpoint::TokenEndpoint;
use crate::source::values::Fetched;
use crate::source::{FetchError, SetupError, SourceError, Sources, Stale, Token, Tokens};
use anyhow::Context;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
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
    /// The outage cache (`--cache-dir`, docs/cache.md); `None`: none.
    pub cache: Option<cache::Settings>,
}

/// The control plane and the token endpoint, shared by every caller of one process.
pub struct Outbound {
    /// `None` without `--control-plane`: no parameter may then be `remote: true`.
    control_plane: Option<ControlPlane>,
    token_endpoint: TokenEndpoint,
    /// The limit of one call, its retries included when it retries itself.
    startup_timeout: Duration,
    /// The on-disk last known good; `None` without `--cache-dir` or when it cannot be written.
    cache: Option<Arc<Cache>>,
    /// Set once a fetch has given values (fresh or cached): only a start falls back.
    started: AtomicBool,
    /// While the values are the cache's: why, and the cached tokens the local API may
    /// hand out until they expire.
    stale: Mutex<Option<(Stale, HashMap<String, cache::CachedToken>)>>,
    metrics: Arc<Metrics>,
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
        let disk = match &args.cache {
            Some(settings) => Cache::open(settings, metrics.clone()).map_err(SetupError::CacheKey)?.map(Arc::new),
            None => None,
        };
        let cache = TokenCache::new(http, until, metrics.clone());
        Ok(Outbound {
            control_plane,
            token_endpoint: TokenEndpoint::new(cache, args.allow_insecure_http),
            startup_timeout: args.startup_timeout,
            cache: disk,
            started: AtomicBool::new(false),
            stale: Mutex::new(None),
            metrics,
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

    /// One round: the control plane, then the token endpoint.
    async fn fetch_live(&self, plan: &Plan, tokens: Tokens) -> Result<Fetched, FetchError> {
        let deadline = deadline_after(self.startup_timeout);
        let mut fetched = Fetched { params: self.control_plane_params(plan, deadline).await?, tokens: HashMap::new() };
        fetched.tokens = self.token_endpoint.fetch(plan, tokens, &fetched, deadline).await?;
        Ok(fetched)
    }

    /// Writes what a good round fetched to the on-disk cache, tokens with their expiry
    /// (asked of the token cache, which holds them now).
    async fn keep(&self, cache: &Arc<Cache>, plan: &Plan, fetched: &Fetched) {
        let mut tokens = HashMap::new();
        let deadline = deadline_after(self.startup_timeout);
        for p in plan.connections.iter().filter(|p| fetched.tokens.contains_key(&p.connection.id)) {
            let Ok(params) = credentials::resolve(p, Some(fetched)).await else { continue };
            let Ok(token) = self.token_endpoint.token(p, &params, deadline).await else { continue };
            let left = token.expires_at.saturating_duration_since(Instant::now());
            let t = cache::CachedToken {
                access_token: token.access_token.clone(),
                token_type: token.token_type.clone(),
                expires_at: SystemTime::now() + left,
            };
            tokens.insert(p.connection.id.clone(), t);
        }
        let entry = cache::Entry { written_at: SystemTime::now(), params: fetched.params.clone(), tokens };
        let (cache, bound) = (cache.clone(), cache::Bound::of(plan));
        // File writes and fsync off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || cache.store(&bound, &entry)).await;
    }

    /// After `error` at start: the cache's values for `plan` if it holds them all and
    /// is fit to start on. Never for a refusal or past the start.
    fn fall_back(&self, plan: &Plan, error: &FetchError) -> Option<Fetched> {
        let cache = self.cache.as_ref()?;
        if !error.class().is_transient() || self.started.load(Ordering::Relaxed) {
            return None;
        }
        let entry = cache.load(plan)?;
        if let Err(why) = entry.covers(plan) {
            tracing::warn!("the cache is not used: {why}");
            return None;
        }
        let cause = crate::error::chain(error);
        let peer = match error {
            FetchError::ControlPlane(_) => "the control plane",
            FetchError::Token { .. } => "a token endpoint",
            FetchError::Setup(_) => "a source",
        };
        tracing::warn!(
            age = %cache::words(entry.age()),
            error = %cause,
            "{peer} is unavailable: starting on the values cached {} ago, until it answers",
            cache::words(entry.age())
        );
        self.started.store(true, Ordering::Relaxed);
        self.metrics.cache_stale(Some(entry.written_at));
        let now = SystemTime::now();
        let tokens: HashMap<_, _> = entry.tokens.into_iter().filter(|(_, t)| t.expires_at > now).collect();
        let fetched = Fetched {
            params: entry.params,
            tokens: tokens.iter().map(|(id, t)| (id.clone(), t.access_token.clone())).collect(),
        };
        let stale = Stale { written_at: entry.written_at, cause, class: error.class() };
        *self.stale.lock() = Some((stale, tokens));
        Some(fetched)
    }

    /// While on the cache: its unexpired token for connection `id`.
    fn stale_token(&self, id: &str) -> Option<Token> {
        let stale = self.stale.lock();
        let token = stale.as_ref()?.1.get(id)?;
        let expires_in = token.expires_at.duration_since(SystemTime::now()).ok()?;
        Some(Token { access_token: token.access_token.clone(), token_type: token.token_type.clone(), expires_in })
    }
}

impl Sources for Outbound {
    async fn fetch(&self, plan: &Plan, tokens: Tokens) -> Result<Fetched, FetchError> {
        match self.fetch_live(plan, tokens).await {
            Ok(fetched) => {
                self.started.store(true, Ordering::Relaxed);
                if self.stale.lock().take().is_some() {
                    tracing::info!("the control plane answered: the cached values are replaced");
                    self.metrics.cache_stale(None);
                }
                if let (Some(cache), true) = (&self.cache, plan.needs_fetch()) {
                    self.keep(cache, plan, &fetched).await;
                }
                Ok(fetched)
            }
            Err(e) => self.fall_back(plan, &e).ok_or(e),
        }
    }

    fn stale(&self) -> Option<Stale> {
        self.stale.lock().as_ref().map(|(stale, _)| stale.clone())
    }

    async fn token(&self, plan: &Plan, conn: usize, params: &BTreeMap<String, Secret>) -> Result<Token, SourceError> {
        let p = &plan.connections[conn];
        if !p.connection.is_oauth() {
            return Err(SourceError::NotOAuth { connection: p.name.clone() });
        }
        let deadline = deadline_after(self.startup_timeout);
        let token = match self.token_endpoint.token(p, params, deadline).await {
            Ok(token) => token,
            Err(e) if e.class().is_transient() => match self.stale_token(&p.connection.id) {
                Some(token) => return Ok(token),
                None => return Err(anyhow::Error::from(e).into()),
            },
            Err(e) => return Err(anyhow::Error::from(e).into()),
        };
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
