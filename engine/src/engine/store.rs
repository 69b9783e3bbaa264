//! The order store's memory: slot-indexed storage grown with the book, and the
//! `(account, oid)` index over the slots.
//!
//! Both are sized by `max_resting_orders`, but only the index is allocated whole up front
//! (4 bytes per entry, at most 3/4 full). The slab and the per-slot commitment digests grow
//! with the highest number of slots ever in use, an eighth at a time, so an engine configured
//! with headroom does not hold memory for orders it never had; what is allocated is kept (a
//! steady-state book allocates nothing).

use std::ops::{Index, IndexMut};

/// Fewest slots a store grows by (small engines: a few KiB).
const MIN_GROWTH_SLOTS: usize = 256;

/// Slot-indexed storage of `T` in one contiguous allocation, grown when full by an eighth of
/// its length (at least [`MIN_GROWTH_SLOTS`]), up to a fixed capacity.
///
/// Contiguous, so a slot's address is one multiply and add from the base: every slab access
/// of the data path goes through here, and a directory of chunks (what this was before) cost
/// ~10% of the exchange-core mix's time at a 1K book (docs/perf.md, issue 16 item 1, change
/// 17). Growing may move the stored values (a reallocation; for large stores the allocator
/// remaps the pages rather than copying them on Linux); it happens only when the book
/// passes its largest size so far.
#[derive(Clone)]
pub(super) struct SlotVec<T> {
    slots: Vec<T>,
    capacity: usize,
    /// The value a new slot holds.
    fill: T,
}

impl<T: Copy> SlotVec<T> {
    /// Empty storage for up to `capacity` slots (nothing allocated yet).
    pub(super) fn new(capacity: usize, fill: T) -> Self {
        SlotVec {
            slots: Vec::new(),
            capacity,
            fill,
        }
    }

    /// Slots in use (each index below is valid).
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The slots in use, in order.
    pub(super) fn as_slice(&self) -> &[T] {
        &self.slots
    }

    /// Slots allocated (at least [`SlotVec::len`], at most the capacity).
    #[cfg(test)]
    fn allocated(&self) -> usize {
        self.slots.capacity()
    }

    /// Adds a slot holding the fill value and returns its index.
    ///
    /// # Panics
    /// Past the capacity given to [`SlotVec::new`].
    pub(super) fn push(&mut self) -> u32 {
        let len = self.slots.len();
        assert!(len < self.capacity, "slot store full");
        if len == self.slots.capacity() {
            self.grow();
        }
        self.slots.push(self.fill);
        len as u32
    }

    /// Grows up to `len` slots (no-op if already there).
    pub(super) fn grow_to(&mut self, len: usize) {
        while self.slots.len() < len {
            self.push();
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let len = self.slots.len();
        let more = (len / 8).max(MIN_GROWTH_SLOTS).min(self.capacity - len);
        self.slots.reserve_exact(more);
    }
}

impl<T> Index<usize> for SlotVec<T> {
    type Output = T;

