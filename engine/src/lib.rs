//! NexusCore: the deterministic spot exchange engine.
//!
//! A pure state machine: [`Engine::step`] takes one sequenced [`Command`] and appends the
//! [`Event`]s it caused. No I/O, clocks, threads, floats or hash-seeded iteration; the data
//! path allocates nothing once the engine is sized (see [`EngineConfig`]). Two engines fed the
//! same commands produce the same events and the same [`Engine::state_hash`].
//!
//! The exact rules (units, reserves, fees, matching, the order of checks) are in
//! `docs/engine.md`.

pub mod cpu;
mod engine;
pub mod ladder;
mod types;

pub use engine::{
    Engine, EngineImage, LiquidationStats, MarginView, OrderView, PerpMarketView, PositionView,
    Shortfall, SnapshotError, LIQUIDATION_OID,
};
pub use ladder::{ArrayLadder, BTreeLadder, PriceLadder};
pub use types::*;

/// The engine on the `BTreeMap` ladder: same behaviour, kept as the benchmark baseline.
pub type BTreeEngine = Engine<BTreeLadder>;
