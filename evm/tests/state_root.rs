//! The header's `stateRoot` on the executor (`evm::commitment`): at genesis and after blocks
//! that deploy a contract, write its storage and credit accounts, it equals alloy-trie's
//! from-scratch state root of the executor's whole state, and the proofs of an account and
//! a slot verify against the header's root with the values the state holds.

mod common;

use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_trie::proof::verify_proof;
use alloy_trie::root::{state_root_unhashed, storage_root_unhashed};
use alloy_trie::{Nibbles, TrieAccount};
use common::{address_of, deploy, signed};
use engine::{Engine, EngineConfig};
use evm::actions::Credit;
use evm::core_view::CoreSnapshot;
use evm::executor::{BlockInput, EvmConfig, Executor, Genesis};
use evm::token::TokenSpec;
use k256::ecdsa::SigningKey;
use revm::database::AccountState;

/// Runtime storing its calldata word in slot 0 (`PUSH1 0 CALLDATALOAD PUSH1 0 SSTORE STOP`).
const STORE_RUNTIME: [u8; 6] = [0x60, 0x00, 0x35, 0x60, 0x00, 0x55];

/// alloy-trie's state root of the executor's whole state, from scratch.
fn independent_root(executor: &Executor) -> B256 {
    let accounts = executor.db().cache.accounts.iter().filter(|(_, a)| {
        !matches!(a.account_state, AccountState::NotExisting) && !a.info.is_empty()
    });
    state_root_unhashed(accounts.map(|(address, a)| {
        let slots = a.storage.iter().filter(|(_, v)| !v.is_zero());
        let slots = slots.map(|(k, v)| (B256::from(k.to_be_bytes::<32>()), *v));
        let account = TrieAccount {
            nonce: a.info.nonce,
            balance: a.info.balance,
            storage_root: storage_root_unhashed(slots),
            code_hash: a.info.code_hash,
        };
        (*address, account)
    }))
}

/// The proof of `address` and its slot 0 verifies against `root` with the state's values.
fn check_proof(executor: &mut Executor, root: B256, address: Address) {
    let proof = executor.commitment().proof(address, &[B256::ZERO]);
    let info = executor.account(address);
    assert_eq!((proof.nonce, proof.balance), (info.nonce, info.balance));
    let leaf = (!info.is_empty()).then(|| {
        alloy_rlp::encode(TrieAccount {
            nonce: info.nonce,
            balance: info.balance,
            storage_root: proof.storage_hash,
            code_hash: info.code_hash,
        })
    });
    let key = Nibbles::unpack(keccak256(address));
    verify_proof(root, key, leaf, &proof.account_proof).expect("account proof");
    let slot = &proof.storage_proof[0];
    assert_eq!(slot.value, executor.storage(address, U256::ZERO));
    let value = (!slot.value.is_zero()).then(|| alloy_rlp::encode(slot.value));
    let key = Nibbles::unpack(keccak256(B256::ZERO));
    verify_proof(proof.storage_hash, key, value, &slot.proof).expect("slot proof");
}

/// The owner's key, one ether, and a genesis that gives the owner (and the escrow) that
/// ether, with `tokens`.
fn owned_genesis(tokens: Vec<TokenSpec>) -> (SigningKey, U256, Genesis) {
    let owner = SigningKey::from_slice(&[7; 32]).expect("a key");
    let ether = U256::from(10u64).pow(U256::from(18u64));
    let genesis = Genesis {
        alloc: vec![(address_of(&owner), ether)],
        escrow_wei: ether,
        timestamp: 1,
        tokens,
    };
    (owner, ether, genesis)
}

