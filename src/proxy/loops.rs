//! Loop detection (docs/proxy.md, "Loops"): a connection whose `ServiceURL` points back at
//! connd (its own port, or the shared listener) would have connd call itself until its
//! connection cap is full. Every request connd forwards carries `Via: <version>
//! connd-<token>` (RFC 9110 §7.6.3), appended to any `Via` it had, with a token drawn once
//! per process; a request that already carries this process's token has been here before
//! and is refused (508 Loop Detected) without calling the upstream again.
//!
//! Boundary: which header says it and how it is read; the refusal's shape (JSON or gRPC
//! status) is `forward`'s, which calls [`pass`] once per request.

use http::header::VIA;
use http::{HeaderMap, HeaderValue, Version};
use std::sync::LazyLock;

/// This process's `Via` pseudonym (RFC 9110 §7.6.3 `received-by`): `connd-` and 16 random
/// hex digits, so that two connd processes in a chain are told apart.
static PSEUDONYM: LazyLock<String> = LazyLock::new(|| format!("connd-{:016x}", fastrand::u64(..)));

/// A request that came back to the connd that forwarded it.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request came back to this connd (its Via names {pseudonym}): connection {connection:?}'s ServiceURL \
     points back at connd (one of its own ports or its --proxy-listen address); set the ServiceURL to the real upstream"
)]
pub struct Looped {
    /// The connection the request named.
    pub connection: String,
    /// This process's pseudonym, as found in `Via`.
    pub pseudonym: &'static str,
}

/// The `Via` entries [`pass`] appends, by the received protocol version (`1.0`, `1.1`,
/// `2`, `3`, `0.9`), made once: a request then copies no text for its entry.
static ENTRIES: LazyLock<[Option<HeaderValue>; 5]> = LazyLock::new(|| {
    ["1.0", "1.1", "2", "3", "0.9"].map(|protocol| HeaderValue::from_str(&format!("{protocol} {}", pseudonym())).ok())
});

/// This process's pseudonym, as [`pass`] writes it.
pub fn pseudonym() -> &'static str {
    PSEUDONYM.as_str()
}

/// Refuses a request for `connection` whose `Via` already names this process; otherwise
/// appends this process's `Via` entry (the received protocol version as RFC 9110 spells
/// it: `1.0`, `1.1`, `2`, `3`) to the headers it goes upstream with.
pub fn pass<B>(req: &mut http::Request<B>, connection: &str) -> Result<(), Looped> {
    let version = req.version();
    let headers = req.headers_mut();
    if seen(headers) {
        return Err(Looped { connection: connection.to_owned(), pseudonym: pseudonym() });
    }
    let entry = match version {
        Version::HTTP_10 => 0,
        Version::HTTP_2 => 2,
        Version::HTTP_3 => 3,
        Version::HTTP_09 => 4,
        _ => 1,
    };
    if let Some(value) = &ENTRIES[entry] {
        headers.append(VIA, value.clone());
    }
    Ok(())
}

/// Whether any `Via` entry's `received-by` is this process's pseudonym.
fn seen(headers: &HeaderMap) -> bool {
    headers
        .get_all(VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|entry| entry.split_whitespace().nth(1) == Some(pseudonym()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_marked_once_and_refused_when_it_comes_back() {
        let mut req = http::Request::new(());
        req.headers_mut().insert(VIA, HeaderValue::from_static("1.1 gateway (nginx), 2 connd-0000000000000000"));
        pass(&mut req, "orders").expect("another proxy's and another connd's Via pass");
        let vias: Vec<_> = req.headers().get_all(VIA).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert_eq!(vias.len(), 2, "appended, the caller's kept: {vias:?}");
        assert_eq!(vias[1], format!("1.1 {}", pseudonym()));
        *req.version_mut() = Version::HTTP_2;
        let looped = pass(&mut req, "orders").expect_err("the second pass is a loop");
        let message = looped.to_string();
        assert!(message.contains("\"orders\"") && message.contains("points back at connd"), "{message}");
        // Within one field, among others, it is found too.
        let mut req = http::Request::new(());
        req.headers_mut().insert(VIA, HeaderValue::from_str(&format!("1.0 a, 2 {} (x)", pseudonym())).unwrap());
        assert!(pass(&mut req, "orders").is_err());
    }
}
