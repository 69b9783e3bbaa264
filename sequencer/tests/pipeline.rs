//! The threaded pipeline on a real LMDB log: results, commitment levels, backpressure, recovery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{
    ArrayLadder, Command, Engine, EngineConfig, Event, MarketSpec, NewOrder, SelfTradePrevention,
    Side, TimeInForce,
};
use sequencer::{
    recover, ClientRef, Output, Pipeline, PipelineConfig, SequencerConfig, StageWaits, Submission,
    Wait, Wal, WalOptions,
};

const CONFIG: EngineConfig = EngineConfig {
    max_resting_orders: 8192,
    max_open_orders_per_account: 4096,
};

fn workload(orders: u64) -> Vec<Command> {
    let mut commands = vec![
        Command::CreateAsset { asset: 0 },
        Command::CreateAsset { asset: 1 },
        Command::CreateMarket(MarketSpec {
            market: 0,
            base: 0,
            quote: 1,
            base_units_per_lot: 100,
            quote_units_per_tick_lot: 1,
            min_lots: 1,
            max_price_ticks: 10_000,
            maker_fee_bps: 0,
            taker_fee_bps: 2,
        }),
    ];
    for account in 1..=4 {
        for asset in 0..2 {
            commands.push(Command::Deposit {
                account,
                asset,
                amount: 1 << 40,
            });
        }
    }
    for oid in 1..=orders {
        let account = 1 + oid % 4;
        commands.push(Command::Place(NewOrder {
            account,
            market: 0,
            oid,
            side: if oid % 2 == 0 { Side::Buy } else { Side::Sell },
            price: Some(500 + (oid * 7919 % 21) as i64),
            qty: 1 + (oid % 5) as i64,
            tif: TimeInForce::Gtc,
            stp: SelfTradePrevention::CancelMaker,
            reduce_only: false,
        }));
    }
    commands
}

fn direct(commands: &[Command]) -> (Vec<Vec<Event>>, [u8; 32]) {
    let mut engine = Engine::<ArrayLadder>::new(CONFIG);
    let mut all = Vec::new();
    for command in commands {
        let mut out = Vec::new();
        engine.step(command, &mut out);
        all.push(out);
    }
    (all, engine.state_hash())
}

/// The markets the workload creates.
fn market_ids(commands: &[Command]) -> Vec<u32> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::CreateMarket(spec) => Some(spec.market),
            _ => None,
        })
        .collect()
}

fn config(ring_capacity: usize, waits: StageWaits) -> PipelineConfig {
    PipelineConfig {
        blocks: SequencerConfig {
            max_block_inputs: 64,
            max_block_age_ns: 1_000_000,
        },
        ring_capacity,
        snapshot_every_blocks: 5,
        waits,
        pin_threads: false,
        level_changes: true,
        inline_sequencer: false,
        fused_engine: false,
    }
}

/// The same with the sequencer on the submitting thread.
fn inline(config: PipelineConfig) -> PipelineConfig {
    PipelineConfig {
        inline_sequencer: true,
        ..config
    }
}

/// The same with the sequencer and the engine on the submitting thread.
fn fused(config: PipelineConfig) -> PipelineConfig {
    PipelineConfig {
        inline_sequencer: true,
        fused_engine: true,
        ..config
    }
}

fn open(dir: &std::path::Path) -> Wal {
    Wal::open(
        dir,
        WalOptions {
            map_size_bytes: 256 << 20,
            sync: true,
        },
    )
    .unwrap()
}

/// Submits everything (retrying on backpressure), waits for every Finalized notice, shuts down.
fn run_pipeline(
    dir: &std::path::Path,
    commands: &[Command],
    pipeline_config: PipelineConfig,
) -> (Vec<Output>, Engine<ArrayLadder>, u64) {
    let wal = open(dir);
    let recovered = recover(&wal, CONFIG).unwrap();
    let mut pipeline = Pipeline::start(recovered, wal, pipeline_config, Arc::new(|| {}));
    let mut outputs = Vec::new();
    let mut refused = 0;
    for (index, command) in commands.iter().enumerate() {
        let mut submission = Submission {
            client: ClientRef {
                connection: 1,
                tag: index as u64,
            },
            command: command.clone(),
            received_ns: pipeline.now_ns(),
        };
        loop {
            match pipeline.try_submit(submission) {
                Ok(()) => break,
                Err(back) => {
                    refused += 1;
                    submission = back;
                    while let Some(output) = pipeline.poll_output() {
                        outputs.push(output);
                    }
                    pipeline.tick();
                    std::thread::yield_now();
                }
            }
        }
    }
    let mut finalized = outputs
        .iter()
        .filter(|output| matches!(output, Output::Finalized { .. }))
        .count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while finalized < commands.len() && Instant::now() < deadline {
        match pipeline.poll_output() {
            Some(output) => {
                finalized += matches!(output, Output::Finalized { .. }) as usize;
                outputs.push(output);
            }
            None => {
                pipeline.tick();
                std::thread::sleep(Duration::from_micros(100))
            }
        }
    }
    let (engine, rest) = pipeline.shutdown();
    outputs.extend(rest);
    (outputs, engine, refused)
}

