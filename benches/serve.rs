//! Benchmarks of `connd serve` (run: `cargo bench --bench serve`):
//! 1. `GET /v1/env` over the socket from 64 keep-alive connections, against a minimal
//!    hyper server answering a fixed body of the same size on a Unix socket, same run;
//! 2. reload latency: from the kubelet's `..data` rename to a blocking query answering
//!    the new value;
//! 3. idle RSS of the real binary with 50 and with 10,000 open connections, split into
//!    anonymous memory (heap, stacks, buffers) and file pages (the binary's code and the
//!    shared libraries', as far as it touched them), and the same for a baseline build
//!    named by `CONND_BENCH_BASE` (today's main, say), in the same run.
//!
//! `CONND_BENCH_BIN` names another connd build than the one cargo built.

use bytes::Bytes;
use connd::reload::ReloadConfig;
use connd::resolve::Options;
use connd::serve::api::auth::Allow;
use connd::serve::{run, ServeSettings};
use connd::source::Local;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{UnixListener, UnixStream};

const CONNECTIONS: usize = 64;
const LOAD_SECONDS: u64 = 5;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Requests/s and latencies of `GET target` from `CONNECTIONS` keep-alive connections.
async fn load(socket: &Path, target: &'static str) -> (f64, Vec<Duration>) {
    let deadline = Instant::now() + Duration::from_secs(LOAD_SECONDS);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let socket = socket.to_path_buf();
        tasks.spawn(async move {
            let stream = UnixStream::connect(&socket).await.expect("connect");
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            let driver = tokio::spawn(conn);
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let req = http::Request::get(target).header("host", "x").body(Empty::<Bytes>::new()).unwrap();
                let start = Instant::now();
                let res = tx.send_request(req).await.expect("answer");
                assert_eq!(res.status(), 200);
                res.into_body().collect().await.unwrap();
                latencies.push(start.elapsed());
            }
            driver.abort();
            latencies
        });
    }
    let mut all = Vec::new();
    while let Some(l) = tasks.join_next().await {
        all.extend(l.unwrap());
    }
    all.sort();
    (all.len() as f64 / LOAD_SECONDS as f64, all)
}

