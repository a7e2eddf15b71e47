//! The routes of docs/api.md, answered from the current snapshot. Reads are lock-free
//! (`Store::load`); blocking queries subscribe to the store's watch channel and answer
//! when their answer's index moves, when `wait` runs out, or when draining starts.
//! Errors are JSON `{"error", "code"}`; values leave the process only in 200 bodies.

use super::ApiState;
use crate::metrics::Route;
use crate::output::{render_env, Format};
use crate::reload::snapshot::{Resolved, Snapshot};
use crate::source::{SourceError, Sources};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Longest request target accepted; connection names are at most 50 characters.
pub const MAX_PATH: usize = 1024;
/// Longest `wait` honoured; longer ones are shortened to it.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// `wait` when a blocking query gives `index` alone.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
pub const INDEX_HEADER: &str = "x-connd-index";

pub type Body = Full<Bytes>;

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("valid response")
}

pub fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response<Body> {
    json_response(status, &json!({ "error": message.to_string(), "code": code }))
}

/// Answers one request and counts it.
pub async fn handle<S: Sources>(
    state: &ApiState<S>,
    allowed: bool,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let (route, response) = route(state, allowed, &req).await;
    state.metrics.request(route, response.status().as_u16());
    response
}

async fn route<S: Sources, B>(state: &ApiState<S>, allowed: bool, req: &Request<B>) -> (Route, Response<Body>) {
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > MAX_PATH {
        let message = format!("the request target is {target_len} bytes, over the limit of {MAX_PATH}");
        return (Route::Other, error(StatusCode::URI_TOO_LONG, "uri_too_long", message));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not allowed: the API is read-only, use GET or HEAD", req.method()),
        );
        r.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return (Route::Other, r);
    }
    if !allowed {
        let message = "this caller's uid and gid are not allowed; start connd with --allow-uid or --allow-gid";
        return (Route::Other, error(StatusCode::FORBIDDEN, "forbidden", message));
    }
    let path = req.uri().path();
    // Only the routes that read a query parse one: a probe's cache-busting `?index=x`
    // on `/healthz` is no error.
    let query = match route_of(path) {
        Route::Env | Route::Connection => match Query::parse(req.uri().query().unwrap_or("")) {
            Ok(q) => q,
            Err(message) => return (route_of(path), error(StatusCode::BAD_REQUEST, "bad_query", message)),
        },
        _ => Query::default(),
    };
    match path {
        "/healthz" => (Route::Healthz, healthz()),
        "/readyz" => (Route::Readyz, readyz_of(&state.store)),
        "/metrics" => (Route::Metrics, metrics(state)),
        "/v1/env" => (Route::Env, env(state, &query).await),
        "/v1/connections" => (Route::Connections, with_resolved(&state.store.load(), list)),
        _ => match path.strip_prefix("/v1/connections/") {
            Some(rest) => match rest.strip_suffix("/token") {
                Some(name) => (Route::Token, token(state, &decode(name)).await),
                None => (Route::Connection, connection(state, &decode(rest), &query).await),
            },
            None => (Route::Other, error(StatusCode::NOT_FOUND, "not_found", format!("no route {path}"))),
        },
    }
}

fn route_of(path: &str) -> Route {
    match path {
        "/v1/env" => Route::Env,
        p if p.starts_with("/v1/connections/") && !p.ends_with("/token") => Route::Connection,
        _ => Route::Other,
    }
}

/// The query parameters the API knows; others are ignored.
#[derive(Debug, Default)]
struct Query {
    index: Option<u64>,
    wait: Option<Duration>,
    dotenv: bool,
}

impl Query {
    fn parse(query: &str) -> Result<Query, String> {
        let mut q = Query::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "index" => q.index = Some(value.parse().map_err(|_| format!("index={value:?} is not a whole number"))?),
                "wait" => q.wait = Some(crate::duration::parse_duration(&value)?.min(MAX_WAIT)),
                "format" => match &*value {
                    "json" => q.dotenv = false,
                    "dotenv" => q.dotenv = true,
                    other => return Err(format!("format={other:?} is not served; use json or dotenv")),
                },
                _ => {}
            }
        }
        Ok(q)
    }
}

/// Percent-decodes a path segment (connection names may hold spaces); a `%` not
/// followed by two hex digits stays as it is.
fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

fn not_ready(s: &Snapshot) -> Response<Body> {
    let reason = match &s.failure {
        Some(f) => format!("not ready: {}", f.message),
        None => "not ready: the first resolution has not finished".to_owned(),
    };
    error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason)
}

/// `/readyz` of `store`: [`readyz`] of its snapshot once the files (docs/files.md) were
/// written once and the connections' proxy ports (docs/proxy.md) opened, 503 `not_ready`
/// before.
pub fn readyz_of(store: &crate::reload::snapshot::Store) -> Response<Body> {
    let snapshot = store.load();
    if snapshot.resolved.is_some() && store.files_are_pending() {
        let reason = "not ready: the files are not written yet".to_owned();
        return error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason);
    }
    if snapshot.resolved.is_some() && store.ports_are_pending() {
        let reason = "not ready: the connections' proxy ports are not open yet".to_owned();
        return error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason);
    }
    if let Some(why) = store.ports_missing().filter(|_| snapshot.resolved.is_some()) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", format!("not ready: {why}"));
    }
    readyz(&snapshot)
}

/// `/readyz`: 200 once the first full resolution succeeded, else 503 with the reason.
/// On the outage cache's values (docs/cache.md), still 200, its body says they are
/// stale, how old, and why.
pub fn readyz(s: &Snapshot) -> Response<Body> {
    match (&s.resolved, s.cached) {
        (Some(_), None) => json_response(StatusCode::OK, &json!({ "status": "ready" })),
        (Some(_), Some(written)) => {
            let age = std::time::SystemTime::now().duration_since(written).unwrap_or_default().as_secs();
            let reason = s.failure.as_ref().map(|f| f.message.clone());
            json_response(
                StatusCode::OK,
                &json!({ "status": "ready", "stale": true, "cache_age_seconds": age, "reason": reason }),
            )
        }
        (None, _) => not_ready(s),
    }
}

