//! The signed transaction: chain id, signer key, nonce and 1..=[`MAX_ACTIONS`] actions,
//! signed with ed25519 (docs/transactions.md, "Transaction").

use crate::action::{Action, ActionError, ACTION_LEN};
use engine::AccountId;

/// Format version byte of every transaction this crate writes.
pub const TX_VERSION: u8 = 1;
/// Most actions one transaction may carry (one signature for a whole quote update).
pub const MAX_ACTIONS: usize = 64;
/// Bytes before the actions: version, reserved, count, chain id, signer, nonce.
pub const HEADER_LEN: usize = 76;
/// Bytes of the signature at the end.
pub const SIGNATURE_LEN: usize = 64;
/// The smallest transaction (one action).
pub const MIN_TX_LEN: usize = HEADER_LEN + ACTION_LEN + SIGNATURE_LEN;
/// The largest transaction ([`MAX_ACTIONS`] actions).
pub const MAX_TX_LEN: usize = HEADER_LEN + MAX_ACTIONS * ACTION_LEN + SIGNATURE_LEN;
/// Prefix of the signed bytes, so that no other Nexus signature (a gateway login, a
/// validator vote) can be replayed as a transaction.
pub const SIGNING_DOMAIN: &[u8; 16] = b"nexus-tx-v1\0\0\0\0\0";

/// A transaction's id: BLAKE3 of its whole encoding, signature included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxHash(pub [u8; 32]);

impl TxHash {
    /// The id of a transaction encoded as `bytes`.
    pub fn of(bytes: &[u8]) -> TxHash {
        TxHash(*blake3::hash(bytes).as_bytes())
    }
}

impl std::fmt::Display for TxHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// What a transaction says, before it is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// The chain it is for (a transaction for another chain never verifies here).
    pub chain_id: [u8; 32],
    /// The signer's ed25519 public key; the transaction acts for [`account_id_of`] it.
    pub signer: [u8; 32],
    /// Replay protection: see [`crate::nonce`]. Milliseconds since the Unix epoch by
    /// convention.
    pub nonce: u64,
    /// What to do, in order.
    pub actions: Vec<Action>,
}

/// A transaction with its signature, as it travels and is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTransaction {
    /// The transaction.
    pub tx: Transaction,
    /// ed25519 signature over [`Transaction::signing_bytes`].
    pub signature: [u8; 64],
    /// Its encoding (kept: hashing, forwarding and storing use it as is).
    bytes: Vec<u8>,
    /// BLAKE3 of `bytes`, computed once: pools, blocks and replies look transactions up by
    /// it many times.
    hash: TxHash,
    /// The signer's account ([`account_id_of`]), computed once: admission, validation and
    /// execution each ask for it.
    account: AccountId,
}

/// Why bytes are not a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than a one-action transaction or longer than [`MAX_TX_LEN`].
    #[error("a transaction is {MIN_TX_LEN}..={MAX_TX_LEN} bytes, got {0}")]
    Length(usize),
    /// Unknown version byte.
    #[error("unknown transaction version {0}")]
    Version(u8),
    /// The reserved byte is not zero.
    #[error("reserved byte is {0}, must be 0")]
    Reserved(u8),
    /// The action count is 0, above [`MAX_ACTIONS`], or disagrees with the length.
    #[error("action count {count} does not fit a transaction of {len} bytes (1..={MAX_ACTIONS} actions of {ACTION_LEN} bytes)")]
    Count {
        /// The count field.
        count: usize,
        /// The byte length.
        len: usize,
    },
    /// An action is malformed.
    #[error("action {index}: {error}")]
    Action {
        /// Its position, from 0.
        index: usize,
        /// What is wrong.
        error: ActionError,
    },
}

/// The account an ed25519 public key acts for: the first 8 bytes (little-endian) of
/// BLAKE3("nexus-account-v1" || key), top bit cleared. The same id everywhere: the binary
/// gateway's sessions, transactions, and the JSON port's dev keys.
pub fn account_id_of(public_key: &[u8; 32]) -> AccountId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"nexus-account-v1");
    hasher.update(public_key);
    let digest = hasher.finalize();
    let first: [u8; 8] = digest.as_bytes()[..8].try_into().expect("8 bytes");
    u64::from_le_bytes(first) & (u64::MAX >> 1)
}

