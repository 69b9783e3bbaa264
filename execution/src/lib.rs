//! Execution: the one owner of a chain's executed state (docs/execution.md).
//!
//! [`Execution`] holds NexusCore's engine, every account's remembered nonces
//! ([`transactions::NonceSet`]), the roles the genesis names (faucet and oracle-feeder
//! keys), NexusEVM (the `evm` executor, whose read precompiles see this engine) and the
//! cross-domain queue between them (`evm::bridge::Bridge`: CoreWriter actions, callbacks,
//! credits, and the EVM address that owns each Core account it acted for). It is a pure
//! state machine: blocks of [`BlockItem`]s (Core signed transactions and EVM transactions)
//! come in, engine events, the EVM block and the execution root come out.
//!
//! - [`Execution::validate_block`] is the rule every validator applies to a proposal before
//!   voting for it ([`validate`]); it returns the block with its EVM senders recovered.
//! - [`Execution::execute_block`] runs a validated block `h`: Core block `h` (Core
//!   transactions in block order, the feeders' oracle median, funding of every perp market
//!   when the block's time crosses a funding boundary, then the CoreWriter actions of EVM
//!   block `h - 1`), then EVM block `h` (credits and callbacks answering Core block
//!   `h`, then the block's EVM transactions in block order), whose CoreWriter actions wait
//!   for Core block `h + 1` ([`execute`]).
//! - [`Execution::root`]: `BLAKE3("nexus-execution-v2" || core_root || evm_root ||
//!   queue_root || chain_root)`, every part incremental or bounded ([`roots`]).
//! - [`Execution::snapshot`] / [`Execution::restore`]: the state as bytes and back (a
//!   validator restarts from its newest snapshot).

pub mod coprocessor;
mod execute;
mod registry;
pub mod roots;
mod snapshot;
pub mod validate;

pub use snapshot::{ExecutionImage, SnapshotError, MAGIC as SNAPSHOT_MAGIC};

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::{Address, B256, U256};
use engine::{AccountId, ArrayLadder, AssetId, Command, Engine, EngineConfig, Event, MarketId};
use evm::bridge::Bridge;
use evm::core_view::CoreSnapshot;
use evm::executor::{
    BlockOutput, CallOutcome, CallRequest, EvmConfig, Executor, Genesis, SignedTx, TxError,
};
pub use evm::token::TokenSpec;
use transactions::{NonceError, NonceSet, SignatureError};

pub use coprocessor::{Catalog, CoprocessorId, RegistryEntry, RegistryError};
pub use evm;
pub use roots::Roots;
pub use transactions::BlockItem;
pub use validate::ValidBlock;

/// A chain's execution parameters (from its genesis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionConfig {
    /// The chain's id (Core transactions sign it).
    pub chain_id: [u8; 32],
    /// Keys that may sign deposits (a development chain's funding).
    pub faucets: Vec<[u8; 32]>,
    /// Keys that may sign oracle prices (at most `engine::MAX_ORACLE_SOURCES`).
    pub feeders: Vec<[u8; 32]>,
    /// Engine sizing.
    pub engine: EngineConfig,
    /// NexusEVM's genesis.
    pub evm: EvmGenesis,
    /// Perp funding interval, seconds (0: no funding). A block whose time is in a later
    /// interval than the previous block's runs one `Funding` per perp market.
    pub funding_interval_s: u64,
    /// Most Core gas a block's transactions may use ([`DEFAULT_CORE_GAS_LIMIT`]).
    pub core_gas_limit: u64,
}

/// Core gas limit of a block unless configured: 5M, a block of 10 000 transactions of 50
/// orders each, far beyond what a block carries today, so that it bounds a block's work
/// without limiting honest traffic.
pub const DEFAULT_CORE_GAS_LIMIT: u64 = 5_000_000;

/// The consensus layer's state after a block, as the execution follows it: the
/// co-processor registry (which holds from the next block on) and a digest of the whole of
/// it (validator set, staking, governance, registry, nonces), which joins the chain root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsensusState {
    /// Registry entries in id order.
    pub registry: Vec<RegistryEntry>,
    /// `consensus::chain::ChainState::hash` after the block.
    pub digest: [u8; 32],
}

impl From<&consensus::chain::ChainState> for ConsensusState {
    /// The registry and digest of the consensus layer's state.
    fn from(chain: &consensus::chain::ChainState) -> ConsensusState {
        let registry = chain
            .governance()
            .registry()
            .map(|c| RegistryEntry {
                id: c.id,
                version: c.version,
                code_hash: c.code_hash.0,
                params: c.params.clone(),
                active: c.active,
            })
            .collect();
        ConsensusState {
            registry,
            digest: chain.hash().0,
        }
    }
}

