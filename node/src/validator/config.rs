//! A devnet's configuration file (`devnet.toml`) and what a validator builds from it at genesis:
//! the execution's parameters and state, the consensus-layer chain state, timeouts.

use std::collections::BTreeMap;

use super::*;

/// The engine's sizing in a chain configuration (`engine::EngineConfig`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Most orders resting across all markets.
    pub max_resting_orders: u32,
    /// Most open orders of one account.
    pub max_open_orders_per_account: u32,
}

impl From<EngineLimits> for EngineConfig {
    fn from(limits: EngineLimits) -> EngineConfig {
        EngineConfig {
            max_resting_orders: limits.max_resting_orders,
            max_open_orders_per_account: limits.max_open_orders_per_account,
        }
    }
}

/// Timeouts in the configuration, in milliseconds.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub struct TimeoutsMs {
    /// `timeoutPropose(0)`.
    pub propose: u64,
    /// `timeoutPrevote(0)`.
    pub prevote: u64,
    /// `timeoutPrecommit(0)`.
    pub precommit: u64,
    /// Added per round.
    pub delta: u64,
    /// Re-send period of a validator's own messages.
    pub rebroadcast: u64,
}

impl Default for TimeoutsMs {
    /// The timeouts `nexus devnet` and `nexus run` write: propose 200, prevote and precommit
    /// 100, 50 more per round, re-send every 500.
    fn default() -> TimeoutsMs {
        TimeoutsMs {
            propose: 200,
            prevote: 100,
            precommit: 100,
            delta: 50,
            rebroadcast: 500,
        }
    }
}

/// One validator of the devnet.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ValidatorEntry {
    /// Its public key (hex): pinned by every other validator's TLS verifier.
    pub key: String,
    /// Its UDP address (QUIC, between validators).
    pub addr: SocketAddr,
    /// Its transaction port (TCP, for clients).
    pub tx_addr: SocketAddr,
    /// Its binary order-entry port (TCP, docs/protocol.md); none if absent.
    #[serde(default)]
    pub order_addr: Option<SocketAddr>,
    /// Its binary market-data port (TCP); served with the order-entry port.
    #[serde(default)]
    pub data_addr: Option<SocketAddr>,
    /// Its JSON Lines development port (TCP, loopback only: it signs for the devnet's
    /// development keys, `crate::chain_json`); none if absent.
    #[serde(default)]
    pub json_addr: Option<SocketAddr>,
    /// Its Ethereum JSON-RPC port (HTTP, `eth_rpc`); none if absent.
    #[serde(default)]
    pub eth_addr: Option<SocketAddr>,
    /// Its stake.
    pub stake: u64,
}

