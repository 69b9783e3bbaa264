//! The engine benchmark (`engine-bench`): the exchange-core mix replayed on the production
//! engine ([`engine::Engine`], array ladder) and on the `BTreeMap` baseline
//! ([`engine::BTreeEngine`]) in the same run, for each book size.
//!
//! Per book size and ladder, on the same pre-generated stream:
//! 1. memory: heap held by an empty sized engine after setup, and heap grown by the prefill;
//! 2. throughput: the whole stream timed at once on the prefilled engine;
//! 3. latency: a second fresh prefilled engine, each `step` timed on its own into an HDR
//!    histogram.
//!
//! Every run must end in the state the generator reached (same state hash): checked, not
//! timed. See `docs/perf.md` for what each figure means.

use std::hint::black_box;
use std::time::Instant;

use engine::{BTreeLadder, Engine, Event, PriceLadder};

use crate::latency::{clock_overhead_ns, thread_cpu_ns, LatencyRecorder, LatencySummary};
use crate::memory::HeapProbe;
use crate::report::{duration_ns, hex, latency_json, si, thousands, Align, Table};
use crate::workload::{Workload, WorkloadConfig};

/// A throughput (and latency) target of the array engine at one book size.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// The book size (`--orders`) it applies to.
    pub book: usize,
    /// Commands per second of wall time in the throughput pass, at least.
    pub ops_per_sec: f64,
    /// The latency pass's p99 below this, if there is a latency target.
    pub p99_ns: Option<u64>,
}

/// Issue 16, item 1: >= 20M ops/s with p99 < 500 ns at 1K orders, >= 3M ops/s at 1M.
pub const TARGETS: [Target; 2] = [
    Target {
        book: 1_000,
        ops_per_sec: 20_000_000.0,
        p99_ns: Some(500),
    },
    Target {
        book: 1_000_000,
        ops_per_sec: 3_000_000.0,
        p99_ns: None,
    },
];

impl Target {
    /// Whether `result` meets it.
    pub fn reached_by(&self, result: &LadderResult) -> bool {
        result.ops_per_sec() >= self.ops_per_sec
            && self.p99_ns.is_none_or(|p99| result.latency.p99_ns < p99)
    }

    /// "20M ops/s and p99 < 500ns at 1K orders".
    fn describe(&self) -> String {
        let p99 = self.p99_ns.map_or(String::new(), |p99| {
            format!(" and p99 < {}", duration_ns(p99 as f64))
        });
        format!(
            ">= {} ops/s{p99} at {} orders",
            si(self.ops_per_sec),
            thousands(self.book as u64)
        )
    }
}

/// The targets that apply to a run's book sizes, with the size's result.
fn targets_met(report: &BenchReport) -> impl Iterator<Item = (&Target, &SizeResult)> {
    TARGETS.iter().filter_map(|target| {
        let size = report
            .sizes
            .iter()
            .find(|s| s.config.target_orders == target.book)?;
        Some((target, size))
    })
}
/// The commitment target: `Engine::commit` after a block costs less than this share of the
/// block's matching (at the 1K book, blocks of 1,000 commands).
pub const TARGET_COMMIT_SHARE: f64 = 0.20;

/// What to run.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchOptions {
    /// Book sizes (resting orders) to run, in order.
    pub sizes: Vec<usize>,
    /// Measured commands per book size.
    pub ops: usize,
    /// Workload seed.
    pub seed: u64,
    /// Call `Engine::commit` (incremental state root) every this many commands inside the
    /// timed throughput loop; 0 never does (pure matching).
    pub commit_every: usize,
}

/// Heap figures of one engine (requested bytes; see [`crate::memory`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MemoryFigures {
    /// Held after `Engine::new` and the setup commands (assets, market, funded accounts).
    pub startup_bytes: i64,
    /// The engine's `max_resting_orders`.
    pub max_resting_orders: u32,
    /// Grown while the prefill built the book.
    pub prefill_bytes: i64,
    /// Resting orders after the prefill.
    pub prefill_orders: usize,
}

