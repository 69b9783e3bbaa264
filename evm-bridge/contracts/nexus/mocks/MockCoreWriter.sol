// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

import {ICoreWriter} from "../ICoreWriter.sol";

/// @title A CoreWriter for EVMs without NexusCore (Foundry tests, forks)
/// @notice Put its runtime code at `NexusAddresses.CORE_WRITER` (Foundry: `vm.etch(CORE_WRITER,
/// address(new MockCoreWriter()).code)`). Every call to a CoreWriter function leaves the same
/// `CoreAction(sender, value, calldata)` log as the real one, so tests can expect the actions
/// a contract sends (`vm.expectEmit`); the count of actions is kept per sender. Nothing reaches
/// a book: results (`onCoreEvent`) are the test's to deliver, from `NexusAddresses.SYSTEM`.
/// @dev Unlike the real CoreWriter it does not check argument ranges or refuse calls made from
/// a callback.
contract MockCoreWriter is ICoreWriter {
    /// @notice Actions sent by each sender.
    mapping(address => uint256) public actions;

    function placeOrder(uint32, uint64, bool, uint64, uint64, uint8, bool) external {
        record();
    }

    function cancelOrder(uint32, uint64) external {
        record();
    }

    function cancelAll(uint32) external {
        record();
    }

    function modifyOrder(uint32, uint64, uint64, uint64) external {
        record();
    }

    function depositToCore() external payable {
        record();
    }

    function withdrawToEvm(uint64) external {
        record();
    }

    function transferCollateral(int64) external {
        record();
    }

    function setLeverage(uint32, uint32, bool) external {
        record();
    }

    function updateIsolatedMargin(uint32, int64) external {
        record();
    }

    function withdrawAssetToEvm(uint32, uint64) external {
        record();
    }

    function assetToCore(address, uint64) external {
        record();
    }

    function record() private {
        actions[msg.sender] += 1;
        emit CoreAction(msg.sender, msg.value, msg.data);
    }
}
