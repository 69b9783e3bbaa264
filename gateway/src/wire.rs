//! The binary wire format: fixed-layout little-endian messages, read and written in place with
//! `zerocopy` (no parsing step, no allocation).
//!
//! Every message is one struct whose first 16 bytes are a [`Header`]; its `length` is the size
//! of the whole struct, fixed per kind. docs/protocol.md is the byte-by-byte specification;
//! the offsets there are checked against these structs by the tests at the end of this file.

use engine::{CancelReason, LiquidationStep, RejectReason};
use zerocopy::byteorder::little_endian::{I128, I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Protocol version carried in every header.
pub const VERSION: u8 = 1;
/// Size of [`Header`].
pub const HEADER_BYTES: usize = 16;
/// No fixed-size message is longer than this.
pub const MAX_MESSAGE_BYTES: usize = 256;
/// The one variable-size message: [`TRANSACTION_KIND`], a header then a signed transaction
/// (docs/transactions.md), client to order entry on a chain.
pub const TRANSACTION_KIND: u8 = 14;
/// No frame is longer than this (a header and the longest signed transaction); a header
/// announcing more is a framing error.
pub const MAX_FRAME_BYTES: usize = HEADER_BYTES + transactions::MAX_TX_LEN;
/// [`TransactionStatus::status`]: the validator took it into its mempool.
pub const TX_ADMITTED: u8 = 1;
/// [`TransactionStatus::status`]: it was not taken (see `code`); nothing happened.
pub const TX_REFUSED: u8 = 2;
/// [`TransactionStatus::status`]: it left the mempool unexecuted (see `code`) and never will be.
pub const TX_EVICTED: u8 = 3;
/// [`CallResult::status`]: the co-processor answered; `result` is its answer.
pub const CALL_OK: u8 = 0;
/// [`CallResult::status`]: the call was refused; `result` holds the refusal's code.
pub const CALL_REFUSED: u8 = 1;
/// `market` value meaning "every market" in [`Subscribe`].
pub const ALL_MARKETS: u32 = u32::MAX;
/// [`NewOrder::order_type`] low bits: a limit order.
pub const ORDER_TYPE_LIMIT: u8 = 0;
/// [`NewOrder::order_type`] low bits: a market order (price ignored, IOC only).
pub const ORDER_TYPE_MARKET: u8 = 1;
/// [`NewOrder::order_type`] bit 7: the order is reduce-only (perp markets; see
/// docs/protocol.md). Bits 1-6 must be zero.
pub const ORDER_TYPE_REDUCE_ONLY: u8 = 0x80;

/// The 16 bytes that start every message.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct Header {
    /// Size of the whole message in bytes, header included.
    pub length: U16,
    /// Message kind (the `KIND` of each message struct).
    pub kind: u8,
    /// Protocol version: [`VERSION`].
    pub version: u8,
    /// Zero when sent; ignored when received.
    pub reserved: U32,
    /// Session sequence number (see docs/protocol.md, "Sequence numbers"); 0 on session-level
    /// messages and on the market-data port.
    pub seq: U64,
}

impl Header {
    /// A header for a message of `kind` and `length` bytes.
    pub fn new(kind: u8, length: usize, seq: u64) -> Header {
        Header {
            length: U16::new(length as u16),
            kind,
            version: VERSION,
            reserved: U32::ZERO,
            seq: U64::new(seq),
        }
    }
}

/// A fixed-layout message.
pub trait Message: FromBytes + IntoBytes + KnownLayout + Immutable + Unaligned + Copy {
    /// The header's `kind` for this message.
    const KIND: u8;
    /// The message's one valid length.
    const BYTES: usize = std::mem::size_of::<Self>();
    /// Its header.
    fn header(&self) -> &Header;
    /// Its header, to set the sequence number.
    fn header_mut(&mut self) -> &mut Header;
}

