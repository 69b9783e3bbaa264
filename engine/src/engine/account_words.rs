//! The commit's account records as message words in vector registers (AVX-512).
//!
//! An account record (`commitment::write_account`) is the byte `U` followed by 8-byte fields:
//! the id, each asset's total, the perp collateral and the order margin. Written into a
//! group's blocks and gathered back word by word, a group of them cost ~100 ns more than a
//! group of order records, whose words `order_gather` builds without writing them. Here the
//! fields of 16 accounts are copied into one row per field (plain stores of whole fields),
//! each row is loaded as two vectors, and the message words come from shifts and ors: since
//! every field is 8 bytes and starts one byte past a word boundary, word `2j` is the last
//! byte of field `j - 1` (of `U` for `j = 0`) and the first three of field `j`, and word
//! `2j + 1` the middle four bytes of field `j`, whatever the number of assets. The digests are
//! the same bytes' BLAKE3 (a test holds the two paths to each other).

use super::commitment::{Lanes, ONE_BLOCK_ASSETS};
use super::one_block::avx512::{hash_words, u64_halves};
use super::one_block::WIDE;
use super::*;
use std::arch::x86_64::*;

/// Fields of the longest account record that fits one block: the id, the totals, the
/// collateral and the order margin.
const MAX_FIELDS: usize = ONE_BLOCK_ASSETS + 3;

/// Digests of the account records of the accounts at `indices` (at most [`WIDE`], at least
/// one), in order: equal to writing each record (`commitment::write_account`) and hashing it.
/// None, with nothing done, if one of them does not fit one block (a perp position, or more
/// than [`ONE_BLOCK_ASSETS`] assets): then the caller writes them.
///
/// # Panics
/// If an index is outside `accounts`.
#[target_feature(enable = "avx512f")]
pub(super) fn account_digests(indices: &[u32], accounts: &[AccountState]) -> Option<[Lanes; WIDE]> {
    assert!(
        (1..=WIDE).contains(&indices.len()),
        "1 to {WIDE} accounts per group"
    );
    let assets = accounts[indices[0] as usize].balances.len();
    if assets > ONE_BLOCK_ASSETS {
        return None;
    }
    let fields = assets + 3;
    let mut rows = [[0u64; WIDE]; MAX_FIELDS];
    for (lane, &index) in indices.iter().enumerate() {
        let account = &accounts[index as usize];
        if account.balances.len() != assets || !account.perp.positions.is_empty() {
            return None;
        }
        rows[0][lane] = account.id;
        for (row, balance) in rows[1..].iter_mut().zip(&account.balances) {
            row[lane] = balance.total as u64;
        }
        rows[assets + 1][lane] = account.perp.collateral as u64;
        rows[assets + 2][lane] = account.perp.order_margin as u64;
    }
    let mut m = [_mm512_setzero_si512(); 16];
    // Lane-wise the last byte of the previous field in its top byte: `U` before the id.
    let mut previous_high = _mm512_set1_epi32(i32::from(b'U') << 24);
    for (j, row) in rows[..fields].iter().enumerate() {
        let (low, high) = halves(row);
        m[2 * j] = splice(previous_high, low);
        m[2 * j + 1] = splice(low, high);
        previous_high = high;
    }
    m[2 * fields] = _mm512_srli_epi32::<24>(previous_high);
    let len = (1 + 8 * fields) as u32;
    let lens: [u32; WIDE] = std::array::from_fn(|lane| if lane < indices.len() { len } else { 0 });
    let mut out = [Lanes::ZERO; WIDE];
    hash_words::<16>(m, lens, &mut out);
    Some(out)
}

/// Lane-wise `x >> 24 | y << 8` (32-bit lanes): the top byte of `x` followed by the low three
/// bytes of `y`.
#[inline]
#[target_feature(enable = "avx512f")]
fn splice(x: __m512i, y: __m512i) -> __m512i {
    _mm512_or_si512(_mm512_srli_epi32::<24>(x), _mm512_slli_epi32::<8>(y))
}

