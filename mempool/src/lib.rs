//! The mempool: signed transactions a validator holds until a block takes them.
//!
//! A pure state machine (no sockets, clocks or threads: time is a parameter, the chain's state
//! is read through [`ChainView`]). Its rules (docs/mempool.md):
//!
//! - **Admission** decodes, checks the chain id, the signer's account and permissions, the
//!   nonce against the chain and against transactions already pooled, the limits (pool
//!   transactions and bytes, transactions per account), and the signature, once: a
//!   transaction's hash is remembered once its signature passed ([`VerifiedCache`]), so a
//!   block holding pooled transactions is checked without verifying them again. Every refusal
//!   is a typed [`Refusal`] for the sender; a refused transaction changes nothing.
//! - **Proposals** take pooled transactions in arrival order, within count and byte limits.
//! - **After each block** the included transactions leave the pool, and the others are
//!   checked again against the new state: one that can no longer be included (its nonce was
//!   used, or is too old now) is evicted and returned with the reason, so that the shell
//!   tells its sender. The pool never drops an accepted transaction silently.

mod cache;
pub mod evm;

pub use cache::VerifiedCache;
pub use evm::{EvmAccount, EvmEvicted, EvmRefusal, EvmView};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use engine::{AccountId, AssetId};
use transactions::{
    verify, verify_batch_cached, Action, DecodeError, KeyCache, NonceError, NonceSet,
    SignatureError, SignedTransaction, TxHash,
};

/// The chain's state as the pool needs it: the execution state after the last block.
pub trait ChainView {
    /// The chain's id.
    fn chain_id(&self) -> [u8; 32];
    /// Whether the engine knows the account (it holds or held something).
    fn account_exists(&self, account: AccountId) -> bool;
    /// The account's remembered nonces (`None`: it never used one).
    fn nonces(&self, account: AccountId) -> Option<&NonceSet>;
    /// Whether `key` may sign deposits.
    fn is_faucet(&self, key: &[u8; 32]) -> bool;
    /// Whether `key` may sign oracle prices.
    fn is_feeder(&self, key: &[u8; 32]) -> bool;
    /// The Core asset only CoreWriter moves (the EVM's native token), if any: a Core
    /// deposit or withdrawal of it is refused, as a block holding it is invalid.
    fn native_asset(&self) -> Option<AssetId> {
        None
    }
    /// Whether a co-processor call would reach an active co-processor that has the method
    /// (`Err`: the refusal's code, `coprocessor_inactive` or `unknown_method`).
    fn check_call(
        &self,
        _coprocessor: u32,
        _method: u8,
        _args: &[u8; 24],
    ) -> Result<(), &'static str> {
        Ok(())
    }
    /// The Core gas a transaction uses (0 where the chain charges none).
    fn core_gas(&self, _tx: &SignedTransaction) -> u64 {
        0
    }
    /// The most Core gas a block's transactions may use.
    fn core_gas_limit(&self) -> u64 {
        u64::MAX
    }
}

/// Limits of one pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Most transactions held.
    pub max_txs: usize,
    /// Most bytes of transactions held.
    pub max_bytes: usize,
    /// Most transactions held for one account.
    pub max_per_account: usize,
    /// How many verified hashes are remembered (oldest forgotten first).
    pub verified_cache: usize,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_txs: 200_000,
            max_bytes: 64 << 20,
            max_per_account: 1_024,
            verified_cache: 1 << 20,
        }
    }
}

