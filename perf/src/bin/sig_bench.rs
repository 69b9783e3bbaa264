//! `sig-bench`: signature verification and mempool admission per core, with ed25519-dalek's
//! single `verify_strict` as the baseline in the same run. See `docs/perf.md`, "Signatures".

use std::path::PathBuf;

use clap::Parser;
use perf::sig_bench::{run, Options};

/// Signature benchmark: single and batched ZIP 215 checks against dalek's verify_strict,
/// transaction decoding, and mempool admission of 1- and 20-order transactions.
#[derive(Parser, Debug)]
#[command(name = "sig-bench", version)]
struct Args {
    /// Signatures (transactions) per measurement (at least 256).
    #[arg(long, default_value_t = 4096)]
    count: usize,
    /// Measurements per figure (min, median and max are printed).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

fn main() {
    engine::cpu::exit_if_unsupported("sig-bench");
    let args = Args::parse();
    let figures = run(&Options {
        count: args.count,
        repeats: args.repeats,
    });
    if let Some(path) = args.json {
        if let Err(e) = std::fs::write(&path, figures.to_string()) {
            eprintln!("sig-bench: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}
