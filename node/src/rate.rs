//! Rate limits of a validator's client ports: a token bucket per connection (transaction
//! port client, gateway session, JSON connection), so that one client cannot take the
//! validator's whole admission budget, and one per account, so that one account cannot
//! either by spreading over many connections. A transaction over its connection's rate is
//! refused (`rate_limited`) before any check; one over its account's rate
//! (`account_rate_limited`) before any check too, but only transactions the pool admitted
//! use the account's tokens, so nobody can spend another account's budget with transactions
//! that fail its checks (a forged signature). The client may send it again later.

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
        let bucket = self.refilled(key, now_ms);
        match bucket.milli_tokens.checked_sub(1000) {
            Some(left) => {
                bucket.milli_tokens = left;
                true
            }
            None => false,
        }
    }

    /// How many transactions `key` may send at `now_ms`, without taking any
    /// (`u64::MAX` without a limit); [`RateLimits::take`] takes one.
    pub fn available(&mut self, key: K, now_ms: u64) -> u64 {
        if self.per_second == 0 {
            return u64::MAX;
        }
        self.refilled(key, now_ms).milli_tokens / 1000
    }

    /// Takes one token of `key` (after [`RateLimits::available`] said there was one).
    pub fn take(&mut self, key: &K) {
        if let Some(bucket) = self.buckets.get_mut(key) {
            bucket.milli_tokens = bucket.milli_tokens.saturating_sub(1000);
        }
    }

    /// `key`'s bucket, refilled up to `now_ms` (a new key starts full).
    fn refilled(&mut self, key: K, now_ms: u64) -> &mut Bucket {
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
        bucket
    }

    /// The connection is gone: its bucket too.
    pub fn forget(&mut self, key: &K) {
        self.buckets.remove(key);
    }

    /// Drops every bucket that is full again at `now_ms` (a new bucket starts full, so
    /// nothing changes for its key): keys that come and go, such as accounts named by
    /// transactions that were then refused, hold no memory for long.
    pub fn forget_idle(&mut self, now_ms: u64) {
        let (per_second, full) = (self.per_second, self.burst.saturating_mul(1000));
        self.buckets.retain(|_, b| {
            let elapsed = now_ms.saturating_sub(b.last_ms);
            b.milli_tokens
                .saturating_add(elapsed.saturating_mul(per_second))
                < full
        });
    }

    /// Keys with a bucket.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
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

    #[test]
    fn available_tokens_are_taken_only_when_asked_and_idle_buckets_are_forgotten() {
        let mut limits = RateLimits::new(100, 10);
        let t = 1_000_000;
        assert_eq!(limits.available(7, t), 10);
        assert_eq!(limits.available(7, t), 10, "looking takes nothing");
        for _ in 0..10 {
            limits.take(&7);
        }
        assert_eq!(limits.available(7, t), 0);
        assert!(!limits.allow(7, t));
        assert_eq!(limits.available(7, t + 30), 3, "100/s: 3 more after 30 ms");
        assert_eq!(limits.available(8, t), 10);
        // Key 8 is full (never used); key 7 refills by t + 100 ms.
        limits.forget_idle(t + 30);
        assert_eq!(limits.len(), 1);
        limits.forget_idle(t + 100);
        assert!(limits.is_empty());
        assert_eq!(RateLimits::<u8>::new(0, 0).available(1, t), u64::MAX);
    }
}