    #[inline]
    fn index(&self, slot: usize) -> &T {
        &self.slots[slot]
    }
}

impl<T> IndexMut<usize> for SlotVec<T> {
    #[inline]
    fn index_mut(&mut self, slot: usize) -> &mut T {
        &mut self.slots[slot]
    }
}

/// Hints the CPU to bring the cache line holding `value` into its caches (a prefetch: no
/// effect on any value, only on when memory is read). A no-op off x86-64.
#[inline(always)]
pub(super) fn prefetch<T>(value: &T) {
    prefetch_address((value as *const T).cast());
}

/// [`prefetch`] for every cache line `value` spans (a 64-byte `Command`: one line, or two
/// when it straddles a line boundary).
#[inline(always)]
pub(super) fn prefetch_all<T>(value: &T) {
    let start = (value as *const T).cast::<u8>();
    let size = std::mem::size_of::<T>();
    // Offsets inside `value`, then its last byte (whose line the steps of 64 can miss);
    // `wrapping_add` computes an address without any claim that it is dereferenceable.
    let mut offset = 0;
    while offset < size {
        prefetch_address(start.wrapping_add(offset));
        offset += 64;
    }
    prefetch_address(start.wrapping_add(size.saturating_sub(1)));
}

/// The prefetch instruction itself, for any address.
#[inline(always)]
fn prefetch_address(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // An intrinsic that is unsafe only for its target feature: see SAFETY.
    // SAFETY: `_mm_prefetch` needs SSE, which every x86-64 CPU has (it is in the target's
    // baseline features); a prefetch never faults and reads nothing architecturally, whatever
    // the address (the callers pass addresses inside live references anyway).
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// The `(account, oid)` -> slot index of resting orders.
///
/// Keys are hashed by the account's id, not its dense index: a command names the id, so its
/// probe starts without waiting on the account index's lookup (both loads are issued at
/// once; a lookup compares the dense index only when it checks the order it found).
///
/// Open addressing with linear probing over `u32` entries: the low `slot_bits` hold the slot
/// plus one (0 = empty), the bits above them a few bits of the key's hash, so most
/// non-matching entries are skipped without reading their order. The key itself is not
/// stored: it is the slot's order (lookups take `is_key`, removals `key_of`). Deletion
/// shifts the entries after the hole back (no tombstones, so probes never lengthen over
/// time). The table is never iterated, so no result depends on where entries sit.
pub(super) struct OidIndex {
    table: Box<[u32]>,
    /// 64 - log2(table length): the home position is the hash's top bits.
    home_shift: u32,
    /// Table length minus one.
    mask: usize,
    /// Bits of an entry holding slot + 1.
    slot_bits: u32,
    slot_mask: u32,
    len: usize,
}

/// The index's hash of a key: multiplicative mixing (deterministic, no seed).
#[inline]
fn key_hash(account: u64, oid: u64) -> u64 {
    let mixed =
        oid.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ account.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    (mixed ^ (mixed >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// Entries up to which a table is sized for at most 1/4 load (32 KiB): a small book's index
/// then costs a few KiB more, and a probe or a removal's back-shift rarely meets a second
/// entry (a data-dependent branch; at 1/2 load, a 1K book's probes and removals were
/// mispredicted ~0.7 times per command: docs/perf.md, issue 16 item 1, change 12).
const SPARSE_ENTRIES: usize = 8192;

impl OidIndex {
    /// An empty index for up to `capacity` orders (table: the next power of two at or above
    /// 4/3 of it, so at most 3/4 full; up to [`SPARSE_ENTRIES`], at or above 4 times it).
    pub(super) fn with_capacity(capacity: u32) -> Self {
        let dense = capacity as usize + capacity as usize / 3;
        let sparse = (capacity as usize * 4).min(SPARSE_ENTRIES);
        let wanted = dense.max(sparse).max(16);
        OidIndex::with_table(wanted.next_power_of_two(), capacity)
    }

    /// An empty index for up to `capacity` orders over a table of `length` entries (a power
    /// of two above `capacity`).
    fn with_table(length: usize, capacity: u32) -> Self {
        debug_assert!(length.is_power_of_two() && length > capacity as usize);
        let slot_bits = 32 - capacity.leading_zeros();
        OidIndex {
            table: vec![0u32; length].into_boxed_slice(),
            home_shift: 64 - length.trailing_zeros(),
            mask: length - 1,
            slot_bits,
            slot_mask: ((1u64 << slot_bits) - 1) as u32,
            len: 0,
        }
    }

    /// Orders indexed.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        (hash >> self.home_shift) as usize
    }

    /// The hash bits an entry for `hash` carries above its slot.
    #[inline]
    fn tag(&self, hash: u64) -> u32 {
        ((hash & 0xFFFF_FFFF) << self.slot_bits) as u32 & !self.slot_mask
    }

    /// The probe of every lookup and insertion: walks from `hash`'s home to the first entry
    /// carrying its hash bits whose slot `accept` takes (`Ok(slot)`), or to the empty entry
    /// that ends the probe (`Err(position)`, where an insertion goes).
    #[inline(always)]
    fn probe(&self, hash: u64, accept: impl Fn(u32) -> bool) -> Result<u32, usize> {
        let tag = self.tag(hash);
        let mut at = self.home(hash);
        loop {
            let entry = self.table[at];
            if entry == 0 {
                return Err(at);
            }
            let slot = (entry & self.slot_mask).wrapping_sub(1);
            if entry & !self.slot_mask == tag && accept(slot) {
                return Ok(slot);
            }
            at = (at + 1) & self.mask;
        }
    }

    /// The slot of `(account, oid)`, if indexed. `is_key(slot)`: whether the order at `slot`
    /// is this key's.
    // Always inlined: on the lookup path of nearly every order command, and inlined the
    // closure's slab read is shared with the caller's (callgrind: ~25 instructions per call).
    #[inline(always)]
    pub(super) fn get(&self, account: u64, oid: u64, is_key: impl Fn(u32) -> bool) -> Option<u32> {
        self.probe(key_hash(account, oid), is_key).ok()
    }

    /// The entry where a probe for `(account, oid)` starts (for [`prefetch`]).
    #[inline]
    pub(super) fn home_entry(&self, account: u64, oid: u64) -> &u32 {
        &self.table[self.home(key_hash(account, oid))]
    }

    /// The first slot on `(account, oid)`'s probe whose entry carries its hash bits: its slot
    /// if indexed, almost always, but unverified (the key is not compared, so no order is
    /// read): for [`prefetch`] only.
    #[inline]
    pub(super) fn probable_slot(&self, account: u64, oid: u64) -> Option<u32> {
        self.probe(key_hash(account, oid), |_| true).ok()
    }

    /// Indexes `(account, oid)` at `slot`; the key must not be indexed already.
    pub(super) fn insert(&mut self, account: u64, oid: u64, slot: u32) {
        let hash = key_hash(account, oid);
        let Err(at) = self.probe(hash, |_| false) else {
            unreachable!("a probe that accepts nothing ends at an empty entry")
        };
        self.fill(at, hash, slot);
    }

    /// Indexes `(account, oid)` at `slot` unless it is indexed already (then returns false
    /// and changes nothing): one probe where a lookup and an insert take two. `is_key` as in
    /// [`OidIndex::get`].
    pub(super) fn insert_new(
        &mut self,
        account: u64,
        oid: u64,
        slot: u32,
        is_key: impl Fn(u32) -> bool,
    ) -> bool {
        let hash = key_hash(account, oid);
        match self.probe(hash, is_key) {
            Ok(_) => false,
            Err(at) => {
                self.fill(at, hash, slot);
                true
            }
        }
    }

    /// Writes the entry of `slot`, whose key hashes to `hash`, at empty position `at`.
    fn fill(&mut self, at: usize, hash: u64, slot: u32) {
        assert!(self.len < self.mask, "oid index over capacity");
        self.table[at] = self.tag(hash) | (slot + 1);
        self.len += 1;
    }

    /// Removes `(account, oid)`, indexed at `slot`. `key_of(slot)` must still answer the key
    /// (account id, oid) of every indexed slot (the entries after the hole are re-homed by
    /// their keys).
    pub(super) fn remove(
        &mut self,
        account: u64,
        oid: u64,
        slot: u32,
        key_of: impl Fn(u32) -> (u64, u64),
    ) {
        let mut hole = self.home(key_hash(account, oid));
        while self.table[hole] & self.slot_mask != slot + 1 {
            assert!(
                self.table[hole] != 0,
                "removing an order the index does not hold"
            );
            hole = (hole + 1) & self.mask;
        }
        let mut at = hole;
        loop {
            at = (at + 1) & self.mask;
            let entry = self.table[at];
            if entry == 0 {
                break;
            }
            let (account, oid) = key_of((entry & self.slot_mask) - 1);
            let home = self.home(key_hash(account, oid));
            // The entry may fill the hole if its home is not after the hole (cyclically).
            if at.wrapping_sub(home) & self.mask >= at.wrapping_sub(hole) & self.mask {
                self.table[hole] = entry;
                hole = at;
            }
        }
        self.table[hole] = 0;
        self.len -= 1;
    }
}

/// An id (asset, market or account) -> dense index map: open addressing with linear probing
/// over 16-byte entries holding the key and its index, so a lookup is one multiply, usually
/// one load and one compare (hashbrown's group probing cost ~45 instructions per lookup on
/// the command path, two per cancel or modify; docs/perf.md). Entries are never removed;
/// the table doubles at 3/4 full (on the creation of an asset, market or account, never while
/// matching). Never iterated, so no result depends on where entries sit.
///
/// Ids below [`DIRECT_IDS`] skip the hashing: their indices sit in `direct`, one `u32` per
/// id, so 1,000 accounts numbered from 1 take a 4 KiB array instead of a 32 KiB table
/// (docs/perf.md, change 16: the lookup was ~0.85 L1 misses per command at 1K).
pub(super) struct IdIndex {
    /// The index of every id below `direct.len()` (`VACANT` where absent), by id; grown on
    /// the insertion of a larger id below [`DIRECT_IDS`].
    direct: Vec<u32>,
    /// Ids from [`DIRECT_IDS`] up.
    table: Box<[IdEntry]>,
    /// 64 - log2(table length): the home position is the hash's top bits.
    home_shift: u32,
    /// Table length minus one.
    mask: usize,
    /// Entries in `table` (its load).
    len: usize,
}

/// Ids below this are kept in an [`IdIndex`]'s direct array (at most 256 KiB per index).
const DIRECT_IDS: u64 = 1 << 16;

/// One entry of an [`IdIndex`]; `value == VACANT` marks an empty one.
#[derive(Clone, Copy)]
struct IdEntry {
    key: u64,
    value: u32,
}

impl IdEntry {
    const VACANT: u32 = u32::MAX;
    const EMPTY: IdEntry = IdEntry {
        key: 0,
        value: IdEntry::VACANT,
    };
}

impl Default for IdIndex {
    fn default() -> Self {
        IdIndex::with_table(16)
    }
}

impl IdIndex {
    fn with_table(length: usize) -> Self {
        debug_assert!(length.is_power_of_two());
        IdIndex {
            direct: Vec::new(),
            table: vec![IdEntry::EMPTY; length].into_boxed_slice(),
            home_shift: 64 - length.trailing_zeros(),
            mask: length - 1,
            len: 0,
        }
    }

    /// Where `key`'s probe starts (Fibonacci hashing: ids are often consecutive).
    #[inline]
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.home_shift) as usize
    }

    /// Where `key`'s probe ends: `Ok(position)` of its entry, or `Err(position)` of the
    /// empty entry where it would go.
    #[inline]
    fn probe(&self, key: u64) -> Result<usize, usize> {
        let mut at = self.home(key);
        loop {
            let entry = &self.table[at];
            if entry.value == IdEntry::VACANT {
                return Err(at);
            }
            if entry.key == key {
                return Ok(at);
            }
            at = (at + 1) & self.mask;
        }
    }

    /// The dense index of `key`, if present.
    #[inline]
    pub(super) fn get(&self, key: &impl IdKey) -> Option<&u32> {
        let id = key.id();
        if id < self.direct.len() as u64 {
            let value = &self.direct[id as usize];
            return (*value != IdEntry::VACANT).then_some(value);
        }
        let at = self.probe(id).ok()?;
        Some(&self.table[at].value)
    }

    /// Whether `key` is present.
    pub(super) fn contains_key(&self, key: &impl IdKey) -> bool {
        self.get(key).is_some()
    }

    /// Maps `key` to `value` (< `u32::MAX`); returns the value it replaced, if any.
    pub(super) fn insert(&mut self, key: impl IdKey, value: u32) -> Option<u32> {
        assert!(value != IdEntry::VACANT, "dense index out of range");
        let key = key.id();
        if key < DIRECT_IDS {
            return self.insert_direct(key as usize, value);
        }
        if (self.len + 1) * 4 > self.table.len() * 3 {
            self.grow();
        }
        match self.probe(key) {
            Ok(at) => Some(std::mem::replace(&mut self.table[at].value, value)),
            Err(at) => {
                self.table[at] = IdEntry { key, value };
                self.len += 1;
                None
            }
        }
    }

    /// [`IdIndex::insert`] for an id below [`DIRECT_IDS`]: `direct` grows to the next power
    /// of two past it.
    fn insert_direct(&mut self, id: usize, value: u32) -> Option<u32> {
        if id >= self.direct.len() {
            let length = (id + 1).next_power_of_two().max(64);
            self.direct.resize(length, IdEntry::VACANT);
        }
        let old = std::mem::replace(&mut self.direct[id], value);
        (old != IdEntry::VACANT).then_some(old)
    }

    /// Removes every entry (keeps the tables).
    pub(super) fn clear(&mut self) {
        self.direct.fill(IdEntry::VACANT);
        self.table.fill(IdEntry::EMPTY);
        self.len = 0;
    }

    /// Doubles the hashed table (the entries of `direct` stay where they are).
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let length = self.table.len() * 2;
        let old = std::mem::replace(&mut self.table, vec![IdEntry::EMPTY; length].into());
        self.home_shift = 64 - length.trailing_zeros();
        self.mask = length - 1;
        for entry in old.iter().filter(|e| e.value != IdEntry::VACANT) {
            let at = self.probe(entry.key).expect_err("keys are unique");
            self.table[at] = *entry;
        }
    }
}

/// A key of an [`IdIndex`]: an id widened to 64 bits.
pub(super) trait IdKey: Copy {
    /// The id as a u64 (injective).
    fn id(&self) -> u64;
}

impl IdKey for u32 {
    #[inline]
    fn id(&self) -> u64 {
        u64::from(*self)
    }
}

impl IdKey for u64 {
    #[inline]
    fn id(&self) -> u64 {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Keys stored per slot, as the engine's order nodes store them.
    struct Slots(Vec<(u64, u64)>);

    impl Slots {
        fn key(&self) -> impl Fn(u32) -> (u64, u64) + '_ {
            |slot| self.0[slot as usize]
        }

        fn is(&self, key: (u64, u64)) -> impl Fn(u32) -> bool + '_ {
            move |slot| self.0[slot as usize] == key
        }
    }

