//! Staking actions from any key on a real 4-validator devnet (epochs of 10 blocks), through
//! the `nexus stake` CLI and the JSON port: forged actions (bad signature, unknown signer,
//! stale or far nonce, not an action) get typed refusals and the validator keeps serving;
//! validator 3 leaves with an action signed by its own key and submitted through validator
//! 0's port, while validator 2's stake change goes through validator 1's; both take effect
//! at the epoch boundary after them (every `nexus stake show` before it shows the old set),
//! after which the remaining three keep finalizing with equal roots (checked on every
//! `final` line); an unjail of a validator that is not jailed is included and refused by
//! the chain with its reason. Bounded: every wait has a deadline and the children are
//! killed on drop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use consensus::governance::{Action, SignedAction};
use consensus::types::Keypair;
use serde_json::{json, Value};

mod common;

const VALIDATORS: usize = 4;
const EPOCH: u64 = 10;

/// Four `nexus validator` processes and their `final` lines.
struct Cluster {
    children: Vec<Child>,
    rx: Receiver<(usize, Value)>,
    heights: Vec<u64>,
    /// Each height's root and how many validators logged it.
    roots: BTreeMap<u64, (String, usize)>,
    ready: usize,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    fn start(config: &Path) -> Cluster {
        let (tx, rx) = mpsc::channel();
        let children = (0..VALIDATORS)
            .map(|i| {
                let mut child = Command::new(common::NEXUS)
                    .args(["validator", "--index", &i.to_string(), "--config"])
                    .arg(config)
                    .stdout(Stdio::piped())
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("spawn validator");
                let stdout = child.stdout.take().expect("stdout");
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        let value: Value = serde_json::from_str(&line).expect("JSON");
                        if tx.send((i, value)).is_err() {
                            break;
                        }
                    }
                });
                child
            })
            .collect();
        Cluster {
            children,
            rx,
            heights: vec![0; VALIDATORS],
            roots: BTreeMap::new(),
            ready: 0,
        }
    }

    /// Reads log lines until `done` holds, checking that every validator logs the same
    /// root at each height.
    fn wait_until(&mut self, what: &str, limit: Duration, done: impl Fn(&Cluster) -> bool) {
        let end = Instant::now() + limit;
        while !done(self) {
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out: {what}: {:?}", self.heights);
            let Ok((i, v)) = self.rx.recv_timeout(left.min(Duration::from_millis(200))) else {
                continue;
            };
            match v["event"].as_str() {
                Some("ready") => self.ready += 1,
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
        &["--base-port", "21500", "--epoch-length", "10"],
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
    // 1's port). Each is answered once a decided block holds it.
    let (ok, leave) = cli(dir.path(), &["leave"], 3, json_addr(0));
    assert!(ok, "{leave}");
    let (ok, restake) = cli(dir.path(), &["set-stake", "--stake", "3"], 2, json_addr(1));
    assert!(ok, "{restake}");
    for reply in [&leave, &restake] {
        assert_eq!(
            (reply["ev"].as_str(), reply["applied"].as_bool()),
            (Some("action_included"), Some(true))
        );
    }
    let last = leave["height"]
        .as_u64()
        .max(restake["height"].as_u64())
        .unwrap();
    let boundary = last.div_ceil(EPOCH) * EPOCH;
    let key = |i: usize| spec.validators[i].key.clone();
    let before: BTreeMap<String, u64> = (0..VALIDATORS).map(|i| (key(i), 1)).collect();
    let after: BTreeMap<String, u64> = [(key(0), 1), (key(1), 1), (key(2), 3)].into();
    // The read command, polled on validator 2: the old set until the boundary (both changes
    // queued once its chain holds their blocks), the new one after it.
    let end = Instant::now() + Duration::from_secs(30);
    let mut seen_queued = false;
    loop {
        let view = show(json_addr(2));
        let height = view["height"].as_u64().expect("height");
        if height < boundary {
            assert_eq!(
                active(&view),
                before,
                "before the boundary {boundary}: {view}"
            );
            // Validator 2 may not have applied the blocks that hold the actions yet.
            let queued = view["pending"].as_array().map(Vec::len);
            assert!(height < last || queued == Some(2), "{view}");
            seen_queued |= height >= last;
        } else {
            assert_eq!(
                active(&view),
                after,
                "after the boundary {boundary}: {view}"
            );
            assert_eq!(view["pending"], json!([]));
            break;
        }
        assert!(Instant::now() < end, "the boundary {boundary} never came");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Heights last..boundary last 200 ms each (idle blocks), the polls 100 ms: one saw them.
    assert!(
        seen_queued || boundary == last,
        "a view between {last} and {boundary}"
    );
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
