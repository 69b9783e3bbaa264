//! The Ethereum JSON-RPC port of a validator (docs/evm.md, "The validator's JSON-RPC").
//!
//! A jsonrpsee HTTP and WebSocket server on the validator's runtime, on TCP connections it
//! accepts itself to bound them (`connections`: at most [`MAX_CONNECTIONS`] open, each
//! closed after [`IDLE_TIMEOUT`] with nothing in progress). Each call becomes an [`EthRequest`]
//! sent to the host loop, which owns [`Execution`] and the mempool and answers between
//! consensus steps ([`EthPort::handle`]) through a oneshot. Reads come from the executed
//! state (the head only) and from the EVM blocks this validator executed, kept in memory
//! for a bounded window ([`EthHistory`]); `eth_sendRawTransaction` admits into the mempool
//! (`Mempool::admit_evm`) and the host forwards the item to the other validators with the
//! Core transactions (frame 3). Parameter parsing, error texts and the JSON of blocks,
//! transactions, receipts and logs are `evm_bridge::eth`'s, shared with `nexus-evm`.
//!
//! The node (`node::validator`) starts the server ([`serve`]) and runs the host loop that
//! answers.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use alloy_primitives::{keccak256, Address, B256, U256};
use evm_bridge::actions::Credit;
use evm_bridge::dev_sign::{self, DevAccounts, Filled};
use evm_bridge::eth::{
    self, addr, arg, block_json, block_number, call_error, call_request, data, hash, params_of,
    parse_address, parse_bytes, parse_hash, parse_quantity, quantity, state_at, History, RpcError,
};
use evm_bridge::executor::{
    BlockHeader, BlockOutput, CallOutcome, DroppedTx, Receipt, SignedTx, TxRecord,
};
use evm_bridge::filters::{FilterKind, Filters, LogFilter};
use evm_bridge::history::{PastState, StateHistory, StateUndo};
use evm_bridge::trace::{BlockReplay, GethTrace};
use execution::Execution;
use jsonrpsee::core::SubscriptionError;
use jsonrpsee::server::{
    serve_with_graceful_shutdown, stop_channel, Methods, RpcModule, Server, ServerConfig,
    ServerHandle, StopHandle,
};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::{PendingSubscriptionSink, SubscriptionCloseResponse};
use mempool::Mempool;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use transactions::EvmItem;

use connections::{Busy, Connection, Limits, Socket, WithConnection};

mod connections;
#[cfg(test)]
mod server_tests;

/// Every method the validator serves over HTTP and WebSocket (and, over WebSocket only,
/// `eth_subscribe` / `eth_unsubscribe`).
pub const METHODS: [&str; 52] = evm_bridge::eth::ETH_METHODS;

/// Notifications one subscription may have waiting between the host and its connection
/// (after jsonrpsee's own buffer of [`MESSAGE_BUFFER`] messages per connection is full): a
/// subscriber this far behind is dropped, its subscription closed with an error
/// notification, so that the host never waits for a client.
pub const SUBSCRIPTION_BUFFER: usize = 4096;
/// Subscriptions open at once on one validator (all connections); more are refused.
pub const MAX_SUBSCRIPTIONS: usize = 1024;
/// Messages jsonrpsee queues for one WebSocket connection before a send waits.
const MESSAGE_BUFFER: u32 = 1024;

/// EVM blocks remembered for reads by default (headers, transactions, receipts, logs; the
/// devnet's `eth_history_blocks`): about a day at one block every 10 s; older ones are
/// forgotten first.
pub const HISTORY_BLOCKS: usize = 10_000;
/// Blocks before the head whose EVM state is kept for reads and calls by default (the
/// devnet's `eth_state_blocks`, `[chain] eth_state_blocks`): as geth's 128 recent states.
pub const STATE_BLOCKS: usize = 128;
/// Calls queued for the host before new ones are refused as busy.
pub const QUEUE: usize = 1024;
/// Largest request body the server reads (a raw transaction is at most
/// `transactions::MAX_EVM_TX_LEN`, hex-encoded).
const MAX_REQUEST_BYTES: u32 = 1 << 20;
/// Most TCP connections open at once, HTTP and WebSocket alike (each counts from accept to
/// close; one more is closed at once, unanswered). Also jsonrpsee's own bound on HTTP
/// requests in progress and WebSocket connections, which only HTTP/2's several requests
/// per connection can reach.
pub const MAX_CONNECTIONS: u32 = 256;
/// How long a connection may have no call in progress and no live subscription before it is
/// closed (so that idle sockets cannot hold every connection for ever).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections whose rate limit is remembered: the server numbers TCP connections in the
/// order it accepts them, so the host forgets the lowest numbers past this many (long
/// closed, as at most [`MAX_CONNECTIONS`] are open).
pub const RATE_REMEMBERED: usize = 4 * MAX_CONNECTIONS as usize;

/// The refusal of a raw transaction over its connection's rate.
pub fn rate_limited(per_second: u64) -> RpcError {
    RpcError {
        code: -32005,
        message: format!(
            "rate_limited: more than {per_second} transactions a second on this connection"
        ),
        data: None,
    }
}

/// A call for the host loop.
pub struct EthRequest {
    /// The method (one of [`METHODS`]).
    pub method: &'static str,
    /// Positional parameters.
    pub params: Vec<Value>,
    /// The TCP connection it came on (for its rate limit): distinct per connection,
    /// increasing in the order the server accepted them.
    pub connection: u64,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Value, RpcError>>,
    /// For `eth_subscribe`: where the host pushes the subscription's notifications.
    pub subscriber: Option<mpsc::Sender<Value>>,
}

/// The error object of an [`RpcError`].
fn error_object(e: RpcError) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(e.code, e.message, e.data)
}

/// The refusal of a call the host cannot queue.
fn busy_error() -> ErrorObjectOwned {
    ErrorObjectOwned::owned(-32005, "validator busy", None::<()>)
}

/// The answer of a call whose host stopped.
fn stopped() -> ErrorObjectOwned {
    ErrorObjectOwned::owned(-32000, "validator stopped", None::<()>)
}

/// The connection a call came on (its number, [`Connection::id`]).
fn connection_of(extensions: &jsonrpsee::Extensions) -> u64 {
    extensions.get::<Connection>().map_or(0, |c| c.id)
}

/// Marks a call (or subscription) in progress on its connection until dropped: the
/// connection is not closed as idle meanwhile.
fn busy(extensions: &jsonrpsee::Extensions) -> Option<Busy> {
    extensions.get::<Connection>().map(Connection::busy)
}

