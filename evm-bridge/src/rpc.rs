//! Ethereum JSON-RPC: [`Node`] answers methods as a plain function of (state, method,
//! params); [`serve`] is the shell: a jsonrpsee HTTP server on loopback whose handlers pass
//! each request to the one thread that owns the node (and so the EVM), which also produces
//! blocks on a timer.

use crate::chain::{Chain, StepOutput};
use crate::executor::{
    BlockHeader, BlockOutput, CallOutcome, CallRequest, DroppedTx, EvmConfig, Receipt, SignedTx,
    TxError, TxRecord,
};
use crate::store::{Store, StoreError};
use crate::system;
use alloy_primitives::{hex, Address, Bytes, B256, U256};
use engine::Command;
use jsonrpsee::server::{RpcModule, Server, ServerHandle};
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Every method served.
pub const METHODS: [&str; 24] = [
    "eth_chainId",
    "net_version",
    "web3_clientVersion",
    "eth_blockNumber",
    "eth_getBalance",
    "eth_getTransactionCount",
    "eth_gasPrice",
    "eth_maxPriorityFeePerGas",
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
    "eth_accounts",
    "eth_syncing",
    "eth_feeHistory",
    "nexus_mine",
    "nexus_coreAccount",
    "nexus_coreBalance",
];

/// Priority fee suggested by `eth_maxPriorityFeePerGas` (wei).
pub const SUGGESTED_TIP_WEI: u64 = 1_000_000_000;
/// Most transactions waiting in the pool.
pub const MAX_MEMPOOL: usize = 10_000;
/// Widest block range one `eth_getLogs` may scan.
pub const MAX_LOG_RANGE: u64 = 10_000;
/// Most dropped transactions remembered for `eth_getTransactionByHash` (oldest forgotten
/// first; every drop is also logged).
pub const MAX_DROPPED_REMEMBERED: usize = 10_000;

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
    fn params(message: impl Into<String>) -> RpcError {
        RpcError {
            code: -32602,
            message: message.into(),
            data: None,
        }
    }
    fn server(message: impl Into<String>) -> RpcError {
        RpcError {
            code: -32000,
            message: message.into(),
            data: None,
        }
    }
}

fn quantity(n: impl std::fmt::LowerHex) -> Value {
    Value::String(format!("{n:#x}"))
}

fn data(bytes: &[u8]) -> Value {
    Value::String(format!("0x{}", hex::encode(bytes)))
}

fn addr(a: Address) -> Value {
    Value::String(format!("{a:#x}"))
}

fn hash(h: B256) -> Value {
    Value::String(format!("{h:#x}"))
}

fn arg(params: &[Value], i: usize) -> Option<&Value> {
    params.get(i).filter(|v| !v.is_null())
}

fn parse_address(v: Option<&Value>) -> Result<Address, RpcError> {
    v.and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RpcError::params("expected a 20-byte hex address"))
}

fn parse_hash(v: Option<&Value>) -> Result<B256, RpcError> {
    v.and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RpcError::params("expected a 32-byte hex hash"))
}

fn parse_bytes(v: &Value) -> Result<Bytes, RpcError> {
    v.as_str()
        .and_then(|s| hex::decode(s).ok())
        .map(Bytes::from)
        .ok_or_else(|| RpcError::params("expected 0x-prefixed hex data"))
}

fn parse_quantity(v: &Value) -> Result<U256, RpcError> {
    v.as_str()
        .and_then(|s| s.strip_prefix("0x"))
        .and_then(|s| U256::from_str_radix(s, 16).ok())
        .or_else(|| v.as_u64().map(U256::from))
        .ok_or_else(|| RpcError::params("expected a 0x-prefixed hex quantity"))
}

/// The node: the chain, its store, the pool, and what RPC serves (blocks, transactions).
pub struct Node {
    chain: Chain,
    store: Option<Store>,
    blocks: Vec<BlockHeader>,
    txs: HashMap<B256, (TxRecord, Receipt)>,
    mempool: Vec<SignedTx>,
    /// Accepted transactions the block builder dropped, by hash: (drop number, block, why).
    dropped: HashMap<B256, (u64, u64, DroppedTx)>,
    /// Drop numbers in order, to forget the oldest past [`MAX_DROPPED_REMEMBERED`].
    dropped_order: VecDeque<(B256, u64)>,
    drops: u64,
    core_inbox: Vec<Command>,
    /// Why the node stopped (a block it produced could not be persisted): in-memory state
    /// is ahead of storage, so nothing more is served.
    stopped: Option<String>,
}

