//! `connd run` and the workload's process group (docs/commands.md): whenever the workload stops
//! (a restart, connd's SIGTERM, its own exit), what it left running in its group is
//! stopped too, with SIGKILL for what ignores the stop signal; a process that `setsid`s
//! away is out of reach. The behaviour systemd's `KillMode=control-group` has.

use crate::support::kubelet::AtomicDir;
use crate::support::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// How long any expected event may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// `connd run --config-dir DIR --change-debounce 50ms ARGS... -- sh -c SCRIPT`.
fn start(dir: &std::path::Path, args: &[&str], script: &str) -> Supervised {
    Supervised::start(dir, &[&["--change-debounce", "50ms"][..], args].concat(), script).patience(PATIENCE)
}

/// Whether `pid` runs: exists and is not a zombie (a zombie holds no port or file).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rfind(')').and_then(|i| stat[i + 2..].chars().next()).is_some_and(|state| state != 'Z'),
        Err(_) => false,
    }
}

#[track_caller]
fn assert_ends(pid: i32, what: &str, s: &Supervised) {
    let deadline = Instant::now() + PATIENCE;
    while running(pid) {
        assert!(Instant::now() < deadline, "{what} (pid {pid}) still runs:\n{}", s.transcript());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills `pid` when dropped: for processes a test expects to survive.
struct Reap(i32);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

fn dir(port: &str) -> AtomicDir {
    AtomicDir::new(&refs(&files(port)))
}

/// Each start leaves a `sleep` in its group, says both pids, and waits for it.
const FORKS: &str = "sleep 100 & echo \"start port=$CHOREO_MAIN_DB_PORT shell=$$ grandchild=$!\"; wait";

#[test]
fn a_restart_stops_the_old_workload_s_children_too() {
    let mut d = dir("5432");
    let mut s = start(d.path(), &[], FORKS);
    s.expect("start port=5432");
    let old = s.pid_after("grandchild");
    let _guard = Reap(old);
    assert!(running(old));
    d.update(&refs(&files("6543")));
    s.expect("start port=6543");
    // Stopped before the new workload started: nothing of the old one holds a port.
    assert!(!running(old), "the old workload's child outlived the restart:\n{}", s.transcript());
    s.expect("stopping what the workload left running in its process group");
    let new = s.seen().iter().find(|l| l.contains("start port=6543")).unwrap().clone();
    let new: i32 = new.split("grandchild=").nth(1).unwrap().trim().parse().unwrap();
    let _guard2 = Reap(new);
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait(), 143, "{}", s.transcript());
    assert_ends(new, "the last workload's child", &s);
}

#[test]
fn a_child_that_ignores_the_stop_signal_gets_sigkill_after_the_stop_timeout() {
    let d = dir("5432");
    let script = "sh -c 'trap \"\" TERM; exec sleep 100' & echo \"grandchild=$!\"; wait";
    let mut s = start(d.path(), &["--stop-timeout", "500ms"], script);
    let stubborn = s.pid_after("grandchild");
    let _guard = Reap(stubborn);
    // The trap is set once the status shows SIGTERM ignored (bit 15 of SigIgn).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{stubborn}/status")).unwrap_or_default();
        let ignored = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).map(str::trim).unwrap_or("0");
        if u64::from_str_radix(ignored, 16).unwrap_or(0) & (1 << 14) != 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the grandchild never ignored SIGTERM: {status}");
        std::thread::sleep(Duration::from_millis(10));
    }
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait(), 143, "the workload's own end:\n{}", s.transcript());
    assert!(!running(stubborn), "the child that ignores SIGTERM outlived connd:\n{}", s.transcript());
    s.expect("did not stop in time; sending SIGKILL");
}

#[test]
fn the_workload_s_own_exit_stops_what_it_left_behind() {
    let d = dir("5432");
    let mut s = start(d.path(), &[], "sleep 100 & echo \"grandchild=$!\"; exit 3");
    let left = s.pid_after("grandchild");
    let _guard = Reap(left);
    assert_eq!(s.wait(), 3, "the workload's code:\n{}", s.transcript());
    assert!(!running(left), "the workload's child outlived it and connd:\n{}", s.transcript());
}

#[test]
fn a_process_that_leaves_the_group_with_setsid_is_out_of_reach() {
    // Documented in the README: a new session is a new group, which connd does not track.
    let d = dir("5432");
    let script = "setsid sleep 100 & echo \"escaped=$!\"; sleep 100 & echo \"grandchild=$!\"; wait";
    let mut s = start(d.path(), &[], script);
    let escaped = s.pid_after("escaped");
    let _guard = Reap(escaped);
    let stayed = s.pid_after("grandchild");
    let _guard2 = Reap(stayed);
    // setsid has run once the process leads a session of its own.
    let deadline = Instant::now() + PATIENCE;
    while nix::unistd::getsid(Some(Pid::from_raw(escaped))).ok() != Some(Pid::from_raw(escaped)) {
        assert!(Instant::now() < deadline, "setsid never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait(), 143, "{}", s.transcript());
    assert!(!running(stayed), "the child in the group is stopped:\n{}", s.transcript());
    assert!(running(escaped), "the process in its own session is not connd's to stop");
}

#[test]
fn a_stop_timeout_beyond_the_clock_is_not_a_crash() {
    // A deadline of now + 3e15 h once overflowed the clock when SIGTERM came: a panic,
    // which the release build turns into an abort that leaves the workload behind.
    let d = dir("5432");
    let script = "trap 'echo got-TERM; exit 0' TERM; echo ready; while :; do sleep 0.05; done";
    let mut s = start(d.path(), &["--stop-timeout", "3000000000000000h"], script);
    s.expect("ready");
    s.signal(Signal::SIGTERM);
    s.expect("got-TERM");
    assert_eq!(s.wait(), 0, "the workload's own code after its trap:\n{}", s.transcript());
}

#[test]
fn new_values_the_kernel_would_refuse_leave_the_running_workload_alone() {
    let mut d = dir("5432");
    let mut s = start(d.path(), &[], "echo \"start pid=$$ port=$CHOREO_MAIN_DB_PORT\"; exec sleep 100");
    let first = s.pid_after("pid");
    d.update(&refs(&files(&"9".repeat(200_000))));
    s.expect("not restarting the workload, it keeps its current values");
    s.expect("variable CHOREO_MAIN_DB_PORT is 200020 bytes");
    assert!(running(first), "the workload was stopped for values it cannot be given:\n{}", s.transcript());
    // A change it can take restarts it as usual.
    d.update(&refs(&files("6543")));
    s.expect("port=6543");
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait(), 143, "{}", s.transcript());
}

/// connd SIGKILLed (an OOM kill, `kill -9`) cannot stop its workload itself: the kernel's
/// parent-death signal does, so no workload runs on unsupervised with stale values.
#[test]
fn the_workload_dies_with_a_sigkilled_connd() {
    let d = dir("5432");
    // The workload ignores SIGTERM: only SIGKILL, which connd can no longer send, ends it.
    let mut s = start(d.path(), &[], "trap '' TERM; echo \"workload=$$\"; while :; do sleep 1; done");
    let workload = s.pid_after("workload");
    let _guard = Reap(workload);
    assert!(running(workload));
    s.signal(Signal::SIGKILL);
    assert_eq!(s.child.wait().expect("connd waited").code(), None);
    assert_ends(workload, "the workload of a SIGKILLed connd", &s);
}
