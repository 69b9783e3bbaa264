//! `nexus`: the Nexus node and its command-line tools. `nexus --help` lists the commands.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use engine::EngineConfig;
use node::replay::{self, RunError, RunOptions};

/// Nexus: a deterministic exchange engine and the node around it.
/// Largest `--max-resting-orders`: the engine allocates its order store up front.
const MAX_RESTING_ORDERS_LIMIT: i64 = 1 << 26;

#[derive(Parser)]
#[command(name = "nexus", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the engine on JSON Lines commands and print its events as JSON Lines.
    ///
    /// Reads one command per line from FILE (or standard input for `-`), writes one event
    /// per line to standard output. Format: docs/replay.md.
    Replay(ReplayArgs),
}

#[derive(Args)]
struct ReplayArgs {
    /// The commands file, or `-` for standard input.
    #[arg(value_name = "FILE|-")]
    input: PathBuf,
    /// After the last line, print {"ev":"end","lines":N,"state_hash":"<hex>"}.
    #[arg(long)]
    state_hash: bool,
    /// Most orders resting at once across all markets (then `book_full`); at most 2^26.
    #[arg(
        long,
        value_name = "N",
        default_value_t = EngineConfig::default().max_resting_orders,
        value_parser = clap::value_parser!(u32).range(0..=MAX_RESTING_ORDERS_LIMIT)
    )]
    max_resting_orders: u32,
    /// Most open orders per account (then `too_many_orders`).
    #[arg(long, value_name = "N", default_value_t = EngineConfig::default().max_open_orders_per_account)]
    max_open_orders: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Replay(args) => replay_command(args),
    }
}

fn replay_command(args: ReplayArgs) -> ExitCode {
    let input: Box<dyn Read> = if args.input.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        match File::open(&args.input) {
            Ok(file) => Box::new(file),
            Err(e) => {
                eprintln!("nexus replay: cannot open {}: {e}", args.input.display());
                return ExitCode::from(2);
            }
        }
    };
    let options = RunOptions {
        config: EngineConfig {
            max_resting_orders: args.max_resting_orders,
            max_open_orders_per_account: args.max_open_orders,
        },
        state_hash: args.state_hash,
    };
    let mut input = BufReader::with_capacity(1 << 16, input);
    let mut output = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    match replay::run(&mut input, &mut output, options) {
        Ok(_) => ExitCode::SUCCESS,
        Err(RunError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            // The reader went away (e.g. `| head`): stop quietly.
            ExitCode::FAILURE
        }
        Err(e) => {
            // Whatever was replayed so far is still delivered, if stdout works.
            let _ = output.flush();
            eprintln!("nexus replay: {e}");
            ExitCode::FAILURE
        }
    }
}
