//! The socket shell around [`OrderEntry`] and [`MarketData`]: two mio listeners and their
//! connections, driven by the node's event loop (one thread, shared with the node's other
//! ports). It reads bytes into the state machines, writes what they queue, hands their
//! submissions to the pipeline and their timers the time.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use rand::RngCore;
use sequencer::{Output, Pipeline, Submission};

use crate::connections::ConnId;
use crate::market_data::MarketData;
use crate::order_entry::{OrderEntry, OrderEntryConfig};

/// Where and how the gateway serves.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Order-entry listen address.
    pub order_entry_listen: SocketAddr,
    /// Market-data listen address.
    pub market_data_listen: SocketAddr,
    /// Most connections per port.
    pub max_connections: usize,
    /// Order-entry limits.
    pub order_entry: OrderEntryConfig,
}

/// Which port a connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Port {
    OrderEntry,
    MarketData,
}

struct Stream {
    id: ConnId,
    stream: TcpStream,
    writable_registered: bool,
    /// When the state machine first asked to close it (for the close deadline).
    closing_since_ns: Option<u64>,
}

/// A connection asked to close is dropped after this long even if its last bytes could not
/// be written (a peer that stopped reading).
const CLOSE_GRACE_NS: u64 = 1_000_000_000;

/// Wall clock in ns since the Unix epoch (the time the state machines are given).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The gateway's sockets and state machines.
pub struct GatewayServer {
    token_base: usize,
    max_connections: usize,
    order_listener: TcpListener,
    data_listener: TcpListener,
    /// The order-entry state machine.
    pub order_entry: OrderEntry,
    /// The market-data state machine.
    pub market_data: MarketData,
    order_streams: Vec<Option<Stream>>,
    data_streams: Vec<Option<Stream>>,
    /// Connections whose read budget ran out with data possibly left.
    unread: Vec<(Port, u32)>,
    submissions: Vec<Submission>,
    /// Connections to write to (or close).
    dirty: Vec<(Port, ConnId)>,
    /// Scratch for the state machines' dirty lists.
    scratch: Vec<ConnId>,
    /// Listeners whose `accept` failed for lack of resources: retried on every tick.
    accept_retry: Vec<Port>,
}

/// Reads per connection per turn of the loop, so one client cannot starve the others.
const READ_BUDGET: usize = 4;

impl GatewayServer {
    /// Binds both ports and registers them with tokens from `token_base` up (the gateway uses
    /// every token at or above it).
    pub fn bind(
        config: GatewayConfig,
        registry: &Registry,
        token_base: usize,
        market_data: MarketData,
    ) -> io::Result<GatewayServer> {
        let mut order_listener = TcpListener::bind(config.order_entry_listen)?;
        let mut data_listener = TcpListener::bind(config.market_data_listen)?;
        registry.register(&mut order_listener, Token(token_base), Interest::READABLE)?;
        registry.register(
            &mut data_listener,
            Token(token_base + 1),
            Interest::READABLE,
        )?;
        Ok(GatewayServer {
            token_base,
            max_connections: config.max_connections,
            order_listener,
            data_listener,
            order_entry: OrderEntry::new(config.order_entry),
            market_data,
            order_streams: Vec::new(),
            data_streams: Vec::new(),
            unread: Vec::new(),
            submissions: Vec::new(),
            dirty: Vec::new(),
            scratch: Vec::new(),
            accept_retry: Vec::new(),
        })
    }

    /// The bound addresses: (order entry, market data).
    pub fn local_addrs(&self) -> io::Result<(SocketAddr, SocketAddr)> {
        Ok((
            self.order_listener.local_addr()?,
            self.data_listener.local_addr()?,
        ))
    }

    /// Open connections: (order entry, market data).
    pub fn connection_counts(&self) -> (usize, usize) {
        let open = |streams: &[Option<Stream>]| streams.iter().filter(|s| s.is_some()).count();
        (open(&self.order_streams), open(&self.data_streams))
    }

