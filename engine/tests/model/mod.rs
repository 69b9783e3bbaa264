//! A deliberately naive reference model of `docs/engine.md`, written from the document alone.
//!
//! Every open order sits in one `Vec` with its entry number; every query filters and sorts
//! that `Vec`. Locked balances are never stored: they are recomputed from the open orders on
//! every use, so "locked = sum of reserves" holds by construction. All money arithmetic is
//! `i128`, with checked multiplication where a hostile size could overflow even that (an
//! overflowing amount counts as "more than anyone holds").
//!
//! Slow on purpose: it is the specification in executable form, not an implementation.

#![allow(dead_code)]

use std::collections::BTreeMap;

use engine::{
    AccountId, AssetId, Balance, CancelReason, Command, EngineConfig, Event, Lots, MarketId,
    MarketSpec, NewOrder, OrderId, OrderView, RejectReason, SelfTradePrevention, Side, Ticks,
    TimeInForce, Units,
};

/// Basis points per unit.
const BPS: i128 = 10_000;
/// Highest `max_price_ticks` a market may have.
const MAX_PRICE_LIMIT: i128 = 1 << 28;
/// `i64::MAX` widened.
const I64_MAX: i128 = i64::MAX as i128;
/// Stand-in for an amount too large for `i128`: larger than any balance.
const HUGE: i128 = i128::MAX;

/// One open (resting) order of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelOrder {
    /// Owner.
    pub account: AccountId,
    /// Market.
    pub market: MarketId,
    /// Client order id.
    pub oid: OrderId,
    /// Side.
    pub side: Side,
    /// Limit price.
    pub price: Ticks,
    /// Remaining lots.
    pub remaining: Lots,
    /// STP mode it was placed with.
    pub stp: SelfTradePrevention,
    /// Placed as ALO.
    pub post_only: bool,
    /// Engine-wide (re-)entry number: orders both levels and account lists.
    pub entry: u64,
}

impl ModelOrder {
    /// As the engine shows it.
    pub fn view(&self) -> OrderView {
        OrderView {
            account: self.account,
            oid: self.oid,
            side: self.side,
            price: self.price,
            remaining: self.remaining,
            stp: self.stp,
            post_only: self.post_only,
            reduce_only: false,
        }
    }
}

/// The model's whole state in a comparable form, to tell whether a command changed anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observable {
    assets: Vec<(AssetId, i128, i128)>,
    markets: Vec<MarketSpec>,
    accounts: Vec<AccountId>,
    totals: Vec<((AccountId, AssetId), i128)>,
    /// Open orders in entry order (relative order only, not the raw entry numbers).
    orders: Vec<OrderView>,
    order_markets: Vec<MarketId>,
}

/// The incoming side of a match.
struct Taker {
    account: AccountId,
    oid: OrderId,
    side: Side,
    /// `None`: a market order, no price limit.
    limit: Option<Ticks>,
    remaining: Lots,
    stp: SelfTradePrevention,
    /// A market buy: no reserve, each fill cut to what the buyer can pay.
    pay_per_fill: bool,
}

/// The reference model. See the module docs.
pub struct Model {
    config: EngineConfig,
    /// Registered assets, in registration order.
    assets: Vec<AssetId>,
    supply: BTreeMap<AssetId, i128>,
    fee_pool: BTreeMap<AssetId, i128>,
    markets: Vec<MarketSpec>,
    /// Known accounts, in creation order.
    accounts: Vec<AccountId>,
    /// Totals; a missing entry is zero.
    totals: BTreeMap<(AccountId, AssetId), i128>,
    /// Every open order, in no particular order (entry numbers say which came first).
    orders: Vec<ModelOrder>,
    entries: u64,
}

fn ceil_div(a: i128, b: i128) -> i128 {
    assert!(a >= 0 && b > 0);
    (a + b - 1) / b
}

/// A fee on notional `n` at `bps`, rounded in the exchange's favour.
pub fn fee(n: i128, bps: i32) -> i128 {
    let bps = bps as i128;
    assert!(n >= 0);
    if bps >= 0 {
        ceil_div(n * bps, BPS)
    } else {
        -((n * -bps) / BPS)
    }
}