impl Node {
    /// A node from a fresh chain and its genesis block (persisted if a store is given).
    pub fn new(
        chain: Chain,
        genesis: BlockOutput,
        store: Option<Store>,
    ) -> Result<Node, StoreError> {
        if let Some(store) = &store {
            store.commit_block(&genesis, chain.bridge(), Some(&chain.engine().snapshot()))?;
        }
        Ok(Node {
            chain,
            store,
            blocks: vec![genesis.header],
            txs: HashMap::new(),
            mempool: Vec::new(),
            dropped: HashMap::new(),
            dropped_order: VecDeque::new(),
            drops: 0,
            core_inbox: Vec::new(),
            stopped: None,
        })
    }

    /// Reopens a node from its store; `None` if the store is empty or lacks an engine
    /// snapshot.
    pub fn open(store: Store, config: EvmConfig) -> Result<Option<Node>, StoreError> {
        let Some(loaded) = store.load(config)? else {
            return Ok(None);
        };
        let Some(snapshot) = loaded.engine_snapshot else {
            return Ok(None);
        };
        let engine = engine::Engine::restore(&snapshot).map_err(|e| StoreError::Corrupt {
            table: "meta",
            detail: format!("engine snapshot: {e:?}"),
        })?;
        let chain = Chain::from_parts(engine, loaded.executor, loaded.bridge);
        Ok(Some(Node {
            chain,
            store: Some(store),
            blocks: loaded.blocks,
            txs: loaded
                .txs
                .into_iter()
                .map(|(t, r)| (t.hash, (t, r)))
                .collect(),
            mempool: Vec::new(),
            dropped: HashMap::new(),
            dropped_order: VecDeque::new(),
            drops: 0,
            core_inbox: Vec::new(),
            stopped: None,
        }))
    }

    /// The chain.
    pub fn chain(&mut self) -> &mut Chain {
        &mut self.chain
    }

    /// Queues a Core command (as the sequencer would) for the next block.
    pub fn push_core_command(&mut self, command: Command) {
        self.core_inbox.push(command);
    }

    /// Whether a block would do anything.
    pub fn has_work(&self) -> bool {
        let bridge = self.chain.bridge();
        !self.mempool.is_empty()
            || !self.core_inbox.is_empty()
            || !bridge.pending_actions.is_empty()
            || !bridge.pending_callbacks.is_empty()
            || !bridge.pending_credits.is_empty()
    }

    fn pending_nonce(&mut self, sender: Address) -> u64 {
        let state = self.chain.executor().account(sender).nonce;
        state + self.mempool.iter().filter(|t| t.sender == sender).count() as u64
    }

    /// Validates and pools a raw transaction; returns its hash.
    ///
    /// Admission runs every check the block builder will run (revm's stateless validation
    /// via [`crate::executor::Executor::check_admission`], then nonce, funds and EIP-3607
    /// against the state and the sender's pooled transactions), so an accepted transaction
    /// is included unless the state changes under it in a way the pool cannot foresee (a
    /// drop is then logged and reported by `eth_getTransactionByHash`). A transaction
    /// still pooled is `already known`; one already mined has a nonce below the sender's
    /// state nonce and is `nonce too low` (as geth), whatever its hash.
    pub fn submit_raw(&mut self, raw: &[u8]) -> Result<B256, TxError> {
        let config = self.chain.executor().config().clone();
        let tx = SignedTx::decode(raw, config.chain_id)?;
        if self.mempool.iter().any(|t| t.hash == tx.hash) {
            return Err(TxError::Known);
        }
        tx.check_static(&config)?;
        self.chain.executor().check_admission(&tx)?;
        let account = self.chain.executor().account(tx.sender);
        if tx.nonce() < account.nonce {
            return Err(TxError::Nonce {
                expected: account.nonce,
                got: tx.nonce(),
            });
        }
        if !account.is_empty_code_hash() {
            return Err(TxError::SenderNotEoa(tx.sender));
        }
        let expected = self.pending_nonce(tx.sender);
        if tx.nonce() != expected {
            return Err(TxError::Nonce {
                expected,
                got: tx.nonce(),
            });
        }
        let balance = self.chain.executor().account(tx.sender).balance;
        // Checked: a wrapping sum would let `value = 2^256 - 1` pass.
        let mut need = tx.max_cost()?;
        for pooled in self.mempool.iter().filter(|t| t.sender == tx.sender) {
            need = need
                .checked_add(pooled.max_cost()?)
                .ok_or(TxError::CostOverflow)?;
        }
        if balance < need || balance < tx.value() {
            return Err(TxError::Funds { balance, need });
        }
        if self.mempool.len() >= MAX_MEMPOOL {
            return Err(TxError::Malformed("transaction pool is full".into()));
        }
        let hash = tx.hash;
        self.mempool.push(tx);
        Ok(hash)
    }

