//! `nexus-perf`: latency of a running node over the real gateway (docs/perf.md).
//!
//! A run funds deterministic accounts on the node's JSON port, opens one binary order-entry
//! session per flow (a sender thread on the open-loop schedule, a receiver thread matching
//! replies by client seq) and one market-data connection (book, order-to-market-data, the
//! reactive taker behind tick-to-trade), measures for `duration` seconds after a warm-up,
//! waits for the outstanding replies, then times a raw loopback TCP ping-pong as the
//! baseline. [`output`] prints and writes the report.
//!
//! - [`schedule`]: due times, waiting, rate split;
//! - [`flows`]: what makers, takers and cancel storms send;
//! - [`conn`]: the request table, sender and receiver threads, the figures;
//! - [`md`]: the market-data thread and the reactive taker;
//! - [`baseline`]: the loopback ping-pong;
//! - [`node`]: spawning `nexus pipeline`, funding accounts;
//! - [`curve`], [`svg`], [`output`]: percentile curves, the plot, the report.

pub mod baseline;
pub mod conn;
pub mod curve;
pub mod flows;
pub mod md;
pub mod node;
pub mod output;
pub mod schedule;
pub mod svg;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use gateway::client::{LoginOptions, OrderClient, OrderSender};
use gateway::wire::{account_id_of, FLAG_CANCEL_ON_DISCONNECT};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::latency::LatencyRecorder;
use conn::{DueSent, Metrics, Receiver, Requests, RunState, ScheduledSender, Window};
use flows::{Flow, MakerFlow, SharedMarket, StormFlow, TakerFlow};
use md::{Feed, FeedUpdate, Reactor};
use node::{Deposit, NodeAddresses, SpawnedNode};
use schedule::{split_rate, Clock, Schedule, Waiter};

/// Which flows a run drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Market makers only: two-sided quotes around a moving mid, replaced (cancel-replace).
    Mm,
    /// Makers (half the rate) and takers sending IOC orders through the top levels.
    Sweep,
    /// Cancel storms only: a GTC order far from the touch, then its cancel.
    CancelStorm,
    /// Makers 50%, sweeping takers 20%, cancel storms 30% of the rate.
    Mixed,
}

impl Scenario {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Mm => "mm",
            Scenario::Sweep => "sweep",
            Scenario::CancelStorm => "cancel-storm",
            Scenario::Mixed => "mixed",
        }
    }

    /// Shares of the rate: (makers, takers, storms).
    pub fn shares(self) -> (f64, f64, f64) {
        match self {
            Scenario::Mm => (1.0, 0.0, 0.0),
            Scenario::Sweep => (0.5, 0.5, 0.0),
            Scenario::CancelStorm => (0.0, 0.0, 1.0),
            Scenario::Mixed => (0.5, 0.2, 0.3),
        }
    }

    /// Whether the reactive taker runs (it needs resting liquidity at the touch).
    pub fn reacts(self) -> bool {
        self != Scenario::CancelStorm
    }
}

/// Everything a run is told.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The flows.
    pub scenario: Scenario,
    /// Scheduled requests per second, all connections together.
    pub rate: f64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Seconds sent before measuring.
    pub warmup_s: f64,
    /// Maker connections (each its own account).
    pub makers: usize,
    /// Taker connections.
    pub takers: usize,
    /// Cancel-storm connections.
    pub storms: usize,
    /// Price levels each maker quotes per side.
    pub levels: usize,
    /// Largest maker quote, lots.
    pub maker_max_qty: i64,
    /// Ticks a taker's IOC goes through the best opposite price.
    pub sweep_ticks: i64,
    /// Largest taker IOC, lots.
    pub taker_max_qty: i64,
    /// Least distance of a cancel-storm order from the mid, ticks.
    pub storm_gap: i64,
    /// Most reactive IOCs per second (0: no reactive taker).
    pub react_rate: f64,
    /// Lots per reactive IOC.
    pub react_qty: i64,
    /// Market id.
    pub market: u32,
    /// Where the makers' mid starts when the book is empty, ticks (the book's mid otherwise).
    pub mid: i64,
    /// Seed of the flows' random choices.
    pub seed: u64,
    /// Senders spin (yielding) this long before a due time instead of sleeping, ns; all
    /// together at most a quarter of a core ([`schedule::Waiter::for_total_rate`]).
    pub spin_ns: u64,
    /// Most seconds to wait for outstanding replies after the schedule ends.
    pub drain_s: f64,
    /// Loopback round trips (None: as many as scheduled requests in the window; 0: none).
    pub baseline_count: Option<u64>,
    /// Deposits per account before the run: (asset, amount as a decimal string).
    pub fund: Vec<(String, String)>,
    /// Print a progress line on stderr every second.
    pub progress: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scenario: Scenario::Mixed,
            rate: 2_000.0,
            duration_s: 5.0,
            warmup_s: 1.0,
            makers: 1,
            takers: 1,
            storms: 1,
            levels: 5,
            maker_max_qty: 10,
            sweep_ticks: 2,
            taker_max_qty: 15,
            storm_gap: 30,
            react_rate: 100.0,
            react_qty: 1,
            market: 0,
            mid: 100_000,
            seed: 42,
            spin_ns: 200_000,
            drain_s: 3.0,
            baseline_count: None,
            fund: vec![
                ("BTC".into(), "1000".into()),
                ("USD".into(), "100000000".into()),
            ],
            progress: true,
        }
    }
}

