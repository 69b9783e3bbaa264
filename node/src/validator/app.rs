//! The node's consensus [`Application`] (`NodeApp`): mempool and admission, proposals, `valid(v)`,
//! execution of decided blocks and their results to every port, snapshots.

use super::*;
use engine::AccountId;
use mempool::Refusal;

use super::snapshot_writer::{SnapshotJob, SnapshotWriter, Written};

/// The state the consensus core's payload check shares with the host.
pub(super) struct Shared {
    pub(super) execution: Execution,
    pub(super) mempool: Mempool,
    /// The time the next block's nonces are checked against (ms): the last block's
    /// timestamp, or the genesis time.
    pub(super) block_time_ms: u64,
    pub(super) max_block_txs: usize,
    pub(super) max_block_bytes: usize,
    /// The last payload `valid(v)` accepted, decoded: its decision executes it without
    /// decoding and checking it again.
    pub(super) checked: Option<CheckedPayload>,
    /// Signatures verified by this validator's forward verifier or block checks, shared
    /// between them.
    pub(super) verified_here: VerifiedHere,
    /// The last payload `valid(v)` refused (BLAKE3) and the state it was refused in: its
    /// refusal is logged once.
    pub(super) refused: Option<([u8; 32], (u64, u64))>,
}

/// A payload that passed [`check_payload`], with what it was checked against.
pub(super) struct CheckedPayload {
    /// BLAKE3 of the payload.
    digest: [u8; 32],
    /// The executed height and block time it was checked at (the state it is valid in).
    state: (u64, u64),
    items: Vec<BlockItem>,
    /// How long the check took (µs): the `final` line reports it.
    check_us: u64,
    /// Core signatures the check verified itself (not verified before by this validator).
    sigs_checked: usize,
}

/// A decided payload's items and what checking them cost (the `final` line's figures).
struct DecidedItems {
    items: Vec<BlockItem>,
    check_us: u64,
    sigs_checked: usize,
}

