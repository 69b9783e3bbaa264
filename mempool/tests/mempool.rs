//! The mempool against a model: typed refusals change nothing; limits hold; a proposal takes
//! arrival order; after blocks, every transaction ever accepted is pooled, included, or
//! evicted with a reason (never dropped silently); a replay of an included transaction is
//! refused; batch admission gives what single admissions give; block signatures of pooled
//! transactions are not verified again.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;
use engine::{AccountId, SelfTradePrevention, Side, TimeInForce};
use mempool::{ChainView, Mempool, MempoolConfig, Refusal};
use proptest::prelude::*;
use transactions::{
    account_id_of, Action, NonceError, NonceSet, SignedTransaction, Transaction, TxHash,
};

const CHAIN: [u8; 32] = [1; 32];
const NOW: u64 = 1_800_000_000_000;

/// A chain state for the pool: funded accounts, remembered nonces, a faucet.
#[derive(Default)]
struct View {
    accounts: BTreeSet<AccountId>,
    nonces: BTreeMap<AccountId, NonceSet>,
    faucet: Option<[u8; 32]>,
    /// Core gas limit of a block (`None`: no gas); every action costs 10.
    gas_limit: Option<u64>,
}

impl ChainView for View {
    fn chain_id(&self) -> [u8; 32] {
        CHAIN
    }
    fn account_exists(&self, account: AccountId) -> bool {
        self.accounts.contains(&account)
    }
    fn nonces(&self, account: AccountId) -> Option<&NonceSet> {
        self.nonces.get(&account)
    }
    fn is_faucet(&self, key: &[u8; 32]) -> bool {
        self.faucet == Some(*key)
    }
    fn is_feeder(&self, _key: &[u8; 32]) -> bool {
        false
    }
    /// Co-processor 1 is active and has method 1 only.
    fn check_call(&self, coprocessor: u32, method: u8, _: &[u8; 24]) -> Result<(), &'static str> {
        match (coprocessor, method) {
            (1, 1) => Ok(()),
            (1, _) => Err("unknown_method"),
            _ => Err("coprocessor_inactive"),
        }
    }
    fn core_gas(&self, tx: &SignedTransaction) -> u64 {
        self.gas_limit
            .map_or(0, |_| 10 * tx.tx.actions.len() as u64)
    }
    fn core_gas_limit(&self) -> u64 {
        self.gas_limit.unwrap_or(u64::MAX)
    }
}

