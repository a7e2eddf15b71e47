//! The socket and its connections. `bind` prepares the Unix socket (directory, stale
//! file, mode, group); `serve` accepts until shutdown, then drains: no new
//! connections, blocking queries answered at once, in-flight requests given `grace`
//! to finish, the rest closed; the loop, the limits and the drain are `serve::conn`'s.
//!
//! [`Limits`] bound what callers can hold: a request head must arrive within
//! `header_read_timeout` (which also closes a keep-alive connection idle that long
//! between requests; a blocking query, once read, is in flight and not cut), and at
//! most `max_connections` are open at once; a caller over the cap gets a 503 and a
//! closed connection at once, so it holds nothing.

use super::auth::Allow;
use super::{routes, ApiState};
use crate::error::{Class, Classify};
use crate::serve::conn::{self, WhenFull};
use crate::source::Sources;
use hyper::service::service_fn;
use std::convert::Infallible;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

pub use crate::serve::conn::{Limits, MAX_HEAD_BYTES};

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

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot create the socket's directory {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("{} is in use by a running server; stop it or choose another --socket", path.display())]
    InUse { path: PathBuf },
    #[error("{} exists and cannot be checked for a running server: {source}; remove it or choose another --socket", path.display())]
    Probe { path: PathBuf, source: std::io::Error },
    #[error("{} exists and is not a socket; remove it or choose another --socket", path.display())]
    NotASocket { path: PathBuf },
    #[error("cannot bind {}: {source}", path.display())]
    Bind { path: PathBuf, source: std::io::Error },
    #[error("cannot set mode {mode:o} or group on {}: {source}", path.display())]
    Permissions { path: PathBuf, mode: u32, source: std::io::Error },
}

impl Classify for BindError {
    fn class(&self) -> Class {
        Class::CantCreate
    }
}

/// Binds `path`, creating its directory. A socket file left by a process that died is
/// replaced; one that still answers is not.
pub fn bind(path: &Path, mode: u32, group: Option<u32>) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| BindError::Dir { dir: dir.to_path_buf(), source })?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket { path: path.to_path_buf() });
        }
        // Only a refused connection proves nobody listens: any other failure (no
        // permission, say) may hide a live server, whose socket must stay.
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse { path: path.to_path_buf() }),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(source) => return Err(BindError::Probe { path: path.to_path_buf(), source }),
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| BindError::Bind { path: path.to_path_buf(), source })?;
    let perms = |source| BindError::Permissions { path: path.to_path_buf(), mode, source };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(perms)?;
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| perms(e.into()))?;
    }
    Ok(listener)
}

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
