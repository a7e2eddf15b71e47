//! The one retry policy: how long to wait after a failure, and when to stop.
//!
//! [`Backoff`] is exponential backoff with full jitter (the pause after the n-th failure
//! in a row is uniform in `[0, min(cap, base·2^n))`, as in AWS's "Exponential Backoff
//! and Jitter"), never under a floor (50 ms: `Retry-After: 0` must not become a busy
//! loop) nor under the server's `Retry-After` (RFC 9110 §10.2.3). [`retry`] runs an
//! attempt until it succeeds, fails for good, or its deadline passes; the last wait is
//! cut short so that the last attempt is made at the deadline, not skipped because the
//! next pause would cross it (docs/commands.md). Long-running loops that schedule their own
//! attempts (the reloader, token renewal, the accept loop) use [`Backoff::delay`] and
//! [`Backoff::next`], so that one rule decides every pause.
//!
//! Boundary: what counts as transient is the caller's to say (as [`Failure`]); this
//! module only waits and counts.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// The shortest pause between two attempts, whatever the server says.
pub const MIN_DELAY: Duration = Duration::from_millis(50);

/// The time an attempt made at (or just before) the deadline gets for itself, so that
/// "the last attempt is made at the deadline" is an attempt and not an instant timeout.
pub const LAST_ATTEMPT: Duration = Duration::from_secs(1);

/// Exponential backoff with full jitter; see the module header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling after the first failure is twice this.
    pub base: Duration,
    /// The ceiling never grows past this.
    pub cap: Duration,
}

/// Outbound requests (control plane, token endpoints): 100 ms doubling, up to 5 s.
pub const REQUESTS: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// When to make the next attempt, or why not to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this instant (at the deadline at the latest).
    At(Instant),
    /// The deadline has passed: the attempt just made was the last.
    Deadline,
    /// The server asked to wait this long, past the deadline: no attempt can honour it.
    RetryAfter(Duration),
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap }
    }

    /// The upper bound of the pause after `failures` failures in a row: `base·2^failures`,
    /// at most `cap`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        self.base.saturating_mul(1u32 << failures.min(16)).min(self.cap)
    }

    /// The pause after `failures` failures in a row: full jitter under [`Self::ceiling`],
    /// raised to `retry_after` (the server's wish) and to [`MIN_DELAY`].
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        jitter(self.ceiling(failures), 0.0..=1.0).max(retry_after.unwrap_or_default()).max(MIN_DELAY)
    }

    /// When to try again after `failures` failures in a row at `now`: after
    /// [`Self::delay`], but never past `deadline`, where the last attempt is made.
    pub fn next(&self, failures: u32, retry_after: Option<Duration>, now: Instant, deadline: Option<Instant>) -> Next {
        let delay = self.delay(failures, retry_after);
        let Some(deadline) = deadline else {
            // A `Retry-After` past what an instant can hold waits the cap instead.
            return Next::At(now.checked_add(delay).unwrap_or(now + self.cap));
        };
        if now >= deadline {
            return Next::Deadline;
        }
        // `checked_add`: a `Retry-After` of 10^19 seconds must give up, not panic.
        match retry_after {
            Some(after) if now.checked_add(after).map_or(true, |at| at > deadline) => Next::RetryAfter(after),
            _ => Next::At(now.checked_add(delay).map_or(deadline, |at| at.min(deadline))),
        }
    }
}

/// `d` scaled by a factor drawn uniformly from `factors` (both ends at most 1 apart, none
/// negative): the one jitter, so that many replicas do not call in step. Full jitter is
/// `0.0..=1.0`; a schedule shifted by up to ±10% is `0.9..=1.1`. A result past what a
/// `Duration` holds saturates.
pub fn jitter(d: Duration, factors: std::ops::RangeInclusive<f64>) -> Duration {
    let factor = factors.start() + (factors.end() - factors.start()) * fastrand::f64();
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// Until when a transient failure is retried: the one answer, for every caller (the
/// control plane, the token endpoint, a whole resolution), so that the mode of the
/// process decides it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Never: one attempt, bounded by the call's deadline; a failure is its caller's.
    Never,
    /// Until the call's deadline, the last attempt made at it: one-shot modes (`env`,
    /// `exec`) and `run`'s first start.
    Deadline,
    /// Until the process stops: long-running modes (`serve`, `run`). A call makes one
    /// attempt, as [`Until::Never`], so that a round of the reloader fails at once, shows
    /// as failed and does not hold reloads up; the reloader's rounds and the background
    /// token renewal retry on their own backoff until they are cancelled.
    Cancelled,
}