impl View {
    /// Executes a block at `now` as the chain would: remembers each nonce it accepts (a
    /// repeated or stale one is refused and remembers nothing).
    fn execute(&mut self, txs: &[&SignedTransaction], now: u64) {
        for tx in txs {
            let nonces = self.nonces.entry(tx.tx.account()).or_default();
            if nonces.check(tx.tx.nonce, now).is_ok() {
                nonces.record(tx.tx.nonce);
            }
        }
    }
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn order(key: &SigningKey, nonce: u64) -> SignedTransaction {
    Transaction {
        chain_id: CHAIN,
        signer: key.verifying_key().to_bytes(),
        nonce,
        actions: vec![Action::Place {
            market: 0,
            oid: nonce,
            side: Side::Buy,
            price: Some(100),
            qty: 1,
            tif: TimeInForce::Gtc,
            stp: SelfTradePrevention::CancelMaker,
            reduce_only: false,
        }],
    }
    .sign(key)
}

/// A transaction of `key` with `nonce` that is not [`order`]'s (another price, so another
/// hash): what another validator's pool may hold.
fn other_order(key: &SigningKey, nonce: u64) -> SignedTransaction {
    let mut tx = order(key, nonce).tx;
    if let Action::Place { price, .. } = &mut tx.actions[0] {
        *price = Some(101);
    }
    tx.sign(key)
}

fn view_with(keys: &[SigningKey]) -> View {
    View {
        accounts: keys
            .iter()
            .map(|k| account_id_of(&k.verifying_key().to_bytes()))
            .collect(),
        ..View::default()
    }
}

fn small() -> MempoolConfig {
    MempoolConfig {
        max_txs: 40,
        max_bytes: 40 * 172,
        max_per_account: 8,
        verified_cache: 1_000,
    }
}

#[test]
fn each_bad_input_gets_its_typed_refusal_and_changes_nothing() {
    let alice = key(1);
    let stranger = key(2);
    let view = view_with(std::slice::from_ref(&alice));
    let mut pool = Mempool::new(small());
    let good = order(&alice, NOW);
    assert!(pool.admit(good.bytes(), NOW, &view).is_ok());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"garbage".to_vec(), "malformed"),
        (good.bytes().to_vec(), "duplicate"),
        (order(&alice, NOW).bytes()[..171].to_vec(), "malformed"),
        (
            {
                let mut forged = order(&alice, NOW + 1).bytes().to_vec();
                let last = forged.len() - 1;
                forged[last] ^= 1;
                forged
            },
            "bad_signature",
        ),
        (order(&stranger, NOW).bytes().to_vec(), "unknown_account"),
        (
            order(&alice, NOW - 3 * 86_400_000).bytes().to_vec(),
            "nonce_stale",
        ),
        (
            order(&alice, NOW + 2 * 86_400_000).bytes().to_vec(),
            "nonce_future",
        ),
        (
            {
                let other = Transaction {
                    chain_id: [2; 32],
                    signer: alice.verifying_key().to_bytes(),
                    nonce: NOW + 2,
                    actions: vec![Action::CancelAll { market: 0 }],
                };
                other.sign(&alice).bytes().to_vec()
            },
            "wrong_chain",
        ),
        (
            Transaction {
                chain_id: CHAIN,
                signer: alice.verifying_key().to_bytes(),
                nonce: NOW + 3,
                actions: vec![Action::Deposit {
                    account: 5,
                    asset: 0,
                    amount: 1,
                }],
            }
            .sign(&alice)
            .bytes()
            .to_vec(),
            "not_permitted",
        ),
        (
            {
                // Same nonce as the pooled one, other content.
                Transaction {
                    chain_id: CHAIN,
                    signer: alice.verifying_key().to_bytes(),
                    nonce: NOW,
                    actions: vec![Action::CancelAll { market: 0 }],
                }
                .sign(&alice)
                .bytes()
                .to_vec()
            },
            "nonce_pending",
        ),
        (
            {
                // An oversize bulk: a 65th action record and the count 65 (2,220 bytes).
                let cancels = (0..64).map(|_| Action::CancelAll { market: 0 }).collect();
                let full = with_actions(&alice, NOW + 4, cancels);
                let mut oversize = full.bytes().to_vec();
                oversize.splice(76..76, full.bytes()[76..108].iter().copied());
                oversize[2] = 65;
                oversize
            },
            "malformed",
        ),
    ];
    for (bytes, expected) in cases {
        let result = pool.admit(&bytes, NOW, &view);
        assert_eq!(
            result.map_err(|r| r.code()),
            Err(expected),
            "{expected}: {result:?}"
        );
        assert_eq!(pool.len(), 1, "a refusal changes nothing ({expected})");
    }
}

fn with_actions(key: &SigningKey, nonce: u64, actions: Vec<Action>) -> SignedTransaction {
    Transaction {
        chain_id: CHAIN,
        signer: key.verifying_key().to_bytes(),
        nonce,
        actions,
    }
    .sign(key)
}

#[test]
fn calls_are_checked_at_admission_and_proposals_keep_within_core_gas() {
    let alice = key(1);
    let view = View {
        gas_limit: Some(30),
        ..view_with(std::slice::from_ref(&alice))
    };
    let mut pool = Mempool::new(small());
    let call = |coprocessor, method| Action::Call {
        coprocessor,
        method,
        args: [0; 24],
    };
    let refused = |actions| {
        let tx = with_actions(&alice, NOW, actions);
        Mempool::new(small())
            .admit(tx.bytes(), NOW, &view)
            .unwrap_err()
    };
    assert_eq!(refused(vec![call(2, 1)]).code(), "coprocessor_inactive");
    assert_eq!(refused(vec![call(1, 7)]).code(), "unknown_method");
    let four = vec![call(1, 1); 4];
    assert_eq!(refused(four), Refusal::TooMuchGas { gas: 40, limit: 30 });
    // 20 + 10 fit a block; the third transaction waits for the next one.
    let txs = [
        with_actions(&alice, NOW, vec![call(1, 1); 2]),
        with_actions(&alice, NOW + 1, vec![call(1, 1)]),
        with_actions(&alice, NOW + 2, vec![call(1, 1)]),
    ];
    for tx in &txs {
        pool.admit(tx.bytes(), NOW, &view).unwrap();
    }
    let chosen: Vec<_> = pool
        .proposal(10, usize::MAX, &view)
        .iter()
        .map(|t| t.hash())
        .collect();
    assert_eq!(chosen, vec![txs[0].hash(), txs[1].hash()]);
}

