//! Co-processor registry, chain parameters, governance proposals and the signed actions
//! (staking and governance) that blocks carry.
//!
//! Rules:
//! - Any active validator may submit a proposal; it is open for `voting_period_blocks`
//!   blocks from the block that includes it.
//! - Active validators vote yes or no; a later vote by the same validator replaces the
//!   earlier one. Votes are tallied at the end of every block with the stakes of the set
//!   that decided it; a proposal passes when its yes stake is more than 2/3 of that set's
//!   total stake (`3·yes > 2·total`), and is rejected when its period ends without passing.
//! - A proposal that passed in block `h` is applied at the start of block `h + 1` (the
//!   block boundary after it passes), in the order proposals passed. If it cannot apply
//!   (say, activating an unknown co-processor), it is marked failed; nothing else changes.
//! - A proposal is open while voting or passed and not yet applied. A validator may have at
//!   most `max_open_proposals_per_proposer` open at once; a proposal over that is refused
//!   ([`GovError::TooManyOpenProposals`]), so no validator can grow the open set at will.
//! - A finished proposal (applied, rejected or failed in block `f`) stays queryable for
//!   `proposal_retention_blocks` blocks and is dropped at the end of block
//!   `f + proposal_retention_blocks`, after the tally: the state, the per-block tally and
//!   [`Governance::hash`] are bounded by the open and recently finished proposals, not by
//!   every proposal ever submitted.
//! - Co-processor upgrades must raise the version; a first "upgrade" registers the entry,
//!   inactive. Activation, deactivation and parameter changes need an existing entry.
//!   Co-processor 0 ([`BASE_COPROCESSOR`]) cannot be upgraded.
//!
//! Action signing bytes: `"nexus-bft/v1/action\0" || chain_id[32] || signer[32] ||
//! nonce u64 || action`, where `action` is its encoding (tag u8, then fields):
//!
//! | tag | action | fields |
//! |---|---|---|
//! | 1 | Join | stake u64 |
//! | 2 | SetStake | stake u64 |
//! | 3 | Leave | |
//! | 4 | Propose | proposal kind (below) |
//! | 5 | Vote | proposal u64, approve u8 |
//! | 6 | Unjail | |
//!
//! Proposal kinds: 1 Upgrade (id u32, version u32, code_hash `[32]`); 2 Activate (id u32);
//! 3 Deactivate (id u32); 4 SetCoprocessorParam (id u32, key: u32 length + UTF-8, value
//! u64); 5 SetChainParam (key u8, value u64). Parameter keys: 1 epoch length, 2 slash
//! fraction, 3 voting period, 4 evidence max age, 5 jail period, 6 minimum stake, 7
//! proposal retention, 8 most open proposals per proposer.

use std::collections::BTreeMap;

use crate::codec::{DecodeError, Reader, Writer};
use crate::types::{Hash, Height, SignatureBytes, SignatureVerifier, ValidatorId};

const ACTION_DOMAIN: &[u8] = b"nexus-bft/v1/action\0";

/// Chain parameters that governance can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainParams {
    /// Blocks per epoch; validator-set changes apply at epoch boundaries. At least 1.
    pub epoch_length_blocks: u64,
    /// Fraction of stake cut for a double signature, in basis points (at most 10 000).
    pub slash_fraction_bps: u32,
    /// How long a proposal stays open for votes, in blocks. At least 1.
    pub voting_period_blocks: u64,
    /// Oldest evidence accepted, in blocks behind the including block.
    pub evidence_max_age_blocks: u64,
    /// Blocks a jailed validator waits, from the block that jailed it, before an unjail is
    /// accepted.
    pub jail_period_blocks: u64,
    /// Least stake to join, to set, or to be left with for an unjail. At least 1.
    pub min_stake: u64,
    /// Blocks a finished proposal stays in the state after the block `f` that finished it:
    /// it is dropped at the end of block `f + proposal_retention_blocks`. At least 1, so
    /// the state after block `f` still shows how it ended.
    pub proposal_retention_blocks: u64,
    /// Most open (voting, or passed and not yet applied) proposals one validator may have
    /// at once. At least 1, so governance can always raise it again.
    pub max_open_proposals_per_proposer: u64,
}

impl Default for ChainParams {
    fn default() -> Self {
        ChainParams {
            epoch_length_blocks: 100,
            slash_fraction_bps: 500,
            voting_period_blocks: 50,
            evidence_max_age_blocks: 1000,
            jail_period_blocks: 100,
            min_stake: 1,
            proposal_retention_blocks: 1000,
            max_open_proposals_per_proposer: 8,
        }
    }
}

/// Names of the [`ChainParams`] fields, for governance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ParamKey {
    /// [`ChainParams::epoch_length_blocks`].
    EpochLengthBlocks,
    /// [`ChainParams::slash_fraction_bps`].
    SlashFractionBps,
    /// [`ChainParams::voting_period_blocks`].
    VotingPeriodBlocks,
    /// [`ChainParams::evidence_max_age_blocks`].
    EvidenceMaxAgeBlocks,
    /// [`ChainParams::jail_period_blocks`].
    JailPeriodBlocks,
    /// [`ChainParams::min_stake`].
    MinStake,
    /// [`ChainParams::proposal_retention_blocks`].
    ProposalRetentionBlocks,
    /// [`ChainParams::max_open_proposals_per_proposer`].
    MaxOpenProposalsPerProposer,
}

impl ParamKey {
    /// Every parameter, in code order.
    pub const ALL: [ParamKey; 8] = [
        ParamKey::EpochLengthBlocks,
        ParamKey::SlashFractionBps,
        ParamKey::VotingPeriodBlocks,
        ParamKey::EvidenceMaxAgeBlocks,
        ParamKey::JailPeriodBlocks,
        ParamKey::MinStake,
        ParamKey::ProposalRetentionBlocks,
        ParamKey::MaxOpenProposalsPerProposer,
    ];

