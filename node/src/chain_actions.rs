//! Staking, slashing and governance actions from any key: a validator's pool of complete
//! `SignedAction`s that clients submit (`nexus stake`, `nexus gov`), docs/node.md
//! "Staking and governance actions".
//!
//! A client sends an action's canonical bytes ([`SignedAction::encode`], hex) on the JSON
//! port: `{"op":"action","action":"<hex>"}`. The validator checks it against its chain
//! state after the last block and answers at once:
//!
//! - `{"ev":"action_admitted","line","hash"}`: pooled; it is forwarded to the other
//!   validators (frame 3, an item `0xAC || bytes`), which pool it on their own checks, so
//!   whichever validator proposes next carries it;
//! - `{"ev":"action_refused","line","reason","detail"}`, `reason` one of [`ActionRefusal`]'s
//!   codes: `malformed`, `bad_signature` (not the signer's signature over this chain's id),
//!   `stale_nonce` (below the signer's next), `nonce_too_far` (more than [`NONCE_WINDOW`]
//!   ahead), `duplicate` (that signer and nonce are pooled already), `unknown_signer` (no
//!   bond, and not a `Join`), `pool_full`, `rate_limited` (the connection's transaction
//!   rate, which action lines share).
//!
//! Then, once a decided block holds it: `{"ev":"action_included","line","hash","height",
//! "applied":true,"proposal"}` (`proposal`: the id a `Propose` opened) or `"applied":false`
//! with the chain's `reason` and `detail` ([`outcome_reason`]); or, if it left the pool
//! unincluded, `{"ev":"action_evicted","line","hash","height","reason"}` (`nonce_used`:
//! another action of that signer took the nonce; `nonce_gap`: the nonces before it never
//! came within [`GAP_BLOCKS`] blocks).
//!
//! Proposals carry, per signer (in key order), the pooled actions whose nonces follow the
//! signer's next one without a gap, at most [`ACTIONS_PER_BLOCK`] in all. The pool is not
//! state: nothing of it reaches a root except through the decided blocks.

use std::collections::BTreeMap;

use consensus::block::Block;
use consensus::chain::{ActionOutcome, ChainState};
use consensus::governance::{Action, ChainParams, ParamKey, SignedAction};
use consensus::types::{Ed25519, Height, ValidatorId};
use consensus::validators::StakeChange;
use serde_json::{json, Value};

use crate::validator::hex;

pub use txport::{ACTION_ITEM_TAG, MAX_ACTION_LEN};

/// Most actions pooled at once.
pub const MAX_POOLED: usize = 256;
/// How far past a signer's next nonce an action may be (it waits for the ones before it).
pub const NONCE_WINDOW: u64 = 16;
/// Most pooled actions one proposal carries.
pub const ACTIONS_PER_BLOCK: usize = 64;
/// Blocks an action waiting for earlier nonces stays pooled.
pub const GAP_BLOCKS: u64 = 100;

/// Who asked for a pooled action: JSON connection and line.
pub type Asker = (u64, u64);

/// Why an action was not pooled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionRefusal {
    /// Not hex, or not an action's canonical encoding.
    #[error("not an action's canonical encoding: {0}")]
    Malformed(String),
    /// The signature is not the signer's over this chain's id.
    #[error("the signature is not the signer's over this chain's id")]
    BadSignature,
    /// The nonce is below the signer's next one.
    #[error("nonce below the signer's next, {expected}")]
    StaleNonce {
        /// The signer's next nonce.
        expected: u64,
    },
    /// The nonce is more than [`NONCE_WINDOW`] past the signer's next one.
    #[error("nonce more than {NONCE_WINDOW} past the signer's next, {expected}")]
    NonceTooFar {
        /// The signer's next nonce.
        expected: u64,
    },
    /// An action of that signer with that nonce is pooled already.
    #[error("an action of this signer with this nonce is pooled already")]
    Duplicate,
    /// The signer has no bond and the action is not a `Join`.
    #[error("the signer is not bonded (only a join may come from a new key)")]
    UnknownSigner,
    /// The pool holds [`MAX_POOLED`] actions.
    #[error("{MAX_POOLED} actions are pooled already")]
    PoolFull,
    /// The connection sent more lines a second than its rate limit.
    #[error("the connection sent more than its rate limit")]
    RateLimited,
}

