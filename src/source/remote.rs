//! The real [`Sources`]: the control plane (when `--control-plane` is set) for
//! `remote: true` parameters, and the OAuth token cache for `security: oauth2`
//! connections (always available: their client credentials may be local values). It maps
//! connections to OAuth applications; the fetching itself is in `controlplane` and `oauth`.

use crate::config::model::Source;
use crate::error::{Class, Classify};
use crate::http::client::{HttpClient, HttpError};
use crate::http::deadline::deadline_after;
use crate::http::proxy::{Proxies, ProxyError};
use crate::http::tls::TlsSettings;
use crate::http::url::{check_base_url, check_url, UrlError};
use crate::metrics::Metrics;
use crate::resolve::{Plan, PlannedConnection};
use crate::secret::Secret;
use crate::source::controlplane::{ControlPlane, Retries};
use crate::source::oauth::{AppKey, Credentials, TokenCache};
use crate::source::values::Fetched;
use crate::source::{FetchError, SourceError, Sources, Token, Tokens};
use anyhow::Context;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

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
    #[error("connection {connection:?}: cannot read {key} from {}: {cause}", path.display())]
    CredentialFile { connection: String, key: &'static str, path: PathBuf, cause: String },
}

impl Classify for SetupError {
    fn class(&self) -> Class {
        match self {
            SetupError::Url(e) if e.is_usage() => Class::Usage,
            _ => Class::Config,
        }
    }
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

    /// Stops background token renewal.
    pub fn shutdown(&self) {
        self.tokens.shutdown();
    }

    /// The client credentials of `p`, from its local values or the fetched ones. Reads
    /// `file:` values, so it blocks; async code uses [`Self::credentials_async`].
    pub fn credentials(
        &self,
        p: &PlannedConnection,
        remote: Option<&HashMap<String, Secret>>,
    ) -> Result<Credentials, SetupError> {
        credentials_of(p, remote, self.allow_insecure_http)
    }

    /// [`Self::credentials`], with `file:` values read on the blocking pool.
    async fn credentials_async(
        &self,
        p: &PlannedConnection,
        remote: Option<&HashMap<String, Secret>>,
    ) -> Result<Credentials, SetupError> {
        let from_file = CLIENT_KEYS
            .iter()
            .any(|k| p.connection.parameters.get(*k).is_some_and(|v| matches!(v.source, Source::File(_))));
        if !from_file {
            return self.credentials(p, remote);
        }
        let (owned, remote, insecure) = (p.clone(), remote.cloned(), self.allow_insecure_http);
        let read = tokio::task::spawn_blocking(move || credentials_of(&owned, remote.as_ref(), insecure)).await;
        read.unwrap_or_else(|_| Err(SetupError::Credential { connection: p.name.clone(), key: "ConsumerSecret" }))
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
        let creds = self.credentials_async(p, params.get(&p.connection.id)).await?;
        self.token_with(p, creds, deadline).await
    }

    async fn token_with(
        &self,
        p: &PlannedConnection,
        creds: Credentials,
        deadline: Instant,
    ) -> Result<Arc<crate::source::oauth::CachedToken>, FetchError> {
        let token = self.tokens.get(creds, deadline).await;
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
            let c = self.credentials_async(p, fetched.params.get(&p.connection.id)).await;
            if let Ok(c) = &c {
                apps.insert(c.key.clone());
            }
            creds.push(c);
        }
        // Each application is requested once however many connections share it (the
        // cache's single flight), and distinct applications in parallel.
        let results = futures_join(
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
                Err(e) => tracing::warn!(connection = %p.name, "{:#}", anyhow::Error::from(e)),
            }
        }
        // Only after a good round: a failing one keeps what was (SPEC: last good state).
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
        if let Ok(creds) = self.credentials_async(p, params.get(&p.connection.id)).await {
            if self.tokens.invalidate(&creds.key, token) {
                tracing::debug!(connection = %p.name, "an upstream refused the cached token: dropped it");
            }
        }
    }
}

const CLIENT_KEYS: [&str; 3] = ["TokenURL", "ConsumerKey", "ConsumerSecret"];

/// The client credentials of `p`; reads `file:` values (blocking).
fn credentials_of(
    p: &PlannedConnection,
    remote: Option<&HashMap<String, Secret>>,
    allow_insecure_http: bool,
) -> Result<Credentials, SetupError> {
    let value = |key: &'static str| -> Result<Secret, SetupError> {
        let missing = || SetupError::Credential { connection: p.name.clone(), key };
        match &p.connection.parameters.get(key).ok_or_else(missing)?.source {
            Source::Value(v) => Ok(v.clone()),
            Source::File(path) => crate::source::values::read_value_file(path).map(Secret::new).map_err(|cause| {
                SetupError::CredentialFile { connection: p.name.clone(), key, path: path.clone(), cause }
            }),
            Source::Remote => remote.and_then(|r| r.get(key)).cloned().ok_or_else(missing),
        }
    };
    let token_url = value("TokenURL")?;
    let client_id = value("ConsumerKey")?;
    let secret = value("ConsumerSecret")?;
    let url = check_url(token_url.expose(), allow_insecure_http).map_err(|source| SetupError::TokenUrl {
        connection: p.name.clone(),
        key: "TokenURL",
        source,
    })?;
    let oauth = p.connection.oauth.as_ref();
    let scopes = oauth.map(|o| o.scopes.clone()).unwrap_or_default();
    Ok(Credentials {
        key: AppKey::new(token_url.expose(), client_id.expose(), &scopes)
            .secret_client_id(p.connection.parameters.get("ConsumerKey").is_some_and(|k| k.secret)),
        url,
        secret,
        auth: oauth.map(|o| o.client_auth).unwrap_or_default(),
    })
}

/// Awaits every future concurrently (on this task), results in order.
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (fut, slot) in pending.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().map(|v| v.expect("every future completed")).collect()
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
