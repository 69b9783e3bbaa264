//! The devnet's deterministic load: a genesis of funded accounts whose keys derive from a
//! seed, and a stream of signed transactions any process can compute (docs/consensus.md,
//! "Validator host and devnet").
//!
//! Transaction `j` is signed by account `j mod accounts` (keys from the seed) with nonce
//! `genesis_time_ms + j`, and carries `bulk` actions: GTC limit orders within 50 ticks of a
//! mid price (one in ten priced through it: they trade), and, once the book has filled, every
//! second action cancels an order the same account placed `lag` transactions earlier, so the
//! book stays near a fixed size.
//!
//! With [`LoadSpec::resting_orders`] set, the stream is instead that many GTC orders placed
//! away from the mid (100 to 10,099 ticks from it, beyond anything the trading stream
//! reaches), so none trades and none is cancelled: a way to fill the book of a running
//! chain with signed orders ([`resting_transaction`]). Then the stream ends.

use ed25519_dalek::SigningKey;
use engine::{Command, SelfTradePrevention, Side, TimeInForce};
use serde_json::json;
use transactions::{account_id_of, Action, SignedTransaction, Transaction};

/// The one market's id (`BASE-QUOTE`, the genesis's first market).
pub const MARKET: u32 = 0;
/// The market's name in the genesis (JSON port, queries).
pub const MARKET_NAME: &str = "BASE-QUOTE";
const MID: i64 = 100_000;
/// Orders kept resting, roughly: cancels target orders this many orders back.
const RESTING: u64 = 2_000;

/// The parameters every process derives the same stream from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSpec {
    /// Seed of keys and prices.
    pub seed: u64,
    /// Trading accounts (funded at genesis).
    pub accounts: u64,
    /// Actions per transaction (1..=64).
    pub bulk: u32,
    /// The chain's id.
    pub chain_id: [u8; 32],
    /// The chain's genesis time: nonce of transaction `j` is this plus `j`.
    pub genesis_time_ms: u64,
    /// 0: the trading stream, without end. Else the stream places this many resting orders
    /// away from the mid ([`resting_transaction`]) and ends.
    pub resting_orders: u64,
}

impl LoadSpec {
    /// Transactions in the stream: `None` for the endless trading stream, else enough for
    /// [`LoadSpec::resting_orders`] in bulks of [`LoadSpec::bulk`].
    pub fn stream_len(&self) -> Option<u64> {
        (self.resting_orders > 0).then(|| {
            self.resting_orders
                .div_ceil(u64::from(self.bulk.clamp(1, 64)))
        })
    }
}

fn mix(seed: u64, k: u64) -> u64 {
    // SplitMix64 of (seed, k): a pure function, so any process can compute any order.
    let mut z = seed ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The signing key of trading account `index` (0-based).
pub fn account_key(seed: u64, index: u64) -> SigningKey {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"nexus-devnet/v1/account\0");
    hasher.update(&seed.to_le_bytes());
    hasher.update(&index.to_le_bytes());
    SigningKey::from_bytes(hasher.finalize().as_bytes())
}

/// A development chain's role keys: a faucet (signs deposits) and an oracle feeder.
#[derive(Clone, Debug)]
pub struct DevRoles {
    /// May sign `Deposit` actions.
    pub faucet: SigningKey,
    /// May sign `OraclePrice` actions.
    pub feeder: SigningKey,
}

impl DevRoles {
    /// The role keys of seed `seed` ([`role_key`]).
    pub fn new(seed: u64) -> DevRoles {
        DevRoles {
            faucet: role_key(seed, "faucet"),
            feeder: role_key(seed, "feeder"),
        }
    }
}

/// The development key of a role: `BLAKE3("nexus-devnet/v1/role\0" || seed (u64 LE) ||
/// role)` as an ed25519 seed.
pub fn role_key(seed: u64, role: &str) -> SigningKey {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"nexus-devnet/v1/role\0");
    hasher.update(&seed.to_le_bytes());
    hasher.update(role.as_bytes());
    SigningKey::from_bytes(hasher.finalize().as_bytes())
}

/// Every trading account's key, by index. Deriving a key costs a scalar multiplication
/// (about 10 µs); a validator asks for the same keys several times while it starts
/// (genesis, JSON port, gateway), so the last spec's keys are kept for the process.
pub fn account_keys(spec: &LoadSpec) -> Vec<SigningKey> {
    type Keys = Option<((u64, u64), Vec<SigningKey>)>;
    static LAST: std::sync::Mutex<Keys> = std::sync::Mutex::new(None);
    let which = (spec.seed, spec.accounts.max(1));
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, keys)) = last.as_ref().filter(|(k, _)| *k == which) {
        return keys.clone();
    }
    let keys: Vec<SigningKey> = (0..which.1).map(|i| account_key(which.0, i)).collect();
    *last = Some((which, keys.clone()));
    keys
}