/// The baseline: hyper on a Unix socket, answering `body` to everything.
async fn baseline_server(listener: UnixListener, body: Bytes) {
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let body = body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req| {
                let body = body.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(body))
                            .unwrap(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn settings(dir: &Path) -> ServeSettings {
    ServeSettings {
        reload: ReloadConfig {
            dir: dir.to_path_buf(),
            options: Options::default(),
            refresh_interval: Duration::from_secs(3600),
            rescan_interval: Duration::from_secs(3600),
            debounce: Duration::from_millis(10),
            file_settle: connd::reload::FILE_SETTLE,
            tokens: connd::source::Tokens::All,
        },
        allow: Allow::new(vec![], vec![]),
        startup_timeout: Duration::from_secs(10),
        grace: Duration::from_secs(1),
        notify_socket: None,
        sighup: false,
        limits: Default::default(),
        metrics_listener: None,
    }
}

async fn get(socket: &Path, target: &str) -> connd::serve::api::client::Answer {
    connd::serve::api::client::request(socket, http::Method::GET, target).await.expect("request")
}

async fn wait_ready(socket: &Path) {
    for _ in 0..500 {
        if let Ok(a) = connd::serve::api::client::request(socket, http::Method::GET, "/readyz").await {
            if a.status == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not ready");
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example")
}

fn throughput(rt: &tokio::runtime::Runtime, client: &tokio::runtime::Runtime) {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("connd.sock");
    let listener = rt.block_on(async { connd::serve::api::server::bind(&socket, 0o660, None).unwrap() });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(run(listener, settings(&example_dir()), Arc::new(Local), Arc::default(), async {
        let _ = stopped.await;
    }));
    let body = client.block_on(async {
        wait_ready(&socket).await;
        get(&socket, "/v1/env").await.body
    });
    let (connd_rps, connd_lat) = client.block_on(load(&socket, "/v1/env"));
    let _ = stop.send(());
    let _ = rt.block_on(server);

    let base_socket = tmp.path().join("baseline.sock");
    let base = rt.block_on(async { UnixListener::bind(&base_socket).unwrap() });
    let base_task = rt.spawn(baseline_server(base, body.clone()));
    let (base_rps, base_lat) = client.block_on(load(&base_socket, "/v1/env"));
    base_task.abort();

    println!("GET /v1/env, {CONNECTIONS} keep-alive connections, {LOAD_SECONDS}s, body {} bytes:", body.len());
    for (name, rps, lat) in [("connd", connd_rps, &connd_lat), ("baseline hyper", base_rps, &base_lat)] {
        println!(
            "  {name:<15} {rps:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
            percentile(lat, 0.5).as_secs_f64() * 1e3,
            percentile(lat, 0.99).as_secs_f64() * 1e3
        );
    }
    println!("  connd/baseline  {:.1}%", connd_rps / base_rps * 100.0);
}

/// The kubelet's atomic writer, as in the tests: new folder, `..data_tmp`, rename.
fn kubelet_update(dir: &Path, serial: usize, files: &[(&str, String)]) {
    let folder = format!("..2026_11_22_03_00_00.{serial}");
    std::fs::create_dir(dir.join(&folder)).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(&folder).join(name), text).unwrap();
    }
    symlink(&folder, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if serial == 0 {
        for (name, _) in files {
            symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
        }
    } else {
        std::fs::remove_dir_all(dir.join(format!("..2026_11_22_03_00_00.{}", serial - 1))).unwrap();
    }
}

fn example_files(level: usize) -> Vec<(&'static str, String)> {
    let read = |n: &str| std::fs::read_to_string(example_dir().join(n)).unwrap();
    let component = read("component.yaml").replace("value: info", &format!("value: level-{level}"));
    // `file:` sources are relative to the directory: point them at the example's.
    let secrets = example_dir().join("secrets");
    let connections = read("connections.yaml").replace("file: secrets/", &format!("file: {}/", secrets.display()));
    vec![
        ("component.yaml", component),
        ("component-identity.yaml", read("component-identity.yaml")),
        ("connections.yaml", connections),
    ]
}

fn reload_latency(rt: &tokio::runtime::Runtime, client: &tokio::runtime::Runtime) {
    const ROUNDS: usize = 200;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("config");
    std::fs::create_dir(&dir).unwrap();
    kubelet_update(&dir, 0, &example_files(0));
    let socket = tmp.path().join("connd.sock");
    let listener = rt.block_on(async { connd::serve::api::server::bind(&socket, 0o660, None).unwrap() });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(run(listener, settings(&dir), Arc::new(Local), Arc::default(), async {
        let _ = stopped.await;
    }));
    let mut lat = Vec::new();
    client.block_on(async {
        wait_ready(&socket).await;
        for round in 1..=ROUNDS {
            let index: u64 = get(&socket, "/v1/env").await.headers["x-connd-index"].to_str().unwrap().parse().unwrap();
            let s = socket.clone();
            let waiting = tokio::spawn(async move { get(&s, &format!("/v1/env?index={index}&wait=10s")).await });
            // Let the query reach the server and park.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let files = example_files(round);
            let start = Instant::now();
            kubelet_update(&dir, round, &files);
            let answer = waiting.await.unwrap();
            let elapsed = start.elapsed();
            assert!(answer.text().contains(&format!("level-{round}")), "round {round}: {}", answer.text());
            lat.push(elapsed);
        }
    });
    let _ = stop.send(());
    let _ = rt.block_on(server);
    lat.sort();
    println!(
        "reload (kubelet ..data swap -> blocking query answers), {ROUNDS} rounds: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3
    );
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// "X MiB (anonymous A, file F)" of `pid`.
fn rss_text(pid: u32) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    format!(
        "{:.1} MiB (anonymous {:.1}, file {:.1})",
        mib(rss_kib(pid)),
        mib(status_kib(pid, "RssAnon:")),
        mib(status_kib(pid, "RssFile:"))
    )
}

/// The connd binaries measured: this one (`CONND_BENCH_BIN`, else cargo's), and the
/// baseline of `CONND_BENCH_BASE` when set.
fn binaries() -> Vec<(&'static str, PathBuf)> {
    let this = std::env::var("CONND_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_connd").to_owned());
    let mut bins = vec![("connd", PathBuf::from(this))];
    if let Ok(base) = std::env::var("CONND_BENCH_BASE") {
        bins.push(("base", PathBuf::from(base)));
    }
    bins
}

fn idle_rss(client: &tokio::runtime::Runtime, (name, bin): &(&str, PathBuf)) {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("connd.sock");
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--log-level", "warn", "--config-dir"])
        .arg(example_dir())
        .arg("--socket")
        .arg(&socket)
        // 10,000 idle connections held on purpose: above the default cap and timeout.
        .args(["--max-connections", "20000", "--idle-timeout", "1h"])
        .spawn()
        .unwrap();
    client.block_on(async {
        wait_ready(&socket).await;
        let mut held = Vec::new();
        let mut open = 0;
        for target in [50usize, 10_000] {
            while open < target {
                let stream = UnixStream::connect(&socket).await.expect("connect (raise ulimit -n?)");
                let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                let driver = tokio::spawn(conn);
                let req = http::Request::get("/v1/env").header("host", "x").body(Empty::<Bytes>::new()).unwrap();
                tx.send_request(req).await.unwrap().into_body().collect().await.unwrap();
                held.push((tx, driver));
                open += 1;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            println!(
                "{name}: idle RSS of serve with {target} open keep-alive connections (one request each): {}",
                rss_text(child.id())
            );
        }
    });
    let _ = child.kill();
    let _ = child.wait();
}

/// A directory of `n` local connection descriptors, five parameters each.
fn write_descriptors(dir: &Path, n: usize) {
    let mut comp = String::from("schemaVersion: 1.2\ndependencies:\n  connectionReferences:\n");
    for i in 0..n {
        comp.push_str(&format!("    - name: service-{i}\n      resourceRef: service:/Bench/svc{i}/v1/ep/PUBLIC\n"));
    }
    std::fs::write(dir.join("component.yaml"), comp).unwrap();
    std::fs::write(dir.join("identity.yaml"), "kind: Component\nproject: bench\nname: bench-component\n").unwrap();
    for (f, chunk) in (0..n).collect::<Vec<_>>().chunks(500).enumerate() {
        let mut text = String::new();
        for i in chunk {
            text.push_str(&format!(
                "---\nkind: Connection\nid: {i:08x}-0000-4000-8000-{i:012x}\nname: service-{i}\nproject: bench\n\
                 resourceRef: service:/Bench/svc{i}/v1/ep/PUBLIC\nparameters:\n  ServiceURL: https://svc{i}.bench.internal/v1\n  \
                 ConsumerKey: client-{i}\n  ConsumerSecret: {{ value: secret-{i} }}\n  ChoreoAPIKey: {{ value: key-{i} }}\n  \
                 DatabaseName: db{i}\n"
            ));
        }
        std::fs::write(dir.join(format!("connections-{f:03}.yaml")), text).unwrap();
    }
}

/// Idle RSS by the size of the directory served: 50 and 10,000 connection descriptors,
/// after one `GET /v1/env` (so the rendered answer is held too).
fn idle_rss_by_descriptors(client: &tokio::runtime::Runtime, (name, bin): &(&str, PathBuf)) {
    for n in [50usize, 10_000] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("config");
        std::fs::create_dir(&dir).unwrap();
        write_descriptors(&dir, n);
        let socket = tmp.path().join("connd.sock");
        let mut child = std::process::Command::new(bin)
            .args(["serve", "--log-level", "warn", "--config-dir"])
            .arg(&dir)
            .arg("--socket")
            .arg(&socket)
            .spawn()
            .unwrap();
        client.block_on(async {
            wait_ready(&socket).await;
            let stream = UnixStream::connect(&socket).await.unwrap();
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            let driver = tokio::spawn(conn);
            let req = http::Request::get("/v1/env").header("host", "x").body(Empty::<Bytes>::new()).unwrap();
            let body = tx.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
            drop(tx);
            let _ = driver.await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            println!(
                "{name}: idle RSS of serve with {n} connection descriptors ({} KiB /v1/env): {}",
                body.len() / 1024,
                rss_text(child.id())
            );
        });
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // `CONND_BENCH_IDLE_ONLY` skips the throughput and reload parts.
    if std::env::var_os("CONND_BENCH_IDLE_ONLY").is_none() {
        throughput(&rt, &client);
        reload_latency(&rt, &client);
    }
    let bins = binaries();
    for bin in &bins {
        idle_rss_by_descriptors(&client, bin);
    }
    for bin in &bins {
        idle_rss(&client, bin);
    }
}
