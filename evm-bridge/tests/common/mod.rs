//! Shared test helpers: keys, signing, ABI, and a small Core genesis.
#![allow(dead_code)] // each test binary uses a different subset

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, Bytes, Signature, TxKind, U256};
use engine::{Command, Engine, EngineConfig, MarketSpec};
use evm_bridge::executor::EvmConfig;
use evm_bridge::system::{abi::*, selector};
use k256::ecdsa::SigningKey;

/// Core asset ids: 1 is the EVM's native token (quote), 2 the base asset.
pub const NATIVE: u32 = 1;
pub const BASE: u32 = 2;
pub const MARKET: u32 = 7;
/// A Core-only trader (not an EVM address).
pub const TAKER: u64 = 42;

/// A test key.
pub struct Wallet {
    pub key: SigningKey,
    pub address: Address,
}

impl Wallet {
    pub fn new(seed: u8) -> Wallet {
        let key = SigningKey::from_slice(&[seed; 32]).expect("valid key");
        let point = key.verifying_key().to_encoded_point(false);
        let address = Address::from_slice(&keccak256(&point.as_bytes()[1..])[12..]);
        Wallet { key, address }
    }

    fn sign(&self, hash: alloy_primitives::B256) -> Signature {
        let (sig, recid) = self.key.sign_prehash_recoverable(hash.as_slice()).unwrap();
        Signature::from((sig, recid))
    }

    /// A signed EIP-1559 transaction, EIP-2718 encoded.
    pub fn eip1559(
        &self,
        chain_id: u64,
        nonce: u64,
        to: Option<Address>,
        value: U256,
        input: Vec<u8>,
        gas_limit: u64,
    ) -> Vec<u8> {
        let tx = TxEip1559 {
            chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 100_000_000,
            to: to.map_or(TxKind::Create, TxKind::Call),
            value,
            access_list: Default::default(),
            input: Bytes::from(input),
        };
        let sig = self.sign(tx.signature_hash());
        TxEnvelope::from(tx.into_signed(sig)).encoded_2718()
    }

    /// A signed EIP-1559 transaction with the given fees (`max_fee`, `tip`, wei per gas).
    #[allow(clippy::too_many_arguments)] // mirrors the transaction's fields
    pub fn eip1559_with_fees(
        &self,
        chain_id: u64,
        nonce: u64,
        to: Option<Address>,
        input: Vec<u8>,
        gas_limit: u64,
        max_fee: u128,
        tip: u128,
    ) -> Vec<u8> {
        let tx = TxEip1559 {
            chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
            to: to.map_or(TxKind::Create, TxKind::Call),
            value: U256::ZERO,
            access_list: Default::default(),
            input: Bytes::from(input),
        };
        let sig = self.sign(tx.signature_hash());
        TxEnvelope::from(tx.into_signed(sig)).encoded_2718()
    }

    /// A signed legacy EIP-155 transaction.
    pub fn legacy(
        &self,
        chain_id: Option<u64>,
        nonce: u64,
        to: Option<Address>,
        value: U256,
        input: Vec<u8>,
    ) -> Vec<u8> {
        let tx = TxLegacy {
            chain_id,
            nonce,
            gas_price: 1_500_000_000,
            gas_limit: 500_000,
            to: to.map_or(TxKind::Create, TxKind::Call),
            value,
            input: Bytes::from(input),
        };
        let sig = self.sign(tx.signature_hash());
        TxEnvelope::from(tx.into_signed(sig)).encoded_2718()
    }
}

/// Calldata: selector of `signature` then words.
pub fn calldata(signature: &str, words: &[[u8; 32]]) -> Vec<u8> {
    let mut out = selector(signature).to_vec();
    for w in words {
        out.extend_from_slice(w);
    }
    out
}

/// The i-th 32-byte word of return data as i128 (sign-extended from the low 16 bytes).
pub fn word_at(data: &[u8], i: usize) -> i128 {
    i128::from_be_bytes(data[i * 32 + 16..i * 32 + 32].try_into().unwrap())
}

/// The MarketMaker fixture: (creation bytecode, ABI JSON).
pub fn market_maker() -> (Vec<u8>, serde_json::Value) {
    let json: serde_json::Value =
        serde_json::from_str(include_str!("../../contracts/MarketMaker.json")).unwrap();
    let code = json["bytecode"].as_str().unwrap();
    let bytes = alloy_primitives::hex::decode(code).unwrap();
    (bytes, json["abi"].clone())
}

/// Creation code + `abi.encode(uint32 market)`.
pub fn market_maker_deploy(market: u32) -> Vec<u8> {
    let (mut code, _) = market_maker();
    code.extend_from_slice(&word_u64(market as u64));
    code
}

/// An engine with the native asset, a base asset, one spot market, and a Core-only taker
/// holding both.
pub fn core_genesis() -> Engine {
    let mut engine = Engine::new(EngineConfig {
        max_resting_orders: 4096,
        max_open_orders_per_account: 256,
    });
    let mut out = Vec::new();
    for command in [
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
        Command::Deposit {
            account: TAKER,
            asset: BASE,
            amount: 1_000,
        },
        Command::Deposit {
            account: TAKER,
            asset: NATIVE,
            amount: 100_000,
        },
    ] {
        engine.step(&command, &mut out);
    }
    assert!(
        !out.iter()
            .any(|e| matches!(e, engine::Event::Rejected { .. })),
        "{out:?}"
    );
    engine
}

pub fn config() -> EvmConfig {
    EvmConfig::default()
}

/// 1 ether.
pub fn ether(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18))
}
