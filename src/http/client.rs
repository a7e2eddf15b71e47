//! A small HTTP/1.1 client on hyper 1.x for the few calls connd makes (control plane,
//! token endpoints): one connection per request from [`Connector`] (direct or through a
//! proxy, http or https), an overall deadline and a cap on the response body. It knows
//! nothing of what it fetches; callers classify statuses. Errors are
//! [`HttpError`]s (from [`crate::http::error`]), which say whether a retry may help. URL policy is in
//! [`crate::http::url`], deadlines in [`crate::http::deadline`].

use crate::http::connect::{credentials_refused, Conn, Connector};
pub use crate::http::error::{HttpError, MAX_BODY_BYTES};
use crate::http::proxy::Proxies;
use crate::http::tls::TlsSettings;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, HOST, PROXY_AUTHORIZATION, USER_AGENT};
use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use tokio::time::Instant;

pub struct Request {
    pub method: Method,
    pub url: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// Parameters or tokens: never printed.
    pub body: Bytes,
}

/// Status and header names only: bodies carry tokens and parameters, headers may carry
/// credentials (`Set-Cookie`, `Authorization` echoes).
impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

/// Sends requests; cheap to share behind an `Arc`.
pub struct HttpClient {
    connector: Connector,
}

impl HttpClient {
    /// A client trusting and presenting what `tls` names, through the proxies `proxies`
    /// selects ([`Proxies::none`] for direct connections only).
    pub fn new(tls: TlsSettings, proxies: Proxies) -> HttpClient {
        HttpClient { connector: Connector::new(tls, proxies) }
    }

    /// A client with this one's trust and proxy rules that presents its own TLS
    /// configuration (see [`Connector::with_tls_config`]).
    pub fn with_tls_config(&self, config: std::sync::Arc<rustls::ClientConfig>) -> HttpClient {
        HttpClient { connector: self.connector.with_tls_config(config) }
    }

    /// Reads the TLS files now, so that a bad `--ca-file` is reported before any request.
    pub fn prepare_tls(&self) -> Result<(), HttpError> {
        self.connector.prepare_tls()
    }

    /// The connector under this client, for a pooled client that wants the same TLS
    /// setup and proxy rules.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Sends `req` and reads the whole response, all before `deadline`.
    pub async fn send(&self, req: Request, deadline: Instant) -> Result<Response, HttpError> {
        let budget = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout_at(deadline, self.exchange(req)).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout(budget)),
        }
    }

    async fn exchange(&self, req: Request) -> Result<Response, HttpError> {
        let authority = req.url.authority().ok_or_else(|| HttpError::Protocol("the URL has no host".into()))?.clone();
        let conn = self.connector.connect(req.url.clone()).await?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        exchange_on(conn, req, authority.as_str()).await.map_err(|e| match e {
            // A server that wants a client certificate says so after the handshake (TLS
            // 1.3), on the first read: that is a TLS fault, not a broken exchange.
            Exchange::Hyper(e) => match self.connector.tls_error(&e, &host) {
                fault @ HttpError::TlsFault(_) => fault,
                _ => HttpError::Protocol(e.to_string()),
            },
            Exchange::Http(e) => e,
        })
    }
}

enum Exchange {
    Hyper(hyper::Error),
    Http(HttpError),
}

async fn exchange_on(conn: Conn, req: Request, authority: &str) -> Result<Response, Exchange> {
    let (absolute, proxy_authorization) = (conn.is_proxied_http(), conn.proxy_authorization().cloned());
    let (proxy, with_credentials) = (conn.proxy_shown().map(str::to_owned), proxy_authorization.is_some());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(conn).await.map_err(Exchange::Hyper)?;
    let protocol = |e: String| Exchange::Http(HttpError::Protocol(e));
    // A proxy takes plain-http requests in absolute form (RFC 9112 §3.2.2).
    let target =
        if absolute { req.url.to_string() } else { req.url.path_and_query().map_or("/", |p| p.as_str()).to_owned() };
    let mut builder = http::Request::builder().method(req.method).uri(target);
    if let Some(headers) = builder.headers_mut() {
        *headers = req.headers;
        headers.insert(HOST, HeaderValue::from_str(authority).map_err(|e| protocol(e.to_string()))?);
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("connd/", env!("CARGO_PKG_VERSION"))));
        if let Some(auth) = proxy_authorization {
            headers.insert(PROXY_AUTHORIZATION, auth);
        }
    }
    let request = builder.body(Full::new(req.body)).map_err(|e| protocol(e.to_string()))?;
    // The connection is driven here, next to the request, rather than in a spawned task:
    // it ends when the response is read and the sender dropped, so nothing outlives the call.
    let exchange = async move {
        let response = sender.send_request(request).await.map_err(Exchange::Hyper)?;
        let (parts, body) = response.into_parts();
        // A forwarded request the proxy itself refused for its credentials: a 407, or a 401
        // (tinyproxy's answer) after which the proxy resets the connection rather than
        // ending the body, which a server's own 401 passed on by the proxy does not do.
        let refused =
            |status| proxy.as_deref().map(|p| Exchange::Http(credentials_refused(p, status, with_credentials)));
        if parts.status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            if let Some(refusal) = refused(parts.status) {
                return Err(refusal);
            }
        }
        let body = Limited::new(body, MAX_BODY_BYTES).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Exchange::Http(HttpError::TooLarge)
            } else if let Some(refusal) = refused(parts.status).filter(|_| parts.status == StatusCode::UNAUTHORIZED) {
                refusal
            } else {
                match e.downcast::<hyper::Error>() {
                    Ok(e) => Exchange::Hyper(*e),
                    Err(e) => Exchange::Http(HttpError::Protocol(e.to_string())),
                }
            }
        })?;
        drop(sender);
        Ok(Response { status: parts.status, headers: parts.headers, body: body.to_bytes() })
    };
    let (result, _) = tokio::join!(exchange, connection);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_debug_shows_no_body() {
        let r = Response { status: StatusCode::OK, headers: HeaderMap::new(), body: Bytes::from_static(b"AT-SECRET") };
        let text = format!("{r:?}");
        assert!(!text.contains("AT-SECRET") && text.contains("9 bytes"), "{text}");
    }
}
