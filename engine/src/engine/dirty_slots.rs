//! The order slots touched since the last commit: a two-level bitmap, drained in groups.
//!
//! A slot is one bit; a summary bit marks each non-zero word, so a drain finds the touched
//! slots in O(touched + slots / 4,096) without a list that could grow on the data path (1/8
//! byte per slot, allocated once). A drain first packs the slot numbers of whole words into a
//! fixed buffer, then hands them out [`WIDE`] at a time. On AVX-512 a 16-bit piece of a word
//! becomes its slot numbers in one compress instruction; elsewhere the bits are read one by
//! one (~2.5 TSC ticks per slot timed alone; in a commit that time is mostly hidden behind
//! the hashing, docs/perf.md).

use super::one_block::WIDE;

/// Slot numbers packed before the full groups among them are handed out.
const BATCH: usize = 256;

/// Room in the packing buffer: a batch, one more word's slots, and a vector's slack (the
/// AVX-512 packing stores 16 lanes wherever it has got to).
const BUFFER: usize = BATCH + 64 + WIDE;

/// The touched order slots (module doc).
pub(super) struct DirtySlots {
    words: Vec<u64>,
    summary: Vec<u64>,
    count: usize,
}

impl DirtySlots {
    /// No slot touched, room for `slots`.
    pub(super) fn with_capacity(slots: usize) -> Self {
        let words = slots.div_ceil(64);
        DirtySlots {
            words: vec![0; words],
            summary: vec![0; words.div_ceil(64)],
            count: 0,
        }
    }

    /// Slots touched since the last drain.
    pub(super) fn count(&self) -> usize {
        self.count
    }

    /// Marks `slot` touched (once however often it is called).
    ///
    /// # Panics
    /// If `slot` is past the capacity.
    #[inline]
    pub(super) fn insert(&mut self, slot: u32) {
        let word = slot as usize / 64;
        let bit = 1u64 << (slot % 64);
        if self.words[word] & bit == 0 {
            self.words[word] |= bit;
            self.summary[word / 64] |= 1u64 << (word % 64);
            self.count += 1;
        }
    }

    /// Calls `each` with every touched slot, lowest first, [`WIDE`] at a time (the last call
    /// may have fewer), and unmarks them all.
    pub(super) fn drain(&mut self, each: impl FnMut(&[u32])) {
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // The only way to call a `target_feature` function: see SAFETY.
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: `drain_avx512` only requires the CPU to support AVX-512F, checked just
            // above.
            return unsafe { self.drain_avx512(each) };
        }
        self.drain_with(pack_bits, each);
    }

    /// [`DirtySlots::drain`], packing with AVX-512.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn drain_avx512(&mut self, each: impl FnMut(&[u32])) {
        self.drain_with(
            |buffer, len, first, bits| avx512::pack_bits(buffer, len, first, bits),
            each,
        );
    }

    /// [`DirtySlots::drain`] with `pack` putting a word's slot numbers into the buffer.
    #[inline(always)]
    fn drain_with(
        &mut self,
        pack: impl Fn(&mut [u32; BUFFER], usize, u32, u64) -> usize,
        mut each: impl FnMut(&[u32]),
    ) {
        let mut buffer = [0u32; BUFFER];
        let mut len = 0;
        for at in 0..self.summary.len() {
            let mut summary = std::mem::take(&mut self.summary[at]);
            while summary != 0 {
                let word = at * 64 + summary.trailing_zeros() as usize;
                summary &= summary - 1;
                let bits = std::mem::take(&mut self.words[word]);
                len = pack(&mut buffer, len, (word * 64) as u32, bits);
                if len >= BATCH {
                    let full = len - len % WIDE;
                    buffer[..full].chunks_exact(WIDE).for_each(&mut each);
                    buffer.copy_within(full..len, 0);
                    len -= full;
                }
            }
        }
        buffer[..len].chunks(WIDE).for_each(each);
        self.count = 0;
    }
}

