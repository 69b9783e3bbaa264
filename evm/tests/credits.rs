//! A credit CoreWriter's escrow cannot cover is refused, not a panic, and mints nothing.
//! The execution never makes such a credit (its escrow is the Core supply of the native
//! token, and Core credits only what a withdrawal debited), so the rule is checked on the
//! executor directly, with an empty escrow.

use alloy_primitives::{Address, U256};
use engine::{Engine, EngineConfig};
use evm::actions::Credit;
use evm::core_view::CoreSnapshot;
use evm::executor::{BlockInput, EvmConfig, Executor, Genesis};
use evm::system;

#[test]
fn a_credit_the_escrow_cannot_cover_is_refused_not_a_panic() {
    let engine: Engine = Engine::new(EngineConfig::default());
    let (mut executor, _) = Executor::genesis(EvmConfig::default(), &Genesis::default());
    let to = Address::repeat_byte(6);
    let credit = Credit {
        to,
        wei: U256::from(5u64),
        action_id: 1,
    };
    let input = BlockInput {
        height: 1,
        timestamp: 1,
        credits: vec![credit],
        ..Default::default()
    };
    let out = executor.execute_block(&CoreSnapshot::new(&engine, 1), input);
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    assert_eq!(executor.account(to).balance, U256::ZERO);
    assert_eq!(executor.account(system::CORE_WRITER).balance, U256::ZERO);
}
