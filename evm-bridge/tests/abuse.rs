//! Abuse cases of the EVM bridge: callback amplification, overflowing transaction
//! cost, native-asset invariant breaks, and reserved Core ids.

mod common;

use alloy_primitives::{Address, U256};
use common::*;
use engine::Command;
use evm_bridge::actions::signatures;
use evm_bridge::chain::{Chain, StepOutput};
use evm_bridge::executor::{EvmConfig, SignedTx, SYSTEM_TX_TYPE};
use evm_bridge::system::{self, core_account, selector};

/// Creation code of a contract whose runtime, on any call, calls
/// `CoreWriter.cancelAll(MARKET)` `n` times (ignoring failures) and stops.
fn amplifier(n: usize) -> Vec<u8> {
    let mut runtime = vec![0x7f]; // PUSH32 selector || zeros
    let mut word = [0u8; 32];
    word[..4].copy_from_slice(&selector(signatures::CANCEL_ALL));
    runtime.extend_from_slice(&word);
    runtime.extend_from_slice(&[0x60, 0x00, 0x52]); // MSTORE(0, word)
    runtime.extend_from_slice(&[0x60, MARKET as u8, 0x60, 0x04, 0x52]); // MSTORE(4, market)
    for _ in 0..n {
        // CALL(gas, CORE_WRITER, 0, 0, 36, 0, 0); POP
        runtime.extend_from_slice(&[0x60, 0x00, 0x60, 0x00, 0x60, 36, 0x60, 0x00, 0x60, 0x00]);
        runtime.push(0x73);
        runtime.extend_from_slice(system::CORE_WRITER.as_slice());
        runtime.extend_from_slice(&[0x5a, 0xf1, 0x50]);
    }
    runtime.push(0x00);
    let [hi, lo] = (runtime.len() as u16).to_be_bytes();
    let mut init = vec![
        0x61, hi, lo, 0x60, 14, 0x60, 0x00, 0x39, 0x61, hi, lo, 0x60, 0x00, 0xf3,
    ];
    init.extend_from_slice(&runtime);
    init
}

struct H {
    chain: Chain,
    wallet: Wallet,
    nonce: u64,
    config: EvmConfig,
}

impl H {
    fn new(config: EvmConfig) -> H {
        let wallet = Wallet::new(1);
        let (chain, _) = Chain::genesis(
            core_genesis(),
            config.clone(),
            NATIVE,
            vec![(wallet.address, ether(100))],
            1_700_000_000,
        );
        H {
            chain,
            wallet,
            nonce: 0,
            config,
        }
    }

    fn tx(&mut self, to: Option<Address>, input: Vec<u8>, gas: u64) -> SignedTx {
        let raw = self
            .wallet
            .eip1559(self.config.chain_id, self.nonce, to, U256::ZERO, input, gas);
        self.nonce += 1;
        SignedTx::decode(&raw, self.config.chain_id).unwrap()
    }

    fn step(&mut self, external: &[Command], txs: Vec<SignedTx>) -> StepOutput {
        let height = self.chain.executor().head().number + 1;
        let out = self.chain.step(external, txs, 1_700_000_000 + height);
        assert!(out.evm.dropped.is_empty(), "{:?}", out.evm.dropped);
        assert!(out.evm.header.gas_used <= self.config.block_gas_limit);
        out
    }

    fn deploy_amplifier(&mut self, n: usize) -> Address {
        let gas = self.config.block_gas_limit.min(1_000_000);
        let deploy = self.tx(None, amplifier(n), gas);
        let out = self.step(&[], vec![deploy]);
        let r = &out.evm.receipts[0];
        assert!(r.status, "{r:?}");
        r.contract_address.unwrap()
    }
}

fn callbacks_in(out: &StepOutput) -> usize {
    out.evm
        .receipts
        .iter()
        .filter(|r| r.tx_type == SYSTEM_TX_TYPE)
        .count()
}

