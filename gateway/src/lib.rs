//! Gateway: the binary order-entry protocol and its server, the market-data feed, and the Rust
//! client library.
//!
//! - [`wire`]: the fixed-layout little-endian messages (zerocopy), as in docs/protocol.md.
//! - [`order_entry`]: the order-entry port's state machine (login, sessions, resend, orders).
//! - [`market_data`]: the market-data port's state machine (L2 books, trades, snapshots, replay).
//! - [`server`]: the mio socket shell around both, driven by the node's event loop.
//! - [`client`]: the Rust client library (order entry, market data, an L2 book with gap
//!   detection).

pub mod client;
pub mod connections;
pub mod market_data;
pub mod order_entry;
pub mod server;
pub mod wire;