    /// The parameter's name: its [`ChainParams`] field's (in configurations, the CLI and
    /// JSON).
    pub fn name(self) -> &'static str {
        match self {
            ParamKey::EpochLengthBlocks => "epoch_length_blocks",
            ParamKey::SlashFractionBps => "slash_fraction_bps",
            ParamKey::VotingPeriodBlocks => "voting_period_blocks",
            ParamKey::EvidenceMaxAgeBlocks => "evidence_max_age_blocks",
            ParamKey::JailPeriodBlocks => "jail_period_blocks",
            ParamKey::MinStake => "min_stake",
            ParamKey::ProposalRetentionBlocks => "proposal_retention_blocks",
            ParamKey::MaxOpenProposalsPerProposer => "max_open_proposals_per_proposer",
        }
    }

    /// The parameter named `name` ([`ParamKey::name`]), if any.
    pub fn from_name(name: &str) -> Option<ParamKey> {
        ParamKey::ALL.into_iter().find(|key| key.name() == name)
    }

    fn code(self) -> u8 {
        match self {
            ParamKey::EpochLengthBlocks => 1,
            ParamKey::SlashFractionBps => 2,
            ParamKey::VotingPeriodBlocks => 3,
            ParamKey::EvidenceMaxAgeBlocks => 4,
            ParamKey::JailPeriodBlocks => 5,
            ParamKey::MinStake => 6,
            ParamKey::ProposalRetentionBlocks => 7,
            ParamKey::MaxOpenProposalsPerProposer => 8,
        }
    }
    fn from_code(code: u8) -> Result<ParamKey, DecodeError> {
        Ok(match code {
            1 => ParamKey::EpochLengthBlocks,
            2 => ParamKey::SlashFractionBps,
            3 => ParamKey::VotingPeriodBlocks,
            4 => ParamKey::EvidenceMaxAgeBlocks,
            5 => ParamKey::JailPeriodBlocks,
            6 => ParamKey::MinStake,
            7 => ParamKey::ProposalRetentionBlocks,
            8 => ParamKey::MaxOpenProposalsPerProposer,
            value => {
                return Err(DecodeError::BadTag {
                    field: "param key",
                    value,
                })
            }
        })
    }
}

impl ChainParams {
    /// One parameter's value.
    pub fn get(&self, key: ParamKey) -> u64 {
        match key {
            ParamKey::EpochLengthBlocks => self.epoch_length_blocks,
            ParamKey::SlashFractionBps => self.slash_fraction_bps.into(),
            ParamKey::VotingPeriodBlocks => self.voting_period_blocks,
            ParamKey::EvidenceMaxAgeBlocks => self.evidence_max_age_blocks,
            ParamKey::JailPeriodBlocks => self.jail_period_blocks,
            ParamKey::MinStake => self.min_stake,
            ParamKey::ProposalRetentionBlocks => self.proposal_retention_blocks,
            ParamKey::MaxOpenProposalsPerProposer => self.max_open_proposals_per_proposer,
        }
    }

    /// Sets one parameter, refusing values outside its range.
    pub fn set(&mut self, key: ParamKey, value: u64) -> Result<(), ApplyError> {
        match key {
            ParamKey::EpochLengthBlocks if value >= 1 => self.epoch_length_blocks = value,
            ParamKey::SlashFractionBps if value <= 10_000 => self.slash_fraction_bps = value as u32,
            ParamKey::VotingPeriodBlocks if value >= 1 => self.voting_period_blocks = value,
            ParamKey::EvidenceMaxAgeBlocks => self.evidence_max_age_blocks = value,
            ParamKey::JailPeriodBlocks => self.jail_period_blocks = value,
            ParamKey::MinStake if value >= 1 => self.min_stake = value,
            ParamKey::ProposalRetentionBlocks if value >= 1 => {
                self.proposal_retention_blocks = value
            }
            ParamKey::MaxOpenProposalsPerProposer if value >= 1 => {
                self.max_open_proposals_per_proposer = value
            }
            _ => return Err(ApplyError::BadParamValue),
        }
        Ok(())
    }

    /// Reads what `write` wrote, refusing values [`ChainParams::set`] would refuse.
    fn read(r: &mut Reader<'_>) -> Result<ChainParams, DecodeError> {
        let params = ChainParams {
            epoch_length_blocks: r.u64()?,
            slash_fraction_bps: r.u32()?,
            voting_period_blocks: r.u64()?,
            evidence_max_age_blocks: r.u64()?,
            jail_period_blocks: r.u64()?,
            min_stake: r.u64()?,
            proposal_retention_blocks: r.u64()?,
            max_open_proposals_per_proposer: r.u64()?,
        };
        let valid = params.epoch_length_blocks >= 1
            && params.slash_fraction_bps <= 10_000
            && params.voting_period_blocks >= 1
            && params.min_stake >= 1
            && params.proposal_retention_blocks >= 1
            && params.max_open_proposals_per_proposer >= 1;
        if !valid {
            return Err(DecodeError::Invalid("chain parameter out of range"));
        }
        Ok(params)
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.u64(self.epoch_length_blocks);
        w.u32(self.slash_fraction_bps);
        w.u64(self.voting_period_blocks);
        w.u64(self.evidence_max_age_blocks);
        w.u64(self.jail_period_blocks);
        w.u64(self.min_stake);
        w.u64(self.proposal_retention_blocks);
        w.u64(self.max_open_proposals_per_proposer);
    }
}

/// One enshrined co-processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coprocessor {
    /// Registry id.
    pub id: u32,
    /// Version, raised by every upgrade.
    pub version: u32,
    /// Hash of the code that implements this version.
    pub code_hash: Hash,
    /// Named integer parameters.
    pub params: BTreeMap<String, u64>,
    /// Whether the execution layer runs it.
    pub active: bool,
}

