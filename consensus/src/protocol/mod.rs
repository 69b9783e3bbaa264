//! Tendermint as a pure state machine.
//!
//! The rules are Algorithm 1 of "The latest gossip on BFT consensus" (Buchman, Kwon,
//! Milosevic, 2018); each rule below cites its lines (`Alg.1 L22-27`). With `n` the total
//! stake, "2f + 1" means more than 2/3 of it and "f + 1" more than 1/3
//! ([`ValidatorSet::is_quorum`], [`ValidatorSet::exceeds_one_third`]). Safety holds while
//! byzantine stake is below 1/3; progress needs a period where messages arrive in time.
//!
//! [`Consensus::step`] takes one [`Input`] and the current time, and appends [`Output`]s.
//! It never reads a clock, a socket or randomness; the only side effect is
//! [`SafetyStore::save`], called once at the end of a `step` that changed the safety state,
//! before the step returns (so before any message it signed can leave). Saves are coalesced:
//! a step that signs a proposal and then prevotes it writes once.
//!
//! Departures from the paper, all liveness-only or bookkeeping:
//! - The host starts each height with [`Input::NewHeight`] after it has executed the decided
//!   block (Alg.1 L52-54 is split: deciding emits [`Output::Decide`]; the host's `NewHeight`
//!   resets the height state and starts round 0). Messages for the next
//!   `future_heights` heights are buffered until then, only if their signer is in the
//!   current set and their signature verifies, at most `max_buffered` in all and
//!   `max_buffered / n` per signer; others (and any message before the first height) are
//!   dropped.
//! - A decided height can also be learned from a [`CommitCertificate`] (the block and
//!   precommits for it from more than 2/3 of the stake): the same condition as L49, with the value delivered by the
//!   certificate instead of a proposal. When a validator hears from a peer that is behind
//!   (a message whose signer is in the current set and whose signature verifies), it emits
//!   [`Output::PeerBehind`] so the host can send that peer the certificate.
//! - A proposal whose block timestamp is more than `max_future_drift_ns` ahead of `now_ns`
//!   gets a nil prevote (L22-33). This is not part of `valid(v)` (which must not depend on
//!   the clock): deciding on 2f+1 precommits (L49) and certificates ignore it.
//! - Every validator, the proposer included, schedules `timeoutPropose` at round start: if a
//!   restarted proposer may not sign again (see [`crate::safety`]), the timeout moves it on.
//! - getValue() in a round after 0 asks the host again ([`Output::BodyWanted`], answered
//!   with [`Input::RoundBody`]): a proposer whose round-0 body was empty proposes what
//!   arrived since, not that empty body.
//! - A validator's own messages are counted directly; `Broadcast` is for the others.
//! - Messages more than `max_rounds_ahead` rounds ahead are dropped (bounded memory).

mod votes;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::block::Block;
use crate::governance::SignedAction;
use crate::messages::{
    CommitCertificate, Evidence, Message, Proposal, ProposalMessage, SignedProposal, SignedVote,
    Vote, VoteKind,
};
use crate::safety::{SafetyState, SafetyStore, SignCheck, StoreError};
use crate::types::{Context, Hash, Height, Keypair, Round, ValidatorId};
use crate::validators::{ProposerSchedule, ValidatorSet};
use votes::{Added, VoteKeeper};

/// The three steps of a round. Ordered: `Propose < Prevote < Precommit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Waiting for the proposal.
    Propose,
    /// Prevoted; waiting for prevotes.
    Prevote,
    /// Precommitted; waiting for precommits.
    Precommit,
}

/// Which timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimeoutKind {
    /// `timeoutPropose`.
    Propose,
    /// `timeoutPrevote`.
    Prevote,
    /// `timeoutPrecommit`.
    Precommit,
    /// Not in the paper: re-send this validator's latest signed messages of the height, so
    /// that messages lost before GST are eventually delivered (the paper assumes reliable
    /// links; real networks drop). Re-armed until the height is decided. Votes go every
    /// time; the proposal (a whole block) only at the 1st, 2nd, 4th and then every 8th
    /// ([`resends_proposal`]), so that on a slow link re-sent blocks cannot crowd out the
    /// votes that would decide one.
    Rebroadcast,
}

/// A timeout the host must deliver back as [`Input::Timeout`] when it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timeout {
    /// Which one.
    pub kind: TimeoutKind,
    /// Height it was scheduled at.
    pub height: Height,
    /// Round it was scheduled in.
    pub round: Round,
}

/// Timeout durations: `base + round · delta`, so they grow with the round until they exceed
/// the (unknown) message delay after GST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutConfig {
    /// `timeoutPropose(0)` in ns.
    pub propose_ns: u64,
    /// `timeoutPrevote(0)` in ns.
    pub prevote_ns: u64,
    /// `timeoutPrecommit(0)` in ns.
    pub precommit_ns: u64,
    /// Added per round to each, in ns.
    pub delta_ns: u64,
    /// Period of [`TimeoutKind::Rebroadcast`], in ns (does not grow).
    pub rebroadcast_ns: u64,
}

impl TimeoutConfig {
    /// Duration of `kind` in `round`, in ns (saturating).
    pub fn duration_ns(&self, kind: TimeoutKind, round: Round) -> u64 {
        let base = match kind {
            TimeoutKind::Propose => self.propose_ns,
            TimeoutKind::Prevote => self.prevote_ns,
            TimeoutKind::Precommit => self.precommit_ns,
            TimeoutKind::Rebroadcast => return self.rebroadcast_ns,
        };
        base.saturating_add(self.delta_ns.saturating_mul(round as u64))
    }
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            propose_ns: 300_000_000,
            prevote_ns: 100_000_000,
            precommit_ns: 100_000_000,
            delta_ns: 50_000_000,
            rebroadcast_ns: 1_000_000_000,
        }
    }
}

