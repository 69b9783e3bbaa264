//! Arbitrary bytes into the order-entry state machine, on a connection before login and on a
//! logged-in session, with a second session beside them. Checks: no panic; nothing is ever
//! submitted for an account other than the session's; queued output is whole messages; the
//! second session still gets its order through.
#![no_main]

use ed25519_dalek::{Signer, SigningKey};
use engine::Command;
use gateway::order_entry::{OrderEntry, OrderEntryConfig};
use gateway::wire::{self, *};
use libfuzzer_sys::fuzz_target;
use zerocopy::IntoBytes;

fn login(oe: &mut OrderEntry, key: &SigningKey, nonce: [u8; 32]) -> gateway::connections::ConnId {
    let id = oe.connect(0, nonce);
    let public_key = key.verifying_key().to_bytes();
    let mut message: Login = blank(0);
    message.public_key = public_key;
    message.session_id = 1.into();
    message.heartbeat_ms = 1000.into();
    message.signature = key
        .sign(&login_signing_bytes(&nonce, &public_key, 1, 0, 1000, 0))
        .to_bytes();
    oe.receive(id, message.as_bytes(), 0);
    let pending = oe.pending_output(id).len();
    oe.consume_output(id, pending);
    id
}

/// Every byte queued must parse as whole frames.
fn whole_frames(bytes: &[u8]) {
    let mut at = 0;
    while at < bytes.len() {
        let length = wire::next_frame(&bytes[at..])
            .expect("server frames have valid lengths")
            .expect("server frames are whole");
        gateway::client::decode_server_message(&bytes[at..at + length]).expect("decodable");
        at += length;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut oe = OrderEntry::new(OrderEntryConfig::default());
    let attacker_key = SigningKey::from_bytes(&[1; 32]);
    let victim_key = SigningKey::from_bytes(&[2; 32]);
    let attacker = account_id_of(&attacker_key.verifying_key().to_bytes());
    let victim = account_id_of(&victim_key.verifying_key().to_bytes());
    let fresh = oe.connect(0, [9; 32]);
    let bad = login(&mut oe, &attacker_key, [3; 32]);
    let good = login(&mut oe, &victim_key, [4; 32]);
    // The first byte splits the input: part before login, the rest after.
    let split = data.first().map_or(0, |&b| b as usize).min(data.len());
    for chunk in data[..split].chunks(7) {
        oe.receive(fresh, chunk, 0);
    }
    for chunk in data[split..].chunks(13) {
        oe.receive(bad, chunk, 0);
    }
    let mut submissions = Vec::new();
    oe.take_submissions(&mut submissions);
    for submission in &submissions {
        let account = match submission.command {
            Command::Place(order) => order.account,
            Command::Cancel { account, .. }
            | Command::CancelAll { account, .. }
            | Command::Modify { account, .. } => account,
            other => panic!("a session submitted {other:?}"),
        };
        assert_eq!(account, attacker);
    }
    whole_frames(oe.pending_output(fresh));
    whole_frames(oe.pending_output(bad));
    let mut order: NewOrder = blank(1);
    order.qty = 1.into();
    order.price = 1.into();
    oe.receive(good, order.as_bytes(), 0);
    let mut mine = Vec::new();
    oe.take_submissions(&mut mine);
    assert_eq!(mine.len(), 1);
    let Command::Place(placed) = mine[0].command else { panic!("a place") };
    assert_eq!(placed.account, victim);
});
