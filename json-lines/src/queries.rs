//! Read-only queries of the JSON Lines port: `book`, `balances`, `orders`, `positions`.
//!
//! They are answered from the engine's current state (every input executed so far), are
//! not sequenced and are not in the log. Amounts are decimal strings in the units of the
//! genesis (docs/pipeline.md, "Queries").

use engine::{AccountId, ArrayLadder, Engine, Side};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::decimal;
use crate::replay::{MarketInfo, Translator, DEFAULT_BOOK_DEPTH};

/// The query ops the port answers.
pub const QUERY_OPS: [&str; 4] = ["book", "balances", "orders", "positions"];

/// A query the port refused: `reason` and `detail` of the `error` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// `malformed`, `unknown_market` or `unknown_account`.
    pub reason: &'static str,
    /// What is wrong.
    pub detail: String,
}

fn malformed(detail: impl Into<String>) -> QueryError {
    QueryError {
        reason: "malformed",
        detail: detail.into(),
    }
}

/// Answers query `request` (a JSON object whose `op` is one of [`QUERY_OPS`]) from `engine`.
/// The reply is the record without `line` (the caller adds it).
pub fn answer(
    translator: &mut Translator,
    engine: &Engine<ArrayLadder>,
    request: &Value,
) -> Result<Value, QueryError> {
    let op = request.get("op").and_then(Value::as_str).unwrap_or("");
    match op {
        "book" => book(translator, engine, request),
        "balances" => balances(translator, engine, request),
        "orders" => orders(translator, engine, request),
        "positions" => positions(translator, engine, request),
        other => Err(malformed(format!("{other:?} is not a query"))),
    }
}

/// The market a query names (`market`), as the translator's index.
fn market_of(translator: &Translator, request: &Value) -> Result<Option<usize>, QueryError> {
    let Some(name) = request.get("market") else {
        return Ok(None);
    };
    let name = name
        .as_str()
        .ok_or_else(|| malformed("field \"market\": expected a market name"))?;
    match translator.market_ids.get(name) {
        Some(&id) => Ok(Some(id as usize)),
        None => Err(QueryError {
            reason: "unknown_market",
            detail: format!("no market {name:?}"),
        }),
    }
}

/// The account a query names; `unknown_account` if the engine has never seen it.
fn account_of(
    translator: &mut Translator,
    engine: &Engine<ArrayLadder>,
    request: &Value,
) -> Result<(AccountId, Value), QueryError> {
    let value = request
        .get("account")
        .ok_or_else(|| malformed("missing field \"account\""))?;
    let id = translator.account_id(value).map_err(malformed)?;
    // Every account the engine knows has a (possibly empty) perp state: an O(1) look-up.
    if engine.perp_collateral(id).is_none() {
        return Err(QueryError {
            reason: "unknown_account",
            detail: format!("account {value} holds nothing on this node"),
        });
    }
    Ok((id, translator.account_value(id)))
}

fn book(
    translator: &Translator,
    engine: &Engine<ArrayLadder>,
    request: &Value,
) -> Result<Value, QueryError> {
    let index =
        market_of(translator, request)?.ok_or_else(|| malformed("missing field \"market\""))?;
    let depth = match request.get("depth") {
        None => DEFAULT_BOOK_DEPTH,
        Some(value) => value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| malformed("field \"depth\": expected an integer >= 0"))?,
    };
    let info = &translator.markets[index];
    let levels = |side| {
        let mut depth_levels = Vec::new();
        engine.depth(info.id, side, depth, &mut depth_levels);
        depth_levels
            .iter()
            .map(|&(price, lots)| {
                json!([
                    decimal::format_scaled(price, info.tick),
                    decimal::format_scaled(lots, info.lot)
                ])
            })
            .collect::<Vec<_>>()
    };
    Ok(
        json!({"ev": "book", "market": info.name, "bids": levels(Side::Buy),
        "asks": levels(Side::Sell)}),
    )
}

