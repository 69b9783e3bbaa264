//! NexusEVM's pure part (docs/evm.md): an EVM (revm, Cancun rules) beside NexusCore, with
//! Core read precompiles, the CoreWriter system contract and native-token bridging. It never
//! touches files, sockets, clocks or threads; `execution` owns it inside a chain, and
//! `evm-bridge` adds LMDB persistence and the Ethereum JSON-RPC server around it.
//!
//! Layers, bottom up:
//! - [`system`], [`actions`], [`core_view`], [`precompiles`]: addresses, ABI, gas, and what
//!   the EVM may see of Core and send to it.
//! - [`executor`]: `execute_block(inputs) -> outputs` over in-memory state (one owner).
//! - [`access_list`]: the tracer of `eth_createAccessList`.
//! - [`block`]: Ethereum's header, transactions and receipts tries, system transaction
//!   envelope and block size, from what the executor records.
//! - [`bridge`]: CoreWriter actions to engine commands, engine events to callbacks and
//!   credits.
//! - [`trie`]: an incremental Merkle-Patricia trie over hashed keys (alloy-trie's hash
//!   builder fed with what changed and the cached hashes of unchanged branches), with proofs.
//! - [`commitment`]: the EVM state root, Ethereum's (the account trie with each account's
//!   storage trie, updated from each block's state diff), and EIP-1186 proofs.
//! - [`history`]: the state after recent past blocks (each block's undo over the head's
//!   state), for reads and calls at a past block.
//! - [`token`]: the ERC-20 contract of each Core spot asset (code, genesis storage, mint).
//! - [`trace`]: geth's struct-log and call tracers over a call or a transaction
//!   re-executed in its block (`debug_traceCall`, `debug_traceTransaction`).

pub mod access_list;
pub mod actions;
pub mod block;
pub mod bridge;
pub mod commitment;
pub mod core_view;
pub mod executor;
pub mod history;
pub mod precompiles;
pub mod system;
pub mod token;
pub mod trace;
pub mod trie;
