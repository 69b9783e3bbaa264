//! The commit's order records read straight from the slab (AVX-512).
//!
//! A commit hashes the record of every order slot touched since the last one. Written out
//! (`commitment::write_order`), a record costs about a dozen scalar stores into a group's
//! block, which the hash then gathers back word by word; the gathers wait until those
//! stores have drained. Here the 16 message words of a group's records are built in vector
//! registers instead: the slab nodes' fields are read 64 bits at a time (a u64 field, or
//! two adjacent 32-bit ones) with 8-lane gathers, split into 32-bit halves by permutes; the
//! owners' and markets' ids come from the commitment's dense copies of them (`record_ids`):
//! the owners' with 32-bit gathers, the markets' looked up in two registers when there are
//! at most 32 (gathered otherwise); then shifts and ors put each field's bytes where the
//! record layout has them. Nothing is written. The digests are the same bytes' BLAKE3, so
//! the state root does not change (a test holds the two paths to each other, and the
//! commitment's tests hold the commit to the from-scratch root, which writes the records).

use super::commitment::Lanes;
use super::one_block::avx512::{hash_words, u64_halves};
use super::one_block::WIDE;
use super::record_ids::RecordIds;
use super::*;
use std::arch::x86_64::*;
use std::mem::{offset_of, size_of};

/// Length of an order record (`commitment::write_order`).
const ORDER_RECORD_LEN: i32 = 50;

/// Message words an order record fills: the hash leaves out the additions of the rest.
const ORDER_RECORD_WORDS: usize = (ORDER_RECORD_LEN as usize).div_ceil(4);

// The record's flag bytes are read as one 32-bit word: side, stp, flags, tier in this order.
const _: () = assert!(offset_of!(OrderNode, stp) == offset_of!(OrderNode, side) + 1);
const _: () = assert!(offset_of!(OrderNode, flags) == offset_of!(OrderNode, side) + 2);
const _: () = assert!(offset_of!(OrderNode, tier) == offset_of!(OrderNode, side) + 3);
// Two 32-bit fields read as one 64-bit word each: account and market, price and the flags.
const _: () = assert!(offset_of!(OrderNode, market) == offset_of!(OrderNode, account) + 4);
const _: () = assert!(offset_of!(OrderNode, side) == offset_of!(OrderNode, price_ticks) + 4);

/// Lane `i`: the 32-bit word at `base + offsets[i]` if bit `i` of `mask` is set, else 0.
///
/// # Safety
/// For every set lane, the 4 bytes at `base + offsets[i]` lie inside one live allocation.
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(unsafe_code)] // A gather reads through a raw pointer: see SAFETY at each call.
unsafe fn gather(mask: __mmask16, offsets: __m512i, base: *const u8) -> __m512i {
    // SAFETY: the caller's contract.
    unsafe { _mm512_mask_i32gather_epi32::<1>(_mm512_setzero_si512(), mask, offsets, base.cast()) }
}

/// The 64-bit words at `base + offsets[i]` of the lanes `i` set in `mask` (others 0), split
/// into their low and high 32-bit halves, each a 16-lane vector. Two 8-lane 64-bit gathers
/// read half as many elements as two 16-lane 32-bit gathers would, and two permutes split
/// the halves (measured in the commit together with the dense ids: docs/perf.md).
///
/// # Safety
/// For every set lane, the 8 bytes at `base + offsets[i]` lie inside one live allocation.
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(unsafe_code)] // A gather reads through a raw pointer: see SAFETY at each call.
unsafe fn gather_halves(mask: __mmask16, offsets: __m512i, base: *const u8) -> (__m512i, __m512i) {
    let zero = _mm512_setzero_si512();
    let (low_mask, high_mask) = (mask as __mmask8, (mask >> 8) as __mmask8);
    let low_offsets = _mm512_castsi512_si256(offsets);
    let high_offsets = _mm512_extracti64x4_epi64::<1>(offsets);
    // SAFETY: the caller's contract, for lanes 0..8 and 8..16.
    let (first, second) = unsafe {
        (
            _mm512_mask_i32gather_epi64::<1>(zero, low_mask, low_offsets, base.cast()),
            _mm512_mask_i32gather_epi64::<1>(zero, high_mask, high_offsets, base.cast()),
        )
    };
    u64_halves(first, second)
}