/// The L2 book a market-data client would build from the `Level` outputs must equal the
/// engine's own aggregated depth.
fn check_levels(outputs: &[Output], engine: &Engine<ArrayLadder>, markets: &[u32]) {
    let mut mirror = std::collections::BTreeMap::new();
    let mut last_seq = 0;
    for output in outputs {
        if let Output::Level { seq, change } = *output {
            assert!(seq >= last_seq, "level changes arrive in input order");
            last_seq = seq;
            let key = (change.market, change.side, change.price);
            if change.lots == 0 {
                mirror.remove(&key);
            } else {
                mirror.insert(key, change.lots);
            }
        }
    }
    assert!(!mirror.is_empty(), "the workload leaves orders resting");
    let mut depth = std::collections::BTreeMap::new();
    for &market in markets {
        for side in [engine::Side::Buy, engine::Side::Sell] {
            let mut levels = Vec::new();
            engine.depth(market, side, usize::MAX, &mut levels);
            for (price, lots) in levels {
                depth.insert((market, side, price), lots);
            }
        }
    }
    assert_eq!(mirror, depth, "L2 from level outputs != engine depth");
}

fn check_outputs(commands: &[Command], outputs: &[Output]) {
    let (expected, _) = direct(commands);
    let mut events: Vec<Vec<Event>> = vec![Vec::new(); commands.len()];
    let mut sequenced = vec![false; commands.len()];
    let mut finalized = vec![false; commands.len()];
    for output in outputs {
        match *output {
            Output::Event { client, seq, event } => {
                assert_eq!(
                    seq,
                    client.tag + 1,
                    "inputs are numbered in submission order"
                );
                assert!(
                    !sequenced[client.tag as usize],
                    "event after its Sequenced notice"
                );
                events[client.tag as usize].push(event);
            }
            Output::Sequenced { client, times, .. } => {
                assert!(times.received_ns <= times.sequenced_ns);
                assert!(times.sequenced_ns <= times.executed_ns);
                assert!(times.executed_ns <= times.published_ns);
                sequenced[client.tag as usize] = true;
            }
            Output::Finalized { client, .. } => {
                assert!(sequenced[client.tag as usize], "Finalized before Sequenced");
                finalized[client.tag as usize] = true;
            }
            Output::BlockDurable { .. } | Output::BlockExecuted { .. } | Output::Level { .. } => {}
            Output::Call { .. } => panic!("the pipeline makes no co-processor calls"),
            Output::Fatal(ref why) => panic!("pipeline failed: {why}"),
        }
    }
    assert_eq!(events, expected, "pipeline events differ from a direct run");
    assert!(sequenced.iter().all(|&s| s) && finalized.iter().all(|&f| f));
}

#[test]
fn pipeline_results_match_a_direct_run_and_recovery_agrees() {
    results_match_a_direct_run(config(1024, StageWaits::ALL_PARK));
}

#[test]
fn an_inline_sequencer_gives_the_same_results() {
    results_match_a_direct_run(inline(config(1024, StageWaits::ALL_PARK)));
}

#[test]
fn a_fused_engine_gives_the_same_results() {
    results_match_a_direct_run(fused(config(1024, StageWaits::ALL_PARK)));
}

fn results_match_a_direct_run(pipeline_config: PipelineConfig) {
    let dir = tempfile::tempdir().unwrap();
    let commands = workload(3_000);
    let (outputs, engine, _) = run_pipeline(dir.path(), &commands, pipeline_config);
    check_outputs(&commands, &outputs);
    check_levels(&outputs, &engine, &market_ids(&commands));
    let (_, hash) = direct(&commands);
    assert_eq!(engine.state_hash(), hash);
    let wal = open(dir.path());
    let recovered = recover(&wal, CONFIG).unwrap();
    assert!(
        recovered.snapshot_height.is_some(),
        "snapshots were taken every 5 blocks"
    );
    assert_eq!(recovered.engine.state_hash(), hash);
    assert_eq!(recovered.tip.next_seq, commands.len() as u64 + 1);
}

#[test]
fn a_full_input_ring_refuses_and_loses_nothing_with_a_spinning_engine() {
    let commands = workload(2_000);
    let waits = StageWaits {
        engine: Wait::Spin,
        ..StageWaits::ALL_PARK
    };
    for pipeline_config in [
        config(4, waits),
        inline(config(4, waits)),
        fused(config(4, waits)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (outputs, engine, refused) = run_pipeline(dir.path(), &commands, pipeline_config);
        assert!(
            refused > 0,
            "a 4-slot ring under a tight loop must push back"
        );
        check_outputs(&commands, &outputs);
        assert_eq!(engine.state_hash(), direct(&commands).1);
    }
}

#[test]
fn restarting_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let commands = workload(1_000);
    let (first, second) = commands.split_at(600);
    run_pipeline(dir.path(), first, config(256, StageWaits::ALL_PARK));
    // The second run numbers inline: the chain does not care where the sequencer runs.
    let (outputs, engine, _) = run_pipeline(
        dir.path(),
        second,
        inline(config(256, StageWaits::ALL_PARK)),
    );
    let first_seq = outputs
        .iter()
        .find_map(|output| match output {
            Output::Sequenced { seq, .. } => Some(*seq),
            _ => None,
        })
        .unwrap();
    assert_eq!(first_seq, 601, "numbering continues after the restart");
    assert_eq!(engine.state_hash(), direct(&commands).1);
}
