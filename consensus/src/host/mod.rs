//! The validator host: everything around [`Consensus`] that a validator does between the
//! network, its clock, its disk and its application, as one sans-IO state machine.
//!
//! The same [`Host`] runs in `nexus validator` (tokio, QUIC, the block file, the wall
//! clock) and in [`crate::sim`] (virtual time, a lossy in-memory network, in-memory files),
//! so the seeded simulator exercises the host code that ships.
//!
//! Inputs (each takes the current time, ns):
//! - [`Host::on_frame`]: a frame from a peer (first byte: [`FRAME_MESSAGE`] a consensus
//!   message, [`FRAME_SYNC`] a sync request `from_height u64 LE`, [`FRAME_APP`] bytes for the
//!   application, e.g. forwarded transactions);
//! - [`Host::on_timers`]: the clock reached [`Host::next_deadline`];
//! - [`Host::block_durable`]: the shell made the last [`Action::PersistBlock`] durable;
//! - [`Host::recover`] (before [`Host::start`]): a block read back from the block file.
//!
//! Outputs are [`Action`]s, taken with [`Host::poll_action`] and performed **in order**:
//! - A decided height goes: [`Action::PersistBlock`] -> the shell stores it durably and
//!   calls [`Host::block_durable`] -> the host checks its parent root, the
//!   [`Application`] executes it, the chain state applies it -> the next height starts with
//!   a proposal asked from the application. Nothing of height `h + 1` is signed before
//!   block `h` is durable and executed.
//! - The core's safety saves are actions too: where [`Consensus::step`] saves its safety
//!   state (once per step that signed something), the host queues
//!   [`Action::PersistSafety`] **before** every other action of that step, so the shell
//!   makes it durable before any message it signed leaves. A save queued and not yet taken
//!   is updated in place by the next step's save (the newer state covers the older one and
//!   is written no later than the older one would have been): a shell that handles several
//!   inputs before performing writes once. A failed save must stop the shell before it
//!   performs anything after it.
//! - `PeerBehind` is answered with the certificate of that height, only to a validator of
//!   the current set, rate-limited per peer ([`limits::cert_allowed`]); a message two or
//!   more heights ahead triggers a sync request to its sender (at most every 100 ms per
//!   peer), answered with up to [`limits::SYNC_BATCH`] certificates. Certificates past the
//!   few heights the core buffers are held by the host (at most [`limits::SYNC_BATCH`]
//!   heights) and handed to the core as their heights come, so one answer moves a lagging
//!   validator many heights (the core checks each certificate then).
//! - Evidence is reported ([`Action::Evidence`]) and put into this validator's next
//!   proposals (at most two per block) until a block includes it.
//!
//! Empty blocks are paced (Tendermint's `create_empty_blocks_interval`): with
//! [`Host::set_empty_block_interval`] non-zero, a height after the first whose start finds
//! the application idle ([`Application::has_pending`] false) and the clock before the last
//! block's timestamp plus the interval waits ([`Host::waiting`]). It starts at the earliest
//! of: the deadline ([`Host::next_deadline`] includes it, [`Host::on_timers`] starts it
//! before firing timers); the application getting work ([`Host::on_app_work`], which
//! [`Host::on_frame`] calls after every application frame); a consensus message from a
//! peer for that height or a later one, received while waiting or earlier (that peer has
//! started it, or this validator is behind and must not wait). A waiting validator keeps
//! answering peers that are behind (its core stays at the decided height). The default
//! interval, 0, starts every height at once.

pub mod compact;
pub mod limits;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::chain::ChainState;
use crate::governance::SignedAction;
use crate::messages::{CommitCertificate, Evidence, Message, ProposalMessage};
use crate::protocol::{BlockBody, Config, Consensus, HeightStart, Input, Output, Step, Timeout};
use crate::safety::{SafetyState, SafetyStore, StoreError};
use crate::types::{
    Hash, Height, Keypair, PayloadValidator, Round, SignatureBytes, SignatureVerifier, ValidatorId,
};
pub use compact::{CompactStats, COMPACT_WAIT_NS};
use limits::{
    cert_allowed, sync_range, ONE_BEHIND_GRACE_NS, SYNC_ASK_EVERY_NS, SYNC_BATCH,
    SYNC_SERVE_EVERY_NS,
};

/// Frame tag: a consensus [`Message`].
pub const FRAME_MESSAGE: u8 = 1;
/// Frame tag: a sync request, `from_height u64 LE`.
pub const FRAME_SYNC: u8 = 2;
/// Frame tag: bytes for the application ([`Application::on_app_frame`]).
pub const FRAME_APP: u8 = 3;
/// Frame tag: a `Message::Proposal` whose block payload is the application's compact form
/// ([`Application::compact_payload`]; see [`compact`]).
pub const FRAME_COMPACT_PROPOSAL: u8 = 4;
/// Frame tag: an ask for the sender's full proposal, `height u64 LE || round u32 LE`.
pub const FRAME_PROPOSAL_ASK: u8 = 5;
/// Most evidence items a host keeps waiting for a block.
const EVIDENCE_POOL: usize = 64;
/// Most evidence items a host puts in one proposal.
const EVIDENCE_PER_BLOCK: usize = crate::block::MAX_EVIDENCE;

/// A frame as it goes on the wire (shared between the peers it is sent to).
pub type Frame = Arc<[u8]>;

/// What the application wants in its proposal for a height.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppProposal {
    /// Signed chain actions (governance, staking).
    pub actions: Vec<SignedAction>,
    /// The application's payload (e.g. a list of transactions).
    pub payload: Vec<u8>,
}

/// What is node-specific: proposals, the payload check, execution, application frames.
pub trait Application {
    /// Why execution stopped (the host stops with it).
    type Error;

