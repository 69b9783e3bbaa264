//! Replays a LOBSTER day through the engine and checks the book against the file after
//! every message.
//!
//! Mapping (one market, 1 share = 1 lot, 1 cent = 1 tick, no fees):
//! - the book is seeded from book row 0 (the state after message 0) with one *anchor* order
//!   per level (account [`ANCHOR_ACCOUNT`]), standing for orders the file never introduced;
//! - type 1 (new order): a GTC from maker account `1 + id % MAKER_ACCOUNTS`, oid = id (never
//!   crosses in this data; a fill would be counted as a mismatch);
//! - type 2 (partial cancel): a size-cutting `Modify` (priority kept), or `Cancel` at zero;
//!   type 3 (delete): `Cancel`. On an unknown id both take the shares from the level's
//!   unattributed volume (below);
//! - type 4 (visible execution): an IOC from [`TAKER_ACCOUNT`] at the order's price for the
//!   executed size, which must produce exactly one fill, against the named order (the anchor
//!   at that price for an unknown id), for the whole size. Orders the engine has ahead of it
//!   in the level are first moved to the back (`Cancel` + the same `Place`), counted as
//!   queue moves: the file's queue position and the engine's differ when orders the file
//!   never showed were involved (README: ~5% of executions);
//! - type 5 (hidden execution), 6 (cross), 7 (halt): no visible change, no command.
//!
//! After every message levels 1-9 of both sides are compared with the book row (price and
//! size): any difference is a mismatch. Then the window is *re-anchored*: every price inside
//! the file's 10-level window (the whole side when it shows fewer than 10 levels) whose size
//! differs from the row gets its anchor resized to match. Only level 10 should ever need it,
//! when a level enters the window from outside (its older orders were never shown).
//!
//! Unattributed volume: the file leaves out messages about orders outside the window, so a
//! known order whose price has been outside it since it entered may have been deleted
//! unseen, while an order never shown rests at its price. Such orders are *maybe stale*.
//! Volume the file moves without naming a resting known order is taken from the level's
//! anchor, then from its maybe-stale orders, oldest first; a known order named for more than
//! it holds takes the difference back the same way. Level totals never change by this, so the
//! level check stays exact.

use std::collections::{BTreeMap, HashMap, HashSet};

use engine::{
    Command, Engine, EngineConfig, Event, Lots, MarketSpec, NewOrder, OrderId, SelfTradePrevention,
    Side, Ticks, TimeInForce, DEFAULT_MAX_PRICE_TICKS,
};

use super::{Day, Kind, Message, PRICE_PER_TICK};

/// The market every command trades in.
pub const MARKET: u32 = 1;
/// Base asset (shares).
pub const BASE: u32 = 1;
/// Quote asset (cents).
pub const QUOTE: u32 = 2;
/// Orders the file introduces rest in accounts `1..=MAKER_ACCOUNTS` (by id).
pub const MAKER_ACCOUNTS: u64 = 64;
/// Owner of the anchor orders (volume the file shows but never introduced).
pub const ANCHOR_ACCOUNT: u64 = 1_000;
/// Sends the IOC orders that play the aggressors of visible executions.
pub const TAKER_ACCOUNT: u64 = 1_001;
/// Book levels compared after every message (the file's last level may lag, see README).
pub const COMPARED_LEVELS: usize = 9;
/// No order: `keep` argument that keeps nothing (no real oid is 0 with the bit set).
const NO_ORDER: OrderId = ANCHOR_OID_BIT;
/// Anchor oids carry this bit (LOBSTER ids are far below it).
const ANCHOR_OID_BIT: u64 = 1 << 62;
/// Most mismatch descriptions kept.
const MAX_MISMATCH_NOTES: usize = 10;

