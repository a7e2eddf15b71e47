//! Whole-process figures for the one-shot commands, timed as a user would see them:
//! - `connd exec` on 50 local connections running `/bin/true`, against `env A=1 /bin/true`
//!   (median and p95 wall time, peak RSS);
//! - `connd check` on a directory of 10,000 connections (median wall time).
//!
//! Run: `cargo bench --bench startup` (add `-- --runs N` to change the repetitions). To time
//! another build of connd, such as the static musl one the image ships, name it in
//! `CONND_BENCH_BIN`.
//! Peak RSS is the child's `ru_maxrss`, measured in a fresh process per command so that
//! no other child's figure is mixed in.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary timed: this build's, or `CONND_BENCH_BIN`.
fn connd() -> String {
    std::env::var("CONND_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_connd").to_owned())
}

fn write_dir(dir: &Path, connections: usize, per_file: usize) {
    let mut comp = String::from("schemaVersion: 1.2\ndependencies:\n  connectionReferences:\n");
    for i in 0..connections {
        comp.push_str(&format!("    - name: service-{i}\n      resourceRef: service:/Bench/svc{i}/v1/ep/PUBLIC\n"));
    }
    std::fs::write(dir.join("component.yaml"), comp).unwrap();
    std::fs::write(dir.join("identity.yaml"), "kind: Component\nproject: bench\nname: bench-component\n").unwrap();
    std::fs::write(dir.join("api-key"), "k3y-from-a-file\n").unwrap();
    for (f, chunk) in (0..connections).collect::<Vec<_>>().chunks(per_file).enumerate() {
        let mut text = String::new();
        for i in chunk {
            text.push_str(&format!(
                "---\nkind: Connection\nid: {:08x}-0000-4000-8000-{:012x}\nname: service-{i}\nproject: bench\nvisibility: project\n\
                 resourceRef: service:/Bench/svc{i}/v1/ep/PUBLIC\nsecurity: oauth2\nparameters:\n  \
                 ServiceURL: https://svc{i}.bench.internal/v1\n  TokenURL: https://sts.bench.internal/token\n  \
                 ConsumerKey: client-{i}\n  ConsumerSecret: {{ value: secret-{i} }}\n  ChoreoAPIKey: {{ file: api-key }}\n",
                i, i
            ));
        }
        std::fs::write(dir.join(format!("connections-{f:04}.yaml")), text).unwrap();
    }
}

fn time_runs(runs: usize, mut cmd: impl FnMut() -> Command) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let mut c = cmd();
            c.stdout(Stdio::null()).stderr(Stdio::null());
            let start = Instant::now();
            let status = c.status().expect("command runs");
            let elapsed = start.elapsed();
            assert!(status.success(), "command failed: {c:?}");
            elapsed
        })
        .collect();
    times.sort();
    times
}

fn pct(times: &[Duration], p: f64) -> Duration {
    times[((times.len() - 1) as f64 * p).round() as usize]
}

/// Peak RSS in KiB of `args` run as a child of a fresh copy of this bench.
fn peak_rss_kib(args: &[&str]) -> u64 {
    let out = Command::new(std::env::current_exe().unwrap()).arg("--rss-of").args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn rss_of(args: &[String]) {
    let status = Command::new(&args[0]).args(&args[1..]).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    println!("{}", usage.max_rss());
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// The 10,000-connection directory gives 50,000 variables, about 3 MB of environment: more
/// than a default 8 MiB stack allows (ARG_MAX is a quarter of it), so `check` rightly
/// refuses it. The stack limit is raised to 16 MiB (ARG_MAX 4 MiB) for this process and the
/// children it times, so that the figure is the loader's, as before.
fn raise_stack_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    const WANTED: u64 = 16 * 1024 * 1024;
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_STACK) {
        if soft < WANTED && hard >= WANTED {
            let _ = setrlimit(Resource::RLIMIT_STACK, WANTED, hard);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--rss-of") {
        return rss_of(&args[1..]);
    }
    raise_stack_limit();
    let bin = connd();
    println!("timing {bin}");
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);

    let small = tempfile::tempdir().unwrap();
    write_dir(small.path(), 50, 10);
    let dir = small.path().to_str().unwrap().to_owned();
    // Warm the page cache and check the setup works.
    time_runs(5, || {
        let mut c = Command::new(&bin);
        c.args(["exec", "--config-dir", &dir, "--", "/bin/true"]);
        c
    });

    // Interleave the two commands so that drift on a busy machine hits both alike.
    let mut baseline = Vec::new();
    let mut connd = Vec::new();
    for _ in 0..runs {
        baseline.extend(time_runs(1, || {
            let mut c = Command::new("env");
            c.args(["A=1", "/bin/true"]);
            c
        }));
        connd.extend(time_runs(1, || {
            let mut c = Command::new(&bin);
            c.args(["exec", "--config-dir", &dir, "--", "/bin/true"]);
            c
        }));
    }
    baseline.sort();
    connd.sort();
    let ratio = pct(&connd, 0.5).as_secs_f64() / pct(&baseline, 0.5).as_secs_f64();
    println!("exec, 50 local connections, {runs} runs each:");
    println!("  env A=1 /bin/true          median {}  p95 {}", ms(pct(&baseline, 0.5)), ms(pct(&baseline, 0.95)));
    println!("  connd exec -- /bin/true    median {}  p95 {}", ms(pct(&connd, 0.5)), ms(pct(&connd, 0.95)));
    println!("  ratio of medians           {ratio:.2}x   (target: at most 1.5x)");
    let rss_env = peak_rss_kib(&["env", "A=1", "/bin/true"]);
    let rss_connd = peak_rss_kib(&[bin.as_str(), "exec", "--config-dir", &dir, "--", "/bin/true"]);
    println!("  peak RSS: env {} KiB, connd exec {} KiB (target: at most 8192 KiB)", rss_env, rss_connd);

    let big = tempfile::tempdir().unwrap();
    write_dir(big.path(), 10_000, 500);
    let big_dir = big.path().to_str().unwrap().to_owned();
    let check = time_runs(10, || {
        let mut c = Command::new(&bin);
        c.args(["check", "--config-dir", &big_dir]);
        c
    });
    let rss_check = peak_rss_kib(&[bin.as_str(), "check", "--config-dir", &big_dir]);
    println!("check, 10,000 connections, 10 runs:");
    println!(
        "  connd check                median {}  max {}  (target: at most 300 ms)",
        ms(pct(&check, 0.5)),
        ms(pct(&check, 1.0))
    );
    println!("  peak RSS {rss_check} KiB");
}
