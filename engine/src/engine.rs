//! The engine state machine: assets, accounts, markets with their books, and the order store.
//!
//! Layout: every resting order lives in one slab (`orders`, one allocation grown by an eighth
//! when full, up to `max_resting_orders`, see `store`) and is threaded on two intrusive doubly linked lists:
//! its price level's FIFO and its account's list (in entry order, except that a spot order
//! re-entering through a modify keeps its place: `Engine::keeps_account_place`). Levels are found through a
//! [`PriceLadder`] per book side. The index from `(account, oid)` to slab slot (`OidIndex`,
//! open addressing over 4-byte entries, the keys read from the slab) and the id -> dense index
//! maps of assets, markets and accounts (`IdIndex`, open addressing over (id, index) pairs)
//! are the hash tables of the data path, used for lookups only, never iterated, so no output
//! depends on where their entries sit.

use crate::ladder::{ArrayLadder, PriceLadder, NIL};
use crate::types::*;

#[cfg(target_arch = "x86_64")]
mod account_words;
mod commit_tail;
mod commitment;
mod dirty_slots;
mod one_block;
#[cfg(target_arch = "x86_64")]
mod order_gather;
mod perp;
mod prefetch;
mod record_ids;
mod snapshot;
mod store;
use commitment::Lanes;
pub use perp::{LiquidationStats, MarginView, PerpMarketView, PositionView, LIQUIDATION_OID};
use perp::{PerpAccount, PerpMarket};
pub use snapshot::{EngineImage, SnapshotError};
use store::{IdIndex, OidIndex, SlotVec};

/// The largest `max_price_ticks` a market may have (keeps ladders at a few MiB per side).
pub const MAX_PRICE_TICKS_LIMIT: Ticks = 1 << 28;

/// A resting order as seen from outside the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderView {
    /// The owner.
    pub account: AccountId,
    /// The client order id.
    pub oid: OrderId,
    /// Buy or sell.
    pub side: Side,
    /// Limit price in ticks.
    pub price: Ticks,
    /// Remaining size in lots.
    pub remaining: Lots,
    /// The order's self-trade prevention mode (used when it is re-entered by a modify).
    pub stp: SelfTradePrevention,
    /// Whether it was placed as ALO (stays post-only through modifies).
    pub post_only: bool,
    /// Perp markets: whether it is reduce-only.
    pub reduce_only: bool,
}

/// One resting order in the slab: 56 bytes. The links come first, so unlinking a neighbour
/// touches only its first 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct OrderNode {
    /// Previous (older) order at the same level, or NIL.
    prev: u32,
    /// Next (newer) order at the same level, or NIL. Also links the free list.
    next: u32,
    /// Previous order in the owner's entry order, or NIL.
    account_prev: u32,
    /// Next order in the owner's entry order, or NIL.
    account_next: u32,
    /// Dense index of the owner.
    account: u32,
    /// Dense index of the market.
    market: u32,
    /// Limit price in ticks (at most `MAX_PRICE_TICKS_LIMIT` = 2^28, so it fits).
    price_ticks: u32,
    side: Side,
    stp: SelfTradePrevention,
    /// `POST_ONLY` | `REDUCE_ONLY`.
    flags: u8,
    /// Perp markets: the margin table row its reserve uses (fixed when it entered).
    tier: u8,
    remaining: Lots,
    oid: OrderId,
    /// Position in the engine-wide order of (re-)entries: orders levels (a snapshot
    /// re-inserts orders in this order to rebuild them) and an account's orders wherever
    /// their order matters (its list is sorted by it there: `Engine::keeps_account_place`).
    entry: u64,
}

/// `OrderNode::flags`: placed as ALO (stays post-only through modifies).
const POST_ONLY: u8 = 1;
/// `OrderNode::flags`: perp markets, reduce-only (reserves its fee only).
const REDUCE_ONLY: u8 = 2;
const _: () = assert!(std::mem::size_of::<OrderNode>() == 56);
const _: () = assert!(MAX_PRICE_TICKS_LIMIT <= u32::MAX as Ticks);

impl OrderNode {
    const VACANT: OrderNode = OrderNode {
        prev: NIL,
        next: NIL,
        account_prev: NIL,
        account_next: NIL,
        account: NIL,
        market: NIL,
        price_ticks: 0,
        side: Side::Buy,
        stp: SelfTradePrevention::CancelMaker,
        flags: 0,
        tier: 0,
        remaining: 0,
        oid: 0,
        entry: 0,
    };

    /// Limit price in ticks.
    #[inline]
    fn price(&self) -> Ticks {
        Ticks::from(self.price_ticks)
    }

    /// Whether it was placed as ALO.
    #[inline]
    fn post_only(&self) -> bool {
        self.flags & POST_ONLY != 0
    }

    /// Perp markets: whether it is reduce-only.
    #[inline]
    fn reduce_only(&self) -> bool {
        self.flags & REDUCE_ONLY != 0
    }
}

/// Market parameters in the form the data path uses (dense asset indices, widened units).
#[derive(Clone, Copy, Debug)]
struct MarketParams {
    id: MarketId,
    base: usize,
    quote: usize,
    base_units_per_lot: i64,
    quote_units_per_tick_lot: i64,
    min_lots: Lots,
    max_price: Ticks,
    maker_fee_bps: i32,
    taker_fee_bps: i32,
    /// Fee rate a buy reserve covers: max(taker, maker, 0).
    reserve_fee_bps: i32,
    /// Index into `Engine::perps` for a perp market, NIL for spot.
    perp: u32,
}

impl MarketParams {
    fn notional(&self, price: Ticks, lots: Lots) -> i128 {
        price as i128 * lots as i128 * self.quote_units_per_tick_lot as i128
    }

    /// Quote reserved per lot of a buy at `price`: notional plus the fee rounded up per lot.
    #[inline]
    fn buy_unit_cost(&self, price: Ticks) -> i128 {
        // In 64 bits when it fits (a lot's notional always does for prices up to the market's
        // maximum, checked at its creation; its fee product nearly always): i128 products
        // and the checks of `ceil_div`'s fast path cost ~20 instructions per call.
        if let Some(cost) = self.buy_unit_cost_u64(price) {
            return i128::from(cost);
        }
        let notional = self.notional(price, 1);
        notional + ceil_div(notional * self.reserve_fee_bps as i128, BPS_DENOMINATOR)
    }

    /// [`MarketParams::buy_unit_cost`] in 64 bits; `None` if a product does not fit. Unsigned:
    /// every factor is >= 0 (limit prices >= 1, units >= 1, reserve fee rates >= 0), and an
    /// unsigned division by a constant is a multiply and a shift, without sign fix-ups.
    #[inline(always)]
    fn buy_unit_cost_u64(&self, price: Ticks) -> Option<u64> {
        debug_assert!(price >= 1 && self.reserve_fee_bps >= 0);
        let notional = (price as u64).checked_mul(self.quote_units_per_tick_lot as u64)?;
        let fee = notional.checked_mul(self.reserve_fee_bps as u64)?;
        notional.checked_add(fee.div_ceil(BPS_DENOMINATOR as u64))
    }

    /// What an order of `side` reserves at `price` with `lots` remaining, in 64 bits (`None`
    /// if a product does not fit; the i128 path then decides). Always inlined: called on
    /// every re-entry, twice, where a call costs as much as the arithmetic.
    #[inline(always)]
    fn reserve_u64(&self, side: Side, price: Ticks, lots: Lots) -> Option<u64> {
        // Both computed, then selected without a branch (see `side_mask`).
        let buy = self.buy_unit_cost_u64(price)?;
        let sell = self.base_units_per_lot as u64;
        let per_lot = std::hint::select_unpredictable(side == Side::Buy, buy, sell);
        per_lot.checked_mul(lots as u64)
    }

    /// Units reserved per lot of an order (quote for buys, base for sells). Both computed,
    /// then selected without a branch (see `side_mask`): on the size-cut and cancel paths the
    /// side was a branch mispredicted about half the time.
    #[inline]
    fn reserve_per_lot(&self, side: Side, price: Ticks) -> i128 {
        let buy = self.buy_unit_cost(price);
        let sell = self.base_units_per_lot as i128;
        std::hint::select_unpredictable(side == Side::Buy, buy, sell)
    }

    /// The asset an order of `side` reserves.
    #[inline]
    fn reserve_asset(&self, side: Side) -> usize {
        std::hint::select_unpredictable(side == Side::Buy, self.quote, self.base)
    }

    /// Ladder key of a price on a side: the best price always has the lowest key.
    #[inline]
    fn key(&self, side: Side, price: Ticks) -> u32 {
        // Sell: `price`; buy: `max_price - price`; as arithmetic (see `side_mask`).
        let flip = side_mask(side);
        ((price ^ flip) - flip + (self.max_price & flip)) as u32
    }

    /// The price of a ladder key on a side (the inverse of [`MarketParams::key`]).
    #[inline]
    fn price(&self, side: Side, key: u32) -> Ticks {
        let flip = side_mask(side);
        (Ticks::from(key) ^ flip) - flip + (self.max_price & flip)
    }

    /// What a market buy pays for `lots` at `price`, taker fee included.
    fn market_buy_cost(&self, price: Ticks, lots: Lots) -> i128 {
        let notional = self.notional(price, lots);
        notional + fee(notional, self.taker_fee_bps)
    }