/// Why a transaction was not taken (or was evicted): what the sender is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The bytes are not a transaction.
    #[error("malformed: {0}")]
    Malformed(DecodeError),
    /// Signed for another chain.
    #[error("wrong_chain: the transaction is for another chain")]
    WrongChain,
    /// The signer key is not acceptable (non-canonical or small order).
    #[error("bad_key: {0}")]
    BadKey(SignatureError),
    /// The signature does not verify.
    #[error("bad_signature: {0}")]
    BadSignature(SignatureError),
    /// The nonce is stale, too far ahead, used, or below the remembered ones.
    #[error("nonce: {0}")]
    Nonce(NonceError),
    /// The pool already holds a transaction of this account with this nonce.
    #[error("nonce_pending: the pool holds another transaction with nonce {0}")]
    NoncePending(u64),
    /// The signer's account does not exist (and the signer is no faucet).
    #[error("unknown_account: account {0} holds nothing on this chain")]
    UnknownAccount(AccountId),
    /// A restricted action from a key without that role.
    #[error("not_permitted: only a configured {0} may sign this action")]
    NotPermitted(&'static str),
    /// This exact transaction is pooled already.
    #[error("duplicate: the transaction is in the pool already")]
    Duplicate,
    /// The pool holds its maximum of transactions or bytes.
    #[error("pool_full: the pool holds its maximum; send it again later")]
    PoolFull,
    /// The pool holds its maximum for this account.
    #[error("account_limit: the pool holds {0} transactions of this account already")]
    AccountLimit(usize),
    /// A call of a co-processor that is not active, or of a method it lacks (code:
    /// `coprocessor_inactive` or `unknown_method`).
    #[error("{0}: the call reaches no co-processor method")]
    Call(&'static str),
    /// The transaction alone uses more Core gas than a block may.
    #[error("too_much_gas: the transaction uses {gas} Core gas, a block at most {limit}")]
    TooMuchGas {
        /// Its Core gas.
        gas: u64,
        /// The block's limit.
        limit: u64,
    },
    /// A Core deposit or withdrawal of the EVM's native token (code `not_permitted`).
    #[error(
        "not_permitted: asset {0} is the EVM's native token; it moves only through CoreWriter"
    )]
    NativeAsset(AssetId),
}

impl Refusal {
    /// The stable snake_case name of the refusal (wire formats and logs).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::WrongChain => "wrong_chain",
            Refusal::BadKey(_) => "bad_key",
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::Nonce(NonceError::Stale { .. }) => "nonce_stale",
            Refusal::Nonce(NonceError::Future { .. }) => "nonce_future",
            Refusal::Nonce(NonceError::Used(_)) => "nonce_used",
            Refusal::Nonce(NonceError::BelowRemembered { .. }) => "nonce_below_remembered",
            Refusal::NoncePending(_) => "nonce_pending",
            Refusal::UnknownAccount(_) => "unknown_account",
            Refusal::NotPermitted(_) | Refusal::NativeAsset(_) => "not_permitted",
            Refusal::Duplicate => "duplicate",
            Refusal::PoolFull => "pool_full",
            Refusal::AccountLimit(_) => "account_limit",
            Refusal::Call(code) => code,
            Refusal::TooMuchGas { .. } => "too_much_gas",
        }
    }
}

/// A transaction that left the pool without being included, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// The transaction.
    pub hash: TxHash,
    /// The signer's account.
    pub account: AccountId,
    /// Why it can no longer be included.
    pub reason: Refusal,
}

struct Entry {
    tx: Arc<SignedTransaction>,
    hash: TxHash,
    account: AccountId,
    /// When and from where it was admitted.
    admission: Admission,
}

/// When a pooled transaction was admitted, and whether a peer forwarded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The clock (ms, as given to the admission).
    pub at_ms: u64,
    /// Forwarded by another validator ([`Mempool::note_from_peer`]): that validator sent it
    /// to every other one, so the others hold it or soon will.
    pub from_peer: bool,
}

/// The pool.
pub struct Mempool {
    config: MempoolConfig,
    /// By arrival number: proposals take them in this order.
    entries: BTreeMap<u64, Entry>,
    by_hash: HashMap<TxHash, u64>,
    /// Nonces pooled per account, with their arrival numbers (a second transaction with the
    /// same nonce is refused).
    pending_nonces: HashMap<AccountId, BTreeMap<u64, u64>>,
    /// Every pooled (nonce, arrival), oldest nonce first: after a block, the window's lower
    /// edge is found here without looking at the rest of the pool.
    by_nonce: BTreeSet<(u64, u64)>,
    next_arrival: u64,
    bytes: usize,
    verified: VerifiedCache,
    /// Signer keys checked already (canonical, not of small order).
    keys: KeyCache,
    /// EVM transactions (they share the arrival numbers and the pool's limits).
    evm: evm::EvmEntries,
}

impl Mempool {
    /// An empty pool.
    pub fn new(config: MempoolConfig) -> Mempool {
        Mempool {
            config,
            entries: BTreeMap::new(),
            by_hash: HashMap::new(),
            pending_nonces: HashMap::new(),
            by_nonce: BTreeSet::new(),
            next_arrival: 0,
            bytes: 0,
            verified: VerifiedCache::new(config.verified_cache),
            keys: KeyCache::new(KeyCache::DEFAULT_CAPACITY),
            evm: evm::EvmEntries::new(config.verified_cache),
        }
    }

