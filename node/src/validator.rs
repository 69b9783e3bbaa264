//! `nexus validator`: one NexusBFT validator of a devnet, as a process.
//!
//! A thin shell around [`consensus::host::Host`], the sans-IO validator host that the
//! simulator (`consensus::sim`) runs too: it feeds the host received frames, expired
//! timers (wall clock) and the block file's contents at start-up, and performs the host's
//! actions in order (QUIC sends and broadcasts; a decided block appended to the block file,
//! durable, before the host is told and executes it; the core's safety saves written to
//! [`FileStore`], one per receive batch at most, before any message signed in that batch
//! leaves). Timers, sync requests and answers,
//! `PeerBehind` answers and the decided-block sequence are the host's.
//!
//! What stays here is the node's [`Application`], `NodeApp`: blocks hold **signed
//! transactions** (docs/transactions.md), and nothing else:
//!
//! - Clients send transactions to any validator's transaction port ([`crate::txport`]). The
//!   validator admits them into its [`Mempool`] (signature verified once, nonce, limits;
//!   typed refusals), answers `admitted` or `refused`, and forwards what it admitted to every
//!   other validator (frame 3), which admits them into its own pool.
//! - At each height every validator builds its proposal from its pool (arrival order), so
//!   the proposer of any round proposes what is pending.
//! - Before prevoting, a validator checks the proposal's transactions
//!   ([`Execution::validate_block`]): every signature (the pool's cache spares the ones it
//!   verified already), chain id, roles, and nonces in order. A block holding a forged,
//!   unsigned or replayed transaction gets a nil prevote: no proposer can act for an
//!   account.
//! - A decided block, once durable, is executed by [`Execution`] (the one owner of Core
//!   state and nonces), and every client that sent one of its transactions gets
//!   `finalized`; pooled transactions that can no longer be included get `evicted`. The
//!   header's `prev_exec_root` must equal this validator's execution root.
//! - Clients also reach the validator through its binary gateway
//!   ([`crate::chain_gateway`]: signed `Transaction` messages, every result routed to the
//!   sessions of each account, market data) and its JSON development port
//!   ([`crate::chain_json`]); every client connection has a rate limit ([`crate::rate`]).
//! - EVM transactions come through the Ethereum JSON-RPC port ([`crate::chain_eth`]):
//!   admitted into the same pool (`Mempool::admit_evm`), forwarded like Core ones, proposed
//!   after the Core transactions within the EVM gas share; the EVM blocks executed are kept
//!   (bounded) for the port's reads.
//! - Every `snapshot_every` blocks the executed state is written ([`crate::chain_snapshot`]);
//!   at start the newest matching snapshot is loaded and only later blocks are executed.
//!
//! The time a block's nonces are checked against is the timestamp of the block before it
//! (the chain's genesis time for block 1), which every validator knows when it validates.
//!
//! Frames between validators (first byte): 1 = a consensus message, 2 = a sync request
//! (`from_height u64`), answered with up to [`SYNC_BATCH`] commit certificates, 3 = a batch of
//! block items forwarded from clients ([`crate::txport::encode_list`]; an item starting with
//! `0xEE` is an EVM transaction, any other a Core one).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use consensus::chain::ChainState;
use consensus::governance::ChainParams;
use consensus::host::{Action, AppProposal, Application, Frame, Host};
use consensus::messages::CommitCertificate;
use consensus::protocol::{Config as ConsensusConfig, TimeoutConfig};
use consensus::safety::{FileStore, SafetyStore, StoreError};
use consensus::types::{Ed25519, Hash, Height, Keypair, ValidatorId};
use consensus::validators::Validator;
use consensus_net::{BlockStore, BlockStoreError, NetConfig, NetError, Network, Peer, Received};
use engine::EngineConfig;
use execution::{Execution, ExecutionConfig};
use mempool::{Evicted, Mempool, MempoolConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use transactions::{BlockItem, SignedTransaction, TxHash};

use crate::chain_eth::{self, EthHistory, EthPort, EthRequest};
use crate::chain_gateway::{
    self, BlockFeed, ChainGatewayConfig, GatewayHandle, GatewayTx, ToGateway, NOBODY,
};
use crate::chain_json::{self, JsonEvent, JsonPort, LineStatus};
use crate::chain_snapshot::{self, Snapshot};
use crate::load::{self, LoadSpec};
use crate::rate::RateLimits;
use crate::txport::{self, Notice, NoticeKind};
use gateway::wire::{TX_ADMITTED, TX_EVICTED, TX_REFUSED};
use sequencer::ClientRef;

const MS: u64 = 1_000_000;
/// A validator heard from within this long counts in `net_peerCount` (votes flow every
/// block, and idle chains make a block per `empty_block_interval_ms`).
const PEER_HEARD_MS: u64 = 10_000;
pub use consensus::host::limits::SYNC_BATCH;
/// Name of the devnet configuration in its folder.
pub const CONFIG_FILE: &str = "devnet.toml";
/// Notices queued for one client before it is disconnected as too slow.
const CLIENT_QUEUE: usize = 1 << 16;
/// Most transactions admitted in one batch from the clients' queue (a batch is verified in
/// one go: about 5 ms of one core at 128, so consensus messages wait at most that long).
const ADMIT_BATCH: usize = 128;
/// Most transactions in one forwarded batch from a peer.
const FORWARD_BATCH: usize = 512;

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
    /// Test only: behave as a byzantine proposer that puts a forged transaction (a
    /// withdrawal for trading account 0, signed by another key) first in every proposal.
    /// Honest validators must not vote for those blocks.
    #[arg(long, hide = true)]
    pub byzantine_forge: bool,
}

/// How the process around a validator wants it to report (not consensus-relevant).
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Extra fields of the `ready` line.
    pub ready_extra: serde_json::Map<String, serde_json::Value>,
    /// Print no `final` line per block on standard output (`snapshot`, `evidence` and
    /// `evm_evicted` lines go to standard error instead, if `stderr_events`): `nexus run`,
    /// whose standard output carries only `ready` and `stopped`.
    pub quiet_blocks: bool,
    /// With `quiet_blocks`: print the other event lines on standard error.
    pub stderr_events: bool,
    /// Also name the JSON port's address `listen` in the `ready` line (as `nexus pipeline`
    /// does).
    pub json_as_listen: bool,
    /// Called with the `ready` line once it is printed.
    pub ready_hook: Option<fn(&serde_json::Value)>,
}

/// The engine's sizing in a chain configuration (`engine::EngineConfig`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Most orders resting across all markets.
    pub max_resting_orders: u32,
    /// Most open orders of one account.
    pub max_open_orders_per_account: u32,
}

impl From<EngineLimits> for EngineConfig {
    fn from(limits: EngineLimits) -> EngineConfig {
        EngineConfig {
            max_resting_orders: limits.max_resting_orders,
            max_open_orders_per_account: limits.max_open_orders_per_account,
        }
    }
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

impl Default for TimeoutsMs {
    /// The timeouts `nexus devnet` and `nexus run` write: propose 200, prevote and precommit
    /// 100, 50 more per round, re-send every 500.
    fn default() -> TimeoutsMs {
        TimeoutsMs {
            propose: 200,
            prevote: 100,
            precommit: 100,
            delta: 50,
            rebroadcast: 500,
        }
    }
}

/// One validator of the devnet.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ValidatorEntry {
    /// Its public key (hex): pinned by every other validator's TLS verifier.
    pub key: String,
    /// Its UDP address (QUIC, between validators).
    pub addr: SocketAddr,
    /// Its transaction port (TCP, for clients).
    pub tx_addr: SocketAddr,
    /// Its binary order-entry port (TCP, docs/protocol.md); none if absent.
    #[serde(default)]
    pub order_addr: Option<SocketAddr>,
    /// Its binary market-data port (TCP); served with the order-entry port.
    #[serde(default)]
    pub data_addr: Option<SocketAddr>,
    /// Its JSON Lines development port (TCP, loopback only: it signs for the devnet's
    /// development keys, `crate::chain_json`); none if absent.
    #[serde(default)]
    pub json_addr: Option<SocketAddr>,
    /// Its Ethereum JSON-RPC port (HTTP, `crate::chain_eth`); none if absent.
    #[serde(default)]
    pub eth_addr: Option<SocketAddr>,
    /// Its stake.
    pub stake: u64,
}

