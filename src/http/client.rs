//! A small HTTP/1.1 client on hyper 1.x for the few calls connd makes (control plane,
//! token endpoints): one connection per request, http or https (rustls), a connect
//! timeout, an overall deadline and a cap on the response body. It knows nothing of what
//! it fetches; callers classify statuses. Errors say whether a retry may help.

use crate::error::{Class, Classify};
use crate::http::tls::{self, TlsError, TlsSettings};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, HOST, USER_AGENT};
use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a TCP connect may take before the attempt counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bodies larger than this are refused: parameters and tokens are small.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The longest wait computed from user input (a flag, `Retry-After`, `expires_in`): far
/// enough to mean "never" here, near enough that `Instant` arithmetic cannot overflow.
pub const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + wait`, clamped to [`FOREVER`]: a huge flag value must not panic.
pub fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait.min(FOREVER)).unwrap_or(now + Duration::from_secs(24 * 3600))
}

/// What a JSON body failed on, without quoting it: serde_json's own message quotes the
/// offending value (`invalid type: string "<a secret>"`), so only its category and place.
pub fn json_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "a read error",
        serde_json::error::Category::Syntax => "a syntax error",
        serde_json::error::Category::Data => "a value of the wrong type or a missing field",
        serde_json::error::Category::Eof => "an unexpected end",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// `url` for messages: user-info (`user:password@`) replaced by `***@`, as an error about a
/// URL must not print the credentials in it.
fn redact_url(url: &str) -> String {
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
}

/// Parses `url` and applies the plain-http rule of SPEC §3.
pub fn check_url(url: &str, allow_insecure_http: bool) -> Result<Uri, UrlError> {
    let invalid = || UrlError::Invalid { url: redact_url(url) };
    let uri: Uri = url.parse().map_err(|_| invalid())?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(invalid());
    };
    if authority.as_str().contains('@') {
        return Err(UrlError::UserInfo { url: format!("{scheme}://{}", authority.host()) });
    }
    match scheme {
        "https" => Ok(uri),
        "http" if allow_insecure_http || is_loopback(authority.host()) => Ok(uri),
        "http" => Err(UrlError::Insecure { host: authority.host().into() }),
        _ => Err(invalid()),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Tls(Arc<TlsError>),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("the server's certificate is not trusted ({0}): pass --ca-file with the CA that signed it")]
    Untrusted(rustls::Error),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the exchange failed: {0}")]
    Protocol(String),
    #[error("the response body is over {MAX_BODY_BYTES} bytes")]
    TooLarge,
}

/// The network or the server (worth retrying), unusable TLS settings (a setup error), or
/// a peer connd cannot use.
impl Classify for HttpError {
    fn class(&self) -> Class {
        match self {
            HttpError::Connect(_) | HttpError::Handshake(_) | HttpError::Timeout(_) | HttpError::Protocol(_) => {
                Class::Unavailable
            }
            HttpError::Tls(_) => Class::Config,
            HttpError::Untrusted(_) | HttpError::TooLarge => Class::BadAnswer,
        }
    }
}

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
    tls_settings: TlsSettings,
    /// Built on the first https request: a plain-http setup never reads certificates.
    tls: OnceLock<Result<tokio_rustls::TlsConnector, Arc<TlsError>>>,
}

impl HttpClient {
    pub fn new(tls_settings: TlsSettings) -> HttpClient {
        HttpClient { tls_settings, tls: OnceLock::new() }
    }

    /// Reads the TLS files now, so that a bad `--ca-file` is reported before any request.
    pub fn prepare_tls(&self) -> Result<(), HttpError> {
        self.connector().map(|_| ())
    }

    fn connector(&self) -> Result<tokio_rustls::TlsConnector, HttpError> {
        self.tls.get_or_init(|| build_connector(&self.tls_settings)).clone().map_err(HttpError::Tls)
    }

    /// [`Self::connector`] for async callers: the first build reads files and the system's
    /// roots, which blocks, so it runs on the blocking pool. Two racing first callers may
    /// both build; the first stored wins and both are equivalent.
    async fn connector_async(&self) -> Result<tokio_rustls::TlsConnector, HttpError> {
        if let Some(built) = self.tls.get() {
            return built.clone().map_err(HttpError::Tls);
        }
        let settings = self.tls_settings.clone();
        let built = tokio::task::spawn_blocking(move || build_connector(&settings))
            .await
            .map_err(|_| HttpError::Protocol("the TLS setup task failed".into()))?;
        self.tls.get_or_init(|| built).clone().map_err(HttpError::Tls)
    }

    /// Sends `req` and reads the whole response, all before `deadline`.
    pub async fn send(&self, req: Request, deadline: Instant) -> Result<Response, HttpError> {
        let budget = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout_at(deadline, self.exchange(req, deadline)).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout(budget)),
        }
    }

    async fn exchange(&self, req: Request, deadline: Instant) -> Result<Response, HttpError> {
        let https = req.url.scheme_str() == Some("https");
        let authority = req.url.authority().ok_or_else(|| HttpError::Protocol("the URL has no host".into()))?.clone();
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let connect_deadline = deadline.min(Instant::now() + CONNECT_TIMEOUT);
        let tcp = match tokio::time::timeout_at(connect_deadline, TcpStream::connect((host.as_str(), port))).await {
            Ok(tcp) => tcp.map_err(HttpError::Connect)?,
            Err(_) => return Err(HttpError::Timeout(CONNECT_TIMEOUT)),
        };
        let _ = tcp.set_nodelay(true);
        if https {
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|e| HttpError::Protocol(format!("bad server name: {e}")))?;
            let tls = self.connector_async().await?.connect(name, tcp).await.map_err(|e| {
                match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                    Some(rustls::Error::InvalidCertificate(c)) => {
                        HttpError::Untrusted(rustls::Error::InvalidCertificate(c.clone()))
                    }
                    _ => HttpError::Handshake(e),
                }
            })?;
            exchange_on(tls, req, authority.as_str()).await
        } else {
            exchange_on(tcp, req, authority.as_str()).await
        }
    }
}

fn build_connector(settings: &TlsSettings) -> Result<tokio_rustls::TlsConnector, Arc<TlsError>> {
    tls::client_config(settings).map(tokio_rustls::TlsConnector::from).map_err(Arc::new)
}

async fn exchange_on<IO>(io: IO, req: Request, authority: &str) -> Result<Response, HttpError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let protocol = |e: hyper::Error| HttpError::Protocol(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(protocol)?;
    let path = req.url.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = http::Request::builder().method(req.method).uri(path);
    if let Some(headers) = builder.headers_mut() {
        *headers = req.headers;
        headers.insert(HOST, HeaderValue::from_str(authority).map_err(|e| HttpError::Protocol(e.to_string()))?);
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("connd/", env!("CARGO_PKG_VERSION"))));
    }
    let request = builder.body(Full::new(req.body)).map_err(|e| HttpError::Protocol(e.to_string()))?;
    // The connection is driven here, next to the request, rather than in a spawned task:
    // it ends when the response is read and the sender dropped, so nothing outlives the call.
    let exchange = async move {
        let response = sender.send_request(request).await.map_err(protocol)?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY_BYTES).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                HttpError::TooLarge
            } else {
                HttpError::Protocol(e.to_string())
            }
        })?;
        drop(sender);
        Ok(Response { status: parts.status, headers: parts.headers, body: body.to_bytes() })
    };
    let (result, _) = tokio::join!(exchange, conn);
    result
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
        ] {
            let err = check_url(url, false).unwrap_err().to_string();
            assert!(!err.contains("Sup3rS3cret") && !err.contains("admin") && !err.contains("cid"), "{err}");
        }
        let err = check_url("https://admin:Sup3rS3cret@cp.example:8443/x", false).unwrap_err().to_string();
        assert!(err.starts_with("https://cp.example carries credentials"), "{err}");
    }

    #[test]
    fn json_errors_name_the_place_not_the_content() {
        let e = serde_json::from_str::<std::collections::HashMap<String, u8>>("{\"k\": \"TOPSECRET\"}").unwrap_err();
        assert!(e.to_string().contains("TOPSECRET"), "serde_json changed: the guard is moot");
        let text = json_error(&e);
        assert!(!text.contains("TOPSECRET"), "{text}");
        assert_eq!(text, "a value of the wrong type or a missing field at line 1 column 17");
    }

    #[test]
    fn a_response_debug_shows_no_body() {
        let r = Response { status: StatusCode::OK, headers: HeaderMap::new(), body: Bytes::from_static(b"AT-SECRET") };
        let text = format!("{r:?}");
        assert!(!text.contains("AT-SECRET") && text.contains("9 bytes"), "{text}");
    }

    #[test]
    fn huge_waits_do_not_overflow() {
        assert!(deadline_after(Duration::MAX) > Instant::now());
    }
}
