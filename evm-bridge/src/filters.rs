//! Ethereum log criteria and polling filters (`eth_newFilter`, `eth_newBlockFilter`,
//! `eth_newPendingTransactionFilter`, `eth_getFilterChanges`, `eth_getFilterLogs`,
//! `eth_uninstallFilter`), as geth defines them, over any [`History`] of executed blocks.
//!
//! Pure: the time (ms) and each new filter's id are parameters (the node draws ids from
//! the OS's random source). Filters keep no copies of blocks or logs: a block or log
//! filter remembers the next block it has not reported, and changes are read from the
//! history when polled; a pending-transaction filter remembers a position in one shared,
//! bounded list of admitted hashes ([`PENDING_REMEMBERED`]).

use std::collections::{HashMap, VecDeque};

use crate::eth::{block_number, hash, log_json, parse_address, parse_hash, History, RpcError};
use crate::executor::{BlockHeader, LogRecord};
use alloy_primitives::{Address, B256};
use serde_json::Value;

/// A filter not polled for this long is removed (geth's 5 minutes).
pub const FILTER_TIMEOUT_MS: u64 = 5 * 60 * 1000;
/// Most filters installed at once (all kinds); more are refused with `-32005`.
pub const MAX_FILTERS: usize = 1024;
/// Admitted transaction hashes remembered for pending-transaction filters: a filter polled
/// less often than this many admissions misses the oldest.
pub const PENDING_REMEMBERED: usize = 4096;
/// Widest block range one `eth_getLogs` / `eth_getFilterLogs` may scan.
pub const MAX_LOG_RANGE: u64 = 10_000;

/// One end of a block range: a number, or the head at the time it is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// `latest` (also `pending`, `safe`, `finalized`, or absent).
    Latest,
    /// A block number (`earliest` is 0).
    Number(u64),
}

impl Bound {
    fn parse(history: &impl History, v: Option<&Value>) -> Result<Bound, RpcError> {
        match v.and_then(Value::as_str) {
            None | Some("latest" | "pending" | "safe" | "finalized") => Ok(Bound::Latest),
            Some(_) => Ok(Bound::Number(block_number(history, v)?)),
        }
    }

    fn at(self, head: u64) -> u64 {
        match self {
            Bound::Latest => head,
            Bound::Number(n) => n,
        }
    }
}

/// Log criteria (`eth_getLogs`, `eth_newFilter`, `eth_subscribe("logs")`): a block range
/// or one block hash, addresses (any of them; none = all) and topics by position, each
/// position `null` or `[]` (any), one hash, or a list of hashes (any of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFilter {
    /// First block (`fromBlock`).
    pub from: Bound,
    /// Last block (`toBlock`).
    pub to: Bound,
    /// Only this block (`blockHash`, EIP-234), instead of the range.
    pub block_hash: Option<B256>,
    /// Emitters; empty matches every address.
    pub addresses: Vec<Address>,
    /// Topic sets by position; an empty set matches any topic.
    pub topics: Vec<Vec<B256>>,
}

impl LogFilter {
    /// Criteria for new blocks (`eth_newFilter`, a `logs` subscription): `blockHash` is
    /// refused, as it names a past block.
    pub fn parse_live(history: &impl History, v: Option<&Value>) -> Result<LogFilter, RpcError> {
        let criteria = LogFilter::parse(history, v)?;
        if criteria.block_hash.is_some() {
            return Err(RpcError::params("blockHash is only for eth_getLogs"));
        }
        Ok(criteria)
    }

