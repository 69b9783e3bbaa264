//! `nexus devnet`: a local NexusBFT cluster of `nexus validator` processes on 127.0.0.1, and a
//! client that sends them the deterministic stream of signed transactions
//! ([`node::load`]), round robin over every validator's transaction port.
//!
//! The validator host is `node::validator`; the wire formats are docs/transactions.md.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use consensus::governance::ParamKey;
use consensus::types::Keypair;
use node::load::{self, LoadStats};
use node::load_evm;
use node::validator::{
    hex, now_ns, DevnetConfig, GenesisParams, HostError, TimeoutsMs, ValidatorEntry, CONFIG_FILE,
};
use serde::Deserialize;
use serde_json::json;

const MS: u64 = 1_000_000;
/// After a timed run with an EVM load, how long its last transactions' receipts are awaited.
const EVM_DRAIN: Duration = Duration::from_secs(10);

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
    /// First UDP port on 127.0.0.1 (validator i listens on PORT + i, and serves TCP ports
    /// PORT + N + i (transactions), PORT + 2N + i (order entry), PORT + 3N + i (market
    /// data), PORT + 4N + i (JSON, development) and PORT + 5N + i (Ethereum JSON-RPC) for N
    /// validators); 0 picks free ports.
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub base_port: u16,
    /// Orders per second the load client sends, as signed transactions (0: no load).
    #[arg(long, value_name = "N", default_value_t = 2_000)]
    pub rate: u64,
    /// Where the load client sends: `tx-port` (each validator's transaction port, round
    /// robin) or `gateway` (each trading account keeps a session on one validator's binary
    /// order-entry port and sends its transactions there).
    #[arg(long, value_name = "PORT", default_value = "tx-port", value_parser = ["tx-port", "gateway"])]
    pub via: String,
    /// Trading accounts funded at genesis (keys derived from --seed, written to
    /// `dev-keys.txt`); the load client signs round robin over them.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub accounts: u64,
    /// Instead of the trading stream, the load client places N resting orders (GTC, 100 to
    /// 10,099 ticks from the mid: none trades or is cancelled), --bulk per transaction at
    /// --rate orders/s, then stops: fills a running devnet's book (0: the trading stream).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub resting_orders: u64,
    /// Orders (actions) per transaction: one signature covers them all (1..=64).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub bulk: u32,
    /// Most transactions in one block (bounds a block's work: bigger blocks under a backlog
    /// slow every height down).
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub max_block_txs: u32,
    /// Every validator snapshots its executed state every N blocks (0: never); a restarted
    /// validator loads its newest snapshot and executes only the blocks after it.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub snapshot_every: u64,
    /// After each snapshot, every validator drops the blocks older than the snapshot's
    /// height minus N from its block file (0: keep every block).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub prune_keep_blocks: u64,
    /// Most certificates of decided blocks each validator keeps in memory (at least 1); older
    /// ones are read back from its block file for peers that are behind.
    #[arg(long, value_name = "N", default_value_t = node::validator::DEFAULT_CERTIFICATES_IN_MEMORY)]
    pub certificates_in_memory: u64,
    /// Most transactions a second each client connection of a validator may send (bursts of
    /// as many); more are refused `rate_limited` (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    pub connection_rate: u64,
    /// Most transactions a second one account may have admitted through a validator's client
    /// ports, over all its connections (bursts of as many); more are refused
    /// `account_rate_limited` (0: no limit).
    #[arg(long, value_name = "N", default_value_t = node::validator::DEFAULT_ACCOUNT_RATE)]
    pub account_rate: u64,
    /// Without transactions, a block at most every this many ms (0: blocks back to back); a
    /// transaction starts the next height at once.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub empty_block_interval_ms: u64,
    /// Send every proposal whole instead of compact (Core transactions the peers already
    /// hold named by their hash): for comparing the two.
    #[arg(long)]
    pub full_proposals: bool,
    /// EVM blocks each validator keeps in memory for its Ethereum JSON-RPC reads.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub eth_history_blocks: u64,
    /// Blocks before the head whose EVM state each validator keeps for reads and calls at
    /// a past block.
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub eth_state_blocks: u64,
    /// Every validator's stake at genesis.
    #[arg(long, value_name = "STAKE", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub stake: u64,
    /// Blocks per epoch: staking changes (join, set-stake, leave, unjail) apply at epoch
    /// boundaries (default: the chain's, 100).
    #[arg(long, value_name = "BLOCKS")]
    pub epoch_length: Option<u64>,
    /// Blocks a slashed (jailed) validator waits before `nexus stake unjail` is accepted
    /// (default: the chain's, 100).
    #[arg(long, value_name = "BLOCKS")]
    pub jail_period: Option<u64>,
    /// Least stake to join, to set, or to keep for an unjail (default 1).
    #[arg(long, value_name = "STAKE")]
    pub min_stake: Option<u64>,
    /// Seed of the order stream, the trading accounts' keys and the validator keys.
    #[arg(long, value_name = "SEED", default_value_t = 7)]
    pub seed: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub seconds: Option<u64>,
    /// Measure for SECONDS (after 2 s of warm-up) and print the client's figures: finalized
    /// orders/s and order-to-Finalized latency (p50/p99), instead of the status lines. The
    /// client signs the whole run's transactions before the validators start (printed), so
    /// that its signing does not take the validators' cores while they are measured.
    #[arg(long, value_name = "SECONDS")]
    pub bench: Option<u64>,
    /// Write the configuration and keys, print the configuration's path and exit (to start
    /// the validators by hand with `nexus validator`).
    #[arg(long)]
    pub init_only: bool,
    /// EVM load (docs/perf.md, "EVM load"): `transfer` (1 wei between load accounts) or
    /// `order` (CoreWriter `placeOrder`, after one deposit per account), sent with
    /// `eth_sendRawTransaction` to every validator's Ethereum JSON-RPC port (each account to
    /// one validator), its receipts read from validator 0. With --bench, signed ahead and
    /// reported in the `bench` line's `evm` part; use --rate 0 to send EVM transactions only.
    #[arg(long, value_name = "KIND", value_enum)]
    pub evm_load: Option<node::load_evm::EvmLoadKind>,
    /// EVM transactions per second of --evm-load.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub evm_rate: u64,
    /// EVM load accounts funded with 1,000 ether each at genesis (keys:
    /// `node::load_evm::load_key`) [default: 256 with --evm-load, else 0].
    #[arg(long, value_name = "N")]
    pub evm_accounts: Option<u64>,
    /// With --seconds or --bench: fail if, at the end, a validator's last finalized height is
    /// more than this many heights below the highest.
    #[arg(long, value_name = "HEIGHTS", default_value_t = 5)]
    pub max_lag: u64,
}