    /// Records that the transaction with `hash` has a valid signature, checked by the caller
    /// (the validator's gateway thread verifies what its sessions send, in parallel with
    /// the host): its admission then skips the check. Only for checks this process made.
    pub fn note_verified(&mut self, hash: TxHash) {
        self.verified.insert(hash);
    }

    /// Whether this validator verified the signature of the transaction with `hash` (at
    /// admission, on a thread of its own, or in an earlier block check) and still remembers
    /// it.
    pub fn is_verified(&self, hash: &TxHash) -> bool {
        self.verified.contains(hash)
    }

    /// Transactions held (Core and EVM).
    pub fn len(&self) -> usize {
        self.entries.len() + self.evm.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of transactions held (Core and EVM items).
    pub fn bytes(&self) -> usize {
        self.bytes + self.evm.bytes
    }

    /// Whether this transaction is pooled.
    pub fn contains(&self, hash: &TxHash) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// A pooled transaction, and when and from where it was admitted.
    pub fn pooled(&self, hash: &TxHash) -> Option<(&Arc<SignedTransaction>, Admission)> {
        let entry = self.entries.get(self.by_hash.get(hash)?)?;
        Some((&entry.tx, entry.admission))
    }

    /// Records that a pooled transaction came forwarded from another validator.
    pub fn note_from_peer(&mut self, hash: &TxHash) {
        if let Some(arrival) = self.by_hash.get(hash) {
            if let Some(entry) = self.entries.get_mut(arrival) {
                entry.admission.from_peer = true;
            }
        }
    }

    /// Takes one transaction in, or says why not. `now_ms` stands in for the next block's
    /// time in the nonce window.
    pub fn admit(
        &mut self,
        bytes: &[u8],
        now_ms: u64,
        view: &impl ChainView,
    ) -> Result<TxHash, Refusal> {
        let tx = self.precheck(bytes, now_ms, view)?;
        let hash = tx.hash();
        if !self.verified.contains(&hash) {
            verify(&tx).map_err(signature_refusal)?;
            self.verified.insert(hash);
        }
        Ok(self.insert(tx, hash, now_ms))
    }

    /// Takes many transactions in, with one batch signature check for those that pass the
    /// other checks: the same results, in order, as [`Mempool::admit`] of each in turn.
    pub fn admit_many(
        &mut self,
        items: &[&[u8]],
        now_ms: u64,
        view: &impl ChainView,
    ) -> Vec<Result<TxHash, Refusal>> {
        let mut results = Vec::with_capacity(items.len());
        // Stateless and state checks first; the pool's own checks (duplicates, pending
        // nonces, limits) again at insertion, in order, as single admissions would.
        let prechecked: Vec<Result<SignedTransaction, Refusal>> = items
            .iter()
            .map(|bytes| self.precheck(bytes, now_ms, view))
            .collect();
        let unverified: Vec<&SignedTransaction> = prechecked
            .iter()
            .flatten()
            .filter(|tx| !self.verified.contains(&tx.hash()))
            .collect();
        let signatures: HashMap<TxHash, Result<(), SignatureError>> = unverified
            .iter()
            .map(|tx| tx.hash())
            .zip(verify_batch_cached(&unverified, &mut self.keys))
            .collect();
        for checked in prechecked {
            let result = checked.and_then(|tx| {
                let hash = tx.hash();
                // As in a single admission: the pool's checks (against the items taken
                // before this one) come before the signature's.
                self.pool_checks(&tx, &hash)?;
                if !self.verified.contains(&hash) {
                    // Every unverified item has a result (duplicates share it); a missing
                    // one would be a bug, and is a refusal, never a pass.
                    let signature = signatures
                        .get(&hash)
                        .copied()
                        .unwrap_or(Err(SignatureError::BadSignature));
                    signature.map_err(signature_refusal)?;
                    self.verified.insert(hash);
                }
                Ok(self.insert(tx, hash, now_ms))
            });
            results.push(result);
        }
        results
    }

    /// The checks before the signature: decoding, chain, account, roles, nonce, and the
    /// pool's own limits.
    fn precheck(
        &self,
        bytes: &[u8],
        now_ms: u64,
        view: &impl ChainView,
    ) -> Result<SignedTransaction, Refusal> {
        let tx = SignedTransaction::decode(bytes).map_err(Refusal::Malformed)?;
        if tx.tx.chain_id != view.chain_id() {
            return Err(Refusal::WrongChain);
        }
        let signer = &tx.tx.signer;
        for action in &tx.tx.actions {
            let allowed = match action.restricted_to() {
                Some("faucet") => view.is_faucet(signer),
                Some(_) => view.is_feeder(signer),
                None => true,
            };
            if !allowed {
                return Err(Refusal::NotPermitted(action.restricted_to().unwrap_or("")));
            }
            if let Action::Deposit { asset, .. } | Action::Withdraw { asset, .. } = *action {
                if view.native_asset() == Some(asset) {
                    return Err(Refusal::NativeAsset(asset));
                }
            }
            if let Action::Call {
                coprocessor,
                method,
                ref args,
            } = *action
            {
                view.check_call(coprocessor, method, args)
                    .map_err(Refusal::Call)?;
            }
        }
        let (gas, limit) = (view.core_gas(&tx), view.core_gas_limit());
        if gas > limit {
            return Err(Refusal::TooMuchGas { gas, limit });
        }
        let account = tx.account();
        if !view.account_exists(account) && !view.is_faucet(signer) && !view.is_feeder(signer) {
            return Err(Refusal::UnknownAccount(account));
        }
        let nonces = view.nonces(account).cloned().unwrap_or_default();
        nonces.check(tx.tx.nonce, now_ms).map_err(Refusal::Nonce)?;
        self.pool_checks(&tx, &tx.hash())?;
        Ok(tx)
    }

    /// Duplicates, pooled nonces and limits.
    fn pool_checks(&self, tx: &SignedTransaction, hash: &TxHash) -> Result<(), Refusal> {
        if self.by_hash.contains_key(hash) {
            return Err(Refusal::Duplicate);
        }
        let account = tx.account();
        let pending = self.pending_nonces.get(&account);
        if pending.is_some_and(|nonces| nonces.contains_key(&tx.tx.nonce)) {
            return Err(Refusal::NoncePending(tx.tx.nonce));
        }
        let held = pending.map_or(0, BTreeMap::len);
        if held >= self.config.max_per_account {
            return Err(Refusal::AccountLimit(held));
        }
        if self.len() >= self.config.max_txs
            || self.bytes() + tx.bytes().len() > self.config.max_bytes
        {
            return Err(Refusal::PoolFull);
        }
        Ok(())
    }

    fn insert(&mut self, tx: SignedTransaction, hash: TxHash, now_ms: u64) -> TxHash {
        let account = tx.account();
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.pending_nonces
            .entry(account)
            .or_default()
            .insert(tx.tx.nonce, arrival);
        self.by_nonce.insert((tx.tx.nonce, arrival));
        self.bytes += tx.bytes().len();
        self.by_hash.insert(hash, arrival);
        self.entries.insert(
            arrival,
            Entry {
                tx: Arc::new(tx),
                hash,
                account,
                admission: Admission {
                    at_ms: now_ms,
                    from_peer: false,
                },
            },
        );
        hash
    }

    /// Pooled transactions for a proposal, in arrival order: at most `max_txs` of them,
    /// `max_bytes` in all, and within the chain's Core gas limit (gas as `view` charges it
    /// now, so that the proposal is a valid block).
    pub fn proposal(
        &self,
        max_txs: usize,
        max_bytes: usize,
        view: &impl ChainView,
    ) -> Vec<Arc<SignedTransaction>> {
        let (mut bytes, mut gas) = (0, 0u64);
        let gas_limit = view.core_gas_limit();
        let mut out = Vec::new();
        for entry in self.entries.values() {
            let len = entry.tx.bytes().len();
            let with = gas.saturating_add(view.core_gas(&entry.tx));
            if out.len() >= max_txs || bytes + len > max_bytes || with > gas_limit {
                break;
            }
            (bytes, gas) = (bytes + len, with);
            out.push(entry.tx.clone());
        }
        out
    }

    /// Checks the signatures of a block's transactions: those verified before (pooled ones)
    /// are not verified again; the others in one batch. Results in order, as
    /// [`transactions::verify`] would give them.
    pub fn check_block_signatures(
        &mut self,
        txs: &[&SignedTransaction],
    ) -> Vec<Result<(), SignatureError>> {
        let hashes: Vec<TxHash> = txs.iter().map(|tx| tx.hash()).collect();
        let unknown: Vec<usize> = (0..txs.len())
            .filter(|&i| !self.verified.contains(&hashes[i]))
            .collect();
        let batch: Vec<&SignedTransaction> = unknown.iter().map(|&i| txs[i]).collect();
        let mut results = vec![Ok(()); txs.len()];
        for (&i, result) in unknown
            .iter()
            .zip(verify_batch_cached(&batch, &mut self.keys))
        {
            results[i] = result;
        }
        for (hash, result) in hashes.iter().zip(&results) {
            if result.is_ok() {
                self.verified.insert(*hash);
            }
        }
        results
    }

    /// After a block of `included` transactions (pooled here or not): they leave the pool,
    /// and every other one that the block or the time can have made unusable is checked
    /// against the new state (its nonce, at `now_ms`): those of the block's accounts whose
    /// nonce the block used or left below the account's remembered floor, and those whose
    /// nonce the window may have left behind. Those that can no longer be included are
    /// evicted and returned, so that their senders are told. The rest of the pool is not
    /// looked at: its nonces are still usable, and a nonce only leaves the window at its
    /// lower edge.
    pub fn on_block(
        &mut self,
        included: &[&SignedTransaction],
        now_ms: u64,
        view: &impl ChainView,
    ) -> Vec<Evicted> {
        for tx in included {
            if let Some(arrival) = self.by_hash.get(&tx.hash()).copied() {
                self.remove(arrival);
            }
        }
        let mut suspects: BTreeSet<u64> = self.past_window(now_ms);
        self.block_suspects(included, view, &mut suspects);
        // An account without a nonce record yet has used none (as at admission).
        let none_used = NonceSet::default();
        let stale: Vec<(u64, Refusal)> = suspects
            .into_iter()
            .filter_map(|arrival| {
                let entry = self.entries.get(&arrival)?;
                let nonces = view.nonces(entry.account).unwrap_or(&none_used);
                nonces
                    .check(entry.tx.tx.nonce, now_ms)
                    .err()
                    .map(|e| (arrival, Refusal::Nonce(e)))
            })
            .collect();
        let mut evicted = Vec::with_capacity(stale.len());
        for (arrival, reason) in stale {
            if let Some(entry) = self.remove(arrival) {
                evicted.push(Evicted {
                    hash: entry.hash,
                    account: entry.account,
                    reason,
                });
            }
        }
        evicted
    }

    /// Adds the arrivals of the pooled transactions that the block's nonces can have made
    /// unusable: per account of the block, those with a nonce the block used (another
    /// transaction with the same nonce) or below the account's remembered floor now
    /// ([`NonceSet::floor`]). Nothing else of the account can have changed, so the rest of
    /// its pooled transactions are not looked at: a block costs what it holds, not what the
    /// pool holds for its accounts.
    fn block_suspects(
        &self,
        included: &[&SignedTransaction],
        view: &impl ChainView,
        suspects: &mut BTreeSet<u64>,
    ) {
        let mut used: BTreeMap<AccountId, Vec<u64>> = BTreeMap::new();
        for tx in included {
            used.entry(tx.account()).or_default().push(tx.tx.nonce);
        }
        for (account, nonces) in used {
            let Some(pending) = self.pending_nonces.get(&account) else {
                continue;
            };
            let floor = view.nonces(account).map_or(0, NonceSet::floor);
            suspects.extend(pending.range(..floor).map(|(_, &arrival)| arrival));
            suspects.extend(nonces.iter().filter_map(|nonce| pending.get(nonce)));
        }
    }

    /// Arrivals of pooled transactions whose nonce is at or below the window's lower edge at
    /// `now_ms` (too old for a block at that time: [`transactions::NONCE_PAST_MS`]).
    fn past_window(&self, now_ms: u64) -> BTreeSet<u64> {
        let oldest = now_ms
            .saturating_sub(transactions::NONCE_PAST_MS)
            .saturating_add(1);
        self.by_nonce
            .range(..(oldest, 0))
            .map(|&(_, arrival)| arrival)
            .collect()
    }

    fn remove(&mut self, arrival: u64) -> Option<Entry> {
        let entry = self.entries.remove(&arrival)?;
        self.by_hash.remove(&entry.hash);
        self.bytes -= entry.tx.bytes().len();
        self.by_nonce.remove(&(entry.tx.tx.nonce, arrival));
        if let Some(set) = self.pending_nonces.get_mut(&entry.account) {
            set.remove(&entry.tx.tx.nonce);
            if set.is_empty() {
                self.pending_nonces.remove(&entry.account);
            }
        }
        Some(entry)
    }
}

fn signature_refusal(error: SignatureError) -> Refusal {
    match error {
        SignatureError::BadKey => Refusal::BadKey(error),
        SignatureError::BadSignature => Refusal::BadSignature(error),
    }
}
