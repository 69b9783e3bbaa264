//! The node's configuration file (TOML). The documented default is `node/nexus.default.toml`,
//! embedded in the binary; every field has a default, unknown fields are errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default configuration, as shipped (and printed by `nexus config`).
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../nexus.default.toml");

/// Everything `nexus run` and `nexus pipeline` read.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Folder for the write-ahead log.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The JSON Lines order-entry port.
    #[serde(default)]
    pub ingress: IngressConfig,
    /// The binary order-entry and market-data ports.
    #[serde(default)]
    pub gateway: GatewaySection,
    /// Engine sizing.
    #[serde(default)]
    pub engine: EngineSection,
    /// Block cutting.
    #[serde(default)]
    pub blocks: BlocksConfig,
    /// Threads and rings.
    #[serde(default)]
    pub pipeline: PipelineSection,
    /// The write-ahead log.
    #[serde(default)]
    pub wal: WalSection,
    /// Perpetual futures operations.
    #[serde(default)]
    pub perps: PerpsSection,
    /// What the node prints on stderr while it runs.
    #[serde(default)]
    pub log: LogSection,
    /// The chain `nexus run` runs: its other ports, development keys, block pacing.
    #[serde(default)]
    pub chain: ChainSection,
    /// Assets, markets and opening balances of a new chain.
    #[serde(default)]
    pub genesis: Genesis,
}

/// `[chain]`: what `nexus run`'s chain of one validator adds to the shared sections.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChainSection {
    /// The transaction port (signed transactions, docs/transactions.md).
    pub tx_listen: SocketAddr,
    /// The Ethereum JSON-RPC port (docs/evm.md).
    pub eth_listen: SocketAddr,
    /// The validator's consensus endpoint (QUIC over UDP; no peers on a chain of one).
    pub consensus_listen: SocketAddr,
    /// Development accounts whose keys the node derives, writes to `dev-keys.txt` and signs
    /// JSON lines for.
    pub dev_accounts: u64,
    /// Without transactions, a block at most this often (ms; 0: blocks back to back).
    pub empty_block_interval_ms: u64,
    /// A snapshot of the executed state every this many blocks (0: never).
    pub snapshot_every: u64,
    /// Most transactions a second one client connection may send (0: no limit).
    pub connection_rate: u64,
    /// Most transactions a second one account may have admitted, over all its connections
    /// (0: no limit).
    pub account_rate: u64,
    /// Most transactions in one block.
    pub max_block_txs: u32,
    /// Blocks before the head whose EVM state the node keeps for Ethereum JSON-RPC reads
    /// and calls at a past block (docs/evm.md).
    pub eth_state_blocks: u64,
}

impl Default for ChainSection {
    fn default() -> Self {
        ChainSection {
            tx_listen: "127.0.0.1:7073".parse().expect("valid address"),
            eth_listen: "127.0.0.1:8545".parse().expect("valid address"),
            consensus_listen: "127.0.0.1:0".parse().expect("valid address"),
            dev_accounts: 10,
            empty_block_interval_ms: 1_000,
            snapshot_every: 1_000,
            connection_rate: 50_000,
            account_rate: crate::validator::DEFAULT_ACCOUNT_RATE,
            max_block_txs: 1_000,
            eth_state_blocks: eth_rpc::STATE_BLOCKS as u64,
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("nexus-data")
}

/// `[ingress]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngressConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Most connections at once.
    pub max_connections: usize,
    /// Longest accepted line, bytes.
    pub max_line_bytes: usize,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            listen: "127.0.0.1:7070".parse().expect("valid address"),
            max_connections: 256,
            max_line_bytes: 4096,
        }
    }
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// Binary order-entry listen address.
    pub order_entry_listen: SocketAddr,
    /// Market-data listen address.
    pub market_data_listen: SocketAddr,
    /// Most connections per port.
    pub max_connections: usize,
    /// Most sessions held (connected or waiting for a resume).
    pub max_sessions: usize,
    /// Most sessions per account.
    pub max_sessions_per_account: usize,
    /// Server messages kept per session for resend.
    pub resend_messages: usize,
    /// Server messages kept for resend over all sessions (each keeps at most its share).
    pub max_resend_total: usize,
    /// Seconds a disconnected session is kept for a resume.
    pub session_linger_s: u64,
    /// Seconds allowed between connect and login.
    pub login_timeout_s: u64,
    /// Unsent bytes after which a connection is dropped as a slow consumer, MiB.
    pub max_pending_mib: usize,
    /// Unsent bytes over all of a port's connections, MiB: past it, the connection with the
    /// most is dropped as a slow consumer.
    pub max_unsent_total_mib: usize,
    /// Update and trade messages kept per market for replay.
    pub replay_messages: usize,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            order_entry_listen: "127.0.0.1:7071".parse().expect("valid address"),
            market_data_listen: "127.0.0.1:7072".parse().expect("valid address"),
            max_connections: 1024,
            max_sessions: 1024,
            max_sessions_per_account: 16,
            resend_messages: 10_000,
            max_resend_total: 1_000_000,
            session_linger_s: 300,
            login_timeout_s: 5,
            max_pending_mib: 16,
            max_unsent_total_mib: 256,
            replay_messages: 65_536,
        }
    }
}