/// A random 128-bit id from the OS (filters and subscriptions: not guessable by another
/// client).
pub fn random_id() -> Result<u128, RpcError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| RpcError::server(format!("no random source for an id: {e}")))?;
    Ok(u128::from_le_bytes(bytes))
}

/// Subscription ids as Ethereum clients expect them: random 128-bit hex quantities.
#[derive(Debug)]
struct HexIds;

impl jsonrpsee::core::traits::IdProvider for HexIds {
    fn next_id(&self) -> jsonrpsee::types::SubscriptionId<'static> {
        // A failing OS random source leaves ids from the clock: unique, not secret.
        let id = random_id().unwrap_or_else(|_| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(1, |d| d.as_nanos())
        });
        jsonrpsee::types::SubscriptionId::Str(format!("{id:#x}").into())
    }
}

/// Starts the JSON-RPC server on the current runtime; calls go to `to_host`. Returns the
/// bound address and the server's handle (dropping it stops the server).
pub async fn serve(
    addr: SocketAddr,
    to_host: mpsc::Sender<EthRequest>,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let limits = Limits {
        connections: MAX_CONNECTIONS as usize,
        idle: IDLE_TIMEOUT,
    };
    serve_with(addr, to_host, limits).await
}

/// [`serve`] with these bounds on connections (the tests' are small).
pub(crate) async fn serve_with(
    addr: SocketAddr,
    to_host: mpsc::Sender<EthRequest>,
    limits: Limits,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let methods: Methods = module(to_host).into();
    let builder = Server::builder()
        .set_config(config(limits))
        .to_service_builder();
    let (stop, handle) = stop_channel();
    // jsonrpsee's service is built once per TCP connection, not per request: its own
    // connection id (subscription bookkeeping) is then the connection's too.
    let serve_one = move |socket: Socket, connection: Connection, stop: StopHandle| {
        let inner = builder.clone().build(methods.clone(), stop.clone());
        let service = WithConnection { inner, connection };
        serve_with_graceful_shutdown(socket, service, stop.shutdown())
    };
    tokio::spawn(connections::accept(listener, limits, stop, serve_one));
    Ok((addr, handle))
}

/// jsonrpsee's configuration: request size, per-connection message buffer, hex
/// subscription ids, and its own count of connections bounded as ours.
fn config(limits: Limits) -> ServerConfig {
    let connections = u32::try_from(limits.connections).unwrap_or(u32::MAX);
    ServerConfig::builder()
        .max_request_body_size(MAX_REQUEST_BYTES)
        .max_connections(connections)
        .set_message_buffer_capacity(MESSAGE_BUFFER)
        .set_id_provider(HexIds)
        .build()
}

/// The methods: each call queued to the host, `eth_subscribe` over WebSocket.
fn module(to_host: mpsc::Sender<EthRequest>) -> RpcModule<mpsc::Sender<EthRequest>> {
    let mut module = RpcModule::new(to_host);
    for &method in METHODS.iter() {
        module
            .register_async_method(method, move |params, to_host, extensions| async move {
                let _busy = busy(&extensions);
                let params = params_of(&params)?;
                let (reply, answer) = oneshot::channel();
                to_host
                    .try_send(EthRequest {
                        method,
                        params,
                        connection: connection_of(&extensions),
                        reply,
                        subscriber: None,
                    })
                    .map_err(|_| busy_error())?;
                let result = answer.await.map_err(|_| stopped())?;
                result.map_err(error_object)
            })
            .expect("method names are unique");
    }
    module
        .register_subscription(
            "eth_subscribe",
            "eth_subscription",
            "eth_unsubscribe",
            |params, pending, to_host, extensions| async move {
                // Held for the subscription's life: a subscribed connection is not idle.
                let _live = busy(&extensions);
                let connection = connection_of(&extensions);
                let asked = match params_of(&params) {
                    Ok(params) => subscribe(&to_host, params, connection).await,
                    Err(e) => Some(Err(e)),
                };
                match asked {
                    Some(Ok(rx)) => forward(pending, rx).await,
                    Some(Err(e)) => {
                        pending.reject(e).await;
                        SubscriptionCloseResponse::None
                    }
                    None => {
                        pending.reject(stopped()).await;
                        SubscriptionCloseResponse::None
                    }
                }
            },
        )
        .expect("subscription names are unique");
    module
}

/// Asks the host for a subscription: its notifications' receiver, the host's refusal, or
/// `None` if the host stopped.
async fn subscribe(
    to_host: &mpsc::Sender<EthRequest>,
    params: Vec<Value>,
    connection: u64,
) -> Option<Result<mpsc::Receiver<Value>, ErrorObjectOwned>> {
    let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
    let (reply, answer) = oneshot::channel();
    let request = EthRequest {
        method: "eth_subscribe",
        params,
        connection,
        reply,
        subscriber: Some(tx),
    };
    if to_host.try_send(request).is_err() {
        return Some(Err(busy_error()));
    }
    match answer.await.ok()? {
        Ok(_) => Some(Ok(rx)),
        Err(e) => Some(Err(error_object(e))),
    }
}

/// Accepts a subscription and forwards what the host pushes until the client unsubscribes
/// or leaves, or the host drops it (too far behind: the subscription ends with an error
/// notification).
async fn forward(
    pending: PendingSubscriptionSink,
    mut rx: mpsc::Receiver<Value>,
) -> SubscriptionCloseResponse {
    let Ok(sink) = pending.accept().await else {
        return SubscriptionCloseResponse::None;
    };
    loop {
        tokio::select! {
            _ = sink.closed() => return SubscriptionCloseResponse::None,
            next = rx.recv() => {
                let Some(value) = next else {
                    return SubscriptionCloseResponse::NotifErr(dropped_error());
                };
                let message = serde_json::value::to_raw_value(&value).expect("JSON serializes");
                if sink.send(message).await.is_err() {
                    return SubscriptionCloseResponse::None;
                }
            }
        }
    }
}

/// The error notification closing a subscription the host dropped.
fn dropped_error() -> SubscriptionError {
    let message =
        format!("subscription dropped: more than {SUBSCRIPTION_BUFFER} notifications waiting");
    let error = json!({"code": -32005, "message": message});
    SubscriptionError::from_json(serde_json::value::to_raw_value(&error).expect("JSON"))
}

/// The EVM blocks this validator executed, newest [`HISTORY_BLOCKS`] of them.
pub struct EthHistory {
    capacity: usize,
    /// Transactions evicted from the pool unexecuted, by hash: (block after which, why);
    /// the newest `capacity` are kept.
    dropped: HashMap<B256, (u64, DroppedTx)>,
    dropped_order: VecDeque<B256>,
    /// Consecutive headers, oldest first.
    blocks: VecDeque<BlockHeader>,
    by_hash: HashMap<B256, u64>,
    txs: HashMap<B256, (TxRecord, Receipt)>,
    /// The undos of the newest blocks, for the state at a past block.
    state: StateHistory,
    /// The credits of the blocks whose undo is kept (re-executing one for a trace).
    credits: VecDeque<(u64, Vec<Credit>)>,
}

