//! Test hook `--test-slow-disk PATH`: a validator whose disk is slow, for the fault suite
//! (`node/tests/faults.rs`). Never for a real validator: it only makes it slower.
//!
//! Before each durable write of its safety journal (a save) and of its block file (an
//! append), the validator reads the control file `PATH`. If it holds `MIN-MAX` (or one
//! number `MS`), the write waits a duration drawn uniformly in `MIN..=MAX` ms (SplitMix64
//! from the validator's index) on the validator's loop thread, as a slow `fdatasync` does;
//! if the file is missing, empty, `0` or unreadable, the write goes at once. The file is
//! read again at every write, so a test can start the fault and heal it in a running
//! process. The hook is a hidden option with a `test_` name, and a validator started with
//! it says so in its first line (`{"event":"test_hook","slow_disk":PATH}`); each change of
//! the range is logged as `{"event":"slow_disk","range":[MIN,MAX] | null,"writes","slept_ms"}`
//! (writes delayed and time slept under the range that ends).

use std::path::PathBuf;
use std::time::Duration;

/// The slow-disk hook of one validator.
pub(super) struct SlowDisk {
    control: PathBuf,
    /// SplitMix64 state.
    rng: u64,
    /// The range in force at the last write (ms).
    range: Option<(u64, u64)>,
    /// Writes delayed, and ms slept, under `range`.
    writes: u64,
    slept_ms: u64,
}

/// What one write under the hook did: the range changed (the old range's writes and ms).
pub(super) struct RangeChange {
    /// The new range (ms), if any.
    pub(super) range: Option<(u64, u64)>,
    /// Writes delayed under the old one.
    pub(super) writes: u64,
    /// Milliseconds slept under the old one.
    pub(super) slept_ms: u64,
}

impl SlowDisk {
    /// The hook reading `control`, its delays drawn from `seed`.
    pub(super) fn new(control: PathBuf, seed: u64) -> SlowDisk {
        SlowDisk {
            control,
            rng: seed,
            range: None,
            writes: 0,
            slept_ms: 0,
        }
    }

    /// Waits before one durable write as the control file says now; returns the change of
    /// range, if the file's range differs from the last write's.
    pub(super) fn before_write(&mut self) -> Option<RangeChange> {
        let range = std::fs::read_to_string(&self.control)
            .ok()
            .and_then(|text| parse_range(&text));
        let change = (range != self.range).then(|| RangeChange {
            range,
            writes: std::mem::take(&mut self.writes),
            slept_ms: std::mem::take(&mut self.slept_ms),
        });
        self.range = range;
        if let Some((min, max)) = range {
            let ms = draw(&mut self.rng, min, max);
            std::thread::sleep(Duration::from_millis(ms));
            self.writes += 1;
            self.slept_ms += ms;
        }
        change
    }
}

/// `MIN-MAX` or `MS` (milliseconds; whitespace around ignored) as a range; `None` for no
/// delay (`0`, empty, or not a range with `MIN <= MAX`).
pub(super) fn parse_range(text: &str) -> Option<(u64, u64)> {
    let text = text.trim();
    let (min, max) = match text.split_once('-') {
        Some((min, max)) => (min.trim().parse().ok()?, max.trim().parse().ok()?),
        None => {
            let ms = text.parse().ok()?;
            (ms, ms)
        }
    };
    (min <= max && max > 0).then_some((min, max))
}

/// A duration in `min..=max` from the SplitMix64 stream `state`.
fn draw(state: &mut u64, min: u64, max: u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    min + z % (max - min + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_anything_else_means_no_delay() {
        assert_eq!(parse_range("50-200\n"), Some((50, 200)));
        assert_eq!(parse_range(" 70 "), Some((70, 70)));
        assert_eq!(parse_range("0-5"), Some((0, 5)));
        for none in ["", "0", "0-0", "200-50", "slow", "5-", "-5"] {
            assert_eq!(parse_range(none), None, "{none:?}");
        }
    }

    #[test]
    fn draws_stay_in_the_range_and_spread_over_it() {
        let mut state = 3;
        let draws: Vec<u64> = (0..1_000).map(|_| draw(&mut state, 50, 200)).collect();
        assert!(draws.iter().all(|d| (50..=200).contains(d)));
        assert!(draws.iter().min() < Some(&60), "the low end is drawn");
        assert!(draws.iter().max() > Some(&190), "the high end is drawn");
        assert_eq!(draw(&mut 9, 7, 7), 7);
    }

    /// The control file is read at every write: a range starts delays, removing it ends
    /// them, and each change reports what the range before it did.
    #[test]
    fn the_control_file_starts_and_heals_the_fault() {
        let dir = tempfile::tempdir().expect("dir");
        let control = dir.path().join("slow");
        let mut disk = SlowDisk::new(control.clone(), 1);
        assert!(
            disk.before_write().is_none(),
            "no file: no delay, no change"
        );
        std::fs::write(&control, "1-2").expect("write");
        let change = disk.before_write().expect("a change");
        assert_eq!((change.range, change.writes), (Some((1, 2)), 0));
        assert!(disk.before_write().is_none());
        std::fs::write(&control, "0").expect("write");
        let healed = disk.before_write().expect("healed");
        assert_eq!((healed.range, healed.writes), (None, 2));
        assert!((2..=4).contains(&healed.slept_ms), "{}", healed.slept_ms);
    }
}