/// `[engine]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// See `engine::EngineConfig`.
    pub max_resting_orders: u32,
    /// See `engine::EngineConfig`.
    pub max_open_orders_per_account: u32,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            max_resting_orders: 1 << 20,
            max_open_orders_per_account: 10_000,
        }
    }
}

/// `[blocks]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BlocksConfig {
    /// Inputs per block at most.
    pub max_inputs: u32,
    /// Block age limit, microseconds.
    pub max_age_us: u64,
}

impl Default for BlocksConfig {
    fn default() -> Self {
        BlocksConfig {
            max_inputs: 1024,
            max_age_us: 1000,
        }
    }
}

/// A stage's idle behaviour.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WaitMode {
    /// Sleep until woken.
    Park,
    /// Busy-poll.
    Spin,
}

impl From<WaitMode> for sequencer::Wait {
    fn from(mode: WaitMode) -> Self {
        match mode {
            WaitMode::Park => sequencer::Wait::Park,
            WaitMode::Spin => sequencer::Wait::Spin,
        }
    }
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// Ring slots.
    pub ring_capacity: usize,
    /// Snapshot period in blocks (0: never).
    pub snapshot_every_blocks: u64,
    /// Pin stage threads.
    pub pin_threads: bool,
    /// Number inputs on the event-loop thread instead of a sequencer thread.
    pub inline_sequencer: bool,
    /// Also execute them there (needs `inline_sequencer`).
    pub fused_engine: bool,
    /// Sequencer idle mode (when it has its own thread).
    pub wait_sequencer: WaitMode,
    /// Engine idle mode.
    pub wait_engine: WaitMode,
    /// WAL writer idle mode.
    pub wait_wal: WaitMode,
    /// Publisher idle mode.
    pub wait_publisher: WaitMode,
}

impl Default for PipelineSection {
    fn default() -> Self {
        PipelineSection {
            ring_capacity: 65_536,
            snapshot_every_blocks: 10_000,
            pin_threads: false,
            inline_sequencer: true,
            fused_engine: true,
            wait_sequencer: WaitMode::Park,
            wait_engine: WaitMode::Park,
            wait_wal: WaitMode::Park,
            wait_publisher: WaitMode::Park,
        }
    }
}

/// `[wal]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WalSection {
    /// LMDB map size, MiB.
    pub map_size_mib: usize,
    /// fsync on commit.
    pub sync: bool,
}

impl Default for WalSection {
    fn default() -> Self {
        WalSection {
            map_size_mib: 16 << 10,
            sync: true,
        }
    }
}

/// `[perps]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PerpsSection {
    /// Seconds between the funding inputs the node sequences for every perp market (0: none;
    /// funding then comes only from `funding` lines).
    pub funding_interval_s: u64,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Seconds between status lines on stderr (height, inputs/s, connections, ack p50);
    /// 0: none.
    pub status_interval_s: u64,
    /// Least severe `tracing` level printed on stderr: "error", "warn", "info", "debug",
    /// "trace" or "off".
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            status_interval_s: 10,
            level: "info".to_string(),
        }
    }
}

