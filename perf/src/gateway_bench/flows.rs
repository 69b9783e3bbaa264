//! What each open-loop sender sends: market makers quoting two-sided around a mid and
//! replacing their quotes, takers sweeping the top levels with IOC orders, and cancel storms
//! (place, then cancel, far from the touch).
//!
//! Senders never wait for replies; the little they need to know (which quotes are still
//! open, the best bid and ask) they read from atomics the receiver and market-data threads
//! keep up to date.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use engine::{Lots, MarketId, SelfTradePrevention, Side, Ticks, TimeInForce};
use gateway::client::OrderRequest;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// What a request was, for the per-kind figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum RequestKind {
    /// A market maker's new GTC quote (a quote slot with no open order).
    MakerNew = 0,
    /// A market maker's cancel-replace of an open quote.
    MakerReplace = 1,
    /// A taker's IOC sweep.
    TakerIoc = 2,
    /// A cancel storm's GTC order.
    StormNew = 3,
    /// A cancel storm's cancel of the order it just placed.
    StormCancel = 4,
    /// The market-data taker's IOC, sent on a change of the best bid or ask (not scheduled).
    ReactIoc = 5,
}

impl RequestKind {
    /// Every kind, in code order.
    pub const ALL: [RequestKind; 6] = [
        RequestKind::MakerNew,
        RequestKind::MakerReplace,
        RequestKind::TakerIoc,
        RequestKind::StormNew,
        RequestKind::StormCancel,
        RequestKind::ReactIoc,
    ];

    /// The kind of a code.
    pub fn from_code(code: u8) -> Option<RequestKind> {
        Self::ALL.get(code as usize).copied()
    }

    /// A stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::MakerNew => "maker_new",
            RequestKind::MakerReplace => "maker_replace",
            RequestKind::TakerIoc => "taker_ioc",
            RequestKind::StormNew => "storm_new",
            RequestKind::StormCancel => "storm_cancel",
            RequestKind::ReactIoc => "react_ioc",
        }
    }

    /// Whether the request is a maker quote (its price shows up on the feed).
    pub fn is_quote(self) -> bool {
        matches!(self, RequestKind::MakerNew | RequestKind::MakerReplace)
    }

    /// Whether the request follows the open-loop schedule (all but the reactive IOC).
    pub fn is_scheduled(self) -> bool {
        self != RequestKind::ReactIoc
    }
}

/// One message to send.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    /// A new order.
    New(OrderRequest),
    /// A cancel-replace.
    Replace {
        /// Market.
        market: MarketId,
        /// The open order.
        oid: u64,
        /// The order's side (for the feed match).
        side: Side,
        /// New price.
        price: Ticks,
        /// New size.
        qty: Lots,
    },
    /// A cancel.
    Cancel {
        /// Market.
        market: MarketId,
        /// The open order.
        oid: u64,
    },
}

impl Action {
    /// Side and price (0 for a cancel), for the market-data match.
    pub fn side_price(&self) -> (Side, Ticks) {
        match *self {
            Action::New(order) => (order.side, order.price.unwrap_or(0)),
            Action::Replace { side, price, .. } => (side, price),
            Action::Cancel { .. } => (Side::Buy, 0),
        }
    }
}

/// Market state the flows share: the mid the makers quote around and the best prices the
/// market-data thread last saw (0: none).
#[derive(Debug)]
pub struct SharedMarket {
    /// Market id.
    pub market: MarketId,
    /// Where the mid started; it stays within `band` ticks of it.
    pub center: Ticks,
    /// Most the mid wanders from `center`, ticks.
    pub band: Ticks,
    /// The makers' mid, ticks.
    pub mid: AtomicI64,
    /// Best bid seen on the feed (0: none).
    pub best_bid: AtomicI64,
    /// Best ask seen on the feed (0: none).
    pub best_ask: AtomicI64,
}

impl SharedMarket {
    /// A market whose mid starts at `center`.
    pub fn new(market: MarketId, center: Ticks, band: Ticks) -> SharedMarket {
        SharedMarket {
            market,
            center,
            band,
            mid: AtomicI64::new(center),
            best_bid: AtomicI64::new(0),
            best_ask: AtomicI64::new(0),
        }
    }

