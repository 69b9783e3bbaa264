//! Engine commands back to the JSON Lines that translate to them (`Translator::command_json`).

use super::*;

impl Translator {
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
                let info = perp_market(spec.market).filter(|info| info.perp == Some(**spec))?;
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
}
