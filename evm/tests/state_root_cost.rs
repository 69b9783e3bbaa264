//! The cost of the state root per block as the state grows (ignored: run with
//! `cargo test -p evm --test state_root_cost -- --ignored --nocapture`). A state of `n`
//! accounts and one contract holding `n / 10` slots; each block changes 100 accounts'
//! balances and 100 of the contract's slots. Prints the microseconds per block of
//! [`StateCommitment::apply`] (the incremental root, what each block pays), and for
//! comparison the full build of the same state (what recomputing from scratch would pay),
//! and checks the incremental root against a fresh build after the blocks.

use std::time::Instant;

use alloy_primitives::{keccak256, Address, B256, U256};
use evm::commitment::StateCommitment;
use evm::executor::StateDiff;
use revm::state::AccountInfo;

const BLOCKS: u64 = 20;
const TOUCHED: u64 = 100;

fn account(i: u64) -> Address {
    Address::from_slice(&keccak256(i.to_be_bytes())[12..])
}

fn info(balance: u64) -> Option<AccountInfo> {
    Some(AccountInfo {
        balance: U256::from(balance),
        ..Default::default()
    })
}

/// The state: `n` funded accounts and a contract with `n / 10` slots.
fn genesis(n: u64) -> StateDiff {
    let mut diff = StateDiff::default();
    for i in 0..n {
        diff.accounts.insert(account(i), info(i + 1));
    }
    let contract = Address::repeat_byte(0xcc);
    let code = AccountInfo {
        nonce: 1,
        code_hash: B256::repeat_byte(0xcc),
        ..Default::default()
    };
    diff.accounts.insert(contract, Some(code));
    for slot in 0..n / 10 {
        diff.storage
            .insert((contract, U256::from(slot)), U256::from(slot + 1));
    }
    diff
}

/// Block `b`: 100 accounts' balances and 100 of the contract's slots.
fn block(n: u64, b: u64, contract: &AccountInfo) -> StateDiff {
    let mut diff = StateDiff::default();
    let contract_address = Address::repeat_byte(0xcc);
    diff.accounts
        .insert(contract_address, Some(contract.clone()));
    for j in 0..TOUCHED {
        let i = (b * 7919 + j * 104_729) % n;
        diff.accounts.insert(account(i), info(1_000_000 + b));
        let slot = (b * 6007 + j * 7727) % (n / 10).max(1);
        diff.storage
            .insert((contract_address, U256::from(slot)), U256::from(b + 7));
    }
    diff
}

fn measure(n: u64) {
    let diff = genesis(n);
    let start = Instant::now();
    let mut commitment = StateCommitment::new();
    commitment.apply(&diff);
    let full = start.elapsed();
    let contract = diff.accounts[&Address::repeat_byte(0xcc)]
        .clone()
        .expect("contract");
    let blocks: Vec<StateDiff> = (0..BLOCKS).map(|b| block(n, b, &contract)).collect();
    let start = Instant::now();
    for diff in &blocks {
        commitment.apply(diff);
    }
    let per_block = start.elapsed().as_micros() as u64 / BLOCKS;
    let mut fresh = StateCommitment::new();
    let mut all = diff;
    for diff in &blocks {
        all.accounts.extend(diff.accounts.clone());
        all.storage.extend(diff.storage.clone());
    }
    assert_eq!(
        fresh.apply(&all),
        commitment.root(),
        "incremental = fresh at {n}"
    );
    println!(
        "state {n} accounts + {} slots: {per_block} us per block ({TOUCHED} accounts, {TOUCHED} slots); full build {} ms; {} branch hashes cached",
        n / 10,
        full.as_millis(),
        commitment.cached_branches()
    );
}

#[test]
#[ignore = "a measurement: prints the state root's cost per block"]
fn state_root_cost_per_block_as_the_state_grows() {
    let sizes: Vec<u64> = std::env::var("STATE_ROOT_SIZES")
        .unwrap_or_else(|_| "1000,100000,1000000".into())
        .split(',')
        .map(|s| s.parse().expect("a size"))
        .collect();
    for n in sizes {
        measure(n);
    }
}
