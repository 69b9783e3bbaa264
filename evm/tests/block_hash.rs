//! `BLOCKHASH` sees the chain's real block hashes (the `hash` `eth_getBlockByNumber`
//! serves) for the 256 blocks before the current one, and zero outside them, in blocks and
//! in calls; the executor keeps exactly that window.

mod common;

use alloy_primitives::{Address, B256, U256};
use common::{address_of, deploy, signed};
use engine::{Engine, EngineConfig};
use evm::core_view::CoreSnapshot;
use evm::executor::{
    BlockInput, CallOutcome, CallRequest, EvmConfig, Executor, Genesis, BLOCK_HASH_WINDOW,
};
use k256::ecdsa::SigningKey;

/// `n = calldata[0..32]; h = BLOCKHASH(n); SSTORE(n, h); return h`.
const BLOCK_HASH_RUNTIME: [u8; 17] = [
    0x60, 0x00, 0x35, 0x40, 0x80, 0x60, 0x00, 0x35, 0x55, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00,
    0xf3,
];

/// What `BLOCKHASH(number)` gives in a call on top of the head.
fn called(executor: &mut Executor, engine: &Engine, contract: Address, number: u64) -> B256 {
    let request = CallRequest {
        to: Some(contract),
        data: U256::from(number).to_be_bytes::<32>().to_vec().into(),
        ..Default::default()
    };
    let view = CoreSnapshot::new(engine, executor.head().number);
    match executor.call(&view, &request) {
        CallOutcome::Success { output, .. } => B256::from_slice(&output),
        other => panic!("the call failed: {other:?}"),
    }
}

#[test]
fn blockhash_gives_the_served_hashes_of_the_last_256_blocks_and_zero_before() {
    let engine = Engine::new(EngineConfig::default());
    let owner = SigningKey::from_slice(&[7; 32]).expect("a key");
    let ether = U256::from(10u64).pow(U256::from(18u64));
    let genesis = Genesis {
        alloc: vec![(address_of(&owner), ether)],
        escrow_wei: ether,
        timestamp: 1,
        tokens: Vec::new(),
    };
    let (mut executor, genesis_block) = Executor::genesis(EvmConfig::default(), &genesis);
    let mut hashes = vec![genesis_block.header.hash];
    let contract = address_of(&owner).create(0);
    let last = BLOCK_HASH_WINDOW + 40;
    for height in 1..=last {
        let txs = match height {
            1 => vec![signed(&owner, 0, None, 0, deploy(&BLOCK_HASH_RUNTIME))],
            // In block `last`: the parent's hash and one just out of the window.
            h if h == last => vec![
                signed(&owner, 1, Some(contract), 0, word(h - 1)),
                signed(
                    &owner,
                    2,
                    Some(contract),
                    0,
                    word(h - 1 - BLOCK_HASH_WINDOW),
                ),
            ],
            _ => Vec::new(),
        };
        let input = BlockInput {
            height,
            timestamp: 1 + height,
            txs,
            ..Default::default()
        };
        let out = executor.execute_block(&CoreSnapshot::new(&engine, height), input);
        assert!(out.receipts.iter().all(|r| r.status), "{:?}", out.receipts);
        hashes.push(out.header.hash);
    }
    // In the block: the stored values.
    let parent = U256::from(last - 1);
    let stored = B256::from(executor.storage(contract, parent).to_be_bytes::<32>());
    assert_eq!(stored, hashes[(last - 1) as usize]);
    let outside = U256::from(last - 1 - BLOCK_HASH_WINDOW);
    assert_eq!(executor.storage(contract, outside), U256::ZERO);
    // In calls on top of the head (block `last + 1`): the window is blocks last-255..=last.
    for number in [last, last - 1, last + 1 - BLOCK_HASH_WINDOW] {
        let got = called(&mut executor, &engine, contract, number);
        assert_eq!(got, hashes[number as usize], "block {number}");
    }
    for number in [last - BLOCK_HASH_WINDOW, 0, last + 1] {
        let got = called(&mut executor, &engine, contract, number);
        assert_eq!(got, B256::ZERO, "block {number} is outside the window");
    }
    // The executor keeps exactly the window, and calls add nothing to it.
    assert_eq!(
        executor.db().cache.block_hashes.len() as u64,
        BLOCK_HASH_WINDOW
    );
    let recent = executor.recent_block_hashes();
    assert_eq!(recent, hashes[(last + 1 - BLOCK_HASH_WINDOW) as usize..]);
    // The window's digest, kept block by block (40 hashes in and out past the window),
    // equals the one computed from the window alone (as a restore does).
    let rebuilt = Executor::from_parts(
        EvmConfig::default(),
        executor.db().clone(),
        executor.head().clone(),
    );
    assert_eq!(rebuilt.block_hash_digest(), executor.block_hash_digest());
    assert_ne!(executor.block_hash_digest(), [0; 32]);
}

/// A 32-byte big-endian block number as calldata.
fn word(number: u64) -> Vec<u8> {
    U256::from(number).to_be_bytes::<32>().to_vec()
}
