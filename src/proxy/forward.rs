//! One proxied request, from the caller's head to the upstream's answer (docs/proxy.md):
//! route it, refuse what must not pass, attach the connection's credentials, forward
//! with the body streamed both ways, and turn failures into JSON errors that name the
//! connection and the cause. Header values are never logged; the access line (debug)
//! has the method, connection, path without query, status and time.

use super::pool::{Answer, Pool};
use super::route;
use super::upgrade::{self, Tunnels};
use super::upstream::{self, Clients, Connector, Failure, Wire};
use crate::config::model::{Security, ACCESS_TOKEN};
use crate::http::tls::PemTls;
use crate::http::url::check_url;
use crate::metrics::{Metrics, ProxyCounted};
use crate::reload::snapshot::{Resolved, Store};
use crate::secret::Secret;
use crate::source::{SourceError, Sources};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use parking_lot::Mutex;
use serde_json::json;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// Longest request target accepted (414 beyond).
pub const MAX_TARGET: usize = 8 * 1024;
/// Largest header block accepted, names and values counted (431 beyond).
pub const MAX_HEADERS: usize = 16 * 1024;
/// Most header fields accepted in one request (431 beyond).
pub const MAX_HEADER_FIELDS: usize = 100;
/// A request body with a `Content-Length` up to this size is kept, so the request can be
/// sent again: on a new connection after a keep-alive race, with a fresh token after an
/// upstream 401.
pub const RETRY_BODY_MAX: u64 = 64 * 1024;
/// The header that names the connection on the shared listener instead of the path's
/// first segment (docs/proxy.md); never forwarded.
pub const CONND_CONNECTION: &str = "connd-connection";
/// The header the `apiKey` scheme sends, with the `ChoreoAPIKey` parameter.
pub const API_KEY_HEADER: &str = "choreo-api-key";
const API_KEY_PARAM: &str = "ChoreoAPIKey";
const SERVICE_URL: &str = "ServiceURL";
/// The parameters of a connection's own upstream TLS (PEM).
const CLIENT_CERTIFICATE: &str = "ClientCertificate";
const CLIENT_KEY: &str = "ClientKey";
const CA_CERTIFICATE: &str = "CACertificate";
/// How long a connection's credentials and ServiceURL, once made, serve its next
/// requests (while the snapshot and the tokens stay the same): under load the token
/// cache and the URL checks are then asked a few times a second, not per request.
const KEEP_MADE: Duration = Duration::from_secs(1);

/// What the caller's request body becomes upstream: streamed as it comes, or kept
/// whole (small, replayable).
pub type UpstreamBody = Either<Watched, Full<Bytes>>;
/// What the caller reads: the upstream's body streamed, or connd's own JSON.
pub type ProxyBody = Either<Answer<UpstreamBody>, Full<Bytes>>;

/// Settings of the forwarding itself.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// Plain `http://` upstreams off loopback allowed (`--allow-insecure-http`).
    pub allow_insecure_http: bool,
    /// Time allowed for the upstream's response head, counted from the last request
    /// byte sent (a slow upload is not cut by it).
    pub response_timeout: Duration,
}

/// Everything a proxied request needs; one per process, shared by every listener.
pub struct Proxy<S> {
    pub(super) store: Arc<Store>,
    pub(super) sources: Arc<S>,
    pub(super) metrics: Arc<Metrics>,
    connector: Connector,
    /// The upstream clients of connections without certificates of their own.
    clients: Arc<Clients<UpstreamBody>>,
    /// Those of connections with their own (`ClientCertificate`, `CACertificate`), by
    /// connection name, with a fingerprint of the certificates they were made from: a
    /// renewed certificate gets new clients, and the old pools end with their last user.
    own_tls: Mutex<HashMap<String, OwnTls>>,
    settings: Forwarding,
    /// Each connection's credentials and ServiceURL as last made, for one snapshot.
    made: Mutex<Made>,
    /// Changes whenever the token cache obtains a token: what was made from the last
    /// one is then made again.
    renewals: Option<tokio::sync::watch::Receiver<u64>>,
}

/// Connections' credentials and ServiceURLs made for the snapshot `from`, by position.
#[derive(Default)]
struct Made {
    from: Weak<Resolved>,
    /// By the connection's position in the snapshot's plan.
    by_connection: Vec<Option<MadeFor>>,
    /// The snapshot's connections' counters, by position.
    counted: Counted,
}

/// A snapshot's connections' metrics counters, by position, each found at the
/// connection's first answer under it: an answer then counts with atomics alone.
type Counted = Arc<[OnceLock<ProxyCounted>]>;

/// What is kept for one connection of a snapshot, read together under one lock.
struct Kept {
    base: Option<(Uri, Option<HeaderValue>)>,
    creds: Option<Arc<Credentials>>,
    /// `None` when what is kept is another snapshot's.
    counted: Option<Counted>,
}