    /// Pools a decoded transaction **without** the admission checks of
    /// [`Node::submit_raw`]: for tests of what the block builder does with a transaction it
    /// refuses (it must be dropped with a trace, never silently). The server never calls it.
    pub fn pool_unchecked(&mut self, tx: SignedTx) {
        self.mempool.push(tx);
    }

    /// The newest block's number.
    pub fn head_number(&self) -> u64 {
        self.blocks.len() as u64 - 1
    }

    /// Hashes of the pooled transactions, in pool order. The pool lives in memory only:
    /// these are forgotten when the node stops (`nexus-evm` logs each).
    pub fn pending_hashes(&self) -> Vec<B256> {
        self.mempool.iter().map(|t| t.hash).collect()
    }

    /// Why the block builder dropped transaction `hash`, and in which block; `None` if it
    /// was not dropped (or too long ago: at most [`MAX_DROPPED_REMEMBERED`] are kept).
    pub fn dropped(&self, hash: B256) -> Option<(u64, &DroppedTx)> {
        self.dropped.get(&hash).map(|(_, block, d)| (*block, d))
    }

    /// Logs and remembers a dropped transaction (bounded: the oldest is forgotten first).
    fn record_drop(&mut self, block: u64, drop: DroppedTx) {
        tracing::warn!(
            hash = %drop.hash,
            sender = %drop.sender,
            nonce = drop.nonce,
            block,
            reason = %drop.reason,
            "accepted transaction dropped by the block builder"
        );
        self.drops += 1;
        self.dropped_order.push_back((drop.hash, self.drops));
        self.dropped.insert(drop.hash, (self.drops, block, drop));
        while self.dropped_order.len() > MAX_DROPPED_REMEMBERED {
            let (hash, number) = self.dropped_order.pop_front().expect("non-empty");
            // A later drop of the same hash (resent, dropped again) is kept.
            if self
                .dropped
                .get(&hash)
                .is_some_and(|(n, _, _)| *n == number)
            {
                self.dropped.remove(&hash);
            }
        }
    }

    /// Why the node stopped, if it did: a produced block could not be persisted, so its
    /// in-memory state is ahead of storage and it answers nothing more.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Produces the next block (Core then EVM) and persists it. A store failure stops the
    /// node for good ([`Node::stopped`]): the block exists in memory but not on disk.
    pub fn produce_block(&mut self, timestamp: u64) -> Result<StepOutput, StoreError> {
        if let Some(why) = &self.stopped {
            return Err(StoreError::Stopped(why.clone()));
        }
        let txs = std::mem::take(&mut self.mempool);
        let core = std::mem::take(&mut self.core_inbox);
        let out = self.chain.step(&core, txs, timestamp);
        if let Some(store) = &self.store {
            let snapshot = self.chain.engine().snapshot();
            if let Err(e) = store.commit_block(&out.evm, self.chain.bridge(), Some(&snapshot)) {
                self.stopped = Some(format!(
                    "block {} not persisted: {e}",
                    out.evm.header.number
                ));
                return Err(e);
            }
        }
        self.mempool = out.evm.deferred.clone();
        for drop in &out.evm.dropped {
            self.record_drop(out.evm.header.number, drop.clone());
        }
        for (record, receipt) in out.evm.txs.iter().zip(&out.evm.receipts) {
            self.txs
                .insert(record.hash, (record.clone(), receipt.clone()));
        }
        self.blocks.push(out.evm.header.clone());
        Ok(out)
    }

