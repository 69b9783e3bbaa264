//! Signed protocol messages, their signing bytes and wire encodings, and evidence.
//!
//! Every signature covers a domain tag, the chain id and a fixed layout (all integers
//! little-endian), so a signature of one kind can never be replayed as another kind or on
//! another chain:
//!
//! ```text
//! vote      "nexus-bft/v1/vote\0"     chain_id[32] kind u8 (1 prevote, 2 precommit)
//!                                      height u64 round u32 has_value u8 value[32] (zeros if nil)
//!                                      validator[32]
//! proposal  "nexus-bft/v1/proposal\0" chain_id[32] height u64 round u32 has_pol u8
//!                                      pol_round u32 (0 if none) block_id[32] proposer[32]
//! ```

use crate::block::Block;
use crate::codec::{DecodeError, Reader, Writer};
use crate::types::{Hash, Height, Round, SignatureBytes, SignatureVerifier, ValidatorId};

const VOTE_DOMAIN: &[u8] = b"nexus-bft/v1/vote\0";
const PROPOSAL_DOMAIN: &[u8] = b"nexus-bft/v1/proposal\0";

/// The two vote types of Tendermint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VoteKind {
    /// First voting step.
    Prevote,
    /// Second voting step; >2/3 precommits for a value decide it.
    Precommit,
}

impl VoteKind {
    fn code(self) -> u8 {
        match self {
            VoteKind::Prevote => 1,
            VoteKind::Precommit => 2,
        }
    }
    fn from_code(code: u8) -> Result<VoteKind, DecodeError> {
        match code {
            1 => Ok(VoteKind::Prevote),
            2 => Ok(VoteKind::Precommit),
            value => Err(DecodeError::BadTag {
                field: "vote kind",
                value,
            }),
        }
    }
}

/// A vote: `⟨PREVOTE|PRECOMMIT, h, r, id(v) or nil⟩` from one validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vote {
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// Height voted on.
    pub height: Height,
    /// Round voted in.
    pub round: Round,
    /// The block id voted for, or `None` for nil.
    pub value: Option<Hash>,
    /// Who votes.
    pub validator: ValidatorId,
}

impl Vote {
    /// The bytes the validator signs.
    pub fn signing_bytes(&self, chain_id: &[u8; 32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(VOTE_DOMAIN.len() + 32 + 78);
        out.extend_from_slice(VOTE_DOMAIN);
        out.extend_from_slice(chain_id);
        self.write(&mut Writer(&mut out));
        out
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.u8(self.kind.code());
        w.u64(self.height);
        w.u32(self.round);
        w.u8(self.value.is_some() as u8);
        w.bytes32(&self.value.unwrap_or(Hash::ZERO).0);
        w.bytes32(&self.validator.0);
    }

    fn read(r: &mut Reader<'_>) -> Result<Vote, DecodeError> {
        let kind = VoteKind::from_code(r.u8()?)?;
        let height = r.u64()?;
        let round = r.u32()?;
        let has_value = r.flag("vote has_value")?;
        let value = r.bytes32()?;
        if !has_value && value != [0; 32] {
            return Err(DecodeError::BadTag {
                field: "nil vote value",
                value: 1,
            });
        }
        let validator = ValidatorId(r.bytes32()?);
        Ok(Vote {
            kind,
            height,
            round,
            value: has_value.then_some(Hash(value)),
            validator,
        })
    }
}

/// A vote with its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SignedVote {
    /// The vote.
    pub vote: Vote,
    /// `vote.validator`'s signature of `vote.signing_bytes(chain_id)`.
    pub signature: SignatureBytes,
}

impl SignedVote {
    /// Wire size of a signed vote in bytes.
    pub const ENCODED_LEN: usize = 78 + 64;

    /// True if the signature is the validator's over this vote on chain `chain_id`.
    pub fn verify(&self, chain_id: &[u8; 32], verifier: &dyn SignatureVerifier) -> bool {
        verifier.verify(
            &self.vote.validator,
            &self.vote.signing_bytes(chain_id),
            &self.signature,
        )
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        self.vote.write(w);
        w.bytes64(&self.signature);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<SignedVote, DecodeError> {
        let vote = Vote::read(r)?;
        let signature = r.bytes64()?;
        Ok(SignedVote { vote, signature })
    }
}

/// The signed part of a proposal: `⟨PROPOSAL, h, r, id(v), validRound⟩`. The block itself
/// travels beside it ([`ProposalMessage`]) and must hash to `block_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Proposal {
    /// Height proposed at.
    pub height: Height,
    /// Round proposed in.
    pub round: Round,
    /// The proposer's `validRound` (Alg. 1 L19): `None` is the paper's −1.
    pub pol_round: Option<Round>,
    /// Id of the proposed block.
    pub block_id: Hash,
    /// Who proposes (must be `proposer(height, round)`).
    pub proposer: ValidatorId,
}

