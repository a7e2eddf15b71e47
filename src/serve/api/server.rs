//! The socket and its connections. `bind` prepares the Unix socket (directory, stale
//! file, mode, group); `serve` accepts until shutdown, then drains: no new
//! connections, blocking queries answered at once, in-flight requests given `grace`
//! to finish, the rest closed; the loop, the limits and the drain are `listen::conn`'s.
//!
//! [`Limits`] bound what callers can hold: a request head must arrive within
//! `header_read_timeout` (which also closes a keep-alive connection idle that long
//! between requests; a blocking query, once read, is in flight and not cut), and at
//! most `max_connections` are open at once; a caller over the cap gets a 503 and a
//! closed connection at once, so it holds nothing.

use super::{routes, ApiState};
use crate::listen::auth::Allow;
use crate::listen::conn::{self, WhenFull};
use crate::source::Sources;
use hyper::service::service_fn;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

pub use crate::listen::conn::{Limits, MAX_HEAD_BYTES};
pub use crate::listen::socket::{bind, BindError};

/// The API's limits: more connections than any workload opens at once.
impl Default for Limits {
    fn default() -> Self {
        Limits { header_read_timeout: Duration::from_secs(10), max_connections: 4096 }
    }
}

/// What a caller over the connection cap reads before its connection is closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 74\r\n\r\n\
{\"error\":\"too many open connections to connd; retry later\",\"code\":\"busy\"}\n";

/// Accepts connections until `shutdown`, then drains within `grace`; default [`Limits`].
pub async fn serve<S: Sources>(
    listener: UnixListener,
    state: ApiStateParts<S>,
    allow: Allow,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, state, allow, grace, Limits::default(), shutdown).await;
}

/// [`serve`] with the given limits.
pub async fn serve_with<S: Sources>(
    listener: UnixListener,
    state: ApiStateParts<S>,
    allow: Allow,
    grace: Duration,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let draining = CancellationToken::new();
    let state = Arc::new(ApiState {
        store: state.store,
        sources: state.sources,
        metrics: state.metrics,
        draining: draining.clone(),
    });
    let refuse = |stream: tokio::net::UnixStream| {
        let _ = stream.try_write(OVER_CAPACITY);
        state.metrics.request(crate::metrics::Route::Other, 503);
    };
    let conns = conn::serve(
        listener,
        limits.max_connections,
        WhenFull::Refuse(refuse),
        grace,
        draining.clone(),
        shutdown,
        |stream| {
            let allowed = allow.permits(&stream);
            connection(stream, allowed, state.clone(), draining.clone(), limits)
        },
    );
    conns.await;
}

/// What `serve` shares with every request, before it adds the drain signal.
pub struct ApiStateParts<S> {
    pub store: Arc<crate::reload::snapshot::Store>,
    pub sources: Arc<S>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

async fn connection<S: Sources>(
    stream: tokio::net::UnixStream,
    allowed: bool,
    state: Arc<ApiState<S>>,
    draining: CancellationToken,
    limits: Limits,
) {
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(routes::handle(&state, allowed, req).await) }
    });
    conn::http1(stream, service, limits, MAX_HEAD_BYTES, draining).await;
}
