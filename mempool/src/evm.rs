//! EVM transactions in the pool (docs/mempool.md, "EVM transactions").
//!
//! They enter as block items ([`transactions::EvmItem`]: `0xEE` then the EIP-2718
//! envelope) and are admitted only if the block validity rule (`execution`'s
//! `validate_block`) would take them after the sender's pooled ones: the envelope decodes
//! for this chain, its signature recovers a sender, revm's stateless checks pass (the view's
//! job), the gas limit fits the block's EVM share, the sender has no code, the nonce is the
//! sender's state nonce plus its pooled count (no gaps, no replacement), and the sender's
//! balance pays every pooled transaction's `gas_limit * max_fee + value`. So a proposal
//! made of pooled EVM transactions, in arrival order, is a valid block.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use alloy_consensus::Transaction as _;
use alloy_primitives::{Address, B256, U256};
use evm::executor::{SignedTx, TxError};
use transactions::{EvmItem, TxHash};

use crate::Mempool;

/// What the pool needs to know of the EVM: the state after the last block.
pub trait EvmView {
    /// Decodes an EIP-2718 envelope for this chain, recovers its sender and runs revm's
    /// checks that need no state (fees, gas limit, intrinsic gas, initcode size).
    fn decode_evm(&self, envelope: &[u8]) -> Result<SignedTx, TxError>;
    /// An account as the next block starts.
    fn evm_account(&self, address: Address) -> EvmAccount;
    /// The most gas one block's EVM transactions may reserve (sum of gas limits).
    fn evm_gas_share(&self) -> u64;
}

/// An EVM account's nonce, balance and whether it has code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvmAccount {
    /// The next nonce.
    pub nonce: u64,
    /// Wei.
    pub balance: U256,
    /// Whether it is a contract (a contract cannot send: EIP-3607).
    pub has_code: bool,
}

/// Why an EVM transaction was not taken (or was evicted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvmRefusal {
    /// What revm or geth would say (malformed, signature, chain id, nonce, funds, fees,
    /// gas, sender with code, already known), with geth's texts.
    #[error("{0}")]
    Tx(TxError),
    /// The pool holds its maximum of transactions or bytes.
    #[error("pool_full: the pool holds its maximum; send it again later")]
    PoolFull,
    /// The pool holds its maximum for this sender.
    #[error("account_limit: the pool holds {0} transactions of this sender already")]
    AccountLimit(usize),
    /// The node's rate for the sender's account is used up (the gate of
    /// [`Mempool::admit_evm_gated`] said no); send it again later.
    #[error("account_rate_limited: the sender's account is over its rate of admitted transactions; send it again later")]
    AccountRateLimited,
}

impl EvmRefusal {
    /// The stable snake_case name of the refusal (wire formats and logs).
    pub fn code(&self) -> &'static str {
        match self {
            EvmRefusal::Tx(error) => match error {
                TxError::Malformed(_) => "malformed",
                TxError::Signature(_) => "bad_signature",
                TxError::ChainId { .. } => "wrong_chain",
                TxError::Unsupported(_) => "unsupported_type",
                TxError::Nonce { expected, got } if got < expected => "nonce_too_low",
                TxError::Nonce { .. } => "nonce_too_high",
                TxError::Funds { .. } | TxError::CostOverflow => "insufficient_funds",
                TxError::Known => "duplicate",
                TxError::SenderNotEoa(_) => "sender_not_eoa",
                _ => "invalid_fee_or_gas",
            },
            EvmRefusal::PoolFull => "pool_full",
            EvmRefusal::AccountLimit(_) => "account_limit",
            EvmRefusal::AccountRateLimited => "account_rate_limited",
        }
    }
}

