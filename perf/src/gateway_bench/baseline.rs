//! The raw loopback baseline: a server thread echoing fixed 48-byte messages (the size of a
//! `NewOrder`) over TCP with `TCP_NODELAY`, and a client timing each round trip, either open
//! loop with the benchmark's own sender/receiver thread layout or closed loop back to back.
//! Whatever the node adds on top of this is the node's cost; this is the floor the machine
//! (and the harness) sets.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::schedule::{Clock, Schedule, Waiter};
use crate::latency::LatencyRecorder;

/// Bytes per message each way.
pub const MESSAGE_BYTES: usize = 48;

/// How the client sends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Closed loop: one thread writes, reads the echo, and starts the next round trip at
    /// once (the classic ping-pong).
    BackToBack,
    /// Open loop, shaped like an order connection of the benchmark: a sender thread writes
    /// on the schedule (this rate per second, the same waiting), a receiver thread reads the
    /// echoes and times each from its write. The node replaced by an echo thread: what the
    /// harness and the machine cost without the node.
    OpenLoop(f64),
}

fn echo_server(listener: TcpListener) -> io::Result<()> {
    let (mut stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let mut message = [0u8; MESSAGE_BYTES];
    loop {
        match stream.read_exact(&mut message) {
            Ok(()) => stream.write_all(&message)?,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Runs `count` round trips (after `warmup` unrecorded ones) against an echo thread;
/// returns the histogram of round-trip times, each from just before the message's `write`
/// to the end of the `read` of its echo.
pub fn ping_pong(
    count: u64,
    warmup: u64,
    pace: Pace,
    waiter: Waiter,
) -> io::Result<LatencyRecorder> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let server = std::thread::Builder::new()
        .name("loopback-echo".into())
        .spawn(move || echo_server(listener))?;
    let stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let total = count + warmup;
    let recorder = match pace {
        Pace::BackToBack => back_to_back(stream, total, warmup)?,
        Pace::OpenLoop(rate) => open_loop(stream, total, warmup, rate, waiter)?,
    };
    server
        .join()
        .map_err(|_| io::Error::other("echo thread panicked"))??;
    Ok(recorder)
}

fn message_of(i: u64) -> [u8; MESSAGE_BYTES] {
    let mut message = [0u8; MESSAGE_BYTES];
    message[0] = MESSAGE_BYTES as u8;
    message[8..16].copy_from_slice(&i.to_le_bytes());
    message
}

fn index_of(message: &[u8; MESSAGE_BYTES]) -> u64 {
    u64::from_le_bytes(message[8..16].try_into().expect("8 bytes"))
}

fn back_to_back(mut stream: TcpStream, total: u64, warmup: u64) -> io::Result<LatencyRecorder> {
    let clock = Clock::new();
    let mut recorder = LatencyRecorder::new();
    for i in 0..total {
        let message = message_of(i);
        let start = clock.now_ns();
        stream.write_all(&message)?;
        let mut echo = [0u8; MESSAGE_BYTES];
        stream.read_exact(&mut echo)?;
        let end = clock.now_ns();
        if echo != message {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs"));
        }
        if i >= warmup {
            recorder.record_ns(end - start);
        }
    }
    Ok(recorder)
}

fn open_loop(
    mut stream: TcpStream,
    total: u64,
    warmup: u64,
    rate: f64,
    waiter: Waiter,
) -> io::Result<LatencyRecorder> {
    let clock = Clock::new();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let mut reader = stream.try_clone()?;
    let receiver = {
        let sent = sent.clone();
        std::thread::Builder::new()
            .name("loopback-recv".into())
            .spawn(move || -> io::Result<LatencyRecorder> {
                let mut recorder = LatencyRecorder::new();
                for _ in 0..total {
                    let mut echo = [0u8; MESSAGE_BYTES];
                    reader.read_exact(&mut echo)?;
                    let now = clock.now_ns();
                    let i = index_of(&echo);
                    let start = sent
                        .get(i as usize)
                        .map(|s| s.load(Ordering::Acquire))
                        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad index"))?;
                    if i >= warmup {
                        recorder.record_ns(now.saturating_sub(start));
                    }
                }
                Ok(recorder)
            })?
    };
    let schedule = Schedule::new(clock.now_ns() + 1_000_000, 0, rate, u64::MAX);
    for i in 0..total {
        if let Some(due) = schedule.due_ns(i) {
            waiter.wait_until(&clock, due);
        }
        let message = message_of(i);
        sent[i as usize].store(clock.now_ns(), Ordering::Release);
        stream.write_all(&message)?;
    }
    let recorder = receiver
        .join()
        .map_err(|_| io::Error::other("receiver thread panicked"))??;
    drop(stream);
    Ok(recorder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_one_sample_per_round_trip() {
        let waiter = Waiter { spin_ns: 0 };
        let recorder = ping_pong(200, 10, Pace::BackToBack, waiter).unwrap();
        assert_eq!(recorder.summary().count, 200);
        let recorder = ping_pong(20, 0, Pace::OpenLoop(2_000.0), waiter).unwrap();
        assert_eq!(recorder.summary().count, 20);
        assert!(recorder.summary().p50_ns > 0);
    }
}
