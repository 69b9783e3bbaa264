//! Snapshots: the whole engine state as bytes, and back.
//!
//! Format (all integers little-endian), version 2:
//!
//! ```text
//! magic "NXSNAP02"
//! config      max_resting_orders u32, max_open_orders_per_account u32
//! assets      count u32, then per asset: id u32, fee_pool i64, supply i64
//! markets     count u32, then per market: kind u8, then
//!             kind 0 (spot): MarketSpec::to_le_bytes (52 bytes: id u32, base u32, quote u32,
//!               base_units_per_lot i64, quote_units_per_tick_lot i64, min_lots i64,
//!               max_price_ticks i64, maker_fee_bps i32, taker_fee_bps i32)
//!             kind 1 (perp): PerpSpec::to_le_bytes, then oracle i64, mark i64,
//!               ema_premium_ppb i64, premium_sum_ppb i64, premium_samples u32,
//!               last_trade i64, funding_index i128, funding_pool i64, long_lots i64
//! accounts    count u32, then per account: id u64, then per asset: total i64, locked i64,
//!             then perp collateral i64, order_margin i64, positions count u32, then per
//!             position: perp index u32, size i64, open_notional i128, funding_basis i128,
//!             leverage u32, isolated u8, isolated_margin i64
//! orders      count u32, then per resting order in entry order: market index u32,
//!             account index u32, oid u64, side u8 (0 buy, 1 sell), price i64, remaining i64,
//!             stp u8 (0 cancel_maker, 1 cancel_taker, 2 cancel_both), post_only u8,
//!             entry u64, reduce_only u8, tier u8
//! entries     u64 (the engine's re-entry counter)
//! checksum    BLAKE3 of every byte above (32 bytes)
//! ```
//!
//! The liquidation index and the reduce-only order counts are derived and rebuilt.
//!
//! [`Engine::image`] copies the state (the order slab as memory, the rest encoded) so that
//! another thread can encode it later: [`EngineImage::encode`] gives the bytes
//! [`Engine::snapshot`] gave when the image was taken.
//!
//! Orders are written in the engine-wide order in which they (re-)entered a book. That order
//! agrees with every level's FIFO, so re-inserting orders in it rebuilds them exactly, and it
//! is the order readers of an account's orders sort by (the list itself keeps re-entered spot
//! orders in place, `Engine::keeps_account_place`; its order is not state). A restored engine passes `check_invariants` and has the same
//! `state_hash` as the engine the snapshot was taken from.

use std::fmt;

use super::*;

const MAGIC: &[u8; 8] = b"NXSNAP02";

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// The bytes do not start with the snapshot magic of this version.
    BadMagic,
    /// The bytes end before the snapshot does.
    Truncated,
    /// The checksum does not match the contents: the snapshot is corrupt.
    ChecksumMismatch,
    /// Bytes follow the checksum.
    TrailingBytes,
    /// The contents decode but describe an impossible state.
    Inconsistent(String),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::BadMagic => write!(f, "not an engine snapshot (bad magic)"),
            SnapshotError::Truncated => write!(f, "snapshot is truncated"),
            SnapshotError::ChecksumMismatch => write!(f, "snapshot checksum mismatch (corrupt)"),
            SnapshotError::TrailingBytes => write!(f, "bytes after the snapshot checksum"),
            SnapshotError::Inconsistent(why) => write!(f, "snapshot is inconsistent: {why}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        if self.bytes.len() < N {
            return Err(SnapshotError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        Ok(head.try_into().expect("split at N"))
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    fn i128(&mut self) -> Result<i128, SnapshotError> {
        Ok(i128::from_le_bytes(self.take()?))
    }
    /// A count of items each at least `item_bytes` long, checked against what is left so a
    /// corrupt count cannot make us allocate wildly.
    fn count(&mut self, item_bytes: usize) -> Result<usize, SnapshotError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(item_bytes) > self.bytes.len() {
            return Err(SnapshotError::Truncated);
        }
        Ok(count)
    }
}

/// Bytes of one resting order in a snapshot.
const ORDER_BYTES: usize = 45;