    /// The most lots a market buy with `available` quote can pay for at `price`.
    fn affordable_lots(&self, price: Ticks, available: Units) -> Lots {
        let per_lot = self.notional(price, 1) * (BPS_DENOMINATOR + self.taker_fee_bps as i128);
        let mut lots = (available as i128 * BPS_DENOMINATOR / per_lot) as Lots;
        // Rounding the fee up can make the estimate one lot too many, never too few.
        while lots > 0 && self.market_buy_cost(price, lots) > available as i128 {
            lots -= 1;
        }
        lots
    }
}

/// The `(account index, oid)` key of the order in `slot`: what the oid index compares.
#[inline]
fn slot_key(orders: &SlotVec<OrderNode>, slot: u32) -> (u32, OrderId) {
    let node = &orders[slot as usize];
    (node.account, node.oid)
}

/// `ceil(a / b)` for `a >= 0`, `b > 0`.
fn ceil_div(a: i128, b: i128) -> i128 {
    debug_assert!(a >= 0 && b > 0);
    // 128-bit division is a library call; almost every value here fits 64 bits.
    if let (Ok(a), Ok(b)) = (i64::try_from(a), i64::try_from(b)) {
        if let Some(sum) = a.checked_add(b - 1) {
            return (sum / b) as i128;
        }
    }
    (a + b - 1) / b
}

/// The fee on `notional` at `bps`, rounded in the exchange's favour (see docs/engine.md).
fn fee(notional: i128, bps: i32) -> i128 {
    if bps == 0 {
        return 0;
    }
    let magnitude = notional * (bps as i128).abs();
    if bps > 0 {
        ceil_div(magnitude, BPS_DENOMINATOR)
    } else {
        match i64::try_from(magnitude) {
            Ok(m) => -((m / BPS_DENOMINATOR as i64) as i128),
            Err(_) => -(magnitude / BPS_DENOMINATOR),
        }
    }
}

/// Narrows a value that an engine invariant keeps within i64 (all reserves and fills are
/// bounded by balances, and balances by the asset's supply, which is checked on deposit).
fn to_units(value: i128) -> Units {
    Units::try_from(value).expect("invariant: amounts are bounded by an i64 supply")
}

struct MarketState<L> {
    params: MarketParams,
    spec: MarketSpec,
    /// The two sides' ladders, indexed by [`side_index`]: selected without a branch (the
    /// next order's side is as good as random, so a branch on it is mispredicted half the time).
    ladders: [L; 2],
}

impl<L: PriceLadder> MarketState<L> {
    fn ladder(&self, side: Side) -> &L {
        &self.ladders[side_index(side)]
    }

    fn ladder_mut(&mut self, side: Side) -> &mut L {
        &mut self.ladders[side_index(side)]
    }

    /// The best price on a side, if any.
    fn best_price(&self, side: Side) -> Option<Ticks> {
        self.ladder(side)
            .first()
            .map(|key| self.params.price(side, key))
    }

    /// Whether a limit order at `price` on `side` would cross the opposite best.
    fn would_cross(&self, side: Side, price: Ticks) -> bool {
        match self.best_price(side.opposite()) {
            None => false,
            Some(best) => crosses(side, price, best),
        }
    }
}

/// Whether a taker on `side` with `limit` trades against a maker at `maker_price`.
#[inline]
fn crosses(side: Side, limit: Ticks, maker_price: Ticks) -> bool {
    // Buy: maker_price <= limit; sell: maker_price >= limit (see `side_mask`).
    let flip = side_mask(side);
    ((maker_price - limit) ^ flip) - flip >= 0
}

/// Index of a side's ladder in `MarketState::ladders`.
#[inline]
fn side_index(side: Side) -> usize {
    usize::from(side == Side::Sell)
}

/// All ones for a buy, zero for a sell: `(x ^ mask) - mask` is `-x` for buys and `x` for
/// sells. Side-dependent arithmetic on the data path goes through this instead of a branch,
/// which the next order's side (as good as random) would mispredict half the time.
#[inline]
fn side_mask(side: Side) -> i64 {
    -i64::from(side == Side::Buy)
}

struct AssetState {
    id: AssetId,
    fee_pool: Units,
    /// Deposits minus withdrawals.
    supply: Units,
}

struct AccountState {
    id: AccountId,
    balances: Vec<Balance>,
    open_orders: u32,
    first_order: u32,
    last_order: u32,
    /// Changed since the last commitment.
    dirty: bool,
    /// This account's record hash as of the last commitment.
    committed: Lanes,
    /// Perpetuals: collateral, order margin, positions.
    perp: PerpAccount,
    /// Perp state changed during the current command (re-keyed at its end).
    perp_touched: bool,
}

/// What resting orders reserve, recomputed from the orders (`Engine::check_invariants`).
struct Reserves {
    /// Orders counted.
    orders: u32,
    /// Spot reserves by account, then asset.
    locked: Vec<Vec<i128>>,
    /// Perp order margin by account.
    order_margin: Vec<i128>,
}

impl Reserves {
    fn new(accounts: usize, assets: usize) -> Reserves {
        Reserves {
            orders: 0,
            locked: vec![vec![0; assets]; accounts],
            order_margin: vec![0; accounts],
        }
    }

    /// Counts `node` and adds what it reserves.
    fn add<L: PriceLadder>(&mut self, engine: &Engine<L>, node: &OrderNode) {
        let params = &engine.markets[node.market as usize].params;
        let reserve = engine.node_reserve_per_lot(node) * node.remaining as i128;
        if params.perp == NIL {
            self.locked[node.account as usize][params.reserve_asset(node.side)] += reserve;
        } else {
            self.order_margin[node.account as usize] += reserve;
        }
        self.orders += 1;
    }
}

/// The incoming side of a match.
struct Taker {
    account: u32,
    oid: OrderId,
    side: Side,
    /// `None` for market orders.
    limit: Option<Ticks>,
    remaining: Lots,
    stp: SelfTradePrevention,
    /// Units reserved per remaining lot (0 for a market buy, which reserves nothing).
    reserve_per_lot: i128,
    /// Perp markets: reduce-only.
    reduce_only: bool,
    /// Perp markets: margin table row of the reserve.
    tier: u8,
}

/// Why matching stopped.
#[derive(PartialEq, Eq)]
enum MatchEnd {
    /// Filled, or no more crossing liquidity, or a market buy ran out of quote.
    Done,
    /// Self-trade prevention stopped the taker.
    SelfTrade,
    /// Perps: the next fill would take the taker's bucket past its bankruptcy price
    /// (docs/perps.md, "Fill-time limits"); the remainder never rests.
    Bankrupt,
}

/// The NexusCore spot engine. `L` is the price index; [`ArrayLadder`] in production.
pub struct Engine<L: PriceLadder = ArrayLadder> {
    config: EngineConfig,
    assets: Vec<AssetState>,
    asset_index: IdIndex,
    markets: Vec<MarketState<L>>,
    market_index: IdIndex,
    accounts: Vec<AccountState>,
    account_index: IdIndex,
    orders: SlotVec<OrderNode>,
    free_head: u32,
    resting: u32,
    /// Entries (placements and re-entries) so far; the next resting order's `entry`.
    entries: u64,
    /// `(account index, oid)` -> slot of every resting (or detached re-entering) order.
    open: OidIndex,
    /// Incremental state commitment: see `commitment`.
    commitment: commitment::Tracker,
    /// Whether price levels whose size changes are logged for [`Engine::drain_level_changes`].
    track_levels: bool,
    /// Levels changed since the last drain: (market index, side, ladder key).
    level_log: Vec<(u32, Side, u32)>,
    /// Perp markets' state, by perp index (`MarketParams::perp`).
    perps: Vec<PerpMarket>,
    /// The asset index every perp market settles in, once one exists.
    collateral: Option<u32>,
    /// Dense index of the insurance account, NIL before the first perp market.
    insurance: u32,
    /// Accounts whose perp state changed in the current command.
    perp_touched: Vec<u32>,
    /// Reused buffer of liquidation candidates.
    liq_scratch: Vec<u32>,
    /// Reused buffer of order slots (`cancel_all`).
    order_scratch: Vec<u32>,
    /// Liquidation counters.
    stats: LiquidationStats,
    /// What the isolated position being liquidated handed back to cross collateral when it
    /// went flat, `(account, perp, units)`: read and reset by its liquidation fee (not state).
    isolated_returned: Option<(u32, u32, Units)>,
    /// The account being liquidated, NIL outside a liquidation (not state).
    liquidating: u32,
    /// What the insurance fund's collateral must be: moved only by fees, backstop takeovers
    /// and its own positions' PnL, cover-to-zero and its own transfers. Debug accounting
    /// for `check_invariants`, not state (re-based on restore).
    insurance_ledger: i128,
    /// What the last command lacked, if it was refused for insufficient balance or margin
    /// (reset by every `step`; not state).
    shortfall: Option<Shortfall>,
}

/// What a command refused with `insufficient_balance` or `insufficient_margin` needed, and
/// what the account had for it, in units of `asset` ([`Engine::last_shortfall`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The asset: the reserve asset of a spot order, the collateral asset for perps.
    pub asset: AssetId,
    /// What the command needed (a spot order's reserve, a perp order's margin, an amount).
    pub needed: i128,
    /// What the account could spend on it (available balance, free collateral); may be
    /// negative for margin.
    pub available: i128,
}

