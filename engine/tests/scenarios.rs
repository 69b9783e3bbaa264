//! Small hand-checked scenarios of the engine alone. Every expected event and balance below is
//! worked out by hand from `docs/engine.md`, with the arithmetic in the comments.
//!
//! The main market (1) has `BU = 10`, `QU = 100`, maker -10 bps (rebate), taker 25 bps, so
//! `N(p, q) = 100 p q` and a buy reserves `unit_cost(L) = 100 L + ceil(100 L * 25 / 10_000)
//! = 100 L + ceil(L / 4)` per lot.

use engine::{
    AccountId, AssetId, Balance, CancelReason, Command, Engine, EngineConfig, Event, Lots,
    MarketId, MarketSpec, NewOrder, OrderId, OrderView, RejectReason, SelfTradePrevention,
    Shortfall, Side, Ticks, TimeInForce, Units,
};

const BASE: AssetId = 1;
const QUOTE: AssetId = 2;
const M: MarketId = 1;
/// Second market: `BU = 1`, `QU = 1`, `min_lots = 2`, maker +3 bps, taker +7 bps.
const M2: MarketId = 2;

/// Seller: 1000 base.
const A: AccountId = 1;
/// Buyer: 100_000 quote.
const B: AccountId = 2;
/// Both: 1000 base and 100_000 quote.
const C: AccountId = 3;

use SelfTradePrevention::{CancelBoth, CancelMaker, CancelTaker};
use Side::{Buy, Sell};
use TimeInForce::{Alo, Fok, Gtc, Ioc};

fn spec_m() -> MarketSpec {
    MarketSpec {
        market: M,
        base: BASE,
        quote: QUOTE,
        base_units_per_lot: 10,
        quote_units_per_tick_lot: 100,
        min_lots: 1,
        max_price_ticks: 1000,
        maker_fee_bps: -10,
        taker_fee_bps: 25,
    }
}

fn spec_m2() -> MarketSpec {
    MarketSpec {
        market: M2,
        base: BASE,
        quote: QUOTE,
        base_units_per_lot: 1,
        quote_units_per_tick_lot: 1,
        min_lots: 2,
        max_price_ticks: 1_000_000,
        maker_fee_bps: 3,
        taker_fee_bps: 7,
    }
}

fn deposit(account: AccountId, asset: AssetId, amount: Units) -> Command {
    Command::Deposit {
        account,
        asset,
        amount,
    }
}

fn setup_with(config: EngineConfig) -> Engine {
    let mut engine: Engine = Engine::new(config);
    let mut events = Vec::new();
    for command in [
        Command::CreateAsset { asset: BASE },
        Command::CreateAsset { asset: QUOTE },
        Command::CreateMarket(spec_m()),
        Command::CreateMarket(spec_m2()),
        deposit(A, BASE, 1000),
        deposit(B, QUOTE, 100_000),
        deposit(C, BASE, 1000),
        deposit(C, QUOTE, 100_000),
    ] {
        engine.step(&command, &mut events);
    }
    assert_eq!(events, vec![], "setup is silent");
    engine
}

fn setup() -> Engine {
    setup_with(EngineConfig::default())
}

fn step(engine: &mut Engine, command: Command) -> Vec<Event> {
    let mut events = Vec::new();
    engine.step(&command, &mut events);
    engine
        .check_invariants()
        .unwrap_or_else(|why| panic!("invariants after {command:?}: {why}"));
    events
}

#[allow(clippy::too_many_arguments)]
fn order(
    account: AccountId,
    market: MarketId,
    oid: OrderId,
    side: Side,
    price: Option<Ticks>,
    qty: Lots,
    tif: TimeInForce,
    stp: SelfTradePrevention,
) -> Command {
    Command::Place(NewOrder {
        account,
        market,
        oid,
        side,
        price,
        qty,
        tif,
        stp,
        reduce_only: false,
    })
}

/// A limit order in market 1 with the default STP mode.
fn limit(
    account: AccountId,
    oid: OrderId,
    side: Side,
    price: Ticks,
    qty: Lots,
    tif: TimeInForce,
) -> Command {
    order(account, M, oid, side, Some(price), qty, tif, CancelMaker)
}

fn market_order(account: AccountId, oid: OrderId, side: Side, qty: Lots) -> Command {
    order(account, M, oid, side, None, qty, Ioc, CancelMaker)
}

fn modify(account: AccountId, oid: OrderId, price: Ticks, qty: Lots) -> Command {
    Command::Modify {
        account,
        market: M,
        oid,
        price,
        qty,
    }
}

/// Places a resting order and checks it was simply accepted.
fn rest(engine: &mut Engine, command: Command) {
    let events = step(engine, command.clone());
    let Command::Place(o) = command else {
        panic!("not a place")
    };
    assert_eq!(
        events,
        vec![Event::Accepted {
            market: o.market,
            account: o.account,
            oid: o.oid
        }],
        "{command:?}"
    );
}

/// The same event in market `market` (the helpers below say market `M`).
fn in_market(market: MarketId, mut event: Event) -> Event {
    match &mut event {
        Event::Accepted { market: m, .. }
        | Event::Canceled { market: m, .. }
        | Event::Modified { market: m, .. }
        | Event::Fill { market: m, .. } => *m = market,
        _ => {}
    }
    event
}

/// `Accepted` in market `M`.
fn accepted(account: AccountId, oid: OrderId) -> Event {
    Event::Accepted {
        market: M,
        account,
        oid,
    }
}

fn canceled(account: AccountId, oid: OrderId, remaining: Lots, reason: CancelReason) -> Event {
    Event::Canceled {
        market: M,
        account,
        oid,
        remaining,
        reason,
    }
}

fn modified(account: AccountId, oid: OrderId, price: Ticks, qty: Lots) -> Event {
    Event::Modified {
        market: M,
        account,
        oid,
        price,
        qty,
    }
}

#[allow(clippy::too_many_arguments)]
/// A fill in market `M`; `taker` and `maker` are (account, order id, lots left after it).
fn fill(
    taker: (AccountId, OrderId, Lots),
    maker: (AccountId, OrderId, Lots),
    taker_side: Side,
    price: Ticks,
    qty: Lots,
    taker_fee: Units,
    maker_fee: Units,
) -> Event {
    Event::Fill {
        market: M,
        taker_account: taker.0,
        taker_oid: taker.1,
        maker_account: maker.0,
        maker_oid: maker.1,
        taker_side,
        price,
        qty,
        taker_fee,
        maker_fee,
        taker_left: taker.2,
        maker_left: maker.2,
    }
}

