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
//!
//! Opening reads the file as a stream (checking every record) and keeps only that index,
//! so restarting does not hold the chain in memory either; [`BlockStore::certificates`]
//! reads blocks back from any height, one at a time, for the validator to re-execute.

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
    /// Opens (or creates) the file at `path`, checks every record (checksum, decoding,
    /// heights in order: 1, 2, ... unless it starts after a snapshot) and cuts a torn
    /// tail. Returns the store and the number of bytes cut. The file is read as a stream:
    /// what stays in memory is the sparse index, not the records
    /// ([`BlockStore::certificates`] reads them back).
    pub fn open(path: &Path) -> Result<(BlockStore, u64), BlockStoreError> {
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
        let size = file.metadata().map_err(io)?.len();
        let index = scan(path, &file, size)?;
        let cut = size - index.end;
        if cut > 0 {
            file.set_len(index.end).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let height = index.last;
        Ok((
            BlockStore {
                path: path.to_path_buf(),
                file,
                height,
                index: Arc::new(Mutex::new(index)),
            },
            cut,
        ))
    }

    /// The lowest height the file holds (`None`: it holds no block).
    pub fn first_height(&self) -> Option<u64> {
        locked(&self.index).first()
    }

    /// The stored certificates from height `from` (or the first stored, if later) through
    /// the last one, decoded one at a time as the iterator is advanced.
    pub fn certificates(&self, from: u64) -> Result<StoredCertificates, BlockStoreError> {
        let from = locked(&self.index)
            .first()
            .map_or(from, |first| from.max(first));
        let walk =
            walk_from(&self.index, &self.path, from).map_err(|source| BlockStoreError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(StoredCertificates {
            path: self.path.clone(),
            walk,
        })
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
    /// records are copied to a temporary file, synced and renamed over the block file (a
    /// crash leaves the old file or the new one, both valid). Returns the bytes removed.
    pub fn prune_through(&mut self, height: u64) -> Result<u64, BlockStoreError> {
        let io = |source| BlockStoreError::Io {
            path: self.path.clone(),
            source,
        };
        let (first, end) = {
            let index = locked(&self.index);
            (index.first(), index.end)
        };
        if first.is_none_or(|first| height < first) {
            return Ok(0);
        }
        let keep_from = match walk_from(&self.index, &self.path, height + 1).map_err(io)? {
            Some(mut walk) => walk.skip_to_from().map_err(io)?,
            None => end,
        };
        let temporary = self.path.with_extension("prune");
        copy_range(&self.path, keep_from..end, &temporary).map_err(io)?;
        let first_kept = height.min(self.height) + 1;
        let index = reindex(&temporary, first_kept, self.height).map_err(io)?;
        {
            // Readers plan and open under the lock: each sees the old file with the old
            // index or the new file with the new one.
            let mut current = locked(&self.index);
            std::fs::rename(&temporary, &self.path).map_err(io)?;
            *current = index;
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        Ok(keep_from)
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

/// Copies the bytes `range` of the file at `from` into a new file `to`, synced.
fn copy_range(from: &Path, range: std::ops::Range<u64>, to: &Path) -> std::io::Result<()> {
    let mut source = File::open(from)?;
    source.seek(SeekFrom::Start(range.start))?;
    let mut target = File::create(to)?;
    std::io::copy(&mut source.take(range.end - range.start), &mut target)?;
    target.sync_all()
}

/// The index of the block file at `path` (its records intact and in order, the first of
/// height `first`, the last of height `last`), rebuilt from the record lengths alone.
fn reindex(path: &Path, first: u64, last: u64) -> std::io::Result<FileIndex> {
    let mut index = FileIndex {
        last,
        ..FileIndex::default()
    };
    let mut file = BufReader::new(File::open(path)?);
    let size = file.get_ref().metadata()?.len();
    let (mut at, mut height) = (0u64, first);
    while at + 4 <= size {
        let len = read_len(&mut file)?;
        let record = 4 + len + 32;
        if at + record > size {
            break;
        }
        index.note(height, at, record);
        file.seek_relative(len as i64 + 32)?;
        at += record;
        height += 1;
    }
    Ok(index)
}

/// A record's length field.
fn read_len(file: &mut impl Read) -> std::io::Result<u64> {
    let mut len = [0u8; 4];
    file.read_exact(&mut len)?;
    Ok(u64::from(u32::from_le_bytes(len)))
}

/// A `Corrupt` error for the record at `offset` of `path`.
fn corrupt(path: &Path, offset: u64, what: String) -> BlockStoreError {
    BlockStoreError::Corrupt {
        path: path.to_path_buf(),
        offset,
        what,
    }
}

/// The commit certificate a record's body encodes.
fn decode_commit(body: &[u8]) -> Result<CommitCertificate, String> {
    match Message::decode(body) {
        Ok(Message::Commit(c)) => Ok(c),
        Ok(_) => Err("not a commit certificate".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The index of the file's intact records (read as a stream from its start, `size` bytes
/// long), checked as [`BlockStore::open`] describes: its `end` is where they end, and what
/// follows is a torn tail the caller cuts.
fn scan(path: &Path, file: &File, size: u64) -> Result<FileIndex, BlockStoreError> {
    let io = |source| BlockStoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut index = FileIndex::default();
    let mut body = Vec::new();
    let mut at = 0u64;
    while at < size {
        if !read_intact(&mut reader, size - at, &mut body).map_err(io)? {
            refuse_damage_before_intact(path, file, at, size)?;
            break;
        }
        let certificate = decode_commit(&body).map_err(|what| corrupt(path, at, what))?;
        let height = certificate.block.height;
        let expected = match index.first() {
            Some(_) => index.last + 1,
            None => height.max(1),
        };
        if height != expected {
            let what = format!("height {height} where {expected} was expected");
            return Err(corrupt(path, at, what));
        }
        let len = 4 + body.len() as u64 + 32;
        index.note(height, at, len);
        at += len;
    }
    Ok(index)
}

/// Reads the next record into `body` (its body only) if it is intact: its length fits in
/// the `remaining` bytes and its checksum holds. `false` if not (what was read is then
/// not a record).
fn read_intact(file: &mut impl Read, remaining: u64, body: &mut Vec<u8>) -> std::io::Result<bool> {
    if remaining < 4 + 32 {
        return Ok(false);
    }
    let len = read_len(file)?;
    if 4 + len + 32 > remaining {
        return Ok(false);
    }
    body.resize(len as usize + 32, 0);
    file.read_exact(body)?;
    let (bytes, sum) = body.split_at(len as usize);
    if checksum(bytes) != sum {
        return Ok(false);
    }
    body.truncate(len as usize);
    Ok(true)
}

/// The record at `at` is not intact: a torn tail if no intact record (a length that fits
/// and a valid checksum) starts anywhere after it, else an error naming both offsets (the
/// damage is in durable history).
fn refuse_damage_before_intact(
    path: &Path,
    file: &File,
    at: u64,
    size: u64,
) -> Result<(), BlockStoreError> {
    let io = |source| BlockStoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut rest = Vec::new();
    let mut reader: &File = file;
    reader.seek(SeekFrom::Start(at)).map_err(io)?;
    reader.take(size - at).read_to_end(&mut rest).map_err(io)?;
    match (1..rest.len()).find(|&o| intact_record(&rest, o).is_some()) {
        Some(next) => Err(corrupt(
            path,
            at,
            format!(
                "damaged record (bad length or checksum) with an intact record after it at \
                 byte {}",
                at + next as u64
            ),
        )),
        None => Ok(()),
    }
}

/// A walk from height `from` over the file at `path`, if it holds that height: planned and
/// the file opened under the index's lock, so a pruning that renames a new file into place
/// cannot pair one file with the other's index.
fn walk_from(
    index: &Mutex<FileIndex>,
    path: &Path,
    from: u64,
) -> std::io::Result<Option<RecordWalk>> {
    let index = locked(index);
    index
        .plan(from)
        .map(|plan| RecordWalk::open(path, plan))
        .transpose()
}

/// Where a walk over the records from one height starts: the nearest index mark at or
/// before it, and the file's last height and end when the walk was planned.
#[derive(Debug, Clone, Copy)]
struct WalkPlan {
    from: u64,
    mark: (u64, u64),
    last: u64,
    end: u64,
}

impl FileIndex {
    /// The plan of a walk from height `from`, if the file holds it.
    fn plan(&self, from: u64) -> Option<WalkPlan> {
        let first = self.first()?;
        if from < first || from > self.last {
            return None;
        }
        let mark = self.marks[self.marks.partition_point(|&(h, _)| h <= from) - 1];
        Some(WalkPlan {
            from,
            mark,
            last: self.last,
            end: self.end,
        })
    }
}

/// A walk over the durable records from one height on: it seeks to the nearest index mark
/// and steps over the record lengths to that height, then reads records in order.
#[derive(Debug)]
struct RecordWalk {
    file: BufReader<File>,
    plan: WalkPlan,
    /// Height and offset of the record the walk is at.
    height: u64,
    offset: u64,
}

impl RecordWalk {
    /// Opens the file at `path` for the walk `plan`.
    fn open(path: &Path, plan: WalkPlan) -> std::io::Result<RecordWalk> {
        let mut file = BufReader::new(File::open(path)?);
        file.seek(SeekFrom::Start(plan.mark.1))?;
        Ok(RecordWalk {
            file,
            plan,
            height: plan.mark.0,
            offset: plan.mark.1,
        })
    }

    /// Steps over the records before the plan's first height; returns its offset.
    fn skip_to_from(&mut self) -> std::io::Result<u64> {
        while self.height < self.plan.from {
            let len = read_len(&mut self.file)?;
            self.file.seek_relative(len as i64 + 32)?;
            self.offset += 4 + len + 32;
            self.height += 1;
        }
        Ok(self.offset)
    }

    /// The next record as (height, offset, body), `None` past the last one the plan
    /// covers; an error if it is not intact (the file changed under the walk) or cannot
    /// be read.
    fn next_record(&mut self) -> std::io::Result<Option<(u64, u64, Vec<u8>)>> {
        self.skip_to_from()?;
        if self.height > self.plan.last || self.offset >= self.plan.end {
            return Ok(None);
        }
        let (height, offset) = (self.height, self.offset);
        let mut body = Vec::new();
        if !read_intact(&mut self.file, self.plan.end - offset, &mut body)? {
            let why = format!("the record of height {height} is not intact");
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
        }
        self.offset += 4 + body.len() as u64 + 32;
        self.height += 1;
        Ok(Some((height, offset, body)))
    }
}

/// The certificates [`BlockStore::certificates`] reads back, in height order; it ends
/// after the first error.
#[derive(Debug)]
pub struct StoredCertificates {
    path: PathBuf,
    walk: Option<RecordWalk>,
}

impl Iterator for StoredCertificates {
    type Item = Result<CommitCertificate, BlockStoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let walk = self.walk.as_mut()?;
        let item = match walk.next_record() {
            Ok(None) => None,
            Ok(Some((height, offset, body))) => Some(
                decode_commit(&body)
                    .and_then(|c| match c.block.height == height {
                        true => Ok(c),
                        false => Err(format!(
                            "height {} where {height} was expected",
                            c.block.height
                        )),
                    })
                    .map_err(|what| corrupt(&self.path, offset, what)),
            ),
            // Not intact: damaged after the file was opened and checked.
            Err(source) if source.kind() == std::io::ErrorKind::InvalidData => {
                Some(Err(corrupt(&self.path, walk.offset, source.to_string())))
            }
            Err(source) => Some(Err(BlockStoreError::Io {
                path: self.path.clone(),
                source,
            })),
        };
        if !matches!(item, Some(Ok(_))) {
            self.walk = None;
        }
        item
    }
}

/// A block file's durable records, read by height (see [`BlockStore::archive`]). Each read
/// opens the file again (under the index's lock), so it sees the file a pruning renamed
/// into place, with its index.
#[derive(Debug, Clone)]
pub struct BlockArchive {
    path: PathBuf,
    index: Arc<Mutex<FileIndex>>,
}

impl CertificateArchive for BlockArchive {
    fn first_height(&self) -> Option<u64> {
        locked(&self.index).first()
    }

    /// Stops at the first record it cannot read or that is not intact.
    fn read(&self, from: u64, max: usize) -> Vec<Vec<u8>> {
        let Ok(Some(mut walk)) = walk_from(&self.index, &self.path, from) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while out.len() < max {
            match walk.next_record() {
                Ok(Some((_, _, body))) => out.push(body),
                Ok(None) | Err(_) => break,
            }
        }
        out
    }
}