impl<L: PriceLadder> Engine<L> {
    /// An empty engine sized by `config`. The `(account, oid)` index is allocated here, once;
    /// the order slab grows (by an eighth when full) with the most orders ever resting, up to
    /// the configured maximum (never shrinks).
    pub fn new(config: EngineConfig) -> Self {
        let capacity = config.max_resting_orders as usize;
        Engine {
            config,
            assets: Vec::new(),
            asset_index: IdIndex::default(),
            markets: Vec::new(),
            market_index: IdIndex::default(),
            accounts: Vec::new(),
            account_index: IdIndex::default(),
            orders: SlotVec::new(capacity, OrderNode::VACANT),
            free_head: NIL,
            resting: 0,
            entries: 0,
            open: OidIndex::with_capacity(config.max_resting_orders),
            commitment: commitment::Tracker::with_capacity(capacity),
            track_levels: false,
            level_log: Vec::new(),
            perps: Vec::new(),
            collateral: None,
            insurance: NIL,
            perp_touched: Vec::new(),
            liq_scratch: Vec::new(),
            order_scratch: Vec::new(),
            stats: LiquidationStats::default(),
            isolated_returned: None,
            liquidating: NIL,
            insurance_ledger: 0,
            shortfall: None,
        }
    }

    /// Turns the price-level change log on or off (off by default). When on, every level
    /// whose total size changes is noted, and the caller must call
    /// [`Engine::drain_level_changes`] regularly (after every command, say) to keep the log
    /// short. It feeds the L2 market-data feed; it is not part of the state.
    pub fn track_level_changes(&mut self, on: bool) {
        self.track_levels = on;
        self.level_log.clear();
        if on {
            // Enough for a sweep through many levels without growing on the data path.
            self.level_log.reserve(4096);
        }
    }

    /// Appends to `out` the current size of every price level changed since the last drain,
    /// once each, ordered by (market, side, price), and empties the log. `lots == 0` means the
    /// level is gone.
    pub fn drain_level_changes(&mut self, out: &mut Vec<LevelChange>) {
        self.level_log.sort_unstable();
        self.level_log.dedup();
        let first = out.len();
        for &(market_index, side, key) in &self.level_log {
            let market = &self.markets[market_index as usize];
            out.push(LevelChange {
                market: market.spec.market,
                side,
                price: market.params.price(side, key),
                lots: market
                    .ladder(side)
                    .get(key)
                    .map_or(0, |level| level.total_lots),
            });
        }
        self.level_log.clear();
        out[first..].sort_unstable_by_key(|c| (c.market, c.side, c.price));
    }

    /// Logs a level change if tracking is on.
    #[inline]
    fn note_level(&mut self, market_index: usize, side: Side, key: u32) {
        if self.track_levels {
            self.level_log.push((market_index as u32, side, key));
        }
    }

    /// The limits this engine was sized with.
    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// Applies one command, appending what happened to `out`.
    pub fn step(&mut self, command: &Command, out: &mut Vec<Event>) {
        self.shortfall = None;
        match *command {
            Command::CreateAsset { asset } => self.create_asset(asset, out),
            Command::CreateMarket(spec) => self.create_market(spec, out),
            Command::Deposit {
                account,
                asset,
                amount,
            } => self.deposit(account, asset, amount, out),
            Command::Withdraw {
                account,
                asset,
                amount,
            } => self.withdraw(account, asset, amount, out),
            Command::Place(order) => self.place(&order, out),
            Command::Cancel {
                account,
                market,
                oid,
            } => self.cancel(account, market, oid, out),
            Command::CancelAll { account, market } => self.cancel_all(account, market, out),
            Command::Modify {
                account,
                market,
                oid,
                price,
                qty,
            } => self.modify(account, market, oid, price, qty, out),
            Command::CreatePerpMarket(ref spec) => self.create_perp_market(**spec, out),
            Command::TransferCollateral { account, amount } => {
                self.transfer_collateral(account, amount, out)
            }
            Command::SetLeverage {
                account,
                market,
                leverage,
                isolated,
            } => self.set_leverage(account, market, leverage, isolated, out),
            Command::IsolatedMargin {
                account,
                market,
                amount,
            } => self.isolated_margin(account, market, amount, out),
            Command::Oracle {
                market,
                ref prices,
                count,
            } => self.oracle(market, prices, count, out),
            Command::Funding { market } => self.funding(market, out),
        }
        if !self.perp_touched.is_empty() {
            self.finish_perp_command(out);
        }
    }

    // ---- administration -------------------------------------------------------------

    fn reject_admin(out: &mut Vec<Event>, account: AccountId, reason: RejectReason) {
        out.push(Event::Rejected {
            account,
            oid: None,
            reason,
        });
    }

    fn create_asset(&mut self, asset: AssetId, out: &mut Vec<Event>) {
        if self.asset_index.contains_key(&asset) {
            return Self::reject_admin(out, 0, RejectReason::AlreadyExists);
        }
        self.asset_index.insert(asset, self.assets.len() as u32);
        self.assets.push(AssetState {
            id: asset,
            fee_pool: 0,
            supply: 0,
        });
        for index in 0..self.accounts.len() {
            self.accounts[index].balances.push(Balance::default());
            self.touch_account(index as u32);
        }
    }

    fn create_market(&mut self, spec: MarketSpec, out: &mut Vec<Event>) {
        if self.market_index.contains_key(&spec.market) {
            return Self::reject_admin(out, 0, RejectReason::AlreadyExists);
        }
        let (Some(&base), Some(&quote)) = (
            self.asset_index.get(&spec.base),
            self.asset_index.get(&spec.quote),
        ) else {
            return Self::reject_admin(out, 0, RejectReason::UnknownAsset);
        };
        let fees_valid = spec.taker_fee_bps >= 0
            && spec.taker_fee_bps < 10_000
            && spec.maker_fee_bps < 10_000
            && spec.maker_fee_bps >= -spec.taker_fee_bps;
        let top_notional = spec.max_price_ticks as i128 * spec.quote_units_per_tick_lot as i128;
        let valid = base != quote
            && spec.base_units_per_lot >= 1
            && spec.quote_units_per_tick_lot >= 1
            && spec.min_lots >= 1
            && (1..=MAX_PRICE_TICKS_LIMIT).contains(&spec.max_price_ticks)
            && fees_valid
            && top_notional <= i64::MAX as i128;
        if !valid {
            return Self::reject_admin(out, 0, RejectReason::InvalidMarket);
        }
        let max_fee_bps = spec.taker_fee_bps.max(spec.maker_fee_bps).max(0);
        let params = MarketParams {
            id: spec.market,
            base: base as usize,
            quote: quote as usize,
            base_units_per_lot: spec.base_units_per_lot,
            quote_units_per_tick_lot: spec.quote_units_per_tick_lot,
            min_lots: spec.min_lots,
            max_price: spec.max_price_ticks,
            maker_fee_bps: spec.maker_fee_bps,
            taker_fee_bps: spec.taker_fee_bps,
            reserve_fee_bps: max_fee_bps,
            perp: NIL,
        };
        let max_key = spec.max_price_ticks as u32;
        self.market_index
            .insert(spec.market, self.markets.len() as u32);
        self.markets.push(MarketState {
            params,
            spec,
            ladders: [L::with_max_key(max_key), L::with_max_key(max_key)],
        });
    }

    fn deposit(&mut self, account: AccountId, asset: AssetId, amount: Units, out: &mut Vec<Event>) {
        let Some(&asset_index) = self.asset_index.get(&asset) else {
            return Self::reject_admin(out, account, RejectReason::UnknownAsset);
        };
        if amount <= 0 {
            return Self::reject_admin(out, account, RejectReason::InvalidQty);
        }
        let asset_state = &mut self.assets[asset_index as usize];
        let Some(supply) = asset_state.supply.checked_add(amount) else {
            return Self::reject_admin(out, account, RejectReason::Overflow);
        };
        asset_state.supply = supply;
        let index = self.account_for(account);
        self.touch_account(index);
        // Cannot overflow: every balance is at most the asset's supply.
        self.accounts[index as usize].balances[asset_index as usize].total += amount;
    }

    fn withdraw(
        &mut self,
        account: AccountId,
        asset: AssetId,
        amount: Units,
        out: &mut Vec<Event>,
    ) {
        let Some(&asset_index) = self.asset_index.get(&asset) else {
            return Self::reject_admin(out, account, RejectReason::UnknownAsset);
        };
        let Some(&index) = self.account_index.get(&account) else {
            return Self::reject_admin(out, account, RejectReason::UnknownAccount);
        };
        if amount <= 0 {
            return Self::reject_admin(out, account, RejectReason::InvalidQty);
        }
        let balance = &mut self.accounts[index as usize].balances[asset_index as usize];
        if balance.available() < amount {
            let available = balance.available();
            self.note_shortfall(asset_index as usize, amount as i128, available as i128);
            return Self::reject_admin(out, account, RejectReason::InsufficientBalance);
        }
        balance.total -= amount;
        self.assets[asset_index as usize].supply -= amount;
        self.touch_account(index);
    }

    // ---- orders ----------------------------------------------------------------------