/// The low and the high 32 bits of 16 u64 values, as two vectors of 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn halves(row: &[u64; WIDE]) -> (__m512i, __m512i) {
    let first: [u64; 8] = row[..8].try_into().expect("8 values");
    let second: [u64; 8] = row[8..].try_into().expect("8 values");
    // SAFETY: [u64; 8] and __m512i are both 64 bytes of plain data, any bits valid.
    #[allow(unsafe_code)]
    let (first, second) = unsafe {
        (
            std::mem::transmute::<[u64; 8], __m512i>(first),
            std::mem::transmute::<[u64; 8], __m512i>(second),
        )
    };
    u64_halves(first, second)
}

#[cfg(test)]
mod tests {
    use super::super::commitment::written_account_digests;
    use super::*;
    use proptest::prelude::*;

    /// An engine with `assets` assets and `accounts` accounts (ids that use all 8 bytes),
    /// each holding every asset, then each account's hashed fields overwritten with
    /// `values` (totals, collateral, order margin: the digests do not care whether they
    /// add up).
    fn engine_with(assets: u32, values: &[Vec<i64>]) -> Engine {
        let mut engine = Engine::new(EngineConfig {
            max_resting_orders: 16,
            max_open_orders_per_account: 16,
        });
        let mut out = Vec::new();
        for asset in 1..=assets {
            engine.step(&Command::CreateAsset { asset }, &mut out);
        }
        for i in 0..values.len() as u64 {
            engine.step(
                &Command::Deposit {
                    account: u64::MAX - i * 0x0101_0101_0101,
                    asset: 1,
                    amount: 1,
                },
                &mut out,
            );
        }
        assert!(!out
            .iter()
            .any(|event| matches!(event, Event::Rejected { .. })));
        for (account, values) in engine.accounts.iter_mut().zip(values) {
            for (balance, &value) in account.balances.iter_mut().zip(values) {
                balance.total = value;
            }
            account.perp.collateral = values[assets as usize];
            account.perp.order_margin = values[assets as usize + 1];
        }
        engine
    }

    fn digests_of(engine: &Engine, indices: &[u32]) -> Option<[Lanes; WIDE]> {
        #[allow(unsafe_code)]
        // SAFETY: the callers check AVX-512F support first.
        unsafe {
            account_digests(indices, &engine.accounts)
        }
    }

    proptest! {
        #[test]
        fn equal_to_the_written_records(
            assets in 1usize..=ONE_BLOCK_ASSETS,
            values in proptest::collection::vec(
                proptest::collection::vec(any::<i64>(), ONE_BLOCK_ASSETS + 2), 1..40),
            group in 1usize..=WIDE,
        ) {
            if !std::arch::is_x86_feature_detected!("avx512f") {
                return Ok(());
            }
            let values: Vec<Vec<i64>> = values.into_iter().map(|v| v[..assets + 2].to_vec()).collect();
            let engine = engine_with(assets as u32, &values);
            let indices: Vec<u32> = (0..engine.accounts.len() as u32).rev().collect();
            for chunk in indices.chunks(group) {
                let gathered = digests_of(&engine, chunk).expect("one block each");
                let written = written_account_digests(&engine, chunk);
                prop_assert_eq!(&gathered[..chunk.len()], &written[..chunk.len()]);
            }
        }
    }

    #[test]
    fn refuses_records_longer_than_one_block() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let engine = engine_with(
            ONE_BLOCK_ASSETS as u32 + 1,
            &[vec![1; ONE_BLOCK_ASSETS + 3]],
        );
        assert!(digests_of(&engine, &[0]).is_none(), "more assets than fit");
        let mut engine = engine_with(2, &[vec![1; 4], vec![2; 4]]);
        assert!(digests_of(&engine, &[0, 1]).is_some());
        engine.accounts[1]
            .perp
            .positions
            .push(super::super::perp::Position {
                perp: 0,
                size: 1,
                open_notional: 0,
                funding_basis: 0,
                leverage: 1,
                isolated: false,
                isolated_margin: 0,
                reduce_only_orders: 0,
                keyed: super::super::perp::Keyed::None,
            });
        assert!(digests_of(&engine, &[0, 1]).is_none(), "a perp position");
    }
}
