//! The market-data port as a state machine: an L2 book per market kept from the pipeline's
//! level changes, trades from fills, perp mark prices and funding rates, per-market sequence
//! numbers, snapshots, and replay of recent messages for gap recovery.
//!
//! Like [`crate::order_entry`], it owns its connections' buffers and never touches a socket.

use std::collections::{BTreeMap, VecDeque};

use engine::{ByteCode, Engine, Event, LevelChange, Lots, MarketId, PriceLadder, Side, Ticks};
use sequencer::Output;
use zerocopy::IntoBytes;

use crate::client::Level;
use crate::connections::{self, Buffers, ConnId, HasBuffers, Slots};
use crate::wire::{self, *};

/// Limits of the market-data port.
#[derive(Debug, Clone)]
pub struct MarketDataConfig {
    /// Update and trade messages each market keeps for [`Replay`].
    pub replay_messages: usize,
    /// A connection with more unsent bytes than this is dropped (slow consumer).
    pub max_pending_bytes: usize,
    /// Most unsent bytes over all the port's connections: past it, the connection with the
    /// most is dropped (slow consumer), until the port is back under it.
    pub max_unsent_total_bytes: usize,
    /// Send a heartbeat after this long without sending anything, ns.
    pub heartbeat_ns: u64,
    /// Identifies this run of the feed (market sequence numbers restart with it).
    pub feed_epoch: u64,
}

impl Default for MarketDataConfig {
    fn default() -> Self {
        MarketDataConfig {
            replay_messages: 65_536,
            max_pending_bytes: 16 << 20,
            max_unsent_total_bytes: DEFAULT_MAX_UNSENT_TOTAL_BYTES,
            heartbeat_ns: 1_000_000_000,
            feed_epoch: 0,
        }
    }
}

/// The default limit on unsent bytes over all of a port's connections (256 MiB; each
/// connection may hold up to its own `max_pending_bytes`, 16 MiB by default).
pub const DEFAULT_MAX_UNSENT_TOTAL_BYTES: usize = 256 << 20;

/// The largest message kept for replay.
const MAX_RECENT_BYTES: usize = 64;
const _: () = assert!(
    LevelUpdate::BYTES <= MAX_RECENT_BYTES
        && Trade::BYTES <= MAX_RECENT_BYTES
        && MarkPrice::BYTES <= MAX_RECENT_BYTES
        && FundingRate::BYTES <= MAX_RECENT_BYTES
);

/// One stored feed message: its market sequence number and bytes.
#[derive(Clone, Copy)]
struct Recent {
    market_seq: u64,
    length: u8,
    bytes: [u8; MAX_RECENT_BYTES],
}

impl Recent {
    fn new(market_seq: u64, bytes: &[u8]) -> Recent {
        let mut recent = Recent {
            market_seq,
            length: bytes.len() as u8,
            bytes: [0; MAX_RECENT_BYTES],
        };
        recent.bytes[..bytes.len()].copy_from_slice(bytes);
        recent
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.length as usize]
    }
}

/// A market's public state.
struct Book {
    bids: BTreeMap<Ticks, Lots>,
    asks: BTreeMap<Ticks, Lots>,
    /// Sequence number of the last update or trade.
    market_seq: u64,
    recent: VecDeque<Recent>,
    subscribers: Vec<ConnId>,
    /// The latest [`MarkPrice`] and [`FundingRate`] (perp markets), sent again after each
    /// snapshot so that a new subscriber knows them.
    last_mark: Option<Recent>,
    last_funding: Option<Recent>,
}

struct Connection {
    buffers: Buffers,
    last_sent_ns: u64,
}

impl HasBuffers for Connection {
    fn buffers(&self) -> &Buffers {
        &self.buffers
    }
    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}

/// The market-data state machine.
pub struct MarketData {
    config: MarketDataConfig,
    books: BTreeMap<MarketId, Book>,
    connections: Slots<Connection>,
    dirty: Vec<ConnId>,
    fill_seq: u64,
    fill_index: u32,
}