/// Whether the `n`-th rebroadcast of a height (from 1) re-sends this validator's proposal:
/// the 1st, 2nd, 4th, then every 8th. A block can be hundreds of KiB; re-sent to every
/// peer each period it would fill a lossy link on its own (measured: 10% loss and 20 ms
/// of delay held four validators in one height for a minute), while votes are 144 bytes.
pub fn resends_proposal(n: u32) -> bool {
    (n.is_power_of_two() && n <= 8) || n.is_multiple_of(8)
}

/// Static configuration of one validator's state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Chain id bound into every signature.
    pub chain_id: [u8; 32],
    /// Timeout durations.
    pub timeouts: TimeoutConfig,
    /// Messages for rounds above `round + max_rounds_ahead` are dropped.
    pub max_rounds_ahead: Round,
    /// At most this many messages for later heights are buffered, and at most
    /// `max_buffered / n` (at least 1) per signer, with `n` the size of the current set.
    pub max_buffered: usize,
    /// Only messages for heights `h + 1 ..= h + future_heights` are buffered (`h` the
    /// current height); later ones are dropped.
    pub future_heights: Height,
    /// A proposal whose block timestamp is more than this many ns after `now_ns` gets a nil
    /// prevote (L22-33). Not applied to a decision (L49) or a commit certificate.
    pub max_future_drift_ns: u64,
}

impl Config {
    /// Defaults for chain `chain_id`.
    pub fn new(chain_id: [u8; 32]) -> Config {
        Config {
            chain_id,
            timeouts: TimeoutConfig::default(),
            max_rounds_ahead: 1_000,
            max_buffered: 4_096,
            future_heights: 2,
            max_future_drift_ns: 1_000_000_000,
        }
    }
}

/// What the host knows when a height starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeightStart {
    /// The height to decide.
    pub height: Height,
    /// Its validator set (with proposer priorities for round 0).
    pub validators: ValidatorSet,
    /// Id of the block at `height - 1` (zeros for height 1).
    pub prev_block: Hash,
    /// Execution root after the block at `height - 1`.
    pub prev_exec_root: Hash,
    /// Timestamp of the block at `height - 1` (0 for height 1).
    pub prev_timestamp_ns: u64,
}

/// What this validator proposes if it must build a new block at this height.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockBody {
    /// Evidence to include.
    pub evidence: Vec<Evidence>,
    /// Actions to include.
    pub actions: Vec<SignedAction>,
    /// Execution payload.
    pub payload: crate::block::Payload,
}

/// Inputs to [`Consensus::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Start a height (the first one at boot, then each one after the host has applied the
    /// decided block).
    NewHeight {
        /// The height's context.
        start: HeightStart,
        /// What to propose in round 0 (later rounds ask with [`Output::BodyWanted`]).
        body: BlockBody,
    },
    /// A message from another validator (signatures are checked here).
    Message(Message),
    /// A timeout that expired.
    Timeout(Timeout),
    /// The answer to [`Output::BodyWanted`]: what this validator's new block in `round`
    /// holds (ignored unless the core still waits for it).
    RoundBody {
        /// The height asked about.
        height: Height,
        /// The round asked about.
        round: Round,
        /// What to propose.
        body: BlockBody,
    },
}

/// Outputs of [`Consensus::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send to every other validator.
    Broadcast(Message),
    /// Deliver `Input::Timeout(timeout)` at time `at_ns`.
    ScheduleTimeout {
        /// The timeout.
        timeout: Timeout,
        /// When, in the same clock as `now`.
        at_ns: u64,
    },
    /// The height is decided: execute `certificate.block`, then send `NewHeight`.
    Decide(CommitCertificate),
    /// A validator double-signed.
    Evidence(Evidence),
    /// This validator proposes a new block in `round` (> 0: round 0's body came with
    /// `NewHeight`): the host answers with [`Input::RoundBody`], built from what is pending
    /// now, so a later round carries what arrived since the height started.
    BodyWanted {
        /// The height.
        height: Height,
        /// The round.
        round: Round,
    },
    /// `peer` sent a message for `height`, which this validator has already decided: the
    /// host may send it the commit certificate of `height` (rate-limited by the host).
    /// `peer` signed that message (its signature was verified) and is in the current set.
    PeerBehind {
        /// The validator that is behind.
        peer: ValidatorId,
        /// The height it is at.
        height: Height,
    },
}

/// A proposal accepted for a round, with `valid(v)` computed once.
#[derive(Debug, Clone)]
struct Accepted {
    message: ProposalMessage,
    id: Hash,
    valid: bool,
}

/// Per-height state (Alg.1 L2-9 plus the message log).
#[derive(Debug, Clone)]
struct HeightState {
    start: HeightStart,
    body: BlockBody,
    proposers: ProposerSchedule,
    round: Round,
    step: Step,
    locked: Option<(Round, Block)>,
    valid: Option<(Round, Block)>,
    proposals: BTreeMap<Round, Accepted>,
    votes: VoteKeeper,
    /// L34 fired in `round`.
    prevote_timeout_scheduled: bool,
    /// L36 fired in `round`.
    locked_or_valid_updated: bool,
    /// L47 fired in `round`.
    precommit_timeout_scheduled: bool,
    /// `decision_p[h_p] != nil`.
    decided: Option<Round>,
    /// Rebroadcast timeouts handled at this height (the proposal's re-sends back off).
    rebroadcasts: u32,
    /// The later round whose new block waits for the host's fresh body
    /// ([`Output::BodyWanted`]).
    body_wanted: Option<Round>,
}

