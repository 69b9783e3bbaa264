//! Validator set, stake-weighted quorums, proposer rotation, staking changes and slashing.
//!
//! Rules (all deterministic; iteration is over sorted `Vec`s and `BTreeMap`s only):
//! - A set is non-empty, sorted by public key, every stake > 0, total stake fits in `u64`.
//! - Quorum: stake `q` is a quorum when `3q > 2·total` (more than 2/3); `3q > total` is
//!   "more than 1/3" (Tendermint's f+1, used to skip rounds).
//! - Proposer: Tendermint's proposer-priority algorithm. Each step adds every validator's
//!   stake to its priority, picks the highest priority (ties: smaller public key) and takes
//!   the total stake off the winner. Round `r` of a height takes `r + 1` steps from the
//!   height's starting priorities; the next height starts one step further. Over any window
//!   each validator proposes in proportion to its stake.
//! - Join, leave and stake changes are queued and applied at the epoch boundary (after the
//!   last block of an epoch, `height % epoch_length == 0`), in the order they were queued.
//! - Slashing: verified double-sign evidence cuts the offender's stake by
//!   `ceil(stake · slash_fraction_bps / 10_000)` and jails it; a jailed validator leaves the
//!   active set at the next block boundary, and its queued changes are dropped. One offence
//!   per (validator, height) is punished once. Evidence older than `evidence_max_age_blocks`
//!   is refused.
//! - Unjailing: a jailed validator asks to return (`StakeChange::Unjail`) no earlier than
//!   `jail_period_blocks` blocks after the block that jailed it, and only if its stake after
//!   the cut is still at least `min_stake`; it rejoins the active set at the next epoch
//!   boundary, like a join. A validator jailed again meanwhile loses the queued request.
//! - Joins and stake changes below `min_stake` are refused.
//! - Whenever membership or stakes change, priorities restart from zero.
//! - A change that would leave no active validator is not applied (the set stays as it was).

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{DecodeError, Reader, Writer};
use crate::messages::{Evidence, EvidenceError};
use crate::types::{Hash, Height, Round, SignatureVerifier, ValidatorId};

/// One validator and its voting stake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Validator {
    /// Public key.
    pub id: ValidatorId,
    /// Voting stake (> 0 in a set).
    pub stake: u64,
}

/// Why a list of validators is not a valid set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// No validators.
    #[error("validator set is empty")]
    Empty,
    /// A validator has zero stake.
    #[error("validator {0:?} has zero stake")]
    ZeroStake(ValidatorId),
    /// A public key appears twice.
    #[error("validator {0:?} appears twice")]
    Duplicate(ValidatorId),
    /// Total stake exceeds `u64::MAX`.
    #[error("total stake overflows u64")]
    StakeOverflow,
}

/// The validators of one height with their stakes and proposer priorities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    priorities: Vec<i128>,
    total_stake: u64,
}

impl ValidatorSet {
    /// A set with all priorities at zero.
    pub fn new(mut validators: Vec<Validator>) -> Result<ValidatorSet, SetError> {
        if validators.is_empty() {
            return Err(SetError::Empty);
        }
        validators.sort();
        let mut total: u64 = 0;
        for (i, v) in validators.iter().enumerate() {
            if v.stake == 0 {
                return Err(SetError::ZeroStake(v.id));
            }
            if i > 0 && validators[i - 1].id == v.id {
                return Err(SetError::Duplicate(v.id));
            }
            total = total.checked_add(v.stake).ok_or(SetError::StakeOverflow)?;
        }
        let priorities = vec![0; validators.len()];
        Ok(ValidatorSet {
            validators,
            priorities,
            total_stake: total,
        })
    }