impl Made {
    /// Starts over when `resolved` is another snapshot than the one kept for.
    fn for_snapshot(&mut self, resolved: &Arc<Resolved>) {
        if self.from.as_ptr() != Arc::as_ptr(resolved) {
            let n = resolved.plan.connections.len();
            let by_connection = (0..n).map(|_| None).collect();
            let counted = (0..n).map(|_| OnceLock::new()).collect();
            *self = Made { from: Arc::downgrade(resolved), by_connection, counted };
        }
    }
}

/// One connection's, with the token count they were made at and until when they serve.
struct MadeFor {
    renewals: u64,
    until: Instant,
    /// The ServiceURL, and the `Host` value it gives.
    base: Option<(Uri, Option<HeaderValue>)>,
    creds: Option<Arc<Credentials>>,
}

/// A connection's own upstream clients and the fingerprint of the certificates they
/// were made from.
type OwnTls = (u64, Arc<Clients<UpstreamBody>>);

/// Who sent a request, as the listener knows it.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// From TCP: `Host` must name this proxy. (Over a Unix socket it is free text.)
    pub tcp: bool,
    /// The Unix socket's SO_PEERCRED verdict; always true over TCP.
    pub allowed: bool,
    /// On a connection's own port, which names the connection: advice says `/<path>`.
    pub pinned: bool,
}

/// A refusal or failure, as the caller reads it.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { status, code, message: message.into() }
}

fn json_error(connection: Option<&str>, r: Refusal) -> Response<ProxyBody> {
    let body = match connection {
        Some(c) => json!({ "error": r.message, "code": r.code, "connection": c }),
        None => json!({ "error": r.message, "code": r.code }),
    };
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    bytes.push(b'\n');
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(bytes))));
    *response.status_mut() = r.status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Whether a request is a gRPC call (`content-type: application/grpc`, `+proto` and
/// the like), whose caller reads connd's refusals as gRPC statuses.
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.get(..16).is_some_and(|p| p.eq_ignore_ascii_case("application/grpc")))
}

/// A refusal as a gRPC caller reads it (docs/proxy.md): a trailers-only answer, HTTP
/// 200 with `grpc-status` (14 UNAVAILABLE, 5 NOT_FOUND, 4 DEADLINE_EXCEEDED, 3
/// INVALID_ARGUMENT) and `grpc-message` (percent-encoded, as gRPC says) naming the
/// connection and the cause.
fn grpc_error(connection: Option<&str>, r: Refusal) -> Response<ProxyBody> {
    let code = match r.status {
        StatusCode::NOT_FOUND => "5",
        StatusCode::GATEWAY_TIMEOUT => "4",
        StatusCode::LOOP_DETECTED => "9",
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => "14",
        _ => "3",
    };
    let message = match connection {
        Some(c) => format!("connection {c}: {} ({})", r.message, r.code),
        None => format!("{} ({})", r.message, r.code),
    };
    const GRPC_MESSAGE: &percent_encoding::AsciiSet =
        &percent_encoding::CONTROLS.add(b'%').add(b'"').add(b'\\').add(0x7f);
    let encoded = percent_encoding::utf8_percent_encode(&message, GRPC_MESSAGE).to_string();
    let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from_static(code));
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", value);
    }
    response
}

impl<S: Sources> Proxy<S> {
    pub fn new(
        store: Arc<Store>,
        sources: Arc<S>,
        metrics: Arc<Metrics>,
        connector: Connector,
        settings: Forwarding,
    ) -> Proxy<S> {
        let clients = Arc::new(Clients::new(&connector));
        let renewals = sources.renewals();
        let (own_tls, made) = (Mutex::new(HashMap::new()), Mutex::new(Made::default()));
        Proxy { store, sources, metrics, clients, own_tls, connector, settings, made, renewals }
    }

    /// What `pick` finds made for connection `i` of `resolved`, if it is still good.
    fn made<T>(&self, resolved: &Arc<Resolved>, i: usize, pick: impl FnOnce(&MadeFor) -> Option<T>) -> Option<T> {
        let renewals = self.renewals.as_ref().map_or(0, |r| *r.borrow());
        let made = self.made.lock();
        let m = made.by_connection.get(i)?.as_ref()?;
        let good = made.from.as_ptr() == Arc::as_ptr(resolved) && m.renewals == renewals && Instant::now() < m.until;
        good.then(|| pick(m)).flatten()
    }

    /// Everything kept for connection `i` of `resolved`, at one lock: its ServiceURL
    /// and credentials while still good, and the snapshot's counters.
    fn kept(&self, resolved: &Arc<Resolved>, i: usize) -> Kept {
        let renewals = self.renewals.as_ref().map_or(0, |r| *r.borrow());
        let made = self.made.lock();
        if made.from.as_ptr() != Arc::as_ptr(resolved) {
            return Kept { base: None, creds: None, counted: None };
        }
        let counted = Some(made.counted.clone());
        match made.by_connection.get(i).and_then(Option::as_ref) {
            Some(m) if m.renewals == renewals && Instant::now() < m.until => {
                Kept { base: m.base.clone(), creds: m.creds.clone(), counted }
            }
            Some(_) | None => Kept { base: None, creds: None, counted },
        }
    }