/// What the replay did and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages replayed (all but message 0, whose result is book row 0).
    pub messages: u64,
    /// Type 1.
    pub submits: u64,
    /// Type 2.
    pub partial_cancels: u64,
    /// Type 3.
    pub deletes: u64,
    /// Type 4.
    pub executions: u64,
    /// Type 5 (no command).
    pub hidden_executions: u64,
    /// Types 6 and 7 (no command).
    pub crosses_and_halts: u64,
    /// Type 2 messages naming an id the file never introduced.
    pub unknown_partial_cancels: u64,
    /// Type 3 messages naming an unknown id.
    pub unknown_deletes: u64,
    /// Type 4 messages naming an unknown id.
    pub unknown_executions: u64,
    /// Type 2, 3 or 4 messages naming an introduced order whose lots were all taken as stale
    /// before (handled like unknown ids).
    pub gone_ids: u64,
    /// Type 4 messages whose IOC filled exactly the named order (or its anchor) in full.
    pub executions_checked: u64,
    /// Orders moved to the back of their level so an execution hits the named order.
    pub queue_moves: u64,
    /// Levels resized to the file's window after a message (levels entering the window).
    pub reanchors: u64,
    /// Lots added to anchors by re-anchoring.
    pub reanchor_lots_added: u64,
    /// Lots removed by re-anchoring (anchors first, then the level's newest known orders).
    pub reanchor_lots_removed: u64,
    /// Lots of known orders handed over to their level's anchor because an unknown id needed
    /// them (the known orders were deleted unseen outside the window).
    pub stale_lots: u64,
    /// Lots a known order was named for beyond what it held here, taken from the level's
    /// anchor or maybe-stale orders instead.
    pub reclaimed_lots: u64,
    /// Lots re-anchoring removed from known orders that never left the window.
    pub fresh_lots_removed: u64,
    /// Lots an unknown id's message wanted from its level that the level did not have.
    pub anchor_shortfall_lots: u64,
    /// Messages after which levels 1-9 differed from the file, or whose check failed.
    pub mismatches: u64,
}

impl Counts {
    /// Messages naming an id the file never introduced (types 2, 3 and 4).
    pub fn unknown_ids(&self) -> u64 {
        self.unknown_partial_cancels + self.unknown_deletes + self.unknown_executions
    }
}

/// A replayed day: the command stream (for benchmarks), what happened, the end state.
#[derive(Clone, Debug)]
pub struct Replay {
    /// How the engine is sized.
    pub config: EngineConfig,
    /// Assets, market, deposits and the anchors seeding book row 0.
    pub setup: Vec<Command>,
    /// The commands of messages 1.., in order.
    pub commands: Vec<Command>,
    /// `commands[ends[i - 1]..ends[i]]` came from replayed message `i` (`ends[-1]` = 0).
    pub message_ends: Vec<usize>,
    /// Counters.
    pub counts: Counts,
    /// The first mismatches, described.
    pub mismatch_notes: Vec<String>,
    /// The engine's state hash after the last message.
    pub final_hash: [u8; 32],
    /// Resting orders after the last message.
    pub resting_end: usize,
    /// Most resting orders after any message.
    pub resting_peak: usize,
}

impl Replay {
    /// An engine config sized for this stream like `engine-bench` sizes its books: room for
    /// 1.5x the peak resting orders (at least 1,024), any account may hold all of them.
    pub fn sized_config(&self) -> EngineConfig {
        let max = (self.resting_peak + self.resting_peak / 2).max(1_024) as u32;
        EngineConfig {
            max_resting_orders: max,
            max_open_orders_per_account: max,
        }
    }
}

/// Replays `day` with every check; see the module doc.
///
/// # Panics
/// If the engine refuses a command of the replay (a bug of the translation: every order is
/// funded far beyond need) or the engine's invariants break.
pub fn replay(day: &Day) -> Replay {
    let mut replayer = Replayer::new(day);
    let setup = replayer.seed();
    let mut peak = replayer.engine.resting_orders();
    for row in 1..day.rows() {
        replayer.message(row);
        replayer.check_and_reanchor(row);
        replayer.ends.push(replayer.commands.len());
        peak = peak.max(replayer.engine.resting_orders());
    }
    if let Err(broken) = replayer.engine.check_invariants() {
        panic!("engine invariants broken after the replay: {broken}");
    }
    replayer.counts.messages = (day.rows().saturating_sub(1)) as u64;
    Replay {
        config: replayer.engine.config(),
        setup,
        final_hash: replayer.engine.state_hash(),
        resting_end: replayer.engine.resting_orders(),
        resting_peak: peak,
        commands: replayer.commands,
        message_ends: replayer.ends,
        counts: replayer.counts,
        mismatch_notes: replayer.notes,
    }
}

