use consensus::block::Block;
use consensus::governance::ChainParams;
use consensus::messages::{SignedVote, Vote, VoteKind};
use consensus::types::{Ed25519, Hash, Keypair};
use consensus::validators::Validator;

use super::*;

const CHAIN: [u8; 32] = [7; 32];

fn snapshot() -> Snapshot {
    Snapshot {
        height: 40,
        exec_root: [1; 32],
        inputs_executed: 9,
        block_time_ms: 1_800_000_000_000,
        block_id: [2; 32],
        block_timestamp_ns: 5,
        execution: (0..5_000u32).map(|i| (i % 251) as u8).collect(),
        chain: chain_at_40(&keys()[..4]).encode(),
    }
}

/// The chain state after 40 blocks without actions of a chain whose genesis set is
/// `validators` (stake 1 each).
fn chain_at_40(validators: &[Keypair]) -> ChainState {
    let set = validators.iter().map(|k| Validator {
        id: k.id(),
        stake: 1,
    });
    let genesis = ChainState::genesis(CHAIN, set.collect(), ChainParams::default(), vec![]);
    let mut chain = genesis.unwrap();
    for h in 1..=40 {
        let block = Block {
            height: h,
            timestamp_ns: h,
            proposer: ValidatorId([0; 32]),
            prev_hash: Hash::ZERO,
            prev_exec_root: Hash::ZERO,
            evidence: Vec::new(),
            actions: Vec::new(),
            payload: Vec::new().into(),
        };
        chain.apply_block(&block, &Ed25519);
    }
    chain
}

/// Keys 0-3 are the genesis validators; 4-6 joined later.
fn keys() -> Vec<Keypair> {
    (1..=7u8).map(|i| Keypair::from_seed([i; 32])).collect()
}

/// The serving validator's attester (key 0 on chain [`CHAIN`]).
fn attester() -> Attester {
    Attester::new(keys()[0].clone(), CHAIN)
}

fn set(keys: &[Keypair]) -> ValidatorSet {
    let validators = keys.iter().map(|k| Validator {
        id: k.id(),
        stake: 1,
    });
    ValidatorSet::new(validators.collect()).unwrap()
}

/// The certificate of block 41 (parent `parent`, previous root `root`), precommitted by
/// `signers`.
fn certificate(parent: [u8; 32], root: [u8; 32], signers: &[Keypair]) -> CommitCertificate {
    let block = Block {
        height: 41,
        timestamp_ns: 6,
        proposer: signers[0].id(),
        prev_hash: Hash(parent),
        prev_exec_root: Hash(root),
        evidence: Vec::new(),
        actions: Vec::new(),
        payload: Vec::new().into(),
    };
    let precommits = signers
        .iter()
        .map(|k| {
            let vote = Vote {
                kind: VoteKind::Precommit,
                height: 41,
                round: 0,
                value: Some(block.id()),
                validator: k.id(),
            };
            let signature = k.sign(&vote.signing_bytes(&CHAIN));
            SignedVote { vote, signature }
        })
        .collect();
    CommitCertificate {
        round: 0,
        block,
        precommits,
    }
}

#[test]
fn messages_round_trip_and_garbage_is_not_one() {
    let s = snapshot();
    let file = s.encode();
    let messages = [
        SyncMessage::ManifestRequest,
        SyncMessage::Manifest(Manifest::of(&s, &file, 1000)),
        SyncMessage::Manifest(Manifest::none()),
        SyncMessage::ChunkRequest {
            height: 40,
            index: 3,
        },
        SyncMessage::Chunk {
            height: 40,
            index: 3,
            bytes: vec![1, 2, 3],
        },
    ];
    for m in messages {
        assert_eq!(SyncMessage::decode(&m.encode()), Some(m));
    }
    assert_eq!(
        SyncMessage::decode(&txport::encode_list([&b"x"[..]].into_iter())),
        None
    );
    let mut bad = SyncMessage::Manifest(Manifest::of(&s, &file, 1000)).encode();
    bad.pop();
    assert_eq!(SyncMessage::decode(&bad), None, "a cut manifest");
}