/// The devnet configuration (`devnet.toml`), shared by all validators and clients.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DevnetConfig {
    /// Chain id (hex, 32 bytes), bound into every signature.
    pub chain_id: String,
    /// The chain's genesis time (Unix ms): block 1's nonces are checked against it.
    pub genesis_time_ms: u64,
    /// Seed of the trading accounts' keys and of the load's prices.
    pub order_seed: u64,
    /// Trading accounts funded at genesis (keys derived from the seed).
    pub accounts: u64,
    /// Actions per transaction of the load.
    pub bulk: u32,
    /// 0: the load is the trading stream. Else it places this many resting orders away from
    /// the mid and stops ([`LoadSpec::resting_orders`]).
    #[serde(default)]
    pub resting_orders: u64,
    /// Orders per second the load offers.
    pub rate_per_s: u64,
    /// Most transactions per block.
    pub max_block_txs: u32,
    /// Most payload bytes per block.
    pub max_block_bytes: u32,
    /// A snapshot of the executed state every this many blocks (0: none): a restarted
    /// validator loads its newest and executes only later blocks.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// A validator whose block file is empty asks its peers for a snapshot and starts from
    /// it (state sync, docs/consensus.md) instead of executing every block from genesis.
    #[serde(default = "default_state_sync")]
    pub state_sync: bool,
    /// After each snapshot, blocks older than its height minus this many are dropped from
    /// the block file and memory, so disk stays bounded (0: keep every block). A restart
    /// then starts from the snapshot; a peer asking for pruned heights gets what is left
    /// and joins from a snapshot instead.
    #[serde(default)]
    pub prune_keep_blocks: u64,
    /// Most certificates of decided blocks the validator keeps in memory (at least 1);
    /// older ones are read back from its block file when a peer that is behind asks for
    /// them, so memory does not grow with the chain.
    #[serde(default = "default_certificates_in_memory")]
    pub certificates_in_memory: u64,
    /// Longest line the JSON development port reads (longer ones are answered `too_long`
    /// and skipped); `nexus run` takes `[ingress] max_line_bytes`.
    #[serde(default = "default_json_max_line_bytes")]
    pub json_max_line_bytes: u64,
    /// Most transactions a second one client connection (transaction port, gateway session,
    /// JSON connection) may send, in bursts of as many; more are refused `rate_limited`
    /// (0: no limit).
    #[serde(default = "default_connection_rate")]
    pub connection_rate: u64,
    /// Most transactions a second one account may have admitted through this validator's
    /// client ports, over all its connections, in bursts of as many; more are refused
    /// `account_rate_limited` (0: no limit). Only admitted transactions count.
    #[serde(default = "default_account_rate")]
    pub account_rate: u64,
    /// EVM blocks each validator keeps in memory for its Ethereum JSON-RPC reads (blocks,
    /// transactions, receipts, logs); older ones are forgotten first.
    #[serde(default = "default_eth_history_blocks")]
    pub eth_history_blocks: u64,
    /// Blocks before the head whose EVM state each validator keeps (per-block undos in
    /// memory) for `eth_call`, `eth_getBalance`, `eth_getCode`, `eth_getStorageAt`,
    /// `eth_getTransactionCount` and `eth_estimateGas` at a past block; at most
    /// `eth_history_blocks - 1`.
    #[serde(default = "default_eth_state_blocks")]
    pub eth_state_blocks: u64,
    /// When the load starts (Unix ns).
    pub load_start_unix_ns: u64,
    /// The chain's genesis as JSON Lines (docs/replay.md: assets, markets, perp markets,
    /// deposits, transfers, oracle prices). Absent: the devnet's ([`load::genesis_lines`]:
    /// `BASE-QUOTE` and the funded trading accounts, with `QUOTE` as NexusEVM's native
    /// token). Present: NexusEVM has no native Core asset (every Core asset stays movable).
    #[serde(default)]
    pub genesis: Option<String>,
    /// Development role keys derived from `order_seed` ([`load::role_key`]): a faucet that
    /// may sign deposits and an oracle feeder. The JSON port signs `deposit` and `oracle`
    /// lines with them. A development chain's shortcut: off on a devnet.
    #[serde(default)]
    pub dev_roles: bool,
    /// The development EVM account's secp256k1 secret (hex); absent: [`dev_evm_key`] of
    /// `order_seed`. Funded with [`dev_evm_balance`] at genesis.
    #[serde(default)]
    pub dev_evm_secret: Option<String>,
    /// The Ethereum JSON-RPC port signs for the development EVM account
    /// ([`DevnetConfig::dev_evm_secret`]): `eth_accounts` lists it, and
    /// `eth_sendTransaction`, `eth_sign`, `personal_sign` and `eth_signTypedData_v4` sign
    /// with it. A development chain's shortcut (anyone who reaches the port spends from that
    /// account): off unless set; `nexus run`, `nexus-evm` and `nexus devnet` set it.
    #[serde(default)]
    pub eth_dev_signing: bool,
    /// EVM load accounts funded at genesis ([`crate::load_evm`]): account `i` (from 0) has
    /// the secret [`crate::load_evm::load_key`]`(order_seed, i)` and holds
    /// [`crate::load_evm::LOAD_BALANCE`] wei (`nexus devnet --evm-accounts`; 0: none).
    #[serde(default)]
    pub evm_load_accounts: u64,
    /// Without transactions or cross-domain work, a block at most this often (ms; 0: blocks
    /// back to back). A transaction starts the next height at once.
    #[serde(default)]
    pub empty_block_interval_ms: u64,
    /// Proposals travel compact: Core transactions the peers already hold are named by
    /// their hash instead of carried whole (docs/consensus.md, "Compact proposals");
    /// `false` sends every proposal whole.
    #[serde(default = "default_compact_proposals")]
    pub compact_proposals: bool,
    /// Perpetual funding every this many seconds of block time (0: none;
    /// `ExecutionConfig::funding_interval_s`).
    #[serde(default)]
    pub funding_interval_s: u64,
    /// The engine's limits; absent: 2^20 resting orders, 2^16 open orders per account.
    #[serde(default)]
    pub engine: Option<EngineLimits>,
    /// Consensus timeouts.
    pub timeouts: TimeoutsMs,
    /// Chain parameters at genesis (staking, slashing, governance); governance may change
    /// them later.
    #[serde(default)]
    pub chain_params: GenesisParams,
    /// The validators, by index.
    pub validators: Vec<ValidatorEntry>,
}

