//! The forward verifier: a thread that checks the signatures of the transactions peers
//! forward (three quarters of all transactions in a devnet of four) before the validator's
//! loop admits them, so that the loop's consensus steps and block execution do not wait
//! behind batch verifications (docs/mempool.md, "Verified off the validator's loop").
//!
//! The loop offers each forwarded frame; a full queue hands it back and the loop admits it
//! itself, checking its signatures as before. Nothing is lost either way: what passed here
//! is only remembered as verified (`Mempool::note_verified`), and admission makes every
//! other check on the loop.
//!
//! The thread and the loop's block checks share [`VerifiedHere`], the hashes either of them
//! verified: when a proposal overtakes the forward of its transactions, the block check
//! verifies them and the thread then skips them (and the other way round).

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use mempool::VerifiedCache;

use super::*;

/// Forwarded frames waiting for the thread before the loop verifies them itself.
const QUEUE: usize = 256;

/// Hashes remembered by [`VerifiedHere`] (about 2 MiB).
const VERIFIED_HERE: usize = 1 << 16;

/// Hashes of Core transactions whose signatures a thread of this validator verified (the
/// forward verifier or a block check on the loop), shared between them so that a
/// transaction's signature is verified once even when its proposal overtakes its forward.
/// Only this process's own checks go in.
#[derive(Clone)]
pub(super) struct VerifiedHere(Arc<Mutex<VerifiedCache>>);

impl VerifiedHere {
    /// An empty set that remembers the newest [`VERIFIED_HERE`] hashes.
    pub(super) fn new() -> VerifiedHere {
        VerifiedHere(Arc::new(Mutex::new(VerifiedCache::new(VERIFIED_HERE))))
    }

    /// Which of `hashes` were verified here (one lock for all).
    pub(super) fn known(&self, hashes: &[TxHash]) -> Vec<bool> {
        let set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        hashes.iter().map(|hash| set.contains(hash)).collect()
    }

    /// Remembers hashes whose signatures were just verified here.
    pub(super) fn insert_all(&self, hashes: impl IntoIterator<Item = TxHash>) {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for hash in hashes {
            set.insert(hash);
        }
    }
}

/// A peer's forwarded frame, with the hashes of its Core transactions whose signatures
/// verified on the thread.
pub(super) struct VerifiedForward {
    /// The peer that forwarded it.
    pub(super) from: ValidatorId,
    /// The frame as received (`FRAME_APP`, then a list of block items).
    pub(super) frame: Arc<[u8]>,
    /// Transactions that verified.
    pub(super) verified: Vec<TxHash>,
}

/// The loop's side of the thread.
pub(super) struct ForwardVerifier {
    to_thread: std_mpsc::SyncSender<(ValidatorId, Arc<[u8]>)>,
}

impl ForwardVerifier {
    /// Starts the thread, sharing `here` with the loop's block checks; verified frames come
    /// back on the returned receiver.
    pub(super) fn spawn(
        here: VerifiedHere,
    ) -> std::io::Result<(ForwardVerifier, mpsc::Receiver<VerifiedForward>)> {
        let (to_thread, inbox) = std_mpsc::sync_channel(QUEUE);
        let (to_loop, verified) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("nexus-verify".into())
            .spawn(move || run(inbox, to_loop, here))?;
        Ok((ForwardVerifier { to_thread }, verified))
    }

    /// Offers a forwarded frame; gives it back if the thread's queue is full (or the thread
    /// is gone). Frames come back in the order offered.
    pub(super) fn offer(&self, from: ValidatorId, frame: Arc<[u8]>) -> Result<(), Arc<[u8]>> {
        self.to_thread.try_send((from, frame)).map_err(|e| match e {
            std_mpsc::TrySendError::Full((_, frame)) => frame,
            std_mpsc::TrySendError::Disconnected((_, frame)) => frame,
        })
    }
}

/// Frames the thread takes from its queue at once, their transactions verified in one batch
/// equation (a batch's cost per signature falls with its size, and a busy validator's frames
/// are small: each holds what one peer admitted in one go).
const FRAMES_AT_ONCE: usize = 32;

/// The thread: verifies the Core transactions of the frames waiting (up to
/// [`FRAMES_AT_ONCE`]) together, until the loop goes.
fn run(
    inbox: std_mpsc::Receiver<(ValidatorId, Arc<[u8]>)>,
    to_loop: mpsc::Sender<VerifiedForward>,
    here: VerifiedHere,
) {
    let mut keys = transactions::KeyCache::new(transactions::KeyCache::DEFAULT_CAPACITY);
    while let Ok(first) = inbox.recv() {
        let mut frames = vec![first];
        while frames.len() < FRAMES_AT_ONCE {
            let Ok(next) = inbox.try_recv() else { break };
            frames.push(next);
        }
        let bodies: Vec<&[u8]> = frames
            .iter()
            .map(|(_, frame)| frame.get(1..).unwrap_or_default())
            .collect();
        let verified = verify_frames(&bodies, &mut keys, &here);
        for ((from, frame), verified) in frames.into_iter().zip(verified) {
            let forward = VerifiedForward {
                from,
                frame,
                verified,
            };
            if to_loop.blocking_send(forward).is_err() {
                return;
            }
        }
    }
}

