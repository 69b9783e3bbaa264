//! Sequencer: will put every input in one deterministic order, cut blocks, keep the
//! write-ahead log in LMDB, take snapshots and recover (issue #3).
//!
//! Nothing is built here yet; the crate exists so the workspace has its final shape.
