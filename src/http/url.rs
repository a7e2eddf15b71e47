//! The URL policy of docs/commands.md and docs/control-plane.md for every outbound call: absolute `http(s)` URLs only,
//! no credentials in them, plain `http://` only to loopback unless allowed, and a
//! control-plane base without query or fragment. Messages about a URL never print the
//! user-info in it.

use http::Uri;
use std::net::IpAddr;

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// `url` is shown with any user-info redacted.
    #[error("{url:?} is not an absolute http(s) URL")]
    Invalid { url: String },
    /// `url` is the scheme and host only: the rest carried credentials.
    #[error("{url} carries credentials in the URL; give them another way (--token-file, ConsumerSecret)")]
    UserInfo { url: String },
    #[error("refusing plain http:// to {host:?}, which is not a loopback address: use https://, or pass --allow-insecure-http to send credentials in clear")]
    Insecure { host: String },
    /// A base URL (`--control-plane`) with a query or fragment: paths are appended to it,
    /// so `?x=1` would end up in the middle of every request's path (docs/control-plane.md).
    #[error("{url:?} has a {part}, which a base URL cannot have (paths are appended to it): give scheme, host, port and optional path only")]
    NotABase { url: String, part: &'static str },
    /// A port outside 0-65535, which `http::Uri` accepts and then reads as no port at all
    /// (the scheme's default): refused, never a call to port 80 or 443.
    #[error("{url:?} has port {port}, which is not a port (0-65535)")]
    BadPort { url: String, port: String },
}

impl UrlError {
    /// Whether this is the caller's mistake in a flag (a usage error, exit 64) rather than
    /// a setting that conflicts with policy.
    pub fn is_usage(&self) -> bool {
        matches!(self, UrlError::NotABase { .. } | UrlError::BadPort { .. })
    }
}

/// Parses `url` and applies the plain-http rule of docs/commands.md.
pub fn check_url(url: &str, allow_insecure_http: bool) -> Result<Uri, UrlError> {
    let invalid = || UrlError::Invalid { url: redact_url(url) };
    let uri: Uri = url.parse().map_err(|_| invalid())?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(invalid());
    };
    if authority.as_str().contains('@') {
        return Err(UrlError::UserInfo { url: format!("{scheme}://{}", authority.host()) });
    }
    if let (None, Some((_, port))) = (authority.port_u16(), authority.as_str().rsplit_once(':')) {
        if !port.is_empty() && !port.ends_with(']') {
            return Err(UrlError::BadPort { url: redact_url(url), port: port.into() });
        }
    }
    match scheme {
        "https" => Ok(uri),
        "http" if allow_insecure_http || is_loopback(authority.host()) => Ok(uri),
        "http" => Err(UrlError::Insecure { host: authority.host().into() }),
        _ => Err(invalid()),
    }
}

/// [`check_url`] for a base URL that paths are appended to (`--control-plane`): a query
/// (`?x=1`) or a fragment (`#f`) is refused, even an empty one.
pub fn check_base_url(url: &str, allow_insecure_http: bool) -> Result<Uri, UrlError> {
    // `http::Uri` refuses a `#` outright, which would read as "not a URL": say what is wrong.
    let part = if url.contains('#') {
        Some("fragment (#...)")
    } else if url.contains('?') {
        Some("query (?...)")
    } else {
        None
    };
    match part {
        Some(part) => Err(UrlError::NotABase { url: redact_url(url), part }),
        None => check_url(url, allow_insecure_http),
    }
}

/// Whether `host` (a URL's host, IPv6 in brackets or not) is `localhost` or a loopback IP.
pub fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `url` for messages: user-info (`user:password@`) replaced by `***@`, as an error about a
/// URL must not print the credentials in it.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains('@') { "(a value with an @, not shown)".into() } else { url.into() };
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => url.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_url("http://127.0.0.1:8080/x", false).is_ok());
        assert!(check_url("http://localhost/x", false).is_ok());
        assert!(check_url("http://[::1]:9/x", false).is_ok());
        assert!(check_url("https://cp.example/x", false).is_ok());
        let err = check_url("http://cp.example/x", false).unwrap_err().to_string();
        assert!(err.contains("refusing plain http:// to \"cp.example\""), "{err}");
        assert!(check_url("http://cp.example/x", true).is_ok());
        assert!(check_url("ftp://cp.example/x", true).is_err());
        assert!(check_url("cp.example", true).is_err());
        assert!(matches!(check_url("https://u:p@cp.example/", false), Err(UrlError::UserInfo { .. })));
    }

    #[test]
    fn url_errors_never_show_credentials() {
        for url in [
            "https://admin:Sup3rS3cret@cp.example/x",
            "http://cid:Sup3rS3cret@[::1]:9/token",
            "https://a:Sup3rS3cret@h:bad/",
            "https://admin:Sup3rS3cret@cp.example/x?y=1",
        ] {
            let err = check_url(url, false).unwrap_err().to_string();
            assert!(!err.contains("Sup3rS3cret") && !err.contains("admin") && !err.contains("cid"), "{err}");
        }
        let err = check_url("https://admin:Sup3rS3cret@cp.example:8443/x", false).unwrap_err().to_string();
        assert!(err.starts_with("https://cp.example carries credentials"), "{err}");
    }

    #[test]
    fn a_base_url_has_no_query_or_fragment() {
        assert!(check_base_url("https://cp.example/api", false).is_ok());
        for (url, part) in [
            ("http://127.0.0.1:9?x=1", "query"),
            ("https://cp.example/api?", "query"),
            ("https://cp.example/#f", "fragment"),
        ] {
            let err = check_base_url(url, false).unwrap_err();
            assert!(err.is_usage() && err.to_string().contains(part), "{url}: {err}");
        }
    }
}
