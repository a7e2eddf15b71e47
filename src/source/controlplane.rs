//! The control-plane client of docs/control-plane.md: one GET per referenced connection with
//! control-plane (`remote: true`) parameters, in parallel under a concurrency limit, with the bearer credential of
//! `--token-file` (re-read when the file changes) and conditional requests. It keeps the
//! last ETag and values per connection, so every later round (serve's refresh) costs a
//! 304. In one-shot modes it retries transient failures with exponential backoff and
//! full jitter until the caller's deadline; in long-running ones each round makes one
//! attempt and the reloader retries (see [`Until`]). Statuses that retrying cannot
//! fix fail at once.

use crate::error::{Class, Classify};
use crate::http::client::{HttpClient, HttpError, Request};
use crate::metrics::{Call, Metrics};
use crate::resolve::Plan;
use crate::retry::{self, retry, Failure, Reason, Until};
use crate::secret::Secret;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, ETAG, IF_NONE_MATCH, RETRY_AFTER};
use http::{Method, StatusCode, Uri};
use parking_lot::Mutex;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

/// Requests in flight at once: enough to hide latency, few enough not to stampede.
pub const CONCURRENCY: usize = 16;
/// One request's own limit, within the caller's overall deadline.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed fetch: one connection's request, the bearer credential, or a fetch task.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("{0}")]
    Request(Box<RequestError>),
    #[error("cannot read the control-plane credential {}: {cause}", path.display())]
    TokenFile { path: PathBuf, cause: String },
    /// A fetch task ended without an answer (a bug): the round fails, the process does not.
    #[error("a control-plane request {what}")]
    Task { what: &'static str },
}

/// One connection's request failed. It names the connection, the control-plane parameters it
/// was fetching (`keys`, as "ConsumerKey, ConsumerSecret"), the URL and the cause
/// (docs/commands.md).
#[derive(Debug)]
pub struct RequestError {
    pub connection: String,
    pub keys: String,
    pub url: String,
    pub problem: Problem,
}

/// What went wrong with one connection's request.
#[derive(Debug)]
pub enum Problem {
    /// 401 or 403.
    Refused {
        status: StatusCode,
    },
    /// 404: the control plane has no such connection.
    NotFound,
    /// A 200 without a wanted parameter.
    MissingKey {
        key: String,
    },
    /// Transient failures until the deadline ([`Until::Deadline`]).
    Unavailable {
        attempts: u32,
        elapsed: Duration,
        cause: String,
    },
    /// Transient, when the caller retries ([`Until::Cancelled`]): no attempt count or time,
    /// so that every round of one outage reads the same and is logged once.
    Down {
        cause: String,
        /// The server's `Retry-After`, for the caller's next attempt (docs/control-plane.md).
        retry_after: Option<Duration>,
    },
    /// A failure of the exchange that retrying cannot fix (an untrusted certificate).
    Unreachable {
        cause: String,
    },
    BadAnswer {
        cause: String,
    },
    /// A TLS file (`--ca-file`, `--client-cert`, `--client-key`) is unusable: a setup error.
    Tls {
        cause: String,
    },
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let RequestError { connection, keys, url, problem } = self;
        match problem {
            Problem::MissingKey { key } => write!(
                f,
                "connection {connection:?}: the control plane's answer from {url} has no parameter {key}: fix the key in the descriptor or add it to the connection in the control plane"
            ),
            Problem::Refused { status } => write!(
                f,
                "connection {connection:?}, parameters {keys}: the control plane refused the request to {url} ({status}): check the credential in --token-file and that it may read this component's connections"
            ),
            Problem::NotFound => write!(
                f,
                "connection {connection:?}, parameters {keys}: the control plane has no such connection at {url} (404 Not Found): check the connection id and the project and component names"
            ),
            Problem::Unavailable { attempts, elapsed, cause } => write!(
                f,
                "connection {connection:?}, parameters {keys}: the control plane at {url} is unavailable: gave up after {attempts} attempt(s) in {elapsed:.1?}; last cause: {cause}"
            ),
            Problem::Down { cause, .. } => write!(
                f,
                "connection {connection:?}, parameters {keys}: the control plane at {url} is unavailable: {cause}; retrying"
            ),
            Problem::Unreachable { cause } | Problem::Tls { cause } => write!(
                f,
                "connection {connection:?}, parameters {keys}: cannot talk to the control plane at {url}: {cause}"
            ),
            Problem::BadAnswer { cause } => write!(
                f,
                "connection {connection:?}, parameters {keys}: bad answer from the control plane at {url}: {cause}"
            ),
        }
    }
}

