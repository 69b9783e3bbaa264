//! The host's order guarantees with one real validator (real ed25519), others played by
//! hand where needed. Whole clusters run in `crate::sim`.

use super::*;
use crate::governance::ChainParams;
use crate::types::Ed25519;
use crate::validators::Validator;

const CHAIN: [u8; 32] = [7; 32];
const MS: u64 = 1_000_000;

/// Executes by hashing the payload onto the root; records what it saw. It has work
/// (`pending`) once it gets an application frame, or when a test says so. Its proposal at a
/// height names the height and how many application frames it had then.
#[derive(Default)]
struct Recorder {
    root: Hash,
    executed: Vec<(Height, bool)>,
    app_frames: Vec<Vec<u8>>,
    pending: bool,
}

impl Application for Recorder {
    type Error = String;

    fn propose(&mut self, height: Height, _: &ChainState, _: u64) -> AppProposal {
        AppProposal {
            actions: Vec::new(),
            payload: proposal_payload(height, self.app_frames.len()),
        }
    }

    fn payload_valid(&self, _: Height, payload: &[u8]) -> bool {
        payload.len() == 8
    }

    fn execute(
        &mut self,
        c: &CommitCertificate,
        chain: &ChainState,
        recovering: bool,
        _: u64,
    ) -> Result<Hash, String> {
        assert_eq!(
            chain.height(),
            c.block.height,
            "the chain state is applied first"
        );
        self.executed.push((c.block.height, recovering));
        self.fold(c);
        Ok(self.root)
    }

    fn on_app_frame(&mut self, _: ValidatorId, body: &[u8], _: &ChainState, _: u64) {
        self.app_frames.push(body.to_vec());
        self.pending = true;
    }

    fn has_pending(&self) -> bool {
        self.pending
    }
}

/// [`Recorder`]'s proposal at `height` with `frames` application frames received.
fn proposal_payload(height: Height, frames: usize) -> Vec<u8> {
    (height * 1000 + frames as u64).to_le_bytes().to_vec()
}

type TestHost = Host<Ed25519, Recorder>;

/// A host for validator `keys[0]` of a set where it holds `my_stake` and a second
/// validator (the peer) holds 1.
fn host(my_stake: u64) -> (TestHost, Keypair) {
    let me = Keypair::from_seed([1; 32]);
    let peer = Keypair::from_seed([2; 32]);
    let set = vec![
        Validator {
            id: me.id(),
            stake: my_stake,
        },
        Validator {
            id: peer.id(),
            stake: 1,
        },
    ];
    let chain = ChainState::genesis(CHAIN, set, ChainParams::default(), vec![]).unwrap();
    let config = Config::new(CHAIN);
    let h = Host::new(
        config,
        Ed25519,
        Recorder::default(),
        None,
        me,
        chain,
        Hash::ZERO,
    );
    (h, peer)
}

fn drain(h: &mut TestHost) -> Vec<Action> {
    std::iter::from_fn(|| h.poll_action()).collect()
}

fn persisted(actions: &[Action]) -> Vec<Height> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::PersistBlock(c) => Some(c.block.height),
            _ => None,
        })
        .collect()
}

#[test]
fn a_decided_block_is_persisted_before_it_is_executed_and_the_next_height_starts() {
    // More than 2/3 of the stake: this validator decides alone.
    let (mut h, _) = host(10);
    h.start(MS).unwrap();
    let actions = drain(&mut h);
    assert_eq!(persisted(&actions), vec![1]);
    assert!(h.app().executed.is_empty(), "not executed before durable");
    assert_eq!(h.chain().height(), 0);
    // Its signed messages of height 1 come before the persistence request.
    let at = |want: fn(&Action) -> bool| actions.iter().position(want).unwrap();
    assert!(
        at(|a| matches!(a, Action::Broadcast(_))) < at(|a| matches!(a, Action::PersistBlock(_)))
    );
    h.block_durable(1, 2 * MS).unwrap();
    assert_eq!(h.app().executed, vec![(1, false)]);
    assert_eq!(h.chain().height(), 1);
    assert_eq!(h.exec_root(), h.app().root);
    assert_eq!(persisted(&drain(&mut h)), vec![2]);
}