// ---------------------------------------------------------------------------------------
// The devnet launcher.

fn free_udp_port() -> io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_tcp_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free port from `pick` that none of the devnet's earlier picks has: a port is released
/// as soon as it is picked, so the system may hand it out again for a later one.
fn distinct_port(
    picked: &mut std::collections::BTreeSet<u16>,
    pick: fn() -> io::Result<u16>,
) -> io::Result<u16> {
    for _ in 0..1_000 {
        let port = pick()?;
        if picked.insert(port) {
            return Ok(port);
        }
    }
    Err(io::Error::other("no distinct free port found"))
}

fn write_devnet(args: &DevnetArgs, root: &Path) -> Result<(PathBuf, DevnetConfig), HostError> {
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |e| HostError::Io(p, e)
    };
    std::fs::create_dir_all(root).map_err(io_err(root))?;
    let mut validators = Vec::new();
    let mut picked = std::collections::BTreeSet::new();
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
            distinct_port(&mut picked, free_udp_port).map_err(io_err(root))?
        } else {
            args.base_port
                .checked_add(i as u16)
                .ok_or_else(|| HostError::Config("port out of range".into()))?
        };
        // TCP ports for clients: transactions, order entry, market data, JSON, Ethereum
        // JSON-RPC (PORT + k * N + i).
        let mut tcp = [0u16; 5];
        for (k, slot) in tcp.iter_mut().enumerate() {
            *slot = if args.base_port == 0 {
                distinct_port(&mut picked, free_tcp_port).map_err(io_err(root))?
            } else {
                (k as u16 + 1)
                    .checked_mul(args.validators)
                    .and_then(|offset| port.checked_add(offset))
                    .ok_or_else(|| HostError::Config("port out of range".into()))?
            };
        }
        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        validators.push(ValidatorEntry {
            key: hex(&Keypair::from_seed(seed).id().0),
            addr: local(port),
            tx_addr: local(tcp[0]),
            order_addr: Some(local(tcp[1])),
            data_addr: Some(local(tcp[2])),
            json_addr: Some(local(tcp[3])),
            eth_addr: Some(local(tcp[4])),
            stake: args.stake,
        });
    }
    let resumed = resumed_genesis_time(root, args.validators);
    if resumed.is_some() {
        eprintln!(
            "nexus devnet: {} holds a chain: resuming it (genesis time from its {CONFIG_FILE})",
            root.display()
        );
    }
    let genesis_time_ms = resumed.unwrap_or_else(|| now_ns() / MS);
    let config = DevnetConfig {
        chain_id: hex(&devnet_chain_id(args.seed, genesis_time_ms)),
        genesis_time_ms,
        order_seed: args.seed,
        accounts: args.accounts,
        bulk: args.bulk,
        resting_orders: args.resting_orders,
        rate_per_s: args.rate,
        max_block_txs: args.max_block_txs,
        max_block_bytes: 16 << 20,
        snapshot_every: args.snapshot_every,
        state_sync: true,
        prune_keep_blocks: args.prune_keep_blocks,
        certificates_in_memory: args.certificates_in_memory,
        json_max_line_bytes: node::chain_json::MAX_LINE_BYTES as u64,
        connection_rate: args.connection_rate,
        account_rate: args.account_rate,
        eth_history_blocks: args.eth_history_blocks,
        eth_state_blocks: args.eth_state_blocks,
        load_start_unix_ns: now_ns() + 1_500 * MS,
        genesis: None,
        dev_roles: false,
        dev_evm_secret: Some(node::chain_run::DEV_EVM_SECRET.to_string()),
        eth_dev_signing: true,
        evm_load_accounts: evm_accounts(args),
        empty_block_interval_ms: args.empty_block_interval_ms,
        compact_proposals: !args.full_proposals,
        funding_interval_s: 0,
        engine: None,
        timeouts: TimeoutsMs::default(),
        chain_params: GenesisParams::default()
            .with(ParamKey::EpochLengthBlocks, args.epoch_length)
            .with(ParamKey::JailPeriodBlocks, args.jail_period)
            .with(ParamKey::MinStake, args.min_stake),
        validators,
    };
    let path = root.join(CONFIG_FILE);
    let text = toml::to_string(&config).map_err(|e| HostError::Config(e.to_string()))?;
    std::fs::write(&path, text).map_err(io_err(&path))?;
    write_dev_keys(&root.join(DEV_KEYS_FILE), &config)?;
    let evm_key = root.join(DEV_EVM_KEY_FILE);
    let secret = config.dev_evm_secret()?;
    std::fs::write(&evm_key, format!("0x{}\n", hex(&secret))).map_err(io_err(&evm_key))?;
    Ok((path, config))
}

