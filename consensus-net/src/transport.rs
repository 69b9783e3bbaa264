//! QUIC between validators (quinn over rustls, ring provider), keys pinned both ways.
//!
//! Every validator listens on one UDP address and dials every other validator. A dialled
//! connection carries this validator's frames to that peer on three unidirectional streams,
//! one per [`Lane`] (`len u32 LE | bytes`, in order within a lane); an accepted connection
//! carries the peer's frames to this validator. The lanes' streams have priorities: QUIC
//! fills each packet from the consensus lane (votes, sync requests) first, then the block
//! lane (proposals and commit certificates: whole blocks), then the bulk lane (forwarded
//! transactions). So when loss shrinks what a link carries, votes go ahead of blocks, and
//! both ahead of forwarded transactions, instead of queueing behind them (a vote behind a
//! few blocks of hundreds of KiB on a lossy link waits seconds, and a round cannot end
//! without votes). So each pair of validators has two connections, each used one way, and
//! only the dialling side ever reconnects. Both sides authenticate (mutual TLS 1.3): the
//! dialler accepts only the key it dials ([`PinnedServerVerifier`]), the listener only the
//! configured validator keys ([`PinnedClientVerifier`]); the sender of every received frame
//! is the key its connection was authenticated with.
//!
//! Queues are bounded: each peer's outgoing queue per lane holds `send_queue` (consensus),
//! `block_queue` (blocks) or `bulk_queue` (bulk) frames (a full queue drops the new frame: consensus re-sends what
//! matters, and proposals carry the transactions a dropped forward held); QUIC's stream flow
//! control bounds what a lane may have written but not yet delivered; and each peer's incoming queue
//! holds `recv_queue` frames (a full queue stops reading that peer, which QUIC flow control
//! pushes back to it alone; the host takes the peers' queues in turn, [`Inbox`]). Frames
//! longer than `max_frame_bytes` close the stream; a frame is read in chunks of at most
//! [`READ_CHUNK`] bytes, so a length prefix alone allocates nothing big. A peer key may hold
//! at most [`MAX_CONNECTIONS_PER_PEER`] accepted connections at once (a redial can overlap
//! the connection it replaces), each with at most 4 streams.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use consensus::types::ValidatorId;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

use crate::identity::{validator_key, Identity, IdentityError, SERVER_NAME};
use crate::inbox::Inbox;
use crate::verifier::{PinnedClientVerifier, PinnedServerVerifier};

/// ALPN protocol id of validator links.
pub const ALPN: &[u8] = b"nexus-bft/1";

/// Most bytes of a frame read (and allocated) at once.
pub const READ_CHUNK: usize = 64 << 10;

/// Most connections one peer key may hold open to this validator at once.
pub const MAX_CONNECTIONS_PER_PEER: usize = 2;

/// A validator to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its ed25519 key: the only key its certificate may carry.
    pub id: ValidatorId,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Configuration of one validator's endpoint.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// This validator's ed25519 secret seed (its TLS key too).
    pub key_seed: [u8; 32],
    /// UDP address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The other validators (an entry with this validator's own key is ignored).
    pub peers: Vec<Peer>,
    /// Largest frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Consensus-lane frames queued per peer before new ones are dropped.
    pub send_queue: usize,
    /// Block-lane frames queued per peer before new ones are dropped.
    pub block_queue: usize,
    /// Bulk-lane frames queued per peer before new ones are dropped.
    pub bulk_queue: usize,
    /// Received frames queued per peer before reading that peer stops.
    pub recv_queue: usize,
    /// Pause between dial attempts to an unreachable peer.
    pub redial_ms: u64,
    /// A connection with no traffic for this long is dead (keep-alives go every third of it).
    pub idle_timeout_ms: u64,
    /// How each connection paces what it sends.
    pub congestion: Congestion,
}

/// The congestion controller of validator links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// BBR (quinn's, marked experimental there): paces by measured bandwidth and round-trip
    /// time, so random loss does not shrink the window. With 10% loss and 20 ms delay on
    /// every link, four validators at 1,000 orders/s kept deciding heights with it and
    /// stopped with Cubic (docs/consensus.md, "Fault injection").
    #[default]
    Bbr,
    /// Cubic, QUIC's usual loss-based controller (quinn's default): each loss shrinks the
    /// window, so a lossy link carries a few tens of KiB/s.
    Cubic,
}

impl Congestion {
    fn apply(self, transport: &mut quinn::TransportConfig) {
        let factory: Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> = match self {
            Congestion::Bbr => Arc::new(quinn::congestion::BbrConfig::default()),
            Congestion::Cubic => Arc::new(quinn::congestion::CubicConfig::default()),
        };
        transport.congestion_controller_factory(factory);
    }
}