impl ControlPlaneError {
    /// The control plane said 404 for a connection: counted as `not_found`.
    fn is_not_found(&self) -> bool {
        matches!(self, ControlPlaneError::Request(r) if matches!(r.problem, Problem::NotFound))
    }

    /// How long the control plane asked to wait (`Retry-After`, RFC 9110 §10.2.3) with a
    /// transient failure that its caller retries ([`Until::Cancelled`]): a floor for the
    /// caller's next attempt (docs/control-plane.md). `None` for any other failure.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ControlPlaneError::Request(r) => match r.problem {
                Problem::Down { retry_after, .. } => retry_after,
                _ => None,
            },
            _ => None,
        }
    }
}

impl Classify for ControlPlaneError {
    fn class(&self) -> Class {
        match self {
            ControlPlaneError::Request(r) => match r.problem {
                Problem::Refused { .. } => Class::Refused,
                Problem::NotFound | Problem::MissingKey { .. } | Problem::Tls { .. } => Class::Config,
                Problem::Unavailable { .. } | Problem::Down { .. } => Class::Unavailable,
                Problem::Unreachable { .. } | Problem::BadAnswer { .. } => Class::BadAnswer,
            },
            ControlPlaneError::TokenFile { .. } => Class::Config,
            // A task that ended without an answer had none, as a transient failure has none.
            ControlPlaneError::Task { .. } => Class::Unavailable,
        }
    }
}

/// What one connection's last good answer was: every scalar parameter of the 200, not
/// only those wanted then, so that a 304 can answer for a key a descriptor adds later.
struct Cached {
    etag: Option<HeaderValue>,
    params: Params,
}

/// One 200's parameters: the scalars as text, and the names of the others (objects,
/// arrays), so that wanting one of those is reported as a bad type, not a missing key.
#[derive(Debug, Default)]
struct Params {
    scalars: HashMap<String, Secret>,
    not_scalar: HashSet<String>,
    /// Keys sent as `null`: present, but without a value, which is not "missing".
    nulls: HashSet<String>,
}

/// The bearer credential, re-read whenever the file's identity or mtime changes (a
/// projected ServiceAccount token is rotated by a symlink swap).
struct TokenFile {
    path: PathBuf,
    last: Mutex<Option<(FileStamp, Secret)>>,
}

#[derive(PartialEq, Eq, Clone, Copy)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl TokenFile {
    /// [`Self::read_blocking`] on the blocking pool: it stats and reads a file.
    async fn read(self: &Arc<Self>) -> Result<Secret, ControlPlaneError> {
        let file = self.clone();
        tokio::task::spawn_blocking(move || file.read_blocking()).await.unwrap_or_else(|_| {
            Err(ControlPlaneError::TokenFile { path: self.path.clone(), cause: "the read was interrupted".into() })
        })
    }

    fn read_blocking(&self) -> Result<Secret, ControlPlaneError> {
        use std::os::unix::fs::MetadataExt;
        let err = |cause: String| ControlPlaneError::TokenFile { path: self.path.clone(), cause };
        let meta = std::fs::metadata(&self.path).map_err(|e| err(e.to_string()))?;
        let stamp = FileStamp { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() };
        let mut last = self.last.lock();
        if let Some((seen, token)) = last.as_ref() {
            if *seen == stamp {
                return Ok(token.clone());
            }
        }
        let text = crate::source::values::read_value_file(&self.path).map_err(err)?;
        // docs/control-plane.md: a UTF-8 byte-order mark (Windows editors write one) and surrounding
        // whitespace are not part of the token; `trim` alone keeps the mark, which is not
        // whitespace.
        let token = text.strip_prefix('\u{feff}').unwrap_or(&text).trim();
        if token.is_empty() {
            return Err(err("the file is empty".into()));
        }
        if token.chars().any(|c| c.is_control() || c == ' ') {
            return Err(err("the credential contains spaces or control characters".into()));
        }
        let token = Secret::new(token);
        *last = Some((stamp, token.clone()));
        Ok(token)
    }
}

