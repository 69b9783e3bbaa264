//! Core + EVM in one execution: a contract deployed by an EVM item quotes on the execution's
//! own engine through CoreWriter (orders rest in Core block h + 1, callbacks reach the
//! contract in the next EVM block), a Core trader fills it and the contract hears of it;
//! two executions fed the same blocks agree on every root; malformed, wrongly signed or
//! unpayable EVM items make a block invalid with a typed error; the EVM root moves exactly
//! when EVM state does.

mod common;

use alloy_consensus::{SignableTransaction, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Signature, B256, U256};
use common::*;
use engine::Side;
use execution::evm::executor::{CallRequest, EvmConfig, TxError};
use execution::evm::system::{abi::*, core_account};
use execution::{BlockError, BlockItem, Execution, Origin};
use transactions::{Action, EvmItem, SignedTransaction, Transaction};

#[test]
fn a_contract_quotes_on_the_execution_engine_through_core_writer_and_hears_its_fills() {
    let (mut a, mut b) = (chain(), chain());
    let mut owner = Wallet::new(1);
    let genesis_escrow = a.evm().peek_account(execution::evm::system::CORE_WRITER);
    assert_eq!(
        genesis_escrow.balance,
        U256::from(100_000u64) * EvmConfig::default().wei_per_unit,
        "escrow = Core supply of the native asset"
    );

    // Block 1: deploy the MarketMaker by an EVM item.
    let out = step(
        &mut [&mut a, &mut b],
        &[owner.item(None, U256::ZERO, market_maker_deploy())],
    );
    let receipt = &out.evm.receipts[0];
    assert!(receipt.status, "{receipt:?}");
    let mm = receipt.contract_address.expect("created");
    let mm_account = core_account(mm);

    // Block 2: deposit 5,000 native units to Core through the contract; the faucet funds
    // its base asset on Core in the same block.
    let wei = U256::from(5_000u64) * EvmConfig::default().wei_per_unit;
    let faucet = core_tx(
        9,
        T,
        vec![Action::Deposit {
            account: mm_account,
            asset: BASE,
            amount: 50,
        }],
    );
    let out = step(
        &mut [&mut a, &mut b],
        &[
            faucet,
            owner.item(Some(mm), wei, calldata("deposit()", &[])),
        ],
    );
    assert_eq!(out.evm.actions.len(), 1, "one CoreWriter deposit queued");
    let native = |chain: &Execution| {
        chain
            .engine()
            .balance(mm_account, NATIVE)
            .map_or(0, |b| b.total)
    };
    assert_eq!(native(&a), 0, "not before h + 1");

    // Block 3: Core runs the deposit; its Done callback reaches the contract in EVM 3.
    let out = step(&mut [&mut a, &mut b], &[]);
    assert_eq!(native(&a), 5_000);
    assert_eq!(out.evm.receipts.len(), 1, "one callback");
    assert_eq!(word_at(&view(&mut a, mm, "callbacks()"), 0), 1);

    // Block 4: quote 90 / 110 x 5: two CoreWriter actions, nothing on the book yet.
    let quote = calldata(
        "quote(uint64,uint64,uint64)",
        &[word_u64(90), word_u64(110), word_u64(5)],
    );
    let out = step(
        &mut [&mut a, &mut b],
        &[owner.item(Some(mm), U256::ZERO, quote)],
    );
    assert!(out.evm.receipts[0].status);
    assert_eq!(out.evm.actions.len(), 2);
    assert!(a.engine().book_orders(MARKET, Side::Buy).is_empty());

    // Block 5: both orders rest on the execution's engine; Accepted callbacks in EVM 5.
    let mut sources = Vec::new();
    let signatures: Vec<_> = Vec::new();
    let block = a.validate_block(T + 5, &[], &signatures).unwrap();
    let consensus = execution::ConsensusState::genesis();
    let out = a
        .execute_block(block, &consensus, |origin, _| sources.push(origin))
        .unwrap();
    let block = b.validate_block(T + 5, &[], &signatures).unwrap();
    let again = b.execute_block(block, &consensus, |_, _| {}).unwrap();
    assert_eq!(again.root, out.root);
    assert!(sources.iter().all(|o| matches!(o, Origin::CoreWriter(_))) && !sources.is_empty());
    let bids = a.engine().book_orders(MARKET, Side::Buy);
    let asks = a.engine().book_orders(MARKET, Side::Sell);
    assert_eq!(
        (bids[0].account, bids[0].price, bids[0].remaining),
        (mm_account, 90, 5)
    );
    assert_eq!(
        (asks[0].account, asks[0].price, asks[0].remaining),
        (mm_account, 110, 5)
    );
    assert_eq!(out.evm.receipts.len(), 2, "two Accepted callbacks");
    assert_eq!(word_at(&view(&mut a, mm, "callbacks()"), 0), 3);
    let request = CallRequest {
        from: Some(owner.address),
        to: Some(mm),
        data: calldata("cancelAll()", &[]).into(),
        ..Default::default()
    };
    let gas = a.estimate_gas(&request).expect("cancelAll succeeds");
    assert!(gas > 21_000, "{gas}");

    // Block 6: a Core trader sells 2 into the bid; the fill callback runs in EVM 6.
    let sell = core_tx(1, T + 1, vec![place(1, Side::Sell, 90, 2)]);
    let out = step(&mut [&mut a, &mut b], &[sell]);
    assert!(out.evm.receipts.iter().all(|r| r.status));
    assert_eq!(word_at(&view(&mut a, mm, "fills()"), 0), 1);
    assert_eq!(word_at(&view(&mut a, mm, "filledLots()"), 0), 2);
    assert_eq!(a.engine().balance(mm_account, BASE).unwrap().total, 52);
    let escrow = a
        .evm()
        .peek_account(execution::evm::system::CORE_WRITER)
        .balance;
    let supply = a.engine().supply(NATIVE).unwrap();
    assert_eq!(
        escrow,
        U256::from(supply as u64) * EvmConfig::default().wei_per_unit
    );
}

