//! `nexus`: the Nexus node and its command-line tools. `nexus --help` lists the commands.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use engine::EngineConfig;
use json_lines::replay::{self, RunError, RunOptions};
use node::config::NodeConfig;
use node::{server, wal_tool};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod devnet;

/// Nexus: a deterministic exchange engine and the node around it.
/// Largest `--max-resting-orders`: the engine allocates its order store up front.
const MAX_RESTING_ORDERS_LIMIT: i64 = 1 << 26;

#[derive(Parser)]
#[command(name = "nexus", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a local chain of one validator: signed transactions ordered by NexusBFT and
    /// executed by NexusCore and NexusEVM, with every client port (docs/node.md).
    ///
    /// Without --config it uses the embedded default (`nexus config` prints it): data in
    /// ./nexus-data; the JSON development port on 127.0.0.1:7070 (it signs for the
    /// development accounts listed in the data folder's dev-keys.txt), binary order entry on
    /// :7071, market data on :7072, the transaction port on :7073, Ethereum JSON-RPC on :8545.
    /// Prints one JSON line when it serves (`ready`, with every address) and one when it
    /// stops (Ctrl-C or SIGTERM). A restart continues the same chain.
    Run(RunArgs),
    /// Run the unreplicated exchange pipeline: unsigned JSON Lines and binary orders straight
    /// into the sequencer, the engine and the LMDB write-ahead log; no consensus, no
    /// signatures, no EVM (docs/pipeline.md). For latency work and the `wal` tools.
    ///
    /// Same configuration file as `run` (it reads [ingress], [gateway], [engine], [blocks],
    /// [pipeline], [wal], [perps], [log] and [genesis]). Prints one JSON line when it serves
    /// and one when it stops (Ctrl-C or SIGTERM: the open block is written before exit).
    Pipeline(RunArgs),
    /// Read or repair a node's write-ahead log.
    #[command(subcommand)]
    Wal(WalCommands),
    /// Print the default node configuration (TOML, every field documented).
    Config,
    /// Send JSON Lines commands to a running node and print its replies.
    ///
    /// Lines come from the arguments, or from standard input if there are none. Exits once
    /// every line has its last reply (`finalized`, or a refusal before sequencing, or a
    /// query's answer); exit status 1 if the node closed first or --timeout-s passed.
    Send(SendArgs),
    /// Ask a running node for its current state: book, balances, open orders, positions.
    ///
    /// Prints the node's answer (one JSON line, docs/pipeline.md "Queries"). Answered from the
    /// engine's state now: not sequenced, not in the log.
    #[command(subcommand)]
    Query(QueryCommands),
    /// Run the engine on JSON Lines commands and print its events as JSON Lines.
    ///
    /// Reads one command per line from FILE (or standard input for `-`), writes one event
    /// per line to standard output. Format: docs/replay.md.
    Replay(ReplayArgs),
    /// Start a local NexusBFT cluster on 127.0.0.1: one `nexus validator` process per
    /// validator, QUIC between them, and a client sending them signed transactions
    /// (docs/consensus.md, "Validator host and devnet"; docs/transactions.md).
    ///
    /// Writes keys and `devnet.toml` into --dir (default: a temporary folder), starts the
    /// validators, and once all are ready sends the signed load (--rate orders/s in
    /// transactions of --bulk orders) round robin to every validator's transaction port.
    /// Prints the validators' `ready` lines and one status line per second (heights,
    /// blocks/s, orders/s, the client's finalized orders and latency; --verbose prints every
    /// `final` line) until Ctrl-C or --seconds, and checks that every validator reports the
    /// same execution root at every height. With --bench it prints the measured figures.
    Devnet(devnet::DevnetArgs),
    /// Run one validator of a devnet configuration (started by `nexus devnet`).
    ///
    /// Serves its transaction port (signed transactions from clients) and takes part in
    /// consensus. Prints one JSON line per event: `ready` (with its addresses), then `final`
    /// per decided block (height, round, transactions, orders, execution root), `evidence`
    /// if a peer double-signed.
    Validator(node::validator::ValidatorArgs),
    /// Staking actions signed with a key file, submitted to a validator's JSON port: join,
    /// set-stake, leave, unjail; `show` prints the validator set, bonds, queued changes and
    /// chain parameters (docs/node.md, "Staking and governance actions").
    ///
    /// A submission prints the validator's replies (`action_admitted`, then
    /// `action_included` with `applied` once a decided block holds it) and exits 0 only if
    /// the chain applied it.
    #[command(subcommand)]
    Stake(node::chain_cli::StakeCommand),
    /// Governance actions signed with a key file (a validator's): propose, vote; `show`
    /// prints the co-processor registry and the proposals (docs/node.md).
    #[command(subcommand)]
    Gov(node::chain_cli::GovCommand),
}