fn balances(
    translator: &mut Translator,
    engine: &Engine<ArrayLadder>,
    request: &Value,
) -> Result<Value, QueryError> {
    let (account, account_value) = account_of(translator, engine, request)?;
    let mut rows = Vec::new();
    for (id, name) in translator.asset_names.iter().enumerate() {
        let Some(info) = translator.assets.get(name) else {
            continue;
        };
        let Some(balance) = engine.balance(account, id as engine::AssetId) else {
            continue;
        };
        let unit = decimal::unit_of(info.decimals);
        rows.push(json!({"asset": name,
            "total": decimal::format_scaled(balance.total, unit),
            "locked": decimal::format_scaled(balance.locked, unit),
            "available": decimal::format_scaled(balance.available(), unit)}));
    }
    let mut reply = json!({"ev": "balances", "account": account_value, "balances": rows});
    if let (Some(collateral), Some((cross, order_margin))) =
        (translator.collateral, engine.perp_collateral(account))
    {
        let unit = decimal::unit_of(collateral.decimals);
        reply["perp_collateral"] = json!({
            "asset": translator.asset_names[collateral.id as usize],
            "cross": decimal::format_scaled(cross, unit),
            "order_margin": decimal::format_scaled(order_margin, unit),
        });
    }
    Ok(reply)
}

fn orders(
    translator: &mut Translator,
    engine: &Engine<ArrayLadder>,
    request: &Value,
) -> Result<Value, QueryError> {
    let only = market_of(translator, request)?;
    let (account, account_value) = account_of(translator, engine, request)?;
    let mut rows = Vec::new();
    for (index, info) in translator.markets.iter().enumerate() {
        if only.is_some_and(|only| only != index) {
            continue;
        }
        for order in engine.account_orders(account, Some(info.id)) {
            rows.push(json!({"market": info.name,
                "oid": translator.oids.value(order.oid),
                "side": if order.side == Side::Buy { "buy" } else { "sell" },
                "price": decimal::format_scaled(order.price, info.tick),
                "qty": decimal::format_scaled(order.remaining, info.lot),
                "post_only": order.post_only,
                "reduce_only": order.reduce_only}));
        }
    }
    Ok(json!({"ev": "orders", "account": account_value, "orders": rows}))
}

fn positions(
    translator: &mut Translator,
    engine: &Engine<ArrayLadder>,
    request: &Value,
) -> Result<Value, QueryError> {
    let only = market_of(translator, request)?;
    let (account, account_value) = account_of(translator, engine, request)?;
    let mut rows = Vec::new();
    for (index, info) in translator.markets.iter().enumerate() {
        if info.perp.is_none() || only.is_some_and(|only| only != index) {
            continue;
        }
        let Some(view) = engine.position_view(account, info.id) else {
            continue;
        };
        if view.size == 0 && view.isolated_margin == 0 {
            continue;
        }
        rows.push(position_row(engine, account, info, &view));
    }
    let mut reply = json!({"ev": "positions", "account": account_value, "positions": rows});
    if let (Some(collateral), Some(cross)) =
        (translator.collateral, engine.margin_view(account, None))
    {
        let unit = decimal::unit_of(collateral.decimals);
        reply["cross"] = margin_json(&cross, unit);
    }
    Ok(reply)
}

fn position_row(
    engine: &Engine<ArrayLadder>,
    account: AccountId,
    info: &MarketInfo,
    view: &engine::PositionView,
) -> Value {
    let money = |units: i128| decimal::format_scaled_i128(units, info.quote_unit);
    let mark = engine.perp_market(info.id).map_or(0, |m| m.mark);
    let mut row = json!({"market": info.name,
        "size": decimal::format_scaled(view.size, info.lot),
        "entry_price": entry_price(view, info),
        "mark": decimal::format_scaled(mark, info.tick),
        "open_notional": money(view.open_notional),
        "unrealized_pnl": money(view.unrealized_pnl),
        "unsettled_funding": money(view.unsettled_funding),
        "leverage": view.leverage,
        "margin_mode": if view.isolated { "isolated" } else { "cross" }});
    if view.isolated {
        row["isolated_margin"] = json!(money(view.isolated_margin as i128));
        if let Some(margin) = engine.margin_view(account, Some(info.id)) {
            row["margin"] = margin_json(&margin, info.quote_unit);
        }
    }
    row
}