/// How to size the checked replay's engine for `day`: every message could leave an order
/// and an anchor.
pub fn engine_config(day: &Day) -> EngineConfig {
    let max = (2 * day.rows() + 4 * day.levels + 1_024) as u32;
    EngineConfig {
        max_resting_orders: max,
        max_open_orders_per_account: max,
    }
}

/// Assets, the market and funded accounts (every balance far above any reserve).
pub fn setup_commands() -> Vec<Command> {
    let mut commands = vec![
        Command::CreateAsset { asset: BASE },
        Command::CreateAsset { asset: QUOTE },
        Command::CreateMarket(MarketSpec {
            market: MARKET,
            base: BASE,
            quote: QUOTE,
            base_units_per_lot: 1,
            quote_units_per_tick_lot: 1,
            min_lots: 1,
            max_price_ticks: DEFAULT_MAX_PRICE_TICKS,
            maker_fee_bps: 0,
            taker_fee_bps: 0,
        }),
    ];
    let accounts = (1..=MAKER_ACCOUNTS).chain([ANCHOR_ACCOUNT, TAKER_ACCOUNT]);
    let amount = i64::MAX / 4 / (MAKER_ACCOUNTS as i64 + 2);
    for account in accounts {
        for asset in [BASE, QUOTE] {
            commands.push(Command::Deposit {
                account,
                asset,
                amount,
            });
        }
    }
    commands
}

/// The maker account of a LOBSTER order id.
pub fn maker_account(id: u64) -> u64 {
    1 + id % MAKER_ACCOUNTS
}

fn anchor_oid(side: Side, price: Ticks) -> OrderId {
    let side_bit = match side {
        Side::Buy => 0,
        Side::Sell => 1 << 40,
    };
    ANCHOR_OID_BIT | side_bit | price as u64
}

/// The side of a message's (resting) order.
fn side_of(message: &Message) -> Side {
    if message.direction > 0 {
        Side::Buy
    } else {
        Side::Sell
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}

/// A LOBSTER price in ticks, if it is a positive whole number of cents.
fn ticks(price: i64) -> Option<Ticks> {
    (price > 0 && price % PRICE_PER_TICK == 0).then_some(price / PRICE_PER_TICK)
}

/// Whether `price` is at or better than `bound` for `side`.
fn at_or_better(side: Side, price: Ticks, bound: Ticks) -> bool {
    match side {
        Side::Buy => price >= bound,
        Side::Sell => price <= bound,
    }
}

fn gtc(account: u64, oid: OrderId, side: Side, price: Ticks, qty: Lots) -> Command {
    Command::Place(NewOrder {
        account,
        market: MARKET,
        oid,
        side,
        price: Some(price),
        qty,
        tif: TimeInForce::Gtc,
        stp: SelfTradePrevention::CancelMaker,
        reduce_only: false,
    })
}

/// A resting order as the replay follows it from the engine's events.
#[derive(Clone, Copy, Debug)]
struct Resting {
    account: u64,
    side: Side,
    price: Ticks,
    remaining: Lots,
}

/// Follows a fill or modify: the order's new remaining size (gone at 0).
fn set_remaining(resting: &mut HashMap<OrderId, Resting>, oid: OrderId, lots: Lots) {
    if lots == 0 {
        resting.remove(&oid);
    } else if let Some(order) = resting.get_mut(&oid) {
        order.remaining = lots;
    }
}

struct Replayer<'a> {
    day: &'a Day,
    engine: Engine,
    out: Vec<Event>,
    commands: Vec<Command>,
    ends: Vec<usize>,
    /// Every resting order by oid (LOBSTER ids and anchors).
    resting: HashMap<OrderId, Resting>,
    counts: Counts,
    notes: Vec<String>,
    depth: Vec<(Ticks, Lots)>,
    file: Vec<(Ticks, Lots)>,
    /// Known orders by side (bids, asks) and price whose level has stayed inside the file's
    /// window since they entered (may hold ids already gone).
    watched: [BTreeMap<Ticks, Vec<OrderId>>; 2],
    /// Known orders whose level has been outside the window since they entered: messages
    /// about them may have been left out of the file.
    maybe_stale: HashSet<OrderId>,
    /// Every id a type 1 message introduced.
    introduced: HashSet<OrderId>,
}

