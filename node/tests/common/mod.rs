//! What the node's integration tests share: starting a real `nexus pipeline` from a config file and
//! reading its `ready` line. The process is killed when the `Node` is dropped.

// Each test file uses part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_consensus::{SignableTransaction, Signed, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{hex, keccak256, Address, Bytes, Signature, TxKind, B256, U256};
use k256::ecdsa::SigningKey;
use serde_json::{json, Value};

pub mod eth;
pub mod ws;

/// The EVM chain id of every Nexus chain (`EvmConfig::default`).
pub const EVM_CHAIN_ID: u64 = 0x4e58;

/// The binary under test.
pub const NEXUS: &str = env!("CARGO_BIN_EXE_nexus");

/// A running node.
pub struct Node {
    /// The process.
    pub child: Child,
    /// Its `ready` line.
    pub ready: Value,
    /// The rest of its standard output (the `stopped` line comes here).
    pub stdout: BufReader<ChildStdout>,
    /// Everything it printed on standard error so far (read by a thread, so that its log
    /// and status lines can never fill the pipe and stall the node).
    pub stderr: Arc<Mutex<String>>,
}

impl Node {
    /// A bound address from the `ready` line (`listen`, `order_entry`, `market_data`).
    pub fn address(&self, field: &str) -> SocketAddr {
        self.ready[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {}", self.ready))
            .parse()
            .expect("an address")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `nexus pipeline --config CONFIG` and waits for its `ready` line; on failure,
/// panics with what the node printed.
pub fn start(config: &Path) -> Node {
    let config = config.as_os_str();
    start_args(&["pipeline".as_ref(), "--config".as_ref(), config])
}

/// Starts `nexus run` (a chain of one) on `data` with every port free and waits for its
/// `ready` line.
pub fn run_chain(data: &Path) -> Node {
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["run".as_ref(), "--quiet".as_ref(), "--data-dir".as_ref()];
    args.push(data.as_os_str());
    for flag in [
        "--listen",
        "--order-entry-listen",
        "--market-data-listen",
        "--tx-listen",
        "--eth-listen",
    ] {
        args.push(flag.as_ref());
        args.push("127.0.0.1:0".as_ref());
    }
    start_args(&args)
}

/// Starts `nexus ARGS...` (a command that prints a `ready` line) and waits for that line.
pub fn start_args(args: &[&std::ffi::OsStr]) -> Node {
    start_exe(NEXUS, args)
}

/// Starts the binary `exe` with `args` (a command that prints a `ready` line) and waits
/// for that line.
pub fn start_exe(exe: &str, args: &[&std::ffi::OsStr]) -> Node {
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nexus");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read the ready line");
    let ready: Value = match serde_json::from_str(&line) {
        Ok(value) => value,
        Err(_) => {
            let _ = child.wait();
            std::thread::sleep(std::time::Duration::from_millis(100));
            let stderr = stderr.lock().unwrap().clone();
            panic!("node did not start: stdout {line:?}, stderr {stderr}");
        }
    };
    assert_eq!(ready["event"], "ready", "{ready}");
    Node {
        child,
        ready,
        stdout,
        stderr,
    }
}

/// Reads `pipe` to its end on a thread, collecting the text.
pub fn drain(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}

/// A client of a node's JSON Lines port (10 s read timeout).
pub struct JsonClient {
    /// Sending side.
    pub writer: std::net::TcpStream,
    /// Receiving side.
    pub reader: BufReader<std::net::TcpStream>,
}

impl JsonClient {
    /// Connects to the port at `addr`.
    pub fn connect(addr: SocketAddr) -> JsonClient {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        JsonClient {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Sends raw text (the caller writes the newlines).
    pub fn send(&mut self, text: &str) {
        std::io::Write::write_all(&mut self.writer, text.as_bytes()).unwrap();
    }

    /// Sends one JSON line.
    pub fn send_json(&mut self, line: &Value) {
        self.send(&format!("{line}\n"));
    }

    /// The next reply.
    pub fn next(&mut self) -> Value {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .expect("a reply before the timeout");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line:?}"))
    }

    /// Replies up to and including the first with `ev` == `until` for line `line`.
    pub fn until(&mut self, until: &str, line: u64) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let value = self.next();
            let done = value["ev"] == until && value["line"] == line;
            seen.push(value);
            if done {
                return seen;
            }
        }
    }
}

/// Writes a 4-validator devnet's configuration and keys into `dir` (`nexus devnet
/// --init-only`, plus `args`) and returns the configuration's path.
pub fn init_devnet(dir: &Path, args: &[&str]) -> std::path::PathBuf {
    let out = Command::new(NEXUS)
        .args(["devnet", "--validators", "4", "--init-only", "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .expect("nexus devnet --init-only");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    std::path::PathBuf::from(v["config"].as_str().expect("config path"))
}

/// One JSON-RPC call over HTTP/1.1; the response object (`result` or `error`).
pub fn rpc(addr: SocketAddr, method: &str, params: Value) -> Value {
    post(
        addr,
        &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
    )
}

/// One HTTP request of `body` (a call or a batch) on its own connection; the response.
pub fn post(addr: SocketAddr, body: &Value) -> Value {
    let body = body.to_string();
    let mut stream = TcpStream::connect(addr).expect("connect to the RPC port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let text = String::from_utf8(response).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// The body of a chunked HTTP response.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// A signed order of `key` in the devnet's market at 250,000 (nonce: the wall clock in ms
/// plus the oid).
pub fn signed_order(
    key: &ed25519_dalek::SigningKey,
    chain_id: [u8; 32],
    oid: u64,
    side: engine::Side,
    qty: i64,
    tif: engine::TimeInForce,
) -> Vec<u8> {
    signed_order_in(
        key,
        chain_id,
        node::load::MARKET,
        250_000,
        oid,
        side,
        qty,
        tif,
    )
}

/// A signed GTC/IOC order of `key` in `market` at `price` ticks (nonce: the wall clock in
/// ms plus the oid).
// Each argument is a field of the order; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn signed_order_in(
    key: &ed25519_dalek::SigningKey,
    chain_id: [u8; 32],
    market: u32,
    price: i64,
    oid: u64,
    side: engine::Side,
    qty: i64,
    tif: engine::TimeInForce,
) -> Vec<u8> {
    let now_ms = node::validator::now_ns() / 1_000_000;
    transactions::Transaction {
        chain_id,
        signer: key.verifying_key().to_bytes(),
        nonce: now_ms + oid,
        actions: vec![transactions::Action::Place {
            market,
            oid,
            side,
            price: Some(price),
            qty,
            tif,
            stp: engine::SelfTradePrevention::CancelTaker,
            reduce_only: false,
        }],
    }
    .sign(key)
    .bytes()
    .to_vec()
}

/// Reads order-entry messages until `done` holds for one; returns them all.
pub fn read_until(
    client: &mut gateway::client::OrderClient,
    done: impl Fn(&gateway::client::ServerMessage) -> bool,
) -> Vec<gateway::client::ServerMessage> {
    let mut seen = Vec::new();
    loop {
        let message = client.recv().expect("a message before the timeout");
        let stop = done(&message);
        seen.push(message);
        if stop {
            return seen;
        }
    }
}

/// An EVM key and its next nonce.
pub struct Wallet {
    /// The secp256k1 key.
    pub key: SigningKey,
    /// Its address.
    pub address: Address,
    /// The nonce of its next transaction.
    pub nonce: u64,
}

impl Wallet {
    /// The wallet of `secret`, at nonce 0.
    pub fn new(secret: &[u8; 32]) -> Wallet {
        let key = SigningKey::from_slice(secret).expect("valid key");
        let point = key.verifying_key().to_encoded_point(false);
        let address = Address::from_slice(&keccak256(&point.as_bytes()[1..])[12..]);
        Wallet {
            key,
            address,
            nonce: 0,
        }
    }

    /// `tx` signed, as a raw transaction in 0x hex.
    pub fn sign(&self, tx: TxEip1559) -> String {
        self.sign_any(tx)
    }

    /// A transaction of any type signed, as a raw transaction in 0x hex.
    pub fn sign_any<T>(&self, tx: T) -> String
    where
        T: SignableTransaction<Signature>,
        TxEnvelope: From<Signed<T>>,
    {
        let hash: B256 = tx.signature_hash();
        let (sig, recid) = self.key.sign_prehash_recoverable(hash.as_slice()).unwrap();
        let raw = TxEnvelope::from(tx.into_signed(Signature::from((sig, recid)))).encoded_2718();
        format!("0x{}", hex::encode(raw))
    }

    /// An EIP-1559 transaction at the next nonce (gas 3M, 2 gwei max fee).
    pub fn tx(&self, chain_id: u64, to: Option<Address>, value: U256, input: Vec<u8>) -> TxEip1559 {
        TxEip1559 {
            chain_id,
            nonce: self.nonce,
            gas_limit: 3_000_000,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 100_000_000,
            to: to.map_or(TxKind::Create, TxKind::Call),
            value,
            access_list: Default::default(),
            input: Bytes::from(input),
        }
    }

    /// Signs the next transaction and sends it to `addr`; returns its hash.
    pub fn send(
        &mut self,
        addr: SocketAddr,
        to: Option<Address>,
        value: U256,
        input: Vec<u8>,
    ) -> String {
        let raw = self.sign(self.tx(EVM_CHAIN_ID, to, value, input));
        let response = rpc(addr, "eth_sendRawTransaction", json!([raw]));
        let hash = response["result"].clone();
        assert!(hash.is_string(), "{response}");
        self.nonce += 1;
        hash.as_str().expect("a hash").to_string()
    }
}

/// Spawns `command` (a `nexus validator ...`) with its standard output piped; a thread sends
/// each of its JSON lines to `lines`, tagged with `index`, until the process or the
/// receiver is gone.
pub fn spawn_validator(
    mut command: Command,
    index: usize,
    lines: std::sync::mpsc::Sender<(usize, Value)>,
) -> Child {
    let mut child = command
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn validator");
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let value: Value = serde_json::from_str(&line).expect("validator prints JSON");
            if lines.send((index, value)).is_err() {
                break;
            }
        }
    });
    child
}

/// What a program run by [`run_to_end`] did.
pub struct Finished {
    /// Its exit status; `None` if it was killed at the time limit.
    pub status: Option<ExitStatus>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard output, then its standard error: for failure messages.
    pub report: String,
}

/// Runs `command` (no standard input) until it exits, or kills it after `limit`; what it
/// printed is collected in temporary files, so no pipe can fill and stall it.
pub fn run_to_end(mut command: Command, limit: Duration) -> Finished {
    let out = tempfile::NamedTempFile::new().expect("stdout file");
    let err = tempfile::NamedTempFile::new().expect("stderr file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out.reopen().expect("reopen"))
        .stderr(err.reopen().expect("reopen"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let end = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(out.path()).expect("stdout");
    let stderr = std::fs::read_to_string(err.path()).expect("stderr");
    let report = format!("{stdout}\nstderr:\n{stderr}");
    Finished {
        status,
        stdout,
        report,
    }
}