impl Default for PerpsSection {
    fn default() -> Self {
        PerpsSection {
            funding_interval_s: 3600,
        }
    }
}

/// `[genesis]`: what block 1 of a new chain holds.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Genesis {
    /// Assets, in id order.
    pub assets: Vec<GenesisAsset>,
    /// Markets, in id order.
    pub markets: Vec<GenesisMarket>,
    /// Perpetual futures markets, after the spot markets: each table holds the fields of a
    /// `perp_market` line of docs/replay.md (`market`, `collateral`, `tick`, `lot`, ...).
    pub perp_markets: Vec<toml::Table>,
    /// Opening balances.
    pub deposits: Vec<GenesisDeposit>,
    /// Collateral moved from spot balances into perp cross collateral, after the deposits.
    pub transfers: Vec<GenesisTransfer>,
    /// Opening oracle prices of perp markets (perp orders need one), last.
    pub oracles: Vec<GenesisOracle>,
}

/// One opening collateral transfer (`transfer` line).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GenesisTransfer {
    /// The account.
    pub account: u64,
    /// Amount of the collateral asset, decimal (> 0: spot to perp).
    pub amount: String,
}

/// One opening oracle update (`oracle` line).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GenesisOracle {
    /// The perp market's name.
    pub market: String,
    /// Source prices, decimal strings (1..=8).
    pub prices: Vec<String>,
}

/// One asset.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GenesisAsset {
    /// Its name.
    pub name: String,
    /// Decimal places of its smallest unit.
    pub decimals: u32,
}

/// One market.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GenesisMarket {
    /// Its name.
    pub name: String,
    /// Base asset name.
    pub base: String,
    /// Quote asset name.
    pub quote: String,
    /// Price step, decimal.
    pub tick: String,
    /// Size step, decimal.
    pub lot: String,
    /// Smallest order size, decimal.
    pub min_qty: String,
    /// Maker fee, bps (negative: rebate).
    #[serde(default)]
    pub maker_fee_bps: i32,
    /// Taker fee, bps.
    #[serde(default)]
    pub taker_fee_bps: i32,
}

/// One opening balance.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GenesisDeposit {
    /// The account.
    pub account: u64,
    /// Asset name.
    pub asset: String,
    /// Amount, decimal.
    pub amount: String,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid configuration {origin}: {source}")]
    Parse {
        /// Which file (or "(default)").
        origin: String,
        /// What is wrong.
        source: Box<toml::de::Error>,
    },
}

impl NodeConfig {
    /// Parses TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            origin: origin.to_string(),
            source: Box::new(source),
        })
    }

    /// The embedded default.
    pub fn default_config() -> NodeConfig {
        Self::from_toml(DEFAULT_CONFIG_TOML, "(default)").expect("the shipped default parses")
    }

    /// Reads a file, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<NodeConfig, ConfigError> {
        match path {
            None => Ok(Self::default_config()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Self::from_toml(&text, &path.display().to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_parses_and_matches_the_code_defaults() {
        let config = NodeConfig::default_config();
        assert_eq!(config.ingress, IngressConfig::default());
        assert_eq!(config.gateway, GatewaySection::default());
        assert_eq!(config.engine, EngineSection::default());
        assert_eq!(config.blocks, BlocksConfig::default());
        assert_eq!(config.pipeline, PipelineSection::default());
        assert_eq!(config.wal, WalSection::default());
        assert_eq!(config.perps, PerpsSection::default());
        assert_eq!(config.genesis.markets.len(), 1);
        assert_eq!(config.genesis.perp_markets.len(), 1);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_errors() {
        assert!(NodeConfig::from_toml("colour = 1", "t").is_err());
        assert!(NodeConfig::from_toml("[pipeline]\nwait_engine = \"nap\"", "t").is_err());
        let minimal = NodeConfig::from_toml("", "t").unwrap();
        assert_eq!(minimal.data_dir, PathBuf::from("nexus-data"));
        assert!(minimal.genesis.assets.is_empty());
    }
}
