//! The committed-block file: every decided block with its commit certificate, append-only.
//!
//! Layout: one record per height, in order, from height 1 (or from the height after the
//! snapshot a validator started from: [`BlockStore::start_after`]):
//!
//! ```text
//! len       u32 LE
//! bytes     len bytes: the certificate as a wire message (`Message::Commit`, tag 3)
//! checksum  [32] BLAKE3("nexus-bft/v1/blockfile\0" || bytes)
//! ```
//!
//! A record is durable when [`BlockStore::append`] returns (written, then `fdatasync`). On
//! open, the first record that is not intact (its length runs past the end of the file or
//! its checksum fails) is a torn tail, and is cut off with everything after it, only if no
//! intact record (a length that fits and a valid checksum) starts anywhere after it: what a
//! crash during an append leaves, including a tail of zero bytes. If an intact record does
//! follow, the damage is in the middle of durable history and opening fails with
//! [`BlockStoreError::Corrupt`] naming the damaged record's offset. A certificate that does
//! not decode or a height out of sequence is also an error (the validator must not start on
//! a damaged history). What the file holds is what the host answers `PeerBehind` with and
//! re-executes on restart.
//!
//! The host keeps only its newest certificates in memory and reads older ones back through
//! [`BlockStore::archive`] ([`BlockArchive`]) to answer peers that are behind: a sparse
//! index (the offset of every [`INDEX_EVERY`]-th record) finds a height with a short walk
//! over record lengths.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use consensus::host::CertificateArchive;
use consensus::messages::{CommitCertificate, Message};

const DOMAIN: &[u8] = b"nexus-bft/v1/blockfile\0";

/// Records between two marks of the block file's sparse index.
pub const INDEX_EVERY: u64 = 256;

/// Where records of the block file start: the first one's and every [`INDEX_EVERY`]-th
/// after it, so memory is O(blocks / INDEX_EVERY).
#[derive(Debug, Default)]
struct FileIndex {
    /// (height, offset) of the marked records, ascending.
    marks: Vec<(u64, u64)>,
    /// Height of the last durable record (0: none).
    last: u64,
    /// Where the next record goes: the end of the intact records.
    end: u64,
}

impl FileIndex {
    /// Record `height`, `len` bytes at `offset`, is durable.
    fn note(&mut self, height: u64, offset: u64, len: u64) {
        let marked = match self.marks.first() {
            None => true,
            Some(&(first, _)) => (height - first).is_multiple_of(INDEX_EVERY),
        };
        if marked {
            self.marks.push((height, offset));
        }
        self.last = height;
        self.end = offset + len;
    }

    /// The lowest height the file holds.
    fn first(&self) -> Option<u64> {
        self.marks.first().map(|&(height, _)| height)
    }
}

/// The index, even if a thread panicked holding it (it is rebuilt, never half-written).
fn locked(index: &Mutex<FileIndex>) -> MutexGuard<'_, FileIndex> {
    index
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why the block file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BlockStoreError {
    /// Reading or writing failed.
    #[error("block file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A damaged record with an intact record after it, a certificate that does not decode,
    /// or heights out of order.
    #[error("block file {path} is damaged at byte {offset}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong.
        what: String,
    },
}

/// An open block file.
#[derive(Debug)]
pub struct BlockStore {
    path: PathBuf,
    file: File,
    height: u64,
    index: Arc<Mutex<FileIndex>>,
}

fn checksum(bytes: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    h.update(bytes);
    *h.finalize().as_bytes()
}

/// The body of the intact record starting at `at` (its length fits in `bytes` and its
/// checksum holds), or `None`.
fn intact_record(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let rest = bytes.get(at..)?;
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().expect("4 bytes")) as usize;
    let end = len.checked_add(36)?;
    let (body, sum) = rest.get(4..end)?.split_at(len);
    (checksum(body) == sum).then_some(body)
}

