//! The order-entry state machine on its own: bytes and pipeline outputs in, bytes and
//! submissions out, time given by the test. Resend windows, session limits, heartbeats,
//! reject storms, and a property: whatever bytes arrive, no session ever submits for an
//! account other than its own and other sessions keep working.

use ed25519_dalek::{Signer, SigningKey};
use engine::{Command, Event};
use gateway::client::{decode_server_message, ServerMessage};
use gateway::connections::ConnId;
use gateway::order_entry::{OrderEntry, OrderEntryConfig};
use gateway::wire::{self, *};
use proptest::prelude::*;
use sequencer::{Output, Submission};
use zerocopy::IntoBytes;

const SECOND: u64 = 1_000_000_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// Every whole message queued for `id`, consumed.
fn drain(oe: &mut OrderEntry, id: ConnId) -> Vec<ServerMessage> {
    let bytes = oe.pending_output(id).to_vec();
    oe.consume_output(id, bytes.len());
    let mut messages = Vec::new();
    let mut at = 0;
    while let Ok(Some(length)) = wire::next_frame(&bytes[at..]) {
        messages.push(decode_server_message(&bytes[at..at + length]).expect("valid"));
        at += length;
    }
    assert_eq!(at, bytes.len(), "only whole messages are queued");
    messages
}

/// Connects and logs in; returns the connection and the login reply.
fn login(
    oe: &mut OrderEntry,
    key: &SigningKey,
    session_id: u64,
    resume_from: u64,
    now: u64,
) -> (ConnId, Vec<ServerMessage>) {
    let id = oe.connect(now, [session_id as u8; 32]);
    let ServerMessage::Challenge(challenge) = drain(oe, id)[0] else {
        panic!("challenge first")
    };
    let public_key = key.verifying_key().to_bytes();
    let mut message: Login = blank(0);
    message.public_key = public_key;
    message.session_id = session_id.into();
    message.resume_from = resume_from.into();
    message.heartbeat_ms = 1000.into();
    message.signature = key
        .sign(&login_signing_bytes(
            &challenge.nonce,
            &public_key,
            session_id,
            resume_from,
            1000,
            0,
        ))
        .to_bytes();
    oe.receive(id, message.as_bytes(), now);
    (id, drain(oe, id))
}

fn new_order(seq: u64, oid: u64) -> NewOrder {
    let mut order: NewOrder = blank(seq);
    order.market = 1.into();
    order.oid = oid.into();
    order.price = 100.into();
    order.qty = 1.into();
    order
}

/// Feeds the engine's answer (`Accepted`, then `Sequenced`) for every submission.
fn answer(oe: &mut OrderEntry, submissions: &[Submission], first_seq: u64) {
    for (i, submission) in submissions.iter().enumerate() {
        let Command::Place(order) = submission.command else {
            continue;
        };
        let seq = first_seq + i as u64;
        let event = Event::Accepted {
            market: order.market,
            account: order.account,
            oid: order.oid,
        };
        let client = submission.client;
        oe.on_output(&Output::Event { client, seq, event }, 0);
        oe.on_output(
            &Output::Sequenced {
                client,
                seq,
                height: 1,
                times: Default::default(),
            },
            0,
        );
    }
}

#[test]
fn resend_keeps_only_the_configured_window() {
    let mut oe = OrderEntry::new(OrderEntryConfig {
        resend_messages: 3,
        ..OrderEntryConfig::default()
    });
    let alice = key(1);
    let (id, reply) = login(&mut oe, &alice, 9, 0, 0);
    assert!(matches!(reply[0], ServerMessage::LoginAccepted(_)));
    for seq in 1..=3 {
        oe.receive(id, new_order(seq, seq).as_bytes(), 0);
    }
    let mut submissions = Vec::new();
    oe.take_submissions(&mut submissions);
    assert_eq!(submissions.len(), 3);
    answer(&mut oe, &submissions, 10);
    // Six messages were sent (accepted + sequenced per order); the last three are kept.
    assert_eq!(drain(&mut oe, id).len(), 6);
    oe.disconnected(id, 0);
    let (_, refused) = login(&mut oe, &alice, 9, 3, 1);
    let ServerMessage::LoginRejected(rejected) = refused[0] else {
        panic!("{refused:?}")
    };
    assert_eq!(
        LoginRejectReason::from_code(rejected.reason.get()),
        Some(LoginRejectReason::ResendUnavailable)
    );
    let (_, resumed) = login(&mut oe, &alice, 9, 4, 1);
    let ServerMessage::LoginAccepted(accepted) = resumed[0] else {
        panic!("{resumed:?}")
    };
    assert_eq!(accepted.next_client_seq.get(), 4);
    assert_eq!(accepted.next_server_seq.get(), 7);
    let seqs: Vec<u64> = resumed[1..].iter().map(ServerMessage::seq).collect();
    assert_eq!(seqs, [4, 5, 6]);
}

/// The resend windows of all sessions together stay within `max_resend_total`: a second
/// session held halves every window, the first session's included.
#[test]
fn resend_windows_share_the_ports_total() {
    let mut oe = OrderEntry::new(OrderEntryConfig {
        resend_messages: 6,
        max_resend_total: 6,
        ..OrderEntryConfig::default()
    });
    let alice = key(1);
    let (id, _) = login(&mut oe, &alice, 9, 0, 0);
    for seq in 1..=3 {
        oe.receive(id, new_order(seq, seq).as_bytes(), 0);
    }
    let mut submissions = Vec::new();
    oe.take_submissions(&mut submissions);
    answer(&mut oe, &submissions, 10);
    // Six numbered messages (accepted + sequenced per order), all kept while alone.
    assert_eq!(drain(&mut oe, id).len(), 6);
    oe.disconnected(id, 0);
    // A second session: each may keep 6 / 2 = 3 now.
    let (bob, _) = login(&mut oe, &key(2), 1, 0, 0);
    oe.disconnected(bob, 0);
    let (_, refused) = login(&mut oe, &alice, 9, 1, 1);
    let ServerMessage::LoginRejected(rejected) = refused[0] else {
        panic!("{refused:?}")
    };
    assert_eq!(
        LoginRejectReason::from_code(rejected.reason.get()),
        Some(LoginRejectReason::ResendUnavailable)
    );
    let (_, resumed) = login(&mut oe, &alice, 9, 4, 1);
    let seqs: Vec<u64> = resumed[1..].iter().map(ServerMessage::seq).collect();
    assert_eq!(seqs, [4, 5, 6], "the newest three are kept");
}

