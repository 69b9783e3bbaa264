//! LMDB persistence (heed): accounts, code and storage are written at every block commit in
//! one transaction together with the block, its transactions and receipts, the bridge
//! queues and (optionally) an engine snapshot, so a reopened chain resumes exactly at the
//! last committed block.

use crate::bridge::Bridge;
use crate::executor::{BlockHeader, BlockOutput, EvmConfig, Executor, Receipt, TxRecord};
use alloy_primitives::{Address, B256, U256};
use heed::byteorder::BigEndian;
use heed::types::{Bytes, U64};
use heed::{Database, Env, EnvOpenOptions};
use revm::database::{CacheDB, EmptyDB};
use revm::state::{AccountInfo, Bytecode};
use std::path::{Path, PathBuf};

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// LMDB failed.
    #[error("LMDB at {path}: {source}")]
    Lmdb {
        /// Folder.
        path: PathBuf,
        /// Cause.
        source: heed::Error,
    },
    /// A stored record does not decode.
    #[error("corrupt record in {table}: {detail}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// What.
        detail: String,
    },
    /// The node stopped after an earlier failed write; nothing more is written.
    #[error("node stopped: {0}")]
    Stopped(String),
}

mod lmdb_env {
    //! The one place this crate opens LMDB, which heed marks `unsafe`.
    #![allow(unsafe_code)]

    use super::*;

    pub(super) fn open(path: &Path, map_size_bytes: usize) -> heed::Result<Env> {
        let mut builder = EnvOpenOptions::new();
        builder.map_size(map_size_bytes).max_dbs(8);
        // SAFETY: heed requires that the environment is not opened twice in one process and
        // that its files are not changed by other means while open. The EVM store is opened
        // once per data folder by the one thread that owns the chain; LMDB's lock refuses a
        // second process.
        unsafe { builder.open(path) }
    }
}

type HeightKey = U64<BigEndian>;

/// The EVM store.
pub struct Store {
    env: Env,
    path: PathBuf,
    accounts: Database<Bytes, Bytes>,
    storage: Database<Bytes, Bytes>,
    code: Database<Bytes, Bytes>,
    blocks: Database<HeightKey, Bytes>,
    txs: Database<Bytes, Bytes>,
    meta: Database<Bytes, Bytes>,
}

/// Everything a reopened store holds.
pub struct Loaded {
    /// The executor at the last committed block.
    pub executor: Executor,
    /// The bridge queues.
    pub bridge: Bridge,
    /// The engine snapshot stored with the last block, if any.
    pub engine_snapshot: Option<Vec<u8>>,
    /// Every block header, by height.
    pub blocks: Vec<BlockHeader>,
    /// Every transaction and its receipt.
    pub txs: Vec<(TxRecord, Receipt)>,
}

fn encode_account(info: &AccountInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(72);
    out.extend_from_slice(&info.balance.to_be_bytes::<32>());
    out.extend_from_slice(&info.nonce.to_be_bytes());
    out.extend_from_slice(info.code_hash.as_slice());
    out
}

fn decode_account(bytes: &[u8]) -> Option<AccountInfo> {
    if bytes.len() != 72 {
        return None;
    }
    Some(AccountInfo {
        balance: U256::from_be_slice(&bytes[..32]),
        nonce: u64::from_be_bytes(bytes[32..40].try_into().ok()?),
        code_hash: B256::from_slice(&bytes[40..72]),
        ..Default::default()
    })
}

