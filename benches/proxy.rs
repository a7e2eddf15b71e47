//! Benchmark of the egress proxy (run: `cargo bench --bench proxy`; needs `nginx` and
//! `wrk` from Debian: `apt-get install nginx wrk`).
//!
//! A minimal hyper upstream on loopback answers a 1 KiB body. Three ways to reach it,
//! alternated round by round in the same run, each loaded by `wrk` with 64 keep-alive
//! connections:
//! (a) direct; (b) nginx as a reverse proxy adding a fixed `Authorization` header
//! (`worker_processes 1`, keep-alive to the upstream); (c) connd's proxy on an OAuth
//! connection whose token is cached (a token endpoint in this process hands it out once).
//! Reported per way: requests/s, p50/p99 latency, server CPU per request (the proxy
//! process's user+system time over the requests served), and connd's peak RSS.
//! Then one connection, to show the latency each proxy adds at p50.
//! `CONND_BENCH_BIN=path` runs another connd build than the one cargo built.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BODY: [u8; 1024] = [b'x'; 1024];
const LOAD: &str = "5s";
const ONE: &str = "3s";
const ROUNDS: usize = 3;
const TOKEN: &str = "bench-access-token-0123456789abcdefghijklmno";

/// Serves `answer` for every request on a listener, on a thread of its own.
fn serve(answer: &'static [u8], content_type: &'static str) -> u16 {
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
                    let svc = hyper::service::service_fn(move |_req| async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", content_type)
                                .body(Full::new(Bytes::from_static(answer)))
                                .unwrap(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
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
    requests: f64,
}

/// `wrk` on `url` with `connections` connections for `duration`.
fn wrk(url: &str, connections: usize, duration: &str) -> Run {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{duration}"), "--latency", url])
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && !text.contains("Non-2xx"), "wrk failed on {url}:\n{text}");
    let find = |prefix: &str| -> String {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix).map(|r| r.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}"))
    };
    let rps: f64 = find("Requests/sec:").parse().unwrap();
    let requests: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    Run { rps, p50_us: micros(&find("50%")), p99_us: micros(&find("99%")), requests }
}

fn micros(text: &str) -> f64 {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().unwrap();
    match unit {
        "us" => n,
        "ms" => n * 1000.0,
        "s" => n * 1e6,
        other => panic!("unit {other}"),
    }
}