    /// The proposal for `height`: asked at the start of every height (whoever proposes), and
    /// again whenever this validator proposes a new block in a later round of it (so that
    /// block holds what is pending then).
    fn propose(&mut self, height: Height, chain: &ChainState, now_ns: u64) -> AppProposal;

    /// `valid(v)` for the payload: the same answer on every honest validator.
    fn payload_valid(&self, height: Height, payload: &[u8]) -> bool;

    /// Executes a decided block (durable already) and returns the execution root after
    /// it. `chain` is the consensus-layer state after the block (validator set, staking,
    /// governance, co-processor registry), applied just before: the execution commits to it
    /// and follows its registry. `recovering`: the block is read back from the block file
    /// at start-up.
    fn execute(
        &mut self,
        certificate: &CommitCertificate,
        chain: &ChainState,
        recovering: bool,
        now_ns: u64,
    ) -> Result<Hash, Self::Error>;

    /// An application frame ([`FRAME_APP`], tag removed) from peer `from`; `chain` is the
    /// state after the last applied block (what forwarded chain actions are checked
    /// against).
    fn on_app_frame(&mut self, from: ValidatorId, body: &[u8], chain: &ChainState, now_ns: u64);

    /// Whether the application has something for a block now (pooled transactions, queued
    /// cross-domain work). With an empty-block interval set
    /// ([`Host::set_empty_block_interval`]) an idle application's next height waits; the
    /// default, `true`, never waits.
    fn has_pending(&self) -> bool {
        true
    }

    /// The compact form of `payload`, this validator's own proposal, for its peers to
    /// rebuild with [`Application::expand_payload`]; `None` (the default) sends it whole.
    fn compact_payload(&self, _payload: &[u8]) -> Option<Vec<u8>> {
        None
    }

    /// The payload a peer's compact form stands for, rebuilt from what this validator
    /// holds; `None` if something is missing (or the bytes are not a compact form).
    fn expand_payload(&self, _compact: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// The core's context: signatures by `V`, payloads by the application.
pub struct HostContext<V, A> {
    verifier: V,
    app: A,
    /// The chain state after the last applied block: what a proposal's signed chain actions
    /// are checked against (and what the host applies blocks to).
    chain: ChainState,
}

impl<V: SignatureVerifier, A> SignatureVerifier for HostContext<V, A> {
    fn verify(&self, key: &ValidatorId, message: &[u8], signature: &SignatureBytes) -> bool {
        self.verifier.verify(key, message, signature)
    }
}

impl<V: SignatureVerifier, A: Application> PayloadValidator for HostContext<V, A> {
    fn payload_valid(&self, height: Height, payload: &[u8]) -> bool {
        self.app.payload_valid(height, payload)
    }

    fn actions_valid(&self, height: Height, actions: &[SignedAction]) -> bool {
        height == self.chain.height() + 1 && self.chain.actions_valid(actions, &self.verifier)
    }
}

/// The core's [`SafetyStore`] inside the host: it hands the state loaded at start to the
/// core and keeps what the core saves for the host to turn into [`Action::PersistSafety`].
#[derive(Debug, Default)]
pub struct DeferredStore {
    loaded: Option<SafetyState>,
    pending: Option<SafetyState>,
}

impl SafetyStore for DeferredStore {
    fn load(&mut self) -> Result<Option<SafetyState>, StoreError> {
        Ok(self.loaded.take())
    }

    fn save(&mut self, state: &SafetyState) -> Result<(), StoreError> {
        self.pending = Some(state.clone());
        Ok(())
    }
}

/// What the shell must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `frame` to one peer.
    Send {
        /// The peer.
        to: ValidatorId,
        /// The frame.
        frame: Frame,
        /// Why (for metrics; the simulator delays `PeerBehind` answers).
        reason: SendReason,
    },
    /// Send `frame` to every other validator.
    Broadcast(Frame),
    /// Store this safety state durably (replacing the previous one) before performing any
    /// later action; stop if that fails.
    PersistSafety(Box<SafetyState>),
    /// Store this decided block durably, then call [`Host::block_durable`].
    PersistBlock(Arc<CommitCertificate>),
    /// A validator double-signed (already pooled for this host's proposals): report it.
    Evidence(Box<Evidence>),
}

/// Why the host sends a frame to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendReason {
    /// The certificate of a height the peer is behind at (`PeerBehind`).
    PeerBehind,
    /// A sync request to a peer that is ahead.
    SyncRequest,
    /// A certificate in answer to the peer's sync request.
    SyncAnswer,
    /// An ask for the peer's full proposal (its compact one could not be rebuilt).
    ProposalAsk,
    /// An own full proposal in answer to the peer's ask.
    ProposalAnswer,
}

/// Why the host stopped.
#[derive(Debug, thiserror::Error)]
pub enum HostError<E> {
    /// The safety store failed: the validator must not sign.
    #[error(transparent)]
    Safety(#[from] StoreError),
    /// A decided block names a previous execution root other than this validator's: its
    /// state differs from the quorum's, so it stops rather than continue on it.
    #[error("execution root mismatch at height {height}: ours {ours:?}, block says {block:?}")]
    ExecRootMismatch {
        /// Height of the decided block.
        height: Height,
        /// Our root after `height - 1`.
        ours: Hash,
        /// The block's `prev_exec_root`.
        block: Hash,
    },
    /// The application failed to execute a block.
    #[error("application: {0}")]
    App(E),
}

/// Counters of the host's sync traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Sync requests sent.
    pub sync_requests: u64,
    /// Certificates sent in answer to sync requests.
    pub sync_certificates: u64,
    /// Certificates sent in answer to `PeerBehind`.
    pub behind_certificates: u64,
}

