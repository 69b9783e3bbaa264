//! `nexus run`: a single-validator node. The JSON Lines order-entry port in front of the
//! pipeline (sequencer, engine, WAL writer, publisher), on one mio event loop.
//!
//! Per connection, every command line gets, in order: its events (`accepted`, `fill`, ... as
//! in `nexus replay`, with `seq` = the global sequence number and `line` = the line's number
//! on this connection), then `{"ev":"sequenced",...}`, and once its block is durable
//! `{"ev":"finalized",...}`. Lines the node refuses before sequencing (malformed, too long,
//! overloaded, registry ops) get one `rejected` or `error` with `line` and no `seq`.
//! The protocol is in docs/node.md.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::{ArrayLadder, Engine, EngineConfig, Side};
use gateway::market_data::{MarketData, MarketDataConfig};
use gateway::order_entry::{OrderEntryConfig, GATEWAY_CLIENT_BIT};
use gateway::server::{GatewayConfig, GatewayServer};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use sequencer::{
    hex, recover, ClientRef, Output as PipelineOutput, Pipeline, PipelineConfig, SequencerConfig,
    StageWaits, Submission, Wal, WalError, WalOptions,
};
use serde_json::{json, Value};

use crate::config::NodeConfig;
use crate::genesis::{ensure_genesis, genesis_lines, GenesisError};
use crate::replay::{Echo, Output, Step, Translator};

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
    /// The pipeline reported a fatal error (the log failed while running).
    #[error("pipeline failed: {0}")]
    Fatal(String),
}

/// What the node reports once it is serving (printed as one JSON line by `nexus run`).
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

/// Opens the log and recovers the engine and translator, writing the genesis on a new log.
pub fn open_node_state(
    config: &NodeConfig,
) -> Result<(Wal, Translator, sequencer::Recovered), NodeError> {
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
    Ok((wal, translator, recovered))
}

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
    /// Submitted lines awaiting `sequenced`, in order: (line, market, echo).
    in_flight: VecDeque<(u64, Option<usize>, Echo)>,
    writable_registered: bool,
    closing: bool,
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

/// A translator output as the node sends it: `line` added, `seq` set to the global sequence
/// number (or removed when the line was never sequenced).
fn node_record(output: &Output, line: u64, seq: Option<u64>) -> Value {
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
        map.insert("line".into(), line.into());
    }
    value
}

impl Server {
    fn accept(&mut self) -> io::Result<()> {
        loop {
            let (mut stream, _) = match self.listener.accept() {
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
                writable_registered: false,
                closing: false,
            });
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
            match connection.stream.read(&mut chunk) {
                Ok(0) => {
                    connection.closing = true;
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
            send(connection, &node_record(output, line, None));
        }
        for step in steps {
            match step {
                Step::Book { .. } => send(
                    connection,
                    &json!({"ev": "error", "line": line,
                    "reason": "not_supported",
                    "detail": "book queries are served by the market-data feed, not this port"}),
                ),
                Step::Run {
                    command,
                    market,
                    echo,
                } => {
                    let submission = Submission {
                        client: client_ref(slot, connection.serial, line),
                        command,
                        received_ns: 0,
                    };
                    let Some(pipeline) = self.pipeline.as_mut() else {
                        return;
                    };
                    let submission = Submission {
                        received_ns: pipeline.now_ns(),
                        ..submission
                    };
                    match pipeline.try_submit(submission) {
                        Ok(()) => connection.in_flight.push_back((line, market, echo)),
                        Err(_) => send(
                            connection,
                            &json!({"ev": "rejected", "line": line,
                            "reason": "overloaded",
                            "detail": "the node's input queue is full; nothing was done, send it again"}),
                        ),
                    }
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
        let gateway_client = match &output {
            PipelineOutput::Event { client, .. }
            | PipelineOutput::Sequenced { client, .. }
            | PipelineOutput::Finalized { client, .. } => {
                client.connection & GATEWAY_CLIENT_BIT != 0
            }
            _ => false,
        };
        if gateway_client {
            return Ok(());
        }
        match output {
            PipelineOutput::Event { client, seq, event } => {
                let Some((line, market, echo)) = self
                    .connection_for(client)
                    .and_then(|connection| connection.in_flight.front().cloned())
                else {
                    return Ok(());
                };
                let mut records = std::mem::take(&mut self.outputs);
                records.clear();
                self.translator
                    .render(seq, &[event], market, echo, &mut records);
                if let Some(connection) = self.connection_for(client) {
                    for record in &records {
                        send(connection, &node_record(record, line, Some(seq)));
                    }
                }
                self.outputs = records;
            }
            PipelineOutput::Sequenced {
                client,
                seq,
                height,
                times,
            } => {
                if let Some(connection) = self.connection_for(client) {
                    connection.in_flight.pop_front();
                    let latency_us = (times.published_ns - times.received_ns) / 1_000;
                    send(
                        connection,
                        &json!({"ev": "sequenced", "seq": seq, "line": client.tag,
                        "height": height, "latency_us": latency_us}),
                    );
                }
            }
            PipelineOutput::Finalized {
                client,
                seq,
                height,
            } => {
                if let Some(connection) = self.connection_for(client) {
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
            PipelineOutput::BlockDurable { .. } | PipelineOutput::Level { .. } => {}
            PipelineOutput::Fatal(why) => return Err(NodeError::Fatal(why)),
        }
        Ok(())
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
            if connection.closing && (pending == 0 || pending > MAX_PENDING_OUTPUT_BYTES) {
                let mut connection = self.connections[slot].take().expect("open connection");
                let _ = self.poll.registry().deregister(&mut connection.stream);
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
    let (wal, translator, recovered) = open_node_state(config)?;
    let mut recovered = recovered;
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
        }
        server.flush_connections()?;
        server.gateway.flush(server.poll.registry())?;
    };
    // Stop: log the gateway's sessions out and run their cancel-on-disconnect inputs, then
    // persist the open block, deliver what is left, and report the final state.
    server.gateway.shutdown(server.poll.registry())?;
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
    let market_data = MarketData::new(
        MarketDataConfig {
            replay_messages: section.replay_messages,
            max_pending_bytes: section.max_pending_mib << 20,
            heartbeat_ns: 1_000_000_000,
            feed_epoch: wall_clock_ns(),
        },
        books,
    );
    let gateway_config = GatewayConfig {
        order_entry_listen: section.order_entry_listen,
        market_data_listen: section.market_data_listen,
        max_connections: section.max_connections,
        order_entry: OrderEntryConfig {
            max_sessions: section.max_sessions,
            max_sessions_per_account: section.max_sessions_per_account,
            resend_messages: section.resend_messages,
            session_linger_ns: section.session_linger_s.saturating_mul(1_000_000_000),
            login_timeout_ns: section.login_timeout_s.saturating_mul(1_000_000_000),
            max_pending_bytes: section.max_pending_mib << 20,
            max_consecutive_rejects: 1000,
            markets: markets.clone(),
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
