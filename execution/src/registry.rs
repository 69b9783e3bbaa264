//! The execution's side of the co-processor registry: following the consensus layer's
//! registry between blocks, Core gas, and routing calls (docs/execution.md,
//! "Co-processors").

use engine::AccountId;
use transactions::{Action, SignedTransaction, CALL_ARGS_LEN};

use crate::coprocessor::{
    self, clob_gas, hex32, Call, CallResult, Coprocessor, CoprocessorId, Hosted, Refusal,
    RegistryEntry, RegistryError, CALL_BASE_GAS, TX_BASE_GAS,
};
use crate::{ConsensusState, Execution};

impl Execution {
    /// Follows the consensus layer after a block: the registry holds from the next block on
    /// (new entries are instantiated from this binary's catalog, upgrades take over their
    /// predecessor's state, parameters change, deactivated ones keep their state), and its
    /// digest joins the chain root. An entry whose code this binary does not carry is an
    /// error: the node cannot execute the next block.
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
        if let Some(hosted) = self.hosted.get_mut(&entry.id) {
            if hosted.entry == *entry {
                return Ok(());
            }
            if hosted.entry.code_hash == entry.code_hash {
                hosted.instance.set_params(&entry.params);
                hosted.entry = entry.clone();
                return Ok(());
            }
        }
        // Even an inactive entry needs its code: every validator must hold the same state.
        let implementation = self
            .catalog
            .find(&entry.code_hash)
            .ok_or_else(|| unknown_code(entry))?;
        let instance = match self.hosted.get(&entry.id) {
            Some(old) => (implementation.restore)(&old.instance.snapshot(), &entry.params)
                .map_err(|error| RegistryError::Upgrade {
                    id: entry.id,
                    version: entry.version,
                    error,
                })?,
            None => (implementation.new)(&entry.params),
        };
        self.hosted.insert(
            entry.id,
            Hosted {
                entry: entry.clone(),
                instance,
            },
        );
        Ok(())
    }

    /// The active co-processor with this id (not the CLOB).
    pub fn coprocessor(&self, id: CoprocessorId) -> Option<&dyn Coprocessor> {
        self.hosted
            .get(&id)
            .filter(|hosted| hosted.entry.active)
            .map(|hosted| &*hosted.instance)
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

    /// Runs one call for `account` (refused if nothing active has that id).
    pub(crate) fn run_call(
        &mut self,
        account: AccountId,
        action: &Action,
        height: u64,
        time_ms: u64,
    ) -> (CoprocessorId, CallResult) {
        let Action::Call {
            coprocessor,
            method,
            ref args,
        } = *action
        else {
            return (coprocessor::CLOB, Err(Refusal::INACTIVE));
        };
        let Some(hosted) = self
            .hosted
            .get_mut(&coprocessor)
            .filter(|hosted| hosted.entry.active)
        else {
            return (coprocessor, Err(Refusal::INACTIVE));
        };
        let call = Call {
            account,
            method,
            args,
            height,
            time_ms,
        };
        (coprocessor, hosted.instance.call(&call))
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
