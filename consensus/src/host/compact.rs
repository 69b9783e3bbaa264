//! Compact proposals: the proposer sends its block with the payload in the application's
//! compact form ([`Application::compact_payload`]: items its peers already hold, named by
//! hash) and keeps the full proposal; a peer rebuilds the payload from what it holds
//! ([`Application::expand_payload`]) and hands the core the full proposal, which it checks
//! as ever (the block must hash to the signed `block_id`). A peer that cannot rebuild it
//! holds the compact proposal, tries again after each application frame (the missing
//! transactions are usually forwards still in flight) and, after [`COMPACT_WAIT_NS`], asks
//! the sender for the full proposal ([`FRAME_PROPOSAL_ASK`]), answered once per peer,
//! height and round.
//!
//! Nothing of this reaches the block, its id or the block file: it is how a proposal
//! travels, not what it is.
//!
//! [`Application::compact_payload`]: super::Application::compact_payload
//! [`Application::expand_payload`]: super::Application::expand_payload
//! [`FRAME_PROPOSAL_ASK`]: super::FRAME_PROPOSAL_ASK

use std::collections::{BTreeMap, BTreeSet};

use crate::messages::{Message, ProposalMessage};
use crate::types::{Height, Round, ValidatorId};

use super::Frame;

const MS: u64 = 1_000_000;
/// How long a compact proposal that could not be rebuilt waits for the missing items before
/// its sender is asked for the full proposal.
pub const COMPACT_WAIT_NS: u64 = 5 * MS;
/// Most compact proposals held at once (the oldest goes first).
const HELD_MAX: usize = 8;

/// Counters of compact proposals, sent and received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Own proposals sent compact.
    pub sent: u64,
    /// Own proposals sent in full (the application had no compact form).
    pub sent_full: u64,
    /// Bytes of own proposals' frames as sent (compact or full), per peer.
    pub bytes_sent: u64,
    /// Bytes the same frames would have had in full, per peer.
    pub bytes_full: u64,
    /// Peers' compact proposals rebuilt from what this validator held (at once or later).
    pub rebuilt: u64,
    /// Peers' compact proposals that could not be rebuilt on arrival.
    pub missing: u64,
    /// Full proposals asked for.
    pub asked: u64,
    /// Full proposals sent in answer to a peer's ask.
    pub served: u64,
}

impl std::ops::AddAssign for CompactStats {
    fn add_assign(&mut self, o: CompactStats) {
        self.sent += o.sent;
        self.sent_full += o.sent_full;
        self.bytes_sent += o.bytes_sent;
        self.bytes_full += o.bytes_full;
        self.rebuilt += o.rebuilt;
        self.missing += o.missing;
        self.asked += o.asked;
        self.served += o.served;
    }
}

/// A peer's compact proposal waiting for items this validator does not hold yet.
struct Held {
    from: ValidatorId,
    message: ProposalMessage,
    since_ns: u64,
    asked: bool,
}

/// The host's compact-proposal state: own full frames, held proposals, answers given.
#[derive(Default)]
pub(super) struct CompactProposals {
    /// This validator's proposals of the current and the previous height, in full.
    own: BTreeMap<(Height, Round), ProposalMessage>,
    held: Vec<Held>,
    served: BTreeSet<(ValidatorId, Height, Round)>,
    pub(super) stats: CompactStats,
}

impl CompactProposals {
    /// Keeps an own proposal, in full, for peers that ask for it (encoded only if one
    /// does: its block shares its payload with the proposal the core holds).
    pub(super) fn keep_own(&mut self, full: ProposalMessage) {
        let p = &full.signed.proposal;
        self.own.insert((p.height, p.round), full);
    }

    /// The full frame of own proposal `(height, round)` for `peer`, once per peer.
    pub(super) fn answer(
        &mut self,
        peer: ValidatorId,
        height: Height,
        round: Round,
    ) -> Option<Frame> {
        let full = self.own.get(&(height, round))?;
        if !self.served.insert((peer, height, round)) {
            return None;
        }
        self.stats.served += 1;
        Some(super::message_frame(&Message::Proposal(full.clone())))
    }

    /// Holds a compact proposal that could not be rebuilt yet.
    pub(super) fn hold(&mut self, from: ValidatorId, message: ProposalMessage, now_ns: u64) {
        self.stats.missing += 1;
        if self.held.len() >= HELD_MAX {
            self.held.remove(0);
        }
        self.held.push(Held {
            from,
            message,
            since_ns: now_ns,
            asked: false,
        });
    }