impl<'a> Replayer<'a> {
    fn new(day: &'a Day) -> Self {
        Replayer {
            day,
            engine: Engine::new(engine_config(day)),
            out: Vec::with_capacity(64),
            commands: Vec::with_capacity(2 * day.rows()),
            ends: Vec::with_capacity(day.rows()),
            resting: HashMap::new(),
            counts: Counts::default(),
            notes: Vec::new(),
            depth: Vec::with_capacity(32),
            file: Vec::with_capacity(day.levels),
            watched: [BTreeMap::new(), BTreeMap::new()],
            maybe_stale: HashSet::new(),
            introduced: HashSet::new(),
        }
    }

    /// Runs the setup and the anchors of book row 0; returns those commands.
    fn seed(&mut self) -> Vec<Command> {
        for command in setup_commands() {
            self.step(command);
        }
        for side in [Side::Sell, Side::Buy] {
            self.load_file_side(0, side);
            for (price, lots) in std::mem::take(&mut self.file) {
                self.adjust_anchor(side, price, lots);
            }
        }
        std::mem::take(&mut self.commands)
    }

    fn mismatch(&mut self, row: usize, what: String) {
        self.counts.mismatches += 1;
        if self.notes.len() < MAX_MISMATCH_NOTES {
            self.notes.push(format!("message {row}: {what}"));
        }
    }

    /// Steps one command, records it, and follows its events into `resting`.
    fn step(&mut self, command: Command) {
        self.out.clear();
        self.engine.step(&command, &mut self.out);
        self.commands.push(command.clone());
        for event in &self.out {
            match *event {
                Event::Rejected { reason, .. } => {
                    panic!("the engine refused {command:?}: {}", reason.as_str())
                }
                Event::Fill {
                    maker_oid,
                    maker_left,
                    ..
                } => set_remaining(&mut self.resting, maker_oid, maker_left),
                Event::Canceled { oid, account, .. } if account != TAKER_ACCOUNT => {
                    self.resting.remove(&oid);
                }
                Event::Modified { oid, qty, .. } => set_remaining(&mut self.resting, oid, qty),
                _ => {}
            }
        }
        if let Command::Place(order) = command {
            self.follow_placed(&order);
        }
    }

    /// Records what a GTC placement left resting (its size less what it took on entry).
    fn follow_placed(&mut self, order: &NewOrder) {
        let taken: Lots = self
            .out
            .iter()
            .map(|event| match event {
                Event::Fill { taker_oid, qty, .. } if *taker_oid == order.oid => *qty,
                _ => 0,
            })
            .sum();
        if order.tif == TimeInForce::Gtc && order.qty > taken {
            let resting = Resting {
                account: order.account,
                side: order.side,
                price: order.price.expect("the replay places limit orders"),
                remaining: order.qty - taken,
            };
            self.resting.insert(order.oid, resting);
        }
    }

    fn out_has_fill(&self) -> bool {
        self.out.iter().any(|e| matches!(e, Event::Fill { .. }))
    }

    /// Applies message `row` (see the module doc for the mapping).
    fn message(&mut self, row: usize) {
        let message = self.day.messages[row];
        match message.kind {
            Kind::Submit => self.priced(row, &message, Self::submit),
            Kind::PartialCancel | Kind::Delete => self.priced(row, &message, Self::reduce),
            Kind::Execute => self.priced(row, &message, Self::execute),
            Kind::ExecuteHidden => self.counts.hidden_executions += 1,
            Kind::Cross | Kind::Halt => self.counts.crosses_and_halts += 1,
        }
    }

    /// Runs `apply` with the message's price in ticks (a mismatch if it is not in cents).
    fn priced(
        &mut self,
        row: usize,
        message: &Message,
        apply: fn(&mut Self, usize, &Message, Ticks),
    ) {
        match ticks(message.price) {
            Some(price) => apply(self, row, message, price),
            None => self.mismatch(row, format!("price {} not in cents", message.price)),
        }
    }

