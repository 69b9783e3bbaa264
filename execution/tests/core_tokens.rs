//! Core assets as ERC-20 tokens on the shipped execution (blocks validated, then executed):
//! an EOA withdraws Core asset 2 to the EVM (Core debits it in the next Core block, the
//! token is minted to it in the EVM block of that height, with a `Transfer` from zero),
//! transfers tokens, approves a spender who moves them with `transferFrom`, and the
//! receiver deposits them back to Core (burned in its transaction, credited by Core in the
//! next block). Refused moves (too little on Core, too few tokens, too small an allowance,
//! the native asset, a mint or `assetToCore` from anyone else) change nothing. After every
//! block: the escrow's Core balance of the asset is the token's `totalSupply` plus the
//! deposits in flight, the holders' tokens add up to the supply, each user's tokens + Core
//! balance changed only by what they moved, the Core supply of the asset is unchanged, and
//! the incremental EVM state root equals the one rebuilt from scratch.

mod common;

use alloy_primitives::{Address, B256, U256};
use common::*;
use engine::Event;
use execution::evm::actions::{signatures, ActionKind};
use execution::evm::executor::Receipt;
use execution::evm::system::{self, abi::*, core_account, event_topic, selector};
use execution::evm::token;
use execution::{BlockError, BlockItem, Execution, ExecutionConfig, TokenSpec};
use transactions::Action;

const TRANSFER: &str = "Transfer(address,address,uint256)";
const APPROVAL: &str = "Approval(address,address,uint256)";

/// A chain whose asset 2 token is named; the owner (wallet 1), a receiver (2) and a
/// spender (3), funded with ether for gas; the owner holds 1,000 units of asset 2 on Core.
struct Tokens {
    chain: Execution,
    owner: Wallet,
    receiver: Wallet,
    spender: Wallet,
    token: Address,
}

fn named_config() -> ExecutionConfig {
    let mut config = config();
    config.evm.tokens = vec![TokenSpec {
        asset: BASE,
        name: "Base asset".into(),
        symbol: "BASE".into(),
        decimals: 2,
    }];
    config
}

impl Tokens {
    fn new() -> Tokens {
        let mut t = Tokens {
            chain: Execution::new(named_config(), &genesis()),
            owner: Wallet::new(1),
            receiver: Wallet::new(2),
            spender: Wallet::new(3),
            token: system::token_address(BASE),
        };
        let fund = Action::Deposit {
            account: core_account(t.owner.address),
            asset: BASE,
            amount: 1_000,
        };
        let gas_money = [t.receiver.address, t.spender.address]
            .map(|to| t.owner.item(Some(to), ether(1), Vec::new()));
        let mut items = vec![core_tx(FAUCET, T, vec![fund])];
        items.extend(gas_money);
        t.run(&items);
        t
    }

    /// Runs one block and checks the invariants after it.
    fn run(&mut self, items: &[BlockItem]) -> Vec<Receipt> {
        let (out, _) = step_events(&mut self.chain, items);
        assert!(out.evm.errors.is_empty(), "{:?}", out.evm.errors);
        assert_eq!(self.chain.evm_root(), self.chain.evm_root_from_scratch());
        self.check();
        out.evm.receipts
    }

    /// A block with one transaction of `who` to `to`; its receipt.
    fn send(&mut self, who: Who, to: Address, input: Vec<u8>) -> Receipt {
        let wallet = match who {
            Who::Owner => &mut self.owner,
            Who::Receiver => &mut self.receiver,
            Who::Spender => &mut self.spender,
        };
        let item = wallet.item(Some(to), U256::ZERO, input);
        let mut receipts = self.run(&[item]);
        receipts.pop().expect("the transaction's receipt")
    }

    fn token_call(&mut self, who: Who, signature: &str, words: &[[u8; 32]]) -> Receipt {
        self.send(who, self.token, calldata(signature, words))
    }