impl Transaction {
    /// The account it acts for.
    pub fn account(&self) -> AccountId {
        account_id_of(&self.signer)
    }

    /// Its encoding without the signature (header, then actions). Panics if there are no
    /// actions or more than [`MAX_ACTIONS`]: such a transaction cannot be signed.
    pub fn encode_unsigned(&self) -> Vec<u8> {
        assert!(
            (1..=MAX_ACTIONS).contains(&self.actions.len()),
            "a transaction carries 1..={MAX_ACTIONS} actions"
        );
        let mut out = Vec::with_capacity(HEADER_LEN + self.actions.len() * ACTION_LEN + 64);
        out.push(TX_VERSION);
        out.push(0);
        out.extend_from_slice(&(self.actions.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.chain_id);
        out.extend_from_slice(&self.signer);
        out.extend_from_slice(&self.nonce.to_le_bytes());
        for action in &self.actions {
            out.extend_from_slice(&action.encode());
        }
        out
    }

    /// What the signature covers: [`SIGNING_DOMAIN`] then the unsigned encoding.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = SIGNING_DOMAIN.to_vec();
        out.extend_from_slice(&self.encode_unsigned());
        out
    }

    /// Signs it with `key` (whose public key must be `signer`).
    pub fn sign(self, key: &ed25519_dalek::SigningKey) -> SignedTransaction {
        assert_eq!(
            key.verifying_key().to_bytes(),
            self.signer,
            "signed by the signer's own key"
        );
        use ed25519_dalek::Signer;
        let signature = key.sign(&self.signing_bytes()).to_bytes();
        let mut bytes = self.encode_unsigned();
        bytes.extend_from_slice(&signature);
        SignedTransaction {
            account: self.account(),
            tx: self,
            signature,
            hash: TxHash::of(&bytes),
            bytes,
        }
    }
}

impl SignedTransaction {
    /// Reads a transaction. Every byte is checked (one encoding per transaction); the
    /// signature is not: see [`crate::verify`].
    pub fn decode(bytes: &[u8]) -> Result<SignedTransaction, DecodeError> {
        let len = bytes.len();
        if !(MIN_TX_LEN..=MAX_TX_LEN).contains(&len) {
            return Err(DecodeError::Length(len));
        }
        if bytes[0] != TX_VERSION {
            return Err(DecodeError::Version(bytes[0]));
        }
        if bytes[1] != 0 {
            return Err(DecodeError::Reserved(bytes[1]));
        }
        let count = u16::from_le_bytes([bytes[2], bytes[3]]) as usize;
        if count == 0 || count > MAX_ACTIONS || HEADER_LEN + count * ACTION_LEN + 64 != len {
            return Err(DecodeError::Count { count, len });
        }
        let array = |at: usize| -> [u8; 32] { bytes[at..at + 32].try_into().expect("32 bytes") };
        let mut actions = Vec::with_capacity(count);
        for index in 0..count {
            let at = HEADER_LEN + index * ACTION_LEN;
            let record = array(at);
            let action =
                Action::decode(&record).map_err(|error| DecodeError::Action { index, error })?;
            actions.push(action);
        }
        let signature: [u8; 64] = bytes[len - 64..].try_into().expect("64 bytes");
        Ok(SignedTransaction {
            account: account_id_of(&array(36)),
            tx: Transaction {
                chain_id: array(4),
                signer: array(36),
                nonce: u64::from_le_bytes(bytes[68..76].try_into().expect("8 bytes")),
                actions,
            },
            signature,
            bytes: bytes.to_vec(),
            hash: TxHash::of(bytes),
        })
    }

    /// Its encoding.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its id.
    pub fn hash(&self) -> TxHash {
        self.hash
    }

    /// The account it acts for (its signer's), derived once when it was decoded or signed.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// The bytes its signature covers: [`SIGNING_DOMAIN`] then its encoding without the
    /// signature.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = SIGNING_DOMAIN.to_vec();
        out.extend_from_slice(&self.bytes[..self.bytes.len() - 64]);
        out
    }
}