    fn submit(&mut self, row: usize, message: &Message, price: Ticks) {
        self.counts.submits += 1;
        if self.resting.contains_key(&message.id) {
            return self.mismatch(row, format!("id {} submitted twice", message.id));
        }
        let side = side_of(message);
        let account = maker_account(message.id);
        self.step(gtc(account, message.id, side, price, message.size));
        self.introduced.insert(message.id);
        let watched = &mut self.watched[side_index(side)];
        watched.entry(price).or_default().push(message.id);
        if self.out_has_fill() {
            self.mismatch(row, format!("new order {} crossed the book", message.id));
        }
    }

    /// Type 2 or 3: shrink or remove the named order, or the anchor for an unknown id.
    fn reduce(&mut self, row: usize, message: &Message, price: Ticks) {
        let delete = message.kind == Kind::Delete;
        if delete {
            self.counts.deletes += 1;
        } else {
            self.counts.partial_cancels += 1;
        }
        let side = side_of(message);
        let Some(order) = self.resting.get(&message.id).copied() else {
            if self.introduced.contains(&message.id) {
                self.counts.gone_ids += 1;
            } else if delete {
                self.counts.unknown_deletes += 1;
            } else {
                self.counts.unknown_partial_cancels += 1;
            }
            return self.take_from_anchor(side, price, message.size);
        };
        if order.side != side || order.price != price {
            let what = format!(
                "order {} is {order:?}, message says {side:?} @ {price}",
                message.id
            );
            return self.mismatch(row, what);
        }
        let left = if delete {
            0
        } else {
            order.remaining - message.size
        };
        self.resize(message.id, order, left.max(0));
        // The level loses exactly `size` lots whatever this order held here.
        let removed = order.remaining - left.max(0);
        if removed < message.size {
            self.reclaim(row, side, price, message.size - removed, NO_ORDER);
        } else if removed > message.size {
            self.counts.stale_lots += (removed - message.size) as u64;
            self.adjust_anchor(side, price, removed - message.size);
        }
    }

    /// A known order was named for more lots than it holds here (they were handed to the
    /// anchor or cut as stale): take them from the level's unattributed volume.
    fn reclaim(&mut self, row: usize, side: Side, price: Ticks, lots: Lots, keep: OrderId) {
        let taken = self.take_unattributed(side, price, lots, keep);
        self.counts.reclaimed_lots += taken as u64;
        if taken < lots {
            self.mismatch(row, format!("{lots} lots missing at {side:?} {price}"));
        }
    }

    /// Sets a resting order's size: a priority-keeping `Modify` when it shrinks, a `Modify`
    /// that re-enters at the back when it grows, `Cancel` at 0.
    fn resize(&mut self, oid: OrderId, order: Resting, lots: Lots) {
        let (account, market) = (order.account, MARKET);
        if lots == 0 {
            self.step(Command::Cancel {
                account,
                market,
                oid,
            });
        } else if lots != order.remaining {
            let price = order.price;
            self.step(Command::Modify {
                account,
                market,
                oid,
                price,
                qty: lots,
            });
        }
    }

    /// Removes up to `lots` of the level's unattributed volume: the anchor's first, then
    /// the maybe-stale known orders', oldest first (never `keep`'s). Returns the lots removed.
    /// This is how volume the file moved without naming its order is accounted for: orders
    /// deleted unseen outside the window, and ids the file never introduced.
    fn take_unattributed(&mut self, side: Side, price: Ticks, lots: Lots, keep: OrderId) -> Lots {
        let anchor = anchor_oid(side, price);
        let from_anchor = match self.resting.get(&anchor) {
            Some(a) if anchor != keep => a.remaining.min(lots),
            _ => 0,
        };
        self.adjust_anchor(side, price, -from_anchor);
        let stale: Vec<_> = self
            .engine
            .book_orders(MARKET, side)
            .into_iter()
            .filter(|v| v.price == price && v.oid != keep && self.maybe_stale.contains(&v.oid))
            .collect();
        let mut left = lots - from_anchor;
        for view in stale {
            if left == 0 {
                break;
            }
            let cut = view.remaining.min(left);
            left -= cut;
            self.counts.stale_lots += cut as u64;
            let order = self.resting[&view.oid];
            self.resize(view.oid, order, order.remaining - cut);
        }
        lots - left
    }

