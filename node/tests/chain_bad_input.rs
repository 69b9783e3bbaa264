//! Bad signed transactions through the client ports of a running chain of one (`nexus run`):
//! raw bytes on the transaction port (docs/transactions.md, "Submitting to a validator") and
//! in the binary gateway's `Transaction` messages (docs/protocol.md, "Signed transactions
//! (chains)"). A correctly signed bulk of 65 actions (one more than a transaction holds), a
//! transaction signed by a key with no account, a nonce the account used already and a nonce
//! older than the window each get the refusal the documents define; none of them executes
//! (the account's open orders are those of its valid transactions only, and the nonce a
//! refused transaction named is still free), and the node goes on admitting and finalizing.
//!
//! Covered elsewhere, so not here: a nonce replayed through a gateway (`devnet.rs`,
//! `a_gateway_client_fails_over_to_another_validator`: refused `nonce_used`).
//!
//! A second chain of one, with `[chain] account_rate = 1`: an account over its rate is
//! refused `account_rate_limited` whichever connection it uses, and transactions that claim
//! its key but fail their checks (a forged signature) do not use its rate; an EVM sender
//! over its rate is refused `account_rate_limited` by `eth_sendRawTransaction`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use engine::{SelfTradePrevention, Side, TimeInForce};
use gateway::client::{ClientError, LoginOptions, OrderClient, ServerMessage as M};
use gateway::wire::{LogoutReason, TX_ADMITTED, TX_REFUSED};
use serde_json::{json, Value};
use transactions::{Action, Transaction, MAX_ACTIONS, NONCE_PAST_MS, SIGNING_DOMAIN};
use txport::{Notice, NoticeKind, NOTICE_LEN};

mod common;
use common::{read_until, run_chain, JsonClient, Node};

/// The first development account of `nexus run` (funded by the default genesis).
const A: u64 = 4026915798854129718;
/// BTC-USD, market 0 of the default genesis.
const BTC_USD: u32 = 0;
/// Refusal codes (docs/transactions.md, "Submitting to a validator").
const NONCE_STALE: u8 = 5;
const NONCE_USED: u8 = 7;
const UNKNOWN_ACCOUNT: u8 = 10;
const FRAME_LENGTH: u8 = 15;
const BAD_SIGNATURE: u8 = 4;
const ACCOUNT_RATE_LIMITED: u8 = 20;

/// What every check needs: the node, the chain id, account A's key, a key with no account,
/// and the next unused nonce of A.
struct Chain {
    node: Node,
    chain_id: [u8; 32],
    key: SigningKey,
    stranger: SigningKey,
    next_nonce: u64,
}

impl Chain {
    /// A fresh nonce of A (the wall clock in ms when the chain started, then one more each).
    fn nonce(&mut self) -> u64 {
        self.next_nonce += 1;
        self.next_nonce
    }

    /// `actions` signed by `key` at `nonce`.
    fn signed(&self, key: &SigningKey, nonce: u64, actions: Vec<Action>) -> Vec<u8> {
        transactions::Transaction {
            chain_id: self.chain_id,
            signer: key.verifying_key().to_bytes(),
            nonce,
            actions,
        }
        .sign(key)
        .bytes()
        .to_vec()
    }

    /// A bulk of 65 resting buys (oids from `first_oid`), correctly signed by A at `nonce`.
    /// `Transaction::sign` encodes at most 64 actions, so the 65th record and the count are
    /// added by hand and the whole signed as docs/transactions.md says, as a client that
    /// ignores the limit would.
    fn oversize_bulk(&self, nonce: u64, first_oid: u64) -> Vec<u8> {
        let transaction = |actions| Transaction {
            chain_id: self.chain_id,
            signer: self.key.verifying_key().to_bytes(),
            nonce,
            actions,
        };
        let oids = first_oid..first_oid + MAX_ACTIONS as u64;
        let mut bytes = transaction(oids.map(buy).collect()).encode_unsigned();
        let last = transaction(vec![buy(first_oid + MAX_ACTIONS as u64)]).encode_unsigned();
        bytes.extend_from_slice(&last[76..]);
        bytes[2..4].copy_from_slice(&(MAX_ACTIONS as u16 + 1).to_le_bytes());
        let message = [SIGNING_DOMAIN.as_slice(), &bytes].concat();
        bytes.extend_from_slice(&self.key.sign(&message).to_bytes());
        assert_eq!(bytes.len(), 140 + 32 * 65);
        bytes
    }

