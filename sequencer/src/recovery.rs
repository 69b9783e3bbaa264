//! Recovery: the latest snapshot plus the log's tail, verified link by link.

use engine::{ArrayLadder, Engine, EngineConfig};

use crate::sequencer::ChainTip;
use crate::wal::{StoredSnapshot, Wal, WalError};

/// An engine rebuilt from the log, and where the chain stands.
pub struct Recovered {
    /// The engine after the last stored block.
    pub engine: Engine<ArrayLadder>,
    /// Numbering for what comes next.
    pub tip: ChainTip,
    /// Height of the snapshot recovery started from, if any.
    pub snapshot_height: Option<u64>,
    /// Blocks replayed on top of the snapshot.
    pub replayed_blocks: u64,
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Rebuilds the engine: restores the newest snapshot (or starts empty with `config`), then
/// replays every later block. Every block's checksum, height, sequence numbers and link to its
/// predecessor are checked; any mismatch is an error, never a silently different state.
pub fn recover(wal: &Wal, config: EngineConfig) -> Result<Recovered, WalError> {
    let (mut engine, mut tip, snapshot_height) = match wal.latest_snapshot()? {
        None => (Engine::new(config), ChainTip::GENESIS, None),
        Some(StoredSnapshot {
            height,
            block_hash,
            engine: bytes,
        }) => {
            let engine = Engine::restore(&bytes).map_err(|error| WalError::CorruptSnapshot {
                height,
                reason: error.to_string(),
            })?;
            let block = wal.block(height)?.ok_or(WalError::CorruptSnapshot {
                height,
                reason: "its block is missing from the log".into(),
            })?;
            if let Some(recorded) = wal.root(height)? {
                if engine.state_hash() != recorded {
                    return Err(WalError::CorruptSnapshot {
                        height,
                        reason: "its state root differs from the one recorded for its block".into(),
                    });
                }
            }
            if block.hash != block_hash {
                return Err(WalError::CorruptSnapshot {
                    height,
                    reason: "taken after a different block than the log holds".into(),
                });
            }
            let tip = ChainTip {
                next_height: height + 1,
                next_seq: block.last_seq() + 1,
                last_hash: block.hash,
                last_timestamp_ns: block.timestamp_ns,
            };
            (engine, tip, Some(height))
        }
    };
    let mut replayed_blocks = 0;
    let mut events = Vec::new();
    wal.for_each_block(tip.next_height, |block, recorded_root| {
        if block.height != tip.next_height
            || block.prev_hash != tip.last_hash
            || block.first_seq != tip.next_seq
        {
            return Err(WalError::CorruptBlock {
                height: block.height,
                reason: format!(
                    "does not continue the chain (expected height {}, first seq {})",
                    tip.next_height, tip.next_seq
                ),
            });
        }
        for command in &block.commands {
            events.clear();
            engine.step(command, &mut events);
        }
        tip = ChainTip {
            next_height: block.height + 1,
            next_seq: block.first_seq + block.commands.len() as u64,
            last_hash: block.hash,
            last_timestamp_ns: block.timestamp_ns,
        };
        replayed_blocks += 1;
        if let Some(recorded) = recorded_root {
            let replayed = engine.commit();
            if replayed != recorded {
                return Err(WalError::RootMismatch {
                    height: block.height,
                    recorded: hex(&recorded),
                    replayed: hex(&replayed),
                });
            }
        }
        Ok(())
    })?;
    engine.commit();
    Ok(Recovered {
        engine,
        tip,
        snapshot_height,
        replayed_blocks,
    })
}
