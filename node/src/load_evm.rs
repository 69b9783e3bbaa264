//! The devnet's EVM load (`nexus devnet --evm-load transfer|order`, docs/perf.md, "EVM
//! load"): deterministic accounts funded at genesis, EIP-1559 transactions signed ahead and
//! sent with `eth_sendRawTransaction` to every validator's Ethereum JSON-RPC port, and their
//! receipts counted block by block.
//!
//! Account `i` has the secret [`load_key`]`(seed, i)` and holds [`LOAD_BALANCE`] wei from
//! genesis ([`crate::validator::DevnetConfig::evm_load_accounts`]). Transaction `j` is sent by
//! account `j mod accounts` with nonce `j / accounts`, so that consecutive transactions come
//! from different accounts and no sender's nonces serialize the load; each account sends to
//! one validator only (account `a` to validator `a mod validators`), so its nonces arrive in
//! order. `transfer`: 1 wei to the next account. `order`: the account's first transaction
//! deposits 1 ether into its Core account through CoreWriter (`depositToCore`), every later
//! one is a CoreWriter `placeOrder`: a GTC buy of 1 lot on the devnet's market at 1 to 100
//! ticks, order id = nonce (the book holds no asks, so every order rests).
//!
//! The client learns of inclusion from validator 0: for each of its `final` lines (the block
//! is executed and its receipts served from then on) it reads `eth_getBlockReceipts` of that
//! height and matches the hashes. Submit-to-receipt latency is from the send of the request
//! holding the transaction to the arrival of that `final` line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, Bytes, Signature, TxKind, B256, U256};
use k256::ecdsa::SigningKey;
use serde_json::{json, Value};

/// Wei each load account holds at genesis (1,000 ether).
pub const LOAD_BALANCE: U256 = U256::from_limbs([0x35c9_adc5_dea0_0000, 0x36, 0, 0]);
/// Gas limit of a transfer.
pub const TRANSFER_GAS: u64 = 21_000;
/// Gas limit of a CoreWriter deposit or order (each uses about 52,000: 21,000, calldata, and
/// CoreWriter's Core and cross-domain gas). The pool reserves the limit in the block's EVM
/// share, so it is kept tight: 250 orders fit the 15M share.
pub const ORDER_GAS: u64 = 60_000;
/// Wei each `order` account deposits into Core with its first transaction (1 ether: 10^6
/// Core units of the native asset).
pub const DEPOSIT_WEI: u64 = 1_000_000_000_000_000_000;
/// Most transactions in one JSON-RPC batch request.
pub const BATCH: usize = 64;
/// Max fee per gas of every load transaction (2 gwei; the base fee is 1 gwei).
const MAX_FEE: u128 = 2_000_000_000;

/// What the load's transactions do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EvmLoadKind {
    /// 1 wei to the next load account (21,000 gas).
    Transfer,
    /// CoreWriter `placeOrder` (after one `depositToCore` per account).
    Order,
}

impl EvmLoadKind {
    /// The name on the command line and in figures.
    pub fn name(self) -> &'static str {
        match self {
            EvmLoadKind::Transfer => "transfer",
            EvmLoadKind::Order => "order",
        }
    }
}

/// What every process derives the same EVM load from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvmLoadSpec {
    /// The devnet's seed (`order_seed`).
    pub seed: u64,
    /// Load accounts (funded at genesis).
    pub accounts: u64,
    /// What the transactions do.
    pub kind: EvmLoadKind,
    /// The EVM chain id.
    pub chain_id: u64,
}

/// One signed load transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvmTx {
    /// Its hash (keccak256 of the envelope).
    pub hash: B256,
    /// Its EIP-2718 envelope.
    pub raw: Vec<u8>,
}

/// The secp256k1 secret of load account `index`: `BLAKE3("nexus-devnet/v1/evm-load\0" ||
/// seed (u64 LE) || index (u64 LE))`.
pub fn load_key(seed: u64, index: u64) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"nexus-devnet/v1/evm-load\0");
    hasher.update(&seed.to_le_bytes());
    hasher.update(&index.to_le_bytes());
    *hasher.finalize().as_bytes()
}

/// The signing key of load account `index`.
fn signing_key(seed: u64, index: u64) -> SigningKey {
    // A BLAKE3 output is a valid secret except with probability ~2^-128.
    SigningKey::from_slice(&load_key(seed, index)).expect("a valid secp256k1 secret")
}