/// A resting order's snapshot record (see the module docs), built on the stack and appended
/// at once.
fn encode_order(node: &OrderNode) -> [u8; ORDER_BYTES] {
    let mut record = [0u8; ORDER_BYTES];
    record[0..4].copy_from_slice(&node.market.to_le_bytes());
    record[4..8].copy_from_slice(&node.account.to_le_bytes());
    record[8..16].copy_from_slice(&node.oid.to_le_bytes());
    record[16] = node.side.code();
    record[17..25].copy_from_slice(&node.price().to_le_bytes());
    record[25..33].copy_from_slice(&node.remaining.to_le_bytes());
    record[33] = node.stp.code();
    record[34] = node.post_only() as u8;
    record[35..43].copy_from_slice(&node.entry.to_le_bytes());
    record[43] = node.reduce_only() as u8;
    record[44] = node.tier;
    record
}

/// The orders section: the count, then every resting order in `orders` in entry order.
fn write_orders(out: &mut Vec<u8>, orders: &SlotVec<OrderNode>, resting: u32) {
    let resting = slots_in_entry_order(orders, resting);
    out.extend_from_slice(&(resting.len() as u32).to_le_bytes());
    for (_, slot) in resting {
        out.extend_from_slice(&encode_order(&orders[slot as usize]));
    }
}

/// `(entry, slot)` of every resting order, in entry order. The slab is read in slot order
/// and the pairs sorted by their own key: walking the account lists and sorting node
/// references read 1M scattered nodes twice (docs/perf.md, "Snapshots").
fn slots_in_entry_order(orders: &SlotVec<OrderNode>, resting: u32) -> Vec<(u64, u32)> {
    let mut slots = Vec::with_capacity(resting as usize);
    for slot in 0..orders.len() {
        let node = &orders[slot];
        if node.account != NIL {
            slots.push((node.entry, slot as u32));
        }
    }
    // Entries are unique, so the order is total; a book filled without cancels is already
    // sorted, which the sort finds in one pass.
    slots.sort_unstable_by_key(|&(entry, _)| entry);
    slots
}

/// Appends the re-entry counter and the checksum of everything before it.
fn seal(mut out: Vec<u8>, entries: u64) -> Vec<u8> {
    out.extend_from_slice(&entries.to_le_bytes());
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    out
}

/// An engine's state copied at one point ([`Engine::image`]), to be encoded later on
/// another thread: a validator's loop takes the copy at a block boundary and a writer
/// thread encodes it.
pub struct EngineImage {
    /// The snapshot up to its orders section.
    head: Vec<u8>,
    /// A copy of the order slab.
    orders: SlotVec<OrderNode>,
    resting: u32,
    entries: u64,
}

impl EngineImage {
    /// The bytes [`Engine::snapshot`] gave when the image was taken.
    pub fn encode(self) -> Vec<u8> {
        let mut out = self.head;
        out.reserve(4 + self.resting as usize * ORDER_BYTES + 40);
        write_orders(&mut out, &self.orders, self.resting);
        seal(out, self.entries)
    }
}

fn inconsistent(why: impl Into<String>) -> SnapshotError {
    SnapshotError::Inconsistent(why.into())
}

