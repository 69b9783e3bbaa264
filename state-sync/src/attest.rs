//! Attestations: a validator's signature on the manifest of a snapshot it serves, saying
//! "these are the bytes of my snapshot after block h".
//!
//! The execution root a commit certificate names does not bind a snapshot's bytes strongly
//! enough on its own: its engine, nonce and notary parts are 256-bit multiset sums, and
//! someone who can choose records can find two sets with the same sum (docs/engine.md,
//! "Strength of the sum"). So a joining validator also wants validators holding more than
//! 1/3 of the snapshot's stake to vouch for the very bytes, each with its own key: at least
//! one of them is honest, and an honest validator signs only a snapshot it wrote from its
//! own execution (or one it joined with, itself accepted this way).
//!
//! What is signed: `"nexus-snapshot-attestation-v1" || chain id (32) || digest`, where
//! `digest = BLAKE3("nexus-snapshot-v1" || height u64 || execution root (32) || block id
//! (32) || total bytes u64 || chunk size u32 || chunk count u32 || each chunk's BLAKE3)`,
//! integers little-endian: everything a manifest says about the snapshot, not the peer's
//! `first_block`.

use std::collections::BTreeSet;

use consensus::types::{Keypair, SignatureBytes, SignatureVerifier, ValidatorId};
use consensus::validators::ValidatorSet;

use crate::{Manifest, Refused};

/// First bytes of every signed attestation message.
pub const DOMAIN: &[u8] = b"nexus-snapshot-attestation-v1";

/// One validator's signature on a manifest ([`Manifest::attestation_message`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attestation {
    /// The signing validator's key.
    pub signer: ValidatorId,
    /// Its ed25519 signature of the attestation message.
    pub signature: SignatureBytes,
}

/// Signs the manifests of the snapshots a validator serves.
pub struct Attester {
    key: Keypair,
    chain_id: [u8; 32],
}

impl Attester {
    /// Signs with `key` for the chain `chain_id`.
    pub fn new(key: Keypair, chain_id: [u8; 32]) -> Attester {
        Attester { key, chain_id }
    }

    /// This validator's attestation of `manifest`.
    pub fn attest(&self, manifest: &Manifest) -> Attestation {
        Attestation {
            signer: self.key.id(),
            signature: self.key.sign(&manifest.attestation_message(&self.chain_id)),
        }
    }
}

impl Manifest {
    /// The BLAKE3 digest of what the manifest says about its snapshot (the module docs).
    pub fn snapshot_digest(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"nexus-snapshot-v1");
        hasher.update(&self.height.to_le_bytes());
        hasher.update(&self.exec_root);
        hasher.update(&self.block_id);
        hasher.update(&self.total.to_le_bytes());
        hasher.update(&self.chunk_size.to_le_bytes());
        hasher.update(&(self.hashes.len() as u32).to_le_bytes());
        self.hashes.iter().for_each(|h| {
            hasher.update(h);
        });
        *hasher.finalize().as_bytes()
    }

    /// The message an attestation of this manifest on chain `chain_id` signs.
    pub fn attestation_message(&self, chain_id: &[u8; 32]) -> Vec<u8> {
        let mut message = Vec::with_capacity(DOMAIN.len() + 64);
        message.extend_from_slice(DOMAIN);
        message.extend_from_slice(chain_id);
        message.extend_from_slice(&self.snapshot_digest());
        message
    }

    /// Whether `other` describes the same snapshot (whoever serves it and whatever
    /// blocks that peer still holds).
    pub fn same_snapshot(&self, other: &Manifest) -> bool {
        self.snapshot_digest() == other.snapshot_digest()
    }
}

impl Attestation {
    /// Whether this is its signer's signature of `manifest` on chain `chain_id`.
    pub fn signs(
        &self,
        manifest: &Manifest,
        chain_id: &[u8; 32],
        verifier: &dyn SignatureVerifier,
    ) -> bool {
        let message = manifest.attestation_message(chain_id);
        verifier.verify(&self.signer, &message, &self.signature)
    }
}

/// The stake of `set` whose members signed `manifest` among `attestations` (each member
/// counted once; signatures that do not verify and signers outside the set count nothing).
pub fn attested_stake(
    manifest: &Manifest,
    attestations: &[Attestation],
    set: &ValidatorSet,
    chain_id: &[u8; 32],
    verifier: &dyn SignatureVerifier,
) -> u64 {
    let mut seen = BTreeSet::new();
    let mut stake: u64 = 0;
    for a in attestations {
        let Some(power) = set.stake_of(&a.signer) else {
            continue;
        };
        if !seen.contains(&a.signer) && a.signs(manifest, chain_id, verifier) {
            seen.insert(a.signer);
            stake = stake.saturating_add(power);
        }
    }
    stake
}

/// Checks that members of `set` (the snapshot's own validator set, from its chain state)
/// holding more than 1/3 of its stake signed `manifest`; returns the stake that did.
pub fn check_attested(
    manifest: &Manifest,
    attestations: &[Attestation],
    set: &ValidatorSet,
    chain_id: &[u8; 32],
    verifier: &dyn SignatureVerifier,
) -> Result<u64, Refused> {
    let stake = attested_stake(manifest, attestations, set, chain_id, verifier);
    if !set.exceeds_one_third(stake) {
        return Err(Refused::Unattested {
            height: manifest.height,
            stake,
            total: set.total_stake(),
        });
    }
    Ok(stake)
}
