//! The peer section of `engine-bench`: the engine and each peer book on the same stream.
//!
//! Per book size: a workload with one account per side (no self-trades) is generated, the
//! engine is timed on its commands, and each peer on the translation of the same stream
//! (its [`Profile`]), each with a throughput pass (one timed loop) and a latency pass (each
//! operation timed alone). A peer's fills in the throughput pass must equal the engine's
//! (count and lots: asserted); the per-operation comparison is `perf/tests/peers.rs`.

use std::time::Instant;

use engine::{Engine, Event, Lots};

use super::lobster_book::LobsterBook;
use super::orderbook_rs_book::OrderbookRsBook;
use super::{translate, PeerBook, PeerFill, PeerStream, Profile};
use crate::latency::{LatencyRecorder, LatencySummary};
use crate::report::{duration_ns, si, thousands, Align, Table};
use crate::workload::{Workload, WorkloadConfig};

/// One book on one stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// The engine, or the peer crate and version.
    pub name: &'static str,
    /// Operations (engine: commands) in the measured stream.
    pub ops: usize,
    /// Wall time of the throughput pass, in nanoseconds.
    pub elapsed_ns: u64,
    /// Per-operation latency (latency pass).
    pub latency: LatencySummary,
    /// Trades in the throughput pass.
    pub fills: usize,
    /// A peer's translation of the stream; `None` for the engine.
    pub profile: Option<Profile>,
}

impl Timing {
    /// Mean nanoseconds per operation in the throughput pass.
    pub fn ns_per_op(&self) -> f64 {
        self.elapsed_ns as f64 / self.ops.max(1) as f64
    }
}

/// The engine and every peer at one book size.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    /// Target resting orders.
    pub book: usize,
    /// The engine (array ladder) on the stream's commands.
    pub ours: Timing,
    /// Each peer on its translation of the stream.
    pub peers: Vec<Timing>,
}

/// Runs the section for each book size.
///
/// # Panics
/// If a peer's fills differ from the engine's on its stream.
pub fn run(sizes: &[usize], ops: usize, seed: u64, mut progress: impl FnMut(&str)) -> Vec<Section> {
    sizes
        .iter()
        .map(|&book| {
            progress(&format!(
                "peers, book {}: generating",
                thousands(book as u64)
            ));
            let workload =
                Workload::generate(&WorkloadConfig::one_account_per_side(book, ops, seed));
            let ours = time_engine(&workload);
            progress(&format!(
                "peers, book {}: {}",
                thousands(book as u64),
                LobsterBook::NAME
            ));
            let lobster = time_peer::<LobsterBook>(&workload);
            progress(&format!(
                "peers, book {}: {}",
                thousands(book as u64),
                OrderbookRsBook::NAME
            ));
            let orderbook_rs = time_peer::<OrderbookRsBook>(&workload);
            Section {
                book,
                ours,
                peers: vec![lobster, orderbook_rs],
            }
        })
        .collect()
}

fn time_engine(workload: &Workload) -> Timing {
    let mut out: Vec<Event> = Vec::with_capacity(1 << 14);
    let mut engine: Engine = workload.prefilled_engine();
    let mut fills = 0;
    let started = Instant::now();
    for command in &workload.stream {
        engine.step(command, &mut out);
        fills += out
            .iter()
            .filter(|e| matches!(e, Event::Fill { .. }))
            .count();
        out.clear();
    }
    let elapsed_ns = started.elapsed().as_nanos() as u64;
    assert_eq!(engine.state_hash(), workload.final_hash);
    let mut engine: Engine = workload.prefilled_engine();
    let mut recorder = LatencyRecorder::new();
    for command in &workload.stream {
        recorder.time(|| engine.step(command, &mut out));
        out.clear();
    }
    Timing {
        name: "nexus engine",
        ops: workload.stream.len(),
        elapsed_ns,
        latency: recorder.summary(),
        fills,
        profile: None,
    }
}

fn prefilled<B: PeerBook>(stream: &PeerStream, book: usize, fills: &mut Vec<PeerFill>) -> B {
    let mut peer = B::with_capacity(book);
    for op in &stream.prefill {
        peer.apply(op, fills);
    }
    peer
}