impl EthHistory {
    /// A history of `capacity` blocks starting at `head` (the genesis, or a snapshot's head
    /// block: its transactions are not known), with the state of the `state_blocks` blocks
    /// before the head (within the blocks remembered).
    pub fn new(head: &BlockHeader, capacity: usize, state_blocks: usize) -> EthHistory {
        let mut history = EthHistory {
            capacity: capacity.max(1),
            dropped: HashMap::new(),
            dropped_order: VecDeque::new(),
            blocks: VecDeque::new(),
            by_hash: HashMap::new(),
            txs: HashMap::new(),
            state: StateHistory::new(state_blocks.min(capacity.max(1) - 1)),
            credits: VecDeque::new(),
        };
        history.by_hash.insert(head.hash, head.number);
        history.blocks.push_back(head.clone());
        history
    }

    /// How many blocks it keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many blocks before the head it keeps the state of.
    pub fn state_blocks(&self) -> usize {
        self.state.capacity()
    }

    /// The undos kept, for the state at past blocks.
    pub fn state(&self) -> &StateHistory {
        &self.state
    }

    /// The credits block `number` applied before its transactions (empty if none, or if
    /// the block is older than the state window).
    pub fn credits(&self, number: u64) -> &[Credit] {
        self.credits
            .iter()
            .find(|(n, _)| *n == number)
            .map_or(&[], |(_, credits)| credits.as_slice())
    }

    /// Remembers a transaction the pool evicted after block `block` (it will never be
    /// executed): `eth_getTransactionByHash` then answers with the reason.
    pub fn note_dropped(&mut self, block: u64, drop: DroppedTx) {
        self.dropped_order.push_back(drop.hash);
        self.dropped.insert(drop.hash, (block, drop));
        while self.dropped_order.len() > self.capacity {
            let old = self.dropped_order.pop_front().expect("over capacity");
            self.dropped.remove(&old);
        }
    }

    /// Why transaction `hash` was evicted, and after which block, if it was (and is still
    /// remembered).
    pub fn dropped(&self, hash: &B256) -> Option<&(u64, DroppedTx)> {
        self.dropped.get(hash)
    }

    /// Remembers an executed EVM block (the next after the head) and its undo, forgetting
    /// the oldest past the capacity.
    pub fn push(&mut self, out: &BlockOutput, undo: StateUndo) {
        self.state.push(out.header.number, undo);
        self.credits
            .push_back((out.header.number, out.credits.clone()));
        while self.credits.len() > self.state.capacity() {
            self.credits.pop_front();
        }
        assert_eq!(
            out.header.number,
            self.head() + 1,
            "EVM blocks are remembered in order"
        );
        for (record, receipt) in out.txs.iter().zip(&out.receipts) {
            self.txs
                .insert(record.hash, (record.clone(), receipt.clone()));
        }
        self.by_hash.insert(out.header.hash, out.header.number);
        self.blocks.push_back(out.header.clone());
        while self.blocks.len() > self.capacity {
            let old = self.blocks.pop_front().expect("over capacity");
            self.by_hash.remove(&old.hash);
            for tx in &old.tx_hashes {
                self.txs.remove(tx);
            }
        }
    }
}

impl History for EthHistory {
    fn head(&self) -> u64 {
        self.blocks.back().expect("never empty").number
    }
    fn oldest(&self) -> u64 {
        self.blocks.front().expect("never empty").number
    }
    fn header(&self, number: u64) -> Option<&BlockHeader> {
        let offset = number.checked_sub(self.oldest())?;
        self.blocks.get(usize::try_from(offset).ok()?)
    }
    fn header_by_hash(&self, hash: &B256) -> Option<&BlockHeader> {
        self.header(*self.by_hash.get(hash)?)
    }
    fn tx(&self, hash: &B256) -> Option<(&TxRecord, &Receipt)> {
        self.txs.get(hash).map(|(t, r)| (t, r))
    }
}

/// What a subscription is told of.
enum Topic {
    /// Each executed block's header (`newHeads`).
    Heads,
    /// Matching logs of each executed block (`logs`).
    Logs(LogFilter),
    /// Hashes of transactions admitted to the pool (`newPendingTransactions`).
    Pending,
}

/// One WebSocket subscription, as the host sees it.
struct Subscriber {
    topic: Topic,
    to: mpsc::Sender<Value>,
}

/// What the port lets clients poll (filters) or pushes to them (subscriptions), fed by
/// the host after each executed block and each admitted EVM transaction.
#[derive(Default)]
pub struct EthFeeds {
    /// Polling filters (`eth_newFilter` and the rest).
    pub filters: Filters,
    subscribers: Vec<Subscriber>,
}

impl EthFeeds {
    /// No filters, no subscribers.
    pub fn new() -> EthFeeds {
        EthFeeds::default()
    }

    /// Subscriptions open (closed ones are forgotten at the next notification).
    pub fn subscriptions(&self) -> usize {
        self.subscribers.len()
    }

    /// An EVM transaction admitted to the pool (through this port or from a peer).
    pub fn on_pending(&mut self, tx: B256) {
        self.filters.note_pending(tx);
        let text = hash(tx);
        self.notify(|topic| matches!(topic, Topic::Pending).then(|| vec![text.clone()]));
    }

    /// The head block of `history` was just executed: its header to `newHeads`, its
    /// matching logs to `logs` subscribers.
    pub fn on_block(&mut self, history: &EthHistory) {
        if self.subscribers.is_empty() {
            return;
        }
        let header = history
            .header(history.head())
            .expect("the head is remembered");
        let mut head = block_json(history, header, false);
        if let Some(fields) = head.as_object_mut() {
            for extra in [
                "transactions",
                "uncles",
                "withdrawals",
                "size",
                "totalDifficulty",
            ] {
                fields.remove(extra);
            }
        }
        self.notify(|topic| match topic {
            Topic::Heads => Some(vec![head.clone()]),
            Topic::Logs(criteria) => {
                let mut logs = Vec::new();
                if criteria.open_range_contains(header.number) {
                    criteria.block_logs(history, header, &mut logs);
                }
                Some(logs)
            }
            Topic::Pending => None,
        });
    }

    /// Pushes what `what` gives each subscriber without waiting: one whose buffer is full
    /// (or whose client left) is dropped, which closes its subscription.
    fn notify(&mut self, what: impl Fn(&Topic) -> Option<Vec<Value>>) {
        self.subscribers.retain(|sub| {
            let Some(items) = what(&sub.topic) else {
                return !sub.to.is_closed();
            };
            items.into_iter().all(|item| sub.to.try_send(item).is_ok())
        });
    }