/// An EVM transaction that left the pool without being included, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmEvicted {
    /// The item's hash (BLAKE3 of the item bytes).
    pub hash: TxHash,
    /// Its Ethereum hash (keccak256 of the envelope).
    pub eth_hash: B256,
    /// Its sender.
    pub sender: Address,
    /// Its nonce.
    pub nonce: u64,
    /// Why it can no longer be included.
    pub reason: EvmRefusal,
}

pub(crate) struct EvmEntry {
    item: Arc<EvmItem>,
    hash: TxHash,
    /// The Ethereum transaction hash.
    eth_hash: B256,
    sender: Address,
    nonce: u64,
    gas: u64,
    cost: U256,
}

/// Senders recovered from transactions (by Ethereum hash), so that each signature is
/// recovered once per validator; bounded, oldest forgotten first.
struct SenderCache {
    capacity: usize,
    map: HashMap<B256, Address>,
    order: VecDeque<B256>,
}

impl SenderCache {
    fn insert(&mut self, hash: B256, sender: Address) {
        if self.map.insert(hash, sender).is_none() {
            self.order.push_back(hash);
            if self.order.len() > self.capacity {
                let oldest = self.order.pop_front().expect("over capacity");
                self.map.remove(&oldest);
            }
        }
    }
}

/// The EVM side of the pool: entries by arrival, by hash, and per sender by nonce.
pub(crate) struct EvmEntries {
    entries: BTreeMap<u64, EvmEntry>,
    by_hash: HashMap<TxHash, u64>,
    by_eth_hash: HashMap<B256, u64>,
    senders: HashMap<Address, BTreeMap<u64, u64>>,
    recovered: SenderCache,
    pub(crate) bytes: usize,
}

