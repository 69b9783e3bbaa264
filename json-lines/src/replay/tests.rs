//! Translator and replayer tests.

use super::*;
use serde_json::json;

fn feed(replayer: &mut Replayer, lines: &[&str]) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        replayer.line(i as u64 + 1, line, &mut out);
    }
    out.iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect()
}

fn run_lines(lines: &[&str]) -> Vec<Value> {
    feed(&mut Replayer::default(), lines)
}

#[test]
fn refused_market_registers_no_asset() {
    let out = run_lines(&[
        r#"{"op":"market","market":"M","base":"A","quote":"B","tick":"0.000000001","lot":"1"}"#,
        r#"{"op":"deposit","account":1,"asset":"A","amount":"1"}"#,
        r#"{"op":"market","market":"M","base":"A","quote":"B","tick":"1","lot":"1"}"#,
        r#"{"op":"deposit","account":1,"asset":"A","amount":"1"}"#,
    ]);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0]["reason"], "invalid_market");
    assert_eq!(out[1]["reason"], "unknown_asset");
    assert_eq!(out[1]["seq"], 2);
}

#[test]
fn asset_redeclaration_with_same_decimals_is_a_no_op() {
    let out = run_lines(&[
        r#"{"op":"asset","asset":"A","decimals":2}"#,
        r#"{"op":"asset","asset":"A","decimals":2}"#,
        r#"{"op":"asset","asset":"A"}"#,
        r#"{"op":"market","market":"M","base":"B","quote":"C","tick":"1","lot":"1"}"#,
        r#"{"op":"asset","asset":"B","decimals":8}"#,
        r#"{"op":"asset","asset":"C","decimals":0}"#,
    ]);
    let reasons: Vec<(u64, &str)> = out
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(reasons, [(3, "already_exists"), (6, "already_exists")]);
}

#[test]
fn default_max_price_is_clamped_to_the_quote_range() {
    let mut replayer = Replayer::default();
    let out = feed(
        &mut replayer,
        &[
            r#"{"op":"asset","asset":"DAI","decimals":18}"#,
            r#"{"op":"market","market":"M","base":"ETH","quote":"DAI","tick":"0.01","lot":"0.001"}"#,
        ],
    );
    assert!(out.is_empty(), "{out:?}");
    let spec = replayer.engine().market_spec(0).unwrap();
    assert_eq!(spec.quote_units_per_tick_lot, 10_000_000_000_000);
    assert_eq!(spec.max_price_ticks, i64::MAX / 10_000_000_000_000);
    assert_eq!(spec.base_units_per_lot, 100_000);
    assert_eq!(spec.min_lots, 1);
}

#[test]
fn explicit_max_price_and_fees_reach_the_engine() {
    let mut replayer = Replayer::default();
    let out = feed(
        &mut replayer,
        &[
            r#"{"op":"market","market":"M","base":"A","quote":"B","tick":"0.25","lot":"2","min_qty":"10","max_price":"1000","maker_fee_bps":-3,"taker_fee_bps":7}"#,
            r#"{"op":"market","market":"N","base":"A","quote":"B","tick":"1","lot":"1","max_price":"999.5"}"#,
            r#"{"op":"market","market":"N","base":"A","quote":"B","tick":"1","lot":"1","taker_fee_bps":10,"maker_fee_bps":-11}"#,
        ],
    );
    let spec = replayer.engine().market_spec(0).unwrap();
    assert_eq!(spec.max_price_ticks, 4000);
    assert_eq!(spec.min_lots, 5);
    assert_eq!(spec.base_units_per_lot, 200_000_000);
    assert_eq!(spec.quote_units_per_tick_lot, 50_000_000);
    assert_eq!((spec.maker_fee_bps, spec.taker_fee_bps), (-3, 7));
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|e| e["reason"] == "invalid_market"));
    assert!(replayer.engine().market_spec(1).is_none());
}