    /// The counters of `resolved`'s connections (another snapshot's kept values are
    /// dropped).
    fn counted(&self, resolved: &Arc<Resolved>) -> Counted {
        let mut made = self.made.lock();
        made.for_snapshot(resolved);
        made.counted.clone()
    }

    /// Keeps what `put` sets for connection `i` of `resolved`.
    fn make(&self, resolved: &Arc<Resolved>, i: usize, put: impl FnOnce(&mut MadeFor)) {
        let renewals = self.renewals.as_ref().map_or(0, |r| *r.borrow());
        let mut made = self.made.lock();
        made.for_snapshot(resolved);
        let now = Instant::now();
        // `i` is a position in `resolved`'s plan, which `for_snapshot` made room for.
        let Some(slot) = made.by_connection.get_mut(i) else { return };
        let m = slot.get_or_insert(MadeFor { renewals, until: now, base: None, creds: None });
        if m.renewals != renewals || now >= m.until {
            *m = MadeFor { renewals, until: now + KEEP_MADE, base: None, creds: None };
        }
        put(m);
    }

    /// Forgets what was made for connection `i` (its token was refused).
    fn unmake(&self, i: usize) {
        if let Some(slot) = self.made.lock().by_connection.get_mut(i) {
            *slot = None;
        }
    }

    /// [`Proxy::credentials`], made at most once per [`KEEP_MADE`]; `kept` when routing
    /// found them kept.
    async fn kept_credentials(
        &self,
        resolved: &Arc<Resolved>,
        i: usize,
        kept: Option<Arc<Credentials>>,
    ) -> Result<Arc<Credentials>, Refusal> {
        if let Some(creds) = kept.or_else(|| self.made(resolved, i, |m| m.creds.clone())) {
            return Ok(creds);
        }
        // Boxed, as every step off the common path: a request's future then holds only
        // what most requests run, and is cheaper to move and to poll.
        let creds = Arc::new(Box::pin(self.credentials(resolved, i)).await?);
        self.make(resolved, i, |m| {
            m.until = creds.expires.map_or(m.until, |expires| m.until.min(expires));
            m.creds = Some(creds.clone());
        });
        Ok(creds)
    }

    /// Answers one request; never fails (errors are answers), counts it and logs it.
    /// An upgrade's joined streams go to `tunnels`, which the caller's connection runs.
    pub async fn handle(&self, caller: Caller, req: Request<Incoming>, tunnels: &Tunnels) -> Response<ProxyBody> {
        let started = Instant::now();
        let method = req.method().clone();
        let grpc = is_grpc(req.headers());
        let mut named = Named::default();
        let mut logged_path = String::new();
        let (response, status) = match self.forward(caller, req, tunnels, &mut named, &mut logged_path).await {
            Ok(response) => {
                let status = response.status();
                (response, status)
            }
            Err(r) => {
                let connection = named.as_str();
                let named = (!connection.is_empty()).then_some(connection);
                // Counted and logged by the HTTP status it stands for, also as a gRPC status.
                let status = r.status;
                (if grpc { grpc_error(named, r) } else { json_error(named, r) }, status)
            }
        };
        let elapsed = started.elapsed();
        let connection = named.as_str();
        match named.counted() {
            Some(slot) => slot.get_or_init(|| self.metrics.proxy_counted(connection)).proxied(status.as_u16(), elapsed),
            None => self.metrics.proxied(connection, status.as_u16(), elapsed),
        }
        tracing::debug!(
            %method,
            connection = %connection,
            path = %logged_path,
            status = status.as_u16(),
            micros = elapsed.as_micros() as u64,
            "proxied"
        );
        response
    }

