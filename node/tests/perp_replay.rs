//! Perpetual futures in the JSON Lines format: `examples/perps.jsonl` through the built
//! binary, with the numbers worked by hand from docs/perps.md; the engine state behind them;
//! typed errors for malformed perp lines; determinism; and `command_json` as the exact
//! inverse of the translator for every perp command (what `nexus wal dump` relies on).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use engine::{Engine, EngineConfig, INSURANCE_ACCOUNT};
use json_lines::replay::{Output, Replayer, Step, Translator, INTERNED_ID_BASE};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_nexus");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example() -> String {
    std::fs::read_to_string(root().join("examples/perps.jsonl")).unwrap()
}

/// The first 7 lines of the example: USDC, BTC-PERP, three deposits, two transfers
/// (alice 10000, bob 2000 to the perp side).
fn setup() -> String {
    example()
        .lines()
        .take(7)
        .map(|l| format!("{l}\n"))
        .collect()
}

fn run_stdin(input: &str, args: &[&str]) -> Vec<Value> {
    let mut child = Command::new(BIN)
        .arg("replay")
        .arg("-")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nexus");
    let mut stdin = child.stdin.take().unwrap();
    let text = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

fn state_hash(input: &str) -> String {
    let events = run_stdin(input, &["--state-hash"]);
    let end = events.last().unwrap();
    assert_eq!(end["ev"], "end");
    end["state_hash"].as_str().unwrap().to_string()
}

fn of<'a>(events: &'a [Value], ev: &str, seq: u64) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["ev"] == ev && e["seq"] == seq)
        .collect()
}

#[test]
fn example_gives_the_hand_computed_records() {
    let events = run_stdin(&example(), &[]);
    // Line 10: an order before any oracle price.
    assert_eq!(
        events[0],
        json!({"ev":"rejected","seq":10,"oid":1,"account":"alice","reason":"no_oracle_price"})
    );
    // Line 11: median of 30010, 29990, 30000; empty book: premium 0, mark = oracle.
    assert_eq!(
        *of(&events, "oracle", 11)[0],
        json!({"ev":"oracle","seq":11,"market":"BTC-PERP","price":"30000","mark":"30000","premium":"0"})
    );
    // Line 13: 1 BTC at 30000 = 30000 USDC: taker 5 bps = 15, maker -1 bps = -3; then the
    // taker's position, then the maker's, each with the full notional as cost basis.
    let fill = of(&events, "fill", 13)[0];
    assert_eq!(fill["taker_fee"], "15");
    assert_eq!(fill["maker_fee"], "-3");
    let positions = of(&events, "position", 13);
    assert_eq!(
        *positions[0],
        json!({"ev":"position","seq":13,"account":"bob","market":"BTC-PERP","size":"1",
               "open_notional":"30000","realized_pnl":"0","funding_paid":"0"})
    );
    assert_eq!(positions[1]["account"], "alice");
    assert_eq!(positions[1]["size"], "-1");
    assert_eq!(positions[1]["open_notional"], "-30000");
    // Line 16: no premium samples away from 0, so the rate is the interest 0.0001; the index
    // moves by rate * oracle * QU = 0.0001 * 30000 * 1000 units = 3000 units per lot.
    assert_eq!(
        *of(&events, "funding", 16)[0],
        json!({"ev":"funding","seq":16,"market":"BTC-PERP","rate":"0.0001","index":"0.003"})
    );
    // Line 19: premium (29000 - 28500) / 28500 = 17543859 ppb (toward zero); EMA 1/8 of it =
    // 2192982 ppb; 28500 + 28500 * 0.002192982 = 28562.49 -> 28562 = median(28562, 28500
    // (no ask: mid = oracle), 30000 (last trade)).
    assert_eq!(
        *of(&events, "oracle", 19)[0],
        json!({"ev":"oracle","seq":19,"market":"BTC-PERP","price":"28500","mark":"28562",
               "premium":"0.017543859"})
    );
    // Bob: equity 1985 - 3 - 1438 = 544 < MM 714.05: sold into carol's 29000 bid with the
    // liquidation oid 0, realizing -1000 and settling the 3 of funding.
    let fill = of(&events, "fill", 19)[0];
    assert_eq!(fill["taker_oid"], 0);
    assert_eq!(fill["taker_account"], "bob");
    assert_eq!(fill["maker_oid"], "c-1");
    assert_eq!(fill["side"], "sell");
    assert_eq!(fill["price"], "29000");
    assert_eq!(fill["taker_fee"], "14.5");
    let positions = of(&events, "position", 19);
    assert_eq!(
        *positions[0],
        json!({"ev":"position","seq":19,"account":"bob","market":"BTC-PERP","size":"0",
               "open_notional":"0","realized_pnl":"-1000","funding_paid":"3"})
    );
    assert_eq!(positions[1]["account"], "carol");
    assert_eq!(positions[1]["open_notional"], "29000");
    // Fee 0.5% of 29000 = 145 to the insurance fund; the book took it all: no bad debt.
    assert_eq!(
        *of(&events, "liquidation", 19)[0],
        json!({"ev":"liquidation","seq":19,"account":"bob","market":"BTC-PERP","step":"book",
               "qty":"1","notional":"29000","fee":"145","bad_debt":"0"})
    );
    // The liquidation record comes after the step's fill and positions.
    let line19: Vec<&str> = events
        .iter()
        .filter(|e| e["seq"] == 19)
        .map(|e| e["ev"].as_str().unwrap())
        .collect();
    assert_eq!(
        line19,
        ["oracle", "fill", "position", "position", "liquidation"]
    );
    // Alice's reduce-only buy of 2 was cut to her short of 1.
    assert_eq!(
        of(&events, "book", 20)[0]["bids"],
        json!([["29000", "1"], ["28000", "1"]])
    );
    // Lines 21, 22 (transfer back, withdraw) are silent: nothing after the book.
    assert_eq!(events.last().unwrap()["seq"], 20);
}

