//! Whole-process figures for the one-shot commands, timed as a user would see them, each
//! against its baseline measured in the same run (the runs alternate, so that drift on a
//! busy machine hits both alike; ratios are medians of per-pair ratios):
//! - `connd exec` on 50 local connections running `/bin/true`, against `env A=1 /bin/true`
//!   (median and p95 wall time, peak RSS); target at most 1.5x and 6 MiB;
//! - `connd check` on a directory of 10,000 connections (median wall time, peak RSS);
//!   target at most 150 ms and 48 MiB.
//!
//! Run: `cargo bench --bench startup` (add `-- --runs N` to change the repetitions of the
//! exec figure; check runs a tenth as many). To time another build of connd, such as the
//! static musl one the image ships, name it in `CONND_BENCH_BIN`. To compare with another
//! build (today's main, say), name it in `CONND_BENCH_BASE`: it then joins every pair.
//! Peak RSS is the child's `ru_maxrss`, measured in a fresh process per command so that
//! no other child's figure is mixed in.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The exec figure's targets: a ratio to `env A=1 /bin/true`, and peak RSS in KiB.
const EXEC_RATIO_TARGET: f64 = 1.5;
const EXEC_RSS_TARGET_KIB: u64 = 6 * 1024;
/// The check figure's targets: median wall time, and peak RSS in KiB.
const CHECK_TARGET: Duration = Duration::from_millis(150);
const CHECK_RSS_TARGET_KIB: u64 = 48 * 1024;

/// The binary timed: this build's, or `CONND_BENCH_BIN`.
fn connd() -> String {
    std::env::var("CONND_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_connd").to_owned())
}

/// The build compared with, if any: `CONND_BENCH_BASE`.
fn base() -> Option<String> {
    std::env::var("CONND_BENCH_BASE").ok().filter(|b| !b.is_empty())
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

/// The wall time of one run of `argv`, which must succeed.
fn time_one(argv: &[&str]) -> Duration {
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..]).stdout(Stdio::null()).stderr(Stdio::null());
    let start = Instant::now();
    let status = c.status().expect("command runs");
    let elapsed = start.elapsed();
    assert!(status.success(), "command failed: {c:?}");
    elapsed
}

/// `runs` rounds, each running every command of `commands` once in turn: the times of
/// each command, in round order.
fn rounds(runs: usize, commands: &[Vec<&str>]) -> Vec<Vec<Duration>> {
    let mut times = vec![Vec::with_capacity(runs); commands.len()];
    for _ in 0..runs {
        for (argv, t) in commands.iter().zip(&mut times) {
            t.push(time_one(argv));
        }
    }
    times
}

fn median<T: PartialOrd + Copy>(values: &[T]) -> T {
    pct(values, 0.5)
}

fn pct<T: PartialOrd + Copy>(values: &[T], p: f64) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The median of the per-round ratios `a[i] / b[i]`.
fn paired_ratio(a: &[Duration], b: &[Duration]) -> f64 {
    let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a.as_secs_f64() / b.as_secs_f64()).collect();
    median(&ratios)
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

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// The 10,000-connection directory gives 50,000 variables, about 3 MB of environment: more
/// than a default 8 MiB stack allows (ARG_MAX is a quarter of it), so `check` rightly
/// refuses it (78, naming the limit and `ulimit -s`). The stack limit is raised to 16 MiB
/// (ARG_MAX 4 MiB) for this process and the children it times, so that the figure is the
/// loader's. Nothing in connd recurses with the directory's size.
fn raise_stack_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    const WANTED: u64 = 16 * 1024 * 1024;
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_STACK) {
        if soft < WANTED && hard >= WANTED {
            let _ = setrlimit(Resource::RLIMIT_STACK, WANTED, hard);
        }
    }
}