    /// Takes the held proposals out, to try them again (they come back with
    /// [`CompactProposals::put_back`]).
    pub(super) fn take_held(&mut self) -> Vec<(ValidatorId, ProposalMessage, u64, bool)> {
        self.held
            .drain(..)
            .map(|h| (h.from, h.message, h.since_ns, h.asked))
            .collect()
    }

    /// Puts back a held proposal still missing items; returns whether its sender should be
    /// asked for the full proposal now (waited long enough, not asked before).
    pub(super) fn put_back(
        &mut self,
        (from, message, since_ns, asked): (ValidatorId, ProposalMessage, u64, bool),
        now_ns: u64,
    ) -> bool {
        let ask = !asked && now_ns >= since_ns.saturating_add(COMPACT_WAIT_NS);
        if ask {
            self.stats.asked += 1;
        }
        self.held.push(Held {
            from,
            message,
            since_ns,
            asked: asked || ask,
        });
        ask
    }

    /// When a held proposal's sender is next to be asked, if any waits.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.held
            .iter()
            .filter(|h| !h.asked)
            .map(|h| h.since_ns.saturating_add(COMPACT_WAIT_NS))
            .min()
    }

    /// Forgets what belongs to heights before `height` (a new height started), but keeps
    /// own proposals of the height just decided: a peer that could not rebuild one may ask
    /// after the others decided without it.
    pub(super) fn forget_before(&mut self, height: Height) {
        let kept = height.saturating_sub(1);
        self.own.retain(|(h, _), _| *h >= kept);
        self.served.retain(|(_, h, _)| *h >= kept);
        self.held
            .retain(|h| h.message.signed.proposal.height >= height);
    }
}

/// The body of a full-proposal ask: `height u64 LE || round u32 LE`.
pub(super) fn ask_body(height: Height, round: Round) -> [u8; 12] {
    let mut body = [0u8; 12];
    body[..8].copy_from_slice(&height.to_le_bytes());
    body[8..].copy_from_slice(&round.to_le_bytes());
    body
}

/// The height and round of an ask's body.
pub(super) fn read_ask(body: &[u8]) -> Option<(Height, Round)> {
    let body: &[u8; 12] = body.try_into().ok()?;
    let height = u64::from_le_bytes(body[..8].try_into().ok()?);
    let round = u32::from_le_bytes(body[8..].try_into().ok()?);
    Some((height, round))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(b: u8) -> ValidatorId {
        ValidatorId([b; 32])
    }

    fn own_proposal(height: Height, round: Round) -> ProposalMessage {
        use crate::block::Block;
        use crate::messages::{Proposal, SignedProposal};
        use crate::types::Hash;
        let block = Block {
            height,
            timestamp_ns: 1,
            proposer: peer(0),
            prev_hash: Hash([1; 32]),
            prev_exec_root: Hash([2; 32]),
            evidence: Vec::new(),
            actions: Vec::new(),
            payload: vec![7; 3000].into(),
        };
        let proposal = Proposal {
            height,
            round,
            pol_round: None,
            block_id: block.id(),
            proposer: peer(0),
        };
        ProposalMessage {
            signed: SignedProposal {
                proposal,
                signature: [0; 64],
            },
            block,
            pol: Vec::new(),
        }
    }

    #[test]
    fn an_own_proposal_is_served_once_per_peer_and_kept_one_height_after() {
        let mut c = CompactProposals::default();
        let own = own_proposal(5, 0);
        let frame = super::super::message_frame(&Message::Proposal(own.clone()));
        c.keep_own(own);
        assert_eq!(c.answer(peer(1), 5, 1), None, "no proposal of round 1");
        assert_eq!(c.answer(peer(1), 5, 0).as_deref(), Some(&frame[..]));
        assert_eq!(c.answer(peer(1), 5, 0), None, "answered once");
        assert_eq!(c.answer(peer(2), 5, 0).as_deref(), Some(&frame[..]));
        c.forget_before(6);
        assert_eq!(c.answer(peer(3), 5, 0).as_deref(), Some(&frame[..]));
        c.forget_before(7);
        assert_eq!(c.answer(peer(4), 5, 0), None, "forgotten two heights on");
        assert_eq!(c.stats.served, 3);
    }

    #[test]
    fn asks_carry_height_and_round() {
        assert_eq!(read_ask(&ask_body(9, 2)), Some((9, 2)));
        assert_eq!(read_ask(&[0; 11]), None);
    }
}
