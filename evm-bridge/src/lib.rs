//! NexusEVM's shell (docs/evm.md): persistence and Ethereum JSON-RPC around the pure `evm`
//! crate (executor, precompiles, CoreWriter, bridge queues), re-exported here under the
//! same paths as before the split.
//!
//! - [`chain`]: a standalone chain (its own engine) running Core blocks and EVM blocks in
//!   step, for the `nexus-evm` devnet; the composed chain is `execution::Execution`.
//! - [`store`]: LMDB persistence of accounts, code, storage, blocks and receipts.
//! - [`eth`]: Ethereum JSON-RPC parsing, error texts and block / receipt / log JSON, shared
//!   with the validator's port.
//! - [`rpc`]: the JSON-RPC shell (jsonrpsee over HTTP) around a [`chain::Chain`] thread.

pub use evm::{actions, bridge, commitment, core_view, executor, precompiles, system};

pub mod chain;
pub mod devnet;
pub mod eth;
pub mod rpc;
pub mod store;