#[test]
fn example_leaves_the_engine_in_the_documented_state() {
    let mut replayer = Replayer::default();
    let mut out = Vec::new();
    for (i, line) in example().lines().enumerate() {
        replayer.line(i as u64 + 1, line, &mut out);
    }
    let engine = replayer.engine();
    assert_eq!(engine.check_invariants(), Ok(()));
    // String accounts get ids from 2^63 in first-seen order: alice, bob, carol.
    let (alice, bob, carol) = (INTERNED_ID_BASE, INTERNED_ID_BASE + 1, INTERNED_ID_BASE + 2);
    const USDC: i64 = 1_000_000;
    const USDC_WIDE: i128 = USDC as i128;
    assert_eq!(engine.insurance_fund(), 145 * USDC);
    // Bob: 1985 - 3 - 1000 - 14.5 - 145 = 822.5, minus the 500 moved back.
    assert_eq!(engine.perp_collateral(bob), Some((322_500_000, 0)));
    let position = engine.position_view(bob, 0).unwrap();
    assert_eq!((position.size, position.open_notional), (0, 0));
    // Alice: 3000 of initial margin at the mark moved into her isolated margin, plus 500.
    let position = engine.position_view(alice, 0).unwrap();
    assert!(position.isolated);
    assert_eq!(position.leverage, 10);
    assert_eq!(position.isolated_margin, 3_500 * USDC);
    assert_eq!(
        (position.size, position.open_notional),
        (-1000, -30_000 * USDC_WIDE)
    );
    let position = engine.position_view(carol, 0).unwrap();
    assert_eq!(
        (position.size, position.open_notional),
        (1000, 29_000 * USDC_WIDE)
    );
    let market = engine.perp_market(0).unwrap();
    assert_eq!((market.oracle, market.mark), (28_500, 28_562));
    assert_eq!(market.funding_index, 3_000_000_000_000);
    assert_eq!(market.open_interest, 1000);
}

