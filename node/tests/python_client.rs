//! The Python example client (`examples/python`, standard library only, Python 3.11): its
//! offline checks pass, and it trades with a signed transaction on a real `nexus run`: a
//! chain login, its transaction admitted under the hash it computed, and `Finalized`.
//! python3 must be on PATH (CI machines have it); without it these tests fail and say so.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

mod common;
use common::{run_chain, run_to_end};

/// How long the client may run before it is killed and the test fails.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A fixed Ed25519 seed: the bytes 0 to 31 (docs/protocol.md's key test vector).
const SEED_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The repository's `examples/python` folder.
fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python")
}

/// Fails the test, saying what is needed, unless `python3` (3.11 or later) is on PATH.
fn require_python() {
    let check = Command::new("python3")
        .args(["-c", "import sys; sys.exit(sys.version_info < (3, 11))"])
        .status();
    match check {
        Ok(status) if status.success() => {}
        Ok(_) => panic!("python3 is older than 3.11: these tests need python3 3.11 or later (standard library only)"),
        Err(error) => panic!("python3 (3.11, standard library only) is needed on PATH to run the Python example client: {error}"),
    }
}

/// What a run of the client did.
struct PythonRun {
    /// Its exit status.
    status: ExitStatus,
    /// Its standard output.
    stdout: String,
    /// Its standard output, then its standard error: for failure messages.
    report: String,
}

/// Runs `python3 -u ARGS` in `examples/python`; kills it and fails after [`CLIENT_TIMEOUT`].
fn run_python(args: &[&str]) -> PythonRun {
    require_python();
    let mut command = Command::new("python3");
    command.arg("-u").args(args).current_dir(python_dir());
    let run = run_to_end(command, CLIENT_TIMEOUT);
    let Some(status) = run.status else {
        panic!(
            "python3 {args:?} still running after {CLIENT_TIMEOUT:?}; it printed:\n{}",
            run.report
        );
    };
    PythonRun {
        status,
        stdout: run.stdout,
        report: run.report,
    }
}

/// The one line of `printed` that starts (after indentation) with `prefix`.
fn line_starting<'a>(printed: &'a str, prefix: &str) -> &'a str {
    let mut lines = printed
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with(prefix));
    let line = lines
        .next()
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{printed}"));
    assert!(
        lines.next().is_none(),
        "more than one {prefix:?} line in:\n{printed}"
    );
    line
}

/// The value of `field=` in a line the client printed with `describe`.
fn field<'a>(line: &'a str, field: &str) -> &'a str {
    let prefix = format!("{field}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {field} in {line:?}"))
}

#[test]
fn the_python_clients_offline_checks_pass() {
    let run = run_python(&["test_nexus_client.py"]);
    let printed = &run.report;
    assert!(run.status.success(), "{printed}");
    assert!(!printed.contains("FAIL"), "{printed}");
    assert!(
        printed.contains("ok   transactions.md transaction bytes"),
        "{printed}"
    );
    assert_eq!(run.stdout.lines().last(), Some("all passed"), "{printed}");
}

#[test]
fn the_python_client_trades_with_a_signed_transaction_on_a_chain() {
    let data = tempfile::tempdir().unwrap();
    let node = run_chain(data.path());
    let port = |field: &str| node.address(field).port().to_string();
    let (json, orders, feed) = (port("listen"), port("order_entry"), port("market_data"));
    let args = [
        "nexus_client.py",
        "--seed",
        SEED_HEX,
        "--deposit",
        "--json-port",
        &json,
        "--order-port",
        &orders,
        "--data-port",
        &feed,
        "--oid",
        "7",
    ];
    let run = run_python(&args);
    let printed = &run.stdout;
    assert!(run.status.success(), "{}", run.report);
    assert!(line_starting(printed, "account id 6581511237511020069").ends_with("(BLAKE3-derived)"));
    let login = line_starting(printed, "LoginAccepted");
    assert_eq!(field(login, "flags"), "0x80000000(chain)", "{printed}");
    assert_eq!(field(login, "account"), "6581511237511020069");
    let chain_info = line_starting(printed, "ChainInfo");
    assert_eq!(field(chain_info, "chain_id").len(), 64, "{printed}");
    let sent = line_starting(printed, "sent Transaction seq=1 hash ");
    let local_hash = sent.rsplit(' ').next().unwrap();
    let status = line_starting(printed, "TransactionStatus");
    assert_eq!(field(status, "client_seq"), "1", "{printed}");
    assert_eq!(field(status, "status"), "admitted", "{printed}");
    assert_eq!(field(status, "hash"), local_hash, "{printed}");
    assert!(!printed.contains("MISMATCH"), "{printed}");
    let accepted = line_starting(printed, "OrderAccepted");
    assert_eq!(
        (field(accepted, "client_seq"), field(accepted, "oid")),
        ("1", "7"),
        "{printed}"
    );
    let finalized = line_starting(printed, "Finalized");
    assert_eq!(field(finalized, "client_seq"), "1", "{printed}");
    assert_eq!(field(finalized, "seq"), field(accepted, "seq"), "{printed}");
    assert!(field(finalized, "height").parse::<u64>().unwrap() > 0);
}