/// The genesis time of the chain a folder already holds (a validator's block file has
/// blocks, and its configuration names the time), so that running again with the same
/// `--dir` resumes that chain instead of starting one whose genesis differs from its blocks.
/// The other genesis settings come from the same options as before (seed, accounts, ...).
fn resumed_genesis_time(root: &Path, validators: u16) -> Option<u64> {
    let has_blocks = (0..validators).any(|i| {
        let blocks = root.join(format!("validator-{i}")).join("blocks");
        std::fs::metadata(blocks).is_ok_and(|m| m.len() > 0)
    });
    if !has_blocks {
        return None;
    }
    let text = std::fs::read_to_string(root.join(CONFIG_FILE)).ok()?;
    let previous: DevnetConfig = toml::from_str(&text).ok()?;
    Some(previous.genesis_time_ms)
}

/// The EVM load accounts funded at genesis: --evm-accounts, or 256 with --evm-load.
fn evm_accounts(args: &DevnetArgs) -> u64 {
    let default = if args.evm_load.is_some() { 256 } else { 0 };
    args.evm_accounts.unwrap_or(default)
}

/// The EVM load of --evm-load, none without it. With --bench, its transactions (the
/// deposits of `order`, the warm-up, the measured seconds and 4 s to spare) are signed here,
/// before the validators start.
fn evm_load(args: &DevnetArgs, config: &DevnetConfig) -> Option<load_evm::EvmLoad> {
    let kind = args.evm_load?;
    let spec = load_evm::EvmLoadSpec {
        seed: config.order_seed,
        accounts: config.evm_load_accounts.max(1),
        kind,
        chain_id: execution::evm::executor::EvmConfig::default().chain_id,
    };
    let count = args.bench.map_or(0, |seconds| {
        let setup = if kind == load_evm::EvmLoadKind::Order {
            spec.accounts
        } else {
            0
        };
        args.evm_rate.saturating_mul(seconds + 4) + setup
    });
    let start = Instant::now();
    let ahead = spec.signed_ahead(count);
    if count > 0 {
        eprintln!(
            "nexus devnet: signed {count} EVM load transactions ahead in {:.2} s",
            start.elapsed().as_secs_f64()
        );
    }
    Some(load_evm::EvmLoad::new(spec, args.evm_rate, ahead))
}

