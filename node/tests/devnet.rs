//! A real multi-process NexusBFT cluster over QUIC on 127.0.0.1: stock Ethereum clients
//! (ethers and web3.py, `examples/evm`) deploy a contract that trades on the Core book
//! through CoreWriter, then four `nexus validator` processes finalize blocks of signed transactions that a client sends to every validator's
//! transaction port and that market makers' sessions send through every validator's binary
//! gateway, with equal execution roots; one is killed (SIGKILL) while they trade (its
//! sessions end with it) and the other three keep finalizing; it is restarted, loads its newest snapshot
//! and executes only the later blocks of its block file, catches up to the same roots and
//! finalizes the client's transactions again, and no validator ever reports double-signing
//! evidence. A byzantine proposer that forges a transaction gets no votes for its blocks,
//! while clients of the honest validators' JSON ports and binary gateways trade with each
//! other through the cluster. Bounded: every wait has a deadline and the children are
//! killed on drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use node::load::LoadStats;
use serde_json::{json, Value};

mod common;
use common::{read_until, signed_order};

const VALIDATORS: usize = 4;

struct Cluster {
    exe: PathBuf,
    config: PathBuf,
    /// Extra arguments of each validator (by index).
    extra: Vec<Vec<&'static str>>,
    /// Each `final` line's (height, round), by validator.
    rounds: Vec<Vec<(u64, u64)>>,
    /// The last `final` line's compact-proposal counters, by validator.
    compact: Vec<Value>,
    children: Vec<Option<Child>>,
    tx: Sender<(usize, Value)>,
    rx: Receiver<(usize, Value)>,
    heights: Vec<u64>,
    /// Each height's root and the validators that logged it.
    roots: BTreeMap<u64, (String, Vec<usize>)>,
    evidence: u64,
    ready: Vec<Value>,
    /// Other event lines, with the validator that printed them.
    events: Vec<(usize, Value)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    fn start(&mut self, i: usize) {
        let mut command = Command::new(&self.exe);
        command
            .args(["validator", "--index", &i.to_string(), "--config"])
            .arg(&self.config)
            .args(&self.extra[i]);
        let child = common::spawn_validator(command, i, self.tx.clone());
        self.children[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        let mut child = self.children[i].take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    /// Reads log lines until `done` holds (checking roots on every `final` line).
    fn wait_until(&mut self, what: &str, limit: Duration, done: impl Fn(&Cluster) -> bool) {
        let end = Instant::now() + limit;
        while !done(self) {
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}: heights {:?}",
                self.heights
            );
            let Ok((i, v)) = self.rx.recv_timeout(left.min(Duration::from_millis(200))) else {
                continue;
            };
            match v["event"].as_str() {
                Some("final") => {
                    let h = v["height"].as_u64().expect("height");
                    let root = v["root"].as_str().expect("root").to_string();
                    let (first, by) = self
                        .roots
                        .entry(h)
                        .or_insert_with(|| (root.clone(), Vec::new()));
                    assert_eq!(
                        *first, root,
                        "validator {i} has another state root at height {h} than {by:?}"
                    );
                    by.push(i);
                    self.heights[i] = self.heights[i].max(h);
                    let round = v["round"].as_u64().expect("round");
                    self.rounds[i].push((h, round));
                    self.compact[i] = v["compact"].clone();
                }
                Some("evidence") => self.evidence += 1,
                Some("ready") => self.ready.push(v),
                _ => self.events.push((i, v)),
            }
        }
    }
}

/// A 4-validator devnet's configuration in `dir` (load at 2,000 orders/s, a snapshot every
/// 25 blocks), with `extra` arguments.
fn init(dir: &Path, extra: &[&str]) -> PathBuf {
    let mut args = vec!["--rate", "2000", "--snapshot-every", "25"];
    args.extend_from_slice(extra);
    common::init_devnet(dir, &args)
}

