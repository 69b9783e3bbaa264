//! Development signing (docs/evm.md, "Development accounts"): the keys a development node
//! signs with for `eth_sendTransaction`, `eth_sign`, `personal_sign` and
//! `eth_signTypedData_v4`, and the filling of a transaction request (nonce, gas, fees) as
//! geth and anvil do. A shortcut for development chains only: a node configured without
//! development accounts holds none, and every signing method answers `unknown account`.

use crate::eth::{call_request, data, parse_bytes, parse_quantity, RpcError, SUGGESTED_TIP_WEI};
use crate::executor::CallRequest;
use alloy_consensus::{SignableTransaction, TxEip1559, TxEip2930, TxEnvelope, TxLegacy};
use alloy_dyn_abi::TypedData;
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{eip191_hash_message, keccak256, Address, Signature, TxKind, B256};
use k256::ecdsa::SigningKey;
use serde_json::Value;

/// The accounts a node signs for, in configuration order.
#[derive(Clone, Default)]
pub struct DevAccounts {
    accounts: Vec<(Address, SigningKey)>,
}

impl std::fmt::Debug for DevAccounts {
    /// The addresses only: the keys are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.accounts.iter().map(|(a, _)| a))
            .finish()
    }
}

/// The error of a signing method for an account the node holds no key of (geth's text,
/// then why).
pub fn unknown_account(account: Address) -> RpcError {
    RpcError::server(format!(
        "unknown account {account:#x}: this node signs only for its development accounts \
         (eth_accounts)"
    ))
}

/// The Ethereum address of a secp256k1 key (keccak256 of the public point, last 20 bytes).
pub fn address_of(key: &SigningKey) -> Address {
    let point = key.verifying_key().to_encoded_point(false);
    Address::from_slice(&keccak256(&point.as_bytes()[1..])[12..])
}

impl DevAccounts {
    /// The accounts of these secp256k1 secrets (none: a node that signs for no one).
    pub fn new(secrets: &[[u8; 32]]) -> Result<DevAccounts, String> {
        let accounts = secrets
            .iter()
            .map(|secret| {
                let key = SigningKey::from_slice(secret)
                    .map_err(|e| format!("development EVM key: {e}"))?;
                Ok((address_of(&key), key))
            })
            .collect::<Result<_, String>>()?;
        Ok(DevAccounts { accounts })
    }

    /// The addresses, in order (`eth_accounts`).
    pub fn addresses(&self) -> Vec<Address> {
        self.accounts.iter().map(|(a, _)| *a).collect()
    }

    /// The key of `account`, or `unknown account`.
    fn key(&self, account: Address) -> Result<&SigningKey, RpcError> {
        self.accounts
            .iter()
            .find(|(a, _)| *a == account)
            .map(|(_, key)| key)
            .ok_or_else(|| unknown_account(account))
    }

    /// Refuses an account the node holds no key of.
    pub fn check(&self, account: Address) -> Result<(), RpcError> {
        self.key(account).map(|_| ())
    }

    /// `account`'s signature of a 32-byte hash (low-s, as every Ethereum signer).
    pub fn sign_hash(&self, account: Address, hash: B256) -> Result<Signature, RpcError> {
        let (sig, recid) = self
            .key(account)?
            .sign_prehash_recoverable(hash.as_slice())
            .map_err(|e| RpcError::server(format!("signing failed: {e}")))?;
        Ok(Signature::from((sig, recid)))
    }

    /// `eth_sign` / `personal_sign`: the EIP-191 signature of `message`
    /// (`keccak256("\x19Ethereum Signed Message:\n" || len || message)`), as 65 bytes
    /// `r || s || v` with `v` 27 or 28.
    pub fn sign_message(&self, account: Address, message: &[u8]) -> Result<Value, RpcError> {
        let sig = self.sign_hash(account, eip191_hash_message(message))?;
        Ok(data(&sig.as_bytes()))
    }

    /// `eth_signTypedData_v4`: the signature of the EIP-712 digest of `typed` (a typed-data
    /// object, or a JSON string of one as MetaMask and ethers send it), 65 bytes as
    /// [`DevAccounts::sign_message`].
    pub fn sign_typed_data(&self, account: Address, typed: &Value) -> Result<Value, RpcError> {
        self.check(account)?;
        let sig = self.sign_hash(account, typed_data_hash(typed)?)?;
        Ok(data(&sig.as_bytes()))
    }

