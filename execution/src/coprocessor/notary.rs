//! The notary: a small second co-processor that shows the interface end to end. Each
//! account keeps up to `max_records` (a registry parameter, default
//! [`DEFAULT_MAX_RECORDS`]) records of 20 bytes under 32-bit keys: attestations, addresses,
//! content hashes.
//!
//! | method | name | arguments (24 bytes) | gas | returns (32 bytes) |
//! |---|---|---|---|---|
//! | 1 | `set` | key u32 LE, value `[20]` | 10 | previous value `[20]`, found u8, 11 zero bytes |
//! | 2 | `clear` | key u32 LE, 20 zero bytes | 5 | as `set` |
//! | query 1 | `get` | key u32 LE, 20 zero bytes | | value `[20]`, found u8, 11 zero bytes |
//!
//! Refusals: `unknown_method`, `bad_args` (clear or get with non-zero value bytes),
//! `notary_full` (a new key beyond the account's limit). State root:
//! `BLAKE3("nexus-notary-v1" || count u64 || lane-wise sum of BLAKE3(account || key ||
//! value))`, updated per call. Snapshot: `"nexus-notary-v1\0"`, count u64, then per record in
//! (account, key) order: account u64, key u32, value `[20]`, all little-endian.

use std::collections::BTreeMap;

use engine::AccountId;
use transactions::CALL_ARGS_LEN;

use super::{builtin_code_hash, Call, CallResult, Coprocessor, Implementation, Params, Refusal};

/// Records an account may hold when the registry sets no `max_records`.
pub const DEFAULT_MAX_RECORDS: u64 = 16;

const MAGIC: &[u8; 16] = b"nexus-notary-v1\0";
const SET: u8 = 1;
const CLEAR: u8 = 2;
const GET: u8 = 1;
const RECORD_LEN: usize = 8 + 4 + 20;

/// The code hash a registry entry names the notary by.
pub fn notary_code_hash() -> [u8; 32] {
    builtin_code_hash("notary/v1")
}

/// The notary's catalog entry.
pub(super) fn implementation() -> Implementation {
    Implementation {
        name: "notary",
        code_hash: notary_code_hash(),
        new: |params| Box::new(Notary::new(params)),
        restore: |bytes, params| Ok(Box::new(Notary::restore(bytes, params)?)),
    }
}

/// Refused: a new key beyond the account's limit.
const FULL: Refusal = Refusal {
    code: "notary_full",
    reason: "the account holds its maximum of records",
};

/// Every account's records and their running commitment.
pub struct Notary {
    records: BTreeMap<(AccountId, u32), [u8; 20]>,
    per_account: BTreeMap<AccountId, u64>,
    max_records: u64,
    sum: [u64; 4],
}

impl Notary {
    /// An empty notary with `params` (`max_records`).
    pub fn new(params: &Params) -> Notary {
        let mut notary = Notary {
            records: BTreeMap::new(),
            per_account: BTreeMap::new(),
            max_records: DEFAULT_MAX_RECORDS,
            sum: [0; 4],
        };
        notary.set_params(params);
        notary
    }

    /// The state [`Coprocessor::snapshot`] wrote.
    pub fn restore(bytes: &[u8], params: &Params) -> Result<Notary, String> {
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or("not a notary snapshot")?;
        let (count, records) = body.split_at_checked(8).ok_or("truncated")?;
        let count = u64::from_le_bytes(count.try_into().expect("8 bytes"));
        if records.len() as u64 != count.saturating_mul(RECORD_LEN as u64) {
            return Err("truncated or too long".to_string());
        }
        let mut notary = Notary::new(params);
        for record in records.chunks_exact(RECORD_LEN) {
            let account = u64::from_le_bytes(record[..8].try_into().expect("8"));
            let key = u32::from_le_bytes(record[8..12].try_into().expect("4"));
            notary.put(account, key, Some(record[12..].try_into().expect("20")));
        }
        Ok(notary)
    }

    /// Sets (`Some`) or removes (`None`) one record, keeping counts and the sum; returns
    /// the previous value.
    fn put(&mut self, account: AccountId, key: u32, value: Option<[u8; 20]>) -> Option<[u8; 20]> {
        let previous = match value {
            Some(value) => self.records.insert((account, key), value),
            None => self.records.remove(&(account, key)),
        };
        if let Some(old) = previous {
            fold(
                &mut self.sum,
                record_digest(account, key, &old),
                u64::wrapping_sub,
            );
        }
        if let Some(new) = value {
            fold(
                &mut self.sum,
                record_digest(account, key, &new),
                u64::wrapping_add,
            );
        }
        let count = self.per_account.entry(account).or_default();
        *count = *count + u64::from(value.is_some()) - u64::from(previous.is_some());
        if *count == 0 {
            self.per_account.remove(&account);
        }
        previous
    }
}

impl Coprocessor for Notary {
    fn gas(&self, method: u8, _args: &[u8; CALL_ARGS_LEN]) -> Option<u64> {
        match method {
            SET => Some(10),
            CLEAR => Some(5),
            _ => None,
        }
    }

    fn call(&mut self, call: &Call<'_>) -> CallResult {
        let (key, value) = split(call.args);
        let previous = match call.method {
            SET => {
                let held = self.per_account.get(&call.account).copied().unwrap_or(0);
                let new = !self.records.contains_key(&(call.account, key));
                if new && held >= self.max_records {
                    return Err(FULL);
                }
                self.put(call.account, key, Some(value))
            }
            CLEAR if value == [0; 20] => self.put(call.account, key, None),
            CLEAR => return Err(Refusal::BAD_ARGS),
            _ => return Err(Refusal::UNKNOWN_METHOD),
        };
        Ok(answer(previous))
    }

