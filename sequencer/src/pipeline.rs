//! The pinned-thread pipeline: sequencer -> engine -> publisher, with the write-ahead log
//! beside them, joined by lock-free single-producer single-consumer rings (rtrb).
//!
//! ```text
//!  submit ──input──▶ sequencer ──inputs, block ends──▶ engine ──events, Sequenced──────────▶ outputs
//!                        │                               │ done, snapshots                    ▲
//!                        └──────────blocks──────────▶  WAL writer ──durable──▶ publisher ─────┘ Finalized
//! ```
//!
//! - The engine executes each input as soon as it is sequenced and hands its events and a
//!   **Sequenced** notice straight to the consumer (microseconds). The sequencer, or the
//!   sequencer and the engine, may instead run on the caller's thread
//!   ([`PipelineConfig::inline_sequencer`], [`PipelineConfig::fused_engine`]).
//! - The WAL writer appends cut blocks in durable LMDB transactions; once a block is on disk
//!   the publisher sends a **Finalized** notice for each of its inputs. After a crash, recovery
//!   rebuilds exactly the finalized prefix; a Sequenced-only input may be lost with the crash,
//!   which is why clients are told the two levels apart.
//! - Backpressure: only [`Pipeline::try_submit`] can be refused (the input ring is full, or
//!   inline, the rings after the sequencer lack room), and the caller must tell its client.
//!   Inside, a full ring makes the sender wait; nothing is dropped.
//! - Each stage parks or busy-spins when idle ([`Wait`]); on 2 cores run at most one spinner.
//!   Threads may be pinned to cores (the core list is read once, before pinning).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::{ArrayLadder, Command, Engine, Event, LevelChange};
use rtrb::{Consumer, Producer, RingBuffer};

use crate::block::Block;
use crate::recovery::Recovered;
use crate::sequencer::{Sequencer, SequencerConfig};
use crate::wal::Wal;

/// What a stage does when it has nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Sleep until woken by a producer (or a short timeout). Costs a wake-up per hand-off.
    Park,
    /// Busy-poll. Lowest latency; burns a core.
    Spin,
}

/// Idle behaviour of every stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageWaits {
    /// The sequencer stage.
    pub sequencer: Wait,
    /// The engine stage.
    pub engine: Wait,
    /// The WAL writer.
    pub wal: Wait,
    /// The publisher.
    pub publisher: Wait,
}

impl StageWaits {
    /// Every stage parks: correct on any number of cores.
    pub const ALL_PARK: StageWaits = StageWaits {
        sequencer: Wait::Park,
        engine: Wait::Park,
        wal: Wait::Park,
        publisher: Wait::Park,
    };
}

/// How the pipeline runs.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    /// When blocks are cut.
    pub blocks: SequencerConfig,
    /// Slots in each ring.
    pub ring_capacity: usize,
    /// Take an engine snapshot after every this many blocks (0: never).
    pub snapshot_every_blocks: u64,
    /// Idle behaviour per stage.
    pub waits: StageWaits,
    /// Pin each stage thread to a core (round robin over the cores found at start).
    pub pin_threads: bool,
    /// Report every price level an input changed ([`Output::Level`]), for market data.
    pub level_changes: bool,
    /// Number inputs on the caller's thread inside [`Pipeline::try_submit`] instead of on a
    /// sequencer thread: one thread wake-up fewer per input. The caller must then call
    /// [`Pipeline::tick`] so old blocks are cut.
    pub inline_sequencer: bool,
    /// With `inline_sequencer`, also execute inputs on the caller's thread, inside
    /// [`Pipeline::try_submit`]: no thread wake-up at all between an order and its results.
    /// The WAL writer and the publisher keep their threads.
    pub fused_engine: bool,
}

/// Who to send an input's results to: a connection and the client's own tag for the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRef {
    /// The connection (or any caller-chosen channel id).
    pub connection: u64,
    /// The client's reference for this input, echoed back.
    pub tag: u64,
}

/// An input offered to the pipeline.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Where results go.
    pub client: ClientRef,
    /// What to do.
    pub command: Command,
    /// When the caller received it (from [`Pipeline::now_ns`]), for latency figures.
    pub received_ns: u64,
}

