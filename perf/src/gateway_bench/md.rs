//! The market-data thread: one feed connection keeping an L2 book, recording every level
//! update with its arrival time (for order-to-market-data), publishing the best bid and ask
//! for the takers, and, when enabled, the reactive taker behind tick-to-trade.
//!
//! The feed is read with one `read` call at a time; every message that call delivered gets
//! the clock reading taken when it returned. After the whole batch is applied, if the best
//! bid or ask price differs from before the batch, the reactive taker sends at once an IOC
//! for `qty` lots at the new best price (buying the ask if the ask moved, else selling the
//! bid), at most one in flight and at most `rate` per second. Tick-to-trade is the time from
//! that `read` returning to the IOC's first `Fill` being read on its order connection.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::{Lots, SelfTradePrevention, Side, TimeInForce};
use gateway::client::{
    decode_server_message, Applied, L2Book, OrderRequest, OrderSender, ServerMessage,
};
use gateway::wire::{self, blank, Subscribe};
use zerocopy::IntoBytes;

use super::conn::{RequestRecord, Requests, RunState};
use super::flows::{RequestKind, SharedMarket};
use crate::latency::LatencyRecorder;

/// One `LevelUpdate` as received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedUpdate {
    /// Global seq of the input that caused it.
    pub seq: u64,
    /// Side of the level.
    pub side: Side,
    /// Price of the level.
    pub price: i64,
    /// Lots now at the level.
    pub lots: i64,
    /// When the `read` that delivered it returned.
    pub recv_ns: u64,
}

/// The reactive taker: an order connection's writer driven by the feed.
pub struct Reactor {
    /// The connection's writer.
    pub sender: OrderSender,
    /// Its request table (shared with its receiver).
    pub requests: Arc<Requests>,
    /// Set while an IOC is in flight; its receiver clears it on `Sequenced`.
    pub in_flight: Arc<AtomicBool>,
    /// Least time between two IOCs, ns.
    pub min_interval_ns: u64,
    /// Lots per IOC.
    pub qty: Lots,
}

/// What the market-data thread saw.
#[derive(Default)]
pub struct FeedResults {
    /// Every level update, in arrival order.
    pub updates: Vec<FeedUpdate>,
    /// Trades received inside the window.
    pub trades: u64,
    /// Level updates received inside the window.
    pub level_updates: u64,
    /// Changes of the best bid or ask price seen inside the window (read batches that
    /// changed either).
    pub top_changes: u64,
    /// The reactive taker: feed read -> its IOC's `write` (time spent deciding).
    pub tick_to_send: LatencyRecorder,
    /// Errors (gap, connection lost); empty on a clean run.
    pub errors: Vec<String>,
    /// The reactive taker's writer, returned to be closed after the run.
    pub sender: Option<OrderSender>,
}

/// A feed connection with its book.
pub struct Feed {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// The market's book.
    pub book: L2Book,
}

