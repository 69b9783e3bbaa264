//! Dense copies of the ids an order record holds of its owner and its market.
//!
//! An order node holds its account's and market's indices; its record holds their ids. The
//! commit's gathers (`order_gather`) read the ids of 16 owners at a time: from a list of 8-byte
//! ids by index they touch fewer cache lines than from the accounts' large records, and up to
//! 32 market ids fit two vector registers, looked up without reading memory per order.
//! Accounts and markets are only ever added (a snapshot's restore empties the accounts and
//! then adds them again, and empties the copy with them), so each commit appends the ids of
//! those added since the last.

use super::*;

/// The accounts' and markets' ids by index, as of the last commit.
#[derive(Default)]
pub(super) struct RecordIds {
    /// `accounts[i]` is the id of account `i`.
    pub(super) accounts: Vec<AccountId>,
    /// `markets[i]` is the id of market `i`.
    pub(super) markets: Vec<MarketId>,
}

impl RecordIds {
    /// Appends the ids of the accounts and markets added since the last call.
    pub(super) fn sync<L>(&mut self, accounts: &[AccountState], markets: &[MarketState<L>]) {
        let known = self.accounts.len();
        self.accounts
            .extend(accounts[known..].iter().map(|account| account.id));
        let known = self.markets.len();
        self.markets
            .extend(markets[known..].iter().map(|market| market.spec.market));
    }

    /// Forgets every account's id (a restore empties the accounts before it adds them again).
    pub(super) fn forget_accounts(&mut self) {
        self.accounts.clear();
    }

    /// Checks that the copied ids are those of the first accounts and markets.
    pub(super) fn check<L>(
        &self,
        accounts: &[AccountState],
        markets: &[MarketState<L>],
    ) -> Result<(), String> {
        check_copy("account", &self.accounts, accounts, |account| account.id)?;
        check_copy("market", &self.markets, markets, |market| {
            market.spec.market
        })
    }
}

/// Checks that `copied` holds the ids of the first of `items`.
fn check_copy<T, Id: PartialEq>(
    kind: &str,
    copied: &[Id],
    items: &[T],
    id: impl Fn(&T) -> Id,
) -> Result<(), String> {
    if copied.len() > items.len() {
        return Err(format!(
            "{} {kind} ids for {} {kind}s",
            copied.len(),
            items.len()
        ));
    }
    match copied
        .iter()
        .zip(items)
        .position(|(copy, item)| *copy != id(item))
    {
        Some(index) => Err(format!(
            "{kind} {index}'s id is not the one the commit copied"
        )),
        None => Ok(()),
    }
}
