//! The state commitment: a hash of the whole engine state that costs what changed, not what
//! exists.
//!
//! The state is viewed as a set of records: one per asset, market, account and resting order.
//! Each record is hashed with BLAKE3 (domain-separated by a leading tag byte) and the 256-bit
//! digests are summed lane-wise (4 x u64, wrapping). The root is BLAKE3 of that sum plus a few
//! counters. Because a sum does not depend on order, the root depends only on the records:
//! not on memory layout, slab positions or the ladder type.
//!
//! Incrementally, the engine marks each order slot and account it changes ("touch": a bit in a
//! two-level bitmap over slots, `dirty_slots`; a flag and a push for accounts);
//! [`Engine::commit`] then subtracts each touched record's previously committed digest and
//! adds its new one (slots in index order: the sum does not depend on the order).
//! [`Engine::state_hash`] computes the same root from scratch, which the tests use to check
//! the incremental one. The commit hashes touched order slots 16 at a time: on AVX-512 their
//! records' message words are gathered from the slab (`order_gather`); elsewhere, and for
//! `state_hash`, the records are written out (`write_order`) and hashed as a
//! `one_block::Group`. Touched accounts go 16 at a time
//! too: on AVX-512 their message words are built from their fields (`account_words`) when
//! all 16 fit one block; otherwise, and for `state_hash`, they are written out. The order
//! slots and accounts that do not fill a last group of their own are written, with the
//! asset and market records, into shared groups (`commit_tail`).
//!
//! Record layouts (little-endian):
//! - asset `A`: id u32, fee_pool i64, supply i64;
//! - market `M`: id, base, quote (u32), base_units_per_lot, quote_units_per_tick_lot,
//!   min_lots, max_price_ticks (i64), maker_fee_bps, taker_fee_bps (i32);
//! - account `U`: id u64, then total i64 per asset in registration order, then perp
//!   collateral i64, order margin i64, and per position slot (in first-touch order): perp
//!   market id u32, size i64, open_notional i128, funding_basis i128, leverage u32,
//!   isolated u8, isolated_margin i64. What its spot orders reserve (`locked` per asset)
//!   and its open-order count are not in it: both are functions of the order records
//!   (`Engine::check_invariants` holds them to that), so the root commits to them through
//!   the orders, and a spot order entering, changing or leaving touches its order record
//!   only;
//! - order `O`: market id u32, account id u64, oid u64, side u8, price i64, remaining i64,
//!   entry u64, stp u8, post_only u8, reduce_only u8, tier u8. `entry` (the engine-wide
//!   re-entry counter) fixes both the order's place in its level and among its account's
//!   orders;
//! - perp market `P`: `PerpSpec::to_le_bytes`, oracle, mark, ema_premium_ppb,
//!   premium_sum_ppb (i64), premium_samples u32, last_trade i64, funding_index i128,
//!   funding_pool i64, long_lots i64 (recomputed at every root: there are few markets).

use super::commit_tail::Leftovers;
use super::dirty_slots::DirtySlots;
use super::one_block::{Group, WIDE};
use super::record_ids::RecordIds;
use super::store::SlotVec;
use super::*;

/// A 256-bit digest as four wrapping u64 lanes, so digests can be added and subtracted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Lanes([u64; 4]);

impl Lanes {
    pub(super) const ZERO: Lanes = Lanes([0; 4]);

    /// A BLAKE3 digest read as four little-endian u64 lanes.
    pub(super) fn of(digest: blake3::Hash) -> Lanes {
        let bytes = digest.as_bytes();
        let lane = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8"));
        Lanes([lane(0), lane(1), lane(2), lane(3)])
    }

    /// Lanes from four little-endian u64 words of a digest.
    pub(super) fn from_words(words: [u64; 4]) -> Lanes {
        Lanes(words)
    }

