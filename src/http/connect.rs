//! Outbound connections: TCP (hyper-util's `HttpConnector`: DNS, a connect timeout,
//! `TCP_NODELAY`), through a forward proxy when [`Proxies`] says so (a CONNECT tunnel by
//! hyper's own CONNECT and upgrade for https; the proxy itself for http, which then takes
//! absolute-form requests), then TLS by rustls for https. Every failure is an
//! [`HttpError`] that says its cause in words and whether a retry may help.
//!
//! [`Connector`] is a `tower_service::Service<Uri>` whose connections implement hyper's
//! `Read`/`Write` and hyper-util's `Connection`, so it serves both connd's one-shot
//! [`crate::http::client::HttpClient`] and a pooled
//! `hyper_util::client::legacy::Client::builder(..).build(connector)`. A pooled client
//! sending plain `http://` through a proxy adds [`Connector::route`]'s
//! `Proxy-Authorization` to its requests itself, as hyper-util's client does not.

use crate::http::error::HttpError;
use crate::http::proxy::{Proxies, Route};
use crate::http::tls::{self, TlsError, TlsSettings};
use crate::http::tls_fault::{self, TlsFault};
use bytes::Bytes;
use http::header::{HOST, PROXY_AUTHORIZATION};
use http::{HeaderValue, StatusCode, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower_service::Service;

/// How long a TCP connect (to the server or the proxy) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens connections; cheap to clone (clones share the TLS setup and the proxy rules).
#[derive(Clone)]
pub struct Connector {
    tcp: HttpConnector,
    tls: Arc<LazyTls>,
    proxies: Proxies,
    /// Whose client certificate a configuration given whole presents, as a server's
    /// refusal of it names it (`ClientCertificate and ClientKey of connection NAME`).
    presenting: Option<Arc<str>>,
}

/// The rustls client configuration, built on the first https connection: a plain-http
/// setup never reads certificates.
struct LazyTls {
    settings: TlsSettings,
    /// The ALPN protocols offered, most wanted first; none for an HTTP/1.1-only client.
    alpn: Vec<Vec<u8>>,
    built: OnceLock<Result<tokio_rustls::TlsConnector, Arc<TlsError>>>,
}

impl Connector {
    /// A connector trusting and presenting what `tls` names, routing by `proxies`.
    pub fn new(tls: TlsSettings, proxies: Proxies) -> Connector {
        Connector::with_alpn(tls, proxies, Vec::new())
    }

    /// As [`Connector::new`], offering `alpn` (`h2`, `http/1.1`) in TLS handshakes; a
    /// connection whose server chose `h2` says so ([`Connected::negotiated_h2`]), so that
    /// a pooled client speaks HTTP/2 on it.
    pub fn with_alpn(tls: TlsSettings, proxies: Proxies, alpn: Vec<Vec<u8>>) -> Connector {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let tls = Arc::new(LazyTls { settings: tls, alpn, built: OnceLock::new() });
        Connector { tcp, tls, proxies, presenting: None }
    }

    /// The same connector offering no ALPN protocol: HTTP/1.1 over TLS whatever the
    /// server prefers (an HTTP/1.1 upgrade cannot go over HTTP/2).
    pub fn without_alpn(&self) -> Connector {
        let built = match self.tls.built.get() {
            // A configuration given whole (`with_tls_config`) is kept, without ALPN.
            Some(Ok(connector)) => {
                let mut config = (**connector.config()).clone();
                config.alpn_protocols = Vec::new();
                OnceLock::from(Ok(tokio_rustls::TlsConnector::from(Arc::new(config))))
            }
            Some(Err(_)) | None => OnceLock::new(),
        };
        let tls = LazyTls { settings: self.tls.settings.clone(), alpn: Vec::new(), built };
        Connector { tls: Arc::new(tls), ..self.clone() }
    }

    /// The same connector (proxies, ALPN) with the TLS client configuration `config`
    /// (a connection's own certificates, say) instead of its settings'.
    pub fn with_tls_config(&self, config: Arc<rustls::ClientConfig>) -> Connector {
        let mut config = (*config).clone();
        config.alpn_protocols = self.tls.alpn.clone();
        let built = OnceLock::from(Ok(tokio_rustls::TlsConnector::from(Arc::new(config))));
        let tls = LazyTls { settings: self.tls.settings.clone(), alpn: self.tls.alpn.clone(), built };
        Connector { tls: Arc::new(tls), presenting: None, ..self.clone() }
    }

    /// The same connector, saying in a server's refusal of its client certificate that
    /// the certificate is `whose` (`ClientCertificate and ClientKey of connection NAME`),
    /// the place to fix it, rather than `--client-cert`.
    pub fn presenting(&self, whose: &str) -> Connector {
        Connector { presenting: Some(whose.into()), ..self.clone() }
    }

    /// The TLS settings it was made with (`--ca-file`, `--client-cert`).
    pub fn tls_settings(&self) -> &TlsSettings {
        &self.tls.settings
    }

    /// Where a request to `uri` goes: directly or through which proxy.
    pub fn route(&self, uri: &Uri) -> Route {
        self.proxies.route(uri)
    }

    /// Reads the TLS files now (blocking), so that a bad `--ca-file` is reported at startup.
    pub fn prepare_tls(&self) -> Result<(), HttpError> {
        self.tls
            .built
            .get_or_init(|| build(&self.tls.settings, &self.tls.alpn))
            .clone()
            .map(|_| ())
            .map_err(HttpError::Tls)
    }

    /// The TLS connector; its first build reads files and the system's roots, which
    /// blocks, so it runs on the blocking pool. Two racing first callers may both build;
    /// the first stored wins and both are equivalent.
    async fn tls(&self) -> Result<tokio_rustls::TlsConnector, HttpError> {
        if let Some(built) = self.tls.built.get() {
            return built.clone().map_err(HttpError::Tls);
        }
        let (settings, alpn) = (self.tls.settings.clone(), self.tls.alpn.clone());
        let built = tokio::task::spawn_blocking(move || build(&settings, &alpn))
            .await
            .map_err(|_| HttpError::Protocol("the TLS setup task failed".into()))?;
        self.tls.built.get_or_init(|| built).clone().map_err(HttpError::Tls)
    }

    /// A connection to `uri`'s host, ready for an HTTP/1.1 exchange.
    pub async fn connect(&self, uri: Uri) -> Result<Conn, HttpError> {
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or_else(|| HttpError::Protocol("the URL has no host".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let route = self.route(&uri);
        let proxied_http = !https && matches!(route, Route::Proxy { .. });
        let (tcp, proxy_authorization, proxy_shown) = match (route, https) {
            (Route::Direct, _) => (self.tcp_to(&uri, format!("{host}:{port}")).await?, None, None),
            (Route::Proxy { uri: proxy, authorization }, true) => {
                (self.tunnel(&proxy, authorization, &host, port).await?, None, None)
            }
            (Route::Proxy { uri: proxy, authorization }, false) => {
                let proxy_shown = shown(&proxy);
                (self.tcp_to(&proxy, format!("the proxy {proxy_shown}")).await?, authorization, Some(proxy_shown))
            }
        };
        if !https {
            return Ok(Conn {
                io: TokioIo::new(Stream::Tcp(tcp)),
                h2: false,
                proxied_http,
                proxy_authorization,
                proxy_shown,
                refused: Refused::default(),
            });
        }
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| HttpError::Protocol(format!("bad server name {host:?}: {e}")))?;
        let tls = self.tls().await?.connect(name, tcp).await.map_err(|e| self.tls_error(&e, &host))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let refused = Refused::default();
        let refusals = Refusals {
            host,
            settings: self.tls.clone(),
            presenting: self.presenting.clone(),
            refused: refused.clone(),
        };
        Ok(Conn {
            io: TokioIo::new(Stream::Tls(Box::new((tls, refusals)))),
            h2,
            proxied_http: false,
            proxy_authorization: None,
            proxy_shown: None,
            refused,
        })
    }

    /// What a TLS failure talking to `host` means: a [`tls_fault::TlsFault`] in words when rustls
    /// refused something, else a transient handshake failure (the connection broke).
    pub fn tls_error(&self, e: &(dyn std::error::Error + 'static), host: &str) -> HttpError {
        match tls_fault::find_rustls(e) {
            Some(rustls) => HttpError::TlsFault(explain(rustls, host, &self.tls.settings, self.presenting.as_deref())),
            None => HttpError::Handshake { host: host.to_owned(), cause: crate::error::chain(e) },
        }
    }

    /// A TCP stream to `host:port` through the proxy's CONNECT tunnel (RFC 9110 §9.3.6).
    /// hyper's own CONNECT and upgrade rather than hyper-util's `Tunnel`, whose error
    /// drops the proxy's status: a 403 from a proxy's policy is told apart from a 502.
    async fn tunnel(
        &self,
        proxy: &Uri,
        authorization: Option<HeaderValue>,
        host: &str,
        port: u16,
    ) -> Result<TcpStream, HttpError> {
        let proxy_shown = shown(proxy);
        let target = format!("{}:{port}", bracketed(host));
        let tcp = self.tcp_to(proxy, format!("the proxy {proxy_shown}")).await?;
        let broke = |cause: String| HttpError::Proxy {
            message: format!("the proxy {proxy_shown} broke off the CONNECT to {target}: {cause}"),
            permanent: false,
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| broke(e.to_string()))?;
        let mut request = http::Request::connect(target.as_str())
            .header(HOST, target.as_str())
            .body(Empty::<Bytes>::new())
            .map_err(|e| broke(e.to_string()))?;
        let with_credentials = authorization.is_some();
        if let Some(auth) = authorization {
            request.headers_mut().insert(PROXY_AUTHORIZATION, auth);
        }
        let (sender_proxy, sender_target) = (&proxy_shown, &target);
        let ask = async move {
            let response = sender.send_request(request).await.map_err(|e| broke(e.to_string()))?;
            let status = response.status();
            if !status.is_success() {
                return Err(refused(sender_proxy, sender_target, host, status, with_credentials));
            }
            hyper::upgrade::on(response).await.map_err(|e| broke(e.to_string()))
        };
        // The connection is driven next to the request; it hands its stream over on upgrade.
        let (upgraded, _) = tokio::join!(ask, connection.with_upgrades());
        let parts = upgraded?
            .downcast::<TokioIo<TcpStream>>()
            .map_err(|_| HttpError::Protocol("the CONNECT tunnel is not a TCP stream".into()))?;
        if !parts.read_buf.is_empty() {
            return Err(HttpError::Protocol(format!("the proxy {} sent data before the TLS handshake", shown(proxy))));
        }
        Ok(parts.io.into_inner())
    }

    async fn tcp_to(&self, uri: &Uri, shown: String) -> Result<TcpStream, HttpError> {
        let mut tcp = self.tcp.clone();
        match tcp.call(uri.clone()).await {
            Ok(stream) => Ok(stream.into_inner()),
            Err(e) => Err(HttpError::Connect { to: shown, cause: crate::error::chain(&e) }),
        }
    }
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, HttpError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), HttpError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await })
    }
}