impl MemoryFigures {
    /// Startup heap divided by capacity: what each order slot costs up front.
    pub fn reserved_per_slot(&self) -> f64 {
        self.startup_bytes as f64 / self.max_resting_orders.max(1) as f64
    }

    /// Heap grown while filling, per resting order: what the book structure adds on top.
    pub fn grown_per_order(&self) -> f64 {
        self.prefill_bytes as f64 / self.prefill_orders.max(1) as f64
    }

    /// Everything held after the prefill, per resting order (includes unused capacity).
    pub fn held_per_order(&self) -> f64 {
        (self.startup_bytes + self.prefill_bytes) as f64 / self.prefill_orders.max(1) as f64
    }
}

/// The throughput pass split by block (`--commit-every N`): matching and the commit timed
/// apart, one `Instant` pair each per block.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CommitFigures {
    /// Blocks (each `commit_every` commands, the last one possibly shorter).
    pub blocks: u64,
    /// Total time stepping the blocks' commands, in nanoseconds.
    pub match_ns: u64,
    /// Total time in `Engine::commit`, in nanoseconds.
    pub commit_ns: u64,
    /// Order records folded in (touched order slots, summed over blocks).
    pub orders_folded: u64,
    /// Account records folded in.
    pub accounts_folded: u64,
    /// Median over blocks of the block's matching time, in nanoseconds.
    pub match_median_ns: u64,
    /// Median over blocks of the block's commit time, in nanoseconds.
    pub commit_median_ns: u64,
    /// Median over blocks of the block's commit/matching ratio. Less sensitive than the
    /// ratio of totals to a block that lost its core to another process.
    pub median_share: f64,
}

impl CommitFigures {
    /// Mean matching time per block, in nanoseconds.
    pub fn match_ns_per_block(&self) -> f64 {
        self.match_ns as f64 / self.blocks.max(1) as f64
    }

    /// Mean `commit` time per block, in nanoseconds.
    pub fn commit_ns_per_block(&self) -> f64 {
        self.commit_ns as f64 / self.blocks.max(1) as f64
    }

    /// Commit time over matching time (the target is below [`TARGET_COMMIT_SHARE`]).
    pub fn commit_share(&self) -> f64 {
        self.commit_ns as f64 / self.match_ns.max(1) as f64
    }

    /// Records folded per block (orders + accounts).
    pub fn records_per_block(&self) -> f64 {
        (self.orders_folded + self.accounts_folded) as f64 / self.blocks.max(1) as f64
    }

    /// Commit time per folded record, in nanoseconds.
    pub fn ns_per_record(&self) -> f64 {
        self.commit_ns as f64 / (self.orders_folded + self.accounts_folded).max(1) as f64
    }
}

/// Results of one ladder on one book size.
#[derive(Clone, Debug, PartialEq)]
pub struct LadderResult {
    /// `array` or `btree`.
    pub ladder: &'static str,
    /// Commands in the measured stream.
    pub ops: usize,
    /// Wall time of the throughput pass, in nanoseconds.
    pub elapsed_ns: u64,
    /// CPU time of the throughput pass (its thread's), in nanoseconds, where the OS reports
    /// it ([`crate::latency::thread_cpu_ns`]).
    pub cpu_ns: Option<u64>,
    /// Per-command latency from the latency pass.
    pub latency: LatencySummary,
    /// Resting orders at the start of the measured stream.
    pub resting_start: usize,
    /// Resting orders at its end.
    pub resting_end: usize,
    /// State hash at the end (equal across both passes, checked).
    pub state_hash: [u8; 32],
    /// Heap figures.
    pub memory: MemoryFigures,
    /// Matching and commit per block, when `commit_every > 0`.
    pub commitment: Option<CommitFigures>,
}

impl LadderResult {
    /// Commands per second in the throughput pass.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 * 1e9 / self.elapsed_ns.max(1) as f64
    }

    /// Mean nanoseconds per command in the throughput pass.
    pub fn ns_per_op(&self) -> f64 {
        self.elapsed_ns as f64 / self.ops.max(1) as f64
    }

    /// Mean CPU nanoseconds per command in the throughput pass (the wall figure without the
    /// time the thread waited for a core), if measured.
    pub fn cpu_ns_per_op(&self) -> Option<f64> {
        self.cpu_ns
            .map(|cpu_ns| cpu_ns as f64 / self.ops.max(1) as f64)
    }
}

