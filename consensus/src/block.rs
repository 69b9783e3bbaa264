//! Consensus blocks: what validators agree on at each height.
//!
//! The payload is opaque to consensus (later: the sequencer's input batches, see
//! `sequencer/src/block.rs`); beside it a block carries the execution root of the block
//! before it, double-sign evidence and consensus-layer actions (staking and governance).
//!
//! Encoding (little-endian), version 1:
//!
//! ```text
//! version         u8 = 1
//! height          u64
//! timestamp_ns    u64   (proposer's clock; strictly greater than the parent's)
//! proposer        [32]  (public key of the validator that built the block)
//! prev_hash       [32]  (id of the block at height - 1; zeros for height 1)
//! prev_exec_root  [32]  (execution root after the block at height - 1)
//! evidence        u32 count, then each evidence (tag u8: 1 double vote, 2 double proposal; two signed messages)
//! actions         u32 count, then each signed action (see governance)
//! payload         u32 length, then the bytes
//! ```
//!
//! The block id is `BLAKE3("nexus-bft/v1/block\0" || encoding)`.

use crate::codec::{DecodeError, Reader, Writer};
use crate::governance::SignedAction;
use crate::messages::Evidence;
use crate::types::{Hash, Height, ValidatorId};

/// Encoding version written by this build.
pub const BLOCK_VERSION: u8 = 1;
const BLOCK_DOMAIN: &[u8] = b"nexus-bft/v1/block\0";

/// A consensus block (Tendermint's value `v`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Position in the chain, from 1.
    pub height: Height,
    /// Block time in nanoseconds, from the proposer's clock.
    pub timestamp_ns: u64,
    /// Validator that built the block.
    pub proposer: ValidatorId,
    /// Id of the previous block.
    pub prev_hash: Hash,
    /// Execution root after executing the previous block.
    pub prev_exec_root: Hash,
    /// Double-sign evidence to act on (slashing) when this block is applied.
    pub evidence: Vec<Evidence>,
    /// Staking and governance actions applied with this block.
    pub actions: Vec<SignedAction>,
    /// Opaque execution payload (sequenced input batches).
    pub payload: Vec<u8>,
}

impl Block {
    /// The block's canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(117 + self.payload.len());
        self.write(&mut Writer(&mut out));
        out
    }

    /// Decodes a block.
    pub fn decode(bytes: &[u8]) -> Result<Block, DecodeError> {
        let mut r = Reader::new(bytes);
        let block = Block::read(&mut r)?;
        r.finish()?;
        Ok(block)
    }

    /// The block id: what validators vote for.
    pub fn id(&self) -> Hash {
        Block::id_of_encoding(&self.encode())
    }

    /// The id of the block whose canonical encoding is `encoding` (what [`Block::id`]
    /// hashes), for callers that already hold the encoding.
    pub fn id_of_encoding(encoding: &[u8]) -> Hash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(BLOCK_DOMAIN);
        hasher.update(encoding);
        Hash(*hasher.finalize().as_bytes())
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u8(BLOCK_VERSION);
        w.u64(self.height);
        w.u64(self.timestamp_ns);
        w.bytes32(&self.proposer.0);
        w.bytes32(&self.prev_hash.0);
        w.bytes32(&self.prev_exec_root.0);
        w.count(self.evidence.len());
        for e in &self.evidence {
            e.write(w);
        }
        w.count(self.actions.len());
        for a in &self.actions {
            a.write(w);
        }
        w.var_bytes(&self.payload);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Block, DecodeError> {
        let version = r.u8()?;
        if version != BLOCK_VERSION {
            return Err(DecodeError::BadTag {
                field: "block version",
                value: version,
            });
        }
        let height = r.u64()?;
        let timestamp_ns = r.u64()?;
        let proposer = ValidatorId(r.bytes32()?);
        let prev_hash = Hash(r.bytes32()?);
        let prev_exec_root = Hash(r.bytes32()?);
        let n = r.count(1 + 2 * crate::messages::SignedVote::ENCODED_LEN)?;
        let mut evidence = Vec::with_capacity(n);
        for _ in 0..n {
            evidence.push(Evidence::read(r)?);
        }
        let n = r.count(SignedAction::MIN_ENCODED_LEN)?;
        let mut actions = Vec::with_capacity(n);
        for _ in 0..n {
            actions.push(SignedAction::read(r)?);
        }
        let payload = r.var_bytes()?;
        Ok(Block {
            height,
            timestamp_ns,
            proposer,
            prev_hash,
            prev_exec_root,
            evidence,
            actions,
            payload,
        })
    }
}