#[test]
fn a_bad_chunk_is_refused_and_the_good_one_completes_the_snapshot() {
    let s = snapshot();
    let file = s.encode();
    let manifest = Manifest::of(&s, &file, 1000);
    assert_eq!(manifest.hashes.len(), file.len().div_ceil(1000));
    let mut assembly = Assembly::new(manifest.clone());
    let chunks: Vec<&[u8]> = file.chunks(1000).collect();
    let mut corrupt = chunks[2].to_vec();
    corrupt[10] ^= 1;
    assert_eq!(assembly.accept(40, 2, corrupt), Err(Refused::BadChunk(2)));
    assert_eq!(
        assembly.accept(39, 2, chunks[2].to_vec()),
        Err(Refused::NotInManifest(2)),
        "another snapshot's chunk"
    );
    for (i, chunk) in chunks.iter().enumerate() {
        if i != 2 {
            assembly.accept(40, i as u32, chunk.to_vec()).unwrap();
        }
    }
    assert_eq!(assembly.missing(), [2]);
    assert!(assembly.finish().is_none(), "not complete");
    assembly.accept(40, 2, chunks[2].to_vec()).unwrap();
    assert_eq!(assembly.finish(), Some(Ok(s.clone())));

    // A manifest that lies about the root: every chunk matches it, the snapshot does not.
    let mut lying = manifest;
    lying.exec_root = [9; 32];
    let mut assembly = Assembly::new(lying);
    for (i, chunk) in chunks.iter().enumerate() {
        assembly.accept(40, i as u32, chunk.to_vec()).unwrap();
    }
    assert_eq!(assembly.finish(), Some(Err(Refused::BadSnapshot)));
}

#[test]
fn a_snapshot_is_accepted_only_with_a_quorum_certificate_naming_its_root() {
    let keys = keys();
    let set = set(&keys[..4]);
    let s = snapshot();
    let chain = chain_at_40(&keys[..4]);
    let verify = |s: &Snapshot, c: &CommitCertificate, set: &ValidatorSet, id: &[u8; 32], v| {
        super::verify(s, c, set, &chain, id, v).map(|_| ())
    };
    let good = certificate(s.block_id, s.exec_root, &keys[..3]);
    assert_eq!(verify(&s, &good, &set, &CHAIN, &Ed25519), Ok(()));
    // Another root (a peer serving a state the quorum did not commit to).
    let other = certificate(s.block_id, [8; 32], &keys[..3]);
    assert_eq!(
        verify(&s, &other, &set, &CHAIN, &Ed25519),
        Err(Refused::RootMismatch(41))
    );
    let other_parent = certificate([3; 32], s.exec_root, &keys[..3]);
    assert_eq!(
        verify(&s, &other_parent, &set, &CHAIN, &Ed25519),
        Err(Refused::RootMismatch(41))
    );
    // Two of four precommits are no quorum; keys outside the set are refused.
    let few = certificate(s.block_id, s.exec_root, &keys[..2]);
    assert_eq!(
        verify(&s, &few, &set, &CHAIN, &Ed25519),
        Err(Refused::BadCertificate(41))
    );
    let strangers: Vec<Keypair> = (10..13u8).map(|i| Keypair::from_seed([i; 32])).collect();
    let forged = certificate(s.block_id, s.exec_root, &strangers);
    assert_eq!(
        verify(&s, &forged, &set, &CHAIN, &Ed25519),
        Err(Refused::BadCertificate(41))
    );
    // Another chain's signatures.
    assert_eq!(
        verify(&s, &good, &set, &[0; 32], &Ed25519),
        Err(Refused::BadCertificate(41))
    );
    // The certificate of another height.
    let mut later = s.clone();
    later.height = 41;
    assert_eq!(
        verify(&later, &good, &set, &CHAIN, &Ed25519),
        Err(Refused::BadCertificate(41))
    );
}

