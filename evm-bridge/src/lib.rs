//! NexusEVM's shell (docs/evm.md) around the pure `evm` crate (executor, precompiles,
//! CoreWriter, bridge queues), re-exported here under the same paths as before the split.
//! The EVM runs inside every validator (`execution::Execution`, which also owns the tests of
//! the bridge's rules); `nexus-evm` is a mode of the node (`node/src/bin/nexus-evm.rs`).
//!
//! - [`eth`]: Ethereum JSON-RPC parsing, error texts and block / receipt / log JSON, used
//!   by the validator's port (`eth_rpc`).
//! - [`filters`]: log criteria and the polling filters (`eth_newFilter` and the rest).
//! - [`dev_sign`]: development accounts' signing (`eth_sendTransaction`, `eth_sign`,
//!   `personal_sign`, `eth_signTypedData_v4`) and the filling of transaction requests.

pub use evm::{
    actions, bridge, commitment, core_view, executor, history, precompiles, system, trace,
};

pub mod dev_sign;
pub mod eth;
pub mod filters;
