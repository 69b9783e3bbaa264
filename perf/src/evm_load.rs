//! `nexus-perf --cluster N --cluster-evm transfer|order`: EVM transactions through a
//! multi-validator devnet (`nexus devnet --evm-load`, signed ahead, sent with
//! `eth_sendRawTransaction`, receipts counted), against the execution bound measured in the
//! same run: the same signed transactions validated and executed in-process by
//! `execution::Execution` (revm and, for orders, the engine), on one thread, in full blocks,
//! from the same genesis (`nexus devnet --init-only` writes it). docs/perf.md, "EVM load".

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use alloy_primitives::{Address, B256};
use execution::{BlockItem, Execution};
use node::load_evm::{EvmLoadKind, EvmLoadSpec, EvmTx};
use serde_json::{json, Value};
use transactions::EvmItem;

use crate::cluster::ClusterOptions;

/// The execution bound of one kind of EVM transaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExecutionBound {
    /// Transactions per block (the block's EVM gas share over the transaction's gas limit,
    /// as the pool packs them).
    pub per_block: usize,
    /// Transactions per second: `validate_block` (senders known, as the pool recovered
    /// them at admission) and `execute_block` (roots included).
    pub txs_per_s: f64,
    /// Transactions per second with sender recovery (ECDSA) added, once per transaction.
    pub with_recovery_per_s: f64,
    /// Orders resting on Core's book after the run and one more (empty) block, which runs
    /// the last block's CoreWriter actions: every order of the `order` kind rests (the book
    /// has no asks).
    pub resting_orders: usize,
}

/// The spec of the devnet written at `config` for `kind`.
pub fn spec_of(config: &node::validator::DevnetConfig, kind: EvmLoadKind) -> EvmLoadSpec {
    EvmLoadSpec {
        seed: config.order_seed,
        accounts: config.evm_load_accounts.max(1),
        kind,
        chain_id: execution::evm::executor::EvmConfig::default().chain_id,
    }
}

