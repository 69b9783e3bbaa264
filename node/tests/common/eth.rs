//! An independent check of Ethereum blocks served over JSON-RPC: each header is rebuilt
//! from the block's JSON fields as alloy's `Header` (its keccak256 of RLP must be the
//! served hash), each transaction's EIP-2718 envelope from its JSON fields (keccak256 must
//! be its hash; the ordered trie of them must be `transactionsRoot`), each receipt's from
//! its JSON fields (its bloom recomputed from its logs; their trie must be
//! `receiptsRoot`), and the block's RLP length must be `size`. Nexus system transactions
//! (type 0x7f) are rebuilt from the format docs/evm.md gives.

use std::net::SocketAddr;

use alloy_consensus::proofs::ordered_trie_root_encoded;
use alloy_consensus::{
    Header, Receipt, ReceiptEnvelope, ReceiptWithBloom, SignableTransaction, TxEip1559, TxEip2930,
    TxEnvelope, TxLegacy, EMPTY_OMMER_ROOT_HASH, EMPTY_ROOT_HASH,
};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_primitives::{
    hex, keccak256, logs_bloom, Address, Bloom, Bytes, Log, Signature, TxKind, B256, B64, U256,
};
use alloy_rlp::Encodable;
use serde_json::{json, Value};

use super::rpc;

/// A quantity field.
pub fn q(v: &Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("a quantity: {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex quantity")
}

fn u256(v: &Value) -> U256 {
    let s = v.as_str().unwrap_or_else(|| panic!("a quantity: {v}"));
    U256::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex quantity")
}

fn b256(v: &Value) -> B256 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a hash: {v}"))
}

fn address(v: &Value) -> Address {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an address: {v}"))
}

fn bytes(v: &Value) -> Bytes {
    Bytes::from(hex::decode(v.as_str().expect("hex data")).expect("hex"))
}

/// The result of a call that must succeed.
pub fn result(addr: SocketAddr, method: &str, params: Value) -> Value {
    let response = rpc(addr, method, params.clone());
    assert!(
        response.get("error").is_none(),
        "{method} {params}: {response}"
    );
    response["result"].clone()
}

/// alloy's header from a block's JSON fields.
pub fn header(block: &Value) -> Header {
    Header {
        parent_hash: b256(&block["parentHash"]),
        ommers_hash: b256(&block["sha3Uncles"]),
        beneficiary: address(&block["miner"]),
        state_root: b256(&block["stateRoot"]),
        transactions_root: b256(&block["transactionsRoot"]),
        receipts_root: b256(&block["receiptsRoot"]),
        logs_bloom: Bloom::from_slice(&bytes(&block["logsBloom"])),
        difficulty: u256(&block["difficulty"]),
        number: q(&block["number"]),
        gas_limit: q(&block["gasLimit"]),
        gas_used: q(&block["gasUsed"]),
        timestamp: q(&block["timestamp"]),
        extra_data: bytes(&block["extraData"]),
        mix_hash: b256(&block["mixHash"]),
        nonce: B64::from_slice(&bytes(&block["nonce"])),
        base_fee_per_gas: Some(q(&block["baseFeePerGas"])),
        withdrawals_root: Some(b256(&block["withdrawalsRoot"])),
        blob_gas_used: Some(q(&block["blobGasUsed"])),
        excess_blob_gas: Some(q(&block["excessBlobGas"])),
        parent_beacon_block_root: Some(b256(&block["parentBeaconBlockRoot"])),
        requests_hash: None,
    }
}

fn access_list(v: &Value) -> AccessList {
    let items = v.as_array().expect("an access list");
    AccessList(
        items
            .iter()
            .map(|item| AccessListItem {
                address: address(&item["address"]),
                storage_keys: item["storageKeys"]
                    .as_array()
                    .expect("keys")
                    .iter()
                    .map(b256)
                    .collect(),
            })
            .collect(),
    )
}

fn kind(to: &Value) -> TxKind {
    if to.is_null() {
        TxKind::Create
    } else {
        TxKind::Call(address(to))
    }
}

/// The EIP-2718 envelope of a transaction object.
pub fn envelope(tx: &Value) -> Vec<u8> {
    let ty = q(&tx["type"]);
    if ty == 0x7f {
        return system_envelope(tx);
    }
    let chain_id = q(&tx["chainId"]);
    let (nonce, gas_limit, to, value, input) = (
        q(&tx["nonce"]),
        q(&tx["gas"]),
        kind(&tx["to"]),
        u256(&tx["value"]),
        bytes(&tx["input"]),
    );
    let parity = |v: u64| Signature::new(u256(&tx["r"]), u256(&tx["s"]), v == 1);
    let envelope: TxEnvelope = match ty {
        0 => {
            let v = q(&tx["v"]);
            let tx = TxLegacy {
                chain_id: Some(chain_id),
                nonce,
                gas_price: q(&tx["gasPrice"]).into(),
                gas_limit,
                to,
                value,
                input,
            };
            tx.into_signed(parity(v - 35 - 2 * chain_id)).into()
        }
        1 => TxEip2930 {
            chain_id,
            nonce,
            gas_price: q(&tx["gasPrice"]).into(),
            gas_limit,
            to,
            value,
            access_list: access_list(&tx["accessList"]),
            input,
        }
        .into_signed(parity(q(&tx["yParity"])))
        .into(),
        2 => TxEip1559 {
            chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: q(&tx["maxFeePerGas"]).into(),
            max_priority_fee_per_gas: q(&tx["maxPriorityFeePerGas"]).into(),
            to,
            value,
            access_list: access_list(&tx["accessList"]),
            input,
        }
        .into_signed(parity(q(&tx["yParity"])))
        .into(),
        other => panic!("unexpected type {other}: {tx}"),
    };
    envelope.encoded_2718()
}