    /// `account`'s signed transaction as its EIP-2718 envelope (what
    /// `eth_sendRawTransaction` takes).
    pub fn sign_transaction(&self, account: Address, tx: UnsignedTx) -> Result<Vec<u8>, RpcError> {
        let envelope: TxEnvelope = match tx {
            UnsignedTx::Legacy(tx) => {
                let sig = self.sign_hash(account, tx.signature_hash())?;
                tx.into_signed(sig).into()
            }
            UnsignedTx::Eip2930(tx) => {
                let sig = self.sign_hash(account, tx.signature_hash())?;
                tx.into_signed(sig).into()
            }
            UnsignedTx::Eip1559(tx) => {
                let sig = self.sign_hash(account, tx.signature_hash())?;
                tx.into_signed(sig).into()
            }
        };
        Ok(envelope.encoded_2718())
    }
}

/// The EIP-712 signing digest of a typed-data object or of a JSON string holding one:
/// `keccak256(0x1901 || domainSeparator || hashStruct(message))`.
pub fn typed_data_hash(typed: &Value) -> Result<B256, RpcError> {
    let parsed: Result<TypedData, String> = match typed {
        Value::String(text) => serde_json::from_str(text).map_err(|e| e.to_string()),
        other => serde_json::from_value(other.clone()).map_err(|e| e.to_string()),
    };
    let typed = parsed.map_err(|e| RpcError::params(format!("typed data: {e}")))?;
    typed
        .eip712_signing_hash()
        .map_err(|e| RpcError::params(format!("typed data: {e}")))
}

/// The bytes of a message to sign: 0x-prefixed hex, or else the string's UTF-8 bytes (as
/// MetaMask's `personal_sign` accepts plain text).
pub fn message_bytes(v: Option<&Value>) -> Result<Vec<u8>, RpcError> {
    let text = v
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::params("expected the message (0x hex or text)"))?;
    if text.starts_with("0x") {
        return parse_bytes(&Value::String(text.to_string())).map(|b| b.to_vec());
    }
    Ok(text.as_bytes().to_vec())
}

/// An unsigned transaction of one of the types the chain takes.
#[derive(Clone, Debug, PartialEq)]
pub enum UnsignedTx {
    /// Legacy, EIP-155.
    Legacy(TxLegacy),
    /// EIP-2930 (access list, gas price).
    Eip2930(TxEip2930),
    /// EIP-1559 (fee cap and tip).
    Eip1559(TxEip1559),
}

/// An `eth_sendTransaction` object: the call fields and what a signer fills in.
#[derive(Clone, Debug, Default)]
pub struct TxRequest {
    /// `from`, `to`, `gas`, `value`, `data`/`input`, `accessList`.
    pub call: CallRequest,
    /// `nonce` (absent: the account's pending nonce).
    pub nonce: Option<u64>,
    /// `gasPrice` (legacy and EIP-2930).
    pub gas_price: Option<u128>,
    /// `maxFeePerGas`.
    pub max_fee: Option<u128>,
    /// `maxPriorityFeePerGas`.
    pub max_priority_fee: Option<u128>,
    /// `type` (0, 1 or 2).
    pub tx_type: Option<u8>,
    /// `chainId` (must be the chain's).
    pub chain_id: Option<u64>,
}

/// Parses an optional quantity field of `v` into `T`.
fn field<T: TryFrom<alloy_primitives::U256>>(v: &Value, name: &str) -> Result<Option<T>, RpcError> {
    match v.get(name).filter(|f| !f.is_null()) {
        None => Ok(None),
        Some(x) => T::try_from(parse_quantity(x)?)
            .map(Some)
            .map_err(|_| RpcError::params(format!("{name} too large"))),
    }
}

/// An `eth_sendTransaction` object; `from` is required.
pub fn tx_request(v: Option<&Value>) -> Result<TxRequest, RpcError> {
    let call = call_request(v)?;
    let v = v.expect("call_request checked it");
    if call.from.is_none() {
        return Err(RpcError::params("eth_sendTransaction needs from"));
    }
    Ok(TxRequest {
        call,
        nonce: field(v, "nonce")?,
        gas_price: field(v, "gasPrice")?,
        max_fee: field(v, "maxFeePerGas")?,
        max_priority_fee: field(v, "maxPriorityFeePerGas")?,
        tx_type: field(v, "type")?,
        chain_id: field(v, "chainId")?,
    })
}

