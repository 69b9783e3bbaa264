//! A deterministic simulator of a whole NexusBFT cluster.
//!
//! One seeded ChaCha8 generator drives everything random: stakes, link delays, loss,
//! partitions, crash times and the equivocator's choices. Time is virtual (nanoseconds in
//! an event queue ordered by time, then by insertion), so a run is a pure function of its
//! [`SimConfig`], and a failing seed replays exactly.
//!
//! The model:
//! - **Network.** Each directed link gets a delay range at start. Before GST (global
//!   stabilisation time) messages are lost with `loss_per_mille`, delayed up to
//!   `max_delay_ms`, and a partition may split the validators in two from a random time
//!   until GST. From GST on nothing is lost and delays are at most `max_delay_after_gst_ms`.
//! - **Crashes.** A crashed validator loses its host (all in-memory state) and drops
//!   messages and timers. It keeps what a real node keeps on disk: its [`MemStore`] safety
//!   state and its block file, which it re-executes on restart. It restarts
//!   before or at GST. With `amnesia` the safety store is wiped on restart, which is what a
//!   lost disk does: used to show that the checks catch the resulting double signing.
//! - **Disk faults.** Before GST, each durable write of an honest validator (a safety save,
//!   a block append) fails with `disk_faults_per_mille`. As the shipped shell does on a
//!   write error, the validator stops at once: the write did not happen, and nothing the
//!   host queued after it (the messages the save covered) is sent. It restarts 50-500 ms
//!   later from what was durable, like a crash.
//! - **Equivocator.** One validator (below 1/3 of the stake) runs the honest state machine
//!   but, for every proposal and vote it sends, also signs a conflicting twin (another
//!   block, some of them with invalid payloads; a vote for the value the original did not
//!   vote for: nil, its twin block or the block it was proposed). At each height it splits
//!   its peers in two groups, sends one the originals and the other the twins (a "twins"
//!   attack: each group sees a consistent story), crosses over 10% of the time and sends
//!   both to a peer 5% of the time, which is how it gets caught.
//! - **Hosts.** Every validator runs the host that ships, [`crate::host::Host`], over the
//!   simulated network, clock and files: frames are delivered to `on_frame`, its timers
//!   fire at `next_deadline`, a `PersistBlock` is appended to the validator's in-memory
//!   block file before `block_durable` (which executes it and starts the next height), and
//!   a restarted validator recovers from that file. So timers, sync requests and answers,
//!   `PeerBehind` answers (certificates take `sync_delay_ms` more to arrive), the evidence
//!   pool and the decided sequence are the shipped code. The application ([`SimApp`])
//!   advances a simulated execution root (`BLAKE3(prev_root || payload)`) and proposes
//!   scripted actions: a governance proposal (co-processor upgrade) with every honest
//!   validator's yes vote, and a stake change by validator 1.
//! - **Empty blocks.** With `empty_block_interval_ms` and `idle_per_mille` set, each
//!   validator's application is idle after a share of the blocks it executes (rolled per
//!   validator, so validators disagree), and its host paces empty blocks.
//! - **Isolation.** `isolated` cuts one validator off from every other until a time (after
//!   GST too), so that it must catch up through sync.
//! - **Signatures.** Real ed25519 signing; verification is exact but cheap: the simulator
//!   knows every key, and ed25519 signing is deterministic (RFC 8032), so a signature is
//!   accepted iff it equals the key holder's signature of the bytes. Results are cached by
//!   digest across nodes (each message is checked once, not once per receiver). The unit
//!   tests use real verification.
//!
//! Checks, as [`SimReport::violations`]: agreement (no two honest validators decide
//! different blocks at one height), validity (each decided block passes `valid(v)`
//! against the decider's own chain, has a valid payload and was built by the proposer of a
//! round at or before the deciding round), equal chain-state hashes and execution roots at
//! every height, no evidence against an honest validator (unless `amnesia`), and the event
//! budget. Progress and evidence are reported for the caller to check.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::chain::ChainState;
use crate::governance::{Action, ChainParams, ProposalKind, SignedAction};
use crate::host::{
    self, AppProposal, Application, CompactStats, Frame, Host, HostStats, FRAME_MESSAGE,
};
use crate::messages::{
    CommitCertificate, Evidence, Message, Proposal, ProposalMessage, SignedProposal, SignedVote,
    Vote,
};
use crate::protocol::{block_valid, Config, HeightStart, TimeoutConfig};
use crate::safety::{MemStore, SafetyStore};
use crate::types::{
    Hash, Height, Keypair, PayloadValidator, SignatureBytes, SignatureVerifier, ValidatorId,
};
use crate::validators::{ProposerSchedule, Validator};

const MS: u64 = 1_000_000;
const CHAIN_ID: [u8; 32] = *b"nexus-sim-chain-0000000000000000";
/// Registry id of the co-processor the scripted governance proposal registers.
pub const SIM_COPROCESSOR: u32 = 1;