/// The set changed since genesis: genesis keys 2 and 3 left, keys 4 and 5 joined. A
/// certificate needs a quorum of the snapshot's set and more than 1/3 of the genesis
/// stake; a genesis quorum alone still suffices.
#[test]
fn after_the_set_changed_the_snapshot_set_and_a_third_of_genesis_must_sign() {
    let keys = keys();
    let genesis = set(&keys[..4]);
    let now = [&keys[0], &keys[1], &keys[4], &keys[5]].map(Clone::clone);
    let chain = chain_at_40(&now);
    let mut s = snapshot();
    s.chain = chain.encode();
    let signed = |signers: &[&Keypair]| {
        let signers: Vec<Keypair> = signers.iter().map(|k| (*k).clone()).collect();
        let c = certificate(s.block_id, s.exec_root, &signers);
        verify(&s, &c, &genesis, &chain, &CHAIN, &Ed25519)
    };
    // 3 of 4 of the snapshot's set, 2 of 4 of the genesis stake (more than 1/3).
    assert_eq!(
        signed(&[&keys[0], &keys[1], &keys[4]]),
        Ok(Trust::SnapshotSetAndGenesisThird)
    );
    // A quorum of the snapshot's set with 1/4 of the genesis stake: no genesis
    // validator is known to vouch for it.
    assert_eq!(
        signed(&[&keys[1], &keys[4], &keys[5]]),
        Err(Refused::GenesisMinority(41))
    );
    // Half the genesis stake but 2 of 4 of the snapshot's set: no quorum of either.
    assert_eq!(
        signed(&[&keys[0], &keys[1]]),
        Err(Refused::BadCertificate(41))
    );
    // Keys that are in no set count nothing.
    assert_eq!(
        signed(&[&keys[0], &keys[4], &keys[6]]),
        Err(Refused::BadCertificate(41))
    );
    // A quorum of the genesis set is trusted as before.
    assert_eq!(
        signed(&[&keys[0], &keys[1], &keys[2]]),
        Ok(Trust::GenesisQuorum)
    );
    // The new path still needs the snapshot's block and root.
    let other = certificate(
        s.block_id,
        [8; 32],
        &[&keys[0], &keys[1], &keys[4]].map(Clone::clone),
    );
    assert_eq!(
        verify(&s, &other, &genesis, &chain, &CHAIN, &Ed25519),
        Err(Refused::RootMismatch(41))
    );
    // Receipt check: more than 1/3 of the genesis stake.
    let vouched = |signers: &[&Keypair]| {
        let signers: Vec<Keypair> = signers.iter().map(|k| (*k).clone()).collect();
        let c = certificate(s.block_id, s.exec_root, &signers);
        vouched_by_genesis(&c, &genesis, &CHAIN, &Ed25519)
    };
    assert!(vouched(&[&keys[0], &keys[1], &keys[4]]));
    assert!(!vouched(&[&keys[1], &keys[4], &keys[5]]));
}

/// The chain state a snapshot carries must decode, be of its height and chain, and hash
/// to the digest its execution state commits to.
#[test]
fn a_chain_state_that_is_not_the_committed_one_is_refused() {
    let keys = keys();
    let s = snapshot();
    let chain = chain_at_40(&keys[..4]);
    let digest = chain.hash().0;
    assert_eq!(chain_state(&s, digest, &CHAIN), Ok(chain.clone()));
    // Another chain state (another set) than the one the execution root commits to.
    let mut other = s.clone();
    other.chain = chain_at_40(&keys[1..5]).encode();
    assert_eq!(
        chain_state(&other, digest, &CHAIN),
        Err(Refused::ChainDigestMismatch)
    );
    // Another height, another chain id, bytes that are no chain state.
    let mut lower = s.clone();
    lower.height = 39;
    assert!(matches!(
        chain_state(&lower, digest, &CHAIN),
        Err(Refused::BadChainState(_))
    ));
    assert!(matches!(
        chain_state(&s, digest, &[0; 32]),
        Err(Refused::BadChainState(_))
    ));
    let mut garbage = s.clone();
    garbage.chain.truncate(garbage.chain.len() - 1);
    assert!(matches!(
        chain_state(&garbage, digest, &CHAIN),
        Err(Refused::BadChainState(_))
    ));
}

