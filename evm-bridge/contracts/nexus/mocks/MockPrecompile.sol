// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title A read precompile for EVMs without NexusCore (Foundry tests, forks)
/// @notice Put its runtime code at a read precompile's address (Foundry: `vm.etch(BALANCE,
/// address(new MockPrecompile()).code)`), then tell it what to answer: `setAnswer(input,
/// output)` makes a call with exactly `input` (the precompile's `abi.encode(args)`, empty for
/// `CORE_BLOCK`) return `output` (`abi.encode` of the precompile's results). A call with an
/// input it was not given reverts with `MockPrecompile: no answer`, as a test should notice.
contract MockPrecompile {
    mapping(bytes32 => bytes) private answers;
    mapping(bytes32 => bool) private known;

    /// @notice Answers `output` to calls whose calldata is `input`.
    /// @dev `setAnswer`'s own selector makes its calldata distinct from any precompile input
    /// (those carry no selector and are whole 32-byte words, or empty).
    function setAnswer(bytes calldata input, bytes calldata output) external {
        bytes32 key = keccak256(input);
        answers[key] = output;
        known[key] = true;
    }

    fallback(bytes calldata input) external returns (bytes memory) {
        bytes32 key = keccak256(input);
        require(known[key], "MockPrecompile: no answer");
        return answers[key];
    }
}