#[test]
fn recovered_blocks_are_executed_without_persisting_and_served_to_sync_requests() {
    let (mut a, peer) = host(10);
    a.start(MS).unwrap();
    let mut certs = Vec::new();
    for height in 1..=3 {
        let actions = drain(&mut a);
        for act in &actions {
            if let Action::PersistBlock(c) = act {
                certs.push((**c).clone());
            }
        }
        a.block_durable(height, (1 + height) * MS).unwrap();
    }
    // A restarted validator re-executes its block file, then asks for nothing more.
    let (mut b, _) = host(10);
    for c in certs.clone() {
        b.recover(c, MS).unwrap();
    }
    assert_eq!(b.app().executed, vec![(1, true), (2, true), (3, true)]);
    assert_eq!(b.exec_root(), a.app().root_after(3, &certs));
    assert!(drain(&mut b).is_empty());
    // It answers a peer's sync request from height 2 with certificates 2 and 3, once per
    // 50 ms for the same request.
    b.on_frame(peer.id(), &sync_frame(2), 10 * MS).unwrap();
    let sent = drain(&mut b);
    assert_eq!(sent.len(), 2);
    for (act, height) in sent.iter().zip(2..) {
        let Action::Send { to, frame, .. } = act else {
            panic!("{act:?}")
        };
        assert_eq!(*to, peer.id());
        let Ok(Message::Commit(c)) = Message::decode(&frame[1..]) else {
            panic!("not a certificate")
        };
        assert_eq!(c.block.height, height);
    }
    b.on_frame(peer.id(), &sync_frame(2), 20 * MS).unwrap();
    assert!(drain(&mut b).is_empty());
    b.on_frame(peer.id(), &sync_frame(9), 200 * MS).unwrap();
    assert!(drain(&mut b).is_empty(), "nothing past our height");
    assert_eq!(b.stats().sync_certificates, 2);
}

/// A host started from a snapshot (the chain state and root after block 2) executes only
/// the later blocks, the first checked against the snapshot's root: the right root goes
/// on, a wrong one stops the host.
#[test]
fn a_host_started_from_a_snapshot_executes_only_later_blocks_checked_against_its_root() {
    let (mut a, _) = host(10);
    a.start(MS).unwrap();
    let mut certs = Vec::new();
    let mut roots = Vec::new();
    let mut chains = Vec::new();
    for height in 1..=4 {
        for act in drain(&mut a) {
            if let Action::PersistBlock(c) = act {
                certs.push((*c).clone());
            }
        }
        a.block_durable(height, (1 + height) * MS).unwrap();
        roots.push(a.exec_root());
        chains.push(a.chain().clone());
    }
    let after_2 = (certs[1].block.id(), certs[1].block.timestamp_ns);
    let (mut b, _) = host(10);
    b.app_mut().root = roots[1];
    b.start_from_snapshot(chains[1].clone(), roots[1], after_2);
    b.recover(certs[2].clone(), MS).unwrap();
    b.recover(certs[3].clone(), MS).unwrap();
    assert_eq!(b.app().executed, vec![(3, true), (4, true)]);
    assert_eq!(b.exec_root(), roots[3]);
    assert_eq!(b.chain().height(), 4);
    assert_eq!(b.chain().hash(), a.chain().hash());
    // A snapshot whose root is not the chain's: the next block refuses it.
    let (mut c, _) = host(10);
    c.start_from_snapshot(chains[1].clone(), Hash([9; 32]), after_2);
    assert!(matches!(
        c.recover(certs[2].clone(), MS),
        Err(HostError::ExecRootMismatch { height: 3, .. })
    ));
}

