//! `pipeline-bench`: throughput and per-stage latency of the sequencer + engine + WAL
//! pipeline on a real LMDB log, the WAL's commit (fsync) cost per block, and the effect of
//! block size, against the bare engine in the same run. See `docs/perf.md`.

use std::path::PathBuf;

use clap::Parser;
use perf::latency::LatencySummary;
use perf::pipeline_bench::{
    bare_engine_ops_per_sec, run_case, waits_label, Case, CaseResult, Load,
};
use perf::report::{duration_ns, si};
use perf::workload::{Workload, WorkloadConfig};
use sequencer::{StageWaits, Wait};

/// Pipeline benchmark: sequencer + engine + write-ahead log (LMDB) as threads joined by rings.
/// For each block size and fsync setting: closed-loop throughput (inputs/s sequenced and
/// finalized) and open-loop latency per stage (p50/p99/p99.9/max), WAL commit time per block;
/// the bare engine on the same stream is the baseline.
#[derive(Parser, Debug)]
#[command(name = "pipeline-bench", version)]
struct Args {
    /// Resting orders the workload keeps in the book.
    #[arg(long, default_value_t = 1_000)]
    orders: usize,
    /// Measured inputs per closed-loop run (open-loop runs replay a prefix, see --open-seconds)
    /// [default: 300000, or 30000 with --quick].
    #[arg(long)]
    ops: Option<usize>,
    /// Seed of the workload generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Block sizes (inputs per block) to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,256,4096")]
    block_sizes: Vec<u32>,
    /// Block age limit, microseconds.
    #[arg(long, default_value_t = 1_000)]
    block_age_us: u64,
    /// fsync on commit: true, false or both.
    #[arg(long, default_value = "both")]
    sync: String,
    /// Open-loop rates for the latency runs, inputs per second, comma-separated.
    #[arg(
        long,
        alias = "rate",
        value_delimiter = ',',
        default_value = "10000,100000"
    )]
    rates: Vec<u64>,
    /// Length of each open-loop run, seconds: it replays the first rate x seconds inputs of
    /// the stream (at most --ops) [default: 3, or 1 with --quick].
    #[arg(long)]
    open_seconds: Option<f64>,
    /// Also run with this stage busy-spinning (sequencer, engine, wal or publisher).
    #[arg(long)]
    spin: Option<String>,
    /// Write the report as JSON to this path.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Small smoke run.
    #[arg(long)]
    quick: bool,
}

fn latency_cells(summary: &LatencySummary) -> String {
    format!(
        "{} / {} / {} / {}",
        duration_ns(summary.p50_ns as f64),
        duration_ns(summary.p99_ns as f64),
        duration_ns(summary.p999_ns as f64),
        duration_ns(summary.max_ns as f64)
    )
}

fn summary_json(summary: &LatencySummary) -> serde_json::Value {
    serde_json::json!({
        "p50_ns": summary.p50_ns, "p99_ns": summary.p99_ns, "p999_ns": summary.p999_ns,
        "max_ns": summary.max_ns, "mean_ns": summary.mean_ns, "count": summary.count,
    })
}