impl<L: PriceLadder> Engine<L> {
    /// The whole state as bytes (see the module docs for the format). Allocates; O(state).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = self.snapshot_head(self.resting as usize * ORDER_BYTES);
        write_orders(&mut out, &self.orders, self.resting);
        seal(out, self.entries)
    }

    /// A copy of the state to encode later, elsewhere ([`EngineImage::encode`]): what
    /// scales with accounts is encoded now, the order slab copied whole (a copy of memory,
    /// cheaper than reading 1M orders in entry order).
    pub fn image(&self) -> EngineImage {
        EngineImage {
            head: self.snapshot_head(0),
            orders: self.orders.clone(),
            resting: self.resting,
            entries: self.entries,
        }
    }

    /// The snapshot up to its orders section, with room for `more` bytes after it.
    fn snapshot_head(&self, more: usize) -> Vec<u8> {
        let accounts_bytes = self.accounts.len() * (28 + 16 * self.assets.len());
        let mut out = Vec::with_capacity(1024 + accounts_bytes + more);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.config.max_resting_orders.to_le_bytes());
        out.extend_from_slice(&self.config.max_open_orders_per_account.to_le_bytes());
        out.extend_from_slice(&(self.assets.len() as u32).to_le_bytes());
        for asset in &self.assets {
            out.extend_from_slice(&asset.id.to_le_bytes());
            out.extend_from_slice(&asset.fee_pool.to_le_bytes());
            out.extend_from_slice(&asset.supply.to_le_bytes());
        }
        out.extend_from_slice(&(self.markets.len() as u32).to_le_bytes());
        for market in &self.markets {
            if market.params.perp == NIL {
                out.push(0);
                out.extend_from_slice(&market.spec.to_le_bytes());
                continue;
            }
            let perp = &self.perps[market.params.perp as usize];
            out.push(1);
            out.extend_from_slice(&perp.spec.to_le_bytes());
            for value in [
                perp.oracle,
                perp.mark,
                perp.ema_premium_ppb,
                perp.premium_sum_ppb,
            ] {
                out.extend_from_slice(&value.to_le_bytes());
            }
            out.extend_from_slice(&perp.premium_samples.to_le_bytes());
            out.extend_from_slice(&perp.last_trade.to_le_bytes());
            out.extend_from_slice(&perp.funding_index.to_le_bytes());
            out.extend_from_slice(&perp.funding_pool.to_le_bytes());
            out.extend_from_slice(&perp.long_lots.to_le_bytes());
        }
        out.extend_from_slice(&(self.accounts.len() as u32).to_le_bytes());
        for account in &self.accounts {
            out.extend_from_slice(&account.id.to_le_bytes());
            for balance in &account.balances {
                out.extend_from_slice(&balance.total.to_le_bytes());
                out.extend_from_slice(&balance.locked.to_le_bytes());
            }
            let perp = &account.perp;
            out.extend_from_slice(&perp.collateral.to_le_bytes());
            out.extend_from_slice(&perp.order_margin.to_le_bytes());
            out.extend_from_slice(&(perp.positions.len() as u32).to_le_bytes());
            for position in &perp.positions {
                out.extend_from_slice(&position.perp.to_le_bytes());
                out.extend_from_slice(&position.size.to_le_bytes());
                out.extend_from_slice(&position.open_notional.to_le_bytes());
                out.extend_from_slice(&position.funding_basis.to_le_bytes());
                out.extend_from_slice(&position.leverage.to_le_bytes());
                out.push(position.isolated as u8);
                out.extend_from_slice(&position.isolated_margin.to_le_bytes());
            }
        }
        out
    }

    /// Rebuilds an engine from [`Engine::snapshot`] bytes. Checks the checksum, then every
    /// invariant of the rebuilt state; never returns a silently different engine.
    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        if bytes.len() < MAGIC.len() + 32 {
            return Err(SnapshotError::Truncated);
        }
        let (body, checksum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != checksum {
            return Err(SnapshotError::ChecksumMismatch);
        }
        let mut reader = Reader {
            bytes: &body[MAGIC.len()..],
        };
        let config = EngineConfig {
            max_resting_orders: reader.u32()?,
            max_open_orders_per_account: reader.u32()?,
        };
        let mut engine = Engine::new(config);
        let mut events = Vec::new();
        for _ in 0..reader.count(20)? {
            let asset = reader.u32()?;
            engine.step(&Command::CreateAsset { asset }, &mut events);
            let state = engine.assets.last_mut().expect("asset just created");
            state.fee_pool = reader.i64()?;
            state.supply = reader.i64()?;
        }
        for _ in 0..reader.count(1 + MarketSpec::ENCODED_LEN)? {
            match reader.u8()? {
                0 => {
                    let spec =
                        MarketSpec::from_le_bytes(&reader.take::<{ MarketSpec::ENCODED_LEN }>()?);
                    engine.step(&Command::CreateMarket(spec), &mut events);
                }
                1 => {
                    let spec =
                        PerpSpec::from_le_bytes(&reader.take::<{ PerpSpec::ENCODED_LEN }>()?);
                    engine.step(&Command::CreatePerpMarket(Box::new(spec)), &mut events);
                    let Some(perp) = engine.perps.last_mut() else {
                        return Err(inconsistent(format!("perp market rejected: {events:?}")));
                    };
                    perp.oracle = reader.i64()?;
                    perp.mark = reader.i64()?;
                    perp.ema_premium_ppb = reader.i64()?;
                    perp.premium_sum_ppb = reader.i64()?;
                    perp.premium_samples = reader.u32()?;
                    perp.last_trade = reader.i64()?;
                    perp.funding_index = reader.i128()?;
                    perp.funding_pool = reader.i64()?;
                    perp.long_lots = reader.i64()?;
                }
                kind => return Err(inconsistent(format!("market kind {kind}"))),
            }
        }
        if !events.is_empty() {
            return Err(inconsistent(format!("registry rejected: {events:?}")));
        }
        // Creating a perp market made the insurance account; the accounts section below
        // holds it with the others.
        engine.accounts.clear();
        engine.account_index.clear();
        engine.commitment.forget_accounts();
        engine.insurance = NIL;
        let asset_count = engine.assets.len();
        for index in 0..reader.count(8)? {
            let id = reader.u64()?;
            let mut balances = Vec::with_capacity(asset_count);
            for _ in 0..asset_count {
                balances.push(Balance {
                    total: reader.i64()?,
                    locked: reader.i64()?,
                });
            }
            let mut perp = PerpAccount {
                collateral: reader.i64()?,
                order_margin: reader.i64()?,
                positions: Vec::new(),
            };
            for _ in 0..reader.count(57)? {
                let market = reader.u32()?;
                let mut position = engine
                    .perps
                    .get(market as usize)
                    .map(|_| engine.flat_position(market))
                    .ok_or_else(|| inconsistent(format!("position in perp market #{market}")))?;
                position.size = reader.i64()?;
                position.open_notional = reader.i128()?;
                position.funding_basis = reader.i128()?;
                position.leverage = reader.u32()?;
                position.isolated = reader.u8()? != 0;
                position.isolated_margin = reader.i64()?;
                perp.positions.push(position);
            }
            if engine.account_index.insert(id, index as u32).is_some() {
                return Err(inconsistent(format!("account {id} appears twice")));
            }
            if id == INSURANCE_ACCOUNT {
                engine.insurance = index as u32;
            }
            engine.accounts.push(AccountState {
                id,
                balances,
                open_orders: 0,
                first_order: NIL,
                last_order: NIL,
                dirty: false,
                committed: Lanes::ZERO,
                perp,
                perp_touched: false,
            });
            engine.touch_perp_account(index as u32);
        }
        if !engine.perps.is_empty() && engine.insurance == NIL {
            return Err(inconsistent("perp markets but no insurance account"));
        }
        let order_count = reader.count(ORDER_BYTES)?;
        if order_count > config.max_resting_orders as usize {
            return Err(inconsistent("more orders than the configured store"));
        }
        for _ in 0..order_count {
            let market = reader.u32()? as usize;
            let account = reader.u32()?;
            let oid = reader.u64()?;
            let code = reader.u8()?;
            let side = Side::from_code(code).ok_or_else(|| inconsistent(format!("side {code}")))?;
            let price = reader.i64()?;
            let remaining = reader.i64()?;
            let code = reader.u8()?;
            let stp = SelfTradePrevention::from_code(code)
                .ok_or_else(|| inconsistent(format!("stp {code}")))?;
            let post_only = reader.u8()? != 0;
            let entry = reader.u64()?;
            let reduce_only = reader.u8()? != 0;
            let tier = reader.u8()?;
            let Some(params) = engine.markets.get(market).map(|m| m.params) else {
                return Err(inconsistent(format!("order in unknown market {market}")));
            };
            if account as usize >= engine.accounts.len()
                || !(1..=params.max_price).contains(&price)
                || remaining <= 0
                || (reduce_only && params.perp == NIL)
                || (params.perp != NIL
                    && tier as usize >= engine.perps[params.perp as usize].spec.tiers().len())
            {
                return Err(inconsistent(format!("order {oid} of account #{account}")));
            }
            let taker = Taker {
                account,
                oid,
                side,
                limit: Some(price),
                remaining,
                stp,
                reserve_per_lot: 0,
                reduce_only,
                tier,
            };
            // One probe both checks that the order is new and indexes it.
            let handle = engine.take_slot();
            let (orders, id) = (&engine.orders, engine.accounts[account as usize].id);
            if !engine.open.insert_new(id, oid, handle, |slot| {
                slot_key(orders, slot) == (account, oid)
            }) {
                return Err(inconsistent(format!(
                    "order {oid} of account #{account} twice"
                )));
            }
            engine.attach_resting(handle, market, &taker, price, post_only, true);
            engine.orders[handle as usize].entry = entry;
        }
        engine.entries = reader.u64()?;
        if !reader.bytes.is_empty() {
            return Err(SnapshotError::TrailingBytes);
        }
        // Re-keys every account in the liquidation index.
        engine.finish_perp_command(&mut Vec::new());
        // The fund's ledger is debug accounting, not state: it restarts from what it holds.
        if engine.insurance != NIL {
            engine.insurance_ledger =
                engine.accounts[engine.insurance as usize].perp.collateral as i128;
        }
        engine
            .check_restored()
            .map_err(SnapshotError::Inconsistent)?;
        Ok(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(account: AccountId, oid: OrderId, side: Side, price: Ticks, qty: Lots) -> Command {
        Command::Place(NewOrder {
            account,
            market: 1,
            oid,
            side,
            price: Some(price),
            qty,
            tif: TimeInForce::Gtc,
            stp: SelfTradePrevention::CancelMaker,
            reduce_only: false,
        })
    }

    fn busy_engine() -> Engine {
        let mut engine = Engine::new(EngineConfig {
            max_resting_orders: 64,
            max_open_orders_per_account: 16,
        });
        let mut out = Vec::new();
        let mut commands = vec![
            Command::CreateAsset { asset: 1 },
            Command::CreateAsset { asset: 2 },
            Command::CreateMarket(MarketSpec {
                market: 1,
                base: 1,
                quote: 2,
                base_units_per_lot: 100,
                quote_units_per_tick_lot: 7,
                min_lots: 1,
                max_price_ticks: 5000,
                maker_fee_bps: -2,
                taker_fee_bps: 5,
            }),
        ];
        for account in 1..=3 {
            commands.push(Command::Deposit {
                account,
                asset: 1,
                amount: 1_000_000,
            });
            commands.push(Command::Deposit {
                account,
                asset: 2,
                amount: 10_000_000,
            });
        }
        commands.extend([
            order(1, 1, Side::Buy, 100, 5),
            order(2, 1, Side::Buy, 100, 3),
            order(1, 2, Side::Buy, 99, 4),
            order(3, 1, Side::Sell, 103, 6),
            order(2, 2, Side::Sell, 104, 2),
            // Re-entry moves account 1's first order behind account 2's at a new level.
            Command::Modify {
                account: 1,
                market: 1,
                oid: 1,
                price: 99,
                qty: 5,
            },
            order(3, 2, Side::Sell, 99, 2),
        ]);
        for command in &commands {
            engine.step(command, &mut out);
        }
        engine
    }

    #[test]
    fn restore_rebuilds_the_same_state_and_behaviour() {
        let mut original = busy_engine();
        let mut restored = Engine::<ArrayLadder>::restore(&original.snapshot()).unwrap();
        assert_eq!(restored.state_hash(), original.state_hash());
        assert_eq!(
            restored.book_orders(1, Side::Buy),
            original.book_orders(1, Side::Buy)
        );
        // Same future: a sweep and a cancel-all give the same events on both.
        for command in [
            order(3, 9, Side::Sell, 90, 20),
            Command::CancelAll {
                account: 1,
                market: 1,
            },
        ] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            original.step(&command, &mut a);
            restored.step(&command, &mut b);
            assert_eq!(a, b);
        }
        assert_eq!(restored.state_hash(), original.state_hash());
        // The restored engine commits incrementally to the same root (its commitment's
        // copies, such as the account ids, start from the restored accounts).
        assert_eq!(restored.commit(), original.commit());
        assert_eq!(restored.commit(), restored.state_hash());
        restored.check_invariants().unwrap();
    }

    #[test]
    fn corrupt_or_truncated_snapshots_are_refused() {
        let bytes = busy_engine().snapshot();
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert_eq!(
            Engine::<ArrayLadder>::restore(&flipped).err(),
            Some(SnapshotError::ChecksumMismatch)
        );
        assert!(Engine::<ArrayLadder>::restore(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(
            Engine::<ArrayLadder>::restore(b"garbage").err(),
            Some(SnapshotError::BadMagic)
        );
    }

    /// `busy_engine` plus a cancel and a new order that takes the freed slot: slot order is
    /// no longer entry order.
    fn reused_slot_engine() -> Engine {
        let mut engine = busy_engine();
        let mut out = Vec::new();
        let cancel = Command::Cancel {
            account: 2,
            market: 1,
            oid: 1,
        };
        engine.step(&cancel, &mut out);
        engine.step(&order(1, 3, Side::Sell, 110, 1), &mut out);
        engine
    }

    /// The orders section as the account lists give it (the way snapshots were written
    /// before they read the slab in slot order): every list walked, sorted by entry.
    fn orders_from_account_lists(engine: &Engine) -> Vec<u8> {
        let mut nodes: Vec<&OrderNode> = Vec::new();
        for account in &engine.accounts {
            let mut handle = account.first_order;
            while handle != NIL {
                nodes.push(&engine.orders[handle as usize]);
                handle = engine.orders[handle as usize].account_next;
            }
        }
        nodes.sort_by_key(|node| node.entry);
        nodes.into_iter().flat_map(encode_order).collect()
    }

    #[test]
    fn orders_are_written_in_entry_order_as_the_account_lists_give_them() {
        let engine = reused_slot_engine();
        let slots = slots_in_entry_order(&engine.orders, engine.resting);
        assert!(
            slots.windows(2).any(|w| w[0].1 > w[1].1),
            "a slot was reused out of entry order"
        );
        let bytes = engine.snapshot();
        let expected = orders_from_account_lists(&engine);
        let end = bytes.len() - 32 - 8;
        assert_eq!(&bytes[end - expected.len()..end], &expected[..]);
        let restored = Engine::<ArrayLadder>::restore(&bytes).unwrap();
        assert_eq!(restored.state_hash(), engine.state_hash());
    }

    #[test]
    fn an_image_encodes_to_the_snapshot_of_its_moment() {
        let mut engine = reused_slot_engine();
        let (image, bytes) = (engine.image(), engine.snapshot());
        engine.step(&order(3, 7, Side::Sell, 120, 1), &mut Vec::new());
        assert_ne!(
            engine.snapshot(),
            bytes,
            "the engine changed after the image"
        );
        assert_eq!(image.encode(), bytes);
    }

    #[test]
    fn an_order_listed_twice_is_refused() {
        let engine = busy_engine();
        let bytes = engine.snapshot();
        let n = engine.resting_orders();
        let orders_end = bytes.len() - 32 - 8;
        let count_at = orders_end - n * ORDER_BYTES - 4;
        let mut body = bytes[..count_at].to_vec();
        body.extend_from_slice(&(n as u32 + 1).to_le_bytes());
        body.extend_from_slice(&bytes[count_at + 4..orders_end]);
        // The first order again, as a later entry.
        let mut again = bytes[count_at + 4..count_at + 4 + ORDER_BYTES].to_vec();
        again[35..43].copy_from_slice(&1_000u64.to_le_bytes());
        body.extend_from_slice(&again);
        body.extend_from_slice(&2_000u64.to_le_bytes());
        let sealed = {
            let checksum = blake3::hash(&body);
            body.extend_from_slice(checksum.as_bytes());
            body
        };
        match Engine::<ArrayLadder>::restore(&sealed) {
            Err(SnapshotError::Inconsistent(why)) => assert!(why.contains("twice"), "{why}"),
            other => panic!("restored a duplicate order: {:?}", other.map(|_| ())),
        }
    }
}
