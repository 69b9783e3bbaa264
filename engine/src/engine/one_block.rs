//! BLAKE3 of many short inputs at once, for the state commitment.
//!
//! Every record the commitment hashes is usually at most one BLAKE3 block (64 bytes): an
//! order record is 50 bytes, an account with at most four assets and no perp position at most
//! 57. For such an input, `blake3::hash` is a single compression of one block with the
//! chunk-start, chunk-end and root flags. Hashing records one at a time costs one call, a hasher set-up and a
//! compression whose rounds depend on each other; here a [`Group`] of [`WIDE`] independent
//! records is compressed together, word `i` of every record side by side in one vector
//! (AVX-512: 16 records; AVX2 and the portable path: two halves of [`LANES`]). A group is
//! reused: the commit writes 16 records into it, hashes and folds them while they are in L1.
//! On AVX-512 the commit's order records skip the group: `order_gather` builds their message
//! words from the slab and hands them to [`avx512::hash_words`].
//!
//! The output is exactly `blake3::hash(record)`, ZERO for an empty place (a test holds the
//! two to each other), so the state root's definition does not depend on this module.

use super::commitment::Lanes;

/// Records compressed together by the AVX2 and portable paths.
pub(super) const LANES: usize = 8;

/// Largest record this module hashes: one BLAKE3 block.
pub(super) const BLOCK_LEN: usize = 64;

/// The BLAKE3 initial vector (also the key of the unkeyed hash).
const IV: [u32; 8] = [
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
];

/// Flags of the only block of a one-block input: CHUNK_START | CHUNK_END | ROOT.
const ONE_BLOCK_FLAGS: u32 = 1 | 2 | 8;

/// Rounds of the BLAKE3 compression.
const ROUNDS: usize = 7;

/// Reorders the message words for the next round: the BLAKE3 message permutation (word `i`
/// of the next round is word `[2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8][i]` of
/// this one), applied to the words themselves rather than read from a table of indices per
/// round, so every place is a constant and the words are only renamed.
#[inline(always)]
fn permute<T: Copy>(m: &mut [T; 16]) {
    let [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15] = *m;
    *m = [
        m2, m6, m3, m10, m7, m0, m4, m13, m1, m11, m12, m5, m9, m14, m15, m8,
    ];
}

/// One record of at most [`BLOCK_LEN`] bytes, zero-padded, on its own cache line (the
/// AVX-512 path reads word `w` of every block of a [`Group`] with one gather).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(super) struct Block {
    bytes: [u8; BLOCK_LEN],
}

impl Block {
    /// An empty record.
    pub(super) const EMPTY: Block = Block {
        bytes: [0; BLOCK_LEN],
    };
}

/// Up to [`WIDE`] records hashed together: their blocks and lengths. Reused from group to
/// group, so the records are written, hashed and folded while in L1.
pub(super) struct Group {
    blocks: [Block; WIDE],
    lens: [u32; WIDE],
    count: usize,
}

impl Group {
    /// An empty group.
    pub(super) fn new() -> Group {
        Group {
            blocks: [Block::EMPTY; WIDE],
            lens: [0; WIDE],
            count: 0,
        }
    }

    /// Empties the group.
    #[inline(always)]
    pub(super) fn clear(&mut self) {
        self.count = 0;
    }

    /// Records (and empty places) in the group.
    pub(super) fn len(&self) -> usize {
        self.count
    }