/// `N(p, q) = p * q * QU`, or `HUGE` if even i128 cannot hold it.
pub fn notional(spec: &MarketSpec, price: Ticks, lots: Lots) -> i128 {
    (price as i128)
        .checked_mul(lots as i128)
        .and_then(|x| x.checked_mul(spec.quote_units_per_tick_lot as i128))
        .unwrap_or(HUGE)
}

/// Quote reserved per lot of a buy at limit `price`.
pub fn unit_cost(spec: &MarketSpec, price: Ticks) -> i128 {
    let n = notional(spec, price, 1);
    let b = spec.taker_fee_bps.max(spec.maker_fee_bps).max(0);
    n + fee(n, b)
}

/// What a taker pays for `q` lots at `price` at the taker fee (`HUGE` on overflow).
pub fn taker_cost(spec: &MarketSpec, price: Ticks, q: Lots) -> i128 {
    let n = notional(spec, price, q);
    if n == HUGE || n.checked_mul(BPS).is_none() {
        return HUGE;
    }
    n + fee(n, spec.taker_fee_bps)
}

/// The reserve of an order: `(asset side, amount)`; `HUGE` if it overflows.
fn reserve_amount(spec: &MarketSpec, side: Side, price: Ticks, remaining: Lots) -> i128 {
    match side {
        Side::Sell => (remaining as i128)
            .checked_mul(spec.base_units_per_lot as i128)
            .unwrap_or(HUGE),
        Side::Buy => (remaining as i128)
            .checked_mul(unit_cost(spec, price))
            .unwrap_or(HUGE),
    }
}

fn reserve_asset(spec: &MarketSpec, side: Side) -> AssetId {
    match side {
        Side::Sell => spec.base,
        Side::Buy => spec.quote,
    }
}

/// Whether a maker at `maker_price` is within a taker's limit.
fn within(taker_side: Side, limit: Option<Ticks>, maker_price: Ticks) -> bool {
    match (taker_side, limit) {
        (_, None) => true,
        (Side::Buy, Some(l)) => maker_price <= l,
        (Side::Sell, Some(l)) => maker_price >= l,
    }
}

fn reject(account: AccountId, oid: Option<OrderId>, reason: RejectReason) -> Event {
    Event::Rejected {
        account,
        oid,
        reason,
    }
}

impl Model {
    /// An empty model.
    pub fn new(config: EngineConfig) -> Self {
        Model {
            config,
            assets: Vec::new(),
            supply: BTreeMap::new(),
            fee_pool: BTreeMap::new(),
            markets: Vec::new(),
            accounts: Vec::new(),
            totals: BTreeMap::new(),
            orders: Vec::new(),
            entries: 0,
        }
    }

    // ---- queries -------------------------------------------------------------------

    fn market(&self, id: MarketId) -> Option<MarketSpec> {
        self.markets.iter().find(|m| m.market == id).copied()
    }

    fn has_asset(&self, id: AssetId) -> bool {
        self.assets.contains(&id)
    }

    fn has_account(&self, id: AccountId) -> bool {
        self.accounts.contains(&id)
    }

    fn total(&self, account: AccountId, asset: AssetId) -> i128 {
        self.totals.get(&(account, asset)).copied().unwrap_or(0)
    }

    fn add_total(&mut self, account: AccountId, asset: AssetId, delta: i128) {
        *self.totals.entry((account, asset)).or_insert(0) += delta;
    }

    /// Sum of the reserves of the account's open orders in `asset`.
    fn locked(&self, account: AccountId, asset: AssetId) -> i128 {
        let mut sum = 0i128;
        for o in &self.orders {
            if o.account != account {
                continue;
            }
            let spec = self.market(o.market).expect("order in a known market");
            if reserve_asset(&spec, o.side) == asset {
                sum += reserve_amount(&spec, o.side, o.price, o.remaining);
            }
        }
        sum
    }

    fn available(&self, account: AccountId, asset: AssetId) -> i128 {
        self.total(account, asset) - self.locked(account, asset)
    }

    /// All open orders, unsorted.
    pub fn all_orders(&self) -> Vec<ModelOrder> {
        self.orders.clone()
    }

    /// One side of a market, best price first, oldest first within a price.
    fn side_sorted(&self, market: MarketId, side: Side) -> Vec<ModelOrder> {
        let mut v: Vec<ModelOrder> = self
            .all_orders()
            .into_iter()
            .filter(|o| o.market == market && o.side == side)
            .collect();
        v.sort_by_key(|o| {
            let price_key = match side {
                Side::Buy => -(o.price as i128),
                Side::Sell => o.price as i128,
            };
            (price_key, o.entry)
        });
        v
    }

