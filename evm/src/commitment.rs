//! The EVM state root: Ethereum's, the Merkle-Patricia trie of accounts
//! (`keccak256(address)` to `rlp([nonce, balance, storageRoot, codeHash])`), each account's
//! `storageRoot` the trie of its non-zero slots (`keccak256(slot)` to `rlp(value)`)
//! (docs/evm.md, "Block headers"). An empty account (EIP-161: nonce 0, balance 0, no code)
//! is absent; the empty state has the empty-trie root.
//!
//! Kept incrementally ([`crate::trie::Trie`]): [`StateCommitment::apply`] updates it from a
//! block's [`StateDiff`], recomputing the storage root of each account whose storage changed
//! and the account trie over the accounts the block changed only. A wiped account (created
//! or self-destructed in the block) drops its whole storage trie.

use crate::executor::StateDiff;
use crate::history::{PastChanges, PastState};
use crate::trie::{self, Overlay, Trie};
use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use alloy_rlp::Decodable;
use alloy_trie::{TrieAccount, EMPTY_ROOT_HASH, KECCAK_EMPTY};
use revm::database::{AccountState, CacheDB, EmptyDB};
use revm::state::AccountInfo;
use std::collections::{BTreeMap, BTreeSet};

/// The incremental EVM state root.
#[derive(Clone, Debug, Default)]
pub struct StateCommitment {
    accounts: Trie,
    storage: BTreeMap<Address, Trie>,
}

/// An account with its proof and the proofs of some of its slots (EIP-1186, `eth_getProof`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountProof {
    /// The account.
    pub address: Address,
    /// Its nonce (0 if absent).
    pub nonce: u64,
    /// Its balance (0 if absent).
    pub balance: U256,
    /// Its code hash (keccak256 of no code if absent).
    pub code_hash: B256,
    /// Its storage root (the empty-trie root if absent).
    pub storage_hash: B256,
    /// The account trie's nodes from the root to it (or to where its absence shows).
    pub account_proof: Vec<Bytes>,
    /// The slots asked for, in the order asked.
    pub storage_proof: Vec<SlotProof>,
}

/// A storage slot with its proof against the account's storage root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotProof {
    /// The slot (unhashed).
    pub key: B256,
    /// Its value (0 if absent).
    pub value: U256,
    /// The storage trie's nodes from its root to the slot.
    pub proof: Vec<Bytes>,
}

/// The account trie's key of an address.
pub fn account_key(address: &Address) -> B256 {
    keccak256(address)
}

/// The storage trie's key of a slot.
pub fn slot_key(slot: &U256) -> B256 {
    keccak256(slot.to_be_bytes::<32>())
}

/// The code hash an EIP-1186 proof reports: the empty code's for an empty account.
fn proven_code_hash(info: &AccountInfo) -> B256 {
    if info.is_empty() {
        KECCAK_EMPTY
    } else {
        info.code_hash
    }
}

/// The account trie's leaf of an account (`None`: absent, EIP-161 empty).
fn account_leaf(info: &AccountInfo, storage_root: B256) -> Option<Vec<u8>> {
    if info.is_empty() {
        return None;
    }
    let account = TrieAccount {
        nonce: info.nonce,
        balance: info.balance,
        storage_root,
        code_hash: info.code_hash,
    };
    Some(alloy_rlp::encode(account))
}

impl StateCommitment {
    /// The commitment of an empty state.
    pub fn new() -> StateCommitment {
        StateCommitment::default()
    }

    /// Applies one block's state diff (wiped storage first, then slots, then the accounts it
    /// touched with their new storage roots) and returns the new root.
    pub fn apply(&mut self, diff: &StateDiff) -> B256 {
        let mut touched: BTreeSet<Address> = diff.wiped.iter().copied().collect();
        for address in &diff.wiped {
            self.storage.remove(address);
        }
        for (&(address, slot), value) in &diff.storage {
            touched.insert(address);
            let storage = self.storage.entry(address).or_default();
            match value.is_zero() {
                true => storage.remove(&slot_key(&slot)),
                false => storage.insert(slot_key(&slot), alloy_rlp::encode(value)),
            }
        }
        touched.extend(diff.accounts.keys().copied());
        for address in touched {
            let info = match diff.accounts.get(&address) {
                Some(info) => info.clone(),
                // Storage alone changed: the info the trie holds (an absent account stays
                // absent, its storage kept as the state keeps it).
                None => Some(self.info(&address).unwrap_or_default()),
            };
            self.set_account(address, info);
        }
        self.accounts.commit()
    }

