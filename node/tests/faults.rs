//! Fault injection on a real cluster: four `nexus validator` processes on 127.0.0.1 whose
//! QUIC links run through UDP proxies (`node::fault_proxy`), a load client on every
//! validator's transaction port and a probe client whose orders rest for good. Each test
//! injects one fault while both clients trade: a validator paused (SIGSTOP/SIGCONT), a 2|2
//! partition, loss and delay on every link, the SIGKILL and restart of a proposer before
//! its turn, an equivocating validator (`--byzantine-equivocate`), a validator whose disk
//! fills (a file size limit set on the running process). After each run:
//!
//! - every `final` line's execution root equals every other validator's at that height
//!   (checked line by line as they arrive);
//! - the validators' block files, read after they stop, hold the same block at every
//!   height (and a round-0 block was proposed by the validator the schedule names);
//! - every probe order the client saw `finalized` rests in every validator's state
//!   (queried on each JSON port);
//! - after the fault heals, every validator finalizes new heights within
//!   [`LIVENESS_BOUND`] (a failure bound: the time it took is printed, not asserted);
//! - no validator reported double-signing evidence, except against the validator a test
//!   runs with `--byzantine-equivocate` (which must then be slashed and jailed).
//!
//! The tests run one at a time (a lock): four validators per run already share the
//! machine's cores. `soak` (ignored; docs/consensus.md, "Fault injection") loops random
//! faults for `NEXUS_SOAK_MINUTES` with a printed seed and prints the figures.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use node::fault_proxy::LinkFaults;
use node::load::LoadStats;
use serde_json::{json, Value};

#[path = "faults/cluster.rs"]
mod cluster;
mod common;
#[path = "faults/probe.rs"]
mod probe;

use cluster::{p50_p99_ms, Cluster, Phase, VALIDATORS};
use probe::Probe;

/// After a fault heals, every validator must finalize new heights within this (a bound
/// for a failure, far above the seconds it takes).
const LIVENESS_BOUND: Duration = Duration::from_secs(60);
/// Load client rate (orders/s, 20 per transaction).
const LOAD_RATE: u64 = 1_000;
const ALL: [usize; VALIDATORS] = [0, 1, 2, 3];

/// One fault run at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A cluster with its two clients.
struct Run {
    cluster: Cluster,
    probe: Probe,
    load: LoadClient,
    /// The validator started with `--byzantine-equivocate`, if any: the only one evidence
    /// may name.
    byzantine: Option<usize>,
    /// Round-0 blocks up to this height must come from the genesis set's schedule (a
    /// validator jailed later changes the set).
    schedule_until: u64,
    _dir: tempfile::TempDir,
}

/// The devnet's signed stream (`node::load::drive`) over the first 96 accounts.
struct LoadClient {
    stats: Arc<Mutex<LoadStats>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl LoadClient {
    fn start(config: &node::validator::DevnetConfig) -> LoadClient {
        let mut spec = config.load_spec().expect("spec");
        spec.accounts = probe::LOAD_ACCOUNTS;
        let targets: Vec<_> = config.validators.iter().map(|v| v.tx_addr).collect();
        let stats: Arc<Mutex<LoadStats>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, t) = (stats.clone(), stop.clone());
        let thread =
            std::thread::spawn(move || node::load::drive(&spec, &targets, LOAD_RATE, t, s));
        LoadClient {
            stats,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops it; its highest finalized height and figures.
    fn stop(&mut self) -> (u64, Value) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("load thread").expect("load ran");
        }
        let stats = self.stats.lock().expect("stats");
        (stats.max_finalized_height, stats.to_json())
    }
}

impl Drop for LoadClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Run {
    /// Starts the cluster and both clients; returns once every validator is past height 5
    /// and the probe has orders finalized.
    fn start(base_port: u16, seed: u64) -> Run {
        Run::start_with(base_port, seed, &[])
    }

    /// [`Run::start`] with more `nexus devnet` options.
    fn start_with(base_port: u16, seed: u64, devnet: &[&str]) -> Run {
        let dir = tempfile::tempdir().expect("dir");
        let mut cluster = Cluster::start_with(dir.path(), base_port, LOAD_RATE, seed, devnet);
        let load = LoadClient::start(&cluster.config);
        let probe = Probe::start(&cluster.config);
        cluster.wait_heights(&ALL, 5, Duration::from_secs(60));
        cluster.wait_until("probe orders finalized", Duration::from_secs(60), |_| {
            probe.finalized() >= 5
        });
        Run {
            cluster,
            probe,
            load,
            byzantine: None,
            schedule_until: u64::MAX,
            _dir: dir,
        }
    }

    fn phase(&mut self, phase: Phase) {
        self.cluster.phase = phase;
        self.probe.set_phase(phase);
    }

    /// Waits until the probe saw `more` orders finalized beyond what it has now.
    fn probe_progress(&mut self, more: u64, what: &str) {
        let target = self.probe.finalized() + more;
        let probe = &self.probe;
        self.cluster
            .wait_until(what, LIVENESS_BOUND, |_| probe.finalized() >= target);
    }

    /// Marks the fault healed; waits until every validator in `which` finalized three
    /// heights past the top; returns how long after `healed` the first new height came.
    fn recovered(&mut self, which: &[usize], healed: Instant) -> Duration {
        self.phase(Phase::After);
        let target = self.cluster.top() + 3;
        self.cluster.wait_heights(which, target, LIVENESS_BOUND);
        self.cluster
            .first_final_after(healed)
            .map(|(_, after)| after)
            .expect("a height after the heal")
    }