/// What the node fills in: the nonce, the gas limit, the chain and its base fee.
#[derive(Clone, Copy, Debug)]
pub struct Filled {
    /// The nonce if the request has none.
    pub nonce: u64,
    /// The gas limit if the request has none (the node's estimate).
    pub gas: u64,
    /// The chain id.
    pub chain_id: u64,
    /// The (fixed) base fee, wei.
    pub base_fee: u64,
}

/// The transaction a request asks for, filled as geth does: a `gasPrice` (or `type` 0/1)
/// makes a legacy (EIP-2930 with an access list) transaction priced at `gasPrice` or
/// `eth_gasPrice`; otherwise EIP-1559 with tip `maxPriorityFeePerGas` or
/// [`SUGGESTED_TIP_WEI`] and cap `maxFeePerGas` or `2 x base fee + tip`. A `gasPrice` with
/// either EIP-1559 fee is refused, as geth refuses it.
pub fn fill_transaction(request: &TxRequest, filled: Filled) -> Result<UnsignedTx, RpcError> {
    if let Some(id) = request.chain_id.filter(|&id| id != filled.chain_id) {
        return Err(RpcError::params(format!(
            "chainId {id} is not this chain's ({})",
            filled.chain_id
        )));
    }
    if request.gas_price.is_some()
        && (request.max_fee.is_some() || request.max_priority_fee.is_some())
    {
        return Err(RpcError::params(
            "both gasPrice and (maxFeePerGas or maxPriorityFeePerGas) specified",
        ));
    }
    let call = &request.call;
    let nonce = request.nonce.unwrap_or(filled.nonce);
    let gas_limit = call.gas.unwrap_or(filled.gas);
    let to = call.to.map_or(TxKind::Create, TxKind::Call);
    let tip = u128::from(SUGGESTED_TIP_WEI);
    let legacy = request.gas_price.is_some() || matches!(request.tx_type, Some(0 | 1));
    if legacy {
        let gas_price = request
            .gas_price
            .unwrap_or(u128::from(filled.base_fee) + tip);
        if call.access_list.is_empty() && request.tx_type != Some(1) {
            return Ok(UnsignedTx::Legacy(TxLegacy {
                chain_id: Some(filled.chain_id),
                nonce,
                gas_price,
                gas_limit,
                to,
                value: call.value,
                input: call.data.clone(),
            }));
        }
        return Ok(UnsignedTx::Eip2930(TxEip2930 {
            chain_id: filled.chain_id,
            nonce,
            gas_price,
            gas_limit,
            to,
            value: call.value,
            access_list: call.access_list.clone(),
            input: call.data.clone(),
        }));
    }
    if let Some(other) = request.tx_type.filter(|&t| t != 2) {
        return Err(RpcError::params(format!(
            "type {other}: this chain takes types 0, 1 and 2"
        )));
    }
    let tip = request.max_priority_fee.unwrap_or(tip);
    let max_fee = request
        .max_fee
        .unwrap_or(2 * u128::from(filled.base_fee) + tip);
    Ok(UnsignedTx::Eip1559(TxEip1559 {
        chain_id: filled.chain_id,
        nonce,
        gas_limit,
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: tip,
        to,
        value: call.value,
        access_list: call.access_list.clone(),
        input: call.data.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The "Mail" example of EIP-712 (its reference implementation's test data).
    pub fn mail() -> Value {
        json!({
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"}
                ],
                "Person": [
                    {"name": "name", "type": "string"},
                    {"name": "wallet", "type": "address"}
                ],
                "Mail": [
                    {"name": "from", "type": "Person"},
                    {"name": "to", "type": "Person"},
                    {"name": "contents", "type": "string"}
                ]
            },
            "primaryType": "Mail",
            "domain": {
                "name": "Ether Mail",
                "version": "1",
                "chainId": 1,
                "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
            },
            "message": {
                "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
                "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
                "contents": "Hello, Bob!"
            }
        })
    }

    /// EIP-712's published digest of the Mail example (the EIP's `Example.js`:
    /// `0xbe609aee…`), from the object and from a JSON string of it.
    #[test]
    fn the_mail_example_hashes_to_the_eips_digest() {
        let expected: B256 = "0xbe609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
            .parse()
            .expect("hex");
        assert_eq!(typed_data_hash(&mail()).ok(), Some(expected));
        let text = Value::String(mail().to_string());
        assert_eq!(typed_data_hash(&text).ok(), Some(expected));
        let bad = typed_data_hash(&json!({"types": {}}));
        assert_eq!(bad.map_err(|e| e.code), Err(-32602));
    }

    /// The EIP's own key ("cow" = keccak256("cow")) signs the Mail example with the EIP's
    /// published signature (v 28, r 0x4355…, s 0x07299…), and the signer recovered from it
    /// is the account; an account without a key is refused.
    #[test]
    fn the_mail_signature_is_the_eips_and_recovers_the_signer() {
        let cow = keccak256(b"cow");
        let accounts = DevAccounts::new(&[cow.0]).expect("a key");
        let signer = accounts.addresses()[0];
        assert_eq!(
            signer,
            "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"
                .parse::<Address>()
                .expect("address")
        );
        let sig = accounts.sign_typed_data(signer, &mail()).expect("signs");
        let expected = "0x4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d\
                        07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b915621c";
        assert_eq!(sig, json!(expected));
        let stranger = Address::with_last_byte(1);
        let refused = accounts.sign_typed_data(stranger, &mail());
        assert!(refused.is_err_and(|e| e.message.starts_with("unknown account")));
    }

    /// `eth_sign`'s signature recovers to the signer under EIP-191's prefix (and not
    /// without it).
    #[test]
    fn a_message_signature_recovers_the_signer_under_eip_191() {
        let accounts = DevAccounts::new(&[[7; 32]]).expect("a key");
        let signer = accounts.addresses()[0];
        let sig = accounts.sign_message(signer, b"hello").expect("signs");
        let bytes = parse_bytes(&sig).expect("hex");
        let sig = Signature::from_raw(&bytes).expect("65 bytes");
        assert!(bytes[64] == 27 || bytes[64] == 28);
        let recovered = sig.recover_address_from_msg(b"hello").expect("recovers");
        assert_eq!(recovered, signer);
        let raw = sig.recover_address_from_prehash(&keccak256(b"hello"));
        assert_ne!(raw.ok(), Some(signer));
    }

    /// Filling as geth: EIP-1559 with the suggested tip and a cap of twice the base fee
    /// plus the tip; a `gasPrice` makes a legacy transaction, with an access list an
    /// EIP-2930 one; another chain id or type is refused.
    #[test]
    fn requests_are_filled_as_geth_fills_them() {
        let filled = Filled {
            nonce: 5,
            gas: 21_000,
            chain_id: 20056,
            base_fee: 1_000_000_000,
        };
        let from = json!("0x0000000000000000000000000000000000000001");
        let request = tx_request(Some(&json!({"from": from, "to": from}))).expect("parses");
        let Ok(UnsignedTx::Eip1559(tx)) = fill_transaction(&request, filled) else {
            panic!("EIP-1559 by default");
        };
        assert_eq!((tx.nonce, tx.gas_limit, tx.chain_id), (5, 21_000, 20056));
        assert_eq!(tx.max_priority_fee_per_gas, 1_000_000_000);
        assert_eq!(tx.max_fee_per_gas, 3_000_000_000);
        let priced = json!({"from": from, "gasPrice": "0x7", "nonce": "0x9", "gas": "0x5208"});
        let request = tx_request(Some(&priced)).expect("parses");
        let Ok(UnsignedTx::Legacy(tx)) = fill_transaction(&request, filled) else {
            panic!("legacy with a gas price");
        };
        assert_eq!((tx.gas_price, tx.nonce, tx.chain_id), (7, 9, Some(20056)));
        assert_eq!(tx.to, TxKind::Create);
        let listed = json!({"from": from, "gasPrice": "0x7",
            "accessList": [{"address": from, "storageKeys": []}]});
        let request = tx_request(Some(&listed)).expect("parses");
        assert!(matches!(
            fill_transaction(&request, filled),
            Ok(UnsignedTx::Eip2930(_))
        ));
        let other = tx_request(Some(&json!({"from": from, "chainId": "0x1"}))).expect("parses");
        assert!(fill_transaction(&other, filled).is_err());
        let blob = tx_request(Some(&json!({"from": from, "type": "0x3"}))).expect("parses");
        assert!(fill_transaction(&blob, filled).is_err());
        assert!(
            tx_request(Some(&json!({"to": from}))).is_err(),
            "from is required"
        );
        let both = json!({"from": from, "gasPrice": "0x7", "maxFeePerGas": "0x9"});
        let both = tx_request(Some(&both)).expect("parses");
        assert!(fill_transaction(&both, filled).is_err_and(|e| e.code == -32602));
    }
}
