//! Execution: the one owner of a chain's executed state.
//!
//! [`Execution`] holds NexusCore's engine, every account's remembered nonces
//! ([`transactions::NonceSet`]) and the roles the genesis names (faucet and oracle-feeder
//! keys). It is a pure state machine: blocks of signed transactions come in, engine events
//! and the execution root come out.
//!
//! - [`Execution::validate_block`] is the rule every validator applies to a proposal before
//!   voting for it: every transaction is for this chain, its signature passed (checked by the
//!   caller, for example with the mempool's cache), its restricted actions come from keys
//!   with that role, its nonce is valid in order through the block at the block's time, and
//!   each feeder gives at most one price per market. A block that breaks any of these is
//!   not voted for: a proposer cannot act for an account or replay a transaction.
//! - [`Execution::execute_block`] runs a validated block: each transaction's actions in
//!   order as engine commands for its signer's account (an action the engine refuses is a
//!   result, not an error), then one engine `Oracle` per market from the feeders' prices
//!   (their median), and remembers the nonces.
//! - [`Execution::root`]: BLAKE3 of the engine's state root and the nonce root (a multiset
//!   hash over accounts, updated only for accounts a block touched). docs/execution.md.
//! - [`Execution::snapshot`] / [`Execution::restore`]: the state as bytes and back (a
//!   validator restarts from its newest snapshot).

mod snapshot;

pub use snapshot::{SnapshotError, MAGIC as SNAPSHOT_MAGIC};

use std::collections::{BTreeMap, BTreeSet};

use engine::{AccountId, ArrayLadder, Command, Engine, EngineConfig, Event, MarketId, Ticks};
use transactions::{
    oracle_command, Action, NonceError, NonceSet, SignatureError, SignedTransaction,
};

/// A chain's execution parameters (from its genesis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionConfig {
    /// The chain's id (transactions sign it).
    pub chain_id: [u8; 32],
    /// Keys that may sign deposits (a development chain's funding).
    pub faucets: Vec<[u8; 32]>,
    /// Keys that may sign oracle prices (at most `engine::MAX_ORACLE_SOURCES`).
    pub feeders: Vec<[u8; 32]>,
    /// Engine sizing.
    pub engine: EngineConfig,
}

/// Why a block may not be voted for. `index` is the transaction's position in the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// A transaction's signature (or key) did not verify.
    #[error("transaction {index}: {error}")]
    Signature {
        /// Position in the block.
        index: usize,
        /// What failed.
        error: SignatureError,
    },
    /// A transaction is for another chain.
    #[error("transaction {index} is for another chain")]
    WrongChain {
        /// Position in the block.
        index: usize,
    },
    /// A restricted action from a key without that role.
    #[error("transaction {index}: only a configured {role} may sign its actions")]
    NotPermitted {
        /// Position in the block.
        index: usize,
        /// The role it needs.
        role: &'static str,
    },
    /// A nonce is not valid at that point of the block.
    #[error("transaction {index}: {error}")]
    Nonce {
        /// Position in the block.
        index: usize,
        /// Why.
        error: NonceError,
    },
    /// A feeder gave two prices for one market in the block.
    #[error("transaction {index}: a second oracle price for market {market} from one feeder")]
    DuplicateOracle {
        /// Position in the block.
        index: usize,
        /// The market.
        market: MarketId,
    },
    /// The caller gave a different number of signature results than transactions.
    #[error("{signatures} signature results for {transactions} transactions")]
    SignatureCount {
        /// Results given.
        signatures: usize,
        /// Transactions in the block.
        transactions: usize,
    },
}

/// Who an engine event of a block belongs to: a transaction (its position) or the block's
/// oracle update of a market.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Transaction `index` of the block, action `action` of it.
    Tx {
        /// Position in the block.
        index: usize,
        /// Position of the action in the transaction.
        action: usize,
    },
    /// The block's oracle update of this market.
    Oracle(MarketId),
}

