//! Binary encoding of engine commands, as stored in write-ahead-log blocks.
//!
//! Every command is a tag byte followed by fixed-width little-endian fields:
//!
//! | tag | command | fields |
//! |---|---|---|
//! | 1 | CreateAsset | asset u32 |
//! | 2 | CreateMarket | market u32, base u32, quote u32, base_units_per_lot i64, quote_units_per_tick_lot i64, min_lots i64, max_price_ticks i64, maker_fee_bps i32, taker_fee_bps i32 |
//! | 3 | Deposit | account u64, asset u32, amount i64 |
//! | 4 | Withdraw | account u64, asset u32, amount i64 |
//! | 5 | Place | account u64, market u32, oid u64, side u8 (0 buy, 1 sell), has_price u8, price i64, qty i64, tif u8 (0 gtc, 1 ioc, 2 fok, 3 alo), stp u8 (0 cancel_maker, 1 cancel_taker, 2 cancel_both; bit 7 set: reduce-only) |
//! | 6 | Cancel | account u64, market u32, oid u64 |
//! | 7 | CancelAll | account u64, market u32 |
//! | 8 | Modify | account u64, market u32, oid u64, price i64, qty i64 |
//! | 9 | CreatePerpMarket | `PerpSpec::to_le_bytes` (market u32, collateral u32, quote_units_per_tick_lot i64, min_lots i64, max_price_ticks i64, maker_fee_bps i32, taker_fee_bps i32, max_leverage u32, 4 x (notional_up_to i64, imr_ppb u32, mmr_ppb u32), tier_count u8, open_interest_cap_lots i64, price_band_ppb u32, interest_ppb i32, funding_cap_ppb u32, impact_notional i64, liquidation_chunk_notional i64, liquidation_fee_ppb u32) |
//! | 10 | TransferCollateral | account u64, amount i64 |
//! | 11 | SetLeverage | account u64, market u32, leverage u32, isolated u8 (0 or 1) |
//! | 12 | IsolatedMargin | account u64, market u32, amount i64 |
//! | 13 | Oracle | market u32, count u8, then 8 x price i64 (unused slots 0) |
//! | 14 | Funding | market u32 |

use engine::{ByteCode, Command, MarketSpec, NewOrder, PerpSpec, MAX_ORACLE_SOURCES};

/// Bit of the Place `stp` byte that marks a reduce-only order.
const REDUCE_ONLY_BIT: u8 = 0x80;

/// Why bytes did not decode to a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes ended inside a command.
    #[error("input ends inside a command")]
    Truncated,
    /// The tag byte names no command.
    #[error("unknown command tag {0}")]
    UnknownTag(u8),
    /// An enumerated field holds a value outside its range.
    #[error("field {field} has invalid value {value}")]
    BadField {
        /// Which field.
        field: &'static str,
        /// The value found.
        value: u8,
    },
}

