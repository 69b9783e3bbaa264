//! The binary gateway of a validator: order entry and market data (docs/protocol.md) on a
//! thread of their own, beside the validator's host.
//!
//! The gateway's state machines ([`gateway::order_entry::OrderEntry`] in chain mode,
//! [`gateway::market_data::MarketData`]) and their mio shell ([`GatewayServer`]) run here
//! unchanged; only their inputs and outputs cross to the host:
//!
//! - to the host: the signed transactions sessions send ([`TxSubmission`]), in batches
//!   ([`crate::validator`] admits them into its mempool like the transaction port's);
//! - from the host ([`ToGateway`]): what the mempool did with each (admitted, refused,
//!   evicted), and each executed block as pipeline-style outputs: every engine event with the
//!   chain's input seq, a `Sequenced` and then `Finalized` for the transactions this
//!   validator's sessions sent, and the block's level changes (the L2 feed).
//!
//! The host wakes the thread through a [`mio::Waker`] after each send.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{ArrayLadder, Engine, LevelChange};
use gateway::market_data::{MarketData, MarketDataConfig};
use gateway::order_entry::{OrderEntryConfig, TxSubmission};
use gateway::server::{now_ns, GatewayConfig, GatewayServer};
use mio::{Events, Poll, Token, Waker};
use sequencer::{ClientRef, Output};

const WAKER: Token = Token(0);
const FIRST_GATEWAY_TOKEN: usize = 1;
/// How often the state machines' timers run (heartbeats, login and linger timeouts).
const TICK: Duration = Duration::from_millis(10);

/// What the host tells the gateway thread.
#[derive(Debug)]
pub enum ToGateway {
    /// What the mempool did with a session's transaction (`wire::TX_*` and its code).
    Status {
        /// The session and client seq that sent it.
        client: ClientRef,
        /// The transaction's hash.
        hash: [u8; 32],
        /// `wire::TX_ADMITTED`, `wire::TX_REFUSED` or `wire::TX_EVICTED`.
        status: u8,
        /// The mempool's refusal code (0 when admitted).
        code: u16,
    },
    /// A block was decided, made durable and executed: its outputs, in order.
    Block {
        /// Its height.
        height: u64,
        /// Its timestamp, ms.
        block_time_ms: u64,
        /// Events, `Sequenced`, level changes, then `Finalized`.
        outputs: Vec<Output>,
    },
}

/// The host's end of the gateway thread.
pub struct GatewayHandle {
    to_gateway: mpsc::Sender<ToGateway>,
    waker: Arc<Waker>,
    /// Where the ports listen: (order entry, market data).
    pub addrs: (SocketAddr, SocketAddr),
}