    /// Adds `other` lane-wise (wrapping).
    pub(super) fn add(&mut self, other: Lanes) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.wrapping_add(b);
        }
    }

    /// Subtracts `other` lane-wise (wrapping).
    pub(super) fn sub(&mut self, other: Lanes) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.wrapping_sub(b);
        }
    }
}

/// What the engine keeps to commit incrementally.
pub(super) struct Tracker {
    /// Per order slot: the digest committed for it (ZERO for none). Grows with the slab.
    order_digests: SlotVec<Lanes>,
    dirty_orders: DirtySlots,
    pub(super) dirty_accounts: Vec<u32>,
    /// Sum of committed order and account digests.
    lanes: Lanes,
    /// Scratch: the records of one group, hashed together (boxed: 1 KiB).
    group: Box<Group>,
    /// The ids of the accounts and markets by index, for the order records' gathers.
    record_ids: RecordIds,
}

impl Tracker {
    pub(super) fn with_capacity(slots: usize) -> Self {
        Tracker {
            order_digests: SlotVec::new(slots, Lanes::ZERO),
            dirty_orders: DirtySlots::with_capacity(slots),
            dirty_accounts: Vec::new(),
            lanes: Lanes::ZERO,
            group: Box::new(Group::new()),
            record_ids: RecordIds::default(),
        }
    }

    /// Forgets every account (a restore empties the accounts before it adds them again).
    pub(super) fn forget_accounts(&mut self) {
        self.dirty_accounts.clear();
        self.record_ids.forget_accounts();
    }

    /// Checks the copied ids against the accounts and markets.
    pub(super) fn check_record_ids<L>(
        &self,
        accounts: &[AccountState],
        markets: &[MarketState<L>],
    ) -> Result<(), String> {
        self.record_ids.check(accounts, markets)
    }

    /// Keeps per-slot state as long as the slab.
    pub(super) fn grow_to(&mut self, slots: usize) {
        self.order_digests.grow_to(slots);
    }

    #[inline]
    pub(super) fn touch_order(&mut self, slot: u32) {
        self.dirty_orders.insert(slot);
    }

    /// What a commit's tail writes to: the committed order digests and the scratch group.
    pub(super) fn tail_parts(&mut self) -> (&mut SlotVec<Lanes>, &mut Group) {
        (&mut self.order_digests, &mut self.group)
    }
}

/// Bytes of an order record.
const ORDER_RECORD_LEN: usize = 50;

/// Appends the order record (layout in the module doc; 50 bytes, one BLAKE3 block) to
/// `group` (in place: building it elsewhere and copying it in stalls on the copy).
fn write_order(group: &mut Group, market: MarketId, account: AccountId, node: &OrderNode) {
    group.push_exact::<ORDER_RECORD_LEN>(|cursor| {
        cursor.put(b"O");
        cursor.put(&market.to_le_bytes());
        cursor.put(&account.to_le_bytes());
        cursor.put(&node.oid.to_le_bytes());
        cursor.put(&[node.side.code()]);
        cursor.put(&node.price().to_le_bytes());
        cursor.put(&node.remaining.to_le_bytes());
        cursor.put(&node.entry.to_le_bytes());
        cursor.put(&[
            node.stp.code(),
            node.post_only() as u8,
            node.reduce_only() as u8,
            node.tier,
        ]);
    });
}

/// Empties `group` and writes the records of the order slots `slots` (at most [`WIDE`]) into
/// it, an empty place for a free slot.
#[inline(always)]
fn write_orders<L: PriceLadder>(
    group: &mut Group,
    slots: &[u32],
    orders: &SlotVec<OrderNode>,
    markets: &[MarketState<L>],
    accounts: &[AccountState],
) {
    group.clear();
    for &slot in slots {
        write_slot(group, slot, orders, markets, accounts);
    }
}

