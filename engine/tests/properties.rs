//! Property tests: the engine held to the naive reference model in `model/`.
//!
//! Command streams are generated over three markets (one with a maker rebate, one whose maker
//! fee exceeds its taker fee), six accounts (two of which start without any deposit), a narrow
//! price band so that books cross often, every order type and STP mode, cancels, cancel-alls,
//! modifies of open and unknown oids, duplicate oids, deposits, withdrawals, occasional
//! asset/market creation and invalid values. Properties:
//!
//! - (a) the engine and the model emit identical events for every command and hold identical
//!   books, depths, balances, fee pools and supplies after every command;
//! - (b) after every command, every asset is conserved (sum of totals + fee pool = supply) and
//!   `check_invariants` passes;
//! - (c) determinism: two runs give the same roots; the array and BTreeMap ladders give the
//!   same events and roots; `commit` equals `state_hash`; a snapshot restored mid-stream
//!   continues exactly like the original;
//! - (d) the root changes whenever the observable state changes and stays put when a command
//!   is rejected.

mod model;

use engine::{
    AccountId, AssetId, BTreeEngine, Command, Engine, EngineConfig, Event, Lots, MarketId,
    MarketSpec, NewOrder, OrderId, SelfTradePrevention, Side, Ticks, TimeInForce, Units,
};
use model::Model;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Base asset of markets 1 and 3.
const GOLD: AssetId = 1;
/// Quote asset of markets 1 and 2.
const USD: AssetId = 2;
/// Base of market 2, quote of market 3.
const SILVER: AssetId = 3;
/// Base of market 4 (huge units).
const BIG_BASE: AssetId = 4;
/// Quote of market 4 (huge units).
const BIG_QUOTE: AssetId = 5;

#[allow(clippy::too_many_arguments)]
fn spec(
    market: MarketId,
    base: AssetId,
    quote: AssetId,
    bu: Units,
    qu: Units,
    min_lots: Lots,
    max_price: Ticks,
    maker: i32,
    taker: i32,
) -> MarketSpec {
    MarketSpec {
        market,
        base,
        quote,
        base_units_per_lot: bu,
        quote_units_per_tick_lot: qu,
        min_lots,
        max_price_ticks: max_price,
        maker_fee_bps: maker,
        taker_fee_bps: taker,
    }
}

/// Assets, the three markets and opening deposits. Accounts 5 and 6 deposit nothing here.
fn prologue() -> Vec<Command> {
    let mut commands = vec![
        Command::CreateAsset { asset: GOLD },
        Command::CreateAsset { asset: USD },
        Command::CreateAsset { asset: SILVER },
        Command::CreateAsset { asset: BIG_BASE },
        Command::CreateAsset { asset: BIG_QUOTE },
        // Positive fees on both sides.
        Command::CreateMarket(spec(1, GOLD, USD, 100, 997, 1, 16, 3, 7)),
        // Maker rebate; notionals large enough that rebates are often nonzero.
        Command::CreateMarket(spec(2, SILVER, USD, 1, 1301, 2, 12, -300, 900)),
        // Maker fee above the taker fee: the buy reserve then uses the maker rate.
        Command::CreateMarket(spec(3, GOLD, SILVER, 7, 211, 1, 10, 50, 10)),
        // Huge units: notionals near 2^46 per lot, reserves and fee products beyond i64 for
        // large sizes, balances near i64::MAX.
        Command::CreateMarket(spec(
            4,
            BIG_BASE,
            BIG_QUOTE,
            1 << 40,
            1 << 43,
            1,
            1 << 19,
            -5_000,
            5_000,
        )),
    ];
    let deposits: [(AccountId, AssetId, Units); 13] = [
        (1, BIG_BASE, i64::MAX / 4),
        (1, BIG_QUOTE, i64::MAX / 4),
        (2, BIG_BASE, 50 << 40),
        (2, BIG_QUOTE, i64::MAX / 4 + 12_345),
        (1, GOLD, 30_000),
        (1, USD, 2_000_000),
        (1, SILVER, 400_000),
        (2, GOLD, 9_000),
        (2, USD, 500_000),
        (2, SILVER, 100_000),
        (3, USD, 60_000),
        (3, SILVER, 20_000),
        (4, GOLD, 15_000),
    ];
    for (account, asset, amount) in deposits {
        commands.push(Command::Deposit {
            account,
            asset,
            amount,
        });
    }
    commands
}