#[test]
fn a_message_far_ahead_asks_its_sender_for_the_missing_blocks() {
    // The peer holds most of the stake here; this validator only follows.
    let (mut h, peer) = host(1);
    h.start(MS).unwrap();
    drain(&mut h);
    let frame = nil_prevote_frame(&peer, 5);
    h.on_frame(peer.id(), &frame, 2 * MS).unwrap();
    let asked = drain(&mut h);
    assert_eq!(
        asked,
        vec![Action::Send {
            to: peer.id(),
            frame: sync_frame(1),
            reason: SendReason::SyncRequest,
        }]
    );
    // Not again within 100 ms; application frames go to the application.
    h.on_frame(peer.id(), &frame, 50 * MS).unwrap();
    h.on_frame(peer.id(), &app_frame(b"txs"), 50 * MS).unwrap();
    assert!(drain(&mut h).is_empty());
    assert_eq!(h.app().app_frames, vec![b"txs".to_vec()]);
}

/// A peer one height ahead (it decided our current height) gets a sync request only after
/// [`limits::ONE_BEHIND_GRACE_NS`] of seeing it so: a validator that signs nothing (its
/// signatures held) learns the decision no other way.
#[test]
fn a_message_one_height_ahead_asks_for_the_block_after_a_grace() {
    let (mut h, peer) = host(1);
    h.start(MS).unwrap();
    drain(&mut h);
    let frame = nil_prevote_frame(&peer, 2);
    let grace = limits::ONE_BEHIND_GRACE_NS;
    h.on_frame(peer.id(), &frame, 2 * MS).unwrap();
    h.on_frame(peer.id(), &frame, 2 * MS + grace - 1).unwrap();
    assert!(
        !drain(&mut h)
            .iter()
            .any(|a| matches!(a, Action::Send { .. })),
        "no request within the grace"
    );
    h.on_frame(peer.id(), &frame, 2 * MS + grace).unwrap();
    assert_eq!(
        drain(&mut h),
        vec![Action::Send {
            to: peer.id(),
            frame: sync_frame(1),
            reason: SendReason::SyncRequest,
        }]
    );
}

/// The frame of `key`'s round-0 nil prevote at `height`.
fn nil_prevote_frame(key: &Keypair, height: Height) -> Frame {
    let vote = crate::messages::Vote {
        kind: crate::messages::VoteKind::Prevote,
        height,
        round: 0,
        value: None,
        validator: key.id(),
    };
    let signed = crate::messages::SignedVote {
        vote,
        signature: key.sign(&vote.signing_bytes(&CHAIN)),
    };
    message_frame(&Message::Vote(signed))
}

impl Recorder {
    /// The root after a block: its payload folded into the previous root.
    fn fold(&mut self, c: &CommitCertificate) {
        let mut h = blake3::Hasher::new();
        h.update(&self.root.0);
        h.update(&c.block.payload);
        self.root = Hash(*h.finalize().as_bytes());
    }

    /// The root after executing the first `n` of `certs` from zero.
    fn root_after(&self, n: usize, certs: &[CommitCertificate]) -> Hash {
        let mut r = Recorder::default();
        for c in &certs[..n] {
            r.fold(c);
        }
        r.root
    }
}

/// A host for the validator that does not propose round 0 of height 1, both of stake 1
/// (so neither decides alone), and the other's key.
fn follower() -> (TestHost, Keypair) {
    let keys = [Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32])];
    let set: Vec<Validator> = keys
        .iter()
        .map(|k| Validator {
            id: k.id(),
            stake: 1,
        })
        .collect();
    let chain = ChainState::genesis(CHAIN, set, ChainParams::default(), vec![]).unwrap();
    let first = crate::validators::ProposerSchedule::new(chain.validators()).proposer(0);
    let (me, peer) = if keys[0].id() == first {
        (keys[1].clone(), keys[0].clone())
    } else {
        (keys[0].clone(), keys[1].clone())
    };
    let config = Config::new(CHAIN);
    let h = Host::new(
        config,
        Ed25519,
        Recorder::default(),
        None,
        me,
        chain,
        Hash::ZERO,
    );
    (h, peer)
}