/// One simulated run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Seed of everything random.
    pub seed: u64,
    /// Number of validators (4 to 7 in the tests).
    pub validators: usize,
    /// Whether one validator equivocates.
    pub equivocator: bool,
    /// Crash-and-restart events before GST (of honest validators).
    pub crashes: usize,
    /// Whether a partition splits the validators before GST.
    pub partition: bool,
    /// Loss before GST, per mille.
    pub loss_per_mille: u32,
    /// Largest link delay before GST, ms.
    pub max_delay_ms: u64,
    /// Largest link delay from GST on, ms.
    pub max_delay_after_gst_ms: u64,
    /// Global stabilisation time, ms.
    pub gst_ms: u64,
    /// The run ends when every honest validator has decided this many heights after GST
    /// (or at `end_ms`).
    pub heights_after_gst: u64,
    /// Hard end of virtual time, ms.
    pub end_ms: u64,
    /// How long a host takes to answer `PeerBehind` with a certificate, ms (a block-sync
    /// protocol that polls; the longer, the longer a lagging validator runs rounds of a
    /// height that others have decided, which is when locks matter).
    pub sync_delay_ms: u64,
    /// Restarted validators lose their safety store (a fault injection).
    pub amnesia: bool,
    /// With `amnesia`: a restarted validator that lost its store holds signing
    /// (`Host::hold_signing`) until a block stamped after its restart is applied.
    pub amnesia_guard: bool,
    /// Submit a governance proposal (co-processor upgrade) and vote for it.
    pub governance: bool,
    /// `(validator, until_ms)`: every message to or from that validator is lost until then,
    /// after GST too (it must catch up through sync).
    pub isolated: Option<(usize, u64)>,
    /// Every host's empty-block interval, ms (0: none; `Host::set_empty_block_interval`).
    pub empty_block_interval_ms: u64,
    /// Per mille of executed blocks after which a validator's application is idle
    /// (`has_pending` false) until the next one; rolled per validator (0: never idle).
    pub idle_per_mille: u32,
    /// Per mille of an honest validator's durable writes before GST that fail (it stops
    /// and restarts from what was durable).
    pub disk_faults_per_mille: u32,
    /// Honest validators send their proposals compact (`Application::compact_payload`).
    pub compact: bool,
    /// With `compact`: per mille of (receiver, proposal) pairs where the receiver cannot
    /// rebuild the compact payload (it lacks the items), so the host asks for the full one.
    pub compact_miss_per_mille: u32,
}

impl SimConfig {
    /// A configuration chosen from `seed` alone: 4-7 validators, an equivocator, crashes,
    /// maybe a partition, loss of 0-30% and delays before GST, GST at 3-5 s, disk faults.
    pub fn from_seed(seed: u64) -> SimConfig {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c0f1_9000_0000);
        SimConfig {
            seed,
            validators: rng.random_range(4..=7),
            equivocator: true,
            crashes: rng.random_range(0..=2),
            partition: rng.random_bool(0.5),
            loss_per_mille: rng.random_range(0..=300),
            max_delay_ms: rng.random_range(5..=150),
            max_delay_after_gst_ms: rng.random_range(2..=30),
            gst_ms: rng.random_range(3_000..=5_000),
            heights_after_gst: 4,
            end_ms: 60_000,
            sync_delay_ms: rng.random_range(0..=1_500),
            amnesia: false,
            amnesia_guard: false,
            governance: true,
            isolated: None,
            empty_block_interval_ms: 0,
            idle_per_mille: 0,
            disk_faults_per_mille: rng.random_range(0..=30),
            compact: true,
            compact_miss_per_mille: rng.random_range(0..=500),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    /// The configuration.
    pub config: SimConfig,
    /// Broken safety or validity checks (empty on success).
    pub violations: Vec<String>,
    /// Per validator: (honest, last decided height).
    pub heights: Vec<(bool, Height)>,
    /// Per validator: height, round and step of its state machine at the end (None if down).
    pub positions: Vec<Option<(Height, u32, crate::protocol::Step)>>,
    /// Per honest validator: last decided height at GST.
    pub heights_at_gst: Vec<Height>,
    /// Whether every honest validator decided `heights_after_gst` heights after GST.
    pub progressed: bool,
    /// Whether an honest validator reported evidence against the equivocator.
    pub evidence_seen: bool,
    /// Evidence reports (by honest validators) against honest validators: zero unless
    /// `amnesia` made a restarted validator sign twice.
    pub evidence_against_honest: u64,
    /// Whether the equivocator was slashed and jailed on every honest validator's chain.
    pub equivocator_slashed: bool,
    /// Whether the scripted governance proposal was applied, and the scripted stake change
    /// took effect at an epoch boundary, on every honest validator.
    pub governance_applied: bool,
    /// Highest height decided by any honest validator.
    pub max_height: Height,
    /// Rounds above 0 in which honest validators decided (sum over decisions).
    pub extra_rounds: u64,
    /// Messages sent and dropped (loss, partition, crashed receiver).
    pub messages: (u64, u64),
    /// Virtual time at the end, ms.
    pub end_ms: u64,
    /// Digest of every decision (height, block id) in order: equal for equal seeds.
    pub trace: Hash,
    /// Per validator: its host's sync counters since its last start (zero if down).
    pub host_stats: Vec<HostStats>,
    /// Durable writes that failed (each stopped its validator).
    pub disk_faults: u64,
    /// Twin proposals of the equivocator carrying a forged chain action (another
    /// validator's `Leave` signed with the equivocator's key).
    pub forged_actions_sent: u64,
    /// Compact-proposal counters, summed over every validator's hosts (restarted ones
    /// count from their restart).
    pub compact: CompactStats,
}

impl SimReport {
    /// True if no check failed, the run made progress after GST, and (where configured)
    /// the equivocator was caught and jailed and the governance proposal applied.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
            && self.progressed
            && (!self.config.equivocator || (self.evidence_seen && self.equivocator_slashed))
            && (!self.config.governance || self.governance_applied)
    }
}