/// The devnet configuration (`devnet.toml`), shared by all validators and clients.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DevnetConfig {
    /// Chain id (hex, 32 bytes), bound into every signature.
    pub chain_id: String,
    /// The chain's genesis time (Unix ms): block 1's nonces are checked against it.
    pub genesis_time_ms: u64,
    /// Seed of the trading accounts' keys and of the load's prices.
    pub order_seed: u64,
    /// Trading accounts funded at genesis (keys derived from the seed).
    pub accounts: u64,
    /// Actions per transaction of the load.
    pub bulk: u32,
    /// Orders per second the load offers.
    pub rate_per_s: u64,
    /// Most transactions per block.
    pub max_block_txs: u32,
    /// Most payload bytes per block.
    pub max_block_bytes: u32,
    /// A snapshot of the executed state every this many blocks (0: none): a restarted
    /// validator loads its newest and executes only later blocks.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// Most transactions a second one client connection (transaction port, gateway session,
    /// JSON connection) may send, in bursts of as many; more are refused `rate_limited`
    /// (0: no limit).
    #[serde(default = "default_connection_rate")]
    pub connection_rate: u64,
    /// EVM blocks each validator keeps in memory for its Ethereum JSON-RPC reads (blocks,
    /// transactions, receipts, logs); older ones are forgotten first.
    #[serde(default = "default_eth_history_blocks")]
    pub eth_history_blocks: u64,
    /// When the load starts (Unix ns).
    pub load_start_unix_ns: u64,
    /// The chain's genesis as JSON Lines (docs/replay.md: assets, markets, perp markets,
    /// deposits, transfers, oracle prices). Absent: the devnet's ([`load::genesis_lines`]:
    /// `BASE-QUOTE` and the funded trading accounts, with `QUOTE` as NexusEVM's native
    /// token). Present: NexusEVM has no native Core asset (every Core asset stays movable).
    #[serde(default)]
    pub genesis: Option<String>,
    /// Development role keys derived from `order_seed` ([`load::role_key`]): a faucet that
    /// may sign deposits and an oracle feeder. The JSON port signs `deposit` and `oracle`
    /// lines with them. A development chain's shortcut: off on a devnet.
    #[serde(default)]
    pub dev_roles: bool,
    /// The development EVM account's secp256k1 secret (hex); absent: [`dev_evm_key`] of
    /// `order_seed`. Funded with [`dev_evm_balance`] at genesis.
    #[serde(default)]
    pub dev_evm_secret: Option<String>,
    /// Without transactions or cross-domain work, a block at most this often (ms; 0: blocks
    /// back to back). A transaction starts the next height at once.
    #[serde(default)]
    pub empty_block_interval_ms: u64,
    /// Perpetual funding every this many seconds of block time (0: none;
    /// `ExecutionConfig::funding_interval_s`).
    #[serde(default)]
    pub funding_interval_s: u64,
    /// The engine's limits; absent: 2^20 resting orders, 2^16 open orders per account.
    #[serde(default)]
    pub engine: Option<EngineLimits>,
    /// Consensus timeouts.
    pub timeouts: TimeoutsMs,
    /// The validators, by index.
    pub validators: Vec<ValidatorEntry>,
}

impl DevnetConfig {
    /// The chain id's bytes.
    pub fn chain_id_bytes(&self) -> Result<[u8; 32], HostError> {
        unhex32(&self.chain_id)
    }

    /// The chain's genesis lines: [`DevnetConfig::genesis`], or the devnet's.
    pub fn genesis_lines(&self) -> Result<String, HostError> {
        match &self.genesis {
            Some(lines) => Ok(lines.clone()),
            None => Ok(load::genesis_lines(&self.load_spec()?)),
        }
    }

    /// The engine commands of the genesis lines, in order.
    pub fn genesis_commands(&self) -> Result<Vec<engine::Command>, HostError> {
        crate::genesis::translate_genesis(&self.genesis_lines()?)
            .map(|(_, commands)| commands)
            .map_err(|e| HostError::Config(format!("genesis: {e}")))
    }

    /// The development EVM account's secret.
    pub fn dev_evm_secret(&self) -> Result<[u8; 32], HostError> {
        match &self.dev_evm_secret {
            Some(hex) => unhex32(hex),
            None => Ok(dev_evm_key(self.order_seed)),
        }
    }

    /// The development faucet and feeder keys, if the chain has them.
    pub fn dev_roles(&self) -> Option<load::DevRoles> {
        self.dev_roles.then(|| load::DevRoles::new(self.order_seed))
    }

    /// What the load stream and the genesis derive from.
    pub fn load_spec(&self) -> Result<LoadSpec, HostError> {
        Ok(LoadSpec {
            seed: self.order_seed,
            accounts: self.accounts,
            bulk: self.bulk,
            chain_id: self.chain_id_bytes()?,
            genesis_time_ms: self.genesis_time_ms,
        })
    }
}

fn default_snapshot_every() -> u64 {
    1_000
}

fn default_connection_rate() -> u64 {
    50_000
}

fn default_eth_history_blocks() -> u64 {
    chain_eth::HISTORY_BLOCKS as u64
}

