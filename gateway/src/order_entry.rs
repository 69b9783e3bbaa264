//! The order-entry port as a state machine: connections, login, sessions with sequence
//! numbers and resend, order messages turned into engine commands, and engine results turned
//! into replies for every session of the accounts they concern.
//!
//! No sockets, clocks or randomness here: the shell (`crate::server`) passes in bytes, the
//! time (`now_ns`, Unix epoch) and each connection's challenge nonce, and takes out bytes to
//! write and [`Submission`]s for the pipeline. docs/protocol.md is the contract.

use std::collections::{BTreeMap, VecDeque};

use ed25519_dalek::{Signature, VerifyingKey};
use engine::{ByteCode, Command, Event, MarketId, SelfTradePrevention, Side, TimeInForce};
use sequencer::{ClientRef, Output, Submission};
use zerocopy::IntoBytes;

use crate::connections::{self, Buffers, ConnId, HasBuffers, Slots};
use crate::wire::{self, *};

/// Bit 63 of [`ClientRef::connection`] marks inputs sent through this gateway.
pub const GATEWAY_CLIENT_BIT: u64 = 1 << 63;
/// The client of cancel-on-disconnect inputs (no session answers for them).
const CANCEL_ON_DISCONNECT: ClientRef = ClientRef {
    connection: GATEWAY_CLIENT_BIT | u32::MAX as u64,
    tag: 0,
};
/// The largest numbered server message on this port.
const MAX_STORED_BYTES: usize = {
    let sizes = [
        Reject::BYTES,
        OrderAccepted::BYTES,
        OrderRejected::BYTES,
        Fill::BYTES,
        Canceled::BYTES,
        Replaced::BYTES,
        Sequenced::BYTES,
        Finalized::BYTES,
        PositionUpdate::BYTES,
        Liquidation::BYTES,
        Deleveraged::BYTES,
    ];
    let mut max = 0;
    let mut i = 0;
    while i < sizes.len() {
        if sizes[i] > max {
            max = sizes[i];
        }
        i += 1;
    }
    max
};

/// Limits and timings of the order-entry port.
#[derive(Debug, Clone)]
pub struct OrderEntryConfig {
    /// Most sessions held at once (connected or lingering for a resume).
    pub max_sessions: usize,
    /// Most sessions one account may hold; past it the account's own longest-disconnected
    /// session makes room.
    pub max_sessions_per_account: usize,
    /// Server messages each session keeps for resend.
    pub resend_messages: usize,
    /// Server messages kept for resend over all sessions: with `n` sessions held, each
    /// keeps at most `max_resend_total / n` (and at most `resend_messages`).
    pub max_resend_total: usize,
    /// How long a disconnected session is kept for a resume, ns.
    pub session_linger_ns: u64,
    /// Time allowed between connect and login, ns.
    pub login_timeout_ns: u64,
    /// A connection with more unsent bytes than this is dropped (slow consumer).
    pub max_pending_bytes: usize,
    /// Most unsent bytes over all the port's connections: past it, the connection with the
    /// most is dropped (slow consumer), until the port is back under it.
    pub max_unsent_total_bytes: usize,
    /// Refused messages in a row after which the session is logged out.
    pub max_consecutive_rejects: u32,
    /// Every market, for cancel-on-disconnect.
    pub markets: Vec<MarketId>,
    /// `Some(chain id)` on a chain: only signed `Transaction` messages are taken (unsigned
    /// order messages get `signature_required`) and nothing is cancelled on disconnect (no
    /// one may sign for the account); `None` on a single node (unsigned orders only).
    pub chain_id: Option<[u8; 32]>,
}

impl Default for OrderEntryConfig {
    fn default() -> Self {
        OrderEntryConfig {
            max_sessions: 1024,
            max_sessions_per_account: 16,
            resend_messages: 10_000,
            max_resend_total: 1_000_000,
            session_linger_ns: 300_000_000_000,
            login_timeout_ns: 5_000_000_000,
            max_pending_bytes: 16 << 20,
            max_unsent_total_bytes: crate::market_data::DEFAULT_MAX_UNSENT_TOTAL_BYTES,
            max_consecutive_rejects: 1000,
            markets: Vec::new(),
            chain_id: None,
        }
    }
}

/// The resend window of each session while `held` sessions are held: `resend_messages`,
/// or less so that all of them together keep at most `max_resend_total`.
fn resend_cap(config: &OrderEntryConfig, held: usize) -> usize {
    config
        .resend_messages
        .min(config.max_resend_total / held.max(1))
}

/// A server message kept for resend.
#[derive(Clone, Copy)]
struct Stored {
    length: u8,
    bytes: [u8; MAX_STORED_BYTES],
}

/// An input this session sent that the engine has not answered yet.
#[derive(Debug, Clone)]
struct InFlight {
    client_seq: u64,
    market: MarketId,
    oid: u64,
    /// A transaction's (market, oid) per action that names a market, to fill in an
    /// `OrderRejected` (empty for unsigned order messages).
    targets: Vec<(MarketId, u64)>,
}

impl InFlight {
    /// The market and oid an engine refusal of this input concerns.
    fn refused(&self, oid: Option<u64>) -> (MarketId, u64) {
        let found = match oid {
            Some(oid) => self.targets.iter().find(|t| t.1 == oid),
            None => self.targets.iter().find(|t| t.1 == 0),
        };
        match (found, self.targets.first()) {
            (Some(&(market, _)), _) => (market, oid.unwrap_or(0)),
            (None, Some(&(market, first))) => (market, oid.unwrap_or(first)),
            (None, None) => (self.market, oid.unwrap_or(self.oid)),
        }
    }
}

/// A signed transaction a session sent, for the mempool. Its answers come back through
/// [`OrderEntry::transaction_status`] and, once executed, [`OrderEntry::on_output`] with this
/// `client`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxSubmission {
    /// The sending session and the message's client seq.
    pub client: ClientRef,
    /// The transaction's bytes (docs/transactions.md).
    pub bytes: Vec<u8>,
}

