//! Which outbound requests go through a forward proxy, from the variables of docs/commands.md:
//! `HTTPS_PROXY`/`https_proxy` for https, `HTTP_PROXY`/`http_proxy` for http, `ALL_PROXY`/
//! `all_proxy` for either, and `NO_PROXY`/`no_proxy` for the hosts that bypass it (names,
//! which match their subdomains too, `.domain` suffixes, `*`, IP addresses and CIDR
//! ranges, each with an optional `:port`). The matching is hyper-util's
//! (`client::proxy::matcher`, curl's conventions); this module only reads the variables,
//! refuses proxy URLs connd cannot use, and adds the `:port` entries that hyper-util's
//! matcher does not know (an entry `host:8443` bypasses the proxy for that port only, as
//! in Go's `httpproxy` and Python's `requests`).
//!
//! Proxy credentials (`http://user:password@proxy:3128`) become a `Proxy-Authorization:
//! Basic` header value marked sensitive; nothing here prints them.

use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use std::sync::Arc;

/// The variables read, in the order each setting is looked for (the first set wins).
const HTTPS_VARS: [&str; 2] = ["HTTPS_PROXY", "https_proxy"];
const HTTP_VARS: [&str; 2] = ["HTTP_PROXY", "http_proxy"];
const ALL_VARS: [&str; 2] = ["ALL_PROXY", "all_proxy"];
const NO_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// A proxy variable connd cannot use. The value is never shown: it may hold a password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("{variable} is not a proxy URL (http://[user:password@]host:port): fix it, or pass --no-proxy-env to ignore the proxy variables")]
    Invalid { variable: &'static str },
    #[error("{variable} names a {scheme}:// proxy; connd speaks only to http:// proxies (HTTPS goes through them with CONNECT): give an http:// proxy, or pass --no-proxy-env")]
    Scheme { variable: &'static str, scheme: String },
}

/// Where a request to one URL goes.
#[derive(Clone)]
pub enum Route {
    Direct,
    /// Through this proxy: its URL (scheme, host and port only; credentials removed) and
    /// the `Proxy-Authorization` value made from the credentials its URL held.
    Proxy {
        uri: Uri,
        authorization: Option<HeaderValue>,
    },
}

/// Shows the proxy's address, never its credentials.
impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Direct => f.write_str("Direct"),
            Route::Proxy { uri, authorization } => f
                .debug_struct("Proxy")
                .field("uri", uri)
                .field("authorization", &authorization.as_ref().map(|_| "..."))
                .finish(),
        }
    }
}

/// The proxy rules of one process; cheap to clone.
#[derive(Clone, Default)]
pub struct Proxies {
    /// `None`: no proxy variable is set (or `--no-proxy-env`): every request is direct.
    rules: Option<Arc<Rules>>,
}

struct Rules {
    /// `NO_PROXY=*` (or an entry `*`): every host bypasses the proxy, IP addresses too
    /// (hyper-util's `*` matches names only; curl's matches every host).
    bypass_all: bool,
    /// The proxies, and the `NO_PROXY` entries without a port.
    matcher: Matcher,
    /// `NO_PROXY` entries with a port, grouped by port: a matcher per port whose `no` list
    /// is those entries' hosts, so hyper-util decides the host part there too.
    by_port: Vec<(u16, Matcher)>,
}

impl std::fmt::Debug for Proxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.rules.is_some() { "Proxies(from the environment)" } else { "Proxies(none)" })
    }
}

impl Proxies {
    /// No proxy: every request is direct (`--no-proxy-env`).
    pub fn none() -> Proxies {
        Proxies::default()
    }

    /// The rules of this process's environment.
    pub fn from_env() -> Result<Proxies, ProxyError> {
        Proxies::from_lookup(|name| std::env::var(name).ok())
    }

