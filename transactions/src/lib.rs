//! Signed transactions: how a client asks the chain to act for its account.
//!
//! Every input that reaches a block of a multi-validator chain is one of these, signed by
//! the key of the account it acts for, and every validator checks it before it votes for a
//! block holding it: a proposer cannot act for anyone. One signature covers up to
//! [`MAX_ACTIONS`] actions (a whole quote update).
//!
//! - [`Action`]: one Core action, a fixed 32-byte record; [`Action::command`] turns it into
//!   the engine command for the signer's account.
//! - [`Transaction`] / [`SignedTransaction`]: chain id, signer key, nonce, actions and the
//!   ed25519 signature; one encoding per transaction (every byte checked on decode).
//! - [`verify`] / [`verify_batch`]: ZIP 215 signatures (batch and single agree), keys that
//!   are canonical and not of small order.
//! - [`BlockItem`]: what a block lists: a Core transaction or an EVM transaction
//!   ([`EVM_ITEM_TAG`] then its EIP-2718 envelope).
//! - [`NonceSet`]: the replay rule (a time window and the account's remembered nonces).
//!
//! The byte format and the rules are specified in docs/transactions.md.

pub mod action;
pub mod item;
pub mod nonce;
pub mod tx;
pub mod verify;

pub use action::{oracle_command, Action, ActionError, ACTION_LEN, CALL_ARGS_LEN};
pub use item::{BlockItem, EvmItem, ItemError, EVM_ITEM_TAG, MAX_EVM_TX_LEN};
pub use nonce::{NonceError, NonceSet, NONCE_FUTURE_MS, NONCE_PAST_MS, REMEMBERED_NONCES};
pub use tx::{
    account_id_of, DecodeError, SignedTransaction, Transaction, TxHash, MAX_ACTIONS, MAX_TX_LEN,
    MIN_TX_LEN, SIGNING_DOMAIN, TX_VERSION,
};
pub use verify::{
    batch_valid, key_acceptable, verify, verify_batch, verify_batch_cached, CachedKey, KeyCache,
    SignatureError,
};