/// One validator's host: the consensus core plus chain state, timers, sync and the
/// decided-block sequence.
pub struct Host<V: SignatureVerifier, A: Application> {
    consensus: Consensus<HostContext<V, A>, DeferredStore>,
    exec_root: Hash,
    /// Id and timestamp of the last applied block.
    last_block: Option<(Hash, u64)>,
    /// The certificate of every applied height after `cert_base` (index = height - 1 -
    /// cert_base), encoded only when a peer syncs from it: all of them, or with an archive
    /// the newest `memory_window` ([`Host::set_certificate_archive`]).
    certificates: VecDeque<CommitCertificate>,
    /// Heights up to this one have no certificate in memory (started from a snapshot,
    /// pruned, or only in the archive).
    cert_base: Height,
    /// Older certificates, read back from the shell's block file.
    archive: Option<Box<dyn CertificateArchive>>,
    /// Most certificates kept in memory when there is an archive.
    memory_window: usize,
    timers: BTreeMap<(u64, u64), Timeout>,
    timer_seq: u64,
    cert_sent: BTreeMap<(ValidatorId, Height), u64>,
    sync_asked: BTreeMap<ValidatorId, u64>,
    /// `(our chain height, when)` a peer's message first showed that it decided our current
    /// height (a message of the height after it).
    peers_decided_ours: Option<(Height, u64)>,
    sync_served: BTreeMap<ValidatorId, (Height, u64)>,
    evidence: Vec<Evidence>,
    included: BTreeSet<Evidence>,
    /// Certificates for heights past the core's buffer, by height (the first one received).
    ahead: BTreeMap<Height, Message>,
    /// Heights past the current one the core buffers itself.
    window: Height,
    /// Decided, handed out as `PersistBlock`, not yet durable.
    pending: Option<Arc<CommitCertificate>>,
    actions: VecDeque<Action>,
    stats: HostStats,
    /// Least time from the last block's timestamp to an empty block's height start (0: none).
    empty_block_interval_ns: u64,
    /// The next height waits to start until this time (or work, or a peer's message).
    deferred: Option<u64>,
    /// Highest height of a peer's consensus message, at most the heights the host keeps.
    seen_height: Height,
    /// Signing is held until a block stamped at or after this time (ns) is applied.
    signing_held_until: Option<u64>,
    /// Own full proposals and peers' compact ones not yet rebuilt.
    compact: compact::CompactProposals,
}

/// Decided blocks the host no longer keeps in memory, read back from the shell's block
/// file (the node's `consensus_net::store::BlockStore`), so that a long-running validator's
/// memory does not grow with its chain: each certificate as the file stores it, the
/// encoding of its `Message::Commit`. Read on the host's thread, only to answer peers
/// that are behind (rate-limited).
pub trait CertificateArchive: Send {
    /// The lowest height it holds, if any.
    fn first_height(&self) -> Option<Height>;
    /// The encoded certificates of heights `from`, `from + 1`, ... in order: at most
    /// `max`, none past the last durable one; fewer (or none) if it cannot read them.
    fn read(&self, from: Height, max: usize) -> Vec<Vec<u8>>;
}

/// The frame carrying `m`.
pub fn message_frame(m: &Message) -> Frame {
    tagged_message(FRAME_MESSAGE, m)
}

/// The frame `tag || m's encoding`, encoded in place (one allocation, then the frame's).
fn tagged_message(tag: u8, m: &Message) -> Frame {
    let mut frame = Vec::with_capacity(1 + m.encoded_len_hint());
    frame.push(tag);
    m.encode_into(&mut frame);
    Arc::from(frame)
}

/// The frame carrying application bytes (e.g. forwarded transactions).
pub fn app_frame(body: &[u8]) -> Frame {
    tagged(FRAME_APP, body)
}

/// The frame of a sync request from `from_height`.
pub fn sync_frame(from_height: Height) -> Frame {
    tagged(FRAME_SYNC, &from_height.to_le_bytes())
}

fn tagged(tag: u8, body: &[u8]) -> Frame {
    let mut frame = Vec::with_capacity(body.len() + 1);
    frame.push(tag);
    frame.extend_from_slice(body);
    Arc::from(frame)
}

impl<V: SignatureVerifier, A: Application> Host<V, A> {
    /// A host for validator `key` at genesis `chain` (execution root `exec_root`), with the
    /// safety state its shell loaded (`None` for a new validator).
    pub fn new(
        config: Config,
        verifier: V,
        app: A,
        safety: Option<SafetyState>,
        key: Keypair,
        chain: ChainState,
        exec_root: Hash,
    ) -> Self {
        let window = config.future_heights;
        let ctx = HostContext {
            verifier,
            app,
            chain,
        };
        let store = DeferredStore {
            loaded: safety,
            pending: None,
        };
        let consensus =
            Consensus::new(config, ctx, store, key).expect("a deferred load cannot fail");
        Host {
            consensus,
            exec_root,
            last_block: None,
            certificates: VecDeque::new(),
            cert_base: 0,
            archive: None,
            memory_window: usize::MAX,
            timers: BTreeMap::new(),
            timer_seq: 0,
            cert_sent: BTreeMap::new(),
            sync_asked: BTreeMap::new(),
            peers_decided_ours: None,
            sync_served: BTreeMap::new(),
            evidence: Vec::new(),
            included: BTreeSet::new(),
            ahead: BTreeMap::new(),
            window,
            pending: None,
            actions: VecDeque::new(),
            stats: HostStats::default(),
            empty_block_interval_ns: 0,
            deferred: None,
            seen_height: 0,
            signing_held_until: None,
            compact: compact::CompactProposals::default(),
        }
    }

