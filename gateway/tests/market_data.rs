//! The market-data state machine on its own: snapshots, sequence numbers, replay inside and
//! outside the window, subscriptions, slow consumers.

use engine::{Event, LevelChange, Side};
use gateway::client::{decode_server_message, Applied, L2Book, ServerMessage};
use gateway::connections::ConnId;
use gateway::market_data::{MarketData, MarketDataConfig};
use gateway::wire::{self, *};
use sequencer::{ClientRef, Output};
use zerocopy::IntoBytes;

fn drain(md: &mut MarketData, id: ConnId) -> Vec<ServerMessage> {
    let bytes = md.pending_output(id).to_vec();
    md.consume_output(id, bytes.len());
    let mut messages = Vec::new();
    let mut at = 0;
    while let Ok(Some(length)) = wire::next_frame(&bytes[at..]) {
        messages.push(decode_server_message(&bytes[at..at + length]).expect("valid"));
        at += length;
    }
    messages
}

fn feed(replay_messages: usize) -> MarketData {
    MarketData::new(
        MarketDataConfig {
            replay_messages,
            max_pending_bytes: 4096,
            ..MarketDataConfig::default()
        },
        [
            (
                0,
                vec![
                    (Side::Buy, 99, 5),
                    (Side::Buy, 100, 1),
                    (Side::Sell, 101, 2),
                ],
            ),
            (1, Vec::new()),
        ],
    )
}

fn level(md: &mut MarketData, seq: u64, market: u32, side: Side, price: i64, lots: i64) {
    let change = LevelChange {
        market,
        side,
        price,
        lots,
    };
    md.on_output(&Output::Level { seq, change }, 0);
}

fn subscribe(md: &mut MarketData, id: ConnId, market: u32) {
    let mut message: Subscribe = blank(0);
    message.market = market.into();
    md.receive(id, message.as_bytes(), 0);
}

#[test]
fn a_snapshot_lists_levels_best_first_and_updates_follow_in_sequence() {
    let mut md = feed(16);
    let id = md.connect(0);
    subscribe(&mut md, id, 0);
    let messages = drain(&mut md, id);
    let ServerMessage::SnapshotBegin(begin) = messages[0] else {
        panic!("{messages:?}")
    };
    assert_eq!((begin.bid_levels.get(), begin.ask_levels.get()), (2, 1));
    assert_eq!(begin.market_seq.get(), 0);
    let levels: Vec<(u8, i64, i64)> = messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::SnapshotLevel(l) => Some((l.side, l.price.get(), l.lots.get())),
            _ => None,
        })
        .collect();
    assert_eq!(levels, [(0, 100, 1), (0, 99, 5), (1, 101, 2)]);
    level(&mut md, 7, 0, Side::Sell, 101, 0);
    let fill = Event::Fill {
        market: 0,
        taker_account: 1,
        taker_oid: 1,
        maker_account: 2,
        maker_oid: 2,
        taker_side: Side::Buy,
        price: 101,
        qty: 2,
        taker_fee: 0,
        maker_fee: 0,
        taker_left: 0,
        maker_left: 0,
    };
    let client = ClientRef {
        connection: 0,
        tag: 0,
    };
    md.on_output(
        &Output::Event {
            client,
            seq: 7,
            event: fill,
        },
        0,
    );
    // Market 1's changes are not sent to a market-0 subscriber.
    level(&mut md, 8, 1, Side::Buy, 5, 1);
    let mut book = L2Book::new(0);
    for message in &messages {
        book.apply(message).unwrap();
    }
    let updates = drain(&mut md, id);
    assert_eq!(updates.len(), 2);
    for message in &updates {
        assert_eq!(book.apply(message), Ok(Applied::Updated));
    }
    assert_eq!(book.market_seq, Some(2));
    assert!(book.asks.is_empty());
    assert_eq!(md.levels(0).unwrap(), (vec![(100, 1), (99, 5)], Vec::new()));
}