#[test]
fn a_server_answers_its_newest_snapshot_chunk_by_chunk_and_rate_limits() {
    let dir = tempfile::tempdir().unwrap();
    let peer = ValidatorId([5; 32]);
    let mut server = SnapshotServer::new(dir.path().to_path_buf(), attester());
    let none = server.answer(peer, &SyncMessage::ManifestRequest, (1, 100), 1);
    assert_eq!(none, Some(SyncMessage::Manifest(Manifest::none())));
    let s = snapshot();
    snapshot::write(dir.path(), &s).unwrap();
    let t = 10_000_000_000;
    let Some(SyncMessage::Manifest(m)) =
        server.answer(peer, &SyncMessage::ManifestRequest, (1, 100), t)
    else {
        panic!("a manifest");
    };
    assert_eq!((m.height, m.hashes.len()), (40, 1));
    let a = m.attestation.expect("the server signs its manifest");
    assert_eq!(a.signer, keys()[0].id());
    assert!(a.signs(&m, &CHAIN, &Ed25519));
    assert!(!a.signs(&m, &[8; 32], &Ed25519), "another chain's");
    let request = SyncMessage::ChunkRequest {
        height: 40,
        index: 0,
    };
    let Some(SyncMessage::Chunk { bytes, .. }) = server.answer(peer, &request, (1, 100), t) else {
        panic!("a chunk");
    };
    assert_eq!(bytes, s.encode());
    assert_eq!(
        server.answer(peer, &request, (1, 100), t + 1),
        None,
        "the same chunk again at once"
    );
    // The file was read once, for the first manifest: chunks come from memory.
    assert_eq!(server.files_read(), 1);
    let past = SyncMessage::ChunkRequest {
        height: 40,
        index: 1,
    };
    assert_eq!(server.answer(peer, &past, (1, 100), t), None);
    // Below the block file's height the snapshot is not offered.
    let other = ValidatorId([6; 32]);
    let Some(SyncMessage::Manifest(m)) =
        server.answer(other, &SyncMessage::ManifestRequest, (1, 39), t)
    else {
        panic!("a manifest");
    };
    assert_eq!(m.height, 0);
}

/// A newer snapshot is served once written, read once however many requests follow; a
/// damaged newer file is skipped (and not read again) for the older intact one.
#[test]
fn a_server_reads_each_snapshot_once_and_skips_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let peer = ValidatorId([5; 32]);
    let mut server = SnapshotServer::new(dir.path().to_path_buf(), attester());
    let manifest_height = |server: &mut SnapshotServer, t: u64| match server.answer(
        peer,
        &SyncMessage::ManifestRequest,
        (1, 1_000),
        t,
    ) {
        Some(SyncMessage::Manifest(m)) => m.height,
        other => panic!("a manifest: {other:?}"),
    };
    let mut s = snapshot();
    snapshot::write(dir.path(), &s).unwrap();
    let second = 1_000_000_000;
    for k in 1..=5 {
        assert_eq!(manifest_height(&mut server, k * second), 40);
    }
    assert_eq!(server.files_read(), 1);
    s.height = 50;
    snapshot::write(dir.path(), &s).unwrap();
    assert_eq!(manifest_height(&mut server, 6 * second), 50);
    assert_eq!(server.files_read(), 2);
    std::fs::write(dir.path().join(format!("{:020}.snap", 60)), b"damaged").unwrap();
    for k in 7..=9 {
        assert_eq!(manifest_height(&mut server, k * second), 50);
    }
    assert_eq!(server.files_read(), 3, "the damaged file is read once");
}

