//! A four-validator cluster of real `nexus validator` processes whose QUIC links run through
//! a [`Mesh`] of UDP proxies, with the bookkeeping the fault tests check: each validator's
//! `final` lines (root per height, compared as they arrive), when each height was first
//! finalized, block finality per phase, and at the end the block files compared height by
//! height.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use consensus::types::ValidatorId;
use consensus::validators::{Validator, ValidatorSet};
use hdrhistogram::Histogram;
use node::fault_proxy::Mesh;
use node::validator::{read_config, unhex32, DevnetConfig};
use serde_json::Value;

use crate::common;

/// Validators in every fault run.
pub const VALIDATORS: usize = 4;

/// Where a run is, for the figures: before the fault, during it, after it healed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Before the fault.
    Before = 0,
    /// While the fault holds.
    During = 1,
    /// After it healed.
    After = 2,
}

/// Each phase's histogram of block finality (proposal timestamp to decision, µs).
pub type PhaseHistograms = [Histogram<u64>; 3];

/// New empty histograms, one per phase.
pub fn phase_histograms() -> PhaseHistograms {
    std::array::from_fn(|_| Histogram::new(3).expect("histogram"))
}

/// A running cluster and what its validators printed so far.
pub struct Cluster {
    /// The devnet folder (configuration, validators' data).
    pub dir: PathBuf,
    /// `devnet.toml`.
    pub config_path: PathBuf,
    /// Its contents.
    pub config: DevnetConfig,
    /// The proxies between the validators.
    pub mesh: Mesh,
    children: Vec<Option<Child>>,
    tx: Sender<(usize, Value)>,
    rx: Receiver<(usize, Value)>,
    /// Highest height each validator logged `final` for.
    pub heights: Vec<u64>,
    /// Each height's root and the validators that logged it.
    pub roots: BTreeMap<u64, (String, Vec<usize>)>,
    /// When each height was first logged final, and in which round.
    pub first_final: BTreeMap<u64, (Instant, u64)>,
    /// Block finality by phase (timestamp to the first `final` line of each height).
    pub block_finality_us: PhaseHistograms,
    /// The current phase.
    pub phase: Phase,
    /// `evidence` lines (double signing) seen.
    pub evidence: u64,
    /// The offenders (keys) those lines named, with how many lines named each.
    pub offenders: BTreeMap<String, u64>,
    /// Extra `nexus validator` options, per validator, for its next launch
    /// (`--byzantine-equivocate`).
    pub validator_args: Vec<Vec<String>>,
    /// `ready` lines, by validator.
    pub ready: Vec<(usize, Value)>,
    /// Heights of each validator's `final` lines, in the order logged.
    pub finals: Vec<Vec<u64>>,
    /// Other event lines (state sync, snapshots), by validator.
    pub events: Vec<(usize, Value)>,
    /// Validators launched from now on dial each other directly instead of through the
    /// proxies (measurements on plain loopback; no faults can be injected on those links).
    pub direct: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..VALIDATORS {
            self.resume(i);
        }
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    /// Writes a devnet in `dir` (fixed ports from `base_port`, below the ephemeral range;
    /// the load client at `rate` orders/s; a snapshot every 25 blocks unless `extra` says;
    /// more `nexus devnet` options `extra`), starts the proxies and the four validators, and
    /// waits for their `ready` lines.
    pub fn start_with(dir: &Path, base_port: u16, rate: u64, seed: u64, extra: &[&str]) -> Cluster {
        Cluster::start_linked(dir, base_port, rate, seed, extra, false, |_| {})
    }

