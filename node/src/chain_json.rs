//! The JSON Lines development port of a validator: the JSON format of `nexus pipeline`
//! (docs/pipeline.md, docs/replay.md) on a chain, signed by the validator for configured
//! development keys (docs/node.md).
//!
//! Development only, and loopback only: whoever reaches the port acts for every account
//! whose key the validator holds (a devnet's trading accounts). A line is translated by
//! the same [`Translator`] as `nexus run`'s (names and decimals from the chain's genesis
//! lines), its commands become the actions of one transaction of the line's account, which
//! the validator signs (nonce: the wall clock in ms, above the account's last) and admits
//! into its mempool like any other. The line's answers, in order:
//!
//! - `{"ev":"admitted","line","hash"}` or `{"ev":"refused","line","reason"}` (the mempool's
//!   code), or an `error` / `rejected` from the translator before anything is signed;
//! - once its block is decided, durable and executed: the engine's results as on a single
//!   node (`accepted`, `fill`, `canceled`, `rejected`, ...) with the chain's input `seq`,
//!   then `{"ev":"sequenced","seq","line","height"}` and `{"ev":"finalized",...}`;
//! - or `{"ev":"evicted","line","reason"}` if it left the pool unexecuted.
//!
//! Queries (`book`, `balances`, `orders`, `positions`) are answered at once from the
//! validator's executed state; `{"op":"dev_accounts"}` lists the accounts the port signs for.
//! Co-processors other than the CLOB: `{"op":"call","account","coprocessor","method","args"}`
//! (`args`: 48 hex digits, 24 bytes; default zeros) signs a transaction of one call, whose
//! answer comes after its block as `{"ev":"call","result"}` (64 hex digits) or
//! `{"ev":"call_refused","reason"}`; `{"op":"query",...}` the same fields, answered at once
//! from the executed state (`{"ev":"query","result"}`).
//! A connection hears every event of each account it acted for or `subscribe`d to
//! (`{"op":"subscribe","account":A}`), whoever caused it (a maker hears its fills), with
//! `seq` and no `line`.
//!
//! Chain actions from any key (`nexus stake`, `nexus gov`): `{"op":"action","action":"<hex>"}`
//! pools a complete signed action and `{"op":"staking"}` reads the validator set, bonds,
//! queued changes and parameters ([`crate::chain_actions`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ed25519_dalek::SigningKey;
use engine::{AccountId, Command, Event};
use json_lines::queries;
use json_lines::replay::{Echo, Output, Step, Translator};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use transactions::{account_id_of, Action, Transaction};

use execution::coprocessor::CallResult;
use execution::{CoprocessorId, Execution};

use consensus::block::Block;
use consensus::chain::ChainState;
use consensus::governance::SignedAction;

use crate::chain_actions::{self, ActionPool, Asker};
use crate::chain_gov::GovQueue;
use crate::genesis::{translate_genesis, GenesisError};
use crate::load::DevRoles;
use crate::server::{node_record, with_line};

/// A JSON connection's outbox of lines (without their `\n`).
pub type JsonOutbox = mpsc::Sender<String>;

/// Longest line the port reads unless configured (`json_max_line_bytes`; `nexus run` takes
/// `[ingress] max_line_bytes`): a longer one is answered `too_long` and skipped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Lines queued for one connection before it is dropped as too slow.
const OUTBOX_LINES: usize = 1 << 14;

/// What the port's connection tasks tell the host.
#[derive(Debug)]
pub enum JsonEvent {
    /// A connection opened; its replies go to this outbox.
    Connected(u64, JsonOutbox),
    /// It sent a line (without the `\n`).
    Line(u64, String),
    /// It sent a line longer than the port's limit (given), which was skipped.
    TooLong(u64, usize),
    /// It closed.
    Gone(u64),
}

/// Accepts JSON connections, one task each; lines longer than `max_line_bytes` are skipped.
pub async fn accept(
    listener: tokio::net::TcpListener,
    events: mpsc::Sender<JsonEvent>,
    max_line_bytes: usize,
) {
    let mut next_id = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        next_id += 1;
        tokio::spawn(serve(next_id, stream, events.clone(), max_line_bytes));
    }
}

