//! Order lines (order, cancel, cancel_all, modify), the book query, and decimal prices and sizes to ticks and lots.

use super::*;

impl Translator {
    pub(super) fn op_order(
        &mut self,
        seq: u64,
        f: Fields,
        out: &mut Vec<Output>,
    ) -> Result<(), Malformed> {
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

    pub(super) fn op_cancel(
        &mut self,
        seq: u64,
        f: Fields,
        out: &mut Vec<Output>,
    ) -> Result<(), Malformed> {
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

    pub(super) fn op_cancel_all(
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

    pub(super) fn op_modify(
        &mut self,
        seq: u64,
        f: Fields,
        out: &mut Vec<Output>,
    ) -> Result<(), Malformed> {
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

    pub(super) fn op_book(
        &mut self,
        seq: u64,
        f: Fields,
        out: &mut Vec<Output>,
    ) -> Result<(), Malformed> {
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
    pub(super) fn market_index(
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
    pub(super) fn ticks(
        &self,
        index: usize,
        price: Decimal,
    ) -> Result<Ticks, (&'static str, String)> {
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
    pub(super) fn lots(&self, index: usize, qty: Decimal) -> Result<Lots, (&'static str, String)> {
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
    pub(super) fn price_qty(
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
    pub(super) fn step(
        &mut self,
        _seq: u64,
        command: &Command,
        market: Option<usize>,
        echo: Echo,
        _out: &mut Vec<Output>,
    ) {
        self.steps.push(Step::Run {
            command: command.clone(),
            market,
            echo,
        });
    }
}
