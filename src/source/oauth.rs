//! The OAuth token cache of docs/oauth.md: client-credentials tokens (RFC 6749 §4.4), one
//! entry per OAuth application (token URL, client ID, scopes), however many connections
//! share it. Concurrent callers of one application wait on one request (single-flight);
//! a token is renewed at about 80% of its lifetime (with jitter), in the background when
//! the cache is long-lived; a failed renewal keeps the last good token until it expires
//! and backs off. This module does not know connections: `remote` maps them to apps.

use crate::config::model::{ClientAuth, Grant};
use crate::error::{Class, Classify};
use crate::http::client::{HttpClient, Request};
use crate::metrics::{Call, Metrics};
use crate::retry::{self, retry, Failure, GaveUp, Reason, Until};
use crate::secret::Secret;
use crate::source::client_auth::{self, federated, ClientAuthError, Material, Prepared};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::{Method, StatusCode, Uri};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// RFC 8693 §2.1: the token-exchange grant.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Lifetime assumed when the token endpoint omits `expires_in`.
const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The longest lifetime believed: a token is renewed at least about daily, and no
/// `expires_in` (1e20, say) can overflow the instants computed from it.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// One token request's own limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a background renewal keeps retrying before it waits for the next round.
const RENEWAL_BUDGET: Duration = Duration::from_secs(30);

/// One OAuth application: where tokens come from, for whom and what for; every field is
/// part of the token cache's key, so that two connections of one client with different
/// audiences get two tokens. Its Debug shows the client ID as logs do (not at all when it
/// is secret).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AppKey {
    pub token_url: String,
    pub client_id: String,
    /// Sorted, without duplicates: `[a, b]` and `[b, a]` are one application.
    pub scopes: Vec<String>,
    /// The descriptor marks ConsumerKey `secret`: logs and errors do not show it.
    pub client_id_secret: bool,
    /// How the client proves itself.
    pub method: ClientAuth,
    /// The grant (with, for token exchange, the subject token's file and type).
    pub grant: Grant,
    /// The form fields every request adds (`audience`, `resource`, `oauth.params`), in order.
    pub fields: Vec<(String, String)>,
}

impl AppKey {
    pub fn new(token_url: &str, client_id: &str, scopes: &[String]) -> AppKey {
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        AppKey {
            token_url: token_url.to_owned(),
            client_id: client_id.to_owned(),
            scopes,
            client_id_secret: false,
            method: ClientAuth::Basic,
            grant: Grant::ClientCredentials,
            fields: Vec::new(),
        }
    }

    /// The same application asked with `method`, `grant` and these form `fields`.
    pub fn asked(mut self, method: ClientAuth, grant: Grant, fields: Vec<(String, String)>) -> AppKey {
        self.method = method;
        self.grant = grant;
        self.fields = fields;
        self
    }

    /// The same application, its client ID a secret (never logged nor in errors).
    pub fn secret_client_id(mut self, secret: bool) -> AppKey {
        self.client_id_secret = secret;
        self
    }

    /// The client ID as logs and errors show it: quoted, or a placeholder if secret.
    pub fn shown_client_id(&self) -> String {
        if self.client_id_secret {
            "(ConsumerKey, secret)".to_owned()
        } else {
            format!("{:?}", self.client_id)
        }
    }
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppKey")
            .field("token_url", &self.token_url)
            .field("client_id", &format_args!("{}", self.shown_client_id()))
            .field("scopes", &self.scopes)
            .field("method", &self.method.name())
            .field("grant", &self.grant.name())
            .field("fields", &self.fields)
            .finish()
    }
}

