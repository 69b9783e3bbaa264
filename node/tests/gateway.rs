//! The binary gateway end to end: a real `nexus pipeline` process, real sockets, the Rust client
//! library. Login, orders and every reply kind, fills reaching the maker's session, market
//! data with snapshots, sequence numbers and replay, resume after a reconnect, cancel on
//! disconnect, take-over, and bad input (each refused with a typed answer, nobody else
//! disturbed).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use engine::{SelfTradePrevention, Side, TimeInForce};
use gateway::client::{
    Applied, ClientError, L2Book, LoginOptions, MarketDataClient, OrderClient, OrderRequest,
    ServerMessage,
};
use gateway::wire::{
    self, account_id_of, blank, LoginRejectReason, LogoutReason, Message, RejectCode,
    FLAG_CANCEL_ON_DISCONNECT,
};
use zerocopy::IntoBytes;

mod common;
use common::{start, Node};
/// The genesis's first market gets id 0.
const MARKET: u32 = 0;

fn key(name: &str) -> SigningKey {
    SigningKey::from_bytes(blake3::hash(name.as_bytes()).as_bytes())
}

fn account(key: &SigningKey) -> u64 {
    account_id_of(&key.verifying_key().to_bytes())
}

/// A node whose genesis funds the accounts of `keys`. Market 0 "B-Q": tick 0.01, lot 1,
/// taker fee 10 bps, maker fee 0; 1 lot at price p ticks costs p quote units.
fn write_config(dir: &Path, keys: &[&SigningKey]) -> std::path::PathBuf {
    let mut deposits = String::new();
    for key in keys {
        for (asset, amount) in [("B", "1000"), ("Q", "100000")] {
            deposits.push_str(&format!(
                "[[genesis.deposits]]\naccount = {}\nasset = \"{asset}\"\namount = \"{amount}\"\n",
                account(key)
            ));
        }
    }
    let path = dir.join("node.toml");
    std::fs::write(
        &path,
        format!(
            r#"
data_dir = "{}"
[gateway]
order_entry_listen = "127.0.0.1:0"
market_data_listen = "127.0.0.1:0"
login_timeout_s = 1
[ingress]
listen = "127.0.0.1:0"
[blocks]
max_inputs = 16
max_age_us = 500
[[genesis.assets]]
name = "B"
decimals = 2
[[genesis.assets]]
name = "Q"
decimals = 2
[[genesis.markets]]
name = "B-Q"
base = "B"
quote = "Q"
tick = "0.01"
lot = "1"
min_qty = "1"
taker_fee_bps = 10
{deposits}"#,
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// Logs in. The tests send no heartbeats, so they ask for a long interval.
fn login(node: &Node, key: &SigningKey, options: LoginOptions) -> OrderClient {
    let options = LoginOptions {
        heartbeat_ms: 60_000,
        ..options
    };
    OrderClient::connect(node.address("order_entry"), key, options).expect("login")
}

fn limit(oid: u64, side: Side, price: i64, qty: i64, tif: TimeInForce) -> OrderRequest {
    OrderRequest {
        market: MARKET,
        oid,
        side,
        price: Some(price),
        qty,
        tif,
        stp: SelfTradePrevention::CancelMaker,
    }
}

/// Reads until `done` holds for a message; returns everything read, that one last.
fn read_until(
    client: &mut OrderClient,
    mut done: impl FnMut(&ServerMessage) -> bool,
) -> Vec<ServerMessage> {
    let mut seen = Vec::new();
    loop {
        let message = client.recv().expect("a reply before the timeout");
        let stop = done(&message);
        seen.push(message);
        if stop {
            return seen;
        }
    }
}

fn finalized(client_seq: u64) -> impl FnMut(&ServerMessage) -> bool {
    move |m| matches!(m, ServerMessage::Finalized(f) if f.client_seq.get() == client_seq)
}

fn names(messages: &[ServerMessage]) -> Vec<&'static str> {
    messages
        .iter()
        .map(|m| match m {
            ServerMessage::OrderAccepted(_) => "accepted",
            ServerMessage::OrderRejected(_) => "rejected",
            ServerMessage::Fill(_) => "fill",
            ServerMessage::Canceled(_) => "canceled",
            ServerMessage::Replaced(_) => "replaced",
            ServerMessage::Sequenced(_) => "sequenced",
            ServerMessage::Finalized(_) => "finalized",
            ServerMessage::Reject(_) => "reject",
            _ => "other",
        })
        .collect()
}

#[test]
fn orders_fills_replies_and_market_data() {
    let dir = tempfile::tempdir().unwrap();
    let (maker_key, taker_key) = (key("maker"), key("taker"));
    let node = start(&write_config(dir.path(), &[&maker_key, &taker_key]));
    let mut feed = MarketDataClient::connect(node.address("market_data")).unwrap();
    feed.subscribe(MARKET).unwrap();
    let mut book = L2Book::new(MARKET);
    loop {
        if book.apply(&feed.recv().unwrap()) == Ok(Applied::SnapshotDone) {
            break;
        }
    }
    assert_eq!(book.market_seq, Some(0));
    assert!(book.bids.is_empty() && book.asks.is_empty());

    let mut maker = login(&node, &maker_key, LoginOptions::default());
    assert_eq!(maker.session.account, account(&maker_key));
    assert_eq!(maker.session.next_client_seq, 1);
    let mut taker = login(&node, &taker_key, LoginOptions::default());

    // The maker rests two asks.
    let first = maker
        .sender
        .new_order(&limit(11, Side::Sell, 1050, 3, TimeInForce::Gtc))
        .unwrap();
    assert_eq!(first, 1);
    let replies = read_until(&mut maker, finalized(1));
    assert_eq!(names(&replies), ["accepted", "sequenced", "finalized"]);
    let ServerMessage::OrderAccepted(accepted) = replies[0] else {
        unreachable!()
    };
    assert_eq!(
        (
            accepted.client_seq.get(),
            accepted.oid.get(),
            accepted.market.get()
        ),
        (1, 11, MARKET)
    );
    // Server sequence numbers count every application message of the session from 1.
    let server_seqs: Vec<u64> = replies.iter().map(ServerMessage::seq).collect();
    assert_eq!(server_seqs, [1, 2, 3]);
    maker
        .sender
        .new_order(&limit(12, Side::Sell, 1100, 5, TimeInForce::Gtc))
        .unwrap();
    read_until(&mut maker, finalized(2));

    // The taker sweeps: 3 lots at 10.50, 1 at 11.00, then its IOC remainder is dropped.
    taker
        .sender
        .new_order(&limit(7, Side::Buy, 1100, 4, TimeInForce::Ioc))
        .unwrap();
    let replies = read_until(&mut taker, finalized(1));
    assert_eq!(
        names(&replies),
        ["accepted", "fill", "fill", "sequenced", "finalized"]
    );
    let fills: Vec<_> = replies
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Fill(f) => Some(*f),
            _ => None,
        })
        .collect();
    assert_eq!(
        fills
            .iter()
            .map(|f| (f.price.get(), f.qty.get(), f.liquidity, f.match_index.get()))
            .collect::<Vec<_>>(),
        [(1050, 3, 2, 0), (1100, 1, 2, 1)]
    );
    // Taker fee: ceil(3150 * 10 bps) = 4 and ceil(1100 * 10 bps) = 2 quote units.
    assert_eq!((fills[0].fee.get(), fills[1].fee.get()), (4, 2));
    // What is left of the taker's order after each trade: 1 lot, then 0.
    assert_eq!((fills[0].leaves.get(), fills[1].leaves.get()), (1, 0));
    let trade_seq = fills[0].seq.get();

    // The maker's session hears of both fills, unprompted (client_seq 0).
    let maker_fills = read_until(
        &mut maker,
        |m| matches!(m, ServerMessage::Fill(f) if f.oid.get() == 12),
    );
    let maker_view: Vec<_> = maker_fills
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Fill(f) => Some((
                f.client_seq.get(),
                f.oid.get(),
                f.side,
                f.liquidity,
                f.seq.get(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        maker_view,
        [(0, 11, 1, 1, trade_seq), (0, 12, 1, 1, trade_seq)]
    );
    // The maker's first order is gone, 4 of its second's 5 lots still rest.
    let maker_leaves: Vec<i64> = maker_fills
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Fill(f) => Some(f.leaves.get()),
            _ => None,
        })
        .collect();
    assert_eq!(maker_leaves, [0, 4]);

    // Cancel-replace, cancel of an unknown order, mass cancel.
    let replace = maker.sender.replace(MARKET, 12, 1200, 2).unwrap();
    let replies = read_until(&mut maker, finalized(replace));
    let ServerMessage::Replaced(replaced) = replies[0] else {
        panic!("{replies:?}")
    };
    assert_eq!((replaced.price.get(), replaced.qty.get()), (1200, 2));
    let unknown = maker.sender.cancel(MARKET, 999).unwrap();
    let replies = read_until(&mut maker, finalized(unknown));
    let ServerMessage::OrderRejected(rejected) = replies[0] else {
        panic!("{replies:?}")
    };
    assert_eq!(
        wire::engine_reject_from_code(rejected.reason.get()),
        Some(engine::RejectReason::UnknownOrder)
    );
    assert_eq!((rejected.oid.get(), rejected.market.get()), (999, MARKET));
    maker
        .sender
        .new_order(&limit(13, Side::Buy, 900, 1, TimeInForce::Gtc))
        .unwrap();
    let mass = maker.sender.mass_cancel(MARKET).unwrap();
    let replies = read_until(&mut maker, finalized(mass));
    let canceled: Vec<u64> = replies
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Canceled(c) if c.client_seq.get() == mass => Some(c.oid.get()),
            _ => None,
        })
        .collect();
    assert_eq!(canceled, [12, 13], "entry order");

    // The feed saw all of it, in order, and ends with an empty book.
    let mut trades = Vec::new();
    book_seq_after(&mut feed, &mut book, &mut trades);
    assert!(book.bids.is_empty() && book.asks.is_empty(), "{book:?}");
    assert_eq!(trades, [(1050, 3), (1100, 1)]);
    let last = book.market_seq.unwrap();

    // Replay from an old sequence number gives the same messages again; a fresh
    // subscriber's snapshot starts where the book is.
    feed.replay(MARKET, 1, book.feed_epoch).unwrap();
    let mut again = 0;
    while again < last {
        match feed.recv().unwrap() {
            ServerMessage::LevelUpdate(u) => assert_eq!(u.market_seq.get(), again + 1),
            ServerMessage::Trade(t) => assert_eq!(t.market_seq.get(), again + 1),
            other => panic!("{other:?}"),
        }
        again += 1;
    }
    let mut late = MarketDataClient::connect(node.address("market_data")).unwrap();
    late.subscribe(MARKET).unwrap();
    let ServerMessage::SnapshotBegin(begin) = late.recv().unwrap() else {
        panic!("snapshot first")
    };
    assert_eq!(begin.market_seq.get(), last);
}