fn votes(actions: &[Action]) -> Vec<crate::messages::SignedVote> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(f) => match Message::decode(&f[1..]) {
                Ok(Message::Vote(v)) => Some(v),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn a_safety_save_not_yet_taken_is_updated_in_place_and_precedes_every_later_message() {
    let (mut h, peer) = follower();
    h.start(MS).unwrap();
    assert!(
        drain(&mut h).is_empty(),
        "nothing signed before the propose timeout"
    );
    // Its nil prevote at the propose timeout, then (not drained yet) the peer's nil
    // prevote: 2f+1 nil prevotes, so it precommits nil (L44) in a second step.
    let propose_ns = Config::new(CHAIN).timeouts.propose_ns;
    h.on_timers(propose_ns + 2 * MS).unwrap();
    let vote = crate::messages::Vote {
        kind: crate::messages::VoteKind::Prevote,
        height: 1,
        round: 0,
        value: None,
        validator: peer.id(),
    };
    let signed = crate::messages::SignedVote {
        vote,
        signature: peer.sign(&vote.signing_bytes(&CHAIN)),
    };
    h.on_frame(
        peer.id(),
        &message_frame(&Message::Vote(signed)),
        propose_ns + 3 * MS,
    )
    .unwrap();
    let actions = drain(&mut h);
    let saves: Vec<usize> = (0..actions.len())
        .filter(|i| matches!(actions[*i], Action::PersistSafety(_)))
        .collect();
    assert_eq!(saves, vec![0], "one save, ahead of both votes: {actions:?}");
    let Action::PersistSafety(state) = &actions[0] else {
        unreachable!()
    };
    let sent = votes(&actions);
    assert_eq!(sent.len(), 2);
    assert_eq!(state.prevote, Some(sent[0]));
    assert_eq!(state.precommit, Some(sent[1]));
    // Restarted from that state, it signs no other vote of that round: it re-sends these.
    let me = sent[0].vote.validator;
    let key = [Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32])]
        .into_iter()
        .find(|k| k.id() == me)
        .unwrap();
    let (fresh, _) = follower();
    let chain = fresh.chain().clone();
    let saved = Some((**state).clone());
    let config = Config::new(CHAIN);
    let mut again = Host::new(
        config,
        Ed25519,
        Recorder::default(),
        saved,
        key,
        chain,
        Hash::ZERO,
    );
    again.start(10 * MS).unwrap();
    again.on_timers(propose_ns + 20 * MS).unwrap();
    let rebroadcast = Config::new(CHAIN).timeouts.rebroadcast_ns;
    again.on_timers(rebroadcast + 30 * MS).unwrap();
    let resent = votes(&drain(&mut again));
    assert!(!resent.is_empty());
    assert!(resent.iter().all(|v| sent.contains(v)), "{resent:?}");
}

#[test]
fn certificates_past_the_cores_buffer_are_held_and_applied_in_order() {
    catch_up_through_certificates(0);
}

/// A validator behind does not wait for the empty-block interval (its application idle,
/// the blocks recent): the certificates it received show that the others went on.
#[test]
fn a_validator_catching_up_does_not_wait_for_the_empty_block_interval() {
    catch_up_through_certificates(1_000_000 * MS);
}

