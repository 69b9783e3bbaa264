//! Hand-checked perpetual futures scenarios. Every expected number is worked out in the
//! comments from docs/perps.md. `check_invariants` (conservation, order margin, open
//! interest, the liquidation index) runs after every command.
//!
//! Market P: `QU = 1` (notional = price * lots), fees 0 unless a test says otherwise,
//! tiers: notional <= 10_000 at IMR 10% / MMR 5%, above at IMR 20% / MMR 10%; max leverage
//! 10; band 50% around the oracle.

use engine::{
    AccountId, CancelReason, Command, Engine, EngineConfig, Event, LiquidationStep, Lots,
    MarginTier, MarketId, NewOrder, OrderId, PerpSpec, RejectReason, SelfTradePrevention,
    Shortfall, Side, Ticks, TimeInForce, Units, INSURANCE_ACCOUNT, MAX_MARGIN_TIERS,
    MAX_ORACLE_SOURCES,
};

const USD: u32 = 1;
const P: MarketId = 10;
const A: AccountId = 1;
const B: AccountId = 2;
const C: AccountId = 3;
const PCT: u32 = 10_000_000; // 1% in ppb

use Side::{Buy, Sell};

fn spec() -> PerpSpec {
    let mut tiers = [MarginTier::default(); MAX_MARGIN_TIERS];
    tiers[0] = MarginTier {
        notional_up_to: 10_000,
        imr_ppb: 10 * PCT,
        mmr_ppb: 5 * PCT,
    };
    tiers[1] = MarginTier {
        notional_up_to: i64::MAX,
        imr_ppb: 20 * PCT,
        mmr_ppb: 10 * PCT,
    };
    PerpSpec {
        market: P,
        collateral: USD,
        quote_units_per_tick_lot: 1,
        min_lots: 1,
        max_price_ticks: 100_000,
        maker_fee_bps: 0,
        taker_fee_bps: 0,
        max_leverage: 10,
        tiers,
        tier_count: 2,
        open_interest_cap_lots: 1_000,
        price_band_ppb: 50 * PCT,
        interest_ppb: 0,
        funding_cap_ppb: 5 * PCT,
        impact_notional: 1_000,
        liquidation_chunk_notional: 1_000_000,
        liquidation_fee_ppb: PCT,
    }
}

struct Harness {
    engine: Engine,
    events: Vec<Event>,
}

impl Harness {
    fn new(spec: PerpSpec, accounts: &[(AccountId, Units)]) -> Harness {
        let mut harness = Harness {
            engine: Engine::new(EngineConfig {
                max_resting_orders: 1024,
                max_open_orders_per_account: 64,
            }),
            events: Vec::new(),
        };
        harness.ok(Command::CreateAsset { asset: USD });
        harness.ok(Command::CreatePerpMarket(Box::new(spec)));
        for &(account, amount) in accounts {
            harness.ok(Command::Deposit {
                account,
                asset: USD,
                amount,
            });
            harness.ok(Command::TransferCollateral { account, amount });
        }
        harness
    }

    /// Runs a command, checks every invariant and the incremental root, returns its events.
    fn run(&mut self, command: Command) -> Vec<Event> {
        self.events.clear();
        self.engine.step(&command, &mut self.events);
        if let Err(why) = self.engine.check_invariants() {
            panic!("after {command:?}: {why}\nevents: {:?}", self.events);
        }
        assert_eq!(self.engine.commit(), self.engine.state_hash());
        self.events.clone()
    }

    /// Runs a command that must not be rejected.
    fn ok(&mut self, command: Command) -> Vec<Event> {
        let events = self.run(command.clone());
        assert!(
            !events.iter().any(|e| matches!(e, Event::Rejected { .. })),
            "{command:?} was rejected: {events:?}"
        );
        events
    }

    fn reject_reason(&mut self, command: Command) -> RejectReason {
        let before = self.engine.state_hash();
        let events = self.run(command.clone());
        match events.as_slice() {
            [Event::Rejected { reason, .. }] => {
                assert_eq!(
                    self.engine.state_hash(),
                    before,
                    "a rejection changed state"
                );
                *reason
            }
            other => panic!("{command:?} not rejected: {other:?}"),
        }
    }

    fn oracle(&mut self, price: Ticks) -> Vec<Event> {
        let mut prices = [0; MAX_ORACLE_SOURCES];
        prices[0] = price;
        self.ok(Command::Oracle {
            market: P,
            prices: Box::new(prices),
            count: 1,
        })
    }

    fn size(&self, account: AccountId) -> Lots {
        self.engine.position_view(account, P).map_or(0, |p| p.size)
    }

    fn collateral(&self, account: AccountId) -> Units {
        self.engine.perp_collateral(account).unwrap().0
    }
}

fn order(account: AccountId, oid: OrderId, side: Side, price: Ticks, qty: Lots) -> Command {
    Command::Place(NewOrder {
        account,
        market: P,
        oid,
        side,
        price: Some(price),
        qty,
        tif: TimeInForce::Gtc,
        stp: SelfTradePrevention::CancelMaker,
        reduce_only: false,
    })
}

fn reduce_only(account: AccountId, oid: OrderId, side: Side, price: Ticks, qty: Lots) -> Command {
    match order(account, oid, side, price, qty) {
        Command::Place(mut o) => {
            o.reduce_only = true;
            Command::Place(o)
        }
        _ => unreachable!(),
    }
}

fn positions(events: &[Event]) -> Vec<(AccountId, Lots, i128, Units)> {
    events
        .iter()
        .filter_map(|e| match *e {
            Event::Position {
                account,
                size,
                open_notional,
                realized_pnl,
                ..
            } => Some((account, size, open_notional, realized_pnl)),
            _ => None,
        })
        .collect()
}

#[test]
fn fills_open_close_and_flip_positions_with_realized_pnl() {
    let mut h = Harness::new(spec(), &[(A, 10_000), (B, 10_000), (C, 10_000)]);
    h.oracle(100);
    h.ok(order(B, 1, Sell, 100, 10));
    // A buys 10 @ 100: A +10 (basis 1000), B -10 (basis -1000).
    let events = h.ok(order(A, 1, Buy, 100, 10));
    assert_eq!(
        positions(&events),
        vec![(A, 10, 1000, 0), (B, -10, -1000, 0)]
    );
    // A sells 4 @ 110 to C: closes 4 of 10, basis share 1000 * 4 / 10 = 400, realized
    // 4 * 110 - 400 = 40; A keeps 6 at basis 600. C opens +4 at 440.
    h.ok(order(C, 1, Buy, 110, 4));
    let events = h.ok(order(A, 2, Sell, 110, 4));
    assert_eq!(positions(&events), vec![(A, 6, 600, 40), (C, 4, 440, 0)]);
    assert_eq!(h.collateral(A), 10_040);
    // A sells 10 @ 90 to B (B closes its short): A closes 6 (basis 600, value 540:
    // realized -60) and opens -4 at 360. B: closes 10 of -10, basis share -1000, realized
    // -(10 * 90) - (-1000) = +100.
    h.ok(order(B, 2, Buy, 90, 10));
    let events = h.ok(order(A, 3, Sell, 90, 10));
    assert_eq!(positions(&events), vec![(A, -4, -360, -60), (B, 0, 0, 100)]);
    assert_eq!(h.collateral(A), 10_040 - 60);
    assert_eq!(h.collateral(B), 10_100);
    assert_eq!(h.engine.perp_market(P).unwrap().open_interest, 4);
}