/// Applies feed messages until the feed is quiet for a moment; returns the book's seq.
fn book_seq_after(
    feed: &mut MarketDataClient,
    book: &mut L2Book,
    trades: &mut Vec<(i64, i64)>,
) -> u64 {
    feed.reader
        .set_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    loop {
        match feed.recv() {
            Ok(message) => {
                if let ServerMessage::Trade(t) = message {
                    trades.push((t.price.get(), t.qty.get()));
                }
                book.apply(&message).expect("no gap on a live feed");
            }
            Err(ClientError::Io(_)) => break,
            Err(e) => panic!("{e}"),
        }
    }
    feed.reader
        .set_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    book.market_seq.unwrap()
}

#[test]
fn a_session_resumes_and_gets_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let (maker_key, taker_key) = (key("resume-maker"), key("resume-taker"));
    let node = start(&write_config(dir.path(), &[&maker_key, &taker_key]));
    let options = LoginOptions {
        session_id: 77,
        ..LoginOptions::default()
    };
    let mut maker = login(&node, &maker_key, options);
    maker
        .sender
        .new_order(&limit(1, Side::Sell, 500, 2, TimeInForce::Gtc))
        .unwrap();
    let seen = read_until(&mut maker, finalized(1));
    let last_seen = seen.last().unwrap().seq();
    drop(maker);

    // While the maker is away its order trades.
    let mut taker = login(&node, &taker_key, LoginOptions::default());
    taker
        .sender
        .new_order(&limit(1, Side::Buy, 500, 2, TimeInForce::Ioc))
        .unwrap();
    read_until(&mut taker, finalized(1));

    let mut back = login(
        &node,
        &maker_key,
        LoginOptions {
            resume_from: last_seen + 1,
            ..options
        },
    );
    assert_eq!(
        back.session.next_client_seq, 2,
        "the session's numbering goes on"
    );
    let ServerMessage::Fill(fill) = back.recv().unwrap() else {
        panic!("the missed fill is resent first")
    };
    assert_eq!(
        (fill.oid.get(), fill.qty.get(), fill.header.seq.get()),
        (1, 2, last_seen + 1)
    );
    // A replayed (already used) sequence number is refused and does nothing.
    let mut replayed: wire::NewOrder = blank(1);
    replayed.market = MARKET.into();
    replayed.oid = 50.into();
    replayed.price = 100.into();
    replayed.qty = 1.into();
    back.sender.send_raw(replayed.as_bytes()).unwrap();
    let ServerMessage::Reject(reject) = back.recv().unwrap() else {
        panic!("reject")
    };
    assert_eq!(
        RejectCode::from_code(reject.reason.get()),
        Some(RejectCode::DuplicateSeq)
    );
    assert_eq!(reject.ref_seq.get(), 1);
    // A gap is refused too, and the expected number stays.
    let mut ahead: wire::Cancel = blank(9);
    ahead.market = MARKET.into();
    back.sender.send_raw(ahead.as_bytes()).unwrap();
    let ServerMessage::Reject(reject) = back.recv().unwrap() else {
        panic!("reject")
    };
    assert_eq!(
        RejectCode::from_code(reject.reason.get()),
        Some(RejectCode::SeqGap)
    );
    let next = back
        .sender
        .new_order(&limit(2, Side::Sell, 600, 1, TimeInForce::Gtc))
        .unwrap();
    assert_eq!(next, 2);
    let replies = read_until(&mut back, finalized(2));
    assert_eq!(names(&replies)[0], "accepted");

    // Resuming from before the oldest kept message, or past the newest, is refused.
    drop(back);
    let too_far = OrderClient::connect(
        node.address("order_entry"),
        &maker_key,
        LoginOptions {
            resume_from: 10_000,
            ..options
        },
    );
    assert!(matches!(
        too_far,
        Err(ClientError::LoginRejected(Some(
            LoginRejectReason::InvalidResume
        )))
    ));
}

