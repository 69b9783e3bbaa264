//! The committed-block file: every decided block with its commit certificate, append-only.
//!
//! Layout: one record per height, from height 1, in order:
//!
//! ```text
//! len       u32 LE
//! bytes     len bytes: the certificate as a wire message (`Message::Commit`, tag 3)
//! checksum  [32] BLAKE3("nexus-bft/v1/blockfile\0" || bytes)
//! ```
//!
//! A record is durable when [`BlockStore::append`] returns (written, then `fdatasync`). On
//! open, a torn last record (the file ends inside it, or its checksum fails and nothing
//! follows it: a crash during an append) is cut off; a damaged record with more bytes after
//! it, a certificate that does not decode, or a height out of sequence is an error (the
//! validator must not start on a damaged history). What the file holds is what the host
//! answers `PeerBehind` with and re-executes on restart.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use consensus::messages::{CommitCertificate, Message};

const DOMAIN: &[u8] = b"nexus-bft/v1/blockfile\0";

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
    /// A record before the last one is damaged, or heights are out of order.
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
}

fn checksum(bytes: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    h.update(bytes);
    *h.finalize().as_bytes()
}

impl BlockStore {
    /// Opens (or creates) the file at `path` and returns it with every stored certificate,
    /// heights 1, 2, ... in order. Also returns the number of bytes cut off a torn tail.
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
        let mut certificates = Vec::new();
        let mut at = 0usize;
        let corrupt = |offset: usize, what: String| BlockStoreError::Corrupt {
            path: path.to_path_buf(),
            offset: offset as u64,
            what,
        };
        while at < bytes.len() {
            let rest = &bytes[at..];
            let Some(len) = rest.get(..4) else { break };
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            let Some(record) = rest.get(4..4 + len + 32) else {
                break; // Torn: the file ends inside this record.
            };
            let (body, sum) = record.split_at(len);
            if checksum(body) != sum {
                if at + 4 + len + 32 == bytes.len() {
                    break; // Torn last record.
                }
                return Err(corrupt(at, "checksum mismatch".into()));
            }
            let certificate = match Message::decode(body) {
                Ok(Message::Commit(c)) => c,
                Ok(_) => return Err(corrupt(at, "not a commit certificate".into())),
                Err(e) => return Err(corrupt(at, e.to_string())),
            };
            let expected = certificates.len() as u64 + 1;
            if certificate.block.height != expected {
                return Err(corrupt(
                    at,
                    format!(
                        "height {} where {expected} was expected",
                        certificate.block.height
                    ),
                ));
            }
            certificates.push(certificate);
            at += 4 + len + 32;
        }
        let cut = (bytes.len() - at) as u64;
        if cut > 0 {
            file.set_len(at as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let height = certificates.len() as u64;
        Ok((
            BlockStore {
                path: path.to_path_buf(),
                file,
                height,
            },
            certificates,
            cut,
        ))
    }

    /// Height of the last stored block (0 if none).
    pub fn height(&self) -> u64 {
        self.height
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
        Ok(())
    }
}
