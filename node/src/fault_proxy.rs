//! Link faults between validators on loopback: a UDP proxy per ordered pair of validators,
//! for fault-injection tests and soak runs of a real multi-process cluster.
//!
//! Validator `i` sends its QUIC packets for validator `j` to [`Mesh::dial_addr`]`(i, j)`
//! (`nexus validator --peer-addr J=ADDR`); that link's proxy forwards them to `j`'s own
//! address and carries `j`'s answers back to `i`. Each of the `n (n - 1)` links has its
//! [`LinkFaults`]: blocked (a partition), a loss fraction, a delay with jitter. Changes take
//! effect on the next packet. A link is served by two threads (one per direction) of plain
//! std sockets; packets waiting out a delay sit in a bounded queue (a full queue drops, as a
//! router does). Losses are drawn from a SplitMix64 stream seeded per link and direction, so
//! a run's fault pattern is reproducible from its seed (up to packet timing).

use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most packets one direction of a link holds while they wait out a delay.
pub const MAX_QUEUED: usize = 4_096;
/// Longest receive wait of a proxy thread when nothing is queued (how soon it sees `stop`).
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// What one link does to the packets it carries (both directions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Drop every packet (a partition between the two validators).
    pub blocked: bool,
    /// Packets dropped, per mille (0..=1000).
    pub loss_per_mille: u32,
    /// Every packet waits this long before it is forwarded.
    pub delay_ms: u32,
    /// Plus a uniform extra wait in `0..=jitter_ms` (packets may overtake each other).
    pub jitter_ms: u32,
}

/// Packets the mesh forwarded and dropped, over all links and both directions.
#[derive(Debug, Default)]
pub struct MeshCounts {
    /// Packets sent on.
    pub forwarded: AtomicU64,
    /// Packets dropped (blocked, lost, or a full delay queue).
    pub dropped: AtomicU64,
}

/// One ordered pair's proxy: the address its dialler sends to, and its faults.
struct Link {
    front: SocketAddr,
    faults: Arc<Mutex<LinkFaults>>,
}

