//! `nexus-evm`: NexusEVM with Ethereum JSON-RPC on loopback, as a thin mode of the one node.
//!
//! It runs the same chain of one validator as `nexus run` ([`node::chain_run`]), from the
//! devnet's EVM genesis: market 0 `BASE-QUOTE` whose quote asset (1) is the EVM's native
//! token, and the well-known development key funded with 1,000,000 ether. Its JSON
//! development port listens on `--json` (a free port by default); its other ports (binary
//! order entry, market data, transactions) on free loopback ports, all named in the `ready`
//! line on standard output. Stops cleanly on SIGINT or SIGTERM (the
//! handlers replace an inherited `SIG_IGN`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use node::chain_run::{self, ChainGenesis};
use node::config::NodeConfig;

/// NexusEVM on a local chain of one validator (docs/evm.md): Ethereum JSON-RPC over HTTP,
/// Core and EVM blocks ordered by NexusBFT and executed in step.
#[derive(Parser)]
#[command(name = "nexus-evm", version)]
struct Args {
    /// Address to serve Ethereum JSON-RPC on (port 0: any free port, named in the `ready`
    /// line and on standard error).
    #[arg(long, default_value = "127.0.0.1:8545")]
    rpc: SocketAddr,
    /// Address of the JSON development port (docs/node.md; examples/evm's token checks use
    /// it). Port 0: any free port, named in the `ready` line and on standard error.
    #[arg(long, default_value = "127.0.0.1:0")]
    json: SocketAddr,
    /// Data folder; the chain continues from it if it holds one. A temporary folder,
    /// removed at exit, if absent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// With no transaction waiting, a block at most this often (ms); a transaction starts
    /// the next block at once.
    #[arg(long, default_value_t = 200)]
    block_ms: u64,
    /// Blocks before the head whose EVM state is kept for reads and calls at a past block.
    #[arg(long, default_value_t = eth_rpc::STATE_BLOCKS as u64)]
    eth_state_blocks: u64,
}

fn main() -> ExitCode {
    engine::cpu::exit_if_unsupported("nexus-evm");
    let args = Args::parse();
    let temporary = match args.data_dir {
        Some(_) => None,
        None => match tempfile::tempdir() {
            Ok(folder) => Some(folder),
            Err(e) => {
                eprintln!("nexus-evm: no temporary folder: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let mut config = match NodeConfig::load(None) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("nexus-evm: {e}");
            return ExitCode::FAILURE;
        }
    };
    config.data_dir = match (&args.data_dir, &temporary) {
        (Some(dir), _) => dir.clone(),
        (None, Some(folder)) => folder.path().join("nexus-data"),
        (None, None) => unreachable!("a temporary folder when no data folder is given"),
    };
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    config.ingress.listen = args.json;
    config.gateway.order_entry_listen = any;
    config.gateway.market_data_listen = any;
    config.chain.tx_listen = any;
    config.chain.eth_listen = args.rpc;
    config.chain.empty_block_interval_ms = args.block_ms;
    config.chain.eth_state_blocks = args.eth_state_blocks;
    chain_run::run(
        "nexus-evm",
        &config,
        ChainGenesis::EvmDevnet,
        Some(announce),
    )
}

/// The line scripts wait for, on standard error.
fn announce(ready: &serde_json::Value) {
    let rpc = ready["eth_rpc"].as_str().unwrap_or("?");
    let json = ready["json"].as_str().unwrap_or("?");
    eprintln!(
        "nexus-evm: JSON-RPC on http://{rpc} (chain id {}, dev account 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266), JSON port {json}",
        evm_bridge::executor::EvmConfig::default().chain_id
    );
}
