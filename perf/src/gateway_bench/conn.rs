//! One order-entry connection of a run: a sender thread that sends on the open-loop
//! schedule, a receiver thread that matches every reply to its request by client seq, and
//! the figures the receiver collects.
//!
//! The sender writes, for each client seq, the request's due time, the time just before the
//! `write` and what it was ([`Requests`], atomics indexed by seq); the receiver reads them
//! back when replies arrive. Nothing else is shared on the hot path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::{ByteCode, Side};
use gateway::client::{ClientError, FrameReader, OrderSender, ServerMessage};
use gateway::wire::{engine_reject_from_code, LogoutReason, RejectCode};
use hdrhistogram::Histogram;
use rand_chacha::ChaCha8Rng;

use super::flows::{Action, Flow, QuoteSlots, RequestKind, SharedMarket};
use super::schedule::{Clock, Schedule, Waiter};
use crate::latency::LatencyRecorder;

/// What the sender recorded about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// Due time on the schedule (for the market-data taker: when the market-data read that
    /// triggered it returned).
    pub due_ns: u64,
    /// Clock read just before the request's `write`.
    pub sent_ns: u64,
    /// What it was.
    pub kind: RequestKind,
    /// Its side (buy for a cancel).
    pub side: Side,
    /// Its price in ticks (0 for a cancel).
    pub price: i64,
}

#[derive(Debug, Default)]
struct Slot {
    due: AtomicU64,
    sent: AtomicU64,
    meta: AtomicU64,
}

/// Per client seq, what the sender sent: written by the sender before the `write`, read by
/// the receiver when replies come. Fixed capacity.
#[derive(Debug)]
pub struct Requests {
    first_seq: u64,
    slots: Box<[Slot]>,
}

impl Requests {
    /// Room for `capacity` requests numbered from `first_seq`.
    pub fn new(first_seq: u64, capacity: usize) -> Requests {
        Requests {
            first_seq,
            slots: (0..capacity).map(|_| Slot::default()).collect(),
        }
    }

    /// Requests it can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The first client seq.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    fn slot(&self, seq: u64) -> Option<&Slot> {
        self.slots
            .get(usize::try_from(seq.checked_sub(self.first_seq)?).ok()?)
    }

    /// Records request `seq`; false if it is beyond the capacity.
    pub fn record(&self, seq: u64, record: RequestRecord) -> bool {
        let Some(slot) = self.slot(seq) else {
            return false;
        };
        let meta = (record.kind as u64)
            | ((record.side.code() as u64) << 8)
            | ((record.price.clamp(0, (1 << 47) - 1) as u64) << 16);
        slot.due.store(record.due_ns, Ordering::Relaxed);
        slot.meta.store(meta, Ordering::Relaxed);
        slot.sent.store(record.sent_ns.max(1), Ordering::Release);
        true
    }

    /// What was recorded for `seq`, if anything.
    pub fn get(&self, seq: u64) -> Option<RequestRecord> {
        let slot = self.slot(seq)?;
        let sent_ns = slot.sent.load(Ordering::Acquire);
        if sent_ns == 0 {
            return None;
        }
        let meta = slot.meta.load(Ordering::Relaxed);
        Some(RequestRecord {
            due_ns: slot.due.load(Ordering::Relaxed),
            sent_ns,
            kind: RequestKind::from_code(meta as u8)?,
            side: <Side as ByteCode>::from_code((meta >> 8) as u8)?,
            price: (meta >> 16) as i64,
        })
    }

    /// Same as [`Requests::get`], waiting up to ~1 ms for the sender's stores to become
    /// visible (a reply cannot come before its request was written, so this only covers
    /// the memory ordering between the two threads).
    pub fn get_sent(&self, seq: u64) -> Option<RequestRecord> {
        for _ in 0..1_000 {
            if let Some(record) = self.get(seq) {
                return Some(record);
            }
            self.slot(seq)?;
            std::thread::yield_now();
        }
        None
    }
}

/// The measurement window: requests due in `[from_ns, to_ns)` are measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Start (end of the warm-up).
    pub from_ns: u64,
    /// End of the schedule.
    pub to_ns: u64,
}

impl Window {
    /// Whether a time is inside.
    pub fn contains(&self, ns: u64) -> bool {
        (self.from_ns..self.to_ns).contains(&ns)
    }

