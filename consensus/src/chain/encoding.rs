//! The binary encoding of a [`ChainState`], carried by snapshots so that a validator can
//! start after a block without replaying the chain from genesis (docs/consensus.md,
//! "State sync and pruning", has the layout byte by byte).
//!
//! Canonical (one state, one encoding) and versioned by its first bytes ([`MAGIC`]).
//! Decoding checks every length against the bytes present before allocating, refuses
//! trailing bytes, tags out of range, unsorted or duplicate keys and values that break an
//! invariant the state machine relies on; whoever restores a state also checks its
//! [`ChainState::hash`] against a digest it trusts.

use std::collections::BTreeMap;

use super::{ActionOutcome, BlockReport, ChainState};
use crate::codec::{DecodeError, Reader, Writer};
use crate::governance::{GovError, Governance};
use crate::messages::EvidenceError;
use crate::types::ValidatorId;
use crate::validators::{EvidenceRejected, StakeError, Staking};

/// First bytes of an encoded chain state: name and format version 2 (version 1, before
/// the proposal retention and per-proposer cap parameters, is refused).
pub const MAGIC: &[u8; 8] = b"nxchain\x02";

impl ChainState {
    /// The state's canonical encoding ([`ChainState::decode`] reads it back).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        for b in MAGIC {
            w.u8(*b);
        }
        w.bytes32(&self.chain_id);
        w.u64(self.height);
        self.staking.write(&mut w);
        self.governance.write(&mut w);
        w.count(self.nonces.len());
        for (id, n) in &self.nonces {
            w.bytes32(&id.0);
            w.u64(*n);
        }
        write_report(&self.last_report, &mut w);
        out
    }

    /// Reads [`ChainState::encode`]'s bytes; a typed error for anything else.
    pub fn decode(bytes: &[u8]) -> Result<ChainState, DecodeError> {
        let mut r = Reader::new(bytes);
        for (i, b) in MAGIC.iter().enumerate() {
            let value = r.u8()?;
            if value != *b {
                let field = if i + 1 == MAGIC.len() {
                    "chain state version"
                } else {
                    "chain state magic"
                };
                return Err(DecodeError::BadTag { field, value });
            }
        }
        let chain_id = r.bytes32()?;
        let height = r.u64()?;
        let staking = Staking::read(&mut r)?;
        let governance = Governance::read(&mut r)?;
        if !governance.retained_at(height) {
            return Err(DecodeError::Invalid(
                "finished proposal outside its retention window",
            ));
        }
        let mut nonces = BTreeMap::new();
        for _ in 0..r.count(32 + 8)? {
            let id = ValidatorId(r.bytes32()?);
            if nonces.last_key_value().is_some_and(|(last, _)| *last >= id) {
                return Err(DecodeError::Invalid("nonce keys not ascending"));
            }
            nonces.insert(id, r.u64()?);
        }
        let last_report = read_report(&mut r)?;
        r.finish()?;
        Ok(ChainState {
            chain_id,
            height,
            staking,
            governance,
            nonces,
            last_report,
        })
    }
}

/// `u32` count and the evidence outcomes; `u32` count and the action outcomes; `u32`
/// count and the passed ids; set-changed flag.
fn write_report(report: &BlockReport, w: &mut Writer<'_>) {
    w.count(report.evidence.len());
    for e in &report.evidence {
        match e {
            Ok(cut) => {
                w.u8(0);
                w.u64(*cut);
            }
            Err(EvidenceRejected::Invalid(why)) => {
                w.u8(1);
                w.u8(*why as u8);
            }
            Err(EvidenceRejected::UnknownValidator) => w.u8(2),
            Err(EvidenceRejected::OutOfRange) => w.u8(3),
            Err(EvidenceRejected::AlreadyPunished) => w.u8(4),
        }
    }
    w.count(report.actions.len());
    for a in &report.actions {
        write_outcome(a, w);
    }
    w.count(report.passed.len());
    for id in &report.passed {
        w.u64(*id);
    }
    w.u8(report.set_changed as u8);
}

