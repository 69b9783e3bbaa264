//! The bridge's rules on the shipped execution (blocks validated, then executed): a
//! contract reads Core through the precompiles, a reverted CoreWriter call leaves no action
//! and no Core change, and value is conserved (escrow = Core supply of the native token,
//! EVM + Core = total); an account deposits to Core and withdraws back; CoreWriter refuses
//! bad calls with a revert and charges an action's Core and cross-domain gas; callbacks
//! cannot send actions, stay within half the block and wait in order; a faucet deposit of
//! the native token makes the block invalid; perp actions reach the engine for the sender,
//! and an account's leverage set through CoreWriter reads back through POSITION.

mod common;

use alloy_primitives::{Address, U256};
use common::*;
use engine::{Event, Side};
use execution::evm::actions::{signatures, ActionKind};
use execution::evm::executor::{BlockOutput, EvmConfig, SYSTEM_TX_TYPE};
use execution::evm::system::{self, abi::*, core_account, selector};
use execution::{BlockError, BlockItem, Executed, Execution, ExecutionConfig};
use transactions::Action;

/// One chain, the owner's EVM wallet (wallet 1, 100 ether at genesis) and the base fee
/// burned so far.
struct Harness {
    chain: Execution,
    owner: Wallet,
    burned: U256,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(config())
    }

    fn with(config: ExecutionConfig) -> Harness {
        Harness {
            chain: Execution::new(config, &genesis()),
            owner: Wallet::new(1),
            burned: U256::ZERO,
        }
    }

    /// Runs one block of `items`, counting the base fee its user transactions burn.
    fn run(&mut self, items: &[BlockItem]) -> (Executed, Vec<Event>) {
        let (out, events) = step_events(&mut self.chain, items);
        assert!(out.evm.header.gas_used <= out.evm.header.gas_limit);
        self.burned += burned(&out.evm);
        (out, events)
    }

    /// Runs a block holding one transaction of the owner.
    fn send(&mut self, to: Option<Address>, value: U256, input: Vec<u8>) -> Executed {
        let item = self.owner.item(to, value, input);
        self.run(&[item]).0
    }

    /// Every wei of the genesis: the owner's alloc and the escrow of the trader's 100,000
    /// native units on Core.
    fn genesis_total() -> U256 {
        ether(100) + units(100_000)
    }

    /// The EVM balances of the owner, `extra`, the coinbase, CoreWriter (the escrow) and
    /// the system address, plus the base fee burned: the genesis total if nothing was
    /// created or lost.
    fn evm_total(&self, extra: &[Address]) -> U256 {
        let config = EvmConfig::default();
        let fixed = [
            self.owner.address,
            config.coinbase,
            system::CORE_WRITER,
            system::SYSTEM_ADDRESS,
        ];
        fixed
            .iter()
            .chain(extra)
            .map(|&a| self.chain.evm().peek_account(a).balance)
            .fold(self.burned, |a, b| a + b)
    }
}

/// Base fee burned by a block's user transactions (system transactions pay no gas price).
fn burned(out: &BlockOutput) -> U256 {
    let base_fee = U256::from(EvmConfig::default().base_fee_wei);
    out.receipts
        .iter()
        .filter(|r| r.effective_gas_price > 0)
        .map(|r| U256::from(r.gas_used) * base_fee)
        .fold(U256::ZERO, |a, b| a + b)
}

fn escrow(chain: &Execution) -> U256 {
    chain.evm().peek_account(system::CORE_WRITER).balance
}

/// CoreWriter's escrow is the Core supply of the native token, in wei.
fn check_escrow(chain: &Execution) {
    let supply = chain.engine().supply(NATIVE).unwrap();
    assert_eq!(escrow(chain), units(supply as u64), "escrow = Core supply");
}

fn native(chain: &Execution, account: u64) -> i64 {
    chain
        .engine()
        .balance(account, NATIVE)
        .map_or(0, |b| b.total)
}

