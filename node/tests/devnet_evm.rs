//! NexusEVM on a real four-process devnet: transactions signed here go to one validator's
//! Ethereum JSON-RPC port, are forwarded, proposed and executed by every validator, and are
//! read back from another's. A MarketMaker contract deployed through validator 1 (receipt
//! read on validator 3: same block hash and contract address), funded by a CoreWriter
//! deposit and told to quote through validator 2, rests its bid on the Core book that
//! validator 0's JSON port shows. Malformed and wrong-chain raw transactions get JSON-RPC
//! errors, and every validator's execution root stays equal. Every block's Ethereum header
//! up to the quote's, rebuilt from validator 3's JSON, hashes to the served hash and its
//! tries match (`common::eth`). Validator 3's filters and WebSocket subscription report the
//! transactions and the log that came through validator 2; validators 1 and 3 trace the
//! quote alike, and validator 1 signs for the development account. Bounded: every wait has a
//! deadline and the children are killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use alloy_primitives::{hex, keccak256, Address, U256};
use node::validator::{read_config, DevnetConfig};
use serde_json::{json, Value};

mod common;
use common::{post, rpc, Wallet};

const VALIDATORS: usize = 4;
/// The devnet EVM's chain id (`EvmConfig::default`).
const CHAIN_ID: u64 = common::EVM_CHAIN_ID;
/// Wei per Core unit of the native asset (`EvmConfig::default`).
const WEI_PER_UNIT: u64 = 1_000_000_000_000;

/// Validator processes, killed on drop, with their log lines on a channel.
struct Cluster {
    children: Vec<Child>,
    rx: Receiver<(usize, Value)>,
    /// Each height's root, as the first validator logged it.
    roots: std::collections::BTreeMap<u64, String>,
    heights: [u64; VALIDATORS],
    ready: Vec<Value>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    fn start(exe: &Path, config: &Path) -> Cluster {
        let (tx, rx) = mpsc::channel();
        let mut children = Vec::new();
        for i in 0..VALIDATORS {
            let mut child = Command::new(exe)
                .args(["validator", "--index", &i.to_string(), "--config"])
                .arg(config)
                .stdout(Stdio::piped())
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn validator");
            let stdout = child.stdout.take().expect("stdout");
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let value: Value = serde_json::from_str(&line).expect("JSON log line");
                    if tx.send((i, value)).is_err() {
                        break;
                    }
                }
            });
            children.push(child);
        }
        Cluster {
            children,
            rx,
            roots: Default::default(),
            heights: [0; VALIDATORS],
            ready: Vec::new(),
        }
    }

    /// Reads log lines for at most `wait`, checking that every validator's root at each
    /// height is the same.
    fn pump(&mut self, wait: Duration) {
        let end = Instant::now() + wait;
        while let Ok((i, v)) = self
            .rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            match v["event"].as_str() {
                Some("final") => {
                    let h = v["height"].as_u64().expect("height");
                    let root = v["root"].as_str().expect("root").to_string();
                    let first = self.roots.entry(h).or_insert_with(|| root.clone());
                    assert_eq!(*first, root, "validator {i} has another root at {h}");
                    self.heights[i] = self.heights[i].max(h);
                }
                Some("ready") => self.ready.push(v),
                _ => {}
            }
            if Instant::now() >= end {
                break;
            }
        }
    }

    /// Pumps logs until `done` returns something, or panics after `limit`.
    fn until<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&Cluster) -> Option<T>,
    ) -> T {
        let end = Instant::now() + limit;
        loop {
            if let Some(out) = done(self) {
                return out;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}: heights {:?}",
                self.heights
            );
            self.pump(Duration::from_millis(100));
        }
    }
}

/// Validator `v`'s filters (installed before `sent` went to another validator) report
/// forwarded transactions as pending, and only those, and the contract's log `quoted` (and
/// only its logs). A transaction is pending on `v` only if its forward reached `v` before the
/// block holding it (as in Ethereum, one first seen in a block is never pending): proposals
/// go on the consensus lane, ahead of forwarded transactions, so on a loaded machine a
/// proposal can overtake one forward. Both overtaking theirs is not expected.
fn filters_on_another_validator(
    v: SocketAddr,
    filters: (&Value, &Value),
    sent: &[&String],
    quoted: &Value,
) {
    let (logs, pending) = filters;
    let pooled = result(v, "eth_getFilterChanges", json!([pending]));
    let pooled = pooled.as_array().expect("hashes");
    assert!(
        sent.iter().any(|hash| pooled.contains(&json!(hash))),
        "one of {sent:?} in {pooled:?}"
    );
    assert!(
        pooled
            .iter()
            .all(|hash| sent.iter().any(|s| *hash == json!(s))),
        "only {sent:?} in {pooled:?}"
    );
    let changes = result(v, "eth_getFilterChanges", json!([logs]));
    let changes = changes.as_array().expect("logs");
    assert!(changes.contains(quoted), "{changes:?}");
    assert!(changes.iter().all(|l| l["address"] == quoted["address"]));
}

