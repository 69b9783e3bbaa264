//! The consensus-layer state machine: what a decided block does to the validator set,
//! the registry and governance. Pure and deterministic; every validator applies the same
//! blocks in the same order and reaches the same [`ChainState::hash`].
//!
//! Order within `apply_block(block at height h)`:
//! 1. proposals that passed in block `h - 1` apply (governance `begin_block`);
//! 2. each piece of evidence is verified and its offender slashed and jailed;
//! 3. each action is checked (signature, nonce = previous + 1) and applied; a refused
//!    action with a good signature and nonce still uses its nonce;
//! 4. governance tallies open proposals with the stakes of the set that decided `h`, then
//!    drops the proposals whose retention window ends with `h`;
//! 5. the validator set for `h + 1` is computed (queued changes at epoch boundaries).
//!
//! Rejections are values in the returned [`BlockReport`], never errors: a block that
//! consensus decided is applied whatever it contains. The last block's report is kept
//! ([`ChainState::last_report`]) for whoever answers the actions' submitters; it is derived
//! from the block and the state, so it is not part of [`ChainState::hash`].

use std::collections::BTreeMap;

use crate::block::Block;
use crate::governance::{Action, ChainParams, Coprocessor, GovError, Governance, SignedAction};
use crate::types::{Hash, Height, SignatureVerifier, ValidatorId};
use crate::validators::{
    EvidenceRejected, SetError, StakeChange, StakeError, StakeRules, Staking, Validator,
    ValidatorSet,
};

mod encoding;

pub use encoding::MAGIC as ENCODING_MAGIC;

/// What happened to each action of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionOutcome {
    /// Applied (for `Propose`, the new proposal id).
    Applied(Option<u64>),
    /// Bad signature: ignored, nonce not used.
    BadSignature,
    /// Nonce is not the signer's previous + 1: ignored.
    BadNonce {
        /// The nonce expected.
        expected: u64,
    },
    /// A staking change was refused.
    Stake(StakeError),
    /// A proposal or vote was refused.
    Gov(GovError),
}

/// The outcome of applying one block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockReport {
    /// Per evidence: the stake cut, or why none.
    pub evidence: Vec<Result<u64, EvidenceRejected>>,
    /// Per action, in block order.
    pub actions: Vec<ActionOutcome>,
    /// Proposals that passed in this block (they apply at the start of the next one).
    pub passed: Vec<u64>,
    /// True if the validator set for the next height differs in membership or stakes.
    pub set_changed: bool,
}

/// Validator set, governance and per-signer nonces after the last applied block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    chain_id: [u8; 32],
    height: Height,
    staking: Staking,
    governance: Governance,
    nonces: BTreeMap<ValidatorId, u64>,
    last_report: BlockReport,
}

impl ChainState {
    /// The state before block 1.
    pub fn genesis(
        chain_id: [u8; 32],
        validators: Vec<Validator>,
        params: ChainParams,
        registry: Vec<Coprocessor>,
    ) -> Result<ChainState, SetError> {
        Ok(ChainState {
            chain_id,
            height: 0,
            staking: Staking::genesis(validators)?,
            governance: Governance::genesis(params, registry),
            nonces: BTreeMap::new(),
            last_report: BlockReport::default(),
        })
    }

    /// The chain id every signature is bound to.
    pub fn chain_id(&self) -> &[u8; 32] {
        &self.chain_id
    }

    /// Height of the last applied block (0 before block 1).
    pub fn height(&self) -> Height {
        self.height
    }

    /// The validator set that decides block `height() + 1`.
    pub fn validators(&self) -> &ValidatorSet {
        self.staking.active()
    }

    /// Staking state.
    pub fn staking(&self) -> &Staking {
        &self.staking
    }

    /// Registry, parameters and proposals.
    pub fn governance(&self) -> &Governance {
        &self.governance
    }

    /// What the last applied block did (its actions' outcomes in block order).
    pub fn last_report(&self) -> &BlockReport {
        &self.last_report
    }

    /// The next nonce `signer` must use.
    pub fn next_nonce(&self, signer: &ValidatorId) -> u64 {
        self.nonces.get(signer).copied().unwrap_or(0) + 1
    }