#[test]
fn pre_trade_checks_reject_with_typed_reasons_and_change_nothing() {
    let mut h = Harness::new(spec(), &[(A, 100), (B, 100_000)]);
    assert_eq!(
        h.reject_reason(order(A, 1, Buy, 100, 1)),
        RejectReason::NoOraclePrice
    );
    h.oracle(100);
    // Leverage 10 and tier IMR 10%: 10 lots @ 100 need 1000 * 10% = 100 (all A has).
    assert_eq!(
        h.reject_reason(order(A, 1, Buy, 100, 11)),
        RejectReason::InsufficientMargin
    );
    // 11 lots need 110 of margin; A's free collateral is 100.
    assert_eq!(
        h.engine.last_shortfall(),
        Some(Shortfall {
            asset: USD,
            needed: 110,
            available: 100
        })
    );
    h.ok(order(A, 1, Buy, 100, 10));
    assert_eq!(h.engine.perp_collateral(A), Some((100, 100)));
    // Band 50%: 151 and 49 are outside [50, 150].
    assert_eq!(
        h.reject_reason(order(B, 1, Buy, 151, 1)),
        RejectReason::PriceBand
    );
    assert_eq!(
        h.reject_reason(order(B, 1, Sell, 49, 1)),
        RejectReason::PriceBand
    );
    // No position: reduce-only has nothing to reduce.
    assert_eq!(
        h.reject_reason(reduce_only(B, 1, Sell, 100, 1)),
        RejectReason::ReduceOnly
    );
    // Open interest cap 1000 lots.
    assert_eq!(
        h.reject_reason(order(B, 1, Buy, 100, 1001)),
        RejectReason::OpenInterestCap
    );
    // Leverage outside 1..=10, unknown market, spot-only commands.
    let leverage = |leverage| Command::SetLeverage {
        account: B,
        market: P,
        leverage,
        isolated: false,
    };
    assert_eq!(h.reject_reason(leverage(0)), RejectReason::InvalidLeverage);
    assert_eq!(h.reject_reason(leverage(11)), RejectReason::InvalidLeverage);
    // A has an open order in P: no leverage change while it rests.
    assert_eq!(
        h.reject_reason(Command::SetLeverage {
            account: A,
            market: P,
            leverage: 5,
            isolated: false,
        }),
        RejectReason::PositionOpen
    );
    assert_eq!(
        h.reject_reason(Command::Funding { market: 99 }),
        RejectReason::UnknownMarket
    );
    // Withdrawing margin that the open order reserves.
    assert_eq!(
        h.reject_reason(Command::TransferCollateral {
            account: A,
            amount: -1
        }),
        RejectReason::InsufficientMargin
    );
    assert_eq!(
        h.engine.last_shortfall(),
        Some(Shortfall {
            asset: USD,
            needed: 1,
            available: 0
        })
    );
    assert_eq!(
        h.reject_reason(Command::TransferCollateral {
            account: 77,
            amount: 5
        }),
        RejectReason::UnknownAccount
    );
    let mut prices = [0; MAX_ORACLE_SOURCES];
    prices[0] = 100;
    assert_eq!(
        h.reject_reason(Command::Oracle {
            market: P,
            prices: Box::new(prices),
            count: 9,
        }),
        RejectReason::InvalidPrice
    );
}

#[test]
fn leverage_sets_the_initial_margin_and_tiers_raise_it() {
    let mut h = Harness::new(spec(), &[(A, 10_000), (B, 100_000)]);
    h.oracle(100);
    h.ok(Command::SetLeverage {
        account: A,
        market: P,
        leverage: 2,
        isolated: false,
    });
    // Leverage 2: rate max(10%, 50%) = 50%: 10 lots @ 100 reserve 500.
    h.ok(order(A, 1, Buy, 100, 10));
    assert_eq!(h.engine.perp_collateral(A), Some((10_000, 500)));
    // B at leverage 10: 200 lots @ 100 = 20_000 notional, tier 2 (IMR 20%): 4000.
    h.ok(order(B, 1, Sell, 100, 200));
    assert_eq!(h.engine.perp_collateral(B), Some((100_000, 4000 - 200)));
    // (10 of B's lots filled against A at once and its reserve for them went back.)
    let margin = h.engine.margin_view(B, None).unwrap();
    // B is short 10 @ 100, mark 100: notional 1000, tier 1: IM 100, MM 50.
    assert_eq!((margin.initial, margin.maintenance), (100, 50));
}

#[test]
fn reduce_only_orders_are_cut_to_the_position_and_trimmed_when_it_shrinks() {
    let mut h = Harness::new(spec(), &[(A, 10_000), (B, 10_000), (C, 10_000)]);
    h.oracle(100);
    h.ok(order(B, 1, Sell, 100, 5));
    h.ok(order(A, 1, Buy, 100, 5));
    // A is long 5: a reduce-only sell of 8 is cut to 5 and rests.
    let events = h.ok(reduce_only(A, 2, Sell, 120, 8));
    assert!(matches!(events[0], Event::Accepted { .. }));
    assert_eq!(h.engine.book_orders(P, Sell)[0].remaining, 5);
    // Another reduce-only sell has nothing left to reduce.
    assert_eq!(
        h.reject_reason(reduce_only(A, 3, Sell, 121, 1)),
        RejectReason::ReduceOnly
    );
    // A sells 3 (not reduce-only) to C: long 2 is left, the 5-lot reduce-only order could
    // now flip A short, so it is canceled.
    h.ok(order(C, 1, Buy, 100, 3));
    let events = h.ok(order(A, 4, Sell, 100, 3));
    assert!(events.contains(&Event::Canceled {
        market: P,
        account: A,
        oid: 2,
        remaining: 5,
        reason: CancelReason::ReduceOnly,
    }));
    assert_eq!(h.size(A), 2);
}

#[test]
fn oracle_is_the_median_and_mark_is_the_median_of_ema_mid_and_last() {
    let mut h = Harness::new(spec(), &[(A, 10_000), (B, 10_000)]);
    let mut prices = [0; MAX_ORACLE_SOURCES];
    prices[..4].copy_from_slice(&[103, 99, 100, 250]);
    // Sorted 99, 100, 103, 250: the lower middle is 100. Empty book: premium 0, mid and
    // last are the oracle, so the mark is 100.
    let events = h.ok(Command::Oracle {
        market: P,
        prices: Box::new(prices),
        count: 4,
    });
    assert_eq!(
        events,
        vec![Event::OraclePrice {
            market: P,
            oracle: 100,
            mark: 100,
            premium_ppb: 0
        }]
    );
    // Book 110 bid x 20 / 112 ask x 20 (2200+ notional each side, impact 1000):
    // impact bid 110 (10 lots = 1100 >= 1000), impact ask 112.
    // premium = (110 - 100) / 100 - 0 = 10% = 100_000_000 ppb.
    // EMA: 0 + (10^8 - 0) / 8 = 12_500_000 -> oracle + 1.25% = 101.25 -> 101 (toward 0).
    // mid = 111, last trade none -> oracle 100; mark = median(101, 111, 100) = 101.
    h.ok(order(A, 1, Buy, 110, 20));
    h.ok(order(B, 1, Sell, 112, 20));
    let events = h.oracle(100);
    assert_eq!(
        events,
        vec![Event::OraclePrice {
            market: P,
            oracle: 100,
            mark: 101,
            premium_ppb: 100_000_000
        }]
    );
    let view = h.engine.perp_market(P).unwrap();
    assert_eq!(view.ema_premium_ppb, 12_500_000);
}