    /// The rules from the variables `lookup` gives (a name to its value, if set): the
    /// process environment in [`Self::from_env`], a map in tests. An empty value counts
    /// as unset, as with curl.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Proxies, ProxyError> {
        let first = |names: [&'static str; 2]| {
            names.into_iter().find_map(|name| lookup(name).filter(|v| !v.trim().is_empty()).map(|v| (name, v)))
        };
        let (https, http, all) = (first(HTTPS_VARS), first(HTTP_VARS), first(ALL_VARS));
        if https.is_none() && http.is_none() && all.is_none() {
            return Ok(Proxies::none());
        }
        for (variable, value) in [&https, &http, &all].into_iter().flatten() {
            check_proxy_url(variable, value)?;
        }
        let no = first(NO_VARS).map(|(_, v)| v).unwrap_or_default();
        let bypass_all = no.split(',').any(|entry| entry.trim() == "*");
        let (plain, with_port) = split_no_proxy(&no);
        let value = |v: &Option<(&str, String)>| v.as_ref().map(|(_, v)| v.trim().to_owned()).unwrap_or_default();
        let matcher = Matcher::builder().https(value(&https)).http(value(&http)).all(value(&all)).no(plain).build();
        let mut by_port: Vec<(u16, Matcher)> = Vec::new();
        for (port, hosts) in with_port {
            // Any proxy will do: only whether the `no` list matches is asked of it.
            by_port.push((port, Matcher::builder().all("http://no-proxy.invalid").no(hosts).build()));
        }
        Ok(Proxies { rules: Some(Arc::new(Rules { bypass_all, matcher, by_port })) })
    }

    /// Where a request to `uri` goes.
    pub fn route(&self, uri: &Uri) -> Route {
        let Some(rules) = self.rules.as_ref().filter(|r| !r.bypass_all) else { return Route::Direct };
        let Some(intercept) = rules.matcher.intercept(uri) else { return Route::Direct };
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
        let bypassed = rules.by_port.iter().any(|(p, m)| *p == port && m.intercept(uri).is_none());
        if bypassed {
            return Route::Direct;
        }
        route_of(&intercept)
    }
}

fn route_of(intercept: &Intercept) -> Route {
    Route::Proxy { uri: intercept.uri().clone(), authorization: intercept.basic_auth().cloned() }
}

/// Refuses what hyper-util's matcher would silently ignore or connd cannot speak to: a
/// value that is not a URL, and proxies other than `http://` (https://, socks5://).
fn check_proxy_url(variable: &'static str, value: &str) -> Result<(), ProxyError> {
    let uri: Uri = value.trim().parse().map_err(|_| ProxyError::Invalid { variable })?;
    let Some(authority) = uri.authority() else { return Err(ProxyError::Invalid { variable }) };
    // A port outside 0-65535 parses, and would be read as the default port 80.
    if let (None, Some((_, port))) = (authority.port_u16(), authority.as_str().rsplit_once(':')) {
        if !port.is_empty() && !port.ends_with(']') {
            return Err(ProxyError::Invalid { variable });
        }
    }
    match uri.scheme_str() {
        None | Some("http") => Ok(()),
        Some(other) => Err(ProxyError::Scheme { variable, scheme: other.to_ascii_lowercase() }),
    }
}