impl GatewayHandle {
    /// Sends a message to the thread and wakes it. A stopped thread is not an error here
    /// (the host notices when it stops receiving transactions).
    pub fn send(&self, message: ToGateway) {
        if self.to_gateway.send(message).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// Where the validator's gateway listens and how many clients it takes.
#[derive(Debug, Clone)]
pub struct ChainGatewayConfig {
    /// Order-entry listen address.
    pub order_entry: SocketAddr,
    /// Market-data listen address.
    pub market_data: SocketAddr,
    /// The chain id (order entry takes only transactions signed for it).
    pub chain_id: [u8; 32],
    /// The last executed block and its timestamp (ms) when the thread starts.
    pub tip: (u64, u64),
}

/// A transaction a session sent, with its hash if the gateway thread verified its signature
/// (the host then admits it without checking again).
#[derive(Debug)]
pub struct GatewayTx {
    /// The session, client seq and bytes.
    pub submission: TxSubmission,
    /// Its hash, if it decoded and its signature verified here.
    pub verified: Option<transactions::TxHash>,
}

/// Verifies the signatures of a batch of sessions' transactions on this thread (one batch
/// verification), so the host's loop does not: the verification of what clients send runs
/// in parallel with consensus and execution.
fn verify(batch: Vec<TxSubmission>, keys: &mut transactions::KeyCache) -> Vec<GatewayTx> {
    let decoded: Vec<Option<transactions::SignedTransaction>> = batch
        .iter()
        .map(|tx| transactions::SignedTransaction::decode(&tx.bytes).ok())
        .collect();
    let refs: Vec<&transactions::SignedTransaction> = decoded.iter().flatten().collect();
    let mut results = transactions::verify_batch_cached(&refs, keys).into_iter();
    batch
        .into_iter()
        .zip(&decoded)
        .map(|(submission, tx)| {
            let verified = tx.as_ref().and_then(|tx| {
                let ok = results.next().is_some_and(|r| r.is_ok());
                ok.then(|| tx.hash())
            });
            GatewayTx {
                submission,
                verified,
            }
        })
        .collect()
}

/// Binds both ports, builds the feed from `engine`'s current books, and starts the thread.
/// Batches of transactions sessions send go to `to_host`.
pub fn spawn(
    config: ChainGatewayConfig,
    engine: &Engine<ArrayLadder>,
    to_host: tokio::sync::mpsc::Sender<Vec<GatewayTx>>,
) -> io::Result<GatewayHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let market_data = MarketData::from_engine(
        MarketDataConfig {
            replay_messages: 100_000,
            max_pending_bytes: 16 << 20,
            max_unsent_total_bytes: gateway::market_data::DEFAULT_MAX_UNSENT_TOTAL_BYTES,
            heartbeat_ns: 1_000_000_000,
            feed_epoch: now_ns(),
        },
        engine,
    );
    let mut server = GatewayServer::bind(
        GatewayConfig {
            order_entry_listen: config.order_entry,
            market_data_listen: config.market_data,
            max_connections: 1024,
            order_entry: OrderEntryConfig {
                markets: engine.markets().collect(),
                chain_id: Some(config.chain_id),
                ..OrderEntryConfig::default()
            },
        },
        poll.registry(),
        FIRST_GATEWAY_TOKEN,
        market_data,
    )?;
    server.order_entry.set_chain_tip(config.tip.0, config.tip.1);
    let addrs = server.local_addrs()?;
    let (to_gateway, from_host) = mpsc::channel();
    std::thread::Builder::new()
        .name("gateway".into())
        .spawn(move || {
            if let Err(e) = serve(poll, server, from_host, to_host) {
                eprintln!("nexus validator: gateway stopped: {e}");
            }
        })?;
    Ok(GatewayHandle {
        to_gateway,
        waker,
        addrs,
    })
}

/// The thread's loop: sockets in, transactions to the host, the host's outputs to sessions
/// and the feed. Ends when the host is gone.
fn serve(
    mut poll: Poll,
    mut server: GatewayServer,
    from_host: mpsc::Receiver<ToGateway>,
    to_host: tokio::sync::mpsc::Sender<Vec<GatewayTx>>,
) -> io::Result<()> {
    let mut events = Events::with_capacity(1024);
    let mut last_tick = Instant::now();
    let mut batch = Vec::new();
    // Signer keys found acceptable, so a session's key is checked once.
    let mut keys = transactions::KeyCache::new(transactions::KeyCache::DEFAULT_CAPACITY);
    loop {
        let timeout = match server.has_pending_work() {
            true => Duration::ZERO,
            false => TICK,
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() != WAKER {
                server.handle(poll.registry(), event.token(), event.is_writable())?;
            }
        }
        server.read_ready();
        server.order_entry.take_transactions(&mut batch);
        if !batch.is_empty() {
            let verified = verify(std::mem::take(&mut batch), &mut keys);
            if to_host.blocking_send(verified).is_err() {
                return Ok(());
            }
        }
        loop {
            match from_host.try_recv() {
                Ok(message) => apply(&mut server, message),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
            }
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            server.tick(poll.registry());
        }
        server.flush(poll.registry())?;
    }
}

/// Feeds one host message to the state machines.
fn apply(server: &mut GatewayServer, message: ToGateway) {
    match message {
        ToGateway::Status {
            client,
            hash,
            status,
            code,
        } => {
            let now = now_ns();
            server
                .order_entry
                .transaction_status(client, hash, status, code, now);
        }
        ToGateway::Block {
            height,
            block_time_ms,
            outputs,
        } => {
            server.order_entry.set_chain_tip(height, block_time_ms);
            for output in &outputs {
                server.on_output(output);
            }
        }
    }
}

/// The `ClientRef` of engine outputs nobody on this validator sent (routed by account only).
pub const NOBODY: ClientRef = ClientRef {
    connection: 0,
    tag: 0,
};

/// A block's outputs for the gateway, built while it executes: every engine event with the
/// chain's input seq (transaction `i` of the block is input `first + i`, then one input per
/// oracle update, per funded perp market and per CoreWriter action, in that order), a
/// `Sequenced` after each transaction a session of this validator sent,
/// then the block's level changes, then `Finalized` for those transactions (the block was
/// durable before it ran).
pub struct BlockFeed {
    /// The seq of the block's first input.
    first: u64,
    height: u64,
    transactions: usize,
    /// Who sent each transaction (a gateway session of this validator, or [`NOBODY`]).
    pub senders: Vec<ClientRef>,
    outputs: Vec<Output>,
    /// The first transaction whose `Sequenced` is not out yet.
    open: usize,
    /// Inputs of the block that no transaction of it sent: oracle updates (one per market),
    /// fundings (one per perp market, when the block crosses a funding boundary) and
    /// CoreWriter actions of the previous EVM block (one each).
    system_inputs: u64,
    last_system: Option<execution::Origin>,
    /// Co-processor answers for local senders, in block order, with their input's seq.
    calls: Vec<(u64, Output)>,
}

impl BlockFeed {
    /// The feed of block `height`, of `transactions` transactions, after `inputs_executed`
    /// inputs of the chain.
    pub fn new(inputs_executed: u64, height: u64, transactions: usize) -> BlockFeed {
        BlockFeed {
            first: inputs_executed + 1,
            height,
            transactions,
            senders: Vec::new(),
            outputs: Vec::new(),
            open: 0,
            system_inputs: 0,
            last_system: None,
            calls: Vec::new(),
        }
    }