#[test]
fn four_processes_finalize_survive_a_kill_and_the_killed_one_catches_up() {
    let dir = tempfile::tempdir().expect("dir");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_nexus"));
    // Fixed ports below the ephemeral range (32768 and up): a free port picked and released
    // at init could be taken meanwhile by a client connection of a test running alongside.
    // One certificate in memory: every block a peer that is behind asks for but the newest
    // is read back from the block file (the catch-up below).
    let args = ["--base-port", "21000", "--certificates-in-memory", "1"];
    let config = init(dir.path(), &args);
    let mut cluster = cluster(exe, config.clone(), vec![Vec::new(); VALIDATORS]);
    for i in 0..VALIDATORS {
        cluster.start(i);
    }
    cluster.wait_until("4 validators ready", Duration::from_secs(20), |c| {
        c.ready.len() == VALIDATORS
    });
    // Stock Ethereum clients trade through CoreWriter on this chain first, while its book
    // is empty (their checks read the best bid and buy an ask the load would take): ethers
    // through the JSON-RPC of validator 3, the one killed below, web3.py through validator
    // 1's. Every root compared from here on covers their contracts, tokens and orders.
    stock_ethereum_clients_trade(&cluster);
    // A client of every validator: signed transactions, round robin over the four ports.
    let client = Client::start(&config);
    // And market makers' sessions on every validator's binary gateway, validator 3's too.
    let sessions = Client::start_gateways(&config);
    // Past height 30: validator 3 has a snapshot (every 25 blocks) when it is killed.
    cluster.wait_until("4 validators at height 30", Duration::from_secs(30), |c| {
        c.heights.iter().all(|h| *h >= 30)
    });
    client.wait_for_finalized(100, Duration::from_secs(20));
    sessions.wait_for_finalized(100, Duration::from_secs(20));
    assert!(
        (0..VALIDATORS).all(|i| sessions.finalized_by(i) > 0),
        "sessions on every gateway saw Finalized"
    );

    cluster.kill(3);
    let base = cluster.heights[..3].iter().copied().max().expect("3");
    cluster.wait_until(
        "3 validators 5 heights further",
        Duration::from_secs(20),
        |c| c.heights[..3].iter().all(|h| *h >= base + 5),
    );
    let killed_at = cluster.heights[3];

    // The client goes on trading through the three (its connection to 3 is down), and so
    // do the sessions on their gateways (those on 3 ended with it).
    let finalized_by_3 = client.finalized_by(3);
    let more = client.finalized() + 100;
    let more_in_sessions = sessions.finalized() + 100;
    cluster.wait_until(
        "100 more client transactions finalized",
        Duration::from_secs(20),
        |_| client.finalized() >= more && sessions.finalized() >= more_in_sessions,
    );
    cluster.start(3);
    let target = cluster.heights[..3].iter().copied().max().expect("3") + 2;
    cluster.wait_until(
        "the restarted validator to catch up",
        Duration::from_secs(20),
        |c| c.heights.iter().all(|h| *h >= target),
    );
    let restarted = cluster.ready.last().expect("ready line");
    assert_eq!(restarted["index"], 3);
    let recovered = restarted["recovered_blocks"].as_u64().expect("recovered");
    assert!(
        recovered >= killed_at,
        "recovered its {recovered} stored blocks (killed at {killed_at})"
    );
    // It caught up heights its peers held only in their block files.
    assert!(
        target > recovered + 2,
        "caught up from {recovered} to {target}"
    );
    // From its newest snapshot (every 25 blocks, two kept): only the later blocks executed.
    let from = restarted["snapshot_height"]
        .as_u64()
        .expect("snapshot height");
    let executed = restarted["executed_blocks"]
        .as_u64()
        .expect("executed blocks");
    assert!(
        from > 0 && from.is_multiple_of(25),
        "started from snapshot {from}"
    );
    assert_eq!(from + executed, recovered);
    assert!(
        executed < 50,
        "{executed} blocks executed after the snapshot"
    );
    // The root it re-executed its block file to is the one the others logged at that
    // height (not merely a root it logged itself before the kill).
    assert_eq!(restarted["height"].as_u64(), Some(recovered));
    let (root, by) = &cluster.roots[&recovered];
    assert!(
        by.iter().any(|&i| i != 3),
        "another validator logged height {recovered}: {by:?}"
    );
    assert_eq!(
        restarted["state_root"].as_str(),
        Some(root.as_str()),
        "re-execution root at height {recovered}"
    );
    // Every height it finalized after the restart was also finalized, with the same root
    // (checked line by line above), by another validator.
    let everyone = cluster.heights.iter().copied().min().expect("4");
    let after: Vec<u64> = (recovered + 1..=everyone).collect();
    assert!(!after.is_empty());
    for h in after {
        let (_, by) = cluster
            .roots
            .get(&h)
            .unwrap_or_else(|| panic!("nobody logged height {h}"));
        assert!(
            by.contains(&3),
            "validator 3 logged height {h} after restart"
        );
        assert!(
            by.iter().any(|&i| i != 3),
            "height {h} compared with another validator: {by:?}"
        );
    }
    assert_eq!(cluster.evidence, 0, "nobody double-signed");
    assert!(
        cluster.heights[3] > killed_at + 5,
        "it caught up past the heights it missed"
    );
    // The client's transactions sent to the restarted validator are finalized again.
    let deadline = Instant::now() + Duration::from_secs(20);
    cluster.wait_until(
        "validator 3 to finalize client transactions again",
        deadline.saturating_duration_since(Instant::now()),
        |_| client.finalized_by(3) > finalized_by_3,
    );
    let stats = client.stop();
    let session_stats = sessions.stop();
    // Every transaction a client saw finalized, through a transaction port or a gateway
    // session (the killed validator's before the kill included), is in a block that every
    // validator executes to the same root (checked line by line by `wait_until`).
    let finalized_height = [&stats, &session_stats]
        .iter()
        .map(|s| s["max_finalized_height"].as_u64().unwrap())
        .max()
        .unwrap();
    cluster.wait_until(
        "every validator at the client's last finalized height",
        Duration::from_secs(20),
        |c| c.heights.iter().all(|h| *h >= finalized_height),
    );
    for h in 1..=finalized_height {
        let (_, by) = &cluster.roots[&h];
        // A block validator 3 stored but was killed before logging is executed again at
        // restart without a line; its root at `recovered` was compared above.
        let silent = (killed_at + 1..=recovered).contains(&h) && !by.contains(&3);
        let expected = if silent { VALIDATORS - 1 } else { VALIDATORS };
        assert_eq!(by.len(), expected, "height {h} logged by all: {by:?}");
    }
    assert_eq!(
        stats["refusals"].as_object().map(|m| m.len()),
        Some(0),
        "{stats}"
    );
    assert!(stats["disconnects"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(
        session_stats["refusals"].as_object().map(|m| m.len()),
        Some(0),
        "{session_stats}"
    );
    assert!(
        session_stats["disconnects"].as_u64().unwrap() >= 1,
        "the sessions on the killed validator noticed: {session_stats}"
    );
    // Proposals went compact (transactions forwarded by other validators named by hash),
    // and peers rebuilt them: every decided block above was rebuilt or sent whole.
    let total = |name: &str| -> u64 {
        cluster
            .compact
            .iter()
            .map(|c| c[name].as_u64().unwrap_or(0))
            .sum()
    };
    assert!(
        total("sent") > 0 && total("rebuilt") > 0,
        "{:?}",
        cluster.compact
    );
    assert!(
        total("bytes_sent") < total("bytes_full"),
        "{:?}",
        cluster.compact
    );
}

/// One validator proposes blocks holding a forged withdrawal (another account's key signed
/// it); first, bad input on a validator's transaction port gets typed refusals. The honest three never vote for them: every height that validator proposes in round
/// 0 is decided in a later round by an honest proposer, no honest validator ever executes a
/// block with the forgery (it would stop with a bad payload), and the chain goes on.
/// A validator whose safety file is deleted while it is down must not sign again at a height
/// it may have signed: restarted, it logs `safety_lost`, signs nothing until a block stamped
/// after its restart is decided by the other three, then `signing_resumed`; nobody reports
/// evidence against it, and it finalizes with the others again.
#[test]
fn a_validator_that_lost_its_safety_file_holds_signing_then_rejoins() {
    let dir = tempfile::tempdir().expect("dir");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_nexus"));
    let config = init(dir.path(), &["--base-port", "21200"]);
    let mut cluster = cluster(exe, config.clone(), vec![Vec::new(); VALIDATORS]);
    for i in 0..VALIDATORS {
        cluster.start(i);
    }
    cluster.wait_until("4 validators at height 5", Duration::from_secs(30), |c| {
        c.heights.iter().all(|h| *h >= 5)
    });
    cluster.kill(3);
    let killed_at = cluster.heights[..3].iter().copied().max().expect("3");
    let safety = dir.path().join("validator-3").join("safety");
    std::fs::remove_file(&safety).expect("the safety file exists");
    cluster.start(3);
    let resumed = |c: &Cluster| {
        c.events
            .iter()
            .find(|(i, v)| *i == 3 && v["event"] == "signing_resumed")
            .map(|(_, v)| v["after_height"].as_u64().expect("after_height"))
    };
    cluster.wait_until(
        "validator 3 to resume signing",
        Duration::from_secs(30),
        |c| resumed(c).is_some(),
    );
    let lost = cluster
        .events
        .iter()
        .any(|(i, v)| *i == 3 && v["event"] == "safety_lost");
    assert!(lost, "validator 3 reported its lost safety file");
    let after = resumed(&cluster).expect("resumed");
    assert!(
        after > killed_at,
        "resumed after height {after}, killed at {killed_at}"
    );
    let target = after + 5;
    cluster.wait_until("all 4 five heights further", Duration::from_secs(30), |c| {
        c.heights.iter().all(|h| *h >= target)
    });
    assert_eq!(cluster.evidence, 0, "no validator saw a double signature");
}

/// Governance on four processes: validator 0 proposes registering the notary, three of
/// four vote (each signs its own vote, which its own proposals carry), then the same for its
/// activation; a call through validator 3 reaches it and validator 1 reads the record.
/// Every validator logs the same root at every height meanwhile (checked on each `final`).
#[test]
fn four_validators_enshrine_a_coprocessor_by_governance() {
    let dir = tempfile::tempdir().expect("dir");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_nexus"));
    let config = init(dir.path(), &["--base-port", "21300"]);
    let mut cluster = cluster(exe, config.clone(), vec![Vec::new(); VALIDATORS]);
    for i in 0..VALIDATORS {
        cluster.start(i);
    }
    cluster.wait_until("4 validators ready", Duration::from_secs(20), |c| {
        c.ready.len() == VALIDATORS
    });
    let spec = node::validator::read_config(&config).expect("config");
    let mut clients: Vec<_> = (0..VALIDATORS)
        .map(|i| common::JsonClient::connect(spec.validators[i].json_addr.expect("json")))
        .collect();
    let mut lines = [0u64; VALIDATORS];
    let mut send = |clients: &mut Vec<common::JsonClient>, i: usize, request: Value, last: &str| {
        lines[i] += 1;
        clients[i].send_json(&request);
        clients[i].until(last, lines[i])
    };
    let mut pass = |clients: &mut Vec<common::JsonClient>, proposal: Value| {
        let included = send(clients, 0, proposal, "gov_included");
        let id = included.last().expect("reply")["proposal"].clone();
        for i in 0..3 {
            let vote = json!({"op": "gov_vote", "proposal": id, "approve": true});
            let voted = send(clients, i, vote, "gov_included");
            assert_eq!(voted.last().expect("reply")["proposal"], id);
        }
    };
    let upgrade =
        json!({"op": "gov_propose", "upgrade": {"id": 1, "version": 1, "code": "notary"}});
    pass(&mut clients, upgrade);
    pass(&mut clients, json!({"op": "gov_propose", "activate": 1}));
    clients[3].send_json(&json!({"op": "dev_accounts"}));
    let account = clients[3].next()["accounts"][0]
        .as_u64()
        .expect("an account");
    let args = format!("07000000{}", "ab".repeat(20));
    let call =
        json!({"op": "call", "account": account, "coprocessor": 1, "method": 1, "args": args});
    // Active from the second block after the activation passed: retry while refused.
    let mut answered = None;
    for attempt in 0..100 {
        let line = attempt + 2;
        clients[3].send_json(&call);
        let first = clients[3].next();
        if first["ev"] == "refused" {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        answered = Some(clients[3].until("finalized", line));
        break;
    }
    let replies = answered.expect("the notary answered a call");
    assert!(replies.iter().any(|r| r["ev"] == "call"), "{replies:?}");
    let query = json!({"op": "query", "account": account, "coprocessor": 1, "method": 1,
        "args": "070000000000000000000000000000000000000000000000"});
    lines[1] += 1;
    clients[1].send_json(&query);
    let read = clients[1].until("query", lines[1]);
    let result = read.last().expect("query")["result"]
        .as_str()
        .expect("hex")
        .to_string();
    assert!(result.starts_with(&"ab".repeat(20)), "{result}");
    let target = cluster.heights.iter().copied().max().unwrap_or(0) + 3;
    cluster.wait_until(
        "all 4 three heights further",
        Duration::from_secs(30),
        |c| c.heights.iter().all(|h| *h >= target),
    );
    assert_eq!(cluster.evidence, 0);
}

#[test]
fn a_byzantine_proposers_forged_transaction_gets_no_votes() {
    let dir = tempfile::tempdir().expect("dir");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_nexus"));
    // Each client connection may send 100 transactions a second (bursts of 100).
    let config = init(
        dir.path(),
        &["--connection-rate", "100", "--base-port", "21100"],
    );
    let mut extra = vec![Vec::new(); VALIDATORS];
    extra[0] = vec!["--byzantine-forge"];
    let mut cluster = cluster(exe, config.clone(), extra);
    for i in 0..VALIDATORS {
        cluster.start(i);
    }
    cluster.wait_until("4 validators ready", Duration::from_secs(20), |c| {
        c.ready.len() == VALIDATORS
    });
    // First, on the empty book (the bad input's good transaction rests orders); each leaves
    // nothing at a price the next one trades at.
    the_json_development_port_signs_for_dev_keys_only(&config);
    trading_through_the_gateways_of_three_validators(&config);
    bad_input_on_the_transaction_port(&config);
    a_load_through_every_gateway_is_finalized(&config);
    cluster.wait_until(
        "the honest validators at height 12",
        Duration::from_secs(60),
        |c| c.heights[1..].iter().all(|h| *h >= 12),
    );
    // Round-robin proposers: validator 0 has round 0 of some heights; those went to later
    // rounds. No height was decided in round 0 with a forged payload (the honest validators
    // would have stopped on executing it).
    let later: Vec<(u64, u64)> = cluster.rounds[1]
        .iter()
        .copied()
        .filter(|&(_, round)| round > 0)
        .collect();
    // Validator 0 proposes round 0 of about one height in four; an honest run decides
    // nearly every height in round 0.
    assert!(
        later.len() * 8 >= cluster.rounds[1].len(),
        "about a quarter of the heights needed another round: {:?}",
        cluster.rounds[1]
    );
    for i in 1..VALIDATORS {
        assert!(
            cluster.children[i]
                .as_mut()
                .expect("running")
                .try_wait()
                .expect("status")
                .is_none(),
            "honest validator {i} still runs"
        );
    }
    assert_eq!(cluster.evidence, 0);
}

/// Bad input on validator 1's transaction port gets typed refusals (the notice codes of
/// docs/transactions.md) and changes nothing; an over-long frame ends that connection only.
fn bad_input_on_the_transaction_port(config: &Path) {
    use std::io::{Read, Write};
    use txport::{request_frame, Notice, NoticeKind, NOTICE_LEN};
    let config = node::validator::read_config(config).expect("config");
    let spec = config.load_spec().expect("spec");
    let keys = node::load::account_keys(&spec);
    let connect = || {
        let stream = std::net::TcpStream::connect(config.validators[1].tx_addr).expect("port");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream
    };
    let read_notice = |stream: &mut std::net::TcpStream| {
        let mut bytes = [0u8; NOTICE_LEN];
        stream.read_exact(&mut bytes).expect("a notice");
        Notice::decode(&bytes).expect("a known notice")
    };
    let mut stream = connect();
    let good = node::load::transaction(&spec, &keys, 1_000_000);
    let mut forged = good.bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let mut garbage = (200u32).to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xab; 200]);
    let mut forged_frame = (forged.len() as u32).to_le_bytes().to_vec();
    forged_frame.extend_from_slice(&forged);
    // Garbage, a forged signature, a good transaction and the same again.
    for frame in [
        garbage,
        forged_frame,
        request_frame(&good),
        request_frame(&good),
    ] {
        stream.write_all(&frame).expect("send");
    }
    let expected = [
        (NoticeKind::Refused, 1),
        (NoticeKind::Refused, 4),
        (NoticeKind::Admitted, 0),
        (NoticeKind::Refused, 12),
    ];
    for (kind, code) in expected {
        let notice = read_notice(&mut stream);
        assert_eq!((notice.kind, notice.code), (kind, code), "{notice:?}");
    }
    assert_eq!(read_notice(&mut stream).kind, NoticeKind::Finalized);
    // A flood of 300 good transactions on one connection: past its burst of 100 they are
    // refused `rate_limited` (16) without being checked; another connection is unaffected.
    let mut flood = connect();
    let mut calm = connect();
    let frames: Vec<u8> = (0..300u64)
        .flat_map(|k| request_frame(&node::load::transaction(&spec, &keys, 3_000_000 + k)))
        .collect();
    flood.write_all(&frames).expect("send");
    calm.write_all(&request_frame(&node::load::transaction(
        &spec, &keys, 4_000_000,
    )))
    .expect("send");
    let (mut admitted, mut limited) = (0, 0);
    while admitted + limited < 300 {
        let notice = read_notice(&mut flood);
        match (notice.kind, notice.code) {
            (NoticeKind::Admitted, 0) => admitted += 1,
            (NoticeKind::Refused, 16) => limited += 1,
            (NoticeKind::Finalized, 0) => {}
            other => panic!("unexpected notice {other:?}"),
        }
    }
    assert!(
        limited >= 150 && admitted >= 100,
        "{admitted} admitted, {limited} limited"
    );
    assert_eq!(read_notice(&mut calm).kind, NoticeKind::Admitted);
    // A frame length outside the transaction sizes: refused (15), then the connection ends.
    let mut other = connect();
    other.write_all(&10u32.to_le_bytes()).expect("send");
    let notice = read_notice(&mut other);
    assert_eq!((notice.kind, notice.code), (NoticeKind::Refused, 15));
    let mut rest = Vec::new();
    assert_eq!(other.read_to_end(&mut rest).expect("closed"), 0);
}

/// On an empty book: a market maker on validator 1's binary gateway rests a signed sell; a taker on validator
/// 3's buys part of it; each hears its own fill (the maker without sending anything to
/// validator 3), `Sequenced` and `Finalized`; validator 2's market-data feed shows the level
/// and the trade. Unsigned orders and another account's transactions are refused.
fn trading_through_the_gateways_of_three_validators(config: &Path) {
    use engine::{Side, TimeInForce};
    use gateway::client::{LoginOptions, MarketDataClient, OrderClient, ServerMessage as M};
    use gateway::wire::{RejectCode, TX_ADMITTED};
    let config = node::validator::read_config(config).expect("config");
    let keys = node::load::account_keys(&config.load_spec().expect("spec"));
    let addr = |i: usize, order: bool| {
        let v = &config.validators[i];
        if order { v.order_addr } else { v.data_addr }.expect("gateway ports")
    };
    let mut feed = MarketDataClient::connect(addr(2, false)).expect("feed");
    feed.subscribe(node::load::MARKET).expect("subscribe");
    let login = |i: usize, key| OrderClient::connect(addr(i, true), key, LoginOptions::default());
    let mut maker = login(1, &keys[0]).expect("maker login");
    let mut taker = login(3, &keys[1]).expect("taker login");
    let chain_id = maker
        .session
        .chain
        .expect("a chain says so at login")
        .chain_id;
    assert_eq!(taker.session.chain.map(|c| c.chain_id), Some(chain_id));

    // Refused at the gateway: an unsigned order, and the maker's transaction on the taker's
    // session. Each uses a client seq.
    let order = gateway::client::OrderRequest {
        market: node::load::MARKET,
        oid: 1,
        side: Side::Buy,
        price: Some(1),
        qty: 1,
        tif: TimeInForce::Gtc,
        stp: engine::SelfTradePrevention::CancelTaker,
    };
    taker.sender.new_order(&order).expect("send");
    let maker_tx = signed_order(&keys[0], chain_id, 1, Side::Sell, 5, TimeInForce::Gtc);
    taker.sender.transaction(&maker_tx).expect("send");
    for code in [RejectCode::SignatureRequired, RejectCode::SignerMismatch] {
        let M::Reject(reject) = taker.recv().expect("reject") else {
            panic!("a reject")
        };
        assert_eq!(reject.reason.get(), code.code());
    }

    let seq = maker.sender.transaction(&maker_tx).expect("send");
    let replies = read_until(&mut maker, |m| matches!(m, M::Finalized(_)));
    assert!(
        matches!(replies[0], M::TransactionStatus(s) if s.status == TX_ADMITTED && s.client_seq.get() == seq)
    );
    assert!(replies.iter().any(
        |m| matches!(m, M::OrderAccepted(a) if a.oid.get() == 1 && a.client_seq.get() == seq)
    ));
    assert!(matches!(replies[replies.len() - 2], M::Sequenced(_)));

    let taker_tx = signed_order(&keys[1], chain_id, 7, Side::Buy, 3, TimeInForce::Ioc);
    let seq = taker.sender.transaction(&taker_tx).expect("send");
    let replies = read_until(&mut taker, |m| matches!(m, M::Finalized(_)));
    let fill = replies.iter().find_map(|m| match m {
        M::Fill(f) => Some(*f),
        _ => None,
    });
    let fill = fill.expect("the taker's fill");
    assert_eq!(
        (
            fill.client_seq.get(),
            fill.oid.get(),
            fill.qty.get(),
            fill.price.get(),
            fill.liquidity
        ),
        (seq, 7, 3, 250_000, 2)
    );
    let M::Finalized(finalized) = replies[replies.len() - 1] else {
        unreachable!()
    };
    assert_eq!(
        finalized.seq.get(),
        fill.seq.get(),
        "one chain seq for the transaction"
    );
    // The maker hears its side of the same trade (same seq and match index).
    let maker_fill = read_until(&mut maker, |m| matches!(m, M::Fill(_)));
    let M::Fill(maker_fill) = maker_fill[maker_fill.len() - 1] else {
        unreachable!()
    };
    assert_eq!(
        (
            maker_fill.client_seq.get(),
            maker_fill.oid.get(),
            maker_fill.leaves.get(),
            maker_fill.liquidity
        ),
        (0, 1, 2, 1)
    );
    assert_eq!(
        (maker_fill.seq.get(), maker_fill.match_index.get()),
        (fill.seq.get(), fill.match_index.get())
    );

    // Validator 2's feed: the ask level of 5, the trade of 3, the level of 2.
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|m| matches!(m, M::LevelUpdate(l) if l.lots.get() == 2))
    {
        seen.push(feed.recv().expect("feed message"));
    }
    assert!(seen
        .iter()
        .any(|m| matches!(m, M::LevelUpdate(l) if l.lots.get() == 5 && l.price.get() == 250_000)));
    assert!(seen
        .iter()
        .any(|m| matches!(m, M::Trade(t) if t.qty.get() == 3 && t.seq.get() == fill.seq.get())));
}