    /// The validators, sorted by public key.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.validators.len()
    }

    /// Always false: a set is never empty.
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// Sum of all stakes.
    pub fn total_stake(&self) -> u64 {
        self.total_stake
    }

    /// Stake of `id`, if it is in the set.
    pub fn stake_of(&self, id: &ValidatorId) -> Option<u64> {
        self.validators
            .binary_search_by(|v| v.id.cmp(id))
            .ok()
            .map(|i| self.validators[i].stake)
    }

    /// True if `stake` is more than 2/3 of the total (`3·stake > 2·total`).
    pub fn is_quorum(&self, stake: u64) -> bool {
        3 * stake as u128 > 2 * self.total_stake as u128
    }

    /// True if `stake` is more than 1/3 of the total (`3·stake > total`): at least one
    /// correct validator is among them when faulty stake is below 1/3.
    pub fn exceeds_one_third(&self, stake: u64) -> bool {
        3 * stake as u128 > self.total_stake as u128
    }

    /// The proposer of round `round` at this set's height. Costs `O((round + 1) · n)`; the
    /// protocol uses [`ProposerSchedule`] to reuse work across rounds.
    pub fn proposer(&self, round: Round) -> ValidatorId {
        let mut schedule = ProposerSchedule::new(self);
        schedule.proposer(round)
    }

    /// The set for the next height: same validators, priorities advanced by one step.
    pub fn next_height(&self) -> ValidatorSet {
        let mut next = self.clone();
        next.step_priorities();
        next
    }

    /// One step of the proposer-priority algorithm; returns the index chosen.
    fn step_priorities(&mut self) -> usize {
        for (p, v) in self.priorities.iter_mut().zip(&self.validators) {
            *p = p
                .checked_add(v.stake as i128)
                .expect("priority within i128");
        }
        let mut best = 0;
        for i in 1..self.priorities.len() {
            // Strictly greater: ties go to the smaller public key (earlier index).
            if self.priorities[i] > self.priorities[best] {
                best = i;
            }
        }
        self.priorities[best] = self.priorities[best]
            .checked_sub(self.total_stake as i128)
            .expect("priority within i128");
        best
    }

    /// Encoding: `u32` count, then per validator its key, `u64` stake, `i128` priority.
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.count(self.validators.len());
        for (v, p) in self.validators.iter().zip(&self.priorities) {
            w.bytes32(&v.id.0);
            w.u64(v.stake);
            w.i128(*p);
        }
    }

    /// Reads what [`ValidatorSet::write`] wrote: keys strictly ascending, stakes positive,
    /// priorities summing to zero (every step adds and takes off the total stake).
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<ValidatorSet, DecodeError> {
        let n = r.count(32 + 8 + 16)?;
        let mut validators = Vec::with_capacity(n);
        let mut priorities = Vec::with_capacity(n);
        for _ in 0..n {
            let id = ValidatorId(r.bytes32()?);
            if validators.last().is_some_and(|v: &Validator| v.id >= id) {
                return Err(DecodeError::Invalid("validator keys not ascending"));
            }
            validators.push(Validator {
                id,
                stake: r.u64()?,
            });
            priorities.push(r.i128()?);
        }
        let sum = priorities.iter().try_fold(0i128, |a, p| a.checked_add(*p));
        if sum != Some(0) {
            return Err(DecodeError::Invalid(
                "proposer priorities do not sum to zero",
            ));
        }
        let mut set = ValidatorSet::new(validators)
            .map_err(|_| DecodeError::Invalid("not a validator set"))?;
        set.priorities = priorities;
        Ok(set)
    }

    /// A digest of the validators, stakes and priorities.
    pub fn hash(&self) -> Hash {
        let mut out = Vec::with_capacity(4 + self.validators.len() * 56);
        out.extend_from_slice(&(self.validators.len() as u32).to_le_bytes());
        for (v, p) in self.validators.iter().zip(&self.priorities) {
            out.extend_from_slice(&v.id.0);
            out.extend_from_slice(&v.stake.to_le_bytes());
            out.extend_from_slice(&p.to_le_bytes());
        }
        Hash(*blake3::hash(&out).as_bytes())
    }
}

/// Proposers of successive rounds of one height, computed once and cached.
#[derive(Debug, Clone)]
pub struct ProposerSchedule {
    set: ValidatorSet,
    cache: Vec<ValidatorId>,
}

