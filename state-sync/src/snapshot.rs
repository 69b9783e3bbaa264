//! A validator's snapshots: its executed state after a block, so that a restart loads the
//! newest one and executes only the blocks after it (instead of every block from genesis).
//!
//! One file per snapshot, `<data dir>/snapshots/<height, 20 digits>.snap`, written to a
//! temporary name, synced and renamed (a crash leaves either the whole file or none); the
//! newest [`KEEP`] are kept. Format (little-endian): [`MAGIC`], `u64` height, 32-byte
//! execution root, `u64` inputs executed, `u64` block time (ms), 32-byte block id and `u64`
//! timestamp (ns) of the block, `u64` length and the execution snapshot
//! (`execution::Execution::snapshot`), `u64` length and the consensus-layer chain state
//! after the block (`consensus::chain::ChainState::encode`), then BLAKE3 of everything
//! before it. A restore checks the chain state's hash against the digest the restored
//! execution state committed to (`execution::Execution::consensus_digest`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// First bytes of a snapshot file.
pub const MAGIC: &[u8; 16] = b"nexus-vsnap-v2\0\0";
/// Snapshots kept; older ones are deleted after a new one is written.
pub const KEEP: usize = 2;
const FIXED: usize = 16 + 8 + 32 + 8 + 8 + 32 + 8 + 8;

/// The executed state after block `height`, and what the host needs to go on from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The block it was taken after.
    pub height: u64,
    /// The execution root after it.
    pub exec_root: [u8; 32],
    /// The chain's inputs executed up to it (the gateway's `seq`).
    pub inputs_executed: u64,
    /// The time the next block's nonces are checked against (ms).
    pub block_time_ms: u64,
    /// The block's id (checked against the block file on restore).
    pub block_id: [u8; 32],
    /// The block's timestamp (ns).
    pub block_timestamp_ns: u64,
    /// `Execution::snapshot` bytes.
    pub execution: Vec<u8>,
    /// `ChainState::encode` bytes: the consensus-layer state after the block.
    pub chain: Vec<u8>,
}

impl Snapshot {
    /// Its file bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED + self.execution.len() + 8 + self.chain.len() + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.height.to_le_bytes());
        out.extend_from_slice(&self.exec_root);
        out.extend_from_slice(&self.inputs_executed.to_le_bytes());
        out.extend_from_slice(&self.block_time_ms.to_le_bytes());
        out.extend_from_slice(&self.block_id);
        out.extend_from_slice(&self.block_timestamp_ns.to_le_bytes());
        out.extend_from_slice(&(self.execution.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.execution);
        out.extend_from_slice(&(self.chain.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.chain);
        let checksum = blake3::hash(&out);
        out.extend_from_slice(checksum.as_bytes());
        out
    }

    /// Reads file bytes; `None` if they are not a whole, intact snapshot.
    pub fn decode(bytes: &[u8]) -> Option<Snapshot> {
        let body_len = bytes.len().checked_sub(32)?;
        let (body, checksum) = bytes.split_at(body_len);
        if body.len() < FIXED || &body[..16] != MAGIC || blake3::hash(body).as_bytes() != checksum {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8"));
        let array_at = |at: usize| -> [u8; 32] { body[at..at + 32].try_into().expect("32") };
        let execution_end = FIXED.checked_add(usize::try_from(u64_at(112)).ok()?)?;
        let chain_at = execution_end.checked_add(8)?;
        let chain_len = u64::from_le_bytes(body.get(execution_end..chain_at)?.try_into().ok()?);
        if chain_at.checked_add(usize::try_from(chain_len).ok()?)? != body.len() {
            return None;
        }
        Some(Snapshot {
            height: u64_at(16),
            exec_root: array_at(24),
            inputs_executed: u64_at(56),
            block_time_ms: u64_at(64),
            block_id: array_at(72),
            block_timestamp_ns: u64_at(104),
            execution: body[FIXED..execution_end].to_vec(),
            chain: body[chain_at..].to_vec(),
        })
    }
}

fn file_name(height: u64) -> String {
    format!("{height:020}.snap")
}

/// Heights of the snapshot files in `dir`, ascending.
pub fn heights(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut heights: Vec<u64> = entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".snap")?.parse().ok()
        })
        .collect();
    heights.sort_unstable();
    heights
}