/// One validator's Tendermint state machine across heights.
pub struct Consensus<C: Context, S: SafetyStore> {
    config: Config,
    ctx: C,
    store: S,
    key: Keypair,
    safety: SafetyState,
    /// `safety` changed since the last save (saved at the end of the current step).
    unsaved: bool,
    height: Option<HeightState>,
    buffered: Buffer,
    /// Whether this validator signs proposals and votes (off while it cannot prove it is
    /// past every height it may have signed: its safety state was lost).
    signing: bool,
}

/// What identifies a buffered message for deduplication (signatures left out, so a
/// signer's re-signed copies of one message count once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum BufferKey {
    Proposal(Height, Round, ValidatorId, Hash),
    Vote(Height, VoteKind, Round, ValidatorId, Option<Hash>),
    Commit(Height),
}

/// Messages for later heights, signature-checked, bounded in total and per signer.
#[derive(Debug, Default)]
struct Buffer {
    /// In arrival order, with the signer they are charged to.
    messages: Vec<(ValidatorId, Message)>,
    keys: BTreeSet<BufferKey>,
    per_signer: HashMap<ValidatorId, usize>,
}

impl<C: Context, S: SafetyStore> std::fmt::Debug for Consensus<C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consensus")
            .field("id", &self.key.id())
            .field("height", &self.height.as_ref().map(|h| h.start.height))
            .field("round", &self.height.as_ref().map(|h| h.round))
            .field("step", &self.height.as_ref().map(|h| h.step))
            .finish()
    }
}

impl<C: Context, S: SafetyStore> Consensus<C, S> {
    /// A validator with key `key`, loading its safety state from `store`.
    pub fn new(config: Config, ctx: C, mut store: S, key: Keypair) -> Result<Self, StoreError> {
        let safety = store.load()?.unwrap_or_default();
        Ok(Consensus {
            config,
            ctx,
            store,
            key,
            safety,
            unsaved: false,
            height: None,
            buffered: Buffer::default(),
            signing: true,
        })
    }

    /// Turns signing on or off. Off, the validator follows the chain (counts others' votes,
    /// decides, syncs) but signs no proposal or vote, and saves no safety state (the next
    /// save follows the first step after signing is back on).
    pub fn set_signing(&mut self, on: bool) {
        self.signing = on;
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether this validator signs (see [`Consensus::set_signing`]).
    pub fn signing(&self) -> bool {
        self.signing
    }

    /// This validator's id.
    pub fn id(&self) -> ValidatorId {
        self.key.id()
    }

    /// The current height, round and step, if a height is running.
    pub fn position(&self) -> Option<(Height, Round, Step)> {
        self.height
            .as_ref()
            .map(|h| (h.start.height, h.round, h.step))
    }

    /// `(lockedRound, id(lockedValue))` at the current height.
    pub fn locked(&self) -> Option<(Round, Hash)> {
        self.height
            .as_ref()
            .and_then(|h| h.locked.as_ref().map(|(r, b)| (*r, b.id())))
    }

    /// Gives back the store (the simulator keeps it across a simulated crash).
    pub fn into_store(self) -> S {
        self.store
    }

    /// The store (the host takes the state saved by the last step from it).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The host hooks.
    pub fn context(&self) -> &C {
        &self.ctx
    }

    /// The host hooks, mutably (the host's application lives in them).
    pub fn context_mut(&mut self) -> &mut C {
        &mut self.ctx
    }

    /// Handles one input at time `now_ns`, appending outputs to `out`.
    ///
    /// Whatever this step signed is saved through the [`SafetyStore`] once, before it
    /// returns. If the save fails, the outputs of this step are removed from `out` (none of
    /// its signed messages may leave) and the error is returned; the instance must then be
    /// dropped: a validator that cannot persist must not sign.
    pub fn step(
        &mut self,
        input: Input,
        now_ns: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        let before = out.len();
        let result = self.step_inner(input, now_ns, out).and_then(|()| {
            // Nothing is saved while signing is held: a file would tell the next restart
            // that this validator knows what it signed, which it does not.
            if self.unsaved && self.signing {
                self.store.save(&self.safety)?;
                self.unsaved = false;
            }
            Ok(())
        });
        if result.is_err() {
            out.truncate(before);
        }
        result
    }

    fn step_inner(
        &mut self,
        input: Input,
        now_ns: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        match input {
            Input::NewHeight { start, body } => self.new_height(start, body, now_ns, out)?,
            Input::Message(m) => {
                self.on_message(m, out);
            }
            Input::Timeout(t) => self.on_timeout(t, now_ns, out)?,
            Input::RoundBody {
                height,
                round,
                body,
            } => self.round_body(height, round, body, now_ns, out),
        }
        self.progress(now_ns, out)
    }

    fn new_height(
        &mut self,
        start: HeightStart,
        body: BlockBody,
        now_ns: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        if let Some(h) = &self.height {
            assert!(
                start.height > h.start.height,
                "NewHeight {} after height {}",
                start.height,
                h.start.height
            );
        }
        let height = start.height;
        // A restart inside a height resumes from what was saved: same lock, same valid
        // value, the highest round entered (the guard in `safety` does the rest).
        let (round, locked, valid) = if self.safety.height == height {
            (
                self.safety.round,
                self.safety.locked.clone(),
                self.safety.valid.clone(),
            )
        } else {
            (0, None, None)
        };
        self.height = Some(HeightState {
            proposers: ProposerSchedule::new(&start.validators),
            start,
            body,
            round,
            step: Step::Propose,
            locked,
            valid,
            proposals: BTreeMap::new(),
            votes: VoteKeeper::default(),
            prevote_timeout_scheduled: false,
            locked_or_valid_updated: false,
            precommit_timeout_scheduled: false,
            decided: None,
            rebroadcasts: 0,
            body_wanted: None,
        });
        // After a restart, this validator's own signed messages of the height count again
        // (they were sent before the crash; a refused re-signing must not lose them).
        if self.safety.height == height {
            if let Some(p) = self.safety.proposal.clone() {
                self.accept_proposal(p);
            }
            let hs = self.height.as_mut().expect("just set");
            let own = [self.safety.prevote, self.safety.precommit];
            for v in own
                .into_iter()
                .flatten()
                .chain(self.safety.valid_pol.iter().copied())
            {
                if let Some(stake) = hs.start.validators.stake_of(&v.vote.validator) {
                    hs.votes.add(v, stake);
                }
            }
        }
        out.push(Output::ScheduleTimeout {
            timeout: Timeout {
                kind: TimeoutKind::Rebroadcast,
                height,
                round: 0,
            },
            at_ns: now_ns.saturating_add(self.config.timeouts.rebroadcast_ns),
        });
        // Alg.1 L10: upon start do StartRound(0) (or the saved round after a restart).
        self.start_round(round, now_ns, out)?;
        // Buffered messages were signature-checked when buffered: those of this height are
        // handled now, later ones are buffered again if their signer is in this height's
        // set and they are still within `future_heights`.
        let buffered = std::mem::take(&mut self.buffered);
        for (signer, m) in buffered.messages {
            match m.height().cmp(&height) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => self.on_message(m, out),
                std::cmp::Ordering::Greater => self.buffer(m, Some(signer)),
            }
        }
        Ok(())
    }

