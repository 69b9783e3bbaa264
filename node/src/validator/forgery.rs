//! Test hooks for forged client actions, for the fault suite (`node/tests/faults.rs`) and
//! the devnet tests: a byzantine validator that tries to act for accounts whose keys it does
//! not hold. Never for a real validator. Each hook only adds what an honest validator would
//! never send; its own checks, votes and execution stay honest.
//!
//! In its proposals (the item goes first in every block it proposes for a new value; logged
//! as `{"event":"forged_proposal","height","kind","hash"}`):
//!
//! - `--byzantine-forge` ([`ProposalForgery::Signature`]): a withdrawal for trading account
//!   0 that account 1's key signed (a signature that does not verify for its signer).
//! - `--byzantine-replay` ([`ProposalForgery::Replay`]): the first Core transaction of the
//!   first block it executes that holds one, again (its nonce was used: a replay).
//! - `--byzantine-deposit` ([`ProposalForgery::Deposit`]): a deposit crediting trading
//!   account 0, validly signed by trading account 1, which holds no faucet role (another
//!   account's action under a valid signature of a different account).
//!
//! Honest validators prevote nil for such a block (`valid(v)` fails; each refusal is logged
//! as `payload_refused` with its typed reason) and the height goes to a later round.
//!
//! With `--byzantine-forward-forged` ([`ForwardForger`]) every batch it forwards to its
//! peers (frame 3, the mempool's dissemination path) carries forged items too: an unsigned
//! withdrawal for trading account 0 (a zero signature), one signed by another account's key,
//! and bytes that are no transaction; each with a fresh nonce. Honest validators refuse them
//! at admission and log `forward_refused` naming the peer.

use ed25519_dalek::{Signer, SigningKey};
use transactions::{Action, Transaction, TxHash};

use super::*;

/// What a byzantine proposer puts first in its proposals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProposalForgery {
    /// A withdrawal for account 0 signed by account 1's key (`--byzantine-forge`).
    Signature,
    /// A transaction from an executed block, again (`--byzantine-replay`).
    Replay,
    /// A deposit for account 0 validly signed by account 1, no faucet
    /// (`--byzantine-deposit`).
    Deposit,
}

impl ProposalForgery {
    /// The forgery `args` asks for, if any.
    pub(super) fn of(args: &ValidatorArgs) -> Option<ProposalForgery> {
        if args.byzantine_forge {
            Some(ProposalForgery::Signature)
        } else if args.byzantine_replay {
            Some(ProposalForgery::Replay)
        } else if args.byzantine_deposit {
            Some(ProposalForgery::Deposit)
        } else {
            None
        }
    }

    /// Its name in event lines.
    pub(super) fn name(self) -> &'static str {
        match self {
            ProposalForgery::Signature => "signature",
            ProposalForgery::Replay => "replay",
            ProposalForgery::Deposit => "deposit",
        }
    }
}

/// A byzantine proposer's forged item and how it was made.
pub(super) struct Forged {
    /// Which forgery.
    pub(super) kind: ProposalForgery,
    /// The item put first in each proposal (a replay's: none until a block held one).
    pub(super) item: Option<Vec<u8>>,
}

impl Forged {
    /// The forgery of `kind` for the devnet `spec` (a replay's item comes later, from
    /// [`Forged::note_executed`]).
    pub(super) fn new(kind: ProposalForgery, spec: &LoadSpec) -> Result<Forged, HostError> {
        let (victim, thief) = two_accounts(spec)?;
        let item = match kind {
            ProposalForgery::Signature => {
                let tx = withdrawal(spec, &victim, spec.genesis_time_ms);
                Some(signed_by(&tx, &thief))
            }
            ProposalForgery::Deposit => {
                let tx = Transaction {
                    chain_id: spec.chain_id,
                    signer: thief.verifying_key().to_bytes(),
                    nonce: spec.genesis_time_ms,
                    actions: vec![Action::Deposit {
                        account: transactions::account_id_of(&victim.verifying_key().to_bytes()),
                        asset: 0,
                        amount: 1_000_000,
                    }],
                };
                Some(signed_by(&tx, &thief))
            }
            ProposalForgery::Replay => None,
        };
        Ok(Forged { kind, item })
    }