impl MarketData {
    /// A feed for `markets`, each starting from its current levels `(side, price, lots)`.
    pub fn new(
        config: MarketDataConfig,
        markets: impl IntoIterator<Item = (MarketId, Vec<(Side, Ticks, Lots)>)>,
    ) -> MarketData {
        let books = markets
            .into_iter()
            .map(|(market, levels)| {
                let mut book = Book {
                    bids: BTreeMap::new(),
                    asks: BTreeMap::new(),
                    market_seq: 0,
                    recent: VecDeque::new(),
                    subscribers: Vec::new(),
                    last_mark: None,
                    last_funding: None,
                };
                for (side, price, lots) in levels {
                    match side {
                        Side::Buy => book.bids.insert(price, lots),
                        Side::Sell => book.asks.insert(price, lots),
                    };
                }
                (market, book)
            })
            .collect();
        MarketData {
            config,
            books,
            connections: Slots::default(),
            dirty: Vec::new(),
            fill_seq: 0,
            fill_index: 0,
        }
    }

    /// A feed for every market of `engine`, starting from its current state: each book's
    /// levels and, for each perp market with an oracle price, its opening [`MarkPrice`]
    /// ([`MarketData::open_marks`]).
    pub fn from_engine<L: PriceLadder>(config: MarketDataConfig, engine: &Engine<L>) -> MarketData {
        let markets: Vec<MarketId> = engine.markets().collect();
        let books = markets.iter().map(|&market| {
            let mut levels = Vec::new();
            for side in [Side::Buy, Side::Sell] {
                let mut depth = Vec::new();
                engine.depth(market, side, usize::MAX, &mut depth);
                levels.extend(depth.into_iter().map(|(price, lots)| (side, price, lots)));
            }
            (market, levels)
        });
        let mut feed = MarketData::new(config, books);
        feed.open_marks(engine);
        feed
    }

    /// Starts the feed of each perp market of `engine` with its current oracle and mark price
    /// ([`MarketData::open_mark`]). Call it once, before any connection.
    pub fn open_marks<L: PriceLadder>(&mut self, engine: &Engine<L>) {
        for market in engine.markets() {
            if let Some(perp) = engine.perp_market(market) {
                self.open_mark(market, perp.oracle, perp.mark);
            }
        }
    }

    /// Starts a perp market's feed with the oracle and mark price it has when the feed starts
    /// (the genesis opening price, or the state recovered from the log): a [`MarkPrice`] with
    /// the next market seq (1 on a fresh feed), global `seq` 0 (no input of this run) and
    /// `premium_ppb` 0 (no premium sample), kept for replay and sent after every snapshot
    /// like any later one. Without it a subscriber could not learn the mark until the next
    /// oracle update. Nothing is published for an unknown market or a price of 0 (none yet).
    pub fn open_mark(&mut self, market: MarketId, oracle: Ticks, mark: Ticks) {
        if oracle == 0 || mark == 0 {
            return;
        }
        let Some(book) = self.books.get_mut(&market) else {
            return;
        };
        book.market_seq += 1;
        let mut message: MarkPrice = blank(0);
        message.market = market.into();
        message.market_seq = book.market_seq.into();
        message.oracle = oracle.into();
        message.mark = mark.into();
        book.last_mark = Some(Recent::new(book.market_seq, message.as_bytes()));
        // No subscriber can exist yet at start; `publish` also keeps it for replay.
        self.publish(market, message.as_bytes(), 0);
    }

    /// A new connection (nothing is sent until it subscribes).
    pub fn connect(&mut self, now_ns: u64) -> ConnId {
        self.connections.insert(Connection {
            buffers: Buffers::default(),
            last_sent_ns: now_ns,
        })
    }

    /// The connection is gone.
    pub fn disconnected(&mut self, id: ConnId) {
        if self.connections.remove(id).is_some() {
            for book in self.books.values_mut() {
                book.subscribers.retain(|&s| s != id);
            }
        }
    }

    /// Bytes arrived: every complete frame is handled.
    pub fn receive(&mut self, id: ConnId, data: &[u8], now_ns: u64) {
        let Some(connection) = self.connections.get_mut(id) else {
            return;
        };
        if connection.buffers.closing {
            return;
        }
        connection.buffers.read.extend_from_slice(data);
        let read = std::mem::take(&mut connection.buffers.read);
        let mut start = 0;
        loop {
            match wire::next_frame(&read[start..]) {
                Ok(Some(length)) => {
                    let frame = &read[start..start + length];
                    start += length;
                    self.handle_frame(id, frame, now_ns);
                    if self.is_closing(id) {
                        return;
                    }
                }
                Ok(None) => break,
                Err(FrameError::BadFrameLength(_)) => {
                    self.close(id, LogoutReason::Malformed, now_ns);
                    return;
                }
            }
        }
        if let Some(connection) = self.connections.get_mut(id) {
            connection.buffers.read = read[start..].to_vec();
        }
    }