/// The address of a key (keccak256 of the public key's coordinates, last 20 bytes).
fn address_of(key: &SigningKey) -> Address {
    let point = key.verifying_key().to_encoded_point(false);
    Address::from_slice(&keccak256(&point.as_bytes()[1..])[12..])
}

/// The addresses of the first `count` load accounts.
pub fn load_addresses(seed: u64, count: u64) -> Vec<Address> {
    (0..count)
        .map(|i| address_of(&signing_key(seed, i)))
        .collect()
}

/// The 4-byte selector of a Solidity signature.
fn selector(signature: &str) -> [u8; 4] {
    let hash = keccak256(signature.as_bytes());
    [hash[0], hash[1], hash[2], hash[3]]
}

/// `n` as an ABI word.
fn word(n: u64) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[24..].copy_from_slice(&n.to_be_bytes());
    w
}

/// CoreWriter calldata of a GTC buy of 1 lot at `price` on the devnet's market.
fn place_order(oid: u64, price: u64) -> Vec<u8> {
    let mut out = selector("placeOrder(uint32,uint64,bool,uint64,uint64,uint8,bool)").to_vec();
    let args = [
        u64::from(crate::load::MARKET),
        oid,
        1, // buy
        price,
        1, // lots
        0, // GTC
        0, // not reduce-only
    ];
    for arg in args {
        out.extend_from_slice(&word(arg));
    }
    out
}

impl EvmLoadSpec {
    /// Every load account's signing key, by index.
    pub fn keys(&self) -> Vec<SigningKey> {
        (0..self.accounts.max(1))
            .map(|i| signing_key(self.seed, i))
            .collect()
    }

    /// The sender of transaction `j`.
    pub fn account(&self, j: u64) -> u64 {
        j % self.accounts.max(1)
    }

    /// Which of `targets` validators transaction `j` goes to (always the same one for an
    /// account, so that its nonces arrive in order).
    pub fn target(&self, j: u64, targets: usize) -> usize {
        (self.account(j) % targets.max(1) as u64) as usize
    }

    /// Transaction `j`, signed with `keys` ([`EvmLoadSpec::keys`]).
    pub fn transaction(&self, keys: &[SigningKey], j: u64) -> EvmTx {
        let accounts = self.accounts.max(1);
        let (account, nonce) = (j % accounts, j / accounts);
        let (to, value, gas, input) = match self.kind {
            EvmLoadKind::Transfer => {
                let next = address_of(&keys[((account + 1) % accounts) as usize]);
                (next, U256::from(1u64), TRANSFER_GAS, Vec::new())
            }
            EvmLoadKind::Order if nonce == 0 => (
                evm_core_writer(),
                U256::from(DEPOSIT_WEI),
                ORDER_GAS,
                selector("depositToCore()").to_vec(),
            ),
            EvmLoadKind::Order => (
                evm_core_writer(),
                U256::ZERO,
                ORDER_GAS,
                place_order(nonce, 1 + nonce % 100),
            ),
        };
        let tx = TxEip1559 {
            chain_id: self.chain_id,
            nonce,
            gas_limit: gas,
            max_fee_per_gas: MAX_FEE,
            max_priority_fee_per_gas: 1,
            to: TxKind::Call(to),
            value,
            access_list: Default::default(),
            input: Bytes::from(input),
        };
        let (signature, recovery) = keys[account as usize]
            .sign_prehash_recoverable(tx.signature_hash().as_slice())
            .expect("signs");
        let signed = tx.into_signed(Signature::from((signature, recovery)));
        let raw = TxEnvelope::from(signed).encoded_2718();
        EvmTx {
            hash: keccak256(&raw),
            raw,
        }
    }

    /// Transactions `0..count`, signed now.
    pub fn signed_ahead(&self, count: u64) -> Vec<EvmTx> {
        let keys = self.keys();
        (0..count).map(|j| self.transaction(&keys, j)).collect()
    }
}

/// CoreWriter's address.
fn evm_core_writer() -> Address {
    execution::evm::system::CORE_WRITER
}

// ---------------------------------------------------------------------------------------
// A keep-alive HTTP/1.1 JSON-RPC connection.

