//! Replay protection (docs/transactions.md, "Nonces").
//!
//! A nonce is a u64, by convention the signer's clock in milliseconds. A transaction in a
//! block with timestamp `T` (ms) is valid only if its nonce lies in
//! `(T - NONCE_PAST_MS, T + NONCE_FUTURE_MS]`, is not one of the account's remembered nonces,
//! and, once the account remembers [`REMEMBERED_NONCES`] of them, is above the smallest.
//! Executing it remembers its nonce (dropping the smallest past the limit). So each nonce is
//! used at most once; a client may have many transactions in flight from several
//! connections, and they may be included in any order (Hyperliquid's rule, with 64 remembered
//! nonces per account). A transaction older than the window can never be replayed: its nonce
//! is too old, whatever the account remembers.

/// How far before the block time a nonce may be, in ms (2 days).
pub const NONCE_PAST_MS: u64 = 2 * 24 * 3600 * 1000;
/// How far after the block time a nonce may be, in ms (1 day).
pub const NONCE_FUTURE_MS: u64 = 24 * 3600 * 1000;
/// How many of its highest used nonces the chain keeps per account.
pub const REMEMBERED_NONCES: usize = 64;

/// Why a nonce is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    /// Before the window: older than `NONCE_PAST_MS` before the block time.
    #[error("nonce {nonce} is too old: the oldest allowed now is {oldest}")]
    Stale {
        /// The nonce.
        nonce: u64,
        /// The smallest nonce the window allows.
        oldest: u64,
    },
    /// After the window: more than `NONCE_FUTURE_MS` after the block time.
    #[error("nonce {nonce} is too far ahead: the newest allowed now is {newest}")]
    Future {
        /// The nonce.
        nonce: u64,
        /// The largest nonce the window allows.
        newest: u64,
    },
    /// The account used this nonce already (a replay).
    #[error("nonce {0} was used already")]
    Used(u64),
    /// The account remembers its maximum of nonces, all above this one.
    #[error("nonce {nonce} is below the account's {REMEMBERED_NONCES} newest used nonces (lowest {lowest})")]
    BelowRemembered {
        /// The nonce.
        nonce: u64,
        /// The smallest remembered nonce.
        lowest: u64,
    },
}

/// The nonces one account has used, as the chain remembers them (its state, in the root).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NonceSet {
    /// Ascending, at most [`REMEMBERED_NONCES`].
    used: Vec<u64>,
}

impl NonceSet {
    /// Whether `nonce` may be used in a block with timestamp `block_time_ms`.
    pub fn check(&self, nonce: u64, block_time_ms: u64) -> Result<(), NonceError> {
        let oldest = block_time_ms
            .saturating_sub(NONCE_PAST_MS)
            .saturating_add(1);
        let newest = block_time_ms.saturating_add(NONCE_FUTURE_MS);
        if nonce < oldest {
            return Err(NonceError::Stale { nonce, oldest });
        }
        if nonce > newest {
            return Err(NonceError::Future { nonce, newest });
        }
        if self.used.binary_search(&nonce).is_ok() {
            return Err(NonceError::Used(nonce));
        }
        if self.used.len() >= REMEMBERED_NONCES && nonce < self.used[0] {
            return Err(NonceError::BelowRemembered {
                nonce,
                lowest: self.used[0],
            });
        }
        Ok(())
    }

    /// Remembers a nonce that [`NonceSet::check`] accepted, forgetting the smallest past
    /// [`REMEMBERED_NONCES`].
    pub fn record(&mut self, nonce: u64) {
        let at = match self.used.binary_search(&nonce) {
            Ok(_) => return,
            Err(at) => at,
        };
        self.used.insert(at, nonce);
        if self.used.len() > REMEMBERED_NONCES {
            self.used.remove(0);
        }
    }

    /// Every nonce below this one is refused `BelowRemembered` (0 until the account remembers
    /// [`REMEMBERED_NONCES`]): after a block, the only nonces the account's remembered set
    /// can have newly refused are those below it and those the block used.
    pub fn floor(&self) -> u64 {
        if self.used.len() >= REMEMBERED_NONCES {
            self.used[0]
        } else {
            0
        }
    }

    /// The remembered nonces, ascending.
    pub fn used(&self) -> &[u64] {
        &self.used
    }
}