    fn block_number(&self, tag: Option<&Value>) -> Result<u64, RpcError> {
        let head = self.blocks.len() as u64 - 1;
        match tag.and_then(Value::as_str) {
            None | Some("latest" | "pending" | "safe" | "finalized") => Ok(head),
            Some("earliest") => Ok(0),
            Some(_) => {
                let n = parse_quantity(tag.expect("some"))?;
                u64::try_from(n).map_err(|_| RpcError::params("block number too large"))
            }
        }
    }

    /// State queries answer from the head only: no historical state is kept.
    fn state_at(&self, tag: Option<&Value>) -> Result<(), RpcError> {
        let n = self.block_number(tag)?;
        if n != self.blocks.len() as u64 - 1 {
            return Err(RpcError::server(format!(
                "state of block {n} is not available: only the latest block's state is kept"
            )));
        }
        Ok(())
    }

    fn call_request(&self, v: Option<&Value>) -> Result<CallRequest, RpcError> {
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
                u64::try_from(parse_quantity(gas)?)
                    .map_err(|_| RpcError::params("gas too large"))?,
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
        Ok(request)
    }

    fn block_json(&self, header: &BlockHeader, full: bool) -> Value {
        let txs: Vec<Value> = header
            .tx_hashes
            .iter()
            .map(|h| {
                if full {
                    self.txs
                        .get(h)
                        .map(|(t, r)| tx_json(t, Some(r), Some(header)))
                        .unwrap_or(Value::Null)
                } else {
                    hash(*h)
                }
            })
            .collect();
        json!({
            "number": quantity(header.number),
            "hash": hash(header.hash),
            "parentHash": hash(header.parent_hash),
            "nonce": "0x0000000000000000",
            "mixHash": hash(B256::ZERO),
            "sha3Uncles": "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347",
            "logsBloom": data(header.logs_bloom.as_slice()),
            "transactionsRoot": hash(alloy_primitives::keccak256(
                header.tx_hashes.iter().flat_map(|h| h.0).collect::<Vec<u8>>())),
            "stateRoot": hash(header.state_root),
            "receiptsRoot": hash(header.core_root),
            "miner": addr(self.chain_coinbase()),
            "difficulty": "0x0",
            "totalDifficulty": "0x0",
            "extraData": data(header.core_root.as_slice()),
            "size": quantity(500u64 + 32 * header.tx_hashes.len() as u64),
            "gasLimit": quantity(header.gas_limit),
            "gasUsed": quantity(header.gas_used),
            "timestamp": quantity(header.timestamp),
            "baseFeePerGas": quantity(header.base_fee),
            "blobGasUsed": "0x0",
            "excessBlobGas": "0x0",
            "parentBeaconBlockRoot": hash(B256::ZERO),
            "withdrawalsRoot": hash(B256::ZERO),
            "withdrawals": [],
            "transactions": txs,
            "uncles": [],
        })
    }

    fn chain_coinbase(&self) -> Address {
        // The config is behind `&mut` (the executor's state cache); the coinbase is fixed.
        EvmConfig::default().coinbase
    }