/// Monotonic stage timestamps of one input, in ns since the pipeline started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StageTimes {
    /// Received by the caller.
    pub received_ns: u64,
    /// Numbered by the sequencer.
    pub sequenced_ns: u64,
    /// Executed by the engine.
    pub executed_ns: u64,
    /// Handed out to the consumer (the engine finished with it).
    pub published_ns: u64,
}

/// What comes out of the pipeline, in order per input: its events, then `Sequenced`, later
/// `Finalized`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// One engine event caused by input `seq`.
    Event {
        /// Who sent the input.
        client: ClientRef,
        /// The input's sequence number.
        seq: u64,
        /// What happened.
        event: Event,
    },
    /// A price level's size after input `seq` (only with [`PipelineConfig::level_changes`]);
    /// all of an input's level changes come after its events and before its `Sequenced`.
    Level {
        /// The input that changed it.
        seq: u64,
        /// The level and its new size.
        change: LevelChange,
    },
    /// Input `seq` was executed; all its events came before this.
    Sequenced {
        /// Who sent it.
        client: ClientRef,
        /// Its sequence number.
        seq: u64,
        /// The block it will be in.
        height: u64,
        /// Stage timestamps.
        times: StageTimes,
    },
    /// Input `seq` is in a durable block: it survives any crash.
    Finalized {
        /// Who sent it.
        client: ClientRef,
        /// Its sequence number.
        seq: u64,
        /// Its block.
        height: u64,
    },
    /// The engine finished a block; `state_root` is its state commitment after it (the log
    /// records it and recovery checks it).
    BlockExecuted {
        /// The block.
        height: u64,
        /// `Engine::commit` after its last input.
        state_root: [u8; 32],
    },
    /// A block became durable.
    BlockDurable {
        /// Its height.
        height: u64,
        /// Its last input.
        last_seq: u64,
        /// How long its (group) commit took, fsync included.
        commit_ns: u64,
        /// Blocks in that commit.
        blocks_in_commit: u32,
    },
    /// The log failed: nothing more will be finalized; the node must stop.
    Fatal(String),
    /// What a call of an enshrined co-processor answered (chains only: the pipeline itself
    /// never makes one); it comes after the input's events, before its `Sequenced`.
    Call {
        /// Who sent the input.
        client: ClientRef,
        /// The input's sequence number.
        seq: u64,
        /// The action's position in its transaction.
        action: u16,
        /// The co-processor's registry id.
        coprocessor: u32,
        /// Its 32-byte answer, or the refusal's code (ASCII, e.g. `coprocessor_inactive`).
        result: Result<[u8; 32], &'static str>,
    },
}

/// A wake-up handle for a stage thread, set once the thread starts.
#[derive(Clone, Default)]
struct Doorbell(Arc<OnceLock<Thread>>);

impl Doorbell {
    fn ring(&self) {
        if let Some(thread) = self.0.get() {
            thread.unpark();
        }
    }
    fn register_current(&self) {
        let _ = self.0.set(thread::current());
    }
}

/// Pushes, waiting while the ring is full (backpressure inside the pipeline), then wakes the
/// consumer.
fn push_waiting<T>(producer: &mut Producer<T>, mut value: T, consumer: &Doorbell) {
    loop {
        match producer.push(value) {
            Ok(()) => {
                consumer.ring();
                return;
            }
            Err(rtrb::PushError::Full(back)) => {
                value = back;
                consumer.ring();
                thread::yield_now();
            }
        }
    }
}

/// Pushes without waking the consumer, unless the ring is full (then as [`push_waiting`]).
fn push_quietly<T>(producer: &mut Producer<T>, value: T, consumer: &Doorbell) {
    match producer.push(value) {
        Ok(()) => {}
        Err(rtrb::PushError::Full(back)) => push_waiting(producer, back, consumer),
    }
}

fn idle(wait: Wait, timeout: Duration) {
    match wait {
        Wait::Spin => std::hint::spin_loop(),
        Wait::Park => thread::park_timeout(timeout),
    }
}

fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Nanoseconds since `epoch`.
fn since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