fn bal(total: Units, locked: Units) -> Option<Balance> {
    Some(Balance { total, locked })
}

fn view(
    account: AccountId,
    oid: OrderId,
    side: Side,
    price: Ticks,
    remaining: Lots,
    stp: SelfTradePrevention,
    post_only: bool,
) -> OrderView {
    OrderView {
        account,
        oid,
        side,
        price,
        remaining,
        stp,
        post_only,
        reduce_only: false,
    }
}

/// Who's resting on a side, as (account, oid, remaining), best first.
fn book(engine: &Engine, market: MarketId, side: Side) -> Vec<(AccountId, OrderId, Lots)> {
    engine
        .book_orders(market, side)
        .iter()
        .map(|o| (o.account, o.oid, o.remaining))
        .collect()
}

/// Sum of totals + fee pool = supply, for both assets.
fn assert_conserved(engine: &Engine) {
    for asset in [BASE, QUOTE] {
        let totals: i128 = engine
            .accounts()
            .map(|a| engine.balance(a, asset).unwrap().total as i128)
            .sum();
        assert_eq!(
            totals + engine.fee_pool(asset).unwrap() as i128,
            engine.supply(asset).unwrap() as i128,
            "asset {asset}"
        );
    }
}

#[test]
fn price_time_priority_partial_fills_and_rebate_rounding() {
    let mut e = setup();
    rest(&mut e, limit(A, 1, Sell, 100, 2, Gtc));
    rest(&mut e, limit(C, 2, Sell, 100, 3, Gtc));
    rest(&mut e, limit(A, 3, Sell, 99, 1, Gtc));
    let mut depth = Vec::new();
    assert!(e.depth(M, Sell, 10, &mut depth));
    assert_eq!(depth, vec![(99, 1), (100, 5)]);

    // Best price first (99), then oldest first at 100 (A's 1 before C's 2); C's 2 fills
    // partially. Fill at 99: N = 9_900, taker fee ceil(24.75) = 25, rebate floor(9.9) = 9.
    // Fills at 100 x 2: N = 20_000, taker fee 50, rebate 20.
    let events = step(&mut e, limit(B, 10, Buy, 100, 5, Gtc));
    assert_eq!(
        events,
        vec![
            accepted(B, 10),
            fill((B, 10, 4), (A, 3, 0), Buy, 99, 1, 25, -9),
            fill((B, 10, 2), (A, 1, 0), Buy, 100, 2, 50, -20),
            fill((B, 10, 0), (C, 2, 1), Buy, 100, 2, 50, -20),
        ]
    );
    // B pays N + fee: 9_925 + 20_050 + 20_050 = 50_025; nothing rests so nothing stays locked.
    assert_eq!(e.balance(B, QUOTE), bal(49_975, 0));
    assert_eq!(e.balance(B, BASE), bal(50, 0));
    // Sellers receive N + rebate.
    assert_eq!(e.balance(A, QUOTE), bal(9_909 + 20_020, 0));
    assert_eq!(e.balance(A, BASE), bal(970, 0));
    assert_eq!(e.balance(C, QUOTE), bal(120_020, 0));
    assert_eq!(e.balance(C, BASE), bal(980, 10));
    // Pool: (25 - 9) + (50 - 20) + (50 - 20).
    assert_eq!(e.fee_pool(QUOTE), Some(76));
    assert_eq!(e.fee_pool(BASE), Some(0));
    assert_eq!(book(&e, M, Sell), vec![(C, 2, 1)]);
    assert_conserved(&e);

    // The remainder of a GTC buy rests, reserving unit_cost(100) = 10_025 per lot.
    let events = step(&mut e, limit(B, 11, Buy, 100, 3, Gtc));
    assert_eq!(
        events,
        vec![
            accepted(B, 11),
            fill((B, 11, 2), (C, 2, 0), Buy, 100, 1, 25, -10)
        ]
    );
    assert_eq!(e.balance(B, QUOTE), bal(49_975 - 10_025, 2 * 10_025));
    assert_eq!(
        e.book_orders(M, Buy),
        vec![view(B, 11, Buy, 100, 2, CancelMaker, false)]
    );
    assert_eq!(e.resting_orders(), 1);
    assert_conserved(&e);
}

#[test]
fn positive_fees_round_up_and_reserves_use_the_larger_rate() {
    let mut e = setup();
    // Market 2: N = p * q. unit_cost(1300) = 1300 + ceil(1300 * 7 / 10_000) = 1301.
    rest(
        &mut e,
        order(A, M2, 1, Sell, Some(1234), 5, Gtc, CancelMaker),
    );
    assert_eq!(e.balance(A, BASE), bal(1000, 5));
    let events = step(
        &mut e,
        order(B, M2, 2, Buy, Some(1300), 8, Gtc, CancelMaker),
    );
    // N = 6_170: taker fee ceil(4.319) = 5, maker fee ceil(1.851) = 2; trade at the maker's price.
    assert_eq!(
        events,
        vec![
            Event::Accepted {
                market: M2,
                account: B,
                oid: 2
            },
            Event::Fill {
                market: M2,
                taker_account: B,
                taker_oid: 2,
                maker_account: A,
                maker_oid: 1,
                taker_side: Buy,
                price: 1234,
                qty: 5,
                taker_fee: 5,
                maker_fee: 2,
                taker_left: 3,
                maker_left: 0,
            },
        ]
    );
    assert_eq!(e.balance(B, QUOTE), bal(100_000 - 6_175, 3 * 1301));
    assert_eq!(e.balance(B, BASE), bal(5, 0));
    assert_eq!(e.balance(A, QUOTE), bal(6_168, 0));
    assert_eq!(e.balance(A, BASE), bal(995, 0));
    assert_eq!(e.fee_pool(QUOTE), Some(7));
    assert_conserved(&e);

    // A market whose maker fee (50) exceeds its taker fee (10): the reserve uses 50 bps.
    // unit_cost(1000) = 1000 + ceil(1000 * 50 / 10_000) = 1005 (at 10 bps it would be 1001).
    let mut events = Vec::new();
    e.step(
        &Command::CreateMarket(MarketSpec {
            market: 3,
            maker_fee_bps: 50,
            taker_fee_bps: 10,
            min_lots: 1,
            ..spec_m2()
        }),
        &mut events,
    );
    assert_eq!(events, vec![]);
    rest(&mut e, order(C, 3, 1, Buy, Some(1000), 2, Gtc, CancelMaker));
    assert_eq!(e.balance(C, QUOTE), bal(100_000, 2010));
}

