//! The rule every validator applies to a proposal before voting for it.
//!
//! Core transactions: for this chain, signature passed (checked by the caller, for example
//! with the mempool's cache), restricted actions from keys with that role, no deposit or
//! withdrawal of the EVM's native asset, nonce valid in order through the block at the
//! block's time, at most one price per market from each feeder, and their Core gas
//! ([`Execution::core_gas`]) adding up to at most the block's Core gas limit. A call of a
//! co-processor that is not active, or of a method it lacks, is valid: it is refused at
//! execution (a registry change between admission and the block must not make the block
//! invalid).
//!
//! EVM transactions: the envelope decodes (legacy or EIP-2930/1559; no blobs, no 7702), is
//! for this chain, its signature recovers a sender; revm's own checks against the next
//! block pass (fees, gas limit, intrinsic gas, initcode size); the sender has no code; its
//! nonces run on from its state nonce through the block; it can pay every one of its
//! transactions in the block from its balance at the block's start (each may cost
//! `gas_limit * max_fee + value`; only a sender's own transactions lower its balance); and
//! the block's EVM gas limits add up to at most the user half of the block's gas, so that no
//! transaction is ever deferred (callbacks use at most the other half). Each check is what
//! revm would refuse at execution, decided before the vote: a decided block's EVM
//! transactions all run.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use alloy_consensus::Transaction as _;
use alloy_primitives::{Address, B256, U256};
use engine::{AccountId, MarketId};
use evm::executor::{SignedTx, TxError};
use mempool::EvmView;
use transactions::{Action, BlockItem, NonceSet, SignatureError, SignedTransaction};

use crate::{BlockError, Execution};

/// A block that passed [`Execution::validate_block`] against the current state, with its
/// EVM transactions decoded and their senders recovered (done once).
#[derive(Debug)]
pub struct ValidBlock<'a> {
    /// The height it executes at.
    pub(crate) height: u64,
    /// Its time (ms): nonces are checked at it; the EVM block's timestamp is it in seconds.
    pub(crate) time_ms: u64,
    /// Core transactions with their item positions.
    pub(crate) core: Vec<(usize, &'a SignedTransaction)>,
    /// EVM transactions in block order.
    pub(crate) evm: Vec<SignedTx>,
}

impl ValidBlock<'_> {
    /// The EVM transactions, decoded, in block order.
    pub fn evm_txs(&self) -> &[SignedTx] {
        &self.evm
    }
}

/// Per-sender EVM state as the block runs: next nonce and what its transactions may cost.
struct EvmSender {
    next_nonce: u64,
    balance: U256,
    committed: U256,
}

/// The block's state overlays while it is checked item by item.
#[derive(Default)]
struct Overlay {
    nonces: BTreeMap<AccountId, NonceSet>,
    prices: BTreeSet<([u8; 32], MarketId)>,
    senders: BTreeMap<Address, EvmSender>,
    evm_gas: u64,
    core_gas: u64,
}

