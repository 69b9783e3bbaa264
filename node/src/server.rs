//! `nexus pipeline`: the unreplicated exchange pipeline (no consensus, no signatures, no
//! EVM; the chain is `nexus run`, [`crate::chain_run`]). The JSON Lines order-entry port in
//! front of the pipeline (sequencer, engine, WAL writer, publisher), on one mio event loop.
//!
//! Per connection, every command line gets, in order: its events (`accepted`, `fill`, ... as
//! in `nexus replay`, with `seq` = the global sequence number and `line` = the line's number
//! on this connection), then `{"ev":"sequenced",...}`, and once its block is durable
//! `{"ev":"finalized",...}`. Lines the node refuses before sequencing (malformed, too long,
//! overloaded, registry ops) get one `rejected` or `error` with `line` and no `seq`.
//! The protocol is in docs/pipeline.md.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::{AccountId, ArrayLadder, Command, Engine, EngineConfig, Event, Side};
use gateway::market_data::{MarketData, MarketDataConfig};
use gateway::order_entry::{OrderEntryConfig, GATEWAY_CLIENT_BIT};
use gateway::server::{GatewayConfig, GatewayServer};
use json_lines::queries;
use json_lines::replay::{Echo, Output, Step, Translator};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use sequencer::{
    hex, recover, ClientRef, DataDirLock, Output as PipelineOutput, Pipeline, PipelineConfig,
    SequencerConfig, StageWaits, Submission, Wal, WalError, WalOptions,
};
use serde_json::{json, Value};

use crate::config::NodeConfig;
use crate::genesis::{ensure_genesis, genesis_lines, GenesisError};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONNECTION: usize = 2;
/// The binary gateway's tokens start here (JSON connections stay below).
const GATEWAY_TOKENS: usize = 1 << 24;
/// A connection whose unsent output passes this is not reading: it is disconnected.
const MAX_PENDING_OUTPUT_BYTES: usize = 16 << 20;

