//! The write-ahead log really written to LMDB and really recovered from, including damage.

use engine::{
    ArrayLadder, Command, Engine, EngineConfig, MarginTier, MarketSpec, NewOrder, PerpSpec,
    SelfTradePrevention, Side, TimeInForce, MAX_MARGIN_TIERS, MAX_ORACLE_SOURCES,
};
use sequencer::{recover, Block, ChainTip, Sequencer, SequencerConfig, Wal, WalError, WalOptions};

const CONFIG: EngineConfig = EngineConfig {
    max_resting_orders: 4096,
    max_open_orders_per_account: 1024,
};

/// A perp market (id 1) settled in asset 1, 10x, for the stream below.
fn perp_spec() -> PerpSpec {
    let mut tiers = [MarginTier::default(); MAX_MARGIN_TIERS];
    tiers[0] = MarginTier {
        notional_up_to: i64::MAX,
        imr_ppb: 100_000_000,
        mmr_ppb: 50_000_000,
    };
    PerpSpec {
        market: 1,
        collateral: 1,
        quote_units_per_tick_lot: 10,
        min_lots: 1,
        max_price_ticks: 100_000,
        maker_fee_bps: -1,
        taker_fee_bps: 3,
        max_leverage: 10,
        tiers,
        tier_count: 1,
        open_interest_cap_lots: 1_000_000,
        price_band_ppb: 200_000_000,
        interest_ppb: 10_000,
        funding_cap_ppb: 5_000_000,
        impact_notional: 100_000,
        liquidation_chunk_notional: 50_000,
        liquidation_fee_ppb: 5_000_000,
    }
}

fn oracle(price: i64) -> Command {
    let mut prices = [0; MAX_ORACLE_SOURCES];
    prices[..3].copy_from_slice(&[price - 1, price, price + 2]);
    Command::Oracle {
        market: 1,
        prices: Box::new(prices),
        count: 3,
    }
}

/// A deterministic stream: registry, deposits, then crossing orders, cancels and modifies in
/// a spot market and a perp market, with oracle moves (some liquidate) and funding.
fn workload(orders: u64) -> Vec<Command> {
    let mut commands = vec![
        Command::CreateAsset { asset: 0 },
        Command::CreateAsset { asset: 1 },
        Command::CreateMarket(MarketSpec {
            market: 0,
            base: 0,
            quote: 1,
            base_units_per_lot: 1_000,
            quote_units_per_tick_lot: 10,
            min_lots: 1,
            max_price_ticks: 100_000,
            maker_fee_bps: -1,
            taker_fee_bps: 3,
        }),
        Command::CreatePerpMarket(Box::new(perp_spec())),
        oracle(1_020),
    ];
    for account in 1..=8 {
        commands.push(Command::Deposit {
            account,
            asset: 0,
            amount: 1_000_000_000,
        });
        commands.push(Command::Deposit {
            account,
            asset: 1,
            amount: 1_000_000_000_000,
        });
        // Thin perp collateral for some accounts, so price moves liquidate them.
        commands.push(Command::TransferCollateral {
            account,
            amount: if account % 3 == 0 { 2_000 } else { 10_000_000 },
        });
    }
    let mut mid = 1_020i64;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for oid in 1..=orders {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let account = 1 + x % 8;
        commands.push(match x % 20 {
            2 | 12 => Command::Place(NewOrder {
                account,
                market: 1,
                oid,
                side: if x & 2 == 0 { Side::Buy } else { Side::Sell },
                price: Some(mid - 20 + (x >> 8) as i64 % 40),
                qty: 1 + (x >> 16) as i64 % 9,
                tif: TimeInForce::Gtc,
                stp: SelfTradePrevention::CancelMaker,
                reduce_only: x & 4 == 0 && x.is_multiple_of(3),
            }),
            3 => {
                mid = (mid + (x >> 24) as i64 % 121 - 60).clamp(880, 1_160);
                oracle(mid)
            }
            13 => Command::Funding { market: 1 },
            0 | 10 => Command::Cancel {
                account,
                market: 0,
                oid: oid.saturating_sub(3),
            },
            1 | 11 => Command::Modify {
                account,
                market: 0,
                oid: oid.saturating_sub(2),
                price: 1_000 + (x >> 8) as i64 % 40,
                qty: 1 + (x >> 16) as i64 % 9,
            },
            _ => Command::Place(NewOrder {
                account,
                market: 0,
                oid,
                side: if x & 1 == 0 { Side::Buy } else { Side::Sell },
                price: Some(1_000 + (x >> 8) as i64 % 40),
                qty: 1 + (x >> 16) as i64 % 9,
                tif: if x.is_multiple_of(7) {
                    TimeInForce::Ioc
                } else {
                    TimeInForce::Gtc
                },
                stp: SelfTradePrevention::CancelMaker,
                reduce_only: false,
            }),
        });
    }
    commands
}

