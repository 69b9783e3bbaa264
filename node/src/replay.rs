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

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};

use engine::{
    AssetId, CancelReason, Command, Engine, EngineConfig, Event, Lots, MarketId, MarketSpec,
    NewOrder, SelfTradePrevention, Side, Ticks, TimeInForce, DEFAULT_MAX_PRICE_TICKS,
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
struct Interner {
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
    fn value(&self, id: u64) -> Value {
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
struct AssetInfo {
    id: AssetId,
    decimals: u32,
}

struct MarketInfo {
    name: String,
    id: MarketId,
    tick: Decimal,
    lot: Decimal,
    /// One smallest unit of the quote asset, as a decimal (`10^-decimals`).
    quote_unit: Decimal,
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
    assets: HashMap<String, AssetInfo>,
    asset_names: Vec<String>,
    markets: Vec<MarketInfo>,
    market_ids: HashMap<String, MarketId>,
    accounts: Interner,
    oids: Interner,
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

    /// Whether `text` asks to register an asset or market (`op` is `asset` or `market`).
    /// A node takes those only from its genesis.
    pub fn is_registry_line(text: &str) -> bool {
        serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|value| value.get("op").and_then(Value::as_str).map(str::to_owned))
            .is_some_and(|op| op == "asset" || op == "market")
    }

    /// The JSON Lines command that translates back to `command` (the inverse of [`line`] for
    /// every command this translator produced; used by `nexus wal dump`). `None` for registry
    /// commands (written as `asset`/`market` lines by whoever kept their names) and for ids
    /// this translator never gave out.
    ///
    /// [`line`]: Translator::line
    pub fn command_json(&self, command: &Command) -> Option<Value> {
        let asset_name = |id: AssetId| self.asset_names.get(id as usize);
        let market = |id: MarketId| self.markets.get(id as usize);
        let amount = |id: AssetId, units: i64| {
            let name = asset_name(id)?;
            let info = self.assets.get(name)?;
            Some((
                name.clone(),
                decimal::format_scaled(units, decimal::unit_of(info.decimals)),
            ))
        };
        let tif = |tif: TimeInForce| match tif {
            TimeInForce::Gtc => "gtc",
            TimeInForce::Ioc => "ioc",
            TimeInForce::Fok => "fok",
            TimeInForce::Alo => "alo",
        };
        let stp = |stp: SelfTradePrevention| match stp {
            SelfTradePrevention::CancelMaker => "cancel_maker",
            SelfTradePrevention::CancelTaker => "cancel_taker",
            SelfTradePrevention::CancelBoth => "cancel_both",
        };
        Some(match *command {
            Command::CreateAsset { .. } | Command::CreateMarket(_) => return None,
            Command::Deposit {
                account,
                asset,
                amount: units,
            }
            | Command::Withdraw {
                account,
                asset,
                amount: units,
            } => {
                let (name, text) = amount(asset, units)?;
                let op = if matches!(command, Command::Deposit { .. }) {
                    "deposit"
                } else {
                    "withdraw"
                };
                serde_json::json!({
                    "op": op,
                    "account": self.accounts.value(account),
                    "asset": name,
                    "amount": text,
                })
            }
            Command::Place(order) => {
                let info = market(order.market)?;
                let mut value = serde_json::json!({
                    "op": "order",
                    "account": self.accounts.value(order.account),
                    "market": info.name,
                    "oid": self.oids.value(order.oid),
                    "side": side_name(order.side),
                    "qty": decimal::format_scaled(order.qty, info.lot),
                    "tif": tif(order.tif),
                    "stp": stp(order.stp),
                });
                match order.price {
                    Some(price) => {
                        value["price"] = decimal::format_scaled(price, info.tick).into();
                    }
                    None => value["type"] = "market".into(),
                }
                value
            }
            Command::Cancel {
                account,
                market: id,
                oid,
            } => serde_json::json!({
                "op": "cancel",
                "account": self.accounts.value(account),
                "market": market(id)?.name,
                "oid": self.oids.value(oid),
            }),
            Command::CancelAll {
                account,
                market: id,
            } => serde_json::json!({
                "op": "cancel_all",
                "account": self.accounts.value(account),
                "market": market(id)?.name,
            }),
            Command::Modify {
                account,
                market: id,
                oid,
                price,
                qty,
            } => {
                let info = market(id)?;
                serde_json::json!({
                    "op": "modify",
                    "account": self.accounts.value(account),
                    "market": info.name,
                    "oid": self.oids.value(oid),
                    "price": decimal::format_scaled(price, info.tick),
                    "qty": decimal::format_scaled(qty, info.lot),
                })
            }
            // Perp commands are not in the JSON Lines format yet (issue #5, in progress).
            Command::CreatePerpMarket(_)
            | Command::TransferCollateral { .. }
            | Command::SetLeverage { .. }
            | Command::IsolatedMargin { .. }
            | Command::Oracle { .. }
            | Command::Funding { .. } => return None,
        })
    }

    fn command(&mut self, seq: u64, text: &str, out: &mut Vec<Output>) -> Result<(), Malformed> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let Value::Object(map) = value else {
            return Err(format!(
                "expected a JSON object, got {}",
                decimal::short_json(&value)
            ));
        };
        let fields = Fields(&map);
        let op = fields.str("op")?;
        match op {
            "asset" => self.op_asset(seq, fields, out),
            "market" => self.op_market(seq, fields, out),
            "deposit" => self.op_transfer(seq, fields, true, out),
            "withdraw" => self.op_transfer(seq, fields, false, out),
            "order" => self.op_order(seq, fields, out),
            "cancel" => self.op_cancel(seq, fields, out),
            "cancel_all" => self.op_cancel_all(seq, fields, out),
            "modify" => self.op_modify(seq, fields, out),
            "book" => self.op_book(seq, fields, out),
            other => Err(format!(
                "unknown op {other:?} (expected asset, market, deposit, withdraw, order, cancel, cancel_all, modify or book)"
            )),
        }
    }

    // ---- admin -------------------------------------------------------------------------

    fn op_asset(&mut self, seq: u64, f: Fields, out: &mut Vec<Output>) -> Result<(), Malformed> {
        let name = f.str("asset")?;
        let decimals = f.decimals("decimals")?.unwrap_or(DEFAULT_DECIMALS);
        if let Some(info) = self.assets.get(name) {
            if info.decimals != decimals {
                out.push(reject(
                    seq,
                    Echo::default(),
                    "already_exists",
                    Some(format!(
                        "asset {name:?} already exists with {} decimals",
                        info.decimals
                    )),
                ));
            }
            return Ok(());
        }
        self.register_asset(name, decimals);
        Ok(())
    }

    fn register_asset(&mut self, name: &str, decimals: u32) -> AssetInfo {
        let info = AssetInfo {
            id: self.assets.len() as AssetId,
            decimals,
        };
        self.steps.push(Step::Run {
            command: Command::CreateAsset { asset: info.id },
            market: None,
            echo: Echo::default(),
        });
        self.assets.insert(name.to_string(), info);
        self.asset_names.push(name.to_string());
        info
    }

    fn op_market(&mut self, seq: u64, f: Fields, out: &mut Vec<Output>) -> Result<(), Malformed> {
        let name = f.str("market")?;
        let base = f.str("base")?;
        let quote = f.str("quote")?;
        let tick = f.decimal("tick")?;
        let lot = f.decimal("lot")?;
        let min_qty = f.opt_decimal("min_qty")?;
        let max_price = f.opt_decimal("max_price")?;
        let maker_fee_bps = f.opt_int("maker_fee_bps")?.unwrap_or(0);
        let taker_fee_bps = f.opt_int("taker_fee_bps")?.unwrap_or(0);

        let invalid = |detail: String| reject(seq, Echo::default(), "invalid_market", Some(detail));
        if self.market_ids.contains_key(name) {
            out.push(reject(
                seq,
                Echo::default(),
                "already_exists",
                Some(format!("market {name:?} already exists")),
            ));
            return Ok(());
        }
        match self.market_spec(
            base,
            quote,
            tick,
            lot,
            min_qty,
            max_price,
            maker_fee_bps,
            taker_fee_bps,
        ) {
            Err(detail) => out.push(invalid(detail)),
            Ok(mut spec) => {
                let base_info = match self.assets.get(base) {
                    Some(&info) => info,
                    None => self.register_asset(base, DEFAULT_DECIMALS),
                };
                let quote_info = match self.assets.get(quote) {
                    Some(&info) => info,
                    None => self.register_asset(quote, DEFAULT_DECIMALS),
                };
                spec.market = self.markets.len() as MarketId;
                spec.base = base_info.id;
                spec.quote = quote_info.id;
                // Checked above exactly as the engine checks, so the engine accepts it.
                self.steps.push(Step::Run {
                    command: Command::CreateMarket(spec),
                    market: None,
                    echo: Echo::default(),
                });
                self.market_ids.insert(name.to_string(), spec.market);
                self.markets.push(MarketInfo {
                    name: name.to_string(),
                    id: spec.market,
                    tick,
                    lot,
                    quote_unit: decimal::unit_of(quote_info.decimals),
                });
            }
        }
        Ok(())
    }

    /// Converts a market's decimal parameters to an engine spec (ids left 0), checking
    /// everything the engine would, so that a refused market registers no asset either.
    #[allow(clippy::too_many_arguments)]
    fn market_spec(
        &self,
        base: &str,
        quote: &str,
        tick: Decimal,
        lot: Decimal,
        min_qty: Option<Decimal>,
        max_price: Option<Decimal>,
        maker_fee_bps: i64,
        taker_fee_bps: i64,
    ) -> Result<MarketSpec, String> {
        if base == quote {
            return Err(format!("base and quote are the same asset {base:?}"));
        }
        if tick <= Decimal::ZERO {
            return Err(format!("tick {} is not positive", decimal::format(tick)));
        }
        if lot <= Decimal::ZERO {
            return Err(format!("lot {} is not positive", decimal::format(lot)));
        }
        let decimals_of = |asset: &str| {
            self.assets
                .get(asset)
                .map_or(DEFAULT_DECIMALS, |info| info.decimals)
        };
        let (base_decimals, quote_decimals) = (decimals_of(base), decimals_of(quote));
        let base_unit = decimal::unit_of(base_decimals);
        let quote_unit = decimal::unit_of(quote_decimals);
        let base_units_per_lot = match decimal::to_whole(lot, base_unit) {
            Whole::Exact(n) => n,
            Whole::NotWhole => {
                return Err(format!(
                    "lot {} is not a whole number of {base:?} units ({base_decimals} decimals)",
                    decimal::format(lot)
                ))
            }
            Whole::TooLarge { .. } => return Err(format!("lot {} is too large", lot)),
        };
        let tick_lot = tick
            .checked_mul(lot)
            .ok_or_else(|| "tick * lot is out of range".to_string())?;
        let quote_units_per_tick_lot = match decimal::to_whole(tick_lot, quote_unit) {
            Whole::Exact(n) if n >= 1 => n,
            Whole::Exact(_) | Whole::NotWhole => {
                return Err(format!(
                    "tick * lot = {} is not a whole number of {quote:?} units ({quote_decimals} decimals)",
                    decimal::format(tick_lot)
                ))
            }
            Whole::TooLarge { .. } => return Err("tick * lot is too large".to_string()),
        };
        let min_lots = match min_qty.map(|q| decimal::to_whole(q, lot)) {
            None => 1,
            Some(Whole::Exact(n)) if n >= 1 => n,
            Some(Whole::Exact(_)) => return Err("min_qty is not positive".to_string()),
            Some(_) => {
                return Err(format!(
                    "min_qty {} is not a whole number of lots of {}",
                    decimal::format(min_qty.unwrap_or_default()),
                    decimal::format(lot)
                ))
            }
        };
        let top = i64::MAX / quote_units_per_tick_lot;
        let max_price_ticks = match max_price.map(|p| decimal::to_whole(p, tick)) {
            None => DEFAULT_MAX_PRICE_TICKS.min(top),
            Some(Whole::Exact(n)) if (1..=MAX_PRICE_TICKS_LIMIT).contains(&n) => n,
            Some(Whole::NotWhole) => {
                return Err(format!(
                    "max_price {} is not a whole number of ticks of {}",
                    decimal::format(max_price.unwrap_or_default()),
                    decimal::format(tick)
                ))
            }
            Some(_) => {
                return Err(format!(
                    "max_price must be between 1 and 2^28 ticks of {}",
                    decimal::format(tick)
                ))
            }
        };
        if max_price_ticks < 1 || max_price_ticks > top {
            return Err(format!(
                "max_price * qty per lot overflows the quote asset's range: at most {} ticks",
                top.min(MAX_PRICE_TICKS_LIMIT)
            ));
        }
        let fee = |bps: i64| i32::try_from(bps).unwrap_or(i32::MAX);
        let (maker_fee_bps, taker_fee_bps) = (fee(maker_fee_bps), fee(taker_fee_bps));
        if !(0..10_000).contains(&taker_fee_bps) {
            return Err("taker_fee_bps must be in 0..=9999".to_string());
        }
        if !(-taker_fee_bps..10_000).contains(&maker_fee_bps) {
            return Err("maker_fee_bps must be in -taker_fee_bps..=9999".to_string());
        }
        Ok(MarketSpec {
            market: 0,
            base: 0,
            quote: 0,
            base_units_per_lot,
            quote_units_per_tick_lot,
            min_lots,
            max_price_ticks,
            maker_fee_bps,
            taker_fee_bps,
        })
    }

    fn op_transfer(
        &mut self,
        seq: u64,
        f: Fields,
        deposit: bool,
        out: &mut Vec<Output>,
    ) -> Result<(), Malformed> {
        let account_value = f.id("account")?;
        let asset = f.str("asset")?;
        let amount = f.decimal("amount")?;
        let echo = Echo {
            oid: None,
            account: Some(account_value.clone()),
        };
        let Some(&info) = self.assets.get(asset) else {
            out.push(reject(
                seq,
                echo,
                "unknown_asset",
                Some(format!("no asset {asset:?}")),
            ));
            return Ok(());
        };
        let amount = match decimal::to_whole(amount, decimal::unit_of(info.decimals)) {
            Whole::Exact(n) => n,
            Whole::NotWhole => {
                out.push(reject(
                    seq,
                    echo,
                    "invalid_qty",
                    Some(format!(
                        "amount {} has more than {} decimals, the precision of {asset:?}",
                        decimal::format(amount),
                        info.decimals
                    )),
                ));
                return Ok(());
            }
            Whole::TooLarge { .. } => {
                out.push(reject(
                    seq,
                    echo,
                    "invalid_qty",
                    Some("amount is too large".to_string()),
                ));
                return Ok(());
            }
        };
        let account = self.accounts.intern("account", account_value)?;
        let command = if deposit {
            Command::Deposit {
                account,
                asset: info.id,
                amount,
            }
        } else {
            Command::Withdraw {
                account,
                asset: info.id,
                amount,
            }
        };
        self.step(seq, &command, None, echo, out);
        Ok(())
    }

    // ---- orders ------------------------------------------------------------------------

    fn op_order(&mut self, seq: u64, f: Fields, out: &mut Vec<Output>) -> Result<(), Malformed> {
        let account_value = f.id("account")?;
        let market = f.str("market")?;
        let oid_value = f.id("oid")?;
        let side = f.side("side")?;
        let is_market = match f.opt_str("type")? {
            None | Some("limit") => false,
            Some("market") => true,
            Some(other) => {
                return Err(format!(
                    "field \"type\": expected \"limit\" or \"market\", got {other:?}"
                ))
            }
        };
        let price = if is_market {
            if f.present("price") {
                return Err("field \"price\": a market order has no price".to_string());
            }
            None
        } else {
            Some(f.decimal("price")?)
        };
        let qty = f.decimal("qty")?;
        let tif = match f.opt_str("tif")? {
            None if is_market => TimeInForce::Ioc,
            None => TimeInForce::Gtc,
            Some("gtc") => TimeInForce::Gtc,
            Some("ioc") => TimeInForce::Ioc,
            Some("fok") => TimeInForce::Fok,
            Some("alo") => TimeInForce::Alo,
            Some(other) => {
                return Err(format!(
                    "field \"tif\": expected gtc, ioc, fok or alo, got {other:?}"
                ))
            }
        };
        let stp = match f.opt_str("stp")? {
            None | Some("cancel_maker") => SelfTradePrevention::CancelMaker,
            Some("cancel_taker") => SelfTradePrevention::CancelTaker,
            Some("cancel_both") => SelfTradePrevention::CancelBoth,
            Some(other) => {
                return Err(format!(
                "field \"stp\": expected cancel_maker, cancel_taker or cancel_both, got {other:?}"
            ))
            }
        };

        let echo = Echo {
            oid: Some(oid_value.clone()),
            account: Some(account_value.clone()),
        };
        let Some(index) = self.market_index(seq, market, &echo, out) else {
            return Ok(());
        };
        let Some((price, qty)) = self.price_qty(seq, index, price, qty, &echo, out) else {
            return Ok(());
        };
        let order = NewOrder {
            account: self.accounts.intern("account", account_value)?,
            market: self.markets[index].id,
            oid: self.oids.intern("oid", oid_value)?,
            side,
            price,
            qty,
            tif,
            stp,
            reduce_only: false,
        };
        self.step(seq, &Command::Place(order), Some(index), echo, out);
        Ok(())
    }

    fn op_cancel(&mut self, seq: u64, f: Fields, out: &mut Vec<Output>) -> Result<(), Malformed> {
        let account_value = f.id("account")?;
        let market = f.str("market")?;
        let oid_value = f.id("oid")?;
        let echo = Echo {
            oid: Some(oid_value.clone()),
            account: Some(account_value.clone()),
        };
        let Some(index) = self.market_index(seq, market, &echo, out) else {
            return Ok(());
        };
        let command = Command::Cancel {
            account: self.accounts.intern("account", account_value)?,
            market: self.markets[index].id,
            oid: self.oids.intern("oid", oid_value)?,
        };
        self.step(seq, &command, Some(index), echo, out);
        Ok(())
    }

    fn op_cancel_all(
        &mut self,
        seq: u64,
        f: Fields,
        out: &mut Vec<Output>,
    ) -> Result<(), Malformed> {
        let account_value = f.id("account")?;
        let market = f.str("market")?;
        let echo = Echo {
            oid: None,
            account: Some(account_value.clone()),
        };
        let Some(index) = self.market_index(seq, market, &echo, out) else {
            return Ok(());
        };
        let command = Command::CancelAll {
            account: self.accounts.intern("account", account_value)?,
            market: self.markets[index].id,
        };
        self.step(seq, &command, Some(index), echo, out);
        Ok(())
    }

    fn op_modify(&mut self, seq: u64, f: Fields, out: &mut Vec<Output>) -> Result<(), Malformed> {
        let account_value = f.id("account")?;
        let market = f.str("market")?;
        let oid_value = f.id("oid")?;
        let price = f.decimal("price")?;
        let qty = f.decimal("qty")?;
        let echo = Echo {
            oid: Some(oid_value.clone()),
            account: Some(account_value.clone()),
        };
        let Some(index) = self.market_index(seq, market, &echo, out) else {
            return Ok(());
        };
        let Some((Some(price), qty)) = self.price_qty(seq, index, Some(price), qty, &echo, out)
        else {
            return Ok(());
        };
        let command = Command::Modify {
            account: self.accounts.intern("account", account_value)?,
            market: self.markets[index].id,
            oid: self.oids.intern("oid", oid_value)?,
            price,
            qty,
        };
        self.step(seq, &command, Some(index), echo, out);
        Ok(())
    }

    fn op_book(&mut self, seq: u64, f: Fields, out: &mut Vec<Output>) -> Result<(), Malformed> {
        let market = f.str("market")?;
        let depth = match f.opt_int("depth")? {
            None => DEFAULT_BOOK_DEPTH,
            Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
            Some(n) => return Err(format!("field \"depth\": expected >= 0, got {n}")),
        };
        let Some(index) = self.market_index(seq, market, &Echo::default(), out) else {
            return Ok(());
        };
        self.steps.push(Step::Book {
            market: index,
            depth,
        });
        Ok(())
    }

    /// Renders aggregated levels (`(ticks, lots)`, best first) of market index `market`.
    pub fn render_book(
        &self,
        seq: u64,
        market: usize,
        bids: &[(Ticks, Lots)],
        asks: &[(Ticks, Lots)],
        out: &mut Vec<Output>,
    ) {
        let info = &self.markets[market];
        let render = |levels: &[(Ticks, Lots)]| {
            levels
                .iter()
                .map(|&(price, lots)| {
                    [
                        decimal::format_scaled(price, info.tick),
                        decimal::format_scaled(lots, info.lot),
                    ]
                })
                .collect()
        };
        out.push(Output::Book {
            seq,
            market: info.name.clone(),
            bids: render(bids),
            asks: render(asks),
        });
    }

    /// The market's index, or a pushed `unknown_market` rejection.
    fn market_index(
        &self,
        seq: u64,
        market: &str,
        echo: &Echo,
        out: &mut Vec<Output>,
    ) -> Option<usize> {
        match self.market_ids.get(market) {
            Some(&id) => Some(id as usize),
            None => {
                out.push(reject(
                    seq,
                    echo.clone(),
                    "unknown_market",
                    Some(format!("no market {market:?}")),
                ));
                None
            }
        }
    }

    /// A price as ticks of the market, exactly (`tick_size` if it is not a whole number of
    /// ticks). A whole price beyond `i64` becomes a value the engine refuses for the same
    /// reason (`invalid_price`: <= 0 or above the maximum).
    fn ticks(&self, index: usize, price: Decimal) -> Result<Ticks, (&'static str, String)> {
        let info = &self.markets[index];
        match decimal::to_whole(price, info.tick) {
            Whole::Exact(n) => Ok(n),
            Whole::NotWhole => Err((
                "tick_size",
                format!(
                    "price {} is not a multiple of the tick {}",
                    decimal::format(price),
                    decimal::format(info.tick)
                ),
            )),
            Whole::TooLarge { negative } => Ok(if negative { 0 } else { Ticks::MAX }),
        }
    }

    /// A size as lots of the market, exactly (`lot_size` if it is not a whole number of
    /// lots; `invalid_qty` if it is too large to represent).
    fn lots(&self, index: usize, qty: Decimal) -> Result<Lots, (&'static str, String)> {
        let info = &self.markets[index];
        match decimal::to_whole(qty, info.lot) {
            Whole::Exact(n) => Ok(n),
            Whole::NotWhole => Err((
                "lot_size",
                format!(
                    "qty {} is not a multiple of the lot {}",
                    decimal::format(qty),
                    decimal::format(info.lot)
                ),
            )),
            // The engine refuses sizes <= 0 as invalid_qty.
            Whole::TooLarge { negative: true } => Ok(0),
            Whole::TooLarge { negative: false } => {
                Err(("invalid_qty", "qty is too large".to_string()))
            }
        }
    }

    /// Converts an order's price (if any) and size, or pushes the rejection.
    fn price_qty(
        &self,
        seq: u64,
        index: usize,
        price: Option<Decimal>,
        qty: Decimal,
        echo: &Echo,
        out: &mut Vec<Output>,
    ) -> Option<(Option<Ticks>, Lots)> {
        let converted = price
            .map(|p| self.ticks(index, p))
            .transpose()
            .and_then(|ticks| Ok((ticks, self.lots(index, qty)?)));
        match converted {
            Ok(converted) => Some(converted),
            Err((reason, detail)) => {
                out.push(reject(seq, echo.clone(), reason, Some(detail)));
                None
            }
        }
    }

    // ---- engine events -----------------------------------------------------------------

    /// Asks for one command to be run.
    fn step(
        &mut self,
        _seq: u64,
        command: &Command,
        market: Option<usize>,
        echo: Echo,
        _out: &mut Vec<Output>,
    ) {
        self.steps.push(Step::Run {
            command: *command,
            market,
            echo,
        });
    }

    /// Renders the events one command caused. `market` and `echo` come from its [`Step`].
    pub fn render(
        &self,
        seq: u64,
        events: &[Event],
        market: Option<usize>,
        echo: Echo,
        out: &mut Vec<Output>,
    ) {
        let mut echo = Some(echo);
        for event in events {
            let record = match *event {
                // Perp events are not in the JSON Lines format yet (issue #5, in progress).
                Event::OraclePrice { .. }
                | Event::Funding { .. }
                | Event::Position { .. }
                | Event::Liquidation { .. }
                | Event::Adl { .. } => continue,
                Event::Rejected { reason, .. } => {
                    reject(seq, echo.take().unwrap_or_default(), reason.as_str(), None)
                }
                Event::Accepted { account, oid, .. } => Output::Accepted {
                    seq,
                    oid: self.oids.value(oid),
                    account: self.accounts.value(account),
                },
                Event::Fill {
                    market: market_id,
                    taker_account,
                    taker_oid,
                    maker_account,
                    maker_oid,
                    taker_side,
                    price,
                    qty,
                    taker_fee,
                    maker_fee,
                    // The replay format reports sizes left through `canceled` and the book,
                    // as it did before fills carried them (docs/replay.md).
                    taker_left: _,
                    maker_left: _,
                } => {
                    let info = &self.markets[market_id as usize];
                    Output::Fill {
                        seq,
                        market: info.name.clone(),
                        taker_oid: self.oids.value(taker_oid),
                        maker_oid: self.oids.value(maker_oid),
                        taker_account: self.accounts.value(taker_account),
                        maker_account: self.accounts.value(maker_account),
                        side: side_name(taker_side),
                        price: decimal::format_scaled(price, info.tick),
                        qty: decimal::format_scaled(qty, info.lot),
                        taker_fee: decimal::format_scaled(taker_fee, info.quote_unit),
                        maker_fee: decimal::format_scaled(maker_fee, info.quote_unit),
                    }
                }
                Event::Canceled {
                    market: market_id,
                    account,
                    oid,
                    remaining,
                    reason,
                } => Output::Canceled {
                    seq,
                    oid: self.oids.value(oid),
                    account: self.accounts.value(account),
                    qty: self.size(self.known_market(market_id).or(market), remaining),
                    reason: cancel_reason(reason),
                },
                Event::Modified {
                    market: market_id,
                    account,
                    oid,
                    price,
                    qty,
                } => Output::Modified {
                    seq,
                    oid: self.oids.value(oid),
                    account: self.accounts.value(account),
                    price: self.known_market(market_id).or(market).map_or_else(
                        || price.to_string(),
                        |m| decimal::format_scaled(price, self.markets[m].tick),
                    ),
                    qty: self.size(self.known_market(market_id).or(market), qty),
                },
            };
            out.push(record);
        }
    }

    /// The translator's index of an engine market id, if the translator knows it.
    fn known_market(&self, market: MarketId) -> Option<usize> {
        let index = market as usize;
        (index < self.markets.len()).then_some(index)
    }

    fn size(&self, market: Option<usize>, lots: Lots) -> String {
        match market {
            Some(m) => decimal::format_scaled(lots, self.markets[m].lot),
            None => lots.to_string(),
        }
    }
}

/// A translator driving an engine: the whole of `nexus replay` but the I/O.
pub struct Replayer {
    translator: Translator,
    engine: Engine,
    events: Vec<Event>,
    bids: Vec<(Ticks, Lots)>,
    asks: Vec<(Ticks, Lots)>,
}

impl Default for Replayer {
    fn default() -> Self {
        Replayer::new(EngineConfig::default())
    }
}

impl Replayer {
    /// A replayer over a fresh engine sized by `config`.
    pub fn new(config: EngineConfig) -> Self {
        Replayer {
            translator: Translator::default(),
            engine: Engine::new(config),
            events: Vec::new(),
            bids: Vec::new(),
            asks: Vec::new(),
        }
    }

    /// The engine being driven (for queries).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine's state hash as lowercase hex.
    pub fn state_hash_hex(&self) -> String {
        sequencer::hex(&self.engine.state_hash())
    }

    /// Processes input line `seq` (1-based), appending its output records to `out`.
    /// Blank lines produce nothing. Never panics, whatever the text.
    pub fn line(&mut self, seq: u64, text: &str, out: &mut Vec<Output>) {
        for step in self.translator.line(seq, text, out) {
            match step {
                Step::Run {
                    command,
                    market,
                    echo,
                } => {
                    self.events.clear();
                    self.engine.step(&command, &mut self.events);
                    self.translator.render(seq, &self.events, market, echo, out);
                }
                Step::Book { market, depth } => {
                    let id = self.translator.markets[market].id;
                    self.bids.clear();
                    self.asks.clear();
                    self.engine.depth(id, Side::Buy, depth, &mut self.bids);
                    self.engine.depth(id, Side::Sell, depth, &mut self.asks);
                    self.translator
                        .render_book(seq, market, &self.bids, &self.asks, out);
                }
            }
        }
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

/// Options of one replay run.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Engine sizing.
    pub config: EngineConfig,
    /// Write an `end` record with the state hash after the last line.
    pub state_hash: bool,
}

/// Why a replay run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Reading the input failed.
    #[error("reading input: {0}")]
    Input(#[source] io::Error),
    /// Writing the output failed (for instance a closed pipe).
    #[error("writing output: {0}")]
    Output(#[source] io::Error),
}

/// Replays every line of `input` into `output`, one line at a time, and returns the number
/// of lines read. The output is flushed whenever the input has no more buffered data, so a
/// live pipe sees each command's events as soon as the command is read.
pub fn run<R: Read, W: Write>(
    input: &mut BufReader<R>,
    output: &mut W,
    options: RunOptions,
) -> Result<u64, RunError> {
    let mut replayer = Replayer::new(options.config);
    let mut line = Vec::new();
    let mut records = Vec::new();
    let mut json = Vec::new();
    let mut seq: u64 = 0;
    loop {
        if input.buffer().is_empty() {
            output.flush().map_err(RunError::Output)?;
        }
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(RunError::Input)?;
        if read == 0 {
            break;
        }
        seq += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        records.clear();
        match std::str::from_utf8(text) {
            Ok(text) => replayer.line(seq, text, &mut records),
            Err(e) => records.push(Output::Error {
                seq,
                line: seq,
                reason: "malformed",
                detail: format!("invalid UTF-8: {e}"),
            }),
        }
        for record in &records {
            write_record(output, record, &mut json)?;
        }
    }
    if options.state_hash {
        let end = Output::End {
            lines: seq,
            state_hash: replayer.state_hash_hex(),
        };
        write_record(output, &end, &mut json)?;
    }
    output.flush().map_err(RunError::Output)?;
    Ok(seq)
}

fn write_record<W: Write>(
    output: &mut W,
    record: &Output,
    json: &mut Vec<u8>,
) -> Result<(), RunError> {
    json.clear();
    serde_json::to_writer(&mut *json, record).map_err(|e| RunError::Output(io::Error::other(e)))?;
    json.push(b'\n');
    output.write_all(json).map_err(RunError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn feed(replayer: &mut Replayer, lines: &[&str]) -> Vec<Value> {
        let mut out = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            replayer.line(i as u64 + 1, line, &mut out);
        }
        out.iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect()
    }

    fn run_lines(lines: &[&str]) -> Vec<Value> {
        feed(&mut Replayer::default(), lines)
    }

    #[test]
    fn refused_market_registers_no_asset() {
        let out = run_lines(&[
            r#"{"op":"market","market":"M","base":"A","quote":"B","tick":"0.000000001","lot":"1"}"#,
            r#"{"op":"deposit","account":1,"asset":"A","amount":"1"}"#,
            r#"{"op":"market","market":"M","base":"A","quote":"B","tick":"1","lot":"1"}"#,
            r#"{"op":"deposit","account":1,"asset":"A","amount":"1"}"#,
        ]);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0]["reason"], "invalid_market");
        assert_eq!(out[1]["reason"], "unknown_asset");
        assert_eq!(out[1]["seq"], 2);
    }

    #[test]
    fn asset_redeclaration_with_same_decimals_is_a_no_op() {
        let out = run_lines(&[
            r#"{"op":"asset","asset":"A","decimals":2}"#,
            r#"{"op":"asset","asset":"A","decimals":2}"#,
            r#"{"op":"asset","asset":"A"}"#,
            r#"{"op":"market","market":"M","base":"B","quote":"C","tick":"1","lot":"1"}"#,
            r#"{"op":"asset","asset":"B","decimals":8}"#,
            r#"{"op":"asset","asset":"C","decimals":0}"#,
        ]);
        let reasons: Vec<(u64, &str)> = out
            .iter()
            .map(|e| (e["seq"].as_u64().unwrap(), e["reason"].as_str().unwrap()))
            .collect();
        assert_eq!(reasons, [(3, "already_exists"), (6, "already_exists")]);
    }

    #[test]
    fn default_max_price_is_clamped_to_the_quote_range() {
        let mut replayer = Replayer::default();
        let out = feed(
            &mut replayer,
            &[
                r#"{"op":"asset","asset":"DAI","decimals":18}"#,
                r#"{"op":"market","market":"M","base":"ETH","quote":"DAI","tick":"0.01","lot":"0.001"}"#,
            ],
        );
        assert!(out.is_empty(), "{out:?}");
        let spec = replayer.engine().market_spec(0).unwrap();
        assert_eq!(spec.quote_units_per_tick_lot, 10_000_000_000_000);
        assert_eq!(spec.max_price_ticks, i64::MAX / 10_000_000_000_000);
        assert_eq!(spec.base_units_per_lot, 100_000);
        assert_eq!(spec.min_lots, 1);
    }

    #[test]
    fn explicit_max_price_and_fees_reach_the_engine() {
        let mut replayer = Replayer::default();
        let out = feed(
            &mut replayer,
            &[
                r#"{"op":"market","market":"M","base":"A","quote":"B","tick":"0.25","lot":"2","min_qty":"10","max_price":"1000","maker_fee_bps":-3,"taker_fee_bps":7}"#,
                r#"{"op":"market","market":"N","base":"A","quote":"B","tick":"1","lot":"1","max_price":"999.5"}"#,
                r#"{"op":"market","market":"N","base":"A","quote":"B","tick":"1","lot":"1","taker_fee_bps":10,"maker_fee_bps":-11}"#,
            ],
        );
        let spec = replayer.engine().market_spec(0).unwrap();
        assert_eq!(spec.max_price_ticks, 4000);
        assert_eq!(spec.min_lots, 5);
        assert_eq!(spec.base_units_per_lot, 200_000_000);
        assert_eq!(spec.quote_units_per_tick_lot, 50_000_000);
        assert_eq!((spec.maker_fee_bps, spec.taker_fee_bps), (-3, 7));
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|e| e["reason"] == "invalid_market"));
        assert!(replayer.engine().market_spec(1).is_none());
    }

    #[test]
    fn details_quoting_input_are_clipped() {
        let long = "é".repeat(10_000);
        let out = run_lines(&[&format!(r#"{{"op":"{long}"}}"#)]);
        let detail = out[0]["detail"].as_str().unwrap();
        assert_eq!(detail.chars().count(), MAX_DETAIL_CHARS + 1);
        assert!(detail.starts_with("unknown op \"éé"));
    }

    #[test]
    fn output_records_serialize_with_ev_and_seq_first() {
        let out = Output::Accepted {
            seq: 3,
            oid: json!("x"),
            account: json!(1),
        };
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"ev":"accepted","seq":3,"oid":"x","account":1}"#
        );
    }

    /// A small deterministic generator (xorshift64*), so the garbage test needs no crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn garbage_never_panics_and_every_record_names_its_line() {
        let valid = [
            r#"{"op":"asset","asset":"Q","decimals":2}"#,
            r#"{"op":"market","market":"M","base":"B","quote":"Q","tick":"0.5","lot":"0.1","min_qty":"0.1","taker_fee_bps":5,"maker_fee_bps":-1}"#,
            r#"{"op":"deposit","account":1,"asset":"Q","amount":"100000"}"#,
            r#"{"op":"deposit","account":"s","asset":"B","amount":"1000"}"#,
            r#"{"op":"order","account":"s","market":"M","oid":1,"side":"sell","price":"10","qty":"3"}"#,
            r#"{"op":"order","account":1,"market":"M","oid":2,"side":"buy","price":"10.5","qty":"1.2","tif":"ioc","stp":"cancel_both"}"#,
            r#"{"op":"order","account":1,"market":"M","oid":3,"side":"buy","type":"market","qty":"2"}"#,
            r#"{"op":"modify","account":"s","market":"M","oid":1,"price":"9.5","qty":"0.5"}"#,
            r#"{"op":"cancel","account":"s","market":"M","oid":1}"#,
            r#"{"op":"cancel_all","account":1,"market":"M"}"#,
            r#"{"op":"withdraw","account":1,"asset":"Q","amount":"1.25"}"#,
            r#"{"op":"book","market":"M","depth":3}"#,
        ];
        let tokens = [
            "-1",
            "0",
            "1e9",
            "\"\"",
            "null",
            "true",
            "[]",
            "{}",
            "\"-0.5\"",
            "\"99999999999999999999999999999\"",
            "18446744073709551616",
            "\"0.0000000000000000000000000001\"",
            "\"buy\"",
            "\"market\"",
            "\"alo\"",
            "\"fok\"",
            "2147483648",
            "-9223372036854775808",
            "\"9223372036854775807\"",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut replayer = Replayer::default();
        let mut out = Vec::new();
        for seq in 1..=30_000u64 {
            let base = valid[rng.below(valid.len())];
            let mut line = base.to_string();
            match rng.below(5) {
                0 => {}
                1 => {
                    // Replace one JSON value by a token.
                    let colons: Vec<usize> = line.match_indices(':').map(|(i, _)| i).collect();
                    let at = colons[rng.below(colons.len())] + 1;
                    let end = line[at..].find([',', '}']).map_or(line.len(), |i| at + i);
                    line.replace_range(at..end, tokens[rng.below(tokens.len())]);
                }
                2 => line.truncate(rng.below(line.len())),
                3 => {
                    let mut bytes = line.into_bytes();
                    let i = rng.below(bytes.len());
                    bytes[i] = (rng.next() % 128) as u8;
                    line = String::from_utf8(bytes).unwrap_or_default();
                }
                _ => {
                    let i = rng.below(line.len());
                    let j = rng.below(line.len());
                    let (a, b) = (i.min(j), i.max(j));
                    if line.is_char_boundary(a) && line.is_char_boundary(b) {
                        line.replace_range(a..b, "");
                    }
                }
            }
            out.clear();
            replayer.line(seq, &line, &mut out);
            for record in &out {
                let value = serde_json::to_value(record).unwrap();
                assert_eq!(value["seq"], seq, "{line} -> {value}");
            }
        }
        assert_eq!(replayer.engine().check_invariants(), Ok(()));
    }
}
