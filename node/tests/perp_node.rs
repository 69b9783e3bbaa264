//! Perpetual futures on a running `nexus pipeline` with the shipped default configuration (its
//! genesis has BTC-PERP, collateral moved in, and an opening oracle price): orders through
//! the JSON Lines port open positions, an oracle line moves the mark, and bad perp lines get
//! typed rejects while the node keeps serving.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::start;

/// The embedded default configuration, with loopback port 0 and a temporary data folder.
fn default_config(dir: &Path) -> PathBuf {
    config_with_funding(dir, 3600)
}

/// The same with funding every `interval_s` seconds.
fn config_with_funding(dir: &Path, interval_s: u64) -> PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/nexus.default.toml"))
        .unwrap()
        // `nexus pipeline` takes unsigned lines for any account: the default genesis's two
        // development accounts are called 1 and 2 here.
        .replace("4026915798854129718", "1")
        .replace("4651036692225299837", "2")
        .replace("127.0.0.1:7070", "127.0.0.1:0")
        .replace("127.0.0.1:7071", "127.0.0.1:0")
        .replace("127.0.0.1:7072", "127.0.0.1:0")
        .replace(
            "funding_interval_s = 3600",
            &format!("funding_interval_s = {interval_s}"),
        )
        .replace(
            "data_dir = \"nexus-data\"",
            &format!("data_dir = \"{}\"", dir.join("data").display()),
        );
    let path = dir.join("node.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Reads replies until every line in `lines` is done: `finalized`, or refused before it was
/// sequenced (`rejected` or `error` without a `seq`).
fn replies(reader: &mut BufReader<TcpStream>, lines: u64) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut done = vec![false; lines as usize + 1];
    while done[1..].iter().any(|d| !d) {
        let mut text = String::new();
        if reader.read_line(&mut text).is_err() {
            panic!("no more replies after {seen:?}");
        }
        let value: Value = serde_json::from_str(&text).unwrap();
        let line = value["line"].as_u64().unwrap_or(0) as usize;
        let terminal = value["ev"] == "finalized"
            || ((value["ev"] == "rejected" || value["ev"] == "error") && value["seq"].is_null());
        if terminal && line < done.len() {
            done[line] = true;
        }
        seen.push(value);
    }
    seen
}