#[test]
fn a_faucet_may_deposit_without_an_account_of_its_own() {
    let faucet = key(9);
    let view = View {
        faucet: Some(faucet.verifying_key().to_bytes()),
        ..View::default()
    };
    let deposit = Transaction {
        chain_id: CHAIN,
        signer: faucet.verifying_key().to_bytes(),
        nonce: NOW,
        actions: vec![Action::Deposit {
            account: 5,
            asset: 0,
            amount: 1,
        }],
    }
    .sign(&faucet);
    let mut pool = Mempool::new(small());
    assert!(pool.admit(deposit.bytes(), NOW, &view).is_ok());
}

#[test]
fn included_transactions_leave_and_their_replays_are_refused() {
    let alice = key(1);
    let mut view = view_with(std::slice::from_ref(&alice));
    let mut pool = Mempool::new(small());
    let first = order(&alice, NOW);
    let second = order(&alice, NOW + 1);
    pool.admit(first.bytes(), NOW, &view).unwrap();
    pool.admit(second.bytes(), NOW, &view).unwrap();
    let proposal = pool.proposal(1, usize::MAX, &view);
    assert_eq!(proposal.len(), 1);
    assert_eq!(proposal[0].hash(), first.hash(), "arrival order");
    view.execute(&[&first], NOW);
    let evicted = pool.on_block(&[&first], NOW, &view);
    assert!(evicted.is_empty());
    assert_eq!(pool.len(), 1);
    assert_eq!(
        pool.admit(first.bytes(), NOW, &view),
        Err(Refusal::Nonce(NonceError::Used(NOW)))
    );
}

/// A block from another validator's pool can use a nonce this pool holds (in another
/// transaction) or, with 64 higher nonces, push a pooled one below the account's remembered
/// floor: both pooled transactions are evicted with their reason, and the rest stays.
#[test]
fn a_foreign_block_evicts_what_its_nonces_made_unusable() {
    let alice = key(1);
    let mut view = view_with(std::slice::from_ref(&alice));
    let mut pool = Mempool::new(small());
    let (low, same, kept) = (NOW + 1, NOW + 100, NOW + 200);
    for nonce in [low, same, kept] {
        pool.admit(order(&alice, nonce).bytes(), NOW, &view)
            .unwrap();
    }
    let foreign: Vec<SignedTransaction> = std::iter::once(other_order(&alice, same))
        .chain((0..64).map(|i| other_order(&alice, NOW + 10 + i)))
        .collect();
    let refs: Vec<&SignedTransaction> = foreign.iter().collect();
    view.execute(&refs, NOW);
    let evicted = pool.on_block(&refs, NOW, &view);
    let reasons: Vec<(TxHash, Refusal)> = evicted.iter().map(|e| (e.hash, e.reason)).collect();
    assert_eq!(
        reasons,
        vec![
            (
                order(&alice, low).hash(),
                Refusal::Nonce(NonceError::BelowRemembered {
                    nonce: low,
                    // 65 nonces used, the 64 highest remembered: NOW + 10 is forgotten.
                    lowest: NOW + 11
                })
            ),
            (
                order(&alice, same).hash(),
                Refusal::Nonce(NonceError::Used(same))
            ),
        ]
    );
    assert_eq!(pool.len(), 1);
    assert!(pool.contains(&order(&alice, kept).hash()));
}

