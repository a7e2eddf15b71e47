//! The local API of `connd serve` (docs/api.md): HTTP/1.1 on a Unix socket. `server` binds
//! the socket and runs connections with a bounded drain; `auth` decides who may call by
//! peer credentials; `routes` answers from the current snapshot.

pub use crate::listen::auth;
pub mod client;
pub mod routes;
pub mod server;

use crate::metrics::Metrics;
use crate::reload::snapshot::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What every request handler needs.
pub struct ApiState<S> {
    pub store: Arc<Store>,
    /// For `/token`: tokens are asked for at request time, fresh from the cache.
    pub sources: Arc<S>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when draining starts: blocking queries answer at once.
    pub draining: CancellationToken,
}