/// What a token request needs besides the key.
pub struct Credentials {
    pub key: AppKey,
    /// Checked by `http::url::check_url`.
    pub url: Uri,
    /// What the client authentication method reads (the secret, a key, a file).
    pub auth: Material,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    #[error("the token endpoint {url} refused client {client_id}: {error}{}; it authenticated with {}: {} (this is permanent: connd will not retry)", describe(description), method.name(), client_auth::refusal_fix(*method))]
    Refused { url: String, client_id: String, error: String, description: Option<String>, method: ClientAuth },
    #[error("the token endpoint {url} rejected the request of client {client_id}: {error}{}", describe(description))]
    Rejected { url: String, client_id: String, error: String, description: Option<String> },
    #[error("the token endpoint {url} is unavailable: gave up after {attempts} attempt(s) in {elapsed:.1?}; last cause: {cause}")]
    Unavailable { url: String, attempts: u32, elapsed: Duration, cause: String },
    #[error("the token endpoint {url} is unavailable: {cause}; retrying")]
    Down { url: String, cause: String },
    /// An answer connd cannot use (an empty or unparsable body, no `access_token`, a
    /// `token_type` other than Bearer): transient, since the next answer may be good.
    #[error("bad answer from the token endpoint {url}: {cause}")]
    BadAnswer { url: String, cause: String },
    /// The exchange failed in a way asking again does not fix (a TLS fault, a forward
    /// proxy's refusal, an oversized answer).
    #[error("cannot use the token endpoint {url}: {cause}")]
    Broken { url: String, cause: String },
    /// The client authentication cannot be made (a key or certificate that cannot be
    /// used): a config error.
    #[error("cannot authenticate client {client_id} to the token endpoint {url} with {}: {cause}", method.name())]
    Setup { url: String, client_id: String, method: ClientAuth, cause: ClientAuthError },
    /// A workload token file is empty or unreadable: this request cannot be made yet.
    #[error("cannot ask the token endpoint {url} yet: {cause}")]
    NotYet { url: String, cause: ClientAuthError },
    /// A TLS file (`--ca-file`, `--client-cert`, `--client-key`) is unusable: a setup error.
    #[error("cannot talk to the token endpoint {url}: {cause}")]
    Tls { url: String, cause: String },
}

fn describe(description: &Option<String>) -> String {
    description.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
}

/// docs/oauth.md: only a refusal, a rejection or a broken setup is permanent (the background
/// renewal stops on them); an unavailable endpoint and an unusable answer are retried.
impl Classify for OAuthError {
    fn class(&self) -> Class {
        match self {
            OAuthError::Refused { .. } | OAuthError::Rejected { .. } => Class::Refused,
            OAuthError::Unavailable { .. } | OAuthError::Down { .. } | OAuthError::BadAnswer { .. } => {
                Class::Unavailable
            }
            OAuthError::Broken { .. } => Class::BadAnswer,
            OAuthError::Setup { .. } => Class::Config,
            OAuthError::NotYet { .. } => Class::Unavailable,
            OAuthError::Tls { .. } => Class::Config,
        }
    }
}

/// A token as obtained, with the instants that govern its renewal.
#[derive(Debug)]
pub struct CachedToken {
    pub access_token: Secret,
    pub token_type: String,
    pub expires_at: Instant,
    refresh_at: Instant,
}

/// What the last attempts went wrong with, so that callers back off instead of hammering.
#[derive(Default)]
struct Failures {
    count: u32,
    retry_at: Option<Instant>,
    last: Option<OAuthError>,
}

struct App {
    key: AppKey,
    url: Uri,
    /// The latest material a caller gave and the method prepared from it: a rotated
    /// secret or key is used from the next request.
    auth: Mutex<Option<(Material, Arc<Prepared>)>>,
    current: ArcSwapOption<CachedToken>,
    /// The single-flight gate: held by whoever is requesting a token.
    gate: tokio::sync::Mutex<()>,
    failures: Mutex<Failures>,
    /// Counts token-endpoint calls, for logs and tests.
    calls: std::sync::atomic::AtomicU64,
    /// Counts them by result, for `/metrics`.
    metrics: Arc<Metrics>,
    /// Whether a call retries its transient failures itself.
    until: Until,
    /// Bumped on every new token, for those who keep a token elsewhere (rendered files).
    renewed: Arc<tokio::sync::watch::Sender<u64>>,
}