    /// `eth_subscribe(kind, filter?)`: registers `to` for `newHeads`, `logs` or
    /// `newPendingTransactions`; refused past [`MAX_SUBSCRIPTIONS`].
    fn subscribe(
        &mut self,
        history: &EthHistory,
        params: &[Value],
        to: mpsc::Sender<Value>,
    ) -> Result<Value, RpcError> {
        let topic = match arg(params, 0).and_then(Value::as_str) {
            Some("newHeads") => Topic::Heads,
            Some("logs") => Topic::Logs(LogFilter::parse_live(history, arg(params, 1))?),
            Some("newPendingTransactions") => Topic::Pending,
            other => {
                return Err(RpcError::params(format!(
                    "unknown subscription {other:?}: newHeads, logs or newPendingTransactions"
                )))
            }
        };
        self.subscribers.retain(|sub| !sub.to.is_closed());
        if self.subscribers.len() >= MAX_SUBSCRIPTIONS {
            return Err(RpcError {
                code: -32005,
                message: format!("too many subscriptions: at most {MAX_SUBSCRIPTIONS}"),
                data: None,
            });
        }
        self.subscribers.push(Subscriber { topic, to });
        Ok(Value::Null)
    }
}

/// A state query for block `n` outside the window kept: `-32000` naming the window, with
/// `data` {requested, oldest, head, window}.
pub fn state_error(history: &EthHistory, n: u64) -> RpcError {
    let head = history.head();
    let oldest = history.state().oldest(head);
    let window = history.state_blocks();
    RpcError {
        code: -32000,
        message: format!(
            "state of block {n} is not available: this node keeps the state of the {window} blocks before the head ({oldest}..={head}; eth_state_blocks)"
        ),
        data: Some(json!({
            "requested": quantity(n), "oldest": quantity(oldest), "head": quantity(head),
            "window": window,
        })),
    }
}

/// A trace as geth's JSON.
fn trace_json(trace: GethTrace) -> Result<Value, RpcError> {
    serde_json::to_value(trace).map_err(|e| RpcError::server(format!("trace: {e}")))
}

/// What answering a call needs of the host: the executed state, the pool and the history.
pub struct EthPort<'a> {
    /// The executed state.
    pub execution: &'a mut Execution,
    /// The pool (EVM admission, pending nonces).
    pub mempool: &'a mut Mempool,
    /// The EVM blocks executed.
    pub history: &'a EthHistory,
    /// Other validators heard from recently (`net_peerCount`).
    pub peers: usize,
    /// Filters and subscriptions.
    pub feeds: &'a mut EthFeeds,
    /// The host's clock (ms), for filters' deadlines.
    pub now_ms: u64,
    /// The development accounts the port signs for (none unless configured).
    pub dev: &'a DevAccounts,
    /// The node's rate limit per account, asked with the recovered sender of a transaction
    /// that passed every other check; it takes a token when it says yes
    /// ([`mempool::Mempool::admit_evm_gated`]).
    pub within_rate: &'a mut dyn FnMut(Address) -> bool,
}

impl<'a> EthPort<'a> {
    /// Answers one call. An admitted raw transaction's item is returned too, for the host to
    /// forward to the other validators.
    pub fn handle(
        &mut self,
        method: &str,
        params: &[Value],
    ) -> (Result<Value, RpcError>, Option<EvmItem>) {
        if let Some(answer) = self.filter_call(method, params) {
            return (answer, None);
        }
        let sent = match method {
            "eth_sendRawTransaction" => self.send_raw(params),
            "eth_sendTransaction" => self.send_transaction(params),
            _ => return (self.read(method, params), None),
        };
        match sent {
            Ok((h, item)) => (Ok(h), Some(item)),
            Err(e) => (Err(e), None),
        }
    }

    /// Registers a WebSocket subscription (`eth_subscribe`, asked by the server with the
    /// sender of its notifications).
    pub fn subscribe(
        &mut self,
        params: &[Value],
        to: mpsc::Sender<Value>,
    ) -> Result<Value, RpcError> {
        self.feeds.subscribe(self.history, params, to)
    }

    /// The filter methods; `None` for the others.
    fn filter_call(&mut self, method: &str, params: &[Value]) -> Option<Result<Value, RpcError>> {
        let (history, now_ms) = (self.history, self.now_ms);
        let filters = &mut self.feeds.filters;
        let mut install = |kind: Result<FilterKind, RpcError>| {
            filters.install(random_id()?, kind?, history, now_ms)
        };
        Some(match method {
            "eth_newFilter" => {
                install(LogFilter::parse_live(history, arg(params, 0)).map(FilterKind::Logs))
            }
            "eth_newBlockFilter" => install(Ok(FilterKind::Blocks)),
            "eth_newPendingTransactionFilter" => install(Ok(FilterKind::Pending)),
            "eth_getFilterChanges" => filters.changes(arg(params, 0), history, now_ms),
            "eth_getFilterLogs" => filters.logs(arg(params, 0), history, now_ms),
            "eth_uninstallFilter" => filters.uninstall(arg(params, 0), now_ms),
            _ => return None,
        })
    }

    fn send_raw(&mut self, params: &[Value]) -> Result<(Value, EvmItem), RpcError> {
        let raw = parse_bytes(
            arg(params, 0).ok_or_else(|| RpcError::params("expected raw transaction hex"))?,
        )?;
        self.admit(&raw)
    }

    /// `eth_sendTransaction`: a development account's transaction, filled (pending nonce,
    /// the estimate of its gas, fees as `dev_sign::fill_transaction`), signed and admitted
    /// as a raw one.
    fn send_transaction(&mut self, params: &[Value]) -> Result<(Value, EvmItem), RpcError> {
        let request = dev_sign::tx_request(arg(params, 0))?;
        let from = request.call.from.expect("tx_request requires from");
        self.dev.check(from)?;
        let gas = match request.call.gas {
            Some(gas) => gas,
            None => self
                .execution
                .estimate_gas(&request.call)
                .map_err(call_error)?,
        };
        let config = self.execution.evm().config();
        let filled = Filled {
            nonce: self.execution.evm().peek_account(from).nonce
                + self.mempool.evm_pooled(&from) as u64,
            gas,
            chain_id: config.chain_id,
            base_fee: config.base_fee_wei,
        };
        let tx = dev_sign::fill_transaction(&request, filled)?;
        let raw = self.dev.sign_transaction(from, tx)?;
        self.admit(&raw)
    }