    fn best_price(&self, market: MarketId, side: Side) -> Option<Ticks> {
        self.side_sorted(market, side).first().map(|o| o.price)
    }

    /// Whether a limit order at `price` on `side` would cross the best opposite level.
    fn would_cross(&self, market: MarketId, side: Side, price: Ticks) -> bool {
        match self.best_price(market, side.opposite()) {
            None => false,
            Some(best) => within(side, Some(price), best),
        }
    }

    /// Resting orders of a market side, as the engine's `book_orders` shows them.
    pub fn book_orders(&self, market: MarketId, side: Side) -> Vec<OrderView> {
        self.side_sorted(market, side)
            .iter()
            .map(ModelOrder::view)
            .collect()
    }

    /// Aggregated levels, best first, at most `max_levels`.
    pub fn depth(&self, market: MarketId, side: Side, max_levels: usize) -> Vec<(Ticks, Lots)> {
        let mut levels: Vec<(Ticks, Lots)> = Vec::new();
        for o in self.side_sorted(market, side) {
            match levels.last_mut() {
                Some((p, lots)) if *p == o.price => *lots += o.remaining,
                _ => levels.push((o.price, o.remaining)),
            }
        }
        levels.truncate(max_levels);
        levels
    }

    /// Balance as the engine reports it; `None` if the account or asset is unknown.
    pub fn balance(&self, account: AccountId, asset: AssetId) -> Option<Balance> {
        if !self.has_account(account) || !self.has_asset(asset) {
            return None;
        }
        Some(Balance {
            total: Units::try_from(self.total(account, asset)).expect("total fits i64"),
            locked: Units::try_from(self.locked(account, asset)).expect("locked fits i64"),
        })
    }

    /// Fee pool of an asset.
    pub fn fee_pool(&self, asset: AssetId) -> Option<Units> {
        self.fee_pool
            .get(&asset)
            .map(|&x| Units::try_from(x).expect("fee pool fits i64"))
    }

    /// Deposits minus withdrawals of an asset.
    pub fn supply(&self, asset: AssetId) -> Option<Units> {
        self.supply
            .get(&asset)
            .map(|&x| Units::try_from(x).expect("supply fits i64"))
    }

    /// Registered assets in registration order.
    pub fn assets(&self) -> Vec<AssetId> {
        self.assets.clone()
    }

    /// Registered markets in registration order.
    pub fn markets(&self) -> Vec<MarketId> {
        self.markets.iter().map(|m| m.market).collect()
    }

    /// Known accounts in creation order.
    pub fn accounts(&self) -> Vec<AccountId> {
        self.accounts.clone()
    }

    /// Number of open orders.
    pub fn resting_orders(&self) -> usize {
        self.orders.len()
    }

    /// The account's open orders in a market, in entry order (what cancel-all emits).
    pub fn account_orders(&self, account: AccountId, market: MarketId) -> Vec<ModelOrder> {
        let mut v: Vec<ModelOrder> = self
            .all_orders()
            .into_iter()
            .filter(|o| o.account == account && o.market == market)
            .collect();
        v.sort_by_key(|o| o.entry);
        v
    }

    /// Everything observable, for "did this command change the state" checks.
    pub fn observable(&self) -> Observable {
        let mut orders = self.orders.clone();
        orders.sort_by_key(|o| o.entry);
        Observable {
            assets: self
                .assets
                .iter()
                .map(|a| (*a, self.supply[a], self.fee_pool[a]))
                .collect(),
            markets: self.markets.clone(),
            accounts: self.accounts.clone(),
            totals: self
                .totals
                .iter()
                .filter(|(_, &v)| v != 0)
                .map(|(k, v)| (*k, *v))
                .collect(),
            order_markets: orders.iter().map(|o| o.market).collect(),
            orders: orders.iter().map(ModelOrder::view).collect(),
        }
    }

