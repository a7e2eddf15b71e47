//! The terminal: the workload leads a process group of its own (see `supervise`), and
//! unless that group is the terminal's foreground group, reading stdin stops it
//! (SIGTTIN) while connd waits for it forever. So connd hands the foreground to each
//! workload it starts and takes it back when it is done, as a shell does for a job.
//!
//! Boundary: only the terminal's foreground group; which group gets it is `supervise`'s.

use nix::sys::signal::{killpg, SigSet, Signal};
use nix::unistd::{getpgrp, tcgetpgrp, tcsetpgrp, Pid};
use std::io::IsTerminal;

/// The terminal on stdin, whose foreground connd had when it started.
pub struct Terminal {
    /// connd's own group: the foreground again once the workload is over.
    own: Pid,
}

impl Terminal {
    /// The terminal, when stdin is one and connd is in its foreground; otherwise there is
    /// nothing to hand over (no terminal, or connd itself runs in the background).
    pub fn foreground() -> Option<Terminal> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let own = getpgrp();
        if tcgetpgrp(&stdin).ok()? != own {
            tracing::debug!("connd is not in the terminal's foreground; the workload is not either");
            return None;
        }
        // Once the workload has the foreground, connd is in the background: changing the
        // foreground again, or logging to the terminal under `stty tostop`, would stop it
        // with SIGTTOU unless that is blocked. Blocked on this thread, the runtime's only
        // one, and not ignored: the workload starts with an empty signal mask.
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        if let Err(e) = ttou.thread_block() {
            tracing::warn!(error = e.desc(), "cannot block SIGTTOU; the workload stays in the background");
            return None;
        }
        Some(Terminal { own })
    }

    /// Makes `group` the terminal's foreground group.
    pub fn hand_to(&self, group: Pid) {
        if let Err(e) = tcsetpgrp(std::io::stdin(), group) {
            tracing::warn!(error = e.desc(), "cannot give the terminal to the workload");
            return;
        }
        // The workload may have read the terminal before it had it: SIGCONT discards a
        // pending SIGTTIN, or resumes it if it already stopped.
        let _ = killpg(group, Signal::SIGCONT);
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Err(e) = tcsetpgrp(std::io::stdin(), self.own) {
            tracing::debug!("cannot take the terminal back: {}", e.desc());
        }
    }
}