/// Average entry price: |cost basis| / |size| in price units, rounded to 8 decimals (half
/// away from zero); `null` for a flat position.
fn entry_price(view: &engine::PositionView, info: &MarketInfo) -> Value {
    if view.size == 0 {
        return Value::Null;
    }
    let notional = Decimal::from_i128_with_scale(view.open_notional.abs(), 0) * info.quote_unit;
    let qty = Decimal::from(view.size.unsigned_abs()) * info.lot;
    match notional.checked_div(qty) {
        Some(price) => json!(decimal::format(price.round_dp(8))),
        None => Value::Null,
    }
}

/// A bucket's equity and requirements; `margin_ratio` = maintenance / equity (liquidation
/// at 1 or more), `null` when nothing is required, 4 decimals.
fn margin_json(margin: &engine::MarginView, unit: Decimal) -> Value {
    let money = |units: i128| decimal::format_scaled_i128(units, unit);
    let ratio = if margin.maintenance == 0 {
        Value::Null
    } else if margin.equity <= 0 {
        json!("inf")
    } else {
        let ratio = Decimal::from_i128_with_scale(margin.maintenance, 0)
            / Decimal::from_i128_with_scale(margin.equity, 0);
        json!(decimal::format(ratio.round_dp(4)))
    };
    json!({"equity": money(margin.equity), "initial_margin": money(margin.initial),
        "maintenance_margin": money(margin.maintenance), "margin_ratio": ratio,
        "liquidatable": margin.maintenance > 0 && margin.equity < margin.maintenance})
}

/// `{"ev":"balance",...}`: an account's holding of one asset after a deposit, withdrawal or
/// collateral transfer (`asset` `None`: the perp collateral asset, with the account's cross
/// collateral as `perp_collateral`). `None` if the account or asset is unknown.
pub fn balance_record(
    translator: &Translator,
    engine: &Engine<ArrayLadder>,
    account: AccountId,
    asset: Option<engine::AssetId>,
) -> Option<Value> {
    let asset = asset.or(translator.collateral.map(|c| c.id))?;
    let name = translator.asset_names.get(asset as usize)?;
    let unit = decimal::unit_of(translator.assets.get(name)?.decimals);
    let balance = engine.balance(account, asset)?;
    let mut record = json!({"ev": "balance", "account": translator.account_value(account),
        "asset": name,
        "total": decimal::format_scaled(balance.total, unit),
        "locked": decimal::format_scaled(balance.locked, unit),
        "available": decimal::format_scaled(balance.available(), unit)});
    if translator.collateral.is_some_and(|c| c.id == asset) {
        if let Some((cross, _)) = engine.perp_collateral(account) {
            record["perp_collateral"] = json!(decimal::format_scaled(cross, unit));
        }
    }
    Some(record)
}

/// `asset`, `needed` and `available` of a refusal for insufficient balance or margin, as
/// decimals of the asset; `None` if the translator does not know the asset.
pub fn shortfall_fields(
    translator: &Translator,
    shortfall: &engine::Shortfall,
) -> Option<serde_json::Map<String, Value>> {
    let name = translator.asset_names.get(shortfall.asset as usize)?;
    let unit = decimal::unit_of(translator.assets.get(name)?.decimals);
    let mut fields = serde_json::Map::new();
    fields.insert("asset".into(), json!(name));
    fields.insert(
        "needed".into(),
        json!(decimal::format_scaled_i128(shortfall.needed, unit)),
    );
    fields.insert(
        "available".into(),
        json!(decimal::format_scaled_i128(shortfall.available, unit)),
    );
    Some(fields)
}
