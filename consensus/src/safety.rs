//! What a validator must remember across a crash so that it never signs two conflicting
//! messages: the last proposal, prevote and precommit it signed at its current height, the
//! highest round it entered, and its lock and valid value (Alg. 1 `lockedValue/lockedRound`,
//! `validValue/validRound`).
//!
//! The protocol saves this state through a [`SafetyStore`] *before* it hands out a newly
//! signed message, and consults it before every signature
//! ([`SafetyState::may_sign_vote`], [`SafetyState::may_sign_proposal`]): at one height, a
//! validator signs at most one message per (round, step), and for each step only in
//! increasing rounds; it never signs below the height it last signed at. After a restart the same message may be sent again (it is
//! taken from the store, not signed anew); a different one is refused.
//!
//! [`FileStore`] keeps it in an append-only journal: one frame per save (one `write`, one
//! `fdatasync`, no rename), holding the small state record (signed votes and proposal
//! header, rounds, block ids) and, only the first time a block is referred to, the block
//! itself. Loading takes the last intact frame; see [`FileStore`] for the layout.
//! [`SafetyState::encode`] is the whole state in one buffer (version 1 of the file; still
//! read, so a validator upgraded in place keeps its state).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::block::Block;
use crate::codec::{DecodeError, Reader, Writer};
use crate::messages::{ProposalMessage, SignedProposal, SignedVote, VoteKind};
use crate::types::{Hash, Height, Round};

const STATE_VERSION: u8 = 1;

/// The persisted safety state of one validator.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SafetyState {
    /// Height the rest refers to.
    pub height: Height,
    /// Highest round entered at `height`.
    pub round: Round,
    /// Last proposal signed at `height`.
    pub proposal: Option<ProposalMessage>,
    /// Last prevote signed at `height`.
    pub prevote: Option<SignedVote>,
    /// Last precommit signed at `height`.
    pub precommit: Option<SignedVote>,
    /// `(lockedRound, lockedValue)`.
    pub locked: Option<(Round, Block)>,
    /// `(validRound, validValue)`.
    pub valid: Option<(Round, Block)>,
    /// The >2/3 prevotes for `validValue` in `validRound` (its proof of lock), so that a
    /// restarted validator can still justify re-proposing it and act on it (Alg.1 L28).
    pub valid_pol: Vec<SignedVote>,
}

/// The answer of [`SafetyState::may_sign_vote`] and [`SafetyState::may_sign_proposal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignCheck<T> {
    /// Nothing was signed for this slot: sign it.
    Sign,
    /// Exactly this was signed before: send the stored copy.
    Resend(T),
    /// Something else was signed for this slot or a later round: do not sign.
    Refuse,
}

impl SafetyState {
    /// Fresh state for `height`.
    pub fn new(height: Height) -> SafetyState {
        SafetyState {
            height,
            ..SafetyState::default()
        }
    }

    /// May this validator sign `vote` (its own)?
    pub fn may_sign_vote(&self, vote: &crate::messages::Vote) -> SignCheck<SignedVote> {
        if vote.height < self.height {
            return SignCheck::Refuse;
        }
        if vote.height > self.height {
            return SignCheck::Sign;
        }
        let last = match vote.kind {
            VoteKind::Prevote => &self.prevote,
            VoteKind::Precommit => &self.precommit,
        };
        match last {
            None => SignCheck::Sign,
            Some(s) if s.vote.round < vote.round => SignCheck::Sign,
            Some(s) if s.vote == *vote => SignCheck::Resend(*s),
            Some(_) => SignCheck::Refuse,
        }
    }

    /// May this validator sign a proposal at `height`, `round` for `block_id` with
    /// `pol_round`?
    pub fn may_sign_proposal(
        &self,
        proposal: &crate::messages::Proposal,
    ) -> SignCheck<ProposalMessage> {
        if proposal.height < self.height {
            return SignCheck::Refuse;
        }
        if proposal.height > self.height {
            return SignCheck::Sign;
        }
        match &self.proposal {
            None => SignCheck::Sign,
            Some(p) if p.signed.proposal.round < proposal.round => SignCheck::Sign,
            Some(p) if p.signed.proposal == *proposal => SignCheck::Resend(p.clone()),
            Some(_) => SignCheck::Refuse,
        }
    }