#[test]
fn cancel_on_disconnect_and_take_over() {
    let dir = tempfile::tempdir().unwrap();
    let maker_key = key("cod-maker");
    let node = start(&write_config(dir.path(), &[&maker_key]));
    let options = LoginOptions {
        session_id: 5,
        flags: FLAG_CANCEL_ON_DISCONNECT,
        ..LoginOptions::default()
    };
    let mut first = login(&node, &maker_key, options);
    first
        .sender
        .new_order(&limit(1, Side::Buy, 400, 2, TimeInForce::Gtc))
        .unwrap();
    read_until(&mut first, finalized(1));

    // A second login to the same session takes it over; the first is logged out.
    let mut second = login(
        &node,
        &maker_key,
        LoginOptions {
            flags: 0,
            ..options
        },
    );
    match first.recv() {
        Err(ClientError::LoggedOut(Some(LogoutReason::TakenOver))) => {}
        other => panic!("expected a take-over logout, got {other:?}"),
    }
    second
        .sender
        .new_order(&limit(2, Side::Buy, 401, 1, TimeInForce::Gtc))
        .unwrap();
    read_until(&mut second, finalized(2));
    // The take-over turned cancel-on-disconnect off: dropping the first socket did nothing.
    let mut feed = MarketDataClient::connect(node.address("market_data")).unwrap();
    feed.subscribe(MARKET).unwrap();
    let mut book = L2Book::new(MARKET);
    while book.apply(&feed.recv().unwrap()) != Ok(Applied::SnapshotDone) {}
    assert_eq!(book.bids.len(), 2);

    // Now with the flag: dropping the connection cancels the account's orders.
    drop(second);
    let mut third = login(&node, &maker_key, options);
    drop(third.sender);
    let _ = third.reader.set_timeout(Some(Duration::from_millis(100)));
    drop(third.reader);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !book.bids.is_empty() {
        assert!(Instant::now() < deadline, "orders still rest: {book:?}");
        book.apply(&feed.recv().unwrap()).expect("no gap");
    }
    let _ = &mut third.session;
}

