//! `nexus-perf` end to end: the binary against a real `nexus pipeline`, once starting the node
//! itself and once against a node this test started (addresses given). Tiny runs (low rate,
//! about a second): the figures are not checked, only that every request was answered,
//! sequenced and finalized, that trades and the feed were seen, and that the reports exist.
//!
//! The `nexus` binary belongs to another package (`node`), so `CARGO_BIN_EXE_nexus` is not
//! available here. `cargo test --workspace` builds every workspace binary before running any
//! test, so `nexus` sits in the same target folder as this test's executable
//! (`target/<profile>/deps/..`). With `cargo test -p perf` alone, build it first
//! (`cargo build -p node`); if it is missing the tests say so and pass without running.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

const NEXUS_PERF: &str = env!("CARGO_BIN_EXE_nexus-perf");

/// `target/<profile>/nexus`, next to the `deps/` folder holding this test.
fn nexus_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let path = profile_dir.join(format!("nexus{}", std::env::consts::EXE_SUFFIX));
    path.is_file().then_some(path)
}

fn skip_message() {
    eprintln!(
        "SKIPPED: no `nexus` binary next to the test executable; run `cargo test --workspace`, \
         or `cargo build -p node` before `cargo test -p perf`"
    );
}

fn report(dir: &Path) -> Value {
    let json = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a JSON report");
    let html = json.with_extension("html");
    let page = std::fs::read_to_string(&html).expect("an HTML report next to the JSON");
    assert!(page.contains("<svg") && page.contains("</html>"));
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn run_perf(args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(NEXUS_PERF)
        .args(args)
        .arg("--report-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "nexus-perf failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    (report(dir.path()), stdout)
}

fn check_every_request_answered(report: &Value, expected: u64) {
    let counts = &report["counts"];
    assert_eq!(counts["requests"], expected, "{counts}");
    assert_eq!(counts["acked"], expected);
    assert_eq!(counts["unanswered"], 0);
    assert_eq!(counts["unsequenced"], 0);
    assert_eq!(counts["unfinalized"], 0);
    let latency = &report["latency"];
    for key in [
        "order_to_ack_from_due",
        "order_to_ack_from_send",
        "order_to_sequenced_from_send",
        "order_to_finalized_from_send",
    ] {
        assert_eq!(latency[key]["count"], expected, "{key}");
        assert!(latency[key]["p50_ns"].as_u64().unwrap() > 0, "{key}");
    }
    assert!(report["errors"].as_array().unwrap().is_empty());
}

#[test]
fn a_mixed_run_against_a_node_it_starts() {
    let Some(nexus) = nexus_binary() else {
        return skip_message();
    };
    let (report, stdout) = run_perf(&[
        "--nexus",
        nexus.to_str().unwrap(),
        "--scenario",
        "mixed",
        "--rate",
        "200",
        "--duration",
        "1.5",
        "--warmup",
        "0.5",
        "--quiet",
    ]);
    // 200/s for 1.5 s, split 100 / 40 / 60 between maker, taker and storm.
    check_every_request_answered(&report, 300);
    assert_eq!(report["node"]["kind"], "spawned");
    assert_eq!(report["node"]["stopped"]["event"], "stopped");
    let counts = &report["counts"];
    assert!(counts["taker_fills"].as_u64().unwrap() > 0, "{counts}");
    assert!(counts["quotes_on_feed"].as_u64().unwrap() > 0, "{counts}");
    assert!(counts["react_sent"].as_u64().unwrap() > 0, "{counts}");
    assert_eq!(
        report["latency"]["tick_to_trade"]["count"],
        counts["react_filled"]
    );
    assert_eq!(report["latency"]["loopback_open_loop"]["count"], 300);
    assert_eq!(report["latency"]["loopback_back_to_back"]["count"], 300);
    let kinds = report["order_to_ack_by_kind"].as_object().unwrap();
    for kind in ["maker_new", "taker_ioc", "storm_new", "storm_cancel"] {
        assert!(kinds.contains_key(kind), "{kind} missing");
    }
    assert!(stdout.contains("order-to-ack (from send)"));
    assert!(stdout.contains("loopback"));
}

#[test]
fn a_cancel_storm_against_a_running_node() {
    let Some(nexus) = nexus_binary() else {
        return skip_message();
    };
    let data = tempfile::tempdir().unwrap();
    let mut node = Command::new(&nexus)
        .arg("pipeline")
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--order-entry-listen",
            "127.0.0.1:0",
            "--market-data-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(node.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: Value = serde_json::from_str(&line).expect("ready line");
    let address = |field: &str| ready[field].as_str().unwrap().to_string();
    let result = std::panic::catch_unwind(|| {
        run_perf(&[
            "--node-oe",
            &address("order_entry"),
            "--node-md",
            &address("market_data"),
            "--node-admin",
            &address("listen"),
            "--scenario",
            "cancel-storm",
            "--rate",
            "100",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--baseline-count",
            "50",
            "--quiet",
        ])
    });
    let _ = node.kill();
    let _ = node.wait();
    let (report, _) = result.unwrap();
    check_every_request_answered(&report, 100);
    assert_eq!(report["node"]["kind"], "running");
    // Places and their cancels, nothing refused.
    assert!(
        report["rejects"].as_object().unwrap().is_empty(),
        "{}",
        report["rejects"]
    );
    assert_eq!(report["latency"]["loopback_open_loop"]["count"], 50);
}