    /// The version-1 encoding (blocks inline), checksum included: `version u8 = 1, height
    /// u64, round u32`, three optional signed messages (flag u8, then a proposal message or
    /// a signed vote), two optional `(round u32, block)` pairs (lock, valid), `count u32`
    /// signed votes (proof of lock), BLAKE3 of all of it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        w.u8(STATE_VERSION);
        w.u64(self.height);
        w.u32(self.round);
        match &self.proposal {
            None => w.u8(0),
            Some(p) => {
                w.u8(1);
                p.write(&mut w);
            }
        }
        for v in [&self.prevote, &self.precommit] {
            match v {
                None => w.u8(0),
                Some(v) => {
                    w.u8(1);
                    v.write(&mut w);
                }
            }
        }
        for rb in [&self.locked, &self.valid] {
            match rb {
                None => w.u8(0),
                Some((r, b)) => {
                    w.u8(1);
                    w.u32(*r);
                    b.write(&mut w);
                }
            }
        }
        w.count(self.valid_pol.len());
        for v in &self.valid_pol {
            v.write(&mut w);
        }
        let sum = *blake3::hash(&out).as_bytes();
        out.extend_from_slice(&sum);
        out
    }

    /// Decodes and checks the checksum.
    pub fn decode(bytes: &[u8]) -> Result<SafetyState, DecodeError> {
        if bytes.len() < 32 {
            return Err(DecodeError::Truncated);
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(DecodeError::BadTag {
                field: "safety state checksum",
                value: 0,
            });
        }
        let mut r = Reader::new(body);
        let version = r.u8()?;
        if version != STATE_VERSION {
            return Err(DecodeError::BadTag {
                field: "safety state version",
                value: version,
            });
        }
        let height = r.u64()?;
        let round = r.u32()?;
        let proposal = if r.flag("proposal present")? {
            Some(ProposalMessage::read(&mut r)?)
        } else {
            None
        };
        let prevote = if r.flag("prevote present")? {
            Some(SignedVote::read(&mut r)?)
        } else {
            None
        };
        let precommit = if r.flag("precommit present")? {
            Some(SignedVote::read(&mut r)?)
        } else {
            None
        };
        let mut pairs = [None, None];
        for slot in &mut pairs {
            if r.flag("lock present")? {
                let round = r.u32()?;
                *slot = Some((round, Block::read(&mut r)?));
            }
        }
        let n = r.count(SignedVote::ENCODED_LEN)?;
        let mut valid_pol = Vec::with_capacity(n);
        for _ in 0..n {
            valid_pol.push(SignedVote::read(&mut r)?);
        }
        r.finish()?;
        let [locked, valid] = pairs;
        Ok(SafetyState {
            height,
            round,
            proposal,
            prevote,
            precommit,
            locked,
            valid,
            valid_pol,
        })
    }
}

/// A store failure: the validator must stop (it cannot promise not to double-sign).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("safety store I/O at {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The stored bytes are damaged (a frame before the last one fails its checksum, or
    /// an intact frame does not decode).
    #[error("safety store at {path} is damaged at byte {offset}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the bad frame starts.
        offset: u64,
        /// What failed to decode.
        source: DecodeError,
    },
    /// The last intact state refers to a block that no frame of the journal holds.
    #[error("safety store at {path} refers to block {id:?}, which it does not hold")]
    MissingBlock {
        /// The file.
        path: PathBuf,
        /// The block id.
        id: Hash,
    },
}

/// Durable storage for [`SafetyState`]. `save` must not return before the state would
/// survive a crash.
pub trait SafetyStore {
    /// The last saved state, if any.
    fn load(&mut self) -> Result<Option<SafetyState>, StoreError>;
    /// Replaces the saved state.
    fn save(&mut self, state: &SafetyState) -> Result<(), StoreError>;
}

/// In-memory store for tests and the simulator: "durable" for as long as the value lives,
/// which the simulator keeps across a simulated crash.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    state: Option<SafetyState>,
    /// Number of saves (for tests).
    pub saves: u64,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Forgets everything (a validator that lost its disk: used to show that the simulator
    /// catches the double signing this causes).
    pub fn wipe(&mut self) {
        self.state = None;
    }
}

impl SafetyStore for MemStore {
    fn load(&mut self) -> Result<Option<SafetyState>, StoreError> {
        Ok(self.state.clone())
    }

    fn save(&mut self, state: &SafetyState) -> Result<(), StoreError> {
        self.state = Some(state.clone());
        self.saves += 1;
        Ok(())
    }
}

/// Magic and version at the start of a version-2 safety journal.
const JOURNAL_MAGIC: &[u8; 8] = b"NXSAFE\0\x02";
/// Domain of a frame's checksum.
const FRAME_DOMAIN: &[u8] = b"nexus-bft/v2/safety\0";
/// Bytes of a frame around its body: `len u32` before, checksum after.
const FRAME_OVERHEAD: usize = 4 + 32;
/// The smallest frame body: no blocks and a state record with nothing but its height and
/// round (`count u32 | height u64 | round u32 | 5 flags | count u32`).
const MIN_FRAME_BODY: usize = 4 + 8 + 4 + 5 + 4;
/// A frame holds at most three blocks (its own proposal's, the lock's, the valid value's).
const MAX_FRAME_BLOCKS: u32 = 3;
/// At most this many body bytes are hashed while looking for an intact frame after a bad
/// one; if the scan cannot finish within it, the bad frame is reported as damage (never
/// silently taken for a torn tail).
const SCAN_BUDGET: usize = 64 << 20;
/// Default journal size above which the next save starts a new journal.
pub const DEFAULT_COMPACT_AT: u64 = 64 << 20;

fn frame_checksum(body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(FRAME_DOMAIN);
    h.update(body);
    *h.finalize().as_bytes()
}

/// The state part of a journal frame: [`SafetyState`] with block ids instead of blocks.
struct StateRecord {
    height: Height,
    round: Round,
    proposal: Option<(SignedProposal, Vec<SignedVote>)>,
    prevote: Option<SignedVote>,
    precommit: Option<SignedVote>,
    locked: Option<(Round, Hash)>,
    valid: Option<(Round, Hash)>,
    valid_pol: Vec<SignedVote>,
}