    /// Heartbeats to idle connections.
    pub fn tick(&mut self, now_ns: u64) {
        for id in self.connections.ids() {
            let idle = self.connections.get(id).is_some_and(|c| {
                !c.buffers.closing
                    && now_ns.saturating_sub(c.last_sent_ns) >= self.config.heartbeat_ns
            });
            if idle {
                let mut heartbeat: ServerHeartbeat = blank(0);
                heartbeat.timestamp_ns = now_ns.into();
                self.send(id, heartbeat.as_bytes(), now_ns);
            }
        }
    }

    /// Level changes become [`LevelUpdate`]s, fills [`Trade`]s, oracle updates
    /// [`MarkPrice`]s and funding settlements [`FundingRate`]s.
    pub fn on_output(&mut self, output: &Output, now_ns: u64) {
        match *output {
            Output::Level { seq, change } => self.level(seq, change, now_ns),
            Output::Event {
                seq,
                event:
                    Event::Fill {
                        market,
                        taker_side,
                        price,
                        qty,
                        ..
                    },
                ..
            } => {
                if self.fill_seq != seq {
                    self.fill_seq = seq;
                    self.fill_index = 0;
                }
                let match_index = self.fill_index;
                self.fill_index += 1;
                let Some(book) = self.books.get_mut(&market) else {
                    return;
                };
                book.market_seq += 1;
                let mut trade: Trade = blank(0);
                trade.market = market.into();
                trade.taker_side = taker_side.code();
                trade.market_seq = book.market_seq.into();
                trade.seq = seq.into();
                trade.match_index = match_index.into();
                trade.price = price.into();
                trade.qty = qty.into();
                self.publish(market, trade.as_bytes(), now_ns);
            }
            Output::Event {
                seq,
                event:
                    Event::OraclePrice {
                        market,
                        oracle,
                        mark,
                        premium_ppb,
                    },
                ..
            } => {
                let Some(book) = self.books.get_mut(&market) else {
                    return;
                };
                book.market_seq += 1;
                let mut message: MarkPrice = blank(0);
                message.market = market.into();
                message.market_seq = book.market_seq.into();
                message.seq = seq.into();
                message.oracle = oracle.into();
                message.mark = mark.into();
                message.premium_ppb = premium_ppb.into();
                book.last_mark = Some(Recent::new(book.market_seq, message.as_bytes()));
                self.publish(market, message.as_bytes(), now_ns);
            }
            Output::Event {
                seq,
                event:
                    Event::Funding {
                        market,
                        rate_ppb,
                        index,
                    },
                ..
            } => {
                let Some(book) = self.books.get_mut(&market) else {
                    return;
                };
                book.market_seq += 1;
                let mut message: FundingRate = blank(0);
                message.market = market.into();
                message.market_seq = book.market_seq.into();
                message.seq = seq.into();
                message.rate_ppb = rate_ppb.into();
                message.index = index.into();
                book.last_funding = Some(Recent::new(book.market_seq, message.as_bytes()));
                self.publish(market, message.as_bytes(), now_ns);
            }
            _ => {}
        }
    }

    fn level(&mut self, seq: u64, change: LevelChange, now_ns: u64) {
        let Some(book) = self.books.get_mut(&change.market) else {
            return;
        };
        let side = match change.side {
            Side::Buy => &mut book.bids,
            Side::Sell => &mut book.asks,
        };
        if change.lots == 0 {
            side.remove(&change.price);
        } else {
            side.insert(change.price, change.lots);
        }
        book.market_seq += 1;
        let mut update: LevelUpdate = blank(0);
        update.market = change.market.into();
        update.side = change.side.code();
        update.market_seq = book.market_seq.into();
        update.seq = seq.into();
        update.price = change.price.into();
        update.lots = change.lots.into();
        self.publish(change.market, update.as_bytes(), now_ns);
    }