fn read_report(r: &mut Reader<'_>) -> Result<BlockReport, DecodeError> {
    let n = r.count(1)?;
    let evidence = (0..n)
        .map(|_| read_evidence_outcome(r))
        .collect::<Result<_, _>>()?;
    let n = r.count(1)?;
    let actions = (0..n).map(|_| read_outcome(r)).collect::<Result<_, _>>()?;
    let n = r.count(8)?;
    let passed = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
    let set_changed = r.flag("set changed")?;
    Ok(BlockReport {
        evidence,
        actions,
        passed,
        set_changed,
    })
}

fn bad(field: &'static str, value: u8) -> DecodeError {
    DecodeError::BadTag { field, value }
}

fn read_evidence_outcome(r: &mut Reader<'_>) -> Result<Result<u64, EvidenceRejected>, DecodeError> {
    Ok(match r.u8()? {
        0 => Ok(r.u64()?),
        1 => Err(EvidenceRejected::Invalid(match r.u8()? {
            0 => EvidenceError::NotSameSlot,
            1 => EvidenceError::NotConflicting,
            2 => EvidenceError::BadSignature,
            value => return Err(bad("evidence error", value)),
        })),
        2 => Err(EvidenceRejected::UnknownValidator),
        3 => Err(EvidenceRejected::OutOfRange),
        4 => Err(EvidenceRejected::AlreadyPunished),
        value => return Err(bad("evidence outcome", value)),
    })
}

/// Tag 0 applied (flag, then `u64` proposal id), 1 bad signature, 2 bad nonce (`u64`
/// expected), 3 stake error (tag, `u64` for 4 and 6), 4 governance error (tag, `u64` for
/// 3).
fn write_outcome(a: &ActionOutcome, w: &mut Writer<'_>) {
    match a {
        ActionOutcome::Applied(id) => {
            w.u8(0);
            match id {
                None => w.u8(0),
                Some(id) => {
                    w.u8(1);
                    w.u64(*id);
                }
            }
        }
        ActionOutcome::BadSignature => w.u8(1),
        ActionOutcome::BadNonce { expected } => {
            w.u8(2);
            w.u64(*expected);
        }
        ActionOutcome::Stake(e) => {
            w.u8(3);
            write_stake_error(e, w);
        }
        ActionOutcome::Gov(e) => {
            w.u8(4);
            write_gov_error(e, w);
        }
    }
}

fn write_gov_error(e: &GovError, w: &mut Writer<'_>) {
    let (tag, value) = match *e {
        GovError::NotValidator => (0, None),
        GovError::UnknownProposal => (1, None),
        GovError::Closed => (2, None),
        GovError::TooManyOpenProposals { max } => (3, Some(max)),
    };
    w.u8(tag);
    if let Some(v) = value {
        w.u64(v);
    }
}

fn write_stake_error(e: &StakeError, w: &mut Writer<'_>) {
    let (tag, value) = match *e {
        StakeError::AlreadyBonded => (0, None),
        StakeError::NotBonded => (1, None),
        StakeError::Jailed => (2, None),
        StakeError::ZeroStake => (3, None),
        StakeError::BelowMinimum { min } => (4, Some(min)),
        StakeError::NotJailed => (5, None),
        StakeError::StillJailed { until } => (6, Some(until)),
    };
    w.u8(tag);
    if let Some(v) = value {
        w.u64(v);
    }
}

fn read_outcome(r: &mut Reader<'_>) -> Result<ActionOutcome, DecodeError> {
    Ok(match r.u8()? {
        0 => ActionOutcome::Applied(r.option("applied id", Reader::u64)?),
        1 => ActionOutcome::BadSignature,
        2 => ActionOutcome::BadNonce { expected: r.u64()? },
        3 => ActionOutcome::Stake(match r.u8()? {
            0 => StakeError::AlreadyBonded,
            1 => StakeError::NotBonded,
            2 => StakeError::Jailed,
            3 => StakeError::ZeroStake,
            4 => StakeError::BelowMinimum { min: r.u64()? },
            5 => StakeError::NotJailed,
            6 => StakeError::StillJailed { until: r.u64()? },
            value => return Err(bad("stake error", value)),
        }),
        4 => ActionOutcome::Gov(match r.u8()? {
            0 => GovError::NotValidator,
            1 => GovError::UnknownProposal,
            2 => GovError::Closed,
            3 => GovError::TooManyOpenProposals { max: r.u64()? },
            value => return Err(bad("governance error", value)),
        }),
        value => return Err(bad("action outcome", value)),
    })
}

#[cfg(test)]
mod tests;