impl Until {
    /// Whether one call retries its own transient failures (else its caller does).
    pub fn retries_in_call(self) -> bool {
        match self {
            Until::Deadline => true,
            Until::Never | Until::Cancelled => false,
        }
    }

    /// Whether what is obtained (tokens) is renewed in the background.
    pub fn renews_in_background(self) -> bool {
        match self {
            Until::Cancelled => true,
            Until::Never | Until::Deadline => false,
        }
    }
}

/// Whether an HTTP answer is worth another attempt: 429 (too many requests) or a 5xx,
/// for the control plane and the token endpoints alike.
pub fn transient_status(status: http::StatusCode) -> bool {
    status == http::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// What [`retry`] tells each attempt.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// When this attempt's own requests must be done: the overall deadline, or
    /// [`LAST_ATTEMPT`] from now if that is later.
    pub deadline: Instant,
}

/// Why an attempt failed, as the caller classifies it.
#[derive(Debug)]
pub enum Failure<E> {
    /// Retrying may help; `retry_after` is the server's `Retry-After`, if it sent one.
    Transient { error: E, retry_after: Option<Duration> },
    /// Retrying cannot help.
    Permanent(E),
}

impl<E> Failure<E> {
    pub fn transient(error: E) -> Failure<E> {
        Failure::Transient { error, retry_after: None }
    }
}

/// How a failure reads in a log line: the whole chain of its causes, as the binary
/// prints a fatal error (`{:#}`), so that a retried failure's log says why.
pub trait Report {
    fn report(&self) -> String;
}

impl Report for anyhow::Error {
    fn report(&self) -> String {
        format!("{self:#}")
    }
}

impl Report for &str {
    fn report(&self) -> String {
        (*self).to_owned()
    }
}

/// Why [`retry`] stopped without a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The last failure was permanent.
    Permanent,
    /// The call does not retry ([`Until::retries_in_call`]): its caller does.
    Once,
    /// The attempt made at the deadline failed too.
    Deadline,
    /// The server's `Retry-After` (this long) reached past the deadline.
    RetryAfter(Duration),
}

/// The last failure, with what it took.
#[derive(Debug)]
pub struct GaveUp<E> {
    pub error: E,
    pub reason: Reason,
    pub attempts: u32,
    pub elapsed: Duration,
}