fn write_votes(w: &mut Writer<'_>, votes: &[SignedVote]) {
    w.count(votes.len());
    for v in votes {
        v.write(w);
    }
}

fn read_votes(r: &mut Reader<'_>) -> Result<Vec<SignedVote>, DecodeError> {
    let n = r.count(SignedVote::ENCODED_LEN)?;
    let mut votes = Vec::with_capacity(n);
    for _ in 0..n {
        votes.push(SignedVote::read(r)?);
    }
    Ok(votes)
}

impl StateRecord {
    fn write(&self, w: &mut Writer<'_>) {
        w.u64(self.height);
        w.u32(self.round);
        match &self.proposal {
            None => w.u8(0),
            Some((p, pol)) => {
                w.u8(1);
                p.write(w);
                write_votes(w, pol);
            }
        }
        for v in [&self.prevote, &self.precommit] {
            match v {
                None => w.u8(0),
                Some(v) => {
                    w.u8(1);
                    v.write(w);
                }
            }
        }
        for rb in [&self.locked, &self.valid] {
            match rb {
                None => w.u8(0),
                Some((r, id)) => {
                    w.u8(1);
                    w.u32(*r);
                    w.bytes32(&id.0);
                }
            }
        }
        write_votes(w, &self.valid_pol);
    }

    fn read(r: &mut Reader<'_>) -> Result<StateRecord, DecodeError> {
        let height = r.u64()?;
        let round = r.u32()?;
        let proposal = if r.flag("proposal present")? {
            let p = SignedProposal::read(r)?;
            Some((p, read_votes(r)?))
        } else {
            None
        };
        let prevote = if r.flag("prevote present")? {
            Some(SignedVote::read(r)?)
        } else {
            None
        };
        let precommit = if r.flag("precommit present")? {
            Some(SignedVote::read(r)?)
        } else {
            None
        };
        let mut pairs = [None, None];
        for slot in &mut pairs {
            if r.flag("lock present")? {
                let round = r.u32()?;
                *slot = Some((round, Hash(r.bytes32()?)));
            }
        }
        let valid_pol = read_votes(r)?;
        let [locked, valid] = pairs;
        Ok(StateRecord {
            height,
            round,
            proposal,
            prevote,
            precommit,
            locked,
            valid,
            valid_pol,
        })
    }
}

/// Whether a complete frame with a valid checksum starts at any offset after `at`, scanning
/// byte by byte; `None` if that cannot be told within [`SCAN_BUDGET`] hashed bytes. Only
/// offsets whose length fits in the file and whose body could start a frame (at most
/// [`MAX_FRAME_BLOCKS`] blocks) are hashed, so the scan over a torn tail is cheap.
fn intact_frame_after(bytes: &[u8], at: usize) -> Option<bool> {
    let mut budget = SCAN_BUDGET;
    let mut o = at + 1;
    while o + FRAME_OVERHEAD + MIN_FRAME_BODY <= bytes.len() {
        let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let len = word(o) as usize;
        let fits = len >= MIN_FRAME_BODY && o + FRAME_OVERHEAD + len <= bytes.len();
        if fits && word(o + 4) <= MAX_FRAME_BLOCKS {
            budget = budget.checked_sub(len)?;
            let (body, sum) = bytes[o + 4..o + FRAME_OVERHEAD + len].split_at(len);
            if frame_checksum(body) == sum {
                return Some(true);
            }
        }
        o += 1;
    }
    Some(false)
}

/// A store in one journal file: one frame (one write, one `fdatasync`) per save, no rename
/// and no folder fsync. A frame holds the small state record (signed messages, rounds, block
/// *ids*) and, once each, the blocks it refers to that no earlier frame of the file holds, so
/// a block is written once however many saves refer to it.
///
/// Loading takes the last intact frame. A bad frame (its length points past the end of the
/// file, or its checksum fails) is a torn last frame, from a crash during its save, only if
/// no intact frame (complete, with a valid checksum) starts at any later offset (a byte-by-
/// byte scan, bounded by hashing at most 64 MiB): that save had not returned, so nothing it
/// covered was sent, and the previous state is the one to keep; the torn bytes are cut off.
/// A bad frame with an intact frame after it (or whose tail cannot be scanned within the
/// bound), an intact frame that does not decode, or a state that refers to a block no frame
/// holds is an error. When the journal passes its compaction size, the next save writes a
/// new journal with only the current state and its blocks (temp file, fsync, rename, folder
/// fsync) and continues in it; so does the first save when there is no journal yet, the file
/// is version 1, or the previous save failed. The first save after a start otherwise
/// appends to the loaded journal.
///
/// Layout (little-endian): `"NXSAFE\0\x02"`, then frames
/// `len u32 | body | BLAKE3("nexus-bft/v2/safety\0" || body) [32]`, with
/// `body = count u32, count blocks (block encoding) | state record`; the state record is
/// `height u64, round u32`, an optional own proposal (flag u8, signed proposal, `count u32`
/// votes of its proof of lock), optional prevote and precommit (flag u8, signed vote), an
/// optional lock and valid value (flag u8, `round u32, block id [32]`), `count u32` votes
/// (the valid value's proof of lock). A version-1 file (the whole [`SafetyState::encode`])
/// is still read; the first save then writes a version-2 journal.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    /// The journal, open for appending, once it is known to end with an intact frame.
    file: Option<File>,
    /// Bytes of intact frames (with the header): where the next frame goes.
    len: u64,
    /// Blocks (with their ids) that frames of the current journal already hold and that
    /// the last saved state may refer to.
    durable: Vec<(Hash, Block)>,
    compact_at: u64,
}

