//! Files (docs/files.md) figures, timed from outside as a workload sees them:
//! - from a kubelet `..data` swap of the config directory to the re-rendered file on disk,
//!   under `connd serve` (median, p99): the reload latency of a file;
//! - `connd render` of 100 files from 50 local connections, wall time (median, p95);
//! - the wall time 10 files add to `connd exec -- /bin/true` on the same directory: the
//!   two are run alternately, and the figure is the median (and p95) of the paired
//!   differences.
//!
//! Run: `cargo bench --bench files` (add `-- --runs N` to change the repetitions, and
//! `--only swap|render|exec` for one figure).

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONND: &str = env!("CARGO_BIN_EXE_connd");

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `connections` local database connections, and `files` files over them: a toml
/// (as configurations.file), then json, yaml, dotenv, properties and a DSN template.
fn config(connections: usize, files: usize, marker: &str) -> Vec<(String, String)> {
    let mut comp = String::from("schemaVersion: 1.2\ndependencies:\n  connectionReferences:\n");
    let mut conns = String::from("kind: Component\nproject: bench\nname: bench-component\n");
    for i in 0..connections {
        comp.push_str(&format!("    - name: db-{i}\n      resourceRef: database:pg/db{i}\n"));
        conns.push_str(&format!(
            "---\nkind: Connection\nid: {i:08x}-0000-4000-8000-{i:012x}\nname: db-{i}\nproject: bench\n\
             parameters:\n  HostName: db{i}.bench.internal\n  Port: \"5432\"\n  Username: user-{i}\n  \
             Password: \"p@ss-{i}-{marker}\"\n  DatabaseName: db{i}\n"
        ));
    }
    let formats = ["toml", "json", "yaml", "dotenv", "properties", "template"];
    let mut docs = String::new();
    for f in 0..files {
        let c = f % connections;
        let format = formats[f % formats.len()];
        docs.push_str(&format!("---\nkind: File\npath: /out/{f}.{format}\nformat: {format}\n"));
        if format == "template" {
            docs.push_str(&format!(
                "template: |\n  DATABASE_URL=postgres://{{{{ connections[\"db-{c}\"].Username | urlencode }}}}:{{{{ connections[\"db-{c}\"].Password | urlencode }}}}@{{{{ connections[\"db-{c}\"].HostName }}}}/x\n"
            ));
        } else {
            let name = |n: &str| if format == "dotenv" { n.to_uppercase() } else { format!("db.{n}") };
            docs.push_str("values:\n");
            for key in ["HostName", "Port", "Username", "Password"] {
                docs.push_str(&format!(
                    "  - name: {}\n    valueFrom: {{ connectionRef: {{ name: db-{c}, key: {key} }} }}\n",
                    name(key)
                ));
            }
        }
    }
    vec![("component.yaml".into(), comp), ("connections.yaml".into(), conns), ("files.yaml".into(), docs)]
}

