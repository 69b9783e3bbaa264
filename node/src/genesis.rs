//! Genesis: the registry (assets, markets) and opening balances every chain starts from.
//!
//! The configuration's `[genesis]` becomes JSON Lines commands in the replay format. They are
//! stored in the log's metadata (`meta/genesis`) and their engine commands form block 1, so
//! a log carries its own names: `nexus wal dump` prints these lines first, and `nexus replay`
//! of a dump reproduces the node's state exactly.

use engine::{ArrayLadder, Command, Engine, EngineConfig};
use json_lines::replay::{Output, Step, Translator};
use sequencer::{Block, Wal, WalError};
use serde_json::json;

use crate::config::Genesis;

/// Metadata key of the genesis lines in the log.
pub const GENESIS_META_KEY: &str = "genesis";

/// Why a genesis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// A genesis line was refused by the translator.
    #[error("genesis line {line} is invalid: {why}")]
    Invalid {
        /// 1-based line of the generated genesis.
        line: usize,
        /// The translator's answer.
        why: String,
    },
    /// The log was started from a different genesis.
    #[error(
        "the log in {data_dir} was started from a different genesis than this configuration's; \
         run with the original configuration, or use a new data_dir"
    )]
    Mismatch {
        /// The data folder.
        data_dir: String,
    },
    /// The stored genesis is not text.
    #[error("the genesis stored in the log is not UTF-8")]
    NotText,
    /// The log failed.
    #[error(transparent)]
    Wal(#[from] WalError),
}

/// The genesis as JSON Lines (one command per line, `\n`-terminated).
pub fn genesis_lines(genesis: &Genesis) -> String {
    let mut text = String::new();
    let mut push = |value: serde_json::Value| {
        text.push_str(&value.to_string());
        text.push('\n');
    };
    for asset in &genesis.assets {
        push(json!({"op": "asset", "asset": asset.name, "decimals": asset.decimals}));
    }
    for market in &genesis.markets {
        push(json!({
            "op": "market",
            "market": market.name,
            "base": market.base,
            "quote": market.quote,
            "tick": market.tick,
            "lot": market.lot,
            "min_qty": market.min_qty,
            "maker_fee_bps": market.maker_fee_bps,
            "taker_fee_bps": market.taker_fee_bps,
        }));
    }
    for market in &genesis.perp_markets {
        let mut line = serde_json::Map::new();
        line.insert("op".into(), "perp_market".into());
        for (key, value) in market {
            line.insert(key.clone(), toml_to_json(value));
        }
        push(serde_json::Value::Object(line));
    }
    for deposit in &genesis.deposits {
        push(json!({
            "op": "deposit",
            "account": deposit.account,
            "asset": deposit.asset,
            "amount": deposit.amount,
        }));
    }
    for transfer in &genesis.transfers {
        push(json!({
            "op": "transfer",
            "account": transfer.account,
            "amount": transfer.amount,
        }));
    }
    for oracle in &genesis.oracles {
        push(json!({"op": "oracle", "market": oracle.market, "prices": oracle.prices}));
    }
    text
}

/// A TOML value as JSON (dates, which no genesis field takes, become strings).
fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(text) => text.clone().into(),
        toml::Value::Integer(number) => (*number).into(),
        toml::Value::Float(number) => json!(number),
        toml::Value::Boolean(flag) => (*flag).into(),
        toml::Value::Datetime(date) => date.to_string().into(),
        toml::Value::Array(items) => items.iter().map(toml_to_json).collect(),
        toml::Value::Table(table) => table
            .iter()
            .map(|(key, value)| (key.clone(), toml_to_json(value)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

/// Runs genesis lines through a node translator: the translator that knows their names, and
/// the engine commands of block 1.
pub fn translate_genesis(lines: &str) -> Result<(Translator, Vec<Command>), GenesisError> {
    let mut translator = Translator::numbers_only();
    let mut commands = Vec::new();
    let mut outputs = Vec::new();
    for (index, line) in lines.lines().enumerate() {
        outputs.clear();
        for step in translator.line(index as u64 + 1, line, &mut outputs) {
            if let Step::Run { command, .. } = step {
                commands.push(command);
            }
        }
        if let Some(output) = outputs.first() {
            let why = match output {
                Output::Rejected { reason, detail, .. } => {
                    format!(
                        "{reason}{}",
                        detail
                            .as_deref()
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default()
                    )
                }
                Output::Error { detail, .. } => detail.clone(),
                other => format!("{other:?}"),
            };
            return Err(GenesisError::Invalid {
                line: index + 1,
                why,
            });
        }
    }
    Ok((translator, commands))
}

/// Makes sure the log holds `wanted` as its genesis (writing it and block 1 to a new log) and
/// returns the translator for its names.
pub fn ensure_genesis(wal: &Wal, wanted: &str, now_ns: u64) -> Result<Translator, GenesisError> {
    let stored = wal.meta(GENESIS_META_KEY)?;
    let lines = match stored {
        Some(bytes) => {
            let stored = String::from_utf8(bytes).map_err(|_| GenesisError::NotText)?;
            if stored != wanted {
                return Err(GenesisError::Mismatch {
                    data_dir: wal.path().display().to_string(),
                });
            }
            stored
        }
        None => {
            let (_, _) = translate_genesis(wanted)?;
            wal.put_meta(GENESIS_META_KEY, wanted.as_bytes())?;
            wanted.to_string()
        }
    };
    let (translator, commands) = translate_genesis(&lines)?;
    if wal.last_height()?.is_none() {
        // Record block 1's state root too, so recovery checks it like any other block.
        let mut engine = Engine::<ArrayLadder>::new(EngineConfig {
            max_resting_orders: 1,
            max_open_orders_per_account: 1,
        });
        let mut events = Vec::new();
        for command in &commands {
            engine.step(command, &mut events);
        }
        let root = engine.commit();
        let block = Block::seal(1, now_ns, 1, [0; 32], commands);
        wal.append_with_roots(std::slice::from_ref(&block), &[(1, root)])?;
    }
    Ok(translator)
}

/// The genesis lines stored in a log, if any.
pub fn stored_genesis(wal: &Wal) -> Result<Option<String>, GenesisError> {
    match wal.meta(GENESIS_META_KEY)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| GenesisError::NotText),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_specs_name_every_declared_asset_with_its_decimals_in_id_order() {
        let lines = [
            r#"{"op":"asset","asset":"QUOTE","decimals":6}"#,
            r#"{"op":"asset","asset":"BASE","decimals":2}"#,
        ]
        .join("\n");
        let (translator, _) = translate_genesis(&lines).expect("a genesis");
        let specs = translator.token_specs();
        let named: Vec<(&str, &str, u8)> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.symbol.as_str(), s.decimals))
            .collect();
        assert_eq!(named, [("QUOTE", "QUOTE", 6), ("BASE", "BASE", 2)]);
        assert!(specs[0].asset < specs[1].asset, "{specs:?}");
    }
}