fn result(addr: SocketAddr, method: &str, params: Value) -> Value {
    let response = rpc(addr, method, params.clone());
    assert!(
        response.get("error").is_none(),
        "{method} {params}: {response}"
    );
    response["result"].clone()
}

fn word(n: u64) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[24..].copy_from_slice(&n.to_be_bytes());
    w
}

fn calldata(signature: &str, words: &[[u8; 32]]) -> Vec<u8> {
    let mut out = keccak256(signature.as_bytes())[..4].to_vec();
    for w in words {
        out.extend_from_slice(w);
    }
    out
}

/// The MarketMaker fixture's creation code for the devnet's market.
fn market_maker_deploy() -> Vec<u8> {
    let json: Value =
        serde_json::from_str(include_str!("../../evm-bridge/contracts/MarketMaker.json")).unwrap();
    let mut bytes = hex::decode(json["bytecode"].as_str().unwrap()).unwrap();
    bytes.extend_from_slice(&word(u64::from(node::load::MARKET)));
    bytes
}

fn eth_addr(config: &DevnetConfig, i: usize) -> SocketAddr {
    config.validators[i].eth_addr.expect("an Ethereum RPC port")
}

/// Waits for a transaction's receipt on validator `i`.
fn receipt(cluster: &mut Cluster, addr: SocketAddr, hash: &str) -> Value {
    cluster.until(
        &format!("receipt of {hash}"),
        Duration::from_secs(20),
        |_| {
            let r = result(addr, "eth_getTransactionReceipt", json!([hash]));
            (!r.is_null()).then_some(r)
        },
    )
}

/// Waits until validator `addr` has executed EVM block `number` (validators run a block or
/// so apart).
fn reach(cluster: &mut Cluster, addr: SocketAddr, number: &Value) {
    let quantity = |v: &Value| {
        u64::from_str_radix(v.as_str().expect("a quantity").trim_start_matches("0x"), 16)
            .expect("hex")
    };
    let want = quantity(number);
    cluster.until(
        &format!("block {want} on {addr}"),
        Duration::from_secs(20),
        |_| (quantity(&result(addr, "eth_blockNumber", json!([]))) >= want).then_some(()),
    );
}

/// The devnet's configuration: fixed ports below the ephemeral range, no load, and a
/// connection rate of 5 transactions a second (the test's batch goes past it).
fn init(dir: &Path) -> PathBuf {
    common::init_devnet(dir, &["--base-port", "21200", "--connection-rate", "5"])
}