    /// The model's own invariants: `0 <= locked <= total`, conservation, fee pools >= 0.
    pub fn check(&self) -> Result<(), String> {
        for &asset in &self.assets {
            let mut sum = 0i128;
            for &account in &self.accounts {
                let total = self.total(account, asset);
                let locked = self.locked(account, asset);
                if !(0 <= locked && locked <= total) {
                    return Err(format!(
                        "model: account {account} asset {asset}: locked {locked} total {total}"
                    ));
                }
                sum += total;
            }
            let pool = self.fee_pool[&asset];
            if pool < 0 {
                return Err(format!("model: fee pool of {asset} is {pool}"));
            }
            if sum + pool != self.supply[&asset] {
                return Err(format!("model: asset {asset} not conserved"));
            }
        }
        for o in &self.orders {
            if o.remaining <= 0 {
                return Err(format!("model: order {o:?} has no size"));
            }
        }
        Ok(())
    }

    // ---- commands ------------------------------------------------------------------

    /// Applies one command, appending its events.
    pub fn step(&mut self, command: &Command, out: &mut Vec<Event>) {
        match *command {
            Command::CreateAsset { asset } => {
                if self.has_asset(asset) {
                    out.push(reject(0, None, RejectReason::AlreadyExists));
                } else {
                    self.assets.push(asset);
                    self.supply.insert(asset, 0);
                    self.fee_pool.insert(asset, 0);
                }
            }
            Command::CreateMarket(spec) => match self.check_market(&spec) {
                Err(reason) => out.push(reject(0, None, reason)),
                Ok(()) => self.markets.push(spec),
            },
            Command::Deposit {
                account,
                asset,
                amount,
            } => {
                let result = if !self.has_asset(asset) {
                    Err(RejectReason::UnknownAsset)
                } else if amount <= 0 {
                    Err(RejectReason::InvalidQty)
                } else if self.supply[&asset] + amount as i128 > I64_MAX {
                    Err(RejectReason::Overflow)
                } else {
                    Ok(())
                };
                match result {
                    Err(reason) => out.push(reject(account, None, reason)),
                    Ok(()) => {
                        if !self.has_account(account) {
                            self.accounts.push(account);
                        }
                        self.add_total(account, asset, amount as i128);
                        *self.supply.get_mut(&asset).unwrap() += amount as i128;
                    }
                }
            }
            Command::Withdraw {
                account,
                asset,
                amount,
            } => {
                let result = if !self.has_asset(asset) {
                    Err(RejectReason::UnknownAsset)
                } else if !self.has_account(account) {
                    Err(RejectReason::UnknownAccount)
                } else if amount <= 0 {
                    Err(RejectReason::InvalidQty)
                } else if self.available(account, asset) < amount as i128 {
                    Err(RejectReason::InsufficientBalance)
                } else {
                    Ok(())
                };
                match result {
                    Err(reason) => out.push(reject(account, None, reason)),
                    Ok(()) => {
                        self.add_total(account, asset, -(amount as i128));
                        *self.supply.get_mut(&asset).unwrap() -= amount as i128;
                    }
                }
            }
            Command::Place(order) => self.place(&order, out),
            Command::Cancel {
                account,
                market,
                oid,
            } => {
                let result = if self.market(market).is_none() {
                    Err(RejectReason::UnknownMarket)
                } else if !self.has_account(account) {
                    Err(RejectReason::UnknownAccount)
                } else {
                    self.find(account, market, oid)
                        .ok_or(RejectReason::UnknownOrder)
                };
                match result {
                    Err(reason) => out.push(reject(account, Some(oid), reason)),
                    Ok(index) => self.remove_canceled(index, CancelReason::User, out),
                }
            }
            Command::CancelAll { account, market } => {
                if self.market(market).is_none() {
                    out.push(reject(account, None, RejectReason::UnknownMarket));
                } else if !self.has_account(account) {
                    out.push(reject(account, None, RejectReason::UnknownAccount));
                } else {
                    for o in self.account_orders(account, market) {
                        let index = self.find(account, market, o.oid).expect("still open");
                        self.remove_canceled(index, CancelReason::User, out);
                    }
                }
            }
            Command::Modify {
                account,
                market,
                oid,
                price,
                qty,
            } => self.modify(account, market, oid, price, qty, out),
            // Perpetuals have their own model (tests/perp_model); the spot streams never
            // contain these.
            Command::CreatePerpMarket(_)
            | Command::TransferCollateral { .. }
            | Command::SetLeverage { .. }
            | Command::IsolatedMargin { .. }
            | Command::Oracle { .. }
            | Command::Funding { .. } => panic!("spot model given a perp command: {command:?}"),
        }
    }