/// Declares message structs: a header then the listed fields, `repr(C)`, no padding (every
/// field is a byte array or an unaligned little-endian integer).
macro_rules! messages {
    ($(
        $(#[$meta:meta])*
        $name:ident = $kind:literal, $bytes:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
        #[repr(C)]
        pub struct $name {
            /// The common header.
            pub header: Header,
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Message for $name {
            const KIND: u8 = $kind;
            fn header(&self) -> &Header {
                &self.header
            }
            fn header_mut(&mut self) -> &mut Header {
                &mut self.header
            }
        }

        const _: () = assert!(std::mem::size_of::<$name>() == $bytes);
        const _: () = assert!($bytes <= MAX_MESSAGE_BYTES);
    )*};
}

messages! {
    // ---- client to order-entry port ----------------------------------------------------

    /// Proves ownership of an account key and opens (or resumes) a session.
    Login = 1, 144 {
        /// The account's ed25519 public key; the account id is derived from it.
        public_key: [u8; 32],
        /// ed25519 signature over [`login_signing_bytes`].
        signature: [u8; 64],
        /// The client's name for this session (any value; resuming uses the same one).
        session_id: U64,
        /// First server sequence number to resend; 0 = resend nothing.
        resume_from: U64,
        /// Requested heartbeat interval in ms (clamped to 100..=60_000).
        heartbeat_ms: U32,
        /// Bit 0: cancel every open order of the account when this session's connection drops.
        flags: U32,
        /// Zero.
        reserved: [u8; 8],
    }

    /// Ends the session politely.
    Logout = 2, 24 {
        /// [`LogoutReason`] code (clients send 0).
        reason: U16,
        /// Zero.
        reserved: [u8; 6],
    }

    /// Keeps an idle connection alive (both directions use this kind on the order port).
    Heartbeat = 3, 24 {
        /// The sender's clock in ns, informational.
        timestamp_ns: U64,
    }

    /// A new order.
    NewOrder = 10, 48 {
        /// Market id.
        market: U32,
        /// 0 buy, 1 sell.
        side: u8,
        /// 0 GTC, 1 IOC, 2 FOK, 3 ALO (post-only).
        tif: u8,
        /// Self-trade prevention: 0 cancel maker, 1 cancel taker, 2 cancel both.
        stp: u8,
        /// Bits 0-6: 0 limit, 1 market (price ignored; must be IOC); bit 7
        /// ([`ORDER_TYPE_REDUCE_ONLY`]): reduce-only. Any other value is `invalid_field`.
        order_type: u8,
        /// Client order id, unique among the account's open orders.
        oid: U64,
        /// Limit price in ticks.
        price: I64,
        /// Size in lots.
        qty: I64,
    }

    /// Cancel one open order.
    Cancel = 11, 32 {
        /// Market id.
        market: U32,
        /// Zero.
        reserved: U32,
        /// The order's client order id.
        oid: U64,
    }

    /// Change an open order's price and size (same price and smaller size keeps priority).
    CancelReplace = 12, 48 {
        /// Market id.
        market: U32,
        /// Zero.
        reserved: U32,
        /// The order's client order id (kept).
        oid: U64,
        /// New limit price in ticks.
        price: I64,
        /// New remaining size in lots.
        qty: I64,
    }

    /// Cancel every open order of the account in one market.
    MassCancel = 13, 24 {
        /// Market id.
        market: U32,
        /// Zero.
        reserved: U32,
    }

    // ---- order-entry port to client ----------------------------------------------------

    /// Sent by the server as soon as a connection opens: the nonce the login must sign.
    Challenge = 100, 56 {
        /// Random bytes, fresh per connection.
        nonce: [u8; 32],
        /// Server clock, ns since the Unix epoch.
        server_time_ns: U64,
    }

    /// The login succeeded.
    LoginAccepted = 101, 56 {
        /// The account this session acts for.
        account: U64,
        /// The session id (as sent).
        session_id: U64,
        /// Sequence number the server expects on the client's next application message.
        next_client_seq: U64,
        /// Sequence number of the server's next new application message; resent messages
        /// (`resume_from` up to this, exclusive) follow this message first.
        next_server_seq: U64,
        /// The heartbeat interval in force, ms.
        heartbeat_ms: U32,
        /// Login flags in force.
        flags: U32,
    }

    /// The login failed; the server closes the connection after this.
    LoginRejected = 102, 24 {
        /// [`LoginRejectReason`] code.
        reason: U16,
        /// Zero.
        reserved: [u8; 6],
    }

    /// The server ends the session; it closes the connection after this.
    ServerLogout = 103, 24 {
        /// [`LogoutReason`] code.
        reason: U16,
        /// Zero.
        reserved: [u8; 6],
    }

    /// Server heartbeat (order-entry and market-data ports).
    ServerHeartbeat = 104, 24 {
        /// Server clock, ns since the Unix epoch.
        timestamp_ns: U64,
    }

    /// A client message was refused before it reached the sequencer.
    Reject = 105, 32 {
        /// Header `seq` of the refused message (0 if it had none).
        ref_seq: U64,
        /// Header `kind` of the refused message.
        ref_kind: u8,
        /// Zero.
        reserved: u8,
        /// [`RejectCode`].
        reason: U16,
        /// Zero.
        reserved2: U32,
    }

    /// On a chain, sent right after [`LoginAccepted`]: what a signed transaction needs.
    ChainInfo = 106, 64 {
        /// The chain id every transaction signs.
        chain_id: [u8; 32],
        /// The last executed block.
        height: U64,
        /// Its timestamp in ms since the Unix epoch (nonces are checked against it).
        block_time_ms: U64,
    }

    /// The engine took the order in (it may fill, rest or both).
    OrderAccepted = 110, 48 {
        /// Client seq of the message that caused this, or 0 if another session's.
        client_seq: U64,
        /// Global sequence number of the input.
        seq: U64,
        /// Client order id.
        oid: U64,
        /// Market id.
        market: U32,
        /// Zero.
        reserved: U32,
    }

    /// The engine refused an order, cancel, replace or mass cancel; nothing changed.
    OrderRejected = 111, 48 {
        /// Client seq of the message that caused this.
        client_seq: U64,
        /// Global sequence number of the input.
        seq: U64,
        /// Client order id (0 for a mass cancel).
        oid: U64,
        /// Market id.
        market: U32,
        /// Engine reject code ([`engine_reject_code`]).
        reason: U16,
        /// Zero.
        reserved: U16,
    }

    /// One of the account's orders traded (partly or fully: see `leaves`).
    Fill = 112, 88 {
        /// Client seq of the message that caused this, or 0 (e.g. a resting order hit).
        client_seq: U64,
        /// Global sequence number of the input.
        seq: U64,
        /// The account's order.
        oid: U64,
        /// Market id.
        market: U32,
        /// The account's side: 0 buy, 1 sell.
        side: u8,
        /// 1 maker (resting order), 2 taker.
        liquidity: u8,
        /// Zero.
        reserved: U16,
        /// Trade price in ticks.
        price: I64,
        /// Traded lots.
        qty: I64,
        /// Fee paid in quote units (negative: rebate).
        fee: I64,
        /// Lots of this order still open after the trade: 0 = fully filled. A taker's
        /// unfilled IOC/FOK/market remainder is then reported `Canceled`.
        leaves: I64,
        /// Index of this trade among the input's trades; (`seq`, `match_index`) is the trade id.
        match_index: U32,
        /// Zero.
        reserved2: U32,
    }

    /// An order left the book, or an incoming order's remainder was dropped.
    Canceled = 113, 56 {
        /// Client seq of the message that caused this, or 0.
        client_seq: U64,
        /// Global sequence number of the input.
        seq: U64,
        /// Client order id.
        oid: U64,
        /// Market id.
        market: U32,
        /// 0 user, 1 unfilled (IOC/FOK/market remainder), 2 self-trade prevention.
        reason: u8,
        /// Zero.
        reserved: [u8; 3],
        /// Lots that were still open.
        remaining: I64,
    }

    /// A cancel-replace took effect.
    Replaced = 114, 64 {
        /// Client seq of the message that caused this, or 0.
        client_seq: U64,
        /// Global sequence number of the input.
        seq: U64,
        /// Client order id.
        oid: U64,
        /// Market id.
        market: U32,
        /// Zero.
        reserved: U32,
        /// New price in ticks.
        price: I64,
        /// New remaining lots.
        qty: I64,
    }

    /// The input was executed: every reply it caused on this session came before this.
    Sequenced = 115, 40 {
        /// Client seq of the message.
        client_seq: U64,
        /// Its global sequence number.
        seq: U64,
        /// The block it will be in.
        height: U64,
    }

    /// The input's block is durable (single node: committed to the write-ahead log).
    Finalized = 116, 40 {
        /// Client seq of the message.
        client_seq: U64,
        /// Its global sequence number.
        seq: U64,
        /// Its block.
        height: U64,
    }

    /// A perp position of the account changed (fills, liquidation, ADL, funding settled).
    PositionUpdate = 117, 80 {
        /// Client seq of the message that caused this, or 0.
        client_seq: U64,
        /// Global sequence number of the input.
        seq: U64,
        /// The perp market.
        market: U32,
        /// Zero.
        reserved: U32,
        /// Signed size in lots after the change (long > 0, short < 0, 0 flat).
        size: I64,
        /// Signed cost basis of the open lots after the change, collateral units: a 16-byte
        /// little-endian two's-complement integer (low 8 bytes first).
        open_notional: I128,
        /// PnL realized by this change, collateral units (before fees).
        realized_pnl: I64,
        /// Funding settled with this change: paid (> 0) or received (< 0), collateral units.
        funding_paid: I64,
    }

    /// One step of a liquidation of the account's position in a perp market.
    Liquidation = 118, 72 {
        /// Client seq of the message that caused this, or 0.
        client_seq: U64,
        /// Global sequence number of the input.
        seq: U64,
        /// The perp market.
        market: U32,
        /// [`liquidation_step_code`]: 0 book, 1 backstop, 2 adl.
        step: u8,
        /// Zero.
        reserved: [u8; 3],
        /// Lots closed by this step.
        lots: I64,
        /// Absolute notional they were closed at, collateral units.
        notional: I64,
        /// Liquidation fee paid to the insurance fund by this step, collateral units.
        fee: I64,
        /// Loss absorbed by the insurance fund (backstop) or by deleveraged traders (adl)
        /// because the account's equity went below zero, collateral units.
        bad_debt: I64,
    }

    /// Part of the account's position was auto-deleveraged against a bankrupt one.
    Deleveraged = 119, 56 {
        /// Client seq of the message that caused this, or 0.
        client_seq: U64,
        /// Global sequence number of the input.
        seq: U64,
        /// The perp market.
        market: U32,
        /// Zero.
        reserved: U32,
        /// Lots closed.
        lots: I64,
        /// Absolute notional they were closed at (the bankruptcy price), collateral units.
        notional: I64,
    }

    /// What became of a signed transaction before execution: admitted into the mempool,
    /// refused, or evicted from it (docs/protocol.md, "Signed transactions").
    TransactionStatus = 120, 64 {
        /// Client seq of the `Transaction` message.
        client_seq: U64,
        /// [`TX_ADMITTED`], [`TX_REFUSED`] or [`TX_EVICTED`].
        status: u8,
        /// Zero.
        reserved: u8,
        /// Why (refused, evicted): the mempool's refusal code (docs/transactions.md); 0 when
        /// admitted.
        code: U16,
        /// Zero.
        reserved2: U32,
        /// The transaction's hash (BLAKE3 of its bytes).
        hash: [u8; 32],
    }

    /// What a call of an enshrined co-processor (action kind 11 of a signed transaction)
    /// answered, after the transaction's block was executed (docs/protocol.md, "Signed
    /// transactions").
    CallResult = 121, 72 {
        /// Client seq of the `Transaction` message.
        client_seq: U64,
        /// Global sequence number of the transaction.
        seq: U64,
        /// The co-processor's registry id.
        coprocessor: U32,
        /// The call's position among the transaction's actions.
        action: U16,
        /// [`CALL_OK`] or [`CALL_REFUSED`].
        status: u8,
        /// Zero.
        reserved: u8,
        /// The call's 32-byte answer ([`CALL_OK`]), or the refusal's code in ASCII padded
        /// with zero bytes ([`CALL_REFUSED`], e.g. `coprocessor_inactive`).
        result: [u8; 32],
    }

    // ---- client to market-data port ----------------------------------------------------

    /// Start receiving a market (or every market): a snapshot, then updates and trades.
    Subscribe = 20, 24 {
        /// Market id, or [`ALL_MARKETS`].
        market: U32,
        /// Zero.
        reserved: U32,
    }

    /// Subscribe to a market (if not yet) and resend its updates and trades from `from_seq`
    /// on; a snapshot instead if they are no longer kept, or if the feed restarted.
    Replay = 21, 32 {
        /// Market id.
        market: U32,
        /// The low 32 bits of the `feed_epoch` the client's book comes from (0: not checked).
        /// Another value than the feed's own means the node restarted: a snapshot answers.
        feed_epoch_low: U32,
        /// First market sequence number wanted.
        from_seq: U64,
    }

    /// Send a fresh snapshot of a subscribed market.
    SnapshotRequest = 22, 24 {
        /// Market id.
        market: U32,
        /// Zero.
        reserved: U32,
    }

    // ---- market-data port to client ----------------------------------------------------

    /// A snapshot starts: `bid_levels + ask_levels` [`SnapshotLevel`]s follow, then
    /// [`SnapshotEnd`].
    SnapshotBegin = 200, 48 {
        /// Market id.
        market: U32,
        /// Zero.
        reserved: U32,
        /// The snapshot includes every update up to and including this market sequence number.
        market_seq: U64,
        /// Changes when the node restarts; market sequence numbers start again from 1.
        feed_epoch: U64,
        /// Bid levels that follow (best first).
        bid_levels: U32,
        /// Ask levels that follow them (best first).
        ask_levels: U32,
    }

    /// One price level of a snapshot.
    SnapshotLevel = 201, 40 {
        /// Market id.
        market: U32,
        /// 0 bid, 1 ask.
        side: u8,
        /// Zero.
        reserved: [u8; 3],
        /// Price in ticks.
        price: I64,
        /// Total resting lots.
        lots: I64,
    }

    /// A snapshot ends.
    SnapshotEnd = 202, 32 {
        /// Market id.
        market: U32,
        /// Zero.
        reserved: U32,
        /// Same as in [`SnapshotBegin`].
        market_seq: U64,
    }

    /// A price level's new total size (0: the level is gone).
    LevelUpdate = 203, 56 {
        /// Market id.
        market: U32,
        /// 0 bid, 1 ask.
        side: u8,
        /// Zero.
        reserved: [u8; 3],
        /// Per-market sequence number, +1 per update or trade.
        market_seq: U64,
        /// Global sequence number of the input that caused it.
        seq: U64,
        /// Price in ticks.
        price: I64,
        /// Total resting lots now.
        lots: I64,
    }

    /// A trade.
    Trade = 204, 64 {
        /// Market id.
        market: U32,
        /// The taker's side: 0 buy, 1 sell.
        taker_side: u8,
        /// Zero.
        reserved: [u8; 3],
        /// Per-market sequence number, +1 per update or trade.
        market_seq: U64,
        /// Global sequence number of the input that caused it.
        seq: U64,
        /// Index among the input's trades; (`seq`, `match_index`) is the trade id.
        match_index: U32,
        /// Zero.
        reserved2: U32,
        /// Price in ticks.
        price: I64,
        /// Lots traded.
        qty: I64,
    }

    /// A perp market's oracle and mark prices changed.
    MarkPrice = 205, 64 {
        /// Market id.
        market: U32,
        /// Zero.
        reserved: U32,
        /// Per-market sequence number, +1 per feed message of the market.
        market_seq: U64,
        /// Global sequence number of the input that caused it.
        seq: U64,
        /// Oracle price (median of the sources), ticks.
        oracle: I64,
        /// Mark price, ticks.
        mark: I64,
        /// Premium sample taken for funding, parts per 10^9 of the oracle price.
        premium_ppb: I64,
    }

    /// A perp market's funding interval was settled.
    FundingRate = 206, 64 {
        /// Market id.
        market: U32,
        /// Zero.
        reserved: U32,
        /// Per-market sequence number, +1 per feed message of the market.
        market_seq: U64,
        /// Global sequence number of the input that caused it.
        seq: U64,
        /// The interval's rate, parts per 10^9 (positive: longs pay shorts).
        rate_ppb: I64,
        /// Cumulative funding index after it, 10^-9 collateral units per lot held long: a
        /// 16-byte little-endian two's-complement integer.
        index: I128,
    }
}

/// Builds a message: all fields zero but the header (kind, length, version, `seq`).
pub fn blank<M: Message>(seq: u64) -> M {
    let mut message = M::new_zeroed();
    *message.header_mut() = Header::new(M::KIND, M::BYTES, seq);
    message
}

/// The expected length of a message kind, if the kind exists.
pub fn length_of(kind: u8) -> Option<usize> {
    macro_rules! table {
        ($($m:ident),*) => {
            match kind {
                $( $m::KIND => Some($m::BYTES), )*
                _ => None,
            }
        };
    }
    table!(
        Login,
        Logout,
        Heartbeat,
        NewOrder,
        Cancel,
        CancelReplace,
        MassCancel,
        Challenge,
        LoginAccepted,
        LoginRejected,
        ServerLogout,
        ServerHeartbeat,
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
        Subscribe,
        Replay,
        SnapshotRequest,
        SnapshotBegin,
        SnapshotLevel,
        SnapshotEnd,
        LevelUpdate,
        Trade,
        MarkPrice,
        FundingRate
    )
}

/// Why a frame could not be taken from a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header's length is below [`HEADER_BYTES`] or above [`MAX_FRAME_BYTES`]: the stream
    /// cannot be re-synchronised, so the connection is closed.
    #[error("frame length {0} outside {HEADER_BYTES}..={MAX_FRAME_BYTES}")]
    BadFrameLength(u16),
}

/// The next complete frame at the start of `buffer`: `Ok(Some(len))` when `buffer[..len]` is
/// one whole frame, `Ok(None)` when more bytes are needed. Only the length is checked here;
/// [`check_frame`] checks the rest.
pub fn next_frame(buffer: &[u8]) -> Result<Option<usize>, FrameError> {
    if buffer.len() < 2 {
        return Ok(None);
    }
    let length = u16::from_le_bytes([buffer[0], buffer[1]]);
    let bytes = length as usize;
    if !(HEADER_BYTES..=MAX_FRAME_BYTES).contains(&bytes) {
        return Err(FrameError::BadFrameLength(length));
    }
    Ok((buffer.len() >= bytes).then_some(bytes))
}

/// A whole frame that is well-formed at the framing level: its kind, version and length.
pub fn check_frame(frame: &[u8]) -> Result<&Header, RejectCode> {
    let (header, _) = Header::ref_from_prefix(frame).map_err(|_| RejectCode::BadLength)?;
    if header.version != VERSION {
        return Err(RejectCode::UnsupportedVersion);
    }
    if header.kind == TRANSACTION_KIND {
        let body = frame.len() - HEADER_BYTES;
        let whole_actions = body
            .saturating_sub(transactions::MIN_TX_LEN)
            .is_multiple_of(ACTION_BYTES);
        return match (transactions::MIN_TX_LEN..=transactions::MAX_TX_LEN).contains(&body) {
            true if whole_actions => Ok(header),
            _ => Err(RejectCode::BadLength),
        };
    }
    match length_of(header.kind) {
        None => Err(RejectCode::UnknownKind),
        Some(expected) if expected != frame.len() => Err(RejectCode::BadLength),
        Some(_) => Ok(header),
    }
}

/// Size of one action of a signed transaction.
const ACTION_BYTES: usize = transactions::ACTION_LEN;

/// The signed transaction a checked [`TRANSACTION_KIND`] frame carries.
pub fn transaction_bytes(frame: &[u8]) -> &[u8] {
    &frame[HEADER_BYTES..]
}

/// Views a checked frame as message `M` (`None` if its length is not `M`'s).
pub fn view<M: Message>(frame: &[u8]) -> Option<&M> {
    M::ref_from_bytes(frame).ok()
}

/// Defines a `u16`-coded reason enum with its wire code and snake_case name.
macro_rules! codes {
    ($(#[$meta:meta])* $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $code:literal, $text:literal ),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The wire code.
            pub fn code(self) -> u16 {
                match self { $( $name::$variant => $code, )* }
            }

            /// The value of a wire code.
            pub fn from_code(code: u16) -> Option<$name> {
                match code { $( $code => Some($name::$variant), )* _ => None }
            }

            /// The stable snake_case name.
            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $text, )* }
            }
        }
    };
}

