//! State sync between validators: a validator serves its newest snapshot
//! ([`snapshot`]) to peers as a manifest and chunks, and a validator with no
//! blocks assembles one from them, checks each chunk against the manifest and the whole
//! against a verified commit certificate of the next block (docs/consensus.md, "State sync
//! and pruning").
//!
//! Every message is an application frame body ([`consensus::host::FRAME_APP`], so it rides
//! the bulk lane) starting with [`TAG`] (as a forwarded list's item count it would be far
//! over any limit, so no forwarded batch is mistaken for one), then a kind byte:
//!
//! - [`MANIFEST_REQUEST`]: nothing more;
//! - [`MANIFEST`]: `u64` height (0: no snapshot), 32-byte execution root, 32-byte block id,
//!   `u64` total bytes, `u32` chunk size, `u32` chunk count, then 32-byte BLAKE3 per chunk,
//!   `u64` the lowest block height the peer holds, then (a snapshot's, not "none") the
//!   serving validator's [`attest::Attestation`]: 32-byte key, 64-byte signature;
//! - [`CHUNK_REQUEST`]: `u64` height, `u32` index;
//! - [`CHUNK`]: `u64` height, `u32` index, the chunk's bytes.
//!
//! All integers little-endian.
//!
//! - [`snapshot`]: a validator's snapshot files (the bytes served), which it also restarts
//!   from.
//! - [`attest`]: the signatures by which validators vouch for a snapshot's bytes, which a
//!   joining validator needs from more than 1/3 of the snapshot's stake.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use attest::{Attestation, Attester};
use consensus::chain::ChainState;
use consensus::messages::CommitCertificate;
use consensus::protocol::{certified_by_quorum, signed_stake};
use consensus::types::{SignatureVerifier, ValidatorId};
use consensus::validators::ValidatorSet;
use snapshot::Snapshot;

pub mod attest;
pub mod snapshot;

/// First bytes of every state-sync frame body.
pub const TAG: [u8; 4] = *b"\xffSNP";
/// Kind: a request for the newest snapshot's manifest.
pub const MANIFEST_REQUEST: u8 = 1;
/// Kind: a manifest.
pub const MANIFEST: u8 = 2;
/// Kind: a request for one chunk.
pub const CHUNK_REQUEST: u8 = 3;
/// Kind: one chunk.
pub const CHUNK: u8 = 4;
/// Bytes per chunk (the last one may be shorter).
pub const CHUNK_BYTES: usize = 1 << 20;
/// Most chunks one manifest may name (a 4 GiB snapshot).
pub const MAX_CHUNKS: usize = 4096;

/// What a served snapshot is: its identity and each chunk's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The block it was taken after (0: the peer has none).
    pub height: u64,
    /// The execution root after that block.
    pub exec_root: [u8; 32],
    /// That block's id.
    pub block_id: [u8; 32],
    /// Bytes of the whole snapshot file.
    pub total: u64,
    /// Bytes per chunk.
    pub chunk_size: u32,
    /// BLAKE3 of each chunk, in order.
    pub hashes: Vec<[u8; 32]>,
    /// The lowest block height the peer still holds (above 1 once it pruned).
    pub first_block: u64,
    /// The serving validator's signature of it (none in "no snapshot").
    pub attestation: Option<Attestation>,
}

/// One state-sync message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMessage {
    /// Send me your newest manifest.
    ManifestRequest,
    /// A manifest.
    Manifest(Manifest),
    /// Send me chunk `index` of your snapshot at `height`.
    ChunkRequest {
        /// The snapshot's height.
        height: u64,
        /// Which chunk.
        index: u32,
    },
    /// Chunk `index` of the snapshot at `height`.
    Chunk {
        /// The snapshot's height.
        height: u64,
        /// Which chunk.
        index: u32,
        /// Its bytes.
        bytes: Vec<u8>,
    },
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn array_at(b: &[u8], at: usize) -> Option<[u8; 32]> {
    b.get(at..at + 32)?.try_into().ok()
}

