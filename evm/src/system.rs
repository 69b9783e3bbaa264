//! Fixed addresses, the EVM-address to Core-account mapping, gas constants and the small
//! ABI helpers the precompiles and the system contract share (docs/evm.md).

use alloy_primitives::{address, keccak256, Address, B256, U256};
use engine::{AccountId, AssetId};

/// Read precompile: the Core block height the EVM block sees. Input: empty.
/// Output: `(uint64 height)`.
pub const CORE_BLOCK: Address = address!("0000000000000000000000000000000000000800");
/// Read precompile: a Core spot balance. Input: `abi.encode(address user, uint32 asset)`.
/// Output: `(int64 total, int64 locked)`, zeros for an unknown account or asset.
pub const BALANCE: Address = address!("0000000000000000000000000000000000000801");
/// Read precompile: a perp position. Input: `abi.encode(address user, uint32 market)`.
/// Output: `(int64 size, int256 openNotional, int256 unrealizedPnl, int256 unsettledFunding,
/// uint32 leverage, bool isolated, int64 isolatedMargin)`, zeros when there is none.
pub const POSITION: Address = address!("0000000000000000000000000000000000000802");
/// Read precompile: best bid and offer. Input: `abi.encode(uint32 market)`.
/// Output: `(int64 bidPrice, int64 bidLots, int64 askPrice, int64 askLots)`, 0 for an empty
/// side or an unknown market.
pub const BBO: Address = address!("0000000000000000000000000000000000000803");
/// Read precompile: perp prices. Input: `abi.encode(uint32 market)`.
/// Output: `(int64 mark, int64 oracle, int64 lastTrade)`, zeros for a spot or unknown market.
pub const PRICES: Address = address!("0000000000000000000000000000000000000804");
/// Read precompile: a user's open orders in one market. Input: `abi.encode(address user,
/// uint32 market)`. Output: `(uint64 oid, bool isBuy, int64 price, int64 remaining)[]`,
/// best price first, at most [`MAX_OPEN_ORDERS_RETURNED`].
pub const OPEN_ORDERS: Address = address!("0000000000000000000000000000000000000805");
/// Read precompile: the Core account id of an address. Input: `abi.encode(address)`.
/// Output: `(uint64 account)`.
pub const CORE_ACCOUNT: Address = address!("0000000000000000000000000000000000000806");
/// Read precompile: perp cross collateral. Input: `abi.encode(address user)`.
/// Output: `(int64 collateral, int64 orderMargin)`.
pub const PERP_COLLATERAL: Address = address!("0000000000000000000000000000000000000807");

/// Every read precompile, in address order.
pub const READ_PRECOMPILES: [Address; 8] = [
    CORE_BLOCK,
    BALANCE,
    POSITION,
    BBO,
    PRICES,
    OPEN_ORDERS,
    CORE_ACCOUNT,
    PERP_COLLATERAL,
];

/// The CoreWriter system contract: contracts and accounts call it to send actions to Core.
/// It is served by the precompile provider (so it can validate and charge gas) and writes
/// only through a journaled log, so a reverted transaction leaves no action behind.
pub const CORE_WRITER: Address = address!("3333333333333333333333333333333333333333");

/// The first Core asset token address: the ERC-20 of Core asset `a` is at `TOKEN_BASE + a`
/// ([`token_address`]; docs/evm.md, "Core assets as ERC-20 tokens").
pub const TOKEN_BASE: Address = address!("2000000000000000000000000000000000000000");

/// The Core account that holds, for every Core asset with a token, the units its tokens
/// stand for: `Core balance of the escrow == totalSupply of the token` once the deposits in
/// flight have run. No key signs for it and no EVM address may act as it.
pub const TOKEN_ESCROW_ACCOUNT: AccountId = u64::MAX - 1;

/// Gas limit of each system transaction minting a Core asset token (Core -> EVM).
pub const MINT_GAS_LIMIT: u64 = 100_000;

/// The address of Core asset `asset`'s ERC-20 token: `TOKEN_BASE + asset`.
pub fn token_address(asset: AssetId) -> Address {
    let mut bytes = TOKEN_BASE.0 .0;
    bytes[16..].copy_from_slice(&asset.to_be_bytes());
    Address::from(bytes)
}

/// The Core asset whose token address `address` is, if it is one (the inverse of
/// [`token_address`]).
pub fn token_asset(address: Address) -> Option<AssetId> {
    let bytes = address.0 .0;
    (bytes[0] == 0x20 && bytes[1..16].iter().all(|&b| b == 0))
        .then(|| AssetId::from_be_bytes(bytes[16..].try_into().expect("4 bytes")))
}