    /// [`Cluster::start_with`], the validators linked directly if `direct` (no proxies),
    /// and `devnet.toml` changed by `edit` before they start.
    pub fn start_linked(
        dir: &Path,
        base_port: u16,
        rate: u64,
        seed: u64,
        extra: &[&str],
        direct: bool,
        edit: impl FnOnce(&mut DevnetConfig),
    ) -> Cluster {
        let base = base_port.to_string();
        let rate = rate.to_string();
        let mut args = vec!["--base-port", &base, "--rate", &rate];
        if !extra.contains(&"--snapshot-every") {
            args.extend_from_slice(&["--snapshot-every", "25"]);
        }
        args.extend_from_slice(extra);
        let config_path = common::init_devnet(dir, &args);
        let mut config = read_config(&config_path).expect("config");
        edit(&mut config);
        let text = toml::to_string(&config).expect("config as TOML");
        std::fs::write(&config_path, text).expect("write devnet.toml");
        let targets: Vec<_> = config.validators.iter().map(|v| v.addr).collect();
        let mesh = Mesh::start(&targets, seed).expect("proxies");
        let (tx, rx) = mpsc::channel();
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            config_path,
            config,
            mesh,
            children: (0..VALIDATORS).map(|_| None).collect(),
            tx,
            rx,
            heights: vec![0; VALIDATORS],
            roots: BTreeMap::new(),
            first_final: BTreeMap::new(),
            block_finality_us: phase_histograms(),
            phase: Phase::Before,
            evidence: 0,
            offenders: BTreeMap::new(),
            validator_args: vec![Vec::new(); VALIDATORS],
            ready: Vec::new(),
            finals: vec![Vec::new(); VALIDATORS],
            events: Vec::new(),
            direct,
        };
        for i in 0..VALIDATORS {
            cluster.launch(i);
        }
        cluster.wait_until("4 validators ready", Duration::from_secs(120), |c| {
            c.ready.len() == VALIDATORS
        });
        cluster
    }

    /// Starts validator `i`, sending to every peer through its proxy (unless
    /// [`Cluster::direct`]).
    pub fn launch(&mut self, i: usize) {
        let mut command = Command::new(common::NEXUS);
        command
            .args(["validator", "--index", &i.to_string(), "--config"])
            .arg(&self.config_path)
            .args(&self.validator_args[i]);
        for j in (0..VALIDATORS).filter(|&j| j != i && !self.direct) {
            let addr = self.mesh.dial_addr(i, j);
            command.arg("--peer-addr").arg(format!("{j}={addr}"));
        }
        let child = common::spawn_validator(command, i, self.tx.clone());
        self.children[i] = Some(child);
    }

    /// SIGKILL of validator `i`.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.children[i].take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    /// Sets validator `i`'s file size limit (`RLIMIT_FSIZE`, soft and hard) to `bytes`
    /// while it runs (`prlimit`, util-linux): a write past it fails with `EFBIG`, as on a
    /// full disk. A restarted process has no limit (the disk is back).
    pub fn limit_file_size(&self, i: usize, bytes: u64) {
        let child = self.children[i].as_ref().expect("running");
        let status = Command::new("prlimit")
            .args(["--pid", &child.id().to_string()])
            .arg(format!("--fsize={bytes}:{bytes}"))
            .status()
            .expect("prlimit (util-linux)");
        assert!(status.success(), "prlimit on validator {i}: {status}");
    }

    /// Reads log lines until validator `i` exits (panics after `limit`); its exit status.
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + limit;
        loop {
            let child = self.children[i].as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("status") {
                self.children[i] = None;
                // Its last lines, already printed, are read too.
                self.run_for(Duration::from_millis(200));
                return status;
            }
            assert!(Instant::now() < end, "validator {i} did not exit");
            self.run_for(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (`-STOP`, `-CONT`, `-TERM`) to validator `i`, if started; whether
    /// `kill` succeeded.
    fn signal(&self, i: usize, signal: &str) -> bool {
        let Some(child) = &self.children[i] else {
            return false;
        };
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success())
    }

    /// SIGSTOP of validator `i`: it stays alive but does nothing.
    pub fn pause(&self, i: usize) {
        assert!(self.signal(i, "-STOP"), "SIGSTOP validator {i}");
    }

    /// SIGCONT of validator `i` (nothing if it is not running).
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    /// The highest height any validator logged.
    pub fn top(&self) -> u64 {
        self.heights.iter().copied().max().unwrap_or(0)
    }

    /// Reads log lines until `done` holds; panics after `limit`. Every `final` line's root
    /// is compared with the first root logged at its height.
    pub fn wait_until(&mut self, what: &str, limit: Duration, done: impl Fn(&Cluster) -> bool) {
        let end = Instant::now() + limit;
        while !done(self) {
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}: heights {:?}",
                self.heights
            );
            if let Ok((i, v)) = self.rx.recv_timeout(left.min(Duration::from_millis(200))) {
                self.observe(i, v);
            }
        }
    }

    /// Reads log lines for `duration` (the cluster under a fault, observed).
    pub fn run_for(&mut self, duration: Duration) {
        let end = Instant::now() + duration;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if let Ok((i, v)) = self.rx.recv_timeout(left.min(Duration::from_millis(200))) {
                self.observe(i, v);
            }
        }
    }

    /// Waits until each validator in `which` logged a height at least `target`.
    pub fn wait_heights(&mut self, which: &[usize], target: u64, limit: Duration) {
        let what = format!("validators {which:?} at height {target}");
        self.wait_until(&what, limit, |c| {
            which.iter().all(|&i| c.heights[i] >= target)
        });
    }

    fn observe(&mut self, i: usize, v: Value) {
        if std::env::var_os("NEXUS_TEST_EVENTS").is_some() && v["event"] != "final" {
            eprintln!("validator {i}: {v}");
        }
        match v["event"].as_str() {
            Some("final") => self.on_final(i, &v),
            Some("evidence") => {
                self.evidence += 1;
                let offender = v["offender"].as_str().expect("offender").to_string();
                *self.offenders.entry(offender).or_default() += 1;
            }
            Some("ready") => self.ready.push((i, v)),
            _ => self.events.push((i, v)),
        }
    }

    fn on_final(&mut self, i: usize, v: &Value) {
        let h = v["height"].as_u64().expect("height");
        let root = v["root"].as_str().expect("root").to_string();
        let (first, by) = self
            .roots
            .entry(h)
            .or_insert_with(|| (root.clone(), Vec::new()));
        assert_eq!(
            *first, root,
            "validator {i} has another execution root at height {h} than {by:?}"
        );
        by.push(i);
        self.finals[i].push(h);
        self.heights[i] = self.heights[i].max(h);
        let round = v["round"].as_u64().expect("round");
        if self.first_final.contains_key(&h) {
            return;
        }
        self.first_final.insert(h, (Instant::now(), round));
        // The block's finality: its timestamp to the first decision logged (a validator
        // catching up later logs old blocks; that is not the cluster's finality).
        let ts = v["ts_ns"].as_u64().expect("ts_ns");
        let decided = v["decided_ns"].as_u64().expect("decided_ns");
        let us = decided.saturating_sub(ts) / 1_000;
        let _ = self.block_finality_us[self.phase as usize].record(us.max(1));
    }

    /// The first height logged final at or after `since`, and how long after `since`.
    pub fn first_final_after(&self, since: Instant) -> Option<(u64, Duration)> {
        self.first_final
            .iter()
            .find(|(_, (at, _))| *at >= since)
            .map(|(&h, (at, _))| (h, at.duration_since(since)))
    }

    /// The config index of the proposer of round 0 at height `h`.
    pub fn proposer(&self, h: u64) -> usize {
        self.proposers(h)[h as usize - 1]
    }

    /// The config index of the round-0 proposer of heights 1..=`up_to` (weighted round
    /// robin over the genesis set, advanced once per height: `consensus::validators`).
    pub fn proposers(&self, up_to: u64) -> Vec<usize> {
        let ids: Vec<ValidatorId> = (0..VALIDATORS).map(|i| self.validator_id(i)).collect();
        let set: Vec<Validator> = ids.iter().map(|&id| Validator { id, stake: 1 }).collect();
        let mut set = ValidatorSet::new(set).expect("validator set");
        let mut out = Vec::new();
        for _ in 0..up_to {
            let id = set.proposer(0);
            out.push(ids.iter().position(|&k| k == id).expect("a configured key"));
            set = set.next_height();
        }
        out
    }

    /// Validator `i`'s key.
    pub fn validator_id(&self, i: usize) -> ValidatorId {
        ValidatorId(unhex32(&self.config.validators[i].key).expect("key"))
    }

    /// Stops every validator (SIGTERM, then waits), so that their block files are whole.
    pub fn stop_all(&mut self) {
        for i in 0..VALIDATORS {
            self.resume(i);
            let Some(mut child) = self.children[i].take() else {
                continue;
            };
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let end = Instant::now() + Duration::from_secs(20);
            while child.try_wait().expect("status").is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Each validator's block file: block id and round per height, heights 1, 2, ... in
    /// order (validators stopped first).
    pub fn stored_blocks(&self) -> Vec<Vec<([u8; 32], u64, ValidatorId)>> {
        (0..VALIDATORS)
            .map(|i| {
                self.stored_certificates(i)
                    .iter()
                    .enumerate()
                    .map(|(k, c)| {
                        assert_eq!(c.block.height, k as u64 + 1, "validator {i}'s block file");
                        (c.block.id().0, u64::from(c.round), c.block.proposer)
                    })
                    .collect()
            })
            .collect()
    }
}

impl Cluster {
    /// Every certificate in validator `i`'s block file, in height order (validators
    /// stopped first).
    pub fn stored_certificates(&self, i: usize) -> Vec<consensus::messages::CommitCertificate> {
        let path = self.dir.join(format!("validator-{i}")).join("blocks");
        let (store, _) = consensus_net::BlockStore::open(&path).expect("block file");
        let read = store.certificates(0).expect("read");
        read.map(|c| c.expect("an intact record")).collect()
    }

    /// The hash of every item of every block in validator `i`'s block file, with its
    /// height (validators stopped first).
    pub fn stored_items(&self, i: usize) -> Vec<(u64, transactions::TxHash)> {
        let mut out = Vec::new();
        for c in &self.stored_certificates(i) {
            let items = txport::decode_list(&c.block.payload, usize::MAX)
                .unwrap_or_else(|| panic!("block {}: not a list of items", c.block.height));
            out.extend(
                items
                    .into_iter()
                    .map(|item| (c.block.height, transactions::TxHash::of(item))),
            );
        }
        out
    }

    /// Event lines named `event` that validator `i` printed.
    pub fn events_of<'a>(&'a self, i: usize, event: &'a str) -> impl Iterator<Item = &'a Value> {
        self.events
            .iter()
            .filter(move |(j, v)| *j == i && v["event"] == event)
            .map(|(_, v)| v)
    }
}

/// `p50` and `p99` of a histogram of µs, in ms.
pub fn p50_p99_ms(h: &Histogram<u64>) -> (f64, f64) {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
    (ms(0.5), ms(0.99))
}
