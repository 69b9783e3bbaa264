// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

import {ICoreWriter, NexusAddresses} from "./ICoreWriter.sol";

/// @title The ERC-20 view of one Core spot asset
/// @notice The chain puts this contract's runtime code at `NexusAddresses.coreToken(asset)` for
/// every Core asset of its genesis other than the native asset (docs/evm.md, "Core assets as
/// ERC-20 tokens"), with `name`, `symbol` and `decimals` written into its storage. One token
/// base unit is one Core unit of the asset, so `decimals` is the asset's. Tokens enter the EVM
/// only by `mint`, which the chain calls when Core moved units into the bridge's escrow
/// (`ICoreWriter.withdrawAssetToEvm`), and leave it only by `depositToCore`, so
/// `totalSupply` equals the escrow's Core balance of the asset, less deposits Core has not run
/// yet. Transfers and allowances follow ERC-20 with OpenZeppelin 5's rules and errors
/// (IERC6093): the zero address can neither send, receive nor approve, and an allowance of
/// `type(uint256).max` is never spent.
/// @dev Storage layout (the chain writes slots 3 to 5 at genesis): 0 `balanceOf`, 1
/// `allowance`, 2 `totalSupply`, 3 `name`, 4 `symbol`, 5 `decimals`. The asset id is the
/// address's low 32 bits.
contract CoreToken {
    /// @notice Tokens held by each address.
    mapping(address => uint256) public balanceOf;
    /// @notice `allowance[owner][spender]`: what `spender` may still move for `owner`.
    mapping(address => mapping(address => uint256)) public allowance;
    /// @notice Tokens on the EVM (= the escrow's Core balance, less deposits in flight).
    uint256 public totalSupply;
    /// @notice The asset's name.
    string public name;
    /// @notice The asset's symbol.
    string public symbol;
    /// @notice The asset's decimals (one token base unit is one Core unit).
    uint8 public decimals;

    /// @notice ERC-20 transfer, mint (`from` zero) and burn (`to` zero).
    event Transfer(address indexed from, address indexed to, uint256 value);
    /// @notice ERC-20 approval (by `approve` only: spending an allowance emits none).
    event Approval(address indexed owner, address indexed spender, uint256 value);

    /// @notice `sender` holds `balance`, less than `needed`.
    error ERC20InsufficientBalance(address sender, uint256 balance, uint256 needed);
    /// @notice The zero address cannot send.
    error ERC20InvalidSender(address sender);
    /// @notice The zero address cannot receive.
    error ERC20InvalidReceiver(address receiver);
    /// @notice `spender` may move `allowance`, less than `needed`.
    error ERC20InsufficientAllowance(address spender, uint256 allowance, uint256 needed);
    /// @notice The zero address cannot approve.
    error ERC20InvalidApprover(address approver);
    /// @notice The zero address cannot be approved.
    error ERC20InvalidSpender(address spender);
    /// @notice `mint` from anyone but the chain's system sender.
    error NotSystem(address caller);

    /// @notice The Core asset id of this token (the address's low 32 bits).
    function asset() public view returns (uint32) {
        return uint32(uint160(address(this)));
    }

    /// @notice Moves `value` of the caller's tokens to `to`.
    function transfer(address to, uint256 value) external returns (bool) {
        _transfer(msg.sender, to, value);
        return true;
    }

    /// @notice Lets `spender` move up to `value` of the caller's tokens (replacing the
    /// previous allowance).
    function approve(address spender, uint256 value) external returns (bool) {
        if (spender == address(0)) revert ERC20InvalidSpender(address(0));
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    /// @notice Moves `value` of `from`'s tokens to `to`, spending the caller's allowance
    /// (unless it is `type(uint256).max`).
    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < value) revert ERC20InsufficientAllowance(msg.sender, allowed, value);
            unchecked {
                allowance[from][msg.sender] = allowed - value;
            }
        }
        _transfer(from, to, value);
        return true;
    }

    /// @notice Burns `units` of the caller's tokens and sends them to its Core balance: Core
    /// moves them from the bridge's escrow to the caller in the next Core block (refused:
    /// minted back in the EVM block after). Emits `Transfer(caller, 0, units)` and a
    /// CoreWriter `CoreAction` log.
    /// @param units Token base units = Core units, 1 to 2^63-1.
    function depositToCore(uint64 units) external {
        uint256 held = balanceOf[msg.sender];
        if (held < units) revert ERC20InsufficientBalance(msg.sender, held, units);
        unchecked {
            balanceOf[msg.sender] = held - units;
            totalSupply -= units;
        }
        emit Transfer(msg.sender, address(0), units);
        ICoreWriter(NexusAddresses.CORE_WRITER).assetToCore(msg.sender, units);
    }

    /// @notice Mints `value` to `to`: only the chain (`NexusAddresses.SYSTEM`), for units Core
    /// moved into the escrow. Never reverts for the chain.
    function mint(address to, uint256 value) external {
        if (msg.sender != NexusAddresses.SYSTEM) revert NotSystem(msg.sender);
        totalSupply += value;
        unchecked {
            balanceOf[to] += value;
        }
        emit Transfer(address(0), to, value);
    }

    function _transfer(address from, address to, uint256 value) private {
        if (from == address(0)) revert ERC20InvalidSender(address(0));
        if (to == address(0)) revert ERC20InvalidReceiver(address(0));
        uint256 held = balanceOf[from];
        if (held < value) revert ERC20InsufficientBalance(from, held, value);
        unchecked {
            balanceOf[from] = held - value;
            balanceOf[to] += value;
        }
        emit Transfer(from, to, value);
    }
}
