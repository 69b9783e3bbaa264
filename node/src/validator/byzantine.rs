//! Test hooks `--byzantine-equivocate` and `--byzantine-double-vote`: a validator that
//! equivocates on purpose, for the fault suite (`node/tests/faults.rs`). Never for a real
//! validator: it signs conflicting messages, bypassing the safety store, which is exactly
//! what slashing punishes.
//!
//! It only rewrites what the shell broadcasts; the host and its core stay honest. With
//! `--byzantine-equivocate` ([`Mode::SplitProposals`]):
//!
//! - **Equivocating proposer.** A proposal of its own for a new block (no proof of lock)
//!   gets a twin: the same block with its timestamp 1 ns later (so a different block id,
//!   valid all the same), signed as a second proposal for the same height and round. The
//!   first block goes to the first half of its peers (in configuration order, rounded up),
//!   the twin to the others; re-sends of the proposal keep that split.
//! - **Double voter.** Its prevote for its own proposal's block goes to every peer, and so
//!   does a second prevote for the twin (same height and round), so every honest validator
//!   holds the two signed prevotes: evidence, put into blocks, which slash and jail it.
//!
//! Everything else (other rounds' votes, precommits, other frames) is broadcast unchanged.
//! Each equivocation is logged (`{"event":"equivocated","height","round"}`).
//!
//! With `--byzantine-double-vote` ([`Mode::DoubleVote`]) it proposes honestly, but every
//! prevote it sends for a block (anyone's) is followed by a second prevote for nil at the
//! same height and round, to every peer: a double voter that need not be the proposer.
//! Logged as `{"event":"double_voted","height","round"}`.

use std::collections::BTreeMap;

use consensus::host::{message_frame, Frame, FRAME_MESSAGE};
use consensus::messages::{
    Message, Proposal, ProposalMessage, SignedProposal, SignedVote, Vote, VoteKind,
};
use consensus::types::{Hash, Height, Keypair, Round, ValidatorId};
use serde_json::json;

/// Twins kept (older rounds' re-sends go out unchanged once theirs is dropped).
const TWINS_KEPT: usize = 16;

/// Where one frame goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Send {
    /// To every peer.
    All(Frame),
    /// To one peer.
    To(ValidatorId, Frame),
}

/// How the validator equivocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Twin proposals to two halves of its peers, and a prevote for each.
    SplitProposals,
    /// Honest proposals; a nil prevote beside each of its prevotes for a block.
    DoubleVote,
}

/// A second proposal signed for a height and round.
struct Twin {
    /// The first proposal's block id.
    first: Hash,
    /// The twin's block id.
    id: Hash,
    /// The twin's proposal frame.
    frame: Frame,
}

/// The equivocating rewrite of a validator's broadcasts.
pub(super) struct Equivocator {
    mode: Mode,
    key: Keypair,
    chain_id: [u8; 32],
    /// Peers sent the first block.
    first_half: Vec<ValidatorId>,
    /// Peers sent the twin.
    second_half: Vec<ValidatorId>,
    twins: BTreeMap<(Height, Round), Twin>,
}

impl Equivocator {
    /// An equivocator in `mode` signing with `key` on `chain_id`, splitting `validators` (in
    /// configuration order; its own id is skipped) into two halves.
    pub(super) fn new(
        mode: Mode,
        key: Keypair,
        chain_id: [u8; 32],
        validators: &[ValidatorId],
    ) -> Self {
        let peers: Vec<ValidatorId> = validators
            .iter()
            .copied()
            .filter(|&id| id != key.id())
            .collect();
        let (first, second) = peers.split_at(peers.len().div_ceil(2));
        Equivocator {
            mode,
            key,
            chain_id,
            first_half: first.to_vec(),
            second_half: second.to_vec(),
            twins: BTreeMap::new(),
        }
    }