#[test]
fn perp_orders_open_positions_on_a_default_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&default_config(dir.path()));
    let stream = TcpStream::connect(("127.0.0.1", node.address("listen").port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let lines = [
        r#"{"op":"order","account":1,"market":"BTC-PERP","oid":1,"side":"sell","price":"50000","qty":"0.5"}"#,
        r#"{"op":"order","account":2,"market":"BTC-PERP","oid":1,"side":"buy","price":"50000","qty":"0.2"}"#,
        // Outside the 10% band around the 50000 oracle.
        r#"{"op":"order","account":2,"market":"BTC-PERP","oid":2,"side":"buy","price":"60000","qty":"0.1"}"#,
        // Too much for account 2's 1,000,000 USD of collateral at 20x: 500 BTC is 25M.
        r#"{"op":"order","account":2,"market":"BTC-PERP","oid":3,"side":"buy","price":"50000","qty":"500"}"#,
        r#"{"op":"oracle","market":"BTC-PERP","prices":["50100","50050","49990"]}"#,
        r#"{"op":"leverage","account":2,"market":"BTC-PERP","leverage":500}"#,
    ];
    for line in lines {
        writer.write_all(line.as_bytes()).unwrap();
        writer.write_all(b"\n").unwrap();
    }
    let got = replies(&mut reader, lines.len() as u64);
    let all: Vec<Vec<Value>> = (1..=lines.len() as u64)
        .map(|line| got.iter().filter(|v| v["line"] == line).cloned().collect())
        .collect();
    let positions: Vec<(&Value, &Value, &Value)> = all[1]
        .iter()
        .filter(|v| v["ev"] == "position")
        .map(|v| (&v["account"], &v["size"], &v["open_notional"]))
        .collect();
    assert_eq!(positions.len(), 2, "{:?}", all[1]);
    assert_eq!(positions[0].1, "0.2", "the buyer is long 0.2: {:?}", all[1]);
    assert_eq!(
        positions[1].1, "-0.2",
        "the seller is short 0.2: {:?}",
        all[1]
    );
    assert_eq!(positions[0].2, "10000", "0.2 BTC at 50000: {:?}", all[1]);
    let reason = |replies: &[Value]| {
        replies
            .iter()
            .find(|v| v["ev"] == "rejected")
            .map(|v| v["reason"].as_str().unwrap().to_string())
    };
    assert_eq!(reason(&all[2]).as_deref(), Some("price_band"));
    assert_eq!(reason(&all[3]).as_deref(), Some("insufficient_margin"));
    // The margin refusal says what the order needed and what was free (the engine's
    // scenarios check the arithmetic; here: the fields, in USD, needed above available).
    let refusal = all[3].iter().find(|v| v["ev"] == "rejected").unwrap();
    assert_eq!(refusal["asset"], "USD", "{refusal}");
    let amount = |field: &str| -> f64 { refusal[field].as_str().unwrap().parse().unwrap() };
    assert!(amount("needed") > amount("available"), "{refusal}");
    assert!(amount("available") > 990_000.0 && amount("available") <= 1_000_000.0);
    let oracle = all[4].iter().find(|v| v["ev"] == "oracle").expect("oracle");
    assert_eq!(oracle["price"], "50050", "median of three sources");
    assert_eq!(reason(&all[5]).as_deref(), Some("invalid_leverage"));

    // Positions from the current state: account 2 is long 0.2 at 50000, marked at the
    // oracle's 50050 (one sample: the mark is the median of oracle, book mid, last trade).
    writer
        .write_all(b"{\"op\":\"positions\",\"account\":2}\n")
        .unwrap();
    let mut text = String::new();
    reader.read_line(&mut text).unwrap();
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["ev"], "positions", "{answer}");
    let position = &answer["positions"][0];
    assert_eq!(position["market"], "BTC-PERP", "{answer}");
    assert_eq!(position["size"], "0.2");
    assert_eq!(position["entry_price"], "50000");
    assert_eq!(position["margin_mode"], "cross");
    let mark: f64 = position["mark"].as_str().unwrap().parse().unwrap();
    let pnl: f64 = position["unrealized_pnl"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pnl, (mark - 50000.0) * 0.2, "{answer}");
    assert_eq!(answer["cross"]["liquidatable"], false);
}

#[test]
fn the_node_sequences_funding_on_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_funding(dir.path(), 1);
    let node = start(&config);
    let stream = TcpStream::connect(("127.0.0.1", node.address("listen").port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    for line in [
        r#"{"op":"order","account":1,"market":"BTC-PERP","oid":1,"side":"sell","price":"50000","qty":"1"}"#,
        r#"{"op":"order","account":2,"market":"BTC-PERP","oid":1,"side":"buy","price":"50000","qty":"1"}"#,
    ] {
        writer.write_all(line.as_bytes()).unwrap();
        writer.write_all(b"\n").unwrap();
    }
    replies(&mut reader, 2);
    // Funding every second: read the log (the read-only `wal dump` may run beside the node)
    // until it holds two funding inputs. Polled, with a generous bound: a busy machine only
    // makes it slower.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let funding = loop {
        let dump = std::process::Command::new(common::NEXUS)
            .args(["wal", "dump", "--data-dir"])
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(
            dump.status.success(),
            "{}",
            String::from_utf8_lossy(&dump.stderr)
        );
        let text = String::from_utf8(dump.stdout).unwrap();
        let funding: Vec<String> = text
            .lines()
            .filter(|l| l.contains(r#""op":"funding""#))
            .map(str::to_string)
            .collect();
        if funding.len() >= 2 || std::time::Instant::now() > deadline {
            break funding;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    drop(node);
    assert!(
        funding.len() >= 2,
        "expected funding inputs in the log, got {funding:?}"
    );
    assert!(
        funding.iter().all(|l| l.contains("BTC-PERP")),
        "{funding:?}"
    );
}
