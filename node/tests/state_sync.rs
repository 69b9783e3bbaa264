//! State sync with real processes on loopback: a validator whose data folder was wiped
//! while it was stopped joins a loaded four-validator devnet from a peer's snapshot
//! (docs/consensus.md, "State sync and pruning"), executes only the blocks after it, agrees
//! with the others on every later execution root, and restarts from what it joined with.
//! Every validator prunes its block file to the blocks after its newest snapshot minus
//! [`KEEP`]: the files stay bounded, a pruned validator restarts, and one that was down
//! longer than that joins from a snapshot at start. After a leave and a stake change (the
//! consensus-layer chain state and the validator set differ from genesis, and no genesis
//! quorum signs any more) a wiped validator still joins from a snapshot, which carries that
//! chain state.
//!
//! Ports 23000-23399 (no other test uses them).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use node::load::LoadStats;
use serde_json::Value;

#[path = "faults/cluster.rs"]
#[allow(dead_code)]
mod cluster;
mod common;

use cluster::{Cluster, VALIDATORS};

/// Orders a second the load offers.
const LOAD_RATE: u64 = 1_000;
/// Generous bound for any wait (a failure, not a figure).
const BOUND: Duration = Duration::from_secs(180);
const OTHERS: [usize; 3] = [0, 1, 2];
const ALL: [usize; VALIDATORS] = [0, 1, 2, 3];
const JOINER: usize = 3;
/// Blocks kept before the newest snapshot.
const KEEP: u64 = 200;
/// Blocks between snapshots (the cluster's `--snapshot-every`).
const EVERY: u64 = 25;

/// The devnet's signed load (`node::load::drive`), stopped when dropped.
struct Load {
    stop: Arc<AtomicBool>,
}

impl Load {
    fn start(config: &node::validator::DevnetConfig) -> Load {
        let mut spec = config.load_spec().expect("spec");
        spec.accounts = 96;
        let targets: Vec<_> = config.validators.iter().map(|v| v.tx_addr).collect();
        let stats: Arc<Mutex<LoadStats>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || node::load::drive(&spec, &targets, LOAD_RATE, flag, stats));
        Load { stop }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Deletes everything in a validator's data folder but its key.
fn wipe(data: &Path) {
    for entry in std::fs::read_dir(data).expect("data folder") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n == "key") {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove folder");
        } else {
            std::fs::remove_file(&path).expect("remove file");
        }
    }
}

/// Validator `i`'s event lines named `name`.
fn events<'a>(cluster: &'a Cluster, i: usize, name: &str) -> Vec<&'a Value> {
    let named = |(j, v): &'a (usize, Value)| (*j == i && v["event"] == name).then_some(v);
    cluster.events.iter().filter_map(named).collect()
}

/// `nexus ARGS`: exit success and the JSON lines it printed.
fn nexus(args: &[&str]) -> (bool, Vec<Value>) {
    let out = std::process::Command::new(common::NEXUS)
        .args(args)
        .output()
        .expect("run nexus");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    (out.status.success(), lines)
}

/// Kills validator `i`, starts it again and waits until every validator is 10 heights
/// further; its `ready` line must show a snapshot at or after `snapshot_at_least`.
fn restart(cluster: &mut Cluster, i: usize, snapshot_at_least: u64) {
    cluster.kill(i);
    let readies = cluster.ready.len();
    cluster.launch(i);
    cluster.wait_until("a restarted validator's ready line", BOUND, |c| {
        c.ready.len() > readies
    });
    let (_, ready) = cluster.ready.last().expect("ready").clone();
    assert!(
        ready["snapshot_height"].as_u64() >= Some(snapshot_at_least),
        "{ready}"
    );
    assert!(ready["executed_blocks"].as_u64() <= Some(EVERY), "{ready}");
    assert_eq!(ready["state_sync_height"], Value::Null, "{ready}");
    let target = cluster.top() + 10;
    cluster.wait_heights(&ALL, target, BOUND);
}

