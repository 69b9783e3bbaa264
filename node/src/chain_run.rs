//! `nexus run`: a chain of one validator, from the node configuration (docs/node.md).
//!
//! The node is the same validator process `nexus devnet` starts four of
//! ([`crate::validator`]): mempool, NexusBFT, Core + EVM execution, snapshots, and the client
//! ports (JSON development port, binary order entry and market data, transaction port,
//! Ethereum JSON-RPC). This module only turns the configuration into that validator's chain
//! file and keys in the data folder:
//!
//! - `chain.toml`: the chain (id, genesis time, the genesis lines of `[genesis]`, this
//!   validator and its ports). Written at every start with the configured ports; the chain
//!   id, genesis time and genesis are kept from the first start, and a different `[genesis]`
//!   later is an error.
//! - `validator/`: the validator's key (random, made at the first start), safety file,
//!   block file and snapshots.
//! - `LOCK` and `validator/LOCK`: both taken before anything is written, so a second
//!   `nexus run` on the folder, or a `nexus validator` on `validator/`, exits at once.
//! - `dev-keys.txt`: the seeds of the development accounts (one per line, in order), and
//!   `dev-evm-key.txt`: the development EVM key. Derived from [`DEV_SEED`], so every
//!   `nexus run` has the same development accounts ([`dev_account_ids`]).
//!
//! A chain of one is a development chain: its JSON port signs for the development accounts,
//! and for `deposit` lines as the faucet and `oracle` lines as the feeder
//! ([`crate::load::DevRoles`]).

use std::path::{Path, PathBuf};

use consensus::types::Keypair;
use engine::AccountId;
use transactions::account_id_of;

use crate::config::NodeConfig;
use crate::genesis::{genesis_lines, translate_genesis};
use crate::load::{self, LoadSpec};
use crate::validator::{
    self, hex, read_config, unhex32, DevnetConfig, EngineLimits, HostError, TimeoutsMs,
    ValidatorEntry,
};

/// The chain file in the data folder.
pub const CHAIN_FILE: &str = "chain.toml";
/// The validator's folder in the data folder.
pub const VALIDATOR_DIR: &str = "validator";
/// The development account seeds, one hex line each.
pub const DEV_KEYS_FILE: &str = "dev-keys.txt";
/// The development EVM key (0x-prefixed hex).
pub const DEV_EVM_KEY_FILE: &str = "dev-evm-key.txt";
/// Seed of `nexus run`'s development keys: accounts, faucet, feeder and EVM key.
pub const DEV_SEED: u64 = 0;

/// The secp256k1 secret of the development EVM account of `nexus run` and `nexus-evm`: the
/// well-known public test key of anvil and Hardhat (address
/// `0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266`). Never use it for anything of value.
pub const DEV_EVM_SECRET: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// Which genesis a chain of one starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainGenesis {
    /// The configuration's `[genesis]` (`nexus run`): NexusEVM has no native Core asset.
    Configured,
    /// The devnet's (`nexus-evm`): market 0 `BASE-QUOTE` with `QUOTE` (asset 1) as
    /// NexusEVM's native token, so contracts deposit ether to Core and trade on the book;
    /// the development accounts funded ([`load::genesis_lines`]).
    EvmDevnet,
}

/// What [`prepare`] made ready.
#[derive(Debug)]
pub struct Prepared {
    /// The chain file.
    pub chain_file: PathBuf,
    /// The validator's data folder.
    pub validator_dir: PathBuf,
    /// The chain file's contents.
    pub chain: DevnetConfig,
}

/// The account ids of the first `count` development accounts of `nexus run` (at least one,
/// as the JSON port signs for at least one).
pub fn dev_account_ids(count: u64) -> Vec<AccountId> {
    (0..count.max(1))
        .map(|i| account_id_of(&load::account_key(DEV_SEED, i).verifying_key().to_bytes()))
        .collect()
}

