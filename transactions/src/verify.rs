//! Signature checks of transactions, one at a time or in batches (docs/transactions.md,
//! "Signatures").
//!
//! The rule is ZIP 215 (ed25519 with the cofactored equation, as in Zcash), implemented by
//! `ed25519-zebra`: a signature is valid if `[8]([s]B - R - [k]A) = 0` with `s < l`. Unlike
//! the cofactorless check, this rule is the same for a batch as for each signature alone, so
//! validators that verify in different batches (or one by one) always agree on a block. On
//! top, the signer key must be a canonical encoding of a point that is not of small order:
//! a small-order key would let anyone sign for its account, and one key is one account.

use std::collections::{HashMap, VecDeque};

use crate::tx::SignedTransaction;
use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_zebra::{batch, Signature, VerificationKey, VerificationKeyBytes};
use getrandom::rand_core::UnwrapErr;
use getrandom::SysRng;

/// Why a transaction's signature is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signer key is not a canonical point encoding, or is of small order.
    #[error("the signer key is not a valid ed25519 public key (non-canonical or small order)")]
    BadKey,
    /// The signature does not verify.
    #[error("the signature does not verify for this signer, chain and content")]
    BadSignature,
}

/// Whether `key` may sign transactions: a canonical encoding of a point outside the
/// small-order subgroup.
pub fn key_acceptable(key: &[u8; 32]) -> bool {
    let compressed = CompressedEdwardsY(*key);
    match compressed.decompress() {
        Some(point) => point.compress() == compressed && !point.is_small_order(),
        None => false,
    }
}

/// Checks one transaction's signer key and signature.
pub fn verify(tx: &SignedTransaction) -> Result<(), SignatureError> {
    if !key_acceptable(&tx.tx.signer) {
        return Err(SignatureError::BadKey);
    }
    let key = VerificationKey::try_from(tx.tx.signer).map_err(|_| SignatureError::BadKey)?;
    key.verify(&Signature::from_bytes(&tx.signature), &tx.signing_bytes())
        .map_err(|_| SignatureError::BadSignature)
}

/// Signer keys already found acceptable (bounded; the oldest forgotten first), kept
/// decompressed, so that the key of a signer who sends many transactions is decompressed and
/// checked once.
pub struct KeyCache {
    capacity: usize,
    keys: HashMap<[u8; 32], VerificationKey>,
    order: VecDeque<[u8; 32]>,
}

impl KeyCache {
    /// The capacity the node's caches use: 65,536 signers, at most ~16 MiB of keys
    /// (a decompressed key is 192 bytes, plus its index entries).
    pub const DEFAULT_CAPACITY: usize = 1 << 16;

    /// An empty cache of at most `capacity` keys (0: remembers none).
    pub fn new(capacity: usize) -> KeyCache {
        KeyCache {
            capacity,
            keys: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// [`key_acceptable`], remembering keys that are.
    pub fn acceptable(&mut self, key: &[u8; 32]) -> bool {
        self.key(key).is_some()
    }

    /// The decompressed key if it is acceptable ([`key_acceptable`]), remembering it.
    pub fn key(&mut self, key: &[u8; 32]) -> Option<VerificationKey> {
        if let Some(found) = self.keys.get(key) {
            return Some(*found);
        }
        if !key_acceptable(key) {
            return None;
        }
        let decompressed = VerificationKey::try_from(*key).ok()?;
        if self.capacity > 0 {
            self.keys.insert(*key, decompressed);
            self.order.push_back(*key);
            if self.order.len() > self.capacity {
                if let Some(oldest) = self.order.pop_front() {
                    self.keys.remove(&oldest);
                }
            }
        }
        Some(decompressed)
    }
}

/// Checks many transactions at once: the result for each, in order, exactly as [`verify`]
/// would give it. One batch equation when all are valid (the common case), then one by one
/// to find the bad ones if it fails.
pub fn verify_batch(txs: &[&SignedTransaction]) -> Vec<Result<(), SignatureError>> {
    verify_batch_cached(txs, &mut KeyCache::new(0))
}

/// [`verify_batch`] with signer keys checked (and kept decompressed) through `keys`. A lone
/// signature is checked with the single equation, which costs less than a batch of one (no
/// random scalar, no multiscalar setup) and accepts exactly the same signatures.
pub fn verify_batch_cached(
    txs: &[&SignedTransaction],
    keys: &mut KeyCache,
) -> Vec<Result<(), SignatureError>> {
    let found: Vec<Option<VerificationKey>> =
        txs.iter().map(|tx| keys.key(&tx.tx.signer)).collect();
    let one_by_one = || {
        txs.iter()
            .zip(&found)
            .map(|(tx, key)| verify_with(tx, key.as_ref()))
            .collect()
    };
    let accepted: Vec<&SignedTransaction> = txs
        .iter()
        .zip(&found)
        .filter(|(_, key)| key.is_some())
        .map(|(tx, _)| *tx)
        .collect();
    if accepted.len() > 1 && batch_equation_holds(&accepted) {
        return found
            .iter()
            .map(|key| key.map(|_| ()).ok_or(SignatureError::BadKey))
            .collect();
    }
    one_by_one()
}

/// Whether every one of `txs` has an acceptable signer key (through `keys`) and a signature
/// that verifies, checked with one batch equation. `false` says only that at least one does
/// not; [`verify_batch_cached`] tells which. For callers that combine several independent
/// batches and fall back to checking each on its own.
pub fn batch_valid(txs: &[&SignedTransaction], keys: &mut KeyCache) -> bool {
    txs.iter().all(|tx| keys.acceptable(&tx.tx.signer)) && batch_equation_holds(txs)
}

/// The batch equation over `txs`, whose signer keys are known acceptable.
fn batch_equation_holds(txs: &[&SignedTransaction]) -> bool {
    let messages: Vec<Vec<u8>> = txs.iter().map(|tx| tx.signing_bytes()).collect();
    let mut verifier = batch::Verifier::new();
    for (tx, message) in txs.iter().zip(&messages) {
        let key = VerificationKeyBytes::from(tx.tx.signer);
        verifier.queue((key, Signature::from_bytes(&tx.signature), message));
    }
    verifier.verify(UnwrapErr(SysRng)).is_ok()
}

/// One transaction's signature against its decompressed signer key (`None`: the key is not
/// acceptable).
fn verify_with(
    tx: &SignedTransaction,
    key: Option<&VerificationKey>,
) -> Result<(), SignatureError> {
    let key = key.ok_or(SignatureError::BadKey)?;
    key.verify(&Signature::from_bytes(&tx.signature), &tx.signing_bytes())
        .map_err(|_| SignatureError::BadSignature)
}