/// Why the node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The log could not be opened, recovered or written.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The genesis is invalid or does not match the log.
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    /// A socket operation failed.
    #[error("network: {0}")]
    Io(#[from] io::Error),
    /// Another process holds the data folder, or it cannot be locked.
    #[error(transparent)]
    Lock(#[from] sequencer::LockError),
    /// The pipeline reported a fatal error (the log failed while running).
    #[error("pipeline failed: {0}")]
    Fatal(String),
}

/// What the node reports once it is serving (printed as one JSON line by `nexus pipeline`).
#[derive(Debug, Clone)]
pub struct Ready {
    /// The bound JSON Lines order-entry address.
    pub listen: SocketAddr,
    /// The bound binary order-entry address.
    pub order_entry: SocketAddr,
    /// The bound market-data address.
    pub market_data: SocketAddr,
    /// Last block recovered from the log.
    pub height: u64,
    /// Sequence number the next input gets.
    pub next_seq: u64,
    /// State root after recovery.
    pub state_root: [u8; 32],
}

/// What the node reports when it stops.
#[derive(Debug, Clone)]
pub struct Stopped {
    /// Last block cut (all durable).
    pub height: u64,
    /// State root at the end.
    pub state_root: [u8; 32],
}

fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The node's state as opened from its data folder.
pub struct NodeState {
    /// Held for as long as the node runs: no other process may use the folder meanwhile.
    pub lock: DataDirLock,
    /// The log.
    pub wal: Wal,
    /// Names of assets and markets, from the genesis.
    pub translator: Translator,
    /// The engine and chain tip recovered from the log.
    pub recovered: sequencer::Recovered,
}

/// Locks the data folder, opens the log and recovers the engine and translator, writing the
/// genesis on a new log. The lock comes first: a folder another process holds is neither
/// read nor written.
pub fn open_node_state(config: &NodeConfig) -> Result<NodeState, NodeError> {
    let lock = DataDirLock::acquire(&config.data_dir)?;
    let wal = Wal::open(
        &config.data_dir,
        WalOptions {
            map_size_bytes: config.wal.map_size_mib << 20,
            sync: config.wal.sync,
        },
    )?;
    let translator = ensure_genesis(&wal, &genesis_lines(&config.genesis), wall_clock_ns())?;
    let engine_config = EngineConfig {
        max_resting_orders: config.engine.max_resting_orders,
        max_open_orders_per_account: config.engine.max_open_orders_per_account,
    };
    let recovered = recover(&wal, engine_config)?;
    Ok(NodeState {
        lock,
        wal,
        translator,
        recovered,
    })
}

/// A submitted line awaiting its `sequenced`.
#[derive(Clone)]
struct InFlight {
    line: u64,
    market: Option<usize>,
    echo: Echo,
    /// Records sent just before its `sequenced` (a deposit's new balance, say), computed
    /// right after it executed.
    extra: Vec<Value>,
    /// Replies to later query lines, sent right after its `sequenced` so that replies come
    /// in line order (the answers already include this line's effects).
    after: Vec<Value>,
    /// What it lacked, if the engine refused it for insufficient balance or margin: added to
    /// its `rejected` record as `asset`, `needed` and `available`.
    shortfall: Option<engine::Shortfall>,
}

/// Most accounts one JSON connection follows (acted for or subscribed to).
const MAX_ACCOUNTS_PER_CONNECTION: usize = 64;

/// One client connection.
struct Connection {
    stream: TcpStream,
    /// Distinguishes this connection from earlier ones in the same slot.
    serial: u32,
    read_buffer: Vec<u8>,
    /// Skipping the rest of an over-long line.
    discarding: bool,
    write_buffer: Vec<u8>,
    written: usize,
    lines: u64,
    /// Submitted lines awaiting `sequenced`, in order.
    in_flight: VecDeque<InFlight>,
    /// Sequenced lines still awaiting `finalized`.
    awaiting_final: u64,
    /// The peer closed its sending side: the connection closes once every reply it is owed
    /// (`sequenced` and `finalized` of each line) is written.
    read_closed: bool,
    /// Accounts whose events this connection receives (see [`Server::watch`]).
    accounts: Vec<AccountId>,
    writable_registered: bool,
    closing: bool,
}

impl Connection {
    /// Whether every reply owed to a half-closed peer has been produced.
    fn owes_nothing(&self) -> bool {
        self.in_flight.is_empty() && self.awaiting_final == 0
    }
}

/// The node's event loop state.
struct Server {
    poll: Poll,
    listener: TcpListener,
    connections: Vec<Option<Connection>>,
    next_serial: u32,
    translator: Translator,
    pipeline: Option<Pipeline>,
    max_connections: usize,
    max_line_bytes: usize,
    height: u64,
    state_root: [u8; 32],
    outputs: Vec<Output>,
    gateway: GatewayServer,
    /// JSON connections (slot, serial) following each account.
    watchers: BTreeMap<AccountId, Vec<(usize, u32)>>,
    status: StatusCounters,
}

/// The client of inputs the node makes itself (funding): no connection has it, so their
/// results go to no one (they are in the log and the market-data feed).
const SYSTEM_CLIENT: ClientRef = ClientRef {
    connection: u32::MAX as u64,
    tag: 0,
};

/// When the node sequences funding inputs: every `interval`, one per perp market.
struct FundingSchedule {
    markets: Vec<engine::MarketId>,
    interval: Duration,
    next: std::time::Instant,
    /// Markets of the current round still to submit (the input ring may be full).
    pending: Vec<engine::MarketId>,
}

impl FundingSchedule {
    fn new(engine: &Engine<ArrayLadder>, interval_s: u64) -> Option<FundingSchedule> {
        let markets: Vec<_> = engine
            .markets()
            .filter(|&market| engine.perp_market(market).is_some())
            .collect();
        if interval_s == 0 || markets.is_empty() {
            return None;
        }
        let interval = Duration::from_secs(interval_s);
        Some(FundingSchedule {
            markets,
            interval,
            next: std::time::Instant::now() + interval,
            pending: Vec::new(),
        })
    }

    /// Submits what is due; what the pipeline refuses is tried again on the next call.
    fn run(&mut self, pipeline: &mut Pipeline) {
        let now = std::time::Instant::now();
        if now >= self.next {
            self.next += self.interval;
            self.pending.extend(self.markets.iter().rev());
        }
        while let Some(&market) = self.pending.last() {
            let submission = Submission {
                client: SYSTEM_CLIENT,
                command: engine::Command::Funding { market },
                received_ns: pipeline.now_ns(),
            };
            if pipeline.try_submit(submission).is_err() {
                return;
            }
            self.pending.pop();
        }
    }
}

/// Counters behind the periodic status line on stderr (`[log] status_interval_s`).
struct StatusCounters {
    /// `None`: no status lines.
    interval: Option<Duration>,
    since: std::time::Instant,
    json_inputs: u64,
    binary_inputs: u64,
    /// Order-to-ack (received to `Sequenced` handed out), microseconds.
    ack_us: hdrhistogram::Histogram<u64>,
}

impl StatusCounters {
    fn new(interval_s: u64) -> StatusCounters {
        StatusCounters {
            interval: (interval_s > 0).then(|| Duration::from_secs(interval_s)),
            since: std::time::Instant::now(),
            json_inputs: 0,
            binary_inputs: 0,
            ack_us: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2)
                .expect("valid histogram bounds"),
        }
    }

    /// Counts one executed input and its order-to-ack latency.
    fn record_input(&mut self, latency_ns: u64, binary: bool) {
        if binary {
            self.binary_inputs += 1;
        } else {
            self.json_inputs += 1;
        }
        if self.interval.is_some() {
            self.ack_us.saturating_record((latency_ns / 1_000).max(1));
        }
    }

    /// The status line if one is due (then the counters restart).
    fn take_line(&mut self, height: u64, connections: [usize; 3]) -> Option<String> {
        let interval = self.interval?;
        let elapsed = self.since.elapsed();
        if elapsed < interval {
            return None;
        }
        let seconds = elapsed.as_secs_f64();
        let inputs = self.json_inputs + self.binary_inputs;
        let percentile = |q: f64| {
            if self.ack_us.is_empty() {
                "-".to_string()
            } else {
                self.ack_us.value_at_quantile(q).to_string()
            }
        };
        let line = format!(
            "nexus status: height {height}, {:.0} inputs/s ({} json, {} binary), connections {} json / {} order entry / {} market data, order-to-ack p50 {} us p99 {} us",
            inputs as f64 / seconds,
            self.json_inputs,
            self.binary_inputs,
            connections[0],
            connections[1],
            connections[2],
            percentile(0.5),
            percentile(0.99),
        );
        self.since = std::time::Instant::now();
        self.json_inputs = 0;
        self.binary_inputs = 0;
        self.ack_us.reset();
        Some(line)
    }
}

