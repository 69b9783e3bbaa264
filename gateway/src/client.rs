//! The Rust client library: blocking order-entry and market-data clients over std TCP, a
//! decoder of server messages, and an L2 book that applies the feed with gap detection.
//!
//! Used by the tests and by `nexus-perf`. A client in another language needs only
//! docs/protocol.md; this is one such client.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use engine::{ByteCode, Lots, MarketId, SelfTradePrevention, Side, Ticks, TimeInForce};
use zerocopy::IntoBytes;

use crate::wire::{self, *};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed or timed out.
    #[error("network: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server sent bytes that are not a valid message.
    #[error("bad message from the server: {0}")]
    Protocol(String),
    /// The login was refused.
    #[error("login rejected: {0:?}")]
    LoginRejected(Option<LoginRejectReason>),
    /// The server ended the session.
    #[error("logged out by the server: {0:?}")]
    LoggedOut(Option<LogoutReason>),
}

/// Any message a server sends, as its wire struct.
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub enum ServerMessage {
    Challenge(Challenge),
    LoginAccepted(LoginAccepted),
    LoginRejected(LoginRejected),
    Logout(ServerLogout),
    Heartbeat(ServerHeartbeat),
    Reject(Reject),
    ChainInfo(ChainInfo),
    OrderAccepted(OrderAccepted),
    OrderRejected(OrderRejected),
    Fill(Fill),
    Canceled(Canceled),
    Replaced(Replaced),
    Sequenced(Sequenced),
    Finalized(Finalized),
    PositionUpdate(PositionUpdate),
    Liquidation(Liquidation),
    Deleveraged(Deleveraged),
    TransactionStatus(TransactionStatus),
    CallResult(CallResult),
    SnapshotBegin(SnapshotBegin),
    SnapshotLevel(SnapshotLevel),
    SnapshotEnd(SnapshotEnd),
    LevelUpdate(LevelUpdate),
    Trade(Trade),
    MarkPrice(MarkPrice),
    FundingRate(FundingRate),
}

impl ServerMessage {
    /// The header's sequence number.
    pub fn seq(&self) -> u64 {
        macro_rules! seq {
            ($($v:ident),*) => { match self { $( ServerMessage::$v(m) => m.header.seq.get(), )* } };
        }
        seq!(
            Challenge,
            LoginAccepted,
            LoginRejected,
            Logout,
            Heartbeat,
            Reject,
            ChainInfo,
            OrderAccepted,
            OrderRejected,
            Fill,
            Canceled,
            Replaced,
            Sequenced,
            Finalized,
            PositionUpdate,
            Liquidation,
            Deleveraged,
            TransactionStatus,
            CallResult,
            SnapshotBegin,
            SnapshotLevel,
            SnapshotEnd,
            LevelUpdate,
            Trade,
            MarkPrice,
            FundingRate
        )
    }
}

/// Decodes one whole frame sent by a server.
pub fn decode_server_message(frame: &[u8]) -> Result<ServerMessage, String> {
    let header = wire::check_frame(frame).map_err(|code| code.as_str().to_string())?;
    macro_rules! decode {
        ($($v:ident => $m:ident),*) => {
            match header.kind {
                $( $m::KIND => Ok(ServerMessage::$v(*view::<$m>(frame).expect("length checked"))), )*
                kind => Err(format!("kind {kind} is not a server message")),
            }
        };
    }
    decode!(
        Challenge => Challenge,
        LoginAccepted => LoginAccepted,
        LoginRejected => LoginRejected,
        Logout => ServerLogout,
        Heartbeat => ServerHeartbeat,
        Reject => Reject,
        ChainInfo => ChainInfo,
        OrderAccepted => OrderAccepted,
        OrderRejected => OrderRejected,
        Fill => Fill,
        Canceled => Canceled,
        Replaced => Replaced,
        Sequenced => Sequenced,
        Finalized => Finalized,
        PositionUpdate => PositionUpdate,
        Liquidation => Liquidation,
        Deleveraged => Deleveraged,
        TransactionStatus => TransactionStatus,
        CallResult => CallResult,
        SnapshotBegin => SnapshotBegin,
        SnapshotLevel => SnapshotLevel,
        SnapshotEnd => SnapshotEnd,
        LevelUpdate => LevelUpdate,
        Trade => Trade,
        MarkPrice => MarkPrice,
        FundingRate => FundingRate
    )
}

