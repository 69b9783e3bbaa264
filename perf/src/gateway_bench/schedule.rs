//! Open-loop scheduling: when each request is due, how a sender waits for that time, and how
//! a total rate is split between connections.
//!
//! Request `i` of a connection is due at `start + offset + i * 1e9 / rate` nanoseconds,
//! computed from `i` each time (no accumulated rounding). A sender that falls behind sends
//! the overdue requests back to back, each keeping its own due time: latency measured from
//! the due time then includes the sender's lateness, so a stalled server shows up as latency
//! rather than as fewer samples (no coordinated omission).

use std::time::{Duration, Instant};

/// A monotonic clock shared by every thread of a run: nanoseconds since one `Instant`.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Clock {
        Clock {
            base: Instant::now(),
        }
    }

    /// Nanoseconds since the clock's zero (at least 1, so 0 can mean "not set").
    #[inline]
    pub fn now_ns(&self) -> u64 {
        (self.base.elapsed().as_nanos() as u64).max(1)
    }

    /// The `Instant` of a clock reading.
    pub fn instant(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }
}

/// The due times of one connection's requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Clock time of the first due time, before `offset_ns`.
    pub start_ns: u64,
    /// Shift of every due time (spreads connections of the same rate apart).
    pub offset_ns: u64,
    /// Requests per second (> 0).
    pub rate: f64,
    /// No request is due at or after this clock time.
    pub end_ns: u64,
}

impl Schedule {
    /// `rate` requests per second from `start_ns` (plus `offset_ns`) until `end_ns`.
    pub fn new(start_ns: u64, offset_ns: u64, rate: f64, end_ns: u64) -> Schedule {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        Schedule {
            start_ns,
            offset_ns,
            rate,
            end_ns,
        }
    }

    /// The gap between two requests, nanoseconds.
    pub fn interval_ns(&self) -> f64 {
        1e9 / self.rate
    }

    /// Offset of request `i` from the first due time, ns.
    fn step_ns(&self, i: u64) -> u64 {
        (i as f64 * self.interval_ns()).round() as u64
    }

    /// Due time of request `i`, or `None` when it falls at or after the end.
    pub fn due_ns(&self, i: u64) -> Option<u64> {
        let due = self.start_ns + self.offset_ns + self.step_ns(i);
        (due < self.end_ns).then_some(due)
    }

    /// How many requests are due in `[from_ns, to_ns)`.
    pub fn count_between(&self, from_ns: u64, to_ns: u64) -> u64 {
        let first = self.start_ns + self.offset_ns;
        let to_ns = to_ns.min(self.end_ns);
        // The first index due at or after `t`.
        let index_at = |t: u64| -> u64 {
            if t <= first {
                return 0;
            }
            let mut i = ((t - first) as f64 / self.interval_ns()).floor() as u64;
            while i > 0 && first + self.step_ns(i) >= t {
                i -= 1;
            }
            while first + self.step_ns(i) < t {
                i += 1;
            }
            i
        };
        index_at(to_ns).saturating_sub(index_at(from_ns))
    }

    /// Requests due in the whole schedule.
    pub fn total(&self) -> u64 {
        self.count_between(0, self.end_ns)
    }
}

/// How a sender waits for a due time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiter {
    /// Sleep until this many nanoseconds before the due time, then spin (`spin_loop` hint
    /// with a `yield_now` between checks). 0: sleep only (the kernel's timer slack, ~50-60 us
    /// here, then shows up as lateness).
    pub spin_ns: u64,
}

/// All senders of a run together spin for at most this fraction of one core.
pub const SPIN_BUDGET: f64 = 0.25;

impl Waiter {
    /// The waiter for a sender of a run sending `total_rate` requests/s over all its
    /// senders: spins `spin_ns` before each due time, but never more than
    /// `SPIN_BUDGET / total_rate` seconds, so that all senders together spin at most a
    /// quarter of one core whatever the rate. At high rates the senders then mostly sleep
    /// (late by the sleep's overshoot, which the due-time figures show) instead of taking
    /// the CPU the node needs: on 2 cores, yield-spinning senders starved the node's
    /// write-ahead log so badly that `Finalized` notices stalled for seconds.
    pub fn for_total_rate(spin_ns: u64, total_rate: f64) -> Waiter {
        Waiter {
            spin_ns: spin_ns.min((SPIN_BUDGET * 1e9 / total_rate.max(1e-9)) as u64),
        }
    }

