//! Real QUIC over loopback between endpoints in one process: frames flow both ways between
//! pinned peers; a client with an unknown key is refused by the server; a server that does
//! not carry the pinned key is refused by the client.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use consensus::types::{Keypair, ValidatorId};
use consensus_net::{Inbox, Lane, NetConfig, Network, Peer, Received};

fn free_addr() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr")
}

fn id(seed: u8) -> ValidatorId {
    Keypair::from_seed([seed; 32]).id()
}

async fn recv_until(rx: &mut Inbox, n: usize, deadline: Duration) -> Vec<Received> {
    let end = Instant::now() + deadline;
    let mut got = Vec::new();
    while got.len() < n {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(r)) => got.push(r),
            _ => break,
        }
    }
    got
}

/// A consensus frame sent after a bulk backlog of 64 MiB does not wait behind it: the lanes
/// are streams of their own (at most what the bulk stream's flow-control window holds,
/// about one frame here, goes ahead of it). The bulk frames still arrive, in order.
#[tokio::test(flavor = "current_thread")]
async fn a_consensus_frame_overtakes_a_bulk_backlog() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let peer = |seed: u8, addr| Peer { id: id(seed), addr };
    let (a, _a_rx) =
        Network::start(NetConfig::new([1; 32], a_addr, vec![peer(2, b_addr)])).expect("a");
    let (_b, mut b_rx) =
        Network::start(NetConfig::new([2; 32], b_addr, vec![peer(1, a_addr)])).expect("b");
    // Wait for the connection: one consensus frame through.
    assert!(a.send(&id(2), Arc::from(&b"hello"[..]), Lane::Consensus));
    assert_eq!(
        recv_until(&mut b_rx, 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );

    const BULK: usize = 64;
    for i in 0..BULK {
        let mut frame = vec![0u8; 1 << 20];
        frame[0] = i as u8;
        assert!(
            a.send(&id(2), Arc::from(frame), Lane::Bulk),
            "bulk queue has room"
        );
    }
    assert!(a.send(&id(2), Arc::from(&b"vote"[..]), Lane::Consensus));
    let got = recv_until(&mut b_rx, BULK + 1, Duration::from_secs(60)).await;
    assert_eq!(got.len(), BULK + 1, "every frame arrived");
    let vote_at = got
        .iter()
        .position(|r| &r.frame[..] == b"vote")
        .expect("vote");
    assert!(
        vote_at < BULK / 2,
        "the vote waited behind {vote_at} bulk frames"
    );
    let bulk: Vec<u8> = got
        .iter()
        .filter(|r| r.frame.len() > 4)
        .map(|r| r.frame[0])
        .collect();
    assert_eq!(
        bulk,
        (0..BULK as u8).collect::<Vec<_>>(),
        "bulk frames in order"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn pinned_peers_exchange_frames_and_unknown_keys_are_refused() {
    let (a_addr, b_addr, c_addr, d_addr) = (free_addr(), free_addr(), free_addr(), free_addr());
    let peer = |seed: u8, addr| Peer { id: id(seed), addr };
    // A pins B and D; B pins A. C is nobody's peer. D pins "B" but at A's address.
    let (a, mut a_rx) = Network::start(NetConfig::new(
        [1; 32],
        a_addr,
        vec![peer(2, b_addr), peer(4, d_addr)],
    ))
    .expect("a");
    let (b, mut b_rx) =
        Network::start(NetConfig::new([2; 32], b_addr, vec![peer(1, a_addr)])).expect("b");
    assert_eq!(a.id(), id(1));

    for i in 0..100u32 {
        let frame: Arc<[u8]> = Arc::from(i.to_le_bytes().repeat(1 + i as usize % 50));
        assert!(a.send(&id(2), frame.clone(), Lane::Consensus));
        b.broadcast(frame, Lane::Bulk);
    }
    let at_b = recv_until(&mut b_rx, 100, Duration::from_secs(10)).await;
    let at_a = recv_until(&mut a_rx, 100, Duration::from_secs(10)).await;
    assert_eq!(at_b.len(), 100, "every frame A sent reached B");
    assert_eq!(at_a.len(), 100, "every frame B sent reached A");
    for (i, r) in at_b.iter().enumerate() {
        assert_eq!(r.from, id(1), "sender is the authenticated key");
        assert_eq!(
            r.frame,
            (i as u32).to_le_bytes().repeat(1 + i % 50),
            "in order"
        );
    }
    assert!(at_a.iter().all(|r| r.from == id(2)));
    for (i, r) in at_a.iter().enumerate() {
        assert_eq!(
            r.frame,
            (i as u32).to_le_bytes().repeat(1 + i % 50),
            "in order"
        );
    }
    // A large frame (a block-sized proposal) arrives whole.
    let big: Arc<[u8]> = Arc::from(vec![0xab; 3 << 20]);
    assert!(a.send(&id(2), big.clone(), Lane::Consensus));
    let got = recv_until(&mut b_rx, 1, Duration::from_secs(10)).await;
    assert_eq!(got[0].frame.len(), big.len());
    assert!(!a.send(&id(9), big, Lane::Consensus), "not a peer");

    // C's key is not pinned by A: the handshake is refused and nothing arrives.
    let (c, _c_rx) =
        Network::start(NetConfig::new([3; 32], c_addr, vec![peer(1, a_addr)])).expect("c");
    // D dials A's address expecting B's key: D refuses A's certificate.
    let (d, _d_rx) =
        Network::start(NetConfig::new([4; 32], d_addr, vec![peer(2, a_addr)])).expect("d");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        c.broadcast(Arc::from(&b"from an unknown key"[..]), Lane::Consensus);
        d.broadcast(Arc::from(&b"to the wrong server"[..]), Lane::Consensus);
        let refused = a.stats().refused.load(Ordering::Relaxed);
        let d_failed = d.stats().dial_failures.load(Ordering::Relaxed);
        if refused >= 1 && d_failed >= 1 {
            break;
        }
        assert!(
            Instant::now() < end,
            "refusals seen (A refused {refused}, D failed {d_failed})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        d.stats().dialled.load(Ordering::Relaxed),
        0,
        "D never connected to a wrong key"
    );
    // (C's own handshake may complete before A checks its certificate, as TLS 1.3 client
    // authentication allows, so C may write a little before A closes: none of it arrives.)
    if let Some(r) = a_rx.try_recv() {
        panic!("A received a frame from {:?}", r.from);
    }
}

/// Polls `done` every 20 ms for up to 10 s.
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_noisy_peer_cannot_delay_a_quiet_one() {
    let (a_addr, b_addr, c_addr) = (free_addr(), free_addr(), free_addr());
    let peer = |seed: u8, addr| Peer { id: id(seed), addr };
    let mut config = NetConfig::new([2; 32], b_addr, vec![peer(1, a_addr), peer(3, c_addr)]);
    config.recv_queue = 8;
    let (b, mut b_rx) = Network::start(config).expect("b");
    let (a, _a_rx) =
        Network::start(NetConfig::new([1; 32], a_addr, vec![peer(2, b_addr)])).expect("a");
    let (c, _c_rx) =
        Network::start(NetConfig::new([3; 32], c_addr, vec![peer(2, b_addr)])).expect("c");
    // A floods B, which does not read: A's queue at B fills (8), one more frame waits to be
    // queued, and QUIC stops A there.
    for i in 0..500u32 {
        assert!(a.send(&id(2), Arc::from(i.to_le_bytes()), Lane::Consensus));
    }
    let received = || b.stats().frames_received.load(Ordering::Relaxed);
    wait_for("A's frames to fill its queue", || received() >= 9).await;
    assert!(c.send(&id(2), Arc::from(&b"quiet"[..]), Lane::Consensus));
    wait_for("C's frame", || received() >= 10).await;
    let first = recv_until(&mut b_rx, 4, Duration::from_secs(10)).await;
    let position = first.iter().position(|r| r.from == id(3));
    assert!(
        position.is_some_and(|p| p <= 1),
        "C's frame waits for at most one of A's: {position:?}"
    );
    // A's frames all arrive, in order, once B reads on.
    let rest = recv_until(&mut b_rx, 497, Duration::from_secs(10)).await;
    let from_a: Vec<u32> = first
        .iter()
        .chain(&rest)
        .filter(|r| r.from == id(1))
        .map(|r| u32::from_le_bytes(r.frame[..4].try_into().unwrap()))
        .collect();
    assert_eq!(from_a, (0..500).collect::<Vec<_>>());
}

#[tokio::test(flavor = "current_thread")]
async fn a_peer_key_holds_at_most_two_connections() {
    let b_addr = free_addr();
    let a_addr = free_addr();
    let (b, _b_rx) = Network::start(NetConfig::new(
        [2; 32],
        b_addr,
        vec![Peer {
            id: id(1),
            addr: a_addr,
        }],
    ))
    .expect("b");
    // Three endpoints with A's key dial B.
    let dialers: Vec<_> = (0..3)
        .map(|_| {
            let peers = vec![Peer {
                id: id(2),
                addr: b_addr,
            }];
            Network::start(NetConfig::new([1; 32], free_addr(), peers)).expect("a")
        })
        .collect();
    let stats = b.stats();
    wait_for("two accepted and one refused", || {
        stats.accepted.load(Ordering::Relaxed) >= 2 && stats.refused.load(Ordering::Relaxed) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stats.accepted.load(Ordering::Relaxed),
        2,
        "never a third at once"
    );
    drop(dialers);
}