#[test]
fn signatures_of_pooled_transactions_are_not_verified_again() {
    let alice = key(1);
    let view = view_with(std::slice::from_ref(&alice));
    let mut pool = Mempool::new(small());
    let pooled = order(&alice, NOW);
    pool.admit(pooled.bytes(), NOW, &view).unwrap();
    // A forged copy with the pooled one's hash cannot exist; a transaction the pool never
    // saw is verified, and a bad one refused.
    let fresh = order(&alice, NOW + 5);
    let mut forged_bytes = order(&alice, NOW + 6).bytes().to_vec();
    let last = forged_bytes.len() - 1;
    forged_bytes[last] ^= 1;
    let forged = SignedTransaction::decode(&forged_bytes).unwrap();
    let results = pool.check_block_signatures(&[&pooled, &fresh, &forged, &fresh, &forged]);
    assert_eq!(results[0], Ok(()));
    assert_eq!(results[1], Ok(()));
    assert!(results[2].is_err());
    // Repeats in one block get the same answers (a proposal may repeat a transaction; the
    // execution then refuses the second by its nonce).
    assert_eq!(results[3], Ok(()));
    assert!(results[4].is_err());
}

/// What a test run does to the pool.
#[derive(Debug, Clone)]
enum Op {
    /// A client sends a transaction of key `k` with nonce offset `n` (possibly forged).
    Send { k: u8, n: u64, forged: bool },
    /// A block takes up to `count` pooled transactions; time moves by `advance_ms`.
    Block { count: usize, advance_ms: u64 },
    /// A batch of sends at once.
    Batch(Vec<(u8, u64)>),
    /// A block proposed from another validator's pool: transactions this pool never saw
    /// (key `k`, nonce offset `n`), some with nonces it holds.
    Foreign(Vec<(u8, u64)>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0u64..30, proptest::bool::weighted(0.1))
            .prop_map(|(k, n, forged)| Op::Send { k, n, forged }),
        2 => (0usize..12, prop_oneof![Just(0u64), Just(1_000), Just(3 * 86_400_000)])
            .prop_map(|(count, advance_ms)| Op::Block { count, advance_ms }),
        1 => proptest::collection::vec((0u8..4, 0u64..30), 1..10).prop_map(Op::Batch),
        1 => proptest::collection::vec((0u8..4, 0u64..100), 1..70).prop_map(Op::Foreign),
    ]
}

fn signed(keys: &[SigningKey], k: u8, nonce: u64, forged: bool) -> Vec<u8> {
    let mut bytes = order(&keys[k as usize], nonce).bytes().to_vec();
    if forged {
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
    }
    bytes
}