/// What a governance proposal would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposalKind {
    /// Register (if new, inactive) or upgrade a co-processor to a higher version.
    Upgrade {
        /// Registry id.
        id: u32,
        /// New version.
        version: u32,
        /// Hash of the new code.
        code_hash: Hash,
    },
    /// Activate a registered co-processor.
    Activate {
        /// Registry id.
        id: u32,
    },
    /// Deactivate a co-processor.
    Deactivate {
        /// Registry id.
        id: u32,
    },
    /// Set one parameter of a co-processor.
    SetCoprocessorParam {
        /// Registry id.
        id: u32,
        /// Parameter name.
        key: String,
        /// New value.
        value: u64,
    },
    /// Change a chain parameter.
    SetChainParam {
        /// Which parameter.
        key: ParamKey,
        /// New value.
        value: u64,
    },
}

impl ProposalKind {
    fn write(&self, w: &mut Writer<'_>) {
        match self {
            ProposalKind::Upgrade {
                id,
                version,
                code_hash,
            } => {
                w.u8(1);
                w.u32(*id);
                w.u32(*version);
                w.bytes32(&code_hash.0);
            }
            ProposalKind::Activate { id } => {
                w.u8(2);
                w.u32(*id);
            }
            ProposalKind::Deactivate { id } => {
                w.u8(3);
                w.u32(*id);
            }
            ProposalKind::SetCoprocessorParam { id, key, value } => {
                w.u8(4);
                w.u32(*id);
                w.str(key);
                w.u64(*value);
            }
            ProposalKind::SetChainParam { key, value } => {
                w.u8(5);
                w.u8(key.code());
                w.u64(*value);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<ProposalKind, DecodeError> {
        Ok(match r.u8()? {
            1 => ProposalKind::Upgrade {
                id: r.u32()?,
                version: r.u32()?,
                code_hash: Hash(r.bytes32()?),
            },
            2 => ProposalKind::Activate { id: r.u32()? },
            3 => ProposalKind::Deactivate { id: r.u32()? },
            4 => ProposalKind::SetCoprocessorParam {
                id: r.u32()?,
                key: r.string()?,
                value: r.u64()?,
            },
            5 => ProposalKind::SetChainParam {
                key: ParamKey::from_code(r.u8()?)?,
                value: r.u64()?,
            },
            value => {
                return Err(DecodeError::BadTag {
                    field: "proposal kind",
                    value,
                })
            }
        })
    }
}

/// Why a passed proposal could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// No co-processor with that id.
    #[error("unknown co-processor")]
    UnknownCoprocessor,
    /// An upgrade that does not raise the version.
    #[error("version must increase")]
    VersionNotHigher,
    /// A parameter value outside its range.
    #[error("parameter value out of range")]
    BadParamValue,
    /// An upgrade of co-processor [`BASE_COPROCESSOR`], whose code only a node release
    /// changes.
    #[error("co-processor 0's code changes only with a node release")]
    BaseCoprocessor,
}

impl ApplyError {
    /// The inverse of `reason as u8` (declaration order).
    fn from_code(code: u8) -> Option<ApplyError> {
        Some(match code {
            0 => ApplyError::UnknownCoprocessor,
            1 => ApplyError::VersionNotHigher,
            2 => ApplyError::BadParamValue,
            3 => ApplyError::BaseCoprocessor,
            _ => return None,
        })
    }
}

/// The co-processor the chain is built around (NexusCore's CLOB engine): governance may
/// deactivate it (a halt) and set its parameters, not replace its code.
pub const BASE_COPROCESSOR: u32 = 0;

/// Where a proposal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalStatus {
    /// Open for votes.
    Voting,
    /// Passed in block `at`; applies at the start of block `at + 1`.
    Passed {
        /// Block in which it passed.
        at: Height,
    },
    /// Applied at the start of block `at`.
    Applied {
        /// Block at whose start it applied.
        at: Height,
    },
    /// Did not pass before its period ended at block `at`.
    Rejected {
        /// Block that closed it.
        at: Height,
    },
    /// Passed but could not apply at block `at`.
    Failed {
        /// Block at whose start it was tried.
        at: Height,
        /// Why.
        reason: ApplyError,
    },
}

impl ProposalStatus {
    /// True while voting, or passed and not yet applied (what the per-proposer cap counts).
    pub fn is_open(&self) -> bool {
        self.finished_at().is_none()
    }

    /// The block that finished it (applied, rejected or failed), or `None` if still open.
    pub fn finished_at(&self) -> Option<Height> {
        match *self {
            ProposalStatus::Voting | ProposalStatus::Passed { .. } => None,
            ProposalStatus::Applied { at }
            | ProposalStatus::Rejected { at }
            | ProposalStatus::Failed { at, .. } => Some(at),
        }
    }
}

/// A governance proposal and its votes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GovProposal {
    /// Sequential id, from 1.
    pub id: u64,
    /// What it does.
    pub kind: ProposalKind,
    /// Who submitted it.
    pub proposer: ValidatorId,
    /// Last block in which votes count.
    pub voting_ends: Height,
    /// Current status.
    pub status: ProposalStatus,
    /// Each voter's latest vote (true = yes).
    pub votes: BTreeMap<ValidatorId, bool>,
}

/// The registry, the chain parameters and the proposals: the open ones and those finished
/// within the last [`ChainParams::proposal_retention_blocks`] blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Governance {
    /// Current chain parameters.
    pub params: ChainParams,
    registry: BTreeMap<u32, Coprocessor>,
    proposals: BTreeMap<u64, GovProposal>,
    next_id: u64,
    passed: Vec<u64>,
}

