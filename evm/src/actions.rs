//! CoreWriter actions (EVM -> Core) and their results (Core -> EVM).
//!
//! A contract calls [`CORE_WRITER`](crate::system::CORE_WRITER) with one of the functions of
//! [`ActionKind`]; the call is validated and charged there, and leaves one journaled log
//! `CoreAction(address indexed sender, uint256 value, bytes action)`. The executor turns the
//! logs of successful transactions into [`CoreAction`]s numbered by (block, log index); the
//! bridge turns those into engine commands of the next Core block and the engine's answers
//! into [`Callback`]s and [`Credit`]s of the EVM block after.

use crate::system::{abi::Words, event_topic, selector};
use alloy_primitives::{Address, B256, U256};
use engine::{AssetId, ByteCode, Lots, MarketId, OrderId, Side, Ticks, TimeInForce, Units};
use serde::{Deserialize, Serialize};

/// The CoreWriter functions, as Solidity signatures (their selectors start the calldata).
pub mod signatures {
    /// Place an order. `price == 0` is a market order (IOC only). `tif`: 0 GTC, 1 IOC,
    /// 2 FOK, 3 ALO.
    pub const PLACE: &str = "placeOrder(uint32,uint64,bool,uint64,uint64,uint8,bool)";
    /// Cancel one order.
    pub const CANCEL: &str = "cancelOrder(uint32,uint64)";
    /// Cancel every order in a market.
    pub const CANCEL_ALL: &str = "cancelAll(uint32)";
    /// Change an order's price and size.
    pub const MODIFY: &str = "modifyOrder(uint32,uint64,uint64,uint64)";
    /// Move the attached native value to the sender's Core balance (payable).
    pub const DEPOSIT: &str = "depositToCore()";
    /// Move Core units of the native asset back to the sender's EVM balance.
    pub const WITHDRAW: &str = "withdrawToEvm(uint64)";
    /// Move collateral between spot and perp (signed, as `Command::TransferCollateral`).
    pub const TRANSFER_COLLATERAL: &str = "transferCollateral(int64)";
    /// Set leverage and margin mode in a perp market (as `Command::SetLeverage`).
    pub const SET_LEVERAGE: &str = "setLeverage(uint32,uint32,bool)";
    /// Add (positive) or remove margin of an isolated position (as `Command::IsolatedMargin`).
    pub const ISOLATED_MARGIN: &str = "updateIsolatedMargin(uint32,int64)";
    /// Move Core units of a spot asset to the sender's ERC-20 balance of its token.
    pub const WITHDRAW_ASSET: &str = "withdrawAssetToEvm(uint32,uint64)";
    /// Called by a Core asset token only, after burning `user`'s tokens: credit them on Core.
    pub const ASSET_TO_CORE: &str = "assetToCore(address,uint64)";
    /// The log CoreWriter leaves.
    pub const ACTION_EVENT: &str = "CoreAction(address,uint256,bytes)";
    /// The callback every contract receiving Core results implements.
    pub const CALLBACK: &str = "onCoreEvent(uint64,uint8,uint64,int64,int64,int64,uint32)";
}

/// Topic 0 of the CoreWriter action log.
pub fn action_topic() -> B256 {
    event_topic(signatures::ACTION_EVENT)
}