#[test]
fn sessions_are_bounded_and_the_longest_gone_is_dropped_first() {
    let mut oe = OrderEntry::new(OrderEntryConfig {
        max_sessions: 2,
        ..OrderEntryConfig::default()
    });
    let (a, _) = login(&mut oe, &key(1), 1, 0, 0);
    let (b, _) = login(&mut oe, &key(2), 1, 0, 0);
    let (_, full) = login(&mut oe, &key(3), 1, 0, 0);
    assert!(
        matches!(full[0], ServerMessage::LoginRejected(r)
            if LoginRejectReason::from_code(r.reason.get()) == Some(LoginRejectReason::TooManySessions)),
        "both sessions are connected: {full:?}"
    );
    oe.disconnected(a, 10);
    oe.disconnected(b, 20);
    let (_, third) = login(&mut oe, &key(3), 1, 0, 30);
    assert!(matches!(third[0], ServerMessage::LoginAccepted(_)));
    assert_eq!(oe.session_count(), 2);
    // Key 1's session (gone longest) was dropped: it starts again from seq 1.
    let (_, again) = login(&mut oe, &key(2), 1, 0, 40);
    let ServerMessage::LoginAccepted(kept) = again[0] else {
        panic!("{again:?}")
    };
    assert_eq!(kept.next_server_seq.get(), 1);
}

#[test]
fn heartbeats_go_out_when_idle_and_silence_ends_the_session() {
    let mut oe = OrderEntry::new(OrderEntryConfig::default());
    let (id, _) = login(&mut oe, &key(1), 1, 0, 0);
    oe.tick(SECOND / 2);
    assert!(drain(&mut oe, id).is_empty());
    oe.tick(SECOND);
    assert!(matches!(
        drain(&mut oe, id)[..],
        [ServerMessage::Heartbeat(_)]
    ));
    let heartbeat: Heartbeat = blank(0);
    oe.receive(id, heartbeat.as_bytes(), 2 * SECOND);
    oe.tick(4 * SECOND);
    assert!(!oe.is_closing(id), "heard from within three intervals");
    oe.tick(5 * SECOND);
    assert!(oe.is_closing(id));
    assert!(matches!(
        drain(&mut oe, id).last(),
        Some(ServerMessage::Logout(l)) if LogoutReason::from_code(l.reason.get()) == Some(LogoutReason::HeartbeatTimeout)
    ));
}

#[test]
fn a_storm_of_refused_messages_ends_the_session() {
    let mut oe = OrderEntry::new(OrderEntryConfig {
        max_consecutive_rejects: 5,
        ..OrderEntryConfig::default()
    });
    let (id, _) = login(&mut oe, &key(1), 1, 0, 0);
    for _ in 0..5 {
        oe.receive(id, new_order(99, 1).as_bytes(), 0);
    }
    assert!(!oe.is_closing(id));
    oe.receive(id, new_order(99, 1).as_bytes(), 0);
    assert!(oe.is_closing(id));
}

#[test]
fn engine_events_reach_every_session_of_the_account_and_no_other() {
    let mut oe = OrderEntry::new(OrderEntryConfig::default());
    let alice = key(1);
    let (a1, _) = login(&mut oe, &alice, 1, 0, 0);
    let (a2, _) = login(&mut oe, &alice, 2, 0, 0);
    let (b, _) = login(&mut oe, &key(2), 1, 0, 0);
    oe.receive(a1, new_order(1, 5).as_bytes(), 0);
    let mut submissions = Vec::new();
    oe.take_submissions(&mut submissions);
    answer(&mut oe, &submissions, 1);
    let first = drain(&mut oe, a1);
    let second = drain(&mut oe, a2);
    assert!(
        matches!(first[..], [ServerMessage::OrderAccepted(m), ServerMessage::Sequenced(_)] if m.client_seq.get() == 1)
    );
    // The other session of the account sees the order (as not its own), not the notices.
    assert!(matches!(second[..], [ServerMessage::OrderAccepted(m)] if m.client_seq.get() == 0));
    assert!(drain(&mut oe, b).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes (whole valid frames with random fields mixed with garbage) on one
    /// session: the state machine never panics, never submits for another account, and a
    /// second session is unaffected.
    #[test]
    fn no_input_lets_a_session_act_for_another_account(
        chunks in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                (any::<u8>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 48))
                    .prop_map(|(kind, seq, mut body)| {
                        let kinds = [1u8, 2, 3, 10, 11, 12, 13, 20, 100, kind];
                        let kind = kinds[(seq % kinds.len() as u64) as usize];
                        let length = wire::length_of(kind).unwrap_or(24).min(48);
                        body.truncate(length);
                        body[..2].copy_from_slice(&(length as u16).to_le_bytes());
                        body[2] = kind;
                        body[3] = VERSION;
                        body[8..16].copy_from_slice(&(seq % 4).to_le_bytes());
                        body
                    }),
            ],
            1..40,
        )
    ) {
        let mut oe = OrderEntry::new(OrderEntryConfig::default());
        let (attacker_key, victim_key) = (key(1), key(2));
        let attacker = wire::account_id_of(&attacker_key.verifying_key().to_bytes());
        let victim = wire::account_id_of(&victim_key.verifying_key().to_bytes());
        let (bad, _) = login(&mut oe, &attacker_key, 1, 0, 0);
        let (good, _) = login(&mut oe, &victim_key, 1, 0, 0);
        let mut submissions = Vec::new();
        for chunk in &chunks {
            oe.receive(bad, chunk, 0);
            oe.take_submissions(&mut submissions);
            let _ = drain(&mut oe, bad);
        }
        for submission in &submissions {
            let account = match &submission.command {
                &Command::Place(order) => order.account,
                &Command::Cancel { account, .. }
                | &Command::CancelAll { account, .. }
                | &Command::Modify { account, .. } => account,
                other => panic!("a session submitted {other:?}"),
            };
            prop_assert_eq!(account, attacker);
        }
        oe.receive(good, new_order(1, 1).as_bytes(), 0);
        let mut mine = Vec::new();
        oe.take_submissions(&mut mine);
        prop_assert_eq!(mine.len(), 1);
        let Command::Place(order) = mine[0].command else { panic!("a place") };
        prop_assert_eq!(order.account, victim);
    }
}

