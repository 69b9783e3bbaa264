//! The execution root and its four parts (docs/execution.md, "Execution root").
//!
//! `root = BLAKE3("nexus-execution-v2" || core_root || evm_root || queue_root || chain_root)`:
//!
//! - `core_root = BLAKE3("nexus-core-v2" || engine state root || nonce root ||
//!   co-processors digest)`. The engine (the CLOB co-processor) and nonce roots are
//!   incremental multiset hashes: a block costs what it changed (touched orders and
//!   accounts, accounts whose nonces it used). The co-processors digest is
//!   `BLAKE3("nexus-coprocessors-v1" || CLOB version u32 || CLOB active u8 || count u64 ||
//!   each other co-processor's commitment in id order)`, a commitment being
//!   `BLAKE3("nexus-coprocessor-v1" || id u32 || version u32 || code hash || active u8 ||
//!   its own state root)` (`coprocessor::Coprocessor::root`).
//! - `evm_root`: Ethereum's state root of the EVM state (the Merkle-Patricia trie of
//!   accounts and their storage, `evm::commitment`), the EVM head's `stateRoot`; updated from
//!   each EVM block's state diff (cost: about `16 * depth` look-ups and a branch hash per
//!   level for each changed account and slot). A function of the EVM state alone: a block
//!   that changes no EVM state keeps it.
//! - `queue_root = BLAKE3("nexus-queue-v1" || registry sum || pending actions ||
//!   pending callbacks || pending credits || pending mints || dropped callbacks)`: the
//!   registry (Core account -> owning EVM address; entries are only ever added) as an
//!   incremental multiset
//!   sum; the queues hashed whole, each prefixed by its length (cost: the queues, bounded by
//!   one block's actions and `MAX_PENDING_CALLBACKS` callbacks; usually small).
//! - `chain_root = BLAKE3("nexus-chain-v3" || config digest || height || last block time
//!   ms || consensus digest || EVM block-hash digest)`: what the execution holds that is
//!   neither Core nor EVM state. The block-hash digest covers the hashes `BLOCKHASH` sees
//!   (the last 256 EVM blocks', the head's included; `evm::executor::Executor::
//!   block_hash_digest`, a multiset sum kept in O(1) per block), so a snapshot cannot carry
//!   other hashes (or another EVM head) than the chain's without another root.
//!   The config digest covers the chain ids, the faucet and feeder keys, the engine limits,
//!   the EVM parameters, the funding interval and the Core gas limit (computed once at
//!   genesis), so chains configured differently never share a root. The consensus digest is
//!   the consensus layer's state after the block (`consensus::chain::ChainState::hash`:
//!   validator set, stakes, jailing, governance proposals and votes, the co-processor
//!   registry, action nonces), handed over with each block ([`crate::ConsensusState`]).
//!   O(1) per block here; the host computes the digest from
//!   the whole consensus state (finished governance proposals are pruned after
//!   `proposal_retention_blocks`).

use engine::AccountId;

use crate::{Execution, ExecutionConfig};
use alloy_primitives::Address;

/// The four parts of the execution root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roots {
    /// Engine state root, nonce root and the other co-processors' roots.
    pub core: [u8; 32],
    /// EVM accounts and storage.
    pub evm: [u8; 32],
    /// The cross-domain queue and the EVM-address registry.
    pub queue: [u8; 32],
    /// Height, time, the genesis configuration and the consensus layer's state.
    pub chain: [u8; 32],
}

impl Roots {
    /// The execution root these parts make.
    pub fn combined(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"nexus-execution-v2");
        hasher.update(&self.core);
        hasher.update(&self.evm);
        hasher.update(&self.queue);
        hasher.update(&self.chain);
        *hasher.finalize().as_bytes()
    }
}

fn lanes(hasher: &blake3::Hasher) -> [u64; 4] {
    let bytes = hasher.finalize();
    std::array::from_fn(|i| {
        u64::from_le_bytes(bytes.as_bytes()[i * 8..i * 8 + 8].try_into().expect("8"))
    })
}

fn sum_bytes(sum: &[u64; 4]) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for (lane, value) in sum.iter().enumerate() {
        bytes[lane * 8..lane * 8 + 8].copy_from_slice(&value.to_le_bytes());
    }
    bytes
}

/// The digest of a chain's genesis configuration (part of every chain root).
pub(crate) fn config_digest(config: &ExecutionConfig) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"nexus-config-v1");
    hasher.update(&config.chain_id);
    let mut faucets = config.faucets.clone();
    faucets.sort_unstable();
    faucets.dedup();
    for keys in [&faucets, &config.feeders] {
        hasher.update(&(keys.len() as u64).to_le_bytes());
        for key in keys {
            hasher.update(key);
        }
    }
    hasher.update(&config.engine.max_resting_orders.to_le_bytes());
    hasher.update(&config.engine.max_open_orders_per_account.to_le_bytes());
    let evm = &config.evm.config;
    hasher.update(&evm.chain_id.to_le_bytes());
    hasher.update(&evm.base_fee_wei.to_le_bytes());
    hasher.update(&evm.block_gas_limit.to_le_bytes());
    hasher.update(evm.coinbase.as_slice());
    hasher.update(&evm.wei_per_unit.to_be_bytes::<32>());
    hasher.update(&config.evm.native_asset.to_le_bytes());
    hasher.update(&config.funding_interval_s.to_le_bytes());
    hasher.update(&config.core_gas_limit.to_le_bytes());
    *hasher.finalize().as_bytes()
}

