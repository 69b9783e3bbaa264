//! Identifiers, keys and the two hooks the host gives the protocol (signature checks and
//! payload validity).

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

/// Block height: the first block is height 1.
pub type Height = u64;
/// Round number within a height, from 0.
pub type Round = u32;
/// An ed25519 signature in its 64-byte encoding.
pub type SignatureBytes = [u8; 64];

/// A 32-byte BLAKE3 digest (block ids, execution roots, code hashes).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The all-zero hash (the parent of block 1).
    pub const ZERO: Hash = Hash([0; 32]);
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..")
    }
}

/// A validator is named by its ed25519 public key, so evidence and actions carry everything
/// needed to check their signatures whatever the validator set of the moment is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValidatorId(pub [u8; 32]);

impl std::fmt::Debug for ValidatorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "V(")?;
        for b in &self.0[..3] {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// A validator's signing key. Signing is deterministic (RFC 8032), so the same bytes always
/// give the same signature.
#[derive(Clone)]
pub struct Keypair {
    key: SigningKey,
    id: ValidatorId,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({:?})", self.id)
    }
}

impl Keypair {
    /// The key whose 32-byte secret seed is `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Keypair {
        let key = SigningKey::from_bytes(&seed);
        let id = ValidatorId(key.verifying_key().to_bytes());
        Keypair { key, id }
    }

    /// The public key, which is the validator's id.
    pub fn id(&self) -> ValidatorId {
        self.id
    }

    /// Signs `message` (already domain-separated by the caller).
    pub fn sign(&self, message: &[u8]) -> SignatureBytes {
        self.key.sign(message).to_bytes()
    }
}

/// Checks ed25519 signatures. The protocol asks this for every signed message it accepts.
pub trait SignatureVerifier {
    /// True if `signature` is `key`'s signature of `message`.
    fn verify(&self, key: &ValidatorId, message: &[u8], signature: &SignatureBytes) -> bool;
}

/// Real ed25519 verification (strict: rejects small-order keys and malleable signatures).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ed25519;

impl SignatureVerifier for Ed25519 {
    fn verify(&self, key: &ValidatorId, message: &[u8], signature: &SignatureBytes) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&key.0) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        key.verify_strict(message, &signature).is_ok()
    }
}

/// What the host decides about a block that the protocol cannot: whether its opaque payload
/// is acceptable. Must be a deterministic function of its arguments (Tendermint's `valid(v)`
/// has to give every correct validator the same answer).
pub trait PayloadValidator {
    /// True if `payload` may be part of a block at `height`.
    fn payload_valid(&self, height: Height, payload: &[u8]) -> bool;

    /// True if a block at `height` may carry `actions` (signed staking and governance
    /// actions): by default any. The host checks each signature and nonce against the chain
    /// state the block follows.
    fn actions_valid(&self, _height: Height, _actions: &[crate::governance::SignedAction]) -> bool {
        true
    }
}

/// Accepts every payload.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyPayload;

impl PayloadValidator for AnyPayload {
    fn payload_valid(&self, _height: Height, _payload: &[u8]) -> bool {
        true
    }
}

/// The hooks the protocol needs from its host, in one bundle.
pub trait Context: SignatureVerifier + PayloadValidator {}
impl<T: SignatureVerifier + PayloadValidator> Context for T {}

/// Real ed25519 checks and any payload: the production default.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultContext;

impl SignatureVerifier for DefaultContext {
    fn verify(&self, key: &ValidatorId, message: &[u8], signature: &SignatureBytes) -> bool {
        Ed25519.verify(key, message, signature)
    }
}

impl PayloadValidator for DefaultContext {
    fn payload_valid(&self, height: Height, payload: &[u8]) -> bool {
        AnyPayload.payload_valid(height, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_verification_accepts_only_the_signed_bytes_and_key() {
        let a = Keypair::from_seed([1; 32]);
        let b = Keypair::from_seed([2; 32]);
        let sig = a.sign(b"hello");
        assert!(Ed25519.verify(&a.id(), b"hello", &sig));
        assert!(!Ed25519.verify(&a.id(), b"hellp", &sig));
        assert!(!Ed25519.verify(&b.id(), b"hello", &sig));
        let mut bad = sig;
        bad[5] ^= 1;
        assert!(!Ed25519.verify(&a.id(), b"hello", &bad));
        assert_eq!(sig, a.sign(b"hello"), "signing is deterministic");
    }
}