    /// Answers one JSON-RPC call. `params` is the positional parameter list.
    pub fn handle(&mut self, method: &str, params: &[Value]) -> Result<Value, RpcError> {
        if let Some(why) = &self.stopped {
            return Err(RpcError::server(format!("node stopped: {why}")));
        }
        let config = self.chain.executor().config().clone();
        match method {
            "eth_chainId" => Ok(quantity(config.chain_id)),
            "net_version" => Ok(Value::String(config.chain_id.to_string())),
            "web3_clientVersion" => Ok(json!(concat!("nexus-evm/", env!("CARGO_PKG_VERSION")))),
            "eth_blockNumber" => Ok(quantity(self.blocks.len() as u64 - 1)),
            "eth_accounts" => Ok(json!([])),
            "eth_syncing" => Ok(json!(false)),
            "eth_gasPrice" => Ok(quantity(config.base_fee_wei + SUGGESTED_TIP_WEI)),
            "eth_maxPriorityFeePerGas" => Ok(quantity(SUGGESTED_TIP_WEI)),
            "eth_feeHistory" => self.fee_history(params, config.base_fee_wei),
            "eth_getBalance" => {
                let a = parse_address(arg(params, 0))?;
                self.state_at(arg(params, 1))?;
                Ok(quantity(self.chain.executor().account(a).balance))
            }
            "eth_getTransactionCount" => {
                let a = parse_address(arg(params, 0))?;
                if arg(params, 1).and_then(Value::as_str) == Some("pending") {
                    return Ok(quantity(self.pending_nonce(a)));
                }
                self.state_at(arg(params, 1))?;
                Ok(quantity(self.chain.executor().account(a).nonce))
            }
            "eth_getCode" => {
                let a = parse_address(arg(params, 0))?;
                self.state_at(arg(params, 1))?;
                Ok(data(&self.chain.executor().code(a)))
            }
            "eth_getStorageAt" => {
                let a = parse_address(arg(params, 0))?;
                let slot = parse_quantity(arg(params, 1).ok_or_else(|| RpcError::params("slot"))?)?;
                self.state_at(arg(params, 2))?;
                let v = self.chain.executor().storage(a, slot);
                Ok(data(&v.to_be_bytes::<32>()))
            }
            "eth_getBlockByNumber" => {
                let n = self.block_number(arg(params, 0))?;
                let full = arg(params, 1).and_then(Value::as_bool).unwrap_or(false);
                Ok(self
                    .blocks
                    .get(n as usize)
                    .map_or(Value::Null, |h| self.block_json(h, full)))
            }
            "eth_getBlockByHash" => {
                let h = parse_hash(arg(params, 0))?;
                let full = arg(params, 1).and_then(Value::as_bool).unwrap_or(false);
                Ok(self
                    .blocks
                    .iter()
                    .find(|b| b.hash == h)
                    .map_or(Value::Null, |b| self.block_json(b, full)))
            }
            "eth_call" => {
                let request = self.call_request(arg(params, 0))?;
                self.state_at(arg(params, 1))?;
                match self.chain.call(&request) {
                    CallOutcome::Success { output, .. } => Ok(data(&output)),
                    failure => Err(call_error(failure)),
                }
            }
            "eth_estimateGas" => {
                let request = self.call_request(arg(params, 0))?;
                self.state_at(arg(params, 1))?;
                match self.chain.estimate_gas(&request) {
                    Ok(gas) => Ok(quantity(gas)),
                    Err(failure) => Err(call_error(failure)),
                }
            }
            "eth_sendRawTransaction" => {
                let raw = parse_bytes(
                    arg(params, 0)
                        .ok_or_else(|| RpcError::params("expected raw transaction hex"))?,
                )?;
                match self.submit_raw(&raw) {
                    Ok(h) => Ok(hash(h)),
                    Err(e @ (TxError::Malformed(_) | TxError::Signature(_))) => {
                        Err(RpcError::params(e.to_string()))
                    }
                    Err(e) => Err(RpcError::server(e.to_string())),
                }
            }
            "eth_getTransactionReceipt" => {
                let h = parse_hash(arg(params, 0))?;
                Ok(match self.txs.get(&h) {
                    Some((t, r)) => receipt_json(t, r, &self.blocks[r.block_number as usize]),
                    None => Value::Null,
                })
            }
            "eth_getTransactionByHash" => {
                let h = parse_hash(arg(params, 0))?;
                if let Some((t, r)) = self.txs.get(&h) {
                    return Ok(tx_json(
                        t,
                        Some(r),
                        Some(&self.blocks[r.block_number as usize]),
                    ));
                }
                if let Some(pooled) = self.mempool.iter().find(|t| t.hash == h) {
                    // Pending, as geth: block fields null.
                    return Ok(tx_json(&pooled.record(0, 0), None, None));
                }
                if let Some((block, drop)) = self.dropped(h) {
                    return Err(dropped_error(block, drop));
                }
                Ok(Value::Null)
            }
            "eth_getLogs" => self.logs(arg(params, 0)),
            "nexus_mine" => {
                let out = self.produce_block(unix_now()).map_err(|e| {
                    RpcError::server(format!("node stopped: block not persisted: {e}"))
                })?;
                Ok(quantity(out.evm.header.number))
            }
            "nexus_coreAccount" => {
                let a = parse_address(arg(params, 0))?;
                Ok(quantity(system::core_account(a)))
            }
            "nexus_coreBalance" => {
                let a = parse_address(arg(params, 0))?;
                let asset =
                    parse_quantity(arg(params, 1).ok_or_else(|| RpcError::params("asset"))?)?;
                let asset = u32::try_from(asset).map_err(|_| RpcError::params("asset id"))?;
                let b = self
                    .chain
                    .engine()
                    .balance(system::core_account(a), asset)
                    .unwrap_or_default();
                Ok(json!({"total": b.total, "locked": b.locked}))
            }
            other => Err(RpcError {
                code: -32601,
                message: format!("the method {other} does not exist/is not available"),
                data: None,
            }),
        }
    }

