//! Where a proxied request goes (docs/proxy.md): `/<connection>/<rest>?<query>` names a
//! connection and the path under its `ServiceURL`. Pure functions over strings, so every
//! rule is tested here: the split, the join (no doubled or lost slash at the seam, the
//! caller's percent-encoding and query kept as sent), the refusal of paths that climb out
//! of the base (`..`, also percent-encoded, also behind an encoded `/` or `\`), and which
//! `Host` a request may be aimed at.

use percent_encoding::percent_decode_str;
use std::borrow::Cow;
use std::net::IpAddr;

/// A request target split at the connection name.
#[derive(Debug, PartialEq, Eq)]
pub struct Split<'a> {
    /// The first path segment, percent-decoded (`hr%20service` names `hr service`).
    pub connection: Cow<'a, str>,
    /// What follows the name, as sent: empty, or starting with `/`.
    pub rest: &'a str,
}

/// Splits an origin-form path (`/hr-connection/users/42`); `None` when it names no
/// connection (`/`, or an empty first segment).
pub fn split(path: &str) -> Option<Split<'_>> {
    let path = path.strip_prefix('/')?;
    let end = path.find('/').unwrap_or(path.len());
    let (name, rest) = path.split_at(end);
    if name.is_empty() {
        return None;
    }
    Some(Split { connection: percent_decode_str(name).decode_utf8_lossy(), rest })
}

/// Whether `rest` would climb out of the base path on an upstream that decodes or
/// normalises it: a segment that is `..` once percent-decoded (up to three rounds, for
/// double encoding), or that decodes to something holding a `..` between `/` or `\`.
pub fn climbs(rest: &str) -> bool {
    rest.split('/').any(|segment| {
        let mut text = Cow::Borrowed(segment);
        for _ in 0..3 {
            if text.split(['/', '\\']).any(|part| part == "..") {
                return true;
            }
            // Without a `%` decoding changes nothing (and copies nothing).
            if !text.contains('%') {
                break;
            }
            let decoded = percent_decode_str(&text).decode_utf8_lossy().into_owned();
            if decoded == text {
                break;
            }
            text = Cow::Owned(decoded);
        }
        text.split(['/', '\\']).any(|part| part == "..")
    })
}

/// The upstream path and query: `base` (the ServiceURL's path) joined to `rest` with one
/// `/` at the seam, then the ServiceURL's own query (if any) and the caller's, as sent.
pub fn join(base: &str, base_query: Option<&str>, rest: &str, query: Option<&str>) -> String {
    let mut out = String::with_capacity(base.len() + rest.len() + query.map_or(0, str::len) + 2);
    if rest.is_empty() {
        out.push_str(if base.is_empty() { "/" } else { base });
    } else {
        out.push_str(base.trim_end_matches('/'));
        out.push_str(rest);
    }
    match (base_query.filter(|q| !q.is_empty()), query) {
        (Some(b), Some(q)) if !q.is_empty() => {
            out.push('?');
            out.push_str(b);
            out.push('&');
            out.push_str(q);
        }
        (Some(q), _) | (None, Some(q)) => {
            out.push('?');
            out.push_str(q);
        }
        (None, None) => {}
    }
    out
}

/// Whether a request may name `host` (from `Host` or an absolute-form target): the proxy
/// serves only itself, so `localhost` or an IP address (the one it listens on, as a
/// caller writes it). A DNS name is another host, or a name rebound to this one by a web
/// page: refused either way, never forwarded.
pub fn host_allowed(authority: &str) -> bool {
    let host = match authority.rsplit_once(':') {
        // `[::1]:15000`, `127.0.0.1:15000`, `localhost:15000`
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':') => {
            host
        }
        _ => authority,
    };
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok()
}

/// How a request names its target, for a refusal's advice: `/<connection>/<path>` on the
/// shared listener; on a connection's own port (`pinned`, its name in `connection`),
/// `/<path>`, every request there going to that connection.
pub fn advice(pinned: bool, connection: Option<&http::HeaderValue>) -> String {
    match (pinned, connection.and_then(|v| v.to_str().ok())) {
        (true, Some(name)) => format!("/<path> (this port is connection {name:?}'s: no /<connection> prefix)"),
        (true, None) => "/<path> (this port is one connection's: no /<connection> prefix)".to_owned(),
        (false, _) => "/<connection>/<path>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_connection_name() {
        let s = split("/hr-connection/users/42").unwrap();
        assert_eq!((s.connection.as_ref(), s.rest), ("hr-connection", "/users/42"));
        let s = split("/hr-connection").unwrap();
        assert_eq!((s.connection.as_ref(), s.rest), ("hr-connection", ""));
        let s = split("/hr%20service/").unwrap();
        assert_eq!((s.connection.as_ref(), s.rest), ("hr service", "/"));
        assert!(split("/").is_none());
        assert!(split("//x").is_none());
        assert!(split("").is_none());
    }

    #[test]
    fn joins_with_one_slash_at_the_seam() {
        assert_eq!(join("/v1", None, "/users/42", Some("x=1")), "/v1/users/42?x=1");
        assert_eq!(join("/v1/", None, "/users/42", None), "/v1/users/42");
        assert_eq!(join("", None, "/users", None), "/users");
        assert_eq!(join("/", None, "/users", None), "/users");
        assert_eq!(join("/v1", None, "", None), "/v1");
        assert_eq!(join("", None, "", None), "/");
        assert_eq!(join("/v1", None, "/", None), "/v1/");
        // The caller's encoding and query are passed as sent.
        assert_eq!(join("/v1", None, "/a%2Fb/c%20d", Some("q=%41&r")), "/v1/a%2Fb/c%20d?q=%41&r");
        assert_eq!(join("/v1", None, "/x", Some("")), "/v1/x?");
        assert_eq!(join("/v1", Some("api-version=2"), "/x", Some("q=1")), "/v1/x?api-version=2&q=1");
        assert_eq!(join("/v1", Some("api-version=2"), "/x", None), "/v1/x?api-version=2");
    }

    #[test]
    fn paths_that_climb_are_found_in_every_encoding() {
        for rest in [
            "/../../admin",
            "/..",
            "/users/../../admin",
            "/%2e%2e/admin",
            "/%2E%2E/admin",
            "/.%2e/admin",
            "/%2e./admin",
            "/..%2f..%2fadmin",
            "/..%2F..%2Fadmin",
            "/x%2f..%2f..",
            "/..%5cadmin",
            "/..\\admin",
            "/%252e%252e/admin",
            "/%25252e%25252e/admin",
        ] {
            assert!(climbs(rest), "{rest} climbs");
        }
        for rest in ["", "/", "/users/42", "/a%2Fb", "/./x", "/..x", "/x..", "/%2e", "/...", "/a..b/c"] {
            assert!(!climbs(rest), "{rest} stays");
        }
    }

    #[test]
    fn only_this_host_may_be_named() {
        for ok in [
            "localhost",
            "localhost:15000",
            "LOCALHOST",
            "127.0.0.1",
            "127.0.0.1:15000",
            "[::1]:15000",
            "[::1]",
            "10.1.2.3:80",
        ] {
            assert!(host_allowed(ok), "{ok}");
        }
        for bad in ["evil.example", "evil.example:15000", "localhost.evil.example", "127.0.0.1.nip.io:15000", ""] {
            assert!(!host_allowed(bad), "{bad}");
        }
    }
}
