//! The JSON Lines protocol (docs/replay.md, docs/pipeline.md): the text format of
//! `nexus replay`, `nexus pipeline`'s order-entry port and a validator's JSON development port.
//!
//! - [`replay`]: the [`replay::Translator`], which turns each input line into engine commands
//!   and the engine's events back into records (no I/O, no engine inside); the
//!   [`replay::Replayer`] (a translator driving an engine) and `nexus replay`'s streaming loop.
//! - [`decimal`]: exact decimal text to integer units (ticks, lots, asset units) and back.
//! - [`queries`]: the read-only queries (`book`, `balances`, `orders`, `positions`) and the
//!   `balance` record, answered from an engine's current state.
//!
//! No sockets, files or threads: the node's shells (`node/src/server.rs`,
//! `node/src/chain_json.rs`) carry the lines.

pub mod decimal;
pub mod queries;
pub mod replay;
