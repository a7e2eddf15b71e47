//! Test support: a real OAuth 2.0 authorization server for integration tests.
//!
//! [`OidcProvider::start`] runs `tests/support/oidc/server.mjs`, which serves the
//! `oidc-provider` `npm` package (a certified OpenID provider) with the
//! client-credentials grant enabled, on 127.0.0.1 with an OS-assigned port. The
//! OAuth behaviour (client authentication, scope checks, error bodies) is the
//! provider's own; the server only adds test-only counters at `/_test/stats`.
//!
//! Needs Node.js (>= 18) on `PATH` and the provider installed once with
//! `npm ci --prefix tests/support/oidc`. A missing prerequisite is a panic,
//! never a silently skipped test.
//!
//! The provider's stdin is a pipe that this struct keeps open: the server exits
//! when it closes, so a provider never outlives the test process, even one that
//! is killed. Its stderr is forwarded to the test's stderr, prefixed `[oidc]`.

// Each test module uses only part of this API.
#![allow(dead_code)]

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const STDERR_TAIL_LINES: usize = 20;
const INSTALL_HINT: &str = "run: npm ci --prefix tests/support/oidc";

/// One OAuth client registered with the provider.
#[derive(Clone, Debug)]
pub struct Client {
    pub id: String,
    /// Empty for the methods without a secret.
    pub secret: String,
    /// `"client_secret_basic"` or `"client_secret_post"`: the method the client is
    /// registered with. oidc-provider accepts either method from any client that
    /// has a secret, so use [`OidcProvider::token_requests_with_auth`] to check
    /// which one a caller actually used.
    pub auth: &'static str,
    /// Space-separated scopes this client may request, e.g. `"read write"`.
    pub scope: String,
    /// More registration fields for server.mjs (`key_pem`, `kid`,
    /// `tls_client_auth_subject_dn`, `token_exchange`).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Client {
    /// A client registered for `client_secret_basic`.
    pub fn basic(id: &str, secret: &str, scope: &str) -> Client {
        Client::with_method(id, secret, "client_secret_basic", scope)
    }

    /// A client registered for `method` (any server.mjs knows; `secret` empty when the
    /// method has none).
    pub fn with_method(id: &str, secret: &str, method: &'static str, scope: &str) -> Client {
        Client { id: id.into(), secret: secret.into(), auth: method, scope: scope.into(), extra: Default::default() }
    }

    /// This client with one more registration field.
    pub fn field(mut self, key: &str, value: serde_json::Value) -> Client {
        self.extra.insert(key.into(), value);
        self
    }

    /// A client registered for `client_secret_post`.
    pub fn post(id: &str, secret: &str, scope: &str) -> Client {
        Client::with_method(id, secret, "client_secret_post", scope)
    }
}

/// Counters kept by the server's `GET /_test/stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Every request that reached the token endpoint, whatever its outcome.
    pub token_requests: u64,
    /// Token requests answered 200 with an access token.
    pub token_successes: u64,
    /// Token requests that sent an `Authorization: Basic` header.
    pub client_secret_basic: u64,
    /// Token requests that sent `client_secret` in the form body.
    pub client_secret_post: u64,
}

/// A running oidc-provider; killed when dropped.
pub struct OidcProvider {
    /// The `node` process, killed and reaped on drop.
    child: Child,
    /// Held open for the provider's lifetime: closing it stops the server.
    stdin: Option<ChildStdin>,
    /// Joined on stop so the server's last words reach the test output.
    stderr_forwarder: Option<JoinHandle<()>>,
    /// The last lines the server wrote to stderr, for start-up failure messages.
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// From the ready line: where the provider listens.
    port: u16,
    /// From the ready line: where the test-only routes are (plain http).
    admin_port: u16,
    /// From the ready line, as the provider itself reports them.
    issuer: String,
    token_url: String,
}

impl OidcProvider {
    /// Starts a provider with these clients; client-credentials access tokens
    /// live `token_ttl_secs` seconds (the token response's `expires_in`).
    ///
    /// Panics, with what to do, if Node.js or the installed provider is missing,
    /// or if the server does not report ready within 20 seconds.
    pub fn start(clients: &[Client], token_ttl_secs: u64) -> OidcProvider {
        OidcProvider::start_with(clients, token_ttl_secs, None)
    }