    /// What to send instead of broadcasting `frame`, and the event line to log if it
    /// equivocated.
    pub(super) fn on_broadcast(&mut self, frame: Frame) -> (Vec<Send>, Option<serde_json::Value>) {
        let message = match frame.split_first() {
            Some((&FRAME_MESSAGE, body)) => Message::decode(body).ok(),
            _ => None,
        };
        match (self.mode, message) {
            (Mode::SplitProposals, Some(Message::Proposal(p))) if self.is_new_own(&p) => {
                self.split_proposal(frame, &p)
            }
            (Mode::SplitProposals, Some(Message::Vote(v))) => {
                (self.double_prevote(frame, &v), None)
            }
            (Mode::DoubleVote, Some(Message::Vote(v))) => self.nil_prevote_too(frame, &v),
            _ => (vec![Send::All(frame)], None),
        }
    }

    /// A prevote for a block, then a second prevote for nil at the same height and round,
    /// both to every peer (logged); any other vote unchanged.
    fn nil_prevote_too(
        &self,
        frame: Frame,
        v: &SignedVote,
    ) -> (Vec<Send>, Option<serde_json::Value>) {
        let vote = v.vote;
        if vote.kind != VoteKind::Prevote || vote.value.is_none() {
            return (vec![Send::All(frame)], None);
        }
        let second = self.signed(Vote {
            value: None,
            ..vote
        });
        let event = json!({"event": "double_voted", "height": vote.height, "round": vote.round});
        (
            vec![
                Send::All(frame),
                Send::All(message_frame(&Message::Vote(second))),
            ],
            Some(event),
        )
    }

    /// `vote` signed with this validator's key.
    fn signed(&self, vote: Vote) -> SignedVote {
        let signature = self.key.sign(&vote.signing_bytes(&self.chain_id));
        SignedVote { vote, signature }
    }

    /// A proposal of this validator's for a new block (a re-proposal's proof of lock would
    /// not fit a twin).
    fn is_new_own(&self, p: &ProposalMessage) -> bool {
        p.signed.proposal.proposer == self.key.id() && p.signed.proposal.pol_round.is_none()
    }

    /// The first block to the first half, the twin (made once per height and round) to
    /// the second half.
    fn split_proposal(
        &mut self,
        frame: Frame,
        p: &ProposalMessage,
    ) -> (Vec<Send>, Option<serde_json::Value>) {
        let slot = (p.signed.proposal.height, p.signed.proposal.round);
        let made = !self.twins.contains_key(&slot);
        if made {
            let twin = self.twin(p);
            self.twins.insert(slot, twin);
            while self.twins.len() > TWINS_KEPT {
                self.twins.pop_first();
            }
        }
        let twin = &self.twins[&slot];
        let mut sends: Vec<Send> = self
            .first_half
            .iter()
            .map(|&id| Send::To(id, frame.clone()))
            .collect();
        sends.extend(
            self.second_half
                .iter()
                .map(|&id| Send::To(id, twin.frame.clone())),
        );
        let event = made.then(|| {
            json!({"event": "equivocated", "height": slot.0, "round": slot.1,
                "first": crate::validator::hex(&twin.first.0),
                "twin": crate::validator::hex(&twin.id.0)})
        });
        (sends, event)
    }

    /// The same block 1 ns later, proposed and signed again for the same height and round.
    fn twin(&self, p: &ProposalMessage) -> Twin {
        let mut block = p.block.clone();
        block.timestamp_ns += 1;
        let proposal = Proposal {
            block_id: block.id(),
            ..p.signed.proposal
        };
        let signature = self.key.sign(&proposal.signing_bytes(&self.chain_id));
        let message = ProposalMessage {
            signed: SignedProposal {
                proposal,
                signature,
            },
            block,
            pol: Vec::new(),
        };
        Twin {
            first: p.signed.proposal.block_id,
            id: proposal.block_id,
            frame: message_frame(&Message::Proposal(message)),
        }
    }