impl SyncMessage {
    /// The frame body (without the `FRAME_APP` tag).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = TAG.to_vec();
        match self {
            SyncMessage::ManifestRequest => out.push(MANIFEST_REQUEST),
            SyncMessage::Manifest(m) => {
                out.push(MANIFEST);
                out.extend_from_slice(&m.height.to_le_bytes());
                out.extend_from_slice(&m.exec_root);
                out.extend_from_slice(&m.block_id);
                out.extend_from_slice(&m.total.to_le_bytes());
                out.extend_from_slice(&m.chunk_size.to_le_bytes());
                out.extend_from_slice(&(m.hashes.len() as u32).to_le_bytes());
                m.hashes.iter().for_each(|h| out.extend_from_slice(h));
                out.extend_from_slice(&m.first_block.to_le_bytes());
                if let Some(a) = m.attestation.filter(|_| m.height > 0) {
                    out.extend_from_slice(&a.signer.0);
                    out.extend_from_slice(&a.signature);
                }
            }
            SyncMessage::ChunkRequest { height, index } => {
                out.push(CHUNK_REQUEST);
                out.extend_from_slice(&height.to_le_bytes());
                out.extend_from_slice(&index.to_le_bytes());
            }
            SyncMessage::Chunk {
                height,
                index,
                bytes,
            } => {
                out.push(CHUNK);
                out.extend_from_slice(&height.to_le_bytes());
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(bytes);
            }
        }
        out
    }

    /// Reads a frame body; `None` if it is not a well-formed state-sync message.
    pub fn decode(body: &[u8]) -> Option<SyncMessage> {
        let rest = body.strip_prefix(&TAG)?;
        let (&kind, b) = rest.split_first()?;
        match kind {
            MANIFEST_REQUEST if b.is_empty() => Some(SyncMessage::ManifestRequest),
            MANIFEST => decode_manifest(b).map(SyncMessage::Manifest),
            CHUNK_REQUEST if b.len() == 12 => Some(SyncMessage::ChunkRequest {
                height: u64_at(b, 0)?,
                index: u32_at(b, 8)?,
            }),
            CHUNK if b.len() >= 12 => Some(SyncMessage::Chunk {
                height: u64_at(b, 0)?,
                index: u32_at(b, 8)?,
                bytes: b[12..].to_vec(),
            }),
            _ => None,
        }
    }
}

fn decode_manifest(b: &[u8]) -> Option<Manifest> {
    let count = u32_at(b, 84)? as usize;
    if count > MAX_CHUNKS {
        return None;
    }
    let end = 96 + 32 * count;
    if b.len() != end && b.len() != end + ATTESTATION_BYTES {
        return None;
    }
    let hashes: Option<Vec<[u8; 32]>> = (0..count).map(|i| array_at(b, 88 + 32 * i)).collect();
    let attestation = match b.get(end..) {
        Some([]) => None,
        Some(a) => Some(Attestation {
            signer: ValidatorId(a[..32].try_into().ok()?),
            signature: a[32..].try_into().ok()?,
        }),
        None => return None,
    };
    let manifest = Manifest {
        height: u64_at(b, 0)?,
        exec_root: array_at(b, 8)?,
        block_id: array_at(b, 40)?,
        total: u64_at(b, 72)?,
        chunk_size: u32_at(b, 80)?,
        hashes: hashes?,
        first_block: u64_at(b, 88 + 32 * count)?,
        attestation,
    };
    let attested_only_if_offered = manifest.height > 0 || manifest.attestation.is_none();
    (manifest.consistent() && attested_only_if_offered).then_some(manifest)
}

/// Bytes of an attestation in a manifest: key and signature.
const ATTESTATION_BYTES: usize = 32 + 64;

impl Manifest {
    /// The manifest of snapshot file bytes `file` of `snapshot`, cut in `chunk_size` chunks.
    pub fn of(snapshot: &Snapshot, file: &[u8], chunk_size: usize) -> Manifest {
        Manifest {
            height: snapshot.height,
            exec_root: snapshot.exec_root,
            block_id: snapshot.block_id,
            total: file.len() as u64,
            chunk_size: chunk_size as u32,
            hashes: file
                .chunks(chunk_size)
                .map(|c| *blake3::hash(c).as_bytes())
                .collect(),
            first_block: 1,
            attestation: None,
        }
    }