/// Microseconds since `start`.
fn micros_since(start: std::time::Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

/// The calling thread's CPU time so far (ns): what a stretch of work cost the thread,
/// whatever else ran on its core meanwhile (wall time on a saturated machine counts the
/// other threads' turns too).
fn thread_cpu_ns() -> u64 {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    (time.tv_sec as u64) * 1_000_000_000 + time.tv_nsec as u64
}

impl Shared {
    fn state_key(&self) -> (u64, u64) {
        (self.execution.height(), self.block_time_ms)
    }

    /// `valid(v)`, remembering the decoded items of a valid payload (once per payload and
    /// state: the core may ask again in later rounds). A refusal says why the first time
    /// this payload is refused in this state (`Err(None)` after).
    fn payload_valid(&mut self, payload: &[u8]) -> Result<(), Option<String>> {
        let digest = *blake3::hash(payload).as_bytes();
        let state = self.state_key();
        if self
            .checked
            .as_ref()
            .is_some_and(|c| c.digest == digest && c.state == state)
        {
            return Ok(());
        }
        if self.refused == Some((digest, state)) {
            return Err(None);
        }
        let start = std::time::Instant::now();
        match check_payload(self, payload) {
            Ok((items, sigs_checked)) => {
                self.checked = Some(CheckedPayload {
                    digest,
                    state,
                    items,
                    check_us: micros_since(start),
                    sigs_checked,
                });
                Ok(())
            }
            Err(why) => {
                self.refused = Some((digest, state));
                Err(Some(why))
            }
        }
    }

    /// A decided payload's items, and how long checking them took (µs): those `valid(v)`
    /// kept if it checked this payload in this state, otherwise checked now (a block from
    /// sync or recovery).
    fn decided_items(&mut self, payload: &[u8]) -> Result<DecidedItems, String> {
        let state = self.state_key();
        if let Some(checked) = self.checked.take() {
            if checked.state == state && checked.digest == *blake3::hash(payload).as_bytes() {
                return Ok(DecidedItems {
                    items: checked.items,
                    check_us: checked.check_us,
                    sigs_checked: checked.sigs_checked,
                });
            }
        }
        let start = std::time::Instant::now();
        let (items, sigs_checked) = check_payload(self, payload)?;
        Ok(DecidedItems {
            items,
            check_us: micros_since(start),
            sigs_checked,
        })
    }
}

/// The transactions of a payload, or why it is not one.
fn decode_payload(shared: &Shared, payload: &[u8]) -> Result<Vec<BlockItem>, String> {
    if payload.len() > shared.max_block_bytes {
        return Err(format!(
            "{} payload bytes, limit {}",
            payload.len(),
            shared.max_block_bytes
        ));
    }
    let items = txport::decode_list(payload, shared.max_block_txs)
        .ok_or_else(|| "not a list of transactions within the block's limits".to_string())?;
    items
        .iter()
        .enumerate()
        .map(|(i, bytes)| BlockItem::decode(bytes).map_err(|e| format!("transaction {i}: {e}")))
        .collect()
}

/// Checks a payload as `valid(v)`: decodes it, checks every signature (the pool's cache
/// first) and validates the block against the execution state. Also says how many Core
/// signatures it verified itself (those not verified before by this validator).
fn check_payload(shared: &mut Shared, payload: &[u8]) -> Result<(Vec<BlockItem>, usize), String> {
    let txs = decode_payload(shared, payload)?;
    let refs: Vec<&SignedTransaction> = txs.iter().filter_map(BlockItem::core).collect();
    let unknown = unverified_in_pool(shared, &refs);
    let signatures = shared.mempool.check_block_signatures(&refs);
    let passed = unknown.iter().filter(|&&i| signatures[i].is_ok());
    let sigs_checked = unknown.len();
    shared
        .verified_here
        .insert_all(passed.map(|&i| refs[i].hash()));
    let senders = |h: &alloy_primitives::B256| shared.mempool.evm_sender(h);
    let valid = shared
        .execution
        .validate_block_with(shared.block_time_ms, &txs, &signatures, &senders)
        .map_err(|e| e.to_string())?;
    // The block's EVM senders are recovered once per validator: its decision's check finds
    // them here.
    let recovered = valid.evm_txs().to_vec();
    shared.mempool.remember_evm_senders(&recovered);
    Ok((txs, sigs_checked))
}

/// The positions of the block's Core transactions whose signatures this validator has not
/// verified: the pool learns first those the forward verifier verified meanwhile (their
/// frames may still be on their way to the loop).
fn unverified_in_pool(shared: &mut Shared, refs: &[&SignedTransaction]) -> Vec<usize> {
    let mut unknown: Vec<usize> = (0..refs.len())
        .filter(|&i| !shared.mempool.is_verified(&refs[i].hash()))
        .collect();
    let hashes: Vec<TxHash> = unknown.iter().map(|&i| refs[i].hash()).collect();
    for (hash, known) in hashes.iter().zip(shared.verified_here.known(&hashes)) {
        if known {
            shared.mempool.note_verified(*hash);
        }
    }
    unknown.retain(|&i| !shared.mempool.is_verified(&refs[i].hash()));
    unknown
}

/// The EVM items of a block, by pool hash.
fn evm_item_hashes(items: &[BlockItem]) -> Vec<TxHash> {
    items
        .iter()
        .filter_map(|item| match item {
            BlockItem::Evm(evm) => Some(evm.hash()),
            BlockItem::Core(_) => None,
        })
        .collect()
}

/// The node's side of the host: mempool, execution and the clients of the transaction
/// port, the binary gateway and the JSON port. The consensus host
/// ([`consensus::host::Host`]) asks it for proposals, payload checks and the execution of
/// decided blocks, and hands it forwarded transactions.
pub(super) struct NodeApp {
    pub(super) index: usize,
    /// A forged transaction to put in every proposal (test only, `--byzantine-forge`,
    /// `--byzantine-replay`, `--byzantine-deposit`: `validator::forgery`).
    pub(super) forged: Option<super::forgery::Forged>,
    /// Forwarded items each peer sent that no honest validator forwards (bad signatures,
    /// undecodable, restricted actions without the role, another chain's).
    pub(super) forward_refusals: HashMap<ValidatorId, u64>,
    /// In a cell because `valid(v)` is asked through a shared reference (it checks
    /// signatures against the pool's cache, which it updates).
    pub(super) shared: RefCell<Shared>,
    pub(super) clients: HashMap<u64, ClientOutbox>,
    /// Transactions a client of this validator sent, awaiting their block.
    pub(super) awaiting: HashMap<TxHash, Sender>,
    /// The binary gateway's thread (order entry and market data), if configured.
    pub(super) gateway: Option<GatewayHandle>,
    /// The JSON development port's state, if configured.
    pub(super) json: Option<JsonPort>,
    /// Signed chain actions (staking, governance) from clients and peers, for proposals.
    pub(super) actions: ActionPool,
    /// The chain's input seq: transactions, oracle updates, fundings (one per perp market)
    /// and CoreWriter actions executed so far (every validator counts the same; the
    /// gateway's `seq` fields).
    pub(super) inputs_executed: u64,
    /// Where snapshots go, and every how many blocks (0: never).
    pub(super) snapshots: PathBuf,
    pub(super) snapshot_every: u64,
    /// Writes them off the loop; heights it wrote that the shell has not seen yet.
    pub(super) snapshot_writer: SnapshotWriter,
    pub(super) snapshots_written: Vec<Height>,
    /// Per-connection rate limits of transactions.
    pub(super) rates: RateLimits<(u8, u64)>,
    /// Per-account rate limits of admitted client transactions, and when idle buckets were
    /// last dropped (ms).
    pub(super) account_rates: RateLimits<AccountId>,
    pub(super) account_rates_pruned_ms: u64,
    /// The execution parameters (a snapshot is restored with them).
    pub(super) execution_config: ExecutionConfig,
    /// The EVM blocks executed, for the Ethereum JSON-RPC port's reads.
    pub(super) eth_history: EthHistory,
    /// The port's filters and subscriptions, fed after each block and admission.
    pub(super) eth_feeds: EthFeeds,
    /// The development accounts the port signs for (`eth_dev_signing`; else none).
    pub(super) eth_dev: evm_bridge::dev_sign::DevAccounts,
    /// JSON-RPC connections with a rate bucket (the oldest forgotten first).
    pub(super) eth_connections: std::collections::BTreeSet<u64>,
    /// When each other validator's last frame arrived (ms; at most one entry per pinned
    /// key), for `net_peerCount`.
    pub(super) peers_heard: HashMap<ValidatorId, u64>,
    /// Transactions a second one client connection may send.
    pub(super) connection_rate: u64,
    /// `final` lines are not printed, other events go to standard error (if
    /// `stderr_events`).
    pub(super) quiet_blocks: bool,
    pub(super) stderr_events: bool,
    /// Proposals go compact (`compact_proposals` in the configuration).
    pub(super) compact_proposals: bool,
    /// Peers' forwarded frames with the verifier thread, oldest first: a compact proposal
    /// can name their transactions before they reach the pool.
    pub(super) forwards_in_flight: std::collections::VecDeque<Arc<[u8]>>,
    /// The last own proposal's payload and its compact form, if it has one.
    pub(super) own_compact: Option<(Vec<u8>, Vec<u8>)>,
    /// The host's compact-proposal counters as of the last block, for the `final` line
    /// (the shell copies them in).
    pub(super) compact_stats: consensus::host::CompactStats,
}

/// The node's application at genesis, and its execution root.
pub(super) fn node_app(
    args: &ValidatorArgs,
    config: &DevnetConfig,
    data_dir: &Path,
) -> Result<(NodeApp, Hash), HostError> {
    let spec = config.load_spec()?;
    let mut execution = genesis_execution(config)?;
    let exec_root = Hash(execution.root());
    let eth_history_blocks = usize::try_from(config.eth_history_blocks)
        .map_err(|_| HostError::Config("eth_history_blocks too large".into()))?;
    let eth_state_blocks = usize::try_from(config.eth_state_blocks)
        .map_err(|_| HostError::Config("eth_state_blocks too large".into()))?;
    let eth_history = EthHistory::new(execution.evm().head(), eth_history_blocks, eth_state_blocks);
    let app = NodeApp {
        index: args.index,
        forged: super::forgery::ProposalForgery::of(args)
            .map(|kind| super::forgery::Forged::new(kind, &spec))
            .transpose()?,
        forward_refusals: HashMap::new(),
        shared: RefCell::new(Shared {
            execution,
            mempool: Mempool::new(MempoolConfig::default()),
            block_time_ms: config.genesis_time_ms,
            max_block_txs: config.max_block_txs as usize,
            max_block_bytes: config.max_block_bytes as usize,
            checked: None,
            verified_here: VerifiedHere::new(),
            refused: None,
        }),
        clients: HashMap::new(),
        awaiting: HashMap::new(),
        gateway: None,
        json: None,
        actions: ActionPool::new(),
        inputs_executed: 0,
        snapshots: data_dir.join("snapshots"),
        snapshot_every: config.snapshot_every,
        snapshot_writer: SnapshotWriter::new(data_dir.join("snapshots")),
        snapshots_written: Vec::new(),
        rates: RateLimits::new(config.connection_rate, config.connection_rate),
        account_rates: RateLimits::new(config.account_rate, config.account_rate),
        account_rates_pruned_ms: 0,
        execution_config: execution_config(config)?,
        eth_history,
        eth_dev: config.eth_dev_accounts()?,
        eth_feeds: EthFeeds::new(),
        eth_connections: Default::default(),
        peers_heard: HashMap::new(),
        connection_rate: config.connection_rate,
        quiet_blocks: false,
        stderr_events: false,
        compact_proposals: config.compact_proposals,
        own_compact: None,
        forwards_in_flight: Default::default(),
        compact_stats: Default::default(),
    };
    Ok((app, exec_root))
}

/// Whether a forwarded item's refusal is one no honest validator causes: it admitted the item
/// on the same checks before forwarding it, and these do not depend on timing (a bad
/// signature or key, bytes that are no transaction, another chain's, a restricted action
/// without its role). Nonces, duplicates and limits do.
fn no_honest_forwarder_sends(refusal: &Refusal) -> bool {
    matches!(
        refusal,
        Refusal::Malformed(_)
            | Refusal::WrongChain
            | Refusal::BadKey(_)
            | Refusal::BadSignature(_)
            | Refusal::NotPermitted(_)
    )
}

/// Index of each block item among the block's Core transactions (`None` for EVM items).
fn core_positions(items: &[BlockItem]) -> Vec<Option<usize>> {
    items
        .iter()
        .scan(0usize, |next, item| {
            Some(item.core().map(|_| {
                *next += 1;
                *next - 1
            }))
        })
        .collect()
}

/// What a block's execution owes the JSON port: the results of its lines' transactions,
/// and, if a connection follows accounts, every event with its seq.
struct JsonBlock {
    /// (Core transaction index, connection, line) of the block's JSON lines.
    pub(super) lines: Vec<(usize, u64, u64)>,
    /// (Core transaction index, action, event) of those lines.
    pub(super) events: Vec<(usize, usize, engine::Event)>,
    /// (seq, connection whose line caused it, event) of every event, if followed.
    pub(super) all: Option<Vec<(u64, Option<u64>, engine::Event)>>,
}

impl JsonBlock {
    pub(super) fn new(
        hashes: &[TxHash],
        awaiting: &HashMap<TxHash, Sender>,
        watched: bool,
    ) -> JsonBlock {
        let lines = hashes
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match awaiting.get(h) {
                Some(Sender::Json(id, line)) => Some((i, *id, *line)),
                _ => None,
            })
            .collect();
        JsonBlock {
            lines,
            events: Vec::new(),
            all: watched.then(Vec::new),
        }
    }

    /// One engine event (origin with Core transaction indexes) numbered `seq`.
    fn note(&mut self, origin: execution::Origin, seq: u64, event: &engine::Event) {
        let mut from = None;
        if let execution::Origin::Tx { index, action } = origin {
            if let Some((_, id, _)) = self.lines.iter().find(|(i, _, _)| *i == index) {
                self.events.push((index, action, *event));
                from = Some(*id);
            }
        }
        if let Some(all) = self.all.as_mut() {
            all.push((seq, from, *event));
        }
    }

    /// Hands the port every followed event, then each line's results and `calls` (by Core
    /// transaction index); transaction `i` is input `first_seq + i` of block `height`.
    fn deliver(
        self,
        json: &mut JsonPort,
        calls: Vec<(usize, (usize, execution::CoprocessorId, CallResult))>,
        (first_seq, height): (u64, Height),
    ) {
        json.block_events(self.all.as_deref().unwrap_or(&[]));
        for (index, id, line) in self.lines {
            let events: Vec<(usize, engine::Event)> = self
                .events
                .iter()
                .filter(|(i, _, _)| *i == index)
                .map(|(_, action, event)| (*action, *event))
                .collect();
            let own: Vec<_> = calls
                .iter()
                .filter(|(i, _)| *i == index)
                .map(|(_, call)| *call)
                .collect();
            json.executed(id, line, (first_seq + index as u64, height), &events, &own);
        }
    }
}