impl Proposal {
    /// The bytes the proposer signs.
    pub fn signing_bytes(&self, chain_id: &[u8; 32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(PROPOSAL_DOMAIN.len() + 32 + 81);
        out.extend_from_slice(PROPOSAL_DOMAIN);
        out.extend_from_slice(chain_id);
        self.write(&mut Writer(&mut out));
        out
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.u64(self.height);
        w.u32(self.round);
        w.u8(self.pol_round.is_some() as u8);
        w.u32(self.pol_round.unwrap_or(0));
        w.bytes32(&self.block_id.0);
        w.bytes32(&self.proposer.0);
    }

    fn read(r: &mut Reader<'_>) -> Result<Proposal, DecodeError> {
        let height = r.u64()?;
        let round = r.u32()?;
        let has_pol = r.flag("proposal has_pol")?;
        let pol = r.u32()?;
        if !has_pol && pol != 0 {
            return Err(DecodeError::BadTag {
                field: "proposal pol_round",
                value: 1,
            });
        }
        Ok(Proposal {
            height,
            round,
            pol_round: has_pol.then_some(pol),
            block_id: Hash(r.bytes32()?),
            proposer: ValidatorId(r.bytes32()?),
        })
    }
}

/// A proposal with its signature (without the block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SignedProposal {
    /// The proposal.
    pub proposal: Proposal,
    /// The proposer's signature of `proposal.signing_bytes(chain_id)`.
    pub signature: SignatureBytes,
}

impl SignedProposal {
    /// True if the signature is the proposer's over this proposal on chain `chain_id`.
    pub fn verify(&self, chain_id: &[u8; 32], verifier: &dyn SignatureVerifier) -> bool {
        verifier.verify(
            &self.proposal.proposer,
            &self.proposal.signing_bytes(chain_id),
            &self.signature,
        )
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        self.proposal.write(w);
        w.bytes64(&self.signature);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<SignedProposal, DecodeError> {
        let proposal = Proposal::read(r)?;
        let signature = r.bytes64()?;
        Ok(SignedProposal {
            proposal,
            signature,
        })
    }
}

/// A signed proposal with the block it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalMessage {
    /// The signed proposal.
    pub signed: SignedProposal,
    /// The block; `block.id() == signed.proposal.block_id` is checked on receipt.
    pub block: Block,
    /// Proof of lock for a re-proposal (`pol_round` set): the >2/3 prevotes for the block
    /// in `pol_round` that the proposer saw. Receivers count them like any vote, so L28 can
    /// fire even where the original prevotes were lost. Empty for a new block.
    pub pol: Vec<SignedVote>,
}

impl ProposalMessage {
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        self.signed.write(w);
        self.block.write(w);
        w.count(self.pol.len());
        for v in &self.pol {
            v.write(w);
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<ProposalMessage, DecodeError> {
        let signed = SignedProposal::read(r)?;
        let block = Block::read(r)?;
        let n = r.count(SignedVote::ENCODED_LEN)?;
        let mut pol = Vec::with_capacity(n);
        for _ in 0..n {
            pol.push(SignedVote::read(r)?);
        }
        Ok(ProposalMessage { signed, block, pol })
    }
}

/// Proof that a height was decided: a block and >2/3 of the stake's precommits for it in one
/// round. Lets a validator that fell behind decide that height without replaying the rounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitCertificate {
    /// The round whose precommits these are.
    pub round: Round,
    /// The decided block.
    pub block: Block,
    /// Precommits for `block.id()` at `block.height`, `round`, one per validator.
    pub precommits: Vec<SignedVote>,
}

/// Proof that a validator signed two conflicting messages for the same height, round and
/// step. Built in a canonical order (smaller encoding first), so the same offence always gives
/// the same evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Evidence {
    /// Two votes of one kind, height and round with different values.
    DoubleVote(SignedVote, SignedVote),
    /// Two proposals for one height and round with different blocks or valid rounds.
    DoubleProposal(SignedProposal, SignedProposal),
}

/// Why evidence does not prove an offence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// The two messages are not from the same signer, height, round and step.
    #[error("the two messages are not for the same signer, height, round and step")]
    NotSameSlot,
    /// The two messages are the same.
    #[error("the two messages are identical")]
    NotConflicting,
    /// A signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

impl Evidence {
    /// Evidence from two votes, in canonical order.
    pub fn double_vote(a: SignedVote, b: SignedVote) -> Evidence {
        if a <= b {
            Evidence::DoubleVote(a, b)
        } else {
            Evidence::DoubleVote(b, a)
        }
    }

    /// Evidence from two proposals, in canonical order.
    pub fn double_proposal(a: SignedProposal, b: SignedProposal) -> Evidence {
        if a <= b {
            Evidence::DoubleProposal(a, b)
        } else {
            Evidence::DoubleProposal(b, a)
        }
    }

    /// The validator who signed both messages.
    pub fn offender(&self) -> ValidatorId {
        match self {
            Evidence::DoubleVote(a, _) => a.vote.validator,
            Evidence::DoubleProposal(a, _) => a.proposal.proposer,
        }
    }