/// Reads a devnet configuration.
pub fn read_config(path: &Path) -> Result<DevnetConfig, HostError> {
    let text = std::fs::read_to_string(path).map_err(|e| HostError::Io(path.to_path_buf(), e))?;
    toml::from_str(&text).map_err(|e| HostError::Config(format!("{}: {e}", path.display())))
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
    /// A decided block's payload is not a valid list of transactions.
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

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from 64 hex digits.
pub fn unhex32(s: &str) -> Result<[u8; 32], HostError> {
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

/// Wall clock, ns since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The state the consensus core's payload check shares with the host.
struct Shared {
    execution: Execution,
    mempool: Mempool,
    /// The time the next block's nonces are checked against (ms): the last block's
    /// timestamp, or the genesis time.
    block_time_ms: u64,
    max_block_txs: usize,
    max_block_bytes: usize,
}

/// The transactions of a payload, or why it is not one.
fn decode_payload(shared: &Shared, payload: &[u8]) -> Result<Vec<BlockItem>, String> {
    if payload.len() > shared.max_block_bytes {
        return Err(format!(
            "{} payload bytes, limit {}",
            payload.len(),
            shared.max_block_bytes
        ));
    }
    let items = txport::decode_list(payload, shared.max_block_txs)
        .ok_or_else(|| "not a list of transactions within the block's limits".to_string())?;
    items
        .iter()
        .enumerate()
        .map(|(i, bytes)| BlockItem::decode(bytes).map_err(|e| format!("transaction {i}: {e}")))
        .collect()
}

/// Checks a payload as `valid(v)`: decodes it, checks every signature (the pool's cache
/// first) and validates the block against the execution state.
fn check_payload(shared: &mut Shared, payload: &[u8]) -> Result<Vec<BlockItem>, String> {
    let txs = decode_payload(shared, payload)?;
    let refs: Vec<&SignedTransaction> = txs.iter().filter_map(BlockItem::core).collect();
    let signatures = shared.mempool.check_block_signatures(&refs);
    let senders = |h: &alloy_primitives::B256| shared.mempool.evm_sender(h);
    let valid = shared
        .execution
        .validate_block_with(shared.block_time_ms, &txs, &signatures, &senders)
        .map_err(|e| e.to_string())?;
    // The block's EVM senders are recovered once per validator: its decision's check finds
    // them here.
    let recovered = valid.evm_txs().to_vec();
    shared.mempool.remember_evm_senders(&recovered);
    Ok(txs)
}

/// A client connection's outbox of notices.
type ClientOutbox = mpsc::Sender<[u8; txport::NOTICE_LEN]>;

/// What the transaction port's tasks and the gateway thread tell the host.
enum ClientEvent {
    /// A client connected; notices for it go to this outbox.
    Connected(u64, ClientOutbox),
    /// A client sent a transaction frame.
    Transaction(u64, Vec<u8>),
    /// A client left.
    Gone(u64),
    /// Sessions of the binary gateway sent these transactions.
    Gateway(Vec<GatewayTx>),
    /// Something happened on the JSON port.
    Json(JsonEvent),
}

/// The EVM items of a block, by pool hash.
fn evm_item_hashes(items: &[BlockItem]) -> Vec<TxHash> {
    items
        .iter()
        .filter_map(|item| match item {
            BlockItem::Evm(evm) => Some(evm.hash()),
            BlockItem::Core(_) => None,
        })
        .collect()
}

/// Who sent a transaction to this validator, to be told what became of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sender {
    /// A client of the transaction port.
    Port(u64),
    /// A session of the binary gateway (and the message's client seq).
    Gateway(ClientRef),
    /// Line `.1` of JSON connection `.0`.
    Json(u64, u64),
}

impl Sender {
    /// The connection it came through, for its rate limit: (port, connection).
    fn connection(self) -> (u8, u64) {
        match self {
            Sender::Port(id) => (0, id),
            Sender::Gateway(client) => (1, client.connection & 0xffff_ffff),
            Sender::Json(id, _) => (2, id),
        }
    }
}

/// What became of a transaction (refusal and eviction with the mempool's code).
enum Answer {
    Admitted,
    Refused(u8),
    Finalized(Height),
    Evicted(u8),
}

/// The node's side of the host: mempool, execution and the clients of the transaction
/// port, the binary gateway and the JSON port. The consensus host
/// ([`consensus::host::Host`]) asks it for proposals, payload checks and the execution of
/// decided blocks, and hands it forwarded transactions.
struct NodeApp {
    index: usize,
    /// A forged transaction to put in every proposal (test only, `--byzantine-forge`).
    forged: Option<Vec<u8>>,
    /// In a cell because `valid(v)` is asked through a shared reference (it checks
    /// signatures against the pool's cache, which it updates).
    shared: RefCell<Shared>,
    clients: HashMap<u64, ClientOutbox>,
    /// Transactions a client of this validator sent, awaiting their block.
    awaiting: HashMap<TxHash, Sender>,
    /// The binary gateway's thread (order entry and market data), if configured.
    gateway: Option<GatewayHandle>,
    /// The JSON development port's state, if configured.
    json: Option<JsonPort>,
    /// The chain's input seq: transactions, oracle updates, fundings (one per perp market)
    /// and CoreWriter actions executed so far (every validator counts the same; the
    /// gateway's `seq` fields).
    inputs_executed: u64,
    /// Where snapshots go, and every how many blocks (0: never).
    snapshots: PathBuf,
    snapshot_every: u64,
    /// Per-connection rate limits of transactions.
    rates: RateLimits<(u8, u64)>,
    /// The execution parameters (a snapshot is restored with them).
    execution_config: ExecutionConfig,
    /// The EVM blocks executed, for the Ethereum JSON-RPC port's reads.
    eth_history: EthHistory,
    /// JSON-RPC connections with a rate bucket (the oldest forgotten first).
    eth_connections: std::collections::BTreeSet<u64>,
    /// When each other validator's last frame arrived (ms; at most one entry per pinned
    /// key), for `net_peerCount`.
    peers_heard: HashMap<ValidatorId, u64>,
    /// Transactions a second one client connection may send.
    connection_rate: u64,
    /// `final` lines are not printed, other events go to standard error (if
    /// `stderr_events`).
    quiet_blocks: bool,
    stderr_events: bool,
}

/// The shell: the host library driven by QUIC, the safety journal, the block file and the
/// wall clock.
struct Shell {
    host: Host<Ed25519, NodeApp>,
    net: Network,
    safety: FileStore,
    blocks: BlockStore,
}

/// SIGINT and SIGTERM, which stop the validator between two events.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<StopSignals, HostError> {
        use tokio::signal::unix::{signal, SignalKind};
        let error = |e| HostError::Io(PathBuf::from("signal handler"), e);
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).map_err(error)?,
            terminate: signal(SignalKind::terminate()).map_err(error)?,
        })
    }
}

/// The channels from the client ports to the shell's loop.
struct ClientChannels {
    tx_port: mpsc::Receiver<ClientEvent>,
    json: mpsc::Receiver<JsonEvent>,
    gateway: mpsc::Receiver<Vec<GatewayTx>>,
    eth: mpsc::Receiver<EthRequest>,
}

fn log_line(value: serde_json::Value) -> Result<(), HostError> {
    let mut out = io::stdout().lock();
    writeln!(out, "{value}")
        .and_then(|()| out.flush())
        .map_err(|_| HostError::LogClosed)
}

/// Runs validator `args.index` until an error, SIGINT or SIGTERM.
pub fn validator_command(args: ValidatorArgs) -> ExitCode {
    run_node("nexus validator", args, NodeOptions::default())
}

/// Runs validator `args.index` with `options` until an error, SIGINT or SIGTERM (then it
/// prints `{"event":"stopped","height","state_root"}`); `name` prefixes error messages.
pub fn run_node(name: &str, args: ValidatorArgs, options: NodeOptions) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_validator(args, options)) {
        Ok(()) | Err(HostError::LogClosed) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The addresses a validator serves on, as bound.
struct Ports {
    consensus: SocketAddr,
    tx: SocketAddr,
    gateway: Option<(SocketAddr, SocketAddr)>,
    json: Option<SocketAddr>,
    eth: Option<SocketAddr>,
}

/// What recovery found: blocks in the block file, the snapshot used, bytes cut.
struct Recovery {
    blocks: u64,
    snapshot_height: Height,
    torn_bytes_cut: u64,
}

/// The `ready` line: addresses, identity, recovery, and the caller's extra fields.
fn ready_line(
    shell: &Shell,
    entry: &ValidatorEntry,
    config: &DevnetConfig,
    ports: &Ports,
    recovery: &Recovery,
    args: &ValidatorArgs,
    options: NodeOptions,
) -> serde_json::Value {
    let text = |addr: Option<SocketAddr>| addr.map(|a| a.to_string());
    let mut ready = json!({
        "event": "ready", "index": args.index, "addr": ports.consensus.to_string(),
        "tx_addr": ports.tx.to_string(),
        "order_entry": text(ports.gateway.map(|a| a.0)),
        "market_data": text(ports.gateway.map(|a| a.1)),
        "json": text(ports.json), "eth_rpc": text(ports.eth),
        "key": entry.key, "chain_id": config.chain_id, "height": shell.host.chain().height(),
        "recovered_blocks": recovery.blocks, "snapshot_height": recovery.snapshot_height,
        "executed_blocks": recovery.blocks - recovery.snapshot_height,
        "torn_bytes_cut": recovery.torn_bytes_cut,
        "state_root": hex(&shell.host.exec_root().0),
    });
    if let Some(fields) = ready.as_object_mut() {
        if options.json_as_listen {
            fields.insert("listen".into(), json!(text(ports.json)));
        }
        fields.extend(options.ready_extra);
    }
    ready
}

/// The genesis execution state of a devnet (every validator computes the same).
pub fn genesis_execution(config: &DevnetConfig) -> Result<Execution, HostError> {
    Ok(Execution::new(
        execution_config(config)?,
        &config.genesis_commands()?,
    ))
}

/// Wei the devnet's development EVM account holds at genesis (1,000,000 ether).
pub fn dev_evm_balance() -> alloy_primitives::U256 {
    alloy_primitives::U256::from(1_000_000u64)
        * alloy_primitives::U256::from(10u64).pow(18u64.try_into().expect("small"))
}

/// The development EVM account's secret of a configuration without `dev_evm_secret` (one
/// written before it existed), derived from the order seed:
/// `BLAKE3("nexus-devnet/v1/evm-key\0" || seed as u64 LE)`.
pub fn dev_evm_key(seed: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"nexus-devnet/v1/evm-key\0");
    h.update(&seed.to_le_bytes());
    *h.finalize().as_bytes()
}

