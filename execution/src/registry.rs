//! The execution's side of the co-processor registry: following the consensus layer's
//! registry between blocks, Core gas, and routing calls (docs/execution.md,
//! "Co-processors").

use transactions::{Action, SignedTransaction, CALL_ARGS_LEN};

use crate::coprocessor::{
    self, clob_gas, hex32, Call, CallResult, Coprocessor, CoprocessorId, Hosted, HostedState,
    Refusal, RegistryEntry, RegistryError, CALL_BASE_GAS, TX_BASE_GAS,
};
use crate::{ConsensusState, Execution};

impl Execution {
    /// Follows the consensus layer after a block: the registry holds from the next block on
    /// (an activated entry runs this binary's code for it, on its previous state if it has
    /// one, so an upgrade takes over its predecessor's state; parameters change; a
    /// deactivated or never-activated entry is only its state's bytes), and its digest joins
    /// the chain root. An active entry whose code this binary does not carry is an error:
    /// the node cannot execute the next block.
    pub fn follow_consensus(&mut self, consensus: &ConsensusState) -> Result<(), RegistryError> {
        for entry in &consensus.registry {
            if entry.id == coprocessor::CLOB {
                self.follow_clob(entry)?;
            } else {
                self.follow_entry(entry)?;
            }
        }
        self.consensus_digest = consensus.digest;
        Ok(())
    }

    fn follow_clob(&mut self, entry: &RegistryEntry) -> Result<(), RegistryError> {
        if entry.code_hash != coprocessor::clob_code_hash() {
            return Err(unknown_code(entry));
        }
        self.clob = entry.clone();
        Ok(())
    }

    fn follow_entry(&mut self, entry: &RegistryEntry) -> Result<(), RegistryError> {
        let previous = self.hosted.remove(&entry.id);
        if let Some(hosted) = &previous {
            if hosted.entry == *entry {
                self.hosted.insert(entry.id, previous.expect("checked"));
                return Ok(());
            }
        }
        let state = match previous {
            Some(mut hosted) if entry.active && hosted.entry.code_hash == entry.code_hash => {
                if let HostedState::Running(instance) = &mut hosted.state {
                    instance.set_params(&entry.params);
                    hosted.state
                } else {
                    self.start(entry, hosted.state.bytes())?
                }
            }
            Some(hosted) if entry.active => self.start(entry, hosted.state.bytes())?,
            Some(hosted) => HostedState::stored(hosted.state.bytes()),
            None if entry.active => self.start(entry, None)?,
            None => HostedState::stored(None),
        };
        let entry = entry.clone();
        self.hosted.insert(entry.id, Hosted { entry, state });
        Ok(())
    }

    /// Runs `entry`'s code on `bytes` (a previous state, perhaps of earlier code: an
    /// upgrade carries it over) or on an empty state. Its code must be in this binary.
    fn start(
        &self,
        entry: &RegistryEntry,
        bytes: Option<Vec<u8>>,
    ) -> Result<HostedState, RegistryError> {
        let implementation = self
            .catalog
            .find(&entry.code_hash)
            .ok_or_else(|| unknown_code(entry))?;
        let instance = match bytes {
            Some(bytes) => (implementation.restore)(&bytes, &entry.params).map_err(|error| {
                RegistryError::Upgrade {
                    id: entry.id,
                    version: entry.version,
                    error,
                }
            })?,
            None => (implementation.new)(&entry.params),
        };
        Ok(HostedState::Running(instance))
    }

    /// The active co-processor with this id (not the CLOB).
    pub fn coprocessor(&self, id: CoprocessorId) -> Option<&dyn Coprocessor> {
        self.hosted
            .get(&id)
            .filter(|hosted| hosted.entry.active)
            .and_then(|hosted| hosted.state.running())
    }

    /// The registry entries the execution follows, in id order (the CLOB first).
    pub fn registry(&self) -> Vec<RegistryEntry> {
        let others = self.hosted.values().map(|hosted| hosted.entry.clone());
        std::iter::once(self.clob.clone()).chain(others).collect()
    }

    /// Core gas of one transaction: [`TX_BASE_GAS`] plus each action's (the CLOB's schedule
    /// for typed actions; the named co-processor's for calls, [`CALL_BASE_GAS`] for a call
    /// nothing active answers).
    pub fn core_gas(&self, tx: &SignedTransaction) -> u64 {
        tx.tx
            .actions
            .iter()
            .map(|action| self.action_gas(action))
            .fold(TX_BASE_GAS, u64::saturating_add)
    }

    fn action_gas(&self, action: &Action) -> u64 {
        match *action {
            Action::Call {
                coprocessor,
                method,
                ref args,
            } => self
                .coprocessor(coprocessor)
                .and_then(|c| c.gas(method, args))
                .unwrap_or(CALL_BASE_GAS),
            _ => clob_gas(action),
        }
    }

    /// Most Core gas a block's transactions may use.
    pub fn core_gas_limit(&self) -> u64 {
        self.core_gas_limit
    }

    /// Whether a call would reach an active co-processor that has its method (the pool's
    /// admission check; a block may still carry a call that is refused at execution).
    pub fn check_call(
        &self,
        coprocessor: CoprocessorId,
        method: u8,
        args: &[u8; CALL_ARGS_LEN],
    ) -> Result<(), Refusal> {
        if coprocessor == coprocessor::CLOB {
            return Err(Refusal::UNKNOWN_METHOD);
        }
        let target = self.coprocessor(coprocessor).ok_or(Refusal::INACTIVE)?;
        target
            .gas(method, args)
            .map(|_| ())
            .ok_or(Refusal::UNKNOWN_METHOD)
    }

    /// Whether the CLOB runs (governance can halt it: its actions are then refused).
    pub(crate) fn clob_active(&self) -> bool {
        self.clob.active
    }

    /// Runs one call (refused if nothing active has its id; the CLOB has no call methods:
    /// its functions are the typed actions).
    pub(crate) fn run_call(&mut self, call: &Call<'_>, coprocessor: CoprocessorId) -> CallResult {
        if coprocessor == coprocessor::CLOB {
            return Err(Refusal::UNKNOWN_METHOD);
        }
        let running = self
            .hosted
            .get_mut(&coprocessor)
            .filter(|hosted| hosted.entry.active)
            .and_then(|hosted| match &mut hosted.state {
                HostedState::Running(instance) => Some(instance),
                HostedState::Stored(..) => None,
            });
        match running {
            Some(instance) => instance.call(call),
            None => Err(Refusal::INACTIVE),
        }
    }

    /// The co-processors' part of the Core root: each hosted one's commitment, in id order.
    pub(crate) fn coprocessors_digest(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"nexus-coprocessors-v1");
        hasher.update(&self.clob.version.to_le_bytes());
        hasher.update(&[u8::from(self.clob.active)]);
        hasher.update(&(self.hosted.len() as u64).to_le_bytes());
        for hosted in self.hosted.values() {
            hasher.update(&hosted.commitment());
        }
        *hasher.finalize().as_bytes()
    }
}

fn unknown_code(entry: &RegistryEntry) -> RegistryError {
    RegistryError::UnknownCode {
        id: entry.id,
        version: entry.version,
        code: hex32(&entry.code_hash),
    }
}