fn arb_account() -> impl Strategy<Value = AccountId> {
    prop_oneof![20 => 1u64..=4, 1 => 5u64..=6]
}

fn arb_market() -> impl Strategy<Value = MarketId> {
    prop_oneof![40 => 1u32..=4, 1 => 5u32..=6, 1 => Just(9u32)]
}

fn arb_oid() -> impl Strategy<Value = OrderId> {
    1u64..=8
}

fn arb_price() -> impl Strategy<Value = Ticks> {
    prop_oneof![
        60 => 4i64..=9,
        4 => 1i64..=12,
        1 => Just(0i64),
        1 => Just(-3i64),
        1 => 10i64..=17,
        1 => Just(i64::MAX),
    ]
}

fn arb_qty() -> impl Strategy<Value = Lots> {
    prop_oneof![
        60 => 1i64..=6,
        4 => 7i64..=40,
        1 => Just(0i64),
        1 => Just(-2i64),
        1 => Just(1_000_000_000i64),
        1 => Just(i64::MAX),
    ]
}

fn arb_amount() -> impl Strategy<Value = Units> {
    prop_oneof![
        20 => 1i64..=50_000,
        1 => Just(0i64),
        1 => Just(-7i64),
        1 => Just(i64::MAX),
    ]
}

fn arb_asset() -> impl Strategy<Value = AssetId> {
    prop_oneof![12 => 1u32..=5, 1 => 6u32..=7, 1 => Just(8u32)]
}

fn arb_side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}

fn arb_stp() -> impl Strategy<Value = SelfTradePrevention> {
    prop_oneof![
        Just(SelfTradePrevention::CancelMaker),
        Just(SelfTradePrevention::CancelTaker),
        Just(SelfTradePrevention::CancelBoth),
    ]
}

fn arb_tif() -> impl Strategy<Value = TimeInForce> {
    prop_oneof![
        8 => Just(TimeInForce::Gtc),
        2 => Just(TimeInForce::Ioc),
        2 => Just(TimeInForce::Fok),
        3 => Just(TimeInForce::Alo),
    ]
}

fn arb_order() -> impl Strategy<Value = NewOrder> {
    let price = prop_oneof![
        9 => arb_price().prop_map(Some),
        1 => Just(None),
    ];
    (
        arb_account(),
        arb_market(),
        arb_oid(),
        arb_side(),
        price,
        arb_qty(),
        arb_tif(),
        arb_stp(),
        0u8..4,
    )
        .prop_map(
            |(account, market, oid, side, price, qty, tif, stp, ioc)| NewOrder {
                account,
                market,
                oid,
                side,
                price,
                qty,
                // Market orders are mostly IOC so they get past the tif check.
                tif: if price.is_none() && ioc > 0 {
                    TimeInForce::Ioc
                } else {
                    tif
                },
                stp,
                reduce_only: false,
            },
        )
}

fn arb_spec() -> impl Strategy<Value = MarketSpec> {
    (
        4u32..=6,
        1u32..=7,
        1u32..=7,
        prop_oneof![Just(0i64), Just(1), Just(5)],
        prop_oneof![Just(0i64), Just(1), Just(3), Just(i64::MAX)],
        prop_oneof![Just(0i64), Just(1), Just(2)],
        prop_oneof![
            1 => Just(0i64),
            6 => Just(12i64),
            1 => Just(1i64 << 28),
            1 => Just((1i64 << 28) + 1),
        ],
        prop_oneof![Just(-60i32), Just(-5), Just(0), Just(5), Just(10_000)],
        prop_oneof![Just(-1i32), Just(0), Just(5), Just(50), Just(9_999)],
    )
        .prop_map(|(m, b, q, bu, qu, min, max, maker, taker)| {
            spec(m, b, q, bu, qu, min, max, maker, taker)
        })
}

fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        50 => arb_order().prop_map(Command::Place),
        3 => (arb_account(), arb_market(), arb_oid())
            .prop_map(|(account, market, oid)| Command::Cancel { account, market, oid }),
        3 => (arb_account(), arb_market())
            .prop_map(|(account, market)| Command::CancelAll { account, market }),
        3 => (arb_account(), arb_market(), arb_oid(), arb_price(), arb_qty()).prop_map(
            |(account, market, oid, price, qty)| Command::Modify { account, market, oid, price, qty }
        ),
        5 => (arb_account(), arb_asset(), arb_amount())
            .prop_map(|(account, asset, amount)| Command::Deposit { account, asset, amount }),
        4 => (arb_account(), arb_asset(), arb_amount())
            .prop_map(|(account, asset, amount)| Command::Withdraw { account, asset, amount }),
        1 => (1u32..=7).prop_map(|asset| Command::CreateAsset { asset }),
        1 => arb_spec().prop_map(Command::CreateMarket),
    ]
}

/// A generated step: a literal command, or one aimed at whatever order is open when it runs
/// (resolved against the model, so modifies and cancels mostly hit live orders).
#[derive(Clone, Debug)]
enum Op {
    Literal(Command),
    /// Modify the `pick`-th open order (in entry order); `mode` 0: same price, smaller or equal
    /// size (keeps priority); 1: same price, larger size; 2: `price`, `qty`.
    ModifyOpen {
        pick: usize,
        mode: u8,
        price: Ticks,
        qty: Lots,
    },
    /// Cancel the `pick`-th open order.
    CancelOpen {
        pick: usize,
    },
    /// Cancel all orders of the `pick`-th open order's owner in its market.
    CancelAllOpen {
        pick: usize,
    },
    /// Place `order` under the owner and oid of the `pick`-th open order (duplicate oid,
    /// possibly in another market).
    ReuseOid {
        pick: usize,
        order: NewOrder,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        24 => arb_command().prop_map(Op::Literal),
        6 => (any::<usize>(), 0u8..3, arb_price(), arb_qty())
            .prop_map(|(pick, mode, price, qty)| Op::ModifyOpen { pick, mode, price, qty }),
        1 => any::<usize>().prop_map(|pick| Op::CancelOpen { pick }),
        1 => any::<usize>().prop_map(|pick| Op::CancelAllOpen { pick }),
        1 => (any::<usize>(), arb_order()).prop_map(|(pick, order)| Op::ReuseOid { pick, order }),
    ]
}

/// Turns ops into commands by running them through the model.
fn resolve(config: EngineConfig, ops: Vec<Op>) -> Vec<Command> {
    let mut model = Model::new(config);
    let mut commands = prologue();
    for command in &commands {
        model.step(command, &mut Vec::new());
    }
    for op in ops {
        let mut open = model.all_orders();
        open.sort_by_key(|o| o.entry);
        let command = match op {
            Op::Literal(command) => command,
            _ if open.is_empty() => continue,
            Op::ModifyOpen {
                pick,
                mode,
                price,
                qty,
            } => {
                let o = &open[pick % open.len()];
                let (price, qty) = match mode {
                    0 => (o.price, (qty.rem_euclid(o.remaining)) + 1),
                    1 => (o.price, o.remaining + qty.rem_euclid(4) + 1),
                    _ => (price, qty),
                };
                Command::Modify {
                    account: o.account,
                    market: o.market,
                    oid: o.oid,
                    price,
                    qty,
                }
            }
            Op::CancelOpen { pick } => {
                let o = &open[pick % open.len()];
                Command::Cancel {
                    account: o.account,
                    market: o.market,
                    oid: o.oid,
                }
            }
            Op::CancelAllOpen { pick } => {
                let o = &open[pick % open.len()];
                Command::CancelAll {
                    account: o.account,
                    market: o.market,
                }
            }
            Op::ReuseOid { pick, order } => {
                let o = &open[pick % open.len()];
                Command::Place(NewOrder {
                    account: o.account,
                    oid: o.oid,
                    ..order
                })
            }
        };
        model.step(&command, &mut Vec::new());
        commands.push(command);
    }
    commands
}