    /// Alg.1 L11-21: StartRound(round).
    fn start_round(
        &mut self,
        round: Round,
        now_ns: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        let me = self.key.id();
        let hs = self.height.as_mut().expect("height running");
        // L12-13
        hs.round = round;
        hs.step = Step::Propose;
        hs.prevote_timeout_scheduled = false;
        hs.locked_or_valid_updated = false;
        hs.precommit_timeout_scheduled = false;
        let height = hs.start.height;
        // The safety state only moves forward: if it is ahead of this height (the host's
        // chain is behind what this validator signed before a crash), it stays, and the
        // guard refuses every signature until the chain catches up.
        if height > self.safety.height {
            self.safety = SafetyState::new(height);
        }
        if height == self.safety.height && round > self.safety.round {
            self.safety.round = round;
        }
        // L21 (for everyone; see the module docs).
        let at_ns = now_ns.saturating_add(
            self.config
                .timeouts
                .duration_ns(TimeoutKind::Propose, round),
        );
        out.push(Output::ScheduleTimeout {
            timeout: Timeout {
                kind: TimeoutKind::Propose,
                height,
                round,
            },
            at_ns,
        });
        // L14
        if hs.proposers.proposer(round) != me {
            return Ok(());
        }
        // getValue() in a later round: a new block holds what is pending now, not what was
        // pending when the height started, so the host is asked for a fresh body first.
        if round > 0 && hs.valid.is_none() && self.signing {
            hs.body_wanted = Some(round);
            out.push(Output::BodyWanted { height, round });
            return Ok(());
        }
        self.propose(round, now_ns, out);
        Ok(())
    }

    /// The host's fresh body for a later round this validator proposes: proposed at once if
    /// the core is still in that round's propose step waiting for it.
    fn round_body(
        &mut self,
        height: Height,
        round: Round,
        body: BlockBody,
        now_ns: u64,
        out: &mut Vec<Output>,
    ) {
        let Some(hs) = self.height.as_mut() else {
            return;
        };
        let waiting = hs.start.height == height
            && hs.round == round
            && hs.step == Step::Propose
            && hs.decided.is_none()
            && hs.body_wanted == Some(round);
        if !waiting {
            return;
        }
        hs.body_wanted = None;
        hs.body = body;
        self.propose(round, now_ns, out);
    }

    /// Alg.1 L15-19: this validator proposes in `round` (its proposer): validValue if there
    /// is one, else a new block of the height's body.
    fn propose(&mut self, round: Round, now_ns: u64, out: &mut Vec<Output>) {
        let me = self.key.id();
        let hs = self.height.as_mut().expect("height running");
        let height = hs.start.height;
        // L15-18: re-propose validValue if there is one, else a new block (getValue()).
        let (block, pol_round) = match &hs.valid {
            Some((vr, v)) => (v.clone(), Some(*vr)),
            None => (
                Block {
                    height,
                    timestamp_ns: now_ns.max(hs.start.prev_timestamp_ns.saturating_add(1)),
                    proposer: me,
                    prev_hash: hs.start.prev_block,
                    prev_exec_root: hs.start.prev_exec_root,
                    evidence: hs.body.evidence.clone(),
                    actions: hs.body.actions.clone(),
                    payload: hs.body.payload.clone(),
                },
                None,
            ),
        };
        let block_id = block.id();
        let pol = match pol_round {
            Some(vr) => hs.votes.votes_for(vr, VoteKind::Prevote, Some(block_id)),
            None => Vec::new(),
        };
        let proposal = Proposal {
            height,
            round,
            pol_round,
            block_id,
            proposer: me,
        };
        // L19: broadcast ⟨PROPOSAL, h_p, round_p, proposal, validRound_p⟩.
        if !self.signing {
            return;
        }
        let message = match self.safety.may_sign_proposal(&proposal) {
            SignCheck::Refuse => return,
            SignCheck::Resend(m) => m,
            SignCheck::Sign => {
                let m = ProposalMessage {
                    signed: SignedProposal {
                        proposal,
                        signature: self
                            .key
                            .sign(&proposal.signing_bytes(&self.config.chain_id)),
                    },
                    block,
                    pol,
                };
                self.safety.proposal = Some(m.clone());
                self.unsaved = true;
                m
            }
        };
        self.accept_proposal(message.clone());
        out.push(Output::Broadcast(Message::Proposal(message)));
    }