    /// An account's info as the trie holds it (for an account whose storage alone changed).
    fn info(&self, address: &Address) -> Option<AccountInfo> {
        let leaf = self.accounts.get(&account_key(address))?;
        let account = TrieAccount::decode(&mut &leaf[..]).expect("leaves are accounts");
        Some(AccountInfo {
            nonce: account.nonce,
            balance: account.balance,
            code_hash: account.code_hash,
            ..Default::default()
        })
    }

    /// Commits an account's storage and sets its leaf (`None`: removed, storage too).
    fn set_account(&mut self, address: Address, info: Option<AccountInfo>) {
        let key = account_key(&address);
        let Some(info) = info else {
            self.storage.remove(&address);
            self.accounts.remove(&key);
            return;
        };
        let storage_root = match self.storage.get_mut(&address) {
            Some(storage) if storage.is_empty() => {
                self.storage.remove(&address);
                EMPTY_ROOT_HASH
            }
            Some(storage) => storage.commit(),
            None => EMPTY_ROOT_HASH,
        };
        match account_leaf(&info, storage_root) {
            Some(leaf) => self.accounts.insert(key, leaf),
            None => self.accounts.remove(&key),
        }
    }

    /// Builds the commitment of a whole in-memory state (loading a snapshot: O(state)).
    pub fn from_state(db: &CacheDB<EmptyDB>) -> StateCommitment {
        let mut commitment = StateCommitment::new();
        for (&address, account) in &db.cache.accounts {
            if matches!(account.account_state, AccountState::NotExisting) {
                continue;
            }
            let mut storage = Trie::new();
            for (slot, value) in account.storage.iter().filter(|(_, v)| !v.is_zero()) {
                storage.insert(slot_key(slot), alloy_rlp::encode(value));
            }
            if !storage.is_empty() {
                commitment.storage.insert(address, storage);
            }
            commitment.set_account(address, Some(account.info.clone()));
        }
        commitment.accounts.commit();
        commitment
    }

    /// The root after the last [`StateCommitment::apply`].
    pub fn root(&self) -> B256 {
        self.accounts.root()
    }

    /// Accounts in the trie and storage slots committed to.
    pub fn counts(&self) -> (usize, usize) {
        let slots = self.storage.values().map(Trie::len).sum();
        (self.accounts.len(), slots)
    }

    /// Branch hashes cached over all its tries (a measure of its memory).
    pub fn cached_branches(&self) -> usize {
        let storage: usize = self.storage.values().map(Trie::cached_branches).sum();
        self.accounts.cached_branches() + storage
    }

    /// EIP-1186's proof of an account and some of its slots against [`StateCommitment::root`].
    pub fn proof(&self, address: Address, slots: &[B256]) -> AccountProof {
        let info = self.info(&address);
        let storage = self.storage.get(&address).filter(|_| info.is_some());
        let storage_hash = storage.map_or(EMPTY_ROOT_HASH, Trie::root);
        let storage_proof = slots
            .iter()
            .map(|&slot| slot_proof(storage, slot))
            .collect();
        let info = info.unwrap_or_default();
        AccountProof {
            address,
            nonce: info.nonce,
            balance: info.balance,
            code_hash: proven_code_hash(&info),
            storage_hash,
            account_proof: self.accounts.proof(&account_key(&address)),
            storage_proof,
        }
    }
}

/// A storage trie at a past state: the head's with an overlay, or (for an account wiped
/// since) the past slots alone, built whole.
enum PastStorage<'a> {
    /// The head's trie (or none) with the changed slots laid over it.
    Over(Option<&'a Trie>, Overlay),
    /// The whole past storage of an account wiped since.
    Built(Trie),
}

