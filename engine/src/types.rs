//! Plain data the engine consumes and produces: identifiers, commands, events and reasons.
//!
//! Every quantity is an integer in a named unit:
//! - `Ticks`: a price, counted in the market's tick size (always >= 1).
//! - `Lots`: a size, counted in the market's lot size (always >= 1 for an order).
//! - `Units`: an amount of an asset in its smallest indivisible unit (balances, fees).

/// A price in ticks of its market.
pub type Ticks = i64;
/// A size in lots of its market.
pub type Lots = i64;
/// An asset amount in the asset's smallest unit.
pub type Units = i64;
/// An account as named by its owner (the engine maps it to a dense index internally).
pub type AccountId = u64;
/// An asset as named by the operator.
pub type AssetId = u32;
/// A market as named by the operator.
pub type MarketId = u32;
/// A client order id: unique among one account's open orders.
pub type OrderId = u64;

/// Fees are quoted in basis points: 1 bps = 1/10_000 of notional.
pub const BPS_DENOMINATOR: i128 = 10_000;

/// Which side of the book an order is on.
///
/// One byte, equal to its [`ByteCode::code`] (the engine's commit reads it as such).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Side {
    /// Buys base, pays quote; rests on the bid side.
    Buy = 0,
    /// Sells base, receives quote; rests on the ask side.
    Sell = 1,
}

impl Side {
    /// The other side.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

/// How long an order may live and whether it may take liquidity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeInForce {
    /// Good till canceled: matches, then the remainder rests.
    Gtc,
    /// Immediate or cancel: matches, then the remainder is canceled (`unfilled`).
    Ioc,
    /// Fill or kill: fills completely at once or is rejected with no side effect.
    Fok,
    /// Add liquidity only (post-only): rejected if it would cross, otherwise rests.
    Alo,
}

/// What happens when an order would trade against another order of the same account.
///
/// One byte, equal to its [`ByteCode::code`] (the engine's commit reads it as such).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum SelfTradePrevention {
    /// Cancel the resting (maker) order and keep matching.
    #[default]
    CancelMaker = 0,
    /// Cancel the incoming order's remainder and stop matching.
    CancelTaker = 1,
    /// Cancel both the resting order and the incoming remainder.
    CancelBoth = 2,
}

/// Static parameters of a spot market, in integer units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarketSpec {
    /// The market's id.
    pub market: MarketId,
    /// The asset bought and sold.
    pub base: AssetId,
    /// The asset prices are quoted in and paid with.
    pub quote: AssetId,
    /// Base units moved per lot filled.
    pub base_units_per_lot: Units,
    /// Quote units paid for one lot at a price of one tick (so notional = price * lots * this).
    pub quote_units_per_tick_lot: Units,
    /// The smallest order size accepted, in lots.
    pub min_lots: Lots,
    /// The highest price accepted, in ticks (the lowest is 1).
    pub max_price_ticks: Ticks,
    /// Fee charged to the maker, in bps of notional; negative is a rebate (|maker| <= taker).
    pub maker_fee_bps: i32,
    /// Fee charged to the taker, in bps of notional; never negative.
    pub taker_fee_bps: i32,
}

impl MarketSpec {
    /// Bytes of [`MarketSpec::to_le_bytes`].
    pub const ENCODED_LEN: usize = 52;

    /// The spec as it appears in every binary format (snapshots, the write-ahead log, the
    /// state root): market, base, quote (u32), base_units_per_lot, quote_units_per_tick_lot,
    /// min_lots, max_price_ticks (i64), maker_fee_bps, taker_fee_bps (i32), little-endian.
    pub fn to_le_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        for id in [self.market, self.base, self.quote] {
            put(&id.to_le_bytes());
        }
        for units in [
            self.base_units_per_lot,
            self.quote_units_per_tick_lot,
            self.min_lots,
            self.max_price_ticks,
        ] {
            put(&units.to_le_bytes());
        }
        put(&self.maker_fee_bps.to_le_bytes());
        put(&self.taker_fee_bps.to_le_bytes());
        out
    }

    /// The inverse of [`MarketSpec::to_le_bytes`] (no validation: the engine validates).
    pub fn from_le_bytes(bytes: &[u8; Self::ENCODED_LEN]) -> MarketSpec {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let i64_at = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let i32_at = |at: usize| i32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        MarketSpec {
            market: u32_at(0),
            base: u32_at(4),
            quote: u32_at(8),
            base_units_per_lot: i64_at(12),
            quote_units_per_tick_lot: i64_at(20),
            min_lots: i64_at(28),
            max_price_ticks: i64_at(36),
            maker_fee_bps: i32_at(44),
            taker_fee_bps: i32_at(48),
        }
    }
}

