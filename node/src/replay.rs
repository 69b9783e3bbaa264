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
    pub(crate) fn account_id(&mut self, value: &Value) -> Result<AccountId, Malformed> {
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

    /// The JSON Lines command that translates back to `command` (the inverse of [`line`] for
    /// every command this translator produced; used by `nexus wal dump`). `None` for spot
    /// registry commands (written as `asset`/`market` lines by whoever kept their names), for
    /// ids this translator never gave out, and for perp commands it could not have produced
    /// (a perp command on a spot market, a perp market spec it did not make).
    ///
    /// [`line`]: Translator::line
    pub fn command_json(&self, command: &Command) -> Option<Value> {
        let asset_name = |id: AssetId| self.asset_names.get(id as usize);
        let market = |id: MarketId| self.markets.get(id as usize);
        let perp_market = |id: MarketId| market(id).filter(|info| info.perp.is_some());
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
                    "account": self.account_value(account),
                    "asset": name,
                    "amount": text,
                })
            }
            Command::Place(order) => {
                let info = market(order.market)?;
                let mut value = serde_json::json!({
                    "op": "order",
                    "account": self.account_value(order.account),
                    "market": info.name,
                    "oid": self.oids.value(order.oid),
                    "side": side_name(order.side),
                    "qty": decimal::format_scaled(order.qty, info.lot),
                    "tif": tif(order.tif),
                    "stp": stp(order.stp),
                });
                if order.reduce_only {
                    value["reduce_only"] = true.into();
                }
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
                "account": self.account_value(account),
                "market": market(id)?.name,
                "oid": self.oids.value(oid),
            }),
            Command::CancelAll {
                account,
                market: id,
            } => serde_json::json!({
                "op": "cancel_all",
                "account": self.account_value(account),
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
                    "account": self.account_value(account),
                    "market": info.name,
                    "oid": self.oids.value(oid),
                    "price": decimal::format_scaled(price, info.tick),
                    "qty": decimal::format_scaled(qty, info.lot),
                })
            }
            Command::CreatePerpMarket(ref spec) => {
                let info = perp_market(spec.market).filter(|info| info.perp == Some(*spec))?;
                let collateral = self.assets.get(asset_name(spec.collateral)?)?;
                let unit = decimal::unit_of(collateral.decimals);
                let ppb = |rate: i64| decimal::format_scaled(rate, PPB_UNIT);
                let tiers: Vec<Value> = spec
                    .tiers()
                    .iter()
                    .enumerate()
                    .map(|(i, tier)| {
                        let mut row = serde_json::json!({
                            "notional_up_to": decimal::format_scaled(tier.notional_up_to, unit),
                            "imr": ppb(tier.imr_ppb as i64),
                            "mmr": ppb(tier.mmr_ppb as i64),
                        });
                        // The last row's bound defaults to the largest amount when absent.
                        if i + 1 == spec.tiers().len() && tier.notional_up_to == Units::MAX {
                            row.as_object_mut()?.shift_remove("notional_up_to");
                        }
                        Some(row)
                    })
                    .collect::<Option<_>>()?;
                let mut value = serde_json::json!({
                    "op": "perp_market",
                    "market": info.name,
                    "collateral": asset_name(spec.collateral)?,
                    "tick": decimal::format(info.tick),
                    "lot": decimal::format(info.lot),
                    "min_qty": decimal::format_scaled(spec.min_lots, info.lot),
                    "max_price": decimal::format_scaled(spec.max_price_ticks, info.tick),
                    "maker_fee_bps": spec.maker_fee_bps,
                    "taker_fee_bps": spec.taker_fee_bps,
                    "max_leverage": spec.max_leverage,
                    "margin_tiers": tiers,
                    "open_interest_cap": decimal::format_scaled(spec.open_interest_cap_lots, info.lot),
                    "price_band": ppb(spec.price_band_ppb as i64),
                    "interest": ppb(spec.interest_ppb as i64),
                    "funding_cap": ppb(spec.funding_cap_ppb as i64),
                    "impact_notional": decimal::format_scaled(spec.impact_notional, unit),
                    "liquidation_chunk_notional":
                        decimal::format_scaled(spec.liquidation_chunk_notional, unit),
                    "liquidation_fee": ppb(spec.liquidation_fee_ppb as i64),
                });
                // Absent means "no limit": leave the limits that are at their defaults out.
                let map = value.as_object_mut()?;
                if spec.open_interest_cap_lots == Lots::MAX {
                    map.shift_remove("open_interest_cap");
                }
                if spec.liquidation_chunk_notional == Units::MAX {
                    map.shift_remove("liquidation_chunk_notional");
                }
                value
            }
            Command::TransferCollateral { account, amount } => {
                let collateral = self.collateral?;
                serde_json::json!({
                    "op": "transfer",
                    "account": self.account_value(account),
                    "amount": decimal::format_scaled(amount, decimal::unit_of(collateral.decimals)),
                })
            }
            Command::SetLeverage {
                account,
                market: id,
                leverage,
                isolated,
            } => serde_json::json!({
                "op": "leverage",
                "account": self.account_value(account),
                "market": perp_market(id)?.name,
                "leverage": leverage,
                "mode": if isolated { "isolated" } else { "cross" },
            }),
            Command::IsolatedMargin {
                account,
                market: id,
                amount,
            } => {
                let info = perp_market(id)?;
                serde_json::json!({
                    "op": "isolated_margin",
                    "account": self.account_value(account),
                    "market": info.name,
                    "amount": decimal::format_scaled(amount, info.quote_unit),
                })
            }
            Command::Oracle {
                market: id,
                ref prices,
                count,
            } => {
                let info = perp_market(id)?;
                let prices = prices.get(..count as usize).filter(|p| !p.is_empty())?;
                let prices: Vec<String> = prices
                    .iter()
                    .map(|&p| decimal::format_scaled(p, info.tick))
                    .collect();
                serde_json::json!({"op": "oracle", "market": info.name, "prices": prices})
            }
            Command::Funding { market: id } => {
                serde_json::json!({"op": "funding", "market": perp_market(id)?.name})
            }
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
            "perp_market" => self.op_perp_market(seq, fields, out),
            "transfer" => self.op_transfer_collateral(seq, fields, out),
            "leverage" => self.op_leverage(seq, fields, out),
            "isolated_margin" => self.op_isolated_margin(seq, fields, out),
            "oracle" => self.op_oracle(seq, fields, out),
            "funding" => self.op_funding(seq, fields, out),
            other => Err(format!(
                "unknown op {other:?} (expected asset, market, perp_market, deposit, withdraw, transfer, order, cancel, cancel_all, modify, book, leverage, isolated_margin, oracle or funding)"
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
                    perp: None,
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
        let book = Self::book_params(
            quote,
            quote_decimals,
            tick,
            lot,
            min_qty,
            max_price,
            maker_fee_bps,
            taker_fee_bps,
        )?;
        Ok(MarketSpec {
            market: 0,
            base: 0,
            quote: 0,
            base_units_per_lot,
            quote_units_per_tick_lot: book.quote_units_per_tick_lot,
            min_lots: book.min_lots,
            max_price_ticks: book.max_price_ticks,
            maker_fee_bps: book.maker_fee_bps,
            taker_fee_bps: book.taker_fee_bps,
        })
    }

    /// The book parameters shared by spot and perp markets, checked as the engine checks
    /// them (`tick` and `lot` already known positive).
    #[allow(clippy::too_many_arguments)]
    fn book_params(
        quote: &str,
        quote_decimals: u32,
        tick: Decimal,
        lot: Decimal,
        min_qty: Option<Decimal>,
        max_price: Option<Decimal>,
        maker_fee_bps: i64,
        taker_fee_bps: i64,
    ) -> Result<BookParams, String> {
        let quote_unit = decimal::unit_of(quote_decimals);
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
        Ok(BookParams {
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
        let amount = match amount_units(amount, info.decimals, asset) {
            Ok(n) => n,
            Err(detail) => {
                out.push(reject(seq, echo, "invalid_qty", Some(detail)));
                return Ok(());
            }
        };
        let account = self.account_id(account_value)?;
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

    // ---- perpetual futures -------------------------------------------------------------

    fn op_perp_market(
        &mut self,
        seq: u64,
        f: Fields,
        out: &mut Vec<Output>,
    ) -> Result<(), Malformed> {
        let name = f.str("market")?;
        let collateral = f.str("collateral")?;
        let tiers = match f.get("margin_tiers") {
            None => None,
            Some(Value::Array(rows)) => {
                let mut tiers = Vec::with_capacity(rows.len());
                for (i, row) in rows.iter().enumerate() {
                    let Value::Object(row) = row else {
                        return Err(format!(
                            "field \"margin_tiers\"[{i}]: expected an object, got {}",
                            decimal::short_json(row)
                        ));
                    };
                    let row = Fields(row);
                    let at = |e: Malformed| format!("field \"margin_tiers\"[{i}]: {e}");
                    tiers.push((
                        row.opt_decimal("notional_up_to").map_err(at)?,
                        row.decimal("imr").map_err(at)?,
                        row.decimal("mmr").map_err(at)?,
                    ));
                }
                Some(tiers)
            }
            Some(other) => {
                return Err(format!(
                    "field \"margin_tiers\": expected an array, got {}",
                    decimal::short_json(other)
                ))
            }
        };
        let fields = PerpFields {
            tick: f.decimal("tick")?,
            lot: f.decimal("lot")?,
            min_qty: f.opt_decimal("min_qty")?,
            max_price: f.opt_decimal("max_price")?,
            maker_fee_bps: f.opt_int("maker_fee_bps")?.unwrap_or(0),
            taker_fee_bps: f.opt_int("taker_fee_bps")?.unwrap_or(0),
            max_leverage: f.opt_int("max_leverage")?.unwrap_or(DEFAULT_MAX_LEVERAGE),
            tiers,
            open_interest_cap: f.opt_decimal("open_interest_cap")?,
            price_band: f.opt_decimal("price_band")?,
            interest: f.opt_decimal("interest")?,
            funding_cap: f.opt_decimal("funding_cap")?,
            impact_notional: f.opt_decimal("impact_notional")?,
            liquidation_chunk_notional: f.opt_decimal("liquidation_chunk_notional")?,
            liquidation_fee: f.opt_decimal("liquidation_fee")?,
        };
        if self.market_ids.contains_key(name) {
            out.push(reject(
                seq,
                Echo::default(),
                "already_exists",
                Some(format!("market {name:?} already exists")),
            ));
            return Ok(());
        }
        let mut spec = match self.perp_spec(collateral, &fields) {
            Ok(spec) => spec,
            Err(detail) => {
                out.push(reject(seq, Echo::default(), "invalid_market", Some(detail)));
                return Ok(());
            }
        };
        let info = match self.assets.get(collateral) {
            Some(&info) => info,
            None => self.register_asset(collateral, DEFAULT_DECIMALS),
        };
        spec.market = self.markets.len() as MarketId;
        spec.collateral = info.id;
        // Checked above exactly as the engine checks, so the engine accepts it.
        self.steps.push(Step::Run {
            command: Command::CreatePerpMarket(spec),
            market: None,
            echo: Echo::default(),
        });
        self.collateral = Some(info);
        self.market_ids.insert(name.to_string(), spec.market);
        self.markets.push(MarketInfo {
            name: name.to_string(),
            id: spec.market,
            tick: fields.tick,
            lot: fields.lot,
            quote_unit: decimal::unit_of(info.decimals),
            perp: Some(spec),
        });
        Ok(())
    }

    /// Converts a perp market's decimal parameters to an engine spec (ids left 0), checking
    /// everything the engine would, so that a refused market registers nothing.
    fn perp_spec(&self, collateral: &str, p: &PerpFields) -> Result<PerpSpec, String> {
        if let Some(existing) = self.collateral {
            if self.assets.get(collateral).map(|info| info.id) != Some(existing.id) {
                return Err(format!(
                    "every perp market settles in the same collateral: {:?}, not {collateral:?}",
                    self.asset_names[existing.id as usize]
                ));
            }
        }
        if p.tick <= Decimal::ZERO {
            return Err(format!("tick {} is not positive", decimal::format(p.tick)));
        }
        if p.lot <= Decimal::ZERO {
            return Err(format!("lot {} is not positive", decimal::format(p.lot)));
        }
        let decimals = self
            .assets
            .get(collateral)
            .map_or(DEFAULT_DECIMALS, |info| info.decimals);
        let unit = decimal::unit_of(decimals);
        let book = Self::book_params(
            collateral,
            decimals,
            p.tick,
            p.lot,
            p.min_qty,
            p.max_price,
            p.maker_fee_bps,
            p.taker_fee_bps,
        )?;
        if !(1..=MAX_LEVERAGE_LIMIT).contains(&p.max_leverage) {
            return Err(format!(
                "max_leverage must be in 1..={MAX_LEVERAGE_LIMIT}, got {}",
                p.max_leverage
            ));
        }
        let max_leverage = p.max_leverage as u32;
        let units = |field: &str, value: Decimal| match decimal::to_whole(value, unit) {
            Whole::Exact(n) => Ok(n),
            Whole::NotWhole => Err(format!(
                "{field} {} has more than {decimals} decimals, the precision of {collateral:?}",
                decimal::format(value)
            )),
            Whole::TooLarge { .. } => Err(format!("{field} is too large")),
        };
        let mut tiers = [MarginTier::default(); MAX_MARGIN_TIERS];
        let tier_count = match &p.tiers {
            None => {
                // One open-ended row whose initial rate is 1 / max_leverage.
                let imr = 1_000_000_000_u32.div_ceil(max_leverage);
                tiers[0] = MarginTier {
                    notional_up_to: Units::MAX,
                    imr_ppb: imr,
                    mmr_ppb: imr / 2,
                };
                1
            }
            Some(rows) => {
                if rows.is_empty() || rows.len() > MAX_MARGIN_TIERS {
                    return Err(format!(
                        "margin_tiers must have 1 to {MAX_MARGIN_TIERS} rows, got {}",
                        rows.len()
                    ));
                }
                for (i, &(up_to, imr, mmr)) in rows.iter().enumerate() {
                    let last = i + 1 == rows.len();
                    let notional_up_to = match up_to {
                        Some(value) => units(&format!("margin_tiers[{i}].notional_up_to"), value)?,
                        None if last => Units::MAX,
                        None => {
                            return Err(format!(
                            "margin_tiers[{i}].notional_up_to is required (all rows but the last)"
                        ))
                        }
                    };
                    if !last && notional_up_to <= 0 {
                        return Err(format!("margin_tiers[{i}].notional_up_to must be positive"));
                    }
                    let imr_ppb = rate_ppb(&format!("margin_tiers[{i}].imr"), imr)?;
                    let mmr_ppb = rate_ppb(&format!("margin_tiers[{i}].mmr"), mmr)?;
                    if !(mmr_ppb > 0 && mmr_ppb < imr_ppb && imr_ppb <= 1_000_000_000) {
                        return Err(format!(
                            "margin_tiers[{i}]: need 0 < mmr < imr <= 1, got imr {} mmr {}",
                            decimal::format(imr),
                            decimal::format(mmr)
                        ));
                    }
                    tiers[i] = MarginTier {
                        notional_up_to,
                        imr_ppb: imr_ppb as u32,
                        mmr_ppb: mmr_ppb as u32,
                    };
                    if i > 0 {
                        let before = tiers[i - 1];
                        if before.notional_up_to >= notional_up_to
                            || before.imr_ppb > tiers[i].imr_ppb
                            || before.mmr_ppb > tiers[i].mmr_ppb
                        {
                            return Err(format!(
                                "margin_tiers[{i}]: rows must have increasing notional_up_to and non-decreasing imr and mmr"
                            ));
                        }
                    }
                }
                rows.len() as u8
            }
        };
        let open_interest_cap_lots = match p.open_interest_cap.map(|q| decimal::to_whole(q, p.lot))
        {
            None => Lots::MAX,
            Some(Whole::Exact(n)) if n >= 0 => n,
            Some(Whole::Exact(_)) => return Err("open_interest_cap is negative".to_string()),
            Some(Whole::NotWhole) => {
                return Err(format!(
                    "open_interest_cap {} is not a whole number of lots of {}",
                    decimal::format(p.open_interest_cap.unwrap_or_default()),
                    decimal::format(p.lot)
                ))
            }
            Some(Whole::TooLarge { .. }) => {
                return Err("open_interest_cap is too large".to_string())
            }
        };
        let rate = |field: &str, value: Option<Decimal>, default: i64, range| {
            let ppb = match value {
                None => default,
                Some(value) => rate_ppb(field, value)?,
            };
            let (low, high, text): (i64, i64, &str) = range;
            if (low..=high).contains(&ppb) {
                Ok(ppb)
            } else {
                Err(format!("{field} must be {text}"))
            }
        };
        const ONE: i64 = 1_000_000_000;
        let price_band_ppb = rate(
            "price_band",
            p.price_band,
            DEFAULT_PRICE_BAND_PPB,
            (0, ONE - 1, "at least 0 and below 1"),
        )?;
        let interest_ppb = rate("interest", p.interest, 0, (-ONE, ONE, "in -1..=1"))?;
        let funding_cap_ppb = rate(
            "funding_cap",
            p.funding_cap,
            DEFAULT_FUNDING_CAP_PPB,
            (0, ONE, "in 0..=1"),
        )?;
        let liquidation_fee_ppb = rate(
            "liquidation_fee",
            p.liquidation_fee,
            0,
            (0, ONE - 1, "at least 0 and below 1"),
        )?;
        let notional = |field: &str, value: Option<Decimal>, default: Units| {
            let n = match value {
                None => default,
                Some(value) => units(field, value)?,
            };
            if n >= 1 {
                Ok(n)
            } else {
                Err(format!(
                    "{field} must be at least one unit of {collateral:?} ({})",
                    decimal::format(unit)
                ))
            }
        };
        let default_impact = 10i64
            .checked_pow(decimals)
            .and_then(|scale| scale.checked_mul(DEFAULT_IMPACT_NOTIONAL))
            .unwrap_or(Units::MAX);
        let impact_notional = notional("impact_notional", p.impact_notional, default_impact)?;
        let liquidation_chunk_notional = notional(
            "liquidation_chunk_notional",
            p.liquidation_chunk_notional,
            Units::MAX,
        )?;
        Ok(PerpSpec {
            market: 0,
            collateral: 0,
            quote_units_per_tick_lot: book.quote_units_per_tick_lot,
            min_lots: book.min_lots,
            max_price_ticks: book.max_price_ticks,
            maker_fee_bps: book.maker_fee_bps,
            taker_fee_bps: book.taker_fee_bps,
            max_leverage,
            tiers,
            tier_count,
            open_interest_cap_lots,
            price_band_ppb: price_band_ppb as u32,
            interest_ppb: interest_ppb as i32,
            funding_cap_ppb: funding_cap_ppb as u32,
            impact_notional,
            liquidation_chunk_notional,
            liquidation_fee_ppb: liquidation_fee_ppb as u32,
        })
    }

    fn op_transfer_collateral(
        &mut self,
        seq: u64,
        f: Fields,
        out: &mut Vec<Output>,
    ) -> Result<(), Malformed> {
        let account_value = f.id("account")?;
        let amount = f.decimal("amount")?;
        let echo = Echo {
            oid: None,
            account: Some(account_value.clone()),
        };
        let Some(info) = self.collateral else {
            out.push(reject(
                seq,
                echo,
                "not_perp_market",
                Some("no perp market exists yet, so there is no collateral to move".to_string()),
            ));
            return Ok(());
        };
        let name = &self.asset_names[info.id as usize];
        let amount = match amount_units(amount, info.decimals, name) {
            Ok(n) => n,
            Err(detail) => {
                out.push(reject(seq, echo, "invalid_qty", Some(detail)));
                return Ok(());
            }
        };
        let command = Command::TransferCollateral {
            account: self.account_id(account_value)?,
            amount,
        };
        self.step(seq, &command, None, echo, out);
        Ok(())
    }

    fn op_leverage(&mut self, seq: u64, f: Fields, out: &mut Vec<Output>) -> Result<(), Malformed> {
        let account_value = f.id("account")?;
        let market = f.str("market")?;
        let leverage = f.int("leverage")?;
        let isolated = match f.opt_str("mode")? {
            None | Some("cross") => false,
            Some("isolated") => true,
            Some(other) => {
                return Err(format!(
                    "field \"mode\": expected \"cross\" or \"isolated\", got {other:?}"
                ))
            }
        };
        let echo = Echo {
            oid: None,
            account: Some(account_value.clone()),
        };
        let Some(index) = self.perp_index(seq, market, &echo, out) else {
            return Ok(());
        };
        let max = self.markets[index].perp.map_or(0, |spec| spec.max_leverage);
        if leverage < 1 || leverage > max as i64 {
            out.push(reject(
                seq,
                echo,
                "invalid_leverage",
                Some(format!(
                    "leverage {leverage} is outside 1..={max}, the max_leverage of {market:?}"
                )),
            ));
            return Ok(());
        }
        let command = Command::SetLeverage {
            account: self.account_id(account_value)?,
            market: self.markets[index].id,
            leverage: leverage as u32,
            isolated,
        };
        self.step(seq, &command, Some(index), echo, out);
        Ok(())
    }

    fn op_isolated_margin(
        &mut self,
        seq: u64,
        f: Fields,
        out: &mut Vec<Output>,
    ) -> Result<(), Malformed> {
        let account_value = f.id("account")?;
        let market = f.str("market")?;
        let amount = f.decimal("amount")?;
        let echo = Echo {
            oid: None,
            account: Some(account_value.clone()),
        };
        let Some(index) = self.perp_index(seq, market, &echo, out) else {
            return Ok(());
        };
        let collateral = self.collateral.expect("a perp market exists");
        let name = &self.asset_names[collateral.id as usize];
        let amount = match amount_units(amount, collateral.decimals, name) {
            Ok(n) => n,
            Err(detail) => {
                out.push(reject(seq, echo, "invalid_qty", Some(detail)));
                return Ok(());
            }
        };
        let command = Command::IsolatedMargin {
            account: self.account_id(account_value)?,
            market: self.markets[index].id,
            amount,
        };
        self.step(seq, &command, Some(index), echo, out);
        Ok(())
    }

    fn op_oracle(&mut self, seq: u64, f: Fields, out: &mut Vec<Output>) -> Result<(), Malformed> {
        let market = f.str("market")?;
        let list = match f.required("prices")? {
            Value::Array(list) => list,
            other => {
                return Err(format!(
                    "field \"prices\": expected an array of decimal strings, got {}",
                    decimal::short_json(other)
                ))
            }
        };
        if list.is_empty() || list.len() > MAX_ORACLE_SOURCES {
            return Err(format!(
                "field \"prices\": expected 1 to {MAX_ORACLE_SOURCES} prices, got {}",
                list.len()
            ));
        }
        let mut decimals = Vec::with_capacity(list.len());
        for (i, value) in list.iter().enumerate() {
            decimals.push(
                decimal::parse_json(value).map_err(|e| format!("field \"prices\"[{i}]: {e}"))?,
            );
        }
        let Some(index) = self.perp_index(seq, market, &Echo::default(), out) else {
            return Ok(());
        };
        let mut prices = [0; MAX_ORACLE_SOURCES];
        for (slot, &price) in prices.iter_mut().zip(&decimals) {
            match self.ticks(index, price) {
                Ok(ticks) => *slot = ticks,
                Err((reason, detail)) => {
                    out.push(reject(seq, Echo::default(), reason, Some(detail)));
                    return Ok(());
                }
            }
        }
        let command = Command::Oracle {
            market: self.markets[index].id,
            prices,
            count: decimals.len() as u8,
        };
        self.step(seq, &command, Some(index), Echo::default(), out);
        Ok(())
    }

    fn op_funding(&mut self, seq: u64, f: Fields, out: &mut Vec<Output>) -> Result<(), Malformed> {
        let market = f.str("market")?;
        let Some(index) = self.perp_index(seq, market, &Echo::default(), out) else {
            return Ok(());
        };
        let command = Command::Funding {
            market: self.markets[index].id,
        };
        self.step(seq, &command, Some(index), Echo::default(), out);
        Ok(())
    }

    /// The index of a perp market, or a pushed `unknown_market` / `not_perp_market`.
    fn perp_index(
        &self,
        seq: u64,
        market: &str,
        echo: &Echo,
        out: &mut Vec<Output>,
    ) -> Option<usize> {
        let index = self.market_index(seq, market, echo, out)?;
        if self.markets[index].perp.is_none() {
            out.push(reject(
                seq,
                echo.clone(),
                "not_perp_market",
                Some(format!("{market:?} is a spot market")),
            ));
            return None;
        }
        Some(index)
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

        let reduce_only = f.opt_bool("reduce_only")?.unwrap_or(false);
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
            account: self.account_id(account_value)?,
            market: self.markets[index].id,
            oid: self.oids.intern("oid", oid_value)?,
            side,
            price,
            qty,
            tif,
            stp,
            reduce_only,
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
            account: self.account_id(account_value)?,
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
            account: self.account_id(account_value)?,
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
            account: self.account_id(account_value)?,
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
                Event::OraclePrice {
                    market: market_id,
                    oracle,
                    mark,
                    premium_ppb,
                } => {
                    let Some(info) = self.markets.get(market_id as usize) else {
                        continue;
                    };
                    Output::Oracle {
                        seq,
                        market: info.name.clone(),
                        price: decimal::format_scaled(oracle, info.tick),
                        mark: decimal::format_scaled(mark, info.tick),
                        premium: decimal::format_scaled(premium_ppb, PPB_UNIT),
                    }
                }
                Event::Funding {
                    market: market_id,
                    rate_ppb,
                    index,
                } => {
                    let Some(info) = self.markets.get(market_id as usize) else {
                        continue;
                    };
                    Output::Funding {
                        seq,
                        market: info.name.clone(),
                        rate: decimal::format_scaled(rate_ppb, PPB_UNIT),
                        // The index is in billionths of a collateral unit per lot.
                        index: decimal::format_scaled_i128(index, info.quote_unit * PPB_UNIT),
                    }
                }
                Event::Position {
                    account,
                    market: market_id,
                    size,
                    open_notional,
                    realized_pnl,
                    funding_paid,
                } => {
                    let Some(info) = self.markets.get(market_id as usize) else {
                        continue;
                    };
                    Output::Position {
                        seq,
                        account: self.account_value(account),
                        market: info.name.clone(),
                        size: decimal::format_scaled(size, info.lot),
                        open_notional: decimal::format_scaled_i128(open_notional, info.quote_unit),
                        realized_pnl: decimal::format_scaled(realized_pnl, info.quote_unit),
                        funding_paid: decimal::format_scaled(funding_paid, info.quote_unit),
                    }
                }
                Event::Liquidation {
                    account,
                    market: market_id,
                    step,
                    lots,
                    notional,
                    fee,
                    bad_debt,
                } => {
                    let Some(info) = self.markets.get(market_id as usize) else {
                        continue;
                    };
                    Output::Liquidation {
                        seq,
                        account: self.account_value(account),
                        market: info.name.clone(),
                        step: step.as_str(),
                        qty: decimal::format_scaled(lots, info.lot),
                        notional: decimal::format_scaled(notional, info.quote_unit),
                        fee: decimal::format_scaled(fee, info.quote_unit),
                        bad_debt: decimal::format_scaled(bad_debt, info.quote_unit),
                    }
                }
                Event::Adl {
                    account,
                    market: market_id,
                    lots,
                    notional,
                } => {
                    let Some(info) = self.markets.get(market_id as usize) else {
                        continue;
                    };
                    Output::Adl {
                        seq,
                        account: self.account_value(account),
                        market: info.name.clone(),
                        qty: decimal::format_scaled(lots, info.lot),
                        notional: decimal::format_scaled(notional, info.quote_unit),
                    }
                }
                Event::Rejected { reason, .. } => {
                    reject(seq, echo.take().unwrap_or_default(), reason.as_str(), None)
                }
                Event::Accepted { account, oid, .. } => Output::Accepted {
                    seq,
                    oid: self.oids.value(oid),
                    account: self.account_value(account),
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
                        taker_account: self.account_value(taker_account),
                        maker_account: self.account_value(maker_account),
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
                    account: self.account_value(account),
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
                    account: self.account_value(account),
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
    fn insurance_is_a_reserved_account_name_both_ways() {
        let mut translator = Translator::numbers_only();
        let mut out = Vec::new();
        let steps = translator.line(
            1,
            r#"{"op":"deposit","account":"insurance","asset":"A","amount":"1"}"#,
            &mut out,
        );
        // No asset A: rejected, but the name was accepted even by a numbers-only translator.
        assert!(steps.is_empty());
        assert_eq!(out.len(), 1);
        assert_eq!(
            translator.account_id(&json!("insurance")),
            Ok(INSURANCE_ACCOUNT)
        );
        assert_eq!(
            translator.account_value(INSURANCE_ACCOUNT),
            json!("insurance")
        );
        assert!(translator.account_id(&json!("bob")).is_err());
    }

    #[test]
    fn default_margin_table_follows_max_leverage() {
        let mut replayer = Replayer::default();
        let out = feed(
            &mut replayer,
            &[
                r#"{"op":"asset","asset":"USD","decimals":2}"#,
                r#"{"op":"perp_market","market":"P","collateral":"USD","tick":"0.5","lot":"2","max_leverage":3}"#,
            ],
        );
        assert!(out.is_empty(), "{out:?}");
        let spec = replayer.engine().perp_market(0).unwrap().spec;
        assert_eq!(spec.quote_units_per_tick_lot, 100);
        assert_eq!(spec.tiers().len(), 1);
        assert_eq!(spec.tiers()[0].imr_ppb, 333_333_334);
        assert_eq!(spec.tiers()[0].mmr_ppb, 166_666_667);
        assert_eq!(spec.tiers()[0].notional_up_to, Units::MAX);
        assert_eq!(spec.open_interest_cap_lots, Lots::MAX);
        assert_eq!(spec.price_band_ppb, 100_000_000);
        assert_eq!(spec.funding_cap_ppb, 10_000_000);
        assert_eq!(spec.interest_ppb, 0);
        assert_eq!(spec.impact_notional, 100_000);
        assert_eq!(spec.liquidation_chunk_notional, Units::MAX);
        assert_eq!(spec.liquidation_fee_ppb, 0);
        assert_eq!((spec.maker_fee_bps, spec.taker_fee_bps), (0, 0));
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
            r#"{"op":"perp_market","market":"P","collateral":"Q","tick":"0.5","lot":"0.1","max_leverage":20,"taker_fee_bps":5,"maker_fee_bps":-1,"margin_tiers":[{"notional_up_to":"500","imr":"0.05","mmr":"0.02"},{"imr":"0.1","mmr":"0.05"}],"liquidation_fee":"0.01","liquidation_chunk_notional":"20","interest":"0.0001","impact_notional":"10"}"#,
            r#"{"op":"transfer","account":1,"amount":"5000"}"#,
            r#"{"op":"transfer","account":"s","amount":"-2.5"}"#,
            r#"{"op":"deposit","account":"s","asset":"Q","amount":"100000"}"#,
            r#"{"op":"transfer","account":"s","amount":"50000"}"#,
            r#"{"op":"oracle","market":"P","prices":["10","10.5","9.5"]}"#,
            r#"{"op":"oracle","market":"P","prices":["4"]}"#,
            r#"{"op":"order","account":1,"market":"P","oid":7,"side":"buy","price":"10","qty":"30"}"#,
            r#"{"op":"order","account":"s","market":"P","oid":8,"side":"sell","type":"market","qty":"20","reduce_only":true}"#,
            r#"{"op":"order","account":"s","market":"P","oid":9,"side":"sell","price":"9.5","qty":"40","tif":"ioc"}"#,
            r#"{"op":"leverage","account":1,"market":"P","leverage":5,"mode":"isolated"}"#,
            r#"{"op":"isolated_margin","account":1,"market":"P","amount":"-1.5"}"#,
            r#"{"op":"funding","market":"P"}"#,
            r#"{"op":"book","market":"P","depth":3}"#,
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
        let mut kinds: HashMap<String, u64> = HashMap::new();
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
                *kinds
                    .entry(value["ev"].as_str().unwrap().to_string())
                    .or_insert(0) += 1;
            }
        }
        assert_eq!(replayer.engine().check_invariants(), Ok(()));
        // The perp lines reach the engine and come back as every kind of perp record.
        for kind in ["oracle", "funding", "position", "liquidation"] {
            assert!(kinds.get(kind).is_some_and(|&n| n > 0), "{kind}: {kinds:?}");
        }
    }
}