    /// Waits until `clock` reads at least `due_ns`; returns at once if it already does.
    pub fn wait_until(&self, clock: &Clock, due_ns: u64) {
        loop {
            let now = clock.now_ns();
            if now >= due_ns {
                return;
            }
            let left = due_ns - now;
            if left > self.spin_ns {
                std::thread::sleep(Duration::from_nanos(left - self.spin_ns));
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Splits `total` requests/s between consumers in proportion to `shares`; consumers with a
/// zero share get 0.
pub fn split_rate(total: f64, shares: &[f64]) -> Vec<f64> {
    let sum: f64 = shares.iter().sum();
    if sum <= 0.0 {
        return vec![0.0; shares.len()];
    }
    shares.iter().map(|share| total * share / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_follow_the_rate_without_drift() {
        let schedule = Schedule::new(1_000, 0, 3.0, 1_000 + 2_000_000_000);
        assert_eq!(schedule.due_ns(0), Some(1_000));
        assert_eq!(schedule.due_ns(1), Some(1_000 + 333_333_333));
        assert_eq!(schedule.due_ns(3), Some(1_000 + 1_000_000_000));
        assert_eq!(schedule.due_ns(5), Some(1_000 + 1_666_666_667));
        assert_eq!(schedule.due_ns(6), None, "the end is exclusive");
        assert_eq!(schedule.total(), 6);
        // 10,000/s for 1 s: exactly 10,000 requests, the last one before the end.
        let schedule = Schedule::new(0, 0, 10_000.0, 1_000_000_000);
        assert_eq!(schedule.total(), 10_000);
        assert_eq!(schedule.due_ns(9_999), Some(999_900_000));
        assert_eq!(schedule.due_ns(10_000), None);
    }

    #[test]
    fn counts_between_match_the_due_times() {
        let schedule = Schedule::new(500, 77, 1_234.5, 3_000_000_000);
        let dues: Vec<u64> = (0..).map_while(|i| schedule.due_ns(i)).collect();
        assert_eq!(dues.len() as u64, schedule.total());
        assert!(dues.windows(2).all(|w| w[0] < w[1]));
        for (from, to) in [
            (0, 1_000_000_000),
            (1_000_000_000, 2_500_000_000),
            (dues[10], dues[20]),
            (dues[10] + 1, dues[20] + 1),
            (0, u64::MAX),
        ] {
            let expected = dues.iter().filter(|&&d| d >= from && d < to).count() as u64;
            assert_eq!(schedule.count_between(from, to), expected, "{from}..{to}");
        }
    }

    #[test]
    fn offsets_shift_every_due_time() {
        let a = Schedule::new(0, 0, 100.0, 1_000_000_000);
        let b = Schedule::new(0, 5_000_000, 100.0, 1_000_000_000);
        for i in 0..99 {
            assert_eq!(b.due_ns(i).unwrap() - a.due_ns(i).unwrap(), 5_000_000);
        }
    }

    #[test]
    fn rates_split_by_share() {
        assert_eq!(
            split_rate(1_000.0, &[1.0, 1.0, 2.0]),
            vec![250.0, 250.0, 500.0]
        );
        assert_eq!(split_rate(1_000.0, &[0.0, 3.0]), vec![0.0, 1_000.0]);
        assert_eq!(split_rate(1_000.0, &[0.0]), vec![0.0]);
    }

    #[test]
    fn the_spin_is_bounded_by_the_total_rate() {
        assert_eq!(Waiter::for_total_rate(200_000, 1_000.0).spin_ns, 200_000);
        assert_eq!(Waiter::for_total_rate(200_000, 2_000.0).spin_ns, 125_000);
        assert_eq!(Waiter::for_total_rate(200_000, 20_000.0).spin_ns, 12_500);
        assert_eq!(Waiter::for_total_rate(0, 100.0).spin_ns, 0);
    }

    #[test]
    fn the_waiter_is_never_early() {
        let clock = Clock::new();
        for spin_ns in [0, 50_000] {
            let waiter = Waiter { spin_ns };
            let due = clock.now_ns() + 300_000;
            waiter.wait_until(&clock, due);
            assert!(clock.now_ns() >= due);
            // A due time in the past returns at once.
            waiter.wait_until(&clock, 1);
        }
    }
}
