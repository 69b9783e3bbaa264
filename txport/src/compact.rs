//! A proposal's payload in compact form (docs/consensus.md, "Compact proposals"): the
//! list of block items with each Core transaction the peers already hold named by its hash
//! instead of carried whole. The consensus host sends it in place of the payload and peers
//! rebuild the payload from their pools; the block, its id and the block file are the
//! full payload's.
//!
//! ```text
//! compact = count u32 LE, then count entries:
//!   0x00 len u32 LE, len bytes   an item, whole (as in the payload)
//!   0x01 hash [32]               a Core transaction: BLAKE3 of its bytes (its TxHash)
//! ```
//!
//! Rebuilt, it is exactly [`crate::encode_list`] of the items in order.

use transactions::TxHash;

/// Entry tag: an item carried whole.
const WHOLE: u8 = 0;
/// Entry tag: a Core transaction named by its hash.
const NAMED: u8 = 1;
/// A Core transaction this validator's own client sent and it admitted at least this long
/// ago (ms) is named rather than carried: its forward has had time to reach the peers.
pub const NAME_AFTER_MS: u64 = 5;

/// Whether a proposal made at `now_ms` names a pooled Core transaction admitted as
/// `admission`: if a peer forwarded it (that peer sent it to every validator at once) or
/// it was admitted [`NAME_AFTER_MS`] or more before.
pub fn named(admission: mempool::Admission, now_ms: u64) -> bool {
    admission.from_peer || admission.at_ms + NAME_AFTER_MS <= now_ms
}

/// The compact form of the payload of `items`, naming those `named` gives a hash for;
/// `None` if it names none (the payload then goes whole).
pub fn compact(items: &[&[u8]], named: impl Fn(usize) -> Option<TxHash>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(4 + items.len() * 33);
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    let mut any = false;
    for (i, item) in items.iter().enumerate() {
        match named(i) {
            Some(hash) => {
                any = true;
                out.push(NAMED);
                out.extend_from_slice(&hash.0);
            }
            None => {
                out.push(WHOLE);
                out.extend_from_slice(&(item.len() as u32).to_le_bytes());
                out.extend_from_slice(item);
            }
        }
    }
    any.then_some(out)
}

/// The payload `compact` stands for, with named transactions' bytes from `lookup`; `None`
/// if one is not held, the form is malformed, or it has more than `max_items` entries.
pub fn expand<'a>(
    compact: &[u8],
    max_items: usize,
    lookup: impl Fn(&TxHash) -> Option<&'a [u8]>,
) -> Option<Vec<u8>> {
    let count = u32::from_le_bytes(compact.get(..4)?.try_into().ok()?) as usize;
    if count > max_items {
        return None;
    }
    let mut items: Vec<&[u8]> = Vec::with_capacity(count);
    let mut at = 4;
    for _ in 0..count {
        match *compact.get(at)? {
            NAMED => {
                let hash = TxHash(compact.get(at + 1..at + 33)?.try_into().ok()?);
                items.push(lookup(&hash)?);
                at += 33;
            }
            WHOLE => {
                let len = u32::from_le_bytes(compact.get(at + 1..at + 5)?.try_into().ok()?);
                let end = (at + 5).checked_add(len as usize)?;
                items.push(compact.get(at + 5..end)?);
                at = end;
            }
            _ => return None,
        }
    }
    (at == compact.len()).then(|| crate::encode_list(items.into_iter()))
}

/// The items of forwarded frames (`FRAME_APP`, then a list of at most `max_items` block
/// items) by their hash.
pub fn index_items<'a>(
    frames: impl IntoIterator<Item = &'a std::sync::Arc<[u8]>>,
    max_items: usize,
) -> std::collections::HashMap<TxHash, &'a [u8]> {
    frames
        .into_iter()
        .filter_map(|frame| crate::decode_list(frame.get(1..)?, max_items))
        .flatten()
        .map(|item| (TxHash(*blake3::hash(item).as_bytes()), item))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hash(bytes: &[u8]) -> TxHash {
        TxHash(*blake3::hash(bytes).as_bytes())
    }

    #[test]
    fn a_compact_payload_rebuilds_the_payload_from_a_pool_that_holds_its_named_items() {
        let items: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 50 + usize::from(i)]).collect();
        let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
        let payload = crate::encode_list(refs.iter().copied());
        // Items 1, 3 and 4 named; the pool holds them.
        let named = |i: usize| [1, 3, 4].contains(&i).then(|| hash(refs[i]));
        let form = compact(&refs, named).expect("names some");
        assert!(form.len() < payload.len());
        let pool: HashMap<TxHash, &[u8]> = [1, 3, 4].map(|i| (hash(refs[i]), refs[i])).into();
        let rebuilt = expand(&form, 6, |h| pool.get(h).copied());
        assert_eq!(rebuilt.as_deref(), Some(payload.as_slice()));
        // A pool without item 3, too many entries, a cut or padded form: no payload.
        let short: HashMap<TxHash, &[u8]> = [1, 4].map(|i| (hash(refs[i]), refs[i])).into();
        assert_eq!(expand(&form, 6, |h| short.get(h).copied()), None);
        assert_eq!(expand(&form, 5, |h| pool.get(h).copied()), None);
        assert_eq!(
            expand(&form[..form.len() - 1], 6, |h| pool.get(h).copied()),
            None
        );
        let mut padded = form.clone();
        padded.push(0);
        assert_eq!(expand(&padded, 6, |h| pool.get(h).copied()), None);
        let mut bad_tag = form.clone();
        bad_tag[4] = 7;
        assert_eq!(expand(&bad_tag, 6, |h| pool.get(h).copied()), None);
    }

    #[test]
    fn forwards_still_being_verified_are_indexed_by_their_items_hashes() {
        let items: Vec<Vec<u8>> = (1..=3u8)
            .map(|i| vec![i; transactions::MIN_TX_LEN])
            .collect();
        let items: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
        let mut frame = vec![consensus::host::FRAME_APP];
        frame.extend(crate::encode_list(items[..2].iter().copied()));
        let frames: Vec<std::sync::Arc<[u8]>> = vec![frame.into(), b"\x03junk".to_vec().into()];
        let index = index_items(&frames, 512);
        assert_eq!(index.len(), 2, "a malformed frame adds nothing");
        assert_eq!(index.get(&hash(items[1])).copied(), Some(items[1]));
        assert_eq!(index.get(&hash(items[2])), None);
    }

    #[test]
    fn forwarded_transactions_are_named_at_once_own_ones_after_five_ms() {
        let admitted = |at_ms, from_peer| mempool::Admission { at_ms, from_peer };
        assert!(named(admitted(100, true), 100));
        assert!(!named(admitted(100, false), 104));
        assert!(named(admitted(100, false), 105));
    }

    #[test]
    fn a_payload_with_nothing_to_name_has_no_compact_form() {
        let refs: Vec<&[u8]> = vec![b"abc", b"defg"];
        assert_eq!(compact(&refs, |_| None), None);
    }
}
