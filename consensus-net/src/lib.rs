//! NexusBFT's I/O, kept out of the pure `consensus` crate.
//!
//! - [`transport`]: QUIC between validator processes (quinn, rustls with the ring
//!   provider). Mutual TLS 1.3 where each certificate is self-signed with the validator's
//!   ed25519 key, and both sides accept only pinned validator keys ([`verifier`]).
//! - [`inbox`]: one bounded queue of received frames per peer, taken in turn.
//! - [`identity`]: building that certificate from a validator seed, and reading the key
//!   back out of a peer's certificate.
//! - [`store`]: the append-only file of committed blocks with their commit certificates
//!   (votes and locks are in `consensus::safety::FileStore`).
//!
//! Frames are opaque bytes here; the host (`nexus validator`) puts consensus messages and
//! block-sync requests in them. See `docs/consensus.md`, "Transport".

pub mod identity;
pub mod inbox;
pub mod store;
pub mod transport;
pub mod verifier;

pub use identity::{validator_key, Identity, IdentityError};
pub use inbox::Inbox;
pub use store::{BlockArchive, BlockStore, BlockStoreError, StoredCertificates};
pub use transport::{Congestion, Lane, NetConfig, NetError, NetStats, Network, Peer, Received};