/// The sender of system transactions (Core -> EVM callbacks), as in EIP-4788.
pub const SYSTEM_ADDRESS: Address = address!("fffffffffffffffffffffffffffffffffffffffe");

/// Code placed at every precompile address at genesis so that `extcodesize > 0` (Solidity
/// checks it before calls without return data). Never executed: the precompile answers.
pub const PRECOMPILE_MARKER_CODE: [u8; 1] = [0xfe];

/// Largest number of orders [`OPEN_ORDERS`] returns.
pub const MAX_OPEN_ORDERS_RETURNED: usize = 256;

/// Gas of every read precompile call.
pub const READ_BASE_GAS: u64 = 1_000;
/// Extra gas of [`OPEN_ORDERS`] per order of the market's book it scans.
pub const READ_PER_ORDER_GAS: u64 = 50;

/// Cross-domain message cost of every CoreWriter action (the log, queueing, and delivery
/// of its result callback), on top of the action's Core cost.
pub const CROSS_MESSAGE_GAS: u64 = 5_000;
/// Cross-domain sync cost per byte of action calldata.
pub const CROSS_BYTE_GAS: u64 = 16;

/// Gas limit of each Core -> EVM callback system transaction.
pub const CALLBACK_GAS_LIMIT: u64 = 300_000;
/// Most callbacks delivered in one EVM block; the rest wait for the next (FIFO).
pub const MAX_CALLBACKS_PER_BLOCK: usize = 512;
/// The share of every block's gas kept for user transactions: callbacks are delivered only
/// while `cumulative gas + CALLBACK_GAS_LIMIT <= block gas limit - limit / this`, so
/// callbacks can never fill a block (half of it stays for users).
pub const USER_GAS_RESERVE_DIVISOR: u64 = 2;

/// The Core account id of an EVM address: the low 8 bytes of `keccak256(address)`, read
/// big-endian, with the top bit set. Deterministic and registry-free; the bridge refuses
/// the reserved id `INSURANCE_ACCOUNT` and records the first address seen for each id,
/// refusing a colliding second one. The top bit keeps these ids apart from those of ed25519
/// keys (`transactions::account_id_of`, top bit clear): no EVM address can be ground to the
/// account of a key, whose funds the bridge does not know to guard.
pub fn core_account(address: Address) -> AccountId {
    let hash = keccak256(address.as_slice());
    u64::from_be_bytes(hash[24..32].try_into().expect("8 bytes")) | EVM_ACCOUNT_BIT
}

/// The bit every EVM address's Core account id has set, and no ed25519 key's.
pub const EVM_ACCOUNT_BIT: AccountId = 1 << 63;

/// The 4-byte selector of a Solidity function signature.
pub fn selector(signature: &str) -> [u8; 4] {
    keccak256(signature.as_bytes())[..4]
        .try_into()
        .expect("4 bytes")
}

/// `keccak256` of an event signature: its topic 0.
pub fn event_topic(signature: &str) -> B256 {
    keccak256(signature.as_bytes())
}

/// ABI words: a tiny encoder and decoder for static arguments.
pub mod abi {
    use super::*;

    /// A 32-byte word holding an unsigned integer.
    pub fn word_u64(value: u64) -> [u8; 32] {
        U256::from(value).to_be_bytes()
    }

    /// A 32-byte word holding a signed integer (two's complement, sign-extended).
    pub fn word_i128(value: i128) -> [u8; 32] {
        let fill = if value < 0 { 0xff } else { 0 };
        let mut out = [fill; 32];
        out[16..].copy_from_slice(&value.to_be_bytes());
        out
    }