    /// The safety state was lost (its file deleted while blocks exist): this validator may
    /// have signed at the height in progress when it stopped, and cannot tell which. It
    /// signs nothing until it has applied a block stamped at or after `restart_ns +
    /// max_future_drift_ns + skew_ns`. Honest validators prevote nil for a block stamped more
    /// than `max_future_drift_ns` past their clock, so a decided block with that stamp was
    /// proposed after the restart (if clocks differ by at most `skew_ns`): its height was in
    /// progress after every signature this validator made before, and signing resumes at
    /// the next height. Call before [`Host::recover`] (blocks read back count too).
    pub fn hold_signing(&mut self, restart_ns: u64, skew_ns: u64) {
        let drift = self.consensus.config().max_future_drift_ns;
        let after = restart_ns.saturating_add(drift).saturating_add(skew_ns);
        self.signing_held_until = Some(after);
        self.consensus.set_signing(false);
    }

    /// Whether signing is held ([`Host::hold_signing`]).
    pub fn signing_held(&self) -> bool {
        self.signing_held_until.is_some()
    }

    /// Re-applies a block read back from the block file (before [`Host::start`]).
    pub fn recover(
        &mut self,
        certificate: CommitCertificate,
        now_ns: u64,
    ) -> Result<(), HostError<A::Error>> {
        self.check_root(&certificate)?;
        self.apply(&certificate, true, now_ns)
    }

    /// Starts after a snapshot instead of genesis (before [`Host::start`], with nothing
    /// applied yet): `chain` is the chain state after the snapshot's block, `exec_root` the
    /// execution root after it, `last_block` its id and timestamp (the first block
    /// recovered or decided after it is checked against that root). Heights up to the
    /// snapshot's have no certificate in memory: sync requests for them are answered from
    /// the archive if it holds them ([`Host::set_certificate_archive`], a restart from the
    /// validator's own block file), else from the first height held on.
    pub fn start_from_snapshot(
        &mut self,
        chain: ChainState,
        exec_root: Hash,
        last_block: (Hash, u64),
    ) {
        assert!(
            self.certificates.is_empty(),
            "a snapshot is installed before any block"
        );
        self.cert_base = chain.height();
        self.consensus.context_mut().chain = chain;
        self.exec_root = exec_root;
        self.last_block = Some(last_block);
    }

    /// Keeps only the newest `memory_window` certificates in memory (at least one) and
    /// serves older heights from `archive`, the shell's block file (without one, every
    /// certificate since genesis or the snapshot stays in memory). Call before
    /// [`Host::recover`]: blocks read back count too.
    pub fn set_certificate_archive(
        &mut self,
        archive: Box<dyn CertificateArchive>,
        memory_window: usize,
    ) {
        self.archive = Some(archive);
        self.memory_window = memory_window.max(1);
        self.trim_certificates();
    }

    /// Certificates held in memory (the rest of what [`Host::first_certificate_height`]
    /// names is in the archive).
    pub fn certificates_in_memory(&self) -> usize {
        self.certificates.len()
    }

    /// Drops the oldest certificates in memory past the window (only with an archive,
    /// which holds them: a certificate is applied after its block is durable).
    fn trim_certificates(&mut self) {
        if self.archive.is_none() {
            return;
        }
        while self.certificates.len() > self.memory_window {
            self.certificates.pop_front();
            self.cert_base += 1;
        }
    }

    /// Forgets the certificates up to `height` (the shell pruned those blocks): sync
    /// requests are answered from the next one on.
    pub fn prune_certificates(&mut self, height: Height) {
        let drop = height
            .saturating_sub(self.cert_base)
            .min(self.certificates.len() as u64);
        self.certificates.drain(..drop as usize);
        self.cert_base += drop;
    }

    /// The lowest height this host can serve a certificate of, in memory or in its
    /// archive, if any.
    pub fn first_certificate_height(&self) -> Option<Height> {
        let in_memory = (!self.certificates.is_empty()).then_some(self.cert_base + 1);
        let archived = self
            .archive
            .as_ref()
            .and_then(|a| a.first_height())
            .filter(|&first| first <= self.cert_base);
        archived.or(in_memory)
    }

    /// The certificate of `height`, if held.
    fn certificate(&self, height: Height) -> Option<&CommitCertificate> {
        let index = height.checked_sub(self.cert_base + 1)?;
        self.certificates.get(usize::try_from(index).ok()?)
    }

    /// The certificates of `heights` as frames, in order, from memory or the archive;
    /// stops at the first height held in neither.
    fn certificate_frames(&self, heights: std::ops::RangeInclusive<Height>) -> Vec<Frame> {
        let (start, end) = (*heights.start(), *heights.end());
        let mut frames = Vec::new();
        let first_in_memory = self.cert_base + 1;
        if start < first_in_memory {
            let through = end.min(self.cert_base);
            let count = (through + 1 - start) as usize;
            if let Some(archive) = &self.archive {
                let read = archive.read(start, count);
                frames.extend(read.iter().map(|bytes| tagged(FRAME_MESSAGE, bytes)));
            }
            if frames.len() < count {
                return frames;
            }
        }
        for height in start.max(first_in_memory)..=end {
            let Some(certificate) = self.certificate(height) else {
                break;
            };
            frames.push(message_frame(&Message::Commit(certificate.clone())));
        }
        frames
    }

    /// Sets the empty-block interval (0, the default: every height starts at once). An
    /// idle application's height then starts no earlier than the last block's timestamp
    /// plus `interval_ns`, unless work or a peer's message comes first (see the module
    /// doc). Set it before [`Host::start`]; it applies from the next height to start.
    pub fn set_empty_block_interval(&mut self, interval_ns: u64) {
        self.empty_block_interval_ns = interval_ns;
    }