impl Application for NodeApp {
    type Error = HostError;

    fn has_pending(&self) -> bool {
        let shared = self.shared.borrow();
        let governance = self
            .json
            .as_ref()
            .is_some_and(JsonPort::has_governance_work);
        self.forged.as_ref().is_some_and(|f| f.item.is_some())
            || governance
            || self.actions.has_ready()
            || !shared.mempool.is_empty()
            || !shared.execution.bridge().is_idle()
    }

    fn propose(&mut self, height: Height, chain: &ChainState, now_ns: u64) -> AppProposal {
        if let Some(event) = self
            .forged
            .as_ref()
            .and_then(|f| f.event(self.index, height))
        {
            // A closed log output shows at the next `final` line.
            let _ = self.event(event);
        }
        let mut actions = self.actions.proposal(chain);
        if let Some(json) = self.json.as_ref() {
            let own = json.governance_key();
            let skip = actions.iter().filter(|a| Some(a.signer) == own).count();
            actions.extend(json.governance_actions(chain, skip as u64));
        }
        let (payload, compact) = self.proposal_payload(now_ns / MS);
        self.own_compact = compact.map(|c| (payload.clone(), c));
        AppProposal { actions, payload }
    }

    fn compact_payload(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let (own, compact) = self.own_compact.as_ref()?;
        (own == payload).then(|| compact.clone())
    }

