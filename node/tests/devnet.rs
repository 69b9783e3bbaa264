//! A real multi-process NexusBFT cluster over QUIC on 127.0.0.1: four `nexus validator`
//! processes finalize blocks with equal state roots; one is killed (SIGKILL) and the other
//! three keep finalizing; it is restarted, re-executes its block file and catches up to the
//! same roots, and no validator ever reports double-signing evidence. Bounded: every wait
//! has a deadline and the children are killed on drop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use serde_json::Value;

const VALIDATORS: usize = 4;

struct Cluster {
    exe: PathBuf,
    config: PathBuf,
    children: Vec<Option<Child>>,
    tx: Sender<(usize, Value)>,
    rx: Receiver<(usize, Value)>,
    heights: Vec<u64>,
    roots: BTreeMap<u64, String>,
    evidence: u64,
    ready: Vec<Value>,
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
        let mut child = Command::new(&self.exe)
            .args(["validator", "--index", &i.to_string(), "--config"])
            .arg(&self.config)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn validator");
        let stdout = child.stdout.take().expect("stdout");
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line).expect("validator prints JSON");
                if tx.send((i, value)).is_err() {
                    break;
                }
            }
        });
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
                    let first = self.roots.entry(h).or_insert_with(|| root.clone());
                    assert_eq!(
                        *first, root,
                        "validator {i} has another state root at height {h}"
                    );
                    self.heights[i] = self.heights[i].max(h);
                }
                Some("evidence") => self.evidence += 1,
                Some("ready") => self.ready.push(v),
                _ => {}
            }
        }
    }
}

fn init(dir: &Path, exe: &Path) -> PathBuf {
    let out = Command::new(exe)
        .args([
            "devnet",
            "--validators",
            "4",
            "--rate",
            "500",
            "--init-only",
            "--dir",
        ])
        .arg(dir)
        .output()
        .expect("nexus devnet --init-only");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    PathBuf::from(v["config"].as_str().expect("config path"))
}

#[test]
fn four_processes_finalize_survive_a_kill_and_the_killed_one_catches_up() {
    let dir = tempfile::tempdir().expect("dir");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_nexus"));
    let config = init(dir.path(), &exe);
    let (tx, rx) = mpsc::channel();
    let mut cluster = Cluster {
        exe,
        config,
        children: (0..VALIDATORS).map(|_| None).collect(),
        tx,
        rx,
        heights: vec![0; VALIDATORS],
        roots: BTreeMap::new(),
        evidence: 0,
        ready: Vec::new(),
    };
    for i in 0..VALIDATORS {
        cluster.start(i);
    }
    cluster.wait_until("4 validators at height 5", Duration::from_secs(20), |c| {
        c.heights.iter().all(|h| *h >= 5)
    });

    cluster.kill(3);
    let base = cluster.heights[..3].iter().copied().max().expect("3");
    cluster.wait_until(
        "3 validators 5 heights further",
        Duration::from_secs(20),
        |c| c.heights[..3].iter().all(|h| *h >= base + 5),
    );
    let killed_at = cluster.heights[3];

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
        "re-executed its {recovered} stored blocks (killed at {killed_at})"
    );
    assert_eq!(cluster.evidence, 0, "nobody double-signed");
    assert!(
        cluster.heights[3] > killed_at + 5,
        "it caught up past the heights it missed"
    );
}
