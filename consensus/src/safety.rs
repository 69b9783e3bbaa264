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
//! File format ([`FileStore`]), little-endian: `version u8 = 1, height u64, round u32`, then
//! three optional signed messages (flag u8, then a proposal message or a signed vote), then
//! two optional `(round u32, block)` pairs (lock, valid), then `count u32` signed votes (the
//! valid value's proof of lock), then BLAKE3 of all of it (32 bytes).
//! It is written to `<path>.tmp`, fsynced, renamed over `<path>`, and the folder is fsynced.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::block::Block;
use crate::codec::{DecodeError, Reader, Writer};
use crate::messages::{ProposalMessage, SignedVote, VoteKind};
use crate::types::{Height, Round};

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

    /// The encoding, checksum included.
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
    /// The stored bytes are damaged.
    #[error("safety store at {path} is damaged: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What failed to decode.
        source: DecodeError,
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

/// A store in one file, replaced atomically (write temp, fsync, rename, fsync folder).
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path` (the file need not exist yet; its folder must).
    pub fn new(path: &Path) -> FileStore {
        FileStore {
            path: path.to_path_buf(),
        }
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl SafetyStore for FileStore {
    fn load(&mut self) -> Result<Option<SafetyState>, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) => {
                SafetyState::decode(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::Corrupt {
                        path: self.path.clone(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    fn save(&mut self, state: &SafetyState) -> Result<(), StoreError> {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = File::create(&tmp).map_err(|e| self.io(e))?;
        file.write_all(&state.encode()).map_err(|e| self.io(e))?;
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
            payload: b"batch".to_vec(),
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
