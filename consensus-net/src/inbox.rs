//! The frames received from peers, one bounded queue per peer, taken in turn.
//!
//! Each peer's frames wait in a queue of their own (`NetConfig::recv_queue` frames). A peer
//! whose queue is full stops being read, which QUIC flow control pushes back to that peer
//! alone; [`Inbox::recv`] takes from the peers' queues in round-robin order, so a frame of a
//! quiet validator waits for at most one frame of each other peer, however much a noisy one
//! sends.

use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::transport::Received;

/// Every peer's queue of received frames.
#[derive(Debug)]
pub struct Inbox {
    queues: Vec<mpsc::Receiver<Received>>,
    /// The queue to look at first next time.
    next: usize,
}

impl Inbox {
    /// An inbox over these queues (one per peer).
    pub(crate) fn new(queues: Vec<mpsc::Receiver<Received>>) -> Inbox {
        Inbox { queues, next: 0 }
    }

    /// The next frame, taking the peers in turn; `None` once every queue is closed (the
    /// network stopped). With no peers it never returns.
    pub async fn recv(&mut self) -> Option<Received> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// A frame that is already here, taking the peers in turn.
    pub fn try_recv(&mut self) -> Option<Received> {
        let n = self.queues.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if let Ok(received) = self.queues[i].try_recv() {
                self.next = (i + 1) % n;
                return Some(received);
            }
        }
        None
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        let n = self.queues.len();
        let mut closed = 0;
        for k in 0..n {
            let i = (self.next + k) % n;
            match self.queues[i].poll_recv(cx) {
                Poll::Ready(Some(received)) => {
                    self.next = (i + 1) % n;
                    return Poll::Ready(Some(received));
                }
                Poll::Ready(None) => closed += 1,
                Poll::Pending => {}
            }
        }
        if n > 0 && closed == n {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}
