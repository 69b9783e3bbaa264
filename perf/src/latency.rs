//! Per-operation latency: an HDR histogram in nanoseconds and the cost of reading the clock.
//!
//! Each operation is timed with `Instant::now()` on both sides, so every sample includes one
//! clock read's worth of overhead. Nothing is subtracted; [`clock_overhead_ns`] measures that
//! overhead so a report can print it next to the figures.

use std::time::Instant;

use hdrhistogram::Histogram;

/// CPU time the calling thread has run so far, in nanoseconds (Linux: the first field of
/// `/proc/thread-self/schedstat`), or `None` where that file is missing. Unlike wall time it
/// leaves out the time the thread waited for a core, so a loaded machine inflates it far less
/// (it still includes what contention costs while running: cache and memory bandwidth). The
/// kernel brings it up to date at scheduler ticks and switches, so a difference is exact to a
/// tick or two (a few ms): read it around loops of a second or more.
pub fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Highest latency the histograms track exactly (10 s); larger samples saturate.
const MAX_TRACKED_NS: u64 = 10_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    /// An empty recorder (1 ns to 10 s, 3 significant digits).
    pub fn new() -> Self {
        LatencyRecorder {
            histogram: Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3)
                .expect("valid histogram bounds"),
        }
    }

    /// Records one sample; 0 counts as 1 ns, anything above 10 s as 10 s.
    #[inline]
    pub fn record_ns(&mut self, nanos: u64) {
        self.histogram.saturating_record(nanos.max(1));
    }

    /// Records `count` samples of the same value (a weight); clamped like [`Self::record_ns`].
    #[inline]
    pub fn record_ns_n(&mut self, nanos: u64, count: u64) {
        self.histogram.saturating_record_n(nanos.max(1), count);
    }

    /// Times `operation` with a clock read on each side and records it.
    #[inline]
    pub fn time<R>(&mut self, operation: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let result = operation();
        let nanos = start.elapsed().as_nanos() as u64;
        self.record_ns(nanos);
        result
    }

    /// Adds every sample of `other` (same bounds, so nothing is lost).
    pub fn add(&mut self, other: &LatencyRecorder) {
        self.histogram
            .add(&other.histogram)
            .expect("recorders share their bounds");
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        self.histogram.reset();
    }

    /// The underlying histogram.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    /// Percentiles of what was recorded.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        LatencySummary {
            count: h.len(),
            mean_ns: h.mean(),
            p50_ns: h.value_at_quantile(0.50),
            p90_ns: h.value_at_quantile(0.90),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            p9999_ns: h.value_at_quantile(0.9999),
            max_ns: h.max(),
        }
    }
}

/// Percentiles of a latency distribution, in nanoseconds (HDR buckets: 3 significant digits).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Mean.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// 99.99th percentile.
    pub p9999_ns: u64,
    /// Largest sample.
    pub max_ns: u64,
}

/// The median of `samples` back-to-back `Instant::now()` pairs, in nanoseconds: what one
/// timed sample costs over the operation it times.
pub fn clock_overhead_ns(samples: usize) -> u64 {
    let mut recorder = LatencyRecorder::new();
    for _ in 0..samples.max(1) {
        let start = Instant::now();
        let end = Instant::now();
        recorder.record_ns(end.duration_since(start).as_nanos() as u64);
    }
    recorder.summary().p50_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread's CPU clock is read on Linux and moves forward over work.
    #[test]
    fn thread_cpu_time_is_read_and_grows() {
        let start = thread_cpu_ns();
        if cfg!(not(target_os = "linux")) && start.is_none() {
            return;
        }
        let start = start.expect("schedstat is readable on Linux");
        let mut sum = 0u64;
        for i in 0..20_000_000u64 {
            sum = std::hint::black_box(sum.wrapping_add(i));
        }
        let end = thread_cpu_ns().expect("read once, readable again");
        assert!(end > start, "{sum}: {start} -> {end}");
    }

    #[test]
    fn summary_of_known_samples() {
        let mut recorder = LatencyRecorder::new();
        for nanos in 1..=1000 {
            recorder.record_ns(nanos);
        }
        recorder.record_ns(0); // clamps to 1
        let summary = recorder.summary();
        assert_eq!(summary.count, 1001);
        assert_eq!(summary.p50_ns, 500);
        assert_eq!(summary.p99_ns, 990);
        assert_eq!(summary.max_ns, 1000);
    }
}
