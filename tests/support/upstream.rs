//! An upstream service for the egress proxy's tests and benches: a hyper server on
//! 127.0.0.1, over TLS with a CA made by rcgen ([`Pki`]) or plain. It records every
//! request (method, target, headers, body size) and answers by the path's last segment:
//!
//! - `download?n=BYTES`: that many bytes, generated as they are sent (chunked);
//! - `upload`: reads the body, counting, and answers `{"received": N}`;
//! - `never`: reads the request and never answers;
//! - `hop`: hop-by-hop fields in the answer (`Connection: x-up`, `X-Up`, `Keep-Alive`);
//! - `events`: three server-sent events, [`EVENT_GAP`] apart;
//! - `wide?n=FIELDS&size=BYTES`: an answer with that many header fields of that size
//!   (1100 bytes by default);
//! - anything else: echoes the request as JSON (`method`, `target`, `headers`, `body`).
//!
//! A request whose `Authorization` is [`Upstream::revoke`]d is answered 401.
//! It runs on its own thread and runtime, so synchronous tests can use it too.

#![allow(dead_code)]

use super::control_plane::fake_server::FakeServer;
use super::control_plane::Pki;
use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// What the upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// The HTTP version it arrived in.
    pub version: http::Version,
    /// Path and query, as received.
    pub target: String,
    pub headers: http::HeaderMap,
    pub body_len: u64,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    revoked: HashSet<String>,
    /// Requests whose head arrived (answered or not).
    arrivals: usize,
    /// Download bodies dropped before their end.
    cut: Arc<std::sync::atomic::AtomicUsize>,
}

pub struct Upstream {
    pub pki: Option<Pki>,
    server: FakeServer,
    state: Arc<Mutex<State>>,
}

impl Upstream {
    /// An upstream over TLS, its certificate signed by its own CA ([`Self::ca_file`]).
    pub fn tls() -> Upstream {
        Upstream::start(Some(Pki::new()))
    }

    /// A plain-http upstream.
    pub fn plain() -> Upstream {
        Upstream::start(None)
    }

    /// An upstream over TLS that asks for a client certificate signed by its own CA
    /// (`pki.client_cert`) and speaks HTTP/2 only (ALPN `h2`).
    pub fn mtls_h2() -> Upstream {
        let pki = Pki::new();
        let config = pki.mtls_h2_server_config();
        Upstream::start_with(Some(pki), Some(config))
    }

    /// As [`Self::mtls_h2`], speaking HTTP/1.1 only (ALPN `http/1.1`).
    pub fn mtls_http1() -> Upstream {
        let pki = Pki::new();
        let config = pki.mtls_server_config(b"http/1.1");
        Upstream::start_with(Some(pki), Some(config))
    }

    fn start(pki: Option<Pki>) -> Upstream {
        let config = pki.as_ref().map(Pki::server_config);
        Upstream::start_with(pki, config)
    }

    fn start_with(pki: Option<Pki>, config: Option<Arc<rustls::ServerConfig>>) -> Upstream {
        let state = Arc::new(Mutex::new(State::default()));
        let answered = state.clone();
        let server = FakeServer::start(config, || {}, move |req| answer(req, answered.clone()));
        Upstream { pki, server, state }
    }

    /// `https://127.0.0.1:<port>` or `http://...`.
    pub fn url(&self) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.server.addr().port())
    }

    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    pub fn ca_file(&self) -> &Path {
        &self.pki.as_ref().expect("a TLS upstream").ca_file
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().seen.clone()
    }

    pub fn arrivals(&self) -> usize {
        self.state.lock().arrivals
    }

    /// Download bodies the upstream stopped sending because the connection went away.
    pub fn cut_downloads(&self) -> usize {
        self.state.lock().cut.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Answers 401 from now on to requests with exactly this `Authorization` value.
    pub fn revoke(&self, authorization: &str) {
        self.state.lock().revoked.insert(authorization.to_owned());
    }
}

/// `n` bytes of `x`, made as they are polled: the upstream holds no large buffer.
pub struct Generated {
    pub left: u64,
    /// Counts the bodies dropped before their end (a caller went away).
    cut: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

impl Generated {
    pub fn new(n: u64) -> Generated {
        Generated { left: n, cut: None }
    }
}

impl Drop for Generated {
    fn drop(&mut self) {
        if let (Some(cut), true) = (&self.cut, self.left > 0) {
            cut.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK.len() as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n as usize])))))
    }
}

