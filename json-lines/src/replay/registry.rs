//! The dispatch of a command line to its operation, and the registry lines: assets and markets.

use super::*;

impl Translator {
    pub(super) fn command(
        &mut self,
        seq: u64,
        text: &str,
        out: &mut Vec<Output>,
    ) -> Result<(), Malformed> {
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

    pub(super) fn op_asset(
        &mut self,
        seq: u64,
        f: Fields,
        out: &mut Vec<Output>,
    ) -> Result<(), Malformed> {
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

    pub(super) fn register_asset(&mut self, name: &str, decimals: u32) -> AssetInfo {
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

    pub(super) fn op_market(
        &mut self,
        seq: u64,
        f: Fields,
        out: &mut Vec<Output>,
    ) -> Result<(), Malformed> {
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
    pub(super) fn market_spec(
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
    pub(super) fn book_params(
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
}