impl ActionRefusal {
    /// The refusal's code on the JSON port.
    pub fn code(&self) -> &'static str {
        match self {
            ActionRefusal::Malformed(_) => "malformed",
            ActionRefusal::BadSignature => "bad_signature",
            ActionRefusal::StaleNonce { .. } => "stale_nonce",
            ActionRefusal::NonceTooFar { .. } => "nonce_too_far",
            ActionRefusal::Duplicate => "duplicate",
            ActionRefusal::UnknownSigner => "unknown_signer",
            ActionRefusal::PoolFull => "pool_full",
            ActionRefusal::RateLimited => "rate_limited",
        }
    }
}

/// A pooled action and who waits for it here.
struct Entry {
    action: SignedAction,
    hash: String,
    asker: Option<Asker>,
    admitted_at: Height,
}

/// The validator's pool of actions from clients and peers.
#[derive(Default)]
pub struct ActionPool {
    entries: BTreeMap<(ValidatorId, u64), Entry>,
    forward: Vec<Vec<u8>>,
    /// Whether a proposal after the last admission or block would carry something.
    ready: bool,
}

impl ActionPool {
    /// An empty pool.
    pub fn new() -> ActionPool {
        ActionPool::default()
    }

    /// Whether a proposal would carry an action now (one is pooled whose nonce is its
    /// signer's next).
    pub fn has_ready(&self) -> bool {
        self.ready
    }

    /// How many actions are pooled.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is pooled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks `bytes` against `chain` (the state after the last block) and pools the
    /// action; returns its hash (hex). `asker` is told what became of it (none for a
    /// peer's). Admitted actions of a client are queued for forwarding.
    pub fn admit(
        &mut self,
        bytes: &[u8],
        chain: &ChainState,
        asker: Option<Asker>,
    ) -> Result<String, ActionRefusal> {
        if bytes.len() > MAX_ACTION_LEN {
            return Err(ActionRefusal::Malformed(format!(
                "{} bytes, at most {MAX_ACTION_LEN}",
                bytes.len()
            )));
        }
        let action =
            SignedAction::decode(bytes).map_err(|e| ActionRefusal::Malformed(e.to_string()))?;
        self.check(&action, chain)?;
        let hash = hex(blake3::hash(bytes).as_bytes());
        let entry = Entry {
            action,
            hash: hash.clone(),
            asker,
            admitted_at: chain.height(),
        };
        if asker.is_some() {
            let mut item = vec![ACTION_ITEM_TAG];
            item.extend_from_slice(bytes);
            self.forward.push(item);
        }
        let key = (entry.action.signer, entry.action.nonce);
        self.ready |= entry.action.nonce == chain.next_nonce(&key.0);
        self.entries.insert(key, entry);
        Ok(hash)
    }

    /// Signature, nonce window, duplicates, signer and room.
    fn check(&self, action: &SignedAction, chain: &ChainState) -> Result<(), ActionRefusal> {
        if !action.verify(chain.chain_id(), &Ed25519) {
            return Err(ActionRefusal::BadSignature);
        }
        let expected = chain.next_nonce(&action.signer);
        if action.nonce < expected {
            return Err(ActionRefusal::StaleNonce { expected });
        }
        if action.nonce - expected >= NONCE_WINDOW {
            return Err(ActionRefusal::NonceTooFar { expected });
        }
        if self.entries.contains_key(&(action.signer, action.nonce)) {
            return Err(ActionRefusal::Duplicate);
        }
        let joins = matches!(action.action, Action::Join { .. });
        if !joins && chain.staking().bond(&action.signer).is_none() {
            return Err(ActionRefusal::UnknownSigner);
        }
        if self.entries.len() >= MAX_POOLED {
            return Err(ActionRefusal::PoolFull);
        }
        Ok(())
    }