/// Results for one book size: the workload and both ladders.
#[derive(Clone, Debug)]
pub struct SizeResult {
    /// The workload's configuration.
    pub config: WorkloadConfig,
    /// What the generator produced (mix, fills, book size range).
    pub stats: crate::workload::StreamStats,
    /// Resting orders at the start of the stream.
    pub resting_start: usize,
    /// Resting orders at its end.
    pub resting_end: usize,
    /// Wall time to generate the workload, in nanoseconds (not part of any figure).
    pub generate_ns: u64,
    /// The production engine.
    pub array: LadderResult,
    /// The `BTreeMap` baseline.
    pub btree: LadderResult,
}

impl SizeResult {
    /// Baseline ns/op over production ns/op: how many times faster the array ladder is.
    pub fn throughput_ratio(&self) -> f64 {
        self.btree.ns_per_op() / self.array.ns_per_op()
    }

    /// Baseline p99 over production p99.
    pub fn p99_ratio(&self) -> f64 {
        self.btree.latency.p99_ns as f64 / self.array.latency.p99_ns.max(1) as f64
    }
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// What was asked for.
    pub options: BenchOptions,
    /// Median cost of a back-to-back `Instant::now()` pair, in nanoseconds (included, not
    /// subtracted, in every latency sample).
    pub clock_overhead_ns: u64,
    /// Whether heap figures were measured (the counting allocator is installed).
    pub memory_measured: bool,
    /// One entry per book size.
    pub sizes: Vec<SizeResult>,
}

/// Runs the benchmark. `progress` receives one line per phase (for stderr).
///
/// # Panics
/// If any run ends in a state other than the generator's (a determinism bug in the engine).
pub fn run(
    options: &BenchOptions,
    probe: HeapProbe,
    mut progress: impl FnMut(&str),
) -> BenchReport {
    let clock_overhead_ns = clock_overhead_ns(100_000);
    let mut sizes = Vec::with_capacity(options.sizes.len());
    for &size in &options.sizes {
        let config = WorkloadConfig::new(size, options.ops, options.seed);
        progress(&format!(
            "book {}: generating {} commands (seed {})",
            thousands(size as u64),
            thousands(options.ops as u64),
            options.seed
        ));
        let started = Instant::now();
        let workload = Workload::generate(&config);
        let generate_ns = started.elapsed().as_nanos() as u64;
        progress(&format!("book {}: array ladder", thousands(size as u64)));
        let array = run_ladder::<engine::ArrayLadder>("array", &workload, probe, options);
        progress(&format!("book {}: btree ladder", thousands(size as u64)));
        let btree = run_ladder::<BTreeLadder>("btree", &workload, probe, options);
        for result in [&array, &btree] {
            assert_eq!(
                result.state_hash, workload.final_hash,
                "{} ladder ended in a different state than the generator",
                result.ladder
            );
            assert_eq!(result.resting_end, workload.resting_end);
        }
        sizes.push(SizeResult {
            config,
            stats: workload.stats.clone(),
            resting_start: workload.resting_start,
            resting_end: workload.resting_end,
            generate_ns,
            array,
            btree,
        });
    }
    BenchReport {
        options: options.clone(),
        clock_overhead_ns,
        memory_measured: probe.enabled(),
        sizes,
    }
}