impl PastStorage<'_> {
    /// Its root.
    fn root(&self) -> B256 {
        match self {
            PastStorage::Over(None, overlay) => Trie::new().root_over(overlay),
            PastStorage::Over(Some(trie), overlay) => trie.root_over(overlay),
            PastStorage::Built(trie) => trie.root(),
        }
    }

    /// The proof of a slot's key.
    fn proof(&self, key: &B256) -> Vec<Bytes> {
        match self {
            PastStorage::Over(None, overlay) if overlay.is_empty() => Vec::new(),
            PastStorage::Over(None, overlay) => Trie::new().proof_over(key, overlay).1,
            PastStorage::Over(Some(trie), overlay) => trie.proof_over(key, overlay).1,
            PastStorage::Built(trie) => trie.proof(key),
        }
    }
}

impl StateCommitment {
    /// The storage trie of `address` at the past state.
    fn past_storage<'a>(
        &'a self,
        past: &PastState<'_>,
        changes: &PastChanges,
        address: Address,
    ) -> PastStorage<'a> {
        let slots = changes.slots.get(&address).into_iter().flatten();
        let leaves = slots.map(|&slot| {
            let value = past.storage(address, slot);
            (
                slot_key(&slot),
                (!value.is_zero()).then(|| alloy_rlp::encode(value)),
            )
        });
        if changes.wiped.contains(&address) {
            let mut trie = Trie::new();
            for (key, value) in leaves {
                if let Some(value) = value {
                    trie.insert(key, value);
                }
            }
            trie.commit();
            return PastStorage::Built(trie);
        }
        PastStorage::Over(self.storage.get(&address), leaves.collect())
    }

    /// EIP-1186's proof of an account and some of its slots at a past state within the
    /// window (`past`, the head's state with the later blocks' undos over it), against
    /// that block's `stateRoot`; also returns that root. The account trie is the head's
    /// with every account changed since laid over it (each with its storage root then),
    /// so the cost is what changed since the block, not the state.
    pub fn proof_at(
        &self,
        past: &PastState<'_>,
        address: Address,
        slots: &[B256],
    ) -> (B256, AccountProof) {
        let changes = past.changes();
        let mut overlay = Overlay::new();
        for &changed in &changes.accounts {
            let leaf = past.account(changed).and_then(|info| {
                let storage_root = self.past_storage(past, &changes, changed).root();
                account_leaf(&info, storage_root)
            });
            overlay.insert(account_key(&changed), leaf);
        }
        let (root, account_proof) = self.accounts.proof_over(&account_key(&address), &overlay);
        let info = past.account(address);
        let storage = info
            .is_some()
            .then(|| self.past_storage(past, &changes, address));
        let storage_proof = slots
            .iter()
            .map(|&slot| {
                let key = slot_key(&U256::from_be_bytes(slot.0));
                let value = past.storage(address, U256::from_be_bytes(slot.0));
                let proof = storage.as_ref().map_or_else(Vec::new, |s| s.proof(&key));
                SlotProof {
                    key: slot,
                    value: if info.is_some() { value } else { U256::ZERO },
                    proof,
                }
            })
            .collect();
        let info = info.unwrap_or_default();
        let proof = AccountProof {
            address,
            nonce: info.nonce,
            balance: info.balance,
            code_hash: proven_code_hash(&info),
            storage_hash: storage.as_ref().map_or(EMPTY_ROOT_HASH, PastStorage::root),
            account_proof,
            storage_proof,
        };
        (root, proof)
    }
}

/// A slot's proof in a storage trie (`None`: the account has no storage).
fn slot_proof(storage: Option<&Trie>, slot: B256) -> SlotProof {
    let key = slot_key(&U256::from_be_bytes(slot.0));
    let Some(storage) = storage else {
        return SlotProof {
            key: slot,
            value: U256::ZERO,
            proof: Vec::new(),
        };
    };
    let value = storage
        .get(&key)
        .map(|leaf| U256::decode(&mut &leaf[..]).expect("leaves are RLP integers"));
    SlotProof {
        key: slot,
        value: value.unwrap_or_default(),
        proof: storage.proof(&key),
    }
}