/// The executed state of a chain.
pub struct Execution {
    chain_id: [u8; 32],
    engine: Engine<ArrayLadder>,
    nonces: BTreeMap<AccountId, NonceSet>,
    /// Each account's nonce digest, and their lane-wise sum (the nonce root's content).
    nonce_digests: BTreeMap<AccountId, [u64; 4]>,
    nonce_sum: [u64; 4],
    faucets: BTreeSet<[u8; 32]>,
    feeders: Vec<[u8; 32]>,
    events: Vec<Event>,
}

impl Execution {
    /// A chain's state after its genesis: `genesis` engine commands (assets, markets,
    /// opening balances) run in order. Panics if more feeders are configured than an oracle
    /// command takes (a configuration error the caller checks first).
    pub fn new(config: ExecutionConfig, genesis: &[Command]) -> Execution {
        assert!(
            config.feeders.len() <= engine::MAX_ORACLE_SOURCES,
            "at most {} oracle feeders",
            engine::MAX_ORACLE_SOURCES
        );
        let mut execution = Execution {
            chain_id: config.chain_id,
            engine: Engine::new(config.engine),
            nonces: BTreeMap::new(),
            nonce_digests: BTreeMap::new(),
            nonce_sum: [0; 4],
            faucets: config.faucets.into_iter().collect(),
            feeders: config.feeders,
            events: Vec::new(),
        };
        for command in genesis {
            execution.engine.step(command, &mut execution.events);
            execution.events.clear();
        }
        execution
    }

    /// The engine (read-only: queries, market data, snapshots).
    pub fn engine(&self) -> &Engine<ArrayLadder> {
        &self.engine
    }

    /// Turns the engine's price-level change log on or off (for a market-data feed; the log
    /// is not state). When on, call [`Execution::drain_level_changes`] after every block.
    pub fn track_level_changes(&mut self, on: bool) {
        self.engine.track_level_changes(on);
    }

    /// Appends every price level changed since the last drain, once each, with its size now.
    pub fn drain_level_changes(&mut self, out: &mut Vec<engine::LevelChange>) {
        self.engine.drain_level_changes(out);
    }

    /// The chain's id.
    pub fn chain_id(&self) -> [u8; 32] {
        self.chain_id
    }

    /// Checks a proposed block at time `block_time_ms` without changing anything.
    /// `signatures[i]` is the result of transaction `i`'s signature check.
    pub fn validate_block(
        &self,
        block_time_ms: u64,
        txs: &[&SignedTransaction],
        signatures: &[Result<(), SignatureError>],
    ) -> Result<(), BlockError> {
        if signatures.len() != txs.len() {
            return Err(BlockError::SignatureCount {
                signatures: signatures.len(),
                transactions: txs.len(),
            });
        }
        // Nonces as they will be while the block runs, for the accounts it touches.
        let mut overlay: BTreeMap<AccountId, NonceSet> = BTreeMap::new();
        let mut prices: BTreeSet<([u8; 32], MarketId)> = BTreeSet::new();
        for (index, (tx, signature)) in txs.iter().zip(signatures).enumerate() {
            signature.map_err(|error| BlockError::Signature { index, error })?;
            if tx.tx.chain_id != self.chain_id {
                return Err(BlockError::WrongChain { index });
            }
            for action in &tx.tx.actions {
                if let Some(role) = action.restricted_to() {
                    if !self.has_role(role, &tx.tx.signer) {
                        return Err(BlockError::NotPermitted { index, role });
                    }
                }
                if let Action::OraclePrice { market, .. } = *action {
                    if !prices.insert((tx.tx.signer, market)) {
                        return Err(BlockError::DuplicateOracle { index, market });
                    }
                }
            }
            let account = tx.tx.account();
            let nonces = overlay
                .entry(account)
                .or_insert_with(|| self.nonces.get(&account).cloned().unwrap_or_default());
            nonces
                .check(tx.tx.nonce, block_time_ms)
                .map_err(|error| BlockError::Nonce { index, error })?;
            nonces.record(tx.tx.nonce);
        }
        Ok(())
    }