    fn query(&self, account: AccountId, method: u8, args: &[u8; CALL_ARGS_LEN]) -> CallResult {
        let (key, value) = split(args);
        match method {
            GET if value == [0; 20] => Ok(answer(self.records.get(&(account, key)).copied())),
            GET => Err(Refusal::BAD_ARGS),
            _ => Err(Refusal::UNKNOWN_METHOD),
        }
    }

    fn root(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"nexus-notary-v1");
        hasher.update(&(self.records.len() as u64).to_le_bytes());
        for lane in self.sum {
            hasher.update(&lane.to_le_bytes());
        }
        *hasher.finalize().as_bytes()
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + 8 + self.records.len() * RECORD_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.records.len() as u64).to_le_bytes());
        for ((account, key), value) in &self.records {
            out.extend_from_slice(&account.to_le_bytes());
            out.extend_from_slice(&key.to_le_bytes());
            out.extend_from_slice(value);
        }
        out
    }

    fn set_params(&mut self, params: &Params) {
        self.max_records = params
            .get("max_records")
            .copied()
            .unwrap_or(DEFAULT_MAX_RECORDS);
    }
}

/// The key and the value bytes of a call's arguments.
fn split(args: &[u8; CALL_ARGS_LEN]) -> (u32, [u8; 20]) {
    let key = u32::from_le_bytes(args[..4].try_into().expect("4 bytes"));
    (key, args[4..].try_into().expect("20 bytes"))
}

/// A record's value as a call returns it: 20 bytes, then 1 if it was there.
fn answer(value: Option<[u8; 20]>) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Some(value) = value {
        out[..20].copy_from_slice(&value);
        out[20] = 1;
    }
    out
}

fn record_digest(account: AccountId, key: u32, value: &[u8; 20]) -> [u64; 4] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&account.to_le_bytes());
    hasher.update(&key.to_le_bytes());
    hasher.update(value);
    let bytes = hasher.finalize();
    std::array::from_fn(|i| {
        u64::from_le_bytes(bytes.as_bytes()[i * 8..][..8].try_into().expect("8"))
    })
}

fn fold(sum: &mut [u64; 4], digest: [u64; 4], op: fn(u64, u64) -> u64) {
    for (lane, value) in sum.iter_mut().zip(digest) {
        *lane = op(*lane, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(key: u32, value: [u8; 20]) -> [u8; CALL_ARGS_LEN] {
        let mut out = [0u8; CALL_ARGS_LEN];
        out[..4].copy_from_slice(&key.to_le_bytes());
        out[4..].copy_from_slice(&value);
        out
    }

    fn call(notary: &mut Notary, account: AccountId, method: u8, a: [u8; 24]) -> CallResult {
        let call = Call {
            account,
            method,
            args: &a,
            height: 1,
            time_ms: 0,
        };
        notary.call(&call)
    }

    #[test]
    fn records_are_per_account_limited_and_cleared() {
        let params = Params::from([("max_records".to_string(), 2)]);
        let mut notary = Notary::new(&params);
        let empty = notary.root();
        assert_eq!(
            call(&mut notary, 7, SET, args(1, [1; 20])),
            Ok(answer(None))
        );
        assert_eq!(
            call(&mut notary, 7, SET, args(1, [2; 20])),
            Ok(answer(Some([1; 20])))
        );
        assert_eq!(
            call(&mut notary, 7, SET, args(2, [3; 20])),
            Ok(answer(None))
        );
        assert_eq!(call(&mut notary, 7, SET, args(3, [4; 20])), Err(FULL));
        // Another account has its own records; a key of 7's is not its.
        assert_eq!(notary.query(8, GET, &args(1, [0; 20])), Ok(answer(None)));
        assert_eq!(
            notary.query(7, GET, &args(1, [0; 20])),
            Ok(answer(Some([2; 20])))
        );
        assert_eq!(
            call(&mut notary, 7, CLEAR, args(1, [9; 20])),
            Err(Refusal::BAD_ARGS)
        );
        assert_eq!(
            call(&mut notary, 7, CLEAR, args(1, [0; 20])),
            Ok(answer(Some([2; 20])))
        );
        assert_eq!(
            call(&mut notary, 7, SET, args(3, [4; 20])),
            Ok(answer(None))
        );
        assert_eq!(
            call(&mut notary, 7, 9, args(3, [4; 20])),
            Err(Refusal::UNKNOWN_METHOD)
        );
        // The root is a function of the records alone: clearing everything restores it.
        call(&mut notary, 7, CLEAR, args(2, [0; 20])).unwrap();
        assert_ne!(notary.root(), empty);
        call(&mut notary, 7, CLEAR, args(3, [0; 20])).unwrap();
        assert_eq!(notary.root(), empty);
    }

    #[test]
    fn a_snapshot_restores_the_same_records_and_root() {
        let mut notary = Notary::new(&Params::new());
        for (account, key) in [(1, 5), (2, 5), (1, 6)] {
            call(&mut notary, account, SET, args(key, [key as u8; 20])).unwrap();
        }
        let bytes = notary.snapshot();
        let back = Notary::restore(&bytes, &Params::new()).unwrap();
        assert_eq!(back.root(), notary.root());
        assert_eq!(back.snapshot(), bytes);
        assert!(Notary::restore(&bytes[..bytes.len() - 1], &Params::new()).is_err());
        assert!(Notary::restore(b"nexus-notary-v2\0", &Params::new()).is_err());
    }
}