    /// A nonce of A older than the window (docs/transactions.md, "Nonces", rule 1).
    fn stale_nonce(&self) -> u64 {
        self.next_nonce - NONCE_PAST_MS - 60_000
    }
}

/// A resting buy of one lot at 45,000 USD (90,000 ticks of 0.5): below any ask.
fn buy(oid: u64) -> Action {
    Action::Place {
        market: BTC_USD,
        oid,
        side: Side::Buy,
        price: Some(90_000),
        qty: 1,
        tif: TimeInForce::Gtc,
        stp: SelfTradePrevention::CancelTaker,
        reduce_only: false,
    }
}

/// A connection to the transaction port (20 s read timeout).
fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("the transaction port");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream
}

/// Sends one frame: `u32 length (LE) || bytes`.
fn send(stream: &mut TcpStream, bytes: &[u8]) {
    let mut frame = (bytes.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).expect("send");
}

/// The next notice: (kind, code), checking it names `bytes` (BLAKE3 of them).
fn notice_of(stream: &mut TcpStream, bytes: &[u8]) -> (NoticeKind, u8) {
    let mut raw = [0u8; NOTICE_LEN];
    stream.read_exact(&mut raw).expect("a notice");
    let notice = Notice::decode(&raw).expect("a known notice");
    assert_eq!(notice.hash.0, *blake3::hash(bytes).as_bytes(), "{notice:?}");
    (notice.kind, notice.code)
}

/// The admission answer to `bytes` (`admitted` or `refused`), skipping notices about
/// earlier transactions (their `finalized`).
fn admission_of(stream: &mut TcpStream, bytes: &[u8]) -> (NoticeKind, u8) {
    let hash = *blake3::hash(bytes).as_bytes();
    loop {
        let mut raw = [0u8; NOTICE_LEN];
        stream.read_exact(&mut raw).expect("a notice");
        let notice = Notice::decode(&raw).expect("a known notice");
        if notice.hash.0 == hash && notice.kind != NoticeKind::Finalized {
            return (notice.kind, notice.code);
        }
    }
}

/// Sends a valid transaction of A and waits for `admitted` then `finalized`.
fn admitted_and_finalized(stream: &mut TcpStream, bytes: &[u8]) {
    send(stream, bytes);
    assert_eq!(notice_of(stream, bytes), (NoticeKind::Admitted, 0));
    assert_eq!(notice_of(stream, bytes), (NoticeKind::Finalized, 0));
}

