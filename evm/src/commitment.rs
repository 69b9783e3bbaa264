//! The EVM state root: a multiset hash over every account and every non-zero storage slot.
//!
//! Each record has a BLAKE3 digest; the root is BLAKE3 of their lane-wise sum (four u64
//! lanes, wrapping), as for the engine's state root and the nonce root (docs/engine.md).
//! The sum does not depend on the order records were added, so the root is a function of
//! the state alone: two histories that end in the same state have the same root, and a
//! block that changes nothing keeps it. [`StateCommitment::apply`] updates it from a
//! block's [`StateDiff`]: the cost is what the block changed (one BLAKE3 and one map update
//! per changed account and slot; a wiped account also walks its old slots).
//!
//! Records (all integers big-endian, as the EVM writes them):
//! - account: `BLAKE3("nexus-evm-account-v1" || address 20 || balance 32 || nonce 8 ||
//!   code_hash 32)`; an empty account (EIP-161: nonce 0, balance 0, no code) is absent;
//! - slot: `BLAKE3("nexus-evm-slot-v1" || address 20 || slot 32 || value 32)`; a zero slot
//!   is absent.

use crate::executor::StateDiff;
use alloy_primitives::{Address, U256};
use revm::database::{AccountState, CacheDB, EmptyDB};
use revm::state::AccountInfo;
use std::collections::BTreeMap;

/// A record's digest as four lanes.
type Lanes = [u64; 4];

/// The incremental EVM state root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateCommitment {
    accounts: BTreeMap<Address, Lanes>,
    slots: BTreeMap<Address, BTreeMap<U256, Lanes>>,
    sum: Lanes,
}

fn lanes(hasher: &blake3::Hasher) -> Lanes {
    let bytes = hasher.finalize();
    std::array::from_fn(|i| {
        u64::from_le_bytes(bytes.as_bytes()[i * 8..i * 8 + 8].try_into().expect("8"))
    })
}

fn account_digest(address: &Address, info: &AccountInfo) -> Option<Lanes> {
    if info.is_empty() {
        return None;
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"nexus-evm-account-v1");
    hasher.update(address.as_slice());
    hasher.update(&info.balance.to_be_bytes::<32>());
    hasher.update(&info.nonce.to_be_bytes());
    hasher.update(info.code_hash.as_slice());
    Some(lanes(&hasher))
}

fn slot_digest(address: &Address, slot: &U256, value: &U256) -> Option<Lanes> {
    if value.is_zero() {
        return None;
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"nexus-evm-slot-v1");
    hasher.update(address.as_slice());
    hasher.update(&slot.to_be_bytes::<32>());
    hasher.update(&value.to_be_bytes::<32>());
    Some(lanes(&hasher))
}

impl StateCommitment {
    /// The commitment of an empty state.
    pub fn new() -> StateCommitment {
        StateCommitment::default()
    }

    fn add(&mut self, digest: Lanes) {
        for (lane, value) in self.sum.iter_mut().zip(digest) {
            *lane = lane.wrapping_add(value);
        }
    }

    fn sub(&mut self, digest: Lanes) {
        for (lane, value) in self.sum.iter_mut().zip(digest) {
            *lane = lane.wrapping_sub(value);
        }
    }

    fn set_account(&mut self, address: Address, digest: Option<Lanes>) {
        let old = match digest {
            Some(digest) => self.accounts.insert(address, digest),
            None => self.accounts.remove(&address),
        };
        if let Some(old) = old {
            self.sub(old);
        }
        if let Some(digest) = digest {
            self.add(digest);
        }
    }

    fn set_slot(&mut self, address: Address, slot: U256, digest: Option<Lanes>) {
        let slots = self.slots.entry(address).or_default();
        let old = match digest {
            Some(digest) => slots.insert(slot, digest),
            None => slots.remove(&slot),
        };
        if slots.is_empty() {
            self.slots.remove(&address);
        }
        if let Some(old) = old {
            self.sub(old);
        }
        if let Some(digest) = digest {
            self.add(digest);
        }
    }

    fn wipe(&mut self, address: Address) {
        for (_, digest) in self.slots.remove(&address).unwrap_or_default() {
            self.sub(digest);
        }
    }

    /// Applies one block's state diff: wiped storage first, then accounts (a removed
    /// account loses its slots too), then slots.
    pub fn apply(&mut self, diff: &StateDiff) {
        for &address in &diff.wiped {
            self.wipe(address);
        }
        for (&address, info) in &diff.accounts {
            match info {
                Some(info) => self.set_account(address, account_digest(&address, info)),
                None => {
                    self.set_account(address, None);
                    self.wipe(address);
                }
            }
        }
        for (&(address, slot), value) in &diff.storage {
            self.set_slot(address, slot, slot_digest(&address, &slot, value));
        }
    }

    /// Recomputes the commitment from a whole in-memory state (tests and checks: O(state)).
    pub fn from_state(db: &CacheDB<EmptyDB>) -> StateCommitment {
        let mut commitment = StateCommitment::new();
        for (&address, account) in &db.cache.accounts {
            if matches!(account.account_state, AccountState::NotExisting) {
                continue;
            }
            commitment.set_account(address, account_digest(&address, &account.info));
            for (slot, value) in &account.storage {
                commitment.set_slot(address, *slot, slot_digest(&address, slot, value));
            }
        }
        commitment
    }

    /// The root: BLAKE3 of the lane-wise sum (little-endian lanes).
    pub fn root(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        for (lane, value) in self.sum.iter().enumerate() {
            bytes[lane * 8..lane * 8 + 8].copy_from_slice(&value.to_le_bytes());
        }
        *blake3::hash(&bytes).as_bytes()
    }

    /// Accounts and slots committed to (tests).
    pub fn counts(&self) -> (usize, usize) {
        let slots = self.slots.values().map(BTreeMap::len).sum();
        (self.accounts.len(), slots)
    }
}
