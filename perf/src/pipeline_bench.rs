//! `pipeline-bench`: the sequencer + engine + write-ahead-log pipeline (`sequencer::Pipeline`)
//! on a real LMDB log, against the bare engine on the same stream.
//!
//! For each (block size, fsync on/off, stage waits) it runs the exchange-core workload through
//! a fresh pipeline twice: closed loop (submit as fast as the input ring takes) for throughput,
//! and open loop at a fixed rate for latency over a prefix of the stream (measured from each
//! input's *scheduled* send time, so a stalled pipeline cannot hide its queueing: no
//! coordinated omission). Every input
//! must get exactly one Sequenced and one Finalized output, and the final state hash must equal
//! the bare engine's; both are checked, not timed.

use std::sync::Arc;
use std::time::Instant;

use engine::{ArrayLadder, Engine};
use sequencer::{
    recover, ClientRef, Output, Pipeline, PipelineConfig, SequencerConfig, StageWaits, Submission,
    Wait, Wal, WalOptions,
};

use crate::latency::{LatencyRecorder, LatencySummary};
use crate::workload::Workload;

/// How inputs are offered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// As fast as the input ring accepts.
    ClosedLoop,
    /// At a fixed rate, inputs per second.
    OpenLoop(u64),
}

/// One pipeline configuration to measure.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Inputs per block at most.
    pub block_inputs: u32,
    /// Block age limit, ns.
    pub block_age_ns: u64,
    /// fsync on commit.
    pub sync: bool,
    /// Idle behaviour of the stages.
    pub waits: StageWaits,
    /// How inputs are offered.
    pub load: Load,
    /// Measured inputs: this many from the start of the stream (capped at its length).
    pub inputs: usize,
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The configuration.
    pub case: Case,
    /// Stream inputs measured.
    pub inputs: u64,
    /// Wall time from the first submission to the last Finalized output, s.
    pub seconds: f64,
    /// Wall time from the first submission to the last Sequenced output, s.
    pub sequenced_seconds: f64,
    /// Times `try_submit` was refused (input ring full).
    pub refusals: u64,
    /// received -> sequenced (sequencer stage and its ring).
    pub to_sequencer: LatencySummary,
    /// sequenced -> executed (engine stage and its ring).
    pub to_engine: LatencySummary,
    /// executed -> published (publisher stage and its ring).
    pub to_publisher: LatencySummary,
    /// received -> Sequenced output polled by the caller.
    pub sequenced_e2e: LatencySummary,
    /// received -> Finalized output polled by the caller.
    pub finalized_e2e: LatencySummary,
    /// Duration of each WAL commit (group of blocks, fsync included), ns: one sample per commit.
    pub commit: LatencySummary,
    /// Each commit's duration divided by the blocks it carried, one sample per block, ns.
    pub commit_per_block: LatencySummary,
    /// Blocks made durable.
    pub blocks: u64,
    /// LMDB commits.
    pub commits: u64,
}

impl CaseResult {
    /// Finalized inputs per second.
    pub fn finalized_per_sec(&self) -> f64 {
        self.inputs as f64 / self.seconds
    }
    /// Sequenced inputs per second.
    pub fn sequenced_per_sec(&self) -> f64 {
        self.inputs as f64 / self.sequenced_seconds
    }
    /// Average inputs in a block.
    pub fn inputs_per_block(&self) -> f64 {
        self.inputs as f64 / self.blocks.max(1) as f64
    }
    /// Average commit time per block, ns.
    pub fn commit_ns_per_block(&self) -> f64 {
        self.commit.mean_ns * self.commits as f64 / self.blocks.max(1) as f64
    }
    /// Average blocks per LMDB commit (group commit).
    pub fn blocks_per_commit(&self) -> f64 {
        self.blocks as f64 / self.commits.max(1) as f64
    }
}

/// The bare engine's state hash after the first `inputs` commands of the stream (not timed):
/// what a pipeline run over that prefix must end with.
pub fn bare_hash_after(workload: &Workload, inputs: usize) -> [u8; 32] {
    if inputs >= workload.stream.len() {
        return workload.final_hash;
    }
    let mut engine: Engine<ArrayLadder> = workload.prefilled_engine();
    let mut out = Vec::with_capacity(64);
    workload.apply(&mut engine, &workload.stream[..inputs], &mut out);
    engine.state_hash()
}

/// The bare engine on the same stream: ops/s, single thread, no rings, no log.
pub fn bare_engine_ops_per_sec(workload: &Workload) -> f64 {
    let mut engine: Engine<ArrayLadder> = workload.prefilled_engine();
    let mut out = Vec::with_capacity(64);
    let start = Instant::now();
    workload.apply(&mut engine, &workload.stream, &mut out);
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(
        engine.state_hash(),
        workload.final_hash,
        "bare engine diverged from the generator"
    );
    workload.stream.len() as f64 / seconds
}

