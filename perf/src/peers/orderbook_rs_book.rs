//! The `orderbook-rs` crate (0.15.3) as a [`PeerBook`]: a concurrent book (a lock-free skip
//! list of price levels from `pricelevel` 0.10, `DashMap` indexes), used here from one
//! thread. Limits are GTC or IOC as the engine's; a size cut is `UpdateQuantity` (keeps
//! priority, as the engine's), a re-entry `UpdatePriceAndQuantity` or, at the same price,
//! `UpdateQuantity` (a raise loses priority there too). Trades are read from its trade
//! listener, which also sees the trades of a modify that crosses. It stamps orders with its
//! default wall clock (`MonotonicClock`), as a user of its `OrderBook::new` would.

use std::sync::{Arc, Mutex};

use engine::{Lots, Side, Ticks};
use orderbook_rs::{OrderBook, TradeListener, TradeResult};
use pricelevel::{Id, OrderUpdate, Price, Quantity, TimeInForce};

use super::{PeerBook, PeerFill, PeerOp, Profile};

/// `orderbook_rs::OrderBook<()>` behind the [`PeerBook`] interface.
pub struct OrderbookRsBook {
    book: OrderBook<()>,
    trades: Arc<Mutex<Vec<PeerFill>>>,
}

fn side(side: Side) -> pricelevel::Side {
    match side {
        Side::Buy => pricelevel::Side::Buy,
        Side::Sell => pricelevel::Side::Sell,
    }
}

fn id_of(id: Id) -> u64 {
    match id {
        Id::Sequential(n) => n,
        other => panic!("orderbook-rs reported a non-sequential id {other:?}"),
    }
}

/// Appends a trade result's trades to `trades`.
fn record(trades: &Mutex<Vec<PeerFill>>, result: &TradeResult) {
    let mut trades = trades
        .lock()
        .expect("trade listener never panics holding the lock");
    trades.extend(
        result
            .match_result
            .trades()
            .as_vec()
            .iter()
            .map(|trade| PeerFill {
                taker: id_of(trade.taker_order_id()),
                maker: id_of(trade.maker_order_id()),
                price: trade.price().as_u128() as Ticks,
                qty: trade.quantity().as_u64() as Lots,
            }),
    );
}

impl OrderbookRsBook {
    fn update(&self, update: OrderUpdate) {
        // A refusal (e.g. the order is gone) leaves the book unchanged; the fill comparison
        // catches any divergence it causes.
        let _ = self.book.update_order(update);
    }
}

impl PeerBook for OrderbookRsBook {
    const NAME: &'static str = "orderbook-rs 0.15.3";
    const PROFILE: Profile = Profile::KeepPriorityOnCut;

    fn with_capacity(_orders: usize) -> Self {
        let trades = Arc::new(Mutex::new(Vec::with_capacity(64)));
        let sink = Arc::clone(&trades);
        let listener: TradeListener = Arc::new(move |result: &TradeResult| record(&sink, result));
        OrderbookRsBook {
            book: OrderBook::with_trade_listener("NEX", listener),
            trades,
        }
    }

    fn apply(&mut self, op: &PeerOp, out: &mut Vec<PeerFill>) {
        match *op {
            PeerOp::Limit {
                id,
                side: s,
                price,
                qty,
                ioc,
            } => {
                let tif = if ioc {
                    TimeInForce::Ioc
                } else {
                    TimeInForce::Gtc
                };
                // An IOC with a remainder answers with an error after its trades, which the
                // listener has seen: the error is the expected outcome, not a failure.
                let _ = self.book.add_limit_order(
                    Id::sequential(id),
                    price as u128,
                    qty as u64,
                    side(s),
                    tif,
                    None,
                );
            }
            PeerOp::Cancel { id } => {
                let _ = self.book.cancel_order(Id::sequential(id));
            }
            PeerOp::Reduce { id, qty, .. } => self.update(OrderUpdate::UpdateQuantity {
                order_id: Id::sequential(id),
                new_quantity: Quantity::new(qty as u64),
            }),
            PeerOp::Replace { id, price, qty, .. } => {
                self.update(OrderUpdate::UpdatePriceAndQuantity {
                    order_id: Id::sequential(id),
                    new_price: Price::new(price as u128),
                    new_quantity: Quantity::new(qty as u64),
                })
            }
        }
        out.append(&mut self.trades.lock().expect("no panic holds the lock"));
    }
}
