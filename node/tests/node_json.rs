//! The node's data folder lock and the JSON port's delivery and queries, on a real
//! `nexus pipeline` (issue #12, items 1-7): one node per folder, `wal truncate` refused while it
//! runs, half-closed connections get every reply, makers and subscribers hear of their
//! fills, queries answer from the current state, a deposit reports its balance, and the
//! node prints status lines.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{start, JsonClient, NEXUS};
use serde_json::{json, Value};

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("node.toml");
    let text = format!(
        r#"
data_dir = "{}"
[gateway]
order_entry_listen = "127.0.0.1:0"
market_data_listen = "127.0.0.1:0"
[ingress]
listen = "127.0.0.1:0"
[blocks]
max_inputs = 16
max_age_us = 500
{extra}
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
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn order(account: u64, oid: u64, side: &str, price: &str, qty: &str) -> Value {
    json!({"op": "order", "account": account, "market": "B-Q", "oid": oid,
        "side": side, "price": price, "qty": qty})
}

fn wal_info(dir: &Path) -> Value {
    let output = Command::new(NEXUS)
        .args(["wal", "info", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn a_second_node_on_the_same_folder_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let node = start(&config);
    let pid = node.child.id();
    let mut client = JsonClient::connect(node.address("listen"));
    client.send_json(&order(1, 1, "sell", "10", "5"));
    client.until("finalized", 1);
    let data = dir.path().join("data");
    let before = std::fs::read(data.join("data.mdb")).unwrap();

    let second = Command::new(NEXUS)
        .args(["pipeline", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!second.status.success(), "a second node must not run");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&data.display().to_string()) && stderr.contains(&format!("pid {pid}")),
        "names the folder and the holder: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&second.stdout).contains("ready"),
        "never ready"
    );
    assert_eq!(
        std::fs::read(data.join("data.mdb")).unwrap(),
        before,
        "the refused node wrote nothing"
    );
    // The first node is unharmed.
    client.send_json(&order(2, 1, "buy", "10", "2"));
    let replies = client.until("finalized", 2);
    assert!(replies.iter().any(|r| r["ev"] == "fill"), "{replies:?}");
}

#[test]
fn wal_truncate_is_refused_while_the_node_runs_and_works_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut node = start(&config);
    let mut client = JsonClient::connect(node.address("listen"));
    client.send_json(&order(1, 1, "sell", "10", "5"));
    client.until("finalized", 1);
    let data = dir.path().join("data");
    let height = wal_info(&data)["height"].as_u64().unwrap();
    assert!(height >= 2);

    let truncate = |dir: &Path| {
        Command::new(NEXUS)
            .args(["wal", "truncate", "--after", "1", "--data-dir"])
            .arg(dir)
            .output()
            .unwrap()
    };
    let refused = truncate(&data);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("in use"), "{stderr}");
    assert_eq!(wal_info(&data)["height"].as_u64().unwrap(), height);
    // The node goes on: a new order is finalized in a block after the kept ones.
    client.send_json(&order(1, 2, "sell", "11", "1"));
    let replies = client.until("finalized", 2);
    assert!(replies.iter().all(|r| r["ev"] != "error"), "{replies:?}");

    Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()
        .unwrap();
    node.child.wait().unwrap();
    let done = truncate(&data);
    assert!(done.status.success(), "{done:?}");
    assert_eq!(wal_info(&data)["height"], 1);
}

#[test]
fn a_half_closed_connection_gets_every_reply_it_is_owed() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&write_config(dir.path(), ""));
    let mut stream = TcpStream::connect(node.address("listen")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let lines = [
        order(1, 1, "sell", "10", "5"),
        order(2, 1, "buy", "10", "2"),
    ];
    for line in &lines {
        stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
    stream.shutdown(Shutdown::Write).unwrap();
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .expect("the node closes once every reply is sent");
    let replies: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for line in [1, 2] {
        for ev in ["sequenced", "finalized"] {
            assert!(
                replies.iter().any(|r| r["ev"] == ev && r["line"] == line),
                "line {line} has its {ev}: {replies:?}"
            );
        }
    }
}

#[test]
fn makers_and_subscribers_hear_of_fills_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&write_config(dir.path(), ""));
    let mut maker = JsonClient::connect(node.address("listen"));
    let mut watcher = JsonClient::connect(node.address("listen"));
    let mut bystander = JsonClient::connect(node.address("listen"));
    let mut taker = JsonClient::connect(node.address("listen"));
    maker.send_json(&order(1, 7, "sell", "10", "5"));
    maker.until("finalized", 1);
    watcher.send_json(&json!({"op": "subscribe", "account": 1}));
    assert_eq!(
        watcher.next(),
        json!({"ev": "subscribed", "line": 1, "account": 1})
    );
    bystander.send_json(&json!({"op": "subscribe", "account": 3}));
    bystander.next();
    taker.send_json(&order(2, 1, "buy", "10", "2"));
    let taker_replies = taker.until("finalized", 1);
    let fill = taker_replies
        .iter()
        .find(|r| r["ev"] == "fill")
        .expect("the taker's fill")
        .clone();
    let seq = fill["seq"].clone();
    for client in [&mut maker, &mut watcher] {
        let heard = client.next();
        assert_eq!(heard["ev"], "fill", "{heard}");
        assert_eq!(heard["seq"], seq);
        assert_eq!(heard["maker_oid"], 7);
        assert!(
            heard.get("line").is_none(),
            "answers none of its lines: {heard}"
        );
    }
    // Nothing reached the bystander: the next thing it reads is its own query's answer.
    bystander.send_json(&json!({"op": "orders", "account": 1}));
    let next = bystander.next();
    assert_eq!(next["ev"], "orders", "{next}");
}

