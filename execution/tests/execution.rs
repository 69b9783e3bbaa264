//! Execution of blocks of signed transactions: signed orders trade for their signers' accounts;
//! every way a proposer could act for someone or replay a transaction makes the block invalid;
//! feeders' prices become one oracle update with their median; the root covers nonces; two
//! nodes executing the same blocks agree; a block crossing a funding boundary funds every
//! perp market.

mod common;

use common::perp_spec;
use ed25519_dalek::SigningKey;
use engine::{
    Command, EngineConfig, Event, MarketSpec, PerpSpec, SelfTradePrevention, Side, TimeInForce,
};
use execution::{
    BlockError, BlockItem, ConsensusState, EvmGenesis, Execution, ExecutionConfig, Origin,
};
use mempool::{Mempool, MempoolConfig};
use transactions::{
    account_id_of, Action, NonceError, SignatureError, SignedTransaction, Transaction,
};

const CHAIN: [u8; 32] = [5; 32];
const T: u64 = 1_800_000_000_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn account(n: u8) -> u64 {
    account_id_of(&key(n).verifying_key().to_bytes())
}

fn sign(k: &SigningKey, nonce: u64, actions: Vec<Action>) -> SignedTransaction {
    Transaction {
        chain_id: CHAIN,
        signer: k.verifying_key().to_bytes(),
        nonce,
        actions,
    }
    .sign(k)
}

fn place(oid: u64, side: Side, price: i64, qty: i64) -> Action {
    Action::Place {
        market: 0,
        oid,
        side,
        price: Some(price),
        qty,
        tif: TimeInForce::Gtc,
        stp: SelfTradePrevention::CancelMaker,
        reduce_only: false,
    }
}

/// Spot market 0 (assets 1/2), funded accounts of keys 1 and 2; key 9 is the faucet,
/// keys 10..=12 the feeders; perp market 1 settled in asset 2; no funding.
fn chain() -> Execution {
    Execution::new(config(0), &genesis())
}

/// Key 9 is the faucet, keys 10..=12 the feeders; funding every `funding_interval_s`.
fn config(funding_interval_s: u64) -> ExecutionConfig {
    ExecutionConfig {
        chain_id: CHAIN,
        faucets: vec![key(9).verifying_key().to_bytes()],
        feeders: (10..=12)
            .map(|n| key(n).verifying_key().to_bytes())
            .collect(),
        engine: EngineConfig::default(),
        evm: Default::default(),
        funding_interval_s,
        core_gas_limit: execution::DEFAULT_CORE_GAS_LIMIT,
    }
}

/// Assets 1 and 2, spot market 0, perp market 1, deposits of keys 1 and 2.
fn genesis() -> Vec<Command> {
    let mut genesis = vec![
        Command::CreateAsset { asset: 1 },
        Command::CreateAsset { asset: 2 },
        Command::CreateMarket(MarketSpec {
            market: 0,
            base: 1,
            quote: 2,
            base_units_per_lot: 1,
            quote_units_per_tick_lot: 1,
            min_lots: 1,
            max_price_ticks: 1 << 20,
            maker_fee_bps: 0,
            taker_fee_bps: 0,
        }),
        Command::CreatePerpMarket(Box::new(PerpSpec {
            market: 1,
            collateral: 2,
            ..perp_spec()
        })),
    ];
    for n in [1, 2] {
        for asset in [1, 2] {
            genesis.push(Command::Deposit {
                account: account(n),
                asset,
                amount: 1_000_000,
            });
        }
    }
    genesis
}

/// Core-only blocks as lists of signed transactions (the API takes block items).
trait CoreBlocks {
    fn check(
        &self,
        time_ms: u64,
        txs: &[&SignedTransaction],
        signatures: &[Result<(), SignatureError>],
    ) -> Result<(), BlockError>;
    fn run_block(
        &mut self,
        time_ms: u64,
        txs: &[&SignedTransaction],
        out: impl FnMut(Origin, &Event),
    ) -> [u8; 32];
}