    /// Signs (or re-sends) this validator's vote, counts it locally and broadcasts it.
    /// Returns false if the safety rules refused it or this validator has no stake here.
    fn vote(
        &mut self,
        kind: VoteKind,
        value: Option<Hash>,
        out: &mut Vec<Output>,
    ) -> Result<bool, StoreError> {
        let hs = self.height.as_mut().expect("height running");
        // Not in this height's set (joined later, left, jailed), or not signing: nothing.
        if !self.signing || hs.start.validators.stake_of(&self.key.id()).is_none() {
            return Ok(false);
        }
        let vote = Vote {
            kind,
            height: hs.start.height,
            round: hs.round,
            value,
            validator: self.key.id(),
        };
        let signed = match self.safety.may_sign_vote(&vote) {
            SignCheck::Refuse => return Ok(false),
            SignCheck::Resend(v) => v,
            SignCheck::Sign => {
                let signed = SignedVote {
                    vote,
                    signature: self.key.sign(&vote.signing_bytes(&self.config.chain_id)),
                };
                match kind {
                    VoteKind::Prevote => self.safety.prevote = Some(signed),
                    VoteKind::Precommit => self.safety.precommit = Some(signed),
                }
                self.safety.locked = hs.locked.clone();
                self.safety.valid = hs.valid.clone();
                self.safety.valid_pol = valid_pol(hs);
                self.unsaved = true;
                signed
            }
        };
        if let Some(stake) = hs.start.validators.stake_of(&vote.validator) {
            hs.votes.add(signed, stake);
        }
        out.push(Output::Broadcast(Message::Vote(signed)));
        Ok(true)
    }

    fn on_message(&mut self, m: Message, out: &mut Vec<Output>) {
        let Some(hs) = self.height.as_mut() else {
            // No validator set known yet: nothing to check a signature against.
            return;
        };
        let h = hs.start.height;
        let height = m.height();
        if height > h || (height == h && hs.decided.is_some() && !matches!(m, Message::Commit(_))) {
            if height > h {
                self.buffer(m, None);
            } else {
                self.maybe_behind(&m, out);
            }
            return;
        }
        if height < h {
            self.maybe_behind(&m, out);
            return;
        }
        match m {
            Message::Proposal(p) => self.on_proposal(p, out),
            Message::Vote(v) => self.on_vote(v, out),
            Message::Commit(c) => self.on_commit(c, out),
        }
    }

    /// Buffers a message for a later height if it is within `future_heights`, its signer
    /// is in the current set and its signature verifies (skipped if `verified` names the
    /// signer it was checked for before), within the total and per-signer bounds.
    fn buffer(&mut self, m: Message, verified: Option<ValidatorId>) {
        let Some(hs) = self.height.as_ref() else {
            return;
        };
        let h = hs.start.height;
        let height = m.height();
        if height <= h || height - h > self.config.future_heights {
            return;
        }
        let set = &hs.start.validators;
        let chain = &self.config.chain_id;
        let (signer, key) = match &m {
            Message::Proposal(p) => {
                let x = &p.signed.proposal;
                (
                    x.proposer,
                    BufferKey::Proposal(x.height, x.round, x.proposer, x.block_id),
                )
            }
            Message::Vote(v) => {
                let x = &v.vote;
                (
                    x.validator,
                    BufferKey::Vote(x.height, x.kind, x.round, x.validator, x.value),
                )
            }
            // Charged to its first signer; one certificate per height.
            Message::Commit(c) => match c.precommits.first() {
                Some(v) => (v.vote.validator, BufferKey::Commit(c.block.height)),
                None => return,
            },
        };
        let b = &self.buffered;
        let cap = (self.config.max_buffered / set.len().max(1)).max(1);
        if b.messages.len() >= self.config.max_buffered
            || b.keys.contains(&key)
            || b.per_signer.get(&signer).copied().unwrap_or(0) >= cap
            || set.stake_of(&signer).is_none()
        {
            return;
        }
        if verified != Some(signer) {
            let ok = match &m {
                Message::Proposal(p) => p.signed.verify(chain, &self.ctx),
                Message::Vote(v) => v.verify(chain, &self.ctx),
                // Precommits for its block from more than 2/3 of the current set's stake,
                // each validly signed (so the one slot of its height cannot be taken by a
                // certificate the byzantine validators made alone).
                Message::Commit(c) => certified_by_quorum(c, set, chain, &self.ctx),
            };
            if !ok {
                return;
            }
        }
        let b = &mut self.buffered;
        b.keys.insert(key);
        *b.per_signer.entry(signer).or_insert(0) += 1;
        b.messages.push((signer, m));
    }

    /// A message for a height this validator has decided: tell the host if its sender
    /// has evidently not decided it (it is in an older height, or in a later round than the
    /// decision).
    fn maybe_behind(&mut self, m: &Message, out: &mut Vec<Output>) {
        let Some(hs) = self.height.as_ref() else {
            return;
        };
        let (peer, height, round) = match m {
            Message::Proposal(p) => (
                p.signed.proposal.proposer,
                p.signed.proposal.height,
                p.signed.proposal.round,
            ),
            Message::Vote(v) => (v.vote.validator, v.vote.height, v.vote.round),
            Message::Commit(_) => return,
        };
        let behind = if height < hs.start.height {
            true
        } else {
            matches!(hs.decided, Some(r) if round > r)
        };
        if !behind || peer == self.key.id() {
            return;
        }
        // Name only an authenticated peer: the only set this validator keeps is the current
        // height's (that of the message's height when it is the current one), so the
        // signer must be in it and its signature must verify.
        let chain = &self.config.chain_id;
        let authentic = hs.start.validators.stake_of(&peer).is_some()
            && match m {
                Message::Proposal(p) => p.signed.verify(chain, &self.ctx),
                Message::Vote(v) => v.verify(chain, &self.ctx),
                Message::Commit(_) => false,
            };
        if authentic {
            out.push(Output::PeerBehind { peer, height });
        }
    }

