//! The EVM block executor: a pure state machine over in-memory state.
//!
//! [`Executor::execute_block`] takes a [`BlockInput`] (height, time, Core -> EVM credits and
//! callbacks, user transactions) and a [`CoreView`] of Core as of the block's start, and
//! returns a [`BlockOutput`] (header, receipts, the CoreWriter actions of successful
//! transactions, the state diff to persist). It never touches files, sockets or clocks;
//! one thread owns it.

// revm's environment structs gain fields between releases; setting the ones we use on a
// default reads better and survives upgrades.
#![allow(clippy::field_reassign_with_default)]

use crate::access_list::AccessListInspector;
use crate::actions::{action_topic, ActionKind, Callback, CoreAction, Credit, Mint};
use crate::block::{self, SystemTx};
use crate::commitment::StateCommitment;
use crate::core_view::CoreView;
use crate::history::{PastState, StateUndo};
use crate::precompiles::NexusPrecompiles;
use crate::system;
use crate::token::{self, TokenSpec};
use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::{Transaction, TxEnvelope};
use alloy_eips::eip2718::{Decodable2718, Encodable2718};
/// EIP-2930 access lists (call requests, `eth_createAccessList`).
pub use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_primitives::{keccak256, Address, Bloom, Bytes, Log, TxKind, B256, U256};
use revm::context::{BlockEnv, CfgEnv, Context, TxEnv};
use revm::context_interface::result::{EVMError, ExecutionResult, InvalidTransaction, Output};
use revm::context_interface::Cfg;
use revm::database::{AccountState, CacheDB, EmptyDB, WrapDatabaseRef};
use revm::primitives::eip4844::BLOB_BASE_FEE_UPDATE_FRACTION_CANCUN;
use revm::primitives::hardfork::SpecId;
use revm::state::{AccountInfo, Bytecode, EvmState};
use revm::{Database, ExecuteCommitEvm, ExecuteEvm, InspectEvm, MainBuilder, MainContext};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The hard fork every block runs: Cancun, set explicitly (blob transactions refused).
pub const SPEC: SpecId = SpecId::CANCUN;

/// Blocks back the `BLOCKHASH` opcode sees (Ethereum's rule: the 256 before the current
/// one; older numbers give zero).
pub const BLOCK_HASH_WINDOW: u64 = 256;

/// Chain parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvmConfig {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// Base fee of every block, wei per gas (fixed: no EIP-1559 elasticity).
    pub base_fee_wei: u64,
    /// Gas limit of every block.
    pub block_gas_limit: u64,
    /// Receives priority fees.
    pub coinbase: Address,
    /// Wei of the native token per Core unit of the native asset.
    pub wei_per_unit: U256,
}

impl Default for EvmConfig {
    fn default() -> Self {
        EvmConfig {
            chain_id: 0x4e58, // "NX"
            base_fee_wei: 1_000_000_000,
            block_gas_limit: 30_000_000,
            coinbase: Address::repeat_byte(0xc0),
            wei_per_unit: U256::from(1_000_000_000_000u64), // 18 decimals on EVM, 6 on Core
        }
    }
}