#[test]
fn bad_evm_items_make_the_block_invalid_with_typed_errors() {
    let chain = chain();
    let mut owner = Wallet::new(1);
    let check = |items: &[BlockItem]| {
        let signatures = vec![Ok(()); items.iter().filter(|i| i.core().is_some()).count()];
        chain.validate_block(T, items, &signatures).map(|_| ())
    };
    // Garbage after the tag.
    let garbage = BlockItem::Evm(EvmItem::new(&[0x02, 0xc1, 0x80]));
    assert!(matches!(
        check(&[garbage]),
        Err(BlockError::Evm {
            index: 0,
            error: TxError::Malformed(_)
        })
    ));
    // A signature that recovers no key (r = 0).
    let tx = owner.unsigned(Some(Address::ZERO), U256::ZERO, Vec::new());
    let bad = Signature::new(U256::ZERO, U256::from(1u64), false);
    let raw = TxEnvelope::from(tx.into_signed(bad)).encoded_2718();
    assert!(matches!(
        check(&[
            core_tx(1, T, vec![Action::CancelAll { market: MARKET }]),
            BlockItem::Evm(EvmItem::new(&raw))
        ]),
        Err(BlockError::Evm {
            index: 1,
            error: TxError::Signature(_)
        })
    ));
    // Signed by another key than the funded sender: recovers an empty account.
    let stranger = Wallet::new(2);
    let raw = stranger.sign(owner.unsigned(Some(Address::ZERO), U256::ZERO, Vec::new()));
    assert!(matches!(
        check(&[BlockItem::Evm(EvmItem::new(&raw))]),
        Err(BlockError::Evm {
            index: 0,
            error: TxError::Funds { .. }
        })
    ));
    // Another chain id.
    let mut other = owner.unsigned(None, U256::ZERO, Vec::new());
    other.chain_id += 1;
    assert!(matches!(
        check(&[BlockItem::Evm(EvmItem::new(&owner.sign(other)))]),
        Err(BlockError::Evm {
            index: 0,
            error: TxError::ChainId { .. }
        })
    ));
    // A nonce gap, then a repeated nonce within the block.
    owner.nonce = 1;
    let gap = owner.item(Some(Address::ZERO), U256::ZERO, Vec::new());
    assert!(matches!(
        check(&[gap]),
        Err(BlockError::Evm {
            index: 0,
            error: TxError::Nonce {
                expected: 0,
                got: 1
            }
        })
    ));
    owner.nonce = 0;
    let first = owner.item(Some(Address::ZERO), U256::ZERO, Vec::new());
    assert_eq!(check(std::slice::from_ref(&first)), Ok(()));
    assert!(matches!(
        check(&[first.clone(), first]),
        Err(BlockError::Evm {
            index: 1,
            error: TxError::Nonce {
                expected: 1,
                got: 0
            }
        })
    ));
    // More value than the balance; more gas than the block's user half.
    owner.nonce = 0;
    let rich = owner.item(Some(Address::ZERO), ether(101), Vec::new());
    assert!(matches!(
        check(&[rich]),
        Err(BlockError::Evm {
            index: 0,
            error: TxError::Funds { .. }
        })
    ));
    owner.nonce = 0;
    let many: Vec<BlockItem> = (0..6)
        .map(|_| owner.item(Some(Address::ZERO), U256::ZERO, Vec::new()))
        .collect();
    assert!(matches!(
        check(&many),
        Err(BlockError::EvmGas {
            index: 5,
            total: 18_000_000,
            limit: 15_000_000
        })
    ));
    // A Core deposit or withdrawal of the native asset (only CoreWriter moves it).
    let withdraw = core_tx(
        1,
        T,
        vec![Action::Withdraw {
            asset: NATIVE,
            amount: 1,
        }],
    );
    assert_eq!(
        check(&[withdraw]),
        Err(BlockError::NativeAsset {
            index: 0,
            asset: NATIVE
        })
    );
}