    /// Moves the mid one tick up or down, kept within the band.
    pub fn walk(&self, up: bool) {
        let _ = self
            .mid
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mid| {
                let next = if up { mid + 1 } else { mid - 1 };
                ((next - self.center).abs() <= self.band).then_some(next)
            });
    }
}

/// Bit set on a quote slot's oid once the order is known closed (filled, canceled, refused).
pub const CLOSED: u64 = 1 << 63;

/// A maker's quote slots: the oid each slot's order has (0: never placed; with [`CLOSED`]:
/// closed). The sender writes new oids; the receiver marks them closed.
#[derive(Debug)]
pub struct QuoteSlots {
    oids: Vec<AtomicU64>,
}

impl QuoteSlots {
    /// `count` empty slots.
    pub fn new(count: usize) -> QuoteSlots {
        QuoteSlots {
            oids: (0..count).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.oids.len()
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.oids.is_empty()
    }

    /// The slot an oid belongs to (oids are `generation * slots + slot + 1`).
    pub fn slot_of(&self, oid: u64) -> Option<usize> {
        (oid != 0 && !self.oids.is_empty()).then(|| ((oid - 1) % self.oids.len() as u64) as usize)
    }

    /// The open oid of a slot, if it has one.
    pub fn open(&self, slot: usize) -> Option<u64> {
        let oid = self.oids[slot].load(Ordering::Acquire);
        (oid != 0 && oid & CLOSED == 0).then_some(oid)
    }

    /// Records that `oid` is the slot's order from now on.
    pub fn set(&self, slot: usize, oid: u64) {
        self.oids[slot].store(oid, Ordering::Release);
    }

    /// Marks `oid` closed if it is still its slot's order (events about older orders of the
    /// slot change nothing).
    pub fn close(&self, oid: u64) {
        if let Some(slot) = self.slot_of(oid) {
            let _ = self.oids[slot].compare_exchange(
                oid,
                oid | CLOSED,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }
}

/// A market maker: `levels` bids at `mid - 1 .. mid - levels` and asks at `mid + 1 .. mid +
/// levels`, one order per level. Each scheduled request moves the mid a tick with
/// probability 1/4, then re-quotes the next slot (round robin) at its level from the current
/// mid with a fresh random size (1..=`max_qty` lots): a cancel-replace of its open order, or
/// a new GTC order if the slot has none (first pass, or the order was filled or canceled).
#[derive(Debug)]
pub struct MakerFlow {
    /// The maker's quote slots (shared with its receiver).
    pub quotes: Arc<QuoteSlots>,
    levels: usize,
    max_qty: Lots,
    next_slot: usize,
    generation: u64,
}

impl MakerFlow {
    /// A maker with `levels` levels a side and sizes up to `max_qty` lots.
    pub fn new(levels: usize, max_qty: Lots) -> MakerFlow {
        let levels = levels.max(1);
        MakerFlow {
            quotes: Arc::new(QuoteSlots::new(2 * levels)),
            levels,
            max_qty: max_qty.max(1),
            next_slot: 0,
            generation: 0,
        }
    }

    /// The next request.
    pub fn next(&mut self, market: &SharedMarket, rng: &mut ChaCha8Rng) -> (RequestKind, Action) {
        if rng.random_range(0..4) == 0 {
            market.walk(rng.random_bool(0.5));
        }
        let slot = self.next_slot;
        self.next_slot = (slot + 1) % self.quotes.len();
        if slot == 0 {
            self.generation += 1;
        }
        let (side, level) = if slot < self.levels {
            (Side::Buy, slot + 1)
        } else {
            (Side::Sell, slot - self.levels + 1)
        };
        let mid = market.mid.load(Ordering::Relaxed);
        let price = match side {
            Side::Buy => mid - level as Ticks,
            Side::Sell => mid + level as Ticks,
        };
        let qty = rng.random_range(1..=self.max_qty);
        match self.quotes.open(slot) {
            Some(oid) => (
                RequestKind::MakerReplace,
                Action::Replace {
                    market: market.market,
                    oid,
                    side,
                    price,
                    qty,
                },
            ),
            None => {
                let oid = self.generation * self.quotes.len() as u64 + slot as u64 + 1;
                self.quotes.set(slot, oid);
                (
                    RequestKind::MakerNew,
                    Action::New(OrderRequest {
                        market: market.market,
                        oid,
                        side,
                        price: Some(price),
                        qty,
                        tif: TimeInForce::Gtc,
                        stp: SelfTradePrevention::CancelMaker,
                    }),
                )
            }
        }
    }
}

/// A taker: IOC orders alternating buy and sell, priced `depth` ticks through the best
/// opposite price the feed last showed (the mid ± 1 if that side is empty), 1..=`max_qty`
/// lots: each takes the best level and often the next few.
#[derive(Debug)]
pub struct TakerFlow {
    depth: Ticks,
    max_qty: Lots,
    next_oid: u64,
}

impl TakerFlow {
    /// A taker sweeping `depth` ticks through the touch with up to `max_qty` lots.
    pub fn new(depth: Ticks, max_qty: Lots) -> TakerFlow {
        TakerFlow {
            depth: depth.max(0),
            max_qty: max_qty.max(1),
            next_oid: 1,
        }
    }

    /// The next request.
    pub fn next(&mut self, market: &SharedMarket, rng: &mut ChaCha8Rng) -> (RequestKind, Action) {
        let oid = self.next_oid;
        self.next_oid += 1;
        let side = if oid & 1 == 0 { Side::Sell } else { Side::Buy };
        let mid = market.mid.load(Ordering::Relaxed);
        let price = match side {
            Side::Buy => match market.best_ask.load(Ordering::Relaxed) {
                0 => mid + 1,
                ask => ask,
            }
            .saturating_add(self.depth),
            Side::Sell => match market.best_bid.load(Ordering::Relaxed) {
                0 => mid - 1,
                bid => bid,
            }
            .saturating_sub(self.depth)
            .max(1),
        };
        (
            RequestKind::TakerIoc,
            Action::New(OrderRequest {
                market: market.market,
                oid,
                side,
                price: Some(price),
                qty: rng.random_range(1..=self.max_qty),
                tif: TimeInForce::Ioc,
                stp: SelfTradePrevention::CancelTaker,
            }),
        )
    }
}

/// A cancel storm: even requests place a GTC order `gap + 0..20` ticks behind the mid
/// (alternating sides, so it rests and does not trade), odd requests cancel it.
#[derive(Debug)]
pub struct StormFlow {
    gap: Ticks,
    next_oid: u64,
    open: Option<u64>,
}

impl StormFlow {
    /// A storm resting its orders at least `gap` ticks from the mid.
    pub fn new(gap: Ticks) -> StormFlow {
        StormFlow {
            gap: gap.max(1),
            next_oid: 1,
            open: None,
        }
    }

    /// The next request.
    pub fn next(&mut self, market: &SharedMarket, rng: &mut ChaCha8Rng) -> (RequestKind, Action) {
        if let Some(oid) = self.open.take() {
            return (
                RequestKind::StormCancel,
                Action::Cancel {
                    market: market.market,
                    oid,
                },
            );
        }
        let oid = self.next_oid;
        self.next_oid += 1;
        self.open = Some(oid);
        let side = if oid & 1 == 0 { Side::Sell } else { Side::Buy };
        let mid = market.mid.load(Ordering::Relaxed);
        let distance = self.gap + rng.random_range(0..20);
        let price = match side {
            Side::Buy => (mid - distance).max(1),
            Side::Sell => mid + distance,
        };
        (
            RequestKind::StormNew,
            Action::New(OrderRequest {
                market: market.market,
                oid,
                side,
                price: Some(price),
                qty: rng.random_range(1..=10),
                tif: TimeInForce::Gtc,
                stp: SelfTradePrevention::CancelMaker,
            }),
        )
    }
}

/// Any open-loop flow.
#[derive(Debug)]
pub enum Flow {
    /// Market maker.
    Maker(MakerFlow),
    /// Sweeping taker.
    Taker(TakerFlow),
    /// Cancel storm.
    Storm(StormFlow),
}

impl Flow {
    /// The next request.
    pub fn next(&mut self, market: &SharedMarket, rng: &mut ChaCha8Rng) -> (RequestKind, Action) {
        match self {
            Flow::Maker(flow) => flow.next(market, rng),
            Flow::Taker(flow) => flow.next(market, rng),
            Flow::Storm(flow) => flow.next(market, rng),
        }
    }

    /// The maker's quote slots, if this is a maker.
    pub fn quotes(&self) -> Option<Arc<QuoteSlots>> {
        match self {
            Flow::Maker(flow) => Some(flow.quotes.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_maker_places_then_replaces_and_replaces_closed_quotes() {
        let market = SharedMarket::new(0, 1_000, 50);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut maker = MakerFlow::new(2, 5);
        let first: Vec<_> = (0..4).map(|_| maker.next(&market, &mut rng)).collect();
        assert!(first.iter().all(|(kind, _)| *kind == RequestKind::MakerNew));
        let mut bids = 0;
        for (_, action) in &first {
            let Action::New(order) = action else {
                panic!("new expected")
            };
            let mid = 1_000;
            match order.side {
                Side::Buy => {
                    bids += 1;
                    assert!(order.price.unwrap() < mid + 2);
                }
                Side::Sell => assert!(order.price.unwrap() > mid - 2),
            }
            assert!((1..=5).contains(&order.qty));
        }
        assert_eq!(bids, 2);
        // Second pass: replaces of the same oids.
        let (kind, action) = maker.next(&market, &mut rng);
        assert_eq!(kind, RequestKind::MakerReplace);
        let Action::Replace { oid, .. } = action else {
            panic!("replace expected")
        };
        let Action::New(first_order) = first[0].1 else {
            unreachable!()
        };
        assert_eq!(oid, first_order.oid);
        // A closed quote is placed again under a new oid of the same slot.
        let Action::New(second) = first[1].1 else {
            unreachable!()
        };
        maker.quotes.close(second.oid);
        maker.quotes.close(second.oid + 100); // another slot's oid: not the open one
        let (kind, action) = maker.next(&market, &mut rng);
        assert_eq!(kind, RequestKind::MakerNew);
        let Action::New(again) = action else {
            unreachable!()
        };
        assert_ne!(again.oid, second.oid);
        assert_eq!(maker.quotes.slot_of(again.oid), Some(1));
        assert_eq!(maker.quotes.open(1), Some(again.oid));
        // A stale close of the old oid does not close the new order.
        maker.quotes.close(second.oid);
        assert_eq!(maker.quotes.open(1), Some(again.oid));
    }

    #[test]
    fn the_mid_stays_in_its_band() {
        let market = SharedMarket::new(0, 100, 3);
        for _ in 0..10 {
            market.walk(true);
        }
        assert_eq!(market.mid.load(Ordering::Relaxed), 103);
        for _ in 0..10 {
            market.walk(false);
        }
        assert_eq!(market.mid.load(Ordering::Relaxed), 97);
    }

    #[test]
    fn takers_sweep_through_the_touch_and_storms_cancel_what_they_placed() {
        let market = SharedMarket::new(0, 1_000, 50);
        market.best_ask.store(1_002, Ordering::Relaxed);
        market.best_bid.store(998, Ordering::Relaxed);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut taker = TakerFlow::new(3, 20);
        for _ in 0..4 {
            let (kind, Action::New(order)) = taker.next(&market, &mut rng) else {
                panic!("new expected")
            };
            assert_eq!(kind, RequestKind::TakerIoc);
            assert_eq!(order.tif, TimeInForce::Ioc);
            match order.side {
                Side::Buy => assert_eq!(order.price, Some(1_005)),
                Side::Sell => assert_eq!(order.price, Some(995)),
            }
        }
        let mut storm = StormFlow::new(30);
        for _ in 0..5 {
            let (kind, Action::New(order)) = storm.next(&market, &mut rng) else {
                panic!("new expected")
            };
            assert_eq!(kind, RequestKind::StormNew);
            let distance = (order.price.unwrap() - 1_000).abs();
            assert!((30..50).contains(&distance));
            let (kind, action) = storm.next(&market, &mut rng);
            assert_eq!(kind, RequestKind::StormCancel);
            assert!(matches!(action, Action::Cancel { market: 0, oid } if oid == order.oid));
        }
    }
}