/// Ten certificates received last first by a validator at height 0 with empty-block
/// interval `interval_ns`: it decides heights 1 to 10 in order.
fn catch_up_through_certificates(interval_ns: u64) {
    // Ten heights decided by the validator that holds most of the stake.
    let (mut a, peer) = host(10);
    a.start(MS).unwrap();
    let mut frames = Vec::new();
    let mut now = MS;
    for height in 1..=10 {
        // When the other validator proposes round 0, the propose timeout moves it on.
        let certificate = loop {
            let found = drain(&mut a).into_iter().find_map(|act| match act {
                Action::PersistBlock(c) => Some(c),
                _ => None,
            });
            if let Some(c) = found {
                break c;
            }
            now = a.next_deadline().unwrap();
            a.on_timers(now).unwrap();
        };
        frames.push(message_frame(&Message::Commit((*certificate).clone())));
        now += MS;
        a.block_durable(height, now).unwrap();
    }
    // The other validator of that set, at height 0, gets them last first (as a sync
    // answer can arrive); the core alone would keep only the next two heights.
    let validators = a.chain().validators().validators().to_vec();
    let chain = ChainState::genesis(CHAIN, validators, ChainParams::default(), vec![]).unwrap();
    let me = peer;
    let source = Keypair::from_seed([1; 32]).id();
    let mut b = Host::new(
        Config::new(CHAIN),
        Ed25519,
        Recorder::default(),
        None,
        me,
        chain,
        Hash::ZERO,
    );
    b.set_empty_block_interval(interval_ns);
    b.start(MS).unwrap();
    for f in frames.iter().rev() {
        b.on_frame(source, f, now).unwrap();
    }
    let mut persisted_heights = Vec::new();
    while let Some(act) = b.poll_action() {
        if let Action::PersistBlock(c) = act {
            persisted_heights.push(c.block.height);
            b.block_durable(c.block.height, now).unwrap();
        }
    }
    assert_eq!(persisted_heights, (1..=10).collect::<Vec<_>>());
    assert_eq!(b.exec_root(), a.exec_root());
    assert_eq!(b.chain().hash(), a.chain().hash());
}

const INTERVAL: u64 = 500 * MS;

/// A host that decides alone with the empty-block interval set, past block 1 (stamped at
/// 1 ms) and waiting to start height 2 (the application idle): nothing broadcast, nothing
/// decided, its only deadline the interval's end.
fn waiting_at_height_2() -> (TestHost, Keypair) {
    let (mut h, peer) = host(10);
    h.set_empty_block_interval(INTERVAL);
    h.start(MS).unwrap();
    assert_eq!(
        persisted(&drain(&mut h)),
        vec![1],
        "height 1 starts at once"
    );
    h.block_durable(1, 2 * MS).unwrap();
    assert_eq!(h.last_block().unwrap().1, MS);
    assert!(drain(&mut h).is_empty(), "height 2 waits");
    assert_eq!(h.waiting(), Some((2, MS + INTERVAL)));
    assert_eq!(h.next_deadline(), Some(MS + INTERVAL));
    assert_eq!(h.position().unwrap().0, 1);
    (h, peer)
}

/// Height `height` has started: this validator, deciding alone, decided it at once.
fn started(h: &mut TestHost, height: Height) {
    assert_eq!(h.waiting(), None);
    assert_eq!(h.position().unwrap().0, height);
    assert_eq!(persisted(&drain(h)), vec![height]);
}

#[test]
fn an_idle_host_waits_for_the_empty_block_interval_then_starts() {
    let (mut h, _) = waiting_at_height_2();
    h.on_timers(MS + INTERVAL - 1).unwrap();
    assert!(drain(&mut h).is_empty(), "not before the deadline");
    assert_eq!(h.waiting(), Some((2, MS + INTERVAL)));
    h.on_timers(MS + INTERVAL).unwrap();
    started(&mut h, 2);
    // Block 2 is stamped at the deadline, and height 3 waits for the next interval.
    h.block_durable(2, MS + INTERVAL + MS).unwrap();
    assert_eq!(h.last_block().unwrap().1, MS + INTERVAL);
    assert_eq!(h.waiting(), Some((3, MS + 2 * INTERVAL)));
}

#[test]
fn work_for_the_application_starts_a_waiting_height_at_once() {
    let (mut h, _) = waiting_at_height_2();
    h.on_app_work(10 * MS).unwrap();
    assert!(drain(&mut h).is_empty(), "no work yet");
    h.app_mut().pending = true;
    h.on_app_work(11 * MS).unwrap();
    started(&mut h, 2);
    // A height whose start finds work does not wait at all.
    h.block_durable(2, 12 * MS).unwrap();
    started(&mut h, 3);
}

