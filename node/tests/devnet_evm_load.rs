//! The devnet's EVM load (`nexus devnet --evm-load`) on four validator processes: every
//! transaction the client sent is included exactly once (its receipt counted in one block of
//! validator 0), none reverted or refused, nothing left over after the drain, for ETH
//! transfers and for CoreWriter orders (after each account's deposit); every validator's
//! root is equal at every height. No figure is asserted: only counts.

use std::process::Command;

use serde_json::Value;

/// Runs `nexus devnet --bench 2` with an EVM load of `kind` and returns its `devnet_stopped`
/// and `bench` lines.
fn run(kind: &str) -> (Value, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(["devnet", "--validators", "4", "--rate", "0", "--bench", "2"])
        .args([
            "--evm-load",
            kind,
            "--evm-rate",
            "100",
            "--evm-accounts",
            "8",
        ])
        .output()
        .expect("nexus devnet runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let line = |event: &str| -> Value {
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == event)
            .unwrap_or_else(|| panic!("no {event} line in {stdout}"))
    };
    (line("devnet_stopped"), line("bench"))
}

#[test]
fn every_evm_load_transaction_is_included_exactly_once() {
    for kind in ["transfer", "order"] {
        let (stopped, bench) = run(kind);
        assert_eq!(stopped["equal_roots"], true, "{stopped}");
        let evm = &bench["evm"];
        assert_eq!(evm["kind"], kind, "{bench}");
        let sent = evm["sent"].as_u64().expect("sent");
        // At 100 a second for the 2 s warm-up and the 2 s measured (the `order` kind's first
        // 8 are the deposits).
        assert!(sent >= 200, "{evm}");
        assert_eq!(evm["included"], sent, "{evm}");
        assert_eq!(evm["missing"], 0, "{evm}");
        assert_eq!(evm["duplicates"], 0, "{evm}");
        assert_eq!(evm["reverted"], 0, "{evm}");
        assert_eq!(evm["refusals"], serde_json::json!({}), "{evm}");
        assert_eq!(evm["others_in_blocks"], 0, "{evm}");
        assert_eq!(evm["failed_requests"], 0, "{evm}");
        assert!(evm["window_included"].as_u64() > Some(0), "{evm}");
        assert!(evm["submit_to_receipt_ms"]["p50"].is_number(), "{evm}");
    }
}
