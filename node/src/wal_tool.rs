//! `nexus wal`: read and repair a node's write-ahead log.

use std::io::Write;
use std::path::Path;

use sequencer::{hex, Wal, WalError, WalOptions};

use crate::genesis::{stored_genesis, translate_genesis, GenesisError};

/// Why a log tool failed.
#[derive(Debug, thiserror::Error)]
pub enum WalToolError {
    /// The log failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// Its genesis is missing or invalid.
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    /// The log has no genesis (not written by `nexus pipeline`).
    #[error("the log in {0} has no genesis: it was not written by `nexus pipeline`")]
    NoGenesis(String),
    /// The folder holds no log.
    #[error("{0} holds no log (no data.mdb)")]
    NoLog(String),
    /// A stored command cannot be written back as JSON (an id the genesis never named).
    #[error("block {height} holds a command that has no JSON Lines form: {command}")]
    Untranslatable {
        /// The block.
        height: u64,
        /// The command, debug-printed.
        command: String,
    },
    /// A node (or another tool) holds the data folder: changing its log now would corrupt it.
    #[error(transparent)]
    Lock(#[from] sequencer::LockError),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

fn open(dir: &Path) -> Result<Wal, WalToolError> {
    Ok(Wal::open(
        dir,
        WalOptions {
            map_size_bytes: 16 << 30,
            sync: true,
        },
    )?)
}

/// Writes the whole log as `nexus replay` input: the genesis lines, then every command of
/// every later block in sequence order. Replaying the output reproduces the node's state
/// (the same state root). Returns the number of lines written.
pub fn dump(dir: &Path, out: &mut impl Write) -> Result<u64, WalToolError> {
    let wal = open(dir)?;
    let genesis =
        stored_genesis(&wal)?.ok_or_else(|| WalToolError::NoGenesis(dir.display().to_string()))?;
    let (translator, _) = translate_genesis(&genesis)?;
    out.write_all(genesis.as_bytes())?;
    let mut lines = genesis.lines().count() as u64;
    let mut failure = None;
    wal.for_each_block(2, |block, _| {
        for command in &block.commands {
            match translator.command_json(command) {
                Some(value) => {
                    if let Err(e) = writeln!(out, "{value}") {
                        failure = Some(WalToolError::Output(e));
                        return Ok(());
                    }
                    lines += 1;
                }
                None => {
                    failure = Some(WalToolError::Untranslatable {
                        height: block.height,
                        command: format!("{command:?}"),
                    });
                    return Ok(());
                }
            }
        }
        Ok(())
    })?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    out.flush()?;
    Ok(lines)
}

/// A summary of the log: one JSON object.
pub fn info(dir: &Path) -> Result<serde_json::Value, WalToolError> {
    let wal = open(dir)?;
    let last = wal.last_height()?;
    let block = match last {
        Some(height) => wal.block(height)?,
        None => None,
    };
    let root = match last {
        Some(height) => wal.root(height)?,
        None => None,
    };
    let snapshot = wal.latest_snapshot()?;
    Ok(serde_json::json!({
        "path": dir.display().to_string(),
        "height": last.unwrap_or(0),
        "last_seq": block.as_ref().map_or(0, |b| b.last_seq()),
        "last_block_hash": block.as_ref().map(|b| hex(&b.hash)),
        "last_state_root": root.map(|r| hex(&r)),
        "snapshot_height": snapshot.map(|s| s.height),
        "has_genesis": stored_genesis(&wal)?.is_some(),
    }))
}

/// Deletes every block after `height` (and their roots and snapshots). Returns how many
/// blocks were removed. Refused while a node holds the folder (its lock): a running node
/// would go on appending after blocks that are gone.
pub fn truncate(dir: &Path, height: u64) -> Result<usize, WalToolError> {
    if !dir.join("data.mdb").exists() {
        return Err(WalToolError::NoLog(dir.display().to_string()));
    }
    let _lock = sequencer::DataDirLock::acquire(dir)?;
    let wal = open(dir)?;
    Ok(wal.truncate_after(height)?)
}
