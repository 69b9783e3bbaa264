//! The probe client: signed orders that rest for good (sells far above the load's prices,
//! from four trading accounts the load client does not use), sent round robin to every
//! validator's transaction port. It remembers every order it saw `finalized`, so a run can
//! check each one is resting in every validator's state, and its order-to-Finalized
//! latency by phase.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use engine::{SelfTradePrevention, Side, TimeInForce};
use node::validator::DevnetConfig;
use serde_json::json;
use transactions::{account_id_of, Action, Transaction, TxHash};
use txport::{code_name, Notice, NoticeKind, NOTICE_LEN};

use crate::cluster::{phase_histograms, Phase, PhaseHistograms};
use crate::common::JsonClient;

/// Trading accounts the load client uses: the first 96 of the devnet's 100.
pub const LOAD_ACCOUNTS: u64 = 96;
/// The probe's accounts: the devnet's last four.
const PROBE_ACCOUNTS: std::ops::Range<u64> = 96..100;
/// Probe order ids start here, far above the load's (transaction index x bulk).
const OID_BASE: u64 = 1 << 40;
/// Probe sells rest at 500,000 and up; the load trades within 50 ticks of 100,000.
const PRICE: i64 = 500_000;
/// Probe transactions a second.
const RATE: u64 = 20;

/// A probe transaction awaiting its answer.
struct Pending {
    account: u64,
    oid: u64,
    sent: Instant,
    phase: u8,
}

/// What the probe saw.
#[derive(Default)]
struct Seen {
    pending: HashMap<TxHash, Pending>,
    /// (account id, oid, height) of every order seen finalized.
    finalized: Vec<(u64, u64, u64)>,
    finalized_by_target: [u64; 4],
    refused: BTreeMap<&'static str, u64>,
    sent: u64,
    latency_us: Option<PhaseHistograms>,
}

/// A running probe client.
pub struct Probe {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    /// The phase new transactions are counted in ([`Phase`] as u8).
    phase: Arc<AtomicU8>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One validator's transaction port, connected or waiting to reconnect.
struct Target {
    addr: SocketAddr,
    index: usize,
    writer: Option<TcpStream>,
    retry_at: Instant,
}

impl Probe {
    /// Starts sending to every validator of `config`.
    pub fn start(config: &DevnetConfig) -> Probe {
        let seen = Arc::new(Mutex::new(Seen {
            latency_us: Some(phase_histograms()),
            ..Seen::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicU8::new(Phase::Before as u8));
        let spec = config.load_spec().expect("spec");
        let keys: Vec<SigningKey> = PROBE_ACCOUNTS
            .map(|i| node::load::account_key(spec.seed, i))
            .collect();
        let targets: Vec<Target> = config
            .validators
            .iter()
            .enumerate()
            .map(|(index, v)| Target {
                addr: v.tx_addr,
                index,
                writer: None,
                retry_at: Instant::now(),
            })
            .collect();
        let (s, t, p) = (seen.clone(), stop.clone(), phase.clone());
        let chain_id = spec.chain_id;
        let thread = std::thread::spawn(move || send_loop(chain_id, keys, targets, s, t, p));
        Probe {
            seen,
            stop,
            phase,
            thread: Some(thread),
        }
    }

    /// Counts transactions sent from now on in `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Orders seen finalized so far.
    pub fn finalized(&self) -> u64 {
        self.seen.lock().expect("seen").finalized.len() as u64
    }

    /// Stops sending (answers still arrive); returns the orders seen finalized, with their
    /// heights, and a summary.
    pub fn stop(&mut self) -> (Vec<(u64, u64, u64)>, serde_json::Value) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("probe thread");
        }
        let seen = self.seen.lock().expect("seen");
        let latency = seen.latency_us.as_ref().expect("histograms");
        let phases: Vec<_> = ["before", "during", "after"]
            .iter()
            .zip(latency)
            .map(|(name, h)| {
                let (p50, p99) = crate::cluster::p50_p99_ms(h);
                json!({"phase": name, "count": h.len(), "p50_ms": p50, "p99_ms": p99})
            })
            .collect();
        let summary = json!({"sent": seen.sent, "finalized": seen.finalized.len(),
            "finalized_by_validator": seen.finalized_by_target, "refused": seen.refused,
            "order_to_finalized": phases});
        (seen.finalized.clone(), summary)
    }
}

fn send_loop(
    chain_id: [u8; 32],
    keys: Vec<SigningKey>,
    mut targets: Vec<Target>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicU8>,
) {
    let start_ms = node::validator::now_ns() / 1_000_000;
    let started = Instant::now();
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = started + Duration::from_millis(k * 1_000 / RATE);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
            continue;
        }
        let target = &mut targets[(k % 4) as usize];
        k += 1;
        if !target.ensure(&seen) {
            continue;
        }
        let key = &keys[(k % keys.len() as u64) as usize];
        let oid = OID_BASE + k;
        let tx = probe_transaction(chain_id, key, start_ms + k, oid);
        let account = account_id_of(&key.verifying_key().to_bytes());
        let pending = Pending {
            account,
            oid,
            sent: Instant::now(),
            phase: phase.load(Ordering::Relaxed),
        };
        seen.lock()
            .expect("seen")
            .pending
            .insert(tx.hash(), pending);
        let frame = txport::request_frame(&tx);
        let writer = target.writer.as_mut().expect("connected");
        if writer.write_all(&frame).is_err() {
            seen.lock().expect("seen").pending.remove(&tx.hash());
            target.writer = None;
            target.retry_at = Instant::now() + Duration::from_millis(300);
            continue;
        }
        seen.lock().expect("seen").sent += 1;
    }
}