    /// Pools a peer's forwarded action (its own checks; a refusal is the peer's client's,
    /// who heard of it from that peer).
    pub fn admit_forwarded(&mut self, item: &[u8], chain: &ChainState) {
        if let Some(bytes) = item.strip_prefix(&[ACTION_ITEM_TAG]) {
            let _ = self.admit(bytes, chain, None);
        }
    }

    /// The items to forward to the other validators (tagged), taken once.
    pub fn take_forward(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.forward)
    }

    /// Pooled actions of `signer` whose nonces follow its next one without a gap.
    fn ready_of(&self, signer: ValidatorId, chain: &ChainState) -> impl Iterator<Item = &Entry> {
        let first = chain.next_nonce(&signer);
        self.entries
            .range((signer, first)..=(signer, u64::MAX))
            .zip(first..)
            .take_while(|((key, _), want)| key.1 == *want)
            .map(|((_, entry), _)| entry)
    }

    /// The next nonce a new action of `signer` should use: its chain nonce, past the ones
    /// pooled here in a row.
    pub fn next_nonce(&self, signer: ValidatorId, chain: &ChainState) -> u64 {
        chain.next_nonce(&signer) + self.ready_of(signer, chain).count() as u64
    }

    /// The actions a proposal for the block after `chain` carries.
    pub fn proposal(&self, chain: &ChainState) -> Vec<SignedAction> {
        let mut signers: Vec<ValidatorId> = self.entries.keys().map(|(s, _)| *s).collect();
        signers.dedup();
        signers
            .into_iter()
            .flat_map(|signer| self.ready_of(signer, chain))
            .take(ACTIONS_PER_BLOCK)
            .map(|entry| entry.action.clone())
            .collect()
    }

    /// After a decided block (`chain` after it): its pooled actions leave the pool with
    /// their outcomes, and actions that can no longer be included are evicted. Returns
    /// each answer owed to an asker.
    pub fn on_block(&mut self, block: &Block, chain: &ChainState) -> Vec<(Asker, Value)> {
        let height = block.height;
        let mut answers = Vec::new();
        let outcomes = &chain.last_report().actions;
        for (action, outcome) in block.actions.iter().zip(outcomes) {
            let key = (action.signer, action.nonce);
            if self.entries.get(&key).is_some_and(|e| e.action == *action) {
                let entry = self.entries.remove(&key).expect("present");
                if let Some(asker) = entry.asker {
                    let mut value = included(&entry, height, outcome);
                    value["line"] = json!(asker.1);
                    answers.push((asker, value));
                }
            }
        }
        let gone: Vec<(ValidatorId, u64)> = self
            .entries
            .iter()
            .filter_map(|(key, e)| evict_reason(e, chain).map(|_| *key))
            .collect();
        for key in gone {
            let entry = self.entries.remove(&key).expect("present");
            let reason = evict_reason(&entry, chain).expect("evicted");
            if let Some(asker) = entry.asker {
                let value = json!({"ev": "action_evicted", "line": asker.1,
                    "hash": entry.hash, "height": height, "reason": reason});
                answers.push((asker, value));
            }
        }
        self.ready = !self.proposal(chain).is_empty();
        answers
    }
}

/// Why a pooled action can no longer be included, if so.
fn evict_reason(entry: &Entry, chain: &ChainState) -> Option<&'static str> {
    let next = chain.next_nonce(&entry.action.signer);
    if entry.action.nonce < next {
        return Some("nonce_used");
    }
    let waited = chain.height().saturating_sub(entry.admitted_at);
    (entry.action.nonce > next && waited > GAP_BLOCKS).then_some("nonce_gap")
}

/// The `action_included` answer for `entry`, decided at `height` with `outcome`.
fn included(entry: &Entry, height: Height, outcome: &ActionOutcome) -> Value {
    let mut value = json!({"ev": "action_included", "hash": entry.hash, "height": height});
    match outcome {
        ActionOutcome::Applied(proposal) => {
            value["applied"] = json!(true);
            if let Some(id) = proposal {
                value["proposal"] = json!(id);
            }
        }
        refused => {
            let (reason, detail) = outcome_reason(refused);
            value["applied"] = json!(false);
            value["reason"] = json!(reason);
            value["detail"] = json!(detail);
        }
    }
    value
}