/// One action a contract sent to Core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "RawKind", try_from = "RawKind")]
pub enum ActionKind {
    /// A new order.
    Place {
        /// Market.
        market: MarketId,
        /// Client order id.
        oid: OrderId,
        /// Side.
        side: Side,
        /// Limit price; `None` for a market order.
        price: Option<Ticks>,
        /// Size in lots.
        qty: Lots,
        /// Time in force.
        tif: TimeInForce,
        /// Reduce-only (perps).
        reduce_only: bool,
    },
    /// Cancel one order.
    Cancel {
        /// Market.
        market: MarketId,
        /// Client order id.
        oid: OrderId,
    },
    /// Cancel all orders in a market.
    CancelAll {
        /// Market.
        market: MarketId,
    },
    /// Modify an order.
    Modify {
        /// Market.
        market: MarketId,
        /// Client order id.
        oid: OrderId,
        /// New price.
        price: Ticks,
        /// New size.
        qty: Lots,
    },
    /// EVM -> Core transfer of the native token (value / wei_per_unit Core units).
    Deposit {
        /// Core units credited.
        units: Units,
    },
    /// Core -> EVM transfer of the native token.
    Withdraw {
        /// Core units debited.
        units: Units,
    },
    /// Spot <-> perp collateral move.
    TransferCollateral {
        /// Signed units.
        amount: Units,
    },
    /// Leverage and margin mode in a perp market.
    SetLeverage {
        /// The perp market.
        market: MarketId,
        /// 1..=the market's maximum (the engine checks the maximum).
        leverage: u32,
        /// Isolated (true) or cross (false) margin.
        isolated: bool,
    },
    /// Margin added to (positive) or removed from an isolated position.
    IsolatedMargin {
        /// The perp market.
        market: MarketId,
        /// Signed units (non-zero).
        amount: Units,
    },
    /// Core -> EVM move of a spot asset: Core moves `units` from the sender to the token
    /// escrow, the EVM mints them to the sender.
    AssetWithdraw {
        /// The Core asset.
        asset: AssetId,
        /// Core units (= token base units).
        units: Units,
    },
    /// EVM -> Core move of a spot asset: the token burned `units` of the sender's tokens;
    /// Core moves them from the token escrow to the sender.
    AssetDeposit {
        /// The Core asset.
        asset: AssetId,
        /// Core units (= token base units).
        units: Units,
    },
}

/// [`ActionKind`] flattened to plain numbers for storage (engine enums via `ByteCode`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct RawKind {
    tag: u8,
    market: u32,
    oid: u64,
    side: u8,
    price: i64,
    qty: i64,
    tif: u8,
    reduce_only: bool,
}

impl From<ActionKind> for RawKind {
    fn from(kind: ActionKind) -> RawKind {
        let d = RawKind::default();
        match kind {
            ActionKind::Place {
                market,
                oid,
                side,
                price,
                qty,
                tif,
                reduce_only,
            } => RawKind {
                tag: 0,
                market,
                oid,
                side: side.code(),
                price: price.unwrap_or(0),
                qty,
                tif: tif.code(),
                reduce_only,
            },
            ActionKind::Cancel { market, oid } => RawKind {
                tag: 1,
                market,
                oid,
                ..d
            },
            ActionKind::CancelAll { market } => RawKind {
                tag: 2,
                market,
                ..d
            },
            ActionKind::Modify {
                market,
                oid,
                price,
                qty,
            } => RawKind {
                tag: 3,
                market,
                oid,
                price,
                qty,
                ..d
            },
            ActionKind::Deposit { units } => RawKind {
                tag: 4,
                qty: units,
                ..d
            },
            ActionKind::Withdraw { units } => RawKind {
                tag: 5,
                qty: units,
                ..d
            },
            ActionKind::TransferCollateral { amount } => RawKind {
                tag: 6,
                qty: amount,
                ..d
            },
            ActionKind::SetLeverage {
                market,
                leverage,
                isolated,
            } => RawKind {
                tag: 7,
                market,
                qty: i64::from(leverage),
                reduce_only: isolated,
                ..d
            },
            ActionKind::IsolatedMargin { market, amount } => RawKind {
                tag: 8,
                market,
                qty: amount,
                ..d
            },
            ActionKind::AssetWithdraw { asset, units } => RawKind {
                tag: 9,
                market: asset,
                qty: units,
                ..d
            },
            ActionKind::AssetDeposit { asset, units } => RawKind {
                tag: 10,
                market: asset,
                qty: units,
                ..d
            },
        }
    }
}