    /// A 32-byte word holding an address (left-padded).
    pub fn word_address(address: Address) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[12..].copy_from_slice(address.as_slice());
        out
    }

    /// A 32-byte word holding a bool.
    pub fn word_bool(value: bool) -> [u8; 32] {
        word_u64(value as u64)
    }

    /// `Error(string)` revert data, as Solidity's `revert("...")` produces.
    pub fn error_string(message: &str) -> Vec<u8> {
        let mut out = selector("Error(string)").to_vec();
        out.extend_from_slice(&word_u64(32));
        out.extend_from_slice(&word_u64(message.len() as u64));
        out.extend_from_slice(message.as_bytes());
        out.resize(4 + 64 + message.len().div_ceil(32) * 32, 0);
        out
    }

    /// Reads static ABI words from calldata; every read checks the value's range.
    pub struct Words<'a> {
        data: &'a [u8],
        at: usize,
    }

    impl<'a> Words<'a> {
        /// Words of `data` (no selector).
        pub fn new(data: &'a [u8]) -> Self {
            Words { data, at: 0 }
        }

        fn next(&mut self) -> Result<&'a [u8; 32], String> {
            let word = self
                .data
                .get(self.at..self.at + 32)
                .ok_or_else(|| format!("argument {} missing", self.at / 32))?;
            self.at += 32;
            Ok(word.try_into().expect("32 bytes"))
        }

        /// Checks that every word was read and nothing trails.
        pub fn finish(&self) -> Result<(), String> {
            if self.at == self.data.len() {
                Ok(())
            } else {
                Err(format!(
                    "expected {} bytes of arguments, got {}",
                    self.at,
                    self.data.len()
                ))
            }
        }

        /// An unsigned integer of at most `bits` bits.
        pub fn uint(&mut self, bits: u32) -> Result<u64, String> {
            let index = self.at / 32;
            let word = U256::from_be_bytes(*self.next()?);
            if word.bit_len() > bits as usize {
                return Err(format!("argument {index} does not fit in uint{bits}"));
            }
            Ok(word.to::<u64>())
        }

        /// A signed integer that must fit in i64 (sign-extended word).
        pub fn int64(&mut self) -> Result<i64, String> {
            let index = self.at / 32;
            let word = self.next()?;
            let fill = if word[24] & 0x80 != 0 { 0xff } else { 0 };
            if word[..24].iter().any(|&b| b != fill) {
                return Err(format!("argument {index} does not fit in int64"));
            }
            Ok(i64::from_be_bytes(word[24..].try_into().expect("8 bytes")))
        }

        /// A bool (0 or 1).
        pub fn boolean(&mut self) -> Result<bool, String> {
            Ok(self.uint(1)? == 1)
        }

        /// An address (upper 12 bytes zero).
        pub fn address(&mut self) -> Result<Address, String> {
            let index = self.at / 32;
            let word = self.next()?;
            if word[..12].iter().any(|&b| b != 0) {
                return Err(format!("argument {index} is not an address"));
            }
            Ok(Address::from_slice(&word[12..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::abi::*;
    use super::*;

    #[test]
    fn account_mapping_is_low_8_bytes_of_keccak_with_the_top_bit_set() {
        let a = address!("00000000000000000000000000000000000000aa");
        let hash = keccak256(a.as_slice());
        let expected = u64::from_be_bytes(hash[24..].try_into().unwrap()) | 1 << 63;
        assert_eq!(core_account(a), expected);
        assert_ne!(core_account(a), core_account(CORE_WRITER));
        // Every address's id has the top bit, which no ed25519 key's id has
        // (transactions::account_id_of clears it).
        for i in 0..1_000u64 {
            let address = Address::from_word(keccak256(i.to_le_bytes()));
            assert_eq!(core_account(address) & EVM_ACCOUNT_BIT, EVM_ACCOUNT_BIT);
        }
    }

    #[test]
    fn token_addresses_carry_the_asset_in_their_low_32_bits() {
        assert_eq!(
            token_address(2),
            address!("2000000000000000000000000000000000000002")
        );
        assert_eq!(
            token_address(0x0102_0304),
            address!("2000000000000000000000000000000001020304")
        );
        assert_eq!(token_asset(token_address(u32::MAX)), Some(u32::MAX));
        assert_eq!(token_asset(token_address(0)), Some(0));
        assert_eq!(token_asset(CORE_WRITER), None);
        assert_eq!(
            token_asset(address!("2000000000000000000000000000000100000000")),
            None,
            "above 32 bits"
        );
    }

    #[test]
    fn words_check_ranges() {
        let mut data = Vec::new();
        data.extend_from_slice(&word_u64(7));
        data.extend_from_slice(&word_i128(-5));
        data.extend_from_slice(&word_u64(1 << 40));
        let mut words = Words::new(&data);
        assert_eq!(words.uint(32), Ok(7));
        assert_eq!(words.int64(), Ok(-5));
        assert!(words.uint(32).is_err(), "2^40 is not a uint32");
        assert!(words.finish().is_ok());
        let mut short = Words::new(&data[..40]);
        assert!(short.uint(8).is_ok());
        assert!(short.uint(8).is_err());
    }

    #[test]
    fn error_string_matches_solidity_layout() {
        let data = error_string("bad");
        assert_eq!(&data[..4], &[0x08, 0xc3, 0x79, 0xa0]);
        assert_eq!(data.len(), 4 + 32 + 32 + 32);
        assert_eq!(&data[68..71], b"bad");
    }
}