#[test]
fn bad_input_is_refused_with_typed_answers_and_others_keep_trading() {
    let dir = tempfile::tempdir().unwrap();
    let (good_key, bad_key) = (key("good"), key("bad"));
    let node = start(&write_config(dir.path(), &[&good_key, &bad_key]));
    let mut good = login(&node, &good_key, LoginOptions::default());
    let mut bad = login(&node, &bad_key, LoginOptions::default());

    // Unknown kind, wrong length, wrong version: typed rejects, the session goes on.
    let mut unknown: wire::Heartbeat = blank(0);
    unknown.header.kind = 77;
    bad.sender.send_raw(unknown.as_bytes()).unwrap();
    let mut short: wire::Heartbeat = blank(1);
    short.header.kind = wire::NewOrder::KIND;
    bad.sender.send_raw(short.as_bytes()).unwrap();
    let mut version: wire::Heartbeat = blank(0);
    version.header.version = 9;
    bad.sender.send_raw(version.as_bytes()).unwrap();
    // Out-of-range fields: side 5; the engine's own limits: zero quantity.
    let mut side: wire::NewOrder = blank(1);
    side.market = MARKET.into();
    side.side = 5;
    side.price = 100.into();
    side.qty = 1.into();
    bad.sender.send_raw(side.as_bytes()).unwrap();
    let mut codes = Vec::new();
    for _ in 0..4 {
        let ServerMessage::Reject(reject) = bad.recv().unwrap() else {
            panic!("reject")
        };
        codes.push(RejectCode::from_code(reject.reason.get()).unwrap());
    }
    assert_eq!(
        codes,
        [
            RejectCode::UnknownKind,
            RejectCode::BadLength,
            RejectCode::UnsupportedVersion,
            RejectCode::InvalidField
        ]
    );
    // The invalid order used seq 1; the next real one is 2.
    bad.sender.set_next_seq(2);
    bad.sender
        .new_order(&limit(1, Side::Buy, 100, 1, TimeInForce::Gtc))
        .unwrap();
    let zero = bad
        .sender
        .new_order(&limit(2, Side::Buy, 100, 0, TimeInForce::Gtc))
        .unwrap();
    let replies = read_until(&mut bad, finalized(zero));
    let rejected = replies
        .iter()
        .find_map(|m| match m {
            ServerMessage::OrderRejected(r) => Some(r.reason.get()),
            _ => None,
        })
        .expect("the engine refuses qty 0");
    assert_eq!(
        wire::engine_reject_from_code(rejected),
        Some(engine::RejectReason::InvalidQty)
    );

    // Orders before login, a second login, a forged signature, a login that never comes.
    let mut raw = TcpStream::connect(node.address("order_entry")).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut challenge = [0u8; 56];
    raw.read_exact(&mut challenge).unwrap();
    let early: wire::MassCancel = blank(1);
    raw.write_all(early.as_bytes()).unwrap();
    let mut reply = [0u8; 32];
    raw.read_exact(&mut reply).unwrap();
    assert_eq!(reply[2], wire::Reject::KIND);
    assert_eq!(
        u16::from_le_bytes([reply[26], reply[27]]),
        RejectCode::NotLoggedIn.code()
    );
    let mut forged: wire::Login = blank(0);
    forged.public_key = bad_key.verifying_key().to_bytes();
    forged.signature = [7; 64];
    raw.write_all(forged.as_bytes()).unwrap();
    let mut login_reply = [0u8; 24];
    raw.read_exact(&mut login_reply).unwrap();
    assert_eq!(login_reply[2], wire::LoginRejected::KIND);
    assert_eq!(
        LoginRejectReason::from_code(u16::from_le_bytes([login_reply[16], login_reply[17]])),
        Some(LoginRejectReason::BadSignature)
    );
    assert_eq!(
        raw.read(&mut [0u8; 1]).unwrap(),
        0,
        "closed after a failed login"
    );

    let mut silent = TcpStream::connect(node.address("order_entry")).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut bytes = Vec::new();
    silent.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes.len(), 56 + 24, "challenge, then a logout");
    assert_eq!(bytes[56 + 2], wire::ServerLogout::KIND);
    assert_eq!(
        LogoutReason::from_code(u16::from_le_bytes([bytes[72], bytes[73]])),
        Some(LogoutReason::LoginTimeout)
    );

    // Garbage: an impossible frame length ends that session only.
    bad.sender.send_raw(&[0xff, 0xff, 1, 2, 3, 4]).unwrap();
    match bad.recv() {
        Err(ClientError::LoggedOut(Some(LogoutReason::Malformed))) => {}
        other => panic!("expected a malformed logout, got {other:?}"),
    }
    // An oversize frame on the market-data port too.
    let mut feed = MarketDataClient::connect(node.address("market_data")).unwrap();
    feed.send_raw(&[0x00, 0x10, 0, 0]).unwrap();
    assert!(matches!(feed.recv(), Ok(ServerMessage::Logout(_))));
    let mut feed = MarketDataClient::connect(node.address("market_data")).unwrap();
    let mut nowhere: wire::Subscribe = blank(0);
    nowhere.market = 99.into();
    feed.send_raw(nowhere.as_bytes()).unwrap();
    let ServerMessage::Reject(reject) = feed.recv().unwrap() else {
        panic!("reject")
    };
    assert_eq!(
        RejectCode::from_code(reject.reason.get()),
        Some(RejectCode::UnknownMarket)
    );

    // The good session kept working throughout and its order is intact.
    good.sender
        .new_order(&limit(1, Side::Sell, 2000, 1, TimeInForce::Gtc))
        .unwrap();
    let replies = read_until(&mut good, finalized(1));
    assert_eq!(names(&replies), ["accepted", "sequenced", "finalized"]);
    // What `bad` placed before it was dropped is still on the book (nothing accepted is lost).
    feed.subscribe(MARKET).unwrap();
    let mut book = L2Book::new(MARKET);
    while book.apply(&feed.recv().unwrap()) != Ok(Applied::SnapshotDone) {}
    assert_eq!(book.bids.get(&100), Some(&1), "{book:?}");
    assert_eq!(book.asks.get(&2000), Some(&1));
}