    fn expand_payload(&self, form: &[u8]) -> Option<Vec<u8>> {
        let shared = self.shared.borrow();
        // A forged item (test only) rides beside a full block.
        let max_items = shared.max_block_txs + 1;
        // Not pooled yet: perhaps in a forward the verifier thread still holds (indexed
        // only if something is missing from the pool).
        let in_flight = std::cell::OnceCell::new();
        compact::expand(form, max_items, |hash| {
            let pooled = shared.mempool.pooled(hash).map(|(tx, _)| tx.bytes());
            pooled.or_else(|| {
                let index = in_flight
                    .get_or_init(|| compact::index_items(&self.forwards_in_flight, FORWARD_BATCH));
                index.get(hash).copied()
            })
        })
    }

    fn payload_valid(&self, height: Height, payload: &[u8]) -> bool {
        let valid = self.shared.borrow_mut().payload_valid(payload);
        if let Err(Some(why)) = &valid {
            // A closed log output shows at the next `final` line.
            let _ = self.event(json!({
                "event": "payload_refused", "index": self.index, "height": height, "why": why,
            }));
        }
        valid.is_ok()
    }

    fn execute(
        &mut self,
        cert: &CommitCertificate,
        chain: &ChainState,
        recovering: bool,
        now_ns: u64,
    ) -> Result<Hash, HostError> {
        let root = self.apply_decided(cert, chain, recovering, now_ns)?;
        let answers = self.actions.on_block(&cert.block, chain);
        if let Some(json) = self.json.as_mut() {
            json.governance_applied(&cert.block, chain);
            for (asker, answer) in answers {
                json.action_answered(asker, &answer);
            }
        }
        Ok(root)
    }

    fn on_app_frame(&mut self, from: ValidatorId, body: &[u8], chain: &ChainState, now_ns: u64) {
        // A peer forwards what its clients sent: admitted here on our own checks.
        // Items are block items (EVM ones start with 0xEE, Core ones with their version) or
        // chain actions (0xAC).
        let Some(items) = txport::decode_list(body, FORWARD_BATCH) else {
            self.note_forward_refused(from, "malformed: not a list of block items");
            return;
        };
        {
            let (actions, items): (Vec<&[u8]>, Vec<&[u8]>) = items
                .into_iter()
                .partition(|item| item.first() == Some(&chain_actions::ACTION_ITEM_TAG));
            for item in actions {
                self.actions.admit_forwarded(item, chain);
            }
            let shared = self.shared.get_mut();
            let Shared {
                mempool, execution, ..
            } = shared;
            let (evm, core): (Vec<&[u8]>, Vec<&[u8]>) = items
                .into_iter()
                .partition(|item| item.first() == Some(&transactions::EVM_ITEM_TAG));
            let results = mempool.admit_many(&core, now_ns / MS, &*execution);
            for hash in results.iter().flatten() {
                mempool.note_from_peer(hash);
            }
            let forged: Vec<String> = results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .filter(|refusal| no_honest_forwarder_sends(refusal))
                .map(Refusal::to_string)
                .collect();
            for why in forged {
                self.note_forward_refused(from, &why);
            }
            let Shared {
                mempool, execution, ..
            } = self.shared.get_mut();
            for item in evm {
                // A refusal here is the peer's client's: it heard of it from the peer.
                if mempool.admit_evm(&item[1..], &*execution).is_ok() {
                    let tx = alloy_primitives::keccak256(&item[1..]);
                    self.eth_feeds.on_pending(tx);
                }
            }
        }
    }
}

impl NodeApp {
    /// Counts an item `from` forwarded that no honest validator forwards; logs
    /// `forward_refused` at the 1st, 2nd, 4th, 8th... such item from that peer.
    fn note_forward_refused(&mut self, from: ValidatorId, why: &str) {
        let count = self.forward_refusals.entry(from).or_default();
        *count += 1;
        if count.is_power_of_two() {
            let line = json!({"event": "forward_refused", "index": self.index,
                "from": hex(&from.0), "count": *count, "why": why});
            // A closed log output shows at the next `final` line.
            let _ = self.event(line);
        }
    }

    /// Reports an event other than a block's `final`: a line on standard output, or with
    /// `quiet_blocks` on standard error (if `stderr_events`).
    pub(super) fn event(&self, value: serde_json::Value) -> Result<(), HostError> {
        if !self.quiet_blocks {
            return log_line(value);
        }
        if self.stderr_events {
            stderr_line(format_args!("{value}"));
        }
        Ok(())
    }

    /// Admits what clients sent (one batch) and answers each, chain actions checked against
    /// `chain`; returns the frame that forwards the admitted ones to the other validators,
    /// if any.
    pub(super) fn on_clients(
        &mut self,
        events: Vec<ClientEvent>,
        chain: &ChainState,
        now_ns: u64,
    ) -> Option<Frame> {
        let mut frames: Vec<(Sender, Vec<u8>)> = Vec::new();
        // Clients that left are forgotten after this batch's notices are queued: a client
        // whose last frame and departure come in one batch still gets its answer.
        let mut gone: Vec<u64> = Vec::new();
        for event in events {
            match event {
                ClientEvent::Connected(id, outbox) => {
                    self.clients.insert(id, outbox);
                }
                ClientEvent::Gone(id) => gone.push(id),
                ClientEvent::Transaction(id, bytes) => frames.push((Sender::Port(id), bytes)),
                ClientEvent::Gateway(batch) => {
                    let mempool = &mut self.shared.get_mut().mempool;
                    for tx in batch {
                        if let Some(hash) = tx.verified {
                            mempool.note_verified(hash);
                        }
                        let submission = tx.submission;
                        frames.push((Sender::Gateway(submission.client), submission.bytes));
                    }
                }
                ClientEvent::Json(JsonEvent::Connected(id, outbox)) => {
                    if let Some(json) = self.json.as_mut() {
                        json.connect(id, outbox);
                    }
                }
                ClientEvent::Json(JsonEvent::Line(id, text)) => {
                    frames.extend(self.json_line(id, &text, chain, now_ns))
                }
                ClientEvent::Json(JsonEvent::TooLong(id, limit)) => {
                    if let Some(json) = self.json.as_mut() {
                        json.too_long(id, limit);
                    }
                }
                ClientEvent::Json(JsonEvent::Gone(id)) => {
                    self.rates.forget(&Sender::Json(id, 0).connection());
                    if let Some(json) = self.json.as_mut() {
                        json.disconnect(id);
                    }
                }
            }
        }
        let actions = self.actions.take_forward();
        let forward = self.admit_from_clients(frames, &actions, now_ns);
        // After admission, which keeps a rate bucket for every connection it checks.
        for id in gone {
            self.clients.remove(&id);
            self.rates.forget(&Sender::Port(id).connection());
        }
        forward
    }