    /// `eth_feeHistory(blockCount, newestBlock, rewardPercentiles?)`: `blockCount` blocks
    /// ending at `newestBlock` (clamped to what exists, at most 1,024), the base fee of each
    /// and of the next block, each block's gas used / gas limit, and, when percentiles are
    /// given, one tip per percentile per block: the effective priority fee at which that
    /// share of the block's user gas was reached, transactions sorted by tip (as geth; system
    /// callbacks pay nothing and are left out; a block without user transactions gives 0).
    fn fee_history(&self, params: &[Value], next_base_fee: u64) -> Result<Value, RpcError> {
        let count = parse_quantity(
            arg(params, 0).ok_or_else(|| RpcError::params("expected a block count"))?,
        )?;
        let count = u64::try_from(count).unwrap_or(u64::MAX).clamp(1, 1024);
        let head = self.blocks.len() as u64 - 1;
        let newest = self.block_number(arg(params, 1))?;
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
        let oldest = newest.saturating_sub(count - 1);
        let blocks = &self.blocks[oldest as usize..=newest as usize];
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
                        .filter_map(|h| self.txs.get(h))
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

    fn logs(&self, filter: Option<&Value>) -> Result<Value, RpcError> {
        let filter = filter
            .and_then(Value::as_object)
            .ok_or_else(|| RpcError::params("expected a filter object"))?;
        let (from, to) = if let Some(h) = filter.get("blockHash").filter(|v| !v.is_null()) {
            let h = parse_hash(Some(h))?;
            let b = self
                .blocks
                .iter()
                .find(|b| b.hash == h)
                .ok_or_else(|| RpcError::server("unknown block hash"))?;
            (b.number, b.number)
        } else {
            let from = self.block_number(filter.get("fromBlock").filter(|v| !v.is_null()))?;
            let to = self.block_number(filter.get("toBlock").filter(|v| !v.is_null()))?;
            (from, to.min(self.blocks.len() as u64 - 1))
        };
        if from > to.saturating_add(1) || to - from.min(to) > MAX_LOG_RANGE {
            return Err(RpcError::server(format!(
                "block range {from}..={to} invalid or wider than {MAX_LOG_RANGE}"
            )));
        }
        let addresses: Vec<Address> = match filter.get("address") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| parse_address(Some(v)))
                .collect::<Result<_, _>>()?,
            Some(v) => vec![parse_address(Some(v))?],
        };
        let topics: Vec<Vec<B256>> = match filter.get("topics") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|t| match t {
                    Value::Null => Ok(Vec::new()),
                    Value::Array(any) => any.iter().map(|h| parse_hash(Some(h))).collect(),
                    one => Ok(vec![parse_hash(Some(one))?]),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(RpcError::params("topics must be an array")),
        };
        let mut out = Vec::new();
        for header in self
            .blocks
            .iter()
            .skip(from as usize)
            .take((to + 1 - from.min(to + 1)) as usize)
        {
            for tx_hash in &header.tx_hashes {
                let Some((_, receipt)) = self.txs.get(tx_hash) else {
                    continue;
                };
                for log in &receipt.logs {
                    if !addresses.is_empty() && !addresses.contains(&log.address) {
                        continue;
                    }
                    let matches = topics.iter().enumerate().all(|(i, want)| {
                        want.is_empty() || log.topics.get(i).is_some_and(|t| want.contains(t))
                    });
                    if matches {
                        out.push(log_json(log, receipt, header));
                    }
                }
            }
        }
        Ok(Value::Array(out))
    }
}

