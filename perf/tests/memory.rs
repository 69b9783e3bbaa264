//! Heap held per resting order (issue 16, item 2): the engine sized like engine-bench's (1.5x
//! headroom over its book) holds at most 128 bytes per resting order once the book is built.
//! Requested bytes, counted by `stats_alloc` installed as this test binary's allocator; the
//! figure does not depend on timing, so it is asserted.

use std::alloc::System;

use engine::{ArrayLadder, Engine};
use perf::memory::HeapProbe;
use perf::workload::{Workload, WorkloadConfig};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The budget of issue 16, item 2.
const MAX_BYTES_PER_ORDER: f64 = 128.0;
/// What a resting order needs at least: its 56-byte node and its 32-byte committed digest.
const MIN_BYTES_PER_ORDER: f64 = 88.0;

#[test]
fn a_resting_order_holds_at_most_128_bytes() {
    let workload = Workload::generate(&WorkloadConfig::new(100_000, 0, 42));
    let probe = HeapProbe::new(GLOBAL);
    let mut out = Vec::with_capacity(1 << 10);
    let (engine, held) = probe.held_by(|| {
        let mut engine = Engine::<ArrayLadder>::new(workload.config.engine_config());
        workload.apply(&mut engine, &workload.setup, &mut out);
        workload.apply(&mut engine, &workload.prefill, &mut out);
        engine
    });
    let orders = engine.resting_orders();
    assert_eq!(orders, workload.resting_start);
    let per_order = held as f64 / orders as f64;
    println!("{orders} resting orders, {held} bytes held: {per_order:.1} bytes per order");
    assert!(
        (MIN_BYTES_PER_ORDER..=MAX_BYTES_PER_ORDER).contains(&per_order),
        "{per_order:.1} bytes per resting order"
    );
}