/// Default highest price in ticks: 2^24 - 1, enough for 167,772.15 at a 0.01 tick.
pub const DEFAULT_MAX_PRICE_TICKS: Ticks = (1 << 24) - 1;

/// A new order as submitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewOrder {
    /// The owner.
    pub account: AccountId,
    /// The market it trades in.
    pub market: MarketId,
    /// The client's id for it.
    pub oid: OrderId,
    /// Buy or sell.
    pub side: Side,
    /// Limit price in ticks; `None` is a market order (no price limit, IOC only).
    pub price: Option<Ticks>,
    /// Size in lots.
    pub qty: Lots,
    /// Time in force.
    pub tif: TimeInForce,
    /// Self-trade prevention mode.
    pub stp: SelfTradePrevention,
    /// Perpetual markets only: the order may only shrink the account's position (see
    /// docs/perps.md). Must be false in spot markets.
    pub reduce_only: bool,
}

/// One sequenced input to the engine. The engine changes state only through these.
///
/// One cache line (64 bytes, checked below): the two large and rare payloads, a perp market's
/// spec and the oracle prices, are boxed, so streams and rings of commands carry 64 bytes per
/// order instead of 160 (docs/perf.md, issue 16's seventh round). Hence `Clone`, not `Copy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Register an asset.
    CreateAsset {
        /// The new asset's id.
        asset: AssetId,
    },
    /// Open a spot market between two registered assets.
    CreateMarket(MarketSpec),
    /// Credit an account (creating it on first deposit).
    Deposit {
        /// Who is credited.
        account: AccountId,
        /// Which asset.
        asset: AssetId,
        /// How much, > 0.
        amount: Units,
    },
    /// Debit an account's available (unlocked) balance.
    Withdraw {
        /// Who is debited.
        account: AccountId,
        /// Which asset.
        asset: AssetId,
        /// How much, > 0.
        amount: Units,
    },
    /// Submit a new order.
    Place(NewOrder),
    /// Cancel one open order.
    Cancel {
        /// The owner.
        account: AccountId,
        /// The order's market.
        market: MarketId,
        /// The client order id.
        oid: OrderId,
    },
    /// Cancel every open order of an account in one market.
    CancelAll {
        /// The owner.
        account: AccountId,
        /// The market.
        market: MarketId,
    },
    /// Change an open order's price and/or remaining size.
    ///
    /// Same price and a smaller size keeps time priority; anything else re-enters the order
    /// at the back of its new level, and it may match.
    Modify {
        /// The owner.
        account: AccountId,
        /// The order's market.
        market: MarketId,
        /// The client order id.
        oid: OrderId,
        /// New limit price in ticks.
        price: Ticks,
        /// New remaining size in lots.
        qty: Lots,
    },
    /// Open a perpetual futures market settled in a collateral asset (docs/perps.md).
    CreatePerpMarket(Box<PerpSpec>),
    /// Move collateral between an account's spot balance and its cross-margin perp
    /// collateral: `amount > 0` spot to perp, `amount < 0` perp to spot (only what is free of
    /// margin requirements).
    TransferCollateral {
        /// The account.
        account: AccountId,
        /// Units of the collateral asset, signed (non-zero).
        amount: Units,
    },
    /// Set an account's leverage and margin mode in one perp market. Refused while the
    /// account has open orders there; a mode change is refused while it has a position.
    SetLeverage {
        /// The account.
        account: AccountId,
        /// The perp market.
        market: MarketId,
        /// 1..=max_leverage.
        leverage: u32,
        /// Isolated (true) or cross (false) margin.
        isolated: bool,
    },
    /// Add (`amount > 0`, from cross collateral) or remove (`amount < 0`, back to it) margin
    /// of an isolated position.
    IsolatedMargin {
        /// The account.
        account: AccountId,
        /// The perp market.
        market: MarketId,
        /// Units, signed (non-zero).
        amount: Units,
    },
    /// Validator-published oracle prices for a perp market: the oracle price is their median
    /// (the lower middle for an even count). Also samples the funding premium, refreshes the
    /// mark price and runs liquidations.
    Oracle {
        /// The perp market.
        market: MarketId,
        /// Source prices in ticks; the first `count` are used.
        prices: Box<[Ticks; MAX_ORACLE_SOURCES]>,
        /// How many sources, 1..=MAX_ORACLE_SOURCES.
        count: u8,
    },
    /// A funding interval ended: compute the rate from the premium samples and move the
    /// market's funding index (positions settle lazily).
    Funding {
        /// The perp market.
        market: MarketId,
    },
}