/// The chain parameters a devnet starts with (`[chain_params]`): values by parameter name
/// ([`ParamKey::name`]); an absent one keeps `ChainParams::default()`'s value.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct GenesisParams(pub BTreeMap<String, u64>);

impl GenesisParams {
    /// These with `key` set to `value`, if there is one (an option's value).
    pub fn with(mut self, key: ParamKey, value: Option<u64>) -> Self {
        if let Some(value) = value {
            self.0.insert(key.name().to_string(), value);
        }
        self
    }

    /// The chain parameters: the defaults with these set; an error names an unknown
    /// parameter or a value out of range.
    pub fn params(&self) -> Result<ChainParams, HostError> {
        let mut params = ChainParams::default();
        for (name, &value) in &self.0 {
            let key = ParamKey::from_name(name).ok_or_else(|| {
                let known = ParamKey::ALL.map(ParamKey::name).join(", ");
                HostError::Config(format!(
                    "chain_params: no parameter {name:?} (known: {known})"
                ))
            })?;
            params
                .set(key, value)
                .map_err(|e| HostError::Config(format!("chain_params: {name} = {value}: {e}")))?;
        }
        Ok(params)
    }
}

impl DevnetConfig {
    /// The chain id's bytes.
    pub fn chain_id_bytes(&self) -> Result<[u8; 32], HostError> {
        unhex32(&self.chain_id)
    }

    /// The chain's genesis lines: [`DevnetConfig::genesis`], or the devnet's.
    pub fn genesis_lines(&self) -> Result<String, HostError> {
        match &self.genesis {
            Some(lines) => Ok(lines.clone()),
            None => Ok(load::genesis_lines(&self.load_spec()?)),
        }
    }

    /// The engine commands of the genesis lines, in order.
    pub fn genesis_commands(&self) -> Result<Vec<engine::Command>, HostError> {
        crate::genesis::translate_genesis(&self.genesis_lines()?)
            .map(|(_, commands)| commands)
            .map_err(|e| HostError::Config(format!("genesis: {e}")))
    }

    /// The development EVM account's secret.
    pub fn dev_evm_secret(&self) -> Result<[u8; 32], HostError> {
        match &self.dev_evm_secret {
            Some(hex) => unhex32(hex),
            None => Ok(dev_evm_key(self.order_seed)),
        }
    }

    /// The accounts the Ethereum JSON-RPC port signs for: the development EVM account if
    /// [`DevnetConfig::eth_dev_signing`], else none.
    pub fn eth_dev_accounts(&self) -> Result<evm_bridge::dev_sign::DevAccounts, HostError> {
        let secrets = match self.eth_dev_signing {
            true => vec![self.dev_evm_secret()?],
            false => Vec::new(),
        };
        evm_bridge::dev_sign::DevAccounts::new(&secrets).map_err(HostError::Config)
    }

    /// The development faucet and feeder keys, if the chain has them.
    pub fn dev_roles(&self) -> Option<load::DevRoles> {
        self.dev_roles.then(|| load::DevRoles::new(self.order_seed))
    }

    /// What the load stream and the genesis derive from.
    pub fn load_spec(&self) -> Result<LoadSpec, HostError> {
        Ok(LoadSpec {
            seed: self.order_seed,
            accounts: self.accounts,
            bulk: self.bulk,
            chain_id: self.chain_id_bytes()?,
            genesis_time_ms: self.genesis_time_ms,
            resting_orders: self.resting_orders,
        })
    }
}

fn default_snapshot_every() -> u64 {
    1_000
}

/// The default of [`DevnetConfig::certificates_in_memory`]: a few seconds of blocks under
/// load, enough for the peers that lag by a few heights (the usual sync), with the rest
/// read from disk.
pub const DEFAULT_CERTIFICATES_IN_MEMORY: u64 = 1_024;

fn default_certificates_in_memory() -> u64 {
    DEFAULT_CERTIFICATES_IN_MEMORY
}

fn default_json_max_line_bytes() -> u64 {
    crate::chain_json::MAX_LINE_BYTES as u64
}

fn default_compact_proposals() -> bool {
    true
}