/// Signature checks by re-signing, shared by all nodes, with a cache.
#[derive(Clone)]
struct SimContext {
    keys: Rc<BTreeMap<ValidatorId, Keypair>>,
    cache: Rc<RefCell<BTreeMap<[u8; 32], bool>>>,
}

impl SignatureVerifier for SimContext {
    fn verify(&self, key: &ValidatorId, message: &[u8], signature: &SignatureBytes) -> bool {
        let mut h = blake3::Hasher::new();
        h.update(&key.0);
        h.update(signature);
        h.update(message);
        let digest = *h.finalize().as_bytes();
        if let Some(ok) = self.cache.borrow().get(&digest) {
            return *ok;
        }
        let ok = self
            .keys
            .get(key)
            .is_some_and(|k| k.sign(message) == *signature);
        self.cache.borrow_mut().insert(digest, ok);
        ok
    }
}

impl PayloadValidator for SimContext {
    fn payload_valid(&self, height: Height, payload: &[u8]) -> bool {
        sim_payload_valid(height, payload)
    }
}

/// A valid simulated payload: `"batch" || height u64 || 8 bytes || first 8 bytes of
/// BLAKE3(all before)`.
fn sim_payload(height: Height, noise: [u8; 8]) -> Vec<u8> {
    let mut p = b"batch".to_vec();
    p.extend_from_slice(&height.to_le_bytes());
    p.extend_from_slice(&noise);
    let sum = blake3::hash(&p);
    p.extend_from_slice(&sum.as_bytes()[..8]);
    p
}

fn sim_payload_valid(height: Height, payload: &[u8]) -> bool {
    payload.len() == 29
        && payload.starts_with(b"batch")
        && payload[5..13] == height.to_le_bytes()
        && blake3::hash(&payload[..21]).as_bytes()[..8] == payload[21..]
}

/// The simulator's application: a hash chain of payloads as its execution root, random
/// valid payloads and the scripted chain actions as proposals.
pub struct SimApp {
    root: Hash,
    rng: ChaCha8Rng,
    actions: Rc<Vec<SignedAction>>,
    idle_per_mille: u32,
    pending: bool,
    /// Sends compact proposals; misses `compact_miss_per_mille` of peers' ones, chosen
    /// by `BLAKE3(salt || compact)`.
    compact: Option<(u32, u64)>,
}

/// Tag of the simulated compact payload: `"cmp" || height u64 || 8 bytes` (the checksum is
/// recomputed).
const SIM_COMPACT_TAG: &[u8] = b"cmp";

impl Application for SimApp {
    type Error = std::convert::Infallible;

    fn propose(&mut self, height: Height, chain: &ChainState, _now_ns: u64) -> AppProposal {
        let actions = self
            .actions
            .iter()
            .filter(|a| a.nonce == chain.next_nonce(&a.signer))
            .filter(|a| match a.action {
                Action::Vote { proposal, .. } => chain.governance().proposal(proposal).is_some(),
                _ => true,
            })
            .cloned()
            .collect();
        AppProposal {
            actions,
            payload: sim_payload(height, self.rng.random()),
        }
    }

    fn payload_valid(&self, height: Height, payload: &[u8]) -> bool {
        sim_payload_valid(height, payload)
    }

    fn execute(
        &mut self,
        certificate: &CommitCertificate,
        chain: &ChainState,
        _recovering: bool,
        _now_ns: u64,
    ) -> Result<Hash, Self::Error> {
        // The root commits to the chain state too, as the node's does: validators that
        // applied staking or governance differently disagree on the next block's root.
        let mut root = blake3::Hasher::new();
        root.update(&self.root.0);
        root.update(&certificate.block.payload);
        root.update(&chain.hash().0);
        self.root = Hash(*root.finalize().as_bytes());
        if self.idle_per_mille > 0 {
            self.pending = self.rng.random_range(0..1000) >= self.idle_per_mille;
        }
        Ok(self.root)
    }

    fn on_app_frame(&mut self, _: ValidatorId, _: &[u8], _: &ChainState, _: u64) {}

    fn has_pending(&self) -> bool {
        self.pending
    }

    fn compact_payload(&self, payload: &[u8]) -> Option<Vec<u8>> {
        self.compact?;
        let mut compact = SIM_COMPACT_TAG.to_vec();
        compact.extend_from_slice(payload.get(5..21)?);
        Some(compact)
    }

    fn expand_payload(&self, compact: &[u8]) -> Option<Vec<u8>> {
        let (miss_per_mille, salt) = self.compact.unwrap_or((0, 0));
        let rest = compact.strip_prefix(SIM_COMPACT_TAG)?;
        let roll = blake3::Hasher::new()
            .update(&salt.to_le_bytes())
            .update(compact)
            .finalize();
        let roll = u16::from_le_bytes([roll.as_bytes()[0], roll.as_bytes()[1]]) % 1000;
        if rest.len() != 16 || u32::from(roll) < miss_per_mille {
            return None;
        }
        let height = u64::from_le_bytes(rest[..8].try_into().ok()?);
        Some(sim_payload(height, rest[8..].try_into().ok()?))
    }
}