const _: () = assert!(
    std::mem::size_of::<Command>() <= 64,
    "a Command is one cache line"
);

/// Most source prices one [`Command::Oracle`] carries.
pub const MAX_ORACLE_SOURCES: usize = 8;
/// Most rows in a perp market's margin table.
pub const MAX_MARGIN_TIERS: usize = 4;
/// Rates are in parts per billion.
pub const PPB: i128 = 1_000_000_000;
/// The account that is the insurance fund and backstop liquidator: created with the first
/// perp market; its perp collateral is the insurance fund (docs/perps.md).
pub const INSURANCE_ACCOUNT: AccountId = u64::MAX;

/// One row of a perp market's margin table: positions whose notional (at mark) is at most
/// `notional_up_to` use these rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MarginTier {
    /// Upper bound of the row's notional, in collateral units (the last row's is ignored).
    pub notional_up_to: Units,
    /// Initial margin rate, ppb of notional.
    pub imr_ppb: u32,
    /// Maintenance margin rate, ppb of notional (below `imr_ppb`).
    pub mmr_ppb: u32,
}

/// Static parameters of a perpetual futures market, in integer units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerpSpec {
    /// The market's id (shared id space with spot markets).
    pub market: MarketId,
    /// The collateral (quote) asset. Every perp market of an engine uses the same one.
    pub collateral: AssetId,
    /// Collateral units per lot per tick of price (notional = price * lots * this).
    pub quote_units_per_tick_lot: Units,
    /// The smallest order size accepted, in lots.
    pub min_lots: Lots,
    /// The highest price accepted, in ticks.
    pub max_price_ticks: Ticks,
    /// Maker fee in bps of notional; negative is a rebate (|maker| <= taker).
    pub maker_fee_bps: i32,
    /// Taker fee in bps of notional, >= 0.
    pub taker_fee_bps: i32,
    /// Highest leverage an account may choose, 1..=100.
    pub max_leverage: u32,
    /// Margin table rows in increasing notional; the first `tier_count` are used.
    pub tiers: [MarginTier; MAX_MARGIN_TIERS],
    /// Rows used, 1..=MAX_MARGIN_TIERS.
    pub tier_count: u8,
    /// Most long lots open in all (= short lots); orders that would pass it are refused.
    pub open_interest_cap_lots: Lots,
    /// Limit prices further than this from the oracle price are refused, ppb; market orders
    /// are limited to the band's edge.
    pub price_band_ppb: u32,
    /// Interest component of funding, ppb per interval.
    pub interest_ppb: i32,
    /// Largest absolute funding rate, ppb per interval.
    pub funding_cap_ppb: u32,
    /// Notional whose average fill price on each side gives the impact bid and ask.
    pub impact_notional: Units,
    /// Largest notional one liquidation step sends to the book.
    pub liquidation_chunk_notional: Units,
    /// Liquidation fee to the insurance fund, ppb of the notional liquidated.
    pub liquidation_fee_ppb: u32,
}

impl PerpSpec {
    /// Bytes of [`PerpSpec::to_le_bytes`].
    pub const ENCODED_LEN: usize =
        4 + 4 + 8 + 8 + 8 + 4 + 4 + 4 + MAX_MARGIN_TIERS * 16 + 1 + 8 + 4 + 4 + 4 + 8 + 8 + 4;

