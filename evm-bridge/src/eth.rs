//! Ethereum JSON-RPC formatting used by the validator's
//! port (the `eth-rpc` crate): parameter parsing, geth's error texts, and blocks,
//! transactions, receipts and logs as JSON, read from any [`History`] of EVM blocks.

use crate::commitment::AccountProof;
use crate::executor::{
    AccessList, AccessListItem, BlockHeader, CallOutcome, CallRequest, DroppedTx, LogRecord,
    Receipt, TxError, TxRecord,
};
use crate::trace::{GethDebugTracingOptions, TraceError, Tracer};
use alloy_primitives::{hex, Address, Bytes, B256, U256};
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::{json, Value};

/// Priority fee suggested by `eth_maxPriorityFeePerGas` (wei).
pub const SUGGESTED_TIP_WEI: u64 = 1_000_000_000;
/// Widest block range one `eth_getLogs` may scan.
pub const MAX_LOG_RANGE: u64 = crate::filters::MAX_LOG_RANGE;
/// Most storage keys one `eth_getProof` may ask for.
pub const MAX_PROOF_KEYS: usize = 1024;

/// The Ethereum methods every validator's port answers (docs/evm.md, "JSON-RPC").
pub const ETH_METHODS: [&str; 52] = [
    "eth_chainId",
    "net_version",
    "web3_clientVersion",
    "eth_blockNumber",
    "eth_getBalance",
    "eth_getTransactionCount",
    "eth_gasPrice",
    "eth_maxPriorityFeePerGas",
    "eth_feeHistory",
    "eth_getBlockByNumber",
    "eth_getBlockByHash",
    "eth_estimateGas",
    "eth_call",
    "eth_sendRawTransaction",
    "eth_getTransactionReceipt",
    "eth_getTransactionByHash",
    "eth_getLogs",
    "eth_getCode",
    "eth_getStorageAt",
    "eth_getProof",
    "eth_accounts",
    "eth_syncing",
    "eth_getBlockReceipts",
    "eth_getTransactionByBlockNumberAndIndex",
    "eth_getTransactionByBlockHashAndIndex",
    "eth_getBlockTransactionCountByNumber",
    "eth_getBlockTransactionCountByHash",
    "eth_getUncleCountByBlockNumber",
    "eth_getUncleCountByBlockHash",
    "eth_getUncleByBlockNumberAndIndex",
    "eth_getUncleByBlockHashAndIndex",
    "eth_createAccessList",
    "eth_coinbase",
    "net_listening",
    "net_peerCount",
    "web3_sha3",
    "txpool_status",
    "txpool_content",
    "eth_newFilter",
    "eth_newBlockFilter",
    "eth_newPendingTransactionFilter",
    "eth_getFilterChanges",
    "eth_getFilterLogs",
    "eth_uninstallFilter",
    "eth_sendTransaction",
    "eth_sign",
    "personal_sign",
    "eth_signTypedData_v4",
    "debug_traceTransaction",
    "debug_traceCall",
    "debug_traceBlockByNumber",
    "debug_traceBlockByHash",
];

/// The EVM blocks a server remembers: headers by number (from [`History::oldest`] to
/// [`History::head`]) and by hash, and each included transaction with its receipt.
pub trait History {
    /// The newest block's number.
    fn head(&self) -> u64;
    /// The oldest block remembered (0 if all are).
    fn oldest(&self) -> u64;
    /// Block `number`'s header, if remembered.
    fn header(&self, number: u64) -> Option<&BlockHeader>;
    /// The header with this hash, if remembered.
    fn header_by_hash(&self, hash: &B256) -> Option<&BlockHeader>;
    /// An included transaction and its receipt, if remembered.
    fn tx(&self, hash: &B256) -> Option<(&TxRecord, &Receipt)>;
}

/// A JSON-RPC error: code, message, optional data.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    /// JSON-RPC error code.
    pub code: i32,
    /// Message.
    pub message: String,
    /// Data (revert bytes for code 3).
    pub data: Option<Value>,
}