    /// The empty-block interval, ns (0: none).
    pub fn empty_block_interval_ns(&self) -> u64 {
        self.empty_block_interval_ns
    }

    /// The height waiting to start and its deadline (ns since the Unix epoch), if one waits.
    pub fn waiting(&self) -> Option<(Height, u64)> {
        self.deferred.map(|at| (self.chain().height() + 1, at))
    }

    /// Starts the next height (once, after recovery), or lets it wait (see
    /// [`Host::set_empty_block_interval`]).
    pub fn start(&mut self, now_ns: u64) -> Result<(), HostError<A::Error>> {
        self.next_height(now_ns)
    }

    /// The application got new work (the shell handed it transactions): a waiting height
    /// starts now if [`Application::has_pending`] says so.
    pub fn on_app_work(&mut self, now_ns: u64) -> Result<(), HostError<A::Error>> {
        if self.deferred.is_some() && self.app().has_pending() {
            self.start_deferred(now_ns)?;
        }
        Ok(())
    }

    /// A frame from peer `from` (authenticated by the transport).
    pub fn on_frame(
        &mut self,
        from: ValidatorId,
        frame: &[u8],
        now_ns: u64,
    ) -> Result<(), HostError<A::Error>> {
        match frame.split_first() {
            Some((&FRAME_MESSAGE, body)) => self.on_message(from, body, now_ns),
            Some((&FRAME_SYNC, body)) => {
                self.serve_sync(from, body, now_ns);
                Ok(())
            }
            Some((&FRAME_APP, body)) => {
                let ctx = self.consensus.context_mut();
                ctx.app.on_app_frame(from, body, &ctx.chain, now_ns);
                self.retry_held(now_ns)?;
                self.on_app_work(now_ns)
            }
            Some((&FRAME_COMPACT_PROPOSAL, body)) => self.on_compact(from, body, now_ns),
            Some((&FRAME_PROPOSAL_ASK, body)) => {
                self.answer_ask(from, body);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Starts a waiting height whose deadline has come, then fires every timer due at
    /// `now_ns`.
    pub fn on_timers(&mut self, now_ns: u64) -> Result<(), HostError<A::Error>> {
        self.retry_held(now_ns)?;
        if self.deferred.is_some_and(|at| at <= now_ns) {
            self.start_deferred(now_ns)?;
        }
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now_ns {
                break;
            }
            let timeout = entry.remove();
            self.step(Input::Timeout(timeout), now_ns)?;
        }
        Ok(())
    }

    /// When [`Host::on_timers`] should next be called, if any timer is set or a height
    /// waits to start.
    pub fn next_deadline(&self) -> Option<u64> {
        let timer = self.timers.first_key_value().map(|((at, _), _)| *at);
        let ask = self.compact.next_deadline();
        timer.into_iter().chain(self.deferred).chain(ask).min()
    }

    /// The block of the last [`Action::PersistBlock`] (height `height`) is durable: execute
    /// it and start the next height (or let it wait, see
    /// [`Host::set_empty_block_interval`]).
    pub fn block_durable(
        &mut self,
        height: Height,
        now_ns: u64,
    ) -> Result<(), HostError<A::Error>> {
        let certificate = self.pending.take().expect("a block awaits persistence");
        assert_eq!(certificate.block.height, height, "durable block height");
        self.apply(&certificate, false, now_ns)?;
        self.next_height(now_ns)
    }

    /// The next action to perform, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The chain state after the last applied block.
    pub fn chain(&self) -> &ChainState {
        &self.consensus.context().chain
    }

    /// The execution root after the last applied block.
    pub fn exec_root(&self) -> Hash {
        self.exec_root
    }

    /// Id and timestamp of the last applied block.
    pub fn last_block(&self) -> Option<(Hash, u64)> {
        self.last_block
    }

    /// The consensus core's height, round and step.
    pub fn position(&self) -> Option<(Height, Round, Step)> {
        self.consensus.position()
    }

    /// Sync counters.
    pub fn stats(&self) -> HostStats {
        self.stats
    }

    /// Compact-proposal counters.
    pub fn compact_stats(&self) -> CompactStats {
        self.compact.stats
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.consensus.context().app
    }

    /// The application, to hand it what the shell receives for it (client transactions).
    pub fn app_mut(&mut self) -> &mut A {
        &mut self.consensus.context_mut().app
    }

    /// The application and the chain state after the last applied block, together (for
    /// client requests checked against the chain, such as signed chain actions).
    pub fn app_and_chain(&mut self) -> (&mut A, &ChainState) {
        let ctx = self.consensus.context_mut();
        (&mut ctx.app, &ctx.chain)
    }

    /// A consensus message from peer `from`: sync request if it is far ahead, the waiting
    /// height started if it is for that height or later, then held or handed to the core.
    fn on_message(
        &mut self,
        from: ValidatorId,
        body: &[u8],
        now_ns: u64,
    ) -> Result<(), HostError<A::Error>> {
        let Ok(m) = Message::decode(body) else {
            return Ok(()); // A malformed message from a peer is dropped.
        };
        self.maybe_ask_sync(from, m.height(), now_ns);
        self.peer_at(m.height(), now_ns)?;
        match self.hold_ahead(m) {
            Some(m) => self.step(Input::Message(m), now_ns),
            None => Ok(()),
        }
    }

    /// A peer sent a message of `height`: remember the highest (capped at the heights the
    /// host keeps anything of), and start a waiting height it reaches.
    fn peer_at(&mut self, height: Height, now_ns: u64) -> Result<(), HostError<A::Error>> {
        let next = self.chain().height() + 1;
        let cap = next.saturating_add(self.window).saturating_add(SYNC_BATCH);
        self.seen_height = self.seen_height.max(height.min(cap));
        if height >= next {
            self.start_deferred(now_ns)?;
        }
        Ok(())
    }

    fn step(&mut self, input: Input, now_ns: u64) -> Result<(), HostError<A::Error>> {
        let mut out = Vec::new();
        self.consensus.step(input, now_ns, &mut out)?;
        if let Some(state) = self.consensus.store_mut().pending.take() {
            self.persist_safety(state);
        }
        for o in out {
            self.output(o, now_ns)?;
        }
        Ok(())
    }

    /// The core proposes a new block in a later round: it gets what the application has
    /// pending now (the round-0 body may be empty or stale).
    fn answer_body_wanted(
        &mut self,
        height: Height,
        round: Round,
        now_ns: u64,
    ) -> Result<(), HostError<A::Error>> {
        let body = self.body(height, now_ns);
        self.step(
            Input::RoundBody {
                height,
                round,
                body,
            },
            now_ns,
        )
    }

    /// What this validator would propose at `height` now: the evidence it holds, and the
    /// application's actions and payload.
    fn body(&mut self, height: Height, now_ns: u64) -> BlockBody {
        let evidence = self.proposal_evidence();
        let ctx = self.consensus.context_mut();
        let proposal = ctx.app.propose(height, &ctx.chain, now_ns);
        BlockBody {
            evidence,
            actions: proposal.actions,
            payload: proposal.payload.into(),
        }
    }

    fn output(&mut self, o: Output, now_ns: u64) -> Result<(), HostError<A::Error>> {
        match o {
            Output::Broadcast(Message::Proposal(p)) => self.broadcast_proposal(p),
            Output::Broadcast(m) => self.actions.push_back(Action::Broadcast(message_frame(&m))),
            Output::ScheduleTimeout { timeout, at_ns } => {
                self.timer_seq += 1;
                self.timers.insert((at_ns, self.timer_seq), timeout);
            }
            Output::Decide(certificate) => self.decided(certificate)?,
            Output::Evidence(e) => self.on_evidence(e),
            Output::PeerBehind { peer, height } => self.answer_behind(peer, height, now_ns),
            Output::BodyWanted { height, round } => {
                self.answer_body_wanted(height, round, now_ns)?
            }
        }
        Ok(())
    }

    /// Queues a safety save ahead of the step's other actions, or updates a save still
    /// queued (it is ahead of everything queued since).
    fn persist_safety(&mut self, state: SafetyState) {
        let queued = self.actions.iter_mut().find_map(|a| match a {
            Action::PersistSafety(s) => Some(s),
            _ => None,
        });
        match queued {
            Some(s) => **s = state,
            None => self
                .actions
                .push_back(Action::PersistSafety(Box::new(state))),
        }
    }

    /// A decision: checked against our root, then handed out to be made durable.
    fn decided(&mut self, certificate: CommitCertificate) -> Result<(), HostError<A::Error>> {
        assert!(self.pending.is_none(), "one decision per height");
        self.check_root(&certificate)?;
        let certificate = Arc::new(certificate);
        self.pending = Some(certificate.clone());
        self.actions.push_back(Action::PersistBlock(certificate));
        Ok(())
    }

    fn check_root(&self, certificate: &CommitCertificate) -> Result<(), HostError<A::Error>> {
        let block = &certificate.block;
        if block.prev_exec_root != self.exec_root {
            return Err(HostError::ExecRootMismatch {
                height: block.height,
                ours: self.exec_root,
                block: block.prev_exec_root,
            });
        }
        Ok(())
    }

    /// Applies a durable block to the chain state, then executes it.
    fn apply(
        &mut self,
        certificate: &CommitCertificate,
        recovering: bool,
        now_ns: u64,
    ) -> Result<(), HostError<A::Error>> {
        self.apply_chain(certificate);
        let ctx = self.consensus.context_mut();
        let root = ctx
            .app
            .execute(certificate, &ctx.chain, recovering, now_ns)
            .map_err(HostError::App)?;
        self.applied(certificate, root);
        Ok(())
    }

    /// The block's staking and governance actions and evidence, applied to the chain state.
    fn apply_chain(&mut self, certificate: &CommitCertificate) {
        let ctx = self.consensus.context_mut();
        ctx.chain.apply_block(&certificate.block, &ctx.verifier);
    }

    /// A block was executed with execution root `root` after it, its chain state applied: evidence, last block and certificates follow.
    fn applied(&mut self, certificate: &CommitCertificate, root: Hash) {
        self.exec_root = root;
        let block = &certificate.block;
        if self
            .signing_held_until
            .is_some_and(|after| block.timestamp_ns >= after)
        {
            self.signing_held_until = None;
            self.consensus.set_signing(true);
        }
        self.included.extend(block.evidence.iter().copied());
        self.evidence.retain(|e| !block.evidence.contains(e));
        self.forget_stale_evidence(block.height);
        self.last_block = Some((block.id(), block.timestamp_ns));
        self.certificates.push_back(certificate.clone());
        self.trim_certificates();
    }

    /// Starts the next height now, or lets it wait until `empty_block_deadline`.
    fn next_height(&mut self, now_ns: u64) -> Result<(), HostError<A::Error>> {
        match self.empty_block_deadline(now_ns) {
            Some(at) => {
                self.defer(at);
                Ok(())
            }
            None => self.start_height(now_ns),
        }
    }

    /// When the next height would start as an empty block, if it is to wait: an interval
    /// is set, it is not the first height, no peer's message for it or later came, the
    /// application is idle, and the interval since the last block has not passed.
    fn empty_block_deadline(&self, now_ns: u64) -> Option<u64> {
        let next = self.chain().height() + 1;
        if self.empty_block_interval_ns == 0 || self.seen_height >= next {
            return None;
        }
        let (_, last_ns) = self.last_block?;
        let at = last_ns.saturating_add(self.empty_block_interval_ns);
        (now_ns < at && !self.app().has_pending()).then_some(at)
    }

    /// The next height waits until `at`. The core stays at the decided height, which
    /// ignores its timers: they are dropped, so the shell wakes for the deadline only.
    fn defer(&mut self, at: u64) {
        let next = self.chain().height() + 1;
        self.timers.retain(|_, t| t.height >= next);
        self.deferred = Some(at);
    }

    /// Starts the waiting height, if one waits.
    fn start_deferred(&mut self, now_ns: u64) -> Result<(), HostError<A::Error>> {
        if self.deferred.is_some() {
            self.start_height(now_ns)?;
        }
        Ok(())
    }

    /// Starts the height after the chain's with this validator's proposal for it.
    fn start_height(&mut self, now_ns: u64) -> Result<(), HostError<A::Error>> {
        self.deferred = None;
        let height = self.chain().height() + 1;
        self.compact.forget_before(height);
        let (prev_block, prev_timestamp_ns) = self.last_block.unwrap_or((Hash::ZERO, 0));
        let start = HeightStart {
            height,
            validators: self.chain().validators().clone(),
            prev_block,
            prev_exec_root: self.exec_root,
            prev_timestamp_ns,
        };
        let body = self.body(height, now_ns);
        self.step(Input::NewHeight { start, body }, now_ns)?;
        self.release_ahead(height, now_ns)
    }

    /// Keeps a certificate for a height past the core's buffer (returns `None`), up to
    /// `SYNC_BATCH` heights further; gives back every other message.
    fn hold_ahead(&mut self, m: Message) -> Option<Message> {
        // The core works on `next` and buffers up to `next + window` itself.
        let next = self.chain().height() + 1;
        let first = next.saturating_add(self.window).saturating_add(1);
        let last = first.saturating_add(SYNC_BATCH - 1);
        let h = m.height();
        if !matches!(m, Message::Commit(_)) || h < first || h > last {
            return Some(m);
        }
        self.ahead.entry(h).or_insert(m);
        None
    }

    /// Hands the core the held certificates it can now use or buffer (heights `height` to
    /// `height + window`), and forgets those of heights already passed.
    fn release_ahead(&mut self, height: Height, now_ns: u64) -> Result<(), HostError<A::Error>> {
        self.ahead = self.ahead.split_off(&height);
        let last = height.saturating_add(self.window);
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() > last {
                break;
            }
            let m = entry.remove();
            self.step(Input::Message(m), now_ns)?;
        }
        Ok(())
    }

    /// Evidence not yet in a block against validators not yet jailed (at most two).
    fn proposal_evidence(&self) -> Vec<Evidence> {
        let staking = self.chain().staking();
        self.evidence
            .iter()
            .filter(|e| !self.included.contains(e))
            .filter(|e| staking.bond(&e.offender()).is_some_and(|b| !b.is_jailed()))
            .take(EVIDENCE_PER_BLOCK)
            .copied()
            .collect()
    }

    /// Evidence too old to punish any more (`evidence_max_age_blocks` before `height`), or
    /// against a validator with no bond, leaves the pool and the included set: both stay
    /// bounded by the age window, and such evidence cannot fill the pool and crowd out new
    /// evidence.
    fn forget_stale_evidence(&mut self, height: Height) {
        let max_age = self.chain().governance().params.evidence_max_age_blocks;
        let fresh = |e: &Evidence| height.saturating_sub(e.height()) <= max_age;
        self.included.retain(fresh);
        let staking = self.chain().staking();
        let keep: Vec<bool> = self
            .evidence
            .iter()
            .map(|e| fresh(e) && staking.bond(&e.offender()).is_some())
            .collect();
        let mut keep = keep.into_iter();
        self.evidence.retain(|_| keep.next().unwrap_or(false));
    }

    fn on_evidence(&mut self, e: Evidence) {
        if !self.evidence.contains(&e)
            && !self.included.contains(&e)
            && self.evidence.len() < EVIDENCE_POOL
        {
            self.evidence.push(e);
        }
        self.actions.push_back(Action::Evidence(Box::new(e)));
    }

    /// `PeerBehind`: the certificate of `height`, only to a validator of the current set
    /// (the rate-limit map stays bounded by the set) and only for a height we have.
    fn answer_behind(&mut self, peer: ValidatorId, height: Height, now_ns: u64) {
        if self.chain().validators().stake_of(&peer).is_none() {
            return;
        }
        let held = self
            .first_certificate_height()
            .is_some_and(|first| first <= height)
            && height <= self.cert_base + self.certificates.len() as u64;
        if !held {
            return;
        }
        if cert_allowed(&mut self.cert_sent, peer, height, now_ns) {
            let Some(frame) = self.certificate_frames(height..=height).pop() else {
                return;
            };
            self.stats.behind_certificates += 1;
            let reason = SendReason::PeerBehind;
            self.actions.push_back(Action::Send {
                to: peer,
                frame,
                reason,
            });
        }
    }

    /// A message two or more heights ahead: ask its sender for the blocks in between. One
    /// height ahead (the sender decided our current height), ask only once that has lasted
    /// [`ONE_BEHIND_GRACE_NS`]: usually our own decision or a certificate answering our
    /// votes comes first, but a validator that sends nothing (holding its signatures after
    /// a lost safety file) would otherwise wait for ever.
    fn maybe_ask_sync(&mut self, from: ValidatorId, height: Height, now_ns: u64) {
        let ours = self.chain().height();
        if height <= ours + 1 {
            return;
        }
        if height == ours + 2 {
            let since = match self.peers_decided_ours {
                Some((h, t)) if h == ours => t,
                _ => {
                    self.peers_decided_ours = Some((ours, now_ns));
                    now_ns
                }
            };
            if now_ns < since + ONE_BEHIND_GRACE_NS {
                return;
            }
        }
        let last = self.sync_asked.get(&from).copied();
        if last.is_some_and(|t| now_ns <= t + SYNC_ASK_EVERY_NS) {
            return;
        }
        self.sync_asked.insert(from, now_ns);
        self.stats.sync_requests += 1;
        let frame = sync_frame(ours + 1);
        let reason = SendReason::SyncRequest;
        self.actions.push_back(Action::Send {
            to: from,
            frame,
            reason,
        });
    }

    /// A sync request: up to `SYNC_BATCH` certificates from the height asked for.
    fn serve_sync(&mut self, from: ValidatorId, body: &[u8], now_ns: u64) {
        let Ok(bytes) = <[u8; 8]>::try_from(body) else {
            return;
        };
        // Heights before the first held certificate (a host started from a snapshot) are
        // answered from that one on: the asker then needs a snapshot itself.
        let first = self
            .first_certificate_height()
            .unwrap_or(self.cert_base + 1);
        let from_height = u64::from_le_bytes(bytes).max(first);
        let Some(range) = sync_range(from_height, self.chain().height()) else {
            return; // Nothing we have (or a request past our height).
        };
        if let Some((h, t)) = self.sync_served.get(&from) {
            if *h == from_height && now_ns < t + SYNC_SERVE_EVERY_NS {
                return;
            }
        }
        self.sync_served.insert(from, (from_height, now_ns));
        for frame in self.certificate_frames(range) {
            self.stats.sync_certificates += 1;
            let reason = SendReason::SyncAnswer;
            self.actions.push_back(Action::Send {
                to: from,
                frame,
                reason,
            });
        }
    }
}

/// Compact proposals (see [`compact`]): sending them, rebuilding peers', asking and
/// answering for full ones.
impl<V: SignatureVerifier, A: Application> Host<V, A> {
    /// Broadcasts an own proposal, compact when the application has a compact form of its
    /// payload; the full frame is kept for peers that ask.
    fn broadcast_proposal(&mut self, p: ProposalMessage) {
        let peers = self.chain().validators().len().saturating_sub(1) as u64;
        let compact = self
            .consensus
            .context()
            .app
            .compact_payload(&p.block.payload);
        let stats = &mut self.compact.stats;
        let (frame, full_len) = match compact {
            Some(compact) => {
                let compact_len = compact.len();
                let mut message = p.clone();
                message.block.payload = compact.into();
                stats.sent += 1;
                let frame = tagged_message(FRAME_COMPACT_PROPOSAL, &Message::Proposal(message));
                // The full frame differs only in its payload (each behind its u32 length).
                let full_len = frame.len() - compact_len + p.block.payload.len();
                (frame, full_len)
            }
            None => {
                stats.sent_full += 1;
                let frame = message_frame(&Message::Proposal(p.clone()));
                let len = frame.len();
                (frame, len)
            }
        };
        stats.bytes_full += full_len as u64 * peers;
        stats.bytes_sent += frame.len() as u64 * peers;
        self.compact.keep_own(p);
        self.actions.push_back(Action::Broadcast(frame));
    }