    fn place(&mut self, order: &NewOrder, out: &mut Vec<Event>) {
        let reject = |out: &mut Vec<Event>, reason| {
            out.push(Event::Rejected {
                account: order.account,
                oid: Some(order.oid),
                reason,
            })
        };
        let Some(&market_index) = self.market_index.get(&order.market) else {
            return reject(out, RejectReason::UnknownMarket);
        };
        let Some(&account) = self.account_index.get(&order.account) else {
            return reject(out, RejectReason::UnknownAccount);
        };
        let market = &self.markets[market_index as usize];
        let params = market.params;
        if order.price.is_none() && order.tif != TimeInForce::Ioc {
            return reject(out, RejectReason::InvalidTif);
        }
        if order.qty <= 0 {
            return reject(out, RejectReason::InvalidQty);
        }
        if let Some(price) = order.price {
            if price < 1 || price > params.max_price {
                return reject(out, RejectReason::InvalidPrice);
            }
        }
        if order.qty < params.min_lots {
            return reject(out, RejectReason::MinQty);
        }
        if self.find_slot(account, order.account, order.oid).is_some() {
            return reject(out, RejectReason::DuplicateOid);
        }
        if params.perp == NIL && order.reduce_only {
            return reject(out, RejectReason::ReduceOnly);
        }
        let may_rest =
            order.price.is_some() && matches!(order.tif, TimeInForce::Gtc | TimeInForce::Alo);
        if may_rest {
            if self.accounts[account as usize].open_orders
                >= self.config.max_open_orders_per_account
            {
                return reject(out, RejectReason::TooManyOrders);
            }
            if self.resting >= self.config.max_resting_orders {
                return reject(out, RejectReason::BookFull);
            }
        }
        if let (TimeInForce::Alo, Some(price)) = (order.tif, order.price) {
            if market.would_cross(order.side, price) {
                return reject(out, RejectReason::PostOnlyWouldCross);
            }
        }
        let (limit, qty, reserve_per_lot, tier) = if params.perp != NIL {
            match self.perp_order_terms(&params, account, order) {
                Ok((limit, qty, reserve_per_lot, tier)) => {
                    (Some(limit), qty, reserve_per_lot, tier)
                }
                Err(reason) => return reject(out, reason),
            }
        } else {
            // On the price first: matching on the side first was a branch mispredicted about
            // half the time (`reserve_per_lot` selects by side without one).
            let reserve_per_lot = match order.price {
                Some(price) => params.reserve_per_lot(order.side, price),
                None if order.side == Side::Buy => 0,
                None => params.base_units_per_lot as i128,
            };
            let reserve = reserve_per_lot * order.qty as i128;
            let balances = &self.accounts[account as usize].balances;
            let available = balances[params.reserve_asset(order.side)].available() as i128;
            let needed = match order.price {
                None if order.side == Side::Buy => market
                    .best_price(Side::Sell)
                    .map_or(0, |best_ask| params.market_buy_cost(best_ask, 1)),
                _ => reserve,
            };
            if needed > available {
                self.note_shortfall(params.reserve_asset(order.side), needed, available);
                return reject(out, RejectReason::InsufficientBalance);
            }
            (order.price, order.qty, reserve_per_lot, 0)
        };
        let reserve = reserve_per_lot * qty as i128;
        let mut taker = Taker {
            account,
            oid: order.oid,
            side: order.side,
            limit,
            remaining: qty,
            stp: order.stp,
            reserve_per_lot,
            reduce_only: order.reduce_only,
            tier,
        };
        if order.tif == TimeInForce::Fok && !self.fok_fillable(market_index as usize, &taker) {
            return reject(out, RejectReason::FokUnfilled);
        }
        out.push(Event::Accepted {
            market: order.market,
            account: order.account,
            oid: order.oid,
        });
        self.add_lock(account, market_index as usize, order.side, reserve);
        // A limit order that does not cross goes straight to the book (most new orders):
        // `match_taker` would stop at its first check, after copying the market's parameters.
        let crosses = limit
            .is_none_or(|price| self.markets[market_index as usize].would_cross(order.side, price));
        let end = if crosses {
            self.match_taker(market_index as usize, &mut taker, out)
        } else {
            MatchEnd::Done
        };
        let rest = order.tif != TimeInForce::Ioc && order.tif != TimeInForce::Fok;
        self.finish_taker(
            market_index as usize,
            taker,
            end,
            rest,
            order.tif == TimeInForce::Alo,
            None,
            out,
        );
    }

    /// Dry run of a FOK order: could it fill completely right now? Mirrors `match_taker`.
    fn fok_fillable(&self, market_index: usize, taker: &Taker) -> bool {
        let market = &self.markets[market_index];
        let mut perp_sim = perp::FillSim::for_taker(taker);
        let maker_side = taker.side.opposite();
        let ladder = market.ladder(maker_side);
        let mut needed = taker.remaining;
        let mut key = ladder.first();
        while let Some(k) = key {
            let price = market.params.price(maker_side, k);
            if let Some(limit) = taker.limit {
                if !crosses(taker.side, limit, price) {
                    return false;
                }
            }
            let mut handle = ladder.get(k).expect("occupied level").head;
            while handle != NIL {
                let maker = &self.orders[handle as usize];
                if maker.account == taker.account {
                    if taker.stp != SelfTradePrevention::CancelMaker {
                        return false;
                    }
                    if market.params.perp != NIL {
                        // Canceled: its reserve goes back to the taker's free collateral.
                        perp_sim.canceled(self, market.params.perp, maker);
                    }
                } else if market.params.perp == NIL {
                    needed -= needed.min(maker.remaining);
                    if needed == 0 {
                        return true;
                    }
                } else {
                    // Perps: the fill-time limits of `match_taker`, on simulated accounts.
                    let wanted = needed.min(maker.remaining);
                    match perp_sim.fill(self, &market.params, taker, maker, price, wanted) {
                        perp::SimFill::Skip => {}
                        perp::SimFill::Lots { lots, stop } => {
                            needed -= lots;
                            if needed == 0 {
                                return true;
                            }
                            if stop {
                                // Open interest at its cap or the taker at its bankruptcy
                                // limit: matching stops here.
                                return false;
                            }
                        }
                    }
                }
                handle = maker.next;
            }
            key = ladder.next_after(k);
        }
        false
    }

    /// Matches `taker` against the opposite side of a book until it is filled, stops crossing,
    /// runs out of quote (market buys) or is stopped by self-trade prevention.
    fn match_taker(
        &mut self,
        market_index: usize,
        taker: &mut Taker,
        out: &mut Vec<Event>,
    ) -> MatchEnd {
        let params = self.markets[market_index].params;
        let maker_side = taker.side.opposite();
        while taker.remaining > 0 {
            let ladder = self.markets[market_index].ladder(maker_side);
            let Some(key) = ladder.first() else {
                return MatchEnd::Done;
            };
            let price = params.price(maker_side, key);
            if let Some(limit) = taker.limit {
                if !crosses(taker.side, limit, price) {
                    return MatchEnd::Done;
                }
            }
            let handle = ladder.get(key).expect("first level is occupied").head;
            let maker = self.orders[handle as usize];
            if maker.account == taker.account {
                match taker.stp {
                    SelfTradePrevention::CancelMaker => {
                        self.cancel_resting(handle, CancelReason::Stp, out);
                        continue;
                    }
                    SelfTradePrevention::CancelTaker => return MatchEnd::SelfTrade,
                    SelfTradePrevention::CancelBoth => {
                        self.cancel_resting(handle, CancelReason::Stp, out);
                        return MatchEnd::SelfTrade;
                    }
                }
            }
            let mut lots = taker.remaining.min(maker.remaining);
            if taker.side == Side::Buy && taker.limit.is_none() {
                let available =
                    self.accounts[taker.account as usize].balances[params.quote].available();
                lots = lots.min(params.affordable_lots(price, available));
                if lots == 0 {
                    return MatchEnd::Done;
                }
            }
            let mut perp_fill = None;
            if params.perp != NIL {
                // A reduce-only maker never opens or flips its position; open interest never
                // passes the cap; no fill takes a bucket past its bankruptcy price
                // (docs/perps.md, "Fill-time limits").
                if maker.reduce_only() {
                    let room = self.reduce_only_room(maker.account, params.perp, maker.side);
                    if room == 0 {
                        self.cancel_resting(handle, CancelReason::ReduceOnly, out);
                        continue;
                    }
                    lots = lots.min(room);
                }
                lots = self.open_interest_room(params.perp, taker, &maker, lots);
                if lots == 0 {
                    return MatchEnd::Done;
                }
                let taker_party = self.party(taker.account, params.perp);
                let maker_party = self.party(maker.account, params.perp);
                match self.perp_fill_check(
                    &params,
                    &taker_party,
                    &maker_party,
                    taker,
                    &maker,
                    price,
                    lots,
                ) {
                    perp::PerpCheck::Stop => return MatchEnd::Bankrupt,
                    perp::PerpCheck::CancelMaker => {
                        self.cancel_resting(handle, CancelReason::PriceBand, out);
                        continue;
                    }
                    perp::PerpCheck::Fill(fill) => {
                        lots = fill.lots;
                        perp_fill = Some(fill);
                    }
                }
            }
            match &perp_fill {
                Some(fill) => self.settle_perp_fill(&params, taker, &maker, price, fill, out),
                None => self.settle_fill(&params, taker, &maker, price, lots, out),
            }
            taker.remaining -= lots;
            let ladder = self.markets[market_index].ladder_mut(maker_side);
            ladder.occupied_mut(key).total_lots -= lots;
            self.note_level(market_index, maker_side, key);
            let node = &mut self.orders[handle as usize];
            node.remaining -= lots;
            self.commitment.touch_order(handle);
            if node.remaining == 0 {
                self.remove_resting(handle);
            }
            if perp_fill.is_some_and(|fill| fill.cut) && taker.remaining > 0 {
                return MatchEnd::Bankrupt;
            }
        }
        MatchEnd::Done
    }