#[test]
fn stp_cancel_maker_cancels_own_maker_and_keeps_matching() {
    let mut e = setup();
    rest(&mut e, limit(C, 1, Sell, 100, 2, Gtc));
    rest(&mut e, limit(A, 2, Sell, 100, 2, Gtc));
    let events = step(&mut e, order(C, M, 3, Buy, Some(100), 3, Gtc, CancelMaker));
    assert_eq!(
        events,
        vec![
            accepted(C, 3),
            canceled(C, 1, 2, CancelReason::Stp),
            fill((C, 3, 1), (A, 2, 0), Buy, 100, 2, 50, -20),
        ]
    );
    assert_eq!(
        e.book_orders(M, Buy),
        vec![view(C, 3, Buy, 100, 1, CancelMaker, false)]
    );
    assert_eq!(book(&e, M, Sell), vec![]);
    assert_eq!(e.balance(C, BASE), bal(1020, 0));
    assert_eq!(e.balance(C, QUOTE), bal(100_000 - 20_050, 10_025));
    assert_conserved(&e);
}

#[test]
fn stp_cancel_taker_stops_at_own_maker() {
    let mut e = setup();
    rest(&mut e, limit(C, 1, Sell, 100, 2, Gtc));
    rest(&mut e, limit(A, 2, Sell, 100, 2, Gtc));
    let events = step(&mut e, order(C, M, 3, Buy, Some(100), 3, Gtc, CancelTaker));
    assert_eq!(
        events,
        vec![accepted(C, 3), canceled(C, 3, 3, CancelReason::Stp)]
    );
    assert_eq!(book(&e, M, Sell), vec![(C, 1, 2), (A, 2, 2)]);
    assert_eq!(book(&e, M, Buy), vec![]);
    assert_eq!(e.balance(C, QUOTE), bal(100_000, 0));
    assert_eq!(e.balance(C, BASE), bal(1000, 20));
}

#[test]
fn stp_cancel_both_after_a_fill() {
    let mut e = setup();
    rest(&mut e, limit(A, 1, Sell, 99, 1, Gtc));
    rest(&mut e, limit(C, 2, Sell, 100, 2, Gtc));
    rest(&mut e, limit(A, 3, Sell, 100, 1, Gtc));
    let events = step(&mut e, order(C, M, 4, Buy, Some(100), 5, Ioc, CancelBoth));
    assert_eq!(
        events,
        vec![
            accepted(C, 4),
            fill((C, 4, 4), (A, 1, 0), Buy, 99, 1, 25, -9),
            canceled(C, 2, 2, CancelReason::Stp),
            canceled(C, 4, 4, CancelReason::Stp),
        ]
    );
    assert_eq!(book(&e, M, Sell), vec![(A, 3, 1)]);
    assert_eq!(e.balance(C, QUOTE), bal(100_000 - 9_925, 0));
    assert_eq!(e.balance(C, BASE), bal(1010, 0));
    assert_conserved(&e);
}

#[test]
fn fok_rejection_leaves_everything_untouched() {
    let mut e = setup();
    rest(&mut e, limit(A, 1, Sell, 100, 2, Gtc));
    rest(&mut e, limit(C, 2, Sell, 100, 2, Gtc));
    rest(&mut e, limit(A, 3, Sell, 101, 5, Gtc));
    let root = e.state_hash();
    let balances: Vec<_> = [A, B, C]
        .iter()
        .flat_map(|&a| [e.balance(a, BASE), e.balance(a, QUOTE)])
        .collect();
    // 4 lots rest within 100, but C's own 2 would be canceled (cancel_maker) or end the walk
    // (cancel_taker): only A's 2 count.
    for stp in [CancelMaker, CancelTaker, CancelBoth] {
        let events = step(&mut e, order(C, M, 9, Buy, Some(100), 3, Fok, stp));
        assert_eq!(
            events,
            vec![Event::Rejected {
                account: C,
                oid: Some(9),
                reason: RejectReason::FokUnfilled
            }]
        );
    }
    // B: 4 lots within 100 and none of them B's, 5 would need the 101 level.
    let events = step(&mut e, limit(B, 9, Buy, 100, 5, Fok));
    assert!(matches!(
        events[..],
        [Event::Rejected {
            reason: RejectReason::FokUnfilled,
            ..
        }]
    ));
    assert_eq!(e.state_hash(), root);
    assert_eq!(book(&e, M, Sell), vec![(A, 1, 2), (C, 2, 2), (A, 3, 5)]);
    let after: Vec<_> = [A, B, C]
        .iter()
        .flat_map(|&a| [e.balance(a, BASE), e.balance(a, QUOTE)])
        .collect();
    assert_eq!(after, balances);

    // 2 lots are enough: C fills against A's order and its own order is never reached.
    let events = step(&mut e, order(C, M, 9, Buy, Some(100), 2, Fok, CancelTaker));
    assert_eq!(
        events,
        vec![
            accepted(C, 9),
            fill((C, 9, 0), (A, 1, 0), Buy, 100, 2, 50, -20)
        ]
    );
    assert_eq!(book(&e, M, Sell), vec![(C, 2, 2), (A, 3, 5)]);

    // Own maker first under cancel_maker: skipped by the dry run, canceled by the match.
    let events = step(&mut e, order(C, M, 10, Buy, Some(101), 3, Fok, CancelMaker));
    assert_eq!(
        events,
        vec![
            accepted(C, 10),
            canceled(C, 2, 2, CancelReason::Stp),
            // N = 30_300: taker fee ceil(75.75) = 76, rebate floor(30.3) = 30.
            fill((C, 10, 0), (A, 3, 2), Buy, 101, 3, 76, -30),
        ]
    );
    assert_eq!(book(&e, M, Sell), vec![(A, 3, 2)]);
    assert_conserved(&e);
}