    fn check_market(&self, spec: &MarketSpec) -> Result<(), RejectReason> {
        if self.market(spec.market).is_some() {
            return Err(RejectReason::AlreadyExists);
        }
        if !self.has_asset(spec.base) || !self.has_asset(spec.quote) {
            return Err(RejectReason::UnknownAsset);
        }
        let taker = spec.taker_fee_bps as i128;
        let maker = spec.maker_fee_bps as i128;
        let invalid = spec.base == spec.quote
            || spec.base_units_per_lot < 1
            || spec.quote_units_per_tick_lot < 1
            || spec.min_lots < 1
            || !(1..=MAX_PRICE_LIMIT).contains(&(spec.max_price_ticks as i128))
            || !(0..BPS).contains(&taker)
            || maker >= BPS
            || maker < -taker
            || spec.max_price_ticks as i128 * spec.quote_units_per_tick_lot as i128 > I64_MAX;
        if invalid {
            return Err(RejectReason::InvalidMarket);
        }
        Ok(())
    }

    /// Index in `orders` of the account's open order `oid` in `market`.
    /// Every non-empty price level: (market, side, price) -> total lots resting there.
    pub fn levels(&self) -> BTreeMap<(MarketId, Side, Ticks), Lots> {
        let mut levels = BTreeMap::new();
        for o in &self.orders {
            *levels.entry((o.market, o.side, o.price)).or_insert(0) += o.remaining;
        }
        levels
    }

    fn find(&self, account: AccountId, market: MarketId, oid: OrderId) -> Option<usize> {
        self.orders
            .iter()
            .position(|o| o.account == account && o.oid == oid && o.market == market)
    }

    fn index_of_entry(&self, entry: u64) -> usize {
        self.orders
            .iter()
            .position(|o| o.entry == entry)
            .expect("entry is open")
    }

    fn remove_canceled(&mut self, index: usize, reason: CancelReason, out: &mut Vec<Event>) {
        let o = self.orders.remove(index);
        out.push(Event::Canceled {
            market: o.market,
            account: o.account,
            oid: o.oid,
            remaining: o.remaining,
            reason,
        });
    }

    fn rest(&mut self, order: ModelOrder) {
        assert!(order.remaining > 0);
        self.orders.push(order);
    }

    fn next_entry(&mut self) -> u64 {
        self.entries += 1;
        self.entries
    }

    fn check_place(&self, o: &NewOrder) -> Result<(), RejectReason> {
        use RejectReason::*;
        let spec = self.market(o.market).ok_or(UnknownMarket)?;
        if !self.has_account(o.account) {
            return Err(UnknownAccount);
        }
        if o.price.is_none() && o.tif != TimeInForce::Ioc {
            return Err(InvalidTif);
        }
        if o.qty <= 0 {
            return Err(InvalidQty);
        }
        if let Some(p) = o.price {
            if p < 1 || p > spec.max_price_ticks {
                return Err(InvalidPrice);
            }
        }
        if o.qty < spec.min_lots {
            return Err(MinQty);
        }
        if self
            .orders
            .iter()
            .any(|x| x.account == o.account && x.oid == o.oid)
        {
            return Err(DuplicateOid);
        }
        if matches!(o.tif, TimeInForce::Gtc | TimeInForce::Alo) {
            let open = self
                .orders
                .iter()
                .filter(|x| x.account == o.account)
                .count();
            if open >= self.config.max_open_orders_per_account as usize {
                return Err(TooManyOrders);
            }
            if self.orders.len() >= self.config.max_resting_orders as usize {
                return Err(BookFull);
            }
        }
        if o.tif == TimeInForce::Alo {
            let price = o.price.expect("ALO has a price (market orders are IOC)");
            if self.would_cross(o.market, o.side, price) {
                return Err(PostOnlyWouldCross);
            }
        }
        match (o.side, o.price) {
            (side, Some(price)) => {
                let need = reserve_amount(&spec, side, price, o.qty);
                if self.available(o.account, reserve_asset(&spec, side)) < need {
                    return Err(InsufficientBalance);
                }
            }
            (Side::Sell, None) => {
                let need = reserve_amount(&spec, Side::Sell, 0, o.qty);
                if self.available(o.account, spec.base) < need {
                    return Err(InsufficientBalance);
                }
            }
            (Side::Buy, None) => {
                if let Some(best) = self.best_price(o.market, Side::Sell) {
                    if self.available(o.account, spec.quote) < taker_cost(&spec, best, 1) {
                        return Err(InsufficientBalance);
                    }
                }
            }
        }
        if o.tif == TimeInForce::Fok && !self.fok_fillable(&spec, o) {
            return Err(FokUnfilled);
        }
        Ok(())
    }

