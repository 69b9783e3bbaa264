//! `nexus run`, the chain of one validator, as a real process with the shipped default
//! configuration (port 0 everywhere): the JSON port signs for the development accounts
//! (and as the faucet and feeder) and refuses every other account; a development key logs
//! in on the binary port and trades with signed transactions; Ethereum JSON-RPC answers;
//! empty blocks are paced; a second process on the same folder is refused; SIGTERM prints
//! `stopped`, and a restart continues the same chain with the same state and root. A
//! running validator's folder is locked against a second `nexus validator` or `nexus run`.

use std::ffi::OsStr;
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

mod common;
use common::{
    read_until, rpc, run_chain as run, signed_order_in, start_args, JsonClient, Node, Wallet, NEXUS,
};

/// The default genesis's two funded development accounts.
const A: u64 = 4026915798854129718;
const B: u64 = 4651036692225299837;
/// BTC-USD: market 0; 50000 USD is 100,000 ticks of 0.5.
const BTC_USD: u32 = 0;
const PRICE_50000: i64 = 100_000;

/// Sends SIGTERM to `node`'s process.
fn sigterm(node: &Node) {
    let pid = node.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// SIGTERM, then the `stopped` line: (height, root).
fn stop(mut node: Node) -> (u64, String) {
    sigterm(&node);
    let mut line = String::new();
    node.stdout.read_line(&mut line).expect("the stopped line");
    let stopped: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line:?}"));
    assert_eq!(stopped["event"], "stopped", "{stopped}");
    assert!(node.child.wait().expect("exit").success());
    let height = stopped["height"].as_u64().expect("height");
    (
        height,
        stopped["state_root"].as_str().expect("root").to_string(),
    )
}

fn order(account: u64, oid: u64, side: &str, qty: &str) -> Value {
    json!({"op": "order", "account": account, "market": "BTC-USD", "oid": oid, "side": side,
        "price": "50000", "qty": qty})
}

/// Sends line `line` and returns its replies up to its last one (`ev` = `last`).
fn exchange(client: &mut JsonClient, line: u64, request: Value, last: &str) -> Vec<Value> {
    client.send_json(&request);
    client.until(last, line)
}

fn evs(replies: &[Value]) -> Vec<&str> {
    replies
        .iter()
        .map(|r| r["ev"].as_str().unwrap_or(""))
        .collect()
}

