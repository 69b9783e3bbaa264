//! `nexus replay`: JSON Lines commands in, JSON Lines events out (see `docs/replay.md`).
//!
//! [`Translator`] is the translation layer and does no I/O and holds no engine: it turns one
//! input line into engine [`Step`]s and the engine's events into [`Output`] records. Names
//! become the engine's integer ids (markets and assets: dense `u32` in first-seen order;
//! accounts and order ids: a JSON integer below 2^63 is its own id, anything else is interned to
//! an id from 2^63 up and echoed back as written), and decimal strings become ticks, lots and
//! asset units, exactly. [`Replayer`] runs a translator over an engine; [`run`] is the
//! streaming loop around it. The node (`nexus run`) uses the same translator in front of its
//! pipeline, so a WAL dumped as JSON Lines replays to the same state.
//!
//! The translator's lines are split by kind: `registry` (the dispatch of a line, assets and
//! markets), `orders` (orders, cancels, modifies, the book query, decimals to ticks and
//! lots), `perps` (transfers and perpetual futures), `render` (events to records) and
//! `describe` (commands back to lines); `run` holds the replayer and the streaming loop.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};

use engine::{
    AccountId, AssetId, CancelReason, Command, Engine, EngineConfig, Event, Lots, MarginTier,
    MarketId, MarketSpec, NewOrder, PerpSpec, SelfTradePrevention, Side, Ticks, TimeInForce, Units,
    DEFAULT_MAX_PRICE_TICKS, INSURANCE_ACCOUNT, MAX_MARGIN_TIERS, MAX_ORACLE_SOURCES,
};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::decimal::{self, Whole};

/// Decimals of an asset that was not declared with an `asset` command.
pub const DEFAULT_DECIMALS: u32 = 8;
/// Levels per side of a `book` command without `depth`.
pub const DEFAULT_BOOK_DEPTH: usize = 10;
/// Highest `max_price_ticks` the engine accepts (2^28).
pub const MAX_PRICE_TICKS_LIMIT: Ticks = 1 << 28;
/// The account name that stands for the engine's insurance fund ([`INSURANCE_ACCOUNT`]), in
/// commands and events.
pub const INSURANCE_NAME: &str = "insurance";
/// `max_leverage` of a `perp_market` without one.
pub const DEFAULT_MAX_LEVERAGE: i64 = 10;
/// Highest `max_leverage` the engine accepts.
pub const MAX_LEVERAGE_LIMIT: i64 = 100;
/// `price_band` of a `perp_market` without one: 10% (in ppb).
pub const DEFAULT_PRICE_BAND_PPB: i64 = 100_000_000;
/// `funding_cap` of a `perp_market` without one: 1% per interval (in ppb).
pub const DEFAULT_FUNDING_CAP_PPB: i64 = 10_000_000;
/// `impact_notional` of a `perp_market` without one, in whole collateral (1000 USDC, say).
pub const DEFAULT_IMPACT_NOTIONAL: i64 = 1_000;
/// Rates are parts per billion: one ppb as a decimal.
const PPB_UNIT: Decimal = Decimal::from_parts(1, 0, 0, false, 9);

