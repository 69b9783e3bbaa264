//! `exec-bench`: what the composed execution costs per block item and per root part
//! (`docs/perf.md`, "Execution: `exec-bench`"). Blocks of signed EVM transfers and blocks of
//! signed Core orders go through `Execution::validate_block` (EVM: sender recovery and
//! revm's checks) and `execute_block`; then each part of the execution root is timed, and
//! the EVM root's from-scratch recomputation is the baseline for its incremental update.

use std::time::Instant;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, Bytes, Signature, TxKind, U256};
use clap::Parser;
use engine::{Command, EngineConfig, MarketSpec, SelfTradePrevention, Side, TimeInForce};
use execution::evm::executor::SignedTx;
use execution::{BlockItem, EvmGenesis, Execution, ExecutionConfig};
use k256::ecdsa::SigningKey as EvmKey;
use transactions::{account_id_of, Action, EvmItem, Transaction};

/// Execution benchmark: EVM transfers and Core orders per block, root parts.
#[derive(Parser, Debug)]
#[command(name = "exec-bench", version)]
struct Args {
    /// Items per block (EVM blocks: at most 714 transfers fit the 15M gas share).
    #[arg(long, default_value_t = 500)]
    items: usize,
    /// Blocks of each kind.
    #[arg(long, default_value_t = 10)]
    blocks: usize,
}

const CHAIN: [u8; 32] = [7; 32];
const T: u64 = 1_800_000_000_000;
const SENDERS: usize = 500;