fn default_state_sync() -> bool {
    true
}

fn default_connection_rate() -> u64 {
    50_000
}

fn default_account_rate() -> u64 {
    DEFAULT_ACCOUNT_RATE
}

/// The default of [`DevnetConfig::account_rate`] (and of `nexus run`'s `[chain]
/// account_rate`): well above what one market maker's quote updates need, well below what
/// the validator admits in all.
pub const DEFAULT_ACCOUNT_RATE: u64 = 1_000;

fn default_eth_history_blocks() -> u64 {
    eth_rpc::HISTORY_BLOCKS as u64
}

fn default_eth_state_blocks() -> u64 {
    eth_rpc::STATE_BLOCKS as u64
}

/// Reads a devnet configuration.
pub fn read_config(path: &Path) -> Result<DevnetConfig, HostError> {
    let text = std::fs::read_to_string(path).map_err(|e| HostError::Io(path.to_path_buf(), e))?;
    toml::from_str(&text).map_err(|e| HostError::Config(format!("{}: {e}", path.display())))
}

/// The genesis execution state of a devnet (every validator computes the same).
pub fn genesis_execution(config: &DevnetConfig) -> Result<Execution, HostError> {
    Ok(Execution::new(
        execution_config(config)?,
        &config.genesis_commands()?,
    ))
}

/// Wei the devnet's development EVM account holds at genesis (1,000,000 ether).
pub fn dev_evm_balance() -> alloy_primitives::U256 {
    alloy_primitives::U256::from(1_000_000u64)
        * alloy_primitives::U256::from(10u64).pow(18u64.try_into().expect("small"))
}

/// The development EVM account's secret of a configuration without `dev_evm_secret` (one
/// written before it existed), derived from the order seed:
/// `BLAKE3("nexus-devnet/v1/evm-key\0" || seed as u64 LE)`.
pub fn dev_evm_key(seed: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"nexus-devnet/v1/evm-key\0");
    h.update(&seed.to_le_bytes());
    *h.finalize().as_bytes()
}

/// The Ethereum address of a secp256k1 secret (keccak256 of the public key's coordinates,
/// last 20 bytes).
pub fn evm_address(secret: &[u8; 32]) -> Result<alloy_primitives::Address, HostError> {
    let key = k256::ecdsa::SigningKey::from_slice(secret)
        .map_err(|e| HostError::Config(format!("development EVM key: {e}")))?;
    let point = key.verifying_key().to_encoded_point(false);
    let hash = alloy_primitives::keccak256(&point.as_bytes()[1..]);
    Ok(alloy_primitives::Address::from_slice(&hash[12..]))
}

/// A chain's execution parameters. The faucet and feeder are the development role keys if
/// the configuration has them ([`DevnetConfig::dev_roles`]), else none (every deposit is at
/// genesis). On the devnet's own genesis NexusEVM's native token is the market's quote
/// asset (`QUOTE`: a contract that deposits ether through CoreWriter can bid on
/// `BASE-QUOTE`; Core deposits and withdrawals of it are then invalid, as for any native
/// asset); on a configured genesis it has none. The development EVM account
/// ([`dev_evm_key`]) holds [`dev_evm_balance`], and each of the
/// [`DevnetConfig::evm_load_accounts`] holds [`crate::load_evm::LOAD_BALANCE`]. Every other genesis asset has an ERC-20
/// token named by its genesis name, with its decimals.
pub fn execution_config(config: &DevnetConfig) -> Result<ExecutionConfig, HostError> {
    let native_asset = match config.genesis {
        Some(_) => execution::NO_NATIVE_ASSET,
        None => devnet_native_asset(config)?,
    };
    let dev = evm_address(&config.dev_evm_secret()?)?;
    let mut alloc = vec![(dev, dev_evm_balance())];
    alloc.extend(
        crate::load_evm::load_addresses(config.order_seed, config.evm_load_accounts)
            .into_iter()
            .map(|address| (address, crate::load_evm::LOAD_BALANCE)),
    );
    let roles = config.dev_roles();
    let public = |key: &ed25519_dalek::SigningKey| key.verifying_key().to_bytes();
    Ok(ExecutionConfig {
        chain_id: config.chain_id_bytes()?,
        faucets: roles.iter().map(|r| public(&r.faucet)).collect(),
        feeders: roles.iter().map(|r| public(&r.feeder)).collect(),
        engine: config
            .engine
            .unwrap_or(EngineLimits {
                max_resting_orders: 1 << 20,
                max_open_orders_per_account: 1 << 16,
            })
            .into(),
        evm: execution::EvmGenesis {
            native_asset,
            alloc,
            timestamp: config.genesis_time_ms / 1000,
            tokens: genesis_tokens(config)?,
            ..Default::default()
        },
        funding_interval_s: config.funding_interval_s,
        core_gas_limit: execution::DEFAULT_CORE_GAS_LIMIT,
    })
}