/// One registry entry as [`Governance::write`] lays it out (parameter names ascending).
fn read_coprocessor(r: &mut Reader<'_>) -> Result<Coprocessor, DecodeError> {
    let id = r.u32()?;
    let version = r.u32()?;
    let code_hash = Hash(r.bytes32()?);
    let active = r.flag("co-processor active")?;
    let mut params = BTreeMap::new();
    for _ in 0..r.count(4 + 8)? {
        let key = r.string()?;
        if params
            .last_key_value()
            .is_some_and(|(last, _)| *last >= key)
        {
            return Err(DecodeError::Invalid(
                "co-processor parameters not ascending",
            ));
        }
        params.insert(key, r.u64()?);
    }
    Ok(Coprocessor {
        id,
        version,
        code_hash,
        params,
        active,
    })
}

/// One proposal as [`Governance::write`] lays it out (voters ascending).
fn read_proposal(r: &mut Reader<'_>) -> Result<GovProposal, DecodeError> {
    let id = r.u64()?;
    let kind = ProposalKind::read(r)?;
    let proposer = ValidatorId(r.bytes32()?);
    let voting_ends = r.u64()?;
    let tag = r.u8()?;
    let at = r.u64()?;
    let status = match tag {
        0 if at == 0 => ProposalStatus::Voting,
        1 => ProposalStatus::Passed { at },
        2 => ProposalStatus::Applied { at },
        3 => ProposalStatus::Rejected { at },
        _ => match tag.checked_sub(4).and_then(ApplyError::from_code) {
            Some(reason) => ProposalStatus::Failed { at, reason },
            None => {
                return Err(DecodeError::BadTag {
                    field: "proposal status",
                    value: tag,
                })
            }
        },
    };
    let mut votes = BTreeMap::new();
    for _ in 0..r.count(32 + 1)? {
        let voter = ValidatorId(r.bytes32()?);
        if votes
            .last_key_value()
            .is_some_and(|(last, _)| *last >= voter)
        {
            return Err(DecodeError::Invalid("voters not ascending"));
        }
        votes.insert(voter, r.flag("vote")?);
    }
    Ok(GovProposal {
        id,
        kind,
        proposer,
        voting_ends,
        status,
        votes,
    })
}

/// Why a proposal or vote was refused when its block was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GovError {
    /// The signer is not an active validator.
    #[error("only active validators may propose or vote")]
    NotValidator,
    /// No such proposal.
    #[error("unknown proposal")]
    UnknownProposal,
    /// The proposal is no longer open.
    #[error("proposal is not open for votes")]
    Closed,
    /// The proposer already has [`ChainParams::max_open_proposals_per_proposer`] open
    /// proposals; it may propose again once one of them is applied, rejected or failed.
    #[error("the proposer already has {max} open proposals, the most allowed")]
    TooManyOpenProposals {
        /// The cap in force when the proposal was refused.
        max: u64,
    },
}

impl Governance {
    /// Genesis state: given parameters and registry, no proposals.
    pub fn genesis(params: ChainParams, registry: Vec<Coprocessor>) -> Governance {
        Governance {
            params,
            registry: registry.into_iter().map(|c| (c.id, c)).collect(),
            proposals: BTreeMap::new(),
            next_id: 1,
            passed: Vec::new(),
        }
    }

    /// A registry entry.
    pub fn coprocessor(&self, id: u32) -> Option<&Coprocessor> {
        self.registry.get(&id)
    }

    /// Registry entries in id order.
    pub fn registry(&self) -> impl Iterator<Item = &Coprocessor> {
        self.registry.values()
    }

    /// A proposal, if open or finished within the retention window (`None` once dropped).
    pub fn proposal(&self, id: u64) -> Option<&GovProposal> {
        self.proposals.get(&id)
    }

    /// The retained proposals (open, and finished within the retention window), in id
    /// order.
    pub fn proposals(&self) -> impl Iterator<Item = &GovProposal> {
        self.proposals.values()
    }

    /// How many open proposals `proposer` has (O(retained proposals)).
    pub fn open_proposals_of(&self, proposer: &ValidatorId) -> u64 {
        let open = |p: &&GovProposal| p.proposer == *proposer && p.status.is_open();
        self.proposals.values().filter(open).count() as u64
    }