    /// An unknown id's shares leave the level (type 2 or 3).
    fn take_from_anchor(&mut self, side: Side, price: Ticks, lots: Lots) {
        let taken = self.take_unattributed(side, price, lots, NO_ORDER);
        self.counts.anchor_shortfall_lots += (lots - taken) as u64;
    }

    /// Makes the anchor at `price` hold at least `lots`, with the level's maybe-stale
    /// volume (the level's total is unchanged); returns the anchor's size.
    fn anchor_with(&mut self, side: Side, price: Ticks, lots: Lots) -> Lots {
        let oid = anchor_oid(side, price);
        let have = self.resting.get(&oid).map_or(0, |a| a.remaining);
        if have >= lots {
            return have;
        }
        let moved = self.take_unattributed(side, price, lots - have, oid);
        self.adjust_anchor(side, price, moved);
        have + moved
    }

    /// Resizes the anchor at `price` by `delta` lots (placing it if there is none).
    fn adjust_anchor(&mut self, side: Side, price: Ticks, delta: Lots) {
        let oid = anchor_oid(side, price);
        match self.resting.get(&oid).copied() {
            Some(anchor) => self.resize(oid, anchor, (anchor.remaining + delta).max(0)),
            None if delta > 0 => self.step(gtc(ANCHOR_ACCOUNT, oid, side, price, delta)),
            None => {}
        }
    }

    /// Type 4: an IOC against the named order, which must be the only order it fills.
    fn execute(&mut self, row: usize, message: &Message, price: Ticks) {
        self.counts.executions += 1;
        let side = side_of(message);
        let target = self.execution_target(message, price);
        let Some(order) = self.resting.get(&target).copied() else {
            self.counts.anchor_shortfall_lots += message.size as u64;
            return self.mismatch(
                row,
                format!("execution of {}: no order at {price}", message.id),
            );
        };
        if order.side != side || order.price != price {
            let what = format!("execution of {} at {price}: order is {order:?}", message.id);
            return self.mismatch(row, what);
        }
        if order.remaining < message.size {
            let deficit = message.size - order.remaining;
            self.reclaim(row, side, price, deficit, target);
            self.resize(target, order, message.size);
        }
        if !self.at_best(side, price) {
            return self.mismatch(row, format!("execution at {price} below the best {side:?}"));
        }
        self.move_ahead_to_back(side, price, target);
        self.take(row, side, price, message.size);
        if self.fills_exactly(target, order.account, price, message.size) {
            self.counts.executions_checked += 1;
        } else {
            let what = format!(
                "execution of {} did not fill it alone: {:?}",
                message.id, self.out
            );
            self.mismatch(row, what);
        }
    }

    /// The order a type 4 message executes: the named one, or for an id not resting (unknown,
    /// or gone as stale) the anchor at its price, first made to hold the executed size.
    fn execution_target(&mut self, message: &Message, price: Ticks) -> OrderId {
        if self.resting.contains_key(&message.id) {
            return message.id;
        }
        if self.introduced.contains(&message.id) {
            self.counts.gone_ids += 1;
        } else {
            self.counts.unknown_executions += 1;
        }
        let side = side_of(message);
        self.anchor_with(side, price, message.size);
        anchor_oid(side, price)
    }

    fn at_best(&mut self, side: Side, price: Ticks) -> bool {
        self.depth.clear();
        self.engine.depth(MARKET, side, 1, &mut self.depth);
        self.depth.first().map(|&(p, _)| p) == Some(price)
    }

    /// Moves every order ahead of `target` in its level to the back, in their order.
    fn move_ahead_to_back(&mut self, side: Side, price: Ticks, target: OrderId) {
        let ahead: Vec<_> = self
            .engine
            .book_orders(MARKET, side)
            .into_iter()
            .take_while(|view| view.price == price && view.oid != target)
            .collect();
        for view in ahead {
            self.counts.queue_moves += 1;
            let (account, market, oid) = (view.account, MARKET, view.oid);
            self.step(Command::Cancel {
                account,
                market,
                oid,
            });
            self.step(gtc(account, oid, side, price, view.remaining));
        }
    }