impl TryFrom<RawKind> for ActionKind {
    type Error = String;
    fn try_from(r: RawKind) -> Result<ActionKind, String> {
        let bad = || format!("bad stored action {r:?}");
        Ok(match r.tag {
            0 => ActionKind::Place {
                market: r.market,
                oid: r.oid,
                side: Side::from_code(r.side).ok_or_else(bad)?,
                price: (r.price != 0).then_some(r.price),
                qty: r.qty,
                tif: TimeInForce::from_code(r.tif).ok_or_else(bad)?,
                reduce_only: r.reduce_only,
            },
            1 => ActionKind::Cancel {
                market: r.market,
                oid: r.oid,
            },
            2 => ActionKind::CancelAll { market: r.market },
            3 => ActionKind::Modify {
                market: r.market,
                oid: r.oid,
                price: r.price,
                qty: r.qty,
            },
            4 => ActionKind::Deposit { units: r.qty },
            5 => ActionKind::Withdraw { units: r.qty },
            6 => ActionKind::TransferCollateral { amount: r.qty },
            7 => ActionKind::SetLeverage {
                market: r.market,
                leverage: u32::try_from(r.qty).map_err(|_| bad())?,
                isolated: r.reduce_only,
            },
            8 => ActionKind::IsolatedMargin {
                market: r.market,
                amount: r.qty,
            },
            9 => ActionKind::AssetWithdraw {
                asset: r.market,
                units: r.qty,
            },
            10 => ActionKind::AssetDeposit {
                asset: r.market,
                units: r.qty,
            },
            _ => return Err(bad()),
        })
    }
}

impl ActionKind {
    /// Decodes CoreWriter calldata carrying `value` wei; checks every argument's range.
    /// `wei_per_unit` converts native value into Core units of the native asset. Refuses
    /// `assetToCore`, which only a token may call ([`ActionKind::decode_from`]).
    pub fn decode(calldata: &[u8], value: U256, wei_per_unit: U256) -> Result<Self, String> {
        Self::decode_from(Address::ZERO, calldata, value, wei_per_unit).map(|(kind, _)| kind)
    }

    /// As [`ActionKind::decode`] for a call from `caller`, with the address the action acts
    /// for: `caller`, except for `assetToCore(user, units)`, which only a Core asset token
    /// ([`crate::system::token_asset`]) may call and which acts for `user`.
    pub fn decode_from(
        caller: Address,
        calldata: &[u8],
        value: U256,
        wei_per_unit: U256,
    ) -> Result<(Self, Address), String> {
        if calldata.get(..4) == Some(&selector(signatures::ASSET_TO_CORE)[..]) {
            return Self::decode_asset_to_core(caller, &calldata[4..], value);
        }
        Self::decode_kind(calldata, value, wei_per_unit).map(|kind| (kind, caller))
    }

    fn decode_asset_to_core(
        caller: Address,
        args: &[u8],
        value: U256,
    ) -> Result<(Self, Address), String> {
        let asset = crate::system::token_asset(caller)
            .ok_or("CoreWriter: assetToCore is only for Core asset tokens")?;
        if !value.is_zero() {
            return Err("CoreWriter: only depositToCore takes value".into());
        }
        let mut w = Words::new(args);
        let user = w.address()?;
        let units = i64::try_from(w.uint(64)?)
            .ok()
            .filter(|&v| v > 0)
            .ok_or("CoreWriter: units must be in 1..=2^63-1")?;
        w.finish().map_err(|e| format!("CoreWriter: {e}"))?;
        Ok((ActionKind::AssetDeposit { asset, units }, user))
    }

