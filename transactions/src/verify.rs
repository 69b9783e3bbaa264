//! Signature checks of transactions, one at a time or in batches (docs/transactions.md,
//! "Signatures").
//!
//! The rule is ZIP 215 (ed25519 with the cofactored equation, as in Zcash), as
//! `ed25519-zebra` implements it: a signature is valid if `[8]([s]B - R - [k]A) = 0` with
//! `s < l`. [`verify`] calls zebra; the paths through a [`KeyCache`] evaluate the same single
//! and batch equations with curve25519-dalek on the cached key points (zebra's batch API
//! takes keys as bytes and decompresses each one for every batch, about 10 µs a key), and the
//! tests check them against zebra's single and batch verifiers. Unlike
//! the cofactorless check, this rule is the same for a batch as for each signature alone, so
//! validators that verify in different batches (or one by one) always agree on a block. On
//! top, the signer key must be a canonical encoding of a point that is not of small order:
//! a small-order key would let anyone sign for its account, and one key is one account.

use std::collections::{HashMap, VecDeque};

use crate::tx::SignedTransaction;
use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_zebra::{Signature, VerificationKey};
use sha2::{Digest, Sha512};

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
    acceptable_point(key).is_some()
}

/// The point `key` encodes if it is acceptable ([`key_acceptable`]).
fn acceptable_point(key: &[u8; 32]) -> Option<EdwardsPoint> {
    let compressed = CompressedEdwardsY(*key);
    let point = compressed.decompress()?;
    (point.compress() == compressed && !point.is_small_order()).then_some(point)
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

/// A signer key as the caches keep it: decompressed (once), as the point `A` for the batch
/// equation and `-A` for the single one.
#[derive(Clone, Copy)]
pub struct CachedKey {
    point: EdwardsPoint,
    minus_point: EdwardsPoint,
}

impl CachedKey {
    /// The key `key` encodes if it is acceptable ([`key_acceptable`]).
    fn of(key: &[u8; 32]) -> Option<CachedKey> {
        let point = acceptable_point(key)?;
        Some(CachedKey {
            point,
            minus_point: -point,
        })
    }
}

/// Signer keys already found acceptable (bounded; the oldest forgotten first), kept
/// decompressed, so that the key of a signer who sends many transactions is decompressed and
/// checked once.
pub struct KeyCache {
    capacity: usize,
    keys: HashMap<[u8; 32], CachedKey>,
    order: VecDeque<[u8; 32]>,
}

impl KeyCache {
    /// The capacity the node's caches use: 65,536 signers, at most ~24 MiB of keys
    /// (a cached key is two points, 320 bytes, plus its index entries).
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
    pub fn key(&mut self, key: &[u8; 32]) -> Option<CachedKey> {
        if let Some(found) = self.keys.get(key) {
            return Some(*found);
        }
        let decompressed = CachedKey::of(key)?;
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
    let found: Vec<Option<CachedKey>> = txs.iter().map(|tx| keys.key(&tx.tx.signer)).collect();
    let one_by_one = || {
        txs.iter()
            .zip(&found)
            .map(|(tx, key)| verify_with(tx, key.as_ref()))
            .collect()
    };
    let accepted: Vec<(&SignedTransaction, CachedKey)> = txs
        .iter()
        .zip(&found)
        .filter_map(|(tx, key)| Some((*tx, (*key)?)))
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
    let mut accepted = Vec::with_capacity(txs.len());
    for tx in txs {
        match keys.key(&tx.tx.signer) {
            Some(key) => accepted.push((*tx, key)),
            None => return false,
        }
    }
    batch_equation_holds(&accepted)
}

/// ZIP 215's batch equation over `txs` with their (acceptable) signer keys:
/// `[8]([-Σ z_i s_i]B + Σ [z_i]R_i + Σ_A [Σ_{i signed by A} z_i k_i]A) = 0` with a random
/// 128-bit `z_i` per signature and `k_i = SHA-512(R_i || A_i || M_i) mod l` (the key's
/// bytes as signed). This is the equation `ed25519-zebra`'s batch verifier evaluates; here
/// each key's point comes from the cache instead of being decompressed for every batch.
/// False if some `R` does not decompress or some `s` is not below `l` (zebra refuses those
/// too), or if the equation does not hold.
fn batch_equation_holds(txs: &[(&SignedTransaction, CachedKey)]) -> bool {
    let Some(zs) = random_scalars(txs.len()) else {
        return false;
    };
    let mut b_coeff = Scalar::ZERO;
    let mut points = vec![ED25519_BASEPOINT_POINT];
    let mut coeffs = vec![Scalar::ZERO];
    let mut key_term: HashMap<[u8; 32], usize> = HashMap::new();
    for ((tx, key), z) in txs.iter().zip(zs) {
        let Some((r_bytes, s)) = signature_parts(tx) else {
            return false;
        };
        let Some(r) = CompressedEdwardsY(r_bytes).decompress() else {
            return false;
        };
        let k = challenge(&r_bytes, &tx.tx.signer, &tx.signing_bytes());
        b_coeff -= z * s;
        points.push(r);
        coeffs.push(z);
        let at = *key_term.entry(tx.tx.signer).or_insert_with(|| {
            points.push(key.point);
            coeffs.push(Scalar::ZERO);
            points.len() - 1
        });
        coeffs[at] += z * k;
    }
    coeffs[0] = b_coeff;
    EdwardsPoint::vartime_multiscalar_mul(&coeffs, &points)
        .mul_by_cofactor()
        .is_identity()
}

/// `k = SHA-512(R || A || M)` reduced mod `l`.
fn challenge(r: &[u8; 32], signer: &[u8; 32], message: &[u8]) -> Scalar {
    let digest = Sha512::new()
        .chain_update(r)
        .chain_update(signer)
        .chain_update(message)
        .finalize();
    Scalar::from_bytes_mod_order_wide(&digest.into())
}

/// `n` random 128-bit scalars from the OS (one read), `None` if it has none to give.
fn random_scalars(n: usize) -> Option<Vec<Scalar>> {
    let mut bytes = vec![0u8; 16 * n];
    getrandom::fill(&mut bytes).ok()?;
    let scalar = |c: &[u8]| Scalar::from(u128::from_le_bytes(c.try_into().expect("16 bytes")));
    Some(bytes.chunks_exact(16).map(scalar).collect())
}

/// One transaction's signature against its cached signer key (`None`: the key is not
/// acceptable): ZIP 215's single equation `[8]([s]B - [k]A - R) = 0`, as `ed25519-zebra`
/// evaluates it in [`verify`], with the key's point from the cache.
fn verify_with(tx: &SignedTransaction, key: Option<&CachedKey>) -> Result<(), SignatureError> {
    let key = key.ok_or(SignatureError::BadKey)?;
    let (r_bytes, s) = signature_parts(tx).ok_or(SignatureError::BadSignature)?;
    let r = CompressedEdwardsY(r_bytes)
        .decompress()
        .ok_or(SignatureError::BadSignature)?;
    let k = challenge(&r_bytes, &tx.tx.signer, &tx.signing_bytes());
    let r_expected = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &key.minus_point, &s);
    match (r - r_expected).mul_by_cofactor().is_identity() {
        true => Ok(()),
        false => Err(SignatureError::BadSignature),
    }
}

/// A signature's `R` (as encoded) and `s`, `None` if `s` is not below `l`.
fn signature_parts(tx: &SignedTransaction) -> Option<([u8; 32], Scalar)> {
    let r_bytes: [u8; 32] = tx.signature[..32].try_into().expect("32 bytes");
    let s_bytes: [u8; 32] = tx.signature[32..].try_into().expect("32 bytes");
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    Some((r_bytes, s))
}