enum EngineMsg {
    Input {
        client: ClientRef,
        seq: u64,
        command: Command,
        received_ns: u64,
        sequenced_ns: u64,
    },
    BlockEnd {
        height: u64,
        hash: [u8; 32],
    },
    Stop,
}

enum PublisherMsg {
    /// An input was executed (its `Sequenced` is already out): await its block.
    Done {
        client: ClientRef,
        seq: u64,
        height: u64,
    },
    Stopped,
}

enum WalMsg {
    Block(Block),
    Stop,
}

enum DurableMsg {
    Durable {
        height: u64,
        last_seq: u64,
        commit_ns: u64,
        blocks: u32,
    },
    Failed(String),
    Stopped,
}

struct SnapshotMsg {
    height: u64,
    hash: [u8; 32],
    bytes: Vec<u8>,
}

/// The sequencer and the ring ends it feeds.
struct SequencerStage {
    sequencer: Sequencer,
    engine: EngineLink,
    wal_tx: Producer<WalMsg>,
    cut: Vec<Block>,
    wal_bell: Doorbell,
    epoch: Instant,
}

/// How the sequencer reaches the engine.
enum EngineLink {
    /// The engine thread's ring and doorbell.
    Ring(Producer<EngineMsg>, Doorbell),
    /// The engine runs right here (`fused_engine`).
    Fused(Box<EngineStage>),
}

impl EngineLink {
    /// Hands a message on (waiting on a full ring). Returns true once the engine stopped.
    fn send(&mut self, message: EngineMsg) -> bool {
        match self {
            EngineLink::Ring(tx, bell) => {
                push_waiting(tx, message, bell);
                false
            }
            EngineLink::Fused(stage) => stage.handle(message),
        }
    }

    /// Messages that can be handed on without waiting.
    fn room(&self) -> usize {
        match self {
            EngineLink::Ring(tx, _) => tx.slots(),
            EngineLink::Fused(stage) => stage.room(),
        }
    }
}

/// Where the engine's outputs go.
enum OutputSink {
    /// To the consumer on another thread, woken by the callback when the ring is full.
    Ring(Producer<Output>, Arc<dyn Fn() + Send + Sync>),
    /// Kept for the consumer on this thread (fused engine).
    Local(VecDeque<Output>),
}

impl OutputSink {
    fn is_local(&self) -> bool {
        matches!(self, OutputSink::Local(_))
    }

    fn push(&mut self, output: Output) {
        match self {
            // The consumer is woken by `notify`, not by a doorbell.
            OutputSink::Ring(tx, notify) => {
                if let Err(rtrb::PushError::Full(back)) = tx.push(output) {
                    // The consumer must drain before this can go on: wake it now.
                    notify();
                    push_waiting(tx, back, &Doorbell::default());
                }
            }
            OutputSink::Local(queue) => queue.push_back(output),
        }
    }
}

/// The engine and the ring ends it feeds.
struct EngineStage {
    engine: Engine<ArrayLadder>,
    /// The block the next input goes into.
    height: u64,
    level_changes: bool,
    snapshot_every: u64,
    events: Vec<Event>,
    levels: Vec<LevelChange>,
    out: OutputSink,
    root_tx: Producer<(u64, [u8; 32])>,
    snapshot_tx: Producer<SnapshotMsg>,
    publish_tx: Producer<PublisherMsg>,
    wal_bell: Doorbell,
    publisher_bell: Doorbell,
    epoch: Instant,
}