    /// Length in seconds.
    pub fn seconds(&self) -> f64 {
        (self.to_ns - self.from_ns) as f64 / 1e9
    }
}

/// Counters and histograms every thread of a run shares (progress, drain, stop).
#[derive(Debug)]
pub struct RunState {
    /// The run's clock.
    pub clock: Clock,
    /// The measurement window.
    pub window: Window,
    /// Set when the receivers and the market-data thread must stop.
    pub stop: AtomicBool,
    /// Requests sent so far (all connections, warm-up included).
    pub sent: AtomicU64,
    /// Requests answered so far (first reply).
    pub acked: AtomicU64,
    /// Requests sequenced so far.
    pub sequenced: AtomicU64,
    /// Requests finalized so far.
    pub finalized: AtomicU64,
    /// Order-to-ack from the due time of scheduled requests answered since the last progress
    /// line.
    pub recent: Mutex<Histogram<u64>>,
}

impl RunState {
    /// A run measuring `window` on `clock`.
    pub fn new(clock: Clock, window: Window) -> RunState {
        RunState {
            clock,
            window,
            stop: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            sequenced: AtomicU64::new(0),
            finalized: AtomicU64::new(0),
            recent: Mutex::new(
                Histogram::new_with_bounds(1, 10_000_000_000, 2).expect("valid bounds"),
            ),
        }
    }
}

/// A maker quote the node acknowledged: its global seq, side and price, for the match with
/// the feed's `LevelUpdate`s (order-to-market-data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuoteAck {
    /// Global sequence number of the input.
    pub seq: u64,
    /// Side.
    pub side: Side,
    /// Price.
    pub price: i64,
    /// Due time.
    pub due_ns: u64,
    /// Send time.
    pub sent_ns: u64,
}

/// A pair of histograms: from the due time and from the send time.
#[derive(Default)]
pub struct DueSent {
    /// Measured from the due time (includes the sender's lateness).
    pub due: LatencyRecorder,
    /// Measured from the clock read just before the `write`.
    pub sent: LatencyRecorder,
}

impl DueSent {
    fn record(&mut self, record: &RequestRecord, at_ns: u64) {
        self.due.record_ns(at_ns.saturating_sub(record.due_ns));
        self.sent.record_ns(at_ns.saturating_sub(record.sent_ns));
    }

    /// Adds another pair.
    pub fn add(&mut self, other: &DueSent) {
        self.due.add(&other.due);
        self.sent.add(&other.sent);
    }
}

/// What one or more receivers measured (requests due inside the window only).
#[derive(Default)]
pub struct Metrics {
    /// Send to first reply (OrderAccepted, OrderRejected, Replaced, Canceled or Reject),
    /// scheduled requests.
    pub order_to_ack: DueSent,
    /// Send to `Sequenced`, scheduled requests.
    pub order_to_sequenced: DueSent,
    /// Send to `Finalized`, scheduled requests.
    pub order_to_finalized: DueSent,
    /// Order-to-ack per request kind (the market-data taker's IOCs included).
    pub by_kind: BTreeMap<RequestKind, DueSent>,
    /// Send time minus due time of scheduled requests.
    pub send_lateness: LatencyRecorder,
    /// Market-data read that triggered a reactive IOC to the IOC's first `Fill`.
    pub tick_to_trade: LatencyRecorder,
    /// Scheduled requests sent.
    pub requests: u64,
    /// Of those, answered.
    pub acked: u64,
    /// Of those, never answered before the run ended.
    pub unanswered: u64,
    /// Of those, never sequenced.
    pub unsequenced: u64,
    /// Of those, never finalized.
    pub unfinalized: u64,
    /// Taker-side fills received inside the window (one per trade an own order took).
    pub taker_fills: u64,
    /// Maker-side fills received inside the window.
    pub maker_fills: u64,
    /// Refusals by reason: `engine:<reason>` (OrderRejected), `gateway:<code>` (Reject).
    pub rejects: BTreeMap<String, u64>,
    /// Acknowledged maker quotes, for the feed match.
    pub quote_acks: Vec<QuoteAck>,
    /// Reactive IOCs sent (inside the window).
    pub react_sent: u64,
    /// Of those, filled at least partly.
    pub react_filled: u64,
    /// Errors (connection lost, protocol); empty on a clean run.
    pub errors: Vec<String>,
}