struct Inner {
    /// The `--control-plane` URL without a trailing `/`.
    base: String,
    http: Arc<HttpClient>,
    token: Option<Arc<TokenFile>>,
    cache: Mutex<HashMap<String, Cached>>,
    /// Where each request's outcome is counted (`/metrics` in `serve`).
    metrics: Arc<Metrics>,
    /// Whether a call retries its transient failures itself.
    until: Until,
}

/// The client; cheap to clone, shares its cache.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

/// One connection to fetch: who asks and which keys must come back.
struct Wanted {
    name: String,
    id: String,
    keys: Vec<String>,
}

impl Wanted {
    /// The error of this connection's request to `url`.
    fn error(&self, url: &str, problem: Problem) -> ControlPlaneError {
        let (connection, keys, url) = (self.name.clone(), self.keys.join(", "), url.to_owned());
        ControlPlaneError::Request(Box::new(RequestError { connection, keys, url, problem }))
    }
}

impl ControlPlane {
    /// `base` was checked by `http::url::check_base_url`.
    pub fn new(
        base: &Uri,
        token_file: Option<PathBuf>,
        http: Arc<HttpClient>,
        metrics: Arc<Metrics>,
        until: Until,
    ) -> ControlPlane {
        let base = base.to_string().trim_end_matches('/').to_owned();
        let token = token_file.map(|path| Arc::new(TokenFile { path, last: Mutex::new(None) }));
        let cache = Mutex::new(HashMap::new());
        ControlPlane { inner: Arc::new(Inner { base, http, token, cache, metrics, until }) }
    }

    /// The URL of one connection, as docs/control-plane.md spells it.
    pub fn url(&self, plan: &Plan, id: &str) -> String {
        format!(
            "{}/v1/projects/{}/components/{}/connections/{}",
            self.inner.base,
            segment(&plan.identity.project),
            segment(&plan.identity.component),
            segment(id)
        )
    }

    /// The control-plane parameters of every planned connection that has some, by connection id.
    pub async fn fetch(
        &self,
        plan: &Plan,
        deadline: Instant,
    ) -> Result<HashMap<String, HashMap<String, Secret>>, ControlPlaneError> {
        let mut wanted: Vec<Wanted> = Vec::new();
        for p in &plan.connections {
            let keys: Vec<String> = p.connection.control_plane_keys().map(str::to_owned).collect();
            // A connection referenced twice (two names) is fetched once.
            if !keys.is_empty() && !wanted.iter().any(|w| w.id == p.connection.id) {
                wanted.push(Wanted { name: p.name.clone(), id: p.connection.id.clone(), keys });
            }
        }
        let limit = Arc::new(Semaphore::new(CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for w in wanted {
            let (cp, limit, url) = (self.clone(), limit.clone(), self.url(plan, &w.id));
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let params = cp.fetch_one(&w, &url, deadline).await?;
                Ok::<_, ControlPlaneError>((w.id, params))
            });
        }
        let mut out = HashMap::new();
        // Dropping `tasks` on the first error aborts the rest: the round has failed.
        while let Some(joined) = tasks.join_next().await {
            let (id, params) = joined.map_err(|e| {
                // Its request may have been sent; it has no answer, as a transient failure has none.
                let e = ControlPlaneError::Task { what: if e.is_panic() { "panicked" } else { "was cancelled" } };
                self.inner.metrics.control_plane_call(Call::failed(e.class()));
                e
            })??;
            out.insert(id, params);
        }
        Ok(out)
    }

