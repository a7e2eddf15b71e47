//! `connd webhook` as a child process over real TLS: certificates made here by rcgen, a
//! keep-alive HTTPS client that shows the certificate the server presented, and the
//! Python tools the injection tests check against (kubernetes-validate, jsonpatch).

use super::connd;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CA that issues server certificates for `localhost` and `127.0.0.1`.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// One issued certificate: its PEM files' text and its DER.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert") }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    pub fn issue(&self) -> Issued {
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }
}

/// Writes `text` to `path` as the kubelet updates a mounted Secret: a new file renamed
/// over the old one.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A running `connd webhook`, killed when dropped.
pub struct Webhook {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Its stderr lines so far.
    pub log: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
}

impl Webhook {
    /// Starts it on a free loopback port with `issued` as its certificate, and waits for
    /// its `webhook listening` line.
    pub fn start(issued: &Issued, extra: &[&str]) -> Webhook {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        let mut child = connd()
            .args(["webhook", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("connd webhook starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix("addr=")) {
                    let _ = tx.send(addr.parse::<std::net::SocketAddr>().expect("an address"));
                }
                lines.lock().push(line);
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("connd webhook never said it listens: {:?}", log.lock())
        });
        Webhook { child, addr, cert, key, log, dir }
    }

    /// Its stderr so far, as one text.
    pub fn stderr(&self) -> String {
        self.log.lock().join("\n")
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).expect("signal");
    }

    /// Waits for the exit; its code.
    pub fn wait(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(start.elapsed() < Duration::from_secs(10), "connd webhook did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTPS connection to the webhook.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    /// The certificate the server presented on this connection.
    pub server_cert: CertificateDer<'static>,
}

/// What one request got.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    /// Connects to `addr` trusting only `ca`; fails as the TLS handshake does.
    pub async fn connect(addr: std::net::SocketAddr, ca: &CertificateDer<'static>) -> std::io::Result<Client> {
        let tls = tls_stream(addr, ca).await?;
        let server_cert = tls.get_ref().1.peer_certificates().expect("a server certificate")[0].clone();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Client { sender, server_cert })
    }

    pub async fn request(&mut self, method: &str, path: &str, body: impl Into<Bytes>) -> Reply {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "connd-webhook")
            .header("content-type", "application/json")
            .body(Full::new(body.into()))
            .unwrap();
        self.sender.ready().await.expect("connection open");
        let res = self.sender.send_request(req).await.expect("an answer");
        let status = res.status().as_u16();
        Reply { status, body: res.into_body().collect().await.expect("body").to_bytes() }
    }

    /// `POST /mutate` with `review`.
    pub async fn review(&mut self, review: &serde_json::Value) -> Reply {
        self.request("POST", "/mutate", serde_json::to_vec(review).unwrap()).await
    }
}

/// An `AdmissionReview` of a CREATE of `object` (kind `kind` in `group`), shaped as the
/// Kubernetes documentation shows one.
pub fn admission_review(
    uid: &str,
    group: &str,
    kind: &str,
    namespace: &str,
    object: &serde_json::Value,
) -> serde_json::Value {
    let version = "v1";
    let resource = format!("{}s", kind.to_ascii_lowercase());
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": group, "version": version, "kind": kind },
            "resource": { "group": group, "version": version, "resource": resource },
            "requestKind": { "group": group, "version": version, "kind": kind },
            "requestResource": { "group": group, "version": version, "resource": resource },
            "name": object["metadata"]["name"].as_str().unwrap_or(""),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller",
                          "uid": "b2ad3c14-4d2e-4d67-9bd4-9b1c2b7b8a4e",
                          "groups": ["system:serviceaccounts", "system:authenticated"] },
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" }
        }
    })
}

/// Runs `python3 -c script args...`; its stdout, or a panic naming what to install.
pub fn python(script: &str, args: &[&str], needs: &str) -> String {
    let out = std::process::Command::new("python3").arg("-c").arg(script).args(args).output().expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed (.ci/run installs what it needs: pip install {needs}):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Kubernetes versions the manifests are validated for, as `deploy/check` does: the
/// first with native sidecars on by default, and the newest kubernetes-validate knows.
pub const K8S_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];

/// Validates the manifests in `file` with kubernetes-validate in strict mode (unknown
/// fields fail) for every version of [`K8S_VERSIONS`]; panics with its output if any
/// document fails or has no schema.
pub fn kubernetes_validate(file: &Path) {
    for version in K8S_VERSIONS {
        let out = std::process::Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .arg(file)
            .output()
            .expect("python3 runs");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(
            !text.contains("No module named"),
            "kubernetes-validate is needed (.ci/run installs it: pip install kubernetes-validate==1.37.0):\n{text}"
        );
        let bad = text.lines().any(|l| l.starts_with("WARN") || l.starts_with("ERROR"));
        assert!(out.status.success() && !bad, "kubernetes-validate --strict -k {version} refused:\n{text}");
    }
}

/// A TLS connection to `addr` trusting only `ca`, for requests written by hand.
pub async fn tls_stream(
    addr: std::net::SocketAddr,
    ca: &CertificateDer<'static>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await
}
