//! EVM transactions in the pool: typed refusals for everything a block would refuse, the
//! sender's nonce chain and funds across pooled transactions, proposals within the gas
//! share in nonce order, and re-checks after a block.

use std::collections::HashMap;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, Bytes, Signature, TxKind, U256};
use evm::executor::{EvmConfig, SignedTx, TxError};
use k256::ecdsa::SigningKey;
use mempool::{EvmAccount, EvmRefusal, EvmView, Mempool, MempoolConfig};

const SHARE: u64 = 15_000_000;

struct View {
    config: EvmConfig,
    accounts: HashMap<Address, EvmAccount>,
}

impl EvmView for View {
    fn decode_evm(&self, envelope: &[u8]) -> Result<SignedTx, TxError> {
        let tx = SignedTx::decode(envelope, self.config.chain_id)?;
        tx.check_static(&self.config)?;
        Ok(tx)
    }

    fn evm_account(&self, address: Address) -> EvmAccount {
        self.accounts.get(&address).copied().unwrap_or_default()
    }

    fn evm_gas_share(&self) -> u64 {
        SHARE
    }
}

struct Wallet {
    key: SigningKey,
    address: Address,
}

impl Wallet {
    fn new(seed: u8) -> Wallet {
        let key = SigningKey::from_slice(&[seed; 32]).unwrap();
        let point = key.verifying_key().to_encoded_point(false);
        let address = Address::from_slice(&keccak256(&point.as_bytes()[1..])[12..]);
        Wallet { key, address }
    }

    fn tx(&self, nonce: u64, gas_limit: u64, value: u64) -> TxEip1559 {
        TxEip1559 {
            chain_id: EvmConfig::default().chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 1,
            to: TxKind::Call(Address::repeat_byte(9)),
            value: U256::from(value),
            access_list: Default::default(),
            input: Bytes::new(),
        }
    }

    fn sign(&self, tx: TxEip1559) -> Vec<u8> {
        let hash = tx.signature_hash();
        let (sig, recid) = self.key.sign_prehash_recoverable(hash.as_slice()).unwrap();
        TxEnvelope::from(tx.into_signed(Signature::from((sig, recid)))).encoded_2718()
    }

    fn raw(&self, nonce: u64) -> Vec<u8> {
        self.sign(self.tx(nonce, 100_000, 0))
    }
}

/// A pool and a view where wallets 1 and 2 hold 1 ether and wallet 3 is a contract.
fn setup() -> (Mempool, View) {
    let mut accounts = HashMap::new();
    for seed in [1, 2] {
        let balance = U256::from(10u64).pow(U256::from(18));
        accounts.insert(
            Wallet::new(seed).address,
            EvmAccount {
                nonce: 0,
                balance,
                has_code: false,
            },
        );
    }
    accounts.insert(
        Wallet::new(3).address,
        EvmAccount {
            nonce: 0,
            balance: U256::from(1u64) << 100,
            has_code: true,
        },
    );
    let view = View {
        config: EvmConfig::default(),
        accounts,
    };
    (Mempool::new(MempoolConfig::default()), view)
}

fn refused(result: Result<transactions::TxHash, EvmRefusal>) -> &'static str {
    result.expect_err("refused").code()
}

#[test]
fn everything_a_block_would_refuse_is_refused_with_a_type() {
    let (mut pool, view) = setup();
    let w = Wallet::new(1);
    assert!(pool.admit_evm(&w.raw(0), &view).is_ok());
    assert_eq!(refused(pool.admit_evm(&w.raw(0), &view)), "duplicate");
    assert_eq!(refused(pool.admit_evm(&[0x02, 0xc0], &view)), "malformed");
    // r = 0 recovers no key.
    let bad = Signature::new(U256::ZERO, U256::from(1u64), false);
    let raw = TxEnvelope::from(w.tx(1, 100_000, 0).into_signed(bad)).encoded_2718();
    assert_eq!(refused(pool.admit_evm(&raw, &view)), "bad_signature");
    let mut other_chain = w.tx(1, 100_000, 0);
    other_chain.chain_id += 1;
    assert_eq!(
        refused(pool.admit_evm(&w.sign(other_chain), &view)),
        "wrong_chain"
    );
    // The next nonce after the pooled one is 1: 2 is a gap, 0 is taken.
    assert_eq!(
        pool.admit_evm(&w.raw(2), &view),
        Err(EvmRefusal::Tx(TxError::Nonce {
            expected: 1,
            got: 2
        }))
    );
    let mut low_fee = w.tx(1, 100_000, 0);
    low_fee.max_fee_per_gas = 1;
    low_fee.max_priority_fee_per_gas = 1;
    assert_eq!(
        refused(pool.admit_evm(&w.sign(low_fee), &view)),
        "invalid_fee_or_gas"
    );
    assert_eq!(
        pool.admit_evm(&w.sign(w.tx(1, SHARE + 1, 0)), &view),
        Err(EvmRefusal::Tx(TxError::GasLimit {
            max: SHARE,
            got: SHARE + 1
        }))
    );
    // Funds cover the pooled transaction and this one together, or it is refused.
    let almost_all = 999_900_000_000_000_000u64; // 1 ether - 1e14 wei; each fee is 2e14
    assert_eq!(
        refused(pool.admit_evm(&w.sign(w.tx(1, 100_000, almost_all)), &view)),
        "insufficient_funds"
    );
    assert!(pool
        .admit_evm(
            &w.sign(w.tx(1, 100_000, almost_all - 3 * 10u64.pow(14))),
            &view
        )
        .is_ok());
    // A contract cannot send; an unknown account has nothing to pay with.
    assert_eq!(
        refused(pool.admit_evm(&Wallet::new(3).raw(0), &view)),
        "sender_not_eoa"
    );
    assert_eq!(
        refused(pool.admit_evm(&Wallet::new(4).raw(0), &view)),
        "insufficient_funds"
    );
    assert_eq!(pool.evm_len(), 2, "refusals changed nothing");
}

