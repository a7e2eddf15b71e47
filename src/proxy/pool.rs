//! The proxy's own pool of upstream connections, on hyper's `client::conn`: HTTP/1.1
//! senders kept idle per upstream (scheme and authority) and handed back when the
//! answer's body ends, one shared HTTP/2 connection per upstream. It replaces
//! hyper-util's pooled client, whose per-request costs (a pool key and a connect future
//! built, the connection's info copied into the request and the answer, a task spawned
//! per answer to wait for the connection to be idle again) `benches/proxy.rs` measured
//! in the proxy's profile.
//!
//! Boundary: it sends requests and keeps connections; what a failure means for the
//! caller is `forward`'s, how a connection is made (TCP, the outbound proxy, TLS) the
//! `upstream::Connector`'s.

use super::upstream::{ConnectError, Connector, Wire, MAX_ANSWER_FIELDS, MAX_ANSWER_HEAD};
use crate::http::connect::Refused;
use bytes::Bytes;
use foldhash::HashMap;
use foldhash::HashMapExt;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::Mutex;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower_service::Service;

/// How long an idle pooled connection to an upstream is kept.
const IDLE_FOR: Duration = Duration::from_secs(90);
/// Idle HTTP/1.1 connections kept per upstream.
const MAX_IDLE_PER_UPSTREAM: usize = 256;
/// How often the idle connections of every upstream are swept for expired or closed ones
/// (an expired one is closed then, within `IDLE_FOR` and this).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// An upstream: connections are kept per scheme and authority.
type Key = (Scheme, Authority);

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (or the TLS handshake failed, or the outbound proxy
    /// refused the tunnel).
    #[error("cannot connect: {0}")]
    Connect(#[source] ConnectError),
    /// The request, or the answer's head, broke on the connection.
    #[error("{0}")]
    Exchange(#[source] hyper::Error),
    /// The first exchange on a new h2c connection (HTTP/2 with prior knowledge, spoken to
    /// a plain `http://` upstream when the caller speaks HTTP/2) broke: what an upstream
    /// that speaks HTTP/1.1 only does (docs/proxy.md "Protocols").
    #[error("{0}")]
    PriorKnowledge(#[source] hyper::Error),
    /// A new connection closed before it took the request.
    #[error("the upstream closed the connection before the request was sent")]
    ClosedUnsent,
    /// The URI names no scheme or host (forward makes absolute URIs: not expected).
    #[error("the upstream URI has no scheme or host")]
    NoAuthority,
}

/// A failed exchange: why, and whether the connection had served a request before.
pub struct Failed {
    pub error: SendError,
    pub reused: bool,
    /// The TLS alert that ended the connection the exchange was on, once one came.
    pub refused: Option<Refused>,
}

/// The connections of one [`Wire`] over one connector; `keep: false` makes a new
/// connection for every request and keeps none (the one resend after a keep-alive race,
/// which must not meet another stale kept connection).
pub struct Pool<B> {
    inner: Arc<Inner<B>>,
}

struct Inner<B> {
    connector: Connector,
    wire: Wire,
    keep: bool,
    state: Mutex<State<B>>,
}

struct State<B> {
    http1: HashMap<Key, Vec<Idle<B>>>,
    http2: HashMap<Key, (http2::SendRequest<B>, Refused)>,
}

/// An idle HTTP/1.1 connection: its sender, whether requests on it go to an outbound
/// proxy in absolute form, and since when it waits.
struct Idle<B> {
    sender: http1::SendRequest<B>,
    proxied: bool,
    refused: Refused,
    since: Instant,
}

/// A connection ready for one request.
enum Ready<B> {
    Http1 { sender: http1::SendRequest<B>, proxied: bool, refused: Refused },
    Http2(http2::SendRequest<B>, Refused),
}

impl<B> Ready<B> {
    fn refused(&self) -> &Refused {
        match self {
            Ready::Http1 { refused, .. } | Ready::Http2(_, refused) => refused,
        }
    }
}

impl<B> Pool<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(connector: Connector, wire: Wire, keep: bool) -> Pool<B> {
        let state = State { http1: HashMap::new(), http2: HashMap::new() };
        let inner = Arc::new(Inner { connector, wire, keep, state: Mutex::new(state) });
        if keep {
            sweep_while_kept(Arc::downgrade(&inner));
        }
        Pool { inner }
    }

    /// Sends `req` (an absolute URI) on a kept connection to its upstream, or a new one.
    /// A kept connection found closed, or one that took the request but never started
    /// it, is passed over for the next (the request was not sent).
    pub async fn send(&self, mut req: Request<B>) -> Result<Response<Answer<B>>, Failed> {
        let key = key(req.uri()).ok_or(Failed { error: SendError::NoAuthority, reused: false, refused: None })?;
        loop {
            let (ready, reused) = match self.kept(&key).await {
                Some(ready) => (ready, true),
                // Boxed: a new connection is the rare case, and its handshakes would
                // make every request's future larger.
                None => match Box::pin(self.connect(&key, req.uri())).await {
                    Ok(ready) => (ready, false),
                    Err(error) => return Err(Failed { error, reused: false, refused: None }),
                },
            };
            let refused = Some(ready.refused().clone());
            let first_h2c = !reused && self.inner.wire == Wire::H2c;
            req = match self.send_on(ready, &key, req).await {
                Ok(response) => return Ok(response),
                Err(Unsent::Back(req)) if reused => *req,
                Err(Unsent::Back(_)) => return Err(Failed { error: SendError::ClosedUnsent, reused, refused }),
                Err(Unsent::Failed(error)) if first_h2c => {
                    return Err(Failed { error: SendError::PriorKnowledge(error), reused, refused })
                }
                Err(Unsent::Failed(error)) => {
                    return Err(Failed { error: SendError::Exchange(error), reused, refused })
                }
            };
        }
    }

    async fn send_on(&self, ready: Ready<B>, key: &Key, mut req: Request<B>) -> Result<Response<Answer<B>>, Unsent<B>> {
        match ready {
            Ready::Http1 { mut sender, proxied, refused } => {
                if !proxied {
                    origin_form(req.uri_mut());
                }
                let response = sender.try_send_request(req).await.map_err(|mut e| match e.take_message() {
                    Some(req) => Unsent::Back(Box::new(req)),
                    None => Unsent::Failed(e.into_error()),
                })?;
                // A `101`'s connection is the tunnel's now, never another request's.
                let keep = self.inner.keep && response.status() != http::StatusCode::SWITCHING_PROTOCOLS;
                let checkin =
                    keep.then(|| Checkin { pool: self.inner.clone(), key: key.clone(), sender, proxied, refused });
                let (parts, body) = response.into_parts();
                Ok(Response::from_parts(parts, Answer::new(body, checkin)))
            }
            Ready::Http2(mut sender, _) => {
                let response = sender.try_send_request(req).await.map_err(|mut e| match e.take_message() {
                    Some(req) => Unsent::Back(Box::new(req)),
                    None => Unsent::Failed(e.into_error()),
                })?;
                Ok(response.map(|body| Answer::new(body, None)))
            }
        }
    }

    /// A kept connection to `key` ready for a request: the shared HTTP/2 one, or the
    /// most recently idle HTTP/1.1 one (the likeliest to be open still).
    async fn kept(&self, key: &Key) -> Option<Ready<B>> {
        if !self.inner.keep {
            return None;
        }
        loop {
            let idle = {
                let mut state = self.inner.state.lock();
                if let Some((h2, refused)) = state.http2.get(key) {
                    if !h2.is_closed() {
                        return Some(Ready::Http2(h2.clone(), refused.clone()));
                    }
                    state.http2.remove(key);
                }
                state.http1.get_mut(key)?.pop()?
            };
            if idle.sender.is_closed() || idle.since.elapsed() > IDLE_FOR {
                continue;
            }
            let mut sender = idle.sender;
            // Given back when its answer's body ended: the connection may need a turn to
            // take the next request.
            if sender.ready().await.is_ok() {
                return Some(Ready::Http1 { sender, proxied: idle.proxied, refused: idle.refused });
            }
        }
    }

    /// A new connection to `key`, HTTP/2 when TLS chose it (or the wire is h2c), kept
    /// for others at once when it is HTTP/2.
    async fn connect(&self, key: &Key, uri: &Uri) -> Result<Ready<B>, SendError> {
        let mut connector = self.inner.connector.clone();
        let conn = connector.call(uri.clone()).await.map_err(SendError::Connect)?;
        let connected = conn.connected();
        let refused = refused_of(&connected);
        if connected.is_negotiated_h2() || self.inner.wire == Wire::H2c {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new()).max_header_list_size(MAX_ANSWER_HEAD as u32);
            let (sender, connection) = builder.handshake(conn).await.map_err(SendError::Exchange)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            if self.inner.keep {
                self.inner.state.lock().http2.insert(key.clone(), (sender.clone(), refused.clone()));
            }
            return Ok(Ready::Http2(sender, refused));
        }
        let mut builder = http1::Builder::new();
        builder.max_buf_size(MAX_ANSWER_HEAD).max_headers(MAX_ANSWER_FIELDS);
        let (sender, connection) = builder.handshake(conn).await.map_err(SendError::Exchange)?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(Ready::Http1 { sender, proxied: connected.is_proxied(), refused })
    }
}

/// The record of a TLS alert the connector put in `connected`'s extras (a fresh one for
/// a connection that has none: plain TCP).
fn refused_of(connected: &Connected) -> Refused {
    let mut extensions = http::Extensions::new();
    connected.get_extras(&mut extensions);
    extensions.get::<Refused>().cloned().unwrap_or_default()
}

/// A request not sent: given back (the connection was closed before it started), or
/// failed on the way.
enum Unsent<B> {
    Back(Box<Request<B>>),
    Failed(hyper::Error),
}

/// Every [`SWEEP_EVERY`], drops the pool's expired and closed connections (dropping an
/// idle sender closes its connection), until the pool itself is dropped. Outside a
/// runtime (no pool is made there) nothing is swept.
fn sweep_while_kept<B: Send + 'static>(pool: std::sync::Weak<Inner<B>>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let Some(pool) = pool.upgrade() else { return };
            let now = Instant::now();
            let mut state = pool.state.lock();
            for idle in state.http1.values_mut() {
                idle.retain(|i| !i.sender.is_closed() && now.duration_since(i.since) <= IDLE_FOR);
            }
            state.http1.retain(|_, idle| !idle.is_empty());
            state.http2.retain(|_, (h2, _)| !h2.is_closed());
        }
    });
}

