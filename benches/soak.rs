//! Soak of `connd serve` (minutes; not in CI): the real binary with 64 keep-alive
//! clients asking `GET /v1/env`, the kubelet swapping the config directory every 100 ms,
//! and a control plane that fails (503) every other 5 s. Reports the server's RSS and
//! open descriptors at the start and the end, the answers by status, and whether any
//! 200 lacked a value (the remote password or the literal that every swap changes).
//!
//! Run: `cargo bench --bench soak`; `CONND_SOAK_SECS` sets the duration (default 600),
//! `CONND_SOAK_PAUSE_MS` each client's pause between requests (default 10),
//! `CONND_BENCH_BIN` another connd build than the one cargo built.
//! Each sample splits the RSS by where it lives (`/proc/PID/smaps`): the main heap
//! (`[heap]`, glibc's main arena), other anonymous memory (the other threads' malloc
//! arenas, stacks, mmapped blocks) and file pages (the binary's code), so that growth
//! can be told apart: arenas that keep freed pages, or live objects that pile up.
//! Asked: RSS flat after warm-up (<= 256 KiB growth from minute 2 to minute 10),
//! descriptors constant, only 200s, no missing value.

#[path = "../tests/support/control_plane.rs"]
mod control_plane;
#[path = "../tests/support/kubelet.rs"]
mod kubelet;

use bytes::Bytes;
use control_plane::{FakeControlPlane, Reply};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use kubelet::AtomicDir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixStream;

const CLIENTS: usize = 64;
const DB_ID: &str = "19d2648b-d29c-4452-afdd-1b9311e81412";
const SWAP_EVERY: Duration = Duration::from_millis(100);
const OUTAGE_EVERY: Duration = Duration::from_secs(5);
/// How often RSS and descriptors are printed during the run, to tell growth from a plateau.
const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// Growth is judged from here on: before it, pools, buffers and arenas fill.
const WARM_UP: Duration = Duration::from_secs(120);

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The directory's files; `serial` changes the literal `LEVEL` on every swap.
fn files(serial: u64) -> Vec<(&'static str, String)> {
    let component = format!(
        "schemaVersion: 1.2\ndependencies:\n  connectionReferences:\n    - name: main-db\n      \
         resourceRef: database:pg/main\nconfigurations:\n  env:\n    - name: LEVEL\n      value: \"swap-{serial}\"\n"
    );
    let connections = format!(
        "---\nkind: Connection\nid: {DB_ID}\nname: main-db\nproject: hr-project\nvisibility: project\nparameters:\n  \
         HostName: pg.internal\n  Password: {{ remote: true, secret: true }}\n"
    );
    vec![
        ("component.yaml", component),
        ("identity.yaml", "kind: Component\nproject: hr-project\nname: user-portal\n".to_owned()),
        ("connections.yaml", connections),
    ]
}

/// The connd binary the soak runs.
fn bin() -> String {
    std::env::var("CONND_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_connd").to_owned())
}

/// RSS in KiB by where it lives: `[heap]`, other anonymous mappings, file-backed.
fn breakdown(pid: u32) -> (u64, u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut heap, mut anon, mut file) = (0, 0, 0);
    let mut kind = 0;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
            let path = line.split_whitespace().nth(5).unwrap_or("");
            kind = match path {
                "[heap]" => 0,
                "" | "[stack]" | "[anon]" => 1,
                p if p.starts_with('[') => 3,
                _ => 2,
            };
        } else if first == "Rss:" {
            let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            match kind {
                0 => heap += kib,
                1 => anon += kib,
                2 => file += kib,
                _ => {}
            }
        }
    }
    (heap, anon, file)
}

fn refs<'a>(files: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    files.iter().map(|(n, t)| (*n, t.as_str())).collect()
}

/// RSS in KiB and open descriptors of `pid`.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

#[derive(Default)]
struct Tally {
    statuses: parking_lot::Mutex<BTreeMap<u16, u64>>,
    missing: AtomicU64,
    reconnects: AtomicU64,
}