    fn sender(&self, index: usize) -> ClientRef {
        self.senders.get(index).copied().unwrap_or(NOBODY)
    }

    /// One engine event of the block; returns the seq of its input.
    pub fn event(&mut self, origin: execution::Origin, event: &engine::Event) -> u64 {
        let (client, seq) = match origin {
            execution::Origin::Tx { index, .. } => {
                self.close_before(index);
                (self.sender(index), self.first + index as u64)
            }
            system @ (execution::Origin::Oracle(_)
            | execution::Origin::Funding(_)
            | execution::Origin::CoreWriter(_)) => {
                // A system input's events come together: a new origin is the next input
                // (oracle updates and fundings always have one; a CoreWriter action
                // without events is not counted).
                self.close_before(self.transactions);
                if self.last_system != Some(system) {
                    self.last_system = Some(system);
                    self.system_inputs += 1;
                }
                let seq = self.first + self.transactions as u64 + self.system_inputs - 1;
                (NOBODY, seq)
            }
        };
        self.outputs.push(Output::Event {
            client,
            seq,
            event: *event,
        });
        seq
    }

    /// What a co-processor call of transaction `index` answered, for its sender (calls come
    /// in block order, after the block's events): [`BlockFeed::finish`] puts it after the
    /// transaction's events, just before its `Sequenced`.
    pub fn call(&mut self, index: usize, call: (u16, u32, execution::coprocessor::CallResult)) {
        let client = self.sender(index);
        if client == NOBODY {
            return;
        }
        let seq = self.first + index as u64;
        let (action, coprocessor, result) = call;
        let output = Output::Call {
            client,
            seq,
            action,
            coprocessor,
            result: result.map_err(|refusal| refusal.code),
        };
        self.calls.push((seq, output));
    }

    /// Puts each call's answer just before its transaction's `Sequenced` (every transaction
    /// with a local sender has one by now): one pass.
    fn merge_calls(&mut self) {
        if self.calls.is_empty() {
            return;
        }
        let mut calls = std::mem::take(&mut self.calls).into_iter().peekable();
        let mut merged = Vec::with_capacity(self.outputs.len() + calls.len());
        for output in std::mem::take(&mut self.outputs) {
            if let Output::Sequenced { seq, .. } = output {
                while let Some((_, call)) = calls.next_if(|(s, _)| *s == seq) {
                    merged.push(call);
                }
            }
            merged.push(output);
        }
        merged.extend(calls.map(|(_, call)| call));
        self.outputs = merged;
    }

    /// Every transaction before `index` is done: the `Sequenced` of those still open.
    fn close_before(&mut self, index: usize) {
        for i in self.open..index {
            let client = self.sender(i);
            if client != NOBODY {
                self.outputs.push(Output::Sequenced {
                    client,
                    seq: self.first + i as u64,
                    height: self.height,
                    times: Default::default(),
                });
            }
        }
        self.open = self.open.max(index);
    }

    /// The chain's input count after the block (so far).
    pub fn inputs_executed(&self) -> u64 {
        self.first - 1 + self.transactions as u64 + self.system_inputs
    }

    /// Closes the block: the remaining `Sequenced`, its level `changes` (each level's size at
    /// the end of the block, given the block's last seq), then every `Finalized`.
    pub fn finish(mut self, changes: Vec<LevelChange>) -> Vec<Output> {
        self.close_before(self.transactions);
        self.merge_calls();
        let last_seq = self.inputs_executed();
        for change in changes {
            self.outputs.push(Output::Level {
                seq: last_seq,
                change,
            });
        }
        for i in 0..self.transactions {
            let client = self.sender(i);
            if client != NOBODY {
                self.outputs.push(Output::Finalized {
                    client,
                    seq: self.first + i as u64,
                    height: self.height,
                });
            }
        }
        self.outputs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{Event, RejectReason, Side};
    use execution::Origin;

    #[test]
    fn the_gateway_thread_verifies_signatures_and_passes_every_transaction_on() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let tx = transactions::Transaction {
            chain_id: [1; 32],
            signer: key.verifying_key().to_bytes(),
            nonce: 5,
            actions: vec![transactions::Action::CancelAll { market: 0 }],
        }
        .sign(&key);
        let good = tx.bytes().to_vec();
        let mut forged = good.clone();
        *forged.last_mut().unwrap() ^= 1;
        let submission = |bytes: Vec<u8>, seq: u64| TxSubmission {
            client: ClientRef {
                connection: 1,
                tag: seq,
            },
            bytes,
        };
        let batch = vec![
            submission(good, 1),
            submission(forged, 2),
            submission(b"garbage".to_vec(), 3),
        ];
        let out = verify(batch, &mut transactions::KeyCache::new(16));
        let verified: Vec<Option<transactions::TxHash>> = out.iter().map(|t| t.verified).collect();
        assert_eq!(verified, vec![Some(tx.hash()), None, None]);
        let seqs: Vec<u64> = out.iter().map(|t| t.submission.client.tag).collect();
        assert_eq!(seqs, [1, 2, 3], "every transaction goes on, in order");
    }

