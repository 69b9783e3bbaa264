//! `engine-bench`: the engine on the exchange-core order mix, array ladder against the
//! `BTreeMap` baseline in the same run. See `docs/perf.md`.

use std::alloc::System;
use std::path::PathBuf;

use clap::Parser;
use perf::engine_bench::{render_text, run, to_json, BenchOptions};
use perf::lobster::{lobster_dir, Day};
use perf::memory::HeapProbe;
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

/// Counts heap bytes so the benchmark can report bytes per resting order.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Engine benchmark: throughput (ops/s), per-command latency (p50/p99/p99.9/max) and bytes
/// per resting order on the exchange-core mix (9% GTC, 3% IOC, 6% cancel, 82% modify/move),
/// for the array ladder and the BTreeMap baseline on the identical command stream.
#[derive(Parser, Debug)]
#[command(name = "engine-bench", version)]
struct Args {
    /// Book sizes (resting orders) to run, comma-separated [default: 1000,1000000, or
    /// 1000,10000 with --quick].
    #[arg(long, value_delimiter = ',')]
    orders: Option<Vec<usize>>,
    /// Measured commands per book size [default: 5000000, or 100000 with --quick].
    #[arg(long)]
    ops: Option<usize>,
    /// Seed of the workload generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also write the report as JSON to this path.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Small smoke run: books of 1,000 and 10,000 orders (unless --orders is given),
    /// 100,000 commands (unless --ops is given).
    #[arg(long)]
    quick: bool,
    /// Call the incremental state commitment every N commands inside the timed loop
    /// (0: never, pure matching).
    #[arg(long, default_value_t = 0)]
    commit_every: usize,
    /// Instead of the mix: replay the LOBSTER sample day (real NASDAQ flow) with every
    /// check, then time it (ns/message, p50/p99/p99.9) over --reps repetitions.
    #[arg(long)]
    lobster: bool,
    /// The LOBSTER folder [default: $NEXUS_LOBSTER_DIR, else ../shared/data/lobster next to
    /// the workspace].
    #[arg(long)]
    lobster_dir: Option<PathBuf>,
    /// Repetitions of the LOBSTER replay per ladder.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Book sizes for the peer order books (crates.io) on the same stream, comma-separated
    /// [default: 1000,100000, or 1000 with --quick]; 0 skips them.
    #[arg(long, value_delimiter = ',')]
    peer_orders: Option<Vec<usize>>,
    /// Measured commands for the peers [default: 500000, or 50000 with --quick].
    #[arg(long)]
    peer_ops: Option<usize>,
}

/// `--lobster`: the checked replay of the sample day, then the timed repetitions.
fn run_lobster(args: &Args) {
    let dir = args.lobster_dir.clone().unwrap_or_else(lobster_dir);
    let day = match Day::load_dir(&dir) {
        Ok(day) => day,
        Err(error) => {
            eprintln!("engine-bench: {error}");
            std::process::exit(1);
        }
    };
    let report =
        perf::lobster::bench::run(&day, args.reps, |line| eprintln!("[engine-bench] {line}"));
    print!("{}", perf::lobster::bench::render_text(&report));
}

fn main() {
    engine::cpu::exit_if_unsupported("engine-bench");
    let args = Args::parse();
    if args.lobster {
        return run_lobster(&args);
    }
    let sizes = args.orders.unwrap_or_else(|| {
        if args.quick {
            vec![1_000, 10_000]
        } else {
            vec![1_000, 1_000_000]
        }
    });
    let ops = args
        .ops
        .unwrap_or(if args.quick { 100_000 } else { 5_000_000 });
    let options = BenchOptions {
        sizes,
        ops,
        seed: args.seed,
        commit_every: args.commit_every,
    };
    let report = run(&options, HeapProbe::new(GLOBAL), |line| {
        eprintln!("[engine-bench] {line}")
    });
    print!("{}", render_text(&report));
    let peer_sizes = args.peer_orders.unwrap_or_else(|| {
        if args.quick {
            vec![1_000]
        } else {
            vec![1_000, 100_000]
        }
    });
    let peer_sizes: Vec<usize> = peer_sizes.into_iter().filter(|&n| n > 0).collect();
    let peer_ops = args
        .peer_ops
        .unwrap_or(if args.quick { 50_000 } else { 500_000 });
    let peers = perf::peers::bench::run(&peer_sizes, peer_ops, args.seed, |line| {
        eprintln!("[engine-bench] {line}")
    });
    if !peers.is_empty() {
        print!("{}", perf::peers::bench::render_text(&peers));
    }
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&to_json(&report)).expect("serializable report");
        if let Err(error) = std::fs::write(&path, json + "\n") {
            eprintln!("engine-bench: cannot write {}: {error}", path.display());
            std::process::exit(1);
        }
        eprintln!("[engine-bench] JSON report written to {}", path.display());
    }
}