/// The state root of a whole in-memory state built from scratch: one hash builder per
/// storage trie and one over all accounts, no cache (O(state): tests and checks).
pub fn root_from_scratch(db: &CacheDB<EmptyDB>) -> B256 {
    let mut leaves: BTreeMap<B256, Vec<u8>> = BTreeMap::new();
    for (address, account) in &db.cache.accounts {
        if matches!(account.account_state, AccountState::NotExisting) {
            continue;
        }
        let slots: BTreeMap<B256, Vec<u8>> = account
            .storage
            .iter()
            .filter(|(_, v)| !v.is_zero())
            .map(|(slot, value)| (slot_key(slot), alloy_rlp::encode(value)))
            .collect();
        let storage_root = trie::root_from_scratch(slots.iter().map(|(k, v)| (k, v.as_slice())));
        if let Some(leaf) = account_leaf(&account.info, storage_root) {
            leaves.insert(account_key(address), leaf);
        }
    }
    trie::root_from_scratch(leaves.iter().map(|(k, v)| (k, v.as_slice())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::b256;
    use alloy_trie::proof::verify_proof;
    use alloy_trie::root::{state_root_unhashed, storage_root_unhashed};
    use alloy_trie::Nibbles;
    use proptest::prelude::*;

    /// The state as a model: each account's info and slots.
    type Model = BTreeMap<Address, (AccountInfo, BTreeMap<U256, U256>)>;

    /// The root of the model by alloy-trie's own from-scratch functions.
    fn model_root(model: &Model) -> B256 {
        state_root_unhashed(model.iter().filter(|(_, (i, _))| !i.is_empty()).map(
            |(address, (info, slots))| {
                let storage = slots
                    .iter()
                    .filter(|(_, v)| !v.is_zero())
                    .map(|(k, v)| (B256::from(k.to_be_bytes::<32>()), *v));
                let account = TrieAccount {
                    nonce: info.nonce,
                    balance: info.balance,
                    storage_root: storage_root_unhashed(storage),
                    code_hash: info.code_hash,
                };
                (*address, account)
            },
        ))
    }

    #[test]
    fn the_empty_state_has_the_empty_trie_root() {
        let expected = b256!("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421");
        assert_eq!(
            StateCommitment::new().apply(&StateDiff::default()),
            expected
        );
        assert_eq!(root_from_scratch(&CacheDB::new(EmptyDB::new())), expected);
    }

    /// One account: the root is keccak256 of its leaf node, built here by hand from the
    /// Yellow Paper (hex-prefix path `0x20 || keccak256(address)`, then the account's RLP).
    #[test]
    fn one_account_root_is_its_leaf_hash() {
        let address = Address::repeat_byte(0xab);
        let info = AccountInfo {
            nonce: 3,
            balance: U256::from(1_000_000u64),
            ..Default::default()
        };
        let mut diff = StateDiff::default();
        diff.accounts.insert(address, Some(info));
        let mut account = vec![0x03, 0x83, 0x0f, 0x42, 0x40, 0xa0];
        account.extend_from_slice(EMPTY_ROOT_HASH.as_slice());
        account.push(0xa0);
        account.extend_from_slice(KECCAK_EMPTY.as_slice());
        // Lists and strings over 55 bytes: a 0xf8 (list) or 0xb8 (string) byte, then the
        // length in one byte.
        let mut account_rlp = vec![0xf8, account.len() as u8];
        account_rlp.extend(account);
        let mut path = vec![0xa1, 0x20];
        path.extend_from_slice(keccak256(address).as_slice());
        let mut payload = path;
        payload.extend([0xb8, account_rlp.len() as u8]);
        payload.extend(account_rlp);
        let mut leaf = vec![0xf8, payload.len() as u8];
        leaf.extend(payload);
        assert_eq!(StateCommitment::new().apply(&diff), keccak256(&leaf));
    }

    fn address(n: u8) -> Address {
        Address::with_last_byte(n)
    }

    /// A random block's diff over 24 addresses and 8 slots each (values 0: cleared).
    fn diff_strategy() -> impl Strategy<Value = StateDiff> {
        let account = (0u8..24, 0u64..3, 0u64..3, any::<bool>(), any::<bool>());
        let slot = (0u8..24, 0u64..8, 0u64..3);
        (
            prop::collection::vec(account, 0..12),
            prop::collection::vec(slot, 0..24),
        )
            .prop_map(|(accounts, slots)| {
                let mut diff = StateDiff::default();
                for (n, nonce, balance, code, removed) in accounts {
                    let info = AccountInfo {
                        nonce,
                        balance: U256::from(balance),
                        code_hash: if code { keccak256([n]) } else { KECCAK_EMPTY },
                        ..Default::default()
                    };
                    let wiped = removed && nonce == 0;
                    if wiped {
                        diff.wiped.insert(address(n));
                        diff.storage.retain(|(a, _), _| *a != address(n));
                    }
                    diff.accounts
                        .insert(address(n), (!removed || wiped).then_some(info));
                }
                for (n, slot, value) in slots {
                    if diff.accounts.get(&address(n)) == Some(&None) {
                        continue;
                    }
                    let info = diff.accounts.get(&address(n)).cloned().flatten();
                    let info = info.unwrap_or(AccountInfo {
                        nonce: 1,
                        ..Default::default()
                    });
                    diff.accounts.insert(address(n), Some(info));
                    diff.storage
                        .insert((address(n), U256::from(slot)), U256::from(value));
                }
                diff
            })
    }

    /// Applies a diff to the model as the executor's state does.
    fn apply_model(model: &mut Model, diff: &StateDiff) {
        for address in &diff.wiped {
            if let Some((_, slots)) = model.get_mut(address) {
                slots.clear();
            }
        }
        for (address, info) in &diff.accounts {
            match info {
                Some(info) => model.entry(*address).or_default().0 = info.clone(),
                None => drop(model.remove(address)),
            }
        }
        for ((address, slot), value) in &diff.storage {
            model.entry(*address).or_default().1.insert(*slot, *value);
        }
    }

    /// Checks every proof of an account and its slots against the root and the model.
    fn check_proofs(commitment: &StateCommitment, model: &Model, n: u8) {
        let slots: Vec<B256> = (0..9u64).map(|s| B256::from(U256::from(s))).collect();
        let proof = commitment.proof(address(n), &slots);
        let entry = model.get(&address(n)).filter(|(i, _)| !i.is_empty());
        let expected = entry.map(|(info, slots)| {
            let storage = slots.iter().filter(|(_, v)| !v.is_zero());
            let storage = storage.map(|(k, v)| (B256::from(k.to_be_bytes::<32>()), *v));
            let storage_root = storage_root_unhashed(storage);
            assert_eq!(proof.storage_hash, storage_root);
            alloy_rlp::encode(TrieAccount {
                nonce: info.nonce,
                balance: info.balance,
                storage_root,
                code_hash: info.code_hash,
            })
        });
        let key = Nibbles::unpack(keccak256(address(n)));
        verify_proof(commitment.root(), key, expected, &proof.account_proof).expect("account");
        for slot in &proof.storage_proof {
            let value = entry.and_then(|(_, s)| s.get(&U256::from_be_bytes(slot.key.0)));
            let value = value.copied().filter(|v| !v.is_zero());
            assert_eq!(slot.value, value.unwrap_or_default());
            let key = Nibbles::unpack(keccak256(slot.key));
            let expected = value.map(alloy_rlp::encode);
            verify_proof(proof.storage_hash, key, expected, &slot.proof).expect("slot");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// After each of several blocks of random changes, the incremental root equals
        /// alloy-trie's from-scratch state root of the model, and every account's and slot's
        /// proof verifies against it with the model's value.
        #[test]
        fn incremental_root_matches_alloy_from_scratch(
            diffs in prop::collection::vec(diff_strategy(), 1..10),
        ) {
            let mut commitment = StateCommitment::new();
            let mut model = Model::new();
            for diff in &diffs {
                let root = commitment.apply(diff);
                apply_model(&mut model, diff);
                prop_assert_eq!(root, model_root(&model));
            }
            for n in 0..25 {
                check_proofs(&commitment, &model, n);
            }
        }
    }
}
