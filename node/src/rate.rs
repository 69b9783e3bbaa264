//! Per-connection rate limits of a validator's client ports: a token bucket per connection
//! (transaction port client, gateway session, JSON connection), so that one client cannot
//! take the validator's whole admission budget. A transaction over its connection's rate is
//! refused (`rate_limited`) before any check; the client may send it again later.

use std::collections::HashMap;

/// One connection's bucket: tokens scaled by 1000 (so refills are exact in whole ms).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    last_ms: u64,
}

/// Token buckets by connection key: `per_second` transactions a second, bursts of `burst`.
#[derive(Debug)]
pub struct RateLimits<K> {
    per_second: u64,
    burst: u64,
    buckets: HashMap<K, Bucket>,
}

impl<K: std::hash::Hash + Eq> RateLimits<K> {
    /// Limits of `per_second` (0: unlimited) with bursts of `burst` (at least 1).
    pub fn new(per_second: u64, burst: u64) -> RateLimits<K> {
        RateLimits {
            per_second,
            burst: burst.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Whether connection `key` may send one more transaction at `now_ms` (and takes it).
    pub fn allow(&mut self, key: K, now_ms: u64) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let full = self.burst.saturating_mul(1000);
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            milli_tokens: full,
            last_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(bucket.last_ms);
        bucket.milli_tokens = bucket
            .milli_tokens
            .saturating_add(elapsed.saturating_mul(self.per_second))
            .min(full);
        bucket.last_ms = bucket.last_ms.max(now_ms);
        match bucket.milli_tokens.checked_sub(1000) {
            Some(left) => {
                bucket.milli_tokens = left;
                true
            }
            None => false,
        }
    }

    /// The connection is gone: its bucket too.
    pub fn forget(&mut self, key: &K) {
        self.buckets.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_gets_its_burst_then_its_rate_and_others_are_unaffected() {
        let mut limits = RateLimits::new(100, 10);
        let t = 1_000_000;
        assert_eq!((0..20).filter(|_| limits.allow(1, t)).count(), 10);
        assert!(limits.allow(2, t), "another connection has its own bucket");
        // 100/s: one more every 10 ms, and no more than the burst after a long pause.
        assert!(!limits.allow(1, t + 9));
        assert!(limits.allow(1, t + 10));
        assert_eq!((0..50).filter(|_| limits.allow(1, t + 60_000)).count(), 10);
        limits.forget(&1);
        assert_eq!((0..50).filter(|_| limits.allow(1, t + 60_000)).count(), 10);
        let mut unlimited = RateLimits::new(0, 0);
        assert!((0..10_000).all(|_| unlimited.allow(1, t)));
    }
}