/// What `e` from `host` means, as [`tls_fault::explain`] says it, but for a client
/// certificate presented from `presenting`: a refusal of it names that place to fix.
fn explain(e: &rustls::Error, host: &str, settings: &TlsSettings, presenting: Option<&str>) -> TlsFault {
    use rustls::AlertDescription as A;
    match (e, presenting) {
        (
            rustls::Error::AlertReceived(
                alert @ (A::CertificateRequired
                | A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateUnknown
                | A::CertificateExpired
                | A::CertificateRevoked
                | A::UnknownCA
                | A::AccessDenied
                | A::DecryptError),
            ),
            Some(whose),
        ) => TlsFault {
            message: format!(
                "the server {host} refused the client certificate of {whose} with the TLS alert {alert:?}: check {whose} \
                 (a CA the server trusts must have signed the certificate, the key must be its own, and it must be valid today)"
            ),
            own_settings: true,
        },
        _ => tls_fault::explain(e, host, settings),
    }
}

/// What a TLS connection needs to say an alert that arrives after the handshake in
/// words: under TLS 1.3 a server checks the client's certificate after the client has
/// finished its handshake, so its refusal comes at the first read, not at connect.
struct Refusals {
    host: String,
    settings: Arc<LazyTls>,
    presenting: Option<Arc<str>>,
    /// The alert in words, kept for the requests on the connection (see [`Refused`]).
    refused: Refused,
}