    /// Stops both clients, waits for every validator to reach what they saw finalized,
    /// checks the probe's orders in every validator's state, stops the validators and
    /// compares their block files (and that no block repeats an item of an earlier one).
    /// Returns the run's figures and blocks.
    fn finish(mut self, name: &str, extra: Value) -> Finished {
        let (finalized, probe) = self.probe.stop();
        let (load_height, load) = self.load.stop();
        let probe_height = finalized.iter().map(|f| f.2).max().unwrap_or(0);
        let target = probe_height.max(load_height);
        self.cluster.wait_heights(&ALL, target, LIVENESS_BOUND);
        let checked = probe::check_resting(&self.cluster.config, &ALL, &finalized);
        assert!(checked > 0, "the probe saw orders finalized");
        match self.byzantine {
            None => assert_eq!(self.cluster.evidence, 0, "no validator double-signed"),
            Some(b) => {
                let key = &self.cluster.config.validators[b].key;
                let named: Vec<&String> = self.cluster.offenders.keys().collect();
                assert_eq!(named, [key], "evidence names only the equivocator");
            }
        }
        self.cluster.stop_all();
        let stores = self.cluster.stored_blocks();
        check_stores(&self.cluster, &stores, self.schedule_until);
        let items = once_each(self.cluster.stored_items(0));
        let block_finality: Vec<Value> = ["before", "during", "after"]
            .iter()
            .zip(&self.cluster.block_finality_us)
            .map(|(phase, h)| {
                let (p50, p99) = p50_p99_ms(h);
                json!({"phase": phase, "blocks": h.len(), "p50_ms": p50, "p99_ms": p99})
            })
            .collect();
        let figures = json!({"event": "fault_run", "run": name, "heights": self.cluster.heights,
            "orders_checked": checked, "probe": probe, "load": load,
            "block_finality": block_finality, "proxy": self.cluster.mesh.counts(), "fault": extra});
        println!("{figures}");
        Finished { stores, items }
    }
}

/// What a finished run stored.
struct Finished {
    /// Each validator's blocks.
    stores: Vec<Vec<BlockEntry>>,
    /// The height of each item (transaction) the chain holds.
    items: std::collections::BTreeMap<transactions::TxHash, u64>,
}

/// The chain's items by hash, each found once: a transaction two blocks hold would have been
/// executed twice (its nonce checked twice).
fn once_each(
    items: Vec<(u64, transactions::TxHash)>,
) -> std::collections::BTreeMap<transactions::TxHash, u64> {
    let mut by_hash = std::collections::BTreeMap::new();
    for (height, hash) in items {
        if let Some(first) = by_hash.insert(hash, height) {
            panic!("item {hash} is in block {first} and again in block {height}");
        }
    }
    by_hash
}

/// One stored block: id, round decided in, proposer.
type BlockEntry = ([u8; 32], u64, consensus::types::ValidatorId);

/// Every height stored by more than one validator holds the same block everywhere; every
/// validator stored at least what it logged; a round-0 block up to `schedule_until` came
/// from the scheduled proposer.
fn check_stores(cluster: &Cluster, stores: &[Vec<BlockEntry>], schedule_until: u64) {
    let longest = stores.iter().map(Vec::len).max().unwrap_or(0);
    for (i, store) in stores.iter().enumerate() {
        assert!(
            store.len() as u64 >= cluster.heights[i],
            "validator {i} logged height {} but stored {}",
            cluster.heights[i],
            store.len()
        );
    }
    let ids: Vec<_> = (0..VALIDATORS).map(|i| cluster.validator_id(i)).collect();
    let proposers = cluster.proposers((longest as u64).min(schedule_until));
    for h in 0..longest {
        let at: Vec<_> = stores.iter().filter_map(|s| s.get(h)).collect();
        assert!(
            at.iter().all(|b| b.0 == at[0].0),
            "validators stored different blocks at height {}",
            h + 1
        );
        if at[0].1 == 0 && (h as u64) < schedule_until {
            let scheduled = ids[proposers[h]];
            assert_eq!(at[0].2, scheduled, "round-0 proposer of height {}", h + 1);
        }
    }
}

/// The cluster's height `top`, after reading every line already printed.
fn settled_top(cluster: &mut Cluster) -> u64 {
    cluster.run_for(Duration::from_millis(100));
    cluster.top()
}

#[test]
fn a_paused_validator_is_left_behind_then_catches_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut run = Run::start(22000, 1);
    run.phase(Phase::During);
    run.cluster.pause(2);
    // Lines it wrote before the stop are read within this second.
    run.cluster.run_for(Duration::from_secs(1));
    let (base, paused_at) = (run.cluster.top(), run.cluster.heights[2]);
    // Past the QUIC idle timeout (3 s): the links to the paused validator die.
    run.cluster.run_for(Duration::from_secs(3));
    run.cluster
        .wait_heights(&[0, 1, 3], base + 10, LIVENESS_BOUND);
    run.probe_progress(10, "probe orders finalized while validator 2 is paused");
    assert_eq!(
        run.cluster.heights[2], paused_at,
        "a paused validator logs nothing"
    );
    run.cluster.resume(2);
    let resumed = Instant::now();
    let top = run.cluster.top();
    let recovery = run.recovered(&ALL, resumed);
    assert!(
        run.cluster.heights[2] > top,
        "validator 2 caught up past {top}"
    );
    let caught_up = resumed.elapsed();
    run.finish(
        "sigstop",
        json!({"paused_heights": top - paused_at, "first_final_after_resume_ms": recovery.as_millis(),
            "caught_up_ms": caught_up.as_millis()}),
    );
}

