//! The validator transaction port and block payloads of signed transactions
//! (docs/transactions.md, "Submitting to a validator"): wire formats other implementations
//! must speak, apart from the node that serves them.
//!
//! A client sends frames `u32 length (LE) || signed transaction`; the validator answers each
//! transaction with 48-byte [`Notice`]s: `admitted` or `refused` at once, later `finalized`
//! (its block is decided by more than 2/3 of the stake and durable on this validator) or
//! `evicted` (it can no longer be included). A block's payload is the list of its
//! transactions: `u32 count || (u32 length || transaction) * count`.
//!
//! - [`compact`]: a proposal's payload with the transactions peers hold named by hash.

use mempool::Refusal;
use transactions::{SignedTransaction, TxHash, MAX_TX_LEN, MIN_TX_LEN};

pub mod compact;

/// Bytes of one notice.
pub const NOTICE_LEN: usize = 48;

/// What a notice says about a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeKind {
    /// Taken into this validator's pool (and forwarded to the others).
    Admitted = 1,
    /// Not taken; `code` says why. Nothing happened.
    Refused = 2,
    /// In a block decided by more than 2/3 of the stake, durable on this validator, and
    /// executed (`height` is the block).
    Finalized = 4,
    /// Left the pool without being included; `code` says why (its nonce was used or fell
    /// out of the window). Nothing happened.
    Evicted = 5,
}

/// One notice to a client: kind, reason code, transaction hash, height.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notice {
    /// What happened.
    pub kind: NoticeKind,
    /// Why (refused, evicted): [`refusal_code`]; 0 otherwise.
    pub code: u8,
    /// The transaction (for bytes that are not a transaction: BLAKE3 of the bytes).
    pub hash: TxHash,
    /// The block (finalized), else 0.
    pub height: u64,
}

/// Refusal code of a frame longer than [`MAX_TX_LEN`] or shorter than [`MIN_TX_LEN`]: the
/// validator closes the connection after this notice.
pub const CODE_FRAME_LENGTH: u8 = 15;
/// Refusal code of a transaction over its connection's rate (`node::rate`): nothing was
/// checked or done; send it again later.
pub const CODE_RATE_LIMITED: u8 = 16;
/// Refusal code of a transaction over its account's rate (`node::rate`, all the account's
/// connections together): nothing was checked or done; send it again later.
pub const CODE_ACCOUNT_RATE_LIMITED: u8 = 20;

/// The one-byte code of a refusal on the port (docs/transactions.md).
pub fn refusal_code(refusal: &Refusal) -> u8 {
    match refusal.code() {
        "malformed" => 1,
        "wrong_chain" => 2,
        "bad_key" => 3,
        "bad_signature" => 4,
        "nonce_stale" => 5,
        "nonce_future" => 6,
        "nonce_used" => 7,
        "nonce_below_remembered" => 8,
        "nonce_pending" => 9,
        "unknown_account" => 10,
        "not_permitted" => 11,
        "duplicate" => 12,
        "pool_full" => 13,
        "account_limit" => 14,
        "coprocessor_inactive" => 17,
        "unknown_method" => 18,
        "too_much_gas" => 19,
        _ => 0,
    }
}

/// The name of a code from [`refusal_code`] (or [`CODE_FRAME_LENGTH`]).
pub fn code_name(code: u8) -> &'static str {
    match code {
        1 => "malformed",
        2 => "wrong_chain",
        3 => "bad_key",
        4 => "bad_signature",
        5 => "nonce_stale",
        6 => "nonce_future",
        7 => "nonce_used",
        8 => "nonce_below_remembered",
        9 => "nonce_pending",
        10 => "unknown_account",
        11 => "not_permitted",
        12 => "duplicate",
        13 => "pool_full",
        14 => "account_limit",
        17 => "coprocessor_inactive",
        18 => "unknown_method",
        19 => "too_much_gas",
        CODE_FRAME_LENGTH => "frame_length",
        CODE_RATE_LIMITED => "rate_limited",
        CODE_ACCOUNT_RATE_LIMITED => "account_rate_limited",
        _ => "none",
    }
}

impl Notice {
    /// The 48 bytes: kind u8, code u8, 6 zero bytes, hash (32), height u64 LE.
    pub fn encode(&self) -> [u8; NOTICE_LEN] {
        let mut out = [0u8; NOTICE_LEN];
        out[0] = self.kind as u8;
        out[1] = self.code;
        out[8..40].copy_from_slice(&self.hash.0);
        out[40..48].copy_from_slice(&self.height.to_le_bytes());
        out
    }

