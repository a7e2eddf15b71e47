//! Run-mode figures, timed from outside as an orchestrator sees them:
//! - from SIGTERM sent to `connd run` until connd has exited, for a workload that dies
//!   of the forwarded signal at once (`sleep`): median and p95, once for a workload
//!   that has run 300 ms (the reloader watching the directory: the usual case) and once
//!   for one signalled as soon as it runs;
//! - the wall time `connd run -- /bin/true` adds over `connd exec -- /bin/true` on the
//!   same local directory: the two are run alternately, and the figure is the median
//!   (and p95) of the paired differences.
//!
//! Run: `cargo bench --bench run` (add `-- --runs N` to change the repetitions).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONND: &str = env!("CARGO_BIN_EXE_connd");

/// Ten local connections of four parameters each: a typical small component.
fn write_dir(dir: &Path) {
    let mut comp = String::from("schemaVersion: 1.2\ndependencies:\n  connectionReferences:\n");
    let mut conns = String::new();
    for i in 0..10 {
        comp.push_str(&format!("    - name: service-{i}\n      resourceRef: service:/Bench/svc{i}/v1/ep/PUBLIC\n"));
        conns.push_str(&format!(
            "---\nkind: Connection\nid: {i:08x}-0000-4000-8000-{i:012x}\nname: service-{i}\nproject: bench\n\
             visibility: project\nresourceRef: service:/Bench/svc{i}/v1/ep/PUBLIC\nparameters:\n  \
             ServiceURL: https://svc{i}.bench.internal/v1\n  ConsumerKey: client-{i}\n  \
             ConsumerSecret: secret-{i}\n  ChoreoAPIKey: key-{i}\n"
        ));
    }
    std::fs::write(dir.join("component.yaml"), comp).unwrap();
    std::fs::write(dir.join("identity.yaml"), "kind: Component\nproject: bench\nname: bench-component\n").unwrap();
    std::fs::write(dir.join("connections.yaml"), conns).unwrap();
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn wall(dir: &Path, mode: &str) -> Duration {
    let mut c = Command::new(CONND);
    c.args([mode, "--config-dir"]).arg(dir).args(["--", "/bin/true"]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let start = Instant::now();
    let status = c.status().expect("connd runs");
    let elapsed = start.elapsed();
    assert!(status.success(), "connd {mode} failed");
    elapsed
}

/// SIGTERM to exit, once, `after` the workload printed that it runs.
fn sigterm_to_exit(dir: &Path, after: Duration) -> Duration {
    let mut child = Command::new(CONND)
        .args(["run", "--config-dir"])
        .arg(dir)
        .args(["--", "sh", "-c", "echo ready; exec sleep 30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("connd runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    std::thread::sleep(after);
    let start = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    let elapsed = start.elapsed();
    assert_eq!(status.code(), Some(143), "connd run exits 128+15");
    elapsed
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args.iter().position(|a| a == "--runs").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(200);
    let tmp = tempfile::tempdir().unwrap();
    write_dir(tmp.path());

    // Warm the page cache and the binary.
    for _ in 0..5 {
        wall(tmp.path(), "exec");
        wall(tmp.path(), "run");
    }

    let mut exec = Vec::with_capacity(runs);
    let mut run = Vec::with_capacity(runs);
    let mut added = Vec::with_capacity(runs);
    for _ in 0..runs {
        let e = wall(tmp.path(), "exec");
        let r = wall(tmp.path(), "run");
        exec.push(e);
        run.push(r);
        added.push((r.as_secs_f64() - e.as_secs_f64()) * 1000.0);
    }
    exec.sort();
    run.sort();
    added.sort_by(f64::total_cmp);
    let at = |p: f64| added[((added.len() - 1) as f64 * p).round() as usize];
    println!("connd exec -- /bin/true   ({runs} runs): median {}, p95 {}", ms(pct(&exec, 0.5)), ms(pct(&exec, 0.95)));
    println!("connd run -- /bin/true    ({runs} runs): median {}, p95 {}", ms(pct(&run, 0.5)), ms(pct(&run, 0.95)));
    println!("added by run (paired)     ({runs} runs): median {:.2} ms, p95 {:.2} ms", at(0.5), at(0.95));

    for (label, after, n) in [("after 300 ms", 300, runs.min(100)), ("at once", 0, runs)] {
        let mut term: Vec<Duration> =
            (0..n).map(|_| sigterm_to_exit(tmp.path(), Duration::from_millis(after))).collect();
        term.sort();
        println!(
            "SIGTERM to exit, {label:<12} ({n} runs): median {}, p95 {}, max {}",
            ms(pct(&term, 0.5)),
            ms(pct(&term, 0.95)),
            ms(*term.last().unwrap())
        );
    }
}
