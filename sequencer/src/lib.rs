//! Sequencer: one deterministic order for every input, blocks, the write-ahead log (LMDB),
//! snapshots and recovery.
//!
//! - [`Sequencer`] is a pure state machine: it numbers inputs and cuts [`Block`]s by count or
//!   age, with time passed in.
//! - [`Wal`] stores blocks, snapshots and metadata in LMDB (heed); a block is durable when
//!   [`Wal::append`] returns.
//! - [`recover`] rebuilds the engine from the newest snapshot and the blocks after it.
//!
//! The threads that run these stages live in the `node` crate.

pub mod block;
pub mod codec;
pub mod lock;
pub mod pipeline;
mod recovery;
mod sequencer;
pub mod wal;

pub use block::{Block, BlockError};
pub use lock::{DataDirLock, LockError};
pub use pipeline::{
    ClientRef, Output, Pipeline, PipelineConfig, StageTimes, StageWaits, Submission, Wait,
};
pub use recovery::{hex, recover, Recovered};
pub use sequencer::{ChainTip, Sequencer, SequencerConfig};
pub use wal::{StoredSnapshot, Wal, WalError, WalOptions};
