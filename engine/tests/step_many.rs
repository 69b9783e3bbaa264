//! `Engine::step_many` (prefetching ahead on large books) against `Engine::step` one command
//! at a time: the same events, in the same order, and the same state, on a book large enough
//! (40,000 resting orders) that the prefetching path runs.

use engine::{
    Command, Engine, Event, MarketSpec, NewOrder, SelfTradePrevention, Side, TimeInForce,
};

const ACCOUNTS: u64 = 50;
const PREFILL: u64 = 40_000;
const MID: i64 = 50_000;

fn setup() -> Vec<Command> {
    let mut commands = vec![
        Command::CreateAsset { asset: 1 },
        Command::CreateAsset { asset: 2 },
        Command::CreateMarket(MarketSpec {
            market: 1,
            base: 1,
            quote: 2,
            base_units_per_lot: 1,
            quote_units_per_tick_lot: 1,
            min_lots: 1,
            max_price_ticks: 100_000,
            maker_fee_bps: 2,
            taker_fee_bps: 5,
        }),
    ];
    for account in 1..=ACCOUNTS {
        for asset in [1, 2] {
            commands.push(Command::Deposit {
                account,
                asset,
                amount: i64::MAX / 256,
            });
        }
    }
    commands
}

fn order(oid: u64, side: Side, price: i64, qty: i64, tif: TimeInForce) -> Command {
    Command::Place(NewOrder {
        account: 1 + oid % ACCOUNTS,
        market: 1,
        oid,
        side,
        price: Some(price),
        qty,
        tif,
        stp: SelfTradePrevention::CancelMaker,
        reduce_only: false,
    })
}

/// Resting bids below the mid and asks above it, then a seeded mix of modifies (most move,
/// some cross), cancels (some of orders already gone) and crossing IOCs.
fn stream() -> (Vec<Command>, Vec<Command>) {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let side_of = |oid: u64| {
        if oid.is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        }
    };
    let away = |side: Side, distance: i64| match side {
        Side::Buy => MID - 1 - distance,
        Side::Sell => MID + distance,
    };
    let prefill = (0..PREFILL)
        .map(|oid| {
            let side = side_of(oid);
            order(
                oid,
                side,
                away(side, (oid as i64 * 7) % 3_000),
                1 + (oid as i64 % 50),
                TimeInForce::Gtc,
            )
        })
        .collect();
    let mut commands = Vec::new();
    for step in 0..20_000u64 {
        let oid = next(PREFILL);
        let account = 1 + oid % ACCOUNTS;
        let command = match next(100) {
            0..=79 => {
                let side = side_of(oid);
                // 1 in 50 moves through the touch and trades.
                let distance = if next(50) == 0 {
                    -3
                } else {
                    next(3_000) as i64
                };
                Command::Modify {
                    account,
                    market: 1,
                    oid,
                    price: away(side, distance),
                    qty: 1 + next(60) as i64,
                }
            }
            80..=91 => Command::Cancel {
                account,
                market: 1,
                oid,
            },
            _ => {
                let side = if next(2) == 0 { Side::Buy } else { Side::Sell };
                order(
                    PREFILL + step,
                    side,
                    away(side.opposite(), -2),
                    1 + next(40) as i64,
                    TimeInForce::Ioc,
                )
            }
        };
        commands.push(command);
    }
    (prefill, commands)
}

#[test]
fn step_many_equals_stepping_one_by_one_on_a_large_book() {
    let (prefill, commands) = stream();
    let mut one: Engine = Engine::new(Default::default());
    let mut many: Engine = Engine::new(Default::default());
    let mut scratch = Vec::new();
    for command in setup().iter().chain(&prefill) {
        one.step(command, &mut scratch);
        many.step(command, &mut scratch);
    }
    assert!(scratch.iter().all(|e| matches!(e, Event::Accepted { .. })));
    assert!(one.resting_orders() >= 1 << 15, "the prefetching path runs");

    let mut events_one = Vec::new();
    for command in &commands {
        one.step(command, &mut events_one);
    }
    let mut events_many = Vec::new();
    let mut out = Vec::new();
    many.step_many(&commands, &mut out, |out| events_many.append(out));

    assert_eq!(events_many.len(), events_one.len());
    assert!(events_many == events_one, "same events in the same order");
    assert_eq!(many.state_hash(), one.state_hash());
    many.check_invariants().expect("invariants hold");
    let count = |f: fn(&Event) -> bool| events_one.iter().filter(|e| f(e)).count();
    let (modified, fills, canceled) = (
        count(|e| matches!(e, Event::Modified { .. })),
        count(|e| matches!(e, Event::Fill { .. })),
        count(|e| matches!(e, Event::Canceled { .. })),
    );
    assert!(
        modified > 10_000 && fills > 400 && canceled > 1_000,
        "{modified} {fills} {canceled}"
    );
}