/// Why a raw transaction was refused before execution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// Not a valid EIP-2718 / RLP transaction.
    #[error("malformed transaction: {0}")]
    Malformed(String),
    /// The signature does not recover.
    #[error("invalid signature: {0}")]
    Signature(String),
    /// Wrong or missing chain id.
    #[error("invalid chain id: expected {expected}, got {got:?}")]
    ChainId {
        /// This chain's.
        expected: u64,
        /// The transaction's (`None`: pre-EIP-155 legacy).
        got: Option<u64>,
    },
    /// A transaction type this chain does not run.
    #[error("unsupported transaction type: {0}")]
    Unsupported(&'static str),
    /// Nonce not the sender's next. Below the account's state nonce (the transaction, or
    /// another with its nonce, is already mined): "nonce too low", as geth; at or above it
    /// but not the next pending nonce: "too low" (taken by a pooled transaction: the pool
    /// does not replace) or "too high" (a gap: the pool keeps no future transactions).
    #[error("nonce too {}: next nonce {expected}, tx nonce {got}", if got < expected { "low" } else { "high" })]
    Nonce {
        /// The next nonce: the state nonce if `got` is below it, else the pending nonce.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// `maxPriorityFeePerGas > maxFeePerGas` (geth's `ErrTipAboveFeeCap`, same text).
    #[error("max priority fee per gas higher than max fee per gas")]
    TipAboveFeeCap {
        /// The transaction's max priority fee per gas.
        tip: u128,
        /// The transaction's max fee per gas.
        max_fee: u128,
    },
    /// The gas limit does not cover the intrinsic gas (21,000, calldata, creation, access
    /// list); geth's `ErrIntrinsicGas` text.
    #[error("intrinsic gas too low: gas {gas}, minimum needed {needed}")]
    IntrinsicGas {
        /// The transaction's gas limit.
        gas: u64,
        /// Its intrinsic gas.
        needed: u64,
    },
    /// Contract creation with initcode over the EIP-3860 limit; geth's text.
    #[error("max initcode size exceeded: code size {size}, limit {max}")]
    InitCodeSize {
        /// The initcode's length.
        size: usize,
        /// The limit (49,152 bytes under Cancun).
        max: usize,
    },
    /// The sender has code (EIP-3607); geth's `ErrSenderNoEOA` text.
    #[error("sender not an eoa: address {0}")]
    SenderNotEoa(Address),
    /// Any other refusal by revm's transaction validation (not expected after admission).
    #[error("invalid transaction: {0}")]
    Invalid(String),
    /// Not run because an earlier transaction of the same sender in the same block was
    /// dropped: its nonce can no longer be the sender's next.
    #[error("an earlier transaction of the sender ({0}) was dropped")]
    FollowsDropped(B256),
    /// Cannot pay `gas_limit * max_fee + value`.
    #[error("insufficient funds: balance {balance}, need {need}")]
    Funds {
        /// The sender's balance.
        balance: U256,
        /// What the transaction may cost.
        need: U256,
    },
    /// Fee below the base fee.
    #[error("max fee per gas {got} below base fee {base}")]
    FeeTooLow {
        /// Base fee.
        base: u64,
        /// The transaction's max fee.
        got: u128,
    },
    /// Gas limit outside `21000..=block gas limit`.
    #[error("gas limit {got} outside 21000..={max}")]
    GasLimit {
        /// The block gas limit.
        max: u64,
        /// The transaction's.
        got: u64,
    },
    /// `gas_limit * max_fee + value` does not fit in 256 bits (or in the sender's pooled
    /// total): no balance can pay it.
    #[error("transaction cost overflows 256 bits")]
    CostOverflow,
    /// Already known.
    #[error("already known")]
    Known,
}

/// A decoded, signature-checked transaction.
#[derive(Clone, Debug)]
pub struct SignedTx {
    /// Transaction hash.
    pub hash: B256,
    /// Recovered sender.
    pub sender: Address,
    /// The transaction.
    pub envelope: TxEnvelope,
}

impl SignedTx {
    /// Decodes an EIP-2718 envelope (legacy RLP included), checks the chain id and recovers
    /// the sender. Blob (EIP-4844) and EIP-7702 transactions are refused (Cancun, no blobs).
    pub fn decode(raw: &[u8], chain_id: u64) -> Result<SignedTx, TxError> {
        SignedTx::decode_with(raw, chain_id, |_| None)
    }

    /// As [`SignedTx::decode`], but the sender is taken from `known(hash)` when it answers
    /// (a sender recovered before from a transaction with this hash: keccak256 commits to
    /// the fields and the signature, so the answer cannot differ) and recovered otherwise.
    /// Recovery is by far the largest cost of a transaction's checks (docs/perf.md).
    pub fn decode_with(
        raw: &[u8],
        chain_id: u64,
        known: impl Fn(&B256) -> Option<Address>,
    ) -> Result<SignedTx, TxError> {
        let mut buf = raw;
        let envelope =
            TxEnvelope::decode_2718(&mut buf).map_err(|e| TxError::Malformed(e.to_string()))?;
        if !buf.is_empty() {
            return Err(TxError::Malformed(format!("{} trailing bytes", buf.len())));
        }
        match &envelope {
            TxEnvelope::Eip4844(_) => return Err(TxError::Unsupported("EIP-4844 (blobs)")),
            TxEnvelope::Eip7702(_) => return Err(TxError::Unsupported("EIP-7702")),
            _ => {}
        }
        if envelope.chain_id() != Some(chain_id) {
            return Err(TxError::ChainId {
                expected: chain_id,
                got: envelope.chain_id(),
            });
        }
        let hash = *envelope.tx_hash();
        let sender = match known(&hash) {
            Some(sender) => sender,
            None => envelope
                .recover_signer()
                .map_err(|e| TxError::Signature(e.to_string()))?,
        };
        Ok(SignedTx {
            hash,
            sender,
            envelope,
        })
    }

    /// The nonce.
    pub fn nonce(&self) -> u64 {
        self.envelope.nonce()
    }

    /// What the sender must hold: `gas_limit * max_fee + value`, checked (a wrapping sum
    /// would let an absurd value pass a funds check).
    pub fn max_cost(&self) -> Result<U256, TxError> {
        U256::from(self.envelope.gas_limit())
            .checked_mul(U256::from(self.envelope.max_fee_per_gas()))
            .and_then(|fee| fee.checked_add(self.envelope.value()))
            .ok_or(TxError::CostOverflow)
    }

    /// The value sent.
    pub fn value(&self) -> U256 {
        self.envelope.value()
    }

    /// Checks that do not need state: gas limit and fee against the chain's rules.
    pub fn check_static(&self, config: &EvmConfig) -> Result<(), TxError> {
        let gas = self.envelope.gas_limit();
        if !(21_000..=config.block_gas_limit).contains(&gas) {
            return Err(TxError::GasLimit {
                max: config.block_gas_limit,
                got: gas,
            });
        }
        if self.envelope.max_fee_per_gas() < config.base_fee_wei as u128 {
            return Err(TxError::FeeTooLow {
                base: config.base_fee_wei,
                got: self.envelope.max_fee_per_gas(),
            });
        }
        Ok(())
    }

    /// The error for revm's refusal of this transaction, typed like the pool's own.
    fn refusal(&self, error: &InvalidTransaction, config: &EvmConfig) -> TxError {
        let e = &self.envelope;
        match error {
            InvalidTransaction::PriorityFeeGreaterThanMaxFee => TxError::TipAboveFeeCap {
                tip: e.max_priority_fee_per_gas().unwrap_or_default(),
                max_fee: e.max_fee_per_gas(),
            },
            InvalidTransaction::GasPriceLessThanBasefee => TxError::FeeTooLow {
                base: config.base_fee_wei,
                got: e.max_fee_per_gas(),
            },
            InvalidTransaction::CallerGasLimitMoreThanBlock
            | InvalidTransaction::TxGasLimitGreaterThanCap { .. } => TxError::GasLimit {
                max: config.block_gas_limit,
                got: e.gas_limit(),
            },
            InvalidTransaction::CallGasCostMoreThanGasLimit {
                initial_gas,
                gas_limit,
            } => TxError::IntrinsicGas {
                gas: *gas_limit,
                needed: *initial_gas,
            },
            InvalidTransaction::CreateInitCodeSizeLimit => TxError::InitCodeSize {
                size: e.input().len(),
                max: revm::primitives::eip3860::MAX_INITCODE_SIZE,
            },
            InvalidTransaction::RejectCallerWithCode => TxError::SenderNotEoa(self.sender),
            InvalidTransaction::LackOfFundForMaxFee { fee, balance } => TxError::Funds {
                balance: **balance,
                need: **fee,
            },
            InvalidTransaction::OverflowPaymentInTransaction => TxError::CostOverflow,
            InvalidTransaction::NonceTooHigh { tx, state }
            | InvalidTransaction::NonceTooLow { tx, state } => TxError::Nonce {
                expected: *state,
                got: *tx,
            },
            InvalidTransaction::InvalidChainId | InvalidTransaction::MissingChainId => {
                TxError::ChainId {
                    expected: config.chain_id,
                    got: e.chain_id(),
                }
            }
            other => TxError::Invalid(other.to_string()),
        }
    }

    fn tx_env(&self) -> TxEnv {
        let e = &self.envelope;
        let mut tx = TxEnv::default();
        tx.tx_type = e.tx_type() as u8;
        tx.caller = self.sender;
        tx.gas_limit = e.gas_limit();
        tx.gas_price = e.max_fee_per_gas();
        tx.gas_priority_fee = e.max_priority_fee_per_gas();
        tx.kind = e.kind();
        tx.value = e.value();
        tx.data = e.input().clone();
        tx.nonce = e.nonce();
        tx.chain_id = e.chain_id();
        if let Some(list) = e.access_list() {
            tx.access_list = list.clone();
        }
        tx
    }

    /// The record served by `eth_getTransactionByHash`.
    pub fn record(&self, block_number: u64, index: u64) -> TxRecord {
        let e = &self.envelope;
        let sig = e.signature();
        TxRecord {
            hash: self.hash,
            from: self.sender,
            to: e.to(),
            nonce: e.nonce(),
            gas_limit: e.gas_limit(),
            gas_price: e.gas_price(),
            max_fee_per_gas: e.max_fee_per_gas(),
            max_priority_fee_per_gas: e.max_priority_fee_per_gas(),
            value: e.value(),
            input: e.input().clone(),
            tx_type: e.tx_type() as u8,
            chain_id: e.chain_id(),
            y_parity: sig.v(),
            r: sig.r(),
            s: sig.s(),
            block_number,
            index,
            access_list: e
                .access_list()
                .map(|list| {
                    list.iter()
                        .map(|item| (item.address, item.storage_keys.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// A transaction as stored and served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    /// Hash.
    pub hash: B256,
    /// Sender.
    pub from: Address,
    /// Recipient (`None`: contract creation).
    pub to: Option<Address>,
    /// Nonce.
    pub nonce: u64,
    /// Gas limit.
    pub gas_limit: u64,
    /// Legacy gas price.
    pub gas_price: Option<u128>,
    /// Max fee per gas.
    pub max_fee_per_gas: u128,
    /// Max priority fee per gas.
    pub max_priority_fee_per_gas: Option<u128>,
    /// Value.
    pub value: U256,
    /// Calldata.
    pub input: Bytes,
    /// EIP-2718 type (0 legacy, 1, 2; 0x7f: Nexus system callback).
    pub tx_type: u8,
    /// Chain id.
    pub chain_id: Option<u64>,
    /// Signature parity.
    pub y_parity: bool,
    /// Signature r.
    pub r: U256,
    /// Signature s.
    pub s: U256,
    /// Block.
    pub block_number: u64,
    /// Index in the block.
    pub index: u64,
    /// EIP-2930 access list: addresses and their storage keys (empty for legacy and
    /// system transactions).
    #[serde(default)]
    pub access_list: Vec<(Address, Vec<B256>)>,
}

/// Most runs of a call `eth_createAccessList` makes before it answers with the last list.
pub const ACCESS_LIST_ROUNDS: usize = 8;

/// Type byte of Nexus system transactions (callbacks) in records and receipts.
pub const SYSTEM_TX_TYPE: u8 = 0x7f;

/// A log as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Emitter.
    pub address: Address,
    /// Topics.
    pub topics: Vec<B256>,
    /// Data.
    pub data: Bytes,
    /// Index in the block.
    pub log_index: u64,
}

/// A receipt as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Transaction hash.
    pub tx_hash: B256,
    /// Index in the block.
    pub tx_index: u64,
    /// Block number.
    pub block_number: u64,
    /// Sender.
    pub from: Address,
    /// Recipient.
    pub to: Option<Address>,
    /// Created contract.
    pub contract_address: Option<Address>,
    /// Gas used by this transaction (EVM + Core + cross-domain, all inside EVM gas).
    pub gas_used: u64,
    /// Gas used in the block up to and including this transaction.
    pub cumulative_gas_used: u64,
    /// Wei paid per gas.
    pub effective_gas_price: u128,
    /// 1 success, 0 revert or halt.
    pub status: bool,
    /// Logs (empty unless success).
    pub logs: Vec<LogRecord>,
    /// Bloom of the logs.
    pub logs_bloom: Bloom,
    /// Type byte.
    pub tx_type: u8,
    /// Return data (revert data on failure).
    pub output: Bytes,
}

/// A block header as stored: every field of Ethereum's (Cancun) header is this or follows
/// from it ([`BlockHeader::eth_header`]), with the transaction hashes of the block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// Height (the Core block of the same height ran just before it).
    pub number: u64,
    /// keccak256 of the RLP of [`BlockHeader::eth_header`].
    pub hash: B256,
    /// Parent's hash.
    pub parent_hash: B256,
    /// Seconds.
    pub timestamp: u64,
    /// Gas used.
    pub gas_used: u64,
    /// Gas limit.
    pub gas_limit: u64,
    /// Base fee.
    pub base_fee: u64,
    /// Ethereum's state root after the block: the Merkle-Patricia trie of accounts and
    /// their storage ([`crate::commitment`]; docs/evm.md, "Block headers").
    pub state_root: B256,
    /// The Core root after the Core block of the same height (`extraData`).
    pub core_root: B256,
    /// Bloom of every log.
    pub logs_bloom: Bloom,
    /// Transactions in order (system callbacks first).
    pub tx_hashes: Vec<B256>,
    /// Root of the ordered trie of the transactions' EIP-2718 envelopes.
    #[serde(default)]
    pub transactions_root: B256,
    /// Root of the ordered trie of the receipts.
    #[serde(default)]
    pub receipts_root: B256,
    /// Receives priority fees (`miner`).
    #[serde(default)]
    pub beneficiary: Address,
    /// Length of the block's RLP (header, transactions, no ommers, no withdrawals).
    #[serde(default)]
    pub size: u64,
}

impl BlockHeader {
    /// Ethereum's header of this block (Cancun): the EIP-1559 base fee, the empty-trie
    /// root for withdrawals, the empty-list hash for ommers, zero blob gas, a zero parent
    /// beacon block root, `mixHash` the value `PREVRANDAO` read (the parent's hash) and
    /// `extraData` the 32-byte Core root.
    pub fn eth_header(&self) -> alloy_consensus::Header {
        alloy_consensus::Header {
            parent_hash: self.parent_hash,
            ommers_hash: alloy_consensus::EMPTY_OMMER_ROOT_HASH,
            beneficiary: self.beneficiary,
            state_root: self.state_root,
            transactions_root: self.transactions_root,
            receipts_root: self.receipts_root,
            logs_bloom: self.logs_bloom,
            difficulty: U256::ZERO,
            number: self.number,
            gas_limit: self.gas_limit,
            gas_used: self.gas_used,
            timestamp: self.timestamp,
            extra_data: Bytes::copy_from_slice(self.core_root.as_slice()),
            mix_hash: self.parent_hash,
            nonce: Default::default(),
            base_fee_per_gas: Some(self.base_fee),
            withdrawals_root: Some(alloy_consensus::EMPTY_ROOT_HASH),
            blob_gas_used: Some(0),
            excess_blob_gas: Some(0),
            parent_beacon_block_root: Some(B256::ZERO),
            requests_hash: None,
        }
    }

    /// Sets the hash (keccak256 of the header's RLP) and the block's size from the
    /// transactions' envelopes.
    fn seal(mut self, envelopes: &[Vec<u8>]) -> BlockHeader {
        let eth = self.eth_header();
        self.size = block::block_size(&eth, envelopes);
        self.hash = eth.hash_slow();
        self
    }
}

/// What one block changed, to persist: final account infos (`None`: deleted), changed
/// storage slots, accounts whose storage was wiped first, and new code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateDiff {
    /// Accounts: info without code (`None`: removed).
    pub accounts: BTreeMap<Address, Option<AccountInfo>>,
    /// Accounts whose old storage is gone (created or self-destructed).
    pub wiped: BTreeSet<Address>,
    /// Storage slots (zero: removed).
    pub storage: BTreeMap<(Address, U256), U256>,
    /// Code by hash.
    pub code: BTreeMap<B256, Bytes>,
}

/// Accounts and storage slots a block's transactions loaded, touched or only read.
#[derive(Default)]
struct Loaded {
    accounts: BTreeSet<Address>,
    slots: BTreeSet<(Address, U256)>,
}

impl Loaded {
    fn note(&mut self, state: &EvmState) {
        for (&address, account) in state {
            self.accounts.insert(address);
            self.slots
                .extend(account.storage.keys().map(|&slot| (address, slot)));
        }
    }

    /// Drops from `db`'s cache what the block loaded that is not state: accounts that do
    /// not exist and storage slots holding zero. Reading them again gives the same answer
    /// (the cache falls back to its empty database), the commitment and snapshots skip
    /// them anyway, and without this every fresh address or empty slot a transaction reads
    /// would stay in memory for good.
    fn drop_empty_entries(&self, db: &mut CacheDB<EmptyDB>) {
        for address in &self.accounts {
            let absent = db
                .cache
                .accounts
                .get(address)
                .is_some_and(|a| matches!(a.account_state, AccountState::NotExisting));
            if absent {
                db.cache.accounts.remove(address);
            }
        }
        for (address, slot) in &self.slots {
            if let Some(account) = db.cache.accounts.get_mut(address) {
                if account.storage.get(slot).is_some_and(|v| v.is_zero()) {
                    account.storage.remove(slot);
                }
            }
        }
    }
}

impl StateDiff {
    fn absorb(&mut self, state: &EvmState) {
        for (&address, account) in state {
            if !account.is_touched() {
                continue;
            }
            if account.is_selfdestructed() || account.is_created() {
                self.wiped.insert(address);
                self.storage.retain(|(a, _), _| *a != address);
            }
            if account.is_selfdestructed() {
                self.accounts.insert(address, None);
                continue;
            }
            let mut info = account.info.clone();
            if let Some(code) = info.code.take() {
                if !code.is_empty() {
                    self.code.insert(info.code_hash, code.original_bytes());
                }
            }
            self.accounts.insert(address, Some(info));
            for (&slot, value) in &account.storage {
                if value.is_changed() {
                    self.storage.insert((address, slot), value.present_value);
                }
            }
        }
    }

    fn credit(&mut self, address: Address, info: &AccountInfo) {
        let mut info = info.clone();
        info.code = None;
        self.accounts.insert(address, Some(info));
    }
}

/// Everything one EVM block consumes.
#[derive(Clone, Debug, Default)]
pub struct BlockInput {
    /// Height: parent + 1.
    pub height: u64,
    /// Seconds (from the block producer's clock; an input, never read here).
    pub timestamp: u64,
    /// Core state root after the Core block of this height.
    pub core_root: B256,
    /// Core -> EVM credits, applied first.
    pub credits: Vec<Credit>,
    /// Core -> EVM mints of Core asset tokens, run as system transactions after the
    /// credits.
    pub mints: Vec<Mint>,
    /// Core -> EVM callbacks, run as system transactions after the mints, before user
    /// transactions.
    pub callbacks: Vec<Callback>,
    /// User transactions, in order.
    pub txs: Vec<SignedTx>,
}

/// Everything one EVM block produced.
#[derive(Clone, Debug)]
pub struct BlockOutput {
    /// The header.
    pub header: BlockHeader,
    /// Receipts in order.
    pub receipts: Vec<Receipt>,
    /// Transactions in order.
    pub txs: Vec<TxRecord>,
    /// CoreWriter actions of successful transactions, in (log index) order.
    pub actions: Vec<CoreAction>,
    /// Transactions not included, with why (invalid against the state at their turn; not
    /// expected after the pool's admission checks, but never silent: the node logs and
    /// remembers each).
    pub dropped: Vec<DroppedTx>,
    /// Transactions that did not fit the block's gas, to retry in the next block.
    pub deferred: Vec<SignedTx>,
    /// Callbacks not delivered because the block's callback gas budget was used up, in
    /// order: they go back to the front of the bridge queue.
    pub undelivered: Vec<Callback>,
    /// Mints not run because the block's system gas budget was used up, in order: they go
    /// back to the front of the bridge queue.
    pub undelivered_mints: Vec<Mint>,
    /// Credits and callbacks refused because they would break an invariant (a credit the
    /// escrow cannot cover, an invalid system transaction), with why. Never expected; the
    /// chain goes on without them.
    pub errors: Vec<String>,
    /// The state diff.
    pub diff: StateDiff,
    /// What the diff replaced: the state before the block, for what it changed (for reads
    /// at past blocks, [`crate::history`]).
    pub undo: StateUndo,
    /// The credits applied before the block's transactions, in order (refused ones left
    /// out): with the state before the block and its transactions, what re-executing it
    /// needs ([`crate::trace`]).
    pub credits: Vec<Credit>,
}

/// A transaction the block builder did not include and will not retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedTx {
    /// Its hash.
    pub hash: B256,
    /// Its sender.
    pub sender: Address,
    /// Its nonce.
    pub nonce: u64,
    /// Why: revm's refusal, typed as the pool's admission errors.
    pub reason: TxError,
}

/// A read-only call's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// Returned.
    Success {
        /// Return data.
        output: Bytes,
        /// Gas used.
        gas_used: u64,
    },
    /// Reverted.
    Revert {
        /// Revert data.
        output: Bytes,
        /// Gas used.
        gas_used: u64,
    },
    /// Halted (out of gas, invalid opcode...).
    Halt {
        /// Why.
        reason: String,
        /// Gas used.
        gas_used: u64,
    },
}

/// A call request (eth_call / eth_estimateGas).
#[derive(Clone, Debug, Default)]
pub struct CallRequest {
    /// Caller (zero address if absent).
    pub from: Option<Address>,
    /// Callee (`None`: contract creation).
    pub to: Option<Address>,
    /// Gas limit (block gas limit if absent).
    pub gas: Option<u64>,
    /// Value.
    pub value: U256,
    /// Calldata.
    pub data: Bytes,
    /// EIP-2930 access list (empty: none).
    pub access_list: AccessList,
}

/// The EVM state and chain head, owned by one thread.
pub struct Executor {
    config: EvmConfig,
    db: CacheDB<EmptyDB>,
    head: BlockHeader,
    /// The state trie of `db` (the head's `state_root`).
    commitment: StateCommitment,
    /// The block-hash window's digest ([`Executor::block_hash_digest`]).
    block_hash_sum: [u64; 4],
}

/// One (number, hash) of the block-hash window as four lanes of
/// `BLAKE3("nexus-blockhash-v1" || number u64 LE || hash)`, summed into the window's digest.
fn block_hash_term(number: u64, hash: &B256) -> [u64; 4] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"nexus-blockhash-v1");
    hasher.update(&number.to_le_bytes());
    hasher.update(hash.as_slice());
    let bytes = hasher.finalize();
    std::array::from_fn(|i| {
        u64::from_le_bytes(
            bytes.as_bytes()[i * 8..i * 8 + 8]
                .try_into()
                .expect("8 bytes"),
        )
    })
}