    /// The FOK dry run of docs/engine.md.
    fn fok_fillable(&self, spec: &MarketSpec, o: &NewOrder) -> bool {
        let mut counted = 0i128;
        for maker in self.side_sorted(spec.market, o.side.opposite()) {
            if !within(o.side, o.price, maker.price) {
                break;
            }
            if maker.account == o.account {
                match o.stp {
                    SelfTradePrevention::CancelMaker => continue,
                    SelfTradePrevention::CancelTaker | SelfTradePrevention::CancelBoth => break,
                }
            }
            counted += maker.remaining as i128;
            if counted >= o.qty as i128 {
                return true;
            }
        }
        counted >= o.qty as i128
    }

    fn place(&mut self, o: &NewOrder, out: &mut Vec<Event>) {
        if let Err(reason) = self.check_place(o) {
            out.push(reject(o.account, Some(o.oid), reason));
            return;
        }
        let spec = self.market(o.market).expect("checked");
        out.push(Event::Accepted {
            market: o.market,
            account: o.account,
            oid: o.oid,
        });
        let entry = self.next_entry();
        let order = ModelOrder {
            account: o.account,
            market: o.market,
            oid: o.oid,
            side: o.side,
            price: o.price.unwrap_or(0),
            remaining: o.qty,
            stp: o.stp,
            post_only: o.tif == TimeInForce::Alo,
            entry,
        };
        if o.tif == TimeInForce::Alo {
            // Checked not to cross: rests without matching.
            self.rest(order);
            return;
        }
        let mut taker = Taker {
            account: o.account,
            oid: o.oid,
            side: o.side,
            limit: o.price,
            remaining: o.qty,
            stp: o.stp,
            pay_per_fill: o.price.is_none() && o.side == Side::Buy,
        };
        let stp_canceled = self.match_taker(&spec, &mut taker, out);
        if stp_canceled || taker.remaining == 0 {
            return;
        }
        match o.tif {
            TimeInForce::Gtc => self.rest(ModelOrder {
                remaining: taker.remaining,
                ..order
            }),
            TimeInForce::Ioc => out.push(Event::Canceled {
                market: o.market,
                account: o.account,
                oid: o.oid,
                remaining: taker.remaining,
                reason: CancelReason::Unfilled,
            }),
            TimeInForce::Fok => panic!("model: a FOK order passed its dry run but did not fill"),
            TimeInForce::Alo => unreachable!(),
        }
    }

    /// Matches `taker` against the opposite side. Returns true if the taker's remainder was
    /// canceled by self-trade prevention (its `canceled` event already emitted).
    fn match_taker(&mut self, spec: &MarketSpec, taker: &mut Taker, out: &mut Vec<Event>) -> bool {
        while taker.remaining > 0 {
            let Some(maker) = self
                .side_sorted(spec.market, taker.side.opposite())
                .into_iter()
                .next()
            else {
                break;
            };
            if !within(taker.side, taker.limit, maker.price) {
                break;
            }
            if maker.account == taker.account {
                let cancel_maker = matches!(
                    taker.stp,
                    SelfTradePrevention::CancelMaker | SelfTradePrevention::CancelBoth
                );
                if cancel_maker {
                    let index = self.index_of_entry(maker.entry);
                    self.remove_canceled(index, CancelReason::Stp, out);
                }
                if taker.stp == SelfTradePrevention::CancelMaker {
                    continue;
                }
                out.push(Event::Canceled {
                    market: spec.market,
                    account: taker.account,
                    oid: taker.oid,
                    remaining: taker.remaining,
                    reason: CancelReason::Stp,
                });
                taker.remaining = 0;
                return true;
            }
            let mut q = taker.remaining.min(maker.remaining);
            if taker.pay_per_fill {
                q = self.affordable_lots(spec, taker.account, maker.price, q);
                if q == 0 {
                    break;
                }
            }
            self.fill(spec, taker, &maker, q, out);
        }
        false
    }