/// Name of the file of development keys in a devnet's folder.
pub const DEV_KEYS_FILE: &str = "dev-keys.txt";
/// Name of the file holding the development EVM account's secret key (0x-prefixed hex),
/// funded at genesis: the well-known test key (`node::chain_run::DEV_EVM_SECRET`), as on
/// `nexus run`, so Ethereum tools' defaults work against any validator.
pub const DEV_EVM_KEY_FILE: &str = "dev-evm-key.txt";

/// A devnet's chain id: from its seed and genesis time, so two devnets started with the same
/// seed (the default, say) do not share one and a transaction signed for one is refused by
/// the other; a resumed devnet keeps its genesis time, hence its chain id.
fn devnet_chain_id(seed: u64, genesis_time_ms: u64) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"nexus-devnet/v2/chain\0");
    hasher.update(&seed.to_le_bytes());
    hasher.update(&genesis_time_ms.to_le_bytes());
    *hasher.finalize().as_bytes()
}

/// Writes the seed (hex) of every trading account's key, one per line in account order:
/// development keys, funded at genesis, that any client of the devnet may sign with.
fn write_dev_keys(path: &Path, config: &DevnetConfig) -> Result<(), HostError> {
    let spec = config.load_spec()?;
    let lines: String = load::account_keys(&spec)
        .iter()
        .map(|key| format!("{}\n", hex(&key.to_bytes())))
        .collect();
    std::fs::write(path, lines).map_err(|e| HostError::Io(path.to_path_buf(), e))
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
    ts_ns: u64,
    decided_ns: u64,
    /// Decoding and checking the block's payload (`valid(v)`), µs.
    #[serde(default)]
    check_us: u64,
    /// Executing the decided block, µs.
    #[serde(default)]
    exec_us: u64,
    /// The same in the loop thread's CPU time, µs.
    #[serde(default)]
    exec_cpu_us: u64,
    /// Core transactions of the block whose signature the check verified itself.
    #[serde(default)]
    sigs_checked: u64,
    /// Core transactions in the block.
    #[serde(default)]
    txs: u64,
    /// The validator's compact-proposal counters so far.
    #[serde(default)]
    compact: CompactCounts,
    root: String,
}

/// A validator's compact-proposal counters (`final` line: `consensus::host::CompactStats`,
/// totals since it started), by name.
type CompactCounts = BTreeMap<String, u64>;