codes! {
    /// Why a client message was refused before sequencing ([`Reject`]).
    RejectCode {
        /// The length does not match the kind's fixed size.
        BadLength = 1, "bad_length",
        /// No message has this kind (on this port).
        UnknownKind = 2, "unknown_kind",
        /// The header's version is not [`VERSION`].
        UnsupportedVersion = 3, "unsupported_version",
        /// Only `Login` (or `Heartbeat`) is allowed before login.
        NotLoggedIn = 4, "not_logged_in",
        /// A second `Login` on a logged-in connection.
        AlreadyLoggedIn = 5, "already_logged_in",
        /// The header seq is above the next expected client seq: an earlier message is missing.
        SeqGap = 6, "seq_gap",
        /// The header seq was already used in this session (a replay): ignored.
        DuplicateSeq = 7, "duplicate_seq",
        /// A `NewOrder` enumerated field holds an unknown code (side, tif, stp, order type, or
        /// an `order_type` bit other than [`ORDER_TYPE_REDUCE_ONLY`]); prices and sizes are
        /// checked by the engine (`OrderRejected`).
        InvalidField = 8, "invalid_field",
        /// The node's input queue is full: nothing was done; send it again with a new seq.
        Overloaded = 9, "overloaded",
        /// The market-data port does not know this market.
        UnknownMarket = 10, "unknown_market",
        /// The market is not subscribed on this connection.
        NotSubscribed = 11, "not_subscribed",
        /// An unsigned order message on a chain: only signed `Transaction`s reach its blocks.
        SignatureRequired = 12, "signature_required",
        /// A `Transaction` on a node that is not a chain (it takes unsigned orders only).
        TransactionsUnsupported = 13, "transactions_unsupported",
        /// A `Transaction` signed by another account than the session's.
        SignerMismatch = 14, "signer_mismatch",
    }
}