/// One connection: lines to the host, the host's replies back. The writer ends when the
/// host drops the outbox, so every reply owed before the client left is still written. A
/// line longer than `max_line_bytes` is skipped up to its newline and reported to the host
/// in its place (answered `too_long` with its line number, in order with the others).
async fn serve(
    id: u64,
    stream: tokio::net::TcpStream,
    events: mpsc::Sender<JsonEvent>,
    max_line_bytes: usize,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (reader, mut writer) = stream.into_split();
    let (outbox, mut replies) = mpsc::channel::<String>(OUTBOX_LINES);
    if events.send(JsonEvent::Connected(id, outbox)).await.is_err() {
        return;
    }
    let write = async move {
        while let Some(mut line) = replies.recv().await {
            line.push('\n');
            if writer.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    };
    let read = async move {
        let limit = max_line_bytes as u64 + 1;
        let mut reader = tokio::io::BufReader::new(reader).take(limit);
        let mut bytes = Vec::new();
        loop {
            bytes.clear();
            reader.set_limit(limit);
            match reader.read_until(b'\n', &mut bytes).await {
                Ok(0) | Err(_) => break,
                Ok(_) if bytes.last() != Some(&b'\n') && bytes.len() > max_line_bytes => {
                    if !skip_line(&mut reader, limit).await {
                        break;
                    }
                    let event = JsonEvent::TooLong(id, max_line_bytes);
                    if events.send(event).await.is_err() {
                        break;
                    }
                    continue;
                }
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&bytes).trim_end().to_string();
            if events.send(JsonEvent::Line(id, text)).await.is_err() {
                break;
            }
        }
        let _ = events.send(JsonEvent::Gone(id)).await;
    };
    tokio::join!(read, write);
}

/// Reads and drops the rest of a line, in pieces of at most `limit` bytes; `false` if the
/// connection ended first.
async fn skip_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut tokio::io::Take<R>,
    limit: u64,
) -> bool {
    use tokio::io::AsyncBufReadExt;
    let mut piece = Vec::new();
    loop {
        piece.clear();
        reader.set_limit(limit);
        match reader.read_until(b'\n', &mut piece).await {
            Ok(0) | Err(_) => return false,
            Ok(_) if piece.last() == Some(&b'\n') => return true,
            Ok(_) => {}
        }
    }
}

/// What became of a line's transaction before execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineStatus {
    /// Taken into the mempool.
    Admitted,
    /// Not taken: the mempool's reason.
    Refused(&'static str),
    /// It left the pool unexecuted: the reason.
    Evicted(&'static str),
}

/// A line whose transaction awaits its block: what rendering its results needs.
struct PendingLine {
    /// Per action: the market index it concerns and what a refusal echoes.
    actions: Vec<(Option<usize>, Echo)>,
}

struct JsonConnection {
    outbox: JsonOutbox,
    lines: u64,
    /// The client closed its side: the connection goes once its lines are answered.
    closing: bool,
}

/// The port's state: translator, development keys, connections, lines awaiting blocks.
pub struct JsonPort {
    translator: Translator,
    chain_id: [u8; 32],
    dev_keys: BTreeMap<AccountId, SigningKey>,
    /// The development accounts in key order (as `dev-keys.txt` lists their keys).
    dev_accounts: Vec<AccountId>,
    /// The development faucet and feeder, if the chain has them.
    roles: Option<DevRoles>,
    last_nonce: BTreeMap<AccountId, u64>,
    connections: HashMap<u64, JsonConnection>,
    pending: HashMap<(u64, u64), PendingLine>,
    /// Connections that hear an account's events: they acted for it or subscribed.
    watchers: BTreeMap<AccountId, Vec<u64>>,
    outputs: Vec<Output>,
    /// Governance actions the validator signs with its own key, if it lets the port ask.
    governance: Option<GovQueue>,
    /// Lines whose chain action is pooled, awaiting its block.
    action_waits: BTreeSet<Asker>,
}

/// The chain state after the last block and the validator's action pool, for `action` and
/// `staking` lines.
pub struct ChainDesk<'a> {
    /// The consensus-layer state after the last applied block.
    pub state: &'a ChainState,
    /// The pool client actions go to.
    pub actions: &'a mut ActionPool,
    /// Takes one of the connection's rate tokens: false if it sent too much (an action
    /// line costs a signature check, like a transaction).
    pub allow: &'a mut dyn FnMut() -> bool,
}

