//! Snapshots of the executed state: the engine's snapshot and every account's remembered
//! nonces, so that a validator restarts from its newest snapshot and executes only the
//! blocks after it.
//!
//! Format (little-endian): [`MAGIC`], `u64` engine snapshot length, the engine snapshot
//! (`engine::Engine::snapshot`), `u64` account count, then per account in ascending id
//! order: `u64` id, `u8` count, `count` x `u64` nonces ascending. The roles (faucets,
//! feeders) are configuration and are given again at restore.

use std::collections::BTreeMap;

use engine::{ArrayLadder, Engine};
use transactions::NonceSet;

use crate::{Execution, ExecutionConfig};

/// First bytes of an execution snapshot.
pub const MAGIC: &[u8; 16] = b"nexus-exec-v1\0\0\0";

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Not an execution snapshot of this version.
    #[error("not an execution snapshot (bad magic)")]
    BadMagic,
    /// It ends early or has bytes left over.
    #[error("execution snapshot is truncated or too long")]
    Length,
    /// The engine part is invalid.
    #[error("engine snapshot: {0}")]
    Engine(String),
}

impl Execution {
    /// The state as bytes ([`Execution::restore`] reads them back).
    pub fn snapshot(&self) -> Vec<u8> {
        let engine = self.engine.snapshot();
        let mut out = Vec::with_capacity(MAGIC.len() + 16 + engine.len() + self.nonces.len() * 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(engine.len() as u64).to_le_bytes());
        out.extend_from_slice(&engine);
        out.extend_from_slice(&(self.nonces.len() as u64).to_le_bytes());
        for (account, nonces) in &self.nonces {
            out.extend_from_slice(&account.to_le_bytes());
            out.push(nonces.used().len() as u8);
            for nonce in nonces.used() {
                out.extend_from_slice(&nonce.to_le_bytes());
            }
        }
        out
    }

    /// The state a [`Execution::snapshot`] holds, with the chain's `config` (its roles and
    /// id; the engine's sizing comes from the snapshot). Its root is the one the snapshot
    /// was taken at: the caller checks it against the root it recorded.
    pub fn restore(config: ExecutionConfig, bytes: &[u8]) -> Result<Execution, SnapshotError> {
        let mut reader = Reader { bytes, at: 0 };
        if reader.take(MAGIC.len())? != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let engine_len = reader.u64()? as usize;
        let engine = Engine::<ArrayLadder>::restore(reader.take(engine_len)?)
            .map_err(|e| SnapshotError::Engine(e.to_string()))?;
        let accounts = reader.u64()?;
        let mut nonces = BTreeMap::new();
        for _ in 0..accounts {
            let account = reader.u64()?;
            let count = reader.take(1)?[0];
            let mut set = NonceSet::default();
            for _ in 0..count {
                set.record(reader.u64()?);
            }
            nonces.insert(account, set);
        }
        if reader.at != bytes.len() {
            return Err(SnapshotError::Length);
        }
        let mut execution = Execution::new(config, &[]);
        execution.engine = engine;
        let accounts: Vec<_> = nonces.keys().copied().collect();
        execution.nonces = nonces;
        for account in accounts {
            execution.refresh_nonce_digest(account);
        }
        Ok(execution)
    }
}

/// Reads a snapshot front to back.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.at.checked_add(n).ok_or(SnapshotError::Length)?;
        let slice = self.bytes.get(self.at..end).ok_or(SnapshotError::Length)?;
        self.at = end;
        Ok(slice)
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }
}
