//! `--metrics-listen ADDR` (docs/commands.md): a TCP listener for Prometheus scrapes and kubelet
//! `httpGet` probes that serves `/metrics`, `/healthz` and `/readyz` and nothing else:
//! never a value, so it needs no caller check and may listen beyond loopback.
//!
//! Boundary: its own small HTTP/1.1 service over the same answers as the API's routes
//! (`routes::{metrics_text, healthz, readyz}`), on the connection handling of
//! `listen::conn`; `serve` and `run` own its task.

use crate::listen::conn::{self, Limits, WhenFull};
use crate::listen::ListenError;
use crate::metrics::{Metrics, Route};
use crate::reload::snapshot::Store;
use crate::serve::api::routes::{self, Body};
use http::{header, Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A scraper or a probe sends its request head at once; scrapers and probes are few, so
/// more than 64 at once wait to be accepted.
const LIMITS: Limits = Limits { header_read_timeout: Duration::from_secs(10), max_connections: 64 };

/// Binds `addr` now, so that a bad address fails at startup, before anything else.
pub fn bind(addr: SocketAddr) -> Result<Arc<std::net::TcpListener>, ListenError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|error| ListenError { flag: "--metrics-listen", addr, error })?;
    listener.set_nonblocking(true).map_err(|error| ListenError { flag: "--metrics-listen", addr, error })?;
    Ok(Arc::new(listener))
}

/// Answers one request: GET or HEAD on the three paths, 404 for any other path (a
/// value route included), 405 for another method.
pub fn answer<B>(store: &Store, metrics: &Metrics, req: &Request<B>) -> (Route, Response<Body>) {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = routes::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not allowed: use GET or HEAD", req.method()),
        );
        r.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return (Route::Other, r);
    }
    match req.uri().path() {
        "/metrics" => (Route::Metrics, routes::metrics_text(metrics)),
        "/healthz" => (Route::Healthz, routes::healthz()),
        "/readyz" => (Route::Readyz, routes::readyz_of(store)),
        _ => (
            Route::Other,
            routes::error(
                StatusCode::NOT_FOUND,
                "not_found",
                "this listener serves only /metrics, /healthz and /readyz; values are on the Unix socket",
            ),
        ),
    }
}

/// Accepts until `shutdown`, then closes every connection at once.
pub async fn serve(
    listener: Arc<std::net::TcpListener>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let listener = match listener.try_clone().and_then(tokio::net::TcpListener::from_std) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve --metrics-listen");
            return;
        }
    };
    // Scrapes and probes are short: nothing to wait for on shutdown.
    let draining = CancellationToken::new();
    let conns = conn::serve(
        listener,
        LIMITS.max_connections,
        WhenFull::<fn(_)>::Wait,
        Duration::ZERO,
        draining.clone(),
        shutdown,
        |stream| {
            let (store, metrics) = (store.clone(), metrics.clone());
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (route, response) = answer(&store, &metrics, &req);
                metrics.request(route, response.status().as_u16());
                std::future::ready(Ok::<_, Infallible>(response))
            });
            conn::http1(stream, service, LIMITS, conn::MAX_HEAD_BYTES, draining.clone())
        },
    );
    conns.await;
}