    /// Appends a record: `fill` writes its fields through the cursor (the write position
    /// stays in a register). Returns its length.
    ///
    /// # Panics
    /// If the group is full or the fields do not fit one block (callers check the size).
    #[inline(always)]
    pub(super) fn push(&mut self, fill: impl FnOnce(&mut Cursor<'_>)) -> usize {
        let block = &mut self.blocks[self.count];
        block.bytes = [0; BLOCK_LEN];
        let mut cursor = Cursor {
            bytes: &mut block.bytes,
            at: 0,
        };
        fill(&mut cursor);
        let len = cursor.at;
        self.lens[self.count] = len as u32;
        self.count += 1;
        len
    }

    /// [`Group::push`] for a record of exactly `LEN` bytes: only the 16-byte pieces of the
    /// block that the record does not fill whole are cleared first, not all 64 bytes (fewer
    /// stores for the commit's most frequent record, an order's).
    ///
    /// # Panics
    /// If the group is full or `fill` does not write exactly `LEN` bytes.
    #[inline(always)]
    pub(super) fn push_exact<const LEN: usize>(&mut self, fill: impl FnOnce(&mut Cursor<'_>)) {
        let block = &mut self.blocks[self.count];
        block.bytes[LEN / 16 * 16..].fill(0);
        let mut cursor = Cursor {
            bytes: &mut block.bytes,
            at: 0,
        };
        fill(&mut cursor);
        assert_eq!(cursor.at, LEN, "record of another length");
        self.lens[self.count] = LEN as u32;
        self.count += 1;
    }

    /// Appends an empty place (its digest is ZERO, see [`Group::hash`]).
    #[inline(always)]
    pub(super) fn push_empty(&mut self) {
        self.push(|_| {});
    }

    /// Whether place `i` is empty.
    pub(super) fn is_empty_at(&self, i: usize) -> bool {
        self.lens[i] == 0
    }

    /// `blake3::hash` of each record, as [`Lanes`], in order; ZERO for an empty place (no
    /// record: a record is never empty). Entries past [`Group::len`] are unspecified.
    pub(super) fn hash(&self) -> [Lanes; WIDE] {
        let mut out = [Lanes::ZERO; WIDE];
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // The only way to call a `target_feature` function: see SAFETY.
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: `avx512::hash_group` only requires the CPU to support AVX-512F,
            // checked just above.
            unsafe { avx512::hash_group(self, &mut out) };
            return out;
        }
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // The only way to call a `target_feature` function: see SAFETY.
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: `hash_group_avx2` only requires the CPU to support AVX2, checked just
            // above.
            unsafe { hash_group_avx2(self, &mut out) };
            return out;
        }
        hash_group_portable(self, &mut out);
        out
    }

    /// The records' bytes.
    #[cfg(test)]
    fn record(&self, i: usize) -> &[u8] {
        &self.blocks[i].bytes[..self.lens[i] as usize]
    }
}

/// Appends fields to a [`Block`] (see [`Block::fill`]).
pub(super) struct Cursor<'a> {
    bytes: &'a mut [u8; BLOCK_LEN],
    at: usize,
}

impl Cursor<'_> {
    /// Appends `field`. Panics past the end of the block.
    #[inline(always)]
    pub(super) fn put(&mut self, field: &[u8]) {
        self.bytes[self.at..self.at + field.len()].copy_from_slice(field);
        self.at += field.len();
    }
}

/// A vector of one 32-bit word per record.
type Word = [u32; LANES];

#[inline(always)]
fn add(a: &mut Word, b: &Word) {
    for (a, b) in a.iter_mut().zip(b) {
        *a = a.wrapping_add(*b);
    }
}

#[inline(always)]
fn xor_rotate(d: &mut Word, a: &Word, bits: u32) {
    for (d, a) in d.iter_mut().zip(a) {
        *d = (*d ^ *a).rotate_right(bits);
    }
}

/// The BLAKE3 quarter-round on state words `a, b, c, d` with message words `x`, `y`.
#[inline(always)]
fn g(v: &mut [Word; 16], [a, b, c, d]: [usize; 4], x: &Word, y: &Word) {
    let (va, vb) = (v[a], v[b]);
    let mut sa = va;
    add(&mut sa, &vb);
    add(&mut sa, x);
    let mut sd = v[d];
    xor_rotate(&mut sd, &sa, 16);
    let mut sc = v[c];
    add(&mut sc, &sd);
    let mut sb = vb;
    xor_rotate(&mut sb, &sc, 12);
    add(&mut sa, &sb);
    add(&mut sa, y);
    xor_rotate(&mut sd, &sa, 8);
    add(&mut sc, &sd);
    xor_rotate(&mut sb, &sc, 7);
    (v[a], v[b], v[c], v[d]) = (sa, sb, sc, sd);
}