fn evm_key(i: usize) -> (EvmKey, Address) {
    let mut seed = [1u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    let key = EvmKey::from_slice(&seed).expect("valid key");
    let point = key.verifying_key().to_encoded_point(false);
    (
        key,
        Address::from_slice(&keccak256(&point.as_bytes()[1..])[12..]),
    )
}

fn core_key(i: usize) -> ed25519_dalek::SigningKey {
    let mut seed = [2u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

fn chain(senders: &[(EvmKey, Address)]) -> Execution {
    let mut genesis = vec![
        Command::CreateAsset { asset: 1 },
        Command::CreateAsset { asset: 2 },
        Command::CreateMarket(MarketSpec {
            market: 0,
            base: 2,
            quote: 1,
            base_units_per_lot: 1,
            quote_units_per_tick_lot: 1,
            min_lots: 1,
            max_price_ticks: 1 << 20,
            maker_fee_bps: 0,
            taker_fee_bps: 0,
        }),
    ];
    for i in 0..SENDERS {
        let account = account_id_of(&core_key(i).verifying_key().to_bytes());
        for asset in [1, 2] {
            genesis.push(Command::Deposit {
                account,
                asset,
                amount: 1 << 40,
            });
        }
    }
    let alloc = senders
        .iter()
        .map(|(_, address)| (*address, U256::from(10u64).pow(U256::from(21))))
        .collect();
    let evm = EvmGenesis {
        native_asset: 1,
        alloc,
        timestamp: T / 1000,
        ..EvmGenesis::default()
    };
    let config = ExecutionConfig {
        chain_id: CHAIN,
        faucets: Vec::new(),
        feeders: Vec::new(),
        engine: EngineConfig::default(),
        evm,
        funding_interval_s: 0,
        core_gas_limit: execution::DEFAULT_CORE_GAS_LIMIT,
    };
    Execution::new(config, &genesis)
}

fn transfer(key: &EvmKey, nonce: u64, to: Address) -> BlockItem {
    let tx = TxEip1559 {
        chain_id: execution::evm::executor::EvmConfig::default().chain_id,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1,
        to: TxKind::Call(to),
        value: U256::from(1u64),
        access_list: Default::default(),
        input: Bytes::new(),
    };
    let hash = tx.signature_hash();
    let (sig, recid) = key
        .sign_prehash_recoverable(hash.as_slice())
        .expect("signs");
    let raw = TxEnvelope::from(tx.into_signed(Signature::from((sig, recid)))).encoded_2718();
    BlockItem::Evm(EvmItem::new(&raw))
}

/// Block `b` of EVM transfers: item `i` from sender `i % SENDERS` to a fresh address.
fn evm_block(
    senders: &[(EvmKey, Address)],
    nonces: &mut [u64],
    b: usize,
    items: usize,
) -> Vec<BlockItem> {
    (0..items)
        .map(|i| {
            let to = Address::from_word(keccak256((b * items + i).to_le_bytes()));
            let nonce = nonces[i % SENDERS];
            nonces[i % SENDERS] += 1;
            transfer(&senders[i % SENDERS].0, nonce, to)
        })
        .collect()
}

/// Block `b` of Core orders: resting buys and sells that do not cross.
fn core_block(b: usize, items: usize) -> Vec<BlockItem> {
    (0..items)
        .map(|i| {
            let key = core_key(i % SENDERS);
            let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
            let price = if side == Side::Buy { 1_000 } else { 2_000 } + (i % 50) as i64;
            let tx = Transaction {
                chain_id: CHAIN,
                signer: key.verifying_key().to_bytes(),
                nonce: T + (b * items + i) as u64,
                actions: vec![Action::Place {
                    market: 0,
                    oid: (b * items + i) as u64,
                    side,
                    price: Some(price),
                    qty: 1,
                    tif: TimeInForce::Gtc,
                    stp: SelfTradePrevention::CancelMaker,
                    reduce_only: false,
                }],
            };
            BlockItem::Core(tx.sign(&key))
        })
        .collect()
}

/// Validates and executes one block; returns (validate, execute) in microseconds.
fn run_block(chain: &mut Execution, items: &[BlockItem]) -> (f64, f64) {
    let signatures = vec![Ok(()); items.iter().filter(|i| i.core().is_some()).count()];
    let time = T + chain.height() + 1;
    let start = Instant::now();
    let block = chain
        .validate_block(time, items, &signatures)
        .expect("a valid block");
    let validated = start.elapsed();
    let consensus = execution::ConsensusState::genesis();
    let executed = chain.execute_block(block, &consensus, |_, _| {}).unwrap();
    assert!(
        executed.evm.dropped.is_empty(),
        "{:?}",
        executed.evm.dropped
    );
    let total = start.elapsed();
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    (us(validated), us(total - validated))
}

fn time_us(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1e6
}

fn report(kind: &str, items: usize, figures: &[(f64, f64)]) {
    let n = (figures.len() * items) as f64;
    let validate: f64 = figures.iter().map(|f| f.0).sum::<f64>() / n;
    let execute: f64 = figures.iter().map(|f| f.1).sum::<f64>() / n;
    println!(
        "{kind:>5} items: validate {validate:8.2} us/item, execute (incl. root) {execute:8.2} us/item, {:.0} items/s",
        1e6 / (validate + execute)
    );
}

/// Where an EVM item's validation goes: decoding with sender recovery, then revm's checks.
fn split_evm_validation(exec: &Execution, items: &[BlockItem]) {
    let chain_id = exec.evm().config().chain_id;
    let envelopes: Vec<&[u8]> = items
        .iter()
        .map(|item| match item {
            BlockItem::Evm(evm) => evm.envelope(),
            BlockItem::Core(_) => unreachable!("EVM items"),
        })
        .collect();
    let mut decoded = Vec::new();
    let decode = time_us(|| {
        for envelope in &envelopes {
            decoded.push(SignedTx::decode(envelope, chain_id).expect("decodes"));
        }
    });
    let checks = time_us(|| {
        for tx in &decoded {
            exec.evm().check_admission(tx).expect("passes");
        }
    });
    let known: std::collections::HashMap<_, _> =
        decoded.iter().map(|tx| (tx.hash, tx.sender)).collect();
    let cached = time_us(|| {
        exec.validate_block_with(T, items, &[], &|hash| known.get(hash).copied())
            .expect("a valid block");
    });
    let n = items.len() as f64;
    println!(
        "  EVM validation split: decode + recover {:.2} us/item, revm stateless checks {:.2} us/item; whole validate_block with senders cached (mempool) {:.2} us/item",
        decode / n,
        checks / n,
        cached / n
    );
}

fn main() {
    engine::cpu::exit_if_unsupported("exec-bench");
    let args = Args::parse();
    let senders: Vec<(EvmKey, Address)> = (0..SENDERS).map(evm_key).collect();
    let mut exec = chain(&senders);
    let mut nonces = vec![0u64; SENDERS];
    let mut evm_figures = Vec::new();
    for b in 0..args.blocks {
        let items = evm_block(&senders, &mut nonces, b, args.items);
        evm_figures.push(run_block(&mut exec, &items));
    }
    let mut core_figures = Vec::new();
    for b in 0..args.blocks {
        let items = core_block(b, args.items);
        core_figures.push(run_block(&mut exec, &items));
    }
    println!(
        "exec-bench: {} blocks x {} items, {SENDERS} senders per kind",
        args.blocks, args.items
    );
    split_evm_validation(&exec, &evm_block(&senders, &mut nonces, 0, args.items));
    report("EVM", args.items, &evm_figures);
    report("Core", args.items, &core_figures);
    let core = time_us(|| {
        exec.core_root();
    });
    let queue = time_us(|| {
        exec.queue_root();
    });
    let chain_part = time_us(|| {
        exec.chain_root();
    });
    let evm = time_us(|| {
        exec.evm_root();
    });
    let scratch = time_us(|| {
        exec.evm_root_from_scratch();
    });
    let accounts = exec.evm().db().cache.accounts.len();
    println!(
        "roots after the run (nothing changed since): core {core:.1} us, evm {evm:.1} us, queue {queue:.1} us, chain {chain_part:.1} us"
    );
    println!(
        "evm root from scratch over {accounts} accounts: {scratch:.0} us (baseline of the incremental update inside execute)"
    );
}
