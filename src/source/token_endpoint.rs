//! The token endpoint as a source: the `AccessToken` of every `security: oauth2`
//! connection, from the OAuth token cache (`oauth`), with the client credentials read
//! from the connection's resolved parameters (`credentials`), whatever their source. It
//! maps connections to OAuth applications; the requests, the single flight and the
//! renewal are `oauth`'s.
//!
//! Boundary: knows connections and applications, not where a parameter's value comes
//! from; `outbound` composes it with the control plane.

use crate::resolve::{Plan, PlannedConnection};
use crate::secret::Secret;
use crate::source::credentials;
use crate::source::oauth::{CachedToken, Credentials, TokenCache};
use crate::source::values::Fetched;
use crate::source::{FetchError, Tokens};
use futures_util::future::join_all;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::time::Instant;
use tracing::Instrument;

/// The token cache and the rule its token URLs are checked by.
pub struct TokenEndpoint {
    cache: TokenCache,
    /// Plain http:// token URLs to hosts other than loopback (`--allow-insecure-http`).
    allow_insecure_http: bool,
}

impl TokenEndpoint {
    /// Tokens from `cache`; token URLs must be https (or loopback) unless
    /// `allow_insecure_http`.
    pub fn new(cache: TokenCache, allow_insecure_http: bool) -> TokenEndpoint {
        TokenEndpoint { cache, allow_insecure_http }
    }

    /// The cache, for its owner's shutdown and for tests.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// The tokens `tokens` asks for in `plan` (by connection id), their client
    /// credentials resolved with `fetched` (the control plane's answer of this round).
    /// A token some variable maps is required; another one that fails is logged and left
    /// out, for the local API to report when asked. With [`Tokens::All`], a good round
    /// also forgets the applications the plan no longer has.
    pub async fn fetch(
        &self,
        plan: &Plan,
        tokens: Tokens,
        fetched: &Fetched,
        deadline: Instant,
    ) -> Result<HashMap<String, Secret>, FetchError> {
        let mapped: Vec<usize> = plan.token_vars().collect();
        let wanted: Vec<usize> = match tokens {
            Tokens::Mapped => mapped.clone(),
            Tokens::All => (0..plan.connections.len()).filter(|&i| plan.connections[i].connection.is_oauth()).collect(),
        };
        // The plan's applications: those kept in the token cache once this round succeeds.
        let mut creds = Vec::with_capacity(wanted.len());
        let mut apps = HashSet::new();
        for &i in &wanted {
            let p = &plan.connections[i];
            let c = match credentials::resolve(p, Some(fetched)).await {
                Ok(params) => credentials::from_params(p, &params, self.allow_insecure_http),
                Err(e) => Err(e),
            };
            if let Ok(c) = &c {
                apps.insert(c.key.clone());
            }
            creds.push(c);
        }
        // Each application is requested once however many connections share it (the
        // cache's single flight), and distinct applications in parallel.
        let results = join_all(
            wanted.iter().zip(creds).map(|(&i, c)| async move { self.get(&plan.connections[i], c?, deadline).await }),
        )
        .await;
        let mut out = HashMap::new();
        for (&i, result) in wanted.iter().zip(results) {
            let p = &plan.connections[i];
            match result {
                Ok(token) => {
                    out.insert(p.connection.id.clone(), token.access_token.clone());
                }
                Err(e) if mapped.contains(&i) => return Err(e),
                // Unmapped tokens are served live by the local API, which reports the error there.
                Err(e) => {
                    let error = anyhow::Error::from(e);
                    tracing::warn!(connection = %p.name, error = %format_args!("{error:#}"), "no token");
                }
            }
        }
        // Only after a good round: a failing one keeps what was (the last good state stays).
        match tokens {
            Tokens::All => self.cache.retain(&apps),
            Tokens::Mapped => {}
        }
        Ok(out)
    }

    /// A token for `p`, whose resolved parameters are `params`, fresh from the cache.
    pub async fn token(
        &self,
        p: &PlannedConnection,
        params: &BTreeMap<String, Secret>,
        deadline: Instant,
    ) -> Result<Arc<CachedToken>, FetchError> {
        let creds = credentials::from_params(p, params, self.allow_insecure_http)?;
        self.get(p, creds, deadline).await
    }

    /// Forgets `token`, handed out for `p` (resolved parameters `params`), if the cache
    /// still holds it.
    pub fn invalidate(&self, p: &PlannedConnection, params: &BTreeMap<String, Secret>, token: &Secret) {
        if let Ok(creds) = credentials::from_params(p, params, self.allow_insecure_http) {
            if self.cache.invalidate(&creds.key, token) {
                tracing::debug!(connection = %p.name, "an upstream refused the cached token: dropped it");
            }
        }
    }

    async fn get(
        &self,
        p: &PlannedConnection,
        creds: Credentials,
        deadline: Instant,
    ) -> Result<Arc<CachedToken>, FetchError> {
        let span = tracing::info_span!("connection", connection = %p.name);
        let token = self.cache.get(creds, deadline).instrument(span).await;
        token.map_err(|source| FetchError::Token { connection: p.name.clone(), source })
    }
}
