//! The server's connections against a fake host (every call answered with its connection's
//! number, every subscription accepted): the cap on open connections, the idle timeout,
//! connection numbers, WebSocket subscriptions. Every wait has a deadline; no assertion is
//! on elapsed time.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use crate::connections::Limits;
use crate::{serve_with, EthRequest};

/// The longest any one wait may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);
/// Between attempts while waiting for the server to see a connection closed.
const RETRY: Duration = Duration::from_millis(20);

/// A server with these limits and its fake host; the host hands each subscription's
/// sender to the returned receiver.
async fn server(
    limits: Limits,
) -> (
    SocketAddr,
    jsonrpsee::server::ServerHandle,
    mpsc::UnboundedReceiver<mpsc::Sender<Value>>,
) {
    let (to_host, requests) = mpsc::channel(16);
    let (subscribed, subscribers) = mpsc::unbounded_channel();
    tokio::spawn(fake_host(requests, subscribed));
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let (addr, handle) = serve_with(local, to_host, limits).await.expect("binds");
    (addr, handle, subscribers)
}

/// Answers every call with the number of the connection it came on; accepts every
/// subscription, handing its sender on.
async fn fake_host(
    mut requests: mpsc::Receiver<EthRequest>,
    subscribed: mpsc::UnboundedSender<mpsc::Sender<Value>>,
) {
    while let Some(request) = requests.recv().await {
        if let Some(subscriber) = request.subscriber {
            let _ = subscribed.send(subscriber);
        }
        let _ = request.reply.send(Ok(json!(request.connection)));
    }
}

/// One JSON-RPC call over an HTTP/1.1 keep-alive connection: its `result`, or `None` if
/// the server closed the connection without answering.
async fn http_call(stream: &mut TcpStream, method: &str) -> Option<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": []}).to_string();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let read = timeout(DEADLINE, stream.read(&mut chunk)).await;
        let n = read
            .expect("an answer or a close before the deadline")
            .ok()?;
        if n == 0 {
            return None;
        }
        response.extend_from_slice(&chunk[..n]);
        if let Some(answer) = http_answer(&response) {
            return Some(answer["result"].clone());
        }
    }
}

/// The JSON body of an HTTP response, once it has all arrived.
fn http_answer(response: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(response).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let length = head.lines().find_map(|line| {
        let line = line.to_ascii_lowercase();
        let value = line.strip_prefix("content-length:")?;
        value.trim().parse::<usize>().ok()
    })?;
    let body = body.get(..length)?;
    Some(serde_json::from_str(body).expect("a JSON answer"))
}

/// Whether the server closes `stream` (end or reset) before the deadline, without sending
/// anything.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let read = timeout(DEADLINE, stream.read(&mut byte)).await;
    matches!(read, Ok(Ok(0) | Err(_)))
}

/// A new connection that the server serves, waiting (up to the deadline) for it to see
/// earlier ones closed; with its first answer (its number).
async fn served_connection(addr: SocketAddr) -> (TcpStream, u64) {
    for _ in 0..DEADLINE.as_millis() / RETRY.as_millis() {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        if let Some(answer) = http_call(&mut stream, "eth_blockNumber").await {
            return (stream, answer.as_u64().expect("a connection number"));
        }
        tokio::time::sleep(RETRY).await;
    }
    panic!("no connection served before the deadline");
}

