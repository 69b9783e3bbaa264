//! Core asset tokens: the ERC-20 view of each Core spot asset (docs/evm.md, "Core assets as
//! ERC-20 tokens").
//!
//! The contract is `evm-bridge/contracts/nexus/CoreToken.sol`, compiled by `build.js` into
//! `CoreToken.json`, whose runtime code the genesis puts at [`system::token_address`] of
//! every asset with a [`TokenSpec`], with the name, symbol and decimals written into its
//! storage. The chain mints through a system transaction calling `mint(to, value)`
//! ([`crate::actions::Mint`]); the token burns in `depositToCore(units)`, which calls
//! CoreWriter's `assetToCore(user, units)`.

use crate::system::{self, abi::*, selector};
use alloy_primitives::{hex, keccak256, Address, Bytes, U256};
use engine::AssetId;

/// The compiled contract (ABI, runtime code, storage layout), as `build.js` writes it.
pub const FIXTURE: &str = include_str!("../../evm-bridge/contracts/nexus/CoreToken.json");

/// Storage slot of the `balanceOf` mapping.
pub const BALANCES_SLOT: u64 = 0;
/// Storage slot of the `allowance` mapping.
pub const ALLOWANCES_SLOT: u64 = 1;
/// Storage slot of `totalSupply`.
pub const TOTAL_SUPPLY_SLOT: u64 = 2;
/// Storage slot of `name`.
pub const NAME_SLOT: u64 = 3;
/// Storage slot of `symbol`.
pub const SYMBOL_SLOT: u64 = 4;
/// Storage slot of `decimals`.
pub const DECIMALS_SLOT: u64 = 5;

/// The chain's mint function (only the system sender may call it).
pub const MINT: &str = "mint(address,uint256)";
/// The token's burn-and-bridge function.
pub const DEPOSIT_TO_CORE: &str = "depositToCore(uint64)";

/// The token of one Core asset at genesis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSpec {
    /// The Core asset.
    pub asset: AssetId,
    /// ERC-20 `name`.
    pub name: String,
    /// ERC-20 `symbol`.
    pub symbol: String,
    /// ERC-20 `decimals`: the asset's (one token base unit is one Core unit).
    pub decimals: u8,
}

impl TokenSpec {
    /// The token of `asset` when its genesis gives no name: `Core asset <id>`, `CORE<id>`,
    /// 0 decimals.
    pub fn unnamed(asset: AssetId) -> TokenSpec {
        TokenSpec {
            asset,
            name: format!("Core asset {asset}"),
            symbol: format!("CORE{asset}"),
            decimals: 0,
        }
    }

    /// The token's address.
    pub fn address(&self) -> Address {
        system::token_address(self.asset)
    }

    /// The storage the genesis writes: `name`, `symbol` and `decimals` (non-zero slots).
    pub fn genesis_storage(&self) -> Vec<(U256, U256)> {
        let mut slots = string_slots(NAME_SLOT, &self.name);
        slots.extend(string_slots(SYMBOL_SLOT, &self.symbol));
        if self.decimals != 0 {
            slots.push((U256::from(DECIMALS_SLOT), U256::from(self.decimals)));
        }
        slots.retain(|(_, value)| !value.is_zero());
        slots
    }
}

/// The token contract's runtime code, from [`FIXTURE`].
pub fn runtime_code() -> Bytes {
    let key = "\"deployedBytecode\": \"0x";
    let start = FIXTURE.find(key).expect("the fixture has runtime code") + key.len();
    let end = start + FIXTURE[start..].find('"').expect("a JSON string");
    Bytes::from(hex::decode(&FIXTURE[start..end]).expect("hex runtime code"))
}

/// Solidity's storage of a `string` at `slot`: up to 31 bytes in the slot itself (left
/// aligned, `2 * len` in the low byte); longer, `2 * len + 1` in the slot and the bytes in
/// 32-byte words from `keccak256(slot)`.
pub fn string_slots(slot: u64, text: &str) -> Vec<(U256, U256)> {
    let bytes = text.as_bytes();
    let slot = U256::from(slot);
    if bytes.len() < 32 {
        let mut word = [0u8; 32];
        word[..bytes.len()].copy_from_slice(bytes);
        word[31] = 2 * bytes.len() as u8;
        return vec![(slot, U256::from_be_bytes(word))];
    }
    let mut slots = vec![(slot, U256::from(2 * bytes.len() + 1))];
    let base = U256::from_be_bytes(keccak256(slot.to_be_bytes::<32>()).0);
    for (i, chunk) in bytes.chunks(32).enumerate() {
        let mut word = [0u8; 32];
        word[..chunk.len()].copy_from_slice(chunk);
        slots.push((base + U256::from(i), U256::from_be_bytes(word)));
    }
    slots
}

/// The storage slot of `balanceOf[owner]`.
pub fn balance_slot(owner: Address) -> U256 {
    mapping_slot(&word_address(owner), U256::from(BALANCES_SLOT))
}

/// The storage slot of `allowance[owner][spender]`.
pub fn allowance_slot(owner: Address, spender: Address) -> U256 {
    let inner = mapping_slot(&word_address(owner), U256::from(ALLOWANCES_SLOT));
    mapping_slot(&word_address(spender), inner)
}

fn mapping_slot(key: &[u8; 32], slot: U256) -> U256 {
    let mut preimage = [0u8; 64];
    preimage[..32].copy_from_slice(key);
    preimage[32..].copy_from_slice(&slot.to_be_bytes::<32>());
    U256::from_be_bytes(keccak256(preimage).0)
}

/// The calldata of `mint(to, value)`.
pub fn mint_calldata(to: Address, value: u64) -> Vec<u8> {
    let mut out = selector(MINT).to_vec();
    out.extend_from_slice(&word_address(to));
    out.extend_from_slice(&word_u64(value));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_stored_as_solidity_stores_them() {
        let short = string_slots(3, "BASE");
        let mut word = [0u8; 32];
        word[..4].copy_from_slice(b"BASE");
        word[31] = 8;
        assert_eq!(short, vec![(U256::from(3), U256::from_be_bytes(word))]);
        let text = "a name that is longer than thirty-two bytes";
        let long = string_slots(4, text);
        assert_eq!(long.len(), 3);
        assert_eq!(long[0], (U256::from(4), U256::from(2 * text.len() + 1)));
        let base = U256::from_be_bytes(keccak256(U256::from(4).to_be_bytes::<32>()).0);
        assert_eq!(long[2].0, base + U256::from(1));
        assert_eq!(&long[1].1.to_be_bytes::<32>()[..], &text.as_bytes()[..32]);
    }

    #[test]
    fn the_fixture_matches_the_slots_used_here() {
        for (label, slot) in [
            ("balanceOf", BALANCES_SLOT),
            ("allowance", ALLOWANCES_SLOT),
            ("totalSupply", TOTAL_SUPPLY_SLOT),
            ("name", NAME_SLOT),
            ("symbol", SYMBOL_SLOT),
            ("decimals", DECIMALS_SLOT),
        ] {
            let entry = format!("\"label\": \"{label}\",\n      \"slot\": \"{slot}\",");
            assert!(FIXTURE.contains(&entry), "{label} at slot {slot}");
        }
        assert!(runtime_code().len() > 1000);
    }
}
