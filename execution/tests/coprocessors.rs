//! Co-processors: the notary enshrined by governance (registered, then activated, by signed
//! proposals and votes of the real consensus-layer state machine), calls routed to it with
//! their Core gas, its root folded into the Core root, snapshots, the CLOB halted by
//! governance, the Core gas limit, and code a binary does not carry.

mod common;

use common::*;
use consensus::block::Block;
use consensus::chain::ChainState;
use consensus::governance::{Action as GovAction, ChainParams, ProposalKind, SignedAction};
use consensus::types::{Ed25519, Hash, Keypair, ValidatorId};
use consensus::validators::Validator;
use engine::Side;
use execution::coprocessor::{notary_code_hash, Refusal, CALL_BASE_GAS, TX_BASE_GAS};
use execution::{BlockError, ConsensusState, Executed, Execution, RegistryError};
use transactions::{Action, BlockItem};

const NOTARY: u32 = 1;

/// One validator's consensus-layer state and execution, driven block by block as a node
/// drives them: the chain state applies a block's governance actions, then the execution
/// runs its items and follows the chain state.
struct Node {
    chain: ChainState,
    execution: Execution,
    validator: Keypair,
    nonce: u64,
    proposals: u64,
}

impl Node {
    fn new() -> Node {
        let validator = Keypair::from_seed([3; 32]);
        let set = vec![Validator {
            id: validator.id(),
            stake: 100,
        }];
        let chain = ChainState::genesis(
            CHAIN,
            set,
            ChainParams::default(),
            execution::genesis_coprocessors(),
        )
        .unwrap();
        let mut execution = common::chain();
        execution
            .follow_consensus(&ConsensusState::from(&chain))
            .unwrap();
        Node {
            chain,
            execution,
            validator,
            nonce: 0,
            proposals: 0,
        }
    }

    /// A governance action of the validator (next nonce).
    fn gov(&mut self, action: GovAction) -> SignedAction {
        self.nonce += 1;
        SignedAction::sign(&self.validator, self.nonce, action, &CHAIN)
    }

    /// Proposes `kind` and votes for it in one block's actions.
    fn pass(&mut self, kind: ProposalKind) -> Vec<SignedAction> {
        self.proposals += 1;
        let propose = self.gov(GovAction::Propose(kind));
        let vote = self.gov(GovAction::Vote {
            proposal: self.proposals,
            approve: true,
        });
        vec![propose, vote]
    }

    fn block(&mut self, actions: Vec<SignedAction>, items: &[BlockItem]) -> Executed {
        self.try_block(actions, items).unwrap().0
    }

    /// Runs a block; returns what it did and how many engine events it had.
    fn try_block(
        &mut self,
        actions: Vec<SignedAction>,
        items: &[BlockItem],
    ) -> Result<(Executed, usize), RegistryError> {
        let height = self.chain.height() + 1;
        let block = Block {
            height,
            timestamp_ns: (T + height) * 1_000_000,
            proposer: ValidatorId([0; 32]),
            prev_hash: Hash::ZERO,
            prev_exec_root: Hash::ZERO,
            evidence: vec![],
            actions,
            payload: vec![].into(),
        };
        self.chain.apply_block(&block, &Ed25519);
        let valid = self
            .execution
            .validate_block(T + height, items, &signatures_of(items))
            .expect("a valid block");
        let consensus = ConsensusState::from(&self.chain);
        let mut events = 0;
        let executed = self
            .execution
            .execute_block(valid, &consensus, |_, _| events += 1)?;
        Ok((executed, events))
    }
}

/// The notary's `set` (method 1) of `key` to `value`.
fn set(key: u32, value: u8) -> Action {
    let mut args = [0u8; 24];
    args[..4].copy_from_slice(&key.to_le_bytes());
    args[4..].fill(value);
    Action::Call {
        coprocessor: NOTARY,
        method: 1,
        args,
    }
}

fn get_args(key: u32) -> [u8; 24] {
    let mut args = [0u8; 24];
    args[..4].copy_from_slice(&key.to_le_bytes());
    args
}