/// `eth_getTransactionByHash` of a dropped transaction: an error naming the reason (a
/// `null` would look like "never sent", a pending object would make clients wait forever).
fn dropped_error(block: u64, drop: &DroppedTx) -> RpcError {
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

fn call_error(failure: CallOutcome) -> RpcError {
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

fn revert_message(output: &[u8]) -> String {
    // Error(string): selector, offset, length, bytes.
    if output.len() >= 68 && output[..4] == [0x08, 0xc3, 0x79, 0xa0] {
        let len = U256::from_be_slice(&output[36..68]).saturating_to::<usize>();
        if let Some(text) = output.get(68..68 + len) {
            return format!("execution reverted: {}", String::from_utf8_lossy(text));
        }
    }
    "execution reverted".to_string()
}

fn log_json(log: &crate::executor::LogRecord, r: &Receipt, header: &BlockHeader) -> Value {
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

fn receipt_json(t: &TxRecord, r: &Receipt, header: &BlockHeader) -> Value {
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
fn tx_json(t: &TxRecord, r: Option<&Receipt>, header: Option<&BlockHeader>) -> Value {
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
        "accessList": [],
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

/// Seconds since the Unix epoch (the shell's clock, passed into blocks as an input).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Where to listen (loopback).
    pub addr: SocketAddr,
    /// A block is produced this often while there is work.
    pub block_time: Duration,
}

struct Request {
    method: &'static str,
    params: Vec<Value>,
    reply: mpsc::SyncSender<Result<Value, RpcError>>,
}

/// A running server: its address; dropping [`RpcServer::stop`] ends it.
pub struct RpcServer {
    /// The bound address.
    pub addr: SocketAddr,
    handle: ServerHandle,
    runtime: Option<tokio::runtime::Runtime>,
    node_thread: Option<std::thread::JoinHandle<Node>>,
}

impl RpcServer {
    /// Stops the server and the node thread; returns the node.
    pub fn stop(mut self) -> Node {
        let _ = self.handle.stop();
        if let Some(runtime) = self.runtime.take() {
            runtime.block_on(self.handle.clone().stopped());
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        self.node_thread
            .take()
            .expect("running")
            .join()
            .expect("node thread did not panic")
    }
}

fn params_of(params: &jsonrpsee::types::Params<'_>) -> Result<Vec<Value>, ErrorObjectOwned> {
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

/// Serves `node` over HTTP JSON-RPC at `config.addr`. One thread owns the node; it answers
/// requests in arrival order and produces a block every `block_time` while there is work.
pub fn serve(node: Node, config: ServeConfig) -> std::io::Result<RpcServer> {
    let (tx, rx) = mpsc::sync_channel::<Request>(1024);
    let block_time = config.block_time;
    let node_thread = std::thread::Builder::new()
        .name("nexus-evm".into())
        .spawn(move || node_loop(node, rx, block_time))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(8)
        .enable_all()
        .build()?;
    let mut module = RpcModule::new(tx);
    for &method in METHODS.iter() {
        module
            .register_blocking_method(method, move |params, tx, _| {
                let params = params_of(&params)?;
                let (reply, answer) = mpsc::sync_channel(1);
                tx.send(Request {
                    method,
                    params,
                    reply,
                })
                .map_err(|_| ErrorObjectOwned::owned(-32000, "node stopped", None::<()>))?;
                let result = answer
                    .recv()
                    .map_err(|_| ErrorObjectOwned::owned(-32000, "node stopped", None::<()>))?;
                result.map_err(|e| ErrorObjectOwned::owned(e.code, e.message, e.data))
            })
            .expect("method names are unique");
    }
    let (addr, handle) = runtime.block_on(async {
        let server = Server::builder().build(config.addr).await?;
        let addr = server.local_addr()?;
        Ok::<_, std::io::Error>((addr, server.start(module)))
    })?;
    Ok(RpcServer {
        addr,
        handle,
        runtime: Some(runtime),
        node_thread: Some(node_thread),
    })
}

fn node_loop(mut node: Node, rx: mpsc::Receiver<Request>, block_time: Duration) -> Node {
    let mut next_block = Instant::now() + block_time;
    loop {
        let wait = next_block.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(request) => {
                let result = node.handle(request.method, &request.params);
                let _ = request.reply.send(result);
                if let Some(why) = node.stopped() {
                    // Like the timer path: in-memory state is ahead of storage; stop.
                    eprintln!("nexus-evm: stopping: {why}");
                    return node;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return node,
        }
        if Instant::now() >= next_block {
            if node.has_work() {
                if let Err(e) = node.produce_block(unix_now()) {
                    // A store failure must not be papered over: stop producing blocks.
                    eprintln!("nexus-evm: block not persisted, stopping: {e}");
                    return node;
                }
            }
            next_block = Instant::now() + block_time;
        }
    }
}
