//! A fake control plane for tests and benches: a hyper server on 127.0.0.1 over rustls,
//! with a CA made here by rcgen. Each connection id has a script of replies (the last
//! repeats); unscripted ids get 404. It answers 304 when If-None-Match matches the
//! current version, and records every request (path, If-None-Match, Authorization, time).
//! Other paths are scripted by their path (`/token`), so one fake can also play a token
//! endpoint with [`Reply::Raw`] answers.
//! It runs on its own thread and runtime, so synchronous tests can drive the real binary.

#![allow(dead_code)]

/// The server skeleton, a module of this file so that the benches that include this file
/// by path get it too.
#[path = "fake_server.rs"]
pub mod fake_server;

use bytes::Bytes;
use fake_server::FakeServer;
use http_body_util::Full;
use hyper::body::Incoming;
use parking_lot::Mutex;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with `ETag: "<version>"` and these parameters; 304 when the client already has it.
    Ok { version: String, params: Vec<(String, String)> },
    /// A bare status with an empty JSON body.
    Status(u16),
    /// 429 with `Retry-After: <secs>`.
    TooMany { retry_after_secs: u64 },
    /// Waits this long before answering 200 with no parameters.
    Slow(Duration),
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 with a body of this many bytes.
    Oversized(usize),
    /// Exactly this status, headers and body.
    Raw { status: u16, headers: Vec<(String, String)>, body: String },
}

impl Reply {
    pub fn raw(status: u16, body: &str) -> Reply {
        Reply::Raw { status, headers: Vec::new(), body: body.into() }
    }

    pub fn raw_with(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Reply::Raw { status, headers, body: body.into() }
    }

    pub fn ok(version: &str, params: &[(&str, &str)]) -> Reply {
        Reply::Ok {
            version: version.into(),
            params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }
}

/// What a client sent.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub id: String,
    pub if_none_match: Option<String>,
    pub authorization: Option<String>,
    pub at: Instant,
    /// The status the fake answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, VecDeque<Reply>>,
    requests: Vec<Recorded>,
    /// Requests received so far, counted on arrival (before any `Slow` answer).
    arrivals: usize,
    /// TCP connections accepted, whether their TLS handshake succeeds or not: a client's
    /// attempts, even those refused before any request.
    connections: usize,
}

/// Certificates made for one fake, written as PEM files in a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    /// A client certificate and key signed by the CA, for mTLS.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    ca_der: CertificateDer<'static>,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: two fakes' CAs must not be mistaken for one another.
        let name = format!("connd test CA {:016x}", rand_u64());
        ca_params.distinguished_name.push(DnType::CommonName, name);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA cert");

        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().expect("leaf key");
            let cert = CertificateParams::new(names).expect("leaf params").signed_by(&key, &ca).expect("leaf cert");
            (cert, key)
        };
        let (server, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
        let (client, client_key) = leaf(vec!["connd-test-client".into()]);

        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        Pki {
            ca_file: write("ca.pem", &ca.pem()),
            client_cert: write("client.pem", &client.pem()),
            client_key: write("client.key", &client_key.serialize_pem()),
            server_chain: vec![server.der().clone()],
            server_key: server_key.serialize_pem().into_bytes(),
            ca_der: ca.der().clone(),
            ca,
            dir,
        }
    }

    /// The server presents a certificate made from `params`, signed by this CA.
    pub fn set_server(&mut self, params: CertificateParams) {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("leaf cert");
        self.server_chain = vec![cert.der().clone()];
        self.server_key = key.serialize_pem().into_bytes();
    }

    /// The server presents this PEM certificate and key (made elsewhere, e.g. by openssl).
    pub fn set_server_pem(&mut self, cert_pem: &str, key_pem: &str) {
        self.server_chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("server certificate PEM");
        self.server_key = key_pem.as_bytes().to_vec();
    }

    /// A client certificate for `common_name` signed by this CA, and its key, as PEM
    /// files: `(cert, key)`.
    pub fn client_named(&self, common_name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("client key");
        let mut params = CertificateParams::new(vec![common_name.to_owned()]).expect("client params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.ca).expect("client cert");
        let (cert_path, key_path) =
            (self.dir.path().join(format!("{common_name}.pem")), self.dir.path().join(format!("{common_name}.key")));
        std::fs::write(&cert_path, cert.pem()).expect("write PEM");
        std::fs::write(&key_path, key.serialize_pem()).expect("write PEM");
        (cert_path, key_path)
    }

    /// The server's certificate and key as PEM files, for servers of other tools: `(cert, key)`.
    pub fn server_files(&self) -> (PathBuf, PathBuf) {
        let pem: String = self
            .server_chain
            .iter()
            .map(|der| {
                let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der.as_ref());
                let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
                format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
            })
            .collect();
        let (cert, key) = (self.dir.path().join("server.pem"), self.dir.path().join("server.key"));
        std::fs::write(&cert, pem).expect("write PEM");
        std::fs::write(&key, &self.server_key).expect("write PEM");
        (cert, key)
    }

    /// The CA's private key, PEM, for signing with other tools.
    pub fn ca_key_pem(&self) -> String {
        self.ca.key().serialize_pem()
    }
}

impl Pki {
    /// A server configuration that asks for a client certificate signed by this CA and
    /// offers only `h2` by ALPN (the egress proxy's mTLS and HTTP/2 tests).
    pub fn mtls_h2_server_config(&self) -> Arc<rustls::ServerConfig> {
        self.mtls_server_config(b"h2")
    }