/// `ids[indices[i]]` in the lanes `i` set in `mask`, 0 in the others; every such index is
/// below `ids.len()` (the caller checks). Up to 32 ids are looked up in two registers (one
/// permute); more are gathered.
#[inline]
#[target_feature(enable = "avx512f")]
fn look_up(mask: __mmask16, indices: __m512i, ids: &[u32]) -> __m512i {
    if ids.len() > 2 * WIDE {
        // SAFETY: each set lane reads the 4 bytes of `ids[index]`, `index < ids.len()` (the
        // caller's check), at a byte offset that fits i32 (the caller's `fits`).
        #[allow(unsafe_code)]
        return unsafe { gather(mask, _mm512_slli_epi32::<2>(indices), ids.as_ptr().cast()) };
    }
    let lanes = |count: usize| ((1u32 << count) - 1) as __mmask16;
    let (low, high) = ids.split_at(ids.len().min(WIDE));
    // SAFETY: each masked load reads only the first `low.len()` (`high.len()`) u32s of its
    // slice, both at most 16.
    #[allow(unsafe_code)]
    let (low, high) = unsafe {
        (
            _mm512_maskz_loadu_epi32(lanes(low.len()), low.as_ptr().cast()),
            _mm512_maskz_loadu_epi32(lanes(high.len()), high.as_ptr().cast()),
        )
    };
    _mm512_maskz_permutex2var_epi32(mask, low, indices, high)
}

/// Lane-wise `x >> R | y << L` (32-bit lanes): the high bytes of one field followed by the
/// low bytes of the next.
#[inline]
#[target_feature(enable = "avx512f")]
fn splice<const R: u32, const L: u32>(x: __m512i, y: __m512i) -> __m512i {
    _mm512_or_si512(_mm512_srli_epi32::<R>(x), _mm512_slli_epi32::<L>(y))
}