impl RpcError {
    /// Invalid parameters (-32602).
    pub fn params(message: impl Into<String>) -> RpcError {
        RpcError {
            code: -32602,
            message: message.into(),
            data: None,
        }
    }
    /// A server error (-32000).
    pub fn server(message: impl Into<String>) -> RpcError {
        RpcError {
            code: -32000,
            message: message.into(),
            data: None,
        }
    }
}

/// `quantity`.
pub fn quantity(n: impl std::fmt::LowerHex) -> Value {
    Value::String(format!("{n:#x}"))
}

/// `data`.
pub fn data(bytes: &[u8]) -> Value {
    Value::String(format!("0x{}", hex::encode(bytes)))
}

/// `addr`.
pub fn addr(a: Address) -> Value {
    Value::String(format!("{a:#x}"))
}

/// `hash`.
pub fn hash(h: B256) -> Value {
    Value::String(format!("{h:#x}"))
}

/// `arg`.
pub fn arg(params: &[Value], i: usize) -> Option<&Value> {
    params.get(i).filter(|v| !v.is_null())
}

/// `parse_address`.
pub fn parse_address(v: Option<&Value>) -> Result<Address, RpcError> {
    v.and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RpcError::params("expected a 20-byte hex address"))
}

/// `parse_hash`.
pub fn parse_hash(v: Option<&Value>) -> Result<B256, RpcError> {
    v.and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RpcError::params("expected a 32-byte hex hash"))
}

/// `parse_bytes`.
pub fn parse_bytes(v: &Value) -> Result<Bytes, RpcError> {
    v.as_str()
        .and_then(|s| hex::decode(s).ok())
        .map(Bytes::from)
        .ok_or_else(|| RpcError::params("expected 0x-prefixed hex data"))
}

/// `parse_quantity`.
pub fn parse_quantity(v: &Value) -> Result<U256, RpcError> {
    v.as_str()
        .and_then(|s| s.strip_prefix("0x"))
        .and_then(|s| U256::from_str_radix(s, 16).ok())
        .or_else(|| v.as_u64().map(U256::from))
        .ok_or_else(|| RpcError::params("expected a 0x-prefixed hex quantity"))
}

/// A block tag or number: `latest` (also `pending`, `safe`, `finalized`: blocks are final
/// once decided) is the head, `earliest` is 0.
pub fn block_number(history: &impl History, tag: Option<&Value>) -> Result<u64, RpcError> {
    match tag.and_then(Value::as_str) {
        None | Some("latest" | "pending" | "safe" | "finalized") => Ok(history.head()),
        Some("earliest") => Ok(0),
        Some(_) => {
            let n = parse_quantity(tag.expect("some"))?;
            u64::try_from(n).map_err(|_| RpcError::params("block number too large"))
        }
    }
}

/// A method that runs on the head's state only (`eth_createAccessList`): another block is
/// refused, naming the method.
pub fn state_at(history: &impl History, tag: Option<&Value>) -> Result<(), RpcError> {
    let n = block_number(history, tag)?;
    if n != history.head() {
        return Err(RpcError::server(format!(
            "block {n}: this method runs on the latest block ({}) only",
            history.head()
        )));
    }
    Ok(())
}

/// An access list (`[{address, storageKeys}]`).
pub fn parse_access_list(v: &Value) -> Result<AccessList, RpcError> {
    let bad = || RpcError::params("expected an access list: [{address, storageKeys}]");
    let items = v.as_array().ok_or_else(bad)?;
    let items = items
        .iter()
        .map(|item| {
            let address = parse_address(item.get("address"))?;
            let keys = match item.get("storageKeys") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(keys)) => keys
                    .iter()
                    .map(|k| parse_hash(Some(k)))
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(bad()),
            };
            Ok(AccessListItem {
                address,
                storage_keys: keys,
            })
        })
        .collect::<Result<Vec<_>, RpcError>>()?;
    Ok(AccessList(items))
}