    /// Opens a proposal in block `height`; returns its id. Refused if `proposer` already
    /// has [`ChainParams::max_open_proposals_per_proposer`] open proposals.
    pub fn submit(
        &mut self,
        proposer: ValidatorId,
        kind: ProposalKind,
        height: Height,
    ) -> Result<u64, GovError> {
        let max = self.params.max_open_proposals_per_proposer;
        if self.open_proposals_of(&proposer) >= max {
            return Err(GovError::TooManyOpenProposals { max });
        }
        let id = self.next_id;
        self.next_id += 1;
        let voting_ends = height.saturating_add(self.params.voting_period_blocks - 1);
        self.proposals.insert(
            id,
            GovProposal {
                id,
                kind,
                proposer,
                voting_ends,
                status: ProposalStatus::Voting,
                votes: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    /// Records `voter`'s vote (replacing an earlier one).
    pub fn vote(
        &mut self,
        voter: ValidatorId,
        proposal: u64,
        approve: bool,
    ) -> Result<(), GovError> {
        let p = self
            .proposals
            .get_mut(&proposal)
            .ok_or(GovError::UnknownProposal)?;
        if p.status != ProposalStatus::Voting {
            return Err(GovError::Closed);
        }
        p.votes.insert(voter, approve);
        Ok(())
    }

    /// Start of block `height`: applies proposals that passed in earlier blocks, in order.
    pub fn begin_block(&mut self, height: Height) {
        for id in std::mem::take(&mut self.passed) {
            let kind = self.proposals[&id].kind.clone();
            let status = match self.apply(&kind) {
                Ok(()) => ProposalStatus::Applied { at: height },
                Err(reason) => ProposalStatus::Failed { at: height, reason },
            };
            self.proposals.get_mut(&id).expect("passed proposal").status = status;
        }
    }

    fn apply(&mut self, kind: &ProposalKind) -> Result<(), ApplyError> {
        match kind {
            ProposalKind::Upgrade {
                id,
                version,
                code_hash,
            } => match self.registry.get_mut(id) {
                _ if *id == BASE_COPROCESSOR => Err(ApplyError::BaseCoprocessor),
                Some(c) if *version <= c.version => Err(ApplyError::VersionNotHigher),
                Some(c) => {
                    c.version = *version;
                    c.code_hash = *code_hash;
                    Ok(())
                }
                None => {
                    self.registry.insert(
                        *id,
                        Coprocessor {
                            id: *id,
                            version: *version,
                            code_hash: *code_hash,
                            params: BTreeMap::new(),
                            active: false,
                        },
                    );
                    Ok(())
                }
            },
            ProposalKind::Activate { id } | ProposalKind::Deactivate { id } => {
                let c = self
                    .registry
                    .get_mut(id)
                    .ok_or(ApplyError::UnknownCoprocessor)?;
                c.active = matches!(kind, ProposalKind::Activate { .. });
                Ok(())
            }
            ProposalKind::SetCoprocessorParam { id, key, value } => {
                let c = self
                    .registry
                    .get_mut(id)
                    .ok_or(ApplyError::UnknownCoprocessor)?;
                c.params.insert(key.clone(), *value);
                Ok(())
            }
            ProposalKind::SetChainParam { key, value } => self.params.set(*key, *value),
        }
    }

    /// End of block `height`: tallies open proposals with `stake_of` (the stakes of the set
    /// that decided the block) and `total_stake`, then drops the proposals whose retention
    /// window ends with this block. Returns the ids that passed.
    pub fn end_block(
        &mut self,
        height: Height,
        stake_of: impl Fn(&ValidatorId) -> Option<u64>,
        total_stake: u64,
    ) -> Vec<u64> {
        let mut passed = Vec::new();
        for p in self.proposals.values_mut() {
            if p.status != ProposalStatus::Voting {
                continue;
            }
            let yes: u128 = p
                .votes
                .iter()
                .filter(|(_, yes)| **yes)
                .filter_map(|(v, _)| stake_of(v))
                .map(u128::from)
                .sum();
            if 3 * yes > 2 * total_stake as u128 {
                p.status = ProposalStatus::Passed { at: height };
                passed.push(p.id);
            } else if height >= p.voting_ends {
                p.status = ProposalStatus::Rejected { at: height };
            }
        }
        self.passed.extend_from_slice(&passed);
        self.prune(height);
        passed
    }

    /// Drops every proposal finished in a block `f` with `f + proposal_retention_blocks <=
    /// height` (the end of block `height`; the same on every validator, as it depends only
    /// on the state and the height).
    fn prune(&mut self, height: Height) {
        let retention = self.params.proposal_retention_blocks;
        self.proposals.retain(|_, p| match p.status.finished_at() {
            Some(at) => height < at.saturating_add(retention),
            None => true,
        });
    }

    /// Whether the state is one the end of block `height` leaves: no finished proposal
    /// from after `height` or past its retention window (checked when a state is decoded).
    pub(crate) fn retained_at(&self, height: Height) -> bool {
        let retention = self.params.proposal_retention_blocks;
        self.proposals
            .values()
            .all(|p| match p.status.finished_at() {
                Some(at) => at <= height && height < at.saturating_add(retention),
                None => true,
            })
    }

    /// A digest of parameters, registry and proposals (BLAKE3 of [`Governance::write`]).
    pub fn hash(&self) -> Hash {
        let mut out = Vec::new();
        self.write(&mut Writer(&mut out));
        Hash(*blake3::hash(&out).as_bytes())
    }

    /// Encoding: parameters; `u32` count and the registry entries; `u64` next proposal id;
    /// `u32` count and the retained proposals (status tag 0 voting, 1 passed, 2 applied, 3
    /// rejected, 4 + reason failed, then `u64` height); `u32` count and the ids passed, not
    /// yet applied. Dropped proposals leave gaps in the ids below the next one.
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        self.params.write(w);
        w.count(self.registry.len());
        for c in self.registry.values() {
            w.u32(c.id);
            w.u32(c.version);
            w.bytes32(&c.code_hash.0);
            w.u8(c.active as u8);
            w.count(c.params.len());
            for (k, v) in &c.params {
                w.str(k);
                w.u64(*v);
            }
        }
        w.u64(self.next_id);
        w.count(self.proposals.len());
        for p in self.proposals.values() {
            w.u64(p.id);
            p.kind.write(w);
            w.bytes32(&p.proposer.0);
            w.u64(p.voting_ends);
            let (tag, at) = match p.status {
                ProposalStatus::Voting => (0, 0),
                ProposalStatus::Passed { at } => (1, at),
                ProposalStatus::Applied { at } => (2, at),
                ProposalStatus::Rejected { at } => (3, at),
                ProposalStatus::Failed { at, reason } => (4 + reason as u8, at),
            };
            w.u8(tag);
            w.u64(at);
            w.count(p.votes.len());
            for (v, yes) in &p.votes {
                w.bytes32(&v.0);
                w.u8(*yes as u8);
            }
        }
        w.count(self.passed.len());
        for id in &self.passed {
            w.u64(*id);
        }
    }

    /// Reads what [`Governance::write`] wrote: keys strictly ascending, proposal ids below
    /// the next id, every passed id a proposal with status passed, each once.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Governance, DecodeError> {
        let params = ChainParams::read(r)?;
        let mut registry = BTreeMap::new();
        for _ in 0..r.count(4 + 4 + 32 + 1 + 4)? {
            let c = read_coprocessor(r)?;
            if registry
                .last_key_value()
                .is_some_and(|(last, _)| *last >= c.id)
            {
                return Err(DecodeError::Invalid("registry ids not ascending"));
            }
            registry.insert(c.id, c);
        }
        let next_id = r.u64()?;
        let mut proposals = BTreeMap::new();
        for _ in 0..r.count(8 + 1 + 32 + 8 + 1 + 8 + 4)? {
            let p = read_proposal(r)?;
            let after_last = proposals
                .last_key_value()
                .is_none_or(|(last, _)| *last < p.id);
            if !after_last || p.id == 0 || p.id >= next_id {
                return Err(DecodeError::Invalid(
                    "proposal ids not ascending below the next",
                ));
            }
            proposals.insert(p.id, p);
        }
        let n = r.count(8)?;
        if n > proposals.len() {
            return Err(DecodeError::Invalid("more passed ids than proposals"));
        }
        let passed = (0..n).map(|_| r.u64()).collect::<Result<Vec<u64>, _>>()?;
        let pending = |id: &u64| {
            let is_passed = |p: &GovProposal| matches!(p.status, ProposalStatus::Passed { .. });
            proposals.get(id).is_some_and(is_passed)
        };
        let unique: std::collections::BTreeSet<_> = passed.iter().collect();
        if unique.len() != passed.len() || !passed.iter().all(pending) {
            return Err(DecodeError::Invalid("passed ids not passed proposals"));
        }
        Ok(Governance {
            params,
            registry,
            proposals,
            next_id,
            passed,
        })
    }
}

/// A consensus-layer action, carried in blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The signer bonds `stake` and joins at the next epoch boundary.
    Join {
        /// Stake to bond.
        stake: u64,
    },
    /// The signer changes its stake at the next epoch boundary.
    SetStake {
        /// New stake.
        stake: u64,
    },
    /// The signer leaves at the next epoch boundary.
    Leave,
    /// The signer opens a governance proposal.
    Propose(ProposalKind),
    /// The signer votes on a proposal.
    Vote {
        /// Proposal id.
        proposal: u64,
        /// Yes (true) or no.
        approve: bool,
    },
    /// The signer, jailed, returns to the active set at the next epoch boundary (once its
    /// jail period is over, if its stake is still at least the minimum).
    Unjail,
}