/// The devnet's signed stream through the binary gateways (100 sessions, one per trading
/// account, over the four validators) for two seconds: everything sent is finalized and
/// nothing refused.
fn a_load_through_every_gateway_is_finalized(config: &Path) {
    let config = node::validator::read_config(config).expect("config");
    // Nonces an hour before the genesis (still in the window): never those of the other
    // clients, which use the wall clock.
    let mut spec = config.load_spec().expect("spec");
    spec.genesis_time_ms -= 3_600_000;
    let targets: Vec<_> = config
        .validators
        .iter()
        .filter_map(|v| v.order_addr)
        .collect();
    let stats: Arc<Mutex<LoadStats>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (s, t) = (stats.clone(), stop.clone());
    let thread =
        std::thread::spawn(move || node::load::drive_gateways(&spec, &targets, 2_000, t, s));
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    thread
        .join()
        .expect("load thread")
        .expect("sessions logged in");
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = stats.lock().unwrap();
        assert!(stats.refusals.is_empty(), "{:?}", stats.refusals);
        if stats.finalized == stats.sent {
            assert!(stats.sent >= 100, "{} sent", stats.sent);
            assert!(
                stats.finalized_by_target.iter().all(|&n| n > 0),
                "{:?}",
                stats.finalized_by_target
            );
            break;
        }
        assert!(
            Instant::now() < end,
            "{} of {} finalized",
            stats.finalized,
            stats.sent
        );
        drop(stats);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The JSON development port of validators 1 and 3: a maker's sell signed by validator 1
/// for a development account, a taker's buy through validator 3 fills it all; each line gets
/// admitted, its results, sequenced and finalized; the maker hears its fill on its own
/// connection (routed by account); lines for other accounts, deposits and registry lines are
/// refused before anything is signed; queries answer from the executed state.
fn the_json_development_port_signs_for_dev_keys_only(config: &Path) {
    let config = node::validator::read_config(config).expect("config");
    let addr = |i: usize| config.validators[i].json_addr.expect("json port");
    let mut maker = common::JsonClient::connect(addr(1));
    let mut taker = common::JsonClient::connect(addr(3));
    maker.send_json(&json!({"op": "dev_accounts"}));
    let accounts = maker.next()["accounts"].clone();
    let (a, b) = (accounts[2].as_u64().unwrap(), accounts[3].as_u64().unwrap());
    let market = node::load::MARKET_NAME;
    // Refused before signing.
    for (line, request, reason) in [
        (
            2,
            json!({"op": "order", "account": 12345, "market": market, "side": "buy",
            "price": "1", "qty": "1", "oid": 1}),
            "no_dev_key",
        ),
        (
            3,
            json!({"op": "deposit", "account": a, "asset": "BASE", "amount": "5"}),
            "not_allowed",
        ),
        (
            4,
            json!({"op": "asset", "asset": "GOLD", "decimals": 2}),
            "not_allowed",
        ),
    ] {
        maker.send_json(&request);
        let reply = maker.next();
        assert_eq!(
            (
                reply["ev"].as_str(),
                reply["line"].as_u64(),
                reply["reason"].as_str()
            ),
            (Some("error"), Some(line), Some(reason)),
            "{reply}"
        );
    }
    maker.send_json(
        &json!({"op": "order", "account": a, "market": market, "side": "sell",
        "price": "240000", "qty": "4", "oid": 11}),
    );
    let replies = maker.until("finalized", 5);
    let evs: Vec<&str> = replies.iter().map(|r| r["ev"].as_str().unwrap()).collect();
    assert_eq!(
        evs,
        ["admitted", "accepted", "sequenced", "finalized"],
        "{replies:?}"
    );
    taker.send_json(
        &json!({"op": "order", "account": b, "market": market, "side": "buy",
        "price": "240000", "qty": "4", "oid": 12, "tif": "ioc"}),
    );
    let replies = taker.until("finalized", 1);
    let fill = replies
        .iter()
        .find(|r| r["ev"] == "fill")
        .expect("the taker's fill");
    assert_eq!(
        (fill["qty"].as_str(), fill["maker_account"].as_u64()),
        (Some("4"), Some(a))
    );
    // The maker's connection hears the same trade: same seq, no line.
    let routed = maker.next();
    assert_eq!(routed["ev"], "fill", "{routed}");
    assert_eq!(routed["seq"], fill["seq"]);
    assert!(routed.get("line").is_none());
    maker.send_json(&json!({"op": "book", "market": market}));
    let book = maker.next();
    assert_eq!(
        (book["ev"].as_str(), book["line"].as_u64()),
        (Some("book"), Some(6))
    );
    assert_eq!(book["asks"], json!([]), "{book}");
}

/// How long one stock-client check may run before it is killed and the test fails.
const ETH_CHECK_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs examples/evm's checks with stock clients, one at a time (both use the development
/// EVM key): ethers against validator 3's Ethereum JSON-RPC with validator 0's JSON port
/// (for the token checks), then web3.py against validator 1's with validator 2's. Each
/// deploys the MarketMaker, deposits and quotes through CoreWriter, buys `BASE` on Core and
/// moves it as an ERC-20 token; every check must pass.
fn stock_ethereum_clients_trade(cluster: &Cluster) {
    let clients = eth_clients();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/evm");
    let address = |i: usize, port: &str| -> String {
        let ready = cluster
            .ready
            .iter()
            .find(|r| r["index"] == i)
            .expect("ready line");
        ready[port].as_str().expect(port).to_string()
    };
    let mut ethers = Command::new("node");
    ethers
        .env("NODE_PATH", clients.join("node_modules"))
        .arg(examples.join("ethers_check.mjs"))
        .arg(format!("http://{}", address(3, "eth_rpc")))
        .arg(address(0, "json"));
    run_eth_check("ethers", ethers);
    let mut web3 = Command::new(clients.join("venv/bin/python"));
    web3.arg(examples.join("web3_check.py"))
        .arg(format!("http://{}", address(1, "eth_rpc")))
        .arg(address(2, "json"));
    run_eth_check("web3.py", web3);
}

/// The folder of the stock Ethereum clients: `$NEXUS_ETH_CLIENTS`, or `target/eth-clients`
/// at the repository root, installed there by examples/evm/install-clients.sh if it has not
/// been (CI runs the script before the tests).
fn eth_clients() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os("NEXUS_ETH_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/eth-clients"));
    if !dir.join("installed").exists() {
        let status = Command::new("bash")
            .arg(root.join("examples/evm/install-clients.sh"))
            .arg(&dir)
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "examples/evm/install-clients.sh {} failed ({status:?}): this test needs node, npm, \
             python3 with venv and the npm and PyPI registries",
            dir.display()
        );
    }
    dir
}