    /// A replay takes the first Core transaction of the first executed block holding one.
    pub(super) fn note_executed(&mut self, txs: &[BlockItem]) {
        if self.kind != ProposalForgery::Replay || self.item.is_some() {
            return;
        }
        self.item = txs
            .iter()
            .find_map(BlockItem::core)
            .map(|tx| tx.bytes().to_vec());
    }

    /// The event line of a proposal at `height` carrying the forged item, if there is one.
    pub(super) fn event(&self, index: usize, height: Height) -> Option<serde_json::Value> {
        let item = self.item.as_ref()?;
        Some(
            json!({"event": "forged_proposal", "index": index, "height": height,
            "kind": self.kind.name(), "hash": hex(&TxHash::of(item).0)}),
        )
    }
}

/// Trading accounts 0 (the victim) and 1 (the thief).
fn two_accounts(spec: &LoadSpec) -> Result<(SigningKey, SigningKey), HostError> {
    let keys = load::account_keys(spec);
    match keys.as_slice() {
        [victim, thief, ..] => Ok((victim.clone(), thief.clone())),
        _ => Err(HostError::Config(
            "the byzantine forgery hooks need two accounts".into(),
        )),
    }
}

/// A withdrawal of 1,000 units of asset 0 (`BASE`: the quote asset is the EVM's native token,
/// which Core withdrawals may not move) by `account` with `nonce`, unsigned.
fn withdrawal(spec: &LoadSpec, account: &SigningKey, nonce: u64) -> Transaction {
    Transaction {
        chain_id: spec.chain_id,
        signer: account.verifying_key().to_bytes(),
        nonce,
        actions: vec![Action::Withdraw {
            asset: 0,
            amount: 1_000,
        }],
    }
}

/// `tx`'s encoding with `key`'s signature, whoever its signer is.
fn signed_by(tx: &Transaction, key: &SigningKey) -> Vec<u8> {
    let mut bytes = tx.encode_unsigned();
    bytes.extend_from_slice(&key.sign(&tx.signing_bytes()).to_bytes());
    bytes
}

/// Forged items added to every batch a byzantine validator forwards
/// (`--byzantine-forward-forged`).
pub(super) struct ForwardForger {
    spec: LoadSpec,
    victim: SigningKey,
    thief: SigningKey,
    /// Batches forged so far (each item gets a fresh nonce).
    batches: u64,
}

impl ForwardForger {
    /// A forger for the devnet `spec`.
    pub(super) fn new(spec: LoadSpec) -> Result<ForwardForger, HostError> {
        let (victim, thief) = two_accounts(&spec)?;
        Ok(ForwardForger {
            spec,
            victim,
            thief,
            batches: 0,
        })
    }