fn items(txs: &[&SignedTransaction]) -> Vec<BlockItem> {
    txs.iter()
        .map(|tx| BlockItem::Core((*tx).clone()))
        .collect()
}

impl CoreBlocks for Execution {
    fn check(
        &self,
        time_ms: u64,
        txs: &[&SignedTransaction],
        signatures: &[Result<(), SignatureError>],
    ) -> Result<(), BlockError> {
        self.validate_block(time_ms, &items(txs), signatures)
            .map(|_| ())
    }

    fn run_block(
        &mut self,
        time_ms: u64,
        txs: &[&SignedTransaction],
        out: impl FnMut(Origin, &Event),
    ) -> [u8; 32] {
        let items = items(txs);
        let signatures = vec![Ok(()); items.len()];
        let block = self
            .validate_block(time_ms, &items, &signatures)
            .expect("a valid block");
        let consensus = ConsensusState::genesis();
        self.execute_block(block, &consensus, out).unwrap().root
    }
}

fn ok(n: usize) -> Vec<Result<(), SignatureError>> {
    vec![Ok(()); n]
}

fn run(chain: &mut Execution, txs: &[&SignedTransaction]) -> Vec<(Origin, Event)> {
    chain.check(T, txs, &ok(txs.len())).expect("a valid block");
    let mut events = Vec::new();
    chain.run_block(T, txs, |origin, event| events.push((origin, *event)));
    events
}

#[test]
fn signed_orders_trade_for_their_signers() {
    let mut chain = chain();
    let maker = sign(&key(1), T, vec![place(1, Side::Sell, 100, 5)]);
    let taker = sign(
        &key(2),
        T,
        vec![place(1, Side::Buy, 100, 2), place(2, Side::Buy, 90, 1)],
    );
    let events = run(&mut chain, &[&maker, &taker]);
    let fill = events
        .iter()
        .find_map(|(origin, e)| match e {
            Event::Fill {
                taker_account,
                maker_account,
                qty,
                ..
            } => Some((*origin, *taker_account, *maker_account, *qty)),
            _ => None,
        })
        .expect("a fill");
    assert_eq!(
        fill,
        (
            Origin::Tx {
                index: 1,
                action: 0
            },
            account(2),
            account(1),
            2
        )
    );
    assert!(events.iter().any(|(o, e)| *o
        == Origin::Tx {
            index: 1,
            action: 1
        }
        && matches!(e, Event::Accepted { oid: 2, .. })));
}