/// Runs the chain of one for `node` (`nexus run`, `nexus-evm`): takes the locks of the data
/// folder and of its validator folder (which the validator keeps, so a `nexus validator`
/// on that folder is refused too), prepares them and runs the validator until SIGINT or
/// SIGTERM. `ready_hook` sees the `ready` line once it is printed.
pub fn run(
    name: &str,
    node: &NodeConfig,
    genesis: ChainGenesis,
    ready_hook: Option<fn(&serde_json::Value)>,
) -> std::process::ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("{name}: {e}");
        std::process::ExitCode::FAILURE
    };
    // Before the locks, which create the folder and its lock files.
    if let Err(e) = check_settings(node) {
        return fail(&e);
    }
    let _lock = match sequencer::DataDirLock::acquire(&node.data_dir) {
        Ok(lock) => lock,
        Err(e) => return fail(&e),
    };
    let validator_lock = match sequencer::DataDirLock::acquire(&node.data_dir.join(VALIDATOR_DIR)) {
        Ok(lock) => std::sync::Arc::new(lock),
        Err(e) => return fail(&e),
    };
    let prepared = match prepare(node, genesis) {
        Ok(prepared) => prepared,
        Err(e) => return fail(&e),
    };
    let mut ready_extra = serde_json::Map::new();
    let data_dir = node.data_dir.display().to_string();
    ready_extra.insert("data_dir".into(), data_dir.into());
    let dev_accounts = dev_account_ids(node.chain.dev_accounts);
    ready_extra.insert("dev_accounts".into(), serde_json::json!(dev_accounts));
    let args = validator::ValidatorArgs {
        config: prepared.chain_file,
        index: 0,
        data_dir: Some(prepared.validator_dir),
        byzantine_forge: false,
        byzantine_equivocate: false,
        byzantine_double_vote: false,
        byzantine_replay: false,
        byzantine_deposit: false,
        byzantine_forward_forged: false,
        test_slow_disk: None,
        safety_lost: false,
        peer_addrs: Vec::new(),
    };
    let options = validator::NodeOptions {
        ready_extra,
        quiet_blocks: true,
        stderr_events: matches!(node.log.level.as_str(), "info" | "debug" | "trace"),
        json_as_listen: true,
        ready_hook,
        data_dir_lock: Some(validator_lock),
    };
    validator::run_node(name, args, options)
}

/// Writes the chain file and keys for `node` into its data folder (see the module docs).
pub fn prepare(node: &NodeConfig, genesis: ChainGenesis) -> Result<Prepared, HostError> {
    let data_dir = &node.data_dir;
    check_settings(node)?;
    std::fs::create_dir_all(data_dir).map_err(io_error(data_dir))?;
    let genesis = match genesis {
        ChainGenesis::Configured => {
            let lines = genesis_lines(&node.genesis);
            translate_genesis(&lines).map_err(|e| HostError::Config(format!("[genesis]: {e}")))?;
            Some(lines)
        }
        ChainGenesis::EvmDevnet => None,
    };
    let chain_file = data_dir.join(CHAIN_FILE);
    let validator_dir = data_dir.join(VALIDATOR_DIR);
    let previous = previous_chain(&chain_file, &validator_dir)?;
    let key = validator_key(&validator_dir, previous.as_ref())?;
    let mut chain = DevnetConfig {
        chain_id: String::new(),
        genesis_time_ms: 0,
        order_seed: DEV_SEED,
        accounts: node.chain.dev_accounts,
        bulk: 1,
        resting_orders: 0,
        rate_per_s: 0,
        max_block_txs: node.chain.max_block_txs,
        max_block_bytes: 16 << 20,
        snapshot_every: node.chain.snapshot_every,
        state_sync: true,
        prune_keep_blocks: 0,
        certificates_in_memory: crate::validator::DEFAULT_CERTIFICATES_IN_MEMORY,
        json_max_line_bytes: node.ingress.max_line_bytes as u64,
        connection_rate: node.chain.connection_rate,
        account_rate: node.chain.account_rate,
        eth_history_blocks: eth_rpc::HISTORY_BLOCKS as u64,
        eth_state_blocks: node.chain.eth_state_blocks,
        load_start_unix_ns: 0,
        genesis,
        dev_roles: true,
        dev_evm_secret: Some(DEV_EVM_SECRET.to_string()),
        evm_load_accounts: 0,
        eth_dev_signing: true,
        empty_block_interval_ms: node.chain.empty_block_interval_ms,
        compact_proposals: true,
        funding_interval_s: node.perps.funding_interval_s,
        engine: Some(EngineLimits {
            max_resting_orders: node.engine.max_resting_orders,
            max_open_orders_per_account: node.engine.max_open_orders_per_account,
        }),
        timeouts: TimeoutsMs::default(),
        chain_params: Default::default(),
        validators: vec![ValidatorEntry {
            key: hex(&Keypair::from_seed(key).id().0),
            addr: node.chain.consensus_listen,
            tx_addr: node.chain.tx_listen,
            order_addr: Some(node.gateway.order_entry_listen),
            data_addr: Some(node.gateway.market_data_listen),
            json_addr: Some(node.ingress.listen),
            eth_addr: Some(node.chain.eth_listen),
            stake: 1,
        }],
    };
    (chain.chain_id, chain.genesis_time_ms) = chain_identity(previous, &chain, data_dir)?;
    let text = toml::to_string(&chain).map_err(|e| HostError::Config(e.to_string()))?;
    write_durably(&chain_file, text.as_bytes(), 0o644)?;
    write_dev_keys(data_dir, &chain)?;
    Ok(Prepared {
        chain_file,
        validator_dir,
        chain,
    })
}