#[test]
fn a_refused_submission_is_answered_overloaded_and_the_next_goes_through() {
    let mut oe = OrderEntry::new(OrderEntryConfig::default());
    let (id, _) = login(&mut oe, &key(1), 1, 0, 0);
    oe.receive(id, new_order(1, 1).as_bytes(), 0);
    oe.receive(id, new_order(2, 2).as_bytes(), 0);
    let mut submissions = Vec::new();
    oe.take_submissions(&mut submissions);
    // The pipeline took the first and refused the second.
    oe.refused(submissions[1].clone(), 0);
    answer(&mut oe, &submissions[..1], 1);
    let replies = drain(&mut oe, id);
    let ServerMessage::Reject(reject) = replies[0] else {
        panic!("{replies:?}")
    };
    assert_eq!(
        (
            reject.ref_seq.get(),
            RejectCode::from_code(reject.reason.get())
        ),
        (2, Some(RejectCode::Overloaded))
    );
    assert!(matches!(replies[1], ServerMessage::OrderAccepted(m) if m.client_seq.get() == 1));
    // The refused message's seq is used up: the client sends it again as seq 3.
    oe.receive(id, new_order(3, 2).as_bytes(), 0);
    let mut again = Vec::new();
    oe.take_submissions(&mut again);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].client.tag, 3);
}

#[test]
fn an_account_cannot_crowd_out_others_and_a_refused_resume_creates_nothing() {
    let mut oe = OrderEntry::new(OrderEntryConfig {
        max_sessions: 4,
        max_sessions_per_account: 2,
        ..OrderEntryConfig::default()
    });
    let (other, _) = login(&mut oe, &key(9), 1, 0, 0);
    oe.disconnected(other, 1);
    // A resume of a session that does not exist is refused and leaves no session behind.
    let (_, refused) = login(&mut oe, &key(1), 50, 5, 2);
    assert!(matches!(refused[0], ServerMessage::LoginRejected(_)));
    assert_eq!(oe.session_count(), 1);
    // Key 1 opens many sessions: it only ever evicts its own.
    for session_id in 1..=6 {
        let (id, reply) = login(&mut oe, &key(1), session_id, 0, 10 + session_id);
        assert!(
            matches!(reply[0], ServerMessage::LoginAccepted(_)),
            "{reply:?}"
        );
        oe.disconnected(id, 10 + session_id);
    }
    assert_eq!(oe.session_count(), 3, "two of key 1's and key 9's");
    let (_, back) = login(&mut oe, &key(9), 1, 1, 100);
    assert!(
        matches!(back[0], ServerMessage::LoginAccepted(_)),
        "key 9's session survived"
    );
}

fn login_with_flags(oe: &mut OrderEntry, key: &SigningKey, flags: u32) -> ConnId {
    let id = oe.connect(0, [7; 32]);
    let ServerMessage::Challenge(challenge) = drain(oe, id)[0] else {
        panic!("challenge first")
    };
    let public_key = key.verifying_key().to_bytes();
    let mut message: Login = blank(0);
    message.public_key = public_key;
    message.session_id = 1.into();
    message.heartbeat_ms = 1000.into();
    message.flags = flags.into();
    message.signature = key
        .sign(&login_signing_bytes(
            &challenge.nonce,
            &public_key,
            1,
            0,
            1000,
            flags,
        ))
        .to_bytes();
    oe.receive(id, message.as_bytes(), 0);
    drain(oe, id);
    id
}

#[test]
fn refused_cancel_on_disconnect_inputs_are_offered_again_first() {
    let mut oe = OrderEntry::new(OrderEntryConfig {
        markets: vec![0, 1],
        ..OrderEntryConfig::default()
    });
    let id = login_with_flags(&mut oe, &key(1), FLAG_CANCEL_ON_DISCONNECT);
    oe.disconnected(id, 0);
    let mut cancels = Vec::new();
    oe.take_submissions(&mut cancels);
    assert_eq!(cancels.len(), 2, "one cancel-all per market");
    // The pipeline is full: both are refused, and come back before newer inputs.
    for cancel in cancels.iter().rev() {
        oe.refused(cancel.clone(), 0);
    }
    assert!(oe.has_submissions());
    let (other, _) = login(&mut oe, &key(2), 1, 0, 0);
    oe.receive(other, new_order(1, 1).as_bytes(), 0);
    let mut next = Vec::new();
    oe.take_submissions(&mut next);
    assert_eq!(next.len(), 3);
    assert!(next[..2]
        .iter()
        .all(|s| matches!(s.command, Command::CancelAll { .. })));
    assert!(matches!(next[2].command, Command::Place(_)));
}