/// The pause between two of `events`' events.
pub const EVENT_GAP: std::time::Duration = std::time::Duration::from_millis(400);

/// Server-sent events, one every [`EVENT_GAP`], each its own frame.
pub struct Events {
    left: usize,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.left -= 1;
        let next = tokio::time::Instant::now() + EVENT_GAP;
        self.sleep.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(format!("data: event {}\n\n", 3 - self.left))))))
    }
}

type Answer = hyper::Response<Either<Full<Bytes>, Either<Generated, Events>>>;

fn json(status: u16, value: serde_json::Value) -> Answer {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Either::Left(Full::new(Bytes::from(value.to_string()))))
        .expect("response")
}

async fn answer(req: hyper::Request<Incoming>, state: Arc<Mutex<State>>) -> Result<Answer, Infallible> {
    state.lock().arrivals += 1;
    let (parts, mut body) = req.into_parts();
    let target = parts.uri.path_and_query().map_or("/".to_owned(), |p| p.as_str().to_owned());
    let last = parts.uri.path().rsplit('/').next().unwrap_or("").to_owned();
    if last == "never" {
        std::future::pending::<()>().await;
    }
    // Reads the body frame by frame, keeping at most 64 KiB of it.
    let mut body_len = 0u64;
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            body_len += data.len() as u64;
            if kept.len() < 64 * 1024 {
                kept.extend_from_slice(&data[..data.len().min(64 * 1024 - kept.len())]);
            }
        }
    }
    let revoked = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| state.lock().revoked.contains(v));
    let response = if revoked {
        json(401, serde_json::json!({"error": "invalid_token"}))
    } else {
        match last.as_str() {
            "download" => {
                let n =
                    parts.uri.query().and_then(|q| q.strip_prefix("n=")).and_then(|n| n.parse().ok()).unwrap_or(0u64);
                hyper::Response::builder()
                    .header("content-type", "application/octet-stream")
                    .body(Either::Right(Either::Left(Generated { left: n, cut: Some(state.lock().cut.clone()) })))
                    .expect("response")
            }
            "upload" => json(200, serde_json::json!({ "received": body_len })),
            "events" => hyper::Response::builder()
                .header("content-type", "text/event-stream")
                .body(Either::Right(Either::Right(Events { left: 3, sleep: Box::pin(tokio::time::sleep(EVENT_GAP)) })))
                .expect("response"),
            "wide" => {
                let query: Vec<usize> = parts
                    .uri
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .filter_map(|kv| kv.split_once('=')?.1.parse().ok())
                    .collect();
                let (n, size) = (query.first().copied().unwrap_or(0), query.get(1).copied().unwrap_or(1100));
                let mut r = json(200, serde_json::json!({ "fields": n }));
                for i in 0..n {
                    r.headers_mut().insert(
                        http::HeaderName::from_bytes(format!("x-wide-{i}").as_bytes()).unwrap(),
                        http::HeaderValue::from_str(&"w".repeat(size)).unwrap(),
                    );
                }
                r
            }
            "hop" => {
                let mut r = json(200, serde_json::json!({}));
                let h = r.headers_mut();
                h.insert("connection", "x-up".parse().unwrap());
                h.insert("x-up", "hop-only".parse().unwrap());
                h.insert("keep-alive", "timeout=5".parse().unwrap());
                h.insert("x-end", "kept".parse().unwrap());
                r
            }
            _ => {
                let mut headers = serde_json::Map::new();
                for name in parts.headers.keys() {
                    let values: Vec<serde_json::Value> = parts
                        .headers
                        .get_all(name)
                        .iter()
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
                        .collect();
                    headers.insert(name.as_str().to_owned(), values.into());
                }
                json(
                    200,
                    serde_json::json!({
                        "method": parts.method.as_str(),
                        "target": target,
                        "headers": headers,
                        "body": String::from_utf8_lossy(&kept),
                        "body_len": body_len,
                    }),
                )
            }
        }
    };
    state.lock().seen.push(Seen {
        version: parts.version,
        method: parts.method.to_string(),
        target,
        headers: parts.headers,
        body_len,
        status: response.status().as_u16(),
    });
    Ok(response)
}
