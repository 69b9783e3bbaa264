// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

import {NexusAddresses} from "./ICoreWriter.sol";

/// @title Typed reads of NexusCore through the read precompiles
/// @notice Each function is a `staticcall` of one precompile with `abi.encode(args)` (no
/// selector) and decodes its answer (docs/evm.md, "Read precompiles"). Every read sees Core as
/// of the start of this block. Unknown accounts, assets or markets read as zeros.
/// @dev Outside NexusEVM (Foundry's EVM, a fork) the precompiles do not exist: etch
/// `mocks/MockPrecompile.sol` at their addresses and set its answers.
library CoreReader {
    /// @notice The Core block height this EVM block sees (equal to its own height).
    function coreBlock() internal view returns (uint64 height) {
        height = abi.decode(read(NexusAddresses.CORE_BLOCK, ""), (uint64));
    }

    /// @notice `user`'s Core balance of `asset`: total and locked by open orders (Core units).
    function balance(address user, uint32 asset) internal view returns (int64 total, int64 locked) {
        (total, locked) = abi.decode(read(NexusAddresses.BALANCE, abi.encode(user, asset)), (int64, int64));
    }

    /// @notice `market`'s best bid and offer (ticks and lots; 0 for an empty side).
    function bestBidOffer(uint32 market)
        internal
        view
        returns (int64 bidPrice, int64 bidLots, int64 askPrice, int64 askLots)
    {
        (bidPrice, bidLots, askPrice, askLots) =
            abi.decode(read(NexusAddresses.BBO, abi.encode(market)), (int64, int64, int64, int64));
    }

    /// @notice A perp market's mark, oracle and last-trade prices in ticks (0, 0, 0 for a spot
    /// or unknown market).
    function prices(uint32 market) internal view returns (int64 mark, int64 oracle, int64 lastTrade) {
        (mark, oracle, lastTrade) = abi.decode(read(NexusAddresses.PRICES, abi.encode(market)), (int64, int64, int64));
    }

    /// @notice The Core account id of `user` (0 if it has none).
    function coreAccount(address user) internal view returns (uint64 account) {
        account = abi.decode(read(NexusAddresses.CORE_ACCOUNT, abi.encode(user)), (uint64));
    }

    /// @notice `user`'s perp collateral and the margin its open perp orders hold (Core units).
    function perpCollateral(address user) internal view returns (int64 collateral, int64 orderMargin) {
        (collateral, orderMargin) =
            abi.decode(read(NexusAddresses.PERP_COLLATERAL, abi.encode(user)), (int64, int64));
    }

    /// @notice Calls `precompile` with `input`; reverts with the precompile's reason if it fails.
    function read(address precompile, bytes memory input) internal view returns (bytes memory out) {
        bool ok;
        (ok, out) = precompile.staticcall(input);
        if (!ok) {
            assembly {
                revert(add(out, 32), mload(out))
            }
        }
    }
}