impl EngineStage {
    /// Executes one message; true once told to stop.
    fn handle(&mut self, message: EngineMsg) -> bool {
        match message {
            EngineMsg::Input {
                client,
                seq,
                command,
                received_ns,
                sequenced_ns,
            } => {
                self.events.clear();
                self.engine.step(&command, &mut self.events);
                let executed_ns = since(self.epoch);
                for event in self.events.drain(..) {
                    self.out.push(Output::Event { client, seq, event });
                }
                if self.level_changes {
                    self.engine.drain_level_changes(&mut self.levels);
                    for change in self.levels.drain(..) {
                        self.out.push(Output::Level { seq, change });
                    }
                }
                let times = StageTimes {
                    received_ns,
                    sequenced_ns,
                    executed_ns,
                    published_ns: since(self.epoch),
                };
                self.out.push(Output::Sequenced {
                    client,
                    seq,
                    height: self.height,
                    times,
                });
                // Pushed after `Sequenced`: the consumer relies on this order (see
                // `Pipeline::poll_output`). The publisher is not woken for it: it only needs
                // these once the block is durable, and the WAL writer wakes it then (waking
                // it per input costs a futex call and a context switch on the hot path).
                let done = PublisherMsg::Done {
                    client,
                    seq,
                    height: self.height,
                };
                if self.out.is_local() {
                    push_quietly(&mut self.publish_tx, done, &self.publisher_bell);
                } else {
                    // With its own thread the engine may run behind the WAL writer: the
                    // publisher may already have been told the block is durable.
                    push_waiting(&mut self.publish_tx, done, &self.publisher_bell);
                }
                false
            }
            EngineMsg::BlockEnd { height, hash } => {
                self.height = height + 1;
                let root = self.engine.commit();
                push_waiting(&mut self.root_tx, (height, root), &self.wal_bell);
                self.out.push(Output::BlockExecuted {
                    height,
                    state_root: root,
                });
                if self.snapshot_every > 0 && height % self.snapshot_every == 0 {
                    let bytes = self.engine.snapshot();
                    let message = SnapshotMsg {
                        height,
                        hash,
                        bytes,
                    };
                    push_waiting(&mut self.snapshot_tx, message, &self.wal_bell);
                }
                false
            }
            EngineMsg::Stop => {
                push_waiting(
                    &mut self.publish_tx,
                    PublisherMsg::Stopped,
                    &self.publisher_bell,
                );
                true
            }
        }
    }

    /// Inputs a fused engine can take without waiting on the WAL writer or the publisher.
    fn room(&self) -> usize {
        self.publish_tx.slots().min(self.root_tx.slots())
    }
}

impl SequencerStage {
    /// Numbers an input and passes it on, waiting on full rings (own thread).
    fn submit_waiting(&mut self, submission: Submission) {
        let seq = self
            .sequencer
            .submit(wall_clock_ns(), submission.command.clone(), &mut self.cut);
        let message = EngineMsg::Input {
            client: submission.client,
            seq,
            command: submission.command,
            received_ns: submission.received_ns,
            sequenced_ns: since(self.epoch),
        };
        self.engine.send(message);
        self.forward_cut();
    }

    /// Numbers an input only if it and a block cut after it fit without waiting (inline).
    // A refused submission goes back by value: boxing it would allocate on every order to
    // save a copy of a few cache lines on the rare refusal (Command holds a PerpSpec).
    #[allow(clippy::result_large_err)]
    fn try_submit(&mut self, submission: Submission) -> Result<(), Submission> {
        if self.engine.room() < 2 || self.wal_tx.slots() < 1 {
            return Err(submission);
        }
        self.submit_waiting(submission);
        Ok(())
    }

    fn tick_waiting(&mut self) {
        self.sequencer.tick(wall_clock_ns(), &mut self.cut);
        self.forward_cut();
    }

    /// Cuts an old block only if it fits without waiting (inline); otherwise later.
    fn try_tick(&mut self) {
        if self.engine.room() >= 1 && self.wal_tx.slots() >= 1 {
            self.tick_waiting();
        }
    }

    fn forward_cut(&mut self) {
        for block in self.cut.drain(..) {
            let end = EngineMsg::BlockEnd {
                height: block.height,
                hash: block.hash,
            };
            self.engine.send(end);
            push_waiting(&mut self.wal_tx, WalMsg::Block(block), &self.wal_bell);
        }
    }

    /// Cuts the open block and tells the engine and the WAL writer to stop.
    fn finish(&mut self) {
        self.sequencer.flush(wall_clock_ns(), &mut self.cut);
        self.forward_cut();
        self.engine.send(EngineMsg::Stop);
        push_waiting(&mut self.wal_tx, WalMsg::Stop, &self.wal_bell);
    }
}