    /// The criteria of a filter object (`None`: every log).
    pub fn parse(history: &impl History, v: Option<&Value>) -> Result<LogFilter, RpcError> {
        let empty = serde_json::Map::new();
        let object = match v {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(object)) => object,
            Some(_) => return Err(RpcError::params("expected a filter object")),
        };
        let field = |name: &str| object.get(name).filter(|v| !v.is_null());
        let block_hash = field("blockHash")
            .map(|h| parse_hash(Some(h)))
            .transpose()?;
        if block_hash.is_some() && (field("fromBlock").is_some() || field("toBlock").is_some()) {
            return Err(RpcError::params(
                "blockHash cannot be combined with fromBlock or toBlock",
            ));
        }
        Ok(LogFilter {
            from: Bound::parse(history, field("fromBlock"))?,
            to: Bound::parse(history, field("toBlock"))?,
            block_hash,
            addresses: parse_addresses(field("address"))?,
            topics: parse_topics(field("topics"))?,
        })
    }

    /// Whether a log matches addresses and topics (geth's rule: a log with fewer topics
    /// than the filter lists positions never matches, even if the extra ones are
    /// wildcards).
    pub fn matches(&self, log: &LogRecord) -> bool {
        if !self.addresses.is_empty() && !self.addresses.contains(&log.address) {
            return false;
        }
        if self.topics.len() > log.topics.len() {
            return false;
        }
        self.topics
            .iter()
            .zip(&log.topics)
            .all(|(want, got)| want.is_empty() || want.contains(got))
    }

    /// Whether block `n` is inside the range, `latest` ends left open (what a filter polled
    /// for changes or a subscription uses; these refuse `blockHash`).
    pub fn open_range_contains(&self, n: u64) -> bool {
        let after_from = matches!(self.from, Bound::Latest) || self.from.at(0) <= n;
        let before_to = matches!(self.to, Bound::Latest) || self.to.at(0) >= n;
        after_from && before_to
    }

    /// The JSON of every matching log of the range (or the hash's block), `latest` being
    /// the head now, in block order; a range wider than [`MAX_LOG_RANGE`] is refused.
    pub fn logs(&self, history: &impl History) -> Result<Value, RpcError> {
        let (from, to) = match self.block_hash {
            Some(h) => {
                let b = history
                    .header_by_hash(&h)
                    .ok_or_else(|| RpcError::server("unknown block hash"))?;
                (b.number, b.number)
            }
            None => {
                let head = history.head();
                let from = self.from.at(head).max(history.oldest());
                (from, self.to.at(head).min(head))
            }
        };
        if from > to.saturating_add(1) || to - from.min(to) > MAX_LOG_RANGE {
            return Err(RpcError::server(format!(
                "block range {from}..={to} invalid or wider than {MAX_LOG_RANGE}"
            )));
        }
        let mut out = Vec::new();
        for header in (from..=to).filter_map(|n| history.header(n)) {
            self.block_logs(history, header, &mut out);
        }
        Ok(Value::Array(out))
    }

    /// Appends the JSON of the block's logs that match addresses and topics.
    pub fn block_logs(&self, history: &impl History, header: &BlockHeader, out: &mut Vec<Value>) {
        for tx_hash in &header.tx_hashes {
            let Some((_, receipt)) = history.tx(tx_hash) else {
                continue;
            };
            let matching = receipt.logs.iter().filter(|log| self.matches(log));
            out.extend(matching.map(|log| log_json(log, receipt, header)));
        }
    }
}

/// `address`: one address or a list.
fn parse_addresses(v: Option<&Value>) -> Result<Vec<Address>, RpcError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(list)) => list.iter().map(|v| parse_address(Some(v))).collect(),
        Some(v) => Ok(vec![parse_address(Some(v))?]),
    }
}

/// `topics`: by position, `null`, one hash, or a list of hashes.
fn parse_topics(v: Option<&Value>) -> Result<Vec<Vec<B256>>, RpcError> {
    let list = match v {
        None => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(RpcError::params("topics must be an array")),
    };
    if list.len() > 4 {
        return Err(RpcError::params("at most 4 topic positions"));
    }
    list.iter()
        .map(|t| match t {
            Value::Null => Ok(Vec::new()),
            Value::Array(any) => any.iter().map(|h| parse_hash(Some(h))).collect(),
            one => Ok(vec![parse_hash(Some(one))?]),
        })
        .collect()
}

/// What a filter reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterKind {
    /// Matching logs of new blocks (`eth_newFilter`).
    Logs(LogFilter),
    /// Hashes of new blocks (`eth_newBlockFilter`).
    Blocks,
    /// Hashes of transactions admitted to the pool (`eth_newPendingTransactionFilter`).
    Pending,
}

/// One installed filter.
#[derive(Debug)]
struct Filter {
    kind: FilterKind,
    /// The first block not reported yet.
    next_block: u64,
    /// The first admission (sequence number) not reported yet.
    next_pending: u64,
    /// Removed if not polled by then (ms).
    deadline_ms: u64,
}