    /// The last values fetched for connection `id`, if any: every scalar parameter of the
    /// control plane's last 200, wanted or not.
    pub fn cached(&self, id: &str) -> Option<HashMap<String, Secret>> {
        self.inner.cache.lock().get(id).map(|c| c.params.scalars.clone())
    }

    async fn fetch_one(
        &self,
        w: &Wanted,
        url: &str,
        deadline: Instant,
    ) -> Result<HashMap<String, Secret>, ControlPlaneError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| w.error(url, Problem::BadAnswer { cause: "the connection's URL is not valid".into() }))?;
        let (span, uri) = (tracing::info_span!("connection", connection = %w.name, url), &uri);
        let attempts = retry(&retry::REQUESTS, self.inner.until, deadline, "control-plane request", |a| async move {
            match self.attempt(w, url, uri, a.deadline).await {
                Ok(Attempt::Done(params)) => Ok(params),
                // No attempt count or time in the message: the same outage reads the
                // same in every round of the reloader, so it is logged once.
                Ok(Attempt::Retry { cause, retry_after }) => {
                    Err(Failure::Transient { error: w.error(url, Problem::Down { cause, retry_after }), retry_after })
                }
                Err(e) => Err(Failure::Permanent(e)),
            }
        });
        let gave_up = match attempts.instrument(span).await {
            Ok(params) => return Ok(params),
            Err(gave_up) => gave_up,
        };
        let (attempts, elapsed) = (gave_up.attempts, gave_up.elapsed);
        match (gave_up.error, gave_up.reason) {
            (ControlPlaneError::Request(mut r), reason @ (Reason::Deadline | Reason::RetryAfter(_))) => {
                // Only transient failures (`Down`) end by the deadline.
                if let Problem::Down { cause, .. } = &r.problem {
                    let cause = match reason {
                        // Only when the server's wish, not connd's own backoff, is what ends it.
                        Reason::RetryAfter(after) => {
                            format!("{cause} (the server asked to retry after {after:?}, past the startup timeout)")
                        }
                        _ => cause.clone(),
                    };
                    r.problem = Problem::Unavailable { attempts, elapsed, cause };
                }
                Err(ControlPlaneError::Request(r))
            }
            (error, _) => Err(error),
        }
    }

    async fn attempt(&self, w: &Wanted, url: &str, uri: &Uri, deadline: Instant) -> Result<Attempt, ControlPlaneError> {
        let bad = |cause: String| w.error(url, Problem::BadAnswer { cause });
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(file) = &self.inner.token {
            let token = file.read().await?;
            let value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| bad("the credential is not a valid header value".into()))?;
            headers.insert(AUTHORIZATION, value);
        }
        // Conditional only when the cached answer has every key wanted now: otherwise a 304
        // could not answer for the missing one, and only a 200 can say whether it exists.
        let etag = {
            let cache = self.inner.cache.lock();
            let complete = |c: &&Cached| w.keys.iter().all(|k| c.params.scalars.contains_key(k));
            cache.get(&w.id).filter(complete).and_then(|c| c.etag.clone())
        };
        if let Some(etag) = etag {
            headers.insert(IF_NONE_MATCH, etag);
        }
        let request = Request { method: Method::GET, url: uri.clone(), headers, body: Bytes::new() };
        let request_deadline = deadline.min(Instant::now() + REQUEST_TIMEOUT);
        let response = match self.inner.http.send(request, request_deadline).await {
            Ok(r) => r,
            Err(e) => {
                // Unusable TLS settings are counted with the other failures retrying cannot
                // fix, while the exit code (78) says to fix connd's own settings.
                self.inner.metrics.control_plane_call(Call::failed(e.class()));
                let cause = e.to_string();
                return match e {
                    e if e.class().is_transient() => Ok(Attempt::Retry { cause, retry_after: None }),
                    HttpError::TooLarge => Err(bad(cause)),
                    // connd's own settings: the TLS files, or a client certificate the
                    // server requires or refuses.
                    e if e.class() == Class::Config => Err(w.error(url, Problem::Tls { cause })),
                    _ => Err(w.error(url, Problem::Unreachable { cause })),
                };
            }
        };
        let status = response.status;
        let result = self.answered(w, url, response);
        self.inner.metrics.control_plane_call(match &result {
            Ok(Attempt::Done(_)) if status == StatusCode::NOT_MODIFIED => Call::NotModified,
            Ok(Attempt::Done(_)) => Call::Ok,
            Ok(Attempt::Retry { .. }) => Call::failed(Class::Unavailable),
            Err(e) if e.is_not_found() => Call::NotFound,
            Err(e) => Call::failed(e.class()),
        });
        result
    }

    /// What one answer means: values, a retry, or a failure that retrying cannot fix.
    fn answered(
        &self,
        w: &Wanted,
        url: &str,
        response: crate::http::client::Response,
    ) -> Result<Attempt, ControlPlaneError> {
        let bad = |cause: String| w.error(url, Problem::BadAnswer { cause });
        let missing = |key: String| w.error(url, Problem::MissingKey { key });
        let status = response.status;
        match status {
            StatusCode::OK => {
                let all = parse_body(&response.body).map_err(bad)?;
                let params = pick(&all, w).map_err(|e| match e {
                    BodyError::Missing(key) => missing(key),
                    BodyError::Invalid(cause) => bad(cause),
                })?;
                let etag = response.headers.get(ETAG).cloned();
                let mut cache = self.inner.cache.lock();
                cache.insert(w.id.clone(), Cached { etag, params: all });
                Ok(Attempt::Done(params))
            }
            StatusCode::NOT_MODIFIED => {
                let cache = self.inner.cache.lock();
                match cache.get(&w.id) {
                    Some(c) => pick(&c.params, w).map(Attempt::Done).map_err(|e| match e {
                        BodyError::Missing(key) => missing(key),
                        BodyError::Invalid(cause) => bad(cause),
                    }),
                    None => Err(bad("304 Not Modified, but connd holds no earlier answer".into())),
                }
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(w.error(url, Problem::Refused { status })),
            StatusCode::NOT_FOUND => Err(w.error(url, Problem::NotFound)),
            s if retry::transient_status(s) => {
                let retry_after = response
                    .headers
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Ok(Attempt::Retry { cause: format!("status {s}"), retry_after })
            }
            s => Err(bad(format!("unexpected status {s}"))),
        }
    }
}