    /// A JSON line: answered by the port, or the transaction it signed for this batch.
    fn json_line(
        &mut self,
        id: u64,
        text: &str,
        chain: &ChainState,
        now_ns: u64,
    ) -> Option<(Sender, Vec<u8>)> {
        let json = self.json.as_mut()?;
        let shared = self.shared.get_mut();
        let rates = &mut self.rates;
        let connection = Sender::Json(id, 0).connection();
        let mut allow = || rates.allow(connection, now_ns / MS);
        let desk = ChainDesk {
            state: chain,
            actions: &mut self.actions,
            allow: &mut allow,
        };
        let (line, bytes) = json.line(id, text, &shared.execution, now_ns / MS, desk)?;
        Some((Sender::Json(id, line), bytes))
    }

    /// Answers an Ethereum JSON-RPC call from the executed state; returns the frame that
    /// forwards an admitted raw transaction to the other validators.
    pub(super) fn on_eth(&mut self, request: EthRequest, now_ns: u64) -> Option<Frame> {
        if request.method == "eth_sendRawTransaction" {
            let key = (3, request.connection);
            if self.eth_connections.insert(request.connection)
                && self.eth_connections.len() > eth_rpc::RATE_REMEMBERED
            {
                let oldest = self.eth_connections.pop_first().expect("over the bound");
                self.rates.forget(&(3, oldest));
            }
            if !self.rates.allow(key, now_ns / MS) {
                let _ = request
                    .reply
                    .send(Err(eth_rpc::rate_limited(self.connection_rate)));
                return None;
            }
        }
        let Shared {
            execution, mempool, ..
        } = self.shared.get_mut();
        let now_ms = now_ns / MS;
        let account_rates = &mut self.account_rates;
        // The same bucket as the Core account the address owns (`evm::system::core_account`):
        // an EVM sender and its Core account share one rate.
        let mut within_rate = |sender: alloy_primitives::Address| {
            let account = execution::evm::system::core_account(sender);
            let allowed = account_rates.available(account, now_ms) > 0;
            if allowed {
                account_rates.take(&account);
            }
            allowed
        };
        let peers = self
            .peers_heard
            .values()
            .filter(|&&heard| now_ms.saturating_sub(heard) <= PEER_HEARD_MS)
            .count();
        let mut port = EthPort {
            execution,
            mempool,
            history: &self.eth_history,
            peers,
            feeds: &mut self.eth_feeds,
            now_ms,
            dev: &self.eth_dev,
            within_rate: &mut within_rate,
        };
        if let Some(to) = request.subscriber {
            let _ = request.reply.send(port.subscribe(&request.params, to));
            return None;
        }
        let (answer, admitted) = port.handle(request.method, &request.params);
        let _ = request.reply.send(answer);
        let item = admitted?;
        let list = txport::encode_list(std::iter::once(item.bytes()));
        Some(consensus::host::app_frame(&list))
    }

    /// Admits one batch of client frames (each within its connection's rate) and answers
    /// each; returns the frame forwarding the admitted ones and `actions` (chain actions
    /// pooled from clients, tagged).
    fn admit_from_clients(
        &mut self,
        frames: Vec<(Sender, Vec<u8>)>,
        actions: &[Vec<u8>],
        now_ns: u64,
    ) -> Option<Frame> {
        let now_ms = now_ns / MS;
        let (frames, limited): (Vec<_>, Vec<_>) = frames
            .into_iter()
            .partition(|(sender, _)| self.rates.allow(sender.connection(), now_ms));
        for (sender, bytes) in limited {
            let hash = TxHash::of(&bytes);
            self.answer(sender, hash, Answer::Refused(txport::CODE_RATE_LIMITED));
        }
        let (frames, accounts, over) = self.within_account_rates(frames, now_ms);
        for (sender, bytes) in over {
            let hash = TxHash::of(&bytes);
            let code = txport::CODE_ACCOUNT_RATE_LIMITED;
            self.answer(sender, hash, Answer::Refused(code));
        }
        let items: Vec<&[u8]> = frames.iter().map(|(_, b)| b.as_slice()).collect();
        let results = {
            let Shared {
                mempool, execution, ..
            } = self.shared.get_mut();
            mempool.admit_many(&items, now_ms, &*execution)
        };
        let mut forward: Vec<&[u8]> = actions.iter().map(Vec::as_slice).collect();
        for (((sender, bytes), account), result) in frames.iter().zip(accounts).zip(results) {
            match result {
                Ok(hash) => {
                    if let Some(account) = account {
                        self.account_rates.take(&account);
                    }
                    forward.push(bytes);
                    self.awaiting.insert(hash, *sender);
                    self.answer(*sender, hash, Answer::Admitted);
                }
                Err(refusal) => {
                    let hash = TxHash::of(bytes);
                    // Pooled here already, but nobody here waits for it: a peer forwarded
                    // it, and its sender resends it after losing that validator. It is
                    // this sender's now (docs/protocol.md, "Failover to another validator").
                    if refusal == mempool::Refusal::Duplicate && !self.awaiting.contains_key(&hash)
                    {
                        self.awaiting.insert(hash, *sender);
                        self.answer(*sender, hash, Answer::Admitted);
                        continue;
                    }
                    let code = match bytes.is_empty() {
                        true => txport::CODE_FRAME_LENGTH,
                        false => txport::refusal_code(&refusal),
                    };
                    self.answer(*sender, hash, Answer::Refused(code));
                }
            }
        }
        (!forward.is_empty())
            .then(|| consensus::host::app_frame(&txport::encode_list(forward.into_iter())))
    }