    fn tokens_of(&mut self, holder: Address) -> u64 {
        let words = [word_address(holder)];
        let out = view_with(&mut self.chain, self.token, "balanceOf(address)", &words);
        word_at(&out, 0) as u64
    }

    fn supply(&mut self) -> u64 {
        word_at(&view(&mut self.chain, self.token, "totalSupply()"), 0) as u64
    }

    fn core_of(&self, holder: Address) -> i64 {
        let balance = self.chain.engine().balance(core_account(holder), BASE);
        balance.map_or(0, |b| b.total)
    }

    /// Tokens + Core balance of `holder`.
    fn total_of(&mut self, holder: Address) -> i64 {
        self.tokens_of(holder) as i64 + self.core_of(holder)
    }

    /// The escrow holds the supply plus the deposits not yet run; the holders' tokens add
    /// up to the supply; the Core supply of the asset never changes after the faucet's.
    fn check(&mut self) {
        let escrow = self
            .chain
            .engine()
            .balance(system::TOKEN_ESCROW_ACCOUNT, BASE)
            .map_or(0, |b| b.total);
        let in_flight: i64 = self
            .chain
            .bridge()
            .pending_actions
            .iter()
            .map(|a| match a.kind {
                ActionKind::AssetDeposit { asset, units } if asset == BASE => units,
                _ => 0,
            })
            .sum();
        let supply = self.supply();
        assert_eq!(
            escrow,
            supply as i64 + in_flight,
            "escrow = supply + in flight"
        );
        let holders = [
            self.owner.address,
            self.receiver.address,
            self.spender.address,
        ];
        let held: u64 = holders.iter().map(|&h| self.tokens_of(h)).sum();
        assert_eq!(held, supply, "the holders' tokens are the supply");
        let core_supply = self.chain.engine().supply(BASE).unwrap();
        assert_eq!(
            core_supply,
            100_000 + 1_000,
            "bridging moves, never creates"
        );
    }
}

#[derive(Clone, Copy)]
enum Who {
    Owner,
    Receiver,
    Spender,
}

fn topic_of(address: Address) -> B256 {
    B256::from(word_address(address))
}

/// The receipt's logs of `address`: topics and data.
fn logs_of(receipt: &Receipt, address: Address) -> Vec<(Vec<B256>, Vec<u8>)> {
    receipt
        .logs
        .iter()
        .filter(|l| l.address == address)
        .map(|l| (l.topics.clone(), l.data.to_vec()))
        .collect()
}

fn transfer_log(from: Address, to: Address, value: u64) -> (Vec<B256>, Vec<u8>) {
    let topics = vec![event_topic(TRANSFER), topic_of(from), topic_of(to)];
    (topics, word_u64(value).to_vec())
}

#[test]
fn a_token_reads_as_its_core_asset_with_erc20_metadata() {
    let mut t = Tokens::new();
    let name = view(&mut t.chain, t.token, "name()");
    assert_eq!(word_at(&name, 1), 10, "length");
    assert_eq!(&name[64..74], b"Base asset");
    let symbol = view(&mut t.chain, t.token, "symbol()");
    assert_eq!(&symbol[64..68], b"BASE");
    assert_eq!(word_at(&view(&mut t.chain, t.token, "decimals()"), 0), 2);
    assert_eq!(
        word_at(&view(&mut t.chain, t.token, "asset()"), 0),
        BASE as i128
    );
    assert_eq!(t.supply(), 0);
    // The native asset has no token; an unnamed asset gets the default name.
    let native = system::token_address(NATIVE);
    assert!(t.chain.evm().peek_account(native).is_empty_code_hash());
    let tokens = Execution::genesis_tokens(&config(), &genesis());
    assert_eq!(tokens, vec![TokenSpec::unnamed(BASE)]);
    assert_eq!(tokens[0].symbol, "CORE2");
}