    async fn forward(
        &self,
        caller: Caller,
        mut req: Request<Incoming>,
        tunnels: &Tunnels,
        named: &mut Named,
        logged_path: &mut String,
    ) -> Result<Response<ProxyBody>, Refusal> {
        admit(caller, &req)?;
        let upgrade = upgrade::requested(&req);
        let on_caller = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let Routed { resolved, i, host, uri, creds } = self.route(&req, named, logged_path)?;
        let connection = named.as_str();
        super::loops::pass(&mut req, connection)
            .map_err(|e| refuse(StatusCode::LOOP_DETECTED, "loop_detected", e.to_string()))?;
        let creds = self.kept_credentials(&resolved, i, creds).await.inspect_err(|_| {
            self.metrics.proxy_credential_failure(connection);
        })?;
        let clients = self.clients_for(&resolved, i)?;
        let (mut parts, body) = req.into_parts();
        let mut wire = self.connector.wire(&uri, parts.version == http::Version::HTTP_2);
        let body = request_body(&parts.headers, body).await?;
        upstream_headers(&mut parts.headers, host, &creds);
        if let Some(protocol) = upgrade {
            upgrade::ask_upstream(&mut parts.headers, protocol);
            wire = Wire::Http1;
        }
        if let Some(authorization) = self.connector.proxy_authorization(&uri) {
            parts.headers.insert(header::PROXY_AUTHORIZATION, authorization);
        }
        let (first, again) = match body {
            RequestBody::Kept(body) => {
                let headers = parts.headers.iter().map(|(name, value)| (name.clone(), value.clone())).collect();
                let resend = Resend { method: parts.method, uri, headers, body, wire, clients };
                // The first sending takes the request's own header map; the copy kept
                // for a second one is a plain list.
                let mut first = resend.outgoing_with(HeaderMap::new());
                first.headers = parts.headers;
                (self.send(first, Some(&resend)).await?, Some(resend))
            }
            RequestBody::Streamed(watched) => {
                let body = Either::Left(watched);
                let outgoing = Outgoing { method: parts.method, uri, headers: parts.headers, body, wire, clients };
                (self.send(outgoing, None).await?, None)
            }
        };
        let unauthorized = first.status() == StatusCode::UNAUTHORIZED;
        let token = if unauthorized { creds.token.clone() } else { None };
        let response = match (unauthorized, token, again) {
            (true, Some(token), Some(resend)) => {
                drop(first);
                Box::pin(self.after_401(&resolved, i, token, resend, connection)).await?
            }
            // docs/proxy.md: a 401 drops the token even when the body cannot be sent again,
            // so that the next request fetches a fresh one.
            (true, Some(token), None) => {
                self.unmake(i);
                let values = &resolved.values.connections[i];
                Box::pin(self.sources.invalidate_token(&resolved.plan, i, values, &token)).await;
                first
            }
            (_, _, _) => first,
        };
        match on_caller {
            Some(caller) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                Ok(upgrade::switch(response, caller, tunnels, connection.to_owned()))
            }
            Some(_) | None => Ok(downstream(response)),
        }
    }

    /// The connection a request names and where it goes upstream; `named` and
    /// `logged_path` (when the access line is logged) are filled in as they become known,
    /// for the refusal and the log.
    fn route(&self, req: &Request<Incoming>, named: &mut Named, logged_path: &mut String) -> Result<Routed, Refusal> {
        let snapshot = self.store.load();
        let Some(resolved) = snapshot.resolved.clone() else {
            let reason = snapshot.failure.as_ref().map_or("the first resolution is under way", |f| f.message.as_str());
            return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "not_ready", format!("connd is not ready: {reason}")));
        };
        let path = req.uri().path();
        let split = match req.headers().get(CONND_CONNECTION) {
            // The header names the connection; the whole path goes upstream.
            Some(name) => {
                let name = name.to_str().map_err(|_| {
                    refuse(StatusCode::BAD_REQUEST, "bad_connection_header", "Connd-Connection is not ASCII text")
                })?;
                route::Split { connection: name.trim().into(), rest: path }
            }
            None => route::split(path).ok_or_else(|| no_connection(&resolved, None))?,
        };
        let Some(i) = resolved.position(&split.connection) else {
            return Err(no_connection(&resolved, Some(&split.connection)));
        };
        let kept = self.kept(&resolved, i);
        let counted = kept.counted.unwrap_or_else(|| self.counted(&resolved));
        *named = Named(Some((resolved.clone(), i, counted)));
        let rest = split.rest;
        if route::climbs(rest) {
            let message = "the path climbs out of the connection's ServiceURL (a `..` segment, perhaps percent-encoded); write the path without it";
            return Err(refuse(StatusCode::BAD_REQUEST, "path_escape", message));
        }
        let (base, host) = match kept.base {
            Some(base) => base,
            None => {
                let base = self.service_url(&resolved, i)?;
                // `Host` upstream: the ServiceURL's authority.
                let host = base.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
                self.make(&resolved, i, |m| m.base = Some((base.clone(), host.clone())));
                (base, host)
            }
        };
        let path_and_query = route::join(base.path(), base.query(), rest, req.uri().query());
        if tracing::enabled!(tracing::Level::DEBUG) {
            logged_path.push_str(base.path().trim_end_matches('/'));
            logged_path.push_str(rest);
        }
        let uri = upstream_uri(&base, path_and_query)?;
        Ok(Routed { resolved, i, host, uri, creds: kept.creds })
    }

    /// The upstream refused `token`: it is dropped, and the request is sent once more
    /// with a fresh one.
    async fn after_401(
        &self,
        resolved: &Resolved,
        i: usize,
        token: Secret,
        resend: Resend,
        connection: &str,
    ) -> Result<Response<Answer<UpstreamBody>>, Refusal> {
        let mut resend = resend;
        self.unmake(i);
        self.sources.invalidate_token(&resolved.plan, i, &resolved.values.connections[i], &token).await;
        let fresh = self.credentials(resolved, i).await.inspect_err(|_| {
            self.metrics.proxy_credential_failure(connection);
        })?;
        for (name, value) in &fresh.headers {
            resend.set(name, value);
        }
        tracing::debug!(connection = %connection, "upstream answered 401: sent again with a fresh token");
        self.send(resend.outgoing(), Some(&resend)).await
    }

    /// The clients for connection `i`: its own when its parameters give certificates
    /// (docs/proxy.md), made again when they change; else the proxy's.
    fn clients_for(&self, resolved: &Resolved, i: usize) -> Result<Arc<Clients<UpstreamBody>>, Refusal> {
        let values = &resolved.values.connections[i];
        let text = |key: &str| values.get(key).map(|v| v.expose()).filter(|v| !v.is_empty());
        let (ca, cert, key) = (text(CA_CERTIFICATE), text(CLIENT_CERTIFICATE), text(CLIENT_KEY));
        if ca.is_none() && cert.is_none() {
            return Ok(self.clients.clone());
        }
        let name = &resolved.plan.connections[i].name;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (ca, cert, key).hash(&mut hasher);
        let fingerprint = hasher.finish();
        let mut own = self.own_tls.lock();
        if let Some((made_from, clients)) = own.get(name) {
            if *made_from == fingerprint {
                return Ok(clients.clone());
            }
        }
        let client = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                let message = format!("{CLIENT_CERTIFICATE} and {CLIENT_KEY} go together: give both, or neither");
                return Err(refuse(StatusCode::BAD_GATEWAY, "bad_client_certificate", message));
            }
        };
        let connector = self.connector.with_pem(&PemTls { ca, client }, name).map_err(|e| {
            refuse(StatusCode::BAD_GATEWAY, "bad_client_certificate", format!("the connection's TLS: {e}"))
        })?;
        let clients = Arc::new(Clients::new(&connector));
        tracing::info!(connection = %name, "upstream TLS made from the connection's certificates");
        own.insert(name.clone(), (fingerprint, clients.clone()));
        Ok(clients)
    }

    /// The connection's ServiceURL, under the plain-http rule of docs/commands.md.
    fn service_url(&self, resolved: &Resolved, i: usize) -> Result<Uri, Refusal> {
        let Some(url) = resolved.values.connections[i].get(SERVICE_URL) else {
            let message = format!(
                "connection {:?} has no ServiceURL, so the proxy does not know where to send the request",
                resolved.plan.connections[i].name
            );
            return Err(refuse(StatusCode::NOT_FOUND, "no_service_url", message));
        };
        check_url(url.expose(), self.settings.allow_insecure_http)
            .map_err(|e| refuse(StatusCode::BAD_GATEWAY, "bad_service_url", format!("ServiceURL: {e}")))
    }

    /// The headers the connection's scheme and `proxy.headers` ask for.
    async fn credentials(&self, resolved: &Resolved, i: usize) -> Result<Credentials, Refusal> {
        let p = &resolved.plan.connections[i];
        let values = &resolved.values.connections[i];
        let unavailable = |message: String| refuse(StatusCode::SERVICE_UNAVAILABLE, "credentials_unavailable", message);
        let mut creds = Credentials { headers: Vec::with_capacity(1), token: None, expires: None };
        let needs_token = p.connection.security == Security::OAuth2;
        if needs_token {
            let token = match self.sources.token(&resolved.plan, i, values).await {
                Ok(t) => {
                    creds.expires = Some(Instant::now() + t.expires_in);
                    t.access_token
                }
                Err(SourceError::Other(e)) => return Err(unavailable(format!("no access token: {e:#}"))),
                Err(e) => return Err(unavailable(e.to_string())),
            };
            let value = sensitive(&format!("Bearer {}", token.expose()))
                .ok_or_else(|| unavailable("the access token is not a valid header value".into()))?;
            creds.headers.push((header::AUTHORIZATION, value));
            creds.token = Some(token);
        }
        if p.connection.security == Security::ApiKey {
            let value = values
                .get(API_KEY_PARAM)
                .filter(|v| !v.expose().is_empty())
                .ok_or_else(|| unavailable(format!("no value for {API_KEY_PARAM}")))?;
            let value = sensitive(value.expose())
                .ok_or_else(|| unavailable(format!("{API_KEY_PARAM} is not a valid header value")))?;
            creds.headers.push((HeaderName::from_static(API_KEY_HEADER), value));
        }
        for h in &p.connection.proxy_headers {
            let value = if h.key == ACCESS_TOKEN { creds.token.clone() } else { values.get(&h.key).cloned() };
            let value = value
                .filter(|v| !v.expose().is_empty())
                .ok_or_else(|| unavailable(format!("no value for {} (proxy header {})", h.key, h.name)))?;
            let value = sensitive(value.expose())
                .ok_or_else(|| unavailable(format!("{} is not a valid value for header {}", h.key, h.name)))?;
            creds.headers.retain(|(name, _)| name != h.name);
            creds.headers.push((h.name.clone(), value));
        }
        Ok(creds)
    }

    /// Sends `outgoing`; when it fails on a reused pooled connection before any byte of
    /// the answer arrived (the upstream closed the connection while idle) and `replay`
    /// can send it again, it is sent once more on a new connection (docs/proxy.md).
    async fn send(
        &self,
        outgoing: Outgoing,
        replay: Option<&Resend>,
    ) -> Result<Response<Answer<UpstreamBody>>, Refusal> {
        let clients = outgoing.clients.clone();
        let pools = clients.of(outgoing.wire);
        match (self.send_on(&pools.pooled, outgoing).await, replay) {
            (Err(Failed { raced: true, .. }), Some(replay)) => {
                tracing::debug!("the upstream closed a reused connection: sent again on a new one");
                self.send_on(&pools.fresh, replay.outgoing()).await.map_err(|f| f.refusal)
            }
            (result, _) => result.map_err(|f| f.refusal),
        }
    }

    /// One exchange on `pool`, the response timeout counted from the last request
    /// body byte sent.
    async fn send_on(
        &self,
        pool: &Pool<UpstreamBody>,
        outgoing: Outgoing,
    ) -> Result<Response<Answer<UpstreamBody>>, Failed> {
        let Outgoing { method, uri, headers, body, .. } = outgoing;
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let activity = match req.body() {
            Either::Left(watched) => Some(watched.activity.clone()),
            Either::Right(_) => None,
        };
        let exchange = pool.send(req);
        tokio::pin!(exchange);
        let timeout = self.settings.response_timeout;
        // A kept body is all sent at once: the timeout counts from the start.
        let started = Instant::now();
        let last = || activity.as_ref().map_or(started, |a| a.last());
        loop {
            let deadline = last() + timeout;
            tokio::select! {
                result = &mut exchange => {
                    let caller_failed = activity.as_ref().is_some_and(|a| a.caller_failed());
                    return result.map_err(|f| failed(&f, caller_failed));
                }
                () = tokio::time::sleep_until(deadline) => {
                    if last() + timeout <= Instant::now() {
                        let message = format!("the upstream sent no response head within {timeout:?}");
                        let refusal = refuse(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", message);
                        return Err(Failed { refusal, raced: false });
                    }
                }
            }
        }
    }
}