/// The devnet's genesis as JSON Lines of the replay format (docs/replay.md): assets `BASE`
/// and `QUOTE` (no decimals: one unit per lot and per tick), the market `BASE-QUOTE` (maker
/// fee 2 bps, taker 5), and a deposit of both assets for every trading account (by account
/// id). Every validator's state and its JSON port's names come from these lines. The last
/// spec's lines are kept for the process (a validator reads them several times at start).
pub fn genesis_lines(spec: &LoadSpec) -> String {
    type Lines = Option<((u64, u64), String)>;
    static LAST: std::sync::Mutex<Lines> = std::sync::Mutex::new(None);
    let which = (spec.seed, spec.accounts);
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, lines)) = last.as_ref().filter(|(k, _)| *k == which) {
        return lines.clone();
    }
    let lines = build_genesis_lines(spec);
    *last = Some((which, lines.clone()));
    lines
}

/// [`genesis_lines`], computed.
fn build_genesis_lines(spec: &LoadSpec) -> String {
    let mut lines = vec![
        json!({"op": "asset", "asset": "BASE", "decimals": 0}),
        json!({"op": "asset", "asset": "QUOTE", "decimals": 0}),
        json!({"op": "market", "market": MARKET_NAME, "base": "BASE", "quote": "QUOTE",
            "tick": "1", "lot": "1", "min_qty": "1", "maker_fee_bps": 2, "taker_fee_bps": 5}),
    ];
    let amount = (i64::MAX / 4 / spec.accounts.max(1) as i64).to_string();
    for key in account_keys(spec) {
        let account = account_id_of(&key.verifying_key().to_bytes());
        for asset in ["BASE", "QUOTE"] {
            lines.push(json!({"op": "deposit", "account": account, "asset": asset,
                "amount": amount}));
        }
    }
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// The engine commands of [`genesis_lines`], in order.
pub fn genesis(spec: &LoadSpec) -> Vec<Command> {
    crate::genesis::translate_genesis(&genesis_lines(spec))
        .expect("the devnet genesis is valid")
        .1
}

/// Transactions back to the one whose orders transaction `j`'s cancels target: a multiple
/// of the account count (so the same account), about [`RESTING`] orders, and an odd number of
/// rounds of all accounts (with one action per transaction, rounds alternate between orders
/// and cancels, so a cancel round targets an order round).
fn lag(spec: &LoadSpec) -> u64 {
    let accounts = spec.accounts.max(1);
    let per_round = accounts * u64::from(spec.bulk.max(1));
    let rounds = RESTING.div_ceil(per_round).max(1);
    accounts * (rounds | 1)
}

/// Action `i` of transaction `j`.
fn action(spec: &LoadSpec, j: u64, i: u64) -> Action {
    let bulk = u64::from(spec.bulk.max(1));
    let lag = lag(spec);
    // Every second action cancels the order at the same place `lag` transactions earlier;
    // with one action per transaction, every second round of accounts does.
    let round = j / spec.accounts.max(1);
    let cancels = if bulk == 1 {
        round % 2 == 1
    } else {
        i % 2 == 1
    };
    if cancels && j >= lag {
        let target_i = if bulk == 1 { 0 } else { i - 1 };
        return Action::Cancel {
            market: MARKET,
            oid: (j - lag) * bulk + target_i,
        };
    }
    let k = j * bulk + i;
    let h = mix(spec.seed, k);
    let side = if (h >> 8) & 1 == 0 {
        Side::Buy
    } else {
        Side::Sell
    };
    let crossing = (h >> 9).is_multiple_of(10);
    let offset = 1 + ((h >> 16) % 50) as i64;
    let price = match (side, crossing) {
        (Side::Buy, false) => MID - offset,
        (Side::Buy, true) => MID + offset,
        (Side::Sell, false) => MID + offset - 1,
        (Side::Sell, true) => MID - offset,
    };
    Action::Place {
        market: MARKET,
        oid: k,
        side,
        price: Some(price),
        qty: 1 + ((h >> 24) % 10) as i64,
        tif: TimeInForce::Gtc,
        stp: SelfTradePrevention::CancelMaker,
        reduce_only: false,
    }
}

/// First order id of the resting stream: above any id the trading stream uses, so both can
/// run on the same accounts.
const RESTING_OID_BASE: u64 = 1 << 48;
/// Ticks between the mid and the nearest resting order (the trading stream stays within 50).
const RESTING_GAP: i64 = 100;
/// Price levels per side the resting orders spread over.
const RESTING_LEVELS: u64 = 10_000;

/// Resting order `k` of the stream: a GTC buy at `MID - 100 - x` or sell at `MID + 100 + x`
/// (`x` in 0..10,000 from the seed), 1 to 10 lots, order id `2^48 + k`.
fn resting_action(spec: &LoadSpec, k: u64) -> Action {
    let h = mix(spec.seed ^ 0x5245_5354, k);
    let offset = RESTING_GAP + ((h >> 16) % RESTING_LEVELS) as i64;
    let (side, price) = match (h >> 8) & 1 {
        0 => (Side::Buy, MID - offset),
        _ => (Side::Sell, MID + offset),
    };
    Action::Place {
        market: MARKET,
        oid: RESTING_OID_BASE + k,
        side,
        price: Some(price),
        qty: 1 + ((h >> 24) % 10) as i64,
        tif: TimeInForce::Gtc,
        stp: SelfTradePrevention::CancelMaker,
        reduce_only: false,
    }
}

/// Transaction `j` of the resting stream: resting orders `j * bulk` up to the next multiple
/// of `bulk` or [`LoadSpec::resting_orders`] (an empty list past the end).
pub fn resting_transaction(spec: &LoadSpec, j: u64) -> Vec<Action> {
    let bulk = u64::from(spec.bulk.clamp(1, 64));
    let end = ((j + 1) * bulk).min(spec.resting_orders);
    (j * bulk..end).map(|k| resting_action(spec, k)).collect()
}

/// Signed transaction `j` of the stream (`keys` from [`account_keys`]).
pub fn transaction(spec: &LoadSpec, keys: &[SigningKey], j: u64) -> SignedTransaction {
    let key = &keys[(j % keys.len() as u64) as usize];
    let actions = match spec.resting_orders {
        0 => (0..u64::from(spec.bulk.clamp(1, 64)))
            .map(|i| action(spec, j, i))
            .collect(),
        _ => resting_transaction(spec, j),
    };
    Transaction {
        chain_id: spec.chain_id,
        signer: key.verifying_key().to_bytes(),
        nonce: spec.genesis_time_ms + j,
        actions,
    }
    .sign(key)
}

/// The stream's transactions as a client takes them: the first ones signed before the run
/// (a benchmark's client signs on a machine of its own in practice; here it shares the
/// validators' cores, so signing ahead keeps its cost out of the measured window), the
/// rest signed as they are taken.
pub struct SignedStream {
    keys: Vec<SigningKey>,
    ahead: Vec<Option<SignedTransaction>>,
}

impl SignedStream {
    /// A stream signed as it is taken.
    pub fn new(spec: &LoadSpec) -> SignedStream {
        SignedStream {
            keys: account_keys(spec),
            ahead: Vec::new(),
        }
    }

    /// A stream whose first `count` transactions are signed now, on every core.
    pub fn signed_ahead(spec: &LoadSpec, count: u64) -> SignedStream {
        let count = spec.stream_len().map_or(count, |len| count.min(len));
        let keys = account_keys(spec);
        let threads = std::thread::available_parallelism().map_or(1, usize::from) as u64;
        let per_thread = count.div_ceil(threads.max(1));
        let ahead = std::thread::scope(|scope| {
            let parts: Vec<_> = (0..threads)
                .map(|t| {
                    let (from, to) = (t * per_thread, ((t + 1) * per_thread).min(count));
                    let keys = &keys;
                    scope.spawn(move || {
                        (from..to)
                            .map(|j| Some(transaction(spec, keys, j)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|part| part.join().expect("signing thread"))
                .collect()
        });
        SignedStream { keys, ahead }
    }

    /// Transaction `j` of the stream (each is taken once).
    fn take(&mut self, spec: &LoadSpec, j: u64) -> SignedTransaction {
        let ahead = usize::try_from(j).ok().and_then(|j| self.ahead.get_mut(j));
        match ahead.and_then(Option::take) {
            Some(tx) => tx,
            None => transaction(spec, &self.keys, j),
        }
    }

    /// The trading accounts' keys.
    fn keys(&self) -> &[SigningKey] {
        &self.keys
    }
}

/// What a load client saw, so far.
#[derive(Debug)]
pub struct LoadStats {
    /// Transactions sent.
    pub sent: u64,
    /// Orders (actions) sent.
    pub sent_orders: u64,
    /// `admitted` notices.
    pub admitted: u64,
    /// `finalized` notices, and the orders they finalized.
    pub finalized: u64,
    /// Orders of finalized transactions.
    pub finalized_orders: u64,
    /// `refused` and `evicted` notices by code name.
    pub refusals: std::collections::BTreeMap<&'static str, u64>,
    /// Send to `finalized`, microseconds, per transaction.
    pub finality_us: hdrhistogram::Histogram<u64>,
    /// Send to `admitted`, microseconds.
    pub admission_us: hdrhistogram::Histogram<u64>,
    /// `finalized` notices per target validator (index in the target list).
    pub finalized_by_target: Vec<u64>,
    /// Connections to a target that failed (it stopped or was killed); the client
    /// reconnects and sends to the others meanwhile.
    pub disconnects: u64,
    /// The highest height a `finalized` notice named.
    pub max_finalized_height: u64,
}

impl Default for LoadStats {
    fn default() -> Self {
        let histogram =
            || hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid bounds");
        LoadStats {
            sent: 0,
            sent_orders: 0,
            admitted: 0,
            finalized: 0,
            finalized_orders: 0,
            refusals: Default::default(),
            finality_us: histogram(),
            admission_us: histogram(),
            finalized_by_target: Vec::new(),
            disconnects: 0,
            max_finalized_height: 0,
        }
    }
}

impl LoadStats {
    /// The figures as one JSON object (latencies in ms).
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| {
            if h.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::json!(h.value_at_quantile(q) as f64 / 1_000.0)
            }
        };
        serde_json::json!({
            "sent_txs": self.sent, "sent_orders": self.sent_orders,
            "admitted": self.admitted, "finalized_txs": self.finalized,
            "finalized_orders": self.finalized_orders, "refusals": self.refusals,
            "finality_ms": {"p50": ms(&self.finality_us, 0.5), "p99": ms(&self.finality_us, 0.99),
                "max": ms(&self.finality_us, 1.0)},
            "admission_ms": {"p50": ms(&self.admission_us, 0.5), "p99": ms(&self.admission_us, 0.99)},
            "finalized_by_target": self.finalized_by_target, "disconnects": self.disconnects,
            "max_finalized_height": self.max_finalized_height,
        })
    }
}

/// Send times of transactions awaiting their notices, by hash.
type Pending = std::sync::Arc<
    std::sync::Mutex<
        std::collections::HashMap<transactions::TxHash, (std::time::Instant, u32, bool)>,
    >,
>;

/// One validator the client sends to.
struct Target {
    addr: std::net::SocketAddr,
    index: usize,
    writer: Option<std::io::BufWriter<std::net::TcpStream>>,
    retry_at: std::time::Instant,
}

impl Target {
    /// Connects (with a reader thread for its notices) if it is down and a retry is due.
    fn ensure(&mut self, pending: &Pending, stats: &Stats, stop: &Stop) -> bool {
        if self.writer.is_some() {
            return true;
        }
        let now = std::time::Instant::now();
        if now < self.retry_at {
            return false;
        }
        self.retry_at = now + std::time::Duration::from_millis(300);
        let timeout = std::time::Duration::from_millis(200);
        let Ok(stream) = std::net::TcpStream::connect_timeout(&self.addr, timeout) else {
            return false;
        };
        let _ = stream.set_nodelay(true);
        let Ok(reader) = stream.try_clone() else {
            return false;
        };
        let (pending, stats, stop, index) =
            (pending.clone(), stats.clone(), stop.clone(), self.index);
        let spawned = std::thread::Builder::new()
            .name("nexus-load-reader".into())
            .spawn(move || read_notices(reader, index, pending, stats, stop));
        if spawned.is_err() {
            return false;
        }
        self.writer = Some(std::io::BufWriter::with_capacity(1 << 16, stream));
        true
    }

    /// Writes a frame; on failure the target is down until a reconnect.
    fn send(&mut self, frame: &[u8], stats: &Stats) -> bool {
        use std::io::Write;
        let Some(writer) = self.writer.as_mut() else {
            return false;
        };
        if writer.write_all(frame).is_ok() {
            return true;
        }
        self.writer = None;
        stats.lock().expect("stats").disconnects += 1;
        false
    }

    fn flush(&mut self, stats: &Stats) {
        use std::io::Write;
        if let Some(writer) = self.writer.as_mut() {
            if writer.flush().is_err() {
                self.writer = None;
                stats.lock().expect("stats").disconnects += 1;
            }
        }
    }
}

type Stats = std::sync::Arc<std::sync::Mutex<LoadStats>>;
type Stop = std::sync::Arc<std::sync::atomic::AtomicBool>;

/// The open-loop schedule of a load: transaction `j` is due `j` intervals after the start.
struct Pace {
    start: std::time::Instant,
    interval_ns: u64,
}

impl Pace {
    /// `orders_per_s` orders a second in transactions of the spec's bulk.
    fn new(spec: &LoadSpec, orders_per_s: u64) -> Pace {
        let bulk = u64::from(spec.bulk.clamp(1, 64));
        let interval_ns = (1_000_000_000u64 * bulk)
            .checked_div(orders_per_s.max(1))
            .unwrap_or(1)
            .max(1);
        Pace {
            start: std::time::Instant::now(),
            interval_ns,
        }
    }

    /// How long to sleep (at most 5 ms at a time) before transaction `j` is due; `None`
    /// once it is.
    fn wait_before(&self, j: u64) -> Option<std::time::Duration> {
        let due = self.start + std::time::Duration::from_nanos(j * self.interval_ns);
        let now = std::time::Instant::now();
        (due > now).then(|| (due - now).min(std::time::Duration::from_millis(5)))
    }
}

/// Sends the signed stream to `targets` (round robin: a client of every validator), at
/// `orders_per_s` until `stop`, and counts the notices in `stats`. Transactions come from
/// `stream` (signed ahead, or as they are sent; if signing cannot keep up, they go as fast as
/// it can). A target that fails
/// (a validator stopped) is skipped and reconnected every 300 ms; its unanswered
/// transactions stay unanswered (the client may resend them: their nonces make a second
/// execution impossible).
pub fn drive(
    spec: &LoadSpec,
    targets: &[std::net::SocketAddr],
    orders_per_s: u64,
    stop: Stop,
    stats: Stats,
) -> std::io::Result<()> {
    drive_stream(
        spec,
        SignedStream::new(spec),
        targets,
        orders_per_s,
        stop,
        stats,
    )
}

/// [`drive`] with the transactions of `stream` (some signed ahead).
pub fn drive_stream(
    spec: &LoadSpec,
    mut stream: SignedStream,
    targets: &[std::net::SocketAddr],
    orders_per_s: u64,
    stop: Stop,
    stats: Stats,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    let pending: Pending = Default::default();
    stats.lock().expect("stats").finalized_by_target = vec![0; targets.len()];
    let mut targets: Vec<Target> = targets
        .iter()
        .enumerate()
        .map(|(index, &addr)| Target {
            addr,
            index,
            writer: None,
            retry_at: std::time::Instant::now(),
        })
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let pace = Pace::new(spec, orders_per_s);
    let mut j = 0u64;
    let end = spec.stream_len().unwrap_or(u64::MAX);
    while !stop.load(Ordering::Relaxed) && j < end {
        if let Some(wait) = pace.wait_before(j) {
            for target in &mut targets {
                target.flush(&stats);
            }
            std::thread::sleep(wait);
            continue;
        }
        let count = targets.len();
        let first = (j % count as u64) as usize;
        let live = (0..count)
            .map(|k| (first + k) % count)
            .find(|&t| targets[t].ensure(&pending, &stats, &stop));
        let Some(target) = live else {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        };
        let tx = stream.take(spec, j);
        let orders = tx.tx.actions.len() as u32;
        pending
            .lock()
            .expect("pending")
            .insert(tx.hash(), (std::time::Instant::now(), orders, false));
        if !targets[target].send(&txport::request_frame(&tx), &stats) {
            pending.lock().expect("pending").remove(&tx.hash());
            continue;
        }
        let mut counts = stats.lock().expect("stats");
        counts.sent += 1;
        counts.sent_orders += u64::from(orders);
        drop(counts);
        j += 1;
    }
    for target in &mut targets {
        target.flush(&stats);
    }
    Ok(())
}

fn read_notices(
    stream: std::net::TcpStream,
    target: usize,
    pending: Pending,
    stats: Stats,
    stop: Stop,
) {
    use std::io::Read;
    use txport::{code_name, Notice, NoticeKind, NOTICE_LEN};
    let mut reader = std::io::BufReader::with_capacity(1 << 16, stream);
    let mut bytes = [0u8; NOTICE_LEN];
    while reader.read_exact(&mut bytes).is_ok() {
        let Some(notice) = Notice::decode(&bytes) else {
            continue;
        };
        let now = std::time::Instant::now();
        let mut pending = pending.lock().expect("pending");
        let mut stats = stats.lock().expect("stats");
        match notice.kind {
            NoticeKind::Admitted => {
                if let Some(entry) = pending.get_mut(&notice.hash) {
                    entry.2 = true;
                    stats.admitted += 1;
                    let us = now.duration_since(entry.0).as_micros() as u64;
                    stats.admission_us.saturating_record(us.max(1));
                }
            }
            NoticeKind::Finalized => {
                if let Some((sent, orders, _)) = pending.remove(&notice.hash) {
                    stats.finalized += 1;
                    if let Some(count) = stats.finalized_by_target.get_mut(target) {
                        *count += 1;
                    }
                    stats.max_finalized_height = stats.max_finalized_height.max(notice.height);
                    stats.finalized_orders += u64::from(orders);
                    let us = now.duration_since(sent).as_micros() as u64;
                    stats.finality_us.saturating_record(us.max(1));
                }
            }
            NoticeKind::Refused | NoticeKind::Evicted => {
                pending.remove(&notice.hash);
                *stats.refusals.entry(code_name(notice.code)).or_default() += 1;
            }
        }
    }
    if !stop.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("nexus load: validator {target} closed its transaction port");
    }
}

/// Sessions' transactions awaiting their answers: (account index, client seq) -> (sent at,
/// orders, validator index).
type GatewayPending = std::sync::Arc<
    std::sync::Mutex<std::collections::HashMap<(usize, u64), (std::time::Instant, u32, usize)>>,
>;

/// Sends the signed stream through the validators' binary gateways (docs/protocol.md,
/// "Signed transactions (chains)") at `orders_per_s` until `stop`: trading account `a` keeps
/// one session on validator `a mod N` of `order_entry` (a transaction must come from its
/// signer's session), and counts the answers in `stats` (`admitted` = `TransactionStatus`
/// admitted, `finalized` = `Finalized`; latencies from the send). A session that fails is
/// not reconnected: its later transactions are skipped.
pub fn drive_gateways(
    spec: &LoadSpec,
    order_entry: &[std::net::SocketAddr],
    orders_per_s: u64,
    stop: Stop,
    stats: Stats,
) -> std::io::Result<()> {
    let stream = SignedStream::new(spec);
    drive_gateways_stream(spec, stream, order_entry, orders_per_s, stop, stats)
}

/// [`drive_gateways`] with the transactions of `stream` (some signed ahead).
pub fn drive_gateways_stream(
    spec: &LoadSpec,
    mut stream: SignedStream,
    order_entry: &[std::net::SocketAddr],
    orders_per_s: u64,
    stop: Stop,
    stats: Stats,
) -> std::io::Result<()> {
    use gateway::client::{LoginOptions, OrderClient, OrderSender};
    use std::sync::atomic::Ordering;
    if order_entry.is_empty() {
        return Ok(());
    }
    let keys = stream.keys().to_vec();
    let pending: GatewayPending = Default::default();
    stats.lock().expect("stats").finalized_by_target = vec![0; order_entry.len()];
    let mut senders: Vec<Option<OrderSender>> = Vec::with_capacity(keys.len());
    let mut readers = Vec::with_capacity(keys.len());
    for (account, key) in keys.iter().enumerate() {
        let target = account % order_entry.len();
        let client = OrderClient::connect(order_entry[target], key, LoginOptions::default())
            .map_err(|e| std::io::Error::other(format!("session of account {account}: {e}")))?;
        let (sender, reader, _) = client.split();
        reader.stream().set_nonblocking(true)?;
        readers.push(SessionReader {
            reader,
            account,
            target,
        });
        senders.push(Some(sender));
    }
    let (reader_pending, reader_stats, reader_stop) =
        (pending.clone(), stats.clone(), stop.clone());
    std::thread::Builder::new()
        .name("nexus-load-sessions".into())
        .spawn(move || read_sessions(readers, reader_pending, reader_stats, reader_stop))?;
    let pace = Pace::new(spec, orders_per_s);
    let mut j = 0u64;
    let end = spec.stream_len().unwrap_or(u64::MAX);
    while !stop.load(Ordering::Relaxed) && j < end {
        if let Some(wait) = pace.wait_before(j) {
            std::thread::sleep(wait);
            continue;
        }
        let account = (j % keys.len() as u64) as usize;
        j += 1;
        let Some(sender) = senders[account].as_mut() else {
            continue;
        };
        let tx = stream.take(spec, j - 1);
        let orders = tx.tx.actions.len() as u32;
        let seq = sender.next_seq();
        let target = account % order_entry.len();
        pending
            .lock()
            .expect("pending")
            .insert((account, seq), (std::time::Instant::now(), orders, target));
        if sender.transaction(tx.bytes()).is_err() {
            pending.lock().expect("pending").remove(&(account, seq));
            senders[account] = None;
            stats.lock().expect("stats").disconnects += 1;
            continue;
        }
        let mut counts = stats.lock().expect("stats");
        counts.sent += 1;
        counts.sent_orders += u64::from(orders);
    }
    Ok(())
}

/// One session's reading half, with the account it trades for and its validator.
struct SessionReader {
    reader: gateway::client::FrameReader,
    account: usize,
    target: usize,
}

/// Reads every session's messages on this one thread (a `mio` poll over their sockets, which
/// are non-blocking) and counts their transactions' answers until every session has ended:
/// a load of a hundred sessions costs the machine it measures one thread and one wake-up
/// per burst of messages, not a thread and a wake-up per session and message.
fn read_sessions(
    mut sessions: Vec<SessionReader>,
    pending: GatewayPending,
    stats: Stats,
    stop: Stop,
) {
    use mio::{unix::SourceFd, Events, Interest, Poll, Token};
    use std::os::fd::AsRawFd;
    let Ok(mut poll) = Poll::new() else {
        eprintln!("nexus load: no poller for the sessions");
        return;
    };
    let mut open = vec![true; sessions.len()];
    for (index, session) in sessions.iter().enumerate() {
        let fd = session.reader.stream().as_raw_fd();
        let registered =
            poll.registry()
                .register(&mut SourceFd(&fd), Token(index), Interest::READABLE);
        open[index] = registered.is_ok();
    }
    let mut events = Events::with_capacity(sessions.len().max(1));
    let mut arrived = Vec::new();
    // Read each session once before the first event: answers may already be buffered.
    let mut ready: Vec<usize> = (0..sessions.len()).collect();
    // Answers keep coming after `stop` (what was sent is still being finalized): the thread
    // reads until every session has ended, as a session's own reader would.
    while open.contains(&true) {
        for &index in &ready {
            if open[index] && !drain_session(&mut sessions[index], &mut arrived) {
                open[index] = false;
                let fd = sessions[index].reader.stream().as_raw_fd();
                let _ = poll.registry().deregister(&mut SourceFd(&fd));
                if !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (account, target) = (sessions[index].account, sessions[index].target);
                    eprintln!(
                        "nexus load: the session of account {account} on validator {target} ended"
                    );
                }
            }
        }
        count_answers(&mut arrived, std::time::Instant::now(), &pending, &stats);
        ready.clear();
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                eprintln!("nexus load: polling the sessions failed: {e}");
                return;
            }
        }
        ready.extend(events.iter().map(|event| event.token().0));
    }
}