/// Every validator's compact-proposal counters over the measured window, summed: each
/// one's last `final` line in it less its first.
fn compact_over_window<'a>(n: usize, finals: impl Iterator<Item = &'a FinalLine>) -> CompactCounts {
    let mut first: Vec<Option<&CompactCounts>> = vec![None; n];
    let mut last: Vec<Option<&CompactCounts>> = vec![None; n];
    for f in finals {
        first[f.index].get_or_insert(&f.compact);
        last[f.index] = Some(&f.compact);
    }
    let mut total = CompactCounts::new();
    for (first, last) in first.into_iter().zip(last).filter_map(|(a, b)| a.zip(b)) {
        for (name, value) in last {
            let before = first.get(name).copied().unwrap_or(0);
            *total.entry(name.clone()).or_default() += value.saturating_sub(before);
        }
    }
    total
}

/// With --bench, the load client's whole run (warm-up, measured seconds and 2 s to spare)
/// signed before the validators start, so that signing does not take the cores the
/// validators share with it during the measurement (a real client signs on its own
/// machine); printed with the time it took. Otherwise the client signs as it sends. The
/// load's start moves to after the signing.
fn signed_stream(
    args: &DevnetArgs,
    config: &mut DevnetConfig,
) -> Result<load::SignedStream, HostError> {
    let spec = config.load_spec()?;
    let Some(seconds) = args.bench.filter(|_| config.rate_per_s > 0) else {
        return Ok(load::SignedStream::new(&spec));
    };
    let per_s = config
        .rate_per_s
        .div_ceil(u64::from(spec.bulk.clamp(1, 64)));
    let count = per_s.saturating_mul(seconds + 4);
    let start = Instant::now();
    let stream = load::SignedStream::signed_ahead(&spec, count);
    eprintln!(
        "nexus devnet: signed {count} load transactions ahead in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    config.load_start_unix_ns = now_ns() + 1_500 * MS;
    Ok(stream)
}

/// The load client of a devnet run: started once every validator is ready.
struct LoadRun {
    stats: Arc<Mutex<LoadStats>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
    ready: usize,
    /// With --bench: when the warm-up ends (the figures restart then).
    measure_from: Option<Instant>,
    /// Send through the binary gateways instead of the transaction ports.
    via_gateway: bool,
    /// The client's transactions (taken by its thread when it starts).
    stream: Option<load::SignedStream>,
}

impl LoadRun {
    fn new(via_gateway: bool, stream: load::SignedStream) -> LoadRun {
        LoadRun {
            via_gateway,
            stream: Some(stream),
            stats: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            ready: 0,
            measure_from: None,
        }
    }

    /// Counts a `ready` line; starts the client when every validator is ready.
    fn on_ready(
        &mut self,
        config: &DevnetConfig,
        warmup: Option<Duration>,
    ) -> Result<(), HostError> {
        self.ready += 1;
        if self.ready < config.validators.len() || config.rate_per_s == 0 || self.thread.is_some() {
            return Ok(());
        }
        let spec = config.load_spec()?;
        let stream = match self.stream.take() {
            Some(stream) => stream,
            None => load::SignedStream::new(&spec),
        };
        let (rate, stop, stats) = (config.rate_per_s, self.stop.clone(), self.stats.clone());
        let validators = &config.validators;
        let thread = std::thread::Builder::new().name("nexus-load".into());
        let spawned = if self.via_gateway {
            let targets: Vec<SocketAddr> = validators.iter().filter_map(|v| v.order_addr).collect();
            thread.spawn(move || {
                load::drive_gateways_stream(&spec, stream, &targets, rate, stop, stats)
            })
        } else {
            let targets: Vec<SocketAddr> = validators.iter().map(|v| v.tx_addr).collect();
            thread.spawn(move || load::drive_stream(&spec, stream, &targets, rate, stop, stats))
        };
        self.thread = Some(spawned.map_err(|e| HostError::Io("load thread".into(), e))?);
        self.measure_from = warmup.map(|w| Instant::now() + w);
        Ok(())
    }

    /// At the end of the warm-up: the figures restart.
    fn maybe_reset(&mut self) {
        if self.measure_from.is_some_and(|at| Instant::now() >= at) {
            self.measure_from = None;
            if let Ok(mut stats) = self.stats.lock() {
                *stats = LoadStats::default();
            }
        }
    }

    /// Stops the client; its figures (JSON) and whether it failed.
    fn finish(&mut self) -> (serde_json::Value, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failed = match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => Some(format!("load client: {e}")),
            Some(Err(_)) => Some("load client panicked".to_string()),
            _ => None,
        };
        let figures = self.stats.lock().map(|s| s.to_json()).unwrap_or_default();
        (figures, failed)
    }
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
    let (config_path, mut config) = write_devnet(&args, &root)?;
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
    let mut evm = evm_load(&args, &config);
    if evm.is_some() {
        config.load_start_unix_ns = now_ns() + 1_500 * MS;
    }
    let stream = signed_stream(&args, &mut config)?;
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
    let mut load = LoadRun::new(args.via == "gateway", stream);
    let warmup = args.bench.map(|_| Duration::from_nanos(warmup_ns));
    let mut bench_started: Option<Instant> = None;
    // With an EVM load: when its window starts; after the timed run, until when its
    // receipts are awaited.
    let mut evm_window_at: Option<Instant> = None;
    let mut evm_drain_until: Option<Instant> = None;
    let mut ended_at: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if ended_at.is_none() && run_for.is_some_and(|d| started.elapsed() >= d) {
            ended_at = Some(Instant::now());
            match evm.as_mut().filter(|e| e.started()) {
                Some(e) => {
                    if let Err(error) = e.stop_sending() {
                        failure = Some(format!("EVM load: {error}"));
                        break;
                    }
                    evm_drain_until = Some(Instant::now() + EVM_DRAIN);
                }
                None => break,
            }
        }
        if let Some(until) = evm_drain_until {
            let in_flight = evm.as_ref().map_or(0, load_evm::EvmLoad::in_flight);
            if in_flight == 0 || Instant::now() >= until {
                break;
            }
        }
        if evm_window_at.is_some_and(|at| Instant::now() >= at) {
            evm_window_at = None;
            if let Some(e) = &evm {
                e.begin_window();
            }
            bench_started.get_or_insert_with(Instant::now);
        }
        if bench_started.is_none() && load.measure_from.is_some() {
            bench_started = load.measure_from;
        }
        load.maybe_reset();
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
            if let Some(summary) = status.observe(i, value.as_ref(), &heights, &load.stats) {
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
                if let Some(e) = evm.as_ref().filter(|_| i == 0) {
                    e.on_block(f.height, Instant::now());
                }
                if args.bench.is_some() {
                    finals.push(f);
                }
            }
            Some("evidence") => evidence += 1,
            Some("ready") => {
                load.on_ready(&config, warmup)?;
                if let Some(e) = evm.as_mut().filter(|_| load.ready == n) {
                    let targets: Vec<SocketAddr> = config
                        .validators
                        .iter()
                        .filter_map(|v| v.eth_addr)
                        .collect();
                    e.start(&targets)
                        .map_err(|e| HostError::Io("EVM load".into(), e))?;
                    evm_window_at = Some(Instant::now() + warmup.unwrap_or_default());
                }
            }
            _ => {}
        }
    }
    let (load_figures, load_failure) = load.finish();
    let evm_figures = evm.as_mut().map(|e| {
        let (figures, failed, _) = e.finish();
        if failure.is_none() {
            failure = failed;
        }
        figures
    });
    if failure.is_none() {
        failure = load_failure;
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
        let end = ended_at.unwrap_or_else(Instant::now);
        let measured = bench_started.map_or(seconds as f64, |at| {
            end.saturating_duration_since(at).as_secs_f64()
        });
        let to_ns = now_ns().saturating_sub(end.elapsed().as_nanos() as u64);
        let client = (&load_figures, evm_figures);
        print_bench(&config, &finals, client, measured, to_ns);
    } else if config.rate_per_s > 0 {
        println!("{}", json!({"event": "load", "client": load_figures}));
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
        load: &Mutex<LoadStats>,
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
        let client = load.lock().map(|s| s.to_json()).unwrap_or_default();
        let summary = json!({"event": "devnet_status", "heights": heights,
            "blocks_per_s": (self.blocks as f64 / seconds).round(),
            "orders_per_s": (self.orders as f64 / seconds).round(),
            "client": {"finalized_orders": client["finalized_orders"],
                "finality_ms": client["finality_ms"], "refusals": client["refusals"]}});
        *self = DevnetStatus::new();
        Some(summary)
    }
}