    /// Stores a message for replay and sends it to the market's subscribers.
    fn publish(&mut self, market: MarketId, bytes: &[u8], now_ns: u64) {
        let book = self.books.get_mut(&market).expect("known market");
        if self.config.replay_messages > 0 {
            if book.recent.len() >= self.config.replay_messages {
                book.recent.pop_front();
            }
            book.recent.push_back(Recent::new(book.market_seq, bytes));
        }
        let subscribers = std::mem::take(&mut book.subscribers);
        for &id in &subscribers {
            self.send(id, bytes, now_ns);
        }
        let book = self.books.get_mut(&market).expect("known market");
        book.subscribers = subscribers;
    }

    fn handle_frame(&mut self, id: ConnId, frame: &[u8], now_ns: u64) {
        let header = match wire::check_frame(frame) {
            Ok(header) => *header,
            Err(code) => return self.reject(id, frame, code, now_ns),
        };
        match header.kind {
            Heartbeat::KIND => {}
            Logout::KIND => self.close(id, LogoutReason::Requested, now_ns),
            Subscribe::KIND => {
                let market = view::<Subscribe>(frame).expect("checked").market.get();
                let markets: Vec<MarketId> = if market == ALL_MARKETS {
                    self.books.keys().copied().collect()
                } else if self.books.contains_key(&market) {
                    vec![market]
                } else {
                    return self.reject(id, frame, RejectCode::UnknownMarket, now_ns);
                };
                for market in markets {
                    let book = self.books.get_mut(&market).expect("known");
                    if !book.subscribers.contains(&id) {
                        book.subscribers.push(id);
                    }
                    self.snapshot(id, market, now_ns);
                }
            }
            SnapshotRequest::KIND => {
                let market = view::<SnapshotRequest>(frame)
                    .expect("checked")
                    .market
                    .get();
                if self.subscribed(id, market, frame, now_ns) {
                    self.snapshot(id, market, now_ns);
                }
            }
            Replay::KIND => {
                // Also subscribes: a client back from a lost connection asks for what it
                // missed and goes on live, without a snapshot if the window still holds it.
                let message = *view::<Replay>(frame).expect("checked");
                let market = message.market.get();
                let Some(book) = self.books.get_mut(&market) else {
                    return self.reject(id, frame, RejectCode::UnknownMarket, now_ns);
                };
                if !book.subscribers.contains(&id) {
                    book.subscribers.push(id);
                }
                let from = message.from_seq.get();
                let epoch = message.feed_epoch_low.get();
                let restarted = epoch != 0 && epoch != self.config.feed_epoch as u32;
                let book = &self.books[&market];
                let oldest = book
                    .recent
                    .front()
                    .map_or(book.market_seq + 1, |r| r.market_seq);
                if restarted || from < oldest || from > book.market_seq + 1 {
                    // Another feed, too old (or nonsense): a snapshot recovers every gap.
                    return self.snapshot(id, market, now_ns);
                }
                let resend: Vec<Recent> = book
                    .recent
                    .iter()
                    .filter(|r| r.market_seq >= from)
                    .copied()
                    .collect();
                for recent in resend {
                    self.send(id, recent.bytes(), now_ns);
                }
            }
            _ => self.reject(id, frame, RejectCode::UnknownKind, now_ns),
        }
    }

    /// True if `id` subscribed to `market`; otherwise answers with a reject.
    fn subscribed(&mut self, id: ConnId, market: MarketId, frame: &[u8], now_ns: u64) -> bool {
        match self.books.get(&market) {
            None => {
                self.reject(id, frame, RejectCode::UnknownMarket, now_ns);
                false
            }
            Some(book) if !book.subscribers.contains(&id) => {
                self.reject(id, frame, RejectCode::NotSubscribed, now_ns);
                false
            }
            Some(_) => true,
        }
    }