#[test]
fn every_way_to_act_for_another_or_replay_is_an_invalid_block() {
    let mut chain = chain();
    let first = sign(&key(1), T, vec![place(1, Side::Sell, 100, 1)]);
    run(&mut chain, &[&first]);
    let fresh = sign(&key(1), T + 1, vec![place(2, Side::Sell, 100, 1)]);
    // A forged transaction: the mempool's signature check fails, the block is refused.
    let mut forged_bytes = sign(
        &key(1),
        T + 2,
        vec![Action::Withdraw {
            asset: 2,
            amount: 1,
        }],
    )
    .bytes()
    .to_vec();
    let last = forged_bytes.len() - 1;
    forged_bytes[last] ^= 1;
    let forged = SignedTransaction::decode(&forged_bytes).unwrap();
    let mut pool = Mempool::new(MempoolConfig::default());
    let signatures = pool.check_block_signatures(&[&fresh, &forged]);
    assert_eq!(
        chain.check(T, &[&fresh, &forged], &signatures),
        Err(BlockError::Signature {
            index: 1,
            error: SignatureError::BadSignature
        })
    );
    // A replay of an executed transaction, and one repeated within a block.
    assert_eq!(
        chain.check(T, &[&first], &ok(1)),
        Err(BlockError::Nonce {
            index: 0,
            error: NonceError::Used(T)
        })
    );
    assert!(matches!(
        chain.check(T, &[&fresh, &fresh], &ok(2)),
        Err(BlockError::Nonce { index: 1, .. })
    ));
    // Too old at the block's time.
    assert!(matches!(
        chain.check(T + 3 * 86_400_000, &[&fresh], &ok(1)),
        Err(BlockError::Nonce {
            index: 0,
            error: NonceError::Stale { .. }
        })
    ));
    // Another chain's transaction.
    let other = Transaction {
        chain_id: [6; 32],
        signer: key(1).verifying_key().to_bytes(),
        nonce: T + 5,
        actions: vec![Action::CancelAll { market: 0 }],
    }
    .sign(&key(1));
    assert_eq!(
        chain.check(T, &[&other], &ok(1)),
        Err(BlockError::WrongChain { index: 0 })
    );
    // A deposit by a non-faucet, an oracle price by a non-feeder.
    let deposit = sign(
        &key(1),
        T + 6,
        vec![Action::Deposit {
            account: account(1),
            asset: 2,
            amount: 1,
        }],
    );
    assert_eq!(
        chain.check(T, &[&deposit], &ok(1)),
        Err(BlockError::NotPermitted {
            index: 0,
            role: "faucet"
        })
    );
    let price = sign(
        &key(1),
        T + 7,
        vec![Action::OraclePrice {
            market: 1,
            price: 5,
        }],
    );
    assert!(matches!(
        chain.check(T, &[&price], &ok(1)),
        Err(BlockError::NotPermitted { .. })
    ));
    // Nothing changed: the fresh transaction is still valid alone.
    assert_eq!(chain.check(T, &[&fresh], &ok(1)), Ok(()));
}

#[test]
fn feeders_prices_become_one_oracle_update_with_their_median() {
    let mut chain = chain();
    let feeds: Vec<SignedTransaction> = [(10, 50_100), (11, 49_900), (12, 50_300)]
        .iter()
        .map(|&(n, price)| sign(&key(n), T, vec![Action::OraclePrice { market: 1, price }]))
        .collect();
    let refs: Vec<&SignedTransaction> = feeds.iter().collect();
    let events = run(&mut chain, &refs);
    let oracle: Vec<_> = events
        .iter()
        .filter_map(|(origin, e)| match e {
            Event::OraclePrice { oracle, .. } => Some((*origin, *oracle)),
            _ => None,
        })
        .collect();
    assert_eq!(oracle, vec![(Origin::Oracle(1), 50_100)]);
    // A second price from one feeder in the same block is refused.
    let again = sign(
        &key(10),
        T + 1,
        vec![Action::OraclePrice {
            market: 1,
            price: 1,
        }],
    );
    let twice = sign(
        &key(10),
        T + 2,
        vec![Action::OraclePrice {
            market: 1,
            price: 2,
        }],
    );
    assert_eq!(
        chain.check(T, &[&again, &twice], &ok(2)),
        Err(BlockError::DuplicateOracle {
            index: 1,
            market: 1
        })
    );
}

#[test]
fn the_faucet_funds_new_accounts() {
    let mut chain = chain();
    let newcomer = account(42);
    let deposit = sign(
        &key(9),
        T,
        vec![Action::Deposit {
            account: newcomer,
            asset: 2,
            amount: 500,
        }],
    );
    run(&mut chain, &[&deposit]);
    assert_eq!(
        chain.engine().balance(newcomer, 2).map(|b| b.total),
        Some(500)
    );
}

