//! Core blocks and EVM blocks in step: the MarketMaker fixture deployed by a signed raw
//! transaction quotes on the engine through CoreWriter, gets filled, and hears about it in
//! the next EVM block; a reverted transaction leaves no Core effect; bridging conserves.

mod common;

use alloy_primitives::{Address, U256};
use common::*;
use engine::{Command, Event, NewOrder, SelfTradePrevention, Side, TimeInForce};
use evm_bridge::actions::{signatures, ActionKind};
use evm_bridge::chain::{Chain, StepOutput};
use evm_bridge::executor::{CallOutcome, CallRequest, SignedTx};
use evm_bridge::system::{self, abi::*, core_account};

struct Harness {
    chain: Chain,
    owner: Wallet,
    nonce: u64,
    /// Base fee burned so far (wei).
    burned: U256,
    genesis_total: U256,
}

impl Harness {
    fn new() -> Harness {
        let owner = Wallet::new(1);
        let user = Wallet::new(2);
        let alloc = vec![(owner.address, ether(100)), (user.address, ether(50))];
        let engine = core_genesis();
        let (chain, _) = Chain::genesis(engine, config(), NATIVE, alloc, 1_700_000_000);
        let genesis_total = ether(150) + U256::from(100_000u64) * config().wei_per_unit; // the taker's native on Core
        Harness {
            chain,
            owner,
            nonce: 0,
            burned: U256::ZERO,
            genesis_total,
        }
    }

    fn tx(&mut self, to: Option<Address>, value: U256, input: Vec<u8>) -> SignedTx {
        let raw = self
            .owner
            .eip1559(config().chain_id, self.nonce, to, value, input, 3_000_000);
        self.nonce += 1;
        SignedTx::decode(&raw, config().chain_id).expect("valid tx")
    }

    fn step(&mut self, external: &[Command], txs: Vec<SignedTx>) -> StepOutput {
        let height = self.chain.executor().head().number + 1;
        let out = self.chain.step(external, txs, 1_700_000_000 + height);
        assert_eq!(out.evm.header.number, height, "same height on both sides");
        assert!(out.evm.dropped.is_empty(), "{:?}", out.evm.dropped);
        for receipt in &out.evm.receipts {
            self.burned += U256::from(receipt.gas_used)
                * U256::from(config().base_fee_wei)
                * U256::from((receipt.effective_gas_price > 0) as u64);
        }
        out
    }

    fn view(&mut self, to: Address, signature: &str, words: &[[u8; 32]]) -> Vec<u8> {
        let request = CallRequest {
            to: Some(to),
            data: calldata(signature, words).into(),
            ..Default::default()
        };
        match self.chain.call(&request) {
            CallOutcome::Success { output, .. } => output.to_vec(),
            other => panic!("{signature} failed: {other:?}"),
        }
    }

    /// Sum of every EVM balance we know of plus the escrow.
    fn evm_total(&mut self, extra: &[Address]) -> U256 {
        let mut addresses = vec![
            self.owner.address,
            Wallet::new(2).address,
            config().coinbase,
            system::CORE_WRITER,
            system::SYSTEM_ADDRESS,
        ];
        addresses.extend_from_slice(extra);
        addresses
            .iter()
            .map(|&a| self.chain.executor().account(a).balance)
            .fold(U256::ZERO, |a, b| a + b)
    }

    fn check_escrow(&mut self) {
        let supply = self.chain.engine().supply(NATIVE).unwrap();
        let escrow = self.chain.executor().account(system::CORE_WRITER).balance;
        assert_eq!(
            escrow,
            U256::from(supply as u64) * config().wei_per_unit,
            "escrow equals Core supply of the native asset"
        );
    }
}

fn place(account: u64, oid: u64, side: Side, price: i64, qty: i64) -> Command {
    Command::Place(NewOrder {
        account,
        market: MARKET,
        oid,
        side,
        price: Some(price),
        qty,
        tif: TimeInForce::Ioc,
        stp: SelfTradePrevention::CancelMaker,
        reduce_only: false,
    })
}