fn metrics<S>(state: &ApiState<S>) -> Response<Body> {
    metrics_text(&state.metrics)
}

/// `/metrics`: the Prometheus text exposition of `metrics`.
pub fn metrics_text(metrics: &crate::metrics::Metrics) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
        .body(Full::new(Bytes::from(metrics.render())))
        .expect("valid response")
}

/// `/healthz`: 200 while the process serves.
pub fn healthz() -> Response<Body> {
    json_response(StatusCode::OK, &json!({ "status": "serving" }))
}

fn with_resolved(s: &Snapshot, answer: impl FnOnce(&Resolved) -> Response<Body>) -> Response<Body> {
    match &s.resolved {
        Some(r) => answer(r),
        None => not_ready(s),
    }
}

fn with_index(mut r: Response<Body>, index: u64) -> Response<Body> {
    r.headers_mut().insert(INDEX_HEADER, index.into());
    r
}

/// The snapshot to answer from: at once, or, when `index` is the current one, after
/// the answer's index moves, `wait` passes or draining starts.
async fn blocking<S>(state: &ApiState<S>, q: &Query, index_of: impl Fn(&Snapshot) -> Option<u64>) -> Arc<Snapshot> {
    let Some(want) = q.index else { return state.store.load() };
    // Subscribe before loading, so that a change between the two is not missed.
    let mut rx = state.store.subscribe();
    let now = state.store.load();
    if index_of(&now) != Some(want) {
        return now;
    }
    let _parked = state.metrics.parked();
    let deadline = tokio::time::sleep(q.wait.unwrap_or(DEFAULT_WAIT));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() || index_of(&rx.borrow_and_update()) != Some(want) {
                    break;
                }
            }
            () = &mut deadline => break,
            () = state.draining.cancelled() => break,
        }
    }
    state.store.load()
}

async fn env<S>(state: &ApiState<S>, q: &Query) -> Response<Body> {
    let s = blocking(state, q, |s| s.env().map(|(_, i)| i)).await;
    with_resolved(&s, |r| {
        let env = &r.values.env;
        let response = if q.dotenv {
            Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from(render_env(env, Format::Dotenv))))
                .expect("valid response")
        } else {
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(r.env_json.0.clone()))
                .expect("valid response")
        };
        with_index(response, r.env_index)
    })
}

fn describe(r: &Resolved, i: usize) -> Map<String, Value> {
    r.describe(i).into_iter().map(|(k, v)| (k.to_owned(), v.into())).collect()
}

fn list(r: &Resolved) -> Response<Body> {
    let items: Vec<Value> = (0..r.plan.connections.len())
        .map(|i| {
            let mut m = describe(r, i);
            m.insert("keys".into(), r.keys(i).into());
            Value::Object(m)
        })
        .collect();
    with_index(json_response(StatusCode::OK, &json!({ "connections": items })), r.connections_index)
}

fn no_connection(r: &Resolved, name: &str) -> Response<Body> {
    let names: Vec<&str> = r.plan.connections.iter().map(|c| c.name.as_str()).collect();
    error(
        StatusCode::NOT_FOUND,
        "no_such_connection",
        format!("this component references no connection {name:?}; it references: {}", names.join(", ")),
    )
}

async fn connection<S>(state: &ApiState<S>, name: &str, q: &Query) -> Response<Body> {
    let s = blocking(state, q, |s| {
        let r = s.resolved.as_ref()?;
        r.position(name).map(|i| r.connection_index[i])
    })
    .await;
    with_resolved(&s, |r| {
        let Some(i) = r.position(name) else { return no_connection(r, name) };
        let mut m = describe(r, i);
        let params: Map<String, Value> =
            r.values.connections[i].iter().map(|(k, v)| (k.clone(), v.expose().into())).collect();
        m.insert("parameters".into(), Value::Object(params));
        with_index(json_response(StatusCode::OK, &Value::Object(m)), r.connection_index[i])
    })
}

async fn token<S: Sources>(state: &ApiState<S>, name: &str) -> Response<Body> {
    let s = state.store.load();
    let Some(r) = &s.resolved else { return not_ready(&s) };
    let Some(i) = r.position(name) else { return no_connection(r, name) };
    match state.sources.token(&r.plan, i, &r.values.connections[i]).await {
        Ok(t) => json_response(
            StatusCode::OK,
            &json!({
                "access_token": t.access_token.expose(),
                "token_type": t.token_type,
                "expires_in": t.expires_in.as_secs(),
            }),
        ),
        Err(e @ SourceError::NotOAuth { .. }) => error(StatusCode::NOT_FOUND, "not_oauth", e),
        Err(SourceError::Other(e)) => {
            error(StatusCode::BAD_GATEWAY, "token_unavailable", format!("no token for {name:?}: {e:#}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_names() {
        let q = Query::parse("index=7&wait=2s&format=dotenv&other=x").unwrap();
        assert_eq!((q.index, q.wait, q.dotenv), (Some(7), Some(Duration::from_secs(2)), true));
        assert_eq!(Query::parse("wait=2h").unwrap().wait, Some(MAX_WAIT));
        assert_eq!(Query::parse("index=x").unwrap_err(), "index=\"x\" is not a whole number");
        assert!(Query::parse("format=yaml").unwrap_err().contains("use json or dotenv"));
        assert_eq!(decode("hr%20service%2"), "hr service%2");
    }
}