    fn rejected(account: u64) -> Event {
        Event::Rejected {
            account,
            oid: Some(1),
            reason: RejectReason::UnknownOrder,
        }
    }

    #[test]
    fn a_blocks_feed_numbers_inputs_across_the_chain_and_answers_only_local_senders() {
        // Block 5 after 10 inputs: three transactions (the second from a local session and
        // without events), then oracle updates of two markets, fundings of two perp markets
        // (one with two events) and one CoreWriter action.
        let local = ClientRef {
            connection: 1 << 63 | 7,
            tag: 3,
        };
        let mut feed = BlockFeed::new(10, 5, 3);
        feed.senders = vec![NOBODY, local, NOBODY];
        feed.event(
            Origin::Tx {
                index: 0,
                action: 0,
            },
            &rejected(1),
        );
        feed.event(
            Origin::Tx {
                index: 2,
                action: 1,
            },
            &rejected(3),
        );
        feed.event(Origin::Oracle(1), &rejected(4));
        feed.event(Origin::Oracle(1), &rejected(5));
        feed.event(Origin::Oracle(2), &rejected(6));
        feed.event(Origin::Funding(1), &rejected(7));
        feed.event(Origin::Funding(1), &rejected(8));
        feed.event(Origin::Funding(2), &rejected(9));
        feed.event(Origin::CoreWriter(1 << 24), &rejected(10));
        assert_eq!(feed.inputs_executed(), 18);
        let level = LevelChange {
            market: 1,
            side: Side::Buy,
            price: 10,
            lots: 0,
        };
        let outputs = feed.finish(vec![level]);
        let seqs: Vec<(&str, u64)> = outputs
            .iter()
            .map(|o| match o {
                Output::Event { seq, .. } => ("event", *seq),
                Output::Sequenced { seq, client, .. } => {
                    assert_eq!(*client, local);
                    ("sequenced", *seq)
                }
                Output::Level { seq, .. } => ("level", *seq),
                Output::Finalized { seq, height, .. } => {
                    assert_eq!(*height, 5);
                    ("finalized", *seq)
                }
                _ => ("other", 0),
            })
            .collect();
        assert_eq!(
            seqs,
            [
                ("event", 11),
                ("sequenced", 12),
                ("event", 13),
                ("event", 14),
                ("event", 14),
                ("event", 15),
                ("event", 16),
                ("event", 16),
                ("event", 17),
                ("event", 18),
                ("level", 18),
                ("finalized", 12),
            ]
        );
    }

    #[test]
    fn call_answers_come_before_their_transactions_sequenced_in_block_order() {
        let (a, b) = (
            ClientRef {
                connection: 1,
                tag: 1,
            },
            ClientRef {
                connection: 2,
                tag: 2,
            },
        );
        let mut feed = BlockFeed::new(0, 1, 3);
        feed.senders = vec![a, NOBODY, b];
        let tx = |index| Origin::Tx { index, action: 0 };
        feed.event(tx(0), &rejected(1));
        feed.event(tx(2), &rejected(3));
        // Answers after the block's events, as the execution reports them.
        for index in [0, 1, 2, 2] {
            feed.call(index, (0, 1, Ok([index as u8; 32])));
        }
        let kinds: Vec<(&str, u64)> = feed
            .finish(Vec::new())
            .iter()
            .map(|o| match o {
                Output::Event { seq, .. } => ("event", *seq),
                Output::Call { seq, .. } => ("call", *seq),
                Output::Sequenced { seq, .. } => ("sequenced", *seq),
                Output::Finalized { seq, .. } => ("finalized", *seq),
                _ => ("other", 0),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("event", 1),
                ("call", 1),
                ("sequenced", 1),
                ("event", 3),
                ("call", 3),
                ("call", 3),
                ("sequenced", 3),
                ("finalized", 1),
                ("finalized", 3),
            ]
        );
    }
}