/// Reads what one session has buffered into `arrived` as (account, target, message); false
/// once the session has ended (closed, logged out or garbled).
fn drain_session(
    session: &mut SessionReader,
    arrived: &mut Vec<(usize, usize, gateway::client::ServerMessage)>,
) -> bool {
    use gateway::client::ServerMessage;
    loop {
        match session.reader.try_next_message() {
            Ok(None) => return true,
            Ok(Some(ServerMessage::Logout(_))) | Err(_) => return false,
            Ok(Some(message)) => arrived.push((session.account, session.target, message)),
        }
    }
}

/// Counts the answers in `arrived` (taken out), seen at `now`, under one lock of each map.
fn count_answers(
    arrived: &mut Vec<(usize, usize, gateway::client::ServerMessage)>,
    now: std::time::Instant,
    pending: &GatewayPending,
    stats: &Stats,
) {
    use gateway::client::ServerMessage;
    use gateway::wire::TX_ADMITTED;
    if arrived.is_empty() {
        return;
    }
    let mut pending = pending.lock().expect("pending");
    let mut stats = stats.lock().expect("stats");
    for (account, target, message) in arrived.drain(..) {
        match message {
            ServerMessage::TransactionStatus(status) => {
                let key = (account, status.client_seq.get());
                if status.status == TX_ADMITTED {
                    if let Some(entry) = pending.get(&key) {
                        stats.admitted += 1;
                        let us = now.duration_since(entry.0).as_micros() as u64;
                        stats.admission_us.saturating_record(us.max(1));
                    }
                } else if pending.remove(&key).is_some() {
                    let code = txport::code_name(status.code.get() as u8);
                    *stats.refusals.entry(code).or_default() += 1;
                }
            }
            ServerMessage::Finalized(finalized) => {
                let key = (account, finalized.client_seq.get());
                if let Some((sent, orders, _)) = pending.remove(&key) {
                    stats.finalized += 1;
                    if let Some(count) = stats.finalized_by_target.get_mut(target) {
                        *count += 1;
                    }
                    let height = finalized.height.get();
                    stats.max_finalized_height = stats.max_finalized_height.max(height);
                    stats.finalized_orders += u64::from(orders);
                    let us = now.duration_since(sent).as_micros() as u64;
                    stats.finality_us.saturating_record(us.max(1));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{Engine, EngineConfig, Event};

    fn spec(bulk: u32) -> LoadSpec {
        LoadSpec {
            seed: 7,
            accounts: 10,
            bulk,
            chain_id: [1; 32],
            genesis_time_ms: 1_800_000_000_000,
            resting_orders: 0,
        }
    }

    /// Signed ahead or as taken, the stream is the same transactions, in order.
    #[test]
    fn a_stream_signed_ahead_is_the_stream_signed_as_sent() {
        let spec = spec(20);
        let keys = account_keys(&spec);
        let mut ahead = SignedStream::signed_ahead(&spec, 25);
        assert_eq!(ahead.ahead.len(), 25);
        for j in [0, 1, 12, 24, 25, 40] {
            let expected = transaction(&spec, &keys, j);
            assert_eq!(ahead.take(&spec, j).bytes(), expected.bytes(), "tx {j}");
            assert!(ahead.ahead.get(j as usize).is_none_or(Option::is_none));
        }
        assert_eq!(
            SignedStream::new(&spec).take(&spec, 3).bytes(),
            transaction(&spec, &keys, 3).bytes()
        );
    }

    /// The resting stream places exactly its orders, in bulks (the last one shorter), and
    /// none of them trades, with or without the trading stream running over the same book.
    #[test]
    fn resting_orders_all_rest_and_the_trading_stream_never_reaches_them() {
        let resting = LoadSpec {
            resting_orders: 5_003,
            ..spec(7)
        };
        assert_eq!(resting.stream_len(), Some(715));
        assert_eq!(resting_transaction(&resting, 714).len(), 5_003 - 714 * 7);
        assert!(resting_transaction(&resting, 715).is_empty());
        let keys = account_keys(&resting);
        let mut engine: Engine = Engine::new(EngineConfig::default());
        let mut events = Vec::new();
        for command in genesis(&resting) {
            engine.step(&command, &mut events);
        }
        events.clear();
        fn run(engine: &mut Engine, spec: &LoadSpec, keys: &[SigningKey], txs: u64) -> Vec<Event> {
            let mut events = Vec::new();
            for j in 0..txs {
                let tx = transaction(spec, keys, j);
                for action in &tx.tx.actions {
                    let command = action.command(tx.account()).expect("a command");
                    engine.step(&command, &mut events);
                }
            }
            events
        }
        let events = run(&mut engine, &resting, &keys, 715);
        assert!(events.iter().all(|e| !matches!(e, Event::Fill { .. })));
        assert!(events.iter().all(|e| !matches!(e, Event::Rejected { .. })));
        assert_eq!(engine.resting_orders(), 5_003);
        let events = run(&mut engine, &spec(20), &keys, 2_000);
        let fills = events.iter().filter(|e| matches!(e, Event::Fill { .. }));
        assert!(fills.count() > 1_000, "the trading stream trades");
        for event in &events {
            if let Event::Fill { maker_oid, .. } = event {
                assert!(
                    *maker_oid < RESTING_OID_BASE,
                    "a resting order traded: {event:?}"
                );
            }
        }
        assert!(engine.resting_orders() >= 5_003);
    }

    /// The stream trades, its cancels find their orders, and the book stays bounded.
    #[test]
    fn the_stream_trades_and_keeps_the_book_near_its_size() {
        for bulk in [1, 20] {
            let spec = spec(bulk);
            let keys = account_keys(&spec);
            let mut engine: Engine = Engine::new(EngineConfig::default());
            let mut events = Vec::new();
            for command in genesis(&spec) {
                engine.step(&command, &mut events);
            }
            events.clear();
            let (mut fills, mut cancels, mut unknown) = (0, 0, 0);
            for j in 0..(40_000 / u64::from(bulk)) {
                let tx = transaction(&spec, &keys, j);
                for action in &tx.tx.actions {
                    let command = action.command(tx.account()).expect("a command");
                    engine.step(&command, &mut events);
                }
                for event in events.drain(..) {
                    match event {
                        Event::Fill { .. } => fills += 1,
                        Event::Canceled { .. } => cancels += 1,
                        Event::Rejected { reason, .. } => {
                            assert_eq!(reason.as_str(), "unknown_order", "bulk {bulk}");
                            unknown += 1;
                        }
                        _ => {}
                    }
                }
            }
            assert!(fills > 1_000, "bulk {bulk}: {fills} fills");
            assert!(cancels > 5_000, "bulk {bulk}: {cancels} cancels");
            // Filled orders cannot be cancelled any more: those are the only refusals.
            assert!(unknown < cancels, "bulk {bulk}");
            assert!(
                engine.resting_orders() < 6_000,
                "bulk {bulk}: {}",
                engine.resting_orders()
            );
        }
    }
}