struct Shared {
    http: Arc<HttpClient>,
    apps: Mutex<HashMap<AppKey, Arc<App>>>,
    /// [`Until::Cancelled`] (long-running modes) renews in the background and leaves
    /// retrying to the callers (the reloader, the renewal task); one-shot modes renew on
    /// demand and retry until their deadline.
    until: Until,
    /// One background renewal per application; dropping its entry stops it.
    refreshers: Mutex<HashMap<AppKey, Renewal>>,
    /// The parent of every renewal's token: cancelled by `shutdown`, or when the cache goes.
    stop: CancellationToken,
    /// Every renewal task, so that `shutdown` can wait for them.
    tasks: TaskTracker,
    /// Cancels `stop` when the last clone of the cache is dropped.
    _stop_on_drop: DropGuard,
    metrics: Arc<Metrics>,
    /// Counts the tokens obtained: see [`TokenCache::renewals`].
    renewed: Arc<tokio::sync::watch::Sender<u64>>,
}

/// A running background renewal: stopped when dropped.
struct Renewal {
    _stop: DropGuard,
    /// `None` when it was stopped.
    task: JoinHandle<Option<()>>,
}

/// The cache and owner of its renewal tasks: dropping the last clone (or `shutdown`)
/// stops them.
#[derive(Clone)]
pub struct TokenCache {
    shared: Arc<Shared>,
}

impl TokenCache {
    /// `until`: how long a call retries, and whether tokens are renewed in the background
    /// (see [`Until`]). Every token-endpoint call is counted into `metrics` by result.
    pub fn new(http: Arc<HttpClient>, until: Until, metrics: Arc<Metrics>) -> TokenCache {
        let stop = CancellationToken::new();
        TokenCache {
            shared: Arc::new(Shared {
                http,
                apps: Mutex::new(HashMap::new()),
                until,
                refreshers: Mutex::new(HashMap::new()),
                _stop_on_drop: stop.clone().drop_guard(),
                stop,
                tasks: TaskTracker::new(),
                metrics,
                renewed: Arc::new(tokio::sync::watch::Sender::new(0)),
            }),
        }
    }

    /// A receiver that changes whenever any application gets a new token (a first one
    /// or a renewal), so that copies of tokens (rendered files) can follow.
    pub fn renewals(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.renewed.subscribe()
    }

    /// Stops every background renewal and waits for them to end; tokens already
    /// obtained stay usable, and no renewal starts afterwards.
    pub async fn shutdown(&self) {
        self.shared.stop.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        self.shared.refreshers.lock().clear();
    }

    /// Forgets the applications not in `keep` and stops their renewal: called with the
    /// applications of the latest plan, so that a connection removed from the directory
    /// no longer costs token-endpoint calls.
    pub fn retain(&self, keep: &HashSet<AppKey>) {
        self.shared.apps.lock().retain(|key, _| keep.contains(key));
        self.shared.refreshers.lock().retain(|key, _| keep.contains(key));
    }

    /// The applications this cache holds, and whether each has a background renewal running.
    pub fn apps(&self) -> Vec<(AppKey, bool)> {
        let apps = self.shared.apps.lock();
        let refreshers = self.shared.refreshers.lock();
        apps.keys().map(|k| (k.clone(), refreshers.get(k).is_some_and(|r| !r.task.is_finished()))).collect()
    }