/// A logged-in identity: (account, session id). Outlives its connections.
struct Session {
    account: u64,
    session_id: u64,
    /// Distinguishes this session from earlier ones in the same slot.
    generation: u32,
    connection: Option<ConnId>,
    next_client_seq: u64,
    next_server_seq: u64,
    /// The last `resend.len()` server messages, oldest first; the newest has seq
    /// `next_server_seq - 1`.
    resend: VecDeque<Stored>,
    flags: u32,
    heartbeat_ns: u64,
    /// Inputs sequenced for this session, awaiting their `Sequenced` notice.
    in_flight: VecDeque<InFlight>,
    /// When the session lost its connection (for expiry).
    disconnected_at_ns: u64,
}

enum ConnState {
    AwaitingLogin { nonce: [u8; 32], deadline_ns: u64 },
    LoggedIn { session: u32 },
}

struct Connection {
    buffers: Buffers,
    /// The peer closed its side: close once the session's inputs in flight are answered.
    peer_closed: bool,
    state: ConnState,
    last_received_ns: u64,
    last_sent_ns: u64,
    consecutive_rejects: u32,
}

impl HasBuffers for Connection {
    fn buffers(&self) -> &Buffers {
        &self.buffers
    }
    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}

/// The order-entry state machine.
pub struct OrderEntry {
    config: OrderEntryConfig,
    connections: Slots<Connection>,
    sessions: Vec<Option<Session>>,
    session_generations: Vec<u32>,
    by_key: BTreeMap<(u64, u64), u32>,
    by_account: BTreeMap<u64, Vec<u32>>,
    submissions: Vec<Submission>,
    /// Signed transactions for the mempool (on a chain).
    transactions: Vec<TxSubmission>,
    /// The chain's last executed block and its timestamp (ms), for [`ChainInfo`].
    chain_tip: (u64, u64),
    /// Cancel-on-disconnect inputs the pipeline refused: offered again before anything else.
    retry: Vec<Submission>,
    /// Connections with bytes to write or to close, possibly repeated.
    dirty: Vec<ConnId>,
    /// The node is stopping and the cancel-on-disconnect inputs of the connected sessions
    /// are queued ([`OrderEntry::cancel_on_shutdown`]): closing connections queues no more.
    stopping: bool,
    /// The input whose fills are being numbered, and the next fill's index.
    fill_seq: u64,
    fill_index: u32,
}

fn client_ref(slot: u32, generation: u32, client_seq: u64) -> ClientRef {
    ClientRef {
        connection: GATEWAY_CLIENT_BIT | ((generation as u64) << 32) | slot as u64,
        tag: client_seq,
    }
}

impl OrderEntry {
    /// An empty port.
    pub fn new(config: OrderEntryConfig) -> OrderEntry {
        OrderEntry {
            config,
            connections: Slots::default(),
            sessions: Vec::new(),
            session_generations: Vec::new(),
            by_key: BTreeMap::new(),
            by_account: BTreeMap::new(),
            submissions: Vec::new(),
            transactions: Vec::new(),
            chain_tip: (0, 0),
            retry: Vec::new(),
            dirty: Vec::new(),
            stopping: false,
            fill_seq: 0,
            fill_index: 0,
        }
    }

    /// A new connection: it is sent a [`Challenge`] with `nonce` at once.
    pub fn connect(&mut self, now_ns: u64, nonce: [u8; 32]) -> ConnId {
        let id = self.connections.insert(Connection {
            buffers: Buffers::default(),
            peer_closed: false,
            state: ConnState::AwaitingLogin {
                nonce,
                deadline_ns: now_ns.saturating_add(self.config.login_timeout_ns),
            },
            last_received_ns: now_ns,
            last_sent_ns: now_ns,
            consecutive_rejects: 0,
        });
        let mut challenge: Challenge = blank(0);
        challenge.nonce = nonce;
        challenge.server_time_ns = now_ns.into();
        self.send_raw(id, challenge.as_bytes(), now_ns);
        id
    }

    /// Bytes arrived on a connection: every complete frame is handled.
    pub fn receive(&mut self, id: ConnId, data: &[u8], now_ns: u64) {
        let Some(connection) = self.connections.get_mut(id) else {
            return;
        };
        if connection.buffers.closing {
            return;
        }
        connection.last_received_ns = now_ns;
        connection.buffers.read.extend_from_slice(data);
        let mut read = std::mem::take(&mut connection.buffers.read);
        let mut start = 0;
        loop {
            match wire::next_frame(&read[start..]) {
                Ok(Some(length)) => {
                    let frame = &read[start..start + length];
                    start += length;
                    self.handle_frame(id, frame, now_ns);
                    if self.connections.get(id).is_none_or(|c| c.buffers.closing) {
                        return;
                    }
                }
                Ok(None) => break,
                Err(FrameError::BadFrameLength(_)) => {
                    self.logout(id, LogoutReason::Malformed, now_ns);
                    return;
                }
            }
        }
        read.drain(..start);
        if let Some(connection) = self.connections.get_mut(id) {
            connection.buffers.read = read;
        }
    }

    /// The connection is gone (closed by the peer, an error, or after `closing`).
    pub fn disconnected(&mut self, id: ConnId, now_ns: u64) {
        let Some(connection) = self.connections.remove(id) else {
            return;
        };
        if let ConnState::LoggedIn { session } = connection.state {
            let cancel = match self.sessions[session as usize].as_mut() {
                Some(s) if s.connection == Some(id) => {
                    s.connection = None;
                    s.disconnected_at_ns = now_ns;
                    // When stopping, its cancels were queued with everyone's already.
                    (s.flags & FLAG_CANCEL_ON_DISCONNECT != 0 && !self.stopping)
                        .then_some(s.account)
                }
                _ => None,
            };
            if let Some(account) = cancel {
                self.cancel_on_disconnect(account);
            }
        }
    }

    /// Queues a cancel-all in every market for `account`.
    fn cancel_on_disconnect(&mut self, account: u64) {
        for &market in &self.config.markets {
            self.submissions.push(Submission {
                client: CANCEL_ON_DISCONNECT,
                command: Command::CancelAll { account, market },
                received_ns: 0,
            });
        }
    }

