//! A small Core genesis and a funded developer account, for the tests that drive
//! [`crate::chain::Chain`].

use alloy_primitives::{address, Address, U256};
use engine::{Command, Engine, EngineConfig, Event, MarketSpec};

/// The native token's Core asset (quote of the devnet market).
pub const NATIVE_ASSET: u32 = 1;
/// A base asset.
pub const BASE_ASSET: u32 = 2;
/// The devnet spot market: base 2 / quote 1, 1 unit per lot, 1 quote unit per tick-lot.
pub const MARKET: u32 = 7;
/// The well-known development key's address (private key
/// `0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80`, public test key:
/// never use it for anything of value).
pub const DEV_ACCOUNT: Address = address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266");

/// Core genesis: the two assets and the market.
pub fn engine() -> Engine {
    let mut engine = Engine::new(EngineConfig {
        max_resting_orders: 1 << 16,
        max_open_orders_per_account: 1_000,
    });
    let mut out = Vec::new();
    for command in [
        Command::CreateAsset {
            asset: NATIVE_ASSET,
        },
        Command::CreateAsset { asset: BASE_ASSET },
        Command::CreateMarket(MarketSpec {
            market: MARKET,
            base: BASE_ASSET,
            quote: NATIVE_ASSET,
            base_units_per_lot: 1,
            quote_units_per_tick_lot: 1,
            min_lots: 1,
            max_price_ticks: 1 << 20,
            maker_fee_bps: 0,
            taker_fee_bps: 0,
        }),
    ] {
        engine.step(&command, &mut out);
    }
    assert!(
        !out.iter().any(|e| matches!(e, Event::Rejected { .. })),
        "devnet genesis is valid"
    );
    engine
}

/// EVM genesis balances: 10,000 ether to [`DEV_ACCOUNT`].
pub fn alloc() -> Vec<(Address, U256)> {
    vec![(
        DEV_ACCOUNT,
        U256::from(10_000u64) * U256::from(10u64).pow(U256::from(18u64)),
    )]
}
