//! `perp-bench`: pre-trade risk cost per perp order against the same orders on a spot
//! market, liquidation-index cost per oracle move against a full margin scan, and heap bytes
//! per account and position. See `docs/perf.md`.

use std::alloc::System;
use std::path::PathBuf;

use clap::Parser;
use perf::memory::HeapProbe;
use perf::perp_bench::{render_text, run, to_json, PerpBenchOptions, LIQ_MAX_ACCOUNTS};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

/// Counts heap bytes so the benchmark can report bytes per account and position.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Perp benchmark. 1: ns/op and p50/p99/p99.9 of perp orders (resting GTC, crossing GTC,
/// IOC, cancel) by accounts holding positions, against the identical stream on a spot market.
/// 2: time per Oracle command with the liquidation index, for moves crossing no liquidation
/// key and moves crossing k keys, with the index's candidate counts, against a full scan of
/// every account's margin. 3: heap bytes per account and per position.
#[derive(Parser, Debug)]
#[command(name = "perp-bench", version)]
struct Args {
    /// Seed of the generators.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Measured commands of the risk stream [default: 1000000, or 100000 with --quick].
    #[arg(long)]
    risk_ops: Option<usize>,
    /// Resting orders the risk workload keeps in the book.
    #[arg(long, default_value_t = 10_000)]
    risk_orders: usize,
    /// Trading accounts of the risk workload (each holds a position before the stream).
    #[arg(long, default_value_t = 1_000)]
    risk_accounts: u32,
    /// Account counts of the liquidation fixtures, comma-separated (each account holds one
    /// position) [default: 1000,10000,100000, or 1000,10000 with --quick].
    #[arg(long, value_delimiter = ',')]
    accounts: Option<Vec<usize>>,
    /// Oracle moves crossing no liquidation key, timed per fixture [default: 100000, or
    /// 10000 with --quick].
    #[arg(long)]
    quiet_moves: Option<usize>,
    /// Extra runs on the largest fixture with this many more accounts holding positions in
    /// two markets (checked in full on every oracle move), comma-separated; 0 for none.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    multi: Vec<usize>,
    /// Liquidation keys crossed per crossing move, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    k: Vec<usize>,
    /// Crossing moves per k (fewer on small fixtures: at most half the accounts are
    /// liquidated).
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Full margin scans (the naive baseline) per fixture.
    #[arg(long, default_value_t = 20)]
    scans: usize,
    /// Skip part 1 (risk check per order).
    #[arg(long)]
    no_risk: bool,
    /// Skip parts 2 and 3 (liquidation scan, memory).
    #[arg(long)]
    no_liquidation: bool,
    /// Small smoke run (a few seconds).
    #[arg(long)]
    quick: bool,
    /// Also write the report as JSON to this path.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() {
    engine::cpu::exit_if_unsupported("perp-bench");
    let args = Args::parse();
    let accounts = args.accounts.unwrap_or_else(|| {
        if args.quick {
            vec![1_000, 10_000]
        } else {
            vec![1_000, 10_000, 100_000]
        }
    });
    if let Some(&too_many) = accounts.iter().find(|&&n| n > LIQ_MAX_ACCOUNTS) {
        eprintln!("perp-bench: --accounts {too_many}: at most {LIQ_MAX_ACCOUNTS}");
        std::process::exit(2);
    }
    let options = PerpBenchOptions {
        seed: args.seed,
        risk: !args.no_risk,
        risk_orders: args.risk_orders,
        risk_ops: args
            .risk_ops
            .unwrap_or(if args.quick { 100_000 } else { 1_000_000 }),
        risk_accounts: args.risk_accounts,
        liquidation: !args.no_liquidation,
        accounts,
        quiet_moves: args
            .quiet_moves
            .unwrap_or(if args.quick { 10_000 } else { 100_000 }),
        scans: args.scans,
        multi: args.multi,
        ks: args.k,
        reps: args.reps,
    };
    let report = run(&options, HeapProbe::new(GLOBAL), |line| {
        eprintln!("[perp-bench] {line}")
    });
    print!("{}", render_text(&report));
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&to_json(&report)).expect("serializable report");
        if let Err(error) = std::fs::write(&path, json + "\n") {
            eprintln!("perp-bench: cannot write {}: {error}", path.display());
            std::process::exit(1);
        }
        eprintln!("[perp-bench] JSON report written to {}", path.display());
    }
}