#[test]
fn the_root_covers_nonces_and_two_nodes_agree() {
    let mut a = chain();
    let mut b = chain();
    assert_eq!(a.root(), b.root());
    // Same engine effect (a cancel of nothing), different nonces: different roots.
    let cancel_a = sign(&key(1), T, vec![Action::CancelAll { market: 0 }]);
    let cancel_b = sign(&key(1), T + 1, vec![Action::CancelAll { market: 0 }]);
    let root_a = a.run_block(T, &[&cancel_a], |_, _| {});
    let root_b = b.run_block(T, &[&cancel_b], |_, _| {});
    assert_eq!(a.engine().state_hash(), b.engine().state_hash());
    assert_ne!(root_a, root_b);
    // The same blocks on two nodes: the same root after each.
    let mut c = chain();
    let mut d = chain();
    for round in 0..20u64 {
        let txs: Vec<SignedTransaction> = (1..=2u8)
            .map(|n| {
                let side = if n == 1 { Side::Sell } else { Side::Buy };
                sign(
                    &key(n),
                    T + round,
                    vec![place(round, side, 100 + (round % 3) as i64, 1)],
                )
            })
            .collect();
        let refs: Vec<&SignedTransaction> = txs.iter().collect();
        c.check(T, &refs, &ok(2)).unwrap();
        assert_eq!(
            c.run_block(T, &refs, |_, _| {}),
            d.run_block(T, &refs, |_, _| {})
        );
    }
}

/// A snapshot taken after some blocks restores to the same root, refuses damaged bytes, the
/// restored state executes the next blocks exactly as the original (roots, nonces), and an
/// image taken then encodes to the same bytes later.
#[test]
fn a_restored_snapshot_continues_exactly_as_the_original() {
    let mut original = chain();
    let block = |round: u64| -> Vec<SignedTransaction> {
        (1..=2u8)
            .map(|n| {
                let side = if n == 1 { Side::Sell } else { Side::Buy };
                let price = 100 + (round % 5) as i64;
                sign(&key(n), T + round, vec![place(round, side, price, 2)])
            })
            .collect()
    };
    for round in 0..30 {
        let txs = block(round);
        let refs: Vec<&SignedTransaction> = txs.iter().collect();
        run(&mut original, &refs);
    }
    let bytes = original.snapshot();
    let (image, root) = (original.image(), original.root());
    let config = config(0);
    let mut restored = Execution::restore(config.clone(), &bytes).expect("restores");
    assert_eq!(restored.root(), original.root());
    // A replayed nonce is still refused by the restored state.
    let replay = block(29);
    let refs: Vec<&SignedTransaction> = replay.iter().collect();
    assert!(restored.check(T, &refs, &ok(2)).is_err());
    for round in 30..40 {
        let txs = block(round);
        let refs: Vec<&SignedTransaction> = txs.iter().collect();
        restored.check(T, &refs, &ok(2)).expect("valid");
        assert_eq!(
            restored.run_block(T, &refs, |_, _| {}),
            original.run_block(T, &refs, |_, _| {}),
            "round {round}"
        );
    }
    // An image taken with the snapshot and encoded after ten more blocks (on another
    // thread, as a validator's writer does) gives the snapshot's bytes, hence its root.
    assert_ne!(original.root(), root);
    let encoded = std::thread::spawn(move || image.encode()).join().unwrap();
    assert_eq!(encoded, bytes);
    // Damaged bytes are refused, not half-restored.
    assert!(Execution::restore(config.clone(), &bytes[..bytes.len() - 1]).is_err());
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Execution::restore(config.clone(), &longer).is_err());
    let mut magic = bytes;
    magic[0] ^= 1;
    assert!(Execution::restore(config, &magic).is_err());
}

/// The funding tests' interval: an hour.
const HOUR_S: u64 = 3_600;
const HOUR_MS: u64 = HOUR_S * 1_000;
/// The funding tests' perp markets' interest per interval: with an empty book (premium 0)
/// it is the funding rate.
const INTEREST_PPB: i32 = 100_000;
/// The feeders' prices of perp markets 1 and 7 in every funding test.
const PRICE_1: i64 = 50_000;
const PRICE_7: i64 = 2_000;