#[derive(Args)]
struct RunArgs {
    /// Configuration file (TOML); the embedded default if absent.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Data folder, overriding the configuration's `data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// JSON Lines order-entry address, overriding `ingress.listen` (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Binary order-entry address, overriding `gateway.order_entry_listen`.
    #[arg(long, value_name = "ADDR")]
    order_entry_listen: Option<std::net::SocketAddr>,
    /// Market-data address, overriding `gateway.market_data_listen`.
    #[arg(long, value_name = "ADDR")]
    market_data_listen: Option<std::net::SocketAddr>,
    /// Transaction-port address (`nexus run`), overriding `chain.tx_listen`.
    #[arg(long, value_name = "ADDR")]
    tx_listen: Option<std::net::SocketAddr>,
    /// Ethereum JSON-RPC address (`nexus run`), overriding `chain.eth_listen`.
    #[arg(long, value_name = "ADDR")]
    eth_listen: Option<std::net::SocketAddr>,
    /// No status lines and only warnings and errors on stderr (`[log]` status_interval_s = 0,
    /// level = "warn").
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct SendArgs {
    /// The node's JSON Lines port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    addr: std::net::SocketAddr,
    /// Keep printing after the last reply (events of the accounts the lines act for or
    /// subscribe to) until the node closes or Ctrl-C.
    #[arg(long)]
    follow: bool,
    /// Give up if the replies have not all come within this many seconds.
    #[arg(long, value_name = "S", default_value_t = 10)]
    timeout_s: u64,
    /// JSON Lines commands (docs/pipeline.md); standard input if none.
    #[arg(value_name = "LINE")]
    lines: Vec<String>,
}

#[derive(Subcommand)]
enum QueryCommands {
    /// Aggregated levels of a market's book, best first.
    Book {
        /// Market name.
        market: String,
        /// Levels per side.
        #[arg(long, default_value_t = 10)]
        depth: u64,
        #[command(flatten)]
        node: NodeAddr,
    },
    /// An account's balances (total, locked, available) and perp collateral.
    Balances {
        /// Account id.
        account: u64,
        #[command(flatten)]
        node: NodeAddr,
    },
    /// An account's open orders.
    Orders {
        /// Account id.
        account: u64,
        /// Only this market.
        #[arg(long)]
        market: Option<String>,
        #[command(flatten)]
        node: NodeAddr,
    },
    /// An account's perp positions (entry, mark, unrealized PnL, margin ratio).
    Positions {
        /// Account id.
        account: u64,
        #[command(flatten)]
        node: NodeAddr,
    },
}

#[derive(Args)]
struct NodeAddr {
    /// The node's JSON Lines port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    addr: std::net::SocketAddr,
}

#[derive(Subcommand)]
enum WalCommands {
    /// Print the log as `nexus replay` input (genesis lines, then every command in order).
    ///
    /// `nexus replay` of the output ends in the node's state: same state root.
    Dump(WalArgs),
    /// Print a one-line JSON summary: height, last seq, last block hash and state root.
    Info(WalArgs),
    /// Delete every block after HEIGHT (to drop a damaged tail the node refuses to start on).
    Truncate {
        #[command(flatten)]
        wal: WalArgs,
        /// Keep blocks up to and including this height.
        #[arg(long, value_name = "HEIGHT")]
        after: u64,
    },
}

#[derive(Args)]
struct WalArgs {
    /// The node's data folder.
    #[arg(long, value_name = "DIR", default_value = "nexus-data")]
    data_dir: PathBuf,
}

#[derive(Args)]
struct ReplayArgs {
    /// The commands file, or `-` for standard input.
    #[arg(value_name = "FILE|-")]
    input: PathBuf,
    /// After the last line, print {"ev":"end","lines":N,"state_hash":"<hex>"}.
    #[arg(long)]
    state_hash: bool,
    /// Most orders resting at once across all markets (then `book_full`); at most 2^26.
    #[arg(
        long,
        value_name = "N",
        default_value_t = EngineConfig::default().max_resting_orders,
        value_parser = clap::value_parser!(u32).range(0..=MAX_RESTING_ORDERS_LIMIT)
    )]
    max_resting_orders: u32,
    /// Most open orders per account (then `too_many_orders`).
    #[arg(long, value_name = "N", default_value_t = EngineConfig::default().max_open_orders_per_account)]
    max_open_orders: u32,
}