/// One forwarded list's Core transactions, their hashes, and which of them `here` holds.
struct Decoded {
    txs: Vec<SignedTransaction>,
    hashes: Vec<TxHash>,
    known: Vec<bool>,
}

impl Decoded {
    /// Decodes a forwarded list (EVM items and what does not decode are left to the loop's
    /// admission; a list that does not decode gives nothing).
    fn new(body: &[u8], here: &VerifiedHere) -> Decoded {
        let items = txport::decode_list(body, FORWARD_BATCH).unwrap_or_default();
        let txs: Vec<SignedTransaction> = items
            .into_iter()
            .filter(|item| item.first() != Some(&transactions::EVM_ITEM_TAG))
            .filter_map(|item| SignedTransaction::decode(item).ok())
            .collect();
        let hashes: Vec<TxHash> = txs.iter().map(SignedTransaction::hash).collect();
        let known = here.known(&hashes);
        Decoded { txs, hashes, known }
    }

    /// The transactions still to verify.
    fn unknown(&self) -> impl Iterator<Item = &SignedTransaction> {
        self.txs
            .iter()
            .zip(&self.known)
            .filter(|(_, &known)| !known)
            .map(|(tx, _)| tx)
    }

    /// The hashes that count as verified: known before, or passed now.
    fn verified(self, passed: &std::collections::HashSet<TxHash>) -> Vec<TxHash> {
        self.hashes
            .into_iter()
            .zip(self.known)
            .filter(|(hash, known)| *known || passed.contains(hash))
            .map(|(hash, _)| hash)
            .collect()
    }
}

/// For each forwarded list, the hashes of its Core transactions whose signatures verify (EVM
/// items and what does not decode are left to the loop's admission). Those in `here` are not
/// verified again; those verified now are added to it. First one batch equation over all the
/// lists' transactions; if it fails, each list on its own (so a peer's forged transaction
/// costs the other lists nothing more than that failed equation).
pub(super) fn verify_frames(
    bodies: &[&[u8]],
    keys: &mut transactions::KeyCache,
    here: &VerifiedHere,
) -> Vec<Vec<TxHash>> {
    let decoded: Vec<Decoded> = bodies.iter().map(|b| Decoded::new(b, here)).collect();
    let all: Vec<&SignedTransaction> = decoded.iter().flat_map(Decoded::unknown).collect();
    let passed: std::collections::HashSet<TxHash> =
        if decoded.len() > 1 && transactions::batch_valid(&all, keys) {
            all.iter().map(|tx| tx.hash()).collect()
        } else {
            decoded
                .iter()
                .flat_map(|d| verify_list(&d.unknown().collect::<Vec<_>>(), keys))
                .collect()
        };
    here.insert_all(passed.iter().copied());
    decoded.into_iter().map(|d| d.verified(&passed)).collect()
}