    /// Timers: login and heartbeat timeouts, server heartbeats, expiry of lingering sessions.
    pub fn tick(&mut self, now_ns: u64) {
        for id in self.connections.ids() {
            let Some(connection) = self.connections.get(id) else {
                continue;
            };
            if connection.buffers.closing {
                continue;
            }
            match connection.state {
                ConnState::AwaitingLogin { deadline_ns, .. } => {
                    if now_ns >= deadline_ns {
                        self.logout(id, LogoutReason::LoginTimeout, now_ns);
                    }
                }
                ConnState::LoggedIn { session } => {
                    let heartbeat_ns = self.sessions[session as usize]
                        .as_ref()
                        .map_or(1_000_000_000, |s| s.heartbeat_ns);
                    if now_ns.saturating_sub(connection.last_received_ns) >= 3 * heartbeat_ns {
                        self.logout(id, LogoutReason::HeartbeatTimeout, now_ns);
                    } else if now_ns.saturating_sub(connection.last_sent_ns) >= heartbeat_ns {
                        let mut heartbeat: ServerHeartbeat = blank(0);
                        heartbeat.timestamp_ns = now_ns.into();
                        self.send_raw(id, heartbeat.as_bytes(), now_ns);
                    }
                }
            }
        }
        for slot in 0..self.sessions.len() {
            let expired = self.sessions[slot].as_ref().is_some_and(|s| {
                s.connection.is_none()
                    && now_ns.saturating_sub(s.disconnected_at_ns) >= self.config.session_linger_ns
            });
            if expired {
                self.drop_session(slot as u32);
            }
        }
    }

    /// Inputs to hand to the pipeline, oldest first (refused cancel-on-disconnect inputs
    /// before all others).
    pub fn take_submissions(&mut self, into: &mut Vec<Submission>) {
        into.append(&mut self.retry);
        into.append(&mut self.submissions);
    }

    /// True while inputs (or transactions) wait to be handed on.
    pub fn has_submissions(&self) -> bool {
        !self.submissions.is_empty() || !self.retry.is_empty() || !self.transactions.is_empty()
    }

    /// Signed transactions for the mempool, oldest first (on a chain).
    pub fn take_transactions(&mut self, into: &mut Vec<TxSubmission>) {
        into.append(&mut self.transactions);
    }

    /// The chain executed block `height` with timestamp `block_time_ms`: what later logins
    /// are told in [`ChainInfo`].
    pub fn set_chain_tip(&mut self, height: u64, block_time_ms: u64) {
        self.chain_tip = (height, block_time_ms);
    }

    /// What the mempool did with a transaction: [`wire::TX_ADMITTED`], [`wire::TX_REFUSED`]
    /// or [`wire::TX_EVICTED`] with the mempool's refusal `code`. The sending session gets a
    /// [`TransactionStatus`]; a refused or evicted transaction is no longer in flight.
    pub fn transaction_status(
        &mut self,
        client: ClientRef,
        hash: [u8; 32],
        status: u8,
        code: u16,
        now_ns: u64,
    ) {
        let Some(slot) = self.origin(client) else {
            return;
        };
        if status != wire::TX_ADMITTED {
            self.forget_in_flight(slot, client.tag);
        }
        let mut message: TransactionStatus = blank(0);
        message.client_seq = client.tag.into();
        message.status = status;
        message.code = code.into();
        message.hash = hash;
        self.send_app(slot, message, now_ns);
        self.close_if_answered(slot);
    }

    /// Drops a session's input from its in-flight list (it will not be executed).
    fn forget_in_flight(&mut self, slot: u32, client_seq: u64) {
        let Some(session) = self.sessions[slot as usize].as_mut() else {
            return;
        };
        if let Some(index) = session
            .in_flight
            .iter()
            .position(|f| f.client_seq == client_seq)
        {
            session.in_flight.remove(index);
        }
    }

    /// A half-closed connection closes once its session's last input is answered.
    fn close_if_answered(&mut self, slot: u32) {
        let Some(session) = self.sessions[slot as usize].as_ref() else {
            return;
        };
        let Some(id) = session.connection.filter(|_| session.in_flight.is_empty()) else {
            return;
        };
        if self.connections.get(id).is_some_and(|c| c.peer_closed) {
            self.connections.close_after_flush(id);
            self.dirty.push(id);
        }
    }

