//! Signature checks of transactions, one at a time or in batches (docs/transactions.md,
//! "Signatures").
//!
//! The rule is ZIP 215 (ed25519 with the cofactored equation, as in Zcash), implemented by
//! `ed25519-zebra`: a signature is valid if `[8]([s]B - R - [k]A) = 0` with `s < l`. Unlike
//! the cofactorless check, this rule is the same for a batch as for each signature alone, so
//! validators that verify in different batches (or one by one) always agree on a block. On
//! top, the signer key must be a canonical encoding of a point that is not of small order:
//! a small-order key would let anyone sign for its account, and one key is one account.

use std::collections::{HashSet, VecDeque};

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

/// Signer keys already found acceptable (bounded; the oldest forgotten first), so that the
/// key of a signer who sends many transactions is decompressed and checked once.
pub struct KeyCache {
    capacity: usize,
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl KeyCache {
    /// An empty cache of at most `capacity` keys (0: remembers none).
    pub fn new(capacity: usize) -> KeyCache {
        KeyCache {
            capacity,
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// [`key_acceptable`], remembering keys that are.
    pub fn acceptable(&mut self, key: &[u8; 32]) -> bool {
        if self.set.contains(key) {
            return true;
        }
        if !key_acceptable(key) {
            return false;
        }
        if self.capacity > 0 {
            self.set.insert(*key);
            self.order.push_back(*key);
            if self.order.len() > self.capacity {
                if let Some(oldest) = self.order.pop_front() {
                    self.set.remove(&oldest);
                }
            }
        }
        true
    }
}

/// Checks many transactions at once: the result for each, in order, exactly as [`verify`]
/// would give it. One batch equation when all are valid (the common case), then one by one
/// to find the bad ones if it fails.
pub fn verify_batch(txs: &[&SignedTransaction]) -> Vec<Result<(), SignatureError>> {
    verify_batch_cached(txs, &mut KeyCache::new(0))
}

/// [`verify_batch`] with signer keys checked through `keys`.
pub fn verify_batch_cached(
    txs: &[&SignedTransaction],
    keys: &mut KeyCache,
) -> Vec<Result<(), SignatureError>> {
    let mut results: Vec<Result<(), SignatureError>> = txs
        .iter()
        .map(|tx| {
            if keys.acceptable(&tx.tx.signer) {
                Ok(())
            } else {
                Err(SignatureError::BadKey)
            }
        })
        .collect();
    let messages: Vec<Vec<u8>> = txs.iter().map(|tx| tx.signing_bytes()).collect();
    let mut verifier = batch::Verifier::new();
    let mut queued = 0;
    for ((tx, message), result) in txs.iter().zip(&messages).zip(&results) {
        if result.is_ok() {
            let key = VerificationKeyBytes::from(tx.tx.signer);
            verifier.queue((key, Signature::from_bytes(&tx.signature), message));
            queued += 1;
        }
    }
    if queued == 0 || verifier.verify(UnwrapErr(SysRng)).is_ok() {
        return results;
    }
    for (tx, result) in txs.iter().zip(results.iter_mut()) {
        if result.is_ok() {
            *result = verify(tx);
        }
    }
    results
}