#[test]
fn state_root_is_alloys_from_scratch_root_and_proofs_verify() {
    let engine: Engine = Engine::new(EngineConfig::default());
    // A Core asset token: code and name, symbol (longer than a slot) and decimals.
    let (owner, ether, genesis) = owned_genesis(vec![TokenSpec {
        asset: 2,
        name: "Base".into(),
        symbol: "A SYMBOL LONGER THAN THIRTY-TWO BYTES".into(),
        decimals: 6,
    }]);
    let (mut executor, out) = Executor::genesis(EvmConfig::default(), &genesis);
    assert_eq!(out.header.state_root, independent_root(&executor));
    let store = address_of(&owner).create(0);
    let blocks = [
        (
            vec![signed(&owner, 0, None, 0, deploy(&STORE_RUNTIME))],
            vec![],
        ),
        (
            vec![signed(
                &owner,
                1,
                Some(store),
                0,
                B256::with_last_byte(0x11).to_vec(),
            )],
            vec![],
        ),
        (
            vec![signed(&owner, 2, Some(store), 0, B256::ZERO.to_vec())],
            vec![Credit {
                to: Address::repeat_byte(9),
                wei: ether / U256::from(4u64),
                action_id: 1,
            }],
        ),
    ];
    for (i, (txs, credits)) in blocks.into_iter().enumerate() {
        let height = i as u64 + 1;
        let input = BlockInput {
            height,
            timestamp: 1 + height,
            credits,
            txs,
            ..Default::default()
        };
        let out = executor.execute_block(&CoreSnapshot::new(&engine, height), input);
        assert!(out.receipts.iter().all(|r| r.status), "{:?}", out.receipts);
        let root = out.header.state_root;
        assert_eq!(root, independent_root(&executor), "block {height}");
        assert_eq!(root, evm::commitment::root_from_scratch(executor.db()));
        for address in [
            address_of(&owner),
            store,
            Address::repeat_byte(9),
            Address::ZERO,
        ] {
            check_proof(&mut executor, root, address);
        }
    }
    assert!(
        executor.storage(store, U256::ZERO).is_zero(),
        "cleared in block 3"
    );
}

/// Runtime reading the balance of the address in its first calldata word and the slot in
/// its second: `PUSH1 0 CALLDATALOAD BALANCE POP PUSH1 32 CALLDATALOAD SLOAD POP STOP`.
const READ_RUNTIME: [u8; 11] = [
    0x60, 0x00, 0x35, 0x31, 0x50, 0x60, 0x20, 0x35, 0x54, 0x50, 0x00,
];

/// What transactions only read and is not state (addresses that do not exist, empty
/// slots) does not stay in the executor's state after their block, and the root is still
/// the from-scratch root of the state that is left.
#[test]
fn a_block_leaves_no_entries_for_what_it_read_that_does_not_exist() {
    let engine: Engine = Engine::new(EngineConfig::default());
    let (owner, _, genesis) = owned_genesis(Vec::new());
    let (mut executor, _) = Executor::genesis(EvmConfig::default(), &genesis);
    let reader = address_of(&owner).create(0);
    let run = |executor: &mut Executor, height: u64, txs| {
        let input = BlockInput {
            height,
            timestamp: 1 + height,
            txs,
            ..Default::default()
        };
        let out = executor.execute_block(&CoreSnapshot::new(&engine, height), input);
        assert!(out.dropped.is_empty(), "{:?}", out.dropped);
        assert_eq!(out.header.state_root, independent_root(executor));
    };
    run(
        &mut executor,
        1,
        vec![signed(&owner, 0, None, 0, deploy(&READ_RUNTIME))],
    );
    let accounts = executor.db().cache.accounts.len();
    let reads: Vec<_> = (0..40u8)
        .map(|i| {
            let mut input =
                B256::left_padding_from(Address::repeat_byte(0x40 + i).as_slice()).to_vec();
            input.extend_from_slice(B256::with_last_byte(i + 1).as_slice());
            signed(&owner, 1 + u64::from(i), Some(reader), 0, input)
        })
        .collect();
    run(&mut executor, 2, reads);
    let cache = &executor.db().cache;
    assert_eq!(
        cache.accounts.len(),
        accounts,
        "no entry for the 40 fresh addresses"
    );
    let slots = cache.accounts.get(&reader).map_or(0, |a| a.storage.len());
    assert_eq!(slots, 0, "no entry for the 40 empty slots");
}