    /// Admits a signed envelope into the pool: its hash, and the item to forward.
    fn admit(&mut self, raw: &[u8]) -> Result<(Value, EvmItem), RpcError> {
        match self
            .mempool
            .admit_evm_gated(raw, &*self.execution, &mut *self.within_rate)
        {
            // The Ethereum hash is keccak256 of the EIP-2718 envelope.
            Ok(_) => {
                let tx = keccak256(raw);
                self.feeds.on_pending(tx);
                Ok((hash(tx), EvmItem::new(raw)))
            }
            Err(mempool::EvmRefusal::Tx(e)) => Err(eth::send_error(&e)),
            Err(other) => Err(RpcError::server(other.to_string())),
        }
    }

    fn read(&mut self, method: &str, params: &[Value]) -> Result<Value, RpcError> {
        let history = self.history;
        let config = self.execution.evm().config().clone();
        match method {
            "eth_chainId" => Ok(quantity(config.chain_id)),
            "net_version" => Ok(Value::String(config.chain_id.to_string())),
            "web3_clientVersion" => Ok(json!(concat!("nexus/", env!("CARGO_PKG_VERSION")))),
            "eth_blockNumber" => Ok(quantity(history.head())),
            "eth_accounts" => Ok(json!(self
                .dev
                .addresses()
                .into_iter()
                .map(addr)
                .collect::<Vec<_>>())),
            "eth_syncing" => Ok(json!(false)),
            "eth_gasPrice" => Ok(quantity(
                config.base_fee_wei + evm_bridge::eth::SUGGESTED_TIP_WEI,
            )),
            "eth_maxPriorityFeePerGas" => Ok(quantity(evm_bridge::eth::SUGGESTED_TIP_WEI)),
            "eth_feeHistory" => eth::fee_history(history, params, config.base_fee_wei),
            "eth_getBalance" => {
                let a = parse_address(arg(params, 0))?;
                let balance = self.at_block(
                    arg(params, 1),
                    |port| port.execution.evm().peek_account(a).balance,
                    |past, _| past.account(a).unwrap_or_default().balance,
                )?;
                Ok(quantity(balance))
            }
            "eth_getTransactionCount" => {
                let a = parse_address(arg(params, 0))?;
                if arg(params, 1).and_then(Value::as_str) == Some("pending") {
                    let nonce = self.execution.evm().peek_account(a).nonce;
                    return Ok(quantity(nonce + self.mempool.evm_pooled(&a) as u64));
                }
                let nonce = self.at_block(
                    arg(params, 1),
                    |port| port.execution.evm().peek_account(a).nonce,
                    |past, _| past.account(a).unwrap_or_default().nonce,
                )?;
                Ok(quantity(nonce))
            }
            "eth_getCode" => {
                let a = parse_address(arg(params, 0))?;
                let code = self.at_block(
                    arg(params, 1),
                    |port| port.code(a),
                    |past, _| {
                        let info = past.account(a).unwrap_or_default();
                        let code = past.code(info.code_hash);
                        code.map(|c| c.original_bytes().to_vec())
                            .unwrap_or_default()
                    },
                )?;
                Ok(data(&code))
            }
            "eth_getStorageAt" => {
                let a = parse_address(arg(params, 0))?;
                let slot = parse_quantity(arg(params, 1).ok_or_else(|| RpcError::params("slot"))?)?;
                let value = self.at_block(
                    arg(params, 2),
                    |port| port.storage(a, slot),
                    |past, _| past.storage(a, slot),
                )?;
                Ok(data(&value.to_be_bytes::<32>()))
            }
            "eth_getProof" => {
                let a = parse_address(arg(params, 0))?;
                let keys = eth::parse_storage_keys(arg(params, 1))?;
                self.proof(a, &keys, arg(params, 2))
            }
            "eth_getBlockByNumber" => {
                let n = block_number(history, arg(params, 0))?;
                let full = arg(params, 1).and_then(Value::as_bool).unwrap_or(false);
                Ok(history
                    .header(n)
                    .map_or(Value::Null, |h| block_json(history, h, full)))
            }
            "eth_getBlockByHash" => {
                let h = parse_hash(arg(params, 0))?;
                let full = arg(params, 1).and_then(Value::as_bool).unwrap_or(false);
                Ok(history
                    .header_by_hash(&h)
                    .map_or(Value::Null, |b| block_json(history, b, full)))
            }
            "eth_call" => {
                let request = call_request(arg(params, 0))?;
                let outcome = self.at_block_mut(
                    arg(params, 1),
                    |port| port.execution.call(&request),
                    |execution, past, header| execution.call_at(past, header, &request),
                )?;
                match outcome {
                    CallOutcome::Success { output, .. } => Ok(data(&output)),
                    failure => Err(call_error(failure)),
                }
            }
            "eth_estimateGas" => {
                let request = call_request(arg(params, 0))?;
                let estimate = self.at_block_mut(
                    arg(params, 1),
                    |port| port.execution.estimate_gas(&request),
                    |execution, past, header| execution.estimate_gas_at(past, header, &request),
                )?;
                estimate.map(quantity).map_err(call_error)
            }
            "eth_getTransactionReceipt" => Ok(eth::receipt(history, parse_hash(arg(params, 0))?)),
            "eth_getTransactionByHash" => {
                let h = parse_hash(arg(params, 0))?;
                if let Some(included) = eth::transaction(history, h) {
                    return Ok(included);
                }
                // Pending, as geth: block fields null.
                let Some(item) = self.mempool.evm_pooled_item(&h) else {
                    // Evicted unexecuted: an error naming why, as nexus-evm answers.
                    return match self.history.dropped(&h) {
                        Some((block, drop)) => Err(eth::dropped_error(*block, drop)),
                        None => Ok(Value::Null),
                    };
                };
                let senders = |h: &B256| self.mempool.evm_sender(h);
                Ok(self
                    .execution
                    .decode_evm_with(item.envelope(), &senders)
                    .map_or(Value::Null, |tx| eth::tx_json(&tx.record(0, 0), None, None)))
            }
            "eth_getLogs" => eth::logs(history, arg(params, 0)),
            other => self.read_more(other, params),
        }
    }