fn write_plain(dir: &Path, files: &[(String, String)]) {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// A config directory as the kubelet writes a ConfigMap volume.
struct Kubelet {
    dir: PathBuf,
    serial: u32,
}

impl Kubelet {
    fn new(dir: &Path, files: &[(String, String)]) -> Kubelet {
        let mut k = Kubelet { dir: dir.to_path_buf(), serial: 0 };
        let folder = k.folder(files);
        symlink(&folder, dir.join("..data")).unwrap();
        for (name, _) in files {
            symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
        }
        k
    }

    fn folder(&mut self, files: &[(String, String)]) -> String {
        self.serial += 1;
        let folder = format!("..2026_01_01_00_00_00.{}", self.serial);
        std::fs::create_dir(self.dir.join(&folder)).unwrap();
        write_plain(&self.dir.join(&folder), files);
        folder
    }

    /// The swap itself; returns the instant of the rename.
    fn swap(&mut self, files: &[(String, String)]) -> Instant {
        let old = format!("..2026_01_01_00_00_00.{}", self.serial);
        let folder = self.folder(files);
        symlink(&folder, self.dir.join("..data_tmp")).unwrap();
        let at = Instant::now();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        let _ = std::fs::remove_dir_all(self.dir.join(old));
        at
    }
}

/// A temporary folder on tmpfs (`/dev/shm`) where there is one, as the sidecar's
/// in-memory emptyDir is; else the default temporary folder.
fn memory_dir() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

fn swap_to_file(runs: usize, tmp: &tempfile::TempDir) -> Vec<Duration> {
    let (dir, root) = (tmp.path().join("config"), tmp.path().join("root"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    let mut kubelet = Kubelet::new(&dir, &config(10, 10, "m0"));
    let mut child = Command::new(CONND)
        .args(["serve", "--config-dir"])
        .arg(&dir)
        .arg("--socket")
        .arg(tmp.path().join("connd.sock"))
        .arg("--files-root")
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The template of connection 5 holds the marker: it is what the timing waits for.
    let target = root.join("out/5.template");
    let wait_for = |marker: &str, since: Instant| -> Duration {
        loop {
            if std::fs::read_to_string(&target).is_ok_and(|t| t.contains(marker)) {
                return since.elapsed();
            }
            assert!(since.elapsed() < Duration::from_secs(10), "never re-rendered");
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    wait_for("m0", Instant::now());
    let mut out = Vec::with_capacity(runs);
    for i in 1..=runs {
        let marker = format!("m{i}");
        let at = kubelet.swap(&config(10, 10, &marker));
        out.push(wait_for(&marker, at));
        // Apart from each other by more than the reloader's debounce.
        std::thread::sleep(Duration::from_millis(30));
    }
    let _ = child.kill();
    let _ = child.wait();
    out
}

fn wall(args: &[&str]) -> Duration {
    let mut c = Command::new(CONND);
    c.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    let start = Instant::now();
    let out = c.output().unwrap();
    let elapsed = start.elapsed();
    assert!(out.status.success(), "connd {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    elapsed
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut runs = 100;
    let mut only = None;
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().and_then(|n| n.parse().ok()).unwrap_or(runs);
        }
        if a == "--only" {
            only = args.next();
        }
    }
    let wanted = |name: &str| only.as_deref().map_or(true, |o| o == name);

    for (what, tmp) in [("tmpfs", memory_dir()), ("the default temporary folder", tempfile::tempdir().unwrap())] {
        if !wanted("swap") {
            break;
        }
        let mut swaps = swap_to_file(runs, &tmp);
        swaps.sort();
        println!(
            "kubelet ..data swap -> re-rendered file ({runs} swaps, serve, 10 files, on {what}): p50 {}, p99 {}, max {}",
            ms(pct(&swaps, 0.5)),
            ms(pct(&swaps, 0.99)),
            ms(*swaps.last().unwrap())
        );
    }

    // Files on tmpfs, as in the sidecar's in-memory emptyDir.
    let tmp = memory_dir();
    let (dir, root) = (tmp.path().join("config"), tmp.path().join("root"));
    std::fs::create_dir_all(&dir).unwrap();
    let r = root.display().to_string();
    if wanted("render") {
        write_plain(&dir, &config(50, 100, "x"));
        let d = dir.display().to_string();
        let mut renders: Vec<Duration> =
            (0..runs).map(|_| wall(&["render", "--config-dir", &d, "--files-root", &r])).collect();
        renders.sort();
        println!(
            "connd render, 100 files from 50 connections (unchanged after the first): p50 {}, p95 {}",
            ms(pct(&renders, 0.5)),
            ms(pct(&renders, 0.95))
        );
        let mut fresh: Vec<Duration> = (0..runs)
            .map(|_| {
                let _ = std::fs::remove_dir_all(&root);
                wall(&["render", "--config-dir", &d, "--files-root", &r])
            })
            .collect();
        fresh.sort();
        println!(
            "connd render, 100 files from 50 connections (all written): p50 {}, p95 {}",
            ms(pct(&fresh, 0.5)),
            ms(pct(&fresh, 0.95))
        );
    }

    if wanted("exec") {
        // exec with 10 files against the same directory without them.
        let with = tmp.path().join("with");
        let without = tmp.path().join("without");
        std::fs::create_dir_all(&with).unwrap();
        std::fs::create_dir_all(&without).unwrap();
        let files = config(10, 10, "x");
        write_plain(&with, &files);
        write_plain(&without, &files[..2]);
        let (w, wo) = (with.display().to_string(), without.display().to_string());
        let mut diffs: Vec<f64> = (0..runs)
            .map(|_| {
                let _ = std::fs::remove_dir_all(&root);
                let a = wall(&["exec", "--config-dir", &w, "--files-root", &r, "--", "/bin/true"]);
                let b = wall(&["exec", "--config-dir", &wo, "--files-root", &r, "--", "/bin/true"]);
                a.as_secs_f64() - b.as_secs_f64()
            })
            .collect();
        diffs.sort_by(f64::total_cmp);
        let at = |p: f64| diffs[((diffs.len() - 1) as f64 * p).round() as usize] * 1000.0;
        println!(
            "exec -- /bin/true, 10 files written minus none ({runs} pairs): median {:+.2} ms, p95 {:+.2} ms",
            at(0.5),
            at(0.95)
        );
    }
}