    /// The aggressor of a visible execution: an IOC against resting `side`.
    fn take(&mut self, row: usize, side: Side, price: Ticks, lots: Lots) {
        self.step(Command::Place(NewOrder {
            account: TAKER_ACCOUNT,
            market: MARKET,
            oid: row as OrderId,
            side: side.opposite(),
            price: Some(price),
            qty: lots,
            tif: TimeInForce::Ioc,
            stp: SelfTradePrevention::CancelMaker,
            reduce_only: false,
        }));
    }

    /// Whether the last step's events are: accepted, then one fill of `lots` at `price`
    /// against `(account, oid)`, and nothing else.
    fn fills_exactly(&self, oid: OrderId, account: u64, price: Ticks, lots: Lots) -> bool {
        match self.out.as_slice() {
            [Event::Accepted { .. }, Event::Fill {
                maker_oid,
                maker_account,
                price: fill_price,
                qty,
                taker_left: 0,
                ..
            }] => (*maker_oid, *maker_account, *fill_price, *qty) == (oid, account, price, lots),
            _ => false,
        }
    }

    /// `side` of book row `row` into `self.file`, in ticks.
    fn load_file_side(&mut self, row: usize, side: Side) {
        self.file.clear();
        for level in 0..self.day.levels {
            let entry = match side {
                Side::Sell => self.day.ask(row, level),
                Side::Buy => self.day.bid(row, level),
            };
            if let Some((price, size)) = entry {
                let price = ticks(price).expect("book prices are whole cents");
                self.file.push((price, size));
            }
        }
    }

    /// Compares levels 1-9 with book row `row`, then re-anchors the window to it.
    fn check_and_reanchor(&mut self, row: usize) {
        for side in [Side::Sell, Side::Buy] {
            self.load_file_side(row, side);
            self.load_depth(side);
            let n = COMPARED_LEVELS;
            let ours = &self.depth[..self.depth.len().min(n)];
            let file = &self.file[..self.file.len().min(n)];
            if ours != file {
                let what = format!("{side:?} levels: engine {ours:?}, file {file:?}");
                self.mismatch(row, what);
            }
            self.reanchor(side);
            if let Some(bound) = self.window_bound() {
                self.mark_outside(side, bound);
            }
        }
    }

    /// The engine's levels of `side` into `self.depth`: at least every level inside the
    /// file's window (`self.file`), and one more when there is one.
    fn load_depth(&mut self, side: Side) {
        let bound = self.window_bound();
        let mut want = self.file.len() + 4;
        loop {
            self.depth.clear();
            self.engine.depth(MARKET, side, want, &mut self.depth);
            let last_inside = self.depth.last().is_some_and(|&(p, _)| match bound {
                Some(bound) => at_or_better(side, p, bound),
                None => true,
            });
            if self.depth.len() < want || !last_inside {
                return;
            }
            want *= 2;
        }
    }

    /// The worst price of the file's window: its last level when all levels are shown;
    /// `None` (the whole side) when fewer are.
    fn window_bound(&self) -> Option<Ticks> {
        if self.file.len() < self.day.levels {
            return None;
        }
        self.file.last().map(|&(price, _)| price)
    }

    /// Known orders priced outside the window (worse than `bound`) become maybe stale.
    fn mark_outside(&mut self, side: Side, bound: Ticks) {
        let watched = &mut self.watched[side_index(side)];
        let outside = match side {
            Side::Buy => {
                let inside = watched.split_off(&bound);
                std::mem::replace(watched, inside)
            }
            Side::Sell => watched.split_off(&(bound + 1)),
        };
        self.maybe_stale.extend(outside.into_values().flatten());
    }

    /// Resizes every level inside the window that differs from the file.
    fn reanchor(&mut self, side: Side) {
        let bound = self.window_bound();
        let inside = |p: Ticks| bound.is_none_or(|b| at_or_better(side, p, b));
        let mut fixes: Vec<(Ticks, Lots)> = Vec::new();
        for &(price, have) in self.depth.iter().filter(|&&(p, _)| inside(p)) {
            let want = self
                .file
                .iter()
                .find(|&&(p, _)| p == price)
                .map_or(0, |l| l.1);
            if want != have {
                fixes.push((price, want - have));
            }
        }
        for &(price, want) in &self.file {
            if !self.depth.iter().any(|&(p, _)| p == price) {
                fixes.push((price, want));
            }
        }
        for (price, delta) in fixes {
            self.counts.reanchors += 1;
            self.reanchor_level(side, price, delta);
        }
    }