/// `connd exec` on 50 connections against `env A=1 /bin/true` (and the base build).
fn exec_figure(bin: &str, base: Option<&str>, runs: usize) {
    let small = tempfile::tempdir().unwrap();
    write_dir(small.path(), 50, 10);
    let dir = small.path().to_str().unwrap();
    let exec = |b| vec![b, "exec", "--config-dir", dir, "--", "/bin/true"];
    let mut commands = vec![vec!["env", "A=1", "/bin/true"], exec(bin)];
    commands.extend(base.map(exec));
    // Warm the page cache and check the setup works.
    rounds(5, &commands);
    let times = rounds(runs, &commands);
    let (env, connd) = (&times[0], &times[1]);
    let ratio = paired_ratio(connd, env);
    println!("exec, 50 local connections, {runs} rounds:");
    println!("  env A=1 /bin/true          median {}  p95 {}", ms(median(env)), ms(pct(env, 0.95)));
    println!("  connd exec -- /bin/true    median {}  p95 {}", ms(median(connd)), ms(pct(connd, 0.95)));
    println!(
        "  connd / env, paired        {ratio:.2}x   (target: at most {EXEC_RATIO_TARGET}x: {})",
        verdict(ratio <= EXEC_RATIO_TARGET)
    );
    if let Some(base_times) = times.get(2) {
        println!("  base exec -- /bin/true     median {}  p95 {}", ms(median(base_times)), ms(pct(base_times, 0.95)));
        println!("  base / env, paired         {:.2}x", paired_ratio(base_times, env));
        println!("  connd / base, paired       {:.2}x", paired_ratio(connd, base_times));
    }
    let rss_env = peak_rss_kib(&["env", "A=1", "/bin/true"]);
    let rss = peak_rss_kib(&exec(bin));
    println!(
        "  peak RSS: env {rss_env} KiB, connd exec {rss} KiB (target: at most {EXEC_RSS_TARGET_KIB} KiB: {})",
        verdict(rss <= EXEC_RSS_TARGET_KIB)
    );
    if let Some(base) = base {
        println!("  peak RSS: base exec {} KiB", peak_rss_kib(&exec(base)));
    }
}

/// `connd check` on 10,000 connections, against the 150 ms bound (and the base build).
fn check_figure(bin: &str, base: Option<&str>, runs: usize) {
    let big = tempfile::tempdir().unwrap();
    write_dir(big.path(), 10_000, 500);
    let dir = big.path().to_str().unwrap();
    let check = |b| vec![b, "check", "--config-dir", dir];
    let mut commands = vec![check(bin)];
    commands.extend(base.map(check));
    rounds(1, &commands);
    let times = rounds(runs, &commands);
    let connd = &times[0];
    let m = median(connd);
    println!("check, 10,000 connections, {runs} rounds:");
    println!(
        "  connd check                median {}  max {}  (target: at most {}: {})",
        ms(m),
        ms(pct(connd, 1.0)),
        ms(CHECK_TARGET),
        verdict(m <= CHECK_TARGET)
    );
    if let Some(base_times) = times.get(1) {
        println!("  base check                 median {}  max {}", ms(median(base_times)), ms(pct(base_times, 1.0)));
        println!("  connd / base, paired       {:.2}x", paired_ratio(connd, base_times));
    }
    let rss = peak_rss_kib(&check(bin));
    println!(
        "  peak RSS: connd check {rss} KiB (target: at most {CHECK_RSS_TARGET_KIB} KiB: {})",
        verdict(rss <= CHECK_RSS_TARGET_KIB)
    );
    if let Some(base) = base {
        println!("  peak RSS: base check {} KiB", peak_rss_kib(&check(base)));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--rss-of") {
        return rss_of(&args[1..]);
    }
    raise_stack_limit();
    let bin = connd();
    let base = base();
    println!("timing {bin}{}", base.as_deref().map(|b| format!(" against {b}")).unwrap_or_default());
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    exec_figure(&bin, base.as_deref(), runs);
    check_figure(&bin, base.as_deref(), (runs / 10).max(5));
}