/// Settings refused before anything is written: the JSON port signs for development keys,
/// so it listens on loopback only.
fn check_settings(node: &NodeConfig) -> Result<(), HostError> {
    let json = node.ingress.listen;
    if !json.ip().is_loopback() {
        return Err(HostError::Config(format!(
            "[ingress] listen (--listen) {json}: the JSON port signs for development keys, so \
             it listens on loopback only"
        )));
    }
    let pipeline_log = node.data_dir.join("data.mdb");
    if pipeline_log.exists() {
        return Err(HostError::Config(format!(
            "{} holds a `nexus pipeline` log (data.mdb), not a chain: give `nexus run` \
             another --data-dir",
            node.data_dir.display()
        )));
    }
    Ok(())
}

/// The chain file of an earlier start, if any. A block file without it is refused: the
/// chain's id and genesis time are gone, so its blocks cannot be executed again.
fn previous_chain(
    chain_file: &Path,
    validator_dir: &Path,
) -> Result<Option<DevnetConfig>, HostError> {
    if chain_file.exists() {
        return read_config(chain_file).map(Some);
    }
    let blocks = validator_dir.join("blocks");
    if blocks.exists() {
        return Err(HostError::Config(format!(
            "{} exists but {} does not: the chain's id and genesis are lost; restore the \
             file, or use a new data_dir",
            blocks.display(),
            chain_file.display()
        )));
    }
    Ok(None)
}

/// The chain id and genesis time: kept from the earlier start's chain file (whose
/// genesis-bound settings must be those of `chain`), or new.
fn chain_identity(
    previous: Option<DevnetConfig>,
    chain: &DevnetConfig,
    data_dir: &Path,
) -> Result<(String, u64), HostError> {
    let Some(previous) = previous else {
        let now_ms = validator::now_ns() / 1_000_000;
        let mut h = blake3::Hasher::new();
        h.update(b"nexus-run/v1/chain\0");
        h.update(&now_ms.to_le_bytes());
        h.update(chain.genesis.as_deref().unwrap_or("").as_bytes());
        return Ok((hex(h.finalize().as_bytes()), now_ms));
    };
    let differs = [
        (previous.genesis != chain.genesis, "[genesis]"),
        (
            previous.funding_interval_s != chain.funding_interval_s,
            "[perps] funding_interval_s",
        ),
        (previous.engine != chain.engine, "[engine]"),
    ];
    if let Some((_, what)) = differs.iter().find(|(differs, _)| *differs) {
        let folder = data_dir.display();
        return Err(HostError::Config(format!(
            "the chain in {folder} was started with a different {what} than this \
             configuration's; run with the original configuration, or use a new data_dir"
        )));
    }
    Ok((previous.chain_id, previous.genesis_time_ms))
}