    /// `frame` (a forwarded batch: `FRAME_APP` and a list of items) with three forged items
    /// after its own, stamped `now_ms`; and the event line naming them.
    pub(super) fn forge(&mut self, frame: &[u8], now_ms: u64) -> (Frame, serde_json::Value) {
        self.batches += 1;
        let nonce = now_ms + self.batches;
        let tx = withdrawal(&self.spec, &self.victim, nonce);
        let mut unsigned = tx.encode_unsigned();
        unsigned.extend_from_slice(&[0u8; 64]);
        let stolen = signed_by(
            &withdrawal(&self.spec, &self.victim, nonce + 1),
            &self.thief,
        );
        // A transaction's length (so the list stays well formed) but no transaction.
        let garbage = vec![0x5a; unsigned.len()];
        let own = frame
            .get(1..)
            .and_then(|body| txport::decode_list(body, FORWARD_BATCH))
            .unwrap_or_default();
        let forged: [&[u8]; 3] = [&unsigned, &stolen, &garbage];
        let items: Vec<&[u8]> = own.into_iter().chain(forged).collect();
        let list = txport::encode_list(items.into_iter());
        let hashes: Vec<String> = forged.iter().map(|b| hex(&TxHash::of(b).0)).collect();
        let event = json!({"event": "forwarded_forged", "batch": self.batches,
            "hashes": hashes});
        (consensus::host::app_frame(&list), event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transactions::SignedTransaction;

    fn spec() -> LoadSpec {
        LoadSpec {
            seed: 11,
            accounts: 4,
            bulk: 1,
            chain_id: [3; 32],
            genesis_time_ms: 1_000,
            resting_orders: 0,
        }
    }

    /// The signature forgery names account 0 but does not verify; the deposit verifies for
    /// account 1 and credits account 0; a replay has no item until a block held one, then
    /// that block's first transaction.
    #[test]
    fn each_forgery_is_what_it_claims() {
        let spec = spec();
        let (victim, thief) = two_accounts(&spec).expect("keys");
        let forged = Forged::new(ProposalForgery::Signature, &spec).expect("forged");
        let tx = SignedTransaction::decode(forged.item.as_deref().expect("an item")).unwrap();
        assert_eq!(tx.tx.signer, victim.verifying_key().to_bytes());
        assert!(transactions::verify(&tx).is_err(), "a forged signature");
        let deposit = Forged::new(ProposalForgery::Deposit, &spec).expect("deposit");
        let tx = SignedTransaction::decode(deposit.item.as_deref().expect("an item")).unwrap();
        assert_eq!(tx.tx.signer, thief.verifying_key().to_bytes());
        assert!(
            transactions::verify(&tx).is_ok(),
            "validly signed by account 1"
        );
        let victim_id = transactions::account_id_of(&victim.verifying_key().to_bytes());
        assert!(
            matches!(tx.tx.actions[0], Action::Deposit { account, .. } if account == victim_id)
        );
        let mut replay = Forged::new(ProposalForgery::Replay, &spec).expect("replay");
        assert!(replay.item.is_none() && replay.event(0, 3).is_none());
        let first = withdrawal(&spec, &thief, 7).sign(&thief);
        let second = withdrawal(&spec, &thief, 8).sign(&thief);
        replay.note_executed(&[BlockItem::Core(first.clone())]);
        replay.note_executed(&[BlockItem::Core(second)]);
        assert_eq!(replay.item.as_deref(), Some(first.bytes()));
        let event = replay.event(2, 9).expect("an event");
        assert_eq!(event["hash"], hex(&first.hash().0));
        assert_eq!(event["kind"], "replay");
    }

    /// A forged forward keeps the batch's own items and adds an unsigned, a stolen and an
    /// undecodable one, with fresh nonces at every batch.
    #[test]
    fn a_forged_forward_keeps_the_batch_and_adds_three_bad_items() {
        let spec = spec();
        let (_, thief) = two_accounts(&spec).expect("keys");
        let good = withdrawal(&spec, &thief, 5).sign(&thief);
        let frame = consensus::host::app_frame(&txport::encode_list([good.bytes()].into_iter()));
        let mut forger = ForwardForger::new(spec).expect("forger");
        let (forged, event) = forger.forge(&frame, 1_000);
        let items = txport::decode_list(&forged[1..], FORWARD_BATCH).expect("a list");
        assert_eq!(items.len(), 4);
        assert_eq!(items[0], good.bytes());
        for bad in &items[1..3] {
            let tx = SignedTransaction::decode(bad).expect("decodes");
            assert!(transactions::verify(&tx).is_err(), "not validly signed");
        }
        assert!(SignedTransaction::decode(items[3]).is_err());
        assert_eq!(event["hashes"].as_array().map(Vec::len), Some(3));
        let (again, _) = forger.forge(&frame, 1_000);
        assert_ne!(again, forged, "fresh nonces");
    }
}