/// The window's digest: the lane-wise wrapping sum of its entries' terms.
fn block_hash_sum(hashes: &revm::primitives::U256Map<B256>) -> [u64; 4] {
    let mut sum = [0u64; 4];
    for (number, hash) in hashes {
        add_lanes(&mut sum, block_hash_term(number.to::<u64>(), hash), true);
    }
    sum
}

/// Adds (or subtracts) `term` to `sum`, lane by lane, wrapping.
fn add_lanes(sum: &mut [u64; 4], term: [u64; 4], add: bool) {
    for (lane, value) in sum.iter_mut().zip(term) {
        *lane = match add {
            true => lane.wrapping_add(value),
            false => lane.wrapping_sub(value),
        };
    }
}

/// Initial EVM state.
#[derive(Clone, Debug, Default)]
pub struct Genesis {
    /// Native balances.
    pub alloc: Vec<(Address, U256)>,
    /// Wei held by CoreWriter as escrow for the native asset already on Core at genesis
    /// (must equal Core's supply of the native asset times `wei_per_unit`).
    pub escrow_wei: U256,
    /// Seconds.
    pub timestamp: u64,
    /// The Core asset tokens (code, name, symbol, decimals; supply 0).
    pub tokens: Vec<TokenSpec>,
}

/// A system transaction of a block: a mint or a callback.
#[derive(Clone, Copy)]
enum SystemCall {
    Mint(Mint),
    Callback(Callback),
}