    /// The spec in every binary format (snapshots, the write-ahead log, the state root), in
    /// field order, little-endian; each tier is notional_up_to i64, imr_ppb u32, mmr_ppb u32.
    pub fn to_le_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&self.market.to_le_bytes());
        put(&self.collateral.to_le_bytes());
        put(&self.quote_units_per_tick_lot.to_le_bytes());
        put(&self.min_lots.to_le_bytes());
        put(&self.max_price_ticks.to_le_bytes());
        put(&self.maker_fee_bps.to_le_bytes());
        put(&self.taker_fee_bps.to_le_bytes());
        put(&self.max_leverage.to_le_bytes());
        for tier in &self.tiers {
            put(&tier.notional_up_to.to_le_bytes());
            put(&tier.imr_ppb.to_le_bytes());
            put(&tier.mmr_ppb.to_le_bytes());
        }
        put(&[self.tier_count]);
        put(&self.open_interest_cap_lots.to_le_bytes());
        put(&self.price_band_ppb.to_le_bytes());
        put(&self.interest_ppb.to_le_bytes());
        put(&self.funding_cap_ppb.to_le_bytes());
        put(&self.impact_notional.to_le_bytes());
        put(&self.liquidation_chunk_notional.to_le_bytes());
        put(&self.liquidation_fee_ppb.to_le_bytes());
        out
    }

    /// The inverse of [`PerpSpec::to_le_bytes`] (no validation: the engine validates).
    pub fn from_le_bytes(bytes: &[u8; Self::ENCODED_LEN]) -> PerpSpec {
        let mut at = 0;
        let mut take = |n: usize| {
            let slice = &bytes[at..at + n];
            at += n;
            slice
        };
        let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4"));
        let i32_of = |b: &[u8]| i32::from_le_bytes(b.try_into().expect("4"));
        let i64_of = |b: &[u8]| i64::from_le_bytes(b.try_into().expect("8"));
        let market = u32_of(take(4));
        let collateral = u32_of(take(4));
        let quote_units_per_tick_lot = i64_of(take(8));
        let min_lots = i64_of(take(8));
        let max_price_ticks = i64_of(take(8));
        let maker_fee_bps = i32_of(take(4));
        let taker_fee_bps = i32_of(take(4));
        let max_leverage = u32_of(take(4));
        let mut tiers = [MarginTier::default(); MAX_MARGIN_TIERS];
        for tier in &mut tiers {
            tier.notional_up_to = i64_of(take(8));
            tier.imr_ppb = u32_of(take(4));
            tier.mmr_ppb = u32_of(take(4));
        }
        let tier_count = take(1)[0];
        PerpSpec {
            market,
            collateral,
            quote_units_per_tick_lot,
            min_lots,
            max_price_ticks,
            maker_fee_bps,
            taker_fee_bps,
            max_leverage,
            tiers,
            tier_count,
            open_interest_cap_lots: i64_of(take(8)),
            price_band_ppb: u32_of(take(4)),
            interest_ppb: i32_of(take(4)),
            funding_cap_ppb: u32_of(take(4)),
            impact_notional: i64_of(take(8)),
            liquidation_chunk_notional: i64_of(take(8)),
            liquidation_fee_ppb: u32_of(take(4)),
        }
    }

    /// The margin table rows in use.
    pub fn tiers(&self) -> &[MarginTier] {
        &self.tiers[..(self.tier_count as usize).min(MAX_MARGIN_TIERS)]
    }
}