// ---- node stop and restart; the default node of docs/protocol.md -------------------------

/// Stops the node with SIGTERM and waits for its `stopped` line and a clean exit.
fn stop(node: &mut Node) {
    use std::io::BufRead;
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(node.child.id().to_string())
        .status()
        .unwrap();
    let mut line = String::new();
    loop {
        line.clear();
        if node.stdout.read_line(&mut line).unwrap() == 0 || line.contains("\"stopped\"") {
            break;
        }
    }
    assert!(node.child.wait().unwrap().success(), "clean exit");
}

#[test]
fn cancel_on_disconnect_at_shutdown_reaches_the_accounts_other_sessions_and_sessions_end_with_the_node(
) {
    let dir = tempfile::tempdir().unwrap();
    let owner = key("shutdown-owner");
    let config = write_config(dir.path(), &[&owner]);
    let mut node = start(&config);
    let mut canceler = login(
        &node,
        &owner,
        LoginOptions {
            session_id: 1,
            flags: FLAG_CANCEL_ON_DISCONNECT,
            ..LoginOptions::default()
        },
    );
    let mut watcher = login(
        &node,
        &owner,
        LoginOptions {
            session_id: 2,
            ..LoginOptions::default()
        },
    );
    canceler
        .sender
        .new_order(&limit(1, Side::Buy, 400, 2, TimeInForce::Gtc))
        .unwrap();
    read_until(&mut canceler, finalized(1));
    read_until(
        &mut watcher,
        |m| matches!(m, ServerMessage::OrderAccepted(a) if a.oid.get() == 1),
    );

    // The node stops: the cancel-on-disconnect of session 1 runs first, and its Canceled
    // reaches both sessions of the account before their logout.
    stop(&mut node);
    for (name, session) in [("watcher", &mut watcher), ("canceler", &mut canceler)] {
        match session.recv() {
            Ok(ServerMessage::Canceled(c)) => assert_eq!(
                (c.client_seq.get(), c.oid.get(), c.reason, c.remaining.get()),
                (0, 1, 0, 2),
                "{name}"
            ),
            other => panic!("{name}: expected the shutdown's Canceled, got {other:?}"),
        }
        match session.recv() {
            Err(ClientError::LoggedOut(Some(LogoutReason::Shutdown))) => {}
            other => panic!("{name}: expected a shutdown logout, got {other:?}"),
        }
    }

    // After a restart: the cancel is in the log; sessions are gone (numbering starts again,
    // nothing can be resent), as docs/protocol.md "Node restarts" says.
    let node = start(&config);
    let mut feed = MarketDataClient::connect(node.address("market_data")).unwrap();
    feed.subscribe(MARKET).unwrap();
    let mut book = L2Book::new(MARKET);
    while book.apply(&feed.recv().unwrap()) != Ok(Applied::SnapshotDone) {}
    assert!(book.bids.is_empty(), "{book:?}");
    let resumed = OrderClient::connect(
        node.address("order_entry"),
        &owner,
        LoginOptions {
            session_id: 2,
            resume_from: 3,
            heartbeat_ms: 60_000,
            flags: 0,
        },
    );
    assert!(matches!(
        resumed,
        Err(ClientError::LoginRejected(Some(
            LoginRejectReason::InvalidResume
        )))
    ));
    let fresh = login(
        &node,
        &owner,
        LoginOptions {
            session_id: 2,
            ..LoginOptions::default()
        },
    );
    assert_eq!(
        (fresh.session.next_client_seq, fresh.session.next_server_seq),
        (1, 1)
    );
}