    fn decode_kind(calldata: &[u8], value: U256, wei_per_unit: U256) -> Result<Self, String> {
        use signatures::*;
        let Some((sel, args)) = calldata.split_first_chunk::<4>() else {
            return Err("CoreWriter: calldata shorter than a selector".into());
        };
        let mut w = Words::new(args);
        let positive = |v: u64, what: &str| -> Result<i64, String> {
            i64::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("CoreWriter: {what} must be in 1..=2^63-1"))
        };
        if *sel != selector(DEPOSIT) && !value.is_zero() {
            return Err("CoreWriter: only depositToCore takes value".into());
        }
        let kind = if *sel == selector(PLACE) {
            let market = w.uint(32)? as MarketId;
            let oid = w.uint(64)?;
            let side = if w.boolean()? { Side::Buy } else { Side::Sell };
            let price = w.uint(64)?;
            let qty = positive(w.uint(64)?, "qty")?;
            let tif = match w.uint(8)? {
                0 => TimeInForce::Gtc,
                1 => TimeInForce::Ioc,
                2 => TimeInForce::Fok,
                3 => TimeInForce::Alo,
                other => return Err(format!("CoreWriter: unknown tif {other}")),
            };
            let reduce_only = w.boolean()?;
            let price = if price == 0 {
                None
            } else {
                Some(positive(price, "price")?)
            };
            ActionKind::Place {
                market,
                oid,
                side,
                price,
                qty,
                tif,
                reduce_only,
            }
        } else if *sel == selector(CANCEL) {
            ActionKind::Cancel {
                market: w.uint(32)? as MarketId,
                oid: w.uint(64)?,
            }
        } else if *sel == selector(CANCEL_ALL) {
            ActionKind::CancelAll {
                market: w.uint(32)? as MarketId,
            }
        } else if *sel == selector(MODIFY) {
            ActionKind::Modify {
                market: w.uint(32)? as MarketId,
                oid: w.uint(64)?,
                price: positive(w.uint(64)?, "price")?,
                qty: positive(w.uint(64)?, "qty")?,
            }
        } else if *sel == selector(DEPOSIT) {
            if value.is_zero() {
                return Err("CoreWriter: depositToCore needs value".into());
            }
            if !(value % wei_per_unit).is_zero() {
                return Err(format!(
                    "CoreWriter: value must be a multiple of {wei_per_unit} wei"
                ));
            }
            let units = value / wei_per_unit;
            let units =
                i64::try_from(units).map_err(|_| "CoreWriter: deposit too large".to_string())?;
            ActionKind::Deposit { units }
        } else if *sel == selector(WITHDRAW) {
            ActionKind::Withdraw {
                units: positive(w.uint(64)?, "units")?,
            }
        } else if *sel == selector(TRANSFER_COLLATERAL) {
            let amount = w.int64()?;
            if amount == 0 {
                return Err("CoreWriter: amount must not be 0".into());
            }
            ActionKind::TransferCollateral { amount }
        } else if *sel == selector(SET_LEVERAGE) {
            let market = w.uint(32)? as MarketId;
            let leverage = w.uint(32)? as u32;
            if leverage == 0 {
                return Err("CoreWriter: leverage must be at least 1".into());
            }
            ActionKind::SetLeverage {
                market,
                leverage,
                isolated: w.boolean()?,
            }
        } else if *sel == selector(ISOLATED_MARGIN) {
            let market = w.uint(32)? as MarketId;
            let amount = w.int64()?;
            if amount == 0 {
                return Err("CoreWriter: amount must not be 0".into());
            }
            ActionKind::IsolatedMargin { market, amount }
        } else if *sel == selector(WITHDRAW_ASSET) {
            ActionKind::AssetWithdraw {
                asset: w.uint(32)? as AssetId,
                units: positive(w.uint(64)?, "units")?,
            }
        } else {
            return Err(format!(
                "CoreWriter: unknown selector 0x{}",
                alloy_primitives::hex::encode(sel)
            ));
        };
        w.finish().map_err(|e| format!("CoreWriter: {e}"))?;
        Ok(kind)
    }

    /// Core cost of the action in gas (a fixed base per kind: matching work is bounded by the
    /// engine and not known at submission).
    pub fn core_gas(&self) -> u64 {
        match self {
            ActionKind::Place { .. } => 20_000,
            ActionKind::Modify { .. } => 15_000,
            ActionKind::Cancel { .. } => 5_000,
            ActionKind::CancelAll { .. } => 10_000,
            ActionKind::Deposit { .. } | ActionKind::Withdraw { .. } => 10_000,
            ActionKind::TransferCollateral { .. }
            | ActionKind::SetLeverage { .. }
            | ActionKind::IsolatedMargin { .. } => 10_000,
            ActionKind::AssetWithdraw { .. } | ActionKind::AssetDeposit { .. } => 10_000,
        }
    }
}