/// Blocks 1-3: deploys the MarketMaker, deposits 5,000 native units to Core through it
/// (the faucet gives it 50 base units), and checks what it reads of Core once the deposit
/// ran.
fn funded_market_maker(h: &mut Harness) -> Address {
    let out = h.send(None, U256::ZERO, market_maker_deploy());
    let mm = out.evm.receipts[0].contract_address.expect("created");
    let faucet = core_tx(
        FAUCET,
        T,
        vec![Action::Deposit {
            account: core_account(mm),
            asset: BASE,
            amount: 50,
        }],
    );
    let deposit = h
        .owner
        .item(Some(mm), units(5_000), calldata("deposit()", &[]));
    let (out, _) = h.run(&[faucet, deposit]);
    let action = out.evm.actions[0];
    assert_eq!(
        (action.sender, action.kind),
        (mm, ActionKind::Deposit { units: 5_000 })
    );
    h.run(&[]);
    assert_eq!(word_at(&view(&mut h.chain, mm, "lastKind()"), 0), 5, "Done");
    let balance = view_with(
        &mut h.chain,
        mm,
        "coreBalance(uint32)",
        &[word_u64(NATIVE as u64)],
    );
    assert_eq!(word_at(&balance, 0), 5_000);
    assert_eq!(word_at(&view(&mut h.chain, mm, "coreBlock()"), 0), 3);
    mm
}

/// Blocks 4-6: the contract quotes 90 / 110 x 5, reads its quotes back, and the trader
/// sells 2 into its bid.
fn quoted_and_filled(h: &mut Harness, mm: Address) {
    let quote = calldata(
        "quote(uint64,uint64,uint64)",
        &[word_u64(90), word_u64(110), word_u64(5)],
    );
    let out = h.send(Some(mm), U256::ZERO, quote);
    let (bid, ask) = (out.evm.actions[0].id, out.evm.actions[1].id);
    assert!(bid < ask, "log order");
    h.run(&[]);
    let last = word_at(&view(&mut h.chain, mm, "lastActionId()"), 0);
    assert_eq!(last, ask as i128);
    let bbo = view(&mut h.chain, mm, "bestBidOffer()");
    let bbo: Vec<_> = (0..4).map(|i| word_at(&bbo, i)).collect();
    assert_eq!(bbo, vec![90, 5, 110, 5]);
    let sell = core_tx(TRADER, T + 1, vec![place(1, Side::Sell, 90, 2)]);
    let (_, events) = h.run(&[sell]);
    let maker = core_account(mm);
    assert!(events.iter().any(|e| matches!(e,
        Event::Fill { maker_account, price: 90, qty: 2, .. } if *maker_account == maker)));
    assert_eq!(word_at(&view(&mut h.chain, mm, "lastFillPrice()"), 0), 90);
}

#[test]
fn a_reverted_quote_leaves_no_action_nor_core_change_and_bridging_conserves_value() {
    let mut h = Harness::new();
    let mm = funded_market_maker(&mut h);
    quoted_and_filled(&mut h, mm);
    // Block 7: quoteThenRevert fails, so Core never sees its orders.
    let revert = calldata(
        "quoteThenRevert(uint64,uint64,uint64)",
        &[word_u64(95), word_u64(105), word_u64(1)],
    );
    let out = h.send(Some(mm), U256::ZERO, revert);
    assert!(!out.evm.receipts[0].status, "reverted");
    assert!(out.evm.receipts[0].logs.is_empty());
    assert!(out.evm.actions.is_empty(), "no action from a reverted tx");
    let before = h.chain.engine().state_hash();
    let (_, events) = h.run(&[]);
    assert!(events.is_empty(), "Core block 8 has nothing to do");
    assert_eq!(h.chain.engine().state_hash(), before);
    assert_eq!(h.chain.engine().book_orders(MARKET, Side::Buy).len(), 1);
    // Conservation across everything above.
    check_escrow(&h.chain);
    let core = native(&h.chain, core_account(mm)) + native(&h.chain, account(TRADER));
    assert_eq!(
        units(core as u64),
        escrow(&h.chain),
        "Core backed by escrow"
    );
    assert_eq!(h.evm_total(&[mm]), Harness::genesis_total(), "no wei made");
}