/// Runs one check script to its end (killed after [`ETH_CHECK_TIMEOUT`]); fails the test,
/// with everything it printed, unless it exits 0 with `PASS` and no `FAIL` line.
fn run_eth_check(name: &str, command: Command) {
    let run = common::run_to_end(command, ETH_CHECK_TIMEOUT);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let passed = lines.last() == Some(&"PASS") && !lines.iter().any(|l| l.starts_with("FAIL"));
    assert!(
        run.status.is_some_and(|s| s.success()) && passed,
        "{name} check ({:?}, limit {ETH_CHECK_TIMEOUT:?}):\n{}",
        run.status,
        run.report
    );
    let summary = lines.iter().rev().nth(1).copied().unwrap_or_default();
    eprintln!("{name} check: {summary}");
}

fn cluster(exe: PathBuf, config: PathBuf, extra: Vec<Vec<&'static str>>) -> Cluster {
    let (tx, rx) = mpsc::channel();
    Cluster {
        exe,
        config,
        extra,
        rounds: vec![Vec::new(); VALIDATORS],
        compact: vec![Value::Null; VALIDATORS],
        children: (0..VALIDATORS).map(|_| None).collect(),
        tx,
        rx,
        heights: vec![0; VALIDATORS],
        roots: BTreeMap::new(),
        evidence: 0,
        ready: Vec::new(),
        events: Vec::new(),
    }
}