impl EvmEntries {
    /// Empty, remembering up to `capacity` recovered senders.
    pub(crate) fn new(capacity: usize) -> EvmEntries {
        EvmEntries {
            entries: BTreeMap::new(),
            by_hash: HashMap::new(),
            by_eth_hash: HashMap::new(),
            senders: HashMap::new(),
            recovered: SenderCache {
                capacity: capacity.max(1),
                map: HashMap::new(),
                order: VecDeque::new(),
            },
            bytes: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn remove(&mut self, arrival: u64) -> Option<EvmEntry> {
        let entry = self.entries.remove(&arrival)?;
        self.by_hash.remove(&entry.hash);
        self.by_eth_hash.remove(&entry.eth_hash);
        self.bytes -= entry.item.bytes().len();
        if let Some(nonces) = self.senders.get_mut(&entry.sender) {
            nonces.remove(&entry.nonce);
            if nonces.is_empty() {
                self.senders.remove(&entry.sender);
            }
        }
        Some(entry)
    }

    /// What the sender's pooled transactions may cost in all.
    fn committed(&self, sender: &Address) -> Option<U256> {
        self.senders.get(sender).map_or(Some(U256::ZERO), |nonces| {
            nonces.values().try_fold(U256::ZERO, |sum, arrival| {
                sum.checked_add(self.entries[arrival].cost)
            })
        })
    }
}

impl Mempool {
    /// Takes one EVM transaction in (its EIP-2718 envelope), or says why not. Returns the
    /// item's hash (BLAKE3 of `0xEE || envelope`).
    pub fn admit_evm(
        &mut self,
        envelope: &[u8],
        view: &impl EvmView,
    ) -> Result<TxHash, EvmRefusal> {
        self.admit_evm_gated(envelope, view, |_| true)
    }

    /// [`Mempool::admit_evm`], with one more check after all the others: `within_rate` of
    /// the recovered sender (the node's rate limit per account; it takes a token when it
    /// says yes, so only a transaction the pool takes spends one). `false` refuses it
    /// [`EvmRefusal::AccountRateLimited`].
    pub fn admit_evm_gated(
        &mut self,
        envelope: &[u8],
        view: &impl EvmView,
        within_rate: impl FnOnce(Address) -> bool,
    ) -> Result<TxHash, EvmRefusal> {
        let item = EvmItem::new(envelope);
        let hash = item.hash();
        if self.evm.by_hash.contains_key(&hash) {
            return Err(EvmRefusal::Tx(TxError::Known));
        }
        let tx = view.decode_evm(envelope).map_err(EvmRefusal::Tx)?;
        self.evm.recovered.insert(tx.hash, tx.sender);
        let (gas, cost) = self.evm_checks(&tx, view)?;
        let held = self.evm.senders.get(&tx.sender).map_or(0, BTreeMap::len);
        if held >= self.config.max_per_account {
            return Err(EvmRefusal::AccountLimit(held));
        }
        let len = item.bytes().len();
        if self.len() >= self.config.max_txs || self.bytes() + len > self.config.max_bytes {
            return Err(EvmRefusal::PoolFull);
        }
        if !within_rate(tx.sender) {
            return Err(EvmRefusal::AccountRateLimited);
        }
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.evm.bytes += len;
        self.evm.by_hash.insert(hash, arrival);
        self.evm.by_eth_hash.insert(tx.hash, arrival);
        self.evm
            .senders
            .entry(tx.sender)
            .or_default()
            .insert(tx.nonce(), arrival);
        self.evm.entries.insert(
            arrival,
            EvmEntry {
                item: Arc::new(item),
                hash,
                eth_hash: tx.hash,
                sender: tx.sender,
                nonce: tx.nonce(),
                gas,
                cost,
            },
        );
        Ok(hash)
    }

    /// Gas share, sender with code, nonce after the pooled ones, funds for all of them.
    /// Returns the gas limit and the maximum cost.
    fn evm_checks(&self, tx: &SignedTx, view: &impl EvmView) -> Result<(u64, U256), EvmRefusal> {
        let refuse = |error| Err(EvmRefusal::Tx(error));
        let gas = tx.envelope.gas_limit();
        let share = view.evm_gas_share();
        if gas > share {
            return refuse(TxError::GasLimit {
                max: share,
                got: gas,
            });
        }
        let account = view.evm_account(tx.sender);
        if account.has_code {
            return refuse(TxError::SenderNotEoa(tx.sender));
        }
        let pooled = self.evm.senders.get(&tx.sender).map_or(0, BTreeMap::len) as u64;
        let next = account.nonce + pooled;
        if tx.nonce() != next {
            let expected = if tx.nonce() < account.nonce {
                account.nonce
            } else {
                next
            };
            return refuse(TxError::Nonce {
                expected,
                got: tx.nonce(),
            });
        }
        let cost = tx.max_cost().map_err(EvmRefusal::Tx)?;
        let need = self
            .evm
            .committed(&tx.sender)
            .and_then(|sum| sum.checked_add(cost))
            .ok_or(EvmRefusal::Tx(TxError::CostOverflow))?;
        if need > account.balance {
            return refuse(TxError::Funds {
                balance: account.balance,
                need,
            });
        }
        Ok((gas, cost))
    }

    /// EVM transactions pooled.
    pub fn evm_len(&self) -> usize {
        self.evm.len()
    }

    /// The pooled EVM item whose transaction has this Ethereum hash (`eth_getTransactionByHash`
    /// of a pending transaction).
    pub fn evm_pooled_item(&self, eth_hash: &B256) -> Option<Arc<EvmItem>> {
        let arrival = self.evm.by_eth_hash.get(eth_hash)?;
        Some(self.evm.entries[arrival].item.clone())
    }

    /// Every pooled EVM item in arrival order (each sender's in nonce order), for
    /// `txpool_content`.
    pub fn evm_pooled_items(&self) -> impl Iterator<Item = &Arc<EvmItem>> + '_ {
        self.evm.entries.values().map(|entry| &entry.item)
    }

    /// EVM transactions of this sender pooled (its pending nonce is its state nonce plus
    /// this).
    pub fn evm_pooled(&self, sender: &Address) -> usize {
        self.evm.senders.get(sender).map_or(0, BTreeMap::len)
    }

    /// The sender recovered before from the transaction with this Ethereum hash (at
    /// admission, or remembered from a validated block), for
    /// `execution::Execution::validate_block_with`.
    pub fn evm_sender(&self, hash: &B256) -> Option<Address> {
        self.evm.recovered.map.get(hash).copied()
    }

    /// Remembers the senders of transactions recovered elsewhere (a proposal validated
    /// before its decision), so that the next check of the same block recovers none.
    pub fn remember_evm_senders(&mut self, txs: &[SignedTx]) {
        for tx in txs {
            self.evm.recovered.insert(tx.hash, tx.sender);
        }
    }

    /// Pooled EVM items for a proposal, in arrival order (so each sender's in nonce order):
    /// at most `max_txs`, `max_bytes` of items and `max_gas` of gas limits (pass
    /// [`EvmView::evm_gas_share`]); stops at the first that does not fit, so no sender's
    /// later nonce is taken without its earlier ones.
    pub fn evm_proposal(
        &self,
        max_txs: usize,
        max_bytes: usize,
        max_gas: u64,
    ) -> Vec<Arc<EvmItem>> {
        let (mut bytes, mut gas) = (0usize, 0u64);
        let mut out = Vec::new();
        for entry in self.evm.entries.values() {
            let len = entry.item.bytes().len();
            if out.len() >= max_txs || bytes + len > max_bytes || gas + entry.gas > max_gas {
                break;
            }
            bytes += len;
            gas += entry.gas;
            out.push(entry.item.clone());
        }
        out
    }

    /// After a block: its EVM items leave the pool, and each sender's others are checked
    /// again in nonce order against the new state (nonce, funds, code). Those that can no
    /// longer be included, and every later one of the same sender, are evicted and returned.
    pub fn on_evm_block(&mut self, included: &[TxHash], view: &impl EvmView) -> Vec<EvmEvicted> {
        for hash in included {
            if let Some(arrival) = self.evm.by_hash.get(hash).copied() {
                self.evm.remove(arrival);
            }
        }
        let mut senders: Vec<Address> = self.evm.senders.keys().copied().collect();
        senders.sort_unstable();
        let mut evicted = Vec::new();
        for sender in senders {
            self.recheck_sender(sender, view, &mut evicted);
        }
        evicted
    }

    fn recheck_sender(&mut self, sender: Address, view: &impl EvmView, out: &mut Vec<EvmEvicted>) {
        let account = view.evm_account(sender);
        let pooled: Vec<u64> = self.evm.senders[&sender].values().copied().collect();
        let (mut next, mut spent) = (account.nonce, U256::ZERO);
        let mut failed: Option<TxError> = None;
        for arrival in pooled {
            let entry = &self.evm.entries[&arrival];
            let reason = if failed.is_some() {
                failed.clone()
            } else if entry.nonce < account.nonce {
                // Mined by another transaction of the sender: only this one goes.
                Some(TxError::Nonce {
                    expected: account.nonce,
                    got: entry.nonce,
                })
            } else {
                failed = if account.has_code {
                    Some(TxError::SenderNotEoa(sender))
                } else if entry.nonce != next {
                    Some(TxError::Nonce {
                        expected: next,
                        got: entry.nonce,
                    })
                } else {
                    spent = spent.saturating_add(entry.cost);
                    next += 1;
                    (spent > account.balance).then_some(TxError::Funds {
                        balance: account.balance,
                        need: spent,
                    })
                };
                failed.clone()
            };
            if let Some(reason) = reason {
                let entry = self.evm.remove(arrival).expect("pooled");
                out.push(EvmEvicted {
                    hash: entry.hash,
                    eth_hash: entry.eth_hash,
                    sender,
                    nonce: entry.nonce,
                    reason: EvmRefusal::Tx(reason),
                });
            }
        }
    }
}
