//! Real NASDAQ flow: the LOBSTER sample day (GOOG, 2012-06-21) replayed through the engine,
//! levels 1-9 of both sides checked against the book file after every message, and every
//! visible execution checked to fill the order it names (see `perf::lobster::replay`).
//!
//! The data is read from `../shared/data/lobster` (or `$NEXUS_LOBSTER_DIR`); when the folder
//! is absent the test prints `SKIPPED: lobster data not found at <path>` and passes.

use engine::{BTreeEngine, Event};
use perf::lobster::replay::{replay, Replay};
use perf::lobster::{lobster_dir, Day, LoadError};

/// The sample's message file; its figures are asserted exactly (README, "Known properties").
const GOOG_SAMPLE: &str = "GOOG_2012-06-21_34200000_57600000_message_10.csv";

/// The sample day, or `None` (after saying so) when the folder is absent.
fn sample_day() -> Option<Day> {
    let dir = lobster_dir();
    match Day::load_dir(&dir) {
        Ok(day) => Some(day),
        Err(LoadError::Missing(path)) => {
            println!("SKIPPED: lobster data not found at {}", path.display());
            None
        }
        Err(error) => panic!("cannot read the LOBSTER data in {}: {error}", dir.display()),
    }
}

fn print_counts(day: &Day, replay: &Replay) {
    let c = &replay.counts;
    println!(
        "{}: {} messages replayed ({} submits, {} partial cancels, {} deletes, {} executions, {} hidden, {} halts/crosses)",
        day.name, c.messages, c.submits, c.partial_cancels, c.deletes, c.executions,
        c.hidden_executions, c.crosses_and_halts
    );
    println!(
        "unknown ids: {} (partial cancels {}, deletes {}, executions {}); ids gone as stale {}; executions checked {}; queue moves {}",
        c.unknown_ids(), c.unknown_partial_cancels, c.unknown_deletes, c.unknown_executions,
        c.gone_ids, c.executions_checked, c.queue_moves
    );
    println!(
        "re-anchors: {} levels (+{} / -{} lots); stale lots {}; reclaimed {}; fresh lots removed {}; shortfall {} lots; mismatches {}; {} commands",
        c.reanchors, c.reanchor_lots_added, c.reanchor_lots_removed, c.stale_lots,
        c.reclaimed_lots, c.fresh_lots_removed, c.anchor_shortfall_lots, c.mismatches,
        replay.commands.len()
    );
    for note in &replay.mismatch_notes {
        println!("  {note}");
    }
}

/// The recorded commands, stepped on the `BTreeMap` ladder: no refusal, same end state.
fn assert_stream_replays(replay: &Replay) {
    let mut engine = BTreeEngine::new(replay.config);
    let mut out = Vec::new();
    for command in replay.setup.iter().chain(&replay.commands) {
        engine.step(command, &mut out);
        let refused = out.iter().any(|e| matches!(e, Event::Rejected { .. }));
        assert!(!refused, "{command:?} refused on replay: {out:?}");
        out.clear();
    }
    assert_eq!(engine.state_hash(), replay.final_hash);
    assert_eq!(engine.resting_orders(), replay.resting_end);
}

#[test]
fn lobster_day_replays_with_the_book_equal_to_the_file_after_every_message() {
    let Some(day) = sample_day() else { return };
    let replay = replay(&day);
    print_counts(&day, &replay);
    let c = &replay.counts;
    assert_eq!(c.messages as usize + 1, day.rows());
    assert_eq!(replay.message_ends.len(), day.rows() - 1);
    assert_eq!(
        c.mismatches, 0,
        "first mismatches: {:#?}",
        replay.mismatch_notes
    );
    // Every visible execution filled exactly the order it names, in full.
    assert_eq!(c.executions_checked, c.executions);
    // Volume the file moves is always found at its level, and re-anchoring only ever takes
    // volume from orders whose level left the window.
    assert_eq!(c.anchor_shortfall_lots, 0);
    assert_eq!(c.fresh_lots_removed, 0);
    let typed = c.submits + c.partial_cancels + c.deletes + c.executions;
    assert_eq!(
        typed + c.hidden_executions + c.crosses_and_halts,
        c.messages
    );
    if day.name == GOOG_SAMPLE {
        assert_eq!(day.rows(), 147_916);
        // The README's measured gaps: 2,830 deletes and 531 executions name unknown ids.
        assert_eq!((c.unknown_deletes, c.unknown_executions), (2_830, 531));
        assert_eq!((c.executions, c.hidden_executions), (7_764, 3_913));
    }
    assert_stream_replays(&replay);
}
