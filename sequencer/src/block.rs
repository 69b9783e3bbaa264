//! Blocks: the unit of ordering, durability and (later) consensus.
//!
//! Encoding (little-endian), version 1:
//!
//! ```text
//! version      u8 = 1
//! height       u64   (the first block is height 1)
//! timestamp_ns u64   (block time: when the sequencer cut it; never read inside the engine)
//! first_seq    u64   (global sequence number of the first input; inputs are numbered 1, 2, ...)
//! prev_hash    [32]  (hash of the block before; zeros for height 1)
//! count        u32
//! commands     count encoded commands (see `codec`)
//! hash         [32]  BLAKE3 of every byte above: the block's hash and checksum
//! ```

use engine::Command;

use crate::codec::{decode_command, encode_command, Cursor, DecodeError};

/// Encoding version written by this build.
pub const BLOCK_VERSION: u8 = 1;

/// A cut block with its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Position in the chain, from 1.
    pub height: u64,
    /// When the block was cut, in nanoseconds since the Unix epoch (non-decreasing).
    pub timestamp_ns: u64,
    /// Sequence number of `commands[0]`.
    pub first_seq: u64,
    /// Hash of the previous block.
    pub prev_hash: [u8; 32],
    /// The inputs, in sequence order.
    pub commands: Vec<Command>,
    /// This block's hash (BLAKE3 of its encoding).
    pub hash: [u8; 32],
    /// The encoding, hash included.
    pub bytes: Vec<u8>,
}

/// Why bytes are not a valid block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The checksum does not match: the bytes were damaged.
    #[error("block checksum mismatch")]
    Checksum,
    /// The block was written by an unknown format version.
    #[error("unknown block version {0}")]
    Version(u8),
    /// A command inside failed to decode.
    #[error("bad command in block: {0}")]
    Command(#[from] DecodeError),
    /// Bytes remain after the last command.
    #[error("bytes after the last command")]
    TrailingBytes,
}

impl Block {
    /// Encodes a new block and computes its hash.
    pub fn seal(
        height: u64,
        timestamp_ns: u64,
        first_seq: u64,
        prev_hash: [u8; 32],
        commands: Vec<Command>,
    ) -> Block {
        let mut bytes = Vec::with_capacity(61 + commands.len() * 40 + 32);
        bytes.push(BLOCK_VERSION);
        bytes.extend_from_slice(&height.to_le_bytes());
        bytes.extend_from_slice(&timestamp_ns.to_le_bytes());
        bytes.extend_from_slice(&first_seq.to_le_bytes());
        bytes.extend_from_slice(&prev_hash);
        bytes.extend_from_slice(&(commands.len() as u32).to_le_bytes());
        for command in &commands {
            encode_command(command, &mut bytes);
        }
        let hash = *blake3::hash(&bytes).as_bytes();
        bytes.extend_from_slice(&hash);
        Block {
            height,
            timestamp_ns,
            first_seq,
            prev_hash,
            commands,
            hash,
            bytes,
        }
    }

    /// Sequence number of the last input (`first_seq - 1` for an empty block).
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.commands.len() as u64 - 1
    }

    /// Decodes and verifies a block.
    pub fn decode(bytes: &[u8]) -> Result<Block, BlockError> {
        if bytes.len() < 32 {
            return Err(BlockError::Command(DecodeError::Truncated));
        }
        let (body, hash) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != hash {
            return Err(BlockError::Checksum);
        }
        let mut cursor = Cursor { bytes: body };
        let version = cursor.u8()?;
        if version != BLOCK_VERSION {
            return Err(BlockError::Version(version));
        }
        let height = cursor.u64()?;
        let timestamp_ns = cursor.u64()?;
        let first_seq = cursor.u64()?;
        let prev_hash = cursor.take::<32>()?;
        let count = cursor.u32()? as usize;
        // Each command is at least 5 bytes: bound the allocation by what is there.
        let mut commands = Vec::with_capacity(count.min(cursor.bytes.len() / 5));
        for _ in 0..count {
            commands.push(decode_command(&mut cursor)?);
        }
        if !cursor.bytes.is_empty() {
            return Err(BlockError::TrailingBytes);
        }
        Ok(Block {
            height,
            timestamp_ns,
            first_seq,
            prev_hash,
            commands,
            hash: hash.try_into().expect("32 bytes"),
            bytes: bytes.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::any_command;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn blocks_round_trip_and_detect_any_flipped_bit(
            commands in proptest::collection::vec(any_command(), 0..20),
            flip in any::<prop::sample::Index>(),
        ) {
            let block = Block::seal(7, 1_000, 33, [9; 32], commands);
            let decoded = Block::decode(&block.bytes).unwrap();
            prop_assert_eq!(&decoded, &block);
            let mut damaged = block.bytes.clone();
            let bit = flip.index(damaged.len() * 8);
            damaged[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Block::decode(&damaged).is_err());
        }
    }
}