#[test]
fn a_two_two_partition_decides_nothing_and_liveness_returns_after_healing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut run = Run::start(22100, 2);
    run.phase(Phase::During);
    run.cluster.mesh.partition(&[&[0, 1], &[2, 3]]);
    // Past the QUIC idle timeout (3 s): the links die and are redialled through the cut.
    run.cluster.run_for(Duration::from_secs(4));
    let held = settled_top(&mut run.cluster);
    run.cluster.run_for(Duration::from_secs(3));
    // No side holds 3 of 4 votes: nothing new is decided once the cut holds.
    assert_eq!(
        run.cluster.top(),
        held,
        "a height was decided across a 2|2 partition"
    );
    let sent_during = run.probe.finalized();
    run.cluster.mesh.heal();
    let healed = Instant::now();
    let recovery = run.recovered(&ALL, healed);
    // Orders the clients sent during the partition are finalized after it.
    run.probe_progress(10, "probe orders finalized after the heal");
    assert!(run.probe.finalized() >= sent_during + 10);
    run.finish(
        "partition_2_2",
        json!({"held_at": held, "first_final_after_heal_ms": recovery.as_millis()}),
    );
}

#[test]
fn loss_and_delay_on_every_link_slow_the_cluster_but_it_stays_live() {
    // 10% loss and 20-40 ms of delay (packets overtake each other) on every link, at 1,000
    // orders/s: with Cubic this stopped the cluster (a lossy link carried tens of KiB/s, and
    // the blocks of the growing pool no longer crossed it; docs/consensus.md, "Fault
    // injection"); BBR, the consensus lane and the backed-off proposal re-sends keep it live.
    lossy_links_stay_live(22200, 3, (100, 20, 20), "loss_10pc_delay_20_40ms", &[]);
}

/// 20% loss and 30-50 ms of delay on every link, at 1,000 orders/s: votes queued behind
/// whole blocks on one ordered stream stalled the cluster for a minute in 5 runs of 10; on a
/// lane of their own, ahead of the blocks, it stayed live in 14 runs of 15, not yet
/// reliably (docs/consensus.md, "Found and fixed: votes behind blocks"), so it is not part
/// of the suite's default run.
#[test]
#[ignore = "20% loss: stalled once in 15 runs (docs/consensus.md, \"Found and fixed: votes behind blocks\")"]
fn twenty_percent_loss_and_30_50_ms_delay_on_every_link_slow_the_cluster_but_it_stays_live() {
    lossy_links_stay_live(23200, 4, (200, 30, 20), "loss_20pc_delay_30_50ms", &[]);
}

/// Loss (per mille), delay and jitter (ms) on every link while both clients trade: every
/// validator 10 heights further and 10 more probe orders; then healed, 3 more heights.
fn lossy_links_stay_live(
    base_port: u16,
    seed: u64,
    (loss, delay, jitter): (u32, u32, u32),
    name: &str,
    devnet: &[&str],
) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut run = Run::start_with(base_port, seed, devnet);
    run.phase(Phase::During);
    let faults = LinkFaults {
        loss_per_mille: loss,
        delay_ms: delay,
        jitter_ms: jitter,
        ..LinkFaults::default()
    };
    run.cluster.mesh.set_all(faults);
    let started = Instant::now();
    let base = settled_top(&mut run.cluster);
    run.cluster.wait_heights(&ALL, base + 10, LIVENESS_BOUND);
    run.probe_progress(10, "probe orders finalized under loss and delay");
    let held = started.elapsed();
    let (_, dropped) = run.cluster.mesh.counts();
    assert!(dropped > 0, "the proxies dropped packets");
    run.cluster.mesh.heal();
    let healed = Instant::now();
    let recovery = run.recovered(&ALL, healed);
    run.finish(
        name,
        json!({"loss_per_mille": loss, "delay_ms": delay, "jitter_ms": jitter,
            "fault_held_ms": held.as_millis(), "first_final_after_heal_ms": recovery.as_millis()}),
    );
}

#[test]
fn a_proposer_killed_before_its_turn_is_routed_around_and_rejoins() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut run = Run::start(22300, 4);
    run.phase(Phase::During);
    let turn = settled_top(&mut run.cluster) + 5;
    let victim = run.cluster.proposer(turn);
    run.cluster.kill(victim);
    let killed = Instant::now();
    let others: Vec<usize> = ALL.iter().copied().filter(|&i| i != victim).collect();
    run.cluster.wait_heights(&others, turn + 10, LIVENESS_BOUND);
    run.probe_progress(10, "probe orders finalized without the killed proposer");
    let (at, round) = run.cluster.first_final[&turn];
    let before = run.cluster.first_final.get(&(turn - 1)).map(|f| f.0);
    let crash_to_turn = at.duration_since(killed);
    let turn_gap = before.map(|b| at.saturating_duration_since(b));
    let victim_id = run.cluster.validator_id(victim);
    run.cluster.launch(victim);
    let restarted = Instant::now();
    let top = run.cluster.top();
    run.recovered(&ALL, restarted);
    assert!(
        run.cluster.heights[victim] > top,
        "the restarted proposer caught up"
    );
    let rejoined = restarted.elapsed();
    let Finished { stores, .. } = run.finish(
        "proposer_sigkill",
        json!({"victim": victim, "turn": turn, "turn_round": round,
            "crash_to_turn_final_ms": crash_to_turn.as_millis(),
            "turn_gap_ms": turn_gap.map(|d| d.as_millis()),
            "restart_to_caught_up_ms": rejoined.as_millis()}),
    );
    // Its turn came while it was down: that height went to a later round, by another.
    let (_, stored_round, proposer) = stores[others[0]][turn as usize - 1];
    assert!(
        stored_round >= 1,
        "height {turn} was decided in round {stored_round}"
    );
    assert_ne!(
        proposer, victim_id,
        "height {turn} proposed by the killed validator"
    );
}