impl Action {
    fn write(&self, w: &mut Writer<'_>) {
        match self {
            Action::Join { stake } => {
                w.u8(1);
                w.u64(*stake);
            }
            Action::SetStake { stake } => {
                w.u8(2);
                w.u64(*stake);
            }
            Action::Leave => w.u8(3),
            Action::Propose(kind) => {
                w.u8(4);
                kind.write(w);
            }
            Action::Vote { proposal, approve } => {
                w.u8(5);
                w.u64(*proposal);
                w.u8(*approve as u8);
            }
            Action::Unjail => w.u8(6),
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Action, DecodeError> {
        Ok(match r.u8()? {
            1 => Action::Join { stake: r.u64()? },
            2 => Action::SetStake { stake: r.u64()? },
            3 => Action::Leave,
            4 => Action::Propose(ProposalKind::read(r)?),
            5 => Action::Vote {
                proposal: r.u64()?,
                approve: r.flag("vote approve")?,
            },
            6 => Action::Unjail,
            value => {
                return Err(DecodeError::BadTag {
                    field: "action",
                    value,
                })
            }
        })
    }
}

/// An action signed by its author. `nonce` must be one more than the signer's previous
/// accepted action (the first is 1), so an action cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedAction {
    /// Author (a validator key, or a joining key for `Join`).
    pub signer: ValidatorId,
    /// Per-signer sequence number.
    pub nonce: u64,
    /// What to do.
    pub action: Action,
    /// The signer's signature of [`SignedAction::signing_bytes`].
    pub signature: SignatureBytes,
}

impl SignedAction {
    /// Smallest encoding: signer, nonce, one tag byte, signature.
    pub const MIN_ENCODED_LEN: usize = 32 + 8 + 1 + 64;

    /// Builds and signs an action.
    pub fn sign(
        key: &crate::types::Keypair,
        nonce: u64,
        action: Action,
        chain_id: &[u8; 32],
    ) -> SignedAction {
        let mut a = SignedAction {
            signer: key.id(),
            nonce,
            action,
            signature: [0; 64],
        };
        a.signature = key.sign(&a.signing_bytes(chain_id));
        a
    }

    /// The bytes the signer signs.
    pub fn signing_bytes(&self, chain_id: &[u8; 32]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(ACTION_DOMAIN);
        out.extend_from_slice(chain_id);
        let mut w = Writer(&mut out);
        w.bytes32(&self.signer.0);
        w.u64(self.nonce);
        self.action.write(&mut w);
        out
    }

    /// True if the signature is the signer's.
    pub fn verify(&self, chain_id: &[u8; 32], verifier: &dyn SignatureVerifier) -> bool {
        verifier.verify(&self.signer, &self.signing_bytes(chain_id), &self.signature)
    }

    /// The canonical encoding: signer `[32]`, nonce u64, action, signature `[64]` (as
    /// blocks carry it).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::MIN_ENCODED_LEN + 16);
        self.write(&mut Writer(&mut out));
        out
    }