/// `0x7f || rlp([chainId, blockNumber, transactionIndex, to, gas, input])`.
fn system_envelope(tx: &Value) -> Vec<u8> {
    let input = bytes(&tx["input"]);
    let fields: [&dyn Encodable; 6] = [
        &q(&tx["chainId"]),
        &q(&tx["blockNumber"]),
        &q(&tx["transactionIndex"]),
        &address(&tx["to"]),
        &q(&tx["gas"]),
        &input,
    ];
    let mut out = vec![0x7f];
    alloy_rlp::encode_list::<_, dyn Encodable>(&fields, &mut out);
    out
}

/// The EIP-2718 encoding of a receipt object; its bloom is checked against its logs.
pub fn receipt(r: &Value) -> Vec<u8> {
    let logs: Vec<Log> = r["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .map(|l| {
            let topics = l["topics"].as_array().expect("topics").iter().map(b256);
            Log::new_unchecked(address(&l["address"]), topics.collect(), bytes(&l["data"]))
        })
        .collect();
    let bloom = logs_bloom(logs.iter());
    assert_eq!(
        Bloom::from_slice(&bytes(&r["logsBloom"])),
        bloom,
        "receipt bloom: {r}"
    );
    let with_bloom = ReceiptWithBloom {
        receipt: Receipt {
            status: (r["status"] == "0x1").into(),
            cumulative_gas_used: q(&r["cumulativeGasUsed"]),
            logs,
        },
        logs_bloom: bloom,
    };
    match q(&r["type"]) {
        0 => ReceiptEnvelope::Legacy(with_bloom).encoded_2718(),
        1 => ReceiptEnvelope::Eip2930(with_bloom).encoded_2718(),
        2 => ReceiptEnvelope::Eip1559(with_bloom).encoded_2718(),
        0x7f => {
            let mut out = vec![0x7f];
            with_bloom.encode(&mut out);
            out
        }
        other => panic!("unexpected receipt type {other}: {r}"),
    }
}

/// `rlp([header, transactions, [], []])`'s length.
fn block_size(header: &Header, envelopes: &[Vec<u8>]) -> usize {
    let list = |payload: usize| {
        alloy_rlp::Header {
            list: true,
            payload_length: payload,
        }
        .length_with_payload()
    };
    let txs: usize = envelopes
        .iter()
        .map(|e| {
            if e[0] >= 0xc0 {
                e.len()
            } else {
                e.as_slice().length()
            }
        })
        .sum();
    list(header.length() + list(txs) + 2 * list(0))
}

/// Checks block `number` of the node at `addr` independently (module doc) and returns
/// its JSON (full transactions).
pub fn check_block(addr: SocketAddr, number: u64) -> Value {
    let block = result(
        addr,
        "eth_getBlockByNumber",
        json!([format!("{number:#x}"), true]),
    );
    let header = header(&block);
    assert_eq!(header.hash_slow(), b256(&block["hash"]), "hash of {block}");
    assert_eq!(header.ommers_hash, EMPTY_OMMER_ROOT_HASH);
    assert_eq!(header.withdrawals_root, Some(EMPTY_ROOT_HASH));
    assert_eq!(block["uncles"], json!([]));
    let txs = block["transactions"].as_array().expect("transactions");
    let envelopes: Vec<Vec<u8>> = txs.iter().map(envelope).collect();
    for (tx, envelope) in txs.iter().zip(&envelopes) {
        assert_eq!(keccak256(envelope), b256(&tx["hash"]), "hash of {tx}");
        assert_eq!(tx["blockHash"], block["hash"]);
    }
    assert_eq!(
        ordered_trie_root_encoded(&envelopes),
        header.transactions_root,
        "transactionsRoot of {block}"
    );
    let receipts: Vec<Value> = txs
        .iter()
        .map(|tx| result(addr, "eth_getTransactionReceipt", json!([tx["hash"]])))
        .collect();
    let encoded: Vec<Vec<u8>> = receipts.iter().map(receipt).collect();
    assert_eq!(
        ordered_trie_root_encoded(&encoded),
        header.receipts_root,
        "receiptsRoot of {block}"
    );
    let mut bloom = Bloom::ZERO;
    for r in &receipts {
        bloom.accrue_bloom(&Bloom::from_slice(&bytes(&r["logsBloom"])));
    }
    assert_eq!(bloom, header.logs_bloom, "logsBloom of {block}");
    assert_eq!(
        block_size(&header, &envelopes) as u64,
        q(&block["size"]),
        "size"
    );
    block
}

/// Checks blocks `from..=to` as [`check_block`] does and that each names its parent's
/// hash; returns them.
pub fn check_chain(addr: SocketAddr, from: u64, to: u64) -> Vec<Value> {
    let blocks: Vec<Value> = (from..=to).map(|n| check_block(addr, n)).collect();
    for pair in blocks.windows(2) {
        assert_eq!(pair[1]["parentHash"], pair[0]["hash"], "parentHash chains");
    }
    blocks
}