#[test]
fn a_half_closed_connection_gets_its_last_answers_before_it_closes() {
    let mut oe = OrderEntry::new(OrderEntryConfig::default());
    let (id, _) = login(&mut oe, &key(1), 1, 0, 0);
    oe.receive(id, new_order(1, 1).as_bytes(), 0);
    oe.close_after_flush(id);
    assert!(!oe.is_closing(id), "an input is still in flight");
    let mut submissions = Vec::new();
    oe.take_submissions(&mut submissions);
    answer(&mut oe, &submissions, 1);
    assert!(oe.is_closing(id));
    let replies = drain(&mut oe, id);
    assert!(matches!(
        replies[..],
        [ServerMessage::OrderAccepted(_), ServerMessage::Sequenced(_)]
    ));
}

#[test]
fn node_shutdown_runs_cancel_on_disconnect() {
    let mut oe = OrderEntry::new(OrderEntryConfig {
        markets: vec![3],
        ..OrderEntryConfig::default()
    });
    login_with_flags(&mut oe, &key(1), FLAG_CANCEL_ON_DISCONNECT);
    login_with_flags(&mut oe, &key(2), 0);
    oe.shutdown(0);
    let mut cancels = Vec::new();
    oe.take_submissions(&mut cancels);
    let account = wire::account_id_of(&key(1).verifying_key().to_bytes());
    assert_eq!(cancels.len(), 1);
    assert_eq!(
        cancels[0].command,
        Command::CancelAll { account, market: 3 }
    );
}

// ---- perpetual futures: reduce-only orders, position and liquidation messages -------------