/// A failed exchange: what the caller is told, and whether it was a keep-alive race.
struct Failed {
    refusal: Refusal,
    raced: bool,
}

/// What a failed exchange means: the caller's own body broken (400, not the upstream's
/// fault), a connect timeout (504), connd's client certificate refused by the upstream,
/// an unreachable upstream or a broken exchange (502).
fn failed(f: &super::pool::Failed, caller_failed: bool) -> Failed {
    let (e, reused) = (&f.error, f.reused);
    let (failure, cause) = upstream::classify(e);
    if caller_failed {
        let message = format!("the request body is malformed or was cut short: {cause}");
        return Failed { refusal: refuse(StatusCode::BAD_REQUEST, "bad_body", message), raced: false };
    }
    if let Some(message) = upstream::certificate_refused(f) {
        return Failed {
            refusal: refuse(StatusCode::BAD_GATEWAY, "client_certificate_refused", message),
            raced: false,
        };
    }
    let raced = reused && upstream::nothing_arrived(e);
    if upstream::head_too_large(e) {
        let message = format!(
            "the upstream's answer head is over connd's limit of {} KiB of header fields",
            upstream::MAX_ANSWER_HEAD / 1024
        );
        return Failed { refusal: refuse(StatusCode::BAD_GATEWAY, "upstream_head_too_large", message), raced };
    }
    let refusal = match failure {
        Failure::ConnectTimeout => refuse(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("the upstream did not accept a connection in time: {cause}"),
        ),
        Failure::Unreachable => {
            refuse(StatusCode::BAD_GATEWAY, "upstream_unreachable", format!("the upstream is unreachable: {cause}"))
        }
        Failure::Broken => {
            refuse(StatusCode::BAD_GATEWAY, "upstream_failed", format!("the upstream exchange failed: {cause}"))
        }
    };
    Failed { refusal, raced }
}