/// Turns validator `byzantine` into a double signer once the cluster runs under load:
/// [`relaunch_with`] `flag`; evidence may name it (and no one else).
fn turn_byzantine(run: &mut Run, byzantine: usize, flag: &str) -> u64 {
    let turned = relaunch_with(run, byzantine, &[flag]);
    run.byzantine = Some(byzantine);
    turned
}

/// SIGKILLs validator `i` once the cluster runs under load and restarts it with `args`
/// added, its data folder kept; waits for its `ready` line. Returns the settled height
/// before (heights up to it were decided by the earlier process).
fn relaunch_with(run: &mut Run, i: usize, args: &[&str]) -> u64 {
    run.phase(Phase::During);
    let turned = settled_top(&mut run.cluster);
    let readies = run.cluster.ready.len();
    run.cluster.kill(i);
    run.cluster.validator_args[i].extend(args.iter().map(|a| a.to_string()));
    run.cluster.launch(i);
    run.cluster.wait_until(
        "the relaunched validator ready again",
        LIVENESS_BOUND,
        |c| c.ready.len() == readies + 1,
    );
    turned
}

/// What jailing a byzantine validator took.
struct Jailed {
    /// The block that jailed it.
    at: u64,
    /// Its stake after the slash.
    stake: u64,
    /// From the jailing to the first final after it, on all four.
    recovery: Duration,
}

/// Waits until every state shows `byzantine` slashed (20 -> 19, or 18 if the jailing block
/// holds evidence of two heights) and jailed, then until the other three finalize 10 more
/// heights and 10 more probe orders without it.
fn jailed_while_the_others_go_on(run: &mut Run, byzantine: usize) -> Jailed {
    let key = run.cluster.config.validators[byzantine].key.clone();
    let (at, stake) = wait_jailed(run, &key);
    let jailed = Instant::now();
    assert!(
        stake == 19 || stake == 18,
        "slashed 5% of 20 once or twice: {stake}"
    );
    run.schedule_until = at;
    the_others_go_on(run, byzantine);
    let recovery = run.recovered(&ALL, jailed);
    Jailed {
        at,
        stake,
        recovery,
    }
}

/// Validator 3 turns byzantine under load: SIGKILLed once the cluster runs, restarted with
/// `--byzantine-equivocate` (its data folder kept). At each of its round-0 turns validators 0
/// and 1 get one block, validator 2 a twin signed for the same height and round, and it
/// prevotes for both (turns it reaches late, while it catches up, prove nothing: the others
/// decided those heights in a later round and drop its votes). The others must stay safe (one block and one root per height; the block files
/// agree; a height it split holds one of its two blocks), report evidence naming it alone,
/// slash it (20 -> 19, or 18 if the jailing block holds evidence of two heights) and jail it
/// in every validator's state, drop it from the active set (it equivocates no more), and go
/// on finalizing the clients' orders without it.
#[test]
fn an_equivocating_validator_is_slashed_and_jailed_and_the_others_stay_live() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let byzantine = 3;
    let mut run = Run::start_with(22500, 5, &["--stake", "20"]);
    let turned = turn_byzantine(&mut run, byzantine, "--byzantine-equivocate");
    let Jailed {
        at: jailed_at,
        stake,
        recovery,
    } = jailed_while_the_others_go_on(&mut run, byzantine);
    let equivocations: Vec<Value> = run
        .cluster
        .events
        .iter()
        .filter(|(i, v)| *i == byzantine && v["event"] == "equivocated")
        .map(|(_, v)| v.clone())
        .collect();
    let equivocated: Vec<u64> = equivocations
        .iter()
        .map(|v| v["height"].as_u64().expect("height"))
        .collect();
    assert!(!equivocated.is_empty(), "validator {byzantine} equivocated");
    assert!(
        equivocated.iter().all(|&h| h > turned && h <= jailed_at),
        "equivocated only after its restart ({turned}) and until its jail ({jailed_at}): {equivocated:?}"
    );
    assert!(run.cluster.evidence > 0, "evidence reported");
    let evidence = run.cluster.evidence;
    let Finished { stores, .. } = run.finish(
        "byzantine_equivocation",
        json!({"byzantine": byzantine, "equivocated_at": equivocated, "jailed_at": jailed_at,
            "stake_after": stake, "evidence_lines": evidence,
            "first_final_after_jail_ms": recovery.as_millis()}),
    );
    // A height it split in a round decided there holds one of its two blocks (the same on
    // every validator: `finish` compared the block files).
    for e in &equivocations {
        let (h, round) = (e["height"].as_u64().expect("height"), e["round"].as_u64());
        let (id, decided_round, _) = stores[0][h as usize - 1];
        if Some(decided_round) == round {
            let id = node::validator::hex(&id);
            assert!(
                id == e["first"] || id == e["twin"],
                "height {h}: {id} is neither of {e}"
            );
        }
    }
}

