//! Balance transfers and the perpetual-futures lines: perp markets, collateral, leverage, margin, oracle prices, funding.

use super::*;

impl Translator {
    pub(super) fn op_transfer(
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

    pub(super) fn op_perp_market(
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
            command: Command::CreatePerpMarket(Box::new(spec)),
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
    pub(super) fn perp_spec(&self, collateral: &str, p: &PerpFields) -> Result<PerpSpec, String> {
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

    pub(super) fn op_transfer_collateral(
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

    pub(super) fn op_leverage(
        &mut self,
        seq: u64,
        f: Fields,
        out: &mut Vec<Output>,
    ) -> Result<(), Malformed> {
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

    pub(super) fn op_isolated_margin(
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

    pub(super) fn op_oracle(
        &mut self,
        seq: u64,
        f: Fields,
        out: &mut Vec<Output>,
    ) -> Result<(), Malformed> {
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
            prices: Box::new(prices),
            count: decimals.len() as u8,
        };
        self.step(seq, &command, Some(index), Echo::default(), out);
        Ok(())
    }

    pub(super) fn op_funding(
        &mut self,
        seq: u64,
        f: Fields,
        out: &mut Vec<Output>,
    ) -> Result<(), Malformed> {
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
    pub(super) fn perp_index(
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
}
