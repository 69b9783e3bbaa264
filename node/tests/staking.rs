//! Staking actions from any key on a real 4-validator devnet (epochs of 10 blocks), through
//! the `nexus stake` CLI and the JSON port:
//! - forged actions (bad signature, another chain's, unknown signer, stale or far nonce, not
//!   an action, over the connection's rate) get typed refusals and the validator keeps
//!   serving; validator 3 leaves with an action signed by its own key and submitted through
//!   validator 0's port, validator 2's stake change goes through validator 1's and a new key
//!   (`nexus stake new-key`) joins through validator 2's; each takes effect at the epoch
//!   boundary after its block (every `nexus stake show` shows exactly the changes whose
//!   boundary has passed), after which the remaining three keep finalizing with equal
//!   roots; an unjail of a validator that is not jailed is included and refused by the
//!   chain with its reason;
//! - validator 3's key double-votes (sent by the test from its address while its process is
//!   down): slashed and jailed by a block's evidence, it unjails after its jail period and
//!   is back in the set at the next epoch boundary.
//!
//! Every validator must log the same root at each height (checked on every `final` line).
//! Bounded: every wait has a deadline and the children are killed on drop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use consensus::governance::{Action, SignedAction};
use consensus::types::Keypair;
use serde_json::{json, Value};

mod common;

const VALIDATORS: usize = 4;
const EPOCH: u64 = 10;

/// Four `nexus validator` processes and their `final` lines.
struct Cluster {
    config: PathBuf,
    children: Vec<Option<Child>>,
    tx: Sender<(usize, Value)>,
    rx: Receiver<(usize, Value)>,
    heights: Vec<u64>,
    /// Each height's root and how many validators logged it.
    roots: BTreeMap<u64, (String, usize)>,
    ready: usize,
    /// `evidence` lines (a validator saw a double signature).
    evidence: usize,
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
    fn start(config: &Path) -> Cluster {
        let (tx, rx) = mpsc::channel();
        let mut cluster = Cluster {
            config: config.to_path_buf(),
            children: (0..VALIDATORS).map(|_| None).collect(),
            tx,
            rx,
            heights: vec![0; VALIDATORS],
            roots: BTreeMap::new(),
            ready: 0,
            evidence: 0,
        };
        for i in 0..VALIDATORS {
            cluster.spawn(i);
        }
        cluster
    }