/// The genesis registry as the consensus layer's genesis takes it.
pub fn genesis_coprocessors() -> Vec<consensus::governance::Coprocessor> {
    genesis_registry()
        .into_iter()
        .map(|entry| consensus::governance::Coprocessor {
            id: entry.id,
            version: entry.version,
            code_hash: consensus::types::Hash(entry.code_hash),
            params: entry.params,
            active: entry.active,
        })
        .collect()
}

impl ConsensusState {
    /// A chain whose consensus layer is only the genesis registry ([`genesis_registry`])
    /// and a zero digest (tests and tools that run blocks without consensus).
    pub fn genesis() -> ConsensusState {
        ConsensusState {
            registry: genesis_registry(),
            digest: [0; 32],
        }
    }
}

/// The registry every chain starts with: the CLOB engine, id [`coprocessor::CLOB`],
/// version 1, active.
pub fn genesis_registry() -> Vec<RegistryEntry> {
    vec![RegistryEntry {
        id: coprocessor::CLOB,
        version: 1,
        code_hash: coprocessor::clob_code_hash(),
        params: coprocessor::Params::new(),
        active: true,
    }]
}

/// NexusEVM's parameters and initial state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvmGenesis {
    /// Chain id (EIP-155), fees, gas limit, coinbase, wei per Core unit.
    pub config: EvmConfig,
    /// The Core asset that is the EVM's native token: it enters and leaves Core only
    /// through CoreWriter (a Core deposit or withdrawal of it is an invalid block), so
    /// CoreWriter's escrow stays `Core supply x wei_per_unit`.
    pub native_asset: AssetId,
    /// Initial EVM balances (wei).
    pub alloc: Vec<(Address, U256)>,
    /// Genesis time, seconds.
    pub timestamp: u64,
    /// Names, symbols and decimals of Core asset tokens. Every asset of the genesis other
    /// than the native one gets an ERC-20 at `evm::system::token_address(asset)`; an asset
    /// not listed here is `TokenSpec::unnamed` (entries for other assets are ignored).
    pub tokens: Vec<TokenSpec>,
}

/// The native asset of [`EvmGenesis::default`]: an id no genesis registers, so that a
/// chain configured without thinking about the EVM keeps every Core asset movable
/// (CoreWriter deposits are then refused by the engine as an unknown asset, and credited
/// back).
pub const NO_NATIVE_ASSET: AssetId = AssetId::MAX;

impl Default for EvmGenesis {
    fn default() -> Self {
        EvmGenesis {
            config: EvmConfig::default(),
            native_asset: NO_NATIVE_ASSET,
            alloc: Vec::new(),
            timestamp: 0,
            tokens: Vec::new(),
        }
    }
}

/// The token of every asset of `engine` other than `native`, named from `named` (else
/// [`TokenSpec::unnamed`]), in asset order. Panics if the token escrow holds any of them:
/// the tokens start with no supply.
fn genesis_tokens(
    engine: &Engine<ArrayLadder>,
    native: AssetId,
    named: &[TokenSpec],
) -> Vec<TokenSpec> {
    let mut assets: Vec<AssetId> = engine.assets().filter(|&a| a != native).collect();
    assets.sort_unstable();
    assets
        .into_iter()
        .map(|asset| {
            let held = engine
                .balance(evm::system::TOKEN_ESCROW_ACCOUNT, asset)
                .map_or(0, |b| b.total);
            assert_eq!(held, 0, "the token escrow holds asset {asset} at genesis");
            named
                .iter()
                .find(|spec| spec.asset == asset)
                .cloned()
                .unwrap_or_else(|| TokenSpec::unnamed(asset))
        })
        .collect()
}

