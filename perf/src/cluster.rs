//! `nexus-perf --cluster N`: a multi-validator devnet measured end to end, with the
//! signature-verification bound of this machine measured in the same run as its baseline.
//!
//! For each offered rate it runs `nexus devnet --validators N --bench S --via V` (signed
//! client transactions through the binary gateways or the transaction ports; the devnet's
//! own load client measures order-to-`Finalized` per transaction) and reads its `bench`
//! line. Before the first rate it measures how many ZIP 215 signatures this machine verifies
//! per second in batches of 64 on every core. Every validator verifies every transaction
//! once, so the cluster needs `validators x transactions/s` verifications: the table prints
//! that as a share of the bound.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use transactions::{Action, SignedTransaction, Transaction};

/// What one cluster run needs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The `nexus` binary.
    pub nexus: PathBuf,
    /// Validators.
    pub validators: usize,
    /// Offered orders per second, one devnet run each.
    pub rates: Vec<u64>,
    /// Orders per transaction (one signature each).
    pub bulk: u32,
    /// `gateway` or `tx-port`.
    pub via: String,
    /// Measured seconds per rate (after the devnet's 2 s warm-up).
    pub seconds: u64,
    /// Parent folder of each run's data folder (tmpfs if available: `/dev/shm`).
    pub data_parent: PathBuf,
    /// EVM load instead of Core orders (`nexus devnet --evm-load`): the rates are EVM
    /// transactions per second ([`crate::evm_load`]).
    pub evm: Option<node::load_evm::EvmLoadKind>,
    /// EVM load accounts funded at genesis.
    pub evm_accounts: u64,
}

/// The figures of one devnet `--bench` run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFigures {
    /// Orders offered per second.
    pub offered: u64,
    /// Orders in finalized transactions per second.
    pub finalized: f64,
    /// Order-to-Finalized p50 and p99, ms.
    pub p50_ms: f64,
    /// p99, ms.
    pub p99_ms: f64,
    /// Order-to-`admitted` (the mempool's ack) p50 and p99, ms.
    pub ack_p50_ms: f64,
    /// p99, ms.
    pub ack_p99_ms: f64,
    /// Blocks per second.
    pub blocks_per_s: f64,
    /// Refusals by code.
    pub refusals: Value,
    /// Validator 0's p50 per block (µs): checking the payload for `valid(v)`, and
    /// executing the decided block.
    pub check_us_p50: f64,
    /// p50, µs.
    pub exec_us_p50: f64,
}

/// Reads the figures of a devnet's `bench` line.
pub fn parse_bench_line(line: &str) -> Option<RunFigures> {
    let value: Value = serde_json::from_str(line).ok()?;
    if value["event"] != "bench" {
        return None;
    }
    let latency = &value["order_to_finalized_ms"];
    let ack = &value["admission_ms"];
    let per_block = &value["validator_0_per_block_us"];
    Some(RunFigures {
        offered: value["offered_orders_per_s"].as_u64()?,
        finalized: value["finalized_orders_per_s"].as_f64()?,
        p50_ms: latency["p50"].as_f64().unwrap_or(f64::NAN),
        p99_ms: latency["p99"].as_f64().unwrap_or(f64::NAN),
        ack_p50_ms: ack["p50"].as_f64().unwrap_or(f64::NAN),
        ack_p99_ms: ack["p99"].as_f64().unwrap_or(f64::NAN),
        blocks_per_s: value["blocks_per_s"].as_f64().unwrap_or(0.0),
        refusals: value["refusals"].clone(),
        check_us_p50: per_block["check"]["p50"].as_f64().unwrap_or(f64::NAN),
        exec_us_p50: per_block["execute"]["p50"].as_f64().unwrap_or(f64::NAN),
    })
}