#[test]
fn proposals_take_arrival_order_within_the_gas_share() {
    let (mut pool, view) = setup();
    let (a, b) = (Wallet::new(1), Wallet::new(2));
    let items = [
        a.sign(a.tx(0, 6_000_000, 0)),
        b.sign(b.tx(0, 6_000_000, 0)),
        a.sign(a.tx(1, 6_000_000, 0)),
        b.raw(1),
    ];
    for raw in &items {
        pool.admit_evm(raw, &view).unwrap();
    }
    let proposal = pool.evm_proposal(100, 1 << 20, SHARE);
    let envelopes: Vec<&[u8]> = proposal.iter().map(|item| item.envelope()).collect();
    assert_eq!(
        envelopes,
        vec![&items[0][..], &items[1][..]],
        "the third does not fit: stop"
    );
    assert_eq!(pool.evm_proposal(1, 1 << 20, SHARE).len(), 1);
    assert_eq!(pool.evm_proposal(100, 1 << 20, u64::MAX).len(), 4);
}

#[test]
fn after_a_block_mined_and_unpayable_transactions_are_evicted_with_a_reason() {
    let (mut pool, mut view) = setup();
    let (a, b) = (Wallet::new(1), Wallet::new(2));
    let a0 = pool.admit_evm(&a.raw(0), &view).unwrap();
    let a1 = pool.admit_evm(&a.raw(1), &view).unwrap();
    let b0 = pool.admit_evm(&b.raw(0), &view).unwrap();
    let b1 = pool.admit_evm(&b.raw(1), &view).unwrap();
    // The block included a0; b's nonce 0 was used by a transaction from elsewhere, and b
    // spent almost everything.
    view.accounts.get_mut(&a.address).unwrap().nonce = 1;
    let b_account = view.accounts.get_mut(&b.address).unwrap();
    b_account.nonce = 1;
    b_account.balance = U256::from(1u64);
    let evicted = pool.on_evm_block(&[a0], &view);
    let reasons: Vec<_> = evicted.iter().map(|e| (e.hash, e.reason.code())).collect();
    assert_eq!(
        reasons,
        vec![(b0, "nonce_too_low"), (b1, "insufficient_funds")]
    );
    // Each names its Ethereum hash, sender and nonce (what eth_getTransactionByHash reports).
    let named: Vec<_> = evicted
        .iter()
        .map(|e| (e.eth_hash, e.sender, e.nonce))
        .collect();
    assert_eq!(
        named,
        vec![
            (keccak256(b.raw(0)), b.address, 0),
            (keccak256(b.raw(1)), b.address, 1)
        ]
    );
    assert_eq!(pool.evm_len(), 1);
    let left = pool.evm_proposal(10, 1 << 20, SHARE);
    assert_eq!(left[0].hash(), a1);
    // Found by Ethereum hash while pooled (eth_getTransactionByHash), counted per sender.
    assert_eq!(
        pool.evm_pooled_item(&keccak256(a.raw(1)))
            .map(|item| item.hash()),
        Some(a1)
    );
    assert!(
        pool.evm_pooled_item(&keccak256(a.raw(0))).is_none(),
        "included"
    );
    assert!(
        pool.evm_pooled_item(&keccak256(b.raw(1))).is_none(),
        "evicted"
    );
    assert_eq!(
        (pool.evm_pooled(&a.address), pool.evm_pooled(&b.address)),
        (1, 0)
    );
}