impl JsonPort {
    /// A port for the chain whose genesis is `genesis_lines`, signing for `dev_keys` (and
    /// with `roles`, deposits as the faucet and oracle prices as the feeder).
    pub fn new(
        genesis_lines: &str,
        chain_id: [u8; 32],
        dev_keys: &[SigningKey],
        roles: Option<DevRoles>,
    ) -> Result<JsonPort, GenesisError> {
        let (translator, _) = translate_genesis(genesis_lines)?;
        let dev_accounts: Vec<AccountId> = dev_keys
            .iter()
            .map(|key| account_id_of(&key.verifying_key().to_bytes()))
            .collect();
        let dev_keys = dev_accounts
            .iter()
            .copied()
            .zip(dev_keys.iter().cloned())
            .collect();
        Ok(JsonPort {
            translator,
            chain_id,
            dev_keys,
            dev_accounts,
            roles,
            last_nonce: BTreeMap::new(),
            connections: HashMap::new(),
            pending: HashMap::new(),
            watchers: BTreeMap::new(),
            outputs: Vec::new(),
            governance: None,
            action_waits: BTreeSet::new(),
        })
    }

    /// Lets the port queue governance actions that `key` (the validator's) signs
    /// ([`crate::chain_gov`]).
    pub fn allow_governance(&mut self, key: consensus::types::Keypair) {
        self.governance = Some(GovQueue::new(key));
    }

    /// Whether governance actions wait for a block.
    pub fn has_governance_work(&self) -> bool {
        self.governance.as_ref().is_some_and(|g| !g.is_empty())
    }

    /// The queued governance actions, signed for the next block `chain` applies, after
    /// `skip` actions of the validator's key that the proposal carries already.
    pub fn governance_actions(&self, chain: &ChainState, skip: u64) -> Vec<SignedAction> {
        self.governance
            .as_ref()
            .map_or_else(Vec::new, |g| g.actions(chain, skip))
    }

    /// The key the port's governance lines are signed with, if any.
    pub fn governance_key(&self) -> Option<consensus::types::ValidatorId> {
        self.governance.as_ref().map(GovQueue::signer)
    }

    /// What became of line `asker`'s pooled chain action (`action_included` or
    /// `action_evicted`).
    pub fn action_answered(&mut self, asker: Asker, answer: &Value) {
        self.action_waits.remove(&asker);
        self.send(asker.0, answer);
        self.drop_if_done(asker.0);
    }

    /// An `action` or `staking` line.
    fn chain_line(&mut self, asker: Asker, op: &str, request: &Value, desk: ChainDesk<'_>) {
        let reply = if op == "staking" {
            chain_actions::staking_view(desk.actions, desk.state, request, asker.1)
        } else if !(desk.allow)() {
            let refusal = chain_actions::ActionRefusal::RateLimited;
            json!({"ev": "action_refused", "line": asker.1, "reason": refusal.code(),
                "detail": refusal.to_string()})
        } else {
            let (reply, pooled) =
                chain_actions::action_line(desk.actions, desk.state, request, asker);
            if pooled {
                self.action_waits.insert(asker);
            }
            reply
        };
        self.send(asker.0, &reply);
    }

    /// After a decided block (`chain` after it): answers the governance lines it holds.
    pub fn governance_applied(&mut self, block: &Block, chain: &ChainState) {
        let Some(governance) = self.governance.as_mut() else {
            return;
        };
        for ((id, _), answer) in governance.applied(block, chain) {
            self.send(id, &answer);
            self.drop_if_done(id);
        }
    }

    /// A `gov_propose`, `gov_vote` or `governance` line.
    fn governance_line(&mut self, id: u64, line: u64, op: &str, request: &Value) {
        let Some(governance) = self.governance.as_mut() else {
            let detail = "this port does not sign governance actions";
            return self.error(id, line, "not_allowed", detail);
        };
        if op == "governance" {
            let view = governance.view(line);
            return self.send(id, &view);
        }
        match governance.push(request, (id, line)) {
            Ok(reply) => self.send(id, &reply),
            Err(detail) => self.error(id, line, "malformed", &detail),
        }
    }

    /// A connection opened; its lines' answers go to `outbox`.
    pub fn connect(&mut self, id: u64, outbox: JsonOutbox) {
        let connection = JsonConnection {
            outbox,
            lines: 0,
            closing: false,
        };
        self.connections.insert(id, connection);
    }

