//! The host's answers to peers and their bounds: which heights a sync request gets, and how
//! often a peer that is behind is sent a certificate.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use crate::types::{Height, ValidatorId};

const MS: u64 = 1_000_000;
/// Most certificates sent in answer to one sync request.
pub const SYNC_BATCH: u64 = 32;
/// Most `PeerBehind` certificates sent to one peer per second.
pub const CERTS_PER_PEER_PER_S: usize = 64;
/// Least time between two `PeerBehind` answers to one peer for one height.
pub const CERT_REPEAT_NS: u64 = 200 * MS;
/// Least time between two sync requests to one peer.
pub const SYNC_ASK_EVERY_NS: u64 = 100 * MS;
/// How long peers' messages must have shown that they decided our current height before we
/// ask them for its certificate.
pub const ONE_BEHIND_GRACE_NS: u64 = 1_000 * MS;
/// Least time between two answers to one peer's request for one height.
pub const SYNC_SERVE_EVERY_NS: u64 = 50 * MS;

/// Heights to answer a sync request from `from_height` (>= 1) with, when we are at
/// `ours`: at most [`SYNC_BATCH`], none past `ours`; `None` if we have none of them.
pub fn sync_range(from_height: Height, ours: Height) -> Option<RangeInclusive<Height>> {
    if from_height == 0 || from_height > ours {
        return None;
    }
    Some(from_height..=ours.min(from_height.saturating_add(SYNC_BATCH - 1)))
}

/// Per-peer rate limit of `PeerBehind` answers: at most one every [`CERT_REPEAT_NS`] per
/// peer and height, and at most [`CERTS_PER_PEER_PER_S`] per peer per second whatever the
/// heights. Keys are (peer, height); entries older than a second are dropped when a peer's
/// count is checked, so the map holds at most that many entries per known peer.
pub fn cert_allowed(
    sent: &mut BTreeMap<(ValidatorId, Height), u64>,
    peer: ValidatorId,
    height: Height,
    now_ns: u64,
) -> bool {
    if sent
        .get(&(peer, height))
        .is_some_and(|t| now_ns <= t + CERT_REPEAT_NS)
    {
        return false;
    }
    sent.retain(|(p, _), t| *p != peer || now_ns <= *t + 1_000 * MS);
    if sent.keys().filter(|(p, _)| *p == peer).count() >= CERTS_PER_PEER_PER_S {
        return false;
    }
    sent.insert((peer, height), now_ns);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_range_saturates_and_ignores_heights_we_do_not_have() {
        assert_eq!(sync_range(1, 0), None);
        assert_eq!(sync_range(1, 5), Some(1..=5));
        assert_eq!(sync_range(3, 100), Some(3..=3 + SYNC_BATCH - 1));
        assert_eq!(sync_range(6, 5), None);
        assert_eq!(sync_range(u64::MAX, 5), None);
        assert_eq!(sync_range(u64::MAX, u64::MAX), Some(u64::MAX..=u64::MAX));
        assert_eq!(
            sync_range(u64::MAX - 3, u64::MAX),
            Some(u64::MAX - 3..=u64::MAX)
        );
    }

    #[test]
    fn peer_behind_answers_are_rate_limited_per_peer() {
        let mut sent = BTreeMap::new();
        let (a, b) = (ValidatorId([1; 32]), ValidatorId([2; 32]));
        let t = 10_000 * MS;
        assert!(cert_allowed(&mut sent, a, 1, t));
        assert!(
            !cert_allowed(&mut sent, a, 1, t + 100 * MS),
            "same height too soon"
        );
        assert!(cert_allowed(&mut sent, a, 1, t + 201 * MS));
        // Many heights within a second: capped per peer, and other peers are unaffected.
        for h in 2..=CERTS_PER_PEER_PER_S as u64 {
            assert!(cert_allowed(&mut sent, a, h, t + 300 * MS), "height {h}");
        }
        assert!(!cert_allowed(&mut sent, a, 1_000, t + 300 * MS));
        assert!(cert_allowed(&mut sent, b, 1_000, t + 300 * MS));
        // A second later the old entries are gone.
        assert!(cert_allowed(&mut sent, a, 1_000, t + 1_400 * MS));
        assert!(sent.len() <= 2 * CERTS_PER_PEER_PER_S);
    }
}
