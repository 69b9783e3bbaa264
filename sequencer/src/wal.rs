//! The write-ahead log: blocks, snapshots and metadata in one LMDB environment (via heed).
//!
//! Databases:
//! - `blocks`: height (u64 big-endian) -> encoded [`Block`];
//! - `snapshots`: height (u64 big-endian) -> block hash (32 bytes) + engine snapshot bytes;
//! - `roots`: height (u64 big-endian) -> the engine's state root after that block (32 bytes),
//!   which recovery recomputes and compares: a replay that disagrees is refused;
//! - `meta`: small named values (the format version, the node's registry of names).
//!
//! An append is one LMDB write transaction; its commit returns once the data is on disk
//! (LMDB's default durable commit, `fsync`), so a block is *durable* exactly when
//! [`Wal::append`] returns. LMDB commits are atomic: a crash leaves the last committed
//! transaction, never a torn block. Damage from outside (flipped bytes, a cut file) is caught by
//! the per-block checksum and by comparing the data file's size with LMDB's own page count.

use std::path::{Path, PathBuf};

use heed::byteorder::BigEndian;
use heed::types::{Bytes, U64};
use heed::{Database, Env, EnvOpenOptions};

use crate::block::{Block, BlockError};

/// Format version stored under `meta/format`.
pub const WAL_FORMAT: u32 = 1;

/// Why the log could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// LMDB or the file system failed.
    #[error("LMDB error in {path}: {source}")]
    Storage {
        /// The environment's folder.
        path: PathBuf,
        /// What failed.
        source: heed::Error,
    },
    /// The data file is shorter than LMDB's own record of it: it was cut.
    #[error(
        "write-ahead log {path} is truncated: data file has {file_bytes} bytes, \
         LMDB expects at least {expected_bytes}"
    )]
    Truncated {
        /// The environment's folder.
        path: PathBuf,
        /// Size of data.mdb.
        file_bytes: u64,
        /// Size LMDB's last page needs.
        expected_bytes: u64,
    },
    /// A stored block fails verification.
    #[error("block {height} in the write-ahead log is corrupt: {reason}")]
    CorruptBlock {
        /// Which block.
        height: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Replaying a block gave a different state root than the one recorded when it first ran:
    /// execution is not deterministic, or the log or snapshot was altered.
    #[error("replaying block {height} gives state root {replayed}, but {recorded} was recorded")]
    RootMismatch {
        /// Which block.
        height: u64,
        /// Root recorded at run time (hex).
        recorded: String,
        /// Root after replay (hex).
        replayed: String,
    },
    /// A stored snapshot fails verification.
    #[error("snapshot at height {height} is corrupt: {reason}")]
    CorruptSnapshot {
        /// At which height.
        height: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The log was written by an unknown format version.
    #[error("write-ahead log format {found} is not supported (this build reads {WAL_FORMAT})")]
    Format {
        /// The version found.
        found: u32,
    },
    /// An append does not continue the chain.
    #[error("append of block {found} does not follow block {last}")]
    OutOfOrder {
        /// Height of the last stored block.
        last: u64,
        /// Height of the block offered.
        found: u64,
    },
}

/// An engine snapshot as stored in the log.
#[derive(Debug, Clone)]
pub struct StoredSnapshot {
    /// The block after which it was taken.
    pub height: u64,
    /// That block's hash.
    pub block_hash: [u8; 32],
    /// `engine::Engine::snapshot` bytes.
    pub engine: Vec<u8>,
}

/// How to open the log.
#[derive(Debug, Clone, Copy)]
pub struct WalOptions {
    /// LMDB map size: the most the log may grow to, in bytes.
    pub map_size_bytes: usize,
    /// `fsync` on every commit. Turning this off trades durability on power loss (not on a
    /// process crash) for speed; benchmarks report both.
    pub sync: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            map_size_bytes: 16 << 30,
            sync: true,
        }
    }
}

/// The write-ahead log. One writer (the node's WAL stage); readers may share it.
pub struct Wal {
    env: Env,
    path: PathBuf,
    blocks: Database<HeightKey, Bytes>,
    snapshots: Database<HeightKey, Bytes>,
    roots: Database<HeightKey, Bytes>,
    meta: Database<Bytes, Bytes>,
}

mod lmdb_env {
    //! The one place the log opens LMDB, which heed marks `unsafe`.
    #![allow(unsafe_code)]

    use super::*;

    pub(super) fn open(path: &Path, options: WalOptions) -> heed::Result<Env> {
        let mut builder = EnvOpenOptions::new();
        builder.map_size(options.map_size_bytes).max_dbs(8);
        if !options.sync {
            // SAFETY: NO_SYNC only skips fsync at commit; it cannot corrupt memory. It weakens
            // durability on power loss, which is the documented meaning of `sync = false`.
            unsafe {
                builder.flags(heed::EnvFlags::NO_SYNC);
            }
        }
        // SAFETY: heed requires that the environment is not opened twice in one process and
        // that its files are not modified by other means while open. The node opens its data
        // folder once (a second node on the same folder fails on LMDB's lock), and nothing else
        // writes there. Truncation from outside is checked right after opening.
        unsafe { builder.open(path) }
    }
}

