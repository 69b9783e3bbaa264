// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.21;

import {NexusAddresses} from "nexus/ICoreWriter.sol";

/// The ERC-20 view of the token of Core asset 0 (`BASE` on the devnet's genesis).
interface ICoreTokenView {
    function symbol() external view returns (string memory);
    function decimals() external view returns (uint8);
    function asset() external view returns (uint32);
    function totalSupply() external view returns (uint256);
    function balanceOf(address owner) external view returns (uint256);
    function transfer(address to, uint256 value) external returns (bool);
    function mint(address to, uint256 value) external;
}

interface Vm {
    function prank(address sender) external;
}

/// Run against a node (`forge test --fork-url http://127.0.0.1:8545 --match-contract ForkTest`,
/// examples/foundry/README.md): the chain's own state, read and changed in Foundry's EVM.
contract ForkTest {
    Vm constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    ICoreTokenView constant BASE = ICoreTokenView(NexusAddresses.TOKEN_BASE);
    address constant DEV = 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266;

    /// The token the chain installed at genesis is there, with its name and units.
    function test_the_base_token_is_the_chains() public view {
        require(keccak256(bytes(BASE.symbol())) == keccak256("BASE"), "symbol");
        require(BASE.decimals() == 0 && BASE.asset() == 0, "decimals and asset");
        require(BASE.totalSupply() >= BASE.balanceOf(DEV), "supply covers a balance");
    }

    /// A mint as the chain makes it (from the system sender), then a transfer, run in the
    /// fork on the chain's token code and storage.
    function test_a_mint_and_a_transfer_in_the_fork() public {
        uint256 held = BASE.balanceOf(DEV);
        uint256 supply = BASE.totalSupply();
        vm.prank(NexusAddresses.SYSTEM);
        BASE.mint(DEV, 5);
        address to = address(0xBEEF);
        vm.prank(DEV);
        require(BASE.transfer(to, 5), "transfer");
        require(BASE.balanceOf(to) == 5 && BASE.balanceOf(DEV) == held, "moved");
        require(BASE.totalSupply() == supply + 5, "minted");
    }
}