#[test]
fn a_wiped_validator_joins_from_a_snapshot_and_agrees_on_every_later_root() {
    let dir = tempfile::tempdir().expect("dir");
    let keep = KEEP.to_string();
    let extra = ["--prune-keep-blocks", keep.as_str()];
    let mut cluster = Cluster::start_with(dir.path(), 23000, LOAD_RATE, 7, &extra);
    let load = Load::start(&cluster.config);
    // Past two snapshots (every 25 blocks).
    cluster.wait_heights(&ALL, 60, BOUND);
    cluster.kill(JOINER);
    wipe(&dir.path().join(format!("validator-{JOINER}")));
    let top = cluster.top();
    cluster.wait_heights(&OTHERS, top + 30, BOUND);

    let finals_before = cluster.finals[JOINER].len();
    let readies_before = cluster.ready.len();
    cluster.launch(JOINER);
    cluster.wait_until("the joiner's state sync", BOUND, |c| {
        !events(c, JOINER, "state_sync").is_empty()
    });
    let synced = events(&cluster, JOINER, "state_sync")[0].clone();
    eprintln!("{synced}");
    let snapshot = synced["height"].as_u64().expect("height");
    assert!(snapshot >= 50, "a snapshot taken after the wipe: {synced}");
    assert_eq!(snapshot % 25, 0, "a snapshot height: {synced}");
    for field in ["manifest_bytes", "chunk_bytes", "snapshot_bytes", "chunks"] {
        assert!(synced[field].as_u64().unwrap_or(0) > 0, "{field}: {synced}");
    }
    // Four validators of stake 1: at least two of the three peers signed the snapshot.
    assert!(synced["attested_stake"].as_u64() >= Some(2), "{synced}");
    assert!(events(&cluster, JOINER, "state_sync_refused").is_empty());
    cluster.wait_until("the joiner's ready line", BOUND, |c| {
        c.ready.len() > readies_before
    });
    let (_, ready) = cluster.ready.last().expect("ready").clone();
    assert_eq!(ready["state_sync_height"], snapshot, "{ready}");
    assert_eq!(
        ready["executed_blocks"], 0,
        "nothing executed at start: {ready}"
    );

    let target = cluster.top() + 20;
    cluster.wait_heights(&ALL, target, BOUND);
    cluster.wait_until("the joiner's catch-up", BOUND, |c| {
        !events(c, JOINER, "state_sync_caught_up").is_empty()
    });
    eprintln!("{}", events(&cluster, JOINER, "state_sync_caught_up")[0]);
    // It executed from the block after the snapshot, not from genesis: its first final
    // line after the restart is that block, and it logged every height from there (the
    // cluster checks each root against the others' as it comes).
    let after: Vec<u64> = cluster.finals[JOINER][finals_before..].to_vec();
    assert_eq!(
        after.first(),
        Some(&(snapshot + 1)),
        "{:?}",
        &after[..5.min(after.len())]
    );
    for h in snapshot + 1..=target {
        let (_, by) = &cluster.roots[&h];
        assert!(by.contains(&JOINER), "the joiner logged height {h}");
        assert!(by.len() >= 3, "height {h} logged by {by:?}");
    }

    // Restarted, the joiner (its block file starts after the snapshot) and, once every
    // validator pruned, a validator with a pruned block file start from their snapshot and
    // the blocks stored after it.
    restart(&mut cluster, JOINER, snapshot);
    cluster.wait_heights(&ALL, KEEP + 2 * EVERY, BOUND);
    assert!(
        !events(&cluster, 0, "pruned").is_empty(),
        "validator 0 pruned"
    );
    restart(&mut cluster, 0, KEEP);
    // A validator down for longer than its peers' retention cannot sync the blocks it
    // missed: at start it joins from a snapshot although it has blocks.
    let late = 2;
    cluster.kill(late);
    let down_at = cluster.heights[late];
    let others: Vec<usize> = ALL.iter().copied().filter(|&i| i != late).collect();
    cluster.wait_heights(&others, down_at + KEEP + 2 * EVERY, BOUND);
    cluster.launch(late);
    cluster.wait_until("the late validator's state sync", BOUND, |c| {
        !events(c, late, "state_sync").is_empty()
    });
    let synced = events(&cluster, late, "state_sync")[0]["height"].as_u64();
    assert!(synced > Some(down_at + KEEP), "{synced:?} after {down_at}");
    let target = cluster.top() + 10;
    cluster.wait_heights(&ALL, target, BOUND);

    // Many snapshots later every block file holds only the blocks since the newest
    // snapshot minus KEEP.
    let target = cluster.top() + 3 * EVERY;
    cluster.wait_heights(&ALL, target, BOUND);
    drop(load);
    cluster.stop_all();
    for i in ALL {
        let path = dir.path().join(format!("validator-{i}")).join("blocks");
        let (store, _) = consensus_net::BlockStore::open(&path).expect("block file");
        let stored: Vec<_> = store
            .certificates(0)
            .expect("read")
            .map(Result::unwrap)
            .collect();
        let first = stored.first().expect("blocks").block.height;
        assert!(first > 1, "validator {i}'s file starts at {first}");
        assert!(
            stored.len() as u64 <= KEEP + EVERY,
            "validator {i}: {} blocks",
            stored.len()
        );
        assert_eq!(store.height(), first + stored.len() as u64 - 1);
    }
}