    #[test]
    fn slot_vec_grows_by_an_eighth_and_keeps_values() {
        let mut store = SlotVec::new(5000, 7u64);
        let mut allocations = Vec::new();
        for expected in 0..5000u32 {
            assert_eq!(store.push(), expected);
            store[expected as usize] = u64::from(expected) * 3;
            if allocations.last() != Some(&store.allocated()) {
                allocations.push(store.allocated());
            }
        }
        assert_eq!(store.len(), 5000);
        assert!((0..5000).all(|slot| store[slot] == slot as u64 * 3));
        // 256 at a time up to 2,048 slots, then an eighth, never past the capacity.
        assert_eq!(
            &allocations[..9],
            &[256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304]
        );
        assert_eq!(allocations[9..], [2592, 2916, 3280, 3690, 4151, 4669, 5000]);
        let mut fresh = SlotVec::new(600, 5u8);
        fresh.grow_to(300);
        assert_eq!((fresh.len(), fresh.allocated(), fresh[299]), (300, 512, 5));
    }

    #[test]
    #[should_panic(expected = "slot store full")]
    fn slot_vec_refuses_past_capacity() {
        let mut store = SlotVec::new(3, 0u8);
        for _ in 0..4 {
            store.push();
        }
    }

    /// A slot allocated but past the length is refused, not read.
    #[test]
    #[should_panic(expected = "out of bounds")]
    fn slot_vec_refuses_a_slot_past_its_length() {
        let mut store = SlotVec::new(1000, 0u8);
        store.push();
        let _ = store[1];
    }

