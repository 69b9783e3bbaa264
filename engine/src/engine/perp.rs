//! Perpetual futures: positions, margin, oracle and mark prices, funding, pre-trade risk and
//! liquidation. The rules, their rounding and the conservation law are in docs/perps.md;
//! this file implements them on the shared order book code in `engine.rs`.
//!
//! Money is `i128` inside a computation and `i64` (collateral units) in state. Rates are
//! parts per billion. Rounding always goes against the account (margin requirements up,
//! funding toward the payer), and whatever rounding leaves over stays in the market's
//! funding pool or the insurance fund, so conservation holds exactly.

use std::collections::BTreeSet;

use super::*;

/// Premium EMA weight: each oracle update moves the EMA 1/8 of the way to the new sample.
pub(super) const EMA_DIVISOR: i64 = 8;
/// The interest-minus-premium term of funding is clamped to +-0.05% (5 * 10^5 ppb).
pub(super) const FUNDING_INTEREST_CLAMP_PPB: i64 = 500_000;
/// Order id the engine uses for the market orders it sends when liquidating.
pub const LIQUIDATION_OID: OrderId = 0;
/// Largest notional any position may reach at the market's highest price (2^60 units): it
/// bounds every PnL, fee and margin figure far inside `i64`.
pub const MAX_POSITION_NOTIONAL: i128 = 1 << 60;
/// Slack, in collateral units, added to liquidation keys to cover rounding in margin and
/// funding (each rounds by less than one unit).
const KEY_SLACK_UNITS: i128 = 2;

/// An account's position (and settings) in one perp market.
#[derive(Clone, Copy, Debug)]
pub(super) struct Position {
    /// Index into `Engine::perps`.
    pub(super) perp: u32,
    /// Signed lots, long > 0.
    pub(super) size: Lots,
    /// Signed cost basis of the open lots, collateral units.
    pub(super) open_notional: i128,
    /// `size * funding index` when last settled, nano-units.
    pub(super) funding_basis: i128,
    /// Chosen leverage, 1..=max_leverage.
    pub(super) leverage: u32,
    /// Isolated margin mode.
    pub(super) isolated: bool,
    /// Margin held by an isolated position, collateral units.
    pub(super) isolated_margin: i64,
    /// Resting reduce-only orders of the account in this market.
    pub(super) reduce_only_orders: u32,
    /// Membership in the market's liquidation index (derived state, not hashed).
    pub(super) keyed: Keyed,
}

/// Where a position sits in its market's liquidation index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Keyed {
    /// Not indexed (flat, or the insurance fund).
    None,
    /// In `liq_longs` under this key.
    Long(i128),
    /// In `liq_shorts` under this key.
    Short(i128),
    /// In `multi`: a cross account with positions in several markets, checked in full.
    Multi,
}

/// An account's perp state: cross collateral, order margin and positions.
#[derive(Clone, Debug, Default)]
pub(super) struct PerpAccount {
    /// Cross-margin collateral, collateral units (realized PnL, funding and fees included).
    pub(super) collateral: i64,
    /// Reserved by open perp orders (a pure function of those orders).
    pub(super) order_margin: i64,
    /// Positions and per-market settings, in the order they were first touched.
    pub(super) positions: Vec<Position>,
}

/// A perp market's dynamic state.
pub(super) struct PerpMarket {
    pub(super) spec: PerpSpec,
    /// Index into `Engine::markets`.
    pub(super) market_index: u32,
    /// Oracle price in ticks, 0 before the first update.
    pub(super) oracle: Ticks,
    /// Mark price in ticks, 0 before the first oracle update.
    pub(super) mark: Ticks,
    /// EMA of the premium samples, ppb.
    pub(super) ema_premium_ppb: i64,
    /// Sum and count of the premium samples of the current funding interval.
    pub(super) premium_sum_ppb: i64,
    pub(super) premium_samples: u32,
    /// Price of the last fill, 0 for none.
    pub(super) last_trade: Ticks,
    /// Cumulative funding per lot held long, nano-units of collateral.
    pub(super) funding_index: i128,
    /// Funding paid in minus paid out (settled rounding residue stays here), units.
    pub(super) funding_pool: i64,
    /// Open interest: sum of long sizes (equals the sum of short sizes).
    pub(super) long_lots: Lots,
    /// Highest maintenance rate of the table, used by the liquidation keys.
    pub(super) key_mmr_ppb: i128,
    /// Open-interest cap in force: the spec's, or less so that no position can pass
    /// `MAX_POSITION_NOTIONAL` at `max_price` (no position exceeds the open interest).
    pub(super) oi_cap: Lots,
    /// Liquidation index: single-position buckets keyed by liquidation threshold.
    pub(super) liq_longs: BTreeSet<(i128, u32)>,
    pub(super) liq_shorts: BTreeSet<(i128, u32)>,
    /// Cross accounts with positions in several markets (checked in full).
    pub(super) multi: BTreeSet<u32>,
}

impl PerpMarket {
    fn qu(&self) -> i128 {
        self.spec.quote_units_per_tick_lot as i128
    }

    /// `m * QU * (10^9 - mmr) - index`: longs whose key is above this may be liquidatable.
    fn long_threshold(&self) -> i128 {
        self.mark as i128 * self.qu() * (PPB - self.key_mmr_ppb) - self.funding_index
    }

    /// `m * QU * (10^9 + mmr) - index`: shorts whose key is below this may be liquidatable.
    fn short_threshold(&self) -> i128 {
        self.mark as i128 * self.qu() * (PPB + self.key_mmr_ppb) - self.funding_index
    }

    /// The margin table row for a notional.
    fn tier_for(&self, notional: i128) -> (usize, MarginTier) {
        let tiers = self.spec.tiers();
        for (index, tier) in tiers.iter().enumerate() {
            if index + 1 == tiers.len() || notional <= tier.notional_up_to as i128 {
                return (index, *tier);
            }
        }
        unreachable!("a perp market has at least one margin tier")
    }
}

/// A perp account's margin as of now (marks, unsettled funding included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MarginView {
    /// Collateral plus unrealized PnL minus unsettled funding, units.
    pub equity: i128,
    /// Initial margin of the positions, units.
    pub initial: i128,
    /// Maintenance margin of the positions, units.
    pub maintenance: i128,
}

/// A position as seen from outside the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PositionView {
    /// Signed lots, long > 0.
    pub size: Lots,
    /// Signed cost basis, collateral units.
    pub open_notional: i128,
    /// Chosen leverage.
    pub leverage: u32,
    /// Isolated margin mode.
    pub isolated: bool,
    /// Margin held by the isolated position.
    pub isolated_margin: Units,
    /// Unrealized PnL at the mark, units.
    pub unrealized_pnl: i128,
    /// Funding owed and not yet settled (> 0: to pay), units.
    pub unsettled_funding: i128,
}

/// A perp market's prices and funding state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerpMarketView {
    /// The market's spec.
    pub spec: PerpSpec,
    /// Oracle price, ticks (0: none yet).
    pub oracle: Ticks,
    /// Mark price, ticks (0: none yet).
    pub mark: Ticks,
    /// Premium EMA, ppb.
    pub ema_premium_ppb: i64,
    /// Cumulative funding index, nano-units per lot.
    pub funding_index: i128,
    /// Funding pool, units.
    pub funding_pool: Units,
    /// Open interest, lots.
    pub open_interest: Lots,
    /// Last trade price, ticks (0: none).
    pub last_trade: Ticks,
}

/// Which margin bucket: the account's cross collateral or one isolated position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bucket {
    Cross,
    Isolated(u32),
}

/// `ceil(a / b)` for any sign of `a`, `b > 0`.
pub(super) fn ceil_div_signed(a: i128, b: i128) -> i128 {
    debug_assert!(b > 0);
    let q = a.div_euclid(b);
    if a.rem_euclid(b) == 0 {
        q
    } else {
        q + 1
    }
}

/// Lots an order on `side` may trade against a position of `size` without growing or
/// flipping it.
fn reduce_room(side: Side, size: Lots) -> Lots {
    match side {
        Side::Sell => size.max(0),
        Side::Buy => (-size).max(0),
    }
}

/// The largest `q <= lots` such that a trade of `q` between a buyer of size `buyer` and a
/// seller of size `seller` keeps total long lots `long + delta(q)` within `cap`. `delta` is
/// convex with `delta(0) = 0` (slopes -1, 0, 1, non-decreasing), so the allowed `q` form an
/// interval from 0 and a binary search finds its end.
fn oi_room(cap: Lots, long: Lots, buyer: Lots, seller: Lots, lots: Lots) -> Lots {
    let delta = |q: Lots| -> i128 {
        let (b, s, q) = (buyer as i128, seller as i128, q as i128);
        (b + q).max(0) - b.max(0) + (s - q).max(0) - s.max(0)
    };
    let room = (cap as i128 - long as i128).max(0);
    if delta(lots) <= room {
        return lots;
    }
    let (mut good, mut bad) = (0, lots);
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if delta(mid) <= room {
            good = mid;
        } else {
            bad = mid;
        }
    }
    good
}

/// The FOK dry run of a perp order: what `match_taker`'s fill-time limits would allow, fill
/// after fill, on simulated copies of the accounts it meets, without changing the engine.
#[derive(Default)]
pub(super) struct FillSim {
    /// Each account walked so far, as the fills so far left it (few: the taker and makers).
    parties: Vec<Party>,
    /// Long lots added so far.
    long_delta: Lots,
    /// The taker's account and the reserve its order will take.
    taker: Option<(u32, i128)>,
}

impl FillSim {
    /// A dry run of `taker`'s matching.
    pub(super) fn for_taker(taker: &Taker) -> FillSim {
        FillSim {
            taker: Some((
                taker.account,
                taker.reserve_per_lot * taker.remaining as i128,
            )),
            ..FillSim::default()
        }
    }

    /// The simulated state of `account`, loaded from the engine on first use. The taker's
    /// order is not reserved yet in a dry run: its reserve is taken out of its free collateral
    /// when its account is loaded (first as a taker or first as the owner of a self-trade
    /// maker alike), as `place` will before matching.
    fn party<L: PriceLadder>(&mut self, engine: &Engine<L>, account: u32, perp: u32) -> usize {
        if let Some(at) = self.parties.iter().position(|p| p.account == account) {
            return at;
        }
        let mut party = engine.party(account, perp);
        if let Some((taker, reserve)) = self.taker {
            if taker == account {
                party.free_cross -= reserve;
            }
        }
        self.parties.push(party);
        self.parties.len() - 1
    }

    /// A maker that matching would cancel (self-trade, reduce-only, bankruptcy): its reserve
    /// goes back to its owner's free collateral.
    pub(super) fn canceled<L: PriceLadder>(
        &mut self,
        engine: &Engine<L>,
        perp: u32,
        maker: &OrderNode,
    ) {
        let at = self.party(engine, maker.account, perp);
        self.parties[at].free_cross += engine.node_reserve_per_lot(maker) * maker.remaining as i128;
    }

