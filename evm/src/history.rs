//! EVM state at recent past blocks: each block's [`StateUndo`] (the values its changes
//! replaced) for the newest blocks, so that the state after block `k` is the head's state
//! with the undos of blocks `head, head-1, …, k+1` laid over it ([`PastState`]).
//!
//! Cost: an undo holds what its block changed (accounts and slots it wrote, and the whole
//! old storage of an account whose storage was wiped, empty under Cancun's EIP-6780 except
//! for a contract created and destroyed in one block), never the state; a read at block
//! `k` looks up at most `head - k` hash maps before the head's state.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;

use alloy_primitives::{Address, B256, U256};
use revm::database::{AccountState, CacheDB, EmptyDB};
use revm::state::{AccountInfo, Bytecode, EvmState};
use revm::DatabaseRef;

/// What a block's changes replaced: the state before the block, for what it changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateUndo {
    /// Each changed account before the block (without code; `None`: it did not exist).
    pub accounts: HashMap<Address, Option<AccountInfo>>,
    /// Each changed slot before the block (of accounts not wiped in the block before the
    /// slot changed).
    pub storage: HashMap<(Address, U256), U256>,
    /// The whole storage, before the block, of each account whose storage the block wiped
    /// (created or self-destructed).
    pub wiped: HashMap<Address, HashMap<U256, U256>>,
}

/// An account of the in-memory state, if it exists (without code).
fn existing(db: &CacheDB<EmptyDB>, address: Address) -> Option<AccountInfo> {
    let account = db.cache.accounts.get(&address)?;
    if matches!(account.account_state, AccountState::NotExisting) {
        return None;
    }
    let mut info = account.info.clone();
    info.code = None;
    Some(info)
}

impl StateUndo {
    /// Notes, before `state` (one transaction's changes) is committed to `db`, the values it
    /// replaces that the block had not changed yet.
    pub fn note(&mut self, db: &CacheDB<EmptyDB>, state: &EvmState) {
        for (&address, account) in state {
            if !account.is_touched() {
                continue;
            }
            self.note_account(db, address);
            if (account.is_selfdestructed() || account.is_created())
                && !self.wiped.contains_key(&address)
            {
                let old = db.cache.accounts.get(&address);
                let storage = old.map(|a| a.storage.clone().into_iter().collect());
                self.wiped.insert(address, storage.unwrap_or_default());
            }
            if self.wiped.contains_key(&address) {
                continue;
            }
            for (&slot, value) in &account.storage {
                if value.is_changed() {
                    self.storage
                        .entry((address, slot))
                        .or_insert(value.original_value);
                }
            }
        }
    }

    /// Notes an account before the block changes it (first change only).
    pub fn note_account(&mut self, db: &CacheDB<EmptyDB>, address: Address) {
        self.accounts
            .entry(address)
            .or_insert_with(|| existing(db, address));
    }

    /// Accounts and slots it holds (the measure of its memory).
    pub fn entries(&self) -> usize {
        let wiped: usize = self.wiped.values().map(HashMap::len).sum();
        self.accounts.len() + self.storage.len() + wiped
    }

    /// The account before the block, if the block changed it.
    fn account(&self, address: &Address) -> Option<&Option<AccountInfo>> {
        self.accounts.get(address)
    }

    /// The slot before the block, if the block changed it.
    fn slot(&self, address: Address, slot: U256) -> Option<U256> {
        if let Some(old) = self.storage.get(&(address, slot)) {
            return Some(*old);
        }
        let wiped = self.wiped.get(&address)?;
        Some(wiped.get(&slot).copied().unwrap_or_default())
    }
}

/// The undos of the newest blocks, oldest first.
#[derive(Clone, Debug)]
pub struct StateHistory {
    capacity: usize,
    /// (block number, undo), consecutive numbers ending at the head.
    undos: VecDeque<(u64, StateUndo)>,
}

/// A state asked for outside the window kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutsideWindow {
    /// The block asked for.
    pub block: u64,
    /// The oldest block whose state is kept.
    pub oldest: u64,
    /// The head.
    pub head: u64,
}

impl StateHistory {
    /// Keeps the undos of the newest `capacity` blocks (0: the head's state only).
    pub fn new(capacity: usize) -> StateHistory {
        StateHistory {
            capacity,
            undos: VecDeque::new(),
        }
    }

    /// How many blocks' undos it keeps at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Remembers block `number`'s undo (the block after the previous one), forgetting the
    /// oldest past the capacity.
    pub fn push(&mut self, number: u64, undo: StateUndo) {
        if let Some((last, _)) = self.undos.back() {
            assert_eq!(number, last + 1, "undos are remembered in order");
        }
        self.undos.push_back((number, undo));
        while self.undos.len() > self.capacity {
            self.undos.pop_front();
        }
    }

