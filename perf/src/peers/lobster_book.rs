//! The `lobster` crate (0.7.0) as a [`PeerBook`]: a `BTreeMap` of price levels, each a `Vec`
//! queue, over an arena of orders. Its API has limit, market and cancel orders only:
//! - IOC: a limit order, then a cancel of the remainder when some of it rested;
//! - modify ([`PeerOp::Replace`], [`PeerOp::Reduce`]): cancel, then a new limit order with the
//!   same id (a size cut loses time priority here, hence [`Profile::ReEnterCuts`]).

use engine::{Lots, Side, Ticks};
use lobster::{FillMetadata, OrderBook, OrderEvent, OrderType};

use super::{PeerBook, PeerFill, PeerOp, Profile};

/// `lobster::OrderBook` behind the [`PeerBook`] interface.
pub struct LobsterBook {
    book: OrderBook,
}

fn side(side: Side) -> lobster::Side {
    match side {
        Side::Buy => lobster::Side::Bid,
        Side::Sell => lobster::Side::Ask,
    }
}

fn collect(fills: &[FillMetadata], out: &mut Vec<PeerFill>) {
    out.extend(fills.iter().map(|fill| PeerFill {
        taker: fill.order_1 as u64,
        maker: fill.order_2 as u64,
        price: fill.price as Ticks,
        qty: fill.qty as Lots,
    }));
}

impl LobsterBook {
    /// A limit order; returns whether some of it rests.
    fn limit(
        &mut self,
        id: u64,
        order_side: Side,
        price: Ticks,
        qty: Lots,
        out: &mut Vec<PeerFill>,
    ) -> bool {
        let event = self.book.execute(OrderType::Limit {
            id: id.into(),
            side: side(order_side),
            qty: qty as u64,
            price: price as u64,
        });
        match event {
            OrderEvent::Placed { .. } => true,
            OrderEvent::PartiallyFilled { fills, .. } => {
                collect(&fills, out);
                true
            }
            OrderEvent::Filled { fills, .. } => {
                collect(&fills, out);
                false
            }
            other => panic!("lobster answered a limit order with {other:?}"),
        }
    }

    fn cancel(&mut self, id: u64) {
        self.book.execute(OrderType::Cancel { id: id.into() });
    }
}

impl PeerBook for LobsterBook {
    const NAME: &'static str = "lobster 0.7.0";
    const PROFILE: Profile = Profile::ReEnterCuts;

    fn with_capacity(orders: usize) -> Self {
        LobsterBook {
            book: OrderBook::new(orders + orders / 2, 10, false),
        }
    }

    fn apply(&mut self, op: &PeerOp, out: &mut Vec<PeerFill>) {
        match *op {
            PeerOp::Limit {
                id,
                side,
                price,
                qty,
                ioc,
            } => {
                if self.limit(id, side, price, qty, out) && ioc {
                    self.cancel(id);
                }
            }
            PeerOp::Cancel { id } => self.cancel(id),
            PeerOp::Reduce {
                id,
                side,
                price,
                qty,
            }
            | PeerOp::Replace {
                id,
                side,
                price,
                qty,
            } => {
                self.cancel(id);
                self.limit(id, side, price, qty, out);
            }
        }
    }
}
