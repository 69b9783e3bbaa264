//! Signed transactions: the encoding round-trips and has one form, any changed byte is
//! refused, batch and single verification agree, bad keys are refused, the nonce rule never
//! accepts a nonce twice, and docs/transactions.md's worked example is what the code writes.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::SigningKey;
use engine::{Command, NewOrder, SelfTradePrevention, Side, TimeInForce};
use proptest::prelude::*;
use sha2::{Digest, Sha512};
use transactions::{
    account_id_of, batch_valid, key_acceptable, verify, verify_batch, verify_batch_cached, Action,
    DecodeError, KeyCache, NonceError, NonceSet, SignatureError, SignedTransaction, Transaction,
    CALL_ARGS_LEN, MAX_ACTIONS, NONCE_FUTURE_MS, NONCE_PAST_MS, REMEMBERED_NONCES,
};

const CHAIN: [u8; 32] = [7; 32];

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn tx(key: &SigningKey, nonce: u64, actions: Vec<Action>) -> SignedTransaction {
    Transaction {
        chain_id: CHAIN,
        signer: key.verifying_key().to_bytes(),
        nonce,
        actions,
    }
    .sign(key)
}

fn place(oid: u64) -> Action {
    Action::Place {
        market: 0,
        oid,
        side: Side::Buy,
        price: Some(50_000),
        qty: 2,
        tif: TimeInForce::Gtc,
        stp: SelfTradePrevention::CancelMaker,
        reduce_only: false,
    }
}

fn any_action() -> impl Strategy<Value = Action> {
    let tif = prop_oneof![
        Just(TimeInForce::Gtc),
        Just(TimeInForce::Ioc),
        Just(TimeInForce::Fok),
        Just(TimeInForce::Alo)
    ];
    let stp = prop_oneof![
        Just(SelfTradePrevention::CancelMaker),
        Just(SelfTradePrevention::CancelTaker),
        Just(SelfTradePrevention::CancelBoth)
    ];
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    prop_oneof![
        (
            any::<u32>(),
            any::<u64>(),
            side,
            proptest::option::of(1i64..i64::MAX),
            any::<i64>(),
            tif,
            stp,
            any::<bool>()
        )
            .prop_map(|(market, oid, side, price, qty, tif, stp, reduce_only)| {
                Action::Place {
                    market,
                    oid,
                    side,
                    price,
                    qty,
                    tif,
                    stp,
                    reduce_only,
                }
            }),
        (any::<u32>(), any::<u64>()).prop_map(|(market, oid)| Action::Cancel { market, oid }),
        any::<u32>().prop_map(|market| Action::CancelAll { market }),
        (any::<u32>(), any::<u64>(), any::<i64>(), any::<i64>()).prop_map(
            |(market, oid, price, qty)| Action::Modify {
                market,
                oid,
                price,
                qty
            }
        ),
        (any::<u32>(), any::<i64>()).prop_map(|(asset, amount)| Action::Withdraw { asset, amount }),
        any::<i64>().prop_map(|amount| Action::TransferCollateral { amount }),
        (any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(market, leverage, isolated)| {
            Action::SetLeverage {
                market,
                leverage,
                isolated,
            }
        }),
        (any::<u32>(), any::<i64>())
            .prop_map(|(market, amount)| Action::IsolatedMargin { market, amount }),
        (any::<u32>(), any::<i64>())
            .prop_map(|(market, price)| Action::OraclePrice { market, price }),
        (any::<u64>(), any::<u32>(), any::<i64>()).prop_map(|(account, asset, amount)| {
            Action::Deposit {
                account,
                asset,
                amount,
            }
        }),
        (any::<u32>(), any::<u8>(), any::<[u8; CALL_ARGS_LEN]>()).prop_map(
            |(coprocessor, method, args)| Action::Call {
                coprocessor,
                method,
                args
            }
        ),
    ]
}