/// One round: columns, then diagonals.
#[inline(always)]
fn round(v: &mut [Word; 16], m: &[Word; 16]) {
    g(v, [0, 4, 8, 12], &m[0], &m[1]);
    g(v, [1, 5, 9, 13], &m[2], &m[3]);
    g(v, [2, 6, 10, 14], &m[4], &m[5]);
    g(v, [3, 7, 11, 15], &m[6], &m[7]);
    g(v, [0, 5, 10, 15], &m[8], &m[9]);
    g(v, [1, 6, 11, 12], &m[10], &m[11]);
    g(v, [2, 7, 8, 13], &m[12], &m[13]);
    g(v, [3, 4, 9, 14], &m[14], &m[15]);
}

/// The message words of `N` records, transposed (word-major).
#[inline(always)]
fn transpose<const N: usize>(blocks: &[Block; N]) -> [[u32; N]; 16] {
    let mut m = [[0u32; N]; 16];
    for (lane, block) in blocks.iter().enumerate() {
        for (word, bytes) in m.iter_mut().zip(block.bytes.chunks_exact(4)) {
            word[lane] = u32::from_le_bytes(bytes.try_into().expect("4 bytes"));
        }
    }
    m
}

/// BLAKE3 of [`LANES`] one-block records of lengths `lens`, as [`Lanes`] in order.
#[inline(always)]
fn hash_eight(blocks: &[Block; LANES], lens: [u32; LANES], out: &mut [Lanes; LANES]) {
    let mut m = transpose(blocks);
    let mut v = [[0u32; LANES]; 16];
    for (i, iv) in IV.iter().enumerate() {
        v[i] = [*iv; LANES];
    }
    for i in 0..4 {
        v[8 + i] = [IV[i]; LANES];
    }
    // v[12], v[13]: the chunk counter, 0.
    v[14] = lens;
    v[15] = [ONE_BLOCK_FLAGS; LANES];
    for at in 0..ROUNDS {
        round(&mut v, &m);
        if at + 1 < ROUNDS {
            permute(&mut m);
        }
    }
    let mut h = [[0u32; LANES]; 8];
    for (i, word) in h.iter_mut().enumerate() {
        for (lane, out) in word.iter_mut().enumerate() {
            *out = v[i][lane] ^ v[i + 8][lane];
        }
    }
    digests(&h, &lens, out);
}

/// The digests of a group: output word `i` of record `lane` is `h[i][lane]`; the digest's
/// bytes are the 8 words little-endian.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `lane` picks one column of all eight word arrays.
fn digests<const N: usize>(h: &[[u32; N]; 8], lens: &[u32; N], out: &mut [Lanes; N]) {
    for lane in 0..N {
        let lane64 = |k: usize| u64::from(h[2 * k][lane]) | (u64::from(h[2 * k + 1][lane]) << 32);
        out[lane] = if lens[lane] == 0 {
            Lanes::ZERO
        } else {
            Lanes::from_words([lane64(0), lane64(1), lane64(2), lane64(3)])
        };
    }
}

/// The two halves of a group, [`LANES`] records each.
#[inline(always)]
fn halves(group: &Group) -> [(&[Block; LANES], [u32; LANES]); 2] {
    let (low, high) = group.blocks.split_at(LANES);
    let (low_lens, high_lens) = group.lens.split_at(LANES);
    let lens = |lens: &[u32]| -> [u32; LANES] { lens.try_into().expect("8 lengths") };
    [
        (low.try_into().expect("8 blocks"), lens(low_lens)),
        (high.try_into().expect("8 blocks"), lens(high_lens)),
    ]
}