/// Why a block may not be voted for. `index` is the item's position in the block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// A Core transaction's signature (or key) did not verify.
    #[error("item {index}: {error}")]
    Signature {
        /// Position in the block.
        index: usize,
        /// What failed.
        error: SignatureError,
    },
    /// A Core transaction is for another chain.
    #[error("item {index} is for another chain")]
    WrongChain {
        /// Position in the block.
        index: usize,
    },
    /// A restricted action from a key without that role.
    #[error("item {index}: only a configured {role} may sign its actions")]
    NotPermitted {
        /// Position in the block.
        index: usize,
        /// The role it needs.
        role: &'static str,
    },
    /// A nonce is not valid at that point of the block.
    #[error("item {index}: {error}")]
    Nonce {
        /// Position in the block.
        index: usize,
        /// Why.
        error: NonceError,
    },
    /// A feeder gave two prices for one market in the block.
    #[error("item {index}: a second oracle price for market {market} from one feeder")]
    DuplicateOracle {
        /// Position in the block.
        index: usize,
        /// The market.
        market: MarketId,
    },
    /// The caller gave a different number of signature results than Core transactions.
    #[error("{signatures} signature results for {transactions} Core transactions")]
    SignatureCount {
        /// Results given.
        signatures: usize,
        /// Core transactions in the block.
        transactions: usize,
    },
    /// A Core action deposits or withdraws the EVM's native asset, which only CoreWriter
    /// moves.
    #[error(
        "item {index}: asset {asset} is the EVM's native token; it moves only through CoreWriter"
    )]
    NativeAsset {
        /// Position in the block.
        index: usize,
        /// The asset.
        asset: AssetId,
    },
    /// A Core deposit credits the Core asset tokens' escrow account, whose balance must stay
    /// the tokens' supply.
    #[error("item {index}: the token escrow account moves only through the bridge")]
    TokenEscrow {
        /// Position in the block.
        index: usize,
    },
    /// An EVM transaction that does not decode, is for another chain, does not recover a
    /// sender, or that revm would refuse (nonce, funds, fees, gas, sender with code).
    #[error("item {index}: {error}")]
    Evm {
        /// Position in the block.
        index: usize,
        /// Why, as the EVM pool would say it.
        error: TxError,
    },
    /// The Core transactions' gas adds up to more than the block's Core gas limit.
    #[error("item {index}: Core gas reaches {total}, over the block's limit {limit}")]
    CoreGas {
        /// The Core transaction that went over.
        index: usize,
        /// Core gas up to it.
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// The EVM transactions' gas limits add up to more than the block's user half.
    #[error("item {index}: EVM gas limits reach {total}, over the block's user share {limit}")]
    EvmGas {
        /// The EVM item that went over.
        index: usize,
        /// Gas limits up to it.
        total: u64,
        /// The most a block's EVM transactions may reserve.
        limit: u64,
    },
}

/// Who an engine event of a block belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Core transaction at item `index` of the block, action `action` of it.
    Tx {
        /// Position in the block.
        index: usize,
        /// Position of the action in the transaction.
        action: usize,
    },
    /// The block's oracle update of this market.
    Oracle(MarketId),
    /// The block's funding of this perp market (the block crossed a funding boundary).
    Funding(MarketId),
    /// A CoreWriter action of the previous EVM block (`id = (EVM block << 24) | log
    /// index`).
    CoreWriter(u64),
}

/// What one co-processor call of a block did (a call of a co-processor other than the
/// CLOB, or a CLOB action refused because the CLOB is inactive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallReport {
    /// Position of its transaction among the block's items.
    pub index: usize,
    /// Position of the action in the transaction.
    pub action: usize,
    /// The co-processor it named.
    pub coprocessor: CoprocessorId,
    /// Its 32-byte answer, or why it did nothing.
    pub result: coprocessor::CallResult,
}

/// What executing a block produced besides engine events.
#[derive(Clone, Debug)]
pub struct Executed {
    /// The execution root after the block (the next block's header names it).
    pub root: [u8; 32],
    /// Core gas the block's transactions used.
    pub core_gas: u64,
    /// Its co-processor calls, in block order.
    pub calls: Vec<CallReport>,
    /// The EVM block: header, receipts, CoreWriter actions queued for the next Core block.
    pub evm: BlockOutput,
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
    executor: Executor,
    bridge: Bridge,
    /// Lane-wise sum of the digests of the bridge's registry entries (they never change).
    registry_sum: [u64; 4],
    /// Time of the last executed block (ms; the genesis time at first).
    block_time_ms: u64,
    /// Perp funding interval, seconds (0: none; part of the config digest).
    funding_interval_s: u64,
    /// Digest of what never changes after genesis (chain ids, roles, EVM parameters, funding
    /// interval, Core gas limit).
    config_digest: [u8; 32],
    events: Vec<Event>,
    /// Most Core gas per block.
    core_gas_limit: u64,
    /// The CLOB's registry entry (its state is `engine`).
    clob: RegistryEntry,
    /// The other co-processors the registry named, active or not, by id.
    hosted: BTreeMap<CoprocessorId, coprocessor::Hosted>,
    /// The implementations this binary carries.
    catalog: Catalog,
    /// The consensus layer's digest after the last block.
    consensus_digest: [u8; 32],
}