codes! {
    /// Why a login failed ([`LoginRejected`]).
    LoginRejectReason {
        /// The public key is not the canonical RFC 8032 encoding of an ed25519 point (no
        /// such point, `y >= p`, or `x = 0` with the sign bit set), or the point has small
        /// order (a weak key): no signature by it can be accepted.
        BadKey = 1, "bad_key",
        /// The signature does not verify over the challenge.
        BadSignature = 2, "bad_signature",
        /// `resume_from` is older than the oldest message the server still holds.
        ResendUnavailable = 3, "resend_unavailable",
        /// `resume_from` is beyond the session's next server seq.
        InvalidResume = 4, "invalid_resume",
        /// The server holds its maximum number of sessions.
        TooManySessions = 5, "too_many_sessions",
    }
}

codes! {
    /// Why a session ended ([`Logout`], [`ServerLogout`]).
    LogoutReason {
        /// The client asked.
        Requested = 0, "requested",
        /// A frame length outside the allowed range: the byte stream is unusable.
        Malformed = 1, "malformed",
        /// Nothing received for three heartbeat intervals.
        HeartbeatTimeout = 2, "heartbeat_timeout",
        /// No login within the login timeout.
        LoginTimeout = 3, "login_timeout",
        /// Another connection logged in to the same session.
        TakenOver = 4, "taken_over",
        /// The client did not read its data fast enough.
        SlowConsumer = 5, "slow_consumer",
        /// The node is stopping.
        Shutdown = 6, "shutdown",
        /// Too many refused messages in a row.
        TooManyRejects = 7, "too_many_rejects",
    }
}

