//! Helpers shared by the execution crate's EVM tests: Core keys and signed Core
//! transactions, an EVM wallet, ABI words, the MarketMaker fixture, and a chain with market
//! 7 (base 2 / quote 1 = the EVM's native token) stepped through `validate_block` then
//! `execute_block`.
#![allow(dead_code)] // each test binary uses a different subset

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, Bytes, Signature, TxKind, B256, U256};
use ed25519_dalek::SigningKey;
use engine::{
    Command, EngineConfig, Event, MarketSpec, PerpSpec, SelfTradePrevention, Side, TimeInForce,
};
use execution::evm::executor::{CallOutcome, CallRequest, EvmConfig};
use execution::evm::system::{abi::*, selector};
use execution::{BlockItem, ConsensusState, EvmGenesis, Executed, Execution, ExecutionConfig};
use k256::ecdsa::SigningKey as EvmKey;
use transactions::{account_id_of, Action, EvmItem, Transaction};

/// The chain's id.
pub const CHAIN: [u8; 32] = [5; 32];
/// Genesis time (ms); block `h` runs at `T + h`.
pub const T: u64 = 1_800_000_000_000;
/// The EVM's native token on Core (the market's quote).
pub const NATIVE: u32 = 1;
/// The market's base asset.
pub const BASE: u32 = 2;
/// The spot market base 2 / quote 1.
pub const MARKET: u32 = 7;
/// The faucet's key number.
pub const FAUCET: u8 = 9;
/// The Core trader's key number (holds 100,000 of both assets at genesis).
pub const TRADER: u8 = 1;

/// Core key number `n`.
pub fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// The Core account of key `n`.
pub fn account(n: u8) -> u64 {
    account_id_of(&key(n).verifying_key().to_bytes())
}

/// A Core transaction of key `n`, signed, as a block item.
pub fn core_tx(n: u8, nonce: u64, actions: Vec<Action>) -> BlockItem {
    BlockItem::Core(
        Transaction {
            chain_id: CHAIN,
            signer: key(n).verifying_key().to_bytes(),
            nonce,
            actions,
        }
        .sign(&key(n)),
    )
}

/// An EVM key, its address and its next nonce.
pub struct Wallet {
    /// The secp256k1 key.
    pub key: EvmKey,
    /// Its address.
    pub address: Address,
    /// The nonce of its next transaction.
    pub nonce: u64,
}

impl Wallet {
    /// The wallet of key `[seed; 32]`.
    pub fn new(seed: u8) -> Wallet {
        let key = EvmKey::from_slice(&[seed; 32]).expect("valid key");
        let point = key.verifying_key().to_encoded_point(false);
        let address = Address::from_slice(&keccak256(&point.as_bytes()[1..])[12..]);
        Wallet {
            key,
            address,
            nonce: 0,
        }
    }

    /// An unsigned EIP-1559 transaction at the wallet's nonce (3,000,000 gas).
    pub fn unsigned(&self, to: Option<Address>, value: U256, input: Vec<u8>) -> TxEip1559 {
        TxEip1559 {
            chain_id: EvmConfig::default().chain_id,
            nonce: self.nonce,
            gas_limit: 3_000_000,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 100_000_000,
            to: to.map_or(TxKind::Create, TxKind::Call),
            value,
            access_list: Default::default(),
            input: Bytes::from(input),
        }
    }

    /// `tx` signed by this wallet, EIP-2718 encoded.
    pub fn sign(&self, tx: TxEip1559) -> Vec<u8> {
        let hash: B256 = tx.signature_hash();
        let (sig, recid) = self.key.sign_prehash_recoverable(hash.as_slice()).unwrap();
        TxEnvelope::from(tx.into_signed(Signature::from((sig, recid)))).encoded_2718()
    }

    /// The next transaction as a block item.
    pub fn item(&mut self, to: Option<Address>, value: U256, input: Vec<u8>) -> BlockItem {
        self.item_with_gas(to, value, input, 3_000_000)
    }

    /// The next transaction, with gas limit `gas`, as a block item.
    pub fn item_with_gas(
        &mut self,
        to: Option<Address>,
        value: U256,
        input: Vec<u8>,
        gas: u64,
    ) -> BlockItem {
        let mut tx = self.unsigned(to, value, input);
        tx.gas_limit = gas;
        let raw = self.sign(tx);
        self.nonce += 1;
        BlockItem::Evm(EvmItem::new(&raw))
    }
}

/// `n` ether in wei.
pub fn ether(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18))
}

/// `n` Core units of the native token in wei.
pub fn units(n: u64) -> U256 {
    U256::from(n) * EvmConfig::default().wei_per_unit
}

/// Calldata: the selector of `signature`, then `words`.
pub fn calldata(signature: &str, words: &[[u8; 32]]) -> Vec<u8> {
    let mut out = selector(signature).to_vec();
    for w in words {
        out.extend_from_slice(w);
    }
    out
}

/// The `i`-th 32-byte word of return data as i128 (its low 16 bytes).
pub fn word_at(data: &[u8], i: usize) -> i128 {
    i128::from_be_bytes(data[i * 32 + 16..i * 32 + 32].try_into().unwrap())
}

/// The MarketMaker fixture's creation code with `abi.encode(uint32 market)`.
pub fn market_maker_deploy() -> Vec<u8> {
    let json: serde_json::Value = serde_json::from_str(include_str!(
        "../../../evm-bridge/contracts/MarketMaker.json"
    ))
    .unwrap();
    let code = json["bytecode"].as_str().unwrap();
    let mut bytes = alloy_primitives::hex::decode(code).unwrap();
    bytes.extend_from_slice(&word_u64(MARKET as u64));
    bytes
}