/// Calls `attempt` until it succeeds, fails permanently, or `until` says stop (at
/// `deadline` for [`Until::Deadline`]; one attempt bounded by it otherwise), pausing
/// after each transient failure as `policy` says (the last pause cut to the deadline).
/// Each retry is logged at warn level with `what` and the error as fields.
pub async fn retry<T, E, F, Fut>(
    policy: &Backoff,
    until: Until,
    deadline: Instant,
    what: &str,
    mut attempt: F,
) -> Result<T, GaveUp<E>>
where
    E: Report,
    F: FnMut(Attempt) -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    let started = Instant::now();
    let mut number = 0u32;
    loop {
        number += 1;
        let now = Instant::now();
        let attempt_deadline = match until.retries_in_call() {
            true => deadline.max(now + LAST_ATTEMPT),
            false => deadline,
        };
        let gave_up = |error, reason| GaveUp { error, reason, attempts: number, elapsed: started.elapsed() };
        let (error, retry_after) = match attempt(Attempt { number, deadline: attempt_deadline }).await {
            Ok(value) => return Ok(value),
            Err(Failure::Permanent(error)) => return Err(gave_up(error, Reason::Permanent)),
            Err(Failure::Transient { error, retry_after }) => (error, retry_after),
        };
        if !until.retries_in_call() {
            return Err(gave_up(error, Reason::Once));
        }
        let at = match policy.next(number, retry_after, Instant::now(), Some(deadline)) {
            Next::At(at) => at,
            Next::Deadline => return Err(gave_up(error, Reason::Deadline)),
            Next::RetryAfter(after) => return Err(gave_up(error, Reason::RetryAfter(after))),
        };
        let retry_in = at.saturating_duration_since(Instant::now());
        tracing::warn!(error = error.report(), attempt = number, ?retry_in, "{what} failed, will retry");
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    const POLICY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

    #[test]
    fn delays_stay_under_their_ceiling_and_over_the_floors() {
        assert_eq!(POLICY.ceiling(1), Duration::from_millis(200));
        assert_eq!(POLICY.ceiling(40), Duration::from_secs(5));
        for failures in 0..40 {
            let d = POLICY.delay(failures, None);
            assert!(d >= MIN_DELAY && d <= POLICY.ceiling(failures).max(MIN_DELAY), "{failures}: {d:?}");
            assert!(POLICY.delay(failures, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
            assert!(POLICY.delay(failures, Some(Duration::ZERO)) >= MIN_DELAY);
        }
        assert_eq!(POLICY.delay(1, Some(Duration::from_secs(u64::MAX))), Duration::from_secs(u64::MAX));
    }

    #[test]
    fn only_429_and_5xx_are_transient_answers() {
        for code in [429, 500, 502, 503, 504, 599] {
            assert!(transient_status(http::StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [200, 304, 400, 401, 403, 404, 408, 428] {
            assert!(!transient_status(http::StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn jitter_stays_within_its_factors() {
        let d = Duration::from_secs(100);
        for _ in 0..1000 {
            let j = jitter(d, 0.9..=1.1);
            assert!(j >= Duration::from_secs(90) && j <= Duration::from_secs(110), "{j:?}");
            assert!(jitter(d, 0.0..=1.0) <= d);
        }
        assert_eq!(jitter(Duration::MAX, 1.0..=1.1), Duration::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_attempt_is_made_at_the_deadline() {
        for timeout in [Duration::from_millis(300), Duration::from_secs(4), Duration::from_secs(10)] {
            let start = Instant::now();
            let deadline = start + timeout;
            let times = RefCell::new(Vec::new());
            let result: Result<(), _> = retry(&POLICY, Until::Deadline, deadline, "test", |a| {
                times.borrow_mut().push((Instant::now(), a));
                async { Err(Failure::transient("down")) }
            })
            .await;
            let gave_up = result.unwrap_err();
            let times = times.into_inner();
            assert_eq!(gave_up.reason, Reason::Deadline);
            assert_eq!(gave_up.attempts as usize, times.len());
            let (last, attempt) = times.last().copied().unwrap();
            assert_eq!(last, deadline, "{timeout:?}: the last attempt is at the deadline");
            assert_eq!(attempt.deadline, deadline + LAST_ATTEMPT, "it gets time of its own");
            // Every pause respects the floor, and none reaches past the deadline.
            for pair in times.windows(2) {
                assert!(pair[1].0 - pair[0].0 >= MIN_DELAY.min(deadline - pair[0].0));
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_a_floor_and_past_the_deadline_gives_up_at_once() {
        let start = Instant::now();
        let times = RefCell::new(Vec::new());
        let result: Result<(), _> =
            retry(&POLICY, Until::Deadline, start + Duration::from_millis(2500), "test", |_| {
                times.borrow_mut().push(Instant::now());
                async { Err(Failure::Transient { error: "429", retry_after: Some(Duration::from_secs(1)) }) }
            })
            .await;
        let times = times.into_inner();
        assert_eq!(times, [start, start + Duration::from_secs(1), start + Duration::from_secs(2)]);
        assert_eq!(result.unwrap_err().reason, Reason::RetryAfter(Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_and_once_stop_after_one_attempt() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let calls = RefCell::new(0);
        let permanent: Result<(), _> = retry(&POLICY, Until::Deadline, deadline, "test", |_| {
            *calls.borrow_mut() += 1;
            async { Err(Failure::Permanent("refused")) }
        })
        .await;
        assert_eq!(permanent.unwrap_err().reason, Reason::Permanent);
        let once: Result<(), _> = retry(&POLICY, Until::Never, deadline, "test", |a| {
            *calls.borrow_mut() += 1;
            assert_eq!(a.deadline, deadline);
            async { Err(Failure::transient("down")) }
        })
        .await;
        assert_eq!(once.unwrap_err().reason, Reason::Once);
        assert_eq!(calls.into_inner(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_after_failures_is_returned() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut left = 3;
        let got = retry(&POLICY, Until::Deadline, deadline, "test", |a| {
            left -= 1;
            let fail = left > 0;
            async move {
                if fail {
                    Err(Failure::transient("down"))
                } else {
                    Ok(a.number)
                }
            }
        })
        .await;
        assert_eq!(got.unwrap(), 3);
    }
}