#[test]
fn forwarded_transactions_start_a_waiting_height_at_once() {
    let (mut h, peer) = waiting_at_height_2();
    h.on_frame(peer.id(), &app_frame(b"txs"), 10 * MS).unwrap();
    started(&mut h, 2);
}

fn prevote_frame(peer: &Keypair, height: Height, round: Round) -> Frame {
    let vote = crate::messages::Vote {
        kind: crate::messages::VoteKind::Prevote,
        height,
        round,
        value: None,
        validator: peer.id(),
    };
    let signature = peer.sign(&vote.signing_bytes(&CHAIN));
    message_frame(&Message::Vote(crate::messages::SignedVote {
        vote,
        signature,
    }))
}

#[test]
fn a_peers_message_for_the_waiting_height_starts_it() {
    let (mut h, peer) = waiting_at_height_2();
    // A message of the decided height (from a later round: the peer is behind) is
    // answered with the certificate as before, and starts nothing.
    h.on_frame(peer.id(), &prevote_frame(&peer, 1, 1), 10 * MS)
        .unwrap();
    let answer = drain(&mut h);
    assert!(
        matches!(
            answer[..],
            [Action::Send {
                reason: SendReason::PeerBehind,
                ..
            }]
        ),
        "{answer:?}"
    );
    assert_eq!(h.waiting(), Some((2, MS + INTERVAL)));
    // The peer has started height 2: so does this validator, and it counts the vote.
    h.on_frame(peer.id(), &prevote_frame(&peer, 2, 0), 11 * MS)
        .unwrap();
    started(&mut h, 2);
}

#[test]
fn a_peers_message_for_the_next_height_received_earlier_means_no_wait() {
    let (mut h, peer) = host(10);
    h.set_empty_block_interval(INTERVAL);
    h.start(MS).unwrap();
    drain(&mut h);
    // Height 1 decided, not yet durable: the peer's height-2 prevote is buffered.
    h.on_frame(peer.id(), &prevote_frame(&peer, 2, 0), 2 * MS)
        .unwrap();
    h.block_durable(1, 3 * MS).unwrap();
    started(&mut h, 2);
}

#[test]
fn without_an_interval_or_with_work_every_height_starts_at_once() {
    // No interval (the default), idle application: as before.
    let (mut h, _) = host(10);
    assert_eq!(h.empty_block_interval_ns(), 0);
    h.start(MS).unwrap();
    drain(&mut h);
    h.block_durable(1, 2 * MS).unwrap();
    started(&mut h, 2);
    // An interval, but the application has work when the height would start.
    let (mut h, _) = host(10);
    h.set_empty_block_interval(INTERVAL);
    h.app_mut().pending = true;
    h.start(MS).unwrap();
    drain(&mut h);
    h.block_durable(1, 2 * MS).unwrap();
    started(&mut h, 2);
}

/// The certificates of heights 1..=n decided by a validator that decides alone.
fn decided_alone(n: Height) -> (TestHost, Keypair, Vec<CommitCertificate>) {
    let (mut a, peer) = host(10);
    a.start(MS).unwrap();
    let mut certs = Vec::new();
    for height in 1..=n {
        for act in drain(&mut a) {
            if let Action::PersistBlock(c) = act {
                certs.push((*c).clone());
            }
        }
        a.block_durable(height, (1 + height) * MS).unwrap();
    }
    (a, peer, certs)
}

/// Heights of the certificates in `actions`.
fn sent_heights(actions: &[Action]) -> Vec<Height> {
    let height = |a: &Action| match a {
        Action::Send { frame, .. } => match Message::decode(&frame[1..]) {
            Ok(Message::Commit(c)) => Some(c.block.height),
            _ => None,
        },
        _ => None,
    };
    actions.iter().filter_map(height).collect()
}

/// An archive's records: the first height, each certificate encoded as the block file
/// stores it, and whether reads fail.
type Records = (Height, Vec<Vec<u8>>, bool);

/// An archive in memory ([`Records`]).
#[derive(Clone, Default)]
struct MemoryArchive {
    records: Arc<std::sync::Mutex<Records>>,
}