#[test]
fn funding_moves_the_index_and_positions_settle_toward_the_payer() {
    let mut s = spec();
    s.interest_ppb = 100_000; // 0.01% per interval
    let mut h = Harness::new(s, &[(A, 10_000), (B, 10_000), (C, 10_000)]);
    h.oracle(100);
    // A long 3, B short 3 at 100.
    h.ok(order(B, 1, Sell, 100, 3));
    h.ok(order(A, 1, Buy, 100, 3));
    // Bid 104 x 50 from C: impact bid 104; no asks left: that side contributes 0.
    // premium = 4% = 40_000_000 ppb per sample. Two samples.
    h.ok(order(C, 1, Buy, 104, 50));
    h.oracle(100);
    h.oracle(100);
    // Three samples: 0 (the first update, empty book), 4%, 4%: average 80_000_000 / 3 =
    // 26_666_666 ppb (toward zero).
    // rate = clamp(avg + clamp(interest - avg, -0.05%, 0.05%), -cap, cap)
    //      = 26_666_666 - 500_000 = 26_166_666 ppb (cap 5%).
    // index += rate * oracle * QU = 26_166_666 * 100 = 2_616_666_600 nano-units per lot.
    let events = h.ok(Command::Funding { market: P });
    assert_eq!(
        events,
        vec![Event::Funding {
            market: P,
            rate_ppb: 26_166_666,
            index: 2_616_666_600,
        }]
    );
    // A owes 3 * 2.6166666 = 7.85 -> pays 8 (toward the payer); B is owed 7.85 -> gets 7.
    assert_eq!(h.engine.position_view(A, P).unwrap().unsettled_funding, 8);
    assert_eq!(h.engine.position_view(B, P).unwrap().unsettled_funding, -7);
    // Both settle on their next change: A sells 1 to C, B buys 1 from ... a new seller C.
    let events = h.ok(order(A, 2, Sell, 104, 1));
    let paid = events.iter().find_map(|e| match *e {
        Event::Position {
            account: A,
            funding_paid,
            ..
        } => Some(funding_paid),
        _ => None,
    });
    assert_eq!(paid, Some(8));
    assert_eq!(h.engine.perp_market(P).unwrap().funding_pool, 8);
}

/// A: long 10 @ 100 with 100 collateral (leverage 10). MM at mark m: ceil(10 m * 5%).
/// Equity at m: 100 + 10 (m - 100). Liquidatable when 100 + 10 m - 1000 < m / 2, i.e.
/// m < 94.7: at 95 (equity 50, MM 48) it is healthy, at 94 (equity 40, MM 47) it is not.
fn levered_long(liquidity: &[(AccountId, Ticks, Lots)], insurance: Units) -> Harness {
    let mut h = Harness::new(spec(), &[(A, 100), (B, 100_000), (C, 100_000)]);
    if insurance > 0 {
        h.ok(Command::Deposit {
            account: INSURANCE_ACCOUNT,
            asset: USD,
            amount: insurance,
        });
        h.ok(Command::TransferCollateral {
            account: INSURANCE_ACCOUNT,
            amount: insurance,
        });
    }
    h.oracle(100);
    h.ok(order(B, 1, Sell, 100, 10));
    h.ok(order(A, 1, Buy, 100, 10));
    for (i, &(account, price, lots)) in liquidity.iter().enumerate() {
        h.ok(order(account, 100 + i as u64, Buy, price, lots));
    }
    h
}

