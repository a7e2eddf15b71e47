//! `serve` and `run` hold secrets in memory, so they are non-dumpable (docs/commands.md): another
//! process of the same uid cannot read their `/proc/PID/environ` or `/proc/PID/mem`, and
//! the kernel hands their `/proc/PID` files to root; `run`'s workload stays dumpable.
//! connd runs as uid 65534 here (setpriv), so that "another process of the same uid"
//! is a real, unprivileged one; the tests themselves run as root.

use crate::support::kubelet::AtomicDir;
use crate::support::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NOBODY: &str = "65534";

/// `connd ARGS` as uid/gid 65534.
fn connd_as_nobody(args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--", connd_bin()]).args(args);
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
    cmd
}

/// Whether a process of uid 65534, other than `pid`, can read `/proc/PID/<file>`.
fn readable_by_nobody(pid: u32, file: &str) -> bool {
    Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--", "head", "-c", "1"])
        .arg(format!("/proc/{pid}/{file}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("setpriv runs")
        .success()
}

/// The owner uid of `/proc/PID/<file>`: root's for a non-dumpable process.
fn owner(pid: u32, file: &str) -> u32 {
    std::fs::metadata(format!("/proc/{pid}/{file}")).expect("the process lives").uid()
}

/// A config directory that uid 65534 can read.
fn readable_dir() -> AtomicDir {
    let d = AtomicDir::new(&refs(&files("5432")));
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests switch uid with setpriv, so they must run as root (CI does)"
    );
}

#[test]
fn serve_cannot_be_read_by_another_process_of_its_uid() {
    require_root();
    let d = readable_dir();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = tmp.path().join("connd.sock");
    let dir = d.path().display().to_string();
    let serve = connd_as_nobody(&["serve", "--config-dir", &dir, "--socket", socket.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let serve = Killed(serve);
    let pid = serve.0.id();
    // The socket is bound well after the flag is set, at the start of main.
    let start = Instant::now();
    while !socket.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "connd serve never bound its socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(owner(pid, "status"), 0, "the kernel gives a non-dumpable process's /proc files to root");
    assert!(!readable_by_nobody(pid, "environ"), "another uid-65534 process read serve's environment");
    assert!(!readable_by_nobody(pid, "mem"), "another uid-65534 process read serve's memory");
}

#[test]
fn run_is_protected_but_its_workload_is_not() {
    require_root();
    let d = readable_dir();
    let dir = d.path().display().to_string();
    let script = "echo \"workload=$$\"; exec sleep 60";
    let mut run = connd_as_nobody(&["run", "--config-dir", &dir, "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = run.stdout.take().unwrap();
    let run = Killed(run);
    let connd = run.0.id();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let workload: u32 = line.trim().strip_prefix("workload=").and_then(|p| p.parse().ok()).expect("the workload's pid");
    assert_eq!(owner(connd, "status"), 0, "connd run is non-dumpable");
    assert!(!readable_by_nobody(connd, "environ"), "another uid-65534 process read run's environment");
    // execve made the workload dumpable again: its files are its uid's, its
    // environment readable by its uid, as for any process.
    assert_eq!(owner(workload, "status"), 65534, "the workload is dumpable");
    assert!(readable_by_nobody(workload, "environ"), "the workload's own uid cannot read its environment");
    assert!(Path::new(&format!("/proc/{workload}")).exists());
}