#[test]
fn an_attested_manifest_round_trips_and_a_none_manifest_carries_no_attestation() {
    let s = snapshot();
    let mut m = Manifest::of(&s, &s.encode(), 1000);
    m.attestation = Some(attester().attest(&m));
    let message = SyncMessage::Manifest(m.clone());
    assert_eq!(
        SyncMessage::decode(&message.encode()),
        Some(message.clone())
    );
    let encoded = message.encode();
    for cut in [1, 95, 97] {
        let short = &encoded[..encoded.len() - cut];
        assert_eq!(SyncMessage::decode(short), None, "cut {cut}");
    }
    let unsigned = SyncMessage::decode(&encoded[..encoded.len() - 96]);
    assert_eq!(
        unsigned,
        Some(SyncMessage::Manifest(Manifest {
            attestation: None,
            ..m.clone()
        }))
    );
    let mut none = SyncMessage::Manifest(Manifest::none()).encode();
    none.extend_from_slice(&[1; 96]);
    assert_eq!(SyncMessage::decode(&none), None);
    // The peer's own first block is not part of what is signed.
    let mut later = m.clone();
    later.first_block = 30;
    assert!(m.same_snapshot(&later));
    assert!(m.attestation.unwrap().signs(&later, &CHAIN, &Ed25519));
    // Everything else about the snapshot is signed.
    let changes: [fn(&mut Manifest); 6] = [
        |m| m.height += 1,
        |m| m.exec_root[31] ^= 1,
        |m| m.block_id[0] ^= 1,
        |m| m.total -= 1,
        |m| m.chunk_size += 1,
        |m| m.hashes.push([0; 32]),
    ];
    for change in changes {
        let mut other = m.clone();
        change(&mut other);
        assert!(!m.same_snapshot(&other));
        assert!(!m.attestation.unwrap().signs(&other, &CHAIN, &Ed25519));
    }
}

/// The attack the attestations stop: a forged snapshot whose execution root (a multiset sum
/// someone made collide) and block id are the certified ones, but whose bytes differ. The
/// honest validators signed the real manifest, so the forged one has no attested stake.
#[test]
fn a_snapshot_needs_more_than_a_third_of_its_sets_stake_to_attest_its_bytes() {
    let s = snapshot();
    let keys = keys();
    let genesis = set(&keys[..4]);
    let real = Manifest::of(&s, &s.encode(), 1000);
    let attest_by = |k: &Keypair, m: &Manifest| Attester::new(k.clone(), CHAIN).attest(m);
    let check = |m: &Manifest, list: &[Attestation]| {
        attest::check_attested(m, list, &genesis, &CHAIN, &Ed25519)
    };
    let two: Vec<Attestation> = keys[1..3].iter().map(|k| attest_by(k, &real)).collect();
    assert_eq!(check(&real, &two), Ok(2));
    let unattested = |stake| {
        Err(Refused::Unattested {
            height: 40,
            stake,
            total: 4,
        })
    };
    assert_eq!(check(&real, &two[..1]), unattested(1));
    // The same signer twice counts once.
    assert_eq!(check(&real, &[two[0], two[0]]), unattested(1));
    // A key outside the set counts nothing, however many.
    let outsiders: Vec<Attestation> = keys[4..].iter().map(|k| attest_by(k, &real)).collect();
    assert_eq!(
        check(&real, &[&outsiders[..], &two[..1]].concat()),
        unattested(1)
    );
    // A signature that does not verify counts nothing.
    let mut bad = two[1];
    bad.signature[0] ^= 1;
    assert_eq!(check(&real, &[two[0], bad]), unattested(1));
    // Another chain's attestation counts nothing.
    let elsewhere = Attester::new(keys[2].clone(), [8; 32]).attest(&real);
    assert_eq!(check(&real, &[two[0], elsewhere]), unattested(1));
    let mut forged = real.clone();
    forged.hashes[0][0] ^= 1;
    assert_eq!(
        (forged.exec_root, forged.block_id),
        (real.exec_root, real.block_id)
    );
    assert_eq!(check(&forged, &two), unattested(0));
    // A byzantine minority signing the forgery is not enough.
    let byzantine = [attest_by(&keys[3], &forged)];
    assert_eq!(check(&forged, &byzantine), unattested(1));
}