/// The upstream of `uri`: its scheme and authority.
fn key(uri: &Uri) -> Option<Key> {
    Some((uri.scheme()?.clone(), uri.authority()?.clone()))
}

/// `uri` as an HTTP/1.1 request line to the server itself names it: path and query.
fn origin_form(uri: &mut Uri) {
    let path = match uri.path_and_query() {
        Some(p) if p.as_str() != "/" => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(p.clone());
            Uri::from_parts(parts).unwrap_or_default()
        }
        _ => Uri::default(),
    };
    *uri = path;
}

/// An HTTP/1.1 connection lent to one exchange, given back to its pool when the answer's
/// body has ended (and only then: a connection whose answer was not read to the end
/// cannot take another request, and closes when its sender is dropped).
struct Checkin<B> {
    pool: Arc<Inner<B>>,
    key: Key,
    sender: http1::SendRequest<B>,
    proxied: bool,
    refused: Refused,
}

impl<B> Checkin<B> {
    fn give_back(self) {
        let Checkin { pool, key, sender, proxied, refused } = self;
        let since = Instant::now();
        let mut state = pool.state.lock();
        let idle = state.http1.entry(key).or_default();
        if idle.len() < MAX_IDLE_PER_UPSTREAM {
            idle.push(Idle { sender, proxied, refused, since });
        }
    }
}

/// The upstream's answer body, which gives its connection back to the pool when it ends.
pub struct Answer<B> {
    body: Incoming,
    checkin: Option<Checkin<B>>,
}

impl<B> Answer<B> {
    fn new(body: Incoming, checkin: Option<Checkin<B>>) -> Answer<B> {
        let mut answer = Answer { body, checkin };
        answer.ended_if_empty();
        answer
    }

    fn ended_if_empty(&mut self) {
        if self.body.is_end_stream() {
            if let Some(checkin) = self.checkin.take() {
                checkin.give_back();
            }
        }
    }
}

impl<B: Unpin> Body for Answer<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(checkin) = self.checkin.take() {
                    checkin.give_back();
                }
            }
            Poll::Ready(Some(Ok(_))) => self.ended_if_empty(),
            // A broken answer: its connection is dropped with it.
            Poll::Ready(Some(Err(_))) => self.checkin = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
