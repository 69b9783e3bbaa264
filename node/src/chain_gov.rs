//! Governance from a validator's JSON development port: proposals and votes this validator
//! signs with its own key (docs/node.md, "Governance").
//!
//! A development path, like the rest of the port: the operator on loopback asks, the
//! validator signs a consensus-layer action (`consensus::governance::Action`), queues it and
//! puts it into its own proposals (nonces from the chain state, in queue order) until a
//! decided block holds it. In a chain of one validator that is the next block; in a
//! devnet, the next block this validator proposes. Lines:
//!
//! - `{"op":"gov_propose","upgrade":{"id":1,"version":1,"code":"notary"}}` (`code`: a
//!   co-processor this binary carries, or `code_hash`: 64 hex digits),
//!   `{"op":"gov_propose","activate":1}`, `{"op":"gov_propose","deactivate":1}`,
//!   `{"op":"gov_propose","set_param":{"id":1,"key":"max_records","value":3}}`;
//! - `{"op":"gov_vote","proposal":1,"approve":true}`;
//! - `{"op":"governance"}`: registry and proposals after the last block.
//!
//! Answers: `gov_queued` at once; `gov_included` (`height`, `proposal`) once a decided block
//! holds it, or `gov_refused` (`reason`) if that block refused it (not a validator, unknown
//! or closed proposal, too many open proposals of this validator).

use consensus::block::Block;
use consensus::chain::ChainState;
use consensus::governance::{Action as GovAction, Governance, ProposalKind, SignedAction};
use consensus::types::{Hash, Keypair, ValidatorId};
use serde_json::{json, Value};

/// Most actions queued at once (a full queue refuses the line).
pub const MAX_QUEUED: usize = 64;

/// Who asked for a queued action: connection and line.
pub type Asker = (u64, u64);

/// This validator's queued governance actions and the last governance state.
pub struct GovQueue {
    key: Keypair,
    queued: Vec<(GovAction, Asker)>,
    governance: Option<Governance>,
}

impl GovQueue {
    /// A queue signing with `key` (the validator's).
    pub fn new(key: Keypair) -> GovQueue {
        GovQueue {
            key,
            queued: Vec::new(),
            governance: None,
        }
    }

    /// Whether actions wait for a block.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Whether an action of connection `id` waits for a block (its answer is still due).
    pub fn waits_for(&self, id: u64) -> bool {
        self.queued
            .iter()
            .any(|(_, (connection, _))| *connection == id)
    }

    /// Queues the action of a `gov_propose` or `gov_vote` line.
    pub fn push(&mut self, request: &Value, from: Asker) -> Result<Value, String> {
        let action = parse(request)?;
        if self.queued.len() >= MAX_QUEUED {
            return Err(format!(
                "{MAX_QUEUED} governance actions wait for a block already"
            ));
        }
        self.queued.push((action, from));
        Ok(json!({"ev": "gov_queued", "line": from.1}))
    }

    /// The key that signs the queued actions.
    pub fn signer(&self) -> ValidatorId {
        self.key.id()
    }

    /// The queued actions signed with the nonces `chain` expects next, after `skip` actions
    /// of this key that the proposal carries already (from the action pool), for a
    /// proposal.
    pub fn actions(&self, chain: &ChainState, skip: u64) -> Vec<SignedAction> {
        let first = chain.next_nonce(&self.key.id()) + skip;
        let id = *chain.chain_id();
        (first..)
            .zip(&self.queued)
            .map(|(nonce, (action, _))| SignedAction::sign(&self.key, nonce, action.clone(), &id))
            .collect()
    }

    /// After a decided block: the queued actions it holds leave the queue, each with its
    /// answer for its asker.
    pub fn applied(&mut self, block: &Block, chain: &ChainState) -> Vec<(Asker, Value)> {
        self.governance = Some(chain.governance().clone());
        let me = self.key.id();
        let mut answers = Vec::new();
        for signed in block.actions.iter().filter(|a| a.signer == me) {
            let Some(at) = self.queued.iter().position(|(a, _)| *a == signed.action) else {
                continue;
            };
            let (action, from) = self.queued.remove(at);
            answers.push((from, outcome(&action, &me, block.height, chain, from.1)));
        }
        answers
    }

    /// `{"op":"governance"}`: the registry and proposals after the last block.
    pub fn view(&self, line: u64) -> Value {
        let Some(governance) = &self.governance else {
            return json!({"ev": "governance", "line": line, "registry": [], "proposals": []});
        };
        let registry: Vec<Value> = governance
            .registry()
            .map(|c| json!({
                "id": c.id, "version": c.version, "code_hash": crate::validator::hex(&c.code_hash.0),
                "active": c.active, "params": c.params,
            }))
            .collect();
        let proposals: Vec<Value> = governance
            .proposals()
            .map(|p| json!({
                "id": p.id, "kind": format!("{:?}", p.kind), "status": format!("{:?}", p.status),
                "yes": p.votes.values().filter(|v| **v).count(),
                "no": p.votes.values().filter(|v| !**v).count(),
            }))
            .collect();
        json!({"ev": "governance", "line": line, "registry": registry, "proposals": proposals})
    }
}