    /// The client closed its side: the connection is dropped once every line it sent is
    /// answered (finalized, refused or evicted), so a client that half-closes still hears
    /// of everything it sent.
    pub fn disconnect(&mut self, id: u64) {
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.closing = true;
        }
        self.drop_if_done(id);
    }

    /// Drops a closing connection once none of its lines await an answer.
    fn drop_if_done(&mut self, id: u64) {
        let closing = self.connections.get(&id).is_some_and(|c| c.closing);
        let governing = self.governance.as_ref().is_some_and(|g| g.waits_for(id))
            || self
                .action_waits
                .range((id, 0)..=(id, u64::MAX))
                .next()
                .is_some();
        if closing && !governing && !self.pending.keys().any(|(connection, _)| *connection == id) {
            self.connections.remove(&id);
            self.unwatch(id);
        }
    }

    /// Forgets a connection that cannot take more replies, and its lines.
    fn drop_connection(&mut self, id: u64) {
        self.connections.remove(&id);
        self.action_waits
            .retain(|(connection, _)| *connection != id);
        self.pending.retain(|(connection, _), _| *connection != id);
        self.unwatch(id);
    }

    /// Connection `id` (gone) follows no account any more.
    fn unwatch(&mut self, id: u64) {
        for watching in self.watchers.values_mut() {
            watching.retain(|&c| c != id);
        }
        self.watchers.retain(|_, watching| !watching.is_empty());
    }

    /// Connection `id` hears `account`'s events from now on.
    fn watch(&mut self, id: u64, account: AccountId) {
        let watching = self.watchers.entry(account).or_default();
        if !watching.contains(&id) {
            watching.push(id);
        }
    }

    /// Whether any connection follows an account (the host then hands over every event).
    pub fn has_watchers(&self) -> bool {
        !self.watchers.is_empty()
    }

    /// Events of a block (`seq`, the connection whose line caused it if any, the event):
    /// each goes to the connections following an account it names, other than the one
    /// whose line caused it (which hears it with its line), with `seq` and no `line`.
    pub fn block_events(&mut self, events: &[(u64, Option<u64>, Event)]) {
        let mut records = Vec::new();
        for (seq, origin, event) in events {
            let mut targets: Vec<u64> = Vec::new();
            for account in crate::server::event_accounts(event).into_iter().flatten() {
                for &target in self.watchers.get(&account).into_iter().flatten() {
                    if Some(target) != *origin && !targets.contains(&target) {
                        targets.push(target);
                    }
                }
            }
            if targets.is_empty() {
                continue;
            }
            records.clear();
            let one = std::slice::from_ref(event);
            self.translator
                .render(*seq, one, None, Echo::default(), &mut records);
            for target in targets {
                for record in &records {
                    self.send(target, &node_record(record, None, Some(*seq)));
                }
            }
        }
    }

    /// `{"op":"subscribe","account":A}`.
    fn subscribe(&mut self, id: u64, line: u64, request: &Value) {
        match request.get("account").and_then(Value::as_u64) {
            Some(account) if account < 1 << 63 => {
                self.watch(id, account);
                let reply = json!({"ev": "subscribed", "line": line, "account": account});
                self.send(id, &reply);
            }
            _ => {
                let detail = "field \"account\": expected an account id below 2^63";
                self.error(id, line, "malformed", detail);
            }
        }
    }

    fn send(&mut self, id: u64, value: &Value) {
        if let Some(connection) = self.connections.get(&id) {
            // A connection that does not read is dropped rather than waited for.
            if connection.outbox.try_send(value.to_string()).is_err() {
                self.drop_connection(id);
            }
        }
    }

    /// A line of connection `id` longer than `limit` bytes, skipped by its reader: it takes
    /// its line number and is answered `too_long`.
    pub fn too_long(&mut self, id: u64, limit: usize) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        connection.lines += 1;
        let line = connection.lines;
        let detail = format!("a line is at most {limit} bytes");
        let reply = json!({"ev": "error", "line": line, "reason": "too_long", "detail": detail});
        self.send(id, &reply);
    }

    /// A line from connection `id`. Answered at once (queries, errors), or turned into a
    /// signed transaction: returns its line number and bytes, to admit; its answers come
    /// through [`JsonPort::status`] and [`JsonPort::executed`]. A chain action goes to
    /// `desk`'s pool (answers through [`JsonPort::action_answered`]).
    pub fn line(
        &mut self,
        id: u64,
        text: &str,
        execution: &Execution,
        now_ms: u64,
        desk: ChainDesk<'_>,
    ) -> Option<(u64, Vec<u8>)> {
        let engine = execution.engine();
        let connection = self.connections.get_mut(&id)?;
        connection.lines += 1;
        let line = connection.lines;
        if text.trim().is_empty() {
            return None;
        }
        let request: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let op = request.get("op").and_then(Value::as_str).unwrap_or("");
        if op == "subscribe" {
            self.subscribe(id, line, &request);
            return None;
        }
        if op == "dev_accounts" {
            let accounts = &self.dev_accounts;
            let reply = json!({"ev": "dev_accounts", "line": line, "accounts": accounts});
            self.send(id, &reply);
            return None;
        }
        if op == "query" {
            self.query_line(id, line, &request, execution);
            return None;
        }
        if matches!(op, "gov_propose" | "gov_vote" | "governance") {
            self.governance_line(id, line, op, &request);
            return None;
        }
        if matches!(op, "action" | "staking") {
            self.chain_line((id, line), op, &request, desk);
            return None;
        }
        if op == "call" {
            return self.call_line(id, line, &request, now_ms);
        }
        if queries::QUERY_OPS.contains(&op) {
            let reply = match queries::answer(&mut self.translator, engine, &request) {
                Ok(reply) => reply,
                Err(e) => json!({"ev": "error", "reason": e.reason, "detail": e.detail}),
            };
            self.send(id, &with_line(reply, line));
            return None;
        }
        if Translator::is_registry_line(text) {
            let detail = "assets and markets are set by the chain's genesis";
            self.error(id, line, "not_allowed", detail);
            return None;
        }
        self.outputs.clear();
        let steps = self.translator.line(line, text, &mut self.outputs);
        for output in std::mem::take(&mut self.outputs) {
            self.send(id, &node_record(&output, Some(line), None));
        }
        let (account, actions, pending) = match self.actions(steps) {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err((reason, detail)) => {
                self.error(id, line, reason, &detail);
                return None;
            }
        };
        // The connection follows the accounts the line acts for: the signer's, or for a
        // faucet's deposit the account credited (not the faucet's).
        let mut followed: Vec<AccountId> = actions
            .iter()
            .filter_map(|action| match action {
                Action::Deposit { account, .. } => Some(*account),
                _ => None,
            })
            .collect();
        if self.dev_keys.contains_key(&account) {
            followed.push(account);
        }
        let bytes = self.sign(account, actions, now_ms)?;
        for account in followed {
            self.watch(id, account);
        }
        self.pending.insert((id, line), pending);
        Some((line, bytes))
    }

    /// `{"op":"query",...}`: the co-processor's read-only answer, at once.
    fn query_line(&mut self, id: u64, line: u64, request: &Value, execution: &Execution) {
        let call = match CallLine::parse(request) {
            Ok(call) => call,
            Err(detail) => return self.error(id, line, "malformed", &detail),
        };
        let Some(target) = execution.coprocessor(call.coprocessor) else {
            let detail = format!("no active co-processor has id {}", call.coprocessor);
            return self.error(id, line, "coprocessor_inactive", &detail);
        };
        let value = match target.query(call.account, call.method, &call.args) {
            Ok(result) => json!({
                "ev": "query", "line": line, "coprocessor": call.coprocessor,
                "result": sequencer::hex(&result),
            }),
            Err(refusal) => json!({
                "ev": "error", "line": line, "reason": refusal.code, "detail": refusal.reason,
            }),
        };
        self.send(id, &value);
    }

    /// `{"op":"call",...}`: a transaction of one call, signed for the line's account.
    fn call_line(
        &mut self,
        id: u64,
        line: u64,
        request: &Value,
        now_ms: u64,
    ) -> Option<(u64, Vec<u8>)> {
        let call = match CallLine::parse(request) {
            Ok(call) => call,
            Err(detail) => {
                self.error(id, line, "malformed", &detail);
                return None;
            }
        };
        if self.key(call.account).is_none() {
            let detail = format!(
                "this validator holds no development key of account {}",
                call.account
            );
            self.error(id, line, "no_dev_key", &detail);
            return None;
        }
        let action = Action::Call {
            coprocessor: call.coprocessor,
            method: call.method,
            args: call.args,
        };
        let bytes = self.sign(call.account, vec![action], now_ms)?;
        self.watch(id, call.account);
        let pending = PendingLine {
            actions: Vec::new(),
        };
        self.pending.insert((id, line), pending);
        Some((line, bytes))
    }

    /// The actions of a line's engine steps, all of one account: `Ok(None)` if there are
    /// none, `Err((reason, detail))` if a step is no transaction action or names an account
    /// without a development key here.
    #[allow(clippy::type_complexity)]
    fn actions(
        &self,
        steps: Vec<Step>,
    ) -> Result<Option<(AccountId, Vec<Action>, PendingLine)>, (&'static str, String)> {
        let mut account = None;
        let mut actions = Vec::new();
        let mut pending = PendingLine {
            actions: Vec::new(),
        };
        for step in steps {
            let Step::Run {
                command,
                market,
                echo,
            } = step
            else {
                continue;
            };
            let (signer, action) = match Action::from_command(&command) {
                Some(found) => found,
                None => self.role_action(&command)?,
            };
            if self.key(signer).is_none() {
                let detail = format!("this validator holds no development key of account {signer}");
                return Err(("no_dev_key", detail));
            }
            if account.is_some_and(|a| a != signer) {
                return Err(("malformed", "one line acts for one account".into()));
            }
            account = Some(signer);
            actions.push(action);
            pending.actions.push((market, echo));
        }
        Ok(account.map(|account| (account, actions, pending)))
    }

    /// A command only a role may sign: a deposit (the faucet) or a one-price oracle line
    /// (the feeder), with the role's account.
    fn role_action(
        &self,
        command: &Command,
    ) -> Result<(AccountId, Action), (&'static str, String)> {
        let role = |key: &SigningKey| account_id_of(&key.verifying_key().to_bytes());
        let not_allowed = |detail: &str| Err(("not_allowed", detail.to_string()));
        match (command, &self.roles) {
            (
                Command::Deposit {
                    account,
                    asset,
                    amount,
                },
                Some(roles),
            ) => {
                let action = Action::Deposit {
                    account: *account,
                    asset: *asset,
                    amount: *amount,
                };
                Ok((role(&roles.faucet), action))
            }
            (Command::Deposit { .. }, None) => {
                not_allowed("deposits need a faucet key, and this port holds none")
            }
            (
                Command::Oracle {
                    market,
                    prices,
                    count: 1,
                },
                Some(roles),
            ) => {
                let action = Action::OraclePrice {
                    market: *market,
                    price: prices[0],
                };
                Ok((role(&roles.feeder), action))
            }
            (Command::Oracle { .. }, Some(_)) => {
                let detail = "on a chain the feeder signs one price per market: give one".into();
                Err(("malformed", detail))
            }
            (Command::Oracle { .. }, None) => {
                not_allowed("oracle prices need a feeder key, and this port holds none")
            }
            _ => not_allowed("not a transaction action on a chain (funding runs on block time)"),
        }
    }

    /// The development key of `account`: a trading account's or a role's.
    fn key(&self, account: AccountId) -> Option<&SigningKey> {
        let role = |key: &&SigningKey| account_id_of(&key.verifying_key().to_bytes()) == account;
        self.dev_keys.get(&account).or_else(|| {
            let roles = self.roles.as_ref()?;
            [&roles.faucet, &roles.feeder].into_iter().find(role)
        })
    }

    /// Signs `actions` for `account` with a nonce above its last one here.
    fn sign(&mut self, account: AccountId, actions: Vec<Action>, now_ms: u64) -> Option<Vec<u8>> {
        let last = self.last_nonce.entry(account).or_default();
        let nonce = now_ms.max(*last + 1);
        *last = nonce;
        let key = self.key(account)?;
        let tx = Transaction {
            chain_id: self.chain_id,
            signer: key.verifying_key().to_bytes(),
            nonce,
            actions,
        };
        Some(tx.sign(key).bytes().to_vec())
    }

    fn error(&mut self, id: u64, line: u64, reason: &str, detail: &str) {
        let value = json!({"ev": "error", "line": line, "reason": reason, "detail": detail});
        self.send(id, &value);
    }

    /// What the mempool did with line `line`'s transaction (`hash` in hex).
    pub fn status(&mut self, id: u64, line: u64, hash: &str, status: LineStatus) {
        let value = match status {
            LineStatus::Admitted => json!({"ev": "admitted", "line": line, "hash": hash}),
            LineStatus::Refused(reason) => {
                self.pending.remove(&(id, line));
                json!({"ev": "refused", "line": line, "hash": hash, "reason": reason})
            }
            LineStatus::Evicted(reason) => {
                self.pending.remove(&(id, line));
                json!({"ev": "evicted", "line": line, "hash": hash, "reason": reason})
            }
        };
        self.send(id, &value);
        self.drop_if_done(id);
    }

    /// Line `line`'s transaction ran as input `seq` of block `height`: its results
    /// (`events` and co-processor `calls`, each with its action's index), then `sequenced`
    /// and `finalized`.
    pub fn executed(
        &mut self,
        id: u64,
        line: u64,
        (seq, height): (u64, u64),
        events: &[(usize, Event)],
        calls: &[(usize, CoprocessorId, CallResult)],
    ) {
        let Some(pending) = self.pending.remove(&(id, line)) else {
            return;
        };
        let mut outputs = Vec::new();
        for (index, (market, echo)) in pending.actions.into_iter().enumerate() {
            let own: Vec<Event> = events
                .iter()
                .filter(|(action, _)| *action == index)
                .map(|(_, event)| *event)
                .collect();
            self.translator
                .render(line, &own, market, echo, &mut outputs);
        }
        for output in &outputs {
            self.send(id, &node_record(output, Some(line), Some(seq)));
        }
        for &(action, coprocessor, result) in calls {
            let value = match result {
                Ok(result) => json!({
                    "ev": "call", "seq": seq, "line": line, "action": action,
                    "coprocessor": coprocessor, "result": sequencer::hex(&result),
                }),
                Err(refusal) => json!({
                    "ev": "call_refused", "seq": seq, "line": line, "action": action,
                    "coprocessor": coprocessor, "reason": refusal.code, "detail": refusal.reason,
                }),
            };
            self.send(id, &value);
        }
        for ev in ["sequenced", "finalized"] {
            let value = json!({"ev": ev, "seq": seq, "line": line, "height": height});
            self.send(id, &value);
        }
        self.drop_if_done(id);
    }
}