/// The node to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Start `nexus pipeline` (this binary, with this optional `--config`).
    Spawn {
        /// The `nexus` binary.
        nexus: PathBuf,
        /// Optional node configuration file.
        config: Option<PathBuf>,
    },
    /// A node already running at these addresses.
    Running(NodeAddresses),
}

/// What is known about the node measured.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// "spawned" or "running".
    pub kind: String,
    /// The `nexus` binary, when spawned.
    pub nexus: Option<String>,
    /// Its `--config`, when given.
    pub config: Option<String>,
    /// Order-entry address.
    pub order_entry: String,
    /// Market-data address.
    pub market_data: String,
    /// JSON port, if used.
    pub admin: Option<String>,
    /// The ready line, when spawned.
    pub ready: Option<serde_json::Value>,
    /// The stopped line, when spawned.
    pub stopped: Option<serde_json::Value>,
}

/// One connection's role and rate.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionPlan {
    /// "maker", "taker", "storm" or "react".
    pub role: &'static str,
    /// Index within the role.
    pub index: usize,
    /// Scheduled requests per second (for "react": the cap).
    pub rate: f64,
    /// The account it trades for.
    pub account: u64,
}

/// Everything a run measured.
#[derive(Default)]
pub struct Results {
    /// The configuration.
    pub config: Option<Config>,
    /// The node.
    pub node: NodeInfo,
    /// Connections.
    pub connections: Vec<ConnectionPlan>,
    /// Unix time the run started, seconds.
    pub started_unix_s: u64,
    /// Length of the measurement window, seconds.
    pub window_s: f64,
    /// The order-entry figures of every connection.
    pub metrics: Metrics,
    /// Maker quote send -> the `LevelUpdate` of that input at that side and price read from
    /// the feed.
    pub order_to_market_data: DueSent,
    /// Quotes acknowledged inside the window that were found on the feed.
    pub quotes_on_feed: u64,
    /// Quotes acknowledged inside the window with no matching level update (the quote
    /// traded away on entry, or its level size did not change).
    pub quotes_not_on_feed: u64,
    /// Trades on the feed inside the window.
    pub feed_trades: u64,
    /// Level updates on the feed inside the window.
    pub feed_level_updates: u64,
    /// Changes of the best bid or ask price inside the window.
    pub top_changes: u64,
    /// Reactive taker: feed read -> IOC written.
    pub tick_to_send: LatencyRecorder,
    /// Loopback ping-pong open loop at the run's rate (sender and receiver threads).
    pub loopback_open_loop: Option<LatencyRecorder>,
    /// Loopback ping-pong back to back.
    pub loopback_back_to_back: Option<LatencyRecorder>,
    /// Seconds waited after the schedule for outstanding replies.
    pub drain_s: f64,
    /// Wall time of the whole run, node start to report, seconds.
    pub wall_s: f64,
    /// Problems (connections lost, requests never answered, ...).
    pub errors: Vec<String>,
}

/// The deterministic key of a role's `index`th account: BLAKE3("nexus-perf-<role>-<index>").
pub fn account_key(role: &str, index: usize) -> SigningKey {
    SigningKey::from_bytes(blake3::hash(format!("nexus-perf-{role}-{index}").as_bytes()).as_bytes())
}

