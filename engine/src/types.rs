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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// Buys base, pays quote; rests on the bid side.
    Buy,
    /// Sells base, receives quote; rests on the ask side.
    Sell,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SelfTradePrevention {
    /// Cancel the resting (maker) order and keep matching.
    #[default]
    CancelMaker,
    /// Cancel the incoming order's remainder and stop matching.
    CancelTaker,
    /// Cancel both the resting order and the incoming remainder.
    CancelBoth,
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
}

/// One sequenced input to the engine. The engine changes state only through these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

impl RejectReason {
    /// Every reason, in a fixed order: new reasons are appended, never inserted, because the
    /// binary gateway's reject code is the position here plus one.
    pub const ALL: [RejectReason; 19] = [
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
}

impl CancelReason {
    /// The stable snake_case name used on every wire format.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::User => "user",
            CancelReason::Unfilled => "unfilled",
            CancelReason::Stp => "stp",
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