/// The stable wire code of an engine reject reason (in [`OrderRejected`]): its position in
/// [`RejectReason::ALL`] plus one (the engine only ever appends to that list).
pub fn engine_reject_code(reason: RejectReason) -> u16 {
    let index = RejectReason::ALL
        .iter()
        .position(|&r| r == reason)
        .expect("RejectReason::ALL lists every reason");
    index as u16 + 1
}

/// Every engine reject reason, in wire-code order.
pub const ENGINE_REJECTS: [RejectReason; RejectReason::ALL.len()] = RejectReason::ALL;

/// The engine reject reason of a wire code.
pub fn engine_reject_from_code(code: u16) -> Option<RejectReason> {
    ENGINE_REJECTS.get((code as usize).checked_sub(1)?).copied()
}

/// The wire code of a cancel reason (in [`Canceled`]).
pub fn cancel_reason_code(reason: CancelReason) -> u8 {
    match reason {
        CancelReason::User => 0,
        CancelReason::Unfilled => 1,
        CancelReason::Stp => 2,
        CancelReason::Liquidation => 3,
        CancelReason::ReduceOnly => 4,
        CancelReason::PriceBand => 5,
    }
}

/// The cancel reason of a wire code.
pub fn cancel_reason_from_code(code: u8) -> Option<CancelReason> {
    match code {
        0 => Some(CancelReason::User),
        1 => Some(CancelReason::Unfilled),
        2 => Some(CancelReason::Stp),
        3 => Some(CancelReason::Liquidation),
        4 => Some(CancelReason::ReduceOnly),
        5 => Some(CancelReason::PriceBand),
        _ => None,
    }
}