    /// Moves balances and fees for one fill and reports it.
    fn settle_fill(
        &mut self,
        params: &MarketParams,
        taker: &Taker,
        maker: &OrderNode,
        price: Ticks,
        lots: Lots,
        out: &mut Vec<Event>,
    ) {
        debug_assert!(params.perp == NIL, "perp fills go through settle_perp_fill");
        let notional = params.notional(price, lots);
        let taker_fee = fee(notional, params.taker_fee_bps);
        let maker_fee = fee(notional, params.maker_fee_bps);
        let base_moved = to_units(params.base_units_per_lot as i128 * lots as i128);
        let (buyer, buyer_fee, buyer_release, seller, seller_fee) = match taker.side {
            Side::Buy => (
                taker.account,
                taker_fee,
                taker.reserve_per_lot * lots as i128,
                maker.account,
                maker_fee,
            ),
            Side::Sell => (
                maker.account,
                maker_fee,
                params.buy_unit_cost(maker.price()) * lots as i128,
                taker.account,
                taker_fee,
            ),
        };
        {
            let balances = &mut self.accounts[buyer as usize].balances;
            let quote = &mut balances[params.quote];
            quote.total -= to_units(notional + buyer_fee);
            quote.locked -= to_units(buyer_release);
            debug_assert!(0 <= quote.locked && quote.locked <= quote.total);
            balances[params.base].total += base_moved;
        }
        {
            let balances = &mut self.accounts[seller as usize].balances;
            let base = &mut balances[params.base];
            base.total -= base_moved;
            base.locked -= base_moved;
            debug_assert!(0 <= base.locked && base.locked <= base.total);
            balances[params.quote].total += to_units(notional - seller_fee);
        }
        self.assets[params.quote].fee_pool += to_units(taker_fee + maker_fee);
        self.touch_account(buyer);
        self.touch_account(seller);
        out.push(self.fill_event(params, taker, maker, price, lots, (taker_fee, maker_fee)));
    }

    /// The `Fill` event of one trade (spot or perp); fees as (taker, maker).
    fn fill_event(
        &self,
        params: &MarketParams,
        taker: &Taker,
        maker: &OrderNode,
        price: Ticks,
        lots: Lots,
        (taker_fee, maker_fee): (i128, i128),
    ) -> Event {
        Event::Fill {
            market: params.id,
            taker_account: self.accounts[taker.account as usize].id,
            taker_oid: taker.oid,
            maker_account: self.accounts[maker.account as usize].id,
            maker_oid: maker.oid,
            taker_side: taker.side,
            price,
            qty: lots,
            taker_fee: to_units(taker_fee),
            maker_fee: to_units(maker_fee),
            taker_left: taker.remaining - lots,
            maker_left: maker.remaining - lots,
        }
    }

    /// After matching: rest the remainder (GTC/ALO) or cancel it, releasing its reserve.
    /// `slot` is the order's own detached slot when it is a re-entering resting order (see
    /// [`Engine::detach_for_reentry`]); it is re-attached if the order rests, freed otherwise.
    #[allow(clippy::too_many_arguments)]
    fn finish_taker(
        &mut self,
        market_index: usize,
        taker: Taker,
        end: MatchEnd,
        rest: bool,
        post_only: bool,
        slot: Option<u32>,
        out: &mut Vec<Event>,
    ) {
        let rests = rest && end == MatchEnd::Done && taker.remaining > 0;
        match (rests, slot) {
            (true, Some(handle)) => {
                let price = taker.limit.expect("only limit orders rest");
                let join = !self.keeps_account_place(market_index);
                self.attach_resting(handle, market_index, &taker, price, post_only, join);
                return;
            }
            (true, None) => {
                let price = taker.limit.expect("only limit orders rest");
                self.insert_resting(market_index, &taker, price, post_only);
                return;
            }
            (false, Some(handle)) => {
                if self.keeps_account_place(market_index) {
                    self.leave_account(handle);
                }
                self.free_detached(handle)
            }
            (false, None) => {}
        }
        if taker.remaining == 0 {
            return;
        }
        let release = taker.reserve_per_lot * taker.remaining as i128;
        self.add_lock(taker.account, market_index, taker.side, -release);
        out.push(Event::Canceled {
            market: self.markets[market_index].spec.market,
            account: self.accounts[taker.account as usize].id,
            oid: taker.oid,
            remaining: taker.remaining,
            reason: match end {
                MatchEnd::SelfTrade => CancelReason::Stp,
                MatchEnd::Bankrupt => CancelReason::PriceBand,
                MatchEnd::Done => CancelReason::Unfilled,
            },
        });
    }

    fn insert_resting(
        &mut self,
        market_index: usize,
        taker: &Taker,
        price: Ticks,
        post_only: bool,
    ) -> u32 {
        let handle = self.take_slot();
        let id = self.accounts[taker.account as usize].id;
        self.open.insert(id, taker.oid, handle);
        self.attach_resting(handle, market_index, taker, price, post_only, true);
        handle
    }

    /// A free slab slot for a new resting order (a freed one first, else a new one).
    fn take_slot(&mut self) -> u32 {
        if self.free_head != NIL {
            let handle = self.free_head;
            self.free_head = self.orders[handle as usize].next;
            handle
        } else {
            // Cannot fail: the book_full check keeps resting orders within the capacity.
            let handle = self.orders.push();
            self.commitment.grow_to(self.orders.len());
            handle
        }
    }

    /// Whether an order of this market re-entering through a modify keeps its place in its
    /// account's list (spot markets) instead of moving to the back (perp markets). Account
    /// lists are therefore in entry order for perp orders only (the perp code walks them in
    /// that order); readers that need entry order for all orders sort by `entry`.
    #[inline]
    fn keeps_account_place(&self, market_index: usize) -> bool {
        self.markets[market_index].params.perp == NIL
    }

    /// Fills slot `handle` with the order and links it at the back of its level, as a new
    /// entry, and at the back of its account's list if `join_account` (otherwise the slot is
    /// still in that list: see [`Engine::keeps_account_place`]). The `(account, oid)` index
    /// must already point here.
    fn attach_resting(
        &mut self,
        handle: u32,
        market_index: usize,
        taker: &Taker,
        price: Ticks,
        post_only: bool,
        join_account: bool,
    ) {
        let market = &mut self.markets[market_index];
        let key = market.params.key(taker.side, price);
        let level = market.ladder_mut(taker.side).get_or_insert(key);
        let previous_tail = level.tail;
        level.tail = handle;
        if previous_tail == NIL {
            level.head = handle;
        }
        level.total_lots += taker.remaining;
        self.note_level(market_index, taker.side, key);
        if previous_tail != NIL {
            self.orders[previous_tail as usize].next = handle;
        }
        let (account_prev, account_next) = if join_account {
            (self.join_account(handle, taker.account), NIL)
        } else {
            let node = &self.orders[handle as usize];
            (node.account_prev, node.account_next)
        };
        self.orders[handle as usize] = OrderNode {
            prev: previous_tail,
            next: NIL,
            account_prev,
            account_next,
            account: taker.account,
            market: market_index as u32,
            price_ticks: u32::try_from(price).expect("limit prices are checked to 2^28"),
            side: taker.side,
            stp: taker.stp,
            flags: if post_only { POST_ONLY } else { 0 }
                | if taker.reduce_only { REDUCE_ONLY } else { 0 },
            tier: taker.tier,
            remaining: taker.remaining,
            oid: taker.oid,
            entry: self.entries,
        };
        if taker.reduce_only {
            self.count_reduce_only(taker.account, market_index as u32, 1);
        }
        self.entries += 1;
        self.resting += 1;
        self.commitment.touch_order(handle);
        self.touch_order_owner(taker.account, market_index as u32);
    }

    /// Links slot `handle` at the back of `account`'s list; returns the slot before it.
    fn join_account(&mut self, handle: u32, account: u32) -> u32 {
        let state = &mut self.accounts[account as usize];
        let previous_last = state.last_order;
        state.last_order = handle;
        if previous_last == NIL {
            state.first_order = handle;
        }
        state.open_orders += 1;
        if previous_last != NIL {
            self.orders[previous_last as usize].account_next = handle;
        }
        previous_last
    }

    /// Unlinks a resting order from its level and account and frees its slot. Its remaining
    /// lots leave the level total; its reserve must already be settled by the caller.
    fn remove_resting(&mut self, handle: u32) {
        self.leave_level(handle);
        self.leave_account(handle);
        self.free_detached(handle);
    }

    /// Takes a resting order that re-enters out of its level, and out of its account's list
    /// unless its market keeps the place ([`Engine::keeps_account_place`]); the slot and the
    /// `(account, oid)` index entry stay, for [`Engine::attach_resting`] or
    /// [`Engine::free_detached`] (through [`Engine::finish_taker`]).
    fn detach_for_reentry(&mut self, handle: u32, market_index: usize) {
        self.leave_level(handle);
        if !self.keeps_account_place(market_index) {
            self.leave_account(handle);
        }
    }