    /// Starts validator `i`; a thread hands its log lines over.
    fn spawn(&mut self, i: usize) {
        let mut command = Command::new(common::NEXUS);
        command
            .args(["validator", "--index", &i.to_string(), "--config"])
            .arg(&self.config);
        let child = common::spawn_validator(command, i, self.tx.clone());
        self.children[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        let mut child = self.children[i].take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    /// Reads log lines until `done` holds, checking that every validator logs the same
    /// root at each height.
    fn wait_until(&mut self, what: &str, limit: Duration, done: impl Fn(&Cluster) -> bool) {
        let end = Instant::now() + limit;
        while !done(self) {
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out: {what}: {:?}", self.heights);
            self.read_line(left.min(Duration::from_millis(200)));
        }
    }

    /// Takes one log line if one comes within `wait`.
    fn read_line(&mut self, wait: Duration) {
        let Ok((i, v)) = self.rx.recv_timeout(wait) else {
            return;
        };
        match v["event"].as_str() {
            Some("ready") => self.ready += 1,
            Some("evidence") => self.evidence += 1,
            Some("final") => {
                let h = v["height"].as_u64().expect("height");
                let root = v["root"].as_str().expect("root").to_string();
                let entry = self.roots.entry(h).or_insert((root.clone(), 0));
                assert_eq!(entry.0, root, "validator {i}'s root at height {h}");
                entry.1 += 1;
                self.heights[i] = h;
            }
            _ => {}
        }
    }
}

/// `nexus ARGS`: exit success and the JSON lines it printed.
fn nexus(args: &[&str]) -> (bool, Vec<Value>) {
    let out = Command::new(common::NEXUS)
        .args(args)
        .output()
        .expect("run nexus");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    (out.status.success(), lines)
}

/// `nexus stake show` through `addr`.
fn show(addr: SocketAddr) -> Value {
    let (ok, lines) = nexus(&["stake", "show", "--addr", &addr.to_string()]);
    assert!(ok, "{lines:?}");
    lines.into_iter().next().expect("the staking view")
}

/// Stakes of the active set, by key.
fn active(view: &Value) -> BTreeMap<String, u64> {
    let set = view["validators"].as_array().expect("validators");
    set.iter()
        .map(|v| {
            (
                v["key"].as_str().unwrap().into(),
                v["stake"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Sends one action line to `client` (its `line`-th) and returns the immediate answer.
fn submit(client: &mut common::JsonClient, line: u64, action: &str) -> Value {
    client.send_json(&json!({"op": "action", "action": action}));
    let reply = client.next();
    assert_eq!(reply["line"], line, "{reply}");
    reply
}

/// Forged and malformed actions on validator 1's port: each a typed refusal; the CLI's
/// wrong nonces too (exit 1); the port still answers afterwards.
fn forged_actions_are_refused(dir: &Path, addr: SocketAddr, chain_id: [u8; 32]) {
    let key3 = keypair(&dir.join("validator-3/key"));
    let mut client = common::JsonClient::connect(addr);
    let mut forged = SignedAction::sign(&key3, 1, Action::Leave, &chain_id);
    forged.signature[0] ^= 1;
    let stranger = Keypair::from_seed([42; 32]);
    let unknown = SignedAction::sign(&stranger, 1, Action::Leave, &chain_id);
    let other_chain = SignedAction::sign(&key3, 1, Action::Leave, &[0; 32]);
    let hex = |a: &SignedAction| node::validator::hex(&a.encode());
    let cases = [
        (hex(&forged), "bad_signature"),
        (hex(&other_chain), "bad_signature"),
        (hex(&unknown), "unknown_signer"),
        ("zz".to_string(), "malformed"),
        (hex(&forged)[..40].to_string(), "malformed"),
    ];
    for (line, (action, reason)) in (1..).zip(cases) {
        let reply = submit(&mut client, line, &action);
        assert_eq!(
            (reply["ev"].as_str(), reply["reason"].as_str()),
            (Some("action_refused"), Some(reason)),
            "{reply}"
        );
    }
    // Past the connection's rate (5 a second, bursts of 5, all used above), lines sent at
    // once are refused `rate_limited` before their signature is checked.
    for _ in 0..20 {
        client.send_json(&json!({"op": "action", "action": hex(&forged)}));
    }
    let limited = (0..20)
        .map(|_| client.next())
        .filter(|reply| reply["reason"] == "rate_limited")
        .count();
    assert!(limited >= 10, "{limited} of 20 rate-limited");
    let key = dir.join("validator-3/key");
    for (nonce, reason) in [("0", "stale_nonce"), ("100", "nonce_too_far")] {
        let args = [
            "stake",
            "leave",
            "--key",
            key.to_str().unwrap(),
            "--nonce",
            nonce,
        ];
        let (ok, lines) = nexus(&[&args[..], &["--addr", &addr.to_string()]].concat());
        assert!(!ok, "refused: exit 1");
        assert_eq!(lines.last().unwrap()["reason"], reason, "{lines:?}");
    }
    client.send_json(&json!({"op": "staking"}));
    assert_eq!(client.next()["ev"], "staking", "the port still serves");
}

fn keypair(path: &Path) -> Keypair {
    node::chain_cli::read_key(path).expect("a key file")
}

/// The CLI submission of `action` signed by validator `signer`'s key through `addr`; its
/// last reply.
fn cli(dir: &Path, action: &[&str], signer: usize, addr: SocketAddr) -> (bool, Value) {
    let key = dir.join(format!("validator-{signer}/key"));
    let args = ["--key", key.to_str().unwrap(), "--addr", &addr.to_string()];
    let (ok, lines) = nexus(&[&["stake"], action, &args[..]].concat());
    (ok, lines.last().cloned().expect("a reply"))
}

#[test]
fn validators_leave_and_restake_by_signed_actions_at_the_epoch_boundary() {
    let dir = tempfile::tempdir().expect("dir");
    let config = common::init_devnet(
        dir.path(),
        &[
            "--base-port",
            "21500",
            "--epoch-length",
            "10",
            "--connection-rate",
            "5",
        ],
    );
    let spec = node::validator::read_config(&config).expect("config");
    let json_addr = |i: usize| spec.validators[i].json_addr.expect("json port");
    let mut cluster = Cluster::start(&config);
    cluster.wait_until("4 validators at height 2", Duration::from_secs(30), |c| {
        c.ready == VALIDATORS && c.heights.iter().all(|h| *h >= 2)
    });
    let chain_id = spec.chain_id_bytes().expect("chain id");
    forged_actions_are_refused(dir.path(), json_addr(1), chain_id);

    // Validator 3 leaves (its key, validator 0's port); validator 2 stakes 3 (validator
    // 1's port); a new key joins with 1 (validator 2's port). Each is answered once a
    // decided block holds it, and takes effect at the epoch boundary after that block.
    let joiner = dir.path().join("joiner.key");
    let (ok, made) = nexus(&["stake", "new-key", joiner.to_str().unwrap()]);
    assert!(ok, "{made:?}");
    let joiner_key = made[0]["key"].as_str().expect("its public key").to_string();
    let (ok, leave) = cli(dir.path(), &["leave"], 3, json_addr(0));
    assert!(ok, "{leave}");
    let (ok, restake) = cli(dir.path(), &["set-stake", "--stake", "3"], 2, json_addr(1));
    assert!(ok, "{restake}");
    let join = [
        "stake",
        "join",
        "--stake",
        "1",
        "--key",
        joiner.to_str().unwrap(),
    ];
    let (ok, joined) = nexus(&[&join[..], &["--addr", &json_addr(2).to_string()]].concat());
    assert!(ok, "{joined:?}");
    let joined = joined.last().expect("a reply").clone();
    let key = |i: usize| spec.validators[i].key.clone();
    let mut changes = Vec::new();
    for (reply, change) in [
        (&leave, (key(3), None)),
        (&restake, (key(2), Some(3))),
        (&joined, (joiner_key, Some(1))),
    ] {
        assert_eq!(
            (reply["ev"].as_str(), reply["applied"].as_bool()),
            (Some("action_included"), Some(true)),
            "{reply}"
        );
        let included = reply["height"].as_u64().expect("height");
        changes.push((included, included.div_ceil(EPOCH) * EPOCH, change));
    }
    // The set after block `height`: genesis, with each change whose boundary has passed.
    let expected = |height: u64| {
        let mut set: BTreeMap<String, u64> = (0..VALIDATORS).map(|i| (key(i), 1)).collect();
        let passed = changes
            .iter()
            .filter(|(_, boundary, _)| height >= *boundary);
        for (_, _, (who, stake)) in passed {
            match stake {
                Some(stake) => set.insert(who.clone(), *stake),
                None => set.remove(who),
            };
        }
        set
    };
    let queued = |height: u64| {
        let waiting = changes
            .iter()
            .filter(|(at, b, _)| *at <= height && height < *b);
        waiting.count()
    };
    let last = changes.iter().map(|(_, b, _)| *b).max().expect("3");
    // The read command, polled on validator 2 (whose chain may lag the blocks that hold
    // the actions): at every height, exactly the changes whose boundary has passed.
    let end = Instant::now() + Duration::from_secs(30);
    let mut seen_queued = false;
    loop {
        let view = show(json_addr(2));
        let height = view["height"].as_u64().expect("height");
        assert_eq!(
            active(&view),
            expected(height),
            "at height {height}: {view}"
        );
        let pending = view["pending"].as_array().map(Vec::len);
        assert_eq!(pending, Some(queued(height)), "at height {height}: {view}");
        seen_queued |= queued(height) > 0;
        if height >= last {
            break;
        }
        assert!(Instant::now() < end, "the boundary {last} never came");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Heights between an inclusion and its boundary last 200 ms each (idle blocks), the
    // polls 100 ms: one saw a change queued, unless every change landed on a boundary.
    let on_boundary = changes.iter().all(|(at, b, _)| at == b);
    assert!(seen_queued || on_boundary, "a view with a change queued");
    let boundary = last;
    // An unjail by a validator that is not jailed: included, refused by the chain.
    let (ok, unjail) = cli(dir.path(), &["unjail"], 1, json_addr(2));
    assert!(!ok);
    assert_eq!(
        (unjail["applied"].as_bool(), unjail["reason"].as_str()),
        (Some(false), Some("not_jailed")),
        "{unjail}"
    );
    let target = boundary + 2 * EPOCH;
    cluster.wait_until(
        "the three 20 heights past the boundary",
        Duration::from_secs(40),
        |c| c.heights[..3].iter().all(|h| *h >= target),
    );
    for h in boundary + 1..=target {
        let (_, logged) = cluster.roots[&h];
        assert!(logged >= 3, "height {h} logged by {logged} validators");
    }
}

/// Validator 3's key double-votes: with its process down, the test binds its address with
/// its key and sends two different prevotes for each of the next heights. The others see
/// it, a block carries the evidence, and validator 3 is slashed (20 -> 19, or 18 if the block
/// holds evidence of two heights) and jailed.
/// Restarted, it asks to unjail through validator 0's port: refused `still_jailed` within
/// the jail period (25 blocks), applied after it; at the next epoch boundary it is back in
/// the set with its slashed stake, and all four finalize with equal roots.
#[test]
fn a_slashed_validator_unjails_after_its_jail_period() {
    let dir = tempfile::tempdir().expect("dir");
    let args = [
        "--base-port",
        "21600",
        "--epoch-length",
        "10",
        "--jail-period",
        "25",
    ];
    let config = common::init_devnet(dir.path(), &[&args[..], &["--stake", "20"]].concat());
    let spec = node::validator::read_config(&config).expect("config");
    let json_addr = |i: usize| spec.validators[i].json_addr.expect("json port");
    let mut cluster = Cluster::start(&config);
    cluster.wait_until("4 validators at height 2", Duration::from_secs(30), |c| {
        c.ready == VALIDATORS && c.heights.iter().all(|h| *h >= 2)
    });
    cluster.kill(3);
    double_vote_as_validator_3(&mut cluster, &spec, dir.path());
    let key3 = spec.validators[3].key.clone();
    let bond = |view: &Value| {
        let bonds = view["bonds"].as_array().expect("bonds").clone();
        bonds
            .into_iter()
            .find(|b| b["key"] == key3.as_str())
            .expect("a bond")
    };
    let end = Instant::now() + Duration::from_secs(20);
    let (jailed_at, slashed) = loop {
        let view = show(json_addr(0));
        if let Some(at) = bond(&view)["jailed_at"].as_u64() {
            // The block that jails it may hold evidence of two heights (at most two per
            // block; later proposals leave a jailed offender's out): 5% of 20 rounded up,
            // once or twice.
            let stake = bond(&view)["stake"].as_u64().expect("stake");
            assert!(stake == 19 || stake == 18, "{view}");
            assert!(!active(&view).contains_key(&key3), "{view}");
            break (at, stake);
        }
        assert!(Instant::now() < end, "validator 3 never jailed: {view}");
        std::thread::sleep(Duration::from_millis(100));
    };
    cluster.spawn(3);
    let until = jailed_at + 25;
    let mut refused = 0;
    let end = Instant::now() + Duration::from_secs(30);
    let applied_at = loop {
        let (ok, reply) = cli(dir.path(), &["unjail"], 3, json_addr(0));
        let height = reply["height"].as_u64().expect("included");
        if height < until {
            assert!(!ok, "{reply}");
            assert_eq!(reply["reason"], "still_jailed", "{reply}");
            refused += 1;
        } else {
            assert!(ok, "{reply}");
            break height;
        }
        assert!(Instant::now() < end, "the jail period never ended");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(refused >= 1, "asked within the jail period first");
    let boundary = applied_at.div_ceil(EPOCH) * EPOCH;
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let view = show(json_addr(1));
        let back = active(&view).get(&key3).copied();
        if view["height"].as_u64().expect("height") >= boundary {
            assert_eq!(back, Some(slashed), "{view}");
            assert_eq!(bond(&view)["jailed_at"], Value::Null);
            break;
        }
        assert_eq!(back, None, "not before the boundary {boundary}: {view}");
        assert!(Instant::now() < end, "the boundary {boundary} never came");
        std::thread::sleep(Duration::from_millis(100));
    }
    let target = boundary + 5;
    cluster.wait_until(
        "all four 5 heights past the boundary",
        Duration::from_secs(40),
        |c| c.heights.iter().all(|h| *h >= target),
    );
    assert_eq!(cluster.roots[&target].1, VALIDATORS, "all four at {target}");
}

/// Sends validator 3's double votes from its address with its key (its process is down)
/// until another validator reports evidence.
fn double_vote_as_validator_3(
    cluster: &mut Cluster,
    spec: &node::validator::DevnetConfig,
    dir: &Path,
) {
    use consensus::host::message_frame;
    use consensus::messages::{Message, SignedVote, Vote, VoteKind};
    use consensus::types::{Hash, ValidatorId};
    use consensus_net::{Lane, NetConfig, Network, Peer};
    let seed_text = std::fs::read_to_string(dir.join("validator-3/key")).expect("key");
    let seed = node::validator::unhex32(&seed_text).expect("seed");
    let key = Keypair::from_seed(seed);
    let chain_id = spec.chain_id_bytes().expect("chain id");
    let peers = spec.validators.iter().map(|v| Peer {
        id: ValidatorId(node::validator::unhex32(&v.key).expect("key")),
        addr: v.addr,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let guard = runtime.enter();
    let config = NetConfig::new(seed, spec.validators[3].addr, peers.collect());
    let (net, _inbox) = Network::start(config).expect("validator 3's endpoint");
    let end = Instant::now() + Duration::from_secs(30);
    while cluster.evidence == 0 {
        assert!(Instant::now() < end, "no validator saw the double votes");
        let next = cluster.heights[..3].iter().max().expect("3") + 1;
        for height in next..next + 3 {
            for value in [None, Some(Hash([height as u8; 32]))] {
                let vote = Vote {
                    kind: VoteKind::Prevote,
                    height,
                    round: 0,
                    value,
                    validator: key.id(),
                };
                let signature = key.sign(&vote.signing_bytes(&chain_id));
                let frame = message_frame(&Message::Vote(SignedVote { vote, signature }));
                net.broadcast(frame, Lane::Consensus);
            }
        }
        let pause = Instant::now() + Duration::from_millis(100);
        while Instant::now() < pause {
            cluster.read_line(Duration::from_millis(20));
        }
    }
    drop(net);
    drop(guard);
    runtime.shutdown_timeout(Duration::from_secs(2));
}