/// A running pipeline. Drop order matters little: call [`Pipeline::shutdown`] to finish cleanly.
pub struct Pipeline {
    input: Producer<Submission>,
    /// From the publisher: `Finalized`, `BlockDurable`, `Fatal`.
    output: Consumer<Output>,
    /// From the engine: events, level changes, `Sequenced`, `BlockExecuted`.
    engine_output: Consumer<Output>,
    /// A publisher output held back until the engine outputs ahead of it are taken.
    held: Option<Output>,
    /// Engine outputs still to hand out before `held`.
    held_after: usize,
    /// The sequencer, when it runs on the caller's thread.
    inline: Option<SequencerStage>,
    sequencer_bell: Doorbell,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    engine_thread: Option<JoinHandle<Engine<ArrayLadder>>>,
    other_threads: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts the stage threads from a recovered engine and chain tip. `notify` is called from
    /// the publisher thread whenever new outputs are ready (for example to wake an event loop).
    pub fn start(
        recovered: Recovered,
        wal: Wal,
        config: PipelineConfig,
        notify: Arc<dyn Fn() + Send + Sync>,
    ) -> Pipeline {
        let epoch = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let cores = if config.pin_threads {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let pin = move |stage: usize| {
            if let Some(core) = (!cores.is_empty()).then(|| cores[stage % cores.len()]) {
                core_affinity::set_for_current(core);
            }
        };
        let capacity = config.ring_capacity.max(2);
        let (input, mut input_rx) = RingBuffer::<Submission>::new(capacity);
        let (engine_tx, mut engine_rx) = RingBuffer::<EngineMsg>::new(capacity);
        let (wal_tx, mut wal_rx) = RingBuffer::<WalMsg>::new(capacity);
        let (snapshot_tx, mut snapshot_rx) = RingBuffer::<SnapshotMsg>::new(16);
        let (root_tx, mut root_rx) = RingBuffer::<(u64, [u8; 32])>::new(capacity);
        let (publish_tx, mut publish_rx) = RingBuffer::<PublisherMsg>::new(capacity * 4);
        let (mut durable_tx, mut durable_rx) = RingBuffer::<DurableMsg>::new(capacity);
        let (mut output_tx, output) = RingBuffer::<Output>::new(capacity * 4);
        // The engine hands its results (events, level changes, `Sequenced`, `BlockExecuted`)
        // straight to the consumer: one thread wake-up fewer between an order and its ack.
        let (engine_out_tx, engine_output) = RingBuffer::<Output>::new(capacity * 4);
        let bells: [Doorbell; 4] = Default::default();
        let [sequencer_bell, engine_bell, wal_bell, publisher_bell] = bells;
        let waits = config.waits;
        let idle_timeout =
            Duration::from_nanos(config.blocks.max_block_age_ns.clamp(50_000, 1_000_000));

        // Engine stage: its own thread, or fused into the caller's with the sequencer.
        let mut engine = recovered.engine;
        engine.track_level_changes(config.level_changes);
        let fused = config.inline_sequencer && config.fused_engine;
        let engine_stage = EngineStage {
            engine,
            height: recovered.tip.next_height,
            level_changes: config.level_changes,
            snapshot_every: config.snapshot_every_blocks,
            events: Vec::with_capacity(1024),
            levels: Vec::with_capacity(1024),
            out: if fused {
                OutputSink::Local(VecDeque::with_capacity(capacity))
            } else {
                OutputSink::Ring(engine_out_tx, notify.clone())
            },
            root_tx,
            snapshot_tx,
            publish_tx,
            wal_bell: wal_bell.clone(),
            publisher_bell: publisher_bell.clone(),
            epoch,
        };
        let (engine_thread, engine_link) = if fused {
            (None, EngineLink::Fused(Box::new(engine_stage)))
        } else {
            let (bell, pin, notify) = (engine_bell.clone(), pin.clone(), notify.clone());
            let mut stage = engine_stage;
            let thread = thread::Builder::new()
                .name("nexus-engine".into())
                .spawn(move || {
                    pin(1);
                    bell.register_current();
                    // The consumer is woken by `notify`, once per batch, not by a doorbell.
                    let mut unnotified = false;
                    loop {
                        let Ok(message) = engine_rx.pop() else {
                            if unnotified {
                                unnotified = false;
                                notify();
                                continue;
                            }
                            idle(waits.engine, idle_timeout);
                            continue;
                        };
                        unnotified = true;
                        if stage.handle(message) {
                            notify();
                            return stage.engine;
                        }
                    }
                })
                .expect("spawn engine thread");
            (
                Some(thread),
                EngineLink::Ring(engine_tx, engine_bell.clone()),
            )
        };

        // Sequencer stage: its own thread, or the caller's (`inline_sequencer`).
        let mut stage = SequencerStage {
            sequencer: Sequencer::new(config.blocks, recovered.tip),
            engine: engine_link,
            wal_tx,
            cut: Vec::new(),
            wal_bell: wal_bell.clone(),
            epoch,
        };
        let (sequencer_thread, inline) = if config.inline_sequencer {
            (None, Some(stage))
        } else {
            let (stop, bell, pin) = (stop.clone(), sequencer_bell.clone(), pin.clone());
            let thread = thread::Builder::new()
                .name("nexus-sequencer".into())
                .spawn(move || {
                    pin(0);
                    bell.register_current();
                    loop {
                        let mut worked = false;
                        for _ in 0..1024 {
                            let Ok(submission) = input_rx.pop() else {
                                break;
                            };
                            worked = true;
                            stage.submit_waiting(submission);
                        }
                        stage.tick_waiting();
                        if stop.load(Ordering::Acquire) && input_rx.is_empty() {
                            stage.finish();
                            return;
                        }
                        if !worked {
                            idle(waits.sequencer, idle_timeout);
                        }
                    }
                })
                .expect("spawn sequencer thread");
            (Some(thread), None)
        };

        // WAL writer.
        let wal_thread = {
            let (bell, publisher_bell, pin) =
                (wal_bell.clone(), publisher_bell.clone(), pin.clone());
            thread::Builder::new()
                .name("nexus-wal".into())
                .spawn(move || {
                    pin(2);
                    bell.register_current();
                    let mut batch: Vec<Block> = Vec::with_capacity(64);
                    let mut roots: Vec<(u64, [u8; 32])> = Vec::with_capacity(64);
                    let mut waiting_snapshots: Vec<SnapshotMsg> = Vec::new();
                    let mut durable_height = recovered.tip.next_height - 1;
                    let mut failed = false;
                    let mut stopping = false;
                    loop {
                        while batch.len() < 64 {
                            match wal_rx.pop() {
                                Ok(WalMsg::Block(block)) => batch.push(block),
                                Ok(WalMsg::Stop) => {
                                    stopping = true;
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        while let Ok(root) = root_rx.pop() {
                            roots.push(root);
                        }
                        if (!batch.is_empty() || !roots.is_empty()) && !failed {
                            let started = Instant::now();
                            let result = wal.append_with_roots(&batch, &roots);
                            roots.clear();
                            match result {
                                Ok(()) if batch.is_empty() => {}
                                Ok(()) => {
                                    let last = batch.last().expect("non-empty batch");
                                    durable_height = last.height;
                                    let message = DurableMsg::Durable {
                                        height: last.height,
                                        last_seq: last.last_seq(),
                                        commit_ns: started.elapsed().as_nanos() as u64,
                                        blocks: batch.len() as u32,
                                    };
                                    push_waiting(&mut durable_tx, message, &publisher_bell);
                                }
                                Err(error) => {
                                    failed = true;
                                    let message = DurableMsg::Failed(error.to_string());
                                    push_waiting(&mut durable_tx, message, &publisher_bell);
                                }
                            }
                        }
                        let wrote = !batch.is_empty();
                        batch.clear();
                        while let Ok(snapshot) = snapshot_rx.pop() {
                            waiting_snapshots.push(snapshot);
                        }
                        // A snapshot is stored only once its block is durable.
                        waiting_snapshots.retain(|snapshot| {
                            if snapshot.height > durable_height || failed {
                                return !failed;
                            }
                            if let Err(error) =
                                wal.put_snapshot(snapshot.height, &snapshot.hash, &snapshot.bytes)
                            {
                                failed = true;
                                let message = DurableMsg::Failed(error.to_string());
                                push_waiting(&mut durable_tx, message, &publisher_bell);
                            }
                            false
                        });
                        if stopping {
                            push_waiting(&mut durable_tx, DurableMsg::Stopped, &publisher_bell);
                            return;
                        }
                        if !wrote {
                            idle(waits.wal, idle_timeout);
                        }
                    }
                })
                .expect("spawn WAL thread")
        };

        // Publisher.
        let publisher_thread = {
            let (bell, pin) = (publisher_bell.clone(), pin.clone());
            let mut durable_height = recovered.tip.next_height - 1;
            thread::Builder::new()
                .name("nexus-publisher".into())
                .spawn(move || {
                    pin(3);
                    bell.register_current();
                    let no_bell = Doorbell::default();
                    let mut awaiting: VecDeque<(u64, u64, ClientRef)> =
                        VecDeque::with_capacity(1 << 16);
                    let (mut engine_done, mut wal_done) = (false, false);
                    let out = |output: Output, output_tx: &mut Producer<Output>| {
                        // The consumer is woken by `notify` below, not by a doorbell.
                        push_waiting(output_tx, output, &no_bell);
                    };
                    loop {
                        let mut produced = false;
                        for _ in 0..4096 {
                            let Ok(message) = publish_rx.pop() else { break };
                            produced = true;
                            match message {
                                PublisherMsg::Done {
                                    client,
                                    seq,
                                    height,
                                } => {
                                    if height <= durable_height {
                                        out(
                                            Output::Finalized {
                                                client,
                                                seq,
                                                height,
                                            },
                                            &mut output_tx,
                                        );
                                    } else {
                                        awaiting.push_back((height, seq, client));
                                    }
                                }
                                PublisherMsg::Stopped => engine_done = true,
                            }
                        }
                        while let Ok(message) = durable_rx.pop() {
                            produced = true;
                            match message {
                                DurableMsg::Durable {
                                    height,
                                    last_seq,
                                    commit_ns,
                                    blocks,
                                } => {
                                    durable_height = height;
                                    out(
                                        Output::BlockDurable {
                                            height,
                                            last_seq,
                                            commit_ns,
                                            blocks_in_commit: blocks,
                                        },
                                        &mut output_tx,
                                    );
                                    while let Some(&(block, seq, client)) = awaiting.front() {
                                        if block > durable_height {
                                            break;
                                        }
                                        awaiting.pop_front();
                                        out(
                                            Output::Finalized {
                                                client,
                                                seq,
                                                height: block,
                                            },
                                            &mut output_tx,
                                        );
                                    }
                                }
                                DurableMsg::Failed(why) => out(Output::Fatal(why), &mut output_tx),
                                DurableMsg::Stopped => wal_done = true,
                            }
                        }
                        if produced {
                            notify();
                        }
                        if engine_done && wal_done && publish_rx.is_empty() && durable_rx.is_empty()
                        {
                            notify();
                            return;
                        }
                        if !produced {
                            idle(waits.publisher, idle_timeout);
                        }
                    }
                })
                .expect("spawn publisher thread")
        };

        Pipeline {
            input,
            output,
            engine_output,
            held: None,
            held_after: 0,
            sequencer_bell,
            stop,
            epoch,
            engine_thread,
            other_threads: [sequencer_thread, Some(wal_thread), Some(publisher_thread)]
                .into_iter()
                .flatten()
                .collect(),
            inline,
        }
    }

    /// Nanoseconds since the pipeline started (the clock of [`StageTimes`]).
    pub fn now_ns(&self) -> u64 {
        since(self.epoch)
    }

    /// Offers an input. `Err` gives it back when the input ring is full: the caller must tell
    /// its client (the pipeline never drops an input it accepted). With an inline sequencer
    /// the input is numbered here, on the caller's thread, and never waits: if the rings
    /// after the sequencer lack room it is refused the same way.
    #[allow(clippy::result_large_err)] // as in `InlineStage::try_submit`: no box per order
    pub fn try_submit(&mut self, submission: Submission) -> Result<(), Submission> {
        if let Some(stage) = self.inline.as_mut() {
            return stage.try_submit(submission);
        }
        match self.input.push(submission) {
            Ok(()) => {
                self.sequencer_bell.ring();
                Ok(())
            }
            Err(rtrb::PushError::Full(back)) => Err(back),
        }
    }

    /// Free slots in the input ring.
    pub fn input_slots(&self) -> usize {
        match self.inline.as_ref() {
            Some(stage) => stage.engine.room().saturating_sub(1),
            None => self.input.slots(),
        }
    }

    /// With an inline sequencer: cuts the open block if it is old enough (call it at least
    /// every [`Pipeline::tick_due_in`]). Does nothing when the sequencer has its own thread.
    pub fn tick(&mut self) {
        if let Some(stage) = self.inline.as_mut() {
            stage.try_tick();
        }
    }

    /// How soon [`Pipeline::tick`] must run to cut the open block on time (`None`: no block
    /// is open, or the sequencer has its own thread).
    pub fn tick_due_in(&self) -> Option<Duration> {
        let stage = self.inline.as_ref()?;
        let deadline = stage.sequencer.open_deadline_ns()?;
        Some(Duration::from_nanos(
            deadline.saturating_sub(wall_clock_ns()),
        ))
    }

    /// The next output, if one is ready.
    ///
    /// Two rings feed this: the engine's and the publisher's. The engine pushes an input's
    /// `Sequenced` before telling the publisher about it, so when a publisher output
    /// (`Finalized`) is taken, everything the engine pushed before it is already visible in
    /// the engine ring: those are handed out first, and per-input order (events, `Sequenced`,
    /// `Finalized`) holds.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.held.is_some() {
            if self.held_after == 0 {
                return self.held.take();
            }
            self.held_after -= 1;
            return Some(
                self.pop_engine_output()
                    .expect("counted engine outputs are there"),
            );
        }
        if let Some(output) = self.pop_engine_output() {
            return Some(output);
        }
        let output = self.output.pop().ok()?;
        let ahead = self.engine_output.slots() + self.local_outputs().map_or(0, |q| q.len());
        if ahead == 0 {
            return Some(output);
        }
        self.held = Some(output);
        self.held_after = ahead;
        self.poll_output()
    }

    /// The engine, when it is fused into the caller's thread (`fused_engine`): its state
    /// after every input submitted so far. `None` when the engine has its own thread.
    pub fn fused_engine(&self) -> Option<&Engine<ArrayLadder>> {
        match self.inline.as_ref().map(|stage| &stage.engine) {
            Some(EngineLink::Fused(stage)) => Some(&stage.engine),
            _ => None,
        }
    }

    /// The fused engine's output queue, if the engine is fused.
    fn local_outputs(&mut self) -> Option<&mut VecDeque<Output>> {
        match self.inline.as_mut().map(|stage| &mut stage.engine) {
            Some(EngineLink::Fused(engine)) => match &mut engine.out {
                OutputSink::Local(queue) => Some(queue),
                OutputSink::Ring(..) => None,
            },
            _ => None,
        }
    }

    fn pop_engine_output(&mut self) -> Option<Output> {
        if let Some(output) = self.local_outputs().and_then(VecDeque::pop_front) {
            return Some(output);
        }
        self.engine_output.pop().ok()
    }

    /// Stops accepting, cuts and persists the open block, lets every stage drain, and returns
    /// the final engine with every output not yet polled.
    pub fn shutdown(mut self) -> (Engine<ArrayLadder>, Vec<Output>) {
        if let Some(stage) = self.inline.as_mut() {
            stage.finish();
        }
        self.stop.store(true, Ordering::Release);
        self.sequencer_bell.ring();
        let mut outputs = Vec::new();
        let engine_thread = self.engine_thread.take();
        let mut threads = std::mem::take(&mut self.other_threads);
        loop {
            while let Some(output) = self.poll_output() {
                outputs.push(output);
            }
            threads.retain(|handle| !handle.is_finished());
            if threads.is_empty() && engine_thread.as_ref().is_none_or(|t| t.is_finished()) {
                break;
            }
            thread::sleep(Duration::from_micros(200));
        }
        while let Some(output) = self.poll_output() {
            outputs.push(output);
        }
        let engine = match (self.inline.take().map(|stage| stage.engine), engine_thread) {
            (Some(EngineLink::Fused(stage)), _) => stage.engine,
            (_, Some(thread)) => thread.join().expect("engine thread panicked"),
            (_, None) => unreachable!("the engine is fused or has a thread"),
        };
        (engine, outputs)
    }
}