/// One keep-alive client: asks until `stop`, reconnecting if the connection breaks.
async fn client(socket: PathBuf, pause: Duration, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = UnixStream::connect(&socket).await else {
            tally.reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok((mut tx, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else { continue };
        let driver = tokio::spawn(conn);
        while !stop.load(Ordering::Relaxed) {
            let req = http::Request::get("/v1/env").header("host", "connd").body(Empty::<Bytes>::new()).unwrap();
            let Ok(res) = tx.send_request(req).await else { break };
            let status = res.status().as_u16();
            let Ok(body) = res.into_body().collect().await else { break };
            if status == 200 {
                let env: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap_or_default();
                let present = |k: &str| env.get(k).and_then(|v| v.as_str()).is_some_and(|v| !v.is_empty());
                if !present("CHOREO_MAIN_DB_PASSWORD") || !present("LEVEL") {
                    tally.missing.fetch_add(1, Ordering::Relaxed);
                }
            }
            *tally.statuses.lock().entry(status).or_default() += 1;
            tokio::time::sleep(pause).await;
        }
        driver.abort();
        if !stop.load(Ordering::Relaxed) {
            tally.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn start_serve(dir: &Path, socket: &Path, cp: &FakeControlPlane) -> Child {
    Command::new(bin())
        .args(["serve", "--config-dir"])
        .arg(dir)
        .arg("--socket")
        .arg(socket)
        .args(["--control-plane", &cp.url(), "--ca-file"])
        .arg(cp.ca_file())
        .args(["--refresh-interval", "1s", "--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("connd serve starts")
}

fn wait_ready(socket: &Path) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let ok = Command::new(bin()).arg("probe").arg("--socket").arg(socket).status();
        if ok.is_ok_and(|s| s.success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("connd serve never became ready");
}

fn main() {
    let duration = Duration::from_secs(env_secs("CONND_SOAK_SECS", 600));
    let pause = Duration::from_millis(env_secs("CONND_SOAK_PAUSE_MS", 10));
    let cp = FakeControlPlane::start(false);
    let up = || vec![Reply::ok("1", &[("Password", "pw-1")])];
    cp.script(DB_ID, up());
    let mut dir = AtomicDir::new(&refs(&files(0)));
    let run = tempfile::tempdir().expect("temp dir");
    let socket = run.path().join("connd.sock");
    let mut serve = start_serve(dir.path(), &socket, &cp);
    wait_ready(&socket);
    let pid = serve.id();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let clients: Vec<_> =
        (0..CLIENTS).map(|_| runtime.spawn(client(socket.clone(), pause, stop.clone(), tally.clone()))).collect();
    // Let every client connect and the allocator settle before the first measure.
    std::thread::sleep(Duration::from_secs(2));
    let (rss_start, fds_start) = usage(pid);
    println!("soak: {CLIENTS} clients, {pause:?} pause, {duration:?}; start: RSS {rss_start} KiB, {fds_start} fds");

    let start = Instant::now();
    let (mut serial, mut outage, mut next_flip) = (0u64, false, start + OUTAGE_EVERY);
    let mut next_sample = start + SAMPLE_EVERY;
    let mut warm: Option<(u64, (u64, u64, u64))> = None;
    while start.elapsed() < duration {
        if Instant::now() >= next_sample {
            let (rss, fds) = usage(pid);
            let (heap, anon, file) = breakdown(pid);
            println!(
                "  at {:>4}s: RSS {rss} KiB (heap {heap}, other anonymous {anon}, file {file}), {fds} fds",
                start.elapsed().as_secs()
            );
            if warm.is_none() && start.elapsed() >= WARM_UP {
                warm = Some((rss, (heap, anon, file)));
            }
            next_sample += SAMPLE_EVERY;
        }
        serial += 1;
        dir.update(&refs(&files(serial)));
        if Instant::now() >= next_flip {
            outage = !outage;
            cp.script(DB_ID, if outage { vec![Reply::Status(503)] } else { up() });
            next_flip += OUTAGE_EVERY;
        }
        std::thread::sleep(SWAP_EVERY);
    }
    cp.script(DB_ID, up());
    let (rss_end, fds_end) = usage(pid);
    let parts_end = breakdown(pid);
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for c in clients {
            let _ = c.await;
        }
    });
    let _ = serve.kill();
    let _ = serve.wait();

    let statuses = tally.statuses.lock().clone();
    let total: u64 = statuses.values().sum();
    println!(
        "end: RSS {rss_end} KiB ({:+} KiB), {fds_end} fds ({:+})",
        rss_end as i64 - rss_start as i64,
        fds_end as i64 - fds_start as i64
    );
    if let Some((rss, (heap, anon, file))) = warm {
        println!(
            "after warm-up ({}s to the end): RSS {:+} KiB (heap {:+}, other anonymous {:+}, file {:+})",
            WARM_UP.as_secs(),
            rss_end as i64 - rss as i64,
            parts_end.0 as i64 - heap as i64,
            parts_end.1 as i64 - anon as i64,
            parts_end.2 as i64 - file as i64
        );
    }
    println!("{serial} swaps, {} control-plane requests", cp.requests_for(DB_ID).len());
    println!("answers: {total} ({:.0}/s) by status: {statuses:?}", total as f64 / duration.as_secs_f64());
    println!(
        "answers without a value: {}; reconnects: {}",
        tally.missing.load(Ordering::Relaxed),
        tally.reconnects.load(Ordering::Relaxed)
    );
}
