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
use crate::trie::{self, Trie};
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
            code_hash: if info.is_empty() { KECCAK_EMPTY } else { info.code_hash },
            storage_hash,
            account_proof: self.accounts.proof(&account_key(&address)),
            storage_proof,
        }
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
    let value = storage.get(&key).map(|leaf| {
        U256::decode(&mut &leaf[..]).expect("leaves are RLP integers")
    });
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
