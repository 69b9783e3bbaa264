//! `nexus replay` end to end: the built binary on JSON Lines inputs, output parsed back.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_nexus");

/// A market (tick 0.5, lot 0.01, min 0.02, quote with 3 decimals) and two funded accounts:
/// 1 (numeric id) has quote, "s" (string id) has base. Lines 1..=5.
const SETUP: &str = r#"{"op":"asset","asset":"USD","decimals":3}
{"op":"market","market":"X-USD","base":"X","quote":"USD","tick":"0.5","lot":"0.01","min_qty":"0.02","taker_fee_bps":10,"maker_fee_bps":-2}
{"op":"deposit","account":1,"asset":"USD","amount":"1000"}
{"op":"deposit","account":"s","asset":"X","amount":"10"}
{"op":"deposit","account":"s","asset":"USD","amount":"1000"}
"#;

fn run_stdin(input: &str, args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .arg("replay")
        .arg("-")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nexus");
    let mut stdin = child.stdin.take().expect("stdin");
    let text = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let output = child.wait_with_output().expect("wait nexus");
    writer.join().expect("writer thread");
    output
}

fn parse(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8(stdout.to_vec())
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

/// Events of `input` replayed through standard input; asserts a clean exit.
fn replay(input: &str) -> Vec<Value> {
    let output = run_stdin(input, &[]);
    assert!(
        output.status.success(),
        "exit {:?}, stderr {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    parse(&output.stdout)
}

/// Events of SETUP followed by `lines`, with the setup's own events (there are none) dropped.
fn after_setup(lines: &str) -> Vec<Value> {
    let events = replay(&format!("{SETUP}{lines}"));
    assert!(
        events.iter().all(|e| e["seq"].as_u64().unwrap() > 5),
        "setup emitted {events:?}"
    );
    events
}

fn state_hash(input: &str) -> String {
    let events = parse(&run_stdin(input, &["--state-hash"]).stdout);
    let end = events.last().expect("end record");
    assert_eq!(end["ev"], "end");
    end["state_hash"].as_str().expect("hex").to_string()
}

fn reasons(events: &[Value]) -> Vec<(u64, String)> {
    events
        .iter()
        .filter(|e| e["ev"] == "rejected")
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn quickstart_example_trades_and_books() {
    let output = Command::new(BIN)
        .args(["replay", "../examples/quickstart.jsonl"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run nexus");
    assert!(output.status.success());
    let events = parse(&output.stdout);
    let fills: Vec<&Value> = events.iter().filter(|e| e["ev"] == "fill").collect();
    assert_eq!(fills.len(), 2);
    // 0.5 at 30010 = 15005 USDC notional: taker 5 bps = 7.5025, maker -1 bps = -1.5005.
    assert_eq!(fills[0]["price"], "30010");
    assert_eq!(fills[0]["qty"], "0.5");
    assert_eq!(fills[0]["taker_fee"], "7.5025");
    assert_eq!(fills[0]["maker_fee"], "-1.5005");
    assert_eq!(fills[0]["maker_oid"], 1);
    assert_eq!(fills[1]["maker_oid"], "c-1");
    let last = events.last().unwrap();
    assert_eq!(last["ev"], "book");
    assert_eq!(last["bids"], json!([["30000", "0.3"]]));
    assert_eq!(last["asks"], json!([["30020.5", "0.5"]]));
}

#[test]
fn file_and_stdin_give_the_same_output() {
    let input = format!(
        "{SETUP}{}",
        r#"{"op":"order","account":"s","market":"X-USD","oid":1,"side":"sell","price":"10","qty":"1"}
{"op":"order","account":1,"market":"X-USD","oid":1,"side":"buy","price":"10.5","qty":"0.4"}
"#
    );
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(input.as_bytes()).unwrap();
    let from_file = Command::new(BIN)
        .arg("replay")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(from_file.status.success());
    let from_stdin = run_stdin(&input, &[]);
    assert_eq!(from_file.stdout, from_stdin.stdout);
    assert_eq!(parse(&from_file.stdout).len(), 3);
}

#[test]
fn crossing_order_fills_at_maker_price_with_fees() {
    let events = after_setup(
        r#"{"op":"order","account":"s","market":"X-USD","oid":"m1","side":"sell","price":"10","qty":"1.5","tif":"gtc"}
{"op":"order","account":"s","market":"X-USD","oid":"m2","side":"sell","price":"10.5","qty":"1"}
{"op":"order","account":1,"market":"X-USD","oid":7,"side":"buy","price":"11","qty":"2","tif":"ioc"}
{"op":"book","market":"X-USD"}
"#,
    );
    let line8: Vec<&Value> = events.iter().filter(|e| e["seq"] == 8).collect();
    // accepted, fill m1 1.5 @ 10, fill m2 0.5 @ 10.5, nothing left to cancel.
    assert_eq!(line8.len(), 3, "{line8:?}");
    assert_eq!(
        *line8[0],
        json!({"ev":"accepted","seq":8,"oid":7,"account":1})
    );
    assert_eq!(
        *line8[1],
        json!({"ev":"fill","seq":8,"market":"X-USD","taker_oid":7,"maker_oid":"m1",
               "taker_account":1,"maker_account":"s","side":"buy","price":"10","qty":"1.5",
               "taker_fee":"0.015","maker_fee":"-0.003"})
    );
    // Notional 15: taker 10 bps = 0.015, maker -2 bps = -0.003, both exact at 3 decimals.
    assert_eq!(line8[2]["price"], "10.5");
    assert_eq!(line8[2]["qty"], "0.5");
    // Notional 5.25: taker 0.00525 rounds up to 0.006; the rebate 0.00105 down to 0.001.
    assert_eq!(line8[2]["taker_fee"], "0.006");
    assert_eq!(line8[2]["maker_fee"], "-0.001");
    let book = events.last().unwrap();
    assert_eq!(
        *book,
        json!({"ev":"book","seq":9,"market":"X-USD","bids":[],"asks":[["10.5","0.5"]]})
    );
}

#[test]
fn events_of_one_command_come_in_order() {
    // 1 bids 10, "s" bids 9.5, then "s" sells 2 IOC down to 9 (STP cancel_maker): accepted,
    // fill against 1's bid, stp cancel of its own bid, then the IOC remainder's cancel.
    let events = after_setup(
        r#"{"op":"order","account":1,"market":"X-USD","oid":"b1","side":"buy","price":"10","qty":"0.5"}
{"op":"order","account":"s","market":"X-USD","oid":"own","side":"buy","price":"9.5","qty":"0.5"}
{"op":"order","account":"s","market":"X-USD","oid":"t","side":"sell","price":"9","qty":"2","tif":"ioc"}
"#,
    );
    let line8: Vec<(String, Value)> = events
        .iter()
        .filter(|e| e["seq"] == 8)
        .map(|e| (e["ev"].as_str().unwrap().to_string(), e["oid"].clone()))
        .collect();
    let names: Vec<&str> = line8.iter().map(|(ev, _)| ev.as_str()).collect();
    assert_eq!(names, ["accepted", "fill", "canceled", "canceled"]);
    let cancels: Vec<&Value> = events
        .iter()
        .filter(|e| e["seq"] == 8 && e["ev"] == "canceled")
        .collect();
    assert_eq!(
        *cancels[0],
        json!({"ev":"canceled","seq":8,"oid":"own","account":"s","qty":"0.5","reason":"stp"})
    );
    assert_eq!(
        *cancels[1],
        json!({"ev":"canceled","seq":8,"oid":"t","account":"s","qty":"1.5","reason":"unfilled"})
    );
}

#[test]
fn every_reject_reason_is_reachable() {
    let events = after_setup(
        r#"{"op":"order","account":1,"market":"NOPE","oid":1,"side":"buy","price":"10","qty":"1"}
{"op":"order","account":1,"market":"X-USD","oid":1,"side":"buy","price":"10.25","qty":"1"}
{"op":"order","account":1,"market":"X-USD","oid":1,"side":"buy","price":"10","qty":"1.005"}
{"op":"order","account":1,"market":"X-USD","oid":1,"side":"buy","price":"10","qty":"0.01"}
{"op":"order","account":1,"market":"X-USD","oid":1,"side":"buy","price":"10","qty":"100"}
{"op":"order","account":"s","market":"X-USD","oid":"ask","side":"sell","price":"10","qty":"1"}
{"op":"order","account":1,"market":"X-USD","oid":1,"side":"buy","price":"10","qty":"1","tif":"alo"}
{"op":"order","account":1,"market":"X-USD","oid":1,"side":"buy","price":"10","qty":"2","tif":"fok"}
{"op":"order","account":1,"market":"X-USD","oid":1,"side":"buy","price":"9","qty":"1"}
{"op":"order","account":1,"market":"X-USD","oid":1,"side":"buy","price":"8","qty":"1"}
{"op":"cancel","account":1,"market":"X-USD","oid":"ask"}
{"op":"cancel","account":1,"market":"X-USD","oid":99}
{"op":"modify","account":1,"market":"X-USD","oid":"ask","price":"10","qty":"0.5"}
{"op":"order","account":1,"market":"X-USD","oid":2,"side":"buy","price":"0","qty":"1"}
{"op":"order","account":1,"market":"X-USD","oid":2,"side":"buy","price":"10","qty":"0"}
{"op":"order","account":1,"market":"X-USD","oid":2,"side":"buy","type":"market","qty":"1","tif":"gtc"}
{"op":"order","account":"nobody","market":"X-USD","oid":2,"side":"buy","price":"10","qty":"1"}
{"op":"deposit","account":1,"asset":"NOPE","amount":"1"}
{"op":"deposit","account":1,"asset":"USD","amount":"0.0001"}
{"op":"withdraw","account":1,"asset":"USD","amount":"5000"}
{"op":"market","market":"X-USD","base":"X","quote":"USD","tick":"1","lot":"1"}
{"op":"market","market":"Y","base":"X","quote":"X","tick":"1","lot":"1"}
{"op":"asset","asset":"USD","decimals":2}
"#,
    );
    let expected = [
        (6, "unknown_market"),
        (7, "tick_size"),
        (8, "lot_size"),
        (9, "min_qty"),
        (10, "insufficient_balance"),
        (12, "post_only_would_cross"),
        (13, "fok_unfilled"),
        (15, "duplicate_oid"),
        (16, "unknown_order"), // "ask" belongs to "s", not to 1
        (17, "unknown_order"),
        (18, "unknown_order"),
        (19, "invalid_price"),
        (20, "invalid_qty"),
        (21, "invalid_tif"),
        (22, "unknown_account"),
        (23, "unknown_asset"),
        (24, "invalid_qty"),
        (25, "insufficient_balance"),
        (26, "already_exists"),
        (27, "invalid_market"),
        (28, "already_exists"),
    ];
    let got = reasons(&events);
    let expected: Vec<(u64, String)> = expected
        .iter()
        .map(|&(seq, reason)| (seq, reason.to_string()))
        .collect();
    assert_eq!(got, expected);
    // Order commands echo oid and account as written; other rejections their account.
    let first = &events[0];
    assert_eq!(first["oid"], 1);
    assert_eq!(first["account"], 1);
    let deposit = events.iter().find(|e| e["seq"] == 23).unwrap();
    assert_eq!(deposit["account"], 1);
    assert!(deposit.get("oid").is_none());
}

#[test]
fn fok_rejection_has_no_side_effect() {
    let base = format!(
        "{SETUP}{}",
        r#"{"op":"order","account":"s","market":"X-USD","oid":"a","side":"sell","price":"10","qty":"1"}
"#
    );
    let fok = r#"{"op":"order","account":1,"market":"X-USD","oid":"f","side":"buy","price":"10","qty":"1.5","tif":"fok"}
"#;
    let with_fok = format!("{base}{fok}");
    let events = replay(&with_fok);
    assert_eq!(reasons(&events), [(7, "fok_unfilled".to_string())]);
    assert_eq!(state_hash(&base), state_hash(&with_fok));
}

#[test]
fn limits_are_reachable_through_flags() {
    let input = format!(
        "{SETUP}{}",
        r#"{"op":"deposit","account":"t","asset":"X","amount":"1"}
{"op":"order","account":1,"market":"X-USD","oid":1,"side":"buy","price":"1","qty":"1"}
{"op":"order","account":1,"market":"X-USD","oid":2,"side":"buy","price":"1","qty":"1"}
{"op":"order","account":"s","market":"X-USD","oid":3,"side":"sell","price":"50","qty":"1"}
{"op":"order","account":"t","market":"X-USD","oid":4,"side":"sell","price":"50","qty":"1"}
"#
    );
    let output = run_stdin(
        &input,
        &["--max-open-orders", "1", "--max-resting-orders", "2"],
    );
    assert!(output.status.success());
    assert_eq!(
        reasons(&parse(&output.stdout)),
        [
            (8, "too_many_orders".to_string()),
            (10, "book_full".to_string())
        ]
    );
}

#[test]
fn ids_are_echoed_with_their_json_type() {
    // Account 1 and account "1" are different accounts; oid 5 and "5" different orders.
    let events = after_setup(
        r#"{"op":"deposit","account":"1","asset":"USD","amount":"100"}
{"op":"order","account":"1","market":"X-USD","oid":"5","side":"buy","price":"1","qty":"1"}
{"op":"order","account":1,"market":"X-USD","oid":5,"side":"buy","price":"1","qty":"1"}
{"op":"order","account":1,"market":"X-USD","oid":"5","side":"buy","price":"1","qty":"1"}
{"op":"order","account":1,"market":"X-USD","oid":18446744073709551615,"side":"buy","price":"1","qty":"1"}
{"op":"cancel_all","account":1,"market":"X-USD"}
"#,
    );
    let accepted: Vec<(Value, Value)> = events
        .iter()
        .filter(|e| e["ev"] == "accepted")
        .map(|e| (e["account"].clone(), e["oid"].clone()))
        .collect();
    assert_eq!(
        accepted,
        [
            (json!("1"), json!("5")),
            (json!(1), json!(5)),
            (json!(1), json!("5")),
            (json!(1), json!(u64::MAX)),
        ]
    );
    let canceled: Vec<Value> = events
        .iter()
        .filter(|e| e["ev"] == "canceled")
        .map(|e| e["oid"].clone())
        .collect();
    // cancel_all of account 1 only, in entry order.
    assert_eq!(canceled, [json!(5), json!("5"), json!(u64::MAX)]);
    assert!(events
        .iter()
        .filter(|e| e["ev"] == "canceled")
        .all(|e| e["account"] == 1 && e["reason"] == "user" && e["qty"] == "1"));
}

#[test]
fn decimals_convert_exactly() {
    let events = replay(
        r#"{"op":"asset","asset":"ETH","decimals":18}
{"op":"asset","asset":"DAI","decimals":6}
{"op":"market","market":"ETH-DAI","base":"ETH","quote":"DAI","tick":"0.01","lot":"0.0001","min_qty":"0.001","max_price":"10000"}
{"op":"deposit","account":"a","asset":"ETH","amount":"1.000000000000000001"}
{"op":"deposit","account":"b","asset":"DAI","amount":10000}
{"op":"order","account":"a","market":"ETH-DAI","oid":1,"side":"sell","price":"2500.10","qty":"0.1230"}
{"op":"order","account":"b","market":"ETH-DAI","oid":1,"side":"buy","price":2500.1,"qty":"0.05"}
{"op":"modify","account":"a","market":"ETH-DAI","oid":1,"price":"2500.2","qty":"0.002"}
{"op":"order","account":"b","market":"ETH-DAI","oid":2,"side":"buy","price":"10000.01","qty":"0.001"}
{"op":"deposit","account":"b","asset":"DAI","amount":"0.0000001"}
{"op":"market","market":"BAD","base":"ETH","quote":"DAI","tick":"0.01","lot":"0.00001"}
{"op":"market","market":"BAD","base":"ETH","quote":"DAI","tick":"0.01","lot":"0.1","min_qty":"0.15"}
{"op":"book","market":"ETH-DAI","depth":1}
"#,
    );
    let fill = events.iter().find(|e| e["ev"] == "fill").unwrap();
    assert_eq!(fill["price"], "2500.1");
    assert_eq!(fill["qty"], "0.05");
    let modified = events.iter().find(|e| e["ev"] == "modified").unwrap();
    assert_eq!(
        *modified,
        json!({"ev":"modified","seq":8,"oid":1,"account":"a","price":"2500.2","qty":"0.002"})
    );
    assert_eq!(
        reasons(&events),
        [
            (9, "invalid_price".to_string()),
            (10, "invalid_qty".to_string()),
            (11, "invalid_market".to_string()),
            (12, "invalid_market".to_string()),
        ]
    );
    let bad = events.iter().find(|e| e["seq"] == 11).unwrap();
    assert!(bad["detail"].as_str().unwrap().contains("DAI"), "{bad}");
    let book = events.last().unwrap();
    assert_eq!(book["asks"], json!([["2500.2", "0.002"]]));
    assert_eq!(book["bids"], json!([]));
}

#[test]
fn market_orders_default_to_ioc() {
    let events = after_setup(
        r#"{"op":"order","account":"s","market":"X-USD","oid":"a","side":"sell","price":"100","qty":"2"}
{"op":"order","account":1,"market":"X-USD","oid":"m","side":"buy","type":"market","qty":"20"}
"#,
    );
    // 2 at 100 = 200 USD plus 10 bps (0.2) is affordable; the ask side is then empty.
    let fill = events.iter().find(|e| e["ev"] == "fill").unwrap();
    assert_eq!(fill["qty"], "2");
    assert_eq!(fill["price"], "100");
    assert_eq!(fill["taker_fee"], "0.2");
    let cancel = events.iter().find(|e| e["ev"] == "canceled").unwrap();
    assert_eq!(cancel["reason"], "unfilled");
    assert_eq!(cancel["qty"], "18");
}

#[test]
fn malformed_lines_are_reported_and_skipped() {
    let garbage = [
        "not json",
        "{\"op\":\"order\"",
        "[1,2,3]",
        "42",
        "{}",
        "{\"op\":7}",
        "{\"op\":\"teleport\"}",
        "{\"op\":\"order\",\"account\":1,\"market\":\"X-USD\",\"oid\":1,\"side\":\"up\",\"price\":\"10\",\"qty\":\"1\"}",
        "{\"op\":\"order\",\"account\":1,\"market\":\"X-USD\",\"oid\":1,\"side\":\"buy\",\"price\":\"10\",\"qty\":\"1\",\"tif\":\"day\"}",
        "{\"op\":\"order\",\"account\":1,\"market\":\"X-USD\",\"oid\":1,\"side\":\"buy\",\"price\":\"10\",\"qty\":\"1\",\"stp\":\"none\"}",
        "{\"op\":\"order\",\"account\":-1,\"market\":\"X-USD\",\"oid\":1,\"side\":\"buy\",\"price\":\"10\",\"qty\":\"1\"}",
        "{\"op\":\"order\",\"account\":1,\"market\":\"X-USD\",\"oid\":1.5,\"side\":\"buy\",\"price\":\"10\",\"qty\":\"1\"}",
        "{\"op\":\"order\",\"account\":1,\"market\":\"X-USD\",\"oid\":1,\"side\":\"buy\",\"price\":\"1e3\",\"qty\":\"1\"}",
        "{\"op\":\"order\",\"account\":1,\"market\":\"X-USD\",\"oid\":1,\"side\":\"buy\",\"qty\":\"1\"}",
        "{\"op\":\"order\",\"account\":1,\"market\":\"X-USD\",\"oid\":1,\"side\":\"buy\",\"type\":\"market\",\"price\":\"10\",\"qty\":\"1\"}",
        "{\"op\":\"book\",\"market\":\"X-USD\",\"depth\":-1}",
        "{\"op\":\"asset\",\"asset\":\"Z\",\"decimals\":30}",
    ];
    let mut input = String::new();
    for line in garbage {
        input.push_str(line);
        input.push('\n');
    }
    input.push('\n'); // a blank line: skipped silently
    input.push_str(
        r#"{"op":"order","account":1,"market":"X-USD","oid":1,"side":"buy","price":"10","qty":"1"}"#,
    );
    input.push('\n');
    let events = after_setup(&input);
    assert_eq!(events.len(), garbage.len() + 1, "{events:#?}");
    for (i, event) in events.iter().take(garbage.len()).enumerate() {
        let line = 6 + i as u64;
        assert_eq!(event["ev"], "error", "{event}");
        assert_eq!(event["seq"], line);
        assert_eq!(event["line"], line);
        assert_eq!(event["reason"], "malformed");
        assert!(!event["detail"].as_str().unwrap().is_empty());
    }
    let last = events.last().unwrap();
    assert_eq!(last["ev"], "accepted");
    assert_eq!(last["seq"], 6 + garbage.len() as u64 + 1);
}

#[test]
fn binary_garbage_does_not_stop_the_replay() {
    let mut input: Vec<u8> = SETUP.as_bytes().to_vec();
    input.extend_from_slice(b"\xff\xfe{\"op\"\x00}\n\r\n\x80\x80\x80\n");
    input.extend_from_slice(
        br#"{"op":"book","market":"X-USD"}"#, // no trailing newline
    );
    let output = {
        let mut child = Command::new(BIN)
            .args(["replay", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(output.status.success());
    let events = parse(&output.stdout);
    let kinds: Vec<(u64, &str)> = events
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["ev"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [(6, "error"), (8, "error"), (9, "book")]);
}

#[test]
fn state_hash_is_deterministic_and_input_sensitive() {
    let input = format!(
        "{SETUP}{}",
        r#"{"op":"order","account":"s","market":"X-USD","oid":1,"side":"sell","price":"10","qty":"1"}
"#
    );
    let other = input.replace("\"qty\":\"1\"", "\"qty\":\"2\"");
    let a = state_hash(&input);
    assert_eq!(a.len(), 64);
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(a, state_hash(&input));
    assert_ne!(a, state_hash(&other));
    let events = parse(&run_stdin(&input, &["--state-hash"]).stdout);
    assert_eq!(events.last().unwrap()["lines"], 6);
}

#[test]
fn closed_stdout_exits_quietly_with_failure() {
    let mut input = SETUP.to_string();
    for _ in 0..20_000 {
        input.push_str("{\"op\":\"book\",\"market\":\"X-USD\"}\n");
    }
    let mut child = Command::new(BIN)
        .args(["replay", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before anything is written
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn missing_file_is_an_error() {
    let output = Command::new(BIN)
        .args(["replay", "/nonexistent/commands.jsonl"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot open"));
}

#[test]
fn help_describes_replay() {
    let output = Command::new(BIN)
        .args(["replay", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--state-hash"));
    assert!(help.contains("FILE|-"));
}

/// The worked example in docs/replay.md is the real output of examples/quickstart.jsonl.
#[test]
fn docs_worked_example_matches_the_binary() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/replay.md")).unwrap();
    let example = doc
        .split("## Worked example")
        .nth(1)
        .expect("worked example section");
    let blocks: Vec<&str> = example
        .split("```json\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap())
        .collect();
    let input = std::fs::read_to_string(root.join("examples/quickstart.jsonl")).unwrap();
    assert_eq!(
        blocks[0], input,
        "docs input differs from examples/quickstart.jsonl"
    );
    let output = Command::new(BIN)
        .arg("replay")
        .arg(root.join("examples/quickstart.jsonl"))
        .output()
        .unwrap();
    assert_eq!(
        blocks[1],
        String::from_utf8(output.stdout).unwrap(),
        "docs output differs from the binary's"
    );
}