/// ZIP 215 signatures this machine verifies per second, batches of 64 on every core at
/// once, over about `seconds`.
pub fn signature_bound_per_s(seconds: f64) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let txs = signed_transactions(64);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let verified: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..cores)
            .map(|_| {
                scope.spawn(|| {
                    let refs: Vec<&SignedTransaction> = txs.iter().collect();
                    let mut done = 0u64;
                    while Instant::now() < deadline {
                        let results = transactions::verify_batch(&refs);
                        assert!(results.iter().all(Result::is_ok), "valid signatures");
                        done += refs.len() as u64;
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("worker")).sum()
    });
    verified as f64 / start.elapsed().as_secs_f64()
}

/// `count` one-action transactions, each signed by its own key.
fn signed_transactions(count: usize) -> Vec<SignedTransaction> {
    (0..count)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            Transaction {
                chain_id: [7; 32],
                signer: key.verifying_key().to_bytes(),
                nonce: 1_800_000_000_000 + i as u64,
                actions: vec![Action::CancelAll { market: 0 }],
            }
            .sign(&key)
        })
        .collect()
}

/// Runs one devnet at `rate` and returns its figures.
fn run_devnet(options: &ClusterOptions, rate: u64) -> Result<RunFigures, String> {
    let (rate, bulk) = (rate.to_string(), options.bulk.to_string());
    let args = ["--rate", &rate, "--bulk", &bulk, "--via", &options.via];
    let line = devnet_bench_line(options, &args)?;
    parse_bench_line(&line).ok_or_else(|| format!("not a bench line: {line}"))
}