/// Memory, throughput and latency passes of one ladder over `workload`.
fn run_ladder<L: PriceLadder>(
    ladder: &'static str,
    workload: &Workload,
    probe: HeapProbe,
    options: &BenchOptions,
) -> LadderResult {
    let config = workload.config.engine_config();
    // Sized up front so the event buffer never grows inside a measured region.
    let mut out: Vec<Event> = Vec::with_capacity(1 << 14);

    let (mut engine, startup_bytes) = probe.held_by(|| {
        let mut engine = Engine::<L>::new(config);
        workload.apply(&mut engine, &workload.setup, &mut out);
        engine
    });
    let ((), prefill_bytes) =
        probe.held_by(|| workload.apply(&mut engine, &workload.prefill, &mut out));
    let resting_start = engine.resting_orders();
    let memory = MemoryFigures {
        startup_bytes,
        max_resting_orders: config.max_resting_orders,
        prefill_bytes,
        prefill_orders: resting_start,
    };

    // Throughput: the whole stream in one timed loop (or timed per block when committing).
    let stream = workload.stream.as_slice();
    let cpu_start = thread_cpu_ns();
    let (elapsed_ns, commitment) = if options.commit_every == 0 {
        (time_stream(&mut engine, stream, &mut out), None)
    } else {
        let figures = time_blocks(&mut engine, stream, options.commit_every, &mut out);
        (figures.match_ns + figures.commit_ns, Some(figures))
    };
    black_box(&engine);
    let cpu_ns = cpu_start
        .zip(thread_cpu_ns())
        .map(|(start, end)| end.saturating_sub(start));
    let state_hash = engine.state_hash();
    let resting_end = engine.resting_orders();
    drop(engine);

    // Latency: a fresh engine in the same start state, each step timed alone.
    let mut engine = workload.prefilled_engine::<L>();
    let mut recorder = LatencyRecorder::new();
    for command in stream {
        let start = Instant::now();
        engine.step(command, &mut out);
        let end = Instant::now();
        recorder.record_ns(end.duration_since(start).as_nanos() as u64);
        out.clear();
    }
    assert_eq!(
        engine.state_hash(),
        state_hash,
        "{ladder}: latency pass ended in a different state than the throughput pass"
    );

    LadderResult {
        ladder,
        ops: stream.len(),
        elapsed_ns,
        cpu_ns,
        latency: recorder.summary(),
        resting_start,
        resting_end,
        state_hash,
        memory,
        commitment,
    }
}

/// Steps the whole stream in one timed loop (`Engine::step_many`: with prefetching on large
/// books); returns the wall time in nanoseconds.
fn time_stream<L: PriceLadder>(
    engine: &mut Engine<L>,
    stream: &[engine::Command],
    out: &mut Vec<Event>,
) -> u64 {
    let started = Instant::now();
    engine.step_many(stream, out, |out| out.clear());
    started.elapsed().as_nanos() as u64
}

/// Steps the stream in blocks of `block` commands, each followed by `Engine::commit`; times
/// matching and commits apart.
fn time_blocks<L: PriceLadder>(
    engine: &mut Engine<L>,
    stream: &[engine::Command],
    block: usize,
    out: &mut Vec<Event>,
) -> CommitFigures {
    let mut figures = CommitFigures::default();
    // Reserved whole so that no block's timing includes a reallocation.
    let blocks = stream.len().div_ceil(block.max(1));
    let (mut matching, mut committing) = (Vec::with_capacity(blocks), Vec::with_capacity(blocks));
    for chunk in stream.chunks(block) {
        let started = Instant::now();
        engine.step_many(chunk, out, |out| out.clear());
        let stepped = Instant::now();
        let (orders, accounts) = engine.pending_records();
        black_box(engine.commit());
        let committed = Instant::now();
        let (match_ns, commit_ns) = (
            stepped.duration_since(started).as_nanos() as u64,
            committed.duration_since(stepped).as_nanos() as u64,
        );
        figures.blocks += 1;
        figures.match_ns += match_ns;
        figures.commit_ns += commit_ns;
        figures.orders_folded += orders as u64;
        figures.accounts_folded += accounts as u64;
        matching.push(match_ns);
        committing.push(commit_ns);
    }
    let mut shares: Vec<f64> = matching
        .iter()
        .zip(&committing)
        .map(|(&match_ns, &commit_ns)| commit_ns as f64 / match_ns.max(1) as f64)
        .collect();
    figures.match_median_ns = median(&mut matching);
    figures.commit_median_ns = median(&mut committing);
    shares.sort_by(f64::total_cmp);
    figures.median_share = shares.get(shares.len() / 2).copied().unwrap_or(0.0);
    figures
}