    /// As [`Self::start`], over https with `requestCert` when `tls` names the server's
    /// certificate, key and the CA its clients' certificates are checked against
    /// (`(cert, key, ca)`): the provider's mTLS feature (`tls_client_auth`) is on.
    pub fn start_with(clients: &[Client], token_ttl_secs: u64, tls: Option<(&Path, &Path, &Path)>) -> OidcProvider {
        assert!(!clients.is_empty(), "OidcProvider::start needs at least one client");

        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/oidc");
        let script = dir.join("server.mjs");
        assert!(script.is_file(), "OIDC test server missing: {}", script.display());
        let installed: PathBuf = dir.join("node_modules/oidc-provider/package.json");
        if !installed.is_file() {
            panic!("oidc-provider is not installed ({} not found); {INSTALL_HINT}", installed.display());
        }

        let clients_json = serde_json::Value::Array(
            clients
                .iter()
                .map(|c| {
                    let mut v = serde_json::json!({
                        "client_id": c.id,
                        "client_secret": c.secret,
                        "token_endpoint_auth_method": c.auth,
                        "scope": c.scope,
                    });
                    v.as_object_mut().expect("an object").extend(c.extra.clone());
                    v
                })
                .collect(),
        );

        let mut command = Command::new("node");
        if let Some((cert, key, ca)) = tls {
            command.env("OIDC_TLS", serde_json::json!({"cert": cert, "key": key, "ca": ca}).to_string());
        }
        let mut child = match command
            .arg(&script)
            .current_dir(&dir)
            .env("OIDC_CLIENTS", clients_json.to_string())
            .env("OIDC_TOKEN_TTL", token_ttl_secs.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "cannot start the OIDC test server: `node` not found on PATH \
                 (install Node.js >= 18, then {INSTALL_HINT})"
            ),
            Err(e) => panic!("cannot start the OIDC test server (node {}): {e}", script.display()),
        };

