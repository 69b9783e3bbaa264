//! The state at past blocks (`evm::history`): against a simple model (a full copy of the
//! state after every block), every account and slot read through [`PastState`] in the
//! window equals the copy, after accounts are changed, created with storage and
//! self-destructed; beyond the window the read is refused. And the cost of keeping the
//! window, printed (`cargo test -p evm --test state_history -- --nocapture`): time to note
//! a block's undo, its entries and bytes, and a read at the oldest block, as the state grows.

use std::collections::HashMap;
use std::time::Instant;

use alloy_primitives::{Address, U256};
use evm::history::{OutsideWindow, StateHistory, StateUndo};
use revm::database::{AccountState, CacheDB, EmptyDB};
use revm::state::{Account, AccountInfo, EvmState, EvmStorageSlot, TransactionId};
use revm::DatabaseCommit;

/// A seeded xorshift: reproducible changes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The state as the model sees it: accounts (`None`: absent) and slots.
type Copy = HashMap<Address, (Option<AccountInfo>, HashMap<U256, U256>)>;

fn copy(db: &CacheDB<EmptyDB>) -> Copy {
    db.cache
        .accounts
        .iter()
        .map(|(a, account)| {
            let info = (!matches!(account.account_state, AccountState::NotExisting)).then(|| {
                let mut info = account.info.clone();
                info.code = None;
                info
            });
            let storage = account.storage.iter().map(|(k, v)| (*k, *v)).collect();
            (*a, (info, storage))
        })
        .collect()
}

fn address(n: u64) -> Address {
    Address::with_last_byte(0).create(n)
}

/// One transaction's changes: a few accounts' balances and nonces, some slots; now and then
/// an account created afresh with new storage, or self-destructed.
fn changes(db: &CacheDB<EmptyDB>, rng: &mut Rng, accounts: u64, touched: usize) -> EvmState {
    let mut state = EvmState::default();
    for _ in 0..touched {
        let a = address(rng.below(accounts));
        let old = db.cache.accounts.get(&a);
        let mut info = old.map(|o| o.info.clone()).unwrap_or_default();
        info.balance += U256::from(rng.below(1_000) + 1);
        info.nonce += 1;
        let mut account = Account::from(info);
        account.mark_touch();
        match rng.below(20) {
            0 => account.mark_selfdestruct(),
            1 => account.mark_created(),
            _ => {}
        }
        for _ in 0..rng.below(4) {
            let slot = U256::from(rng.below(8));
            let original = old
                .and_then(|o| o.storage.get(&slot).copied())
                .unwrap_or_default();
            let value = U256::from(rng.below(5));
            let slot_value = EvmStorageSlot::new_changed(original, value, TransactionId::ZERO);
            account.storage.insert(slot, slot_value);
        }
        state.insert(a, account);
    }
    state
}

/// Applies one transaction's changes, noting what they replace first.
fn apply(db: &mut CacheDB<EmptyDB>, undo: &mut StateUndo, state: EvmState) {
    undo.note(db, &state);
    db.commit(state);
}

#[test]
fn past_state_equals_a_copy_of_every_block_in_the_window() {
    let (accounts, window, blocks) = (40, 8, 30);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut db = CacheDB::new(EmptyDB::new());
    let mut history = StateHistory::new(window);
    let mut copies = vec![copy(&db)];
    for block in 1..=blocks {
        let mut undo = StateUndo::default();
        for _ in 0..3 {
            let state = changes(&db, &mut rng, accounts, 4);
            apply(&mut db, &mut undo, state);
        }
        history.push(block, undo);
        copies.push(copy(&db));
    }
    let head = blocks;
    assert_eq!(history.oldest(head), head - window as u64);
    for k in history.oldest(head)..=head {
        let past = history.at(&db, head, k).expect("in the window");
        let model = &copies[k as usize];
        for n in 0..accounts {
            let a = address(n);
            let (info, storage) = model.get(&a).cloned().unwrap_or_default();
            assert_eq!(past.account(a), info, "account {n} at block {k}");
            for slot in 0..8u64 {
                let slot = U256::from(slot);
                let want = storage.get(&slot).copied().unwrap_or_default();
                let want = if info.is_some() { want } else { U256::ZERO };
                assert_eq!(past.storage(a, slot), want, "slot {slot} of {n} at {k}");
            }
        }
    }
    let oldest = head - window as u64;
    let refused = history.at(&db, head, oldest - 1).err();
    assert_eq!(
        refused,
        Some(OutsideWindow {
            block: oldest - 1,
            oldest,
            head
        })
    );
}