    /// The height of the offence.
    pub fn height(&self) -> Height {
        match self {
            Evidence::DoubleVote(a, _) => a.vote.height,
            Evidence::DoubleProposal(a, _) => a.proposal.height,
        }
    }

    /// Checks that this proves a double signature on chain `chain_id`.
    pub fn check(
        &self,
        chain_id: &[u8; 32],
        verifier: &dyn SignatureVerifier,
    ) -> Result<(), EvidenceError> {
        match self {
            Evidence::DoubleVote(a, b) => {
                let (x, y) = (&a.vote, &b.vote);
                if (x.validator, x.height, x.round, x.kind)
                    != (y.validator, y.height, y.round, y.kind)
                {
                    return Err(EvidenceError::NotSameSlot);
                }
                if x.value == y.value {
                    return Err(EvidenceError::NotConflicting);
                }
                if !a.verify(chain_id, verifier) || !b.verify(chain_id, verifier) {
                    return Err(EvidenceError::BadSignature);
                }
            }
            Evidence::DoubleProposal(a, b) => {
                let (x, y) = (&a.proposal, &b.proposal);
                if (x.proposer, x.height, x.round) != (y.proposer, y.height, y.round) {
                    return Err(EvidenceError::NotSameSlot);
                }
                if x == y {
                    return Err(EvidenceError::NotConflicting);
                }
                if !a.verify(chain_id, verifier) || !b.verify(chain_id, verifier) {
                    return Err(EvidenceError::BadSignature);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        match self {
            Evidence::DoubleVote(a, b) => {
                w.u8(1);
                a.write(w);
                b.write(w);
            }
            Evidence::DoubleProposal(a, b) => {
                w.u8(2);
                a.write(w);
                b.write(w);
            }
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Evidence, DecodeError> {
        match r.u8()? {
            1 => Ok(Evidence::DoubleVote(
                SignedVote::read(r)?,
                SignedVote::read(r)?,
            )),
            2 => Ok(Evidence::DoubleProposal(
                SignedProposal::read(r)?,
                SignedProposal::read(r)?,
            )),
            value => Err(DecodeError::BadTag {
                field: "evidence kind",
                value,
            }),
        }
    }
}

/// Everything validators send each other, with its wire encoding (tag byte, then fields):
///
/// | tag | message | fields |
/// |---|---|---|
/// | 1 | Proposal | signed proposal (81 + 64 bytes), block (see [`Block`]), count u32, count signed votes (proof of lock) |
/// | 2 | Vote | signed vote (78 + 64 bytes) |
/// | 3 | Commit | round u32, block, count u32, count signed votes |
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A proposal and its block.
    Proposal(ProposalMessage),
    /// A prevote or precommit.
    Vote(SignedVote),
    /// A commit certificate, sent to a validator that is behind.
    Commit(CommitCertificate),
}

impl Message {
    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut out);
        out
    }

    /// About the encoding's length: exact up to the votes, evidence and actions beside a
    /// block, so that a block-sized encoding is written into one allocation.
    pub fn encoded_len_hint(&self) -> usize {
        match self {
            Message::Proposal(p) => 4096 + p.block.payload.len(),
            Message::Vote(_) => 1 + SignedVote::ENCODED_LEN,
            Message::Commit(c) => {
                4096 + c.block.payload.len() + c.precommits.len() * SignedVote::ENCODED_LEN
            }
        }
    }

    /// Appends the wire encoding to `out` (a frame's tag may already be there).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        match self {
            Message::Proposal(p) => {
                w.u8(1);
                p.write(&mut w);
            }
            Message::Vote(v) => {
                w.u8(2);
                v.write(&mut w);
            }
            Message::Commit(c) => {
                w.u8(3);
                w.u32(c.round);
                c.block.write(&mut w);
                w.count(c.precommits.len());
                for v in &c.precommits {
                    v.write(&mut w);
                }
            }
        }
    }

    /// Decodes a wire message (signatures are not checked here).
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader::new(bytes);
        let message = match r.u8()? {
            1 => Message::Proposal(ProposalMessage::read(&mut r)?),
            2 => Message::Vote(SignedVote::read(&mut r)?),
            3 => {
                let round = r.u32()?;
                let block = Block::read(&mut r)?;
                let n = r.count(SignedVote::ENCODED_LEN)?;
                let mut precommits = Vec::with_capacity(n);
                for _ in 0..n {
                    precommits.push(SignedVote::read(&mut r)?);
                }
                Message::Commit(CommitCertificate {
                    round,
                    block,
                    precommits,
                })
            }
            value => {
                return Err(DecodeError::BadTag {
                    field: "message kind",
                    value,
                })
            }
        };
        r.finish()?;
        Ok(message)
    }

    /// Height the message is about.
    pub fn height(&self) -> Height {
        match self {
            Message::Proposal(p) => p.signed.proposal.height,
            Message::Vote(v) => v.vote.height,
            Message::Commit(c) => c.block.height,
        }
    }
}