    /// True if `token` is one of the gateway's.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.token_base
    }

    fn token_of(&self, port: Port, slot: u32) -> Token {
        let bit = match port {
            Port::OrderEntry => 0,
            Port::MarketData => 1,
        };
        Token(self.token_base + 2 + ((slot as usize) << 1 | bit))
    }

    fn streams(&mut self, port: Port) -> &mut Vec<Option<Stream>> {
        match port {
            Port::OrderEntry => &mut self.order_streams,
            Port::MarketData => &mut self.data_streams,
        }
    }

    /// Handles a readiness event for one of the gateway's tokens.
    pub fn handle(&mut self, registry: &Registry, token: Token, writable: bool) -> io::Result<()> {
        match token.0 - self.token_base {
            0 => {
                self.accept(registry, Port::OrderEntry);
                return Ok(());
            }
            1 => {
                self.accept(registry, Port::MarketData);
                return Ok(());
            }
            _ => {}
        }
        let index = token.0 - self.token_base - 2;
        let port = if index & 1 == 0 {
            Port::OrderEntry
        } else {
            Port::MarketData
        };
        let slot = (index >> 1) as u32;
        if writable {
            if let Some(Some(stream)) = self.streams(port).get(slot as usize) {
                let id = stream.id;
                self.write_out(registry, port, id)?;
            }
        }
        if !self.unread.contains(&(port, slot)) {
            self.unread.push((port, slot));
        }
        Ok(())
    }

    /// Reads what the marked connections sent, within each one's budget.
    pub fn read_ready(&mut self) {
        let mut again = Vec::new();
        for (port, slot) in std::mem::take(&mut self.unread) {
            if self.read_connection(port, slot) {
                again.push((port, slot));
            }
        }
        self.unread = again;
    }

    /// Accepts every waiting connection. A failure (out of file descriptors, say) is not the
    /// node's end: the listener is retried on the next ticks.
    fn accept(&mut self, registry: &Registry, port: Port) {
        loop {
            let accepted = match port {
                Port::OrderEntry => self.order_listener.accept(),
                Port::MarketData => self.data_listener.accept(),
            };
            let mut stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("nexus gateway: accept on {port:?} failed ({e}); retrying");
                    if !self.accept_retry.contains(&port) {
                        self.accept_retry.push(port);
                    }
                    return;
                }
            };
            let open = match port {
                Port::OrderEntry => self.order_entry.connection_count(),
                Port::MarketData => self.data_streams.iter().flatten().count(),
            };
            if open >= self.max_connections {
                // Refused: closing it at once is the answer.
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let now = now_ns();
            let id = match port {
                Port::OrderEntry => {
                    let mut nonce = [0u8; 32];
                    rand::rng().fill_bytes(&mut nonce);
                    self.order_entry.connect(now, nonce)
                }
                Port::MarketData => self.market_data.connect(now),
            };
            let token = self.token_of(port, id.slot);
            if registry
                .register(&mut stream, token, Interest::READABLE)
                .is_err()
            {
                // This connection only: forget it (the socket closes on drop).
                match port {
                    Port::OrderEntry => self.order_entry.disconnected(id, now),
                    Port::MarketData => self.market_data.disconnected(id),
                }
                continue;
            }
            let streams = self.streams(port);
            if streams.len() <= id.slot as usize {
                streams.resize_with(id.slot as usize + 1, || None);
            }
            streams[id.slot as usize] = Some(Stream {
                id,
                stream,
                writable_registered: false,
                closing_since_ns: None,
            });
            self.dirty_push(port, id);
        }
    }

    fn dirty_push(&mut self, port: Port, id: ConnId) {
        self.dirty.push((port, id));
    }

    /// Reads up to the budget; true if the socket may hold more.
    fn read_connection(&mut self, port: Port, slot: u32) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        for _ in 0..READ_BUDGET {
            let Some(Some(stream)) = self.streams(port).get(slot as usize) else {
                return false;
            };
            let id = stream.id;
            let closing = match port {
                Port::OrderEntry => self.order_entry.is_closing(id),
                Port::MarketData => self.market_data.is_closing(id),
            };
            if closing {
                // Nothing it sends now is handled; do not spin on it.
                return false;
            }
            let Some(Some(stream)) = self.streams(port).get_mut(slot as usize) else {
                return false;
            };
            match stream.stream.read(&mut chunk) {
                Ok(0) => {
                    // The peer closed its side: its last replies (a logout answer, say) are
                    // still written before the connection is closed.
                    match port {
                        Port::OrderEntry => self.order_entry.close_after_flush(id),
                        Port::MarketData => self.market_data.close_after_flush(id),
                    }
                    return false;
                }
                Ok(n) => {
                    let now = now_ns();
                    match port {
                        Port::OrderEntry => self.order_entry.receive(id, &chunk[..n], now),
                        Port::MarketData => self.market_data.receive(id, &chunk[..n], now),
                    }
                    self.dirty_push(port, id);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_connection(port, id);
                    return false;
                }
            }
        }
        true
    }

    fn drop_connection(&mut self, port: Port, id: ConnId) {
        if let Some(entry) = self.streams(port).get_mut(id.slot as usize) {
            if entry.as_ref().is_some_and(|s| s.id == id) {
                // Dropping the stream closes the socket and removes it from the poll.
                *entry = None;
            }
        }
        match port {
            Port::OrderEntry => self.order_entry.disconnected(id, now_ns()),
            Port::MarketData => self.market_data.disconnected(id),
        }
    }

    /// Feeds a pipeline output to both state machines.
    pub fn on_output(&mut self, output: &Output) {
        let now = now_ns();
        self.order_entry.on_output(output, now);
        self.market_data.on_output(output, now);
    }

    /// Timers of both state machines; failed accepts are retried, and connections that
    /// were asked to close but could not write their last bytes within a second are dropped.
    pub fn tick(&mut self, registry: &Registry) {
        let now = now_ns();
        self.order_entry.tick(now);
        self.market_data.tick(now);
        for port in std::mem::take(&mut self.accept_retry) {
            self.accept(registry, port);
        }
        for port in [Port::OrderEntry, Port::MarketData] {
            let mut overdue = Vec::new();
            let (order_entry, market_data) = (&self.order_entry, &self.market_data);
            let streams = match port {
                Port::OrderEntry => &mut self.order_streams,
                Port::MarketData => &mut self.data_streams,
            };
            for stream in streams.iter_mut().flatten() {
                let closing = match port {
                    Port::OrderEntry => order_entry.is_closing(stream.id),
                    Port::MarketData => market_data.is_closing(stream.id),
                };
                match (closing, stream.closing_since_ns) {
                    (true, None) => stream.closing_since_ns = Some(now),
                    (true, Some(since)) if now.saturating_sub(since) >= CLOSE_GRACE_NS => {
                        overdue.push(stream.id)
                    }
                    _ => {}
                }
            }
            for id in overdue {
                self.drop_connection(port, id);
            }
        }
    }

    /// True while the gateway has work that must not wait for the next event: unread
    /// sockets, inputs not yet handed to the pipeline, failed accepts.
    pub fn has_pending_work(&self) -> bool {
        !self.unread.is_empty()
            || self.order_entry.has_submissions()
            || !self.accept_retry.is_empty()
    }

    /// True while some connection still has bytes to write.
    pub fn has_pending_output(&self) -> bool {
        self.order_streams
            .iter()
            .flatten()
            .any(|s| !self.order_entry.pending_output(s.id).is_empty())
            || self
                .data_streams
                .iter()
                .flatten()
                .any(|s| !self.market_data.pending_output(s.id).is_empty())
    }

    /// Hands queued order-entry inputs to the pipeline; a refused one is answered overloaded.
    pub fn submit(&mut self, pipeline: &mut Pipeline) {
        self.order_entry.take_submissions(&mut self.submissions);
        for mut submission in self.submissions.drain(..) {
            submission.received_ns = pipeline.now_ns();
            if let Err(refused) = pipeline.try_submit(submission) {
                self.order_entry.refused(refused, now_ns());
            }
        }
    }

    /// Writes what the state machines queued; closes connections that are done.
    pub fn flush(&mut self, registry: &Registry) -> io::Result<()> {
        let mut scratch = std::mem::take(&mut self.scratch);
        self.order_entry.take_dirty(&mut scratch);
        self.dirty
            .extend(scratch.drain(..).map(|id| (Port::OrderEntry, id)));
        self.market_data.take_dirty(&mut scratch);
        self.dirty
            .extend(scratch.drain(..).map(|id| (Port::MarketData, id)));
        self.scratch = scratch;
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &(port, id) in &dirty {
            self.write_out(registry, port, id)?;
        }
        dirty.clear();
        self.dirty = dirty;
        Ok(())
    }

    fn write_out(&mut self, registry: &Registry, port: Port, id: ConnId) -> io::Result<()> {
        let token = self.token_of(port, id.slot);
        let (order_entry, market_data) = (&mut self.order_entry, &mut self.market_data);
        let streams = match port {
            Port::OrderEntry => &mut self.order_streams,
            Port::MarketData => &mut self.data_streams,
        };
        let Some(Some(stream)) = streams.get_mut(id.slot as usize) else {
            return Ok(());
        };
        if stream.id != id {
            return Ok(());
        }
        let mut failed = false;
        loop {
            let pending = match port {
                Port::OrderEntry => order_entry.pending_output(id),
                Port::MarketData => market_data.pending_output(id),
            };
            if pending.is_empty() {
                break;
            }
            match stream.stream.write(pending) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => match port {
                    Port::OrderEntry => order_entry.consume_output(id, n),
                    Port::MarketData => market_data.consume_output(id, n),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let (pending, closing) = match port {
            Port::OrderEntry => (
                !order_entry.pending_output(id).is_empty(),
                order_entry.is_closing(id),
            ),
            Port::MarketData => (
                !market_data.pending_output(id).is_empty(),
                market_data.is_closing(id),
            ),
        };
        if failed || (closing && !pending) {
            self.drop_connection(port, id);
            return Ok(());
        }
        if pending != stream.writable_registered {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if registry
                .reregister(&mut stream.stream, token, interest)
                .is_err()
            {
                self.drop_connection(port, id);
                return Ok(());
            }
            stream.writable_registered = pending;
        }
        Ok(())
    }

    /// First step of a node stop: queues the order-entry sessions' cancel-on-disconnect
    /// inputs and keeps every connection open, so that once the node has submitted them
    /// ([`GatewayServer::submit`]) and routed their results ([`GatewayServer::on_output`]),
    /// their `Canceled` messages reach every session of the account. Then call
    /// [`GatewayServer::shutdown`].
    pub fn cancel_on_shutdown(&mut self) {
        self.order_entry.cancel_on_shutdown();
    }

    /// Sends every connection a logout (the node is stopping) and writes what it can. Without
    /// [`GatewayServer::cancel_on_shutdown`] first, the cancel-on-disconnect inputs are queued
    /// here, and their results reach only the sessions' resend windows.
    pub fn shutdown(&mut self, registry: &Registry) -> io::Result<()> {
        let now = now_ns();
        self.order_entry.shutdown(now);
        self.market_data.shutdown(now);
        self.flush(registry)
    }
}
