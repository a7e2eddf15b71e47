//! Benchmarks of Kubernetes injection (run: `cargo bench --bench inject`):
//! 1. `connd webhook` (the real binary): AdmissionReviews of a pod that opts in (sidecar
//!    mode, every annotation), answered with a patch, from 32 keep-alive TLS connections
//!    for 5 s: reviews/s, p50/p99 latency, the server's CPU per review and its peak RSS;
//!    then from one connection for 2 s: the latency of a review alone;
//! 2. the review alone, in process (`review::answer` on the same body, no TLS or HTTP);
//! 3. `connd inject` of a 1,000-document stream (1,000 Deployments, all opted in): wall
//!    time, median of 5 runs.
//!
//! The clients run in this process, on the same cores as the server: the figures are the
//! machine's, clients included. `CONND_BENCH_BIN=path` runs another connd build.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::ServerName;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 32;
const LOAD_SECONDS: u64 = 5;
const DOCUMENTS: usize = 1000;

fn bin() -> String {
    std::env::var("CONND_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_connd").to_owned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// `VmRSS` and utime+stime (clock ticks) of `pid`.
fn usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
    let rss = rss.trim().trim_end_matches(" kB").trim().parse().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    (rss, fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap())
}

fn pod_template(i: usize) -> String {
    format!(
        r#"    metadata:
      labels:
        app: orders-{i}
      annotations:
        connd.dev/inject: "true"
        connd.dev/config: orders-connd
        connd.dev/secrets: orders-db
        connd.dev/proxy-port: "15000"
        connd.dev/files-root: /etc/orders
        connd.dev/control-plane: https://connections.example.internal
        connd.dev/token-audience: connd-control-plane
    spec:
      securityContext:
        runAsUser: 10001
      containers:
        - name: app
          image: registry.example/orders:1.4.2
          command: ["/app/server"]
          env:
            - name: LOG_LEVEL
              value: info
          ports:
            - containerPort: 8080
          resources:
            requests:
              cpu: 100m
              memory: 128Mi
"#
    )
}

fn review_body() -> Bytes {
    let template: serde_json::Value = serde_yaml::from_str(
        &pod_template(0).lines().map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l))).collect::<String>(),
    )
    .unwrap();
    let mut pod = template.clone();
    pod["apiVersion"] = "v1".into();
    pod["kind"] = "Pod".into();
    pod["metadata"]["generateName"] = "orders-7d9f5c-".into();
    pod["metadata"]["namespace"] = "shop".into();
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller" },
            "object": pod,
            "dryRun": false
        }
    });
    Bytes::from(serde_json::to_vec(&review).unwrap())
}

/// The webhook process, killed when dropped (a failed assertion included).
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `connd webhook` with a fresh certificate; its process, address and CA.
fn start_webhook(dir: &std::path::Path) -> (Server, std::net::SocketAddr, rustls::pki_types::CertificateDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    let mut child = Command::new(bin())
        .args(["webhook", "--listen", "127.0.0.1:0", "--log-level", "info"])
        .arg("--tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("connd webhook starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("a listening line").unwrap();
        if let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix("addr=")) {
            break addr.parse().unwrap();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (Server(child), addr, cert.der().clone())
}

async fn client(
    addr: std::net::SocketAddr,
    ca: rustls::pki_types::CertificateDer<'static>,
    body: Bytes,
    deadline: Instant,
) -> Vec<Duration> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    let driver = tokio::spawn(conn);
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let req = http::Request::post("/mutate")
            .header("host", "connd-webhook")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let start = Instant::now();
        tx.ready().await.expect("connection open");
        let res = tx.send_request(req).await.expect("answer");
        assert_eq!(res.status(), 200);
        let answer = res.into_body().collect().await.unwrap().to_bytes();
        latencies.push(start.elapsed());
        assert!(answer.windows(9).any(|w| w == b"JSONPatch"), "a patch");
    }
    driver.abort();
    latencies
}