#[test]
fn the_evm_root_moves_exactly_when_evm_state_does() {
    let mut chain = chain();
    let mut owner = Wallet::new(1);
    let before = chain.roots();
    // An empty block: only the chain part (height, time) moves.
    step(&mut [&mut chain], &[]);
    let empty = chain.roots();
    assert_eq!(
        (empty.core, empty.evm, empty.queue),
        (before.core, before.evm, before.queue)
    );
    assert_ne!(empty.chain, before.chain);
    // A Core-only block: Core moves, the EVM does not.
    step(
        &mut [&mut chain],
        &[core_tx(1, T, vec![place(1, Side::Buy, 10, 1)])],
    );
    let core_only = chain.roots();
    assert_ne!(core_only.core, empty.core);
    assert_eq!((core_only.evm, core_only.queue), (empty.evm, empty.queue));
    // An EVM transfer: the EVM root moves, and equals the from-scratch root (checked in
    // `step`).
    let to = Address::repeat_byte(0x77);
    step(
        &mut [&mut chain],
        &[owner.item(Some(to), U256::from(1u64), Vec::new())],
    );
    let transfer = chain.roots();
    assert_ne!(transfer.evm, core_only.evm);
    assert_eq!(transfer.core, core_only.core);
    assert_eq!(chain.evm().peek_account(to).balance, U256::from(1u64));
    // The whole root covers every part.
    let mut changed = transfer;
    changed.queue[0] ^= 1;
    assert_ne!(changed.combined(), transfer.combined());
    assert_eq!(chain.root(), transfer.combined());
}

#[test]
fn core_transactions_keep_their_encoding_and_hash_as_items() {
    let tx: SignedTransaction = Transaction {
        chain_id: CHAIN,
        signer: key(1).verifying_key().to_bytes(),
        nonce: T,
        actions: vec![Action::CancelAll { market: MARKET }],
    }
    .sign(&key(1));
    let item = BlockItem::decode(tx.bytes()).unwrap();
    assert_eq!(item.hash(), tx.hash());
    assert_eq!(item.core(), Some(&tx));
}