/// Heights are stored big-endian so LMDB's byte order is height order.
type HeightKey = U64<BigEndian>;

impl Wal {
    /// Opens (creating if needed) the log in folder `dir`.
    pub fn open(dir: &Path, options: WalOptions) -> Result<Wal, WalError> {
        let path = dir.to_path_buf();
        let storage = |source| WalError::Storage {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| storage(heed::Error::Io(e)))?;
        let env = lmdb_env::open(dir, options).map_err(storage)?;
        // A cut data file would make LMDB read past its end (SIGBUS): check before any read.
        let file_bytes = env.real_disk_size().map_err(storage)?;
        let expected_bytes = (env.info().last_page_number as u64 + 1) * env.stat().page_size as u64;
        if file_bytes < expected_bytes {
            return Err(WalError::Truncated {
                path,
                file_bytes,
                expected_bytes,
            });
        }
        let mut txn = env.write_txn().map_err(storage)?;
        let blocks = env
            .create_database(&mut txn, Some("blocks"))
            .map_err(storage)?;
        let snapshots = env
            .create_database(&mut txn, Some("snapshots"))
            .map_err(storage)?;
        let roots = env
            .create_database(&mut txn, Some("roots"))
            .map_err(storage)?;
        let meta: Database<Bytes, Bytes> = env
            .create_database(&mut txn, Some("meta"))
            .map_err(storage)?;
        match meta.get(&txn, b"format").map_err(storage)? {
            None => meta
                .put(&mut txn, b"format", &WAL_FORMAT.to_le_bytes())
                .map_err(storage)?,
            Some(bytes) => {
                let found = bytes.try_into().map(u32::from_le_bytes).unwrap_or(u32::MAX);
                if found != WAL_FORMAT {
                    return Err(WalError::Format { found });
                }
            }
        }
        txn.commit().map_err(storage)?;
        Ok(Wal {
            env,
            path,
            blocks,
            snapshots,
            roots,
            meta,
        })
    }

    fn storage(&self, source: heed::Error) -> WalError {
        WalError::Storage {
            path: self.path.clone(),
            source,
        }
    }

    /// The folder the log lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends blocks (which must continue the chain) in one durable transaction.
    pub fn append(&self, blocks: &[Block]) -> Result<(), WalError> {
        self.append_with_roots(blocks, &[])
    }

    /// Appends blocks and records state roots `(height, root)` in one durable transaction.
    pub fn append_with_roots(
        &self,
        blocks: &[Block],
        roots: &[(u64, [u8; 32])],
    ) -> Result<(), WalError> {
        let mut txn = self.env.write_txn().map_err(|e| self.storage(e))?;
        for (height, root) in roots {
            self.roots
                .put(&mut txn, height, root)
                .map_err(|e| self.storage(e))?;
        }
        let mut last = self
            .blocks
            .last(&txn)
            .map_err(|e| self.storage(e))?
            .map(|(key, _)| key)
            .unwrap_or(0);
        for block in blocks {
            if block.height != last + 1 {
                return Err(WalError::OutOfOrder {
                    last,
                    found: block.height,
                });
            }
            self.blocks
                .put(&mut txn, &block.height, &block.bytes)
                .map_err(|e| self.storage(e))?;
            last = block.height;
        }
        txn.commit().map_err(|e| self.storage(e))
    }

    /// Height of the last stored block, if any.
    pub fn last_height(&self) -> Result<Option<u64>, WalError> {
        let txn = self.env.read_txn().map_err(|e| self.storage(e))?;
        Ok(self
            .blocks
            .last(&txn)
            .map_err(|e| self.storage(e))?
            .map(|(key, _)| key))
    }

    /// Reads and verifies one block.
    pub fn block(&self, height: u64) -> Result<Option<Block>, WalError> {
        let txn = self.env.read_txn().map_err(|e| self.storage(e))?;
        match self
            .blocks
            .get(&txn, &height)
            .map_err(|e| self.storage(e))?
        {
            None => Ok(None),
            Some(bytes) => decode_at(height, bytes).map(Some),
        }
    }