type SimHost = Host<SimContext, SimApp>;

struct Node {
    key: Keypair,
    honest: bool,
    host: Option<SimHost>,
    /// The safety store (kept across crashes; the host's saves are performed into it).
    store: MemStore,
    incarnation: u32,
    /// The block file: every certificate persisted, in height order.
    blocks: Vec<CommitCertificate>,
    /// The chain state while down (the host's when up).
    down_chain: Option<ChainState>,
    /// The host's next wake-up already in the event queue.
    wake: Option<u64>,
    /// Twin block ids of the equivocator, per (height, round).
    twins: BTreeMap<(Height, u32), Hash>,
    /// Block ids the equivocator received in proposals, per (height, round).
    seen: BTreeMap<(Height, u32), Hash>,
    /// The equivocator's split of its peers, per height (true: gets the originals).
    groups: BTreeMap<Height, Vec<bool>>,
}

impl Node {
    fn chain(&self) -> &ChainState {
        match &self.host {
            Some(h) => h.chain(),
            None => self
                .down_chain
                .as_ref()
                .expect("a down node keeps its chain"),
        }
    }
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        frame: Frame,
    },
    Wake {
        node: usize,
        incarnation: u32,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
        /// The restart after a scheduled crash (with `amnesia`, its store is lost); a
        /// restart after a failed write keeps the store.
        after_crash: bool,
    },
}

struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    ctx: SimContext,
    genesis: ChainState,
    nodes: Vec<Node>,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    links: Vec<Vec<(u64, u64)>>,
    partition: Option<(u64, Vec<bool>)>,
    decisions: BTreeMap<Height, (Hash, usize)>,
    roots: BTreeMap<Height, (Hash, Hash)>,
    violations: Vec<String>,
    evidence_seen: bool,
    evidence_against_honest: u64,
    sent: u64,
    dropped: u64,
    extra_rounds: u64,
    trace: blake3::Hasher,
    actions: Rc<Vec<SignedAction>>,
    heights_at_gst: Option<Vec<Height>>,
    genesis_stake_1: u64,
    disk_faults: u64,
    /// Proposals of the equivocator carrying a forged chain action.
    forged_actions_sent: u64,
}

/// Runs one simulation.
pub fn run(cfg: &SimConfig) -> SimReport {
    Sim::new(cfg.clone()).run()
}

