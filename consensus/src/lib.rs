//! NexusBFT: the consensus layer of Nexus (issue #7).
//!
//! - [`protocol`]: Tendermint (Buchman, Kwon, Milosevic 2018, Algorithm 1) as a pure state
//!   machine: `(state, input, now) -> outputs`. No I/O, no clock, no randomness.
//! - [`safety`]: what a validator persists before it signs, so a restart never double-votes.
//! - [`validators`], [`governance`], [`chain`]: the validator set with stakes, epochs and
//!   slashing; the co-processor registry and governance proposals; the per-block state
//!   machine that applies them.
//! - [`host`]: the validator host around the core (timers, sync, `PeerBehind` answers, the
//!   decided-block sequence) as a sans-IO state machine, driven by `nexus validator` over
//!   QUIC and by [`sim`] in memory.
//! - [`sim`]: a seeded, virtual-time simulator of a whole cluster with a faulty network,
//!   crashes, restarts and an equivocating validator.
//!
//! See `docs/consensus.md` for the protocol, the message layouts and the quorum math.

pub mod block;
pub mod chain;
mod codec;
pub mod governance;
pub mod host;
pub mod messages;
pub mod protocol;
pub mod safety;
pub mod sim;
pub mod types;
pub mod validators;

pub use codec::DecodeError;