/// Appends the record of the order in slot `slot` to `group`, an empty place if it is free.
#[inline(always)]
pub(super) fn write_slot<L: PriceLadder>(
    group: &mut Group,
    slot: u32,
    orders: &SlotVec<OrderNode>,
    markets: &[MarketState<L>],
    accounts: &[AccountState],
) {
    let node = &orders[slot as usize];
    if node.account == NIL {
        group.push_empty();
    } else {
        let market = markets[node.market as usize].spec.market;
        write_order(group, market, accounts[node.account as usize].id, node);
    }
}

/// Puts the digests of the order records of `slots` into `out`, read straight from the slab
/// (`order_gather`) where the CPU has AVX-512; false if not done (then the caller writes the
/// records and hashes them). `ids` are the accounts' and markets' ids by index.
#[inline(always)]
fn gather_order_digests(
    slots: &[u32],
    orders: &SlotVec<OrderNode>,
    ids: &RecordIds,
    out: &mut [Lanes; WIDE],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // The only way to call a `target_feature` function: see SAFETY.
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: `order_digests` only requires the CPU to support AVX-512F, checked just
        // above.
        return unsafe { super::order_gather::order_digests(slots, orders.as_slice(), ids, out) };
    }
    let _ = (slots, orders, ids, out);
    false
}

/// The digests of the order records of `slots` (at most [`WIDE`]) written out and hashed:
/// what [`gather_order_digests`] must equal (its tests).
#[cfg(test)]
pub(super) fn written_order_digests<L: PriceLadder>(
    engine: &Engine<L>,
    slots: &[u32],
) -> [Lanes; WIDE] {
    let mut group = Group::new();
    write_orders(
        &mut group,
        slots,
        &engine.orders,
        &engine.markets,
        &engine.accounts,
    );
    group.hash()
}

/// Replaces each slot's committed digest (in `committed`) by `digests[i]` for `slots[i]`;
/// returns the change of their sum: the new digests added, the ones they replace subtracted.
#[inline(always)]
fn replace_digests(
    slots: &[u32],
    digests: &[Lanes; WIDE],
    committed: &mut SlotVec<Lanes>,
) -> Lanes {
    let mut change = Lanes::ZERO;
    for (&slot, &digest) in slots.iter().zip(digests) {
        let replaced = std::mem::replace(&mut committed[slot as usize], digest);
        change.add(digest);
        change.sub(replaced);
    }
    change
}

/// Digests of the records of the accounts at `indices` (at most [`WIDE`]), in order.
#[inline(always)]
fn account_digests(
    group: &mut Group,
    indices: &[u32],
    accounts: &[AccountState],
    perps: &[PerpMarket],
) -> [Lanes; WIDE] {
    group.clear();
    for &index in indices {
        if !write_account(group, &accounts[index as usize]) {
            // Too long for one block: an empty place, hashed below.
            group.push_empty();
        }
    }
    let mut digests = group.hash();
    for (i, (&index, digest)) in indices.iter().zip(digests.iter_mut()).enumerate() {
        if group.is_empty_at(i) {
            *digest = account_digest(&accounts[index as usize], perps);
        }
    }
    digests
}

/// The digests of the records of the accounts at `indices` (at most [`WIDE`], at least
/// one) built as message words in registers (`account_words`) where the CPU has AVX-512;
/// None if not done (then the caller writes the records and hashes them).
#[inline(always)]
fn account_words(indices: &[u32], accounts: &[AccountState]) -> Option<[Lanes; WIDE]> {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // The only way to call a `target_feature` function: see SAFETY.
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: `account_digests` only requires the CPU to support AVX-512F, checked just
        // above.
        return unsafe { super::account_words::account_digests(indices, accounts) };
    }
    let _ = (indices, accounts);
    None
}

/// The digests of the account records of `indices` written out and hashed: what
/// `account_words::account_digests` must equal (its tests).
#[cfg(test)]
pub(super) fn written_account_digests<L: PriceLadder>(
    engine: &Engine<L>,
    indices: &[u32],
) -> [Lanes; WIDE] {
    account_digests(&mut Group::new(), indices, &engine.accounts, &engine.perps)
}