impl Execution {
    /// A chain's state after its genesis: `genesis` engine commands (assets, markets,
    /// opening balances) run in order, then the EVM genesis, whose CoreWriter escrow holds
    /// the Core supply of the native asset. Height 0. Panics if more feeders are configured
    /// than an oracle command takes (a configuration error the caller checks first).
    pub fn new(config: ExecutionConfig, genesis: &[Command]) -> Execution {
        assert!(
            config.feeders.len() <= engine::MAX_ORACLE_SOURCES,
            "at most {} oracle feeders",
            engine::MAX_ORACLE_SOURCES
        );
        let mut engine = Engine::new(config.engine);
        let mut events = Vec::new();
        for command in genesis {
            engine.step(command, &mut events);
            events.clear();
        }
        let config_digest = roots::config_digest(&config);
        let evm_genesis = config.evm;
        let supply = engine.supply(evm_genesis.native_asset).unwrap_or(0);
        assert!(supply >= 0, "supply is deposits minus withdrawals");
        let wei_per_unit = evm_genesis.config.wei_per_unit;
        let tokens = genesis_tokens(&engine, evm_genesis.native_asset, &evm_genesis.tokens);
        let genesis = Genesis {
            alloc: evm_genesis.alloc,
            escrow_wei: U256::from(supply as u64) * wei_per_unit,
            timestamp: evm_genesis.timestamp,
            tokens,
        };
        let (executor, _) = Executor::genesis(evm_genesis.config, &genesis);
        Execution {
            chain_id: config.chain_id,
            engine,
            nonces: BTreeMap::new(),
            nonce_digests: BTreeMap::new(),
            nonce_sum: [0; 4],
            faucets: config.faucets.into_iter().collect(),
            feeders: config.feeders,
            executor,
            bridge: Bridge::new(evm_genesis.native_asset, wei_per_unit),
            registry_sum: [0; 4],
            block_time_ms: evm_genesis.timestamp.saturating_mul(1000),
            funding_interval_s: config.funding_interval_s,
            config_digest,
            events,
            core_gas_limit: config.core_gas_limit,
            clob: genesis_registry().remove(0),
            hosted: BTreeMap::new(),
            catalog: Catalog::builtin(),
            consensus_digest: [0; 32],
        }
    }