/// The `--bench` figures: the client's (finalized orders/s, order-to-Finalized latency per
/// transaction, refusals) over the measured window, and block figures from the validators'
/// `final` lines in it (the `seconds` before `to_ns`); with an EVM load, its figures
/// (`evm`).
fn print_bench(
    config: &DevnetConfig,
    finals: &[FinalLine],
    (client, evm): (&serde_json::Value, Option<serde_json::Value>),
    seconds: f64,
    to_ns: u64,
) {
    let n = config.validators.len();
    let from = to_ns.saturating_sub((seconds * 1e9) as u64);
    let mut block_latency = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let mut blocks = vec![0u64; n];
    let mut orders = vec![0u64; n];
    let mut later_rounds = 0u64;
    let mut check_us = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let mut exec_us = check_us.clone();
    let (mut orders_0, mut exec_cpu_us, mut exec_wall_us) = (0u64, 0u64, 0u64);
    let (mut txs, mut sigs_checked) = (0u64, 0u64);
    let in_window = |f: &&FinalLine| (from..=to_ns).contains(&f.decided_ns);
    for f in finals.iter().filter(in_window) {
        blocks[f.index] += 1;
        orders[f.index] += f.orders;
        later_rounds += u64::from(f.round > 0 && f.index == 0);
        let _ = block_latency.record(f.decided_ns.saturating_sub(f.ts_ns) / 1_000);
        if f.index == 0 {
            let _ = check_us.record(f.check_us);
            let _ = exec_us.record(f.exec_us);
            (txs, sigs_checked) = (txs + f.txs, sigs_checked + f.sigs_checked);
            (orders_0, exec_cpu_us) = (orders_0 + f.orders, exec_cpu_us + f.exec_cpu_us);
            exec_wall_us += f.exec_us;
        }
    }
    let us = |h: &hdrhistogram::Histogram<u64>| json!({"p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99)});
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
    let finalized = client["finalized_orders"].as_u64().unwrap_or(0);
    println!(
        "{}",
        json!({
            "event": "bench", "validators": n, "seconds": seconds, "bulk": config.bulk,
            "offered_orders_per_s": config.rate_per_s,
            "finalized_orders_per_s": (finalized as f64 / seconds).round(),
            "order_to_finalized_ms": client["finality_ms"],
            "admission_ms": client["admission_ms"],
            "refusals": client["refusals"],
            "blocks_per_s": (blocks[0] as f64 / seconds).round(),
            "orders_per_block": orders[0].checked_div(blocks[0]).unwrap_or(0),
            "block_finality_ms": {"p50": ms(&block_latency, 0.5), "p99": ms(&block_latency, 0.99)},
            "decisions_in_later_rounds": later_rounds,
            "validator_0_per_block_us": {"check": us(&check_us), "execute": us(&exec_us)},
            "validator_0_block_txs": txs,
            "validator_0_exec_ns_per_order": {
                "wall": (exec_wall_us * 1_000).checked_div(orders_0),
                "thread_cpu": (exec_cpu_us * 1_000).checked_div(orders_0),
            },
            "validator_0_sigs_checked_in_blocks": sigs_checked,
            "compact_proposals": compact_over_window(n, finals.iter().filter(in_window)),
            "evm": evm,
        })
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lagging_validators_are_named() {
        assert!(lagging(&[10, 9, 10, 5], 5).is_empty());
        assert_eq!(lagging(&[10, 9, 10, 4], 5), vec![3]);
        assert_eq!(lagging(&[0, 0, 20, 0], 5), vec![0, 1, 3]);
    }

    #[test]
    fn devnets_with_the_same_seed_have_their_own_chain_ids_and_a_resume_keeps_its_own() {
        let first = devnet_chain_id(7, 1_800_000_000_000);
        assert_ne!(
            first,
            devnet_chain_id(7, 1_800_000_000_001),
            "another start"
        );
        assert_ne!(first, devnet_chain_id(8, 1_800_000_000_000), "another seed");
        assert_eq!(first, devnet_chain_id(7, 1_800_000_000_000), "resumed");
    }
}