/// Assets an account record can have and still fit one BLAKE3 block without perp
/// positions: 1 + 8 + 4 x 8 + 16 = 57 bytes.
pub(super) const ONE_BLOCK_ASSETS: usize = 4;

/// Appends the account record to `group` if it fits one BLAKE3 block (no perp position and
/// at most [`ONE_BLOCK_ASSETS`] assets); returns false otherwise (then [`account_digest`]
/// hashes it).
pub(super) fn write_account(group: &mut Group, account: &AccountState) -> bool {
    if !account.perp.positions.is_empty() || account.balances.len() > ONE_BLOCK_ASSETS {
        return false;
    }
    group.push(|cursor| {
        cursor.put(b"U");
        cursor.put(&account.id.to_le_bytes());
        for balance in &account.balances {
            cursor.put(&balance.total.to_le_bytes());
        }
        cursor.put(&account.perp.collateral.to_le_bytes());
        cursor.put(&account.perp.order_margin.to_le_bytes());
    });
    true
}

pub(super) fn account_digest(account: &AccountState, perps: &[PerpMarket]) -> Lanes {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"U");
    hasher.update(&account.id.to_le_bytes());
    for balance in &account.balances {
        hasher.update(&balance.total.to_le_bytes());
    }
    let perp = &account.perp;
    hasher.update(&perp.collateral.to_le_bytes());
    hasher.update(&perp.order_margin.to_le_bytes());
    for position in &perp.positions {
        hasher.update(&perps[position.perp as usize].spec.market.to_le_bytes());
        hasher.update(&position.size.to_le_bytes());
        hasher.update(&position.open_notional.to_le_bytes());
        hasher.update(&position.funding_basis.to_le_bytes());
        hasher.update(&position.leverage.to_le_bytes());
        hasher.update(&[position.isolated as u8]);
        hasher.update(&position.isolated_margin.to_le_bytes());
    }
    Lanes::of(hasher.finalize())
}

pub(super) fn perp_market_digest(perp: &PerpMarket) -> Lanes {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"P");
    hasher.update(&perp.spec.to_le_bytes());
    for value in [
        perp.oracle,
        perp.mark,
        perp.ema_premium_ppb,
        perp.premium_sum_ppb,
    ] {
        hasher.update(&value.to_le_bytes());
    }
    hasher.update(&perp.premium_samples.to_le_bytes());
    hasher.update(&perp.last_trade.to_le_bytes());
    hasher.update(&perp.funding_index.to_le_bytes());
    hasher.update(&perp.funding_pool.to_le_bytes());
    hasher.update(&perp.long_lots.to_le_bytes());
    Lanes::of(hasher.finalize())
}

/// Appends the asset record (21 bytes) to `group`.
pub(super) fn write_asset(group: &mut Group, asset: &AssetState) {
    group.push(|cursor| {
        cursor.put(b"A");
        cursor.put(&asset.id.to_le_bytes());
        cursor.put(&asset.fee_pool.to_le_bytes());
        cursor.put(&asset.supply.to_le_bytes());
    });
}

/// Appends the spot market record (53 bytes) to `group`.
pub(super) fn write_market(group: &mut Group, spec: &MarketSpec) {
    group.push(|cursor| {
        cursor.put(b"M");
        cursor.put(&spec.to_le_bytes());
    });
}

/// Adds the digests of the (few) asset and market records to `lanes`, those of one block
/// hashed together in `group`.
fn add_assets_and_markets<L: PriceLadder>(
    group: &mut Group,
    lanes: &mut Lanes,
    assets: &[AssetState],
    markets: &[MarketState<L>],
    perps: &[PerpMarket],
) {
    group.clear();
    for asset in assets {
        if group.len() == WIDE {
            flush(group, lanes);
        }
        write_asset(group, asset);
    }
    for market in markets {
        if market.params.perp != NIL {
            lanes.add(perp_market_digest(&perps[market.params.perp as usize]));
            continue;
        }
        if group.len() == WIDE {
            flush(group, lanes);
        }
        write_market(group, &market.spec);
    }
    flush(group, lanes);
}