#[test]
fn mass_cancel_goes_in_entry_order_and_a_re_entering_replace_is_a_new_entry() {
    let dir = tempfile::tempdir().unwrap();
    let trader = key("entry-order");
    let node = start(&write_config(dir.path(), &[&trader]));
    let mut client = login(&node, &trader, LoginOptions::default());
    for oid in 1..=3 {
        client
            .sender
            .new_order(&limit(
                oid,
                Side::Buy,
                400 + oid as i64,
                5,
                TimeInForce::Gtc,
            ))
            .unwrap();
    }
    // Order 1 re-enters (new price); order 2 only shrinks in place.
    client.sender.replace(MARKET, 1, 390, 5).unwrap();
    client.sender.replace(MARKET, 2, 402, 4).unwrap();
    let mass = client.sender.mass_cancel(MARKET).unwrap();
    let replies = read_until(&mut client, finalized(mass));
    let canceled: Vec<u64> = replies
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Canceled(c) if c.client_seq.get() == mass => Some(c.oid.get()),
            _ => None,
        })
        .collect();
    assert_eq!(canceled, [2, 3, 1]);
}

/// A node with exactly the embedded default configuration (`nexus config`), except its data
/// folder and ports 0.
fn default_node(dir: &Path) -> Node {
    let printed = std::process::Command::new(common::NEXUS)
        .arg("config")
        .output()
        .unwrap();
    let mut text = String::from_utf8(printed.stdout).unwrap();
    let data = format!("data_dir = \"{}\"", dir.join("data").display());
    for (from, to) in [
        ("data_dir = \"nexus-data\"", data.as_str()),
        ("\"127.0.0.1:7070\"", "\"127.0.0.1:0\""),
        ("\"127.0.0.1:7071\"", "\"127.0.0.1:0\""),
        ("\"127.0.0.1:7072\"", "\"127.0.0.1:0\""),
    ] {
        assert_eq!(text.matches(from).count(), 1, "{from} in the default");
        text = text.replace(from, to);
    }
    let path = dir.join("default.toml");
    std::fs::write(&path, text).unwrap();
    start(&path)
}