    /// Whether the next block may carry `actions`: each one's signature verifies, and each
    /// signer's actions come with consecutive nonces from its next one (what an honest
    /// proposer takes from its pool). Checked before a validator votes for a block, so a
    /// proposer cannot fill blocks with actions that can only be refused.
    pub fn actions_valid(
        &self,
        actions: &[SignedAction],
        verifier: &dyn SignatureVerifier,
    ) -> bool {
        let mut next: BTreeMap<ValidatorId, u64> = BTreeMap::new();
        actions.iter().all(|a| {
            let expected = next
                .entry(a.signer)
                .or_insert_with(|| self.next_nonce(&a.signer));
            let ok = a.nonce == *expected && a.verify(&self.chain_id, verifier);
            *expected += 1;
            ok
        })
    }

    /// Applies a decided block. Panics if it is not the next height (the caller feeds
    /// decided blocks in order; anything else is a broken invariant).
    pub fn apply_block(&mut self, block: &Block, verifier: &dyn SignatureVerifier) -> BlockReport {
        let h = block.height;
        assert_eq!(h, self.height + 1, "blocks are applied in height order");
        let mut report = BlockReport::default();
        let deciding_set = self.staking.active().clone();
        self.governance.begin_block(h);
        let params = self.governance.params;
        for e in &block.evidence {
            report.evidence.push(self.staking.slash(
                e,
                h,
                params.slash_fraction_bps,
                params.evidence_max_age_blocks,
                &self.chain_id,
                verifier,
            ));
        }
        for a in &block.actions {
            let outcome = self.apply_action(a, h, &deciding_set, verifier);
            report.actions.push(outcome);
        }
        report.passed = self.governance.end_block(
            h,
            |id| deciding_set.stake_of(id),
            deciding_set.total_stake(),
        );
        let params = self.governance.params;
        report.set_changed = self.staking.end_block(h, params.epoch_length_blocks);
        self.height = h;
        self.last_report = report.clone();
        report
    }

    fn apply_action(
        &mut self,
        a: &SignedAction,
        h: Height,
        deciding_set: &ValidatorSet,
        verifier: &dyn SignatureVerifier,
    ) -> ActionOutcome {
        if !a.verify(&self.chain_id, verifier) {
            return ActionOutcome::BadSignature;
        }
        let expected = self.next_nonce(&a.signer);
        if a.nonce != expected {
            return ActionOutcome::BadNonce { expected };
        }
        self.nonces.insert(a.signer, expected);
        let id = a.signer;
        let rules = StakeRules {
            height: h,
            min_stake: self.governance.params.min_stake,
            jail_period_blocks: self.governance.params.jail_period_blocks,
        };
        let mut stake = |change| {
            self.staking
                .queue(change, rules)
                .map_err(ActionOutcome::Stake)
        };
        let is_validator = deciding_set.stake_of(&id).is_some();
        let result = match &a.action {
            Action::Join { stake: s } => stake(StakeChange::Join { id, stake: *s }).map(|_| None),
            Action::SetStake { stake: s } => {
                stake(StakeChange::SetStake { id, stake: *s }).map(|_| None)
            }
            Action::Leave => stake(StakeChange::Leave { id }).map(|_| None),
            Action::Unjail => stake(StakeChange::Unjail { id }).map(|_| None),
            Action::Propose(kind) if is_validator => self
                .governance
                .submit(id, kind.clone(), h)
                .map(Some)
                .map_err(ActionOutcome::Gov),
            Action::Vote { proposal, approve } if is_validator => self
                .governance
                .vote(id, *proposal, *approve)
                .map(|_| None)
                .map_err(ActionOutcome::Gov),
            Action::Propose(_) | Action::Vote { .. } => {
                Err(ActionOutcome::Gov(GovError::NotValidator))
            }
        };
        match result {
            Ok(p) => ActionOutcome::Applied(p),
            Err(e) => e,
        }
    }

