//! `nexus-perf`: order-to-ack, tick-to-trade and throughput of a node over the real gateway,
//! open loop, against a raw loopback TCP ping-pong measured in the same run. See
//! `docs/perf.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use perf::gateway_bench::node::{find_nexus_binary, NodeAddresses};
use perf::gateway_bench::{output, run, Config, Scenario, Target};

/// Latency benchmark of a Nexus node over its binary gateway.
///
/// Runs market makers (two-sided quotes, cancel-replace), takers (IOC sweeps of the top
/// levels) and cancel storms against a node, open loop at a fixed rate; a reactive taker
/// answers top-of-book changes on the market-data feed with an IOC (tick-to-trade). Prints
/// order-to-ack / Sequenced / Finalized, order-to-market-data and tick-to-trade percentiles,
/// throughput and rejects, and a raw loopback TCP ping-pong baseline with the ratio; writes
/// a JSON and an HTML report. Without node addresses it starts `nexus pipeline` itself
/// (temporary data folder, port 0) and stops it at the end.
#[derive(Parser, Debug)]
#[command(name = "nexus-perf", version)]
struct Args {
    /// Flows: mm (makers quoting), sweep (makers + IOC takers), cancel-storm (place then
    /// cancel), mixed (makers 50%, takers 20%, storms 30%).
    #[arg(long, value_enum, default_value_t = Scenario::Mixed)]
    scenario: Scenario,
    /// Scheduled requests per second, all connections together (open loop).
    #[arg(long, default_value_t = 2_000.0)]
    rate: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of sending before measuring (not recorded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,

    /// Binary order-entry address of a running node (with --node-md; no node is started).
    #[arg(long, value_name = "ADDR", requires = "node_md")]
    node_oe: Option<SocketAddr>,
    /// Market-data address of a running node.
    #[arg(long, value_name = "ADDR", requires = "node_oe")]
    node_md: Option<SocketAddr>,
    /// JSON Lines (admin/dev) address of a running node, used to fund the accounts; without
    /// it the accounts must already be funded.
    #[arg(long, value_name = "ADDR", requires = "node_oe")]
    node_admin: Option<SocketAddr>,
    /// Start `nexus pipeline` for the run (the default when no address is given).
    #[arg(long, conflicts_with_all = ["node_oe", "node_md", "node_admin"])]
    spawn: bool,
    /// The `nexus` binary to start [default: `nexus` next to this executable].
    #[arg(long, value_name = "PATH")]
    nexus: Option<PathBuf>,
    /// Configuration file for the started node (`nexus pipeline --config`); ports and data
    /// folder are overridden. Default: the node's embedded default (wal.sync = true).
    #[arg(long, value_name = "PATH")]
    node_config: Option<PathBuf>,

    /// Maker connections (each its own account).
    #[arg(long, default_value_t = 1)]
    makers: usize,
    /// Taker connections.
    #[arg(long, default_value_t = 1)]
    takers: usize,
    /// Cancel-storm connections.
    #[arg(long, default_value_t = 1)]
    storms: usize,
    /// Price levels each maker quotes on each side (1 tick apart from mid +- 1).
    #[arg(long, default_value_t = 5)]
    levels: usize,
    /// Ticks a taker's IOC goes through the best opposite price.
    #[arg(long, default_value_t = 2)]
    sweep_ticks: i64,
    /// Largest taker IOC, lots (sizes are uniform from 1).
    #[arg(long, default_value_t = 15)]
    taker_max_qty: i64,
    /// Largest maker quote, lots.
    #[arg(long, default_value_t = 10)]
    maker_max_qty: i64,
    /// Least distance of a cancel-storm order from the mid, ticks.
    #[arg(long, default_value_t = 30)]
    storm_gap: i64,
    /// Most reactive IOCs per second (tick-to-trade); 0 turns the reactive taker off.
    #[arg(long, default_value_t = 100.0)]
    react_rate: f64,
    /// Market id (the default genesis has market 0, BTC-USD).
    #[arg(long, default_value_t = 0)]
    market: u32,
    /// Mid price in ticks when the book is empty (else the book's mid is used).
    #[arg(long, default_value_t = 100_000)]
    mid: i64,
    /// Seed of the flows' random choices.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Senders sleep until this many microseconds before a due time, then yield-spin;
    /// capped at 250,000 / --rate us so that all senders together spin at most a quarter
    /// of a core (0: sleep only; a sleep overshoots by ~90 us on the reference VM, which
    /// then shows up as send lateness).
    #[arg(long, default_value_t = 200)]
    spin_us: u64,
    /// Most seconds to wait for outstanding replies after the schedule.
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    /// Loopback round trips for the baseline [default: as many as requests measured]; 0
    /// skips the baseline.
    #[arg(long)]
    baseline_count: Option<u64>,
    /// Deposits per account before the run, ASSET=AMOUNT, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "BTC=1000,USD=100000000")]
    fund: Vec<String>,

    /// Folder for the JSON and HTML reports.
    #[arg(long, default_value = "perf-reports", value_name = "DIR")]
    report_dir: PathBuf,
    /// Write no report files.
    #[arg(long)]
    no_files: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,

    /// Cluster mode: instead of one node, run `nexus devnet` with this many validators at
    /// each of --cluster-rates and print finalized orders/s and order-to-Finalized p50/p99
    /// with this machine's signature-verification bound as the baseline (docs/perf.md).
    #[arg(long, value_name = "N")]
    cluster: Option<usize>,
    /// Cluster mode: offered orders per second, one devnet run each.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000,100000")]
    cluster_rates: Vec<u64>,
    /// Cluster mode: orders per signed transaction (1..=64).
    #[arg(long, default_value_t = 20)]
    cluster_bulk: u32,
    /// Cluster mode: `gateway` (binary order-entry sessions) or `tx-port`.
    #[arg(long, default_value = "gateway", value_parser = ["gateway", "tx-port"])]
    cluster_via: String,
    /// Cluster mode: measured seconds per rate.
    #[arg(long, default_value_t = 8)]
    cluster_seconds: u64,
    /// Cluster mode: an EVM load instead of Core orders (`nexus devnet --evm-load`):
    /// `transfer` or `order` (CoreWriter); --cluster-rates are then EVM transactions per
    /// second, and the baseline is the same transactions executed in-process (docs/perf.md,
    /// "EVM load").
    #[arg(long, value_name = "KIND", value_enum)]
    cluster_evm: Option<node::load_evm::EvmLoadKind>,
    /// Cluster mode: EVM load accounts funded at genesis.
    #[arg(long, value_name = "N", default_value_t = 256)]
    cluster_evm_accounts: u64,
}

/// Cluster mode: every rate on a fresh devnet, a JSON report unless --no-files.
fn cluster(args: &Args, validators: usize) -> ExitCode {
    let Some(nexus) = args.nexus.clone().or_else(find_nexus_binary) else {
        eprintln!("nexus-perf: no `nexus` binary next to this executable; pass --nexus PATH");
        return ExitCode::from(2);
    };
    let options = perf::cluster::ClusterOptions {
        nexus,
        validators,
        rates: args.cluster_rates.clone(),
        bulk: args.cluster_bulk.clamp(1, 64),
        via: args.cluster_via.clone(),
        seconds: args.cluster_seconds,
        data_parent: perf::cluster::default_data_parent(),
        evm: args.cluster_evm,
        evm_accounts: args.cluster_evm_accounts,
    };
    let report = match options.evm {
        Some(kind) => perf::evm_load::run(&options, kind),
        None => perf::cluster::run(&options),
    };
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("nexus-perf: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !args.no_files {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let path = args
            .report_dir
            .join(format!("nexus-perf-cluster-{stamp}.json"));
        let written = std::fs::create_dir_all(&args.report_dir)
            .and_then(|()| std::fs::write(&path, format!("{report:#}\n")));
        match written {
            Ok(()) => println!("report: {}", path.display()),
            Err(e) => {
                eprintln!("nexus-perf: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    engine::cpu::exit_if_unsupported("nexus-perf");
    let args = Args::parse();
    if let Some(validators) = args.cluster {
        return cluster(&args, validators);
    }
    let mut fund = Vec::new();
    for item in &args.fund {
        match item.split_once('=') {
            Some((asset, amount)) if !asset.is_empty() && !amount.is_empty() => {
                fund.push((asset.to_string(), amount.to_string()))
            }
            _ => {
                eprintln!("nexus-perf: --fund takes ASSET=AMOUNT items, not {item:?}");
                return ExitCode::from(2);
            }
        }
    }
    let config = Config {
        scenario: args.scenario,
        rate: args.rate,
        duration_s: args.duration,
        warmup_s: args.warmup,
        makers: args.makers,
        takers: args.takers,
        storms: args.storms,
        levels: args.levels,
        maker_max_qty: args.maker_max_qty,
        sweep_ticks: args.sweep_ticks,
        taker_max_qty: args.taker_max_qty,
        storm_gap: args.storm_gap,
        react_rate: args.react_rate,
        react_qty: 1,
        market: args.market,
        mid: args.mid,
        seed: args.seed,
        spin_ns: args.spin_us * 1_000,
        drain_s: args.drain,
        baseline_count: args.baseline_count,
        fund,
        progress: !args.quiet,
    };
    let target = match (args.node_oe, args.node_md) {
        (Some(order_entry), Some(market_data)) => Target::Running(NodeAddresses {
            order_entry,
            market_data,
            admin: args.node_admin,
        }),
        _ => {
            let Some(nexus) = args.nexus.clone().or_else(find_nexus_binary) else {
                eprintln!(
                    "nexus-perf: no `nexus` binary next to this executable; build it \
                     (cargo build --release -p node) or pass --nexus PATH"
                );
                return ExitCode::from(2);
            };
            Target::Spawn {
                nexus,
                config: args.node_config.clone(),
            }
        }
    };
    let results = match run(&config, &target) {
        Ok(results) => results,
        Err(error) => {
            eprintln!("nexus-perf: {error}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", output::text(&results));
    if !args.no_files {
        match output::write_files(&results, &args.report_dir) {
            Ok((json, html)) => println!("report: {} and {}", json.display(), html.display()),
            Err(e) => {
                eprintln!(
                    "nexus-perf: cannot write the report in {}: {e}",
                    args.report_dir.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    if results.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