/// Sends lines to the JSON port and reads until each has its `finalized`; returns every
/// reply. A refusal fails the test.
fn json_lines(node: &Node, lines: &[&str]) -> Vec<serde_json::Value> {
    use std::io::BufRead;
    let stream = TcpStream::connect(node.address("listen")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    for line in lines {
        writeln!(writer, "{line}").unwrap();
    }
    let mut reader = std::io::BufReader::new(stream);
    let (mut replies, mut finalized) = (Vec::new(), 0);
    while finalized < lines.len() {
        let mut text = String::new();
        reader.read_line(&mut text).unwrap();
        let reply: serde_json::Value = serde_json::from_str(&text).expect(&text);
        assert!(
            !matches!(reply["ev"].as_str(), Some("error" | "rejected")),
            "{reply}"
        );
        finalized += usize::from(reply["ev"] == "finalized");
        replies.push(reply);
    }
    replies
}

/// The key of docs/protocol.md's test vector: the seed is the bytes 0 to 31.
fn test_vector_key() -> SigningKey {
    SigningKey::from_bytes(&std::array::from_fn(|i| i as u8))
}

/// The hex blocks of docs/protocol.md's "Worked example", in order.
fn worked_example_blocks() -> Vec<Vec<u8>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .unwrap();
    let section = &doc[doc.find("## Worked example\n").expect("the section")..];
    // Up to the next section ("Worked example on a chain" has its own test).
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut blocks = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for line in section.lines() {
        if line.starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some(Vec::new()),
            }
            continue;
        }
        let Some(bytes) = current.as_mut() else {
            continue;
        };
        // "OO: " then 8 + 8 bytes in 48 columns, then a comment.
        let offset = usize::from_str_radix(&line[..2], 16).expect(line);
        assert_eq!(offset, bytes.len(), "{line}");
        let hex = &line[4..line.len().min(4 + 48)];
        bytes.extend(
            hex.split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).expect(line)),
        );
    }
    blocks
}