    fn has_role(&self, role: &str, key: &[u8; 32]) -> bool {
        match role {
            "faucet" => self.faucets.contains(key),
            _ => self.feeders.contains(key),
        }
    }

    /// Runs a block that [`Execution::validate_block`] accepted, calling `out` with every
    /// engine event and where it came from, and returns the execution root after it.
    /// Panics if a nonce is invalid: the block was not validated (a broken invariant).
    pub fn execute_block(
        &mut self,
        block_time_ms: u64,
        txs: &[&SignedTransaction],
        mut out: impl FnMut(Origin, &Event),
    ) -> [u8; 32] {
        let mut oracle: BTreeMap<MarketId, Vec<Ticks>> = BTreeMap::new();
        for (index, tx) in txs.iter().enumerate() {
            let account = tx.tx.account();
            let nonces = self.nonces.entry(account).or_default();
            assert!(
                nonces.check(tx.tx.nonce, block_time_ms).is_ok(),
                "transaction {index} of a block that was not validated"
            );
            nonces.record(tx.tx.nonce);
            self.refresh_nonce_digest(account);
            for (action_index, action) in tx.tx.actions.iter().enumerate() {
                if let Action::OraclePrice { market, price } = *action {
                    oracle.entry(market).or_default().push(price);
                    continue;
                }
                let Some(command) = action.command(account) else {
                    continue;
                };
                self.events.clear();
                self.engine.step(&command, &mut self.events);
                let origin = Origin::Tx {
                    index,
                    action: action_index,
                };
                for event in &self.events {
                    out(origin, event);
                }
            }
        }
        for (market, prices) in oracle {
            let Some(command) = oracle_command(market, &prices) else {
                continue;
            };
            self.events.clear();
            self.engine.step(&command, &mut self.events);
            for event in &self.events {
                out(Origin::Oracle(market), event);
            }
        }
        self.root()
    }

    /// Recomputes one account's nonce digest into the nonce sum.
    fn refresh_nonce_digest(&mut self, account: AccountId) {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"nexus-nonces-v1");
        hasher.update(&account.to_le_bytes());
        for nonce in self.nonces.get(&account).map_or(&[][..], NonceSet::used) {
            hasher.update(&nonce.to_le_bytes());
        }
        let bytes = hasher.finalize();
        let lanes: [u64; 4] = std::array::from_fn(|i| {
            u64::from_le_bytes(bytes.as_bytes()[i * 8..i * 8 + 8].try_into().expect("8"))
        });
        let old = self.nonce_digests.insert(account, lanes).unwrap_or([0; 4]);
        for lane in 0..4 {
            self.nonce_sum[lane] = self.nonce_sum[lane]
                .wrapping_sub(old[lane])
                .wrapping_add(lanes[lane]);
        }
    }

    /// The nonce root: BLAKE3 of the lane-wise sum of every account's nonce digest.
    pub fn nonce_root(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        for (lane, value) in self.nonce_sum.iter().enumerate() {
            bytes[lane * 8..lane * 8 + 8].copy_from_slice(&value.to_le_bytes());
        }
        *blake3::hash(&bytes).as_bytes()
    }

    /// The execution root: BLAKE3("nexus-execution-v1" || engine state root || nonce root).
    /// Costs what the last block changed (both parts are incremental).
    pub fn root(&mut self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"nexus-execution-v1");
        hasher.update(&self.engine.commit());
        hasher.update(&self.nonce_root());
        *hasher.finalize().as_bytes()
    }
}

impl mempool::ChainView for Execution {
    fn chain_id(&self) -> [u8; 32] {
        self.chain_id
    }

    fn account_exists(&self, account: AccountId) -> bool {
        // Every account the engine knows has a perp state (possibly empty): O(1).
        self.engine.perp_collateral(account).is_some()
    }

    fn nonces(&self, account: AccountId) -> Option<&NonceSet> {
        self.nonces.get(&account)
    }

    fn is_faucet(&self, key: &[u8; 32]) -> bool {
        self.faucets.contains(key)
    }

    fn is_feeder(&self, key: &[u8; 32]) -> bool {
        self.feeders.contains(key)
    }
}