/// Reads whole frames from a stream.
#[derive(Debug)]
pub struct FrameReader {
    stream: TcpStream,
    buffer: Vec<u8>,
    start: usize,
}

impl FrameReader {
    /// Reads from `stream`.
    pub fn new(stream: TcpStream) -> FrameReader {
        FrameReader {
            stream,
            buffer: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    /// The next message, waiting for it (up to the stream's read timeout).
    pub fn next_message(&mut self) -> Result<ServerMessage, ClientError> {
        loop {
            let available = &self.buffer[self.start..];
            match wire::next_frame(available) {
                Ok(Some(length)) => {
                    let message = decode_server_message(&available[..length])
                        .map_err(ClientError::Protocol)?;
                    self.start += length;
                    return Ok(message);
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
            if self.start > 0 {
                self.buffer.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next message if a whole one has arrived, without waiting: `Ok(None)` when the
    /// socket has nothing more to read now. Set the stream non-blocking first
    /// ([`FrameReader::stream`]); for readers driven by a poller (edge-triggered: call it
    /// until `Ok(None)` after each readiness event).
    pub fn try_next_message(&mut self) -> Result<Option<ServerMessage>, ClientError> {
        match self.next_message() {
            Ok(message) => Ok(Some(message)),
            Err(ClientError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The socket it reads (to register it with a poller or make it non-blocking).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sets the wait limit of [`FrameReader::next_message`] (`None`: wait forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// The wait limit in force.
    pub fn timeout(&self) -> io::Result<Option<Duration>> {
        self.stream.read_timeout()
    }

    /// The next message that is not a heartbeat, within the read timeout (heartbeats do not
    /// extend it).
    pub fn next_skipping_heartbeats(&mut self) -> Result<ServerMessage, ClientError> {
        let started = std::time::Instant::now();
        let limit = self.timeout()?;
        loop {
            if limit.is_some_and(|limit| started.elapsed() > limit) {
                return Err(ClientError::Io(io::ErrorKind::TimedOut.into()));
            }
            match self.next_message()? {
                ServerMessage::Heartbeat(_) => continue,
                message => return Ok(message),
            }
        }
    }
}

/// How to log in.
#[derive(Debug, Clone, Copy)]
pub struct LoginOptions {
    /// The session's name (reuse it to resume).
    pub session_id: u64,
    /// First server seq to resend (0: none).
    pub resume_from: u64,
    /// Heartbeat interval, ms.
    pub heartbeat_ms: u32,
    /// Login flags ([`FLAG_CANCEL_ON_DISCONNECT`]).
    pub flags: u32,
}

impl Default for LoginOptions {
    fn default() -> Self {
        LoginOptions {
            session_id: 1,
            resume_from: 0,
            heartbeat_ms: 1_000,
            flags: 0,
        }
    }
}

/// An order as the client library takes it.
#[derive(Debug, Clone, Copy)]
pub struct OrderRequest {
    /// Market id.
    pub market: MarketId,
    /// Client order id.
    pub oid: u64,
    /// Buy or sell.
    pub side: Side,
    /// Limit price in ticks; `None` for a market order.
    pub price: Option<Ticks>,
    /// Size in lots.
    pub qty: Lots,
    /// Time in force.
    pub tif: TimeInForce,
    /// Self-trade prevention.
    pub stp: SelfTradePrevention,
}

/// Order flags that are not part of [`OrderRequest`] (kept apart so that its existing users
/// need not change).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderOptions {
    /// Perp markets: the order may only shrink the position (`order_type` bit 7).
    pub reduce_only: bool,
}

/// The [`NewOrder`] message of an order, with header seq `seq`.
pub fn new_order_message(order: &OrderRequest, options: OrderOptions, seq: u64) -> NewOrder {
    let mut message: NewOrder = blank(seq);
    message.market = order.market.into();
    message.side = order.side.code();
    message.tif = order.tif.code();
    message.stp = order.stp.code();
    message.order_type = if order.price.is_some() {
        ORDER_TYPE_LIMIT
    } else {
        ORDER_TYPE_MARKET
    };
    if options.reduce_only {
        message.order_type |= ORDER_TYPE_REDUCE_ONLY;
    }
    message.oid = order.oid.into();
    message.price = order.price.unwrap_or(0).into();
    message.qty = order.qty.into();
    message
}

/// The sending half of an order-entry session: numbers and writes client messages.
#[derive(Debug)]
pub struct OrderSender {
    stream: TcpStream,
    next_seq: u64,
}

impl OrderSender {
    /// The seq the next application message gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Sets the seq of the next application message (after sending numbered messages by
    /// [`OrderSender::send_raw`], or to resend from the login's `next_client_seq`).
    pub fn set_next_seq(&mut self, seq: u64) {
        self.next_seq = seq;
    }

    fn send<M: Message>(&mut self, mut message: M) -> io::Result<u64> {
        let seq = self.next_seq;
        message.header_mut().seq = seq.into();
        self.stream.write_all(message.as_bytes())?;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Sends a new order; returns its client seq.
    pub fn new_order(&mut self, order: &OrderRequest) -> io::Result<u64> {
        self.new_order_with(order, OrderOptions::default())
    }

    /// Sends a new order with options (e.g. reduce-only); returns its client seq.
    pub fn new_order_with(
        &mut self,
        order: &OrderRequest,
        options: OrderOptions,
    ) -> io::Result<u64> {
        self.send(new_order_message(order, options, 0))
    }

    /// Cancels an order; returns the client seq.
    pub fn cancel(&mut self, market: MarketId, oid: u64) -> io::Result<u64> {
        let mut message: Cancel = blank(0);
        message.market = market.into();
        message.oid = oid.into();
        self.send(message)
    }

    /// Changes an order's price and size; returns the client seq.
    pub fn replace(
        &mut self,
        market: MarketId,
        oid: u64,
        price: Ticks,
        qty: Lots,
    ) -> io::Result<u64> {
        let mut message: CancelReplace = blank(0);
        message.market = market.into();
        message.oid = oid.into();
        message.price = price.into();
        message.qty = qty.into();
        self.send(message)
    }

    /// Cancels every open order of the account in a market; returns the client seq.
    pub fn mass_cancel(&mut self, market: MarketId) -> io::Result<u64> {
        let mut message: MassCancel = blank(0);
        message.market = market.into();
        self.send(message)
    }

    /// Sends a signed transaction (docs/transactions.md) in a `Transaction` message; returns
    /// its client seq. Only a chain takes it, and only from a session of its signer.
    pub fn transaction(&mut self, tx: &[u8]) -> io::Result<u64> {
        let seq = self.next_seq;
        let mut frame = Vec::with_capacity(HEADER_BYTES + tx.len());
        frame.extend_from_slice(
            Header::new(TRANSACTION_KIND, HEADER_BYTES + tx.len(), seq).as_bytes(),
        );
        frame.extend_from_slice(tx);
        self.stream.write_all(&frame)?;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Sends a heartbeat (not numbered).
    pub fn heartbeat(&mut self, timestamp_ns: u64) -> io::Result<()> {
        let mut message: Heartbeat = blank(0);
        message.timestamp_ns = timestamp_ns.into();
        self.stream.write_all(message.as_bytes())
    }

    /// Asks the server to end the session.
    pub fn logout(&mut self) -> io::Result<()> {
        let message: Logout = blank(0);
        self.stream.write_all(message.as_bytes())
    }

    /// Writes arbitrary bytes (for tests of bad input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }
}

/// What the login returned.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    /// The account the session acts for.
    pub account: u64,
    /// The seq the server expects next from this client.
    pub next_client_seq: u64,
    /// The server's next new seq (resent messages come before it).
    pub next_server_seq: u64,
    /// Heartbeat interval in force.
    pub heartbeat_ms: u32,
    /// On a chain (`LoginAccepted` flag [`FLAG_CHAIN`]): its [`ChainInfo`] at login.
    pub chain: Option<ChainInfo>,
}

/// A logged-in order-entry connection.
#[derive(Debug)]
pub struct OrderClient {
    /// Writes client messages.
    pub sender: OrderSender,
    /// Reads server messages.
    pub reader: FrameReader,
    /// What the login returned.
    pub session: Session,
}

impl OrderClient {
    /// Connects and logs in with `key` (answering the server's challenge).
    pub fn connect(
        address: SocketAddr,
        key: &SigningKey,
        options: LoginOptions,
    ) -> Result<OrderClient, ClientError> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        let mut reader = FrameReader::new(stream.try_clone()?);
        reader.set_timeout(Some(Duration::from_secs(10)))?;
        let ServerMessage::Challenge(challenge) = reader.next_message()? else {
            return Err(ClientError::Protocol("expected a challenge".into()));
        };
        let public_key = key.verifying_key().to_bytes();
        let signed = wire::login_signing_bytes(
            &challenge.nonce,
            &public_key,
            options.session_id,
            options.resume_from,
            options.heartbeat_ms,
            options.flags,
        );
        let mut login: Login = blank(0);
        login.public_key = public_key;
        login.signature = key.sign(&signed).to_bytes();
        login.session_id = options.session_id.into();
        login.resume_from = options.resume_from.into();
        login.heartbeat_ms = options.heartbeat_ms.into();
        login.flags = options.flags.into();
        let mut writer = stream;
        writer.write_all(login.as_bytes())?;
        match reader.next_message()? {
            ServerMessage::LoginAccepted(accepted) => {
                let chain = match accepted.flags.get() & FLAG_CHAIN {
                    0 => None,
                    _ => match reader.next_message()? {
                        ServerMessage::ChainInfo(info) => Some(info),
                        other => {
                            return Err(ClientError::Protocol(format!(
                                "expected chain info, got {other:?}"
                            )))
                        }
                    },
                };
                let session = Session {
                    account: accepted.account.get(),
                    next_client_seq: accepted.next_client_seq.get(),
                    next_server_seq: accepted.next_server_seq.get(),
                    heartbeat_ms: accepted.heartbeat_ms.get(),
                    chain,
                };
                Ok(OrderClient {
                    sender: OrderSender {
                        stream: writer,
                        next_seq: session.next_client_seq,
                    },
                    reader,
                    session,
                })
            }
            ServerMessage::LoginRejected(rejected) => Err(ClientError::LoginRejected(
                LoginRejectReason::from_code(rejected.reason.get()),
            )),
            other => Err(ClientError::Protocol(format!(
                "expected a login reply, got {other:?}"
            ))),
        }
    }

    /// The next server message that is not a heartbeat, within the read timeout (heartbeats
    /// do not extend it). A server logout is an error.
    pub fn recv(&mut self) -> Result<ServerMessage, ClientError> {
        match self.reader.next_skipping_heartbeats()? {
            ServerMessage::Logout(logout) => Err(ClientError::LoggedOut(LogoutReason::from_code(
                logout.reason.get(),
            ))),
            message => Ok(message),
        }
    }

    /// Splits into the halves, for a sender thread and a receiver thread.
    pub fn split(self) -> (OrderSender, FrameReader, Session) {
        (self.sender, self.reader, self.session)
    }
}

/// A market-data connection.
#[derive(Debug)]
pub struct MarketDataClient {
    stream: TcpStream,
    /// Reads server messages.
    pub reader: FrameReader,
}

impl MarketDataClient {
    /// Connects (no login on this port).
    pub fn connect(address: SocketAddr) -> Result<MarketDataClient, ClientError> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        let reader = FrameReader::new(stream.try_clone()?);
        reader.set_timeout(Some(Duration::from_secs(10)))?;
        Ok(MarketDataClient { stream, reader })
    }

    /// Subscribes to a market ([`ALL_MARKETS`] for all): a snapshot comes first.
    pub fn subscribe(&mut self, market: MarketId) -> io::Result<()> {
        let mut message: Subscribe = blank(0);
        message.market = market.into();
        self.stream.write_all(message.as_bytes())
    }

    /// Asks for the market's updates from `from_seq` again (subscribing if needed). Give the
    /// `feed_epoch` the book came from, so a restarted feed answers with a snapshot instead.
    pub fn replay(
        &mut self,
        market: MarketId,
        from_seq: u64,
        feed_epoch: Option<u64>,
    ) -> io::Result<()> {
        let mut message: Replay = blank(0);
        message.market = market.into();
        message.feed_epoch_low = feed_epoch.map_or(0, |epoch| epoch as u32).into();
        message.from_seq = from_seq.into();
        self.stream.write_all(message.as_bytes())
    }

    /// Asks for a fresh snapshot.
    pub fn snapshot(&mut self, market: MarketId) -> io::Result<()> {
        let mut message: SnapshotRequest = blank(0);
        message.market = market.into();
        self.stream.write_all(message.as_bytes())
    }

    /// Writes arbitrary bytes (for tests of bad input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next message that is not a heartbeat, within the read timeout (heartbeats do not
    /// extend it).
    pub fn recv(&mut self) -> Result<ServerMessage, ClientError> {
        self.reader.next_skipping_heartbeats()
    }
}

/// One price level: (price in ticks, lots).
pub type Level = (Ticks, Lots);

/// A snapshot being received: its market seq, bids and asks.
type PendingSnapshot = (u64, BTreeMap<Ticks, Lots>, BTreeMap<Ticks, Lots>);

/// What applying a feed message did to an [`L2Book`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The book changed (or a trade was seen) in sequence.
    Updated,
    /// A snapshot finished: the book is whole again.
    SnapshotDone,
    /// A message older than the book (already applied): ignored.
    Stale,
    /// Not for this book, or part of a snapshot in progress.
    Ignored,
}

impl Applied {
    /// `Updated` for a message next in sequence, `Stale` for one already seen.
    fn fresh(fresh: bool) -> Applied {
        if fresh {
            Applied::Updated
        } else {
            Applied::Stale
        }
    }
}

/// A market's L2 book kept from the feed; detects gaps in the market sequence.
#[derive(Debug, Clone, Default)]
pub struct L2Book {
    /// Market id.
    pub market: MarketId,
    /// Price -> lots, bids.
    pub bids: BTreeMap<Ticks, Lots>,
    /// Price -> lots, asks.
    pub asks: BTreeMap<Ticks, Lots>,
    /// Last market seq applied; `None` until the first snapshot.
    pub market_seq: Option<u64>,
    /// The feed epoch of the last snapshot: when a new snapshot brings another, the node
    /// restarted and market sequence numbers began again.
    pub feed_epoch: Option<u64>,
    /// Perp markets: the latest [`MarkPrice`] seen (highest market seq; the feed repeats it
    /// after each snapshot).
    pub mark: Option<MarkPrice>,
    /// Perp markets: the latest [`FundingRate`] seen (highest market seq, as `mark`).
    pub funding: Option<FundingRate>,
    pending: Option<PendingSnapshot>,
}

/// A gap: message `got` arrived while `expected` was next. Recover with a replay or snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The seq that should have come.
    pub expected: u64,
    /// The seq that came.
    pub got: u64,
}

impl L2Book {
    /// An empty book for `market` (waiting for a snapshot).
    pub fn new(market: MarketId) -> L2Book {
        L2Book {
            market,
            ..L2Book::default()
        }
    }

    /// Best bid and best ask.
    pub fn top(&self) -> (Option<Level>, Option<Level>) {
        (
            self.bids.iter().next_back().map(|(&p, &l)| (p, l)),
            self.asks.iter().next().map(|(&p, &l)| (p, l)),
        )
    }

    /// Applies one feed message.
    pub fn apply(&mut self, message: &ServerMessage) -> Result<Applied, Gap> {
        match message {
            ServerMessage::SnapshotBegin(m) if m.market.get() == self.market => {
                self.pending = Some((m.market_seq.get(), BTreeMap::new(), BTreeMap::new()));
                if self.feed_epoch != Some(m.feed_epoch.get()) {
                    // Another run of the feed: its market seqs began again.
                    self.mark = None;
                    self.funding = None;
                }
                self.feed_epoch = Some(m.feed_epoch.get());
                Ok(Applied::Ignored)
            }
            ServerMessage::SnapshotLevel(m) if m.market.get() == self.market => {
                if let Some((_, bids, asks)) = self.pending.as_mut() {
                    let side = if m.side == Side::Buy.code() {
                        bids
                    } else {
                        asks
                    };
                    side.insert(m.price.get(), m.lots.get());
                }
                Ok(Applied::Ignored)
            }
            ServerMessage::SnapshotEnd(m) if m.market.get() == self.market => {
                let Some((seq, bids, asks)) = self.pending.take() else {
                    return Ok(Applied::Ignored);
                };
                self.bids = bids;
                self.asks = asks;
                self.market_seq = Some(seq);
                Ok(Applied::SnapshotDone)
            }
            ServerMessage::LevelUpdate(m) if m.market.get() == self.market => {
                self.sequence(m.market_seq.get()).map(|fresh| {
                    if !fresh {
                        return Applied::Stale;
                    }
                    let side = if m.side == Side::Buy.code() {
                        &mut self.bids
                    } else {
                        &mut self.asks
                    };
                    if m.lots.get() == 0 {
                        side.remove(&m.price.get());
                    } else {
                        side.insert(m.price.get(), m.lots.get());
                    }
                    Applied::Updated
                })
            }
            ServerMessage::Trade(m) if m.market.get() == self.market => {
                self.sequence(m.market_seq.get()).map(Applied::fresh)
            }
            ServerMessage::MarkPrice(m) if m.market.get() == self.market => {
                if self
                    .mark
                    .is_none_or(|old| old.market_seq.get() < m.market_seq.get())
                {
                    self.mark = Some(*m);
                }
                self.sequence(m.market_seq.get()).map(Applied::fresh)
            }
            ServerMessage::FundingRate(m) if m.market.get() == self.market => {
                if self
                    .funding
                    .is_none_or(|old| old.market_seq.get() < m.market_seq.get())
                {
                    self.funding = Some(*m);
                }
                self.sequence(m.market_seq.get()).map(Applied::fresh)
            }
            _ => Ok(Applied::Ignored),
        }
    }

    /// Checks `seq` against the book: Ok(true) if next, Ok(false) if already seen.
    fn sequence(&mut self, seq: u64) -> Result<bool, Gap> {
        let Some(last) = self.market_seq else {
            return Ok(false);
        };
        if seq <= last {
            return Ok(false);
        }
        if seq != last + 1 {
            return Err(Gap {
                expected: last + 1,
                got: seq,
            });
        }
        self.market_seq = Some(seq);
        Ok(true)
    }
}