/// Adds the digests of the records in `group` to `lanes` and empties it.
fn flush(group: &mut Group, lanes: &mut Lanes) {
    let digests = group.hash();
    digests[..group.len()]
        .iter()
        .for_each(|&digest| lanes.add(digest));
    group.clear();
}

impl<L: PriceLadder> Engine<L> {
    /// The root from the sum of all records' digests: BLAKE3 of the tag, the four lanes and
    /// five counters (little-endian), hashed in one call (a hasher fed field by field took
    /// ~0.1 us more per commit).
    fn root(&self, lanes: Lanes) -> [u8; 32] {
        const TAG: &[u8] = b"nexus-engine-root-v3";
        let mut bytes = [0u8; TAG.len() + 9 * 8];
        bytes[..TAG.len()].copy_from_slice(TAG);
        let counts = [
            self.entries,
            self.resting as u64,
            self.accounts.len() as u64,
            self.assets.len() as u64,
            self.markets.len() as u64,
        ];
        let words = lanes.0.into_iter().chain(counts);
        for (place, word) in bytes[TAG.len()..].chunks_exact_mut(8).zip(words) {
            place.copy_from_slice(&word.to_le_bytes());
        }
        *blake3::hash(&bytes).as_bytes()
    }

    /// Folds the order slots touched since the last commit into `lanes`, but for those of a
    /// last, partly filled group, which go to `leftovers`: each one's record (none for a free
    /// slot) is hashed and its digest replaces the slot's committed one.
    fn commit_orders(&mut self, lanes: &mut Lanes, leftovers: &mut Leftovers) {
        let Engine {
            orders,
            accounts,
            markets,
            commitment,
            ..
        } = self;
        let Tracker {
            order_digests,
            dirty_orders,
            group,
            record_ids,
            ..
        } = commitment;
        record_ids.sync(accounts, markets);
        dirty_orders.drain(|slots| {
            if slots.len() < WIDE {
                return leftovers.keep_orders(slots);
            }
            let mut digests = [Lanes::ZERO; WIDE];
            if !gather_order_digests(slots, orders, record_ids, &mut digests) {
                write_orders(group, slots, orders, markets, accounts);
                digests = group.hash();
            }
            lanes.add(replace_digests(slots, &digests, order_digests));
        });
    }

    /// Folds the accounts touched since the last commit into `lanes`, but for those of a
    /// last, partly filled group, which go to `leftovers`.
    fn commit_accounts(&mut self, lanes: &mut Lanes, leftovers: &mut Leftovers) {
        let Engine {
            accounts,
            perps,
            commitment,
            ..
        } = self;
        let Tracker {
            dirty_accounts,
            group,
            ..
        } = commitment;
        let chunks = dirty_accounts.chunks_exact(WIDE);
        leftovers.keep_accounts(chunks.remainder());
        for chunk in chunks {
            let digests = account_words(chunk, accounts)
                .unwrap_or_else(|| account_digests(group, chunk, accounts, perps));
            for (&index, &digest) in chunk.iter().zip(&digests) {
                let account = &mut accounts[index as usize];
                account.dirty = false;
                lanes.sub(account.committed);
                account.committed = digest;
                lanes.add(digest);
            }
        }
        dirty_accounts.clear();
    }

    /// Folds every change since the last commit into the commitment and returns the state
    /// root. Costs O(records changed + assets + markets). Equal to [`Engine::state_hash`].
    #[inline(never)] // Called once per block; kept apart so profiles show it.
    pub fn commit(&mut self) -> [u8; 32] {
        let mut lanes = self.commitment.lanes;
        let mut leftovers = Leftovers::new();
        self.commit_orders(&mut lanes, &mut leftovers);
        self.commit_accounts(&mut lanes, &mut leftovers);
        let assets_and_markets = self.commit_tail(&mut lanes, &leftovers);
        self.commitment.lanes = lanes;
        lanes.add(assets_and_markets);
        self.root(lanes)
    }

