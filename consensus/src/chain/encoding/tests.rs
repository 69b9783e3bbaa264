use proptest::prelude::*;

use super::*;
use crate::governance::{Action, ChainParams, Coprocessor, ParamKey, ProposalKind, SignedAction};
use crate::messages::{Evidence, SignedVote, Vote, VoteKind};
use crate::types::{Ed25519, Hash, Height, Keypair};
use crate::validators::Validator;

const CHAIN: [u8; 32] = [3; 32];
/// Keys 0-3 are the genesis validators, 4-5 outsiders that may join.
const KEYS: usize = 6;

fn keys() -> Vec<Keypair> {
    (1..=KEYS as u8)
        .map(|i| Keypair::from_seed([i; 32]))
        .collect()
}

fn genesis(keys: &[Keypair]) -> ChainState {
    let params = ChainParams {
        epoch_length_blocks: 3,
        voting_period_blocks: 4,
        jail_period_blocks: 2,
        // Short, so that random histories drop finished proposals and refuse some over the
        // cap.
        proposal_retention_blocks: 3,
        max_open_proposals_per_proposer: 2,
        ..ChainParams::default()
    };
    let validators = keys[..4].iter().map(|k| Validator {
        id: k.id(),
        stake: 10,
    });
    let mut params_of_base = BTreeMap::new();
    params_of_base.insert("tick".to_string(), 5);
    let base = Coprocessor {
        id: 0,
        version: 1,
        code_hash: Hash([1; 32]),
        params: params_of_base,
        active: true,
    };
    ChainState::genesis(CHAIN, validators.collect(), params, vec![base]).unwrap()
}

/// One random step: `kind` picks the action, `who` the signer, `value` its fields and
/// whether its nonce is wrong.
fn action(st: &ChainState, keys: &[Keypair], (kind, who, value): (u8, usize, u64)) -> SignedAction {
    let key = &keys[who % KEYS];
    // Mostly the newest proposal, so that some pass, apply or fail.
    let newest = st.governance().proposals().last().map_or(1, |p| p.id);
    let proposal = if value % 8 == 0 { value % 5 } else { newest };
    let action = match kind % 16 {
        0 => Action::Join {
            stake: value % 30 + 1,
        },
        1 => Action::SetStake {
            stake: value % 30 + 1,
        },
        2 => Action::Leave,
        3 => Action::Unjail,
        4 => Action::Propose(ProposalKind::Upgrade {
            id: (value % 3) as u32,
            version: (value % 5) as u32,
            code_hash: Hash([value as u8; 32]),
        }),
        5 => Action::Propose(ProposalKind::Activate {
            id: (value % 3) as u32,
        }),
        6 => Action::Propose(ProposalKind::SetCoprocessorParam {
            id: (value % 2) as u32,
            key: format!("k{}", value % 3),
            value,
        }),
        7 => Action::Propose(ProposalKind::SetChainParam {
            key: ParamKey::JailPeriodBlocks,
            value: value % 4,
        }),
        _ => Action::Vote {
            proposal,
            approve: value % 7 != 0,
        },
    };
    let nonce = st.next_nonce(&key.id()) + u64::from(value % 13 == 0);
    SignedAction::sign(key, nonce, action, &CHAIN)
}

/// A double prevote by genesis validator `who` at height `at`.
fn double_vote(keys: &[Keypair], who: usize, at: Height) -> Evidence {
    let key = &keys[who % 4];
    let vote = |value| {
        let vote = Vote {
            kind: VoteKind::Prevote,
            height: at,
            round: 0,
            value,
            validator: key.id(),
        };
        SignedVote {
            vote,
            signature: key.sign(&vote.signing_bytes(&CHAIN)),
        }
    };
    Evidence::double_vote(vote(None), vote(Some(Hash([9; 32]))))
}

use crate::chain::tests::block;

/// Decodes `st`'s encoding and checks it is the same state with the same hash and
/// encoding.
fn assert_round_trips(st: &ChainState) {
    let bytes = st.encode();
    let back = ChainState::decode(&bytes).expect("decodes");
    assert_eq!(&back, st);
    assert_eq!(back.hash(), st.hash());
    assert_eq!(back.encode(), bytes);
}

/// A state after some staking, slashing and governance, with something in every part.
fn busy_state() -> ChainState {
    let keys = keys();
    let mut st = genesis(&keys);
    let steps = [
        (0, 4, 7),
        (4, 0, 2),
        (1, 1, 14),
        (9, 1, 1),
        (9, 2, 1),
        (9, 3, 1),
    ];
    for (h, step) in (1..).zip(steps) {
        let a = action(&st, &keys, step);
        let evidence = if h == 2 {
            vec![double_vote(&keys, 3, 1)]
        } else {
            vec![]
        };
        st.apply_block(&block(h, evidence, vec![a]), &Ed25519);
    }
    assert!(st.governance().proposals().count() > 0);
    assert!(st.staking().bonds().any(|(_, b)| b.is_jailed()));
    st
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random histories of joins, stake changes, leaves, unjails, proposals, votes and
    /// double-sign evidence: after every block the state survives its encoding.
    #[test]
    fn random_histories_round_trip(
        blocks in prop::collection::vec(
            (prop::collection::vec((any::<u8>(), 0..KEYS, any::<u64>()), 0..6), 0u8..12),
            1..16,
        )
    ) {
        let keys = keys();
        let mut st = genesis(&keys);
        assert_round_trips(&st);
        for (h, (steps, evidence)) in (1..).zip(blocks) {
            let actions = steps.into_iter().map(|s| action(&st, &keys, s)).collect();
            let evidence = match evidence {
                0 => vec![double_vote(&keys, h as usize, h - 1)],
                _ => vec![],
            };
            st.apply_block(&block(h, evidence, actions), &Ed25519);
            assert_round_trips(&st);
        }
    }
}