#[test]
fn insurance_is_a_reserved_account_name_both_ways() {
    let mut translator = Translator::numbers_only();
    let mut out = Vec::new();
    let steps = translator.line(
        1,
        r#"{"op":"deposit","account":"insurance","asset":"A","amount":"1"}"#,
        &mut out,
    );
    // No asset A: rejected, but the name was accepted even by a numbers-only translator.
    assert!(steps.is_empty());
    assert_eq!(out.len(), 1);
    assert_eq!(
        translator.account_id(&json!("insurance")),
        Ok(INSURANCE_ACCOUNT)
    );
    assert_eq!(
        translator.account_value(INSURANCE_ACCOUNT),
        json!("insurance")
    );
    assert!(translator.account_id(&json!("bob")).is_err());
}

#[test]
fn default_margin_table_follows_max_leverage() {
    let mut replayer = Replayer::default();
    let out = feed(
        &mut replayer,
        &[
            r#"{"op":"asset","asset":"USD","decimals":2}"#,
            r#"{"op":"perp_market","market":"P","collateral":"USD","tick":"0.5","lot":"2","max_leverage":3}"#,
        ],
    );
    assert!(out.is_empty(), "{out:?}");
    let spec = replayer.engine().perp_market(0).unwrap().spec;
    assert_eq!(spec.quote_units_per_tick_lot, 100);
    assert_eq!(spec.tiers().len(), 1);
    assert_eq!(spec.tiers()[0].imr_ppb, 333_333_334);
    assert_eq!(spec.tiers()[0].mmr_ppb, 166_666_667);
    assert_eq!(spec.tiers()[0].notional_up_to, Units::MAX);
    assert_eq!(spec.open_interest_cap_lots, Lots::MAX);
    assert_eq!(spec.price_band_ppb, 100_000_000);
    assert_eq!(spec.funding_cap_ppb, 10_000_000);
    assert_eq!(spec.interest_ppb, 0);
    assert_eq!(spec.impact_notional, 100_000);
    assert_eq!(spec.liquidation_chunk_notional, Units::MAX);
    assert_eq!(spec.liquidation_fee_ppb, 0);
    assert_eq!((spec.maker_fee_bps, spec.taker_fee_bps), (0, 0));
}

