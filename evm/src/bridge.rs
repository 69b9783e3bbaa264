//! The cross-domain queues: CoreWriter actions become engine commands, the engine's events
//! become callbacks and credits of the next EVM block.
//!
//! Order is deterministic: a Core block runs its own transactions first (their events go
//! through [`Bridge::observe`]), then the actions of the previous EVM block in (block, log
//! index) order ([`Bridge::run_actions`]). Every engine event naming an EVM account the
//! bridge knows becomes a [`Callback`] for that address (delivered only if it has code);
//! withdrawals and refused deposits become [`Credit`]s from CoreWriter's escrow. The native
//! asset moves on Core only through CoreWriter: the execution refuses a block whose Core
//! transactions deposit or withdraw it.
//!
//! Conservation of the native token: wei enter the escrow only with a deposit action and
//! leave it only with a credit for a withdrawal that Core executed (or a refused deposit),
//! so `escrow == wei_per_unit * Core supply of the native asset` and each user's
//! `EVM balance + wei_per_unit * Core balance` changes only by what they pay in gas or send.
//!
//! Conservation of every other asset with a token (docs/evm.md, "Core assets as ERC-20
//! tokens"): its units enter the token escrow ([`TOKEN_ESCROW_ACCOUNT`], a Core account)
//! only with a [`Mint`] of as many tokens (a withdrawal to the EVM), and leave it only for
//! tokens the token contract burned (a deposit to Core; refused: minted back), so
//! `escrow's Core balance == totalSupply + units of deposits not yet run`, and each user's
//! `tokens + Core balance` changes only by what they trade or send.