/// [`config`] with the genesis time `T` (an hour boundary: `T` is a multiple of `HOUR_MS`).
fn funding_config(funding_interval_s: u64) -> ExecutionConfig {
    ExecutionConfig {
        evm: EvmGenesis {
            timestamp: T / 1_000,
            ..EvmGenesis::default()
        },
        ..config(funding_interval_s)
    }
}

/// [`genesis`] with [`INTEREST_PPB`] on perp market 1 and a second perp market, 7,
/// registered before it (funding goes by market id, not registration order).
fn funding_chain(funding_interval_s: u64) -> Execution {
    let mut genesis = genesis();
    for command in &mut genesis {
        if let Command::CreatePerpMarket(spec) = command {
            spec.interest_ppb = INTEREST_PPB;
        }
    }
    let seven = PerpSpec {
        market: 7,
        interest_ppb: INTEREST_PPB,
        ..perp_spec()
    };
    genesis.insert(2, Command::CreatePerpMarket(Box::new(seven)));
    Execution::new(funding_config(funding_interval_s), &genesis)
}

/// Each feeder's prices of markets 1 and 7, signed with nonce `time_ms`.
fn prices(time_ms: u64) -> Vec<SignedTransaction> {
    let actions = vec![
        Action::OraclePrice {
            market: 1,
            price: PRICE_1,
        },
        Action::OraclePrice {
            market: 7,
            price: PRICE_7,
        },
    ];
    (10..=12)
        .map(|n| sign(&key(n), time_ms, actions.clone()))
        .collect()
}

/// Validates and executes `txs` as a block at `time_ms`: its events and the root after it.
fn block_at(
    chain: &mut Execution,
    time_ms: u64,
    txs: &[SignedTransaction],
) -> (Vec<(Origin, Event)>, [u8; 32]) {
    let refs: Vec<&SignedTransaction> = txs.iter().collect();
    let mut events = Vec::new();
    let root = chain.run_block(time_ms, &refs, |origin, event| {
        events.push((origin, *event))
    });
    (events, root)
}

/// The events of a block's fundings.
fn fundings(events: &[(Origin, Event)]) -> Vec<(Origin, Event)> {
    events
        .iter()
        .filter(|(origin, _)| matches!(origin, Origin::Funding(_)))
        .copied()
        .collect()
}

/// The markets a block funded, in order.
fn funded(events: &[(Origin, Event)]) -> Vec<Origin> {
    fundings(events).iter().map(|(origin, _)| *origin).collect()
}

#[test]
fn a_block_crossing_a_funding_boundary_funds_every_perp_market_in_id_order() {
    let mut chain = funding_chain(HOUR_S);
    // Block 1, in the genesis hour: oracle updates, no funding.
    let (events, _) = block_at(&mut chain, T + 1_000, &prices(T + 1_000));
    assert!(events
        .iter()
        .any(|(origin, _)| *origin == Origin::Oracle(7)));
    assert_eq!(fundings(&events), []);
    // Block 2, exactly at the next hour: after the oracle updates, one funding per perp
    // market (not the spot market 0), by market id.
    let (events, _) = block_at(&mut chain, T + HOUR_MS, &prices(T + HOUR_MS));
    let index = |price: i64| INTEREST_PPB as i128 * price as i128;
    assert_eq!(
        fundings(&events),
        [
            (
                Origin::Funding(1),
                Event::Funding {
                    market: 1,
                    rate_ppb: INTEREST_PPB as i64,
                    index: index(PRICE_1)
                }
            ),
            (
                Origin::Funding(7),
                Event::Funding {
                    market: 7,
                    rate_ppb: INTEREST_PPB as i64,
                    index: index(PRICE_7)
                }
            ),
        ]
    );
    let last_oracle = events
        .iter()
        .rposition(|(origin, _)| matches!(origin, Origin::Oracle(_)))
        .expect("oracle updates");
    let first_funding = events
        .iter()
        .position(|(origin, _)| matches!(origin, Origin::Funding(_)))
        .expect("fundings");
    assert!(last_oracle < first_funding);
    // Block 3, later in the same hour: none.
    let (events, _) = block_at(&mut chain, T + 2 * HOUR_MS - 1, &[]);
    assert_eq!(funded(&events), []);
    // Block 4, five hours on: still one funding per market.
    let (events, _) = block_at(&mut chain, T + 6 * HOUR_MS + 1, &[]);
    assert_eq!(funded(&events), [Origin::Funding(1), Origin::Funding(7)]);
    // Without a funding interval, nothing funds.
    let mut never = funding_chain(0);
    for time in [T + 1_000, T + HOUR_MS, T + 6 * HOUR_MS + 1] {
        let (events, _) = block_at(&mut never, time, &prices(time));
        assert_eq!(funded(&events), []);
    }
}