/// Why a command was refused. A refused command has no effect on state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The market id is not registered.
    UnknownMarket,
    /// The asset id is not registered.
    UnknownAsset,
    /// The account has never been credited.
    UnknownAccount,
    /// No open order with that id for that account in that market.
    UnknownOrder,
    /// The price is not a whole number of ticks.
    TickSize,
    /// The size is not a whole number of lots.
    LotSize,
    /// The size is below the market's minimum.
    MinQty,
    /// The price is <= 0 or above the market's maximum.
    InvalidPrice,
    /// The size or amount is <= 0 or too large to represent.
    InvalidQty,
    /// The time in force is not allowed for this order type (market orders: IOC only).
    InvalidTif,
    /// Not enough available (unlocked) balance.
    InsufficientBalance,
    /// A post-only (ALO) order would have crossed the book.
    PostOnlyWouldCross,
    /// A fill-or-kill order could not be filled completely.
    FokUnfilled,
    /// The account already has an open order with this id.
    DuplicateOid,
    /// The account has reached its limit of open orders.
    TooManyOrders,
    /// The engine's order store is full.
    BookFull,
    /// The asset or market id is already registered.
    AlreadyExists,
    /// The market parameters are invalid (zero or negative units, bad fees, same asset twice).
    InvalidMarket,
    /// A credit would take the asset's total supply past what the engine can represent.
    Overflow,
    /// The order would leave the account's equity below its initial margin requirement.
    InsufficientMargin,
    /// A reduce-only order would not reduce the position (or reduce-only in a spot market).
    ReduceOnly,
    /// The order would take open interest past the market's cap.
    OpenInterestCap,
    /// The limit price is further from the oracle price than the market's band allows.
    PriceBand,
    /// The perp market has no oracle price yet.
    NoOraclePrice,
    /// The market is a spot market and the command needs a perp market, or the reverse.
    NotPerpMarket,
    /// The leverage is outside 1..=max_leverage, or would leave the position under its
    /// initial margin.
    InvalidLeverage,
    /// The account has open orders (or, for a mode change, a position) in the market.
    PositionOpen,
    /// The command needs an isolated position in the market and there is none.
    NoPosition,
}

impl RejectReason {
    /// Every reason, in a fixed order: new reasons are appended, never inserted, because the
    /// binary gateway's reject code is the position here plus one.
    pub const ALL: [RejectReason; 28] = [
        RejectReason::UnknownMarket,
        RejectReason::UnknownAsset,
        RejectReason::UnknownAccount,
        RejectReason::UnknownOrder,
        RejectReason::TickSize,
        RejectReason::LotSize,
        RejectReason::MinQty,
        RejectReason::InvalidPrice,
        RejectReason::InvalidQty,
        RejectReason::InvalidTif,
        RejectReason::InsufficientBalance,
        RejectReason::PostOnlyWouldCross,
        RejectReason::FokUnfilled,
        RejectReason::DuplicateOid,
        RejectReason::TooManyOrders,
        RejectReason::BookFull,
        RejectReason::AlreadyExists,
        RejectReason::InvalidMarket,
        RejectReason::Overflow,
        RejectReason::InsufficientMargin,
        RejectReason::ReduceOnly,
        RejectReason::OpenInterestCap,
        RejectReason::PriceBand,
        RejectReason::NoOraclePrice,
        RejectReason::NotPerpMarket,
        RejectReason::InvalidLeverage,
        RejectReason::PositionOpen,
        RejectReason::NoPosition,
    ];

    /// The stable snake_case name used on every wire format.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownMarket => "unknown_market",
            RejectReason::UnknownAsset => "unknown_asset",
            RejectReason::UnknownAccount => "unknown_account",
            RejectReason::UnknownOrder => "unknown_order",
            RejectReason::TickSize => "tick_size",
            RejectReason::LotSize => "lot_size",
            RejectReason::MinQty => "min_qty",
            RejectReason::InvalidPrice => "invalid_price",
            RejectReason::InvalidQty => "invalid_qty",
            RejectReason::InvalidTif => "invalid_tif",
            RejectReason::InsufficientBalance => "insufficient_balance",
            RejectReason::PostOnlyWouldCross => "post_only_would_cross",
            RejectReason::FokUnfilled => "fok_unfilled",
            RejectReason::DuplicateOid => "duplicate_oid",
            RejectReason::TooManyOrders => "too_many_orders",
            RejectReason::BookFull => "book_full",
            RejectReason::AlreadyExists => "already_exists",
            RejectReason::InvalidMarket => "invalid_market",
            RejectReason::Overflow => "overflow",
            RejectReason::InsufficientMargin => "insufficient_margin",
            RejectReason::ReduceOnly => "reduce_only",
            RejectReason::OpenInterestCap => "open_interest_cap",
            RejectReason::PriceBand => "price_band",
            RejectReason::NoOraclePrice => "no_oracle_price",
            RejectReason::NotPerpMarket => "not_perp_market",
            RejectReason::InvalidLeverage => "invalid_leverage",
            RejectReason::PositionOpen => "position_open",
            RejectReason::NoPosition => "no_position",
        }
    }
}