fn arb_config() -> impl Strategy<Value = EngineConfig> {
    prop_oneof![
        // Tight: too_many_orders and book_full happen.
        (6u32..=20, 3u32..=8).prop_map(|(max_resting_orders, max_open_orders_per_account)| {
            EngineConfig {
                max_resting_orders,
                max_open_orders_per_account,
            }
        }),
        Just(EngineConfig {
            max_resting_orders: 4096,
            max_open_orders_per_account: 1024,
        }),
    ]
}

/// A config and a command stream: the prologue, then random commands.
fn arb_case(max_len: usize) -> impl Strategy<Value = (EngineConfig, Vec<Command>)> {
    (
        arb_config(),
        proptest::collection::vec(arb_op(), 1..max_len),
    )
        .prop_map(|(config, ops)| (config, resolve(config, ops)))
}

/// The engine and model agree on every observable: books, depths, balances, pools, supplies.
fn same_state<L: engine::PriceLadder>(
    engine: &Engine<L>,
    model: &Model,
    at: &str,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(engine.resting_orders(), model.resting_orders(), "{}", at);
    prop_assert_eq!(
        engine.accounts().collect::<Vec<_>>(),
        model.accounts(),
        "{}",
        at
    );
    prop_assert_eq!(
        engine.assets().collect::<Vec<_>>(),
        model.assets(),
        "{}",
        at
    );
    for market in [1, 2, 3, 4, 5, 6, 9] {
        prop_assert_eq!(
            engine.market_spec(market).map(|s| s.market),
            model.markets().into_iter().find(|&m| m == market),
            "{}",
            at
        );
        for side in [Side::Buy, Side::Sell] {
            prop_assert_eq!(
                engine.book_orders(market, side),
                model.book_orders(market, side),
                "book {} {:?} {}",
                market,
                side,
                at
            );
            let mut depth = Vec::new();
            let known = engine.depth(market, side, 3, &mut depth);
            prop_assert_eq!(known, model.markets().contains(&market), "{}", at);
            prop_assert_eq!(depth, model.depth(market, side, 3), "{}", at);
        }
    }
    for asset in 0..=8 {
        prop_assert_eq!(engine.fee_pool(asset), model.fee_pool(asset), "{}", at);
        prop_assert_eq!(engine.supply(asset), model.supply(asset), "{}", at);
        for account in 0..=7 {
            prop_assert_eq!(
                engine.balance(account, asset),
                model.balance(account, asset),
                "balance of {} in {} {}",
                account,
                asset,
                at
            );
        }
    }
    Ok(())
}

/// Sum of totals + fee pool = supply for every asset, and the engine's own invariants.
fn conserved<L: engine::PriceLadder>(engine: &Engine<L>, at: &str) -> Result<(), TestCaseError> {
    for asset in engine.assets() {
        let mut sum: i128 = 0;
        for account in engine.accounts() {
            let balance = engine
                .balance(account, asset)
                .expect("known account and asset");
            prop_assert!(
                0 <= balance.locked && balance.locked <= balance.total,
                "{}: account {} asset {}: {:?}",
                at,
                account,
                asset,
                balance
            );
            sum += balance.total as i128;
        }
        let pool = engine.fee_pool(asset).expect("known asset") as i128;
        let supply = engine.supply(asset).expect("known asset") as i128;
        prop_assert_eq!(sum + pool, supply, "{}: asset {} not conserved", at, asset);
    }
    if let Err(why) = engine.check_invariants() {
        return Err(TestCaseError::fail(format!("{at}: invariants: {why}")));
    }
    Ok(())
}

