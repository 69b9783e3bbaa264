//! Running a validated block: Core block `h`, then EVM block `h`.
//!
//! Core block `h`, in this order:
//! 1. each Core transaction in block order: its nonce is remembered, then its actions run
//!    in order for the signer's account: typed actions as engine commands of the CLOB (an
//!    action the engine refuses is a result, not an error; all are refused while governance
//!    has the CLOB inactive), calls by the co-processor they name ([`crate::CallReport`]);
//!    events naming an EVM-owned Core account also become callbacks;
//! 2. one engine `Oracle` per market from the feeders' prices of the block (their median);
//! 3. funding: if the block's time is in a later funding interval than the previous block's
//!    (`time_ms / (funding_interval_s * 1000)` grew; the previous time is the genesis time for
//!    block 1), one engine `Funding` per perp market in ascending market id
//!    ([`Origin::Funding`]). At most one per market per block, however many intervals the
//!    gap between the two blocks spans (the rate comes from the premium samples since the
//!    last funding, not from elapsed time). Nothing with `funding_interval_s` 0;
//! 4. the CoreWriter actions of EVM block `h - 1`, in (block, log index) order.
//!
//! EVM block `h` (timestamp: the block's time in seconds; Core read precompiles see Core as
//! it is after step 4): credits from CoreWriter's escrow, token mints then callbacks as
//! system transactions, then the block's EVM transactions in block order. Its CoreWriter
//! actions wait in the queue for Core block `h + 1`; mints and callbacks it had no gas for
//! go back to the queue's front.
//!
//! Then the execution follows the consensus layer's state after block `h`
//! ([`Execution::follow_consensus`]): its registry holds from block `h + 1`, its digest is
//! part of the root after `h`.

use std::collections::BTreeMap;

use alloy_primitives::B256;
use engine::{Command, MarketId, Ticks};
use evm::core_view::CoreSnapshot;
use evm::executor::{BlockInput, BlockOutput, SignedTx};
use evm::system::core_account;
use transactions::{oracle_command, Action, SignedTransaction};

use crate::coprocessor::{self, Call, Refusal, RegistryError};
use crate::{CallReport, ConsensusState, Executed, Execution, Origin, ValidBlock};

/// What a block's Core transactions produced besides engine events.
#[derive(Default)]
struct CoreTally {
    oracle: BTreeMap<MarketId, Vec<Ticks>>,
    gas: u64,
    calls: Vec<CallReport>,
}

impl Execution {
    /// Runs a block that [`Execution::validate_block`] accepted against this same state,
    /// calling `out` with every engine event and where it came from, then follows
    /// `consensus`, the consensus layer's state after the block. Returns the root after it,
    /// the EVM block, Core gas and co-processor calls; an error if the registry names code
    /// this binary lacks (the block is executed, the node cannot go on). Panics if the block
    /// was validated at another height or a nonce is invalid: it was not validated against
    /// this state (a broken invariant).
    pub fn execute_block(
        &mut self,
        block: ValidBlock<'_>,
        consensus: &ConsensusState,
        mut out: impl FnMut(Origin, &engine::Event),
    ) -> Result<Executed, RegistryError> {
        assert_eq!(
            block.height,
            self.height() + 1,
            "a block validated against another state"
        );
        let ValidBlock {
            height,
            time_ms,
            core,
            evm,
        } = block;
        let mut tally = CoreTally::default();
        for (index, tx) in core {
            tally.gas = tally.gas.saturating_add(self.core_gas(tx));
            self.run_core_tx(index, tx, (height, time_ms), &mut tally, &mut out);
        }
        let CoreTally { oracle, gas, calls } = tally;
        self.run_oracle(oracle, &mut out);
        // A halted CLOB charges no funding: its traders cannot act on their positions.
        if self.clob_active() && funding_due(self.funding_interval_s, self.block_time_ms, time_ms) {
            self.run_funding(&mut out);
        }
        self.run_core_writer(&mut out);
        let core_root = self.core_root();
        let evm = self.run_evm(height, time_ms, evm, core_root);
        self.block_time_ms = time_ms;
        self.follow_consensus(consensus)?;
        Ok(Executed {
            root: self.root(),
            core_gas: gas,
            calls,
            evm,
        })
    }

