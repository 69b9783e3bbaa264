//! Peer order books against the engine on the engine benchmark's stream (one account per
//! side, so no self-trade prevention): the same fills, operation by operation, where their
//! semantics match (see `perf::peers`).

use perf::peers::lobster_book::LobsterBook;
use perf::peers::orderbook_rs_book::OrderbookRsBook;
use perf::peers::{first_fill_difference, translate, PeerBook, PeerOp, PeerStream, Profile};
use perf::workload::{Workload, WorkloadConfig};

const BOOK: usize = 1_000;
const OPS: usize = 4_000;

fn stream(seed: u64, profile: Profile) -> PeerStream {
    let config = WorkloadConfig::one_account_per_side(BOOK, OPS, seed);
    translate(&Workload::generate(&config), profile)
}

/// The stream exercises every operation and trades often enough to compare something.
fn assert_rich(stream: &PeerStream) {
    let count = |pick: fn(&PeerOp) -> bool| stream.ops.iter().filter(|op| pick(op)).count();
    assert!(count(|op| matches!(op, PeerOp::Limit { ioc: true, .. })) > 50);
    assert!(count(|op| matches!(op, PeerOp::Limit { ioc: false, .. })) > 200);
    assert!(count(|op| matches!(op, PeerOp::Cancel { .. })) > 100);
    assert!(count(|op| matches!(op, PeerOp::Replace { .. })) > 1_000);
    assert!(stream.fills.len() > 200, "{} fills", stream.fills.len());
    // Only re-entered cuts can make a later command name an order that is gone.
    assert!(stream.skipped < OPS / 100, "{} skipped", stream.skipped);
    assert_eq!(stream.fill_ends.len(), stream.ops.len());
}

fn assert_agrees<B: PeerBook>() {
    for seed in [1, 2] {
        let stream = stream(seed, B::PROFILE);
        assert_rich(&stream);
        let difference = first_fill_difference::<B>(&stream, BOOK);
        assert_eq!(
            difference,
            None,
            "{} seed {seed}: (op, engine, peer)",
            B::NAME
        );
    }
}

#[test]
fn lobster_fills_equal_the_engines() {
    assert_agrees::<LobsterBook>();
}

#[test]
fn orderbook_rs_fills_equal_the_engines() {
    assert_agrees::<OrderbookRsBook>();
    let stream = stream(1, Profile::KeepPriorityOnCut);
    assert_eq!(
        stream.skipped, 0,
        "the engine's own semantics replay the generator exactly"
    );
    let cuts = stream
        .ops
        .iter()
        .filter(|op| matches!(op, PeerOp::Reduce { .. }));
    assert!(cuts.count() > 300, "priority-keeping cuts are compared too");
}

/// The comparison has teeth: `lobster` cannot cut a size in place, so on the stream where the
/// engine keeps priority on cuts its fills part from the engine's.
#[test]
fn lobster_differs_where_the_engine_keeps_priority_on_a_cut() {
    let stream = stream(1, Profile::KeepPriorityOnCut);
    let (op, engine, peer) = first_fill_difference::<LobsterBook>(&stream, BOOK)
        .expect("a cut re-entered by lobster changes who trades first");
    assert_ne!(engine, peer, "op {op}");
}
