//! Helpers shared by the executor's integration tests: initcode, addresses of secp256k1 keys
//! and signed EIP-1559 transactions.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, Signature, TxKind, U256};
use evm::executor::{EvmConfig, SignedTx};
use k256::ecdsa::SigningKey;

/// Initcode returning `runtime` (`CODECOPY(0, 12, len) RETURN(0, len)`, then the code).
pub fn deploy(runtime: &[u8]) -> Vec<u8> {
    let len = u8::try_from(runtime.len()).expect("short code");
    let mut init = vec![
        0x60, len, 0x60, 0x0c, 0x60, 0x00, 0x39, 0x60, len, 0x60, 0x00, 0xf3,
    ];
    init.extend_from_slice(runtime);
    init
}

/// The Ethereum address of `key`.
pub fn address_of(key: &SigningKey) -> Address {
    let point = key.verifying_key().to_encoded_point(false);
    Address::from_slice(&keccak256(&point.as_bytes()[1..])[12..])
}

/// An EIP-1559 transaction signed by `key` (gas limit 300,000, max fee 2 gwei).
pub fn signed(
    key: &SigningKey,
    nonce: u64,
    to: Option<Address>,
    value: u64,
    input: Vec<u8>,
) -> SignedTx {
    let chain_id = EvmConfig::default().chain_id;
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: 300_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1,
        to: to.map_or(TxKind::Create, TxKind::Call),
        value: U256::from(value),
        access_list: Default::default(),
        input: input.into(),
    };
    let (sig, recid) = key
        .sign_prehash_recoverable(tx.signature_hash().as_slice())
        .expect("signs");
    let envelope = TxEnvelope::from(tx.into_signed(Signature::from((sig, recid))));
    SignedTx::decode(&envelope.encoded_2718(), chain_id).expect("decodes")
}
