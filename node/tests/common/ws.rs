//! A WebSocket JSON-RPC client (soketto over tokio) for `eth_subscribe` tests: calls are
//! answered in order, notifications are kept until asked for. Every read has a deadline.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// One WebSocket connection to a JSON-RPC server.
pub struct Ws {
    runtime: tokio::runtime::Runtime,
    sender: soketto::connection::Sender<Compat<TcpStream>>,
    receiver: soketto::connection::Receiver<Compat<TcpStream>>,
    next_id: u64,
    /// Notifications read while waiting for something else.
    pub notifications: VecDeque<Value>,
}

impl Ws {
    /// Connects and upgrades to WebSocket on `/`.
    pub fn connect(addr: SocketAddr) -> Ws {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let (sender, receiver) = runtime.block_on(async {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let host = addr.to_string();
            let mut client = soketto::handshake::Client::new(stream.compat(), &host, "/");
            match client.handshake().await.expect("handshake") {
                soketto::handshake::ServerResponse::Accepted { .. } => {}
                other => panic!("WebSocket upgrade refused: {other:?}"),
            }
            client.into_builder().finish()
        });
        Ws {
            runtime,
            sender,
            receiver,
            next_id: 1,
            notifications: VecDeque::new(),
        }
    }

    /// The next message from the server (10 s deadline).
    fn read(&mut self, deadline: Instant) -> Option<Value> {
        let left = deadline.saturating_duration_since(Instant::now());
        let receiver = &mut self.receiver;
        self.runtime.block_on(async {
            let mut data = Vec::new();
            let read = tokio::time::timeout(left, receiver.receive_data(&mut data)).await;
            match read {
                Err(_) => None,
                Ok(read) => {
                    read.expect("a WebSocket message");
                    Some(serde_json::from_slice(&data).expect("JSON"))
                }
            }
        })
    }

    /// One call; the response object (`result` or `error`).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let text = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let sender = &mut self.sender;
        self.runtime.block_on(async {
            sender.send_text(text.to_string()).await.expect("send");
            sender.flush().await.expect("flush");
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let message = self.read(deadline).expect("an answer before the deadline");
            if message["id"] == json!(id) {
                return message;
            }
            self.notifications.push_back(message);
        }
    }

    /// `eth_subscribe(params)`: the subscription id.
    pub fn subscribe(&mut self, params: Value) -> String {
        let answer = self.call("eth_subscribe", params);
        let id = answer["result"].as_str();
        id.unwrap_or_else(|| panic!("subscribed: {answer}"))
            .to_string()
    }

    /// The next notification of subscription `id` (10 s deadline), skipping none of the
    /// others (they stay queued).
    pub fn next(&mut self, id: &str) -> Value {
        let position = |n: &Value| n["params"]["subscription"] == json!(id);
        if let Some(i) = self.notifications.iter().position(position) {
            let n = self.notifications.remove(i).expect("present");
            return n["params"]["result"].clone();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let Some(message) = self.read(deadline) else {
                panic!("no notification of {id} within 10 s");
            };
            if position(&message) {
                return message["params"]["result"].clone();
            }
            self.notifications.push_back(message);
        }
    }
}