#[test]
fn every_truncation_and_trailing_bytes_are_refused() {
    let bytes = busy_state().encode();
    for len in 0..bytes.len() {
        assert!(
            ChainState::decode(&bytes[..len]).is_err(),
            "prefix of {len}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(ChainState::decode(&longer), Err(DecodeError::TrailingBytes));
}

#[test]
fn another_version_garbage_and_huge_counts_are_refused() {
    let bytes = busy_state().encode();
    let mut version = bytes.clone();
    version[MAGIC.len() - 1] = 1;
    assert_eq!(
        ChainState::decode(&version),
        Err(DecodeError::BadTag {
            field: "chain state version",
            value: 1
        }),
        "version 1, without the retention and cap parameters"
    );
    assert!(ChainState::decode(b"garbage that is not a chain state").is_err());
    // The active set's count (right after magic, chain id and height) claims 2^32 - 1
    // validators: refused from the bytes present, nothing allocated for them.
    let mut huge = bytes.clone();
    let at = MAGIC.len() + 32 + 8;
    huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        ChainState::decode(&huge),
        Err(DecodeError::Length(u32::MAX as u64))
    );
    // Every single-byte change decodes to an error or to another state (another hash).
    let hash = busy_state().hash();
    for at in (0..bytes.len()).step_by(7) {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x80;
        if let Ok(other) = ChainState::decode(&damaged) {
            assert_ne!(other.hash(), hash, "byte {at}");
        }
    }
}

#[test]
fn unsorted_validators_are_refused() {
    let st = genesis(&keys());
    let mut bytes = st.encode();
    // Swap the first two validators of the active set (32 + 8 + 16 bytes each).
    let at = MAGIC.len() + 32 + 8 + 4;
    let entry = 32 + 8 + 16;
    let first: Vec<u8> = bytes[at..at + entry].to_vec();
    bytes.copy_within(at + entry..at + 2 * entry, at);
    bytes[at + entry..at + 2 * entry].copy_from_slice(&first);
    assert_eq!(
        ChainState::decode(&bytes),
        Err(DecodeError::Invalid("validator keys not ascending"))
    );
}

/// Key 0 proposes three times in block 1 (the third over the cap of 2); nothing passes, so
/// both are rejected at the end of block 4 (voting period 4) and dropped at the end of
/// block 7 (retention 3). The refusal and the pruned state survive the encoding, and a
/// state whose height says its finished proposals should be gone is refused.
#[test]
fn a_cap_refusal_and_a_pruned_state_round_trip() {
    let keys = keys();
    let mut st = genesis(&keys);
    let propose = |nonce, value| {
        let kind = ProposalKind::SetChainParam {
            key: ParamKey::JailPeriodBlocks,
            value,
        };
        SignedAction::sign(&keys[0], nonce, Action::Propose(kind), &CHAIN)
    };
    let actions = vec![propose(1, 5), propose(2, 6), propose(3, 7)];
    let r = st.apply_block(&block(1, vec![], actions), &Ed25519);
    let over = ActionOutcome::Gov(GovError::TooManyOpenProposals { max: 2 });
    let applied = |id| ActionOutcome::Applied(Some(id));
    assert_eq!(r.actions, vec![applied(1), applied(2), over]);
    assert_eq!(
        st.next_nonce(&keys[0].id()),
        4,
        "the refusal used its nonce"
    );
    assert_round_trips(&st);
    for h in 2..=8 {
        st.apply_block(&block(h, vec![], vec![]), &Ed25519);
        assert_round_trips(&st);
        let kept = st.governance().proposals().count();
        assert_eq!(kept, if h < 7 { 2 } else { 0 }, "after block {h}");
        if h == 6 {
            // The same bytes claiming height 7: the rejected proposals should be gone.
            let mut later = st.encode();
            let at = MAGIC.len() + 32;
            later[at..at + 8].copy_from_slice(&7u64.to_le_bytes());
            assert_eq!(
                ChainState::decode(&later),
                Err(DecodeError::Invalid(
                    "finished proposal outside its retention window"
                ))
            );
        }
    }
    let r = st.apply_block(&block(9, vec![], vec![propose(4, 8)]), &Ed25519);
    assert_eq!(r.actions, vec![applied(3)]);
    assert_round_trips(&st);
}