    /// Forgets every undo (the state was replaced, by a snapshot).
    pub fn clear(&mut self) {
        self.undos.clear();
    }

    /// The oldest block whose state can be read, given the head's number.
    pub fn oldest(&self, head: u64) -> u64 {
        match self.undos.front() {
            Some((first, _)) => first - 1,
            None => head,
        }
    }

    /// Accounts and slots held by all undos.
    pub fn entries(&self) -> usize {
        self.undos.iter().map(|(_, u)| u.entries()).sum()
    }

    /// The state after block `block`, over `db` (the state after block `head`).
    pub fn at<'a>(
        &'a self,
        db: &'a CacheDB<EmptyDB>,
        head: u64,
        block: u64,
    ) -> Result<PastState<'a>, OutsideWindow> {
        let oldest = self.oldest(head);
        if block < oldest || block > head {
            return Err(OutsideWindow {
                block,
                oldest,
                head,
            });
        }
        let undos = self
            .undos
            .iter()
            .filter(|(n, _)| *n > block)
            .map(|(_, u)| u)
            .collect();
        Ok(PastState { db, undos })
    }
}

/// What a past state changed relative to the head ([`PastState::changes`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PastChanges {
    /// Accounts changed after it.
    pub accounts: std::collections::BTreeSet<Address>,
    /// Per account, the slots that may differ (for a wiped one: all it had).
    pub slots: std::collections::BTreeMap<Address, std::collections::BTreeSet<U256>>,
    /// Accounts whose storage a later block wiped: their storage here is
    /// [`PastChanges::slots`]' alone, none of the head's.
    pub wiped: std::collections::BTreeSet<Address>,
}

/// The EVM state after a past block: the head's state with the undos of the later blocks
/// over it (read-only; a revm database for calls).
pub struct PastState<'a> {
    db: &'a CacheDB<EmptyDB>,
    /// Undos of the blocks after it, oldest first: the first that changed a key has its
    /// value.
    undos: Vec<&'a StateUndo>,
}

impl PastState<'_> {
    /// An account (without code), `None` if it did not exist.
    pub fn account(&self, address: Address) -> Option<AccountInfo> {
        match self.undos.iter().find_map(|u| u.account(&address)) {
            Some(old) => old.clone(),
            None => existing(self.db, address),
        }
    }

    /// A storage slot.
    pub fn storage(&self, address: Address, slot: U256) -> U256 {
        if let Some(old) = self.undos.iter().find_map(|u| u.slot(address, slot)) {
            return old;
        }
        let account = self.db.cache.accounts.get(&address);
        account
            .and_then(|a| a.storage.get(&slot).copied())
            .unwrap_or_default()
    }

    /// What differs between this state and the head's: every account the later blocks
    /// changed, and per account the slots whose value here may differ from the head's
    /// (for an account wiped by a later block, every slot it had here: its storage here is
    /// those slots alone). Cost: the undos' entries.
    pub fn changes(&self) -> PastChanges {
        let mut changes = PastChanges::default();
        for undo in &self.undos {
            changes.accounts.extend(undo.accounts.keys().copied());
            for &(address, slot) in undo.storage.keys() {
                if !changes.wiped.contains(&address) {
                    changes.accounts.insert(address);
                    changes.slots.entry(address).or_default().insert(slot);
                }
            }
            for (&address, old) in &undo.wiped {
                if changes.wiped.insert(address) {
                    changes.accounts.insert(address);
                    changes
                        .slots
                        .entry(address)
                        .or_default()
                        .extend(old.keys().copied());
                }
            }
        }
        changes
    }

    /// Code by hash (code is never removed from the state's code map).
    pub fn code(&self, code_hash: B256) -> Option<Bytecode> {
        self.db.cache.contracts.get(&code_hash).cloned()
    }
}

impl DatabaseRef for PastState<'_> {
    type Error = Infallible;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, Infallible> {
        Ok(self.account(address))
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, Infallible> {
        Ok(self.code(code_hash).unwrap_or_default())
    }

    fn storage_ref(&self, address: Address, index: U256) -> Result<U256, Infallible> {
        Ok(self.storage(address, index))
    }

    /// The hashes the state keeps are those of the newest blocks
    /// ([`crate::executor::BLOCK_HASH_WINDOW`]); an older block's reads as zero.
    fn block_hash_ref(&self, number: u64) -> Result<B256, Infallible> {
        let hash = self.db.cache.block_hashes.get(&U256::from(number));
        Ok(hash.copied().unwrap_or_default())
    }
}
