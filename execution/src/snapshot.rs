//! Snapshots of the executed state: the engine, every account's remembered nonces, NexusEVM's
//! state and head, the cross-domain queue and the last block time, so that a validator
//! restarts from its newest snapshot and executes only the blocks after it.
//!
//! Format (little-endian): [`MAGIC`], `u64` engine snapshot length, the engine snapshot
//! (`engine::Engine::snapshot`), `u64` account count, then per account in ascending id
//! order: `u64` id, `u8` count, `count` x `u64` nonces ascending; `u64` last block time (ms);
//! `u64` EVM account count, then per EVM account in ascending address order: 20-byte
//! address, 32-byte balance (big-endian), `u64` nonce, `u32` code length and the code, `u32`
//! slot count, then per slot in ascending order 32-byte slot and 32-byte value (big-endian);
//! `u64` length and the EVM head (JSON); `u64` length and the queue (`evm::bridge::Bridge`,
//! JSON); `u32` count and the 32-byte hashes of the blocks `BLOCKHASH` sees after the head
//! (min(256, head number + 1), oldest first, numbered up to the head's; the last is the
//! head's hash); the
//! co-processors: 32-byte consensus digest, CLOB version `u32` and active `u8`,
//! `u64` count of other co-processors, then per co-processor in id order: `u32` id, `u32`
//! version, 32-byte code hash, `u8` active, `u32` parameter count and per parameter (in name
//! order) `u32` name length, the UTF-8 name and `u64` value, then its state: `u8` 0 (it never
//! ran), or 1 (inactive: stored bytes) or 2 (active: its `Coprocessor::snapshot`) followed
//! by `u64` length and the bytes. The roles, chain ids, EVM parameters,
//! funding interval and Core gas limit are configuration and are given again at restore;
//! the incremental EVM and registry commitments are recomputed.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, U256};
use engine::{ArrayLadder, Engine, EngineImage};
use evm::bridge::Bridge;
use evm::executor::{BlockHeader, EvmConfig, Executor, BLOCK_HASH_WINDOW};
use revm::bytecode::Bytecode;
use revm::database::{AccountState, CacheDB, EmptyDB};
use revm::state::AccountInfo;
use transactions::NonceSet;

use crate::coprocessor::{self, Hosted, HostedState};
use crate::{Execution, ExecutionConfig, RegistryEntry};

/// First bytes of an execution snapshot.
pub const MAGIC: &[u8; 16] = b"nexus-exec-v4\0\0\0";

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
    /// The EVM head or queue part is invalid.
    #[error("EVM snapshot: {0}")]
    Evm(String),
    /// A co-processor's part is invalid.
    #[error("co-processor {id}: {what}")]
    Coprocessor {
        /// Its registry id.
        id: u32,
        /// What is wrong.
        what: String,
    },
}

impl Execution {
    /// The state as bytes ([`Execution::restore`] reads them back).
    pub fn snapshot(&self) -> Vec<u8> {
        assemble(&self.engine.snapshot(), &self.after_engine())
    }

    /// A copy of the state to encode later, on another thread ([`ExecutionImage::encode`]):
    /// the engine's order slab is copied, everything else encoded now.
    pub fn image(&self) -> ExecutionImage {
        ExecutionImage {
            engine: self.engine.image(),
            rest: self.after_engine(),
        }
    }

