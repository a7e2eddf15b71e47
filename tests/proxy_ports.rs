//! A connection's own proxy port (`proxy: { port: N }`, docs/proxy.md) with the real binary
//! and real sockets: every request on it goes to that connection with its whole path
//! (HTTP/1.1, h2c from curl, gRPC from grpcio), with or without a shared listener; bad
//! ports are config errors; a taken port is a startup error; reloads open, close and move
//! ports while the others keep their open connections; a bad reload keeps the last good
//! listeners; `check` lists the ports.

use crate::support::daemon::Daemon;
use crate::support::proxy::*;
use crate::support::upstream::Upstream;
use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ORDERS: &str = "0b9e5d3a-7c41-4e8f-b2d6-5a1f3c9e7d40";
const STOCK: &str = "5c0a1e2b-3d4f-4a5b-8c6d-7e8f9a0b1c2d";
const EXTRA: &str = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d";
const BEARER: &str = "Bearer upstream-t0ken";

/// A port nobody listens on now (bound and let go).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A connection `name` to `url` whose `Authorization` carries [`BEARER`], on `port` if given.
fn descriptor(id: &str, name: &str, url: &str, port: Option<u16>) -> String {
    let port = port.map_or(String::new(), |p| format!("port: {p}, "));
    format!(
        "---\nkind: Connection\nid: {id}\nname: {name}\nproject: hr-project\nvisibility: project\n\
         proxy: {{ {port}headers: {{ Authorization: Tok }} }}\nparameters:\n  ServiceURL: {url}\n  Tok: \"{BEARER}\"\n"
    )
}

fn fixture(names: &[&str], connections: &str) -> Fixture {
    Fixture::with(&component_yaml(&names.iter().map(|n| (*n, "thirdparty:svc/v1")).collect::<Vec<_>>()), connections)
}

/// Replaces `connections.yaml` at once (a new file renamed over it), as an editor would.
fn rewrite(fx: &Fixture, connections: &str) {
    let tmp = fx.join(".connections.yaml.new");
    std::fs::write(&tmp, connections).unwrap();
    std::fs::rename(&tmp, fx.join("connections.yaml")).unwrap();
}

/// Whether something accepts connections on `port`.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(at(port)).is_ok()
}

