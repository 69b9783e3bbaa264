// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title CoreWriter: actions from the EVM to NexusCore
/// @notice The system contract at `CORE_WRITER` (docs/evm.md, "CoreWriter"). Every successful
/// call leaves one `CoreAction` log, and the chain runs it as an engine command in the Core
/// block after the EVM block that held it; its results come back as `onCoreEvent` callbacks
/// (`INexusCallback`). A call from inside a callback reverts, and so does value on anything but
/// `depositToCore`, an argument outside its type's engine range or an unknown selector.
/// @dev Only a plain CALL is accepted (no DELEGATECALL, CALLCODE or STATICCALL). The action's
/// sender is `msg.sender` of that call.
interface ICoreWriter {
    /// @notice Every action, as the log CoreWriter leaves: `action` is the call's calldata.
    /// @param sender The caller of CoreWriter (the account the action is for).
    /// @param value The call's value in wei (only `depositToCore` carries one).
    /// @param action The selector and ABI-encoded arguments of the call, byte for byte.
    event CoreAction(address indexed sender, uint256 value, bytes action);

    /// @notice Places an order.
    /// @param market The Core market id.
    /// @param oid The caller's order id (unique among its open orders in the market).
    /// @param isBuy True for a bid.
    /// @param price Limit price in ticks; 0 for a market order (IOC only).
    /// @param qty Size in lots.
    /// @param tif Time in force: 0 GTC, 1 IOC, 2 FOK, 3 ALO (post-only).
    /// @param reduceOnly Perp markets only: the order may only reduce the position.
    function placeOrder(uint32 market, uint64 oid, bool isBuy, uint64 price, uint64 qty, uint8 tif, bool reduceOnly)
        external;

    /// @notice Cancels the caller's open order `oid` in `market`.
    function cancelOrder(uint32 market, uint64 oid) external;

    /// @notice Cancels every open order of the caller in `market`.
    function cancelAll(uint32 market) external;

    /// @notice Changes an open order's price (ticks) and size (lots).
    function modifyOrder(uint32 market, uint64 oid, uint64 price, uint64 qty) external;

    /// @notice Moves `msg.value` to the caller's Core balance of the native asset:
    /// `msg.value / weiPerUnit` Core units (`msg.value` must be a multiple of `weiPerUnit`).
    function depositToCore() external payable;

    /// @notice Moves `units` Core units of the native asset back to the caller's EVM balance.
    function withdrawToEvm(uint64 units) external;

    /// @notice Moves collateral between the caller's spot balance and its perp account:
    /// positive to perp, negative back to spot (Core units of the collateral asset).
    function transferCollateral(int64 amount) external;

    /// @notice Sets the caller's leverage and margin mode in perp market `market`. The engine
    /// refuses it while the caller has open orders there, and a mode change while it has a
    /// position (`invalid_leverage`, `position_open`).
    /// @param leverage 1 up to the market's maximum.
    /// @param isolated Isolated (true) or cross (false) margin.
    function setLeverage(uint32 market, uint32 leverage, bool isolated) external;

    /// @notice Adds margin to (`amount > 0`, from cross collateral) or removes it from
    /// (`amount < 0`, back to it) the caller's isolated position in `market` (Core units).
    function updateIsolatedMargin(uint32 market, int64 amount) external;

    /// @notice Moves `units` Core units of spot asset `asset` (not the native asset) from the
    /// caller's Core balance to its ERC-20 balance of that asset's token
    /// (`NexusAddresses.coreToken(asset)`): Core debits the caller and credits the bridge's
    /// escrow in the next Core block, and the token is minted to the caller at the start of
    /// the EVM block after. Refused by Core (`insufficient_balance`, `unknown_asset`): nothing
    /// moves; the native asset: refused by the bridge (code `0xffff`).
    /// @param asset The Core asset id.
    /// @param units Core units, 1 to 2^63-1 (one token base unit is one Core unit).
    function withdrawAssetToEvm(uint32 asset, uint64 units) external;

    /// @notice Only a Core asset token calls this, from its `depositToCore`, after burning
    /// `units` of `user`'s tokens: Core moves `units` of the token's asset from the bridge's
    /// escrow to `user`'s Core balance in the next Core block (the action is `user`'s: its
    /// callbacks go to `user`). If Core refuses, the tokens are minted back to `user` in the EVM
    /// block after. Any other caller is refused with a revert.
    /// @param user The account whose tokens were burned, credited on Core.
    /// @param units Core units, 1 to 2^63-1.
    function assetToCore(address user, uint64 units) external;
}

/// @title The callback of contracts that act on Core
/// @notice Implemented by a contract that wants its CoreWriter actions' results: the chain
/// calls it from `NexusAddresses.SYSTEM` in a system transaction (gas limit 300,000) for every
/// engine event naming the contract's Core account. A callback that reverts is recorded and
/// has no other effect; CoreWriter refuses actions sent while it runs.
interface INexusCallback {
    /// @param actionId `(evm block << 24) | log index` of the action that caused the event, 0
    /// when another trader caused it (a fill of a resting order).
    /// @param kind 1 accepted, 2 rejected, 3 fill, 4 canceled, 5 done, 6 modified.
    /// @param oid The order id (0 when the event has none).
    /// @param price Fill price in ticks (fills), else the order's price.
    /// @param qty Lots filled (fills), remaining (cancels) or Core units (done).
    /// @param left The order's remaining lots after the event.
    /// @param code Reject code (kind 2: docs/evm.md's table), maker 0 / taker 1 (fills), or the
    /// cancel reason (kind 4).
    function onCoreEvent(uint64 actionId, uint8 kind, uint64 oid, int64 price, int64 qty, int64 left, uint32 code)
        external;
}

/// @title Fixed addresses of NexusEVM
library NexusAddresses {
    /// @notice CoreWriter (`ICoreWriter`).
    address internal constant CORE_WRITER = 0x3333333333333333333333333333333333333333;
    /// @notice The sender of system transactions (callbacks and credits).
    address internal constant SYSTEM = 0xffffFFFfFFffffffffffffffFfFFFfffFFFfFFfE;
    /// @notice Read precompile: the Core block height this EVM block sees.
    address internal constant CORE_BLOCK = address(0x0800);
    /// @notice Read precompile: an account's Core balance of an asset.
    address internal constant BALANCE = address(0x0801);
    /// @notice Read precompile: an account's perp position in a market.
    address internal constant POSITION = address(0x0802);
    /// @notice Read precompile: a market's best bid and offer.
    address internal constant BBO = address(0x0803);
    /// @notice Read precompile: a perp market's mark, oracle and last-trade prices.
    address internal constant PRICES = address(0x0804);
    /// @notice Read precompile: an account's open orders in a market.
    address internal constant OPEN_ORDERS = address(0x0805);
    /// @notice Read precompile: the Core account id of an EVM address.
    address internal constant CORE_ACCOUNT = address(0x0806);
    /// @notice Read precompile: an account's perp collateral and order margin.
    address internal constant PERP_COLLATERAL = address(0x0807);
    /// @notice The first Core asset token address: asset `a`'s ERC-20 (`CoreToken`) is at
    /// `TOKEN_BASE + a` (asset 2: `0x2000000000000000000000000000000000000002`).
    address internal constant TOKEN_BASE = 0x2000000000000000000000000000000000000000;

    /// @notice The address of Core spot asset `asset`'s ERC-20 token (`CoreToken`); it has code
    /// only for the assets of the chain's genesis other than the native asset.
    function coreToken(uint32 asset) internal pure returns (address) {
        return address(uint160(TOKEN_BASE) + asset);
    }
}