    /// Reads a notice; `None` for an unknown kind.
    pub fn decode(bytes: &[u8; NOTICE_LEN]) -> Option<Notice> {
        let kind = match bytes[0] {
            1 => NoticeKind::Admitted,
            2 => NoticeKind::Refused,
            4 => NoticeKind::Finalized,
            5 => NoticeKind::Evicted,
            _ => return None,
        };
        Some(Notice {
            kind,
            code: bytes[1],
            hash: TxHash(bytes[8..40].try_into().expect("32 bytes")),
            height: u64::from_le_bytes(bytes[40..48].try_into().expect("8 bytes")),
        })
    }
}

/// Whether a request frame's declared length is acceptable.
pub fn frame_length_ok(len: usize) -> bool {
    (MIN_TX_LEN..=MAX_TX_LEN).contains(&len)
}

/// First byte of a forwarded action in a frame-3 list (Core transactions start with their
/// version, EVM items with `0xEE`).
pub const ACTION_ITEM_TAG: u8 = 0xAC;
/// Longest action encoding accepted.
pub const MAX_ACTION_LEN: usize = 1024;

/// Whether a listed block item's length is acceptable: a Core transaction's as a request
/// frame's, an EVM item's (`0xEE || envelope`) up to `1 + MAX_EVM_TX_LEN`, a forwarded chain
/// action's (`0xAC || action`, `node::chain_actions`) up to `1 + MAX_ACTION_LEN`.
pub fn item_length_ok(item: &[u8]) -> bool {
    match item.first() {
        Some(&transactions::EVM_ITEM_TAG) => {
            (2..=1 + transactions::MAX_EVM_TX_LEN).contains(&item.len())
        }
        Some(&ACTION_ITEM_TAG) => (2..=1 + MAX_ACTION_LEN).contains(&item.len()),
        _ => frame_length_ok(item.len()),
    }
}

/// A request frame for `tx`.
pub fn request_frame(tx: &SignedTransaction) -> Vec<u8> {
    let mut frame = Vec::with_capacity(4 + tx.bytes().len());
    frame.extend_from_slice(&(tx.bytes().len() as u32).to_le_bytes());
    frame.extend_from_slice(tx.bytes());
    frame
}

/// A block payload (or a forwarded batch): `u32 count || (u32 length || bytes) * count`.
pub fn encode_list<'a>(txs: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(txs.len() as u32).to_le_bytes());
    for bytes in txs {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// Splits a list written by [`encode_list`] into its items (each of an acceptable length:
/// [`item_length_ok`]),
/// at most `max_items`; `None` if malformed or longer.
pub fn decode_list(bytes: &[u8], max_items: usize) -> Option<Vec<&[u8]>> {
    let count = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    if count > max_items {
        return None;
    }
    let mut items = Vec::with_capacity(count);
    let mut at = 4;
    for _ in 0..count {
        let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let item = bytes.get(at + 4..at + 4 + len)?;
        if !item_length_ok(item) {
            return None;
        }
        items.push(item);
        at += 4 + len;
    }
    (at == bytes.len()).then_some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip() {
        let notice = Notice {
            kind: NoticeKind::Finalized,
            code: 0,
            hash: TxHash([9; 32]),
            height: 77,
        };
        assert_eq!(Notice::decode(&notice.encode()), Some(notice));
        let mut bad = notice.encode();
        bad[0] = 3;
        assert_eq!(Notice::decode(&bad), None);
    }

    #[test]
    fn lists_round_trip_and_refuse_damage() {
        let a = vec![1u8; MIN_TX_LEN];
        let b = vec![2u8; MIN_TX_LEN + 32];
        let list = encode_list([a.as_slice(), b.as_slice()].into_iter());
        assert_eq!(
            decode_list(&list, 2),
            Some(vec![a.as_slice(), b.as_slice()])
        );
        assert_eq!(decode_list(&list, 1), None, "too many");
        assert_eq!(decode_list(&list[..list.len() - 1], 2), None, "cut");
        let mut longer = list.clone();
        longer.push(0);
        assert_eq!(decode_list(&longer, 2), None, "trailing bytes");
        assert_eq!(decode_list(&[0, 0, 0, 0], 0), Some(vec![]));
    }
}