enum Attempt {
    Done(HashMap<String, Secret>),
    Retry { cause: String, retry_after: Option<Duration> },
}

enum BodyError {
    Missing(String),
    Invalid(String),
}

#[derive(serde::Deserialize)]
struct Body {
    /// Raw, so that a number keeps its digits (docs/control-plane.md): `18446744073709551616` is not
    /// turned into `1.8446744073709552e19`.
    parameters: HashMap<String, Box<serde_json::value::RawValue>>,
}

/// Every parameter of a 200 body, scalars turned into their text.
fn parse_body(body: &[u8]) -> Result<Params, String> {
    // Never `{e}`: serde_json's message quotes the offending value, which may be a secret.
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not the expected JSON ({})", crate::http::json::json_error(&e)))?;
    let mut out = Params::default();
    for (key, raw) in body.parameters {
        // A number is its text as sent: already checked as JSON by the parse above, and
        // never read as an f64, which refuses `1e400` and rounds long digits.
        if raw.get().starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            out.scalars.insert(key, Secret::new(raw.get().to_owned()));
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(raw.get())
            .map_err(|e| format!("the body is not the expected JSON ({})", crate::http::json::json_error(&e)))?;
        let text = match value {
            serde_json::Value::Null => {
                out.nulls.insert(key);
                continue;
            }
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(_) => raw.get().to_owned(),
            v @ serde_json::Value::Bool(_) => v.to_string(),
            _ => {
                out.not_scalar.insert(key);
                continue;
            }
        };
        out.scalars.insert(key, Secret::new(text));
    }
    Ok(out)
}