/// Validator 2 turns double voter under load: SIGKILLed once the cluster runs, restarted
/// with `--byzantine-double-vote` (its data folder kept). It proposes honestly, but each of
/// its prevotes for a block, at whatever height and round and whoever proposed, is followed
/// by a prevote for nil: a double voter that need not be the proposer. The others must stay
/// safe and live, report evidence naming it alone, and slash and jail it in every
/// validator's state.
#[test]
fn a_double_voting_validator_is_slashed_and_jailed_and_the_others_stay_live() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let byzantine = 2;
    let mut run = Run::start_with(22700, 7, &["--stake", "20"]);
    let turned = turn_byzantine(&mut run, byzantine, "--byzantine-double-vote");
    let Jailed {
        at: jailed_at,
        stake,
        recovery,
    } = jailed_while_the_others_go_on(&mut run, byzantine);
    let double_voted: Vec<u64> = run
        .cluster
        .events
        .iter()
        .filter(|(i, v)| *i == byzantine && v["event"] == "double_voted")
        .map(|(_, v)| v["height"].as_u64().expect("height"))
        .collect();
    assert!(
        !double_voted.is_empty(),
        "validator {byzantine} double-voted"
    );
    assert!(
        double_voted.iter().all(|&h| h > turned),
        "double-voted only after its restart ({turned}): {double_voted:?}"
    );
    let evidence = run.cluster.evidence;
    assert!(evidence > 0, "evidence reported");
    run.finish(
        "byzantine_double_vote",
        json!({"byzantine": byzantine, "first_double_vote_at": double_voted.first(),
            "jailed_at": jailed_at, "stake_after": stake, "evidence_lines": evidence,
            "first_final_after_jail_ms": recovery.as_millis()}),
    );
}

/// Validator 1's disk fills up: while it runs, its file size limit is set to the size of
/// the smaller of its safety journal and its block file (`prlimit --fsize`), so its next
/// safety save or block append, whichever comes first, fails (`EFBIG`, where a full disk
/// gives `ENOSPC`). Fail-stop: it exits through its error path (status 1, not killed by a
/// signal), every block it logged final is in its block file, and the other three stay
/// live. Restarted with the disk back (a new process, no limit), it recovers from what
/// the failed write left (a torn tail is cut) and catches up; no validator reports evidence
/// (it signed nothing its safety journal does not hold).
#[test]
fn a_validator_whose_disk_fills_stops_and_rejoins_once_it_is_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut run = Run::start(22600, 6);
    run.phase(Phase::During);
    let victim = 1;
    let data = run.cluster.dir.join(format!("validator-{victim}"));
    let blocks = data.join("blocks");
    let len = |path: &std::path::Path| std::fs::metadata(path).expect("a file").len();
    let size = len(&blocks).min(len(&data.join("safety")));
    run.cluster.limit_file_size(victim, size);
    let status = run.cluster.wait_exit(victim, LIVENESS_BOUND);
    assert_eq!(status.code(), Some(1), "exits on the error: {status}");
    let (store, _) = consensus_net::BlockStore::open(&blocks).expect("block file");
    assert!(
        store.height() >= run.cluster.heights[victim],
        "it logged final only blocks its file holds"
    );
    let others = [0, 2, 3];
    let top = settled_top(&mut run.cluster);
    run.cluster.wait_heights(&others, top + 10, LIVENESS_BOUND);
    run.probe_progress(10, "probe orders finalized while validator 1 is down");
    run.cluster.launch(victim);
    let restarted = Instant::now();
    let top = run.cluster.top();
    let recovery = run.recovered(&ALL, restarted);
    assert!(
        run.cluster.heights[victim] > top,
        "validator {victim} caught up past {top}"
    );
    let caught_up = restarted.elapsed();
    run.finish(
        "disk_full",
        json!({"victim": victim, "file_size_limit": size,
            "first_final_after_restart_ms": recovery.as_millis(),
            "restart_to_caught_up_ms": caught_up.as_millis()}),
    );
}

/// Waits until the validators other than `byzantine` finalize 10 more heights and the probe
/// 10 more orders.
fn the_others_go_on(run: &mut Run, byzantine: usize) {
    let honest: Vec<usize> = (0..VALIDATORS).filter(|&i| i != byzantine).collect();
    let top = settled_top(&mut run.cluster);
    run.cluster.wait_heights(&honest, top + 10, LIVENESS_BOUND);
    run.probe_progress(10, "probe orders finalized beside the byzantine validator");
}

/// Validator 2's disk turns slow under load: restarted with `--test-slow-disk` (a control
/// file the test writes), then every safety save and block append of its waits 50-200 ms
/// (drawn uniformly), as a slow `fdatasync` would, on its loop thread. It falls 10 heights
/// further behind than it was while the other three go on (10 heights, 10 probe orders); then the
/// control file says `0` (the disk heals, in the same process) and it catches up past the
/// others' top. The usual invariants hold (roots, block files, probe orders, no evidence).
#[test]
fn a_validator_whose_disk_is_slow_falls_behind_and_catches_up_once_it_heals() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let slow = 2;
    let mut run = Run::start(22800, 8);
    let control = run.cluster.dir.join("slow-disk");
    let path = control.display().to_string();
    relaunch_with(&mut run, slow, &["--test-slow-disk", &path]);
    let top = settled_top(&mut run.cluster);
    run.cluster.wait_heights(&ALL, top + 3, LIVENESS_BOUND);
    let hook = run.cluster.events_of(slow, "test_hook").last().cloned();
    assert_eq!(hook.expect("a test_hook line")["slow_disk"], path.as_str());
    let gap = settled_top(&mut run.cluster) - run.cluster.heights[slow];
    std::fs::write(&control, "50-200").expect("control file");
    let started = Instant::now();
    let at_start = run.cluster.heights[slow];
    run.cluster
        .wait_until("validator 2 10 more heights behind", LIVENESS_BOUND, |c| {
            c.top() - c.heights[slow] >= gap + 10
        });
    let fell_behind = started.elapsed();
    the_others_go_on(&mut run, slow);
    let behind = run.cluster.top() - run.cluster.heights[slow];
    let slow_heights = run.cluster.heights[slow] - at_start;
    let on = run.cluster.events_of(slow, "slow_disk").next().cloned();
    assert_eq!(on.expect("the range logged")["range"], json!([50, 200]));
    std::fs::write(&control, "0").expect("control file");
    let healed = Instant::now();
    let top = run.cluster.top();
    let recovery = run.recovered(&ALL, healed);
    assert!(
        run.cluster.heights[slow] > top,
        "validator {slow} caught up past {top}"
    );
    let caught_up = healed.elapsed();
    let off = run.cluster.events_of(slow, "slow_disk").nth(1).cloned();
    let off = off.expect("the heal logged");
    assert_eq!(off["range"], Value::Null);
    assert!(off["writes"].as_u64() > Some(0), "{off}");
    run.finish(
        "slow_disk_50_200ms",
        json!({"victim": slow, "gap_before": gap,
            "fell_10_more_behind_ms": fell_behind.as_millis(), "behind_at_heal": behind,
            "its_heights_while_slow": slow_heights, "slow_writes": off["writes"], "slept_ms": off["slept_ms"],
            "first_final_after_heal_ms": recovery.as_millis(),
            "heal_to_caught_up_ms": caught_up.as_millis()}),
    );
}