/// The fields of a `call` or `query` line.
struct CallLine {
    account: AccountId,
    coprocessor: CoprocessorId,
    method: u8,
    args: [u8; transactions::CALL_ARGS_LEN],
}

impl CallLine {
    /// Reads `account`, `coprocessor`, `method` and `args` (48 hex digits, optional).
    fn parse(request: &Value) -> Result<CallLine, String> {
        let number = |field: &str| {
            request
                .get(field)
                .and_then(Value::as_u64)
                .ok_or(format!("`{field}` must be a non-negative integer"))
        };
        let coprocessor = u32::try_from(number("coprocessor")?).map_err(|e| e.to_string())?;
        let method = u8::try_from(number("method")?).map_err(|_| "`method` is 0..=255")?;
        let mut args = [0u8; transactions::CALL_ARGS_LEN];
        if let Some(text) = request.get("args") {
            let text = text.as_str().ok_or("`args` must be a hex string")?;
            let bytes = alloy_primitives::hex::decode(text).map_err(|_| "`args` must be hex")?;
            if bytes.len() != args.len() {
                return Err(format!("`args` must be {} bytes", args.len()));
            }
            args.copy_from_slice(&bytes);
        }
        Ok(CallLine {
            account: number("account")?,
            coprocessor,
            method,
            args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that followed accounts and closed follows none any more (the block
    /// events would otherwise be gathered and matched against it for ever).
    #[test]
    fn a_closed_connection_stops_following_accounts() {
        let mut port = JsonPort::new("", [0; 32], &[], None).expect("an empty genesis");
        let (outbox, _replies) = mpsc::channel(4);
        port.connect(1, outbox.clone());
        port.connect(2, outbox);
        port.watch(1, 42);
        port.watch(1, 43);
        port.watch(2, 43);
        port.disconnect(1);
        assert_eq!(port.watchers.keys().copied().collect::<Vec<_>>(), [43]);
        assert_eq!(port.watchers[&43], [2]);
        port.disconnect(2);
        assert!(!port.has_watchers());
    }
}