/// The TLS alert that ended a connection, in words, once one came: in its `Connected`
/// extras, so that a request the connection broke under (an HTTP/2 stream sees only
/// "connection closed") can say why.
#[derive(Clone, Debug, Default)]
pub struct Refused(Arc<OnceLock<TlsFault>>);

impl Refused {
    pub fn fault(&self) -> Option<&TlsFault> {
        self.0.get()
    }
}

impl Refusals {
    /// Notes the TLS alert in `e`, said in words, in the connection's [`Refused`]; `e`
    /// itself is passed on as it is (a one-shot client finds the alert in it).
    fn note(&self, e: std::io::Error) -> std::io::Error {
        if let Some(alert @ rustls::Error::AlertReceived(_)) = tls_fault::find_rustls(&e) {
            let fault = explain(alert, &self.host, &self.settings.settings, self.presenting.as_deref());
            let _ = self.refused.0.set(fault);
        }
        e
    }
}

fn build(settings: &TlsSettings, alpn: &[Vec<u8>]) -> Result<tokio_rustls::TlsConnector, Arc<TlsError>> {
    let config = tls::client_config(settings).map_err(Arc::new)?;
    if alpn.is_empty() {
        return Ok(tokio_rustls::TlsConnector::from(config));
    }
    let mut config = (*config).clone();
    config.alpn_protocols = alpn.to_vec();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A proxy as messages show it: scheme, host and port (its URL never keeps credentials).
fn shown(proxy: &Uri) -> String {
    format!("{}://{}", proxy.scheme_str().unwrap_or("http"), proxy.authority().map_or("", |a| a.as_str()))
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// What a proxy's refusal of a CONNECT means, by its status: a policy (403, other 4xx) or
/// wrong credentials (407, or 401 from proxies that answer so, tinyproxy among them) will
/// not change by retrying; a 5xx (it could not reach the
/// server) may.
fn refused(proxy: &str, target: &str, host: &str, status: StatusCode, with_credentials: bool) -> HttpError {
    let (message, permanent) = match status {
        StatusCode::PROXY_AUTHENTICATION_REQUIRED | StatusCode::UNAUTHORIZED => {
            return credentials_refused(proxy, status, with_credentials)
        }
        s if s.is_server_error() => (
            format!("the proxy {proxy} could not open a tunnel (CONNECT) to {target} ({status})"),
            false,
        ),
        _ => (
            format!("the proxy {proxy} refused to open a tunnel (CONNECT) to {target} ({status}): it may not allow CONNECT to that host or port; ask its administrator, or list {host} in NO_PROXY to bypass the proxy"),
            true,
        ),
    };
    HttpError::Proxy { message, permanent }
}

/// The proxy `proxy` (as [`Conn::proxy_shown`] gives it) refused a request for its
/// credentials: `status` is 407, or 401 from proxies that answer so (tinyproxy). Wrong
/// or missing credentials stay so: permanent, not retried. The message names the proxy,
/// never the credentials.
pub fn credentials_refused(proxy: &str, status: StatusCode, with_credentials: bool) -> HttpError {
    let message = if with_credentials {
        format!("the proxy {proxy} refused the credentials in its URL ({status}): fix the user and password in the proxy variable")
    } else {
        format!("the proxy {proxy} asks for credentials ({status}): give them in the proxy variable, as http://user:password@host:port")
    };
    HttpError::Proxy { message, permanent: true }
}

/// One connection: TCP or TLS over TCP, tunneled or not.
pub struct Conn {
    io: TokioIo<Stream>,
    /// The TLS handshake chose `h2` by ALPN.
    h2: bool,
    /// Plain http through a proxy: requests go in absolute form (`GET http://host/path`).
    proxied_http: bool,
    /// For those requests: the proxy's credentials, to send as `Proxy-Authorization`.
    proxy_authorization: Option<HeaderValue>,
    /// For those requests: the proxy, as messages show it.
    proxy_shown: Option<String>,
    /// The TLS alert that ended it, if one did.
    refused: Refused,
}

impl Conn {
    /// Whether requests on this connection go to a proxy in absolute form.
    pub fn is_proxied_http(&self) -> bool {
        self.proxied_http
    }

    /// The `Proxy-Authorization` value requests on this connection carry (plain http
    /// through a proxy whose URL has credentials); sensitive, never logged.
    pub fn proxy_authorization(&self) -> Option<&HeaderValue> {
        self.proxy_authorization.as_ref()
    }

    /// The proxy plain-http requests on this connection go to (scheme, host and port,
    /// never credentials); `None` when they go to the server itself.
    pub fn proxy_shown(&self) -> Option<&str> {
        self.proxy_shown.as_deref()
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        let connected = Connected::new().proxy(self.proxied_http).extra(self.refused.clone());
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A write to a TLS connection failed (`e`): when the server closed it after an alert
/// (TLS 1.3's refusal of a client certificate, sent as the client wrote its first
/// request), the alert waits unread in the socket: noted and returned if so, else `e`. Read
/// from the socket itself: the runtime may not know it readable yet, and the connection
/// is ended once this error is returned.
fn write_failed(s: &mut (tokio_rustls::client::TlsStream<TcpStream>, Refusals), e: std::io::Error) -> std::io::Error {
    use std::os::fd::AsRawFd;
    let ((tcp, tls), refusals) = (s.0.get_mut(), &s.1);
    let mut scratch = [0u8; 4096];
    while let Ok(n @ 1..) =
        nix::sys::socket::recv(tcp.as_raw_fd(), &mut scratch, nix::sys::socket::MsgFlags::MSG_DONTWAIT)
    {
        if tls.read_tls(&mut &scratch[..n]).is_err() {
            break;
        }
        match tls.process_new_packets() {
            Ok(_) => {}
            Err(alert @ rustls::Error::AlertReceived(_)) => {
                return refusals.note(std::io::Error::new(std::io::ErrorKind::InvalidData, alert));
            }
            Err(_) => break,
        }
    }
    e
}

enum Stream {
    Tcp(TcpStream),
    Tls(Box<(tokio_rustls::client::TlsStream<TcpStream>, Refusals)>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => {
                let (tls, refusals) = s.as_mut();
                match Pin::new(tls).poll_read(cx, buf) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(refusals.note(e))),
                    other => other,
                }
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => match Pin::new(&mut s.0).poll_write(cx, buf) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(write_failed(s, e))),
                other => other,
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => match Pin::new(&mut s.0).poll_flush(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(write_failed(s, e))),
                other => other,
            },
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut s.0).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use parking_lot::Mutex;

    /// A loopback HTTP server that answers 200 and records each request's target as sent.
    async fn recording_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        record.lock().push(req.uri().to_string());
                        async { Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new())) }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
                });
            }
        });
        (addr, seen)
    }

    /// The egress proxy builds its pooled client on this connector: direct, and plain
    /// http through a proxy, which then gets the request in absolute form.
    #[tokio::test]
    async fn hyper_utils_pooled_client_uses_the_connector() {
        let (addr, seen) = recording_server().await;
        let direct = Client::builder(TokioExecutor::new())
            .build::<_, Empty<Bytes>>(Connector::new(TlsSettings::default(), Proxies::none()));
        let response = direct.get(format!("http://{addr}/direct").parse().unwrap()).await.expect("direct GET");
        assert_eq!(response.status(), StatusCode::OK);

        let proxy = format!("http://{addr}");
        let proxies = Proxies::from_lookup(|name| (name == "HTTP_PROXY").then(|| proxy.clone())).unwrap();
        let via_proxy = Client::builder(TokioExecutor::new())
            .build::<_, Empty<Bytes>>(Connector::new(TlsSettings::default(), proxies));
        let response =
            via_proxy.get("http://upstream.invalid/through".parse().unwrap()).await.expect("GET through the proxy");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(*seen.lock(), ["/direct", "http://upstream.invalid/through"]);
    }
}