fn placed(oe: &mut OrderEntry) -> Vec<engine::NewOrder> {
    let mut submissions = Vec::new();
    oe.take_submissions(&mut submissions);
    submissions
        .iter()
        .map(|s| match &s.command {
            &Command::Place(order) => order,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_reduce_only_order_reaches_the_engine_as_reduce_only() {
    use engine::{SelfTradePrevention, Side, TimeInForce};
    use gateway::client::{new_order_message, OrderOptions, OrderRequest};
    let mut oe = OrderEntry::new(OrderEntryConfig::default());
    let (id, _) = login(&mut oe, &key(1), 1, 0, 0);
    let request = OrderRequest {
        market: 4,
        oid: 9,
        side: Side::Sell,
        price: Some(250),
        qty: 3,
        tif: TimeInForce::Gtc,
        stp: SelfTradePrevention::CancelMaker,
    };
    let reduce_only = OrderOptions { reduce_only: true };
    // The client library sets bit 7 of order_type, on limit and on market orders.
    let limit = new_order_message(&request, reduce_only, 1);
    assert_eq!(limit.order_type, 0x80);
    assert_eq!(limit.as_bytes()[23], 0x80, "order_type is byte 23");
    let market_request = OrderRequest {
        oid: 10,
        price: None,
        tif: TimeInForce::Ioc,
        ..request
    };
    let market = new_order_message(&market_request, reduce_only, 2);
    assert_eq!(market.order_type, 0x81);
    let plain = new_order_message(&request, OrderOptions::default(), 3);
    assert_eq!(plain.order_type, 0);
    for message in [limit, market, plain] {
        oe.receive(id, message.as_bytes(), 0);
    }
    let orders = placed(&mut oe);
    let account = wire::account_id_of(&key(1).verifying_key().to_bytes());
    assert_eq!(
        orders,
        [
            engine::NewOrder {
                account,
                market: 4,
                oid: 9,
                side: Side::Sell,
                price: Some(250),
                qty: 3,
                tif: TimeInForce::Gtc,
                stp: SelfTradePrevention::CancelMaker,
                reduce_only: true,
            },
            engine::NewOrder {
                oid: 10,
                price: None,
                tif: TimeInForce::Ioc,
                reduce_only: true,
                ..orders[0]
            },
            engine::NewOrder {
                reduce_only: false,
                ..orders[0]
            },
        ]
    );
    assert!(drain(&mut oe, id).is_empty(), "no refusal");
}

#[test]
fn unknown_order_type_bits_are_refused_and_the_session_goes_on() {
    let mut oe = OrderEntry::new(OrderEntryConfig::default());
    let (id, _) = login(&mut oe, &key(1), 1, 0, 0);
    // Bits 1-6 are not defined (with or without the reduce-only bit); 2 is no order type.
    let bad = [0x02u8, 0x40, 0x82, 0x7f, 0xff];
    for (i, &order_type) in bad.iter().enumerate() {
        let mut order = new_order(i as u64 + 1, 1);
        order.order_type = order_type;
        oe.receive(id, order.as_bytes(), 0);
    }
    assert!(placed(&mut oe).is_empty(), "nothing reaches the engine");
    let replies = drain(&mut oe, id);
    assert_eq!(replies.len(), bad.len());
    for (i, reply) in replies.iter().enumerate() {
        let ServerMessage::Reject(reject) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(reject.header.seq.get(), i as u64 + 1, "numbered");
        assert_eq!(reject.ref_seq.get(), i as u64 + 1);
        assert_eq!(reject.ref_kind, NewOrder::KIND);
        assert_eq!(
            RejectCode::from_code(reject.reason.get()),
            Some(RejectCode::InvalidField)
        );
    }
    // Each refused message used up its seq; the next one is taken.
    let mut good = new_order(bad.len() as u64 + 1, 2);
    good.order_type = ORDER_TYPE_REDUCE_ONLY;
    oe.receive(id, good.as_bytes(), 0);
    let orders = placed(&mut oe);
    assert_eq!(orders.len(), 1);
    assert!(orders[0].reduce_only);
    assert!(!oe.is_closing(id));
}

/// An engine event of the input `seq` from `client`.
fn event(oe: &mut OrderEntry, client: sequencer::ClientRef, seq: u64, event: Event) {
    oe.on_output(&Output::Event { client, seq, event }, 0);
}

#[test]
fn perp_events_reach_only_the_accounts_sessions_and_are_resent_on_resume() {
    use engine::{LiquidationStep, Side};
    let mut oe = OrderEntry::new(OrderEntryConfig::default());
    let (alice_key, bob_key) = (key(1), key(2));
    let alice = wire::account_id_of(&alice_key.verifying_key().to_bytes());
    let bob = wire::account_id_of(&bob_key.verifying_key().to_bytes());
    let (a1, _) = login(&mut oe, &alice_key, 1, 0, 0);
    let (a2, _) = login(&mut oe, &alice_key, 2, 0, 0);
    let (b, _) = login(&mut oe, &bob_key, 1, 0, 0);
    let (carol, _) = login(&mut oe, &key(3), 1, 0, 0);

    // Alice's session 1 buys against Bob's resting sell: both positions change.
    let mut buy = new_order(1, 5);
    buy.market = 7.into();
    oe.receive(a1, buy.as_bytes(), 0);
    let mut submissions = Vec::new();
    oe.take_submissions(&mut submissions);
    let client = submissions[0].client;
    let big: i128 = (1i128 << 70) + 12_345; // past i64: the full 16 bytes are used
    event(
        &mut oe,
        client,
        20,
        Event::Accepted {
            market: 7,
            account: alice,
            oid: 5,
        },
    );
    event(
        &mut oe,
        client,
        20,
        Event::Fill {
            market: 7,
            taker_account: alice,
            taker_oid: 5,
            maker_account: bob,
            maker_oid: 8,
            taker_side: Side::Buy,
            price: 100,
            qty: 1,
            taker_fee: 2,
            maker_fee: 0,
            taker_left: 0,
            maker_left: 0,
        },
    );
    for (account, size, open_notional, pnl, funding) in
        [(alice, 1, big, 0, 3), (bob, -1, -big, -7, -3)]
    {
        event(
            &mut oe,
            client,
            20,
            Event::Position {
                account,
                market: 7,
                size,
                open_notional,
                realized_pnl: pnl,
                funding_paid: funding,
            },
        );
    }
    // The insurance fund's position concerns no session.
    event(
        &mut oe,
        client,
        20,
        Event::Position {
            account: engine::INSURANCE_ACCOUNT,
            market: 7,
            size: 1,
            open_notional: 1,
            realized_pnl: 0,
            funding_paid: 0,
        },
    );
    oe.on_output(
        &Output::Sequenced {
            client,
            seq: 20,
            height: 1,
            times: Default::default(),
        },
        0,
    );
    let first = drain(&mut oe, a1);
    assert!(matches!(
        first[..],
        [
            ServerMessage::OrderAccepted(_),
            ServerMessage::Fill(_),
            ServerMessage::PositionUpdate(p),
            ServerMessage::Sequenced(_),
        ] if p.client_seq.get() == 1
    ));
    let ServerMessage::PositionUpdate(position) = first[2] else {
        unreachable!()
    };
    assert_eq!(
        (
            position.seq.get(),
            position.market.get(),
            position.size.get(),
            position.open_notional.get(),
            position.realized_pnl.get(),
            position.funding_paid.get(),
        ),
        (20, 7, 1, big, 0, 3)
    );
    let bytes = position.as_bytes();
    assert_eq!(bytes.len(), 80);
    assert_eq!(i128::from_le_bytes(bytes[48..64].try_into().unwrap()), big);
    let second = drain(&mut oe, a2);
    assert!(matches!(
        second[..],
        [
            ServerMessage::OrderAccepted(_),
            ServerMessage::Fill(_),
            ServerMessage::PositionUpdate(p),
        ] if p.client_seq.get() == 0 && p.size.get() == 1
    ));
    let bobs = drain(&mut oe, b);
    assert!(matches!(
        bobs[..],
        [ServerMessage::Fill(_), ServerMessage::PositionUpdate(p)]
            if p.client_seq.get() == 0
                && p.size.get() == -1
                && p.open_notional.get() == -big
                && p.realized_pnl.get() == -7
                && p.funding_paid.get() == -3
    ));
    assert!(drain(&mut oe, carol).is_empty());

    // Alice's second session drops; an oracle input (not from this gateway) liquidates Bob:
    // a book step, then deleveraging against Alice.
    oe.disconnected(a2, 1);
    let oracle = sequencer::ClientRef {
        connection: 0,
        tag: 0,
    };
    let liquidations = [
        Event::Liquidation {
            account: bob,
            market: 7,
            step: LiquidationStep::Book,
            lots: 1,
            notional: 95,
            fee: 1,
            bad_debt: 0,
        },
        Event::Adl {
            account: alice,
            market: 7,
            lots: 2,
            notional: 190,
        },
        Event::Liquidation {
            account: bob,
            market: 7,
            step: LiquidationStep::Adl,
            lots: 2,
            notional: 190,
            fee: 0,
            bad_debt: 11,
        },
    ];
    for liquidation in liquidations {
        event(&mut oe, oracle, 21, liquidation);
    }
    let bobs = drain(&mut oe, b);
    let steps: Vec<_> = bobs
        .iter()
        .map(|m| match m {
            ServerMessage::Liquidation(l) => {
                assert_eq!(
                    (l.client_seq.get(), l.seq.get(), l.market.get()),
                    (0, 21, 7)
                );
                (
                    wire::liquidation_step_from_code(l.step),
                    l.lots.get(),
                    l.notional.get(),
                    l.fee.get(),
                    l.bad_debt.get(),
                )
            }
            other => panic!("only liquidations for Bob: {other:?}"),
        })
        .collect();
    assert_eq!(
        steps,
        [
            (Some(LiquidationStep::Book), 1, 95, 1, 0),
            (Some(LiquidationStep::Adl), 2, 190, 0, 11),
        ]
    );
    let alices = drain(&mut oe, a1);
    let [ServerMessage::Deleveraged(adl)] = alices[..] else {
        panic!("only the deleveraging for Alice: {alices:?}")
    };
    assert_eq!(
        (
            adl.client_seq.get(),
            adl.seq.get(),
            adl.market.get(),
            adl.lots.get(),
            adl.notional.get()
        ),
        (0, 21, 7, 2, 190)
    );
    assert!(drain(&mut oe, carol).is_empty());

    // Session 2 resumes after its last message (seq 3): the deleveraging it missed while
    // away comes again, byte for byte as session 1 got it but for its own seq.
    let (_, resumed) = login(&mut oe, &alice_key, 2, 4, 2);
    let ServerMessage::LoginAccepted(accepted) = resumed[0] else {
        panic!("{resumed:?}")
    };
    assert_eq!(accepted.next_server_seq.get(), 5);
    let [_, ServerMessage::Deleveraged(missed)] = resumed[..] else {
        panic!("{resumed:?}")
    };
    assert_eq!(missed.header.seq.get(), 4);
    let mut expected = adl;
    expected.header.seq = 4.into();
    assert_eq!(missed.as_bytes(), expected.as_bytes());
    // A resume from the start replays the position update too.
    oe.disconnected(a1, 3);
    let (_, all) = login(&mut oe, &alice_key, 1, 1, 4);
    let kinds: Vec<u8> = all[1..]
        .iter()
        .map(|m| match m {
            ServerMessage::OrderAccepted(_) => OrderAccepted::KIND,
            ServerMessage::Fill(_) => Fill::KIND,
            ServerMessage::PositionUpdate(_) => PositionUpdate::KIND,
            ServerMessage::Sequenced(_) => Sequenced::KIND,
            ServerMessage::Deleveraged(_) => Deleveraged::KIND,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, [110, 112, 117, 115, 119]);
    assert!(
        matches!(all[3], ServerMessage::PositionUpdate(p) if p.as_bytes() == position.as_bytes())
    );
}

// ---- login keys ---------------------------------------------------------------------------

/// What a login with these key bytes and this signature gets (the signature by `signer`
/// over the proper signing bytes, if given, else 64 zero bytes).
fn login_answer(public_key: [u8; 32], signer: Option<&SigningKey>) -> ServerMessage {
    let mut oe = OrderEntry::new(OrderEntryConfig::default());
    let id = oe.connect(0, [3; 32]);
    let ServerMessage::Challenge(challenge) = drain(&mut oe, id)[0] else {
        panic!("challenge first")
    };
    let mut message: Login = blank(0);
    message.public_key = public_key;
    message.session_id = 1.into();
    message.heartbeat_ms = 1000.into();
    if let Some(signer) = signer {
        let signed = login_signing_bytes(&challenge.nonce, &public_key, 1, 0, 1000, 0);
        message.signature = signer.sign(&signed).to_bytes();
    }
    oe.receive(id, message.as_bytes(), 0);
    let replies = drain(&mut oe, id);
    assert_eq!(replies.len(), 1, "one answer: {replies:?}");
    replies[0]
}

fn login_reject_reason(public_key: [u8; 32]) -> Option<LoginRejectReason> {
    match login_answer(public_key, None) {
        ServerMessage::LoginRejected(reject) => LoginRejectReason::from_code(reject.reason.get()),
        other => panic!("expected a login reject, got {other:?}"),
    }
}

/// `p + y` (p = 2^255 - 19) as 32 little-endian bytes: a non-canonical encoding of `y`.
fn p_plus(y: u8) -> [u8; 32] {
    let mut bytes = [0xff; 32];
    bytes[31] = 0x7f;
    bytes[0] = 0xed + y;
    bytes
}

#[test]
fn non_canonical_and_weak_keys_are_bad_key_and_a_wrong_signature_is_bad_signature() {
    // y = p + 1: RFC 8032 decoding fails (y >= p); the library reads it as y = 1.
    assert_eq!(
        login_reject_reason(p_plus(1)),
        Some(LoginRejectReason::BadKey)
    );
    // A point of large order, encoded as y + p: still not a valid encoding.
    let y = (2..19u8)
        .find(|&y| {
            let mut canonical = [0u8; 32];
            canonical[0] = y;
            ed25519_dalek::VerifyingKey::from_bytes(&canonical).is_ok_and(|k| !k.is_weak())
        })
        .expect("some y below 19 is a point of large order");
    let mut canonical = [0u8; 32];
    canonical[0] = y;
    assert_eq!(
        login_reject_reason(canonical),
        Some(LoginRejectReason::BadSignature),
        "the canonical encoding of that point is a key; only the signature is wrong"
    );
    assert_eq!(
        login_reject_reason(p_plus(y)),
        Some(LoginRejectReason::BadKey)
    );
    // x = 0 with the sign bit set (the identity, y = 1): decoding fails.
    let mut negative_zero = [0u8; 32];
    negative_zero[0] = 1;
    negative_zero[31] = 0x80;
    assert_eq!(
        login_reject_reason(negative_zero),
        Some(LoginRejectReason::BadKey)
    );
    // The canonical identity: a valid encoding of a small-order point (a weak key).
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert_eq!(
        login_reject_reason(identity),
        Some(LoginRejectReason::BadKey)
    );
    // Not on the curve at all (no square root): bad_key as before.
    let not_a_point = (2..=255u8)
        .map(|b| [b; 32])
        .find(|bytes| ed25519_dalek::VerifyingKey::from_bytes(bytes).is_err())
        .expect("some byte pattern is not a point");
    assert_eq!(
        login_reject_reason(not_a_point),
        Some(LoginRejectReason::BadKey)
    );
    // A real key with a wrong signature, and with the right one.
    let alice = key(1);
    let public_key = alice.verifying_key().to_bytes();
    assert_eq!(
        login_reject_reason(public_key),
        Some(LoginRejectReason::BadSignature)
    );
    assert!(matches!(
        login_answer(public_key, Some(&alice)),
        ServerMessage::LoginAccepted(_)
    ));
}

/// A signed transaction of `key` placing a buy of 1 lot at 100 in market 1 with `oid`.
fn signed_place(key: &SigningKey, chain_id: [u8; 32], nonce: u64, oid: u64) -> Vec<u8> {
    let tx = transactions::Transaction {
        chain_id,
        signer: key.verifying_key().to_bytes(),
        nonce,
        actions: vec![transactions::Action::Place {
            market: 1,
            oid,
            side: engine::Side::Buy,
            price: Some(100),
            qty: 1,
            tif: engine::TimeInForce::Gtc,
            stp: engine::SelfTradePrevention::CancelTaker,
            reduce_only: false,
        }],
    };
    tx.sign(key).bytes().to_vec()
}

fn transaction_frame(seq: u64, tx: &[u8]) -> Vec<u8> {
    let mut frame = Header::new(TRANSACTION_KIND, HEADER_BYTES + tx.len(), seq)
        .as_bytes()
        .to_vec();
    frame.extend_from_slice(tx);
    frame
}

#[test]
fn on_a_chain_only_the_sessions_own_signed_transactions_are_taken() {
    let chain_id = [9; 32];
    let mut oe = OrderEntry::new(OrderEntryConfig {
        chain_id: Some(chain_id),
        markets: vec![1],
        ..OrderEntryConfig::default()
    });
    oe.set_chain_tip(7, 1_700_000_000_000);
    let (alice, bob) = (key(1), key(2));
    let id = login_with_flags(&mut oe, &alice, FLAG_CANCEL_ON_DISCONNECT);
    // The login reply said: a chain, cancel-on-disconnect not in force, and its chain info.
    let (again, reply) = login(&mut oe, &alice, 2, 0, 0);
    let (ServerMessage::LoginAccepted(accepted), ServerMessage::ChainInfo(info)) =
        (reply[0], reply[1])
    else {
        panic!("LoginAccepted then ChainInfo, got {reply:?}")
    };
    assert_eq!(accepted.flags.get(), FLAG_CHAIN);
    assert_eq!(
        (info.chain_id, info.height.get(), info.block_time_ms.get()),
        (chain_id, 7, 1_700_000_000_000)
    );
    // Unsigned orders are refused; the seq is used.
    oe.receive(id, new_order(1, 5).as_bytes(), 0);
    let refused = drain(&mut oe, id);
    assert!(matches!(refused[..], [ServerMessage::Reject(r)]
        if r.reason.get() == RejectCode::SignatureRequired.code() && r.ref_seq.get() == 1));
    // Bob's transaction on Alice's session: signer_mismatch.
    oe.receive(
        id,
        &transaction_frame(2, &signed_place(&bob, chain_id, 1, 5)),
        0,
    );
    let refused = drain(&mut oe, id);
    assert!(matches!(refused[..], [ServerMessage::Reject(r)]
        if r.reason.get() == RejectCode::SignerMismatch.code() && r.ref_kind == TRANSACTION_KIND));
    // A truncated transaction is a bad length (the session goes on).
    let own = signed_place(&alice, chain_id, 1, 5);
    oe.receive(id, &transaction_frame(3, &own[..own.len() - 1]), 0);
    assert!(matches!(drain(&mut oe, id)[..], [ServerMessage::Reject(r)]
        if r.reason.get() == RejectCode::BadLength.code()));
    // Her own: handed on as is, nothing submitted unsigned.
    oe.receive(id, &transaction_frame(3, &own), 0);
    let mut txs = Vec::new();
    oe.take_transactions(&mut txs);
    assert_eq!(txs.len(), 1);
    assert_eq!(txs[0].bytes, own);
    assert_eq!(txs[0].client.tag, 3);
    let mut unsigned = Vec::new();
    oe.take_submissions(&mut unsigned);
    assert!(unsigned.is_empty());
    // Admitted, then executed: the session hears both, with its client seq.
    let client = txs[0].client;
    oe.transaction_status(client, [4; 32], TX_ADMITTED, 0, 0);
    let account = wire::account_id_of(&alice.verifying_key().to_bytes());
    let event = Event::Rejected {
        account,
        oid: Some(5),
        reason: engine::RejectReason::InsufficientBalance,
    };
    oe.on_output(
        &Output::Event {
            client,
            seq: 40,
            event,
        },
        0,
    );
    oe.on_output(
        &Output::Sequenced {
            client,
            seq: 40,
            height: 8,
            times: Default::default(),
        },
        0,
    );
    let replies = drain(&mut oe, id);
    assert!(matches!(replies[0], ServerMessage::TransactionStatus(s)
        if s.status == TX_ADMITTED && s.client_seq.get() == 3 && s.hash == [4; 32]));
    assert!(matches!(replies[1], ServerMessage::OrderRejected(r)
        if r.client_seq.get() == 3 && r.oid.get() == 5 && r.market.get() == 1));
    assert!(matches!(replies[2], ServerMessage::Sequenced(s) if s.height.get() == 8));
    // A refused one: told with the mempool's code.
    oe.receive(
        id,
        &transaction_frame(4, &signed_place(&alice, chain_id, 2, 6)),
        0,
    );
    oe.take_transactions(&mut txs);
    oe.transaction_status(txs[1].client, [5; 32], TX_REFUSED, 7, 0);
    assert!(
        matches!(drain(&mut oe, id)[..], [ServerMessage::TransactionStatus(s)]
        if s.status == TX_REFUSED && s.code.get() == 7 && s.client_seq.get() == 4)
    );
    // Disconnecting cancels nothing (nobody may sign for the account).
    oe.disconnected(id, 0);
    oe.disconnected(again, 0);
    oe.take_submissions(&mut unsigned);
    assert!(unsigned.is_empty());
}

#[test]
fn a_node_that_is_not_a_chain_refuses_transactions() {
    let mut oe = OrderEntry::new(OrderEntryConfig::default());
    let alice = key(1);
    let (id, _) = login(&mut oe, &alice, 1, 0, 0);
    oe.receive(
        id,
        &transaction_frame(1, &signed_place(&alice, [0; 32], 1, 5)),
        0,
    );
    assert!(matches!(drain(&mut oe, id)[..], [ServerMessage::Reject(r)]
        if r.reason.get() == RejectCode::TransactionsUnsupported.code()));
    let mut txs = Vec::new();
    oe.take_transactions(&mut txs);
    assert!(txs.is_empty());
}

/// The hex blocks of docs/protocol.md's section `heading` (up to the next `## `), in order:
/// lines of `OO: ` then up to 16 bytes in 48 columns, then a comment.
fn doc_hex_blocks(heading: &str) -> Vec<Vec<u8>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .expect("docs/protocol.md");
    let start = doc.find(heading).expect("the section") + heading.len();
    let section = &doc[start..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut blocks = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for line in section.lines() {
        if line.starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some(Vec::new()),
            }
            continue;
        }
        let Some(bytes) = current.as_mut() else {
            continue;
        };
        let offset = usize::from_str_radix(&line[..2], 16).expect(line);
        assert_eq!(offset, bytes.len(), "{line}");
        let hex = &line[4..line.len().min(4 + 48)];
        bytes.extend(
            hex.split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).expect(line)),
        );
    }
    blocks
}