    /// The snapshot after the engine's part: nonces, block time, EVM, co-processors.
    fn after_engine(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.nonces.len() * 64);
        out.extend_from_slice(&(self.nonces.len() as u64).to_le_bytes());
        for (account, nonces) in &self.nonces {
            out.extend_from_slice(&account.to_le_bytes());
            out.push(nonces.used().len() as u8);
            for nonce in nonces.used() {
                out.extend_from_slice(&nonce.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.block_time_ms.to_le_bytes());
        self.write_evm(&mut out);
        self.write_coprocessors(&mut out);
        out
    }

    /// The consensus digest, the CLOB's entry and every other co-processor with its state.
    fn write_coprocessors(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.consensus_digest);
        out.extend_from_slice(&self.clob.version.to_le_bytes());
        out.push(u8::from(self.clob.active));
        out.extend_from_slice(&(self.hosted.len() as u64).to_le_bytes());
        for hosted in self.hosted.values() {
            let entry = &hosted.entry;
            out.extend_from_slice(&entry.id.to_le_bytes());
            out.extend_from_slice(&entry.version.to_le_bytes());
            out.extend_from_slice(&entry.code_hash);
            out.push(u8::from(entry.active));
            out.extend_from_slice(&(entry.params.len() as u32).to_le_bytes());
            for (name, value) in &entry.params {
                out.extend_from_slice(&(name.len() as u32).to_le_bytes());
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&value.to_le_bytes());
            }
            // 0: never ran; 1: stored bytes; 2: running (its snapshot).
            let running = matches!(hosted.state, HostedState::Running(_));
            match hosted.state.bytes() {
                None => out.push(0),
                Some(state) => {
                    out.push(if running { 2 } else { 1 });
                    out.extend_from_slice(&(state.len() as u64).to_le_bytes());
                    out.extend_from_slice(&state);
                }
            }
        }
    }

    /// Reads back what [`Execution::write_coprocessors`] wrote.
    fn read_coprocessors(&mut self, reader: &mut Reader) -> Result<(), SnapshotError> {
        self.consensus_digest = reader.take(32)?.try_into().expect("32 bytes");
        self.clob.version = reader.u32()?;
        self.clob.active = reader.take(1)?[0] != 0;
        for _ in 0..reader.u64()? {
            let id = reader.u32()?;
            let version = reader.u32()?;
            let code_hash: [u8; 32] = reader.take(32)?.try_into().expect("32 bytes");
            let active = reader.take(1)?[0] != 0;
            let mut params = coprocessor::Params::new();
            for _ in 0..reader.u32()? {
                let length = reader.u32()? as usize;
                let name = reader.take(length)?;
                let name = String::from_utf8(name.to_vec()).map_err(|_| SnapshotError::Length)?;
                params.insert(name, reader.u64()?);
            }
            let bad = |what: String| SnapshotError::Coprocessor { id, what };
            let state = match reader.take(1)?[0] {
                0 => HostedState::stored(None),
                1 => HostedState::stored(Some(reader.counted()?.to_vec())),
                2 => {
                    let implementation = self
                        .catalog
                        .find(&code_hash)
                        .ok_or_else(|| bad("code this binary does not carry".to_string()))?;
                    let bytes = reader.counted()?;
                    HostedState::Running((implementation.restore)(bytes, &params).map_err(bad)?)
                }
                other => return Err(bad(format!("state kind {other}"))),
            };
            let entry = RegistryEntry {
                id,
                version,
                code_hash,
                params,
                active,
            };
            self.hosted.insert(id, Hosted { entry, state });
        }
        Ok(())
    }

    /// The EVM accounts (with code and storage), head and queue.
    fn write_evm(&self, out: &mut Vec<u8>) {
        let db = self.executor.db();
        let mut accounts: Vec<_> = db
            .cache
            .accounts
            .iter()
            .filter(|(_, a)| !matches!(a.account_state, AccountState::NotExisting))
            .collect();
        accounts.sort_by_key(|(address, _)| **address);
        out.extend_from_slice(&(accounts.len() as u64).to_le_bytes());
        for (address, account) in accounts {
            let info = &account.info;
            let code = match &info.code {
                Some(code) => code.original_bytes(),
                None => db
                    .cache
                    .contracts
                    .get(&info.code_hash)
                    .map(|c| c.original_bytes())
                    .unwrap_or_default(),
            };
            out.extend_from_slice(address.as_slice());
            out.extend_from_slice(&info.balance.to_be_bytes::<32>());
            out.extend_from_slice(&info.nonce.to_le_bytes());
            out.extend_from_slice(&(code.len() as u32).to_le_bytes());
            out.extend_from_slice(&code);
            let mut slots: Vec<_> = account
                .storage
                .iter()
                .filter(|(_, v)| !v.is_zero())
                .collect();
            slots.sort();
            out.extend_from_slice(&(slots.len() as u32).to_le_bytes());
            for (slot, value) in slots {
                out.extend_from_slice(&slot.to_be_bytes::<32>());
                out.extend_from_slice(&value.to_be_bytes::<32>());
            }
        }
        for json in [
            serde_json::to_vec(self.executor.head()).expect("a header serializes"),
            serde_json::to_vec(&self.bridge).expect("the queue serializes"),
        ] {
            out.extend_from_slice(&(json.len() as u64).to_le_bytes());
            out.extend_from_slice(&json);
        }
        let hashes = self.executor.recent_block_hashes();
        out.extend_from_slice(&(hashes.len() as u32).to_le_bytes());
        for hash in hashes {
            out.extend_from_slice(hash.as_slice());
        }
    }

    /// The state a [`Execution::snapshot`] holds, with the chain's `config` (its roles, id
    /// and funding interval; the engine's sizing comes from the snapshot). Its root is the one the snapshot
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
        let block_time_ms = reader.u64()?;
        let evm_config = config.evm.config.clone();
        let (executor, bridge) = read_evm(&mut reader, evm_config)?;
        let mut execution = Execution::new(config, &[]);
        execution.read_coprocessors(&mut reader)?;
        if reader.at != bytes.len() {
            return Err(SnapshotError::Length);
        }
        execution.engine = engine;
        let accounts: Vec<_> = nonces.keys().copied().collect();
        execution.nonces = nonces;
        for account in accounts {
            execution.refresh_nonce_digest(account);
        }
        execution.block_time_ms = block_time_ms;
        execution.executor = executor;
        execution.registry_sum = [0; 4];
        let claims: Vec<_> = bridge.registry.iter().map(|(a, o)| (*a, *o)).collect();
        execution.bridge = bridge;
        for (account, owner) in claims {
            execution.note_claim(account, owner);
        }
        Ok(execution)
    }
}