/// Appends the encoding of `command` to `out`.
pub fn encode_command(command: &Command, out: &mut Vec<u8>) {
    match *command {
        Command::CreateAsset { asset } => {
            out.push(1);
            out.extend_from_slice(&asset.to_le_bytes());
        }
        Command::CreateMarket(spec) => {
            out.push(2);
            out.extend_from_slice(&spec.to_le_bytes());
        }
        Command::Deposit {
            account,
            asset,
            amount,
        }
        | Command::Withdraw {
            account,
            asset,
            amount,
        } => {
            out.push(if matches!(command, Command::Deposit { .. }) {
                3
            } else {
                4
            });
            out.extend_from_slice(&account.to_le_bytes());
            out.extend_from_slice(&asset.to_le_bytes());
            out.extend_from_slice(&amount.to_le_bytes());
        }
        Command::Place(order) => {
            out.push(5);
            out.extend_from_slice(&order.account.to_le_bytes());
            out.extend_from_slice(&order.market.to_le_bytes());
            out.extend_from_slice(&order.oid.to_le_bytes());
            out.push(order.side.code());
            out.push(order.price.is_some() as u8);
            out.extend_from_slice(&order.price.unwrap_or(0).to_le_bytes());
            out.extend_from_slice(&order.qty.to_le_bytes());
            out.push(order.tif.code());
            out.push(
                order.stp.code()
                    | if order.reduce_only {
                        REDUCE_ONLY_BIT
                    } else {
                        0
                    },
            );
        }
        Command::Cancel {
            account,
            market,
            oid,
        } => {
            out.push(6);
            out.extend_from_slice(&account.to_le_bytes());
            out.extend_from_slice(&market.to_le_bytes());
            out.extend_from_slice(&oid.to_le_bytes());
        }
        Command::CancelAll { account, market } => {
            out.push(7);
            out.extend_from_slice(&account.to_le_bytes());
            out.extend_from_slice(&market.to_le_bytes());
        }
        Command::Modify {
            account,
            market,
            oid,
            price,
            qty,
        } => {
            out.push(8);
            out.extend_from_slice(&account.to_le_bytes());
            out.extend_from_slice(&market.to_le_bytes());
            out.extend_from_slice(&oid.to_le_bytes());
            out.extend_from_slice(&price.to_le_bytes());
            out.extend_from_slice(&qty.to_le_bytes());
        }
        Command::CreatePerpMarket(ref spec) => {
            out.push(9);
            out.extend_from_slice(&spec.to_le_bytes());
        }
        Command::TransferCollateral { account, amount } => {
            out.push(10);
            out.extend_from_slice(&account.to_le_bytes());
            out.extend_from_slice(&amount.to_le_bytes());
        }
        Command::SetLeverage {
            account,
            market,
            leverage,
            isolated,
        } => {
            out.push(11);
            out.extend_from_slice(&account.to_le_bytes());
            out.extend_from_slice(&market.to_le_bytes());
            out.extend_from_slice(&leverage.to_le_bytes());
            out.push(isolated as u8);
        }
        Command::IsolatedMargin {
            account,
            market,
            amount,
        } => {
            out.push(12);
            out.extend_from_slice(&account.to_le_bytes());
            out.extend_from_slice(&market.to_le_bytes());
            out.extend_from_slice(&amount.to_le_bytes());
        }
        Command::Oracle {
            market,
            ref prices,
            count,
        } => {
            out.push(13);
            out.extend_from_slice(&market.to_le_bytes());
            out.push(count);
            for price in prices.iter() {
                out.extend_from_slice(&price.to_le_bytes());
            }
        }
        Command::Funding { market } => {
            out.push(14);
            out.extend_from_slice(&market.to_le_bytes());
        }
    }
}

/// A cursor over encoded bytes.
pub(crate) struct Cursor<'a> {
    pub(crate) bytes: &'a [u8],
}

impl Cursor<'_> {
    pub(crate) fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        if self.bytes.len() < N {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        Ok(head.try_into().expect("split at N"))
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.take()?))
    }
}

/// Reads a one-byte enumeration code (`engine::ByteCode`).
fn enum_field<T: ByteCode>(cursor: &mut Cursor<'_>, field: &'static str) -> Result<T, DecodeError> {
    let value = cursor.u8()?;
    T::from_code(value).ok_or(DecodeError::BadField { field, value })
}

/// Decodes one command from the front of `cursor`.
pub(crate) fn decode_command(cursor: &mut Cursor<'_>) -> Result<Command, DecodeError> {
    let tag = cursor.u8()?;
    Ok(match tag {
        1 => Command::CreateAsset {
            asset: cursor.u32()?,
        },
        2 => Command::CreateMarket(MarketSpec::from_le_bytes(
            &cursor.take::<{ MarketSpec::ENCODED_LEN }>()?,
        )),
        3 | 4 => {
            let (account, asset, amount) = (cursor.u64()?, cursor.u32()?, cursor.i64()?);
            if tag == 3 {
                Command::Deposit {
                    account,
                    asset,
                    amount,
                }
            } else {
                Command::Withdraw {
                    account,
                    asset,
                    amount,
                }
            }
        }
        5 => {
            let account = cursor.u64()?;
            let market = cursor.u32()?;
            let oid = cursor.u64()?;
            let side = enum_field(cursor, "side")?;
            let has_price = cursor.u8()?;
            let price = cursor.i64()?;
            let price = match has_price {
                0 => None,
                1 => Some(price),
                value => {
                    return Err(DecodeError::BadField {
                        field: "has_price",
                        value,
                    })
                }
            };
            let qty = cursor.i64()?;
            let tif = enum_field(cursor, "tif")?;
            let stp_byte = cursor.u8()?;
            let reduce_only = stp_byte & REDUCE_ONLY_BIT != 0;
            let stp =
                ByteCode::from_code(stp_byte & !REDUCE_ONLY_BIT).ok_or(DecodeError::BadField {
                    field: "stp",
                    value: stp_byte,
                })?;
            Command::Place(NewOrder {
                account,
                market,
                oid,
                side,
                price,
                qty,
                tif,
                stp,
                reduce_only,
            })
        }
        6 => Command::Cancel {
            account: cursor.u64()?,
            market: cursor.u32()?,
            oid: cursor.u64()?,
        },
        7 => Command::CancelAll {
            account: cursor.u64()?,
            market: cursor.u32()?,
        },
        8 => Command::Modify {
            account: cursor.u64()?,
            market: cursor.u32()?,
            oid: cursor.u64()?,
            price: cursor.i64()?,
            qty: cursor.i64()?,
        },
        9 => Command::CreatePerpMarket(Box::new(PerpSpec::from_le_bytes(
            &cursor.take::<{ PerpSpec::ENCODED_LEN }>()?,
        ))),
        10 => Command::TransferCollateral {
            account: cursor.u64()?,
            amount: cursor.i64()?,
        },
        11 => Command::SetLeverage {
            account: cursor.u64()?,
            market: cursor.u32()?,
            leverage: cursor.u32()?,
            isolated: match cursor.u8()? {
                0 => false,
                1 => true,
                value => {
                    return Err(DecodeError::BadField {
                        field: "isolated",
                        value,
                    })
                }
            },
        },
        12 => Command::IsolatedMargin {
            account: cursor.u64()?,
            market: cursor.u32()?,
            amount: cursor.i64()?,
        },
        13 => {
            let market = cursor.u32()?;
            let count = cursor.u8()?;
            let mut prices = [0; MAX_ORACLE_SOURCES];
            for price in &mut prices {
                *price = cursor.i64()?;
            }
            Command::Oracle {
                market,
                prices: Box::new(prices),
                count,
            }
        }
        14 => Command::Funding {
            market: cursor.u32()?,
        },
        other => return Err(DecodeError::UnknownTag(other)),
    })
}