    /// The most lots (at most `cap`) a market buyer can pay for at `price` at the taker fee.
    fn affordable_lots(
        &self,
        spec: &MarketSpec,
        account: AccountId,
        price: Ticks,
        cap: Lots,
    ) -> Lots {
        let available = self.available(account, spec.quote);
        // cost(q) grows with q: binary search the largest q with cost(q) <= available.
        let (mut lo, mut hi) = (0i64, cap);
        while lo < hi {
            let mid = lo + (hi - lo + 1) / 2;
            if taker_cost(spec, price, mid) <= available {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    fn fill(
        &mut self,
        spec: &MarketSpec,
        taker: &mut Taker,
        maker: &ModelOrder,
        q: Lots,
        out: &mut Vec<Event>,
    ) {
        let n = notional(spec, maker.price, q);
        assert!(n < HUGE, "model: fill notional overflow");
        let taker_fee = fee(n, spec.taker_fee_bps);
        let maker_fee = fee(n, spec.maker_fee_bps);
        let (buyer, buyer_fee, seller, seller_fee) = match taker.side {
            Side::Buy => (taker.account, taker_fee, maker.account, maker_fee),
            Side::Sell => (maker.account, maker_fee, taker.account, taker_fee),
        };
        let base = q as i128 * spec.base_units_per_lot as i128;
        self.add_total(buyer, spec.quote, -(n + buyer_fee));
        self.add_total(buyer, spec.base, base);
        self.add_total(seller, spec.base, -base);
        self.add_total(seller, spec.quote, n - seller_fee);
        *self.fee_pool.get_mut(&spec.quote).unwrap() += taker_fee + maker_fee;

        let index = self.index_of_entry(maker.entry);
        self.orders[index].remaining -= q;
        let maker_left = self.orders[index].remaining;
        if maker_left == 0 {
            self.orders.remove(index);
        }
        taker.remaining -= q;
        out.push(Event::Fill {
            market: spec.market,
            taker_account: taker.account,
            taker_oid: taker.oid,
            maker_account: maker.account,
            maker_oid: maker.oid,
            taker_side: taker.side,
            price: maker.price,
            qty: q,
            taker_fee: Units::try_from(taker_fee).expect("fee fits"),
            maker_fee: Units::try_from(maker_fee).expect("fee fits"),
            taker_left: taker.remaining,
            maker_left,
        });
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
        use RejectReason::*;
        let rejected = |reason| reject(account, Some(oid), reason);
        let Some(spec) = self.market(market) else {
            out.push(rejected(UnknownMarket));
            return;
        };
        if !self.has_account(account) {
            out.push(rejected(UnknownAccount));
            return;
        }
        let Some(index) = self.find(account, market, oid) else {
            out.push(rejected(UnknownOrder));
            return;
        };
        if qty <= 0 {
            out.push(rejected(InvalidQty));
            return;
        }
        if price < 1 || price > spec.max_price_ticks {
            out.push(rejected(InvalidPrice));
            return;
        }
        let old = self.orders[index].clone();
        let modified = Event::Modified {
            market,
            account,
            oid,
            price,
            qty,
        };
        if price == old.price && qty <= old.remaining {
            self.orders[index].remaining = qty;
            out.push(modified);
            return;
        }
        if qty < spec.min_lots {
            out.push(rejected(MinQty));
            return;
        }
        if old.post_only && self.would_cross(market, old.side, price) {
            out.push(rejected(PostOnlyWouldCross));
            return;
        }
        let asset = reserve_asset(&spec, old.side);
        let current = reserve_amount(&spec, old.side, old.price, old.remaining);
        let new = reserve_amount(&spec, old.side, price, qty);
        if self.available(account, asset) + current < new {
            out.push(rejected(InsufficientBalance));
            return;
        }
        out.push(modified);
        self.orders.remove(index);
        let entry = self.next_entry();
        let mut taker = Taker {
            account,
            oid,
            side: old.side,
            limit: Some(price),
            remaining: qty,
            stp: old.stp,
            pay_per_fill: false,
        };
        let stp_canceled = self.match_taker(&spec, &mut taker, out);
        if !stp_canceled && taker.remaining > 0 {
            self.rest(ModelOrder {
                price,
                remaining: taker.remaining,
                entry,
                ..old
            });
        }
    }
}
