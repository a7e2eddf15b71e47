//! Protocol upgrades through the proxy (WebSocket, docs/proxy.md): an HTTP/1.1
//! `Upgrade` handshake is forwarded with the connection's credentials like any request
//! (`forward` does that); when the upstream answers `101`, the caller's connection and
//! the upstream's are joined and bytes flow both ways until either side closes. No
//! WebSocket library: after the handshake they are bytes.
//!
//! Boundary: the joined streams run in the caller's connection task (`server`), after
//! hyper hands the connection over, so the connection cap counts an open WebSocket and
//! the drain bounds it; no timeout cuts one in use.

use super::forward::{is_hop_by_hop, ProxyBody};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Two connections joined, bytes flowing both ways until either closes.
pub type Tunnel = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The joined streams of one caller connection, waiting for its task to run them.
#[derive(Clone, Default)]
pub struct Tunnels(Arc<Mutex<Option<Tunnel>>>);

impl Tunnels {
    /// The joined streams to run once hyper has handed the connection over (one per
    /// connection: after an upgrade HTTP ends on it).
    pub fn take(&self) -> Option<Tunnel> {
        self.0.lock().take()
    }

    fn put(&self, tunnel: Tunnel) {
        *self.0.lock() = Some(tunnel);
    }
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Upgrade`, with `upgrade` among
/// its `Connection` options), if any.
pub fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let upgrade = req.headers().get(header::UPGRADE)?;
    let asked = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|o| o.trim().eq_ignore_ascii_case("upgrade"))));
    asked.then(|| upgrade.clone())
}

/// The upgrade asked for, as the upstream request says it (after the hop-by-hop fields,
/// `Connection` and `Upgrade` among them, were dropped).
pub fn ask_upstream(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// The upstream's `101` as the caller gets it, its `Connection`/`Upgrade` kept; the two
/// connections are joined in `tunnels` once both are handed over. `connection` names
/// it in the log.
pub fn switch<B>(
    mut response: Response<B>,
    caller: OnUpgrade,
    tunnels: &Tunnels,
    connection: String,
) -> Response<ProxyBody> {
    debug_assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upstream = hyper::upgrade::on(&mut response);
    let (parts, _) = response.into_parts();
    let mut answer: Response<ProxyBody> = Response::new(Either::Right(Full::new(Bytes::new())));
    *answer.status_mut() = parts.status;
    for name in [header::CONNECTION, header::UPGRADE, header::SEC_WEBSOCKET_ACCEPT, header::SEC_WEBSOCKET_PROTOCOL] {
        for value in parts.headers.get_all(&name) {
            answer.headers_mut().append(name.clone(), value.clone());
        }
    }
    for (name, value) in &parts.headers {
        if !answer.headers().contains_key(name) && !is_hop_by_hop(name) {
            answer.headers_mut().append(name.clone(), value.clone());
        }
    }
    tunnels.put(Box::pin(async move {
        let (caller, upstream) = match tokio::try_join!(caller, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(connection = %connection, error = %e, "upgrade: a side was not handed over");
                return;
            }
        };
        let (mut caller, mut upstream) = (TokioIo::new(caller), TokioIo::new(upstream));
        match tokio::io::copy_bidirectional(&mut caller, &mut upstream).await {
            Ok((up, down)) => tracing::debug!(connection = %connection, up, down, "upgraded connection closed"),
            Err(e) => tracing::debug!(connection = %connection, error = %e, "upgraded connection ended"),
        }
    }));
    answer
}