#[test]
fn a_contract_deployed_through_one_validator_quotes_on_the_book_of_every_validator() {
    let dir = tempfile::tempdir().expect("dir");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_nexus"));
    let config_path = init(dir.path());
    let config = read_config(&config_path).expect("config");
    let secret = config.dev_evm_secret().expect("the development EVM key");
    let written = std::fs::read_to_string(dir.path().join("dev-evm-key.txt")).expect("key file");
    assert_eq!(written.trim(), format!("0x{}", hex::encode(secret)));
    let mut cluster = Cluster::start(&exe, &config_path);
    cluster.until("4 validators ready", Duration::from_secs(20), |c| {
        (c.ready.len() == VALIDATORS).then_some(())
    });
    for ready in &cluster.ready {
        let i = ready["index"].as_u64().expect("index") as usize;
        assert_eq!(ready["eth_rpc"], eth_addr(&config, i).to_string());
    }
    let (v0, v1, v2, v3) = (
        eth_addr(&config, 0),
        eth_addr(&config, 1),
        eth_addr(&config, 2),
        eth_addr(&config, 3),
    );
    assert_eq!(
        result(v0, "eth_chainId", json!([])),
        format!("{CHAIN_ID:#x}")
    );
    let mut owner = Wallet::new(&secret);
    let balance = result(v3, "eth_getBalance", json!([owner.address, "latest"]));
    assert_eq!(
        balance,
        format!("{:#x}", node::validator::dev_evm_balance())
    );

    // Refusals: not a transaction; signed for another chain.
    let malformed = rpc(v1, "eth_sendRawTransaction", json!(["0x02c0ffee"]));
    assert_eq!(malformed["error"]["code"], -32602, "{malformed}");
    let other = owner.sign(owner.tx(1, None, U256::ZERO, market_maker_deploy()));
    let wrong_chain = rpc(v1, "eth_sendRawTransaction", json!([other]));
    assert_eq!(wrong_chain["error"]["code"], -32000, "{wrong_chain}");
    assert!(
        wrong_chain["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("chain")),
        "{wrong_chain}"
    );

    // One connection's raw transactions beyond its rate (5 a second, bursts of 5) are
    // refused before they are decoded.
    let batch: Vec<Value> = (0..8)
        .map(|id| json!({"jsonrpc": "2.0", "id": id, "method": "eth_sendRawTransaction", "params": ["0x02c0ffee"]}))
        .collect();
    let answers = post(v2, &Value::Array(batch));
    let codes: Vec<i64> = answers
        .as_array()
        .expect("a batch answer")
        .iter()
        .map(|a| a["error"]["code"].as_i64().expect("an error"))
        .collect();
    assert!(codes.contains(&-32005), "{answers}");
    assert!(
        codes.iter().filter(|c| **c == -32602).count() <= 6,
        "{answers}"
    );

    // Deploy through validator 1; the receipt on validator 3 names the same block.
    let deploy = owner.send(v1, None, U256::ZERO, market_maker_deploy());
    // Pending (block fields null) or already included: known by its hash either way.
    let sent = result(v1, "eth_getTransactionByHash", json!([deploy]));
    assert_eq!(sent["hash"], deploy, "{sent}");
    assert_eq!(sent["from"], json!(owner.address), "{sent}");
    let on_3 = receipt(&mut cluster, v3, &deploy);
    let on_1 = receipt(&mut cluster, v1, &deploy);
    assert_eq!(on_3["status"], "0x1", "{on_3}");
    assert_eq!(on_3["blockHash"], on_1["blockHash"]);
    assert_eq!(on_3["contractAddress"], on_1["contractAddress"]);
    let mm: Address = on_3["contractAddress"].as_str().unwrap().parse().unwrap();
    reach(&mut cluster, v2, &on_3["blockNumber"]);
    reach(&mut cluster, v0, &on_3["blockNumber"]);
    let block = result(v2, "eth_getBlockByHash", json!([on_3["blockHash"], false]));
    assert_eq!(block["transactions"][0], deploy);
    let code = result(v0, "eth_getCode", json!([mm, "latest"]));
    assert!(code.as_str().unwrap().len() > 2, "code deployed");
    // Validator 3 reports what arrives through validator 2: a log filter, a pending filter
    // (transactions forwarded by a peer) and a WebSocket logs subscription.
    let log_filter = result(v3, "eth_newFilter", json!([{"address": mm}]));
    let pending_filter = result(v3, "eth_newPendingTransactionFilter", json!([]));
    let mut ws = common::ws::Ws::connect(v3);
    let subscription = ws.subscribe(json!(["logs", {"address": mm}]));

    // Fund its Core account with 10,000 native (QUOTE) units through CoreWriter.
    let units = 10_000u64;
    let value = U256::from(units) * U256::from(WEI_PER_UNIT);
    let deposit = owner.send(v2, Some(mm), value, calldata("deposit()", &[]));
    assert_eq!(receipt(&mut cluster, v2, &deposit)["status"], "0x1");
    let quote_asset = 1u64;
    let core_balance = calldata("coreBalance(uint32)", &[word(quote_asset)]);
    cluster.until("the deposit on Core", Duration::from_secs(20), |_| {
        let out = result(
            v2,
            "eth_call",
            json!([{"to": mm, "data": format!("0x{}", hex::encode(&core_balance))}, "latest"]),
        );
        let bytes = hex::decode(out.as_str().unwrap()).unwrap();
        (bytes.len() >= 32 && U256::from_be_slice(&bytes[..32]) == U256::from(units)).then_some(())
    });

    // Quote 90 / 110 x 5 through validator 2: the bid rests on Core (the contract holds no
    // BASE, so its ask is refused by the engine and reported back by callback).
    let quote = calldata(
        "quote(uint64,uint64,uint64)",
        &[word(90), word(110), word(5)],
    );
    let quoted = owner.send(v2, Some(mm), U256::ZERO, quote);
    let r = receipt(&mut cluster, v0, &quoted);
    assert_eq!(r["status"], "0x1", "{r}");
    assert!(
        !r["logs"].as_array().unwrap().is_empty(),
        "Quoted is logged"
    );
    reach(&mut cluster, v3, &r["blockNumber"]);
    let logs = result(
        v3,
        "eth_getLogs",
        json!([{"address": mm, "fromBlock": r["blockNumber"], "toBlock": r["blockNumber"]}]),
    );
    let mine: Vec<&Value> = r["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["address"] == json!(mm))
        .collect();
    assert_eq!(mine.len(), 1, "Quoted: {r}");
    assert_eq!(logs.as_array().unwrap().iter().collect::<Vec<_>>(), mine);
    filters_on_another_validator(
        v3,
        (&log_filter, &pending_filter),
        &[&deposit, &quoted],
        mine[0],
    );
    let pushed = (0..10)
        .map(|_| ws.next(&subscription))
        .find(|log| log["transactionHash"] == json!(quoted))
        .expect("the Quoted log pushed by validator 3");
    assert_eq!(&pushed, mine[0]);

    let json_addr = config.validators[0].json_addr.expect("JSON port");
    let mut json_port = common::JsonClient::connect(json_addr);
    cluster.until(
        "the bid on validator 0's book",
        Duration::from_secs(20),
        |_| {
            json_port.send_json(&json!({"op": "book", "market": "BASE-QUOTE"}));
            let book = json_port.next();
            (book["bids"] == json!([["90", "5"]])).then_some(())
        },
    );

    // Every validator executed the same blocks: equal roots up to a common height.
    let target = cluster.heights.iter().copied().max().unwrap() + 2;
    cluster.until(
        "every validator 2 heights further",
        Duration::from_secs(20),
        |c| c.heights.iter().all(|h| *h >= target).then_some(()),
    );
    let head = result(v0, "eth_blockNumber", json!([]));
    assert!(
        u64::from_str_radix(head.as_str().unwrap().trim_start_matches("0x"), 16).unwrap() >= target
    );

    // Ethereum's headers on another validator, rebuilt independently and chained from
    // genesis up to the quote's block; the same receipts on two validators; three peers.
    let quoted_in = common::eth::q(&r["blockNumber"]);
    common::eth::check_chain(v3, 0, quoted_in);
    let receipts = result(v1, "eth_getBlockReceipts", json!([r["blockNumber"]]));
    assert_eq!(
        receipts,
        result(v3, "eth_getBlockReceipts", json!([r["blockNumber"]]))
    );
    assert!(receipts.as_array().is_some_and(|r| !r.is_empty()));
    assert_eq!(result(v2, "net_peerCount", json!([])), "0x3");
    traces_and_dev_signing(&mut cluster, (v1, v3), mm, &quoted);
}

/// Issue #14 item 3 across validators: the quote (sent through validator 2) traced by
/// validators 1 and 3 with `callTracer` gives the same frames, whose calls to CoreWriter
/// carry its calldata (the bid's `placeOrder`); validator 1 signs a transfer for the
/// development account (`eth_accounts`), and validator 3 executes it.
fn traces_and_dev_signing(
    cluster: &mut Cluster,
    (v1, v3): (SocketAddr, SocketAddr),
    mm: Address,
    quoted: &str,
) {
    let calls = json!({"tracer": "callTracer"});
    let on_1 = result(v1, "debug_traceTransaction", json!([quoted, calls]));
    let on_3 = result(v3, "debug_traceTransaction", json!([quoted, calls]));
    assert_eq!(on_1, on_3, "every validator re-executes the same way");
    assert_eq!(on_1["to"], json!(mm), "{on_1}");
    let core_writer = "0x3333333333333333333333333333333333333333";
    let writes: Vec<&Value> = on_1["calls"]
        .as_array()
        .unwrap_or_else(|| panic!("{on_1}"))
        .iter()
        .filter(|frame| frame["to"] == core_writer)
        .collect();
    let place = hex::encode(
        &alloy_primitives::keccak256("placeOrder(uint32,uint64,bool,uint64,uint64,uint8,bool)")
            [..4],
    );
    assert!(
        writes.iter().any(|frame| frame["input"]
            .as_str()
            .is_some_and(|input| input.starts_with(&format!("0x{place}")))),
        "a placeOrder call to CoreWriter: {on_1}"
    );
    let accounts = result(v1, "eth_accounts", json!([]));
    let dev = accounts[0].clone();
    assert_eq!(accounts, result(v3, "eth_accounts", json!([])));
    let payee = Address::with_last_byte(0x66);
    let sent = result(
        v1,
        "eth_sendTransaction",
        json!([{"from": dev, "to": payee, "value": "0x7"}]),
    );
    let paid = receipt(cluster, v3, sent.as_str().expect("a hash"));
    assert_eq!((&paid["status"], &paid["from"]), (&json!("0x1"), &dev));
}
