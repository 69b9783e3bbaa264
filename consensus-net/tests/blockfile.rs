//! The block file's recovery rules: a torn tail (nothing intact after it, including a tail
//! of zero bytes) is cut; damage with an intact record after it is a typed error naming the
//! damaged record's offset, never a silent cut of durable history.

use consensus::block::Block;
use consensus::messages::CommitCertificate;
use consensus::types::{Hash, ValidatorId};
use consensus_net::{BlockStore, BlockStoreError};

/// Opens the block file and reads every stored certificate back.
fn open_all(
    path: &std::path::Path,
) -> Result<(BlockStore, Vec<CommitCertificate>, u64), consensus_net::BlockStoreError> {
    let (store, cut) = BlockStore::open(path)?;
    let stored = store.certificates(0)?.collect::<Result<Vec<_>, _>>()?;
    Ok((store, stored, cut))
}

fn certificate(height: u64, payload: usize) -> CommitCertificate {
    CommitCertificate {
        round: 0,
        block: Block {
            height,
            timestamp_ns: height * 10,
            proposer: ValidatorId([1; 32]),
            prev_hash: Hash([height as u8; 32]),
            prev_exec_root: Hash::ZERO,
            evidence: vec![],
            actions: vec![],
            payload: vec![7; payload].into(),
        },
        precommits: vec![],
    }
}

/// Writes heights 1..=n and returns the file's path and each record's start offset.
fn file_with(dir: &tempfile::TempDir, n: u64) -> (std::path::PathBuf, Vec<u64>) {
    let path = dir.path().join("blocks");
    let (mut store, _, _) = open_all(&path).expect("open");
    let mut offsets = Vec::new();
    for h in 1..=n {
        offsets.push(std::fs::metadata(&path).expect("meta").len());
        store
            .append(&certificate(h, 50 * h as usize))
            .expect("append");
    }
    (path, offsets)
}

fn append_bytes(path: &std::path::Path, extra: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("f");
    f.write_all(extra).expect("append bytes");
}

#[test]
fn a_damaged_length_in_a_middle_record_is_an_error_naming_its_offset() {
    let dir = tempfile::tempdir().expect("dir");
    let (path, offsets) = file_with(&dir, 4);
    let before = std::fs::read(&path).expect("read");
    // Record 2's length now runs past the end of the file: before the fix this was taken
    // for a torn tail and heights 2..=4 were silently cut.
    let mut bytes = before.clone();
    let at = offsets[1] as usize;
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).expect("write");
    match BlockStore::open(&path) {
        Err(BlockStoreError::Corrupt { offset, .. }) => assert_eq!(offset, offsets[1]),
        other => panic!("expected Corrupt at {}, got {other:?}", offsets[1]),
    }
    assert_eq!(
        std::fs::read(&path).expect("read"),
        bytes,
        "a refused file is not modified"
    );
    // A length that is merely too short (the checksum then fails) is refused the same way.
    let mut bytes = before;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    match BlockStore::open(&path) {
        Err(BlockStoreError::Corrupt { offset, .. }) => assert_eq!(offset, offsets[1]),
        other => panic!("expected Corrupt at {}, got {other:?}", offsets[1]),
    }
}

#[test]
fn a_damaged_body_in_a_middle_record_is_an_error() {
    let dir = tempfile::tempdir().expect("dir");
    let (path, offsets) = file_with(&dir, 3);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[offsets[0] as usize + 10] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    match BlockStore::open(&path) {
        Err(BlockStoreError::Corrupt { offset, .. }) => assert_eq!(offset, 0),
        other => panic!("expected Corrupt at 0, got {other:?}"),
    }
}

#[test]
fn a_zero_filled_tail_is_a_torn_tail_and_is_cut() {
    for zeros in [1usize, 3, 4, 35, 36, 37, 4096] {
        let dir = tempfile::tempdir().expect("dir");
        let (path, _) = file_with(&dir, 3);
        let good_len = std::fs::metadata(&path).expect("meta").len();
        append_bytes(&path, &vec![0; zeros]);
        let (mut store, certs, cut) = open_all(&path)
            .unwrap_or_else(|e| panic!("{zeros} zero bytes after the last record: {e}"));
        assert_eq!(certs.len(), 3);
        assert_eq!(certs[2], certificate(3, 150));
        assert_eq!(cut, zeros as u64);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), good_len);
        store.append(&certificate(4, 1)).expect("append after cut");
        drop(store);
        let (_, certs, cut) = open_all(&path).expect("reopen");
        assert_eq!((certs.len(), cut), (4, 0));
    }
}