/// The snapshot bytes of an engine snapshot and the parts after it.
fn assemble(engine: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + engine.len() + rest.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(engine.len() as u64).to_le_bytes());
    out.extend_from_slice(engine);
    out.extend_from_slice(rest);
    out
}

/// The executed state copied at one point ([`Execution::image`]), to be encoded on another
/// thread (a validator's snapshot writer).
pub struct ExecutionImage {
    engine: EngineImage,
    rest: Vec<u8>,
}

impl ExecutionImage {
    /// The bytes [`Execution::snapshot`] gave when the image was taken.
    pub fn encode(self) -> Vec<u8> {
        assemble(&self.engine.encode(), &self.rest)
    }
}

/// The EVM part of a snapshot: the executor (state and head) and the queue.
fn read_evm(reader: &mut Reader, config: EvmConfig) -> Result<(Executor, Bridge), SnapshotError> {
    let mut db = CacheDB::new(EmptyDB::new());
    for _ in 0..reader.u64()? {
        let address = Address::from_slice(reader.take(20)?);
        let balance = U256::from_be_slice(reader.take(32)?);
        let nonce = reader.u64()?;
        let code_len = reader.u32()? as usize;
        let code = reader.take(code_len)?;
        let mut info = AccountInfo {
            balance,
            nonce,
            ..Default::default()
        };
        if !code.is_empty() {
            let bytecode = Bytecode::new_raw(code.to_vec().into());
            info.code_hash = bytecode.hash_slow();
            info.code = Some(bytecode);
        }
        db.insert_account_info(address, info);
        for _ in 0..reader.u32()? {
            let slot = U256::from_be_slice(reader.take(32)?);
            let value = U256::from_be_slice(reader.take(32)?);
            db.insert_account_storage(address, slot, value)
                .expect("in-memory state cannot fail");
        }
    }
    let head: BlockHeader =
        serde_json::from_slice(reader.counted()?).map_err(|e| SnapshotError::Evm(e.to_string()))?;
    let bridge: Bridge =
        serde_json::from_slice(reader.counted()?).map_err(|e| SnapshotError::Evm(e.to_string()))?;
    read_block_hashes(reader, &head, &mut db)?;
    Ok((Executor::from_parts(config, db, head), bridge))
}

/// The block hashes `BLOCKHASH` sees at `head`, into `db`'s cache: the whole window
/// (`BLOCK_HASH_WINDOW`, or every block since genesis), numbered up to the head's, the last
/// being the head's own hash. The execution root covers them (its chain part), so the
/// restored state's root shows any other window.
fn read_block_hashes(
    reader: &mut Reader,
    head: &BlockHeader,
    db: &mut CacheDB<EmptyDB>,
) -> Result<(), SnapshotError> {
    let count = u64::from(reader.u32()?);
    if count != BLOCK_HASH_WINDOW.min(head.number + 1) {
        return Err(SnapshotError::Evm(format!(
            "{count} block hashes at block {}",
            head.number
        )));
    }
    let first = head.number + 1 - count;
    let mut last = B256::ZERO;
    for number in first..=head.number {
        last = B256::from_slice(reader.take(32)?);
        db.cache.block_hashes.insert(U256::from(number), last);
    }
    if last != head.hash {
        return Err(SnapshotError::Evm(
            "the last block hash is not the head's".into(),
        ));
    }
    Ok(())
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

    /// A `u64` length, then that many bytes.
    fn counted(&mut self) -> Result<&'a [u8], SnapshotError> {
        let length = self.u64()? as usize;
        self.take(length)
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }
}