impl ProposerSchedule {
    /// The schedule for `set`'s height.
    pub fn new(set: &ValidatorSet) -> ProposerSchedule {
        ProposerSchedule {
            set: set.clone(),
            cache: Vec::new(),
        }
    }

    /// `proposer(h, round)`.
    pub fn proposer(&mut self, round: Round) -> ValidatorId {
        while self.cache.len() <= round as usize {
            let i = self.set.step_priorities();
            self.cache.push(self.set.validators[i].id);
        }
        self.cache[round as usize]
    }
}

/// A bonded validator's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bond {
    /// Bonded stake.
    pub stake: u64,
    /// The block whose evidence jailed it, if jailed: jailed validators are out of the
    /// active set.
    pub jailed: Option<Height>,
}

impl Bond {
    /// Whether the validator is jailed.
    pub fn is_jailed(&self) -> bool {
        self.jailed.is_some()
    }
}

/// A queued change to the validator set, applied at the next epoch boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StakeChange {
    /// A new validator bonds `stake`.
    Join {
        /// The new validator.
        id: ValidatorId,
        /// Its stake.
        stake: u64,
    },
    /// A bonded validator changes its stake.
    SetStake {
        /// The validator.
        id: ValidatorId,
        /// Its new stake.
        stake: u64,
    },
    /// A validator unbonds and leaves.
    Leave {
        /// The validator.
        id: ValidatorId,
    },
    /// A jailed validator returns to the active set.
    Unjail {
        /// The validator.
        id: ValidatorId,
    },
}

impl StakeChange {
    /// The validator the change is about.
    pub fn id(&self) -> ValidatorId {
        match self {
            StakeChange::Join { id, .. }
            | StakeChange::SetStake { id, .. }
            | StakeChange::Leave { id }
            | StakeChange::Unjail { id } => *id,
        }
    }
}

impl StakeChange {
    /// Encoding: tag (1 join, 2 set stake, 3 leave, 4 unjail), key, then `u64` stake for
    /// tags 1 and 2.
    fn write(&self, w: &mut Writer<'_>) {
        let (tag, stake) = match *self {
            StakeChange::Join { stake, .. } => (1, Some(stake)),
            StakeChange::SetStake { stake, .. } => (2, Some(stake)),
            StakeChange::Leave { .. } => (3, None),
            StakeChange::Unjail { .. } => (4, None),
        };
        w.u8(tag);
        w.bytes32(&self.id().0);
        if let Some(stake) = stake {
            w.u64(stake);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<StakeChange, DecodeError> {
        let tag = r.u8()?;
        let id = ValidatorId(r.bytes32()?);
        Ok(match tag {
            1 => StakeChange::Join {
                id,
                stake: r.u64()?,
            },
            2 => StakeChange::SetStake {
                id,
                stake: r.u64()?,
            },
            3 => StakeChange::Leave { id },
            4 => StakeChange::Unjail { id },
            value => {
                return Err(DecodeError::BadTag {
                    field: "stake change",
                    value,
                })
            }
        })
    }
}

/// The chain parameters and the height a stake change is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StakeRules {
    /// The block the change is in.
    pub height: Height,
    /// Least stake of a bonded validator (`ChainParams::min_stake`).
    pub min_stake: u64,
    /// Blocks a jailed validator waits before it may unjail
    /// (`ChainParams::jail_period_blocks`).
    pub jail_period_blocks: u64,
}

impl Default for StakeRules {
    /// Height 0, minimum stake 1, no jail period.
    fn default() -> Self {
        StakeRules {
            height: 0,
            min_stake: 1,
            jail_period_blocks: 0,
        }
    }
}

/// Why a stake change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StakeError {
    /// Join by a validator that is already bonded.
    #[error("validator is already bonded")]
    AlreadyBonded,
    /// Change by a validator that is not bonded.
    #[error("validator is not bonded")]
    NotBonded,
    /// Change by a jailed validator.
    #[error("validator is jailed")]
    Jailed,
    /// Zero stake.
    #[error("stake must be positive")]
    ZeroStake,
    /// A stake below the chain's minimum (for an unjail: the stake left after slashing).
    #[error("stake below the minimum of {min}")]
    BelowMinimum {
        /// `ChainParams::min_stake`.
        min: u64,
    },
    /// Unjail by a validator that is not jailed.
    #[error("validator is not jailed")]
    NotJailed,
    /// Unjail before the jail period ended.
    #[error("jailed until block {until}")]
    StillJailed {
        /// First block in which an unjail is accepted.
        until: Height,
    },
}

