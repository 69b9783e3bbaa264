//! `nexus validator` and `nexus devnet`: NexusBFT validators as separate processes over QUIC.
//!
//! A validator process is a host around the pure [`Consensus`] state machine, doing over the
//! network what `consensus::sim` does in memory: it feeds received messages and expired
//! timeouts to `Consensus::step`, executes each decided block on its own [`Engine`], persists
//! it (block file) and starts the next height with `NewHeight`; it answers `PeerBehind` with
//! the certificate of that height and serves block-sync requests from the block file's
//! contents. Votes and locks go through [`FileStore`] before any signed message leaves.
//!
//! A block's payload is a sealed sequencer block (`sequencer::Block`: encoded engine
//! commands with global sequence numbers); its header carries the engine's state root after
//! the previous block. A validator only prevotes a block whose `prev_exec_root` equals its
//! own root (`valid(v)`), and stops with [`HostError::ExecRootMismatch`] if a certificate
//! ever names another root.
//!
//! The load: the round-0 proposer of each height fills the block from a deterministic order
//! stream ([`order`]): order `k` is a pure function of the seed and `k`, and "arrives" at
//! `load_start + k / rate`, so every process can compute each order's finality latency.
//!
//! Frames on the wire (first byte): 1 = a consensus message (`Message::encode`), 2 = a sync
//! request (`from_height u64`), answered with up to [`SYNC_BATCH`] commit certificates.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitCode, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use consensus::chain::ChainState;
use consensus::governance::ChainParams;
use consensus::messages::{CommitCertificate, Message};
use consensus::protocol::{
    BlockBody, Config as ConsensusConfig, Consensus, HeightStart, Input, Output, Timeout,
    TimeoutConfig,
};
use consensus::safety::{FileStore, StoreError};
use consensus::types::{
    Ed25519, Hash, Height, Keypair, PayloadValidator, SignatureBytes, SignatureVerifier,
    ValidatorId,
};
use consensus::validators::Validator;
use consensus_net::{BlockStore, BlockStoreError, NetConfig, NetError, Network, Peer};
use engine::{
    Command, Engine, EngineConfig, MarketSpec, NewOrder, SelfTradePrevention, Side, TimeInForce,
    DEFAULT_MAX_PRICE_TICKS,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

const MS: u64 = 1_000_000;
/// Most certificates sent in answer to one sync request.
pub const SYNC_BATCH: u64 = 32;
/// Most `PeerBehind` certificates sent to one peer per second.
const CERTS_PER_PEER_PER_S: usize = 64;
const FRAME_MESSAGE: u8 = 1;
const FRAME_SYNC: u8 = 2;
/// Name of the devnet configuration in its folder.
pub const CONFIG_FILE: &str = "devnet.toml";

/// `nexus devnet` options.
#[derive(Args, Debug)]
pub struct DevnetArgs {
    /// Number of validator processes (equal stakes).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub validators: u16,
    /// Folder for the configuration, keys and each validator's data (created; reused
    /// validator data resumes the old chain). Default: a new temporary folder, removed at
    /// exit unless --keep.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the temporary folder (without --dir) at exit; its path is printed at start.
    #[arg(long)]
    pub keep: bool,
    /// Print every validator's log lines (`final` per block: about a thousand lines a
    /// second) instead of one summary line per second.
    #[arg(long)]
    pub verbose: bool,
    /// First UDP port on 127.0.0.1 (validator i listens on PORT + i); 0 picks free ports.
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub base_port: u16,
    /// Orders per second the load source generates (0: no load).
    #[arg(long, value_name = "N", default_value_t = 2_000)]
    pub rate: u64,
    /// Most orders in one block.
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    pub max_block_orders: u32,
    /// Seed of the order stream and of the validator keys.
    #[arg(long, value_name = "SEED", default_value_t = 7)]
    pub seed: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub seconds: Option<u64>,
    /// Measure for SECONDS (after 2 s of warm-up) and print finality latency (p50/p99) and
    /// finalized orders/s instead of every validator's log lines.
    #[arg(long, value_name = "SECONDS")]
    pub bench: Option<u64>,
    /// Write the configuration and keys, print the configuration's path and exit (to start
    /// the validators by hand with `nexus validator`).
    #[arg(long)]
    pub init_only: bool,
    /// With --seconds or --bench: fail if, at the end, a validator's last finalized height is
    /// more than this many heights below the highest.
    #[arg(long, value_name = "HEIGHTS", default_value_t = 5)]
    pub max_lag: u64,
}

/// `nexus validator` options.
#[derive(Args, Debug)]
pub struct ValidatorArgs {
    /// The devnet configuration (written by `nexus devnet`).
    #[arg(long, value_name = "PATH")]
    pub config: PathBuf,
    /// Which validator of the configuration this process is.
    #[arg(long, value_name = "I")]
    pub index: usize,
    /// Data folder (key, safety file, block file); default `<config dir>/validator-<I>`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Timeouts in the configuration, in milliseconds.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub struct TimeoutsMs {
    /// `timeoutPropose(0)`.
    pub propose: u64,
    /// `timeoutPrevote(0)`.
    pub prevote: u64,
    /// `timeoutPrecommit(0)`.
    pub precommit: u64,
    /// Added per round.
    pub delta: u64,
    /// Re-send period of a validator's own messages.
    pub rebroadcast: u64,
}

/// One validator of the devnet.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ValidatorEntry {
    /// Its public key (hex): pinned by every other validator's TLS verifier.
    pub key: String,
    /// Its UDP address.
    pub addr: SocketAddr,
    /// Its stake.
    pub stake: u64,
}