/// Digests of the order records of `slots` (at most [`WIDE`]; ZERO for a free slot), in
/// order: equal to writing each record (`commitment::write_order`) and hashing it. `ids`
/// holds the accounts' and markets' ids by index. Returns false without doing anything if
/// an index into the slab or the ids could overflow a 32-bit byte offset (then the caller
/// writes the records).
///
/// # Panics
/// If a slot is outside the slab, or a live order's account or market index outside its
/// table (broken engine invariants; each index is checked before anything is read through
/// it).
#[target_feature(enable = "avx512f")]
pub(super) fn order_digests(
    slots: &[u32],
    orders: &[OrderNode],
    ids: &RecordIds,
    out: &mut [Lanes; WIDE],
) -> bool {
    let (account_ids, market_ids) = (ids.accounts.as_slice(), ids.markets.as_slice());
    assert!(slots.len() <= WIDE, "at most {WIDE} slots per group");
    let fits = |len: usize, size: usize| len.saturating_mul(size) <= i32::MAX as usize;
    if !fits(orders.len(), size_of::<OrderNode>())
        || !fits(account_ids.len(), size_of::<AccountId>())
        || !fits(market_ids.len(), size_of::<MarketId>())
    {
        return false;
    }
    let mut slot_words = [0u32; WIDE];
    slot_words[..slots.len()].copy_from_slice(slots);
    // SAFETY: [u32; 16] and __m512i are both 64 bytes of plain data, any bits valid.
    #[allow(unsafe_code)]
    let slots_v = unsafe { std::mem::transmute::<[u32; WIDE], __m512i>(slot_words) };
    let below = |mask, values, len: usize| {
        _mm512_mask_cmpge_epu32_mask(mask, values, _mm512_set1_epi32(len as i32)) == 0
    };
    let active = ((1u32 << slots.len()) - 1) as __mmask16;
    assert!(
        below(active, slots_v, orders.len()),
        "slot outside the slab"
    );
    let node_at = _mm512_mullo_epi32(slots_v, _mm512_set1_epi32(size_of::<OrderNode>() as i32));
    let nodes = orders.as_ptr().cast::<u8>();
    // SAFETY (every `node_words` below): each active lane reads 8 bytes at `slot * 56 + o`
    // with `slot < orders.len()` (asserted above) and `o + 8 <= 56` (a u64 field or two
    // adjacent 4-byte ones, asserted at the top of this file): inside `orders`; the offsets
    // fit i32 (`fits` above).
    #[allow(unsafe_code)]
    let node_words = |offset: usize| unsafe { gather_halves(active, node_at, nodes.add(offset)) };
    // Every node field first (they depend on the slots only, so their loads overlap), then
    // the two ids that depend on the node's indices.
    let (account, market) = node_words(offset_of!(OrderNode, account));
    let (price, flags) = node_words(offset_of!(OrderNode, price_ticks));
    let (remaining_lo, remaining_hi) = node_words(offset_of!(OrderNode, remaining));
    let (oid_lo, oid_hi) = node_words(offset_of!(OrderNode, oid));
    let (entry_lo, entry_hi) = node_words(offset_of!(OrderNode, entry));

    let live = _mm512_mask_cmpneq_epu32_mask(active, account, _mm512_set1_epi32(NIL as i32));
    assert!(
        below(live, account, account_ids.len()),
        "order of an unknown account"
    );
    assert!(
        below(live, market, market_ids.len()),
        "order in an unknown market"
    );
    let id_at = _mm512_slli_epi32::<3>(account);
    const _: () = assert!(size_of::<AccountId>() == 8);
    // SAFETY: each live lane reads 4 bytes of `account_ids[account]` (either half of the
    // id), the index checked above; the offsets fit i32 (`fits` above).
    #[allow(unsafe_code)]
    let (id_lo, id_hi) = unsafe {
        let ids_base = account_ids.as_ptr().cast::<u8>();
        (
            gather(live, id_at, ids_base),
            gather(live, id_at, ids_base.add(4)),
        )
    };
    let market_id = look_up(live, market, market_ids);

    let byte = _mm512_set1_epi32(0xFF);
    let bit = _mm512_set1_epi32(1);
    let side = _mm512_and_si512(flags, byte);
    let stp = _mm512_and_si512(_mm512_srli_epi32::<8>(flags), byte);
    let post_only = _mm512_and_si512(_mm512_srli_epi32::<16>(flags), bit);
    let reduce_only = _mm512_and_si512(_mm512_srli_epi32::<17>(flags), bit);
    let tier = _mm512_srli_epi32::<24>(flags);
    let zero = _mm512_setzero_si512();
    // The record (commitment.rs): "O", market u32, account u64, oid u64, side u8, price
    // i64 (a u32 widened: its high half is zero), remaining i64, entry u64, stp, post_only,
    // reduce_only, tier (u8), 50 bytes; word `w` holds bytes 4w..4w+4.
    let m = [
        _mm512_or_si512(
            _mm512_set1_epi32(i32::from(b'O')),
            _mm512_slli_epi32::<8>(market_id),
        ),
        splice::<24, 8>(market_id, id_lo),
        splice::<24, 8>(id_lo, id_hi),
        splice::<24, 8>(id_hi, oid_lo),
        splice::<24, 8>(oid_lo, oid_hi),
        _mm512_or_si512(
            splice::<24, 8>(oid_hi, side),
            _mm512_slli_epi32::<16>(price),
        ),
        _mm512_srli_epi32::<16>(price),
        _mm512_slli_epi32::<16>(remaining_lo),
        splice::<16, 16>(remaining_lo, remaining_hi),
        splice::<16, 16>(remaining_hi, entry_lo),
        splice::<16, 16>(entry_lo, entry_hi),
        _mm512_or_si512(
            splice::<16, 16>(entry_hi, stp),
            _mm512_slli_epi32::<24>(post_only),
        ),
        _mm512_or_si512(reduce_only, _mm512_slli_epi32::<8>(tier)),
        zero,
        zero,
        zero,
    ];
    let lens = _mm512_maskz_mov_epi32(live, _mm512_set1_epi32(ORDER_RECORD_LEN));
    // SAFETY: as in the transmute above, the other way.
    #[allow(unsafe_code)]
    let lens = unsafe { std::mem::transmute::<__m512i, [u32; WIDE]>(lens) };
    hash_words::<ORDER_RECORD_WORDS>(m, lens, out);
    true
}

#[cfg(test)]
mod tests {
    use super::super::commitment::written_order_digests;
    use super::*;
    use proptest::prelude::*;

    /// Random values for an order node's hashed fields.
    #[derive(Clone, Debug)]
    struct Fields {
        side: bool,
        stp: u8,
        flags: u8,
        tier: u8,
        price: u32,
        remaining: i64,
        oid: u64,
        entry: u64,
    }

    fn fields() -> impl Strategy<Value = Fields> {
        (
            (any::<bool>(), 0u8..3, 0u8..4, any::<u8>()),
            (any::<u32>(), any::<i64>(), any::<u64>(), any::<u64>()),
        )
            .prop_map(
                |((side, stp, flags, tier), (price, remaining, oid, entry))| Fields {
                    side,
                    stp,
                    flags,
                    tier,
                    price,
                    remaining,
                    oid,
                    entry,
                },
            )
    }