/// The account id of a key (as the gateway derives it).
pub fn account_of(key: &SigningKey) -> u64 {
    account_id_of(&key.verifying_key().to_bytes())
}

/// The connections a configuration opens, with their rates.
pub fn plan(config: &Config) -> Vec<ConnectionPlan> {
    let (maker_share, taker_share, storm_share) = config.scenario.shares();
    let counts = [
        if maker_share > 0.0 { config.makers } else { 0 },
        if taker_share > 0.0 { config.takers } else { 0 },
        if storm_share > 0.0 { config.storms } else { 0 },
    ];
    let shares = [
        if counts[0] > 0 { maker_share } else { 0.0 },
        if counts[1] > 0 { taker_share } else { 0.0 },
        if counts[2] > 0 { storm_share } else { 0.0 },
    ];
    let rates = split_rate(config.rate, &shares);
    let mut plans = Vec::new();
    for ((role, count), rate) in ["maker", "taker", "storm"].iter().zip(counts).zip(rates) {
        for index in 0..count {
            plans.push(ConnectionPlan {
                role,
                index,
                rate: rate / count as f64,
                account: account_of(&account_key(role, index)),
            });
        }
    }
    if config.scenario.reacts() && config.react_rate > 0.0 {
        plans.push(ConnectionPlan {
            role: "react",
            index: 0,
            rate: config.react_rate,
            account: account_of(&account_key("react", 0)),
        });
    }
    plans
}

/// Matches acknowledged quotes with the feed: for each, the first `LevelUpdate` caused by
/// the same input (global seq) at the same side and price. Returns the latencies and
/// (matched, unmatched).
pub fn match_quotes(quotes: &[conn::QuoteAck], updates: &[FeedUpdate]) -> (DueSent, u64, u64) {
    let mut by_seq: HashMap<u64, Vec<&FeedUpdate>> = HashMap::new();
    for update in updates {
        by_seq.entry(update.seq).or_default().push(update);
    }
    let mut latencies = DueSent::default();
    let (mut matched, mut unmatched) = (0, 0);
    for quote in quotes {
        let found = by_seq.get(&quote.seq).and_then(|list| {
            list.iter()
                .find(|u| u.side == quote.side && u.price == quote.price)
        });
        match found {
            Some(update) => {
                matched += 1;
                latencies
                    .due
                    .record_ns(update.recv_ns.saturating_sub(quote.due_ns));
                latencies
                    .sent
                    .record_ns(update.recv_ns.saturating_sub(quote.sent_ns));
            }
            None => unmatched += 1,
        }
    }
    (latencies, matched, unmatched)
}

fn log(config: &Config, text: &str) {
    if config.progress {
        eprintln!("[nexus-perf] {text}");
    }
}