/// The notary registered (block 1 passes the upgrade, 2 applies it) and activated (block 2
/// passes the activation, block 3 applies it in consensus; the execution runs it from
/// block 4).
fn enshrine(node: &mut Node) {
    let register = node.pass(ProposalKind::Upgrade {
        id: NOTARY,
        version: 1,
        code_hash: Hash(notary_code_hash()),
    });
    node.block(register, &[]);
    let activate = node.pass(ProposalKind::Activate { id: NOTARY });
    node.block(activate, &[]);
    node.block(vec![], &[]);
    assert!(node.execution.coprocessor(NOTARY).is_some());
}

#[test]
fn governance_enshrines_a_second_coprocessor_and_calls_reach_it() {
    let mut node = Node::new();
    // Before: a call is refused at admission and, if a block carries it, at execution.
    assert_eq!(
        node.execution.check_call(NOTARY, 1, &get_args(1)),
        Err(Refusal::INACTIVE)
    );
    let early = node.block(vec![], &[core_tx(TRADER, T, vec![set(1, 0xaa)])]);
    assert_eq!(early.calls.len(), 1);
    assert_eq!(early.calls[0].result, Err(Refusal::INACTIVE));
    assert_eq!(early.core_gas, TX_BASE_GAS + CALL_BASE_GAS);

    enshrine(&mut node);
    let core_before = node.execution.core_root();
    let chain_before = node.execution.chain_root();
    let calls = vec![set(1, 0xaa), set(1, 0xbb), place(1, Side::Buy, 100, 1)];
    let done = node.block(vec![], &[core_tx(TRADER, T + 10, calls)]);
    // set, set again (returns the first value), then a CLOB order in the same transaction.
    assert_eq!(done.calls.len(), 2);
    assert_eq!(done.calls[0].result.unwrap()[20], 0, "nothing was there");
    let second = done.calls[1].result.unwrap();
    assert_eq!((&second[..20], second[20]), (&[0xaa; 20][..], 1));
    assert_eq!(done.core_gas, TX_BASE_GAS + 10 + 10 + 10);
    let notary = node.execution.coprocessor(NOTARY).unwrap();
    let stored = notary.query(account(TRADER), 1, &get_args(1)).unwrap();
    assert_eq!(&stored[..20], &[0xbb; 20]);
    assert_ne!(
        node.execution.core_root(),
        core_before,
        "its root is in core_root"
    );
    assert_ne!(node.execution.chain_root(), chain_before);
    assert_eq!(
        node.execution.check_call(NOTARY, 9, &get_args(1)),
        Err(Refusal::UNKNOWN_METHOD)
    );
}

#[test]
fn the_same_blocks_give_the_same_root_and_a_snapshot_keeps_coprocessors() {
    let mut a = Node::new();
    let mut b = Node::new();
    for node in [&mut a, &mut b] {
        enshrine(node);
        node.block(vec![], &[core_tx(TRADER, T + 10, vec![set(7, 1)])]);
    }
    assert_eq!(a.execution.root(), b.execution.root());
    let snapshot = a.execution.snapshot();
    let mut restored = Execution::restore(config(), &snapshot).unwrap();
    assert_eq!(restored.root(), a.execution.root());
    assert_eq!(restored.registry(), a.execution.registry());
    // Both go on alike after the restore.
    a.execution = restored;
    for node in [&mut a, &mut b] {
        node.block(vec![], &[core_tx(TRADER, T + 20, vec![set(8, 2)])]);
    }
    assert_eq!(a.execution.root(), b.execution.root());
}