/// Why an order left the book (or never reached it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// The owner canceled it (cancel or cancel-all).
    User,
    /// An IOC, FOK or market order's remainder after matching.
    Unfilled,
    /// Self-trade prevention.
    Stp,
    /// The account was being liquidated (its perp orders are canceled first).
    Liquidation,
    /// A reduce-only order could no longer only reduce the position (it shrank or closed).
    ReduceOnly,
    /// An oracle move left the resting order crossing the price band (a bid above its top,
    /// an ask below its bottom).
    PriceBand,
}

impl CancelReason {
    /// The stable snake_case name used on every wire format.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::User => "user",
            CancelReason::Unfilled => "unfilled",
            CancelReason::Stp => "stp",
            CancelReason::Liquidation => "liquidation",
            CancelReason::ReduceOnly => "reduce_only",
            CancelReason::PriceBand => "price_band",
        }
    }
}

/// What a command did. Events of one command come in this order: accepted, modified or
/// rejected first; then fills and self-trade cancels in matching order; then the
/// remainder's cancel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An order passed every check and was taken in (it may match, rest, or both).
    Accepted {
        /// The order's market.
        market: MarketId,
        /// The owner.
        account: AccountId,
        /// The client order id.
        oid: OrderId,
    },
    /// A command was refused and had no effect. `oid` is set for order commands.
    Rejected {
        /// The account named by the command (0 for commands without one).
        account: AccountId,
        /// The client order id, for order commands.
        oid: Option<OrderId>,
        /// Why.
        reason: RejectReason,
    },
    /// A trade between an incoming (taker) order and a resting (maker) order.
    Fill {
        /// Where.
        market: MarketId,
        /// The incoming order's owner.
        taker_account: AccountId,
        /// The incoming order's id.
        taker_oid: OrderId,
        /// The resting order's owner.
        maker_account: AccountId,
        /// The resting order's id.
        maker_oid: OrderId,
        /// The taker's side.
        taker_side: Side,
        /// Trade price: always the maker's price, in ticks.
        price: Ticks,
        /// Trade size in lots.
        qty: Lots,
        /// Fee the taker paid, in quote units.
        taker_fee: Units,
        /// Fee the maker paid (negative: rebate received), in quote units.
        maker_fee: Units,
        /// The taker's size still unfilled after this trade, in lots (0: fully filled).
        taker_left: Lots,
        /// The maker's size still resting after this trade, in lots (0: fully filled, gone).
        maker_left: Lots,
    },
    /// An order left the book, or an incoming order's remainder was dropped.
    Canceled {
        /// The order's market.
        market: MarketId,
        /// The owner.
        account: AccountId,
        /// The client order id.
        oid: OrderId,
        /// Size that was still open, in lots.
        remaining: Lots,
        /// Why.
        reason: CancelReason,
    },
    /// An open order was changed by a modify command.
    Modified {
        /// The order's market.
        market: MarketId,
        /// The owner.
        account: AccountId,
        /// The client order id.
        oid: OrderId,
        /// The new price in ticks.
        price: Ticks,
        /// The new remaining size in lots.
        qty: Lots,
    },
    /// A perp market's oracle price was updated (and with it the mark price).
    OraclePrice {
        /// The perp market.
        market: MarketId,
        /// The new oracle price (median of the sources), in ticks.
        oracle: Ticks,
        /// The new mark price, in ticks.
        mark: Ticks,
        /// The premium sample taken for funding, ppb of the oracle price.
        premium_ppb: i64,
    },
    /// A funding interval was settled into the market's index.
    Funding {
        /// The perp market.
        market: MarketId,
        /// The interval's rate, ppb (positive: longs pay shorts).
        rate_ppb: i64,
        /// The cumulative index after it, in nano-units of collateral per lot held long.
        index: i128,
    },
    /// A perp position changed (after every change: fills, liquidation, ADL, funding settled
    /// on a change).
    Position {
        /// The owner.
        account: AccountId,
        /// The perp market.
        market: MarketId,
        /// Signed size in lots after the change (long > 0).
        size: Lots,
        /// Signed cost basis of the open lots after the change, in collateral units.
        open_notional: i128,
        /// Realized PnL of this change, in collateral units (before fees).
        realized_pnl: Units,
        /// Funding settled with this change: paid (> 0) or received (< 0).
        funding_paid: Units,
    },
    /// One step of a liquidation of `account`'s position in `market`.
    Liquidation {
        /// The account being liquidated.
        account: AccountId,
        /// The perp market.
        market: MarketId,
        /// Which step.
        step: LiquidationStep,
        /// Lots closed by this step.
        lots: Lots,
        /// Notional they were closed at, in collateral units (absolute).
        notional: Units,
        /// Liquidation fee paid to the insurance fund by this step.
        fee: Units,
        /// Loss the insurance fund (backstop) or the deleveraged traders (ADL) absorbed
        /// because the account's equity went below zero (bankruptcy), in collateral units.
        bad_debt: Units,
    },
    /// An opposite position was auto-deleveraged to close a bankrupt one.
    Adl {
        /// The deleveraged account.
        account: AccountId,
        /// The perp market.
        market: MarketId,
        /// Lots closed.
        lots: Lots,
        /// Notional they were closed at (the bankrupt position's price), absolute.
        notional: Units,
    },
}