/// Per-input bookkeeping while a run is in flight.
struct Tracker {
    received_ns: Vec<u64>,
    sequenced: Vec<bool>,
    finalized: Vec<bool>,
    sequenced_count: u64,
    finalized_count: u64,
    last_sequenced_ns: u64,
    stages: [LatencyRecorder; 5],
    commit: LatencyRecorder,
    commit_per_block: LatencyRecorder,
    blocks: u64,
    commits: u64,
}

impl Tracker {
    fn new(inputs: usize) -> Self {
        Tracker {
            received_ns: vec![0; inputs],
            sequenced: vec![false; inputs],
            finalized: vec![false; inputs],
            sequenced_count: 0,
            finalized_count: 0,
            last_sequenced_ns: 0,
            stages: Default::default(),
            commit: LatencyRecorder::new(),
            commit_per_block: LatencyRecorder::new(),
            blocks: 0,
            commits: 0,
        }
    }

    /// `measured` is false for the setup/prefill phase (counted, not recorded).
    fn take(&mut self, output: Output, now_ns: u64, measured: bool) {
        match output {
            Output::Sequenced { client, times, .. } => {
                let index = client.tag as usize;
                assert!(!self.sequenced[index], "input {index} sequenced twice");
                self.sequenced[index] = true;
                self.sequenced_count += 1;
                self.last_sequenced_ns = now_ns;
                if measured {
                    let received = self.received_ns[index];
                    self.stages[0].record_ns(times.sequenced_ns.saturating_sub(received));
                    self.stages[1].record_ns(times.executed_ns - times.sequenced_ns);
                    self.stages[2].record_ns(times.published_ns - times.executed_ns);
                    self.stages[3].record_ns(now_ns.saturating_sub(received));
                }
            }
            Output::Finalized { client, .. } => {
                let index = client.tag as usize;
                assert!(
                    self.sequenced[index],
                    "input {index} finalized before sequenced"
                );
                assert!(!self.finalized[index], "input {index} finalized twice");
                self.finalized[index] = true;
                self.finalized_count += 1;
                if measured {
                    self.stages[4].record_ns(now_ns.saturating_sub(self.received_ns[index]));
                }
            }
            Output::BlockDurable {
                commit_ns,
                blocks_in_commit,
                ..
            } => {
                if measured {
                    self.commit.record_ns(commit_ns);
                    let blocks = u64::from(blocks_in_commit.max(1));
                    self.commit_per_block
                        .record_ns_n(commit_ns / blocks, blocks);
                    self.blocks += blocks_in_commit as u64;
                    self.commits += 1;
                }
            }
            Output::Fatal(why) => panic!("pipeline failed: {why}"),
            Output::Event { .. }
            | Output::BlockExecuted { .. }
            | Output::Level { .. }
            | Output::Call { .. } => {}
        }
    }
}

fn submit(
    pipeline: &mut Pipeline,
    tracker: &mut Tracker,
    index: usize,
    command: engine::Command,
    received_ns: u64,
    measured: bool,
) -> u64 {
    tracker.received_ns[index] = received_ns;
    let mut submission = Submission {
        client: ClientRef {
            connection: 0,
            tag: index as u64,
        },
        command,
        received_ns,
    };
    let mut refusals = 0;
    loop {
        match pipeline.try_submit(submission) {
            Ok(()) => return refusals,
            Err(back) => {
                refusals += 1;
                submission = back;
                while let Some(output) = pipeline.poll_output() {
                    let now = pipeline.now_ns();
                    tracker.take(output, now, measured);
                }
                std::hint::spin_loop();
            }
        }
    }
}

