//! Vote bookkeeping for one height: stake tallies per (round, kind, value), duplicate
//! suppression, equivocation detection, and the senders of each round (for the f+1 round
//! skip of Alg. 1 L55).
//!
//! An identical copy of a vote is a duplicate and ignored. A validator that votes two
//! different values in one (round, kind) equivocates: the second vote is returned as evidence
//! *and* counted for its value, as in the paper, where "2f+1 ⟨PREVOTE, h, r, id(v)⟩" counts
//! every sender of such a message. (Counting only the first vote would let an equivocator
//! hide a proof of lock from some validators forever.) Each validator counts once in the
//! "any value" tallies, and at most [`MAX_VALUES_PER_VOTER`] values are kept per validator
//! per (round, kind), which bounds memory. Votes that arrive inside a proposal's proof of lock
//! (a value the proposer claims has 2f+1 prevotes, as Tendermint's "peer claims +2/3") may
//! go up to [`MAX_CLAIMED_VALUES_PER_VOTER`]: an equivocator that filled its slots with
//! random values must not hide the proof of lock an honest proposer shows (a validator
//! locked on it would otherwise prevote nil forever). All maps are `BTreeMap`s, so nothing
//! depends on a hash seed.

use std::collections::{BTreeMap, BTreeSet};

use crate::messages::{Evidence, SignedVote, VoteKind};
use crate::types::{Hash, Round, ValidatorId};

/// Distinct values kept per validator per (round, kind).
pub(crate) const MAX_VALUES_PER_VOTER: usize = 3;
/// Distinct values kept per validator per (round, kind) when the vote is part of a proof of
/// lock.
pub(crate) const MAX_CLAIMED_VALUES_PER_VOTER: usize = 6;

/// Votes of one kind in one round.
#[derive(Debug, Clone, Default)]
struct RoundVotes {
    votes: BTreeMap<ValidatorId, Vec<SignedVote>>,
    power_by_value: BTreeMap<Option<Hash>, u64>,
    power: u64,
}

/// What adding a vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Added {
    /// Counted.
    New,
    /// Already had exactly this vote.
    Duplicate,
    /// The validator had voted differently: evidence.
    Equivocation(Box<Evidence>),
}

/// All votes of one height.
#[derive(Debug, Clone, Default)]
pub(crate) struct VoteKeeper {
    rounds: BTreeMap<(Round, VoteKind), RoundVotes>,
    senders: BTreeMap<Round, (BTreeSet<ValidatorId>, u64)>,
}

impl VoteKeeper {
    /// Adds a vote whose signature and membership were checked; `stake` is the voter's.
    pub(crate) fn add(&mut self, vote: SignedVote, stake: u64) -> Added {
        self.add_capped(vote, stake, MAX_VALUES_PER_VOTER)
    }

    /// Adds a checked vote that came in a proposal's proof of lock.
    pub(crate) fn add_claimed(&mut self, vote: SignedVote, stake: u64) -> Added {
        self.add_capped(vote, stake, MAX_CLAIMED_VALUES_PER_VOTER)
    }

    fn add_capped(&mut self, vote: SignedVote, stake: u64, cap: usize) -> Added {
        let v = &vote.vote;
        let slot = self.rounds.entry((v.round, v.kind)).or_default();
        let mine = slot.votes.entry(v.validator).or_default();
        if mine.iter().any(|old| old.vote.value == v.value) {
            return Added::Duplicate;
        }
        let first = mine.first().copied();
        if mine.len() < cap {
            mine.push(vote);
            let tally = slot.power_by_value.entry(v.value).or_default();
            *tally = tally.checked_add(stake).expect("tally <= total stake");
        }
        match first {
            Some(old) => Added::Equivocation(Box::new(Evidence::double_vote(old, vote))),
            None => {
                slot.power = slot.power.checked_add(stake).expect("power <= total stake");
                self.note_sender(v.round, v.validator, stake);
                Added::New
            }
        }
    }

    /// Records that `who` sent some message in `round`.
    pub(crate) fn note_sender(&mut self, round: Round, who: ValidatorId, stake: u64) {
        let (set, power) = self.senders.entry(round).or_default();
        if set.insert(who) {
            *power = power.checked_add(stake).expect("power <= total stake");
        }
    }

    /// Stake that voted `value` (`None` = nil) in `round`.
    pub(crate) fn power_for(&self, round: Round, kind: VoteKind, value: Option<Hash>) -> u64 {
        self.rounds
            .get(&(round, kind))
            .and_then(|s| s.power_by_value.get(&value))
            .copied()
            .unwrap_or(0)
    }