/// Submits `nexus stake ACTION` signed by validator `signer`'s key through `addr`;
/// returns the height of the block that applied it.
fn stake(dir: &Path, action: &[&str], signer: usize, addr: std::net::SocketAddr) -> u64 {
    let key = dir.join(format!("validator-{signer}/key"));
    let args = [
        "--key",
        key.to_str().expect("path"),
        "--addr",
        &addr.to_string(),
    ];
    let (ok, lines) = nexus(&[&["stake"], action, &args[..]].concat());
    let reply = lines.last().cloned().unwrap_or_default();
    assert!(ok, "{lines:?}");
    assert_eq!(reply["applied"], true, "{reply}");
    reply["height"].as_u64().expect("height")
}

/// Validator 0 leaves and validator 2 stakes 2 instead of 1 (signed actions through
/// validator 1's JSON port, effective at the epoch boundary, every 5 blocks): from then on
/// the chain state differs from genesis and the set is {1: 1, 2: 2, 3: 1}. With validator
/// 3 down, only validators 1 and 2 sign: half the genesis stake, no genesis quorum, so the
/// joiner must trust the certificate through the snapshot's set and a third of genesis.
/// Validator 3, wiped, joins from a snapshot taken after the change, executes nothing at
/// start, agrees on every later root, sees the new set in its staking view, and restarts
/// from the snapshot it joined with.
/// Snapshots are written by a thread off the loop (docs/consensus.md, "Snapshots"): a
/// validator killed right after its loop took the image of a snapshot height restarts from a
/// complete snapshot (that one, if the write was durable, or the one before), and re-executes
/// its stored blocks after it to the roots the others logged.
#[test]
fn a_validator_killed_right_after_a_snapshot_height_restarts_from_a_whole_snapshot() {
    let dir = tempfile::tempdir().expect("dir");
    let mut cluster = Cluster::start_with(dir.path(), 23300, LOAD_RATE, 13, &[]);
    let _load = Load::start(&cluster.config);
    let victim = 1;
    cluster.wait_heights(&ALL, 2 * EVERY + 5, BOUND);
    let taken = events(&cluster, victim, "snapshot_taken").len();
    cluster.wait_until("a snapshot image taken", BOUND, |c| {
        events(c, victim, "snapshot_taken").len() > taken
    });
    let at = events(&cluster, victim, "snapshot_taken")[taken]["height"]
        .as_u64()
        .expect("height");
    cluster.kill(victim);
    let readies = cluster.ready.len();
    cluster.launch(victim);
    cluster.wait_until("the restarted validator's ready line", BOUND, |c| {
        c.ready.len() > readies
    });
    let (_, ready) = cluster.ready.last().expect("ready").clone();
    let from = ready["snapshot_height"].as_u64().expect("snapshot height");
    assert!(
        from == at || from + EVERY == at,
        "taken at {at}, restarted from {from}: {ready}"
    );
    let recovered = ready["recovered_blocks"].as_u64().expect("recovered");
    assert_eq!(ready["executed_blocks"].as_u64(), Some(recovered - from));
    let target = cluster.top() + 10;
    cluster.wait_heights(&ALL, target, BOUND);
    let (root, by) = &cluster.roots[&recovered];
    assert!(by.iter().any(|&i| i != victim), "{by:?}");
    assert_eq!(ready["state_root"].as_str(), Some(root.as_str()), "{ready}");
}