    /// The manifest of "no snapshot".
    pub fn none() -> Manifest {
        Manifest {
            height: 0,
            exec_root: [0; 32],
            block_id: [0; 32],
            total: 0,
            chunk_size: 0,
            hashes: Vec::new(),
            first_block: 1,
            attestation: None,
        }
    }

    /// Whether the chunk count fits the total and chunk size.
    fn consistent(&self) -> bool {
        if self.height == 0 {
            return self.hashes.is_empty();
        }
        let size = u64::from(self.chunk_size);
        size > 0
            && size <= CHUNK_BYTES as u64
            && self.total.div_ceil(size) == self.hashes.len() as u64
    }

    /// The length chunk `index` must have.
    fn chunk_len(&self, index: usize) -> usize {
        let size = self.chunk_size as u64;
        let start = index as u64 * size;
        (self.total - start).min(size) as usize
    }
}

/// The serving side: the newest snapshot of this validator, read once per snapshot (a
/// file is never changed once written) and its manifest signed then, and a per-peer rate
/// limit of chunks.
pub struct SnapshotServer {
    dir: PathBuf,
    attester: Attester,
    cached: Option<(Manifest, Arc<Vec<u8>>)>,
    /// Heights whose file did not decode (not read again).
    damaged: BTreeSet<u64>,
    /// Snapshot files read so far.
    files_read: u64,
    sent: BTreeMap<(ValidatorId, u64), u64>,
}

impl SnapshotServer {
    /// Serves the snapshots in `dir`, their manifests signed by `attester`.
    pub fn new(dir: PathBuf, attester: Attester) -> SnapshotServer {
        SnapshotServer {
            dir,
            attester,
            cached: None,
            damaged: BTreeSet::new(),
            files_read: 0,
            sent: BTreeMap::new(),
        }
    }

    /// Snapshot files read so far (each is read once while it is the newest served).
    pub fn files_read(&self) -> u64 {
        self.files_read
    }

    /// The answer to `request` from `from` (none if rate-limited or not a request).
    /// `(first_block, max_height)`: the lowest and highest block heights this validator
    /// holds.
    pub fn answer(
        &mut self,
        from: ValidatorId,
        request: &SyncMessage,
        (first_block, max_height): (u64, u64),
        now_ns: u64,
    ) -> Option<SyncMessage> {
        // Manifests and chunks share the per-peer budget; a manifest counts as "height"
        // `u64::MAX`, a chunk as its index.
        let allowed = |sent: &mut BTreeMap<_, _>, key| {
            consensus::host::limits::cert_allowed(sent, from, key, now_ns)
        };
        match *request {
            SyncMessage::ManifestRequest => {
                if !allowed(&mut self.sent, u64::MAX) {
                    return None;
                }
                let manifest = self.newest(max_height).map(|(m, _)| m.clone());
                let mut manifest = manifest.unwrap_or_else(Manifest::none);
                manifest.first_block = first_block;
                Some(SyncMessage::Manifest(manifest))
            }
            SyncMessage::ChunkRequest { height, index } => {
                // Any snapshot still kept, not only the newest: a newer one can appear
                // while a peer fetches.
                let (manifest, _) = self.newest(height.min(max_height))?;
                let i = index as usize;
                if manifest.height != height || i >= manifest.hashes.len() {
                    return None;
                }
                if !allowed(&mut self.sent, u64::from(index)) {
                    return None;
                }
                let (manifest, file) = self.cached.as_ref()?;
                let start = i * manifest.chunk_size as usize;
                let bytes = file[start..start + manifest.chunk_len(i)].to_vec();
                Some(SyncMessage::Chunk {
                    height,
                    index,
                    bytes,
                })
            }
            _ => None,
        }
    }