/// The JSON port: trades, the faucet's deposit, the feeder's price, and typed refusals.
fn the_json_port_signs_for_development_keys_only(node: &Node) {
    let mut client = JsonClient::connect(node.address("listen"));
    let sell = exchange(&mut client, 1, order(A, 1, "sell", "0.5"), "finalized");
    assert_eq!(
        evs(&sell),
        ["admitted", "accepted", "sequenced", "finalized"]
    );
    let buy = exchange(&mut client, 2, order(B, 1, "buy", "0.2"), "finalized");
    assert_eq!(
        evs(&buy),
        ["admitted", "accepted", "fill", "sequenced", "finalized"]
    );
    let fill = &buy[2];
    assert_eq!(
        (fill["maker_account"].as_u64(), fill["qty"].as_str()),
        (Some(A), Some("0.2"))
    );
    let seq = |r: &Value| r["seq"].as_u64().expect("seq");
    assert_eq!(seq(&buy[4]), seq(&sell[3]) + 1, "one chain input per line");

    let deposit = json!({"op": "deposit", "account": B, "asset": "USD", "amount": "7"});
    let replies = exchange(&mut client, 3, deposit, "finalized");
    assert_eq!(evs(&replies)[0], "admitted");
    let oracle = json!({"op": "oracle", "market": "BTC-PERP", "prices": ["49000"]});
    assert_eq!(
        evs(&exchange(&mut client, 4, oracle, "finalized"))[0],
        "admitted"
    );

    let refusals = [
        (order(1, 1, "buy", "0.1"), "no_dev_key"),
        (
            json!({"op": "oracle", "market": "BTC-PERP", "prices": ["1", "2"]}),
            "malformed",
        ),
        (
            json!({"op": "funding", "market": "BTC-PERP"}),
            "not_allowed",
        ),
        (
            json!({"op": "asset", "asset": "ETH", "decimals": 18}),
            "not_allowed",
        ),
    ];
    for (i, (request, reason)) in refusals.into_iter().enumerate() {
        let replies = exchange(&mut client, 5 + i as u64, request, "error");
        assert_eq!(replies.last().unwrap()["reason"], reason, "{replies:?}");
    }
    let balances = exchange(
        &mut client,
        9,
        json!({"op": "balances", "account": B}),
        "balances",
    );
    let usd = balances[0]["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == "USD")
        .cloned()
        .expect("USD");
    // 10,000,000 - 1,000,000 to perps - 10,000 paid for 0.2 BTC - 5 taker fee + 7.
    assert_eq!(usd["total"], "8990002", "{usd}");

    // A connection that deposits to an account follows it (not the faucet): it hears the
    // fill of that account's resting order, caused by another connection.
    let mut funder = JsonClient::connect(node.address("listen"));
    let deposit = json!({"op": "deposit", "account": A, "asset": "USD", "amount": "1"});
    exchange(&mut funder, 1, deposit, "finalized");
    exchange(&mut client, 10, order(B, 2, "buy", "0.1"), "finalized");
    let heard = funder.next();
    assert_eq!(
        (heard["ev"].as_str(), heard["maker_account"].as_u64()),
        (Some("fill"), Some(A))
    );
    assert!(
        heard.get("line").is_none() && heard["seq"].is_u64(),
        "{heard}"
    );
}

/// A development key logs in on the binary port and trades with a signed transaction; its
/// market-data feed shows the level.
fn a_development_key_trades_on_the_binary_port(node: &Node, data: &Path) {
    use engine::{Side, TimeInForce};
    use gateway::client::{LoginOptions, OrderClient, ServerMessage as M};
    let seeds = std::fs::read_to_string(data.join("dev-keys.txt")).expect("dev-keys.txt");
    let seed = node::validator::unhex32(seeds.lines().next().expect("a key")).expect("hex");
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let address = node.address("order_entry");
    let mut client = OrderClient::connect(address, &key, LoginOptions::default()).expect("login");
    assert_eq!(client.session.account, A);
    let chain_id = client.session.chain.expect("a chain").chain_id;
    let tx = signed_order_in(
        &key,
        chain_id,
        BTC_USD,
        PRICE_50000,
        2,
        Side::Sell,
        3,
        TimeInForce::Gtc,
    );
    let seq = client.sender.transaction(&tx).expect("send");
    let replies = read_until(&mut client, |m| matches!(m, M::Finalized(_)));
    assert!(replies.iter().any(
        |m| matches!(m, M::OrderAccepted(a) if a.oid.get() == 2 && a.client_seq.get() == seq)
    ));
}

fn quantity(response: &Value) -> u64 {
    let text = response["result"]
        .as_str()
        .unwrap_or_else(|| panic!("{response}"));
    u64::from_str_radix(text.trim_start_matches("0x"), 16).expect("a quantity")
}

/// Ethereum JSON-RPC on the same chain: the development EVM key (the well-known test key,
/// as in `dev-evm-key.txt`) sends ether and gets a receipt; a transaction whose cost
/// overflows is refused at admission.
fn ethereum_json_rpc_runs_evm_transactions(node: &Node, data: &Path) {
    let address = node.address("eth_rpc");
    let secret = std::fs::read_to_string(data.join("dev-evm-key.txt")).expect("dev-evm-key.txt");
    let secret = node::validator::unhex32(secret.trim().trim_start_matches("0x")).expect("hex");
    let mut wallet = Wallet::new(&secret);
    let well_known = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
    assert_eq!(format!("{:#x}", wallet.address), well_known);
    assert_eq!(
        quantity(&rpc(address, "eth_chainId", json!([]))),
        common::EVM_CHAIN_ID
    );
    assert!(quantity(&rpc(address, "eth_blockNumber", json!([]))) >= 4);

    let to = alloy_primitives::Address::repeat_byte(0x42);
    let value = alloy_primitives::U256::from(1_000u64);
    let overflow = wallet.sign(wallet.tx(
        common::EVM_CHAIN_ID,
        Some(to),
        alloy_primitives::U256::MAX,
        vec![],
    ));
    let refused = rpc(address, "eth_sendRawTransaction", json!([overflow]));
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("overflow")),
        "{refused}"
    );
    let hash = wallet.send(address, Some(to), value, vec![]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let receipt = loop {
        let receipt = rpc(address, "eth_getTransactionReceipt", json!([hash]));
        if !receipt["result"].is_null() {
            break receipt["result"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no receipt for {hash}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    let balance = rpc(
        address,
        "eth_getBalance",
        json!([format!("{to:#x}"), "latest"]),
    );
    assert_eq!(quantity(&balance), 1_000);
}

/// `args` of the notary's `set`/`get`: key (u32 LE), then 20 value bytes, as hex.
fn notary_args(key: u32, value: u8) -> String {
    let mut args = key.to_le_bytes().to_vec();
    args.extend([value; 20]);
    args.iter().map(|b| format!("{b:02x}")).collect()
}

fn notary(op: &str, method: u8, key: u32, value: u8) -> Value {
    json!({"op": op, "account": A, "coprocessor": 1, "method": method,
        "args": notary_args(key, value)})
}

/// Governance on the JSON port: before the notary is enshrined a call is refused; the
/// validator proposes and votes its registration and activation; then calls reach it and
/// queries read it.
fn governance_enshrines_the_notary(node: &Node) {
    let mut client = JsonClient::connect(node.address("listen"));
    let early = exchange(&mut client, 1, notary("call", 1, 7, 0xaa), "refused");
    assert_eq!(early[0]["reason"], "coprocessor_inactive", "{}", early[0]);
    let query = exchange(&mut client, 2, notary("query", 1, 7, 0), "error");
    assert_eq!(query[0]["reason"], "coprocessor_inactive");
    let mut line = 2;
    let mut pass = |client: &mut JsonClient, proposal: Value| {
        line += 2;
        let queued = exchange(client, line - 1, proposal, "gov_included");
        assert_eq!(evs(&queued), ["gov_queued", "gov_included"], "{queued:?}");
        let id = queued[1]["proposal"].clone();
        let vote = json!({"op": "gov_vote", "proposal": id, "approve": true});
        let voted = exchange(client, line, vote, "gov_included");
        assert_eq!(voted[1]["proposal"], id);
    };
    let upgrade =
        json!({"op": "gov_propose", "upgrade": {"id": 1, "version": 1, "code": "notary"}});
    pass(&mut client, upgrade);
    pass(&mut client, json!({"op": "gov_propose", "activate": 1}));
    // The execution runs it from the second block after the one the vote passed in.
    let mut line = 6;
    let answered = (0..100).find_map(|_| {
        line += 1;
        client.send_json(&notary("query", 1, 7, 0));
        let reply = client.next();
        if reply["ev"] == "query" {
            return Some(reply);
        }
        std::thread::sleep(Duration::from_millis(100));
        None
    });
    let empty = format!("{}{}", "00".repeat(20), "00".repeat(12));
    assert_eq!(
        answered.expect("the notary activated")["result"],
        empty.as_str()
    );
    let set = exchange(
        &mut client,
        line + 1,
        notary("call", 1, 7, 0xaa),
        "finalized",
    );
    assert_eq!(
        evs(&set),
        ["admitted", "call", "sequenced", "finalized"],
        "{set:?}"
    );
    let again = exchange(
        &mut client,
        line + 2,
        notary("call", 1, 7, 0xbb),
        "finalized",
    );
    let previous = format!("{}01{}", "aa".repeat(20), "00".repeat(11));
    assert_eq!(again[1]["result"], previous.as_str());
    let stored = exchange(&mut client, line + 3, notary("query", 1, 7, 0), "query");
    assert!(stored[0]["result"]
        .as_str()
        .unwrap()
        .starts_with(&"bb".repeat(20)));
    let view = exchange(
        &mut client,
        line + 4,
        json!({"op": "governance"}),
        "governance",
    );
    let registry = view[0]["registry"].as_array().expect("registry");
    assert_eq!(registry.len(), 2, "{}", view[0]);
    assert_eq!(
        (registry[1]["id"].as_u64(), registry[1]["active"].as_bool()),
        (Some(1), Some(true))
    );
}

/// A binary session calls the (enshrined) notary in a signed transaction: its answer comes
/// as a `CallResult` before `Sequenced`; a call of a co-processor that is not active is
/// refused at admission with its code.
fn a_binary_session_calls_the_notary(node: &Node, data: &Path) {
    use gateway::client::{LoginOptions, OrderClient, ServerMessage as M};
    use gateway::wire::{CALL_OK, TX_REFUSED};
    let seeds = std::fs::read_to_string(data.join("dev-keys.txt")).expect("dev-keys.txt");
    let seed = node::validator::unhex32(seeds.lines().next().expect("a key")).expect("hex");
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let address = node.address("order_entry");
    let mut client = OrderClient::connect(address, &key, LoginOptions::default()).expect("login");
    let chain_id = client.session.chain.expect("a chain").chain_id;
    let call = |coprocessor, nonce_offset| {
        let mut args = [0u8; 24];
        args[..4].copy_from_slice(&9u32.to_le_bytes());
        args[4..].fill(0xcc);
        let now_ms = node::validator::now_ns() / 1_000_000;
        let action = transactions::Action::Call {
            coprocessor,
            method: 1,
            args,
        };
        transactions::Transaction {
            chain_id,
            signer: key.verifying_key().to_bytes(),
            nonce: now_ms + nonce_offset,
            actions: vec![action],
        }
        .sign(&key)
        .bytes()
        .to_vec()
    };
    let seq = client.sender.transaction(&call(1, 500)).expect("send");
    let replies = read_until(&mut client, |m| matches!(m, M::Finalized(_)));
    let answers: Vec<_> = replies
        .iter()
        .filter_map(|m| match m {
            M::CallResult(r) => Some(*r),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 1, "{replies:?}");
    let answer = answers[0];
    assert_eq!((answer.client_seq.get(), answer.status), (seq, CALL_OK));
    assert_eq!((answer.coprocessor.get(), answer.action.get()), (1, 0));
    assert_eq!(answer.result, [0; 32], "key 9 was empty");
    let at = |f: fn(&M) -> bool| replies.iter().position(f).expect("present");
    assert!(at(|m| matches!(m, M::CallResult(_))) < at(|m| matches!(m, M::Sequenced(_))));
    client.sender.transaction(&call(77, 501)).expect("send");
    let refused = read_until(&mut client, |m| matches!(m, M::TransactionStatus(_)));
    let Some(M::TransactionStatus(status)) = refused.last() else {
        panic!("{refused:?}")
    };
    assert_eq!((status.status, status.code.get()), (TX_REFUSED, 17));
}

#[test]
fn a_chain_of_one_trades_keeps_its_state_across_a_restart_and_paces_empty_blocks() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let data = folder.path().join("nexus-data");
    let node = run(&data);
    let dev_accounts = node.ready["dev_accounts"].as_array().expect("dev_accounts");
    assert_eq!(dev_accounts.len(), 10);
    assert_eq!(
        (dev_accounts[0].as_u64(), dev_accounts[1].as_u64()),
        (Some(A), Some(B))
    );
    the_json_port_signs_for_development_keys_only(&node);
    a_development_key_trades_on_the_binary_port(&node, &data);
    ethereum_json_rpc_runs_evm_transactions(&node, &data);
    governance_enshrines_the_notary(&node);
    a_binary_session_calls_the_notary(&node, &data);

    // One process per data folder.
    let second = std::process::Command::new(NEXUS)
        .args(["run", "--data-dir"])
        .arg(&data)
        .output()
        .expect("a second nexus run");
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use"));

    let chain_id = node.ready["chain_id"].clone();
    let (height, root) = stop(node);
    let node = run(&data);
    assert_eq!(node.ready["chain_id"], chain_id, "the same chain");
    assert_eq!(node.ready["height"].as_u64(), Some(height));
    assert_eq!(node.ready["state_root"].as_str(), Some(root.as_str()));
    let mut client = JsonClient::connect(node.address("listen"));
    let book = exchange(
        &mut client,
        1,
        json!({"op": "book", "market": "BTC-USD"}),
        "book",
    );
    assert_eq!(book[0]["asks"], json!([["50000", "0.2003"]]), "{}", book[0]);
    let sell = exchange(&mut client, 2, order(A, 3, "sell", "0.1"), "finalized");
    assert_eq!(evs(&sell)[..2], ["admitted", "accepted"]);

    // Idle, blocks come once a second at most (the default empty-block interval): an
    // upper bound, so a slow machine cannot fail it.
    let before = rpc(node.address("eth_rpc"), "eth_blockNumber", json!([]));
    std::thread::sleep(Duration::from_millis(2_500));
    let after = rpc(node.address("eth_rpc"), "eth_blockNumber", json!([]));
    let quantity = |v: &Value| {
        u64::from_str_radix(v["result"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    assert!(
        quantity(&after) - quantity(&before) <= 4,
        "{before} -> {after} in 2.5 s idle"
    );
    stop(node);
}

/// The next `final` line's height from a `nexus validator`'s standard output.
fn next_final_height(node: &mut Node) -> u64 {
    loop {
        let mut line = String::new();
        node.stdout.read_line(&mut line).expect("a line");
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line:?}"));
        if event["event"] == "final" {
            return event["height"].as_u64().expect("height");
        }
    }
}

/// What `command` printed and how it exited; killed if it still runs after 10 s (as a
/// second process that is not refused would), so a broken lock fails the test instead of
/// hanging it.
fn output_within_10_s(mut command: std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nexus");
    for _ in 0..500 {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().expect("its output")
}

/// SIGTERM to a `nexus validator`, then its `stopped` line's height.
fn stop_validator(mut node: Node) -> u64 {
    sigterm(&node);
    let height = loop {
        let mut line = String::new();
        node.stdout.read_line(&mut line).expect("the stopped line");
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line:?}"));
        if event["event"] == "stopped" {
            break event["height"].as_u64().expect("height");
        }
    };
    assert!(node.child.wait().expect("exit").success());
    height
}

/// One process per validator folder: while `nexus validator` runs on a folder, a second
/// `nexus validator` on it, and `nexus run` on the chain around it, exit with the lock's
/// error naming the folder and the running validator's pid, before they touch a file; the
/// first goes on deciding blocks, and its block file opens whole (no torn tail cut).
#[test]
fn a_running_validators_folder_is_locked_against_a_second_process() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let data = folder.path().join("nexus-data");
    let mut config = node::config::NodeConfig::load(None).expect("the default configuration");
    config.data_dir = data.clone();
    let free: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    config.ingress.listen = free;
    config.gateway.order_entry_listen = free;
    config.gateway.market_data_listen = free;
    config.chain.tx_listen = free;
    config.chain.eth_listen = free;
    config.chain.empty_block_interval_ms = 100;
    let prepared = node::chain_run::prepare(&config, node::chain_run::ChainGenesis::Configured)
        .expect("the chain file and key");
    let args: Vec<&OsStr> = vec![
        "validator".as_ref(),
        "--config".as_ref(),
        prepared.chain_file.as_os_str(),
        "--index".as_ref(),
        "0".as_ref(),
        "--data-dir".as_ref(),
        prepared.validator_dir.as_os_str(),
    ];
    let mut first = start_args(&args);
    let height = next_final_height(&mut first);
    let blocks = prepared.validator_dir.join("blocks");
    let chain_file = std::fs::read(&prepared.chain_file).expect("chain.toml");
    let held = format!(
        "data folder {} is in use by another process (pid {})",
        prepared.validator_dir.display(),
        first.child.id()
    );

    let mut second = std::process::Command::new(NEXUS);
    second.args(&args);
    let mut run = std::process::Command::new(NEXUS);
    run.args(["run", "--data-dir"]).arg(&data);
    for refused in [second, run].map(output_within_10_s) {
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{stderr}");
        assert!(stderr.contains(&held), "{stderr}");
        assert!(refused.stdout.is_empty(), "no ready line");
    }
    assert_eq!(std::fs::read(&prepared.chain_file).unwrap(), chain_file);

    let later = (0..3).map(|_| next_final_height(&mut first)).last();
    assert!(later.expect("a height") >= height + 3);
    let stopped = stop_validator(first);
    let (store, cut) = consensus_net::BlockStore::open(&blocks).expect("the block file");
    assert_eq!(cut, 0, "no torn tail");
    assert_eq!(store.height(), stopped);
}

/// A JSON port off loopback is refused before anything is written: no data folder, no lock
/// files (docs/node.md, "Configuration").
#[test]
fn a_json_port_off_loopback_is_refused_before_anything_is_written() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let data = folder.path().join("nexus-data");
    let out = std::process::Command::new(common::NEXUS)
        .args(["run", "--quiet", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&data)
        .output()
        .expect("nexus run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("loopback only"), "{stderr}");
    assert!(!data.exists(), "{} was created", data.display());
}