    /// Its prevote for the first block of a twinned slot, and a second prevote for the
    /// twin, both to every peer; any other vote unchanged.
    fn double_prevote(&self, frame: Frame, v: &SignedVote) -> Vec<Send> {
        let vote = v.vote;
        let twin = self
            .twins
            .get(&(vote.height, vote.round))
            .filter(|t| vote.kind == VoteKind::Prevote && vote.value == Some(t.first));
        let Some(twin) = twin else {
            return vec![Send::All(frame)];
        };
        let second = self.signed(Vote {
            value: Some(twin.id),
            ..vote
        });
        vec![
            Send::All(frame),
            Send::All(message_frame(&Message::Vote(second))),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consensus::block::Block;
    use consensus::messages::Evidence;
    use consensus::types::Ed25519;

    const CHAIN: [u8; 32] = [7; 32];

    fn keys() -> Vec<Keypair> {
        (1..=4u8).map(|i| Keypair::from_seed([i; 32])).collect()
    }

    fn proposal(key: &Keypair) -> ProposalMessage {
        let block = Block {
            height: 5,
            timestamp_ns: 1_000,
            proposer: key.id(),
            prev_hash: Hash([1; 32]),
            prev_exec_root: Hash([2; 32]),
            evidence: Vec::new(),
            actions: Vec::new(),
            payload: vec![9; 10].into(),
        };
        let proposal = Proposal {
            height: 5,
            round: 0,
            pol_round: None,
            block_id: block.id(),
            proposer: key.id(),
        };
        let signature = key.sign(&proposal.signing_bytes(&CHAIN));
        ProposalMessage {
            signed: SignedProposal {
                proposal,
                signature,
            },
            block,
            pol: Vec::new(),
        }
    }

    fn decode(frame: &Frame) -> Message {
        Message::decode(&frame[1..]).expect("a message")
    }

    /// The proposal is split 2|1 between two validly signed blocks, re-sends keep the
    /// split, and the prevote becomes two prevotes that are evidence against it.
    #[test]
    fn it_splits_its_proposal_and_double_prevotes() {
        let keys = keys();
        let ids: Vec<_> = keys.iter().map(Keypair::id).collect();
        let mut e = Equivocator::new(Mode::SplitProposals, keys[3].clone(), CHAIN, &ids);
        let p = proposal(&keys[3]);
        let frame = message_frame(&Message::Proposal(p.clone()));
        let (sends, event) = e.on_broadcast(frame.clone());
        assert_eq!(event.expect("logged")["height"], 5);
        assert_eq!(sends.len(), 3);
        assert_eq!(sends[0], Send::To(ids[0], frame.clone()));
        assert_eq!(sends[1], Send::To(ids[1], frame.clone()));
        let Send::To(to, twin) = &sends[2] else {
            panic!("{sends:?}")
        };
        assert_eq!(*to, ids[2]);
        let Message::Proposal(twin) = decode(twin) else {
            panic!("a proposal")
        };
        assert!(twin.signed.verify(&CHAIN, &Ed25519));
        assert_eq!(twin.block.id(), twin.signed.proposal.block_id);
        assert_ne!(twin.signed.proposal.block_id, p.signed.proposal.block_id);
        let (again, event) = e.on_broadcast(frame);
        assert_eq!((again, event), (sends, None), "a re-send keeps the split");

        let vote = Vote {
            kind: VoteKind::Prevote,
            height: 5,
            round: 0,
            value: Some(p.signed.proposal.block_id),
            validator: ids[3],
        };
        let signature = keys[3].sign(&vote.signing_bytes(&CHAIN));
        let first = SignedVote { vote, signature };
        let frame = message_frame(&Message::Vote(first));
        let (sends, _) = e.on_broadcast(frame.clone());
        assert_eq!(sends[0], Send::All(frame));
        let Send::All(second) = &sends[1] else {
            panic!("{sends:?}")
        };
        let Message::Vote(second) = decode(second) else {
            panic!("a vote")
        };
        let evidence = Evidence::double_vote(first, second);
        assert_eq!(evidence.check(&CHAIN, &Ed25519), Ok(()));
        assert_eq!(evidence.offender(), ids[3]);
    }

    /// A double voter proposes honestly and sends each of its prevotes for a block, anyone's,
    /// with a nil prevote beside it (evidence against it); nil prevotes and precommits go
    /// unchanged.
    #[test]
    fn a_double_voter_adds_a_nil_prevote_to_each_prevote_for_a_block() {
        let keys = keys();
        let ids: Vec<_> = keys.iter().map(Keypair::id).collect();
        let mut e = Equivocator::new(Mode::DoubleVote, keys[3].clone(), CHAIN, &ids);
        let own = message_frame(&Message::Proposal(proposal(&keys[3])));
        assert_eq!(e.on_broadcast(own.clone()), (vec![Send::All(own)], None));
        let others = proposal(&keys[0]).signed.proposal.block_id;
        let vote = |kind, value| {
            let vote = Vote {
                kind,
                height: 5,
                round: 2,
                value,
                validator: ids[3],
            };
            let signature = keys[3].sign(&vote.signing_bytes(&CHAIN));
            SignedVote { vote, signature }
        };
        let first = vote(VoteKind::Prevote, Some(others));
        let frame = message_frame(&Message::Vote(first));
        let (sends, event) = e.on_broadcast(frame.clone());
        assert_eq!(event.expect("logged")["round"], 2);
        assert_eq!(sends[0], Send::All(frame));
        let Send::All(second) = &sends[1] else {
            panic!("{sends:?}")
        };
        let Message::Vote(second) = decode(second) else {
            panic!("a vote")
        };
        assert_eq!(second.vote.value, None);
        let evidence = Evidence::double_vote(first, second);
        assert_eq!(evidence.check(&CHAIN, &Ed25519), Ok(()));
        assert_eq!(evidence.offender(), ids[3]);
        for unchanged in [
            vote(VoteKind::Prevote, None),
            vote(VoteKind::Precommit, Some(others)),
        ] {
            let frame = message_frame(&Message::Vote(unchanged));
            assert_eq!(
                e.on_broadcast(frame.clone()),
                (vec![Send::All(frame)], None)
            );
        }
    }

    /// Votes go on the consensus lane, proposals and commit certificates (whole blocks) on
    /// the block lane, forwarded transactions on the bulk lane.
    #[test]
    fn votes_go_before_blocks_and_blocks_before_forwards() {
        use consensus::messages::CommitCertificate;
        use consensus_net::Lane;
        let keys = keys();
        let p = proposal(&keys[0]);
        let vote = Vote {
            kind: VoteKind::Prevote,
            height: 5,
            round: 0,
            value: Some(p.signed.proposal.block_id),
            validator: keys[0].id(),
        };
        let signature = keys[0].sign(&vote.signing_bytes(&CHAIN));
        let signed = SignedVote { vote, signature };
        let commit = CommitCertificate {
            round: 0,
            block: p.block.clone(),
            precommits: vec![signed],
        };
        let lane = |m: Message| super::super::lane_of(&message_frame(&m));
        assert_eq!(lane(Message::Vote(signed)), Lane::Consensus);
        assert_eq!(lane(Message::Proposal(p)), Lane::Block);
        assert_eq!(lane(Message::Commit(commit)), Lane::Block);
        let sync = consensus::host::sync_frame(3);
        assert_eq!(super::super::lane_of(&sync), Lane::Consensus);
        let forward = consensus::host::app_frame(b"forwarded");
        assert_eq!(super::super::lane_of(&forward), Lane::Bulk);
    }

    /// Precommits, other validators' proposals and prevotes of slots without a twin go to
    /// every peer unchanged.
    #[test]
    fn anything_else_is_broadcast_unchanged() {
        let keys = keys();
        let ids: Vec<_> = keys.iter().map(Keypair::id).collect();
        let mut e = Equivocator::new(Mode::SplitProposals, keys[3].clone(), CHAIN, &ids);
        let other = message_frame(&Message::Proposal(proposal(&keys[0])));
        let vote = Vote {
            kind: VoteKind::Precommit,
            height: 5,
            round: 0,
            value: None,
            validator: ids[3],
        };
        let signature = keys[3].sign(&vote.signing_bytes(&CHAIN));
        let precommit = message_frame(&Message::Vote(SignedVote { vote, signature }));
        let app = consensus::host::app_frame(b"forwarded");
        for frame in [other, precommit, app] {
            let (sends, event) = e.on_broadcast(frame.clone());
            assert_eq!((sends, event), (vec![Send::All(frame)], None));
        }
    }
}