/// The wanted keys of one answer.
fn pick(all: &Params, w: &Wanted) -> Result<HashMap<String, Secret>, BodyError> {
    let mut out = HashMap::with_capacity(w.keys.len());
    for key in &w.keys {
        if all.not_scalar.contains(key) {
            return Err(BodyError::Invalid(format!("parameter {key} is not a string, number or boolean")));
        }
        if all.nulls.contains(key) {
            return Err(BodyError::Invalid(format!(
                "parameter {key} is null: the connection in the control plane has no value for it; set one there"
            )));
        }
        let value = all.scalars.get(key).ok_or_else(|| BodyError::Missing(key.clone()))?;
        out.insert(key.clone(), value.clone());
    }
    Ok(out)
}

/// What a path segment keeps as is: RFC 3986 §2.3's unreserved characters; everything
/// else is percent-encoded (names and UUIDs are plain, but nothing is assumed).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes one path segment.
fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

impl crate::retry::Report for ControlPlaneError {
    fn report(&self) -> String {
        crate::error::chain(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts users and scripts read, whole: one per problem.
    #[test]
    fn request_errors_name_connection_keys_and_url() {
        let w = Wanted { name: "hr".into(), id: "id".into(), keys: vec!["ConsumerKey".into(), "Secret".into()] };
        let text = |problem| w.error("https://cp/x", problem).to_string();
        let head = "connection \"hr\", parameters ConsumerKey, Secret: ";
        assert_eq!(
            text(Problem::Refused { status: StatusCode::FORBIDDEN }),
            format!("{head}the control plane refused the request to https://cp/x (403 Forbidden): check the credential in --token-file and that it may read this component's connections")
        );
        assert_eq!(
            text(Problem::NotFound),
            format!("{head}the control plane has no such connection at https://cp/x (404 Not Found): check the connection id and the project and component names")
        );
        assert_eq!(
            text(Problem::MissingKey { key: "Secret".into() }),
            "connection \"hr\": the control plane's answer from https://cp/x has no parameter Secret: fix the key in the descriptor or add it to the connection in the control plane"
        );
        let elapsed = Duration::from_millis(1500);
        assert_eq!(
            text(Problem::Unavailable { attempts: 3, elapsed, cause: "status 503".into() }),
            format!("{head}the control plane at https://cp/x is unavailable: gave up after 3 attempt(s) in 1.5s; last cause: status 503")
        );
        assert_eq!(
            text(Problem::Down { cause: "status 503".into(), retry_after: None }),
            format!("{head}the control plane at https://cp/x is unavailable: status 503; retrying")
        );
        for problem in [Problem::Unreachable { cause: "c".into() }, Problem::Tls { cause: "c".into() }] {
            assert_eq!(text(problem), format!("{head}cannot talk to the control plane at https://cp/x: c"));
        }
        assert_eq!(
            text(Problem::BadAnswer { cause: "c".into() }),
            format!("{head}bad answer from the control plane at https://cp/x: c")
        );
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("hr-project"), "hr-project");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn bodies_with_wrong_types_are_reported_without_their_content() {
        let double_encoded = serde_json::to_vec(&r#"{"parameters":{"ConsumerSecret":"TOPSECRET-remote"}}"#).unwrap();
        let err = parse_body(&double_encoded).unwrap_err();
        assert!(!err.contains("TOPSECRET"), "{err}");
        assert!(err.contains("not the expected JSON (a value of the wrong type"), "{err}");
    }

    #[test]
    fn numbers_keep_their_digits() {
        let body =
            br#"{"parameters":{"AccountId": 18446744073709551616, "Rate": 22.10, "Exp": 1E3, "Neg": -0, "On": true}}"#;
        let params = parse_body(body).unwrap();
        let text = |k: &str| params.scalars[k].expose().to_owned();
        assert_eq!(text("AccountId"), "18446744073709551616");
        assert_eq!(text("Rate"), "22.10");
        assert_eq!(text("Exp"), "1E3");
        assert_eq!(text("Neg"), "-0");
        assert_eq!(text("On"), "true");
    }
}