fn main() -> ExitCode {
    engine::cpu::exit_if_unsupported("nexus");
    let cli = Cli::parse();
    match cli.command {
        Commands::Replay(args) => replay_command(args),
        Commands::Devnet(args) => devnet::devnet_command(args),
        Commands::Validator(args) => node::validator::validator_command(args),
        Commands::Stake(command) => node::chain_cli::stake_command(command),
        Commands::Gov(command) => node::chain_cli::gov_command(command),
        Commands::Run(args) => chain_run_command(args),
        Commands::Pipeline(args) => run_command(args),
        Commands::Wal(command) => wal_command(command),
        Commands::Send(args) => send_command(args),
        Commands::Query(query) => query_command(query),
        Commands::Config => {
            print!("{}", node::config::DEFAULT_CONFIG_TOML);
            ExitCode::SUCCESS
        }
    }
}

/// The configuration `args` name, with their overrides.
fn node_config(name: &str, args: &RunArgs) -> Result<NodeConfig, ExitCode> {
    let mut config = match NodeConfig::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: {e}");
            return Err(ExitCode::from(2));
        }
    };
    if let Some(dir) = args.data_dir.clone() {
        config.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        config.ingress.listen = listen;
    }
    if let Some(listen) = args.order_entry_listen {
        config.gateway.order_entry_listen = listen;
    }
    if let Some(listen) = args.market_data_listen {
        config.gateway.market_data_listen = listen;
    }
    if let Some(listen) = args.tx_listen {
        config.chain.tx_listen = listen;
    }
    if let Some(listen) = args.eth_listen {
        config.chain.eth_listen = listen;
    }
    if args.quiet {
        config.log.status_interval_s = 0;
        config.log.level = "warn".to_string();
    }
    Ok(config)
}

