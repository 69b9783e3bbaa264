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
use std::sync::Arc;

/// Encoding version written by this build.
pub const BLOCK_VERSION: u8 = 1;

/// Most pieces of evidence a valid block carries (`valid(v)`): honest proposers put at most
/// this many in, so that a byzantine one cannot make every validator check and remember
/// an unbounded list.
pub const MAX_EVIDENCE: usize = 2;
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
    pub payload: Payload,
}

/// A block's execution payload: immutable bytes that every copy of the block shares, so
/// that cloning a block (into the safety journal, a certificate, the block store) does not
/// copy what can be most of a megabyte.
#[derive(Clone, Default, Eq)]
pub struct Payload(Arc<Vec<u8>>);

impl Payload {
    /// The payload's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Payload {
        Payload(Arc::new(bytes))
    }
}

impl From<&[u8]> for Payload {
    fn from(bytes: &[u8]) -> Payload {
        Payload(Arc::new(bytes.to_vec()))
    }
}

impl<const N: usize> From<&[u8; N]> for Payload {
    fn from(bytes: &[u8; N]) -> Payload {
        Payload(Arc::new(bytes.to_vec()))
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
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

    /// The block id: what validators vote for. Hashes the encoding as it is written,
    /// without building it (the payload is hashed where it lies).
    pub fn id(&self) -> Hash {
        let mut head = Vec::with_capacity(128);
        self.write_head(&mut Writer(&mut head));
        let mut hasher = blake3::Hasher::new();
        hasher.update(BLOCK_DOMAIN);
        hasher.update(&head);
        hasher.update(&self.payload);
        Hash(*hasher.finalize().as_bytes())
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
        self.write_head(w);
        w.0.extend_from_slice(&self.payload);
    }

    /// The encoding up to the payload's bytes (its length included).
    fn write_head(&self, w: &mut Writer<'_>) {
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
        w.u32(u32::try_from(self.payload.len()).expect("payload shorter than 4 GiB"));
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
        let payload = Payload::from(r.var_bytes()?);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn block(payload: &[u8]) -> Block {
        Block {
            height: 7,
            timestamp_ns: 1_000,
            proposer: ValidatorId([3; 32]),
            prev_hash: Hash([4; 32]),
            prev_exec_root: Hash([5; 32]),
            evidence: Vec::new(),
            actions: Vec::new(),
            payload: payload.into(),
        }
    }

    #[test]
    fn id_hashes_the_encoding_it_does_not_build() {
        for len in [0, 1, 63, 1024, 1025, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let b = block(&payload);
            assert_eq!(
                b.id(),
                Block::id_of_encoding(&b.encode()),
                "payload of {len}"
            );
            assert_eq!(Block::decode(&b.encode()), Ok(b.clone()));
        }
        assert_ne!(block(b"a").id(), block(b"b").id());
    }

    #[test]
    fn payloads_compare_by_content_shared_or_not() {
        let a = block(b"same");
        assert_eq!(a.clone(), a);
        assert_eq!(block(b"same"), a);
        assert_ne!(block(b"other"), a);
    }
}