/// The middle value (the upper one of an even count; 0 for none). Reorders `values`.
fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

fn percent(part: u64, whole: usize) -> String {
    format!("{:.1}%", 100.0 * part as f64 / whole.max(1) as f64)
}

/// The human-readable report: a table per book size, ratios, and the target verdict.
pub fn render_text(report: &BenchReport) -> String {
    let mut text = String::new();
    let options = &report.options;
    text.push_str(&format!(
        "engine-bench: exchange-core mix, seed {}, {} measured commands per book size{}\n",
        options.seed,
        thousands(options.ops as u64),
        if options.commit_every > 0 {
            format!(", commit every {} commands", options.commit_every)
        } else {
            String::new()
        }
    ));
    text.push_str(&format!(
        "clock: Instant::now() pair costs {} (median); included in every latency sample, not subtracted\n",
        duration_ns(report.clock_overhead_ns as f64)
    ));
    for size in &report.sizes {
        let config = &size.config;
        let stats = &size.stats;
        let ops = config.ops;
        text.push('\n');
        text.push_str(&format!(
            "== book ~{} resting orders: {} commands ==\n",
            thousands(config.target_orders as u64),
            thousands(ops as u64)
        ));
        text.push_str(&format!(
            "workload: {} accounts, prices {} +/- {} ticks; gtc {} ({} of them crossing), ioc {}, cancel {}, modify {} (move {}, through the touch {}, size cut {}, size raise {})\n",
            config.accounts,
            config.mid,
            config.half_width,
            percent(stats.gtc, ops),
            percent(stats.gtc_crossing, stats.gtc as usize),
            percent(stats.ioc, ops),
            percent(stats.cancel, ops),
            percent(stats.modify_move + stats.modify_reduce + stats.modify_increase, ops),
            percent(stats.modify_move, ops),
            percent(stats.modify_crossing, ops),
            percent(stats.modify_reduce, ops),
            percent(stats.modify_increase, ops),
        ));
        text.push_str(&format!(
            "          {:.3} fills/command, {:.2} events/command, {} stp cancels, {} rejected\n",
            stats.fills as f64 / ops.max(1) as f64,
            stats.events as f64 / ops.max(1) as f64,
            thousands(stats.stp_cancels),
            thousands(stats.rejected),
        ));
        text.push_str(&format!(
            "resting orders: {} at start, {} at end (min {}, max {} during the stream)\n",
            thousands(size.resting_start as u64),
            thousands(size.resting_end as u64),
            thousands(stats.min_resting as u64),
            thousands(stats.max_resting as u64),
        ));
        let mut table = Table::new(&[
            ("ladder", Align::Left),
            ("ops", Align::Right),
            ("ops/s", Align::Right),
            ("ns/op", Align::Right),
            ("cpu ns/op", Align::Right),
            ("p50", Align::Right),
            ("p99", Align::Right),
            ("p99.9", Align::Right),
            ("max", Align::Right),
            ("B/slot reserved", Align::Right),
            ("B/order grown", Align::Right),
            ("B/order held", Align::Right),
        ]);
        for result in [&size.array, &size.btree] {
            let memory = &result.memory;
            let bytes = |value: f64| {
                if report.memory_measured {
                    format!("{value:.1}")
                } else {
                    "-".to_string()
                }
            };
            table.row(vec![
                result.ladder.to_string(),
                thousands(result.ops as u64),
                si(result.ops_per_sec()),
                format!("{:.1}", result.ns_per_op()),
                result
                    .cpu_ns_per_op()
                    .map_or("-".to_string(), |ns| format!("{ns:.1}")),
                duration_ns(result.latency.p50_ns as f64),
                duration_ns(result.latency.p99_ns as f64),
                duration_ns(result.latency.p999_ns as f64),
                duration_ns(result.latency.max_ns as f64),
                bytes(memory.reserved_per_slot()),
                bytes(memory.grown_per_order()),
                bytes(memory.held_per_order()),
            ]);
        }
        text.push_str(&table.render());
        text.push_str(&format!(
            "ratio btree/array: ns/op x{:.2}, p99 x{:.2}\n",
            size.throughput_ratio(),
            size.p99_ratio()
        ));
        for result in [&size.array, &size.btree] {
            if let Some(figures) = &result.commitment {
                text.push_str(&commit_line(result.ladder, figures));
            }
        }
        text.push_str(&format!(
            "state hash (generator, both ladders, both passes agree): {}\n",
            hex(&size.array.state_hash)
        ));
    }
    if targets_met(report).next().is_some() {
        text.push('\n');
    }
    for (target, size) in targets_met(report) {
        let cpu_ops_per_sec = size
            .array
            .cpu_ns_per_op()
            .map_or("-".to_string(), |ns| si(1e9 / ns));
        text.push_str(&format!(
            "target: {}: {} ({} ops/s, {} ops/s of CPU time, p99 {})\n",
            target.describe(),
            if target.reached_by(&size.array) {
                "reached"
            } else {
                "not reached"
            },
            si(size.array.ops_per_sec()),
            cpu_ops_per_sec,
            duration_ns(size.array.latency.p99_ns as f64)
        ));
    }
    text
}

