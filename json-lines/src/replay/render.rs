//! Engine events back to output records (`Translator::render`).

use super::*;

impl Translator {
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
    pub(super) fn known_market(&self, market: MarketId) -> Option<usize> {
        let index = market as usize;
        (index < self.markets.len()).then_some(index)
    }

    pub(super) fn size(&self, market: Option<usize>, lots: Lots) -> String {
        match market {
            Some(m) => decimal::format_scaled(lots, self.markets[m].lot),
            None => lots.to_string(),
        }
    }
}
