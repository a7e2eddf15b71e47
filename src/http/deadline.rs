//! Deadline arithmetic for waits computed from user input (a flag, `Retry-After`,
//! `expires_in`): clamped so that a huge value means "never" instead of an `Instant`
//! overflow (a panic, and an abort in the release profile).

use std::time::Duration;
use tokio::time::Instant;

/// The longest wait computed from user input: far enough to mean "never" here, near
/// enough that `Instant` arithmetic cannot overflow.
pub const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + wait`, clamped to [`FOREVER`]: a huge flag value must not panic.
pub fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait.min(FOREVER)).unwrap_or(now + Duration::from_secs(24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_waits_do_not_overflow() {
        assert!(deadline_after(Duration::MAX) > Instant::now());
    }
}
