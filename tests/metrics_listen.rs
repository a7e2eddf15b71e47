//! `--metrics-listen` on the real binary, in `serve` and `run`: `/metrics`, `/healthz`
//! and `/readyz` over TCP, every other path (values above all) refused.

use crate::support::*;
use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "s3cret-db-password";

fn fixture() -> Fixture {
    Fixture::with(
        &component_yaml(&[("main-db", "database:pg/main")]),
        &connection(
            "19d2648b-d29c-4452-afdd-1b9311e81412",
            "main-db",
            &[("HostName", "pg.internal"), ("Password", SECRET)],
        ),
    )
}

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 request; the status and the whole answer, or `None` when nothing listens.
fn get(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    Some((status, answer))
}

/// Waits until `/readyz` answers 200.
fn wait_ready(port: u16, child: &mut Child) {
    let start = Instant::now();
    loop {
        if let Some((200, _)) = get(port, "GET", "/readyz") {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "connd exited before it was ready");
        assert!(start.elapsed() < Duration::from_secs(20), "/readyz never answered 200");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then the exit: `run` stops its workload first, so nothing is left running.
fn stop(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.code().is_some(), "connd ended by a signal: {status:?}");
}

/// The three routes answer; nothing else does, and no answer holds a value.
fn check_routes(port: u16) {
    let (status, metrics) = get(port, "GET", "/metrics").unwrap();
    assert_eq!(status, 200, "{metrics}");
    assert_contains(&metrics, &["text/plain; version=0.0.4", "connd_"]);
    assert_eq!(get(port, "GET", "/healthz").unwrap().0, 200);
    assert_eq!(get(port, "HEAD", "/readyz").unwrap().0, 200);
    for path in ["/v1/env", "/v1/connections", "/v1/connections/main-db", "/v1/env?format=dotenv"] {
        let (status, answer) = get(port, "GET", path).unwrap();
        assert_eq!(status, 404, "{path}: {answer}");
        assert_contains(&answer, &["serves only /metrics, /healthz and /readyz"]);
        assert!(!answer.contains(SECRET) && !answer.contains("pg.internal"), "{path}: {answer}");
    }
    assert_eq!(get(port, "POST", "/metrics").unwrap().0, 405);
}

#[test]
fn serve_answers_metrics_and_probes_over_tcp_and_never_a_value() {
    let f = fixture();
    let port = free_port();
    let socket = f.join("connd.sock");
    let mut child = connd()
        .args(["serve", "--config-dir", &f.dir_arg(), "--socket", socket.to_str().unwrap()])
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(port, &mut child);
    check_routes(port);
    stop(child);
}

#[test]
fn run_answers_metrics_and_probes_over_tcp() {
    let f = fixture();
    let port = free_port();
    let mut child = connd()
        .args(["run", "--config-dir", &f.dir_arg(), "--metrics-listen", &format!("127.0.0.1:{port}")])
        .args(["--", "sleep", "60"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(port, &mut child);
    check_routes(port);
    stop(child);
}

#[test]
fn an_address_in_use_is_refused_at_startup() {
    let f = fixture();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let socket = f.join("connd.sock");
    let out = f.run("serve", &["--socket", socket.to_str().unwrap(), "--metrics-listen", &addr]);
    assert_eq!(out.code, 73, "{out:?}");
    assert_contains(&out.stderr, &[&format!("cannot listen on --metrics-listen {addr}"), "choose another address"]);
    assert_eq!(out.stderr.matches("Address already in use").count(), 1, "said once: {out:?}");
    assert!(!socket.exists(), "nothing is left behind");
}

#[test]
fn a_bare_port_says_the_form_expected() {
    let f = fixture();
    let socket = f.join("connd.sock");
    let out = f.run("serve", &["--socket", socket.to_str().unwrap(), "--metrics-listen", "9090"]);
    assert_eq!(out.code, 64, "{out:?}");
    assert_contains(&out.stderr, &["expected HOST:PORT", "`127.0.0.1:9090`"]);
}