    /// What the next fill against `maker` would do (for `wanted` lots at most), recorded.
    pub(super) fn fill<L: PriceLadder>(
        &mut self,
        engine: &Engine<L>,
        params: &MarketParams,
        taker: &Taker,
        maker: &OrderNode,
        price: Ticks,
        wanted: Lots,
    ) -> SimFill {
        let perp = params.perp;
        let t = self.party(engine, taker.account, perp);
        let m = self.party(engine, maker.account, perp);
        let taker_size = self.parties[t].position.size;
        let maker_size = self.parties[m].position.size;
        let mut lots = wanted;
        if maker.reduce_only() {
            let room = reduce_room(maker.side, maker_size);
            if room == 0 {
                // `match_taker` cancels it and goes on.
                self.canceled(engine, perp, maker);
                return SimFill::Skip;
            }
            lots = lots.min(room);
        }
        let (buyer, seller) = match taker.side {
            Side::Buy => (taker_size, maker_size),
            Side::Sell => (maker_size, taker_size),
        };
        let market = &engine.perps[perp as usize];
        let allowed = oi_room(
            market.oi_cap,
            market.long_lots + self.long_delta,
            buyer,
            seller,
            lots,
        );
        if allowed == 0 {
            return SimFill::Lots {
                lots: 0,
                stop: true,
            };
        }
        let fill = match engine.perp_fill_check(
            params,
            &self.parties[t],
            &self.parties[m],
            taker,
            maker,
            price,
            allowed,
        ) {
            PerpCheck::Stop => {
                return SimFill::Lots {
                    lots: 0,
                    stop: true,
                }
            }
            PerpCheck::CancelMaker => {
                self.canceled(engine, perp, maker);
                return SimFill::Skip;
            }
            PerpCheck::Fill(fill) => fill,
        };
        self.parties[t] = fill.taker_after;
        self.parties[m] = fill.maker_after;
        let (b, s, q) = (buyer as i128, seller as i128, fill.lots as i128);
        self.long_delta += ((b + q).max(0) - b.max(0) + (s - q).max(0) - s.max(0)) as Lots;
        SimFill::Lots {
            lots: fill.lots,
            stop: allowed < lots || fill.cut,
        }
    }
}

/// One simulated fill of a FOK dry run.
pub(super) enum SimFill {
    /// The maker would be canceled (a reduce-only order with nothing left to reduce, or one
    /// whose fill would take its bucket past bankruptcy).
    Skip,
    /// `lots` would trade; `stop` when matching stops after it (open interest at its cap, or
    /// the taker's bucket at its bankruptcy limit).
    Lots {
        /// Lots traded.
        lots: Lots,
        /// Matching stops here.
        stop: bool,
    },
}

/// What a fill can change of one account's money in one perp market: the inputs of the
/// fill-time bankruptcy rule (docs/perps.md, "Fill-time limits"), also kept per account by
/// the FOK dry run.
#[derive(Clone, Copy, Debug)]
pub(super) struct Party {
    /// Dense account index.
    pub(super) account: u32,
    /// Its position slot in the market (a flat default one if it has none yet).
    position: Position,
    /// Cross collateral `C`.
    collateral: i128,
    /// Cross bucket equity.
    cross_equity: i128,
    /// The isolated bucket's equity (0 for a cross position).
    iso_equity: i128,
    /// Free cross collateral (exact for an isolated position's account; the isolated margin
    /// move is the only reader).
    free_cross: i128,
}

impl Party {
    /// The bankruptcy rule: after a fill, the account's cross collateral, its cross equity
    /// and (isolated) the position's bucket equity are each >= 0, or no lower than before if
    /// they were already negative (only the insurance fund can be: mark moves on what it
    /// holds; every other account is kept >= 0).
    fn solvent_after(&self, after: &Party) -> bool {
        after.collateral >= self.collateral.min(0)
            && after.cross_equity >= self.cross_equity.min(0)
            && (!after.position.isolated || after.iso_equity >= self.iso_equity.min(0))
    }
}

/// One side of a fill, as the account trading it sees it.
struct FillSide {
    /// Signed lots (+ buys).
    lots: Lots,
    /// Notional, units.
    notional: i128,
    /// Fee charged to the account (the liquidated position's own is taken from its bucket).
    fee: i128,
    /// Order margin released by the fill.
    release: i128,
    /// Margin an isolated position wants moved in from cross collateral (before its cap).
    margin_wanted: i128,
}

/// Outcome of the fill-time checks of one perp fill.
// A value on the stack per fill, never stored: boxing the big variant would allocate on the
// data path.
#[allow(clippy::large_enum_variant)]
pub(super) enum PerpCheck {
    /// The taker's bucket cannot take a single lot more: matching stops.
    Stop,
    /// The maker's bucket cannot take the fill: the maker is canceled, matching goes on.
    CancelMaker,
    /// The fill goes ahead.
    Fill(PerpFill),
}

/// A perp fill the checks allowed, with the money moves `settle_perp_fill` makes.
#[derive(Clone, Copy)]
pub(super) struct PerpFill {
    /// Lots that trade.
    pub(super) lots: Lots,
    /// The taker was cut short of what it could otherwise trade: matching stops after this.
    pub(super) cut: bool,
    taker_fee: i128,
    maker_fee: i128,
    /// Margin moved from cross collateral into an isolated position (negative for the
    /// liquidated isolated position's own fee, which its margin pays).
    taker_in: i128,
    maker_in: i128,
    taker_after: Party,
    maker_after: Party,
}

/// Realized PnL and the new cost basis of a trade of signed `lots` at `notional` on a
/// position of `size` with basis `open_notional` (docs/perps.md, "Positions and fills").
fn trade_math(size: Lots, open_notional: i128, lots: Lots, notional: i128) -> (i128, i128) {
    let closing = size != 0 && (size > 0) != (lots > 0);
    if !closing {
        return (0, open_notional + lots.signum() as i128 * notional);
    }
    let closed = lots.abs().min(size.abs());
    let close_notional = notional * closed as i128 / lots.abs() as i128;
    let basis_share = open_notional * closed as i128 / size.abs() as i128;
    let realized = size.signum() as i128 * close_notional - basis_share;
    let mut new_on = open_notional - basis_share;
    if lots.abs() > closed {
        // The part past flat opens the other way, at the rest of the notional.
        new_on += lots.signum() as i128 * (notional - close_notional);
    }
    (realized, new_on)
}