impl MemoryArchive {
    fn append(&self, c: &CommitCertificate) {
        let mut records = self.records.lock().unwrap();
        if records.1.is_empty() {
            records.0 = c.block.height;
        }
        records.1.push(Message::Commit(c.clone()).encode());
    }
}

impl CertificateArchive for MemoryArchive {
    fn first_height(&self) -> Option<Height> {
        let records = self.records.lock().unwrap();
        (!records.1.is_empty()).then_some(records.0)
    }

    fn read(&self, from: Height, max: usize) -> Vec<Vec<u8>> {
        let records = self.records.lock().unwrap();
        if records.2 || from < records.0 {
            return Vec::new();
        }
        let skip = (from - records.0) as usize;
        records.1.iter().skip(skip).take(max).cloned().collect()
    }
}

#[test]
fn with_an_archive_only_the_newest_certificates_stay_in_memory_and_older_ones_are_read_back() {
    // Five blocks decided with an archive and a window of two: two stay in memory.
    let (mut a, peer) = host(10);
    let archive = MemoryArchive::default();
    a.set_certificate_archive(Box::new(archive.clone()), 2);
    a.start(MS).unwrap();
    for height in 1..=5 {
        for act in drain(&mut a) {
            if let Action::PersistBlock(c) = act {
                archive.append(&c);
            }
        }
        a.block_durable(height, (1 + height) * MS).unwrap();
        assert_eq!(a.certificates_in_memory(), height.min(2) as usize);
    }
    assert_eq!(a.first_certificate_height(), Some(1));
    drain(&mut a);
    // A sync from height 1: the archive's 1-3, then memory's 4-5, each frame exactly the
    // one a host holding every certificate sends.
    a.on_frame(peer.id(), &sync_frame(1), 100 * MS).unwrap();
    let sent: Vec<Frame> = drain(&mut a)
        .into_iter()
        .filter_map(|act| match act {
            Action::Send { frame, .. } => Some(frame),
            _ => None,
        })
        .collect();
    let stored = archive.records.lock().unwrap().1.clone();
    let expected: Vec<Frame> = stored
        .iter()
        .map(|bytes| message_frame(&Message::decode(bytes).unwrap()))
        .collect();
    assert_eq!(sent.len(), 5);
    assert_eq!(sent, expected);
    // An archive that cannot read: nothing before memory's first height is sent, and the
    // answer stops there rather than skip heights.
    archive.records.lock().unwrap().2 = true;
    a.on_frame(peer.id(), &sync_frame(2), 200 * MS).unwrap();
    assert_eq!(sent_heights(&drain(&mut a)), Vec::<Height>::new());
    a.on_frame(peer.id(), &sync_frame(4), 300 * MS).unwrap();
    assert_eq!(sent_heights(&drain(&mut a)), [4, 5]);
}

#[test]
fn pruned_certificates_are_not_served_and_sync_answers_start_at_the_first_held() {
    let (mut a, peer, _) = decided_alone(5);
    drain(&mut a);
    assert_eq!(a.first_certificate_height(), Some(1));
    a.prune_certificates(3);
    assert_eq!(a.first_certificate_height(), Some(4));
    a.on_frame(peer.id(), &sync_frame(1), 100 * MS).unwrap();
    assert_eq!(sent_heights(&drain(&mut a)), [4, 5]);
    a.prune_certificates(2);
    assert_eq!(
        a.first_certificate_height(),
        Some(4),
        "pruning never goes back"
    );
}

