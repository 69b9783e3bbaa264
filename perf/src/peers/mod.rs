//! Peer order books from crates.io, driven with the engine benchmark's command stream.
//!
//! A peer has no accounts, balances or fees: only a book. The engine's commands are first
//! translated ([`translate`]) into book operations ([`PeerOp`]) by running the engine itself
//! over the stream and following its events, so every operation carries what a plain book
//! needs (the side and size of the order a modify names) and the engine's fills are known
//! per operation. A peer then applies the operations through its own API and reports its
//! fills ([`PeerFill`]), which must equal the engine's where their semantics match:
//!
//! - [`lobster`](lobster_book): `lobster` 0.7.0 (limit, market and cancel; no modify, no
//!   IOC limit): IOC = limit + cancel of what rested; every modify = cancel + limit, so a
//!   size cut loses time priority there, where the engine keeps it. It is compared on a
//!   stream whose size cuts are re-entries in the engine too ([`Profile::ReEnterCuts`]);
//! - [`orderbook-rs`](orderbook_rs_book): `orderbook-rs` 0.15.3 (GTC/IOC/FOK limits, cancel,
//!   quantity and price updates with the engine's priority rules: a cut keeps priority, a
//!   raise or a move re-enters at the back and may match).
//!
//! Neither has self-trade prevention, so the stream comes from
//! [`crate::workload::WorkloadConfig::one_account_per_side`], where self-trades cannot occur.

pub mod bench;
pub mod lobster_book;
pub mod orderbook_rs_book;

use std::collections::HashMap;

use engine::{Command, Engine, Event, Lots, Side, Ticks, TimeInForce};

use crate::workload::Workload;

/// One operation on a plain order book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerOp {
    /// A limit order: matches, then rests the remainder (GTC) or drops it (IOC).
    Limit {
        /// Its id (the engine's oid).
        id: u64,
        /// Buy or sell.
        side: Side,
        /// Limit price in ticks.
        price: Ticks,
        /// Size in lots.
        qty: Lots,
        /// Immediate or cancel.
        ioc: bool,
    },
    /// Removes a resting order.
    Cancel {
        /// The order.
        id: u64,
    },
    /// Cuts a resting order's size in place, keeping its time priority.
    Reduce {
        /// The order.
        id: u64,
        /// Its side.
        side: Side,
        /// Its price, in ticks (unchanged).
        price: Ticks,
        /// Its new remaining size, in lots (at most the current one).
        qty: Lots,
    },
    /// Re-enters a resting order at a new price and/or size: it loses time priority and
    /// matches like a new GTC order (the engine's modify, otherwise).
    Replace {
        /// The order.
        id: u64,
        /// Its side.
        side: Side,
        /// The new limit price, in ticks.
        price: Ticks,
        /// The new size, in lots.
        qty: Lots,
    },
}

/// One trade, as both the engine and a peer report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerFill {
    /// The incoming order.
    pub taker: u64,
    /// The resting order.
    pub maker: u64,
    /// Trade price, in ticks (the maker's).
    pub price: Ticks,
    /// Trade size, in lots.
    pub qty: Lots,
}

/// A peer order book.
pub trait PeerBook {
    /// The crate and version, for reports.
    const NAME: &'static str;
    /// How the engine's stream must be translated for its fills to match.
    const PROFILE: Profile;
    /// An empty book sized for about `orders` resting orders.
    fn with_capacity(orders: usize) -> Self;
    /// Applies `op`, appending the trades it caused to `fills`.
    fn apply(&mut self, op: &PeerOp, fills: &mut Vec<PeerFill>);
}

/// How modifies that cut an order's size are translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// As the engine does them: [`PeerOp::Reduce`], priority kept.
    KeepPriorityOnCut,
    /// As a re-entry ([`PeerOp::Replace`]), for books that cannot cut in place; the engine
    /// reference then does the same (`Cancel` + `Place`), so fills still compare.
    ReEnterCuts,
}