    /// A digest of the whole consensus-layer state; equal on every validator that applied
    /// the same blocks.
    pub fn hash(&self) -> Hash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"nexus-bft/v1/chain-state\0");
        hasher.update(&self.chain_id);
        hasher.update(&self.height.to_le_bytes());
        hasher.update(&self.staking.hash().0);
        hasher.update(&self.governance.hash().0);
        hasher.update(&(self.nonces.len() as u64).to_le_bytes());
        for (id, n) in &self.nonces {
            hasher.update(&id.0);
            hasher.update(&n.to_le_bytes());
        }
        Hash(*hasher.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::{ProposalKind, ProposalStatus};
    use crate::messages::{Evidence, SignedVote, Vote, VoteKind};
    use crate::types::{Ed25519, Keypair};

    const CHAIN: [u8; 32] = [5; 32];

    /// Block `h` with `evidence` and `actions` (the other fields fixed), for chain-state
    /// tests here and in `encoding`.
    pub(super) fn block(h: Height, evidence: Vec<Evidence>, actions: Vec<SignedAction>) -> Block {
        Block {
            height: h,
            timestamp_ns: h,
            proposer: ValidatorId([0; 32]),
            prev_hash: Hash::ZERO,
            prev_exec_root: Hash::ZERO,
            evidence,
            actions,
            payload: vec![].into(),
        }
    }

    #[test]
    fn a_block_may_carry_only_signed_actions_in_nonce_order() {
        let keys: Vec<_> = (1..=2u8).map(|i| Keypair::from_seed([i; 32])).collect();
        let set = keys
            .iter()
            .map(|k| Validator {
                id: k.id(),
                stake: 100,
            })
            .collect();
        let mut st = ChainState::genesis(CHAIN, set, ChainParams::default(), vec![]).unwrap();
        let sign = |k: &Keypair, nonce| SignedAction::sign(k, nonce, Action::Unjail, &CHAIN);
        let valid = |st: &ChainState, actions: &[SignedAction]| st.actions_valid(actions, &Ed25519);
        // Each signer's actions from its next nonce, in a row, interleaved with others'.
        let good = [sign(&keys[0], 1), sign(&keys[1], 1), sign(&keys[0], 2)];
        assert!(valid(&st, &good));
        assert!(valid(&st, &[]));
        // A gap, a repeat, a stale nonce, an action signed by another key.
        assert!(!valid(&st, &[sign(&keys[0], 2)]));
        assert!(!valid(&st, &[sign(&keys[0], 1), sign(&keys[0], 1)]));
        let mut forged = sign(&keys[1], 1);
        forged.signer = keys[0].id();
        assert!(!valid(&st, &[forged]));
        // After a block, the next nonces follow it: nonce 1 is stale, 3 is next.
        st.apply_block(&block(1, vec![], good.to_vec()), &Ed25519);
        assert!(!valid(&st, &[sign(&keys[0], 1)]));
        assert!(valid(&st, &[sign(&keys[0], 3), sign(&keys[1], 2)]));
    }

    #[test]
    fn blocks_drive_governance_staking_and_slashing() {
        let keys: Vec<_> = (1..=4u8).map(|i| Keypair::from_seed([i; 32])).collect();
        let params = ChainParams {
            epoch_length_blocks: 4,
            ..ChainParams::default()
        };
        let mut st = ChainState::genesis(
            CHAIN,
            keys.iter()
                .map(|k| Validator {
                    id: k.id(),
                    stake: 100,
                })
                .collect(),
            params,
            vec![],
        )
        .unwrap();
        let sign = |k: &Keypair, nonce, action| SignedAction::sign(k, nonce, action, &CHAIN);
        let newcomer = Keypair::from_seed([9; 32]);
        let upgrade = ProposalKind::Upgrade {
            id: 1,
            version: 2,
            code_hash: Hash([7; 32]),
        };
        let mut forged = sign(&keys[1], 1, Action::Leave);
        forged.signer = keys[2].id();
        let r = st.apply_block(
            &block(
                1,
                vec![],
                vec![
                    sign(&keys[0], 1, Action::Propose(upgrade.clone())),
                    sign(&newcomer, 1, Action::Join { stake: 50 }),
                    sign(&newcomer, 2, Action::Propose(upgrade)),
                    sign(&keys[0], 1, Action::Leave),
                    forged,
                ],
            ),
            &Ed25519,
        );
        assert_eq!(
            r.actions,
            vec![
                ActionOutcome::Applied(Some(1)),
                ActionOutcome::Applied(None),
                ActionOutcome::Gov(GovError::NotValidator),
                ActionOutcome::BadNonce { expected: 2 },
                ActionOutcome::BadSignature,
            ]
        );
        let votes = (0..3)
            .map(|i| {
                sign(
                    &keys[i],
                    if i == 0 { 2 } else { 1 },
                    Action::Vote {
                        proposal: 1,
                        approve: true,
                    },
                )
            })
            .collect();
        let r = st.apply_block(&block(2, vec![], votes), &Ed25519);
        assert_eq!(r.passed, vec![1]);
        assert!(st.governance().coprocessor(1).is_none());
        // Block 3: the upgrade applies; evidence against keys[3] slashes and jails it.
        let vote = |value| {
            let vote = Vote {
                kind: VoteKind::Precommit,
                height: 2,
                round: 1,
                value,
                validator: keys[3].id(),
            };
            SignedVote {
                vote,
                signature: keys[3].sign(&vote.signing_bytes(&CHAIN)),
            }
        };
        let ev = Evidence::double_vote(vote(None), vote(Some(Hash([1; 32]))));
        let r = st.apply_block(&block(3, vec![ev, ev], vec![]), &Ed25519);
        assert_eq!(
            r.evidence,
            vec![Ok(5), Err(EvidenceRejected::AlreadyPunished)]
        );
        assert!(r.set_changed);
        assert_eq!(
            st.governance().proposal(1).unwrap().status,
            ProposalStatus::Applied { at: 3 }
        );
        assert_eq!(st.governance().coprocessor(1).unwrap().version, 2);
        assert_eq!(st.validators().len(), 3);
        // Block 4 ends the epoch: the newcomer joins.
        let r = st.apply_block(&block(4, vec![], vec![]), &Ed25519);
        assert!(r.set_changed);
        assert_eq!(st.validators().stake_of(&newcomer.id()), Some(50));
        assert_eq!(st.validators().len(), 4);
        // Same blocks, same hash.
        assert_ne!(st.hash(), Hash::ZERO);
    }

    /// Evidence jails validator 3 in block 2; its unjail is refused until the jail period
    /// (3 blocks) is over, accepted in block 5, and it is back in the set after block 8 (the
    /// epoch boundary) with its slashed stake. The action survives its canonical encoding.
    #[test]
    fn a_slashed_validator_unjails_by_action_at_the_epoch_boundary() {
        let keys: Vec<_> = (1..=4u8).map(|i| Keypair::from_seed([i; 32])).collect();
        let params = ChainParams {
            epoch_length_blocks: 4,
            jail_period_blocks: 3,
            min_stake: 50,
            ..ChainParams::default()
        };
        let validators = keys.iter().map(|k| Validator {
            id: k.id(),
            stake: 100,
        });
        let mut st = ChainState::genesis(CHAIN, validators.collect(), params, vec![]).unwrap();
        let offender = &keys[3];
        let vote = |value| {
            let vote = Vote {
                kind: VoteKind::Prevote,
                height: 1,
                round: 0,
                value,
                validator: offender.id(),
            };
            SignedVote {
                vote,
                signature: offender.sign(&vote.signing_bytes(&CHAIN)),
            }
        };
        st.apply_block(&block(1, vec![], vec![]), &Ed25519);
        let ev = Evidence::double_vote(vote(None), vote(Some(Hash([1; 32]))));
        let r = st.apply_block(&block(2, vec![ev], vec![]), &Ed25519);
        assert_eq!(r.evidence, vec![Ok(5)]);
        assert_eq!(st.validators().stake_of(&offender.id()), None);
        let unjail = |nonce| SignedAction::sign(offender, nonce, Action::Unjail, &CHAIN);
        let early = unjail(1);
        assert_eq!(SignedAction::decode(&early.encode()), Ok(early.clone()));
        st.apply_block(&block(3, vec![], vec![]), &Ed25519);
        let r = st.apply_block(&block(4, vec![], vec![early]), &Ed25519);
        assert_eq!(
            r.actions,
            vec![ActionOutcome::Stake(StakeError::StillJailed { until: 5 })]
        );
        assert_eq!(st.last_report(), &r);
        assert_eq!(st.validators().len(), 3, "epoch boundary 4: still jailed");
        let r = st.apply_block(&block(5, vec![], vec![unjail(2)]), &Ed25519);
        assert_eq!(r.actions, vec![ActionOutcome::Applied(None)]);
        for h in 6..=7 {
            st.apply_block(&block(h, vec![], vec![]), &Ed25519);
            assert_eq!(st.validators().stake_of(&offender.id()), None);
        }
        let r = st.apply_block(&block(8, vec![], vec![]), &Ed25519);
        assert!(r.set_changed);
        assert_eq!(st.validators().stake_of(&offender.id()), Some(95));
        let r = st.apply_block(&block(9, vec![], vec![unjail(3)]), &Ed25519);
        assert_eq!(r.actions, vec![ActionOutcome::Stake(StakeError::NotJailed)]);
    }
}