/// The names and decimals of the genesis assets, for their ERC-20 tokens.
fn genesis_tokens(config: &DevnetConfig) -> Result<Vec<execution::TokenSpec>, HostError> {
    crate::genesis::translate_genesis(&config.genesis_lines()?)
        .map(|(translator, _)| translator.token_specs())
        .map_err(|e| HostError::Config(format!("genesis: {e}")))
}

/// The quote asset of the devnet's market.
fn devnet_native_asset(config: &DevnetConfig) -> Result<engine::AssetId, HostError> {
    config
        .genesis_commands()?
        .iter()
        .find_map(|command| match command {
            engine::Command::CreateMarket(m) if m.market == load::MARKET => Some(m.quote),
            _ => None,
        })
        .ok_or_else(|| HostError::Config("the genesis has no devnet market".into()))
}

/// The chain state at genesis (the configured validators and stakes) and the peers.
pub(super) fn genesis_chain(config: &DevnetConfig) -> Result<(ChainState, Vec<Peer>), HostError> {
    let mut genesis = Vec::new();
    let mut peers = Vec::new();
    for v in &config.validators {
        let id = ValidatorId(unhex32(&v.key)?);
        genesis.push(Validator { id, stake: v.stake });
        peers.push(Peer { id, addr: v.addr });
    }
    let chain = ChainState::genesis(
        config.chain_id_bytes()?,
        genesis,
        config.chain_params.params()?,
        execution::genesis_coprocessors(),
    )
    .map_err(|e| HostError::Config(format!("validator set: {e}")))?;
    Ok((chain, peers))
}

/// The core's configuration from the devnet's timeouts.
pub(super) fn consensus_config(chain_id: [u8; 32], t: &TimeoutsMs) -> ConsensusConfig {
    ConsensusConfig {
        timeouts: TimeoutConfig {
            propose_ns: t.propose * MS,
            prevote_ns: t.prevote * MS,
            precommit_ns: t.precommit * MS,
            delta_ns: t.delta * MS,
            rebroadcast_ns: t.rebroadcast * MS,
        },
        ..ConsensusConfig::new(chain_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn genesis_params(table: &str) -> GenesisParams {
        #[derive(Deserialize)]
        struct File {
            chain_params: GenesisParams,
        }
        let file: File = toml::from_str(&format!("[chain_params]\n{table}")).unwrap();
        file.chain_params
    }

    #[test]
    fn every_chain_parameter_can_be_set_at_genesis_by_its_name() {
        let table: String = ParamKey::ALL
            .iter()
            .enumerate()
            .map(|(i, key)| format!("{} = {}\n", key.name(), 100 + i))
            .collect();
        let params = genesis_params(&table).params().unwrap();
        for (i, key) in ParamKey::ALL.into_iter().enumerate() {
            assert_eq!(params.get(key), 100 + i as u64, "{}", key.name());
        }
        let empty = genesis_params("").params().unwrap();
        assert_eq!(empty, ChainParams::default());
    }

    #[test]
    fn an_unknown_or_out_of_range_chain_parameter_is_an_error_that_names_it() {
        let typo = genesis_params("slash_fraction = 100\n")
            .params()
            .unwrap_err();
        let typo = typo.to_string();
        assert!(typo.contains("no parameter \"slash_fraction\""), "{typo}");
        assert!(
            typo.contains("slash_fraction_bps"),
            "lists the known names: {typo}"
        );
        let too_big = genesis_params("slash_fraction_bps = 10001\n")
            .params()
            .unwrap_err();
        let too_big = too_big.to_string();
        assert!(too_big.contains("slash_fraction_bps = 10001"), "{too_big}");
        let flags = GenesisParams::default()
            .with(ParamKey::MinStake, Some(7))
            .with(ParamKey::JailPeriodBlocks, None);
        assert_eq!(flags.params().unwrap().min_stake, 7);
        assert_eq!(flags.0.len(), 1, "an absent option sets nothing");
    }
}