/// `bytes` as docs/protocol.md lays them out: 16 a line, with offsets (for a failure
/// message that shows what to write).
fn doc_hex_lines(bytes: &[u8]) -> String {
    let row = |chunk: &[u8]| {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let (left, right) = hex.split_at(hex.len().min(8));
        format!("{}  {}", left.join(" "), right.join(" "))
    };
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, chunk)| format!("{:02x}: {:<48}\n", i * 16, row(chunk)))
        .collect()
}

/// docs/protocol.md, "Worked example on a chain": the `LoginAccepted`, `ChainInfo`,
/// `Transaction` and `TransactionStatus` there are what the client encoders and this server
/// write for docs/transactions.md's key, chain id and nonce and its worked example's order.
#[test]
fn the_chain_worked_example_of_the_protocol_document_is_what_the_server_writes() {
    let chain_id = [0x4e; 32];
    let mut oe = OrderEntry::new(OrderEntryConfig {
        chain_id: Some(chain_id),
        markets: vec![0],
        ..OrderEntryConfig::default()
    });
    oe.set_chain_tip(6, 1_799_999_999_000);
    let key = SigningKey::from_bytes(&std::array::from_fn(|i| i as u8 + 1));
    assert_eq!(
        wire::account_id_of(&key.verifying_key().to_bytes()),
        482625985700804723
    );
    let (id, login_reply) = login(&mut oe, &key, 1, 0, 0);
    let (ServerMessage::LoginAccepted(accepted), ServerMessage::ChainInfo(info)) =
        (login_reply[0], login_reply[1])
    else {
        panic!("LoginAccepted then ChainInfo, got {login_reply:?}")
    };
    let signed = transactions::Transaction {
        chain_id,
        signer: key.verifying_key().to_bytes(),
        nonce: 1_800_000_000_000,
        actions: vec![transactions::Action::Place {
            market: 0,
            oid: 7,
            side: engine::Side::Buy,
            price: Some(50_000),
            qty: 2,
            tif: engine::TimeInForce::Gtc,
            stp: engine::SelfTradePrevention::CancelMaker,
            reduce_only: false,
        }],
    }
    .sign(&key);
    let frame = transaction_frame(1, signed.bytes());
    oe.receive(id, &frame, 0);
    let mut handed_on = Vec::new();
    oe.take_transactions(&mut handed_on);
    assert_eq!(handed_on[0].bytes, signed.bytes(), "handed on as sent");
    oe.transaction_status(handed_on[0].client, signed.hash().0, TX_ADMITTED, 0, 0);
    let ServerMessage::TransactionStatus(status) = drain(&mut oe, id)[0] else {
        panic!("a TransactionStatus")
    };
    let computed = [
        accepted.as_bytes(),
        info.as_bytes(),
        &frame[..],
        status.as_bytes(),
    ];
    let written = doc_hex_blocks("## Worked example on a chain");
    let names = [
        "LoginAccepted",
        "ChainInfo",
        "Transaction",
        "TransactionStatus",
    ];
    assert_eq!(written.len(), names.len(), "one hex block per message");
    // On a change of format, the message gives the lines to paste into the doc.
    let differ: String = names
        .iter()
        .zip(computed)
        .zip(&written)
        .filter(|((_, computed), written)| *computed != &written[..])
        .map(|((name, computed), _)| format!("{name}:\n{}", doc_hex_lines(computed)))
        .collect();
    assert!(differ.is_empty(), "hash {}\n{differ}", signed.hash());
}