/// What stays pooled after a block is still includable: the pool re-checks only what the
/// block's nonces and the window's edge can have made unusable, and misses nothing.
fn pooled_are_includable(pool: &Mempool, view: &View, now: u64) -> Result<(), TestCaseError> {
    for tx in pool.proposal(usize::MAX, usize::MAX, view) {
        let nonces = view.nonces(tx.tx.account()).cloned().unwrap_or_default();
        prop_assert_eq!(nonces.check(tx.tx.nonce, now), Ok(()));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn nothing_accepted_is_lost_and_limits_hold(ops in proptest::collection::vec(op(), 1..80)) {
        let keys: Vec<SigningKey> = (1..=4).map(key).collect();
        let mut view = view_with(&keys);
        let mut pool = Mempool::new(small());
        let mut now = NOW;
        let mut accepted: BTreeSet<TxHash> = BTreeSet::new();
        let mut included: BTreeSet<TxHash> = BTreeSet::new();
        let mut evicted: BTreeSet<TxHash> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Send { k, n, forged } => {
                    let bytes = signed(&keys, k, NOW + n, forged);
                    let len = pool.len();
                    match pool.admit(&bytes, now, &view) {
                        Ok(hash) => {
                            prop_assert!(!forged);
                            prop_assert!(accepted.insert(hash), "accepted twice");
                        }
                        Err(_) => prop_assert_eq!(pool.len(), len),
                    }
                }
                Op::Batch(items) => {
                    let bytes: Vec<Vec<u8>> =
                        items.iter().map(|&(k, n)| signed(&keys, k, NOW + n, false)).collect();
                    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
                    for hash in pool.admit_many(&refs, now, &view).into_iter().flatten() {
                        prop_assert!(accepted.insert(hash), "accepted twice");
                    }
                }
                Op::Foreign(items) => {
                    let block: Vec<SignedTransaction> =
                        items.iter().map(|&(k, n)| other_order(&keys[k as usize], NOW + n)).collect();
                    let refs: Vec<&SignedTransaction> = block.iter().collect();
                    view.execute(&refs, now);
                    for gone in pool.on_block(&refs, now, &view) {
                        prop_assert!(evicted.insert(gone.hash));
                        prop_assert!(matches!(gone.reason, Refusal::Nonce(_)));
                    }
                    pooled_are_includable(&pool, &view, now)?;
                }
                Op::Block { count, advance_ms } => {
                    let chosen = pool.proposal(count, usize::MAX, &view);
                    let refs: Vec<&SignedTransaction> = chosen.iter().map(|t| t.as_ref()).collect();
                    for result in pool.check_block_signatures(&refs) {
                        prop_assert_eq!(result, Ok(()));
                    }
                    view.execute(&refs, now);
                    let hashes: Vec<TxHash> = chosen.iter().map(|t| t.hash()).collect();
                    for hash in &hashes {
                        prop_assert!(included.insert(*hash), "included twice");
                    }
                    now += advance_ms;
                    for gone in pool.on_block(&refs, now, &view) {
                        prop_assert!(evicted.insert(gone.hash));
                        prop_assert!(matches!(gone.reason, Refusal::Nonce(_)));
                    }
                    pooled_are_includable(&pool, &view, now)?;
                }
            }
            let cfg = small();
            prop_assert!(pool.len() <= cfg.max_txs && pool.bytes() <= cfg.max_bytes);
        }
        // Every accepted transaction is accounted for, exactly once.
        let pooled: BTreeSet<TxHash> =
            pool.proposal(usize::MAX, usize::MAX, &view).iter().map(|t| t.hash()).collect();
        prop_assert!(pooled.is_disjoint(&included) && pooled.is_disjoint(&evicted));
        prop_assert!(included.is_disjoint(&evicted));
        let all: BTreeSet<TxHash> =
            pooled.union(&included).chain(evicted.iter()).copied().collect();
        prop_assert_eq!(all, accepted);
    }

    /// A batch gives, in order, what single admissions in the same order give.
    #[test]
    fn batch_admission_equals_single_admissions(
        items in proptest::collection::vec((0u8..4, 0u64..12, proptest::bool::weighted(0.2)), 1..30),
    ) {
        let keys: Vec<SigningKey> = (1..=4).map(key).collect();
        let view = view_with(&keys);
        let bytes: Vec<Vec<u8>> =
            items.iter().map(|&(k, n, f)| signed(&keys, k, NOW + n, f)).collect();
        let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let mut batched = Mempool::new(small());
        let mut single = Mempool::new(small());
        let one_by_one: Vec<_> = refs.iter().map(|b| single.admit(b, NOW, &view)).collect();
        prop_assert_eq!(batched.admit_many(&refs, NOW, &view), one_by_one);
        prop_assert_eq!(batched.len(), single.len());
    }
}

#[test]
fn a_pooled_transaction_says_when_it_was_admitted_and_whether_a_peer_forwarded_it() {
    let alice = key(1);
    let view = view_with(std::slice::from_ref(&alice));
    let mut pool = Mempool::new(small());
    let own = pool.admit(order(&alice, NOW).bytes(), NOW, &view).unwrap();
    let forwarded = pool
        .admit(order(&alice, NOW + 1).bytes(), NOW + 7, &view)
        .unwrap();
    pool.note_from_peer(&forwarded);
    let unknown = order(&alice, NOW + 2).hash();
    pool.note_from_peer(&unknown);
    let admission = |hash| {
        pool.pooled(hash)
            .map(|(tx, a)| (tx.hash(), a.at_ms, a.from_peer))
    };
    assert_eq!(admission(&own), Some((own, NOW, false)));
    assert_eq!(admission(&forwarded), Some((forwarded, NOW + 7, true)));
    assert_eq!(admission(&unknown), None);
}
