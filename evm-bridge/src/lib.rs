//! NexusEVM: an EVM (revm, Cancun rules) beside NexusCore, with Core read precompiles, the
//! CoreWriter system contract, native-token bridging and Ethereum JSON-RPC (docs/evm.md).
//!
//! Layers, pure to impure:
//! - [`system`], [`actions`], [`core_view`], [`precompiles`]: addresses, ABI, gas, and what
//!   the EVM may see of Core and send to it.
//! - [`executor`]: `execute_block(inputs) -> outputs` over in-memory state (one owner).
//! - [`bridge`]: CoreWriter actions to engine commands, engine events to callbacks and
//!   credits; [`chain`] runs Core blocks and EVM blocks in step (same height).
//! - [`store`]: LMDB persistence of accounts, code, storage, blocks and receipts.
//! - [`rpc`]: the JSON-RPC shell (jsonrpsee over HTTP) around a [`chain::Chain`] thread.

pub mod actions;
pub mod bridge;
pub mod chain;
pub mod core_view;
pub mod devnet;
pub mod executor;
pub mod precompiles;
pub mod rpc;
pub mod store;
pub mod system;