fn webhook_load() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr, ca) = start_webhook(dir.path());
    let pid = server.0.id();
    let body = review_body();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // A warm-up second, then the measured run.
    rt.block_on(client(addr, ca.clone(), body.clone(), Instant::now() + Duration::from_secs(1)));
    let (_, cpu_before) = usage(pid);
    let deadline = Instant::now() + Duration::from_secs(LOAD_SECONDS);
    let mut peak_rss = 0;
    let all = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CLIENTS {
            tasks.spawn(client(addr, ca.clone(), body.clone(), deadline));
        }
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            peak_rss = peak_rss.max(usage(pid).0);
        }
        let mut all = Vec::new();
        while let Some(l) = tasks.join_next().await {
            all.extend(l.unwrap());
        }
        all
    });
    let (_, cpu_after) = usage(pid);
    let mut alone = rt.block_on(client(addr, ca.clone(), body.clone(), Instant::now() + Duration::from_secs(2)));
    alone.sort();
    drop(server);
    let mut all = all;
    all.sort();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as f64;
    let cpu_us = (cpu_after - cpu_before) as f64 / ticks * 1e6 / all.len() as f64;
    println!(
        "webhook: {CLIENTS} keep-alive TLS clients, {LOAD_SECONDS}s, review of {} bytes (a pod opting in, patched):",
        body.len()
    );
    println!(
        "  {:>9.0} reviews/s  p50 {:.3} ms  p99 {:.3} ms  server CPU {cpu_us:.1} us/review  peak RSS {:.1} MiB",
        all.len() as f64 / LOAD_SECONDS as f64,
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        peak_rss as f64 / 1024.0
    );
    println!(
        "  one connection: p50 {:.3} ms  p99 {:.3} ms",
        percentile(&alone, 0.5).as_secs_f64() * 1e3,
        percentile(&alone, 0.99).as_secs_f64() * 1e3
    );
}

fn inject_stream() {
    let mut stream = String::new();
    for i in 0..DOCUMENTS {
        stream.push_str(&format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders-{i}\n  namespace: shop\nspec:\n  \
             replicas: 2\n  selector:\n    matchLabels:\n      app: orders-{i}\n  template:\n{}",
            pod_template(i)
        ));
    }
    let mut times = Vec::new();
    let mut out_len = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let mut child = Command::new(bin())
            .arg("inject")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = stream.clone();
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        times.push(start.elapsed());
        assert!(out.status.success());
        out_len = out.stdout.len();
    }
    times.sort();
    println!(
        "inject: {DOCUMENTS} Deployments ({} KiB in, {} KiB out), all opted in: median {:.1} ms, min {:.1} ms",
        stream.len() / 1024,
        out_len / 1024,
        times[2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3
    );
}

fn review_alone() {
    let body = review_body();
    let settings = connd::inject::Settings { image: connd::inject::DEFAULT_IMAGE.into() };
    const ROUNDS: u32 = 20_000;
    // CPU time of this thread, not wall time: the machine is shared.
    let cpu = || {
        let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD).unwrap();
        let (user, sys) = (u.user_time(), u.system_time());
        (user.tv_sec() + sys.tv_sec()) as f64 * 1e6 + (user.tv_usec() + sys.tv_usec()) as f64
    };
    let (start, wall) = (cpu(), Instant::now());
    for _ in 0..ROUNDS {
        let (verdict, _) = connd::inject::webhook::review::answer(&body, &settings).unwrap();
        assert_eq!(verdict, connd::inject::webhook::review::Verdict::Patched);
    }
    println!(
        "review alone (parse, inject, diff, answer; no TLS, no HTTP): {:.1} us CPU ({:.1} us wall)",
        (cpu() - start) / f64::from(ROUNDS),
        wall.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS)
    );
}

fn main() {
    webhook_load();
    review_alone();
    inject_stream();
}
