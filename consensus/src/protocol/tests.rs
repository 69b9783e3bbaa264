//! Rule-by-rule tests of the state machine: one validator under test, the others played
//! by hand-signed messages (real ed25519 verification).

use super::*;
use crate::messages::Message;
use crate::safety::MemStore;
use crate::types::DefaultContext;
use crate::validators::Validator;

const CHAIN: [u8; 32] = [42; 32];
const MS: u64 = 1_000_000;

struct Harness {
    keys: Vec<Keypair>,
    set: ValidatorSet,
    me: usize,
    node: Consensus<DefaultContext, MemStore>,
    out: Vec<Output>,
    now: u64,
}

fn config() -> Config {
    Config {
        timeouts: TimeoutConfig {
            propose_ns: 300 * MS,
            prevote_ns: 100 * MS,
            precommit_ns: 100 * MS,
            delta_ns: 50 * MS,
            rebroadcast_ns: 1_000 * MS,
        },
        ..Config::new(CHAIN)
    }
}

impl Harness {
    /// Four validators of stake 1; the node under test is the one that proposes in round
    /// `my_round` of height 1 (so rounds before it are proposed by others).
    fn new(my_round: Round) -> Harness {
        let keys: Vec<Keypair> = (1..=4u8).map(|i| Keypair::from_seed([i; 32])).collect();
        let set = ValidatorSet::new(
            keys.iter()
                .map(|k| Validator {
                    id: k.id(),
                    stake: 1,
                })
                .collect(),
        )
        .unwrap();
        let me_id = set.proposer(my_round);
        let me = keys.iter().position(|k| k.id() == me_id).unwrap();
        let node =
            Consensus::new(config(), DefaultContext, MemStore::new(), keys[me].clone()).unwrap();
        Harness {
            keys,
            set,
            me,
            node,
            out: Vec::new(),
            now: 1_000 * MS,
        }
    }

    fn start(&mut self) {
        let start = self.height_start();
        self.step(Input::NewHeight {
            start,
            body: BlockBody {
                payload: b"mine".to_vec().into(),
                ..BlockBody::default()
            },
        });
    }

    fn height_start(&self) -> HeightStart {
        HeightStart {
            height: 1,
            validators: self.set.clone(),
            prev_block: Hash::ZERO,
            prev_exec_root: Hash([7; 32]),
            prev_timestamp_ns: 0,
        }
    }

    fn step(&mut self, input: Input) -> Vec<Output> {
        self.out.clear();
        self.node.step(input, self.now, &mut self.out).unwrap();
        self.out.clone()
    }

    fn key_of(&self, id: ValidatorId) -> &Keypair {
        self.keys.iter().find(|k| k.id() == id).unwrap()
    }

    /// Indices of the validators other than the node under test.
    fn others(&self) -> Vec<usize> {
        (0..4).filter(|i| *i != self.me).collect()
    }

    fn block(&self, round: Round, payload: &[u8]) -> Block {
        Block {
            height: 1,
            timestamp_ns: 5,
            proposer: self.set.proposer(round),
            prev_hash: Hash::ZERO,
            prev_exec_root: Hash([7; 32]),
            evidence: vec![],
            actions: vec![],
            payload: payload.to_vec().into(),
        }
    }

    fn proposal(&self, round: Round, block: &Block, pol_round: Option<Round>) -> Message {
        let proposal = Proposal {
            height: 1,
            round,
            pol_round,
            block_id: block.id(),
            proposer: self.set.proposer(round),
        };
        let key = self.key_of(proposal.proposer);
        Message::Proposal(ProposalMessage {
            signed: SignedProposal {
                proposal,
                signature: key.sign(&proposal.signing_bytes(&CHAIN)),
            },
            block: block.clone(),
            pol: vec![],
        })
    }

    fn vote(&self, who: usize, kind: VoteKind, round: Round, value: Option<Hash>) -> SignedVote {
        let vote = Vote {
            kind,
            height: 1,
            round,
            value,
            validator: self.keys[who].id(),
        };
        SignedVote {
            vote,
            signature: self.keys[who].sign(&vote.signing_bytes(&CHAIN)),
        }
    }

    fn deliver_vote(
        &mut self,
        who: usize,
        kind: VoteKind,
        round: Round,
        value: Option<Hash>,
    ) -> Vec<Output> {
        let v = self.vote(who, kind, round, value);
        self.step(Input::Message(Message::Vote(v)))
    }

    fn timeout(&mut self, kind: TimeoutKind, round: Round) -> Vec<Output> {
        self.step(Input::Timeout(Timeout {
            kind,
            height: 1,
            round,
        }))
    }
}

/// The votes this validator broadcast: (kind, round, value).
fn votes(out: &[Output]) -> Vec<(VoteKind, Round, Option<Hash>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Broadcast(Message::Vote(v)) => Some((v.vote.kind, v.vote.round, v.vote.value)),
            _ => None,
        })
        .collect()
}

fn timeouts(out: &[Output]) -> Vec<(TimeoutKind, Round, u64)> {
    out.iter()
        .filter_map(|o| match o {
            Output::ScheduleTimeout { timeout, at_ns } => {
                Some((timeout.kind, timeout.round, *at_ns))
            }
            _ => None,
        })
        .collect()
}

