// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.21;

import {ICoreWriter, NexusAddresses} from "nexus/ICoreWriter.sol";
import {MockCoreWriter} from "nexus/mocks/MockCoreWriter.sol";
import {MockPrecompile} from "nexus/mocks/MockPrecompile.sol";
import {MarketMaker} from "fixture/MarketMaker.sol";

/// The Foundry cheatcodes these tests use (forge-std's `Vm` has them all; declared here so
/// that the project needs no library download).
interface Vm {
    function etch(address target, bytes calldata code) external;
    function prank(address sender) external;
    function expectEmit(bool topic1, bool topic2, bool topic3, bool data, address emitter) external;
    function expectRevert(bytes calldata message) external;
}

/// docs/evm.md, "The Solidity package and mocks": the mocks stand in for CoreWriter and the read
/// precompiles in Foundry's EVM, and the docs' snippet runs as written.
contract MarketMakerMocksTest {
    Vm constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    MarketMaker maker;

    function setUp() public {
        maker = new MarketMaker(0);
        vm.etch(NexusAddresses.CORE_WRITER, address(new MockCoreWriter()).code);
        vm.etch(NexusAddresses.BBO, address(new MockPrecompile()).code);
    }

    /// The snippet of docs/evm.md, then what it should have done.
    function test_the_docs_snippet() public {
        MockPrecompile(NexusAddresses.BBO).setAnswer(abi.encode(uint32(0)), abi.encode(int64(90), int64(5), int64(110), int64(7)));
        vm.expectEmit(true, false, false, false, NexusAddresses.CORE_WRITER);
        emit ICoreWriter.CoreAction(address(maker), 0, "");
        maker.quote(90, 110, 3);
        vm.prank(NexusAddresses.SYSTEM);
        maker.onCoreEvent(0, 3, 1, 90, 3, 0, 0); // a fill of order 1, as the chain would call it

        require(MockCoreWriter(NexusAddresses.CORE_WRITER).actions(address(maker)) == 2, "two actions (bid and ask)");
        require(maker.fills() == 1 && maker.filledLots() == 3 && maker.lastFillPrice() == 90, "the fill was counted");
        (int64 bid, int64 bidLots, int64 ask, int64 askLots) = maker.bestBidOffer();
        require(bid == 90 && bidLots == 5 && ask == 110 && askLots == 7, "the BBO answer read through the mock");
    }

    /// A read the mock has no answer for reverts, with the mock's reason.
    function test_a_read_without_an_answer_reverts() public {
        vm.expectRevert(bytes("MarketMaker: bbo read failed"));
        maker.bestBidOffer();
    }

    /// Only the system may deliver callbacks.
    function test_a_callback_from_anyone_but_the_system_reverts() public {
        vm.expectRevert(bytes("MarketMaker: not system"));
        maker.onCoreEvent(0, 3, 1, 90, 3, 0, 0);
    }
}