    /// The pipeline's input queue was full: the submission is answered `overloaded`; a
    /// cancel-on-disconnect input is kept and offered again instead (it has nobody to tell).
    pub fn refused(&mut self, submission: Submission, now_ns: u64) {
        if submission.client == CANCEL_ON_DISCONNECT {
            self.retry.push(submission);
            return;
        }
        let Some(slot) = self.origin(submission.client) else {
            return;
        };
        let session = self.sessions[slot as usize]
            .as_mut()
            .expect("origin exists");
        // It was the newest in flight for this session.
        if let Some(index) = session
            .in_flight
            .iter()
            .rposition(|f| f.client_seq == submission.client.tag)
        {
            session.in_flight.remove(index);
        }
        let kind = match submission.command {
            Command::Place(_) => NewOrder::KIND,
            Command::Cancel { .. } => Cancel::KIND,
            Command::Modify { .. } => CancelReplace::KIND,
            _ => MassCancel::KIND,
        };
        self.session_reject(
            slot,
            submission.client.tag,
            kind,
            RejectCode::Overloaded,
            now_ns,
        );
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

    /// The peer closed its side: once the session's inputs in flight are answered (their
    /// results and `Sequenced` queued), write what is pending, then close.
    pub fn close_after_flush(&mut self, id: ConnId) {
        let waiting = match self.connections.get(id).map(|c| &c.state) {
            Some(ConnState::LoggedIn { session }) => self.sessions[*session as usize]
                .as_ref()
                .is_some_and(|s| !s.in_flight.is_empty()),
            _ => false,
        };
        if waiting {
            if let Some(connection) = self.connections.get_mut(id) {
                connection.peer_closed = true;
            }
            return;
        }
        self.connections.close_after_flush(id);
        self.dirty.push(id);
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Number of sessions held (connected or lingering).
    pub fn session_count(&self) -> usize {
        self.by_key.len()
    }

    // ---- pipeline outputs --------------------------------------------------------------

    /// Turns a pipeline output into replies for the sessions it concerns.
    pub fn on_output(&mut self, output: &Output, now_ns: u64) {
        match *output {
            Output::Event { client, seq, event } => self.on_event(client, seq, event, now_ns),
            Output::Sequenced {
                client,
                seq,
                height,
                ..
            } => {
                let Some(slot) = self.origin(client) else {
                    return;
                };
                self.forget_in_flight(slot, client.tag);
                let mut message: Sequenced = blank(0);
                message.client_seq = client.tag.into();
                message.seq = seq.into();
                message.height = height.into();
                self.send_app(slot, message, now_ns);
                self.close_if_answered(slot);
            }
            Output::Finalized {
                client,
                seq,
                height,
            } => {
                let Some(slot) = self.origin(client) else {
                    return;
                };
                let mut message: Finalized = blank(0);
                message.client_seq = client.tag.into();
                message.seq = seq.into();
                message.height = height.into();
                self.send_app(slot, message, now_ns);
            }
            Output::Call {
                client,
                seq,
                action,
                coprocessor,
                result,
            } => {
                let Some(slot) = self.origin(client) else {
                    return;
                };
                let mut message: CallResult = blank(0);
                message.client_seq = client.tag.into();
                message.seq = seq.into();
                message.coprocessor = coprocessor.into();
                message.action = action.into();
                match result {
                    Ok(answer) => message.result = answer,
                    Err(code) => {
                        message.status = CALL_REFUSED;
                        let bytes = &code.as_bytes()[..code.len().min(32)];
                        message.result[..bytes.len()].copy_from_slice(bytes);
                    }
                }
                self.send_app(slot, message, now_ns);
            }
            Output::Level { .. }
            | Output::BlockExecuted { .. }
            | Output::BlockDurable { .. }
            | Output::Fatal(_) => {}
        }
    }

    /// The session slot that sent an input, if it was this gateway and the session lives.
    fn origin(&self, client: ClientRef) -> Option<u32> {
        if client.connection & GATEWAY_CLIENT_BIT == 0 {
            return None;
        }
        let slot = (client.connection & 0xffff_ffff) as u32;
        let generation = ((client.connection >> 32) & 0x7fff_ffff) as u32;
        match self.sessions.get(slot as usize) {
            Some(Some(session)) if session.generation == generation => Some(slot),
            _ => None,
        }
    }

    fn on_event(&mut self, client: ClientRef, seq: u64, event: Event, now_ns: u64) {
        let origin = self.origin(client);
        let reply_seq = |slot: u32| {
            if origin == Some(slot) {
                client.tag
            } else {
                0
            }
        };
        match event {
            Event::Rejected { oid, reason, .. } => {
                // A refusal changes nothing: only the sender hears of it.
                let Some(slot) = origin else { return };
                let (market, oid) = self.sessions[slot as usize]
                    .as_ref()
                    .and_then(|s| s.in_flight.iter().find(|f| f.client_seq == client.tag))
                    .map_or((0, oid.unwrap_or(0)), |f| f.refused(oid));
                let mut message: OrderRejected = blank(0);
                message.client_seq = client.tag.into();
                message.seq = seq.into();
                message.oid = oid.into();
                message.market = market.into();
                message.reason = engine_reject_code(reason).into();
                self.send_app(slot, message, now_ns);
            }
            Event::Accepted {
                market,
                account,
                oid,
            } => {
                for index in 0.. {
                    let Some(slot) = self.session_at(account, index) else {
                        break;
                    };
                    let mut message: OrderAccepted = blank(0);
                    message.client_seq = reply_seq(slot).into();
                    message.seq = seq.into();
                    message.oid = oid.into();
                    message.market = market.into();
                    self.send_app(slot, message, now_ns);
                }
            }
            Event::Fill {
                market,
                taker_account,
                taker_oid,
                maker_account,
                maker_oid,
                taker_side,
                price,
                qty,
                taker_fee,
                maker_fee,
                taker_left,
                maker_left,
            } => {
                if self.fill_seq != seq {
                    self.fill_seq = seq;
                    self.fill_index = 0;
                }
                let match_index = self.fill_index;
                self.fill_index += 1;
                let parties = [
                    (
                        taker_account,
                        taker_oid,
                        taker_side,
                        2u8,
                        taker_fee,
                        taker_left,
                    ),
                    (
                        maker_account,
                        maker_oid,
                        taker_side.opposite(),
                        1u8,
                        maker_fee,
                        maker_left,
                    ),
                ];
                for (account, oid, side, liquidity, fee, leaves) in parties {
                    for index in 0.. {
                        let Some(slot) = self.session_at(account, index) else {
                            break;
                        };
                        let mut message: Fill = blank(0);
                        // Only the taker's fill answers the sender's message.
                        message.client_seq =
                            if liquidity == 2 { reply_seq(slot) } else { 0 }.into();
                        message.seq = seq.into();
                        message.oid = oid.into();
                        message.market = market.into();
                        message.side = side.code();
                        message.liquidity = liquidity;
                        message.price = price.into();
                        message.qty = qty.into();
                        message.fee = fee.into();
                        message.leaves = leaves.into();
                        message.match_index = match_index.into();
                        self.send_app(slot, message, now_ns);
                    }
                }
            }
            Event::Canceled {
                market,
                account,
                oid,
                remaining,
                reason,
            } => {
                for index in 0.. {
                    let Some(slot) = self.session_at(account, index) else {
                        break;
                    };
                    let mut message: Canceled = blank(0);
                    message.client_seq = reply_seq(slot).into();
                    message.seq = seq.into();
                    message.oid = oid.into();
                    message.market = market.into();
                    message.reason = cancel_reason_code(reason);
                    message.remaining = remaining.into();
                    self.send_app(slot, message, now_ns);
                }
            }
            Event::Modified {
                market,
                account,
                oid,
                price,
                qty,
            } => {
                for index in 0.. {
                    let Some(slot) = self.session_at(account, index) else {
                        break;
                    };
                    let mut message: Replaced = blank(0);
                    message.client_seq = reply_seq(slot).into();
                    message.seq = seq.into();
                    message.oid = oid.into();
                    message.market = market.into();
                    message.price = price.into();
                    message.qty = qty.into();
                    self.send_app(slot, message, now_ns);
                }
            }
            Event::Position {
                account,
                market,
                size,
                open_notional,
                realized_pnl,
                funding_paid,
            } => {
                for index in 0.. {
                    let Some(slot) = self.session_at(account, index) else {
                        break;
                    };
                    let mut message: PositionUpdate = blank(0);
                    message.client_seq = reply_seq(slot).into();
                    message.seq = seq.into();
                    message.market = market.into();
                    message.size = size.into();
                    message.open_notional = open_notional.into();
                    message.realized_pnl = realized_pnl.into();
                    message.funding_paid = funding_paid.into();
                    self.send_app(slot, message, now_ns);
                }
            }
            Event::Liquidation {
                account,
                market,
                step,
                lots,
                notional,
                fee,
                bad_debt,
            } => {
                for index in 0.. {
                    let Some(slot) = self.session_at(account, index) else {
                        break;
                    };
                    let mut message: Liquidation = blank(0);
                    message.client_seq = reply_seq(slot).into();
                    message.seq = seq.into();
                    message.market = market.into();
                    message.step = liquidation_step_code(step);
                    message.lots = lots.into();
                    message.notional = notional.into();
                    message.fee = fee.into();
                    message.bad_debt = bad_debt.into();
                    self.send_app(slot, message, now_ns);
                }
            }
            Event::Adl {
                account,
                market,
                lots,
                notional,
            } => {
                for index in 0.. {
                    let Some(slot) = self.session_at(account, index) else {
                        break;
                    };
                    let mut message: Deleveraged = blank(0);
                    message.client_seq = reply_seq(slot).into();
                    message.seq = seq.into();
                    message.market = market.into();
                    message.lots = lots.into();
                    message.notional = notional.into();
                    self.send_app(slot, message, now_ns);
                }
            }
            // Per market, not per account: the market-data feed publishes them.
            Event::OraclePrice { .. } | Event::Funding { .. } => {}
        }
    }

    /// The `index`-th session of an account. Routing walks sessions by index so that it
    /// allocates nothing per event (sending never adds or drops sessions).
    fn session_at(&self, account: u64, index: usize) -> Option<u32> {
        self.by_account.get(&account)?.get(index).copied()
    }

    // ---- client messages ---------------------------------------------------------------

    fn handle_frame(&mut self, id: ConnId, frame: &[u8], now_ns: u64) {
        let header = match wire::check_frame(frame) {
            Ok(header) => *header,
            Err(code) => {
                let (seq, kind) = (
                    u64::from_le_bytes(frame[8..16].try_into().unwrap_or([0; 8])),
                    frame[2],
                );
                self.connection_reject(id, seq, kind, code, now_ns);
                return;
            }
        };
        let session = match self.connections.get(id).map(|c| &c.state) {
            Some(ConnState::LoggedIn { session }) => Some(*session),
            Some(ConnState::AwaitingLogin { .. }) => None,
            None => return,
        };
        match (header.kind, session) {
            (Heartbeat::KIND, _) => {}
            (Login::KIND, None) => {
                let login = *view::<Login>(frame).expect("length checked");
                self.login(id, &login, now_ns);
            }
            (Login::KIND, Some(_)) => self.connection_reject(
                id,
                header.seq.get(),
                header.kind,
                RejectCode::AlreadyLoggedIn,
                now_ns,
            ),
            (Logout::KIND, _) => self.logout(id, LogoutReason::Requested, now_ns),
            (
                NewOrder::KIND
                | Cancel::KIND
                | CancelReplace::KIND
                | MassCancel::KIND
                | wire::TRANSACTION_KIND,
                None,
            ) => self.connection_reject(
                id,
                header.seq.get(),
                header.kind,
                RejectCode::NotLoggedIn,
                now_ns,
            ),
            (
                NewOrder::KIND
                | Cancel::KIND
                | CancelReplace::KIND
                | MassCancel::KIND
                | wire::TRANSACTION_KIND,
                Some(slot),
            ) => self.application(id, slot, &header, frame, now_ns),
            // Kinds of other directions or of the market-data port.
            _ => self.connection_reject(
                id,
                header.seq.get(),
                header.kind,
                RejectCode::UnknownKind,
                now_ns,
            ),
        }
    }

    fn login(&mut self, id: ConnId, login: &Login, now_ns: u64) {
        let Some(Connection {
            state: ConnState::AwaitingLogin { nonce, .. },
            ..
        }) = self.connections.get(id)
        else {
            return;
        };
        let nonce = *nonce;
        let session_id = login.session_id.get();
        let resume_from = login.resume_from.get();
        let flags = login.flags.get();
        let heartbeat_ms = login.heartbeat_ms.get().clamp(100, 60_000);
        let Some(key) = canonical_key(&login.public_key) else {
            return self.login_reject(id, LoginRejectReason::BadKey, now_ns);
        };
        let signed = wire::login_signing_bytes(
            &nonce,
            &login.public_key,
            session_id,
            resume_from,
            login.heartbeat_ms.get(),
            flags,
        );
        let signature = Signature::from_bytes(&login.signature);
        // Strict: refuses weak (small-order) keys and non-canonical signatures.
        if key.verify_strict(&signed, &signature).is_err() {
            return self.login_reject(id, LoginRejectReason::BadSignature, now_ns);
        }
        let account = wire::account_id_of(&login.public_key);
        let existing = self.by_key.get(&(account, session_id)).copied();
        // A new session would start at server seq 1 with nothing kept.
        let (next_server_seq, oldest) = existing.map_or((1, 1), |slot| {
            let session = self.sessions[slot as usize].as_ref().expect("live session");
            let next = session.next_server_seq;
            (next, next - session.resend.len() as u64)
        });
        if resume_from != 0 {
            if resume_from > next_server_seq {
                return self.login_reject(id, LoginRejectReason::InvalidResume, now_ns);
            }
            if resume_from < oldest {
                return self.login_reject(id, LoginRejectReason::ResendUnavailable, now_ns);
            }
        }
        let slot = match existing {
            Some(slot) => slot,
            None => match self.new_session(account, session_id) {
                Some(slot) => slot,
                None => return self.login_reject(id, LoginRejectReason::TooManySessions, now_ns),
            },
        };
        let session = self.sessions[slot as usize].as_ref().expect("live session");
        // A live connection on this session loses it to the new, authenticated one.
        if let Some(previous) = session.connection {
            if let Some(connection) = self.connections.get_mut(previous) {
                connection.state = ConnState::AwaitingLogin {
                    nonce: [0; 32],
                    deadline_ns: 0,
                };
            }
            self.logout(previous, LogoutReason::TakenOver, now_ns);
        }
        // On a chain nobody may sign the cancels for the account: the flag is not in force.
        let flags = match self.config.chain_id {
            Some(_) => flags & !FLAG_CANCEL_ON_DISCONNECT,
            None => flags,
        };
        let session = self.sessions[slot as usize].as_mut().expect("live session");
        session.connection = Some(id);
        session.flags = flags;
        session.heartbeat_ns = heartbeat_ms as u64 * 1_000_000;
        let mut accepted: LoginAccepted = blank(0);
        accepted.account = account.into();
        accepted.session_id = session_id.into();
        accepted.next_client_seq = session.next_client_seq.into();
        accepted.next_server_seq = session.next_server_seq.into();
        accepted.heartbeat_ms = heartbeat_ms.into();
        let chain_flag = self.config.chain_id.map_or(0, |_| FLAG_CHAIN);
        accepted.flags = (flags | chain_flag).into();
        let resend: Vec<Stored> = if resume_from == 0 {
            Vec::new()
        } else {
            let skip = (resume_from - oldest) as usize;
            session.resend.iter().skip(skip).copied().collect()
        };
        if let Some(connection) = self.connections.get_mut(id) {
            connection.state = ConnState::LoggedIn { session: slot };
        }
        self.send_raw(id, accepted.as_bytes(), now_ns);
        if let Some(chain_id) = self.config.chain_id {
            let mut info: ChainInfo = blank(0);
            info.chain_id = chain_id;
            info.height = self.chain_tip.0.into();
            info.block_time_ms = self.chain_tip.1.into();
            self.send_raw(id, info.as_bytes(), now_ns);
        }
        for stored in resend {
            self.send_raw(id, &stored.bytes[..stored.length as usize], now_ns);
        }
    }

    /// The session disconnected longest among `slots` (connected ones never go).
    fn longest_gone(&self, slots: impl Iterator<Item = u32>) -> Option<u32> {
        slots
            .filter_map(|slot| {
                self.sessions[slot as usize]
                    .as_ref()
                    .filter(|s| s.connection.is_none())
                    .map(|s| (s.disconnected_at_ns, slot))
            })
            .min()
            .map(|(_, slot)| slot)
    }

    fn new_session(&mut self, account: u64, session_id: u64) -> Option<u32> {
        let own = self.by_account.get(&account).cloned().unwrap_or_default();
        if own.len() >= self.config.max_sessions_per_account {
            let victim = self.longest_gone(own.into_iter())?;
            self.drop_session(victim);
        }
        if self.by_key.len() >= self.config.max_sessions {
            // Make room by dropping the session that has been disconnected longest.
            let victim = self.longest_gone(0..self.sessions.len() as u32)?;
            self.drop_session(victim);
        }
        let slot = match self.sessions.iter().position(Option::is_none) {
            Some(slot) => slot,
            None => {
                self.sessions.push(None);
                self.session_generations.push(0);
                self.sessions.len() - 1
            }
        };
        let generation = &mut self.session_generations[slot];
        *generation = (*generation + 1) & 0x7fff_ffff;
        self.sessions[slot] = Some(Session {
            account,
            session_id,
            generation: *generation,
            connection: None,
            next_client_seq: 1,
            next_server_seq: 1,
            resend: VecDeque::new(),
            flags: 0,
            heartbeat_ns: 1_000_000_000,
            in_flight: VecDeque::new(),
            disconnected_at_ns: 0,
        });
        self.by_key.insert((account, session_id), slot as u32);
        self.by_account
            .entry(account)
            .or_default()
            .push(slot as u32);
        self.trim_resend();
        Some(slot as u32)
    }

    /// Cuts every session's resend window to the current cap (one more session held makes
    /// it smaller), so the windows together stay within `max_resend_total`.
    fn trim_resend(&mut self) {
        let cap = resend_cap(&self.config, self.by_key.len());
        for session in self.sessions.iter_mut().flatten() {
            if session.resend.len() > cap {
                let excess = session.resend.len() - cap;
                session.resend.drain(..excess);
                session.resend.shrink_to(cap);
            }
        }
    }

    fn drop_session(&mut self, slot: u32) {
        let Some(session) = self.sessions[slot as usize].take() else {
            return;
        };
        self.by_key.remove(&(session.account, session.session_id));
        if let Some(slots) = self.by_account.get_mut(&session.account) {
            slots.retain(|&s| s != slot);
            if slots.is_empty() {
                self.by_account.remove(&session.account);
            }
        }
    }

    /// An order message from a logged-in session: sequence check, field check, submission.
    fn application(&mut self, id: ConnId, slot: u32, header: &Header, frame: &[u8], now_ns: u64) {
        let session = self.sessions[slot as usize]
            .as_mut()
            .expect("logged-in session");
        let client_seq = header.seq.get();
        if client_seq < session.next_client_seq {
            return self.session_reject(
                slot,
                client_seq,
                header.kind,
                RejectCode::DuplicateSeq,
                now_ns,
            );
        }
        if client_seq > session.next_client_seq {
            return self.session_reject(slot, client_seq, header.kind, RejectCode::SeqGap, now_ns);
        }
        session.next_client_seq += 1;
        let account = session.account;
        match (
            header.kind == wire::TRANSACTION_KIND,
            self.config.chain_id.is_some(),
        ) {
            (true, true) => return self.transaction(id, slot, client_seq, frame, now_ns),
            (false, false) => {}
            (kind_is_tx, _) => {
                let code = match kind_is_tx {
                    true => RejectCode::TransactionsUnsupported,
                    false => RejectCode::SignatureRequired,
                };
                return self.session_reject(slot, client_seq, header.kind, code, now_ns);
            }
        }
        let parsed = match header.kind {
            NewOrder::KIND => parse_new_order(account, view::<NewOrder>(frame).expect("checked")),
            Cancel::KIND => {
                let m = view::<Cancel>(frame).expect("checked");
                Some((
                    Command::Cancel {
                        account,
                        market: m.market.get(),
                        oid: m.oid.get(),
                    },
                    m.market.get(),
                    m.oid.get(),
                ))
            }
            CancelReplace::KIND => {
                let m = view::<CancelReplace>(frame).expect("checked");
                Some((
                    Command::Modify {
                        account,
                        market: m.market.get(),
                        oid: m.oid.get(),
                        price: m.price.get(),
                        qty: m.qty.get(),
                    },
                    m.market.get(),
                    m.oid.get(),
                ))
            }
            _ => {
                let m = view::<MassCancel>(frame).expect("checked");
                Some((
                    Command::CancelAll {
                        account,
                        market: m.market.get(),
                    },
                    m.market.get(),
                    0,
                ))
            }
        };
        let Some((command, market, oid)) = parsed else {
            return self.session_reject(
                slot,
                client_seq,
                header.kind,
                RejectCode::InvalidField,
                now_ns,
            );
        };
        if let Some(connection) = self.connections.get_mut(id) {
            connection.consecutive_rejects = 0;
        }
        let session = self.sessions[slot as usize]
            .as_mut()
            .expect("logged-in session");
        session.in_flight.push_back(InFlight {
            client_seq,
            market,
            oid,
            targets: Vec::new(),
        });
        self.submissions.push(Submission {
            client: client_ref(slot, session.generation, client_seq),
            command,
            received_ns: now_ns,
        });
    }

    /// A signed transaction from a logged-in session (seq checked): it must be the session's
    /// own account's; the mempool checks everything else and answers through
    /// [`OrderEntry::transaction_status`].
    fn transaction(&mut self, id: ConnId, slot: u32, client_seq: u64, frame: &[u8], now_ns: u64) {
        let bytes = wire::transaction_bytes(frame);
        let session = self.sessions[slot as usize]
            .as_mut()
            .expect("logged-in session");
        let signer: [u8; 32] = bytes[36..68].try_into().expect("length checked");
        if transactions::account_id_of(&signer) != session.account {
            let code = RejectCode::SignerMismatch;
            return self.session_reject(slot, client_seq, wire::TRANSACTION_KIND, code, now_ns);
        }
        let targets = transactions::SignedTransaction::decode(bytes)
            .map(|tx| tx.tx.actions.iter().filter_map(action_target).collect())
            .unwrap_or_default();
        session.in_flight.push_back(InFlight {
            client_seq,
            market: 0,
            oid: 0,
            targets,
        });
        let client = client_ref(slot, session.generation, client_seq);
        if let Some(connection) = self.connections.get_mut(id) {
            connection.consecutive_rejects = 0;
        }
        self.transactions.push(TxSubmission {
            client,
            bytes: bytes.to_vec(),
        });
    }

    // ---- replies -----------------------------------------------------------------------

    /// Sends an application message: numbered, kept for resend, written if connected.
    fn send_app<M: Message>(&mut self, slot: u32, mut message: M, now_ns: u64) {
        let Some(session) = self.sessions[slot as usize].as_mut() else {
            return;
        };
        message.header_mut().seq = session.next_server_seq.into();
        session.next_server_seq += 1;
        let bytes = message.as_bytes();
        let mut stored = Stored {
            length: bytes.len() as u8,
            bytes: [0; MAX_STORED_BYTES],
        };
        stored.bytes[..bytes.len()].copy_from_slice(bytes);
        let cap = resend_cap(&self.config, self.by_key.len());
        while session.resend.len() >= cap.max(1) {
            session.resend.pop_front();
        }
        if cap > 0 {
            session.resend.push_back(stored);
        }
        if let Some(id) = session.connection {
            self.send_raw(id, message.as_bytes(), now_ns);
        }
    }

    fn send_raw(&mut self, id: ConnId, bytes: &[u8], now_ns: u64) {
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
        if pending > self.config.max_pending_bytes {
            self.drop_slow_consumer(id, now_ns);
        }
        let limit = self.config.max_unsent_total_bytes;
        while let Some((slowest, closing)) = self.connections.shed_over(limit) {
            if !closing {
                self.logout(slowest, LogoutReason::SlowConsumer, now_ns);
            }
        }
        self.dirty.push(id);
    }

    /// A connection that does not read: drops what is queued on it (its session keeps it
    /// for resend) and logs it out.
    fn drop_slow_consumer(&mut self, id: ConnId, now_ns: u64) {
        self.connections.drop_unsent(id);
        self.logout(id, LogoutReason::SlowConsumer, now_ns);
    }

    /// A refusal on a logged-in session (numbered, kept for resend).
    fn session_reject(
        &mut self,
        slot: u32,
        ref_seq: u64,
        ref_kind: u8,
        code: RejectCode,
        now_ns: u64,
    ) {
        let mut reject: Reject = blank(0);
        reject.ref_seq = ref_seq.into();
        reject.ref_kind = ref_kind;
        reject.reason = code.code().into();
        let connection = self.sessions[slot as usize]
            .as_ref()
            .and_then(|s| s.connection);
        self.send_app(slot, reject, now_ns);
        if let Some(id) = connection {
            self.count_reject(id, now_ns);
        }
    }

    /// A refusal on a connection: numbered in its session if logged in, else unnumbered.
    fn connection_reject(
        &mut self,
        id: ConnId,
        ref_seq: u64,
        ref_kind: u8,
        code: RejectCode,
        now_ns: u64,
    ) {
        if let Some(Connection {
            state: ConnState::LoggedIn { session },
            ..
        }) = self.connections.get(id)
        {
            return self.session_reject(*session, ref_seq, ref_kind, code, now_ns);
        }
        let mut reject: Reject = blank(0);
        reject.ref_seq = ref_seq.into();
        reject.ref_kind = ref_kind;
        reject.reason = code.code().into();
        self.send_raw(id, reject.as_bytes(), now_ns);
        self.count_reject(id, now_ns);
    }

    fn count_reject(&mut self, id: ConnId, now_ns: u64) {
        let Some(connection) = self.connections.get_mut(id) else {
            return;
        };
        connection.consecutive_rejects += 1;
        if connection.consecutive_rejects > self.config.max_consecutive_rejects {
            self.logout(id, LogoutReason::TooManyRejects, now_ns);
        }
    }

    fn login_reject(&mut self, id: ConnId, reason: LoginRejectReason, now_ns: u64) {
        let mut reject: LoginRejected = blank(0);
        reject.reason = reason.code().into();
        self.send_raw(id, reject.as_bytes(), now_ns);
        if let Some(connection) = self.connections.get_mut(id) {
            connection.buffers.closing = true;
        }
    }

    /// Sends a [`ServerLogout`] and marks the connection for closing. The session stays for a
    /// resume (and cancels on disconnect if it asked to, when the connection is closed).
    fn logout(&mut self, id: ConnId, reason: LogoutReason, now_ns: u64) {
        let mut logout: ServerLogout = blank(0);
        logout.reason = reason.code().into();
        if let Some(connection) = self.connections.get_mut(id) {
            connection.last_sent_ns = now_ns;
        }
        // The session lets go of the connection in `disconnected`, once the shell has
        // closed it.
        self.connections.queue_last(id, logout.as_bytes());
        self.dirty.push(id);
    }

    /// First step of a node stop: queues the cancel-on-disconnect inputs of every connected
    /// session that asked for them (one set per account), and logs nobody out. The node then
    /// runs them through the pipeline and routes their results while every connection is
    /// still open, so their `Canceled` messages reach every session of the account (and its
    /// resend window) like any other cancel; then [`OrderEntry::shutdown`] logs everyone
    /// out. Calling it again does nothing.
    pub fn cancel_on_shutdown(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        let mut cancels = Vec::new();
        for id in self.connections.ids() {
            if let Some(Connection {
                state: ConnState::LoggedIn { session },
                ..
            }) = self.connections.get(id)
            {
                if let Some(s) = self.sessions[*session as usize].as_ref() {
                    // Closing ones too: their `disconnected` will not queue them any more.
                    if s.connection == Some(id) && s.flags & FLAG_CANCEL_ON_DISCONNECT != 0 {
                        cancels.push(s.account);
                    }
                }
            }
        }
        cancels.sort_unstable();
        cancels.dedup();
        for account in cancels {
            self.cancel_on_disconnect(account);
        }
    }

    /// Tells every connection the node is stopping (`ServerLogout` `shutdown`). Queues the
    /// cancel-on-disconnect inputs first if [`OrderEntry::cancel_on_shutdown`] has not (the
    /// node submits them before it stops; their `Canceled` messages then only reach the
    /// resend windows, since every connection is closing).
    pub fn shutdown(&mut self, now_ns: u64) {
        self.cancel_on_shutdown();
        for id in self.connections.ids() {
            if !self.is_closing(id) {
                self.logout(id, LogoutReason::Shutdown, now_ns);
            }
        }
    }
}

/// The (market, oid) an action concerns (oid 0 for a cancel-all), if it names a market.
fn action_target(action: &transactions::Action) -> Option<(MarketId, u64)> {
    use transactions::Action;
    match *action {
        Action::Place { market, oid, .. }
        | Action::Cancel { market, oid }
        | Action::Modify { market, oid, .. } => Some((market, oid)),
        Action::CancelAll { market } => Some((market, 0)),
        _ => None,
    }
}

/// The key of a [`Login`], or `None` if no signature by it can ever be accepted: the 32 bytes
/// are not a point's RFC 8032 encoding (section 5.1.3: no square root, `y >= p`, or `x = 0`
/// with the sign bit set; the library decodes the last two leniently, so the point must
/// re-encode to exactly these bytes), or the point has small order (a weak key, refused by
/// strict verification whatever the signature).
fn canonical_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    let key = VerifyingKey::from_bytes(bytes).ok()?;
    let canonical = key.to_edwards().compress().to_bytes() == *bytes;
    (canonical && !key.is_weak()).then_some(key)
}

/// The engine command of a [`NewOrder`], or `None` if an enumerated field is out of range.
fn parse_new_order(account: u64, m: &wire::NewOrder) -> Option<(Command, MarketId, u64)> {
    let side = Side::from_code(m.side)?;
    let tif = TimeInForce::from_code(m.tif)?;
    let stp = SelfTradePrevention::from_code(m.stp)?;
    let reduce_only = m.order_type & ORDER_TYPE_REDUCE_ONLY != 0;
    let price = match m.order_type & !ORDER_TYPE_REDUCE_ONLY {
        ORDER_TYPE_LIMIT => Some(m.price.get()),
        ORDER_TYPE_MARKET => None,
        _ => return None,
    };
    let order = engine::NewOrder {
        account,
        market: m.market.get(),
        oid: m.oid.get(),
        side,
        price,
        qty: m.qty.get(),
        tif,
        stp,
        reduce_only,
    };
    Some((Command::Place(order), order.market, order.oid))
}
