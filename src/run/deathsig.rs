//! The workload dies with connd: a workload `run` starts gets SIGKILL from the kernel
//! when connd itself dies, even of SIGKILL, where connd can stop nothing
//! (`PR_SET_PDEATHSIG`, docs/commands.md). Without it an OOM kill or a `kill -9` of connd
//! leaves the workload running unsupervised, its values never renewed.
//!
//! This is the one module of connd allowed `unsafe`: `pre_exec` runs code in the forked
//! child before `execve`, which std can only offer as an `unsafe` function.
//!
//! Boundary: only the workload's main process is covered; processes it starts itself are
//! its own (the kernel offers no death signal for a whole group).

#![allow(unsafe_code)]

use nix::sys::signal::{raise, Signal};
use nix::unistd::{getppid, Pid};
use std::io::Read;
use std::os::unix::process::CommandExt;

/// Makes the process `cmd` starts receive SIGKILL when the thread that starts it ends.
/// Call it on the thread that lives as long as connd (run mode's only thread, the main
/// one): the kernel ties the signal to the forking thread, not to the process.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    let parent = Pid::this();
    let hook = move || -> std::io::Result<()> {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        // connd may have died between the fork and the prctl: the signal was then never
        // armed for us, and our parent is now a reaper. Die as the signal would have made us.
        if getppid() != parent {
            raise(Signal::SIGKILL)?;
        }
        Ok(())
    };
    // SAFETY: `pre_exec` requires the closure to be async-signal-safe, since it runs in the
    // child between fork and exec, where another thread of the parent may have held a lock.
    // It calls only `prctl(2)`, `getppid(2)` and `raise(3)` (which is `kill(getpid())` in the
    // signal-safe list of signal-safety(7)); it allocates nothing (nix's `Errno` is a plain
    // integer converted into `io::Error` without allocating), takes no lock and touches no
    // memory shared with the parent besides the copied `Pid`.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Whether the kernel would refuse to execute `path` as a program (ENOEXEC): it starts
/// neither with an ELF header nor with `#!`, and no binfmt_misc handler is registered
/// that might take it. A `pre_exec` hook makes std use execvp, which would run such a
/// file with /bin/sh; the caller refuses it first.
pub fn kernel_refuses(path: &std::path::Path) -> bool {
    let mut head = [0u8; 4];
    let Ok(n) = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)) else { return false };
    let head = &head[..n];
    if head.starts_with(b"\x7fELF") || head.starts_with(b"#!") {
        return false;
    }
    // Other formats may have a binfmt_misc handler: then the kernel decides.
    let handlers = std::fs::read_dir("/proc/sys/fs/binfmt_misc").map_or(0, |d| {
        d.filter_map(Result::ok).filter(|e| !matches!(e.file_name().to_str(), Some("register" | "status"))).count()
    });
    handlers == 0
}
