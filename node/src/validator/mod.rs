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
//! - Clients send transactions to any validator's transaction port ([`txport`]). The
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
//! - EVM transactions come through the Ethereum JSON-RPC port ([`eth_rpc`]):
//!   admitted into the same pool (`Mempool::admit_evm`), forwarded like Core ones, proposed
//!   after the Core transactions within the EVM gas share; the EVM blocks executed are kept
//!   (bounded) for the port's reads.
//! - Every `snapshot_every` blocks the executed state is written ([`state_sync::snapshot`]);
//!   at start the newest matching snapshot is loaded and only later blocks are executed.
//!
//! The time a block's nonces are checked against is the timestamp of the block before it
//! (the chain's genesis time for block 1), which every validator knows when it validates.
//!
//! Frames between validators (first byte): 1 = a consensus message, 2 = a sync request
//! (`from_height u64`), answered with up to [`SYNC_BATCH`] commit certificates, 3 = a batch of
//! block items forwarded from clients ([`txport::encode_list`]; an item starting with
//! `0xEE` is an EVM transaction, `0xAC` a signed chain action for the action pool
//! ([`crate::chain_actions`]), any other a Core one).
//!
//! Signed chain actions (staking, unjail, governance) from any key come on the JSON port
//! (`action` lines, `nexus stake` / `nexus gov`): checked against the chain state after the
//! last block, pooled, forwarded, proposed by whichever validator proposes next, and
//! answered once a decided block holds them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use consensus::chain::ChainState;
use consensus::governance::{ChainParams, ParamKey};
use consensus::host::{Action, AppProposal, Application, Frame, Host};
use consensus::messages::CommitCertificate;
use consensus::protocol::{Config as ConsensusConfig, TimeoutConfig};
use consensus::safety::{FileStore, SafetyStore, StoreError};
use consensus::types::{Ed25519, Hash, Height, Keypair, ValidatorId};
use consensus::validators::Validator;
use consensus_net::{
    BlockStore, BlockStoreError, Inbox, Lane, NetConfig, NetError, Network, Peer, Received,
};
use engine::EngineConfig;
use eth_rpc::{EthFeeds, EthHistory, EthPort, EthRequest};
use execution::coprocessor::CallResult;
use execution::{Execution, ExecutionConfig};
use mempool::{Evicted, Mempool, MempoolConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;
use state_sync::snapshot::{self, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use transactions::{BlockItem, SignedTransaction, TxHash};
use txport::compact;
use txport::{Notice, NoticeKind};

use crate::chain_actions::{self, ActionPool};
use crate::chain_gateway::{
    self, BlockFeed, ChainGatewayConfig, GatewayHandle, GatewayTx, ToGateway, NOBODY,
};
use crate::chain_json::{self, ChainDesk, JsonEvent, JsonPort, LineStatus};
use crate::load::{self, LoadSpec};
use crate::rate::RateLimits;
use gateway::wire::{TX_ADMITTED, TX_EVICTED, TX_REFUSED};
use sequencer::{ClientRef, DataDirLock, LockError};

mod app;
mod byzantine;
mod clients;
mod config;
mod forgery;
mod join;
mod recover;
mod slow_disk;
mod snapshot_writer;
mod verifier;

use app::*;
use clients::*;
use config::{consensus_config, genesis_chain};
pub use config::{
    dev_evm_balance, dev_evm_key, evm_address, execution_config, genesis_execution, read_config,
    DevnetConfig, EngineLimits, GenesisParams, TimeoutsMs, ValidatorEntry, DEFAULT_ACCOUNT_RATE,
    DEFAULT_CERTIFICATES_IN_MEMORY,
};
use verifier::{ForwardVerifier, VerifiedForward, VerifiedHere};

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
    /// withdrawal for trading account 0, signed by another key) first in every proposal
    /// (`validator::forgery`). Honest validators must not vote for those blocks.
    #[arg(long, hide = true)]
    pub byzantine_forge: bool,
    /// Test only: a byzantine proposer that puts a transaction of an executed block (its
    /// nonce used) first in every proposal (`validator::forgery`). Honest validators must
    /// not vote for those blocks.
    #[arg(long, hide = true, conflicts_with = "byzantine_forge")]
    pub byzantine_replay: bool,
    /// Test only: a byzantine proposer that puts a deposit for trading account 0, validly
    /// signed by trading account 1 (no faucet), first in every proposal
    /// (`validator::forgery`). Honest validators must not vote for those blocks.
    #[arg(long, hide = true, conflicts_with_all = ["byzantine_forge", "byzantine_replay"])]
    pub byzantine_deposit: bool,
    /// Test only: add forged items (unsigned, signed by another account's key, undecodable)
    /// to every batch of transactions forwarded to the peers (`validator::forgery`). Honest
    /// validators must refuse them at admission.
    #[arg(long, hide = true)]
    pub byzantine_forward_forged: bool,
    /// Test only: a slow disk (`validator::slow_disk`): before each safety save and block
    /// append, wait as the file PATH says now (`MIN-MAX` ms, drawn uniformly; missing, empty
    /// or `0`: no wait). Never on a real validator.
    #[arg(long, hide = true, value_name = "PATH")]
    pub test_slow_disk: Option<PathBuf>,
    /// Test only: behave as an equivocating validator (`validator::byzantine`): each of its
    /// proposals for a new block goes to half its peers, a twin block (1 ns later) signed
    /// for the same height and round to the others, and it prevotes for both. Honest
    /// validators must stay safe and live, and slash and jail it from the evidence.
    #[arg(long, hide = true)]
    pub byzantine_equivocate: bool,
    /// Test only: behave as a double voter (`validator::byzantine`): it proposes honestly,
    /// but each of its prevotes for a block is followed by a prevote for nil at the same
    /// height and round. Honest validators must stay safe and live, and slash and jail it.
    #[arg(long, hide = true, conflicts_with = "byzantine_equivocate")]
    pub byzantine_double_vote: bool,
    /// This validator's safety file was lost (with the rest of its data folder): hold
    /// signing as when the file is missing beside a block file (docs/consensus.md, "Lost
    /// safety state").
    #[arg(long)]
    pub safety_lost: bool,
    /// Reach validator J at ADDR instead of its configured address (repeatable; `J=ADDR`):
    /// a proxy in front of it, for link-fault tests (`node::fault_proxy`). Only where this
    /// validator sends changes; it still listens on its configured address.
    #[arg(long = "peer-addr", value_name = "J=ADDR", value_parser = parse_peer_addr)]
    pub peer_addrs: Vec<(usize, SocketAddr)>,
}

/// Parses `--peer-addr J=ADDR`.
fn parse_peer_addr(text: &str) -> Result<(usize, SocketAddr), String> {
    let (index, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected J=ADDR"))?;
    let index = index
        .parse()
        .map_err(|e| format!("{index:?}: not a validator index: {e}"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("{addr:?}: not a socket address: {e}"))?;
    Ok((index, addr))
}

/// `peers` with the addresses `--peer-addr` overrides (an index outside the configuration
/// is an error).
fn dial_addresses(
    mut peers: Vec<Peer>,
    overrides: &[(usize, SocketAddr)],
) -> Result<Vec<Peer>, HostError> {
    for &(index, addr) in overrides {
        let peer = peers
            .get_mut(index)
            .ok_or_else(|| HostError::Config(format!("--peer-addr: no validator {index}")))?;
        peer.addr = addr;
    }
    Ok(peers)
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
    /// The lock on the validator's data folder, if the caller holds it already (`nexus run`
    /// takes it before writing the chain file); else the validator takes it itself.
    pub data_dir_lock: Option<Arc<DataDirLock>>,
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
    /// Another process holds the data folder, or it cannot be locked.
    #[error(transparent)]
    Lock(#[from] LockError),
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
    /// The co-processor registry names code this binary does not carry.
    #[error("after block {height}: {error}")]
    Registry {
        /// The block after which the registry changed.
        height: Height,
        /// What the execution could not follow.
        error: execution::RegistryError,
    },
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

/// The shell: the host library driven by QUIC, the safety journal, the block file and the
/// wall clock.
struct Shell {
    host: Host<Ed25519, NodeApp>,
    net: Network,
    safety: FileStore,
    blocks: BlockStore,
    /// Signing is held after a lost safety file (`safety_resumed` is logged when it ends).
    signing_held: bool,
    /// Checks the signatures of peers' forwarded transactions off the loop.
    verifier: ForwardVerifier,
    /// Serves this validator's newest snapshot to peers (state sync).
    server: state_sync::SnapshotServer,
    /// After joining from a snapshot: the catch-up to the peers' height, until logged.
    catch_up: Option<join::CatchUp>,
    /// Certificates received while joining, handed to the host once it started.
    pending_frames: Vec<Received>,
    /// Blocks kept before the newest snapshot (0: all).
    prune_keep_blocks: u64,
    /// A chain of one: the loop yields its core to the gateway thread after handing it
    /// answers ([`let_gateway_answer`]).
    alone: bool,
    /// Rewrites broadcasts to equivocate (test only, `--byzantine-equivocate`).
    equivocator: Option<byzantine::Equivocator>,
    /// Adds forged items to forwarded batches (test only, `--byzantine-forward-forged`).
    forward_forger: Option<forgery::ForwardForger>,
    /// Delays durable writes (test only, `--test-slow-disk`).
    slow_disk: Option<slow_disk::SlowDisk>,
}

/// Clock difference allowed between validators when a validator that lost its safety file
/// waits for a block stamped after its restart (docs/consensus.md, "Lost safety state").
const CLOCK_SKEW_NS: u64 = 1_000_000_000;

/// SIGXFSZ (Linux, and macOS): a write past the file size limit (`RLIMIT_FSIZE`).
const SIGXFSZ: i32 = 25;

/// SIGINT and SIGTERM, which stop the validator between two events; and SIGXFSZ, caught
/// and never acted on.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    /// Caught so that a write past the file size limit fails with `EFBIG` (a typed error
    /// naming the file, which stops the validator before anything after it) instead of
    /// killing the process with a core dump.
    _file_size: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<StopSignals, HostError> {
        use tokio::signal::unix::{signal, SignalKind};
        let error = |e| HostError::Io(PathBuf::from("signal handler"), e);
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).map_err(error)?,
            terminate: signal(SignalKind::terminate()).map_err(error)?,
            _file_size: signal(SignalKind::from_raw(SIGXFSZ)).map_err(error)?,
        })
    }
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
            stderr_line(format_args!("{name}: cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    // QUIC runs on its own thread: its packets (and acknowledgements) keep flowing while
    // this thread executes a block or verifies a batch, so peers' round-trip estimates and
    // congestion windows do not suffer from this validator's work (docs/consensus.md).
    let quic = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("nexus-quic")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            stderr_line(format_args!("{name}: cannot start the QUIC runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_validator(args, options, quic.handle().clone())) {
        Ok(()) | Err(HostError::LogClosed) => ExitCode::SUCCESS,
        Err(e) => {
            stderr_line(format_args!("{name}: {e}"));
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

/// What recovery found: the block file's height, the snapshot used, bytes cut.
struct Recovery {
    blocks: u64,
    snapshot_height: Height,
    torn_bytes_cut: u64,
    /// The height of the peer's snapshot this validator joined from, if it did.
    state_sync_height: Option<Height>,
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
        "state_sync_height": recovery.state_sync_height,
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

async fn run_validator(
    args: ValidatorArgs,
    mut options: NodeOptions,
    quic: tokio::runtime::Handle,
) -> Result<(), HostError> {
    let data_dir = data_dir_of(&args);
    let _lock = lock_data_dir(&data_dir, options.data_dir_lock.take())?;
    let config = read_config(&args.config)?;
    let entry = config
        .validators
        .get(args.index)
        .cloned()
        .ok_or_else(|| HostError::Config(format!("no validator {}", args.index)))?;
    let (seed, keypair) = validator_key(&data_dir, &args, &entry)?;
    let chain_id = config.chain_id_bytes()?;
    let (chain, peers) = genesis_chain(&config)?;
    let genesis = chain.clone();
    let (mut app, exec_root) = node_app(&args, &config, &data_dir)?;
    app.quiet_blocks = options.quiet_blocks;
    app.stderr_events = options.stderr_events;
    // An equivocator rewrites whole proposals (`byzantine::Equivocator`); a chain of one
    // sends its proposals to nobody.
    app.compact_proposals &= byzantine_mode(&args).is_none() && config.validators.len() > 1;
    let (blocks, cut) = BlockStore::open(&data_dir.join("blocks"))?;
    let mut safety = FileStore::new(&data_dir.join("safety"));
    let saved = safety.load()?;
    let had_safety_state = saved.is_some();
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
    let window = usize::try_from(config.certificates_in_memory).unwrap_or(usize::MAX);
    host.set_certificate_archive(Box::new(blocks.archive()), window);
    // A missing safety file beside decided blocks (or `--safety-lost`): this validator may
    // have signed at the height in progress when it stopped. Alone, nobody else holds votes
    // it could contradict.
    let lost = !had_safety_state
        && (blocks.first_height().is_some() || args.safety_lost)
        && config.validators.len() > 1;
    let restart_ns = now_ns();
    if lost {
        host.hold_signing(restart_ns, CLOCK_SKEW_NS);
    }
    let dial = dial_addresses(peers.clone(), &args.peer_addrs)?;
    let (net, mut rx) = {
        let _on_quic_thread = quic.enter();
        Network::start(NetConfig::new(seed, entry.addr, dial))?
    };
    let (client_tx, tx_port) = mpsc::channel::<ClientEvent>(1 << 16);
    let listener = tokio::net::TcpListener::bind(entry.tx_addr)
        .await
        .map_err(|e| HostError::Io(PathBuf::from(entry.tx_addr.to_string()), e))?;
    let tx_addr = listener.local_addr().unwrap_or(entry.tx_addr);
    tokio::spawn(accept_clients(listener, client_tx));
    let here = host.app().shared.borrow().verified_here.clone();
    let (verifier, forwards) = ForwardVerifier::spawn(here)
        .map_err(|e| HostError::Io(PathBuf::from("nexus-verify"), e))?;
    let mut validator = Shell {
        host,
        net,
        safety,
        blocks,
        signing_held: lost,
        verifier,
        server: state_sync::SnapshotServer::new(
            data_dir.join("snapshots"),
            state_sync::attest::Attester::new(keypair.clone(), chain_id),
        ),
        catch_up: None,
        pending_frames: Vec::new(),
        prune_keep_blocks: config.prune_keep_blocks,
        alone: config.validators.len() == 1,
        equivocator: byzantine_mode(&args).map(|mode| {
            let ids: Vec<ValidatorId> = peers.iter().map(|p| p.id).collect();
            byzantine::Equivocator::new(mode, keypair.clone(), chain_id, &ids)
        }),
        forward_forger: args
            .byzantine_forward_forged
            .then(|| config.load_spec().and_then(forgery::ForwardForger::new))
            .transpose()?,
        slow_disk: args
            .test_slow_disk
            .clone()
            .map(|path| slow_disk::SlowDisk::new(path, args.index as u64)),
    };
    if let Some(path) = &args.test_slow_disk {
        log_line(json!({"event": "test_hook", "index": args.index,
            "slow_disk": path.display().to_string()}))?;
    }
    // With an empty block file, or behind what pruning peers still hold, join from a
    // peer's snapshot; else recover from the block file.
    let peer_count = config.validators.len() - 1;
    let ours = validator.blocks.height();
    let mut joined = None;
    if config.state_sync && peer_count > 0 && (ours == 0 || config.prune_keep_blocks > 0) {
        joined = validator
            .join(&mut rx, &genesis, &chain_id, peer_count)
            .await?;
    }
    let from = match joined {
        Some(height) => height,
        None => validator.recover(&chain_id)?,
    };
    // A joined validator's folder had no safety file (new, or wiped): it cannot tell what
    // it signed before, so it holds signing as after a lost safety file.
    if joined.is_some() && !had_safety_state && !lost {
        validator.host.hold_signing(restart_ns, CLOCK_SKEW_NS);
        validator.signing_held = true;
    }
    let recovered = validator.blocks.height();
    let (gateway_tx, gateway) = mpsc::channel::<Vec<GatewayTx>>(1024);
    let gateway_addrs = validator.start_gateway(&entry, chain_id, gateway_tx)?;
    let (json_tx, json) = mpsc::channel::<JsonEvent>(1 << 12);
    let json_addr = validator
        .start_json(&entry, &config, &keypair, json_tx)
        .await?;
    let (eth_tx, eth) = mpsc::channel::<EthRequest>(eth_rpc::QUEUE);
    // The server stops when its handle is dropped: kept until the validator stops.
    let eth_server = start_eth(&entry, eth_tx).await?;
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
        state_sync_height: joined,
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
    if lost {
        validator.host.app().event(json!({
            "event": "safety_lost", "index": args.index, "restart_ns": restart_ns,
            "blocks": recovered,
        }))?;
    }
    validator.host.start(now_ns())?;
    validator.perform()?;
    for r in std::mem::take(&mut validator.pending_frames) {
        validator.on_frame(r)?;
    }
    validator.perform()?;
    let channels = ClientChannels {
        tx_port,
        json,
        gateway,
        eth,
    };
    let stopped = validator.run((rx, forwards), channels, stop).await;
    drop(eth_server);
    stopped?;
    // A clean stop leaves the snapshot being written complete.
    validator.after_snapshots(true)?;
    log_line(json!({
        "event": "stopped", "height": validator.host.chain().height(),
        "state_root": hex(&validator.host.exec_root().0),
    }))
}

/// The validator's data folder: `--data-dir`, or `validator-<I>` beside the configuration.
fn data_dir_of(args: &ValidatorArgs) -> PathBuf {
    args.data_dir.clone().unwrap_or_else(|| {
        args.config
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("validator-{}", args.index))
    })
}

/// The lock on `dir`, held until the validator stops: `held` (the caller's lock on that
/// folder), or taken now. Another process holding it is an error naming the folder and that
/// process, returned before anything in the folder is read or written.
fn lock_data_dir(
    dir: &Path,
    held: Option<Arc<DataDirLock>>,
) -> Result<Arc<DataDirLock>, HostError> {
    match held {
        Some(lock) => {
            assert_eq!(lock.dir(), dir, "the caller locked another folder");
            Ok(lock)
        }
        None => Ok(Arc::new(DataDirLock::acquire(dir)?)),
    }
}

/// The validator's key seed and key pair, read from `data_dir`; an error unless the key
/// file holds the key the configuration names for this validator.
fn validator_key(
    data_dir: &Path,
    args: &ValidatorArgs,
    entry: &ValidatorEntry,
) -> Result<([u8; 32], Keypair), HostError> {
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
    Ok((seed, keypair))
}

/// The Ethereum JSON-RPC server, if configured: its bound address and handle (dropping the
/// handle stops it).
async fn start_eth(
    entry: &ValidatorEntry,
    requests: mpsc::Sender<EthRequest>,
) -> Result<Option<(SocketAddr, jsonrpsee::server::ServerHandle)>, HostError> {
    let Some(addr) = entry.eth_addr else {
        return Ok(None);
    };
    let server = eth_rpc::serve(addr, requests)
        .await
        .map_err(|e| HostError::Io(PathBuf::from(addr.to_string()), e))?;
    Ok(Some(server))
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
        key: &Keypair,
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
        let mut port = JsonPort::new(
            &config.genesis_lines()?,
            spec.chain_id,
            &load::account_keys(&spec),
            config.dev_roles(),
        )
        .map_err(|e| HostError::Config(format!("genesis: {e}")))?;
        port.allow_governance(key.clone());
        self.host.app_mut().json = Some(port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| HostError::Io(PathBuf::from(addr.to_string()), e))?;
        let bound = listener.local_addr().unwrap_or(addr);
        let max_line_bytes = usize::try_from(config.json_max_line_bytes).unwrap_or(usize::MAX);
        tokio::spawn(chain_json::accept(listener, events, max_line_bytes));
        Ok(Some(bound))
    }

    /// The event loop: timers, peers' frames (forwarded transactions back from the
    /// verifier) and clients' transactions (transaction port, JSON port, gateway), each
    /// followed by the host's actions.
    async fn run(
        &mut self,
        (mut rx, mut forwards): (Inbox, mpsc::Receiver<VerifiedForward>),
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
                        let Some(r) = rx.try_recv() else { break };
                        self.on_frame(r)?;
                    }
                    self.perform()?;
                    continue;
                }
                Some(forward) = forwards.recv() => {
                    self.on_verified(forward)?;
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
                        self.forward(frame)?;
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
            let from_gateway = events.iter().any(|e| matches!(e, ClientEvent::Gateway(_)));
            let (app, chain) = self.host.app_and_chain();
            let forward = app.on_clients(events, chain, now_ns());
            if from_gateway && self.alone {
                let_gateway_answer();
            }
            if let Some(frame) = forward {
                self.forward(frame)?;
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
        let now_ns = now_ns();
        self.host.app_mut().peers_heard.insert(r.from, now_ns / MS);
        self.note_catch_up(r.frame.len())?;
        if self.serve_state_sync(r.from, &r.frame) {
            return Ok(());
        }
        if r.frame.first() != Some(&consensus::host::FRAME_APP) {
            return self.hand_to_host(r.from, &r.frame, now_ns);
        }
        // Forwarded transactions go to the verifier first (they come back verified, in
        // order; a compact proposal may name them meanwhile); if its queue is full, they
        // are admitted here, checked on this loop.
        let frame: Arc<[u8]> = r.frame.into();
        if self.verifier.offer(r.from, frame.clone()).is_ok() {
            self.host.app_mut().forwards_in_flight.push_back(frame);
            return Ok(());
        }
        self.hand_to_host(r.from, &frame, now_ns)
    }

    /// Hands the host a frame, after performing what earlier frames queued unless it is a
    /// consensus message.
    fn hand_to_host(
        &mut self,
        from: ValidatorId,
        frame: &[u8],
        now_ns: u64,
    ) -> Result<(), HostError> {
        if frame.first() != Some(&consensus::host::FRAME_MESSAGE) {
            self.perform()?;
        }
        self.host.on_frame(from, frame, now_ns)?;
        Ok(())
    }

    /// A forwarded frame back from the verifier: what verified there is admitted without
    /// checking its signature again.
    fn on_verified(&mut self, forward: VerifiedForward) -> Result<(), HostError> {
        self.perform()?;
        let app = self.host.app_mut();
        let oldest = app.forwards_in_flight.pop_front();
        debug_assert!(oldest.is_some_and(|f| Arc::ptr_eq(&f, &forward.frame)));
        let mempool = &mut app.shared.get_mut().mempool;
        for hash in forward.verified {
            mempool.note_verified(hash);
        }
        self.host.on_frame(forward.from, &forward.frame, now_ns())?;
        self.perform()
    }

    /// Logs `signing_resumed` once a held validator may sign again (after block `height`).
    fn note_signing_resumed(&mut self, height: Height) -> Result<(), HostError> {
        if self.signing_held && !self.host.signing_held() {
            self.signing_held = false;
            self.host.app().event(json!({
                "event": "signing_resumed", "index": self.host.app().index, "after_height": height,
            }))?;
        }
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
                    let lane = lane_of(&frame);
                    self.net.send(&to, frame, lane);
                }
                Action::Broadcast(frame) => self.broadcast(frame)?,
                Action::PersistSafety(state) => {
                    self.slow_write()?;
                    self.safety.save(&state)?
                }
                Action::PersistBlock(cert) => {
                    self.slow_write()?;
                    self.blocks.append(&cert)?;
                    let compact = self.host.compact_stats();
                    self.host.app_mut().compact_stats = compact;
                    self.host.block_durable(cert.block.height, now_ns())?;
                    self.note_signing_resumed(cert.block.height)?;
                }
                Action::Evidence(e) => self.host.app().event(json!({
                    "event": "evidence", "index": self.host.app().index, "height": e.height(),
                    "offender": hex(&e.offender().0),
                }))?,
            }
        }
        self.after_snapshots(false)
    }

    /// Prunes behind each snapshot the writer finished (only a durable snapshot lets
    /// blocks go); `wait`: first wait for the one being written.
    fn after_snapshots(&mut self, wait: bool) -> Result<(), HostError> {
        for height in self.host.app_mut().take_snapshots_written(wait)? {
            self.maybe_prune(height)?;
        }
        Ok(())
    }
}

impl Shell {
    /// Before a durable write: waits as the slow-disk hook says (test only), logging each
    /// change of its range.
    fn slow_write(&mut self) -> Result<(), HostError> {
        let Some(change) = self.slow_disk.as_mut().and_then(|d| d.before_write()) else {
            return Ok(());
        };
        self.host.app().event(json!({
            "event": "slow_disk", "index": self.host.app().index, "range": change.range,
            "writes": change.writes, "slept_ms": change.slept_ms,
        }))
    }

    /// Forwards a batch clients brought to every peer (with forged items added, test only,
    /// `--byzantine-forward-forged`).
    fn forward(&mut self, frame: Frame) -> Result<(), HostError> {
        let Some(forger) = self.forward_forger.as_mut() else {
            self.net.broadcast(frame, Lane::Bulk);
            return Ok(());
        };
        let (forged, event) = forger.forge(&frame, now_ns() / MS);
        self.net.broadcast(forged, Lane::Bulk);
        self.host.app().event(event)
    }

    /// Broadcasts a host frame on its lane, through the equivocator if there is one.
    fn broadcast(&mut self, frame: consensus::host::Frame) -> Result<(), HostError> {
        let lane = lane_of(&frame);
        let Some(equivocator) = self.equivocator.as_mut() else {
            self.net.broadcast(frame, lane);
            return Ok(());
        };
        let (sends, event) = equivocator.on_broadcast(frame);
        for send in sends {
            match send {
                byzantine::Send::All(frame) => self.net.broadcast(frame, lane),
                byzantine::Send::To(to, frame) => {
                    self.net.send(&to, frame, lane);
                }
            }
        }
        match event {
            Some(event) => self.host.app().event(event),
            None => Ok(()),
        }
    }
}

/// Offers the core to the gateway thread, just woken with its sessions' answers, before this
/// loop goes on to propose and execute. The scheduler tends to queue the woken thread behind
/// its waker (same core, cache-hot), so without this a chain of one's answers wait for the
/// block's work (docs/perf.md, "A chain of one": in-node ack p50 152-198 us without, 85-122
/// with). Only a chain of one yields: in a devnet sharing the cores, the yield hands the core
/// to other validators' threads and delays this one's proposals (100k orders/s: finality
/// p50 64-66 ms without, 86-90 ms with).
fn let_gateway_answer() {
    std::thread::yield_now();
}

/// How a validator started with a byzantine test flag equivocates (`None`: it is honest).
fn byzantine_mode(args: &ValidatorArgs) -> Option<byzantine::Mode> {
    if args.byzantine_equivocate {
        Some(byzantine::Mode::SplitProposals)
    } else if args.byzantine_double_vote {
        Some(byzantine::Mode::DoubleVote)
    } else {
        None
    }
}

/// Writes a line to standard error, ignoring a failure to write it: with standard error
/// redirected to a file on a full disk (or past the process's file size limit), reporting
/// the error that stops the validator must not turn its clean exit (status 1) into a panic.
pub(crate) fn stderr_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The lane a host frame goes on: votes, sync requests and asks for a whole proposal
/// first; proposals (compact or whole) and commit certificates (whole blocks) after them,
/// so that a vote never waits behind a block on a congested link; application frames
/// (forwarded transactions and chain actions) last.
fn lane_of(frame: &[u8]) -> Lane {
    match frame {
        [consensus::host::FRAME_APP, ..] => Lane::Bulk,
        [consensus::host::FRAME_COMPACT_PROPOSAL, ..] => Lane::Block,
        [consensus::host::FRAME_MESSAGE, tag, ..]
            if *tag == MESSAGE_PROPOSAL || *tag == MESSAGE_COMMIT =>
        {
            Lane::Block
        }
        _ => Lane::Consensus,
    }
}

/// The tag bytes of a proposal and of a commit certificate (`Message::encode`,
/// docs/consensus.md "Message formats").
const MESSAGE_PROPOSAL: u8 = 1;
const MESSAGE_COMMIT: u8 = 3;