impl Metrics {
    /// Adds another receiver's figures.
    pub fn add(&mut self, other: &Metrics) {
        self.order_to_ack.add(&other.order_to_ack);
        self.order_to_sequenced.add(&other.order_to_sequenced);
        self.order_to_finalized.add(&other.order_to_finalized);
        for (kind, pair) in &other.by_kind {
            self.by_kind.entry(*kind).or_default().add(pair);
        }
        self.send_lateness.add(&other.send_lateness);
        self.tick_to_trade.add(&other.tick_to_trade);
        self.requests += other.requests;
        self.acked += other.acked;
        self.unanswered += other.unanswered;
        self.unsequenced += other.unsequenced;
        self.unfinalized += other.unfinalized;
        self.taker_fills += other.taker_fills;
        self.maker_fills += other.maker_fills;
        for (reason, count) in &other.rejects {
            *self.rejects.entry(reason.clone()).or_default() += count;
        }
        self.quote_acks.extend_from_slice(&other.quote_acks);
        self.react_sent += other.react_sent;
        self.react_filled += other.react_filled;
        self.errors.extend(other.errors.iter().cloned());
    }
}

const ACKED: u8 = 1;
const SEQUENCED: u8 = 2;
const FINALIZED: u8 = 4;
const FILLED: u8 = 8;

/// The receiving half of a connection: matches replies to requests and measures.
pub struct Receiver {
    reader: FrameReader,
    requests: Arc<Requests>,
    run: Arc<RunState>,
    quotes: Option<Arc<QuoteSlots>>,
    react_in_flight: Option<Arc<AtomicBool>>,
    flags: Vec<u8>,
    metrics: Metrics,
    name: String,
}

impl Receiver {
    /// A receiver for the connection `name` (quotes: the maker's slots to mark closed;
    /// react_in_flight: the market-data taker's flag, cleared when its IOC is sequenced).
    pub fn new(
        name: String,
        reader: FrameReader,
        requests: Arc<Requests>,
        run: Arc<RunState>,
        quotes: Option<Arc<QuoteSlots>>,
        react_in_flight: Option<Arc<AtomicBool>>,
    ) -> Receiver {
        let flags = vec![0; requests.capacity()];
        Receiver {
            reader,
            requests,
            run,
            quotes,
            react_in_flight,
            flags,
            metrics: Metrics::default(),
            name,
        }
    }

    /// Reads until the run stops (or the connection fails), then tallies what never came.
    pub fn run(mut self) -> Metrics {
        let _ = self.reader.set_timeout(Some(Duration::from_millis(20)));
        loop {
            if self.run.stop.load(Ordering::Acquire) {
                break;
            }
            match self.reader.next_message() {
                Ok(message) => {
                    let now = self.run.clock.now_ns();
                    if let Err(error) = self.handle(&message, now) {
                        self.metrics.errors.push(format!("{}: {error}", self.name));
                        break;
                    }
                }
                Err(ClientError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    self.metrics.errors.push(format!("{}: {e}", self.name));
                    break;
                }
            }
        }
        self.tally();
        self.metrics
    }

    fn flag(&mut self, seq: u64, bit: u8) -> Option<RequestRecord> {
        let index = usize::try_from(seq.checked_sub(self.requests.first_seq())?).ok()?;
        if index >= self.flags.len() || self.flags[index] & bit != 0 {
            return None;
        }
        let record = self.requests.get_sent(seq)?;
        self.flags[index] |= bit;
        Some(record)
    }

    fn ack(&mut self, client_seq: u64, global_seq: u64, now: u64) {
        let Some(record) = self.flag(client_seq, ACKED) else {
            return;
        };
        self.run.acked.fetch_add(1, Ordering::Relaxed);
        if record.kind == RequestKind::ReactIoc {
            if self.run.window.contains(record.due_ns) {
                self.metrics
                    .by_kind
                    .entry(record.kind)
                    .or_default()
                    .record(&record, now);
            }
            return;
        }
        if let Ok(mut recent) = self.run.recent.lock() {
            let _ = recent.record(now.saturating_sub(record.due_ns).max(1));
        }
        if !self.run.window.contains(record.due_ns) {
            return;
        }
        self.metrics.order_to_ack.record(&record, now);
        self.metrics
            .by_kind
            .entry(record.kind)
            .or_default()
            .record(&record, now);
        if record.kind.is_quote() && global_seq != 0 {
            self.metrics.quote_acks.push(QuoteAck {
                seq: global_seq,
                side: record.side,
                price: record.price,
                due_ns: record.due_ns,
                sent_ns: record.sent_ns,
            });
        }
    }

