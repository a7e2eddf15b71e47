//! The fleet bench (docs/control-plane.md "A fleet on one control plane", docs/cache.md):
//! N `connd serve` processes, each with C remote connections and the outage cache,
//! against one control-plane stand-in that records every request; then
//! 1. steady load: requests per second per sidecar (304s, with ETags) and RSS per sidecar;
//! 2. an outage (every answer 503), then recovery: the peak request rate (1 s windows) in
//!    the minute after recovery as a multiple of the steady rate, and the time until
//!    every sidecar has fresh values again;
//! 3. a rolling restart of all N with the control plane down: how many start on the cache.
//!
//! Run: `cargo bench --bench fleet` (minutes; not in CI). Settings by environment:
//! `FLEET_N` (200), `FLEET_CONNECTIONS` (5), `FLEET_REFRESH` (seconds, 30), `FLEET_OUTAGE`
//! (seconds, 60), `FLEET_CHART` (the PNG to draw, `target/fleet.png`).

mod chart;
#[path = "../../tests/support/control_plane.rs"]
mod control_plane;

use connd::serve::api::client::request;
use control_plane::{FakeControlPlane, Reply};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One sidecar: its process and the flags it is restarted with.
struct Sidecar {
    child: Child,
    socket: PathBuf,
    args: Vec<String>,
}

