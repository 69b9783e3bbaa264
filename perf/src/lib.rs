//! Benchmarks for Nexus.
//!
//! The reusable pieces live here so every benchmark binary stays a thin `main`:
//! - [`latency`]: per-operation latency recording (HDR histogram, nanoseconds) and the cost
//!   of the clock itself;
//! - [`memory`]: heap accounting through `stats_alloc` (the binary installs the allocator);
//! - [`report`]: number formatting, plain-text tables and JSON helpers;
//! - [`workload`]: the exchange-core order-flow generator;
//! - [`engine_bench`]: the engine benchmark itself (`engine-bench`), array ladder against
//!   the `BTreeMap` baseline on the same stream;
//! - [`pipeline_bench`]: the sequencer + engine + WAL pipeline (`pipeline-bench`) against the
//!   bare engine;
//! - [`gateway_bench`]: `nexus-perf`, a running node measured over the real gateway (order
//!   entry and market data) against a raw loopback TCP ping-pong;
//! - [`cluster`]: `nexus-perf --cluster N`, a multi-validator devnet with signed client
//!   orders through the gateways, against this machine's signature-verification bound;
//! - [`evm_load`]: `nexus-perf --cluster N --cluster-evm KIND`, EVM transactions through a
//!   devnet against the in-process execution bound of the same transactions;
//! - [`lobster`]: real NASDAQ flow (a LOBSTER sample day read from its zip), replayed through
//!   the engine with the book checked against the file after every message, and timed;
//! - [`peers`]: order-book crates from crates.io driven with `engine-bench`'s command
//!   stream, their fills checked against the engine's;
//! - [`perp_bench`]: `perp-bench`, pre-trade risk per perp order against spot, liquidation
//!   index against a full margin scan, bytes per account and position.
//!
//! Speed figures are printed, never asserted: the tests here check determinism and shape
//! only. See `docs/perf.md`.

pub mod cluster;
pub mod engine_bench;
pub mod evm_load;
pub mod gateway_bench;
pub mod latency;
pub mod lobster;
pub mod memory;
pub mod peers;
pub mod perp_bench;
pub mod pipeline_bench;
pub mod report;
pub mod sig_bench;
pub mod workload;