use crate::actions::{ActionKind, Callback, CallbackKind, CoreAction, Credit, Mint};
use crate::system::{self, MAX_CALLBACKS_PER_BLOCK, TOKEN_ESCROW_ACCOUNT};
use alloy_primitives::{Address, U256};
use engine::{
    AccountId, AssetId, CancelReason, Command, Engine, Event, NewOrder, PriceLadder, RejectReason,
    SelfTradePrevention, INSURANCE_ACCOUNT,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Reject code of a callback for an action the bridge itself refused (reserved or colliding
/// Core account id).
pub const BRIDGE_REJECT_CODE: u32 = 0xffff;

/// Most callbacks waiting for delivery; past this the oldest are dropped (and counted).
pub const MAX_PENDING_CALLBACKS: usize = 1 << 16;

/// Bridge state: persisted with every block.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bridge {
    /// The Core asset that is the EVM's native token.
    pub native_asset: AssetId,
    /// Wei per Core unit of it.
    pub wei_per_unit: U256,
    /// Core account id -> the EVM address it belongs to (first seen wins).
    pub registry: BTreeMap<AccountId, Address>,
    /// Actions of the last EVM block, for the next Core block.
    pub pending_actions: Vec<CoreAction>,
    /// Callbacks for the next EVM block(s).
    pub pending_callbacks: VecDeque<Callback>,
    /// Credits for the next EVM block.
    pub pending_credits: Vec<Credit>,
    /// Token mints for the next EVM block(s).
    #[serde(default)]
    pub pending_mints: VecDeque<Mint>,
    /// Callbacks dropped because the queue was full.
    pub dropped_callbacks: u64,
}

/// The 1-based code of a reject reason in callbacks (position in `RejectReason::ALL` + 1).
pub fn reject_code(reason: RejectReason) -> u32 {
    RejectReason::ALL
        .iter()
        .position(|&r| r == reason)
        .expect("every reason is listed") as u32
        + 1
}

/// The code of a cancel reason in callbacks: user 0, unfilled 1, stp 2, liquidation 3,
/// reduce_only 4, price_band 5 (the gateway's codes).
pub fn cancel_code(reason: CancelReason) -> u32 {
    match reason {
        CancelReason::User => 0,
        CancelReason::Unfilled => 1,
        CancelReason::Stp => 2,
        CancelReason::Liquidation => 3,
        CancelReason::ReduceOnly => 4,
        CancelReason::PriceBand => 5,
    }
}

impl Bridge {
    /// An empty bridge for `native_asset`.
    pub fn new(native_asset: AssetId, wei_per_unit: U256) -> Bridge {
        Bridge {
            native_asset,
            wei_per_unit,
            registry: BTreeMap::new(),
            pending_actions: Vec::new(),
            pending_callbacks: VecDeque::new(),
            pending_credits: Vec::new(),
            pending_mints: VecDeque::new(),
            dropped_callbacks: 0,
        }
    }

    /// Whether nothing waits for the next block: no CoreWriter action, callback or credit.
    pub fn is_idle(&self) -> bool {
        self.pending_actions.is_empty()
            && self.pending_callbacks.is_empty()
            && self.pending_credits.is_empty()
            && self.pending_mints.is_empty()
    }

    /// Queues the actions of an EVM block for the next Core block.
    pub fn queue_actions(&mut self, actions: Vec<CoreAction>) {
        debug_assert!(actions.windows(2).all(|w| w[0].id < w[1].id));
        self.pending_actions.extend(actions);
    }

    fn command(&self, account: AccountId, kind: ActionKind) -> Command {
        match kind {
            ActionKind::Place {
                market,
                oid,
                side,
                price,
                qty,
                tif,
                reduce_only,
            } => Command::Place(NewOrder {
                account,
                market,
                oid,
                side,
                price,
                qty,
                tif,
                stp: SelfTradePrevention::CancelMaker,
                reduce_only,
            }),
            ActionKind::Cancel { market, oid } => Command::Cancel {
                account,
                market,
                oid,
            },
            ActionKind::CancelAll { market } => Command::CancelAll { account, market },
            ActionKind::Modify {
                market,
                oid,
                price,
                qty,
            } => Command::Modify {
                account,
                market,
                oid,
                price,
                qty,
            },
            ActionKind::Deposit { units } => Command::Deposit {
                account,
                asset: self.native_asset,
                amount: units,
            },
            ActionKind::Withdraw { units } => Command::Withdraw {
                account,
                asset: self.native_asset,
                amount: units,
            },
            ActionKind::TransferCollateral { amount } => {
                Command::TransferCollateral { account, amount }
            }
            ActionKind::SetLeverage {
                market,
                leverage,
                isolated,
            } => Command::SetLeverage {
                account,
                market,
                leverage,
                isolated,
            },
            ActionKind::IsolatedMargin { market, amount } => Command::IsolatedMargin {
                account,
                market,
                amount,
            },
            ActionKind::AssetWithdraw { .. } | ActionKind::AssetDeposit { .. } => {
                unreachable!("asset moves are two commands: Bridge::move_asset")
            }
        }
    }

    /// Moves `units` of `asset` from Core account `from` to `to` (a withdrawal then a
    /// deposit, the first undone if the second is refused); whether it moved. The events
    /// (a refusal) go to `out`.
    fn move_asset<L: PriceLadder>(
        engine: &mut Engine<L>,
        (from, to): (AccountId, AccountId),
        asset: AssetId,
        units: i64,
        out: &mut Vec<Event>,
    ) -> bool {
        let refused = |out: &Vec<Event>, from: usize| {
            out[from..]
                .iter()
                .any(|e| matches!(e, Event::Rejected { .. }))
        };
        let start = out.len();
        let debit = Command::Withdraw {
            account: from,
            asset,
            amount: units,
        };
        engine.step(&debit, out);
        if refused(out, start) {
            return false;
        }
        let at = out.len();
        let credit = Command::Deposit {
            account: to,
            asset,
            amount: units,
        };
        engine.step(&credit, out);
        if refused(out, at) {
            let back = Command::Deposit {
                account: from,
                asset,
                amount: units,
            };
            engine.step(&back, out);
            return false;
        }
        true
    }

    /// Runs an asset move to or from the EVM for `account` (owned by `sender`): the Core
    /// side, and the mint it calls for (the tokens of a withdrawal; a refused deposit's
    /// tokens back).
    fn run_asset_move<L: PriceLadder>(
        &mut self,
        engine: &mut Engine<L>,
        (account, sender, action_id): (AccountId, Address, u64),
        kind: ActionKind,
        out: &mut Vec<Event>,
    ) {
        // A withdrawal mints what Core moved into the escrow; a refused deposit mints the
        // burned tokens back.
        let (asset, units, mint) = match kind {
            ActionKind::AssetWithdraw { asset, units } => {
                let pair = (account, TOKEN_ESCROW_ACCOUNT);
                (
                    asset,
                    units,
                    Self::move_asset(engine, pair, asset, units, out),
                )
            }
            ActionKind::AssetDeposit { asset, units } => {
                let pair = (TOKEN_ESCROW_ACCOUNT, account);
                (
                    asset,
                    units,
                    !Self::move_asset(engine, pair, asset, units, out),
                )
            }
            _ => unreachable!("only asset moves"),
        };
        if mint {
            self.pending_mints.push_back(Mint {
                to: sender,
                asset,
                units,
                action_id,
            });
        }
    }

    fn wei(&self, units: i64) -> U256 {
        U256::from(units as u64) * self.wei_per_unit
    }

    /// Queues callbacks for the EVM accounts that engine events of a command not sent by
    /// CoreWriter name (a Core trader filling a contract's order).
    pub fn observe(&mut self, events: &[Event]) {
        self.route(events, None);
    }

    /// Runs the pending CoreWriter actions on `engine` in (block, log index) order, calling
    /// `on_events(action id, events)` after each; queues their callbacks and credits for
    /// the next EVM block.
    pub fn run_actions<L: PriceLadder>(
        &mut self,
        engine: &mut Engine<L>,
        mut on_events: impl FnMut(u64, &[Event]),
    ) {
        let mut out = Vec::new();
        for action in std::mem::take(&mut self.pending_actions) {
            out.clear();
            let account = system::core_account(action.sender);
            let native_token = matches!(action.kind,
                ActionKind::AssetWithdraw { asset, .. } if asset == self.native_asset);
            if native_token || !self.claim(account, action.sender) {
                // Refused by the bridge: no command; a deposit's value goes back.
                self.push_callback(Callback {
                    target: action.sender,
                    action_id: action.id,
                    kind: CallbackKind::Rejected,
                    oid: 0,
                    price: 0,
                    qty: 0,
                    left: 0,
                    code: BRIDGE_REJECT_CODE,
                });
                if let ActionKind::Deposit { units } = action.kind {
                    self.pending_credits.push(Credit {
                        to: action.sender,
                        wei: self.wei(units),
                        action_id: action.id,
                    });
                }
                if let ActionKind::AssetDeposit { asset, units } = action.kind {
                    self.pending_mints.push_back(Mint {
                        to: action.sender,
                        asset,
                        units,
                        action_id: action.id,
                    });
                }
                continue;
            }
            match action.kind {
                ActionKind::AssetWithdraw { .. } | ActionKind::AssetDeposit { .. } => {
                    let who = (account, action.sender, action.id);
                    self.run_asset_move(engine, who, action.kind, &mut out);
                }
                kind => engine.step(&self.command(account, kind), &mut out),
            }
            let rejected = out.iter().any(|e| matches!(e, Event::Rejected { .. }));
            match action.kind {
                ActionKind::Deposit { units } if rejected => {
                    self.pending_credits.push(Credit {
                        to: action.sender,
                        wei: self.wei(units),
                        action_id: action.id,
                    });
                }
                ActionKind::Withdraw { units } if !rejected => {
                    self.pending_credits.push(Credit {
                        to: action.sender,
                        wei: self.wei(units),
                        action_id: action.id,
                    });
                }
                _ => {}
            }
            if out.is_empty() {
                let qty = match action.kind {
                    ActionKind::Deposit { units }
                    | ActionKind::Withdraw { units }
                    | ActionKind::AssetWithdraw { units, .. }
                    | ActionKind::AssetDeposit { units, .. } => units,
                    ActionKind::TransferCollateral { amount }
                    | ActionKind::IsolatedMargin { amount, .. } => amount,
                    ActionKind::SetLeverage { leverage, .. } => i64::from(leverage),
                    _ => 0,
                };
                self.push_callback(Callback {
                    target: action.sender,
                    action_id: action.id,
                    kind: CallbackKind::Done,
                    oid: 0,
                    price: 0,
                    qty,
                    left: 0,
                    code: 0,
                });
            }
            self.route(&out, Some((account, action.id)));
            on_events(action.id, &out);
        }
    }

    /// Records `sender` as the owner of Core account `account` if it has none; whether
    /// `sender` may act as it. Reserved ids (0, `INSURANCE_ACCOUNT`,
    /// [`TOKEN_ESCROW_ACCOUNT`]) are refused before
    /// anything is recorded, so no EVM address ever receives their callbacks.
    pub fn claim(&mut self, account: AccountId, sender: Address) -> bool {
        if account == 0 || account == INSURANCE_ACCOUNT || account == TOKEN_ESCROW_ACCOUNT {
            return false;
        }
        *self.registry.entry(account).or_insert(sender) == sender
    }

    /// Puts callbacks the EVM block could not deliver back at the front of the queue, in
    /// their order.
    pub fn requeue_callbacks(&mut self, callbacks: Vec<Callback>) {
        for callback in callbacks.into_iter().rev() {
            self.pending_callbacks.push_front(callback);
        }
    }

    fn push_callback(&mut self, callback: Callback) {
        if self.pending_callbacks.len() >= MAX_PENDING_CALLBACKS {
            self.pending_callbacks.pop_front();
            self.dropped_callbacks += 1;
        }
        self.pending_callbacks.push_back(callback);
    }

    /// Callbacks for the EVM accounts an event names. `cause` is the account and action id
    /// of the action that ran the command, if any.
    fn route(&mut self, events: &[Event], cause: Option<(AccountId, u64)>) {
        for event in events {
            let emit = |bridge: &mut Bridge, account: AccountId, cb: Callback| {
                if let Some(&target) = bridge.registry.get(&account) {
                    let action_id = match cause {
                        Some((a, id)) if a == account => id,
                        _ => 0,
                    };
                    bridge.push_callback(Callback {
                        target,
                        action_id,
                        ..cb
                    });
                }
            };
            let blank = Callback {
                target: Address::ZERO,
                action_id: 0,
                kind: CallbackKind::Done,
                oid: 0,
                price: 0,
                qty: 0,
                left: 0,
                code: 0,
            };
            match *event {
                Event::Accepted { account, oid, .. } => emit(
                    self,
                    account,
                    Callback {
                        kind: CallbackKind::Accepted,
                        oid,
                        ..blank
                    },
                ),
                Event::Rejected {
                    account,
                    oid,
                    reason,
                } => emit(
                    self,
                    account,
                    Callback {
                        kind: CallbackKind::Rejected,
                        oid: oid.unwrap_or(0),
                        code: reject_code(reason),
                        ..blank
                    },
                ),
                Event::Fill {
                    taker_account,
                    taker_oid,
                    maker_account,
                    maker_oid,
                    price,
                    qty,
                    taker_left,
                    maker_left,
                    ..
                } => {
                    let fill = Callback {
                        kind: CallbackKind::Fill,
                        price,
                        qty,
                        ..blank
                    };
                    emit(
                        self,
                        maker_account,
                        Callback {
                            oid: maker_oid,
                            left: maker_left,
                            code: 0,
                            ..fill
                        },
                    );
                    emit(
                        self,
                        taker_account,
                        Callback {
                            oid: taker_oid,
                            left: taker_left,
                            code: 1,
                            ..fill
                        },
                    );
                }
                Event::Canceled {
                    account,
                    oid,
                    remaining,
                    reason,
                    ..
                } => emit(
                    self,
                    account,
                    Callback {
                        kind: CallbackKind::Canceled,
                        oid,
                        qty: remaining,
                        code: cancel_code(reason),
                        ..blank
                    },
                ),
                Event::Modified {
                    account,
                    oid,
                    price,
                    qty,
                    ..
                } => emit(
                    self,
                    account,
                    Callback {
                        kind: CallbackKind::Modified,
                        oid,
                        price,
                        qty,
                        ..blank
                    },
                ),
                _ => {}
            }
        }
    }

    /// Takes the credits, the mints and up to [`MAX_CALLBACKS_PER_BLOCK`] callbacks for
    /// the next EVM block.
    pub fn take_evm_inputs(&mut self) -> (Vec<Credit>, Vec<Mint>, Vec<Callback>) {
        let credits = std::mem::take(&mut self.pending_credits);
        let mints = std::mem::take(&mut self.pending_mints).into();
        let n = self.pending_callbacks.len().min(MAX_CALLBACKS_PER_BLOCK);
        let callbacks = self.pending_callbacks.drain(..n).collect();
        (credits, mints, callbacks)
    }

    /// Puts mints the EVM block could not run back at the front of the queue, in their
    /// order.
    pub fn requeue_mints(&mut self, mints: Vec<Mint>) {
        for mint in mints.into_iter().rev() {
            self.pending_mints.push_front(mint);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ids_are_refused_before_anything_is_recorded() {
        let mut bridge = Bridge::new(1, U256::from(1u64));
        let a = Address::repeat_byte(0xaa);
        let b = Address::repeat_byte(0xbb);
        assert!(!bridge.claim(0, a));
        assert!(!bridge.claim(INSURANCE_ACCOUNT, a));
        assert!(bridge.registry.is_empty(), "{:?}", bridge.registry);
        assert!(bridge.claim(7, a));
        assert!(bridge.claim(7, a));
        assert!(!bridge.claim(7, b), "first address seen wins");
        assert_eq!(bridge.registry.get(&7), Some(&a));
    }

    #[test]
    fn perp_actions_become_the_engine_commands_for_the_senders_account() {
        let bridge = Bridge::new(1, U256::from(1u64));
        let set = ActionKind::SetLeverage {
            market: 4,
            leverage: 7,
            isolated: true,
        };
        assert_eq!(
            bridge.command(9, set),
            Command::SetLeverage {
                account: 9,
                market: 4,
                leverage: 7,
                isolated: true
            }
        );
        let margin = ActionKind::IsolatedMargin {
            market: 4,
            amount: -3,
        };
        assert_eq!(
            bridge.command(9, margin),
            Command::IsolatedMargin {
                account: 9,
                market: 4,
                amount: -3
            }
        );
    }

    fn engine_with_asset_2() -> Engine {
        let mut engine = Engine::new(engine::EngineConfig::default());
        let mut out = Vec::new();
        engine.step(&Command::CreateAsset { asset: 1 }, &mut out);
        engine.step(&Command::CreateAsset { asset: 2 }, &mut out);
        assert!(out.is_empty(), "{out:?}");
        engine
    }

    fn action(id: u64, sender: Address, kind: ActionKind) -> CoreAction {
        CoreAction { id, sender, kind }
    }

    fn held(engine: &Engine, account: AccountId) -> i64 {
        engine.balance(account, 2).map_or(0, |b| b.total)
    }

    #[test]
    fn asset_moves_go_through_the_escrow_and_a_refused_deposit_is_minted_back() {
        let mut engine = engine_with_asset_2();
        let mut bridge = Bridge::new(1, U256::from(1u64));
        let user = Address::repeat_byte(0x11);
        let account = system::core_account(user);
        let mut out = Vec::new();
        let fund = Command::Deposit {
            account,
            asset: 2,
            amount: 100,
        };
        engine.step(&fund, &mut out);
        // Withdraw 60 to the EVM: Core moves it to the escrow, the mint is queued.
        let out_60 = ActionKind::AssetWithdraw {
            asset: 2,
            units: 60,
        };
        bridge.queue_actions(vec![action(1, user, out_60)]);
        bridge.run_actions(&mut engine, |_, _| {});
        assert_eq!(
            (held(&engine, account), held(&engine, TOKEN_ESCROW_ACCOUNT)),
            (40, 60)
        );
        let minted = Mint {
            to: user,
            asset: 2,
            units: 60,
            action_id: 1,
        };
        assert_eq!(bridge.pending_mints, [minted]);
        // Deposit 25 back: the escrow pays the user, nothing is minted.
        bridge.pending_mints.clear();
        let in_25 = ActionKind::AssetDeposit {
            asset: 2,
            units: 25,
        };
        bridge.queue_actions(vec![action(2, user, in_25)]);
        bridge.run_actions(&mut engine, |_, _| {});
        assert_eq!(
            (held(&engine, account), held(&engine, TOKEN_ESCROW_ACCOUNT)),
            (65, 35)
        );
        assert!(bridge.pending_mints.is_empty());
        // A deposit Core refuses (more than the escrow holds: never on a chain, whose
        // escrow covers every burned token) moves nothing and mints the tokens back.
        let in_99 = ActionKind::AssetDeposit {
            asset: 2,
            units: 99,
        };
        bridge.queue_actions(vec![action(3, user, in_99)]);
        bridge.run_actions(&mut engine, |_, _| {});
        assert_eq!(
            (held(&engine, account), held(&engine, TOKEN_ESCROW_ACCOUNT)),
            (65, 35)
        );
        let refund = Mint {
            units: 99,
            action_id: 3,
            ..minted
        };
        assert_eq!(bridge.pending_mints, [refund]);
        assert_eq!(engine.supply(2), Some(100), "moves, never creates");
        let (_, mints, _) = bridge.take_evm_inputs();
        assert_eq!(mints, vec![refund]);
    }

    #[test]
    fn the_bridge_refuses_the_native_asset_and_mints_back_a_refused_senders_deposit() {
        let mut engine = engine_with_asset_2();
        let mut bridge = Bridge::new(1, U256::from(1u64));
        let user = Address::repeat_byte(0x22);
        let other = Address::repeat_byte(0x33);
        // Another address already owns the user's Core account: the bridge refuses.
        bridge.registry.insert(system::core_account(user), other);
        let in_5 = ActionKind::AssetDeposit { asset: 2, units: 5 };
        let native = ActionKind::AssetWithdraw { asset: 1, units: 5 };
        let contract = Address::repeat_byte(0x44);
        bridge.queue_actions(vec![action(1, user, in_5), action(2, contract, native)]);
        bridge.run_actions(&mut engine, |_, events| assert!(events.is_empty()));
        let refund = Mint {
            to: user,
            asset: 2,
            units: 5,
            action_id: 1,
        };
        assert_eq!(bridge.pending_mints, [refund]);
        let codes: Vec<_> = bridge
            .pending_callbacks
            .iter()
            .map(|c| (c.target, c.code))
            .collect();
        assert_eq!(
            codes,
            [(user, BRIDGE_REJECT_CODE), (contract, BRIDGE_REJECT_CODE)]
        );
        assert_eq!(held(&engine, TOKEN_ESCROW_ACCOUNT), 0);
        assert!(
            !bridge.claim(TOKEN_ESCROW_ACCOUNT, user),
            "nobody acts as the escrow"
        );
    }
}