impl Sidecar {
    fn spawn(args: &[String], socket: &Path) -> Sidecar {
        let child = Command::new(env!("CARGO_BIN_EXE_connd"))
            .arg("serve")
            .args(args)
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("connd serve starts");
        Sidecar { child, socket: socket.to_path_buf(), args: args.to_vec() }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// `/readyz`'s status and body.
    async fn readyz(&self) -> Option<(u16, String)> {
        let a = request(&self.socket, http::Method::GET, "/readyz").await.ok()?;
        Some((a.status.as_u16(), String::from_utf8_lossy(&a.body).into_owned()))
    }

    /// Whether the values are fresh: ready, not stale, no failure since the last success.
    async fn fresh(&self) -> bool {
        let Ok(a) = request(&self.socket, http::Method::GET, "/metrics").await else { return false };
        let text = String::from_utf8_lossy(&a.body);
        text.contains("\nconnd_error_age_seconds 0\n") && text.contains("\nconnd_cache_stale 0\n")
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config directory: C connections with one remote parameter each.
fn config(dir: &Path, cp: &FakeControlPlane, connections: usize) -> Vec<String> {
    let mut component = String::from("schemaVersion: 1.2\ndependencies:\n  connectionReferences:\n");
    let mut docs = String::new();
    let mut ids = Vec::new();
    for i in 0..connections {
        let id = format!("00000000-0000-4000-8000-{i:012}");
        component.push_str(&format!("    - name: conn-{i}\n      resourceRef: thirdparty:svc{i}/v1\n"));
        docs.push_str(&format!(
            "---\nkind: Connection\nid: {id}\nname: conn-{i}\nproject: p\nvisibility: project\nparameters:\n  \
             ServiceURL: https://svc{i}.internal\n  ConsumerKey: {{ remote: true }}\n"
        ));
        cp.script(&id, vec![Reply::ok("1", &[("ConsumerKey", "key")])]);
        ids.push(id);
    }
    std::fs::write(dir.join("component.yaml"), component).unwrap();
    std::fs::write(dir.join("connections.yaml"), docs).unwrap();
    std::fs::write(dir.join("identity.yaml"), "kind: Component\nproject: p\nname: c\n").unwrap();
    ids
}

fn script_all(cp: &FakeControlPlane, ids: &[String], reply: Reply) {
    for id in ids {
        cp.script(id, vec![reply.clone()]);
    }
}

/// Requests per second in the 1 s windows (stepped by 100 ms) of `times` within `from..to`:
/// the highest.
fn peak_rate(times: &[Instant], from: Instant, to: Instant) -> f64 {
    let mut peak = 0usize;
    let mut at = from;
    while at + Duration::from_secs(1) <= to {
        let n = times.iter().filter(|t| **t >= at && **t < at + Duration::from_secs(1)).count();
        peak = peak.max(n);
        at += Duration::from_millis(100);
    }
    peak as f64
}

// One piece: the phases in order, each reading the state the one before left.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (n, connections) = (setting("FLEET_N", 200) as usize, setting("FLEET_CONNECTIONS", 5) as usize);
    let refresh = Duration::from_secs(setting("FLEET_REFRESH", 30));
    let outage = Duration::from_secs(setting("FLEET_OUTAGE", 60));
    let cp = FakeControlPlane::start(false);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("config");
    std::fs::create_dir(&dir).unwrap();
    let ids = config(&dir, &cp, connections);
    std::fs::write(tmp.path().join("key"), [9u8; 32]).unwrap();
    let t0 = Instant::now();
    let mut fleet = Vec::new();
    for i in 0..n {
        let socket = tmp.path().join(format!("s{i}.sock"));
        let args: Vec<String> = [
            "--config-dir",
            &dir.display().to_string(),
            "--socket",
            &socket.display().to_string(),
            "--control-plane",
            &cp.url(),
            "--ca-file",
            &cp.ca_file().display().to_string(),
            "--cache-dir",
            &tmp.path().join(format!("cache-{i}")).display().to_string(),
            "--cache-key-file",
            &tmp.path().join("key").display().to_string(),
            "--refresh-interval",
            &format!("{}s", refresh.as_secs()),
            "--log-level",
            "error",
        ]
        .map(str::to_owned)
        .to_vec();
        fleet.push(Sidecar::spawn(&args, &socket));
    }
    for s in &fleet {
        while !matches!(s.readyz().await, Some((200, _))) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "fleet: {n} sidecars x {connections} connections, --refresh-interval {refresh:?}; all ready in {:.1?}",
        t0.elapsed()
    );

    // 1. Steady load, past the first (spread) refresh.
    tokio::time::sleep(refresh).await;
    let steady_from = Instant::now();
    tokio::time::sleep(refresh * 2).await;
    let steady_to = Instant::now();
    let times: Vec<Instant> = cp.requests().iter().map(|r| r.at).collect();
    let steady_n = times.iter().filter(|t| **t >= steady_from && **t < steady_to).count();
    let steady = steady_n as f64 / (steady_to - steady_from).as_secs_f64();
    let statuses = cp.requests().iter().filter(|r| r.at >= steady_from && r.at < steady_to && r.status == 304).count();
    let steady_peak = peak_rate(&times, steady_from, steady_to);
    let mut rss: Vec<u64> = fleet.iter().map(Sidecar::rss_kib).collect();
    rss.sort_unstable();
    println!(
        "steady: {steady:.1} req/s at the control plane (peak {steady_peak:.0} in 1 s windows), {:.3} req/s per sidecar \
         ({statuses} of {steady_n} answered 304); RSS per sidecar median {:.1} MiB, max {:.1} MiB",
        steady / n as f64,
        rss[rss.len() / 2] as f64 / 1024.0,
        rss[rss.len() - 1] as f64 / 1024.0
    );

    // 2. An outage, then recovery.
    let outage_from = Instant::now();
    script_all(&cp, &ids, Reply::Status(503));
    tokio::time::sleep(outage).await;
    script_all(&cp, &ids, Reply::ok("1", &[("ConsumerKey", "key")]));
    let recovered = Instant::now();
    let mut all_fresh = None;
    while recovered.elapsed() < refresh + Duration::from_secs(60) {
        if all_fresh.is_none() {
            let mut fresh = 0;
            for s in &fleet {
                fresh += usize::from(s.fresh().await);
            }
            if fresh == n {
                all_fresh = Some(recovered.elapsed());
            }
        }
        if all_fresh.is_some() && recovered.elapsed() >= Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = Instant::now();
    let times: Vec<Instant> = cp.requests().iter().map(|r| r.at).collect();
    let during = times.iter().filter(|t| **t >= outage_from && **t < recovered).count() as f64 / outage.as_secs_f64();
    let peak = peak_rate(&times, recovered, after.min(recovered + Duration::from_secs(60)));
    let first = times.iter().filter(|t| **t >= recovered && **t < recovered + refresh).count() as f64;
    println!(
        "outage {outage:?}: {during:.1} req/s during it ({:.2}x steady); after recovery: {:.1} req/s over the first \
         interval ({:.2}x steady), peak {peak:.0} req/s in 1 s windows ({:.2}x the steady peak); every sidecar fresh {}",
        during / steady,
        first / refresh.as_secs_f64(),
        first / refresh.as_secs_f64() / steady,
        peak / steady_peak,
        all_fresh.map_or("not within the wait".to_owned(), |d| format!("{:.1} s after recovery", d.as_secs_f64()))
    );

    // 3. A rolling restart with the control plane down.
    let rolling_from = Instant::now();
    script_all(&cp, &ids, Reply::Status(503));
    let mut on_cache = 0;
    for s in fleet.iter_mut() {
        let _ = s.child.kill();
        let _ = s.child.wait();
        *s = Sidecar::spawn(&s.args.clone(), &s.socket.clone());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some((200, body)) = s.readyz().await {
                on_cache += usize::from(body.contains("\"stale\":true"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let rolling_to = Instant::now();
    let during = cp.requests().iter().filter(|r| r.at >= rolling_from && r.at < rolling_to).count() as f64;
    println!(
        "rolling restart with the control plane down: {on_cache} of {n} started on the cache (ready, stale) in {:.1} s, \
         {:.1} req/s meanwhile ({:.2}x steady)",
        (rolling_to - rolling_from).as_secs_f64(),
        during / (rolling_to - rolling_from).as_secs_f64(),
        during / (rolling_to - rolling_from).as_secs_f64() / steady
    );
    script_all(&cp, &ids, Reply::ok("1", &[("ConsumerKey", "key")]));
    // The chart shows the restarted fleet taking fresh values again.
    tokio::time::sleep(refresh).await;

    let chart = std::env::var("FLEET_CHART").unwrap_or_else(|_| "target/fleet.png".into());
    let times: Vec<f64> = cp.requests().iter().map(|r| (r.at - t0).as_secs_f64()).collect();
    let marks = [
        ("outage", (outage_from - t0).as_secs_f64()),
        ("recovery", (recovered - t0).as_secs_f64()),
        ("rolling restart, down", (rolling_from - t0).as_secs_f64()),
        ("up", (rolling_to - t0).as_secs_f64()),
    ];
    match chart::draw(Path::new(&chart), &times, &marks, n) {
        Ok(()) => println!("chart: {chart}"),
        Err(e) => println!("chart not drawn: {e}"),
    }
}