/// Validator 1 turns byzantine under load (restarted with `--byzantine-forward-forged`):
/// every batch of client transactions it forwards to the others carries an unsigned
/// withdrawal for trading account 0, one signed by account 1's key, and bytes that are no
/// transaction. Every honest validator refuses them at admission and logs `forward_refused`
/// naming it (a bad signature or malformed: what no honest forwarder sends); the cluster
/// stays live (it still votes and proposes honestly); no forged item is in any block.
#[test]
fn forged_transactions_a_validator_forwards_are_refused_and_change_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let byzantine = 1;
    let mut run = Run::start(22900, 9);
    relaunch_with(&mut run, byzantine, &["--byzantine-forward-forged"]);
    let key = run.cluster.config.validators[byzantine].key.clone();
    let honest: Vec<usize> = (0..VALIDATORS).filter(|&i| i != byzantine).collect();
    let refused = |c: &cluster::Cluster, i: usize| {
        c.events_of(i, "forward_refused")
            .filter(|v| v["from"] == key.as_str())
            .filter_map(|v| v["count"].as_u64())
            .max()
            .unwrap_or(0)
    };
    run.cluster
        .wait_until("forged forwards refused", LIVENESS_BOUND, |c| {
            honest.iter().all(|&i| refused(c, i) >= 16)
        });
    the_others_go_on(&mut run, byzantine);
    let forged: Vec<String> = run
        .cluster
        .events_of(byzantine, "forwarded_forged")
        .flat_map(|v| v["hashes"].as_array().cloned().unwrap_or_default())
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect();
    for &i in &honest {
        for v in run.cluster.events_of(i, "forward_refused") {
            assert_eq!(v["from"], key.as_str(), "only the forger is refused: {v}");
            let why = v["why"].as_str().expect("why");
            assert!(
                why.starts_with("bad_signature") || why.starts_with("malformed"),
                "{v}"
            );
        }
    }
    let refusals: Vec<u64> = honest.iter().map(|&i| refused(&run.cluster, i)).collect();
    let Finished { items, .. } = run.finish(
        "byzantine_forward_forged",
        json!({"byzantine": byzantine, "forged_items_sent": forged.len(),
            "refusals_logged_up_to": refusals}),
    );
    assert!(forged.len() >= 48, "{} forged items sent", forged.len());
    let found: Vec<_> = items
        .iter()
        .filter(|(hash, _)| forged.contains(&hash.to_string()))
        .collect();
    assert!(found.is_empty(), "forged items in blocks: {found:?}");
}

/// Validator 3 turns byzantine under load, restarted with `flag`: every block it proposes
/// for a new value holds a forged item first (`forged_proposal` lines). The honest three
/// must prevote nil for each (`payload_refused` lines, each naming item 0 and containing
/// `why`), and go on (10 heights, 10 probe orders); evidence names nobody. (A block it
/// proposed before its restart may still be decided after it, by a later round's
/// re-proposal: what it holds is checked by the callers, through the chain's items.)
/// Returns the forged items' hashes, the height of its first forged proposal, and what the
/// chain stored.
fn a_forging_proposer_gets_no_votes(
    base_port: u16,
    seed: u64,
    flag: &str,
    why: &str,
) -> (Vec<String>, u64, Finished) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let byzantine = 3;
    let mut run = Run::start(base_port, seed);
    relaunch_with(&mut run, byzantine, &[flag]);
    let honest: Vec<usize> = (0..VALIDATORS).filter(|&i| i != byzantine).collect();
    run.cluster
        .wait_until("its proposals refused", LIVENESS_BOUND, |c| {
            honest
                .iter()
                .all(|&i| c.events_of(i, "payload_refused").count() >= 2)
        });
    the_others_go_on(&mut run, byzantine);
    let refusals: Vec<usize> = honest
        .iter()
        .map(|&i| run.cluster.events_of(i, "payload_refused").count())
        .collect();
    for &i in &honest {
        for v in run.cluster.events_of(i, "payload_refused") {
            let text = v["why"].as_str().expect("why");
            assert!(text.starts_with("item 0: ") && text.contains(why), "{v}");
        }
    }
    let proposals: Vec<Value> = run
        .cluster
        .events_of(byzantine, "forged_proposal")
        .cloned()
        .collect();
    let first = proposals.first().expect("it proposed forged blocks");
    let first_height = first["height"].as_u64().expect("height");
    let mut forged: Vec<String> = proposals
        .iter()
        .map(|v| v["hash"].as_str().expect("hash").to_string())
        .collect();
    forged.dedup();
    let finished = run.finish(
        flag.trim_start_matches("--"),
        json!({"byzantine": byzantine, "forged_proposals": proposals.len(),
            "first_forged_at": first_height, "payload_refused": refusals}),
    );
    (forged, first_height, finished)
}