/// Why evidence led to no slashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceRejected {
    /// The evidence itself is malformed or badly signed.
    #[error("invalid evidence: {0}")]
    Invalid(#[from] EvidenceError),
    /// The offender is not bonded.
    #[error("offender is not bonded")]
    UnknownValidator,
    /// The offence is from a future height or older than the allowed age.
    #[error("evidence height out of range")]
    OutOfRange,
    /// This offender was already punished for this height.
    #[error("offence already punished")]
    AlreadyPunished,
}

/// Bonds, the active set, queued changes and punished offences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staking {
    bonds: BTreeMap<ValidatorId, Bond>,
    active: ValidatorSet,
    pending: Vec<StakeChange>,
    punished: BTreeSet<(ValidatorId, Height)>,
    rebuild: bool,
}

impl Staking {
    /// Genesis: every validator bonded and active.
    pub fn genesis(validators: Vec<Validator>) -> Result<Staking, SetError> {
        let active = ValidatorSet::new(validators)?;
        let bonds = active
            .validators()
            .iter()
            .map(|v| {
                (
                    v.id,
                    Bond {
                        stake: v.stake,
                        jailed: None,
                    },
                )
            })
            .collect();
        Ok(Staking {
            bonds,
            active,
            pending: Vec::new(),
            punished: BTreeSet::new(),
            rebuild: false,
        })
    }

    /// The active set of the next height to decide.
    pub fn active(&self) -> &ValidatorSet {
        &self.active
    }

    /// A validator's bond, if any.
    pub fn bond(&self, id: &ValidatorId) -> Option<Bond> {
        self.bonds.get(id).copied()
    }

    /// Every bond, in key order.
    pub fn bonds(&self) -> impl Iterator<Item = (&ValidatorId, &Bond)> {
        self.bonds.iter()
    }

    /// Changes waiting for the next epoch boundary, in order.
    pub fn pending(&self) -> &[StakeChange] {
        &self.pending
    }

    /// Queues a change for the next epoch boundary after checking it against current bonds
    /// and `rules`.
    pub fn queue(&mut self, change: StakeChange, rules: StakeRules) -> Result<(), StakeError> {
        match change {
            StakeChange::Join { id, stake } => {
                check_stake(stake, &rules)?;
                if self.bonds.contains_key(&id)
                    || self
                        .pending
                        .iter()
                        .any(|c| matches!(c, StakeChange::Join { id: j, .. } if *j == id))
                {
                    return Err(StakeError::AlreadyBonded);
                }
            }
            StakeChange::SetStake { id, stake } => {
                check_stake(stake, &rules)?;
                self.check_bonded(&id)?;
            }
            StakeChange::Leave { id } => self.check_bonded(&id)?,
            StakeChange::Unjail { id } => self.check_unjail(&id, &rules)?,
        }
        self.pending.push(change);
        Ok(())
    }

    /// An unjail needs a jailed bond, the jail period served and the minimum stake left.
    fn check_unjail(&self, id: &ValidatorId, rules: &StakeRules) -> Result<(), StakeError> {
        let bond = self.bonds.get(id).ok_or(StakeError::NotBonded)?;
        let jailed_at = bond.jailed.ok_or(StakeError::NotJailed)?;
        let until = jailed_at.saturating_add(rules.jail_period_blocks);
        if rules.height < until {
            return Err(StakeError::StillJailed { until });
        }
        check_stake(bond.stake, rules)
    }

    fn check_bonded(&self, id: &ValidatorId) -> Result<(), StakeError> {
        match self.bonds.get(id) {
            None => Err(StakeError::NotBonded),
            Some(b) if b.is_jailed() => Err(StakeError::Jailed),
            Some(_) => Ok(()),
        }
    }

