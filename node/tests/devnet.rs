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
    /// Each height's root and the validators that logged it.
    roots: BTreeMap<u64, (String, Vec<usize>)>,
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