    /// As [`Self::mtls_h2_server_config`], its ALPN offering `alpn` alone.
    pub fn mtls_server_config(&self, alpn: &[u8]) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("CA root");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .expect("client verifier");
        let key = PrivateKeyDer::from_pem_slice(&self.server_key).expect("server key");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server_chain.clone(), key)
            .expect("server cert");
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }

    /// A server configuration presenting the CA-signed certificate for `localhost` and
    /// `127.0.0.1`, without client authentication.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::from_pem_slice(&self.server_key).expect("server key");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), key)
            .expect("server cert");
        Arc::new(config)
    }
}

pub struct FakeControlPlane {
    pub pki: Pki,
    server: FakeServer,
    state: Arc<Mutex<State>>,
}

impl FakeControlPlane {
    /// Starts a fake over TLS; with `require_client_cert`, only mTLS clients get through.
    pub fn start(require_client_cert: bool) -> FakeControlPlane {
        FakeControlPlane::start_with(Pki::new(), require_client_cert)
    }

    /// [`Self::start`] with certificates set up by the caller.
    pub fn start_with(pki: Pki, require_client_cert: bool) -> FakeControlPlane {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(pki.ca_der.clone()).expect("CA root");
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::from_pem_slice(&pki.server_key).expect("server key");
        // Not `with_single_cert`: it refuses what a test may want to present (an X.509 v1
        // certificate), as connd should.
        let key = provider.key_provider.load_private_key(key).expect("server key type");
        let certified = rustls::sign::CertifiedKey::new(pki.server_chain.clone(), key);
        let config = Arc::new(builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified))));

        let state = Arc::new(Mutex::new(State::default()));
        let counted = state.clone();
        let answered = state.clone();
        let server = FakeServer::start(
            Some(config),
            move || counted.lock().connections += 1,
            move |req| answer(req, answered.clone()),
        );
        FakeControlPlane { pki, server, state }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.server.addr().port())
    }

    pub fn ca_file(&self) -> &Path {
        &self.pki.ca_file
    }

    /// Settings that reach this fake: its URL and its CA, no bearer token, and a startup
    /// timeout long enough for a loaded machine.
    pub fn remote_args(&self) -> connd::source::outbound::Settings {
        connd::source::outbound::Settings {
            control_plane: Some(self.url()),
            token_file: None,
            ca_file: Some(self.ca_file().to_path_buf()),
            client_cert: None,
            client_key: None,
            allow_insecure_http: false,
            no_proxy_env: true,
            startup_timeout: std::time::Duration::from_secs(30),
            cache: None,
        }
    }

    /// Replies for connection `id`, in order; the last one repeats.
    pub fn script(&self, id: &str, replies: Vec<Reply>) {
        self.state.lock().scripts.insert(id.into(), replies.into());
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().requests.clone()
    }

    /// Requests received so far, answered or not.
    pub fn arrivals(&self) -> usize {
        self.state.lock().arrivals
    }

    /// TCP connections accepted so far, handshakes that failed included.
    pub fn connections(&self) -> usize {
        self.state.lock().connections
    }

    pub fn requests_for(&self, id: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.id == id).collect()
    }
}

async fn answer(
    req: hyper::Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let arrived = Instant::now();
    state.lock().arrivals += 1;
    let path = req.uri().path().to_owned();
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (if_none_match, authorization) = (header("if-none-match"), header("authorization"));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let id = match segments.as_slice() {
        ["v1", "projects", _, "components", _, "connections", id] => id.to_string(),
        _ => path.clone(),
    };
    let reply = {
        let mut state = state.lock();
        match state.scripts.get_mut(&id) {
            Some(script) if script.len() > 1 => script.pop_front(),
            Some(script) => script.front().cloned(),
            None => None,
        }
    };
    let response = |status: u16, body: Bytes| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("response")
    };
    let resp = match reply {
        None => response(404, Bytes::from_static(b"{\"error\":\"not found\"}")),
        Some(Reply::Ok { version, params }) => {
            let etag = format!("\"{version}\"");
            if if_none_match.as_deref() == Some(etag.as_str()) {
                let mut r = response(304, Bytes::new());
                r.headers_mut().insert("etag", etag.parse().expect("etag"));
                r
            } else {
                let params: serde_json::Map<String, serde_json::Value> =
                    params.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
                let body = serde_json::json!({"id": id, "version": version, "parameters": params});
                let mut r = response(200, Bytes::from(body.to_string()));
                r.headers_mut().insert("etag", etag.parse().expect("etag"));
                r
            }
        }
        Some(Reply::Status(code)) => response(code, Bytes::from_static(b"{}")),
        Some(Reply::TooMany { retry_after_secs }) => {
            let mut r = response(429, Bytes::from_static(b"{}"));
            r.headers_mut().insert("retry-after", retry_after_secs.into());
            r
        }
        Some(Reply::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            response(200, Bytes::from_static(b"{\"parameters\":{}}"))
        }
        Some(Reply::Garbage) => response(200, Bytes::from_static(b"<html>502 Bad Gateway</html>")),
        Some(Reply::Oversized(n)) => response(200, Bytes::from(vec![b' '; n])),
        Some(Reply::Raw { status, headers, body }) => {
            let mut r = response(status, Bytes::from(body));
            for (k, v) in headers {
                r.headers_mut().insert(
                    http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                    v.parse().expect("header value"),
                );
            }
            r
        }
    };
    state.lock().requests.push(Recorded {
        path,
        id,
        if_none_match,
        authorization,
        at: arrived,
        status: resp.status().as_u16(),
    });
    Ok(resp)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}
