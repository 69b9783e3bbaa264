//! Ethereum JSON-RPC: [`Node`] answers methods as a plain function of (state, method,
//! params); [`serve`] is the shell: a jsonrpsee HTTP server on loopback whose handlers pass
//! each request to the one thread that owns the node (and so the EVM), which also produces
//! blocks on a timer.

use crate::chain::{Chain, StepOutput};
use crate::eth::{
    arg, block_json, block_number, call_error, call_request, data, dropped_error, hash, params_of,
    parse_address, parse_bytes, parse_hash, parse_quantity, quantity, state_at, tx_json, History,
};
pub use crate::eth::{RpcError, MAX_LOG_RANGE};
use crate::executor::{
    BlockHeader, BlockOutput, CallOutcome, DroppedTx, EvmConfig, Receipt, SignedTx, TxError,
    TxRecord,
};
use crate::store::{Store, StoreError};
use crate::system;
use alloy_primitives::{Address, B256};
use engine::Command;
use jsonrpsee::server::{RpcModule, Server, ServerHandle};
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The methods of `nexus-evm` beyond [`crate::eth::ETH_METHODS`].
pub const NEXUS_METHODS: [&str; 3] = ["nexus_mine", "nexus_coreAccount", "nexus_coreBalance"];

/// Priority fee suggested by `eth_maxPriorityFeePerGas` (wei).
pub const SUGGESTED_TIP_WEI: u64 = 1_000_000_000;
/// Most transactions waiting in the pool.
pub const MAX_MEMPOOL: usize = 10_000;
/// Most dropped transactions remembered for `eth_getTransactionByHash` (oldest forgotten
/// first; every drop is also logged).
pub const MAX_DROPPED_REMEMBERED: usize = 10_000;

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
            "eth_blockNumber" => Ok(quantity(self.head())),
            "eth_accounts" => Ok(json!([])),
            "eth_syncing" => Ok(json!(false)),
            "eth_gasPrice" => Ok(quantity(config.base_fee_wei + SUGGESTED_TIP_WEI)),
            "eth_maxPriorityFeePerGas" => Ok(quantity(SUGGESTED_TIP_WEI)),
            "eth_feeHistory" => crate::eth::fee_history(self, params, config.base_fee_wei),
            "eth_getBalance" => {
                let a = parse_address(arg(params, 0))?;
                state_at(self, arg(params, 1))?;
                Ok(quantity(self.chain.executor().account(a).balance))
            }
            "eth_getTransactionCount" => {
                let a = parse_address(arg(params, 0))?;
                if arg(params, 1).and_then(Value::as_str) == Some("pending") {
                    return Ok(quantity(self.pending_nonce(a)));
                }
                state_at(self, arg(params, 1))?;
                Ok(quantity(self.chain.executor().account(a).nonce))
            }
            "eth_getCode" => {
                let a = parse_address(arg(params, 0))?;
                state_at(self, arg(params, 1))?;
                Ok(data(&self.chain.executor().code(a)))
            }
            "eth_getStorageAt" => {
                let a = parse_address(arg(params, 0))?;
                let slot = parse_quantity(arg(params, 1).ok_or_else(|| RpcError::params("slot"))?)?;
                state_at(self, arg(params, 2))?;
                let v = self.chain.executor().storage(a, slot);
                Ok(data(&v.to_be_bytes::<32>()))
            }
            "eth_getBlockByNumber" => {
                let n = block_number(self, arg(params, 0))?;
                let full = arg(params, 1).and_then(Value::as_bool).unwrap_or(false);
                let coinbase = self.chain_coinbase();
                Ok(self
                    .header(n)
                    .map_or(Value::Null, |h| block_json(self, h, full, coinbase)))
            }
            "eth_getBlockByHash" => {
                let h = parse_hash(arg(params, 0))?;
                let full = arg(params, 1).and_then(Value::as_bool).unwrap_or(false);
                let coinbase = self.chain_coinbase();
                Ok(self
                    .header_by_hash(&h)
                    .map_or(Value::Null, |b| block_json(self, b, full, coinbase)))
            }
            "eth_call" => {
                let request = call_request(arg(params, 0))?;
                state_at(self, arg(params, 1))?;
                match self.chain.call(&request) {
                    CallOutcome::Success { output, .. } => Ok(data(&output)),
                    failure => Err(call_error(failure)),
                }
            }
            "eth_estimateGas" => {
                let request = call_request(arg(params, 0))?;
                state_at(self, arg(params, 1))?;
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
                    Err(e) => Err(crate::eth::send_error(&e)),
                }
            }
            "eth_getTransactionReceipt" => {
                let h = parse_hash(arg(params, 0))?;
                Ok(crate::eth::receipt(self, h))
            }
            "eth_getTransactionByHash" => {
                let h = parse_hash(arg(params, 0))?;
                if let Some(included) = crate::eth::transaction(self, h) {
                    return Ok(included);
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
            "eth_getLogs" => crate::eth::logs(self, arg(params, 0)),
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
            other => Err(crate::eth::no_method(other)),
        }
    }
}

impl History for Node {
    fn head(&self) -> u64 {
        self.blocks.len() as u64 - 1
    }
    fn oldest(&self) -> u64 {
        0
    }
    fn header(&self, number: u64) -> Option<&BlockHeader> {
        self.blocks.get(usize::try_from(number).ok()?)
    }
    fn header_by_hash(&self, hash: &B256) -> Option<&BlockHeader> {
        self.blocks.iter().find(|b| b.hash == *hash)
    }
    fn tx(&self, hash: &B256) -> Option<(&TxRecord, &Receipt)> {
        self.txs.get(hash).map(|(t, r)| (t, r))
    }
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
    for &method in crate::eth::ETH_METHODS.iter().chain(NEXUS_METHODS.iter()) {
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