    /// Calls `visit` with every block from `from` on, in height order, and the state root
    /// recorded after it (if any), verifying each block's checksum and height. (One read
    /// transaction throughout: `visit` must not open another on this thread.)
    pub fn for_each_block(
        &self,
        from: u64,
        mut visit: impl FnMut(Block, Option<[u8; 32]>) -> Result<(), WalError>,
    ) -> Result<(), WalError> {
        let txn = self.env.read_txn().map_err(|e| self.storage(e))?;
        let range = self
            .blocks
            .range(&txn, &(from..))
            .map_err(|e| self.storage(e))?;
        for entry in range {
            let (key, bytes) = entry.map_err(|e| self.storage(e))?;
            let block = decode_at(key, bytes)?;
            let root = match self.roots.get(&txn, &key).map_err(|e| self.storage(e))? {
                None => None,
                Some(root) => Some(root.try_into().map_err(|_| WalError::CorruptBlock {
                    height: key,
                    reason: "its recorded state root is not 32 bytes".into(),
                })?),
            };
            visit(block, root)?;
        }
        Ok(())
    }

    /// The state root recorded after block `height`, if any.
    pub fn root(&self, height: u64) -> Result<Option<[u8; 32]>, WalError> {
        let txn = self.env.read_txn().map_err(|e| self.storage(e))?;
        let stored = self.roots.get(&txn, &height).map_err(|e| self.storage(e))?;
        match stored {
            None => Ok(None),
            Some(bytes) => bytes
                .try_into()
                .map(Some)
                .map_err(|_| WalError::CorruptBlock {
                    height,
                    reason: "its recorded state root is not 32 bytes".into(),
                }),
        }
    }

    /// Stores an engine snapshot taken after block `height` (whose hash is `block_hash`).
    pub fn put_snapshot(
        &self,
        height: u64,
        block_hash: &[u8; 32],
        snapshot: &[u8],
    ) -> Result<(), WalError> {
        let mut value = Vec::with_capacity(32 + snapshot.len());
        value.extend_from_slice(block_hash);
        value.extend_from_slice(snapshot);
        let mut txn = self.env.write_txn().map_err(|e| self.storage(e))?;
        self.snapshots
            .put(&mut txn, &height, &value)
            .map_err(|e| self.storage(e))?;
        txn.commit().map_err(|e| self.storage(e))
    }

    /// The newest snapshot, if any.
    pub fn latest_snapshot(&self) -> Result<Option<StoredSnapshot>, WalError> {
        let txn = self.env.read_txn().map_err(|e| self.storage(e))?;
        let Some((key, value)) = self.snapshots.last(&txn).map_err(|e| self.storage(e))? else {
            return Ok(None);
        };
        let height = key;
        if value.len() < 32 {
            return Err(WalError::CorruptSnapshot {
                height,
                reason: "shorter than its block hash".into(),
            });
        }
        let (hash, snapshot) = value.split_at(32);
        Ok(Some(StoredSnapshot {
            height,
            block_hash: hash.try_into().expect("32 bytes"),
            engine: snapshot.to_vec(),
        }))
    }

    /// Deletes every block and snapshot above `height`; returns how many blocks went.
    pub fn truncate_after(&self, height: u64) -> Result<usize, WalError> {
        let mut txn = self.env.write_txn().map_err(|e| self.storage(e))?;
        let start = height.saturating_add(1);
        let removed = self
            .blocks
            .delete_range(&mut txn, &(start..))
            .map_err(|e| self.storage(e))?;
        self.snapshots
            .delete_range(&mut txn, &(start..))
            .map_err(|e| self.storage(e))?;
        self.roots
            .delete_range(&mut txn, &(start..))
            .map_err(|e| self.storage(e))?;
        txn.commit().map_err(|e| self.storage(e))?;
        Ok(removed)
    }

    /// Reads a metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, WalError> {
        let txn = self.env.read_txn().map_err(|e| self.storage(e))?;
        Ok(self
            .meta
            .get(&txn, key.as_bytes())
            .map_err(|e| self.storage(e))?
            .map(<[u8]>::to_vec))
    }

    /// Writes a metadata value durably.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), WalError> {
        let mut txn = self.env.write_txn().map_err(|e| self.storage(e))?;
        self.meta
            .put(&mut txn, key.as_bytes(), value)
            .map_err(|e| self.storage(e))?;
        txn.commit().map_err(|e| self.storage(e))
    }

    /// Overwrites a stored block's bytes without any check. Only for tests that simulate disk
    /// damage.
    #[doc(hidden)]
    pub fn overwrite_block_bytes_for_test(
        &self,
        height: u64,
        bytes: &[u8],
    ) -> Result<(), WalError> {
        let mut txn = self.env.write_txn().map_err(|e| self.storage(e))?;
        self.blocks
            .put(&mut txn, &height, bytes)
            .map_err(|e| self.storage(e))?;
        txn.commit().map_err(|e| self.storage(e))
    }
}

fn decode_at(height: u64, bytes: &[u8]) -> Result<Block, WalError> {
    let block = Block::decode(bytes).map_err(|error: BlockError| WalError::CorruptBlock {
        height,
        reason: error.to_string(),
    })?;
    if block.height != height {
        return Err(WalError::CorruptBlock {
            height,
            reason: format!("stored under height {height} but says {}", block.height),
        });
    }
    Ok(block)
}