    /// Decodes [`SignedAction::encode`]'s bytes (nothing may follow).
    pub fn decode(bytes: &[u8]) -> Result<SignedAction, DecodeError> {
        let mut r = Reader::new(bytes);
        let action = SignedAction::read(&mut r)?;
        r.finish()?;
        Ok(action)
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.bytes32(&self.signer.0);
        w.u64(self.nonce);
        self.action.write(w);
        w.bytes64(&self.signature);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<SignedAction, DecodeError> {
        Ok(SignedAction {
            signer: ValidatorId(r.bytes32()?),
            nonce: r.u64()?,
            action: Action::read(r)?,
            signature: r.bytes64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u8) -> ValidatorId {
        ValidatorId([n; 32])
    }

    fn stake(id: &ValidatorId) -> Option<u64> {
        (id.0[0] <= 4).then_some(10)
    }

    #[test]
    fn every_param_key_has_one_name_one_code_and_its_own_field() {
        let mut params = ChainParams::default();
        for (i, key) in ParamKey::ALL.into_iter().enumerate() {
            assert_eq!(ParamKey::from_name(key.name()), Some(key));
            assert_eq!(ParamKey::from_code(key.code()), Ok(key));
            assert_eq!(key.code() as usize, i + 1, "ALL is in code order");
            params.set(key, 1000 + i as u64).unwrap();
        }
        for (i, key) in ParamKey::ALL.into_iter().enumerate() {
            assert_eq!(params.get(key), 1000 + i as u64, "{}", key.name());
        }
        let codes = (0..=u8::MAX).filter(|c| ParamKey::from_code(*c).is_ok());
        assert_eq!(codes.count(), ParamKey::ALL.len(), "a key missing from ALL");
        assert_eq!(ParamKey::from_name("slash_fraction"), None);
    }

    #[test]
    fn co_processor_zero_cannot_be_upgraded_by_governance() {
        let mut g = Governance::genesis(ChainParams::default(), vec![]);
        let kind = ProposalKind::Upgrade {
            id: BASE_COPROCESSOR,
            version: 2,
            code_hash: Hash([3; 32]),
        };
        assert_eq!(g.apply(&kind), Err(ApplyError::BaseCoprocessor));
        assert!(g.coprocessor(BASE_COPROCESSOR).is_none());
        let deactivate = ProposalKind::Deactivate { id: 7 };
        assert_eq!(g.apply(&deactivate), Err(ApplyError::UnknownCoprocessor));
    }

    #[test]
    fn a_proposal_passes_above_two_thirds_and_applies_at_the_next_block() {
        let mut g = Governance::genesis(ChainParams::default(), vec![]);
        let up = g
            .submit(
                v(1),
                ProposalKind::Upgrade {
                    id: 7,
                    version: 1,
                    code_hash: Hash([3; 32]),
                },
                10,
            )
            .unwrap();
        g.vote(v(1), up, true).unwrap();
        g.vote(v(2), up, true).unwrap();
        g.vote(v(9), up, true).unwrap(); // not a validator: no stake counted
        assert!(
            g.end_block(10, stake, 40).is_empty(),
            "20 of 40 is not > 2/3"
        );
        g.vote(v(3), up, false).unwrap();
        g.vote(v(3), up, true).unwrap(); // changed mind: latest vote counts
        assert_eq!(g.end_block(11, stake, 40), vec![up]);
        assert_eq!(
            g.proposal(up).unwrap().status,
            ProposalStatus::Passed { at: 11 }
        );
        assert_eq!(g.vote(v(4), up, true), Err(GovError::Closed));
        assert!(
            g.coprocessor(7).is_none(),
            "not applied inside the block it passed"
        );
        g.begin_block(12);
        assert_eq!(
            g.proposal(up).unwrap().status,
            ProposalStatus::Applied { at: 12 }
        );
        let c = g.coprocessor(7).unwrap();
        assert_eq!((c.version, c.active), (1, false));

        let act = g
            .submit(v(1), ProposalKind::Activate { id: 7 }, 12)
            .unwrap();
        let bad = g
            .submit(v(1), ProposalKind::Activate { id: 8 }, 12)
            .unwrap();
        let down = g
            .submit(
                v(1),
                ProposalKind::Upgrade {
                    id: 7,
                    version: 1,
                    code_hash: Hash([4; 32]),
                },
                12,
            )
            .unwrap();
        let param = g
            .submit(
                v(1),
                ProposalKind::SetChainParam {
                    key: ParamKey::SlashFractionBps,
                    value: 10_001,
                },
                12,
            )
            .unwrap();
        let cparam = g
            .submit(
                v(1),
                ProposalKind::SetCoprocessorParam {
                    id: 7,
                    key: "max_markets".into(),
                    value: 64,
                },
                12,
            )
            .unwrap();
        for id in [act, bad, down, param, cparam] {
            for n in 1..=3 {
                g.vote(v(n), id, true).unwrap();
            }
        }
        g.end_block(12, stake, 40);
        g.begin_block(13);
        let c = g.coprocessor(7).unwrap();
        assert!(c.active);
        assert_eq!(c.params["max_markets"], 64);
        let failed = |id| match g.proposal(id).unwrap().status {
            ProposalStatus::Failed { reason, .. } => Some(reason),
            _ => None,
        };
        assert_eq!(failed(bad), Some(ApplyError::UnknownCoprocessor));
        assert_eq!(failed(down), Some(ApplyError::VersionNotHigher));
        assert_eq!(failed(param), Some(ApplyError::BadParamValue));
        assert_eq!(g.params, ChainParams::default());
    }

    #[test]
    fn a_proposal_without_quorum_is_rejected_when_its_period_ends() {
        let params = ChainParams {
            voting_period_blocks: 3,
            ..ChainParams::default()
        };
        let mut g = Governance::genesis(params, vec![]);
        let id = g
            .submit(
                v(1),
                ProposalKind::SetChainParam {
                    key: ParamKey::EpochLengthBlocks,
                    value: 5,
                },
                5,
            )
            .unwrap();
        g.vote(v(1), id, true).unwrap();
        g.end_block(5, stake, 40);
        g.end_block(6, stake, 40);
        assert_eq!(g.proposal(id).unwrap().status, ProposalStatus::Voting);
        g.end_block(7, stake, 40);
        assert_eq!(
            g.proposal(id).unwrap().status,
            ProposalStatus::Rejected { at: 7 }
        );
        assert_eq!(g.vote(v(2), id, true), Err(GovError::Closed));
    }

    fn param(value: u64) -> ProposalKind {
        ProposalKind::SetChainParam {
            key: ParamKey::JailPeriodBlocks,
            value,
        }
    }

    /// Voting period 2, retention 3. Block 4 opens A (v1) and B (v2); block 5 votes B
    /// through and rejects A (finished at 5); B applies at the start of block 6 (finished
    /// at 6). Runs blocks 1..=`last` and returns the state, and its encoding after block 6.
    fn retention_history(last: Height) -> (Governance, Vec<u8>) {
        let params = ChainParams {
            voting_period_blocks: 2,
            proposal_retention_blocks: 3,
            ..ChainParams::default()
        };
        let mut g = Governance::genesis(params, vec![]);
        let mut at_6 = Vec::new();
        for h in 1..=last {
            g.begin_block(h);
            if h == 4 {
                assert_eq!(g.submit(v(1), param(7), h), Ok(1));
                assert_eq!(g.submit(v(2), param(9), h), Ok(2));
            }
            if h == 5 {
                (1..=3).for_each(|n| g.vote(v(n), 2, true).unwrap());
            }
            g.end_block(h, stake, 40);
            if h == 6 {
                g.write(&mut Writer(&mut at_6));
            }
        }
        (g, at_6)
    }

    #[test]
    fn a_finished_proposal_is_kept_for_the_retention_window_then_dropped() {
        for last in 5..=10 {
            let (g, _) = retention_history(last);
            // A finished at 5, B at 6: each dropped at the end of block finished + 3.
            assert_eq!(g.proposal(1).is_some(), last < 8, "A after block {last}");
            assert_eq!(g.proposal(2).is_some(), last < 9, "B after block {last}");
        }
        let (g, _) = retention_history(7);
        assert_eq!(
            g.proposal(1).unwrap().status,
            ProposalStatus::Rejected { at: 5 }
        );
        assert_eq!(
            g.proposal(2).unwrap().status,
            ProposalStatus::Applied { at: 6 }
        );
        let (mut g, _) = retention_history(9);
        assert_eq!(g.proposals().count(), 0);
        assert_eq!(g.params.jail_period_blocks, 9, "what B did stays");
        assert_eq!(g.vote(v(1), 2, true), Err(GovError::UnknownProposal));
        // The next id is not reused after its proposals were dropped.
        assert_eq!(g.submit(v(1), param(1), 10), Ok(3));
    }

    /// Two states through the same blocks have the same digest at every height, including
    /// one restored from its encoding after block 6 and run on from there: pruning
    /// depends only on the state and the height.
    #[test]
    fn states_through_the_same_blocks_prune_alike_and_hash_alike() {
        let (_, at_6) = retention_history(6);
        for last in 6..=10 {
            let (a, _) = retention_history(last);
            let (b, _) = retention_history(last);
            assert_eq!(a.hash(), b.hash(), "after block {last}");
            let mut restored = Governance::read(&mut Reader::new(&at_6)).unwrap();
            for h in 7..=last {
                restored.begin_block(h);
                restored.end_block(h, stake, 40);
            }
            assert_eq!(restored, a, "restored, after block {last}");
            assert_eq!(restored.hash(), a.hash(), "restored, after block {last}");
            let mut bytes = Vec::new();
            a.write(&mut Writer(&mut bytes));
            let back = Governance::read(&mut Reader::new(&bytes)).unwrap();
            assert_eq!(back, a, "round trip after block {last}");
        }
        // Pruning changed the digest: the dropped proposals are no longer in it.
        assert_ne!(retention_history(8).0.hash(), retention_history(7).0.hash());
    }

    #[test]
    fn the_per_proposer_cap_refuses_until_one_of_its_proposals_finishes() {
        let params = ChainParams {
            max_open_proposals_per_proposer: 2,
            ..ChainParams::default()
        };
        let mut g = Governance::genesis(params, vec![]);
        g.begin_block(1);
        assert_eq!(g.submit(v(1), param(1), 1), Ok(1));
        assert_eq!(g.submit(v(1), param(2), 1), Ok(2));
        let over = Err(GovError::TooManyOpenProposals { max: 2 });
        assert_eq!(g.submit(v(1), param(3), 1), over);
        assert_eq!(g.open_proposals_of(&v(1)), 2);
        assert_eq!(
            g.submit(v(2), param(3), 1),
            Ok(3),
            "another proposer's own cap"
        );
        (1..=3).for_each(|n| g.vote(v(n), 1, true).unwrap());
        assert_eq!(g.end_block(1, stake, 40), vec![1]);
        assert_eq!(
            g.open_proposals_of(&v(1)),
            2,
            "passed, not applied: still open"
        );
        g.begin_block(2);
        assert_eq!(
            g.proposal(1).unwrap().status,
            ProposalStatus::Applied { at: 2 }
        );
        assert_eq!(g.submit(v(1), param(4), 2), Ok(4), "a refusal uses no id");
        assert_eq!(g.submit(v(1), param(5), 2), over);
    }

    /// A proposer trying three proposals every block for 500 blocks, nothing ever voted
    /// through: the state holds its open proposals and those finished within the retention
    /// window, not all 300-odd it submitted.
    #[test]
    fn a_proposer_at_its_cap_every_block_keeps_the_state_bounded() {
        let params = ChainParams {
            voting_period_blocks: 3,
            proposal_retention_blocks: 4,
            max_open_proposals_per_proposer: 2,
            ..ChainParams::default()
        };
        let mut g = Governance::genesis(params, vec![]);
        for h in 1..=500 {
            g.begin_block(h);
            for _ in 0..3 {
                let _ = g.submit(v(1), param(h), h);
            }
            g.end_block(h, stake, 40);
            // 2 open, and at most 2 finished in each of the last 4 blocks.
            assert!(g.proposals().count() <= 2 + 2 * 4, "block {h}");
        }
        assert!(g.next_id > 300, "it kept submitting: {}", g.next_id);
    }
}