/// Refuses what no connection may receive: a caller not allowed, a target or headers
/// over the limits, a request not aimed at this proxy, CONNECT.
fn admit(caller: Caller, req: &Request<Incoming>) -> Result<(), Refusal> {
    if !caller.allowed {
        let message = "this caller's uid and gid are not allowed; start connd with --allow-uid or --allow-gid";
        return Err(refuse(StatusCode::FORBIDDEN, "forbidden", message));
    }
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > MAX_TARGET {
        let message = format!("the request target is {target_len} bytes, over the limit of {MAX_TARGET}");
        return Err(refuse(StatusCode::URI_TOO_LONG, "uri_too_long", message));
    }
    let header_bytes: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if header_bytes > MAX_HEADERS {
        let message = format!("the request's headers are {header_bytes} bytes, over the limit of {MAX_HEADERS}");
        return Err(refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", message));
    }
    let fields = req.headers().len();
    if fields > MAX_HEADER_FIELDS {
        let message = format!("the request has {fields} header fields, over the limit of {MAX_HEADER_FIELDS}");
        return Err(refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", message));
    }
    one_host(req)?;
    aimed_here(caller, req)?;
    if req.method() == Method::CONNECT {
        let message = format!(
            "CONNECT is not supported: connd's egress proxy is not a forward proxy; send METHOD {} instead",
            route::advice(caller.pinned, req.headers().get(CONND_CONNECTION))
        );
        return Err(refuse(StatusCode::NOT_IMPLEMENTED, "not_supported", message));
    }
    Ok(())
}

/// Where a request goes: its connection (position `i` in the plan), the `Host` its
/// `ServiceURL` names and the upstream URI.
struct Routed {
    resolved: Arc<Resolved>,
    i: usize,
    host: Option<HeaderValue>,
    uri: Uri,
    /// Its credentials, when they were found kept.
    creds: Option<Arc<Credentials>>,
}

/// The connection a request named, once routing found it (for the refusal, the metrics
/// and the log): its plan and position, not a copy of its name, and its snapshot's
/// counters.
#[derive(Default)]
struct Named(Option<(Arc<Resolved>, usize, Counted)>);

impl Named {
    /// Its name; empty before routing found it.
    fn as_str(&self) -> &str {
        self.0.as_ref().map_or("", |(resolved, i, _)| resolved.plan.connections[*i].name.as_str())
    }

    /// The slot of its counters, once routing found it.
    fn counted(&self) -> Option<&OnceLock<ProxyCounted>> {
        self.0.as_ref().and_then(|(_, i, counted)| counted.get(*i))
    }
}

/// A request kept whole, so it can be sent again (after a keep-alive race, or with a
/// fresh token).
struct Resend {
    method: Method,
    uri: Uri,
    /// The header fields in the order the header map gives them (a name's values
    /// together), which a header map is made from again.
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    wire: Wire,
    clients: Arc<Clients<UpstreamBody>>,
}

impl Resend {
    /// One sending of it.
    fn outgoing(&self) -> Outgoing {
        let headers = self.headers.iter().map(|(name, value)| (name.clone(), value.clone())).collect();
        self.outgoing_with(headers)
    }

    /// One sending of it, with `headers`.
    fn outgoing_with(&self, headers: HeaderMap) -> Outgoing {
        Outgoing {
            method: self.method.clone(),
            uri: self.uri.clone(),
            headers,
            body: Either::Right(Full::new(self.body.clone())),
            wire: self.wire,
            clients: self.clients.clone(),
        }
    }

    /// Sets `name` to `value` as a header map's `insert` does: the first field of that
    /// name keeps its place with the new value, the others go; a new name comes last.
    fn set(&mut self, name: &HeaderName, value: &HeaderValue) {
        let Some(at) = self.headers.iter().position(|(n, _)| n == name) else {
            self.headers.push((name.clone(), value.clone()));
            return;
        };
        self.headers[at].1 = value.clone();
        let mut index = 0;
        self.headers.retain(|(n, _)| {
            index += 1;
            index - 1 == at || n != name
        });
    }
}

/// A request as it goes upstream.
struct Outgoing {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: UpstreamBody,
    wire: Wire,
    /// The connection's clients (its own TLS, or the proxy's).
    clients: Arc<Clients<UpstreamBody>>,
}

/// The 404 for a name that is no connection, listing those there are.
fn no_connection(resolved: &Resolved, name: Option<&str>) -> Refusal {
    let names: Vec<&str> = resolved.plan.connections.iter().map(|c| c.name.as_str()).collect();
    let what = match name {
        Some(n) => format!("this component references no connection {n:?}"),
        None => "the path names no connection: use /<connection>/<path>".to_owned(),
    };
    refuse(StatusCode::NOT_FOUND, "no_such_connection", format!("{what}; it references: {}", names.join(", ")))
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host`; with several, which one
/// names the target is ambiguous (a check could read one and the upstream another).
fn one_host<B>(req: &Request<B>) -> Result<(), Refusal> {
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if hosts > 1 {
        let message = format!("the request has {hosts} Host fields; send exactly one (RFC 9112 §3.2)");
        return Err(refuse(StatusCode::BAD_REQUEST, "bad_host", message));
    }
    if hosts == 0 && req.version() == http::Version::HTTP_11 {
        let message = "an HTTP/1.1 request needs a Host field (RFC 9112 §3.2): send Host: 127.0.0.1:PORT";
        return Err(refuse(StatusCode::BAD_REQUEST, "bad_host", message));
    }
    Ok(())
}

/// Refuses a request aimed at another host: an absolute-form target or (over TCP) a
/// `Host` that is not this proxy.
fn aimed_here<B>(caller: Caller, req: &Request<B>) -> Result<(), Refusal> {
    let misdirected = |host: &str| {
        refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
            format!(
                "this proxy serves only itself, not {host:?}: send the request to it, as {}",
                route::advice(caller.pinned, req.headers().get(CONND_CONNECTION))
            ),
        )
    };
    if let Some(authority) = req.uri().authority() {
        if !route::host_allowed(authority.as_str()) {
            return Err(misdirected(authority.host()));
        }
    }
    if caller.tcp {
        if let Some(host) = req.headers().get(header::HOST) {
            let text = host.to_str().unwrap_or("");
            if !route::host_allowed(text) {
                return Err(misdirected(text));
            }
        }
    }
    Ok(())
}

fn upstream_uri(base: &Uri, path_and_query: String) -> Result<Uri, Refusal> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = base.scheme().cloned();
    parts.authority = base.authority().cloned();
    // The text is taken as it is, not copied.
    parts.path_and_query = Some(
        http::uri::PathAndQuery::from_maybe_shared(Bytes::from(path_and_query))
            .map_err(|_| refuse(StatusCode::BAD_REQUEST, "bad_path", "the path is not a valid request target"))?,
    );
    Uri::from_parts(parts)
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "bad_path", "the path is not a valid request target"))
}

/// A header value marked sensitive (kept out of HPACK tables and debug output), or
/// `None` when the text cannot be one (a newline, say).
fn sensitive(text: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The headers a connection adds, and the OAuth token among them (for a 401).
#[derive(Clone)]
struct Credentials {
    headers: Vec<(HeaderName, HeaderValue)>,
    token: Option<Secret>,
    /// When the token among them expires.
    expires: Option<Instant>,
}

/// Hop-by-hop fields (RFC 9110 §7.6.1), which apply to one connection and are not
/// forwarded either way, plus `Expect`, which connd answers itself.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is one of the fixed hop-by-hop fields.
pub(super) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Removes the hop-by-hop fields from `headers`, those named in `Connection` included.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the fields finds whether there is any to remove; most messages have
    // none, and each removal by name hashes the name and probes the map.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        // `close` and `keep-alive`, the usual options, are removed by their text (no name
        // is made for them; `keep-alive` is a fixed one besides).
        let mut close = false;
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| {
                let usual = name.eq_ignore_ascii_case("close");
                close |= usual;
                !usual && !name.eq_ignore_ascii_case("keep-alive")
            })
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        if close {
            headers.remove("close");
        }
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The caller's headers made the upstream's: end-to-end only, `Host` the upstream's (`host`,
/// from the ServiceURL), no `Expect` (connd answered it), the credentials set (a caller's
/// own value replaced).
fn upstream_headers(headers: &mut HeaderMap, host: Option<HeaderValue>, creds: &Credentials) {
    // `te: trailers` says the caller reads trailers (gRPC needs it): end to end, kept.
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|t| t.split(',').any(|p| p.trim().eq_ignore_ascii_case("trailers"))));
    strip_hop_by_hop(headers);
    headers.remove(CONND_CONNECTION);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    headers.remove(header::EXPECT);
    if let Some(host) = host {
        headers.insert(header::HOST, host);
    }
    for (name, value) in &creds.headers {
        headers.insert(name.clone(), value.clone());
    }
}

/// The upstream's answer as the caller gets it: end-to-end headers, body streamed.
fn downstream(response: Response<Answer<UpstreamBody>>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Either::Left(body))
}

/// A request body, streamed or kept.
enum RequestBody {
    Streamed(Watched),
    Kept(Bytes),
}

/// Keeps a small body whole, so that the request can be sent again (a `Content-Length`
/// within [`RETRY_BODY_MAX`]); else streams it.
async fn request_body(headers: &HeaderMap, body: Incoming) -> Result<RequestBody, Refusal> {
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    if body.is_end_stream() {
        return Ok(RequestBody::Kept(Bytes::new()));
    }
    if !chunked && length.is_some_and(|n| n <= RETRY_BODY_MAX) {
        let collected = Limited::new(body, RETRY_BODY_MAX as usize).collect().await.map_err(|e| {
            refuse(StatusCode::BAD_REQUEST, "bad_body", format!("the request body could not be read: {e}"))
        })?;
        return Ok(RequestBody::Kept(collected.to_bytes()));
    }
    Ok(RequestBody::Streamed(Watched::new(body)))
}

/// When the request body last moved (the response timeout counts from then), and
/// whether the caller's body broke (a malformed chunk: the caller's fault, not the
/// upstream's).
pub struct Activity {
    epoch: Instant,
    /// Milliseconds after `epoch`.
    last_ms: AtomicU64,
    caller_failed: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity { epoch: Instant::now(), last_ms: AtomicU64::new(0), caller_failed: AtomicBool::new(false) }
    }

    fn caller_failed(&self) -> bool {
        self.caller_failed.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// The caller's body, streamed to the upstream frame by frame, noting each frame's time.
pub struct Watched {
    inner: Incoming,
    activity: Arc<Activity>,
}

impl Watched {
    fn new(body: Incoming) -> Watched {
        Watched { inner: body, activity: Arc::new(Activity::new()) }
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => self.activity.touch(),
            Poll::Ready(Some(Err(_))) => self.activity.caller_failed.store(true, Ordering::Relaxed),
            Poll::Ready(None) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        fields.iter().map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_go_and_the_rest_stay() {
        let mut none = map(&[("host", "a"), ("accept", "*/*"), ("x-trace", "1")]);
        let before = none.clone();
        strip_hop_by_hop(&mut none);
        assert_eq!(none, before);

        let mut some = map(&[
            ("host", "a"),
            ("connection", "close, X-Drop"),
            ("x-drop", "1"),
            ("close", "kept only when Connection does not name it"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-trace", "1"),
        ]);
        strip_hop_by_hop(&mut some);
        assert_eq!(some, map(&[("host", "a"), ("x-trace", "1")]));

        // A hop-by-hop field alone, with no Connection field, goes too.
        let mut alone = map(&[("upgrade", "websocket"), ("accept", "*/*")]);
        strip_hop_by_hop(&mut alone);
        assert_eq!(alone, map(&[("accept", "*/*")]));
    }
}