fn liquidations(events: &[Event]) -> Vec<(LiquidationStep, Lots, Units, Units, Units)> {
    events
        .iter()
        .filter_map(|e| match *e {
            Event::Liquidation {
                step,
                lots,
                notional,
                fee,
                bad_debt,
                ..
            } => Some((step, lots, notional, fee, bad_debt)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_mark_move_liquidates_on_the_book_in_part() {
    // Bids: C 94 x 3, then 93 x 20.
    let mut h = levered_long(&[(C, 94, 3), (C, 93, 20)], 0);
    let events = h.oracle(95);
    assert!(
        liquidations(&events).is_empty(),
        "healthy at 95: {events:?}"
    );
    // At 94: equity 40 < MM 47. One chunk (the whole position fits): sell 10 into the
    // bids: 3 @ 94 + 7 @ 93 = 282 + 651 = 933. Fee 1% of 933 = ceil(9.33) = 10.
    // Realized: 933 - 1000 = -67: collateral 100 - 67 - 10 = 23.
    let events = h.oracle(94);
    assert_eq!(
        liquidations(&events),
        vec![(LiquidationStep::Book, 10, 933, 10, 0)]
    );
    assert_eq!(h.size(A), 0);
    assert_eq!(h.collateral(A), 23);
    assert_eq!(h.engine.insurance_fund(), 10);
}

#[test]
fn a_chunked_liquidation_stops_once_the_account_is_healthy_again() {
    let mut s = spec();
    // 2 lots per chunk at mark 94 (notional per lot 94).
    s.liquidation_chunk_notional = 188;
    let mut h = Harness::new(s, &[(A, 100), (B, 100_000), (C, 100_000)]);
    h.oracle(100);
    h.ok(order(B, 1, Sell, 100, 10));
    h.ok(order(A, 1, Buy, 100, 10));
    h.ok(order(C, 1, Buy, 94, 50));
    // At 94: equity 40, MM 47. Chunk 1: sell 2 @ 94 (value 188, realized 188 - 200 = -12,
    // fee ceil(1.88) = 2): collateral 86, long 8 basis 800: equity 86 + 752 - 800 = 38,
    // MM ceil(752 * 5%) = 38: healthy (38 >= 38), stop.
    let events = h.oracle(94);
    assert_eq!(
        liquidations(&events),
        vec![(LiquidationStep::Book, 2, 188, 2, 0)]
    );
    assert_eq!(h.size(A), 8);
    assert_eq!(h.collateral(A), 86);
}

#[test]
fn with_no_bids_the_insurance_fund_takes_the_position() {
    let mut h = levered_long(&[], 10_000);
    // Gap to 80: equity 100 + 10 * (80 - 100) = -100. No bids: backstop at the bankruptcy
    // value 10 * 80 + 100 = 900 (equity exactly zero), bad debt 100, no fee (nothing left).
    let events = h.oracle(80);
    assert_eq!(
        liquidations(&events),
        vec![(LiquidationStep::Backstop, 10, 900, 0, 100)]
    );
    assert_eq!((h.size(A), h.collateral(A)), (0, 0));
    assert_eq!(h.size(INSURANCE_ACCOUNT), 10);
    // The fund holds long 10 at basis 900 and mark 80: its equity lost the bad debt.
    let fund = h.engine.margin_view(INSURANCE_ACCOUNT, None).unwrap();
    assert_eq!(fund.equity, 10_000 - 100);
}

#[test]
fn an_empty_insurance_fund_means_auto_deleveraging() {
    // C is short 5 @ 100 too (bought by B), so two shorts stand opposite A: B (short 10,
    // bigger profit share) and C.
    let mut h = Harness::new(spec(), &[(A, 100), (B, 100_000), (C, 2_000)]);
    h.oracle(100);
    h.ok(order(B, 1, Sell, 100, 10));
    h.ok(order(A, 1, Buy, 100, 10));
    h.ok(order(C, 1, Sell, 100, 5));
    h.ok(order(B, 2, Buy, 100, 5));
    // Now A +10 (basis 1000), B -5 (basis -500), C -5 (basis -500).
    let events = h.oracle(80);
    // Bankruptcy value 900 for 10 lots. Scores: upnl/|basis| * notional / equity:
    // B: 100/500 * 400 / 100_100 = tiny; C: 100/500 * 400 / 2_100 = larger: C first.
    // C closes 5 at 450 (of 900), B closes 5 at 450.
    let adl: Vec<(AccountId, Lots, Units)> = events
        .iter()
        .filter_map(|e| match *e {
            Event::Adl {
                account,
                lots,
                notional,
                ..
            } => Some((account, lots, notional)),
            _ => None,
        })
        .collect();
    assert_eq!(adl, vec![(C, 5, 450), (B, 5, 450)]);
    assert_eq!(
        liquidations(&events),
        vec![(LiquidationStep::Adl, 10, 900, 0, 100)]
    );
    assert_eq!((h.size(A), h.collateral(A)), (0, 0));
    // C sold at 100 and bought back at 90: +50.
    assert_eq!((h.size(C), h.collateral(C)), (0, 2_050));
    assert_eq!(h.size(B), 0);
}

#[test]
fn isolated_positions_are_liquidated_alone() {
    let mut h = Harness::new(spec(), &[(A, 1_000), (B, 100_000), (C, 100_000)]);
    h.oracle(100);
    h.ok(Command::SetLeverage {
        account: A,
        market: P,
        leverage: 10,
        isolated: true,
    });
    h.ok(order(B, 1, Sell, 100, 10));
    // The fill moves its reserved margin (1000 * 10% = 100) into the isolated position.
    h.ok(order(A, 1, Buy, 100, 10));
    let view = h.engine.position_view(A, P).unwrap();
    assert_eq!((view.isolated, view.isolated_margin), (true, 100));
    assert_eq!(h.collateral(A), 900);
    h.ok(order(C, 1, Buy, 90, 50));
    // At 94 the isolated bucket (100 + 10 * (94 - 100) = 40 < MM 47) is liquidated; the
    // 900 of cross collateral is untouched by the loss.
    let events = h.oracle(94);
    assert_eq!(liquidations(&events).len(), 1);
    assert_eq!(h.size(A), 0);
    // Sold 10 @ 90: realized -100 of the 100 isolated margin, fee capped at what is left
    // (0); the empty isolated margin returns nothing to cross.
    assert_eq!(h.collateral(A), 900);
    assert_eq!(h.engine.position_view(A, P).unwrap().isolated_margin, 0);
}

#[test]
fn snapshots_and_roots_carry_the_perp_state() {
    let mut h = levered_long(&[(C, 90, 5)], 500);
    h.oracle(99);
    h.ok(Command::Funding { market: P });
    h.ok(reduce_only(A, 7, Sell, 120, 4));
    let bytes = h.engine.snapshot();
    let mut restored = Engine::<engine::ArrayLadder>::restore(&bytes).unwrap();
    assert_eq!(restored.state_hash(), h.engine.state_hash());
    // The same future on both: B sells into C's bid (last trade 90, the bid side empties),
    // then a crash to 80: mark = median(80 + EMA, no mid: 80, last 90) = 80, A is under.
    let mut prices = [0; MAX_ORACLE_SOURCES];
    prices[0] = 80;
    let mut liquidated = false;
    for command in [
        order(B, 9, Sell, 85, 5),
        Command::Oracle {
            market: P,
            prices: Box::new(prices),
            count: 1,
        },
    ] {
        let events = h.ok(command.clone());
        let mut again = Vec::new();
        restored.step(&command, &mut again);
        assert_eq!(events, again);
        liquidated |= !liquidations(&events).is_empty();
    }
    assert!(liquidated);
    assert_eq!(restored.state_hash(), h.engine.state_hash());
}

#[test]
fn out_of_range_values_are_refused_without_panics_or_effects() {
    let mut h = Harness::new(spec(), &[(A, 1_000), (B, 1_000)]);
    h.oracle(100);
    h.ok(order(B, 1, Sell, 100, 2));
    h.ok(order(A, 1, Buy, 100, 2));
    let mut prices = [0; MAX_ORACLE_SOURCES];
    let huge = [
        (
            order(A, 2, Buy, 100, Lots::MAX),
            RejectReason::OpenInterestCap,
        ),
        (
            order(A, 2, Sell, 100, Lots::MAX),
            RejectReason::OpenInterestCap,
        ),
        (
            reduce_only(A, 2, Buy, 100, Lots::MAX),
            RejectReason::ReduceOnly,
        ),
        (order(A, 2, Buy, Ticks::MAX, 1), RejectReason::InvalidPrice),
        (order(A, 2, Buy, 0, 1), RejectReason::InvalidPrice),
        (order(A, 2, Buy, 100, 0), RejectReason::InvalidQty),
        (order(A, 2, Buy, 100, -5), RejectReason::InvalidQty),
        (
            Command::TransferCollateral {
                account: A,
                amount: Units::MIN,
            },
            RejectReason::InvalidQty,
        ),
        (
            Command::TransferCollateral {
                account: A,
                amount: 0,
            },
            RejectReason::InvalidQty,
        ),
        (
            Command::TransferCollateral {
                account: A,
                amount: Units::MAX,
            },
            RejectReason::InsufficientBalance,
        ),
        (
            Command::SetLeverage {
                account: A,
                market: P,
                leverage: u32::MAX,
                isolated: false,
            },
            RejectReason::InvalidLeverage,
        ),
        (
            Command::IsolatedMargin {
                account: A,
                market: P,
                amount: 5,
            },
            RejectReason::NoPosition,
        ),
        (
            Command::Oracle {
                market: P,
                prices: Box::new(prices),
                count: 1,
            },
            RejectReason::InvalidPrice,
        ),
        (
            Command::Oracle {
                market: P,
                prices: Box::new(prices),
                count: 0,
            },
            RejectReason::InvalidPrice,
        ),
    ];
    for (command, reason) in huge {
        assert_eq!(h.reject_reason(command.clone()), reason, "{command:?}");
    }
    prices[0] = i64::MAX;
    assert_eq!(
        h.reject_reason(Command::Oracle {
            market: P,
            prices: Box::new(prices),
            count: 1,
        }),
        RejectReason::InvalidPrice
    );
    // A perp market spec with broken tiers, fees or leverage is refused.
    let mut bad = spec();
    bad.market = 11;
    bad.tiers[0].mmr_ppb = bad.tiers[0].imr_ppb;
    assert_eq!(
        h.reject_reason(Command::CreatePerpMarket(Box::new(bad))),
        RejectReason::InvalidMarket
    );
    let mut bad = spec();
    bad.market = 11;
    bad.max_leverage = 0;
    assert_eq!(
        h.reject_reason(Command::CreatePerpMarket(Box::new(bad))),
        RejectReason::InvalidMarket
    );
    let mut bad = spec();
    bad.market = 11;
    bad.tier_count = 9;
    assert_eq!(
        h.reject_reason(Command::CreatePerpMarket(Box::new(bad))),
        RejectReason::InvalidMarket
    );
    let mut bad = spec();
    bad.market = 11;
    bad.collateral = 99;
    assert_eq!(
        h.reject_reason(Command::CreatePerpMarket(Box::new(bad))),
        RejectReason::UnknownAsset
    );
    // Everything accepted before is intact.
    assert_eq!((h.size(A), h.size(B)), (2, -2));
}

#[test]
fn the_insurance_fund_is_always_cross_margined() {
    let mut h = Harness::new(spec(), &[(A, 1_000)]);
    assert_eq!(
        h.reject_reason(Command::SetLeverage {
            account: INSURANCE_ACCOUNT,
            market: P,
            leverage: 5,
            isolated: true,
        }),
        RejectReason::InvalidLeverage
    );
    h.ok(Command::SetLeverage {
        account: INSURANCE_ACCOUNT,
        market: P,
        leverage: 5,
        isolated: false,
    });
}

#[test]
fn account_orders_lists_an_accounts_orders_in_entry_order() {
    let mut h = Harness::new(spec(), &[(A, 10_000), (B, 10_000)]);
    h.oracle(100);
    h.ok(order(A, 1, Buy, 95, 1));
    h.ok(order(B, 1, Buy, 96, 1));
    h.ok(order(A, 2, Sell, 105, 2));
    h.ok(order(A, 3, Buy, 94, 3));
    // A price change re-enters order 1 at the back.
    h.ok(Command::Modify {
        account: A,
        market: P,
        oid: 1,
        price: 93,
        qty: 1,
    });
    let oids: Vec<OrderId> = h
        .engine
        .account_orders(A, Some(P))
        .iter()
        .map(|o| o.oid)
        .collect();
    assert_eq!(oids, vec![2, 3, 1]);
    assert_eq!(h.engine.account_orders(A, None).len(), 3);
    assert_eq!(h.engine.account_orders(B, Some(P)).len(), 1);
    assert!(h.engine.account_orders(A, Some(99)).is_empty());
    assert!(h.engine.account_orders(77, None).is_empty());
}

// ---- fill-time limits (each of these was a hole found in review) -----------------------

#[test]
fn a_modify_runs_the_gap_and_open_interest_checks_of_a_new_order() {
    let mut s = spec();
    s.open_interest_cap_lots = 70;
    let mut h = Harness::new(s, &[(A, 1_000), (B, 100_000)]);
    h.oracle(100);
    h.ok(order(B, 1, Sell, 150, 60));
    // Buying 60 at 150 against a mark of 100 starts 3000 under water: refused ...
    assert_eq!(
        h.reject_reason(order(A, 1, Buy, 150, 60)),
        RejectReason::InsufficientMargin
    );
    // ... and so is the same order reached by a modify of a harmless one.
    h.ok(order(A, 1, Buy, 60, 60));
    assert_eq!(
        h.reject_reason(Command::Modify {
            account: A,
            market: P,
            oid: 1,
            price: 150,
            qty: 60,
        }),
        RejectReason::InsufficientMargin
    );
    // Open interest: a modify may not grow an order past the cap either.
    h.ok(order(B, 2, Buy, 60, 1));
    assert_eq!(
        h.reject_reason(Command::Modify {
            account: B,
            market: P,
            oid: 2,
            price: 60,
            qty: 71,
        }),
        RejectReason::OpenInterestCap
    );
}

#[test]
fn a_fok_that_a_reduce_only_maker_cannot_fill_is_refused_whole() {
    let mut h = Harness::new(spec(), &[(A, 1_000), (B, 100_000), (C, 100_000)]);
    h.oracle(100);
    h.ok(order(B, 1, Sell, 100, 5));
    h.ok(order(A, 1, Buy, 100, 5));
    // A: a plain sell of 5 at 100, then a reduce-only sell of 5 at 101. Ten lots rest, but
    // once the first five trade A is flat and the reduce-only five would be canceled: a
    // FOK for 10 cannot fill, and is refused with no effect.
    h.ok(order(A, 2, Sell, 100, 5));
    h.ok(reduce_only(A, 3, Sell, 101, 5));
    let fok = match order(C, 1, Buy, 101, 10) {
        Command::Place(o) => Command::Place(NewOrder {
            tif: TimeInForce::Fok,
            ..o
        }),
        _ => unreachable!(),
    };
    assert_eq!(h.reject_reason(fok), RejectReason::FokUnfilled);
    assert_eq!(h.engine.book_orders(P, Sell).len(), 2);
}

#[test]
fn a_reduce_only_maker_never_opens_or_flips_a_position() {
    let mut h = Harness::new(spec(), &[(A, 1_000), (B, 100_000), (C, 100_000)]);
    h.oracle(100);
    h.ok(order(B, 1, Sell, 100, 5));
    h.ok(order(A, 1, Buy, 100, 5));
    // A rests a plain sell of 5 and a reduce-only sell of 5 behind it.
    h.ok(order(A, 2, Sell, 100, 5));
    h.ok(reduce_only(A, 3, Sell, 101, 5));
    // C buys 10: the plain sell flattens A; the reduce-only one has nothing left to reduce
    // and is canceled instead of opening a short.
    let events = h.ok(order(C, 1, Buy, 101, 10));
    assert!(events.contains(&Event::Canceled {
        market: P,
        account: A,
        oid: 3,
        remaining: 5,
        reason: CancelReason::ReduceOnly,
    }));
    assert_eq!(h.size(A), 0);
}

#[test]
fn resting_orders_that_cross_a_new_band_are_canceled() {
    let mut s = spec();
    s.price_band_ppb = 10 * PCT;
    let mut h = Harness::new(s, &[(A, 1_000), (B, 100_000)]);
    h.oracle(100);
    h.ok(order(A, 1, Buy, 100, 10));
    h.ok(order(A, 2, Buy, 95, 1));
    // The oracle drops to 90: the band is [81, 99]. The bid at 100 would let anyone sell
    // to A above the band, so it goes; the bid at 95 stays.
    let events = h.oracle(90);
    assert!(events.contains(&Event::Canceled {
        market: P,
        account: A,
        oid: 1,
        remaining: 10,
        reason: CancelReason::PriceBand,
    }));
    assert_eq!(h.engine.book_orders(P, Buy).len(), 1);
    // A seller at the band's bottom meets only the bid at 95.
    h.ok(order(B, 1, Sell, 81, 10));
    assert_eq!(h.size(A), 1);
}

#[test]
fn an_isolated_liquidation_pays_its_fee() {
    // As in `a_mark_move_liquidates_on_the_book_in_part`, but isolated: 10 @ 100 with the
    // 100 of margin its fill moved in, bids 94 x 3 and 93 x 20, liquidated at 94 by
    // selling 933 of notional: fee ceil(9.33) = 10 from what the position hands back
    // (100 - 67 = 33).
    let mut h = Harness::new(spec(), &[(A, 1_000), (B, 100_000), (C, 100_000)]);
    h.oracle(100);
    h.ok(Command::SetLeverage {
        account: A,
        market: P,
        leverage: 10,
        isolated: true,
    });
    h.ok(order(B, 1, Sell, 100, 10));
    h.ok(order(A, 1, Buy, 100, 10));
    h.ok(order(C, 1, Buy, 94, 3));
    h.ok(order(C, 2, Buy, 93, 20));
    let events = h.oracle(94);
    assert_eq!(
        liquidations(&events),
        vec![(LiquidationStep::Book, 10, 933, 10, 0)]
    );
    assert_eq!(h.collateral(A), 900 + 33 - 10);
    assert_eq!(h.engine.insurance_fund(), 10);
}

#[test]
fn positions_can_never_reach_a_notional_past_the_bound() {
    // QU 10^12 and max price 10^6: one lot at the top is 10^18 units; 2^60 / 10^18 = 1 lot
    // is the most open interest there may be, whatever the spec's cap says.
    let mut s = spec();
    s.quote_units_per_tick_lot = 1_000_000_000_000;
    s.max_price_ticks = 1_000_000;
    s.open_interest_cap_lots = Lots::MAX;
    let big = 1_000_000_000_000_000_000;
    let mut h = Harness::new(s, &[(A, big), (B, big)]);
    h.oracle(1_000_000);
    h.ok(order(B, 1, Sell, 1_000_000, 1));
    assert_eq!(
        h.reject_reason(order(A, 1, Buy, 1_000_000, 20)),
        RejectReason::OpenInterestCap
    );
    h.ok(order(A, 1, Buy, 1_000_000, 1));
    // A crash liquidates nothing into an overflow.
    h.oracle(950_000);
    h.oracle(500_001);
    // A spec that cannot hold one minimum order under the bound is refused.
    let mut bad = spec();
    bad.market = 12;
    bad.quote_units_per_tick_lot = 1 << 40;
    bad.max_price_ticks = 1 << 21;
    assert_eq!(
        h.reject_reason(Command::CreatePerpMarket(Box::new(bad))),
        RejectReason::InvalidMarket
    );
}

#[test]
fn snapshots_restore_accounts_with_many_position_slots() {
    let mut h = Harness::new(spec(), &[(A, 1_000)]);
    for market in 20..24 {
        let mut s = spec();
        s.market = market;
        h.ok(Command::CreatePerpMarket(Box::new(s)));
    }
    // The last account touches four markets; the book is empty.
    h.ok(Command::Deposit {
        account: 9,
        asset: USD,
        amount: 10,
    });
    for market in 20..24 {
        h.ok(Command::SetLeverage {
            account: 9,
            market,
            leverage: 3,
            isolated: false,
        });
    }
    let restored = Engine::<engine::ArrayLadder>::restore(&h.engine.snapshot()).unwrap();
    assert_eq!(restored.state_hash(), h.engine.state_hash());
}

// ---- issue #17: the repro streams of ../shared/repro/perps/, worked by hand ----------------

/// The repro streams' set-up: A (1_000 of collateral) buys 10 @ 100 from B (5_000), each
/// isolated or cross, with `insurance` in the fund. Fees 0, IMR 10% / MMR 5%, leverage 10.
/// An isolated fill moves `ceil(N(100, 10) * 10%) = 100` from cross collateral into the
/// isolated margin (gap 0): A isolated holds 100 and 900 cross; B isolated likewise 100 and
/// 4_900.
fn repro(spec: PerpSpec, a_isolated: bool, b_isolated: bool, insurance: Units) -> Harness {
    let mut h = Harness::new(spec, &[(A, 1_000), (B, 5_000)]);
    for (account, isolated) in [(A, a_isolated), (B, b_isolated)] {
        h.ok(Command::SetLeverage {
            account,
            market: P,
            leverage: 10,
            isolated,
        });
    }
    if insurance > 0 {
        h.ok(Command::Deposit {
            account: INSURANCE_ACCOUNT,
            asset: USD,
            amount: insurance,
        });
        h.ok(Command::TransferCollateral {
            account: INSURANCE_ACCOUNT,
            amount: insurance,
        });
    }
    h.oracle(100);
    h.ok(order(B, 1, Sell, 100, 10));
    h.ok(ioc(order(A, 1, Buy, 100, 10)));
    let margin = |h: &Harness, account| h.engine.position_view(account, P).unwrap();
    assert_eq!(
        margin(&h, A).isolated_margin,
        if a_isolated { 100 } else { 0 }
    );
    assert_eq!(
        margin(&h, B).isolated_margin,
        if b_isolated { 100 } else { 0 }
    );
    h
}

fn ioc(command: Command) -> Command {
    match command {
        Command::Place(mut o) => {
            o.tif = TimeInForce::Ioc;
            Command::Place(o)
        }
        _ => unreachable!(),
    }
}

fn transfer(account: AccountId, amount: Units) -> Command {
    Command::TransferCollateral { account, amount }
}

fn adls(events: &[Event]) -> Vec<(AccountId, Lots, Units)> {
    events
        .iter()
        .filter_map(|e| match *e {
            Event::Adl {
                account,
                lots,
                notional,
                ..
            } => Some((account, lots, notional)),
            _ => None,
        })
        .collect()
}

/// F1a and its control: A's isolated long is bankrupt at 85 (equity 100 + 10 * (85 - 100) =
/// -50, bad debt 50) and closes by ADL against B at the bankruptcy value 10 * 85 + 50 = 900
/// (the fund, 0 or 1, cannot take it: its equity would be 1 - 50 < MM). A realizes
/// 900 - 1_000 = -100 of its 100: it hands back 0, so its fee (ceil(900 * 1%) = 9 due) is 0,
/// whether B is isolated (its own handback of 100 + 100 = 200 is B's, not A's) or cross.
#[test]
fn f1a_a_bankrupt_isolated_position_pays_no_fee_from_cross_collateral() {
    for b_isolated in [true, false] {
        let mut s = spec();
        s.price_band_ppb = 30 * PCT;
        let insurance = if b_isolated { 0 } else { 1 };
        let mut h = repro(s, true, b_isolated, insurance);
        let events = h.oracle(85);
        assert_eq!(adls(&events), vec![(B, 10, 900)]);
        assert_eq!(
            liquidations(&events),
            vec![(LiquidationStep::Adl, 10, 900, 0, 50)]
        );
        assert_eq!((h.size(A), h.collateral(A)), (0, 900));
        // B bought back at 90 what it sold at 100: +100.
        assert_eq!((h.size(B), h.collateral(B)), (0, 5_100));
        assert_eq!(h.engine.insurance_fund(), insurance);
        h.ok(transfer(A, -900));
        assert_eq!(
            h.reject_reason(transfer(A, -1)),
            RejectReason::InsufficientMargin
        );
    }
}

/// F1b and its control: at 94 A's isolated long (equity 40 < MM 47) sells 10 into B's bid at
/// 95 (limit: the bankruptcy price ceil(900 / 10) = 90): 950, realized -50, hands back 50.
/// Fee 10% of 950 = 95 due, capped at those 50. B's fill (isolated: 94 + gap 10 = 104 moved
/// in, realized +50, hands back 254) does not raise A's cap.
#[test]
fn f1b_an_isolated_book_liquidation_fee_is_capped_at_its_own_handback() {
    for b_isolated in [true, false] {
        let mut s = spec();
        s.price_band_ppb = 30 * PCT;
        s.liquidation_fee_ppb = 10 * PCT;
        let mut h = repro(s, true, b_isolated, 0);
        h.ok(order(B, 2, Buy, 95, 10));
        let events = h.oracle(94);
        assert_eq!(
            liquidations(&events),
            vec![(LiquidationStep::Book, 10, 950, 50, 0)]
        );
        assert_eq!((h.size(A), h.collateral(A)), (0, 900));
        assert_eq!((h.size(B), h.collateral(B)), (0, 5_050));
        assert_eq!(h.engine.insurance_fund(), 50);
        h.ok(transfer(A, -900));
        assert_eq!(
            h.reject_reason(transfer(A, -1)),
            RejectReason::InsufficientMargin
        );
    }
}

/// F2a: a reduce-only fill of an isolated position moves margin like any isolated fill:
/// selling 3 @ 100 (mark 100) moves ceil(300 * 10%) = 30 into the isolated margin, exactly as
/// the same order without reduce-only does.
#[test]
fn f2a_a_reduce_only_isolated_fill_moves_margin_like_any_other() {
    let mut s = spec();
    s.price_band_ppb = 20 * PCT;
    let mut h = repro(s, true, false, 0);
    h.ok(order(B, 2, Buy, 100, 6));
    h.ok(ioc(reduce_only(A, 2, Sell, 100, 3)));
    let view = h.engine.position_view(A, P).unwrap();
    assert_eq!((view.size, view.isolated_margin), (7, 130));
    assert_eq!(h.collateral(A), 870);
    h.ok(transfer(A, -870));
    assert_eq!(
        h.reject_reason(transfer(A, -1)),
        RejectReason::InsufficientMargin
    );
    // Back in (the harness's spot balance holds the 870), then the same sell without
    // reduce-only: the same 30 moves.
    h.ok(transfer(A, 870));
    h.ok(ioc(order(A, 3, Sell, 100, 3)));
    let view = h.engine.position_view(A, P).unwrap();
    assert_eq!((view.size, view.isolated_margin), (4, 160));
    assert_eq!(h.collateral(A), 840);
    assert_eq!(
        h.reject_reason(transfer(A, -841)),
        RejectReason::InsufficientMargin
    );
    h.ok(transfer(A, -1));
}

/// F2b: an isolated long closes reduce-only at the band's edge (80, mark 100) into B's bid.
/// The fill moves 100 (margin at the mark) + 200 (the gap) from cross: 100 + 300 - 200
/// realized = 200 handed back, so A ends with 900 - 300 + 200 = 800 and the fund keeps its
/// 50: it has no position, and only fees, backstops, covers and its PnL move it.
#[test]
fn f2b_a_reduce_only_isolated_close_cannot_drain_the_fund() {
    let mut s = spec();
    s.price_band_ppb = 20 * PCT;
    let mut h = repro(s, true, false, 50);
    h.ok(order(B, 2, Buy, 80, 10));
    h.ok(ioc(reduce_only(A, 2, Sell, 80, 10)));
    assert_eq!((h.size(A), h.collateral(A)), (0, 800));
    assert_eq!((h.size(B), h.collateral(B)), (0, 5_200));
    assert_eq!(h.engine.insurance_fund(), 50);
    assert_eq!(
        h.reject_reason(transfer(A, -900)),
        RejectReason::InsufficientMargin
    );
    h.ok(transfer(A, -1));
    h.ok(transfer(INSURANCE_ACCOUNT, -1));
    assert_eq!(h.engine.insurance_fund(), 49);
}

/// The same close with no cross collateral left to move (issue #17 let it leave `C` at
/// -100; the bankruptcy rule now refuses it): filled at 80 the isolated margin would be
/// 100 - 200 = -100, nothing can move in (free cross 0), and the top-up would take `C` to
/// -100, past bankruptcy: `insufficient_margin`, nothing changes. A close at 90 (loss 100,
/// exactly the margin) is still allowed and ends with `C = 0`.
#[test]
fn a_voluntary_isolated_loss_past_its_margin_is_the_accounts_not_the_funds() {
    let mut s = spec();
    s.price_band_ppb = 20 * PCT;
    let mut h = repro(s, true, false, 50);
    h.ok(transfer(A, -900));
    h.ok(order(B, 2, Buy, 80, 10));
    assert_eq!(
        h.reject_reason(ioc(reduce_only(A, 2, Sell, 80, 10))),
        RejectReason::InsufficientMargin
    );
    assert_eq!((h.size(A), h.collateral(A)), (10, 0));
    h.ok(order(B, 3, Buy, 90, 10));
    h.ok(ioc(reduce_only(A, 3, Sell, 90, 10)));
    assert_eq!((h.size(A), h.collateral(A)), (0, 0));
    assert_eq!(h.engine.insurance_fund(), 50);
}

/// F3: A cross long 10 @ 100 with 100; at 94 (equity 40 < MM 47) chunks of 300 / 94 = 3
/// lots sell into B's bid at 96, fee 10%:
/// - chunk 1: 288, realized 288 - 300 = -12, fee ceil(28.8) = 29 (cap min(C 88, equity 64)):
///   C = 59; equity 59 + 658 - 700 = 17 < MM ceil(32.9) = 33, still > 0;
/// - chunk 2: realized -12: C = 47, equity 47 + 376 - 400 = 23; the fee (29 due) is capped
///   at min(C, equity) = 23 (review finding 4: it no longer makes bad debt): C = 24,
///   equity 0: the book step stops;
/// - backstop: 4 lots at the mark, 4 * 94 = 376 (no bad debt), realized 376 - 400 = -24:
///   C = 0. The fund: 10_000 + 29 + 23 = 10_052, long 4 at 376.
#[test]
fn f3_the_book_step_stops_once_a_chunk_takes_equity_to_zero() {
    let mut s = spec();
    s.price_band_ppb = 20 * PCT;
    s.liquidation_chunk_notional = 300;
    s.liquidation_fee_ppb = 10 * PCT;
    let mut h = Harness::new(s, &[(A, 100), (B, 5_000)]);
    h.ok(Command::Deposit {
        account: INSURANCE_ACCOUNT,
        asset: USD,
        amount: 10_000,
    });
    h.ok(transfer(INSURANCE_ACCOUNT, 10_000));
    h.oracle(100);
    h.ok(order(B, 1, Sell, 100, 10));
    h.ok(ioc(order(A, 1, Buy, 100, 10)));
    h.ok(order(B, 2, Buy, 96, 10));
    let events = h.oracle(94);
    assert_eq!(
        liquidations(&events),
        vec![
            (LiquidationStep::Book, 3, 288, 29, 0),
            (LiquidationStep::Book, 3, 288, 23, 0),
            (LiquidationStep::Backstop, 4, 376, 0, 0),
        ]
    );
    assert_eq!((h.size(A), h.collateral(A)), (0, 0));
    assert_eq!(h.engine.insurance_fund(), 10_052);
    let fund = h.engine.position_view(INSURANCE_ACCOUNT, P).unwrap();
    assert_eq!((fund.size, fund.open_notional), (4, 376));
    // B: short 10 @ 100, bought back 6 @ 96: +24; 4 lots of its bid still rest.
    let b = h.engine.position_view(B, P).unwrap();
    assert_eq!(
        (b.size, b.open_notional, h.collateral(B)),
        (-4, -400, 5_024)
    );
    assert_eq!(h.engine.perp_collateral(B).unwrap().1, 40);
}

// ---- the bankruptcy rule: review streams of issue #17's fix --------------------------------

/// The review's header: band 20%, one tier (IMR 10%, MMR 5%: `spec()`'s first row covers
/// every notional here), no fees unless a test sets them.
fn review_spec() -> PerpSpec {
    let mut s = spec();
    s.price_band_ppb = 20 * PCT;
    s
}

/// E1: A (100, isolated 10x) buys 10 @ 100 from B: margin 100 moves in, C = 0. B bids 80;
/// A's reduce-only IOC sell of 10 @ 80 would realize -200: margin 100 - 200 = -100, nothing
/// can move in (free cross 0), the top-up would leave C = -100: past bankruptcy, refused
/// `insufficient_margin` (needed 100 of collateral, has 0). B cannot take out more than it
/// put in (free 1000 - IM 100 - its bid's reserve 80 = 820 < 1200).
///
/// A reduce-only *market* sell (limit: the band's edge, 80) is not refused up front but cut
/// at fill time: q lots at 80 leave margin 100 - 20q >= 0 for q <= 5, so 5 fill and the
/// rest is canceled (`price_band`). A: long 5, margin 0, C 0; B: short 5, realized
/// 500 - 400 = +100, C = 1100: together exactly the 1100 they put in.
#[test]
fn e1_an_isolated_reduce_only_close_past_bankruptcy_is_refused_or_cut() {
    let mut h = Harness::new(review_spec(), &[(A, 100), (B, 1_000)]);
    h.ok(Command::SetLeverage {
        account: A,
        market: P,
        leverage: 10,
        isolated: true,
    });
    h.oracle(100);
    h.ok(order(B, 1, Sell, 100, 10));
    h.ok(ioc(order(A, 1, Buy, 100, 10)));
    assert_eq!(h.collateral(A), 0);
    assert_eq!(h.engine.position_view(A, P).unwrap().isolated_margin, 100);
    h.ok(order(B, 2, Buy, 80, 10));
    assert_eq!(
        h.reject_reason(ioc(reduce_only(A, 2, Sell, 80, 10))),
        RejectReason::InsufficientMargin
    );
    assert_eq!(
        h.engine.last_shortfall(),
        Some(Shortfall {
            asset: USD,
            needed: 100,
            available: 0
        })
    );
    assert_eq!(
        h.reject_reason(transfer(B, -1_200)),
        RejectReason::InsufficientMargin
    );
    let market_sell = match reduce_only(A, 3, Sell, 1, 10) {
        Command::Place(mut o) => {
            o.price = None;
            o.tif = TimeInForce::Ioc;
            Command::Place(o)
        }
        _ => unreachable!(),
    };
    let events = h.ok(market_sell);
    assert!(events.contains(&Event::Canceled {
        market: P,
        account: A,
        oid: 3,
        remaining: 5,
        reason: CancelReason::PriceBand
    }));
    let a = h.engine.position_view(A, P).unwrap();
    assert_eq!((a.size, a.isolated_margin, h.collateral(A)), (5, 0, 0));
    assert_eq!((h.size(B), h.collateral(B)), (-5, 1_100));
}

/// E1, cross: A (cross, 100) long 10 @ 100; the reduce-only sell of 10 @ 80 would leave
/// C = 100 - 200 = -100 (equity -100): refused. A close at 90 (C = 0) is allowed.
#[test]
fn e1_cross_a_reduce_only_close_past_bankruptcy_is_refused() {
    let mut h = Harness::new(review_spec(), &[(A, 100), (B, 1_000)]);
    h.oracle(100);
    h.ok(order(B, 1, Sell, 100, 10));
    h.ok(ioc(order(A, 1, Buy, 100, 10)));
    h.ok(order(B, 2, Buy, 80, 10));
    assert_eq!(
        h.reject_reason(ioc(reduce_only(A, 2, Sell, 80, 10))),
        RejectReason::InsufficientMargin
    );
    h.ok(order(B, 3, Buy, 90, 10));
    h.ok(ioc(reduce_only(A, 3, Sell, 90, 10)));
    assert_eq!((h.size(A), h.collateral(A)), (0, 0));
}

/// E2b: the fund holds 1000; A (cross, 100) long 10 @ 100; A's reduce-only sell of 9 @ 80
/// would leave C = 100 - 180 = -80: refused, so the next oracle at 100 finds A healthy
/// (equity 100 >= MM 50) and the fund pays nothing (issue #17's fix let C go to -80, and the
/// backstop then took 1 lot at 100 + 80 with bad debt 80).
#[test]
fn e2b_no_voluntary_debt_reaches_the_insurance_fund() {
    let mut h = Harness::new(review_spec(), &[(A, 100), (B, 1_000)]);
    h.ok(Command::Deposit {
        account: INSURANCE_ACCOUNT,
        asset: USD,
        amount: 1_000,
    });
    h.ok(transfer(INSURANCE_ACCOUNT, 1_000));
    h.oracle(100);
    h.ok(order(B, 1, Sell, 100, 10));
    h.ok(ioc(order(A, 1, Buy, 100, 10)));
    h.ok(order(B, 2, Buy, 80, 9));
    assert_eq!(
        h.reject_reason(ioc(reduce_only(A, 2, Sell, 80, 9))),
        RejectReason::InsufficientMargin
    );
    let events = h.oracle(100);
    assert_eq!(liquidations(&events), vec![]);
    assert_eq!(h.engine.insurance_fund(), 1_000);
    assert_eq!((h.size(A), h.collateral(A)), (10, 100));
}

/// E3 (cross) and E5 (isolated): taker fee 1%, liquidation fee 1%. A (110) buys 10 @ 100,
/// fee 10: C = 100 (isolated: the margin 100 moves in, C = 0). B bids 10 @ 90. At 94:
/// equity 100 - 60 = 40 < MM 47. The book limit includes the taker fee:
/// `ceil((940 - 40) * 10^4 / (10 * (10^4 - 100))) = ceil(90.9) = 91`, so B's bid at 90
/// (which would leave 40 - 100 + 60 - 9 = -9) is not hit. The rest closes at the mark:
/// X = 940 (no bad debt), the fund (0) cannot take it, B is deleveraged: 10 lots at 940
/// (B: +60). A realizes -60: 40 left (isolated: handed back to C); the liquidation fee
/// ceil(9.4) = 10 is taken from it: C = 30, flat (before: C = -9).
#[test]
fn e3_e5_a_liquidation_order_keeps_its_taker_fee_inside_the_bankruptcy_price() {
    for isolated in [false, true] {
        let mut s = review_spec();
        s.taker_fee_bps = 100;
        let mut h = Harness::new(s, &[(A, 110), (B, 2_000)]);
        if isolated {
            h.ok(Command::SetLeverage {
                account: A,
                market: P,
                leverage: 10,
                isolated: true,
            });
        }
        h.oracle(100);
        h.ok(order(B, 1, Sell, 100, 10));
        h.ok(ioc(order(A, 1, Buy, 100, 10)));
        assert_eq!(h.collateral(A), if isolated { 0 } else { 100 });
        h.ok(order(B, 2, Buy, 90, 10));
        let events = h.oracle(94);
        assert_eq!(
            liquidations(&events),
            vec![(LiquidationStep::Adl, 10, 940, 10, 0)],
            "isolated {isolated}"
        );
        assert!(!events.iter().any(|e| matches!(e, Event::Fill { .. })));
        assert_eq!((h.size(A), h.collateral(A)), (0, 30));
        assert_eq!((h.size(B), h.collateral(B)), (0, 2_060));
        assert_eq!(h.engine.insurance_fund(), 10);
    }
}

/// E4: liquidation fee 2%, chunks of 455. A (100) long 10 @ 100; C bids 5 @ 90. At 91:
/// equity 10 < MM 46; a chunk of 455 / 91 = 5 lots, limit ceil(900 / 10) = 90, sells 5 @ 90:
/// realized 450 - 500 = -50, C = 50, equity 50 + 455 - 500 = 5. The fee due, ceil(9) = 9, is
/// capped at min(C, equity) = 5 (before: 9, taking equity to -4 and making bad debt that
/// ADL counterparties paid): C = 45, equity 0, no further chunk. The rest closes at the mark,
/// X = 455, no bad debt; the fund (5) cannot carry MM 23, so B is deleveraged 5 @ 455
/// (B: 500 - 455 = +45). A: C = 45 - 45 = 0, no fee left.
#[test]
fn e4_the_book_step_fee_never_makes_bad_debt() {
    let mut s = review_spec();
    s.liquidation_fee_ppb = 2 * PCT;
    s.liquidation_chunk_notional = 455;
    let mut h = Harness::new(s, &[(A, 100), (B, 2_000), (C, 2_000)]);
    h.oracle(100);
    h.ok(order(B, 1, Sell, 100, 10));
    h.ok(ioc(order(A, 1, Buy, 100, 10)));
    h.ok(order(C, 1, Buy, 90, 5));
    let events = h.oracle(91);
    assert_eq!(
        liquidations(&events),
        vec![
            (LiquidationStep::Book, 5, 450, 5, 0),
            (LiquidationStep::Adl, 5, 455, 0, 0),
        ]
    );
    assert_eq!((h.size(A), h.collateral(A)), (0, 0));
    assert_eq!(h.engine.insurance_fund(), 5);
    assert_eq!((h.size(B), h.collateral(B)), (-5, 2_045));
    assert_eq!((h.size(C), h.collateral(C)), (5, 2_000));
}

/// A resting maker whose fill would take its bucket past bankruptcy is canceled at fill
/// time (`price_band`), and the FOK dry run sees the same. A (100, no position) bids 10 @ 100
/// at mark 100 (reserve 100, free 0). The oracle falls to 85: the bid is inside the new band
/// [68, 102] and stays. Filled at 100 with the mark at 85, A would start at equity
/// 100 - 150 = -50: a FOK sell of 10 @ 85 finds nothing it could fill (rejected, A's bid
/// untouched); an IOC sell cancels A's bid (`price_band`) and goes on to C's bid at 85.
#[test]
fn a_maker_past_its_bankruptcy_price_is_canceled_not_filled() {
    let mut h = Harness::new(review_spec(), &[(A, 100), (B, 1_000), (C, 1_000)]);
    h.oracle(100);
    h.ok(order(A, 1, Buy, 100, 10));
    h.oracle(85);
    assert_eq!(h.engine.perp_collateral(A), Some((100, 100)));
    let mut fok = order(B, 1, Sell, 85, 10);
    if let Command::Place(o) = &mut fok {
        o.tif = TimeInForce::Fok;
    }
    assert_eq!(h.reject_reason(fok), RejectReason::FokUnfilled);
    h.ok(order(C, 1, Buy, 85, 10));
    let events = h.ok(ioc(order(B, 2, Sell, 85, 10)));
    assert_eq!(
        events[1],
        Event::Canceled {
            market: P,
            account: A,
            oid: 1,
            remaining: 10,
            reason: CancelReason::PriceBand
        }
    );
    assert_eq!(h.engine.perp_collateral(A), Some((100, 0)));
    assert_eq!((h.size(A), h.size(B), h.size(C)), (0, -10, 10));
}
