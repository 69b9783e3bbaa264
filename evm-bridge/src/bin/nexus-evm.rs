//! `nexus-evm`: a devnet NexusEVM + NexusCore with Ethereum JSON-RPC on loopback.
//!
//! Stops cleanly on SIGINT or SIGTERM, as `nexus run` (signal-hook): the handlers are
//! installed explicitly, so a SIGINT ignored by the parent (a background job of a script
//! inherits `SIG_IGN`) still stops it.

use clap::Parser;
use evm_bridge::chain::Chain;
use evm_bridge::devnet;
use evm_bridge::executor::EvmConfig;
use evm_bridge::rpc::{self, Node, ServeConfig};
use evm_bridge::store::Store;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Runs a devnet: Core and EVM blocks in step, JSON-RPC over HTTP.
#[derive(Parser)]
struct Args {
    /// Address to serve JSON-RPC on.
    #[arg(long, default_value = "127.0.0.1:8545")]
    rpc: SocketAddr,
    /// LMDB folder; the chain resumes from it if it holds one. In memory if absent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Block interval while there is work, milliseconds.
    #[arg(long, default_value_t = 200)]
    block_ms: u64,
    /// Log level on stderr: error, warn, info, debug, trace or off.
    #[arg(long, default_value = "info")]
    log: tracing_subscriber::filter::LevelFilter,
}

fn main() {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_max_level(args.log)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    // Before anything is served: a signal from then on stops the node cleanly. Installing
    // a handler replaces an inherited SIG_IGN.
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .unwrap_or_else(|e| fail(&format!("cannot handle SIGINT/SIGTERM: {e}")));
    let config = EvmConfig::default();
    let store = args
        .data_dir
        .as_ref()
        .map(|dir| Store::open(dir).unwrap_or_else(|e| fail(&e.to_string())));
    let node = match store {
        Some(store) => match Node::open(store, config.clone()) {
            Ok(Some(node)) => node,
            Ok(None) => fresh(
                config,
                Some(
                    Store::open(args.data_dir.as_ref().expect("dir"))
                        .unwrap_or_else(|e| fail(&e.to_string())),
                ),
            ),
            Err(e) => fail(&e.to_string()),
        },
        None => fresh(config, None),
    };
    let server = rpc::serve(
        node,
        ServeConfig {
            addr: args.rpc,
            block_time: Duration::from_millis(args.block_ms),
        },
    )
    .unwrap_or_else(|e| fail(&e.to_string()));
    eprintln!(
        "nexus-evm: JSON-RPC on http://{} (chain id {}, dev account {})",
        server.addr,
        EvmConfig::default().chain_id,
        devnet::DEV_ACCOUNT
    );
    let signal = signals.forever().next().unwrap_or(SIGTERM);
    let name = if signal == SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    let node = server.stop();
    // The pool lives in memory only: say what is forgotten.
    let pending = node.pending_hashes();
    for hash in &pending {
        tracing::warn!(%hash, "pending transaction not included before stopping: forgotten");
    }
    let head = node.head_number();
    eprintln!(
        "nexus-evm: {name}: stopped at block {head} ({} pending transactions forgotten)",
        pending.len()
    );
}

fn fresh(config: EvmConfig, store: Option<Store>) -> Node {
    let (chain, genesis) = Chain::genesis(
        devnet::engine(),
        config,
        devnet::NATIVE_ASSET,
        devnet::alloc(),
        rpc::unix_now(),
    );
    Node::new(chain, genesis, store).unwrap_or_else(|e| fail(&e.to_string()))
}

fn fail(message: &str) -> ! {
    eprintln!("nexus-evm: {message}");
    std::process::exit(1)
}
