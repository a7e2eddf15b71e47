//! The webhook's `/metrics`, in the style of `crate::metrics`: fixed label sets over
//! atomics, no locking. Reviews by verdict, and the time to answer one.

use super::review::Verdict;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the review-latency buckets; `+Inf` follows. The API server
/// waits `timeoutSeconds` (a few seconds); a review takes well under a millisecond.
const BUCKETS: [f64; 10] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0];

/// The webhook's counters; one per process, shared by its connections.
#[derive(Debug, Default)]
pub struct Metrics {
    /// By [`Verdict::ALL`] position.
    reviews: [AtomicU64; 4],
    /// Per [`BUCKETS`] bound, then `+Inf`; not cumulative (summed when rendered).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    /// Re-reads of the certificate after its files changed: loaded, failed.
    certificate_reloads: [AtomicU64; 2],
}

impl Metrics {
    /// One review answered with `verdict` after `elapsed` (body read to answer built).
    pub fn review(&self, verdict: Verdict, elapsed: Duration) {
        let slot = Verdict::ALL.iter().position(|v| *v == verdict).unwrap_or(0);
        self.reviews[slot].fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(elapsed.as_micros().min(u128::from(u64::MAX)) as u64, Relaxed);
    }

    /// One re-read of the changed certificate files: `ok` when the new pair is in use.
    pub fn certificate_reload(&self, ok: bool) {
        self.certificate_reloads[usize::from(!ok)].fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let name = "connd_webhook_reviews_total";
        let _ = writeln!(out, "# HELP {name} AdmissionReviews answered, by result.\n# TYPE {name} counter");
        for (i, v) in Verdict::ALL.iter().enumerate() {
            let _ = writeln!(out, "{name}{{result=\"{}\"}} {}", v.label(), self.reviews[i].load(Relaxed));
        }
        let name = "connd_webhook_review_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time to answer an AdmissionReview.\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n.load(Relaxed);
            let le = BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {cumulative}");
        let name = "connd_webhook_certificate_reloads_total";
        let _ = writeln!(out, "# HELP {name} Re-reads of the changed TLS certificate files, by result.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (i, result) in ["ok", "error"].iter().enumerate() {
            let _ = writeln!(out, "{name}{{result=\"{result}\"}} {}", self.certificate_reloads[i].load(Relaxed));
        }
        let name = "connd_log_write_failures_total";
        let _ = writeln!(out, "# HELP {name} Log records dropped because stderr could not take them.");
        let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", crate::logging::write_failures());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reviews_are_counted_by_result_and_latency() {
        let m = Metrics::default();
        m.review(Verdict::Patched, Duration::from_micros(80));
        m.review(Verdict::Denied, Duration::from_millis(3));
        let text = m.render();
        for line in [
            "connd_webhook_reviews_total{result=\"patched\"} 1",
            "connd_webhook_reviews_total{result=\"denied\"} 1",
            "connd_webhook_reviews_total{result=\"malformed\"} 0",
            "connd_webhook_review_duration_seconds_bucket{le=\"0.0001\"} 1",
            "connd_webhook_review_duration_seconds_bucket{le=\"0.0025\"} 1",
            "connd_webhook_review_duration_seconds_bucket{le=\"0.005\"} 2",
            "connd_webhook_review_duration_seconds_bucket{le=\"+Inf\"} 2",
            "connd_webhook_review_duration_seconds_count 2",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
