//! A string that must not leak: its `Debug` and `Display` print a placeholder, and its
//! memory is zeroed when dropped. Only [`Secret::expose`] hands out the text, so every
//! place that reveals a value is greppable.

use std::fmt;
use zeroize::Zeroize;

/// What redacted output shows in place of a value.
pub const REDACTED: &str = "<redacted>";

/// Marks this process non-dumpable (`PR_SET_DUMPABLE` 0, prctl(2)) for the long-running
/// modes, which hold secrets for their whole life (docs/commands.md): another process of the same
/// uid can then neither ptrace it nor read its `/proc/PID/mem` or `/proc/PID/environ`,
/// and no core dump is written. A program it executes is dumpable again (execve(2)
/// resets the flag), so `run`'s workload is unaffected.
pub fn forbid_dumps() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = e.desc(), "cannot mark connd non-dumpable; its memory is readable by its uid");
    }
}

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself. Call only where the value is meant to leave the process
    /// (the workload's environment, the local API, an authenticated request).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?} {:?}", Some(&s)), "<redacted> <redacted> Some(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }
}