/// The Ethereum address of a secp256k1 secret (keccak256 of the public key's coordinates,
/// last 20 bytes).
pub fn evm_address(secret: &[u8; 32]) -> Result<alloy_primitives::Address, HostError> {
    let key = k256::ecdsa::SigningKey::from_slice(secret)
        .map_err(|e| HostError::Config(format!("development EVM key: {e}")))?;
    let point = key.verifying_key().to_encoded_point(false);
    let hash = alloy_primitives::keccak256(&point.as_bytes()[1..]);
    Ok(alloy_primitives::Address::from_slice(&hash[12..]))
}

/// A chain's execution parameters. The faucet and feeder are the development role keys if
/// the configuration has them ([`DevnetConfig::dev_roles`]), else none (every deposit is at
/// genesis). On the devnet's own genesis NexusEVM's native token is the market's quote
/// asset (`QUOTE`: a contract that deposits ether through CoreWriter can bid on
/// `BASE-QUOTE`; Core deposits and withdrawals of it are then invalid, as for any native
/// asset); on a configured genesis it has none. The development EVM account
/// ([`dev_evm_key`]) holds [`dev_evm_balance`].
pub fn execution_config(config: &DevnetConfig) -> Result<ExecutionConfig, HostError> {
    let native_asset = match config.genesis {
        Some(_) => execution::NO_NATIVE_ASSET,
        None => devnet_native_asset(config)?,
    };
    let dev = evm_address(&config.dev_evm_secret()?)?;
    let roles = config.dev_roles();
    let public = |key: &ed25519_dalek::SigningKey| key.verifying_key().to_bytes();
    Ok(ExecutionConfig {
        chain_id: config.chain_id_bytes()?,
        faucets: roles.iter().map(|r| public(&r.faucet)).collect(),
        feeders: roles.iter().map(|r| public(&r.feeder)).collect(),
        engine: config
            .engine
            .unwrap_or(EngineLimits {
                max_resting_orders: 1 << 20,
                max_open_orders_per_account: 1 << 16,
            })
            .into(),
        evm: execution::EvmGenesis {
            native_asset,
            alloc: vec![(dev, dev_evm_balance())],
            timestamp: config.genesis_time_ms / 1000,
            ..Default::default()
        },
        funding_interval_s: config.funding_interval_s,
    })
}

/// The quote asset of the devnet's market.
fn devnet_native_asset(config: &DevnetConfig) -> Result<engine::AssetId, HostError> {
    config
        .genesis_commands()?
        .iter()
        .find_map(|command| match command {
            engine::Command::CreateMarket(m) if m.market == load::MARKET => Some(m.quote),
            _ => None,
        })
        .ok_or_else(|| HostError::Config("the genesis has no devnet market".into()))
}

async fn run_validator(args: ValidatorArgs, options: NodeOptions) -> Result<(), HostError> {
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
    let chain_id = config.chain_id_bytes()?;
    let (chain, peers) = genesis_chain(&config)?;
    let (mut app, exec_root) = node_app(&args, &config, &data_dir)?;
    app.quiet_blocks = options.quiet_blocks;
    app.stderr_events = options.stderr_events;
    let (blocks, stored, cut) = BlockStore::open(&data_dir.join("blocks"))?;
    let mut safety = FileStore::new(&data_dir.join("safety"));
    let saved = safety.load()?;
    let mut host = Host::new(
        consensus_config(chain_id, &config.timeouts),
        Ed25519,
        app,
        saved,
        keypair.clone(),
        chain,
        exec_root,
    );
    host.set_empty_block_interval(config.empty_block_interval_ms.saturating_mul(MS));
    let (net, rx) = Network::start(NetConfig::new(seed, entry.addr, peers.clone()))?;
    let (client_tx, tx_port) = mpsc::channel::<ClientEvent>(1 << 16);
    let listener = tokio::net::TcpListener::bind(entry.tx_addr)
        .await
        .map_err(|e| HostError::Io(PathBuf::from(entry.tx_addr.to_string()), e))?;
    let tx_addr = listener.local_addr().unwrap_or(entry.tx_addr);
    tokio::spawn(accept_clients(listener, client_tx));
    let mut validator = Shell {
        host,
        net,
        safety,
        blocks,
    };
    let recovered = stored.len() as u64;
    let from = validator.recover(stored)?;
    let (gateway_tx, gateway) = mpsc::channel::<Vec<GatewayTx>>(1024);
    let gateway_addrs = validator.start_gateway(&entry, chain_id, gateway_tx)?;
    let (json_tx, json) = mpsc::channel::<JsonEvent>(1 << 12);
    let json_addr = validator.start_json(&entry, &config, json_tx).await?;
    let (eth_tx, eth) = mpsc::channel::<EthRequest>(chain_eth::QUEUE);
    // The server stops when its handle is dropped: kept until the validator stops.
    let eth_server = match entry.eth_addr {
        Some(addr) => Some(
            chain_eth::serve(addr, eth_tx)
                .await
                .map_err(|e| HostError::Io(PathBuf::from(addr.to_string()), e))?,
        ),
        None => None,
    };
    let eth_addr = eth_server.as_ref().map(|(bound, _)| *bound);
    // Before `ready`: from then on SIGINT and SIGTERM stop the validator cleanly (installing
    // the handlers replaces an inherited SIG_IGN).
    let stop = StopSignals::install()?;
    let ports = Ports {
        consensus: validator.net.local_addr().unwrap_or(entry.addr),
        tx: tx_addr,
        gateway: gateway_addrs,
        json: json_addr,
        eth: eth_addr,
    };
    let recovery = Recovery {
        blocks: recovered,
        snapshot_height: from,
        torn_bytes_cut: cut,
    };
    let ready = ready_line(
        &validator,
        &entry,
        &config,
        &ports,
        &recovery,
        &args,
        options.clone(),
    );
    log_line(ready.clone())?;
    if let Some(hook) = options.ready_hook {
        hook(&ready);
    }
    validator.host.start(now_ns())?;
    validator.perform()?;
    let channels = ClientChannels {
        tx_port,
        json,
        gateway,
        eth,
    };
    let stopped = validator.run(rx, channels, stop).await;
    drop(eth_server);
    stopped?;
    log_line(json!({
        "event": "stopped", "height": validator.host.chain().height(),
        "state_root": hex(&validator.host.exec_root().0),
    }))
}

/// The chain state at genesis (the configured validators and stakes) and the peers.
fn genesis_chain(config: &DevnetConfig) -> Result<(ChainState, Vec<Peer>), HostError> {
    let mut genesis = Vec::new();
    let mut peers = Vec::new();
    for v in &config.validators {
        let id = ValidatorId(unhex32(&v.key)?);
        genesis.push(Validator { id, stake: v.stake });
        peers.push(Peer { id, addr: v.addr });
    }
    let chain = ChainState::genesis(
        config.chain_id_bytes()?,
        genesis,
        ChainParams::default(),
        vec![],
    )
    .map_err(|e| HostError::Config(format!("validator set: {e}")))?;
    Ok((chain, peers))
}

/// The node's application at genesis, and its execution root.
fn node_app(
    args: &ValidatorArgs,
    config: &DevnetConfig,
    data_dir: &Path,
) -> Result<(NodeApp, Hash), HostError> {
    let spec = config.load_spec()?;
    let mut execution = genesis_execution(config)?;
    let exec_root = Hash(execution.root());
    let eth_history_blocks = usize::try_from(config.eth_history_blocks)
        .map_err(|_| HostError::Config("eth_history_blocks too large".into()))?;
    let eth_history = EthHistory::new(execution.evm().head(), eth_history_blocks);
    let app = NodeApp {
        index: args.index,
        forged: args
            .byzantine_forge
            .then(|| forged_withdrawal(&spec))
            .transpose()?,
        shared: RefCell::new(Shared {
            execution,
            mempool: Mempool::new(MempoolConfig::default()),
            block_time_ms: config.genesis_time_ms,
            max_block_txs: config.max_block_txs as usize,
            max_block_bytes: config.max_block_bytes as usize,
        }),
        clients: HashMap::new(),
        awaiting: HashMap::new(),
        gateway: None,
        json: None,
        inputs_executed: 0,
        snapshots: data_dir.join("snapshots"),
        snapshot_every: config.snapshot_every,
        rates: RateLimits::new(config.connection_rate, config.connection_rate),
        execution_config: execution_config(config)?,
        eth_history,
        eth_connections: Default::default(),
        peers_heard: HashMap::new(),
        connection_rate: config.connection_rate,
        quiet_blocks: false,
        stderr_events: false,
    };
    Ok((app, exec_root))
}