#[test]
fn queries_answer_from_the_current_state() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&write_config(dir.path(), ""));
    let mut client = JsonClient::connect(node.address("listen"));
    client.send_json(&order(1, 1, "sell", "10", "5"));
    client.send_json(&order(1, 2, "sell", "10.5", "1"));
    client.send_json(&order(2, 1, "buy", "9", "3"));
    client.send_json(&json!({"op": "book", "market": "B-Q", "depth": 5}));
    client.send_json(&json!({"op": "balances", "account": 2}));
    client.send_json(&json!({"op": "orders", "account": 1}));
    client.send_json(&json!({"op": "orders", "account": 404}));
    client.send_json(&json!({"op": "book", "market": "NOPE"}));
    let replies = client.until("error", 8);
    let answer = |line: u64| {
        replies
            .iter()
            .find(|r| r["line"] == line && r["ev"] != "finalized")
            .unwrap_or_else(|| panic!("line {line} answered: {replies:?}"))
            .clone()
    };
    // Every query comes after the `sequenced` of the lines before it.
    let position = |ev: &str, line: u64| {
        replies
            .iter()
            .position(|r| r["ev"] == ev && r["line"] == line)
            .unwrap()
    };
    assert!(position("sequenced", 3) < position("book", 4));
    assert_eq!(
        answer(4),
        json!({"ev": "book", "line": 4, "market": "B-Q",
            "bids": [["9", "3"]], "asks": [["10", "5"], ["10.5", "1"]]})
    );
    // Account 2 bought nothing yet: 27 of its 100000 Q are locked by the bid (9 * 3, the
    // taker fee reserve rounds up per lot: 0.01 each).
    let balances = answer(5);
    let quote = balances["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == "Q")
        .unwrap()
        .clone();
    assert_eq!(quote["total"], "100000");
    assert_eq!(quote["locked"], "27.03");
    assert_eq!(quote["available"], "99972.97");
    let orders = answer(6);
    assert_eq!(orders["orders"].as_array().unwrap().len(), 2, "{orders}");
    assert_eq!(orders["orders"][1]["price"], "10.5");
    assert_eq!(orders["orders"][1]["qty"], "1");
    assert_eq!(answer(7)["reason"], "unknown_account");
    assert_eq!(answer(8)["reason"], "unknown_market");
}

#[test]
fn a_deposit_reports_the_new_balance_and_a_refused_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&write_config(dir.path(), ""));
    let mut client = JsonClient::connect(node.address("listen"));
    client.send_json(&json!({"op": "deposit", "account": 2, "asset": "Q", "amount": "5.5"}));
    let replies = client.until("sequenced", 1);
    let balance = replies
        .iter()
        .find(|r| r["ev"] == "balance")
        .expect("a balance record");
    assert_eq!(
        balance,
        &json!({"ev": "balance", "line": 1, "account": 2, "asset": "Q",
            "total": "100005.5", "locked": "0", "available": "100005.5"})
    );
    client.send_json(&json!({"op": "withdraw", "account": 2, "asset": "Q", "amount": "1000000"}));
    let replies = client.until("sequenced", 2);
    let refusal = replies
        .iter()
        .find(|r| r["reason"] == "insufficient_balance")
        .unwrap_or_else(|| panic!("{replies:?}"));
    // The refusal says what was needed and what was there.
    assert_eq!(refusal["asset"], "Q");
    assert_eq!(refusal["needed"], "1000000");
    assert_eq!(refusal["available"], "100005.5");
    assert!(replies.iter().all(|r| r["ev"] != "balance"), "{replies:?}");
    // An order: 20000 lots at 10 reserve 200000 + ceil(0.01 per lot fee) = 200200.
    client.send_json(&order(2, 1, "buy", "10", "20000"));
    let replies = client.until("sequenced", 3);
    let refusal = replies
        .iter()
        .find(|r| r["ev"] == "rejected")
        .unwrap_or_else(|| panic!("{replies:?}"));
    assert_eq!(refusal["reason"], "insufficient_balance");
    assert_eq!(refusal["needed"], "200200");
    assert_eq!(refusal["available"], "100005.5");
}

#[test]
fn the_node_prints_status_lines_and_quiet_silences_them() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&write_config(dir.path(), "[log]\nstatus_interval_s = 1"));
    let mut client = JsonClient::connect(node.address("listen"));
    client.send_json(&order(1, 1, "sell", "10", "5"));
    client.until("finalized", 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let stderr = loop {
        let text = node.stderr.lock().unwrap().clone();
        if text.contains("nexus status:") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let status = stderr
        .lines()
        .find(|l| l.contains("nexus status:"))
        .unwrap_or_else(|| panic!("no status line: {stderr}"));
    assert!(
        status.contains("height") && status.contains("inputs/s"),
        "{status}"
    );
    assert!(stderr.contains("JSON connection opened"), "{stderr}");

    // --quiet: nothing but warnings, no status.
    let quiet_dir = tempfile::tempdir().unwrap();
    let config = write_config(quiet_dir.path(), "[log]\nstatus_interval_s = 1");
    let mut child = Command::new(NEXUS)
        .args(["pipeline", "--quiet", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let stderr = common::drain(child.stderr.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    let ready: Value = serde_json::from_str(&ready).unwrap();
    let _client = TcpStream::connect(ready["listen"].as_str().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let _ = child.kill();
    let _ = child.wait();
    let text = stderr.lock().unwrap().clone();
    assert!(
        !text.contains("nexus status:") && !text.contains("connection opened"),
        "{text}"
    );
}