/// A workload as book operations, with the engine's fills per operation.
#[derive(Clone, Debug)]
pub struct PeerStream {
    /// How it was translated.
    pub profile: Profile,
    /// Builds the book (passive limits).
    pub prefill: Vec<PeerOp>,
    /// The measured operations.
    pub ops: Vec<PeerOp>,
    /// The engine's fills, per measured operation: `fills[ends[i - 1]..ends[i]]`.
    pub fills: Vec<PeerFill>,
    /// End of each measured operation's fills.
    pub fill_ends: Vec<usize>,
    /// Commands the engine refused during the translation (an order gone when it was
    /// named, which re-entered cuts can cause); skipped, not translated.
    pub skipped: usize,
}

impl PeerStream {
    /// The engine's fills of measured operation `i`.
    pub fn fills_of(&self, i: usize) -> &[PeerFill] {
        let start = if i == 0 { 0 } else { self.fill_ends[i - 1] };
        &self.fills[start..self.fill_ends[i]]
    }
}

/// A resting order, as the translation follows it.
#[derive(Clone, Copy, Debug)]
struct Open {
    account: u64,
    side: Side,
    price: Ticks,
    remaining: Lots,
}

/// Runs the engine over `workload` (setup, prefill, stream) and translates every order
/// command into a [`PeerOp`] under `profile`.
///
/// # Panics
/// On a command a plain book has no equivalent for (market, FOK or post-only orders,
/// cancel-all, anything that is not an order command past the setup).
pub fn translate(workload: &Workload, profile: Profile) -> PeerStream {
    let mut translator = Translator {
        engine: Engine::new(workload.config.engine_config()),
        open: HashMap::new(),
        out: Vec::with_capacity(256),
        profile,
    };
    for command in &workload.setup {
        translator.engine.step(command, &mut translator.out);
    }
    let mut stream = PeerStream {
        profile,
        prefill: Vec::with_capacity(workload.prefill.len()),
        ops: Vec::with_capacity(workload.stream.len()),
        fills: Vec::new(),
        fill_ends: Vec::with_capacity(workload.stream.len()),
        skipped: 0,
    };
    let mut fills = Vec::new();
    for command in &workload.prefill {
        translator.command(command, &mut stream.prefill, &mut fills);
    }
    for command in &workload.stream {
        if !translator.command(command, &mut stream.ops, &mut stream.fills) {
            stream.skipped += 1;
            continue;
        }
        stream.fill_ends.push(stream.fills.len());
    }
    stream
}

struct Translator {
    engine: Engine,
    open: HashMap<u64, Open>,
    out: Vec<Event>,
    profile: Profile,
}

impl Translator {
    /// Translates and steps one command; false if the order it names is gone (skipped).
    fn command(
        &mut self,
        command: &Command,
        ops: &mut Vec<PeerOp>,
        fills: &mut Vec<PeerFill>,
    ) -> bool {
        match *command {
            Command::Place(order) => {
                let ioc = match order.tif {
                    TimeInForce::Gtc => false,
                    TimeInForce::Ioc => true,
                    other => panic!("no peer equivalent for {other:?}"),
                };
                let price = order.price.expect("peers take limit orders only");
                let (id, side, qty) = (order.oid, order.side, order.qty);
                ops.push(PeerOp::Limit {
                    id,
                    side,
                    price,
                    qty,
                    ioc,
                });
                self.step(command, fills);
            }
            Command::Cancel { oid, .. } => {
                if !self.open.contains_key(&oid) {
                    return false;
                }
                ops.push(PeerOp::Cancel { id: oid });
                self.step(command, fills);
            }
            Command::Modify {
                oid, price, qty, ..
            } => return self.modify(oid, price, qty, ops, fills),
            ref other => panic!("no peer equivalent for {other:?}"),
        }
        true
    }