fn main() {
    engine::cpu::exit_if_unsupported("pipeline-bench");
    let args = Args::parse();
    let ops = args
        .ops
        .unwrap_or(if args.quick { 30_000 } else { 300_000 });
    let open_seconds = args
        .open_seconds
        .unwrap_or(if args.quick { 1.0 } else { 3.0 });
    let syncs: Vec<bool> = match args.sync.as_str() {
        "true" => vec![true],
        "false" => vec![false],
        "both" => vec![true, false],
        other => {
            eprintln!("pipeline-bench: --sync takes true, false or both, not {other:?}");
            std::process::exit(2);
        }
    };
    let mut waits = vec![StageWaits::ALL_PARK];
    if let Some(stage) = &args.spin {
        let mut spinning = StageWaits::ALL_PARK;
        match stage.as_str() {
            "sequencer" => spinning.sequencer = Wait::Spin,
            "engine" => spinning.engine = Wait::Spin,
            "wal" => spinning.wal = Wait::Spin,
            "publisher" => spinning.publisher = Wait::Spin,
            other => {
                eprintln!("pipeline-bench: unknown stage {other:?}");
                std::process::exit(2);
            }
        }
        waits.push(spinning);
    }
    eprintln!(
        "[pipeline-bench] generating {ops} commands on a ~{} order book (seed {})",
        args.orders, args.seed
    );
    let workload = Workload::generate(&WorkloadConfig::new(args.orders, ops, args.seed));
    let bare = bare_engine_ops_per_sec(&workload);
    println!(
        "pipeline-bench: exchange-core mix, ~{} resting orders, {} measured inputs, seed {}",
        args.orders, ops, args.seed
    );
    println!(
        "baseline: bare engine (one thread, no rings, no log) {} ops/s",
        si(bare)
    );
    println!(
        "cores: {} (stages park unless named; a cross-core wake-up costs tens of us here)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    let mut results: Vec<CaseResult> = Vec::new();
    for &sync in &syncs {
        for &block_inputs in &args.block_sizes {
            for waits in &waits {
                let loads = std::iter::once(Load::ClosedLoop)
                    .chain(args.rates.iter().map(|&rate| Load::OpenLoop(rate)));
                for load in loads {
                    let inputs = match load {
                        Load::ClosedLoop => ops,
                        Load::OpenLoop(rate) => ((rate as f64 * open_seconds) as usize).max(1),
                    };
                    let case = Case {
                        block_inputs,
                        block_age_ns: args.block_age_us * 1_000,
                        sync,
                        waits: *waits,
                        load,
                        inputs,
                    };
                    eprintln!(
                        "[pipeline-bench] block {block_inputs}, sync {sync}, {}, {load:?}",
                        waits_label(waits)
                    );
                    results.push(run_case(&workload, case));
                }
            }
        }
    }
    println!("throughput (closed loop: submit as fast as the input ring takes)");
    println!(
        "{:>6} {:>5} {:>14} {:>12} {:>12} {:>8} {:>10} {:>9} {:>9} {:>16} {:>18}",
        "block",
        "fsync",
        "waits",
        "sequenced/s",
        "finalized/s",
        "vs bare",
        "refusals",
        "in/block",
        "blk/commit",
        "commit p50/p99",
        "per block p50/p99"
    );
    for r in results.iter().filter(|r| r.case.load == Load::ClosedLoop) {
        println!(
            "{:>6} {:>5} {:>14} {:>12} {:>12} {:>7.2}x {:>10} {:>9.1} {:>9.1} {:>16} {:>18}",
            r.case.block_inputs,
            r.case.sync,
            waits_label(&r.case.waits),
            si(r.sequenced_per_sec()),
            si(r.finalized_per_sec()),
            r.finalized_per_sec() / bare,
            r.refusals,
            r.inputs_per_block(),
            r.blocks_per_commit(),
            format!(
                "{}/{}",
                duration_ns(r.commit.p50_ns as f64),
                duration_ns(r.commit.p99_ns as f64)
            ),
            format!(
                "{}/{}",
                duration_ns(r.commit_per_block.p50_ns as f64),
                duration_ns(r.commit_per_block.p99_ns as f64)
            )
        );
    }
    println!();
    println!("latency, open loop (from each input's scheduled time); p50 / p99 / p99.9 / max");
    for r in results.iter().filter(|r| r.case.load != Load::ClosedLoop) {
        let Load::OpenLoop(rate) = r.case.load else {
            continue;
        };
        println!(
            "{} inputs/s x {} inputs, block {} fsync {} {}: {:.1} inputs/block, {:.1} blocks/commit, commit p50 {} p99 {} max {}",
            si(rate as f64),
            r.inputs,
            r.case.block_inputs,
            r.case.sync,
            waits_label(&r.case.waits),
            r.inputs_per_block(),
            r.blocks_per_commit(),
            duration_ns(r.commit.p50_ns as f64),
            duration_ns(r.commit.p99_ns as f64),
            duration_ns(r.commit.max_ns as f64)
        );
        println!("  received->sequenced   {}", latency_cells(&r.to_sequencer));
        println!("  sequenced->executed   {}", latency_cells(&r.to_engine));
        println!("  executed->published   {}", latency_cells(&r.to_publisher));
        println!(
            "  received->Sequenced   {}",
            latency_cells(&r.sequenced_e2e)
        );
        println!(
            "  received->Finalized   {}",
            latency_cells(&r.finalized_e2e)
        );
    }
    println!();
    println!("checks: every input got one Sequenced and one Finalized; every run's final state hash equals the bare engine's");
    if let Some(path) = args.json {
        let runs: Vec<serde_json::Value> = results.iter().map(|r| serde_json::json!({
            "block_inputs": r.case.block_inputs, "sync": r.case.sync, "waits": waits_label(&r.case.waits),
            "load": match r.case.load { Load::ClosedLoop => "closed".to_string(), Load::OpenLoop(rate) => format!("open:{rate}") },
            "inputs": r.inputs, "sequenced_per_s": r.sequenced_per_sec(), "finalized_per_s": r.finalized_per_sec(),
            "ratio_to_bare": r.finalized_per_sec() / bare, "refusals": r.refusals,
            "blocks": r.blocks, "commits": r.commits, "commit_ns_per_block": r.commit_ns_per_block(),
            "inputs_per_block": r.inputs_per_block(), "blocks_per_commit": r.blocks_per_commit(),
            "commit": summary_json(&r.commit), "commit_per_block": summary_json(&r.commit_per_block), "received_to_sequenced": summary_json(&r.to_sequencer),
            "sequenced_to_executed": summary_json(&r.to_engine), "executed_to_published": summary_json(&r.to_publisher),
            "received_to_sequenced_output": summary_json(&r.sequenced_e2e), "received_to_finalized_output": summary_json(&r.finalized_e2e),
        })).collect();
        let report = serde_json::json!({"bench": "pipeline-bench", "orders": args.orders, "ops": ops, "open_seconds": open_seconds, "seed": args.seed, "bare_engine_ops_per_s": bare, "runs": runs});
        if let Err(e) = std::fs::write(
            &path,
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        ) {
            eprintln!("pipeline-bench: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}