/// Runs the first `case.inputs` commands of `workload`'s stream (after its setup and prefill)
/// through a fresh pipeline configured by `case`. Panics if an input does not get exactly one
/// Sequenced and one Finalized output, or if the final state hash differs from the bare
/// engine's over the same commands.
pub fn run_case(workload: &Workload, case: Case) -> CaseResult {
    let stream = &workload.stream[..case.inputs.min(workload.stream.len())];
    let expected_hash = bare_hash_after(workload, stream.len());
    let dir = tempfile::tempdir().expect("temporary data folder");
    let wal = Wal::open(
        dir.path(),
        WalOptions {
            map_size_bytes: 8 << 30,
            sync: case.sync,
        },
    )
    .expect("open the log");
    let recovered = recover(&wal, workload.config.engine_config()).expect("empty log");
    let config = PipelineConfig {
        blocks: SequencerConfig {
            max_block_inputs: case.block_inputs,
            max_block_age_ns: case.block_age_ns,
        },
        ring_capacity: 1 << 16,
        snapshot_every_blocks: 0,
        waits: case.waits,
        pin_threads: false,
        level_changes: false,
        inline_sequencer: false,
        fused_engine: false,
    };
    let mut pipeline = Pipeline::start(recovered, wal, config, Arc::new(|| {}));
    let warmup: Vec<_> = workload
        .setup
        .iter()
        .chain(workload.prefill.iter())
        .cloned()
        .collect();
    let total = warmup.len() + stream.len();
    let mut tracker = Tracker::new(total);
    // Setup and prefill: not measured; wait until all are final.
    for (index, command) in warmup.iter().enumerate() {
        let now = pipeline.now_ns();
        submit(
            &mut pipeline,
            &mut tracker,
            index,
            command.clone(),
            now,
            false,
        );
    }
    while tracker.finalized_count < warmup.len() as u64 {
        match pipeline.poll_output() {
            Some(output) => {
                let now = pipeline.now_ns();
                tracker.take(output, now, false);
            }
            None => std::hint::spin_loop(),
        }
    }
    // The measured stream.
    let start_ns = pipeline.now_ns();
    let mut refusals = 0;
    for (offset, command) in stream.iter().enumerate() {
        let index = warmup.len() + offset;
        let received_ns = match case.load {
            Load::ClosedLoop => pipeline.now_ns(),
            Load::OpenLoop(rate) => {
                let due = start_ns + (offset as u128 * 1_000_000_000 / rate as u128) as u64;
                // Wait without holding a core: on 2 cores a spinning load generator would
                // take one of them from the stages it measures.
                while pipeline.now_ns() < due {
                    match pipeline.poll_output() {
                        Some(output) => {
                            let now = pipeline.now_ns();
                            tracker.take(output, now, true);
                        }
                        None => std::thread::yield_now(),
                    }
                }
                due
            }
        };
        refusals += submit(
            &mut pipeline,
            &mut tracker,
            index,
            command.clone(),
            received_ns,
            true,
        );
        if offset % 64 == 0 {
            while let Some(output) = pipeline.poll_output() {
                let now = pipeline.now_ns();
                tracker.take(output, now, true);
            }
        }
    }
    while tracker.finalized_count < total as u64 {
        match pipeline.poll_output() {
            Some(output) => {
                let now = pipeline.now_ns();
                tracker.take(output, now, true);
            }
            None => std::hint::spin_loop(),
        }
    }
    let end_ns = pipeline.now_ns();
    let (engine, rest) = pipeline.shutdown();
    for output in rest {
        tracker.take(output, end_ns, true);
    }
    assert_eq!(
        tracker.sequenced_count, total as u64,
        "lost Sequenced outputs ({case:?})"
    );
    assert_eq!(
        tracker.finalized_count, total as u64,
        "lost Finalized outputs ({case:?})"
    );
    assert_eq!(
        engine.state_hash(),
        expected_hash,
        "the pipeline's engine diverged from the bare engine ({case:?})"
    );
    let [to_sequencer, to_engine, to_publisher, sequenced_e2e, finalized_e2e] =
        tracker.stages.map(|recorder| recorder.summary());
    CaseResult {
        case,
        inputs: stream.len() as u64,
        seconds: (end_ns - start_ns) as f64 / 1e9,
        sequenced_seconds: (tracker.last_sequenced_ns.max(start_ns + 1) - start_ns) as f64 / 1e9,
        refusals,
        to_sequencer,
        to_engine,
        to_publisher,
        sequenced_e2e,
        finalized_e2e,
        commit: tracker.commit.summary(),
        commit_per_block: tracker.commit_per_block.summary(),
        blocks: tracker.blocks,
        commits: tracker.commits,
    }
}

/// A short label for a case's waits: which stages spin.
pub fn waits_label(waits: &StageWaits) -> String {
    let spinning: Vec<&str> = [
        ("sequencer", waits.sequencer),
        ("engine", waits.engine),
        ("wal", waits.wal),
        ("publisher", waits.publisher),
    ]
    .iter()
    .filter(|(_, wait)| *wait == Wait::Spin)
    .map(|(name, _)| *name)
    .collect();
    if spinning.is_empty() {
        "park".to_string()
    } else {
        format!("spin:{}", spinning.join("+"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::WorkloadConfig;

    /// The bench path on a tiny stream: every input sequenced and finalized once, and the
    /// pipeline's engine ends where the bare engine does (asserted inside `run_case`), for
    /// the whole stream (closed loop) and for a prefix (open loop, fsync on).
    #[test]
    fn a_tiny_run_counts_every_input_and_agrees_with_the_bare_engine() {
        let workload = Workload::generate(&WorkloadConfig::new(200, 2_000, 7));
        for (load, inputs, sync) in [
            (Load::ClosedLoop, usize::MAX, false),
            (Load::OpenLoop(200_000), 1_500, true),
        ] {
            let result = run_case(
                &workload,
                Case {
                    block_inputs: 64,
                    block_age_ns: 200_000,
                    sync,
                    waits: StageWaits::ALL_PARK,
                    load,
                    inputs,
                },
            );
            let expected = inputs.min(2_000) as u64;
            assert_eq!(result.inputs, expected);
            assert_eq!(result.to_engine.count, expected);
            assert_eq!(result.finalized_e2e.count, expected);
            assert!(result.blocks >= expected / 64, "blocks: {}", result.blocks);
            assert_eq!(result.commit_per_block.count, result.blocks);
        }
    }

    #[test]
    fn a_prefix_hash_differs_from_the_final_one() {
        let workload = Workload::generate(&WorkloadConfig::new(200, 500, 3));
        assert_eq!(bare_hash_after(&workload, 500), workload.final_hash);
        assert_ne!(bare_hash_after(&workload, 250), workload.final_hash);
    }
}
