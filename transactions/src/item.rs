//! Block items: what a block's payload lists. An item is a Core [`SignedTransaction`] or an
//! EVM transaction, told apart by the first byte (docs/transactions.md, "Block items"):
//!
//! - `0x01` ([`TX_VERSION`]): the whole item is a Core transaction, byte for byte as
//!   [`SignedTransaction::decode`] reads it (its encoding and hash are unchanged);
//! - `0xEE` ([`EVM_ITEM_TAG`]): the rest of the item is an Ethereum transaction in its
//!   EIP-2718 encoding (legacy RLP or typed), signed by its sender's secp256k1 key.
//!
//! This crate only frames EVM items; decoding them, checking their chain id and recovering
//! their sender is the EVM's (`evm::executor::SignedTx::decode`).

use crate::tx::{DecodeError, SignedTransaction, TxHash, TX_VERSION};

/// First byte of an EVM item. No Core transaction starts with it (their first byte is
/// their version), and it is not an EIP-2718 type byte (those are `0x00..=0x7f`) nor needed
/// as one: the envelope follows it whole.
pub const EVM_ITEM_TAG: u8 = 0xEE;

/// Largest EVM transaction envelope an item may carry (128 KiB, geth's pool limit).
pub const MAX_EVM_TX_LEN: usize = 128 * 1024;

/// One item of a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockItem {
    /// A Core transaction.
    Core(SignedTransaction),
    /// An EVM transaction.
    Evm(EvmItem),
}

/// An EVM transaction as a block item: [`EVM_ITEM_TAG`] then its EIP-2718 envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvmItem {
    bytes: Vec<u8>,
}

impl EvmItem {
    /// The item carrying `envelope` (not checked here: see the module doc).
    pub fn new(envelope: &[u8]) -> EvmItem {
        let mut bytes = Vec::with_capacity(envelope.len() + 1);
        bytes.push(EVM_ITEM_TAG);
        bytes.extend_from_slice(envelope);
        EvmItem { bytes }
    }

    /// Its encoding: [`EVM_ITEM_TAG`] then the envelope.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its id in pools and blocks: BLAKE3 of [`EvmItem::bytes`].
    pub fn hash(&self) -> TxHash {
        TxHash::of(&self.bytes)
    }

    /// The EIP-2718 envelope (what `eth_sendRawTransaction` takes; its keccak256 is the
    /// Ethereum transaction hash).
    pub fn envelope(&self) -> &[u8] {
        &self.bytes[1..]
    }
}

/// Why bytes are not a block item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// Empty, or a first byte that names no kind of item.
    #[error("unknown block item kind {0:?} (0x01 Core, 0xEE EVM)")]
    Kind(Option<u8>),
    /// A Core item that does not decode.
    #[error("core transaction: {0}")]
    Core(DecodeError),
    /// An EVM item with no envelope or one over [`MAX_EVM_TX_LEN`].
    #[error("an EVM item carries 1..={MAX_EVM_TX_LEN} bytes, got {0}")]
    EvmLength(usize),
}

impl BlockItem {
    /// Reads an item: a Core item is decoded in full; an EVM item is only framed.
    pub fn decode(bytes: &[u8]) -> Result<BlockItem, ItemError> {
        match bytes.first() {
            Some(&TX_VERSION) => SignedTransaction::decode(bytes)
                .map(BlockItem::Core)
                .map_err(ItemError::Core),
            Some(&EVM_ITEM_TAG) => {
                let len = bytes.len() - 1;
                if !(1..=MAX_EVM_TX_LEN).contains(&len) {
                    return Err(ItemError::EvmLength(len));
                }
                Ok(BlockItem::Evm(EvmItem {
                    bytes: bytes.to_vec(),
                }))
            }
            other => Err(ItemError::Kind(other.copied())),
        }
    }

    /// Its encoding.
    pub fn bytes(&self) -> &[u8] {
        match self {
            BlockItem::Core(tx) => tx.bytes(),
            BlockItem::Evm(item) => &item.bytes,
        }
    }

    /// Its id in pools and blocks: BLAKE3 of its encoding (for a Core item, the Core
    /// transaction's own hash).
    pub fn hash(&self) -> TxHash {
        TxHash(*blake3::hash(self.bytes()).as_bytes())
    }

    /// The Core transaction, if it is one.
    pub fn core(&self) -> Option<&SignedTransaction> {
        match self {
            BlockItem::Core(tx) => Some(tx),
            BlockItem::Evm(_) => None,
        }
    }
}

impl From<SignedTransaction> for BlockItem {
    fn from(tx: SignedTransaction) -> BlockItem {
        BlockItem::Core(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;
    use crate::tx::Transaction;

    fn core_tx() -> SignedTransaction {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        Transaction {
            chain_id: [1; 32],
            signer: key.verifying_key().to_bytes(),
            nonce: 5,
            actions: vec![Action::CancelAll { market: 0 }],
        }
        .sign(&key)
    }

    #[test]
    fn a_core_item_is_the_core_transaction_unchanged() {
        let tx = core_tx();
        let item = BlockItem::decode(tx.bytes()).expect("core item");
        assert_eq!(item.bytes(), tx.bytes());
        assert_eq!(item.hash(), tx.hash());
        assert_eq!(item.core(), Some(&tx));
    }

    #[test]
    fn an_evm_item_is_the_tag_then_the_envelope() {
        let envelope = [0x02, 0xc0, 0x01];
        let item = BlockItem::Evm(EvmItem::new(&envelope));
        assert_eq!(item.bytes(), &[0xEE, 0x02, 0xc0, 0x01]);
        let decoded = BlockItem::decode(item.bytes()).expect("evm item");
        assert_eq!(decoded, item);
        let BlockItem::Evm(evm) = decoded else {
            panic!("an EVM item")
        };
        assert_eq!(evm.envelope(), &envelope);
        assert!(item.core().is_none());
    }

    #[test]
    fn other_bytes_are_refused_with_a_typed_error() {
        assert_eq!(BlockItem::decode(&[]), Err(ItemError::Kind(None)));
        assert_eq!(BlockItem::decode(&[0x02, 1]), Err(ItemError::Kind(Some(2))));
        assert_eq!(BlockItem::decode(&[0xEE]), Err(ItemError::EvmLength(0)));
        let long = vec![0xEE; MAX_EVM_TX_LEN + 2];
        assert_eq!(
            BlockItem::decode(&long),
            Err(ItemError::EvmLength(MAX_EVM_TX_LEN + 1))
        );
        assert_eq!(
            BlockItem::decode(&[0x01, 0]),
            Err(ItemError::Core(DecodeError::Length(2)))
        );
    }
}