#[test]
fn callbacks_cannot_send_actions_so_one_call_does_not_amplify() {
    let mut h = H::new(config());
    let amp = h.deploy_amplifier(4);
    let poke = h.tx(Some(amp), vec![], 1_000_000);
    let out = h.step(&[], vec![poke]);
    assert_eq!(out.evm.actions.len(), 4, "the user's call sends 4 actions");
    // Core runs them; each gives the contract a Done callback, which calls CoreWriter 4
    // times again: refused (a callback cannot act on Core).
    let mut callbacks = 0;
    for _ in 0..4 {
        let transfer = h.tx(Some(Wallet::new(9).address), vec![], 21_000);
        let out = h.step(&[], vec![transfer]);
        callbacks += callbacks_in(&out);
        assert!(
            out.evm.actions.is_empty(),
            "callbacks sent {:?}",
            out.evm.actions
        );
        assert!(out.evm.deferred.is_empty(), "the user transfer is included");
        let user = out.evm.receipts.last().unwrap();
        assert_eq!(user.tx_type, 2);
        assert!(user.status);
    }
    assert_eq!(callbacks, 4, "one callback per action, no more");
    assert!(h.chain.bridge().pending_callbacks.is_empty());
}

#[test]
fn callbacks_stay_within_half_the_block_and_wait_in_order() {
    let mut config = config();
    config.block_gas_limit = 700_000;
    let mut h = H::new(config);
    let amp = h.deploy_amplifier(8);
    let poke = h.tx(Some(amp), vec![], 600_000);
    let out = h.step(&[], vec![poke]);
    assert_eq!(out.evm.actions.len(), 8);
    let mut delivered = Vec::new();
    for _ in 0..8 {
        let transfer = h.tx(Some(Wallet::new(9).address), vec![], 21_000);
        let out = h.step(&[], vec![transfer]);
        let n = callbacks_in(&out);
        assert!(n <= 2, "{n} callbacks: at most 350k gas of callbacks");
        let system_gas: u64 = out.evm.receipts[..n].iter().map(|r| r.gas_used).sum();
        assert!(system_gas <= 350_000);
        delivered.extend(out.evm.txs[..n].iter().map(|t| t.input.clone()));
        assert!(out.evm.deferred.is_empty(), "the user transfer is included");
        assert!(out.evm.receipts.last().unwrap().status);
    }
    assert_eq!(delivered.len(), 8, "every callback arrives eventually");
    // FIFO: action ids (first argument) increase.
    let ids: Vec<U256> = delivered
        .iter()
        .map(|d| U256::from_be_slice(&d[4..36]))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[test]
fn external_commands_cannot_move_the_native_asset() {
    let mut h = H::new(config());
    let account = core_account(Wallet::new(5).address);
    let supply = h.chain.engine().supply(NATIVE).unwrap();
    let out = h.step(
        &[
            Command::Deposit {
                account,
                asset: NATIVE,
                amount: 1_000,
            },
            Command::Withdraw {
                account: TAKER,
                asset: NATIVE,
                amount: 10,
            },
            Command::Deposit {
                account,
                asset: BASE,
                amount: 3,
            },
        ],
        vec![],
    );
    assert_eq!(out.refused_commands.len(), 2, "{:?}", out.refused_commands);
    assert_eq!(h.chain.engine().supply(NATIVE).unwrap(), supply);
    let native = h.chain.engine().balance(account, NATIVE);
    assert_eq!(native.map_or(0, |b| b.total), 0);
    assert_eq!(h.chain.engine().balance(account, BASE).unwrap().total, 3);
    let escrow = h.chain.executor().account(system::CORE_WRITER).balance;
    assert_eq!(escrow, U256::from(supply as u64) * config().wei_per_unit);
}

#[test]
fn a_credit_the_escrow_cannot_cover_is_refused_not_a_panic() {
    use evm_bridge::actions::Credit;
    use evm_bridge::core_view::CoreSnapshot;
    use evm_bridge::executor::{BlockInput, Executor, Genesis};
    let engine = core_genesis();
    let (mut executor, _) = Executor::genesis(config(), &Genesis::default());
    let to = Wallet::new(6).address;
    let view = CoreSnapshot::new(&engine, 1);
    let out = executor.execute_block(
        &view,
        BlockInput {
            height: 1,
            timestamp: 1,
            credits: vec![Credit {
                to,
                wei: U256::from(5u64),
                action_id: 1,
            }],
            ..Default::default()
        },
    );
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    assert_eq!(executor.account(to).balance, U256::ZERO);
    assert_eq!(executor.account(system::CORE_WRITER).balance, U256::ZERO);
}