    /// Splits client frames into those within their account's rate (at most the tokens its
    /// bucket holds now; a token is taken only when one is admitted), with the account each
    /// names, and those over it. Frames that name no account go on, for admission to refuse.
    fn within_account_rates(
        &mut self,
        frames: Vec<ClientFrame>,
        now_ms: u64,
    ) -> (Vec<ClientFrame>, Vec<Option<AccountId>>, Vec<ClientFrame>) {
        if now_ms >= self.account_rates_pruned_ms.saturating_add(1_000) {
            self.account_rates.forget_idle(now_ms);
            self.account_rates_pruned_ms = now_ms;
        }
        let mut left: HashMap<AccountId, u64> = HashMap::new();
        let (mut within, mut accounts, mut over) = (Vec::new(), Vec::new(), Vec::new());
        for frame in frames {
            let account = claimed_account(&frame.1);
            let allowed = account.is_none_or(|account| {
                let tokens = left
                    .entry(account)
                    .or_insert_with(|| self.account_rates.available(account, now_ms));
                let allowed = *tokens > 0;
                *tokens = tokens.saturating_sub(1);
                allowed
            });
            match allowed {
                true => {
                    within.push(frame);
                    accounts.push(account);
                }
                false => over.push(frame),
            }
        }
        (within, accounts, over)
    }

    /// Tells a transaction's sender what became of it: a transaction-port notice, or a
    /// gateway `TransactionStatus` (a gateway session hears of its execution through the
    /// block's outputs instead of `finalized`).
    fn answer(&mut self, sender: Sender, hash: TxHash, answer: Answer) {
        match sender {
            Sender::Port(id) => {
                let (kind, code, height) = match answer {
                    Answer::Admitted => (NoticeKind::Admitted, 0, 0),
                    Answer::Refused(code) => (NoticeKind::Refused, code, 0),
                    Answer::Finalized(height) => (NoticeKind::Finalized, 0, height),
                    Answer::Evicted(code) => (NoticeKind::Evicted, code, 0),
                };
                let notice = Notice {
                    kind,
                    code,
                    hash,
                    height,
                };
                self.notify(id, &notice);
            }
            Sender::Json(id, line) => {
                let status = match answer {
                    Answer::Admitted => LineStatus::Admitted,
                    Answer::Refused(code) => LineStatus::Refused(txport::code_name(code)),
                    Answer::Evicted(code) => LineStatus::Evicted(txport::code_name(code)),
                    Answer::Finalized(_) => return,
                };
                if let Some(json) = self.json.as_mut() {
                    json.status(id, line, &hex(&hash.0), status);
                }
            }
            Sender::Gateway(client) => {
                let (status, code) = match answer {
                    Answer::Admitted => (TX_ADMITTED, 0),
                    Answer::Refused(code) => (TX_REFUSED, code),
                    Answer::Evicted(code) => (TX_EVICTED, code),
                    Answer::Finalized(_) => return,
                };
                if let Some(gateway) = &self.gateway {
                    gateway.send(ToGateway::Status {
                        client,
                        hash: hash.0,
                        status,
                        code: code.into(),
                    });
                }
            }
        }
    }

    /// Queues a notice for a client; a client whose queue is full is dropped (slow).
    fn notify(&mut self, id: u64, notice: &Notice) {
        let Some(outbox) = self.clients.get(&id) else {
            return;
        };
        if outbox.try_send(notice.encode()).is_err() {
            self.clients.remove(&id);
        }
    }

    /// Executes a decided block (durable already; the host checked its parent root), feeds
    /// its results to the gateway and the JSON port, tells the clients of its transactions,
    /// logs height and execution root (unless `recovering` it from the block file), and
    /// writes a snapshot every `snapshot_every` blocks. Returns the execution root after it.
    fn apply_decided(
        &mut self,
        cert: &CommitCertificate,
        chain: &ChainState,
        recovering: bool,
        now_ns: u64,
    ) -> Result<Hash, HostError> {
        let consensus = &execution::ConsensusState::from(chain);
        let block = &cert.block;
        let height = block.height;
        let DecidedItems {
            items: txs,
            check_us,
            sigs_checked,
        } = self
            .shared
            .get_mut()
            .decided_items(&block.payload)
            .map_err(|what| HostError::BadPayload { height, what })?;
        if let Some(forged) = self.forged.as_mut() {
            forged.note_executed(&txs);
        }
        let refs: Vec<&SignedTransaction> = txs.iter().filter_map(BlockItem::core).collect();
        let hashes: Vec<TxHash> = refs.iter().map(|tx| tx.hash()).collect();
        let (start, cpu_start) = (std::time::Instant::now(), thread_cpu_ns());
        let root = self.execute_items(height, &txs, &hashes, consensus)?;
        let exec_us = micros_since(start);
        let exec_cpu_us = thread_cpu_ns().saturating_sub(cpu_start) / 1_000;
        let shared = self.shared.get_mut();
        shared.block_time_ms = (block.timestamp_ns / MS).max(shared.block_time_ms);
        let evm_included = evm_item_hashes(&txs);
        let (evicted, evm_evicted) = {
            let Shared {
                mempool, execution, ..
            } = shared;
            let evm_evicted = mempool.on_evm_block(&evm_included, &*execution);
            (
                mempool.on_block(&refs, now_ns / MS, &*execution),
                evm_evicted,
            )
        };
        self.note_evm_evicted(height, evm_evicted)?;
        let orders: usize = refs.iter().map(|tx| tx.tx.actions.len()).sum();
        self.notify_block(height, hashes, evicted);
        // The `final` line is built only if it is printed (not on `nexus run`).
        if !recovering && !self.quiet_blocks {
            log_line(json!({
                "event": "final", "index": self.index, "height": height, "round": cert.round,
                "txs": refs.len(), "orders": orders, "evm_txs": evm_included.len(),
                "ts_ns": block.timestamp_ns, "decided_ns": now_ns,
                "check_us": check_us, "sigs_checked": sigs_checked, "exec_us": exec_us,
                "exec_cpu_us": exec_cpu_us, "root": hex(&root.0),
                "compact": compact_line(&self.compact_stats),
            }))?;
        }
        let snapshot_due = self.snapshot_every > 0 && height.is_multiple_of(self.snapshot_every);
        if !recovering && snapshot_due {
            self.write_snapshot(cert, root, chain)?;
        }
        Ok(root)
    }

