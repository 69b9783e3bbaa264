//! `sig-bench`: what signed transactions cost a validator per core (docs/perf.md,
//! "Signatures").
//!
//! Measured in one run, each repeated `--repeats` times (the machine is noisy: min, median
//! and max are printed): one ed25519 check with ed25519-dalek's `verify_strict` (the
//! baseline: the bound of a node that verifies one by one), one ZIP 215 check (the rule
//! transactions use), ZIP 215 batches of 16, 64 and 256, transaction decoding, and mempool
//! admission of batches of signed transactions carrying 1 and 20 orders, as orders per
//! second per core.

use std::time::Instant;

use ed25519_dalek::{Signer, SigningKey};
use engine::{AccountId, SelfTradePrevention, Side, TimeInForce};
use mempool::{ChainView, Mempool, MempoolConfig};
use serde_json::json;
use transactions::{
    account_id_of, verify, verify_batch, verify_batch_cached, Action, KeyCache, NonceSet,
    SignedTransaction, Transaction,
};

const CHAIN: [u8; 32] = [3; 32];
const NOW_MS: u64 = 1_800_000_000_000;

/// Options of one run.
pub struct Options {
    /// Signatures (or transactions) per measurement.
    pub count: usize,
    /// Measurements per figure.
    pub repeats: usize,
}

/// Every account exists; nobody used a nonce.
struct OpenView;

impl ChainView for OpenView {
    fn chain_id(&self) -> [u8; 32] {
        CHAIN
    }
    fn account_exists(&self, _account: AccountId) -> bool {
        true
    }
    fn nonces(&self, _account: AccountId) -> Option<&NonceSet> {
        None
    }
    fn is_faucet(&self, _key: &[u8; 32]) -> bool {
        false
    }
    fn is_feeder(&self, _key: &[u8; 32]) -> bool {
        false
    }
}

fn keys(count: usize) -> Vec<SigningKey> {
    (0..count)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            SigningKey::from_bytes(&seed)
        })
        .collect()
}

fn transaction(key: &SigningKey, nonce: u64, orders: usize) -> SignedTransaction {
    let actions = (0..orders)
        .map(|i| Action::Place {
            market: 0,
            oid: nonce * 64 + i as u64,
            side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
            price: Some(50_000 + i as i64),
            qty: 1,
            tif: TimeInForce::Gtc,
            stp: SelfTradePrevention::CancelMaker,
            reduce_only: false,
        })
        .collect();
    Transaction {
        chain_id: CHAIN,
        signer: key.verifying_key().to_bytes(),
        nonce,
        actions,
    }
    .sign(key)
}

/// Runs `f` `repeats` times; each run handles `items` items. Returns ns per item, sorted.
fn measure(repeats: usize, items: usize, mut f: impl FnMut()) -> Vec<f64> {
    let mut runs: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_nanos() as f64 / items as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs
}

fn summary(name: &str, runs: &[f64], per_item: &str) -> serde_json::Value {
    let median = runs[runs.len() / 2];
    println!(
        "{name:<44} {:>9.0} {:>9.0} {:>9.0}   ns/{per_item}   ({:.0}/s per core at the median)",
        runs[0],
        median,
        runs[runs.len() - 1],
        1e9 / median
    );
    json!({"name": name, "ns_min": runs[0], "ns_median": median,
        "ns_max": runs[runs.len() - 1], "per": per_item, "per_s_per_core": 1e9 / median})
}

/// ed25519-zebra's batch verifier over `txs` (their signing bytes in `messages`).
fn zebra_batch(txs: &[SignedTransaction], messages: &[Vec<u8>]) -> bool {
    let mut verifier = ed25519_zebra::batch::Verifier::new();
    for (tx, message) in txs.iter().zip(messages) {
        let key = ed25519_zebra::VerificationKeyBytes::from(tx.tx.signer);
        verifier.queue((
            key,
            ed25519_zebra::Signature::from_bytes(&tx.signature),
            message,
        ));
    }
    let rng = getrandom::rand_core::UnwrapErr(getrandom::SysRng);
    verifier.verify(rng).is_ok()
}