    /// Verifies `evidence` found in the block at `height` and slashes the offender. Returns
    /// the stake cut.
    pub fn slash(
        &mut self,
        evidence: &Evidence,
        height: Height,
        slash_fraction_bps: u32,
        evidence_max_age_blocks: u64,
        chain_id: &[u8; 32],
        verifier: &dyn SignatureVerifier,
    ) -> Result<u64, EvidenceRejected> {
        evidence.check(chain_id, verifier)?;
        let offender = evidence.offender();
        let at = evidence.height();
        if at > height || height - at > evidence_max_age_blocks {
            return Err(EvidenceRejected::OutOfRange);
        }
        if self.punished.contains(&(offender, at)) {
            return Err(EvidenceRejected::AlreadyPunished);
        }
        let bond = self
            .bonds
            .get_mut(&offender)
            .ok_or(EvidenceRejected::UnknownValidator)?;
        // Rounded up: any positive fraction of a positive stake cuts at least one unit.
        let bps = slash_fraction_bps.min(10_000) as u128;
        let cut = (bond.stake as u128 * bps).div_ceil(10_000);
        let cut = u64::try_from(cut).expect("cut <= stake");
        bond.stake = bond.stake.checked_sub(cut).expect("cut <= stake");
        bond.jailed = Some(height);
        self.punished.insert((offender, at));
        self.pending.retain(|c| c.id() != offender);
        self.rebuild = true;
        Ok(cut)
    }

    /// Closes block `height`: computes the active set for `height + 1`. Queued changes apply
    /// when `height` ends an epoch; a slash applies at once. Returns true if membership or
    /// stakes changed.
    pub fn end_block(&mut self, height: Height, epoch_length_blocks: u64) -> bool {
        let epoch_end = height.checked_rem(epoch_length_blocks.max(1)) == Some(0);
        let mut changed = self.rebuild;
        if epoch_end {
            let mut bonds = self.bonds.clone();
            for change in std::mem::take(&mut self.pending) {
                match change {
                    StakeChange::Join { id, stake } => {
                        bonds.entry(id).or_insert(Bond {
                            stake,
                            jailed: None,
                        });
                    }
                    StakeChange::SetStake { id, stake } => {
                        if let Some(b) = bonds.get_mut(&id) {
                            b.stake = stake;
                        }
                    }
                    StakeChange::Leave { id } => {
                        bonds.remove(&id);
                    }
                    StakeChange::Unjail { id } => {
                        if let Some(b) = bonds.get_mut(&id) {
                            b.jailed = None;
                        }
                    }
                }
                changed = true;
            }
            if Self::set_from(&bonds).is_ok() {
                self.bonds = bonds;
            }
        }
        self.rebuild = false;
        if changed {
            if let Ok(set) = Self::set_from(&self.bonds) {
                if set.validators() != self.active.validators() {
                    self.active = set;
                    return true;
                }
            }
        }
        self.active = self.active.next_height();
        false
    }

    fn set_from(bonds: &BTreeMap<ValidatorId, Bond>) -> Result<ValidatorSet, SetError> {
        ValidatorSet::new(
            bonds
                .iter()
                .filter(|(_, b)| !b.is_jailed() && b.stake > 0)
                .map(|(id, b)| Validator {
                    id: *id,
                    stake: b.stake,
                })
                .collect(),
        )
    }

    /// A digest of bonds, the active set, pending changes and punished offences.
    pub fn hash(&self) -> Hash {
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        w.bytes32(&self.active.hash().0);
        self.write_bonds(&mut w);
        Hash(*blake3::hash(&out).as_bytes())
    }

