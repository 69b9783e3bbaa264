//! Core actions: what one signed transaction asks NexusCore to do, each a fixed 32-byte
//! record (docs/transactions.md, "Actions").
//!
//! An action never names its account: it acts for the signer's account (the id derived from
//! the signing key). The only account an action names is a deposit's beneficiary, and only
//! configured faucet keys may deposit.

use engine::{
    AccountId, AssetId, ByteCode, Command, Lots, MarketId, NewOrder, OrderId, SelfTradePrevention,
    Side, Ticks, TimeInForce, Units, MAX_ORACLE_SOURCES,
};

/// Bytes of one encoded action.
pub const ACTION_LEN: usize = 32;

/// Flag bit of `place`: sell (clear: buy).
const FLAG_SELL: u8 = 1;
/// Flag bit of `place`: reduce-only (perp markets).
const FLAG_REDUCE_ONLY: u8 = 1 << 5;
/// Flag bit of `place`: a market order (price field must be 0).
const FLAG_MARKET: u8 = 1 << 6;
/// Flag bit of `leverage`: isolated margin mode.
const FLAG_ISOLATED: u8 = 1;

/// One thing a transaction asks for, on behalf of its signer's account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A new order (engine `Place`).
    Place {
        /// Market id.
        market: MarketId,
        /// Client order id.
        oid: OrderId,
        /// Buy or sell.
        side: Side,
        /// Limit price in ticks; `None` for a market order.
        price: Option<Ticks>,
        /// Size in lots.
        qty: Lots,
        /// Time in force.
        tif: TimeInForce,
        /// Self-trade prevention.
        stp: SelfTradePrevention,
        /// Perp markets: may only reduce the position.
        reduce_only: bool,
    },
    /// Cancel one open order.
    Cancel {
        /// Market id.
        market: MarketId,
        /// Client order id.
        oid: OrderId,
    },
    /// Cancel every open order in one market.
    CancelAll {
        /// Market id.
        market: MarketId,
    },
    /// Change an open order's price and remaining size.
    Modify {
        /// Market id.
        market: MarketId,
        /// Client order id.
        oid: OrderId,
        /// New limit price in ticks.
        price: Ticks,
        /// New remaining size in lots.
        qty: Lots,
    },
    /// Take an asset out of the exchange (debits the available balance).
    Withdraw {
        /// Asset id.
        asset: AssetId,
        /// Units, > 0.
        amount: Units,
    },
    /// Move collateral between spot balance and perp collateral (> 0: to perps).
    TransferCollateral {
        /// Units of the collateral asset, signed, non-zero.
        amount: Units,
    },
    /// Leverage and margin mode in one perp market.
    SetLeverage {
        /// Perp market id.
        market: MarketId,
        /// 1..=the market's maximum.
        leverage: u32,
        /// Isolated (true) or cross margin.
        isolated: bool,
    },
    /// Add (> 0) or remove (< 0) margin of an isolated position.
    IsolatedMargin {
        /// Perp market id.
        market: MarketId,
        /// Units, signed, non-zero.
        amount: Units,
    },
    /// An oracle feeder's price for a perp market (only configured feeders; a block's
    /// feeder prices per market become one engine `Oracle` with their median).
    OraclePrice {
        /// Perp market id.
        market: MarketId,
        /// Price in ticks, > 0.
        price: Ticks,
    },
    /// Credit an account (only configured faucet keys: a development chain's funding; a
    /// bridge later).
    Deposit {
        /// The account credited.
        account: AccountId,
        /// Asset id.
        asset: AssetId,
        /// Units, > 0.
        amount: Units,
    },
    /// A call of a public function of an enshrined co-processor other than the CLOB (whose
    /// functions are the typed actions above): `method` selects the function, `args` are
    /// its 24 bytes of arguments, as that co-processor defines them (docs/execution.md,
    /// "Co-processors"). It acts for the signer's account.
    Call {
        /// Registry id of the co-processor.
        coprocessor: u32,
        /// Which public function.
        method: u8,
        /// Its arguments.
        args: [u8; CALL_ARGS_LEN],
    },
}

/// Bytes of arguments one [`Action::Call`] carries.
pub const CALL_ARGS_LEN: usize = 24;

/// Why 32 bytes are not an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The kind byte names no action.
    #[error("unknown action kind {0}")]
    UnknownKind(u8),
    /// A flag, enumeration or reserved byte is out of range.
    #[error("action {kind}: field {field} is out of range")]
    BadField {
        /// The action's kind byte.
        kind: u8,
        /// Which field.
        field: &'static str,
    },
}