/// An action taken from a successful transaction's log, numbered for deterministic order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreAction {
    /// `(block << 24) | log index in the block`: unique, and increasing in execution order.
    pub id: u64,
    /// The EVM address the action acts for: the caller of CoreWriter (`msg.sender`), except
    /// for an [`ActionKind::AssetDeposit`], whose token names the user whose tokens it
    /// burned.
    pub sender: Address,
    /// What it asked for.
    pub kind: ActionKind,
}

impl CoreAction {
    /// Length of [`CoreAction::commitment_bytes`].
    pub const COMMITMENT_LEN: usize = 8 + 20 + 1 + 4 + 8 + 8 + 8 + 1;

    /// A canonical fixed-size encoding, hashed into the queue root: `id u64, sender 20,
    /// kind u8, market u32, oid u64, price i64, qty/units i64, flags u8` (big-endian; unused
    /// fields 0). Kinds: 1 place, 2 cancel, 3 cancel all, 4 modify, 5 deposit, 6 withdraw,
    /// 7 transfer collateral, 8 set leverage (qty = leverage, flags bit 0 isolated), 9
    /// isolated margin (qty = amount), 10 asset withdraw and 11 asset deposit (market = asset,
    /// qty = units). Place flags: bit 0 sell, bits 1-2 time in force (GTC, IOC,
    /// FOK, ALO), bit 3 reduce-only, bit 4 market order (no price).
    pub fn commitment_bytes(&self) -> [u8; Self::COMMITMENT_LEN] {
        let (kind, market, oid, price, qty, flags) = match self.kind {
            ActionKind::Place {
                market,
                oid,
                side,
                price,
                qty,
                tif,
                reduce_only,
            } => {
                let flags = (side == Side::Sell) as u8
                    | (tif as u8) << 1
                    | (reduce_only as u8) << 3
                    | (price.is_none() as u8) << 4;
                (1u8, market, oid, price.unwrap_or(0), qty, flags)
            }
            ActionKind::Cancel { market, oid } => (2, market, oid, 0, 0, 0),
            ActionKind::CancelAll { market } => (3, market, 0, 0, 0, 0),
            ActionKind::Modify {
                market,
                oid,
                price,
                qty,
            } => (4, market, oid, price, qty, 0),
            ActionKind::Deposit { units } => (5, 0, 0, 0, units, 0),
            ActionKind::Withdraw { units } => (6, 0, 0, 0, units, 0),
            ActionKind::TransferCollateral { amount } => (7, 0, 0, 0, amount, 0),
            ActionKind::SetLeverage {
                market,
                leverage,
                isolated,
            } => (8, market, 0, 0, i64::from(leverage), isolated as u8),
            ActionKind::IsolatedMargin { market, amount } => (9, market, 0, 0, amount, 0),
            ActionKind::AssetWithdraw { asset, units } => (10, asset, 0, 0, units, 0),
            ActionKind::AssetDeposit { asset, units } => (11, asset, 0, 0, units, 0),
        };
        let mut out = [0u8; Self::COMMITMENT_LEN];
        out[..8].copy_from_slice(&self.id.to_be_bytes());
        out[8..28].copy_from_slice(self.sender.as_slice());
        out[28] = kind;
        out[29..33].copy_from_slice(&market.to_be_bytes());
        out[33..41].copy_from_slice(&oid.to_be_bytes());
        out[41..49].copy_from_slice(&price.to_be_bytes());
        out[49..57].copy_from_slice(&qty.to_be_bytes());
        out[57] = flags;
        out
    }
}

/// What a callback reports (the `kind` argument of `onCoreEvent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum CallbackKind {
    /// The order was accepted (`oid`).
    Accepted = 1,
    /// The action was refused (`code`: reject reason, see docs/evm.md).
    Rejected = 2,
    /// A fill (`oid` own order, `price`, `qty`, `left` own remaining; `code` 0 maker,
    /// 1 taker).
    Fill = 3,
    /// The order left the book (`qty` remaining; `code` cancel reason).
    Canceled = 4,
    /// A deposit, withdrawal or collateral move was done (`qty` units).
    Done = 5,
    /// The order was modified (`price`, `qty`).
    Modified = 6,
}

