//! Benchmark of the egress proxy (run: `cargo bench --bench proxy`; needs `nginx` and
//! `wrk` from Debian: `apt-get install nginx wrk`).
//!
//! A minimal hyper upstream on loopback answers a 1 KiB body. The ways to reach it,
//! alternated round by round in the same run, each loaded by `wrk` with 64 keep-alive
//! connections:
//! (a) direct; (b) nginx as a reverse proxy adding a fixed `Authorization` header
//! (`worker_processes 1`, keep-alive to the upstream); (c) connd's proxy on an OAuth
//! connection whose token is cached (a token endpoint in this process hands it out once);
//! (d) with `CONND_BENCH_BASE=path`, the same with another connd build (today's main, say).
//! Reported per way and round: requests/s, p50/p99 latency, server CPU per request (the
//! proxy process's user+system time over the requests it served; the system part in
//! parentheses: the loopback TCP work, which every proxy pays alike) and RSS after the load;
//! then the per-round ratios of connd against nginx and against the baseline (medians,
//! with the smallest and largest), since under a shared load only pairs compare.
//! Then one connection, to show the latency each proxy adds at p50.
//! `CONND_BENCH_BIN=path` runs another connd build than the one cargo built;
//! `CONND_BENCH_ROUNDS` sets the rounds (default 3).

#[path = "common/mod.rs"]
mod common;
use bytes::Bytes;
use common::{bench_bin, free_port, serve_proxy, start_nginx, status_kib, Killed};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::process::Command;

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

/// User and system CPU seconds of `pid` and its threads (not child processes).
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks = |i: usize| fields[i].parse::<f64>().unwrap() / 100.0;
    (ticks(11), ticks(12))
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
    let (master, worker) = start_nginx(dir, &conf, port);
    (master, port, worker)
}

/// `bin serve` with the OAuth connection `hr-connection` to the upstream, its token from
/// `token_port`.
fn start_connd(dir: &Path, upstream: u16, token_port: u16, bin: &str) -> (Killed, u16) {
    let connections = format!(
        "kind: Component\nproject: hr-project\nname: portal\n---\nkind: Connection\n\
         id: 19d2648b-d29c-4452-afdd-1b9311e81412\nname: hr-connection\nproject: hr-project\n\
         security: oauth2\nparameters:\n  ServiceURL: http://127.0.0.1:{upstream}/\n  \
         TokenURL: http://127.0.0.1:{token_port}/token\n  ConsumerKey: bench\n  ConsumerSecret: s3cret\n"
    );
    serve_proxy(dir, bin, "hr-connection", "thirdparty:hr/v1", &connections)
}

/// One way to reach the upstream: its name, URL and the process whose CPU serves it.
struct Way {
    name: &'static str,
    url: String,
    pid: Option<u32>,
}

/// One load of a way: the run, its server CPU per request (us), its RSS after (KiB).
struct Measured {
    run: Run,
    cpu_us: Option<f64>,
    /// The part of it in the kernel (system time).
    sys_us: Option<f64>,
    rss_kib: Option<u64>,
}