/// Past the cap (a WebSocket counted as an HTTP connection), a new TCP connection is closed
/// unanswered while the open ones, idle included, are still served; closing some lets new
/// ones in. Every TCP connection has its own number, the same for all its calls, increasing
/// in the order of acceptance. Dropping the handle stops the server.
#[tokio::test]
async fn connections_over_the_cap_are_closed_and_closing_some_lets_new_ones_in() {
    let limits = Limits {
        connections: 4,
        idle: Duration::from_secs(600),
    };
    let (addr, handle, _subscribers) = server(limits).await;
    let mut open = Vec::new();
    for _ in 1..limits.connections {
        open.push(TcpStream::connect(addr).await.expect("connects"));
    }
    let mut ws = Ws::connect(addr).await;
    let mut over = TcpStream::connect(addr).await.expect("the kernel accepts");
    assert_eq!(http_call(&mut over, "eth_blockNumber").await, None);
    assert!(closed_by_server(&mut over).await);
    ws.send("eth_chainId", json!([])).await;
    let answer = ws.receive().await.expect("the WebSocket is served");
    assert_eq!(answer["result"], json!(open.len()));
    for (n, stream) in open.iter_mut().enumerate().rev() {
        let first = http_call(stream, "eth_chainId").await;
        assert_eq!(first, Some(json!(n)), "connection {n} is served");
        let second = http_call(stream, "eth_blockNumber").await;
        assert_eq!(
            second,
            Some(json!(n)),
            "the same number for the same connection"
        );
    }
    drop(open.drain(..2));
    let (mut first, a) = served_connection(addr).await;
    let (_second, b) = served_connection(addr).await;
    assert!(
        a >= limits.connections as u64 && b > a,
        "new numbers: {a}, {b}"
    );
    let mut over = TcpStream::connect(addr).await.expect("the kernel accepts");
    assert_eq!(http_call(&mut over, "eth_blockNumber").await, None);
    assert_eq!(
        http_call(&mut first, "eth_blockNumber").await,
        Some(json!(a))
    );
    drop(handle);
    for _ in 0..DEADLINE.as_millis() / RETRY.as_millis() {
        if TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
    panic!("the server still accepts after its handle was dropped");
}

/// A WebSocket JSON-RPC client (soketto).
struct Ws {
    sender: soketto::connection::Sender<Compat<TcpStream>>,
    receiver: soketto::connection::Receiver<Compat<TcpStream>>,
}

impl Ws {
    /// Connects and upgrades on `/`.
    async fn connect(addr: SocketAddr) -> Ws {
        let stream = TcpStream::connect(addr).await.expect("connects");
        let host = addr.to_string();
        let mut client = soketto::handshake::Client::new(stream.compat(), &host, "/");
        let response = client.handshake().await.expect("a handshake");
        assert!(
            matches!(
                response,
                soketto::handshake::ServerResponse::Accepted { .. }
            ),
            "upgraded"
        );
        let (sender, receiver) = client.into_builder().finish();
        Ws { sender, receiver }
    }

    /// Sends a call.
    async fn send(&mut self, method: &str, params: Value) {
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        self.sender
            .send_text(call.to_string())
            .await
            .expect("sends");
        self.sender.flush().await.expect("flushes");
    }

    /// The next message, or `None` if the connection ended.
    async fn receive(&mut self) -> Option<Value> {
        let mut data = Vec::new();
        let read = timeout(DEADLINE, self.receiver.receive_data(&mut data)).await;
        read.expect("a message or the end before the deadline")
            .ok()?;
        Some(serde_json::from_slice(&data).expect("JSON"))
    }
}

/// A connection with nothing in progress for the idle time is closed, HTTP keep-alive and
/// WebSocket alike; a WebSocket with a live subscription is not, however long it waits, and
/// its subscription (hex id) still gets notifications; once unsubscribed it is closed too.
#[tokio::test]
async fn idle_connections_are_closed_but_not_while_subscribed() {
    let limits = Limits {
        connections: 4,
        idle: Duration::from_millis(500),
    };
    let (addr, _handle, mut subscribers) = server(limits).await;
    let mut http = TcpStream::connect(addr).await.expect("connects");
    assert_eq!(
        http_call(&mut http, "eth_blockNumber").await,
        Some(json!(0))
    );
    let mut ws = Ws::connect(addr).await;
    ws.send("eth_subscribe", json!(["newHeads"])).await;
    let answer = ws.receive().await.expect("an answer");
    let id = answer["result"]
        .as_str()
        .expect("a subscription id")
        .to_string();
    assert!(id.starts_with("0x"), "{id}");
    let mut idle_ws = Ws::connect(addr).await;
    assert!(closed_by_server(&mut http).await, "idle HTTP closed");
    assert_eq!(idle_ws.receive().await, None, "idle WebSocket closed");
    // Four idle times later the subscribed connection is still open.
    tokio::time::sleep(4 * limits.idle).await;
    let subscriber = subscribers
        .recv()
        .await
        .expect("the host has the subscriber");
    subscriber.send(json!("0xfeed")).await.expect("subscribed");
    let notification = ws.receive().await.expect("a notification");
    assert_eq!(notification["params"]["subscription"], json!(id));
    assert_eq!(notification["params"]["result"], json!("0xfeed"));
    ws.send("eth_unsubscribe", json!([id])).await;
    assert_eq!(
        ws.receive().await.expect("an answer")["result"],
        json!(true)
    );
    assert_eq!(ws.receive().await, None, "closed once idle");
}