#[test]
fn a_wiped_validator_joins_after_the_validator_set_changed() {
    let dir = tempfile::tempdir().expect("dir");
    let extra = ["--epoch-length", "5"];
    let mut cluster = Cluster::start_with(dir.path(), 23200, LOAD_RATE, 11, &extra);
    cluster.wait_heights(&ALL, 2, BOUND);
    let json = |i: usize| cluster.config.validators[i].json_addr.expect("json port");
    let (port, joiner_json) = (json(1), json(JOINER).to_string());
    let left = stake(dir.path(), &["leave"], 0, port);
    let restaked = stake(dir.path(), &["set-stake", "--stake", "2"], 2, port);
    let boundary = left.max(restaked).div_ceil(5) * 5;

    cluster.wait_heights(&ALL, boundary + 1, BOUND);
    cluster.kill(JOINER);
    wipe(&dir.path().join(format!("validator-{JOINER}")));
    // Past the next snapshot (every 25 blocks) after the boundary.
    let snapshot_after = (boundary / EVERY + 1) * EVERY;
    cluster.wait_heights(&OTHERS, snapshot_after + 2, BOUND);
    let finals_before = cluster.finals[JOINER].len();
    let readies_before = cluster.ready.len();
    cluster.launch(JOINER);
    cluster.wait_until("the joiner's ready line", BOUND, |c| {
        c.ready.len() > readies_before
    });
    let synced = events(&cluster, JOINER, "state_sync")
        .first()
        .map(|v| (*v).clone());
    let refused = events(&cluster, JOINER, "state_sync_refused");
    assert!(refused.is_empty(), "{refused:?}");
    let synced = synced.expect("a state_sync event");
    eprintln!("{synced}");
    let snapshot = synced["height"].as_u64().expect("height");
    assert!(snapshot >= snapshot_after, "{synced}");
    // The set is {1: 1, 2: 2, 3: 1}: more than 1/3 of 4 is at least 2 (validator 0 left,
    // so its attestation counts nothing).
    assert!(synced["attested_stake"].as_u64() >= Some(2), "{synced}");
    let (_, ready) = cluster.ready.last().expect("ready").clone();
    assert_eq!(ready["state_sync_height"], snapshot, "{ready}");
    assert_eq!(ready["executed_blocks"], 0, "{ready}");

    let target = cluster.top() + 10;
    cluster.wait_heights(&ALL, target, BOUND);
    let after: Vec<u64> = cluster.finals[JOINER][finals_before..].to_vec();
    assert_eq!(after.first(), Some(&(snapshot + 1)), "{after:?}");
    for h in snapshot + 1..=target {
        let (_, by) = &cluster.roots[&h];
        assert!(by.contains(&JOINER), "the joiner logged height {h}");
    }
    // The joiner's chain state is the changed one: validator 2 has stake 2.
    let (ok, view) = nexus(&["stake", "show", "--addr", &joiner_json]);
    assert!(ok, "{view:?}");
    let validator_2 = cluster.config.validators[2].key.clone();
    let stakes = view[0]["validators"]
        .as_array()
        .expect("validators")
        .clone();
    let stake_of_2 = stakes.iter().find(|v| v["key"] == validator_2.as_str());
    assert_eq!(
        stake_of_2.map(|v| &v["stake"]),
        Some(&Value::from(2)),
        "{view:?}"
    );
    // Restarted, it starts from the snapshot it joined with and the blocks after it.
    restart(&mut cluster, JOINER, snapshot);
    cluster.stop_all();
}

