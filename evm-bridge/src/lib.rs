//! NexusEVM bridge: will run revm with engine precompiles, the cross-domain queues and
//! Ethereum JSON-RPC (issue #6).
//!
//! Nothing is built here yet; the crate exists so the workspace has its final shape.