impl Feed {
    /// Connects, subscribes to `market` and waits (up to 10 s) for the snapshot.
    pub fn connect(address: SocketAddr, market: u32) -> Result<Feed, String> {
        let stream =
            TcpStream::connect(address).map_err(|e| format!("market data {address}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut subscribe: Subscribe = blank(0);
        subscribe.market = market.into();
        (&stream)
            .write_all(subscribe.as_bytes())
            .map_err(|e| format!("market data {address}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        let mut feed = Feed {
            stream,
            buffer: Vec::with_capacity(1 << 16),
            book: L2Book::new(market),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while feed.book.market_seq.is_none() {
            if std::time::Instant::now() > deadline {
                return Err(format!("market data {address}: no snapshot within 10 s"));
            }
            let mut failure = None;
            let book = &mut feed.book;
            match feed_read(&mut feed.stream, &mut feed.buffer, |message| {
                if let ServerMessage::Reject(r) = message {
                    failure = Some(format!("subscribe refused: reason {}", r.reason.get()));
                }
                book.apply(message)
                    .map(|_| ())
                    .map_err(|gap| format!("{gap:?}"))
            }) {
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(format!("market data {address}: {e}")),
            }
            if let Some(failure) = failure {
                return Err(format!("market data {address}: {failure}"));
            }
        }
        Ok(feed)
    }

    /// Runs until the run stops: records updates, publishes the top, drives the reactor.
    pub fn run(
        mut self,
        run: Arc<RunState>,
        market: Arc<SharedMarket>,
        mut reactor: Option<Reactor>,
    ) -> FeedResults {
        let mut results = FeedResults::default();
        let clock = run.clock;
        let window = run.window;
        let mut last_react_ns = 0u64;
        let mut last_write_ns = clock.now_ns();
        let mut next_oid = 1u64;
        self.publish(&market);
        while !run.stop.load(Ordering::Acquire) {
            let (bid_before, ask_before) = top_prices(&self.book);
            let mut recv_ns = 0;
            let book = &mut self.book;
            let updates = &mut results.updates;
            let (mut trades, mut levels) = (0, 0);
            let outcome = feed_read(&mut self.stream, &mut self.buffer, |message| {
                if recv_ns == 0 {
                    recv_ns = clock.now_ns();
                }
                match message {
                    ServerMessage::LevelUpdate(m) => {
                        levels += 1;
                        updates.push(FeedUpdate {
                            seq: m.seq.get(),
                            side: if m.side == 0 { Side::Buy } else { Side::Sell },
                            price: m.price.get(),
                            lots: m.lots.get(),
                            recv_ns,
                        });
                    }
                    ServerMessage::Trade(_) => trades += 1,
                    ServerMessage::Logout(m) => {
                        return Err(format!("logged out: reason {}", m.reason.get()))
                    }
                    _ => {}
                }
                match book.apply(message) {
                    Ok(Applied::Stale) => Err("a stale message on a live feed".to_string()),
                    Ok(_) => Ok(()),
                    Err(gap) => Err(format!("gap in the feed: {gap:?}")),
                }
            });
            match outcome {
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => {
                    results.errors.push(format!("market data: {e}"));
                    break;
                }
            }
            if window.contains(recv_ns) {
                results.trades += trades;
                results.level_updates += levels;
            }
            self.publish(&market);
            let (bid, ask) = top_prices(&self.book);
            let changed = recv_ns != 0 && (bid != bid_before || ask != ask_before);
            if changed && window.contains(recv_ns) {
                results.top_changes += 1;
            }
            let Some(reactor) = reactor.as_mut() else {
                continue;
            };
            let now = clock.now_ns();
            if changed
                && recv_ns < window.to_ns
                && now.saturating_sub(last_react_ns) >= reactor.min_interval_ns
                && !reactor.in_flight.load(Ordering::Acquire)
            {
                let target = if ask != ask_before && ask.is_some() {
                    ask.map(|(price, lots)| (Side::Buy, price, lots))
                } else {
                    bid.map(|(price, lots)| (Side::Sell, price, lots))
                };
                if let Some((side, price, lots)) = target {
                    let order = OrderRequest {
                        market: market.market,
                        oid: next_oid,
                        side,
                        price: Some(price),
                        qty: reactor.qty.min(lots).max(1),
                        tif: TimeInForce::Ioc,
                        stp: SelfTradePrevention::CancelTaker,
                    };
                    next_oid += 1;
                    let sent_ns = clock.now_ns();
                    let recorded = reactor.requests.record(
                        reactor.sender.next_seq(),
                        RequestRecord {
                            due_ns: recv_ns,
                            sent_ns,
                            kind: RequestKind::ReactIoc,
                            side,
                            price,
                        },
                    );
                    if recorded {
                        reactor.in_flight.store(true, Ordering::Release);
                        run.sent.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = reactor.sender.new_order(&order) {
                            results.errors.push(format!("reactive taker: {e}"));
                            break;
                        }
                        last_react_ns = sent_ns;
                        last_write_ns = sent_ns;
                        if window.contains(recv_ns) {
                            results.tick_to_send.record_ns(sent_ns - recv_ns);
                        }
                    }
                }
            }
            // The order session wants bytes within 3 heartbeat intervals (60 s asked).
            if now.saturating_sub(last_write_ns) > 20_000_000_000 {
                let _ = reactor.sender.heartbeat(now);
                last_write_ns = now;
            }
        }
        results.sender = reactor.map(|r| r.sender);
        results
    }

    fn publish(&self, market: &SharedMarket) {
        let (bid, ask) = top_prices(&self.book);
        market
            .best_bid
            .store(bid.map_or(0, |(p, _)| p), Ordering::Relaxed);
        market
            .best_ask
            .store(ask.map_or(0, |(p, _)| p), Ordering::Relaxed);
    }
}

/// Best bid and best ask, (price, lots) each.
type Top = (Option<(i64, i64)>, Option<(i64, i64)>);

fn top_prices(book: &L2Book) -> Top {
    book.top()
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One `read` from `stream` into `buffer`, then every whole frame in the buffer handed to
/// `each` in order (frames cut by the read stay for the next call). Returns the frames
/// handled; an error from `each`, a bad frame or a closed stream is an `io::Error`.
pub fn feed_read(
    stream: &mut impl Read,
    buffer: &mut Vec<u8>,
    mut each: impl FnMut(&ServerMessage) -> Result<(), String>,
) -> io::Result<usize> {
    let mut chunk = [0u8; 64 * 1024];
    let n = stream.read(&mut chunk)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the node closed the connection",
        ));
    }
    buffer.extend_from_slice(&chunk[..n]);
    let mut start = 0;
    let mut handled = 0;
    loop {
        match wire::next_frame(&buffer[start..]) {
            Ok(Some(length)) => {
                let message = decode_server_message(&buffer[start..start + length])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                start += length;
                handled += 1;
                each(&message).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            Ok(None) => break,
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    }
    buffer.drain(..start);
    Ok(handled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway::wire::{LevelUpdate, Message};

    #[test]
    fn frames_cut_by_a_read_wait_for_the_next() {
        let mut update: LevelUpdate = blank(0);
        update.market = 0.into();
        update.price = 42.into();
        update.lots = 3.into();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(update.as_bytes());
        bytes.extend_from_slice(update.as_bytes());
        let cut = bytes.len() - 10;
        let mut first = &bytes[..cut];
        let mut buffer = Vec::new();
        let mut seen = 0;
        let handled = feed_read(&mut first, &mut buffer, |m| {
            assert!(matches!(m, ServerMessage::LevelUpdate(u) if u.price.get() == 42));
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((handled, seen), (1, 1));
        assert_eq!(buffer.len(), cut - LevelUpdate::BYTES);
        let mut rest = &bytes[cut..];
        let handled = feed_read(&mut rest, &mut buffer, |_| Ok(())).unwrap();
        assert_eq!(handled, 1);
        assert!(buffer.is_empty());
        let mut empty: &[u8] = &[];
        assert!(feed_read(&mut empty, &mut buffer, |_| Ok(())).is_err());
    }
}