    /// Records folded in by the next [`Engine::commit`]: (orders, accounts) touched since the
    /// last one. Lets a benchmark relate the commit's cost to what changed.
    pub fn pending_records(&self) -> (usize, usize) {
        (
            self.commitment.dirty_orders.count(),
            self.commitment.dirty_accounts.len(),
        )
    }

    /// The state root computed from scratch, O(state). Same value as [`Engine::commit`] would
    /// return now; used by tests and audits, and by anyone holding only `&self`.
    pub fn state_hash(&self) -> [u8; 32] {
        let mut group = Group::new();
        let mut lanes = Lanes::ZERO;
        let live: Vec<u32> = (0..self.orders.len() as u32)
            .filter(|&slot| self.orders[slot as usize].account != NIL)
            .collect();
        for chunk in live.chunks(WIDE) {
            write_orders(
                &mut group,
                chunk,
                &self.orders,
                &self.markets,
                &self.accounts,
            );
            let digests = group.hash();
            digests[..chunk.len()]
                .iter()
                .for_each(|&digest| lanes.add(digest));
        }
        let all: Vec<u32> = (0..self.accounts.len() as u32).collect();
        for chunk in all.chunks(WIDE) {
            let digests = account_digests(&mut group, chunk, &self.accounts, &self.perps);
            digests[..chunk.len()]
                .iter()
                .for_each(|&digest| lanes.add(digest));
        }
        add_assets_and_markets(
            &mut group,
            &mut lanes,
            &self.assets,
            &self.markets,
            &self.perps,
        );
        self.root(lanes)
    }
}