fn run_directly(commands: &[Command]) -> [u8; 32] {
    let mut engine = Engine::<ArrayLadder>::new(CONFIG);
    let mut out = Vec::new();
    for command in commands {
        engine.step(command, &mut out);
    }
    engine.state_hash()
}

/// Sequences `commands` into blocks of `per_block` and appends them; returns the blocks.
fn write_log(wal: &Wal, commands: &[Command], per_block: u32) -> Vec<Block> {
    let mut sequencer = Sequencer::new(
        SequencerConfig {
            max_block_inputs: per_block,
            max_block_age_ns: u64::MAX,
        },
        ChainTip::GENESIS,
    );
    let mut blocks = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        sequencer.submit(i as u64, command.clone(), &mut blocks);
    }
    sequencer.flush(commands.len() as u64, &mut blocks);
    wal.append(&blocks).unwrap();
    blocks
}

fn open(dir: &std::path::Path) -> Result<Wal, WalError> {
    Wal::open(
        dir,
        WalOptions {
            map_size_bytes: 64 << 20,
            sync: true,
        },
    )
}

/// The recovery tests below only mean something for perps if their stream trades perps
/// and liquidates.
#[test]
fn the_stream_trades_perps_and_liquidates() {
    let mut engine = Engine::<ArrayLadder>::new(CONFIG);
    let (mut positions, mut liquidations, mut funding) = (0, 0, 0);
    let mut out = Vec::new();
    for command in &workload(2_000) {
        out.clear();
        engine.step(command, &mut out);
        for event in &out {
            match event {
                engine::Event::Position { .. } => positions += 1,
                engine::Event::Liquidation { .. } => liquidations += 1,
                engine::Event::Funding { .. } => funding += 1,
                _ => {}
            }
        }
    }
    assert!(
        positions > 50 && liquidations > 0 && funding > 0,
        "positions {positions}, liquidations {liquidations}, funding {funding}"
    );
    engine.check_invariants().unwrap();
}

#[test]
fn recovery_from_log_alone_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let commands = workload(2_000);
    {
        let wal = open(dir.path()).unwrap();
        write_log(&wal, &commands, 64);
    }
    let wal = open(dir.path()).unwrap();
    let recovered = recover(&wal, CONFIG).unwrap();
    assert_eq!(recovered.engine.state_hash(), run_directly(&commands));
    assert_eq!(recovered.tip.next_seq, commands.len() as u64 + 1);
    assert_eq!(recovered.snapshot_height, None);
    assert!(
        recovered.engine.resting_orders() > 0,
        "the workload leaves a book"
    );
}

#[test]
fn recovery_from_snapshot_plus_tail_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let commands = workload(2_000);
    let wal = open(dir.path()).unwrap();
    let blocks = write_log(&wal, &commands, 50);
    // Snapshot after block 10: state after its last input.
    let upto = blocks[9].last_seq() as usize;
    let mut engine = Engine::<ArrayLadder>::new(CONFIG);
    let mut out = Vec::new();
    for command in &commands[..upto] {
        engine.step(command, &mut out);
    }
    wal.put_snapshot(10, &blocks[9].hash, &engine.snapshot())
        .unwrap();
    drop(wal);
    let wal = open(dir.path()).unwrap();
    let recovered = recover(&wal, CONFIG).unwrap();
    assert_eq!(recovered.snapshot_height, Some(10));
    assert_eq!(recovered.replayed_blocks, blocks.len() as u64 - 10);
    assert_eq!(recovered.engine.state_hash(), run_directly(&commands));
    assert_eq!(recovered.tip.last_hash, blocks.last().unwrap().hash);
}