    /// Stake that voted anything in `round`.
    pub(crate) fn power_any(&self, round: Round, kind: VoteKind) -> u64 {
        self.rounds.get(&(round, kind)).map_or(0, |s| s.power)
    }

    /// Rounds above `round` in which senders hold the most stake, highest round first
    /// among those for which `pred(power)` holds.
    pub(crate) fn highest_round_above(
        &self,
        round: Round,
        pred: impl Fn(u64) -> bool,
    ) -> Option<Round> {
        self.senders
            .range(round.saturating_add(1)..)
            .rev()
            .find(|(_, (_, power))| pred(*power))
            .map(|(r, _)| *r)
    }

    /// The votes for `value` in `round`, in validator order.
    pub(crate) fn votes_for(
        &self,
        round: Round,
        kind: VoteKind,
        value: Option<Hash>,
    ) -> Vec<SignedVote> {
        self.rounds
            .get(&(round, kind))
            .map(|s| {
                s.votes
                    .values()
                    .flatten()
                    .filter(|v| v.vote.value == value)
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Rounds that have precommits, ascending.
    pub(crate) fn precommit_rounds(&self) -> impl Iterator<Item = Round> + '_ {
        self.rounds
            .keys()
            .filter(|(_, k)| *k == VoteKind::Precommit)
            .map(|(r, _)| *r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Vote;

    fn vote(who: u8, round: Round, value: Option<u8>) -> SignedVote {
        SignedVote {
            vote: Vote {
                kind: VoteKind::Prevote,
                height: 1,
                round,
                value: value.map(|b| Hash([b; 32])),
                validator: ValidatorId([who; 32]),
            },
            signature: [who; 64],
        }
    }

    #[test]
    fn duplicates_are_ignored_and_equivocation_is_evidence() {
        let mut k = VoteKeeper::default();
        assert_eq!(k.add(vote(1, 0, Some(7)), 10), Added::New);
        assert_eq!(k.add(vote(1, 0, Some(7)), 10), Added::Duplicate);
        assert_eq!(
            k.add(vote(1, 0, None), 10),
            Added::Equivocation(Box::new(Evidence::double_vote(
                vote(1, 0, Some(7)),
                vote(1, 0, None)
            )))
        );
        assert_eq!(k.add(vote(1, 0, None), 10), Added::Duplicate);
        assert_eq!(k.add(vote(2, 0, None), 5), Added::New);
        // The equivocator counts for both values, once in the total.
        assert_eq!(k.power_for(0, VoteKind::Prevote, Some(Hash([7; 32]))), 10);
        assert_eq!(k.power_for(0, VoteKind::Prevote, None), 15);
        assert_eq!(k.power_any(0, VoteKind::Prevote), 15);
        assert_eq!(k.votes_for(0, VoteKind::Prevote, None).len(), 2);
        // Bounded: a third value counts, a fourth does not (still evidence).
        assert!(matches!(
            k.add(vote(1, 0, Some(8)), 10),
            Added::Equivocation(_)
        ));
        assert!(matches!(
            k.add(vote(1, 0, Some(9)), 10),
            Added::Equivocation(_)
        ));
        assert_eq!(k.power_for(0, VoteKind::Prevote, Some(Hash([8; 32]))), 10);
        assert_eq!(k.power_for(0, VoteKind::Prevote, Some(Hash([9; 32]))), 0);
        assert_eq!(k.power_any(0, VoteKind::Precommit), 0);
        // Inside a proof of lock it still counts, up to a larger bound.
        assert!(matches!(
            k.add_claimed(vote(1, 0, Some(9)), 10),
            Added::Equivocation(_)
        ));
        assert_eq!(k.power_for(0, VoteKind::Prevote, Some(Hash([9; 32]))), 10);
        for b in 10..=20 {
            k.add_claimed(vote(1, 0, Some(b)), 10);
        }
        assert_eq!(
            k.votes_for(0, VoteKind::Prevote, Some(Hash([12; 32])))
                .len(),
            0
        );
        assert_eq!(k.power_any(0, VoteKind::Prevote), 15);
        k.add(vote(3, 4, None), 6);
        k.add(vote(4, 2, None), 1);
        assert_eq!(k.highest_round_above(0, |p| p > 5), Some(4));
        assert_eq!(k.highest_round_above(0, |p| p > 6), None);
        assert_eq!(k.highest_round_above(4, |_| true), None);
    }
}