    /// Adds `delta` lots to a level (to its anchor), or removes `-delta`: unattributed volume
    /// first (see [`Self::take_unattributed`]), then the level's other orders, oldest first
    /// (counted in `fresh_lots_removed`: the test expects none).
    fn reanchor_level(&mut self, side: Side, price: Ticks, delta: Lots) {
        if delta > 0 {
            self.counts.reanchor_lots_added += delta as u64;
            return self.adjust_anchor(side, price, delta);
        }
        self.counts.reanchor_lots_removed += (-delta) as u64;
        let taken = self.take_unattributed(side, price, -delta, NO_ORDER);
        let mut left = -delta - taken;
        let level: Vec<_> = self.engine.book_orders(MARKET, side);
        for view in level.iter().filter(|v| v.price == price) {
            if left == 0 {
                break;
            }
            let cut = view.remaining.min(left);
            left -= cut;
            self.counts.fresh_lots_removed += cut as u64;
            let order = self.resting[&view.oid];
            self.resize(view.oid, order, order.remaining - cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: [i64; 4] = [
        super::super::EMPTY_ASK_PRICE,
        0,
        -super::super::EMPTY_ASK_PRICE,
        0,
    ];

    fn message(kind: Kind, id: u64, size: i64, price: i64, direction: i8) -> Message {
        Message {
            time_ns: 0,
            kind,
            id,
            size,
            price,
            direction,
        }
    }

    /// A 2-level day: one ask level at $101.00, one bid level at $100.00, sizes per row.
    fn day(rows: &[(Message, i64, i64)]) -> Day {
        let mut book = Vec::new();
        for &(_, ask, bid) in rows {
            book.extend_from_slice(&[1_010_000, ask, 1_000_000, bid]);
            book.extend_from_slice(&EMPTY);
        }
        Day {
            name: "synthetic".into(),
            levels: 2,
            messages: rows.iter().map(|r| r.0).collect(),
            book,
        }
    }

    fn scenario(last_bid: i64) -> Day {
        use Kind::*;
        day(&[
            (message(Submit, 1, 100, 1_010_000, -1), 100, 50),
            (message(Submit, 2, 30, 1_000_000, 1), 100, 80),
            (message(Halt, 0, 0, -1, -1), 100, 80),
            // Order 2 is behind the seeded anchor: a queue move, then the IOC hits it.
            (message(Execute, 2, 10, 1_000_000, 1), 100, 70),
            (message(ExecuteHidden, 0, 7, 1_005_050, 1), 100, 70),
            (message(Delete, 99, 50, 1_000_000, 1), 100, 20),
            (message(PartialCancel, 2, 5, 1_000_000, 1), 100, last_bid),
            (message(Execute, 98, 40, 1_010_000, -1), 60, last_bid),
        ])
    }

    #[test]
    fn every_message_kind_is_replayed_and_counted() {
        let replay = replay(&scenario(15));
        let c = &replay.counts;
        assert_eq!(c.mismatches, 0, "{:?}", replay.mismatch_notes);
        assert_eq!(c.messages, 7);
        assert_eq!(
            (c.submits, c.executions, c.deletes, c.partial_cancels),
            (1, 2, 1, 1)
        );
        assert_eq!((c.hidden_executions, c.crosses_and_halts), (1, 1));
        assert_eq!((c.unknown_deletes, c.unknown_executions), (1, 1));
        assert_eq!((c.executions_checked, c.queue_moves), (2, 1));
        assert_eq!(replay.message_ends.len(), 7);
        // Order 2 (15 lots) and the ask anchor (60); unknown id 99 took the bid anchor's 50.
        assert_eq!(replay.resting_end, 2);
    }

    #[test]
    fn a_book_row_the_engine_does_not_reach_is_a_mismatch() {
        let replay = replay(&scenario(16));
        assert_eq!(replay.counts.mismatches, 1, "{:?}", replay.mismatch_notes);
        assert!(
            replay.mismatch_notes[0].starts_with("message 6: Buy levels"),
            "{:?}",
            replay.mismatch_notes
        );
    }
}