/// One line per ladder: matching and commit per block, and their ratio.
fn commit_line(ladder: &str, figures: &CommitFigures) -> String {
    format!(
        "commit {ladder}: {} blocks; per block: matching {}, commit {} ({:.0} records, {:.1} ns/record); median block: matching {}, commit {}, commit/matching {:.1}%; commit/matching {:.1}% (target < {:.0}%: {})\n",
        thousands(figures.blocks),
        duration_ns(figures.match_ns_per_block()),
        duration_ns(figures.commit_ns_per_block()),
        figures.records_per_block(),
        figures.ns_per_record(),
        duration_ns(figures.match_median_ns as f64),
        duration_ns(figures.commit_median_ns as f64),
        100.0 * figures.median_share,
        100.0 * figures.commit_share(),
        100.0 * TARGET_COMMIT_SHARE,
        if figures.commit_share() < TARGET_COMMIT_SHARE { "met" } else { "not met" },
    )
}

fn commit_json(figures: &CommitFigures) -> serde_json::Value {
    serde_json::json!({
        "blocks": figures.blocks,
        "match_ns": figures.match_ns,
        "commit_ns": figures.commit_ns,
        "orders_folded": figures.orders_folded,
        "accounts_folded": figures.accounts_folded,
        "match_ns_per_block": figures.match_ns_per_block(),
        "commit_ns_per_block": figures.commit_ns_per_block(),
        "commit_share": figures.commit_share(),
        "commit_share_target": TARGET_COMMIT_SHARE,
        "match_median_ns": figures.match_median_ns,
        "commit_median_ns": figures.commit_median_ns,
        "median_share": figures.median_share,
    })
}

fn ladder_json(result: &LadderResult) -> serde_json::Value {
    let memory = &result.memory;
    serde_json::json!({
        "ladder": result.ladder,
        "ops": result.ops,
        "elapsed_ns": result.elapsed_ns,
        "ops_per_sec": result.ops_per_sec(),
        "ns_per_op": result.ns_per_op(),
        "cpu_ns_per_op": result.cpu_ns_per_op(),
        "latency": latency_json(&result.latency),
        "resting_start": result.resting_start,
        "resting_end": result.resting_end,
        "state_hash": hex(&result.state_hash),
        "memory": {
            "startup_bytes": memory.startup_bytes,
            "max_resting_orders": memory.max_resting_orders,
            "prefill_bytes": memory.prefill_bytes,
            "prefill_orders": memory.prefill_orders,
            "reserved_bytes_per_slot": memory.reserved_per_slot(),
            "grown_bytes_per_order": memory.grown_per_order(),
            "held_bytes_per_order": memory.held_per_order(),
        },
        "commitment": result.commitment.as_ref().map(commit_json),
    })
}