/// The transaction port: each bad transaction is refused with its code; the oversize bulk
/// (2,220 bytes, past the 2,188 of 64 actions) is refused by its frame length and the
/// connection closed; a valid transaction at the nonce the bulk named is then admitted and
/// finalized on a new connection.
fn the_transaction_port_refuses_each_with_its_code(chain: &mut Chain) {
    let addr = chain.node.address("tx_addr");
    let mut port = connect(addr);
    let used = chain.nonce();
    admitted_and_finalized(&mut port, &chain.signed(&chain.key, used, vec![buy(1)]));
    let replayed = chain.signed(&chain.key, used, vec![buy(101)]);
    let stale = chain.signed(&chain.key, chain.stale_nonce(), vec![buy(102)]);
    let nonce = chain.nonce();
    let stranger = chain.signed(&chain.stranger, nonce, vec![buy(103)]);
    for (bytes, code) in [
        (replayed, NONCE_USED),
        (stale, NONCE_STALE),
        (stranger, UNKNOWN_ACCOUNT),
    ] {
        send(&mut port, &bytes);
        assert_eq!(notice_of(&mut port, &bytes), (NoticeKind::Refused, code));
    }
    let nonce = chain.nonce();
    send(&mut port, &chain.oversize_bulk(nonce, 200));
    let mut raw = [0u8; NOTICE_LEN];
    port.read_exact(&mut raw).expect("a notice");
    let notice = Notice::decode(&raw).expect("a known notice");
    assert_eq!(
        (notice.kind, notice.code),
        (NoticeKind::Refused, FRAME_LENGTH)
    );
    assert!(
        matches!(port.read(&mut raw), Ok(0) | Err(_)),
        "the connection ends after a bad frame length"
    );
    let mut port = connect(addr);
    admitted_and_finalized(&mut port, &chain.signed(&chain.key, nonce, vec![buy(2)]));
}

/// Sends `bytes` in a `Transaction` message and returns the `TransactionStatus`:
/// (status, code), checking it names the message and the transaction.
fn status_of(session: &mut OrderClient, bytes: &[u8]) -> (u8, u16) {
    let seq = session.sender.transaction(bytes).expect("send");
    let replies = read_until(session, |m| matches!(m, M::TransactionStatus(_)));
    let Some(M::TransactionStatus(status)) = replies.last() else {
        panic!("{replies:?}")
    };
    assert_eq!(status.client_seq.get(), seq);
    assert_eq!(status.hash, *blake3::hash(bytes).as_bytes());
    (status.status, status.code.get())
}

/// The binary gateway: a stale nonce and a key with no account (which logs in, as any key
/// does) are refused with the mempool's codes; the oversize bulk (a 2,236-byte frame, past
/// the 2,204 the port takes) ends the session with `ServerLogout` `malformed`; A logs in
/// again and its transaction at the nonce the bulk named is admitted and finalized.
fn the_gateway_refuses_each_with_its_code(chain: &mut Chain) {
    let addr = chain.node.address("order_entry");
    let login =
        |key: &SigningKey| OrderClient::connect(addr, key, LoginOptions::default()).expect("login");
    let mut session = login(&chain.key);
    let stale = chain.signed(&chain.key, chain.stale_nonce(), vec![buy(301)]);
    let refused = (TX_REFUSED, u16::from(NONCE_STALE));
    assert_eq!(status_of(&mut session, &stale), refused);
    let mut stranger = login(&chain.stranger);
    let nonce = chain.nonce();
    let theirs = chain.signed(&chain.stranger, nonce, vec![buy(302)]);
    let refused = (TX_REFUSED, u16::from(UNKNOWN_ACCOUNT));
    assert_eq!(status_of(&mut stranger, &theirs), refused);

    let nonce = chain.nonce();
    session
        .sender
        .transaction(&chain.oversize_bulk(nonce, 400))
        .expect("send");
    match session.recv() {
        Err(ClientError::LoggedOut(Some(LogoutReason::Malformed))) => {}
        other => panic!("expected a malformed logout, got {other:?}"),
    }
    let mut session = login(&chain.key);
    let valid = chain.signed(&chain.key, nonce, vec![buy(3)]);
    assert_eq!(status_of(&mut session, &valid), (TX_ADMITTED, 0));
    let replies = read_until(&mut session, |m| matches!(m, M::Finalized(_)));
    assert!(
        replies
            .iter()
            .any(|m| matches!(m, M::OrderAccepted(a) if a.oid.get() == 3)),
        "{replies:?}"
    );
}