proptest! {
    #[test]
    fn a_signed_transaction_round_trips_and_verifies(
        seed in 1u8..=255,
        nonce in any::<u64>(),
        actions in proptest::collection::vec(any_action(), 1..=MAX_ACTIONS),
    ) {
        let signed = tx(&key(seed), nonce, actions);
        let decoded = SignedTransaction::decode(signed.bytes()).unwrap();
        prop_assert_eq!(&decoded, &signed);
        prop_assert_eq!(decoded.hash(), signed.hash());
        prop_assert_eq!(verify(&decoded), Ok(()));
        prop_assert_eq!(decoded.tx.account(), account_id_of(&key(seed).verifying_key().to_bytes()));
    }

    /// One encoding per transaction: a changed byte is a decode error or a failed signature,
    /// never another valid transaction.
    #[test]
    fn from_command_inverts_command(action in any_action(), account in 0u64..(1 << 63)) {
        match action.command(account) {
            Some(command) => {
                let back = Action::from_command(&command);
                match action {
                    // A deposit names its beneficiary and only a faucet signs it: no inverse.
                    Action::Deposit { .. } => prop_assert_eq!(back, None),
                    _ => prop_assert_eq!(back, Some((account, action))),
                }
            }
            None => {
                let no_command = matches!(action, Action::OraclePrice { .. } | Action::Call { .. });
                prop_assert!(no_command, "only oracle prices and calls have no command");
            }
        }
    }

    #[test]
        fn any_changed_byte_is_refused(
        actions in proptest::collection::vec(any_action(), 1..4),
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let signed = tx(&key(3), 1, actions);
        let mut bytes = signed.bytes().to_vec();
        let at = position.index(bytes.len());
        bytes[at] ^= flip;
        if let Ok(changed) = SignedTransaction::decode(&bytes) {
            prop_assert!(verify(&changed).is_err(), "byte {} changed and still valid", at);
        }
    }

    /// Batches give exactly what one-by-one verification gives, whatever the mix, with each
    /// transaction from its own signer or a few signers sending several each (`signers`).
    #[test]
    fn batch_and_single_verification_agree(
        faults in proptest::collection::vec(0u8..7, 1..24),
        signers in 0u8..4,
    ) {
        let seed = |i: usize| if signers == 0 { i as u8 + 1 } else { i as u8 % signers + 1 };
        let txs: Vec<SignedTransaction> = faults
            .iter()
            .enumerate()
            .map(|(i, fault)| corrupt(tx(&key(seed(i)), i as u64, vec![place(i as u64)]), *fault))
            .collect();
        let refs: Vec<&SignedTransaction> = txs.iter().collect();
        let single: Vec<_> = txs.iter().map(verify).collect();
        prop_assert_eq!(verify_batch(&refs), single.clone());
        // Through a key cache, cold then warm (decompressed keys reused), each alone too.
        let mut cache = KeyCache::new(8);
        for _ in 0..2 {
            prop_assert_eq!(verify_batch_cached(&refs, &mut cache), single.clone());
        }
        for (tx, expected) in refs.iter().zip(&single) {
            prop_assert_eq!(&verify_batch_cached(&[*tx], &mut cache)[0], expected);
        }
        for (result, fault) in single.iter().zip(&faults) {
            prop_assert_eq!(result.is_ok(), *fault == 0);
        }
        // The batch equation is ed25519-zebra's: the same verdict as its batch verifier.
        let keys_ok = txs.iter().all(|t| key_acceptable(&t.tx.signer));
        prop_assert_eq!(batch_valid(&refs, &mut cache), keys_ok && zebra_batch_holds(&txs));
    }
}