#[test]
fn market_maker_contract_quotes_gets_filled_and_hears_back() {
    let mut h = Harness::new();
    // Block 1: deploy the fixture (creation code + constructor argument) by raw signed tx.
    let deploy = h.tx(None, U256::ZERO, market_maker_deploy(MARKET));
    let out = h.step(&[], vec![deploy]);
    let receipt = &out.evm.receipts[0];
    assert!(receipt.status, "deploy succeeded: {receipt:?}");
    let mm = receipt.contract_address.expect("created");
    assert!(!h.chain.executor().code(mm).is_empty());
    let mm_account = core_account(mm);
    assert_eq!(
        word_at(&h.view(mm, "market()", &[]), 0),
        MARKET as i128,
        "constructor ran"
    );

    // Block 2: deposit 5,000 Core units of the native token through the contract.
    let units = 5_000u64;
    let deposit = h.tx(
        Some(mm),
        U256::from(units) * config().wei_per_unit,
        calldata("deposit()", &[]),
    );
    let out = h.step(&[], vec![deposit]);
    assert!(out.evm.receipts[0].status);
    assert_eq!(out.evm.actions.len(), 1);
    assert_eq!(out.evm.actions[0].sender, mm);
    assert_eq!(
        out.evm.actions[0].kind,
        ActionKind::Deposit {
            units: units as i64
        }
    );
    assert_eq!(
        h.chain.engine().balance(mm_account, NATIVE),
        None,
        "Core sees nothing before the next Core block"
    );

    // Block 3: Core runs the deposit; the operator also funds the contract's base asset.
    let out = h.step(
        &[Command::Deposit {
            account: mm_account,
            asset: BASE,
            amount: 50,
        }],
        vec![],
    );
    assert_eq!(
        h.chain.engine().balance(mm_account, NATIVE).unwrap().total,
        units as i64
    );
    // The deposit's Done callback reached the contract in EVM block 3.
    assert_eq!(out.evm.receipts.len(), 1, "one callback system tx");
    assert!(out.evm.receipts[0].status, "{:?}", out.evm.receipts[0]);
    assert_eq!(word_at(&h.view(mm, "callbacks()", &[]), 0), 1);
    assert_eq!(word_at(&h.view(mm, "lastKind()", &[]), 0), 5, "Done");
    // The read precompile sees the Core balance (as of block 3's start = after Core 3).
    let balance = h.view(mm, "coreBalance(uint32)", &[word_u64(NATIVE as u64)]);
    assert_eq!(word_at(&balance, 0), units as i128);
    assert_eq!(word_at(&h.view(mm, "coreBlock()", &[]), 0), 3);

    // Block 4: quote 90 / 110, 5 lots.
    let quote = h.tx(
        Some(mm),
        U256::ZERO,
        calldata(
            "quote(uint64,uint64,uint64)",
            &[word_u64(90), word_u64(110), word_u64(5)],
        ),
    );
    let out = h.step(&[], vec![quote]);
    assert!(out.evm.receipts[0].status);
    assert_eq!(out.evm.actions.len(), 2);
    let (bid_action, ask_action) = (out.evm.actions[0].id, out.evm.actions[1].id);
    assert!(bid_action < ask_action, "log order");

    // Block 5: Core places both orders; they are in the engine's book.
    let out = h.step(&[], vec![]);
    let bids = h.chain.engine().book_orders(MARKET, Side::Buy);
    let asks = h.chain.engine().book_orders(MARKET, Side::Sell);
    assert_eq!(bids.len(), 1);
    assert_eq!(
        (bids[0].account, bids[0].price, bids[0].remaining),
        (mm_account, 90, 5)
    );
    assert_eq!(
        (asks[0].account, asks[0].price, asks[0].remaining),
        (mm_account, 110, 5)
    );
    assert_eq!(out.evm.receipts.len(), 2, "two Accepted callbacks");
    assert_eq!(
        word_at(&h.view(mm, "lastActionId()", &[]), 0),
        ask_action as i128
    );
    let bbo = h.view(mm, "bestBidOffer()", &[]);
    assert_eq!(
        (0..4).map(|i| word_at(&bbo, i)).collect::<Vec<_>>(),
        vec![90, 5, 110, 5]
    );

    // Block 6: a Core-only taker sells 2 into the contract's bid.
    let out = h.step(&[place(TAKER, 1, Side::Sell, 90, 2)], vec![]);
    let fill = out
        .core_events
        .iter()
        .find(|e| matches!(e, Event::Fill { .. }))
        .expect("a fill");
    assert!(
        matches!(fill, Event::Fill { maker_account, price: 90, qty: 2, .. } if *maker_account == mm_account)
    );
    // The fill callback ran in EVM block 6 (the block after Core executed it is this same
    // height's EVM block, which follows Core block 6).
    assert!(out.evm.receipts.iter().all(|r| r.status));
    assert_eq!(word_at(&h.view(mm, "fills()", &[]), 0), 1);
    assert_eq!(word_at(&h.view(mm, "filledLots()", &[]), 0), 2);
    assert_eq!(word_at(&h.view(mm, "lastFillPrice()", &[]), 0), 90);
    assert_eq!(
        h.chain.engine().balance(mm_account, BASE).unwrap().total,
        52,
        "bought 2"
    );

    // Block 7: quoteThenRevert: the transaction fails, so Core never sees its orders.
    let revert = h.tx(
        Some(mm),
        U256::ZERO,
        calldata(
            "quoteThenRevert(uint64,uint64,uint64)",
            &[word_u64(95), word_u64(105), word_u64(1)],
        ),
    );
    let out = h.step(&[], vec![revert]);
    assert!(!out.evm.receipts[0].status, "reverted");
    assert!(out.evm.receipts[0].logs.is_empty());
    assert!(out.evm.actions.is_empty(), "no action from a reverted tx");
    let before = h.chain.engine().state_hash();
    let out = h.step(&[], vec![]);
    assert!(out.core_events.is_empty(), "Core block 8 has nothing to do");
    assert_eq!(h.chain.engine().state_hash(), before);
    assert_eq!(h.chain.engine().book_orders(MARKET, Side::Buy).len(), 1);

    // Conservation across everything above.
    h.check_escrow();
    let core_native: i64 = [mm_account, TAKER]
        .iter()
        .map(|&a| h.chain.engine().balance(a, NATIVE).unwrap().total)
        .sum();
    let total = h.evm_total(&[mm]) + h.burned;
    let escrow = h.chain.executor().account(system::CORE_WRITER).balance;
    assert_eq!(
        U256::from(core_native as u64) * config().wei_per_unit,
        escrow,
        "Core balances of the native asset are backed by the escrow"
    );
    assert_eq!(total, h.genesis_total, "no wei created or lost");
}

