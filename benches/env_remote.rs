//! `connd env` with 50 remote connections against the fake control plane on loopback
//! (TLS, a CA of its own): wall time of the real binary over repeated runs, the first
//! run discarded. Run with `cargo bench --bench env_remote`; target: median <= 50 ms.

#[path = "../tests/support/control_plane.rs"]
mod control_plane;

use control_plane::{FakeControlPlane, Reply};
use std::process::Command;
use std::time::{Duration, Instant};

const DEFAULT_CONNECTIONS: usize = 50;
const RUNS: usize = 40;

fn main() {
    // BENCH_CONNECTIONS varies the count, to see what one connection costs.
    let connections_count =
        std::env::var("BENCH_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CONNECTIONS);
    let cp = FakeControlPlane::start(false);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut component = String::from("schemaVersion: 1.2\ndependencies:\n  connectionReferences:\n");
    let mut connections = String::new();
    for i in 0..connections_count {
        let id = format!("00000000-0000-4000-8000-{i:012}");
        let name = format!("conn-{i:02}");
        component.push_str(&format!("    - name: {name}\n      resourceRef: thirdparty:svc{i}/v1\n"));
        connections.push_str(&format!(
            "---\nkind: Connection\nid: {id}\nname: {name}\nproject: hr-project\nvisibility: project\nparameters:\n  \
             ServiceURL: https://svc{i}.internal\n  ConsumerKey: {{ remote: true }}\n  ConsumerSecret: {{ remote: true }}\n"
        ));
        cp.script(&id, vec![Reply::ok("1", &[("ConsumerKey", &format!("key-{i}")), ("ConsumerSecret", "s")])]);
    }
    std::fs::write(dir.path().join("component.yaml"), component).unwrap();
    std::fs::write(dir.path().join("connections.yaml"), connections).unwrap();
    std::fs::write(dir.path().join("identity.yaml"), "kind: Component\nproject: hr-project\nname: user-portal\n")
        .unwrap();
    std::fs::write(dir.path().join("token"), "bench-token\n").unwrap();

    let mut times: Vec<Duration> = Vec::new();
    for run in 0..=RUNS {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_connd"))
            .env_clear()
            .args(["env", "--config-dir"])
            .arg(dir.path())
            .arg("--control-plane")
            .arg(cp.url())
            .arg("--ca-file")
            .arg(cp.ca_file())
            .arg("--token-file")
            .arg(dir.path().join("token"))
            .output()
            .expect("connd runs");
        let elapsed = started.elapsed();
        assert!(out.status.success(), "connd env failed: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), connections_count * 3);
        if run > 0 {
            times.push(elapsed);
        }
    }
    assert_eq!(cp.requests().len(), (RUNS + 1) * connections_count);
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "connd env, {connections_count} remote connections over TLS on loopback, {RUNS} runs: min {:.1?}  median {:.1?}  p95 {:.1?}  max {:.1?}",
        times[0],
        pct(0.5),
        pct(0.95),
        times[times.len() - 1]
    );
}