/// The core's configuration from the devnet's timeouts.
fn consensus_config(chain_id: [u8; 32], t: &TimeoutsMs) -> ConsensusConfig {
    ConsensusConfig {
        timeouts: TimeoutConfig {
            propose_ns: t.propose * MS,
            prevote_ns: t.prevote * MS,
            precommit_ns: t.precommit * MS,
            delta_ns: t.delta * MS,
            rebroadcast_ns: t.rebroadcast * MS,
        },
        ..ConsensusConfig::new(chain_id)
    }
}

/// A withdrawal for trading account 0 that account 1's key signed (test only): what a
/// byzantine proposer would need to move someone else's funds.
fn forged_withdrawal(spec: &LoadSpec) -> Result<Vec<u8>, HostError> {
    let keys = load::account_keys(spec);
    let (victim, thief) = match keys.as_slice() {
        [victim, thief, ..] => (victim, thief),
        _ => {
            return Err(HostError::Config(
                "--byzantine-forge needs two accounts".into(),
            ))
        }
    };
    let tx = transactions::Transaction {
        chain_id: spec.chain_id,
        signer: victim.verifying_key().to_bytes(),
        nonce: spec.genesis_time_ms,
        actions: vec![transactions::Action::Withdraw {
            asset: 1,
            amount: 1_000,
        }],
    };
    use ed25519_dalek::Signer;
    let mut bytes = tx.encode_unsigned();
    bytes.extend_from_slice(&thief.sign(&tx.signing_bytes()).to_bytes());
    Ok(bytes)
}

/// Accepts clients of the transaction port, one task each.
async fn accept_clients(listener: tokio::net::TcpListener, events: mpsc::Sender<ClientEvent>) {
    let mut next_id = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        tokio::spawn(serve_client(next_id, stream, events.clone()));
    }
}

/// One client: reads transaction frames for the host, writes the host's notices back.
async fn serve_client(id: u64, stream: tokio::net::TcpStream, events: mpsc::Sender<ClientEvent>) {
    let (mut reader, mut writer) = stream.into_split();
    let (outbox, mut notices) = mpsc::channel::<[u8; txport::NOTICE_LEN]>(CLIENT_QUEUE);
    if events
        .send(ClientEvent::Connected(id, outbox))
        .await
        .is_err()
    {
        return;
    }
    let write = async move {
        while let Some(notice) = notices.recv().await {
            if writer.write_all(&notice).await.is_err() {
                break;
            }
        }
    };
    let read = async {
        let mut length = [0u8; 4];
        loop {
            if reader.read_exact(&mut length).await.is_err() {
                break;
            }
            let len = u32::from_le_bytes(length) as usize;
            if !txport::frame_length_ok(len) {
                // Answered by the host (it knows the outbox), then the connection ends.
                let _ = events.send(ClientEvent::Transaction(id, Vec::new())).await;
                break;
            }
            let mut bytes = vec![0u8; len];
            if reader.read_exact(&mut bytes).await.is_err() {
                break;
            }
            if events
                .send(ClientEvent::Transaction(id, bytes))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = events.send(ClientEvent::Gone(id)).await;
    };
    // The writer ends when the host drops the outbox (after `Gone`), so every notice owed
    // before the client left is still written.
    tokio::join!(read, write);
}

impl From<consensus::host::HostError<HostError>> for HostError {
    fn from(e: consensus::host::HostError<HostError>) -> HostError {
        match e {
            consensus::host::HostError::Safety(e) => HostError::Safety(e),
            consensus::host::HostError::ExecRootMismatch {
                height,
                ours,
                block,
            } => HostError::ExecRootMismatch {
                height,
                ours: hex(&ours.0),
                block: hex(&block.0),
            },
            consensus::host::HostError::App(e) => e,
        }
    }
}

impl Shell {
    /// Re-applies the block file: blocks the newest matching snapshot covers without
    /// executing them, the later ones executed (checking each root). Returns the snapshot's
    /// height (0: none used).
    fn recover(&mut self, stored: Vec<CommitCertificate>) -> Result<Height, HostError> {
        let app = self.host.app_mut();
        let (snapshot, skipped) = chain_snapshot::newest(&app.snapshots, stored.len() as u64);
        for why in skipped {
            eprintln!("nexus validator: snapshot not used: {why}");
        }
        let from = match snapshot {
            Some(snapshot) => app.load_snapshot(snapshot, &stored),
            None => None,
        };
        let covered = from.map_or(0, |(height, _)| height);
        let roots_after: Vec<Hash> = stored
            .iter()
            .skip(1)
            .map(|c| c.block.prev_exec_root)
            .collect();
        for (i, cert) in stored.into_iter().enumerate() {
            match from {
                Some((height, root)) if cert.block.height <= height => {
                    let after = if cert.block.height == height {
                        root
                    } else {
                        roots_after[i]
                    };
                    self.host.recover_covered(cert, after)?;
                }
                _ => self.host.recover(cert, now_ns())?,
            }
        }
        Ok(covered)
    }

    /// Starts the binary gateway's thread if the validator has its ports; its feed starts
    /// from the recovered books. Returns (order entry, market data) addresses.
    fn start_gateway(
        &mut self,
        entry: &ValidatorEntry,
        chain_id: [u8; 32],
        to_host: mpsc::Sender<Vec<GatewayTx>>,
    ) -> Result<Option<(SocketAddr, SocketAddr)>, HostError> {
        let (Some(order_entry), Some(market_data)) = (entry.order_addr, entry.data_addr) else {
            return Ok(None);
        };
        let height = self.host.chain().height();
        let app = self.host.app_mut();
        let shared = app.shared.get_mut();
        let config = ChainGatewayConfig {
            order_entry,
            market_data,
            chain_id,
            tip: (height, shared.block_time_ms),
        };
        let handle = chain_gateway::spawn(config, shared.execution.engine(), to_host)
            .map_err(|e| HostError::Io(PathBuf::from(order_entry.to_string()), e))?;
        shared.execution.track_level_changes(true);
        let addrs = handle.addrs;
        app.gateway = Some(handle);
        Ok(Some(addrs))
    }

    /// Starts the JSON development port if the validator has one (loopback only).
    async fn start_json(
        &mut self,
        entry: &ValidatorEntry,
        config: &DevnetConfig,
        events: mpsc::Sender<JsonEvent>,
    ) -> Result<Option<SocketAddr>, HostError> {
        let Some(addr) = entry.json_addr else {
            return Ok(None);
        };
        if !addr.ip().is_loopback() {
            let why = format!(
                "json_addr {addr}: the JSON port signs for development keys, so it only listens on loopback"
            );
            return Err(HostError::Config(why));
        }
        let spec = config.load_spec()?;
        let port = JsonPort::new(
            &config.genesis_lines()?,
            spec.chain_id,
            &load::account_keys(&spec),
            config.dev_roles(),
        )
        .map_err(|e| HostError::Config(format!("genesis: {e}")))?;
        self.host.app_mut().json = Some(port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| HostError::Io(PathBuf::from(addr.to_string()), e))?;
        let bound = listener.local_addr().unwrap_or(addr);
        tokio::spawn(chain_json::accept(listener, events));
        Ok(Some(bound))
    }

    /// The event loop: timers, peers' frames and clients' transactions (transaction port,
    /// JSON port, gateway), each followed by the host's actions.
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Received>,
        mut clients: ClientChannels,
        mut stop: StopSignals,
    ) -> Result<(), HostError> {
        loop {
            let sleep = match self.host.next_deadline() {
                Some(at) => {
                    tokio::time::Instant::now() + Duration::from_nanos(at.saturating_sub(now_ns()))
                }
                None => tokio::time::Instant::now() + Duration::from_secs(3600),
            };
            let events = tokio::select! {
                // Blocks are durable when decided and safety saves before messages leave:
                // stopping between two events loses nothing.
                _ = stop.interrupt.recv() => return Ok(()),
                _ = stop.terminate.recv() => return Ok(()),
                _ = tokio::time::sleep_until(sleep) => {
                    self.host.on_timers(now_ns())?;
                    self.perform()?;
                    continue;
                }
                received = rx.recv() => {
                    let Some(first) = received else {
                        return Err(HostError::Config("network stopped".into()));
                    };
                    self.on_frame(first)?;
                    // Drain what is already here (bounded) before looking at timers again;
                    // the safety saves of the batch's consensus messages are coalesced.
                    for _ in 0..256 {
                        let Ok(r) = rx.try_recv() else { break };
                        self.on_frame(r)?;
                    }
                    self.perform()?;
                    continue;
                }
                event = clients.tx_port.recv() => {
                    let Some(first) = event else {
                        return Err(HostError::Config("transaction port stopped".into()));
                    };
                    let mut events = vec![first];
                    while events.len() < ADMIT_BATCH {
                        let Ok(next) = clients.tx_port.try_recv() else { break };
                        events.push(next);
                    }
                    events
                }
                Some(event) = clients.json.recv() => vec![ClientEvent::Json(event)],
                Some(request) = clients.eth.recv() => {
                    if let Some(frame) = self.host.app_mut().on_eth(request, now_ns()) {
                        self.net.broadcast(frame);
                        self.start_waiting_height()?;
                    }
                    continue;
                }
                Some(batch) = clients.gateway.recv() => {
                    let mut events = vec![ClientEvent::Gateway(batch)];
                    while events.len() < ADMIT_BATCH / 16 {
                        let Ok(next) = clients.gateway.try_recv() else { break };
                        events.push(ClientEvent::Gateway(next));
                    }
                    events
                }
            };
            if let Some(frame) = self.host.app_mut().on_clients(events, now_ns()) {
                self.net.broadcast(frame);
                self.start_waiting_height()?;
            }
        }
    }

    /// Clients brought transactions: a height waiting out the empty-block interval starts.
    fn start_waiting_height(&mut self) -> Result<(), HostError> {
        if self.host.waiting().is_some() {
            self.host.on_app_work(now_ns())?;
            self.perform()?;
        }
        Ok(())
    }

    /// Hands the host a peer's frame. Before forwarded transactions (whose admission can
    /// take milliseconds) it performs what earlier frames of the batch queued, so that
    /// votes never wait for them.
    fn on_frame(&mut self, r: Received) -> Result<(), HostError> {
        if r.frame.first() != Some(&consensus::host::FRAME_MESSAGE) {
            self.perform()?;
        }
        let now_ns = now_ns();
        self.host.app_mut().peers_heard.insert(r.from, now_ns / MS);
        self.host.on_frame(r.from, &r.frame, now_ns)?;
        Ok(())
    }

    /// Performs the host's actions in order: a safety save is durable before any later
    /// message leaves (an error stops the validator before it sends them); a decided block
    /// is appended to the block file (durable) before the host is told, which then executes
    /// it and starts the next height.
    fn perform(&mut self) -> Result<(), HostError> {
        while let Some(action) = self.host.poll_action() {
            match action {
                Action::Send { to, frame, .. } => {
                    self.net.send(&to, frame);
                }
                Action::Broadcast(frame) => self.net.broadcast(frame),
                Action::PersistSafety(state) => self.safety.save(&state)?,
                Action::PersistBlock(cert) => {
                    self.blocks.append(&cert)?;
                    self.host.block_durable(cert.block.height, now_ns())?;
                }
                Action::Evidence(e) => self.host.app().event(json!({
                    "event": "evidence", "index": self.host.app().index, "height": e.height(),
                    "offender": hex(&e.offender().0),
                }))?,
            }
        }
        Ok(())
    }
}