/// An `eth_call` / `eth_estimateGas` / `eth_createAccessList` call object.
pub fn call_request(v: Option<&Value>) -> Result<CallRequest, RpcError> {
    let v = v
        .and_then(Value::as_object)
        .ok_or_else(|| RpcError::params("expected a call object"))?;
    let mut request = CallRequest::default();
    if let Some(from) = v.get("from").filter(|f| !f.is_null()) {
        request.from = Some(parse_address(Some(from))?);
    }
    if let Some(to) = v.get("to").filter(|f| !f.is_null()) {
        request.to = Some(parse_address(Some(to))?);
    }
    if let Some(gas) = v.get("gas").filter(|f| !f.is_null()) {
        request.gas = Some(
            u64::try_from(parse_quantity(gas)?).map_err(|_| RpcError::params("gas too large"))?,
        );
    }
    if let Some(value) = v.get("value").filter(|f| !f.is_null()) {
        request.value = parse_quantity(value)?;
    }
    if let Some(input) = v
        .get("input")
        .or_else(|| v.get("data"))
        .filter(|f| !f.is_null())
    {
        request.data = parse_bytes(input)?;
    }
    if let Some(list) = v.get("accessList").filter(|f| !f.is_null()) {
        request.access_list = parse_access_list(list)?;
    }
    Ok(request)
}

/// A block object; `full` gives transaction objects instead of hashes. Every header field
/// is the one hashed into `hash` ([`BlockHeader::eth_header`]).
pub fn block_json(history: &impl History, header: &BlockHeader, full: bool) -> Value {
    let txs: Vec<Value> = header
        .tx_hashes
        .iter()
        .map(|h| {
            if full {
                history
                    .tx(h)
                    .map(|(t, r)| tx_json(t, Some(r), Some(header)))
                    .unwrap_or(Value::Null)
            } else {
                hash(*h)
            }
        })
        .collect();
    let eth = header.eth_header();
    let optional = |h: Option<B256>| h.map_or(Value::Null, hash);
    json!({
        "number": quantity(eth.number),
        "hash": hash(header.hash),
        "parentHash": hash(eth.parent_hash),
        "nonce": data(eth.nonce.as_slice()),
        "mixHash": hash(eth.mix_hash),
        "sha3Uncles": hash(eth.ommers_hash),
        "logsBloom": data(eth.logs_bloom.as_slice()),
        "transactionsRoot": hash(eth.transactions_root),
        "stateRoot": hash(eth.state_root),
        "receiptsRoot": hash(eth.receipts_root),
        "miner": addr(eth.beneficiary),
        "difficulty": quantity(eth.difficulty),
        "totalDifficulty": "0x0",
        "extraData": data(&eth.extra_data),
        "size": quantity(header.size),
        "gasLimit": quantity(eth.gas_limit),
        "gasUsed": quantity(eth.gas_used),
        "timestamp": quantity(eth.timestamp),
        "baseFeePerGas": eth.base_fee_per_gas.map_or(Value::Null, quantity),
        "blobGasUsed": eth.blob_gas_used.map_or(Value::Null, quantity),
        "excessBlobGas": eth.excess_blob_gas.map_or(Value::Null, quantity),
        "parentBeaconBlockRoot": optional(eth.parent_beacon_block_root),
        "withdrawalsRoot": optional(eth.withdrawals_root),
        "withdrawals": [],
        "transactions": txs,
        "uncles": [],
    })
}

/// A block named by number, tag or hash (EIP-1898: a 32-byte hash string, or an object
/// with `blockHash` or `blockNumber`); `None` if it is not remembered.
pub fn block_ref<'h, H: History>(
    history: &'h H,
    v: Option<&Value>,
) -> Result<Option<&'h BlockHeader>, RpcError> {
    if let Some(object) = v.and_then(Value::as_object) {
        if let Some(h) = object.get("blockHash") {
            return Ok(history.header_by_hash(&parse_hash(Some(h))?));
        }
        return Ok(history.header(block_number(history, object.get("blockNumber"))?));
    }
    match v.and_then(Value::as_str) {
        Some(s) if s.len() == 66 => Ok(history.header_by_hash(&parse_hash(v)?)),
        _ => Ok(history.header(block_number(history, v)?)),
    }
}

