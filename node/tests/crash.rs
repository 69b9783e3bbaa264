//! Crash safety of `nexus pipeline`: a real node process under load is killed with SIGKILL at
//! random moments, many times, and restarted on the same data folder. After every restart:
//! every order the node had reported `finalized` is in the log, and the recovered state root
//! equals a clean `nexus replay` of the log (`nexus wal dump`).
//!
//! Iterations: `NEXUS_CRASH_ITERATIONS` (default 8); seed: `NEXUS_CRASH_SEED`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{start, NEXUS};

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("node.toml");
    let text = format!(
        r#"
data_dir = "{data}"
[gateway]
order_entry_listen = "127.0.0.1:0"
market_data_listen = "127.0.0.1:0"
[ingress]
listen = "127.0.0.1:0"
[engine]
max_resting_orders = 200000
max_open_orders_per_account = 100000
[blocks]
max_inputs = 64
max_age_us = 2000
[pipeline]
ring_capacity = 4096
snapshot_every_blocks = 25
[[genesis.assets]]
name = "T"
decimals = 0
[[genesis.assets]]
name = "U"
decimals = 0
[[genesis.markets]]
name = "T-U"
base = "T"
quote = "U"
tick = "1"
lot = "1"
min_qty = "1"
maker_fee_bps = 0
taker_fee_bps = 10
{deposits}
"#,
        data = dir.join("data").display(),
        deposits = (1..=4)
            .flat_map(|account| {
                ["T", "U"].map(|asset| {
                    format!(
                        "[[genesis.deposits]]\naccount = {account}\nasset = \"{asset}\"\namount = \"1000000000000\"\n"
                    )
                })
            })
            .collect::<String>()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `nexus wal dump` piped into `nexus replay --state-hash`: the dump's lines and the state
/// hash a clean replay of them ends in.
fn dump_and_replay(data: &Path) -> (Vec<Value>, String) {
    let dump = Command::new(NEXUS)
        .args(["wal", "dump", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let mut replay = Command::new(NEXUS)
        .args([
            "replay",
            "-",
            "--state-hash",
            "--max-resting-orders",
            "200000",
            "--max-open-orders",
            "100000",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = replay.stdin.take().unwrap();
    let input = dump.stdout.clone();
    let feeder = thread::spawn(move || stdin.write_all(&input));
    let output = replay.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    let last = output
        .stdout
        .split(|&b| b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap()
        .to_vec();
    let end: Value = serde_json::from_slice(&last).unwrap();
    assert_eq!(end["ev"], "end");
    let lines = dump
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    (lines, end["state_hash"].as_str().unwrap().to_string())
}

/// A small xorshift generator: the test is reproducible from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Sends orders as fast as the node takes them until the connection breaks or `stop`;
/// returns the (account, oid) of every order reported finalized.
fn load(
    port: u16,
    first_oid: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Vec<(u64, u64)>> {
    thread::spawn(move || {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return Vec::new();
        };
        let sent: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
        let finalized: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
        let reader = {
            let (stream, sent, finalized) =
                (stream.try_clone().unwrap(), sent.clone(), finalized.clone());
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let Ok(event) = serde_json::from_str::<Value>(&line) else {
                        break;
                    };
                    if event["ev"] == "finalized" {
                        let index = event["line"].as_u64().unwrap() as usize - 1;
                        let order = sent.lock().unwrap()[index];
                        finalized.lock().unwrap().push(order);
                    }
                }
            })
        };
        let mut writer = std::io::BufWriter::new(stream);
        let mut rng = Rng(seed | 1);
        let mut oid = first_oid;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..50 {
                let account = 1 + rng.next() % 4;
                let side = if rng.next().is_multiple_of(2) {
                    "buy"
                } else {
                    "sell"
                };
                let price = 95 + rng.next() % 11;
                let qty = 1 + rng.next() % 20;
                let tif = ["gtc", "gtc", "gtc", "ioc"][(rng.next() % 4) as usize];
                sent.lock().unwrap().push((account, oid));
                let line = format!(
                    "{{\"op\":\"order\",\"account\":{account},\"market\":\"T-U\",\"oid\":{oid},\"side\":\"{side}\",\"price\":\"{price}\",\"qty\":\"{qty}\",\"tif\":\"{tif}\"}}\n"
                );
                oid += 1;
                if writer.write_all(line.as_bytes()).is_err() {
                    break;
                }
            }
            if writer.flush().is_err() {
                break;
            }
            thread::sleep(Duration::from_micros(500));
        }
        drop(writer);
        let _ = reader.join();
        let finalized = finalized.lock().unwrap().clone();
        finalized
    })
}

#[test]
fn sigkill_under_load_never_loses_a_finalized_order_or_diverges() {
    let iterations: u64 = std::env::var("NEXUS_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("NEXUS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let data = dir.path().join("data");
    let mut rng = Rng(seed);
    let mut all_finalized: HashSet<(u64, u64)> = HashSet::new();
    let mut last_height = 0;
    for iteration in 0..iterations {
        let mut node = start(&config);
        // Recovered state = a clean replay of the log, and nothing finalized is missing.
        let (lines, replayed) = dump_and_replay(&data);
        assert_eq!(
            node.ready["state_root"].as_str().unwrap(),
            replayed,
            "iteration {iteration}: recovered root differs from a replay of the log"
        );
        let logged: HashSet<(u64, u64)> = lines
            .iter()
            .filter(|l| l["op"] == "order")
            .map(|l| (l["account"].as_u64().unwrap(), l["oid"].as_u64().unwrap()))
            .collect();
        let missing: Vec<_> = all_finalized.difference(&logged).take(5).collect();
        assert!(
            missing.is_empty(),
            "iteration {iteration}: finalized orders lost: {missing:?}"
        );
        let height = node.ready["height"].as_u64().unwrap();
        assert!(
            height >= last_height,
            "the chain went backwards: {height} < {last_height}"
        );
        last_height = height;

        let port: u16 = node.ready["listen"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let client = load(port, (iteration + 1) * 10_000_000, rng.next(), stop.clone());
        thread::sleep(Duration::from_millis(150 + rng.next() % 400));
        node.child.kill().unwrap(); // SIGKILL
        node.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        let finalized = client.join().unwrap();
        assert!(
            !finalized.is_empty() || iteration > 0,
            "the first run finalized nothing: the load never reached the node"
        );
        all_finalized.extend(finalized);
    }
    assert!(
        all_finalized.len() > 100,
        "too little load to mean anything: {}",
        all_finalized.len()
    );
    eprintln!(
        "{iterations} kills under load: {} finalized orders all kept, chain at height {last_height}",
        all_finalized.len()
    );

    // A last clean run ends with a graceful stop whose root matches a replay of the log.
    let mut node = start(&config);
    let deadline = Instant::now() + Duration::from_secs(10);
    // SIGTERM: the node writes its open block and reports its final root.
    Command::new("kill")
        .arg("-TERM")
        .arg(node.child.id().to_string())
        .status()
        .unwrap();
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if node.stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.contains("\"stopped\"") {
            break;
        }
    }
    assert!(node.child.wait().unwrap().success());
    let stopped: Value = serde_json::from_str(&line).unwrap();
    let (_, replayed) = dump_and_replay(&data);
    assert_eq!(stopped["state_root"].as_str().unwrap(), replayed);
}