/// A sell of 1 lot at 500,000 and up, order `oid`, signed by `key`.
fn probe_transaction(
    chain_id: [u8; 32],
    key: &SigningKey,
    nonce: u64,
    oid: u64,
) -> transactions::SignedTransaction {
    Transaction {
        chain_id,
        signer: key.verifying_key().to_bytes(),
        nonce,
        actions: vec![Action::Place {
            market: node::load::MARKET,
            oid,
            side: Side::Sell,
            price: Some(PRICE + (oid % 1_000) as i64),
            qty: 1,
            tif: TimeInForce::Gtc,
            stp: SelfTradePrevention::CancelTaker,
            reduce_only: false,
        }],
    }
    .sign(key)
}

impl Target {
    /// Connected, or reconnects (at most every 300 ms); false if the validator is down.
    fn ensure(&mut self, seen: &Arc<Mutex<Seen>>) -> bool {
        if self.writer.is_some() {
            return true;
        }
        if Instant::now() < self.retry_at {
            return false;
        }
        self.retry_at = Instant::now() + Duration::from_millis(300);
        let Ok(stream) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)) else {
            return false;
        };
        let reader = stream.try_clone().expect("clone");
        let (seen, index) = (seen.clone(), self.index);
        std::thread::spawn(move || read_notices(reader, index, seen));
        self.writer = Some(stream);
        true
    }
}

/// Reads a connection's notices until the validator closes it (it exited); answers that
/// come after the probe stopped sending still count.
fn read_notices(mut stream: TcpStream, target: usize, seen: Arc<Mutex<Seen>>) {
    let mut bytes = [0u8; NOTICE_LEN];
    while stream.read_exact(&mut bytes).is_ok() {
        if let Some(notice) = Notice::decode(&bytes) {
            on_notice(&seen, target, notice);
        }
    }
}

fn on_notice(seen: &Mutex<Seen>, target: usize, notice: Notice) {
    let mut seen = seen.lock().expect("seen");
    match notice.kind {
        NoticeKind::Admitted => {}
        NoticeKind::Finalized => {
            let Some(p) = seen.pending.remove(&notice.hash) else {
                return;
            };
            seen.finalized.push((p.account, p.oid, notice.height));
            seen.finalized_by_target[target] += 1;
            let us = p.sent.elapsed().as_micros() as u64;
            let histograms = seen.latency_us.as_mut().expect("histograms");
            let _ = histograms[usize::from(p.phase)].record(us.max(1));
        }
        NoticeKind::Refused | NoticeKind::Evicted => {
            if seen.pending.remove(&notice.hash).is_some() {
                *seen.refused.entry(code_name(notice.code)).or_default() += 1;
            }
        }
    }
}

/// Checks that every order in `finalized` rests in the state of every validator in
/// `which` (their JSON ports' `orders` query); returns how many orders were checked.
pub fn check_resting(
    config: &DevnetConfig,
    which: &[usize],
    finalized: &[(u64, u64, u64)],
) -> usize {
    let mut by_account: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &(account, oid, _) in finalized {
        by_account.entry(account).or_default().push(oid);
    }
    for &i in which {
        let addr = config.validators[i].json_addr.expect("json port");
        let mut client = JsonClient::connect(addr);
        for (account, oids) in &by_account {
            client.send_json(&json!({"op": "orders", "account": account,
                "market": node::load::MARKET_NAME}));
            let reply = client.next();
            assert_eq!(reply["ev"], "orders", "{reply}");
            let resting: std::collections::BTreeSet<u64> = reply["orders"]
                .as_array()
                .expect("orders")
                .iter()
                .filter_map(|o| o["oid"].as_u64())
                .collect();
            let missing: Vec<_> = oids.iter().filter(|o| !resting.contains(o)).collect();
            assert!(
                missing.is_empty(),
                "validator {i} lacks finalized orders {missing:?} of account {account}"
            );
        }
    }
    finalized.len()
}