    /// Inserts (both kinds), lookups and removals against a `BTreeMap`, on a small table full enough that
    /// clusters wrap around its end and deletions shift entries back.
    #[test]
    fn oid_index_agrees_with_a_map() {
        let capacity = 384u32; // a table of 512: up to 3/4 full (dense, as large books' are)
        let mut index = OidIndex::with_table(512, capacity);
        let mut slots = Slots(vec![(u64::MAX, 0); capacity as usize]);
        let mut model = BTreeMap::new();
        let mut free: Vec<u32> = (0..capacity).rev().collect();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for step in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = (state % 5, (state >> 8) % 300);
            match model.get(&key).copied() {
                Some(slot) if step % 3 != 0 => {
                    assert_eq!(index.get(key.0, key.1, slots.is(key)), Some(slot));
                    index.remove(key.0, key.1, slot, slots.key());
                    model.remove(&key);
                    free.push(slot);
                }
                Some(slot) => {
                    assert_eq!(index.get(key.0, key.1, slots.is(key)), Some(slot));
                    let spare = free.last().copied().unwrap_or(0);
                    assert!(!index.insert_new(key.0, key.1, spare, slots.is(key)));
                }
                None => {
                    assert_eq!(index.get(key.0, key.1, slots.is(key)), None);
                    if let Some(slot) = free.pop() {
                        slots.0[slot as usize] = key;
                        if step % 2 == 0 {
                            index.insert(key.0, key.1, slot);
                        } else {
                            assert!(index.insert_new(key.0, key.1, slot, slots.is(key)));
                        }
                        model.insert(key, slot);
                    }
                }
            }
            assert_eq!(index.len(), model.len());
        }
        for (&(account, oid), &slot) in &model {
            assert_eq!(
                index.get(account, oid, slots.is((account, oid))),
                Some(slot)
            );
        }
        assert!(model.len() > 300, "the table was exercised near full");
    }
    /// Small indexes are at most 1/4 full; large ones keep 4 bytes per entry at up to 3/4
    /// load (the bytes per resting order at 1M, docs/perf.md).
    #[test]
    fn oid_index_is_sparse_only_when_small() {
        let length = |capacity| OidIndex::with_capacity(capacity).table.len();
        assert_eq!(length(1_500), 8_192);
        assert_eq!(length(3), 16);
        assert_eq!(length(6_000), 8_192);
        assert_eq!(length(1_500_000), 1 << 21);
    }

    /// Inserts (new and replacing) and lookups against a `BTreeMap`, through several growths,
    /// with keys that collide on their home position and keys at the extremes.
    #[test]
    fn id_index_agrees_with_a_map() {
        let mut index = IdIndex::default();
        let mut model = BTreeMap::new();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for step in 0..5_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = match step % 4 {
                0 => u64::from(step),
                1 => state,
                2 => (state % 64) << 58, // same low bits: collide in small tables
                _ => u64::MAX - u64::from(step % 7),
            };
            let value = step % 1_000;
            assert_eq!(index.insert(key, value), model.insert(key, value));
            let probe = state.rotate_left(17);
            assert_eq!(index.get(&probe).copied(), model.get(&probe).copied());
        }
        for (key, value) in &model {
            assert_eq!(index.get(key), Some(value));
        }
        let direct = index
            .direct
            .iter()
            .filter(|&&v| v != IdEntry::VACANT)
            .count();
        assert_eq!(direct + index.len, model.len());
        assert!(direct > 0 && index.len > 0, "both parts were exercised");
        assert!(index.contains_key(&u64::MAX) && !index.contains_key(&12_345_678u64));
        index.clear();
        assert_eq!(index.get(&0u64), None);
        assert_eq!(index.insert(7u32, 3), None);
        assert_eq!(index.get(&7u32), Some(&3));
    }
}