    /// An engine with two markets and accounts with ids that use all 8 bytes, each account
    /// resting one order per market, then every order's hashed fields overwritten with
    /// `values` (the digests do not care whether the book still makes sense) and every
    /// `free_every`-th order cancelled first (a free slot).
    fn engine_with(values: &[Fields], free_every: usize, markets_before: u32) -> Engine {
        let mut engine = Engine::new(EngineConfig {
            max_resting_orders: 256,
            max_open_orders_per_account: 64,
        });
        let mut out = Vec::new();
        let mut commands = vec![
            Command::CreateAsset { asset: 1 },
            Command::CreateAsset { asset: 2 },
        ];
        // Unused markets first, so the two the orders use sit at any index of the market ids.
        for market in (1_000..1_000 + markets_before).chain([7, u32::MAX - 3]) {
            commands.push(Command::CreateMarket(MarketSpec {
                market,
                base: 1,
                quote: 2,
                base_units_per_lot: 1,
                quote_units_per_tick_lot: 1,
                min_lots: 1,
                max_price_ticks: 1_000,
                maker_fee_bps: 0,
                taker_fee_bps: 0,
            }));
        }
        let accounts: Vec<u64> = (0..values.len() as u64 / 2 + 1)
            .map(|i| u64::MAX - i * 0x0101_0101_0101)
            .collect();
        for &account in &accounts {
            for asset in [1, 2] {
                commands.push(Command::Deposit {
                    account,
                    asset,
                    amount: 1 << 40,
                });
            }
        }
        for (i, _) in values.iter().enumerate() {
            commands.push(Command::Place(NewOrder {
                account: accounts[i / 2],
                market: if i % 2 == 0 { 7 } else { u32::MAX - 3 },
                oid: i as u64,
                side: Side::Buy,
                price: Some(10),
                qty: 1,
                tif: TimeInForce::Gtc,
                stp: SelfTradePrevention::CancelMaker,
                reduce_only: false,
            }));
        }
        for command in &commands {
            engine.step(command, &mut out);
        }
        for i in (0..values.len()).step_by(free_every.max(1)) {
            let market = if i % 2 == 0 { 7 } else { u32::MAX - 3 };
            engine.step(
                &Command::Cancel {
                    account: accounts[i / 2],
                    market,
                    oid: i as u64,
                },
                &mut out,
            );
        }
        let mut values = values.iter();
        for slot in 0..engine.orders.len() {
            let node = &mut engine.orders[slot];
            if node.account == NIL {
                continue;
            }
            let Some(value) = values.next() else { break };
            node.side = if value.side { Side::Sell } else { Side::Buy };
            node.stp = SelfTradePrevention::from_code(value.stp).expect("a code");
            node.flags = value.flags;
            node.tier = value.tier;
            node.price_ticks = value.price;
            node.remaining = value.remaining;
            node.oid = value.oid;
            node.entry = value.entry;
        }
        engine
    }

    proptest! {
        /// The gathered digests equal those of the written records for every slot, free
        /// ones (ZERO) included, whatever the field values, in groups of every size, with
        /// the orders' markets anywhere among up to 41 (market ids looked up in registers
        /// up to 32 markets, gathered past that).
        #[test]
        fn gathered_digests_equal_written_ones(
            values in proptest::collection::vec(fields(), 1..40),
            free_every in 1usize..6,
            group in 1usize..=WIDE,
            markets_before in 0u32..40,
        ) {
            if !std::arch::is_x86_feature_detected!("avx512f") {
                return Ok(());
            }
            let engine = engine_with(&values, free_every, markets_before);
            let slots: Vec<u32> = (0..engine.orders.len() as u32).collect();
            let mut ids = RecordIds::default();
            ids.sync(&engine.accounts, &engine.markets);
            for chunk in slots.chunks(group) {
                let mut gathered = [Lanes::ZERO; WIDE];
                #[allow(unsafe_code)]
                // SAFETY: AVX-512F support checked above.
                let done = unsafe {
                    order_digests(
                        chunk,
                        engine.orders.as_slice(),
                        &ids,
                        &mut gathered,
                    )
                };
                prop_assert!(done);
                let written = written_order_digests(&engine, chunk);
                prop_assert_eq!(&gathered[..chunk.len()], &written[..chunk.len()]);
            }
        }
    }
}
