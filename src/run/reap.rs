//! Reaping: the one place where run mode collects exited children. Every exit is taken
//! with `waitpid(-1)` here and nowhere else, so orphans (re-parented to connd because it
//! is PID 1, or a child subreaper) never become zombies, and the workload's own status
//! is handed to whoever waits for it instead of being lost to a stray reap.
//!
//! Boundary: nothing else in the process may wait for children while a `Reaper` lives
//! (no `tokio::process`, no `std::process::Child::wait`); run mode spawns with
//! `std::process::Command` and keeps only the pid.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, Pid};
use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct Reaper {
    /// Wakes the reaper when some child changed state. Signals coalesce, so each wake-up
    /// reaps until nothing is left.
    sigchld: Signal,
}

impl Reaper {
    /// Listens for SIGCHLD (create it before spawning, so no exit goes unnoticed) and,
    /// unless connd is PID 1, becomes a child subreaper: orphans of the workload are then
    /// re-parented to connd rather than to the host's init, and reaped here.
    pub fn new() -> std::io::Result<Reaper> {
        let sigchld = signal(SignalKind::child())?;
        if getpid().as_raw() != 1 {
            if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
                tracing::warn!(error = e.desc(), "cannot become a child subreaper; orphans of the workload go to init");
            }
        }
        Ok(Reaper { sigchld })
    }

    /// Waits until `child` exits and returns how it ended, reaping every other child that
    /// exits meanwhile. Cancel-safe: a status is only ever taken and returned in one step.
    pub async fn wait(&mut self, child: Pid) -> WaitStatus {
        loop {
            if let Some(status) = reap_all(child) {
                return status;
            }
            self.sigchld.recv().await;
        }
    }
}

impl Reaper {
    /// Reaps every exited child now, without waiting: for when the workload itself is
    /// already collected and what it left behind is being stopped.
    pub fn reap_orphans(&mut self) {
        reap_all(Pid::from_raw(0));
    }
}

/// Reaps every exited child; returns `child`'s status if it was among them (pid 0, no
/// child's, for none).
fn reap_all(child: Pid) -> Option<WaitStatus> {
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return found,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = e.desc(), "waitpid failed");
                return found;
            }
            Ok(status) if status.pid() == Some(child) => found = Some(status),
            Ok(status) => tracing::debug!(pid = status.pid().map(Pid::as_raw), "reaped an orphan"),
        }
    }
}

/// The exit code a shell would report: the code, or 128+N for death by signal N.
pub fn exit_code(status: WaitStatus) -> u8 {
    match status {
        WaitStatus::Exited(_, code) => code as u8,
        WaitStatus::Signaled(_, sig, _) => 128u8.wrapping_add(sig as i32 as u8),
        // Not reported without WUNTRACED/WCONTINUED; kept total for the type's sake.
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn exit_codes_as_a_shell_reports_them() {
        let pid = Pid::from_raw(42);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 0)), 0);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 255)), 255);
        assert_eq!(exit_code(WaitStatus::Signaled(pid, Signal::SIGTERM, false)), 143);
        assert_eq!(exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, true)), 137);
    }
}