    /// Unlinks a resting order from its level; it no longer counts as resting.
    fn leave_level(&mut self, handle: u32) {
        let node = self.orders[handle as usize];
        let market = &mut self.markets[node.market as usize];
        let key = market.params.key(node.side, node.price());
        let ladder = market.ladder_mut(node.side);
        let level = ladder.occupied_mut(key);
        level.total_lots -= node.remaining;
        if node.prev == NIL {
            level.head = node.next;
        }
        if node.next == NIL {
            level.tail = node.prev;
        }
        if level.head == NIL {
            debug_assert_eq!(level.total_lots, 0);
            ladder.remove(key);
        }
        self.note_level(node.market as usize, node.side, key);
        if node.prev != NIL {
            self.orders[node.prev as usize].next = node.next;
        }
        if node.next != NIL {
            self.orders[node.next as usize].prev = node.prev;
        }
        self.resting -= 1;
        self.commitment.touch_order(handle);
        self.touch_order_owner(node.account, node.market);
        if node.reduce_only() {
            self.count_reduce_only(node.account, node.market, -1);
        }
    }

    /// Unlinks an order's slot from its account's list.
    fn leave_account(&mut self, handle: u32) {
        let node = &self.orders[handle as usize];
        let (account_prev, account_next, owner) =
            (node.account_prev, node.account_next, node.account);
        let account = &mut self.accounts[owner as usize];
        if account_prev == NIL {
            account.first_order = account_next;
        }
        if account_next == NIL {
            account.last_order = account_prev;
        }
        account.open_orders -= 1;
        if account_prev != NIL {
            self.orders[account_prev as usize].account_next = account_next;
        }
        if account_next != NIL {
            self.orders[account_next as usize].account_prev = account_prev;
        }
    }

    /// Drops a detached order: removes its index entry and returns its slot to the free list.
    fn free_detached(&mut self, handle: u32) {
        let node = &self.orders[handle as usize];
        let (orders, accounts) = (&self.orders, &self.accounts);
        let id = accounts[node.account as usize].id;
        self.open.remove(id, node.oid, handle, |slot| {
            let node = &orders[slot as usize];
            (accounts[node.account as usize].id, node.oid)
        });
        self.commitment.touch_order(handle);
        let slot = &mut self.orders[handle as usize];
        *slot = OrderNode::VACANT;
        slot.next = self.free_head;
        self.free_head = handle;
    }

    /// Releases a resting order's reserve, reports it canceled, and removes it.
    fn cancel_resting(&mut self, handle: u32, reason: CancelReason, out: &mut Vec<Event>) {
        let node = self.orders[handle as usize];
        self.release_reserve(&node, node.remaining);
        out.push(Event::Canceled {
            market: self.markets[node.market as usize].spec.market,
            account: self.accounts[node.account as usize].id,
            oid: node.oid,
            remaining: node.remaining,
            reason,
        });
        self.remove_resting(handle);
    }

    /// The slot of an account's resting order (by dense account index and id), if any.
    #[inline]
    fn find_slot(&self, account: u32, id: AccountId, oid: OrderId) -> Option<u32> {
        self.open.get(id, oid, |slot| {
            slot_key(&self.orders, slot) == (account, oid)
        })
    }

    /// Resolves an order command's market, account and order, or reports why not.
    // Inlined into its two callers (cancel, modify): as a call, its result went through
    // memory and its registers were spilled (~30 instructions per command).
    #[inline(always)]
    fn find_order(
        &self,
        account: AccountId,
        market: MarketId,
        oid: OrderId,
    ) -> Result<(usize, u32, u32), RejectReason> {
        let &market_index = self
            .market_index
            .get(&market)
            .ok_or(RejectReason::UnknownMarket)?;
        let &account_index = self
            .account_index
            .get(&account)
            .ok_or(RejectReason::UnknownAccount)?;
        match self.find_slot(account_index, account, oid) {
            Some(handle) if self.orders[handle as usize].market == market_index => {
                Ok((market_index as usize, account_index, handle))
            }
            _ => Err(RejectReason::UnknownOrder),
        }
    }

    fn cancel(&mut self, account: AccountId, market: MarketId, oid: OrderId, out: &mut Vec<Event>) {
        match self.find_order(account, market, oid) {
            Ok((_, _, handle)) => self.cancel_resting(handle, CancelReason::User, out),
            Err(reason) => out.push(Event::Rejected {
                account,
                oid: Some(oid),
                reason,
            }),
        }
    }

    fn cancel_all(&mut self, account: AccountId, market: MarketId, out: &mut Vec<Event>) {
        let Some(&market_index) = self.market_index.get(&market) else {
            return Self::reject_admin(out, account, RejectReason::UnknownMarket);
        };
        let Some(&account_index) = self.account_index.get(&account) else {
            return Self::reject_admin(out, account, RejectReason::UnknownAccount);
        };
        // In entry order (the account's list is not, for spot orders that re-entered).
        let mut handles = std::mem::take(&mut self.order_scratch);
        self.collect_account_orders(account_index, Some(market_index), &mut handles);
        for &handle in &handles {
            self.cancel_resting(handle, CancelReason::User, out);
        }
        self.order_scratch = handles;
    }

    /// Replaces `out` with the slots of an account's open orders (in one market, or all),
    /// in entry order.
    fn collect_account_orders(&self, account: u32, market: Option<u32>, out: &mut Vec<u32>) {
        out.clear();
        let mut handle = self.accounts[account as usize].first_order;
        while handle != NIL {
            let node = &self.orders[handle as usize];
            if market.is_none_or(|m| m == node.market) {
                out.push(handle);
            }
            handle = node.account_next;
        }
        out.sort_unstable_by_key(|&handle| self.orders[handle as usize].entry);
    }

    fn modify(
        &mut self,
        account: AccountId,
        market: MarketId,
        oid: OrderId,
        price: Ticks,
        qty: Lots,
        out: &mut Vec<Event>,
    ) {
        match self.try_modify(account, market, oid, price, qty, out) {
            Ok(()) => {}
            Err(reason) => out.push(Event::Rejected {
                account,
                oid: Some(oid),
                reason,
            }),
        }
    }

