//! What the read precompiles see of NexusCore: a read-only view taken at an EVM block's
//! start.
//!
//! [`CoreSnapshot`] borrows the engine immutably for the whole EVM block, so Core state
//! cannot change while the block runs: every precompile call in the block sees Core as of
//! the block's start, and nothing a precompile does can reach the engine.

use engine::{
    AccountId, AssetId, Balance, Engine, Lots, MarketId, OrderView, PerpMarketView, PositionView,
    PriceLadder, Side, Ticks, Units,
};

/// Read-only Core queries the precompiles need.
pub trait CoreView {
    /// The Core block height this view is as of.
    fn height(&self) -> u64;
    /// A spot balance; `None` for an unknown account or asset.
    fn balance(&self, account: AccountId, asset: AssetId) -> Option<Balance>;
    /// A perp position; `None` if there is none.
    fn position(&self, account: AccountId, market: MarketId) -> Option<PositionView>;
    /// The best level of one side: `(price, lots)`.
    fn best(&self, market: MarketId, side: Side) -> Option<(Ticks, Lots)>;
    /// A perp market's prices.
    fn perp_market(&self, market: MarketId) -> Option<PerpMarketView>;
    /// Up to `max` open orders of `account` in `market`, in the order they entered the book,
    /// and how many orders were walked to find them (for gas: the account's orders there).
    fn open_orders(
        &self,
        account: AccountId,
        market: MarketId,
        max: usize,
    ) -> (Vec<OrderView>, usize);
    /// Cross collateral and order margin.
    fn perp_collateral(&self, account: AccountId) -> Option<(Units, Units)>;
}

/// A view of an engine, borrowed for one EVM block.
pub struct CoreSnapshot<'a, L: PriceLadder> {
    engine: &'a Engine<L>,
    height: u64,
}

impl<'a, L: PriceLadder> CoreSnapshot<'a, L> {
    /// Views `engine`, which has executed Core blocks up to `height`.
    pub fn new(engine: &'a Engine<L>, height: u64) -> Self {
        CoreSnapshot { engine, height }
    }
}

impl<L: PriceLadder> CoreView for CoreSnapshot<'_, L> {
    fn height(&self) -> u64 {
        self.height
    }

    fn balance(&self, account: AccountId, asset: AssetId) -> Option<Balance> {
        self.engine.balance(account, asset)
    }

    fn position(&self, account: AccountId, market: MarketId) -> Option<PositionView> {
        self.engine.position_view(account, market)
    }

    fn best(&self, market: MarketId, side: Side) -> Option<(Ticks, Lots)> {
        let mut levels = Vec::with_capacity(1);
        self.engine.depth(market, side, 1, &mut levels);
        levels.first().copied()
    }

    fn perp_market(&self, market: MarketId) -> Option<PerpMarketView> {
        self.engine.perp_market(market)
    }

    fn open_orders(
        &self,
        account: AccountId,
        market: MarketId,
        max: usize,
    ) -> (Vec<OrderView>, usize) {
        // The account's own order list: the cost is its open orders, not the book.
        let mut mine = self.engine.account_orders(account, Some(market));
        let scanned = mine.len();
        mine.truncate(max);
        (mine, scanned)
    }

    fn perp_collateral(&self, account: AccountId) -> Option<(Units, Units)> {
        self.engine.perp_collateral(account)
    }
}

/// A Core with nothing in it (height 0): for EVM-only use and tests.
pub struct EmptyCore;

impl CoreView for EmptyCore {
    fn height(&self) -> u64 {
        0
    }
    fn balance(&self, _: AccountId, _: AssetId) -> Option<Balance> {
        None
    }
    fn position(&self, _: AccountId, _: MarketId) -> Option<PositionView> {
        None
    }
    fn best(&self, _: MarketId, _: Side) -> Option<(Ticks, Lots)> {
        None
    }
    fn perp_market(&self, _: MarketId) -> Option<PerpMarketView> {
        None
    }
    fn open_orders(&self, _: AccountId, _: MarketId, _: usize) -> (Vec<OrderView>, usize) {
        (Vec::new(), 0)
    }
    fn perp_collateral(&self, _: AccountId) -> Option<(Units, Units)> {
        None
    }
}