/// The devnet configuration (`devnet.toml`), shared by all validators.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DevnetConfig {
    /// Chain id (hex, 32 bytes), bound into every signature.
    pub chain_id: String,
    /// Seed of the order stream.
    pub order_seed: u64,
    /// Trading accounts funded at genesis.
    pub accounts: u64,
    /// Orders per second of the load source.
    pub rate_per_s: u64,
    /// Most orders per block.
    pub max_block_orders: u32,
    /// When order 0 arrives (Unix ns).
    pub load_start_unix_ns: u64,
    /// Consensus timeouts.
    pub timeouts: TimeoutsMs,
    /// The validators, by index.
    pub validators: Vec<ValidatorEntry>,
}

/// Why a validator stopped.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The configuration or key is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A file operation failed.
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
    /// The safety store failed: the validator must not sign.
    #[error(transparent)]
    Safety(#[from] StoreError),
    /// The block file failed or is damaged.
    #[error(transparent)]
    Blocks(#[from] BlockStoreError),
    /// The network endpoint could not start.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A decided block names a previous execution root other than this validator's: its
    /// state differs from the quorum's, so it stops rather than continue on it.
    #[error("execution root mismatch at height {height}: ours {ours}, block says {block}")]
    ExecRootMismatch {
        /// Height of the decided block.
        height: Height,
        /// Our root after `height - 1` (hex).
        ours: String,
        /// The block's `prev_exec_root` (hex).
        block: String,
    },
    /// A decided block's payload is not the next sequencer block.
    #[error("bad payload in decided block {height}: {what}")]
    BadPayload {
        /// Height.
        height: Height,
        /// What is wrong.
        what: String,
    },
    /// Standard output is gone (the devnet or test that started us stopped).
    #[error("log output closed")]
    LogClosed,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Result<[u8; 32], HostError> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return Err(HostError::Config(format!("not 32 bytes of hex: {s:?}")));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| HostError::Config(format!("not hex: {s:?}")))?;
    }
    Ok(out)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// ---------------------------------------------------------------------------------------
// The deterministic load.

/// The seeded order stream and genesis of the devnet's one market.
pub mod order {
    use super::*;

    /// The market's id.
    pub const MARKET: u32 = 1;
    const BASE: u32 = 1;
    const QUOTE: u32 = 2;
    const MID: i64 = 100_000;
    /// Order `k` (even) is cancelled by order `k + 1 + 2 * LAG` if it still rests.
    const LAG: u64 = 1_000;