    /// Encoding: the active set ([`ValidatorSet::write`]), then bonds, pending changes and
    /// punished offences as [`Staking::hash`] lays them out.
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        self.active.write(w);
        self.write_bonds(w);
    }

    /// `u32` count and per bond key, `u64` stake, jailed flag (then `u64` height); `u32`
    /// count and the pending changes; `u32` count and per offence key and `u64` height.
    fn write_bonds(&self, w: &mut Writer<'_>) {
        w.count(self.bonds.len());
        for (id, b) in &self.bonds {
            w.bytes32(&id.0);
            w.u64(b.stake);
            match b.jailed {
                None => w.u8(0),
                Some(at) => {
                    w.u8(1);
                    w.u64(at);
                }
            }
        }
        w.count(self.pending.len());
        for c in &self.pending {
            c.write(w);
        }
        w.count(self.punished.len());
        for (id, h) in &self.punished {
            w.bytes32(&id.0);
            w.u64(*h);
        }
    }

    /// Reads what [`Staking::write`] wrote (keys strictly ascending).
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Staking, DecodeError> {
        let active = ValidatorSet::read(r)?;
        let mut bonds = BTreeMap::new();
        for _ in 0..r.count(32 + 8 + 1)? {
            let id = ValidatorId(r.bytes32()?);
            let stake = r.u64()?;
            let jailed = r.option("jailed", Reader::u64)?;
            if bonds.last_key_value().is_some_and(|(last, _)| *last >= id) {
                return Err(DecodeError::Invalid("bond keys not ascending"));
            }
            bonds.insert(id, Bond { stake, jailed });
        }
        let n = r.count(1 + 32)?;
        let pending = (0..n)
            .map(|_| StakeChange::read(r))
            .collect::<Result<_, _>>()?;
        let mut punished = BTreeSet::new();
        for _ in 0..r.count(32 + 8)? {
            let offence = (ValidatorId(r.bytes32()?), r.u64()?);
            if punished.last().is_some_and(|last| *last >= offence) {
                return Err(DecodeError::Invalid("punished offences not ascending"));
            }
            punished.insert(offence);
        }
        Ok(Staking {
            bonds,
            active,
            pending,
            punished,
            rebuild: false,
        })
    }
}