impl BlockStore {
    /// Opens (or creates) the file at `path` and returns it with every stored certificate,
    /// heights in order (1, 2, ... unless it starts after a snapshot). Also returns the number of bytes cut off a torn tail.
    pub fn open(path: &Path) -> Result<(BlockStore, Vec<CommitCertificate>, u64), BlockStoreError> {
        let io = |source| BlockStoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut certificates: Vec<CommitCertificate> = Vec::new();
        let mut index = FileIndex::default();
        let mut at = 0usize;
        let corrupt = |offset: usize, what: String| BlockStoreError::Corrupt {
            path: path.to_path_buf(),
            offset: offset as u64,
            what,
        };
        while at < bytes.len() {
            let Some(body) = intact_record(&bytes, at) else {
                // Torn tail only if nothing intact follows (zero bytes, a partial append);
                // an intact record after it means durable history is damaged.
                if let Some(next) =
                    (at + 1..bytes.len()).find(|&o| intact_record(&bytes, o).is_some())
                {
                    return Err(corrupt(
                        at,
                        format!(
                            "damaged record (bad length or checksum) with an intact record \
                             after it at byte {next}"
                        ),
                    ));
                }
                break;
            };
            let certificate = match Message::decode(body) {
                Ok(Message::Commit(c)) => c,
                Ok(_) => return Err(corrupt(at, "not a commit certificate".into())),
                Err(e) => return Err(corrupt(at, e.to_string())),
            };
            let expected = match certificates.first() {
                Some(first) => first.block.height + certificates.len() as u64,
                None => certificate.block.height.max(1),
            };
            if certificate.block.height != expected {
                return Err(corrupt(
                    at,
                    format!(
                        "height {} where {expected} was expected",
                        certificate.block.height
                    ),
                ));
            }
            let len = 4 + body.len() + 32;
            index.note(certificate.block.height, at as u64, len as u64);
            certificates.push(certificate);
            at += len;
        }
        let cut = (bytes.len() - at) as u64;
        if cut > 0 {
            file.set_len(at as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let height = certificates.last().map_or(0, |c| c.block.height);
        Ok((
            BlockStore {
                path: path.to_path_buf(),
                file,
                height,
                index: Arc::new(Mutex::new(index)),
            },
            certificates,
            cut,
        ))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Height of the last stored block (0 if none).
    pub fn height(&self) -> u64 {
        self.height
    }

    /// Read access to the durable records by height, for the host
    /// ([`consensus::host::Host::set_certificate_archive`]); it follows this store's
    /// appends, pruning and restarts.
    pub fn archive(&self) -> BlockArchive {
        BlockArchive {
            path: self.path.clone(),
            index: self.index.clone(),
        }
    }

    /// The file continues after `height` (a validator that started from a snapshot of that
    /// height): every stored block is dropped and the next block appended is `height + 1`.
    pub fn start_after(&mut self, height: u64) -> Result<(), BlockStoreError> {
        if self.height > 0 {
            let io = |source| BlockStoreError::Io {
                path: self.path.clone(),
                source,
            };
            self.file.set_len(0).map_err(io)?;
            self.file.sync_all().map_err(io)?;
        }
        self.height = height;
        *locked(&self.index) = FileIndex {
            last: height,
            ..FileIndex::default()
        };
        Ok(())
    }

    /// Drops every block up to `height` (pruning: a snapshot covers them): the later
    /// records are written to a temporary file, synced and renamed over the block file (a
    /// crash leaves the old file or the new one, both valid). Returns the bytes removed.
    pub fn prune_through(&mut self, height: u64) -> Result<u64, BlockStoreError> {
        let io = |source| BlockStoreError::Io {
            path: self.path.clone(),
            source,
        };
        let bytes = std::fs::read(&self.path).map_err(io)?;
        let mut keep_from = bytes.len();
        let mut first_kept = self.height + 1;
        let mut at = 0usize;
        while let Some(body) = intact_record(&bytes, at) {
            let Ok(Message::Commit(c)) = Message::decode(body) else {
                break;
            };
            if c.block.height > height {
                keep_from = at;
                first_kept = c.block.height;
                break;
            }
            at += 4 + body.len() + 32;
        }
        if keep_from == 0 {
            return Ok(0);
        }
        let temporary = self.path.with_extension("prune");
        let mut file = File::create(&temporary).map_err(io)?;
        file.write_all(&bytes[keep_from..]).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        *locked(&self.index) = reindex(&bytes[keep_from..], first_kept, self.height);
        Ok(keep_from as u64)
    }

    /// Appends the certificate of the next height and makes it durable. Panics if it is not
    /// the next height (the host decides heights in order).
    pub fn append(&mut self, certificate: &CommitCertificate) -> Result<(), BlockStoreError> {
        assert_eq!(
            certificate.block.height,
            self.height + 1,
            "blocks are stored in height order"
        );
        let body = Message::Commit(certificate.clone()).encode();
        let mut record = Vec::with_capacity(body.len() + 36);
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&body);
        record.extend_from_slice(&checksum(&body));
        let io = |source| BlockStoreError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&record).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.height += 1;
        let mut index = locked(&self.index);
        let offset = index.end;
        index.note(self.height, offset, record.len() as u64);
        Ok(())
    }
}

/// The index of `records` (intact, in order, the first of height `first`), the file's
/// last height being `last`.
fn reindex(records: &[u8], first: u64, last: u64) -> FileIndex {
    let mut index = FileIndex {
        last,
        ..FileIndex::default()
    };
    let (mut at, mut height) = (0usize, first);
    while let Some(body) = intact_record(records, at) {
        let len = 4 + body.len() + 32;
        index.note(height, at as u64, len as u64);
        at += len;
        height += 1;
    }
    index
}

/// A block file's durable records, read by height (see [`BlockStore::archive`]). Each read
/// opens the file again, so it sees the file a pruning renamed into place.
#[derive(Debug, Clone)]
pub struct BlockArchive {
    path: PathBuf,
    index: Arc<Mutex<FileIndex>>,
}

impl BlockArchive {
    /// [`CertificateArchive::read`], or why the file could not be read.
    fn try_read(&self, from: u64, max: usize) -> std::io::Result<Vec<Vec<u8>>> {
        let (mark, last, end) = {
            let index = locked(&self.index);
            let Some(first) = index.first() else {
                return Ok(Vec::new());
            };
            if from < first || from > index.last || max == 0 {
                return Ok(Vec::new());
            }
            let mark = index.marks[index.marks.partition_point(|&(h, _)| h <= from) - 1];
            (mark, index.last, index.end)
        };
        let mut file = BufReader::new(File::open(&self.path)?);
        file.seek(SeekFrom::Start(mark.1))?;
        let (mut height, mut offset) = mark;
        let mut out = Vec::new();
        while height <= last && out.len() < max {
            let mut len = [0u8; 4];
            file.read_exact(&mut len)?;
            let len = u64::from(u32::from_le_bytes(len));
            if offset + 4 + len + 32 > end {
                break;
            }
            if height < from {
                file.seek_relative(len as i64 + 32)?;
            } else {
                let mut record = vec![0u8; len as usize + 32];
                file.read_exact(&mut record)?;
                let (body, sum) = record.split_at(len as usize);
                if checksum(body) != sum {
                    break;
                }
                record.truncate(len as usize);
                out.push(record);
            }
            offset += 4 + len + 32;
            height += 1;
        }
        Ok(out)
    }
}

impl CertificateArchive for BlockArchive {
    fn first_height(&self) -> Option<u64> {
        locked(&self.index).first()
    }

    fn read(&self, from: u64, max: usize) -> Vec<Vec<u8>> {
        self.try_read(from, max).unwrap_or_default()
    }
}