/// Properties (a) and (b): every command gives the same events on the engine and the model,
/// the same state after it, and leaves the engine conserving every asset.
fn run_against_model(config: EngineConfig, commands: &[Command]) -> Result<(), TestCaseError> {
    let mut engine: Engine = Engine::new(config);
    engine.track_level_changes(true);
    let mut model = Model::new(config);
    let mut engine_events = Vec::new();
    let mut model_events = Vec::new();
    // An L2 book kept only from the engine's level changes, as a market-data client would.
    let mut l2_mirror = std::collections::BTreeMap::new();
    let mut changes = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        engine_events.clear();
        model_events.clear();
        engine.step(command, &mut engine_events);
        model.step(command, &mut model_events);
        let at = format!("after command #{i} {command:?}");
        prop_assert_eq!(&engine_events, &model_events, "events differ {}", at);
        if let Err(why) = model.check() {
            return Err(TestCaseError::fail(format!("{at}: {why}")));
        }
        conserved(&engine, &at)?;
        same_state(&engine, &model, &at)?;
        changes.clear();
        engine.drain_level_changes(&mut changes);
        let keys: Vec<_> = changes
            .iter()
            .map(|c| (c.market, c.side, c.price))
            .collect();
        prop_assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "changes not sorted/unique {}",
            at
        );
        for change in &changes {
            let key = (change.market, change.side, change.price);
            if change.lots == 0 {
                l2_mirror.remove(&key);
            } else {
                l2_mirror.insert(key, change.lots);
            }
        }
        prop_assert_eq!(&l2_mirror, &model.levels(), "L2 from level changes {}", at);
    }
    Ok(())
}

/// Property (c) for one stream.
fn run_determinism(config: EngineConfig, commands: &[Command]) -> Result<(), TestCaseError> {
    let mut array: Engine = Engine::new(config);
    let mut btree = BTreeEngine::new(config);
    let mut again: Engine = Engine::new(config);
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    let middle = commands.len() / 2;
    let mut restored: Option<Engine> = None;
    let mut restored_events = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        array.step(command, &mut a);
        btree.step(command, &mut b);
        again.step(command, &mut c);
        if let Some(engine) = restored.as_mut() {
            engine.step(command, &mut restored_events);
        }
        let at = format!("after command #{i} {command:?}");
        prop_assert_eq!(&a, &b, "ladders disagree {}", at);
        prop_assert_eq!(&a, &c, "runs disagree {}", at);
        let root = array.state_hash();
        prop_assert_eq!(root, btree.state_hash(), "ladder roots {}", at);
        prop_assert_eq!(root, again.state_hash(), "run roots {}", at);
        if i % 3 == 0 {
            prop_assert_eq!(array.commit(), root, "commit != state_hash {}", at);
        }
        if i % 7 == 0 {
            prop_assert_eq!(btree.commit(), root, "btree commit != state_hash {}", at);
        }
        if let Some(engine) = restored.as_ref() {
            prop_assert_eq!(engine.state_hash(), root, "restored root {}", at);
        }
        if i == middle {
            let bytes = array.snapshot();
            let engine: Engine = match Engine::restore(&bytes) {
                Ok(engine) => engine,
                Err(why) => return Err(TestCaseError::fail(format!("restore: {why:?}"))),
            };
            prop_assert_eq!(engine.state_hash(), root, "root of restored snapshot");
            restored_events = a.clone();
            restored = Some(engine);
        }
    }
    if restored.is_some() {
        prop_assert_eq!(&restored_events, &a, "restored engine events");
    }
    Ok(())
}