#[test]
fn a_partial_last_record_is_cut_but_zeros_in_place_of_a_middle_record_are_not() {
    let dir = tempfile::tempdir().expect("dir");
    let (path, offsets) = file_with(&dir, 3);
    let full = std::fs::read(&path).expect("read");
    // The last record half written (a crash mid-append): cut.
    let half = offsets[2] as usize + (full.len() - offsets[2] as usize) / 2;
    std::fs::write(&path, &full[..half]).expect("write");
    let (_, certs, cut) = open_all(&path).expect("open");
    assert_eq!((certs.len(), cut), (2, (half - offsets[2] as usize) as u64));
    // Record 2 zeroed while record 3 is intact: an error, not a cut.
    let mut bytes = full.clone();
    bytes[offsets[1] as usize..offsets[2] as usize].fill(0);
    std::fs::write(&path, &bytes).expect("write");
    match BlockStore::open(&path) {
        Err(BlockStoreError::Corrupt { offset, what, .. }) => {
            assert_eq!(offset, offsets[1]);
            assert!(what.contains(&offsets[2].to_string()), "{what}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_pruned_file_keeps_the_later_blocks_reopens_from_them_and_takes_more() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = file_with(&dir, 10);
    let (mut store, stored, _) = open_all(&path).unwrap();
    assert_eq!(stored.len(), 10);
    let before = std::fs::metadata(&path).unwrap().len();
    let removed = store.prune_through(6).unwrap();
    assert!(removed > 0);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), before - removed);
    assert_eq!(store.prune_through(6).unwrap(), 0, "nothing more to drop");
    store.append(&certificate(11, 10)).unwrap();
    drop(store);
    let (store, stored, cut) = open_all(&path).unwrap();
    let heights: Vec<u64> = stored.iter().map(|c| c.block.height).collect();
    assert_eq!(heights, [7, 8, 9, 10, 11]);
    assert_eq!((store.height(), cut), (11, 0));
}

#[test]
fn an_empty_file_started_after_a_snapshot_takes_the_next_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks");
    let (mut store, stored, _) = open_all(&path).unwrap();
    assert!(stored.is_empty());
    store.start_after(40).unwrap();
    store.append(&certificate(41, 3)).unwrap();
    drop(store);
    let (store, stored, _) = open_all(&path).unwrap();
    assert_eq!(stored[0].block.height, 41);
    assert_eq!(store.height(), 41);
}

/// Heights of the encoded certificates `read` returned.
fn heights_of(read: &[Vec<u8>]) -> Vec<u64> {
    read.iter()
        .map(|bytes| match consensus::messages::Message::decode(bytes) {
            Ok(consensus::messages::Message::Commit(c)) => c.block.height,
            other => panic!("not a certificate: {other:?}"),
        })
        .collect()
}

#[test]
fn the_archive_reads_any_height_back_across_index_marks_appends_prunes_and_a_reopen() {
    use consensus::host::CertificateArchive;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks");
    let (mut store, _, _) = open_all(&path).unwrap();
    let archive = store.archive();
    assert_eq!(archive.first_height(), None);
    assert!(archive.read(1, 4).is_empty());
    let n = 2 * consensus_net::store::INDEX_EVERY + 40;
    for h in 1..=n {
        store
            .append(&certificate(h, (h % 7) as usize * 30))
            .unwrap();
    }
    assert_eq!(archive.first_height(), Some(1));
    // Exactly what the file holds: the encoding of each certificate, in order.
    let all = archive.read(1, n as usize);
    assert_eq!(all.len() as u64, n);
    for (h, bytes) in (1..=n).zip(&all) {
        let expected = consensus::messages::Message::Commit(certificate(h, (h % 7) as usize * 30));
        assert_eq!(*bytes, expected.encode(), "height {h}");
    }
    let around_marks = [1, 255, 256, 257, 258, 511, 512, 513, n - 1];
    for from in around_marks {
        let want: Vec<u64> = (from..=n).take(5).collect();
        assert_eq!(heights_of(&archive.read(from, 5)), want, "from {from}");
    }
    assert!(archive.read(n + 1, 5).is_empty(), "nothing past the last");
    assert!(archive.read(0, 5).is_empty(), "nothing before the first");
    // Pruned through 300: the archive starts at 301, and takes new blocks.
    store.prune_through(300).unwrap();
    assert_eq!(archive.first_height(), Some(301));
    assert!(archive.read(300, 3).is_empty());
    assert_eq!(heights_of(&archive.read(301, 2)), [301, 302]);
    store.append(&certificate(n + 1, 5)).unwrap();
    assert_eq!(heights_of(&archive.read(n, 5)), [n, n + 1]);
    // Reopened: the same reads.
    drop(store);
    let (store, _, _) = open_all(&path).unwrap();
    let archive = store.archive();
    assert_eq!(archive.first_height(), Some(301));
    assert_eq!(
        heights_of(&archive.read(n - 2, 9)),
        [n - 2, n - 1, n, n + 1]
    );
    // A damaged record (the last one's body): reads stop before it rather than return
    // wrong bytes.
    let mut damaged = std::fs::read(&path).unwrap();
    let at = damaged.len() - 40;
    damaged[at] ^= 0xff;
    std::fs::write(&path, &damaged).unwrap();
    assert_eq!(heights_of(&archive.read(n - 1, 5)), [n - 1, n]);
    drop(store);
    // Started after a snapshot: an empty archive until the next block.
    let other = dir.path().join("joined");
    let (mut joined, _, _) = open_all(&other).unwrap();
    joined.start_after(40).unwrap();
    let archive = joined.archive();
    assert_eq!(archive.first_height(), None);
    joined.append(&certificate(41, 3)).unwrap();
    assert_eq!(archive.first_height(), Some(41));
    assert_eq!(heights_of(&archive.read(41, 9)), [41]);
}