    /// A modify's checks and effects (docs/engine.md, "Modify"); a refusal changes nothing.
    /// Three paths: a size cut in place, a spot re-entry that does not cross (moved from
    /// one level to the other at once: most modifies), and the general re-entry as a taker.
    fn try_modify(
        &mut self,
        account: AccountId,
        market: MarketId,
        oid: OrderId,
        price: Ticks,
        qty: Lots,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectReason> {
        let (market_index, account_index, handle) = self.find_order(account, market, oid)?;
        let state = &self.markets[market_index];
        if qty <= 0 {
            return Err(RejectReason::InvalidQty);
        }
        if price < 1 || price > state.params.max_price {
            return Err(RejectReason::InvalidPrice);
        }
        let node = &self.orders[handle as usize];
        // The event is built where it is pushed: built once before the branches, it was kept
        // on the stack across the move and copied whole (96 bytes) into `out` after it.
        let modified = move || Event::Modified {
            market,
            account,
            oid,
            price,
            qty,
        };
        // One branch, not two (`&&`): whether a modify cuts the size in place is the
        // workload's own choice and as good as random, so each test is a likely misprediction.
        if (price == node.price()) & (qty <= node.remaining) {
            self.reduce_in_place(market_index, account_index, handle, qty);
            out.push(modified());
            return Ok(());
        }
        if qty < state.params.min_lots {
            return Err(RejectReason::MinQty);
        }
        let crosses = state.would_cross(node.side, price);
        if node.post_only() && crosses {
            return Err(RejectReason::PostOnlyWouldCross);
        }
        let found = (market_index, account_index, handle);
        if state.params.perp == NIL && !crosses {
            let params = &state.params;
            let old_reserve = params.reserve_u64(node.side, node.price(), node.remaining);
            if let (Some(old), Some(new)) = (old_reserve, params.reserve_u64(node.side, price, qty))
            {
                self.move_spot(found, price, qty, (old, new))?;
                out.push(modified());
                return Ok(());
            }
        }
        self.reenter(found, price, qty, modified(), out)
    }

    /// A modify that keeps the price and does not add lots: the size is cut in place and the
    /// order keeps its priority; the reserve shrinks to match.
    fn reduce_in_place(&mut self, market_index: usize, account: u32, handle: u32, qty: Lots) {
        let node = self.orders[handle as usize];
        let (side, reduced) = (node.side, node.remaining - qty);
        self.release_reserve(&node, reduced);
        let market = &mut self.markets[market_index];
        let key = market.params.key(side, node.price());
        market.ladder_mut(side).occupied_mut(key).total_lots -= reduced;
        self.note_level(market_index, side, key);
        self.orders[handle as usize].remaining = qty;
        self.commitment.touch_order(handle);
        self.touch_order_owner(account, market_index as u32);
    }

    /// A spot re-entry that will not cross: checks the owner's balance against the new
    /// reserve (docs/engine.md, "Modify", check 8), then moves the reserve and the order at
    /// once. Same state as leaving the book and resting again as a taker that matched nothing.
    /// `found` is what [`Engine::find_order`] returned; `reserves` the order's reserve before
    /// and after, both of which fit 64 bits.
    fn move_spot(
        &mut self,
        (market_index, account, handle): (usize, u32, u32),
        price: Ticks,
        qty: Lots,
        (old_reserve, new_reserve): (u64, u64),
    ) -> Result<(), RejectReason> {
        let side = self.orders[handle as usize].side;
        let asset = self.markets[market_index].params.reserve_asset(side);
        let balance = &mut self.accounts[account as usize].balances[asset];
        // At most the balance's total: the old reserve is part of what is locked.
        let available = balance.available() + old_reserve as Units;
        if new_reserve > available as u64 {
            self.note_shortfall(asset, new_reserve.into(), available.into());
            return Err(RejectReason::InsufficientBalance);
        }
        // Both at most the total now, so the difference fits.
        balance.locked += new_reserve as Units - old_reserve as Units;
        self.move_to_level(handle, market_index, price, qty);
        Ok(())
    }

    /// Moves resting order `handle` to the back of the level at `price` on its side with
    /// `qty` lots, as a new entry, in one pass over both levels. Its account list place,
    /// slot and index entry stay (spot orders only: [`Engine::keeps_account_place`]).
    fn move_to_level(&mut self, handle: u32, market_index: usize, price: Ticks, qty: Lots) {
        let node = self.orders[handle as usize];
        debug_assert!(self.keeps_account_place(market_index) && !node.reduce_only());
        let market = &mut self.markets[market_index];
        let old_key = market.params.key(node.side, node.price());
        let new_key = market.params.key(node.side, price);
        let ladder = market.ladder_mut(node.side);
        let old_level = ladder.occupied_mut(old_key);
        // Whether the order is the head or the tail of either level is as good as random
        // (about two orders per level at 1K), so the links are chosen without branches:
        // `pick` selects by a data-dependent condition, and a link that has no neighbour to
        // update is written into the moving node itself, whose links are rewritten below.
        let pick = |condition: bool, then: u32, otherwise: u32| {
            std::hint::select_unpredictable(condition, then, otherwise)
        };
        old_level.total_lots -= node.remaining;
        old_level.head = pick(node.prev == NIL, node.next, old_level.head);
        old_level.tail = pick(node.next == NIL, node.prev, old_level.tail);
        let emptied = old_level.head == NIL;
        // The new level first: if the old one was the best, removing it then finds the next
        // best without a scan whenever the order moved towards the touch.
        let level = ladder.get_or_insert(new_key);
        let previous_tail = level.tail;
        level.tail = handle;
        level.head = pick(previous_tail == NIL, handle, level.head);
        level.total_lots += qty;
        if emptied && old_key != new_key {
            ladder.remove(old_key);
        }
        self.orders[pick(node.prev == NIL, handle, node.prev) as usize].next = node.next;
        self.orders[pick(node.next == NIL, handle, node.next) as usize].prev = node.prev;
        self.orders[pick(previous_tail == NIL, handle, previous_tail) as usize].next = handle;
        let moved = &mut self.orders[handle as usize];
        moved.prev = previous_tail;
        moved.next = NIL;
        moved.price_ticks = u32::try_from(price).expect("limit prices are checked to 2^28");
        moved.remaining = qty;
        moved.entry = self.entries;
        self.entries += 1;
        self.commitment.touch_order(handle);
        if self.track_levels {
            self.note_level(market_index, node.side, old_key);
            self.note_level(market_index, node.side, new_key);
        }
    }

    /// The general re-entry (perp markets, or a new price that crosses): leave the book
    /// (keeping the slot and index entry), then come back in as a GTC taker at the new terms.
    /// `found` is what [`Engine::find_order`] returned; `modified` the event it reports.
    fn reenter(
        &mut self,
        (market_index, account_index, handle): (usize, u32, u32),
        price: Ticks,
        qty: Lots,
        modified: Event,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectReason> {
        let params = self.markets[market_index].params;
        let node = self.orders[handle as usize];
        let old_reserve = self.node_reserve_per_lot(&node) * node.remaining as i128;
        let (reserve_per_lot, tier) = if params.perp != NIL {
            self.perp_modify_terms(&params, account_index, &node, price, qty, old_reserve)?
        } else {
            (params.reserve_per_lot(node.side, price), 0)
        };
        let new_reserve = reserve_per_lot * qty as i128;
        if params.perp == NIL {
            let asset = params.reserve_asset(node.side);
            let balance = self.accounts[account_index as usize].balances[asset];
            let available = balance.available() as i128 + old_reserve;
            if new_reserve > available {
                self.note_shortfall(asset, new_reserve, available);
                return Err(RejectReason::InsufficientBalance);
            }
        }
        self.detach_for_reentry(handle, market_index);
        self.add_lock(
            account_index,
            market_index,
            node.side,
            new_reserve - old_reserve,
        );
        out.push(modified);
        let mut taker = Taker {
            account: account_index,
            oid: node.oid,
            side: node.side,
            limit: Some(price),
            remaining: qty,
            stp: node.stp,
            reserve_per_lot,
            reduce_only: node.reduce_only(),
            tier,
        };
        let end = if self.markets[market_index].would_cross(node.side, price) {
            self.match_taker(market_index, &mut taker, out)
        } else {
            MatchEnd::Done
        };
        let post_only = node.post_only();
        self.finish_taker(market_index, taker, end, true, post_only, Some(handle), out);
        Ok(())
    }

    /// Adds `delta` to what an order reserves for its owner: the spot balance's locked
    /// amount, or the perp order margin.
    /// A spot balance's `locked` is not in the account's record (it is the sum of its
    /// orders' reserves, which are), so only the perp case touches the account.
    /// The market's parameters are read in place (a copy of them costs more than the rest).
    fn add_lock(&mut self, account: u32, market_index: usize, side: Side, delta: i128) {
        let params = &self.markets[market_index].params;
        let state = &mut self.accounts[account as usize];
        if params.perp == NIL {
            state.balances[params.reserve_asset(side)].locked += to_units(delta);
        } else {
            state.perp.order_margin += to_units(delta);
            self.touch_account(account);
        }
    }

    /// Gives what `lots` of a resting order reserve back to its owner (all of them when the
    /// order leaves the book, the cut when its size is cut). A spot order's in 64-bit
    /// arithmetic when it fits, as a move computes it; the i128 path otherwise and for perp
    /// orders.
    fn release_reserve(&mut self, node: &OrderNode, lots: Lots) {
        let params = &self.markets[node.market as usize].params;
        if params.perp == NIL {
            if let Some(reserve) = params.reserve_u64(node.side, node.price(), lots) {
                let asset = params.reserve_asset(node.side);
                // At most what is locked (it is part of it), so it fits.
                self.accounts[node.account as usize].balances[asset].locked -= reserve as Units;
                return;
            }
        }
        let release = self.node_reserve_per_lot(node) * lots as i128;
        self.add_lock(node.account, node.market as usize, node.side, -release);
    }

    /// Units a resting order reserves per remaining lot (a pure function of the order and,
    /// in perp markets, its owner's leverage there, which cannot change while it rests).
    #[inline]
    fn node_reserve_per_lot(&self, node: &OrderNode) -> i128 {
        let params = &self.markets[node.market as usize].params;
        if params.perp == NIL {
            params.reserve_per_lot(node.side, node.price())
        } else {
            self.perp_reserve_per_lot(
                params,
                node.account,
                node.price(),
                node.reduce_only(),
                node.tier,
            )
        }
    }

    // ---- queries ---------------------------------------------------------------------

    /// What the last [`Engine::step`] lacked, if it was refused for `insufficient_balance`
    /// or `insufficient_margin`: the amount it needed and what the account had for it.
    pub fn last_shortfall(&self) -> Option<Shortfall> {
        self.shortfall
    }

    /// Records a refusal's shortfall in asset index `asset` (see [`Engine::last_shortfall`]).
    fn note_shortfall(&mut self, asset: usize, needed: i128, available: i128) {
        self.shortfall = Some(Shortfall {
            asset: self.assets[asset].id,
            needed,
            available,
        });
    }

    /// An account's balance of an asset; `None` if either is unknown.
    pub fn balance(&self, account: AccountId, asset: AssetId) -> Option<Balance> {
        let &account_index = self.account_index.get(&account)?;
        let &asset_index = self.asset_index.get(&asset)?;
        Some(self.accounts[account_index as usize].balances[asset_index as usize])
    }

    /// Fees collected so far in an asset (net of maker rebates).
    pub fn fee_pool(&self, asset: AssetId) -> Option<Units> {
        let &asset_index = self.asset_index.get(&asset)?;
        Some(self.assets[asset_index as usize].fee_pool)
    }

    /// Deposits minus withdrawals of an asset.
    pub fn supply(&self, asset: AssetId) -> Option<Units> {
        let &asset_index = self.asset_index.get(&asset)?;
        Some(self.assets[asset_index as usize].supply)
    }

    /// Registered assets, in registration order.
    pub fn assets(&self) -> impl Iterator<Item = AssetId> + '_ {
        self.assets.iter().map(|asset| asset.id)
    }

    /// Known accounts, in creation order.
    pub fn accounts(&self) -> impl Iterator<Item = AccountId> + '_ {
        self.accounts.iter().map(|account| account.id)
    }

