//! The `nexus` binary's library: the node and its command-line tools.
//!
//! - [`chain_run`]: `nexus run`, a chain of one validator ([`validator`]) from the node
//!   configuration.
//! - [`server`]: `nexus pipeline`, the unreplicated exchange pipeline (JSON Lines order
//!   entry, sequencer, engine, LMDB log; no consensus, no signatures, no EVM).
//! - [`client`]: `nexus send` and `nexus query`, a client of the JSON port.
//! - [`config`]: the node's TOML configuration and its embedded default.
//! - [`genesis`]: the registry and opening balances a chain starts from.
//! - [`wal_tool`]: `nexus wal dump | info | truncate`.
//! - [`validator`]: `nexus validator`, one NexusBFT validator process of a devnet.
//! - [`load`]: the devnet's deterministic stream of signed transactions.
//! - [`load_evm`]: the devnet's EVM load (accounts funded at genesis, raw transactions sent
//!   to every validator's Ethereum JSON-RPC port, receipts counted).
//! - [`fault_proxy`]: UDP proxies between validators that partition, delay and drop (tests).
//!
//! The JSON Lines protocol they speak (the translator, decimals, read-only queries) is the
//! `json_lines` crate.

pub mod chain_actions;
pub mod chain_cli;
pub mod chain_gateway;
pub mod chain_gov;
pub mod chain_json;
pub mod chain_run;
pub mod client;
pub mod config;
pub mod fault_proxy;
pub mod genesis;
pub mod load;
pub mod load_evm;
pub mod rate;
pub mod server;
pub mod validator;
pub mod wal_tool;