impl Application for NodeApp {
    type Error = HostError;

    fn has_pending(&self) -> bool {
        let shared = self.shared.borrow();
        self.forged.is_some() || !shared.mempool.is_empty() || !shared.execution.bridge().is_idle()
    }

    fn propose(&mut self, _height: Height, _chain: &ChainState, _now_ns: u64) -> AppProposal {
        AppProposal {
            actions: Vec::new(),
            payload: self.proposal_payload(),
        }
    }

    fn payload_valid(&self, _height: Height, payload: &[u8]) -> bool {
        check_payload(&mut self.shared.borrow_mut(), payload).is_ok()
    }

    fn execute(
        &mut self,
        cert: &CommitCertificate,
        recovering: bool,
        now_ns: u64,
    ) -> Result<Hash, HostError> {
        self.apply_decided(cert, recovering, now_ns)
    }

    fn on_app_frame(&mut self, _from: ValidatorId, body: &[u8], now_ns: u64) {
        // A peer forwards what its clients sent: admitted here on our own checks.
        // Items are block items: EVM ones start with 0xEE, Core ones with their version.
        if let Some(items) = txport::decode_list(body, FORWARD_BATCH) {
            let shared = self.shared.get_mut();
            let Shared {
                mempool, execution, ..
            } = shared;
            let (evm, core): (Vec<&[u8]>, Vec<&[u8]>) = items
                .into_iter()
                .partition(|item| item.first() == Some(&transactions::EVM_ITEM_TAG));
            mempool.admit_many(&core, now_ns / MS, &*execution);
            for item in evm {
                // A refusal here is the peer's client's: it heard of it from the peer.
                let _ = mempool.admit_evm(&item[1..], &*execution);
            }
        }
    }
}

impl NodeApp {
    /// Reports an event other than a block's `final`: a line on standard output, or with
    /// `quiet_blocks` on standard error (if `stderr_events`).
    fn event(&self, value: serde_json::Value) -> Result<(), HostError> {
        if !self.quiet_blocks {
            return log_line(value);
        }
        if self.stderr_events {
            eprintln!("{value}");
        }
        Ok(())
    }

    /// Admits what clients sent (one batch) and answers each; returns the frame that
    /// forwards the admitted ones to the other validators, if any.
    fn on_clients(&mut self, events: Vec<ClientEvent>, now_ns: u64) -> Option<Frame> {
        let mut frames: Vec<(Sender, Vec<u8>)> = Vec::new();
        // Clients that left are forgotten after this batch's notices are queued: a client
        // whose last frame and departure come in one batch still gets its answer.
        let mut gone: Vec<u64> = Vec::new();
        for event in events {
            match event {
                ClientEvent::Connected(id, outbox) => {
                    self.clients.insert(id, outbox);
                }
                ClientEvent::Gone(id) => {
                    self.rates.forget(&Sender::Port(id).connection());
                    gone.push(id);
                }
                ClientEvent::Transaction(id, bytes) => frames.push((Sender::Port(id), bytes)),
                ClientEvent::Gateway(batch) => {
                    let mempool = &mut self.shared.get_mut().mempool;
                    for tx in batch {
                        if let Some(hash) = tx.verified {
                            mempool.note_verified(hash);
                        }
                        let submission = tx.submission;
                        frames.push((Sender::Gateway(submission.client), submission.bytes));
                    }
                }
                ClientEvent::Json(JsonEvent::Connected(id, outbox)) => {
                    if let Some(json) = self.json.as_mut() {
                        json.connect(id, outbox);
                    }
                }
                ClientEvent::Json(JsonEvent::Line(id, text)) => {
                    frames.extend(self.json_line(id, &text, now_ns))
                }
                ClientEvent::Json(JsonEvent::Gone(id)) => {
                    self.rates.forget(&Sender::Json(id, 0).connection());
                    if let Some(json) = self.json.as_mut() {
                        json.disconnect(id);
                    }
                }
            }
        }
        let forward = self.admit_from_clients(frames, now_ns);
        for id in gone {
            self.clients.remove(&id);
        }
        forward
    }

    /// A JSON line: answered by the port, or the transaction it signed for this batch.
    fn json_line(&mut self, id: u64, text: &str, now_ns: u64) -> Option<(Sender, Vec<u8>)> {
        let json = self.json.as_mut()?;
        let shared = self.shared.get_mut();
        let (line, bytes) = json.line(id, text, shared.execution.engine(), now_ns / MS)?;
        Some((Sender::Json(id, line), bytes))
    }