    /// A modify: a cut in place (or a re-entry under [`Profile::ReEnterCuts`]), else a
    /// re-entry, which may match.
    fn modify(
        &mut self,
        id: u64,
        price: Ticks,
        qty: Lots,
        ops: &mut Vec<PeerOp>,
        fills: &mut Vec<PeerFill>,
    ) -> bool {
        let Some(order) = self.open.get(&id).copied() else {
            return false;
        };
        let cut = price == order.price && qty <= order.remaining;
        let (account, market, side) = (order.account, crate::workload::MARKET, order.side);
        if cut && self.profile == Profile::KeepPriorityOnCut {
            ops.push(PeerOp::Reduce {
                id,
                side,
                price,
                qty,
            });
            self.step(
                &Command::Modify {
                    account,
                    market,
                    oid: id,
                    price,
                    qty,
                },
                fills,
            );
        } else if cut {
            ops.push(PeerOp::Replace {
                id,
                side,
                price,
                qty,
            });
            self.step(
                &Command::Cancel {
                    account,
                    market,
                    oid: id,
                },
                fills,
            );
            self.step(&gtc(account, id, side, price, qty), fills);
        } else {
            ops.push(PeerOp::Replace {
                id,
                side,
                price,
                qty,
            });
            self.step(
                &Command::Modify {
                    account,
                    market,
                    oid: id,
                    price,
                    qty,
                },
                fills,
            );
        }
        true
    }

    /// Steps the engine, appends its fills, follows its events.
    fn step(&mut self, command: &Command, fills: &mut Vec<PeerFill>) {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        self.engine.step(command, &mut out);
        for event in &out {
            self.follow(command, event, fills);
        }
        self.out = out;
    }

    fn follow(&mut self, command: &Command, event: &Event, fills: &mut Vec<PeerFill>) {
        match *event {
            Event::Accepted { account, oid, .. } => {
                if let Command::Place(order) = command {
                    if order.tif == TimeInForce::Gtc {
                        let price = order.price.expect("limit");
                        let (side, remaining) = (order.side, order.qty);
                        self.open.insert(
                            oid,
                            Open {
                                account,
                                side,
                                price,
                                remaining,
                            },
                        );
                    }
                }
            }
            Event::Fill {
                taker_oid,
                maker_oid,
                price,
                qty,
                taker_left,
                maker_left,
                ..
            } => {
                fills.push(PeerFill {
                    taker: taker_oid,
                    maker: maker_oid,
                    price,
                    qty,
                });
                self.set_remaining(taker_oid, taker_left);
                self.set_remaining(maker_oid, maker_left);
            }
            Event::Canceled { oid, .. } => {
                self.open.remove(&oid);
            }
            Event::Modified {
                oid, price, qty, ..
            } => {
                if let Some(order) = self.open.get_mut(&oid) {
                    (order.price, order.remaining) = (price, qty);
                }
            }
            Event::Rejected { reason, .. } => panic!("{command:?} refused: {}", reason.as_str()),
            _ => {}
        }
    }

    fn set_remaining(&mut self, oid: u64, lots: Lots) {
        if lots == 0 {
            self.open.remove(&oid);
        } else if let Some(order) = self.open.get_mut(&oid) {
            order.remaining = lots;
        }
    }
}

fn gtc(account: u64, oid: u64, side: Side, price: Ticks, qty: Lots) -> Command {
    Command::Place(engine::NewOrder {
        account,
        market: crate::workload::MARKET,
        oid,
        side,
        price: Some(price),
        qty,
        tif: TimeInForce::Gtc,
        stp: engine::SelfTradePrevention::CancelMaker,
        reduce_only: false,
    })
}

/// Applies `stream` to a fresh `B` and compares its fills with the engine's, operation by
/// operation; returns the index and both fill lists of the first difference.
pub fn first_fill_difference<B: PeerBook>(
    stream: &PeerStream,
    capacity: usize,
) -> Option<(usize, Vec<PeerFill>, Vec<PeerFill>)> {
    let mut book = B::with_capacity(capacity);
    let mut fills = Vec::new();
    for op in &stream.prefill {
        book.apply(op, &mut fills);
    }
    assert!(fills.is_empty(), "{}: the prefill traded", B::NAME);
    for (i, op) in stream.ops.iter().enumerate() {
        fills.clear();
        book.apply(op, &mut fills);
        if fills != stream.fills_of(i) {
            return Some((i, stream.fills_of(i).to_vec(), fills));
        }
    }
    None
}