impl Sim {
    fn new(cfg: SimConfig) -> Sim {
        assert!(cfg.validators >= 1);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let n = cfg.validators;
        let keys: Vec<Keypair> = (0..n)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&cfg.seed.to_le_bytes());
                seed[8] = i as u8;
                seed[9] = 0xb7;
                Keypair::from_seed(seed)
            })
            .collect();
        let mut stakes: Vec<u64> = (0..n).map(|_| rng.random_range(1..=5)).collect();
        // The equivocator is validator n-1, with as much stake as it may have: the largest
        // below 1/3 of the total (3b < b + honest, so b = (honest - 1) / 2).
        let byz = cfg.equivocator.then_some(n - 1);
        if let Some(b) = byz {
            let honest: u64 = stakes[..b].iter().sum();
            stakes[b] = ((honest - 1) / 2).max(1);
            let total: u64 = stakes.iter().sum();
            assert!(3 * stakes[b] < total, "equivocator below 1/3");
        }
        let genesis: Vec<Validator> = keys
            .iter()
            .zip(&stakes)
            .map(|(k, s)| Validator {
                id: k.id(),
                stake: *s,
            })
            .collect();
        let params = ChainParams {
            epoch_length_blocks: 5,
            voting_period_blocks: 1_000,
            ..ChainParams::default()
        };
        let ctx = SimContext {
            keys: Rc::new(keys.iter().map(|k| (k.id(), k.clone())).collect()),
            cache: Rc::new(RefCell::new(BTreeMap::new())),
        };
        let chain = ChainState::genesis(CHAIN_ID, genesis, params, vec![]).expect("genesis");
        let nodes = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Node {
                key: k.clone(),
                honest: Some(i) != byz,
                host: None,
                store: MemStore::new(),
                incarnation: 0,
                blocks: Vec::new(),
                down_chain: Some(chain.clone()),
                wake: None,
                twins: BTreeMap::new(),
                seen: BTreeMap::new(),
                groups: BTreeMap::new(),
            })
            .collect();
        let links = (0..n)
            .map(|_| {
                (0..n)
                    .map(|_| {
                        let hi = rng.random_range(1..=cfg.max_delay_ms.max(1));
                        let lo = rng.random_range(0..=hi);
                        (lo * MS, hi * MS)
                    })
                    .collect()
            })
            .collect();
        let gst = cfg.gst_ms * MS;
        let partition = cfg.partition.then(|| {
            let start = rng.random_range(0..gst / 2);
            let mut side: Vec<bool> = (0..n).map(|_| rng.random_bool(0.5)).collect();
            side[0] = true;
            side[1] = false;
            (start, side)
        });
        let mut actions = Vec::new();
        if cfg.governance {
            actions.push(SignedAction::sign(
                &keys[0],
                1,
                Action::Propose(ProposalKind::Upgrade {
                    id: SIM_COPROCESSOR,
                    version: 1,
                    code_hash: Hash([0xc0; 32]),
                }),
                &CHAIN_ID,
            ));
            for (i, k) in keys.iter().enumerate() {
                if Some(i) != byz {
                    let nonce = if i == 0 { 2 } else { 1 };
                    let vote = Action::Vote {
                        proposal: 1,
                        approve: true,
                    };
                    actions.push(SignedAction::sign(k, nonce, vote, &CHAIN_ID));
                }
            }
            // Validator 1 raises its stake; the set changes at the next epoch boundary.
            let raise = Action::SetStake {
                stake: stakes[1] + 2,
            };
            actions.push(SignedAction::sign(&keys[1], 2, raise, &CHAIN_ID));
        }
        let mut sim = Sim {
            cfg,
            rng,
            ctx,
            genesis: chain,
            nodes,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            links,
            partition,
            decisions: BTreeMap::new(),
            roots: BTreeMap::new(),
            violations: Vec::new(),
            evidence_seen: false,
            evidence_against_honest: 0,
            sent: 0,
            dropped: 0,
            extra_rounds: 0,
            trace: blake3::Hasher::new(),
            actions: Rc::new(actions),
            heights_at_gst: None,
            genesis_stake_1: stakes[1],
            disk_faults: 0,
            forged_actions_sent: 0,
        };
        // Crash/restart schedule: honest validators, before GST, restarted at or before GST.
        let honest: Vec<usize> = (0..n).filter(|i| Some(*i) != byz).collect();
        for _ in 0..sim.cfg.crashes {
            let node = honest[sim.rng.random_range(0..honest.len())];
            let at = sim.rng.random_range(MS..gst.max(2 * MS));
            let back = sim.rng.random_range(at..=gst).max(at + MS);
            sim.schedule(at, Event::Crash { node });
            sim.schedule(
                back,
                Event::Restart {
                    node,
                    after_crash: true,
                },
            );
        }
        sim
    }

    fn schedule(&mut self, at: u64, e: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), e);
    }

    fn run(mut self) -> SimReport {
        for i in 0..self.nodes.len() {
            self.boot(i);
        }
        let gst = self.cfg.gst_ms * MS;
        let end = self.cfg.end_ms * MS;
        let mut budget: u64 = 3_000_000;
        while let Some(((at, _), event)) = self.queue.pop_first() {
            if at > end {
                break;
            }
            if budget == 0 {
                self.violations.push("event budget exhausted".into());
                break;
            }
            budget -= 1;
            if at >= gst && self.heights_at_gst.is_none() {
                self.heights_at_gst = Some(self.honest_heights());
            }
            self.now = at;
            self.handle(event);
            if self.finished() {
                break;
            }
        }
        self.report()
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, frame } => {
                if self.nodes[to].host.is_none() {
                    self.dropped += 1;
                    return;
                }
                self.deliver(from, to, &frame);
            }
            Event::Wake { node, incarnation } => {
                let n = &mut self.nodes[node];
                if n.incarnation != incarnation || n.host.is_none() {
                    return;
                }
                if n.wake.is_some_and(|w| w <= self.now) {
                    n.wake = None;
                }
                let now = self.now;
                let host = n.host.as_mut().expect("up");
                host.on_timers(now).expect("the simulated host cannot fail");
                self.perform(node);
            }
            Event::Crash { node } => self.crash(node),
            Event::Restart { node, after_crash } => {
                if self.nodes[node].host.is_none() {
                    if self.cfg.amnesia && after_crash {
                        self.nodes[node].store.wipe();
                    }
                    self.boot(node);
                }
            }
        }
    }

    /// A crashed validator keeps its safety store and block file, nothing else.
    fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(host) = node.host.take() {
            node.down_chain = Some(host.chain().clone());
            node.incarnation += 1;
            node.wake = None;
        }
    }

    /// Hands a frame to node `to`'s host (the equivocator notes the proposals it sees).
    fn deliver(&mut self, from: usize, to: usize, frame: &[u8]) {
        if !self.nodes[to].honest {
            if let Some(Message::Proposal(p)) = decode_message(frame) {
                let prop = &p.signed.proposal;
                self.nodes[to]
                    .seen
                    .insert((prop.height, prop.round), prop.block_id);
            }
        }
        let from_id = self.nodes[from].key.id();
        let now = self.now;
        let host = self.nodes[to].host.as_mut().expect("up");
        host.on_frame(from_id, frame, now)
            .expect("the simulated host cannot fail");
        self.perform(to);
    }

    /// Performs node `i`'s host actions in order, then schedules its next timer wake-up.
    fn perform(&mut self, i: usize) {
        loop {
            let Some(host) = self.nodes[i].host.as_mut() else {
                return;
            };
            let Some(action) = host.poll_action() else {
                break;
            };
            match action {
                host::Action::Send { to, frame, reason } => {
                    // An answer to `PeerBehind` takes `sync_delay_ms` more.
                    let extra = match reason {
                        host::SendReason::PeerBehind => self.cfg.sync_delay_ms * MS,
                        _ => 0,
                    };
                    if let Some(j) = self.nodes.iter().position(|n| n.key.id() == to) {
                        self.send_after(i, j, frame, extra);
                    }
                }
                host::Action::Broadcast(frame) => self.broadcast(i, frame),
                host::Action::PersistSafety(_) | host::Action::PersistBlock(_)
                    if self.disk_fails(i) =>
                {
                    self.fail_stop(i);
                    return;
                }
                host::Action::PersistSafety(state) => {
                    let node = &mut self.nodes[i];
                    node.store.save(&state).expect("memory store cannot fail");
                }
                host::Action::PersistBlock(cert) => self.persist(i, &cert),
                host::Action::Evidence(e) => self.on_evidence(i, *e),
            }
        }
        self.schedule_wake(i);
    }

    /// Whether node `i`'s next durable write fails (honest nodes, before GST).
    fn disk_fails(&mut self, i: usize) -> bool {
        self.nodes[i].honest
            && self.now < self.cfg.gst_ms * MS
            && self.rng.random_range(0..1000) < self.cfg.disk_faults_per_mille
    }

    /// A write failed: node `i` stops now (what it queued is lost) and restarts from its
    /// durable state 50-500 ms later.
    fn fail_stop(&mut self, i: usize) {
        self.disk_faults += 1;
        self.crash(i);
        let back = self.now + self.rng.random_range(50..=500) * MS;
        let restart = Event::Restart {
            node: i,
            after_crash: false,
        };
        self.schedule(back, restart);
    }

    fn schedule_wake(&mut self, i: usize) {
        let node = &self.nodes[i];
        let Some(at) = node.host.as_ref().and_then(|h| h.next_deadline()) else {
            return;
        };
        if node.wake.is_some_and(|w| w <= at) {
            return;
        }
        let at = at.max(self.now);
        let incarnation = node.incarnation;
        self.nodes[i].wake = Some(at);
        self.schedule(
            at,
            Event::Wake {
                node: i,
                incarnation,
            },
        );
    }

    fn broadcast(&mut self, i: usize, frame: Frame) {
        if !self.nodes[i].honest {
            if let Some(m) = decode_message(&frame) {
                self.equivocate(i, m);
                return;
            }
        }
        for j in 0..self.nodes.len() {
            if j != i {
                self.send(i, j, frame.clone());
            }
        }
    }

    fn on_evidence(&mut self, i: usize, e: Evidence) {
        if !self.nodes[i].honest {
            return;
        }
        let offender = e.offender();
        let honest_offender = self
            .nodes
            .iter()
            .any(|n| n.honest && n.key.id() == offender);
        if honest_offender {
            self.evidence_against_honest += 1;
            if !self.cfg.amnesia {
                self.violations.push(format!(
                    "node {i} saw evidence against honest validator {offender:?}: {e:?}"
                ));
            }
        } else {
            self.evidence_seen = true;
        }
    }

    /// Every honest validator decided enough heights after GST, the equivocator is jailed
    /// and the governance proposal applied (those that apply).
    fn finished(&self) -> bool {
        let Some(at_gst) = &self.heights_at_gst else {
            return false;
        };
        self.honest_heights()
            .iter()
            .zip(at_gst)
            .all(|(h, g)| *h >= g + self.cfg.heights_after_gst)
            && (!self.cfg.equivocator || self.equivocator_slashed())
            && (!self.cfg.governance || self.governance_applied())
    }

    fn equivocator_slashed(&self) -> bool {
        let byz = self.nodes.iter().find(|n| !n.honest).map(|n| n.key.id());
        byz.is_some_and(|b| {
            self.nodes.iter().filter(|n| n.honest).all(|n| {
                n.chain()
                    .staking()
                    .bond(&b)
                    .is_some_and(|bond| bond.is_jailed())
                    && n.chain().validators().stake_of(&b).is_none()
            })
        })
    }

    fn governance_applied(&self) -> bool {
        let raised = self.nodes[1].key.id();
        let target = self.genesis_stake_1 + 2;
        self.nodes.iter().filter(|n| n.honest).all(|n| {
            n.chain()
                .governance()
                .coprocessor(SIM_COPROCESSOR)
                .is_some_and(|c| c.version == 1)
                && n.chain().validators().stake_of(&raised) == Some(target)
        })
    }

    fn honest_heights(&self) -> Vec<Height> {
        self.nodes
            .iter()
            .filter(|n| n.honest)
            .map(|n| n.chain().height())
            .collect()
    }

    /// The compact-proposal counters of every running host, summed.
    fn compact_total(&self) -> CompactStats {
        let mut total = CompactStats::default();
        for host in self.nodes.iter().filter_map(|n| n.host.as_ref()) {
            total += host.compact_stats();
        }
        total
    }

    fn report(self) -> SimReport {
        let compact = self.compact_total();
        let heights_at_gst = self
            .heights_at_gst
            .clone()
            .unwrap_or_else(|| self.honest_heights());
        let progressed = self
            .honest_heights()
            .iter()
            .zip(&heights_at_gst)
            .all(|(h, g)| *h >= g + self.cfg.heights_after_gst);
        let equivocator_slashed = self.equivocator_slashed();
        let governance_applied = self.governance_applied();
        SimReport {
            violations: self.violations,
            heights: self
                .nodes
                .iter()
                .map(|n| (n.honest, n.chain().height()))
                .collect(),
            positions: self
                .nodes
                .iter()
                .map(|n| n.host.as_ref().and_then(|h| h.position()))
                .collect(),
            heights_at_gst,
            progressed,
            evidence_seen: self.evidence_seen,
            evidence_against_honest: self.evidence_against_honest,
            equivocator_slashed,
            governance_applied,
            max_height: self.decisions.keys().next_back().copied().unwrap_or(0),
            extra_rounds: self.extra_rounds,
            messages: (self.sent, self.dropped),
            end_ms: self.now / MS,
            trace: Hash(*self.trace.finalize().as_bytes()),
            host_stats: self
                .nodes
                .iter()
                .map(|n| n.host.as_ref().map(|h| h.stats()).unwrap_or_default())
                .collect(),
            disk_faults: self.disk_faults,
            forged_actions_sent: self.forged_actions_sent,
            compact,
            config: self.cfg,
        }
    }

    /// Starts (or restarts) node `i` from its durable state: safety store and block file.
    fn boot(&mut self, i: usize) {
        let config = Config {
            timeouts: TimeoutConfig {
                propose_ns: 300 * MS,
                prevote_ns: 100 * MS,
                precommit_ns: 100 * MS,
                delta_ns: 50 * MS,
                rebroadcast_ns: 500 * MS,
            },
            ..Config::new(CHAIN_ID)
        };
        let node = &mut self.nodes[i];
        let app = SimApp {
            root: Hash::ZERO,
            rng: ChaCha8Rng::seed_from_u64(
                self.cfg.seed ^ ((i as u64) << 40) ^ ((node.incarnation as u64) << 20),
            ),
            actions: self.actions.clone(),
            idle_per_mille: self.cfg.idle_per_mille,
            pending: true,
            compact: (self.cfg.compact && node.honest).then_some((
                self.cfg.compact_miss_per_mille,
                self.cfg.seed ^ ((i as u64) << 40) ^ ((node.incarnation as u64) << 20),
            )),
        };
        let saved = node.store.load().expect("memory store cannot fail");
        let (ctx, genesis) = (self.ctx.clone(), self.genesis.clone());
        let key = node.key.clone();
        let lost = saved.is_none() && node.incarnation > 0;
        let mut host = Host::new(config, ctx, app, saved, key, genesis, Hash::ZERO);
        if lost && self.cfg.amnesia_guard {
            // One virtual clock: no skew between validators.
            host.hold_signing(self.now, 0);
        }
        host.set_empty_block_interval(self.cfg.empty_block_interval_ms * MS);
        for cert in &node.blocks {
            host.recover(cert.clone(), self.now)
                .expect("a stored block re-executes");
        }
        host.start(self.now)
            .expect("the simulated host cannot fail");
        node.host = Some(host);
        node.down_chain = None;
        node.wake = None;
        self.perform(i);
    }

    fn send(&mut self, from: usize, to: usize, frame: Frame) {
        self.send_after(from, to, frame, 0);
    }

    /// Sends with `extra_ns` on top of the link delay.
    fn send_after(&mut self, from: usize, to: usize, frame: Frame, extra_ns: u64) {
        self.sent += 1;
        if self
            .cfg
            .isolated
            .is_some_and(|(v, until)| (v == from || v == to) && self.now < until * MS)
        {
            self.dropped += 1;
            return;
        }
        let gst = self.cfg.gst_ms * MS;
        let (lo, hi) = self.links[from][to];
        let delay = if self.now < gst {
            if self.rng.random_range(0..1000) < self.cfg.loss_per_mille {
                self.dropped += 1;
                return;
            }
            if let Some((start, side)) = &self.partition {
                if self.now >= *start && side[from] != side[to] {
                    self.dropped += 1;
                    return;
                }
            }
            self.rng.random_range(lo..=hi)
        } else {
            let cap = self.cfg.max_delay_after_gst_ms * MS;
            self.rng.random_range(lo.min(cap)..=hi.min(cap))
        };
        let at = self.now + delay + extra_ns;
        self.schedule(at, Event::Deliver { from, to, frame });
    }

    /// The equivocator: for each message, a conflicting twin; each peer gets the original,
    /// the twin or both.
    fn equivocate(&mut self, i: usize, m: Message) {
        let key = self.nodes[i].key.clone();
        let twin = match &m {
            Message::Proposal(p) => {
                let mut block = p.block.clone();
                let noise: [u8; 8] = self.rng.random();
                block.payload = if self.rng.random_bool(0.3) {
                    b"evil payload".into()
                } else {
                    sim_payload(block.height, noise).into()
                };
                if self.rng.random_bool(0.3) {
                    // Acting for another validator: its `Leave`, signed with this key.
                    block.actions.push(self.forged_action(i, block.height));
                    self.forged_actions_sent += 1;
                }
                // A fresh block without a proof of lock: a validator locked on another value
                // must prevote nil for it (Alg.1 L23), which is what this attacks.
                let proposal = Proposal {
                    block_id: block.id(),
                    pol_round: None,
                    ..p.signed.proposal
                };
                self.nodes[i]
                    .twins
                    .insert((proposal.height, proposal.round), proposal.block_id);
                Message::Proposal(ProposalMessage {
                    signed: SignedProposal {
                        proposal,
                        signature: key.sign(&proposal.signing_bytes(&CHAIN_ID)),
                    },
                    block,
                    pol: Vec::new(),
                })
            }
            Message::Vote(v) => {
                // The twin votes for whatever the original did not: its own twin block, the
                // block it was proposed, or nil.
                let slot = (v.vote.height, v.vote.round);
                let other = self.nodes[i]
                    .twins
                    .get(&slot)
                    .or(self.nodes[i].seen.get(&slot))
                    .copied()
                    .filter(|b| Some(*b) != v.vote.value);
                let value = match v.vote.value {
                    Some(_) => other,
                    None => Some(other.unwrap_or(Hash(self.rng.random()))),
                };
                let vote = Vote { value, ..v.vote };
                Message::Vote(SignedVote {
                    vote,
                    signature: key.sign(&vote.signing_bytes(&CHAIN_ID)),
                })
            }
            Message::Commit(_) => m.clone(),
        };
        // Twins-style split: at each height the peers are cut in two groups; one group gets
        // the originals, the other the twins, so each sees a consistent story. A few
        // messages cross over, and a few peers get both (which is how it gets caught).
        let height = m.height();
        let n = self.nodes.len();
        if !self.nodes[i].groups.contains_key(&height) {
            let groups: Vec<bool> = (0..n).map(|_| self.rng.random_bool(0.5)).collect();
            self.nodes[i].groups.insert(height, groups);
        }
        let groups = self.nodes[i].groups[&height].clone();
        for (j, group) in groups.into_iter().enumerate() {
            if j == i {
                continue;
            }
            let roll = self.rng.random_range(0..100);
            let original = group != (roll < 10);
            if roll >= 95 {
                self.send(i, j, host::message_frame(&m));
                self.send(i, j, host::message_frame(&twin));
            } else if original {
                self.send(i, j, host::message_frame(&m));
            } else {
                self.send(i, j, host::message_frame(&twin));
            }
        }
    }

    /// An honest validator's `Leave` with its next nonce, signed by validator `i` (the
    /// equivocator) under the victim's id: a forgery that `valid(v)` must refuse.
    fn forged_action(&self, i: usize, height: Height) -> SignedAction {
        let n = self.nodes.len();
        let victim = (1..n)
            .map(|k| (i + k + height as usize) % n)
            .find(|&j| self.nodes[j].honest)
            .expect("an honest validator");
        let victim_id = self.nodes[victim].key.id();
        let nonce = self.nodes[i].chain().next_nonce(&victim_id);
        let mut forged = SignedAction::sign(&self.nodes[i].key, nonce, Action::Leave, &CHAIN_ID);
        forged.signer = victim_id;
        forged
    }

    /// A decided block: checked (agreement, validity against the node's own chain),
    /// appended to the node's block file, made durable; then the node executes it and its
    /// roots are compared.
    fn persist(&mut self, i: usize, cert: &CommitCertificate) {
        let h = cert.block.height;
        if self.nodes[i].honest {
            self.check_decision(i, cert);
        }
        let node = &mut self.nodes[i];
        assert_eq!(
            h,
            node.blocks.len() as u64 + 1,
            "blocks persist in height order"
        );
        node.blocks.push(cert.clone());
        let now = self.now;
        let host = node.host.as_mut().expect("up");
        host.block_durable(h, now)
            .expect("the simulated host cannot fail");
        if node.honest {
            let roots = (host.chain().hash(), host.exec_root());
            match self.roots.get(&h) {
                Some(r) if *r != roots => self.violations.push(format!(
                    "node {i} has a different chain state or execution root at height {h}"
                )),
                Some(_) => {}
                None => {
                    self.roots.insert(h, roots);
                }
            }
        }
    }

    /// Agreement and validity of an honest node's decision, before it is applied.
    fn check_decision(&mut self, i: usize, cert: &CommitCertificate) {
        let block = &cert.block;
        let id = block.id();
        let h = block.height;
        let host = self.nodes[i].host.as_ref().expect("up");
        assert_eq!(
            h,
            host.chain().height() + 1,
            "decisions come in height order"
        );
        match self.decisions.get(&h) {
            Some((other, j)) if *other != id => self.violations.push(format!(
                "agreement: node {i} decided {id:?} at height {h}, node {j} decided {other:?}"
            )),
            Some(_) => {}
            None => {
                self.decisions.insert(h, (id, i));
                self.trace.update(&h.to_le_bytes());
                self.trace.update(&id.0);
            }
        }
        let (prev_block, prev_timestamp_ns) = host.last_block().unwrap_or((Hash::ZERO, 0));
        let start = HeightStart {
            height: h,
            validators: host.chain().validators().clone(),
            prev_block,
            prev_exec_root: host.exec_root(),
            prev_timestamp_ns,
        };
        if !block_valid(&start, block, &self.ctx) {
            self.violations.push(format!(
                "validity: node {i} decided an invalid block at height {h}"
            ));
        }
        if !host.chain().actions_valid(&block.actions, &self.ctx) {
            self.violations.push(format!(
                "validity: node {i} decided a forged or out-of-order chain action at height {h}"
            ));
        }
        let mut schedule = ProposerSchedule::new(&start.validators);
        if !(0..=cert.round).any(|r| schedule.proposer(r) == block.proposer) {
            self.violations.push(format!(
                "validity: block at height {h} built by {:?}, not a proposer of rounds 0..={}",
                block.proposer, cert.round
            ));
        }
        self.extra_rounds += cert.round as u64;
    }
}

/// The consensus message in a frame, if it holds one.
fn decode_message(frame: &[u8]) -> Option<Message> {
    match frame.split_first() {
        Some((&FRAME_MESSAGE, body)) => Message::decode(body).ok(),
        _ => None,
    }
}