/// Commands that set up two assets (1, 2), spot market 5 between them, and accounts
/// `1..=accounts` holding 1,000,000 of each asset (for tests).
#[cfg(test)]
pub(super) fn one_market_setup(accounts: u64) -> Vec<Command> {
    let mut commands = vec![
        Command::CreateAsset { asset: 1 },
        Command::CreateAsset { asset: 2 },
        Command::CreateMarket(MarketSpec {
            market: 5,
            base: 1,
            quote: 2,
            base_units_per_lot: 10,
            quote_units_per_tick_lot: 3,
            min_lots: 1,
            max_price_ticks: 64,
            maker_fee_bps: -3,
            taker_fee_bps: 9,
        }),
    ];
    for account in 1..=accounts {
        for asset in 1..=2 {
            commands.push(Command::Deposit {
                account,
                asset,
                amount: 1_000_000,
            });
        }
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn setup() -> (Engine, Engine<crate::ladder::BTreeLadder>) {
        setup_with(256)
    }

    /// [`setup`] with room for `max_resting_orders` (any account may hold them all).
    fn setup_with(max_resting_orders: u32) -> (Engine, Engine<crate::ladder::BTreeLadder>) {
        let mut fast = Engine::new(EngineConfig {
            max_resting_orders,
            max_open_orders_per_account: if max_resting_orders > 256 {
                max_resting_orders
            } else {
                64
            },
        });
        let mut slow = Engine::<crate::ladder::BTreeLadder>::new(fast.config());
        let mut out = Vec::new();
        for command in &one_market_setup(3) {
            fast.step(command, &mut out);
            slow.step(command, &mut out);
        }
        (fast, slow)
    }

    fn command() -> impl Strategy<Value = Command> {
        let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
        let tif = prop_oneof![
            Just(TimeInForce::Gtc),
            Just(TimeInForce::Ioc),
            Just(TimeInForce::Fok),
            Just(TimeInForce::Alo)
        ];
        prop_oneof![
            6 => (1u64..=3, 1u64..12, side, 28i64..36, 1i64..6, tif, any::<bool>()).prop_map(
                |(account, oid, side, price, qty, tif, market)| Command::Place(NewOrder {
                    account,
                    market: 5,
                    oid,
                    side,
                    price: (!market).then_some(price),
                    qty,
                    tif: if market { TimeInForce::Ioc } else { tif },
                    stp: SelfTradePrevention::CancelMaker,
                    reduce_only: false,
                })
            ),
            2 => (1u64..=3, 1u64..12, 28i64..36, 1i64..6).prop_map(|(account, oid, price, qty)| {
                Command::Modify { account, market: 5, oid, price, qty }
            }),
            1 => (1u64..=3, 1u64..12).prop_map(|(account, oid)| Command::Cancel {
                account,
                market: 5,
                oid
            }),
            1 => (1u64..=4, 1u32..=2, 1i64..500).prop_map(|(account, asset, amount)| {
                Command::Deposit { account, asset, amount }
            }),
        ]
    }

    /// A spot order entering, changing or leaving the book touches its own record only (its
    /// owner's locked amount and open-order count are derived from the orders); a deposit
    /// touches the account. The root moves every time and stays equal to the full hash.
    #[test]
    fn spot_order_changes_touch_the_order_only() {
        let (mut engine, _) = setup();
        let mut out = Vec::new();
        let mut root = engine.commit();
        let place = Command::Place(NewOrder {
            account: 1,
            market: 5,
            oid: 7,
            side: Side::Buy,
            price: Some(30),
            qty: 4,
            tif: TimeInForce::Gtc,
            stp: SelfTradePrevention::CancelMaker,
            reduce_only: false,
        });
        let steps = [
            (place, (1, 0)),
            (
                Command::Modify {
                    account: 1,
                    market: 5,
                    oid: 7,
                    price: 30,
                    qty: 2,
                },
                (1, 0),
            ),
            (
                Command::Modify {
                    account: 1,
                    market: 5,
                    oid: 7,
                    price: 31,
                    qty: 3,
                },
                (1, 0),
            ),
            (
                Command::Cancel {
                    account: 1,
                    market: 5,
                    oid: 7,
                },
                (1, 0),
            ),
            (
                Command::Deposit {
                    account: 2,
                    asset: 1,
                    amount: 5,
                },
                (0, 1),
            ),
        ];
        for (command, touched) in steps {
            out.clear();
            engine.step(&command, &mut out);
            assert!(
                !out.iter()
                    .any(|event| matches!(event, Event::Rejected { .. })),
                "{command:?}"
            );
            assert_eq!(engine.pending_records(), touched, "{command:?}");
            let next = engine.commit();
            assert_ne!(next, root, "{command:?}");
            assert_eq!(next, engine.state_hash());
            root = next;
        }
    }

    /// Past 4,096 slots the touched-slot bitmap has more than one summary word: a commit
    /// still folds every touched slot (new, changed and freed ones) and equals the full hash.
    #[test]
    fn commit_covers_slots_past_one_summary_word() {
        let (mut engine, _) = setup_with(6_000);
        let mut out = Vec::new();
        let order = |oid: u64, side| {
            Command::Place(NewOrder {
                account: 1 + oid % 3,
                market: 5,
                oid,
                side,
                price: Some(if side == Side::Buy { 20 } else { 40 }),
                qty: 1,
                tif: TimeInForce::Gtc,
                stp: SelfTradePrevention::CancelMaker,
                reduce_only: false,
            })
        };
        for oid in 0..5_000u64 {
            let side = if oid % 2 == 0 { Side::Buy } else { Side::Sell };
            engine.step(&order(oid, side), &mut out);
        }
        assert_eq!(engine.resting_orders(), 5_000);
        assert_eq!(engine.pending_records().0, 5_000);
        assert_eq!(engine.commit(), engine.state_hash());
        for oid in (0..5_000u64).step_by(3) {
            engine.step(
                &Command::Cancel {
                    account: 1 + oid % 3,
                    market: 5,
                    oid,
                },
                &mut out,
            );
        }
        assert!(
            !out.iter()
                .any(|event| matches!(event, Event::Rejected { .. })),
            "a command was rejected"
        );
        assert_eq!(engine.pending_records().0, 1_667);
        assert_eq!(engine.commit(), engine.state_hash());
        assert_eq!(engine.pending_records(), (0, 0));
    }

    /// The asset and spot-market records, hashed 16 to a group, sum to what hashing each
    /// one's bytes alone gives, across several full groups and a partial last one.
    #[test]
    fn asset_and_market_records_past_one_group_sum_as_alone() {
        let mut engine: Engine = Engine::new(EngineConfig {
            max_resting_orders: 16,
            max_open_orders_per_account: 16,
        });
        let mut out = Vec::new();
        for asset in 1..=20 {
            engine.step(&Command::CreateAsset { asset }, &mut out);
            engine.step(
                &Command::Deposit {
                    account: 1,
                    asset,
                    amount: i64::from(asset) * 1_000,
                },
                &mut out,
            );
        }
        for market in 1..=19 {
            engine.step(
                &Command::CreateMarket(MarketSpec {
                    market,
                    base: market,
                    quote: market + 1,
                    base_units_per_lot: i64::from(market),
                    quote_units_per_tick_lot: 3,
                    min_lots: 1,
                    max_price_ticks: 64,
                    maker_fee_bps: -3,
                    taker_fee_bps: 9,
                }),
                &mut out,
            );
        }
        assert!(
            !out.iter()
                .any(|event| matches!(event, Event::Rejected { .. })),
            "{out:?}"
        );
        let mut expected = Lanes::ZERO;
        for asset in &engine.assets {
            let mut bytes = b"A".to_vec();
            bytes.extend_from_slice(&asset.id.to_le_bytes());
            bytes.extend_from_slice(&asset.fee_pool.to_le_bytes());
            bytes.extend_from_slice(&asset.supply.to_le_bytes());
            expected.add(Lanes::of(blake3::hash(&bytes)));
        }
        for market in &engine.markets {
            let mut bytes = b"M".to_vec();
            bytes.extend_from_slice(&market.spec.to_le_bytes());
            expected.add(Lanes::of(blake3::hash(&bytes)));
        }
        let mut lanes = Lanes::ZERO;
        add_assets_and_markets(
            &mut Group::new(),
            &mut lanes,
            &engine.assets,
            &engine.markets,
            &engine.perps,
        );
        assert_eq!((engine.assets.len(), engine.markets.len()), (20, 19));
        assert_eq!(lanes, expected);
        assert_eq!(engine.commit(), engine.state_hash());
    }

    proptest! {
        /// The incremental commitment always equals the from-scratch hash, on both ladders, and
        /// any change of state changes it.
        #[test]
        fn incremental_commitment_equals_full_hash(
            commands in proptest::collection::vec(command(), 1..120),
            commit_every in 1usize..8,
        ) {
            let (mut fast, mut slow) = setup();
            let mut out = Vec::new();
            let mut previous = (fast.commit(), fast.snapshot());
            for (i, command) in commands.iter().enumerate() {
                out.clear();
                fast.step(command, &mut out);
                slow.step(command, &mut Vec::new());
                if i % commit_every == 0 {
                    let root = fast.commit();
                    prop_assert_eq!(root, fast.state_hash());
                    prop_assert_eq!(root, slow.state_hash());
                    // The snapshot is the whole state: the root moves exactly when it does.
                    let snapshot = fast.snapshot();
                    prop_assert_eq!(root == previous.0, snapshot == previous.1);
                    previous = (root, snapshot);
                }
            }
            prop_assert_eq!(fast.commit(), slow.commit());
            let restored = Engine::<ArrayLadder>::restore(&fast.snapshot()).unwrap();
            prop_assert_eq!(restored.state_hash(), fast.state_hash());
        }
    }
}