/// A stake must be positive and at least the chain's minimum.
fn check_stake(stake: u64, rules: &StakeRules) -> Result<(), StakeError> {
    if stake == 0 {
        return Err(StakeError::ZeroStake);
    }
    if stake < rules.min_stake {
        return Err(StakeError::BelowMinimum {
            min: rules.min_stake,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{SignedVote, Vote, VoteKind};
    use crate::types::{Ed25519, Keypair};

    const R: StakeRules = StakeRules {
        height: 0,
        min_stake: 1,
        jail_period_blocks: 0,
    };

    fn id(n: u8) -> ValidatorId {
        ValidatorId([n; 32])
    }

    fn set(stakes: &[u64]) -> ValidatorSet {
        ValidatorSet::new(
            stakes
                .iter()
                .enumerate()
                .map(|(i, s)| Validator {
                    id: id(i as u8 + 1),
                    stake: *s,
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn quorums_are_strict_thirds_of_stake() {
        let s = set(&[1, 1, 1, 1]);
        assert!(!s.is_quorum(2));
        assert!(s.is_quorum(3));
        assert!(!s.exceeds_one_third(1));
        assert!(s.exceeds_one_third(2));
        let s = set(&[1, 1, 1]);
        assert!(!s.is_quorum(2), "exactly 2/3 is not more than 2/3");
        assert!(s.is_quorum(3));
        assert!(!s.exceeds_one_third(1), "exactly 1/3 is not more than 1/3");
        let s = set(&[u64::MAX / 2, u64::MAX / 2]);
        assert!(s.is_quorum(u64::MAX / 2 + u64::MAX / 4 + 2));
    }

    #[test]
    fn bad_sets_are_refused() {
        assert_eq!(ValidatorSet::new(vec![]), Err(SetError::Empty));
        let v = Validator {
            id: id(1),
            stake: 0,
        };
        assert_eq!(ValidatorSet::new(vec![v]), Err(SetError::ZeroStake(id(1))));
        let v = Validator {
            id: id(1),
            stake: 1,
        };
        assert_eq!(
            ValidatorSet::new(vec![v, v]),
            Err(SetError::Duplicate(id(1)))
        );
        let big = |n| Validator {
            id: id(n),
            stake: u64::MAX,
        };
        assert_eq!(
            ValidatorSet::new(vec![big(1), big(2)]),
            Err(SetError::StakeOverflow)
        );
    }

    #[test]
    fn proposers_rotate_in_proportion_to_stake() {
        let s = set(&[1, 2, 3, 4]);
        let mut counts = BTreeMap::new();
        let mut h = s.clone();
        for _ in 0..1000 {
            *counts.entry(h.proposer(0)).or_insert(0u32) += 1;
            h = h.next_height();
        }
        assert_eq!(counts[&id(1)], 100);
        assert_eq!(counts[&id(2)], 200);
        assert_eq!(counts[&id(3)], 300);
        assert_eq!(counts[&id(4)], 400);
        // Round r of a height is the proposer r heights on (same priority walk).
        let mut schedule = ProposerSchedule::new(&s);
        let mut later = s.clone();
        for r in 0..20 {
            assert_eq!(schedule.proposer(r), later.proposer(0));
            later = later.next_height();
        }
        // Equal stakes: round robin in key order.
        let e = set(&[5, 5, 5]);
        let order: Vec<_> = (0..6).map(|r| e.proposer(r)).collect();
        assert_eq!(order, vec![id(1), id(2), id(3), id(1), id(2), id(3)]);
    }

    fn double_vote(k: &Keypair, chain: &[u8; 32], height: Height) -> Evidence {
        let vote = |value| {
            let vote = Vote {
                kind: VoteKind::Prevote,
                height,
                round: 0,
                value,
                validator: k.id(),
            };
            SignedVote {
                vote,
                signature: k.sign(&vote.signing_bytes(chain)),
            }
        };
        Evidence::double_vote(vote(Some(Hash([1; 32]))), vote(None))
    }

    #[test]
    fn slashing_cuts_rounded_up_jails_and_dedupes() {
        let keys: Vec<_> = (1..=4u8).map(|i| Keypair::from_seed([i; 32])).collect();
        let chain = [9; 32];
        let mut st = Staking::genesis(
            keys.iter()
                .map(|k| Validator {
                    id: k.id(),
                    stake: 1001,
                })
                .collect(),
        )
        .unwrap();
        st.queue(
            StakeChange::SetStake {
                id: keys[0].id(),
                stake: 5,
            },
            R,
        )
        .unwrap();
        let ev = double_vote(&keys[0], &chain, 3);
        assert_eq!(
            st.slash(&ev, 2, 500, 100, &chain, &Ed25519),
            Err(EvidenceRejected::OutOfRange)
        );
        assert_eq!(
            st.slash(&ev, 3, 500, 100, &[0; 32], &Ed25519),
            Err(EvidenceRejected::Invalid(EvidenceError::BadSignature))
        );
        // 1001 * 5% = 50.05, rounded up to 51.
        assert_eq!(st.slash(&ev, 4, 500, 100, &chain, &Ed25519), Ok(51));
        assert_eq!(
            st.bond(&keys[0].id()),
            Some(Bond {
                stake: 950,
                jailed: Some(4)
            })
        );
        assert!(st.pending().is_empty(), "a jailed validator's changes drop");
        assert_eq!(
            st.slash(&ev, 4, 500, 100, &chain, &Ed25519),
            Err(EvidenceRejected::AlreadyPunished)
        );
        assert_eq!(
            st.queue(StakeChange::Leave { id: keys[0].id() }, R),
            Err(StakeError::Jailed)
        );
        // Mid-epoch: the jailed validator is out at the next height.
        assert!(st.end_block(4, 10));
        assert_eq!(st.active().len(), 3);
        assert_eq!(st.active().stake_of(&keys[0].id()), None);
        let old = double_vote(&keys[1], &chain, 1);
        assert_eq!(
            st.slash(&old, 200, 500, 100, &chain, &Ed25519),
            Err(EvidenceRejected::OutOfRange)
        );
    }

    #[test]
    fn changes_wait_for_the_epoch_boundary() {
        let mut st = Staking::genesis(vec![
            Validator {
                id: id(1),
                stake: 10,
            },
            Validator {
                id: id(2),
                stake: 10,
            },
        ])
        .unwrap();
        st.queue(
            StakeChange::Join {
                id: id(3),
                stake: 7,
            },
            R,
        )
        .unwrap();
        assert_eq!(
            st.queue(
                StakeChange::Join {
                    id: id(3),
                    stake: 7
                },
                R,
            ),
            Err(StakeError::AlreadyBonded)
        );
        st.queue(StakeChange::Leave { id: id(1) }, R).unwrap();
        st.queue(
            StakeChange::SetStake {
                id: id(2),
                stake: 20,
            },
            R,
        )
        .unwrap();
        assert_eq!(
            st.queue(StakeChange::Leave { id: id(9) }, R),
            Err(StakeError::NotBonded)
        );
        for h in 1..5 {
            assert!(!st.end_block(h, 5));
            assert_eq!(st.active().len(), 2);
        }
        assert!(st.end_block(5, 5));
        let v = st.active().validators();
        assert_eq!(
            v,
            &[
                Validator {
                    id: id(2),
                    stake: 20
                },
                Validator {
                    id: id(3),
                    stake: 7
                }
            ]
        );
        // Leaving would empty the set: not applied.
        st.queue(StakeChange::Leave { id: id(2) }, R).unwrap();
        st.queue(StakeChange::Leave { id: id(3) }, R).unwrap();
        assert!(!st.end_block(10, 5));
        assert_eq!(st.active().len(), 2);
    }

    #[test]
    fn a_jailed_validator_unjails_after_its_period_if_its_stake_is_enough() {
        let keys: Vec<_> = (1..=4u8).map(|i| Keypair::from_seed([i; 32])).collect();
        let chain = [9; 32];
        let stakes = [100, 100, 100, 21];
        let mut st = Staking::genesis(
            keys.iter()
                .zip(stakes)
                .map(|(k, stake)| Validator { id: k.id(), stake })
                .collect(),
        )
        .unwrap();
        let rules = |height| StakeRules {
            height,
            min_stake: 20,
            jail_period_blocks: 10,
        };
        let unjail = |k: &Keypair| StakeChange::Unjail { id: k.id() };
        assert_eq!(
            st.queue(unjail(&keys[0]), rules(3)),
            Err(StakeError::NotJailed)
        );
        assert_eq!(
            st.queue(unjail(&Keypair::from_seed([9; 32])), rules(3)),
            Err(StakeError::NotBonded)
        );
        let set_low = StakeChange::SetStake {
            id: keys[1].id(),
            stake: 19,
        };
        assert_eq!(
            st.queue(set_low, rules(3)),
            Err(StakeError::BelowMinimum { min: 20 })
        );
        // Validator 0 is jailed in block 4 (100 - 5 = 95), validator 3 too (21 - 2 = 19).
        for (k, at) in [(&keys[0], 3), (&keys[3], 3)] {
            st.slash(&double_vote(k, &chain, at), 4, 500, 100, &chain, &Ed25519)
                .unwrap();
        }
        assert!(st.end_block(4, 5));
        assert_eq!(st.active().len(), 2);
        assert_eq!(
            st.queue(unjail(&keys[0]), rules(13)),
            Err(StakeError::StillJailed { until: 14 })
        );
        assert_eq!(
            st.queue(unjail(&keys[3]), rules(14)),
            Err(StakeError::BelowMinimum { min: 20 }),
            "19 left after the cut"
        );
        st.queue(unjail(&keys[0]), rules(14)).unwrap();
        assert!(!st.end_block(14, 5), "mid-epoch: still out");
        assert_eq!(st.active().stake_of(&keys[0].id()), None);
        assert!(st.end_block(15, 5), "back at the epoch boundary");
        assert_eq!(st.active().stake_of(&keys[0].id()), Some(95));
        assert_eq!(st.bond(&keys[0].id()).unwrap().jailed, None);
        assert!(st.bond(&keys[3].id()).unwrap().is_jailed());
    }
}