/// A Core -> EVM callback: delivered as a system transaction calling
/// `onCoreEvent(actionId, kind, oid, price, qty, left, code)` on `target` (a contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    /// The contract.
    pub target: Address,
    /// The action that caused it; 0 for events caused by others (a fill of a resting order).
    pub action_id: u64,
    /// What happened.
    pub kind: CallbackKind,
    /// Order id (0 when none).
    pub oid: OrderId,
    /// Price in ticks (0 when none).
    pub price: Ticks,
    /// Lots or units, per kind.
    pub qty: i64,
    /// Remaining lots, per kind.
    pub left: i64,
    /// Reason code, per kind.
    pub code: u32,
}

impl Callback {
    /// The calldata of the `onCoreEvent` call.
    pub fn calldata(&self) -> Vec<u8> {
        use crate::system::abi::*;
        let mut out = selector(signatures::CALLBACK).to_vec();
        out.extend_from_slice(&word_u64(self.action_id));
        out.extend_from_slice(&word_u64(self.kind as u64));
        out.extend_from_slice(&word_u64(self.oid));
        out.extend_from_slice(&word_i128(self.price as i128));
        out.extend_from_slice(&word_i128(self.qty as i128));
        out.extend_from_slice(&word_i128(self.left as i128));
        out.extend_from_slice(&word_u64(self.code as u64));
        out
    }
}

/// A Core -> EVM credit of native value, applied at the start of an EVM block: the amount
/// moves from CoreWriter's escrow balance to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    /// Who receives it.
    pub to: Address,
    /// Wei.
    pub wei: U256,
    /// The action it answers.
    pub action_id: u64,
}

/// A Core -> EVM mint of a Core asset's token, run at the start of an EVM block as a system
/// transaction calling the token's `mint(to, units)`: Core already moved `units` into the
/// token escrow (a withdrawal to the EVM), or the move back to Core was refused (a refund).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mint {
    /// Who receives the tokens.
    pub to: Address,
    /// The Core asset (its token is at `system::token_address(asset)`).
    pub asset: AssetId,
    /// Token base units (= Core units), > 0.
    pub units: Units,
    /// The action it answers.
    pub action_id: u64,
}

impl Mint {
    /// The token contract called.
    pub fn token(&self) -> Address {
        crate::system::token_address(self.asset)
    }