/// User+system CPU seconds of `pid` and its children threads (not child processes).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Polls until `port` on loopback accepts.
fn wait_port(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child stopped by SIGTERM when dropped: nginx's master then stops its worker too
/// (SIGKILL would leave the worker running, holding the port).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

fn nginx(dir: &Path, upstream: u16) -> (Killed, u16, u32) {
    let port = free_port();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\nmaster_process on;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n  \
         fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n  \
         upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n  \
         server {{\n    listen 127.0.0.1:{port};\n    location /hr-connection/ {{\n      proxy_pass http://up/;\n      \
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      \
         proxy_set_header Authorization \"Bearer {TOKEN}\";\n    }}\n  }}\n}}\n",
        dir = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .args(["-c", path.to_str().unwrap(), "-p", dir.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts (apt-get install nginx)");
    let master = child.id();
    wait_port(port);
    // The one worker: the master's child.
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap();
    let worker = children.split_whitespace().next().expect("an nginx worker").parse().unwrap();
    (Killed(child), port, worker)
}

fn connd(dir: &Path, upstream: u16, token_port: u16) -> (Killed, u16) {
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("component.yaml"),
        "schemaVersion: 1.2\ndependencies:\n  connectionReferences:\n    - name: hr-connection\n      resourceRef: thirdparty:hr/v1\n",
    )
    .unwrap();
    std::fs::write(
        config.join("connections.yaml"),
        format!(
            "kind: Component\nproject: hr-project\nname: portal\n---\nkind: Connection\n\
             id: 19d2648b-d29c-4452-afdd-1b9311e81412\nname: hr-connection\nproject: hr-project\n\
             security: oauth2\nparameters:\n  ServiceURL: http://127.0.0.1:{upstream}/\n  \
             TokenURL: http://127.0.0.1:{token_port}/token\n  ConsumerKey: bench\n  ConsumerSecret: s3cret\n"
        ),
    )
    .unwrap();
    let port = free_port();
    // `CONND_BENCH_BIN` times another build (one with symbols, for a profiler, say).
    let bin = std::env::var("CONND_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_connd").to_owned());
    let child = Command::new(bin)
        .args(["--log-level", "warn", "serve", "--config-dir"])
        .arg(&config)
        .arg("--socket")
        .arg(dir.join("connd.sock"))
        .args(["--proxy-listen", &format!("127.0.0.1:{port}")])
        .env_clear()
        .spawn()
        .expect("connd starts");
    wait_port(port);
    (Killed(child), port)
}

fn main() {
    let upstream = serve(&BODY, "application/octet-stream");
    let token_body: &'static [u8] = Box::leak(
        format!("{{\"access_token\":\"{TOKEN}\",\"token_type\":\"Bearer\",\"expires_in\":86400}}")
            .into_bytes()
            .into_boxed_slice(),
    );
    let token_port = serve(token_body, "application/json");
    let tmp = tempfile::tempdir().unwrap();
    let (_nginx, nginx_port, nginx_worker) = nginx(tmp.path(), upstream);
    let (connd, connd_port) = connd(tmp.path(), upstream, token_port);
    let connd_pid = connd.0.id();
    let direct_url = format!("http://127.0.0.1:{upstream}/users/42");
    let nginx_url = format!("http://127.0.0.1:{nginx_port}/hr-connection/users/42");
    let connd_url = format!("http://127.0.0.1:{connd_port}/hr-connection/users/42");
    // Warm up: the first call fetches and caches the token; pools fill.
    for url in [&direct_url, &nginx_url, &connd_url] {
        wrk(url, 64, "1s");
    }

    println!("egress proxy, {ROUNDS} rounds alternated, 64 keep-alive connections (wrk -t1), 1 KiB answers");
    println!("{:<8} {:>10} {:>9} {:>9} {:>14}", "way", "req/s", "p50 us", "p99 us", "CPU us/req");
    let mut peak_rss = 0;
    let mut totals = [(0.0, 0.0, 0.0, 0.0); 3];
    for _ in 0..ROUNDS {
        for (i, (name, url, pid)) in [
            ("direct", &direct_url, None),
            ("nginx", &nginx_url, Some(nginx_worker)),
            ("connd", &connd_url, Some(connd_pid)),
        ]
        .into_iter()
        .enumerate()
        {
            let before = pid.map(cpu_seconds);
            let run = wrk(url, 64, LOAD);
            let cpu = pid.zip(before).map(|(p, b)| (cpu_seconds(p) - b) / run.requests * 1e6);
            if name == "connd" {
                peak_rss = peak_rss.max(status_kib(connd_pid, "VmRSS:"));
            }
            let cpu_text = cpu.map_or("-".to_owned(), |c| format!("{c:.1}"));
            println!("{name:<8} {:>10.0} {:>9.0} {:>9.0} {:>14}", run.rps, run.p50_us, run.p99_us, cpu_text);
            let t = &mut totals[i];
            *t = (t.0 + run.rps, t.1 + run.p99_us, t.2 + cpu.unwrap_or(0.0), t.3 + 1.0);
        }
    }
    let mean = |i: usize| (totals[i].0 / totals[i].3, totals[i].1 / totals[i].3, totals[i].2 / totals[i].3);
    let (d, n, c) = (mean(0), mean(1), mean(2));
    println!("mean    direct {:.0} req/s; nginx {:.0} req/s, p99 {:.0} us, {:.1} CPU us/req; connd {:.0} req/s, p99 {:.0} us, {:.1} CPU us/req", d.0, n.0, n.1, n.2, c.0, c.1, c.2);
    println!(
        "connd/nginx: throughput {:.2}x, CPU per request {:.2}x; connd RSS under load {:.1} MiB (peak {:.1} MiB)",
        c.0 / n.0,
        c.2 / n.2,
        peak_rss as f64 / 1024.0,
        status_kib(connd_pid, "VmHWM:") as f64 / 1024.0
    );

    println!("one connection, {ROUNDS} rounds: p50 latency");
    let mut added = Vec::new();
    for _ in 0..ROUNDS {
        let direct = wrk(&direct_url, 1, ONE);
        let via_nginx = wrk(&nginx_url, 1, ONE);
        let via_connd = wrk(&connd_url, 1, ONE);
        println!(
            "direct {:.0} us, nginx {:.0} us (+{:.0}), connd {:.0} us (+{:.0})",
            direct.p50_us,
            via_nginx.p50_us,
            via_nginx.p50_us - direct.p50_us,
            via_connd.p50_us,
            via_connd.p50_us - direct.p50_us
        );
        added.push(via_connd.p50_us - direct.p50_us);
    }
    added.sort_by(f64::total_cmp);
    println!("connd adds {:.0} us at p50 (median of rounds)", added[added.len() / 2]);
}