#[test]
fn post_only_rejects_crossing_and_rests_otherwise() {
    let mut e = setup();
    rest(&mut e, limit(A, 1, Sell, 100, 2, Gtc));
    let reject = |account, oid, reason| {
        vec![Event::Rejected {
            account,
            oid: Some(oid),
            reason,
        }]
    };
    assert_eq!(
        step(&mut e, limit(B, 2, Buy, 100, 1, Alo)),
        reject(B, 2, RejectReason::PostOnlyWouldCross)
    );
    assert_eq!(
        step(&mut e, limit(B, 2, Buy, 99, 1, Alo)),
        vec![accepted(B, 2)]
    );
    assert_eq!(
        e.book_orders(M, Buy),
        vec![view(B, 2, Buy, 99, 1, CancelMaker, true)]
    );
    assert_eq!(
        step(&mut e, limit(A, 3, Sell, 99, 1, Alo)),
        reject(A, 3, RejectReason::PostOnlyWouldCross)
    );
    assert_eq!(
        step(&mut e, limit(A, 3, Sell, 101, 1, Alo)),
        vec![accepted(A, 3)]
    );
    // A modify that would cross is rejected for a post-only order; a non-crossing one is fine
    // and the order stays post-only.
    assert_eq!(
        step(&mut e, modify(B, 2, 100, 1)),
        reject(B, 2, RejectReason::PostOnlyWouldCross)
    );
    assert_eq!(
        step(&mut e, modify(B, 2, 98, 2)),
        vec![modified(B, 2, 98, 2)]
    );
    assert_eq!(
        e.book_orders(M, Buy),
        vec![view(B, 2, Buy, 98, 2, CancelMaker, true)]
    );
    assert_eq!(e.balance(B, QUOTE), bal(100_000, 2 * (9_800 + 25)));
}

#[test]
fn modify_down_in_place_keeps_priority() {
    let mut e = setup();
    rest(&mut e, limit(A, 1, Sell, 100, 3, Gtc));
    rest(&mut e, limit(C, 2, Sell, 100, 3, Gtc));
    assert_eq!(
        step(&mut e, modify(A, 1, 100, 2)),
        vec![modified(A, 1, 100, 2)]
    );
    assert_eq!(e.balance(A, BASE), bal(1000, 20));
    // Same size: accepted as is.
    assert_eq!(
        step(&mut e, modify(A, 1, 100, 2)),
        vec![modified(A, 1, 100, 2)]
    );
    assert_eq!(book(&e, M, Sell), vec![(A, 1, 2), (C, 2, 3)]);
    let events = step(&mut e, limit(B, 10, Buy, 100, 2, Ioc));
    assert_eq!(
        events,
        vec![
            accepted(B, 10),
            fill((B, 10, 0), (A, 1, 0), Buy, 100, 2, 50, -20)
        ]
    );
}

#[test]
fn modify_up_or_reprice_loses_priority() {
    let mut e = setup();
    rest(&mut e, limit(A, 1, Sell, 100, 3, Gtc));
    rest(&mut e, limit(C, 2, Sell, 100, 3, Gtc));
    assert_eq!(
        step(&mut e, modify(A, 1, 100, 4)),
        vec![modified(A, 1, 100, 4)]
    );
    assert_eq!(book(&e, M, Sell), vec![(C, 2, 3), (A, 1, 4)]);
    assert_eq!(e.balance(A, BASE), bal(1000, 40));
    // Away and back: back of the level again.
    assert_eq!(
        step(&mut e, modify(C, 2, 101, 3)),
        vec![modified(C, 2, 101, 3)]
    );
    assert_eq!(book(&e, M, Sell), vec![(A, 1, 4), (C, 2, 3)]);
    assert_eq!(
        step(&mut e, modify(C, 2, 100, 3)),
        vec![modified(C, 2, 100, 3)]
    );
    assert_eq!(book(&e, M, Sell), vec![(A, 1, 4), (C, 2, 3)]);
    let mut depth = Vec::new();
    assert!(e.depth(M, Sell, 10, &mut depth));
    assert_eq!(depth, vec![(100, 7)]);
    assert_eq!(
        step(&mut e, modify(A, 1, 100, 5)),
        vec![modified(A, 1, 100, 5)]
    );
    let events = step(&mut e, limit(B, 10, Buy, 100, 2, Ioc));
    assert_eq!(
        events,
        vec![
            accepted(B, 10),
            fill((B, 10, 0), (C, 2, 1), Buy, 100, 2, 50, -20)
        ]
    );
}

/// A re-entry that does not cross moves the order straight from one level to the back of
/// another (the engine's one-step path): every place in a level it can leave from (middle,
/// only order of the best level, head of its own level), the reserve at the new price, and
/// a refusal that changes nothing.
#[test]
fn reprice_moves_the_order_and_its_reserve_between_levels() {
    let mut e = setup();
    // unit_cost(100) = 10_000 + 25 = 10_025; unit_cost(101) = 10_100 + 26 = 10_126;
    // unit_cost(99) = 9_900 + 25 = 9_925.
    rest(&mut e, limit(B, 1, Buy, 100, 2, Gtc));
    rest(&mut e, limit(B, 2, Buy, 100, 1, Gtc));
    rest(&mut e, limit(C, 3, Buy, 100, 1, Gtc));
    // The middle order becomes the new best level alone.
    assert_eq!(
        step(&mut e, modify(B, 2, 101, 3)),
        vec![modified(B, 2, 101, 3)]
    );
    assert_eq!(book(&e, M, Buy), vec![(B, 2, 3), (B, 1, 2), (C, 3, 1)]);
    assert_eq!(e.balance(B, QUOTE), bal(100_000, 2 * 10_025 + 3 * 10_126));
    // The only order of the best level goes behind the others: that level is gone.
    assert_eq!(
        step(&mut e, modify(B, 2, 99, 1)),
        vec![modified(B, 2, 99, 1)]
    );
    assert_eq!(book(&e, M, Buy), vec![(B, 1, 2), (C, 3, 1), (B, 2, 1)]);
    let mut depth = Vec::new();
    assert!(e.depth(M, Buy, 10, &mut depth));
    assert_eq!(depth, vec![(100, 3), (99, 1)]);
    assert_eq!(e.balance(B, QUOTE), bal(100_000, 2 * 10_025 + 9_925));
    // The head of a level adds lots: back of its own level, a new entry.
    assert_eq!(
        step(&mut e, modify(B, 1, 100, 4)),
        vec![modified(B, 1, 100, 4)]
    );
    assert_eq!(book(&e, M, Buy), vec![(C, 3, 1), (B, 1, 4), (B, 2, 1)]);
    let oids: Vec<OrderId> = e.account_orders(B, None).iter().map(|o| o.oid).collect();
    assert_eq!(oids, vec![2, 1], "entry order: 2 re-entered before 1");
    assert_eq!(e.balance(B, QUOTE), bal(100_000, 4 * 10_025 + 9_925));
    // 10 lots at 99 need 99_250 against 100_000 - 50_025 + 9_925 = 59_900: refused, no change.
    assert_eq!(
        step(&mut e, modify(B, 2, 99, 10)),
        vec![Event::Rejected {
            account: B,
            oid: Some(2),
            reason: RejectReason::InsufficientBalance
        }]
    );
    assert_eq!(
        e.last_shortfall(),
        Some(Shortfall {
            asset: QUOTE,
            needed: 99_250,
            available: 59_900
        })
    );
    assert_eq!(book(&e, M, Buy), vec![(C, 3, 1), (B, 1, 4), (B, 2, 1)]);
    assert_eq!(e.balance(B, QUOTE), bal(100_000, 4 * 10_025 + 9_925));
}