#[test]
fn certificates_stream_from_any_height_and_a_record_damaged_after_open_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let n = consensus_net::store::INDEX_EVERY + 20;
    let (path, offsets) = file_with(&dir, n);
    let (mut store, cut) = BlockStore::open(&path).unwrap();
    assert_eq!((store.first_height(), store.height(), cut), (Some(1), n, 0));
    let heights = |store: &BlockStore, from: u64| -> Vec<u64> {
        let read = store.certificates(from).unwrap();
        read.map(|c| c.unwrap().block.height).collect()
    };
    // From before the first, across the index mark at 257, and past the last.
    assert_eq!(heights(&store, 0), (1..=n).collect::<Vec<_>>());
    assert_eq!(heights(&store, 255), (255..=n).collect::<Vec<_>>());
    assert_eq!(heights(&store, n), [n]);
    assert!(heights(&store, n + 1).is_empty());
    let read: Vec<CommitCertificate> = store
        .certificates(257)
        .unwrap()
        .take(2)
        .map(|c| c.unwrap())
        .collect();
    assert_eq!(
        read,
        [certificate(257, 50 * 257), certificate(258, 50 * 258)]
    );
    // After a prune, from the first kept block (asking from an earlier height).
    store.prune_through(100).unwrap();
    assert_eq!(store.first_height(), Some(101));
    assert_eq!(heights(&store, 1), (101..=n).collect::<Vec<_>>());
    drop(store);
    // Damage in the middle after the file was opened: the stream stops with an error
    // naming the damaged height instead of ending early as if the file ended there.
    let (store, _) = BlockStore::open(&path).unwrap();
    let removed = offsets[100];
    let at = (offsets[200] - removed) as usize + 10;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let mut read = store.certificates(190).unwrap();
    let good: Vec<u64> = read
        .by_ref()
        .take(11)
        .map(|c| c.unwrap().block.height)
        .collect();
    assert_eq!(good, (190..=200).collect::<Vec<_>>());
    match read.next() {
        Some(Err(BlockStoreError::Corrupt { offset, what, .. })) => {
            assert_eq!(
                offset,
                offsets[200] - removed,
                "the damaged record's offset"
            );
            assert!(what.contains("height 201"), "{what}")
        }
        other => panic!("expected the damaged record's error, got {other:?}"),
    }
    assert!(read.next().is_none(), "the stream ends after its error");
}

#[test]
fn block_file_survives_reopen_and_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("blocks");
    {
        let (mut store, certs, cut) = open_all(&path).expect("open");
        assert!(certs.is_empty());
        assert_eq!(cut, 0);
        for h in 1..=3 {
            store
                .append(&certificate(h, 100 * h as usize))
                .expect("append");
        }
    }
    let good_len = std::fs::metadata(&path).expect("meta").len();
    // A crash in the middle of appending height 4.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("f");
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).expect("torn");
    }
    let (mut store, certs, cut) = open_all(&path).expect("reopen");
    assert_eq!(certs.len(), 3);
    assert_eq!(cut, 7);
    assert_eq!(certs[2], certificate(3, 300));
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), good_len);
    store.append(&certificate(4, 1)).expect("append after cut");
    drop(store);
    // Damage in the middle is an error, not a silent cut.
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[10] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    assert!(BlockStore::open(&path).is_err());
}