fn measure(way: &Way) -> Measured {
    let before = way.pid.map(cpu_seconds);
    let run = wrk(&way.url, 64, LOAD);
    let after = way.pid.map(cpu_seconds);
    let per_request = |s: f64| s / run.requests * 1e6;
    let cpu_us = before.zip(after).map(|(b, a)| per_request(a.0 + a.1 - b.0 - b.1));
    let sys_us = before.zip(after).map(|(b, a)| per_request(a.1 - b.1));
    let rss_kib = way.pid.map(|p| status_kib(p, "VmRSS:"));
    Measured { run, cpu_us, sys_us, rss_kib }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// "median (min-max)" of per-round ratios.
fn ratios(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.2}x ({:.2}-{:.2})", median(values.to_vec()), min, max)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map_or_else(|_| "?".into(), |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn main() {
    let rounds: usize = std::env::var("CONND_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(ROUNDS);
    let upstream = serve(&BODY, "application/octet-stream");
    let token_body: &'static [u8] = Box::leak(
        format!("{{\"access_token\":\"{TOKEN}\",\"token_type\":\"Bearer\",\"expires_in\":86400}}")
            .into_bytes()
            .into_boxed_slice(),
    );
    let token_port = serve(token_body, "application/json");
    let tmp = tempfile::tempdir().unwrap();
    let (_nginx, nginx_port, nginx_worker) = nginx(tmp.path(), upstream);
    // `CONND_BENCH_BIN` times another build (one with symbols, for a profiler, say);
    // `CONND_BENCH_BASE` adds a baseline build (today's main, say), alternated with it.
    let bin = bench_bin();
    let (connd, connd_port) = start_connd(&tmp.path().join("connd"), upstream, token_port, &bin);
    let base = std::env::var("CONND_BENCH_BASE")
        .ok()
        .map(|base| start_connd(&tmp.path().join("base"), upstream, token_port, &base));
    let mut ways = vec![
        Way { name: "direct", url: format!("http://127.0.0.1:{upstream}/users/42"), pid: None },
        Way {
            name: "nginx",
            url: format!("http://127.0.0.1:{nginx_port}/hr-connection/users/42"),
            pid: Some(nginx_worker),
        },
        Way {
            name: "connd",
            url: format!("http://127.0.0.1:{connd_port}/hr-connection/users/42"),
            pid: Some(connd.0.id()),
        },
    ];
    if let Some((base, port)) = &base {
        let url = format!("http://127.0.0.1:{port}/hr-connection/users/42");
        ways.push(Way { name: "base", url, pid: Some(base.0.id()) });
    }
    // Warm up: the first call fetches and caches the token; pools fill.
    for way in &ways {
        wrk(&way.url, 64, "1s");
    }

    println!(
        "egress proxy, {rounds} rounds alternated, 64 keep-alive connections (wrk -t1), 1 KiB answers; load average {}",
        load_average()
    );
    println!(
        "{:<8} {:>10} {:>9} {:>9} {:>17} {:>9}",
        "way", "req/s", "p50 us", "p99 us", "CPU us/req (sys)", "RSS KiB"
    );
    // Per round, connd against nginx and against the baseline: requests/s, CPU per request, p99.
    let (mut vs_nginx, mut vs_base) = ([vec![], vec![], vec![]], [vec![], vec![], vec![]]);
    let mut rss = [0u64; 2];
    for _ in 0..rounds {
        let measured: Vec<Measured> = ways.iter().map(measure).collect();
        for (way, m) in ways.iter().zip(&measured) {
            let cpu = m.cpu_us.zip(m.sys_us).map_or("-".to_owned(), |(c, s)| format!("{c:.1} ({s:.1})"));
            let kib = m.rss_kib.map_or("-".to_owned(), |k| k.to_string());
            println!(
                "{:<8} {:>10.0} {:>9.0} {:>9.0} {:>17} {:>9}",
                way.name, m.run.rps, m.run.p50_us, m.run.p99_us, cpu, kib
            );
        }
        let versus = |to: &mut [Vec<f64>; 3], a: &Measured, b: &Measured| {
            to[0].push(a.run.rps / b.run.rps);
            to[1].push(a.cpu_us.unwrap_or(0.0) / b.cpu_us.unwrap_or(1.0));
            to[2].push(a.run.p99_us / b.run.p99_us);
        };
        versus(&mut vs_nginx, &measured[2], &measured[1]);
        rss[0] = rss[0].max(measured[2].rss_kib.unwrap_or(0));
        if let Some(b) = measured.get(3) {
            versus(&mut vs_base, &measured[2], b);
            rss[1] = rss[1].max(b.rss_kib.unwrap_or(0));
        }
    }
    println!("per-round ratios, median (min-max); load average now {}", load_average());
    println!(
        "connd/nginx: req/s {}, CPU per request {}, p99 {}",
        ratios(&vs_nginx[0]),
        ratios(&vs_nginx[1]),
        ratios(&vs_nginx[2])
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("connd RSS under load {:.1} MiB (peak {:.1} MiB)", mib(rss[0]), mib(status_kib(connd.0.id(), "VmHWM:")));
    if let Some((base, _)) = &base {
        println!(
            "connd/base: req/s {}, CPU per request {}, p99 {}; base RSS under load {:.1} MiB (peak {:.1} MiB)",
            ratios(&vs_base[0]),
            ratios(&vs_base[1]),
            ratios(&vs_base[2]),
            mib(rss[1]),
            mib(status_kib(base.0.id(), "VmHWM:"))
        );
    }

    println!("one connection, {rounds} rounds: p50 latency");
    let mut added = Vec::new();
    for _ in 0..rounds {
        let direct = wrk(&ways[0].url, 1, ONE);
        let via_nginx = wrk(&ways[1].url, 1, ONE);
        let via_connd = wrk(&ways[2].url, 1, ONE);
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
    println!("connd adds {:.0} us at p50 (median of rounds)", median(added));
}