#[test]
fn a_damaged_block_is_an_error_naming_it_and_truncation_recovers_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let commands = workload(500);
    let wal = open(dir.path()).unwrap();
    let blocks = write_log(&wal, &commands, 40);
    let last = blocks.last().unwrap();
    let mut damaged = last.bytes.clone();
    damaged[70] ^= 0x10;
    wal.overwrite_block_bytes_for_test(last.height, &damaged)
        .unwrap();
    match recover(&wal, CONFIG) {
        Err(WalError::CorruptBlock { height, reason }) => {
            assert_eq!(height, last.height);
            assert!(reason.contains("checksum"), "{reason}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a damaged block was replayed"),
    }
    // The operator's way out: drop the damaged tail; the rest recovers to the state after
    // the previous block, exactly.
    assert_eq!(wal.truncate_after(last.height - 1).unwrap(), 1);
    let recovered = recover(&wal, CONFIG).unwrap();
    let kept = blocks[blocks.len() - 2].last_seq() as usize;
    assert_eq!(
        recovered.engine.state_hash(),
        run_directly(&commands[..kept])
    );
}

#[test]
fn a_block_that_does_not_link_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path()).unwrap();
    let blocks = write_log(&wal, &workload(100), 30);
    // A well-formed block with the right height but a wrong parent.
    let impostor = Block::seal(
        blocks.len() as u64 + 1,
        0,
        blocks.last().unwrap().last_seq() + 1,
        [7; 32],
        vec![Command::CreateAsset { asset: 99 }],
    );
    wal.append(std::slice::from_ref(&impostor)).unwrap();
    let error = recover(&wal, CONFIG).err().expect("must refuse");
    assert!(
        matches!(error, WalError::CorruptBlock { height, .. } if height == impostor.height),
        "{error}"
    );
    // Appends must continue the chain by height.
    let error = wal.append(&blocks[..1]).unwrap_err();
    assert!(matches!(error, WalError::OutOfOrder { .. }), "{error}");
}

#[test]
fn a_cut_data_file_is_detected_before_any_read() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path()).unwrap();
        write_log(&wal, &workload(3_000), 100);
    }
    let data = dir.path().join("data.mdb");
    let len = std::fs::metadata(&data).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    match open(dir.path()) {
        Err(WalError::Truncated {
            file_bytes,
            expected_bytes,
            ..
        }) => assert!(file_bytes < expected_bytes),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a cut log was opened"),
    }
}

#[test]
fn recovery_checks_recorded_state_roots() {
    let dir = tempfile::tempdir().unwrap();
    let commands = workload(400);
    let wal = open(dir.path()).unwrap();
    let mut sequencer = Sequencer::new(
        SequencerConfig {
            max_block_inputs: 25,
            max_block_age_ns: u64::MAX,
        },
        ChainTip::GENESIS,
    );
    let mut engine = Engine::<ArrayLadder>::new(CONFIG);
    let mut blocks = Vec::new();
    let mut roots = Vec::new();
    let mut out = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        engine.step(command, &mut out);
        sequencer.submit(i as u64, command.clone(), &mut blocks);
        if let Some(block) = blocks.last() {
            if roots.last().map(|(h, _)| *h) != Some(block.height) {
                roots.push((block.height, engine.commit()));
            }
        }
    }
    wal.append_with_roots(&blocks, &roots).unwrap();
    let recovered = recover(&wal, CONFIG).unwrap();
    assert_eq!(recovered.engine.state_hash(), roots.last().unwrap().1);
    // A recorded root that replay cannot reproduce is refused, naming the block.
    let (height, mut wrong) = roots[3];
    wrong[0] ^= 1;
    wal.append_with_roots(&[], &[(height, wrong)]).unwrap();
    match recover(&wal, CONFIG) {
        Err(WalError::RootMismatch { height: at, .. }) => assert_eq!(at, height),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a mismatching root was accepted"),
    }
}