    fn on_proposal(&mut self, p: ProposalMessage, out: &mut Vec<Output>) {
        let hs = self.height.as_mut().expect("height running");
        let prop = &p.signed.proposal;
        if prop.round > hs.round.saturating_add(self.config.max_rounds_ahead)
            || prop.pol_round.is_some_and(|vr| vr >= prop.round)
            || prop.proposer != hs.proposers.proposer(prop.round)
        {
            return;
        }
        if let Some(old) = hs.proposals.get(&prop.round) {
            if old.message.signed != p.signed && p.signed.verify(&self.config.chain_id, &self.ctx) {
                out.push(Output::Evidence(Evidence::double_proposal(
                    old.message.signed,
                    p.signed,
                )));
            }
            return;
        }
        if p.block.id() != prop.block_id || !p.signed.verify(&self.config.chain_id, &self.ctx) {
            return;
        }
        // The proof of lock: prevotes for this block in pol_round, each checked as a vote.
        if let Some(vr) = prop.pol_round {
            for v in &p.pol {
                if v.vote.kind == VoteKind::Prevote
                    && v.vote.height == prop.height
                    && v.vote.round == vr
                    && v.vote.value == Some(prop.block_id)
                {
                    self.count_vote(*v, true, out);
                }
            }
        }
        self.accept_proposal(p);
    }

    /// Stores the (checked) proposal of its round and computes `valid(v)` once.
    fn accept_proposal(&mut self, p: ProposalMessage) {
        let hs = self.height.as_mut().expect("height running");
        let id = p.signed.proposal.block_id;
        let valid = block_valid(&hs.start, &p.block, &self.ctx);
        let round = p.signed.proposal.round;
        let proposer = p.signed.proposal.proposer;
        if let Some(stake) = hs.start.validators.stake_of(&proposer) {
            hs.votes.note_sender(round, proposer, stake);
        }
        hs.proposals.insert(
            round,
            Accepted {
                message: p,
                id,
                valid,
            },
        );
    }

    fn on_vote(&mut self, v: SignedVote, out: &mut Vec<Output>) {
        self.count_vote(v, false, out);
    }

    /// Counts a vote; `claimed`: it came in a proposal's proof of lock (see `votes`).
    fn count_vote(&mut self, v: SignedVote, claimed: bool, out: &mut Vec<Output>) {
        let hs = self.height.as_mut().expect("height running");
        let Some(stake) = hs.start.validators.stake_of(&v.vote.validator) else {
            return;
        };
        // Its own votes are accepted too: after a restart they come back inside proofs of
        // lock and certificates, and the keeper drops exact duplicates.
        if v.vote.round > hs.round.saturating_add(self.config.max_rounds_ahead)
            || !v.verify(&self.config.chain_id, &self.ctx)
        {
            return;
        }
        let added = if claimed {
            hs.votes.add_claimed(v, stake)
        } else {
            hs.votes.add(v, stake)
        };
        if let Added::Equivocation(e) = added {
            out.push(Output::Evidence(*e));
        }
    }

    /// A commit certificate for the current height: L49 with the value and the 2f+1
    /// precommits delivered together.
    fn on_commit(&mut self, c: CommitCertificate, out: &mut Vec<Output>) {
        let hs = self.height.as_mut().expect("height running");
        if hs.decided.is_some() || !block_valid(&hs.start, &c.block, &self.ctx) {
            return;
        }
        let id = c.block.id();
        let mut seen = std::collections::BTreeSet::new();
        let mut power: u64 = 0;
        for v in &c.precommits {
            let x = &v.vote;
            if x.kind != VoteKind::Precommit
                || x.height != hs.start.height
                || x.round != c.round
                || x.value != Some(id)
                || !seen.insert(x.validator)
            {
                return;
            }
            let Some(stake) = hs.start.validators.stake_of(&x.validator) else {
                return;
            };
            if !v.verify(&self.config.chain_id, &self.ctx) {
                return;
            }
            power = power.checked_add(stake).expect("power <= total stake");
        }
        if !hs.start.validators.is_quorum(power) {
            return;
        }
        // Alg.1 L49-51: decision_p[h_p] = v.
        hs.decided = Some(c.round);
        out.push(Output::Decide(c));
    }