fn lots(fills: &[PeerFill]) -> Lots {
    fills.iter().map(|fill| fill.qty).sum()
}

fn time_peer<B: PeerBook>(workload: &Workload) -> Timing {
    let stream = translate(workload, B::PROFILE);
    let book = workload.config.target_orders;
    let mut fills = Vec::with_capacity(1 << 10);
    let mut peer = prefilled::<B>(&stream, book, &mut fills);
    let (mut count, mut traded) = (0, 0);
    let started = Instant::now();
    for op in &stream.ops {
        peer.apply(op, &mut fills);
        count += fills.len();
        traded += lots(&fills);
        fills.clear();
    }
    let elapsed_ns = started.elapsed().as_nanos() as u64;
    drop(peer);
    assert_eq!(
        (count, traded),
        (stream.fills.len(), lots(&stream.fills)),
        "{}: fills differ from the engine's",
        B::NAME
    );
    let mut peer = prefilled::<B>(&stream, book, &mut fills);
    let mut recorder = LatencyRecorder::new();
    for op in &stream.ops {
        recorder.time(|| peer.apply(op, &mut fills));
        fills.clear();
    }
    Timing {
        name: B::NAME,
        ops: stream.ops.len(),
        elapsed_ns,
        latency: recorder.summary(),
        fills: count,
        profile: Some(B::PROFILE),
    }
}

/// How a peer's stream differs from the engine's, in words.
fn profile_note(profile: Option<Profile>) -> &'static str {
    match profile {
        Some(Profile::ReEnterCuts) => "size cuts done as cancel + new (no in-place cut)",
        Some(Profile::KeepPriorityOnCut) | None => "the engine's operations",
    }
}

/// The section as text: a table per book size with the ratios ours/theirs.
pub fn render_text(sections: &[Section]) -> String {
    let mut text = String::from(
        "\n== peers: the same stream (one account per side, no self-trades) on crates.io order books ==\n",
    );
    for section in sections {
        text.push_str(&format!(
            "book ~{} resting orders\n",
            thousands(section.book as u64)
        ));
        let mut table = Table::new(&[
            ("book", Align::Left),
            ("ops", Align::Right),
            ("ops/s", Align::Right),
            ("ns/op", Align::Right),
            ("p50", Align::Right),
            ("p99", Align::Right),
            ("fills", Align::Right),
            ("ours/theirs ns/op", Align::Right),
            ("ours/theirs p99", Align::Right),
        ]);
        for timing in std::iter::once(&section.ours).chain(&section.peers) {
            table.row(vec![
                timing.name.to_string(),
                thousands(timing.ops as u64),
                si(1e9 / timing.ns_per_op().max(1e-9)),
                format!("{:.1}", timing.ns_per_op()),
                duration_ns(timing.latency.p50_ns as f64),
                duration_ns(timing.latency.p99_ns as f64),
                thousands(timing.fills as u64),
                format!(
                    "{:.3}",
                    section.ours.ns_per_op() / timing.ns_per_op().max(1e-9)
                ),
                format!(
                    "{:.3}",
                    section.ours.latency.p99_ns as f64 / timing.latency.p99_ns.max(1) as f64
                ),
            ]);
        }
        text.push_str(&table.render());
        for peer in &section.peers {
            let note = profile_note(peer.profile);
            text.push_str(&format!(
                "  {}: {note}; fills equal the engine's\n",
                peer.name
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_section_times_every_book_and_renders_the_ratios() {
        let sections = run(&[300], 2_000, 5, |_| {});
        let section = &sections[0];
        assert_eq!(section.ours.ops, 2_000);
        assert_eq!(section.ours.latency.count, 2_000);
        let names: Vec<_> = section.peers.iter().map(|p| p.name).collect();
        assert_eq!(names, [LobsterBook::NAME, OrderbookRsBook::NAME]);
        // orderbook-rs runs the engine's own operations: same count, same trades.
        assert_eq!(section.peers[1].ops, section.ours.ops);
        assert_eq!(section.peers[1].fills, section.ours.fills);
        assert!(section.ours.fills > 0);
        let text = render_text(&sections);
        assert!(text.contains("ours/theirs p99"), "{text}");
        assert!(text.contains("orderbook-rs 0.15.3"), "{text}");
    }
}
