//! Stepping a run of commands with the memory they will touch fetched ahead.
//!
//! On a book larger than the caches, a cancel or modify waits on memory several times in a
//! row: the `(account, oid)` index entry, then the order it points to, then the neighbours it
//! unlinks from its level and the tail of the level it joins, each address known only once
//! the previous read is done. [`Engine::step_many`] issues those reads early, as CPU prefetch
//! hints, for the commands a few places ahead (each stage once the previous stage's line has
//! had time to arrive), so the misses of several commands overlap. A hint changes no value:
//! the commands are stepped exactly as by [`Engine::step`], and when a hint is stale (an
//! earlier command moved or freed the order) it only wastes a fetch.
//!
//! At every book size it also fetches the commands themselves [`COMMANDS_AHEAD`] places
//! ahead. A run of commands read from memory crosses a 4 KiB page every 64 commands (a
//! [`Command`] is 64 bytes), where the hardware's stream prefetcher stops and starts over:
//! at 1K resting orders, with 160-byte commands then, the reads of the command stream were
//! ~11% of the benchmark's samples (docs/perf.md). A caller stepping commands that are
//! already in cache (the sequencer, one at a time) gains nothing from this.

use super::store::{prefetch, prefetch_all};
use super::*;

/// Commands ahead whose own bytes are fetched (every book size; 4 and 16 measured slower).
const COMMANDS_AHEAD: usize = 8;
/// Commands ahead whose `(account, oid)` index entry is fetched.
const INDEX_AHEAD: usize = 8;
/// Commands ahead whose order (read through the index entry fetched before) is fetched.
const ORDER_AHEAD: usize = 4;
/// Commands ahead whose level neighbours and new level's tail are fetched.
const NEIGHBOURS_AHEAD: usize = 2;
/// Below this many resting orders the hints are skipped: the book's order slots (56 bytes
/// each) and index then fit in a core's L2, where the hints would cost instructions and
/// save no waits.
const PREFETCH_MIN_RESTING: u32 = 1 << 15;

impl<L: PriceLadder> Engine<L> {
    /// Applies `commands` in order, each exactly as [`Engine::step`] would, calling `each`
    /// with `out` after each command (it may read or clear the events). It prefetches the
    /// commands a few places ahead, and on books of at least 32,768 resting orders what
    /// cancels and modifies a few commands ahead will read (module docs): same events and
    /// state as stepping one by one, fewer stalls.
    pub fn step_many(
        &mut self,
        commands: &[Command],
        out: &mut Vec<Event>,
        mut each: impl FnMut(&mut Vec<Event>),
    ) {
        for (at, command) in commands.iter().enumerate() {
            if let Some(ahead) = commands.get(at + COMMANDS_AHEAD) {
                prefetch_all(ahead);
            }
            if self.resting >= PREFETCH_MIN_RESTING {
                if let Some(ahead) = commands.get(at + INDEX_AHEAD) {
                    self.prefetch_index_entry(ahead);
                }
                if let Some(ahead) = commands.get(at + ORDER_AHEAD) {
                    self.prefetch_order(ahead);
                }
                if let Some(ahead) = commands.get(at + NEIGHBOURS_AHEAD) {
                    self.prefetch_neighbours(ahead);
                }
            }
            self.step(command, out);
            each(out);
        }
    }

    /// The account and oid a cancel or modify names (the oid index's key: no lookup).
    #[inline]
    fn order_key(command: &Command) -> Option<(AccountId, OrderId)> {
        match *command {
            Command::Cancel { account, oid, .. } | Command::Modify { account, oid, .. } => {
                Some((account, oid))
            }
            _ => None,
        }
    }

    /// The slot a cancel or modify will probably find (hash bits only, unverified).
    #[inline]
    fn probable_slot(&self, command: &Command) -> Option<u32> {
        let (account, oid) = Self::order_key(command)?;
        let slot = self.open.probable_slot(account, oid)?;
        ((slot as usize) < self.orders.len()).then_some(slot)
    }

    /// Stage 1: the `(account, oid)` index entry.
    fn prefetch_index_entry(&self, command: &Command) {
        if let Some((account, oid)) = Self::order_key(command) {
            prefetch(self.open.home_entry(account, oid));
        }
    }

    /// Stage 2: the order's slot.
    fn prefetch_order(&self, command: &Command) {
        if let Some(slot) = self.probable_slot(command) {
            prefetch(&self.orders[slot as usize]);
        }
    }

    /// Stage 3: the order's level neighbours (unlinked by a cancel or a re-entering modify)
    /// and, for a modify to another price, the tail of the level it will join.
    fn prefetch_neighbours(&self, command: &Command) {
        let Some(slot) = self.probable_slot(command) else {
            return;
        };
        let node = &self.orders[slot as usize];
        for neighbour in [node.prev, node.next] {
            if neighbour != NIL && (neighbour as usize) < self.orders.len() {
                prefetch(&self.orders[neighbour as usize]);
            }
        }
        if let Command::Modify { price, .. } = *command {
            let Some(market) = self.markets.get(node.market as usize) else {
                return;
            };
            if price == node.price() || !(1..=market.params.max_price).contains(&price) {
                return;
            }
            let key = market.params.key(node.side, price);
            if let Some(level) = market.ladder(node.side).get(key) {
                if level.tail != NIL && (level.tail as usize) < self.orders.len() {
                    prefetch(&self.orders[level.tail as usize]);
                }
            }
        }
    }
}