#[test]
fn a_proposal_of_pooled_evm_transactions_is_a_valid_block() {
    let mut chain = chain();
    let mut owner = Wallet::new(1);
    let mut pool = mempool::Mempool::new(mempool::MempoolConfig::default());
    let to = Address::repeat_byte(0x55);
    let mut hashes = Vec::new();
    for _ in 0..3 {
        let BlockItem::Evm(item) = owner.item(Some(to), U256::from(7u64), Vec::new()) else {
            unreachable!()
        };
        hashes.push(pool.admit_evm(item.envelope(), &chain).expect("admitted"));
    }
    // A gap and a replay are refused with their types.
    owner.nonce = 5;
    let BlockItem::Evm(gap) = owner.item(Some(to), U256::ZERO, Vec::new()) else {
        unreachable!()
    };
    assert_eq!(
        pool.admit_evm(gap.envelope(), &chain).unwrap_err().code(),
        "nonce_too_high"
    );
    let share = mempool::EvmView::evm_gas_share(&chain);
    let items: Vec<BlockItem> = pool
        .evm_proposal(100, 1 << 20, share)
        .iter()
        .map(|item| BlockItem::Evm((**item).clone()))
        .collect();
    assert_eq!(items.len(), 3);
    // The pool recovered every sender at admission: validation looks them up (a wrong
    // answer would show, since a lookup is trusted) and gets the same block.
    let looked_up = std::cell::Cell::new(0);
    let lookup = |hash: &B256| {
        looked_up.set(looked_up.get() + 1);
        pool.evm_sender(hash)
    };
    let with_cache = chain
        .validate_block_with(T + 1, &items, &[], &lookup)
        .unwrap();
    let without = chain.validate_block(T + 1, &items, &[]).unwrap();
    assert_eq!(looked_up.get(), 3);
    let senders = |block: &execution::ValidBlock<'_>| {
        block
            .evm_txs()
            .iter()
            .map(|tx| (tx.hash, tx.sender))
            .collect::<Vec<_>>()
    };
    assert_eq!(senders(&with_cache), senders(&without));
    assert!(senders(&without).iter().all(|&(_, s)| s == owner.address));
    let out = step(&mut [&mut chain], &items);
    assert_eq!(out.evm.receipts.len(), 3);
    assert!(out.evm.dropped.is_empty() && out.evm.deferred.is_empty());
    assert_eq!(chain.evm().peek_account(to).balance, U256::from(21u64));
    let included: Vec<_> = items.iter().map(BlockItem::hash).collect();
    assert_eq!(included, hashes);
    assert!(pool.on_evm_block(&included, &chain).is_empty());
    assert_eq!(pool.evm_len(), 0);
}

/// A small deterministic generator (xorshift64*), so the random test needs no seed crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One random block: Core orders of key 1 around the contract's quotes, EVM transfers, and
/// contract calls that quote or cancel through CoreWriter (storage writes, actions,
/// callbacks).
fn random_block(
    rng: &mut Rng,
    owner: &mut Wallet,
    mm: Address,
    core_nonce: &mut u64,
) -> Vec<BlockItem> {
    let mut items = Vec::new();
    for _ in 0..rng.below(4) {
        *core_nonce += 1;
        let side = if rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let price = 85 + rng.below(30) as i64;
        let oid = *core_nonce;
        items.push(core_tx(
            1,
            *core_nonce,
            vec![place(oid, side, price, 1 + rng.below(3) as i64)],
        ));
    }
    for _ in 0..rng.below(3) {
        let input = match rng.below(3) {
            0 => calldata(
                "quote(uint64,uint64,uint64)",
                &[
                    word_u64(90 + rng.below(5)),
                    word_u64(105 + rng.below(5)),
                    word_u64(1 + rng.below(4)),
                ],
            ),
            1 => calldata("cancelAll()", &[]),
            _ => Vec::new(),
        };
        let to = if input.is_empty() {
            Address::repeat_byte(rng.below(4) as u8 + 1)
        } else {
            mm
        };
        items.push(owner.item(Some(to), U256::from(rng.below(2)), input));
    }
    // Shuffle Core and EVM items together (each side keeps its own nonce order).
    let mut order: Vec<(u64, usize)> = (0..items.len()).map(|i| (rng.next(), i)).collect();
    order.sort_unstable();
    let (core, evm): (Vec<_>, Vec<_>) = items.into_iter().partition(|i| i.core().is_some());
    let (mut core, mut evm) = (core.into_iter(), evm.into_iter());
    order
        .iter()
        .map(|&(r, _)| {
            if r % 2 == 0 {
                core.next().or_else(|| evm.next())
            } else {
                evm.next().or_else(|| core.next())
            }
            .expect("as many as items")
        })
        .collect()
}