/// Writes the slot numbers of the set bits of `bits` (slots `first..first + 64`) into
/// `buffer` from `len` on, lowest first; returns the new length.
///
/// # Panics
/// If `len` is past [`BATCH`].
fn pack_bits(buffer: &mut [u32; BUFFER], mut len: usize, first: u32, mut bits: u64) -> usize {
    assert!(
        len < BATCH,
        "a batch is handed out before it grows past {BATCH}"
    );
    while bits != 0 {
        buffer[len] = first + bits.trailing_zeros();
        bits &= bits - 1;
        len += 1;
    }
    len
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BATCH, BUFFER, WIDE};
    use std::arch::x86_64::*;

    /// [`super::pack_bits`] a 16-bit piece at a time: each piece's slot numbers are
    /// compressed into the low lanes of a vector, and the whole vector is stored where the
    /// buffer has got to (the lanes past the piece's are overwritten by the next piece, or
    /// are past the length).
    ///
    /// # Panics
    /// If `len` is past [`BATCH`].
    #[target_feature(enable = "avx512f")]
    pub(super) fn pack_bits(
        buffer: &mut [u32; BUFFER],
        mut len: usize,
        first: u32,
        bits: u64,
    ) -> usize {
        assert!(
            len < BATCH,
            "a batch is handed out before it grows past {BATCH}"
        );
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for piece in 0..4 {
            let mask = (bits >> (16 * piece)) as u16;
            let slots = _mm512_add_epi32(lanes, _mm512_set1_epi32((first + 16 * piece) as i32));
            let packed = _mm512_maskz_compress_epi32(mask, slots);
            let place: &mut [u32; WIDE] = (&mut buffer[len..len + WIDE]).try_into().expect("16");
            #[allow(unsafe_code)]
            // SAFETY: `place` is 16 u32s, the 64 bytes an unaligned vector store writes.
            unsafe {
                _mm512_storeu_si512(place.as_mut_ptr().cast(), packed)
            };
            len += mask.count_ones() as usize;
        }
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Everything `drain` hands out, group by group.
    fn drained(dirty: &mut DirtySlots) -> Vec<Vec<u32>> {
        let mut groups = Vec::new();
        dirty.drain(|group| groups.push(group.to_vec()));
        groups
    }

    proptest! {
        /// The drain hands out each touched slot once, in order, in full groups but the last,
        /// and leaves nothing touched, whatever the density (sparse, one word, every slot);
        /// the scalar packing (which `drain` does not use on AVX-512) hands out the same.
        #[test]
        fn drain_hands_out_every_touched_slot_in_order(
            capacity in 1usize..20_000,
            density in 0u32..=100,
            seed in any::<u64>(),
        ) {
            let mut dirty = DirtySlots::with_capacity(capacity);
            let mut state = seed | 1;
            let mut expected = Vec::new();
            for slot in 0..capacity as u32 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if (state % 100) < density as u64 {
                    dirty.insert(slot);
                    dirty.insert(slot);
                    expected.push(slot);
                }
            }
            prop_assert_eq!(dirty.count(), expected.len());
            let mut scalar = DirtySlots::with_capacity(capacity);
            expected.iter().for_each(|&slot| scalar.insert(slot));
            let mut scalar_groups = Vec::new();
            scalar.drain_with(pack_bits, |group| scalar_groups.push(group.to_vec()));
            let groups = drained(&mut dirty);
            prop_assert_eq!(&groups, &scalar_groups);
            let expected_groups: Vec<Vec<u32>> =
                expected.chunks(WIDE).map(|group| group.to_vec()).collect();
            prop_assert_eq!(groups, expected_groups);
            prop_assert_eq!(dirty.count(), 0);
            prop_assert!(drained(&mut dirty).is_empty());
        }
    }

    /// The AVX-512 packing writes the same slot numbers as the scalar one, wherever the
    /// buffer has got to.
    #[test]
    fn both_packings_agree() {
        let words = [
            0u64,
            1,
            1 << 63,
            u64::MAX,
            0x8000_0001_0000_ffff,
            0x0123_4567_89ab_cdef,
        ];
        for (at, &bits) in words.iter().enumerate() {
            for len in [0, 1, 15, 16, 17, BATCH - 1] {
                let mut scalar = [0u32; BUFFER];
                let first = 64 * at as u32 + 1_000_000;
                let end = pack_bits(&mut scalar, len, first, bits);
                assert_eq!(end, len + bits.count_ones() as usize);
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx512f") {
                    let mut vector = [0u32; BUFFER];
                    #[allow(unsafe_code)]
                    // SAFETY: the CPU supports AVX-512F, checked just above.
                    let vector_end = unsafe { avx512::pack_bits(&mut vector, len, first, bits) };
                    assert_eq!(vector_end, end);
                    assert_eq!(vector[len..end], scalar[len..end]);
                }
            }
        }
    }
}