impl FileStore {
    /// A store at `path` (the file need not exist yet; its folder must).
    pub fn new(path: &Path) -> FileStore {
        FileStore::with_compaction(path, DEFAULT_COMPACT_AT)
    }

    /// A store at `path` that starts a new journal once the current one exceeds
    /// `compact_at` bytes.
    pub fn with_compaction(path: &Path, compact_at: u64) -> FileStore {
        FileStore {
            path: path.to_path_buf(),
            file: None,
            len: 0,
            durable: Vec::new(),
            compact_at,
        }
    }

    /// Bytes of intact frames in the journal, header included (where the next frame
    /// goes).
    pub fn journal_len(&self) -> u64 {
        self.len
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, offset: usize, source: DecodeError) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            offset: offset as u64,
            source,
        }
    }

    /// Parses a version-2 journal: the last intact state with its blocks, and where the
    /// intact frames end.
    fn parse(&self, bytes: &[u8]) -> Result<(Option<SafetyState>, usize), StoreError> {
        let mut blocks: HashMap<Hash, Block> = HashMap::new();
        let mut last: Option<StateRecord> = None;
        let mut at = JOURNAL_MAGIC.len();
        while at < bytes.len() {
            let rest = &bytes[at..];
            let Some(len) = rest.get(..4) else {
                break; // Torn: the file ends inside the length (no frame fits after it).
            };
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            let frame = rest
                .get(4..FRAME_OVERHEAD + len)
                .map(|f| f.split_at(len))
                .filter(|(body, sum)| frame_checksum(body) == *sum);
            let Some((body, _)) = frame else {
                // The file ends inside the frame (its length points past the end) or its
                // checksum fails. It is a torn last frame only if no intact frame follows
                // it anywhere: a crash tears only the frame being written, which is the
                // last one (the next save starts after the previous `fdatasync`). Anything
                // else is damage, which must not silently roll the state back.
                match intact_frame_after(bytes, at) {
                    Some(false) => break,
                    Some(true) | None => {
                        return Err(self.corrupt(
                            at,
                            DecodeError::BadTag {
                                field: "safety frame (intact frames follow it)",
                                value: 0,
                            },
                        ))
                    }
                }
            };
            let mut r = Reader::new(body);
            let decoded = (|| {
                let n = r.count(1)?;
                let mut new = Vec::with_capacity(n);
                for _ in 0..n {
                    new.push(Block::read(&mut r)?);
                }
                let state = StateRecord::read(&mut r)?;
                Ok((new, state))
            })();
            let (new, state) = decoded.map_err(|e| self.corrupt(at, e))?;
            if !r.bytes.is_empty() {
                return Err(self.corrupt(at, DecodeError::TrailingBytes));
            }
            for b in new {
                blocks.insert(b.id(), b);
            }
            last = Some(state);
            at += FRAME_OVERHEAD + len;
        }
        let Some(s) = last else {
            return Ok((None, at));
        };
        let block = |id: Hash| {
            blocks.get(&id).cloned().ok_or(StoreError::MissingBlock {
                path: self.path.clone(),
                id,
            })
        };
        let proposal = match s.proposal {
            None => None,
            Some((signed, pol)) => Some(ProposalMessage {
                block: block(signed.proposal.block_id)?,
                signed,
                pol,
            }),
        };
        let locked = s
            .locked
            .map(|(r, id)| block(id).map(|b| (r, b)))
            .transpose()?;
        let valid = s
            .valid
            .map(|(r, id)| block(id).map(|b| (r, b)))
            .transpose()?;
        Ok((
            Some(SafetyState {
                height: s.height,
                round: s.round,
                proposal,
                prevote: s.prevote,
                precommit: s.precommit,
                locked,
                valid,
                valid_pol: s.valid_pol,
            }),
            at,
        ))
    }

    /// The blocks `state` refers to, each once, as `(id, block)`.
    fn referenced(state: &SafetyState) -> Vec<(Option<Hash>, &Block)> {
        let mut out: Vec<(Option<Hash>, &Block)> = Vec::new();
        let candidates = [
            state
                .proposal
                .as_ref()
                .map(|p| (Some(p.signed.proposal.block_id), &p.block)),
            state.locked.as_ref().map(|(_, b)| (None, b)),
            state.valid.as_ref().map(|(_, b)| (None, b)),
        ];
        for (id, b) in candidates.into_iter().flatten() {
            if !out.iter().any(|(_, seen)| *seen == b) {
                out.push((id, b));
            }
        }
        out
    }

    /// The frame for `state`: blocks not in `self.durable` (all of them if `fresh`), then
    /// the state record. Updates `self.durable` to the blocks the frame may refer to.
    fn frame(&mut self, state: &SafetyState, fresh: bool) -> Vec<u8> {
        let mut keep: Vec<(Hash, Block)> = Vec::new();
        let mut new: Vec<&Block> = Vec::new();
        for (_, b) in FileStore::referenced(state) {
            let known = if fresh {
                None
            } else {
                self.durable.iter().find(|(_, d)| d == b).map(|(id, _)| *id)
            };
            let id = known.unwrap_or_else(|| {
                new.push(b);
                b.id()
            });
            keep.push((id, b.clone()));
        }
        let id_of = |b: &Block| {
            keep.iter()
                .find(|(_, k)| k == b)
                .map(|(id, _)| *id)
                .expect("referenced")
        };
        let record = StateRecord {
            height: state.height,
            round: state.round,
            proposal: state.proposal.as_ref().map(|p| (p.signed, p.pol.clone())),
            prevote: state.prevote,
            precommit: state.precommit,
            locked: state.locked.as_ref().map(|(r, b)| (*r, id_of(b))),
            valid: state.valid.as_ref().map(|(r, b)| (*r, id_of(b))),
            valid_pol: state.valid_pol.clone(),
        };
        let blocks_len: usize = new.iter().map(|b| b.payload.len() + 4096).sum();
        let mut out = Vec::with_capacity(4096 + blocks_len);
        out.extend_from_slice(&[0u8; 4]);
        let mut w = Writer(&mut out);
        w.count(new.len());
        for b in new {
            b.write(&mut w);
        }
        record.write(&mut w);
        let len = u32::try_from(out.len() - 4).expect("safety frame below 4 GiB");
        out[..4].copy_from_slice(&len.to_le_bytes());
        let sum = frame_checksum(&out[4..]);
        out.extend_from_slice(&sum);
        // Blocks a frame refers to must be in the same journal: keep only the current ones
        // (the others stay in the file, unreferenced, until the next compaction).
        self.durable = keep;
        out
    }

    /// Writes a new journal holding only `state` (and its blocks) and switches to it.
    fn rewrite(&mut self, state: &SafetyState) -> Result<(), StoreError> {
        self.file = None;
        let mut bytes = JOURNAL_MAGIC.to_vec();
        bytes.extend_from_slice(&self.frame(state, true));
        let len = bytes.len() as u64;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = File::create(&tmp).map_err(|e| self.io(e))?;
        file.write_all(&bytes).map_err(|e| self.io(e))?;
        file.sync_all().map_err(|e| self.io(e))?;
        drop(file);
        fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(e))?;
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        self.file = Some(file);
        self.len = len;
        Ok(())
    }
}