/// One keep-alive HTTP/1.1 connection to an Ethereum JSON-RPC port.
pub struct RpcConnection {
    addr: SocketAddr,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl RpcConnection {
    /// Connects to `addr`; every read waits at most 10 s.
    pub fn connect(addr: SocketAddr) -> io::Result<RpcConnection> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(RpcConnection {
            addr,
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Posts `body` (a call or a batch) and returns the JSON answer.
    pub fn call(&mut self, body: &Value) -> io::Result<Value> {
        let body = body.to_string();
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        self.writer.write_all(head.as_bytes())?;
        self.writer.write_all(body.as_bytes())?;
        let answer = self.read_body()?;
        serde_json::from_slice(&answer).map_err(io::Error::other)
    }

    /// Reads one response's head and body (`Content-Length` or chunked).
    fn read_body(&mut self) -> io::Result<Vec<u8>> {
        let (mut length, mut chunked) = (None, false);
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let lower = line.trim_end().to_ascii_lowercase();
            if lower.is_empty() {
                break;
            }
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse::<usize>().ok();
            }
            chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        }
        if chunked {
            return self.read_chunks();
        }
        let length = length.ok_or_else(|| io::Error::other("a response without a length"))?;
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok(body)
    }

    /// A chunked body.
    fn read_chunks(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(io::Error::other)?;
            let start = body.len();
            body.resize(start + size, 0);
            self.reader.read_exact(&mut body[start..])?;
            line.clear();
            self.reader.read_line(&mut line)?;
            if size == 0 {
                return Ok(body);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The client's figures.

/// What the EVM load client saw.
#[derive(Debug)]
pub struct EvmLoadStats {
    /// Transactions sent (in requests that reached a validator).
    pub sent: u64,
    /// Sent transactions seen in a block's receipts, once each.
    pub included: u64,
    /// Receipts of a sent transaction seen in a second block (must stay 0).
    pub duplicates: u64,
    /// Included transactions whose receipt has status 0.
    pub reverted: u64,
    /// EVM transactions in blocks that the client did not send (callbacks, others' ones).
    pub others: u64,
    /// Refusals of `eth_sendRawTransaction`, by message (before a `:`).
    pub refusals: BTreeMap<String, u64>,
    /// Requests that got no answer (a validator overloaded past the 10 s read timeout, or
    /// gone): their transactions count as sent, and are included or missing.
    pub failed_requests: u64,
    /// Blocks whose receipts were read.
    pub blocks: u64,
    /// In the measured window: blocks seen, and load transactions included in them.
    pub window_blocks: u64,
    /// Load transactions included in the window's blocks.
    pub window_included: u64,
    /// Load transactions per block of the window.
    pub per_block: hdrhistogram::Histogram<u64>,
    /// Submit to receipt (µs) of every transaction sent in the window.
    pub latency_us: hdrhistogram::Histogram<u64>,
}

impl Default for EvmLoadStats {
    fn default() -> Self {
        EvmLoadStats {
            sent: 0,
            included: 0,
            duplicates: 0,
            reverted: 0,
            others: 0,
            refusals: BTreeMap::new(),
            failed_requests: 0,
            blocks: 0,
            window_blocks: 0,
            window_included: 0,
            per_block: hdrhistogram::Histogram::new_with_bounds(1, 1 << 20, 2).expect("bounds"),
            latency_us: hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 2)
                .expect("bounds"),
        }
    }
}

impl EvmLoadStats {
    /// Refused transactions.
    pub fn refused(&self) -> u64 {
        self.refusals.values().sum()
    }

    /// Sent transactions neither included nor refused (yet).
    pub fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.included + self.refused())
    }

    /// The figures as JSON (latencies in ms).
    pub fn to_json(&self) -> Value {
        let ms = |q: f64| match self.latency_us.is_empty() {
            true => Value::Null,
            false => json!(self.latency_us.value_at_quantile(q) as f64 / 1_000.0),
        };
        let per_block = |q: f64| self.per_block.value_at_quantile(q);
        json!({
            "sent": self.sent, "included": self.included, "duplicates": self.duplicates,
            "reverted": self.reverted, "refusals": self.refusals,
            "failed_requests": self.failed_requests,
            "missing": self.in_flight(), "others_in_blocks": self.others,
            "blocks": self.blocks, "window_blocks": self.window_blocks,
            "window_included": self.window_included,
            "txs_per_block": {"mean": self.window_included.checked_div(self.window_blocks),
                "p50": per_block(0.5), "max": per_block(1.0)},
            "submit_to_receipt_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": ms(1.0)},
        })
    }
}

/// The client's shared state: send times, what was included, figures.
#[derive(Default)]
struct Tracker {
    sent_at: HashMap<B256, Instant>,
    included: HashSet<B256>,
    /// From when transactions and blocks count in the window; `None` before it.
    window_from: Option<Instant>,
    /// Blocks seen after this do not count in the window (sending stopped).
    window_to: Option<Instant>,
    stats: EvmLoadStats,
}

