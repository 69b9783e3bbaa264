//! `engine-bench --lobster`: the engine on real NASDAQ flow.
//!
//! The day is first replayed with every check ([`super::replay::replay`]), which records the
//! command stream; each repetition then replays that stream on fresh engines, the production
//! engine (array ladder) and the `BTreeMap` baseline:
//! - throughput: all commands in one loop timed by one `Instant` pair;
//! - latency: each message's commands (1 to a few) timed together, so a sample is the cost of
//!   one book-changing message. Messages with no command (hidden executions, halts) are left
//!   out of both figures.
//!
//! The timed engines are sized like `engine-bench` sizes its books, for 1.5x the peak resting
//! orders of the day ([`Replay::sized_config`]). Every pass must end in the state hash of the
//! checked replay (asserted).

use std::time::Instant;

use engine::{Command, Engine, Event, PriceLadder};

use super::replay::{replay, Counts, Replay};
use super::Day;
use crate::latency::{clock_overhead_ns, LatencyRecorder, LatencySummary};
use crate::report::{duration_ns, hex, si, thousands, Align, Table};

/// One repetition of one ladder.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rep {
    /// Wall time of the throughput pass, in nanoseconds.
    pub elapsed_ns: u64,
    /// Per-message latency (latency pass).
    pub latency: LatencySummary,
}

/// Every repetition of one ladder.
#[derive(Clone, Debug, PartialEq)]
pub struct LadderRuns {
    /// `array` or `btree`.
    pub ladder: &'static str,
    /// In the order run.
    pub reps: Vec<Rep>,
}

/// The whole LOBSTER benchmark.
#[derive(Clone, Debug)]
pub struct LobsterReport {
    /// The message file's name.
    pub name: String,
    /// Messages that changed the book (at least one command): what the figures count.
    pub messages: usize,
    /// Messages replayed in all (book-changing or not).
    pub all_messages: usize,
    /// Commands in the stream.
    pub commands: usize,
    /// What the checked replay did and found.
    pub counts: Counts,
    /// Resting orders at the end.
    pub resting_end: usize,
    /// Most resting orders after any message.
    pub resting_peak: usize,
    /// The state hash every pass ended in.
    pub final_hash: [u8; 32],
    /// Wall time of the checked replay (translation, engine, checks), in nanoseconds.
    pub checked_replay_ns: u64,
    /// Median `Instant::now()` pair, in nanoseconds (included in latency samples).
    pub clock_overhead_ns: u64,
    /// The production engine.
    pub array: LadderRuns,
    /// The `BTreeMap` baseline.
    pub btree: LadderRuns,
}

/// Replays `day` with checks, then times `repetitions` replays of each ladder.
///
/// # Panics
/// If the checked replay finds a mismatch, or a pass ends in another state.
pub fn run(day: &Day, repetitions: usize, mut progress: impl FnMut(&str)) -> LobsterReport {
    progress(&format!("{}: checked replay", day.name));
    let started = Instant::now();
    let checked = replay(day);
    let checked_replay_ns = started.elapsed().as_nanos() as u64;
    assert_eq!(
        checked.counts.mismatches, 0,
        "the engine's book left the file's: {:#?}",
        checked.mismatch_notes
    );
    let mut array = LadderRuns {
        ladder: "array",
        reps: Vec::new(),
    };
    let mut btree = LadderRuns {
        ladder: "btree",
        reps: Vec::new(),
    };
    for rep in 1..=repetitions.max(1) {
        progress(&format!("repetition {rep}: array ladder, btree ladder"));
        array
            .reps
            .push(time_ladder::<engine::ArrayLadder>(&checked));
        btree
            .reps
            .push(time_ladder::<engine::BTreeLadder>(&checked));
    }
    LobsterReport {
        name: day.name.clone(),
        messages: message_ranges(&checked).count(),
        all_messages: checked.message_ends.len(),
        commands: checked.commands.len(),
        counts: checked.counts,
        resting_end: checked.resting_end,
        resting_peak: checked.resting_peak,
        final_hash: checked.final_hash,
        checked_replay_ns,
        clock_overhead_ns: clock_overhead_ns(100_000),
        array,
        btree,
    }
}

/// The command ranges of the messages that have commands.
fn message_ranges(replay: &Replay) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let starts = std::iter::once(0).chain(replay.message_ends.iter().copied());
    starts
        .zip(replay.message_ends.iter().copied())
        .filter(|(start, end)| end > start)
        .map(|(start, end)| start..end)
}

fn fresh_engine<L: PriceLadder>(replay: &Replay, out: &mut Vec<Event>) -> Engine<L> {
    let mut engine = Engine::<L>::new(replay.sized_config());
    step_all(&mut engine, &replay.setup, out);
    engine
}

fn step_all<L: PriceLadder>(engine: &mut Engine<L>, commands: &[Command], out: &mut Vec<Event>) {
    for command in commands {
        engine.step(command, out);
        out.clear();
    }
}