/// Figures: a validator wiped `NEXUS_BEHIND` blocks (default 1000) behind a loaded devnet
/// joins from a snapshot; prints bytes and ms per stage (manifest, chunks, verify + load,
/// catch-up) as one JSON line. `cargo test -p node --test state_sync -- --ignored
/// --nocapture`.
#[test]
#[ignore = "figures; minutes"]
fn state_sync_figures() {
    let behind: u64 = std::env::var("NEXUS_BEHIND")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let dir = tempfile::tempdir().expect("dir");
    let keep = KEEP.to_string();
    let extra = ["--prune-keep-blocks", keep.as_str()];
    let mut cluster = Cluster::start_with(dir.path(), 23100, LOAD_RATE, 9, &extra);
    let _load = Load::start(&cluster.config);
    cluster.wait_heights(&ALL, 30, BOUND);
    cluster.kill(JOINER);
    wipe(&dir.path().join(format!("validator-{JOINER}")));
    let top = cluster.top();
    cluster.wait_heights(&OTHERS, top + behind, Duration::from_secs(1_800));
    let launched = std::time::Instant::now();
    cluster.launch(JOINER);
    cluster.wait_until("the joiner's catch-up", BOUND, |c| {
        !events(c, JOINER, "state_sync_caught_up").is_empty()
    });
    let total_ms = launched.elapsed().as_millis() as u64;
    let synced = events(&cluster, JOINER, "state_sync")[0].clone();
    let caught_up = events(&cluster, JOINER, "state_sync_caught_up")[0].clone();
    println!(
        "{}",
        serde_json::json!({
            "behind_blocks": cluster.top() - top, "state_sync": synced,
            "caught_up": caught_up, "launch_to_caught_up_ms": total_ms,
        })
    );
    cluster.stop_all();
}

