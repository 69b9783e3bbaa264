//! Price ladders: the index from a price to its level on one side of a book.
//!
//! Both sides use the same ordering trick: a side stores each level under a *key* such that
//! the best price has the lowest key (asks: `key = price`; bids: `key = max_price - price`).
//! A ladder therefore only has to answer "lowest occupied key" and "next occupied key after k".
//!
//! [`ArrayLadder`] is the production index: a price-indexed array split into lazily allocated
//! pages of 1024 levels, with an occupancy bitmap per page and a two-level bitmap over pages,
//! so that finding the next level is a few word scans. Pages are kept once allocated, so a
//! steady-state book never allocates. [`BTreeLadder`] is the textbook `BTreeMap` index, kept
//! as the baseline the benchmarks compare against.

use std::collections::BTreeMap;

/// "No order" in the intrusive lists.
pub const NIL: u32 = u32::MAX;

/// One price level: a FIFO of orders (head = oldest) threaded through the order store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    /// Oldest order at this price, or [`NIL`].
    pub head: u32,
    /// Newest order at this price, or [`NIL`].
    pub tail: u32,
    /// Sum of the remaining lots of every order here.
    pub total_lots: i64,
}

impl Level {
    /// A level with no orders.
    pub const EMPTY: Level = Level {
        head: NIL,
        tail: NIL,
        total_lots: 0,
    };
}

/// An index from keys (`0..=max_key`) to levels, ordered so that the lowest key is best.
pub trait PriceLadder {
    /// A ladder for keys `0..=max_key`.
    fn with_max_key(max_key: u32) -> Self;
    /// The level at `key`, if occupied.
    fn get(&self, key: u32) -> Option<&Level>;
    /// The level at `key`, if occupied, for change.
    fn get_mut(&mut self, key: u32) -> Option<&mut Level>;
    /// The level at `key`, made occupied (empty) if it was not.
    fn get_or_insert(&mut self, key: u32) -> &mut Level;
    /// The level at `key`, which must be occupied (a resting order's level), for change.
    ///
    /// # Panics
    /// If `key` is not occupied (an engine bug): implementations may check less than
    /// [`PriceLadder::get_mut`] does, but never return another key's level.
    fn occupied_mut(&mut self, key: u32) -> &mut Level {
        self.get_mut(key).expect("occupied level")
    }
    /// Marks `key` unoccupied; its level must already be empty of orders.
    fn remove(&mut self, key: u32);
    /// The lowest occupied key (the best price), if any.
    fn first(&self) -> Option<u32>;
    /// The lowest occupied key strictly above `key`, if any.
    fn next_after(&self, key: u32) -> Option<u32>;
}

const PAGE_BITS: u32 = 10;
const PAGE_LEVELS: usize = 1 << PAGE_BITS;
const PAGE_WORDS: usize = PAGE_LEVELS / 64;

struct Page {
    /// A fixed-size array: indices masked to the page need no bounds check.
    levels: Box<[Level; PAGE_LEVELS]>,
    occupied: [u64; PAGE_WORDS],
    occupied_count: u32,
}

impl Page {
    /// Built on the heap directly (a 16 KiB array on the stack would be copied and would
    /// make every caller's frame large). Rare: a page is made once and kept.
    #[cold]
    #[inline(never)]
    fn new() -> Box<Page> {
        Box::new(Page {
            levels: vec![Level::EMPTY; PAGE_LEVELS]
                .into_boxed_slice()
                .try_into()
                .expect("PAGE_LEVELS levels"),
            occupied: [0; PAGE_WORDS],
            occupied_count: 0,
        })
    }

    fn is_set(&self, slot: usize) -> bool {
        self.occupied[slot / 64] & (1u64 << (slot % 64)) != 0
    }

    /// Lowest occupied slot `>= from` in this page.
    fn next_set_from(&self, from: usize) -> Option<usize> {
        let mut word_index = from / 64;
        if word_index >= PAGE_WORDS {
            return None;
        }
        let mut word = self.occupied[word_index] & (!0u64 << (from % 64));
        loop {
            if word != 0 {
                return Some(word_index * 64 + word.trailing_zeros() as usize);
            }
            word_index += 1;
            if word_index == PAGE_WORDS {
                return None;
            }
            word = self.occupied[word_index];
        }
    }
}

/// A set of small integers as a two-level bitmap: `words` holds the members, `summary` one bit
/// per non-zero word, so the next member is found in at most a few word scans.
struct TwoLevelBitset {
    words: Vec<u64>,
    summary: Vec<u64>,
}