    fn mix(seed: u64, k: u64) -> u64 {
        // SplitMix64 of (seed, k): a pure function, so any process can compute any order.
        let mut z = seed ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Assets, the market and deposits: run by every validator before block 1.
    pub fn genesis(accounts: u64) -> Vec<Command> {
        let mut commands = vec![
            Command::CreateAsset { asset: BASE },
            Command::CreateAsset { asset: QUOTE },
            Command::CreateMarket(MarketSpec {
                market: MARKET,
                base: BASE,
                quote: QUOTE,
                base_units_per_lot: 1,
                quote_units_per_tick_lot: 1,
                min_lots: 1,
                max_price_ticks: DEFAULT_MAX_PRICE_TICKS,
                maker_fee_bps: 2,
                taker_fee_bps: 5,
            }),
        ];
        let amount = i64::MAX / 4 / accounts.max(1) as i64;
        for account in 1..=accounts {
            for asset in [BASE, QUOTE] {
                commands.push(Command::Deposit {
                    account,
                    asset,
                    amount,
                });
            }
        }
        commands
    }

    fn account_of(seed: u64, k: u64, accounts: u64) -> u64 {
        1 + mix(seed, k) % accounts.max(1)
    }

    /// Order `k` of the stream (0-based; it has sequence number `k + 1`). Half the orders
    /// after the first `2 * LAG` are cancels of an order `2 * LAG + 1` earlier (the book stays
    /// near `LAG` orders); the rest are GTC limit orders within 50 ticks of the mid, one in
    /// ten priced through it (they trade).
    pub fn order(seed: u64, accounts: u64, k: u64) -> Command {
        if k % 2 == 1 && k > 2 * LAG {
            let target = k - 1 - 2 * LAG;
            return Command::Cancel {
                account: account_of(seed, target, accounts),
                market: MARKET,
                oid: target,
            };
        }
        let h = mix(seed, k);
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
        Command::Place(NewOrder {
            account: account_of(seed, k, accounts),
            market: MARKET,
            oid: k,
            side,
            price: Some(price),
            qty: 1 + ((h >> 24) % 10) as i64,
            tif: TimeInForce::Gtc,
            stp: SelfTradePrevention::CancelMaker,
            reduce_only: false,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The validator host.

/// What the next payload must continue from (shared with the payload check).
#[derive(Debug, Clone, Copy)]
struct PayloadTip {
    next_seq: u64,
    prev_hash: [u8; 32],
    max_orders: u32,
}

/// Real ed25519 checks, and `valid(v)` for payloads: the next sealed sequencer block.
struct HostContext {
    tip: Rc<Cell<PayloadTip>>,
}

impl SignatureVerifier for HostContext {
    fn verify(&self, key: &ValidatorId, message: &[u8], signature: &SignatureBytes) -> bool {
        Ed25519.verify(key, message, signature)
    }
}

impl PayloadValidator for HostContext {
    fn payload_valid(&self, height: Height, payload: &[u8]) -> bool {
        check_payload(&self.tip.get(), height, payload).is_ok()
    }
}

fn check_payload(
    tip: &PayloadTip,
    height: Height,
    payload: &[u8],
) -> Result<sequencer::Block, String> {
    let block = sequencer::Block::decode(payload).map_err(|e| e.to_string())?;
    if block.height != height {
        return Err(format!(
            "sequencer height {} in block {height}",
            block.height
        ));
    }
    if block.first_seq != tip.next_seq {
        return Err(format!(
            "first seq {} where {} was next",
            block.first_seq, tip.next_seq
        ));
    }
    if block.prev_hash != tip.prev_hash {
        return Err("sequencer block does not follow the previous one".into());
    }
    if block.commands.len() > tip.max_orders as usize {
        return Err(format!(
            "{} orders, limit {}",
            block.commands.len(),
            tip.max_orders
        ));
    }
    if let Some((i, c)) = block
        .commands
        .iter()
        .enumerate()
        .find(|(_, c)| !block_command_allowed(c))
    {
        return Err(format!(
            "command {i} ({}) may not be in a block",
            command_name(c)
        ));
    }
    Ok(block)
}

/// Whether a proposer may put `c` in a block: only trading commands (place, cancel, cancel
/// all, modify). Registry and balance-creating commands (`CreateAsset`, `CreateMarket`,
/// `CreatePerpMarket`, `Deposit`) come only from genesis; `Withdraw` and
/// `TransferCollateral` move an account's funds and the devnet has no account signatures
/// to authorize that; perp margin, oracle and funding commands have no use without a perp
/// market and must not be one proposer's choice.
fn block_command_allowed(c: &Command) -> bool {
    matches!(
        c,
        Command::Place(_)
            | Command::Cancel { .. }
            | Command::CancelAll { .. }
            | Command::Modify { .. }
    )
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::CreateAsset { .. } => "CreateAsset",
        Command::CreateMarket(_) => "CreateMarket",
        Command::Deposit { .. } => "Deposit",
        Command::Withdraw { .. } => "Withdraw",
        Command::Place(_) => "Place",
        Command::Cancel { .. } => "Cancel",
        Command::CancelAll { .. } => "CancelAll",
        Command::Modify { .. } => "Modify",
        Command::CreatePerpMarket(_) => "CreatePerpMarket",
        Command::TransferCollateral { .. } => "TransferCollateral",
        Command::SetLeverage { .. } => "SetLeverage",
        Command::IsolatedMargin { .. } => "IsolatedMargin",
        Command::Oracle { .. } => "Oracle",
        Command::Funding { .. } => "Funding",
    }
}

struct Host {
    index: usize,
    config: DevnetConfig,
    consensus: Consensus<HostContext, FileStore>,
    net: Network,
    blocks: BlockStore,
    chain: ChainState,
    engine: Engine,
    exec_root: Hash,
    tip: Rc<Cell<PayloadTip>>,
    /// Encoded `Message::Commit` frames of every decided height (index = height - 1).
    certificates: Vec<Arc<[u8]>>,
    last_block: Option<(Hash, u64)>,
    timers: BTreeMap<(u64, u64), Timeout>,
    timer_seq: u64,
    cert_sent: HashMap<(ValidatorId, Height), u64>,
    sync_asked: HashMap<ValidatorId, u64>,
    sync_served: HashMap<ValidatorId, (Height, u64)>,
    events: Vec<engine::Event>,
}

fn log_line(value: serde_json::Value) -> Result<(), HostError> {
    let mut out = io::stdout().lock();
    writeln!(out, "{value}")
        .and_then(|()| out.flush())
        .map_err(|_| HostError::LogClosed)
}

/// Runs validator `args.index` until an error (it has no other way to stop: kill it).
pub fn validator_command(args: ValidatorArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nexus validator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_validator(args)) {
        Ok(()) | Err(HostError::LogClosed) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nexus validator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read_config(path: &Path) -> Result<DevnetConfig, HostError> {
    let text = std::fs::read_to_string(path).map_err(|e| HostError::Io(path.to_path_buf(), e))?;
    toml::from_str(&text).map_err(|e| HostError::Config(format!("{}: {e}", path.display())))
}

async fn run_validator(args: ValidatorArgs) -> Result<(), HostError> {
    let config = read_config(&args.config)?;
    let entry = config
        .validators
        .get(args.index)
        .cloned()
        .ok_or_else(|| HostError::Config(format!("no validator {}", args.index)))?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        args.config
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("validator-{}", args.index))
    });
    let key_path = data_dir.join("key");
    let seed = unhex32(
        &std::fs::read_to_string(&key_path).map_err(|e| HostError::Io(key_path.clone(), e))?,
    )?;
    let keypair = Keypair::from_seed(seed);
    if hex(&keypair.id().0) != entry.key {
        return Err(HostError::Config(format!(
            "{} is not the key of validator {}",
            key_path.display(),
            args.index
        )));
    }
    let chain_id = unhex32(&config.chain_id)?;
    let mut genesis = Vec::new();
    let mut peers = Vec::new();
    for v in &config.validators {
        let id = ValidatorId(unhex32(&v.key)?);
        genesis.push(Validator { id, stake: v.stake });
        peers.push(Peer { id, addr: v.addr });
    }
    let chain = ChainState::genesis(chain_id, genesis, ChainParams::default(), vec![])
        .map_err(|e| HostError::Config(format!("validator set: {e}")))?;

    let mut engine = Engine::new(EngineConfig {
        max_resting_orders: 1 << 16,
        max_open_orders_per_account: 1 << 16,
    });
    let mut events = Vec::new();
    for c in order::genesis(config.accounts) {
        engine.step(&c, &mut events);
        events.clear();
    }
    let exec_root = Hash(engine.commit());
    let tip = Rc::new(Cell::new(PayloadTip {
        next_seq: 1,
        prev_hash: [0; 32],
        max_orders: config.max_block_orders,
    }));

    let (blocks, stored, cut) = BlockStore::open(&data_dir.join("blocks"))?;
    let t = &config.timeouts;
    let consensus_config = ConsensusConfig {
        timeouts: TimeoutConfig {
            propose_ns: t.propose * MS,
            prevote_ns: t.prevote * MS,
            precommit_ns: t.precommit * MS,
            delta_ns: t.delta * MS,
            rebroadcast_ns: t.rebroadcast * MS,
        },
        ..ConsensusConfig::new(chain_id)
    };
    let consensus = Consensus::new(
        consensus_config,
        HostContext { tip: tip.clone() },
        FileStore::new(&data_dir.join("safety")),
        keypair.clone(),
    )?;
    let (net, mut rx) = Network::start(NetConfig::new(seed, entry.addr, peers.clone()))?;
    let mut host = Host {
        index: args.index,
        config,
        consensus,
        net,
        blocks,
        chain,
        engine,
        exec_root,
        tip,
        certificates: Vec::new(),
        last_block: None,
        timers: BTreeMap::new(),
        timer_seq: 0,
        cert_sent: HashMap::new(),
        sync_asked: HashMap::new(),
        sync_served: HashMap::new(),
        events,
    };
    // Resume: re-execute every stored block (checking each root) before joining.
    let recovered = stored.len();
    for cert in stored {
        host.apply_decided(cert, false)?;
    }
    log_line(json!({
        "event": "ready", "index": host.index, "addr": entry.addr.to_string(),
        "key": entry.key, "height": host.chain.height(), "recovered_blocks": recovered,
        "torn_bytes_cut": cut, "state_root": hex(&host.exec_root.0),
    }))?;
    let input = host.new_height_input();
    host.step(input)?;

    loop {
        let deadline = host.timers.first_key_value().map(|((at, _), _)| *at);
        let sleep = match deadline {
            Some(at) => {
                tokio::time::Instant::now() + Duration::from_nanos(at.saturating_sub(now_ns()))
            }
            None => tokio::time::Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            received = rx.recv() => {
                let Some(first) = received else {
                    return Err(HostError::Config("network stopped".into()));
                };
                host.on_frame(first.from, &first.frame)?;
                // Drain what is already here (bounded) before looking at timers again.
                for _ in 0..256 {
                    let Ok(r) = rx.try_recv() else { break };
                    host.on_frame(r.from, &r.frame)?;
                }
            }
            _ = tokio::time::sleep_until(sleep) => host.fire_timers()?,
        }
    }
}

/// Heights to answer a sync request from `from_height` (>= 1) with, when we are at
/// `ours`: at most [`SYNC_BATCH`], none past `ours`; `None` if we have none of them.
fn sync_range(from_height: Height, ours: Height) -> Option<std::ops::RangeInclusive<Height>> {
    if from_height == 0 || from_height > ours {
        return None;
    }
    Some(from_height..=ours.min(from_height.saturating_add(SYNC_BATCH - 1)))
}

/// Per-peer rate limit of `PeerBehind` answers: at most one every 200 ms per peer and
/// height, and at most [`CERTS_PER_PEER_PER_S`] per peer per second whatever the heights.
/// Keys are (peer, height); entries older than a second are dropped when a peer's count is
/// checked, so the map holds at most that many entries per known peer.
fn cert_allowed(
    sent: &mut HashMap<(ValidatorId, Height), u64>,
    peer: ValidatorId,
    height: Height,
    now: u64,
) -> bool {
    if sent
        .get(&(peer, height))
        .is_some_and(|t| now <= t + 200 * MS)
    {
        return false;
    }
    sent.retain(|(p, _), t| *p != peer || now <= *t + 1_000 * MS);
    if sent.keys().filter(|(p, _)| *p == peer).count() >= CERTS_PER_PEER_PER_S {
        return false;
    }
    sent.insert((peer, height), now);
    true
}

fn message_frame(m: &Message) -> Arc<[u8]> {
    let body = m.encode();
    let mut frame = Vec::with_capacity(body.len() + 1);
    frame.push(FRAME_MESSAGE);
    frame.extend_from_slice(&body);
    Arc::from(frame)
}

impl Host {
    fn step(&mut self, input: Input) -> Result<(), HostError> {
        let mut queue = VecDeque::from([input]);
        let mut out = Vec::new();
        while let Some(input) = queue.pop_front() {
            self.consensus.step(input, now_ns(), &mut out)?;
            for o in out.drain(..) {
                if let Some(next) = self.output(o)? {
                    queue.push_back(next);
                }
            }
        }
        Ok(())
    }

    fn output(&mut self, o: Output) -> Result<Option<Input>, HostError> {
        match o {
            Output::Broadcast(m) => self.net.broadcast(message_frame(&m)),
            Output::ScheduleTimeout { timeout, at_ns } => {
                self.timer_seq += 1;
                self.timers.insert((at_ns, self.timer_seq), timeout);
            }
            Output::Decide(cert) => {
                self.apply_decided(cert, true)?;
                return Ok(Some(self.new_height_input()));
            }
            Output::Evidence(e) => log_line(json!({
                "event": "evidence", "index": self.index, "height": e.height(),
                "offender": hex(&e.offender().0),
            }))?,
            Output::PeerBehind { peer, height } => {
                // Only a known validator is answered (the map is keyed by peer, so it stays
                // bounded by the validator set), and only with a height we have.
                if self.chain.validators().stake_of(&peer).is_none() {
                    return Ok(None);
                }
                let Some(frame) = height
                    .checked_sub(1)
                    .and_then(|i| self.certificates.get(i as usize))
                else {
                    return Ok(None);
                };
                let now = now_ns();
                if cert_allowed(&mut self.cert_sent, peer, height, now) {
                    self.net.send(&peer, frame.clone());
                }
            }
        }
        Ok(None)
    }

    fn fire_timers(&mut self) -> Result<(), HostError> {
        let now = now_ns();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timeout = entry.remove();
            self.step(Input::Timeout(timeout))?;
        }
        Ok(())
    }

    fn on_frame(&mut self, from: ValidatorId, frame: &[u8]) -> Result<(), HostError> {
        match frame.split_first() {
            Some((&FRAME_MESSAGE, body)) => {
                let Ok(m) = Message::decode(body) else {
                    return Ok(()); // A malformed message from a peer is dropped.
                };
                // Two or more heights ahead: ask that peer for the blocks in between.
                if m.height() > self.chain.height() + 2 {
                    let now = now_ns();
                    let last = self.sync_asked.get(&from).copied();
                    if last.is_none_or(|t| now > t + 100 * MS) {
                        self.sync_asked.insert(from, now);
                        let mut req = vec![FRAME_SYNC];
                        req.extend_from_slice(&(self.chain.height() + 1).to_le_bytes());
                        self.net.send(&from, Arc::from(req));
                    }
                }
                self.step(Input::Message(m))
            }
            Some((&FRAME_SYNC, body)) => {
                let Ok(bytes) = <[u8; 8]>::try_from(body) else {
                    return Ok(());
                };
                let from_height = u64::from_le_bytes(bytes).max(1);
                let Some(range) = sync_range(from_height, self.chain.height()) else {
                    return Ok(()); // Nothing we have (or a request past our height).
                };
                let now = now_ns();
                if let Some((h, t)) = self.sync_served.get(&from) {
                    if *h == from_height && now < t + 50 * MS {
                        return Ok(());
                    }
                }
                self.sync_served.insert(from, (from_height, now));
                for h in range {
                    self.net
                        .send(&from, self.certificates[(h - 1) as usize].clone());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Executes a decided block (checking its parent root), stores it (when `fresh`) and
    /// logs height and state root.
    fn apply_decided(&mut self, cert: CommitCertificate, fresh: bool) -> Result<(), HostError> {
        let block = &cert.block;
        let height = block.height;
        if block.prev_exec_root != self.exec_root {
            return Err(HostError::ExecRootMismatch {
                height,
                ours: hex(&self.exec_root.0),
                block: hex(&block.prev_exec_root.0),
            });
        }
        let payload = check_payload(&self.tip.get(), height, &block.payload)
            .map_err(|what| HostError::BadPayload { height, what })?;
        if fresh {
            self.blocks.append(&cert)?;
        }
        for c in &payload.commands {
            self.engine.step(c, &mut self.events);
            self.events.clear();
        }
        self.exec_root = Hash(self.engine.commit());
        let tip = self.tip.get();
        self.tip.set(PayloadTip {
            next_seq: tip.next_seq + payload.commands.len() as u64,
            prev_hash: payload.hash,
            ..tip
        });
        self.chain.apply_block(block, &Ed25519);
        self.last_block = Some((block.id(), block.timestamp_ns));
        if fresh {
            log_line(json!({
                "event": "final", "index": self.index, "height": height, "round": cert.round,
                "orders": payload.commands.len(), "first_seq": payload.first_seq,
                "ts_ns": block.timestamp_ns, "decided_ns": now_ns(),
                "root": hex(&self.exec_root.0),
            }))?;
        }
        self.certificates
            .push(message_frame(&Message::Commit(cert)));
        Ok(())
    }

    fn new_height_input(&mut self) -> Input {
        let height = self.chain.height() + 1;
        let validators = self.chain.validators().clone();
        let (prev_block, prev_timestamp_ns) = self.last_block.unwrap_or((Hash::ZERO, 0));
        let tip = self.tip.get();
        let now = now_ns();
        // Only the round-0 proposer builds a full block; a later round's proposer (rare:
        // the round-0 one was down) proposes an empty one.
        let mut commands = Vec::new();
        if validators.proposer(0) == self.consensus.id() && self.config.rate_per_s > 0 {
            let start = self.config.load_start_unix_ns;
            let arrived = if now > start {
                ((now - start) as u128 * self.config.rate_per_s as u128 / 1_000_000_000) as u64
            } else {
                0
            };
            let first = tip.next_seq - 1;
            let n = arrived
                .saturating_sub(first)
                .min(self.config.max_block_orders as u64);
            commands.reserve(n as usize);
            for k in first..first + n {
                commands.push(order::order(
                    self.config.order_seed,
                    self.config.accounts,
                    k,
                ));
            }
        }
        let payload = sequencer::Block::seal(height, now, tip.next_seq, tip.prev_hash, commands);
        Input::NewHeight {
            start: HeightStart {
                height,
                validators,
                prev_block,
                prev_exec_root: self.exec_root,
                prev_timestamp_ns,
            },
            body: BlockBody {
                evidence: Vec::new(),
                actions: Vec::new(),
                payload: payload.bytes,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// The devnet launcher.

fn free_udp_port() -> io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_devnet(args: &DevnetArgs, root: &Path) -> Result<(PathBuf, DevnetConfig), HostError> {
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |e| HostError::Io(p, e)
    };
    std::fs::create_dir_all(root).map_err(io_err(root))?;
    let mut validators = Vec::new();
    for i in 0..args.validators as usize {
        let mut h = blake3::Hasher::new();
        h.update(b"nexus-devnet/v1/key\0");
        h.update(&args.seed.to_le_bytes());
        h.update(&(i as u64).to_le_bytes());
        let seed = *h.finalize().as_bytes();
        let dir = root.join(format!("validator-{i}"));
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let key_path = dir.join("key");
        std::fs::write(&key_path, format!("{}\n", hex(&seed))).map_err(io_err(&key_path))?;
        let port = if args.base_port == 0 {
            free_udp_port().map_err(io_err(root))?
        } else {
            args.base_port
                .checked_add(i as u16)
                .ok_or_else(|| HostError::Config("port out of range".into()))?
        };
        validators.push(ValidatorEntry {
            key: hex(&Keypair::from_seed(seed).id().0),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stake: 1,
        });
    }
    let chain_id = blake3::hash(
        &[
            b"nexus-devnet/v1/chain\0".as_slice(),
            &args.seed.to_le_bytes(),
        ]
        .concat(),
    );
    let config = DevnetConfig {
        chain_id: hex(chain_id.as_bytes()),
        order_seed: args.seed,
        accounts: 100,
        rate_per_s: args.rate,
        max_block_orders: args.max_block_orders,
        load_start_unix_ns: now_ns() + 1_500 * MS,
        timeouts: TimeoutsMs {
            propose: 200,
            prevote: 100,
            precommit: 100,
            delta: 50,
            rebroadcast: 500,
        },
        validators,
    };
    let path = root.join(CONFIG_FILE);
    let text = toml::to_string(&config).map_err(|e| HostError::Config(e.to_string()))?;
    std::fs::write(&path, text).map_err(io_err(&path))?;
    Ok((path, config))
}

/// Lines of a validator's standard error kept to print when it stops.
const STDERR_TAIL: usize = 20;

/// One validator child: the process and the last lines of its standard error.
struct ChildProc {
    child: Child,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

/// Kills every child on drop.
struct Children(Vec<ChildProc>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
    }
}

impl Children {
    /// The first child that has exited (while the devnet still runs, any exit is an
    /// error: a validator only stops on a fault), described with its stderr tail.
    fn first_exit(&mut self) -> Option<String> {
        for (i, c) in self.0.iter_mut().enumerate() {
            let Ok(Some(status)) = c.child.try_wait() else {
                continue;
            };
            // The pipe is closed now that the process is gone: let the reader finish.
            if let Some(reader) = c.stderr_reader.take() {
                let _ = reader.join();
            }
            let tail = c.stderr_tail.lock().map(|t| t.clone()).unwrap_or_default();
            let mut what = format!("validator {i} exited early ({status})");
            if tail.is_empty() {
                what.push_str(", no standard error output");
            } else {
                what.push_str("; last standard error lines:");
                for line in tail {
                    what.push_str("\n  ");
                    what.push_str(&line);
                }
            }
            return Some(what);
        }
        None
    }
}

/// Validators (by index) whose last height is more than `max_lag` below the highest.
fn lagging(heights: &[u64], max_lag: u64) -> Vec<usize> {
    let top = heights.iter().copied().max().unwrap_or(0);
    (0..heights.len())
        .filter(|&i| heights[i].saturating_add(max_lag) < top)
        .collect()
}

/// One `final` line of a validator.
#[derive(Deserialize)]
struct FinalLine {
    index: usize,
    height: u64,
    round: u32,
    orders: u64,
    first_seq: u64,
    ts_ns: u64,
    decided_ns: u64,
    root: String,
}

/// Runs `nexus devnet`.
pub fn devnet_command(args: DevnetArgs) -> ExitCode {
    match devnet(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nexus devnet: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The devnet's folder: `--dir`, or a new temporary folder (removed when the returned guard
/// drops, unless kept).
fn devnet_folder(args: &DevnetArgs) -> Result<(PathBuf, Option<tempfile::TempDir>), HostError> {
    if let Some(dir) = &args.dir {
        return Ok((dir.clone(), None));
    }
    let temp = tempfile::Builder::new()
        .prefix("nexus-devnet-")
        .tempdir()
        .map_err(|e| HostError::Io(std::env::temp_dir(), e))?;
    if args.keep || args.init_only {
        let path = temp.keep();
        return Ok((path, None));
    }
    Ok((temp.path().to_path_buf(), Some(temp)))
}

fn devnet(args: DevnetArgs) -> Result<ExitCode, HostError> {
    let (root, _temp) = devnet_folder(&args)?;
    let (config_path, config) = write_devnet(&args, &root)?;
    if !args.init_only {
        eprintln!(
            "nexus devnet: {} validators, folder {}{}",
            config.validators.len(),
            root.display(),
            if _temp.is_some() {
                " (removed at exit; --keep keeps it)"
            } else {
                ""
            }
        );
    }
    if args.init_only {
        println!(
            "{}",
            json!({"event": "devnet_config", "config": config_path.display().to_string()})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe().map_err(|e| HostError::Io("current_exe".into(), e))?;
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let mut children = Children(Vec::new());
    for i in 0..config.validators.len() {
        let mut child = Process::new(&exe)
            .args(["validator", "--index", &i.to_string(), "--config"])
            .arg(&config_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| HostError::Io(exe.clone(), e))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr_tail.clone();
        // Pass the child's standard error through, keeping its last lines.
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[validator {i}] {line}");
                if let Ok(mut t) = tail.lock() {
                    if t.len() == STDERR_TAIL {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        });
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((i, line)).is_err() {
                    break;
                }
            }
        });
        children.0.push(ChildProc {
            child,
            stderr_tail,
            stderr_reader: Some(stderr_reader),
        });
    }
    drop(tx);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, stop.clone());
    }
    let started = Instant::now();
    let warmup_ns = 2_000 * MS;
    let run_for = match (args.bench, args.seconds) {
        (Some(b), _) => Some(
            Duration::from_nanos(config.load_start_unix_ns.saturating_sub(now_ns()))
                + Duration::from_nanos(warmup_ns)
                + Duration::from_secs(b),
        ),
        (None, s) => s.map(Duration::from_secs),
    };
    let n = config.validators.len();
    let mut roots: BTreeMap<u64, String> = BTreeMap::new();
    let mut heights = vec![0u64; n];
    let mut finals: Vec<FinalLine> = Vec::new();
    let mut mismatch = None;
    let mut evidence = 0u64;
    let mut failure: Option<String> = None;
    let out = io::stdout();
    let mut status = DevnetStatus::new();
    loop {
        if stop.load(Ordering::Relaxed) || run_for.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if let Some(what) = children.first_exit() {
            failure = Some(what);
            break;
        }
        let (i, line) = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(x) => x,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Every validator closed its output: they are exiting; say which and why.
                std::thread::sleep(Duration::from_millis(200));
                failure =
                    Some(children.first_exit().unwrap_or_else(|| {
                        "every validator closed its standard output".to_string()
                    }));
                break;
            }
        };
        let value = serde_json::from_str::<serde_json::Value>(&line).ok();
        let is_final = value.as_ref().is_some_and(|v| v["event"] == "final");
        if args.bench.is_none() && (args.verbose || !is_final) {
            let mut o = out.lock();
            let _ = writeln!(o, "{line}");
        }
        if args.bench.is_none() && !args.verbose {
            if let Some(summary) = status.observe(i, value.as_ref(), &heights) {
                let mut o = out.lock();
                let _ = writeln!(o, "{summary}");
            }
        }
        let Some(value) = value else {
            continue;
        };
        match value["event"].as_str() {
            Some("final") => {
                let Ok(f) = serde_json::from_value::<FinalLine>(value) else {
                    continue;
                };
                heights[i] = heights[i].max(f.height);
                match roots.get(&f.height) {
                    Some(r) if *r != f.root => {
                        mismatch = Some(f.height);
                        break;
                    }
                    Some(_) => {}
                    None => {
                        roots.insert(f.height, f.root.clone());
                    }
                }
                if args.bench.is_some() {
                    finals.push(f);
                }
            }
            Some("evidence") => evidence += 1,
            _ => {}
        }
    }
    drop(children);
    // A timed run (not Ctrl-C) must end with every validator near the top height.
    let timed_out = run_for.is_some() && failure.is_none() && !stop.load(Ordering::Relaxed);
    let behind = if timed_out {
        lagging(&heights, args.max_lag)
    } else {
        Vec::new()
    };
    if let Some(what) = &failure {
        eprintln!("nexus devnet: {what}");
    }
    if !behind.is_empty() {
        eprintln!(
            "nexus devnet: validators {behind:?} are more than {} heights behind (heights {heights:?})",
            args.max_lag
        );
    }
    let summary = json!({
        "event": "devnet_stopped", "validators": n, "heights": heights,
        "equal_roots": mismatch.is_none(), "root_mismatch_at": mismatch, "evidence": evidence,
        "validator_failed": failure.is_some(), "lagging": behind,
    });
    println!("{summary}");
    if let Some(seconds) = args.bench {
        print_bench(&config, &finals, warmup_ns, seconds);
    }
    Ok(
        if mismatch.is_some() || evidence > 0 || failure.is_some() || !behind.is_empty() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// One summary line per second (without --verbose): heights, and the blocks and orders
/// validator 0 finalized over the last second.
struct DevnetStatus {
    since: Instant,
    blocks: u64,
    orders: u64,
}

impl DevnetStatus {
    fn new() -> DevnetStatus {
        DevnetStatus {
            since: Instant::now(),
            blocks: 0,
            orders: 0,
        }
    }

    /// Counts validator `index`'s log line; returns the summary line once a second passed.
    fn observe(
        &mut self,
        index: usize,
        line: Option<&serde_json::Value>,
        heights: &[u64],
    ) -> Option<serde_json::Value> {
        if let Some(line) = line.filter(|l| index == 0 && l["event"] == "final") {
            self.blocks += 1;
            self.orders += line["orders"].as_u64().unwrap_or(0);
        }
        let elapsed = self.since.elapsed();
        if elapsed < Duration::from_secs(1) {
            return None;
        }
        let seconds = elapsed.as_secs_f64();
        let summary = json!({"event": "devnet_status", "heights": heights,
            "blocks_per_s": (self.blocks as f64 / seconds).round(),
            "orders_per_s": (self.orders as f64 / seconds).round()});
        *self = DevnetStatus::new();
        Some(summary)
    }
}

fn print_bench(config: &DevnetConfig, finals: &[FinalLine], warmup_ns: u64, seconds: u64) {
    let from = config.load_start_unix_ns + warmup_ns;
    let to = from + seconds * 1_000_000_000;
    let n = config.validators.len();
    let mut order_latency = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let mut block_latency = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let mut orders = vec![0u64; n];
    let mut blocks = vec![0u64; n];
    let mut later_rounds = 0u64;
    let rate = config.rate_per_s.max(1) as u128;
    for f in finals
        .iter()
        .filter(|f| f.decided_ns >= from && f.decided_ns < to)
    {
        orders[f.index] += f.orders;
        blocks[f.index] += 1;
        later_rounds += u64::from(f.round > 0);
        let _ = block_latency.record(f.decided_ns.saturating_sub(f.ts_ns) / 1_000);
        for k in f.first_seq - 1..f.first_seq - 1 + f.orders {
            let arrival = config.load_start_unix_ns + (k as u128 * 1_000_000_000 / rate) as u64;
            let _ = order_latency.record(f.decided_ns.saturating_sub(arrival) / 1_000);
        }
    }
    let min_orders = orders.iter().copied().min().unwrap_or(0);
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
    println!(
        "{}",
        json!({
            "event": "bench", "validators": n, "seconds": seconds,
            "offered_orders_per_s": config.rate_per_s,
            "finalized_orders_per_s": min_orders as f64 / seconds as f64,
            "blocks_per_s": blocks.iter().copied().min().unwrap_or(0) as f64 / seconds as f64,
            "orders_per_block": orders[0].checked_div(blocks[0]).unwrap_or(0),
            "order_finality_ms": {"p50": ms(&order_latency, 0.5), "p99": ms(&order_latency, 0.99), "max": order_latency.max() as f64 / 1_000.0},
            "block_finality_ms": {"p50": ms(&block_latency, 0.5), "p99": ms(&block_latency, 0.99)},
            "decisions_in_later_rounds": later_rounds,
        })
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::PerpSpec;

    fn tip() -> PayloadTip {
        PayloadTip {
            next_seq: 1,
            prev_hash: [0; 32],
            max_orders: 1_000,
        }
    }

    fn payload(commands: Vec<Command>) -> Vec<u8> {
        sequencer::Block::seal(1, 5, 1, [0; 32], commands).bytes
    }

    #[test]
    fn payloads_of_orders_are_valid() {
        let orders: Vec<Command> = (0..10).map(|k| order::order(7, 100, k)).collect();
        let block = check_payload(&tip(), 1, &payload(orders.clone())).expect("valid");
        assert_eq!(block.commands, orders);
        let others = vec![
            Command::Cancel {
                account: 1,
                market: order::MARKET,
                oid: 3,
            },
            Command::CancelAll {
                account: 1,
                market: order::MARKET,
            },
        ];
        check_payload(&tip(), 1, &payload(others)).expect("cancels are valid");
    }

    #[test]
    fn payloads_with_genesis_or_fund_moving_commands_are_refused() {
        let perp = PerpSpec::from_le_bytes(&[0; PerpSpec::ENCODED_LEN]);
        let mut refused: Vec<Command> = order::genesis(2);
        refused.extend([
            Command::CreatePerpMarket(perp),
            Command::Withdraw {
                account: 1,
                asset: 2,
                amount: 5,
            },
            Command::TransferCollateral {
                account: 1,
                amount: 5,
            },
        ]);
        assert!(refused.iter().any(|c| matches!(c, Command::Deposit { .. })));
        for c in refused {
            // Alone, and hidden after legitimate orders.
            let what = check_payload(&tip(), 1, &payload(vec![c])).expect_err("refused");
            assert!(what.contains(command_name(&c)), "{what}");
            let mut commands: Vec<Command> = (0..3).map(|k| order::order(7, 100, k)).collect();
            commands.push(c);
            let what = check_payload(&tip(), 1, &payload(commands)).expect_err("refused");
            assert!(what.starts_with("command 3 "), "{what}");
        }
    }

    #[test]
    fn sync_range_saturates_and_ignores_heights_we_do_not_have() {
        assert_eq!(sync_range(1, 0), None);
        assert_eq!(sync_range(1, 5), Some(1..=5));
        assert_eq!(sync_range(3, 100), Some(3..=3 + SYNC_BATCH - 1));
        assert_eq!(sync_range(6, 5), None);
        assert_eq!(sync_range(u64::MAX, 5), None);
        assert_eq!(sync_range(u64::MAX, u64::MAX), Some(u64::MAX..=u64::MAX));
        assert_eq!(
            sync_range(u64::MAX - 3, u64::MAX),
            Some(u64::MAX - 3..=u64::MAX)
        );
    }

    #[test]
    fn peer_behind_answers_are_rate_limited_per_peer() {
        let mut sent = HashMap::new();
        let (a, b) = (ValidatorId([1; 32]), ValidatorId([2; 32]));
        let t = 10_000 * MS;
        assert!(cert_allowed(&mut sent, a, 1, t));
        assert!(
            !cert_allowed(&mut sent, a, 1, t + 100 * MS),
            "same height too soon"
        );
        assert!(cert_allowed(&mut sent, a, 1, t + 201 * MS));
        // Many heights within a second: capped per peer, and other peers are unaffected.
        for h in 2..=CERTS_PER_PEER_PER_S as u64 {
            assert!(cert_allowed(&mut sent, a, h, t + 300 * MS), "height {h}");
        }
        assert!(!cert_allowed(&mut sent, a, 1_000, t + 300 * MS));
        assert!(cert_allowed(&mut sent, b, 1_000, t + 300 * MS));
        // A second later the old entries are gone.
        assert!(cert_allowed(&mut sent, a, 1_000, t + 1_400 * MS));
        assert!(sent.len() <= 2 * CERTS_PER_PEER_PER_S);
    }

    #[test]
    fn lagging_validators_are_named() {
        assert!(lagging(&[10, 9, 10, 5], 5).is_empty());
        assert_eq!(lagging(&[10, 9, 10, 4], 5), vec![3]);
        assert_eq!(lagging(&[0, 0, 20, 0], 5), vec![0, 1, 3]);
    }
}