/// Byte layout of an action: kind, flags, two reserved bytes, then `a` (u32) and three
/// 8-byte fields `b`, `c`, `d`, all little-endian.
struct Record {
    kind: u8,
    flags: u8,
    a: u32,
    b: u64,
    c: i64,
    d: i64,
}

impl Record {
    fn encode(&self) -> [u8; ACTION_LEN] {
        let mut out = [0u8; ACTION_LEN];
        out[0] = self.kind;
        out[1] = self.flags;
        out[4..8].copy_from_slice(&self.a.to_le_bytes());
        out[8..16].copy_from_slice(&self.b.to_le_bytes());
        out[16..24].copy_from_slice(&self.c.to_le_bytes());
        out[24..32].copy_from_slice(&self.d.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8; ACTION_LEN]) -> Result<Record, ActionError> {
        let field = |range: std::ops::Range<usize>| -> [u8; 8] {
            bytes[range].try_into().expect("8 bytes")
        };
        if bytes[2] != 0 || bytes[3] != 0 {
            return Err(ActionError::BadField {
                kind: bytes[0],
                field: "reserved",
            });
        }
        Ok(Record {
            kind: bytes[0],
            flags: bytes[1],
            a: u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")),
            b: u64::from_le_bytes(field(8..16)),
            c: i64::from_le_bytes(field(16..24)),
            d: i64::from_le_bytes(field(24..32)),
        })
    }
}

/// Action kind bytes.
mod kind {
    pub const PLACE: u8 = 1;
    pub const CANCEL: u8 = 2;
    pub const CANCEL_ALL: u8 = 3;
    pub const MODIFY: u8 = 4;
    pub const WITHDRAW: u8 = 5;
    pub const TRANSFER_COLLATERAL: u8 = 6;
    pub const SET_LEVERAGE: u8 = 7;
    pub const ISOLATED_MARGIN: u8 = 8;
    pub const ORACLE_PRICE: u8 = 9;
    pub const DEPOSIT: u8 = 10;
    pub const CALL: u8 = 11;
}

impl Action {
    /// The 32-byte record (docs/transactions.md).
    pub fn encode(&self) -> [u8; ACTION_LEN] {
        self.record().encode()
    }

    fn record(&self) -> Record {
        let blank = |kind| Record {
            kind,
            flags: 0,
            a: 0,
            b: 0,
            c: 0,
            d: 0,
        };
        match *self {
            Action::Place {
                market,
                oid,
                side,
                price,
                qty,
                tif,
                stp,
                reduce_only,
            } => {
                let mut flags = (tif.code() << 1) | (stp.code() << 3);
                flags |= if side == Side::Sell { FLAG_SELL } else { 0 };
                flags |= if reduce_only { FLAG_REDUCE_ONLY } else { 0 };
                flags |= if price.is_none() { FLAG_MARKET } else { 0 };
                Record {
                    flags,
                    a: market,
                    b: oid,
                    c: price.unwrap_or(0),
                    d: qty,
                    ..blank(kind::PLACE)
                }
            }
            Action::Cancel { market, oid } => Record {
                a: market,
                b: oid,
                ..blank(kind::CANCEL)
            },
            Action::CancelAll { market } => Record {
                a: market,
                ..blank(kind::CANCEL_ALL)
            },
            Action::Modify {
                market,
                oid,
                price,
                qty,
            } => Record {
                a: market,
                b: oid,
                c: price,
                d: qty,
                ..blank(kind::MODIFY)
            },
            Action::Withdraw { asset, amount } => Record {
                a: asset,
                d: amount,
                ..blank(kind::WITHDRAW)
            },
            Action::TransferCollateral { amount } => Record {
                d: amount,
                ..blank(kind::TRANSFER_COLLATERAL)
            },
            Action::SetLeverage {
                market,
                leverage,
                isolated,
            } => Record {
                flags: if isolated { FLAG_ISOLATED } else { 0 },
                a: market,
                c: leverage as i64,
                ..blank(kind::SET_LEVERAGE)
            },
            Action::IsolatedMargin { market, amount } => Record {
                a: market,
                d: amount,
                ..blank(kind::ISOLATED_MARGIN)
            },
            Action::OraclePrice { market, price } => Record {
                a: market,
                c: price,
                ..blank(kind::ORACLE_PRICE)
            },
            Action::Deposit {
                account,
                asset,
                amount,
            } => Record {
                a: asset,
                b: account,
                d: amount,
                ..blank(kind::DEPOSIT)
            },
            // The arguments are fields b, c and d as they lie in the record.
            Action::Call {
                coprocessor,
                method,
                args,
            } => {
                let field = |at: usize| -> [u8; 8] { args[at..at + 8].try_into().expect("8") };
                Record {
                    flags: method,
                    a: coprocessor,
                    b: u64::from_le_bytes(field(0)),
                    c: i64::from_le_bytes(field(8)),
                    d: i64::from_le_bytes(field(16)),
                    ..blank(kind::CALL)
                }
            }
        }
    }