#[test]
fn docs_perp_example_matches_the_binary() {
    let doc = std::fs::read_to_string(root().join("docs/replay.md")).unwrap();
    let section = doc
        .split("## Perpetuals worked example")
        .nth(1)
        .expect("perpetuals worked example section");
    let blocks: Vec<&str> = section
        .split("```json\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap())
        .collect();
    assert_eq!(
        blocks[0],
        example(),
        "docs input differs from examples/perps.jsonl"
    );
    let output = Command::new(BIN)
        .arg("replay")
        .arg(root().join("examples/perps.jsonl"))
        .output()
        .unwrap();
    assert_eq!(
        blocks[1],
        String::from_utf8(output.stdout).unwrap(),
        "docs output differs from the binary's"
    );
}

/// Bob long 1 at 30000 with 1985 of collateral, alice short; the mark then drops to 28000
/// with an empty book: bob's equity is 1985 - 2000 = -15, so nothing goes to the book.
const CRASH: &str = r#"{"op":"oracle","market":"BTC-PERP","prices":["30000"]}
{"op":"order","account":"alice","market":"BTC-PERP","oid":1,"side":"sell","price":"30000","qty":"1"}
{"op":"order","account":"bob","market":"BTC-PERP","oid":1,"side":"buy","price":"30000","qty":"1"}
{"op":"oracle","market":"BTC-PERP","prices":["28000"]}
"#;

#[test]
fn bankrupt_position_without_insurance_is_deleveraged() {
    let events = run_stdin(&format!("{}{CRASH}", setup()), &[]);
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| e["seq"] == 11)
        .map(|e| e["ev"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["oracle", "position", "position", "adl", "liquidation"]
    );
    // The bankruptcy value: 28000 at the mark plus the 15 of bad debt, which alice (the only
    // opposite position) absorbs: she realizes 30000 - 28015 = 1985 instead of 2000.
    assert_eq!(
        *of(&events, "adl", 11)[0],
        json!({"ev":"adl","seq":11,"account":"alice","market":"BTC-PERP","qty":"1","notional":"28015"})
    );
    assert_eq!(of(&events, "position", 11)[1]["realized_pnl"], "1985");
    assert_eq!(
        *of(&events, "liquidation", 11)[0],
        json!({"ev":"liquidation","seq":11,"account":"bob","market":"BTC-PERP","step":"adl",
               "qty":"1","notional":"28015","fee":"0","bad_debt":"15"})
    );
}

#[test]
fn insurance_account_is_named_and_backstops() {
    let funded = r#"{"op":"deposit","account":"insurance","asset":"USDC","amount":"50000"}
{"op":"transfer","account":"insurance","amount":"50000"}
"#;
    let input = format!("{}{funded}{CRASH}", setup());
    let events = run_stdin(&input, &[]);
    let positions = of(&events, "position", 13);
    assert_eq!(positions[0]["account"], "bob");
    assert_eq!(
        *positions[1],
        json!({"ev":"position","seq":13,"account":"insurance","market":"BTC-PERP","size":"1",
               "open_notional":"28015","realized_pnl":"0","funding_paid":"0"})
    );
    assert_eq!(
        *of(&events, "liquidation", 13)[0],
        json!({"ev":"liquidation","seq":13,"account":"bob","market":"BTC-PERP","step":"backstop",
               "qty":"1","notional":"28015","fee":"0","bad_debt":"15"})
    );
    assert!(of(&events, "adl", 13).is_empty());
    // In-process: "insurance" is the engine's insurance account.
    let mut replayer = Replayer::default();
    let mut out = Vec::new();
    for (i, line) in input.lines().enumerate() {
        replayer.line(i as u64 + 1, line, &mut out);
    }
    let position = replayer
        .engine()
        .position_view(INSURANCE_ACCOUNT, 0)
        .unwrap();
    assert_eq!(position.size, 1000);
    assert_eq!(replayer.engine().insurance_fund(), 50_000_000_000);
    assert_eq!(replayer.engine().check_invariants(), Ok(()));
}

/// Bad perp lines after the example's setup (lines 1..=7), then a good one.
const BAD: &[(&str, &str, &str)] = &[
    (
        r#"{"op":"leverage","account":"bob","market":"BTC-PERP","leverage":0}"#,
        "rejected",
        "invalid_leverage",
    ),
    (
        r#"{"op":"leverage","account":"bob","market":"BTC-PERP","leverage":21}"#,
        "rejected",
        "invalid_leverage",
    ),
    (
        r#"{"op":"leverage","account":"bob","market":"BTC-PERP","leverage":"5"}"#,
        "error",
        "malformed",
    ),
    (
        r#"{"op":"leverage","account":"bob","market":"BTC-PERP","leverage":2.5}"#,
        "error",
        "malformed",
    ),
    (
        r#"{"op":"leverage","account":"bob","market":"BTC-PERP","leverage":5,"mode":"both"}"#,
        "error",
        "malformed",
    ),
    (
        r#"{"op":"leverage","account":"bob","market":"ETH-PERP","leverage":5}"#,
        "rejected",
        "unknown_market",
    ),
    (
        r#"{"op":"leverage","account":"bob","market":"ETH-USDC","leverage":5}"#,
        "rejected",
        "not_perp_market",
    ),
    (
        r#"{"op":"funding","market":"ETH-USDC"}"#,
        "rejected",
        "not_perp_market",
    ),
    (
        r#"{"op":"isolated_margin","account":"bob","market":"ETH-USDC","amount":"1"}"#,
        "rejected",
        "not_perp_market",
    ),
    (
        r#"{"op":"oracle","market":"ETH-USDC","prices":["1"]}"#,
        "rejected",
        "not_perp_market",
    ),
    (
        r#"{"op":"oracle","market":"NOPE","prices":["1"]}"#,
        "rejected",
        "unknown_market",
    ),
    (
        r#"{"op":"oracle","market":"BTC-PERP","prices":["abc"]}"#,
        "error",
        "malformed",
    ),
    (
        r#"{"op":"oracle","market":"BTC-PERP","prices":["1e3"]}"#,
        "error",
        "malformed",
    ),
    (
        r#"{"op":"oracle","market":"BTC-PERP","prices":"30000"}"#,
        "error",
        "malformed",
    ),
    (
        r#"{"op":"oracle","market":"BTC-PERP","prices":[]}"#,
        "error",
        "malformed",
    ),
    (
        r#"{"op":"oracle","market":"BTC-PERP","prices":["1","2","3","4","5","6","7","8","9"]}"#,
        "error",
        "malformed",
    ),
    (
        r#"{"op":"oracle","market":"BTC-PERP","prices":["30000.5"]}"#,
        "rejected",
        "tick_size",
    ),
    (
        r#"{"op":"oracle","market":"BTC-PERP","prices":["30000","0"]}"#,
        "rejected",
        "invalid_price",
    ),
    (
        r#"{"op":"funding","market":"BTC-PERP"}"#,
        "rejected",
        "no_oracle_price",
    ),
    (
        r#"{"op":"transfer","account":"bob","amount":"0.0000001"}"#,
        "rejected",
        "invalid_qty",
    ),
    (
        r#"{"op":"transfer","account":"bob","amount":"-5000"}"#,
        "rejected",
        "insufficient_margin",
    ),
    (
        r#"{"op":"transfer","account":"bob","amount":"5000"}"#,
        "rejected",
        "insufficient_balance",
    ),
    (
        r#"{"op":"transfer","account":"nobody","amount":"1"}"#,
        "rejected",
        "unknown_account",
    ),
    (r#"{"op":"transfer","account":"bob"}"#, "error", "malformed"),
    (
        r#"{"op":"isolated_margin","account":"bob","market":"BTC-PERP","amount":"1"}"#,
        "rejected",
        "no_position",
    ),
    (
        r#"{"op":"perp_market","market":"ETH-PERP","collateral":"ETH","tick":"1","lot":"0.01"}"#,
        "rejected",
        "invalid_market",
    ),
    (
        r#"{"op":"perp_market","market":"ETH-PERP","collateral":"USDC","tick":"1","lot":"0.01","margin_tiers":[{"imr":"0.05","mmr":"0.05"}]}"#,
        "rejected",
        "invalid_market",
    ),
    (
        r#"{"op":"perp_market","market":"ETH-PERP","collateral":"USDC","tick":"1","lot":"0.01","price_band":"0.0000000001"}"#,
        "rejected",
        "invalid_market",
    ),
    (
        r#"{"op":"perp_market","market":"ETH-PERP","collateral":"USDC","tick":"1","lot":"0.01","margin_tiers":[1]}"#,
        "error",
        "malformed",
    ),
    (
        r#"{"op":"perp_market","market":"BTC-PERP","collateral":"USDC","tick":"1","lot":"0.01"}"#,
        "rejected",
        "already_exists",
    ),
    (
        r#"{"op":"order","account":"bob","market":"ETH-USDC","oid":9,"side":"buy","price":"1","qty":"1","reduce_only":true}"#,
        "rejected",
        "reduce_only",
    ),
    (
        r#"{"op":"order","account":"bob","market":"BTC-PERP","oid":9,"side":"buy","price":"1","qty":"1","reduce_only":1}"#,
        "error",
        "malformed",
    ),
];

#[test]
fn malformed_perp_lines_get_typed_errors_and_the_replay_goes_on() {
    let spot = r#"{"op":"market","market":"ETH-USDC","base":"ETH","quote":"USDC","tick":"0.01","lot":"0.001"}"#;
    let mut input = setup();
    input.push_str(spot);
    input.push('\n');
    for (line, _, _) in BAD {
        input.push_str(line);
        input.push('\n');
    }
    input.push_str(r#"{"op":"oracle","market":"BTC-PERP","prices":["30000"]}"#);
    input.push('\n');
    let events = run_stdin(&input, &[]);
    let first = 9;
    let got: Vec<(u64, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["ev"].as_str().unwrap(),
                e["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let mut expected: Vec<(u64, &str, &str)> = BAD
        .iter()
        .enumerate()
        .map(|(i, &(_, ev, reason))| (first + i as u64, ev, reason))
        .collect();
    expected.push((first + BAD.len() as u64, "oracle", ""));
    assert_eq!(got, expected);
    // Refusals found by the translator say why; errors name the field.
    let detail = |seq: u64| events.iter().find(|e| e["seq"] == seq).unwrap()["detail"].clone();
    assert_eq!(
        detail(first),
        "leverage 0 is outside 1..=20, the max_leverage of \"BTC-PERP\""
    );
    assert_eq!(detail(first + 6), "\"ETH-USDC\" is a spot market");
    assert_eq!(
        detail(first + 15),
        "field \"prices\": expected 1 to 8 prices, got 9"
    );
    assert_eq!(
        detail(first + 11),
        "field \"prices\"[0]: expected a decimal string like \"12.5\", got \"abc\""
    );
    assert!(detail(first + 25)
        .as_str()
        .unwrap()
        .contains("same collateral"));
    // Rejections echo the account of commands that name one.
    assert_eq!(events[0]["account"], "bob");
}

#[test]
fn replays_are_deterministic_and_price_sensitive() {
    let input = example();
    let a = state_hash(&input);
    assert_eq!(a, state_hash(&input));
    let other = input.replace(r#"["28500","28400","28600"]"#, r#"["28600"]"#);
    assert_ne!(input, other);
    assert_ne!(a, state_hash(&other));
}

/// Every perp command the translator makes, written back by `command_json` and read by a
/// second translator, is the same command; the rewritten input replays to the same state
/// hash. Lines whose commands have no JSON form (asset, spot market) are kept as written.
#[test]
fn command_json_is_the_exact_inverse_for_perp_commands() {
    let funded = r#"{"op":"deposit","account":"insurance","asset":"USDC","amount":"50000"}
{"op":"transfer","account":"insurance","amount":"50000"}
{"op":"leverage","account":"bob","market":"BTC-PERP","leverage":7}
{"op":"perp_market","market":"ETH-PERP","collateral":"USDC","tick":"0.01","lot":"0.1","max_leverage":50,"open_interest_cap":"1000","interest":"-0.00002","liquidation_chunk_notional":"12.5","margin_tiers":[{"notional_up_to":"5000.5","imr":"0.02","mmr":"0.01"},{"notional_up_to":"90000","imr":"0.04","mmr":"0.02"},{"imr":"0.333333334","mmr":"0.1"}]}
{"op":"perp_market","market":"SOL-PERP","collateral":"USDC","tick":"0.001","lot":"1"}
{"op":"oracle","market":"ETH-PERP","prices":["2000","2000.5","1999.99","2001"]}
{"op":"order","account":"carol","market":"ETH-PERP","oid":"e1","side":"buy","type":"market","qty":"1","reduce_only":true}
"#;
    let inputs = [
        example(),
        format!("{}{CRASH}", setup()),
        format!("{}{funded}{CRASH}", setup()),
        format!(
            "{}{}\n",
            setup(),
            BAD.iter().map(|b| b.0).collect::<Vec<_>>().join("\n")
        ),
    ];
    for input in inputs {
        let (rewritten, hash) = rewrite_through_command_json(&input);
        assert!(rewritten.contains(r#""op":"perp_market""#), "{rewritten}");
        assert_eq!(state_hash(&input), hash);
        assert_eq!(state_hash(&rewritten), hash, "{rewritten}");
    }
}

/// Translates `input` line by line and runs it on an engine; writes every line whose
/// commands all have a JSON form as those forms instead, checking that a second translator
/// reads them back as exactly the same commands. Returns the rewritten input and the
/// engine's state hash (hex).
fn rewrite_through_command_json(input: &str) -> (String, String) {
    let mut first = Translator::default();
    let mut engine: Engine = Engine::new(EngineConfig::default());
    let mut second = Translator::default();
    let (mut out, mut events) = (Vec::new(), Vec::new());
    let mut rewritten = String::new();
    let mut inverted = 0;
    for (i, line) in input.lines().enumerate() {
        let seq = i as u64 + 1;
        let commands: Vec<engine::Command> = first
            .line(seq, line, &mut out)
            .into_iter()
            .filter_map(|step| match step {
                Step::Run { command, .. } => Some(command),
                Step::Book { .. } => None,
            })
            .collect();
        for command in &commands {
            events.clear();
            engine.step(command, &mut events);
        }
        let json: Option<Vec<Value>> = commands.iter().map(|c| first.command_json(c)).collect();
        let lines = match json {
            Some(values) if !values.is_empty() => {
                inverted += values.len();
                values.iter().map(Value::to_string).collect()
            }
            _ => vec![line.to_string()],
        };
        let mut again = Vec::new();
        for text in &lines {
            let mut records: Vec<Output> = Vec::new();
            for step in second.line(seq, text, &mut records) {
                if let Step::Run { command, .. } = step {
                    again.push(command);
                }
            }
            rewritten.push_str(text);
            rewritten.push('\n');
        }
        assert_eq!(again, commands, "line {seq}: {line} -> {lines:?}");
    }
    assert!(inverted > 0);
    assert_eq!(engine.check_invariants(), Ok(()));
    (rewritten, sequencer::hex(&engine.state_hash()))
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Random trading in two perp markets with prices that wander: orders of every kind,
/// oracle moves, funding, leverage and margin changes, transfers; liquidations by all three
/// steps happen along the way.
fn random_perp_session(seed: u64) -> String {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut lines = vec![
        r#"{"op":"asset","asset":"USD","decimals":2}"#.to_string(),
        r#"{"op":"perp_market","market":"P","collateral":"USD","tick":"1","lot":"1","max_leverage":20,"taker_fee_bps":5,"maker_fee_bps":-1,"margin_tiers":[{"notional_up_to":"2000","imr":"0.05","mmr":"0.03"},{"imr":"0.2","mmr":"0.1"}],"liquidation_fee":"0.01","liquidation_chunk_notional":"150","impact_notional":"50","price_band":"0.2","max_price":"1000"}"#.to_string(),
        r#"{"op":"perp_market","market":"Q","collateral":"USD","tick":"0.5","lot":"2","max_leverage":10,"max_price":"1000","interest":"-0.001"}"#.to_string(),
        r#"{"op":"deposit","account":"insurance","asset":"USD","amount":"300"}"#.to_string(),
        r#"{"op":"transfer","account":"insurance","amount":"300"}"#.to_string(),
    ];
    for a in 0..5 {
        lines.push(format!(
            r#"{{"op":"deposit","account":{a},"asset":"USD","amount":"1000"}}"#
        ));
        lines.push(format!(
            r#"{{"op":"transfer","account":{a},"amount":"{}"}}"#,
            100 + rng.below(900)
        ));
    }
    lines.push(r#"{"op":"oracle","market":"P","prices":["100"]}"#.into());
    lines.push(r#"{"op":"oracle","market":"Q","prices":["100"]}"#.into());
    let mut price = [100i64, 100];
    for oid in 0..400 {
        let a = rng.below(5);
        let (m, mi) = [("P", 0), ("Q", 1)][rng.below(2) as usize];
        let side = ["buy", "sell"][rng.below(2) as usize];
        let line = match rng.below(12) {
            0..=4 => {
                let p = (price[mi] + rng.below(21) as i64 - 10).max(1);
                format!(
                    r#"{{"op":"order","account":{a},"market":"{m}","oid":{oid},"side":"{side}","price":"{p}","qty":"{}","tif":"{}","reduce_only":{}}}"#,
                    2 * (1 + rng.below(8)),
                    ["gtc", "ioc", "alo", "fok"][rng.below(4) as usize],
                    rng.below(5) == 0
                )
            }
            5 => {
                price[mi] = (price[mi] + rng.below(31) as i64 - 15).clamp(20, 900);
                format!(
                    r#"{{"op":"oracle","market":"{m}","prices":["{}","{}"]}}"#,
                    price[mi],
                    price[mi] + rng.below(3) as i64
                )
            }
            6 => format!(r#"{{"op":"funding","market":"{m}"}}"#),
            7 => format!(r#"{{"op":"cancel_all","account":{a},"market":"{m}"}}"#),
            8 => format!(
                r#"{{"op":"leverage","account":{a},"market":"{m}","leverage":{},"mode":"{}"}}"#,
                1 + rng.below(10),
                ["cross", "isolated"][rng.below(2) as usize]
            ),
            9 => format!(
                r#"{{"op":"isolated_margin","account":{a},"market":"{m}","amount":"{}"}}"#,
                rng.below(100) as i64 - 50
            ),
            10 => format!(
                r#"{{"op":"transfer","account":{a},"amount":"{}"}}"#,
                rng.below(200) as i64 - 100
            ),
            _ => format!(
                r#"{{"op":"order","account":{a},"market":"{m}","oid":{oid},"side":"{side}","type":"market","qty":"{}","reduce_only":{}}}"#,
                2 * (1 + rng.below(5)),
                rng.below(3) == 0
            ),
        };
        lines.push(line);
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn random_perp_sessions_keep_invariants_and_survive_command_json() {
    let mut kinds = std::collections::BTreeSet::new();
    for seed in 1..=40 {
        let input = random_perp_session(seed);
        let mut replayer = Replayer::default();
        let mut out = Vec::new();
        for (i, line) in input.lines().enumerate() {
            out.clear();
            replayer.line(i as u64 + 1, line, &mut out);
            for record in &out {
                let value = serde_json::to_value(record).unwrap();
                assert_eq!(value["seq"], i as u64 + 1, "{line} -> {value}");
                assert_ne!(value["ev"], "error", "{line} -> {value}");
                let step = value.get("step").and_then(Value::as_str).unwrap_or("");
                kinds.insert(format!("{}{step}", value["ev"].as_str().unwrap()));
            }
            assert_eq!(replayer.engine().check_invariants(), Ok(()), "{line}");
        }
        let (rewritten, hash) = rewrite_through_command_json(&input);
        assert_eq!(replayer.state_hash_hex(), hash);
        let mut again = Replayer::default();
        for (i, line) in rewritten.lines().enumerate() {
            again.line(i as u64 + 1, line, &mut out);
        }
        assert_eq!(again.state_hash_hex(), hash, "seed {seed}");
    }
    for kind in [
        "oracle",
        "funding",
        "position",
        "liquidationbook",
        "liquidationbackstop",
        "liquidationadl",
        "adl",
    ] {
        assert!(kinds.contains(kind), "{kind} never happened: {kinds:?}");
    }
}

#[test]
fn registry_lines_include_perp_markets() {
    assert!(Translator::is_registry_line(
        r#"{"op":"perp_market","market":"P","collateral":"USDC","tick":"1","lot":"1"}"#
    ));
    assert!(!Translator::is_registry_line(
        r#"{"op":"oracle","market":"P","prices":["1"]}"#
    ));
}