fn decisions(out: &[Output]) -> Vec<CommitCertificate> {
    out.iter()
        .filter_map(|o| match o {
            Output::Decide(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_good_round_prevotes_locks_precommits_and_decides() {
    let mut t = Harness::new(1);
    t.start();
    // L11-21: not the proposer of round 0, so only timeouts are scheduled.
    assert_eq!(
        timeouts(&t.out),
        vec![
            (TimeoutKind::Rebroadcast, 0, t.now + 1_000 * MS),
            (TimeoutKind::Propose, 0, t.now + 300 * MS)
        ]
    );
    let block = t.block(0, b"batch-1");
    let id = block.id();
    // L22-27: a valid proposal with validRound -1 and no lock: prevote id(v).
    let out = t.step(Input::Message(t.proposal(0, &block, None)));
    assert_eq!(votes(&out), vec![(VoteKind::Prevote, 0, Some(id))]);
    let others = t.others();
    // One more prevote is 2 of 4: no quorum yet.
    let out = t.deliver_vote(others[0], VoteKind::Prevote, 0, Some(id));
    assert!(votes(&out).is_empty());
    // Third prevote: L34 (timeoutPrevote) and L36 (lock, precommit id(v)).
    let out = t.deliver_vote(others[1], VoteKind::Prevote, 0, Some(id));
    assert_eq!(
        timeouts(&out),
        vec![(TimeoutKind::Prevote, 0, t.now + 100 * MS)]
    );
    assert_eq!(votes(&out), vec![(VoteKind::Precommit, 0, Some(id))]);
    assert_eq!(t.node.locked(), Some((0, id)));
    assert_eq!(t.node.position(), Some((1, 0, Step::Precommit)));
    // L49: 2f+1 precommits for id(v) decide (L47's timeout is moot once decided).
    t.deliver_vote(others[0], VoteKind::Precommit, 0, Some(id));
    let out = t.deliver_vote(others[1], VoteKind::Precommit, 0, Some(id));
    assert!(timeouts(&out).is_empty());
    let d = decisions(&out);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].block, block);
    assert_eq!(d[0].round, 0);
    assert_eq!(d[0].precommits.len(), 3);
    // Nothing more happens at a decided height; a late vote in the decision round is not
    // a sign that its sender is behind.
    let out = t.deliver_vote(others[2], VoteKind::Precommit, 0, Some(id));
    assert!(out.is_empty());
}

#[test]
fn a_proposer_proposes_its_body_and_prevotes_for_it() {
    let mut t = Harness::new(0);
    t.start();
    let proposal = t
        .out
        .iter()
        .find_map(|o| match o {
            Output::Broadcast(Message::Proposal(p)) => Some(p.clone()),
            _ => None,
        })
        .expect("round-0 proposer proposes");
    assert_eq!(proposal.block.payload.as_slice(), b"mine");
    assert_eq!(proposal.block.prev_exec_root, Hash([7; 32]));
    assert_eq!(proposal.signed.proposal.pol_round, None);
    assert!(proposal.signed.verify(&CHAIN, &crate::types::Ed25519));
    // It counts its own proposal at once (L22).
    assert_eq!(
        votes(&t.out),
        vec![(VoteKind::Prevote, 0, Some(proposal.block.id()))]
    );
}

#[test]
fn an_invalid_block_gets_a_nil_prevote() {
    let mut t = Harness::new(1);
    t.start();
    let mut block = t.block(0, b"x");
    block.prev_exec_root = Hash([8; 32]); // not the execution root this validator has
    let out = t.step(Input::Message(t.proposal(0, &block, None)));
    assert_eq!(votes(&out), vec![(VoteKind::Prevote, 0, None)]);
    // A proposal from someone who is not the round's proposer is ignored.
    let mut t = Harness::new(1);
    t.start();
    let block = t.block(0, b"x");
    let mut m = t.proposal(0, &block, None);
    if let Message::Proposal(p) = &mut m {
        let wrong = t.keys.iter().find(|k| k.id() != t.set.proposer(0)).unwrap();
        p.signed.proposal.proposer = wrong.id();
        p.signed.signature = wrong.sign(&p.signed.proposal.signing_bytes(&CHAIN));
    }
    assert!(votes(&t.step(Input::Message(m))).is_empty());
}

#[test]
fn timeouts_move_through_the_steps_and_grow_with_the_round() {
    let mut t = Harness::new(3);
    t.start();
    // L57-60: no proposal in time: prevote nil.
    let out = t.timeout(TimeoutKind::Propose, 0);
    assert_eq!(votes(&out), vec![(VoteKind::Prevote, 0, None)]);
    // A stale timeout (other round) does nothing.
    assert!(t.timeout(TimeoutKind::Propose, 0).is_empty());
    // L44-46: 2f+1 nil prevotes: precommit nil.
    let others = t.others();
    t.deliver_vote(others[0], VoteKind::Prevote, 0, None);
    let out = t.deliver_vote(others[1], VoteKind::Prevote, 0, None);
    assert_eq!(votes(&out), vec![(VoteKind::Precommit, 0, None)]);
    // L47-48 then L65-67: the precommit timeout starts round 1, whose timeouts are longer.
    t.deliver_vote(others[0], VoteKind::Precommit, 0, None);
    let out = t.deliver_vote(others[1], VoteKind::Precommit, 0, None);
    assert_eq!(
        timeouts(&out),
        vec![(TimeoutKind::Precommit, 0, t.now + 100 * MS)]
    );
    let out = t.timeout(TimeoutKind::Precommit, 0);
    assert_eq!(t.node.position(), Some((1, 1, Step::Propose)));
    assert_eq!(
        timeouts(&out),
        vec![(TimeoutKind::Propose, 1, t.now + 350 * MS)]
    );
    // L61-64: prevote timeout in round 1 precommits nil.
    t.timeout(TimeoutKind::Propose, 1);
    t.deliver_vote(others[0], VoteKind::Prevote, 1, Some(Hash([1; 32])));
    let out = t.deliver_vote(others[1], VoteKind::Prevote, 1, None);
    assert_eq!(
        timeouts(&out),
        vec![(TimeoutKind::Prevote, 1, t.now + 150 * MS)]
    );
    assert!(votes(&out).is_empty(), "no value has 2f+1 yet");
    let out = t.timeout(TimeoutKind::Prevote, 1);
    assert_eq!(votes(&out), vec![(VoteKind::Precommit, 1, None)]);
}

#[test]
fn more_than_a_third_in_a_later_round_makes_a_validator_skip_to_it() {
    let mut t = Harness::new(3);
    t.start();
    let others = t.others();
    // One validator (1/4) in round 5: not enough.
    t.deliver_vote(others[0], VoteKind::Prevote, 5, None);
    assert_eq!(t.node.position(), Some((1, 0, Step::Propose)));
    // Two (2/4 > 1/3): L55-56, StartRound(5).
    let out = t.deliver_vote(others[1], VoteKind::Precommit, 5, None);
    assert_eq!(t.node.position(), Some((1, 5, Step::Propose)));
    assert!(timeouts(&out).contains(&(TimeoutKind::Propose, 5, t.now + 550 * MS)));
}

/// The proposals among `out`: (round, payload).
fn proposed(out: &[Output]) -> Vec<(Round, Vec<u8>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Broadcast(Message::Proposal(p)) => {
                Some((p.signed.proposal.round, p.block.payload.to_vec()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_later_rounds_new_block_waits_for_the_hosts_fresh_body() {
    let mut t = Harness::new(1);
    t.start();
    let others = t.others();
    // Two of four in round 1 (L55-56): this validator proposes there, with no valid value,
    // so it asks the host for a body instead of proposing the height's first one.
    t.deliver_vote(others[0], VoteKind::Prevote, 1, None);
    let out = t.deliver_vote(others[1], VoteKind::Prevote, 1, None);
    assert_eq!(t.node.position(), Some((1, 1, Step::Propose)));
    assert!(out.contains(&Output::BodyWanted {
        height: 1,
        round: 1
    }));
    assert!(
        proposed(&out).is_empty(),
        "nothing proposed before the answer"
    );
    let body = |payload: &[u8]| BlockBody {
        payload: payload.to_vec().into(),
        ..BlockBody::default()
    };
    // An answer for another round is ignored.
    let stale = Input::RoundBody {
        height: 1,
        round: 2,
        body: body(b"other"),
    };
    assert!(t.step(stale).is_empty());
    // The answer is proposed at once, and prevoted (L22).
    let answer = |payload: &[u8]| Input::RoundBody {
        height: 1,
        round: 1,
        body: body(payload),
    };
    let out = t.step(answer(b"later"));
    assert_eq!(proposed(&out), vec![(1, b"later".to_vec())]);
    assert_eq!(votes(&out)[0].0, VoteKind::Prevote);
    // A second answer changes nothing.
    assert!(proposed(&t.step(answer(b"again"))).is_empty());
}

/// Locks the node under test on `block` in round 0 (L36) and moves it to round 1.
fn lock_in_round_zero(t: &mut Harness, block: &Block) {
    let id = block.id();
    t.step(Input::Message(t.proposal(0, block, None)));
    let others = t.others();
    t.deliver_vote(others[0], VoteKind::Prevote, 0, Some(id));
    t.deliver_vote(others[1], VoteKind::Prevote, 0, Some(id));
    assert_eq!(t.node.locked(), Some((0, id)));
    t.deliver_vote(others[0], VoteKind::Precommit, 0, None);
    t.deliver_vote(others[1], VoteKind::Precommit, 0, None);
    t.timeout(TimeoutKind::Precommit, 0);
    assert_eq!(t.node.position(), Some((1, 1, Step::Propose)));
}

#[test]
fn a_locked_validator_prevotes_nil_for_another_value() {
    // The node under test proposes in round 3; rounds 0-2 are proposed by others.
    let mut t = Harness::new(3);
    t.start();
    let v = t.block(0, b"v");
    lock_in_round_zero(&mut t, &v);
    // L22-27: a new value with validRound -1 while locked on v: prevote nil. (This is the
    // rule a "forget the lock" bug breaks.)
    let w = t.block(1, b"w");
    let out = t.step(Input::Message(t.proposal(1, &w, None)));
    assert_eq!(votes(&out), vec![(VoteKind::Prevote, 1, None)]);
    // Round 2: w re-proposed with validRound 1, and 2f+1 prevotes for w in round 1 exist:
    // L28-33 with lockedRound 0 <= vr 1: prevote w (the lock gives way to a newer POL).
    let others = t.others();
    for i in &others[..3] {
        t.deliver_vote(*i, VoteKind::Prevote, 1, Some(w.id()));
    }
    // 2f+1 prevotes for the round-1 proposal w while in step prevote: L36-43, the node
    // moves its lock to (1, w) and precommits w.
    assert_eq!(t.node.locked(), Some((1, w.id())));
    for i in &others[..2] {
        t.deliver_vote(*i, VoteKind::Precommit, 1, None);
    }
    t.timeout(TimeoutKind::Precommit, 1);
    let w2 = Block {
        proposer: t.set.proposer(2),
        ..w.clone()
    };
    // A re-proposal must carry the same block: here a different block (other proposer
    // field) with validRound 1 has no POL, so nothing fires until the propose timeout.
    let out = t.step(Input::Message(t.proposal(2, &w2, Some(1))));
    assert!(votes(&out).is_empty());
    let out = t.timeout(TimeoutKind::Propose, 2);
    assert_eq!(votes(&out), vec![(VoteKind::Prevote, 2, None)]);
}

#[test]
fn a_newer_proof_of_lock_unlocks_a_locked_validator() {
    let mut t = Harness::new(3);
    t.start();
    let v = t.block(0, b"v");
    lock_in_round_zero(&mut t, &v);
    // Round 1: the node times out (prevote nil) while the others see w get 2f+1 prevotes
    // (the node itself only gets two of them).
    let w = t.block(1, b"w");
    t.timeout(TimeoutKind::Propose, 1);
    let others = t.others();
    for i in &others[..2] {
        t.deliver_vote(*i, VoteKind::Prevote, 1, Some(w.id()));
    }
    t.timeout(TimeoutKind::Prevote, 1);
    for i in &others[..2] {
        t.deliver_vote(*i, VoteKind::Precommit, 1, None);
    }
    t.timeout(TimeoutKind::Precommit, 1);
    assert_eq!(t.node.locked(), Some((0, v.id())));
    // Round 2: w with validRound 1 and its proof of lock attached: L28-33, lockedRound 0
    // <= vr 1, so the node prevotes w although it is locked on v.
    let mut m = t.proposal(2, &w, Some(1));
    if let Message::Proposal(p) = &mut m {
        p.pol = others
            .iter()
            .map(|i| t.vote(*i, VoteKind::Prevote, 1, Some(w.id())))
            .collect();
    }
    let out = t.step(Input::Message(m));
    assert_eq!(votes(&out), vec![(VoteKind::Prevote, 2, Some(w.id()))]);
}

#[test]
fn equivocation_is_reported_and_duplicates_are_ignored() {
    let mut t = Harness::new(3);
    t.start();
    let others = t.others();
    let a = t.vote(others[0], VoteKind::Prevote, 0, Some(Hash([1; 32])));
    let b = t.vote(others[0], VoteKind::Prevote, 0, None);
    t.step(Input::Message(Message::Vote(a)));
    assert!(
        t.step(Input::Message(Message::Vote(a))).is_empty(),
        "duplicate"
    );
    let out = t.step(Input::Message(Message::Vote(b)));
    let expected = Evidence::double_vote(a, b);
    assert_eq!(out, vec![Output::Evidence(expected)]);
    assert!(expected.check(&CHAIN, &crate::types::Ed25519).is_ok());
    // A forged vote (bad signature) is dropped without evidence.
    let mut forged = t.vote(others[1], VoteKind::Prevote, 0, None);
    forged.signature[0] ^= 1;
    assert!(t.step(Input::Message(Message::Vote(forged))).is_empty());
    // Two proposals for one round from its proposer.
    let x = t.block(0, b"x");
    let y = t.block(0, b"y");
    t.step(Input::Message(t.proposal(0, &x, None)));
    let out = t.step(Input::Message(t.proposal(0, &y, None)));
    assert!(matches!(
        out.as_slice(),
        [Output::Evidence(Evidence::DoubleProposal(..))]
    ));
}

#[test]
fn a_restarted_validator_never_signs_a_conflicting_vote() {
    let mut t = Harness::new(1);
    t.start();
    let block = t.block(0, b"v");
    let id = block.id();
    let proposal = t.proposal(0, &block, None);
    let out = t.step(Input::Message(proposal.clone()));
    assert_eq!(votes(&out), vec![(VoteKind::Prevote, 0, Some(id))]);
    // Crash: in-memory state is gone, the store stays.
    let store = std::mem::replace(
        &mut t.node,
        Consensus::new(config(), DefaultContext, MemStore::new(), t.keys[0].clone()).unwrap(),
    )
    .into_store();
    assert!(store.saves >= 1);
    t.node = Consensus::new(config(), DefaultContext, store, t.keys[t.me].clone()).unwrap();
    t.start();
    // The propose timeout would prevote nil: refused, nothing signed.
    let out = t.timeout(TimeoutKind::Propose, 0);
    assert!(
        votes(&out).is_empty(),
        "must not prevote nil after prevoting v"
    );
    assert_eq!(t.node.position(), Some((1, 0, Step::Prevote)));
    // Its earlier prevote still counts: with two more, it locks and precommits v.
    let others = t.others();
    t.deliver_vote(others[0], VoteKind::Prevote, 0, Some(id));
    let out = t.deliver_vote(others[1], VoteKind::Prevote, 0, Some(id));
    assert!(votes(&out).is_empty(), "no proposal seen since the restart");
    let out = t.step(Input::Message(proposal));
    assert_eq!(votes(&out), vec![(VoteKind::Precommit, 0, Some(id))]);
    // The rebroadcast timer re-sends exactly the signed messages, never new ones.
    let out = t.timeout(TimeoutKind::Rebroadcast, 0);
    assert_eq!(
        votes(&out),
        vec![
            (VoteKind::Prevote, 0, Some(id)),
            (VoteKind::Precommit, 0, Some(id))
        ]
    );
}

#[test]
fn the_file_store_keeps_the_lock_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("safety");
    let t = Harness::new(3);
    let keys = t.keys.clone();
    let me = t.me;
    let mut node = Consensus::new(
        config(),
        DefaultContext,
        crate::safety::FileStore::new(&path),
        keys[me].clone(),
    )
    .unwrap();
    let mut out = Vec::new();
    let start = t.height_start();
    node.step(
        Input::NewHeight {
            start: start.clone(),
            body: BlockBody::default(),
        },
        0,
        &mut out,
    )
    .unwrap();
    let v = t.block(0, b"v");
    node.step(Input::Message(t.proposal(0, &v, None)), 0, &mut out)
        .unwrap();
    for i in t.others().into_iter().take(2) {
        let m = Message::Vote(t.vote(i, VoteKind::Prevote, 0, Some(v.id())));
        node.step(Input::Message(m), 0, &mut out).unwrap();
    }
    assert_eq!(node.locked(), Some((0, v.id())));
    drop(node);
    let mut node = Consensus::new(
        config(),
        DefaultContext,
        crate::safety::FileStore::new(&path),
        keys[me].clone(),
    )
    .unwrap();
    node.step(
        Input::NewHeight {
            start,
            body: BlockBody::default(),
        },
        0,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        node.locked(),
        Some((0, v.id())),
        "lock survives the restart"
    );
}

#[test]
fn a_commit_certificate_decides_a_lagging_validator_and_a_weak_one_does_not() {
    let mut t = Harness::new(3);
    t.start();
    let block = t.block(0, b"v");
    let others = t.others();
    let precommits: Vec<_> = others
        .iter()
        .map(|i| t.vote(*i, VoteKind::Precommit, 2, Some(block.id())))
        .collect();
    let weak = CommitCertificate {
        round: 2,
        block: block.clone(),
        precommits: precommits[..2].to_vec(),
    };
    assert!(decisions(&t.step(Input::Message(Message::Commit(weak)))).is_empty());
    let wrong_round = CommitCertificate {
        round: 1,
        block: block.clone(),
        precommits: precommits.clone(),
    };
    assert!(decisions(&t.step(Input::Message(Message::Commit(wrong_round)))).is_empty());
    let good = CommitCertificate {
        round: 2,
        block: block.clone(),
        precommits,
    };
    let out = t.step(Input::Message(Message::Commit(good.clone())));
    assert_eq!(decisions(&out), vec![good]);
    // Messages of the next height wait for NewHeight.
    let next = Vote {
        height: 2,
        ..t.vote(others[0], VoteKind::Prevote, 0, None).vote
    };
    let next = SignedVote {
        vote: next,
        signature: t.keys[others[0]].sign(&next.signing_bytes(&CHAIN)),
    };
    assert!(t.step(Input::Message(Message::Vote(next))).is_empty());
    // A peer still voting in a later round of the decided height is behind.
    let out = t.deliver_vote(others[1], VoteKind::Prevote, 3, None);
    assert_eq!(
        out,
        vec![Output::PeerBehind {
            peer: t.keys[others[1]].id(),
            height: 1
        }]
    );
}

#[test]
fn messages_round_trip_and_garbage_is_refused() {
    let t = Harness::new(1);
    let block = Block {
        evidence: vec![Evidence::double_vote(
            t.vote(0, VoteKind::Prevote, 0, None),
            t.vote(0, VoteKind::Prevote, 0, Some(Hash([3; 32]))),
        )],
        actions: vec![crate::governance::SignedAction::sign(
            &t.keys[1],
            1,
            crate::governance::Action::Propose(
                crate::governance::ProposalKind::SetCoprocessorParam {
                    id: 1,
                    key: "tick".into(),
                    value: 9,
                },
            ),
            &CHAIN,
        )],
        ..t.block(0, b"payload")
    };
    assert_eq!(Block::decode(&block.encode()).unwrap(), block);
    let mut with_pol = t.proposal(0, &block, Some(0));
    if let Message::Proposal(p) = &mut with_pol {
        p.pol = vec![t.vote(2, VoteKind::Prevote, 0, Some(block.id()))];
    }
    let messages = vec![
        with_pol,
        Message::Vote(t.vote(2, VoteKind::Precommit, 4, Some(block.id()))),
        Message::Commit(CommitCertificate {
            round: 0,
            block: block.clone(),
            precommits: vec![t.vote(2, VoteKind::Precommit, 0, Some(block.id()))],
        }),
    ];
    for m in messages {
        let bytes = m.encode();
        assert_eq!(Message::decode(&bytes).unwrap(), m);
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(Message::decode(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Message::decode(&longer).is_err());
    }
    assert!(Message::decode(&[9]).is_err());
    assert_eq!(
        SignedVote::ENCODED_LEN,
        Message::Vote(t.vote(0, VoteKind::Prevote, 0, None))
            .encode()
            .len()
            - 1
    );
}

#[test]
fn a_validator_whose_chain_is_behind_its_safety_store_signs_nothing_conflicting() {
    let t = Harness::new(3);
    let me = t.keys[t.me].clone();
    // Before the crash it prevoted x at height 2, round 0 (saved), but its chain only has
    // height 0 applied: the host restarts it at height 1.
    let x = Hash([9; 32]);
    let prevote = Vote {
        kind: VoteKind::Prevote,
        height: 2,
        round: 0,
        value: Some(x),
        validator: me.id(),
    };
    let mut store = MemStore::new();
    crate::safety::SafetyStore::save(
        &mut store,
        &crate::safety::SafetyState {
            prevote: Some(SignedVote {
                vote: prevote,
                signature: me.sign(&prevote.signing_bytes(&CHAIN)),
            }),
            ..crate::safety::SafetyState::new(2)
        },
    )
    .unwrap();
    let mut node = Consensus::new(config(), DefaultContext, store, me).unwrap();
    let mut out = Vec::new();
    let start = t.height_start();
    node.step(
        Input::NewHeight {
            start: start.clone(),
            body: BlockBody::default(),
        },
        0,
        &mut out,
    )
    .unwrap();
    out.clear();
    let timeout = |height| {
        Input::Timeout(Timeout {
            kind: TimeoutKind::Propose,
            height,
            round: 0,
        })
    };
    node.step(timeout(1), 0, &mut out).unwrap();
    assert!(votes(&out).is_empty(), "height 1 is below what it signed");
    // The chain catches up; at height 2 a nil prevote would conflict with the saved one.
    node.step(
        Input::NewHeight {
            start: HeightStart {
                height: 2,
                prev_block: Hash([1; 32]),
                ..start
            },
            body: BlockBody::default(),
        },
        0,
        &mut out,
    )
    .unwrap();
    out.clear();
    node.step(timeout(2), 0, &mut out).unwrap();
    assert!(
        votes(&out).is_empty(),
        "must not prevote nil after prevoting x"
    );
    // Its saved vote is what it re-sends.
    node.step(
        Input::Timeout(Timeout {
            kind: TimeoutKind::Rebroadcast,
            height: 2,
            round: 0,
        }),
        0,
        &mut out,
    )
    .unwrap();
    assert_eq!(votes(&out), vec![(VoteKind::Prevote, 0, Some(x))]);
}

#[test]
fn a_step_that_signs_twice_saves_once() {
    // The round-0 proposer signs its proposal and its prevote in the NewHeight step.
    let mut t = Harness::new(0);
    t.start();
    assert_eq!(votes(&t.out).len(), 1);
    assert!(t
        .out
        .iter()
        .any(|o| matches!(o, Output::Broadcast(Message::Proposal(_)))));
    let store = std::mem::replace(
        &mut t.node,
        Consensus::new(config(), DefaultContext, MemStore::new(), t.keys[0].clone()).unwrap(),
    )
    .into_store();
    assert_eq!(store.saves, 1);
    // What was saved is the state after both signatures.
    let saved = crate::safety::SafetyStore::load(&mut store.clone())
        .unwrap()
        .unwrap();
    assert!(saved.proposal.is_some() && saved.prevote.is_some());
}

/// A store whose saves fail.
struct FailingStore;

impl crate::safety::SafetyStore for FailingStore {
    fn load(&mut self) -> Result<Option<crate::safety::SafetyState>, StoreError> {
        Ok(None)
    }
    fn save(&mut self, _: &crate::safety::SafetyState) -> Result<(), StoreError> {
        Err(StoreError::Io {
            path: "failing".into(),
            source: std::io::Error::other("disk full"),
        })
    }
}

#[test]
fn a_step_whose_save_fails_returns_none_of_its_messages() {
    let t = Harness::new(0);
    let mut node =
        Consensus::new(config(), DefaultContext, FailingStore, t.keys[t.me].clone()).unwrap();
    let mut out = vec![Output::Evidence(Evidence::double_vote(
        t.vote(1, VoteKind::Prevote, 0, None),
        t.vote(1, VoteKind::Prevote, 0, Some(Hash([1; 32]))),
    ))];
    let r = node.step(
        Input::NewHeight {
            start: t.height_start(),
            body: BlockBody::default(),
        },
        0,
        &mut out,
    );
    assert!(matches!(r, Err(StoreError::Io { .. })));
    assert_eq!(out.len(), 1, "earlier outputs stay, this step's are gone");
}

#[test]
fn a_validator_restarted_from_a_torn_journal_signs_nothing_it_sent_conflicting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("safety");
    let t = Harness::new(3);
    let me = t.keys[t.me].clone();
    let open = || {
        Consensus::new(
            config(),
            DefaultContext,
            crate::safety::FileStore::new(&path),
            me.clone(),
        )
        .unwrap()
    };
    let start = t.height_start();
    let new_height = || Input::NewHeight {
        start: start.clone(),
        body: BlockBody::default(),
    };
    let v = t.block(0, b"v");
    let mut out = Vec::new();
    let mut node = open();
    node.step(new_height(), 0, &mut out).unwrap();
    node.step(Input::Message(t.proposal(0, &v, None)), 0, &mut out)
        .unwrap();
    assert_eq!(votes(&out), vec![(VoteKind::Prevote, 0, Some(v.id()))]);
    for i in t.others().into_iter().take(2) {
        let m = Message::Vote(t.vote(i, VoteKind::Prevote, 0, Some(v.id())));
        node.step(Input::Message(m), 0, &mut out).unwrap();
    }
    assert_eq!(node.locked(), Some((0, v.id())));
    let end = node.into_store().journal_len();
    // The precommit's save is torn (the crash came before it returned, so the precommit
    // never left): the restarted validator has its prevote, not the lock.
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..end as usize - 7]).unwrap();
    let mut node = open();
    out.clear();
    node.step(new_height(), 0, &mut out).unwrap();
    assert_eq!(node.locked(), None);
    // It still refuses a nil prevote in round 0 and re-sends its prevote for v.
    out.clear();
    let timeout = |kind| {
        Input::Timeout(Timeout {
            kind,
            height: 1,
            round: 0,
        })
    };
    node.step(timeout(TimeoutKind::Propose), 0, &mut out)
        .unwrap();
    assert!(votes(&out).is_empty(), "no nil prevote after prevoting v");
    node.step(timeout(TimeoutKind::Rebroadcast), 0, &mut out)
        .unwrap();
    assert_eq!(votes(&out), vec![(VoteKind::Prevote, 0, Some(v.id()))]);
}

/// A vote at any height, signed by `key`.
fn vote_at(key: &Keypair, kind: VoteKind, height: Height, round: Round) -> SignedVote {
    let vote = Vote {
        kind,
        height,
        round,
        value: None,
        validator: key.id(),
    };
    SignedVote {
        vote,
        signature: key.sign(&vote.signing_bytes(&CHAIN)),
    }
}

/// The same vote with a signature that does not verify.
fn forged(mut v: SignedVote) -> SignedVote {
    v.signature[0] ^= 1;
    v
}

#[test]
fn a_far_future_timestamp_gets_a_nil_prevote_but_a_quorum_still_decides() {
    let drift = config().max_future_drift_ns;
    assert_eq!(drift, 1_000 * MS, "default: 1 s");
    // Within the drift: prevoted.
    let mut t = Harness::new(3);
    t.start();
    let mut block = t.block(0, b"v");
    block.timestamp_ns = t.now + drift;
    let out = t.step(Input::Message(t.proposal(0, &block, None)));
    assert_eq!(votes(&out), vec![(VoteKind::Prevote, 0, Some(block.id()))]);
    // Beyond it: nil (the block is valid, but this validator's clock says it is early)...
    let mut t = Harness::new(3);
    t.start();
    block.timestamp_ns = t.now + drift + 1;
    let out = t.step(Input::Message(t.proposal(0, &block, None)));
    assert_eq!(votes(&out), vec![(VoteKind::Prevote, 0, None)]);
    // ... but 2f+1 precommits for it are followed (L49: a slow clock must not stall).
    let mut decided = Vec::new();
    for i in t.others() {
        decided.extend(decisions(&t.deliver_vote(
            i,
            VoteKind::Precommit,
            0,
            Some(block.id()),
        )));
    }
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0].block, block);
}

#[test]
fn a_timestamp_that_leaves_no_room_for_a_successor_is_invalid() {
    let mut t = Harness::new(3);
    t.start();
    let mut block = t.block(0, b"v");
    block.timestamp_ns = u64::MAX;
    assert!(!block_valid(&t.height_start(), &block, &DefaultContext));
    block.timestamp_ns = u64::MAX - 1;
    assert!(block_valid(&t.height_start(), &block, &DefaultContext));
    // Neither prevoted (even with no drift bound) nor decided through a certificate.
    t.node.config.max_future_drift_ns = u64::MAX;
    block.timestamp_ns = u64::MAX;
    let out = t.step(Input::Message(t.proposal(0, &block, None)));
    assert_eq!(votes(&out), vec![(VoteKind::Prevote, 0, None)]);
    let precommits: Vec<_> = t
        .others()
        .iter()
        .map(|i| t.vote(*i, VoteKind::Precommit, 0, Some(block.id())))
        .collect();
    let certificate = CommitCertificate {
        round: 0,
        block,
        precommits,
    };
    assert!(decisions(&t.step(Input::Message(Message::Commit(certificate)))).is_empty());
}

#[test]
fn future_height_messages_are_checked_and_bounded_before_buffering() {
    let mut t = Harness::new(3);
    t.node.config.max_buffered = 12; // 3 per signer with 4 validators
    t.start();
    let others = t.others();
    let keys = t.keys.clone();
    let stranger = Keypair::from_seed([99; 32]);
    let send = |t: &mut Harness, v: SignedVote| {
        assert!(t.step(Input::Message(Message::Vote(v))).is_empty());
    };
    // Junk: far-future heights (validly signed), bogus signatures, non-members.
    for r in 0..8 {
        send(
            &mut t,
            vote_at(&keys[others[0]], VoteKind::Prevote, u64::MAX, r),
        );
        send(&mut t, vote_at(&keys[others[0]], VoteKind::Prevote, 4, r));
        let bogus = forged(vote_at(&keys[others[1]], VoteKind::Prevote, 2, r));
        send(&mut t, bogus);
        send(&mut t, vote_at(&stranger, VoteKind::Prevote, 2, r));
    }
    assert_eq!(t.node.buffered.messages.len(), 0);
    // One signer cannot fill the buffer: at most 3 of its messages (duplicates once).
    for r in 0..12 {
        let v = vote_at(&keys[others[0]], VoteKind::Precommit, 2, r);
        send(&mut t, v);
        send(&mut t, v);
    }
    assert_eq!(t.node.buffered.messages.len(), 3);
    // The others' precommits of height 2 still get in, and count at NewHeight(2): 2f+1
    // precommits of round 0 schedule timeoutPrecommit (L47).
    for (n, i) in others[1..].iter().enumerate() {
        let v = vote_at(&keys[*i], VoteKind::Precommit, 2, 0);
        send(&mut t, v);
        assert_eq!(t.node.buffered.messages.len(), 4 + n);
    }
    // Height 3 is within future_heights (2) and is kept across NewHeight(2).
    send(&mut t, vote_at(&keys[others[1]], VoteKind::Prevote, 3, 0));
    assert_eq!(t.node.buffered.messages.len(), 6);
    let start = HeightStart {
        height: 2,
        prev_block: t.block(0, b"v").id(),
        prev_timestamp_ns: 5,
        ..t.height_start()
    };
    let out = t.step(Input::NewHeight {
        start,
        body: BlockBody::default(),
    });
    assert!(timeouts(&out)
        .iter()
        .any(|(k, r, _)| *k == TimeoutKind::Precommit && *r == 0));
    assert_eq!(t.node.buffered.messages.len(), 1, "the height-3 vote");
}

#[test]
fn peer_behind_names_only_an_authenticated_validator() {
    let mut t = Harness::new(3);
    t.start();
    let block = t.block(0, b"v");
    let others = t.others();
    let precommits: Vec<_> = others
        .iter()
        .map(|i| t.vote(*i, VoteKind::Precommit, 0, Some(block.id())))
        .collect();
    let certificate = CommitCertificate {
        round: 0,
        block: block.clone(),
        precommits,
    };
    assert_eq!(
        decisions(&t.step(Input::Message(Message::Commit(certificate)))).len(),
        1
    );
    let stranger = Keypair::from_seed([99; 32]);
    let behind = |peer: &Keypair, height| {
        vec![Output::PeerBehind {
            peer: peer.id(),
            height,
        }]
    };
    // A later round of the decided height: forged, from a non-member, then genuine.
    let v = vote_at(&t.keys[others[1]], VoteKind::Prevote, 1, 3);
    assert!(t.step(Input::Message(Message::Vote(forged(v)))).is_empty());
    let s = vote_at(&stranger, VoteKind::Prevote, 1, 3);
    assert!(t.step(Input::Message(Message::Vote(s))).is_empty());
    let p = t.proposal(2, &block, None);
    let Message::Proposal(mut bad) = p.clone() else {
        unreachable!()
    };
    bad.signed.signature[0] ^= 1;
    assert!(t.step(Input::Message(Message::Proposal(bad))).is_empty());
    assert_eq!(
        t.step(Input::Message(Message::Vote(v))),
        behind(&t.keys[others[1]], 1)
    );
    let proposer = t.set.proposer(2);
    assert_eq!(t.step(Input::Message(p)), behind(t.key_of(proposer), 1));
    // An older height (its set is not kept: the current one is used).
    let start = HeightStart {
        height: 2,
        prev_block: block.id(),
        prev_timestamp_ns: 5,
        ..t.height_start()
    };
    t.step(Input::NewHeight {
        start,
        body: BlockBody::default(),
    });
    let v = vote_at(&t.keys[others[2]], VoteKind::Precommit, 1, 0);
    assert!(t.step(Input::Message(Message::Vote(forged(v)))).is_empty());
    let s = vote_at(&stranger, VoteKind::Precommit, 1, 0);
    assert!(t.step(Input::Message(Message::Vote(s))).is_empty());
    assert_eq!(
        t.step(Input::Message(Message::Vote(v))),
        behind(&t.keys[others[2]], 1)
    );
}

#[test]
fn a_future_certificate_is_buffered_only_with_a_quorum_behind_it() {
    let mut t = Harness::new(3);
    t.start();
    let others = t.others();
    let mut block = t.block(0, b"next");
    block.height = 2;
    block.prev_hash = t.block(0, b"v").id();
    block.timestamp_ns = 6;
    let precommit = |i: usize| {
        let vote = Vote {
            kind: VoteKind::Precommit,
            height: 2,
            round: 0,
            value: Some(block.id()),
            validator: t.keys[i].id(),
        };
        SignedVote {
            vote,
            signature: t.keys[i].sign(&vote.signing_bytes(&CHAIN)),
        }
    };
    let weak = CommitCertificate {
        round: 0,
        block: block.clone(),
        precommits: vec![precommit(others[0])],
    };
    let good = CommitCertificate {
        round: 0,
        block: block.clone(),
        precommits: others.iter().map(|i| precommit(*i)).collect(),
    };
    // One validator's certificate would take the height's one slot: not buffered.
    assert!(t.step(Input::Message(Message::Commit(weak))).is_empty());
    assert_eq!(t.node.buffered.messages.len(), 0);
    assert!(t
        .step(Input::Message(Message::Commit(good.clone())))
        .is_empty());
    assert_eq!(t.node.buffered.messages.len(), 1);
    let start = HeightStart {
        height: 2,
        prev_block: block.prev_hash,
        prev_timestamp_ns: 5,
        ..t.height_start()
    };
    let out = t.step(Input::NewHeight {
        start,
        body: BlockBody::default(),
    });
    assert_eq!(decisions(&out), vec![good]);
}

/// Signing held (a lost safety store): the validator signs no vote and saves nothing while it
/// follows a height to its decision, not even the `validValue` update of a proposal that
/// arrives after its (unsigned) precommit step.
#[test]
fn a_validator_holding_its_signatures_signs_and_saves_nothing() {
    let mut t = Harness::new(3);
    t.node.set_signing(false);
    t.start();
    let v = t.block(0, b"v");
    let mut own = t.timeout(TimeoutKind::Propose, 0);
    // Prevotes for v before its proposal: a quorum of any, so the prevote timeout, then
    // the precommit step (nil, unsigned).
    for i in t.others() {
        let m = Message::Vote(t.vote(i, VoteKind::Prevote, 0, Some(v.id())));
        own.extend(t.step(Input::Message(m)));
    }
    own.extend(t.timeout(TimeoutKind::Prevote, 0));
    // The proposal now: L36 in the precommit step updates validValue (normally saved).
    own.extend(t.step(Input::Message(t.proposal(0, &v, None))));
    let mut decided = false;
    for i in t.others() {
        let m = Message::Vote(t.vote(i, VoteKind::Precommit, 0, Some(v.id())));
        let out = t.step(Input::Message(m));
        decided |= out.iter().any(|o| matches!(o, Output::Decide(_)));
        own.extend(out);
    }
    assert!(decided, "it follows the others to the decision");
    let me = t.keys[t.me].id();
    let signed = own.iter().any(|o| match o {
        Output::Broadcast(Message::Vote(v)) => v.vote.validator == me,
        Output::Broadcast(Message::Proposal(_)) => true,
        _ => false,
    });
    assert!(!signed, "no signature of its own: {own:?}");
    assert_eq!(
        t.node.store_mut().saves,
        0,
        "no safety state saved while held"
    );
}

#[test]
fn rebroadcasts_resend_votes_every_time_and_the_proposal_backing_off() {
    // The round-0 proposer holds a proposal and a prevote of height 1.
    let mut t = Harness::new(0);
    t.start();
    let mut proposal_resends = Vec::new();
    for n in 1..=24u32 {
        let out = t.timeout(TimeoutKind::Rebroadcast, 0);
        assert_eq!(votes(&out).len(), 1, "the prevote goes every time");
        if out
            .iter()
            .any(|o| matches!(o, Output::Broadcast(Message::Proposal(_))))
        {
            proposal_resends.push(n);
        }
    }
    assert_eq!(proposal_resends, vec![1, 2, 4, 8, 16, 24]);
    assert!((1..=24).all(|n| resends_proposal(n) == proposal_resends.contains(&n)));
}

#[test]
fn a_block_with_more_evidence_than_a_block_carries_is_invalid() {
    let mut t = Harness::new(3);
    t.start();
    let mut block = t.block(0, b"v");
    let evidence = |i: u8| {
        Evidence::double_vote(
            t.vote(0, VoteKind::Prevote, 0, None),
            t.vote(0, VoteKind::Prevote, 0, Some(Hash([i; 32]))),
        )
    };
    block.evidence = (1..=crate::block::MAX_EVIDENCE as u8)
        .map(evidence)
        .collect();
    assert!(block_valid(&t.height_start(), &block, &DefaultContext));
    block.evidence.push(evidence(0xee));
    assert!(!block_valid(&t.height_start(), &block, &DefaultContext));
}