    /// Block contents by number or hash, the access list of a call, the node and the pool.
    fn read_more(&mut self, method: &str, params: &[Value]) -> Result<Value, RpcError> {
        let history = self.history;
        let by_number = || -> Result<Option<&BlockHeader>, RpcError> {
            Ok(history.header(block_number(history, arg(params, 0))?))
        };
        let by_hash = || eth::block_by_hash(history, arg(params, 0));
        match method {
            "eth_getBlockReceipts" => Ok(eth::block_receipts(
                history,
                eth::block_ref(history, arg(params, 0))?,
            )),
            "eth_getTransactionByBlockNumberAndIndex" => {
                eth::tx_at(history, by_number()?, arg(params, 1))
            }
            "eth_getTransactionByBlockHashAndIndex" => {
                eth::tx_at(history, by_hash()?, arg(params, 1))
            }
            "eth_getBlockTransactionCountByNumber" => Ok(eth::tx_count(by_number()?)),
            "eth_getBlockTransactionCountByHash" => Ok(eth::tx_count(by_hash()?)),
            "eth_getUncleCountByBlockNumber" => Ok(eth::uncle_count(by_number()?)),
            "eth_getUncleCountByBlockHash" => Ok(eth::uncle_count(by_hash()?)),
            // Blocks have no ommers.
            "eth_getUncleByBlockNumberAndIndex" | "eth_getUncleByBlockHashAndIndex" => {
                Ok(Value::Null)
            }
            "eth_createAccessList" => {
                let request = call_request(arg(params, 0))?;
                state_at(history, arg(params, 1))?;
                let (list, outcome) = self.execution.create_access_list(&request);
                Ok(eth::created_access_list(&list, outcome))
            }
            "eth_coinbase" => Ok(addr(self.execution.evm().config().coinbase)),
            "net_listening" => Ok(json!(true)),
            "net_peerCount" => Ok(quantity(self.peers as u64)),
            "web3_sha3" => {
                let input = arg(params, 0).ok_or_else(|| RpcError::params("expected data"))?;
                Ok(hash(keccak256(parse_bytes(input)?)))
            }
            "txpool_status" => Ok(eth::txpool_status(self.mempool.evm_len())),
            "txpool_content" => Ok(eth::txpool_content(&self.pooled())),
            other => self.sign_or_trace(other, params),
        }
    }

    /// The development signing methods and the tracers.
    fn sign_or_trace(&mut self, method: &str, params: &[Value]) -> Result<Value, RpcError> {
        match method {
            "eth_sign" => {
                let message = dev_sign::message_bytes(arg(params, 1))?;
                self.dev
                    .sign_message(parse_address(arg(params, 0))?, &message)
            }
            "personal_sign" => {
                let message = dev_sign::message_bytes(arg(params, 0))?;
                self.dev
                    .sign_message(parse_address(arg(params, 1))?, &message)
            }
            "eth_signTypedData_v4" => {
                let typed =
                    arg(params, 1).ok_or_else(|| RpcError::params("expected typed data"))?;
                self.dev
                    .sign_typed_data(parse_address(arg(params, 0))?, typed)
            }
            "debug_traceTransaction" => self.trace_transaction(params),
            "debug_traceCall" => self.trace_call(params),
            "debug_traceBlockByNumber" | "debug_traceBlockByHash" => self.trace_block(params),
            other => Err(eth::no_method(other)),
        }
    }

    /// `debug_traceTransaction(hash, options?)`: its block re-executed on the state before
    /// it, up to the transaction, which is traced.
    fn trace_transaction(&self, params: &[Value]) -> Result<Value, RpcError> {
        let h = parse_hash(arg(params, 0))?;
        let tracer = eth::tracer(arg(params, 1))?;
        let history = self.history;
        let (record, _) = history
            .tx(&h)
            .ok_or_else(|| RpcError::server(format!("transaction {h:#x} not found")))?;
        let header = history
            .header(record.block_number)
            .expect("a remembered tx's block is");
        let (txs, before) = self.replay_inputs(header)?;
        let block = BlockReplay {
            header,
            credits: history.credits(header.number),
            txs: &txs,
        };
        let index = usize::try_from(record.index).expect("an index fits");
        let trace = self.execution.trace_in_block(&before, block, index, tracer);
        trace_json(trace.map_err(eth::trace_error)?)
    }

    /// What re-executing a remembered block needs besides its header and credits: its
    /// transactions, and the EVM state before it (a state-window error beyond the window).
    fn replay_inputs(
        &self,
        header: &'a BlockHeader,
    ) -> Result<(Vec<&'a TxRecord>, PastState<'_>), RpcError> {
        let history: &'a EthHistory = self.history;
        let txs: Vec<&TxRecord> = header
            .tx_hashes
            .iter()
            .map(|t| history.tx(t).map(|(record, _)| record))
            .collect::<Option<_>>()
            .expect("a remembered block's transactions are");
        let db = self.execution.evm().db();
        let before = history.state().at(db, history.head(), header.number - 1);
        Ok((txs, before.map_err(|e| state_error(history, e.block))?))
    }

    /// `debug_traceBlockByNumber(block, options?)` and `debug_traceBlockByHash(hash,
    /// options?)`: the block re-executed once on the state before it, every transaction
    /// traced, as geth's `[{txHash, result}]` (`{txHash, error}` for one that cannot be).
    fn trace_block(&self, params: &[Value]) -> Result<Value, RpcError> {
        let history: &EthHistory = self.history;
        let named = arg(params, 0);
        let header = eth::block_ref(history, named)?.ok_or_else(|| {
            let named = named.map_or_else(|| "null".to_string(), Value::to_string);
            RpcError::server(format!("block not found: {named}"))
        })?;
        let tracer = eth::tracer(arg(params, 1))?;
        if header.tx_hashes.is_empty() {
            return Ok(Value::Array(Vec::new()));
        }
        let (txs, before) = self.replay_inputs(header)?;
        let block = BlockReplay {
            header,
            credits: history.credits(header.number),
            txs: &txs,
        };
        let traces = self.execution.trace_block(&before, block, tracer);
        let results = header.tx_hashes.iter().zip(traces).map(|(hash, trace)| {
            match trace.map_err(eth::trace_error).and_then(trace_json) {
                Ok(result) => Ok(serde_json::json!({"txHash": hash, "result": result})),
                Err(e) if e.code == -32602 => Err(e),
                Err(e) => Ok(serde_json::json!({"txHash": hash, "error": e.message})),
            }
        });
        Ok(Value::Array(results.collect::<Result<_, _>>()?))
    }

    /// `eth_getProof(address, keys, block)`: at the head from the state tries, at a past
    /// block within the state window from the tries with the later blocks' changes laid
    /// over them (`StateCommitment::proof_at`), checked against that block's `stateRoot`.
    fn proof(
        &self,
        address: Address,
        keys: &[B256],
        tag: Option<&Value>,
    ) -> Result<Value, RpcError> {
        let evm = self.execution.evm();
        let Some(header) = self.state_block(tag)? else {
            return Ok(eth::proof_json(&evm.commitment().proof(address, keys)));
        };
        let history = self.history;
        let past = history.state().at(evm.db(), history.head(), header.number);
        let past = past.map_err(|e| state_error(history, e.block))?;
        let (root, proof) = evm.commitment().proof_at(&past, address, keys);
        if root != header.state_root {
            debug_assert_eq!(root, header.state_root, "the past trie is the block's");
            return Err(RpcError::server(format!(
                "the state trie of block {} could not be rebuilt (root {root:#x})",
                header.number
            )));
        }
        Ok(eth::proof_json(&proof))
    }