/// A block named by its hash; `None` if it is not remembered.
pub fn block_by_hash<'h, H: History>(
    history: &'h H,
    v: Option<&Value>,
) -> Result<Option<&'h BlockHeader>, RpcError> {
    Ok(history.header_by_hash(&parse_hash(v)?))
}

/// `eth_getBlockReceipts`: every receipt of the block, in order (`null` for an unknown
/// block).
pub fn block_receipts(history: &impl History, header: Option<&BlockHeader>) -> Value {
    let Some(header) = header else {
        return Value::Null;
    };
    let receipts: Vec<Value> = header
        .tx_hashes
        .iter()
        .filter_map(|h| history.tx(h))
        .map(|(t, r)| receipt_json(t, r, header))
        .collect();
    Value::Array(receipts)
}

/// `eth_getTransactionByBlock*AndIndex`: the transaction at `index` (`null` if the block
/// is unknown or has fewer transactions).
pub fn tx_at(
    history: &impl History,
    header: Option<&BlockHeader>,
    index: Option<&Value>,
) -> Result<Value, RpcError> {
    let index = parse_quantity(index.ok_or_else(|| RpcError::params("expected an index"))?)?;
    let found = header.and_then(|header| {
        let h = header.tx_hashes.get(usize::try_from(index).ok()?)?;
        let (t, r) = history.tx(h)?;
        Some(tx_json(t, Some(r), Some(header)))
    });
    Ok(found.unwrap_or(Value::Null))
}

/// `eth_getBlockTransactionCountBy*`: the count, `null` for an unknown block.
pub fn tx_count(header: Option<&BlockHeader>) -> Value {
    header.map_or(Value::Null, |h| quantity(h.tx_hashes.len()))
}

/// `eth_getUncleCountBy*`: 0 (blocks have no ommers), `null` for an unknown block.
pub fn uncle_count(header: Option<&BlockHeader>) -> Value {
    header.map_or(Value::Null, |_| quantity(0u64))
}

