//! Token mints on the executor: each is a system transaction calling the token's `mint`
//! (a `Transfer` from zero, balance and supply up); mints share the callbacks' half of the
//! block, and those that do not fit come back in order (`undelivered_mints`), before any
//! callback runs; a mint of an asset without a token is refused, not a panic.

use alloy_primitives::{Address, U256};
use engine::{Engine, EngineConfig};
use evm::actions::{Callback, CallbackKind, Mint};
use evm::core_view::CoreSnapshot;
use evm::executor::{BlockInput, EvmConfig, Executor, Genesis, SYSTEM_TX_TYPE};
use evm::system;
use evm::token::{self, TokenSpec};

fn mint(to: u8, units: i64, action_id: u64) -> Mint {
    Mint {
        to: Address::repeat_byte(to),
        asset: 2,
        units,
        action_id,
    }
}

#[test]
fn mints_run_first_within_the_system_budget_and_the_rest_wait_in_order() {
    let engine: Engine = Engine::new(EngineConfig::default());
    // 250,000 gas: the system half (125,000) holds one mint (limit 100,000) per block.
    let config = EvmConfig {
        block_gas_limit: 250_000,
        ..EvmConfig::default()
    };
    let genesis = Genesis {
        tokens: vec![TokenSpec::unnamed(2)],
        ..Genesis::default()
    };
    let (mut executor, _) = Executor::genesis(config, &genesis);
    let callback = Callback {
        target: Address::repeat_byte(9),
        action_id: 7,
        kind: CallbackKind::Done,
        oid: 0,
        price: 0,
        qty: 1,
        left: 0,
        code: 0,
    };
    let input = BlockInput {
        height: 1,
        timestamp: 1,
        mints: vec![mint(1, 30, 1), mint(2, 12, 2)],
        callbacks: vec![callback],
        ..Default::default()
    };
    let out = executor.execute_block(&CoreSnapshot::new(&engine, 1), input);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.receipts.len(), 1);
    let receipt = &out.receipts[0];
    assert!(receipt.status);
    assert_eq!(receipt.to, Some(system::token_address(2)));
    assert_eq!(out.txs[0].tx_type, SYSTEM_TX_TYPE);
    assert_eq!(out.txs[0].from, system::SYSTEM_ADDRESS);
    assert_eq!(out.undelivered_mints, vec![mint(2, 12, 2)]);
    assert_eq!(
        out.undelivered,
        vec![callback],
        "callbacks wait behind mints"
    );
    let token = system::token_address(2);
    let read = |executor: &mut Executor, slot| executor.storage(token, slot);
    let first = token::balance_slot(Address::repeat_byte(1));
    assert_eq!(read(&mut executor, first), U256::from(30));
    let supply = U256::from(token::TOTAL_SUPPLY_SLOT);
    assert_eq!(read(&mut executor, supply), U256::from(30));
    // The next block runs the mint that waited.
    let input = BlockInput {
        height: 2,
        timestamp: 2,
        mints: out.undelivered_mints,
        ..Default::default()
    };
    let out = executor.execute_block(&CoreSnapshot::new(&engine, 2), input);
    assert!(out.receipts[0].status && out.undelivered_mints.is_empty());
    let second = token::balance_slot(Address::repeat_byte(2));
    assert_eq!(read(&mut executor, second), U256::from(12));
    assert_eq!(read(&mut executor, supply), U256::from(42));
}

#[test]
fn a_mint_of_an_asset_without_a_token_is_refused_not_a_panic() {
    let engine: Engine = Engine::new(EngineConfig::default());
    let (mut executor, _) = Executor::genesis(EvmConfig::default(), &Genesis::default());
    let input = BlockInput {
        height: 1,
        timestamp: 1,
        mints: vec![mint(1, 5, 1)],
        ..Default::default()
    };
    let out = executor.execute_block(&CoreSnapshot::new(&engine, 1), input);
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    assert!(out.receipts.is_empty());
}