    fn snapshot(&mut self, id: ConnId, market: MarketId, now_ns: u64) {
        let book = &self.books[&market];
        let mut begin: SnapshotBegin = blank(0);
        begin.market = market.into();
        begin.market_seq = book.market_seq.into();
        begin.feed_epoch = self.config.feed_epoch.into();
        begin.bid_levels = (book.bids.len() as u32).into();
        begin.ask_levels = (book.asks.len() as u32).into();
        let mut bytes = Vec::with_capacity(
            SnapshotBegin::BYTES
                + (book.bids.len() + book.asks.len()) * SnapshotLevel::BYTES
                + SnapshotEnd::BYTES
                + 2 * MAX_RECENT_BYTES,
        );
        bytes.extend_from_slice(begin.as_bytes());
        let levels = book
            .bids
            .iter()
            .rev()
            .map(|(&p, &l)| (Side::Buy, p, l))
            .chain(book.asks.iter().map(|(&p, &l)| (Side::Sell, p, l)));
        for (side, price, lots) in levels {
            let mut level: SnapshotLevel = blank(0);
            level.market = market.into();
            level.side = side.code();
            level.price = price.into();
            level.lots = lots.into();
            bytes.extend_from_slice(level.as_bytes());
        }
        let mut end: SnapshotEnd = blank(0);
        end.market = market.into();
        end.market_seq = book.market_seq.into();
        bytes.extend_from_slice(end.as_bytes());
        // A perp market's state that is not in the levels: its latest mark and funding, as
        // first sent (their market seqs are at most the snapshot's).
        for latest in [book.last_mark, book.last_funding].into_iter().flatten() {
            bytes.extend_from_slice(latest.bytes());
        }
        self.send(id, &bytes, now_ns);
    }

    fn reject(&mut self, id: ConnId, frame: &[u8], code: RejectCode, now_ns: u64) {
        let mut reject: Reject = blank(0);
        reject.ref_seq = u64::from_le_bytes(frame[8..16].try_into().unwrap_or([0; 8])).into();
        reject.ref_kind = frame[2];
        reject.reason = code.code().into();
        self.send(id, reject.as_bytes(), now_ns);
    }

    fn close(&mut self, id: ConnId, reason: LogoutReason, now_ns: u64) {
        let mut logout: ServerLogout = blank(0);
        logout.reason = reason.code().into();
        if let Some(connection) = self.connections.get_mut(id) {
            connection.last_sent_ns = now_ns;
        }
        self.connections.queue_last(id, logout.as_bytes());
        self.dirty.push(id);
        for book in self.books.values_mut() {
            book.subscribers.retain(|&s| s != id);
        }
    }

    fn send(&mut self, id: ConnId, bytes: &[u8], now_ns: u64) {
        let Some(connection) = self.connections.get_mut(id) else {
            return;
        };
        if connection.buffers.closing {
            return;
        }
        connection.last_sent_ns = now_ns;
        let Some(pending) = self.connections.queue(id, bytes) else {
            return;
        };
        self.dirty.push(id);
        if pending > self.config.max_pending_bytes {
            self.drop_slow_consumer(id, now_ns);
        }
        let limit = self.config.max_unsent_total_bytes;
        while let Some((slowest, closing)) = self.connections.shed_over(limit) {
            if !closing {
                self.close(slowest, LogoutReason::SlowConsumer, now_ns);
            }
        }
    }

    /// Drops what a connection that does not read has queued, and closes it.
    fn drop_slow_consumer(&mut self, id: ConnId, now_ns: u64) {
        self.connections.drop_unsent(id);
        self.close(id, LogoutReason::SlowConsumer, now_ns);
    }

    /// Connections with bytes to write (or to close), each once.
    pub fn take_dirty(&mut self, into: &mut Vec<ConnId>) {
        connections::take_dirty(&mut self.dirty, into);
    }

    /// Bytes waiting to be written on a connection.
    pub fn pending_output(&self, id: ConnId) -> &[u8] {
        self.connections.pending_output(id)
    }

    /// `n` bytes of the pending output were written.
    pub fn consume_output(&mut self, id: ConnId, n: usize) {
        self.connections.consume_output(id, n);
    }

    /// True once the connection should be closed (after its pending output).
    pub fn is_closing(&self, id: ConnId) -> bool {
        self.connections.is_closing(id)
    }

    /// The peer closed its side: write what is pending, then close.
    pub fn close_after_flush(&mut self, id: ConnId) {
        self.connections.close_after_flush(id);
        self.dirty.push(id);
    }

    /// Tells every connection the node is stopping.
    pub fn shutdown(&mut self, now_ns: u64) {
        for id in self.connections.ids() {
            if !self.is_closing(id) {
                self.close(id, LogoutReason::Shutdown, now_ns);
            }
        }
    }

    /// The feed's current levels of a market, best first per side (for tests and tools).
    pub fn levels(&self, market: MarketId) -> Option<(Vec<Level>, Vec<Level>)> {
        let book = self.books.get(&market)?;
        Some((
            book.bids.iter().rev().map(|(&p, &l)| (p, l)).collect(),
            book.asks.iter().map(|(&p, &l)| (p, l)).collect(),
        ))
    }
}