#[test]
fn replay_resends_from_the_window_and_falls_back_to_a_snapshot() {
    let mut md = feed(3);
    let id = md.connect(0);
    subscribe(&mut md, id, 0);
    drain(&mut md, id);
    for seq in 1..=5 {
        level(&mut md, seq, 0, Side::Buy, 90 + seq as i64, 1);
    }
    drain(&mut md, id);
    let mut replay: Replay = blank(0);
    replay.market = 0.into();
    replay.from_seq = 4.into();
    md.receive(id, replay.as_bytes(), 0);
    let again: Vec<u64> = drain(&mut md, id)
        .iter()
        .map(|m| match m {
            ServerMessage::LevelUpdate(u) => u.market_seq.get(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(again, [4, 5]);
    // Seq 2 is no longer kept (window of 3: seqs 3..=5): a snapshot answers.
    replay.from_seq = 2.into();
    md.receive(id, replay.as_bytes(), 0);
    let answer = drain(&mut md, id);
    assert!(matches!(answer[0], ServerMessage::SnapshotBegin(b) if b.market_seq.get() == 5));
}

#[test]
fn requests_for_unknown_or_unsubscribed_markets_are_refused() {
    let mut md = feed(16);
    let id = md.connect(0);
    subscribe(&mut md, id, 7);
    let mut snapshot: SnapshotRequest = blank(0);
    snapshot.market = 1.into();
    md.receive(id, snapshot.as_bytes(), 0);
    let codes: Vec<_> = drain(&mut md, id)
        .iter()
        .map(|m| match m {
            ServerMessage::Reject(r) => RejectCode::from_code(r.reason.get()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [RejectCode::UnknownMarket, RejectCode::NotSubscribed]
    );
    // Every market at once: one snapshot each.
    subscribe(&mut md, id, ALL_MARKETS);
    let begins = drain(&mut md, id)
        .iter()
        .filter(|m| matches!(m, ServerMessage::SnapshotBegin(_)))
        .count();
    assert_eq!(begins, 2);
}

#[test]
fn a_subscriber_that_does_not_read_is_dropped_and_others_are_not() {
    let mut md = feed(16);
    let slow = md.connect(0);
    let fast = md.connect(0);
    subscribe(&mut md, slow, 0);
    subscribe(&mut md, fast, 0);
    for seq in 1..=100 {
        level(&mut md, seq, 0, Side::Sell, 200 + seq as i64, 1);
        drain(&mut md, fast);
    }
    assert!(md.is_closing(slow), "4 KiB limit passed");
    assert!(matches!(
        drain(&mut md, slow).last(),
        Some(ServerMessage::Logout(l)) if LogoutReason::from_code(l.reason.get()) == Some(LogoutReason::SlowConsumer)
    ));
    assert!(!md.is_closing(fast));
    level(&mut md, 101, 0, Side::Sell, 999, 1);
    assert_eq!(drain(&mut md, fast).len(), 1);
}

/// Many subscribers that each stay under the per-connection limit but together pass the
/// port's limit: the one holding the most is dropped, one at a time, until the port is back
/// under it; a reader is never dropped.
#[test]
fn stuck_subscribers_together_are_held_to_the_ports_limit() {
    let mut md = MarketData::new(
        MarketDataConfig {
            max_pending_bytes: 4096,
            max_unsent_total_bytes: 6000,
            ..MarketDataConfig::default()
        },
        [(0, Vec::new())],
    );
    let fast = md.connect(0);
    subscribe(&mut md, fast, 0);
    drain(&mut md, fast);
    // Three stuck readers, the first subscribed before the others, so it always holds the
    // most.
    let stuck: Vec<ConnId> = (0..3).map(|_| md.connect(0)).collect();
    subscribe(&mut md, stuck[0], 0);
    for seq in 1..=10 {
        level(&mut md, seq, 0, Side::Sell, 200 + seq as i64, 1);
    }
    subscribe(&mut md, stuck[1], 0);
    subscribe(&mut md, stuck[2], 0);
    let mut seq = 10;
    while !md.is_closing(stuck[0]) {
        seq += 1;
        assert!(seq < 200, "the port's limit never applied");
        level(&mut md, seq, 0, Side::Sell, 200 + seq as i64, 1);
        drain(&mut md, fast);
    }
    let held: usize = stuck.iter().map(|&id| md.pending_output(id).len()).sum();
    assert!(
        md.pending_output(stuck[0]).len() < 4096,
        "dropped by the port's limit, not its own"
    );
    assert!(held <= 6000, "{held} bytes held after the drop");
    assert!(matches!(
        drain(&mut md, stuck[0]).last(),
        Some(ServerMessage::Logout(l)) if LogoutReason::from_code(l.reason.get()) == Some(LogoutReason::SlowConsumer)
    ));
    assert!(!md.is_closing(stuck[1]) && !md.is_closing(stuck[2]) && !md.is_closing(fast));
    // The next to pass the limit is dropped the same way; the reader goes on.
    while !md.is_closing(stuck[1]) && !md.is_closing(stuck[2]) {
        seq += 1;
        assert!(seq < 400, "the port's limit never applied again");
        level(&mut md, seq, 0, Side::Sell, 200 + seq as i64, 1);
        drain(&mut md, fast);
    }
    assert!(!md.is_closing(fast));
    level(&mut md, seq + 1, 0, Side::Sell, 999, 1);
    assert_eq!(drain(&mut md, fast).len(), 1);
}

/// A connection that is closing (it half-closed) with a large backlog counts toward the
/// port's limit: its backlog is what goes, not a reader's, and dropping it ends (no endless
/// re-close).
#[test]
fn a_closing_connections_backlog_goes_before_a_reader() {
    let mut md = MarketData::new(
        MarketDataConfig {
            max_pending_bytes: 4096,
            max_unsent_total_bytes: 3000,
            ..MarketDataConfig::default()
        },
        [(0, Vec::new())],
    );
    let fast = md.connect(0);
    let stuck = md.connect(0);
    subscribe(&mut md, fast, 0);
    subscribe(&mut md, stuck, 0);
    drain(&mut md, fast);
    let mut seq = 0;
    while md.pending_output(stuck).len() < 2800 {
        seq += 1;
        level(&mut md, seq, 0, Side::Sell, 200 + seq as i64, 1);
        drain(&mut md, fast);
    }
    md.close_after_flush(stuck);
    // The reader falls a little behind (its socket busy): together they pass the limit.
    for _ in 0..10 {
        seq += 1;
        level(&mut md, seq, 0, Side::Sell, 200 + seq as i64, 1);
        assert!(!md.is_closing(fast), "the reader is not dropped");
    }
    assert_eq!(drain(&mut md, fast).len(), 10);
    assert!(
        md.pending_output(stuck).len() < 100,
        "the closing connection's backlog went"
    );
}

#[test]
fn a_client_back_from_a_lost_connection_replays_what_it_missed_and_goes_on_live() {
    let mut md = feed(16);
    let first = md.connect(0);
    subscribe(&mut md, first, 0);
    let mut book = L2Book::new(0);
    for message in drain(&mut md, first) {
        book.apply(&message).unwrap();
    }
    level(&mut md, 1, 0, Side::Buy, 98, 3);
    for message in drain(&mut md, first) {
        book.apply(&message).unwrap();
    }
    md.disconnected(first);
    // Missed while away.
    level(&mut md, 2, 0, Side::Buy, 97, 1);
    level(&mut md, 3, 0, Side::Sell, 102, 4);
    let second = md.connect(0);
    let mut replay: Replay = blank(0);
    replay.market = 0.into();
    replay.from_seq = (book.market_seq.unwrap() + 1).into();
    md.receive(second, replay.as_bytes(), 0);
    level(&mut md, 4, 0, Side::Sell, 101, 0);
    for message in drain(&mut md, second) {
        assert!(
            !matches!(message, ServerMessage::SnapshotBegin(_)),
            "no snapshot needed"
        );
        assert_eq!(book.apply(&message), Ok(Applied::Updated));
    }
    assert_eq!(book.market_seq, Some(4));
    let (bids, asks) = md.levels(0).unwrap();
    assert_eq!(
        bids,
        book.bids
            .iter()
            .rev()
            .map(|(&p, &l)| (p, l))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        asks,
        book.asks.iter().map(|(&p, &l)| (p, l)).collect::<Vec<_>>()
    );
}

#[test]
fn a_replay_from_another_feed_epoch_gets_a_snapshot() {
    let mut md = MarketData::new(
        MarketDataConfig {
            feed_epoch: 0x1_2345_6789,
            ..MarketDataConfig::default()
        },
        [(0, Vec::new())],
    );
    level(&mut md, 1, 0, Side::Buy, 10, 1);
    let id = md.connect(0);
    let mut replay: Replay = blank(0);
    replay.market = 0.into();
    replay.from_seq = 1.into();
    replay.feed_epoch_low = 0x2345_6789.into();
    md.receive(id, replay.as_bytes(), 0);
    assert!(
        matches!(drain(&mut md, id)[0], ServerMessage::LevelUpdate(_)),
        "same epoch"
    );
    replay.feed_epoch_low = 7.into();
    md.receive(id, replay.as_bytes(), 0);
    assert!(
        matches!(drain(&mut md, id)[0], ServerMessage::SnapshotBegin(_)),
        "restarted"
    );
}

fn perp_event(md: &mut MarketData, seq: u64, event: Event) {
    let client = ClientRef {
        connection: 0,
        tag: 0,
    };
    md.on_output(&Output::Event { client, seq, event }, 0);
}

#[test]
fn mark_prices_and_funding_rates_are_sequenced_kept_for_replay_and_follow_snapshots() {
    let mut md = feed(16);
    let live = md.connect(0);
    subscribe(&mut md, live, 0);
    let mut book = L2Book::new(0);
    for message in drain(&mut md, live) {
        book.apply(&message).unwrap();
    }
    let index: i128 = -(5i128 << 64) - 9; // needs all 16 bytes
    perp_event(
        &mut md,
        3,
        Event::OraclePrice {
            market: 0,
            oracle: 100,
            mark: 101,
            premium_ppb: -250,
        },
    );
    level(&mut md, 4, 0, Side::Buy, 98, 2);
    perp_event(
        &mut md,
        5,
        Event::Funding {
            market: 0,
            rate_ppb: 40,
            index,
        },
    );
    // Another market's, and an unknown market's, go nowhere near this subscriber.
    perp_event(
        &mut md,
        6,
        Event::OraclePrice {
            market: 1,
            oracle: 7,
            mark: 7,
            premium_ppb: 0,
        },
    );
    perp_event(
        &mut md,
        6,
        Event::Funding {
            market: 9,
            rate_ppb: 1,
            index: 1,
        },
    );
    let live_messages = drain(&mut md, live);
    assert_eq!(live_messages.len(), 3);
    for message in &live_messages {
        assert_eq!(book.apply(message), Ok(Applied::Updated), "one market seq");
    }
    let ServerMessage::MarkPrice(mark) = live_messages[0] else {
        panic!("{live_messages:?}")
    };
    assert_eq!(
        (
            mark.market.get(),
            mark.market_seq.get(),
            mark.seq.get(),
            mark.oracle.get(),
            mark.mark.get(),
            mark.premium_ppb.get()
        ),
        (0, 1, 3, 100, 101, -250)
    );
    let ServerMessage::FundingRate(funding) = live_messages[2] else {
        panic!("{live_messages:?}")
    };
    assert_eq!(
        (
            funding.market_seq.get(),
            funding.seq.get(),
            funding.rate_ppb.get(),
            funding.index.get()
        ),
        (3, 5, 40, index)
    );
    assert_eq!(
        i128::from_le_bytes(funding.as_bytes()[48..64].try_into().unwrap()),
        index
    );
    assert_eq!(book.market_seq, Some(3));
    assert_eq!(book.mark.map(|m| m.mark.get()), Some(101));
    assert_eq!(book.funding.map(|f| f.index.get()), Some(index));

    // A later subscriber: the snapshot, then the latest mark and funding as first sent.
    let late = md.connect(0);
    subscribe(&mut md, late, 0);
    let snapshot = drain(&mut md, late);
    let n = snapshot.len();
    assert!(matches!(snapshot[n - 3], ServerMessage::SnapshotEnd(e) if e.market_seq.get() == 3));
    assert!(
        matches!(snapshot[n - 2], ServerMessage::MarkPrice(m) if m.as_bytes() == mark.as_bytes())
    );
    assert!(
        matches!(snapshot[n - 1], ServerMessage::FundingRate(f) if f.as_bytes() == funding.as_bytes())
    );
    let mut late_book = L2Book::new(0);
    let applied: Vec<_> = snapshot
        .iter()
        .map(|m| late_book.apply(m).unwrap())
        .collect();
    assert_eq!(
        &applied[n - 3..],
        [Applied::SnapshotDone, Applied::Stale, Applied::Stale]
    );
    assert_eq!(late_book.mark.map(|m| m.oracle.get()), Some(100));
    assert_eq!(late_book.funding.map(|f| f.rate_ppb.get()), Some(40));
    assert_eq!(late_book.bids, book.bids);

    // A replay resends them in place, as it does trades and updates.
    let mut replay: Replay = blank(0);
    replay.market = 0.into();
    replay.from_seq = 1.into();
    md.receive(late, replay.as_bytes(), 0);
    let again: Vec<(u8, u64)> = drain(&mut md, late)
        .iter()
        .map(|m| match m {
            ServerMessage::MarkPrice(m) => (MarkPrice::KIND, m.market_seq.get()),
            ServerMessage::LevelUpdate(u) => (LevelUpdate::KIND, u.market_seq.get()),
            ServerMessage::FundingRate(f) => (FundingRate::KIND, f.market_seq.get()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(again, [(205, 1), (203, 2), (206, 3)]);
    // An older mark (a replayed duplicate) does not replace the newer one.
    let newer = MarkPrice {
        market_seq: 9.into(),
        ..mark
    };
    let mut fresh_book = L2Book::new(0);
    fresh_book.mark = Some(newer);
    let _ = fresh_book.apply(&ServerMessage::MarkPrice(mark));
    assert_eq!(fresh_book.mark.map(|m| m.market_seq.get()), Some(9));
}

/// An engine with a spot market (0), a perp market with an oracle price (1) and one without
/// (2), and a resting bid in market 1.
fn engine_with_perps() -> engine::Engine {
    use engine::{Command, EngineConfig, MarginTier, MarketSpec, PerpSpec, MAX_MARGIN_TIERS};
    let mut engine = engine::Engine::new(EngineConfig {
        max_resting_orders: 64,
        max_open_orders_per_account: 8,
    });
    let mut events = Vec::new();
    let mut ok = |engine: &mut engine::Engine, command: Command| {
        events.clear();
        engine.step(&command, &mut events);
        assert!(
            !events.iter().any(|e| matches!(e, Event::Rejected { .. })),
            "{command:?}: {events:?}"
        );
    };
    ok(&mut engine, Command::CreateAsset { asset: 0 });
    ok(&mut engine, Command::CreateAsset { asset: 1 });
    ok(
        &mut engine,
        Command::CreateMarket(MarketSpec {
            market: 0,
            base: 0,
            quote: 1,
            base_units_per_lot: 1,
            quote_units_per_tick_lot: 1,
            min_lots: 1,
            max_price_ticks: 1000,
            maker_fee_bps: 0,
            taker_fee_bps: 0,
        }),
    );
    let mut tiers = [MarginTier::default(); MAX_MARGIN_TIERS];
    tiers[0] = MarginTier {
        notional_up_to: i64::MAX,
        imr_ppb: 100_000_000,
        mmr_ppb: 50_000_000,
    };
    for market in [1, 2] {
        ok(
            &mut engine,
            Command::CreatePerpMarket(Box::new(PerpSpec {
                market,
                collateral: 1,
                quote_units_per_tick_lot: 1,
                min_lots: 1,
                max_price_ticks: 1000,
                maker_fee_bps: 0,
                taker_fee_bps: 0,
                max_leverage: 10,
                tiers,
                tier_count: 1,
                open_interest_cap_lots: 1000,
                price_band_ppb: 500_000_000,
                interest_ppb: 0,
                funding_cap_ppb: 50_000_000,
                impact_notional: 100,
                liquidation_chunk_notional: 1_000_000,
                liquidation_fee_ppb: 10_000_000,
            })),
        );
    }
    let mut prices = [0; engine::MAX_ORACLE_SOURCES];
    prices[0] = 500;
    ok(
        &mut engine,
        Command::Oracle {
            market: 1,
            prices: Box::new(prices),
            count: 1,
        },
    );
    ok(
        &mut engine,
        Command::Deposit {
            account: 7,
            asset: 1,
            amount: 1_000_000,
        },
    );
    ok(
        &mut engine,
        Command::TransferCollateral {
            account: 7,
            amount: 1_000_000,
        },
    );
    ok(
        &mut engine,
        Command::Place(engine::NewOrder {
            account: 7,
            market: 1,
            oid: 1,
            side: Side::Buy,
            price: Some(490),
            qty: 3,
            tif: engine::TimeInForce::Gtc,
            stp: engine::SelfTradePrevention::CancelMaker,
            reduce_only: false,
        }),
    );
    engine
}

#[test]
fn a_feed_started_from_an_engine_carries_each_perp_markets_opening_mark() {
    let engine = engine_with_perps();
    let start = engine.perp_market(1).expect("perp market 1");
    assert_eq!(start.oracle, 500);
    let mut md = MarketData::from_engine(MarketDataConfig::default(), &engine);
    let id = md.connect(0);
    let mut all: Subscribe = blank(0);
    all.market = ALL_MARKETS.into();
    md.receive(id, all.as_bytes(), 0);
    let messages = drain(&mut md, id);
    let mut books = [L2Book::new(0), L2Book::new(1), L2Book::new(2)];
    for message in &messages {
        for book in books.iter_mut() {
            book.apply(message).expect("no gap");
        }
    }
    // The spot market and the perp market without an oracle price have no mark; market 1
    // starts its feed with one: market seq 1, global seq 0, the engine's oracle and mark.
    assert!(books[0].mark.is_none() && books[2].mark.is_none());
    assert_eq!(books[2].market_seq, Some(0));
    let mark = books[1]
        .mark
        .expect("the opening mark follows the snapshot");
    assert_eq!(
        (
            mark.market.get(),
            mark.market_seq.get(),
            mark.seq.get(),
            mark.oracle.get(),
            mark.mark.get(),
            mark.premium_ppb.get()
        ),
        (1, 1, 0, start.oracle, start.mark, 0)
    );
    assert_eq!(books[1].market_seq, Some(1));
    assert_eq!(
        books[1].bids.get(&490),
        Some(&3),
        "levels come from the engine"
    );
    let kinds: Vec<u8> = messages
        .iter()
        .map(|m| match m {
            ServerMessage::SnapshotBegin(_) => SnapshotBegin::KIND,
            ServerMessage::SnapshotLevel(_) => SnapshotLevel::KIND,
            ServerMessage::SnapshotEnd(_) => SnapshotEnd::KIND,
            ServerMessage::MarkPrice(_) => MarkPrice::KIND,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, [200, 202, 200, 201, 202, 205, 200, 202]);

    // The next oracle update is market seq 2 and replaces it; a replay from 1 has both.
    perp_event(
        &mut md,
        40,
        Event::OraclePrice {
            market: 1,
            oracle: 510,
            mark: 505,
            premium_ppb: 3,
        },
    );
    for message in drain(&mut md, id) {
        assert_eq!(books[1].apply(&message), Ok(Applied::Updated));
    }
    assert_eq!(
        books[1].mark.map(|m| (m.market_seq.get(), m.mark.get())),
        Some((2, 505))
    );
    let mut replay: Replay = blank(0);
    replay.market = 1.into();
    replay.from_seq = 1.into();
    md.receive(id, replay.as_bytes(), 0);
    let again: Vec<(u64, u64, i64)> = drain(&mut md, id)
        .iter()
        .map(|m| match m {
            ServerMessage::MarkPrice(m) => (m.market_seq.get(), m.seq.get(), m.mark.get()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(again, [(1, 0, start.mark), (2, 40, 505)]);
}