impl Tracker {
    /// Records a block's receipts, seen at `seen`.
    fn on_receipts(&mut self, receipts: &[Value], seen: Instant) {
        let in_window = self.window_from.is_some_and(|from| seen >= from)
            && self.window_to.is_none_or(|to| seen <= to);
        let mut mine = 0u64;
        for receipt in receipts {
            let Some(hash) = receipt["transactionHash"]
                .as_str()
                .and_then(|h| h.parse::<B256>().ok())
            else {
                continue;
            };
            let Some(&sent) = self.sent_at.get(&hash) else {
                self.stats.others += 1;
                continue;
            };
            if !self.included.insert(hash) {
                self.stats.duplicates += 1;
                continue;
            }
            mine += 1;
            self.stats.included += 1;
            self.stats.reverted += u64::from(receipt["status"] != "0x1");
            if self.window_from.is_some_and(|from| sent >= from) {
                let us = seen.saturating_duration_since(sent).as_micros() as u64;
                let _ = self.stats.latency_us.record(us.max(1));
            }
        }
        self.stats.blocks += 1;
        if in_window {
            self.stats.window_blocks += 1;
            self.stats.window_included += mine;
            let _ = self.stats.per_block.record(mine);
        }
    }
}

type Shared = Arc<Mutex<Tracker>>;

// ---------------------------------------------------------------------------------------
// The client.

/// A running EVM load: sender threads (one per validator) and the receipt reader.
pub struct EvmLoad {
    spec: EvmLoadSpec,
    rate_per_s: u64,
    ahead: Arc<Vec<EvmTx>>,
    shared: Shared,
    stop: Arc<AtomicBool>,
    senders: Vec<std::thread::JoinHandle<io::Result<()>>>,
    blocks: Option<mpsc::Sender<(u64, Instant)>>,
    reader: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl EvmLoad {
    /// A load of `spec` at `rate_per_s` transactions a second; `ahead` holds transactions
    /// `0..ahead.len()` signed already (the rest are signed as they are sent).
    pub fn new(spec: EvmLoadSpec, rate_per_s: u64, ahead: Vec<EvmTx>) -> EvmLoad {
        EvmLoad {
            spec,
            rate_per_s,
            ahead: Arc::new(ahead),
            shared: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
            senders: Vec::new(),
            blocks: None,
            reader: None,
        }
    }

    /// Whether it has started.
    pub fn started(&self) -> bool {
        self.reader.is_some()
    }

    /// Starts sending to `targets` (the validators' JSON-RPC ports, by index) and reading
    /// receipts from `targets[0]`.
    pub fn start(&mut self, targets: &[SocketAddr]) -> io::Result<()> {
        let Some(&first) = targets.first() else {
            return Ok(());
        };
        let start = Instant::now();
        for (t, &addr) in targets.iter().enumerate() {
            let sender = Sender {
                spec: self.spec,
                ahead: self.ahead.clone(),
                target: t,
                targets: targets.len(),
                addr,
                interval_ns: 1_000_000_000 / self.rate_per_s.max(1),
                start,
                stop: self.stop.clone(),
                shared: self.shared.clone(),
            };
            self.senders.push(
                std::thread::Builder::new()
                    .name(format!("nexus-evm-load-{t}"))
                    .spawn(move || sender.run())?,
            );
        }
        let (tx, rx) = mpsc::channel();
        let shared = self.shared.clone();
        self.reader = Some(
            std::thread::Builder::new()
                .name("nexus-evm-receipts".into())
                .spawn(move || read_receipts(first, rx, shared))?,
        );
        self.blocks = Some(tx);
        Ok(())
    }

    /// Validator 0 logged block `height` as executed at `seen`.
    pub fn on_block(&self, height: u64, seen: Instant) {
        if let Some(blocks) = &self.blocks {
            let _ = blocks.send((height, seen));
        }
    }

    /// The measured window starts now: transactions sent from now on have their latency
    /// recorded, and blocks seen from now on count.
    pub fn begin_window(&self) {
        if let Ok(mut t) = self.shared.lock() {
            t.window_from = Some(Instant::now());
        }
    }

    /// Stops sending; the window ends now (receipts are still read).
    pub fn stop_sending(&mut self) -> io::Result<()> {
        if let Ok(mut t) = self.shared.lock() {
            t.window_to.get_or_insert_with(Instant::now);
        }
        self.stop.store(true, Ordering::Relaxed);
        let mut result = Ok(());
        for sender in self.senders.drain(..) {
            match sender.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(io::Error::other("an EVM load sender panicked")),
            }
        }
        result
    }

