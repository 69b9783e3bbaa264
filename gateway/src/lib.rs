//! Gateway: will hold the binary order-entry protocol, the market-data feed and the client
//! library (issue #4).
//!
//! Nothing is built here yet; the crate exists so the workspace has its final shape.
