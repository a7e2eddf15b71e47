//! The real `connd` with its egress proxy, for the proxy's tests: started with
//! `--proxy-listen 127.0.0.1:0` (the address read from its log), its stderr collected,
//! and the ways a test talks to it (one request on a fresh connection, raw bytes).

use super::connd;
use bytes::Bytes;
use connd::serve::api::client::request;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for connd or an answer.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A running `connd serve --proxy-listen 127.0.0.1:0`, its stderr collected.
pub struct ProxyDaemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub socket: PathBuf,
    log: Arc<Mutex<String>>,
    _tmp: tempfile::TempDir,
}

impl ProxyDaemon {
    pub fn start(config_dir: &Path, extra: &[&str]) -> ProxyDaemon {
        ProxyDaemon::spawn("serve", config_dir, extra, &[], &[])
    }

    /// `connd serve` with these environment variables.
    pub fn start_with_env(config_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> ProxyDaemon {
        ProxyDaemon::spawn("serve", config_dir, extra, &[], env)
    }

    /// `connd run` with the proxy, supervising `command`.
    pub fn run(config_dir: &Path, extra: &[&str], command: &[&str]) -> ProxyDaemon {
        ProxyDaemon::spawn("run", config_dir, extra, command, &[])
    }

    pub fn spawn(sub: &str, config_dir: &Path, extra: &[&str], command: &[&str], env: &[(&str, &str)]) -> ProxyDaemon {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("connd.sock");
        let mut cmd = connd();
        cmd.args([sub, "--config-dir"])
            .arg(config_dir)
            .arg("--socket")
            .arg(&socket)
            .args(["--proxy-listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied());
        if !command.is_empty() {
            cmd.arg("--").args(command);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("connd serve starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                if let Some(addr) = line.split("addr=").nth(1) {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_owned());
                }
                let mut log = sink.lock();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(PATIENCE) {
            Ok(addr) => addr.parse().expect("an address"),
            Err(_) => panic!("connd never said where the proxy listens:\n{}", log.lock()),
        };
        ProxyDaemon { child, addr, socket, log, _tmp: tmp }
    }

    pub async fn ready(&self) {
        let ready = super::daemon::ready_within(&self.socket, PATIENCE).await;
        assert!(ready, "connd serve never became ready:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        self.log.lock().clone()
    }

    /// The log once it holds `needle`: a record written as an answer leaves may reach
    /// the reader thread after the caller has the answer.
    pub async fn log_with(&self, needle: &str) -> String {
        let start = std::time::Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) || start.elapsed() > PATIENCE {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        request(&self.socket, Method::GET, "/metrics").await.expect("metrics").text()
    }

    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for ProxyDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `line` without terminal colour sequences (`ESC [ ... m`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What the proxy answered.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The upstream's echo of one request header (its first value).
    pub fn echoed(&self, name: &str) -> Option<String> {
        self.json()["headers"][name][0].as_str().map(str::to_owned)
    }
}

/// One request through the proxy on a fresh connection.
pub async fn call(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    try_call(addr, method, target, headers, body).await.expect("connect to the proxy")
}

/// As [`call`], or `None` when the connection is refused: a port a reload is moving may
/// be closed for a moment.
pub async fn try_call(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Reply> {
    let tcp = match TcpStream::connect(addr).await {
        Ok(tcp) => tcp,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return None,
        Err(e) => panic!("connect to the proxy: {e}"),
    };
    // Up to 1000 answer fields: the proxy passes more than hyper's default of 100.
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_headers(1000)
        .handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(method).uri(target).header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let res = tokio::time::timeout(PATIENCE, sender.send_request(req)).await.expect("an answer").expect("response");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Some(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
}

/// Sends `raw` bytes and reads until the proxy closes; the answer's text.
pub async fn raw(addr: SocketAddr, raw: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut out)).await.expect("the proxy closed");
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until `metrics` shows `line`.
pub async fn wait_for_metric(daemon: &ProxyDaemon, line: &str) {
    let start = Instant::now();
    loop {
        let text = daemon.metrics().await;
        if text.contains(line) {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "{line} never showed in:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