    /// Sent transactions neither included nor refused yet.
    pub fn in_flight(&self) -> u64 {
        self.shared.lock().map_or(0, |t| t.stats.in_flight())
    }

    /// Stops (if still sending) and returns the figures (JSON) and the window's length.
    pub fn finish(&mut self) -> (Value, Option<String>, f64) {
        let failed = self.stop_sending().err().map(|e| format!("EVM load: {e}"));
        self.blocks = None;
        let read = self.reader.take().map(|r| r.join());
        let failed = failed.or(match read {
            Some(Ok(Err(e))) => Some(format!("EVM receipts: {e}")),
            Some(Err(_)) => Some("the EVM receipt reader panicked".into()),
            _ => None,
        });
        let t = self.shared.lock().expect("tracker");
        let window = match (t.window_from, t.window_to) {
            (Some(from), Some(to)) => to.saturating_duration_since(from).as_secs_f64(),
            _ => 0.0,
        };
        let mut figures = t.stats.to_json();
        figures["kind"] = json!(self.spec.kind.name());
        figures["accounts"] = json!(self.spec.accounts);
        figures["offered_txs_per_s"] = json!(self.rate_per_s);
        figures["window_s"] = json!(window);
        let per_s = match window > 0.0 {
            true => (t.stats.window_included as f64 / window).round(),
            false => 0.0,
        };
        figures["included_txs_per_s"] = json!(per_s);
        (figures, failed, window)
    }
}

/// One sender thread: the transactions of the accounts of validator `target`, at their
/// due times, in batches.
struct Sender {
    spec: EvmLoadSpec,
    ahead: Arc<Vec<EvmTx>>,
    target: usize,
    targets: usize,
    addr: SocketAddr,
    interval_ns: u64,
    start: Instant,
    stop: Arc<AtomicBool>,
    shared: Shared,
}

impl Sender {
    fn run(self) -> io::Result<()> {
        let keys = self.spec.keys();
        let mut connection = Some(RpcConnection::connect(self.addr)?);
        let mut j = 0u64;
        let mut batch: Vec<EvmTx> = Vec::with_capacity(BATCH);
        while !self.stop.load(Ordering::Relaxed) {
            let due = self.start.elapsed().as_nanos() as u64 / self.interval_ns + 1;
            while j < due && batch.len() < BATCH {
                if self.spec.target(j, self.targets) == self.target {
                    batch.push(match self.ahead.get(j as usize) {
                        Some(tx) => tx.clone(),
                        None => self.spec.transaction(&keys, j),
                    });
                }
                j += 1;
            }
            if batch.is_empty() {
                let next = self.start + Duration::from_nanos(j * self.interval_ns);
                let wait = next.saturating_duration_since(Instant::now());
                std::thread::sleep(wait.min(Duration::from_millis(5)));
                continue;
            }
            connection = self.send(connection, &batch);
            batch.clear();
        }
        Ok(())
    }

    /// Sends one batch and records the refusals; a request without an answer is counted
    /// and the connection opened again (for the next batch).
    fn send(&self, connection: Option<RpcConnection>, batch: &[EvmTx]) -> Option<RpcConnection> {
        let connection = connection.or_else(|| RpcConnection::connect(self.addr).ok());
        let answered = connection.and_then(|mut c| self.call(&mut c, batch).ok().map(|()| c));
        if answered.is_none() {
            self.shared.lock().expect("tracker").stats.failed_requests += 1;
        }
        answered
    }

    /// One batch's request and its refusals.
    fn call(&self, connection: &mut RpcConnection, batch: &[EvmTx]) -> io::Result<()> {
        let calls: Vec<Value> = batch
            .iter()
            .enumerate()
            .map(|(id, tx)| {
                json!({"jsonrpc": "2.0", "id": id, "method": "eth_sendRawTransaction",
                    "params": [format!("0x{}", alloy_primitives::hex::encode(&tx.raw))]})
            })
            .collect();
        let now = Instant::now();
        {
            let mut t = self.shared.lock().expect("tracker");
            for tx in batch {
                t.sent_at.insert(tx.hash, now);
            }
            t.stats.sent += batch.len() as u64;
        }
        let answers = connection.call(&Value::Array(calls))?;
        let answers = answers.as_array().cloned().unwrap_or_default();
        let mut t = self.shared.lock().expect("tracker");
        for answer in answers {
            let Some(message) = answer["error"]["message"].as_str() else {
                continue;
            };
            let code = message.split(':').next().unwrap_or(message).to_string();
            *t.stats.refusals.entry(code).or_default() += 1;
        }
        Ok(())
    }
}