impl SafetyStore for FileStore {
    fn load(&mut self) -> Result<Option<SafetyState>, StoreError> {
        self.file = None;
        self.durable.clear();
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        if !bytes.starts_with(JOURNAL_MAGIC) {
            if JOURNAL_MAGIC.starts_with(&bytes) {
                // Shorter than the header: this store only ever renames whole, synced
                // files into place, so this is damage, not a crash.
                return Err(self.corrupt(0, DecodeError::Truncated));
            }
            // Version 1: one whole state; the next save writes a version-2 journal.
            return SafetyState::decode(&bytes)
                .map(Some)
                .map_err(|e| self.corrupt(0, e));
        }
        let (state, end) = self.parse(&bytes)?;
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        if end < bytes.len() {
            // Cut the torn frame so the next frame follows the last intact one.
            file.set_len(end as u64).map_err(|e| self.io(e))?;
            file.sync_all().map_err(|e| self.io(e))?;
        }
        if let Some(s) = &state {
            self.durable = FileStore::referenced(s)
                .into_iter()
                .map(|(id, b)| (id.unwrap_or_else(|| b.id()), b.clone()))
                .collect();
        }
        self.file = Some(file);
        self.len = end as u64;
        Ok(state)
    }

    fn save(&mut self, state: &SafetyState) -> Result<(), StoreError> {
        if self.file.is_none() || self.len >= self.compact_at {
            return self.rewrite(state);
        }
        let frame = self.frame(state, false);
        let end = self.len + frame.len() as u64;
        let file = self.file.as_ref().expect("checked");
        let written = file
            .write_all_at(&frame, self.len)
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            // The journal may now end inside a frame: the next save starts a new one.
            self.file = None;
            self.durable.clear();
            return Err(self.io(e));
        }
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Proposal, SignedProposal, Vote};
    use crate::types::{Hash, Keypair, ValidatorId};

    fn sample() -> SafetyState {
        let k = Keypair::from_seed([3; 32]);
        let block = Block {
            height: 9,
            timestamp_ns: 77,
            proposer: k.id(),
            prev_hash: Hash([1; 32]),
            prev_exec_root: Hash([2; 32]),
            evidence: vec![],
            actions: vec![],
            payload: b"batch".to_vec().into(),
        };
        let vote = |kind, round| {
            let vote = Vote {
                kind,
                height: 9,
                round,
                value: Some(block.id()),
                validator: k.id(),
            };
            SignedVote {
                vote,
                signature: k.sign(&vote.signing_bytes(&[0; 32])),
            }
        };
        let proposal = Proposal {
            height: 9,
            round: 2,
            pol_round: Some(1),
            block_id: block.id(),
            proposer: k.id(),
        };
        SafetyState {
            height: 9,
            round: 3,
            proposal: Some(ProposalMessage {
                signed: SignedProposal {
                    proposal,
                    signature: k.sign(&proposal.signing_bytes(&[0; 32])),
                },
                block: block.clone(),
                pol: vec![],
            }),
            prevote: Some(vote(VoteKind::Prevote, 3)),
            precommit: Some(vote(VoteKind::Precommit, 2)),
            locked: Some((2, block.clone())),
            valid: Some((2, block.clone())),
            valid_pol: vec![vote(VoteKind::Prevote, 2)],
        }
    }

    #[test]
    fn file_store_survives_reopening_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safety");
        let mut store = FileStore::new(&path);
        assert!(store.load().unwrap().is_none());
        let state = sample();
        store.save(&SafetyState::new(1)).unwrap();
        store.save(&state).unwrap();
        drop(store);
        let mut reopened = FileStore::new(&path);
        assert_eq!(reopened.load().unwrap(), Some(state));
        let mut bytes = fs::read(&path).unwrap();
        bytes[20] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(reopened.load(), Err(StoreError::Corrupt { .. })));
    }

    fn big_block(tag: u8) -> Block {
        let k = Keypair::from_seed([3; 32]);
        Block {
            height: 9,
            timestamp_ns: 78,
            proposer: k.id(),
            prev_hash: Hash([1; 32]),
            prev_exec_root: Hash([2; 32]),
            evidence: vec![],
            actions: vec![],
            payload: vec![tag; 200_000].into(),
        }
    }

    fn signed_vote(kind: VoteKind, round: Round, value: Option<Hash>) -> SignedVote {
        let k = Keypair::from_seed([3; 32]);
        let vote = Vote {
            kind,
            height: 9,
            round,
            value,
            validator: k.id(),
        };
        SignedVote {
            vote,
            signature: k.sign(&vote.signing_bytes(&[0; 32])),
        }
    }

    /// Prevoted `block` in round 0 (not locked yet).
    fn prevoted(block: &Block) -> SafetyState {
        SafetyState {
            prevote: Some(signed_vote(VoteKind::Prevote, 0, Some(block.id()))),
            ..SafetyState::new(9)
        }
    }

    /// Then locked on it and precommitted it.
    fn precommitted(block: &Block) -> SafetyState {
        SafetyState {
            precommit: Some(signed_vote(VoteKind::Precommit, 0, Some(block.id()))),
            locked: Some((0, block.clone())),
            valid: Some((0, block.clone())),
            valid_pol: vec![signed_vote(VoteKind::Prevote, 0, Some(block.id()))],
            ..prevoted(block)
        }
    }

    fn reopen(path: &Path) -> Result<Option<SafetyState>, StoreError> {
        FileStore::new(path).load()
    }

    #[test]
    fn a_torn_last_frame_recovers_the_previous_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safety");
        let block = big_block(1);
        let mut store = FileStore::new(&path);
        assert!(store.load().unwrap().is_none());
        store.save(&prevoted(&block)).unwrap();
        let after_first = store.len as usize;
        store.save(&precommitted(&block)).unwrap();
        let after_second = store.len as usize;
        let full = fs::read(&path).unwrap();
        assert_eq!(full.len(), after_second);
        drop(store);
        assert_eq!(reopen(&path).unwrap(), Some(precommitted(&block)));
        let torn = |bytes: &[u8]| {
            fs::write(&path, bytes).unwrap();
            let mut store = FileStore::new(&path);
            let state = store.load().unwrap();
            assert_eq!(store.len as usize, after_first);
            state
        };
        // A crash at any point of the second save's write leaves the first state: the
        // file ends inside the frame, or the frame's last bytes are zeros (never written).
        for cut in [
            after_first + 1,
            after_first + 4,
            after_first + 100,
            after_second - 1,
        ] {
            assert_eq!(torn(&full[..cut]), Some(prevoted(&block)), "cut at {cut}");
            let mut zeroed = full.clone();
            zeroed[cut..after_second].fill(0);
            assert_eq!(torn(&zeroed), Some(prevoted(&block)), "zeros from {cut}");
            // The torn bytes were cut off.
            assert_eq!(fs::metadata(&path).unwrap().len() as usize, after_first);
        }
        // Some sectors of the frame were written, an earlier one was not.
        let mut holes = full.clone();
        holes[after_first + 5_000..after_first + 9_096].fill(0);
        assert_eq!(torn(&holes), Some(prevoted(&block)));
        // Saving after the recovery appends behind the last intact frame.
        let mut store = FileStore::new(&path);
        assert_eq!(store.load().unwrap(), Some(prevoted(&block)));
        store.save(&precommitted(&block)).unwrap();
        assert_eq!(reopen(&path).unwrap(), Some(precommitted(&block)));
        // A torn first frame of a fresh journal (after its header) leaves nothing signed.
        fs::write(&path, &full[..JOURNAL_MAGIC.len() + 10]).unwrap();
        assert_eq!(reopen(&path).unwrap(), None);
    }

    #[test]
    fn a_restarted_store_refuses_what_it_refused_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safety");
        let block = big_block(1);
        let state = precommitted(&block);
        let mut store = FileStore::new(&path);
        store.load().unwrap();
        store.save(&SafetyState::new(8)).unwrap();
        store.save(&prevoted(&block)).unwrap();
        store.save(&state).unwrap();
        drop(store);
        let loaded = reopen(&path).unwrap().unwrap();
        for probe in [
            // Nil and other values in the rounds it voted in.
            Vote {
                value: None,
                ..state.prevote.unwrap().vote
            },
            Vote {
                value: Some(Hash([5; 32])),
                ..state.precommit.unwrap().vote
            },
            // Below its height.
            Vote {
                height: 8,
                ..state.prevote.unwrap().vote
            },
        ] {
            assert_eq!(state.may_sign_vote(&probe), SignCheck::Refuse);
            assert_eq!(loaded.may_sign_vote(&probe), SignCheck::Refuse, "{probe:?}");
        }
        let same = state.precommit.unwrap();
        assert_eq!(loaded.may_sign_vote(&same.vote), SignCheck::Resend(same));
        assert_eq!(
            loaded.locked,
            Some((0, block.clone())),
            "the lock keeps its block"
        );
        assert_eq!(loaded.valid_pol, state.valid_pol);
        // The proposal too: a restarted proposer re-sends its proposal, block included.
        let with_proposal = sample();
        let mut store = FileStore::new(&path);
        store.load().unwrap();
        store.save(&with_proposal).unwrap();
        let loaded = reopen(&path).unwrap().unwrap();
        assert_eq!(loaded, with_proposal);
        let p = with_proposal.proposal.unwrap();
        let other = Proposal {
            block_id: Hash([9; 32]),
            ..p.signed.proposal
        };
        assert_eq!(loaded.may_sign_proposal(&other), SignCheck::Refuse);
        assert_eq!(
            loaded.may_sign_proposal(&p.signed.proposal),
            SignCheck::Resend(p)
        );
    }

    #[test]
    fn a_block_is_written_once_however_many_saves_refer_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safety");
        let block = big_block(1);
        let mut store = FileStore::new(&path);
        store.load().unwrap();
        store.save(&precommitted(&block)).unwrap();
        let first = store.len;
        assert!(first > 200_000, "the block is in the first frame");
        // Same lock and valid value, a later round entered: a small frame.
        let mut later = precommitted(&block);
        later.round = 1;
        later.prevote = Some(signed_vote(VoteKind::Prevote, 1, Some(block.id())));
        store.save(&later).unwrap();
        assert!(store.len - first < 2_000, "{} bytes", store.len - first);
        // Also after a restart (the blocks the loaded state refers to are known).
        drop(store);
        let mut store = FileStore::new(&path);
        assert_eq!(store.load().unwrap(), Some(later.clone()));
        let before = store.len;
        later.round = 2;
        store.save(&later).unwrap();
        assert!(store.len - before < 2_000);
        // A new block is written once.
        let other = big_block(2);
        let mut relocked = later.clone();
        relocked.round = 3;
        relocked.locked = Some((3, other.clone()));
        relocked.valid = Some((3, other.clone()));
        let before = store.len;
        store.save(&relocked).unwrap();
        assert!(store.len - before > 200_000);
        drop(store);
        assert_eq!(reopen(&path).unwrap(), Some(relocked));
    }

    #[test]
    fn a_journal_past_its_size_is_compacted_into_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safety");
        let mut store = FileStore::with_compaction(&path, 500_000);
        store.load().unwrap();
        let mut last = None;
        for i in 0..10u8 {
            // A new block at every height (as a validator does), each 200 kB.
            let mut block = big_block(i);
            block.height = 9 + i as u64;
            let mut state = precommitted(&block);
            state.height = block.height;
            store.save(&state).unwrap();
            assert!(store.len < 800_000);
            assert!(fs::metadata(&path).unwrap().len() < 800_000);
            last = Some(state);
        }
        drop(store);
        assert_eq!(reopen(&path).unwrap(), last);
        assert!(!dir.path().join("safety.tmp").exists());
    }

    #[test]
    fn damaged_journals_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safety");
        let block = big_block(1);
        let mut store = FileStore::new(&path);
        store.load().unwrap();
        store.save(&precommitted(&block)).unwrap();
        let first = store.len as usize;
        let mut later = precommitted(&block);
        later.round = 1;
        store.save(&later).unwrap();
        let second = store.len as usize;
        drop(store);
        let good = fs::read(&path).unwrap();
        // A flipped bit in a frame that is followed by another: damage, not a torn tail.
        let mut bad = good.clone();
        bad[first / 2] ^= 1;
        fs::write(&path, &bad).unwrap();
        assert!(matches!(
            reopen(&path),
            Err(StoreError::Corrupt { offset: 8, .. })
        ));
        // The last state refers to a block whose frame is gone.
        let mut missing = JOURNAL_MAGIC.to_vec();
        missing.extend_from_slice(&good[first..second]);
        fs::write(&path, &missing).unwrap();
        assert!(matches!(
            reopen(&path),
            Err(StoreError::MissingBlock { id, .. }) if id == block.id()
        ));
        // An intact frame (good checksum) whose body does not decode.
        let mut garbage = JOURNAL_MAGIC.to_vec();
        let body = [0u8, 0, 0, 0, 7, 7, 7];
        garbage.extend_from_slice(&(body.len() as u32).to_le_bytes());
        garbage.extend_from_slice(&body);
        garbage.extend_from_slice(&frame_checksum(&body));
        fs::write(&path, &garbage).unwrap();
        assert!(matches!(reopen(&path), Err(StoreError::Corrupt { .. })));
        // Shorter than the header.
        fs::write(&path, &JOURNAL_MAGIC[..3]).unwrap();
        assert!(matches!(reopen(&path), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn damage_in_a_frame_followed_by_an_intact_one_is_an_error_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safety");
        let block = big_block(1);
        let mut store = FileStore::new(&path);
        store.load().unwrap();
        store.save(&prevoted(&block)).unwrap();
        let first = store.len as usize;
        store.save(&precommitted(&block)).unwrap();
        let second = store.len as usize;
        let mut later = precommitted(&block);
        later.round = 1;
        store.save(&later).unwrap();
        drop(store);
        let good = fs::read(&path).unwrap();
        // The middle frame's length points past the end of the file: before, this was taken
        // for a torn tail, `load` returned the first state and cut the third frame off.
        for len in [u32::MAX, (good.len() - first) as u32, 1_000_000] {
            let mut bad = good.clone();
            bad[first..first + 4].copy_from_slice(&len.to_le_bytes());
            fs::write(&path, &bad).unwrap();
            assert!(
                matches!(reopen(&path), Err(StoreError::Corrupt { offset, .. }) if offset == first as u64),
                "len {len}"
            );
            assert_eq!(fs::read(&path).unwrap(), bad, "nothing cut off");
        }
        // A length pointing short of the frame's end (checksum fails): the same.
        let mut bad = good.clone();
        bad[first..first + 4].copy_from_slice(&100u32.to_le_bytes());
        fs::write(&path, &bad).unwrap();
        assert!(matches!(
            reopen(&path),
            Err(StoreError::Corrupt { offset, .. }) if offset == first as u64
        ));
        // The same damage to the last frame, with no intact frame after it, is a torn tail.
        for len in [u32::MAX, 100] {
            let mut torn = good.clone();
            torn[second..second + 4].copy_from_slice(&len.to_le_bytes());
            fs::write(&path, &torn).unwrap();
            let mut store = FileStore::new(&path);
            assert_eq!(
                store.load().unwrap(),
                Some(precommitted(&block)),
                "len {len}"
            );
            assert_eq!(store.len as usize, second);
        }
    }

    #[test]
    fn a_version_one_file_is_read_and_upgraded_by_the_next_save() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safety");
        let state = sample();
        fs::write(&path, state.encode()).unwrap();
        let mut store = FileStore::new(&path);
        assert_eq!(store.load().unwrap(), Some(state.clone()));
        let mut next = state.clone();
        next.round = 4;
        store.save(&next).unwrap();
        assert!(fs::read(&path).unwrap().starts_with(JOURNAL_MAGIC));
        assert_eq!(reopen(&path).unwrap(), Some(next));
        // A damaged version-1 file is still an error.
        let mut bytes = state.encode();
        bytes[20] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(reopen(&path), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn signing_rules_refuse_conflicts_and_allow_resends() {
        let state = sample();
        let prevote = state.prevote.unwrap();
        // Same vote again: resend the stored copy.
        assert_eq!(
            state.may_sign_vote(&prevote.vote),
            SignCheck::Resend(prevote)
        );
        // Different value, same round: refuse.
        let nil = Vote {
            value: None,
            ..prevote.vote
        };
        assert_eq!(state.may_sign_vote(&nil), SignCheck::Refuse);
        // Earlier round: refuse. Later round: sign.
        let earlier = Vote { round: 2, ..nil };
        assert_eq!(state.may_sign_vote(&earlier), SignCheck::Refuse);
        let later = Vote { round: 4, ..nil };
        assert_eq!(state.may_sign_vote(&later), SignCheck::Sign);
        // Other heights.
        assert_eq!(
            state.may_sign_vote(&Vote { height: 8, ..later }),
            SignCheck::Refuse
        );
        assert_eq!(
            state.may_sign_vote(&Vote {
                height: 10,
                round: 0,
                ..later
            }),
            SignCheck::Sign
        );
        let p = state.proposal.clone().unwrap();
        let other = Proposal {
            block_id: Hash([9; 32]),
            ..p.signed.proposal
        };
        assert_eq!(state.may_sign_proposal(&other), SignCheck::Refuse);
        assert_eq!(
            state.may_sign_proposal(&p.signed.proposal),
            SignCheck::Resend(p.clone())
        );
        let _ = ValidatorId([0; 32]);
    }
}
