//! Heap accounting for benchmarks, through `stats_alloc`.
//!
//! A benchmark binary installs the counting allocator (no unsafe code needed):
//!
//! ```no_run
//! use std::alloc::System;
//! use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
//! #[global_allocator]
//! static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;
//!
//! fn main() {
//!     let probe = perf::memory::HeapProbe::new(GLOBAL);
//!     let (_buffer, held) = probe.held_by(|| vec![0u8; 4096]);
//!     assert_eq!(held, 4096);
//! }
//! ```
//!
//! and hands `GLOBAL` to [`HeapProbe::new`]. Figures are *requested* bytes (the sizes passed to
//! the allocator), not resident memory: a large zeroed or never-written allocation counts in
//! full even if the OS has not backed it with pages yet, and allocator slack is not counted.
//! The counters are process-wide, so measure on one thread with nothing else allocating.

use std::alloc::System;

use stats_alloc::{Region, StatsAlloc};

/// Reads the counting allocator. Without it installed (tests), every figure is 0.
#[derive(Clone, Copy)]
pub struct HeapProbe {
    alloc: Option<&'static StatsAlloc<System>>,
}

impl HeapProbe {
    /// A probe reading the installed global counting allocator.
    pub fn new(alloc: &'static StatsAlloc<System>) -> Self {
        HeapProbe { alloc: Some(alloc) }
    }

    /// A probe that measures nothing (all figures 0), for tests and callers without the
    /// counting allocator.
    pub fn disabled() -> Self {
        HeapProbe { alloc: None }
    }

    /// Whether figures are real.
    pub fn enabled(&self) -> bool {
        self.alloc.is_some()
    }

    /// Runs `work` and returns its result with the heap bytes it left allocated (allocated
    /// minus freed while it ran; negative if it freed more than it kept).
    pub fn held_by<R>(&self, work: impl FnOnce() -> R) -> (R, i64) {
        match self.alloc {
            None => (work(), 0),
            Some(alloc) => {
                let region = Region::new(alloc);
                let result = work();
                let change = region.change();
                let held = change.bytes_allocated as i64 - change.bytes_deallocated as i64;
                (result, held)
            }
        }
    }
}