    /// The newest intact snapshot at or below `max_height` and its file bytes. Only the
    /// folder is listed per call; a file is read (and its checksum checked) once, when it
    /// becomes the one served: reading a large snapshot per chunk request made serving
    /// quadratic in its size.
    fn newest(&mut self, max_height: u64) -> Option<&(Manifest, Arc<Vec<u8>>)> {
        let cached = self.cached.as_ref().map(|(m, _)| m.height);
        let heights = snapshot::heights(&self.dir);
        for height in heights.into_iter().rev().filter(|&h| h <= max_height) {
            if Some(height) == cached {
                return self.cached.as_ref();
            }
            if self.damaged.contains(&height) {
                continue;
            }
            self.files_read += 1;
            match snapshot::read(&self.dir, height) {
                Some((snapshot, file)) => {
                    let mut manifest = Manifest::of(&snapshot, &file, CHUNK_BYTES);
                    manifest.attestation = Some(self.attester.attest(&manifest));
                    self.cached = Some((manifest, Arc::new(file)));
                    return self.cached.as_ref();
                }
                None => {
                    self.damaged.insert(height);
                }
            }
        }
        None
    }
}

/// Why a chunk or an assembled snapshot is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A chunk of another snapshot or past the manifest's count.
    #[error("chunk {0} is not one of the manifest's")]
    NotInManifest(u32),
    /// A chunk whose BLAKE3 is not the manifest's.
    #[error("chunk {0} does not match the manifest's hash")]
    BadChunk(u32),
    /// The assembled bytes are not an intact snapshot of the manifest's height, root, id.
    #[error("the assembled snapshot is damaged or not the manifest's")]
    BadSnapshot,
    /// The certificate is not of the next block, or signed by a quorum of neither the
    /// genesis set nor the snapshot's set.
    #[error("the certificate of block {0} is not signed by a quorum of the known set")]
    BadCertificate(u64),
    /// The certificate is signed by a quorum of the snapshot's set, but not by more than
    /// 1/3 of the genesis set's stake: no genesis validator is known to vouch for it.
    #[error("the certificate of block {0} is signed by 1/3 of the genesis stake or less")]
    GenesisMinority(u64),
    /// The snapshot's chain state does not decode, or is not of its height and chain.
    #[error("the snapshot's chain state is malformed: {0}")]
    BadChainState(String),
    /// The snapshot's chain state is not the one its execution state commits to.
    #[error("the snapshot's chain state is not the one its execution root commits to")]
    ChainDigestMismatch,
    /// The certified block names another execution root or parent than the snapshot's.
    #[error("block {0}'s certified parent or execution root is not the snapshot's")]
    RootMismatch(u64),
    /// Validators holding more than 1/3 of the snapshot's stake did not sign its manifest
    /// ([`attest`]): no honest validator is known to have written these bytes.
    #[error(
        "the snapshot at height {height} is attested by stake {stake} of {total}, not more than 1/3"
    )]
    Unattested {
        /// The snapshot's height.
        height: u64,
        /// The stake of its set whose signatures were received and verified.
        stake: u64,
        /// Its set's total stake.
        total: u64,
    },
}

/// A snapshot being fetched: its manifest and the chunks received so far.
pub struct Assembly {
    /// What is being fetched.
    pub manifest: Manifest,
    chunks: Vec<Option<Vec<u8>>>,
}

impl Assembly {
    /// Starts fetching the snapshot `manifest` describes.
    pub fn new(manifest: Manifest) -> Assembly {
        let chunks = vec![None; manifest.hashes.len()];
        Assembly { manifest, chunks }
    }

    /// Indexes of chunks not yet received.
    pub fn missing(&self) -> Vec<u32> {
        (0..self.chunks.len() as u32)
            .filter(|&i| self.chunks[i as usize].is_none())
            .collect()
    }

    /// Takes a received chunk if it is the manifest's (its hash checked).
    pub fn accept(&mut self, height: u64, index: u32, bytes: Vec<u8>) -> Result<(), Refused> {
        let i = index as usize;
        if height != self.manifest.height || i >= self.chunks.len() {
            return Err(Refused::NotInManifest(index));
        }
        if blake3::hash(&bytes).as_bytes() != &self.manifest.hashes[i] {
            return Err(Refused::BadChunk(index));
        }
        self.chunks[i] = Some(bytes);
        Ok(())
    }