#[test]
fn two_executions_of_the_same_blocks_fund_alike() {
    let times = [
        T + 1_000,
        T + HOUR_MS + 5,
        T + HOUR_MS + 6,
        T + 3 * HOUR_MS,
        T + 3 * HOUR_MS + 7,
    ];
    let mut a = funding_chain(HOUR_S);
    let mut b = funding_chain(HOUR_S);
    let mut never = funding_chain(0);
    let mut fundings_seen = 0;
    for time in times {
        let txs = prices(time);
        let (events_a, root_a) = block_at(&mut a, time, &txs);
        let (events_b, root_b) = block_at(&mut b, time, &txs);
        block_at(&mut never, time, &txs);
        assert_eq!((events_a.clone(), root_a), (events_b, root_b), "at {time}");
        assert_eq!(a.roots(), b.roots());
        fundings_seen += fundings(&events_a).len();
    }
    assert_eq!(fundings_seen, 4, "two crossings, two perp markets");
    // The fundings are in the engine state the roots cover.
    assert_ne!(a.engine().state_hash(), never.engine().state_hash());
}

#[test]
fn the_funding_interval_is_bound_into_the_root() {
    let mut hourly = funding_chain(HOUR_S);
    let mut daily = funding_chain(24 * HOUR_S);
    let mut never = funding_chain(0);
    let (h, d, n) = (hourly.roots(), daily.roots(), never.roots());
    assert_eq!((h.core, h.evm, h.queue), (d.core, d.evm, d.queue));
    assert_eq!((h.core, h.evm, h.queue), (n.core, n.evm, n.queue));
    assert_ne!(h.chain, d.chain);
    assert_ne!(h.chain, n.chain);
    assert_ne!(d.chain, n.chain);
    assert_ne!(hourly.root(), daily.root());
    // A snapshot restored with another interval is not the state it was taken of.
    let bytes = hourly.snapshot();
    let mut wrong = Execution::restore(funding_config(24 * HOUR_S), &bytes).expect("restores");
    assert_ne!(wrong.root(), hourly.root());
}

#[test]
fn a_snapshot_restored_mid_interval_funds_at_the_same_block() {
    let mut original = funding_chain(HOUR_S);
    block_at(&mut original, T + 1_000, &prices(T + 1_000));
    let bytes = original.snapshot();
    let mut restored = Execution::restore(funding_config(HOUR_S), &bytes).expect("restores");
    assert_eq!(restored.root(), original.root());
    // The rest of the hour, then the block that crosses into the next one.
    let blocks = [
        (T + 2_000, 0),
        (T + HOUR_MS + 3_000, 2),
        (T + HOUR_MS + 4_000, 0),
    ];
    for (time, expected_fundings) in blocks {
        let txs = prices(time);
        let (events, root) = block_at(&mut original, time, &txs);
        let (restored_events, restored_root) = block_at(&mut restored, time, &txs);
        assert_eq!(fundings(&events).len(), expected_fundings, "at {time}");
        assert_eq!(restored_events, events, "at {time}");
        assert_eq!(restored_root, root, "at {time}");
    }
}