    /// The calldata of the `mint(to, units)` call.
    pub fn calldata(&self) -> Vec<u8> {
        crate::token::mint_calldata(self.to, self.units as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::abi::*;

    fn call(sig: &str, words: &[[u8; 32]]) -> Vec<u8> {
        let mut out = selector(sig).to_vec();
        for w in words {
            out.extend_from_slice(w);
        }
        out
    }

    #[test]
    fn decodes_and_validates() {
        let wpu = U256::from(1_000u64);
        let place = call(
            signatures::PLACE,
            &[
                word_u64(1),
                word_u64(9),
                word_bool(true),
                word_u64(100),
                word_u64(5),
                word_u64(0),
                word_bool(false),
            ],
        );
        assert_eq!(
            ActionKind::decode(&place, U256::ZERO, wpu),
            Ok(ActionKind::Place {
                market: 1,
                oid: 9,
                side: Side::Buy,
                price: Some(100),
                qty: 5,
                tif: TimeInForce::Gtc,
                reduce_only: false
            })
        );
        assert!(
            ActionKind::decode(&place, U256::from(1), wpu).is_err(),
            "value"
        );
        assert!(ActionKind::decode(&place[..place.len() - 1], U256::ZERO, wpu).is_err());
        let deposit = call(signatures::DEPOSIT, &[]);
        assert_eq!(
            ActionKind::decode(&deposit, U256::from(5_000), wpu),
            Ok(ActionKind::Deposit { units: 5 })
        );
        assert!(ActionKind::decode(&deposit, U256::from(5_001), wpu).is_err());
        assert!(ActionKind::decode(&deposit, U256::ZERO, wpu).is_err());
        assert!(ActionKind::decode(&[1, 2, 3, 4], U256::ZERO, wpu).is_err());
        let withdraw = call(signatures::WITHDRAW, &[word_u64(0)]);
        assert!(
            ActionKind::decode(&withdraw, U256::ZERO, wpu).is_err(),
            "zero"
        );
    }

    #[test]
    fn perp_actions_decode_round_trip_and_refuse_zero() {
        let wpu = U256::from(1_000u64);
        let leverage = call(
            signatures::SET_LEVERAGE,
            &[word_u64(3), word_u64(5), word_bool(true)],
        );
        let set = ActionKind::SetLeverage {
            market: 3,
            leverage: 5,
            isolated: true,
        };
        assert_eq!(ActionKind::decode(&leverage, U256::ZERO, wpu), Ok(set));
        let mut minus_two = [0xffu8; 32];
        minus_two[31] = 0xfe;
        let margin = call(signatures::ISOLATED_MARGIN, &[word_u64(3), minus_two]);
        let remove = ActionKind::IsolatedMargin {
            market: 3,
            amount: -2,
        };
        assert_eq!(ActionKind::decode(&margin, U256::ZERO, wpu), Ok(remove));
        for kind in [set, remove] {
            assert_eq!(ActionKind::try_from(RawKind::from(kind)), Ok(kind));
        }
        let none = call(
            signatures::SET_LEVERAGE,
            &[word_u64(3), word_u64(0), word_bool(false)],
        );
        assert!(
            ActionKind::decode(&none, U256::ZERO, wpu).is_err(),
            "leverage 0"
        );
        let nothing = call(signatures::ISOLATED_MARGIN, &[word_u64(3), word_u64(0)]);
        assert!(
            ActionKind::decode(&nothing, U256::ZERO, wpu).is_err(),
            "amount 0"
        );
        assert!(
            ActionKind::decode(&leverage, U256::from(1_000), wpu).is_err(),
            "value"
        );
    }

    #[test]
    fn asset_moves_decode_and_asset_to_core_is_only_for_tokens() {
        let wpu = U256::from(1_000u64);
        let withdraw = call(signatures::WITHDRAW_ASSET, &[word_u64(2), word_u64(40)]);
        let out = ActionKind::AssetWithdraw {
            asset: 2,
            units: 40,
        };
        assert_eq!(ActionKind::decode(&withdraw, U256::ZERO, wpu), Ok(out));
        let zero = call(signatures::WITHDRAW_ASSET, &[word_u64(2), word_u64(0)]);
        assert!(ActionKind::decode(&zero, U256::ZERO, wpu).is_err());
        let user = Address::repeat_byte(0x42);
        let back = call(
            signatures::ASSET_TO_CORE,
            &[word_address(user), word_u64(7)],
        );
        let token = crate::system::token_address(2);
        let into = ActionKind::AssetDeposit { asset: 2, units: 7 };
        assert_eq!(
            ActionKind::decode_from(token, &back, U256::ZERO, wpu),
            Ok((into, user)),
            "acts for the user whose tokens were burned"
        );
        assert!(
            ActionKind::decode_from(user, &back, U256::ZERO, wpu).is_err(),
            "not a token"
        );
        assert!(ActionKind::decode(&back, U256::ZERO, wpu).is_err());
        assert!(ActionKind::decode_from(token, &back, U256::from(1), wpu).is_err());
        let too_big = call(
            signatures::ASSET_TO_CORE,
            &[word_address(user), word_u64(1 << 63)],
        );
        assert!(ActionKind::decode_from(token, &too_big, U256::ZERO, wpu).is_err());
        for kind in [out, into] {
            assert_eq!(ActionKind::try_from(RawKind::from(kind)), Ok(kind));
        }
        assert_ne!(
            CoreAction {
                id: 1,
                sender: user,
                kind: out
            }
            .commitment_bytes(),
            CoreAction {
                id: 1,
                sender: user,
                kind: into
            }
            .commitment_bytes()
        );
    }
}
