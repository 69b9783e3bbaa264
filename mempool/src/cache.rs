//! Hashes of transactions whose signatures passed, so that each is verified once per
//! validator: at admission, and not again when a block holds it.

use std::collections::{HashSet, VecDeque};

use transactions::TxHash;

/// A bounded set of verified transaction hashes; past its capacity the oldest is forgotten
/// (a forgotten transaction is simply verified again if it comes back).
pub struct VerifiedCache {
    capacity: usize,
    set: HashSet<TxHash>,
    order: VecDeque<TxHash>,
}

impl VerifiedCache {
    /// An empty cache of at most `capacity` hashes (at least 1).
    pub fn new(capacity: usize) -> VerifiedCache {
        VerifiedCache {
            capacity: capacity.max(1),
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `hash` was verified (and not forgotten yet).
    pub fn contains(&self, hash: &TxHash) -> bool {
        self.set.contains(hash)
    }

    /// Remembers a verified hash.
    pub fn insert(&mut self, hash: TxHash) {
        if !self.set.insert(hash) {
            return;
        }
        self.order.push_back(hash);
        if self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
    }

    /// Hashes remembered.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_hash_is_forgotten_past_capacity() {
        let mut cache = VerifiedCache::new(2);
        let h = |n: u8| TxHash([n; 32]);
        cache.insert(h(1));
        cache.insert(h(2));
        cache.insert(h(1));
        cache.insert(h(3));
        assert!(!cache.contains(&h(1)));
        assert!(cache.contains(&h(2)) && cache.contains(&h(3)));
        assert_eq!(cache.len(), 2);
    }
}
