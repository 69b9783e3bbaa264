//! Co-processors: NexusCore hosts enshrined engines behind one interface
//! (docs/execution.md, "Co-processors").
//!
//! - The CLOB engine is co-processor [`CLOB`] (id 0), active from genesis. Its public
//!   functions are the typed Core actions (place, cancel, ...); its state root is the engine's;
//!   its Core gas is [`clob_gas`]. The execution holds it as a concrete engine because the
//!   EVM's precompiles, CoreWriter, the gateway and market data read it directly.
//! - Every other co-processor implements [`Coprocessor`]: a Core transaction reaches it with an
//!   `Action::Call` (its id, a method byte, 24 bytes of arguments); it charges Core gas for
//!   each call, answers with 32 bytes or a [`Refusal`], keeps its own state root and writes its
//!   state as bytes.
//! - Which co-processors run is the consensus layer's registry (id, version, code hash,
//!   parameters, active). The node's binary carries a [`Catalog`] of implementations keyed by
//!   code hash: governance activates a co-processor by naming one of them, so a second engine
//!   is enshrined without touching the node, only by a binary that has its code.
//! - Registry changes reach the execution after a block ([`crate::Execution::sync_registry`])
//!   and hold from the next block on: validation and execution of a block always see the
//!   same set.

mod clob;
mod notary;

use std::collections::BTreeMap;

use engine::AccountId;
use transactions::CALL_ARGS_LEN;

pub use clob::{clob_code_hash, clob_gas};
pub use notary::{notary_code_hash, Notary};

/// A co-processor's id in the registry.
pub type CoprocessorId = u32;

/// The registry id of the CLOB engine, NexusCore's first co-processor.
pub const CLOB: CoprocessorId = 0;

/// Core gas every transaction pays before its actions (its signature and nonce).
pub const TX_BASE_GAS: u64 = 10;

/// Core gas of a call that reaches no active co-processor, or names a method it does not
/// have (the call is refused, its gas still counts).
pub const CALL_BASE_GAS: u64 = 10;

/// A co-processor's named integer parameters (the registry's, changed by governance).
pub type Params = BTreeMap<String, u64>;

/// Why a call did nothing: a stable code for clients, and what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Refusal {
    /// Stable snake_case code.
    pub code: &'static str,
    /// One line for people.
    pub reason: &'static str,
}

impl Refusal {
    /// No active co-processor has this id.
    pub const INACTIVE: Refusal = Refusal {
        code: "coprocessor_inactive",
        reason: "no active co-processor has this id",
    };
    /// The co-processor has no such method.
    pub const UNKNOWN_METHOD: Refusal = Refusal {
        code: "unknown_method",
        reason: "the co-processor has no such method",
    };
    /// The arguments are not what the method takes.
    pub const BAD_ARGS: Refusal = Refusal {
        code: "bad_args",
        reason: "the arguments are not what the method takes",
    };
}

/// One call as a co-processor receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call<'a> {
    /// The signer's account: a call acts for it alone.
    pub account: AccountId,
    /// Which public function.
    pub method: u8,
    /// Its arguments.
    pub args: &'a [u8; CALL_ARGS_LEN],
    /// The block's height.
    pub height: u64,
    /// The block's time, ms.
    pub time_ms: u64,
}

/// What one call returned.
pub type CallResult = Result<[u8; 32], Refusal>;

/// An enshrined engine NexusCore hosts. Pure and deterministic: the same calls in the same
/// order give the same results and roots on every validator.
pub trait Coprocessor: Send {
    /// Core gas of a call of `method` with `args`, `None` for a method it does not have. A
    /// function of `method` and `args` alone (never of the state): a block's validation and
    /// its execution count the same gas.
    fn gas(&self, method: u8, args: &[u8; CALL_ARGS_LEN]) -> Option<u64>;
    /// Runs one call.
    fn call(&mut self, call: &Call<'_>) -> CallResult;
    /// A read-only query of `method` for `account` (the JSON port's `query`).
    fn query(&self, account: AccountId, method: u8, args: &[u8; CALL_ARGS_LEN]) -> CallResult;
    /// Its state root: a function of its state alone.
    fn root(&self) -> [u8; 32];
    /// Its state as bytes (its implementation's [`Implementation::restore`] reads them).
    fn snapshot(&self) -> Vec<u8>;
    /// New parameters from the registry (applied between blocks).
    fn set_params(&mut self, params: &Params);
}

/// One implementation the node's binary carries.
pub struct Implementation {
    /// Its name, for logs and errors.
    pub name: &'static str,
    /// The code hash a registry entry names it by.
    pub code_hash: [u8; 32],
    /// A fresh instance (empty state).
    pub new: fn(&Params) -> Box<dyn Coprocessor>,
    /// An instance from [`Coprocessor::snapshot`] bytes (of this or an earlier version of
    /// the same co-processor: an upgrade carries the state over).
    pub restore: RestoreFn,
}

/// Builds an instance from snapshot bytes, or says why it cannot.
pub type RestoreFn = fn(&[u8], &Params) -> Result<Box<dyn Coprocessor>, String>;

/// The implementations a node can run, by code hash.
pub struct Catalog {
    implementations: Vec<Implementation>,
}

impl Catalog {
    /// The co-processors this binary carries besides the CLOB: the notary ([`Notary`]).
    pub fn builtin() -> Catalog {
        Catalog {
            implementations: vec![notary::implementation()],
        }
    }