/// A client sending the devnet's signed stream to every validator: to their transaction
/// ports (`node::load::drive`) or through sessions on their binary gateways
/// (`node::load::drive_gateways`).
struct Client {
    stats: Arc<Mutex<LoadStats>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Client {
    fn start(config: &Path) -> Client {
        let config = node::validator::read_config(config).expect("config");
        let spec = config.load_spec().expect("spec");
        let targets: Vec<_> = config.validators.iter().map(|v| v.tx_addr).collect();
        let stats: Arc<Mutex<LoadStats>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, t) = (stats.clone(), stop.clone());
        let rate = config.rate_per_s;
        let thread = std::thread::spawn(move || node::load::drive(&spec, &targets, rate, t, s));
        Client {
            stats,
            stop,
            thread: Some(thread),
        }
    }

    /// The same stream through the validators' binary gateways, at the same pace: trading
    /// account `a` keeps one session on validator `a mod 4`. Its nonces are 50 ms off those
    /// of a [`Client::start`] client (never equal, and advancing together, so neither falls
    /// below the other's remembered nonces).
    fn start_gateways(config: &Path) -> Client {
        let config = node::validator::read_config(config).expect("config");
        let mut spec = config.load_spec().expect("spec");
        spec.genesis_time_ms += 50;
        let targets: Vec<_> = config
            .validators
            .iter()
            .filter_map(|v| v.order_addr)
            .collect();
        assert_eq!(
            targets.len(),
            VALIDATORS,
            "every validator serves a gateway"
        );
        let stats: Arc<Mutex<LoadStats>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, t) = (stats.clone(), stop.clone());
        let rate = config.rate_per_s;
        let thread =
            std::thread::spawn(move || node::load::drive_gateways(&spec, &targets, rate, t, s));
        Client {
            stats,
            stop,
            thread: Some(thread),
        }
    }

    fn finalized(&self) -> u64 {
        self.stats.lock().unwrap().finalized
    }

    fn finalized_by(&self, target: usize) -> u64 {
        self.stats
            .lock()
            .unwrap()
            .finalized_by_target
            .get(target)
            .copied()
            .unwrap_or(0)
    }

    fn wait_for_finalized(&self, count: u64, limit: Duration) {
        let end = Instant::now() + limit;
        while self.finalized() < count {
            assert!(
                Instant::now() < end,
                "the client saw {} of {count} transactions finalized",
                self.finalized()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) -> Value {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("client thread").expect("client ran");
        }
        self.stats.lock().unwrap().to_json()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `nexus devnet` must not carry on (and exit 0) when a validator stops: here validator 0
/// refuses its damaged block file at start; the launcher exits non-zero at once and prints
/// the validator's error.
#[test]
fn the_launcher_fails_when_a_validator_exits() {
    let dir = tempfile::tempdir().expect("dir");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_nexus"));
    let data = dir.path().join("validator-0");
    std::fs::create_dir_all(&data).expect("mkdir");
    // One intact record (valid checksum) whose body is not a commit certificate.
    let body = [0xffu8];
    let mut h = blake3::Hasher::new();
    h.update(b"nexus-bft/v1/blockfile\0");
    h.update(&body);
    let mut record = 1u32.to_le_bytes().to_vec();
    record.extend_from_slice(&body);
    record.extend_from_slice(h.finalize().as_bytes());
    std::fs::write(data.join("blocks"), record).expect("write");
    let started = Instant::now();
    let out = Command::new(&exe)
        .args(["devnet", "--validators", "1", "--seconds", "30", "--dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("nexus devnet");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exit status {}: {stderr}",
        out.status
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "noticed the exit before --seconds ran out"
    );
    assert!(stderr.contains("validator 0 exited early"), "{stderr}");
    assert!(
        stderr.contains("damaged"),
        "child's error is shown: {stderr}"
    );
}

/// `nexus devnet --dir D` run twice: the second run resumes the first one's chain (its
/// genesis time is kept from D's configuration, not taken anew), and goes past its height
/// with equal roots.
#[test]
fn running_the_devnet_again_in_its_folder_resumes_its_chain() {
    let dir = tempfile::tempdir().expect("dir");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_nexus"));
    let run = || {
        let out = Command::new(&exe)
            .args([
                "devnet",
                "--validators",
                "2",
                "--seconds",
                "2",
                "--rate",
                "0",
            ])
            .args(["--empty-block-interval-ms", "50", "--dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("nexus devnet");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{}: {stdout} {stderr}", out.status);
        let stopped: Value = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == "devnet_stopped")
            .unwrap_or_else(|| panic!("no devnet_stopped line: {stdout}"));
        assert_eq!(stopped["equal_roots"], true, "{stopped}");
        let heights = stopped["heights"].as_array().expect("heights").clone();
        let lowest = heights
            .iter()
            .filter_map(Value::as_u64)
            .min()
            .expect("a height");
        (lowest, stderr)
    };
    let (first, _) = run();
    assert!(first > 0, "the first run decided blocks");
    let (second, stderr) = run();
    assert!(stderr.contains("resuming it"), "{stderr}");
    assert!(second > first, "resumed past {first}: {second}");
}

/// Sends `signal` (`STOP`, `CONT`) to validator `i`'s process.
fn signal(cluster: &Cluster, i: usize, signal: &str) {
    let pid = cluster.children[i].as_ref().expect("running").id();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A gateway client of validator 3 loses it and goes on at validator 0 (docs/protocol.md,
/// "Failover to another validator"). Its first order is Finalized through 3. With 1 and 2
/// paused (no quorum), its second is admitted by 3 (and forwarded) but cannot be decided;
/// 3 is killed. At 0, resent byte for byte: the first is refused `nonce_used` (it happened
/// once), the second is `admitted` although 0 pooled it already from 3's forward, and once 1
/// and 2 resume its results and `Finalized` come on the new session, exactly once; a signed
/// cancel shows the order open.
#[test]
fn a_gateway_client_fails_over_to_another_validator() {
    use engine::{Side, TimeInForce};
    use gateway::client::{LoginOptions, OrderClient, ServerMessage as M};
    use gateway::wire::{TX_ADMITTED, TX_REFUSED};
    let dir = tempfile::tempdir().expect("dir");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_nexus"));
    let config = init(dir.path(), &["--base-port", "21500"]);
    let mut cluster = cluster(exe, config.clone(), vec![Vec::new(); VALIDATORS]);
    for i in 0..VALIDATORS {
        cluster.start(i);
    }
    cluster.wait_until("4 validators ready", Duration::from_secs(20), |c| {
        c.ready.len() == VALIDATORS
    });
    let devnet = node::validator::read_config(&config).expect("config");
    let key = node::load::account_keys(&devnet.load_spec().expect("spec"))[2].clone();
    let order_addr = |i: usize| devnet.validators[i].order_addr.expect("gateway port");
    // The sessions send no heartbeats while they wait: a long interval keeps the server
    // from logging them out (after three silent intervals) when the machine is busy and a
    // decision after the pause takes seconds.
    let options = LoginOptions {
        heartbeat_ms: 60_000,
        ..LoginOptions::default()
    };
    let mut first = OrderClient::connect(order_addr(3), &key, options).expect("login");
    let chain_id = first.session.chain.expect("a chain").chain_id;
    let resting = signed_order(&key, chain_id, 11, Side::Sell, 2, TimeInForce::Gtc);
    first.sender.transaction(&resting).expect("send");
    read_until(&mut first, |m| matches!(m, M::Finalized(_)));

    signal(&cluster, 1, "STOP");
    signal(&cluster, 2, "STOP");
    let pending = signed_order(&key, chain_id, 12, Side::Sell, 3, TimeInForce::Gtc);
    first.sender.transaction(&pending).expect("send");
    let admitted = read_until(&mut first, |m| matches!(m, M::TransactionStatus(_)));
    assert!(matches!(admitted.last(), Some(M::TransactionStatus(s)) if s.status == TX_ADMITTED));
    cluster.kill(3);

    let mut second = OrderClient::connect(order_addr(0), &key, options).expect("login");
    // The decisions after the pause can take more than the client's default 10 s when the
    // whole suite shares the two cores (one CI run timed out waiting for the cancel's).
    second
        .reader
        .set_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    assert_eq!(second.session.next_client_seq, 1, "a new session");
    second.sender.transaction(&resting).expect("resend");
    let M::TransactionStatus(status) = second.recv().expect("status") else {
        panic!("a transaction status")
    };
    assert_eq!(
        (status.status, status.code.get()),
        (TX_REFUSED, 7),
        "nonce_used"
    );
    let seq = second.sender.transaction(&pending).expect("resend");
    let M::TransactionStatus(status) = second.recv().expect("status") else {
        panic!("a transaction status")
    };
    assert_eq!((status.status, status.client_seq.get()), (TX_ADMITTED, seq));

    signal(&cluster, 1, "CONT");
    signal(&cluster, 2, "CONT");
    let replies = read_until(&mut second, |m| matches!(m, M::Finalized(_)));
    let accepted = |replies: &[M]| {
        replies
            .iter()
            .filter(|m| matches!(m, M::OrderAccepted(a) if a.oid.get() == 12))
            .count()
    };
    assert_eq!(accepted(&replies), 1, "{replies:?}");
    let now_ms = node::validator::now_ns() / 1_000_000;
    let cancel = transactions::Transaction {
        chain_id,
        signer: key.verifying_key().to_bytes(),
        nonce: now_ms,
        actions: vec![transactions::Action::Cancel {
            market: node::load::MARKET,
            oid: 12,
        }],
    }
    .sign(&key);
    second.sender.transaction(cancel.bytes()).expect("cancel");
    let replies = read_until(&mut second, |m| matches!(m, M::Finalized(_)));
    assert!(
        replies
            .iter()
            .any(|m| matches!(m, M::Canceled(c) if c.oid.get() == 12 && c.remaining.get() == 3)),
        "{replies:?}"
    );
    assert_eq!(accepted(&replies), 0);
    assert_eq!(cluster.evidence, 0);
}
