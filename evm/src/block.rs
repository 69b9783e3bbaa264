//! Ethereum's encoding of NexusEVM blocks (docs/evm.md, "Block headers"): the header as
//! alloy's [`Header`] (the block hash is keccak256 of its RLP), the ordered Merkle-Patricia
//! tries of a block's transactions and receipts, the envelope of Nexus system transactions
//! (type `0x7f`), and a block's RLP size. Pure functions of what the executor records.

use crate::executor::{Receipt, SYSTEM_TX_TYPE};
use alloy_consensus::proofs::{ordered_trie_root_encoded, ordered_trie_root_with_encoder};
use alloy_consensus::{Header, RlpEncodableReceipt};
use alloy_primitives::{keccak256, Address, Bytes, Log, B256};
use alloy_rlp::Encodable;

/// The fields of a system transaction (a callback) that its envelope commits to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemTx<'a> {
    /// The EVM chain id.
    pub chain_id: u64,
    /// The block it runs in.
    pub block_number: u64,
    /// Its index in the block (callbacks come first, so also its index among them).
    pub index: u64,
    /// The contract called.
    pub to: Address,
    /// Its gas limit.
    pub gas_limit: u64,
    /// The `onCoreEvent` calldata.
    pub input: &'a [u8],
}

impl SystemTx<'_> {
    /// `0x7f || rlp([chainId, blockNumber, index, to, gasLimit, input])`: what the
    /// transactions trie holds for a callback. No signature: it is the chain's own.
    pub fn encoded_2718(&self) -> Vec<u8> {
        let fields: [&dyn Encodable; 6] = [
            &self.chain_id,
            &self.block_number,
            &self.index,
            &self.to,
            &self.gas_limit,
            &self.input,
        ];
        let mut out = vec![SYSTEM_TX_TYPE];
        alloy_rlp::encode_list::<_, dyn Encodable>(&fields, &mut out);
        out
    }

    /// Its hash: keccak256 of the envelope, as for every EIP-2718 transaction.
    pub fn hash(&self) -> B256 {
        keccak256(self.encoded_2718())
    }
}

/// A receipt's EIP-2718 encoding: `rlp([status, cumulativeGasUsed, logsBloom, logs])`,
/// preceded by the type byte unless legacy (type 0).
pub fn receipt_encoded_2718(receipt: &Receipt, out: &mut Vec<u8>) {
    let logs = receipt
        .logs
        .iter()
        .map(|l| Log::new_unchecked(l.address, l.topics.clone(), l.data.clone()))
        .collect();
    let eth = alloy_consensus::Receipt {
        status: receipt.status.into(),
        cumulative_gas_used: receipt.cumulative_gas_used,
        logs,
    };
    if receipt.tx_type != 0 {
        out.push(receipt.tx_type);
    }
    eth.rlp_encode_with_bloom(&receipt.logs_bloom, out);
}

/// The root of the ordered trie of the block's transactions (`rlp(index)` to the EIP-2718
/// envelope); the empty-trie root for none.
pub fn transactions_root(envelopes: &[Vec<u8>]) -> B256 {
    ordered_trie_root_encoded(envelopes)
}

/// The root of the ordered trie of the block's receipts; the empty-trie root for none.
pub fn receipts_root(receipts: &[Receipt]) -> B256 {
    ordered_trie_root_with_encoder(receipts, receipt_encoded_2718)
}

/// The length of the block's RLP, `rlp([header, transactions, ommers, withdrawals])`
/// (`size` in JSON-RPC): a typed transaction is an RLP string of its envelope, a legacy
/// one its RLP list; ommers and withdrawals are empty lists.
pub fn block_size(header: &Header, envelopes: &[Vec<u8>]) -> u64 {
    let txs: usize = envelopes
        .iter()
        .map(|e| match e.first() {
            Some(&byte) if byte >= 0xc0 => e.len(),
            _ => Bytes::from(e.clone()).length(),
        })
        .sum();
    let txs_list = list_length(txs);
    let empty_list = list_length(0);
    list_length(header.length() + txs_list + 2 * empty_list) as u64
}

/// Length of an RLP list whose payload is `payload` bytes.
fn list_length(payload: usize) -> usize {
    alloy_rlp::Header {
        list: true,
        payload_length: payload,
    }
    .length_with_payload()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::EMPTY_ROOT_HASH;

    #[test]
    fn empty_tries_have_the_empty_root() {
        assert_eq!(transactions_root(&[]), EMPTY_ROOT_HASH);
        assert_eq!(receipts_root(&[]), EMPTY_ROOT_HASH);
    }

    /// The envelope is the type byte and an RLP list of the six fields, in order.
    #[test]
    fn a_system_transaction_is_a_typed_rlp_list() {
        let tx = SystemTx {
            chain_id: 1,
            block_number: 2,
            index: 0,
            to: Address::repeat_byte(0xaa),
            gas_limit: 0x0493e0,
            input: &[0xde, 0xad],
        };
        let mut expected = vec![0x7f, 0xc0 + 31, 0x01, 0x02, 0x80, 0x94];
        expected.extend_from_slice(&[0xaa; 20]);
        expected.extend_from_slice(&[0x83, 0x04, 0x93, 0xe0, 0x82, 0xde, 0xad]);
        assert_eq!(tx.encoded_2718(), expected);
        assert_eq!(tx.hash(), keccak256(&expected));
    }
}