/// ZIP 215 is cofactored: an `R` with an order-2 part added (a signature no cofactorless
/// check accepts) passes alone and in a batch, through zebra's check and the cached keys'.
#[test]
fn a_signature_whose_r_has_a_small_order_part_passes_every_check() {
    let signer = key(5);
    let honest = tx(&signer, 1, vec![place(1)]);
    // (0, -1), of order 2: y = p - 1.
    let mut order_two = [0xff; 32];
    order_two[0] = 0xec;
    order_two[31] = 0x7f;
    let torsion = CompressedEdwardsY(order_two).decompress().unwrap();
    let r = Scalar::from(0x1234_5678_9abc_def0_u64) * Scalar::from(0x0fed_cba9_8765_4321_u64);
    let big_r = (ED25519_BASEPOINT_POINT * r + torsion)
        .compress()
        .to_bytes();
    let digest = Sha512::new()
        .chain_update(big_r)
        .chain_update(honest.tx.signer)
        .chain_update(honest.tx.signing_bytes())
        .finalize();
    let k = Scalar::from_bytes_mod_order_wide(&digest.into());
    let s = r + k * signer.to_scalar();
    let mut bytes = honest.bytes().to_vec();
    let len = bytes.len();
    bytes[len - 64..].copy_from_slice(&[big_r, s.to_bytes()].concat());
    let mixed = SignedTransaction::decode(&bytes).unwrap();
    let dalek_signature = ed25519_dalek::Signature::from_bytes(&mixed.signature);
    let strict = signer
        .verifying_key()
        .verify_strict(&mixed.signing_bytes(), &dalek_signature);
    assert!(strict.is_err(), "cofactorless checks refuse it");
    assert_eq!(verify(&mixed), Ok(()));
    let mut cache = KeyCache::new(4);
    assert_eq!(verify_batch_cached(&[&mixed], &mut cache), vec![Ok(())]);
    // Repeated: a batch equation without the cofactor would still hold for the half of
    // its random scalars that are even.
    let both = [&mixed, &honest];
    for _ in 0..32 {
        assert_eq!(verify_batch_cached(&both, &mut cache), vec![Ok(()), Ok(())]);
        assert!(batch_valid(&both, &mut cache));
    }
    assert!(zebra_batch_holds(&[mixed, honest]));
}

/// ed25519-zebra's own batch verifier over `txs` (keys as bytes, decompressed by it).
fn zebra_batch_holds(txs: &[SignedTransaction]) -> bool {
    let messages: Vec<Vec<u8>> = txs.iter().map(|t| t.signing_bytes()).collect();
    let mut verifier = ed25519_zebra::batch::Verifier::new();
    for (t, message) in txs.iter().zip(&messages) {
        let key = ed25519_zebra::VerificationKeyBytes::from(t.tx.signer);
        verifier.queue((
            key,
            ed25519_zebra::Signature::from_bytes(&t.signature),
            message,
        ));
    }
    verifier
        .verify(getrandom::rand_core::UnwrapErr(getrandom::SysRng))
        .is_ok()
}

/// 0: valid; 1: signature byte changed; 2: signed for another chain; 3: another key's
/// signature; 4: a small-order key; 5: an `R` that is no point; 6: `s + l` for `s` (the
/// same residue, not canonical).
fn corrupt(signed: SignedTransaction, fault: u8) -> SignedTransaction {
    let mut bytes = signed.bytes().to_vec();
    let len = bytes.len();
    match fault {
        1 => bytes[len - 1] ^= 1,
        2 => {
            let mut other = signed.tx.clone();
            other.chain_id = [9; 32];
            let resigned = other.sign(&key_for(&signed));
            bytes[len - 64..].copy_from_slice(&resigned.signature);
        }
        3 => {
            let stranger = tx(&key(200), signed.tx.nonce, signed.tx.actions.clone());
            bytes[len - 64..].copy_from_slice(&stranger.signature);
        }
        4 => {
            // The identity point: small order. Any "signature" (R = identity, s = 0) passes
            // the cofactored equation for it, so the key itself must be refused.
            bytes[36..68].copy_from_slice(&identity());
            bytes[len - 64..].copy_from_slice(&[identity(), [0; 32]].concat());
        }
        5 => bytes[len - 64..len - 32].copy_from_slice(&not_a_point()),
        6 => add_group_order(&mut bytes[len - 32..]),
        _ => {}
    }
    SignedTransaction::decode(&bytes).unwrap()
}

/// An encoding that no curve point has (the first found).
fn not_a_point() -> [u8; 32] {
    (2u8..)
        .map(|b| {
            let mut y = [0u8; 32];
            y[0] = b;
            y
        })
        .find(|y| CompressedEdwardsY(*y).decompress().is_none())
        .expect("some y is not on the curve")
}