impl TwoLevelBitset {
    fn with_len(len: usize) -> Self {
        let words = len.div_ceil(64);
        TwoLevelBitset {
            words: vec![0; words],
            summary: vec![0; words.div_ceil(64).max(1)],
        }
    }

    fn insert(&mut self, index: usize) {
        let word = index / 64;
        self.words[word] |= 1 << (index % 64);
        self.summary[word / 64] |= 1 << (word % 64);
    }

    fn remove(&mut self, index: usize) {
        let word = index / 64;
        self.words[word] &= !(1 << (index % 64));
        if self.words[word] == 0 {
            self.summary[word / 64] &= !(1 << (word % 64));
        }
    }

    /// Lowest member `>= from`.
    fn next_from(&self, from: usize) -> Option<usize> {
        let word = from / 64;
        if word >= self.words.len() {
            return None;
        }
        let bits = self.words[word] & (!0u64 << (from % 64));
        if bits != 0 {
            return Some(word * 64 + bits.trailing_zeros() as usize);
        }
        // Find the next non-zero word through the summary.
        let next_word = word + 1;
        let mut summary_index = next_word / 64;
        if summary_index >= self.summary.len() {
            return None;
        }
        let mut summary_bits = self.summary[summary_index] & (!0u64 << (next_word % 64));
        loop {
            if summary_bits != 0 {
                let w = summary_index * 64 + summary_bits.trailing_zeros() as usize;
                return Some(w * 64 + self.words[w].trailing_zeros() as usize);
            }
            summary_index += 1;
            if summary_index >= self.summary.len() {
                return None;
            }
            summary_bits = self.summary[summary_index];
        }
    }
}

/// The production ladder: paged price-indexed array with occupancy bitmaps. See the module docs.
pub struct ArrayLadder {
    pages: Vec<Option<Box<Page>>>,
    occupied_pages: TwoLevelBitset,
    max_key: u32,
    /// Cached lowest occupied key; `NIL` when the ladder is empty.
    best: u32,
}

impl ArrayLadder {
    fn split(key: u32) -> (usize, usize) {
        (
            (key >> PAGE_BITS) as usize,
            (key as usize) & (PAGE_LEVELS - 1),
        )
    }

    fn page_first_from(&self, page_index: usize, slot: usize) -> Option<u32> {
        let page = self.pages[page_index].as_ref()?;
        page.next_set_from(slot)
            .map(|s| ((page_index << PAGE_BITS) | s) as u32)
    }

    /// Lowest occupied key `>= from`.
    fn next_from(&self, from: u32) -> Option<u32> {
        if from > self.max_key {
            return None;
        }
        let (page_index, slot) = Self::split(from);
        if let Some(key) = self.page_first_from(page_index, slot) {
            return Some(key);
        }
        let next_page = self.occupied_pages.next_from(page_index + 1)?;
        self.page_first_from(next_page, 0)
    }
}

impl PriceLadder for ArrayLadder {
    fn with_max_key(max_key: u32) -> Self {
        let page_count = (max_key as usize >> PAGE_BITS) + 1;
        let mut pages = Vec::with_capacity(page_count);
        pages.resize_with(page_count, || None);
        ArrayLadder {
            pages,
            occupied_pages: TwoLevelBitset::with_len(page_count),
            max_key,
            best: NIL,
        }
    }

    #[inline]
    fn get(&self, key: u32) -> Option<&Level> {
        let (page_index, slot) = Self::split(key);
        let page = self.pages.get(page_index)?.as_ref()?;
        page.is_set(slot).then(|| &page.levels[slot])
    }

    #[inline]
    fn get_mut(&mut self, key: u32) -> Option<&mut Level> {
        let (page_index, slot) = Self::split(key);
        let page = self.pages.get_mut(page_index)?.as_mut()?;
        if page.is_set(slot) {
            Some(&mut page.levels[slot])
        } else {
            None
        }
    }