/// The proxies between `n` validators: one per ordered pair `(from, to)`, `from != to`.
pub struct Mesh {
    n: usize,
    links: Vec<Option<Link>>,
    counts: Arc<MeshCounts>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Mesh {
    /// Starts a proxy in front of every validator for every other one: `targets[j]` is
    /// validator `j`'s own UDP address. Proxies listen on free loopback ports.
    pub fn start(targets: &[SocketAddr], seed: u64) -> io::Result<Mesh> {
        let n = targets.len();
        let mut mesh = Mesh {
            n,
            links: Vec::with_capacity(n * n),
            counts: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for from in 0..n {
            for (to, &target) in targets.iter().enumerate() {
                let link = if from == to {
                    None
                } else {
                    Some(mesh.start_link(target, seed, (from * n + to) as u64)?)
                };
                mesh.links.push(link);
            }
        }
        Ok(mesh)
    }

    /// Binds the link's two sockets and starts its two threads.
    fn start_link(&mut self, target: SocketAddr, seed: u64, link: u64) -> io::Result<Link> {
        let front = UdpSocket::bind("127.0.0.1:0")?;
        let back = UdpSocket::bind("127.0.0.1:0")?;
        back.connect(target)?;
        let faults = Arc::new(Mutex::new(LinkFaults::default()));
        let dialler: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let addr = front.local_addr()?;
        let (front2, back2) = (front.try_clone()?, back.try_clone()?);
        let forward = Direction {
            from: front,
            to: Destination::Connected(back),
            dialler: dialler.clone(),
            faults: faults.clone(),
            counts: self.counts.clone(),
            stop: self.stop.clone(),
            rng: SplitMix(seed ^ link.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        };
        let backward = Direction {
            from: back2,
            to: Destination::Dialler(front2),
            dialler,
            faults: faults.clone(),
            counts: self.counts.clone(),
            stop: self.stop.clone(),
            rng: SplitMix(!seed ^ link.wrapping_mul(0xbf58_476d_1ce4_e5b9)),
        };
        for (name, direction) in [("fwd", forward), ("back", backward)] {
            let thread = std::thread::Builder::new()
                .name(format!("proxy-{link}-{name}"))
                .spawn(move || direction.run())?;
            self.threads.push(thread);
        }
        Ok(Link {
            front: addr,
            faults,
        })
    }

    /// Number of validators.
    pub fn validators(&self) -> usize {
        self.n
    }

    fn link(&self, from: usize, to: usize) -> &Link {
        assert!(
            from < self.n && to < self.n && from != to,
            "no link {from}->{to}"
        );
        self.links[from * self.n + to].as_ref().expect("a link")
    }

    /// Where validator `from` must send its packets for validator `to`.
    pub fn dial_addr(&self, from: usize, to: usize) -> SocketAddr {
        self.link(from, to).front
    }

    /// Sets the faults of the link `from -> to` (the connection `from` dials to `to`).
    pub fn set_link(&self, from: usize, to: usize, faults: LinkFaults) {
        *self.link(from, to).faults.lock().expect("faults") = faults;
    }

    /// Sets the same faults on every link.
    pub fn set_all(&self, faults: LinkFaults) {
        for link in self.links.iter().flatten() {
            *link.faults.lock().expect("faults") = faults;
        }
    }

    /// Blocks every link between validators of different groups (both ways) and clears
    /// every other link's faults. A validator in no group is cut off from everyone.
    pub fn partition(&self, groups: &[&[usize]]) {
        let group_of = |v: usize| groups.iter().position(|g| g.contains(&v));
        for from in 0..self.n {
            for to in (0..self.n).filter(|&to| to != from) {
                let same = group_of(from).is_some() && group_of(from) == group_of(to);
                let faults = LinkFaults {
                    blocked: !same,
                    ..LinkFaults::default()
                };
                self.set_link(from, to, faults);
            }
        }
    }

    /// Clears every link's faults.
    pub fn heal(&self) {
        self.set_all(LinkFaults::default());
    }

    /// Packets forwarded and dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counts.forwarded.load(Ordering::Relaxed),
            self.counts.dropped.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Where a direction sends what it receives.
enum Destination {
    /// The validator behind the link (the socket is connected to it).
    Connected(UdpSocket),
    /// The dialling validator, at the address its last packet came from.
    Dialler(UdpSocket),
}

/// A packet waiting out its delay; the heap's top is the earliest due (then the first in).
struct Delayed {
    due: Instant,
    seq: u64,
    bytes: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Reversed: `BinaryHeap` is a max-heap.
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// One direction of a link: receive, decide (drop, delay), send.
struct Direction {
    from: UdpSocket,
    to: Destination,
    dialler: Arc<Mutex<Option<SocketAddr>>>,
    faults: Arc<Mutex<LinkFaults>>,
    counts: Arc<MeshCounts>,
    stop: Arc<AtomicBool>,
    rng: SplitMix,
}

impl Direction {
    fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut queue: BinaryHeap<Delayed> = BinaryHeap::new();
        let mut seq = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            self.send_due(&mut queue);
            let wait = queue.peek().map_or(IDLE_POLL, |d| {
                d.due
                    .saturating_duration_since(Instant::now())
                    .clamp(Duration::from_millis(1), IDLE_POLL)
            });
            let _ = self.from.set_read_timeout(Some(wait));
            let Ok((len, source)) = self.from.recv_from(&mut buf) else {
                continue;
            };
            if matches!(self.to, Destination::Connected(_)) {
                *self.dialler.lock().expect("dialler") = Some(source);
            }
            let faults = *self.faults.lock().expect("faults");
            let lost = faults.loss_per_mille > 0
                && self.rng.next() % 1_000 < u64::from(faults.loss_per_mille);
            if faults.blocked || lost || queue.len() >= MAX_QUEUED {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let jitter = match faults.jitter_ms {
                0 => 0,
                j => self.rng.next() % (u64::from(j) + 1),
            };
            let delay = Duration::from_millis(u64::from(faults.delay_ms) + jitter);
            if delay.is_zero() && queue.is_empty() {
                self.send(&buf[..len]);
                continue;
            }
            seq += 1;
            let due = Instant::now() + delay;
            let bytes = buf[..len].to_vec();
            queue.push(Delayed { due, seq, bytes });
        }
    }

    /// Sends every queued packet whose time has come.
    fn send_due(&mut self, queue: &mut BinaryHeap<Delayed>) {
        let now = Instant::now();
        while queue.peek().is_some_and(|d| d.due <= now) {
            let packet = queue.pop().expect("peeked");
            self.send(&packet.bytes);
        }
    }

    fn send(&self, bytes: &[u8]) {
        let sent = match &self.to {
            Destination::Connected(socket) => socket.send(bytes).is_ok(),
            Destination::Dialler(socket) => {
                let dialler = *self.dialler.lock().expect("dialler");
                dialler.is_some_and(|addr| socket.send_to(bytes, addr).is_ok())
            }
        };
        let counter = if sent {
            &self.counts.forwarded
        } else {
            &self.counts.dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// SplitMix64: a small seeded stream for loss and jitter draws.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two echo servers behind a mesh of two: what validator 0 sends to its link for 1
    /// comes back from 1 through the same link.
    fn echo() -> (UdpSocket, SocketAddr) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        let server = socket.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((len, from)) = server.recv_from(&mut buf) {
                if &buf[..len] == b"quit" {
                    return;
                }
                let _ = server.send_to(&buf[..len], from);
            }
        });
        (socket, addr)
    }

    fn client() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        socket
    }

    /// Sends `count` numbered packets through `to` and counts the echoes that come back.
    fn round_trips(socket: &UdpSocket, to: SocketAddr, count: u32) -> u32 {
        for i in 0..count {
            socket.send_to(&i.to_le_bytes(), to).expect("send");
            // Paced: a burst could overflow the loopback socket buffers.
            if i % 10 == 9 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let mut buf = [0u8; 16];
        let mut back = 0;
        while socket.recv_from(&mut buf).is_ok() {
            back += 1;
        }
        back
    }

    #[test]
    fn packets_cross_a_healthy_link_both_ways_and_a_partition_blocks_them() {
        let (_s0, a0) = echo();
        let (_s1, a1) = echo();
        let mesh = Mesh::start(&[a0, a1], 1).expect("mesh");
        let c = client();
        assert_eq!(round_trips(&c, mesh.dial_addr(0, 1), 20), 20);
        mesh.partition(&[&[0], &[1]]);
        assert_eq!(round_trips(&c, mesh.dial_addr(0, 1), 20), 0);
        assert_eq!(round_trips(&c, mesh.dial_addr(1, 0), 20), 0);
        mesh.heal();
        assert_eq!(round_trips(&c, mesh.dial_addr(1, 0), 20), 20);
        let (forwarded, dropped) = mesh.counts();
        assert_eq!((forwarded, dropped), (80, 40));
    }

    #[test]
    fn loss_drops_about_its_fraction_and_delay_holds_packets_back() {
        let (_s0, a0) = echo();
        let (_s1, a1) = echo();
        let mesh = Mesh::start(&[a0, a1], 7).expect("mesh");
        let c = client();
        // 30% of what the proxy handles, each way (counted by the proxy: the kernel may
        // also drop a burst before it, which is not the proxy's doing).
        mesh.set_link(
            0,
            1,
            LinkFaults {
                loss_per_mille: 300,
                ..LinkFaults::default()
            },
        );
        let back = round_trips(&c, mesh.dial_addr(0, 1), 1_000);
        let (forwarded, dropped) = mesh.counts();
        let handled = forwarded + dropped;
        assert!(handled >= 500, "{handled} packets reached the proxy");
        let per_mille = dropped * 1_000 / handled;
        assert!(
            (220..=380).contains(&per_mille),
            "{per_mille} per mille dropped"
        );
        assert!(back > 0 && u64::from(back) < forwarded, "{back} echoes");
        mesh.set_link(
            0,
            1,
            LinkFaults {
                delay_ms: 100,
                ..LinkFaults::default()
            },
        );
        let sent = Instant::now();
        c.send_to(b"x", mesh.dial_addr(0, 1)).expect("send");
        let mut buf = [0u8; 4];
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.recv_from(&mut buf).expect("the echo arrives");
        // 100 ms each way: never sooner than 200 ms (a lower bound, not a timing target).
        assert!(sent.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn a_partition_cuts_only_links_across_groups() {
        let addrs: Vec<SocketAddr> = (0..4).map(|_| echo().1).collect();
        let mesh = Mesh::start(&addrs, 3).expect("mesh");
        mesh.partition(&[&[0, 1], &[2, 3]]);
        for from in 0..4 {
            for to in (0..4).filter(|&to| to != from) {
                let blocked = mesh.link(from, to).faults.lock().expect("faults").blocked;
                assert_eq!(blocked, (from < 2) != (to < 2), "{from}->{to}");
            }
        }
    }
}