impl NetConfig {
    /// Defaults: 32 MiB frames, queues of 4096 frames (256 on the block and bulk lanes), redial every
    /// 100 ms, 3 s idle timeout, BBR.
    pub fn new(key_seed: [u8; 32], listen: SocketAddr, peers: Vec<Peer>) -> NetConfig {
        NetConfig {
            key_seed,
            listen,
            peers,
            max_frame_bytes: 32 << 20,
            send_queue: 4_096,
            block_queue: 256,
            bulk_queue: 256,
            recv_queue: 4_096,
            redial_ms: 100,
            idle_timeout_ms: 3_000,
            congestion: Congestion::default(),
        }
    }
}

/// Bytes asked for each UDP socket buffer (receive and send). The kernel's default receive
/// buffer (about 208 KiB on Linux) overflows when a proposal of a few hundred KiB goes to
/// every peer at once: the datagrams it drops cost QUIC a loss recovery and a smaller
/// congestion window, and a height its round (docs/consensus.md, "Transport"). The kernel
/// caps the request at `net.core.rmem_max` / `wmem_max` (4 MiB here).
pub const UDP_BUFFER_BYTES: usize = 4 << 20;

/// The endpoint's UDP socket, bound to `listen`, with [`UDP_BUFFER_BYTES`] buffers.
fn udp_socket(listen: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_recv_buffer_size(UDP_BUFFER_BYTES)?;
    socket.set_send_buffer_size(UDP_BUFFER_BYTES)?;
    socket.bind(&listen.into())?;
    Ok(socket.into())
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The TLS identity or configuration is invalid.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// quinn refused the TLS configuration.
    #[error("QUIC configuration: {0}")]
    Quic(String),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Which of a peer's three streams a frame goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Votes and sync requests (small): sent first.
    Consensus,
    /// Proposals and commit certificates (whole blocks): after the consensus lane.
    Block,
    /// Forwarded transactions: what is left of the congestion window after the others.
    Bulk,
}

impl Lane {
    /// The QUIC stream priority of the lane (higher goes first).
    fn priority(self) -> i32 {
        match self {
            Lane::Consensus => 2,
            Lane::Block => 1,
            Lane::Bulk => 0,
        }
    }
}

/// A frame from an authenticated peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The key the sender's connection was authenticated with.
    pub from: ValidatorId,
    /// The frame's bytes.
    pub frame: Vec<u8>,
}

/// Counters of what the endpoint did (monotonic).
#[derive(Debug, Default)]
pub struct NetStats {
    /// Outgoing connections established.
    pub dialled: AtomicU64,
    /// Outgoing attempts that failed (unreachable, or the peer's key is not the pinned one).
    pub dial_failures: AtomicU64,
    /// Incoming connections accepted (the client's key is pinned).
    pub accepted: AtomicU64,
    /// Incoming connections refused (unknown key, bad certificate, or a peer already at
    /// [`MAX_CONNECTIONS_PER_PEER`]).
    pub refused: AtomicU64,
    /// Frames written to a stream.
    pub frames_sent: AtomicU64,
    /// Consensus-lane frames dropped because a peer's queue was full.
    pub frames_dropped: AtomicU64,
    /// Block-lane frames dropped because a peer's queue was full.
    pub blocks_dropped: AtomicU64,
    /// Bulk-lane frames dropped because a peer's queue was full (the link is slower than
    /// what is forwarded).
    pub bulk_dropped: AtomicU64,
    /// Frames received.
    pub frames_received: AtomicU64,
}

/// A peer's outgoing queues, one per lane.
#[derive(Debug)]
struct LaneQueues {
    consensus: mpsc::Sender<Arc<[u8]>>,
    block: mpsc::Sender<Arc<[u8]>>,
    bulk: mpsc::Sender<Arc<[u8]>>,
}

/// A running endpoint. Must be created inside a tokio runtime (it spawns its tasks there);
/// dropping it closes every connection.
#[derive(Debug)]
pub struct Network {
    endpoint: quinn::Endpoint,
    id: ValidatorId,
    peers: Vec<(Peer, LaneQueues)>,
    stats: Arc<NetStats>,
}

impl Drop for Network {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"shutdown");
    }
}