/// Gas paid by `from`'s transactions of a block (tips and base fee).
fn fees_of(from: Address, out: &Executed) -> U256 {
    out.evm
        .receipts
        .iter()
        .filter(|r| r.from == from)
        .map(|r| U256::from(r.gas_used) * U256::from(r.effective_gas_price))
        .fold(U256::ZERO, |a, b| a + b)
}

/// The owner's EVM balance plus its Core native balance, in wei.
fn owner_total(h: &Harness) -> U256 {
    let me = h.owner.address;
    h.chain.evm().peek_account(me).balance + units(native(&h.chain, core_account(me)) as u64)
}

/// Runs a block with the owner's CoreWriter call, then the block in which Core runs it;
/// returns the fees paid and the second block's engine events.
fn core_writer_round(h: &mut Harness, value: U256, input: Vec<u8>) -> (U256, Vec<Event>) {
    let out = h.send(Some(system::CORE_WRITER), value, input);
    assert!(out.evm.receipts[0].status, "{:?}", out.evm.receipts[0]);
    let (next, events) = h.run(&[]);
    let me = h.owner.address;
    (fees_of(me, &out) + fees_of(me, &next), events)
}

#[test]
fn eoa_deposits_to_core_and_withdraws_back_conserving_supply() {
    let mut h = Harness::new();
    let me = h.owner.address;
    let start = owner_total(&h);
    // Deposit 7,000 units straight to CoreWriter: in flight, the value sits in escrow.
    let out = h.send(
        Some(system::CORE_WRITER),
        units(7_000),
        calldata(signatures::DEPOSIT, &[]),
    );
    let mut fees = fees_of(me, &out);
    assert_eq!(owner_total(&h) + units(7_000) + fees, start, "in flight");
    h.run(&[]);
    assert_eq!(native(&h.chain, core_account(me)), 7_000);
    assert_eq!(owner_total(&h) + fees, start, "EVM + Core = total");
    check_escrow(&h.chain);
    // Withdraw 2,500: Core debits in the next Core block, the credit lands in the EVM block
    // of the same height.
    let evm_before = h.chain.evm().peek_account(me).balance;
    let withdraw = calldata(signatures::WITHDRAW, &[word_u64(2_500)]);
    let (paid, _) = core_writer_round(&mut h, U256::ZERO, withdraw);
    fees += paid;
    assert_eq!(native(&h.chain, core_account(me)), 4_500);
    let evm_now = h.chain.evm().peek_account(me).balance;
    assert_eq!(evm_now + paid, evm_before + units(2_500));
    assert_eq!(owner_total(&h) + fees, start, "EVM + Core = total");
    check_escrow(&h.chain);
    // Withdrawing more than Core holds is refused by Core and credits nothing.
    let too_much = calldata(signatures::WITHDRAW, &[word_u64(1_000_000)]);
    let (paid, events) = core_writer_round(&mut h, U256::ZERO, too_much);
    fees += paid;
    assert!(events.iter().any(|e| matches!(e, Event::Rejected { .. })));
    assert_eq!(owner_total(&h) + fees, start);
    check_escrow(&h.chain);
    assert_eq!(h.evm_total(&[]), Harness::genesis_total());
}

/// A perp market (9) settled in the native asset, 10x at most, one margin tier.
fn perp_market() -> engine::Command {
    engine::Command::CreatePerpMarket(Box::new(engine::PerpSpec {
        market: 9,
        collateral: NATIVE,
        ..perp_spec()
    }))
}

