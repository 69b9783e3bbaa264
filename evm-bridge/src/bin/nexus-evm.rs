//! `nexus-evm`: a devnet NexusEVM + NexusCore with Ethereum JSON-RPC on loopback.

use clap::Parser;
use evm_bridge::chain::Chain;
use evm_bridge::devnet;
use evm_bridge::executor::EvmConfig;
use evm_bridge::rpc::{self, Node, ServeConfig};
use evm_bridge::store::Store;
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
}

fn main() {
    let args = Args::parse();
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
    loop {
        std::thread::park();
    }
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