impl Execution {
    /// Checks a proposed block at time `block_time_ms` without changing anything.
    /// `signatures[i]` is the result of the signature check of the block's `i`-th Core
    /// transaction (EVM items carry their own: their sender is recovered here).
    pub fn validate_block<'a>(
        &self,
        block_time_ms: u64,
        items: &'a [BlockItem],
        signatures: &[Result<(), SignatureError>],
    ) -> Result<ValidBlock<'a>, BlockError> {
        self.validate_block_with(block_time_ms, items, signatures, &|_| None)
    }

    /// As [`Execution::validate_block`], with EVM senders recovered before (by the pool, at
    /// admission: `mempool::Mempool::evm_sender`) looked up by Ethereum transaction hash
    /// instead of recovered again; the others are recovered here.
    pub fn validate_block_with<'a>(
        &self,
        block_time_ms: u64,
        items: &'a [BlockItem],
        signatures: &[Result<(), SignatureError>],
        senders: &dyn Fn(&B256) -> Option<Address>,
    ) -> Result<ValidBlock<'a>, BlockError> {
        let core_count = items.iter().filter(|item| item.core().is_some()).count();
        if signatures.len() != core_count {
            return Err(BlockError::SignatureCount {
                signatures: signatures.len(),
                transactions: core_count,
            });
        }
        let mut block = ValidBlock {
            height: self.height() + 1,
            time_ms: block_time_ms,
            core: Vec::with_capacity(core_count),
            evm: Vec::with_capacity(items.len() - core_count),
        };
        let mut overlay = Overlay::default();
        let mut signatures = signatures.iter();
        for (index, item) in items.iter().enumerate() {
            match item {
                BlockItem::Core(tx) => {
                    let signature = signatures.next().expect("counted above");
                    self.check_core(index, tx, *signature, block_time_ms, &mut overlay)?;
                    block.core.push((index, tx));
                }
                BlockItem::Evm(evm) => {
                    let tx = self.check_evm(index, evm.envelope(), senders, &mut overlay)?;
                    block.evm.push(tx);
                }
            }
        }
        Ok(block)
    }

    fn check_core(
        &self,
        index: usize,
        tx: &SignedTransaction,
        signature: Result<(), SignatureError>,
        block_time_ms: u64,
        overlay: &mut Overlay,
    ) -> Result<(), BlockError> {
        signature.map_err(|error| BlockError::Signature { index, error })?;
        if tx.tx.chain_id != self.chain_id {
            return Err(BlockError::WrongChain { index });
        }
        let total = overlay.core_gas.saturating_add(self.core_gas(tx));
        if total > self.core_gas_limit() {
            let limit = self.core_gas_limit();
            return Err(BlockError::CoreGas {
                index,
                total,
                limit,
            });
        }
        overlay.core_gas = total;
        for action in &tx.tx.actions {
            self.check_action(index, &tx.tx.signer, action, overlay)?;
        }
        let account = tx.account();
        let nonces = overlay
            .nonces
            .entry(account)
            .or_insert_with(|| self.nonces.get(&account).cloned().unwrap_or_default());
        nonces
            .check(tx.tx.nonce, block_time_ms)
            .map_err(|error| BlockError::Nonce { index, error })?;
        nonces.record(tx.tx.nonce);
        Ok(())
    }

    fn check_action(
        &self,
        index: usize,
        signer: &[u8; 32],
        action: &Action,
        overlay: &mut Overlay,
    ) -> Result<(), BlockError> {
        if let Some(role) = action.restricted_to() {
            if !self.has_role(role, signer) {
                return Err(BlockError::NotPermitted { index, role });
            }
        }
        match *action {
            Action::OraclePrice { market, .. } if !overlay.prices.insert((*signer, market)) => {
                Err(BlockError::DuplicateOracle { index, market })
            }
            Action::Deposit { asset, .. } | Action::Withdraw { asset, .. }
                if asset == self.bridge.native_asset =>
            {
                Err(BlockError::NativeAsset { index, asset })
            }
            Action::Deposit { account, .. } if account == evm::system::TOKEN_ESCROW_ACCOUNT => {
                Err(BlockError::TokenEscrow { index })
            }
            _ => Ok(()),
        }
    }

    fn check_evm(
        &self,
        index: usize,
        envelope: &[u8],
        senders: &dyn Fn(&B256) -> Option<Address>,
        overlay: &mut Overlay,
    ) -> Result<SignedTx, BlockError> {
        let evm_error = |error| BlockError::Evm { index, error };
        let tx = self.decode_evm_with(envelope, senders).map_err(evm_error)?;
        let limit = self.evm_gas_share();
        let total = overlay.evm_gas.saturating_add(tx.envelope.gas_limit());
        if total > limit {
            return Err(BlockError::EvmGas {
                index,
                total,
                limit,
            });
        }
        overlay.evm_gas = total;
        let sender = match overlay.senders.entry(tx.sender) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let account = self.evm_account(tx.sender);
                if account.has_code {
                    return Err(evm_error(TxError::SenderNotEoa(tx.sender)));
                }
                entry.insert(EvmSender {
                    next_nonce: account.nonce,
                    balance: account.balance,
                    committed: U256::ZERO,
                })
            }
        };
        if tx.nonce() != sender.next_nonce {
            return Err(evm_error(TxError::Nonce {
                expected: sender.next_nonce,
                got: tx.nonce(),
            }));
        }
        let need = tx
            .max_cost()
            .and_then(|cost| {
                cost.checked_add(sender.committed)
                    .ok_or(TxError::CostOverflow)
            })
            .map_err(evm_error)?;
        if need > sender.balance {
            return Err(evm_error(TxError::Funds {
                balance: sender.balance,
                need,
            }));
        }
        sender.next_nonce += 1;
        sender.committed = need;
        Ok(tx)
    }
}