/// Runs every measurement and prints the table; returns the figures as JSON.
pub fn run(options: &Options) -> serde_json::Value {
    let count = options.count.max(256);
    let repeats = options.repeats.max(1);
    let keys = keys(count);
    let singles: Vec<SignedTransaction> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| transaction(k, NOW_MS + i as u64, 1))
        .collect();
    println!(
        "{:<44} {:>9} {:>9} {:>9}",
        "measurement (one core)", "min", "median", "max"
    );
    let mut figures = Vec::new();

    // Baseline: ed25519-dalek verify_strict, one at a time.
    let messages: Vec<Vec<u8>> = singles.iter().map(|t| t.signing_bytes()).collect();
    let dalek: Vec<_> = keys
        .iter()
        .zip(&messages)
        .map(|(k, m)| (k.verifying_key(), k.sign(m)))
        .collect();
    let runs = measure(repeats, count, || {
        for ((key, signature), message) in dalek.iter().zip(&messages) {
            assert!(key.verify_strict(message, signature).is_ok());
        }
    });
    let baseline = runs[runs.len() / 2];
    figures.push(summary(
        "baseline: dalek verify_strict, single",
        &runs,
        "sig",
    ));
    let runs = measure(repeats, count, || {
        for tx in &singles {
            assert!(verify(tx).is_ok());
        }
    });
    figures.push(summary(
        "ZIP 215 (transactions::verify), single",
        &runs,
        "sig",
    ));
    // What a gateway thread does with a lone transaction: the single equation with the
    // signer's key decompressed once (warm cache).
    let mut cache = KeyCache::new(count);
    let runs = measure(repeats, count, || {
        for tx in &singles {
            assert!(verify_batch_cached(&[tx], &mut cache)[0].is_ok());
        }
    });
    figures.push(summary("ZIP 215 single, signer key cached", &runs, "sig"));
    for batch in [16usize, 64, 256] {
        let refs: Vec<&SignedTransaction> = singles.iter().collect();
        let runs = measure(repeats, count, || {
            for chunk in refs.chunks(batch) {
                assert!(verify_batch(chunk).iter().all(Result::is_ok));
            }
        });
        figures.push(summary(&format!("ZIP 215 batch of {batch}"), &runs, "sig"));
    }
    // Baseline for the two lines after it: ed25519-zebra's batch verifier, which takes keys
    // as bytes and decompresses each for every batch (what the node used before).
    let messages: Vec<Vec<u8>> = singles.iter().map(|t| t.signing_bytes()).collect();
    let runs = measure(repeats, count, || {
        for (chunk, messages) in singles.chunks(64).zip(messages.chunks(64)) {
            assert!(zebra_batch(chunk, messages));
        }
    });
    figures.push(summary(
        "ed25519-zebra batch of 64 (keys as bytes)",
        &runs,
        "sig",
    ));
    // What the gateway and verifier threads do: batches whose signers' keys are cached
    // (decompressed once, used as points by the batch equation).
    for batch in [16usize, 64, 256] {
        let refs: Vec<&SignedTransaction> = singles.iter().collect();
        let runs = measure(repeats, count, || {
            for chunk in refs.chunks(batch) {
                assert!(verify_batch_cached(chunk, &mut cache)
                    .iter()
                    .all(Result::is_ok));
            }
        });
        let name = format!("ZIP 215 batch of {batch}, signer keys cached");
        figures.push(summary(&name, &runs, "sig"));
    }
    let encoded: Vec<Vec<u8>> = singles.iter().map(|t| t.bytes().to_vec()).collect();
    let runs = measure(repeats, count, || {
        for bytes in &encoded {
            assert!(SignedTransaction::decode(bytes).is_ok());
        }
    });
    figures.push(summary("decode one transaction (1 order)", &runs, "tx"));

    for orders in [1usize, 20] {
        let txs: Vec<Vec<u8>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| transaction(k, NOW_MS + i as u64, orders).bytes().to_vec())
            .collect();
        let runs = measure(repeats, count * orders, || {
            let mut pool = Mempool::new(MempoolConfig::default());
            for chunk in txs.chunks(64) {
                let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
                assert!(pool
                    .admit_many(&refs, NOW_MS, &OpenView)
                    .iter()
                    .all(Result::is_ok));
            }
        });
        figures.push(summary(
            &format!("mempool admission, {orders} order(s)/tx, batches of 64"),
            &runs,
            "order",
        ));
    }
    // Market makers: 16 signers sending many transactions (their keys are checked once).
    let makers: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            transaction(&keys[i % 16], NOW_MS + i as u64, 20)
                .bytes()
                .to_vec()
        })
        .collect();
    let runs = measure(repeats, count * 20, || {
        let mut pool = Mempool::new(MempoolConfig::default());
        for chunk in makers.chunks(64) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            assert!(pool
                .admit_many(&refs, NOW_MS, &OpenView)
                .iter()
                .all(Result::is_ok));
        }
    });
    figures.push(summary(
        "mempool admission, 20 orders/tx, 16 signers",
        &runs,
        "order",
    ));
    let zip_single = figures[1]["ns_median"].as_f64().unwrap_or(f64::NAN);
    let batch64 = figures[4]["ns_median"].as_f64().unwrap_or(f64::NAN);
    println!(
        "ratios at the median: ZIP 215 single / dalek single {:.2}; batch of 64 / dalek single {:.2}",
        zip_single / baseline,
        batch64 / baseline
    );
    println!(
        "two cores, one validator: about {:.0}k signatures/s batched (every core verifying)",
        2.0 * 1e6 / batch64
    );
    let _ = account_id_of(&keys[0].verifying_key().to_bytes());
    json!({"count": count, "repeats": repeats, "figures": figures,
        "zip215_single_over_dalek": zip_single / baseline,
        "batch64_over_dalek": batch64 / baseline})
}