#[test]
fn modify_that_crosses_matches_as_taker() {
    let mut e = setup();
    rest(&mut e, limit(B, 10, Buy, 99, 5, Gtc));
    rest(&mut e, limit(A, 1, Sell, 100, 3, Gtc));
    // Re-entered at 99 it crosses B's bid and trades as the taker: N = 29_700,
    // taker fee ceil(74.25) = 75, B's rebate floor(29.7) = 29.
    let events = step(&mut e, modify(A, 1, 99, 3));
    assert_eq!(
        events,
        vec![
            modified(A, 1, 99, 3),
            fill((A, 1, 0), (B, 10, 2), Sell, 99, 3, 75, -29),
        ]
    );
    assert_eq!(book(&e, M, Sell), vec![]);
    assert_eq!(book(&e, M, Buy), vec![(B, 10, 2)]);
    assert_eq!(e.balance(A, QUOTE), bal(29_625, 0));
    assert_eq!(e.balance(A, BASE), bal(970, 0));
    // B paid 29_700 - 29; 2 lots at unit_cost(99) = 9_925 stay reserved.
    assert_eq!(e.balance(B, QUOTE), bal(100_000 - 29_671, 2 * 9_925));
    assert_eq!(e.fee_pool(QUOTE), Some(46));
    assert_conserved(&e);
}

#[test]
fn reentered_order_uses_its_own_stp_mode() {
    let mut e = setup();
    rest(&mut e, order(C, M, 1, Buy, Some(99), 2, Gtc, CancelMaker));
    rest(&mut e, order(C, M, 2, Sell, Some(100), 1, Gtc, CancelTaker));
    // Re-entered at 99, C's sell meets C's own bid: cancel_taker cancels the modified order.
    let events = step(&mut e, modify(C, 2, 99, 1));
    assert_eq!(
        events,
        vec![modified(C, 2, 99, 1), canceled(C, 2, 1, CancelReason::Stp)]
    );
    assert_eq!(book(&e, M, Buy), vec![(C, 1, 2)]);
    assert_eq!(book(&e, M, Sell), vec![]);
    assert_eq!(e.balance(C, BASE), bal(1000, 0));
    assert_eq!(e.balance(C, QUOTE), bal(100_000, 2 * 9_925));
}

#[test]
fn market_buy_stops_when_it_cannot_pay() {
    let mut e = setup();
    rest(&mut e, limit(A, 1, Sell, 100, 1, Gtc));
    rest(&mut e, limit(A, 2, Sell, 120, 5, Gtc));
    let mut events = Vec::new();
    e.step(&deposit(4, QUOTE, 25_000), &mut events);
    // cost(1) at 100 = 10_000 + ceil(25) = 10_025 <= 25_000: passes the pre-check and fills.
    // Left 14_975; at 120, cost(q) = 12_000 q + ceil(30 q): one lot (12_030), not two (24_060).
    // Left 2_945 < 12_030: the rest is canceled.
    let events = step(&mut e, market_order(4, 7, Buy, 10));
    assert_eq!(
        events,
        vec![
            accepted(4, 7),
            fill((4, 7, 9), (A, 1, 0), Buy, 100, 1, 25, -10),
            fill((4, 7, 8), (A, 2, 4), Buy, 120, 1, 30, -12),
            canceled(4, 7, 8, CancelReason::Unfilled),
        ]
    );
    assert_eq!(e.balance(4, QUOTE), bal(2_945, 0));
    assert_eq!(e.balance(4, BASE), bal(20, 0));
    assert_eq!(book(&e, M, Sell), vec![(A, 2, 4)]);
    assert_conserved(&e);

    // Exactly enough for two lots at 120 (24_060): both fill, then nothing is left.
    e.step(&deposit(5, QUOTE, 24_060), &mut Vec::new());
    let events = step(&mut e, market_order(5, 8, Buy, 3));
    assert_eq!(
        events,
        vec![
            accepted(5, 8),
            fill((5, 8, 1), (A, 2, 2), Buy, 120, 2, 60, -24),
            canceled(5, 8, 1, CancelReason::Unfilled),
        ]
    );
    assert_eq!(e.balance(5, QUOTE), bal(0, 0));

    // Pre-check at the best ask: 12_029 < cost(1) = 12_030.
    e.step(&deposit(6, QUOTE, 12_029), &mut Vec::new());
    assert_eq!(
        step(&mut e, market_order(6, 9, Buy, 1)),
        vec![Event::Rejected {
            account: 6,
            oid: Some(9),
            reason: RejectReason::InsufficientBalance
        }]
    );
    // The refusal says what was missing: cost(1) at the best ask against the quote held.
    assert_eq!(
        e.last_shortfall(),
        Some(Shortfall {
            asset: QUOTE,
            needed: 12_030,
            available: 12_029
        })
    );
    // A market buy on an empty ask side passes the check even with no quote at all.
    e.step(&deposit(7, BASE, 1), &mut Vec::new());
    let events = step(&mut e, order(7, M2, 1, Buy, None, 4, Ioc, CancelMaker));
    assert_eq!(
        events,
        vec![
            in_market(M2, accepted(7, 1)),
            in_market(M2, canceled(7, 1, 4, CancelReason::Unfilled))
        ]
    );
}