/// What became of an included action of `me`: a proposal's id, a vote counted, or a
/// refusal.
fn outcome(
    action: &GovAction,
    me: &ValidatorId,
    height: u64,
    chain: &ChainState,
    line: u64,
) -> Value {
    let governance = chain.governance();
    let found = match action {
        // Submitted in this block: its voting ends a period after it.
        GovAction::Propose(kind) => governance
            .proposals()
            .filter(|p| p.proposer == *me && p.kind == *kind)
            .filter(|p| p.voting_ends + 1 == height + governance.params.voting_period_blocks)
            .map(|p| p.id)
            .max(),
        GovAction::Vote { proposal, approve } => governance
            .proposal(*proposal)
            .filter(|p| p.votes.get(me) == Some(approve))
            .map(|p| p.id),
        _ => None,
    };
    match found {
        Some(proposal) => {
            json!({"ev": "gov_included", "line": line, "height": height, "proposal": proposal})
        }
        None => json!({
            "ev": "gov_refused", "line": line, "height": height,
            "reason": "the block refused it (not a validator, an unknown or closed proposal, \
                or too many open proposals of this validator)",
        }),
    }
}

/// The action of a `gov_propose` or `gov_vote` line.
fn parse(request: &Value) -> Result<GovAction, String> {
    let op = request.get("op").and_then(Value::as_str).unwrap_or("");
    if op == "gov_vote" {
        let proposal = request.get("proposal").and_then(Value::as_u64);
        let approve = request.get("approve").and_then(Value::as_bool);
        let (Some(proposal), Some(approve)) = (proposal, approve) else {
            return Err("gov_vote needs `proposal` (integer) and `approve` (true or false)".into());
        };
        return Ok(GovAction::Vote { proposal, approve });
    }
    Ok(GovAction::Propose(proposal_kind(request)?))
}

/// The proposal a `gov_propose` line names.
fn proposal_kind(request: &Value) -> Result<ProposalKind, String> {
    let id_of = |value: &Value| {
        value
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| "a co-processor id is an integer 0..2^32".to_string())
    };
    if let Some(id) = request.get("activate") {
        return Ok(ProposalKind::Activate { id: id_of(id)? });
    }
    if let Some(id) = request.get("deactivate") {
        return Ok(ProposalKind::Deactivate { id: id_of(id)? });
    }
    if let Some(set) = request.get("set_param") {
        let key = set
            .get("key")
            .and_then(Value::as_str)
            .ok_or("set_param needs `key`")?;
        let value = set
            .get("value")
            .and_then(Value::as_u64)
            .ok_or("set_param needs `value`")?;
        let id = id_of(set.get("id").unwrap_or(&Value::Null))?;
        return Ok(ProposalKind::SetCoprocessorParam {
            id,
            key: key.to_string(),
            value,
        });
    }
    if let Some(upgrade) = request.get("upgrade") {
        let id = id_of(upgrade.get("id").unwrap_or(&Value::Null))?;
        let version = upgrade.get("version").and_then(Value::as_u64).unwrap_or(1);
        let version = u32::try_from(version).map_err(|_| "`version` is a 32-bit integer")?;
        return Ok(ProposalKind::Upgrade {
            id,
            version,
            code_hash: Hash(code_hash(upgrade)?),
        });
    }
    Err("gov_propose needs one of `upgrade`, `activate`, `deactivate`, `set_param`".into())
}

/// `code` (a co-processor this binary carries, by name) or `code_hash` (hex).
fn code_hash(upgrade: &Value) -> Result<[u8; 32], String> {
    if let Some(name) = upgrade.get("code").and_then(Value::as_str) {
        let catalog = execution::Catalog::builtin();
        let found = catalog
            .by_name(name)
            .ok_or(format!("this binary carries no co-processor {name:?}"))?;
        return Ok(found.code_hash);
    }
    let text = upgrade
        .get("code_hash")
        .and_then(Value::as_str)
        .ok_or("upgrade needs `code` or `code_hash`")?;
    let hash = crate::validator::unhex32(text).map_err(|e| e.to_string())?;
    // Registering code no validator carries is harmless until it is activated, which would
    // stop every validator without it: this validator proposes only code it runs.
    if execution::Catalog::builtin().find(&hash).is_none() {
        return Err("this binary carries no co-processor with that code hash".into());
    }
    Ok(hash)
}