    // Always inlined: called on nearly every re-entry, where the call cost ~15 of its ~45
    // instructions (docs/perf.md, issue 16 item 1).
    #[inline(always)]
    fn get_or_insert(&mut self, key: u32) -> &mut Level {
        assert!(
            key <= self.max_key,
            "ladder key {key} beyond {}",
            self.max_key
        );
        let (page_index, slot) = Self::split(key);
        // Bound once as `&mut Page`: through the `Box` each access below re-read the page's
        // address from the directory (a store to the page might, to the compiler, have
        // changed it).
        let page: &mut Page = self.pages[page_index].get_or_insert_with(Page::new);
        if !page.is_set(slot) {
            page.occupied[slot / 64] |= 1 << (slot % 64);
            page.levels[slot] = Level::EMPTY;
            page.occupied_count += 1;
            if page.occupied_count == 1 {
                self.occupied_pages.insert(page_index);
            }
            if self.best == NIL || key < self.best {
                self.best = key;
            }
        }
        &mut page.levels[slot]
    }

    // The page's presence is checked (it is one load and a test), the occupancy bit only in
    // debug builds: a level that holds orders is occupied by construction.
    #[inline]
    fn occupied_mut(&mut self, key: u32) -> &mut Level {
        let (page_index, slot) = Self::split(key);
        let page: &mut Page = self.pages[page_index]
            .as_deref_mut()
            .expect("an occupied level's page exists");
        debug_assert!(page.is_set(slot), "level {key} is not occupied");
        &mut page.levels[slot]
    }

    fn remove(&mut self, key: u32) {
        let (page_index, slot) = Self::split(key);
        let page = self.pages[page_index]
            .as_mut()
            .expect("removing a level from a page never allocated");
        debug_assert!(page.is_set(slot), "removing an unoccupied level");
        debug_assert_eq!(
            page.levels[slot].head, NIL,
            "removing a level that holds orders"
        );
        page.occupied[slot / 64] &= !(1 << (slot % 64));
        page.occupied_count -= 1;
        if page.occupied_count == 0 {
            self.occupied_pages.remove(page_index);
        }
        if key == self.best {
            self.best = self.next_from(key).unwrap_or(NIL);
        }
    }

    fn first(&self) -> Option<u32> {
        (self.best != NIL).then_some(self.best)
    }

    fn next_after(&self, key: u32) -> Option<u32> {
        self.next_from(key.checked_add(1)?)
    }
}

/// The baseline ladder: a `BTreeMap` from key to level.
pub struct BTreeLadder {
    levels: BTreeMap<u32, Level>,
}

impl PriceLadder for BTreeLadder {
    fn with_max_key(_max_key: u32) -> Self {
        BTreeLadder {
            levels: BTreeMap::new(),
        }
    }

    fn get(&self, key: u32) -> Option<&Level> {
        self.levels.get(&key)
    }

    fn get_mut(&mut self, key: u32) -> Option<&mut Level> {
        self.levels.get_mut(&key)
    }

    fn get_or_insert(&mut self, key: u32) -> &mut Level {
        self.levels.entry(key).or_insert(Level::EMPTY)
    }

    fn remove(&mut self, key: u32) {
        self.levels.remove(&key);
    }

    fn first(&self) -> Option<u32> {
        self.levels.keys().next().copied()
    }

    fn next_after(&self, key: u32) -> Option<u32> {
        self.levels
            .range(key.checked_add(1)?..)
            .next()
            .map(|(k, _)| *k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The array ladder answers every query exactly as the BTreeMap ladder does.
        #[test]
        fn array_ladder_matches_btree(ops in proptest::collection::vec((0u8..3, 0u32..5000), 1..400)) {
            let mut fast = ArrayLadder::with_max_key(4999);
            let mut slow = BTreeLadder::with_max_key(4999);
            for (op, key) in ops {
                match op {
                    0 => {
                        fast.get_or_insert(key).total_lots += 1;
                        slow.get_or_insert(key).total_lots += 1;
                    }
                    1 => {
                        if slow.get(key).is_some() {
                            fast.remove(key);
                            slow.remove(key);
                        }
                    }
                    _ => {
                        prop_assert_eq!(fast.next_after(key), slow.next_after(key));
                    }
                }
                prop_assert_eq!(fast.first(), slow.first());
                prop_assert_eq!(fast.get(key).copied(), slow.get(key).copied());
            }
        }
    }

    #[test]
    fn next_after_crosses_many_empty_pages() {
        let mut ladder = ArrayLadder::with_max_key((1 << 24) - 1);
        ladder.get_or_insert(3);
        ladder.get_or_insert((1 << 24) - 1);
        assert_eq!(ladder.first(), Some(3));
        assert_eq!(ladder.next_after(3), Some((1 << 24) - 1));
        assert_eq!(ladder.next_after((1 << 24) - 1), None);
        ladder.remove(3);
        assert_eq!(ladder.first(), Some((1 << 24) - 1));
    }
}