#[test]
fn eoa_deposits_to_core_and_withdraws_back_conserving_supply() {
    let mut h = Harness::new();
    let me = h.owner.address;
    let account = core_account(me);
    let wpu = config().wei_per_unit;
    let start = h.chain.executor().account(me).balance;
    let mut fees = U256::ZERO;
    let pay = |fees: &mut U256, out: &StepOutput| {
        for r in &out.evm.receipts {
            if r.from == me {
                *fees += U256::from(r.gas_used) * U256::from(r.effective_gas_price);
            }
        }
    };
    let total_of = |h: &mut Harness| {
        let core = h
            .chain
            .engine()
            .balance(account, NATIVE)
            .map_or(0, |b| b.total);
        h.chain.executor().account(me).balance + U256::from(core as u64) * wpu
    };

    // Deposit 7,000 units straight to CoreWriter.
    let tx = h.tx(
        Some(system::CORE_WRITER),
        U256::from(7_000u64) * wpu,
        calldata(signatures::DEPOSIT, &[]),
    );
    let out = h.step(&[], vec![tx]);
    pay(&mut fees, &out);
    assert!(out.evm.receipts[0].status);
    // In flight: the value sits in escrow, Core has not credited yet.
    let in_flight = U256::from(7_000u64) * wpu;
    assert_eq!(total_of(&mut h) + in_flight + fees, start);
    let out = h.step(&[], vec![]);
    pay(&mut fees, &out);
    assert_eq!(
        h.chain.engine().balance(account, NATIVE).unwrap().total,
        7_000
    );
    assert_eq!(total_of(&mut h) + fees, start, "EVM + Core = total");
    h.check_escrow();

    // Withdraw 2,500 back: Core debits in the next Core block, the credit lands in the EVM
    // block of the same height.
    let tx = h.tx(
        Some(system::CORE_WRITER),
        U256::ZERO,
        calldata(signatures::WITHDRAW, &[word_u64(2_500)]),
    );
    let out = h.step(&[], vec![tx]);
    pay(&mut fees, &out);
    let evm_before = h.chain.executor().account(me).balance;
    let out = h.step(&[], vec![]);
    pay(&mut fees, &out);
    assert_eq!(
        h.chain.engine().balance(account, NATIVE).unwrap().total,
        4_500
    );
    assert_eq!(
        h.chain.executor().account(me).balance,
        evm_before + U256::from(2_500u64) * wpu
    );
    assert_eq!(total_of(&mut h) + fees, start, "EVM + Core = total");
    h.check_escrow();

    // Withdrawing more than Core holds is refused by Core and credits nothing.
    let tx = h.tx(
        Some(system::CORE_WRITER),
        U256::ZERO,
        calldata(signatures::WITHDRAW, &[word_u64(1_000_000)]),
    );
    let out = h.step(&[], vec![tx]);
    pay(&mut fees, &out);
    let out = h.step(&[], vec![]);
    pay(&mut fees, &out);
    assert!(out
        .core_events
        .iter()
        .any(|e| matches!(e, Event::Rejected { .. })));
    assert_eq!(total_of(&mut h) + fees, start);
    h.check_escrow();
    assert_eq!(h.evm_total(&[]) + h.burned, h.genesis_total);
}