/// The cost of the window, printed: per block of `touched` account changes (each with up
/// to 3 slots), the time to note its undo beside the time to commit it, the undo's entries
/// and approximate bytes, and the time of one account and one slot read at the oldest
/// block of a 128-block window, for states of 1,000, 10,000 and 100,000 accounts.
#[test]
fn the_cost_of_the_window_per_block_as_state_grows() {
    let (window, touched) = (128usize, 200usize);
    for accounts in [1_000u64, 10_000, 100_000] {
        let mut rng = Rng(accounts);
        let mut db = CacheDB::new(EmptyDB::new());
        for n in 0..accounts {
            let info = AccountInfo {
                balance: U256::from(n + 1),
                ..Default::default()
            };
            db.insert_account_info(address(n), info);
            for slot in 0..4u64 {
                let _ = db.insert_account_storage(address(n), U256::from(slot), U256::from(n));
            }
        }
        let mut history = StateHistory::new(window);
        let (mut note_ns, mut commit_ns, mut bytes) = (0u128, 0u128, 0usize);
        let blocks = window as u64 + 32;
        for block in 1..=blocks {
            let state = changes(&db, &mut rng, accounts, touched);
            let mut undo = StateUndo::default();
            let start = Instant::now();
            undo.note(&db, &state);
            note_ns += start.elapsed().as_nanos();
            let start = Instant::now();
            db.commit(state);
            commit_ns += start.elapsed().as_nanos();
            bytes += undo_bytes(&undo);
            history.push(block, undo);
        }
        let oldest = history.oldest(blocks);
        let past = history.at(&db, blocks, oldest).expect("in the window");
        let reads = 10_000u64;
        let start = Instant::now();
        for n in 0..reads {
            let a = address(n % accounts);
            std::hint::black_box(past.account(a));
            std::hint::black_box(past.storage(a, U256::from(n % 4)));
        }
        let read_ns = start.elapsed().as_nanos() / reads as u128;
        let entries = history.entries() / window;
        println!(
            "state_history: {accounts} accounts, {touched} changed per block: note {} us/block \
             (commit {} us/block), {entries} entries ~{} KiB/block, window of {window} ~{} MiB; \
             account + slot read at block head-{window}: {read_ns} ns",
            note_ns / blocks as u128 / 1_000,
            commit_ns / blocks as u128 / 1_000,
            bytes / blocks as usize / 1024,
            bytes / blocks as usize * window / (1 << 20),
        );
        assert!(entries >= touched / 2, "each block's changes are kept");
    }
}

/// Approximate heap bytes of an undo: each map's allocated buckets times its entry size.
fn undo_bytes(undo: &StateUndo) -> usize {
    use std::mem::size_of;
    let accounts = undo.accounts.capacity() * (size_of::<(Address, Option<AccountInfo>)>() + 1);
    let slots = undo.storage.capacity() * (size_of::<((Address, U256), U256)>() + 1);
    let wiped: usize = undo
        .wiped
        .values()
        .map(|s| s.capacity() * (size_of::<(U256, U256)>() + 1))
        .sum();
    accounts + slots + wiped
}

/// `eth_getProof` at a past block (`StateCommitment::proof_at`): over random blocks that
/// change accounts and slots, create accounts with storage and self-destruct them, the
/// head's tries with the later blocks' undos laid over them give, at every block of the
/// window, alloy-trie's from-scratch root of that block's state (recorded when it was the
/// head), and every account's and slot's proof verifies against it (alloy-trie's
/// `verify_proof`) with the model's values, or as absent.
#[test]
fn proofs_at_past_blocks_verify_against_each_blocks_root() {
    use alloy_primitives::{keccak256, B256};
    use alloy_trie::proof::verify_proof;
    use alloy_trie::{Nibbles, TrieAccount};
    use evm::commitment::{root_from_scratch, StateCommitment};
    let (accounts, window, blocks) = (300, 6, 20);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut db = CacheDB::new(EmptyDB::new());
    let mut history = StateHistory::new(window);
    let mut copies = vec![copy(&db)];
    let mut roots = vec![root_from_scratch(&db)];
    for block in 1..=blocks {
        let mut undo = StateUndo::default();
        for _ in 0..4 {
            let state = changes(&db, &mut rng, accounts, 6);
            apply(&mut db, &mut undo, state);
        }
        history.push(block, undo);
        copies.push(copy(&db));
        roots.push(root_from_scratch(&db));
    }
    let head = blocks;
    let commitment = StateCommitment::from_state(&db);
    assert_eq!(commitment.root(), roots[head as usize]);
    let slots: Vec<B256> = (0..8u64).map(|s| B256::from(U256::from(s))).collect();
    for k in history.oldest(head)..=head {
        let past = history.at(&db, head, k).expect("in the window");
        let model = &copies[k as usize];
        for n in (0..accounts).step_by(7) {
            let a = address(n);
            let (root, proof) = commitment.proof_at(&past, a, &slots);
            assert_eq!(root, roots[k as usize], "block {k}");
            let (info, storage) = model.get(&a).cloned().unwrap_or_default();
            let info = info.filter(|i| !i.is_empty());
            assert_eq!(proof.nonce, info.as_ref().map_or(0, |i| i.nonce));
            let leaf = info.as_ref().map(|i| {
                alloy_rlp::encode(TrieAccount {
                    nonce: i.nonce,
                    balance: i.balance,
                    storage_root: proof.storage_hash,
                    code_hash: i.code_hash,
                })
            });
            let key = Nibbles::unpack(keccak256(a));
            verify_proof(root, key, leaf, &proof.account_proof)
                .unwrap_or_else(|e| panic!("account {n} at block {k}: {e}"));
            if info.is_none() {
                continue;
            }
            for (slot, slot_proof) in slots.iter().zip(&proof.storage_proof) {
                let want = storage
                    .get(&U256::from_be_bytes(slot.0))
                    .copied()
                    .unwrap_or_default();
                assert_eq!(slot_proof.value, want, "slot {slot} of {n} at {k}");
                let value = (!want.is_zero()).then(|| alloy_rlp::encode(want));
                let key = Nibbles::unpack(keccak256(slot));
                verify_proof(proof.storage_hash, key, value, &slot_proof.proof)
                    .unwrap_or_else(|e| panic!("slot {slot} of {n} at {k}: {e}"));
            }
        }
    }
}