fn client_ref(slot: usize, serial: u32, line: u64) -> ClientRef {
    ClientRef {
        connection: ((serial as u64) << 32) | slot as u64,
        tag: line,
    }
}

/// Writes one JSON line into a connection's buffer.
fn send(connection: &mut Connection, value: &Value) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut connection.write_buffer, value);
    connection.write_buffer.push(b'\n');
}

/// A translator output as the node sends it: `line` added (absent for events of a followed
/// account that another connection caused), `seq` set to the global sequence number (or
/// removed when the line was never sequenced).
pub(crate) fn node_record(output: &Output, line: Option<u64>, seq: Option<u64>) -> Value {
    let mut value = serde_json::to_value(output).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        match seq {
            Some(seq) => {
                map.insert("seq".into(), seq.into());
            }
            None => {
                map.remove("seq");
            }
        }
        map.remove("line");
        if let Some(line) = line {
            map.insert("line".into(), line.into());
        }
    }
    value
}

/// A reply with `line` added after `ev`.
pub(crate) fn with_line(reply: Value, line: u64) -> Value {
    let Value::Object(map) = reply else {
        return reply;
    };
    let mut out = serde_json::Map::new();
    for (key, value) in map {
        let first = key == "ev";
        out.insert(key, value);
        if first {
            out.insert("line".into(), line.into());
        }
    }
    Value::Object(out)
}

/// Whether `event` is a refusal for insufficient balance or margin.
fn is_shortfall_reject(event: &Event) -> bool {
    matches!(
        event,
        Event::Rejected {
            reason: engine::RejectReason::InsufficientBalance
                | engine::RejectReason::InsufficientMargin,
            ..
        }
    )
}

/// The account a command acts for, if any.
fn command_account(command: &Command) -> Option<AccountId> {
    match *command {
        Command::Deposit { account, .. }
        | Command::Withdraw { account, .. }
        | Command::Cancel { account, .. }
        | Command::CancelAll { account, .. }
        | Command::Modify { account, .. }
        | Command::TransferCollateral { account, .. }
        | Command::SetLeverage { account, .. }
        | Command::IsolatedMargin { account, .. } => Some(account),
        Command::Place(order) => Some(order.account),
        _ => None,
    }
}

/// The accounts an event concerns, for routing to the connections that follow them.
/// Rejections concern only the sender; market-wide events (oracle, funding) nobody.
pub(crate) fn event_accounts(event: &Event) -> [Option<AccountId>; 2] {
    match *event {
        Event::Fill {
            taker_account,
            maker_account,
            ..
        } => [Some(taker_account), Some(maker_account)],
        Event::Accepted { account, .. }
        | Event::Canceled { account, .. }
        | Event::Modified { account, .. }
        | Event::Position { account, .. }
        | Event::Liquidation { account, .. }
        | Event::Adl { account, .. } => [Some(account), None],
        Event::Rejected { .. } | Event::OraclePrice { .. } | Event::Funding { .. } => [None, None],
    }
}

/// Records sent with an executed command's `sequenced` that its events do not carry: the
/// balance a deposit, withdrawal or collateral transfer left. Read from `engine` right after
/// the command ran (fused engine), so they are exactly the state it produced.
fn executed_extras(
    translator: &Translator,
    engine: &Engine<ArrayLadder>,
    command: &Command,
) -> Vec<Value> {
    let (account, asset) = match *command {
        Command::Deposit { account, asset, .. } | Command::Withdraw { account, asset, .. } => {
            (account, Some(asset))
        }
        Command::TransferCollateral { account, .. } => (account, None),
        _ => return Vec::new(),
    };
    queries::balance_record(translator, engine, account, asset)
        .into_iter()
        .collect()
}