/// The hashes of `txs` whose signatures verify.
fn verify_list(txs: &[&SignedTransaction], keys: &mut transactions::KeyCache) -> Vec<TxHash> {
    transactions::verify_batch_cached(txs, keys)
        .into_iter()
        .zip(txs)
        .filter(|(result, _)| result.is_ok())
        .map(|(_, tx)| tx.hash())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use engine::{SelfTradePrevention, Side, TimeInForce};
    use transactions::{Action, Transaction};

    /// One list through [`verify_frames`].
    fn verify_frame(
        body: &[u8],
        keys: &mut transactions::KeyCache,
        here: &VerifiedHere,
    ) -> Vec<TxHash> {
        verify_frames(&[body], keys, here).remove(0)
    }

    fn forge(tx: &SignedTransaction) -> Vec<u8> {
        let mut forged = tx.bytes().to_vec();
        let len = forged.len();
        forged[len - 1] ^= 1;
        forged
    }

    #[test]
    fn lists_verified_together_each_get_their_own_verified_hashes() {
        let txs: Vec<SignedTransaction> = (1..=6).map(|i| signed(i, u64::from(i))).collect();
        let forged = forge(&signed(9, 1));
        let lists = [
            txport::encode_list([txs[0].bytes(), txs[1].bytes()].into_iter()),
            txport::encode_list([txs[2].bytes()].into_iter()),
            txport::encode_list([txs[3].bytes(), forged.as_slice(), txs[4].bytes()].into_iter()),
            txport::encode_list([txs[5].bytes()].into_iter()),
        ];
        let hashes = |range: std::ops::Range<usize>| -> Vec<TxHash> {
            txs[range].iter().map(SignedTransaction::hash).collect()
        };
        // All valid: one equation over the first two lists.
        let mut keys = transactions::KeyCache::new(16);
        let bodies: Vec<&[u8]> = vec![&lists[0], &lists[1]];
        let here = VerifiedHere::new();
        let got = verify_frames(&bodies, &mut keys, &here);
        assert_eq!(got, vec![hashes(0..2), hashes(2..3)]);
        // A forged transaction in one list: every list still gets exactly its valid ones.
        let bodies: Vec<&[u8]> = lists.iter().map(Vec::as_slice).collect();
        let here = VerifiedHere::new();
        let got = verify_frames(&bodies, &mut keys, &here);
        let third = vec![txs[3].hash(), txs[4].hash()];
        assert_eq!(got, vec![hashes(0..2), hashes(2..3), third, hashes(5..6)]);
        let forged_hash = SignedTransaction::decode(&forged).unwrap().hash();
        assert_eq!(here.known(&[forged_hash]), vec![false]);
    }

    fn signed(seed: u8, nonce: u64) -> SignedTransaction {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let place = Action::Place {
            market: 0,
            oid: nonce,
            side: Side::Buy,
            price: Some(50_000),
            qty: 2,
            tif: TimeInForce::Gtc,
            stp: SelfTradePrevention::CancelMaker,
            reduce_only: false,
        };
        Transaction {
            chain_id: [7; 32],
            signer: key.verifying_key().to_bytes(),
            nonce,
            actions: vec![place],
        }
        .sign(&key)
    }

    #[test]
    fn only_transactions_whose_signature_verifies_are_reported() {
        let good = signed(1, 1);
        let other = signed(2, 1);
        let mut forged = good.bytes().to_vec();
        let len = forged.len();
        forged[len - 1] ^= 1;
        let evm = [transactions::EVM_ITEM_TAG, 1, 2, 3];
        // A transaction's length, but an unknown version: it does not decode.
        let mut undecodable = other.bytes().to_vec();
        undecodable[0] = 0x7e;
        let items: [&[u8]; 5] = [&forged, good.bytes(), &evm, &undecodable, other.bytes()];
        let body = txport::encode_list(items.into_iter());
        let mut keys = transactions::KeyCache::new(16);
        let here = VerifiedHere::new();
        assert_eq!(
            verify_frame(&body, &mut keys, &here),
            vec![good.hash(), other.hash()]
        );
        assert!(verify_frame(b"not a list", &mut keys, &here).is_empty());
        // What verified is shared with the loop's block checks; what failed is not.
        let forged_hash = SignedTransaction::decode(&forged).unwrap().hash();
        assert_eq!(
            here.known(&[good.hash(), other.hash(), forged_hash]),
            vec![true, true, false]
        );
    }

    #[test]
    fn what_a_block_check_verified_is_not_verified_again() {
        let tx = signed(4, 2);
        let mut forged = tx.bytes().to_vec();
        let len = forged.len();
        forged[len - 1] ^= 1;
        let forged_hash = SignedTransaction::decode(&forged).unwrap().hash();
        let body = txport::encode_list([forged.as_slice()].into_iter());
        let mut keys = transactions::KeyCache::new(16);
        let here = VerifiedHere::new();
        assert!(verify_frame(&body, &mut keys, &here).is_empty());
        // Marked as verified here (only this process's checks ever are), the thread takes
        // it as verified without checking: so it does not check what the loop checked.
        here.insert_all([forged_hash]);
        assert_eq!(verify_frame(&body, &mut keys, &here), vec![forged_hash]);
    }

    #[test]
    fn the_thread_hands_back_the_frame_with_its_verified_hashes() {
        let tx = signed(3, 9);
        let mut frame = vec![consensus::host::FRAME_APP];
        frame.extend(txport::encode_list([tx.bytes()].into_iter()));
        let (verifier, mut verified) = ForwardVerifier::spawn(VerifiedHere::new()).unwrap();
        let from = ValidatorId([5; 32]);
        let frame: Arc<[u8]> = frame.into();
        verifier.offer(from, frame.clone()).unwrap();
        let back = verified.blocking_recv().expect("the thread answers");
        assert_eq!(back.from, from);
        assert!(Arc::ptr_eq(&back.frame, &frame));
        assert_eq!(back.verified, vec![tx.hash()]);
    }
}