/// Reads the receipts of each block validator 0 executed, in order.
fn read_receipts(
    addr: SocketAddr,
    blocks: mpsc::Receiver<(u64, Instant)>,
    shared: Shared,
) -> io::Result<()> {
    let mut connection = RpcConnection::connect(addr)?;
    for (height, seen) in blocks {
        let mut receipts = block_receipts(&mut connection, height);
        // A validator overloaded past the read timeout: once more on a new connection.
        if receipts.is_err() {
            connection = RpcConnection::connect(addr)?;
            receipts = block_receipts(&mut connection, height);
        }
        let receipts = receipts?;
        shared.lock().expect("tracker").on_receipts(&receipts, seen);
    }
    Ok(())
}

/// `eth_getBlockReceipts` of `height` (asked again for up to a second while the block is
/// not served yet).
fn block_receipts(connection: &mut RpcConnection, height: u64) -> io::Result<Vec<Value>> {
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockReceipts",
        "params": [format!("{height:#x}")]});
    for _ in 0..500 {
        let answer = connection.call(&call)?;
        if let Some(receipts) = answer["result"].as_array() {
            return Ok(receipts.clone());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Err(io::Error::other(format!("no receipts of block {height}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: EvmLoadKind) -> EvmLoadSpec {
        EvmLoadSpec {
            seed: 7,
            accounts: 3,
            kind,
            chain_id: 0x4e58,
        }
    }

    #[test]
    fn the_load_balance_is_a_thousand_ether() {
        assert_eq!(
            LOAD_BALANCE,
            U256::from(1_000u64) * U256::from(10u64).pow(U256::from(18u64))
        );
    }

    #[test]
    fn transactions_go_round_the_accounts_with_their_nonces_and_each_account_to_one_validator() {
        let spec = spec(EvmLoadKind::Order);
        let keys = spec.keys();
        let addresses = load_addresses(7, 3);
        for j in 0..9u64 {
            let tx = spec.transaction(&keys, j);
            let decoded = execution::evm::executor::SignedTx::decode(&tx.raw, spec.chain_id)
                .expect("decodes");
            assert_eq!(decoded.hash, tx.hash);
            assert_eq!(decoded.sender, addresses[(j % 3) as usize]);
            use alloy_consensus::Transaction as _;
            assert_eq!(decoded.envelope.nonce(), j / 3);
            let deposit = j < 3;
            assert_eq!(decoded.envelope.value().is_zero(), !deposit);
            assert_eq!(spec.target(j, 2), spec.target(j + 3, 2));
        }
        assert_eq!(spec.signed_ahead(4)[3], spec.transaction(&keys, 3));
        let transfer = spec_transfer_to_next();
        assert_eq!(transfer, addresses[1]);
    }

    fn spec_transfer_to_next() -> Address {
        let spec = spec(EvmLoadKind::Transfer);
        let tx = spec.transaction(&spec.keys(), 0);
        let decoded = execution::evm::executor::SignedTx::decode(&tx.raw, 0x4e58).unwrap();
        use alloy_consensus::Transaction as _;
        decoded.envelope.to().expect("a call")
    }

    #[test]
    fn a_receipt_seen_twice_is_a_duplicate_and_latency_counts_from_the_window() {
        let mut tracker = Tracker::default();
        let before = Instant::now();
        let (a, b) = (B256::repeat_byte(1), B256::repeat_byte(2));
        tracker.sent_at.insert(a, before);
        tracker.window_from = Some(Instant::now());
        tracker.sent_at.insert(b, Instant::now());
        tracker.stats.sent = 2;
        let receipt = |h: B256, status: &str| json!({"transactionHash": h, "status": status});
        let seen = Instant::now();
        tracker.on_receipts(&[receipt(a, "0x1"), receipt(b, "0x0")], seen);
        tracker.on_receipts(&[receipt(a, "0x1"), receipt(B256::ZERO, "0x1")], seen);
        let s = &tracker.stats;
        assert_eq!(
            (s.included, s.duplicates, s.reverted, s.others),
            (2, 1, 1, 1)
        );
        assert_eq!((s.blocks, s.window_blocks, s.window_included), (2, 2, 2));
        assert_eq!(s.latency_us.len(), 1, "only b was sent in the window");
        assert_eq!(s.in_flight(), 0);
    }
}