#[test]
fn an_eoa_moves_a_core_asset_to_the_evm_trades_it_as_an_erc20_and_back() {
    let mut t = Tokens::new();
    let (owner, receiver, spender) = (t.owner.address, t.receiver.address, t.spender.address);
    assert_eq!(t.core_of(owner), 1_000);

    // Core -> EVM: the action in block h, Core debits in h+1, the mint opens EVM block h+1.
    let withdraw = calldata(
        signatures::WITHDRAW_ASSET,
        &[word_u64(BASE as u64), word_u64(600)],
    );
    let sent = t.send(Who::Owner, system::CORE_WRITER, withdraw);
    assert!(sent.status);
    assert_eq!(
        (t.core_of(owner), t.tokens_of(owner)),
        (1_000, 0),
        "in flight"
    );
    let receipts = t.run(&[]);
    let mint = &receipts[0];
    assert_eq!(
        (mint.from, mint.to),
        (system::SYSTEM_ADDRESS, Some(t.token))
    );
    assert!(mint.status);
    // The costliest mint (supply and holder slots written from zero): 68,149 gas.
    assert!(mint.gas_used < system::MINT_GAS_LIMIT, "{}", mint.gas_used);
    assert_eq!(
        logs_of(mint, t.token),
        vec![transfer_log(Address::ZERO, owner, 600)]
    );
    assert_eq!((t.core_of(owner), t.tokens_of(owner)), (400, 600));

    // transfer: 150 to the receiver.
    let to_receiver = [word_address(receiver), word_u64(150)];
    let receipt = t.token_call(Who::Owner, "transfer(address,uint256)", &to_receiver);
    assert!(receipt.status);
    assert_eq!(word_at(&receipt.output, 0), 1, "returns true");
    assert_eq!(
        logs_of(&receipt, t.token),
        vec![transfer_log(owner, receiver, 150)]
    );

    // approve + transferFrom: the spender moves 120 of the owner's 200 allowance.
    let allow = [word_address(spender), word_u64(200)];
    let receipt = t.token_call(Who::Owner, "approve(address,uint256)", &allow);
    assert!(receipt.status);
    let approval = vec![event_topic(APPROVAL), topic_of(owner), topic_of(spender)];
    assert_eq!(
        logs_of(&receipt, t.token),
        vec![(approval, word_u64(200).to_vec())]
    );
    let from = |value| [word_address(owner), word_address(receiver), word_u64(value)];
    let receipt = t.token_call(
        Who::Spender,
        "transferFrom(address,address,uint256)",
        &from(120),
    );
    assert!(receipt.status);
    assert_eq!(
        logs_of(&receipt, t.token),
        vec![transfer_log(owner, receiver, 120)]
    );
    let pair = [word_address(owner), word_address(spender)];
    let left = view_with(&mut t.chain, t.token, "allowance(address,address)", &pair);
    assert_eq!(word_at(&left, 0), 80);
    // Over the allowance (80 left), over the balance: reverted, nothing moves.
    let over = t.token_call(
        Who::Spender,
        "transferFrom(address,address,uint256)",
        &from(81),
    );
    assert!(!over.status && over.logs.is_empty());
    let too_much = [word_address(owner), word_u64(271)];
    let over = t.token_call(Who::Receiver, "transfer(address,uint256)", &too_much);
    assert!(!over.status);
    assert_eq!(
        &over.output[..4],
        &selector("ERC20InsufficientBalance(address,uint256,uint256)")
    );
    assert_eq!((t.tokens_of(owner), t.tokens_of(receiver)), (330, 270));
    assert_eq!((t.total_of(owner), t.total_of(receiver)), (730, 270));

    // EVM -> Core: the receiver deposits 200: burned in its transaction (a Transfer to
    // zero and CoreWriter's action, sent by the token for the receiver), credited on Core
    // in the next block.
    let receipt = t.token_call(Who::Receiver, token::DEPOSIT_TO_CORE, &[word_u64(200)]);
    assert!(receipt.status);
    assert_eq!(
        logs_of(&receipt, t.token),
        vec![transfer_log(receiver, Address::ZERO, 200)]
    );
    let action = logs_of(&receipt, system::CORE_WRITER);
    assert_eq!(action.len(), 1);
    assert_eq!(
        action[0].0[1],
        topic_of(t.token),
        "CoreWriter's caller is the token"
    );
    let queued = &t.chain.bridge().pending_actions;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].sender, receiver, "the action is the receiver's");
    assert_eq!(
        (t.tokens_of(receiver), t.core_of(receiver), t.supply()),
        (70, 0, 400)
    );
    t.run(&[]);
    assert_eq!(
        (t.tokens_of(receiver), t.core_of(receiver), t.supply()),
        (70, 200, 400)
    );
    assert_eq!((t.total_of(owner), t.total_of(receiver)), (730, 270));
}