/// Runs a whole benchmark against `target`; `Err` only when the run could not take place
/// (node not started, login refused, ...). Problems during the run are in
/// [`Results::errors`].
pub fn run(config: &Config, target: &Target) -> Result<Results, String> {
    let wall = Instant::now();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if !(config.rate > 0.0 && config.duration_s > 0.0 && config.warmup_s >= 0.0) {
        return Err("--rate and --duration must be positive, --warmup not negative".into());
    }
    let mut results = Results {
        config: Some(config.clone()),
        started_unix_s,
        ..Results::default()
    };
    let mut spawned = None;
    let addresses = match target {
        Target::Spawn {
            nexus,
            config: node_config,
        } => {
            log(config, &format!("starting {} run", nexus.display()));
            let node = SpawnedNode::start(nexus, node_config.as_deref())?;
            let addresses = node.ready.addresses;
            results.node = NodeInfo {
                kind: "spawned".into(),
                nexus: Some(nexus.display().to_string()),
                config: node_config.as_ref().map(|p| p.display().to_string()),
                ready: Some(node.ready.raw.clone()),
                ..NodeInfo::default()
            };
            spawned = Some(node);
            addresses
        }
        Target::Running(addresses) => {
            results.node.kind = "running".into();
            *addresses
        }
    };
    results.node.order_entry = addresses.order_entry.to_string();
    results.node.market_data = addresses.market_data.to_string();
    results.node.admin = addresses.admin.map(|a| a.to_string());

    let plans = plan(config);
    results.connections = plans.clone();
    if plans.iter().all(|p| p.role == "react") {
        return Err("the scenario has no scheduled connection (all counts 0?)".into());
    }

    // Fund every account before anything is measured.
    match addresses.admin {
        Some(admin) => {
            let deposits: Vec<Deposit> = plans
                .iter()
                .flat_map(|p| {
                    config.fund.iter().map(move |(asset, amount)| Deposit {
                        account: p.account,
                        asset: asset.clone(),
                        amount: amount.clone(),
                    })
                })
                .collect();
            log(
                config,
                &format!(
                    "funding {} accounts on {admin} ({} deposits, waiting for finalized)",
                    plans.len(),
                    deposits.len()
                ),
            );
            node::fund(admin, &deposits, Duration::from_secs(30))?;
        }
        None => log(config, "no admin port: accounts are assumed funded"),
    }

    // The feed first: its snapshot gives the mid.
    let feed = Feed::connect(addresses.market_data, config.market)?;
    let (bid, ask) = feed.book.top();
    let center = match (bid, ask) {
        (Some((b, _)), Some((a, _))) if a > b => (a + b) / 2,
        _ => config.mid,
    };
    let band = 50;
    let market = Arc::new(SharedMarket::new(config.market, center, band));

    let clock = Clock::new();
    let start_ns = clock.now_ns() + 200_000_000;
    let window = Window {
        from_ns: start_ns + (config.warmup_s * 1e9) as u64,
        to_ns: start_ns + ((config.warmup_s + config.duration_s) * 1e9) as u64,
    };
    let run_state = Arc::new(RunState::new(clock, window));
    let total_s = config.warmup_s + config.duration_s;

    // Log in every connection.
    let login = LoginOptions {
        session_id: 1,
        resume_from: 0,
        heartbeat_ms: 60_000,
        flags: FLAG_CANCEL_ON_DISCONNECT,
    };
    let mut senders = Vec::new();
    let mut receivers: Vec<JoinHandle<Metrics>> = Vec::new();
    let mut reactor = None;
    let scheduled = plans.iter().filter(|p| p.role != "react").count();
    let mut slot = 0;
    for plan in &plans {
        let key = account_key(plan.role, plan.index);
        let client = OrderClient::connect(addresses.order_entry, &key, login)
            .map_err(|e| format!("login of {} {}: {e}", plan.role, plan.index))?;
        let (sender, reader, session) = client.split();
        if session.account != plan.account {
            return Err(format!(
                "the node gave account {} for {} {} (expected {})",
                session.account, plan.role, plan.index, plan.account
            ));
        }
        let capacity = (plan.rate * (total_s + 1.0)).ceil() as usize + 64;
        let requests = Arc::new(Requests::new(session.next_client_seq, capacity));
        let name = format!("{} {}", plan.role, plan.index);
        let flow = match plan.role {
            "maker" => Some(Flow::Maker(MakerFlow::new(
                config.levels,
                config.maker_max_qty,
            ))),
            "taker" => Some(Flow::Taker(TakerFlow::new(
                config.sweep_ticks,
                config.taker_max_qty,
            ))),
            "storm" => Some(Flow::Storm(StormFlow::new(
                config.storm_gap.max(config.levels as i64 + 5),
            ))),
            _ => None,
        };
        let in_flight = Arc::new(AtomicBool::new(false));
        let receiver = Receiver::new(
            name.clone(),
            reader,
            requests.clone(),
            run_state.clone(),
            flow.as_ref().and_then(Flow::quotes),
            (plan.role == "react").then(|| in_flight.clone()),
        );
        receivers.push(
            std::thread::Builder::new()
                .name(format!("recv {name}"))
                .spawn(move || receiver.run())
                .map_err(|e| e.to_string())?,
        );
        match flow {
            Some(flow) => {
                // Connections of a run are spread evenly over one interval of the
                // fastest schedule so that they do not all send at the same instant.
                let offset = (slot as f64 / scheduled as f64 * 1e9 / plan.rate.max(1.0)) as u64;
                slot += 1;
                senders.push(ScheduledSender {
                    sender,
                    flow,
                    schedule: Schedule::new(start_ns, offset, plan.rate, window.to_ns),
                    waiter: Waiter::for_total_rate(config.spin_ns, config.rate),
                    rng: ChaCha8Rng::seed_from_u64(
                        config.seed ^ blake3::hash(name.as_bytes()).as_bytes()[0] as u64,
                    ),
                    requests,
                    run: run_state.clone(),
                    market: market.clone(),
                });
            }
            None => {
                reactor = Some(Reactor {
                    sender,
                    requests,
                    in_flight,
                    min_interval_ns: (1e9 / plan.rate) as u64,
                    qty: config.react_qty.max(1),
                });
            }
        }
    }
    log(
        config,
        &format!(
            "{} connections logged in; sending {} requests/s for {:.1} s (+{:.1} s warm-up)",
            plans.len(),
            report_rate(config.rate),
            config.duration_s,
            config.warmup_s
        ),
    );

    // Go.
    let feed_thread = {
        let run_state = run_state.clone();
        let market = market.clone();
        std::thread::Builder::new()
            .name("market data".into())
            .spawn(move || feed.run(run_state, market, reactor))
            .map_err(|e| e.to_string())?
    };
    let sender_threads: Vec<JoinHandle<(OrderSender, Option<String>)>> = senders
        .into_iter()
        .map(|s| {
            std::thread::Builder::new()
                .name("sender".into())
                .spawn(move || s.run())
                .expect("spawn sender")
        })
        .collect();

    // Progress while the schedule runs.
    let mut next_progress = start_ns + 1_000_000_000;
    while clock.now_ns() < window.to_ns {
        let now = clock.now_ns();
        if now >= next_progress {
            if config.progress {
                eprintln!("{}", progress_line(&run_state, now, start_ns, total_s));
            }
            next_progress += 1_000_000_000;
        }
        let wake = next_progress.min(window.to_ns);
        std::thread::sleep(Duration::from_nanos(
            wake.saturating_sub(clock.now_ns()).min(100_000_000),
        ));
    }
    let mut writers = Vec::new();
    for thread in sender_threads {
        let (writer, error) = thread.join().map_err(|_| "a sender panicked")?;
        writers.push(writer);
        if let Some(error) = error {
            results.errors.push(error);
        }
    }
    // Drain: wait for every reply of what was sent (Finalized last).
    let drain_start = Instant::now();
    let drain_limit = Duration::from_secs_f64(config.drain_s.max(0.0));
    loop {
        let sent = run_state.sent.load(Ordering::Relaxed);
        let done = run_state.acked.load(Ordering::Relaxed) >= sent
            && run_state.finalized.load(Ordering::Relaxed) >= sent;
        if done || drain_start.elapsed() > drain_limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    results.drain_s = drain_start.elapsed().as_secs_f64();
    run_state.stop.store(true, Ordering::Release);
    for thread in receivers {
        let metrics = thread.join().map_err(|_| "a receiver panicked")?;
        results.metrics.add(&metrics);
    }
    let feed_results = feed_thread
        .join()
        .map_err(|_| "the market-data thread panicked")?;
    drop(writers);
    drop(feed_results.sender);

    results.window_s = window.seconds();
    let (o2md, matched, unmatched) =
        match_quotes(&results.metrics.quote_acks, &feed_results.updates);
    results.order_to_market_data = o2md;
    results.quotes_on_feed = matched;
    results.quotes_not_on_feed = unmatched;
    results.feed_trades = feed_results.trades;
    results.feed_level_updates = feed_results.level_updates;
    results.top_changes = feed_results.top_changes;
    results.tick_to_send = feed_results.tick_to_send;
    results
        .errors
        .extend(results.metrics.errors.iter().cloned());
    results.errors.extend(feed_results.errors);
    let m = &results.metrics;
    if m.unanswered > 0 || m.unsequenced > 0 || m.unfinalized > 0 {
        results.errors.push(format!(
            "after {:.1} s of drain: {} requests unanswered, {} not sequenced, {} not finalized",
            results.drain_s, m.unanswered, m.unsequenced, m.unfinalized
        ));
    }

    // The baseline, on the same machine right after, with the node idle.
    let count = config.baseline_count.unwrap_or(results.metrics.requests);
    if count > 0 {
        log(
            config,
            &format!(
                "loopback baseline: {count} round trips open loop at {}/s, then {count} back to back",
                report_rate(config.rate)
            ),
        );
        let warm = (count / 10).clamp(10, 1_000);
        let waiter = Waiter::for_total_rate(config.spin_ns, config.rate);
        match baseline::ping_pong(count, warm, baseline::Pace::OpenLoop(config.rate), waiter) {
            Ok(r) => results.loopback_open_loop = Some(r),
            Err(e) => results.errors.push(format!("loopback baseline: {e}")),
        }
        match baseline::ping_pong(count, warm, baseline::Pace::BackToBack, waiter) {
            Ok(r) => results.loopback_back_to_back = Some(r),
            Err(e) => results.errors.push(format!("loopback baseline: {e}")),
        }
    }

    if let Some(mut node) = spawned.take() {
        results.node.stopped = node.stop();
    }
    results.wall_s = wall.elapsed().as_secs_f64();
    Ok(results)
}

fn report_rate(rate: f64) -> String {
    if rate.fract() == 0.0 {
        crate::report::thousands(rate as u64)
    } else {
        format!("{rate:.1}")
    }
}

/// One progress line: elapsed, sent, acked, order-to-ack p50 (from the due time) of the
/// requests answered since the last line.
pub fn progress_line(run: &RunState, now_ns: u64, start_ns: u64, total_s: f64) -> String {
    let p50 = run
        .recent
        .lock()
        .map(|mut h| {
            let p50 = (!h.is_empty()).then(|| h.value_at_quantile(0.5));
            h.reset();
            p50
        })
        .ok()
        .flatten();
    let phase = if now_ns < run.window.from_ns {
        "warm-up"
    } else {
        "measuring"
    };
    format!(
        "[nexus-perf] {:5.1}/{:.1} s {phase}: sent {}, acked {}, finalized {}, order-to-ack p50 (last 1 s, from due) {}",
        now_ns.saturating_sub(start_ns) as f64 / 1e9,
        total_s,
        crate::report::thousands(run.sent.load(Ordering::Relaxed)),
        crate::report::thousands(run.acked.load(Ordering::Relaxed)),
        crate::report::thousands(run.finalized.load(Ordering::Relaxed)),
        p50.map_or("-".to_string(), |ns| crate::report::duration_ns(ns as f64)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::Side;

    #[test]
    fn plans_split_the_rate_by_scenario() {
        let config = Config::default();
        let plans = plan(&config);
        let roles: Vec<&str> = plans.iter().map(|p| p.role).collect();
        assert_eq!(roles, ["maker", "taker", "storm", "react"]);
        let scheduled: f64 = plans
            .iter()
            .filter(|p| p.role != "react")
            .map(|p| p.rate)
            .sum();
        assert!((scheduled - config.rate).abs() < 1e-6);
        assert!((plans[0].rate - 1_000.0).abs() < 1e-9);
        let storm_only = plan(&Config {
            scenario: Scenario::CancelStorm,
            storms: 2,
            ..Config::default()
        });
        assert_eq!(storm_only.len(), 2);
        assert!(storm_only
            .iter()
            .all(|p| p.role == "storm" && p.rate == 1_000.0));
        assert_ne!(storm_only[0].account, storm_only[1].account);
    }

    #[test]
    fn keys_are_deterministic_per_role_and_index() {
        assert_eq!(
            account_of(&account_key("maker", 0)),
            account_of(&account_key("maker", 0))
        );
        assert_ne!(
            account_of(&account_key("maker", 0)),
            account_of(&account_key("maker", 1))
        );
        assert!(account_of(&account_key("taker", 3)) < 1 << 63);
    }

    #[test]
    fn quotes_match_the_update_of_their_input_side_and_price() {
        let quote = |seq, price| conn::QuoteAck {
            seq,
            side: Side::Buy,
            price,
            due_ns: 100,
            sent_ns: 110,
        };
        let update = |seq, side, price, recv_ns| FeedUpdate {
            seq,
            side,
            price,
            lots: 1,
            recv_ns,
        };
        let updates = [
            update(7, Side::Buy, 99, 150),  // the old level of the replaced quote
            update(7, Side::Buy, 101, 160), // its new level
            update(8, Side::Sell, 101, 170),
        ];
        let (latencies, matched, unmatched) =
            match_quotes(&[quote(7, 101), quote(8, 101), quote(9, 5)], &updates);
        assert_eq!((matched, unmatched), (1, 2));
        assert_eq!(latencies.sent.summary().max_ns, 50);
        assert_eq!(latencies.due.summary().max_ns, 60);
    }
}
