//! `connd webhook` (docs/kubernetes.md): the mutating admission webhook. HTTPS on
//! `--listen` with the certificate of `--tls-cert`/`--tls-key` (re-read when the files
//! change, `certs`); `POST /mutate` answers an `AdmissionReview` (`review`); `/healthz`,
//! `/readyz` (503 from SIGTERM on, so the Service stops sending) and `/metrics`. After
//! SIGTERM it keeps answering for `--shutdown-delay`, while the endpoints drop it.
//!
//! Connections go through `listen::conn`, as the API's do: the connection cap, the
//! request-head timeout, and on SIGTERM the bounded drain (requests in flight answered,
//! then closed). The TLS handshake runs in the connection's task, under a timeout, so a
//! slow client never holds up the accept loop.
//!
//! Boundary: HTTP and TLS; what a review is answered with is `review`'s.

pub mod certs;
pub mod metrics;
pub mod review;

use crate::inject::Settings;
use crate::listen::conn::{self, Limits, WhenFull};
use crate::listen::ListenError;
use bytes::Bytes;
use certs::CertFiles;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use metrics::Metrics;
use review::Verdict;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Largest review body read; a Pod is at most ~1.5 MiB in etcd, its review a little more.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Time a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client gets to send a review's body once its head arrived: the API server waits
/// only `timeoutSeconds` (at most 30 s) for the answer, so a body slower than that holds a
/// connection slot for nothing.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What `connd webhook` runs with (its flags).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub inject: Settings,
    pub limits: Limits,
    /// How long SIGTERM waits for requests in flight.
    pub grace: Duration,
    /// How long, after SIGTERM, new connections are still accepted (`/readyz` answering
    /// 503) while the Service's endpoints drop this replica: the API server may still send
    /// it reviews meanwhile, and with `failurePolicy: Fail` a refused one fails a pod.
    pub shutdown_delay: Duration,
}

/// What every connection shares.
struct State {
    settings: Settings,
    metrics: Arc<Metrics>,
    /// Cancelled when shutdown starts (before the delay): `/readyz` then answers 503.
    stopping: CancellationToken,
}

/// Runs the webhook until SIGTERM or SIGINT, then drains.
pub fn command(settings: &WebhookSettings) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(async {
        let shutdown = crate::signal::shutdown()?;
        // The certificate is re-read as its files change, so SIGHUP asks for nothing:
        // like any stray signal, it must not end the webhook.
        drop(crate::signal::hangups()?);
        crate::signal::ignore_stray()?;
        let metrics = Arc::new(Metrics::default());
        let tls = tls_config(settings, metrics.clone())?;
        let listener = tokio::net::TcpListener::bind(settings.listen).await.map_err(|error| ListenError {
            flag: "--listen",
            addr: settings.listen,
            error,
        })?;
        let addr = listener.local_addr().unwrap_or(settings.listen);
        tracing::info!(%addr, "webhook listening");
        serve(listener, tls, settings, metrics, shutdown).await;
        anyhow::Ok(())
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}

/// The server's TLS configuration: rustls with `ring`, HTTP/1.1, the reloading pair
/// (its re-reads counted in `metrics`).
pub fn tls_config(
    settings: &WebhookSettings,
    metrics: Arc<Metrics>,
) -> Result<Arc<rustls::ServerConfig>, certs::CertError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let files = CertFiles::load(&settings.tls_cert, &settings.tls_key, provider.clone(), metrics)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| certs::CertError::setup(&settings.tls_cert, e))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(files));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts on `listener` until `shutdown` and `settings.shutdown_delay` after it, then
/// drains within `settings.grace`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    settings: &WebhookSettings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let draining = CancellationToken::new();
    let stopping = CancellationToken::new();
    let state = Arc::new(State { settings: settings.inject.clone(), metrics, stopping: stopping.clone() });
    let delay = settings.shutdown_delay;
    let shutdown = async move {
        shutdown.await;
        stopping.cancel();
        if !delay.is_zero() {
            tracing::info!(delay_seconds = delay.as_secs_f32(), "not ready; still answering until the delay ends");
            tokio::time::sleep(delay).await;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let limits = settings.limits;
    conn::serve(
        listener,
        limits.max_connections,
        WhenFull::<fn(_)>::Wait,
        settings.grace,
        draining.clone(),
        shutdown,
        {
            move |tcp| {
                let (acceptor, state, draining) = (acceptor.clone(), state.clone(), draining.clone());
                async move {
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!("TLS handshake timed out"),
                    };
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(route(&state, req).await) }
                    });
                    conn::http1(stream, service, limits, conn::MAX_HEAD_BYTES, draining).await;
                }
            }
        },
    )
    .await;
}

type Body = Full<Bytes>;

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    text(status, "application/json", serde_json::to_vec(value).unwrap_or_default())
}

async fn route(state: &State, req: Request<hyper::body::Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/mutate") => mutate(state, req).await,
        (&Method::GET | &Method::HEAD, "/healthz") => json(StatusCode::OK, &serde_json::json!({ "status": "serving" })),
        (&Method::GET | &Method::HEAD, "/readyz") => match state.stopping.is_cancelled() {
            false => json(StatusCode::OK, &serde_json::json!({ "status": "ready" })),
            true => json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({ "status": "draining" })),
        },
        (&Method::GET | &Method::HEAD, "/metrics") => {
            text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", state.metrics.render())
        }
        (_, "/mutate" | "/healthz" | "/readyz" | "/metrics") => {
            let mut r = json(
                StatusCode::METHOD_NOT_ALLOWED,
                &serde_json::json!({ "error": format!("{} is not allowed here", req.method()) }),
            );
            let allow = if req.uri().path() == "/mutate" { "POST" } else { "GET, HEAD" };
            r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
            r
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": "not found: the webhook serves POST /mutate, /healthz, /readyz and /metrics" }),
        ),
    }
}

/// `POST /mutate`: the review answered, or 400 (413 for a body over the limit).
async fn mutate(state: &State, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let started = Instant::now();
    let reading = tokio::time::timeout(BODY_TIMEOUT, Limited::new(req.into_body(), MAX_BODY_BYTES).collect());
    let body = match reading.await {
        Ok(Ok(body)) => body.to_bytes(),
        Err(_) => {
            state.metrics.review(Verdict::Malformed, started.elapsed());
            let message = format!("the review's body did not arrive within {}s", BODY_TIMEOUT.as_secs());
            let mut response = json(StatusCode::REQUEST_TIMEOUT, &serde_json::json!({ "error": message }));
            response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            return response;
        }
        Ok(Err(e)) => {
            state.metrics.review(Verdict::Malformed, started.elapsed());
            let too_large = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
            let (status, message) = match too_large {
                true => (StatusCode::PAYLOAD_TOO_LARGE, format!("the review is over {MAX_BODY_BYTES} bytes")),
                false => (StatusCode::BAD_REQUEST, format!("cannot read the review: {e}")),
            };
            return json(status, &serde_json::json!({ "error": message }));
        }
    };
    let (verdict, response) = match review::answer(&body, &state.settings) {
        Ok((verdict, review)) => {
            if verdict == Verdict::Denied {
                let message = review["response"]["status"]["message"].as_str().unwrap_or("");
                tracing::info!(message, "review denied");
            }
            (verdict, json(StatusCode::OK, &review))
        }
        Err(message) => (Verdict::Malformed, json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": message }))),
    };
    state.metrics.review(verdict, started.elapsed());
    response
}
