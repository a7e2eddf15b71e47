//! Which value changes reach the workload. The reloader publishes every re-read; this
//! turns that stream into the few moments when the workload must act: a burst of
//! publications within the debounce window counts once, values equal to those the
//! workload already has count not at all, and an optional random splay spreads the
//! moment over a fleet.
//!
//! Boundary: it only decides *when* and *with what*; `supervise` decides how the
//! workload is told (restart or signal).

use crate::secret::Secret;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

/// A burst postpones the action by at most this many debounce windows, as in the
/// reloader: values that never settle still reach the workload.
const MAX_WINDOWS: u32 = 20;

/// The workload's variables, as one published value.
pub type Env = Arc<BTreeMap<String, Secret>>;

/// How changes are filtered.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Publications closer together than this coalesce; the last one wins.
    pub debounce: Duration,
    /// Upper bound of a random delay before acting.
    pub splay: Duration,
}

/// The task that watches for changes; aborted when dropped, so it never outlives the
/// supervisor that owns it.
pub struct Changes {
    _task: AbortOnDropHandle<()>,
}

impl Changes {
    /// Watches `values` and sends on the returned channel each new set of variables,
    /// different from `applied` (what the workload already has), that the workload must
    /// act on. The channel closes when the publisher goes away.
    pub fn spawn(values: watch::Receiver<Env>, applied: Env, timing: Timing) -> (Changes, mpsc::Receiver<Env>) {
        let (tx, rx) = mpsc::channel(1);
        let task = AbortOnDropHandle::new(tokio::spawn(watch_changes(values, applied, timing, tx)));
        (Changes { _task: task }, rx)
    }
}

async fn watch_changes(mut values: watch::Receiver<Env>, mut applied: Env, timing: Timing, tx: mpsc::Sender<Env>) {
    loop {
        if values.changed().await.is_err() {
            return;
        }
        // Act once the publications have been quiet for a whole window, or, when they
        // keep coming faster than that, after `MAX_WINDOWS` windows with the latest.
        let limit = Instant::now() + timing.debounce * MAX_WINDOWS;
        while let Ok(Ok(())) =
            tokio::time::timeout_at(limit.min(Instant::now() + timing.debounce), values.changed()).await
        {}
        let mut latest = values.borrow_and_update().clone();
        if latest == applied {
            tracing::debug!("values re-read; the workload's variables are unchanged");
            continue;
        }
        // Only a real change waits out the splay; whatever is current after it is acted on.
        if !timing.splay.is_zero() {
            let delay = crate::retry::jitter(timing.splay, 0.0..=1.0);
            tracing::info!(delay_ms = delay.as_millis() as u64, "values changed; waiting out the restart splay");
            tokio::time::sleep(delay).await;
            latest = values.borrow_and_update().clone();
            if latest == applied {
                tracing::debug!("values changed back during the splay; the workload's variables are unchanged");
                continue;
            }
        }
        tracing::info!(variables = %changed_names(&applied, &latest), "the workload's variables changed");
        if tx.send(latest.clone()).await.is_err() {
            return;
        }
        applied = latest;
    }
}

pub use crate::reload::snapshot::changed_names;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Arc::new(pairs.iter().map(|(k, v)| (k.to_string(), Secret::new(*v))).collect())
    }

    const TIMING: Timing = Timing { debounce: Duration::from_millis(100), splay: Duration::ZERO };

    #[tokio::test(start_paused = true)]
    async fn a_burst_counts_once_with_the_last_values() {
        let (tx, rx) = watch::channel(env(&[("A", "1")]));
        let (_task, mut changes) = Changes::spawn(rx, env(&[("A", "1")]), TIMING);
        for v in ["2", "3", "4"] {
            tx.send(env(&[("A", v)])).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(changes.recv().await, Some(env(&[("A", "4")])));
        drop(tx);
        assert_eq!(changes.recv().await, None, "nothing else was sent");
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_burst_is_acted_on_after_the_cap() {
        let (tx, rx) = watch::channel(env(&[("A", "0")]));
        let (_task, mut changes) = Changes::spawn(rx, env(&[("A", "0")]), TIMING);
        let start = tokio::time::Instant::now();
        // A publication every half window, for far longer than the cap.
        let publisher = tokio::spawn(async move {
            for i in 1.. {
                tx.send(env(&[("A", &i.to_string())])).unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        // Virtual time: without a cap this would be the timeout, an hour in.
        let first = tokio::time::timeout(Duration::from_secs(3600), changes.recv()).await;
        let first = first.expect("acted on despite the burst").expect("the channel is open");
        let waited = start.elapsed();
        publisher.abort();
        assert!(waited <= TIMING.debounce * (MAX_WINDOWS + 1), "waited {waited:?}");
        assert_ne!(first, env(&[("A", "0")]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_re_read_with_equal_values_is_no_change() {
        let (tx, rx) = watch::channel(env(&[("A", "1")]));
        let (_task, mut changes) = Changes::spawn(rx, env(&[("A", "1")]), TIMING);
        tx.send(env(&[("A", "1")])).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A change and its reversal within one window are no change either.
        tx.send(env(&[("A", "2")])).unwrap();
        tx.send(env(&[("A", "1")])).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(env(&[("A", "1"), ("B", "x")])).unwrap();
        assert_eq!(changes.recv().await, Some(env(&[("A", "1"), ("B", "x")])));
    }

    #[tokio::test(start_paused = true)]
    async fn splay_delays_within_its_bound() {
        let (tx, rx) = watch::channel(env(&[("A", "1")]));
        let timing = Timing { debounce: Duration::from_millis(10), splay: Duration::from_secs(30) };
        let (_task, mut changes) = Changes::spawn(rx, env(&[("A", "1")]), timing);
        let start = tokio::time::Instant::now();
        tx.send(env(&[("A", "2")])).unwrap();
        assert_eq!(changes.recv().await, Some(env(&[("A", "2")])));
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(10) && waited <= Duration::from_millis(30_010), "{waited:?}");
    }

    #[test]
    fn changed_names_lists_names_only() {
        let old = env(&[("A", "1"), ("B", "2"), ("C", "3")]);
        let new = env(&[("A", "1"), ("B", "9"), ("D", "4")]);
        assert_eq!(changed_names(&old, &new), "B,C,D");
    }
}