#[test]
fn a_deactivated_clob_refuses_its_actions_and_a_parameter_change_reaches_the_coprocessor() {
    let mut node = Node::new();
    enshrine(&mut node);
    let params = node.pass(ProposalKind::SetCoprocessorParam {
        id: NOTARY,
        key: "max_records".to_string(),
        value: 1,
    });
    node.block(params, &[]);
    let halt = node.pass(ProposalKind::Deactivate { id: 0 });
    node.block(halt, &[]);
    node.block(vec![], &[]);
    let items = [core_tx(
        TRADER,
        T + 10,
        vec![place(5, Side::Buy, 100, 1), set(1, 1), set(2, 2)],
    )];
    let (done, events) = node.try_block(vec![], &items).unwrap();
    assert_eq!(events, 0, "the halted CLOB ran nothing");
    let results: Vec<_> = done
        .calls
        .iter()
        .map(|c| (c.coprocessor, c.result.err()))
        .collect();
    let full = Some(Refusal {
        code: "notary_full",
        reason: "the account holds its maximum of records",
    });
    assert_eq!(
        results,
        vec![(0, Some(Refusal::INACTIVE)), (NOTARY, None), (NOTARY, full)]
    );
}

#[test]
fn blocks_over_the_core_gas_limit_are_invalid() {
    let mut config = config();
    config.core_gas_limit = 100;
    let execution = Execution::new(config, &genesis());
    // 10 + 9 places x 10 = 100 fits; one more action does not.
    let fits = core_tx(
        TRADER,
        T,
        (0..9).map(|i| place(i, Side::Buy, 100, 1)).collect(),
    );
    assert_eq!(execution.core_gas(fits.core().unwrap()), 100);
    let items = [fits.clone()];
    assert!(execution
        .validate_block(T + 1, &items, &signatures_of(&items))
        .is_ok());
    let items = [
        fits,
        core_tx(TRADER, T + 1, vec![Action::CancelAll { market: MARKET }]),
    ];
    let error = execution
        .validate_block(T + 1, &items, &signatures_of(&items))
        .unwrap_err();
    assert_eq!(
        error,
        BlockError::CoreGas {
            index: 1,
            total: 130,
            limit: 100
        }
    );
}

#[test]
fn code_this_binary_lacks_is_needed_only_to_run() {
    let mut node = Node::new();
    let unknown = node.pass(ProposalKind::Upgrade {
        id: 2,
        version: 1,
        code_hash: Hash([0xcd; 32]),
    });
    node.block(unknown, &[]);
    // Registered (inactive) in consensus at the start of block 2: only its bytes are held.
    node.block(vec![], &[]);
    assert_eq!(node.execution.registry().len(), 2);
    let activate = node.pass(ProposalKind::Activate { id: 2 });
    node.block(activate, &[]);
    let error = node.try_block(vec![], &[]).unwrap_err();
    assert!(
        matches!(error, RegistryError::UnknownCode { id: 2, .. }),
        "{error}"
    );
    assert!(error
        .to_string()
        .contains("run a nexus release that has it"));
}

#[test]
fn a_deactivated_coprocessor_keeps_its_state_and_resumes_with_it() {
    let mut node = Node::new();
    enshrine(&mut node);
    node.block(vec![], &[core_tx(TRADER, T + 10, vec![set(4, 0x44)])]);
    let running_root = node.execution.core_root();
    let off = node.pass(ProposalKind::Deactivate { id: NOTARY });
    node.block(off, &[]);
    node.block(vec![], &[]);
    assert!(node.execution.coprocessor(NOTARY).is_none());
    let refused = node.block(vec![], &[core_tx(TRADER, T + 20, vec![set(5, 0x55)])]);
    assert_eq!(refused.calls[0].result, Err(Refusal::INACTIVE));
    assert_ne!(
        node.execution.core_root(),
        running_root,
        "active flag and digest changed"
    );
    let on = node.pass(ProposalKind::Activate { id: NOTARY });
    node.block(on, &[]);
    node.block(vec![], &[]);
    let notary = node.execution.coprocessor(NOTARY).expect("active again");
    let kept = notary.query(account(TRADER), 1, &get_args(4)).unwrap();
    assert_eq!(&kept[..21], &[[0x44; 20].as_slice(), &[1]].concat()[..]);
    let never = notary.query(account(TRADER), 1, &get_args(5)).unwrap();
    assert_eq!(never[20], 0, "the refused call did nothing");
}