    /// Validates and executes a decided block's items, numbering its inputs and handing
    /// their results to the gateway (every event, level changes) and the JSON port (its own
    /// lines' results, and events of followed accounts).
    fn execute_items(
        &mut self,
        height: Height,
        txs: &[BlockItem],
        hashes: &[TxHash],
        consensus: &execution::ConsensusState,
    ) -> Result<Hash, HostError> {
        let mut feed = BlockFeed::new(self.inputs_executed, height, hashes.len());
        if self.gateway.is_some() {
            feed.senders = hashes
                .iter()
                .map(|h| match self.awaiting.get(h) {
                    Some(Sender::Gateway(client)) => *client,
                    _ => NOBODY,
                })
                .collect();
        }
        let watched = self.json.as_ref().is_some_and(JsonPort::has_watchers);
        let mut json_block = JsonBlock::new(hashes, &self.awaiting, watched);
        let core_index = core_positions(txs);
        let shared = self.shared.get_mut();
        // Signatures were checked by check_payload just before, which remembered the EVM
        // senders it recovered.
        let senders = |h: &alloy_primitives::B256| shared.mempool.evm_sender(h);
        let valid = shared
            .execution
            .validate_block_with(
                shared.block_time_ms,
                txs,
                &vec![Ok(()); hashes.len()],
                &senders,
            )
            .map_err(|e| HostError::BadPayload {
                height,
                what: e.to_string(),
            })?;
        let executed = shared
            .execution
            .execute_block(valid, consensus, |origin, event| {
                let origin = match origin {
                    execution::Origin::Tx { index, action } => execution::Origin::Tx {
                        index: core_index.get(index).copied().flatten().unwrap_or(index),
                        action,
                    },
                    other => other,
                };
                let seq = feed.event(origin, event);
                json_block.note(origin, seq, event);
            });
        let mut executed = executed.map_err(|error| HostError::Registry { height, error })?;
        let root = executed.root;
        let undo = std::mem::take(&mut executed.evm.undo);
        self.eth_history.push(&executed.evm, undo);
        self.eth_feeds.on_block(&self.eth_history);
        let first_seq = self.inputs_executed + 1;
        self.inputs_executed = feed.inputs_executed();
        let calls: Vec<_> = executed
            .calls
            .iter()
            .filter_map(|call| {
                let index = core_index.get(call.index).copied().flatten()?;
                Some((index, (call.action, call.coprocessor, call.result)))
            })
            .collect();
        for &(index, (action, coprocessor, result)) in &calls {
            feed.call(index, (action as u16, coprocessor, result));
        }
        if let Some(gateway) = &self.gateway {
            let mut changes = Vec::new();
            shared.execution.drain_level_changes(&mut changes);
            gateway.send(ToGateway::Block {
                height,
                block_time_ms: shared.block_time_ms,
                outputs: feed.finish(changes),
            });
        }
        if let Some(json) = self.json.as_mut() {
            json_block.deliver(json, calls, (first_seq, height));
        }
        Ok(Hash(root))
    }

    /// EVM transactions the pool evicted after block `height`: nobody is connected to
    /// tell (a client polls), so each is logged (`evm_evicted`) and remembered for
    /// `eth_getTransactionByHash`, which answers with the reason.
    fn note_evm_evicted(
        &mut self,
        height: Height,
        evicted: Vec<mempool::EvmEvicted>,
    ) -> Result<(), HostError> {
        for gone in evicted {
            let mempool::EvmRefusal::Tx(reason) = gone.reason else {
                continue;
            };
            self.event(json!({
                "event": "evm_evicted", "index": self.index, "height": height,
                "hash": format!("{:#x}", gone.eth_hash), "reason": reason.to_string(),
            }))?;
            let drop = evm_bridge::executor::DroppedTx {
                hash: gone.eth_hash,
                sender: gone.sender,
                nonce: gone.nonce,
                reason,
            };
            self.eth_history.note_dropped(height, drop);
        }
        Ok(())
    }

    /// `finalized` to the clients of a block's transactions, `evicted` to those of pooled
    /// transactions that can no longer be included.
    fn notify_block(&mut self, height: Height, hashes: Vec<TxHash>, evicted: Vec<Evicted>) {
        for hash in hashes {
            if let Some(sender) = self.awaiting.remove(&hash) {
                self.answer(sender, hash, Answer::Finalized(height));
            }
        }
        for gone in evicted {
            if let Some(sender) = self.awaiting.remove(&gone.hash) {
                let code = txport::refusal_code(&gone.reason);
                self.answer(sender, gone.hash, Answer::Evicted(code));
            }
        }
    }