#[test]
fn the_worked_example_of_the_protocol_document_is_what_a_default_node_sends() {
    let dir = tempfile::tempdir().unwrap();
    let node = default_node(dir.path());
    assert_eq!(node.ready["next_seq"], 12, "the genesis is seqs 1 to 11");
    let key = test_vector_key();
    let account = account(&key);
    assert_eq!(account, 6581511237511020069);
    // The steps of the example: development account 0's resting sell, then the client's two
    // deposits.
    let sell = json_lines(
        &node,
        &[
            r#"{"op":"order","account":4026915798854129718,"market":"BTC-USD","oid":1,"side":"sell","price":"50000","qty":"0.001"}"#,
        ],
    );
    assert!(sell
        .iter()
        .any(|r| r["ev"] == "sequenced" && r["seq"] == 12));
    let usd = format!(r#"{{"op":"deposit","account":{account},"asset":"USD","amount":"100000"}}"#);
    let btc = format!(r#"{{"op":"deposit","account":{account},"asset":"BTC","amount":"10"}}"#);
    let deposits = json_lines(&node, &[&usd, &btc]);
    let seqs: Vec<&serde_json::Value> = deposits
        .iter()
        .filter(|r| r["ev"] == "sequenced")
        .map(|r| &r["seq"])
        .collect();
    assert_eq!(seqs, [13, 14]);
    let mut feed = MarketDataClient::connect(node.address("market_data")).unwrap();
    feed.subscribe(0).unwrap();
    let mut book = L2Book::new(0);
    while book.apply(&feed.recv().unwrap()) != Ok(Applied::SnapshotDone) {}
    assert_eq!(book.market_seq, Some(1));
    assert_eq!(book.asks.get(&100_000), Some(&10));

    let blocks = worked_example_blocks();
    assert_eq!(blocks.len(), 3, "NewOrder, OrderAccepted, Fill");
    let mut client = login(&node, &key, LoginOptions::default());
    let request = OrderRequest {
        market: 0,
        oid: 7,
        side: Side::Buy,
        price: Some(100_000),
        qty: 10,
        tif: TimeInForce::Gtc,
        stp: SelfTradePrevention::CancelMaker,
    };
    let order = gateway::client::new_order_message(&request, Default::default(), 1);
    assert_eq!(order.as_bytes(), &blocks[0][..], "NewOrder");
    client.sender.send_raw(order.as_bytes()).unwrap();
    let replies = read_until(&mut client, finalized(1));
    assert_eq!(
        names(&replies),
        ["accepted", "fill", "sequenced", "finalized"]
    );
    let (ServerMessage::OrderAccepted(accepted), ServerMessage::Fill(fill)) =
        (replies[0], replies[1])
    else {
        unreachable!()
    };
    assert_eq!(accepted.as_bytes(), &blocks[1][..], "OrderAccepted");
    assert_eq!(fill.as_bytes(), &blocks[2][..], "Fill");
    assert_eq!(
        (replies[2].seq(), replies[3].seq()),
        (3, 4),
        "Sequenced and Finalized are server seqs 3 and 4"
    );
    // The feed: Trade (market seq 2) then the ask level's LevelUpdate (market seq 3).
    let ServerMessage::Trade(trade) = feed.recv().unwrap() else {
        panic!("a trade")
    };
    assert_eq!(
        (
            trade.market_seq.get(),
            trade.seq.get(),
            trade.match_index.get(),
            trade.taker_side
        ),
        (2, 15, 0, 0)
    );
    let ServerMessage::LevelUpdate(update) = feed.recv().unwrap() else {
        panic!("a level update")
    };
    assert_eq!(
        (
            update.market_seq.get(),
            update.side,
            update.price.get(),
            update.lots.get()
        ),
        (3, 1, 100_000, 0)
    );
}

#[test]
fn a_default_nodes_feed_opens_with_the_perp_mark_and_a_key_account_gets_collateral_by_transfer() {
    const PERP: u32 = 1;
    let dir = tempfile::tempdir().unwrap();
    let node = default_node(dir.path());
    // The opening oracle price of the genesis (50 000 USD) is on the feed from the start.
    let mut feed = MarketDataClient::connect(node.address("market_data")).unwrap();
    feed.subscribe(PERP).unwrap();
    let mut book = L2Book::new(PERP);
    while book.apply(&feed.recv().unwrap()) != Ok(Applied::SnapshotDone) {}
    assert_eq!(book.apply(&feed.recv().unwrap()), Ok(Applied::Stale));
    let mark = book.mark.expect("the opening mark follows the snapshot");
    assert_eq!(
        (
            mark.market.get(),
            mark.market_seq.get(),
            mark.seq.get(),
            mark.oracle.get(),
            mark.mark.get(),
            mark.premium_ppb.get()
        ),
        (PERP, 1, 0, 100_000, 100_000, 0)
    );
    assert_eq!(book.market_seq, Some(1));

    // A key-derived account: a spot deposit is not perp collateral; a `transfer` line is.
    let key = test_vector_key();
    let account = account(&key);
    json_lines(
        &node,
        &[&format!(
            r#"{{"op":"deposit","account":{account},"asset":"USD","amount":"100000"}}"#
        )],
    );
    let mut client = login(&node, &key, LoginOptions::default());
    let perp_order = |oid| OrderRequest {
        market: PERP,
        oid,
        side: Side::Buy,
        price: Some(99_000),
        qty: 10,
        tif: TimeInForce::Gtc,
        stp: SelfTradePrevention::CancelMaker,
    };
    let first = client.sender.new_order(&perp_order(1)).unwrap();
    let replies = read_until(&mut client, finalized(first));
    let ServerMessage::OrderRejected(rejected) = replies[0] else {
        panic!("{replies:?}")
    };
    assert_eq!(
        wire::engine_reject_from_code(rejected.reason.get()),
        Some(engine::RejectReason::InsufficientMargin)
    );
    json_lines(
        &node,
        &[&format!(
            r#"{{"op":"transfer","account":{account},"amount":"10000"}}"#
        )],
    );
    let second = client.sender.new_order(&perp_order(2)).unwrap();
    let replies = read_until(&mut client, finalized(second));
    assert_eq!(names(&replies), ["accepted", "sequenced", "finalized"]);
}