#[test]
fn refused_moves_change_nothing() {
    let mut t = Tokens::new();
    let owner = t.owner.address;
    let withdraw = |asset: u32, units: u64| {
        calldata(
            signatures::WITHDRAW_ASSET,
            &[word_u64(asset as u64), word_u64(units)],
        )
    };
    // More than Core holds: Core refuses, nothing is minted.
    assert!(
        t.send(Who::Owner, system::CORE_WRITER, withdraw(BASE, 1_001))
            .status
    );
    let (out, events) = step_events(&mut t.chain, &[]);
    t.check();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Rejected {
            reason: engine::RejectReason::InsufficientBalance,
            ..
        }
    )));
    assert!(out.evm.receipts.is_empty(), "no mint");
    assert_eq!((t.core_of(owner), t.tokens_of(owner)), (1_000, 0));
    // The native asset has no token: the bridge refuses it before Core.
    let native_before = t.chain.engine().balance(account(TRADER), NATIVE);
    assert!(
        t.send(Who::Owner, system::CORE_WRITER, withdraw(NATIVE, 1))
            .status
    );
    let (out, events) = step_events(&mut t.chain, &[]);
    t.check();
    assert!(events.is_empty() && out.evm.receipts.is_empty());
    assert_eq!(
        t.chain.engine().balance(account(TRADER), NATIVE),
        native_before
    );
    // Depositing tokens one does not hold reverts in the token: no burn, no action.
    let receipt = t.token_call(Who::Owner, token::DEPOSIT_TO_CORE, &[word_u64(1)]);
    assert!(!receipt.status && t.chain.bridge().pending_actions.is_empty());
    // Only the chain mints; only a token calls assetToCore.
    let mint = [word_address(owner), word_u64(5)];
    let receipt = t.token_call(Who::Owner, token::MINT, &mint);
    assert!(!receipt.status);
    assert_eq!(&receipt.output[..4], &selector("NotSystem(address)"));
    let forged = calldata(
        signatures::ASSET_TO_CORE,
        &[word_address(owner), word_u64(5)],
    );
    assert!(!t.send(Who::Owner, system::CORE_WRITER, forged).status);
    assert!(t.chain.bridge().pending_actions.is_empty());
    t.run(&[]);
    assert_eq!(
        (t.core_of(owner), t.tokens_of(owner), t.supply()),
        (1_000, 0, 0)
    );
}

#[test]
fn a_faucet_deposit_to_the_token_escrow_makes_the_block_invalid() {
    let chain = Execution::new(named_config(), &genesis());
    let deposit = Action::Deposit {
        account: system::TOKEN_ESCROW_ACCOUNT,
        asset: BASE,
        amount: 1,
    };
    let items = [core_tx(FAUCET, T, vec![deposit])];
    let result = chain.validate_block(T + 1, &items, &signatures_of(&items));
    assert_eq!(
        result.map(|_| ()),
        Err(BlockError::TokenEscrow { index: 0 })
    );
}
