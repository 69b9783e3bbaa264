//! What a validator's periodic snapshot costs at large books (docs/perf.md, "Snapshots").
//!
//! `engine`: `Engine::snapshot` and `Engine::restore` on a prefilled engine, each restore
//! checked (the restored engine's state hash is the original's); the checksum printed names
//! the bytes (equal across builds iff the format is unchanged).
//!
//! `loop`: the same book in an `Execution` (genesis commands), and what a validator's loop
//! spends on one snapshot: synchronously (`Execution::snapshot`, then the file written and
//! synced, what `write_snapshot` did before issue 17) against the image it takes now
//! (`Execution::image`), with the writer thread's part (encode and write) timed apart.
//!
//! ```sh
//! cargo run --release -p perf --example snapshot_cost -- 1000000 3 engine
//! cargo run --release -p perf --example snapshot_cost -- 1000000 3 loop
//! ```
//!
//! Arguments: resting orders (default 1,000,000), runs (default 3), `engine` or `loop`.

use engine::Engine;
use execution::{Execution, ExecutionConfig};
use perf::workload::{Workload, WorkloadConfig};
use state_sync::snapshot::{self, Snapshot};
use std::time::Instant;

fn main() {
    engine::cpu::exit_if_unsupported("snapshot_cost");
    let args: Vec<String> = std::env::args().collect();
    let number = |at: usize, default: usize| {
        args.get(at)
            .map_or(default, |s| s.parse().expect("a number"))
    };
    let (size, runs) = (number(1, 1_000_000), number(2, 3));
    let workload = Workload::generate(&WorkloadConfig::new(size, 1, 42));
    match args.get(3).map_or("engine", String::as_str) {
        "engine" => engine_runs(&workload, runs),
        "loop" => loop_runs(&workload, runs),
        other => panic!("engine or loop, not {other}"),
    }
}

fn ms_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

fn engine_runs(workload: &Workload, runs: usize) {
    let engine: Engine = workload.prefilled_engine();
    let hash = engine.state_hash();
    for run in 0..runs {
        let started = Instant::now();
        let bytes = engine.snapshot();
        let snapshot_ms = ms_since(started);
        let started = Instant::now();
        let restored: Engine = Engine::restore(&bytes).expect("the snapshot restores");
        let restore_ms = ms_since(started);
        assert_eq!(restored.state_hash(), hash, "restored state differs");
        let checksum: String = bytes[bytes.len() - 4..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        println!(
            "orders {} bytes {} checksum {checksum}.. run {run}: snapshot {snapshot_ms:.1} ms, restore {restore_ms:.1} ms",
            engine.resting_orders(),
            bytes.len(),
        );
    }
}

fn loop_runs(workload: &Workload, runs: usize) {
    let config = ExecutionConfig {
        chain_id: [1; 32],
        faucets: Vec::new(),
        feeders: Vec::new(),
        engine: workload.config.engine_config(),
        evm: Default::default(),
        funding_interval_s: 0,
        core_gas_limit: execution::DEFAULT_CORE_GAS_LIMIT,
    };
    let genesis: Vec<_> = workload
        .setup
        .iter()
        .chain(&workload.prefill)
        .cloned()
        .collect();
    let mut execution = Execution::new(config, &genesis);
    let root = execution.root();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let snapshot = |height: u64, execution: Vec<u8>| Snapshot {
        height,
        exec_root: root,
        inputs_executed: 0,
        block_time_ms: 0,
        block_id: [0; 32],
        block_timestamp_ns: 0,
        execution,
        chain: vec![0; 1_000],
    };
    for run in 0..runs as u64 {
        let started = Instant::now();
        let bytes = execution.snapshot();
        snapshot::write(dir.path(), &snapshot(2 * run, bytes)).expect("written");
        let sync_ms = ms_since(started);
        let started = Instant::now();
        let image = execution.image();
        let image_ms = ms_since(started);
        let started = Instant::now();
        let bytes = image.encode();
        snapshot::write(dir.path(), &snapshot(2 * run + 1, bytes)).expect("written");
        let writer_ms = ms_since(started);
        println!(
            "orders {} run {run}: loop before {sync_ms:.1} ms (snapshot + write + sync), \
             loop now {image_ms:.1} ms (image), writer thread {writer_ms:.1} ms",
            workload.resting_start,
        );
    }
}