/// Writes `snapshot` into `dir` durably (temporary file, sync, rename, sync of the folder)
/// and deletes all but the newest [`KEEP`], and temporary files a crash mid-write left.
pub fn write(dir: &Path, snapshot: &Snapshot) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(file_name(snapshot.height));
    let temporary = dir.join(format!("{}.tmp", file_name(snapshot.height)));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&snapshot.encode())?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    let all = heights(dir);
    for old in &all[..all.len().saturating_sub(KEEP)] {
        let _ = std::fs::remove_file(dir.join(file_name(*old)));
    }
    remove_temporaries(dir);
    Ok(path)
}

/// Deletes `*.snap.tmp` files in `dir`: each is a write a crash interrupted (one writer at
/// a time, and its own was just renamed).
fn remove_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(".snap.tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The snapshot of `height` in `dir` and its file bytes, if the file is intact and of that
/// height.
pub fn read(dir: &Path, height: u64) -> Option<(Snapshot, Vec<u8>)> {
    let bytes = std::fs::read(dir.join(file_name(height))).ok()?;
    let snapshot = Snapshot::decode(&bytes).filter(|s| s.height == height)?;
    Some((snapshot, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(height: u64) -> Snapshot {
        Snapshot {
            height,
            exec_root: [1; 32],
            inputs_executed: 77,
            block_time_ms: 1_800_000_000_000,
            block_id: [2; 32],
            block_timestamp_ns: 5,
            execution: vec![9; 100],
            chain: vec![4; 30],
        }
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let snapshot = sample(40);
        let bytes = snapshot.encode();
        assert_eq!(Snapshot::decode(&bytes), Some(snapshot));
        for at in [0, 20, 100, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            assert_eq!(Snapshot::decode(&damaged), None, "byte {at}");
        }
        assert_eq!(Snapshot::decode(&bytes[..bytes.len() - 1]), None);
        // A version 1 file (no chain state) is not read as this version, even intact.
        let mut old = bytes[..bytes.len() - 32].to_vec();
        old[..16].copy_from_slice(b"nexus-vsnap-v1\0\0");
        let checksum = *blake3::hash(&old).as_bytes();
        old.extend_from_slice(&checksum);
        assert_eq!(Snapshot::decode(&old), None);
        // A chain-state length past the end.
        let mut long = bytes[..bytes.len() - 32].to_vec();
        let at = FIXED + 100;
        long[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let checksum = *blake3::hash(&long).as_bytes();
        long.extend_from_slice(&checksum);
        assert_eq!(Snapshot::decode(&long), None);
    }

    #[test]
    fn the_newest_two_are_kept_and_a_damaged_file_does_not_read() {
        let dir = tempfile::tempdir().unwrap();
        for height in [10, 20, 30] {
            write(dir.path(), &sample(height)).unwrap();
        }
        assert_eq!(
            heights(dir.path()),
            [20, 30],
            "only the newest two are kept"
        );
        assert_eq!(read(dir.path(), 30).map(|(s, _)| s), Some(sample(30)));
        // A damaged file does not read; the older one still does (a restart then takes it).
        std::fs::write(dir.path().join(file_name(30)), b"garbage").unwrap();
        assert_eq!(read(dir.path(), 30), None);
        assert_eq!(read(dir.path(), 20).map(|(s, _)| s.height), Some(20));
        assert_eq!(read(dir.path(), 10), None, "deleted");
    }

    #[test]
    fn a_write_cut_short_leaves_the_previous_snapshot_and_is_cleaned_up_later() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample(10)).unwrap();
        // A crash while writing 20: half its bytes under the temporary name.
        let bytes = sample(20).encode();
        let temporary = dir.path().join(format!("{}.tmp", file_name(20)));
        std::fs::write(&temporary, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(heights(dir.path()), [10]);
        assert_eq!(read(dir.path(), 10).map(|(s, _)| s), Some(sample(10)));
        write(dir.path(), &sample(30)).unwrap();
        assert!(!temporary.exists(), "the next write removes the leftover");
        assert_eq!(heights(dir.path()), [10, 30]);
    }
}