    fn done(&mut self, client_seq: u64) {
        if let Some(flag) = self.react_in_flight.as_ref() {
            if self
                .requests
                .get(client_seq)
                .is_some_and(|r| r.kind == RequestKind::ReactIoc)
            {
                flag.store(false, Ordering::Release);
            }
        }
    }

    fn close_quote(&self, oid: u64) {
        if let Some(quotes) = self.quotes.as_ref() {
            quotes.close(oid);
        }
    }

    fn handle(&mut self, message: &ServerMessage, now: u64) -> Result<(), String> {
        match message {
            ServerMessage::OrderAccepted(m) if m.client_seq.get() != 0 => {
                self.ack(m.client_seq.get(), m.seq.get(), now);
            }
            ServerMessage::OrderRejected(m) => {
                let reason = engine_reject_from_code(m.reason.get())
                    .map(|r| r.as_str().to_string())
                    .unwrap_or_else(|| format!("code_{}", m.reason.get()));
                *self
                    .metrics
                    .rejects
                    .entry(format!("engine:{reason}"))
                    .or_default() += 1;
                self.close_quote(m.oid.get());
                if m.client_seq.get() != 0 {
                    self.ack(m.client_seq.get(), 0, now);
                }
            }
            ServerMessage::Replaced(m) if m.client_seq.get() != 0 => {
                self.ack(m.client_seq.get(), m.seq.get(), now);
            }
            ServerMessage::Canceled(m) => {
                self.close_quote(m.oid.get());
                if m.client_seq.get() != 0 {
                    self.ack(m.client_seq.get(), m.seq.get(), now);
                }
            }
            ServerMessage::Fill(m) => {
                if m.leaves.get() == 0 {
                    self.close_quote(m.oid.get());
                }
                let taker = m.liquidity == 2;
                if self.run.window.contains(now) {
                    if taker {
                        self.metrics.taker_fills += 1;
                    } else {
                        self.metrics.maker_fills += 1;
                    }
                }
                if taker && m.client_seq.get() != 0 {
                    let client_seq = m.client_seq.get();
                    if let Some(record) = self.requests.get(client_seq) {
                        if record.kind == RequestKind::ReactIoc {
                            if let Some(record) = self.flag(client_seq, FILLED) {
                                if self.run.window.contains(record.due_ns) {
                                    self.metrics
                                        .tick_to_trade
                                        .record_ns(now.saturating_sub(record.due_ns));
                                }
                            }
                        }
                    }
                }
            }
            ServerMessage::Sequenced(m) => {
                let client_seq = m.client_seq.get();
                // Every reply comes before Sequenced: an input with no reply (impossible by
                // the protocol) would be acked here.
                self.ack(client_seq, m.seq.get(), now);
                self.done(client_seq);
                if let Some(record) = self.flag(client_seq, SEQUENCED) {
                    self.run.sequenced.fetch_add(1, Ordering::Relaxed);
                    if record.kind.is_scheduled() && self.run.window.contains(record.due_ns) {
                        self.metrics.order_to_sequenced.record(&record, now);
                    }
                }
            }
            ServerMessage::Finalized(m) => {
                if let Some(record) = self.flag(m.client_seq.get(), FINALIZED) {
                    self.run.finalized.fetch_add(1, Ordering::Relaxed);
                    if record.kind.is_scheduled() && self.run.window.contains(record.due_ns) {
                        self.metrics.order_to_finalized.record(&record, now);
                    }
                }
            }
            ServerMessage::Reject(m) => {
                let reason = RejectCode::from_code(m.reason.get())
                    .map(|r| r.as_str().to_string())
                    .unwrap_or_else(|| format!("code_{}", m.reason.get()));
                *self
                    .metrics
                    .rejects
                    .entry(format!("gateway:{reason}"))
                    .or_default() += 1;
                let seq = m.ref_seq.get();
                self.ack(seq, 0, now);
                self.done(seq);
                // A refused message is never sequenced or finalized: count it as both.
                if self.flag(seq, SEQUENCED).is_some() {
                    self.run.sequenced.fetch_add(1, Ordering::Relaxed);
                }
                if self.flag(seq, FINALIZED).is_some() {
                    self.run.finalized.fetch_add(1, Ordering::Relaxed);
                }
            }
            ServerMessage::Logout(m) => {
                return Err(format!(
                    "logged out by the node: {:?}",
                    LogoutReason::from_code(m.reason.get())
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn tally(&mut self) {
        for index in 0..self.requests.capacity() {
            let seq = self.requests.first_seq() + index as u64;
            let Some(record) = self.requests.get(seq) else {
                continue;
            };
            if !self.run.window.contains(record.due_ns) {
                continue;
            }
            let flags = self.flags[index];
            if record.kind == RequestKind::ReactIoc {
                self.metrics.react_sent += 1;
                if flags & FILLED != 0 {
                    self.metrics.react_filled += 1;
                }
                continue;
            }
            self.metrics.requests += 1;
            self.metrics
                .send_lateness
                .record_ns(record.sent_ns.saturating_sub(record.due_ns));
            if flags & ACKED != 0 {
                self.metrics.acked += 1;
            } else {
                self.metrics.unanswered += 1;
            }
            if flags & SEQUENCED == 0 {
                self.metrics.unsequenced += 1;
            }
            if flags & FINALIZED == 0 {
                self.metrics.unfinalized += 1;
            }
        }
    }
}

/// Sends one action; returns the client seq it got.
pub fn send_action(sender: &mut OrderSender, action: &Action) -> std::io::Result<u64> {
    match *action {
        Action::New(order) => sender.new_order(&order),
        Action::Replace {
            market,
            oid,
            price,
            qty,
            ..
        } => sender.replace(market, oid, price, qty),
        Action::Cancel { market, oid } => sender.cancel(market, oid),
    }
}

/// The sending half of a scheduled connection.
pub struct ScheduledSender {
    /// The session's writer.
    pub sender: OrderSender,
    /// What it sends.
    pub flow: Flow,
    /// When.
    pub schedule: Schedule,
    /// How it waits.
    pub waiter: Waiter,
    /// Its own random stream.
    pub rng: ChaCha8Rng,
    /// Shared with the receiver.
    pub requests: Arc<Requests>,
    /// The run.
    pub run: Arc<RunState>,
    /// The market.
    pub market: Arc<SharedMarket>,
}

impl ScheduledSender {
    /// Sends every request of the schedule; returns the writer (kept open until the
    /// receivers are done) and an error if sending failed.
    pub fn run(mut self) -> (OrderSender, Option<String>) {
        let clock = self.run.clock;
        let mut error = None;
        for i in 0.. {
            let Some(due) = self.schedule.due_ns(i) else {
                break;
            };
            if self.run.stop.load(Ordering::Relaxed) {
                break;
            }
            self.waiter.wait_until(&clock, due);
            let (kind, action) = self.flow.next(&self.market, &mut self.rng);
            let (side, price) = action.side_price();
            let seq = self.sender.next_seq();
            let sent_ns = clock.now_ns();
            let record = RequestRecord {
                due_ns: due,
                sent_ns,
                kind,
                side,
                price,
            };
            if !self.requests.record(seq, record) {
                error = Some(format!(
                    "request table full ({} requests)",
                    self.requests.capacity()
                ));
                break;
            }
            self.run.sent.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = send_action(&mut self.sender, &action) {
                error = Some(format!("send failed: {e}"));
                break;
            }
        }
        (self.sender, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_the_table() {
        let requests = Requests::new(5, 3);
        let record = RequestRecord {
            due_ns: 10,
            sent_ns: 12,
            kind: RequestKind::MakerReplace,
            side: Side::Sell,
            price: 100_123,
        };
        assert!(requests.record(5, record));
        assert!(requests.record(7, record));
        assert!(!requests.record(8, record), "beyond the capacity");
        assert!(!requests.record(4, record), "before the first seq");
        assert_eq!(requests.get(5), Some(record));
        assert_eq!(requests.get(6), None);
        assert_eq!(requests.get(7), Some(record));
    }

    #[test]
    fn windows_are_half_open() {
        let window = Window {
            from_ns: 10,
            to_ns: 20,
        };
        assert!(!window.contains(9));
        assert!(window.contains(10));
        assert!(!window.contains(20));
    }
}