    /// Reads a 32-byte record. Every byte is checked: unknown kinds, flags or enumeration
    /// codes and non-zero unused fields are errors, so each action has one encoding.
    pub fn decode(bytes: &[u8; ACTION_LEN]) -> Result<Action, ActionError> {
        let r = Record::decode(bytes)?;
        if r.kind == kind::CALL {
            // Every method byte and argument byte is the co-processor's to define.
            return Ok(Action::Call {
                coprocessor: r.a,
                method: r.flags,
                args: bytes[8..].try_into().expect("24 bytes"),
            });
        }
        let bad = |field| ActionError::BadField {
            kind: r.kind,
            field,
        };
        // Which fields a kind uses: (flags mask, b, c, d); the others must be zero.
        let (flags_mask, uses_b, uses_c, uses_d) = match r.kind {
            kind::PLACE => (0x7f, true, true, true),
            kind::CANCEL => (0, true, false, false),
            kind::CANCEL_ALL => (0, false, false, false),
            kind::MODIFY => (0, true, true, true),
            kind::WITHDRAW | kind::ISOLATED_MARGIN => (0, false, false, true),
            kind::TRANSFER_COLLATERAL => (0, false, false, true),
            kind::SET_LEVERAGE => (FLAG_ISOLATED, false, true, false),
            kind::ORACLE_PRICE => (0, false, true, false),
            kind::DEPOSIT => (0, true, false, true),
            other => return Err(ActionError::UnknownKind(other)),
        };
        if r.flags & !flags_mask != 0 {
            return Err(bad("flags"));
        }
        if (!uses_b && r.b != 0) || (!uses_c && r.c != 0) || (!uses_d && r.d != 0) {
            return Err(bad("unused field"));
        }
        if r.kind == kind::TRANSFER_COLLATERAL && r.a != 0 {
            return Err(bad("unused field"));
        }
        Ok(match r.kind {
            kind::PLACE => {
                let tif = TimeInForce::from_code((r.flags >> 1) & 3).ok_or(bad("tif"))?;
                let stp = SelfTradePrevention::from_code((r.flags >> 3) & 3).ok_or(bad("stp"))?;
                let market_order = r.flags & FLAG_MARKET != 0;
                if market_order && r.c != 0 {
                    return Err(bad("price"));
                }
                Action::Place {
                    market: r.a,
                    oid: r.b,
                    side: if r.flags & FLAG_SELL != 0 {
                        Side::Sell
                    } else {
                        Side::Buy
                    },
                    price: (!market_order).then_some(r.c),
                    qty: r.d,
                    tif,
                    stp,
                    reduce_only: r.flags & FLAG_REDUCE_ONLY != 0,
                }
            }
            kind::CANCEL => Action::Cancel {
                market: r.a,
                oid: r.b,
            },
            kind::CANCEL_ALL => Action::CancelAll { market: r.a },
            kind::MODIFY => Action::Modify {
                market: r.a,
                oid: r.b,
                price: r.c,
                qty: r.d,
            },
            kind::WITHDRAW => Action::Withdraw {
                asset: r.a,
                amount: r.d,
            },
            kind::TRANSFER_COLLATERAL => Action::TransferCollateral { amount: r.d },
            kind::SET_LEVERAGE => Action::SetLeverage {
                market: r.a,
                leverage: u32::try_from(r.c).map_err(|_| bad("leverage"))?,
                isolated: r.flags & FLAG_ISOLATED != 0,
            },
            kind::ISOLATED_MARGIN => Action::IsolatedMargin {
                market: r.a,
                amount: r.d,
            },
            kind::ORACLE_PRICE => Action::OraclePrice {
                market: r.a,
                price: r.c,
            },
            _ => Action::Deposit {
                account: r.b,
                asset: r.a,
                amount: r.d,
            },
        })
    }