/// `NO_PROXY` split into the entries without a port (kept as one list for hyper-util) and
/// those with one, grouped by port. An entry has a port when it is `[v6]:port` or has
/// exactly one `:` (a bare IPv6 address has several); a CIDR range has none.
fn split_no_proxy(no: &str) -> (String, Vec<(u16, String)>) {
    let mut plain: Vec<&str> = Vec::new();
    let mut with_port: Vec<(u16, Vec<&str>)> = Vec::new();
    for entry in no.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let split = if let Some(rest) = entry.strip_prefix('[') {
            rest.split_once("]:")
        } else if entry.matches(':').count() == 1 {
            entry.split_once(':')
        } else {
            None
        };
        match split.and_then(|(host, port)| port.parse::<u16>().ok().map(|p| (host, p))) {
            Some((host, port)) => match with_port.iter_mut().find(|(p, _)| *p == port) {
                Some((_, hosts)) => hosts.push(host),
                None => with_port.push((port, vec![host])),
            },
            None => plain.push(entry.trim_start_matches('[').trim_end_matches(']')),
        }
    }
    (plain.join(","), with_port.into_iter().map(|(p, hosts)| (p, hosts.join(","))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn proxies(vars: &[(&str, &str)]) -> Proxies {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Proxies::from_lookup(|name| vars.get(name).cloned()).expect("valid proxy variables")
    }

    fn via(p: &Proxies, url: &str) -> Option<String> {
        match p.route(&url.parse().unwrap()) {
            Route::Direct => None,
            Route::Proxy { uri, .. } => Some(uri.authority().unwrap().to_string()),
        }
    }

    #[test]
    fn each_scheme_uses_its_variable_and_all_proxy_fills_in() {
        let p = proxies(&[("HTTPS_PROXY", "http://s:1"), ("http_proxy", "h:2")]);
        assert_eq!(via(&p, "https://cp.example/x").as_deref(), Some("s:1"));
        assert_eq!(via(&p, "http://cp.example/x").as_deref(), Some("h:2"));
        let p = proxies(&[("ALL_PROXY", "http://a:3"), ("https_proxy", "http://s:1")]);
        assert_eq!(via(&p, "https://cp.example/x").as_deref(), Some("s:1"));
        assert_eq!(via(&p, "http://cp.example/x").as_deref(), Some("a:3"));
        assert_eq!(via(&proxies(&[]), "https://cp.example/x"), None);
        assert_eq!(via(&proxies(&[("HTTPS_PROXY", "")]), "https://cp.example/x"), None);
    }

    #[test]
    fn no_proxy_takes_names_suffixes_star_ips_cidrs_and_ports() {
        let p = proxies(&[
            ("HTTPS_PROXY", "http://p:1"),
            ("NO_PROXY", "internal.example, .corp.example,10.0.0.0/8, 192.168.1.5,::1, cp.example:8443,[fd00::1]:9443"),
        ]);
        for direct in [
            "https://internal.example/",
            "https://a.internal.example/",
            "https://x.corp.example/",
            "https://10.1.2.3/",
            "https://192.168.1.5:444/",
            "https://[::1]:8/",
            "https://cp.example:8443/",
            "https://[fd00::1]:9443/",
        ] {
            assert_eq!(via(&p, direct), None, "{direct} should bypass the proxy");
        }
        for proxied in [
            "https://notinternal.example/",
            "https://11.0.0.1/",
            "https://192.168.1.6/",
            "https://cp.example/",
            "https://cp.example:9443/",
            "https://[fd00::1]/",
        ] {
            assert_eq!(via(&p, proxied).as_deref(), Some("p:1"), "{proxied} should go through the proxy");
        }
        let star = proxies(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "*")]);
        assert_eq!(via(&star, "https://anything.example/"), None);
        assert_eq!(via(&star, "https://10.1.2.3/"), None);
    }

    #[test]
    fn credentials_become_a_sensitive_header_and_never_show() {
        let p = proxies(&[("HTTPS_PROXY", "http://bob:s%40cret@p:1")]);
        let route = p.route(&"https://cp.example/".parse().unwrap());
        let Route::Proxy { uri, authorization: Some(auth) } = &route else { panic!("{route:?}") };
        assert_eq!(uri.to_string(), "http://p:1/");
        assert!(auth.is_sensitive());
        // base64("bob:s@cret")
        assert_eq!(auth.to_str().unwrap(), "Basic Ym9iOnNAY3JldA==");
        assert!(!format!("{route:?}").contains("Ym9i"), "{route:?}");
    }

    #[test]
    fn unusable_proxy_urls_are_refused_without_showing_them() {
        let lookup = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let err = Proxies::from_lookup(lookup(&[("HTTPS_PROXY", "socks5://bob:pw@p:1")])).unwrap_err().to_string();
        assert!(err.contains("HTTPS_PROXY names a socks5:// proxy") && !err.contains("pw"), "{err}");
        let err = Proxies::from_lookup(lookup(&[("ALL_PROXY", "http://bob:pw@")])).unwrap_err().to_string();
        assert!(err.contains("ALL_PROXY is not a proxy URL") && !err.contains("pw"), "{err}");
    }
}