/// A proposer replaying a transaction of an executed block (`--byzantine-replay`: its nonce
/// was used) gets no votes; the transaction stays in its one original block.
#[test]
fn a_proposer_replaying_an_executed_transaction_gets_no_votes() {
    let (forged, first, finished) =
        a_forging_proposer_gets_no_votes(23000, 10, "--byzantine-replay", "nonce");
    assert_eq!(forged.len(), 1, "one replayed transaction: {forged:?}");
    let original = finished
        .items
        .iter()
        .find(|(hash, _)| hash.to_string() == forged[0])
        .map(|(_, &height)| height);
    let original = original.expect("the replayed transaction is in the chain");
    assert!(
        original < first,
        "executed at {original}, replayed at {first}"
    );
}

/// A proposer putting a deposit for trading account 0 validly signed by account 1, which
/// holds no faucet role (`--byzantine-deposit`), gets no votes; no block holds it.
#[test]
fn a_proposer_crediting_another_account_without_the_role_gets_no_votes() {
    let (forged, _, finished) = a_forging_proposer_gets_no_votes(
        23100,
        11,
        "--byzantine-deposit",
        "only a configured faucet may sign",
    );
    assert_eq!(forged.len(), 1, "{forged:?}");
    let found = finished.items.keys().any(|h| h.to_string() == forged[0]);
    assert!(!found, "the forged deposit is in a block");
}

/// Validator `i`'s staking view (`{"op":"staking"}` on its JSON port).
fn staking_view(config: &node::validator::DevnetConfig, i: usize) -> Value {
    let addr = config.validators[i].json_addr.expect("json port");
    let mut client = common::JsonClient::connect(addr);
    client.send_json(&json!({"op": "staking"}));
    let reply = client.next();
    assert_eq!(reply["ev"], "staking", "{reply}");
    reply
}

/// `key`'s (block that jailed it, stake) in a staking view, once jailed.
fn jailed_bond(view: &Value, key: &str) -> Option<(u64, u64)> {
    let bonds = view["bonds"].as_array().expect("bonds");
    let bond = bonds.iter().find(|b| b["key"] == key).expect("a bond");
    let at = bond["jailed_at"].as_u64()?;
    Some((at, bond["stake"].as_u64().expect("stake")))
}

/// Reads the cluster's lines until every validator's state shows `key` jailed; checks that
/// all four agree on the block that jailed it and its stake, and that no active set holds
/// it; returns (that block's height, the stake).
fn wait_jailed(run: &mut Run, key: &str) -> (u64, u64) {
    let end = Instant::now() + LIVENESS_BOUND;
    loop {
        let views: Vec<Value> = ALL
            .iter()
            .map(|&i| staking_view(&run.cluster.config, i))
            .collect();
        let jailed: Vec<_> = views.iter().map(|v| jailed_bond(v, key)).collect();
        if jailed.iter().all(Option::is_some) {
            assert!(jailed.iter().all(|j| *j == jailed[0]), "{jailed:?}");
            for view in &views {
                let set = view["validators"].as_array().expect("validators");
                assert!(set.iter().all(|v| v["key"] != key), "{view}");
            }
            return jailed[0].expect("jailed");
        }
        assert!(
            Instant::now() < end,
            "validator {key} not jailed everywhere: {jailed:?}"
        );
        run.cluster.run_for(Duration::from_millis(200));
    }
}

/// SplitMix64: the soak's fault choices from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An environment variable as a number, or `default`.
fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?}: not a number"))
        })
        .unwrap_or(default)
}

/// What the soak measured, per fault kind.
#[derive(Default)]
struct SoakFigures {
    /// Per kind: how long after the heal the first new height came (ms).
    recovery_ms: std::collections::BTreeMap<&'static str, Vec<u64>>,
    /// Per kind: how long after the heal every validator was 3 heights past the top (ms).
    caught_up_ms: std::collections::BTreeMap<&'static str, Vec<u64>>,
    /// Proposer crashes: kill to the final of the crashed proposer's height (ms).
    crash_to_turn_ms: Vec<u64>,
    /// Proposer crashes: final of the height before to the final of its height (ms).
    turn_gap_ms: Vec<u64>,
}

/// Injects one random fault, holds it `hold`, heals it; returns the fault's name and
/// description.
fn inject(
    run: &mut Run,
    rng: &mut Rng,
    hold: Duration,
    figures: &mut SoakFigures,
) -> (&'static str, Value) {
    let v = rng.below(VALIDATORS as u64) as usize;
    match rng.below(5) {
        0 => {
            run.cluster.pause(v);
            run.cluster.run_for(hold);
            run.cluster.resume(v);
            ("sigstop", json!({"validator": v}))
        }
        1 => soak_partition(run, rng, v, hold),
        2 => soak_loss(run, rng, hold),
        3 => soak_proposer_crash(run, hold, figures),
        _ => {
            run.cluster.kill(v);
            run.cluster.run_for(hold);
            run.cluster.launch(v);
            ("sigkill", json!({"validator": v}))
        }
    }
}

/// Cuts `v` off alone, or `v` and another validator from the other two.
fn soak_partition(run: &mut Run, rng: &mut Rng, v: usize, hold: Duration) -> (&'static str, Value) {
    let w = (v + 1 + rng.below(3) as usize) % VALIDATORS;
    let (pair, rest): (Vec<usize>, Vec<usize>) =
        ALL.iter().copied().partition(|&i| i == v || i == w);
    let groups = if rng.below(2) == 0 {
        (vec![v], ALL.iter().copied().filter(|&i| i != v).collect())
    } else {
        (pair, rest)
    };
    run.cluster.mesh.partition(&[&groups.0, &groups.1]);
    run.cluster.run_for(hold);
    run.cluster.mesh.heal();
    ("partition", json!({"groups": [groups.0, groups.1]}))
}