impl Network {
    /// Binds the endpoint, starts dialling every peer, and returns the peers' queues of
    /// received frames.
    pub fn start(config: NetConfig) -> Result<(Network, Inbox), NetError> {
        let identity = Identity::from_seed(&config.key_seed)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let peers: Vec<Peer> = config
            .peers
            .iter()
            .copied()
            .filter(|p| p.id != identity.id)
            .collect();

        let mut transport = quinn::TransportConfig::default();
        let idle = Duration::from_millis(config.idle_timeout_ms.max(30));
        transport.keep_alive_interval(Some(idle / 3));
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(idle).map_err(|e| NetError::Quic(e.to_string()))?,
        ));
        // Frames go on three long-lived streams per connection (the lanes): no connection
        // needs more.
        transport.max_concurrent_bidi_streams(0u32.into());
        transport.max_concurrent_uni_streams(4u32.into());
        config.congestion.apply(&mut transport);
        let transport = Arc::new(transport);

        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(PinnedClientVerifier::new(
                peers.iter().map(|p| p.id),
                provider.clone(),
            )))
            .with_single_cert(vec![identity.cert.clone()], identity.private_key())?;
        server_tls.alpn_protocols = vec![ALPN.to_vec()];
        let server_crypto =
            QuicServerConfig::try_from(server_tls).map_err(|e| NetError::Quic(e.to_string()))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server_config.transport_config(transport.clone());
        let bind = |source| NetError::Bind {
            addr: config.listen,
            source,
        };
        let socket = udp_socket(config.listen).map_err(bind)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind)?;

        let stats = Arc::new(NetStats::default());
        let mut inbound = Vec::with_capacity(peers.len());
        let mut queues = Vec::with_capacity(peers.len());
        for peer in &peers {
            let (tx, rx) = mpsc::channel(config.recv_queue.max(1));
            inbound.push(Inbound {
                id: peer.id,
                tx,
                connections: Arc::new(AtomicUsize::new(0)),
            });
            queues.push(rx);
        }
        tokio::spawn(accept_loop(
            endpoint.clone(),
            inbound,
            config.max_frame_bytes,
            stats.clone(),
        ));

        let mut senders = Vec::with_capacity(peers.len());
        for peer in peers {
            let mut client_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier::new(
                    peer.id,
                    provider.clone(),
                )))
                .with_client_auth_cert(vec![identity.cert.clone()], identity.private_key())?;
            client_tls.alpn_protocols = vec![ALPN.to_vec()];
            let client_crypto = QuicClientConfig::try_from(client_tls)
                .map_err(|e| NetError::Quic(e.to_string()))?;
            let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
            client_config.transport_config(transport.clone());
            let (consensus, consensus_rx) = mpsc::channel(config.send_queue.max(1));
            let (block, block_rx) = mpsc::channel(config.block_queue.max(1));
            let (bulk, bulk_rx) = mpsc::channel(config.bulk_queue.max(1));
            tokio::spawn(dial_loop(
                endpoint.clone(),
                client_config,
                peer,
                [consensus_rx, block_rx, bulk_rx],
                Duration::from_millis(config.redial_ms.max(1)),
                stats.clone(),
            ));
            senders.push((
                peer,
                LaneQueues {
                    consensus,
                    block,
                    bulk,
                },
            ));
        }
        Ok((
            Network {
                endpoint,
                id: identity.id,
                peers: senders,
                stats,
            },
            Inbox::new(queues),
        ))
    }

    /// This validator's id (the key its certificate carries).
    pub fn id(&self) -> ValidatorId {
        self.id
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The counters.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Queues `frame` for `to` on `lane`. False if `to` is not a peer or the lane's queue is
    /// full (dropped).
    pub fn send(&self, to: &ValidatorId, frame: Arc<[u8]>, lane: Lane) -> bool {
        let Some((_, queues)) = self.peers.iter().find(|(p, _)| p.id == *to) else {
            return false;
        };
        self.offer(queues, frame, lane)
    }

    /// Queues `frame` for every peer on `lane`.
    pub fn broadcast(&self, frame: Arc<[u8]>, lane: Lane) {
        for (_, queues) in &self.peers {
            self.offer(queues, frame.clone(), lane);
        }
    }

    fn offer(&self, queues: &LaneQueues, frame: Arc<[u8]>, lane: Lane) -> bool {
        let (tx, dropped) = match lane {
            Lane::Consensus => (&queues.consensus, &self.stats.frames_dropped),
            Lane::Block => (&queues.block, &self.stats.blocks_dropped),
            Lane::Bulk => (&queues.bulk, &self.stats.bulk_dropped),
        };
        match tx.try_send(frame) {
            Ok(()) => true,
            Err(_) => {
                dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Dials `peer` until the network is dropped, writing each lane's queue on a stream of its
/// own; a broken connection is redialled after `redial`.
async fn dial_loop(
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    peer: Peer,
    mut lanes: [mpsc::Receiver<Arc<[u8]>>; 3],
    redial: Duration,
    stats: Arc<NetStats>,
) {
    loop {
        let connection = match endpoint.connect_with(config.clone(), peer.addr, SERVER_NAME) {
            Ok(connecting) => connecting.await.ok(),
            Err(_) => None,
        };
        let Some(connection) = connection else {
            stats.dial_failures.fetch_add(1, Ordering::Relaxed);
            if lanes.iter().all(|lane| lane.is_closed()) {
                return;
            }
            tokio::time::sleep(redial).await;
            continue;
        };
        stats.dialled.fetch_add(1, Ordering::Relaxed);
        let [consensus, block, bulk] = &mut lanes;
        let end = tokio::select! {
            end = write_lane(&connection, consensus, Lane::Consensus, &stats) => end,
            end = write_lane(&connection, block, Lane::Block, &stats) => end,
            end = write_lane(&connection, bulk, Lane::Bulk, &stats) => end,
            _ = connection.closed() => LaneEnd::Broken,
        };
        if end == LaneEnd::Dropped {
            return;
        }
        tokio::time::sleep(redial).await;
    }
}

/// Why a lane's writer stopped.
#[derive(Debug, PartialEq, Eq)]
enum LaneEnd {
    /// The stream or connection broke: redial.
    Broken,
    /// The network was dropped: stop.
    Dropped,
}

/// Writes `frames` on a new stream of `connection` with `lane`'s priority until the stream
/// breaks or the queue closes.
async fn write_lane(
    connection: &quinn::Connection,
    frames: &mut mpsc::Receiver<Arc<[u8]>>,
    lane: Lane,
    stats: &NetStats,
) -> LaneEnd {
    let Ok(mut stream) = connection.open_uni().await else {
        return LaneEnd::Broken;
    };
    if stream.set_priority(lane.priority()).is_err() {
        return LaneEnd::Broken;
    }
    loop {
        let Some(frame) = frames.recv().await else {
            let _ = stream.finish();
            return LaneEnd::Dropped;
        };
        let len = u32::try_from(frame.len()).expect("frames are below 4 GiB");
        if stream.write_all(&len.to_le_bytes()).await.is_err()
            || stream.write_all(&frame).await.is_err()
        {
            return LaneEnd::Broken;
        }
        stats.frames_sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where one peer's frames go, and how many of its connections are open.
#[derive(Clone)]
struct Inbound {
    id: ValidatorId,
    tx: mpsc::Sender<Received>,
    connections: Arc<AtomicUsize>,
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    inbound: Vec<Inbound>,
    max_frame_bytes: usize,
    stats: Arc<NetStats>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let stats = stats.clone();
        let inbound = inbound.clone();
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            // The verifier already pinned the key; read it back to name the sender.
            let from = connection
                .peer_identity()
                .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
                .and_then(|certs| certs.first().and_then(validator_key));
            let Some(peer) = from.and_then(|k| inbound.into_iter().find(|p| p.id == k)) else {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                connection.close(1u32.into(), b"unknown validator");
                return;
            };
            if peer.connections.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS_PER_PEER {
                peer.connections.fetch_sub(1, Ordering::AcqRel);
                stats.refused.fetch_add(1, Ordering::Relaxed);
                connection.close(3u32.into(), b"too many connections");
                return;
            }
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            while let Ok(stream) = connection.accept_uni().await {
                let tx = peer.tx.clone();
                let stats = stats.clone();
                tokio::spawn(read_stream(stream, peer.id, tx, max_frame_bytes, stats));
            }
            peer.connections.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Reads a stream's frames into its peer's queue until it ends, breaks or sends a frame
/// over `max_frame_bytes`.
async fn read_stream(
    mut stream: quinn::RecvStream,
    from: ValidatorId,
    tx: mpsc::Sender<Received>,
    max_frame_bytes: usize,
    stats: Arc<NetStats>,
) {
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > max_frame_bytes {
            let _ = stream.stop(2u32.into());
            return;
        }
        let Some(frame) = read_frame(&mut stream, len).await else {
            return;
        };
        stats.frames_received.fetch_add(1, Ordering::Relaxed);
        if tx.send(Received { from, frame }).await.is_err() {
            return;
        }
    }
}

/// `len` bytes of a stream, read [`READ_CHUNK`] at a time: memory grows with what arrives,
/// not with what the length prefix announced.
async fn read_frame(stream: &mut quinn::RecvStream, len: usize) -> Option<Vec<u8>> {
    let mut frame = Vec::new();
    while frame.len() < len {
        let start = frame.len();
        frame.resize(start + (len - start).min(READ_CHUNK), 0);
        stream.read_exact(&mut frame[start..]).await.ok()?;
    }
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's cap on socket receive buffers, if it says.
    fn rmem_max() -> Option<usize> {
        std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    #[test]
    fn the_endpoint_socket_asks_for_large_buffers() {
        let socket = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let got = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        // Linux doubles the request (bookkeeping) and caps it at rmem_max; the default is
        // about 208 KiB. Where the cap is below 1 MiB there is nothing to check.
        let cap = rmem_max().unwrap_or(0);
        if cap >= 1 << 20 {
            assert!(
                got >= (1 << 20),
                "receive buffer {got} bytes (rmem_max {cap})"
            );
        }
        assert!(socket.local_addr().unwrap().port() != 0);
    }
}