/// The validator's key seed: read (it must be the key the chain names, if there is a
/// chain), or, for a new chain, made at random and written durably with mode 0600.
fn validator_key(dir: &Path, chain: Option<&DevnetConfig>) -> Result<[u8; 32], HostError> {
    let path = dir.join("key");
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
        let seed = unhex32(&text)?;
        let named = chain
            .and_then(|c| c.validators.first())
            .map(|v| v.key.as_str());
        let id = hex(&Keypair::from_seed(seed).id().0);
        if named.is_some_and(|named| named != id) {
            return Err(HostError::Config(format!(
                "{} is not the key of this chain's validator",
                path.display()
            )));
        }
        return Ok(seed);
    }
    if chain.is_some() {
        return Err(HostError::Config(format!(
            "{} is missing: this chain's blocks are signed by it; restore it, or use a new \
             data_dir",
            path.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| HostError::Config(format!("no randomness for the validator key: {e}")))?;
    write_durably(&path, format!("{}\n", hex(&seed)).as_bytes(), 0o600)?;
    Ok(seed)
}

/// `dev-keys.txt` and `dev-evm-key.txt`.
fn write_dev_keys(data_dir: &Path, chain: &DevnetConfig) -> Result<(), HostError> {
    let spec = LoadSpec {
        seed: chain.order_seed,
        accounts: chain.accounts,
        bulk: 1,
        chain_id: chain.chain_id_bytes()?,
        genesis_time_ms: chain.genesis_time_ms,
        resting_orders: 0,
    };
    let lines: String = load::account_keys(&spec)
        .iter()
        .map(|key| format!("{}\n", hex(&key.to_bytes())))
        .collect();
    write_durably(&data_dir.join(DEV_KEYS_FILE), lines.as_bytes(), 0o644)?;
    let evm = format!("0x{}\n", hex(&chain.dev_evm_secret()?));
    write_durably(&data_dir.join(DEV_EVM_KEY_FILE), evm.as_bytes(), 0o644)
}

/// Makes `path` hold `bytes` (file mode `mode`) durably: unless it already does, writes a
/// temporary file beside it, fsyncs it, renames it over `path` and fsyncs the folder, so a
/// crash leaves the old contents or the new ones, never a torn file.
fn write_durably(path: &Path, bytes: &[u8], mode: u32) -> Result<(), HostError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io_error(&temporary))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io_error(path))?;
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(folder)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(folder))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> HostError {
    let path = path.to_path_buf();
    move |e| HostError::Io(path, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_start_keeps_the_chain_and_refuses_another_genesis() {
        let folder = tempfile::tempdir().unwrap();
        let mut node = NodeConfig::load(None).unwrap();
        node.data_dir = folder.path().to_path_buf();
        let first = prepare(&node, ChainGenesis::Configured).unwrap();
        node.chain.tx_listen = "127.0.0.1:9999".parse().unwrap();
        let second = prepare(&node, ChainGenesis::Configured).unwrap();
        assert_eq!(first.chain.chain_id, second.chain.chain_id);
        assert_eq!(first.chain.genesis_time_ms, second.chain.genesis_time_ms);
        assert_eq!(
            first.chain.validators[0].key,
            second.chain.validators[0].key
        );
        assert_eq!(second.chain.validators[0].tx_addr.port(), 9999);
        node.perps.funding_interval_s = 60;
        let err = prepare(&node, ChainGenesis::Configured)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("different [perps] funding_interval_s"),
            "{err}"
        );
        node.perps.funding_interval_s = 3600;
        node.genesis.assets.pop();
        let err = prepare(&node, ChainGenesis::Configured)
            .unwrap_err()
            .to_string();
        assert!(err.contains("different [genesis]"), "{err}");
    }

    fn refusal(node: &NodeConfig) -> String {
        prepare(node, ChainGenesis::Configured)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_chain_without_its_key_or_chain_file_is_refused_and_the_json_port_stays_local() {
        use std::os::unix::fs::PermissionsExt;
        let folder = tempfile::tempdir().unwrap();
        let mut node = NodeConfig::load(None).unwrap();
        node.data_dir = folder.path().to_path_buf();
        let first = prepare(&node, ChainGenesis::Configured).unwrap();
        let key = first.validator_dir.join("key");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let saved = folder.path().join("key.bak");
        std::fs::rename(&key, &saved).unwrap();
        assert!(refusal(&node).contains("is missing"));
        std::fs::write(&key, format!("{}\n", hex(&[9; 32]))).unwrap();
        assert!(refusal(&node).contains("not the key"));
        std::fs::rename(&saved, &key).unwrap();
        std::fs::write(first.validator_dir.join("blocks"), b"").unwrap();
        std::fs::remove_file(&first.chain_file).unwrap();
        assert!(refusal(&node).contains("genesis are lost"));
        std::fs::write(folder.path().join("data.mdb"), b"").unwrap();
        assert!(refusal(&node).contains("nexus pipeline"));

        let other = tempfile::tempdir().unwrap();
        node.data_dir = other.path().join("data");
        node.ingress.listen = "0.0.0.0:7070".parse().unwrap();
        assert!(refusal(&node).contains("loopback only"));
        assert!(
            !node.data_dir.exists(),
            "nothing written for a refused setting"
        );
    }

    /// `nexus run`'s chain file turns development signing on for the development EVM key;
    /// a chain file without `eth_dev_signing` (written before it existed, or by hand) signs
    /// for no one.
    #[test]
    fn development_signing_is_on_for_nexus_run_and_off_unless_set() {
        let folder = tempfile::tempdir().unwrap();
        let mut node = NodeConfig::load(None).unwrap();
        node.data_dir = folder.path().to_path_buf();
        let prepared = prepare(&node, ChainGenesis::Configured).unwrap();
        let written = read_config(&prepared.chain_file).unwrap();
        assert!(written.eth_dev_signing);
        let dev: alloy_primitives::Address = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
            .parse()
            .unwrap();
        assert_eq!(written.eth_dev_accounts().unwrap().addresses(), [dev]);
        let text = std::fs::read_to_string(&prepared.chain_file).unwrap();
        let without: String = text
            .lines()
            .filter(|line| !line.starts_with("eth_dev_signing"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_ne!(without, text, "the flag is in the file");
        let old: DevnetConfig = toml::from_str(&without).unwrap();
        assert!(old.eth_dev_accounts().unwrap().addresses().is_empty());
    }

    #[test]
    fn the_default_genesis_funds_development_accounts() {
        let node = NodeConfig::load(None).unwrap();
        let ids = dev_account_ids(2);
        for deposit in &node.genesis.deposits {
            assert!(
                ids.contains(&deposit.account),
                "{} is no dev account",
                deposit.account
            );
        }
    }
}