impl SystemCall {
    fn target(&self) -> Address {
        match self {
            SystemCall::Mint(mint) => mint.token(),
            SystemCall::Callback(callback) => callback.target,
        }
    }

    fn gas_limit(&self) -> u64 {
        match self {
            SystemCall::Mint(_) => system::MINT_GAS_LIMIT,
            SystemCall::Callback(_) => system::CALLBACK_GAS_LIMIT,
        }
    }

    fn calldata(&self) -> Vec<u8> {
        match self {
            SystemCall::Mint(mint) => mint.calldata(),
            SystemCall::Callback(callback) => callback.calldata(),
        }
    }
}

impl Executor {
    /// A chain at its genesis block (height 0).
    pub fn genesis(config: EvmConfig, genesis: &Genesis) -> (Executor, BlockOutput) {
        let mut db = CacheDB::new(EmptyDB::new());
        let mut diff = StateDiff::default();
        let marker = Bytecode::new_raw(Bytes::from_static(&system::PRECOMPILE_MARKER_CODE));
        let mut install = |db: &mut CacheDB<EmptyDB>, address, balance| {
            let info = AccountInfo {
                balance,
                nonce: 1,
                code_hash: marker.hash_slow(),
                code: Some(marker.clone()),
                ..Default::default()
            };
            db.insert_account_info(address, info.clone());
            diff.code.insert(info.code_hash, marker.original_bytes());
            diff.credit(address, &info);
        };
        for address in system::READ_PRECOMPILES {
            install(&mut db, address, U256::ZERO);
        }
        install(&mut db, system::CORE_WRITER, genesis.escrow_wei);
        let token_code = Bytecode::new_raw(token::runtime_code());
        for spec in &genesis.tokens {
            let info = AccountInfo {
                nonce: 1,
                code_hash: token_code.hash_slow(),
                code: Some(token_code.clone()),
                ..Default::default()
            };
            db.insert_account_info(spec.address(), info.clone());
            diff.code
                .insert(info.code_hash, token_code.original_bytes());
            diff.credit(spec.address(), &info);
            for (slot, value) in spec.genesis_storage() {
                db.insert_account_storage(spec.address(), slot, value)
                    .expect("an in-memory database");
                diff.storage.insert((spec.address(), slot), value);
            }
        }
        for &(address, balance) in &genesis.alloc {
            let info = AccountInfo {
                balance,
                ..Default::default()
            };
            db.insert_account_info(address, info.clone());
            diff.credit(address, &info);
        }
        let mut commitment = StateCommitment::new();
        let header = BlockHeader {
            number: 0,
            hash: B256::ZERO,
            parent_hash: B256::ZERO,
            timestamp: genesis.timestamp,
            gas_used: 0,
            gas_limit: config.block_gas_limit,
            base_fee: config.base_fee_wei,
            state_root: commitment.apply(&diff),
            core_root: B256::ZERO,
            logs_bloom: Bloom::ZERO,
            tx_hashes: Vec::new(),
            transactions_root: block::transactions_root(&[]),
            receipts_root: block::receipts_root(&[]),
            beneficiary: config.coinbase,
            size: 0,
        }
        .seal(&[]);
        db.cache.block_hashes.insert(U256::ZERO, header.hash);
        let output = BlockOutput {
            header: header.clone(),
            receipts: Vec::new(),
            txs: Vec::new(),
            actions: Vec::new(),
            dropped: Vec::new(),
            deferred: Vec::new(),
            undelivered: Vec::new(),
            undelivered_mints: Vec::new(),
            errors: Vec::new(),
            diff,
            undo: StateUndo::default(),
            credits: Vec::new(),
        };
        (
            Executor {
                block_hash_sum: block_hash_term(0, &header.hash),
                config,
                db,
                head: header,
                commitment,
            },
            output,
        )
    }