#[test]
fn core_writer_refuses_bad_calls_with_a_revert() {
    let mut h = Harness::new();
    let bad = [
        calldata("nope()", &[]),
        calldata(signatures::WITHDRAW, &[]),
        calldata(signatures::CANCEL, &[word_u64(1 << 40), word_u64(1)]),
    ];
    let txs: Vec<_> = bad
        .iter()
        .map(|data| h.tx(Some(system::CORE_WRITER), U256::ZERO, data.clone()))
        .collect();
    // Value on a non-deposit action.
    let with_value = h.tx(
        Some(system::CORE_WRITER),
        U256::from(1u64) * config().wei_per_unit,
        calldata(signatures::CANCEL_ALL, &[word_u64(MARKET as u64)]),
    );
    let mut all = txs;
    all.push(with_value);
    let out = h.step(&[], all);
    assert_eq!(out.evm.receipts.len(), 4);
    for r in &out.evm.receipts {
        assert!(!r.status, "refused: {r:?}");
        assert_eq!(&r.output[..4], &[0x08, 0xc3, 0x79, 0xa0], "Error(string)");
    }
    assert!(out.evm.actions.is_empty());
    // The gas of an accepted action includes its Core and cross-domain cost.
    let ok = h.tx(
        Some(system::CORE_WRITER),
        U256::ZERO,
        calldata(signatures::CANCEL_ALL, &[word_u64(MARKET as u64)]),
    );
    let out = h.step(&[], vec![ok]);
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
