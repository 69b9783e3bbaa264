//! `nexus pipeline` on loopback: commitment levels, bad input on the order-entry port, overload,
//! and a damaged or cut log at start-up.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::{start, JsonClient as Client, NEXUS};

fn write_config(dir: &Path, ring_capacity: usize) -> PathBuf {
    let path = dir.join("node.toml");
    std::fs::write(
        &path,
        format!(
            r#"
data_dir = "{}"
[gateway]
order_entry_listen = "127.0.0.1:0"
market_data_listen = "127.0.0.1:0"
[ingress]
listen = "127.0.0.1:0"
max_line_bytes = 512
[blocks]
max_inputs = 16
max_age_us = 500
[pipeline]
ring_capacity = {ring_capacity}
[[genesis.assets]]
name = "B"
decimals = 2
[[genesis.assets]]
name = "Q"
decimals = 2
[[genesis.markets]]
name = "B-Q"
base = "B"
quote = "Q"
tick = "0.01"
lot = "1"
min_qty = "1"
taker_fee_bps = 10
[[genesis.deposits]]
account = 1
asset = "B"
amount = "1000"
[[genesis.deposits]]
account = 2
asset = "Q"
amount = "100000"
"#,
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn orders_get_events_then_sequenced_then_finalized() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&write_config(dir.path(), 1024));
    let mut client = Client::connect(node.address("listen"));
    client.send(r#"{"op":"order","account":1,"market":"B-Q","oid":5,"side":"sell","price":"10.5","qty":"3"}"#);
    client.send("\n");
    client.send(r#"{"op":"order","account":2,"market":"B-Q","oid":9,"side":"buy","price":"11","qty":"2","tif":"ioc"}"#);
    client.send("\n");
    // Finalized notices come in line order, so line 2's closes the exchange.
    let replies = client.until("finalized", 2);
    let of_line =
        |line: u64| -> Vec<&Value> { replies.iter().filter(|v| v["line"] == line).collect() };
    let first = of_line(1);
    assert_eq!(first[0]["ev"], "accepted");
    let seq = first[0]["seq"].as_u64().unwrap();
    assert!(seq > 4, "genesis inputs come first: {seq}");
    assert!(first
        .iter()
        .any(|v| v["ev"] == "sequenced" && v["seq"] == seq));
    assert!(first
        .iter()
        .any(|v| v["ev"] == "finalized" && v["seq"] == seq));
    let second = of_line(2);
    let fill = second.iter().find(|v| v["ev"] == "fill").expect("a fill");
    assert_eq!(fill["price"], "10.5");
    assert_eq!(fill["qty"], "2");
    assert_eq!(
        fill["taker_fee"], "0.03",
        "ceil(21.00 * 10 bps) = 0.021 -> 0.03"
    );
    assert_eq!(fill["seq"], seq + 1);
    let order: Vec<&str> = second.iter().map(|v| v["ev"].as_str().unwrap()).collect();
    let sequenced = order.iter().position(|&e| e == "sequenced").unwrap();
    let finalized = order.iter().position(|&e| e == "finalized").unwrap();
    assert!(order.iter().position(|&e| e == "fill").unwrap() < sequenced);
    assert!(sequenced < finalized, "{order:?}");
}

#[test]
fn bad_input_gets_typed_errors_and_other_clients_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&write_config(dir.path(), 1024));
    let mut bad = Client::connect(node.address("listen"));
    let mut good = Client::connect(node.address("listen"));
    bad.send("this is not json\n");
    assert_eq!(bad.next()["reason"], "malformed");
    bad.send(&format!(
        "{{\"op\":\"deposit\",\"pad\":\"{}\"}}\n",
        "x".repeat(2000)
    ));
    let long = bad.next();
    assert_eq!(
        (long["ev"].as_str(), long["reason"].as_str()),
        (Some("error"), Some("too_long"))
    );
    bad.send("{\"op\":\"market\",\"market\":\"Z\",\"base\":\"B\",\"quote\":\"Q\",\"tick\":\"1\",\"lot\":\"1\"}\n");
    assert_eq!(bad.next()["reason"], "not_allowed");
    bad.send("{\"op\":\"order\",\"account\":\"alice\",\"market\":\"B-Q\",\"oid\":1,\"side\":\"buy\",\"price\":\"1\",\"qty\":\"1\"}\n");
    let named = bad.next();
    assert_eq!(
        named["reason"], "malformed",
        "a node takes numeric accounts only: {named}"
    );
    bad.send("{\"op\":\"order\",\"account\":1,\"market\":\"NOPE\",\"oid\":1,\"side\":\"buy\",\"price\":\"1\",\"qty\":\"1\"}\n");
    assert_eq!(bad.next()["reason"], "unknown_market");
    bad.send("{\"op\":\"order\",\"account\":1,\"market\":\"B-Q\",\"oid\":1,\"side\":\"sell\",\"price\":\"1.001\",\"qty\":\"1\"}\n");
    assert_eq!(bad.next()["reason"], "tick_size");
    bad.send("{\"op\":\"cancel\",\"account\":2,\"market\":\"B-Q\",\"oid\":777}\n");
    let unknown = bad.until("finalized", 7);
    assert_eq!(
        unknown[0]["reason"], "unknown_order",
        "engine rejections are sequenced too"
    );
    // Perp markets come only from the genesis (none can yet): the perp ops find none.
    bad.send("{\"op\":\"perp_market\",\"market\":\"P\",\"collateral\":\"Q\",\"tick\":\"1\",\"lot\":\"1\"}\n");
    assert_eq!(bad.next()["reason"], "not_allowed");
    bad.send("{\"op\":\"oracle\",\"market\":\"B-Q\",\"prices\":[\"10\"]}\n");
    assert_eq!(bad.next()["reason"], "not_perp_market");
    bad.send("{\"op\":\"transfer\",\"account\":1,\"amount\":\"1\"}\n");
    let transfer = bad.next();
    assert_eq!(
        (transfer["reason"].as_str(), transfer["line"].as_u64()),
        (Some("not_perp_market"), Some(10))
    );
    // Binary garbage, then the bad client hangs up mid-line.
    bad.send("\u{0}\u{1}\u{2}\u{ff}garbage without newline");
    drop(bad);
    good.send("{\"op\":\"order\",\"account\":1,\"market\":\"B-Q\",\"oid\":2,\"side\":\"sell\",\"price\":\"12\",\"qty\":\"1\"}\n");
    let replies = good.until("finalized", 1);
    assert_eq!(replies[0]["ev"], "accepted");
}

#[test]
fn a_full_input_queue_answers_overloaded_and_loses_nothing_it_took() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&write_config(dir.path(), 2));
    let mut client = Client::connect(node.address("listen"));
    let lines = 3000u64;
    let mut burst = String::new();
    for oid in 1..=lines {
        burst.push_str(&format!(
            "{{\"op\":\"order\",\"account\":1,\"market\":\"B-Q\",\"oid\":{oid},\"side\":\"sell\",\"price\":\"50\",\"qty\":\"1\",\"tif\":\"ioc\"}}\n"
        ));
    }
    client.send(&burst);
    let (mut overloaded, mut finalized) = (0u64, 0u64);
    while overloaded + finalized < lines {
        let reply = client.next();
        match reply["ev"].as_str().unwrap() {
            "rejected" if reply["reason"] == "overloaded" => overloaded += 1,
            "finalized" => finalized += 1,
            _ => {}
        }
    }
    assert!(
        overloaded > 0,
        "a 2-slot queue under a 3000-line burst must push back"
    );
    assert!(finalized > 0);
    assert_eq!(
        overloaded + finalized,
        lines,
        "every line is either refused or finalized"
    );
}

#[test]
fn a_cut_log_stops_the_node_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1024);
    {
        let node = start(&config);
        let mut client = Client::connect(node.address("listen"));
        for oid in 1..=300u64 {
            client.send(&format!("{{\"op\":\"order\",\"account\":1,\"market\":\"B-Q\",\"oid\":{oid},\"side\":\"sell\",\"price\":\"{}\",\"qty\":\"1\"}}\n", 20 + oid));
        }
        client.until("finalized", 300);
    }
    let data = dir.path().join("data").join("data.mdb");
    let len = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let output = Command::new(NEXUS)
        .args(["pipeline", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("truncated"), "stderr: {stderr}");
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["pipeline", "--help"],
        &["send", "--help"],
        &["query", "book", "--help"],
        &["devnet", "--help"],
        &["validator", "--help"],
        &["replay", "--help"],
        &["wal", "--help"],
        &["wal", "dump", "--help"],
        &["wal", "truncate", "--help"],
        &["config", "--help"],
    ] {
        let output = Command::new(NEXUS).args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage"),
            "{args:?}"
        );
    }
    let config = Command::new(NEXUS).arg("config").output().unwrap();
    assert!(String::from_utf8_lossy(&config.stdout).contains("[genesis"));
}