    fn run_core_tx(
        &mut self,
        index: usize,
        tx: &SignedTransaction,
        (height, time_ms): (u64, u64),
        tally: &mut CoreTally,
        out: &mut impl FnMut(Origin, &engine::Event),
    ) {
        let account = tx.account();
        let nonces = self.nonces.entry(account).or_default();
        assert!(
            nonces.check(tx.tx.nonce, time_ms).is_ok(),
            "item {index} of a block that was not validated"
        );
        nonces.record(tx.tx.nonce);
        self.refresh_nonce_digest(account);
        for (action_index, action) in tx.tx.actions.iter().enumerate() {
            let report = |coprocessor, result| CallReport {
                index,
                action: action_index,
                coprocessor,
                result,
            };
            if let Action::Call {
                coprocessor,
                method,
                ref args,
            } = *action
            {
                let call = Call {
                    account,
                    method,
                    args,
                    height,
                    time_ms,
                };
                let result = self.run_call(&call, coprocessor);
                tally.calls.push(report(coprocessor, result));
                continue;
            }
            if !self.clob_active() {
                let refused = report(coprocessor::CLOB, Err(Refusal::INACTIVE));
                tally.calls.push(refused);
                continue;
            }
            if let Action::OraclePrice { market, price } = *action {
                tally.oracle.entry(market).or_default().push(price);
                continue;
            }
            let Some(command) = action.command(account) else {
                continue;
            };
            self.events.clear();
            self.engine.step(&command, &mut self.events);
            self.bridge.observe(&self.events);
            let origin = Origin::Tx {
                index,
                action: action_index,
            };
            for event in &self.events {
                out(origin, event);
            }
        }
    }

    fn run_oracle(
        &mut self,
        oracle: BTreeMap<MarketId, Vec<Ticks>>,
        out: &mut impl FnMut(Origin, &engine::Event),
    ) {
        for (market, prices) in oracle {
            if let Some(command) = oracle_command(market, &prices) {
                self.run_system(&command, Origin::Oracle(market), out);
            }
        }
    }

    /// One engine `Funding` per perp market, in ascending market id.
    fn run_funding(&mut self, out: &mut impl FnMut(Origin, &engine::Event)) {
        let mut markets: Vec<MarketId> = self
            .engine
            .markets()
            .filter(|&market| self.engine.perp_market(market).is_some())
            .collect();
        markets.sort_unstable();
        for market in markets {
            self.run_system(&Command::Funding { market }, Origin::Funding(market), out);
        }
    }

    /// Runs an engine command no transaction sent, reporting its events with `origin`.
    fn run_system(
        &mut self,
        command: &Command,
        origin: Origin,
        out: &mut impl FnMut(Origin, &engine::Event),
    ) {
        self.events.clear();
        self.engine.step(command, &mut self.events);
        self.bridge.observe(&self.events);
        for event in &self.events {
            out(origin, event);
        }
    }

    /// Runs the queued CoreWriter actions and folds the Core accounts they claimed for
    /// their EVM senders into the registry digest.
    fn run_core_writer(&mut self, out: &mut impl FnMut(Origin, &engine::Event)) {
        // Accounts not yet owned, each with the first sender that asks (first seen wins).
        let mut fresh = BTreeMap::new();
        for action in &self.bridge.pending_actions {
            let account = core_account(action.sender);
            if !self.bridge.registry.contains_key(&account) {
                fresh.entry(account).or_insert(action.sender);
            }
        }
        self.bridge.run_actions(&mut self.engine, |id, events| {
            for event in events {
                out(Origin::CoreWriter(id), event);
            }
        });
        for (account, sender) in fresh {
            if self.bridge.registry.get(&account) == Some(&sender) {
                self.note_claim(account, sender);
            }
        }
    }

    fn run_evm(
        &mut self,
        height: u64,
        time_ms: u64,
        txs: Vec<SignedTx>,
        core_root: [u8; 32],
    ) -> BlockOutput {
        let (credits, mints, callbacks) = self.bridge.take_evm_inputs();
        let input = BlockInput {
            height,
            timestamp: time_ms / 1000,
            core_root: B256::from(core_root),
            credits,
            mints,
            callbacks,
            txs,
        };
        let view = CoreSnapshot::new(&self.engine, height);
        let output = self.executor.execute_block(&view, input);
        assert!(
            output.deferred.is_empty(),
            "validation keeps a block's EVM gas within the user share"
        );
        self.bridge.queue_actions(output.actions.clone());
        self.bridge.requeue_callbacks(output.undelivered.clone());
        self.bridge.requeue_mints(output.undelivered_mints.clone());
        output
    }
}

/// Whether a block at `time_ms` after one at `previous_ms` starts a new funding interval
/// (never with an interval of 0, nor when time went backwards).
fn funding_due(interval_s: u64, previous_ms: u64, time_ms: u64) -> bool {
    let interval_ms = interval_s.saturating_mul(1000);
    interval_ms != 0 && time_ms / interval_ms > previous_ms / interval_ms
}

#[cfg(test)]
mod tests {
    use super::funding_due;

    #[test]
    fn funding_is_due_when_the_interval_number_grows() {
        // Hourly: 3 600 000 ms.
        assert!(!funding_due(3_600, 0, 3_599_999));
        assert!(funding_due(3_600, 3_599_999, 3_600_000));
        assert!(!funding_due(3_600, 3_600_000, 7_199_999));
        assert!(funding_due(3_600, 1, 10 * 3_600_000));
        // Never with interval 0, nor when time goes back.
        assert!(!funding_due(0, 0, u64::MAX));
        assert!(!funding_due(3_600, 7_200_000, 3_600_000));
    }
}