/// Waits until `port` listens (`true`) or not (`false`).
async fn wait_listening(port: u16, want: bool, log: impl Fn() -> String) {
    let start = Instant::now();
    while listening(port) != want {
        assert!(start.elapsed() < PATIENCE, "port {port} never became listening={want}:\n{}", log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The upstream target a GET of `path` on `port` reached; `None` when the port did not
/// answer (not listening, or a listener that closed as the request came).
async fn target_of(port: u16, path: &str) -> Option<String> {
    let tcp = tokio::net::TcpStream::connect(at(port)).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.ok()?;
    tokio::spawn(conn);
    let req = http::Request::get(path).header("host", at(port).to_string()).body(Full::<Bytes>::default()).ok()?;
    let res = tokio::time::timeout(PATIENCE, sender.send_request(req)).await.ok()?.ok()?;
    let body = res.into_body().collect().await.ok()?.to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).ok()?;
    echo["target"].as_str().map(str::to_owned)
}

/// One kept-alive HTTP/1.1 connection to a port, for requests one after the other.
struct KeptAlive {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl KeptAlive {
    async fn open(addr: SocketAddr) -> KeptAlive {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect to the port");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("handshake");
        tokio::spawn(conn);
        KeptAlive { sender, addr }
    }

    /// GET `target` on this same connection; the upstream's echo.
    async fn get(&mut self, target: &str) -> serde_json::Value {
        let req = http::Request::get(target).header("host", self.addr.to_string()).body(Full::default()).unwrap();
        let res = tokio::time::timeout(PATIENCE, self.sender.send_request(req))
            .await
            .expect("an answer")
            .expect("the kept-alive connection still serves");
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }
}

#[tokio::test]
async fn a_port_sends_every_request_to_its_connection_with_the_whole_path() {
    let up = Upstream::plain();
    let (p_orders, p_stock) = (free_port(), free_port());
    let connections = descriptor(ORDERS, "orders", &format!("{}/v1", up.url()), Some(p_orders))
        + &descriptor(STOCK, "stock", &format!("{}/v2", up.url()), Some(p_stock));
    let fx = fixture(&["orders", "stock"], &connections);
    // No --proxy-listen: a connection's port does not need the shared listener.
    let daemon = Daemon::start(fx.path(), &[], &[]);
    daemon.ready().await;
    let r = call(at(p_orders), "POST", "/pkg.Service/Method?x=1", &[], "body").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/v1/pkg.Service/Method?x=1", "the whole path, under the ServiceURL's");
    assert_eq!(r.echoed("authorization").as_deref(), Some(BEARER));
    let r = call(at(p_stock), "GET", "/items/7", &[], "").await;
    assert_eq!(r.json()["target"], "/v2/items/7");
    // The port names the connection: a caller's Connd-Connection neither reroutes it nor
    // goes upstream.
    let r = call(at(p_orders), "GET", "/x", &[("connd-connection", "stock")], "").await;
    assert_eq!(r.json()["target"], "/v1/x");
    assert_eq!(r.echoed("connd-connection"), None);
    // h2c with prior knowledge, as a gRPC client speaks it, on the same port.
    let url = format!("http://127.0.0.1:{p_stock}/items/8");
    let out = Command::new("curl").args(["-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}", &url]).output();
    let text = String::from_utf8_lossy(&out.expect("curl runs").stdout).into_owned();
    let (body, version) = text.rsplit_once('\n').unwrap_or_else(|| panic!("{text}"));
    assert_eq!(version, "2", "{text}");
    let echo: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(
        (echo["target"].as_str(), echo["headers"]["authorization"][0].as_str()),
        (Some("/v2/items/8"), Some(BEARER))
    );
    let metrics =
        connd::serve::api::client::request(&daemon.socket, http::Method::GET, "/metrics").await.unwrap().text();
    assert_contains(
        &metrics,
        &[
            &format!("connd_proxy_port_listening{{connection=\"orders\",port=\"{p_orders}\"}} 1"),
            "connd_proxy_requests_total{connection=\"orders\",class=\"2xx\"} 2",
        ],
    );
}

/// A Python peer from `tests/support/NAME`, its port read from its first line; it stops
/// when dropped.
struct Peer {
    child: std::process::Child,
    port: u16,
}

impl Peer {
    fn start(script: &str) -> Peer {
        let path = format!("{}/tests/support/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child =
            Command::new("python3").arg(&path).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("a port");
        let port =
            line.trim().parse().unwrap_or_else(|_| panic!("{script} printed no port: {line:?} (pip install grpcio)"));
        Peer { child, port }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_grpc_client_calls_through_a_port_with_no_prefix_and_no_header() {
    let grpc = Peer::start("grpc/server.py");
    let port = free_port();
    let fx =
        fixture(&["grpc-up"], &descriptor(ORDERS, "grpc-up", &format!("http://127.0.0.1:{}", grpc.port), Some(port)));
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    let client = format!("{}/tests/support/grpc/client.py", env!("CARGO_MANIFEST_DIR"));
    let target = format!("127.0.0.1:{port}");
    // An empty connection name: the client sends no Connd-Connection.
    let out = tokio::task::spawn_blocking(move || Command::new("python3").args([&client, &target, ""]).output())
        .await
        .unwrap()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let out: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(out["unary"]["ok"][0], format!("echo:hello|auth={BEARER}"), "{out}\n{}", daemon.log());
    assert_eq!(out["bidi"]["ok"], serde_json::json!(["bidi:x", "bidi:y"]), "{out}");
    assert_eq!(out["error"]["code"], "PERMISSION_DENIED", "the upstream's status passed: {out}");
}

#[test]
fn two_connections_on_one_port_is_a_config_error_naming_both() {
    let port = free_port();
    let fx = Fixture::new()
        .file("component.yaml", &component_yaml(&[("orders", "thirdparty:svc/v1"), ("stock", "thirdparty:svc/v1")]))
        .file("identity.yaml", IDENTITY)
        .file("orders.yaml", &descriptor(ORDERS, "orders", "http://127.0.0.1:9/v1", Some(port)))
        .file("stock.yaml", &descriptor(STOCK, "stock", "http://127.0.0.1:9/v2", Some(port)));
    let expected = [
        format!("proxy port {port} is claimed by two connections"),
        "\"orders\"".into(),
        "\"stock\"".into(),
        "orders.yaml:7".into(),
        "stock.yaml:7".into(),
        "give each connection its own `proxy.port`".into(),
    ];
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    let check = fx.run("check", &[]);
    assert_eq!(check.code, 78, "{check:?}");
    assert_contains(&check.stderr, &expected);
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("connd.sock");
    let socket = socket.to_str().unwrap();
    let serve = fx.run("serve", &["--socket", socket, "--startup-timeout", "5s"]);
    assert_eq!(serve.code, 78, "{serve:?}");
    assert_contains(&serve.stderr, &expected);
    let run = fx.run("run", &["--", "true"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert_contains(&run.stderr, &expected);
    assert!(!listening(port), "nothing listens on the port");
}

#[test]
fn a_port_that_is_no_port_is_a_config_error_with_its_line() {
    for (written, said) in [
        ("0", "is 0, which asks the system for any free port"),
        ("65536", "is 65536, over 65535"),
        ("http", "is \"http\", not a port number"),
        ("-1", "is -1, not a port number"),
        ("15001.5", "is 15001.5 (a float); write a whole number"),
        ("15001.0", "is 15001.0 (a float); write a whole number"),
        ("1.5e4", "is 1.5e4 (a float); write a whole number"),
        // Quoted or not, a number is described the same way.
        ("\"65536\"", "is 65536, over 65535"),
        ("\"0\"", "is 0, which asks the system for any free port"),
        ("99999999999999999999999", "is 99999999999999999999999, over 65535"),
    ] {
        let connections = descriptor(ORDERS, "orders", "http://127.0.0.1:9", None)
            .replace("proxy: { headers: { Authorization: Tok } }", &format!("proxy:\n  port: {written}\n"));
        let fx = fixture(&["orders"], &connections);
        let check = fx.run("check", &[]);
        assert_eq!(check.code, 78, "{written}: {check:?}");
        assert_contains(
            &check.stderr,
            &["connections.yaml:8", &format!("proxy port of connection \"orders\" {said}"), "from 1 to 65535"],
        );
    }
    // `proxy` is a map: a bare number says so, with the shape to write.
    let connections = descriptor(ORDERS, "orders", "http://127.0.0.1:9", None)
        .replace("proxy: { headers: { Authorization: Tok } }", "proxy: 15001");
    let check = fixture(&["orders"], &connections).run("check", &[]);
    assert_eq!(check.code, 78, "{check:?}");
    assert_contains(&check.stderr, &["`proxy` as a map, e.g. `proxy: { port: 15001 }`"]);
    assert!(!check.stderr.contains("ProxySpec"), "{check:?}");
    // A quoted number is a port too.
    let connections = descriptor(ORDERS, "orders", "http://127.0.0.1:9", None)
        .replace("proxy: { headers: { Authorization: Tok } }", "proxy: { port: \"15001\" }");
    let check = fixture(&["orders"], &connections).run("check", &[]);
    assert_eq!(check.code, 0, "{check:?}");
    assert_contains(&check.stdout, &["proxy port: 127.0.0.1:15001"]);
}

#[test]
fn a_port_another_process_holds_stops_serve_and_run_at_startup() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let fx = fixture(&["orders"], &descriptor(ORDERS, "orders", "http://127.0.0.1:9", Some(port)));
    let expected = [
        format!("cannot listen on 127.0.0.1:{port}, the proxy port of connection \"orders\""),
        "another process listens there: stop it, or give the connection another `proxy.port`".into(),
    ];
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("connd.sock");
    let serve = fx.run("serve", &["--socket", socket.to_str().unwrap()]);
    assert_eq!(serve.code, 73, "{serve:?}");
    assert_contains(&serve.stderr, &expected);
    // `run` fails before the workload starts.
    let marker = tmp.path().join("ran");
    let run = fx.run("run", &["--", "touch", marker.to_str().unwrap()]);
    assert_eq!(run.code, 73, "{run:?}");
    assert_contains(&run.stderr, &expected);
    assert!(!marker.exists(), "the workload never started");
}

#[test]
fn run_opens_the_ports_before_the_workload_starts() {
    let up = Upstream::plain();
    let port = free_port();
    let fx = fixture(&["orders"], &descriptor(ORDERS, "orders", &format!("{}/v1", up.url()), Some(port)));
    let url = format!("http://127.0.0.1:{port}/first");
    let run = fx.run("run", &["--", "curl", "-sS", &url]);
    assert_eq!(run.code, 0, "{run:?}");
    let echo: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"));
    assert_eq!(
        (echo["target"].as_str(), echo["headers"]["authorization"][0].as_str()),
        (Some("/v1/first"), Some(BEARER))
    );
}

/// The three connections of the reload tests: orders on its port throughout, stock and
/// extra as each step says.
fn three(url: &str, orders: u16, stock: Option<u16>, extra: Option<u16>) -> String {
    descriptor(ORDERS, "orders", &format!("{url}/orders"), Some(orders))
        + &descriptor(STOCK, "stock", &format!("{url}/stock"), stock)
        + &descriptor(EXTRA, "extra", &format!("{url}/extra"), extra)
}

#[tokio::test]
async fn reloads_open_close_and_move_ports_while_the_others_keep_their_connections() {
    let up = Upstream::plain();
    let url = up.url();
    let (p_orders, p_stock, p_moved, p_extra) = (free_port(), free_port(), free_port(), free_port());
    let fx = fixture(&["orders", "stock", "extra"], &three(&url, p_orders, Some(p_stock), None));
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    let log = || daemon.log();
    wait_listening(p_stock, true, log).await;
    let mut kept = KeptAlive::open(at(p_orders)).await;
    assert_eq!(kept.get("/a").await["target"], "/orders/a");
    // A directory change: stock's port moves, extra gets one.
    rewrite(&fx, &three(&url, p_orders, Some(p_moved), Some(p_extra)));
    wait_listening(p_extra, true, log).await;
    wait_listening(p_moved, true, log).await;
    wait_listening(p_stock, false, log).await;
    assert_eq!(call(at(p_moved), "GET", "/b", &[], "").await.json()["target"], "/stock/b");
    assert_eq!(call(at(p_extra), "GET", "/c", &[], "").await.json()["target"], "/extra/c");
    assert_eq!(kept.get("/d").await["target"], "/orders/d", "orders' open connection was left alone");
    // A change of ports alone is logged as one, not as values changed with none named.
    let (orders, stock) = (format!("{p_orders}=orders"), format!("{p_moved}=stock"));
    assert_contains(&log(), &["proxy ports changed; no value did generation=2", &orders, &stock]);
    assert!(!log().contains("variables=\"\" connections=\"\""), "{}", log());
    // SIGHUP after an edit: extra's port is removed, the rest stay.
    std::fs::write(fx.join("connections.yaml"), three(&url, p_orders, Some(p_moved), None)).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.child.id() as i32), nix::sys::signal::Signal::SIGHUP)
        .unwrap();
    wait_listening(p_extra, false, log).await;
    assert!(listening(p_moved), "{}", log());
    assert_eq!(kept.get("/e").await["target"], "/orders/e", "orders' open connection was left alone");
    let metrics = daemon.metrics().await;
    assert_contains(
        &metrics,
        &[
            &format!("connd_proxy_port_listening{{connection=\"orders\",port=\"{p_orders}\"}} 1"),
            &format!("connd_proxy_port_listening{{connection=\"stock\",port=\"{p_moved}\"}} 1"),
        ],
    );
    assert!(!metrics.contains("connection=\"extra\",port="), "{metrics}");
    // A port handed from one connection to another: closed, then bound again for it.
    rewrite(&fx, &three(&url, p_orders, None, Some(p_moved)));
    let start = Instant::now();
    while target_of(p_moved, "/f").await.as_deref() != Some("/extra/f") {
        assert!(start.elapsed() < PATIENCE, "port {p_moved} never went to extra:\n{}", log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(kept.get("/g").await["target"], "/orders/g", "orders' open connection was left alone");
}

#[tokio::test]
async fn a_bad_reload_keeps_the_last_good_listeners() {
    let up = Upstream::plain();
    let url = up.url();
    let (p_orders, p_stock) = (free_port(), free_port());
    let fx = fixture(&["orders", "stock", "extra"], &three(&url, p_orders, Some(p_stock), None));
    let p_metrics = free_port();
    let daemon = ProxyDaemon::start(fx.path(), &["--metrics-listen", &format!("127.0.0.1:{p_metrics}")]);
    daemon.ready().await;
    let log = || daemon.log();
    wait_listening(p_stock, true, log).await;
    let mut kept = KeptAlive::open(at(p_orders)).await;
    assert_eq!(kept.get("/a").await["target"], "/orders/a");
    // Two connections on one port: the reload fails, every listener stays.
    rewrite(&fx, &three(&url, p_orders, Some(p_orders), None));
    wait_for_metric(&daemon, "connd_reloads_total{result=\"error\"} 1").await;
    assert_contains(&daemon.log(), &[&format!("proxy port {p_orders} is claimed by two connections")]);
    assert_eq!(call(at(p_stock), "GET", "/b", &[], "").await.json()["target"], "/stock/b");
    assert_eq!(kept.get("/c").await["target"], "/orders/c");
    // A port another process holds: stock's old port closes (the plan no longer gives it
    // to stock), the held one is retried on connd's own timer, orders serves on.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let p_held = held.local_addr().unwrap().port();
    rewrite(&fx, &three(&url, p_orders, Some(p_held), None));
    wait_for_metric(&daemon, &format!("connd_proxy_port_listening{{connection=\"stock\",port=\"{p_held}\"}} 0")).await;
    wait_for_metric(&daemon, "connd_reloads_total{result=\"error\"} 2").await;
    wait_listening(p_stock, false, log).await;
    assert_contains(
        &daemon.log(),
        &[&format!("cannot listen on 127.0.0.1:{p_held}, the proxy port of connection \"stock\""), "it is tried again"],
    );
    assert_eq!(kept.get("/e").await["target"], "/orders/e");
    // A plan giving stock the metrics listener's port is refused once (not logged in a
    // loop), and the held port of the last good plan goes on being retried.
    rewrite(&fx, &three(&url, p_orders, Some(p_metrics), None));
    wait_for_metric(&daemon, "connd_reloads_total{result=\"error\"} 3").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(daemon.log().matches("the proxy ports are refused").count(), 1, "{}", daemon.log());
    // Freed, it is taken by a retry: no SIGHUP, no change of the directory.
    drop(held);
    wait_listening(p_held, true, log).await;
    assert_eq!(call(at(p_held), "GET", "/f", &[], "").await.json()["target"], "/stock/f");
}

/// `/readyz` over the daemon's API socket: its status and body.
async fn readyz(socket: &std::path::Path) -> (u16, String) {
    let r = connd::serve::api::client::request(socket, http::Method::GET, "/readyz").await.unwrap();
    (r.status.as_u16(), r.text())
}

#[tokio::test]
async fn a_swap_with_a_taken_port_gives_each_port_only_to_its_new_connection() {
    let up = Upstream::plain();
    let url = up.url();
    let (p1, p2) = (free_port(), free_port());
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let p3 = held.local_addr().unwrap().port();
    let fx = fixture(&["orders", "stock", "extra"], &three(&url, p1, Some(p2), None));
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    let log = || daemon.log();
    wait_listening(p2, true, log).await;
    // orders and stock swap ports; extra asks for one another process holds.
    rewrite(&fx, &three(&url, p2, Some(p1), Some(p3)));
    let start = Instant::now();
    loop {
        // Each port is closed for a moment while it moves: refused, then served again.
        let (on1, on2) = (try_call(at(p1), "GET", "/a", &[], "").await, try_call(at(p2), "GET", "/b", &[], "").await);
        if let (Some(on1), Some(on2)) = (on1, on2) {
            if on1.status == 200 && on2.status == 200 && on1.json()["target"] == "/stock/a" {
                assert_eq!(on2.json()["target"], "/orders/b", "{}", log());
                break;
            }
        }
        assert!(start.elapsed() < PATIENCE, "the swap was never applied:\n{}", log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_metric(&daemon, &format!("connd_proxy_port_listening{{connection=\"extra\",port=\"{p3}\"}} 0")).await;
    assert_contains(
        &daemon.metrics().await,
        &[
            &format!("connd_proxy_port_listening{{connection=\"stock\",port=\"{p1}\"}} 1"),
            &format!("connd_proxy_port_listening{{connection=\"orders\",port=\"{p2}\"}} 1"),
        ],
    );
    assert_contains(&log(), &["proxy ports applied", &format!("not_listening=[{p3}]")]);
    let (status, body) = readyz(&daemon.socket).await;
    assert_eq!(status, 503, "{body}");
    assert_contains(&body, &[&format!("proxy ports [{p3}] do not listen"), "another process listens there"]);
    drop(held);
    wait_listening(p3, true, log).await;
    assert_eq!(call(at(p3), "GET", "/c", &[], "").await.json()["target"], "/extra/c");
    wait_for_metric(&daemon, &format!("connd_proxy_port_listening{{connection=\"extra\",port=\"{p3}\"}} 1")).await;
    let (status, body) = readyz(&daemon.socket).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn run_retries_a_taken_port_on_its_own_timer() {
    let up = Upstream::plain();
    let url = up.url();
    let p1 = free_port();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let p3 = held.local_addr().unwrap().port();
    let fx = fixture(&["orders", "stock", "extra"], &three(&url, p1, None, None));
    // Under `run`, SIGHUP goes to the workload: only connd's own timer can retry.
    let daemon = ProxyDaemon::run(fx.path(), &[], &["sleep", "60"]);
    daemon.ready().await;
    rewrite(&fx, &three(&url, p1, None, Some(p3)));
    wait_for_metric(&daemon, &format!("connd_proxy_port_listening{{connection=\"extra\",port=\"{p3}\"}} 0")).await;
    drop(held);
    wait_listening(p3, true, || daemon.log()).await;
    assert_eq!(call(at(p3), "GET", "/c", &[], "").await.json()["target"], "/extra/c");
}

/// A connection `name` whose ServiceURL is read from `file` (what `check` cannot judge).
fn from_file(id: &str, name: &str, file: &std::path::Path, port: Option<u16>) -> String {
    descriptor(id, name, "x", port).replace("ServiceURL: x", &format!("ServiceURL: {{ file: {} }}", file.display()))
}

#[tokio::test]
async fn a_service_url_pointing_back_at_connd_is_refused_once_with_508() {
    let up = Upstream::plain();
    let tmp = tempfile::tempdir().unwrap();
    let (orders_url, stock_url) = (tmp.path().join("orders-url"), tmp.path().join("stock-url"));
    let p_orders = free_port();
    // orders' ServiceURL is its own port; stock's starts at the upstream.
    std::fs::write(&orders_url, format!("http://127.0.0.1:{p_orders}/loop")).unwrap();
    std::fs::write(&stock_url, format!("{}/stock", up.url())).unwrap();
    let connections =
        from_file(ORDERS, "orders", &orders_url, Some(p_orders)) + &from_file(STOCK, "stock", &stock_url, None);
    let fx = fixture(&["orders", "stock"], &connections);
    let daemon = ProxyDaemon::start(fx.path(), &[]);
    daemon.ready().await;
    let r = call(at(p_orders), "GET", "/x", &[("via", "1.1 gateway")], "").await;
    assert_eq!(r.status, 508, "{}\n{}", r.text(), daemon.log());
    let body = r.json();
    assert_eq!((body["code"].as_str(), body["connection"].as_str()), (Some("loop_detected"), Some("orders")), "{body}");
    assert_contains(body["error"].as_str().unwrap(), &["\"orders\"'s ServiceURL points back at connd"]);
    // Once through connd, once refused: the upstream (connd) was not called again.
    wait_for_metric(&daemon, "connd_proxy_requests_total{connection=\"orders\",class=\"5xx\"} 2").await;
    // A gRPC caller reads a gRPC status.
    let grpc =
        call(at(p_orders), "POST", "/pkg.S/M", &[("content-type", "application/grpc"), ("te", "trailers")], "").await;
    assert_eq!(grpc.headers.get("grpc-status").map(|v| v.to_str().unwrap()), Some("9"), "{:?}", grpc.headers);
    // The shared listener: stock's ServiceURL is changed to connd's --proxy-listen.
    std::fs::write(&stock_url, format!("http://{}/stock", daemon.addr)).unwrap();
    let start = Instant::now();
    loop {
        let r = call(daemon.addr, "GET", "/stock/y", &[], "").await;
        if r.status == 508 {
            assert_eq!(r.json()["connection"], "stock");
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(start.elapsed() < PATIENCE, "stock's new ServiceURL was never read:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!daemon.metrics().await.contains("class=\"5xx\"} 10"), "no storm of requests");
}

#[test]
fn a_literal_service_url_on_a_proxy_port_is_a_config_error_naming_both() {
    let port = free_port();
    for url in [
        format!("http://localhost:{port}/v1"),
        format!("http://127.0.0.1:{port}"),
        format!("http://[::ffff:127.0.0.1]:{port}"),
    ] {
        let connections =
            descriptor(ORDERS, "orders", "http://127.0.0.1:9/v1", Some(port)) + &descriptor(STOCK, "stock", &url, None);
        let fx = fixture(&["orders", "stock"], &connections);
        let expected = [
            format!("the ServiceURL of connection \"stock\" is port {port} of this machine, the proxy port of connection \"orders\""),
            "connd would forward its requests to itself".into(),
            "set the ServiceURL to the real upstream".into(),
        ];
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        let check = fx.run("check", &[]);
        assert_eq!(check.code, 78, "{url}: {check:?}");
        assert_contains(&check.stderr, &expected);
        let run = fx.run("run", &["--", "true"]);
        assert_eq!(run.code, 78, "{run:?}");
        assert_contains(&run.stderr, &expected);
    }
    // connd's ports are on 127.0.0.1 alone: the same port on [::1] or 127.0.0.2 may be
    // another process's.
    for url in [format!("http://[::1]:{port}"), format!("http://127.0.0.2:{port}")] {
        let connections =
            descriptor(ORDERS, "orders", "http://127.0.0.1:9/v1", Some(port)) + &descriptor(STOCK, "stock", &url, None);
        let check = fixture(&["orders", "stock"], &connections).run("check", &[]);
        assert_eq!(check.code, 0, "{url}: {check:?}");
    }
}

#[test]
fn a_port_on_one_of_connds_own_listeners_is_a_config_error_naming_both() {
    let port = free_port();
    let fx = fixture(&["orders"], &descriptor(ORDERS, "orders", "http://127.0.0.1:9", Some(port)));
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("connd.sock");
    let addr = format!("127.0.0.1:{port}");
    for flag in ["--proxy-listen", "--metrics-listen"] {
        let expected = format!("proxy port {port} of connection \"orders\" is the port of connd's own {flag} {addr}");
        let fix = "give the connection another `proxy.port`, or move the listener to another port";
        let serve = fx.run("serve", &["--socket", socket.to_str().unwrap(), flag, &addr]);
        assert_eq!(serve.code, 78, "{flag}: {serve:?}");
        assert_contains(&serve.stderr, &[&expected, fix]);
        assert!(!serve.stderr.contains("another process listens there"), "{serve:?}");
        let run = fx.run("run", &[flag, &addr, "--", "true"]);
        assert_eq!(run.code, 78, "{flag}: {run:?}");
        assert_contains(&run.stderr, &[&expected, fix]);
    }
}

#[tokio::test]
async fn a_reload_giving_a_port_of_connds_own_keeps_the_last_good_ports() {
    let up = Upstream::plain();
    let url = up.url();
    let (p_orders, p_stock) = (free_port(), free_port());
    let metrics_port = free_port();
    let fx = fixture(&["orders", "stock", "extra"], &three(&url, p_orders, Some(p_stock), None));
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let daemon = ProxyDaemon::start(fx.path(), &["--metrics-listen", &metrics_addr]);
    daemon.ready().await;
    rewrite(&fx, &three(&url, p_orders, None, Some(metrics_port)));
    wait_for_metric(&daemon, "connd_reloads_total{result=\"error\"} 1").await;
    assert_contains(
        &daemon.log(),
        &[&format!(
            "proxy port {metrics_port} of connection \"extra\" is the port of connd's own --metrics-listen {metrics_addr}"
        )],
    );
    assert_eq!(call(at(p_stock), "GET", "/a", &[], "").await.json()["target"], "/stock/a", "the last good ports");
    assert_eq!(call(at(p_orders), "GET", "/b", &[], "").await.json()["target"], "/orders/b");
}

#[test]
fn a_port_on_a_connection_without_a_service_url_is_a_config_error() {
    let connections = descriptor(ORDERS, "orders", "http://127.0.0.1:9", Some(15001))
        .replace("  ServiceURL: http://127.0.0.1:9\n", "  Host: db.internal\n");
    let check = fixture(&["orders"], &connections).run("check", &[]);
    assert_eq!(check.code, 78, "{check:?}");
    assert_contains(
        &check.stderr,
        &[
            "connections.yaml:7",
            "connection \"orders\" has a proxy port (15001) but no ServiceURL",
            "the port serves HTTP to the connection's ServiceURL",
            "remove `proxy.port`",
        ],
    );
}

#[tokio::test]
async fn refusals_on_a_port_give_advice_for_the_port_and_name_the_connection() {
    let up = Upstream::plain();
    let port = free_port();
    let fx = fixture(&["orders"], &descriptor(ORDERS, "orders", &up.url(), Some(port)));
    let daemon = ProxyDaemon::start(fx.path(), &["--max-connections", "1"]);
    daemon.ready().await;
    // As the JSON body writes it.
    let fits = r#"/<path> (this port is connection \"orders\"'s: no /<connection> prefix)"#;
    let misdirected = raw(at(port), b"GET /x HTTP/1.1\r\nhost: elsewhere.example\r\nconnection: close\r\n\r\n").await;
    assert!(misdirected.starts_with("HTTP/1.1 421"), "{misdirected}");
    assert_contains(&misdirected, &[fits]);
    let connect = raw(at(port), b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nhost: 127.0.0.1:443\r\n\r\n").await;
    assert!(connect.starts_with("HTTP/1.1 501"), "{connect}");
    assert_contains(&connect, &[fits]);
    for answer in [&misdirected, &connect] {
        assert!(!answer.contains("as /<connection>/<path>"), "{answer}");
    }
    // Over its cap: the port and its connection named.
    let _held = KeptAlive::open(at(port)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let busy = raw(at(port), b"GET /y HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await;
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
    assert_contains(
        &busy,
        &["too many open connections to the proxy port of connection \\\"orders\\\"", "\"connection\":\"orders\""],
    );
}

#[tokio::test]
async fn a_port_failure_is_a_json_log_record_with_connection_and_port() {
    let up = Upstream::plain();
    let url = up.url();
    let p_orders = free_port();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let p_held = held.local_addr().unwrap().port();
    let fx = fixture(&["orders", "stock", "extra"], &three(&url, p_orders, None, None));
    let daemon = Daemon::start(fx.path(), &["--log-format", "json"], &[]);
    daemon.ready().await;
    rewrite(&fx, &three(&url, p_orders, Some(p_held), None));
    let wanted = format!("connd_proxy_port_listening{{connection=\"stock\",port=\"{p_held}\"}} 0");
    let start = Instant::now();
    loop {
        let metrics = connd::serve::api::client::request(&daemon.socket, http::Method::GET, "/metrics").await;
        if metrics.is_ok_and(|m| m.text().contains(&wanted)) {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "{wanted} never showed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (_, stderr) = daemon.wait();
    let record = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r.to_string().contains("could not be listened on"))
        .unwrap_or_else(|| panic!("no record of the failure:\n{stderr}"));
    let fields = if record["fields"].is_object() { &record["fields"] } else { &record };
    assert_eq!(
        (fields["connection"].as_str(), fields["port"].as_u64()),
        (Some("stock"), Some(u64::from(p_held))),
        "{record}"
    );
}

#[test]
fn check_lists_each_connections_port() {
    let port = free_port();
    let connections = descriptor(ORDERS, "orders", "http://127.0.0.1:9", Some(port))
        + &descriptor(STOCK, "stock", "http://127.0.0.1:9", None);
    let fx = fixture(&["orders", "stock"], &connections);
    let text = fx.run("check", &[]);
    assert_eq!(text.code, 0, "{text:?}");
    assert_contains(&text.stdout, &[&format!("proxy port: 127.0.0.1:{port}")]);
    assert_eq!(text.stdout.matches("proxy port:").count(), 1, "{text:?}");
    let json = fx.run("check", &["--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {json:?}"));
    let ports: Vec<_> =
        plan["connections"].as_array().unwrap().iter().map(|c| (c["name"].clone(), c["proxyPort"].clone())).collect();
    assert_eq!(ports, [("orders".into(), port.into()), ("stock".into(), serde_json::Value::Null)]);
}