/// Adds the group order `l` to the little-endian scalar `s` (below `l`, so no overflow).
fn add_group_order(s: &mut [u8]) {
    // l = 2^252 + 27742317777372353535851937790883648493, little-endian.
    let l: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (byte, add) in s.iter_mut().zip(l) {
        let sum = u16::from(*byte) + u16::from(add) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
}

fn identity() -> [u8; 32] {
    let mut point = [0u8; 32];
    point[0] = 1;
    point
}

fn key_for(signed: &SignedTransaction) -> SigningKey {
    (1..=255)
        .map(key)
        .find(|k| k.verifying_key().to_bytes() == signed.tx.signer)
        .expect("a test key")
}

#[test]
fn small_order_and_non_canonical_keys_are_bad_key() {
    let signed = corrupt(tx(&key(1), 1, vec![place(1)]), 4);
    assert_eq!(verify(&signed), Err(SignatureError::BadKey));
    // y = p + 1 (non-canonical encoding of y = 1, the identity).
    let mut non_canonical = [0xffu8; 32];
    non_canonical[0] = 0xee;
    non_canonical[31] = 0x7f;
    assert!(!transactions::key_acceptable(&non_canonical));
    assert!(transactions::key_acceptable(
        &key(5).verifying_key().to_bytes()
    ));
}

#[test]
fn decode_errors_are_typed() {
    let signed = tx(&key(1), 1, vec![place(1), place(2)]);
    let bytes = signed.bytes();
    assert_eq!(
        SignedTransaction::decode(&bytes[..100]),
        Err(DecodeError::Length(100))
    );
    let mut wrong = bytes.to_vec();
    wrong[0] = 2;
    assert_eq!(
        SignedTransaction::decode(&wrong),
        Err(DecodeError::Version(2))
    );
    let mut wrong = bytes.to_vec();
    wrong[2] = 3;
    assert!(matches!(
        SignedTransaction::decode(&wrong),
        Err(DecodeError::Count { count: 3, .. })
    ));
    let mut wrong = bytes.to_vec();
    wrong[76] = 99;
    assert!(matches!(
        SignedTransaction::decode(&wrong),
        Err(DecodeError::Action { index: 0, .. })
    ));
    // An oversize bulk: 65 actions is 2,220 bytes, past the longest transaction; a full
    // bulk of 64 claiming 65 disagrees with its length.
    let full = tx(&key(1), 1, (0..MAX_ACTIONS as u64).map(place).collect());
    let mut oversize = full.bytes().to_vec();
    oversize.splice(76..76, full.bytes()[76..108].iter().copied());
    oversize[2] = 65;
    assert_eq!(
        SignedTransaction::decode(&oversize),
        Err(DecodeError::Length(2220))
    );
    let mut wrong = full.bytes().to_vec();
    wrong[2] = 65;
    assert!(matches!(
        SignedTransaction::decode(&wrong),
        Err(DecodeError::Count { count: 65, .. })
    ));
}

#[test]
fn actions_act_for_the_signers_account() {
    let account = account_id_of(&key(1).verifying_key().to_bytes());
    assert_eq!(
        place(9).command(account),
        Some(Command::Place(NewOrder {
            account,
            market: 0,
            oid: 9,
            side: Side::Buy,
            price: Some(50_000),
            qty: 2,
            tif: TimeInForce::Gtc,
            stp: SelfTradePrevention::CancelMaker,
            reduce_only: false,
        }))
    );
    assert_eq!(
        Action::Cancel { market: 1, oid: 4 }.command(account),
        Some(Command::Cancel {
            account,
            market: 1,
            oid: 4
        })
    );
    // A deposit credits the account it names (only faucets may sign one).
    let deposit = Action::Deposit {
        account: 42,
        asset: 1,
        amount: 5,
    };
    assert_eq!(deposit.restricted_to(), Some("faucet"));
    assert_eq!(
        deposit.command(account),
        Some(Command::Deposit {
            account: 42,
            asset: 1,
            amount: 5
        })
    );
    assert_eq!(
        Action::OraclePrice {
            market: 1,
            price: 5
        }
        .command(account),
        None
    );
}

#[test]
fn the_nonce_window_follows_the_block_time() {
    let set = NonceSet::default();
    let now = 1_800_000_000_000;
    assert_eq!(set.check(now, now), Ok(()));
    assert_eq!(set.check(now - NONCE_PAST_MS + 1, now), Ok(()));
    assert!(matches!(
        set.check(now - NONCE_PAST_MS, now),
        Err(NonceError::Stale { .. })
    ));
    assert_eq!(set.check(now + NONCE_FUTURE_MS, now), Ok(()));
    assert!(matches!(
        set.check(now + NONCE_FUTURE_MS + 1, now),
        Err(NonceError::Future { .. })
    ));
}

proptest! {
    /// Against a model that remembers every nonce ever used: no nonce is accepted twice,
    /// nonces in flight may be used in any order while the account remembers fewer than its
    /// limit, and what the set refuses besides replays is exactly the documented rule.
    #[test]
    fn no_nonce_is_ever_accepted_twice(
        offsets in proptest::collection::vec(0u64..400, 1..600),
    ) {
        let now = 1_800_000_000_000u64;
        let mut set = NonceSet::default();
        let mut ever = std::collections::BTreeSet::new();
        for offset in offsets {
            let nonce = now + offset;
            let expected = if ever.contains(&nonce) {
                Err(NonceError::Used(nonce))
            } else if set.used().len() >= REMEMBERED_NONCES && nonce < set.used()[0] {
                Err(NonceError::BelowRemembered { nonce, lowest: set.used()[0] })
            } else {
                Ok(())
            };
            let got = set.check(nonce, now);
            match (&got, &expected) {
                // A forgotten nonce is refused as below the remembered ones, never accepted.
                (Err(NonceError::BelowRemembered { .. }), Err(NonceError::Used(_))) => {}
                _ => prop_assert_eq!(got, expected),
            }
            if got.is_ok() {
                prop_assert!(ever.insert(nonce), "nonce {} accepted twice", nonce);
                set.record(nonce);
            }
            prop_assert!(set.used().len() <= REMEMBERED_NONCES);
        }
    }
}

/// docs/transactions.md's worked example: the hex there is what this code writes.
#[test]
fn the_documented_example_is_what_the_code_writes() {
    let signed = documented_example();
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/transactions.md"
    ))
    .expect("docs/transactions.md");
    let hex: String = signed.bytes().iter().map(|b| format!("{b:02x}")).collect();
    let written: String = doc
        .split("```hex")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```hex block")
        .split_whitespace()
        .collect();
    // On a change of format, the message gives the bytes to paste into the doc.
    assert_eq!(
        written,
        hex,
        "docs/transactions.md's example bytes (hash {}, account {})",
        signed.hash(),
        account_id_of(&signed.tx.signer)
    );
    assert!(
        doc.contains(&signed.hash().to_string()),
        "the doc gives the hash {}",
        signed.hash()
    );
    assert!(doc.contains(&account_id_of(&signed.tx.signer).to_string()));
    assert_eq!(verify(&signed), Ok(()));
}

/// Key: the 32-byte seed 0x01..0x20; chain id: 32 bytes of 0x4e; nonce 1,800,000,000,000;
/// a buy of 2 lots at 50,000 ticks (GTC, oid 7, market 0) and a cancel of oid 3 in market 1.
fn documented_example() -> SignedTransaction {
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
    let key = SigningKey::from_bytes(&seed);
    Transaction {
        chain_id: [0x4e; 32],
        signer: key.verifying_key().to_bytes(),
        nonce: 1_800_000_000_000,
        actions: vec![place(7), Action::Cancel { market: 1, oid: 3 }],
    }
    .sign(&key)
}

/// transactions.md, "Actions": a call lays out kind 11, the method in the flags byte, the
/// co-processor id in `a` and its arguments as given (the Python client's vector).
#[test]
fn a_call_is_laid_out_as_documented() {
    let args: [u8; CALL_ARGS_LEN] = std::array::from_fn(|i| i as u8);
    let call = Action::Call {
        coprocessor: 1,
        method: 2,
        args,
    };
    let bytes = call.encode();
    assert_eq!(&bytes[..8], &[11, 2, 0, 0, 1, 0, 0, 0]);
    assert_eq!(&bytes[8..], &args);
    assert_eq!(Action::decode(&bytes), Ok(call));
    let mut reserved = bytes;
    reserved[2] = 1;
    assert!(
        Action::decode(&reserved).is_err(),
        "reserved bytes stay zero"
    );
}