/// One output record: a JSON object with `ev` first, then `seq` (the 1-based input line).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
// Records are made one at a time and serialized at once; boxing the big ones buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Output {
    /// An order passed every check.
    Accepted {
        /// Input line.
        seq: u64,
        /// The order id as written in the command.
        oid: Value,
        /// The account as written in the command.
        account: Value,
    },
    /// A command was refused and changed nothing.
    Rejected {
        /// Input line.
        seq: u64,
        /// The command's order id, for order commands.
        #[serde(skip_serializing_if = "Option::is_none")]
        oid: Option<Value>,
        /// The command's account, for commands that name one.
        #[serde(skip_serializing_if = "Option::is_none")]
        account: Option<Value>,
        /// Why (snake_case, see docs/replay.md).
        reason: &'static str,
        /// A human explanation, for reasons found by the translation layer.
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A trade.
    Fill {
        /// Input line.
        seq: u64,
        /// Market name.
        market: String,
        /// The incoming order's id.
        taker_oid: Value,
        /// The resting order's id.
        maker_oid: Value,
        /// The incoming order's account.
        taker_account: Value,
        /// The resting order's account.
        maker_account: Value,
        /// The taker's side, `buy` or `sell`.
        side: &'static str,
        /// Trade price (the maker's), decimal.
        price: String,
        /// Trade size, decimal, in base asset.
        qty: String,
        /// Taker's fee in quote asset units, decimal.
        taker_fee: String,
        /// Maker's fee in quote asset units, decimal (negative: a rebate).
        maker_fee: String,
    },
    /// An order left the book, or an incoming order's remainder was dropped.
    Canceled {
        /// Input line.
        seq: u64,
        /// Order id.
        oid: Value,
        /// Owner.
        account: Value,
        /// Size still open when canceled, decimal.
        qty: String,
        /// `user`, `unfilled` or `stp`.
        reason: &'static str,
    },
    /// A modify command changed an order.
    Modified {
        /// Input line.
        seq: u64,
        /// Order id.
        oid: Value,
        /// Owner.
        account: Value,
        /// New price, decimal.
        price: String,
        /// New remaining size, decimal.
        qty: String,
    },
    /// Aggregated book levels, best first.
    Book {
        /// Input line.
        seq: u64,
        /// Market name.
        market: String,
        /// `[price, qty]` per bid level, highest price first.
        bids: Vec<[String; 2]>,
        /// `[price, qty]` per ask level, lowest price first.
        asks: Vec<[String; 2]>,
    },
    /// A perp market's oracle price was updated (and with it the mark price).
    Oracle {
        /// Input line.
        seq: u64,
        /// Market name.
        market: String,
        /// The new oracle price (median of the sources), decimal.
        price: String,
        /// The new mark price, decimal.
        mark: String,
        /// The premium sample taken for funding, a decimal fraction of the oracle price.
        premium: String,
    },
    /// A funding interval was settled into the market's funding index.
    Funding {
        /// Input line.
        seq: u64,
        /// Market name.
        market: String,
        /// The interval's rate, a decimal fraction (positive: longs pay shorts).
        rate: String,
        /// The cumulative funding index after it: collateral paid per lot held long, decimal.
        index: String,
    },
    /// A perp position changed.
    Position {
        /// Input line.
        seq: u64,
        /// The owner.
        account: Value,
        /// Market name.
        market: String,
        /// Signed size after the change, decimal (long > 0).
        size: String,
        /// Signed cost basis of the open size, decimal collateral.
        open_notional: String,
        /// PnL realized by this change (before fees), decimal collateral.
        realized_pnl: String,
        /// Funding settled with this change, decimal collateral (> 0 paid, < 0 received).
        funding_paid: String,
    },
    /// One step of a liquidation.
    Liquidation {
        /// Input line.
        seq: u64,
        /// The account liquidated.
        account: Value,
        /// Market name.
        market: String,
        /// `book`, `backstop` or `adl`.
        step: &'static str,
        /// Size closed by this step, decimal.
        qty: String,
        /// Notional it closed at, decimal collateral (absolute).
        notional: String,
        /// Liquidation fee paid to the insurance fund, decimal collateral.
        fee: String,
        /// Loss absorbed by the insurance fund or by deleveraged traders, decimal collateral.
        bad_debt: String,
    },
    /// An opposite position was auto-deleveraged to close a bankrupt one.
    Adl {
        /// Input line.
        seq: u64,
        /// The deleveraged account.
        account: Value,
        /// Market name.
        market: String,
        /// Size closed, decimal.
        qty: String,
        /// Notional it closed at (the bankrupt position's price), decimal collateral.
        notional: String,
    },
    /// The line could not be understood; nothing happened.
    Error {
        /// Input line.
        seq: u64,
        /// Input line (same as `seq`).
        line: u64,
        /// Always `malformed`.
        reason: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Written after the last line when asked for (`--state-hash`).
    End {
        /// Lines read.
        lines: u64,
        /// The engine's state hash, lowercase hex.
        state_hash: String,
    },
}

/// First id given to an interned (non-numeric or large) JSON id.
pub const INTERNED_ID_BASE: u64 = 1 << 63;

/// Maps JSON ids to engine ids: an integer below 2^63 is its own id; anything else (strings,
/// larger integers) gets the next id from 2^63 up, keyed by its JSON text, and the original
/// value is remembered to echo back.
#[derive(Default)]
pub(crate) struct Interner {
    ids: HashMap<String, u64>,
    values: Vec<Value>,
    /// Refuse anything but integers below 2^63 (the node, whose ids must survive restarts).
    numbers_only: bool,
}

impl Interner {
    /// The id of `value`, made if new.
    fn intern(&mut self, field: &str, value: &Value) -> Result<u64, Malformed> {
        if let Some(n) = value.as_u64().filter(|&n| n < INTERNED_ID_BASE) {
            return Ok(n);
        }
        if self.numbers_only {
            return Err(format!(
                "field {field:?}: expected an integer from 0 to 2^63-1, got {}",
                decimal::short_json(value)
            ));
        }
        let key = value.to_string();
        if let Some(&id) = self.ids.get(&key) {
            return Ok(id);
        }
        self.values.push(value.clone());
        let id = INTERNED_ID_BASE + self.values.len() as u64 - 1;
        self.ids.insert(key, id);
        Ok(id)
    }

    /// The original value of `id`.
    pub(crate) fn value(&self, id: u64) -> Value {
        if id < INTERNED_ID_BASE {
            return Value::from(id);
        }
        self.values
            .get((id - INTERNED_ID_BASE) as usize)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

#[derive(Clone, Copy)]
pub(crate) struct AssetInfo {
    pub(crate) id: AssetId,
    pub(crate) decimals: u32,
}

pub(crate) struct MarketInfo {
    pub(crate) name: String,
    pub(crate) id: MarketId,
    pub(crate) tick: Decimal,
    pub(crate) lot: Decimal,
    /// One smallest unit of the quote asset (perps: the collateral), as a decimal
    /// (`10^-decimals`).
    pub(crate) quote_unit: Decimal,
    /// Perp markets: the spec the engine was given.
    pub(crate) perp: Option<PerpSpec>,
}

/// The fields of a `perp_market` line, as written (decimals not yet converted).
struct PerpFields {
    tick: Decimal,
    lot: Decimal,
    min_qty: Option<Decimal>,
    max_price: Option<Decimal>,
    maker_fee_bps: i64,
    taker_fee_bps: i64,
    max_leverage: i64,
    /// `(notional_up_to, imr, mmr)` per row, if given.
    tiers: Option<Vec<(Option<Decimal>, Decimal, Decimal)>>,
    open_interest_cap: Option<Decimal>,
    price_band: Option<Decimal>,
    interest: Option<Decimal>,
    funding_cap: Option<Decimal>,
    impact_notional: Option<Decimal>,
    liquidation_chunk_notional: Option<Decimal>,
    liquidation_fee: Option<Decimal>,
}

/// A market's book parameters in engine units.
struct BookParams {
    quote_units_per_tick_lot: Units,
    min_lots: Lots,
    max_price_ticks: Ticks,
    maker_fee_bps: i32,
    taker_fee_bps: i32,
}

/// A line that is not a valid command: the `detail` of an `error` event.
type Malformed = String;

/// What a rejected command echoes back: the ids as the client wrote them.
#[derive(Clone, Debug, Default)]
pub struct Echo {
    oid: Option<Value>,
    account: Option<Value>,
}

/// One engine call that a line asks for, with what its events need to be rendered.
#[derive(Clone, Debug)]
// One or two per input line, consumed at once: boxing the echo would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Step {
    /// Run a command.
    Run {
        /// The engine command.
        command: Command,
        /// Index of the market it concerns (for sizes and prices), if any.
        market: Option<usize>,
        /// What a rejection repeats.
        echo: Echo,
    },
    /// Report a market's aggregated book.
    Book {
        /// Index of the market.
        market: usize,
        /// Levels per side.
        depth: usize,
    },
}

/// The translation layer between the JSON Lines format and the engine (no engine inside).
#[derive(Default)]
pub struct Translator {
    pub(crate) assets: HashMap<String, AssetInfo>,
    pub(crate) asset_names: Vec<String>,
    pub(crate) markets: Vec<MarketInfo>,
    pub(crate) market_ids: HashMap<String, MarketId>,
    /// The collateral asset of every perp market, once one exists.
    pub(crate) collateral: Option<AssetInfo>,
    accounts: Interner,
    pub(crate) oids: Interner,
    steps: Vec<Step>,
}

impl Translator {
    /// A translator for a node: account and order ids must be integers below 2^63, so that
    /// they mean the same after a restart.
    pub fn numbers_only() -> Self {
        let mut translator = Translator::default();
        translator.accounts.numbers_only = true;
        translator.oids.numbers_only = true;
        translator
    }

    /// The ERC-20 name, symbol (both the asset's name) and decimals of every declared
    /// asset, for NexusEVM's Core asset tokens (docs/evm.md), in asset id order.
    pub fn token_specs(&self) -> Vec<evm::token::TokenSpec> {
        let mut specs: Vec<evm::token::TokenSpec> = self
            .assets
            .iter()
            .map(|(name, info)| evm::token::TokenSpec {
                asset: info.id,
                name: name.clone(),
                symbol: name.clone(),
                decimals: u8::try_from(info.decimals).unwrap_or(u8::MAX),
            })
            .collect();
        specs.sort_by_key(|spec| spec.asset);
        specs
    }

    /// Translates input line `seq` (1-based): rejections and errors found here go to `out`;
    /// the engine calls it asks for are returned, in order. Blank lines produce nothing.
    /// Never panics, whatever the text.
    pub fn line(&mut self, seq: u64, text: &str, out: &mut Vec<Output>) -> Vec<Step> {
        self.steps.clear();
        if text.trim().is_empty() {
            return Vec::new();
        }
        if let Err(detail) = self.command(seq, text, out) {
            self.steps.clear();
            out.push(Output::Error {
                seq,
                line: seq,
                reason: "malformed",
                detail: clip(detail),
            });
        }
        std::mem::take(&mut self.steps)
    }

    /// The name of market index `market`.
    pub fn market_name(&self, market: usize) -> Option<&str> {
        self.markets.get(market).map(|info| info.name.as_str())
    }

    /// Whether `text` asks to register an asset or market (`op` is `asset`, `market` or
    /// `perp_market`). A node takes those only from its genesis.
    pub fn is_registry_line(text: &str) -> bool {
        serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|value| value.get("op").and_then(Value::as_str).map(str::to_owned))
            .is_some_and(|op| op == "asset" || op == "market" || op == "perp_market")
    }

    /// The engine id of an account as written (`"insurance"` is the insurance fund).
    pub fn account_id(&mut self, value: &Value) -> Result<AccountId, Malformed> {
        if value.as_str() == Some(INSURANCE_NAME) {
            return Ok(INSURANCE_ACCOUNT);
        }
        self.accounts.intern("account", value)
    }

    /// An engine account id as written in commands.
    pub(crate) fn account_value(&self, id: AccountId) -> Value {
        if id == INSURANCE_ACCOUNT {
            return Value::from(INSURANCE_NAME);
        }
        self.accounts.value(id)
    }
}

fn reject(seq: u64, echo: Echo, reason: &'static str, detail: Option<String>) -> Output {
    Output::Rejected {
        seq,
        oid: echo.oid,
        account: echo.account,
        reason,
        detail: detail.map(clip),
    }
}

/// Most characters of a `detail` text (they may quote user input).
const MAX_DETAIL_CHARS: usize = 240;

fn clip(mut detail: String) -> String {
    if let Some((cut, _)) = detail.char_indices().nth(MAX_DETAIL_CHARS) {
        detail.truncate(cut);
        detail.push('…');
    }
    detail
}

/// An amount of an asset with `decimals` as a count of its smallest unit, or the detail of
/// an `invalid_qty` rejection.
fn amount_units(amount: Decimal, decimals: u32, asset: &str) -> Result<Units, String> {
    match decimal::to_whole(amount, decimal::unit_of(decimals)) {
        Whole::Exact(n) => Ok(n),
        Whole::NotWhole => Err(format!(
            "amount {} has more than {decimals} decimals, the precision of {asset:?}",
            decimal::format(amount)
        )),
        Whole::TooLarge { .. } => Err("amount is too large".to_string()),
    }
}

/// A rate written as a decimal fraction (`"0.05"` = 5%) in parts per billion, exactly.
fn rate_ppb(field: &str, rate: Decimal) -> Result<i64, String> {
    match decimal::to_whole(rate, PPB_UNIT) {
        Whole::Exact(n) => Ok(n),
        Whole::NotWhole => Err(format!(
            "{field} {} is finer than 0.000000001 (rates are whole parts per billion)",
            decimal::format(rate)
        )),
        Whole::TooLarge { .. } => Err(format!("{field} is out of range")),
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

fn cancel_reason(reason: CancelReason) -> &'static str {
    reason.as_str()
}

/// Typed access to a command's fields, with messages that name the field.
#[derive(Clone, Copy)]
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// The field, treating `null` as absent.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn present(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn required(&self, name: &str) -> Result<&'a Value, Malformed> {
        self.get(name)
            .ok_or_else(|| format!("missing field {name:?}"))
    }

    fn str(&self, name: &str) -> Result<&'a str, Malformed> {
        let value = self.required(name)?;
        value.as_str().ok_or_else(|| {
            format!(
                "field {name:?}: expected a string, got {}",
                decimal::short_json(value)
            )
        })
    }

    fn opt_str(&self, name: &str) -> Result<Option<&'a str>, Malformed> {
        match self.get(name) {
            None => Ok(None),
            Some(_) => self.str(name).map(Some),
        }
    }

    /// An account or order id: a non-negative integer or a non-empty string.
    fn id(&self, name: &str) -> Result<&'a Value, Malformed> {
        let value = self.required(name)?;
        match value {
            Value::Number(n) if n.is_u64() => Ok(value),
            Value::String(s) if !s.is_empty() => Ok(value),
            _ => Err(format!(
                "field {name:?}: expected an integer 0..=2^64-1 or a non-empty string, got {}",
                decimal::short_json(value)
            )),
        }
    }

    fn decimal(&self, name: &str) -> Result<Decimal, Malformed> {
        decimal::parse_json(self.required(name)?).map_err(|e| format!("field {name:?}: {e}"))
    }

    fn opt_decimal(&self, name: &str) -> Result<Option<Decimal>, Malformed> {
        match self.get(name) {
            None => Ok(None),
            Some(_) => self.decimal(name).map(Some),
        }
    }

    fn opt_int(&self, name: &str) -> Result<Option<i64>, Malformed> {
        match self.get(name) {
            None => Ok(None),
            Some(value) => value.as_i64().map(Some).ok_or_else(|| {
                format!(
                    "field {name:?}: expected an integer, got {}",
                    decimal::short_json(value)
                )
            }),
        }
    }

    fn int(&self, name: &str) -> Result<i64, Malformed> {
        self.opt_int(name)?
            .ok_or_else(|| format!("missing field {name:?}"))
    }

    fn opt_bool(&self, name: &str) -> Result<Option<bool>, Malformed> {
        match self.get(name) {
            None => Ok(None),
            Some(value) => value.as_bool().map(Some).ok_or_else(|| {
                format!(
                    "field {name:?}: expected true or false, got {}",
                    decimal::short_json(value)
                )
            }),
        }
    }

    fn decimals(&self, name: &str) -> Result<Option<u32>, Malformed> {
        match self.opt_int(name)? {
            None => Ok(None),
            Some(n) if (0..=decimal::MAX_DECIMALS as i64).contains(&n) => Ok(Some(n as u32)),
            Some(n) => Err(format!(
                "field {name:?}: expected 0..={}, got {n}",
                decimal::MAX_DECIMALS
            )),
        }
    }

    fn side(&self, name: &str) -> Result<Side, Malformed> {
        match self.str(name)? {
            "buy" => Ok(Side::Buy),
            "sell" => Ok(Side::Sell),
            other => Err(format!(
                "field {name:?}: expected \"buy\" or \"sell\", got {other:?}"
            )),
        }
    }
}

// ---- streaming ---------------------------------------------------------------------------

mod describe;
mod orders;
mod perps;
mod registry;
mod render;
mod run;

pub use run::{run, Replayer, RunError, RunOptions};

#[cfg(test)]
mod tests;