/// Property (d) for one stream: the root moves with the observable state, and a rejected
/// command leaves it where it was.
fn run_root_tracks_state(config: EngineConfig, commands: &[Command]) -> Result<(), TestCaseError> {
    let mut engine: Engine = Engine::new(config);
    let mut model = Model::new(config);
    let mut events = Vec::new();
    let mut model_events = Vec::new();
    let mut root = engine.state_hash();
    for (i, command) in commands.iter().enumerate() {
        let before = model.observable();
        events.clear();
        model_events.clear();
        engine.step(command, &mut events);
        model.step(command, &mut model_events);
        let after = model.observable();
        let new_root = engine.state_hash();
        let at = format!("after command #{i} {command:?}");
        if before != after {
            prop_assert_ne!(new_root, root, "state changed, root did not: {}", at);
        }
        if matches!(events.as_slice(), [Event::Rejected { .. }]) {
            prop_assert_eq!(new_root, root, "rejected command moved the root: {}", at);
            prop_assert!(before == after, "model changed on a reject: {}", at);
        }
        root = new_root;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// (a) + (b): engine and model agree command by command; conservation and invariants hold.
    #[test]
    fn engine_matches_model((config, commands) in arb_case(300)) {
        run_against_model(config, &commands)?;
    }

    /// (c): runs, ladders, commit and snapshot/restore agree.
    #[test]
    fn engine_is_deterministic((config, commands) in arb_case(200)) {
        run_determinism(config, &commands)?;
    }

    /// (d): the root follows the state.
    #[test]
    fn root_tracks_state((config, commands) in arb_case(200)) {
        run_root_tracks_state(config, &commands)?;
    }
}

// ---- fixed checks of the root --------------------------------------------------------------

fn engine_after(commands: &[Command]) -> (Engine, Vec<Event>) {
    let mut engine: Engine = Engine::new(EngineConfig::default());
    let mut events = Vec::new();
    for command in commands {
        engine.step(command, &mut events);
    }
    (engine, events)
}

fn limit(account: AccountId, oid: OrderId, side: Side, price: Ticks, qty: Lots) -> Command {
    Command::Place(NewOrder {
        account,
        market: 1,
        oid,
        side,
        price: Some(price),
        qty,
        tif: TimeInForce::Gtc,
        stp: SelfTradePrevention::CancelMaker,
        reduce_only: false,
    })
}

/// (d) by hand: a root that ignored orders, their prices, sizes, priority or balances would fail.
#[test]
fn root_sees_orders_balances_and_priority() {
    let base = prologue();
    let (engine, _) = engine_after(&base);
    let root0 = engine.state_hash();

    // A resting order changes the root, and so does its price, its size and its owner.
    let with = |extra: &[Command]| {
        let mut commands = base.clone();
        commands.extend_from_slice(extra);
        let (engine, events) = engine_after(&commands);
        (engine.state_hash(), events)
    };
    let (root_a, _) = with(&[limit(1, 1, Side::Sell, 8, 2)]);
    let (root_b, _) = with(&[limit(1, 1, Side::Sell, 9, 2)]);
    let (root_c, _) = with(&[limit(1, 1, Side::Sell, 8, 3)]);
    let (root_d, _) = with(&[limit(2, 1, Side::Sell, 8, 2)]);
    let roots = [root0, root_a, root_b, root_c, root_d];
    for i in 0..roots.len() {
        for j in i + 1..roots.len() {
            assert_ne!(roots[i], roots[j], "roots {i} and {j} collide");
        }
    }

    // Same orders, different priority within the level.
    let (root_e, _) = with(&[limit(1, 1, Side::Sell, 8, 2), limit(2, 1, Side::Sell, 8, 2)]);
    let (root_f, _) = with(&[limit(2, 1, Side::Sell, 8, 2), limit(1, 1, Side::Sell, 8, 2)]);
    assert_ne!(root_e, root_f, "the root ignores time priority");

    // A fill changes the root even though the order count goes back to zero.
    let (root_g, events) = with(&[limit(1, 1, Side::Sell, 8, 2), limit(2, 2, Side::Buy, 8, 2)]);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Fill { qty: 2, .. })));
    let (engine_g, _) = engine_after(&{
        let mut c = base.clone();
        c.extend_from_slice(&[limit(1, 1, Side::Sell, 8, 2), limit(2, 2, Side::Buy, 8, 2)]);
        c
    });
    assert_eq!(engine_g.resting_orders(), 0);
    assert_ne!(root_g, root0, "the root ignores a fill's balance changes");

    // A deposit alone changes it; so does moving the same amount to another account.
    let deposit = |account| Command::Deposit {
        account,
        asset: USD,
        amount: 1,
    };
    let (root_h, _) = with(&[deposit(1)]);
    let (root_i, _) = with(&[deposit(2)]);
    assert_ne!(root_h, root0);
    assert_ne!(
        root_h, root_i,
        "the root ignores which account holds a balance"
    );

    // Locking (not moving) funds changes it: an order's reserve alone is state.
    let (root_j, _) = with(&[limit(3, 1, Side::Buy, 1, 1)]);
    assert_ne!(root_j, root0);

    // And the root is a function of the state: two ways to the same state, same root.
    let (root_k, _) = with(&[deposit(1), deposit(2)]);
    let (root_l, _) = with(&[deposit(2), deposit(1)]);
    assert_eq!(root_k, root_l);
}