#[test]
fn market_sell_walks_bids_and_needs_base_up_front() {
    let mut e = setup();
    rest(&mut e, limit(B, 1, Buy, 100, 2, Gtc));
    rest(&mut e, limit(B, 2, Buy, 90, 5, Gtc));
    // 90 x 2: N = 18_000, taker fee 45, rebate 18.
    let events = step(&mut e, market_order(A, 3, Sell, 4));
    assert_eq!(
        events,
        vec![
            accepted(A, 3),
            fill((A, 3, 2), (B, 1, 0), Sell, 100, 2, 50, -20),
            fill((A, 3, 0), (B, 2, 3), Sell, 90, 2, 45, -18),
        ]
    );
    assert_eq!(e.balance(A, BASE), bal(960, 0));
    assert_eq!(e.balance(A, QUOTE), bal(20_000 - 50 + 18_000 - 45, 0));
    // unit_cost(90) = 9_000 + ceil(22.5) = 9_023.
    assert_eq!(
        e.balance(B, QUOTE),
        bal(100_000 - 19_980 - 17_982, 3 * 9_023)
    );
    // 1000 - 40 = 960 base available: 97 lots (970 units) are too many.
    assert_eq!(
        step(&mut e, market_order(A, 4, Sell, 97)),
        vec![Event::Rejected {
            account: A,
            oid: Some(4),
            reason: RejectReason::InsufficientBalance
        }]
    );
    assert_eq!(
        e.last_shortfall(),
        Some(Shortfall {
            asset: BASE,
            needed: 970,
            available: 960
        })
    );
    // The next command starts with no shortfall.
    step(&mut e, market_order(A, 4, Sell, 1));
    assert_eq!(e.last_shortfall(), None);
    assert_conserved(&e);
}

/// docs/engine.md leaves open whether STP or the market-buy affordability cut comes first when
/// the next maker is the buyer's own; read as written ("before each *fill*"), STP acts first.
#[test]
fn market_buy_stp_cancels_own_maker_before_the_affordability_stop() {
    let mut e = setup();
    let mut events = Vec::new();
    e.step(&deposit(9, BASE, 100), &mut events);
    e.step(&deposit(9, QUOTE, 11_000), &mut events);
    rest(&mut e, limit(A, 1, Sell, 100, 1, Gtc));
    rest(&mut e, limit(9, 2, Sell, 120, 1, Gtc));
    rest(&mut e, limit(A, 3, Sell, 120, 1, Gtc));
    let events = step(&mut e, market_order(9, 4, Buy, 3));
    assert_eq!(
        events,
        vec![
            accepted(9, 4),
            fill((9, 4, 2), (A, 1, 0), Buy, 100, 1, 25, -10),
            canceled(9, 2, 1, CancelReason::Stp),
            canceled(9, 4, 2, CancelReason::Unfilled),
        ]
    );
    assert_eq!(e.balance(9, QUOTE), bal(975, 0));
}

#[test]
fn cancel_all_goes_in_entry_order() {
    let mut e = setup();
    rest(&mut e, limit(A, 5, Sell, 100, 1, Gtc));
    rest(&mut e, limit(A, 3, Sell, 101, 1, Gtc));
    rest(&mut e, limit(A, 9, Sell, 100, 2, Gtc));
    rest(&mut e, order(A, M2, 7, Sell, Some(50), 2, Gtc, CancelMaker));
    // Growing oid 5 re-enters it: it is now A's newest order in market 1.
    assert_eq!(
        step(&mut e, modify(A, 5, 100, 4)),
        vec![modified(A, 5, 100, 4)]
    );
    let events = step(
        &mut e,
        Command::CancelAll {
            account: A,
            market: M,
        },
    );
    assert_eq!(
        events,
        vec![
            canceled(A, 3, 1, CancelReason::User),
            canceled(A, 9, 2, CancelReason::User),
            canceled(A, 5, 4, CancelReason::User),
        ]
    );
    // The other market is untouched; its order still reserves 2 base (BU = 1).
    assert_eq!(e.balance(A, BASE), bal(1000, 2));
    assert_eq!(book(&e, M2, Sell), vec![(A, 7, 2)]);
    assert_eq!(
        step(
            &mut e,
            Command::CancelAll {
                account: A,
                market: M
            }
        ),
        vec![]
    );
    assert_eq!(
        step(
            &mut e,
            Command::Cancel {
                account: A,
                market: M2,
                oid: 7
            }
        ),
        vec![in_market(M2, canceled(A, 7, 2, CancelReason::User))]
    );
    assert_eq!(e.balance(A, BASE), bal(1000, 0));
    assert_eq!(e.resting_orders(), 0);
}

/// Steps a command that must be rejected with `reason`, and checks that nothing changed.
#[track_caller]
fn expect_reject(
    e: &mut Engine,
    command: Command,
    account: AccountId,
    oid: Option<OrderId>,
    reason: RejectReason,
) {
    let root = e.state_hash();
    let resting = e.resting_orders();
    let events = step(e, command.clone());
    assert_eq!(
        events,
        vec![Event::Rejected {
            account,
            oid,
            reason
        }],
        "{command:?}"
    );
    assert_eq!(
        e.state_hash(),
        root,
        "a rejected {command:?} changed the state"
    );
    assert_eq!(e.resting_orders(), resting);
}