    fn on_timeout(
        &mut self,
        t: Timeout,
        now_ns: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        let Some(hs) = self.height.as_mut() else {
            return Ok(());
        };
        if t.height != hs.start.height || hs.decided.is_some() {
            return Ok(());
        }
        if t.kind == TimeoutKind::Rebroadcast {
            hs.rebroadcasts = hs.rebroadcasts.saturating_add(1);
            let s = &self.safety;
            if s.height == t.height {
                if let Some(p) = s
                    .proposal
                    .as_ref()
                    .filter(|_| resends_proposal(hs.rebroadcasts))
                {
                    out.push(Output::Broadcast(Message::Proposal(p.clone())));
                }
                for v in [s.prevote, s.precommit].into_iter().flatten() {
                    out.push(Output::Broadcast(Message::Vote(v)));
                }
            }
            out.push(Output::ScheduleTimeout {
                timeout: t,
                at_ns: now_ns.saturating_add(self.config.timeouts.rebroadcast_ns),
            });
            return Ok(());
        }
        if t.round != hs.round {
            return Ok(());
        }
        match t.kind {
            // Alg.1 L57-60: OnTimeoutPropose: prevote nil if still in propose.
            TimeoutKind::Propose if hs.step == Step::Propose => {
                hs.step = Step::Prevote;
                self.vote(VoteKind::Prevote, None, out)?;
            }
            // Alg.1 L61-64: OnTimeoutPrevote: precommit nil if still in prevote.
            TimeoutKind::Prevote if hs.step == Step::Prevote => {
                hs.step = Step::Precommit;
                self.vote(VoteKind::Precommit, None, out)?;
            }
            // Alg.1 L65-67: OnTimeoutPrecommit: StartRound(round_p + 1).
            TimeoutKind::Precommit => {
                let next = hs.round.saturating_add(1);
                self.start_round(next, now_ns, out)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Fires the rules of Alg.1 whose conditions hold, until none does. Each rule changes
    /// the step, the round or a once-per-round flag, so this ends.
    fn progress(&mut self, now_ns: u64, out: &mut Vec<Output>) -> Result<(), StoreError> {
        while self.fire_one(now_ns, out)? {}
        Ok(())
    }

    fn fire_one(&mut self, now_ns: u64, out: &mut Vec<Output>) -> Result<bool, StoreError> {
        let Some(hs) = self.height.as_mut() else {
            return Ok(false);
        };
        if hs.decided.is_some() {
            return Ok(false);
        }
        let set = &hs.start.validators;
        let round = hs.round;

        // Alg.1 L49-54: ⟨PROPOSAL, h_p, r, v, ∗⟩ from proposer(h_p, r) AND 2f+1
        // ⟨PRECOMMIT, h_p, r, id(v)⟩ while decision_p[h_p] = nil: if valid(v), decide.
        let decided = hs.votes.precommit_rounds().find_map(|r| {
            let p = hs.proposals.get(&r)?;
            (p.valid && set.is_quorum(hs.votes.power_for(r, VoteKind::Precommit, Some(p.id))))
                .then_some(r)
        });
        if let Some(r) = decided {
            let p = &hs.proposals[&r];
            let certificate = CommitCertificate {
                round: r,
                block: p.message.block.clone(),
                precommits: hs.votes.votes_for(r, VoteKind::Precommit, Some(p.id)),
            };
            hs.decided = Some(r);
            out.push(Output::Decide(certificate));
            return Ok(true);
        }

        // Alg.1 L55-56: f+1 ⟨∗, h_p, round, ∗, ∗⟩ with round > round_p: StartRound(round).
        if let Some(r) = hs
            .votes
            .highest_round_above(round, |power| set.exceeds_one_third(power))
        {
            self.start_round(r, now_ns, out)?;
            return Ok(true);
        }

        let proposal = hs
            .proposals
            .get(&round)
            .map(|p| (p.id, p.valid, p.message.signed.proposal.pol_round));
        // Only for prevoting (L22-33): the block's timestamp is not too far ahead of this
        // validator's clock. Not part of valid(v), which must not depend on the clock, so a
        // validator with a slow clock still decides (L49) and follows certificates.
        let timely = hs.proposals.get(&round).is_some_and(|p| {
            p.message.block.timestamp_ns <= now_ns.saturating_add(self.config.max_future_drift_ns)
        });

        if hs.step == Step::Propose {
            match proposal {
                // Alg.1 L22-27: ⟨PROPOSAL, h_p, round_p, v, −1⟩ while step = propose:
                // prevote id(v) if valid(v) ∧ (lockedRound = −1 ∨ lockedValue = v), else nil.
                Some((id, valid, None)) => {
                    let ok = valid
                        && timely
                        && match &hs.locked {
                            None => true,
                            Some((_, lv)) => lv.id() == id,
                        };
                    hs.step = Step::Prevote;
                    self.vote(VoteKind::Prevote, ok.then_some(id), out)?;
                    return Ok(true);
                }
                // Alg.1 L28-33: ⟨PROPOSAL, h_p, round_p, v, vr⟩ AND 2f+1 ⟨PREVOTE, h_p, vr,
                // id(v)⟩ while step = propose ∧ 0 ≤ vr < round_p: prevote id(v) if valid(v) ∧
                // (lockedRound ≤ vr ∨ lockedValue = v), else nil.
                Some((id, valid, Some(vr)))
                    if vr < round
                        && set.is_quorum(hs.votes.power_for(vr, VoteKind::Prevote, Some(id))) =>
                {
                    let ok = valid
                        && timely
                        && match &hs.locked {
                            None => true,
                            Some((lr, lv)) => *lr <= vr || lv.id() == id,
                        };
                    hs.step = Step::Prevote;
                    self.vote(VoteKind::Prevote, ok.then_some(id), out)?;
                    return Ok(true);
                }
                _ => {}
            }
        }

        // Alg.1 L34-35: 2f+1 ⟨PREVOTE, h_p, round_p, ∗⟩ while step = prevote for the first
        // time: schedule OnTimeoutPrevote.
        if hs.step == Step::Prevote
            && !hs.prevote_timeout_scheduled
            && set.is_quorum(hs.votes.power_any(round, VoteKind::Prevote))
        {
            hs.prevote_timeout_scheduled = true;
            out.push(Output::ScheduleTimeout {
                timeout: Timeout {
                    kind: TimeoutKind::Prevote,
                    height: hs.start.height,
                    round,
                },
                at_ns: now_ns.saturating_add(
                    self.config
                        .timeouts
                        .duration_ns(TimeoutKind::Prevote, round),
                ),
            });
            return Ok(true);
        }

        // Alg.1 L36-43: ⟨PROPOSAL, h_p, round_p, v, ∗⟩ AND 2f+1 ⟨PREVOTE, h_p, round_p,
        // id(v)⟩ while valid(v) ∧ step ≥ prevote for the first time: if step = prevote, lock
        // v and precommit id(v); in any case validValue = v, validRound = round_p.
        if let Some((id, true, _)) = proposal {
            if hs.step >= Step::Prevote
                && !hs.locked_or_valid_updated
                && set.is_quorum(hs.votes.power_for(round, VoteKind::Prevote, Some(id)))
            {
                hs.locked_or_valid_updated = true;
                let block = hs.proposals[&round].message.block.clone();
                hs.valid = Some((round, block.clone()));
                if hs.step == Step::Prevote {
                    hs.locked = Some((round, block));
                    hs.step = Step::Precommit;
                    self.vote(VoteKind::Precommit, Some(id), out)?;
                } else if self.safety.height == hs.start.height {
                    self.safety.valid = hs.valid.clone();
                    self.safety.valid_pol = valid_pol(hs);
                    self.unsaved = true;
                }
                return Ok(true);
            }
        }

        // Alg.1 L44-46: 2f+1 ⟨PREVOTE, h_p, round_p, nil⟩ while step = prevote: precommit nil.
        if hs.step == Step::Prevote
            && set.is_quorum(hs.votes.power_for(round, VoteKind::Prevote, None))
        {
            hs.step = Step::Precommit;
            self.vote(VoteKind::Precommit, None, out)?;
            return Ok(true);
        }

        // Alg.1 L47-48: 2f+1 ⟨PRECOMMIT, h_p, round_p, ∗⟩ for the first time: schedule
        // OnTimeoutPrecommit.
        if !hs.precommit_timeout_scheduled
            && set.is_quorum(hs.votes.power_any(round, VoteKind::Precommit))
        {
            hs.precommit_timeout_scheduled = true;
            out.push(Output::ScheduleTimeout {
                timeout: Timeout {
                    kind: TimeoutKind::Precommit,
                    height: hs.start.height,
                    round,
                },
                at_ns: now_ns.saturating_add(
                    self.config
                        .timeouts
                        .duration_ns(TimeoutKind::Precommit, round),
                ),
            });
            return Ok(true);
        }
        Ok(false)
    }
}

/// Whether `vote` is a precommit for `c`'s block (id `id`), at its height and in its round.
fn precommits_block(c: &CommitCertificate, id: Hash, vote: &Vote) -> bool {
    vote.kind == VoteKind::Precommit
        && vote.height == c.block.height
        && vote.round == c.round
        && vote.value == Some(id)
}

/// Whether `c` carries precommits for its block, in its round, from distinct validators of
/// `set` holding more than 2/3 of its stake, each validly signed (and nothing else: a
/// precommit of another key, for another block or badly signed makes it `false`).
pub fn certified_by_quorum(
    c: &CommitCertificate,
    set: &ValidatorSet,
    chain_id: &[u8; 32],
    verifier: &dyn crate::types::SignatureVerifier,
) -> bool {
    let id = c.block.id();
    let mut seen = BTreeSet::new();
    let mut power: u64 = 0;
    for v in &c.precommits {
        let x = &v.vote;
        let Some(stake) = set.stake_of(&x.validator) else {
            return false;
        };
        if !precommits_block(c, id, x) || !seen.insert(x.validator) || !v.verify(chain_id, verifier)
        {
            return false;
        }
        power = power.saturating_add(stake);
    }
    set.is_quorum(power)
}

/// The stake of `set` behind `c`: the sum of the stakes of distinct validators of `set`
/// whose precommit in `c` is for its block, in its round, and validly signed. Precommits
/// of keys outside `set` count nothing (a set other than the one that decided the block,
/// such as the genesis set for a state-syncing validator, is measured this way).
pub fn signed_stake(
    c: &CommitCertificate,
    set: &ValidatorSet,
    chain_id: &[u8; 32],
    verifier: &dyn crate::types::SignatureVerifier,
) -> u64 {
    let id = c.block.id();
    let mut seen = BTreeSet::new();
    let mut power: u64 = 0;
    for v in &c.precommits {
        let x = &v.vote;
        let Some(stake) = set.stake_of(&x.validator) else {
            continue;
        };
        let counts = precommits_block(c, id, x)
            && !seen.contains(&x.validator)
            && v.verify(chain_id, verifier);
        if counts {
            seen.insert(x.validator);
            power = power.saturating_add(stake);
        }
    }
    power
}

/// The prevotes that justify `validValue` (empty if there is none).
fn valid_pol(hs: &HeightState) -> Vec<SignedVote> {
    match &hs.valid {
        Some((vr, v)) => hs.votes.votes_for(*vr, VoteKind::Prevote, Some(v.id())),
        None => Vec::new(),
    }
}

/// Tendermint's `valid(v)` for this chain: the block extends the previous one (height,
/// parent id, execution root, later timestamp that leaves room for a later one), was built by a validator of this height,
/// carries at most [`crate::block::MAX_EVIDENCE`] pieces of evidence,
/// and its signed actions and payload pass the host's checks. Deterministic, as L23 requires.
pub fn block_valid(
    start: &HeightStart,
    block: &Block,
    ctx: &dyn crate::types::PayloadValidator,
) -> bool {
    block.height == start.height
        && block.prev_hash == start.prev_block
        && block.prev_exec_root == start.prev_exec_root
        && block.timestamp_ns > start.prev_timestamp_ns
        && block.timestamp_ns < u64::MAX
        && start.validators.stake_of(&block.proposer).is_some()
        && block.evidence.len() <= crate::block::MAX_EVIDENCE
        && ctx.actions_valid(block.height, &block.actions)
        && ctx.payload_valid(block.height, &block.payload)
}

#[cfg(test)]
mod tests;