/// Writes a devnet configuration with `accounts` EVM load accounts in `dir`
/// (`nexus devnet --init-only`) and reads it back.
pub fn init_config(
    nexus: &Path,
    dir: &Path,
    accounts: u64,
) -> Result<node::validator::DevnetConfig, String> {
    let output = Command::new(nexus)
        .args(["devnet", "--validators", "1", "--init-only", "--dir"])
        .arg(dir)
        .args(["--evm-accounts", &accounts.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{}: {e}", nexus.display()))?;
    if !output.status.success() {
        return Err(format!("nexus devnet --init-only: {}", output.status));
    }
    node::validator::read_config(&dir.join(node::validator::CONFIG_FILE)).map_err(|e| e.to_string())
}

/// Transactions of one kind per block: the EVM gas share over the kind's gas limit.
fn per_block(exec: &Execution, kind: EvmLoadKind) -> usize {
    let share = exec.evm().config().block_gas_limit / 2;
    let gas = match kind {
        EvmLoadKind::Transfer => node::load_evm::TRANSFER_GAS,
        EvmLoadKind::Order => node::load_evm::ORDER_GAS,
    };
    (share / gas) as usize
}

/// Validates (senders known) and executes one block of `txs`; returns the seconds it took
/// and checks that every transaction ran and succeeded.
fn run_block(
    exec: &mut Execution,
    txs: &[EvmTx],
    senders: &[(B256, Address)],
    genesis_ms: u64,
) -> f64 {
    let items: Vec<BlockItem> = txs
        .iter()
        .map(|tx| BlockItem::Evm(EvmItem::new(&tx.raw)))
        .collect();
    let known: std::collections::HashMap<B256, Address> = senders.iter().copied().collect();
    let time = genesis_ms + 100 * (exec.height() + 1);
    let start = Instant::now();
    let block = exec
        .validate_block_with(time, &items, &[], &|hash| known.get(hash).copied())
        .expect("a valid block");
    let consensus = execution::ConsensusState::genesis();
    let executed = exec
        .execute_block(block, &consensus, |_, _| {})
        .expect("executes");
    let seconds = start.elapsed().as_secs_f64();
    assert!(
        executed.evm.dropped.is_empty(),
        "{:?}",
        executed.evm.dropped
    );
    assert!(
        executed.evm.receipts.iter().all(|r| r.status),
        "every load transaction succeeds"
    );
    seconds
}

/// Recovers the sender of every transaction; returns them and the seconds it took.
fn recover(txs: &[EvmTx], chain_id: u64) -> (Vec<(B256, Address)>, f64) {
    let start = Instant::now();
    let senders = txs
        .iter()
        .map(|tx| {
            let signed = execution::evm::executor::SignedTx::decode(&tx.raw, chain_id)
                .expect("a load transaction decodes");
            (signed.hash, signed.sender)
        })
        .collect();
    (senders, start.elapsed().as_secs_f64())
}

/// Runs `blocks` full blocks of `spec`'s transactions on `exec` (the genesis of a chain that
/// started at `genesis_ms`; after the `order` kind's deposits, untimed), 100 ms of block
/// time apart, and returns the bound.
pub fn execution_bound(
    mut exec: Execution,
    spec: &EvmLoadSpec,
    blocks: usize,
    genesis_ms: u64,
) -> ExecutionBound {
    let per_block = per_block(&exec, spec.kind);
    let setup = match spec.kind {
        EvmLoadKind::Order => spec.accounts as usize,
        EvmLoadKind::Transfer => 0,
    };
    let txs = spec.signed_ahead((setup + per_block * blocks) as u64);
    let (setup_txs, timed) = txs.split_at(setup);
    for chunk in setup_txs.chunks(per_block) {
        let (senders, _) = recover(chunk, spec.chain_id);
        run_block(&mut exec, chunk, &senders, genesis_ms);
    }
    let (mut executing, mut recovering) = (0.0, 0.0);
    for chunk in timed.chunks(per_block) {
        let (senders, seconds) = recover(chunk, spec.chain_id);
        recovering += seconds;
        executing += run_block(&mut exec, chunk, &senders, genesis_ms);
    }
    run_block(&mut exec, &[], &[], genesis_ms);
    let n = timed.len() as f64;
    ExecutionBound {
        per_block,
        txs_per_s: n / executing,
        with_recovery_per_s: n / (executing + recovering),
        resting_orders: exec.engine().resting_orders(),
    }
}

/// The figures of one devnet run with an EVM load (the `bench` line's `evm` part and its
/// blocks).
#[derive(Debug, Clone, PartialEq)]
pub struct EvmRunFigures {
    /// Offered EVM transactions per second.
    pub offered: u64,
    /// Load transactions included per second of the window.
    pub included_per_s: f64,
    /// Load transactions per block in the window: mean and most.
    pub per_block_mean: f64,
    /// Most in one block.
    pub per_block_max: f64,
    /// Blocks per second (validator 0).
    pub blocks_per_s: f64,
    /// Submit to receipt, ms.
    pub p50_ms: f64,
    /// p99, ms.
    pub p99_ms: f64,
    /// Sent, included (once each), and never included after the drain.
    pub sent: u64,
    /// Included.
    pub included: u64,
    /// Neither included nor refused.
    pub missing: u64,
    /// Receipts seen twice.
    pub duplicates: u64,
    /// Receipts with status 0.
    pub reverted: u64,
    /// Refusals by message.
    pub refusals: Value,
    /// Requests without an answer (validators overloaded past the client's timeout).
    pub failed_requests: u64,
    /// Validator 0's execution of a block, p50, µs.
    pub exec_us_p50: f64,
}

/// Reads the EVM figures of a devnet's `bench` line.
pub fn parse_evm_bench_line(line: &str) -> Option<EvmRunFigures> {
    let value: Value = serde_json::from_str(line).ok()?;
    if value["event"] != "bench" {
        return None;
    }
    let evm = value.get("evm").filter(|e| e.is_object())?;
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    Some(EvmRunFigures {
        offered: evm["offered_txs_per_s"].as_u64()?,
        included_per_s: evm["included_txs_per_s"].as_f64()?,
        per_block_mean: f(&evm["txs_per_block"]["mean"]),
        per_block_max: f(&evm["txs_per_block"]["max"]),
        blocks_per_s: f(&value["blocks_per_s"]),
        p50_ms: f(&evm["submit_to_receipt_ms"]["p50"]),
        p99_ms: f(&evm["submit_to_receipt_ms"]["p99"]),
        sent: evm["sent"].as_u64()?,
        included: evm["included"].as_u64()?,
        missing: evm["missing"].as_u64()?,
        duplicates: evm["duplicates"].as_u64()?,
        reverted: evm["reverted"].as_u64()?,
        refusals: evm["refusals"].clone(),
        failed_requests: evm["failed_requests"].as_u64().unwrap_or(0),
        exec_us_p50: f(&value["validator_0_per_block_us"]["execute"]["p50"]),
    })
}

/// Measures the execution bound of `kind`, then runs a devnet at each rate of `options`
/// (EVM transactions per second), prints the table and returns the figures as JSON.
pub fn run(options: &ClusterOptions, kind: EvmLoadKind) -> Result<Value, String> {
    let dir = tempfile::Builder::new()
        .prefix("nexus-evm-bound-")
        .tempdir_in(&options.data_parent)
        .map_err(|e| format!("{}: {e}", options.data_parent.display()))?;
    let config = init_config(
        &options.nexus,
        &dir.path().join("devnet"),
        options.evm_accounts,
    )?;
    let exec = node::validator::genesis_execution(&config).map_err(|e| e.to_string())?;
    let spec = spec_of(&config, kind);
    let bound = execution_bound(exec, &spec, BOUND_BLOCKS, config.genesis_time_ms);
    println!(
        "execution bound ({}, in-process, one thread, {BOUND_BLOCKS} blocks of {}): {:.0} txs/s \
         validate + execute (senders known), {:.0} txs/s with sender recovery",
        kind.name(),
        bound.per_block,
        bound.txs_per_s,
        bound.with_recovery_per_s
    );
    println!(
        "{} validators and the load client share this machine's cores; EVM load {}, {} accounts",
        options.validators,
        kind.name(),
        options.evm_accounts
    );
    println!(
        "{:>8} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>8} {:>22}",
        "offered",
        "included",
        "per blk",
        "max blk",
        "blk/s",
        "p50 ms",
        "p99 ms",
        "of bound",
        "exec us",
        "sent/incl/miss/dup/rev"
    );
    let mut runs = Vec::new();
    for &rate in &options.rates {
        let (rate_s, accounts) = (rate.to_string(), options.evm_accounts.to_string());
        let args = [
            "--rate",
            "0",
            "--evm-load",
            kind.name(),
            "--evm-rate",
            &rate_s,
            "--evm-accounts",
            &accounts,
        ];
        let line = crate::cluster::devnet_bench_line(options, &args)?;
        let f = parse_evm_bench_line(&line).ok_or_else(|| format!("no EVM figures: {line}"))?;
        let share = f.included_per_s / bound.with_recovery_per_s;
        println!(
            "{:>8} {:>9.0} {:>9.1} {:>9.0} {:>8.0} {:>9.1} {:>9.1} {:>8.3}x {:>8.0} {:>22}",
            f.offered,
            f.included_per_s,
            f.per_block_mean,
            f.per_block_max,
            f.blocks_per_s,
            f.p50_ms,
            f.p99_ms,
            share,
            f.exec_us_p50,
            format!(
                "{}/{}/{}/{}/{}",
                f.sent, f.included, f.missing, f.duplicates, f.reverted
            )
        );
        if f.refusals.as_object().is_some_and(|r| !r.is_empty()) || f.failed_requests > 0 {
            let failed = f.failed_requests;
            println!(
                "{:>8} refusals: {}, requests unanswered: {failed}",
                "", f.refusals
            );
        }
        runs.push(json!({
            "offered_txs_per_s": f.offered, "included_txs_per_s": f.included_per_s,
            "txs_per_block": {"mean": f.per_block_mean, "max": f.per_block_max},
            "blocks_per_s": f.blocks_per_s,
            "submit_to_receipt_ms": {"p50": f.p50_ms, "p99": f.p99_ms},
            "share_of_bound_with_recovery": share, "sent": f.sent, "included": f.included,
            "missing": f.missing, "duplicates": f.duplicates, "reverted": f.reverted,
            "refusals": f.refusals, "failed_requests": f.failed_requests,
            "validator_0_execute_us_p50": f.exec_us_p50,
        }));
    }
    Ok(json!({
        "validators": options.validators, "evm_load": kind.name(),
        "accounts": options.evm_accounts, "seconds": options.seconds,
        "execution_bound": {"txs_per_block": bound.per_block, "txs_per_s": bound.txs_per_s,
            "with_recovery_txs_per_s": bound.with_recovery_per_s},
        "runs": runs,
    }))
}

/// Full blocks the execution bound is measured over.
pub const BOUND_BLOCKS: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    /// A devnet configuration with `accounts` EVM load accounts (what `nexus devnet
    /// --init-only` writes, one validator).
    fn config(accounts: u64) -> node::validator::DevnetConfig {
        serde_json::from_value(json!({
            "chain_id": "07".repeat(32), "genesis_time_ms": 1_800_000_000_000u64,
            "order_seed": 7, "accounts": 100, "bulk": 20, "rate_per_s": 0,
            "max_block_txs": 1000, "max_block_bytes": 16 << 20, "load_start_unix_ns": 0,
            "evm_load_accounts": accounts,
            "timeouts": {"propose": 200, "prevote": 100, "precommit": 100, "delta": 50,
                "rebroadcast": 500},
            "validators": [],
        }))
        .expect("a configuration")
    }

    #[test]
    fn the_bound_runs_full_blocks_of_the_load_and_every_order_rests_on_core() {
        let config = config(8);
        for kind in [EvmLoadKind::Transfer, EvmLoadKind::Order] {
            let exec = node::validator::genesis_execution(&config).expect("genesis");
            let spec = spec_of(&config, kind);
            let bound = execution_bound(exec, &spec, 2, config.genesis_time_ms);
            let (per_block, orders) = match kind {
                EvmLoadKind::Transfer => (714, 0),
                EvmLoadKind::Order => (250, 500),
            };
            assert_eq!(bound.per_block, per_block);
            assert_eq!(bound.resting_orders, orders);
            assert!(bound.txs_per_s >= bound.with_recovery_per_s);
            assert!(bound.with_recovery_per_s > 0.0);
        }
    }

    #[test]
    fn an_evm_bench_line_is_read_and_a_core_one_is_not() {
        let line = r#"{"event":"bench","blocks_per_s":40.0,"validator_0_per_block_us":{"execute":{"p50":900}},"evm":{"kind":"transfer","offered_txs_per_s":1000,"included_txs_per_s":998.0,"txs_per_block":{"mean":25,"p50":25,"max":60},"submit_to_receipt_ms":{"p50":30.5,"p99":80.0},"sent":12000,"included":12000,"missing":0,"duplicates":0,"reverted":0,"refusals":{}}}"#;
        let f = parse_evm_bench_line(line).expect("an EVM bench line");
        assert_eq!((f.offered, f.included_per_s), (1000, 998.0));
        assert_eq!((f.per_block_mean, f.per_block_max), (25.0, 60.0));
        assert_eq!((f.p50_ms, f.p99_ms, f.exec_us_p50), (30.5, 80.0, 900.0));
        assert_eq!((f.sent, f.included, f.missing), (12000, 12000, 0));
        let core =
            r#"{"event":"bench","offered_orders_per_s":1,"finalized_orders_per_s":1.0,"evm":null}"#;
        assert!(parse_evm_bench_line(core).is_none());
    }
}