/// `nexus run`: the chain of one validator.
fn chain_run_command(args: RunArgs) -> ExitCode {
    let config = match node_config("nexus run", &args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    node::chain_run::run(
        "nexus run",
        &config,
        node::chain_run::ChainGenesis::Configured,
        None,
    )
}

fn run_command(args: RunArgs) -> ExitCode {
    let config = match node_config("nexus pipeline", &args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let chain_file = config.data_dir.join(node::chain_run::CHAIN_FILE);
    if chain_file.exists() {
        eprintln!(
            "nexus pipeline: {} holds a chain of `nexus run` ({}), not a pipeline log: give \
             `nexus pipeline` another --data-dir",
            config.data_dir.display(),
            chain_file.display()
        );
        return ExitCode::from(2);
    }
    if let Err(e) = init_logging(&config.log.level) {
        eprintln!("nexus pipeline: {e}");
        return ExitCode::from(2);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("nexus pipeline: cannot handle signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let data_dir = config.data_dir.display().to_string();
    let result = server::run(&config, stop, |ready| {
        let line = serde_json::json!({
            "event": "ready",
            "listen": ready.listen.to_string(),
            "order_entry": ready.order_entry.to_string(),
            "market_data": ready.market_data.to_string(),
            "data_dir": data_dir,
            "height": ready.height,
            "next_seq": ready.next_seq,
            "state_root": server::root_hex(&ready.state_root),
        });
        println!("{line}");
        let _ = io::stdout().flush();
        tracing::info!(
            "serving JSON Lines orders on {}, binary orders on {}, market data on {} \
             (data in {data_dir}, height {})",
            ready.listen,
            ready.order_entry,
            ready.market_data,
            ready.height
        );
    });
    match result {
        Ok(stopped) => {
            let line = serde_json::json!({
                "event": "stopped",
                "height": stopped.height,
                "state_root": server::root_hex(&stopped.state_root),
            });
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nexus pipeline: {e}");
            ExitCode::FAILURE
        }
    }
}

fn wal_command(command: WalCommands) -> ExitCode {
    let result = match command {
        WalCommands::Dump(args) => {
            let mut out = BufWriter::new(io::stdout().lock());
            wal_tool::dump(&args.data_dir, &mut out).map(|_| ())
        }
        WalCommands::Info(args) => wal_tool::info(&args.data_dir).map(|info| println!("{info}")),
        WalCommands::Truncate { wal, after } => {
            wal_tool::truncate(&wal.data_dir, after).map(|removed| {
                println!(
                    "{}",
                    serde_json::json!({"removed_blocks": removed, "height": after})
                )
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(wal_tool::WalToolError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("nexus wal: {e}");
            ExitCode::FAILURE
        }
    }
}

fn replay_command(args: ReplayArgs) -> ExitCode {
    let input: Box<dyn Read> = if args.input.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        match File::open(&args.input) {
            Ok(file) => Box::new(file),
            Err(e) => {
                eprintln!("nexus replay: cannot open {}: {e}", args.input.display());
                return ExitCode::from(2);
            }
        }
    };
    let options = RunOptions {
        config: EngineConfig {
            max_resting_orders: args.max_resting_orders,
            max_open_orders_per_account: args.max_open_orders,
        },
        state_hash: args.state_hash,
    };
    let mut input = BufReader::with_capacity(1 << 16, input);
    let mut output = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    match replay::run(&mut input, &mut output, options) {
        Ok(_) => ExitCode::SUCCESS,
        Err(RunError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            // The reader went away (e.g. `| head`): stop quietly.
            ExitCode::FAILURE
        }
        Err(e) => {
            // Whatever was replayed so far is still delivered, if stdout works.
            let _ = output.flush();
            eprintln!("nexus replay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `tracing` records at `level` and above on stderr.
fn init_logging(level: &str) -> Result<(), String> {
    let filter: tracing_subscriber::filter::LevelFilter = level.parse().map_err(|_| {
        format!("[log] level {level:?}: expected error, warn, info, debug, trace or off")
    })?;
    tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(io::stderr)
        .with_target(false)
        .try_init()
        .map_err(|e| e.to_string())
}

fn send_command(args: SendArgs) -> ExitCode {
    let lines = if args.lines.is_empty() {
        match io::stdin().lines().collect::<Result<Vec<_>, _>>() {
            Ok(lines) => lines,
            Err(e) => {
                eprintln!("nexus send: reading standard input: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        args.lines
    };
    let timeout = std::time::Duration::from_secs(args.timeout_s);
    exchange_and_report("nexus send", args.addr, &lines, args.follow, timeout)
}

fn query_command(query: QueryCommands) -> ExitCode {
    let (request, addr) = match query {
        QueryCommands::Book {
            market,
            depth,
            node,
        } => (
            serde_json::json!({"op": "book", "market": market, "depth": depth}),
            node.addr,
        ),
        QueryCommands::Balances { account, node } => (
            serde_json::json!({"op": "balances", "account": account}),
            node.addr,
        ),
        QueryCommands::Orders {
            account,
            market,
            node,
        } => {
            let mut request = serde_json::json!({"op": "orders", "account": account});
            if let Some(market) = market {
                request["market"] = market.into();
            }
            (request, node.addr)
        }
        QueryCommands::Positions { account, node } => (
            serde_json::json!({"op": "positions", "account": account}),
            node.addr,
        ),
    };
    let timeout = std::time::Duration::from_secs(10);
    exchange_and_report("nexus query", addr, &[request.to_string()], false, timeout)
}

fn exchange_and_report(
    who: &str,
    addr: std::net::SocketAddr,
    lines: &[String],
    follow: bool,
    timeout: std::time::Duration,
) -> ExitCode {
    let mut out = io::stdout().lock();
    match node::client::exchange(addr, lines, &mut out, follow, timeout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{who}: {e}");
            ExitCode::FAILURE
        }
    }
}