/// The wire code of a liquidation step (in [`Liquidation`]).
pub fn liquidation_step_code(step: LiquidationStep) -> u8 {
    match step {
        LiquidationStep::Book => 0,
        LiquidationStep::Backstop => 1,
        LiquidationStep::Adl => 2,
    }
}

/// The liquidation step of a wire code.
pub fn liquidation_step_from_code(code: u8) -> Option<LiquidationStep> {
    match code {
        0 => Some(LiquidationStep::Book),
        1 => Some(LiquidationStep::Backstop),
        2 => Some(LiquidationStep::Adl),
        _ => None,
    }
}

/// Domain separator of the login signature.
pub const LOGIN_DOMAIN: &[u8; 16] = b"NEXUS-LOGIN-V1\0\0";

/// The exact bytes a [`Login`] signs: [`LOGIN_DOMAIN`] (16) || nonce (32) || public key (32) ||
/// session_id (8, LE) || resume_from (8, LE) || heartbeat_ms (4, LE) || flags (4, LE): 104 bytes.
pub fn login_signing_bytes(
    nonce: &[u8; 32],
    public_key: &[u8; 32],
    session_id: u64,
    resume_from: u64,
    heartbeat_ms: u32,
    flags: u32,
) -> [u8; 104] {
    let mut bytes = [0u8; 104];
    bytes[..16].copy_from_slice(LOGIN_DOMAIN);
    bytes[16..48].copy_from_slice(nonce);
    bytes[48..80].copy_from_slice(public_key);
    bytes[80..88].copy_from_slice(&session_id.to_le_bytes());
    bytes[88..96].copy_from_slice(&resume_from.to_le_bytes());
    bytes[96..100].copy_from_slice(&heartbeat_ms.to_le_bytes());
    bytes[100..104].copy_from_slice(&flags.to_le_bytes());
    bytes
}