/// Splits a group's digests into its two halves.
#[inline(always)]
fn out_halves(out: &mut [Lanes; WIDE]) -> (&mut [Lanes; LANES], &mut [Lanes; LANES]) {
    let (low, high) = out.split_at_mut(LANES);
    (
        low.try_into().expect("8 digests"),
        high.try_into().expect("8 digests"),
    )
}

/// [`Group::hash`] for any CPU (the compiler's baseline vector instructions).
fn hash_group_portable(group: &Group, out: &mut [Lanes; WIDE]) {
    let [(low, low_lens), (high, high_lens)] = halves(group);
    let (low_out, high_out) = out_halves(out);
    hash_eight(low, low_lens, low_out);
    if group.count > LANES {
        hash_eight(high, high_lens, high_out);
    }
}

/// Records per group (the AVX-512 width; the other paths hash a group as two halves).
pub(super) const WIDE: usize = 16;

/// [`Group::hash`] with AVX2: one 256-bit register holds one word of [`LANES`] records.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hash_group_avx2(group: &Group, out: &mut [Lanes; WIDE]) {
    let [(low, low_lens), (high, high_lens)] = halves(group);
    let (low_out, high_out) = out_halves(out);
    avx2::hash_eight(low, low_lens, low_out);
    if group.count > LANES {
        avx2::hash_eight(high, high_lens, high_out);
    }
}

/// The same rounds as [`hash_group`], written with AVX2 intrinsics (the compiler does not
/// vectorize the portable version well: it keeps the rotations scalar).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)] // Two transmutes of plain 32-byte values: see SAFETY.
mod avx2 {
    use super::{digests, permute, transpose, Block, Lanes, IV, LANES, ONE_BLOCK_FLAGS, ROUNDS};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    fn splat(word: u32) -> __m256i {
        _mm256_set1_epi32(word as i32)
    }

    #[target_feature(enable = "avx2")]
    fn load(word: [u32; LANES]) -> __m256i {
        // SAFETY: [u32; 8] and __m256i are both 32 bytes of plain data, any bits valid.
        unsafe { std::mem::transmute::<[u32; LANES], __m256i>(word) }
    }

    #[target_feature(enable = "avx2")]
    fn store(vector: __m256i) -> [u32; LANES] {
        // SAFETY: as in `load`, the other way.
        unsafe { std::mem::transmute::<__m256i, [u32; LANES]>(vector) }
    }

    #[target_feature(enable = "avx2")]
    fn rotr<const R: i32, const L: i32>(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32::<R>(x), _mm256_slli_epi32::<L>(x))
    }

    #[target_feature(enable = "avx2")]
    fn g(v: &mut [__m256i; 16], [a, b, c, d]: [usize; 4], x: __m256i, y: __m256i) {
        let (mut sa, mut sb, mut sc, mut sd) = (v[a], v[b], v[c], v[d]);
        sa = _mm256_add_epi32(_mm256_add_epi32(sa, sb), x);
        sd = rotr::<16, 16>(_mm256_xor_si256(sd, sa));
        sc = _mm256_add_epi32(sc, sd);
        sb = rotr::<12, 20>(_mm256_xor_si256(sb, sc));
        sa = _mm256_add_epi32(_mm256_add_epi32(sa, sb), y);
        sd = rotr::<8, 24>(_mm256_xor_si256(sd, sa));
        sc = _mm256_add_epi32(sc, sd);
        sb = rotr::<7, 25>(_mm256_xor_si256(sb, sc));
        (v[a], v[b], v[c], v[d]) = (sa, sb, sc, sd);
    }

    #[target_feature(enable = "avx2")]
    fn round(v: &mut [__m256i; 16], m: &[__m256i; 16]) {
        g(v, [0, 4, 8, 12], m[0], m[1]);
        g(v, [1, 5, 9, 13], m[2], m[3]);
        g(v, [2, 6, 10, 14], m[4], m[5]);
        g(v, [3, 7, 11, 15], m[6], m[7]);
        g(v, [0, 5, 10, 15], m[8], m[9]);
        g(v, [1, 6, 11, 12], m[10], m[11]);
        g(v, [2, 7, 8, 13], m[12], m[13]);
        g(v, [3, 4, 9, 14], m[14], m[15]);
    }

    /// BLAKE3 of [`LANES`] one-block records of lengths `lens`, in order.
    #[target_feature(enable = "avx2")]
    pub(super) fn hash_eight(
        blocks: &[Block; LANES],
        lens: [u32; LANES],
        out: &mut [Lanes; LANES],
    ) {
        let words = transpose(blocks);
        let mut m = [_mm256_setzero_si256(); 16];
        for (vector, word) in m.iter_mut().zip(words) {
            *vector = load(word);
        }
        let mut v = [_mm256_setzero_si256(); 16];
        for i in 0..8 {
            v[i] = splat(IV[i]);
        }
        for i in 0..4 {
            v[8 + i] = splat(IV[i]);
        }
        v[14] = load(lens);
        v[15] = splat(ONE_BLOCK_FLAGS);
        for at in 0..ROUNDS {
            round(&mut v, &m);
            if at + 1 < ROUNDS {
                permute(&mut m);
            }
        }
        let mut h = [[0u32; LANES]; 8];
        for (i, word) in h.iter_mut().enumerate() {
            *word = store(_mm256_xor_si256(v[i], v[i + 8]));
        }
        digests(&h, &lens, out);
    }
}