impl Server {
    fn accept(&mut self) -> io::Result<()> {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, say: not the node's end; the next connect retries.
                    eprintln!("nexus: accept on the JSON port failed: {e}");
                    return Ok(());
                }
            };
            let open = self.connections.iter().filter(|c| c.is_some()).count();
            if open >= self.max_connections {
                let refusal = json!({"ev": "error", "reason": "too_many_connections",
                    "detail": format!("this node serves at most {} connections", self.max_connections)});
                let _ = stream.write_all(format!("{refusal}\n").as_bytes());
                tracing::warn!(peer = %peer, open, "JSON connection refused: too many connections");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let slot = match self.connections.iter().position(Option::is_none) {
                Some(slot) => slot,
                None => {
                    self.connections.push(None);
                    self.connections.len() - 1
                }
            };
            self.poll.registry().register(
                &mut stream,
                Token(FIRST_CONNECTION + slot),
                Interest::READABLE,
            )?;
            // 31 bits: bit 63 of a `ClientRef` marks the gateway's inputs.
            self.next_serial = self.next_serial.wrapping_add(1) & 0x7fff_ffff;
            self.connections[slot] = Some(Connection {
                stream,
                serial: self.next_serial,
                read_buffer: Vec::with_capacity(4096),
                discarding: false,
                write_buffer: Vec::new(),
                written: 0,
                lines: 0,
                in_flight: VecDeque::new(),
                awaiting_final: 0,
                read_closed: false,
                accounts: Vec::new(),
                writable_registered: false,
                closing: false,
            });
            tracing::info!(peer = %peer, slot, "JSON connection opened");
        }
    }

    /// Reads what a connection sent (at most `READ_BUDGET` chunks, so one busy client cannot
    /// starve the others or the replies) and handles every complete line. Returns true if the
    /// socket may still hold data: the caller must come back (mio reports edges only).
    fn readable(&mut self, slot: usize) -> bool {
        const READ_BUDGET: usize = 4;
        let mut chunk = [0u8; 16 * 1024];
        for _ in 0..READ_BUDGET {
            let Some(connection) = self.connections[slot].as_mut() else {
                return false;
            };
            if connection.read_closed {
                return false;
            }
            match connection.stream.read(&mut chunk) {
                Ok(0) => {
                    // A half-close: the peer still reads every reply it is owed.
                    connection.read_closed = true;
                    return false;
                }
                Ok(n) => {
                    connection.read_buffer.extend_from_slice(&chunk[..n]);
                    self.handle_lines(slot);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    connection.closing = true;
                    return false;
                }
            }
        }
        true
    }

    fn handle_lines(&mut self, slot: usize) {
        loop {
            let connection = self.connections[slot].as_mut().expect("open connection");
            let newline = connection.read_buffer.iter().position(|&b| b == b'\n');
            let Some(end) = newline else {
                if connection.read_buffer.len() > self.max_line_bytes {
                    // Too long already: answer now and skip to the next newline.
                    connection.lines += 1;
                    let line = connection.lines;
                    connection.read_buffer.clear();
                    if !connection.discarding {
                        connection.discarding = true;
                        let detail = format!("line longer than {} bytes", self.max_line_bytes);
                        send(
                            connection,
                            &json!({"ev": "error", "line": line, "reason": "too_long", "detail": detail}),
                        );
                    }
                }
                return;
            };
            let raw: Vec<u8> = connection.read_buffer[..=end].to_vec();
            connection.read_buffer.drain(..=end);
            if connection.discarding {
                connection.discarding = false;
                continue;
            }
            connection.lines += 1;
            let line = connection.lines;
            if raw.len() > self.max_line_bytes + 1 {
                let detail = format!("line longer than {} bytes", self.max_line_bytes);
                send(
                    connection,
                    &json!({"ev": "error", "line": line, "reason": "too_long", "detail": detail}),
                );
                continue;
            }
            let text = String::from_utf8_lossy(&raw);
            let text = text.trim_end_matches(['\n', '\r']);
            self.handle_line(slot, line, text);
        }
    }

    fn handle_line(&mut self, slot: usize, line: u64, text: &str) {
        if text.trim().is_empty() {
            return;
        }
        let request: Option<Value> = serde_json::from_str(text).ok();
        let op = request
            .as_ref()
            .and_then(|r| r.get("op"))
            .and_then(Value::as_str);
        if let (Some(op), Some(request)) = (op, request.as_ref()) {
            let reply = if queries::QUERY_OPS.contains(&op) {
                Some(self.query(request))
            } else if op == "subscribe" {
                Some(self.subscribe(slot, request))
            } else {
                None
            };
            if let Some(reply) = reply {
                let connection = self.connections[slot].as_mut().expect("open connection");
                let reply = with_line(reply, line);
                match connection.in_flight.back_mut() {
                    Some(previous) => previous.after.push(reply),
                    None => send(connection, &reply),
                }
                return;
            }
        }
        let connection = self.connections[slot].as_mut().expect("open connection");
        if Translator::is_registry_line(text) {
            send(
                connection,
                &json!({"ev": "error", "line": line, "reason": "not_allowed",
                "detail": "assets and markets are set by the genesis configuration"}),
            );
            return;
        }
        self.outputs.clear();
        let steps = self.translator.line(line, text, &mut self.outputs);
        for output in &self.outputs {
            send(connection, &node_record(output, Some(line), None));
        }
        for step in steps {
            match step {
                // Book lines are answered as queries above; this is only reached if the
                // two parsers ever disagree, and then the client is told, not the node stopped.
                Step::Book { .. } => send(
                    self.connections[slot].as_mut().expect("open connection"),
                    &json!({"ev": "error", "line": line, "reason": "malformed",
                    "detail": "book query not understood"}),
                ),
                Step::Run {
                    command,
                    market,
                    echo,
                } => self.submit_line(slot, line, command, market, echo),
            }
        }
    }

    /// Sequences one command of line `line`, or tells the client the node is overloaded.
    fn submit_line(
        &mut self,
        slot: usize,
        line: u64,
        command: Command,
        market: Option<usize>,
        echo: Echo,
    ) {
        let Some(pipeline) = self.pipeline.as_mut() else {
            return;
        };
        let connection = self.connections[slot].as_mut().expect("open connection");
        let submission = Submission {
            client: client_ref(slot, connection.serial, line),
            command: command.clone(),
            received_ns: pipeline.now_ns(),
        };
        if pipeline.try_submit(submission).is_err() {
            send(
                connection,
                &json!({"ev": "rejected", "line": line,
                "reason": "overloaded",
                "detail": "the node's input queue is full; nothing was done, send it again"}),
            );
            tracing::debug!(slot, line, "JSON line refused: overloaded");
            return;
        }
        // A fused engine has executed the command by now, and nothing after it.
        let engine = pipeline.fused_engine();
        let extra = engine
            .map(|engine| executed_extras(&self.translator, engine, &command))
            .unwrap_or_default();
        connection.in_flight.push_back(InFlight {
            line,
            market,
            echo,
            extra,
            after: Vec::new(),
            shortfall: engine.and_then(Engine::last_shortfall),
        });
        if let Some(account) = command_account(&command) {
            self.watch(slot, account);
        }
    }

    /// Answers a query from the engine's current state.
    fn query(&mut self, request: &Value) -> Value {
        let Some(engine) = self.pipeline.as_ref().and_then(Pipeline::fused_engine) else {
            return json!({"ev": "error", "reason": "not_supported",
                "detail": "queries need the engine on the event loop (pipeline.fused_engine = true and inline_sequencer = true, the default)"});
        };
        match queries::answer(&mut self.translator, engine, request) {
            Ok(reply) => reply,
            Err(e) => json!({"ev": "error", "reason": e.reason, "detail": e.detail}),
        }
    }

    /// `{"op":"subscribe","account":A}`: this connection receives account A's events.
    fn subscribe(&mut self, slot: usize, request: &Value) -> Value {
        let Some(value) = request.get("account") else {
            return json!({"ev": "error", "reason": "malformed",
                "detail": "missing field \"account\""});
        };
        let account = match self.translator.account_id(value) {
            Ok(account) => account,
            Err(detail) => return json!({"ev": "error", "reason": "malformed", "detail": detail}),
        };
        if !self.watch(slot, account) {
            return json!({"ev": "error", "reason": "too_many_accounts",
                "detail": format!("a connection follows at most {MAX_ACCOUNTS_PER_CONNECTION} accounts")});
        }
        json!({"ev": "subscribed", "account": value})
    }

    /// Makes connection `slot` receive `account`'s events. False if it follows too many.
    fn watch(&mut self, slot: usize, account: AccountId) -> bool {
        let connection = self.connections[slot].as_mut().expect("open connection");
        if connection.accounts.contains(&account) {
            return true;
        }
        if connection.accounts.len() >= MAX_ACCOUNTS_PER_CONNECTION {
            return false;
        }
        connection.accounts.push(account);
        self.watchers
            .entry(account)
            .or_default()
            .push((slot, connection.serial));
        true
    }

    /// Prints the status line on stderr when one is due.
    fn print_status(&mut self) {
        let json = self.connections.iter().flatten().count();
        let (order_entry, market_data) = self.gateway.connection_counts();
        if let Some(line) = self
            .status
            .take_line(self.height, [json, order_entry, market_data])
        {
            eprintln!("{line}");
        }
    }

    /// Forgets a closed connection's accounts.
    fn unwatch(&mut self, slot: usize, serial: u32, accounts: &[AccountId]) {
        for account in accounts {
            if let Some(list) = self.watchers.get_mut(account) {
                list.retain(|&(s, r)| (s, r) != (slot, serial));
                if list.is_empty() {
                    self.watchers.remove(account);
                }
            }
        }
    }

    /// Routes pipeline outputs to their connections.
    fn drain_outputs(&mut self) -> Result<(), NodeError> {
        while let Some(output) = self.pipeline.as_mut().and_then(Pipeline::poll_output) {
            self.route(output)?;
        }
        Ok(())
    }

    fn connection_for(&mut self, client: ClientRef) -> Option<&mut Connection> {
        let slot = (client.connection & 0xffff_ffff) as usize;
        let serial = (client.connection >> 32) as u32;
        self.connections
            .get_mut(slot)?
            .as_mut()
            .filter(|c| c.serial == serial)
    }

    fn route(&mut self, output: PipelineOutput) -> Result<(), NodeError> {
        self.gateway.on_output(&output);
        let json_client = |client: &ClientRef| {
            client.connection & GATEWAY_CLIENT_BIT == 0 && *client != SYSTEM_CLIENT
        };
        match output {
            PipelineOutput::Event { client, seq, event } => {
                let origin = if json_client(&client) {
                    self.reply_event(client, seq, &event)
                } else {
                    None
                };
                self.notify_watchers(origin, seq, &event);
            }
            PipelineOutput::Sequenced {
                client,
                seq,
                height,
                times,
            } => {
                let latency_ns = times.published_ns.saturating_sub(times.received_ns);
                self.status
                    .record_input(latency_ns, client.connection & GATEWAY_CLIENT_BIT != 0);
                if !json_client(&client) {
                    return Ok(());
                }
                if let Some(connection) = self.connection_for(client) {
                    let entry = connection.in_flight.pop_front();
                    connection.awaiting_final += 1;
                    let (extra, after) = entry.map(|e| (e.extra, e.after)).unwrap_or_default();
                    for record in extra {
                        send(connection, &with_line(record, client.tag));
                    }
                    send(
                        connection,
                        &json!({"ev": "sequenced", "seq": seq, "line": client.tag,
                        "height": height, "latency_us": latency_ns / 1_000}),
                    );
                    for reply in after {
                        send(connection, &reply);
                    }
                }
            }
            PipelineOutput::Finalized {
                client,
                seq,
                height,
            } => {
                if !json_client(&client) {
                    return Ok(());
                }
                if let Some(connection) = self.connection_for(client) {
                    connection.awaiting_final = connection.awaiting_final.saturating_sub(1);
                    send(
                        connection,
                        &json!({"ev": "finalized", "seq": seq, "line": client.tag,
                        "height": height}),
                    );
                }
            }
            PipelineOutput::BlockExecuted { height, state_root } => {
                self.height = height;
                self.state_root = state_root;
            }
            PipelineOutput::BlockDurable { .. }
            | PipelineOutput::Level { .. }
            | PipelineOutput::Call { .. } => {}
            PipelineOutput::Fatal(why) => return Err(NodeError::Fatal(why)),
        }
        Ok(())
    }

    /// Sends an event of line `client.tag` to the connection that sent it. Returns that
    /// connection (slot, serial) if it is still open.
    fn reply_event(&mut self, client: ClientRef, seq: u64, event: &Event) -> Option<(usize, u32)> {
        let connection = self.connection_for(client)?;
        let serial = connection.serial;
        let entry = connection.in_flight.front_mut()?;
        if matches!(event, Event::Rejected { .. }) {
            // A refused command changed nothing: no balance record goes with it.
            entry.extra.clear();
        }
        let (line, market, echo) = (entry.line, entry.market, entry.echo.clone());
        let shortfall = entry.shortfall.filter(|_| is_shortfall_reject(event));
        let mut records = std::mem::take(&mut self.outputs);
        records.clear();
        self.translator
            .render(seq, std::slice::from_ref(event), market, echo, &mut records);
        let shortfall = shortfall.and_then(|s| queries::shortfall_fields(&self.translator, &s));
        let connection = self.connection_for(client)?;
        for record in &records {
            let mut value = node_record(record, Some(line), Some(seq));
            if let (Some(fields), Value::Object(map)) = (&shortfall, &mut value) {
                map.extend(fields.clone());
            }
            send(connection, &value);
        }
        self.outputs = records;
        Some(((client.connection & 0xffff_ffff) as usize, serial))
    }

    /// Sends an event to every other JSON connection that follows an account it names
    /// (without `line`: it answers none of their lines). Each connection gets it once.
    fn notify_watchers(&mut self, origin: Option<(usize, u32)>, seq: u64, event: &Event) {
        let mut targets: Vec<(usize, u32)> = Vec::new();
        for account in event_accounts(event).into_iter().flatten() {
            for &target in self.watchers.get(&account).into_iter().flatten() {
                if Some(target) != origin && !targets.contains(&target) {
                    targets.push(target);
                }
            }
        }
        if targets.is_empty() {
            return;
        }
        let mut records = std::mem::take(&mut self.outputs);
        records.clear();
        self.translator.render(
            seq,
            std::slice::from_ref(event),
            None,
            Echo::default(),
            &mut records,
        );
        for (slot, serial) in targets {
            let Some(connection) = self.connections[slot]
                .as_mut()
                .filter(|c| c.serial == serial)
            else {
                continue;
            };
            for record in &records {
                send(connection, &node_record(record, None, Some(seq)));
            }
        }
        self.outputs = records;
    }

    /// Writes what each connection has pending; closes the ones that are done or stuck.
    fn flush_connections(&mut self) -> io::Result<()> {
        for slot in 0..self.connections.len() {
            let Some(connection) = self.connections[slot].as_mut() else {
                continue;
            };
            while connection.written < connection.write_buffer.len() {
                match connection
                    .stream
                    .write(&connection.write_buffer[connection.written..])
                {
                    Ok(0) => {
                        connection.closing = true;
                        break;
                    }
                    Ok(n) => connection.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        connection.closing = true;
                        break;
                    }
                }
            }
            if connection.written == connection.write_buffer.len() {
                connection.write_buffer.clear();
                connection.written = 0;
            }
            let pending = connection.write_buffer.len() - connection.written;
            if pending > MAX_PENDING_OUTPUT_BYTES {
                connection.closing = true;
            }
            let want_writable = pending > 0;
            if want_writable != connection.writable_registered && !connection.closing {
                let interest = if want_writable {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                self.poll.registry().reregister(
                    &mut connection.stream,
                    Token(FIRST_CONNECTION + slot),
                    interest,
                )?;
                connection.writable_registered = want_writable;
            }
            if connection.read_closed && connection.owes_nothing() {
                connection.closing = true;
            }
            if connection.closing && (pending == 0 || pending > MAX_PENDING_OUTPUT_BYTES) {
                let mut connection = self.connections[slot].take().expect("open connection");
                let _ = self.poll.registry().deregister(&mut connection.stream);
                self.unwatch(slot, connection.serial, &connection.accounts);
                tracing::info!(slot, lines = connection.lines, "JSON connection closed");
            }
        }
        Ok(())
    }
}

