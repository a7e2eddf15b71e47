//! Benchmark of gRPC through the egress proxy (run: `cargo bench --bench grpc`; needs
//! `h2load` and `nginx` from Debian: `apt-get install nghttp2-client nginx`).
//!
//! A gRPC echo upstream in this process (hyper, HTTP/2 with prior knowledge, one thread:
//! the request's message is the answer, `grpc-status: 0` in the trailers) is reached
//! three ways, alternated round by round in the same run, each by `h2load` sending unary
//! calls of 1 KiB messages, 64 streams at once over 8 connections (`-c 8 -m 8`), a fixed
//! number of calls per round:
//! (a) direct; (b) nginx `grpc_pass` (`worker_processes 1`, keep-alive upstream, no cap on
//! requests per connection) adding a
//! fixed `authorization`; (c) connd's proxy, the connection named by `connd-connection`,
//! adding the same `authorization` from a parameter.
//! Reported per way and round: calls/s, p50 and p99 (from h2load's per-request log),
//! server CPU per call (the proxy process's user+system time over the calls), and for
//! connd its peak RSS (VmHWM); then the medians of connd's per-round ratios to nginx.
//! `CONND_BENCH_BIN=path` runs another connd build; `GRPC_CALLS=N` sets the calls per round.

#[path = "common/mod.rs"]
mod common;
use bytes::Bytes;
use common::{bench_bin, free_port, header_connection, serve_proxy, start_nginx, status_kib, Killed};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::path::Path;
use std::process::Command;

const ROUNDS: usize = 5;
const TOKEN: &str = "Bearer bench-access-token-0123456789abcdefghijklmno";
const MESSAGE: usize = 1024;

/// The gRPC echo upstream (h2c) on a thread of its own; its port.
fn upstream() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        let message = req.into_body().collect().await?.to_bytes();
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let frames: [Result<Frame<Bytes>, hyper::Error>; 2] =
                            [Ok(Frame::data(message)), Ok(Frame::trailers(trailers))];
                        let body = StreamBody::new(futures_util::stream::iter(frames));
                        Ok::<_, hyper::Error>(
                            http::Response::builder().header("content-type", "application/grpc").body(body).unwrap(),
                        )
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
    });
    port
}

struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    calls: f64,
}

/// `h2load` sending `calls` unary calls to `url` with `headers`, 8 connections of 8 streams.
fn h2load(url: &str, body: &Path, headers: &[&str], calls: usize, log: &Path) -> Run {
    // h2load appends to its log.
    let _ = std::fs::remove_file(log);
    let mut cmd = Command::new("h2load");
    cmd.args(["-c", "8", "-m", "8", "-t", "1", "-n", &calls.to_string(), "-d"])
        .arg(body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("--log-file")
        .arg(log);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("h2load runs (apt-get install nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let done = format!("{calls} succeeded, 0 failed");
    assert!(out.status.success() && text.contains(&done), "h2load failed on {url}:\n{text}");
    // Every answer carried the message back (connd's own refusals are HTTP 200 too).
    let data: usize = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("traffic: ")?.rsplit_once(" data")?.0.rsplit_once('(')?.1.strip_suffix(')')?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no data bytes in:\n{text}"));
    assert!(data >= calls * (MESSAGE + 5), "answers without the message from {url}:\n{text}");
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in ")?.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok())
        .unwrap_or_else(|| panic!("no req/s in:\n{text}"));
    // The log: start time, status, microseconds, per request.
    let mut times: Vec<f64> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    Run { rps, p50_us: at(0.50), p99_us: at(0.99), calls: calls as f64 }
}

/// User+system CPU seconds of `pid` (all its threads).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// nginx with one worker: h2c on its port, `grpc_pass` to the upstream with keep-alive,
/// adding `authorization`. The master, its port and the worker's pid.
fn nginx(dir: &Path, upstream: u16) -> (Killed, u16, u32) {
    let port = free_port();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\nmaster_process on;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n  \
         fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n  \
         upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n  \
         server {{\n    listen 127.0.0.1:{port} http2;\n    keepalive_requests 100000000;\n    location / {{\n      grpc_pass grpc://up;\n      \
         grpc_set_header Authorization \"{TOKEN}\";\n    }}\n  }}\n}}\n",
        dir = dir.display()
    );
    let (master, worker) = start_nginx(dir, &conf, port);
    (master, port, worker)
}

/// `connd serve` with one connection, `grpc-up`, to the upstream, adding `authorization`.
fn connd(dir: &Path, upstream: u16) -> (Killed, u16) {
    serve_proxy(dir, &bench_bin(), "grpc-up", "thirdparty:grpc/v1", &header_connection("grpc-up", upstream, TOKEN))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let calls: usize = std::env::var("GRPC_CALLS").ok().and_then(|n| n.parse().ok()).unwrap_or(60_000);
    let tmp = tempfile::tempdir().unwrap();
    let body = tmp.path().join("request.bin");
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(MESSAGE as u32).to_be_bytes());
    frame.extend_from_slice(&[b'x'; MESSAGE]);
    std::fs::write(&body, frame).unwrap();
    let log = tmp.path().join("h2load.log");

    let up = upstream();
    let (_nginx, nginx_port, nginx_worker) = nginx(tmp.path(), up);
    let (connd, connd_port) = connd(tmp.path(), up);
    let connd_pid = connd.0.id();
    let path = "/test.Echo/Unary";
    let ways: [(&str, String, &[&str], Option<u32>); 3] = [
        ("direct", format!("http://127.0.0.1:{up}{path}"), &[], None),
        ("nginx", format!("http://127.0.0.1:{nginx_port}{path}"), &[], Some(nginx_worker)),
        ("connd", format!("http://127.0.0.1:{connd_port}{path}"), &["connd-connection: grpc-up"], Some(connd_pid)),
    ];
    for (_, url, headers, _) in &ways {
        h2load(url, &body, headers, 2000, &log);
    }

    println!("gRPC unary, 1 KiB messages, {calls} calls per round, h2load -c 8 -m 8 (64 streams), {ROUNDS} rounds alternated");
    println!("{:<8} {:>10} {:>9} {:>9} {:>14}", "way", "calls/s", "p50 us", "p99 us", "CPU us/call");
    let (mut rps, mut cpu, mut p99) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let mut round = Vec::new();
        for (name, url, headers, pid) in &ways {
            let before = pid.map(cpu_seconds);
            let run = h2load(url, &body, headers, calls, &log);
            let per_call = pid.zip(before).map(|(p, b)| (cpu_seconds(p) - b) / run.calls * 1e6);
            let cpu_text = per_call.map_or("-".to_owned(), |c| format!("{c:.1}"));
            println!("{name:<8} {:>10.0} {:>9.0} {:>9.0} {:>14}", run.rps, run.p50_us, run.p99_us, cpu_text);
            round.push((run, per_call.unwrap_or(0.0)));
        }
        let (nginx, connd) = (&round[1], &round[2]);
        rps.push(connd.0.rps / nginx.0.rps);
        cpu.push(connd.1 / nginx.1);
        p99.push(connd.0.p99_us / nginx.0.p99_us);
    }
    println!(
        "connd/nginx, medians of per-round ratios: calls/s {:.2}x, CPU per call {:.2}x, p99 {:.2}x; connd peak RSS {:.1} MiB",
        median(rps),
        median(cpu),
        median(p99),
        status_kib(connd_pid, "VmHWM:") as f64 / 1024.0
    );
}