    /// Answers an Ethereum JSON-RPC call from the executed state; returns the frame that
    /// forwards an admitted raw transaction to the other validators.
    fn on_eth(&mut self, request: EthRequest, now_ns: u64) -> Option<Frame> {
        if request.method == "eth_sendRawTransaction" {
            let key = (3, request.connection);
            if self.eth_connections.insert(request.connection)
                && self.eth_connections.len() > chain_eth::RATE_REMEMBERED
            {
                let oldest = self.eth_connections.pop_first().expect("over the bound");
                self.rates.forget(&(3, oldest));
            }
            if !self.rates.allow(key, now_ns / MS) {
                let _ = request
                    .reply
                    .send(Err(chain_eth::rate_limited(self.connection_rate)));
                return None;
            }
        }
        let Shared {
            execution, mempool, ..
        } = self.shared.get_mut();
        let now_ms = now_ns / MS;
        let peers = self
            .peers_heard
            .values()
            .filter(|&&heard| now_ms.saturating_sub(heard) <= PEER_HEARD_MS)
            .count();
        let mut port = EthPort {
            execution,
            mempool,
            history: &self.eth_history,
            peers,
        };
        let (answer, admitted) = port.handle(request.method, &request.params);
        let _ = request.reply.send(answer);
        let item = admitted?;
        let list = txport::encode_list(std::iter::once(item.bytes()));
        Some(consensus::host::app_frame(&list))
    }

    /// Admits one batch of client frames (each within its connection's rate) and answers
    /// each; returns the frame forwarding the admitted ones.
    fn admit_from_clients(&mut self, frames: Vec<(Sender, Vec<u8>)>, now_ns: u64) -> Option<Frame> {
        let now_ms = now_ns / MS;
        let (frames, limited): (Vec<_>, Vec<_>) = frames
            .into_iter()
            .partition(|(sender, _)| self.rates.allow(sender.connection(), now_ms));
        for (sender, bytes) in limited {
            let hash = TxHash(*blake3::hash(&bytes).as_bytes());
            self.answer(sender, hash, Answer::Refused(txport::CODE_RATE_LIMITED));
        }
        if frames.is_empty() {
            return None;
        }
        let items: Vec<&[u8]> = frames.iter().map(|(_, b)| b.as_slice()).collect();
        let results = {
            let Shared {
                mempool, execution, ..
            } = self.shared.get_mut();
            mempool.admit_many(&items, now_ms, &*execution)
        };
        let mut forward: Vec<&[u8]> = Vec::new();
        for ((sender, bytes), result) in frames.iter().zip(results) {
            match result {
                Ok(hash) => {
                    forward.push(bytes);
                    self.awaiting.insert(hash, *sender);
                    self.answer(*sender, hash, Answer::Admitted);
                }
                Err(refusal) => {
                    let code = match bytes.is_empty() {
                        true => txport::CODE_FRAME_LENGTH,
                        false => txport::refusal_code(&refusal),
                    };
                    let hash = TxHash(*blake3::hash(bytes).as_bytes());
                    self.answer(*sender, hash, Answer::Refused(code));
                }
            }
        }
        (!forward.is_empty())
            .then(|| consensus::host::app_frame(&txport::encode_list(forward.into_iter())))
    }

    /// Tells a transaction's sender what became of it: a transaction-port notice, or a
    /// gateway `TransactionStatus` (a gateway session hears of its execution through the
    /// block's outputs instead of `finalized`).
    fn answer(&mut self, sender: Sender, hash: TxHash, answer: Answer) {
        match sender {
            Sender::Port(id) => {
                let (kind, code, height) = match answer {
                    Answer::Admitted => (NoticeKind::Admitted, 0, 0),
                    Answer::Refused(code) => (NoticeKind::Refused, code, 0),
                    Answer::Finalized(height) => (NoticeKind::Finalized, 0, height),
                    Answer::Evicted(code) => (NoticeKind::Evicted, code, 0),
                };
                let notice = Notice {
                    kind,
                    code,
                    hash,
                    height,
                };
                self.notify(id, &notice);
            }
            Sender::Json(id, line) => {
                let status = match answer {
                    Answer::Admitted => LineStatus::Admitted,
                    Answer::Refused(code) => LineStatus::Refused(txport::code_name(code)),
                    Answer::Evicted(code) => LineStatus::Evicted(txport::code_name(code)),
                    Answer::Finalized(_) => return,
                };
                if let Some(json) = self.json.as_mut() {
                    json.status(id, line, &hex(&hash.0), status);
                }
            }
            Sender::Gateway(client) => {
                let (status, code) = match answer {
                    Answer::Admitted => (TX_ADMITTED, 0),
                    Answer::Refused(code) => (TX_REFUSED, code),
                    Answer::Evicted(code) => (TX_EVICTED, code),
                    Answer::Finalized(_) => return,
                };
                if let Some(gateway) = &self.gateway {
                    gateway.send(ToGateway::Status {
                        client,
                        hash: hash.0,
                        status,
                        code: code.into(),
                    });
                }
            }
        }
    }

    /// Queues a notice for a client; a client whose queue is full is dropped (slow).
    fn notify(&mut self, id: u64, notice: &Notice) {
        let Some(outbox) = self.clients.get(&id) else {
            return;
        };
        if outbox.try_send(notice.encode()).is_err() {
            self.clients.remove(&id);
        }
    }

    /// Executes a decided block (durable already; the host checked its parent root), feeds
    /// its results to the gateway and the JSON port, tells the clients of its transactions,
    /// logs height and execution root (unless `recovering` it from the block file), and
    /// writes a snapshot every `snapshot_every` blocks. Returns the execution root after it.
    fn apply_decided(
        &mut self,
        cert: &CommitCertificate,
        recovering: bool,
        now_ns: u64,
    ) -> Result<Hash, HostError> {
        let block = &cert.block;
        let height = block.height;
        let txs = check_payload(self.shared.get_mut(), &block.payload)
            .map_err(|what| HostError::BadPayload { height, what })?;
        let refs: Vec<&SignedTransaction> = txs.iter().filter_map(BlockItem::core).collect();
        let hashes: Vec<TxHash> = refs.iter().map(|tx| tx.hash()).collect();
        let root = self.execute_items(height, &txs, &hashes)?;
        let shared = self.shared.get_mut();
        shared.block_time_ms = (block.timestamp_ns / MS).max(shared.block_time_ms);
        let evm_included = evm_item_hashes(&txs);
        let (evicted, evm_evicted) = {
            let Shared {
                mempool, execution, ..
            } = shared;
            let evm_evicted = mempool.on_evm_block(&evm_included, &*execution);
            (
                mempool.on_block(&hashes, now_ns / MS, &*execution),
                evm_evicted,
            )
        };
        self.note_evm_evicted(height, evm_evicted)?;
        let orders: usize = refs.iter().map(|tx| tx.tx.actions.len()).sum();
        self.notify_block(height, hashes, evicted);
        // The `final` line is built only if it is printed (not on `nexus run`).
        if !recovering && !self.quiet_blocks {
            log_line(json!({
                "event": "final", "index": self.index, "height": height, "round": cert.round,
                "txs": refs.len(), "orders": orders, "evm_txs": evm_included.len(),
                "ts_ns": block.timestamp_ns, "decided_ns": now_ns,
                "root": hex(&root.0),
            }))?;
        }
        let snapshot_due = self.snapshot_every > 0 && height.is_multiple_of(self.snapshot_every);
        if !recovering && snapshot_due {
            self.write_snapshot(cert, root)?;
        }
        Ok(root)
    }