/// An EOA's `setLeverage` on a perp market is accepted through a block: the POSITION
/// precompile then reads the leverage and margin mode it set; above the market's maximum
/// it is refused `invalid_leverage`.
#[test]
fn an_eoa_sets_its_leverage_on_a_perp_market_through_core_writer() {
    let mut commands = genesis();
    commands.push(perp_market());
    let mut h = Harness {
        chain: Execution::new(config(), &commands),
        owner: Wallet::new(1),
        burned: U256::ZERO,
    };
    let me = h.owner.address;
    // A Core account first: a deposit through CoreWriter.
    let deposit = calldata(signatures::DEPOSIT, &[]);
    core_writer_round(&mut h, units(7_000), deposit);
    let set = |leverage| {
        calldata(
            signatures::SET_LEVERAGE,
            &[word_u64(9), word_u64(leverage), word_bool(true)],
        )
    };
    let (_, events) = core_writer_round(&mut h, U256::ZERO, set(5));
    assert!(
        !events.iter().any(|e| matches!(e, Event::Rejected { .. })),
        "{events:?}"
    );
    let mut input = [0u8; 64];
    input[12..32].copy_from_slice(me.as_slice());
    input[63] = 9;
    let request = execution::evm::executor::CallRequest {
        to: Some(system::POSITION),
        data: input.to_vec().into(),
        ..Default::default()
    };
    let out = match h.chain.call(&request) {
        execution::evm::executor::CallOutcome::Success { output, .. } => output.to_vec(),
        other => panic!("POSITION failed: {other:?}"),
    };
    assert_eq!(
        (word_at(&out, 4), word_at(&out, 5)),
        (5, 1),
        "leverage 5, isolated"
    );
    let (_, events) = core_writer_round(&mut h, U256::ZERO, set(11));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Rejected {
            reason: engine::RejectReason::InvalidLeverage,
            ..
        }
    )));
}

/// The perp actions reach the engine as the sender's commands through a block: on this
/// genesis's spot market both are refused `not_perp_market` for the owner's account.
#[test]
fn perp_actions_from_an_eoa_reach_the_engine_for_its_account() {
    let mut h = Harness::new();
    let me = core_account(h.owner.address);
    let market = word_u64(u64::from(MARKET));
    let leverage = calldata(
        signatures::SET_LEVERAGE,
        &[market, word_u64(5), word_bool(true)],
    );
    let margin = calldata(signatures::ISOLATED_MARGIN, &[market, word_u64(3)]);
    for input in [leverage, margin] {
        let (_, events) = core_writer_round(&mut h, U256::ZERO, input);
        assert!(
            events.iter().any(|e| matches!(
                e,
                Event::Rejected { account, reason: engine::RejectReason::NotPerpMarket, .. }
                    if *account == me
            )),
            "{events:?}"
        );
    }
}

#[test]
fn core_writer_refuses_bad_calls_with_a_revert() {
    let mut h = Harness::new();
    let market = word_u64(MARKET as u64);
    let mut items: Vec<BlockItem> = [
        calldata("nope()", &[]),
        calldata(signatures::WITHDRAW, &[]),
        calldata(signatures::CANCEL, &[word_u64(1 << 40), word_u64(1)]),
    ]
    .into_iter()
    .map(|data| h.owner.item(Some(system::CORE_WRITER), U256::ZERO, data))
    .collect();
    // Value on a non-deposit action.
    let cancel_all = calldata(signatures::CANCEL_ALL, &[market]);
    items.push(
        h.owner
            .item(Some(system::CORE_WRITER), units(1), cancel_all.clone()),
    );
    let (out, _) = h.run(&items);
    assert_eq!(out.evm.receipts.len(), 4);
    for r in &out.evm.receipts {
        assert!(!r.status, "refused: {r:?}");
        assert_eq!(&r.output[..4], &[0x08, 0xc3, 0x79, 0xa0], "Error(string)");
    }
    assert!(out.evm.actions.is_empty());
    // The gas of an accepted action includes its Core and cross-domain cost.
    let out = h.send(Some(system::CORE_WRITER), U256::ZERO, cancel_all);
    let r = &out.evm.receipts[0];
    assert!(r.status);
    let expected_min = 21_000
        + ActionKind::CancelAll { market: MARKET }.core_gas()
        + system::CROSS_MESSAGE_GAS
        + system::CROSS_BYTE_GAS * 36;
    assert!(
        r.gas_used >= expected_min,
        "{} >= {expected_min}",
        r.gas_used
    );
    assert!(r.gas_used < expected_min + 2_000, "{}", r.gas_used);
}

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

impl Harness {
    /// The most gas one transaction may ask for: the block's user half, at most 1,000,000.
    fn user_gas(&self) -> u64 {
        let limit = self.chain.evm().config().block_gas_limit;
        (limit / system::USER_GAS_RESERVE_DIVISOR).min(1_000_000)
    }