/// Runs one `nexus devnet --bench` with `args` added and returns its `bench` line.
pub fn devnet_bench_line(options: &ClusterOptions, args: &[&str]) -> Result<String, String> {
    let dir = tempfile::Builder::new()
        .prefix("nexus-cluster-")
        .tempdir_in(&options.data_parent)
        .map_err(|e| format!("{}: {e}", options.data_parent.display()))?;
    let mut child = Command::new(&options.nexus)
        .args(["devnet", "--validators", &options.validators.to_string()])
        .args(args)
        .args(["--bench", &options.seconds.to_string()])
        .arg("--dir")
        .arg(dir.path().join("devnet"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", options.nexus.display()))?;
    let stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || last_lines(BufReader::new(stderr), 5));
    let stdout = child.stdout.take().expect("piped");
    let mut stopped = String::new();
    let bench = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .inspect(|line| {
            if line.contains("\"devnet_stopped\"") {
                stopped.clone_from(line);
            }
        })
        .find(|line| line.contains("\"event\":\"bench\""));
    let status = child.wait().map_err(|e| e.to_string())?;
    let errors = errors.join().unwrap_or_default();
    match bench {
        Some(line) if status.success() => Ok(line),
        _ => Err(format!(
            "nexus devnet {} ended with {status}: {stopped} {}",
            args.join(" "),
            errors.join(" | ")
        )),
    }
}

/// The last `n` lines of `reader` (a failed devnet's error messages).
fn last_lines(reader: impl BufRead, n: usize) -> Vec<String> {
    let mut last = std::collections::VecDeque::with_capacity(n + 1);
    for line in reader.lines().map_while(Result::ok) {
        last.push_back(line);
        if last.len() > n {
            last.pop_front();
        }
    }
    last.into()
}

/// Open-loop round trips of 48-byte messages to an echo thread over loopback TCP at 1,000/s
/// (the gateway benchmark's baseline): p50 in ms. What an ack costs the machine and harness
/// without the node.
pub fn loopback_p50_ms() -> Result<f64, String> {
    use crate::gateway_bench::baseline::{ping_pong, Pace};
    use crate::gateway_bench::schedule::Waiter;
    let rate = 1_000.0;
    let recorder = ping_pong(
        3_000,
        300,
        Pace::OpenLoop(rate),
        Waiter::for_total_rate(50_000, rate),
    )
    .map_err(|e| format!("loopback baseline: {e}"))?;
    Ok(recorder.histogram().value_at_quantile(0.5) as f64 / 1e6)
}

/// Runs every rate, prints the table and returns the figures as JSON.
pub fn run(options: &ClusterOptions) -> Result<Value, String> {
    let bound = signature_bound_per_s(2.0);
    println!(
        "signature bound (ZIP 215, batches of 64, every core): {:.0} signatures/s",
        bound
    );
    let loopback = loopback_p50_ms()?;
    println!("loopback TCP baseline (open loop, 1,000/s, 48 B echo): p50 {loopback:.3} ms");
    println!(
        "{} validators and the load client on this machine; bulk {}, via {}",
        options.validators, options.bulk, options.via
    );
    println!(
        "{:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>12} {:>9} {:>9}",
        "offered",
        "finalized",
        "p50 ms",
        "p99 ms",
        "ack p50",
        "ack p99",
        "ack/loop",
        "blocks/s",
        "of bound",
        "check us",
        "exec us"
    );
    let mut runs = Vec::new();
    for &rate in &options.rates {
        let f = run_devnet(options, rate)?;
        let tx_per_s = f.finalized / f64::from(options.bulk.max(1));
        let share = tx_per_s * options.validators as f64 / bound;
        let ack_ratio = f.ack_p50_ms / loopback;
        println!(
            "{:>10} {:>12.0} {:>9.2} {:>9.2} {:>9.3} {:>9.3} {:>9.1}x {:>9.0} {:>11.2}x {:>9.0} {:>9.0}",
            f.offered,
            f.finalized,
            f.p50_ms,
            f.p99_ms,
            f.ack_p50_ms,
            f.ack_p99_ms,
            ack_ratio,
            f.blocks_per_s,
            share,
            f.check_us_p50,
            f.exec_us_p50
        );
        runs.push(json!({
            "offered_orders_per_s": f.offered, "finalized_orders_per_s": f.finalized,
            "order_to_finalized_ms": {"p50": f.p50_ms, "p99": f.p99_ms},
            "order_to_ack_ms": {"p50": f.ack_p50_ms, "p99": f.ack_p99_ms},
            "ack_p50_over_loopback_p50": ack_ratio,
            "blocks_per_s": f.blocks_per_s, "refusals": f.refusals,
            "verifications_share_of_bound": share,
            "validator_0_per_block_us_p50": {"check": f.check_us_p50, "execute": f.exec_us_p50},
        }));
    }
    Ok(json!({
        "validators": options.validators, "bulk": options.bulk, "via": options.via,
        "seconds": options.seconds, "signature_bound_per_s": bound,
        "loopback_p50_ms": loopback, "runs": runs,
    }))
}

/// `/dev/shm` if it exists (tmpfs: the figures are not fsync-bound), else the temp folder.
pub fn default_data_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_devnet_bench_line_is_read_and_other_lines_are_not() {
        let line = r#"{"event":"bench","validators":4,"seconds":8.0,"bulk":20,"offered_orders_per_s":50000,"finalized_orders_per_s":49886.0,"order_to_finalized_ms":{"p50":4.479,"p99":9.535,"max":12.0},"admission_ms":{"p50":0.5,"p99":2.7},"refusals":{},"blocks_per_s":449.0,"validator_0_per_block_us":{"check":{"p50":310,"p99":900},"execute":{"p50":1200,"p99":4000}}}"#;
        let figures = parse_bench_line(line).expect("a bench line");
        assert_eq!(figures.offered, 50_000);
        assert_eq!((figures.p50_ms, figures.p99_ms), (4.479, 9.535));
        assert_eq!((figures.ack_p50_ms, figures.ack_p99_ms), (0.5, 2.7));
        assert_eq!(figures.blocks_per_s, 449.0);
        assert_eq!((figures.check_us_p50, figures.exec_us_p50), (310.0, 1200.0));
        assert!(parse_bench_line(r#"{"event":"devnet_stopped"}"#).is_none());
        assert!(parse_bench_line("not json").is_none());
    }

    #[test]
    fn the_signature_bound_is_measured_on_real_signatures() {
        assert!(signature_bound_per_s(0.05) > 0.0);
    }
}