#[test]
fn every_reject_reason_through_the_engine() {
    use RejectReason::*;
    let mut e = setup_with(EngineConfig {
        max_resting_orders: 100,
        max_open_orders_per_account: 3,
    });

    // Registry.
    expect_reject(
        &mut e,
        Command::CreateAsset { asset: BASE },
        0,
        None,
        AlreadyExists,
    );
    expect_reject(
        &mut e,
        Command::CreateMarket(spec_m()),
        0,
        None,
        AlreadyExists,
    );
    let fresh = MarketSpec {
        market: 7,
        ..spec_m()
    };
    let bad_specs = [
        (MarketSpec { quote: 42, ..fresh }, UnknownAsset),
        (
            MarketSpec {
                quote: BASE,
                ..fresh
            },
            InvalidMarket,
        ),
        (
            MarketSpec {
                base_units_per_lot: 0,
                ..fresh
            },
            InvalidMarket,
        ),
        (
            MarketSpec {
                quote_units_per_tick_lot: -1,
                ..fresh
            },
            InvalidMarket,
        ),
        (
            MarketSpec {
                min_lots: 0,
                ..fresh
            },
            InvalidMarket,
        ),
        (
            MarketSpec {
                max_price_ticks: 0,
                ..fresh
            },
            InvalidMarket,
        ),
        (
            MarketSpec {
                max_price_ticks: (1 << 28) + 1,
                ..fresh
            },
            InvalidMarket,
        ),
        (
            MarketSpec {
                taker_fee_bps: -1,
                maker_fee_bps: 0,
                ..fresh
            },
            InvalidMarket,
        ),
        (
            MarketSpec {
                taker_fee_bps: 10_000,
                ..fresh
            },
            InvalidMarket,
        ),
        (
            MarketSpec {
                maker_fee_bps: 10_000,
                ..fresh
            },
            InvalidMarket,
        ),
        (
            MarketSpec {
                maker_fee_bps: -26,
                ..fresh
            },
            InvalidMarket,
        ),
        (
            MarketSpec {
                max_price_ticks: 1 << 28,
                quote_units_per_tick_lot: (i64::MAX >> 28) + 1,
                ..fresh
            },
            InvalidMarket,
        ),
    ];
    for (spec, reason) in bad_specs {
        expect_reject(&mut e, Command::CreateMarket(spec), 0, None, reason);
    }

    // Deposits and withdrawals.
    expect_reject(&mut e, deposit(A, 42, 5), A, None, UnknownAsset);
    expect_reject(&mut e, deposit(A, BASE, 0), A, None, InvalidQty);
    expect_reject(&mut e, deposit(77, BASE, -1), 77, None, InvalidQty);
    // Supply of base is 2_000: one more than i64::MAX - 2_000 overflows.
    expect_reject(
        &mut e,
        deposit(A, BASE, i64::MAX - 1_999),
        A,
        None,
        Overflow,
    );
    let withdraw = |account, asset, amount| Command::Withdraw {
        account,
        asset,
        amount,
    };
    expect_reject(&mut e, withdraw(A, 42, 5), A, None, UnknownAsset);
    expect_reject(&mut e, withdraw(77, BASE, 5), 77, None, UnknownAccount);
    expect_reject(&mut e, withdraw(A, BASE, 0), A, None, InvalidQty);
    rest(&mut e, limit(A, 1, Sell, 500, 10, Gtc)); // locks 100 base
    expect_reject(&mut e, withdraw(A, BASE, 901), A, None, InsufficientBalance);

    // Place, in the documented order of checks (each command also fails later checks).
    let o = |account, market, oid, side, price, qty, tif| {
        order(account, market, oid, side, price, qty, tif, CancelMaker)
    };
    let p = |account, oid, reason| (account, Some(oid), reason);
    let cases = [
        (o(77, 42, 1, Buy, Some(0), 0, Gtc), p(77, 1, UnknownMarket)),
        (o(77, M, 1, Buy, None, 0, Gtc), p(77, 1, UnknownAccount)),
        (o(B, M, 1, Buy, None, 0, Gtc), p(B, 1, InvalidTif)),
        (o(B, M, 1, Buy, None, 1, Fok), p(B, 1, InvalidTif)),
        (o(B, M, 1, Buy, None, 1, Alo), p(B, 1, InvalidTif)),
        (o(B, M, 1, Buy, Some(0), 0, Gtc), p(B, 1, InvalidQty)),
        (o(B, M, 1, Buy, Some(0), 1, Gtc), p(B, 1, InvalidPrice)),
        (o(B, M, 1, Buy, Some(1001), 1, Gtc), p(B, 1, InvalidPrice)),
        (o(B, M2, 1, Buy, Some(-1), 1, Gtc), p(B, 1, InvalidPrice)),
        (o(B, M2, 1, Buy, Some(5), 1, Gtc), p(B, 1, MinQty)),
        // A's oid 1 rests in market 1: the oid is taken in every market, even for IOC.
        (o(A, M2, 1, Sell, Some(5), 2000, Ioc), p(A, 1, DuplicateOid)),
        (
            o(B, M, 2, Buy, Some(500), 1, Alo),
            p(B, 2, PostOnlyWouldCross),
        ),
        // 10 lots at unit_cost(100) = 10_025 is 100_250 > 100_000.
        (
            o(B, M, 2, Buy, Some(100), 10, Gtc),
            p(B, 2, InsufficientBalance),
        ),
        (
            o(B, M, 2, Buy, Some(100), 10, Fok),
            p(B, 2, InsufficientBalance),
        ),
        (o(B, M, 2, Buy, Some(499), 1, Fok), p(B, 2, FokUnfilled)),
    ];
    for (command, (account, oid, reason)) in cases {
        expect_reject(&mut e, command, account, oid, reason);
    }
    // A's per-account limit is 3 (across markets); GTC and ALO count, IOC does not.
    rest(&mut e, limit(A, 2, Sell, 600, 1, Gtc));
    rest(
        &mut e,
        order(A, M2, 3, Sell, Some(600), 2, Alo, CancelMaker),
    );
    expect_reject(
        &mut e,
        limit(A, 4, Sell, 700, 1, Gtc),
        A,
        Some(4),
        TooManyOrders,
    );
    expect_reject(
        &mut e,
        limit(A, 4, Sell, 700, 1, Alo),
        A,
        Some(4),
        TooManyOrders,
    );
    // Too many orders comes before post-only and balance checks.
    expect_reject(
        &mut e,
        limit(A, 4, Sell, 1, 999, Alo),
        A,
        Some(4),
        TooManyOrders,
    );
    assert_eq!(
        step(&mut e, limit(A, 4, Sell, 700, 1, Ioc)),
        vec![accepted(A, 4), canceled(A, 4, 1, CancelReason::Unfilled)]
    );

    // Cancel and cancel-all.
    let cancel = |account, market, oid| Command::Cancel {
        account,
        market,
        oid,
    };
    expect_reject(&mut e, cancel(77, 42, 1), 77, Some(1), UnknownMarket);
    expect_reject(&mut e, cancel(77, M, 1), 77, Some(1), UnknownAccount);
    expect_reject(&mut e, cancel(A, M, 99), A, Some(99), UnknownOrder);
    // oid 1 is open, but in market 1, not 2.
    expect_reject(&mut e, cancel(A, M2, 1), A, Some(1), UnknownOrder);
    expect_reject(&mut e, cancel(B, M, 1), B, Some(1), UnknownOrder);
    let cancel_all = |account, market| Command::CancelAll { account, market };
    expect_reject(&mut e, cancel_all(77, 42), 77, None, UnknownMarket);
    expect_reject(&mut e, cancel_all(77, M), 77, None, UnknownAccount);

    // Modify.
    let modify_in = |account, market, oid, price, qty| Command::Modify {
        account,
        market,
        oid,
        price,
        qty,
    };
    rest(&mut e, order(B, M2, 5, Buy, Some(400), 2, Alo, CancelMaker));
    rest(&mut e, limit(B, 6, Buy, 100, 9, Gtc)); // 90_225 of B's 100_000 reserved
    let cases = [
        (modify_in(77, 42, 1, 0, 0), p(77, 1, UnknownMarket)),
        (modify_in(77, M, 1, 0, 0), p(77, 1, UnknownAccount)),
        (modify_in(A, M2, 1, 0, 0), p(A, 1, UnknownOrder)),
        (modify_in(A, M, 1, 0, 0), p(A, 1, InvalidQty)),
        (modify_in(A, M, 1, 1001, 1), p(A, 1, InvalidPrice)),
        (modify_in(A, M, 1, 0, 5), p(A, 1, InvalidPrice)),
        // Re-entry (new price) below min_lots.
        (modify_in(B, M2, 5, 401, 1), p(B, 5, MinQty)),
        // B's ALO bid re-entered at A's ask (600 in market 2) would cross.
        (modify_in(B, M2, 5, 600, 2), p(B, 5, PostOnlyWouldCross)),
        // available 100_000 - 90_225 - 802 (the ALO bid: 2 * (400 + 1)) = 8_973; with the
        // order's own 90_225 that is 99_198 < 10 lots * 10_025.
        (modify_in(B, M, 6, 100, 10), p(B, 6, InsufficientBalance)),
    ];
    for (command, (account, oid, reason)) in cases {
        expect_reject(&mut e, command, account, oid, reason);
    }
    assert_eq!(e.balance(B, QUOTE), bal(100_000, 90_225 + 802));
    // The same size at a higher price needs 9 * unit_cost(101) = 9 * 10_126 = 91_134 <= 99_198.
    assert_eq!(
        step(&mut e, modify_in(B, M, 6, 101, 9)),
        vec![modified(B, 6, 101, 9)]
    );
    assert_eq!(e.balance(B, QUOTE), bal(100_000, 91_134 + 802));
    // Reducing in place to below min_lots is not a re-entry: no min_qty check applies.
    assert_eq!(
        step(&mut e, modify_in(B, M2, 5, 400, 1)),
        vec![in_market(M2, modified(B, 5, 400, 1))]
    );

    // Withdrawing exactly the available amount works (A reserves 100 + 10 + 2 base, so 888
    // is available), one more unit does not; deposits up to a supply of i64::MAX work.
    expect_reject(&mut e, withdraw(A, BASE, 889), A, None, InsufficientBalance);
    assert_eq!(step(&mut e, withdraw(A, BASE, 888)), vec![]);
    assert_eq!(e.balance(A, BASE), bal(112, 112));
    assert_eq!(e.supply(BASE), Some(1_112));
    assert_eq!(step(&mut e, deposit(A, BASE, i64::MAX - 1_112)), vec![]);
    assert_eq!(e.supply(BASE), Some(i64::MAX));
    expect_reject(&mut e, deposit(C, BASE, 1), C, None, Overflow);
    assert_conserved(&e);
}