    /// Takes the executed state after block `cert` (execution root `root`) and the chain
    /// state after it, and hands them to the snapshot writer (which encodes and writes them
    /// off the loop; [`NodeApp::take_snapshots_written`] reports them once durable). If the
    /// previous snapshot is still being written, this waits for it.
    fn write_snapshot(
        &mut self,
        cert: &CommitCertificate,
        root: Hash,
        chain: &ChainState,
    ) -> Result<(), HostError> {
        let started = std::time::Instant::now();
        let shared = self.shared.get_mut();
        let snapshot = Snapshot {
            height: cert.block.height,
            exec_root: root.0,
            inputs_executed: self.inputs_executed,
            block_time_ms: shared.block_time_ms,
            block_id: cert.block.id().0,
            block_timestamp_ns: cert.block.timestamp_ns,
            execution: Vec::new(),
            chain: chain.encode(),
        };
        let execution = shared.execution.image();
        let image_us = micros_since(started);
        let job = SnapshotJob {
            snapshot,
            execution,
        };
        // A previous snapshot still being written is waited for (logged as `waited_for`).
        let waited_for = self.snapshot_writer.pending();
        let previous = self
            .snapshot_writer
            .submit(job)
            .map_err(|e| HostError::Io(self.snapshots.clone(), e))?;
        if let Some(report) = previous {
            self.note_written(report)?;
        }
        self.event(json!({
            "event": "snapshot_taken", "index": self.index, "height": cert.block.height,
            "image_us": image_us, "loop_us": micros_since(started), "waited_for": waited_for,
        }))
    }

    /// Snapshots durably written since the last call (logged, oldest first); an error if
    /// writing one failed. `wait`: first wait for the one being written, if any.
    pub(super) fn take_snapshots_written(&mut self, wait: bool) -> Result<Vec<Height>, HostError> {
        let report = if wait {
            self.snapshot_writer.wait()
        } else {
            self.snapshot_writer.poll()
        };
        if let Some(report) = report {
            self.note_written(report)?;
        }
        Ok(std::mem::take(&mut self.snapshots_written))
    }

    /// Logs a snapshot the writer reports, and keeps its height for the shell.
    fn note_written(&mut self, report: std::io::Result<Written>) -> Result<(), HostError> {
        let written = report.map_err(|e| HostError::Io(self.snapshots.clone(), e))?;
        self.snapshots_written.push(written.height);
        self.event(json!({
            "event": "snapshot", "index": self.index, "height": written.height,
            "bytes": written.bytes, "path": written.path.display().to_string(),
            "write_ms": written.write_ms,
        }))
    }

    /// Opens `snapshot` (from a peer, or kept after a state sync) without installing it:
    /// its execution state must restore to its recorded root, and its chain state must
    /// decode, be of its height and `chain_id`, and hash to the consensus digest that
    /// execution state commits to.
    pub(super) fn open_snapshot(
        &self,
        snapshot: &Snapshot,
        chain_id: &[u8; 32],
    ) -> Result<(Execution, ChainState), String> {
        let mut execution = Execution::restore(self.execution_config.clone(), &snapshot.execution)
            .map_err(|e| format!("the snapshot does not restore: {e}"))?;
        if execution.root() != snapshot.exec_root {
            return Err("the snapshot's state has another root than it names".into());
        }
        let digest = execution.consensus_digest();
        let chain =
            state_sync::chain_state(snapshot, digest, chain_id).map_err(|e| e.to_string())?;
        Ok((execution, chain))
    }

    /// Makes `execution` (restored from `snapshot`) this validator's state.
    pub(super) fn install_execution(&mut self, execution: Execution, snapshot: &Snapshot) {
        self.eth_history = EthHistory::new(
            execution.evm().head(),
            self.eth_history.capacity(),
            self.eth_history.state_blocks(),
        );
        let shared = self.shared.get_mut();
        shared.execution = execution;
        shared.block_time_ms = snapshot.block_time_ms;
        self.inputs_executed = snapshot.inputs_executed;
    }

    /// This validator's proposal payload: what its pool holds (arrival order).
    /// The payload of a proposal made at `now_ms`, and its compact form if proposals go
    /// compact and it names anything (`compact::named`).
    fn proposal_payload(&self, now_ms: u64) -> (Vec<u8>, Option<Vec<u8>>) {
        let forged = self.forged.as_ref().and_then(|f| f.item.as_deref());
        let shared = self.shared.borrow();
        let budget = shared
            .max_block_bytes
            .saturating_sub(4 + 4 * shared.max_block_txs);
        let pending = shared
            .mempool
            .proposal(shared.max_block_txs, budget, &shared.execution);
        // EVM items after the Core ones, within what is left of the block's limits and the
        // EVM gas share (so the proposal is a valid block).
        let used: usize = pending.iter().map(|tx| tx.bytes().len()).sum();
        let evm = shared.mempool.evm_proposal(
            shared
                .max_block_txs
                .saturating_sub(pending.len() + usize::from(forged.is_some())),
            budget.saturating_sub(used),
            mempool::EvmView::evm_gas_share(&shared.execution),
        );
        let items: Vec<&[u8]> = forged
            .into_iter()
            .chain(pending.iter().map(|tx| tx.bytes()))
            .chain(evm.iter().map(|item| item.bytes()))
            .collect();
        let first_core = usize::from(forged.is_some());
        let named = |i: usize| {
            let tx = pending.get(i.checked_sub(first_core)?)?;
            let (_, admission) = shared.mempool.pooled(&tx.hash())?;
            compact::named(admission, now_ms).then(|| tx.hash())
        };
        let compact = self
            .compact_proposals
            .then(|| compact::compact(&items, named))
            .flatten();
        (txport::encode_list(items.iter().copied()), compact)
    }
}

/// The host's compact-proposal counters as the `final` line carries them (totals since
/// the validator started).
fn compact_line(c: &consensus::host::CompactStats) -> serde_json::Value {
    json!({
        "sent": c.sent, "sent_full": c.sent_full, "bytes_sent": c.bytes_sent,
        "bytes_full": c.bytes_full, "rebuilt": c.rebuilt, "missing": c.missing,
        "asked": c.asked, "served": c.served,
    })
}

/// A client's transaction bytes and who sent them.
type ClientFrame = (Sender, Vec<u8>);

/// The account a transaction's bytes name in their signer field (docs/transactions.md: the
/// key at offset 36), unchecked: for rate limits before the signature is verified.
fn claimed_account(bytes: &[u8]) -> Option<AccountId> {
    let key: &[u8; 32] = bytes.get(36..68)?.try_into().ok()?;
    Some(transactions::account_id_of(key))
}