/// The generator is not vacuous: over a fixed sample of streams the model sees every reject
/// reason the generator can reach, every cancel reason, fills with nonzero rebates, STP on
/// each mode, FOK fills, and modifies that keep and that lose priority.
#[test]
fn generator_reaches_every_outcome() {
    use engine::{CancelReason, RejectReason};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeMap;

    let mut runner = TestRunner::deterministic();
    let strategy = arb_case(160);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..200 {
        let (config, commands) = strategy.new_tree(&mut runner).unwrap().current();
        let mut model = Model::new(config);
        for command in &commands {
            let mut events = Vec::new();
            model.step(command, &mut events);
            for event in &events {
                let key = match event {
                    Event::Rejected { reason, .. } => format!("reject {}", reason.as_str()),
                    Event::Canceled { reason, .. } => format!("cancel {}", reason.as_str()),
                    Event::Fill {
                        maker_fee, market, ..
                    } if *maker_fee < 0 => {
                        format!("rebate fill in {market}")
                    }
                    Event::Fill { market, .. } => format!("fill in {market}"),
                    Event::Accepted { .. } => "accepted".to_string(),
                    Event::Modified { .. } => "modified".to_string(),
                    other => format!("perp {other:?}"),
                };
                *seen.entry(key).or_default() += 1;
            }
            if let Command::Place(order) = command {
                if order.tif == TimeInForce::Fok
                    && matches!(events.first(), Some(Event::Accepted { .. }))
                {
                    *seen.entry("fok filled".into()).or_default() += 1;
                }
                if order.price.is_none() && events.iter().any(|e| matches!(e, Event::Fill { .. })) {
                    *seen
                        .entry(format!("market {:?} fill", order.side))
                        .or_default() += 1;
                }
                if events.iter().any(|e| matches!(e, Event::Canceled { reason: CancelReason::Stp, account, oid, .. } if *account == order.account && *oid == order.oid)) {
                    *seen.entry(format!("stp taker {:?}", order.stp)).or_default() += 1;
                }
            }
            if let Command::Modify { .. } = command {
                if events.len() > 1 {
                    *seen.entry("modify matched".into()).or_default() += 1;
                }
            }
        }
    }
    let reasons = [
        RejectReason::UnknownMarket,
        RejectReason::UnknownAsset,
        RejectReason::UnknownAccount,
        RejectReason::UnknownOrder,
        RejectReason::MinQty,
        RejectReason::InvalidPrice,
        RejectReason::InvalidQty,
        RejectReason::InvalidTif,
        RejectReason::InsufficientBalance,
        RejectReason::PostOnlyWouldCross,
        RejectReason::FokUnfilled,
        RejectReason::DuplicateOid,
        RejectReason::TooManyOrders,
        RejectReason::BookFull,
        RejectReason::AlreadyExists,
        RejectReason::InvalidMarket,
        RejectReason::Overflow,
    ];
    let mut wanted: Vec<String> = reasons
        .iter()
        .map(|r| format!("reject {}", r.as_str()))
        .collect();
    for key in [
        "cancel user",
        "cancel unfilled",
        "cancel stp",
        "fill in 1",
        "fill in 3",
        "rebate fill in 4",
        "rebate fill in 2",
        "accepted",
        "modified",
        "fok filled",
        "market Buy fill",
        "market Sell fill",
        "stp taker CancelTaker",
        "stp taker CancelBoth",
        "modify matched",
    ] {
        wanted.push(key.to_string());
    }
    for key in wanted {
        assert!(
            seen.get(&key).copied().unwrap_or(0) > 0,
            "the generator never produced {key}; saw {seen:?}"
        );
    }
}

/// The fixed prologue itself is accepted silently and leaves the model and engine equal.
#[test]
fn prologue_is_clean() {
    let mut engine: Engine = Engine::new(EngineConfig::default());
    let mut model = Model::new(EngineConfig::default());
    let mut events = Vec::new();
    for command in prologue() {
        engine.step(&command, &mut events);
        model.step(&command, &mut Vec::new());
    }
    assert!(events.is_empty(), "{events:?}");
    same_state(&engine, &model, "prologue").unwrap();
}