/// The largest `q` in `0..=most` for which `ok(q)` holds, `ok(0)` assumed: `most` itself if
/// it passes, else a binary search. The checks are monotone in `q` but for rounding, so the
/// search may stop short of the true largest; whatever it returns passed `ok`.
fn largest_passing(most: Lots, mut ok: impl FnMut(Lots) -> bool) -> Lots {
    if most <= 0 || ok(most) {
        return most.max(0);
    }
    let (mut good, mut bad) = (0, most);
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if ok(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    good
}

/// `floor(a / b)` for any sign of `a`, `b > 0`.
fn floor_div_signed(a: i128, b: i128) -> i128 {
    a.div_euclid(b)
}

/// Median of a non-empty slice (the lower middle for an even count).
pub(super) fn median(values: &mut [Ticks]) -> Ticks {
    values.sort_unstable();
    values[(values.len() - 1) / 2]
}

fn median3(a: Ticks, b: Ticks, c: Ticks) -> Ticks {
    let mut values = [a, b, c];
    median(&mut values)
}

impl<L: PriceLadder> Engine<L> {
    // ---- registry and settings -------------------------------------------------------

    pub(super) fn create_perp_market(&mut self, spec: PerpSpec, out: &mut Vec<Event>) {
        if self.market_index.contains_key(&spec.market) {
            return Self::reject_admin(out, 0, RejectReason::AlreadyExists);
        }
        let Some(&collateral) = self.asset_index.get(&spec.collateral) else {
            return Self::reject_admin(out, 0, RejectReason::UnknownAsset);
        };
        if self.collateral.is_some_and(|c| c != collateral) {
            return Self::reject_admin(out, 0, RejectReason::InvalidMarket);
        }
        if !perp_spec_valid(&spec) {
            return Self::reject_admin(out, 0, RejectReason::InvalidMarket);
        }
        self.collateral = Some(collateral);
        let perp_index = self.perps.len() as u32;
        let max_fee_bps = spec.taker_fee_bps.max(spec.maker_fee_bps).max(0);
        let params = MarketParams {
            id: spec.market,
            base: collateral as usize,
            quote: collateral as usize,
            base_units_per_lot: 0,
            quote_units_per_tick_lot: spec.quote_units_per_tick_lot,
            min_lots: spec.min_lots,
            max_price: spec.max_price_ticks,
            maker_fee_bps: spec.maker_fee_bps,
            taker_fee_bps: spec.taker_fee_bps,
            reserve_fee_bps: max_fee_bps,
            perp: perp_index,
        };
        let market_index = self.markets.len() as u32;
        self.market_index.insert(spec.market, market_index);
        let max_key = spec.max_price_ticks as u32;
        self.markets.push(MarketState {
            params,
            spec: MarketSpec {
                market: spec.market,
                base: spec.collateral,
                quote: spec.collateral,
                base_units_per_lot: 0,
                quote_units_per_tick_lot: spec.quote_units_per_tick_lot,
                min_lots: spec.min_lots,
                max_price_ticks: spec.max_price_ticks,
                maker_fee_bps: spec.maker_fee_bps,
                taker_fee_bps: spec.taker_fee_bps,
            },
            ladders: [L::with_max_key(max_key), L::with_max_key(max_key)],
        });
        let key_mmr_ppb = spec
            .tiers()
            .iter()
            .map(|tier| tier.mmr_ppb as i128)
            .max()
            .unwrap_or(0);
        self.perps.push(PerpMarket {
            spec,
            market_index,
            oracle: 0,
            mark: 0,
            ema_premium_ppb: 0,
            premium_sum_ppb: 0,
            premium_samples: 0,
            last_trade: 0,
            funding_index: 0,
            funding_pool: 0,
            long_lots: 0,
            key_mmr_ppb,
            oi_cap: spec.open_interest_cap_lots.min(
                (MAX_POSITION_NOTIONAL
                    / (spec.max_price_ticks as i128 * spec.quote_units_per_tick_lot as i128))
                    as Lots,
            ),
            liq_longs: BTreeSet::new(),
            liq_shorts: BTreeSet::new(),
            multi: BTreeSet::new(),
        });
        if self.insurance == NIL {
            self.insurance = self.account_for(INSURANCE_ACCOUNT);
        }
    }

    /// The dense index of an account, creating it if new.
    pub(super) fn account_for(&mut self, account: AccountId) -> u32 {
        if let Some(&index) = self.account_index.get(&account) {
            return index;
        }
        let index = self.accounts.len() as u32;
        self.accounts.push(AccountState {
            id: account,
            balances: vec![Balance::default(); self.assets.len()],
            open_orders: 0,
            first_order: NIL,
            last_order: NIL,
            dirty: false,
            committed: Lanes::ZERO,
            perp: PerpAccount::default(),
            perp_touched: false,
        });
        self.account_index.insert(account, index);
        self.touch_account(index);
        index
    }

    /// The position slot of an account in a perp market, created (flat, max leverage,
    /// cross) if missing.
    pub(super) fn position_slot(&mut self, account: u32, perp: u32) -> usize {
        let positions = &self.accounts[account as usize].perp.positions;
        if let Some(at) = positions.iter().position(|p| p.perp == perp) {
            return at;
        }
        let flat = self.flat_position(perp);
        let positions = &mut self.accounts[account as usize].perp.positions;
        // Most accounts trade one perp market: grow one slot at a time (not Vec's 4).
        positions.reserve_exact(1);
        positions.push(flat);
        positions.len() - 1
    }

    /// The position of an account in a perp market, if it has a slot there.
    pub(super) fn position(&self, account: u32, perp: u32) -> Option<&Position> {
        self.accounts[account as usize]
            .perp
            .positions
            .iter()
            .find(|p| p.perp == perp)
    }

    fn perp_of(&self, market: MarketId) -> Result<(usize, u32), RejectReason> {
        let &market_index = self
            .market_index
            .get(&market)
            .ok_or(RejectReason::UnknownMarket)?;
        let perp = self.markets[market_index as usize].params.perp;
        if perp == NIL {
            return Err(RejectReason::NotPerpMarket);
        }
        Ok((market_index as usize, perp))
    }

    fn known_account(&self, account: AccountId) -> Result<u32, RejectReason> {
        match self.account_index.get(&account) {
            Some(&index) => Ok(index),
            None => Err(RejectReason::UnknownAccount),
        }
    }

    pub(super) fn transfer_collateral(
        &mut self,
        account: AccountId,
        amount: Units,
        out: &mut Vec<Event>,
    ) {
        let result = (|| {
            let collateral = self.collateral.ok_or(RejectReason::NotPerpMarket)? as usize;
            let index = self.known_account(account)?;
            if amount == 0 || amount == Units::MIN {
                return Err(RejectReason::InvalidQty);
            }
            if amount > 0 {
                let available = self.accounts[index as usize].balances[collateral].available();
                if available < amount {
                    self.note_shortfall(collateral, amount as i128, available as i128);
                    return Err(RejectReason::InsufficientBalance);
                }
                let state = &mut self.accounts[index as usize];
                state.balances[collateral].total -= amount;
                state.perp.collateral += amount;
                self.note_insurance(index, amount as i128);
            } else {
                let amount = -amount;
                let free = self.free_cross(index);
                let collateral_now = self.accounts[index as usize].perp.collateral as i128;
                if (amount as i128) > free.min(collateral_now) {
                    self.note_shortfall(collateral, amount as i128, free.min(collateral_now));
                    return Err(RejectReason::InsufficientMargin);
                }
                let state = &mut self.accounts[index as usize];
                state.perp.collateral -= amount;
                state.balances[collateral].total += amount;
                self.note_insurance(index, -(amount as i128));
            }
            self.touch_perp_account(index);
            Ok(())
        })();
        if let Err(reason) = result {
            Self::reject_admin(out, account, reason);
        }
    }

    pub(super) fn set_leverage(
        &mut self,
        account: AccountId,
        market: MarketId,
        leverage: u32,
        isolated: bool,
        out: &mut Vec<Event>,
    ) {
        let result = (|| {
            let (market_index, perp) = self.perp_of(market)?;
            let index = self.known_account(account)?;
            let spec = self.perps[perp as usize].spec;
            // The insurance fund backstops from its cross collateral: it is never isolated.
            if leverage < 1 || leverage > spec.max_leverage || (isolated && index == self.insurance)
            {
                return Err(RejectReason::InvalidLeverage);
            }
            if self.open_orders_in(index, market_index) > 0 {
                return Err(RejectReason::PositionOpen);
            }
            let current = self.position(index, perp).copied();
            if let Some(position) = current {
                if position.size != 0 && position.isolated != isolated {
                    return Err(RejectReason::PositionOpen);
                }
                if position.size != 0 && leverage < position.leverage {
                    // Lower leverage raises the initial margin: the bucket must still hold it.
                    let slot = self.position_slot(index, perp);
                    self.accounts[index as usize].perp.positions[slot].leverage = leverage;
                    let bucket = if isolated {
                        Bucket::Isolated(perp)
                    } else {
                        Bucket::Cross
                    };
                    let margin = self.margin(index, bucket);
                    let order_margin = if isolated {
                        0
                    } else {
                        self.accounts[index as usize].perp.order_margin as i128
                    };
                    if margin.equity - margin.initial - order_margin < 0 {
                        self.accounts[index as usize].perp.positions[slot].leverage =
                            position.leverage;
                        return Err(RejectReason::InvalidLeverage);
                    }
                }
            }
            let slot = self.position_slot(index, perp);
            let position = &mut self.accounts[index as usize].perp.positions[slot];
            position.leverage = leverage;
            position.isolated = isolated;
            self.touch_perp_account(index);
            Ok(())
        })();
        if let Err(reason) = result {
            Self::reject_admin(out, account, reason);
        }
    }

    pub(super) fn isolated_margin(
        &mut self,
        account: AccountId,
        market: MarketId,
        amount: Units,
        out: &mut Vec<Event>,
    ) {
        let result = (|| {
            let (_, perp) = self.perp_of(market)?;
            let index = self.known_account(account)?;
            if amount == 0 || amount == Units::MIN {
                return Err(RejectReason::InvalidQty);
            }
            let Some(position) = self.position(index, perp).copied() else {
                return Err(RejectReason::NoPosition);
            };
            if !position.isolated || position.size == 0 {
                return Err(RejectReason::NoPosition);
            }
            let collateral = self.collateral.ok_or(RejectReason::NotPerpMarket)? as usize;
            if amount > 0 {
                let free = self.free_cross(index);
                let collateral_now = self.accounts[index as usize].perp.collateral as i128;
                if (amount as i128) > free.min(collateral_now) {
                    self.note_shortfall(collateral, amount as i128, free.min(collateral_now));
                    return Err(RejectReason::InsufficientMargin);
                }
            } else {
                let margin = self.margin(index, Bucket::Isolated(perp));
                let removable = (margin.equity - margin.initial)
                    .min(position.isolated_margin as i128)
                    .max(0);
                if (-amount) as i128 > removable {
                    self.note_shortfall(collateral, -(amount as i128), removable);
                    return Err(RejectReason::InsufficientMargin);
                }
            }
            let slot = self.position_slot(index, perp);
            let state = &mut self.accounts[index as usize].perp;
            state.collateral -= amount;
            state.positions[slot].isolated_margin += amount;
            self.touch_perp_account(index);
            Ok(())
        })();
        if let Err(reason) = result {
            Self::reject_admin(out, account, reason);
        }
    }

    /// Open orders of an account in one market (walks the account's list).
    fn open_orders_in(&self, account: u32, market_index: usize) -> u32 {
        let mut count = 0;
        let mut handle = self.accounts[account as usize].first_order;
        while handle != NIL {
            let node = &self.orders[handle as usize];
            count += (node.market as usize == market_index) as u32;
            handle = node.account_next;
        }
        count
    }

    /// Marks an account whose perp state changed: hashed at the next commit, re-keyed in
    /// the liquidation index at the end of the command.
    pub(super) fn touch_perp_account(&mut self, index: u32) {
        self.touch_account(index);
        let account = &mut self.accounts[index as usize];
        if !account.perp_touched {
            account.perp_touched = true;
            self.perp_touched.push(index);
        }
    }

    // ---- margin ----------------------------------------------------------------------

    /// Funding a position owes and has not settled (> 0: it pays), rounded toward the payer.
    fn unsettled_funding(&self, position: &Position) -> i128 {
        let index = self.perps[position.perp as usize].funding_index;
        ceil_div_signed(position.size as i128 * index - position.funding_basis, PPB)
    }

    /// Unrealized PnL at the mark, initial and maintenance margin of one position.
    fn position_margin(&self, position: &Position) -> (i128, i128, i128) {
        if position.size == 0 {
            return (0, 0, 0);
        }
        let market = &self.perps[position.perp as usize];
        let value = position.size as i128 * market.mark as i128 * market.qu();
        let notional = value.abs();
        let (_, tier) = market.tier_for(notional);
        let leverage_rate = ceil_div(PPB, position.leverage as i128);
        let im_rate = (tier.imr_ppb as i128).max(leverage_rate);
        let im = ceil_div(notional * im_rate, PPB);
        let mm = ceil_div(notional * tier.mmr_ppb as i128, PPB);
        (value - position.open_notional, im, mm)
    }

    /// Equity and requirements of one bucket of an account.
    pub(super) fn margin(&self, account: u32, bucket: Bucket) -> MarginView {
        let state = &self.accounts[account as usize].perp;
        let mut view = MarginView {
            equity: match bucket {
                Bucket::Cross => state.collateral as i128,
                Bucket::Isolated(_) => 0,
            },
            ..MarginView::default()
        };
        for position in &state.positions {
            let in_bucket = match bucket {
                Bucket::Cross => !position.isolated,
                Bucket::Isolated(perp) => position.perp == perp,
            };
            if !in_bucket {
                continue;
            }
            if let Bucket::Isolated(_) = bucket {
                view.equity += position.isolated_margin as i128;
            }
            let (upnl, im, mm) = self.position_margin(position);
            view.equity += upnl - self.unsettled_funding(position);
            view.initial += im;
            view.maintenance += mm;
        }
        view
    }

    /// Cross collateral free of every requirement: equity - initial margin - order margin.
    pub(super) fn free_cross(&self, account: u32) -> i128 {
        let margin = self.margin(account, Bucket::Cross);
        margin.equity - margin.initial - self.accounts[account as usize].perp.order_margin as i128
    }

    // ---- orders ----------------------------------------------------------------------

    /// Units a perp order reserves per remaining lot: its margin (unless reduce-only) plus
    /// its worst fee, both rounded up per lot.
    pub(super) fn perp_reserve_per_lot(
        &self,
        params: &MarketParams,
        account: u32,
        price: Ticks,
        reduce_only: bool,
        tier: u8,
    ) -> i128 {
        let notional = params.notional(price, 1);
        let fee_part = ceil_div(notional * params.reserve_fee_bps as i128, BPS_DENOMINATOR);
        if reduce_only {
            return fee_part;
        }
        ceil_div(
            notional * self.order_margin_rate(params, account, tier),
            PPB,
        ) + fee_part
    }

    /// The initial margin rate of an account's orders in a market: the larger of the tier's
    /// rate and 1 / leverage, ppb.
    fn order_margin_rate(&self, params: &MarketParams, account: u32, tier: u8) -> i128 {
        let market = &self.perps[params.perp as usize];
        let leverage = self
            .position(account, params.perp)
            .map_or(market.spec.max_leverage, |p| p.leverage);
        let tier_rate = market.spec.tiers()[tier as usize].imr_ppb as i128;
        tier_rate.max(ceil_div(PPB, leverage as i128))
    }

    /// The pre-trade checks of a perp order (docs/perps.md, in order). Returns the limit
    /// price (market orders get the band's edge), the size (reduce-only orders are cut to
    /// what they may reduce), the reserve per lot and the margin tier.
    pub(super) fn perp_order_terms(
        &mut self,
        params: &MarketParams,
        account: u32,
        order: &NewOrder,
    ) -> Result<(Ticks, Lots, i128, u8), RejectReason> {
        let market = &self.perps[params.perp as usize];
        let oracle = market.oracle;
        if oracle == 0 {
            return Err(RejectReason::NoOraclePrice);
        }
        let (low, high) = self.band_edges(params.perp);
        let limit = match order.price {
            Some(price) if price < low || price > high => return Err(RejectReason::PriceBand),
            Some(price) => price,
            None => match order.side {
                Side::Buy => high,
                Side::Sell => low,
            },
        };
        let position = self.position(account, params.perp).copied();
        let size = position.map_or(0, |p| p.size);
        let mut qty = order.qty;
        if order.reduce_only {
            let reduces = match order.side {
                Side::Buy => size < 0,
                Side::Sell => size > 0,
            };
            let already = self.reduce_only_lots(account, params, order.side);
            let allowed = if reduces { size.abs() - already } else { 0 };
            if allowed <= 0 {
                return Err(RejectReason::ReduceOnly);
            }
            qty = qty.min(allowed);
        } else {
            let increase = Self::increasing_part(order.side, size, qty);
            if market.long_lots as i128 + increase as i128 > market.oi_cap as i128 {
                return Err(RejectReason::OpenInterestCap);
            }
        }
        let worst_notional = params.notional(limit, size.abs().saturating_add(qty));
        let tier = market.tier_for(worst_notional).0 as u8;
        let reserve_per_lot =
            self.perp_reserve_per_lot(params, account, limit, order.reduce_only, tier);
        // Reduce-only orders lower risk: they reserve their fee and need no margin, but one
        // whose limit lies past the bucket's bankruptcy price is refused (a market order's
        // edge is the engine's, not the user's: it is cut at fill time instead).
        if order.reduce_only
            && order.price.is_some()
            && self.reduce_only_past_bankruptcy(params, account, order.side, limit, qty, tier)
        {
            return Err(RejectReason::InsufficientMargin);
        }
        if !order.reduce_only {
            let required = reserve_per_lot * qty as i128
                + self.gap_requirement(params, account, order.side, limit, qty, tier);
            let free = self.free_cross(account);
            if required > free {
                self.note_collateral_shortfall(required, free);
                return Err(RejectReason::InsufficientMargin);
            }
        }
        Ok((limit, qty, reserve_per_lot, tier))
    }

    /// What an order crossing the mark must also cover, beyond its reserve: it starts under
    /// water by its gap past the mark, and its margin at the mark is higher than at its
    /// limit (checked, not reserved: it matters for the part that fills at once).
    fn gap_requirement(
        &self,
        params: &MarketParams,
        account: u32,
        side: Side,
        limit: Ticks,
        qty: Lots,
        tier: u8,
    ) -> i128 {
        let mark = self.perps[params.perp as usize].mark as i128;
        let gap = match side {
            Side::Buy => (limit as i128 - mark).max(0),
            Side::Sell => (mark - limit as i128).max(0),
        };
        let gap_value = gap * qty as i128 * params.quote_units_per_tick_lot as i128;
        let rate = self.order_margin_rate(params, account, tier);
        gap_value + ceil_div(gap_value * rate, PPB)
    }

    /// The part of an order on `side` for `qty` lots that could open new lots against a
    /// position of `size`.
    fn increasing_part(side: Side, size: Lots, qty: Lots) -> Lots {
        match side {
            Side::Buy if size >= 0 => qty,
            Side::Buy => (qty - size.abs()).max(0),
            Side::Sell if size <= 0 => qty,
            Side::Sell => (qty - size).max(0),
        }
    }

    /// The checks of a perp order's modify that re-enters it, as for a new order: the band
    /// for the new price, the reduce-only cap, the open-interest cap, and the margin (the new
    /// reserve less the old one, plus the gap past the mark, must fit the free collateral).
    /// Returns the new reserve per lot and tier.
    pub(super) fn perp_modify_terms(
        &mut self,
        params: &MarketParams,
        account: u32,
        node: &OrderNode,
        price: Ticks,
        qty: Lots,
        old_reserve: i128,
    ) -> Result<(i128, u8), RejectReason> {
        let market = &self.perps[params.perp as usize];
        let (low, high) = self.band_edges(params.perp);
        if price < low || price > high {
            return Err(RejectReason::PriceBand);
        }
        let size = self.position(account, params.perp).map_or(0, |p| p.size);
        if node.reduce_only() {
            let others = self.reduce_only_lots(account, params, node.side) - node.remaining;
            if qty > size.abs() - others {
                return Err(RejectReason::ReduceOnly);
            }
        }
        if !node.reduce_only() {
            let increase = Self::increasing_part(node.side, size, qty);
            if market.long_lots as i128 + increase as i128 > market.oi_cap as i128 {
                return Err(RejectReason::OpenInterestCap);
            }
        }
        let tier = market
            .tier_for(params.notional(price, size.abs().saturating_add(qty)))
            .0 as u8;
        let per_lot = self.perp_reserve_per_lot(params, account, price, node.reduce_only(), tier);
        if node.reduce_only()
            && self.reduce_only_past_bankruptcy(params, account, node.side, price, qty, tier)
        {
            return Err(RejectReason::InsufficientMargin);
        }
        if !node.reduce_only() {
            let required = per_lot * qty as i128 - old_reserve
                + self.gap_requirement(params, account, node.side, price, qty, tier);
            let free = self.free_cross(account);
            if required > free {
                self.note_collateral_shortfall(required, free);
                return Err(RejectReason::InsufficientMargin);
            }
        }
        Ok((per_lot, tier))
    }

    /// Records a margin refusal's shortfall in the collateral asset.
    fn note_collateral_shortfall(&mut self, needed: i128, available: i128) {
        if let Some(collateral) = self.collateral {
            self.note_shortfall(collateral as usize, needed, available);
        }
    }

    /// Lots of the account's resting reduce-only orders on one side of a market.
    fn reduce_only_lots(&self, account: u32, params: &MarketParams, side: Side) -> Lots {
        let market_index = self.perps[params.perp as usize].market_index;
        let Some(position) = self.position(account, params.perp) else {
            return 0;
        };
        if position.reduce_only_orders == 0 {
            return 0;
        }
        let mut lots = 0;
        let mut handle = self.accounts[account as usize].first_order;
        while handle != NIL {
            let node = &self.orders[handle as usize];
            if node.market == market_index && node.reduce_only() && node.side == side {
                lots += node.remaining;
            }
            handle = node.account_next;
        }
        lots
    }

    /// Keeps the per-position count of resting reduce-only orders.
    pub(super) fn count_reduce_only(&mut self, account: u32, market_index: u32, delta: i32) {
        let perp = self.markets[market_index as usize].params.perp;
        let slot = self.position_slot(account, perp);
        let position = &mut self.accounts[account as usize].perp.positions[slot];
        position.reduce_only_orders = position.reduce_only_orders.wrapping_add_signed(delta);
    }

    /// Cancels an account's reduce-only orders in a market that could no longer only reduce
    /// its position (it shrank, closed or flipped).
    fn trim_reduce_only(&mut self, account: u32, perp: u32, out: &mut Vec<Event>) {
        let Some(position) = self.position(account, perp).copied() else {
            return;
        };
        if position.reduce_only_orders == 0 {
            return;
        }
        let market_index = self.perps[perp as usize].market_index;
        let reducing_side = if position.size > 0 {
            Some(Side::Sell)
        } else if position.size < 0 {
            Some(Side::Buy)
        } else {
            None
        };
        let mut budget = position.size.abs();
        let mut handle = self.accounts[account as usize].first_order;
        while handle != NIL {
            let node = self.orders[handle as usize];
            let next = node.account_next;
            if node.market == market_index && node.reduce_only() {
                if Some(node.side) == reducing_side && node.remaining <= budget {
                    budget -= node.remaining;
                } else {
                    self.cancel_resting(handle, CancelReason::ReduceOnly, out);
                }
            }
            handle = next;
        }
    }

    // ---- fill-time limits ------------------------------------------------------------

    /// Lots an order on `side` may still trade without growing or flipping the account's
    /// position (reduce-only).
    pub(super) fn reduce_only_room(&self, account: u32, perp: u32, side: Side) -> Lots {
        let size = self.position(account, perp).map_or(0, |p| p.size);
        reduce_room(side, size)
    }

    /// The most of `lots` a fill between `taker` and `maker` may trade without taking open
    /// interest past the cap.
    pub(super) fn open_interest_room(
        &self,
        perp: u32,
        taker: &Taker,
        maker: &OrderNode,
        lots: Lots,
    ) -> Lots {
        let taker_size = self.position(taker.account, perp).map_or(0, |p| p.size);
        let maker_size = self.position(maker.account, perp).map_or(0, |p| p.size);
        let market = &self.perps[perp as usize];
        let (buyer, seller) = match taker.side {
            Side::Buy => (taker_size, maker_size),
            Side::Sell => (maker_size, taker_size),
        };
        oi_room(market.oi_cap, market.long_lots, buyer, seller, lots)
    }

    // ---- the bankruptcy rule at fill time ------------------------------------------

    /// An account's money as one fill in `perp` can change it.
    pub(super) fn party(&self, account: u32, perp: u32) -> Party {
        let position = self
            .position(account, perp)
            .copied()
            .unwrap_or_else(|| self.flat_position(perp));
        let cross = self.margin(account, Bucket::Cross);
        let state = &self.accounts[account as usize].perp;
        Party {
            account,
            position,
            collateral: state.collateral as i128,
            cross_equity: cross.equity,
            iso_equity: if position.isolated {
                self.margin(account, Bucket::Isolated(perp)).equity
            } else {
                0
            },
            free_cross: cross.equity - cross.initial - state.order_margin as i128,
        }
    }

    /// A party's state after one fill, exactly as `settle_perp_fill` and `apply_trade` will
    /// leave it, and the margin the fill moves from cross collateral into an isolated
    /// position: `min(wanted, free cross + release - fee, C - fee)`, at least 0, so that
    /// neither the cross bucket's free collateral nor `C` is taken below zero by it. The
    /// liquidated isolated position's own fills move nothing in and pay their fee from the
    /// isolated margin (`margin_in = -fee`).
    fn fill_effect(&self, party: &Party, side: &FillSide, liquidating: bool) -> (Party, i128) {
        let market = &self.perps[party.position.perp as usize];
        let (mark, qu, index) = (market.mark as i128, market.qu(), market.funding_index);
        let mut after = *party;
        let position = &mut after.position;
        let paid = ceil_div_signed(position.size as i128 * index - position.funding_basis, PPB);
        let value_before = position.size as i128 * mark * qu - position.open_notional - paid;
        let (realized, new_on) = trade_math(
            position.size,
            position.open_notional,
            side.lots,
            side.notional,
        );
        let new_size = position.size + side.lots;
        position.size = new_size;
        position.open_notional = new_on;
        position.funding_basis = new_size as i128 * index;
        let value_after = new_size as i128 * mark * qu - new_on;
        let mut margin_in = 0;
        if position.isolated {
            margin_in = if liquidating {
                -side.fee
            } else {
                let room = (party.free_cross + side.release - side.fee)
                    .min(party.collateral - side.fee)
                    .max(0);
                side.margin_wanted.min(room)
            };
            let mut margin = position.isolated_margin as i128 - paid + realized + margin_in;
            after.collateral -= side.fee + margin_in;
            if !liquidating && margin < 0 {
                after.collateral += margin;
                margin = 0;
            }
            if new_size == 0 {
                // Flat: the margin goes back to C; a liquidation's negative rest is the fund's.
                after.collateral += margin.max(0);
                margin = 0;
            }
            position.isolated_margin = to_units(margin);
            after.iso_equity = margin + value_after;
        } else {
            after.collateral += realized - paid - side.fee;
            after.cross_equity += value_after - value_before;
        }
        let moved = after.collateral - party.collateral;
        after.cross_equity += moved;
        after.free_cross += moved + side.release;
        (after, margin_in)
    }

    /// Margin an isolated fill of `lots` at `price` wants from cross collateral: the initial
    /// margin at the mark plus the gap to the mark if it trades worse than the mark.
    fn margin_wanted(
        &self,
        params: &MarketParams,
        party: &Party,
        side: Side,
        tier: u8,
        price: Ticks,
        lots: Lots,
    ) -> i128 {
        if !party.position.isolated {
            return 0;
        }
        let mark = self.perps[params.perp as usize].mark as i128;
        let qu = params.quote_units_per_tick_lot as i128;
        let rate = self.order_margin_rate(params, party.account, tier);
        let gap = match side {
            Side::Buy => price as i128 - mark,
            Side::Sell => mark - price as i128,
        };
        ceil_div(mark * lots as i128 * qu * rate, PPB) + (gap * lots as i128 * qu).max(0)
    }

    /// The fill-time bankruptcy rule (docs/perps.md, "Fill-time limits"): no fill takes an
    /// account's bucket past its bankruptcy price. The taker trades the largest part of
    /// `lots` that keeps its collateral and equity >= 0 ([`Party::solvent_after`]); if that
    /// is nothing, matching stops. The maker must take that part whole, or it is canceled.
    /// The liquidated account's own orders are not checked (their limit is the bankruptcy
    /// price, fee included); their taker fee is capped at what the trade leaves in the
    /// bucket, `max(0, min(collateral, equity))`.
    #[allow(clippy::too_many_arguments)] // one fill's inputs; a struct would only rename them
    pub(super) fn perp_fill_check(
        &self,
        params: &MarketParams,
        taker_party: &Party,
        maker_party: &Party,
        taker: &Taker,
        maker: &OrderNode,
        price: Ticks,
        lots: Lots,
    ) -> PerpCheck {
        let liquidation = self.liquidating == taker.account;
        let sign = if taker.side == Side::Buy { 1 } else { -1 };
        let taker_side = |q: Lots| -> (Party, i128, i128) {
            let notional = params.notional(price, q);
            let mut side = FillSide {
                lots: sign * q,
                notional,
                fee: 0,
                release: taker.reserve_per_lot * q as i128,
                margin_wanted: 0,
            };
            if liquidation {
                let due = fee(notional, params.taker_fee_bps);
                let (bare, _) = self.fill_effect(taker_party, &side, true);
                let left = if !bare.position.isolated {
                    bare.collateral.min(bare.cross_equity)
                } else if bare.position.size == 0 {
                    // What it handed back to C.
                    bare.collateral - taker_party.collateral
                } else {
                    (bare.position.isolated_margin as i128).min(bare.iso_equity)
                };
                side.fee = due.min(left.max(0));
            } else {
                side.fee = fee(notional, params.taker_fee_bps);
                side.margin_wanted =
                    self.margin_wanted(params, taker_party, taker.side, taker.tier, price, q);
            }
            let (after, margin_in) = self.fill_effect(taker_party, &side, liquidation);
            (after, margin_in, side.fee)
        };
        let q = if liquidation {
            lots
        } else {
            largest_passing(lots, |q| taker_party.solvent_after(&taker_side(q).0))
        };
        if q == 0 {
            return PerpCheck::Stop;
        }
        let (taker_after, taker_in, taker_fee) = taker_side(q);
        let notional = params.notional(price, q);
        let maker_side = FillSide {
            lots: -sign * q,
            notional,
            fee: fee(notional, params.maker_fee_bps),
            release: self.node_reserve_per_lot(maker) * q as i128,
            margin_wanted: self.margin_wanted(
                params,
                maker_party,
                maker.side,
                maker.tier,
                price,
                q,
            ),
        };
        let (maker_after, maker_in) = self.fill_effect(maker_party, &maker_side, false);
        if !maker_party.solvent_after(&maker_after) {
            return PerpCheck::CancelMaker;
        }
        PerpCheck::Fill(PerpFill {
            lots: q,
            cut: q < lots,
            taker_fee,
            maker_fee: maker_side.fee,
            taker_in,
            maker_in,
            taker_after,
            maker_after,
        })
    }

    /// Whether a reduce-only limit order, filled completely at its limit now (the worst it
    /// can fill at, paying the higher of the two fees), would take the account's bucket past
    /// its bankruptcy price: then it is refused `insufficient_margin` up front.
    fn reduce_only_past_bankruptcy(
        &mut self,
        params: &MarketParams,
        account: u32,
        side: Side,
        limit: Ticks,
        qty: Lots,
        tier: u8,
    ) -> bool {
        let party = self.party(account, params.perp);
        let notional = params.notional(limit, qty);
        let fill = FillSide {
            lots: if side == Side::Buy { qty } else { -qty },
            notional,
            fee: fee(notional, params.reserve_fee_bps),
            release: 0,
            margin_wanted: self.margin_wanted(params, &party, side, tier, limit, qty),
        };
        let (after, _) = self.fill_effect(&party, &fill, false);
        if party.solvent_after(&after) {
            return false;
        }
        let short = [
            after.collateral,
            after.cross_equity,
            if after.position.isolated {
                after.iso_equity
            } else {
                0
            },
        ]
        .into_iter()
        .min()
        .unwrap_or(0);
        self.note_collateral_shortfall(party.collateral - short, party.collateral);
        true
    }

    // ---- fills -----------------------------------------------------------------------

    /// Settles a position's funding into its bucket and the market's pool.
    fn settle_funding(&mut self, account: u32, slot: usize) -> i128 {
        let position = self.accounts[account as usize].perp.positions[slot];
        let market = &self.perps[position.perp as usize];
        let exact = position.size as i128 * market.funding_index - position.funding_basis;
        let paid = ceil_div_signed(exact, PPB);
        let basis = position.size as i128 * market.funding_index;
        if paid != 0 {
            self.perps[position.perp as usize].funding_pool += to_units(paid);
            let state = &mut self.accounts[account as usize].perp;
            if position.isolated {
                state.positions[slot].isolated_margin -= to_units(paid);
            } else {
                state.collateral -= to_units(paid);
            }
        }
        self.accounts[account as usize].perp.positions[slot].funding_basis = basis;
        paid
    }

    /// Applies a trade of `lots` (signed: + buys) at signed-positive `notional` to an
    /// account's position: settles funding, realizes PnL on the closed part, moves open
    /// interest, emits `Position`. `margin_in` moves from cross collateral into an isolated
    /// position's margin (the filled part of the order's reserved margin).
    pub(super) fn apply_trade(
        &mut self,
        account: u32,
        perp: u32,
        lots: Lots,
        notional: i128,
        margin_in: i128,
        out: &mut Vec<Event>,
    ) {
        debug_assert!(lots != 0 && notional >= 0);
        let slot = self.position_slot(account, perp);
        let funding_paid = self.settle_funding(account, slot);
        let state = &mut self.accounts[account as usize].perp;
        let position = &mut state.positions[slot];
        let size = position.size;
        let mut bad_debt: Units = 0;
        let (realized, new_on) = trade_math(size, position.open_notional, lots, notional);
        let new_size = size + lots;
        let liquidated = self.liquidating == account;
        position.size = new_size;
        position.open_notional = new_on;
        position.funding_basis = new_size as i128 * self.perps[perp as usize].funding_index;
        let mut returned = None;
        if position.isolated {
            position.isolated_margin += to_units(realized + margin_in);
            state.collateral -= to_units(margin_in);
            if !liquidated && position.isolated_margin < 0 {
                // A voluntary trade's loss past the isolated margin is the account's own:
                // its cross collateral tops the margin up to zero, never the fund (the
                // fill-time bankruptcy rule allowed the fill only if `C` stays >= 0).
                state.collateral += position.isolated_margin;
                position.isolated_margin = 0;
            }
            if new_size == 0 {
                // Flat: the isolated margin goes back to cross collateral; in a liquidation a
                // loss past it is the bucket's bad debt, carried by the insurance fund, never
                // by the account's cross collateral.
                bad_debt = position.isolated_margin.min(0);
                let handed_back = position.isolated_margin.max(0);
                state.collateral += handed_back;
                position.isolated_margin = 0;
                returned = Some((account, perp, handed_back));
            }
        } else {
            state.collateral += to_units(realized);
        }
        let open_notional = position.open_notional;
        if liquidated {
            self.isolated_returned = returned;
        }
        if bad_debt < 0 {
            // Cover-to-zero of a liquidated isolated bucket (a voluntary fill cannot get here).
            let insurance = self.insurance;
            self.accounts[insurance as usize].perp.collateral += bad_debt;
            if liquidated {
                self.insurance_ledger += bad_debt as i128;
            }
            self.touch_perp_account(insurance);
        }
        if account == self.insurance {
            self.insurance_ledger += realized - funding_paid;
        }
        let market = &mut self.perps[perp as usize];
        market.long_lots += new_size.max(0) - size.max(0);
        let market_id = market.spec.market;
        self.touch_perp_account(account);
        out.push(Event::Position {
            account: self.accounts[account as usize].id,
            market: market_id,
            size: new_size,
            open_notional,
            realized_pnl: to_units(realized),
            funding_paid: to_units(funding_paid),
        });
    }

    /// One perp fill between a taker and a maker order, as `perp_fill_check` allowed it:
    /// releases both reserves, charges fees from cross collateral into the fee pool (the
    /// liquidated isolated position's from its margin), moves isolated margin and the
    /// positions.
    pub(super) fn settle_perp_fill(
        &mut self,
        params: &MarketParams,
        taker: &Taker,
        maker: &OrderNode,
        price: Ticks,
        fill: &PerpFill,
        out: &mut Vec<Event>,
    ) {
        let lots = fill.lots;
        let notional = params.notional(price, lots);
        let (taker_fee, maker_fee) = (fill.taker_fee, fill.maker_fee);
        let taker_release = taker.reserve_per_lot * lots as i128;
        let maker_release = self.node_reserve_per_lot(maker) * lots as i128;
        {
            let state = &mut self.accounts[taker.account as usize].perp;
            state.order_margin -= to_units(taker_release);
            state.collateral -= to_units(taker_fee);
        }
        {
            let state = &mut self.accounts[maker.account as usize].perp;
            state.order_margin -= to_units(maker_release);
            state.collateral -= to_units(maker_fee);
        }
        self.assets[params.quote].fee_pool += to_units(taker_fee + maker_fee);
        self.note_insurance(taker.account, -taker_fee);
        self.note_insurance(maker.account, -maker_fee);
        self.perps[params.perp as usize].last_trade = price;
        out.push(self.fill_event(params, taker, maker, price, lots, (taker_fee, maker_fee)));
        let signed = match taker.side {
            Side::Buy => lots,
            Side::Sell => -lots,
        };
        self.apply_trade(
            taker.account,
            params.perp,
            signed,
            notional,
            fill.taker_in,
            out,
        );
        self.apply_trade(
            maker.account,
            params.perp,
            -signed,
            notional,
            fill.maker_in,
            out,
        );
        // The check's prediction is the rule; the fill must have done exactly that (the fund
        // aside: a liquidated isolated position's cover-to-zero may move its collateral).
        for (account, after) in [
            (taker.account, &fill.taker_after),
            (maker.account, &fill.maker_after),
        ] {
            debug_assert!(
                account == self.insurance
                    || self.accounts[account as usize].perp.collateral as i128 == after.collateral,
                "perp fill moved collateral other than checked"
            );
        }
    }

    // ---- oracle, mark and funding ----------------------------------------------------

    pub(super) fn oracle(
        &mut self,
        market: MarketId,
        prices: &[Ticks; MAX_ORACLE_SOURCES],
        count: u8,
        out: &mut Vec<Event>,
    ) {
        let (market_index, perp) = match self.perp_of(market) {
            Ok(found) => found,
            Err(reason) => return Self::reject_admin(out, 0, reason),
        };
        let max_price = self.markets[market_index].params.max_price;
        let count = count as usize;
        if count == 0
            || count > MAX_ORACLE_SOURCES
            || prices[..count].iter().any(|&p| p < 1 || p > max_price)
        {
            return Self::reject_admin(out, 0, RejectReason::InvalidPrice);
        }
        let mut sources = *prices;
        let oracle = median(&mut sources[..count]);
        let premium = self.premium_sample(market_index, perp, oracle);
        let book_mid = {
            let book = &self.markets[market_index];
            match (book.best_price(Side::Buy), book.best_price(Side::Sell)) {
                (Some(bid), Some(ask)) => (bid + ask) / 2,
                _ => oracle,
            }
        };
        let state = &mut self.perps[perp as usize];
        state.oracle = oracle;
        state.ema_premium_ppb += (premium - state.ema_premium_ppb) / EMA_DIVISOR;
        state.premium_sum_ppb = state.premium_sum_ppb.saturating_add(premium);
        state.premium_samples = state.premium_samples.saturating_add(1);
        let ema_price = oracle as i128 + oracle as i128 * state.ema_premium_ppb as i128 / PPB;
        let last = if state.last_trade > 0 {
            state.last_trade
        } else {
            oracle
        };
        let ema_price = ema_price.clamp(1, max_price as i128) as Ticks;
        state.mark = median3(ema_price, book_mid, last).clamp(1, max_price);
        out.push(Event::OraclePrice {
            market,
            oracle,
            mark: self.perps[perp as usize].mark,
            premium_ppb: premium,
        });
        self.cancel_outside_band(market_index, perp, out);
        self.liquidation_scan(perp, out);
    }

    /// The band around the oracle, `[low, high]` in ticks.
    fn band_edges(&self, perp: u32) -> (Ticks, Ticks) {
        let market = &self.perps[perp as usize];
        let oracle = market.oracle as i128;
        let band = market.spec.price_band_ppb as i128;
        let low = ceil_div(oracle * (PPB - band).max(0), PPB).max(1) as Ticks;
        let high =
            ((oracle * (PPB + band)) / PPB).min(market.spec.max_price_ticks as i128) as Ticks;
        (low, high)
    }

    /// After an oracle move: resting orders that now cross the band (bids above its top,
    /// asks below its bottom) are canceled (`price_band`), so no fill happens outside the
    /// band of the latest oracle. They sit at the best end of their side: the walk costs
    /// what it cancels.
    fn cancel_outside_band(&mut self, market_index: usize, perp: u32, out: &mut Vec<Event>) {
        let (low, high) = self.band_edges(perp);
        for side in [Side::Buy, Side::Sell] {
            loop {
                let market = &self.markets[market_index];
                let Some(best) = market.best_price(side) else {
                    break;
                };
                let outside = match side {
                    Side::Buy => best > high,
                    Side::Sell => best < low,
                };
                if !outside {
                    break;
                }
                let key = market.params.key(side, best);
                let handle = market.ladder(side).get(key).expect("best level").head;
                self.cancel_resting(handle, CancelReason::PriceBand, out);
            }
        }
    }

    /// The premium now: `(max(impact_bid - oracle, 0) - max(oracle - impact_ask, 0)) /
    /// oracle`, ppb; a side without `impact_notional` of depth contributes 0.
    fn premium_sample(&self, market_index: usize, perp: u32, oracle: Ticks) -> i64 {
        let impact = self.perps[perp as usize].spec.impact_notional as i128;
        let oracle = oracle as i128;
        let bid = self.impact_price(market_index, Side::Buy, impact);
        let ask = self.impact_price(market_index, Side::Sell, impact);
        let mut premium = 0i128;
        if let Some((notional, lots)) = bid {
            // impact bid = notional / (lots * QU); compare with the oracle in the same units.
            let qu = self.markets[market_index].params.quote_units_per_tick_lot as i128;
            let gap = notional - oracle * lots * qu;
            if gap > 0 {
                premium += gap * PPB / (oracle * lots * qu);
            }
        }
        if let Some((notional, lots)) = ask {
            let qu = self.markets[market_index].params.quote_units_per_tick_lot as i128;
            let gap = oracle * lots * qu - notional;
            if gap > 0 {
                premium -= gap * PPB / (oracle * lots * qu);
            }
        }
        premium.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Notional and lots of the best orders on `side` worth at least `impact` (the last
    /// level taken in part), or `None` if the side is not that deep.
    fn impact_price(&self, market_index: usize, side: Side, impact: i128) -> Option<(i128, i128)> {
        let market = &self.markets[market_index];
        let ladder = market.ladder(side);
        let mut key = ladder.first();
        let (mut notional, mut lots) = (0i128, 0i128);
        while let Some(k) = key {
            let price = market.params.price(side, k);
            let level = ladder.get(k).expect("occupied level");
            let per_lot = market.params.notional(price, 1);
            let need = ceil_div(impact - notional, per_lot).min(level.total_lots as i128);
            notional += need * per_lot;
            lots += need;
            if notional >= impact {
                return Some((notional, lots));
            }
            key = ladder.next_after(k);
        }
        None
    }

    pub(super) fn funding(&mut self, market: MarketId, out: &mut Vec<Event>) {
        let perp = match self.perp_of(market) {
            Ok((_, perp)) => perp,
            Err(reason) => return Self::reject_admin(out, 0, reason),
        };
        let state = &mut self.perps[perp as usize];
        if state.oracle == 0 {
            return Self::reject_admin(out, 0, RejectReason::NoOraclePrice);
        }
        let average = if state.premium_samples == 0 {
            0
        } else {
            state.premium_sum_ppb / state.premium_samples as i64
        };
        let interest = state.spec.interest_ppb as i64;
        let cap = state.spec.funding_cap_ppb as i64;
        let rate = (average
            + (interest - average).clamp(-FUNDING_INTEREST_CLAMP_PPB, FUNDING_INTEREST_CLAMP_PPB))
        .clamp(-cap, cap);
        state.funding_index += rate as i128 * state.oracle as i128 * state.qu();
        state.premium_sum_ppb = 0;
        state.premium_samples = 0;
        out.push(Event::Funding {
            market,
            rate_ppb: rate,
            index: state.funding_index,
        });
        self.liquidation_scan(perp, out);
    }

    // ---- liquidation index -----------------------------------------------------------

    /// End of a command: re-keys every account whose perp state changed and cancels
    /// reduce-only orders that no longer only reduce.
    pub(super) fn finish_perp_command(&mut self, out: &mut Vec<Event>) {
        while let Some(index) = self.perp_touched.pop() {
            self.accounts[index as usize].perp_touched = false;
            for slot in 0..self.accounts[index as usize].perp.positions.len() {
                let perp = self.accounts[index as usize].perp.positions[slot].perp;
                self.trim_reduce_only(index, perp, out);
            }
            // trim_reduce_only may touch the account again; its re-key below covers it.
            self.accounts[index as usize].perp_touched = false;
            self.rekey(index);
        }
    }

    /// Removes an account's positions from the liquidation index and inserts them again
    /// under keys computed from its current state.
    fn rekey(&mut self, index: u32) {
        let count = self.accounts[index as usize].perp.positions.len();
        for slot in 0..count {
            let position = self.accounts[index as usize].perp.positions[slot];
            let market = &mut self.perps[position.perp as usize];
            match position.keyed {
                Keyed::None => {}
                Keyed::Long(key) => {
                    market.liq_longs.remove(&(key, index));
                }
                Keyed::Short(key) => {
                    market.liq_shorts.remove(&(key, index));
                }
                Keyed::Multi => {
                    market.multi.remove(&index);
                }
            }
            self.accounts[index as usize].perp.positions[slot].keyed = Keyed::None;
        }
        if index == self.insurance {
            return;
        }
        let state = &self.accounts[index as usize].perp;
        let cross_open = state
            .positions
            .iter()
            .filter(|p| !p.isolated && p.size != 0)
            .count();
        let collateral = state.collateral as i128;
        for slot in 0..count {
            let position = self.accounts[index as usize].perp.positions[slot];
            if position.size == 0 {
                continue;
            }
            let keyed = if position.isolated {
                self.key_of(&position, position.isolated_margin as i128)
            } else if cross_open == 1 {
                self.key_of(&position, collateral)
            } else {
                Keyed::Multi
            };
            let market = &mut self.perps[position.perp as usize];
            match keyed {
                Keyed::None => {}
                Keyed::Long(key) => {
                    market.liq_longs.insert((key, index));
                }
                Keyed::Short(key) => {
                    market.liq_shorts.insert((key, index));
                }
                Keyed::Multi => {
                    market.multi.insert(index);
                }
            }
            self.accounts[index as usize].perp.positions[slot].keyed = keyed;
        }
    }

    /// The liquidation key of a position alone in a bucket holding `collateral`: a superset
    /// bound (docs/perps.md), exact in integers.
    fn key_of(&self, position: &Position, collateral: i128) -> Keyed {
        let size = position.size as i128;
        let on = position.open_notional;
        let basis = position.funding_basis;
        if size > 0 {
            let numerator = (on - collateral + KEY_SLACK_UNITS) * PPB - basis;
            Keyed::Long(ceil_div_signed(numerator, size))
        } else {
            let numerator = (collateral - on - KEY_SLACK_UNITS) * PPB + basis;
            Keyed::Short(floor_div_signed(numerator, -size))
        }
    }

    /// After a mark or funding move: every bucket the index says may be under maintenance
    /// is checked in full and liquidated if it is.
    fn liquidation_scan(&mut self, perp: u32, out: &mut Vec<Event>) {
        self.finish_perp_command(out);
        let mut candidates = std::mem::take(&mut self.liq_scratch);
        // A liquidation (its ADL above all) can push others under: repeat until a pass
        // liquidates nothing. Each pass that does closes at least one bucket's position.
        loop {
            candidates.clear();
            let market = &self.perps[perp as usize];
            let long_threshold = market.long_threshold();
            let short_threshold = market.short_threshold();
            for &(_, account) in market.liq_longs.range((long_threshold + 1, 0)..) {
                candidates.push(account);
            }
            for &(_, account) in market.liq_shorts.range(..(short_threshold, 0)) {
                candidates.push(account);
            }
            candidates.extend(market.multi.iter().copied());
            self.stats.liquidation_candidates += candidates.len() as u64;
            let mut liquidated = false;
            for &account in &candidates {
                let Some(position) = self.position(account, perp).copied() else {
                    continue;
                };
                if position.size == 0 {
                    continue;
                }
                let bucket = if position.isolated {
                    Bucket::Isolated(perp)
                } else {
                    Bucket::Cross
                };
                let margin = self.margin(account, bucket);
                if margin.equity < margin.maintenance {
                    self.liquidate(account, bucket, out);
                    liquidated = true;
                }
            }
            self.finish_perp_command(out);
            if !liquidated {
                break;
            }
        }
        self.liq_scratch = candidates;
    }

    // ---- liquidation -----------------------------------------------------------------

    /// Liquidates a bucket under maintenance: cancels the account's perp orders, then per
    /// position: the book in chunks, the backstop, auto-deleveraging (docs/perps.md).
    fn liquidate(&mut self, account: u32, bucket: Bucket, out: &mut Vec<Event>) {
        self.stats.liquidations += 1;
        self.cancel_perp_orders(account, bucket, out);
        self.liquidating = account;
        self.liquidate_positions(account, bucket, out);
        self.liquidating = NIL;
        self.isolated_returned = None;
    }

    /// Step 2 of a liquidation, per position of the bucket in slot order: the book, then the
    /// bankruptcy close of what is left.
    fn liquidate_positions(&mut self, account: u32, bucket: Bucket, out: &mut Vec<Event>) {
        let perps: Vec<u32> = self.accounts[account as usize]
            .perp
            .positions
            .iter()
            .filter(|p| {
                p.size != 0
                    && match bucket {
                        Bucket::Cross => !p.isolated,
                        Bucket::Isolated(perp) => p.perp == perp,
                    }
            })
            .map(|p| p.perp)
            .collect();
        // A step may leave the bucket healthy but its collateral negative (a chunk or close
        // realized a loss that other positions' unrealized PnL or funding still covers):
        // the liquidation then goes on to the next position until the collateral is >= 0
        // (at the last, the bucket is flat and its collateral is its equity, >= 0).
        for perp in perps {
            let margin = self.margin(account, bucket);
            let in_debt = self.bucket_collateral(account, bucket) < 0;
            if margin.equity >= margin.maintenance && !in_debt {
                break;
            }
            // The book step itself runs only while equity > 0 (checked per chunk).
            self.liquidate_on_book(account, bucket, perp, out);
            let size = self.position(account, perp).map_or(0, |p| p.size);
            let margin = self.margin(account, bucket);
            let in_debt = self.bucket_collateral(account, bucket) < 0;
            if size != 0 && (margin.equity < margin.maintenance || in_debt) {
                self.close_at_bankruptcy(account, bucket, perp, out);
            }
        }
    }

    fn cancel_perp_orders(&mut self, account: u32, bucket: Bucket, out: &mut Vec<Event>) {
        let mut handle = self.accounts[account as usize].first_order;
        while handle != NIL {
            let node = self.orders[handle as usize];
            let next = node.account_next;
            let perp = self.markets[node.market as usize].params.perp;
            let in_bucket = perp != NIL
                && match bucket {
                    Bucket::Cross => true,
                    Bucket::Isolated(p) => p == perp,
                };
            if in_bucket {
                self.cancel_resting(handle, CancelReason::Liquidation, out);
            }
            handle = next;
        }
    }

    /// Step 1: IOC market orders closing the position, at most the chunk notional each,
    /// limited to the price band, while the bucket is under maintenance and the book fills.
    fn liquidate_on_book(&mut self, account: u32, bucket: Bucket, perp: u32, out: &mut Vec<Event>) {
        let market_index = self.perps[perp as usize].market_index as usize;
        let params = self.markets[market_index].params;
        loop {
            let size = self.position(account, perp).map_or(0, |p| p.size);
            let margin = self.margin(account, bucket);
            // Only while under maintenance and equity > 0, checked before every chunk: a
            // chunk's fees may take equity to zero or below, then the bankruptcy close goes on.
            if size == 0 || margin.equity >= margin.maintenance || margin.equity <= 0 {
                return;
            }
            let market = &self.perps[perp as usize];
            let per_lot = params.notional(market.mark, 1).max(1);
            let chunk = (market.spec.liquidation_chunk_notional as i128 / per_lot)
                .clamp(1, size.abs() as i128) as Lots;
            let side = if size > 0 { Side::Sell } else { Side::Buy };
            let (low, high) = self.band_edges(perp);
            // Never worse than the band's edge, nor than the bankruptcy price of the whole
            // position with its taker fee `t` (bps): selling all `|s|` lots at `p` keeps
            // `E + s * (p - m) * QU - |s| * p * QU * t / 10^4 >= 0` (a buy likewise), so
            // `p >= ceil((s*m*QU - E) * 10^4 / (|s| * QU * (10^4 - t)))` for a sell and
            // `p <= floor((|s|*m*QU + E) * 10^4 / (|s| * QU * (10^4 + t)))` for a buy. The
            // per-fill rounding of the fee is caught by its cap at fill time.
            let taker_bps = params.taker_fee_bps.max(0) as i128;
            let signed_value = size as i128 * market.mark as i128 * market.qu() - margin.equity;
            let lots_value = size.unsigned_abs() as i128 * market.qu();
            let limit = match side {
                Side::Sell => (low as i128).max(ceil_div_signed(
                    signed_value * BPS_DENOMINATOR,
                    lots_value * (BPS_DENOMINATOR - taker_bps),
                )) as Ticks,
                Side::Buy => (high as i128).min(floor_div_signed(
                    -signed_value * BPS_DENOMINATOR,
                    lots_value * (BPS_DENOMINATOR + taker_bps),
                )) as Ticks,
            };
            let mut taker = Taker {
                account,
                oid: LIQUIDATION_OID,
                side,
                limit: Some(limit),
                remaining: chunk,
                stp: SelfTradePrevention::CancelTaker,
                reserve_per_lot: 0,
                reduce_only: true,
                tier: 0,
            };
            let fills_from = out.len();
            self.match_taker(market_index, &mut taker, out);
            let filled = chunk - taker.remaining;
            if filled == 0 {
                return;
            }
            let notional: i128 = out[fills_from..]
                .iter()
                .map(|event| match *event {
                    Event::Fill { price, qty, .. } => params.notional(price, qty),
                    _ => 0,
                })
                .sum();
            let fee_due = ceil_div(notional * market_fee_ppb(&self.perps[perp as usize]), PPB);
            // Capped at what the chunk left: the bucket's collateral and its equity (so the
            // fee never creates bad debt), or an isolated position's handback if it closed.
            let (source, mut available) = self.fee_source(account, bucket, perp);
            if source == bucket {
                available = available.min(self.margin(account, bucket).equity.max(0));
            }
            let fee = fee_due.min(available);
            self.move_to_insurance(account, source, fee);
            out.push(Event::Liquidation {
                account: self.accounts[account as usize].id,
                market: params.id,
                step: LiquidationStep::Book,
                lots: filled,
                notional: to_units(notional),
                fee: to_units(fee),
                bad_debt: 0,
            });
            if taker.remaining > 0 {
                return;
            }
        }
    }

    /// Where a liquidation fee is taken from and how much is there: the bucket's collateral,
    /// or, for an isolated position the step just closed, what it handed back to cross
    /// collateral (so the fee is paid from the bucket's own money either way).
    fn fee_source(&mut self, account: u32, bucket: Bucket, perp: u32) -> (Bucket, i128) {
        // Only this position's own handback counts: other isolated positions (a maker, an ADL
        // counterparty) may have gone flat in the same step.
        let returned = match self.isolated_returned.take() {
            Some((owner, market, units)) if owner == account && market == perp => units as i128,
            _ => 0,
        };
        match bucket {
            Bucket::Isolated(_) if self.position(account, perp).is_none_or(|p| p.size == 0) => {
                (Bucket::Cross, returned)
            }
            _ => (bucket, self.bucket_collateral(account, bucket).max(0)),
        }
    }

    /// Notes a move of the insurance fund's collateral that its own commands or fills made
    /// (its transfers, the fees of its orders), for the ledger `check_invariants` compares.
    fn note_insurance(&mut self, account: u32, amount: i128) {
        if account == self.insurance {
            self.insurance_ledger += amount;
        }
    }

    fn bucket_collateral(&self, account: u32, bucket: Bucket) -> i128 {
        match bucket {
            Bucket::Cross => self.accounts[account as usize].perp.collateral as i128,
            Bucket::Isolated(perp) => self
                .position(account, perp)
                .map_or(0, |p| p.isolated_margin as i128),
        }
    }

    fn move_to_insurance(&mut self, account: u32, bucket: Bucket, amount: i128) {
        if amount == 0 {
            return;
        }
        let amount = to_units(amount);
        match bucket {
            Bucket::Cross => self.accounts[account as usize].perp.collateral -= amount,
            Bucket::Isolated(perp) => {
                let slot = self.position_slot(account, perp);
                self.accounts[account as usize].perp.positions[slot].isolated_margin -= amount;
            }
        }
        let insurance = self.insurance;
        self.accounts[insurance as usize].perp.collateral += amount;
        self.insurance_ledger += amount as i128;
        self.touch_perp_account(account);
        self.touch_perp_account(insurance);
    }

    /// Steps 2 and 3: the rest of the position closes at the bankruptcy price
    /// `size * mark * QU - min(equity, 0)`: taken by the insurance fund if it can carry it,
    /// otherwise spread over opposite positions ranked for auto-deleveraging.
    fn close_at_bankruptcy(
        &mut self,
        account: u32,
        bucket: Bucket,
        perp: u32,
        out: &mut Vec<Event>,
    ) {
        let size = self.position(account, perp).map_or(0, |p| p.size);
        let margin = self.margin(account, bucket);
        let market = &self.perps[perp as usize];
        let market_id = market.spec.market;
        let fee_ppb = market_fee_ppb(market);
        let mark_value = size as i128 * market.mark as i128 * market.qu();
        let bad_debt = (-margin.equity).max(0);
        // Signed value the position closes at; a short can't close below zero value.
        let value = if size > 0 {
            mark_value + bad_debt
        } else {
            (mark_value + bad_debt).min(0)
        };
        let close_notional = value.abs();
        let insurance = self.insurance;
        let plan = if account != insurance && self.insurance_can_take(perp, size, value) {
            None
        } else {
            // ADL when the counterparties can carry it; if they cannot (see `adl_plan`), the
            // fund takes the position anyway.
            self.adl_plan(account, perp, size, close_notional)
        };
        let Some(plan) = plan else {
            self.apply_trade(account, perp, -size, close_notional, 0, out);
            self.apply_trade(insurance, perp, size, close_notional, 0, out);
            let fee = self.bankrupt_cleanup(account, bucket, fee_ppb, close_notional);
            out.push(Event::Liquidation {
                account: self.accounts[account as usize].id,
                market: market_id,
                step: LiquidationStep::Backstop,
                lots: size.abs(),
                notional: to_units(close_notional),
                fee: to_units(fee),
                bad_debt: to_units(bad_debt),
            });
            return;
        };
        let total = size.abs();
        for (index, lots, share) in plan {
            self.apply_trade(account, perp, -size.signum() * lots, share, 0, out);
            self.apply_trade(index, perp, size.signum() * lots, share, 0, out);
            out.push(Event::Adl {
                account: self.accounts[index as usize].id,
                market: market_id,
                lots,
                notional: to_units(share),
            });
        }
        let fee = self.bankrupt_cleanup(account, bucket, fee_ppb, close_notional);
        out.push(Event::Liquidation {
            account: self.accounts[account as usize].id,
            market: market_id,
            step: LiquidationStep::Adl,
            lots: total,
            notional: to_units(close_notional),
            fee: to_units(fee),
            bad_debt: to_units(bad_debt),
        });
    }

    /// Who takes a bankrupt position of `size` lots at `close_notional` by ADL: opposite
    /// positions, most profitable and levered first, ties by account id, each
    /// `(account, lots, share of the notional)`. A counterparty takes the most of its lots
    /// that keeps its own collateral and equity >= 0 at its share ([`Party::solvent_after`]):
    /// ADL at the bankruptcy price passes the bad debt on, and a counterparty that cannot
    /// carry its part would only make new bad debt. `None` if the counterparties together
    /// cannot take every lot (then the insurance fund takes the position whatever its margin:
    /// the one loss no account can carry).
    fn adl_plan(
        &self,
        account: u32,
        perp: u32,
        size: Lots,
        close_notional: i128,
    ) -> Option<Vec<(u32, Lots, i128)>> {
        let mut ranked: Vec<(i128, AccountId, u32)> = Vec::new();
        for (index, other) in self.accounts.iter().enumerate() {
            let index = index as u32;
            if index == account {
                continue;
            }
            let Some(position) = other.perp.positions.iter().find(|p| p.perp == perp) else {
                continue;
            };
            if position.size == 0 || (position.size > 0) == (size > 0) {
                continue;
            }
            let bucket = if position.isolated {
                Bucket::Isolated(perp)
            } else {
                Bucket::Cross
            };
            let (upnl, _, _) = self.position_margin(position);
            let equity = self.margin(index, bucket).equity.max(1);
            let notional = (position.size as i128
                * self.perps[perp as usize].mark as i128
                * self.perps[perp as usize].qu())
            .abs();
            let pnl_ratio = upnl.saturating_mul(PPB) / position.open_notional.abs().max(1);
            let score = pnl_ratio.saturating_mul(notional) / equity;
            ranked.push((score, other.id, index));
        }
        ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let total = size.abs();
        let mut left = total;
        let mut value_left = close_notional;
        let mut plan = Vec::new();
        for (_, _, index) in ranked {
            if left == 0 {
                break;
            }
            let party = self.party(index, perp);
            let their = party.position.size.abs();
            // Shares are of the whole: `floor(|X| * lots / |s|)`; the lots left take the rest.
            let share = |lots: Lots| {
                if lots == left {
                    value_left
                } else {
                    close_notional * lots as i128 / total as i128
                }
            };
            let lots = largest_passing(their.min(left), |lots| {
                let side = FillSide {
                    lots: size.signum() * lots,
                    notional: share(lots),
                    fee: 0,
                    release: 0,
                    margin_wanted: 0,
                };
                party.solvent_after(&self.fill_effect(&party, &side, false).0)
            });
            if lots == 0 {
                continue;
            }
            let share = share(lots);
            plan.push((index, lots, share));
            left -= lots;
            value_left -= share;
        }
        (left == 0).then_some(plan)
    }

    /// After a bankruptcy close: a bucket left with no open position and negative
    /// collateral is brought to zero by the insurance fund; a positive rest pays the
    /// liquidation fee (capped at what is left). Returns the fee.
    fn bankrupt_cleanup(
        &mut self,
        account: u32,
        bucket: Bucket,
        fee_ppb: i128,
        notional: i128,
    ) -> i128 {
        let margin = self.margin(account, bucket);
        let collateral = self.bucket_collateral(account, bucket);
        let open = self.accounts[account as usize]
            .perp
            .positions
            .iter()
            .any(|p| {
                p.size != 0
                    && match bucket {
                        Bucket::Cross => !p.isolated,
                        Bucket::Isolated(perp) => p.perp == perp,
                    }
            });
        if !open && collateral < 0 {
            // Covered by the insurance fund (a negative transfer to it).
            self.move_to_insurance(account, bucket, collateral);
            return 0;
        }
        let perp = match bucket {
            Bucket::Isolated(perp) => perp,
            Bucket::Cross => NIL,
        };
        let (source, available) = if perp == NIL {
            (bucket, collateral.max(0).min(margin.equity.max(0)))
        } else {
            self.fee_source(account, bucket, perp)
        };
        let fee = ceil_div(notional * fee_ppb, PPB).min(available);
        self.move_to_insurance(account, source, fee);
        fee
    }

    /// Whether the insurance fund can take `size` lots at signed `value` and still meet the
    /// maintenance margin of everything it holds. Taking at `value` changes its equity by
    /// `size * mark * QU - value` whether the lots open, close or flip its position.
    fn insurance_can_take(&self, perp: u32, size: Lots, value: i128) -> bool {
        let insurance = self.insurance;
        let market = &self.perps[perp as usize];
        let mark_value = size as i128 * market.mark as i128 * market.qu();
        let equity = self.margin(insurance, Bucket::Cross).equity + mark_value - value;
        let state = &self.accounts[insurance as usize].perp;
        let mut maintenance = 0;
        let mut held = false;
        for position in &state.positions {
            let mut position = *position;
            if position.perp == perp {
                position.size += size;
                held = true;
            }
            maintenance += self.position_margin(&position).2;
        }
        if !held {
            let mut position = self.flat_position(perp);
            position.size = size;
            maintenance += self.position_margin(&position).2;
        }
        equity >= maintenance
    }

    /// A flat position with the market's default settings.
    pub(super) fn flat_position(&self, perp: u32) -> Position {
        Position {
            perp,
            size: 0,
            open_notional: 0,
            funding_basis: 0,
            leverage: self.perps[perp as usize].spec.max_leverage,
            isolated: false,
            isolated_margin: 0,
            reduce_only_orders: 0,
            keyed: Keyed::None,
        }
    }

    // ---- queries ---------------------------------------------------------------------

    /// An account's position in a perp market; `None` if either is unknown or it never had
    /// one there.
    pub fn position_view(&self, account: AccountId, market: MarketId) -> Option<PositionView> {
        let &index = self.account_index.get(&account)?;
        let (_, perp) = self.perp_of(market).ok()?;
        let position = self.position(index, perp)?;
        let (upnl, _, _) = self.position_margin(position);
        Some(PositionView {
            size: position.size,
            open_notional: position.open_notional,
            leverage: position.leverage,
            isolated: position.isolated,
            isolated_margin: position.isolated_margin,
            unrealized_pnl: upnl,
            unsettled_funding: self.unsettled_funding(position),
        })
    }

    /// An account's cross-margin collateral and order margin, units.
    pub fn perp_collateral(&self, account: AccountId) -> Option<(Units, Units)> {
        let &index = self.account_index.get(&account)?;
        let state = &self.accounts[index as usize].perp;
        Some((state.collateral, state.order_margin))
    }

    /// An account's cross-margin equity and requirements, or an isolated position's
    /// (`isolated_market`).
    pub fn margin_view(
        &self,
        account: AccountId,
        isolated_market: Option<MarketId>,
    ) -> Option<MarginView> {
        let &index = self.account_index.get(&account)?;
        let bucket = match isolated_market {
            None => Bucket::Cross,
            Some(market) => Bucket::Isolated(self.perp_of(market).ok()?.1),
        };
        Some(self.margin(index, bucket))
    }

    /// A perp market's prices and funding state.
    pub fn perp_market(&self, market: MarketId) -> Option<PerpMarketView> {
        let (_, perp) = self.perp_of(market).ok()?;
        let state = &self.perps[perp as usize];
        Some(PerpMarketView {
            spec: state.spec,
            oracle: state.oracle,
            mark: state.mark,
            ema_premium_ppb: state.ema_premium_ppb,
            funding_index: state.funding_index,
            funding_pool: state.funding_pool,
            open_interest: state.long_lots,
            last_trade: state.last_trade,
        })
    }

    /// The insurance fund: the insurance account's cross collateral (0 before any perp
    /// market exists).
    pub fn insurance_fund(&self) -> Units {
        if self.insurance == NIL {
            return 0;
        }
        self.accounts[self.insurance as usize].perp.collateral
    }

    /// Counters of the liquidation machinery, for benchmarks and tests.
    pub fn liquidation_stats(&self) -> LiquidationStats {
        self.stats
    }

    /// Checks of the perp state, called by `check_invariants`: order margin equals the
    /// reserves of open perp orders, open interest equals the long sizes, long and short
    /// sizes are equal, and every non-flat position outside the insurance fund is in the
    /// liquidation index under the key its state gives.
    pub(super) fn check_perp_invariants(
        &self,
        expected_order_margin: &[i128],
    ) -> Result<(), String> {
        let mut longs = vec![0i128; self.perps.len()];
        let mut shorts = vec![0i128; self.perps.len()];
        for (index, account) in self.accounts.iter().enumerate() {
            if account.perp.order_margin as i128 != expected_order_margin[index] {
                return Err(format!(
                    "account {}: order margin {} but perp orders reserve {}",
                    account.id, account.perp.order_margin, expected_order_margin[index]
                ));
            }
            if account.perp.order_margin < 0 {
                return Err(format!("account {}: negative order margin", account.id));
            }
            // No fill takes a bucket past its bankruptcy price and every liquidation ends
            // with collateral >= 0: no account but the fund (which carries mark moves on
            // what it holds) ever has negative collateral, cross or isolated.
            if account.perp.collateral < 0 && index as u32 != self.insurance {
                return Err(format!(
                    "account {}: cross collateral {} < 0",
                    account.id, account.perp.collateral
                ));
            }
            if let Some(position) = account
                .perp
                .positions
                .iter()
                .find(|p| p.isolated_margin < 0)
            {
                return Err(format!(
                    "account {}: isolated margin {} < 0",
                    account.id, position.isolated_margin
                ));
            }
            for position in &account.perp.positions {
                let perp = position.perp as usize;
                if position.size > 0 {
                    longs[perp] += position.size as i128;
                } else {
                    shorts[perp] -= position.size as i128;
                }
                if position.size == 0
                    && (position.open_notional != 0 || position.isolated_margin != 0)
                {
                    return Err(format!(
                        "account {}: flat position with basis or margin",
                        account.id
                    ));
                }
                let market = &self.perps[perp];
                let indexed = match position.keyed {
                    Keyed::None => false,
                    Keyed::Long(key) => market.liq_longs.contains(&(key, index as u32)),
                    Keyed::Short(key) => market.liq_shorts.contains(&(key, index as u32)),
                    Keyed::Multi => market.multi.contains(&(index as u32)),
                };
                let should = position.size != 0 && index as u32 != self.insurance;
                if indexed != should || (position.keyed != Keyed::None) != should {
                    return Err(format!(
                        "account {}: liquidation index out of date",
                        account.id
                    ));
                }
                // A single-position bucket's key is the one its state gives now.
                let alone = position.isolated
                    || account
                        .perp
                        .positions
                        .iter()
                        .filter(|p| !p.isolated && p.size != 0)
                        .count()
                        == 1;
                if should && alone {
                    let collateral = if position.isolated {
                        position.isolated_margin as i128
                    } else {
                        account.perp.collateral as i128
                    };
                    if position.keyed != self.key_of(position, collateral) {
                        return Err(format!("account {}: stale liquidation key", account.id));
                    }
                }
            }
        }
        if self.insurance != NIL
            && self.accounts[self.insurance as usize].perp.collateral as i128
                != self.insurance_ledger
        {
            return Err(format!(
                "insurance fund holds {} but fees, backstops, covers, its PnL and transfers \
                 account for {}",
                self.accounts[self.insurance as usize].perp.collateral, self.insurance_ledger
            ));
        }
        for (perp, market) in self.perps.iter().enumerate() {
            if longs[perp] != shorts[perp] || longs[perp] != market.long_lots as i128 {
                return Err(format!(
                    "perp market {}: longs {} shorts {} open interest {}",
                    market.spec.market, longs[perp], shorts[perp], market.long_lots
                ));
            }
            let entries = market.liq_longs.len() + market.liq_shorts.len();
            let keyed = self
                .accounts
                .iter()
                .flat_map(|a| a.perp.positions.iter())
                .filter(|p| {
                    p.perp as usize == perp && matches!(p.keyed, Keyed::Long(_) | Keyed::Short(_))
                })
                .count();
            if entries != keyed {
                return Err(format!(
                    "perp market {}: stale index entries",
                    market.spec.market
                ));
            }
        }
        Ok(())
    }

    /// The collateral asset's perp-side holdings: cross collateral and isolated margins of
    /// every account, funding pools, minus every open cost basis (the sum of unrealized PnL
    /// at any common price, since long and short sizes are equal).
    pub(super) fn perp_holdings(&self) -> i128 {
        let mut total: i128 = self.perps.iter().map(|m| m.funding_pool as i128).sum();
        for account in &self.accounts {
            total += account.perp.collateral as i128;
            for position in &account.perp.positions {
                total += position.isolated_margin as i128 - position.open_notional;
            }
        }
        total
    }
}

/// Counters of liquidation work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiquidationStats {
    /// Buckets the index handed to a full check.
    pub liquidation_candidates: u64,
    /// Buckets found under maintenance and liquidated.
    pub liquidations: u64,
}

fn market_fee_ppb(market: &PerpMarket) -> i128 {
    market.spec.liquidation_fee_ppb as i128
}

fn perp_spec_valid(spec: &PerpSpec) -> bool {
    let fees_valid = spec.taker_fee_bps >= 0
        && spec.taker_fee_bps < 10_000
        && spec.maker_fee_bps < 10_000
        && spec.maker_fee_bps >= -spec.taker_fee_bps;
    let top_notional = spec.max_price_ticks as i128 * spec.quote_units_per_tick_lot as i128;
    let tiers = spec.tiers();
    // At least one minimum order must fit under the position bound.
    let position_bound_valid =
        top_notional * (spec.min_lots.max(1) as i128) <= MAX_POSITION_NOTIONAL;
    let tiers_valid = !tiers.is_empty()
        && spec.tier_count as usize <= MAX_MARGIN_TIERS
        && tiers
            .iter()
            .all(|t| t.mmr_ppb > 0 && t.mmr_ppb < t.imr_ppb && (t.imr_ppb as i128) <= PPB)
        && tiers.windows(2).all(|w| {
            w[0].notional_up_to < w[1].notional_up_to
                && w[0].imr_ppb <= w[1].imr_ppb
                && w[0].mmr_ppb <= w[1].mmr_ppb
        })
        && tiers[..tiers.len() - 1]
            .iter()
            .all(|t| t.notional_up_to > 0);
    spec.quote_units_per_tick_lot >= 1
        && spec.min_lots >= 1
        && (1..=MAX_PRICE_TICKS_LIMIT).contains(&spec.max_price_ticks)
        && fees_valid
        && position_bound_valid
        && (1..=100).contains(&spec.max_leverage)
        && tiers_valid
        && spec.open_interest_cap_lots >= 0
        && (spec.price_band_ppb as i128) < PPB
        && spec.interest_ppb.unsigned_abs() as i128 <= PPB
        && (spec.funding_cap_ppb as i128) <= PPB
        && spec.impact_notional >= 1
        && spec.liquidation_chunk_notional >= 1
        && (spec.liquidation_fee_ppb as i128) < PPB
}