    /// Records the head's hash for `BLOCKHASH` (in the state cache's block hashes, which
    /// revm reads) and forgets the one that left the window, so the map holds at most
    /// [`BLOCK_HASH_WINDOW`] hashes.
    fn remember_head_hash(&mut self) {
        let hashes = &mut self.db.cache.block_hashes;
        hashes.insert(U256::from(self.head.number), self.head.hash);
        let term = block_hash_term(self.head.number, &self.head.hash);
        add_lanes(&mut self.block_hash_sum, term, true);
        let gone = self.head.number.checked_sub(BLOCK_HASH_WINDOW);
        if let Some((number, hash)) = gone.and_then(|n| Some((n, hashes.remove(&U256::from(n))?))) {
            add_lanes(
                &mut self.block_hash_sum,
                block_hash_term(number, &hash),
                false,
            );
        }
    }

    /// A digest of the block-hash window (every (number, hash) `BLOCKHASH` sees, the head's
    /// included), kept up to date in O(1) per block: the lane-wise sum of
    /// `BLAKE3("nexus-blockhash-v1" || number u64 LE || hash)` over the window, four
    /// little-endian `u64`s. The execution root covers it.
    pub fn block_hash_digest(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        for (lane, value) in self.block_hash_sum.iter().enumerate() {
            bytes[lane * 8..lane * 8 + 8].copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    /// The hashes `BLOCKHASH` sees after the head (the head's and those before it in the
    /// window), oldest first, ending with the head's.
    pub fn recent_block_hashes(&self) -> Vec<B256> {
        let hashes = &self.db.cache.block_hashes;
        let first = self.head.number.saturating_sub(BLOCK_HASH_WINDOW - 1);
        let mut recent: Vec<B256> = (first..=self.head.number)
            .rev()
            .map_while(|number| hashes.get(&U256::from(number)).copied())
            .collect();
        recent.reverse();
        recent
    }

    /// An executor over state loaded from storage, at `head` (builds the state trie: O(state)).
    /// `db`'s block hashes are the ones [`Executor::recent_block_hashes`] gave at `head`.
    pub fn from_parts(config: EvmConfig, db: CacheDB<EmptyDB>, head: BlockHeader) -> Executor {
        let commitment = StateCommitment::from_state(&db);
        Executor {
            block_hash_sum: block_hash_sum(&db.cache.block_hashes),
            config,
            db,
            head,
            commitment,
        }
    }

    /// The state root of the in-memory state (the head's `state_root` once a block ran).
    pub fn state_root(&self) -> B256 {
        self.commitment.root()
    }

    /// The state trie (proofs: `eth_getProof`).
    pub fn commitment(&self) -> &StateCommitment {
        &self.commitment
    }

    /// The in-memory state (read-only: persistence and from-scratch checks).
    pub fn db(&self) -> &CacheDB<EmptyDB> {
        &self.db
    }

    /// The chain parameters.
    pub fn config(&self) -> &EvmConfig {
        &self.config
    }

    /// The newest block.
    pub fn head(&self) -> &BlockHeader {
        &self.head
    }

    /// An account's info (balance, nonce, code hash); default if it does not exist.
    pub fn account(&mut self, address: Address) -> AccountInfo {
        self.db
            .basic(address)
            .expect("in-memory state cannot fail")
            .unwrap_or_default()
    }

    /// An account's info without touching the cache (`&self`: validation reads state while
    /// others may hold it); default if it does not exist.
    pub fn peek_account(&self, address: Address) -> AccountInfo {
        self.db
            .cache
            .accounts
            .get(&address)
            .map(|account| account.info.clone())
            .unwrap_or_default()
    }

    /// An account's code.
    pub fn code(&mut self, address: Address) -> Bytes {
        let info = self.account(address);
        match info.code {
            Some(code) => code.original_bytes(),
            None => self
                .db
                .code_by_hash(info.code_hash)
                .map(|c| c.original_bytes())
                .unwrap_or_default(),
        }
    }

    /// A storage slot.
    pub fn storage(&mut self, address: Address, slot: U256) -> U256 {
        self.db
            .storage(address, slot)
            .expect("in-memory state cannot fail")
    }

    /// The checks revm runs on a transaction before executing it that need no state
    /// (chain id, fee fields, gas limit against the block, intrinsic gas, initcode size),
    /// run by revm's own validation against the next block's environment. The pool runs
    /// them at admission so that a transaction it accepts is not refused by the block
    /// builder for any of them; the state checks (nonce, funds, EIP-3607) are the pool's,
    /// since they depend on the transactions pooled before it.
    pub fn check_admission(&self, tx: &SignedTx) -> Result<(), TxError> {
        let refusal = |e: InvalidTransaction| tx.refusal(&e, &self.config);
        let cfg = self.cfg();
        let eip7623_disabled = cfg.is_eip7623_disabled();
        let gas_cap = cfg.tx_gas_limit_cap();
        let ctx = Context::mainnet()
            .with_db(EmptyDB::new())
            .with_cfg(cfg)
            .with_block(self.block_env(self.head.number + 1, self.head.timestamp))
            .with_tx(tx.tx_env());
        revm::handler::validation::validate_tx_env(ctx, SPEC).map_err(refusal)?;
        revm::handler::validation::validate_initial_tx_gas(
            tx.tx_env(),
            SPEC,
            eip7623_disabled,
            false, // EIP-8037 (Amsterdam) is not in Cancun.
            gas_cap,
            None,
        )
        .map_err(refusal)?;
        Ok(())
    }

    fn block_env(&self, height: u64, timestamp: u64) -> BlockEnv {
        self.block_env_after(height, timestamp, self.head.hash)
    }

    /// The environment of block `height`, whose parent's hash is `parent` (`PREVRANDAO`).
    pub(crate) fn block_env_after(&self, height: u64, timestamp: u64, parent: B256) -> BlockEnv {
        let mut block = BlockEnv::default();
        block.number = U256::from(height);
        block.beneficiary = self.config.coinbase;
        block.timestamp = U256::from(timestamp);
        block.gas_limit = self.config.block_gas_limit;
        block.basefee = self.config.base_fee_wei;
        block.difficulty = U256::ZERO;
        block.prevrandao = Some(parent);
        block.set_blob_excess_gas_and_price(0, BLOB_BASE_FEE_UPDATE_FRACTION_CANCUN);
        block
    }

    pub(crate) fn cfg(&self) -> CfgEnv {
        let mut cfg = CfgEnv::new_with_spec(SPEC);
        cfg.chain_id = self.config.chain_id;
        cfg.max_blobs_per_tx = Some(0);
        cfg
    }

    /// Executes one block on top of the head. Pure: same state + inputs, same outputs.
    pub fn execute_block(&mut self, core: &dyn CoreView, input: BlockInput) -> BlockOutput {
        assert_eq!(
            input.height,
            self.head.number + 1,
            "blocks must be consecutive"
        );
        let mut diff = StateDiff::default();
        let mut undo = StateUndo::default();
        let mut loaded = Loaded::default();
        let mut errors = Vec::new();
        let mut credits = Vec::new();
        // Credits: CoreWriter's escrow pays out; conservation holds by construction. A
        // credit the escrow cannot cover would mint wei: it is refused (never a panic).
        for credit in &input.credits {
            let mut escrow = self.account(system::CORE_WRITER);
            if escrow.balance < credit.wei {
                let error = format!(
                    "credit refused: escrow {} cannot cover {credit:?}",
                    escrow.balance
                );
                eprintln!("nexus-evm: block {}: {error}", input.height);
                errors.push(error);
                continue;
            }
            escrow.balance -= credit.wei;
            undo.note_account(&self.db, system::CORE_WRITER);
            undo.note_account(&self.db, credit.to);
            self.db
                .insert_account_info(system::CORE_WRITER, escrow.clone());
            diff.credit(system::CORE_WRITER, &escrow);
            let mut to = self.account(credit.to);
            to.balance += credit.wei;
            self.db.insert_account_info(credit.to, to.clone());
            diff.credit(credit.to, &to);
            credits.push(*credit);
        }

        let config = self.config.clone();
        let block_env = self.block_env(input.height, input.timestamp);
        let cfg = self.cfg();
        let ctx = Context::mainnet()
            .with_db(&mut self.db)
            .with_cfg(cfg)
            .with_block(block_env);
        let precompiles = NexusPrecompiles::new(SPEC, core, config.wei_per_unit);
        let mut evm = ctx.build_mainnet().with_precompiles(precompiles);

        let mut acc = Accumulator {
            height: input.height,
            wei_per_unit: config.wei_per_unit,
            topic: action_topic(),
            cumulative: 0,
            log_index: 0,
            bloom: Bloom::ZERO,
            receipts: Vec::new(),
            actions: Vec::new(),
        };
        let mut txs = Vec::new();
        let mut envelopes = Vec::new();
        let mut dropped = Vec::new();
        let mut deferred = Vec::new();

        let mut undelivered = Vec::new();
        let mut undelivered_mints = Vec::new();
        // System transactions: mints of Core asset tokens, then callbacks to contracts (no
        // fee, no nonce, capped gas). They may use at most the block's gas minus the user
        // reserve; the rest wait, in order.
        let callback_budget = config
            .block_gas_limit
            .saturating_sub(config.block_gas_limit / system::USER_GAS_RESERVE_DIVISOR);
        evm.ctx.modify_cfg(|cfg| {
            cfg.disable_nonce_check = true;
            cfg.disable_base_fee = true;
        });
        let calls = (input.mints.iter().map(|m| SystemCall::Mint(*m)))
            .chain(input.callbacks.iter().map(|c| SystemCall::Callback(*c)));
        for call in calls {
            let waiting = !undelivered.is_empty() || !undelivered_mints.is_empty();
            if waiting || acc.cumulative + call.gas_limit() > callback_budget {
                match call {
                    SystemCall::Mint(mint) => undelivered_mints.push(mint),
                    SystemCall::Callback(callback) => undelivered.push(callback),
                }
                continue;
            }
            let target = call.target();
            let has_code = evm
                .ctx
                .journaled_state
                .database
                .basic(target)
                .ok()
                .flatten()
                .is_some_and(|info| !info.is_empty_code_hash());
            if !has_code {
                if let SystemCall::Mint(mint) = call {
                    // Never expected: the bridge mints only tokens of the genesis.
                    let error = format!("mint {mint:?} not run: no token at {target}");
                    eprintln!("nexus-evm: block {}: {error}", input.height);
                    errors.push(error);
                }
                continue;
            }
            let mut tx = TxEnv::default();
            tx.caller = system::SYSTEM_ADDRESS;
            tx.gas_limit = call.gas_limit();
            tx.gas_price = 0;
            tx.kind = TxKind::Call(target);
            tx.data = call.calldata().into();
            tx.chain_id = Some(config.chain_id);
            let system = SystemTx {
                chain_id: config.chain_id,
                block_number: input.height,
                index: txs.len() as u64,
                to: target,
                gas_limit: tx.gas_limit,
                input: &tx.data,
            };
            let envelope = system.encoded_2718();
            let hash = keccak256(&envelope);
            let record = TxRecord {
                hash,
                from: system::SYSTEM_ADDRESS,
                to: Some(target),
                nonce: 0,
                gas_limit: tx.gas_limit,
                gas_price: Some(0),
                max_fee_per_gas: 0,
                max_priority_fee_per_gas: None,
                value: U256::ZERO,
                input: tx.data.clone(),
                tx_type: SYSTEM_TX_TYPE,
                chain_id: Some(config.chain_id),
                y_parity: false,
                r: U256::ZERO,
                s: U256::ZERO,
                block_number: input.height,
                index: txs.len() as u64,
                access_list: Vec::new(),
            };
            match evm.transact(tx) {
                Ok(out) => {
                    if let (SystemCall::Mint(mint), false) = (call, out.result.is_success()) {
                        // Never expected: the token's mint does not revert for the chain.
                        let error = format!("mint {mint:?} failed: {:?}", out.result);
                        eprintln!("nexus-evm: block {}: {error}", input.height);
                        errors.push(error);
                    }
                    diff.absorb(&out.state);
                    undo.note(evm.ctx.journaled_state.database, &out.state);
                    loaded.note(&out.state);
                    evm.commit(out.state);
                    txs.push(record);
                    envelopes.push(envelope);
                    acc.finish(
                        out.result,
                        hash,
                        system::SYSTEM_ADDRESS,
                        Some(target),
                        0,
                        SYSTEM_TX_TYPE,
                    );
                }
                Err(error) => {
                    // Cannot happen for a valid config; never panic the chain thread.
                    let error = match call {
                        SystemCall::Mint(mint) => format!("mint {mint:?} not run: {error}"),
                        SystemCall::Callback(c) => format!("callback {c:?} not run: {error}"),
                    };
                    eprintln!("nexus-evm: block {}: {error}", input.height);
                    errors.push(error);
                }
            }
        }
        evm.ctx.modify_cfg(|cfg| {
            cfg.disable_nonce_check = false;
            cfg.disable_base_fee = false;
        });

        // User transactions. A sender's transactions are in nonce order; once one of them
        // is deferred, its later ones are deferred too (tried now, they would fail their
        // nonce check), and once one is dropped, its later ones are dropped with it (their
        // nonces can no longer be the next): the pool's pending nonce stays state nonce +
        // the sender's pooled count.
        let mut deferred_senders = BTreeSet::new();
        let mut dropped_senders: BTreeMap<Address, B256> = BTreeMap::new();
        for tx in input.txs {
            if let Some(&earlier) = dropped_senders.get(&tx.sender) {
                dropped.push(DroppedTx {
                    hash: tx.hash,
                    sender: tx.sender,
                    nonce: tx.nonce(),
                    reason: TxError::FollowsDropped(earlier),
                });
                continue;
            }
            let gas_limit = tx.envelope.gas_limit();
            if deferred_senders.contains(&tx.sender)
                || acc.cumulative + gas_limit > config.block_gas_limit
            {
                deferred_senders.insert(tx.sender);
                deferred.push(tx);
                continue;
            }
            match evm.transact(tx.tx_env()) {
                Ok(out) => {
                    diff.absorb(&out.state);
                    undo.note(evm.ctx.journaled_state.database, &out.state);
                    loaded.note(&out.state);
                    evm.commit(out.state);
                    let price = tx.envelope.effective_gas_price(Some(config.base_fee_wei));
                    txs.push(tx.record(input.height, txs.len() as u64));
                    envelopes.push(tx.envelope.encoded_2718());
                    acc.finish(
                        out.result,
                        tx.hash,
                        tx.sender,
                        tx.envelope.to(),
                        price,
                        tx.envelope.tx_type() as u8,
                    );
                }
                Err(error) => {
                    let reason = match &error {
                        EVMError::Transaction(invalid) => tx.refusal(invalid, &config),
                        other => TxError::Invalid(other.to_string()),
                    };
                    dropped_senders.insert(tx.sender, tx.hash);
                    dropped.push(DroppedTx {
                        hash: tx.hash,
                        sender: tx.sender,
                        nonce: tx.nonce(),
                        reason,
                    });
                }
            }
        }
        drop(evm);
        loaded.drop_empty_entries(&mut self.db);

        let state_root = self.commitment.apply(&diff);
        let header = BlockHeader {
            number: input.height,
            hash: B256::ZERO,
            parent_hash: self.head.hash,
            timestamp: input.timestamp,
            gas_used: acc.cumulative,
            gas_limit: config.block_gas_limit,
            base_fee: config.base_fee_wei,
            state_root,
            core_root: input.core_root,
            logs_bloom: acc.bloom,
            tx_hashes: txs.iter().map(|t| t.hash).collect(),
            transactions_root: block::transactions_root(&envelopes),
            receipts_root: block::receipts_root(&acc.receipts),
            beneficiary: config.coinbase,
            size: 0,
        }
        .seal(&envelopes);
        self.head = header.clone();
        self.remember_head_hash();
        BlockOutput {
            header,
            receipts: acc.receipts,
            txs,
            actions: acc.actions,
            dropped,
            deferred,
            undelivered,
            undelivered_mints,
            errors,
            diff,
            undo,
            credits,
        }
    }

    /// Runs a call on top of the head without changing state (eth_call). Fees, nonce and
    /// balance checks are off, as in geth's eth_call.
    pub fn call(&mut self, core: &dyn CoreView, request: &CallRequest) -> CallOutcome {
        let (cfg, block_env) = self.call_env();
        let tx = self.call_tx(request);
        let precompiles = NexusPrecompiles::new(SPEC, core, self.config.wei_per_unit);
        // Read-only: what the call loads (accounts that do not exist, empty slots) must not
        // stay in the state's cache, or calls would grow it without bound.
        let ctx = Context::mainnet()
            .with_db(WrapDatabaseRef(&self.db))
            .with_cfg(cfg)
            .with_block(block_env);
        let mut evm = ctx.build_mainnet().with_precompiles(precompiles);
        call_outcome(evm.transact(tx).map(|out| out.result))
    }

    /// Runs a call on the state after a past block (`past`, the state after `header`)
    /// without changing anything; as [`Executor::call`] otherwise (the block environment
    /// is the block after `header`).
    pub fn call_at(
        &self,
        core: &dyn CoreView,
        past: &PastState<'_>,
        header: &BlockHeader,
        request: &CallRequest,
    ) -> CallOutcome {
        let (cfg, block_env) = self.call_env_after(header);
        let tx = self.call_tx(request);
        let precompiles = NexusPrecompiles::new(SPEC, core, self.config.wei_per_unit);
        let ctx = Context::mainnet()
            .with_db(WrapDatabaseRef(past))
            .with_cfg(cfg)
            .with_block(block_env);
        let mut evm = ctx.build_mainnet().with_precompiles(precompiles);
        call_outcome(evm.transact(tx).map(|out| out.result))
    }

    /// [`Executor::estimate_gas`] on the state after a past block.
    pub fn estimate_gas_at(
        &self,
        core: &dyn CoreView,
        past: &PastState<'_>,
        header: &BlockHeader,
        request: &CallRequest,
    ) -> Result<u64, CallOutcome> {
        let cap = request.gas.unwrap_or(self.config.block_gas_limit);
        estimate(cap, request, |r| self.call_at(core, past, header, r))
    }

    /// The access list of a call (eth_createAccessList), as geth computes it: run the call
    /// with the list found so far, trace what it touches ([`AccessListInspector`]), until
    /// the list stops changing (at most [`ACCESS_LIST_ROUNDS`] runs). The outcome's gas is
    /// that of the call with the returned list.
    pub fn create_access_list(
        &mut self,
        core: &dyn CoreView,
        request: &CallRequest,
    ) -> (AccessList, CallOutcome) {
        let excluded = self.access_list_excluded(request);
        let mut list = request.access_list.clone();
        let mut outcome = CallOutcome::Halt {
            reason: "not run".into(),
            gas_used: 0,
        };
        let mut with_list = request.clone();
        for _ in 0..ACCESS_LIST_ROUNDS {
            with_list.access_list = list.clone();
            let tx = self.call_tx(&with_list);
            let mut tracer = AccessListInspector::new(&list, excluded.clone());
            outcome = self.inspect_call(core, tx, &mut tracer);
            let found = tracer.access_list();
            if found == list {
                break;
            }
            list = found;
        }
        (list, outcome)
    }

    /// A call traced by `inspector`, without changing state.
    fn inspect_call(
        &mut self,
        core: &dyn CoreView,
        tx: TxEnv,
        inspector: &mut AccessListInspector,
    ) -> CallOutcome {
        let (cfg, block_env) = self.call_env();
        let precompiles = NexusPrecompiles::new(SPEC, core, self.config.wei_per_unit);
        let ctx = Context::mainnet()
            .with_db(WrapDatabaseRef(&self.db))
            .with_cfg(cfg)
            .with_block(block_env);
        let mut evm = ctx
            .build_mainnet_with_inspector(inspector)
            .with_precompiles(precompiles);
        call_outcome(evm.inspect_tx(tx).map(|out| out.result))
    }

    /// What an access list never names: the sender, the recipient (or the contract a
    /// creation makes) and the precompiles, Nexus's included (all warm anyway).
    fn access_list_excluded(&mut self, request: &CallRequest) -> BTreeSet<Address> {
        let from = request.from.unwrap_or_default();
        let to = match request.to {
            Some(to) => to,
            None => from.create(self.account(from).nonce),
        };
        let mut excluded: BTreeSet<Address> = [from, to].into();
        excluded.extend(NexusPrecompiles::addresses(SPEC));
        excluded
    }

    /// The configuration and block of a call: the next block's, with fee, nonce and
    /// balance checks off.
    fn call_env(&self) -> (CfgEnv, BlockEnv) {
        self.call_env_after(&self.head)
    }

    /// The configuration and block of a call on the state after block `header`: the block
    /// after it, as for the head.
    pub(crate) fn call_env_after(&self, header: &BlockHeader) -> (CfgEnv, BlockEnv) {
        let block_env = self.block_env_after(header.number + 1, header.timestamp, header.hash);
        let mut cfg = self.cfg();
        cfg.disable_nonce_check = true;
        cfg.disable_base_fee = true;
        cfg.disable_balance_check = true;
        (cfg, block_env)
    }

    /// The transaction of a call request (zero gas price; the block's gas limit by
    /// default).
    pub(crate) fn call_tx(&self, request: &CallRequest) -> TxEnv {
        let mut tx = TxEnv::default();
        tx.caller = request.from.unwrap_or_default();
        tx.gas_limit = request.gas.unwrap_or(self.config.block_gas_limit);
        tx.gas_price = 0;
        tx.kind = match request.to {
            Some(to) => TxKind::Call(to),
            None => TxKind::Create,
        };
        tx.value = request.value;
        tx.data = request.data.clone();
        tx.chain_id = Some(self.config.chain_id);
        if !request.access_list.is_empty() {
            // revm applies an access list to EIP-2930 and later types only.
            tx.tx_type = 1;
            tx.access_list = request.access_list.clone();
        }
        tx
    }

    /// The smallest gas limit under which the call succeeds (eth_estimateGas): the gas
    /// used with the block's limit, then a binary search up to that limit.
    pub fn estimate_gas(
        &mut self,
        core: &dyn CoreView,
        request: &CallRequest,
    ) -> Result<u64, CallOutcome> {
        let cap = request.gas.unwrap_or(self.config.block_gas_limit);
        estimate(cap, request, |r| self.call(core, r))
    }
}

/// The smallest gas limit up to `cap` under which `run` succeeds: the gas used with `cap`,
/// then a binary search (at most 64 probes).
fn estimate(
    cap: u64,
    request: &CallRequest,
    mut run: impl FnMut(&CallRequest) -> CallOutcome,
) -> Result<u64, CallOutcome> {
    let mut probe = request.clone();
    probe.gas = Some(cap);
    let used = match run(&probe) {
        CallOutcome::Success { gas_used, .. } => gas_used,
        failure => return Err(failure),
    };
    let (mut low, mut high) = (used.max(21_000), cap);
    probe.gas = Some(low);
    if matches!(run(&probe), CallOutcome::Success { .. }) {
        return Ok(low);
    }
    // Invariant: fails at `low`, succeeds at `high`.
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        probe.gas = Some(mid);
        if matches!(run(&probe), CallOutcome::Success { .. }) {
            high = mid;
        } else {
            low = mid;
        }
    }
    Ok(high)
}

/// A call's result as an outcome (an error of the environment is a halt).
fn call_outcome<E: std::fmt::Display>(result: Result<ExecutionResult, E>) -> CallOutcome {
    match result {
        Ok(result) => {
            let gas_used = result.tx_gas_used();
            match result {
                ExecutionResult::Success { output, .. } => CallOutcome::Success {
                    output: output.into_data(),
                    gas_used,
                },
                ExecutionResult::Revert { output, .. } => CallOutcome::Revert { output, gas_used },
                ExecutionResult::Halt { reason, .. } => CallOutcome::Halt {
                    reason: format!("{reason:?}"),
                    gas_used,
                },
            }
        }
        Err(error) => CallOutcome::Halt {
            reason: error.to_string(),
            gas_used: 0,
        },
    }
}

/// Receipts, logs and actions of one block as its transactions finish.
struct Accumulator {
    height: u64,
    wei_per_unit: U256,
    topic: B256,
    cumulative: u64,
    log_index: u64,
    bloom: Bloom,
    receipts: Vec<Receipt>,
    actions: Vec<CoreAction>,
}

impl Accumulator {
    /// Records a finished transaction: receipt, logs, and the CoreWriter actions of a
    /// successful one (a failed transaction's logs are gone, so are its actions).
    fn finish(
        &mut self,
        result: ExecutionResult,
        hash: B256,
        from: Address,
        to: Option<Address>,
        price: u128,
        tx_type: u8,
    ) {
        let gas_used = result.tx_gas_used();
        self.cumulative += gas_used;
        let status = result.is_success();
        let (logs, output, created) = match result {
            ExecutionResult::Success { logs, output, .. } => match output {
                Output::Create(bytes, address) => (logs, bytes, address),
                Output::Call(bytes) => (logs, bytes, None),
            },
            ExecutionResult::Revert { output, .. } => (Vec::new(), output, None),
            ExecutionResult::Halt { .. } => (Vec::new(), Bytes::new(), None),
        };
        let mut tx_bloom = Bloom::ZERO;
        let mut records = Vec::with_capacity(logs.len());
        for log in logs {
            tx_bloom.accrue_log(&log);
            if status
                && log.address == system::CORE_WRITER
                && log.topics().first() == Some(&self.topic)
            {
                if let Some(action) =
                    decode_action_log(&log, self.height, self.log_index, self.wei_per_unit)
                {
                    self.actions.push(action);
                }
            }
            records.push(LogRecord {
                address: log.address,
                topics: log.topics().to_vec(),
                data: log.data.data.clone(),
                log_index: self.log_index,
            });
            self.log_index += 1;
        }
        self.bloom.accrue_bloom(&tx_bloom);
        self.receipts.push(Receipt {
            tx_hash: hash,
            tx_index: self.receipts.len() as u64,
            block_number: self.height,
            from,
            to,
            contract_address: created,
            gas_used,
            cumulative_gas_used: self.cumulative,
            effective_gas_price: price,
            status,
            logs: records,
            logs_bloom: tx_bloom,
            tx_type,
            output,
        });
    }
}

/// The action of a CoreWriter log (`CoreAction(address indexed sender, uint256 value,
/// bytes action)`), acting for `sender` (for a token's `assetToCore`, for the user it
/// names); `None` if it does not decode (cannot happen for CoreWriter's own logs,
/// which are validated before they are written).
fn decode_action_log(
    log: &Log,
    height: u64,
    log_index: u64,
    wei_per_unit: U256,
) -> Option<CoreAction> {
    let sender = Address::from_slice(&log.topics().get(1)?.as_slice()[12..]);
    let data = &log.data.data;
    let value = U256::from_be_slice(data.get(..32)?);
    let len = U256::from_be_slice(data.get(64..96)?).to::<usize>();
    let calldata = data.get(96..96 + len)?;
    let (kind, sender) = ActionKind::decode_from(sender, calldata, value, wei_per_unit).ok()?;
    Some(CoreAction {
        id: (height << 24) | log_index,
        sender,
        kind,
    })
}
