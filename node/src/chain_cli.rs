//! `nexus stake` and `nexus gov`: staking and governance actions signed with a key file and
//! submitted to a validator's JSON port ([`crate::chain_actions`], docs/node.md "Staking and
//! governance actions").
//!
//! A key file holds an ed25519 seed as 64 hex digits, the format of a validator's `key`
//! (`nexus devnet`'s `validator-<i>/key`, `nexus run`'s `nexus-data/validator/key`);
//! `nexus stake new-key` writes one. Each submission asks the validator for the chain id
//! and the key's next nonce (`{"op":"staking","key"}`), signs the action, sends it
//! (`{"op":"action"}`) and prints every reply until the last: exit status 0 if a block
//! applied it, 1 if it was refused, evicted, or applied-refused by the chain.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use consensus::governance::{Action, ParamKey, ProposalKind, SignedAction};
use consensus::types::{Hash, Keypair};
use serde_json::{json, Value};

use crate::client::{exchange, ClientError};
use crate::validator::{hex, unhex32};

/// `nexus stake` subcommands.
#[derive(Subcommand, Debug)]
pub enum StakeCommand {
    /// Print the validator set, bonds (stake, jail), queued changes and chain parameters
    /// after the last block (one JSON line); with --key, also that key's next nonce.
    Show {
        /// Which validator to ask.
        #[command(flatten)]
        node: NodeArgs,
        /// Key file whose next nonce to show.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Bond STAKE with a new key; it joins the set at the next epoch boundary.
    Join {
        /// Stake to bond.
        #[arg(long)]
        stake: u64,
        /// Who signs, and where the action goes.
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Change this validator's stake at the next epoch boundary.
    SetStake {
        /// New stake.
        #[arg(long)]
        stake: u64,
        /// Who signs, and where the action goes.
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Leave the set at the next epoch boundary (unbond).
    Leave {
        /// Who signs, and where the action goes.
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Return to the set at the next epoch boundary after being jailed (once the jail
    /// period is over, with at least the minimum stake left).
    Unjail {
        /// Who signs, and where the action goes.
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Write a new random key file (mode 0600) and print its public key.
    NewKey {
        /// Where to write it (must not exist).
        file: PathBuf,
    },
}

/// `nexus gov` subcommands.
#[derive(Subcommand, Debug)]
pub enum GovCommand {
    /// Print the co-processor registry and the proposals after the last block.
    Show {
        /// Which validator to ask.
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Open a proposal (options before the kind: `nexus gov propose --key FILE activate 1`).
    Propose {
        /// Who signs, and where the action goes.
        #[command(flatten)]
        signer: SignerArgs,
        /// What the proposal does.
        #[command(subcommand)]
        kind: ProposalArg,
    },
    /// Vote on a proposal (a later vote replaces an earlier one).
    Vote {
        /// Proposal id.
        #[arg(long)]
        proposal: u64,
        /// Vote no (default: yes).
        #[arg(long)]
        no: bool,
        /// Who signs, and where the action goes.
        #[command(flatten)]
        signer: SignerArgs,
    },
}

/// What a proposal does.
#[derive(Subcommand, Debug)]
pub enum ProposalArg {
    /// Register or upgrade co-processor ID to VERSION with code this binary carries (NAME)
    /// or a code hash.
    Upgrade {
        /// Registry id.
        #[arg(long)]
        id: u32,
        /// New version.
        #[arg(long, default_value_t = 1)]
        version: u32,
        /// A co-processor this binary carries, by name (e.g. `notary`).
        #[arg(long, value_name = "NAME", conflicts_with = "code_hash")]
        code: Option<String>,
        /// The code hash, 64 hex digits.
        #[arg(long, value_name = "HEX")]
        code_hash: Option<String>,
    },
    /// Activate a registered co-processor.
    Activate {
        /// Registry id.
        id: u32,
    },
    /// Deactivate a co-processor.
    Deactivate {
        /// Registry id.
        id: u32,
    },
    /// Set a co-processor parameter.
    SetParam {
        /// Registry id.
        #[arg(long)]
        id: u32,
        /// Parameter name.
        #[arg(long)]
        name: String,
        /// New value.
        #[arg(long)]
        value: u64,
    },
    /// Set a chain parameter: epoch_length_blocks, slash_fraction_bps,
    /// voting_period_blocks, evidence_max_age_blocks, jail_period_blocks, min_stake,
    /// proposal_retention_blocks or max_open_proposals_per_proposer.
    ChainParam {
        /// Parameter name.
        #[arg(long)]
        name: String,
        /// New value.
        #[arg(long)]
        value: u64,
    },
}

/// Which validator to ask.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The validator's JSON port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    pub addr: SocketAddr,
    /// Give up if the last reply has not come within this many seconds.
    #[arg(long, value_name = "S", default_value_t = 20)]
    pub timeout_s: u64,
}

/// Who signs, and where the action goes.
#[derive(Args, Debug)]
pub struct SignerArgs {
    /// Key file: an ed25519 seed as 64 hex digits (a validator's `key` file).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Nonce to sign with (default: the key's next one, asked from the validator).
    #[arg(long)]
    pub nonce: Option<u64>,
    /// Which validator to ask.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Why a command failed before the validator answered the action.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The key file is unreadable or not 64 hex digits.
    #[error("{0}: {1}")]
    Key(PathBuf, String),
    /// An argument is out of range.
    #[error("{0}")]
    Usage(String),
    /// The exchange with the validator failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The validator's answer was not what a JSON port sends.
    #[error("unexpected answer: {0}")]
    Answer(String),
}

/// Runs `nexus stake`.
pub fn stake_command(command: StakeCommand) -> ExitCode {
    let result = match command {
        StakeCommand::Show { node, key } => show(&node, key.as_deref()),
        StakeCommand::Join { stake, signer } => submit(&signer, Action::Join { stake }),
        StakeCommand::SetStake { stake, signer } => submit(&signer, Action::SetStake { stake }),
        StakeCommand::Leave { signer } => submit(&signer, Action::Leave),
        StakeCommand::Unjail { signer } => submit(&signer, Action::Unjail),
        StakeCommand::NewKey { file } => new_key(&file),
    };
    finish(result)
}

/// Runs `nexus gov`.
pub fn gov_command(command: GovCommand) -> ExitCode {
    let result = match command {
        GovCommand::Show { node } => {
            let reply = ask(&node, json!({"op": "governance"}));
            reply.map(|r| println!("{r}")).map(|()| true)
        }
        GovCommand::Propose { signer, kind } => {
            proposal(kind).and_then(|kind| submit(&signer, Action::Propose(kind)))
        }
        GovCommand::Vote {
            proposal,
            no,
            signer,
        } => submit(
            &signer,
            Action::Vote {
                proposal,
                approve: !no,
            },
        ),
    };
    finish(result)
}

/// Exit status: 0 if the command did what it asked, 1 otherwise (with the error).
fn finish(result: Result<bool, CliError>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("nexus: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a key file (64 hex digits).
pub fn read_key(path: &Path) -> Result<Keypair, CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| CliError::Key(path.into(), e.to_string()))?;
    let seed = unhex32(&text).map_err(|e| CliError::Key(path.into(), e.to_string()))?;
    Ok(Keypair::from_seed(seed))
}

/// One request line; its last reply.
fn ask(node: &NodeArgs, request: Value) -> Result<Value, CliError> {
    let replies = exchange_json(node, &request, &mut Vec::new())?;
    replies
        .last()
        .cloned()
        .ok_or_else(|| CliError::Answer("no reply".into()))
}

/// Sends `request` and returns its replies, copying each line to `out`.
fn exchange_json(
    node: &NodeArgs,
    request: &Value,
    out: &mut impl Write,
) -> Result<Vec<Value>, CliError> {
    let mut text = Vec::new();
    let timeout = Duration::from_secs(node.timeout_s);
    exchange(node.addr, &[request.to_string()], &mut text, false, timeout)?;
    out.write_all(&text)
        .map_err(|e| CliError::Client(ClientError::Output(e)))?;
    String::from_utf8_lossy(&text)
        .lines()
        .map(|line| serde_json::from_str(line).map_err(|_| CliError::Answer(line.to_string())))
        .collect()
}

/// `nexus stake show`.
fn show(node: &NodeArgs, key: Option<&Path>) -> Result<bool, CliError> {
    let mut request = json!({"op": "staking"});
    if let Some(path) = key {
        request["key"] = json!(hex(&read_key(path)?.id().0));
    }
    let reply = ask(node, request)?;
    println!("{reply}");
    Ok(reply["ev"] == "staking")
}

/// Signs `action` with the key file and submits it; prints every reply. True if a block
/// applied it.
fn submit(signer: &SignerArgs, action: Action) -> Result<bool, CliError> {
    let key = read_key(&signer.key)?;
    let request = json!({"op": "staking", "key": hex(&key.id().0)});
    let view = ask(&signer.node, request)?;
    let chain_id = view["chain_id"]
        .as_str()
        .ok_or_else(|| CliError::Answer(view.to_string()))
        .and_then(|text| unhex32(text).map_err(|e| CliError::Answer(e.to_string())))?;
    let next = view["next_nonce"]
        .as_u64()
        .ok_or_else(|| CliError::Answer(view.to_string()))?;
    let nonce = signer.nonce.unwrap_or(next);
    let signed = SignedAction::sign(&key, nonce, action, &chain_id);
    let request = json!({"op": "action", "action": hex(&signed.encode())});
    let replies = exchange_json(&signer.node, &request, &mut std::io::stdout())?;
    let last = replies.last().cloned().unwrap_or(Value::Null);
    Ok(last["ev"] == "action_included" && last["applied"] == true)
}

/// The proposal kind of `nexus gov propose`.
fn proposal(kind: ProposalArg) -> Result<ProposalKind, CliError> {
    Ok(match kind {
        ProposalArg::Upgrade {
            id,
            version,
            code,
            code_hash,
        } => ProposalKind::Upgrade {
            id,
            version,
            code_hash: Hash(code_hash_of(code, code_hash)?),
        },
        ProposalArg::Activate { id } => ProposalKind::Activate { id },
        ProposalArg::Deactivate { id } => ProposalKind::Deactivate { id },
        ProposalArg::SetParam { id, name, value } => ProposalKind::SetCoprocessorParam {
            id,
            key: name,
            value,
        },
        ProposalArg::ChainParam { name, value } => ProposalKind::SetChainParam {
            key: param_key(&name)?,
            value,
        },
    })
}

/// `--code NAME` (a co-processor this binary carries) or `--code-hash HEX`.
fn code_hash_of(code: Option<String>, code_hash: Option<String>) -> Result<[u8; 32], CliError> {
    match (code, code_hash) {
        (Some(name), _) => execution::Catalog::builtin()
            .by_name(&name)
            .map(|found| found.code_hash)
            .ok_or_else(|| {
                CliError::Usage(format!("this binary carries no co-processor {name:?}"))
            }),
        (None, Some(text)) => unhex32(&text).map_err(|e| CliError::Usage(e.to_string())),
        (None, None) => Err(CliError::Usage(
            "upgrade needs --code or --code-hash".into(),
        )),
    }
}

/// A chain parameter by its name in `nexus stake show`.
pub fn param_key(name: &str) -> Result<ParamKey, CliError> {
    ParamKey::from_name(name).ok_or_else(|| CliError::Usage(format!("no chain parameter {name:?}")))
}

/// `nexus stake new-key FILE`.
fn new_key(file: &Path) -> Result<bool, CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| CliError::Key(file.into(), e.to_string()))?;
    let key = Keypair::from_seed(seed);
    let error = |e: std::io::Error| CliError::Key(file.into(), e.to_string());
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(error)?;
    out.write_all(hex(&seed).as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(error)?;
    println!(
        "{}",
        json!({"key": hex(&key.id().0), "file": file.display().to_string()})
    );
    Ok(true)
}