/// The steps of a liquidation, in the order they are tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LiquidationStep {
    /// Market orders against the book, at most `liquidation_chunk_notional` each.
    Book,
    /// The insurance fund took the rest of the position at the mark price.
    Backstop,
    /// Opposite profitable positions were deleveraged at the bankruptcy price.
    Adl,
}

impl LiquidationStep {
    /// The stable snake_case name used on every wire format.
    pub fn as_str(self) -> &'static str {
        match self {
            LiquidationStep::Book => "book",
            LiquidationStep::Backstop => "backstop",
            LiquidationStep::Adl => "adl",
        }
    }
}

/// The size now resting at one price level, for the L2 market-data feed
/// ([`crate::Engine::drain_level_changes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelChange {
    /// The market.
    pub market: MarketId,
    /// The book side.
    pub side: Side,
    /// The level's price in ticks.
    pub price: Ticks,
    /// Total lots resting there now; 0 when the level is empty.
    pub lots: Lots,
}

/// An account's holding of one asset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    /// Everything the account owns of the asset.
    pub total: Units,
    /// The part reserved by open orders (never more than `total`).
    pub locked: Units,
}

impl Balance {
    /// What can still be spent or withdrawn.
    pub fn available(&self) -> Units {
        self.total - self.locked
    }
}

/// Sizing limits fixed at start-up, so the data path never allocates past them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Most orders resting across all markets at once.
    pub max_resting_orders: u32,
    /// Most open orders one account may have across all markets.
    pub max_open_orders_per_account: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_resting_orders: 1 << 20,
            max_open_orders_per_account: 10_000,
        }
    }
}

/// The one-byte codes of the enumerations, shared by every binary format (snapshots, the
/// write-ahead log and, later, the gateway) so that they cannot drift apart.
pub trait ByteCode: Sized + Copy {
    /// The code of this value.
    fn code(self) -> u8;
    /// The value with this code, if any.
    fn from_code(code: u8) -> Option<Self>;
}

impl ByteCode for Side {
    /// 0 buy, 1 sell.
    fn code(self) -> u8 {
        match self {
            Side::Buy => 0,
            Side::Sell => 1,
        }
    }
    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Side::Buy),
            1 => Some(Side::Sell),
            _ => None,
        }
    }
}

impl ByteCode for TimeInForce {
    /// 0 gtc, 1 ioc, 2 fok, 3 alo.
    fn code(self) -> u8 {
        match self {
            TimeInForce::Gtc => 0,
            TimeInForce::Ioc => 1,
            TimeInForce::Fok => 2,
            TimeInForce::Alo => 3,
        }
    }
    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(TimeInForce::Gtc),
            1 => Some(TimeInForce::Ioc),
            2 => Some(TimeInForce::Fok),
            3 => Some(TimeInForce::Alo),
            _ => None,
        }
    }
}

impl ByteCode for SelfTradePrevention {
    /// 0 cancel_maker, 1 cancel_taker, 2 cancel_both.
    fn code(self) -> u8 {
        match self {
            SelfTradePrevention::CancelMaker => 0,
            SelfTradePrevention::CancelTaker => 1,
            SelfTradePrevention::CancelBoth => 2,
        }
    }
    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(SelfTradePrevention::CancelMaker),
            1 => Some(SelfTradePrevention::CancelTaker),
            2 => Some(SelfTradePrevention::CancelBoth),
            _ => None,
        }
    }
}