/// Decodes exactly one command from `bytes`.
pub fn decode_command_exact(bytes: &[u8]) -> Result<Command, DecodeError> {
    let mut cursor = Cursor { bytes };
    let command = decode_command(&mut cursor)?;
    if !cursor.bytes.is_empty() {
        return Err(DecodeError::Truncated);
    }
    Ok(command)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use engine::{SelfTradePrevention, Side, TimeInForce};
    use proptest::prelude::*;

    /// Any engine command, including out-of-range values the engine would reject.
    /// Any perp command, including values the engine would reject.
    fn any_perp_command() -> impl Strategy<Value = Command> {
        let tier = any::<(i64, u32, u32)>().prop_map(|(notional_up_to, imr_ppb, mmr_ppb)| {
            engine::MarginTier {
                notional_up_to,
                imr_ppb,
                mmr_ppb,
            }
        });
        let spec = (
            any::<(u32, u32, i64, i64, i64, i32, i32, u32)>(),
            [tier.clone(), tier.clone(), tier.clone(), tier],
            any::<(u8, i64, u32, i32, u32, i64, i64, u32)>(),
        )
            .prop_map(|(a, tiers, b)| PerpSpec {
                market: a.0,
                collateral: a.1,
                quote_units_per_tick_lot: a.2,
                min_lots: a.3,
                max_price_ticks: a.4,
                maker_fee_bps: a.5,
                taker_fee_bps: a.6,
                max_leverage: a.7,
                tiers,
                tier_count: b.0,
                open_interest_cap_lots: b.1,
                price_band_ppb: b.2,
                interest_ppb: b.3,
                funding_cap_ppb: b.4,
                impact_notional: b.5,
                liquidation_chunk_notional: b.6,
                liquidation_fee_ppb: b.7,
            });
        prop_oneof![
            spec.prop_map(|s| Command::CreatePerpMarket(Box::new(s))),
            any::<(u64, i64)>()
                .prop_map(|(account, amount)| Command::TransferCollateral { account, amount }),
            any::<(u64, u32, u32, bool)>().prop_map(|(account, market, leverage, isolated)| {
                Command::SetLeverage {
                    account,
                    market,
                    leverage,
                    isolated,
                }
            }),
            any::<(u64, u32, i64)>().prop_map(|(account, market, amount)| {
                Command::IsolatedMargin {
                    account,
                    market,
                    amount,
                }
            }),
            (
                any::<u32>(),
                any::<[i64; MAX_ORACLE_SOURCES]>(),
                any::<u8>()
            )
                .prop_map(|(market, prices, count)| Command::Oracle {
                    market,
                    prices: Box::new(prices),
                    count,
                }),
            any::<u32>().prop_map(|market| Command::Funding { market }),
        ]
    }

    pub(crate) fn any_command() -> impl Strategy<Value = Command> {
        let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
        let tif = prop_oneof![
            Just(TimeInForce::Gtc),
            Just(TimeInForce::Ioc),
            Just(TimeInForce::Fok),
            Just(TimeInForce::Alo)
        ];
        let stp = prop_oneof![
            Just(SelfTradePrevention::CancelMaker),
            Just(SelfTradePrevention::CancelTaker),
            Just(SelfTradePrevention::CancelBoth)
        ];
        prop_oneof![
            any::<u32>().prop_map(|asset| Command::CreateAsset { asset }),
            (any::<[u32; 3]>(), any::<[i64; 4]>(), any::<[i32; 2]>()).prop_map(|(a, b, c)| {
                Command::CreateMarket(MarketSpec {
                    market: a[0],
                    base: a[1],
                    quote: a[2],
                    base_units_per_lot: b[0],
                    quote_units_per_tick_lot: b[1],
                    min_lots: b[2],
                    max_price_ticks: b[3],
                    maker_fee_bps: c[0],
                    taker_fee_bps: c[1],
                })
            }),
            (any::<u64>(), any::<u32>(), any::<i64>(), any::<bool>()).prop_map(
                |(account, asset, amount, deposit)| if deposit {
                    Command::Deposit {
                        account,
                        asset,
                        amount,
                    }
                } else {
                    Command::Withdraw {
                        account,
                        asset,
                        amount,
                    }
                }
            ),
            (
                any::<(u64, u32, u64)>(),
                side,
                any::<Option<i64>>(),
                any::<i64>(),
                tif,
                stp,
                any::<bool>()
            )
                .prop_map(
                    |((account, market, oid), side, price, qty, tif, stp, reduce_only)| {
                        Command::Place(NewOrder {
                            account,
                            market,
                            oid,
                            side,
                            price,
                            qty,
                            tif,
                            stp,
                            reduce_only,
                        })
                    }
                ),
            any::<(u64, u32, u64)>().prop_map(|(account, market, oid)| Command::Cancel {
                account,
                market,
                oid
            }),
            any::<(u64, u32)>()
                .prop_map(|(account, market)| Command::CancelAll { account, market }),
            any::<(u64, u32, u64, i64, i64)>().prop_map(|(account, market, oid, price, qty)| {
                Command::Modify {
                    account,
                    market,
                    oid,
                    price,
                    qty,
                }
            }),
            any_perp_command(),
        ]
    }

    proptest! {
        #[test]
        fn every_command_round_trips(command in any_command()) {
            let mut bytes = Vec::new();
            encode_command(&command, &mut bytes);
            prop_assert_eq!(decode_command_exact(&bytes), Ok(command));
            // Every strict prefix is refused, never misread.
            for cut in 0..bytes.len() {
                prop_assert!(decode_command_exact(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_command_exact(&bytes);
        }
    }

    #[test]
    fn bad_enum_values_are_named() {
        let mut bytes = Vec::new();
        encode_command(
            &Command::Place(NewOrder {
                account: 1,
                market: 2,
                oid: 3,
                side: Side::Buy,
                price: Some(5),
                qty: 1,
                tif: TimeInForce::Gtc,
                stp: SelfTradePrevention::CancelMaker,
                reduce_only: false,
            }),
            &mut bytes,
        );
        bytes[21] = 9; // side
        assert_eq!(
            decode_command_exact(&bytes),
            Err(DecodeError::BadField {
                field: "side",
                value: 9
            })
        );
        // The stp byte: bit 7 is reduce-only, the rest must be a known mode.
        let last = bytes.len() - 1;
        bytes[21] = 0;
        bytes[last] = 0x81;
        match decode_command_exact(&bytes) {
            Ok(Command::Place(order)) => {
                assert!(order.reduce_only);
                assert_eq!(order.stp, SelfTradePrevention::CancelTaker);
            }
            other => panic!("{other:?}"),
        }
        bytes[last] = 0x83;
        assert_eq!(
            decode_command_exact(&bytes),
            Err(DecodeError::BadField {
                field: "stp",
                value: 0x83
            })
        );
        let mut bytes = Vec::new();
        encode_command(
            &Command::SetLeverage {
                account: 1,
                market: 2,
                leverage: 3,
                isolated: true,
            },
            &mut bytes,
        );
        *bytes.last_mut().unwrap() = 2;
        assert_eq!(
            decode_command_exact(&bytes),
            Err(DecodeError::BadField {
                field: "isolated",
                value: 2
            })
        );
        assert_eq!(
            decode_command_exact(&[42]),
            Err(DecodeError::UnknownTag(42))
        );
    }
}