#[test]
fn book_full_is_engine_wide() {
    let mut e = setup_with(EngineConfig {
        max_resting_orders: 2,
        max_open_orders_per_account: 10,
    });
    rest(&mut e, limit(A, 1, Sell, 100, 1, Gtc));
    rest(&mut e, order(C, M2, 1, Buy, Some(10), 2, Gtc, CancelMaker));
    expect_reject(
        &mut e,
        limit(B, 1, Buy, 50, 1, Gtc),
        B,
        Some(1),
        RejectReason::BookFull,
    );
    expect_reject(
        &mut e,
        limit(B, 1, Buy, 50, 1, Alo),
        B,
        Some(1),
        RejectReason::BookFull,
    );
    // Even a GTC that would fill completely is refused: the check comes first.
    expect_reject(
        &mut e,
        limit(B, 1, Buy, 100, 1, Gtc),
        B,
        Some(1),
        RejectReason::BookFull,
    );
    // IOC and FOK never rest, so the limit does not apply.
    assert_eq!(
        step(&mut e, limit(B, 1, Buy, 100, 1, Fok)),
        vec![
            accepted(B, 1),
            fill((B, 1, 0), (A, 1, 0), Buy, 100, 1, 25, -10)
        ]
    );
    rest(&mut e, limit(B, 2, Buy, 50, 1, Gtc));
    assert_eq!(e.resting_orders(), 2);
}

#[test]
fn valid_edge_markets_are_accepted() {
    let mut e = setup();
    let mut events = Vec::new();
    // The largest allowed price range, with max_price * QU == i64::MAX rounded down, and a
    // rebate exactly equal to the taker fee.
    e.step(
        &Command::CreateMarket(MarketSpec {
            market: 7,
            max_price_ticks: 1 << 28,
            quote_units_per_tick_lot: i64::MAX >> 28,
            maker_fee_bps: -25,
            taker_fee_bps: 25,
            ..spec_m()
        }),
        &mut events,
    );
    assert_eq!(events, vec![]);
    rest(
        &mut e,
        order(A, 7, 1, Sell, Some(1 << 28), 1, Gtc, CancelMaker),
    );
    let mut depth = Vec::new();
    assert!(e.depth(7, Sell, 5, &mut depth));
    assert_eq!(depth, vec![(1 << 28, 1)]);
    assert!(!e.depth(8, Sell, 5, &mut depth));
    assert_eq!(e.balance(77, BASE), None);
    assert_eq!(e.balance(A, 42), None);
    assert_eq!(e.fee_pool(42), None);
}