impl Execution {
    /// Recomputes one account's nonce digest into the nonce sum.
    pub(crate) fn refresh_nonce_digest(&mut self, account: AccountId) {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"nexus-nonces-v1");
        hasher.update(&account.to_le_bytes());
        for nonce in self
            .nonces
            .get(&account)
            .map_or(&[][..], transactions::NonceSet::used)
        {
            hasher.update(&nonce.to_le_bytes());
        }
        let digest = lanes(&hasher);
        let old = self.nonce_digests.insert(account, digest).unwrap_or([0; 4]);
        for lane in 0..4 {
            self.nonce_sum[lane] = self.nonce_sum[lane]
                .wrapping_sub(old[lane])
                .wrapping_add(digest[lane]);
        }
    }

    /// Adds a new registry entry (Core account -> EVM address) to the registry sum.
    pub(crate) fn note_claim(&mut self, account: AccountId, owner: Address) {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"nexus-registry-v1");
        hasher.update(&account.to_le_bytes());
        hasher.update(owner.as_slice());
        for (lane, value) in self.registry_sum.iter_mut().zip(lanes(&hasher)) {
            *lane = lane.wrapping_add(value);
        }
    }

    /// The nonce root: BLAKE3 of the lane-wise sum of every account's nonce digest.
    pub fn nonce_root(&self) -> [u8; 32] {
        *blake3::hash(&sum_bytes(&self.nonce_sum)).as_bytes()
    }

    /// `BLAKE3("nexus-core-v2" || engine state root || nonce root || co-processors
    /// digest)`.
    pub fn core_root(&mut self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"nexus-core-v2");
        hasher.update(&self.engine.commit());
        hasher.update(&self.nonce_root());
        hasher.update(&self.coprocessors_digest());
        *hasher.finalize().as_bytes()
    }

    /// The EVM state root (see the module doc).
    pub fn evm_root(&self) -> [u8; 32] {
        self.executor.state_root().0
    }

    /// The EVM state root recomputed from the whole EVM state (O(state): tests and
    /// checks); always equals [`Execution::evm_root`].
    pub fn evm_root_from_scratch(&self) -> [u8; 32] {
        evm::commitment::root_from_scratch(self.executor.db()).0
    }

    /// The cross-domain queue's root (see the module doc).
    pub fn queue_root(&self) -> [u8; 32] {
        let bridge = &self.bridge;
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"nexus-queue-v1");
        hasher.update(&sum_bytes(&self.registry_sum));
        hasher.update(&(bridge.pending_actions.len() as u64).to_le_bytes());
        for action in &bridge.pending_actions {
            hasher.update(&action.commitment_bytes());
        }
        hasher.update(&(bridge.pending_callbacks.len() as u64).to_le_bytes());
        for callback in &bridge.pending_callbacks {
            hasher.update(callback.target.as_slice());
            hasher.update(&callback.calldata());
        }
        hasher.update(&(bridge.pending_credits.len() as u64).to_le_bytes());
        for credit in &bridge.pending_credits {
            hasher.update(credit.to.as_slice());
            hasher.update(&credit.wei.to_be_bytes::<32>());
            hasher.update(&credit.action_id.to_le_bytes());
        }
        hasher.update(&(bridge.pending_mints.len() as u64).to_le_bytes());
        for mint in &bridge.pending_mints {
            hasher.update(mint.to.as_slice());
            hasher.update(&mint.asset.to_le_bytes());
            hasher.update(&mint.units.to_le_bytes());
            hasher.update(&mint.action_id.to_le_bytes());
        }
        hasher.update(&bridge.dropped_callbacks.to_le_bytes());
        *hasher.finalize().as_bytes()
    }

    /// The chain root (see the module doc).
    pub fn chain_root(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"nexus-chain-v3");
        hasher.update(&self.config_digest);
        hasher.update(&self.height().to_le_bytes());
        hasher.update(&self.block_time_ms.to_le_bytes());
        hasher.update(&self.consensus_digest);
        hasher.update(&self.executor.block_hash_digest());
        *hasher.finalize().as_bytes()
    }

    /// The four parts of the execution root.
    pub fn roots(&mut self) -> Roots {
        Roots {
            core: self.core_root(),
            evm: self.evm_root(),
            queue: self.queue_root(),
            chain: self.chain_root(),
        }
    }

    /// `consensus::chain::ChainState::hash` after the last executed block (part of the
    /// root): what a validator starting from a snapshot checks its chain state against.
    pub fn consensus_digest(&self) -> [u8; 32] {
        self.consensus_digest
    }

    /// The execution root: `BLAKE3("nexus-execution-v2" || core_root || evm_root ||
    /// queue_root || chain_root)`; what the next block's header names.
    pub fn root(&mut self) -> [u8; 32] {
        self.roots().combined()
    }
}