    /// The engine command this action is for `account` (the signer's). Oracle prices are
    /// not commands on their own: a block's prices per market become one
    /// [`oracle_command`]; this returns `None` for them, and for calls of other
    /// co-processors.
    pub fn command(&self, account: AccountId) -> Option<Command> {
        Some(match *self {
            Action::Place {
                market,
                oid,
                side,
                price,
                qty,
                tif,
                stp,
                reduce_only,
            } => Command::Place(NewOrder {
                account,
                market,
                oid,
                side,
                price,
                qty,
                tif,
                stp,
                reduce_only,
            }),
            Action::Cancel { market, oid } => Command::Cancel {
                account,
                market,
                oid,
            },
            Action::CancelAll { market } => Command::CancelAll { account, market },
            Action::Modify {
                market,
                oid,
                price,
                qty,
            } => Command::Modify {
                account,
                market,
                oid,
                price,
                qty,
            },
            Action::Withdraw { asset, amount } => Command::Withdraw {
                account,
                asset,
                amount,
            },
            Action::TransferCollateral { amount } => {
                Command::TransferCollateral { account, amount }
            }
            Action::SetLeverage {
                market,
                leverage,
                isolated,
            } => Command::SetLeverage {
                account,
                market,
                leverage,
                isolated,
            },
            Action::IsolatedMargin { market, amount } => Command::IsolatedMargin {
                account,
                market,
                amount,
            },
            Action::OraclePrice { .. } | Action::Call { .. } => return None,
            Action::Deposit {
                account: beneficiary,
                asset,
                amount,
            } => Command::Deposit {
                account: beneficiary,
                asset,
                amount,
            },
        })
    }

    /// The action a signer's engine command is, and the account it acts for: the inverse of
    /// [`Action::command`]. `None` for commands no transaction carries (registry, oracle,
    /// funding and other system inputs).
    pub fn from_command(command: &Command) -> Option<(AccountId, Action)> {
        Some(match *command {
            Command::Place(order) => (
                order.account,
                Action::Place {
                    market: order.market,
                    oid: order.oid,
                    side: order.side,
                    price: order.price,
                    qty: order.qty,
                    tif: order.tif,
                    stp: order.stp,
                    reduce_only: order.reduce_only,
                },
            ),
            Command::Cancel {
                account,
                market,
                oid,
            } => (account, Action::Cancel { market, oid }),
            Command::CancelAll { account, market } => (account, Action::CancelAll { market }),
            Command::Modify {
                account,
                market,
                oid,
                price,
                qty,
            } => (
                account,
                Action::Modify {
                    market,
                    oid,
                    price,
                    qty,
                },
            ),
            Command::Withdraw {
                account,
                asset,
                amount,
            } => (account, Action::Withdraw { asset, amount }),
            Command::TransferCollateral { account, amount } => {
                (account, Action::TransferCollateral { amount })
            }
            Command::SetLeverage {
                account,
                market,
                leverage,
                isolated,
            } => (
                account,
                Action::SetLeverage {
                    market,
                    leverage,
                    isolated,
                },
            ),
            Command::IsolatedMargin {
                account,
                market,
                amount,
            } => (account, Action::IsolatedMargin { market, amount }),
            _ => return None,
        })
    }

    /// Whether only a configured role may sign it: `Some("faucet")` for deposits,
    /// `Some("oracle feeder")` for oracle prices.
    pub fn restricted_to(&self) -> Option<&'static str> {
        match self {
            Action::Deposit { .. } => Some("faucet"),
            Action::OraclePrice { .. } => Some("oracle feeder"),
            _ => None,
        }
    }
}

/// The engine `Oracle` of one market from the feeders' prices in a block (at most
/// [`MAX_ORACLE_SOURCES`] feeders; the engine takes their median). `None` if `prices` is
/// empty or longer than that.
pub fn oracle_command(market: MarketId, prices: &[Ticks]) -> Option<Command> {
    if prices.is_empty() || prices.len() > MAX_ORACLE_SOURCES {
        return None;
    }
    let mut sources = [0; MAX_ORACLE_SOURCES];
    sources[..prices.len()].copy_from_slice(prices);
    Some(Command::Oracle {
        market,
        prices: Box::new(sources),
        count: prices.len() as u8,
    })
}