/// The account id an ed25519 public key acts for: the first 8 bytes (LE) of
/// BLAKE3("nexus-account-v1" || key), top bit cleared. One derivation for the whole chain:
/// sessions, signed transactions and dev keys all use `transactions::account_id_of`.
pub use transactions::account_id_of;

/// Login flag: cancel the account's open orders when the session's connection drops.
pub const FLAG_CANCEL_ON_DISCONNECT: u32 = 1;
/// [`LoginAccepted::flags`] bit set by a chain: a [`ChainInfo`] follows the `LoginAccepted`,
/// and orders are taken only as signed transactions.
pub const FLAG_CHAIN: u32 = 1 << 31;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn offsets_match_the_protocol_document() {
        assert_eq!(offset_of!(Header, kind), 2);
        assert_eq!(offset_of!(Header, seq), 8);
        assert_eq!(offset_of!(ChainInfo, chain_id), 16);
        assert_eq!(offset_of!(ChainInfo, height), 48);
        assert_eq!(offset_of!(ChainInfo, block_time_ms), 56);
        assert_eq!(offset_of!(TransactionStatus, status), 24);
        assert_eq!(offset_of!(TransactionStatus, code), 26);
        assert_eq!(offset_of!(TransactionStatus, hash), 32);
        assert_eq!(offset_of!(CallResult, seq), 24);
        assert_eq!(offset_of!(CallResult, coprocessor), 32);
        assert_eq!(offset_of!(CallResult, action), 36);
        assert_eq!(offset_of!(CallResult, status), 38);
        assert_eq!(offset_of!(CallResult, result), 40);
        assert_eq!(MAX_FRAME_BYTES, 2204);
        assert_eq!(offset_of!(Login, signature), 48);
        assert_eq!(offset_of!(Login, session_id), 112);
        assert_eq!(offset_of!(Login, flags), 132);
        assert_eq!(offset_of!(NewOrder, oid), 24);
        assert_eq!(offset_of!(NewOrder, price), 32);
        assert_eq!(offset_of!(NewOrder, qty), 40);
        assert_eq!(offset_of!(Fill, price), 48);
        assert_eq!(offset_of!(Fill, fee), 64);
        assert_eq!(offset_of!(Fill, leaves), 72);
        assert_eq!(offset_of!(Fill, match_index), 80);
        assert_eq!(offset_of!(Canceled, remaining), 48);
        assert_eq!(offset_of!(LevelUpdate, lots), 48);
        assert_eq!(offset_of!(Trade, qty), 56);
        assert_eq!(offset_of!(NewOrder, order_type), 23);
        assert_eq!(offset_of!(PositionUpdate, client_seq), 16);
        assert_eq!(offset_of!(PositionUpdate, seq), 24);
        assert_eq!(offset_of!(PositionUpdate, market), 32);
        assert_eq!(offset_of!(PositionUpdate, size), 40);
        assert_eq!(offset_of!(PositionUpdate, open_notional), 48);
        assert_eq!(offset_of!(PositionUpdate, realized_pnl), 64);
        assert_eq!(offset_of!(PositionUpdate, funding_paid), 72);
        assert_eq!(PositionUpdate::BYTES, 80);
        assert_eq!(offset_of!(Liquidation, market), 32);
        assert_eq!(offset_of!(Liquidation, step), 36);
        assert_eq!(offset_of!(Liquidation, lots), 40);
        assert_eq!(offset_of!(Liquidation, notional), 48);
        assert_eq!(offset_of!(Liquidation, fee), 56);
        assert_eq!(offset_of!(Liquidation, bad_debt), 64);
        assert_eq!(Liquidation::BYTES, 72);
        assert_eq!(offset_of!(Deleveraged, market), 32);
        assert_eq!(offset_of!(Deleveraged, lots), 40);
        assert_eq!(offset_of!(Deleveraged, notional), 48);
        assert_eq!(Deleveraged::BYTES, 56);
        assert_eq!(offset_of!(MarkPrice, market_seq), 24);
        assert_eq!(offset_of!(MarkPrice, seq), 32);
        assert_eq!(offset_of!(MarkPrice, oracle), 40);
        assert_eq!(offset_of!(MarkPrice, mark), 48);
        assert_eq!(offset_of!(MarkPrice, premium_ppb), 56);
        assert_eq!(MarkPrice::BYTES, 64);
        assert_eq!(offset_of!(FundingRate, market_seq), 24);
        assert_eq!(offset_of!(FundingRate, seq), 32);
        assert_eq!(offset_of!(FundingRate, rate_ppb), 40);
        assert_eq!(offset_of!(FundingRate, index), 48);
        assert_eq!(FundingRate::BYTES, 64);
    }

    #[test]
    fn i128_fields_are_16_little_endian_bytes_low_half_first() {
        let mut position: PositionUpdate = blank(1);
        let value: i128 = -(3i128 << 64) - 5;
        position.open_notional = I128::new(value);
        let bytes = position.as_bytes();
        let low = u64::from_le_bytes(bytes[48..56].try_into().unwrap());
        let high = i64::from_le_bytes(bytes[56..64].try_into().unwrap());
        assert_eq!(((high as i128) << 64) | low as i128, value);
        assert_eq!(
            i128::from_le_bytes(bytes[48..64].try_into().unwrap()),
            value
        );
    }

    #[test]
    fn a_message_round_trips_through_its_bytes() {
        let mut order: NewOrder = blank(7);
        order.market = 3.into();
        order.side = 1;
        order.oid = 42.into();
        order.price = I64::new(-5);
        order.qty = 9.into();
        let bytes = order.as_bytes();
        assert_eq!(bytes.len(), 48);
        assert_eq!(&bytes[..4], &[48, 0, NewOrder::KIND, VERSION]);
        assert_eq!(next_frame(bytes), Ok(Some(48)));
        assert_eq!(next_frame(&bytes[..47]), Ok(None));
        let header = check_frame(bytes).expect("valid");
        assert_eq!(header.seq.get(), 7);
        let back: &NewOrder = view(bytes).expect("same size");
        assert_eq!(back.price.get(), -5);
        assert_eq!(back.oid.get(), 42);
    }

    #[test]
    fn framing_errors_are_typed() {
        assert_eq!(next_frame(&[3, 0]), Err(FrameError::BadFrameLength(3)));
        // 2205 = 0x089d: one past the longest transaction frame.
        assert_eq!(
            next_frame(&[0x9d, 0x08]),
            Err(FrameError::BadFrameLength(2205))
        );
        assert_eq!(next_frame(&[0x9c, 0x08]), Ok(None));
        // A transaction frame whose body is not 140 + 32 n bytes (n in 1..=64) is a bad length.
        for (body, ok) in [
            (171, false),
            (172, true),
            (173, false),
            (204, true),
            (2188, true),
        ] {
            let mut frame = Header::new(TRANSACTION_KIND, HEADER_BYTES + body, 1)
                .as_bytes()
                .to_vec();
            frame.resize(HEADER_BYTES + body, 0);
            assert_eq!(check_frame(&frame).is_ok(), ok, "body {body}");
        }
        let mut heartbeat: Heartbeat = blank(0);
        heartbeat.header.kind = 99;
        assert_eq!(
            check_frame(heartbeat.as_bytes()).err(),
            Some(RejectCode::UnknownKind)
        );
        heartbeat.header.kind = NewOrder::KIND;
        assert_eq!(
            check_frame(heartbeat.as_bytes()).err(),
            Some(RejectCode::BadLength)
        );
        heartbeat.header.kind = Heartbeat::KIND;
        heartbeat.header.version = 2;
        assert_eq!(
            check_frame(heartbeat.as_bytes()).err(),
            Some(RejectCode::UnsupportedVersion)
        );
    }

    #[test]
    fn the_account_id_test_vector_of_the_protocol_document() {
        let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
        let public_key = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let hex: String = public_key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
        );
        assert_eq!(account_id_of(&public_key), 6581511237511020069);
    }

    #[test]
    fn codes_round_trip() {
        for (index, &reason) in ENGINE_REJECTS.iter().enumerate() {
            assert_eq!(engine_reject_code(reason), index as u16 + 1);
            assert_eq!(engine_reject_from_code(index as u16 + 1), Some(reason));
        }
        assert_eq!(engine_reject_from_code(0), None);
        for &code in RejectCode::ALL {
            assert_eq!(RejectCode::from_code(code.code()), Some(code));
        }
        for &reason in LogoutReason::ALL {
            assert_eq!(LogoutReason::from_code(reason.code()), Some(reason));
        }
        for step in [
            LiquidationStep::Book,
            LiquidationStep::Backstop,
            LiquidationStep::Adl,
        ] {
            assert_eq!(
                liquidation_step_from_code(liquidation_step_code(step)),
                Some(step)
            );
        }
        assert_eq!(liquidation_step_from_code(3), None);
    }
}
