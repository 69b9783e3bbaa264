//! The `nexus` binary's library: command-line tools over the engine.
//!
//! - [`replay`]: `nexus replay`, JSON Lines commands in and events out (`docs/replay.md`).
//! - [`decimal`]: exact decimal text to integer units and back.

pub mod decimal;
pub mod replay;