#[test]
fn a_host_started_from_a_snapshot_executes_only_later_blocks_and_serves_them() {
    let (a, peer, certs) = decided_alone(5);
    let (mut b, _) = host(10);
    let mut chain = b.chain().clone();
    for c in &certs[..3] {
        chain.apply_block(&c.block, &Ed25519);
    }
    let root = a.app().root_after(3, &certs);
    let last = (certs[2].block.id(), certs[2].block.timestamp_ns);
    b.app_mut().root = root;
    b.start_from_snapshot(chain, root, last);
    assert_eq!(b.first_certificate_height(), None);
    for c in certs[3..].iter().cloned() {
        b.recover(c, MS).unwrap();
    }
    assert_eq!(b.app().executed, vec![(4, true), (5, true)]);
    assert_eq!(b.exec_root(), a.app().root_after(5, &certs));
    assert_eq!(b.chain().height(), 5);
    b.on_frame(peer.id(), &sync_frame(2), 10 * MS).unwrap();
    assert_eq!(sent_heights(&drain(&mut b)), [4, 5]);
}

/// The proposals among `actions`: (round, payload).
fn proposals(actions: &[Action]) -> Vec<(Round, Vec<u8>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(f) => match Message::decode(&f[1..]) {
                Ok(Message::Proposal(p)) => {
                    Some((p.signed.proposal.round, p.block.payload.to_vec()))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn a_later_round_proposes_what_arrived_after_the_height_started() {
    // The peer proposes round 0 and stays silent; this validator proposes round 1.
    let (mut h, peer) = follower();
    h.start(MS).unwrap();
    assert!(
        proposals(&drain(&mut h)).is_empty(),
        "not round 0's proposer"
    );
    // Transactions arrive during round 0.
    h.on_frame(peer.id(), &app_frame(b"txs"), 2 * MS).unwrap();
    drain(&mut h);
    // More than a third of the stake is in round 1: this validator moves there and
    // proposes a new block holding what is pending now, not the height's first body.
    h.on_frame(peer.id(), &prevote_frame(&peer, 1, 1), 3 * MS)
        .unwrap();
    assert_eq!(h.position().unwrap().1, 1);
    assert_eq!(
        proposals(&drain(&mut h)),
        vec![(1, proposal_payload(1, 1))],
        "round 1's block is built from the pool as it is in round 1"
    );
}

/// The peer's round-0 proposal of height 1 carrying `actions`.
fn peer_proposal(peer: &Keypair, actions: Vec<crate::governance::SignedAction>) -> Frame {
    let block = crate::block::Block {
        height: 1,
        timestamp_ns: MS,
        proposer: peer.id(),
        prev_hash: Hash::ZERO,
        prev_exec_root: Hash::ZERO,
        evidence: vec![],
        actions,
        payload: proposal_payload(1, 0).into(),
    };
    let proposal = crate::messages::Proposal {
        height: 1,
        round: 0,
        pol_round: None,
        block_id: block.id(),
        proposer: peer.id(),
    };
    message_frame(&Message::Proposal(ProposalMessage {
        signed: crate::messages::SignedProposal {
            proposal,
            signature: peer.sign(&proposal.signing_bytes(&CHAIN)),
        },
        block,
        pol: vec![],
    }))
}

#[test]
fn a_proposal_carrying_a_forged_or_out_of_order_chain_action_gets_a_nil_prevote() {
    use crate::governance::{Action as ChainAction, SignedAction};
    let prevote_for = |actions: Vec<SignedAction>| {
        let (mut h, peer) = follower();
        h.start(MS).unwrap();
        drain(&mut h);
        h.on_frame(peer.id(), &peer_proposal(&peer, actions), 2 * MS)
            .unwrap();
        let votes = votes(&drain(&mut h));
        assert_eq!(votes.len(), 1, "{votes:?}");
        votes[0].vote.value
    };
    let victim = Keypair::from_seed([9; 32]);
    let sign = |key: &Keypair, nonce| SignedAction::sign(key, nonce, ChainAction::Leave, &CHAIN);
    // A correctly signed action with the signer's next nonce: the block gets the prevote.
    assert!(prevote_for(vec![sign(&victim, 1)]).is_some());
    // The proposer acting for another key, or skipping a nonce: nil.
    let mut forged = sign(&Keypair::from_seed([8; 32]), 1);
    forged.signer = victim.id();
    assert_eq!(prevote_for(vec![forged]), None);
    assert_eq!(prevote_for(vec![sign(&victim, 2)]), None);
}
