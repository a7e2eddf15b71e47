//! What the two servers (the API on its Unix socket, `--metrics-listen` on TCP) do
//! alike with their connections, written once: the accept loop and its backoff after a
//! failed accept, the connection cap, the request-head limits, and the bounded drain on
//! shutdown (no new connections, the request in flight finished, `grace` given, the
//! rest closed). Each connection is a task in one `JoinSet` owned by [`serve`].
//!
//! Boundary: what a connection is served with (routes, caller checks) and what a caller
//! over the cap is told are the servers' own.

use crate::retry::Backoff;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Largest request head (request line and headers) read; a bigger one gets 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The pause after failed accepts in a row (out of descriptors, say): short at first,
/// never a spin, at most a second.
const ACCEPT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(25), Duration::from_secs(1));

/// What one caller may hold of a server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time allowed for a request head, and for the next one on a kept-alive connection
    /// (which also closes a keep-alive connection idle that long between requests; a
    /// blocking query, once read, is in flight and not cut).
    pub header_read_timeout: Duration,
    /// Connections open at once; what happens to more is the server's [`WhenFull`].
    pub max_connections: usize,
}

/// A listener [`serve`] accepts from.
pub trait Listener: Send {
    /// What one accept gives: a stream, or a stream with what is known of its caller.
    type Io: Send + 'static;
    /// The next connection; cancel-safe.
    fn accept(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        tokio::net::UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        tokio::net::TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// What happens to a connection over [`Limits::max_connections`].
pub enum WhenFull<R> {
    /// It waits in the listen backlog until one closes (scrapers and probes are few).
    Wait,
    /// It is accepted, handed to this to answer at once (one non-blocking write), and
    /// closed: a refused caller holds neither a task nor a descriptor.
    Refuse(R),
}

/// Accepts from `listener` until `shutdown`, running `handle(io)` for each connection
/// as a task owned here, at most `max_connections` at once. Then drains: `draining`
/// is cancelled (each handler finishes its request in flight and closes, see `http1`),
/// the handlers get `grace`, and those still busy are closed.
pub async fn serve<L, H, Fut, R>(
    listener: L,
    max_connections: usize,
    mut when_full: WhenFull<R>,
    grace: Duration,
    draining: CancellationToken,
    shutdown: impl Future<Output = ()>,
    mut handle: H,
) where
    L: Listener,
    H: FnMut(L::Io) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
    R: FnMut(L::Io),
{
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut conns = JoinSet::new();
    // Consecutive failed accepts: the backoff grows with them, and only the first of a
    // run is logged.
    let mut accept_errors = 0u32;
    tokio::pin!(shutdown);
    loop {
        // Finished connections are reaped while waiting, freeing slots and descriptors.
        let waited = match when_full {
            WhenFull::Wait => tokio::select! {
                () = &mut shutdown => break,
                slot = slots.clone().acquire_owned() => slot.ok(),
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            },
            WhenFull::Refuse(_) => None,
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let io = match accepted {
            Ok(io) => io,
            Err(e) => {
                if accept_errors == 0 {
                    tracing::warn!(error = %e, "accept failed, backing off");
                }
                accept_errors = accept_errors.saturating_add(1);
                back_off(accept_errors, &mut conns).await;
                continue;
            }
        };
        accept_errors = 0;
        let slot = match waited {
            Some(slot) => slot,
            None => match (slots.clone().try_acquire_owned(), &mut when_full) {
                (Ok(slot), _) => slot,
                (Err(_), WhenFull::Refuse(refuse)) => {
                    refuse(io);
                    tracing::debug!("over {max_connections} connections: refused one");
                    continue;
                }
                // The semaphore is never closed.
                (Err(_), WhenFull::Wait) => continue,
            },
        };
        let conn = handle(io);
        conns.spawn(async move {
            conn.await;
            drop(slot);
        });
    }
    drop(listener);
    drain(conns, draining, grace).await;
}

/// The pause after `errors` failed accepts in a row, reaping finished connections
/// meanwhile (they free descriptors).
async fn back_off(errors: u32, conns: &mut JoinSet<()>) {
    let pause = tokio::time::sleep(ACCEPT_BACKOFF.delay(errors, None));
    tokio::pin!(pause);
    loop {
        tokio::select! {
            () = &mut pause => return,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Cancels `draining`, gives the connections `grace` to end, and closes the rest.
async fn drain(mut conns: JoinSet<()>, draining: CancellationToken, grace: Duration) {
    draining.cancel();
    let open = conns.len();
    let drained = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        if !grace.is_zero() {
            tracing::warn!(
                busy = conns.len(),
                open,
                grace_seconds = grace.as_secs_f32(),
                "connections still busy after the grace period; closing them"
            );
        }
        conns.shutdown().await;
    }
}

/// Serves HTTP/1.1 on `io` with `service` under `limits` (a request head of at most
/// `max_head` bytes) until the peer closes, or until `draining` is cancelled: then the
/// request in flight is finished and the connection closed.
pub async fn http1<I, S>(io: I, service: S, limits: Limits, max_head: usize, draining: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = http1::Builder::new();
    builder.max_buf_size(max_head).timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    http1_with(&builder, io, service, draining).await;
}

/// As [`http1`], with `builder`'s settings (a server that judges its own head limits
/// and so lets hyper read more, say).
pub async fn http1_with<I, S>(builder: &http1::Builder, io: I, service: S, draining: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended");
            }
        }
        () = draining.cancelled() => {
            // Finishes the request in flight (blocking queries answer now), then closes.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 with prior knowledge (told apart by the first bytes) on
/// `io` with `service` under `builder`'s settings, protocol upgrades allowed (the proxy's
/// WebSocket), until the peer closes or `draining` is cancelled: then the requests in
/// flight are finished (HTTP/2: a GOAWAY) and the connection closed. A caller that sends
/// nothing within `limits.header_read_timeout` is closed (HTTP/1.1's own timeout starts
/// only once the protocol is known), and so is a connection with no request open for that
/// long: HTTP/1.1's keep-alive bound, which HTTP/2 does not have of its own (its streams
/// are counted here; closing is a GOAWAY, docs/proxy.md).
pub async fn auto<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    limits: Limits,
    draining: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>> + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let spoke = Arc::new(AtomicBool::new(false));
    let io = FirstBytes { io, spoke: spoke.clone() };
    let open = Arc::new(Requests::new());
    let service = Counted { inner: service, open: open.clone() };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let silent = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(silent);
    let idle = idle(&open, limits.header_read_timeout);
    tokio::pin!(idle);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended");
                }
                return;
            }
            () = draining.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            // The condition is read when the loop turns: a caller that spoke since is kept.
            () = &mut silent, if !spoke.load(Ordering::Relaxed) => {
                if !spoke.load(Ordering::Relaxed) {
                    tracing::debug!("no request within the header-read timeout; closed");
                    return;
                }
            }
            () = &mut idle, if !closing => {
                tracing::debug!("no request open within the idle timeout; closing");
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Resolves once no request has been open on the connection for `bound` (counted from
/// the end of the last one, or from now). A timer that wakes once per `bound` at most,
/// and two atomic writes per request: nothing is woken as requests come and go.
async fn idle(open: &Requests, bound: Duration) {
    let mut deadline = tokio::time::Instant::now() + bound;
    loop {
        tokio::time::sleep_until(deadline).await;
        let now = tokio::time::Instant::now();
        deadline = match open.idle_since() {
            Some(since) if now >= since + bound => return,
            Some(since) => since + bound,
            None => now + bound,
        };
    }
}

/// The requests open on one connection, and when the last one ended.
struct Requests {
    open: AtomicUsize,
    /// When the last request ended, in milliseconds after `start`.
    ended_ms: AtomicU64,
    start: tokio::time::Instant,
}

impl Requests {
    fn new() -> Requests {
        Requests { open: AtomicUsize::new(0), ended_ms: AtomicU64::new(0), start: tokio::time::Instant::now() }
    }

    /// Since when none has been open; `None` while one is.
    fn idle_since(&self) -> Option<tokio::time::Instant> {
        (self.open.load(Ordering::Acquire) == 0)
            .then(|| self.start + Duration::from_millis(self.ended_ms.load(Ordering::Acquire)))
    }
}

/// One open request: counted from the service's call until its answer's body is done
/// or dropped (HTTP/2: the stream's life; a stream reset drops it).
struct Open(Arc<Requests>);

impl Open {
    fn new(requests: &Arc<Requests>) -> Open {
        requests.open.fetch_add(1, Ordering::AcqRel);
        Open(requests.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let ended = self.0.start.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
        self.0.ended_ms.fetch_max(ended, Ordering::AcqRel);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A service whose requests are counted in `open` while they are open.
struct Counted<S> {
    inner: S,
    open: Arc<Requests>,
}

impl<S, B> hyper::service::Service<hyper::Request<Incoming>> for Counted<S>
where
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>,
{
    type Response = hyper::Response<CountedBody<B>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        CountedFuture { inner: self.inner.call(req), open: Some(Open::new(&self.open)) }
    }
}

pin_project_lite::pin_project! {
    /// The service's answer, its request counted open meanwhile.
    struct CountedFuture<F> {
        #[pin]
        inner: F,
        open: Option<Open>,
    }
}

impl<F, B, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<hyper::Response<B>, E>>,
{
    type Output = Result<hyper::Response<CountedBody<B>>, E>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx));
        let open = this.open.take();
        std::task::Poll::Ready(res.map(|res| res.map(|body| CountedBody { inner: body, open })))
    }
}

pin_project_lite::pin_project! {
    /// An answer's body, its request counted open until the body is done or dropped.
    struct CountedBody<B> {
        #[pin]
        inner: B,
        open: Option<Open>,
    }
}

impl<B: hyper::body::Body> hyper::body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            this.open.take();
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A stream that notes when its first bytes arrived.
struct FirstBytes<I> {
    io: I,
    spoke: Arc<AtomicBool>,
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstBytes<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.spoke.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstBytes<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use tokio::io::DuplexStream;
    use tokio::sync::mpsc;

    /// Hands out what a test sends: connections or accept errors.
    struct Fake(tokio::sync::Mutex<mpsc::UnboundedReceiver<std::io::Result<DuplexStream>>>);

    impl Listener for Fake {
        type Io = DuplexStream;
        async fn accept(&self) -> std::io::Result<DuplexStream> {
            match self.0.lock().await.recv().await {
                Some(result) => result,
                None => std::future::pending().await,
            }
        }
    }

    fn fake() -> (Fake, mpsc::UnboundedSender<std::io::Result<DuplexStream>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Fake(tokio::sync::Mutex::new(rx)), tx)
    }

    fn stream() -> DuplexStream {
        tokio::io::duplex(64).0
    }

    /// Failed accepts are backed off, then the loop serves again; over the cap, `Refuse`
    /// refuses at once, and shutdown closes what `grace` did not see end.
    #[tokio::test(start_paused = true)]
    async fn failed_accepts_back_off_and_a_full_server_refuses() {
        let (listener, tx) = fake();
        for _ in 0..3 {
            tx.send(Err(std::io::ErrorKind::Other.into())).unwrap();
        }
        for _ in 0..3 {
            tx.send(Ok(stream())).unwrap();
        }
        let (served, refused) = (Arc::new(Mutex::new(0)), Arc::new(Mutex::new(0)));
        let (s, r) = (served.clone(), refused.clone());
        let stop = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let server = tokio::spawn(serve(
            listener,
            2,
            WhenFull::Refuse(move |_| *r.lock() += 1),
            Duration::from_secs(1),
            CancellationToken::new(),
            stop.clone().cancelled_owned(),
            move |_| {
                *s.lock() += 1;
                std::future::pending::<()>()
            },
        ));
        while *refused.lock() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(started.elapsed() >= 3 * crate::retry::MIN_DELAY, "three failed accepts, each backed off");
        assert_eq!((*served.lock(), *refused.lock()), (2, 1));
        stop.cancel();
        server.await.unwrap();
    }

    /// `Wait` accepts no more than the cap until a connection ends.
    #[tokio::test(start_paused = true)]
    async fn a_full_server_that_waits_accepts_when_a_connection_ends() {
        let (listener, tx) = fake();
        for _ in 0..2 {
            tx.send(Ok(stream())).unwrap();
        }
        let (release, _) = tokio::sync::broadcast::channel::<()>(1);
        let served = Arc::new(Mutex::new(0));
        let (s, r) = (served.clone(), release.clone());
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            1,
            WhenFull::<fn(DuplexStream)>::Wait,
            Duration::ZERO,
            CancellationToken::new(),
            stop.clone().cancelled_owned(),
            move |_| {
                *s.lock() += 1;
                let mut ended = r.subscribe();
                async move {
                    let _ = ended.recv().await;
                }
            },
        ));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(*served.lock(), 1, "the second waits while the first is open");
        release.send(()).unwrap();
        while *served.lock() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stop.cancel();
        server.await.unwrap();
    }
}