/// The same rounds with AVX-512F: [`WIDE`] records per register and one-instruction rotations.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)] // Two transmutes of plain 64-byte values: see SAFETY.
pub(super) mod avx512 {
    use super::{digests, permute, Group, Lanes, IV, ONE_BLOCK_FLAGS, ROUNDS, WIDE};
    use std::arch::x86_64::*;

    /// The 16 message words of the records of a group, word `w` of record `i` in lane `i`
    /// of `m[w]` (zero in lanes past the last record), read with one gather per word: writing
    /// the words one by one and loading them as a vector stalls on store forwarding.
    #[target_feature(enable = "avx512f")]
    fn message(group: &Group) -> [__m512i; 16] {
        let count = group.len();
        debug_assert!(count <= WIDE);
        let stride = _mm512_set1_epi32(std::mem::size_of::<super::Block>() as i32);
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let offsets = _mm512_mullo_epi32(lanes, stride);
        let mask: __mmask16 = (((1u32 << count) - 1) & 0xFFFF) as u16;
        let base = group.blocks.as_ptr().cast::<u8>();
        let mut m = [_mm512_setzero_si512(); 16];
        for (w, vector) in m.iter_mut().enumerate() {
            // SAFETY: lane `i` reads the 4 bytes at `i * size_of::<Block>() + 4 * w`, inside
            // `group.blocks[i].bytes` (offset 0 of the `repr(C)` Block, 64 bytes, `w < 16`,
            // `i < WIDE`: the array has WIDE blocks); lanes past `count` are masked off.
            *vector = unsafe {
                _mm512_mask_i32gather_epi32::<1>(
                    _mm512_setzero_si512(),
                    mask,
                    offsets,
                    base.add(4 * w).cast(),
                )
            };
        }
        m
    }

    #[target_feature(enable = "avx512f")]
    fn splat(word: u32) -> __m512i {
        _mm512_set1_epi32(word as i32)
    }

    #[target_feature(enable = "avx512f")]
    fn load(word: [u32; WIDE]) -> __m512i {
        // SAFETY: [u32; 16] and __m512i are both 64 bytes of plain data, any bits valid.
        unsafe { std::mem::transmute::<[u32; WIDE], __m512i>(word) }
    }

    #[target_feature(enable = "avx512f")]
    fn store(vector: __m512i) -> [u32; WIDE] {
        // SAFETY: as in `load`, the other way.
        unsafe { std::mem::transmute::<__m512i, [u32; WIDE]>(vector) }
    }