    /// The whole snapshot once every chunk is in: decoded, and its height, root and block
    /// id are the manifest's.
    pub fn finish(&self) -> Option<Result<Snapshot, Refused>> {
        if !self.missing().is_empty() {
            return None;
        }
        let file: Vec<u8> = self.chunks.iter().flatten().flatten().copied().collect();
        let m = &self.manifest;
        let snapshot = Snapshot::decode(&file).filter(|s| {
            s.height == m.height && s.exec_root == m.exec_root && s.block_id == m.block_id
        });
        Some(snapshot.ok_or(Refused::BadSnapshot))
    }
}

/// How a joining validator came to trust the certificate of the block after a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Signed by a quorum of the genesis set.
    GenesisQuorum,
    /// Signed by a quorum of the snapshot's set (the one that decided the next block) and
    /// by more than 1/3 of the genesis set's stake.
    SnapshotSetAndGenesisThird,
}

impl Trust {
    /// The name logged in the `state_sync` event.
    pub fn name(self) -> &'static str {
        match self {
            Trust::GenesisQuorum => "genesis_quorum",
            Trust::SnapshotSetAndGenesisThird => "snapshot_set_and_genesis_third",
        }
    }
}

/// The chain state `snapshot` carries, if it decodes, is of the snapshot's height and of
/// `chain_id`, and its hash is `committed` (the consensus digest of the snapshot's
/// restored execution state, which its execution root commits to).
pub fn chain_state(
    snapshot: &Snapshot,
    committed: [u8; 32],
    chain_id: &[u8; 32],
) -> Result<ChainState, Refused> {
    let chain =
        ChainState::decode(&snapshot.chain).map_err(|e| Refused::BadChainState(e.to_string()))?;
    if chain.height() != snapshot.height || chain.chain_id() != chain_id {
        return Err(Refused::BadChainState(format!(
            "height {} of another chain or height",
            chain.height()
        )));
    }
    if chain.hash().0 != committed {
        return Err(Refused::ChainDigestMismatch);
    }
    Ok(chain)
}

/// Checks `snapshot` against the certificate of the next block: it must be of height
/// `snapshot.height + 1`, name the snapshot's block as parent and its root as the
/// previous execution root, and be signed either by a quorum of `genesis` or by a quorum
/// of `chain`'s set (the snapshot's chain state, from [`chain_state`], whose set decided
/// the next block) together with more than 1/3 of `genesis`'s stake (docs/consensus.md,
/// "State sync and pruning", for the trust this assumes).
pub fn verify(
    snapshot: &Snapshot,
    next: &CommitCertificate,
    genesis: &ValidatorSet,
    chain: &ChainState,
    chain_id: &[u8; 32],
    verifier: &dyn SignatureVerifier,
) -> Result<Trust, Refused> {
    let height = next.block.height;
    if height != snapshot.height + 1 || chain.height() != snapshot.height {
        return Err(Refused::BadCertificate(height));
    }
    let trust = if certified_by_quorum(next, genesis, chain_id, verifier) {
        Trust::GenesisQuorum
    } else if !certified_by_quorum(next, chain.validators(), chain_id, verifier) {
        return Err(Refused::BadCertificate(height));
    } else if !genesis.exceeds_one_third(signed_stake(next, genesis, chain_id, verifier)) {
        return Err(Refused::GenesisMinority(height));
    } else {
        Trust::SnapshotSetAndGenesisThird
    };
    if next.block.prev_exec_root.0 != snapshot.exec_root
        || next.block.prev_hash.0 != snapshot.block_id
    {
        return Err(Refused::RootMismatch(height));
    }
    Ok(trust)
}

/// Whether `c` may be the certificate of the block after a snapshot: more than 1/3 of
/// `genesis`'s stake signed it (what [`verify`] needs on either path). Checked on receipt,
/// before the snapshot's chain state is known, so that a forged certificate does not
/// displace a good one.
pub fn vouched_by_genesis(
    c: &CommitCertificate,
    genesis: &ValidatorSet,
    chain_id: &[u8; 32],
    verifier: &dyn SignatureVerifier,
) -> bool {
    genesis.exceeds_one_third(signed_stake(c, genesis, chain_id, verifier))
}

#[cfg(test)]
mod tests;