/// Core genesis: the two assets, market 7, and 100,000 of each to the trader (key 1).
pub fn genesis() -> Vec<Command> {
    let mut genesis = vec![
        Command::CreateAsset { asset: NATIVE },
        Command::CreateAsset { asset: BASE },
        Command::CreateMarket(MarketSpec {
            market: MARKET,
            base: BASE,
            quote: NATIVE,
            base_units_per_lot: 1,
            quote_units_per_tick_lot: 1,
            min_lots: 1,
            max_price_ticks: 1 << 20,
            maker_fee_bps: 0,
            taker_fee_bps: 0,
        }),
    ];
    for asset in [NATIVE, BASE] {
        genesis.push(Command::Deposit {
            account: account(TRADER),
            asset,
            amount: 100_000,
        });
    }
    genesis
}

/// The chain of [`config`] after [`genesis`].
pub fn chain() -> Execution {
    Execution::new(config(), &genesis())
}

/// The chain's parameters (also what a snapshot is restored with): key 9 is the faucet;
/// EVM wallet 1 holds 100 ether.
pub fn config() -> ExecutionConfig {
    ExecutionConfig {
        chain_id: CHAIN,
        faucets: vec![key(FAUCET).verifying_key().to_bytes()],
        feeders: Vec::new(),
        engine: EngineConfig::default(),
        evm: EvmGenesis {
            native_asset: NATIVE,
            alloc: vec![(Wallet::new(1).address, ether(100))],
            timestamp: T / 1000,
            ..EvmGenesis::default()
        },
        funding_interval_s: 0,
        core_gas_limit: execution::DEFAULT_CORE_GAS_LIMIT,
    }
}

/// Every Core signature of `items` passed.
pub fn signatures_of(items: &[BlockItem]) -> Vec<Result<(), transactions::SignatureError>> {
    vec![Ok(()); items.iter().filter(|i| i.core().is_some()).count()]
}

/// Validates and executes `items` at block time `T + height` on every execution given,
/// checking that they agree on every root and that the EVM root is the from-scratch one.
pub fn step(chains: &mut [&mut Execution], items: &[BlockItem]) -> Executed {
    let signatures = signatures_of(items);
    let mut results: Vec<Executed> = Vec::new();
    for chain in chains.iter_mut() {
        let time = T + chain.height() + 1;
        let block = chain
            .validate_block(time, items, &signatures)
            .expect("a valid block");
        results.push(
            chain
                .execute_block(block, &genesis_consensus(), |_, _| {})
                .unwrap(),
        );
        assert_eq!(chain.evm_root(), chain.evm_root_from_scratch());
    }
    let roots: Vec<_> = chains.iter_mut().map(|c| c.roots()).collect();
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "{roots:?}");
    assert!(results.windows(2).all(|w| w[0].root == w[1].root));
    results.remove(0)
}

/// Validates and executes `items` on one chain at `T + height`, returning the block and
/// every engine event of its Core block (Core transactions and CoreWriter actions).
pub fn step_events(chain: &mut Execution, items: &[BlockItem]) -> (Executed, Vec<Event>) {
    let time = T + chain.height() + 1;
    let block = chain
        .validate_block(time, items, &signatures_of(items))
        .expect("a valid block");
    let mut events = Vec::new();
    let out = chain
        .execute_block(block, &genesis_consensus(), |_, event| events.push(*event))
        .unwrap();
    assert!(out.evm.dropped.is_empty(), "{:?}", out.evm.dropped);
    (out, events)
}

/// A read-only call of `signature()` on `to` against the head; panics if it fails.
pub fn view(chain: &mut Execution, to: Address, signature: &str) -> Vec<u8> {
    view_with(chain, to, signature, &[])
}

/// A read-only call of `signature` with `words` on `to` against the head.
pub fn view_with(
    chain: &mut Execution,
    to: Address,
    signature: &str,
    words: &[[u8; 32]],
) -> Vec<u8> {
    let request = CallRequest {
        to: Some(to),
        data: calldata(signature, words).into(),
        ..Default::default()
    };
    match chain.call(&request) {
        CallOutcome::Success { output, .. } => output.to_vec(),
        other => panic!("{signature} failed: {other:?}"),
    }
}

/// An IOC limit order on market 7.
pub fn place(oid: u64, side: Side, price: i64, qty: i64) -> Action {
    Action::Place {
        market: MARKET,
        oid,
        side,
        price: Some(price),
        qty,
        tif: TimeInForce::Ioc,
        stp: SelfTradePrevention::CancelMaker,
        reduce_only: false,
    }
}

/// The consensus layer of a chain without one: the genesis registry, a zero digest.
pub fn genesis_consensus() -> ConsensusState {
    ConsensusState::genesis()
}

/// A plain perp market (1, settled in asset 2): 10x, one margin tier (10% / 5%), wide
/// band. Tests set `market` and `collateral` to theirs.
pub fn perp_spec() -> PerpSpec {
    let mut tiers = [engine::MarginTier::default(); engine::MAX_MARGIN_TIERS];
    tiers[0] = engine::MarginTier {
        notional_up_to: i64::MAX,
        imr_ppb: 100_000_000,
        mmr_ppb: 50_000_000,
    };
    PerpSpec {
        market: 1,
        collateral: 2,
        quote_units_per_tick_lot: 1,
        min_lots: 1,
        max_price_ticks: 1 << 20,
        maker_fee_bps: 0,
        taker_fee_bps: 0,
        max_leverage: 10,
        tiers,
        tier_count: 1,
        open_interest_cap_lots: 1 << 30,
        price_band_ppb: 500_000_000,
        interest_ppb: 0,
        funding_cap_ppb: 10_000_000,
        impact_notional: 1_000,
        liquidation_chunk_notional: 1 << 40,
        liquidation_fee_ppb: 0,
    }
}