    /// `debug_traceCall(call, block?, options?)`: the call traced on the state after the
    /// block (head or within the state window), as `eth_call` runs it.
    fn trace_call(&self, params: &[Value]) -> Result<Value, RpcError> {
        let request = call_request(arg(params, 0))?;
        let tracer = eth::tracer(arg(params, 2))?;
        let trace = match self.state_block(arg(params, 1))? {
            None => self.execution.trace_call(None, &request, tracer),
            Some(header) => {
                let db = self.execution.evm().db();
                let past = self
                    .history
                    .state()
                    .at(db, self.history.head(), header.number);
                let past = past.map_err(|e| state_error(self.history, e.block))?;
                self.execution
                    .trace_call(Some((&past, header)), &request, tracer)
            }
        };
        trace_json(trace.map_err(eth::trace_error)?)
    }

    /// The block a state query names (number, tag, hash or EIP-1898 object): `None` for the
    /// head, else its header; a block not executed yet is `header not found`.
    fn state_block(&self, tag: Option<&Value>) -> Result<Option<&'a BlockHeader>, RpcError> {
        let history: &'a EthHistory = self.history;
        let Some(header) = eth::block_ref(history, tag)? else {
            let n = block_number(history, tag).unwrap_or(u64::MAX);
            if n > history.head() {
                return Err(RpcError::server(format!("header not found: block {n}")));
            }
            return Err(state_error(history, n));
        };
        Ok((header.number != history.head()).then_some(header))
    }

    /// A read of the state at the block `tag` names: `head` on the executed state, `past` on
    /// the state after a past block within the window.
    fn at_block<T>(
        &self,
        tag: Option<&Value>,
        head: impl FnOnce(&Self) -> T,
        past: impl FnOnce(&PastState<'_>, &BlockHeader) -> T,
    ) -> Result<T, RpcError> {
        let Some(header) = self.state_block(tag)? else {
            return Ok(head(self));
        };
        let db = self.execution.evm().db();
        let state = self.history.state();
        let at = state.at(db, self.history.head(), header.number);
        let at = at.map_err(|e| state_error(self.history, e.block))?;
        Ok(past(&at, header))
    }

    /// [`EthPort::at_block`] for calls (the head's call takes the execution mutably).
    fn at_block_mut<T>(
        &mut self,
        tag: Option<&Value>,
        head: impl FnOnce(&mut Self) -> T,
        past: impl FnOnce(&Execution, &PastState<'_>, &BlockHeader) -> T,
    ) -> Result<T, RpcError> {
        let Some(header) = self.state_block(tag)? else {
            return Ok(head(self));
        };
        let execution: &Execution = self.execution;
        let at = self
            .history
            .state()
            .at(execution.evm().db(), self.history.head(), header.number);
        let at = at.map_err(|e| state_error(self.history, e.block))?;
        Ok(past(execution, &at, header))
    }

    /// The pool's EVM transactions in arrival order, as pending records (senders from the
    /// pool's cache).
    fn pooled(&self) -> Vec<TxRecord> {
        let chain_id = self.execution.evm().config().chain_id;
        let senders = |h: &B256| self.mempool.evm_sender(h);
        self.mempool
            .evm_pooled_items()
            .filter_map(|item| SignedTx::decode_with(item.envelope(), chain_id, senders).ok())
            .map(|tx| tx.record(0, 0))
            .collect()
    }

    /// An account's code, read without touching the EVM's cache (a read must not change
    /// what a snapshot holds).
    fn code(&self, a: Address) -> Vec<u8> {
        let db = self.execution.evm().db();
        db.cache
            .accounts
            .get(&a)
            .and_then(|account| db.cache.contracts.get(&account.info.code_hash))
            .map(|code| code.original_bytes().to_vec())
            .unwrap_or_default()
    }

    /// A storage slot, read as [`EthPort::code`].
    fn storage(&self, a: Address, slot: U256) -> U256 {
        self.execution
            .evm()
            .db()
            .cache
            .accounts
            .get(&a)
            .and_then(|account| account.storage.get(&slot).copied())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evm_bridge::executor::{EvmConfig, Executor, Genesis};

    /// An execution of chain `[1; 32]` with no Core genesis and this EVM genesis.
    fn execution_with(evm: execution::EvmGenesis) -> Execution {
        let config = execution::ExecutionConfig {
            chain_id: [1; 32],
            faucets: Vec::new(),
            feeders: Vec::new(),
            engine: engine::EngineConfig::default(),
            evm,
            funding_interval_s: 0,
            core_gas_limit: execution::DEFAULT_CORE_GAS_LIMIT,
        };
        Execution::new(config, &[])
    }

    #[test]
    fn the_history_keeps_the_newest_blocks_by_number_and_hash() {
        let (_, genesis) = Executor::genesis(EvmConfig::default(), &Genesis::default());
        let mut history = EthHistory::new(&genesis.header, 3, 2);
        let block = |n: u64| {
            let mut out = genesis.clone();
            out.header.number = n;
            out.header.hash = B256::with_last_byte(n as u8);
            out
        };
        for n in 1..=5 {
            history.push(&block(n), StateUndo::default());
        }
        assert_eq!((history.oldest(), history.head()), (3, 5));
        assert!(history.header(2).is_none() && history.header(6).is_none());
        assert_eq!(history.header(4).map(|h| h.number), Some(4));
        assert!(history.header_by_hash(&B256::with_last_byte(2)).is_none());
        assert_eq!(
            history
                .header_by_hash(&B256::with_last_byte(5))
                .map(|h| h.number),
            Some(5)
        );
        assert!(block_number(&history, None).is_ok_and(|n| n == 5));
        assert!(
            state_at(&history, Some(&json!("0x4"))).is_err(),
            "head only"
        );
    }
    /// A subscriber that does not read is dropped once its buffer is full, never waited
    /// for: the host's pushes return at once, the subscription's receiver gets what fit and
    /// then sees the end (the server then closes the subscription with an error).
    #[test]
    fn a_subscriber_that_falls_behind_is_dropped() {
        let (_, genesis) = Executor::genesis(EvmConfig::default(), &Genesis::default());
        let history = EthHistory::new(&genesis.header, 2, 1);
        let mut feeds = EthFeeds::new();
        let (slow, mut behind) = mpsc::channel(2);
        let (fast, mut reader) = mpsc::channel(8);
        let pending = [json!("newPendingTransactions")];
        assert!(feeds.subscribe(&history, &pending, slow).is_ok());
        assert!(feeds.subscribe(&history, &pending, fast).is_ok());
        for n in 1..=3 {
            feeds.on_pending(B256::with_last_byte(n));
            assert!(reader.try_recv().is_ok(), "the reading subscriber keeps up");
        }
        assert_eq!(feeds.subscriptions(), 1, "the slow one is dropped");
        assert_eq!(behind.try_recv().ok(), Some(hash(B256::with_last_byte(1))));
        assert_eq!(behind.try_recv().ok(), Some(hash(B256::with_last_byte(2))));
        assert_eq!(
            behind.try_recv(),
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected)
        );
        let unknown = feeds.subscribe(&history, &[json!("syncing")], mpsc::channel(1).0);
        assert_eq!(unknown.map_err(|e| e.code), Err(-32602));
    }

    /// A transaction the pool evicted is reported by `eth_getTransactionByHash` with its
    /// reason (not `null`, which would read as never sent); the newest `capacity` are kept.
    #[test]
    fn an_evicted_transaction_is_answered_with_its_reason() {
        let (_, genesis) = Executor::genesis(EvmConfig::default(), &Genesis::default());
        let mut history = EthHistory::new(&genesis.header, 2, 1);
        let drop = |n: u8| DroppedTx {
            hash: B256::with_last_byte(n),
            sender: Address::with_last_byte(9),
            nonce: 4,
            reason: evm_bridge::executor::TxError::Nonce {
                expected: 5,
                got: 4,
            },
        };
        for n in 1..=3 {
            history.note_dropped(7, drop(n));
        }
        assert!(
            history.dropped(&B256::with_last_byte(1)).is_none(),
            "oldest forgotten"
        );
        let mut execution = execution_with(Default::default());
        let mut mempool = Mempool::new(mempool::MempoolConfig::default());
        let mut port = EthPort {
            execution: &mut execution,
            mempool: &mut mempool,
            history: &history,
            peers: 0,
            feeds: &mut EthFeeds::new(),
            now_ms: 0,
            dev: &DevAccounts::default(),
            within_rate: &mut |_| true,
        };
        // No development accounts: nothing listed, nothing signed.
        assert_eq!(port.handle("eth_accounts", &[]).0.ok(), Some(json!([])));
        let someone = json!(format!("{:#x}", Address::with_last_byte(9)));
        let (signed, _) = port.handle("eth_sign", &[someone, json!("0x01")]);
        assert!(signed.is_err_and(|e| e.message.starts_with("unknown account")));
        let hash = json!(format!("{:#x}", B256::with_last_byte(3)));
        let (answer, _) = port.handle("eth_getTransactionByHash", &[hash]);
        let error = answer.expect_err("an error naming the reason");
        assert!(
            error.message.contains("dropped from block 7"),
            "{}",
            error.message
        );
        let unknown = json!(format!("{:#x}", B256::with_last_byte(1)));
        let (answer, _) = port.handle("eth_getTransactionByHash", &[unknown]);
        assert_eq!(answer.ok(), Some(Value::Null));
    }

    /// `txpool_status` and `txpool_content` show a transaction admitted through the port
    /// (pending, by checksummed sender and decimal nonce, block fields `null`) until its
    /// block is executed.
    #[test]
    fn the_pool_methods_show_an_admitted_transaction() {
        use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
        use alloy_eips::eip2718::Encodable2718;
        let key = k256::ecdsa::SigningKey::from_slice(&[7; 32]).expect("a key");
        let point = key.verifying_key().to_encoded_point(false);
        let sender = Address::from_slice(&keccak256(&point.as_bytes()[1..])[12..]);
        let evm = execution::EvmGenesis {
            alloc: vec![(sender, U256::from(10u64).pow(U256::from(20u64)))],
            ..Default::default()
        };
        let mut execution = execution_with(evm);
        let tx = TxEip1559 {
            chain_id: execution.evm().config().chain_id,
            nonce: 0,
            gas_limit: 21_000,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 1,
            to: alloy_primitives::TxKind::Call(Address::with_last_byte(1)),
            value: U256::from(3u64),
            access_list: Default::default(),
            input: Default::default(),
        };
        let (sig, recid) = key
            .sign_prehash_recoverable(tx.signature_hash().as_slice())
            .expect("signs");
        let signed = tx.into_signed(alloy_primitives::Signature::from((sig, recid)));
        let raw = TxEnvelope::from(signed).encoded_2718();
        let (_, genesis) = Executor::genesis(EvmConfig::default(), &Genesis::default());
        let history = EthHistory::new(&genesis.header, 2, 1);
        let mut mempool = Mempool::new(mempool::MempoolConfig::default());
        // The account's rate is used up for the first send, not for the second; it is
        // asked with the recovered sender.
        let mut asked = Vec::new();
        let mut within_rate = |from: Address| {
            asked.push(from);
            asked.len() > 1
        };
        let mut port = EthPort {
            execution: &mut execution,
            mempool: &mut mempool,
            history: &history,
            peers: 0,
            feeds: &mut EthFeeds::new(),
            now_ms: 0,
            dev: &DevAccounts::default(),
            within_rate: &mut within_rate,
        };
        let sent = json!(format!("0x{}", alloy_primitives::hex::encode(&raw)));
        let (limited, item) = port.handle("eth_sendRawTransaction", std::slice::from_ref(&sent));
        assert!(item.is_none(), "refused: {limited:?}");
        let message = limited.expect_err("over the rate").message;
        assert!(message.starts_with("account_rate_limited"), "{message}");
        let (status, _) = port.handle("txpool_status", &[]);
        assert_eq!(
            status.ok(),
            Some(json!({"pending": "0x0", "queued": "0x0"}))
        );
        let (hash, item) = port.handle("eth_sendRawTransaction", &[sent]);
        assert!(item.is_some(), "admitted: {hash:?}");
        let (status, _) = port.handle("txpool_status", &[]);
        assert_eq!(
            status.ok(),
            Some(json!({"pending": "0x1", "queued": "0x0"}))
        );
        let (content, _) = port.handle("txpool_content", &[]);
        let content = content.expect("content");
        let pooled = &content["pending"][sender.to_checksum(None)]["0"];
        assert_eq!(pooled["hash"], hash.expect("a hash"), "{content}");
        assert_eq!(pooled["blockNumber"], Value::Null, "{content}");
        assert_eq!(pooled["value"], "0x3", "{content}");
        assert_eq!(content["queued"], json!({}));
        assert_eq!(asked, [sender, sender]);
    }
}