/// A refused action's code and explanation, from the chain's outcome.
pub fn outcome_reason(outcome: &ActionOutcome) -> (&'static str, String) {
    use consensus::governance::GovError;
    use consensus::validators::StakeError;
    let code = match outcome {
        ActionOutcome::Applied(_) => "applied",
        ActionOutcome::BadSignature => "bad_signature",
        ActionOutcome::BadNonce { .. } => "bad_nonce",
        ActionOutcome::Stake(e) => match e {
            StakeError::AlreadyBonded => "already_bonded",
            StakeError::NotBonded => "not_bonded",
            StakeError::Jailed => "jailed",
            StakeError::ZeroStake => "zero_stake",
            StakeError::BelowMinimum { .. } => "below_minimum",
            StakeError::NotJailed => "not_jailed",
            StakeError::StillJailed { .. } => "still_jailed",
        },
        ActionOutcome::Gov(e) => match e {
            GovError::NotValidator => "not_validator",
            GovError::UnknownProposal => "unknown_proposal",
            GovError::Closed => "closed",
            GovError::TooManyOpenProposals { .. } => "too_many_open_proposals",
        },
    };
    let detail = match outcome {
        ActionOutcome::Stake(e) => e.to_string(),
        ActionOutcome::Gov(e) => e.to_string(),
        ActionOutcome::BadNonce { expected } => format!("expected nonce {expected}"),
        other => format!("{other:?}"),
    };
    (code, detail)
}

/// `{"op":"action","action":"<hex>"}`: the immediate answer, and whether the action was
/// pooled (its asker then waits for `action_included` or `action_evicted`).
pub fn action_line(
    pool: &mut ActionPool,
    chain: &ChainState,
    request: &Value,
    asker: Asker,
) -> (Value, bool) {
    let line = asker.1;
    let bytes = request
        .get("action")
        .and_then(Value::as_str)
        .ok_or_else(|| ActionRefusal::Malformed("`action` must be a hex string".into()))
        .and_then(|text| {
            alloy_primitives::hex::decode(text)
                .map_err(|_| ActionRefusal::Malformed("`action` is not hex".into()))
        });
    match bytes.and_then(|bytes| pool.admit(&bytes, chain, Some(asker))) {
        Ok(hash) => (
            json!({"ev": "action_admitted", "line": line, "hash": hash}),
            true,
        ),
        Err(refusal) => (
            json!({"ev": "action_refused", "line": line, "reason": refusal.code(),
                "detail": refusal.to_string()}),
            false,
        ),
    }
}

/// `{"op":"staking"}` (optionally `"key":"<hex>"`): chain id, height, parameters, the
/// active set, bonds, queued changes, the actions pooled here, and the key's next nonce
/// (pool included).
pub fn staking_view(pool: &ActionPool, chain: &ChainState, request: &Value, line: u64) -> Value {
    let staking = chain.staking();
    let validators: Vec<Value> = chain
        .validators()
        .validators()
        .iter()
        .map(|v| json!({"key": hex(&v.id.0), "stake": v.stake}))
        .collect();
    let pending: Vec<Value> = staking.pending().iter().map(change_json).collect();
    let mut value = json!({
        "ev": "staking", "line": line, "chain_id": hex(chain.chain_id()),
        "height": chain.height(), "params": params_json(&chain.governance().params),
        "validators": validators, "bonds": bonds_json(chain), "pending": pending,
        "pooled": pool.len(),
    });
    if let Some(text) = request.get("key").and_then(Value::as_str) {
        match crate::validator::unhex32(text) {
            Ok(key) => {
                let id = ValidatorId(key);
                value["key"] = json!(hex(&key));
                value["next_nonce"] = json!(pool.next_nonce(id, chain));
            }
            Err(e) => {
                return json!({"ev": "error", "line": line, "reason": "malformed",
                    "detail": e.to_string()})
            }
        }
    }
    value
}