/// Account A's open orders (oids, sorted) and what the JSON port says of the key with no
/// account.
fn what_executed(chain: &Chain) -> (Vec<u64>, Value) {
    let mut client = JsonClient::connect(chain.node.address("listen"));
    client.send_json(&json!({"op": "orders", "account": A}));
    let orders = client.until("orders", 1).pop().expect("orders");
    let mut oids: Vec<u64> = orders["orders"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|order| order["oid"].as_u64().expect("an oid"))
        .collect();
    oids.sort_unstable();
    let stranger = transactions::account_id_of(&chain.stranger.verifying_key().to_bytes());
    client.send_json(&json!({"op": "balances", "account": stranger}));
    let answer = client.until("error", 2).pop().expect("an answer");
    (oids, answer["reason"].clone())
}

/// A chain of one on `data` (from `config`, if given) and its [`Chain`].
fn chain_on(data: &std::path::Path, config: Option<&std::path::Path>) -> Chain {
    let node = match config {
        None => run_chain(data),
        Some(config) => common::start_args(&[
            "run".as_ref(),
            "--quiet".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--order-entry-listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--market-data-listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--tx-listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--eth-listen".as_ref(),
            "127.0.0.1:0".as_ref(),
        ]),
    };
    let seeds = std::fs::read_to_string(data.join("dev-keys.txt")).expect("dev-keys.txt");
    let seed = node::validator::unhex32(seeds.lines().next().expect("a key")).expect("hex");
    let chain_id = node.ready["chain_id"].as_str().expect("chain_id");
    let chain = Chain {
        chain_id: node::validator::unhex32(chain_id).expect("hex"),
        key: SigningKey::from_bytes(&seed),
        stranger: SigningKey::from_bytes(&[0x5a; 32]),
        next_nonce: node::validator::now_ns() / 1_000_000,
        node,
    };
    assert_eq!(
        transactions::account_id_of(&chain.key.verifying_key().to_bytes()),
        A
    );
    chain
}

#[test]
fn an_account_over_its_rate_is_refused_on_every_connection_and_forgeries_use_none_of_it() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let default = std::process::Command::new(common::NEXUS)
        .arg("config")
        .output()
        .expect("nexus config");
    let default = String::from_utf8(default.stdout).expect("text");
    assert!(default.contains("\naccount_rate = 1000\n"), "{default}");
    let config = folder.path().join("nexus.toml");
    let limited = default.replace("\naccount_rate = 1000\n", "\naccount_rate = 1\n");
    std::fs::write(&config, limited).expect("write the configuration");
    let mut chain = chain_on(&folder.path().join("nexus-data"), Some(&config));
    let addr = chain.node.address("tx_addr");
    let mut ports = [connect(addr), connect(addr)];
    // Six valid transactions of A, alternating between two connections: one a second (in
    // bursts of one) is admitted, the others refused whichever connection they came on.
    let started = std::time::Instant::now();
    let mut codes = Vec::new();
    for (i, oid) in (10..16).enumerate() {
        let nonce = chain.nonce();
        let bytes = chain.signed(&chain.key, nonce, vec![buy(oid)]);
        let port = &mut ports[i % 2];
        send(port, &bytes);
        codes.push(admission_of(port, &bytes));
    }
    let seconds = started.elapsed().as_secs();
    let admitted = codes.iter().filter(|c| c.0 == NoticeKind::Admitted).count() as u64;
    let limited = (NoticeKind::Refused, ACCOUNT_RATE_LIMITED);
    assert!(admitted >= 1 && admitted <= 1 + seconds, "{codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| c.0 == NoticeKind::Admitted || *c == limited),
        "{codes:?}"
    );
    // Once the bucket refilled: transactions claiming A's key with forged signatures are
    // refused for their signature and take nothing, so A's own is admitted after them.
    std::thread::sleep(Duration::from_millis(1_100));
    let port = &mut ports[0];
    for oid in 20..25 {
        let nonce = chain.nonce();
        let mut forged = chain.signed(&chain.stranger, nonce, vec![buy(oid)]);
        forged[36..68].copy_from_slice(&chain.key.verifying_key().to_bytes());
        send(port, &forged);
        let refused = (NoticeKind::Refused, BAD_SIGNATURE);
        assert_eq!(admission_of(port, &forged), refused);
    }
    let nonce = chain.nonce();
    let bytes = chain.signed(&chain.key, nonce, vec![buy(30)]);
    send(port, &bytes);
    assert_eq!(admission_of(port, &bytes), (NoticeKind::Admitted, 0));
    evm_senders_have_an_account_rate_too(&chain, &folder.path().join("nexus-data"));
}