    /// The implementation with this name (`"notary"`).
    pub fn by_name(&self, name: &str) -> Option<&Implementation> {
        self.implementations.iter().find(|i| i.name == name)
    }

    /// The implementation with this code hash.
    pub fn find(&self, code_hash: &[u8; 32]) -> Option<&Implementation> {
        self.implementations
            .iter()
            .find(|i| &i.code_hash == code_hash)
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::builtin()
    }
}

/// One entry of the consensus layer's co-processor registry, as the execution needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryEntry {
    /// Registry id.
    pub id: CoprocessorId,
    /// Version (raised by every upgrade).
    pub version: u32,
    /// Which implementation.
    pub code_hash: [u8; 32],
    /// Named parameters.
    pub params: Params,
    /// Whether it runs.
    pub active: bool,
}

/// Why the execution cannot follow the registry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// An entry names code this binary does not carry: the node must be upgraded before it
    /// can execute the next block.
    #[error(
        "co-processor {id} version {version} names code {code} that this binary does not carry: \
         run a nexus release that has it"
    )]
    UnknownCode {
        /// Registry id.
        id: CoprocessorId,
        /// Version.
        version: u32,
        /// Code hash, hex.
        code: String,
    },
    /// The new code could not read the previous version's state.
    #[error("co-processor {id} version {version} could not take over its state: {error}")]
    Upgrade {
        /// Registry id.
        id: CoprocessorId,
        /// Version.
        version: u32,
        /// Why.
        error: String,
    },
}

/// A co-processor the execution holds: its registry entry and its state.
pub(crate) struct Hosted {
    pub(crate) entry: RegistryEntry,
    pub(crate) state: HostedState,
}

/// An active co-processor runs its code; an inactive one is only its state's bytes, so that
/// a validator whose binary lacks the code of an entry that never runs computes the same
/// root as one that has it.
pub(crate) enum HostedState {
    /// Active: the code's instance.
    Running(Box<dyn Coprocessor>),
    /// Inactive: its last snapshot (`None`: it never ran) and that snapshot's digest.
    Stored(Option<Vec<u8>>, [u8; 32]),
}

impl HostedState {
    /// An inactive state of these snapshot bytes.
    pub(crate) fn stored(bytes: Option<Vec<u8>>) -> HostedState {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"nexus-coprocessor-stored-v1");
        if let Some(bytes) = &bytes {
            hasher.update(&[1]);
            hasher.update(bytes);
        }
        let digest = *hasher.finalize().as_bytes();
        HostedState::Stored(bytes, digest)
    }

    /// Its state as snapshot bytes (`None`: it never ran).
    pub(crate) fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            HostedState::Running(instance) => Some(instance.snapshot()),
            HostedState::Stored(bytes, _) => bytes.clone(),
        }
    }

    /// The running instance, if active.
    pub(crate) fn running(&self) -> Option<&dyn Coprocessor> {
        match self {
            HostedState::Running(instance) => Some(&**instance),
            HostedState::Stored(..) => None,
        }
    }
}

impl Hosted {
    /// Its part of the Core root: id, version, code hash, active flag, then the running
    /// instance's state root or the stored snapshot's digest.
    pub(crate) fn commitment(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"nexus-coprocessor-v1");
        hasher.update(&self.entry.id.to_le_bytes());
        hasher.update(&self.entry.version.to_le_bytes());
        hasher.update(&self.entry.code_hash);
        hasher.update(&[u8::from(self.entry.active)]);
        match &self.state {
            HostedState::Running(instance) => hasher.update(&instance.root()),
            HostedState::Stored(_, digest) => hasher.update(digest),
        };
        *hasher.finalize().as_bytes()
    }
}

/// The code hash of a built-in implementation: `BLAKE3("nexus-coprocessor-code" || name)`,
/// `name` naming the implementation and its state format (`"clob/v1"`).
pub fn builtin_code_hash(name: &str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"nexus-coprocessor-code");
    hasher.update(name.as_bytes());
    *hasher.finalize().as_bytes()
}

/// Hex of 32 bytes (error messages).
pub(crate) fn hex32(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