/// The filters installed on one validator, and the admitted transactions they report.
#[derive(Debug, Default)]
pub struct Filters {
    filters: HashMap<u128, Filter>,
    /// Hashes of the newest admitted transactions; the front one is number
    /// `pending_next - pending.len()`.
    pending: VecDeque<B256>,
    pending_next: u64,
}

/// `filter not found` (geth's text: ethers re-installs its filter on it).
pub fn not_found() -> RpcError {
    RpcError::server("filter not found")
}

impl Filters {
    /// No filters.
    pub fn new() -> Filters {
        Filters::default()
    }

    /// How many are installed (expired ones included until the next call that sweeps).
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// Whether none is installed.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Installs a filter reporting what comes after the current head and pool, under `id`;
    /// returns the id as a hex quantity. Refused beyond [`MAX_FILTERS`].
    pub fn install(
        &mut self,
        id: u128,
        kind: FilterKind,
        history: &impl History,
        now_ms: u64,
    ) -> Result<Value, RpcError> {
        self.expire(now_ms);
        if self.filters.len() >= MAX_FILTERS {
            return Err(RpcError {
                code: -32005,
                message: format!(
                    "too many filters: at most {MAX_FILTERS} installed (uninstall or let expire)"
                ),
                data: None,
            });
        }
        if self.filters.contains_key(&id) {
            return Err(RpcError::server("filter id already in use"));
        }
        let filter = Filter {
            kind,
            next_block: history.head() + 1,
            next_pending: self.pending_next,
            deadline_ms: now_ms.saturating_add(FILTER_TIMEOUT_MS),
        };
        self.filters.insert(id, filter);
        Ok(Value::String(format!("{id:#x}")))
    }

    /// `eth_getFilterChanges`: what happened since the last poll (or the install), and the
    /// filter's deadline moves on.
    pub fn changes(
        &mut self,
        id: Option<&Value>,
        history: &impl History,
        now_ms: u64,
    ) -> Result<Value, RpcError> {
        self.expire(now_ms);
        let id = parse_id(id)?;
        let (first_seq, pending) = (self.pending_next - self.pending.len() as u64, &self.pending);
        let filter = self.filters.get_mut(&id).ok_or_else(not_found)?;
        filter.deadline_ms = now_ms.saturating_add(FILTER_TIMEOUT_MS);
        if filter.kind == FilterKind::Pending {
            let skip = filter.next_pending.saturating_sub(first_seq) as usize;
            let out = pending.iter().skip(skip).map(|h| hash(*h)).collect();
            filter.next_pending = first_seq + pending.len() as u64;
            return Ok(Value::Array(out));
        }
        let head = history.head();
        let blocks =
            (filter.next_block.max(history.oldest())..=head).filter_map(|n| history.header(n));
        let mut out = Vec::new();
        for header in blocks {
            match &filter.kind {
                FilterKind::Logs(criteria) if criteria.open_range_contains(header.number) => {
                    criteria.block_logs(history, header, &mut out)
                }
                FilterKind::Blocks => out.push(hash(header.hash)),
                _ => {}
            }
        }
        filter.next_block = filter.next_block.max(head + 1);
        Ok(Value::Array(out))
    }

    /// `eth_getFilterLogs`: every log of a log filter's range as `eth_getLogs` answers it
    /// (the deadline does not move, as in geth).
    pub fn logs(
        &mut self,
        id: Option<&Value>,
        history: &impl History,
        now_ms: u64,
    ) -> Result<Value, RpcError> {
        self.expire(now_ms);
        let id = parse_id(id)?;
        match self.filters.get(&id).map(|f| &f.kind) {
            Some(FilterKind::Logs(criteria)) => criteria.logs(history),
            _ => Err(not_found()),
        }
    }

    /// `eth_uninstallFilter`: whether the filter was installed.
    pub fn uninstall(&mut self, id: Option<&Value>, now_ms: u64) -> Result<Value, RpcError> {
        self.expire(now_ms);
        Ok(Value::Bool(self.filters.remove(&parse_id(id)?).is_some()))
    }

    /// A transaction admitted to the pool (its Ethereum hash).
    pub fn note_pending(&mut self, tx: B256) {
        self.pending.push_back(tx);
        self.pending_next += 1;
        if self.pending.len() > PENDING_REMEMBERED {
            self.pending.pop_front();
        }
    }

