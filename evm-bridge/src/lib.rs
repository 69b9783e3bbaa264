//! NexusEVM's shell (docs/evm.md) around the pure `evm` crate (executor, precompiles,
//! CoreWriter, bridge queues), re-exported here under the same paths as before the split.
//! The EVM runs inside every validator (`execution::Execution`); `nexus-evm` is a mode of
//! the node (`node/src/bin/nexus-evm.rs`).
//!
//! - [`eth`]: Ethereum JSON-RPC parsing, error texts and block / receipt / log JSON, used
//!   by the validator's port (`node::chain_eth`).
//! - [`chain`]: a test harness: the bridge's Core and EVM blocks in step on an engine of its
//!   own, without consensus or transactions' signatures, for the tests of the bridge's
//!   rules (`tests/chain.rs`, `tests/abuse.rs`).

pub use evm::{actions, bridge, commitment, core_view, executor, precompiles, system};

pub mod chain;
pub mod devnet;
pub mod eth;