    /// A peer's compact proposal: handed to the core rebuilt, or held until it can be.
    fn on_compact(
        &mut self,
        from: ValidatorId,
        body: &[u8],
        now_ns: u64,
    ) -> Result<(), HostError<A::Error>> {
        let Ok(Message::Proposal(mut p)) = Message::decode(body) else {
            return Ok(()); // A malformed frame from a peer is dropped.
        };
        let height = p.signed.proposal.height;
        self.maybe_ask_sync(from, height, now_ns);
        self.peer_at(height, now_ns)?;
        if height <= self.chain().height() {
            return Ok(());
        }
        if !self.rebuild(&mut p) {
            self.compact.hold(from, p, now_ns);
            return Ok(());
        }
        self.compact.stats.rebuilt += 1;
        self.step(Input::Message(Message::Proposal(p)), now_ns)
    }

    /// Rebuilds the proposal's payload in place from its compact form; false (unchanged)
    /// if the application cannot.
    fn rebuild(&self, p: &mut ProposalMessage) -> bool {
        match self.app().expand_payload(&p.block.payload) {
            Some(payload) => {
                p.block.payload = payload.into();
                true
            }
            None => false,
        }
    }

    /// Tries the held compact proposals again; asks the sender of each that waited
    /// [`COMPACT_WAIT_NS`] for its full proposal.
    fn retry_held(&mut self, now_ns: u64) -> Result<(), HostError<A::Error>> {
        for (from, mut p, since_ns, asked) in self.compact.take_held() {
            if self.rebuild(&mut p) {
                self.compact.stats.rebuilt += 1;
                self.step(Input::Message(Message::Proposal(p)), now_ns)?;
                continue;
            }
            let (height, round) = (p.signed.proposal.height, p.signed.proposal.round);
            if self.compact.put_back((from, p, since_ns, asked), now_ns) {
                let frame = tagged(FRAME_PROPOSAL_ASK, &compact::ask_body(height, round));
                let reason = SendReason::ProposalAsk;
                self.actions.push_back(Action::Send {
                    to: from,
                    frame,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// A peer asks for an own proposal in full: sent once per peer, height and round.
    fn answer_ask(&mut self, from: ValidatorId, body: &[u8]) {
        let Some((height, round)) = compact::read_ask(body) else {
            return;
        };
        if let Some(frame) = self.compact.answer(from, height, round) {
            let reason = SendReason::ProposalAnswer;
            self.actions.push_back(Action::Send {
                to: from,
                frame,
                reason,
            });
        }
    }
}