    /// Removes the filters whose deadline passed (at most [`MAX_FILTERS`] to look at).
    pub fn expire(&mut self, now_ms: u64) {
        self.filters.retain(|_, f| f.deadline_ms > now_ms);
    }
}

/// A filter id: a hex quantity of at most 128 bits.
fn parse_id(v: Option<&Value>) -> Result<u128, RpcError> {
    v.and_then(Value::as_str)
        .and_then(|s| s.strip_prefix("0x"))
        .and_then(|s| u128::from_str_radix(s, 16).ok())
        .ok_or_else(|| RpcError::params("expected a filter id (hex quantity)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log(address: u8, topics: &[u8]) -> LogRecord {
        LogRecord {
            address: Address::with_last_byte(address),
            topics: topics.iter().map(|t| B256::with_last_byte(*t)).collect(),
            data: Default::default(),
            log_index: 0,
        }
    }

    fn criteria(v: Value) -> LogFilter {
        struct Empty;
        impl History for Empty {
            fn head(&self) -> u64 {
                9
            }
            fn oldest(&self) -> u64 {
                0
            }
            fn header(&self, _: u64) -> Option<&BlockHeader> {
                None
            }
            fn header_by_hash(&self, _: &B256) -> Option<&BlockHeader> {
                None
            }
            fn tx(
                &self,
                _: &B256,
            ) -> Option<(&crate::executor::TxRecord, &crate::executor::Receipt)> {
                None
            }
        }
        LogFilter::parse(&Empty, Some(&v)).expect("criteria")
    }

    fn topic(n: u8) -> String {
        format!("{:#x}", B256::with_last_byte(n))
    }

    /// Topic positions: `null` and `[]` match anything, a list any of its hashes, and a
    /// log with fewer topics than positions never matches (geth).
    #[test]
    fn topics_match_by_position_with_or_lists_and_wildcards() {
        let or = criteria(json!({"topics": [[topic(1), topic(2)]]}));
        assert!(or.matches(&log(1, &[1])) && or.matches(&log(1, &[2, 5])));
        assert!(!or.matches(&log(1, &[3])) && !or.matches(&log(1, &[])));
        let wildcard = criteria(json!({"topics": [null, topic(7)]}));
        assert!(wildcard.matches(&log(1, &[4, 7])));
        assert!(!wildcard.matches(&log(1, &[7, 4])));
        let trailing = criteria(json!({"topics": [topic(1), []]}));
        assert!(trailing.matches(&log(1, &[1, 9])));
        assert!(
            !trailing.matches(&log(1, &[1])),
            "fewer topics than positions"
        );
        let address = format!("{:#x}", Address::with_last_byte(2));
        let by_address = criteria(json!({"address": [address]}));
        assert!(by_address.matches(&log(2, &[])) && !by_address.matches(&log(3, &[])));
    }

    /// Pending filters report each admitted hash once, from their install on.
    #[test]
    fn a_pending_filter_reports_each_admission_once() {
        let (_, genesis) = crate::executor::Executor::genesis(
            Default::default(),
            &crate::executor::Genesis::default(),
        );
        let history = Single(genesis.header);
        let mut filters = Filters::new();
        filters.note_pending(B256::with_last_byte(1));
        let id = filters
            .install(7, FilterKind::Pending, &history, 0)
            .expect("installed");
        assert_eq!(id, json!("0x7"));
        filters.note_pending(B256::with_last_byte(2));
        let first = filters.changes(Some(&id), &history, 1).expect("changes");
        assert_eq!(first, json!([topic(2)]));
        assert_eq!(filters.changes(Some(&id), &history, 2).unwrap(), json!([]));
        let late = FILTER_TIMEOUT_MS + 3;
        assert_eq!(filters.changes(Some(&id), &history, late), Err(not_found()));
    }

    struct Single(BlockHeader);
    impl History for Single {
        fn head(&self) -> u64 {
            self.0.number
        }
        fn oldest(&self) -> u64 {
            self.0.number
        }
        fn header(&self, n: u64) -> Option<&BlockHeader> {
            (n == self.0.number).then_some(&self.0)
        }
        fn header_by_hash(&self, _: &B256) -> Option<&BlockHeader> {
            None
        }
        fn tx(&self, _: &B256) -> Option<(&crate::executor::TxRecord, &crate::executor::Receipt)> {
            None
        }
    }
}