        let stdin = child.stdin.take();
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout = child.stdout.take().expect("piped stdout");

        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr_tail);
        let stderr_forwarder = std::thread::Builder::new()
            .name("oidc-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[oidc] {line}");
                    let mut tail = tail.lock();
                    if tail.len() == STDERR_TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            })
            .expect("spawn oidc stderr thread");

        // The first stdout line is the ready line; anything after it is unexpected
        // but is drained (to stderr) so the server can never block on stdout.
        let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<String>>();
        std::thread::Builder::new()
            .name("oidc-stdout".into())
            .spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                match lines.next() {
                    Some(first) => {
                        let _ = ready_tx.send(first);
                    }
                    None => return, // EOF: dropping the sender reports it
                }
                for line in lines.map_while(Result::ok) {
                    eprintln!("[oidc stdout] {line}");
                }
            })
            .expect("spawn oidc stdout thread");

        let mut provider = OidcProvider {
            child,
            stdin,
            stderr_forwarder: Some(stderr_forwarder),
            stderr_tail,
            port: 0,
            admin_port: 0,
            issuer: String::new(),
            token_url: String::new(),
        };

        let line = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => {
                provider.stop();
                panic!("reading the OIDC test server's ready line failed: {e}{}", provider.stderr_report());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                provider.stop();
                panic!(
                    "the OIDC test server did not report ready within {}s; if dependencies are \
                     missing, {INSTALL_HINT}{}",
                    READY_TIMEOUT.as_secs(),
                    provider.stderr_report()
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = provider.stop();
                panic!(
                    "the OIDC test server exited before it was ready ({status}); if dependencies \
                     are missing, {INSTALL_HINT}{}",
                    provider.stderr_report()
                );
            }
        };

        let ready: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                provider.stop();
                panic!("the OIDC test server's ready line is not JSON ({e}): {line:?}");
            }
        };
        let field = |name: &str| ready.get(name).cloned().unwrap_or(serde_json::Value::Null);
        let (Some(true), Some(port), Some(issuer), Some(token_url)) = (
            field("ready").as_bool(),
            field("port").as_u64().and_then(|p| u16::try_from(p).ok()),
            field("issuer").as_str().map(str::to_owned),
            field("token_url").as_str().map(str::to_owned),
        ) else {
            provider.stop();
            panic!("unexpected ready line from the OIDC test server: {line}");
        };
        provider.port = port;
        provider.admin_port = field("admin_port").as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(port);
        provider.issuer = issuer;
        provider.token_url = token_url;
        provider
    }

    /// The provider's token endpoint, e.g. `http://127.0.0.1:12345/token`.
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// The issuer identifier, e.g. `http://127.0.0.1:12345`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Requests the token endpoint received since start or the last [`reset`](Self::reset),
    /// failed ones included.
    pub fn token_requests(&self) -> u64 {
        self.stats().token_requests
    }

    /// Token requests answered 200 with an access token.
    pub fn token_successes(&self) -> u64 {
        self.stats().token_successes
    }

    /// Token requests that presented client credentials with `method`:
    /// `"client_secret_basic"` (an `Authorization: Basic` header) or
    /// `"client_secret_post"` (`client_secret` in the form body).
    pub fn token_requests_with_auth(&self, method: &str) -> u64 {
        let stats = self.stats();
        match method {
            "client_secret_basic" => stats.client_secret_basic,
            "client_secret_post" => stats.client_secret_post,
            other => panic!("unknown client authentication method {other:?}"),
        }
    }

    /// All counters at once.
    pub fn stats(&self) -> Stats {
        let v = self.request("GET", "/_test/stats");
        let n = |v: &serde_json::Value, k: &str| {
            v.get(k).and_then(serde_json::Value::as_u64).unwrap_or_else(|| panic!("/_test/stats: no {k} in {v}"))
        };
        let methods = v.get("auth_methods").cloned().unwrap_or_default();
        Stats {
            token_requests: n(&v, "token_requests"),
            token_successes: n(&v, "token_successes"),
            client_secret_basic: n(&methods, "client_secret_basic"),
            client_secret_post: n(&methods, "client_secret_post"),
        }
    }

    /// Every token request as the provider judged it (see server.mjs, `/_test/seen`).
    pub fn seen(&self) -> Vec<serde_json::Value> {
        match self.request("GET", "/_test/seen") {
            serde_json::Value::Array(all) => all,
            other => panic!("/_test/seen is not a list: {other}"),
        }
    }

    /// Zeroes the counters.
    pub fn reset(&self) {
        self.request("POST", "/_test/reset");
    }

    /// One HTTP/1.0 request to the test-only routes; returns the JSON body.
    fn request(&self, method: &str, path: &str) -> serde_json::Value {
        let what = format!("{method} {path} on the OIDC test server (port {})", self.admin_port);
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.admin_port)).unwrap_or_else(|e| panic!("{what}: connect: {e}"));
        stream.set_read_timeout(Some(HTTP_TIMEOUT)).expect("set_read_timeout");
        stream.set_write_timeout(Some(HTTP_TIMEOUT)).expect("set_write_timeout");
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nAccept: application/json\r\nContent-Length: 0\r\n\r\n",
            self.admin_port
        )
        .unwrap_or_else(|e| panic!("{what}: write: {e}"));
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap_or_else(|e| panic!("{what}: read: {e}"));
        let text = String::from_utf8_lossy(&raw);
        let (head, body) =
            text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{what}: malformed HTTP response: {text:?}"));
        let status = head.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("200") {
            panic!("{what}: {status}: {body}");
        }
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body:?}"))
    }

    /// The server's last stderr lines, formatted for a panic message.
    fn stderr_report(&self) -> String {
        let tail = self.stderr_tail.lock();
        if tail.is_empty() {
            return "\n(the server wrote nothing to stderr)".into();
        }
        let mut out = String::from("\nlast lines of the server's stderr:");
        for line in tail.iter() {
            out.push_str("\n  ");
            out.push_str(line);
        }
        out
    }

    /// Closes stdin (the server exits on EOF), kills the process, reaps it.
    fn stop(&mut self) -> String {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let status = match self.child.wait() {
            Ok(status) => status.to_string(),
            Err(e) => format!("wait failed: {e}"),
        };
        if let Some(forwarder) = self.stderr_forwarder.take() {
            let _ = forwarder.join();
        }
        status
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}