    /// The tokens the EVM genesis of `config` installs over `genesis`'s engine (tests and
    /// tools: the same list [`Execution::new`] builds).
    pub fn genesis_tokens(config: &ExecutionConfig, genesis: &[Command]) -> Vec<TokenSpec> {
        let mut engine = Engine::new(config.engine);
        let mut events = Vec::new();
        for command in genesis {
            engine.step(command, &mut events);
        }
        genesis_tokens(&engine, config.evm.native_asset, &config.evm.tokens)
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

    /// The EVM (read-only: accounts, code, storage, head).
    pub fn evm(&self) -> &Executor {
        &self.executor
    }

    /// The cross-domain queue (read-only).
    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// The chain's id.
    pub fn chain_id(&self) -> [u8; 32] {
        self.chain_id
    }

    /// Blocks executed since genesis (Core and EVM heights are always equal).
    pub fn height(&self) -> u64 {
        self.executor.head().number
    }

    /// A read-only EVM call against the head, reading Core as it is now (eth_call).
    pub fn call(&mut self, request: &CallRequest) -> CallOutcome {
        let view = CoreSnapshot::new(&self.engine, self.height());
        self.executor.call(&view, request)
    }

    /// Runs a call on the EVM state after a past block (`past`, after `header`): the EVM
    /// sees that block's state, the read precompiles see Core as it is now (after the
    /// head), not as it was then.
    pub fn call_at(
        &self,
        past: &evm::history::PastState<'_>,
        header: &evm::executor::BlockHeader,
        request: &CallRequest,
    ) -> CallOutcome {
        let view = CoreSnapshot::new(&self.engine, self.height());
        self.executor.call_at(&view, past, header, request)
    }

    /// [`Execution::estimate_gas`] on the EVM state after a past block (Core as now, as
    /// [`Execution::call_at`]).
    pub fn estimate_gas_at(
        &self,
        past: &evm::history::PastState<'_>,
        header: &evm::executor::BlockHeader,
        request: &CallRequest,
    ) -> Result<u64, CallOutcome> {
        let view = CoreSnapshot::new(&self.engine, self.height());
        self.executor.estimate_gas_at(&view, past, header, request)
    }

    /// Traces a call (`debug_traceCall`) on the head's state, or on `past` (the state after
    /// `header`) when given; the read precompiles see Core as it is now.
    pub fn trace_call(
        &self,
        past: Option<(&evm::history::PastState<'_>, &evm::executor::BlockHeader)>,
        request: &CallRequest,
        tracer: evm::trace::Tracer,
    ) -> Result<evm::trace::GethTrace, evm::trace::TraceError> {
        let view = CoreSnapshot::new(&self.engine, self.height());
        match past {
            Some((state, header)) => self
                .executor
                .trace_call(&view, state, header, request, tracer),
            None => {
                let head = self.executor.head();
                let db = self.executor.db();
                self.executor.trace_call(&view, db, head, request, tracer)
            }
        }
    }

    /// Traces transaction `index` of a past block (`debug_traceTransaction`), re-executed
    /// on `before` (the state after its parent); the read precompiles see Core as it is
    /// now, not as the block saw it.
    pub fn trace_in_block(
        &self,
        before: &evm::history::PastState<'_>,
        block: evm::trace::BlockReplay<'_>,
        index: usize,
        tracer: evm::trace::Tracer,
    ) -> Result<evm::trace::GethTrace, evm::trace::TraceError> {
        let view = CoreSnapshot::new(&self.engine, self.height());
        self.executor
            .trace_in_block(&view, before, block, index, tracer)
    }

    /// Traces every transaction of a past block (`debug_traceBlockByNumber`), re-executed
    /// once on `before` (the state after its parent); the read precompiles see Core as it
    /// is now, as in [`Execution::trace_in_block`].
    pub fn trace_block(
        &self,
        before: &evm::history::PastState<'_>,
        block: evm::trace::BlockReplay<'_>,
        tracer: evm::trace::Tracer,
    ) -> Vec<Result<evm::trace::GethTrace, evm::trace::TraceError>> {
        let view = CoreSnapshot::new(&self.engine, self.height());
        self.executor.trace_block(&view, before, block, tracer)
    }

    /// The smallest gas limit under which the call succeeds against the head
    /// (eth_estimateGas).
    pub fn estimate_gas(&mut self, request: &CallRequest) -> Result<u64, CallOutcome> {
        let view = CoreSnapshot::new(&self.engine, self.height());
        self.executor.estimate_gas(&view, request)
    }

    /// The access list of a call against the head and its outcome with that list
    /// (eth_createAccessList).
    pub fn create_access_list(
        &mut self,
        request: &CallRequest,
    ) -> (evm::executor::AccessList, CallOutcome) {
        let view = CoreSnapshot::new(&self.engine, self.height());
        self.executor.create_access_list(&view, request)
    }

    /// Decodes an EVM envelope for this chain (the sender from `senders` when it knows it,
    /// recovered otherwise), then the chain's gas and fee rules and revm's stateless checks
    /// against the next block.
    pub fn decode_evm_with(
        &self,
        envelope: &[u8],
        senders: &dyn Fn(&B256) -> Option<Address>,
    ) -> Result<SignedTx, TxError> {
        let tx = SignedTx::decode_with(envelope, self.executor.config().chain_id, senders)?;
        tx.check_static(self.executor.config())?;
        self.executor.check_admission(&tx)?;
        Ok(tx)
    }

    fn has_role(&self, role: &str, key: &[u8; 32]) -> bool {
        match role {
            "faucet" => self.faucets.contains(key),
            _ => self.feeders.contains(key),
        }
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

    fn native_asset(&self) -> Option<AssetId> {
        Some(self.bridge.native_asset)
    }

    fn check_call(
        &self,
        coprocessor: u32,
        method: u8,
        args: &[u8; 24],
    ) -> Result<(), &'static str> {
        Execution::check_call(self, coprocessor, method, args).map_err(|refusal| refusal.code)
    }

    fn core_gas(&self, tx: &transactions::SignedTransaction) -> u64 {
        Execution::core_gas(self, tx)
    }

    fn core_gas_limit(&self) -> u64 {
        Execution::core_gas_limit(self)
    }
}

impl mempool::EvmView for Execution {
    /// Decodes for this chain, recovers the sender, then the chain's gas and fee rules and
    /// revm's stateless checks against the next block.
    fn decode_evm(&self, envelope: &[u8]) -> Result<SignedTx, TxError> {
        self.decode_evm_with(envelope, &|_| None)
    }

    fn evm_account(&self, address: Address) -> mempool::EvmAccount {
        let info = self.executor.peek_account(address);
        mempool::EvmAccount {
            nonce: info.nonce,
            balance: info.balance,
            has_code: !info.is_empty_code_hash() && !info.code_hash.is_zero(),
        }
    }

    /// Half the EVM block gas limit: callbacks may use the other half, so a block's EVM
    /// transactions within this share are never deferred.
    fn evm_gas_share(&self) -> u64 {
        self.executor.config().block_gas_limit / evm::system::USER_GAS_RESERVE_DIVISOR
    }
}