/// The development EVM key sends two transfers on two connections, then the second again
/// once its bucket refilled: the second is refused `account_rate_limited` (nothing pooled,
/// its nonce still free), the resend is admitted and executed.
fn evm_senders_have_an_account_rate_too(chain: &Chain, data: &std::path::Path) {
    use alloy_primitives::{Address, U256};
    let eth = chain.node.address("eth_rpc");
    let secret = std::fs::read_to_string(data.join("dev-evm-key.txt")).expect("dev-evm-key.txt");
    let secret = node::validator::unhex32(secret.trim().trim_start_matches("0x")).expect("hex");
    let mut wallet = common::Wallet::new(&secret);
    let transfer = |wallet: &mut common::Wallet| {
        let tx = wallet.tx(
            common::EVM_CHAIN_ID,
            Some(Address::repeat_byte(0x42)),
            U256::from(1u64),
            Vec::new(),
        );
        wallet.nonce += 1;
        wallet.sign(tx)
    };
    let (first, second) = (transfer(&mut wallet), transfer(&mut wallet));
    let admitted = common::rpc(eth, "eth_sendRawTransaction", json!([first]));
    assert!(admitted["result"].is_string(), "{admitted}");
    let refused = common::rpc(eth, "eth_sendRawTransaction", json!([second]));
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("account_rate_limited"), "{refused}");
    std::thread::sleep(Duration::from_millis(1_100));
    let resent = common::rpc(eth, "eth_sendRawTransaction", json!([second]));
    let hash = resent["result"].clone();
    assert!(hash.is_string(), "the refused one took nothing: {resent}");
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while common::rpc(eth, "eth_getTransactionReceipt", json!([hash]))["result"].is_null() {
        assert!(std::time::Instant::now() < end, "no receipt for {hash}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_transactions_through_the_ports_are_refused_with_their_codes_and_change_nothing() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let mut chain = chain_on(&folder.path().join("nexus-data"), None);
    the_transaction_port_refuses_each_with_its_code(&mut chain);
    the_gateway_refuses_each_with_its_code(&mut chain);
    let (oids, stranger) = what_executed(&chain);
    assert_eq!(oids, [1, 2, 3], "only the valid transactions executed");
    assert_eq!(stranger, "unknown_account", "the stranger holds nothing");
    a_json_line_over_the_limit_is_skipped(&chain);
}

/// The JSON port (`[ingress] max_line_bytes`, 4096 by default): a longer line is answered
/// `too_long` with its line number and skipped to its newline; the lines around it on the
/// same connection are answered in order.
fn a_json_line_over_the_limit_is_skipped(chain: &Chain) {
    let mut client = JsonClient::connect(chain.node.address("listen"));
    let query = json!({"op": "orders", "account": A});
    let long = format!(
        "{{\"op\":\"orders\",\"pad\":\"{}\"}}\n",
        "x".repeat(100_000)
    );
    client.send(&format!("{query}\n{long}{query}\n"));
    assert_eq!(client.until("orders", 1).len(), 1);
    let error = client.next();
    assert_eq!(error["ev"], "error", "{error}");
    assert_eq!(error["line"], 2, "{error}");
    assert_eq!(error["reason"], "too_long", "{error}");
    assert_eq!(error["detail"], "a line is at most 4096 bytes", "{error}");
    assert_eq!(
        client.until("orders", 3).len(),
        1,
        "the next line is served"
    );
}