#[test]
fn details_quoting_input_are_clipped() {
    let long = "é".repeat(10_000);
    let out = run_lines(&[&format!(r#"{{"op":"{long}"}}"#)]);
    let detail = out[0]["detail"].as_str().unwrap();
    assert_eq!(detail.chars().count(), MAX_DETAIL_CHARS + 1);
    assert!(detail.starts_with("unknown op \"éé"));
}

#[test]
fn output_records_serialize_with_ev_and_seq_first() {
    let out = Output::Accepted {
        seq: 3,
        oid: json!("x"),
        account: json!(1),
    };
    assert_eq!(
        serde_json::to_string(&out).unwrap(),
        r#"{"ev":"accepted","seq":3,"oid":"x","account":1}"#
    );
}

/// A small deterministic generator (xorshift64*), so the garbage test needs no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn garbage_never_panics_and_every_record_names_its_line() {
    let valid = [
        r#"{"op":"asset","asset":"Q","decimals":2}"#,
        r#"{"op":"market","market":"M","base":"B","quote":"Q","tick":"0.5","lot":"0.1","min_qty":"0.1","taker_fee_bps":5,"maker_fee_bps":-1}"#,
        r#"{"op":"deposit","account":1,"asset":"Q","amount":"100000"}"#,
        r#"{"op":"deposit","account":"s","asset":"B","amount":"1000"}"#,
        r#"{"op":"order","account":"s","market":"M","oid":1,"side":"sell","price":"10","qty":"3"}"#,
        r#"{"op":"order","account":1,"market":"M","oid":2,"side":"buy","price":"10.5","qty":"1.2","tif":"ioc","stp":"cancel_both"}"#,
        r#"{"op":"order","account":1,"market":"M","oid":3,"side":"buy","type":"market","qty":"2"}"#,
        r#"{"op":"modify","account":"s","market":"M","oid":1,"price":"9.5","qty":"0.5"}"#,
        r#"{"op":"cancel","account":"s","market":"M","oid":1}"#,
        r#"{"op":"cancel_all","account":1,"market":"M"}"#,
        r#"{"op":"withdraw","account":1,"asset":"Q","amount":"1.25"}"#,
        r#"{"op":"book","market":"M","depth":3}"#,
        r#"{"op":"perp_market","market":"P","collateral":"Q","tick":"0.5","lot":"0.1","max_leverage":20,"taker_fee_bps":5,"maker_fee_bps":-1,"margin_tiers":[{"notional_up_to":"500","imr":"0.05","mmr":"0.02"},{"imr":"0.1","mmr":"0.05"}],"liquidation_fee":"0.01","liquidation_chunk_notional":"20","interest":"0.0001","impact_notional":"10"}"#,
        r#"{"op":"transfer","account":1,"amount":"5000"}"#,
        r#"{"op":"transfer","account":"s","amount":"-2.5"}"#,
        r#"{"op":"deposit","account":"s","asset":"Q","amount":"100000"}"#,
        r#"{"op":"transfer","account":"s","amount":"50000"}"#,
        r#"{"op":"oracle","market":"P","prices":["10","10.5","9.5"]}"#,
        r#"{"op":"oracle","market":"P","prices":["4"]}"#,
        r#"{"op":"order","account":1,"market":"P","oid":7,"side":"buy","price":"10","qty":"30"}"#,
        r#"{"op":"order","account":"s","market":"P","oid":8,"side":"sell","type":"market","qty":"20","reduce_only":true}"#,
        r#"{"op":"order","account":"s","market":"P","oid":9,"side":"sell","price":"9.5","qty":"40","tif":"ioc"}"#,
        r#"{"op":"leverage","account":1,"market":"P","leverage":5,"mode":"isolated"}"#,
        r#"{"op":"isolated_margin","account":1,"market":"P","amount":"-1.5"}"#,
        r#"{"op":"funding","market":"P"}"#,
        r#"{"op":"book","market":"P","depth":3}"#,
    ];
    let tokens = [
        "-1",
        "0",
        "1e9",
        "\"\"",
        "null",
        "true",
        "[]",
        "{}",
        "\"-0.5\"",
        "\"99999999999999999999999999999\"",
        "18446744073709551616",
        "\"0.0000000000000000000000000001\"",
        "\"buy\"",
        "\"market\"",
        "\"alo\"",
        "\"fok\"",
        "2147483648",
        "-9223372036854775808",
        "\"9223372036854775807\"",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut replayer = Replayer::default();
    let mut out = Vec::new();
    let mut kinds: HashMap<String, u64> = HashMap::new();
    for seq in 1..=30_000u64 {
        let base = valid[rng.below(valid.len())];
        let mut line = base.to_string();
        match rng.below(5) {
            0 => {}
            1 => {
                // Replace one JSON value by a token.
                let colons: Vec<usize> = line.match_indices(':').map(|(i, _)| i).collect();
                let at = colons[rng.below(colons.len())] + 1;
                let end = line[at..].find([',', '}']).map_or(line.len(), |i| at + i);
                line.replace_range(at..end, tokens[rng.below(tokens.len())]);
            }
            2 => line.truncate(rng.below(line.len())),
            3 => {
                let mut bytes = line.into_bytes();
                let i = rng.below(bytes.len());
                bytes[i] = (rng.next() % 128) as u8;
                line = String::from_utf8(bytes).unwrap_or_default();
            }
            _ => {
                let i = rng.below(line.len());
                let j = rng.below(line.len());
                let (a, b) = (i.min(j), i.max(j));
                if line.is_char_boundary(a) && line.is_char_boundary(b) {
                    line.replace_range(a..b, "");
                }
            }
        }
        out.clear();
        replayer.line(seq, &line, &mut out);
        for record in &out {
            let value = serde_json::to_value(record).unwrap();
            assert_eq!(value["seq"], seq, "{line} -> {value}");
            *kinds
                .entry(value["ev"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    assert_eq!(replayer.engine().check_invariants(), Ok(()));
    // The perp lines reach the engine and come back as every kind of perp record.
    for kind in ["oracle", "funding", "position", "liquidation"] {
        assert!(kinds.get(kind).is_some_and(|&n| n > 0), "{kind}: {kinds:?}");
    }
}