/// One throughput pass and one latency pass on fresh engines; both must end in the checked
/// replay's state.
fn time_ladder<L: PriceLadder>(replay: &Replay) -> Rep {
    let mut out = Vec::with_capacity(1 << 10);
    let mut engine = fresh_engine::<L>(replay, &mut out);
    let started = Instant::now();
    step_all(&mut engine, &replay.commands, &mut out);
    let elapsed_ns = started.elapsed().as_nanos() as u64;
    assert_eq!(engine.state_hash(), replay.final_hash, "throughput pass");

    let mut engine = fresh_engine::<L>(replay, &mut out);
    let mut recorder = LatencyRecorder::new();
    for range in message_ranges(replay) {
        let commands = &replay.commands[range];
        let start = Instant::now();
        step_all(&mut engine, commands, &mut out);
        let end = Instant::now();
        recorder.record_ns(end.duration_since(start).as_nanos() as u64);
    }
    assert_eq!(engine.state_hash(), replay.final_hash, "latency pass");
    Rep {
        elapsed_ns,
        latency: recorder.summary(),
    }
}

impl LobsterReport {
    /// Nanoseconds per book-changing message in a throughput pass.
    pub fn ns_per_message(&self, rep: &Rep) -> f64 {
        rep.elapsed_ns as f64 / self.messages.max(1) as f64
    }
}

/// `min..max` of `value` over the repetitions, formatted by `show`.
fn range(reps: &[Rep], value: impl Fn(&Rep) -> f64, show: impl Fn(f64) -> String) -> String {
    let min = reps.iter().map(&value).fold(f64::INFINITY, f64::min);
    let max = reps.iter().map(&value).fold(f64::NEG_INFINITY, f64::max);
    format!("{}..{}", show(min), show(max))
}

/// The human-readable report: what the replay found, then the figures as ranges over the
/// repetitions.
pub fn render_text(report: &LobsterReport) -> String {
    let c = &report.counts;
    let mut text = format!(
        "engine-bench --lobster: {}\n{} messages replayed, {} change the book ({} commands, {:.3} per message); resting orders: {} at the end, {} at most\n",
        report.name,
        thousands(report.all_messages as u64),
        thousands(report.messages as u64),
        thousands(report.commands as u64),
        report.commands as f64 / report.messages.max(1) as f64,
        thousands(report.resting_end as u64),
        thousands(report.resting_peak as u64),
    );
    text.push_str(&format!(
        "checked replay ({}): levels 1-9 equal to the file after every message ({} mismatches), {} of {} visible executions filled the named order; unknown ids {}, re-anchored levels {}, queue moves {}\n",
        duration_ns(report.checked_replay_ns as f64),
        c.mismatches,
        thousands(c.executions_checked),
        thousands(c.executions),
        thousands(c.unknown_ids()),
        thousands(c.reanchors),
        thousands(c.queue_moves),
    ));
    text.push_str(&format!(
        "clock: Instant::now() pair costs {} (median), included in every latency sample\n",
        duration_ns(report.clock_overhead_ns as f64)
    ));
    let mut table = Table::new(&[
        ("ladder", Align::Left),
        ("reps", Align::Right),
        ("messages/s", Align::Right),
        ("ns/message", Align::Right),
        ("p50", Align::Right),
        ("p99", Align::Right),
        ("p99.9", Align::Right),
    ]);
    for runs in [&report.array, &report.btree] {
        let reps = &runs.reps;
        let nanos = |v: f64| format!("{v:.0}");
        table.row(vec![
            runs.ladder.to_string(),
            reps.len().to_string(),
            range(reps, |r| 1e9 / report.ns_per_message(r), si),
            range(reps, |r| report.ns_per_message(r), |v| format!("{v:.1}")),
            range(reps, |r| r.latency.p50_ns as f64, nanos),
            range(reps, |r| r.latency.p99_ns as f64, nanos),
            range(reps, |r| r.latency.p999_ns as f64, nanos),
        ]);
    }
    text.push_str(&table.render());
    text.push_str("(ranges are min..max over the repetitions; latencies in ns)\n");
    let best = |runs: &LadderRuns, value: fn(&Rep) -> u64| {
        runs.reps.iter().map(value).min().unwrap_or(0).max(1) as f64
    };
    text.push_str(&format!(
        "ratio btree/array (best repetition of each): ns/message x{:.2}, p99 x{:.2}\n",
        best(&report.btree, |r| r.elapsed_ns) / best(&report.array, |r| r.elapsed_ns),
        best(&report.btree, |r| r.latency.p99_ns) / best(&report.array, |r| r.latency.p99_ns),
    ));
    text.push_str(&format!(
        "state hash (checked replay and every pass agree): {}\n",
        hex(&report.final_hash)
    ));
    text
}