    /// Deploys an [`amplifier`] of `n` calls, then calls it once: `n` CoreWriter actions.
    fn poked_amplifier(&mut self, n: usize) {
        let gas = self.user_gas();
        let deploy = self
            .owner
            .item_with_gas(None, U256::ZERO, amplifier(n), gas);
        let (out, _) = self.run(&[deploy]);
        assert!(out.evm.receipts[0].status, "{:?}", out.evm.receipts[0]);
        let amp = out.evm.receipts[0].contract_address.unwrap();
        let poke = self.owner.item_with_gas(Some(amp), U256::ZERO, vec![], gas);
        let (out, _) = self.run(&[poke]);
        assert_eq!(
            out.evm.actions.len(),
            n,
            "the user's call sends {n} actions"
        );
    }

    /// Runs a block with a user transfer, checks the transfer ran and the block's callbacks
    /// sent no action, and returns the EVM block.
    fn transfer_block(&mut self) -> BlockOutput {
        let to = Wallet::new(9).address;
        let transfer = self
            .owner
            .item_with_gas(Some(to), U256::ZERO, vec![], 21_000);
        let (out, _) = self.run(&[transfer]);
        assert!(
            out.evm.actions.is_empty(),
            "callbacks sent {:?}",
            out.evm.actions
        );
        let user = out.evm.receipts.last().unwrap();
        assert!(
            user.tx_type == 2 && user.status,
            "the transfer ran: {user:?}"
        );
        out.evm
    }
}

fn callbacks_in(out: &BlockOutput) -> usize {
    out.receipts
        .iter()
        .filter(|r| r.tx_type == SYSTEM_TX_TYPE)
        .count()
}

#[test]
fn callbacks_cannot_send_actions_so_one_call_does_not_amplify() {
    let mut h = Harness::new();
    h.poked_amplifier(4);
    // Core runs the 4 actions; each gives the contract a Done callback, which calls
    // CoreWriter 4 times again: refused (a callback cannot act on Core).
    let callbacks: usize = (0..4).map(|_| callbacks_in(&h.transfer_block())).sum();
    assert_eq!(callbacks, 4, "one callback per action, no more");
    assert!(h.chain.bridge().pending_callbacks.is_empty());
    assert!(h.chain.bridge().pending_actions.is_empty());
}

#[test]
fn callbacks_stay_within_half_the_block_and_wait_in_order() {
    let mut config = config();
    config.evm.config.block_gas_limit = 700_000;
    let mut h = Harness::with(config);
    h.poked_amplifier(8);
    let mut delivered = Vec::new();
    for _ in 0..8 {
        let out = h.transfer_block();
        let n = callbacks_in(&out);
        assert!(n <= 2, "{n} callbacks: at most 350k gas of callbacks");
        let system_gas: u64 = out.receipts[..n].iter().map(|r| r.gas_used).sum();
        assert!(system_gas <= 350_000);
        delivered.extend(out.txs[..n].iter().map(|t| t.input.clone()));
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
fn a_faucet_deposit_of_the_native_asset_makes_the_block_invalid() {
    let mut chain = chain();
    let to = core_account(Wallet::new(5).address);
    let deposit = |nonce, asset| {
        let deposit = Action::Deposit {
            account: to,
            asset,
            amount: 1_000,
        };
        core_tx(FAUCET, nonce, vec![deposit])
    };
    let check = |chain: &Execution, items: &[BlockItem]| {
        let signatures = signatures_of(items);
        chain.validate_block(T + 1, items, &signatures).map(|_| ())
    };
    let native_deposit = [deposit(T, BASE), deposit(T + 1, NATIVE)];
    assert_eq!(
        check(&chain, &native_deposit),
        Err(BlockError::NativeAsset {
            index: 1,
            asset: NATIVE
        })
    );
    // The faucet may still fund other assets; the native supply and escrow do not move.
    let supply = chain.engine().supply(NATIVE);
    step(&mut [&mut chain], &native_deposit[..1]);
    assert_eq!(chain.engine().supply(NATIVE), supply);
    assert_eq!(native(&chain, to), 0);
    assert_eq!(chain.engine().balance(to, BASE).unwrap().total, 1_000);
    check_escrow(&chain);
}