/// An access list as JSON (`[{address, storageKeys}]`).
pub fn access_list_json<'a>(items: impl IntoIterator<Item = (&'a Address, &'a [B256])>) -> Value {
    Value::Array(
        items
            .into_iter()
            .map(|(a, keys)| {
                json!({
                    "address": addr(*a),
                    "storageKeys": keys.iter().map(|k| hash(*k)).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// `eth_createAccessList`'s answer, as geth's: the list and the gas the call uses with it;
/// a call that reverts or halts answers too, with `error` saying why.
pub fn created_access_list(list: &AccessList, outcome: CallOutcome) -> Value {
    let items = list
        .iter()
        .map(|item| (&item.address, item.storage_keys.as_slice()));
    let mut out = json!({"accessList": access_list_json(items)});
    let gas_used = match outcome {
        CallOutcome::Success { gas_used, .. } => gas_used,
        CallOutcome::Revert {
            gas_used,
            ref output,
        } => {
            out["error"] = json!(revert_message(output));
            gas_used
        }
        CallOutcome::Halt { gas_used, reason } => {
            out["error"] = json!(format!("execution halted: {reason}"));
            gas_used
        }
    };
    out["gasUsed"] = quantity(gas_used);
    out
}

/// `txpool_status`: pooled transactions are all executable (the pool keeps no future
/// nonces), so `queued` is always 0.
pub fn txpool_status(pending: usize) -> Value {
    json!({"pending": quantity(pending), "queued": "0x0"})
}

/// `txpool_content`: `pending` by sender (checksummed) and nonce (decimal), as geth;
/// `queued` is always empty.
pub fn txpool_content(pending: &[TxRecord]) -> Value {
    let mut by_sender = serde_json::Map::new();
    for t in pending {
        let sender = by_sender
            .entry(t.from.to_checksum(None))
            .or_insert_with(|| json!({}));
        sender[t.nonce.to_string()] = tx_json(t, None, None);
    }
    json!({"pending": by_sender, "queued": {}})
}

/// `eth_feeHistory(blockCount, newestBlock, rewardPercentiles?)`: `blockCount` blocks
/// ending at `newestBlock` (clamped to what exists, at most 1,024), the base fee of each
/// and of the next block, each block's gas used / gas limit, and, when percentiles are
/// given, one tip per percentile per block: the effective priority fee at which that
/// share of the block's user gas was reached, transactions sorted by tip (as geth; system
/// callbacks pay nothing and are left out; a block without user transactions gives 0).
pub fn fee_history(
    history: &impl History,
    params: &[Value],
    next_base_fee: u64,
) -> Result<Value, RpcError> {
    let count =
        parse_quantity(arg(params, 0).ok_or_else(|| RpcError::params("expected a block count"))?)?;
    let count = u64::try_from(count).unwrap_or(u64::MAX).clamp(1, 1024);
    let head = history.head();
    let newest = block_number(history, arg(params, 1))?;
    if newest > head {
        return Err(RpcError::server(format!(
            "request beyond head block: requested {newest}, head {head}"
        )));
    }
    let percentiles: Option<Vec<f64>> = match arg(params, 2) {
        None => None,
        Some(Value::Array(list)) => {
            let list = list
                .iter()
                .map(|p| {
                    p.as_f64()
                        .filter(|p| (0.0..=100.0).contains(p))
                        .ok_or_else(|| RpcError::params("reward percentiles must be 0 to 100"))
                })
                .collect::<Result<Vec<f64>, _>>()?;
            if list.windows(2).any(|w| w[0] > w[1]) {
                return Err(RpcError::params("reward percentiles must be increasing"));
            }
            Some(list)
        }
        Some(_) => return Err(RpcError::params("reward percentiles must be an array")),
    };
    let oldest = newest.saturating_sub(count - 1).max(history.oldest());
    let blocks: Vec<&BlockHeader> = (oldest..=newest)
        .filter_map(|n| history.header(n))
        .collect();
    let mut base_fees: Vec<Value> = blocks.iter().map(|b| quantity(b.base_fee)).collect();
    // The base fee is fixed (no elasticity): the next block's is the configured one.
    base_fees.push(quantity(next_base_fee));
    let ratios: Vec<f64> = blocks
        .iter()
        .map(|b| {
            if b.gas_limit == 0 {
                0.0
            } else {
                b.gas_used as f64 / b.gas_limit as f64
            }
        })
        .collect();
    let mut out = json!({
        "oldestBlock": quantity(oldest),
        "baseFeePerGas": base_fees,
        "gasUsedRatio": ratios,
    });
    if let Some(percentiles) = percentiles.filter(|p| !p.is_empty()) {
        let rewards: Vec<Vec<Value>> = blocks
            .iter()
            .map(|b| {
                let mut tips: Vec<(u128, u64)> = b
                    .tx_hashes
                    .iter()
                    .filter_map(|h| history.tx(h))
                    .filter(|(t, _)| t.tx_type != crate::executor::SYSTEM_TX_TYPE)
                    .map(|(_, r)| {
                        let tip = r.effective_gas_price.saturating_sub(b.base_fee as u128);
                        (tip, r.gas_used)
                    })
                    .collect();
                tips.sort_unstable();
                let total: u64 = tips.iter().map(|t| t.1).sum();
                percentiles
                    .iter()
                    .map(|p| {
                        let threshold = total as f64 * p / 100.0;
                        let mut sum = 0u64;
                        let tip = tips
                            .iter()
                            .find(|(_, gas)| {
                                sum += gas;
                                sum as f64 >= threshold
                            })
                            .or(tips.last())
                            .map_or(0, |t| t.0);
                        quantity(tip)
                    })
                    .collect()
            })
            .collect();
        out["reward"] = json!(rewards);
    }
    Ok(out)
}

/// `eth_getLogs(filter)`: logs of remembered blocks matching the filter's block range
/// (or hash), addresses and topics, in block order (`crate::filters::LogFilter`).
pub fn logs(history: &impl History, filter: Option<&Value>) -> Result<Value, RpcError> {
    if !filter.is_some_and(Value::is_object) {
        return Err(RpcError::params("expected a filter object"));
    }
    crate::filters::LogFilter::parse(history, filter)?.logs(history)
}

/// `eth_getTransactionByHash` of a dropped transaction: an error naming the reason (a
/// `null` would look like "never sent", a pending object would make clients wait forever).
pub fn dropped_error(block: u64, drop: &DroppedTx) -> RpcError {
    RpcError {
        code: -32000,
        message: format!(
            "transaction {:#x} dropped from block {block}: {}",
            drop.hash, drop.reason
        ),
        data: Some(json!({
            "hash": hash(drop.hash),
            "from": addr(drop.sender),
            "nonce": quantity(drop.nonce),
            "block": quantity(block),
            "reason": drop.reason.to_string(),
        })),
    }
}

/// A failed call as geth answers it: code 3 with the revert data, or a halt.
pub fn call_error(failure: CallOutcome) -> RpcError {
    match failure {
        CallOutcome::Revert { output, .. } => RpcError {
            code: 3,
            message: revert_message(&output),
            data: Some(data(&output)),
        },
        CallOutcome::Halt { reason, .. } => RpcError::server(format!("execution halted: {reason}")),
        CallOutcome::Success { .. } => unreachable!("not a failure"),
    }
}

/// `execution reverted`, with the `Error(string)` reason if the output is one.
pub fn revert_message(output: &[u8]) -> String {
    // Error(string): selector, offset, length, bytes.
    if output.len() >= 68 && output[..4] == [0x08, 0xc3, 0x79, 0xa0] {
        let len = U256::from_be_slice(&output[36..68]).saturating_to::<usize>();
        if let Some(text) = output.get(68..68 + len) {
            return format!("execution reverted: {}", String::from_utf8_lossy(text));
        }
    }
    "execution reverted".to_string()
}

/// A log object.
pub fn log_json(log: &LogRecord, r: &Receipt, header: &BlockHeader) -> Value {
    json!({
        "address": addr(log.address),
        "topics": log.topics.iter().map(|t| hash(*t)).collect::<Vec<_>>(),
        "data": data(&log.data),
        "blockNumber": quantity(r.block_number),
        "blockHash": hash(header.hash),
        "transactionHash": hash(r.tx_hash),
        "transactionIndex": quantity(r.tx_index),
        "logIndex": quantity(log.log_index),
        "removed": false,
    })
}

/// A receipt object.
pub fn receipt_json(t: &TxRecord, r: &Receipt, header: &BlockHeader) -> Value {
    json!({
        "transactionHash": hash(r.tx_hash),
        "transactionIndex": quantity(r.tx_index),
        "blockHash": hash(header.hash),
        "blockNumber": quantity(r.block_number),
        "from": addr(r.from),
        "to": r.to.map_or(Value::Null, addr),
        "cumulativeGasUsed": quantity(r.cumulative_gas_used),
        "gasUsed": quantity(r.gas_used),
        "effectiveGasPrice": quantity(U256::from(r.effective_gas_price)),
        "contractAddress": r.contract_address.map_or(Value::Null, addr),
        "logs": r.logs.iter().map(|l| log_json(l, r, header)).collect::<Vec<_>>(),
        "logsBloom": data(r.logs_bloom.as_slice()),
        "status": if r.status { "0x1" } else { "0x0" },
        "type": quantity(t.tx_type as u64),
        "blobGasUsed": "0x0",
    })
}

/// A transaction object; `header` is `None` for a pending one (block fields null).
pub fn tx_json(t: &TxRecord, r: Option<&Receipt>, header: Option<&BlockHeader>) -> Value {
    let mut v = json!({
        "hash": hash(t.hash),
        "from": addr(t.from),
        "to": t.to.map_or(Value::Null, addr),
        "nonce": quantity(t.nonce),
        "gas": quantity(t.gas_limit),
        "gasPrice": quantity(U256::from(r.map_or(t.gas_price.unwrap_or(t.max_fee_per_gas), |r| r.effective_gas_price))),
        "value": quantity(t.value),
        "input": data(&t.input),
        "type": quantity(t.tx_type as u64),
        "chainId": t.chain_id.map_or(Value::Null, quantity),
        "v": quantity(t.y_parity as u64),
        "yParity": quantity(t.y_parity as u64),
        "r": quantity(t.r),
        "s": quantity(t.s),
        "blockHash": header.map_or(Value::Null, |h| hash(h.hash)),
        "blockNumber": header.map_or(Value::Null, |_| quantity(t.block_number)),
        "transactionIndex": header.map_or(Value::Null, |_| quantity(t.index)),
        "accessList": access_list_json(t.access_list.iter().map(|(a, k)| (a, k.as_slice()))),
    });
    if t.tx_type == 2 {
        v["maxFeePerGas"] = quantity(U256::from(t.max_fee_per_gas));
        v["maxPriorityFeePerGas"] = quantity(U256::from(t.max_priority_fee_per_gas.unwrap_or(0)));
    }
    if t.tx_type == 0 {
        // EIP-155 v = parity + 35 + 2 * chain_id.
        let v155 = t
            .chain_id
            .map_or(27 + t.y_parity as u64, |c| 35 + 2 * c + t.y_parity as u64);
        v["v"] = quantity(v155);
        v.as_object_mut().expect("object").remove("accessList");
        v.as_object_mut().expect("object").remove("yParity");
    }
    v
}

/// `eth_getTransactionReceipt` of an included transaction (`null` if unknown).
pub fn receipt(history: &impl History, h: B256) -> Value {
    match history.tx(&h) {
        Some((t, r)) => match history.header(r.block_number) {
            Some(header) => receipt_json(t, r, header),
            None => Value::Null,
        },
        None => Value::Null,
    }
}

/// `eth_getTransactionByHash` of an included transaction (`None` if unknown).
pub fn transaction(history: &impl History, h: B256) -> Option<Value> {
    let (t, r) = history.tx(&h)?;
    let header = history.header(r.block_number)?;
    Some(tx_json(t, Some(r), Some(header)))
}

/// `eth_sendRawTransaction`'s refusal: invalid params for what does not decode or recover,
/// a server error with geth's text otherwise.
pub fn send_error(error: &TxError) -> RpcError {
    match error {
        TxError::Malformed(_) | TxError::Signature(_) => RpcError::params(error.to_string()),
        _ => RpcError::server(error.to_string()),
    }
}

/// The tracer of `debug_traceTransaction`'s or `debug_traceCall`'s options (geth's
/// object; absent: the default struct logger). `debug_traceCall`'s `stateOverrides`,
/// `blockOverrides` and `txIndex` are refused rather than ignored.
pub fn tracer(options: Option<&Value>) -> Result<Tracer, RpcError> {
    let Some(options) = options else {
        return Ok(Tracer::StructLogs(Default::default()));
    };
    for unsupported in ["stateOverrides", "blockOverrides", "txIndex"] {
        if options.get(unsupported).is_some_and(|v| !v.is_null()) {
            return Err(RpcError::params(format!("{unsupported} is not supported")));
        }
    }
    let options: GethDebugTracingOptions = serde_json::from_value(options.clone())
        .map_err(|e| RpcError::params(format!("tracing options: {e}")))?;
    Tracer::from_options(options).map_err(trace_error)
}

/// A trace not made: bad options are `-32602`, the rest `-32000`.
pub fn trace_error(error: TraceError) -> RpcError {
    match error {
        TraceError::Config(_) => RpcError::params(error.to_string()),
        other => RpcError::server(other.to_string()),
    }
}

/// A method not served.
pub fn no_method(method: &str) -> RpcError {
    RpcError {
        code: -32601,
        message: format!("the method {method} does not exist/is not available"),
        data: None,
    }
}

/// The positional parameters of a jsonrpsee request.
pub fn params_of(params: &jsonrpsee::types::Params<'_>) -> Result<Vec<Value>, ErrorObjectOwned> {
    match params.as_str() {
        None => Ok(Vec::new()),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(list)) => Ok(list),
            Ok(Value::Null) => Ok(Vec::new()),
            Ok(_) => Err(ErrorObjectOwned::owned(
                -32602,
                "positional (array) parameters expected",
                None::<()>,
            )),
            Err(e) => Err(ErrorObjectOwned::owned(-32700, e.to_string(), None::<()>)),
        },
    }
}

/// `eth_getProof`'s storage keys: an array of hex quantities or 32-byte words (at most
/// [`MAX_PROOF_KEYS`]).
pub fn parse_storage_keys(v: Option<&Value>) -> Result<Vec<B256>, RpcError> {
    let Some(keys) = v else {
        return Ok(Vec::new());
    };
    let keys = keys
        .as_array()
        .ok_or_else(|| RpcError::params("storage keys: expected an array"))?;
    if keys.len() > MAX_PROOF_KEYS {
        return Err(RpcError::params(format!(
            "at most {MAX_PROOF_KEYS} storage keys per eth_getProof"
        )));
    }
    keys.iter()
        .map(|k| parse_quantity(k).map(B256::from))
        .collect()
}

/// EIP-1186's answer: the account's fields, its proof and its slots' proofs.
pub fn proof_json(proof: &AccountProof) -> Value {
    let nodes = |nodes: &[Bytes]| nodes.iter().map(|n| data(n)).collect::<Vec<_>>();
    let storage: Vec<Value> = proof
        .storage_proof
        .iter()
        .map(|s| json!({"key": hash(s.key), "value": quantity(s.value), "proof": nodes(&s.proof)}))
        .collect();
    json!({
        "address": addr(proof.address),
        "accountProof": nodes(&proof.account_proof),
        "balance": quantity(proof.balance),
        "codeHash": hash(proof.code_hash),
        "nonce": quantity(proof.nonce),
        "storageHash": hash(proof.storage_hash),
        "storageProof": storage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{EvmConfig, Executor, Genesis};
    use alloy_primitives::keccak256;
    use alloy_trie::proof::verify_proof;
    use alloy_trie::{Nibbles, TrieAccount};

    /// The JSON of `eth_getProof` for a funded genesis account, read back as a client would,
    /// verifies against the genesis header's `stateRoot`; an absent slot's proof is empty
    /// (the account has no storage) and a key past the limit is refused.
    #[test]
    fn a_proof_verifies_against_the_header_state_root() {
        let funded = Address::repeat_byte(0x42);
        let genesis = Genesis {
            alloc: vec![(funded, U256::from(7u64))],
            ..Default::default()
        };
        let (executor, out) = Executor::genesis(EvmConfig::default(), &genesis);
        let keys = parse_storage_keys(Some(&json!(["0x0", format!("{:#x}", B256::ZERO)])));
        let keys = keys.expect("keys");
        let answer = proof_json(&executor.commitment().proof(funded, &keys));
        let b = |v: &Value| parse_hash(Some(v)).expect("hash");
        let q = |v: &Value| parse_quantity(v).expect("quantity");
        let account = TrieAccount {
            nonce: q(&answer["nonce"]).to(),
            balance: q(&answer["balance"]),
            storage_root: b(&answer["storageHash"]),
            code_hash: b(&answer["codeHash"]),
        };
        assert_eq!(account.balance, U256::from(7u64));
        let nodes: Vec<Bytes> = answer["accountProof"]
            .as_array()
            .expect("array")
            .iter()
            .map(|n| parse_bytes(n).expect("bytes"))
            .collect();
        let key = Nibbles::unpack(keccak256(funded));
        let leaf = Some(alloy_rlp::encode(account));
        verify_proof(out.header.state_root, key, leaf, &nodes).expect("verifies");
        assert_eq!(answer["storageProof"][1]["proof"], json!([]));
        assert_eq!(answer["storageProof"][1]["value"], json!("0x0"));
        let many = Value::Array(vec![json!("0x1"); MAX_PROOF_KEYS + 1]);
        assert!(parse_storage_keys(Some(&many)).is_err());
    }
}