impl Store {
    /// Opens (creating) the store in `dir` (16 GiB map).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_map_size(dir, 1 << 34)
    }

    /// Opens (creating) the store in `dir` with an LMDB map of `map_size_bytes` (the most
    /// the store may hold; a write past it fails).
    pub fn open_with_map_size(dir: &Path, map_size_bytes: usize) -> Result<Store, StoreError> {
        let path = dir.to_path_buf();
        let err = |source| StoreError::Lmdb {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(heed::Error::Io(e)))?;
        let env = lmdb_env::open(dir, map_size_bytes).map_err(err)?;
        let mut txn = env.write_txn().map_err(err)?;
        let accounts = env
            .create_database(&mut txn, Some("accounts"))
            .map_err(err)?;
        let storage = env
            .create_database(&mut txn, Some("storage"))
            .map_err(err)?;
        let code = env.create_database(&mut txn, Some("code")).map_err(err)?;
        let blocks = env.create_database(&mut txn, Some("blocks")).map_err(err)?;
        let txs = env.create_database(&mut txn, Some("txs")).map_err(err)?;
        let meta = env.create_database(&mut txn, Some("meta")).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Store {
            env,
            path,
            accounts,
            storage,
            code,
            blocks,
            txs,
            meta,
        })
    }

    fn err(&self, source: heed::Error) -> StoreError {
        StoreError::Lmdb {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes a block's state diff, the block, its transactions and receipts, the bridge
    /// state and an optional engine snapshot, in one durable transaction.
    pub fn commit_block(
        &self,
        out: &BlockOutput,
        bridge: &Bridge,
        engine_snapshot: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let e = |s| self.err(s);
        let mut txn = self.env.write_txn().map_err(e)?;
        for address in &out.diff.wiped {
            let keys: Vec<Vec<u8>> = self
                .storage
                .prefix_iter(&txn, address.as_slice())
                .map_err(e)?
                .map(|r| r.map(|(k, _)| k.to_vec()))
                .collect::<Result<_, _>>()
                .map_err(e)?;
            for key in keys {
                self.storage.delete(&mut txn, &key).map_err(e)?;
            }
        }
        for (address, info) in &out.diff.accounts {
            match info {
                Some(info) => self
                    .accounts
                    .put(&mut txn, address.as_slice(), &encode_account(info))
                    .map_err(e)?,
                None => {
                    self.accounts
                        .delete(&mut txn, address.as_slice())
                        .map_err(e)?;
                }
            }
        }
        for ((address, slot), value) in &out.diff.storage {
            let mut key = address.to_vec();
            key.extend_from_slice(&slot.to_be_bytes::<32>());
            if value.is_zero() {
                self.storage.delete(&mut txn, &key).map_err(e)?;
            } else {
                self.storage
                    .put(&mut txn, &key, &value.to_be_bytes::<32>())
                    .map_err(e)?;
            }
        }
        for (hash, code) in &out.diff.code {
            self.code.put(&mut txn, hash.as_slice(), code).map_err(e)?;
        }
        let header = serde_json::to_vec(&out.header).expect("serializable");
        self.blocks
            .put(&mut txn, &out.header.number, &header)
            .map_err(e)?;
        for (record, receipt) in out.txs.iter().zip(&out.receipts) {
            let bytes = serde_json::to_vec(&(record, receipt)).expect("serializable");
            self.txs
                .put(&mut txn, record.hash.as_slice(), &bytes)
                .map_err(e)?;
        }
        let bridge = serde_json::to_vec(bridge).expect("serializable");
        self.meta.put(&mut txn, b"bridge", &bridge).map_err(e)?;
        if let Some(snapshot) = engine_snapshot {
            self.meta.put(&mut txn, b"engine", snapshot).map_err(e)?;
        }
        self.meta
            .put(&mut txn, b"head", &out.header.number.to_be_bytes())
            .map_err(e)?;
        txn.commit().map_err(e)
    }

    /// Loads everything; `None` for an empty store.
    pub fn load(&self, config: EvmConfig) -> Result<Option<Loaded>, StoreError> {
        let e = |s| self.err(s);
        let corrupt = |table, detail: String| StoreError::Corrupt { table, detail };
        let txn = self.env.read_txn().map_err(e)?;
        if self.meta.get(&txn, b"head").map_err(e)?.is_none() {
            return Ok(None);
        }
        let mut db = CacheDB::new(EmptyDB::new());
        for row in self.accounts.iter(&txn).map_err(e)? {
            let (key, value) = row.map_err(e)?;
            let mut info = decode_account(value)
                .ok_or_else(|| corrupt("accounts", format!("{} bytes", value.len())))?;
            if !info.is_empty_code_hash() {
                let code = self
                    .code
                    .get(&txn, info.code_hash.as_slice())
                    .map_err(e)?
                    .ok_or_else(|| corrupt("code", format!("missing {}", info.code_hash)))?;
                info.code = Some(Bytecode::new_raw(code.to_vec().into()));
            }
            db.insert_account_info(Address::from_slice(key), info);
        }
        for row in self.storage.iter(&txn).map_err(e)? {
            let (key, value) = row.map_err(e)?;
            if key.len() != 52 || value.len() != 32 {
                return Err(corrupt("storage", format!("key {} bytes", key.len())));
            }
            db.insert_account_storage(
                Address::from_slice(&key[..20]),
                U256::from_be_slice(&key[20..]),
                U256::from_be_slice(value),
            )
            .expect("in-memory state cannot fail");
        }
        let mut blocks = Vec::new();
        for row in self.blocks.iter(&txn).map_err(e)? {
            let (height, bytes) = row.map_err(e)?;
            let header: BlockHeader =
                serde_json::from_slice(bytes).map_err(|err| corrupt("blocks", err.to_string()))?;
            if header.number != height || height != blocks.len() as u64 {
                return Err(corrupt("blocks", format!("height {height} out of order")));
            }
            blocks.push(header);
        }
        let mut txs = Vec::new();
        for row in self.txs.iter(&txn).map_err(e)? {
            let (_, bytes) = row.map_err(e)?;
            txs.push(serde_json::from_slice(bytes).map_err(|err| corrupt("txs", err.to_string()))?);
        }
        let bridge: Bridge = serde_json::from_slice(
            self.meta
                .get(&txn, b"bridge")
                .map_err(e)?
                .ok_or_else(|| corrupt("meta", "no bridge".into()))?,
        )
        .map_err(|err| corrupt("meta", err.to_string()))?;
        let engine_snapshot = self
            .meta
            .get(&txn, b"engine")
            .map_err(e)?
            .map(<[u8]>::to_vec);
        let head = blocks
            .last()
            .cloned()
            .ok_or_else(|| corrupt("blocks", "empty".into()))?;
        Ok(Some(Loaded {
            executor: Executor::from_parts(config, db, head),
            bridge,
            engine_snapshot,
            blocks,
            txs,
        }))
    }
}