/// The machine-readable report.
pub fn to_json(report: &BenchReport) -> serde_json::Value {
    let sizes: Vec<serde_json::Value> = report
        .sizes
        .iter()
        .map(|size| {
            let config = &size.config;
            let stats = &size.stats;
            serde_json::json!({
                "target_orders": config.target_orders,
                "ops": config.ops,
                "seed": config.seed,
                "accounts": config.accounts,
                "mid": config.mid,
                "half_width": config.half_width,
                "mix_per_mille": {
                    "gtc": config.mix.gtc,
                    "ioc": config.mix.ioc,
                    "cancel": config.mix.cancel,
                    "modify": config.mix.modify,
                },
                "generated": {
                    "gtc": stats.gtc,
                    "gtc_crossing": stats.gtc_crossing,
                    "ioc": stats.ioc,
                    "cancel": stats.cancel,
                    "modify_move": stats.modify_move,
                    "modify_crossing": stats.modify_crossing,
                    "modify_reduce": stats.modify_reduce,
                    "modify_increase": stats.modify_increase,
                    "fills": stats.fills,
                    "stp_cancels": stats.stp_cancels,
                    "rejected": stats.rejected,
                    "events": stats.events,
                    "min_resting": stats.min_resting,
                    "max_resting": stats.max_resting,
                },
                "resting_start": size.resting_start,
                "resting_end": size.resting_end,
                "generate_ns": size.generate_ns,
                "array": ladder_json(&size.array),
                "btree": ladder_json(&size.btree),
                "ratio_btree_over_array_ns_per_op": size.throughput_ratio(),
                "ratio_btree_over_array_p99": size.p99_ratio(),
            })
        })
        .collect();
    let targets: Vec<serde_json::Value> = targets_met(report)
        .map(|(target, size)| {
            serde_json::json!({
                "book": target.book,
                "ops_per_sec_target": target.ops_per_sec,
                "p99_ns_target": target.p99_ns,
                "ops_per_sec": size.array.ops_per_sec(),
                "cpu_ns_per_op": size.array.cpu_ns_per_op(),
                "p99_ns": size.array.latency.p99_ns,
                "reached": target.reached_by(&size.array),
            })
        })
        .collect();
    serde_json::json!({
        "benchmark": "engine-bench",
        "seed": report.options.seed,
        "ops": report.options.ops,
        "commit_every": report.options.commit_every,
        "clock_overhead_ns": report.clock_overhead_ns,
        "memory_measured": report.memory_measured,
        "sizes": sizes,
        "targets": targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_run_agrees_across_ladders_and_renders() {
        let options = BenchOptions {
            sizes: vec![300],
            ops: 3_000,
            seed: 11,
            commit_every: 0,
        };
        let report = run(&options, HeapProbe::disabled(), |_| {});
        let size = &report.sizes[0];
        assert_eq!(size.array.state_hash, size.btree.state_hash);
        assert_eq!(size.array.ops, 3_000);
        assert_eq!(size.array.latency.count, 3_000);
        // CPU time is measured wherever the OS reports it (Linux here).
        assert_eq!(size.array.cpu_ns.is_some(), thread_cpu_ns().is_some());
        let text = render_text(&report);
        assert!(text.contains("ratio btree/array"));
        let json = to_json(&report);
        assert_eq!(json["sizes"][0]["array"]["ops"], 3_000);

        let committing = BenchOptions {
            commit_every: 100,
            ..options
        };
        let report = run(&committing, HeapProbe::disabled(), |_| {});
        assert_eq!(report.sizes[0].array.state_hash, size.array.state_hash);
        let figures = report.sizes[0].array.commitment.expect("timed per block");
        assert_eq!(figures.blocks, 30);
        assert!(figures.orders_folded > 0 && figures.accounts_folded > 0);
        // Medians lie between the extremes the totals allow (each block took some time).
        assert!(figures.match_median_ns > 0 && figures.match_median_ns <= figures.match_ns);
        assert!(figures.commit_median_ns > 0 && figures.commit_median_ns <= figures.commit_ns);
        assert!(figures.median_share > 0.0);
        assert!(render_text(&report).contains("commit/matching"));
    }
}