    /// Registered markets, in registration order.
    pub fn markets(&self) -> impl Iterator<Item = MarketId> + '_ {
        self.markets.iter().map(|market| market.spec.market)
    }

    /// A market's parameters.
    pub fn market_spec(&self, market: MarketId) -> Option<MarketSpec> {
        let &index = self.market_index.get(&market)?;
        Some(self.markets[index as usize].spec)
    }

    /// Number of orders resting across all markets.
    pub fn resting_orders(&self) -> usize {
        self.resting as usize
    }

    /// Aggregated levels of one side, best first, at most `max_levels`, appended to `out` as
    /// `(price, total lots)`. Returns false if the market is unknown.
    pub fn depth(
        &self,
        market: MarketId,
        side: Side,
        max_levels: usize,
        out: &mut Vec<(Ticks, Lots)>,
    ) -> bool {
        let Some(&index) = self.market_index.get(&market) else {
            return false;
        };
        let market = &self.markets[index as usize];
        let ladder = market.ladder(side);
        let mut key = ladder.first();
        let mut levels = 0;
        while let Some(k) = key {
            if levels >= max_levels {
                break;
            }
            levels += 1;
            let level = ladder.get(k).expect("occupied level");
            out.push((market.params.price(side, k), level.total_lots));
            key = ladder.next_after(k);
        }
        true
    }

    /// Every resting order of one side of a market, best price first, oldest first within a
    /// level. Allocates: meant for tests, snapshots and tools, not the data path.
    pub fn book_orders(&self, market: MarketId, side: Side) -> Vec<OrderView> {
        let mut views = Vec::new();
        if let Some(&index) = self.market_index.get(&market) {
            self.visit_side(&self.markets[index as usize], side, |view| views.push(view));
        }
        views
    }

    /// An account's open orders, in the order they (re-)entered their books, optionally only
    /// in one market; `scanned` is how many of the account's orders were walked (all of
    /// them). Costs O(the account's open orders), not O(book). Allocates: for read paths and
    /// tools, not the matching path.
    pub fn account_orders(&self, account: AccountId, market: Option<MarketId>) -> Vec<OrderView> {
        let Some(&index) = self.account_index.get(&account) else {
            return Vec::new();
        };
        let market_index = match market {
            Some(id) => match self.market_index.get(&id) {
                Some(&m) => Some(m),
                None => return Vec::new(),
            },
            None => None,
        };
        let mut handles = Vec::new();
        self.collect_account_orders(index, market_index, &mut handles);
        handles
            .iter()
            .map(|&handle| self.view(&self.orders[handle as usize]))
            .collect()
    }

    fn view(&self, node: &OrderNode) -> OrderView {
        OrderView {
            account: self.accounts[node.account as usize].id,
            oid: node.oid,
            side: node.side,
            price: node.price(),
            remaining: node.remaining,
            stp: node.stp,
            post_only: node.post_only(),
            reduce_only: node.reduce_only(),
        }
    }

    fn visit_side(&self, market: &MarketState<L>, side: Side, mut visit: impl FnMut(OrderView)) {
        let ladder = market.ladder(side);
        let mut key = ladder.first();
        while let Some(k) = key {
            let mut handle = ladder.get(k).expect("occupied level").head;
            while handle != NIL {
                let node = &self.orders[handle as usize];
                visit(self.view(node));
                handle = node.next;
            }
            key = ladder.next_after(k);
        }
    }

    /// Marks the owner of an order that entered, left or changed in market `market_index`
    /// for the next commit, where that can change its record: in perp markets (position
    /// slots, reduce-only counts, order margin). In spot markets what an order changes in
    /// its owner's state (locked balances, open-order count, list links) is derived from the
    /// orders and not in the account's record, so the order's own record covers it.
    fn touch_order_owner(&mut self, account: u32, market_index: u32) {
        if self.markets[market_index as usize].params.perp != NIL {
            self.touch_account(account);
        }
    }

    fn touch_account(&mut self, index: u32) {
        let account = &mut self.accounts[index as usize];
        if !account.dirty {
            account.dirty = true;
            self.commitment.dirty_accounts.push(index);
        }
    }

    /// Recomputes every derived quantity from scratch and compares: reserves against locked
    /// balances, level totals against their orders, list links, counts, and conservation of
    /// every asset. Allocates; meant for tests and audits.
    pub fn check_invariants(&self) -> Result<(), String> {
        let reserves = self.book_reserves()?;
        self.check_accounts(&reserves, true)?;
        self.commitment
            .check_record_ids(&self.accounts, &self.markets)
    }

    /// [`Engine::check_invariants`] for an engine a restore just built with the engine's own
    /// insertion code, which makes the books' order, links, totals, list links and counts and
    /// the oid index hold by construction: what the snapshot's numbers decide (reserves
    /// against locked balances, margins, conservation) is checked, from one pass over the
    /// slab in slot order instead of walks that read every order at a scattered address.
    fn check_restored(&self) -> Result<(), String> {
        let reserves = self.slab_reserves();
        self.check_accounts(&reserves, false)
    }

    /// What the orders reserve per account, from the slab in slot order.
    fn slab_reserves(&self) -> Reserves {
        let mut reserves = Reserves::new(self.accounts.len(), self.assets.len());
        for slot in 0..self.orders.len() {
            let node = &self.orders[slot];
            if node.account != NIL {
                reserves.add(self, node);
            }
        }
        reserves
    }

    /// What the orders reserve per account, walking every book level by level and checking
    /// its order, links, totals and the oid index on the way.
    fn book_reserves(&self) -> Result<Reserves, String> {
        let mut reserves = Reserves::new(self.accounts.len(), self.assets.len());
        for (market_index, market) in self.markets.iter().enumerate() {
            for side in [Side::Buy, Side::Sell] {
                let ladder = market.ladder(side);
                let mut key = ladder.first();
                let mut last_price = None;
                while let Some(k) = key {
                    let level = ladder.get(k).ok_or("first/next returned an empty key")?;
                    let price = market.params.price(side, k);
                    if let Some(last) = last_price {
                        let better = match side {
                            Side::Buy => price < last,
                            Side::Sell => price > last,
                        };
                        if !better {
                            return Err(format!("levels out of order at {price}"));
                        }
                    }
                    last_price = Some(price);
                    let mut sum = 0;
                    let mut previous = NIL;
                    let mut handle = level.head;
                    if handle == NIL {
                        return Err(format!("empty level left at price {price}"));
                    }
                    while handle != NIL {
                        let node = &self.orders[handle as usize];
                        if node.prev != previous
                            || node.price() != price
                            || node.side != side
                            || node.market != market_index as u32
                            || node.remaining <= 0
                        {
                            return Err(format!("bad order node {handle} at price {price}"));
                        }
                        let id = self.accounts[node.account as usize].id;
                        if self.find_slot(node.account, id, node.oid) != Some(handle) {
                            return Err(format!("order {handle} missing from the oid index"));
                        }
                        sum += node.remaining;
                        reserves.add(self, node);
                        previous = handle;
                        handle = node.next;
                    }
                    if previous != level.tail || sum != level.total_lots {
                        return Err(format!("level {price} tail or total is wrong"));
                    }
                    key = ladder.next_after(k);
                }
            }
        }
        Ok(reserves)
    }

    /// The checks of accounts against `reserves`: counts, locked balances, margins,
    /// conservation; `walk_lists`: also count each account's list.
    fn check_accounts(&self, reserves: &Reserves, walk_lists: bool) -> Result<(), String> {
        let (seen, expected_locked) = (reserves.orders, &reserves.locked);
        if seen != self.resting || self.open.len() != self.resting as usize {
            return Err(format!(
                "{seen} orders in books, {} counted, {} indexed",
                self.resting,
                self.open.len()
            ));
        }
        let mut totals = vec![0i128; self.assets.len()];
        for (account_index, account) in self.accounts.iter().enumerate() {
            if walk_lists && self.list_length(account) != account.open_orders {
                return Err(format!("account {} open order count is wrong", account.id));
            }
            for (asset_index, balance) in account.balances.iter().enumerate() {
                if balance.locked < 0 || balance.locked > balance.total {
                    return Err(format!(
                        "account {} asset {}: locked {} total {}",
                        account.id, self.assets[asset_index].id, balance.locked, balance.total
                    ));
                }
                if balance.locked as i128 != expected_locked[account_index][asset_index] {
                    return Err(format!(
                        "account {} asset {}: locked {} but orders reserve {}",
                        account.id,
                        self.assets[asset_index].id,
                        balance.locked,
                        expected_locked[account_index][asset_index]
                    ));
                }
                totals[asset_index] += balance.total as i128;
            }
        }
        self.check_perp_invariants(&reserves.order_margin)?;
        if let Some(collateral) = self.collateral {
            totals[collateral as usize] += self.perp_holdings();
        }
        for (asset, total) in self.assets.iter().zip(totals) {
            if total + asset.fee_pool as i128 != asset.supply as i128 {
                return Err(format!(
                    "asset {} not conserved: balances {} + fees {} != supply {}",
                    asset.id, total, asset.fee_pool, asset.supply
                ));
            }
        }
        Ok(())
    }

    /// Orders on an account's list.
    fn list_length(&self, account: &AccountState) -> u32 {
        let mut count = 0;
        let mut handle = account.first_order;
        while handle != NIL {
            count += 1;
            handle = self.orders[handle as usize].account_next;
        }
        count
    }
}