/// Loss 0-30%, delay 0-50 ms and jitter 0-30 ms on every link.
fn soak_loss(run: &mut Run, rng: &mut Rng, hold: Duration) -> (&'static str, Value) {
    let faults = LinkFaults {
        loss_per_mille: rng.below(301) as u32,
        delay_ms: rng.below(51) as u32,
        jitter_ms: rng.below(31) as u32,
        ..LinkFaults::default()
    };
    run.cluster.mesh.set_all(faults);
    run.cluster.run_for(hold);
    run.cluster.mesh.heal();
    let what = json!({"loss_per_mille": faults.loss_per_mille, "delay_ms": faults.delay_ms,
        "jitter_ms": faults.jitter_ms});
    ("loss_delay", what)
}

/// SIGKILL of the proposer of an upcoming height; its height's decision is timed; restart.
fn soak_proposer_crash(
    run: &mut Run,
    hold: Duration,
    figures: &mut SoakFigures,
) -> (&'static str, Value) {
    let turn = settled_top(&mut run.cluster) + 5;
    let victim = run.cluster.proposer(turn);
    run.cluster.kill(victim);
    let killed = Instant::now();
    run.cluster.run_for(hold);
    run.cluster
        .wait_until("the killed proposer's height", LIVENESS_BOUND, |c| {
            c.first_final.contains_key(&turn)
        });
    let (at, round) = run.cluster.first_final[&turn];
    let ms = |d: Duration| d.as_millis() as u64;
    figures.crash_to_turn_ms.push(ms(at.duration_since(killed)));
    if let Some((before, _)) = run.cluster.first_final.get(&(turn - 1)) {
        figures
            .turn_gap_ms
            .push(ms(at.saturating_duration_since(*before)));
    }
    run.cluster.launch(victim);
    let what = json!({"validator": victim, "turn": turn, "round": round});
    ("proposer_sigkill", what)
}

/// `p50`, `p99` and max of a list of ms.
fn spread(values: &[u64]) -> Value {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    json!({"count": sorted.len(), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": sorted.last()})
}

/// Random faults for `NEXUS_SOAK_MINUTES` (default 10) from `NEXUS_SOAK_SEED` (default:
/// the clock; printed first): each held 2-8 s, healed, and liveness awaited; roots checked
/// on every `final` line, and at the end the probe's orders in every state and the block
/// files. Prints one line per fault and the figures.
#[test]
#[ignore = "soak: minutes of random faults (docs/consensus.md, \"Fault injection\")"]
fn soak() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let minutes = env_u64("NEXUS_SOAK_MINUTES", 10);
    let seed = env_u64("NEXUS_SOAK_SEED", node::validator::now_ns());
    println!(
        "{}",
        json!({"event": "soak_start", "seed": seed, "minutes": minutes})
    );
    let mut rng = Rng(seed);
    let mut run = Run::start(22400, seed);
    let end = Instant::now() + Duration::from_secs(minutes * 60);
    let mut figures = SoakFigures::default();
    let mut faults = 0u64;
    while Instant::now() < end {
        let hold = Duration::from_millis(2_000 + rng.below(6_001));
        run.phase(Phase::During);
        let (kind, what) = inject(&mut run, &mut rng, hold, &mut figures);
        let healed = Instant::now();
        let recovery = run.recovered(&ALL, healed).as_millis() as u64;
        let caught_up = healed.elapsed().as_millis() as u64;
        figures.recovery_ms.entry(kind).or_default().push(recovery);
        figures
            .caught_up_ms
            .entry(kind)
            .or_default()
            .push(caught_up);
        faults += 1;
        let line = json!({"event": "soak_fault", "n": faults, "kind": kind, "fault": what,
            "hold_ms": hold.as_millis(), "first_final_after_heal_ms": recovery,
            "all_caught_up_ms": caught_up, "heights": run.cluster.heights});
        println!("{line}");
    }
    let summary = soak_summary(seed, faults, &figures);
    run.finish("soak", summary);
}

/// The soak's figures: per fault kind, and for proposer crashes.
fn soak_summary(seed: u64, faults: u64, figures: &SoakFigures) -> Value {
    let per_kind = |map: &std::collections::BTreeMap<&'static str, Vec<u64>>| {
        map.iter()
            .map(|(kind, values)| (kind.to_string(), spread(values)))
            .collect::<serde_json::Map<String, Value>>()
    };
    json!({"seed": seed, "faults": faults,
        "first_final_after_heal": per_kind(&figures.recovery_ms),
        "all_caught_up_after_heal": per_kind(&figures.caught_up_ms),
        "proposer_crash_to_its_height_final": spread(&figures.crash_to_turn_ms),
        "proposer_crash_height_gap": spread(&figures.turn_gap_ms)})
}

/// `--peer-addr` naming a validator the configuration lacks stops the validator with a
/// configuration error; a value without `=` is refused by the argument parser.
#[test]
fn a_peer_addr_outside_the_configuration_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let config = common::init_devnet(dir.path(), &[]);
    let run = |peer: &str| {
        std::process::Command::new(common::NEXUS)
            .args(["validator", "--index", "0", "--peer-addr", peer, "--config"])
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("nexus validator")
    };
    let out = run("7=127.0.0.1:9");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--peer-addr: no validator 7"), "{stderr}");
    let out = run("127.0.0.1:9");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("expected J=ADDR"), "{stderr}");
}
