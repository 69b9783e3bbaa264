//! Arbitrary bytes into the market-data state machine next to a well-behaved subscriber,
//! with book changes published in between. Checks: no panic; output is whole messages; the
//! other subscriber's feed stays gap-free and its book equals the server's.
#![no_main]

use engine::{LevelChange, Side};
use gateway::client::{decode_server_message, L2Book};
use gateway::market_data::{MarketData, MarketDataConfig};
use gateway::wire::{self, *};
use libfuzzer_sys::fuzz_target;
use sequencer::Output;
use zerocopy::IntoBytes;

fn frames(bytes: &[u8]) -> Vec<gateway::client::ServerMessage> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < bytes.len() {
        let length = wire::next_frame(&bytes[at..]).expect("valid").expect("whole");
        out.push(decode_server_message(&bytes[at..at + length]).expect("decodable"));
        at += length;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut md = MarketData::new(
        MarketDataConfig { replay_messages: 8, ..MarketDataConfig::default() },
        [(0u32, vec![(Side::Buy, 10, 5)]), (1u32, Vec::new())],
    );
    let fuzzed = md.connect(0);
    let watcher = md.connect(0);
    let mut subscribe: Subscribe = blank(0);
    subscribe.market = 0.into();
    md.receive(watcher, subscribe.as_bytes(), 0);
    let mut book = L2Book::new(0);
    for (i, chunk) in data.chunks(11).enumerate() {
        md.receive(fuzzed, chunk, 0);
        let change = LevelChange {
            market: (i % 2) as u32,
            side: if i % 3 == 0 { Side::Buy } else { Side::Sell },
            price: 5 + (i % 7) as i64,
            lots: (i % 4) as i64,
        };
        md.on_output(&Output::Level { seq: i as u64 + 1, change }, 0);
        frames(md.pending_output(fuzzed));
        let n = md.pending_output(fuzzed).len();
        md.consume_output(fuzzed, n);
        let bytes = md.pending_output(watcher).to_vec();
        md.consume_output(watcher, bytes.len());
        for message in frames(&bytes) {
            book.apply(&message).expect("the watcher never sees a gap");
        }
    }
    let bytes = md.pending_output(watcher).to_vec();
    for message in frames(&bytes) {
        book.apply(&message).expect("the watcher never sees a gap");
    }
    let (bids, asks) = md.levels(0).expect("market 0");
    assert_eq!(bids, book.bids.iter().rev().map(|(&p, &l)| (p, l)).collect::<Vec<_>>());
    assert_eq!(asks, book.asks.iter().map(|(&p, &l)| (p, l)).collect::<Vec<_>>());
});