/// Runs a node until `stop` is set (or a fatal error). `ready` is called once it serves.
pub fn run(
    config: &NodeConfig,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(&Ready),
) -> Result<Stopped, NodeError> {
    let NodeState {
        lock: _lock,
        wal,
        translator,
        mut recovered,
    } = open_node_state(config)?;
    let state_root = recovered.engine.commit();
    let tip = recovered.tip;
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let mut listener = TcpListener::bind(config.ingress.listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let gateway = bind_gateway(config, &recovered.engine, poll.registry())?;
    let mut funding = FundingSchedule::new(&recovered.engine, config.perps.funding_interval_s);
    let pipeline_config = PipelineConfig {
        blocks: SequencerConfig {
            max_block_inputs: config.blocks.max_inputs.max(1),
            max_block_age_ns: config.blocks.max_age_us.saturating_mul(1_000),
        },
        ring_capacity: config.pipeline.ring_capacity,
        snapshot_every_blocks: config.pipeline.snapshot_every_blocks,
        waits: StageWaits {
            sequencer: config.pipeline.wait_sequencer.into(),
            engine: config.pipeline.wait_engine.into(),
            wal: config.pipeline.wait_wal.into(),
            publisher: config.pipeline.wait_publisher.into(),
        },
        pin_threads: config.pipeline.pin_threads,
        level_changes: true,
        inline_sequencer: config.pipeline.inline_sequencer,
        fused_engine: config.pipeline.fused_engine,
    };
    let (order_entry, market_data) = gateway.local_addrs()?;
    let notify_waker = waker.clone();
    let pipeline = Pipeline::start(
        recovered,
        wal,
        pipeline_config,
        Arc::new(move || {
            let _ = notify_waker.wake();
        }),
    );
    let mut server = Server {
        poll,
        listener,
        connections: Vec::new(),
        next_serial: 0,
        translator,
        pipeline: Some(pipeline),
        max_connections: config.ingress.max_connections,
        max_line_bytes: config.ingress.max_line_bytes,
        height: tip.next_height - 1,
        state_root,
        outputs: Vec::new(),
        gateway,
        watchers: BTreeMap::new(),
        status: StatusCounters::new(config.log.status_interval_s),
    };
    ready(&Ready {
        listen: server.listener.local_addr()?,
        order_entry,
        market_data,
        height: tip.next_height - 1,
        next_seq: tip.next_seq,
        state_root,
    });
    let mut events = Events::with_capacity(1024);
    // Connections that may still hold unread data (their read budget ran out).
    let mut unread: Vec<usize> = Vec::new();
    let mut last_tick = std::time::Instant::now();
    let result = loop {
        if stop.load(Ordering::Acquire) {
            break Ok(());
        }
        let timeout = if unread.is_empty() && !server.gateway.has_pending_work() {
            // With an inline sequencer, wake in time to cut the open block.
            let block_due = server.pipeline.as_ref().and_then(Pipeline::tick_due_in);
            block_due.map_or(Duration::from_millis(20), |due| {
                due.min(Duration::from_millis(20))
            })
        } else {
            Duration::ZERO
        };
        if let Err(e) = server.poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break Err(NodeError::Io(e));
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => server.accept()?,
                WAKER => {}
                token if server.gateway.owns(token) => {
                    server
                        .gateway
                        .handle(server.poll.registry(), token, event.is_writable())?;
                }
                Token(token) => {
                    let slot = token - FIRST_CONNECTION;
                    if (event.is_readable() || event.is_read_closed()) && !unread.contains(&slot) {
                        unread.push(slot);
                    }
                }
            }
        }
        let mut still_unread = Vec::new();
        for slot in unread.drain(..) {
            if server.readable(slot) {
                still_unread.push(slot);
            }
        }
        unread = still_unread;
        server.gateway.read_ready();
        if let Some(pipeline) = server.pipeline.as_mut() {
            server.gateway.submit(pipeline);
            if let Some(funding) = funding.as_mut() {
                funding.run(pipeline);
            }
            pipeline.tick();
        }
        if let Err(error) = server.drain_outputs() {
            break Err(error);
        }
        if last_tick.elapsed() >= Duration::from_millis(10) {
            last_tick = std::time::Instant::now();
            server.gateway.tick(server.poll.registry());
            server.print_status();
        }
        server.flush_connections()?;
        server.gateway.flush(server.poll.registry())?;
    };
    // Stop: run the gateway sessions' cancel-on-disconnect inputs while their connections are
    // still open (every session of the account hears of the cancels), persist the open
    // block, deliver what is left, log the sessions out, and report the final state.
    server.gateway.cancel_on_shutdown();
    if let Some(pipeline) = server.pipeline.as_mut() {
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while server.gateway.has_pending_work() && std::time::Instant::now() < deadline {
            server.gateway.submit(pipeline);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let pipeline = server.pipeline.take().expect("pipeline runs until here");
    let (mut engine, rest): (Engine<ArrayLadder>, _) = pipeline.shutdown();
    let mut height = server.height;
    for output in rest {
        if let PipelineOutput::BlockDurable {
            height: durable, ..
        } = output
        {
            height = height.max(durable);
        }
        let _ = server.route(output);
    }
    server.gateway.shutdown(server.poll.registry())?;
    // Give clients a moment to receive their last notices.
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    while std::time::Instant::now() < deadline {
        server.flush_connections()?;
        server.gateway.flush(server.poll.registry())?;
        let pending = server
            .connections
            .iter()
            .flatten()
            .any(|c| c.write_buffer.len() > c.written)
            || server.gateway.has_pending_output();
        if !pending {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    result?;
    Ok(Stopped {
        height,
        state_root: engine.commit(),
    })
}

/// Binds the gateway's ports, with the market-data books starting from the recovered engine.
fn bind_gateway(
    config: &NodeConfig,
    engine: &Engine<ArrayLadder>,
    registry: &mio::Registry,
) -> Result<GatewayServer, NodeError> {
    let markets: Vec<_> = engine.markets().collect();
    let books = markets.iter().map(|&market| {
        let mut levels = Vec::new();
        for side in [Side::Buy, Side::Sell] {
            let mut depth = Vec::new();
            engine.depth(market, side, usize::MAX, &mut depth);
            levels.extend(depth.into_iter().map(|(price, lots)| (side, price, lots)));
        }
        (market, levels)
    });
    let section = &config.gateway;
    let mut market_data = MarketData::new(
        MarketDataConfig {
            replay_messages: section.replay_messages,
            max_pending_bytes: section.max_pending_mib << 20,
            max_unsent_total_bytes: section.max_unsent_total_mib << 20,
            heartbeat_ns: 1_000_000_000,
            feed_epoch: wall_clock_ns(),
        },
        books,
    );
    // Each perp market's feed starts with its current mark (docs/protocol.md, "Snapshot").
    market_data.open_marks(engine);
    let gateway_config = GatewayConfig {
        order_entry_listen: section.order_entry_listen,
        market_data_listen: section.market_data_listen,
        max_connections: section.max_connections,
        order_entry: OrderEntryConfig {
            max_sessions: section.max_sessions,
            max_sessions_per_account: section.max_sessions_per_account,
            resend_messages: section.resend_messages,
            max_resend_total: section.max_resend_total,
            session_linger_ns: section.session_linger_s.saturating_mul(1_000_000_000),
            login_timeout_ns: section.login_timeout_s.saturating_mul(1_000_000_000),
            max_pending_bytes: section.max_pending_mib << 20,
            max_unsent_total_bytes: section.max_unsent_total_mib << 20,
            max_consecutive_rejects: 1000,
            markets: markets.clone(),
            chain_id: None,
        },
    };
    Ok(GatewayServer::bind(
        gateway_config,
        registry,
        GATEWAY_TOKENS,
        market_data,
    )?)
}

/// Lower-case hex of a root (re-exported for the binary's messages).
pub fn root_hex(root: &[u8; 32]) -> String {
    hex(root)
}