    /// Validates and executes a decided block's items, numbering its inputs and handing
    /// their results to the gateway (every event, level changes) and the JSON port (its own
    /// lines' results, and events of followed accounts).
    fn execute_items(
        &mut self,
        height: Height,
        txs: &[BlockItem],
        hashes: &[TxHash],
    ) -> Result<Hash, HostError> {
        let mut feed = BlockFeed::new(self.inputs_executed, height, hashes.len());
        if self.gateway.is_some() {
            feed.senders = hashes
                .iter()
                .map(|h| match self.awaiting.get(h) {
                    Some(Sender::Gateway(client)) => *client,
                    _ => NOBODY,
                })
                .collect();
        }
        // JSON lines of this block: (transaction index, connection, line), and their events.
        let json_lines: Vec<(usize, u64, u64)> = hashes
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match self.awaiting.get(h) {
                Some(Sender::Json(id, line)) => Some((i, *id, *line)),
                _ => None,
            })
            .collect();
        let mut json_events: Vec<(usize, usize, engine::Event)> = Vec::new();
        let watched = self.json.as_ref().is_some_and(JsonPort::has_watchers);
        let mut block_events: Vec<(u64, Option<u64>, engine::Event)> = Vec::new();
        // Item index -> index among the block's Core transactions.
        let core_index: Vec<Option<usize>> = txs
            .iter()
            .scan(0usize, |next, item| {
                Some(item.core().map(|_| {
                    *next += 1;
                    *next - 1
                }))
            })
            .collect();
        let shared = self.shared.get_mut();
        // Signatures were checked by check_payload just before, which remembered the EVM
        // senders it recovered.
        let senders = |h: &alloy_primitives::B256| shared.mempool.evm_sender(h);
        let valid = shared
            .execution
            .validate_block_with(
                shared.block_time_ms,
                txs,
                &vec![Ok(()); hashes.len()],
                &senders,
            )
            .map_err(|e| HostError::BadPayload {
                height,
                what: e.to_string(),
            })?;
        let executed = shared.execution.execute_block(valid, |origin, event| {
            let origin = match origin {
                execution::Origin::Tx { index, action } => execution::Origin::Tx {
                    index: core_index.get(index).copied().flatten().unwrap_or(index),
                    action,
                },
                other => other,
            };
            let mut from = None;
            if let execution::Origin::Tx { index, action } = origin {
                if let Some((_, id, _)) = json_lines.iter().find(|(i, _, _)| *i == index) {
                    json_events.push((index, action, *event));
                    from = Some(*id);
                }
            }
            let seq = feed.event(origin, event);
            if watched {
                block_events.push((seq, from, *event));
            }
        });
        let root = executed.root;
        self.eth_history.push(&executed.evm);
        let first_seq = self.inputs_executed + 1;
        self.inputs_executed = feed.inputs_executed();
        if let Some(gateway) = &self.gateway {
            let mut changes = Vec::new();
            shared.execution.drain_level_changes(&mut changes);
            gateway.send(ToGateway::Block {
                height,
                block_time_ms: shared.block_time_ms,
                outputs: feed.finish(changes),
            });
        }
        if let Some(json) = self.json.as_mut() {
            json.block_events(&block_events);
            for (index, id, line) in json_lines {
                let events: Vec<(usize, engine::Event)> = json_events
                    .iter()
                    .filter(|(i, _, _)| *i == index)
                    .map(|(_, action, event)| (*action, *event))
                    .collect();
                json.executed(id, line, first_seq + index as u64, height, &events);
            }
        }
        Ok(Hash(root))
    }

    /// EVM transactions the pool evicted after block `height`: nobody is connected to
    /// tell (a client polls), so each is logged (`evm_evicted`) and remembered for
    /// `eth_getTransactionByHash`, which answers with the reason.
    fn note_evm_evicted(
        &mut self,
        height: Height,
        evicted: Vec<mempool::EvmEvicted>,
    ) -> Result<(), HostError> {
        for gone in evicted {
            let mempool::EvmRefusal::Tx(reason) = gone.reason else {
                continue;
            };
            self.event(json!({
                "event": "evm_evicted", "index": self.index, "height": height,
                "hash": format!("{:#x}", gone.eth_hash), "reason": reason.to_string(),
            }))?;
            let drop = evm_bridge::executor::DroppedTx {
                hash: gone.eth_hash,
                sender: gone.sender,
                nonce: gone.nonce,
                reason,
            };
            self.eth_history.note_dropped(height, drop);
        }
        Ok(())
    }

    /// `finalized` to the clients of a block's transactions, `evicted` to those of pooled
    /// transactions that can no longer be included.
    fn notify_block(&mut self, height: Height, hashes: Vec<TxHash>, evicted: Vec<Evicted>) {
        for hash in hashes {
            if let Some(sender) = self.awaiting.remove(&hash) {
                self.answer(sender, hash, Answer::Finalized(height));
            }
        }
        for gone in evicted {
            if let Some(sender) = self.awaiting.remove(&gone.hash) {
                let code = txport::refusal_code(&gone.reason);
                self.answer(sender, gone.hash, Answer::Evicted(code));
            }
        }
    }

    /// Writes the executed state after block `cert` (execution root `root`) durably and logs
    /// it.
    fn write_snapshot(&mut self, cert: &CommitCertificate, root: Hash) -> Result<(), HostError> {
        let shared = self.shared.get_mut();
        let snapshot = Snapshot {
            height: cert.block.height,
            exec_root: root.0,
            inputs_executed: self.inputs_executed,
            block_time_ms: shared.block_time_ms,
            block_id: cert.block.id().0,
            block_timestamp_ns: cert.block.timestamp_ns,
            execution: shared.execution.snapshot(),
        };
        let bytes = snapshot.execution.len();
        let path = chain_snapshot::write(&self.snapshots, &snapshot)
            .map_err(|e| HostError::Io(self.snapshots.clone(), e))?;
        self.event(json!({
            "event": "snapshot", "index": self.index, "height": snapshot.height, "bytes": bytes,
            "path": path.display().to_string(),
        }))
    }

    /// Starts from `snapshot` if it belongs to this block file (its block's id is the stored
    /// block's at that height) and its state has the recorded root: returns its height and
    /// root, or `None` (execute from genesis) if it does not fit.
    fn load_snapshot(
        &mut self,
        snapshot: Snapshot,
        stored: &[CommitCertificate],
    ) -> Option<(Height, Hash)> {
        let height = snapshot.height;
        let fits = height >= 1
            && stored
                .get(height as usize - 1)
                .is_some_and(|cert| cert.block.id().0 == snapshot.block_id);
        let restored = Execution::restore(self.execution_config.clone(), &snapshot.execution);
        let mut execution = match (fits, restored) {
            (true, Ok(execution)) => execution,
            (fits, restored) => {
                let why = restored
                    .err()
                    .map_or("another chain's block".into(), |e| e.to_string());
                eprintln!("nexus validator: snapshot at {height} not used (fits: {fits}): {why}");
                return None;
            }
        };
        if execution.root() != snapshot.exec_root {
            eprintln!("nexus validator: snapshot at {height} not used: its state has another root");
            return None;
        }
        self.eth_history = EthHistory::new(execution.evm().head(), self.eth_history.capacity());
        let shared = self.shared.get_mut();
        shared.execution = execution;
        shared.block_time_ms = snapshot.block_time_ms;
        self.inputs_executed = snapshot.inputs_executed;
        Some((height, Hash(snapshot.exec_root)))
    }

    /// This validator's proposal payload: what its pool holds (arrival order).
    fn proposal_payload(&self) -> Vec<u8> {
        let shared = self.shared.borrow();
        let budget = shared
            .max_block_bytes
            .saturating_sub(4 + 4 * shared.max_block_txs);
        let pending = shared.mempool.proposal(shared.max_block_txs, budget);
        // EVM items after the Core ones, within what is left of the block's limits and the
        // EVM gas share (so the proposal is a valid block).
        let used: usize = pending.iter().map(|tx| tx.bytes().len()).sum();
        let evm = shared.mempool.evm_proposal(
            shared
                .max_block_txs
                .saturating_sub(pending.len() + self.forged.iter().count()),
            budget.saturating_sub(used),
            mempool::EvmView::evm_gas_share(&shared.execution),
        );
        let forged = self.forged.iter().map(Vec::as_slice);
        let items: Vec<&[u8]> = forged
            .chain(pending.iter().map(|tx| tx.bytes()))
            .chain(evm.iter().map(|item| item.bytes()))
            .collect();
        txport::encode_list(items.into_iter())
    }
}