    /// The rounds named by the literals, written out (a loop kept the message words in
    /// memory), each followed by the message permutation (after the last round it only
    /// renames words nothing reads, and compiles to nothing).
    macro_rules! rounds {
        ($v:ident, $m:ident: $($round:literal)*) => {{
            $(
                let _: usize = $round;
                round!($v, $m);
                permute(&mut $m);
            )*
        }};
    }

    /// The low and the high 32 bits of 16 u64 values given as two vectors of 8 (values 0..8
    /// in `first`), as two vectors of 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(in crate::engine) fn u64_halves(first: __m512i, second: __m512i) -> (__m512i, __m512i) {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        (
            _mm512_permutex2var_epi32(first, even, second),
            _mm512_permutex2var_epi32(first, odd, second),
        )
    }

    /// One BLAKE3 G function on columns `a b c d` of the state `v` with message words `x`
    /// and `y`. A macro, like `round!`, so that the rounds are inline wherever the hash is,
    /// whatever the compiler's inlining thresholds: as functions, they became a call per
    /// round (the state spilled and reloaded around each) once the hash was inlined into
    /// `order_gather`.
    macro_rules! g {
        ($v:ident, [$a:literal, $b:literal, $c:literal, $d:literal], $x:expr, $y:expr) => {{
            let (mut sa, mut sb, mut sc, mut sd) = ($v[$a], $v[$b], $v[$c], $v[$d]);
            sa = _mm512_add_epi32(_mm512_add_epi32(sa, sb), $x);
            sd = _mm512_ror_epi32::<16>(_mm512_xor_si512(sd, sa));
            sc = _mm512_add_epi32(sc, sd);
            sb = _mm512_ror_epi32::<12>(_mm512_xor_si512(sb, sc));
            sa = _mm512_add_epi32(_mm512_add_epi32(sa, sb), $y);
            sd = _mm512_ror_epi32::<8>(_mm512_xor_si512(sd, sa));
            sc = _mm512_add_epi32(sc, sd);
            sb = _mm512_ror_epi32::<7>(_mm512_xor_si512(sb, sc));
            ($v[$a], $v[$b], $v[$c], $v[$d]) = (sa, sb, sc, sd);
        }};
    }

    /// One BLAKE3 round of the state `v` with the message words `m`.
    macro_rules! round {
        ($v:ident, $m:ident) => {{
            g!($v, [0, 4, 8, 12], $m[0], $m[1]);
            g!($v, [1, 5, 9, 13], $m[2], $m[3]);
            g!($v, [2, 6, 10, 14], $m[4], $m[5]);
            g!($v, [3, 7, 11, 15], $m[6], $m[7]);
            g!($v, [0, 5, 10, 15], $m[8], $m[9]);
            g!($v, [1, 6, 11, 12], $m[10], $m[11]);
            g!($v, [2, 7, 8, 13], $m[12], $m[13]);
            g!($v, [3, 4, 9, 14], $m[14], $m[15]);
        }};
    }

    /// BLAKE3 of the records of a group, in order.
    #[target_feature(enable = "avx512f")]
    pub(super) fn hash_group(group: &Group, out: &mut [Lanes; WIDE]) {
        hash_words::<16>(message(group), group.lens, out);
    }

    /// BLAKE3 of [`WIDE`] one-block records given as their message words (word `w` of record
    /// `i` in lane `i` of `m[w]`, zero past the record's end) and lengths, in order; ZERO for
    /// a length of 0 (an empty place). Words `USED..` are taken as zero whatever `m` holds
    /// there, so their additions are left out. The seven rounds are written out, so that the
    /// message permutation only renames words.
    #[target_feature(enable = "avx512f")]
    pub(in crate::engine) fn hash_words<const USED: usize>(
        mut m: [__m512i; 16],
        lens: [u32; WIDE],
        out: &mut [Lanes; WIDE],
    ) {
        for word in m.iter_mut().skip(USED) {
            *word = _mm512_setzero_si512();
        }
        let mut v = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            v[i] = splat(IV[i]);
        }
        for i in 0..4 {
            v[8 + i] = splat(IV[i]);
        }
        v[14] = load(lens);
        v[15] = splat(ONE_BLOCK_FLAGS);
        const _: () = assert!(ROUNDS == 7);
        rounds!(v, m: 1 2 3 4 5 6 7);
        let mut h = [[0u32; WIDE]; 8];
        for (i, word) in h.iter_mut().enumerate() {
            *word = store(_mm512_xor_si512(v[i], v[i + 8]));
        }
        digests(&h, &lens, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The digests of `records` through groups, with the given hash of a group.
    fn through_groups(records: &[Vec<u8>], hash: impl Fn(&Group) -> [Lanes; WIDE]) -> Vec<Lanes> {
        let mut out = Vec::new();
        let mut group = Group::new();
        for chunk in records.chunks(WIDE) {
            group.clear();
            for bytes in chunk {
                group.push(|cursor| cursor.put(bytes));
            }
            out.extend_from_slice(&hash(&group)[..group.len()]);
        }
        out
    }

    proptest! {
        /// Same digest as the blake3 crate for every length from 1 to 64 (ZERO for an empty
        /// place) and any batch size, on every path this CPU has, whatever the group held
        /// before.
        #[test]
        fn equals_blake3(records in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..=BLOCK_LEN), 0..40)
        ) {
            let out = through_groups(&records, Group::hash);
            let portable = through_groups(&records, |group| {
                let mut out = [Lanes::ZERO; WIDE];
                hash_group_portable(group, &mut out);
                out
            });
            prop_assert_eq!(&out, &portable);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let avx2 = through_groups(&records, |group| {
                    let mut out = [Lanes::ZERO; WIDE];
                    #[allow(unsafe_code)] // SAFETY: AVX2 support checked just above.
                    unsafe { hash_group_avx2(group, &mut out) };
                    out
                });
                prop_assert_eq!(&out, &avx2);
            }
            prop_assert_eq!(out.len(), records.len());
            for (bytes, digest) in records.iter().zip(&out) {
                // An empty place (no record) has no digest.
                let expected = if bytes.is_empty() {
                    Lanes::ZERO
                } else {
                    Lanes::of(blake3::hash(bytes))
                };
                prop_assert_eq!(*digest, expected);
            }
        }
    }

    #[test]
    fn push_appends_fields_and_pads_with_zeros() {
        let mut group = Group::new();
        group.push(|cursor| cursor.put(&[9; BLOCK_LEN]));
        group.clear();
        let len = group.push(|cursor| {
            cursor.put(&[7; 60]);
            cursor.put(&[1; 2]);
        });
        assert_eq!(len, 62);
        assert_eq!(&group.record(0)[58..], &[7, 7, 1, 1][..]);
        // What an earlier record left past the end is cleared.
        assert_eq!(group.blocks[0].bytes[62..], [0, 0]);
        group.push_empty();
        assert!(group.is_empty_at(1) && !group.is_empty_at(0));
    }

    #[test]
    fn push_exact_clears_what_the_record_does_not_fill() {
        let mut group = Group::new();
        group.push(|cursor| cursor.put(&[9; BLOCK_LEN]));
        group.clear();
        group.push_exact::<50>(|cursor| cursor.put(&[7; 50]));
        assert_eq!(group.record(0), &[7; 50][..]);
        assert_eq!(group.blocks[0].bytes[50..], [0; 14]);
        assert_eq!(group.hash()[0], Lanes::of(blake3::hash(&[7; 50])));
    }

    #[test]
    #[should_panic]
    fn push_exact_refuses_another_length() {
        Group::new().push_exact::<50>(|cursor| cursor.put(&[7; 49]));
    }

    #[test]
    #[should_panic]
    fn push_refuses_what_does_not_fit() {
        Group::new().push(|cursor| cursor.put(&[7; BLOCK_LEN + 1]));
    }
}