    /// How many token-endpoint calls this cache has made for `key`.
    pub fn calls(&self, key: &AppKey) -> u64 {
        let apps = self.shared.apps.lock();
        apps.get(key).map_or(0, |a| a.calls.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Drops `key`'s cached token if it is still `token` (an upstream refused it), so
    /// that the next [`TokenCache::get`] requests a new one. A token already replaced
    /// (by a concurrent caller that saw the same refusal) is left alone, so one refusal
    /// seen by many requests costs one token request. Returns whether it was dropped.
    pub fn invalidate(&self, key: &AppKey, token: &Secret) -> bool {
        let app = self.shared.apps.lock().get(key).cloned();
        let Some(app) = app else { return false };
        let current = app.current.load();
        if current.as_ref().is_some_and(|t| t.access_token == *token) {
            let previous = app.current.compare_and_swap(&current, None);
            return previous.as_ref().is_some_and(|t| t.access_token == *token);
        }
        false
    }

    /// A token for `creds`' application: the cached one while it is fresh, else one
    /// request shared by every concurrent caller, retried on transient failures until
    /// `deadline`.
    pub async fn get(&self, creds: Credentials, deadline: Instant) -> Result<Arc<CachedToken>, OAuthError> {
        let app = {
            let mut apps = self.shared.apps.lock();
            // The common case, a known application, clones no key.
            let known = apps.get(&creds.key).cloned();
            match known {
                Some(app) => app,
                None => {
                    let app = apps.entry(creds.key.clone()).or_insert_with(|| {
                        Arc::new(App {
                            key: creds.key.clone(),
                            url: creds.url.clone(),
                            auth: Mutex::new(None),
                            current: ArcSwapOption::empty(),
                            gate: tokio::sync::Mutex::new(()),
                            failures: Mutex::new(Failures::default()),
                            calls: Default::default(),
                            metrics: self.shared.metrics.clone(),
                            until: self.shared.until,
                            renewed: self.shared.renewed.clone(),
                        })
                    });
                    app.clone()
                }
            }
        };
        if let Err(e) = app.prepare(creds.auth, &self.shared.http) {
            // A key rotated to one that cannot be used: the last good token stays while it lasts.
            match app.unexpired(Instant::now()).filter(|_| app.prepared().is_some()) {
                Some(token) => {
                    tracing::warn!(error = %e, "the client authentication changed to one that cannot be used; keeping the current token");
                    return Ok(token);
                }
                None => return Err(e),
            }
        }
        let token = app.get(&self.shared.http, deadline).await?;
        if self.shared.until.renews_in_background() {
            self.arm_refresher(&app);
        }
        Ok(token)
    }

    fn arm_refresher(&self, app: &Arc<App>) {
        let mut refreshers = self.shared.refreshers.lock();
        if self.shared.stop.is_cancelled() || refreshers.get(&app.key).is_some_and(|r| !r.task.is_finished()) {
            return;
        }
        let (weak, http, stop) = (Arc::downgrade(app), self.shared.http.clone(), self.shared.stop.child_token());
        let task = self.shared.tasks.spawn(stop.clone().run_until_cancelled_owned(refresh_loop(weak, http)));
        refreshers.insert(app.key.clone(), Renewal { _stop: stop.drop_guard(), task });
    }
}

/// Renews one application's token ahead of expiry until aborted, the app is gone, or the
/// token endpoint answers with a permanent error (a wrong secret does not fix itself:
/// the next caller's request, with perhaps a rotated secret, re-arms it).
async fn refresh_loop(app: Weak<App>, http: Arc<HttpClient>) {
    loop {
        let wake = {
            let Some(app) = app.upgrade() else { return };
            let refresh_at = app.current.load().as_ref().map(|t| t.refresh_at);
            let retry_at = app.failures.lock().retry_at;
            match (refresh_at, retry_at) {
                (Some(r), Some(f)) => r.max(f),
                (Some(r), None) => r,
                (None, Some(f)) => f,
                (None, None) => return,
            }
        };
        tokio::time::sleep_until(wake).await;
        let Some(app) = app.upgrade() else { return };
        // A failure is remembered in `failures` and sets the next wake-up; callers see it.
        let _ = app.get(&http, Instant::now() + RENEWAL_BUDGET).await;
        let failures = app.failures.lock();
        if let Some(e) = failures.last.as_ref().filter(|e| !e.class().is_transient()) {
            let client_id = app.key.shown_client_id();
            tracing::warn!(error = %e, token_url = %app.key.token_url, client_id, "background token renewal stopped");
            return;
        }
    }
}

impl App {
    /// Keeps `material` and the method prepared from it, preparing it again only when it
    /// changed (a rotated key is parsed once).
    fn prepare(&self, material: Material, http: &HttpClient) -> Result<(), OAuthError> {
        let mut auth = self.auth.lock();
        if auth.as_ref().is_some_and(|(known, _)| *known == material) {
            return Ok(());
        }
        let prepared = client_auth::prepare(&material, http).map_err(|cause| OAuthError::Setup {
            url: self.key.token_url.clone(),
            client_id: self.key.shown_client_id(),
            method: material.method(),
            cause,
        })?;
        *auth = Some((material, Arc::new(prepared)));
        Ok(())
    }

    /// The prepared method and the material it came from.
    fn prepared(&self) -> Option<(Material, Arc<Prepared>)> {
        self.auth.lock().clone()
    }

    fn fresh(&self, now: Instant) -> Option<Arc<CachedToken>> {
        self.current.load_full().filter(|t| now < t.refresh_at)
    }

    fn unexpired(&self, now: Instant) -> Option<Arc<CachedToken>> {
        self.current.load_full().filter(|t| now < t.expires_at)
    }

    async fn get(&self, http: &HttpClient, deadline: Instant) -> Result<Arc<CachedToken>, OAuthError> {
        if let Some(t) = self.fresh(Instant::now()) {
            return Ok(t);
        }
        let _flight = self.gate.lock().await;
        let now = Instant::now();
        // Whoever held the gate before us may have renewed it.
        if let Some(t) = self.fresh(now) {
            return Ok(t);
        }
        {
            let failures = self.failures.lock();
            if failures.retry_at.is_some_and(|at| now < at) {
                if let Some(t) = self.unexpired(now) {
                    return Ok(t);
                }
                if let Some(e) = failures.last.as_ref().filter(|e| !e.class().is_transient()) {
                    return Err(e.clone());
                }
            }
        }
        let span =
            tracing::info_span!("token", token_url = %self.key.token_url, client_id = %self.key.shown_client_id());
        let attempts =
            retry(&retry::REQUESTS, self.until, deadline, "token request", |a| self.attempt(http, a.deadline));
        match attempts.instrument(span).await {
            Ok(token) => Ok(token),
            Err(GaveUp {
                error: OAuthError::Down { url, cause },
                reason: Reason::Deadline | Reason::RetryAfter(_),
                attempts,
                elapsed,
            }) => Err(OAuthError::Unavailable { url, attempts, elapsed, cause }),
            Err(gave_up) => Err(gave_up.error),
        }
    }

    /// One token request. A token obtained is stored and clears the failures; a failure
    /// is remembered (callers and the renewal back off on it), and while the current
    /// token has not expired, that token is the answer instead.
    async fn attempt(&self, http: &HttpClient, deadline: Instant) -> Result<Arc<CachedToken>, Failure<OAuthError>> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = self.request(http, deadline).await;
        self.metrics.token_call(match &result {
            Ok(_) => Call::Ok,
            Err(Attempt::Transient(_)) => Call::failed(Class::Unavailable),
            Err(Attempt::Permanent(OAuthError::Rejected { .. })) => Call::Rejected,
            Err(Attempt::Permanent(OAuthError::BadAnswer { .. })) => Call::failed(Class::BadAnswer),
            Err(Attempt::Permanent(e)) => Call::failed(e.class()),
        });
        let now = Instant::now();
        let error = match result {
            Ok(token) => {
                let token = Arc::new(token);
                self.current.store(Some(token.clone()));
                *self.failures.lock() = Failures::default();
                self.renewed.send_modify(|n| *n += 1);
                return Ok(token);
            }
            Err(Attempt::Permanent(e)) => e,
            // Stable text, so that every round of one outage reads (and is logged) the same.
            Err(Attempt::Transient(cause)) => OAuthError::Down { url: self.key.token_url.clone(), cause },
        };
        self.record_failure(&error, now);
        if let Some(t) = self.unexpired(now) {
            tracing::warn!(error = %error, "token renewal failed, keeping the current token until it expires");
            return Ok(t);
        }
        Err(if error.class().is_transient() { Failure::transient(error) } else { Failure::Permanent(error) })
    }

    /// Remembers a failure, and when callers and the renewal may try again.
    fn record_failure(&self, error: &OAuthError, now: Instant) {
        let mut failures = self.failures.lock();
        failures.count += 1;
        failures.retry_at = Some(now + retry::REQUESTS.delay(failures.count, None));
        failures.last = Some(error.clone());
    }

    /// The token request's headers and form body, with the grant's fields, the fields of
    /// `oauth` and the client authentication of `prepared`.
    async fn token_request(&self, prepared: &Prepared) -> Result<Request, OAuthError> {
        let url = &self.key.token_url;
        let failed = |cause: ClientAuthError| match cause.class() {
            Class::Unavailable => OAuthError::NotYet { url: url.clone(), cause },
            _ => OAuthError::Setup {
                url: url.clone(),
                client_id: self.key.shown_client_id(),
                method: self.key.method,
                cause,
            },
        };
        let mut form = client_auth::Form::default();
        match &self.key.grant {
            Grant::ClientCredentials => {
                form.append_pair("grant_type", "client_credentials");
            }
            Grant::TokenExchange { subject_token_file, subject_token_type } => {
                let subject = federated::read(subject_token_file, "oauth.subjectTokenFile").await.map_err(failed)?;
                form.append_pair("grant_type", TOKEN_EXCHANGE);
                form.append_pair("subject_token", subject.expose());
                form.append_pair("subject_token_type", subject_token_type);
            }
        }
        if !self.key.scopes.is_empty() {
            form.append_pair("scope", &self.key.scopes.join(" "));
        }
        for (name, value) in &self.key.fields {
            form.append_pair(name, value);
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        prepared.apply(&self.key.client_id, url, &mut form, &mut headers).await.map_err(failed)?;
        let body = form.finish();
        Ok(Request {
            method: Method::POST,
            url: self.url.clone(),
            headers,
            body: Bytes::copy_from_slice(body.expose().as_bytes()),
        })
    }

    /// One token request: sent, then its answer read as a token (RFC 6749 §5.1) or as a
    /// refusal (§5.2).
    async fn request(&self, http: &HttpClient, deadline: Instant) -> Result<CachedToken, Attempt> {
        let url = &self.key.token_url;
        let Some((material, prepared)) = self.prepared() else {
            let cause = "no client authentication was given".to_owned();
            return Err(Attempt::Permanent(OAuthError::Broken { url: url.clone(), cause }));
        };
        let request = self.token_request(&prepared).await.map_err(Attempt::Permanent)?;
        let http = prepared.http().map_or(http, |own| own.as_ref());
        let sent = Instant::now();
        let response = match http.send(request, deadline.min(sent + REQUEST_TIMEOUT)).await {
            Ok(r) => r,
            Err(e) if e.class().is_transient() => return Err(Attempt::Transient(e.to_string())),
            Err(e) if e.class() == crate::error::Class::Config => {
                return Err(Attempt::Permanent(OAuthError::Tls { url: url.clone(), cause: e.to_string() }));
            }
            Err(e) => return Err(Attempt::Permanent(OAuthError::Broken { url: url.clone(), cause: e.to_string() })),
        };
        let status = response.status;
        if retry::transient_status(status) {
            return Err(Attempt::Transient(format!("status {status}")));
        }
        // docs/oauth.md: an OAuth error body (RFC 6749 §5.2) is a refusal whatever the status: some
        // endpoints answer `200 {"error": "invalid_client"}`.
        match serde_json::from_slice::<ErrorAnswer>(&response.body).ok() {
            None if status == StatusCode::OK => self.token(&response.body, sent),
            error => Err(self.refusal(status, error, &material)),
        }
    }

    /// A `200` answer's token, or why it cannot be used (an unusable answer is transient).
    fn token(&self, body: &[u8], sent: Instant) -> Result<CachedToken, Attempt> {
        let url = &self.key.token_url;
        let bad = |cause: String| Attempt::Permanent(OAuthError::BadAnswer { url: url.clone(), cause });
        // Never `{e}`: serde_json's message quotes the offending value (the token).
        let answer: TokenAnswer = serde_json::from_slice(body)
            .map_err(|e| bad(format!("the body is not a token response ({})", crate::http::json::json_error(&e))))?;
        if answer.access_token.is_empty() {
            return Err(bad("the access_token is empty".into()));
        }
        // RFC 6749 §7.1: a client must not use a token whose type it does not understand.
        match answer.token_type.as_deref() {
            None => {}
            Some(t) if t.eq_ignore_ascii_case("bearer") => {}
            Some(other) => {
                return Err(bad(format!(
                    "the token_type is {other:?}, not Bearer: connd sends only Bearer tokens (RFC 6749 §7.1)"
                )))
            }
        }
        let ttl = match answer.expires_in {
            None => {
                tracing::debug!(token_url = %url, ttl = ?DEFAULT_TTL, "the token response has no expires_in: taking the default lifetime");
                DEFAULT_TTL
            }
            Some(seconds) => ttl_of(seconds).ok_or_else(|| bad("expires_in is not a number of seconds".into()))?,
        };
        // About 80% of the lifetime, jittered so that many instances do not renew together.
        let refresh_in = crate::retry::jitter(ttl, 0.75..=0.85);
        Ok(CachedToken {
            access_token: Secret::new(answer.access_token),
            token_type: "Bearer".into(),
            expires_at: sent + ttl,
            refresh_at: sent + refresh_in,
        })
    }

    /// A refusal or a rejection: `error` is the answer's OAuth error body, if it had one.
    fn refusal(&self, status: StatusCode, error: Option<ErrorAnswer>, material: &Material) -> Attempt {
        let url = &self.key.token_url;
        let client_id = self.key.shown_client_id();
        let method = self.key.method;
        let refused = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
        let Some(error) = error else {
            // 401/403 refuse the client whatever the body (docs/commands.md: exit 77).
            if refused {
                let (url, error) = (url.clone(), status.to_string());
                return Attempt::Permanent(OAuthError::Refused { url, client_id, error, description: None, method });
            }
            let cause = format!("unexpected status {status}");
            return Attempt::Permanent(OAuthError::BadAnswer { url: url.clone(), cause });
        };
        // The endpoint's words may quote what it was sent: never show the secret in them.
        let secret = material.secret().map(Secret::expose).unwrap_or_default();
        let hide = |text: String| {
            let text = match secret {
                s if !s.is_empty() && text.contains(s) => text.replace(s, "(ConsumerSecret)"),
                _ => text,
            };
            match self.key.client_id.as_str() {
                id if self.key.client_id_secret && !id.is_empty() => text.replace(id, "(ConsumerKey)"),
                _ => text,
            }
        };
        let (error_code, description) =
            (hide(error.error), error.error_description.filter(|d| !d.is_empty()).map(hide));
        let url = url.clone();
        Attempt::Permanent(match error_code.as_str() {
            "invalid_client" | "unauthorized_client" => {
                OAuthError::Refused { url, client_id, error: error_code, description, method }
            }
            _ if refused => {
                let error = format!("{status}, {error_code}");
                OAuthError::Refused { url, client_id, error, description, method }
            }
            _ => OAuthError::Rejected { url, client_id, error: error_code, description },
        })
    }
}

enum Attempt {
    Transient(String),
    Permanent(OAuthError),
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    token_type: Option<String>,
    expires_in: Option<Seconds>,
}

/// `expires_in` as RFC 6749 has it (a number) or as some providers send it (`"3599"`).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(f64),
    Text(String),
}

/// The lifetime `expires_in` gives, within [1 s, MAX_TTL]; `None` when it is no number.
fn ttl_of(seconds: Seconds) -> Option<Duration> {
    let seconds = match seconds {
        Seconds::Number(n) => n,
        Seconds::Text(t) => t.trim().parse::<f64>().ok()?,
    };
    if seconds.is_nan() {
        return None;
    }
    // A huge or infinite value fails the conversion: it means "long", so MAX_TTL.
    Some(Duration::try_from_secs_f64(seconds.max(1.0)).unwrap_or(MAX_TTL).min(MAX_TTL))
}

impl crate::retry::Report for OAuthError {
    fn report(&self) -> String {
        crate::error::chain(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_is_a_number_or_a_numeric_string_within_bounds() {
        let ttl = |json: &str| ttl_of(serde_json::from_str(json).unwrap());
        assert_eq!(ttl("3599"), Some(Duration::from_secs(3599)));
        assert_eq!(ttl("\"3599\""), Some(Duration::from_secs(3599)));
        assert_eq!(ttl("1e20"), Some(MAX_TTL));
        assert_eq!(ttl("0"), Some(Duration::from_secs(1)));
        assert_eq!(ttl("-5"), Some(Duration::from_secs(1)));
        assert_eq!(ttl("\"soon\""), None);
    }
}

#[derive(serde::Deserialize)]
struct ErrorAnswer {
    error: String,
    error_description: Option<String>,
}