/// A number from the environment variable `name`, else `default`.
fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes of every file under `path` (0 if it does not exist).
fn disk_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| disk_bytes(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// Each validator's disk use: block file, snapshots folder, whole data folder (bytes).
fn disk_use(dir: &Path) -> Value {
    let per: Vec<Value> = ALL
        .iter()
        .map(|i| {
            let data = dir.join(format!("validator-{i}"));
            serde_json::json!({
                "blocks": disk_bytes(&data.join("blocks")),
                "snapshots": disk_bytes(&data.join("snapshots")),
                "total": disk_bytes(&data),
            })
        })
        .collect();
    Value::from(per)
}

/// Figures at issue 15's scale: a four-validator devnet (direct loopback links, no
/// proxies; four validators and this test share the machine) with `NEXUS_ACCOUNTS`
/// (default 100,000) accounts funded at genesis and `NEXUS_RESTING_ORDERS` (default
/// 1,000,000) resting orders placed by signed transactions (`nexus devnet
/// --resting-orders`, 10 per transaction, each account signing in turn) at
/// `NEXUS_RESTING_RATE` orders/s; then, blocks back to back (no empty-block interval), a
/// snapshot every `NEXUS_SNAPSHOT_EVERY` (default 1,000) blocks and blocks pruned to as
/// many before it, validator 3 (stake 1 of 301, so that its missed proposer turns do not
/// slow the others) is wiped and kept down for each count of blocks in
/// `NEXUS_BEHIND` (comma-separated, default `1000,10000,100000`) in turn, and rejoins.
/// Prints one JSON line per rejoin: bytes and ms per stage (manifest, chunks, verify +
/// load, catch-up), launch to caught up, what it executed at start (nothing), and every
/// validator's disk use. `cargo test --release -p node --test state_sync
/// state_sync_at_scale -- --ignored --nocapture`.
/// Validator 0's snapshots: the loop's part (`snapshot_taken`: image and loop µs), the
/// writer's (`snapshot`: ms), and the gap before the first `final` of the next height
/// against the median gap between heights (ms): the stall a snapshot leaves in the chain.
fn print_snapshot_stalls(cluster: &Cluster) {
    let at = |h: u64| cluster.first_final.get(&h).map(|(t, _)| *t);
    let gap_ms = |h: u64| Some(at(h + 1)?.duration_since(at(h)?).as_secs_f64() * 1e3);
    let mut gaps: Vec<f64> = cluster
        .first_final
        .keys()
        .filter_map(|&h| gap_ms(h))
        .collect();
    gaps.sort_by(f64::total_cmp);
    let median_gap_ms = gaps.get(gaps.len() / 2).copied();
    let written = events(cluster, 0, "snapshot");
    for taken in events(cluster, 0, "snapshot_taken") {
        let height = taken["height"].as_u64().expect("height");
        let write_ms = written
            .iter()
            .find(|w| w["height"] == height)
            .map(|w| &w["write_ms"]);
        println!(
            "{}",
            serde_json::json!({
                "snapshot": height, "image_us": taken["image_us"], "loop_us": taken["loop_us"],
                "write_ms": write_ms, "gap_after_ms": gap_ms(height),
                "median_gap_ms": median_gap_ms,
            })
        );
    }
}

#[test]
#[ignore = "figures at scale; many minutes"]
fn state_sync_at_scale() {
    let accounts = env_u64("NEXUS_ACCOUNTS", 100_000).to_string();
    let resting = env_u64("NEXUS_RESTING_ORDERS", 1_000_000);
    let rate = env_u64("NEXUS_RESTING_RATE", 50_000);
    let every = env_u64("NEXUS_SNAPSHOT_EVERY", 1_000).to_string();
    let behind: Vec<u64> = std::env::var("NEXUS_BEHIND")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .map(|b| b.trim().parse().expect("NEXUS_BEHIND: numbers"))
        .collect();
    let dir = tempfile::tempdir().expect("dir");
    let resting_arg = resting.to_string();
    let extra = [
        "--accounts",
        accounts.as_str(),
        "--resting-orders",
        resting_arg.as_str(),
        "--bulk",
        "10",
        "--snapshot-every",
        every.as_str(),
        "--prune-keep-blocks",
        every.as_str(),
        "--empty-block-interval-ms",
        "0",
    ];
    let started = std::time::Instant::now();
    // Validator 3 holds 1 of 301 stake: while it is down the others (a genesis quorum
    // without it) do not wait out a proposal timeout at each of its turns, which would
    // hold the chain to about 12 blocks a second.
    let light_joiner = |config: &mut node::validator::DevnetConfig| {
        for (i, v) in config.validators.iter_mut().enumerate() {
            v.stake = if i == JOINER { 1 } else { 100 };
        }
    };
    let mut cluster =
        Cluster::start_linked(dir.path(), 23150, rate, 13, &extra, true, light_joiner);
    eprintln!("cluster ready in {} ms", started.elapsed().as_millis());
    fill_book(&mut cluster, rate, resting);
    for &count in &behind {
        let figures = rejoin(&mut cluster, count);
        println!("{figures}");
    }
    print_snapshot_stalls(&cluster);
    cluster.stop_all();
    println!(
        "{}",
        serde_json::json!({"disk_at_end": disk_use(dir.path())})
    );
}

/// Sends the devnet's resting stream at `rate` orders/s and waits until all `orders` are
/// finalized; prints how long that took.
fn fill_book(cluster: &mut Cluster, rate: u64, orders: u64) {
    let spec = cluster.config.load_spec().expect("spec");
    assert_eq!(spec.resting_orders, orders);
    let targets: Vec<_> = cluster
        .config
        .validators
        .iter()
        .map(|v| v.tx_addr)
        .collect();
    let stats: Arc<Mutex<LoadStats>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, counts) = (stop.clone(), stats.clone());
    let started = std::time::Instant::now();
    std::thread::spawn(move || node::load::drive(&spec, &targets, rate, flag, counts));
    let finalized = |stats: &Arc<Mutex<LoadStats>>| stats.lock().expect("stats").finalized_orders;
    let end = std::time::Instant::now() + Duration::from_secs(1_800);
    while finalized(&stats) < orders {
        assert!(std::time::Instant::now() < end, "the book did not fill");
        cluster.run_for(Duration::from_secs(1));
        let s = stats.lock().expect("stats");
        assert!(s.refusals.is_empty(), "refused: {:?}", s.refusals);
    }
    stop.store(true, Ordering::Relaxed);
    let height = cluster.top();
    let report = stats.lock().expect("stats").to_json();
    println!(
        "{}",
        serde_json::json!({"book_filled": {"orders": orders, "ms": started.elapsed().as_millis() as u64,
            "height": height, "client": report}})
    );
}