#[test]
fn random_mixed_blocks_keep_roots_equal_across_executions_and_to_a_recomputation_and_a_snapshot() {
    for seed in [1u64, 7, 42] {
        let (mut a, mut b) = (chain(), chain());
        let mut owner = Wallet::new(1);
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let out = step(
            &mut [&mut a, &mut b],
            &[owner.item(None, U256::ZERO, market_maker_deploy())],
        );
        let mm = out.evm.receipts[0].contract_address.expect("created");
        let wei = U256::from(50_000u64) * EvmConfig::default().wei_per_unit;
        let faucet = core_tx(
            9,
            T,
            vec![Action::Deposit {
                account: core_account(mm),
                asset: BASE,
                amount: 1_000,
            }],
        );
        step(
            &mut [&mut a, &mut b],
            &[
                faucet,
                owner.item(Some(mm), wei, calldata("deposit()", &[])),
            ],
        );
        let mut core_nonce = T;
        let mut callbacks = 0;
        let mut restored: Option<Execution> = None;
        for round in 0..40 {
            if round == 20 {
                // A snapshot mid-way (EVM accounts, contract storage, queued actions and
                // callbacks, registry) restores to the same roots and runs on with the others.
                let mut c = Execution::restore(config(), &a.snapshot()).expect("restores");
                assert_eq!(c.roots(), a.roots());
                let hashes = a.evm().recent_block_hashes();
                assert_eq!(hashes.len(), 23, "genesis and 22 blocks");
                assert_eq!(c.evm().recent_block_hashes(), hashes, "BLOCKHASH's window");
                // A snapshot with another hash in the window restores to another root.
                let mut forged = a.snapshot();
                let at = forged
                    .windows(32)
                    .position(|w| w == hashes[1].as_slice())
                    .expect("the window is in the snapshot");
                forged[at] ^= 1;
                let mut f = Execution::restore(config(), &forged).expect("restores");
                assert_ne!(f.root(), a.root(), "the root covers the block hashes");
                restored = Some(c);
            }
            let items = random_block(&mut rng, &mut owner, mm, &mut core_nonce);
            let out = match restored.as_mut() {
                Some(c) => step(&mut [&mut a, &mut b, c], &items),
                None => step(&mut [&mut a, &mut b], &items),
            };
            assert!(
                out.evm.dropped.is_empty() && out.evm.errors.is_empty(),
                "{out:?}"
            );
            callbacks += out
                .evm
                .receipts
                .iter()
                .filter(|r| r.from == execution::evm::system::SYSTEM_ADDRESS)
                .count();
        }
        assert!(callbacks > 0, "seed {seed}: the contract heard from Core");
        let escrow = a
            .evm()
            .peek_account(execution::evm::system::CORE_WRITER)
            .balance;
        let supply = a.engine().supply(NATIVE).unwrap();
        assert_eq!(
            escrow,
            U256::from(supply as u64) * EvmConfig::default().wei_per_unit
        );
    }
}
