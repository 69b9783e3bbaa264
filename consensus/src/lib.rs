//! NexusBFT: will replicate sequenced blocks among validators over QUIC (issue #7).
//!
//! Nothing is built here yet; the crate exists so the workspace has its final shape.