/// Kills and wipes the joiner, waits until the others are `behind` blocks further, starts
/// it and waits until it caught up; the figures as JSON.
fn rejoin(cluster: &mut Cluster, behind: u64) -> Value {
    cluster.kill(JOINER);
    wipe(&cluster.dir.join(format!("validator-{JOINER}")));
    let top = cluster.top();
    let waited = std::time::Instant::now();
    // Validator 0's disk use about ten times on the way (it snapshots and prunes).
    let step = (behind / 10).max(1);
    let mut disk_0 = Vec::new();
    for target in (top + step..=top + behind).step_by(step as usize) {
        cluster.wait_heights(&OTHERS, target, Duration::from_secs(7_200));
        let data = cluster.dir.join("validator-0");
        disk_0.push(serde_json::json!([
            cluster.heights[0],
            disk_bytes(&data.join("blocks")),
            disk_bytes(&data.join("snapshots"))
        ]));
    }
    cluster.wait_heights(&OTHERS, top + behind, Duration::from_secs(7_200));
    let blocks_per_s = behind as f64 / waited.elapsed().as_secs_f64();
    let disk_before = disk_use(&cluster.dir);
    let (syncs, caught) = (
        events(cluster, JOINER, "state_sync").len(),
        events(cluster, JOINER, "state_sync_caught_up").len(),
    );
    let readies = cluster.ready.len();
    let launched = std::time::Instant::now();
    let behind_at_launch = cluster.top() - top;
    cluster.launch(JOINER);
    cluster.wait_until("the joiner's catch-up", BOUND, |c| {
        events(c, JOINER, "state_sync_caught_up").len() > caught
    });
    let total_ms = launched.elapsed().as_millis() as u64;
    let refused = events(cluster, JOINER, "state_sync_refused");
    assert!(refused.is_empty(), "{refused:?}");
    let synced = events(cluster, JOINER, "state_sync")[syncs].clone();
    let caught_up = events(cluster, JOINER, "state_sync_caught_up")[caught].clone();
    let ready = cluster.ready[readies..]
        .iter()
        .find(|(i, _)| *i == JOINER)
        .map(|(_, v)| v.clone())
        .expect("the joiner's ready line");
    assert_eq!(ready["executed_blocks"], 0, "{ready}");
    let stage = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let staged = stage(&synced, "manifest_ms")
        + stage(&synced, "chunks_ms")
        + stage(&synced, "verify_load_ms")
        + stage(&caught_up, "ms");
    let received = stage(&synced, "manifest_bytes")
        + stage(&synced, "chunk_bytes")
        + stage(&synced, "certificate_bytes")
        + stage(&caught_up, "bytes");
    serde_json::json!({
        "behind_blocks": behind_at_launch, "blocks_per_s_while_down": blocks_per_s.round(),
        "manifest": {"bytes": synced["manifest_bytes"], "ms": synced["manifest_ms"]},
        "chunks": {"bytes": synced["chunk_bytes"], "ms": synced["chunks_ms"],
            "count": synced["chunks"], "snapshot_bytes": synced["snapshot_bytes"]},
        "certificate_bytes": synced["certificate_bytes"],
        "verify_load_ms": synced["verify_load_ms"],
        "catch_up": {"blocks": caught_up["blocks"], "bytes": caught_up["bytes"], "ms": caught_up["ms"]},
        "bytes_received": received, "stages_ms": staged,
        "process_start_ms": total_ms.saturating_sub(staged),
        "launch_to_caught_up_ms": total_ms, "snapshot_height": synced["height"],
        "executed_at_start": ready["executed_blocks"], "disk_before_launch": disk_before,
        "validator_0_height_blocks_snapshots_bytes": disk_0,
    })
}