/// Every bond in key order: key, stake, and the block that jailed it (null if not jailed).
fn bonds_json(chain: &ChainState) -> Vec<Value> {
    chain
        .staking()
        .bonds()
        .map(|(id, b)| json!({"key": hex(&id.0), "stake": b.stake, "jailed_at": b.jailed}))
        .collect()
}

/// A queued stake change.
fn change_json(change: &StakeChange) -> Value {
    let key = hex(&change.id().0);
    match change {
        StakeChange::Join { stake, .. } => json!({"change": "join", "key": key, "stake": stake}),
        StakeChange::SetStake { stake, .. } => {
            json!({"change": "set_stake", "key": key, "stake": stake})
        }
        StakeChange::Leave { .. } => json!({"change": "leave", "key": key}),
        StakeChange::Unjail { .. } => json!({"change": "unjail", "key": key}),
    }
}

/// The chain parameters by name.
fn params_json(p: &ChainParams) -> Value {
    let named = ParamKey::ALL.map(|key| (key.name().to_string(), Value::from(p.get(key))));
    Value::Object(named.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use consensus::types::{Hash, Keypair};
    use consensus::validators::Validator;

    const CHAIN: [u8; 32] = [3; 32];

    fn chain(keys: &[Keypair]) -> ChainState {
        let validators = keys.iter().map(|k| Validator {
            id: k.id(),
            stake: 10,
        });
        let params = ChainParams {
            epoch_length_blocks: 2,
            ..ChainParams::default()
        };
        ChainState::genesis(CHAIN, validators.collect(), params, vec![]).unwrap()
    }

    fn block(height: u64, actions: Vec<SignedAction>) -> Block {
        Block {
            height,
            timestamp_ns: height,
            proposer: ValidatorId([0; 32]),
            prev_hash: Hash::ZERO,
            prev_exec_root: Hash::ZERO,
            evidence: vec![],
            actions,
            payload: vec![].into(),
        }
    }

    fn sign(key: &Keypair, nonce: u64, action: Action) -> Vec<u8> {
        SignedAction::sign(key, nonce, action, &CHAIN).encode()
    }

    #[test]
    fn stake_show_prints_every_chain_parameter_by_name() {
        let params = ChainParams {
            slash_fraction_bps: 250,
            ..ChainParams::default()
        };
        let json = params_json(&params);
        assert_eq!(json.as_object().unwrap().len(), ParamKey::ALL.len());
        assert_eq!(json["slash_fraction_bps"], 250);
        assert_eq!(json["max_open_proposals_per_proposer"], 8);
        assert_eq!(json["epoch_length_blocks"], 100);
    }

    /// Refusals are typed and leave nothing pooled; an admitted action is forwarded once,
    /// and the peer that pools it proposes it too.
    #[test]
    fn admission_refuses_by_reason_and_forwards_what_it_pools() {
        let keys: Vec<_> = (1..=2u8).map(|i| Keypair::from_seed([i; 32])).collect();
        let state = chain(&keys);
        let mut pool = ActionPool::new();
        let mut forged = sign(&keys[0], 1, Action::Leave);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let stranger = Keypair::from_seed([9; 32]);
        let refusals = [
            (forged, ActionRefusal::BadSignature),
            (
                sign(&keys[0], 0, Action::Leave),
                ActionRefusal::StaleNonce { expected: 1 },
            ),
            (
                sign(&keys[0], 17, Action::Leave),
                ActionRefusal::NonceTooFar { expected: 1 },
            ),
            (
                sign(&stranger, 1, Action::Leave),
                ActionRefusal::UnknownSigner,
            ),
        ];
        for (bytes, refusal) in refusals {
            assert_eq!(pool.admit(&bytes, &state, Some((1, 1))), Err(refusal));
        }
        assert!(matches!(
            pool.admit(&[1, 2, 3], &state, None),
            Err(ActionRefusal::Malformed(_))
        ));
        assert!(pool.is_empty() && pool.take_forward().is_empty());
        // A gap waits: nonce 2 is pooled but not proposed until nonce 1 comes.
        let second = sign(&keys[0], 2, Action::SetStake { stake: 5 });
        pool.admit(&second, &state, Some((1, 2))).unwrap();
        assert!(pool.proposal(&state).is_empty() && !pool.has_ready());
        assert_eq!(
            pool.admit(&second, &state, None),
            Err(ActionRefusal::Duplicate)
        );
        let first = sign(&keys[0], 1, Action::Leave);
        pool.admit(&first, &state, Some((1, 3))).unwrap();
        let join = sign(&stranger, 1, Action::Join { stake: 4 });
        pool.admit(&join, &state, Some((1, 4))).unwrap();
        assert_eq!(pool.next_nonce(keys[0].id(), &state), 3);
        let mut peer = ActionPool::new();
        for item in pool.take_forward() {
            assert_eq!(item[0], ACTION_ITEM_TAG);
            peer.admit_forwarded(&item, &state);
        }
        assert!(pool.take_forward().is_empty(), "forwarded once");
        assert!(
            peer.take_forward().is_empty(),
            "a peer's actions are not forwarded again"
        );
        let proposed = peer.proposal(&state);
        assert_eq!(proposed, pool.proposal(&state));
        let encoded: Vec<Vec<u8>> = proposed.iter().map(SignedAction::encode).collect();
        let mut expected = vec![first, second, join];
        expected.sort_by_key(|bytes| SignedAction::decode(bytes).unwrap().signer);
        assert_eq!(encoded, expected, "by signer, in nonce order");
    }

    /// A decided block's actions are answered with their outcomes; an action whose nonce
    /// another action took is evicted.
    #[test]
    fn decided_blocks_answer_included_actions_and_evict_the_stale() {
        let keys: Vec<_> = (1..=2u8).map(|i| Keypair::from_seed([i; 32])).collect();
        let mut state = chain(&keys);
        let mut pool = ActionPool::new();
        let leave = sign(&keys[0], 1, Action::Leave);
        let unjail = sign(&keys[1], 1, Action::Unjail);
        let rival = sign(&keys[1], 1, Action::SetStake { stake: 7 });
        pool.admit(&leave, &state, Some((5, 1))).unwrap();
        pool.admit(&unjail, &state, Some((5, 2))).unwrap();
        let mut other = ActionPool::new();
        other.admit(&rival, &state, Some((6, 1))).unwrap();
        // The block holds our leave and another validator's client's action of nonce 1.
        let decided = block(
            1,
            vec![
                SignedAction::decode(&leave).unwrap(),
                SignedAction::decode(&rival).unwrap(),
            ],
        );
        state.apply_block(&decided, &Ed25519);
        let answers = pool.on_block(&decided, &state);
        assert_eq!(answers.len(), 2, "{answers:?}");
        let (asker, included) = &answers[0];
        assert_eq!(*asker, (5, 1));
        assert_eq!(
            (included["ev"].as_str(), included["applied"].as_bool()),
            (Some("action_included"), Some(true))
        );
        let (asker, evicted) = &answers[1];
        assert_eq!(*asker, (5, 2));
        assert_eq!(
            (evicted["ev"].as_str(), evicted["reason"].as_str()),
            (Some("action_evicted"), Some("nonce_used"))
        );
        assert!(pool.is_empty());
        // The other pool's client hears that its action was included and applied.
        let answers = other.on_block(&decided, &state);
        assert_eq!(answers[0].1["applied"], true);
        // A refused outcome carries the chain's reason.
        let late = sign(&keys[1], 2, Action::Unjail);
        pool.admit(&late, &state, Some((5, 3))).unwrap();
        let decided = block(2, vec![SignedAction::decode(&late).unwrap()]);
        state.apply_block(&decided, &Ed25519);
        let answers = pool.on_block(&decided, &state);
        assert_eq!(
            (
                answers[0].1["applied"].as_bool(),
                answers[0].1["reason"].as_str()
            ),
            (Some(false), Some("not_jailed"))
        );
    }
}
