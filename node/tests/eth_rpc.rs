//! Issue #14, items 1 and 3, on the built `nexus-evm` binary: every block's header is
//! Ethereum's (hash = keccak256(rlp(header)) rebuilt from the JSON fields, the ordered
//! tries of transactions and receipts, empty-trie and empty-list roots, the bloom, the size,
//! parent hashes that chain), with legacy, EIP-2930, EIP-1559 and system (0x7f)
//! transactions; and the block, transaction, uncle, access-list, node and pool methods
//! answer as geth does; item 2: filters over HTTP and subscriptions over WebSocket; item 4:
//! state reads and calls at a past block, and the window's error; item 3's development
//! signing (signatures recovered independently, EIP-712's published digest) and tracing
//! (struct logs, nested call frames); `eth_getProof` verified against `stateRoot`. Bounded: every wait has a deadline, the process is
//! killed on drop.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use alloy_consensus::{TxEip2930, TxLegacy};
use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_primitives::{hex, keccak256, Address, Bytes, TxKind, B256, U256};
use serde_json::{json, Value};

mod common;
use common::eth::{check_block, check_chain, q, result};
use common::{rpc, Wallet, EVM_CHAIN_ID};

/// The empty trie's root, as Ethereum defines it.
const EMPTY_TRIE: &str = "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421";
/// keccak256 of the RLP of an empty list (`sha3Uncles` of a block without ommers).
const EMPTY_OMMERS: &str = "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347";
/// Wei per Core unit of the native asset (`EvmConfig::default`).
const WEI_PER_UNIT: u64 = 1_000_000_000_000;
/// An account the probe contract reads the balance of.
const READ: Address = Address::with_last_byte(0xad);

fn start() -> (common::Node, SocketAddr) {
    let args = ["--rpc", "127.0.0.1:0", "--block-ms", "200"];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let node = common::start_exe(env!("CARGO_BIN_EXE_nexus-evm"), &args);
    let addr = node.ready["eth_rpc"].as_str().expect("eth_rpc").parse();
    (node, addr.expect("an address"))
}

fn wait<T>(what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(out) = done() {
            return out;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn receipt(addr: SocketAddr, hash: &str) -> Value {
    wait(&format!("receipt of {hash}"), || {
        let r = result(addr, "eth_getTransactionReceipt", json!([hash]));
        (!r.is_null()).then_some(r)
    })
}

fn head(addr: SocketAddr) -> u64 {
    q(&result(addr, "eth_blockNumber", json!([])))
}

/// Sends a signed raw transaction; returns its hash.
fn send(addr: SocketAddr, raw: String) -> String {
    let hash = result(addr, "eth_sendRawTransaction", json!([raw]));
    hash.as_str().expect("a hash").to_string()
}

fn market_maker_deploy() -> Vec<u8> {
    let json: Value =
        serde_json::from_str(include_str!("../../evm-bridge/contracts/MarketMaker.json")).unwrap();
    let mut bytes = hex::decode(json["bytecode"].as_str().unwrap()).unwrap();
    let mut market = [0u8; 32];
    market[31] = node::load::MARKET as u8;
    bytes.extend_from_slice(&market);
    bytes
}

/// Initcode of a contract whose code reads slots 0 and 3 and the balance of [`READ`]:
/// `PUSH1 0 SLOAD POP PUSH1 3 SLOAD POP PUSH20 READ BALANCE POP STOP`.
fn probe_deploy() -> Vec<u8> {
    let mut runtime = vec![0x60, 0x00, 0x54, 0x50, 0x60, 0x03, 0x54, 0x50, 0x73];
    runtime.extend_from_slice(READ.as_slice());
    runtime.extend_from_slice(&[0x31, 0x50, 0x00]);
    assert_eq!(runtime.len(), 32);
    // CODECOPY(0, 12, 32) RETURN(0, 32), then the runtime at offset 12.
    let mut init = vec![
        0x60, 0x20, 0x60, 0x0c, 0x60, 0x00, 0x39, 0x60, 0x20, 0x60, 0x00, 0xf3,
    ];
    init.extend_from_slice(&runtime);
    init
}

/// The transactions of every type this chain runs, and a CoreWriter deposit whose result
/// comes back as a system transaction; returns (deployed MarketMaker, probe, their deploy
/// receipts).
fn fill_blocks(addr: SocketAddr, owner: &mut Wallet) -> (Address, Address, Value) {
    // EIP-1559 with an access list: the MarketMaker.
    let mut deploy = owner.tx(EVM_CHAIN_ID, None, U256::ZERO, market_maker_deploy());
    deploy.access_list = AccessList(vec![AccessListItem {
        address: READ,
        storage_keys: vec![B256::with_last_byte(7)],
    }]);
    let deployed = receipt(addr, &send(addr, owner.sign(deploy)));
    owner.nonce += 1;
    let mm: Address = deployed["contractAddress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // Legacy (EIP-155): deposit() into Core through CoreWriter.
    let deposit = TxLegacy {
        chain_id: Some(EVM_CHAIN_ID),
        nonce: owner.nonce,
        gas_price: 2_000_000_000,
        gas_limit: 500_000,
        to: TxKind::Call(mm),
        value: U256::from(1_000u64) * U256::from(WEI_PER_UNIT),
        input: Bytes::from(keccak256("deposit()")[..4].to_vec()),
    };
    let deposited = receipt(addr, &send(addr, owner.sign_any(deposit)));
    owner.nonce += 1;
    assert_eq!(deposited["status"], "0x1", "{deposited}");
    // EIP-2930: a transfer with an access list.
    let transfer = TxEip2930 {
        chain_id: EVM_CHAIN_ID,
        nonce: owner.nonce,
        gas_price: 2_000_000_000,
        gas_limit: 100_000,
        to: TxKind::Call(READ),
        value: U256::from(5u64),
        access_list: AccessList(vec![AccessListItem {
            address: mm,
            storage_keys: vec![B256::ZERO],
        }]),
        input: Bytes::new(),
    };
    receipt(addr, &send(addr, owner.sign_any(transfer)));
    owner.nonce += 1;
    let probe = owner.send(addr, None, U256::ZERO, probe_deploy());
    let probe: Address = receipt(addr, &probe)["contractAddress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (mm, probe, deployed)
}

/// Finds a block after `from` holding a system transaction (the deposit's callback).
fn system_block(addr: SocketAddr, from: u64) -> u64 {
    wait("the deposit's callback", || {
        (from..=head(addr)).find(|n| {
            let block = result(
                addr,
                "eth_getBlockByNumber",
                json!([format!("{n:#x}"), true]),
            );
            block["transactions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["type"] == "0x7f")
        })
    })
}

#[test]
fn every_header_field_is_ethereums_and_the_added_methods_answer() {
    let (_node, addr) = start();
    let secret: [u8; 32] = hex::decode(node::chain_run::DEV_EVM_SECRET)
        .unwrap()
        .try_into()
        .unwrap();
    let mut owner = Wallet::new(&secret);
    wait("block 2", || (head(addr) >= 2).then_some(()));

    // An empty block: the empty-trie roots and the empty-list ommers hash.
    let empty = check_block(addr, 1);
    assert_eq!(empty["transactionsRoot"], EMPTY_TRIE);
    assert_eq!(empty["receiptsRoot"], EMPTY_TRIE);
    assert_eq!(empty["withdrawalsRoot"], EMPTY_TRIE);
    assert_eq!(empty["sha3Uncles"], EMPTY_OMMERS);
    assert_eq!(empty["logsBloom"], format!("0x{}", "00".repeat(256)));

    let (mm, probe, deployed) = fill_blocks(addr, &mut owner);
    let system = system_block(addr, q(&deployed["blockNumber"]));
    let blocks = check_chain(addr, 0, head(addr));
    let types: std::collections::BTreeSet<String> = blocks
        .iter()
        .flat_map(|b| b["transactions"].as_array().unwrap().clone())
        .map(|t| t["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        ["0x0", "0x1", "0x2", "0x7f"].map(String::from).into(),
        "every transaction type was checked"
    );
    assert!(
        blocks[system as usize]["logsBloom"] != empty["logsBloom"],
        "the callback's logs are in the bloom"
    );

    block_methods(addr, &deployed);
    uncle_methods(addr, &deployed);
    access_lists(addr, &owner, mm, probe);
    node_methods(addr, &empty);
}

/// `eth_getBlockReceipts`, `eth_getTransactionByBlock*AndIndex`,
/// `eth_getBlockTransactionCountBy*`.
fn block_methods(addr: SocketAddr, deployed: &Value) {
    let (number, hash) = (&deployed["blockNumber"], &deployed["blockHash"]);
    let block = result(addr, "eth_getBlockByHash", json!([hash, true]));
    let txs = block["transactions"].as_array().unwrap();
    let by_number = result(addr, "eth_getBlockReceipts", json!([number]));
    assert_eq!(by_number.as_array().unwrap().len(), txs.len());
    assert_eq!(
        result(addr, "eth_getBlockReceipts", json!([hash])),
        by_number
    );
    let by_object = result(addr, "eth_getBlockReceipts", json!([{"blockHash": hash}]));
    assert_eq!(by_object, by_number);
    assert!(result(addr, "eth_getBlockReceipts", json!(["latest"])).is_array());
    assert_eq!(
        result(addr, "eth_getBlockReceipts", json!(["0xffffff"])),
        Value::Null
    );
    for (i, tx) in txs.iter().enumerate() {
        let index = format!("{i:#x}");
        let own = result(addr, "eth_getTransactionReceipt", json!([tx["hash"]]));
        assert_eq!(by_number[i], own);
        let at = result(
            addr,
            "eth_getTransactionByBlockNumberAndIndex",
            json!([number, index]),
        );
        assert_eq!(&at, tx);
        assert_eq!(
            at,
            result(addr, "eth_getTransactionByHash", json!([tx["hash"]]))
        );
        let at = result(
            addr,
            "eth_getTransactionByBlockHashAndIndex",
            json!([hash, index]),
        );
        assert_eq!(&at, tx);
    }
    let past = format!("{:#x}", txs.len());
    let none = result(
        addr,
        "eth_getTransactionByBlockNumberAndIndex",
        json!([number, past]),
    );
    assert_eq!(none, Value::Null);
    let none = result(
        addr,
        "eth_getTransactionByBlockHashAndIndex",
        json!([hash, past]),
    );
    assert_eq!(none, Value::Null);
    let count = format!("{:#x}", txs.len());
    assert_eq!(
        result(
            addr,
            "eth_getBlockTransactionCountByNumber",
            json!([number])
        ),
        count
    );
    assert_eq!(
        result(addr, "eth_getBlockTransactionCountByHash", json!([hash])),
        count
    );
    let unknown = format!("{:#x}", B256::with_last_byte(1));
    let none = result(addr, "eth_getBlockTransactionCountByHash", json!([unknown]));
    assert_eq!(none, Value::Null);
    let bad = rpc(
        addr,
        "eth_getTransactionByBlockNumberAndIndex",
        json!([number]),
    );
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
}

/// Blocks have no ommers: counts are 0 (`null` for an unknown block), uncles `null`.
fn uncle_methods(addr: SocketAddr, deployed: &Value) {
    let (number, hash) = (&deployed["blockNumber"], &deployed["blockHash"]);
    assert_eq!(
        result(addr, "eth_getUncleCountByBlockNumber", json!([number])),
        "0x0"
    );
    assert_eq!(
        result(addr, "eth_getUncleCountByBlockHash", json!([hash])),
        "0x0"
    );
    let unknown = format!("{:#x}", B256::with_last_byte(1));
    let none = result(addr, "eth_getUncleCountByBlockHash", json!([unknown]));
    assert_eq!(none, Value::Null);
    let none = result(addr, "eth_getUncleCountByBlockNumber", json!(["0xffffff"]));
    assert_eq!(none, Value::Null);
    let uncle = result(
        addr,
        "eth_getUncleByBlockNumberAndIndex",
        json!([number, "0x0"]),
    );
    assert_eq!(uncle, Value::Null);
    let uncle = result(
        addr,
        "eth_getUncleByBlockHashAndIndex",
        json!([hash, "0x0"]),
    );
    assert_eq!(uncle, Value::Null);
}

/// `eth_createAccessList`: the probe's two slots and the account it reads, the gas of the
/// call with that list counted by hand; a reverting call answers with its error; the list
/// and gas agree with `eth_estimateGas` given the list.
fn access_lists(addr: SocketAddr, owner: &Wallet, mm: Address, probe: Address) {
    let call = json!({"from": owner.address, "to": probe});
    let answer = result(addr, "eth_createAccessList", json!([call, "latest"]));
    let slot = |n: u8| format!("{:#x}", B256::with_last_byte(n));
    let mut expected = vec![
        json!({"address": READ, "storageKeys": []}),
        json!({"address": probe, "storageKeys": [slot(0), slot(3)]}),
    ];
    expected.sort_by_key(|item| item["address"].as_str().unwrap().to_string());
    assert_eq!(answer["accessList"], json!(expected), "{answer}");
    assert!(answer.get("error").is_none(), "{answer}");
    // 21,000 + 2 addresses x 2,400 + 2 keys x 1,900, then warm reads: 3 x (3 + 100 + 2).
    assert_eq!(q(&answer["gasUsed"]), 21_000 + 4_800 + 3_800 + 315);
    let with_list = json!({"from": owner.address, "to": probe, "accessList": expected});
    let estimate = result(addr, "eth_estimateGas", json!([with_list]));
    assert_eq!(estimate, answer["gasUsed"]);
    // A call that reverts still gets its list, with the reason.
    let bad = json!({"from": owner.address, "to": "0x3333333333333333333333333333333333333333",
        "data": "0xdeadbeef"});
    let answer = result(addr, "eth_createAccessList", json!([bad]));
    assert_eq!(answer["accessList"], json!([]), "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("execution reverted"), "{answer}");
    // The MarketMaker's view reads its own slots and calls a precompile (not listed).
    let view = format!("0x{}", hex::encode(&keccak256("coreBalance(uint32)")[..4]));
    let view = format!("{view}{:064x}", 1);
    let answer = result(
        addr,
        "eth_createAccessList",
        json!([{"to": mm, "data": view}]),
    );
    for item in answer["accessList"].as_array().unwrap() {
        let a: Address = item["address"].as_str().unwrap().parse().unwrap();
        assert!(a == mm || a.as_slice()[..18] != [0u8; 18], "{answer}");
    }
}

/// `eth_coinbase`, `net_listening`, `net_peerCount`, `web3_sha3`, `txpool_*`.
fn node_methods(addr: SocketAddr, block: &Value) {
    assert_eq!(result(addr, "eth_coinbase", json!([])), block["miner"]);
    assert_eq!(result(addr, "net_listening", json!([])), true);
    assert_eq!(
        result(addr, "net_peerCount", json!([])),
        "0x0",
        "a chain of one"
    );
    let sha = result(addr, "web3_sha3", json!(["0x68656c6c6f20776f726c64"]));
    assert_eq!(
        sha,
        "0x47173285a8d7341e5e972fc677286384f802f8ef42a5ec5f03bbfa254cb01fad"
    );
    assert_eq!(sha, format!("{:#x}", keccak256("hello world")));
    let bad = rpc(addr, "web3_sha3", json!(["hello"]));
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    core_asset_token(addr);
    // Everything sent was included: the pool is empty.
    assert_eq!(
        result(addr, "txpool_status", json!([])),
        json!({"pending": "0x0", "queued": "0x0"})
    );
    assert_eq!(
        result(addr, "txpool_content", json!([])),
        json!({"pending": {}, "queued": {}})
    );
}

/// The devnet genesis's asset 0 (`BASE`, 0 decimals) has its ERC-20 at `0x2000…0000`, named
/// from the genesis line (read by `eth_call` and, `name` in slot 3, by
/// `eth_getStorageAt`); the native asset 1 (`QUOTE`) has none.
fn core_asset_token(addr: SocketAddr) {
    let token = "0x2000000000000000000000000000000000000000";
    let call = |signature: &str| {
        let data = format!("0x{}", hex::encode(&keccak256(signature)[..4]));
        result(
            addr,
            "eth_call",
            json!([{"to": token, "data": data}, "latest"]),
        )
    };
    let mut base = [0u8; 32];
    base[..4].copy_from_slice(b"BASE");
    base[31] = 8;
    let symbol = format!(
        "0x{:064x}{:064x}{}",
        32,
        4,
        hex::encode(&base[..4]) + &"0".repeat(56)
    );
    assert_eq!(call("symbol()"), symbol);
    assert_eq!(call("decimals()"), format!("0x{:064x}", 0));
    assert_eq!(call("totalSupply()"), format!("0x{:064x}", 0));
    let name = result(addr, "eth_getStorageAt", json!([token, "0x3", "latest"]));
    assert_eq!(name, format!("{}", B256::from(base)));
    let native = "0x2000000000000000000000000000000000000001";
    assert_eq!(result(addr, "eth_getCode", json!([native, "latest"])), "0x");
}

/// Initcode of a contract that logs its calldata's two words as topics:
/// `PUSH1 32 CALLDATALOAD PUSH1 0 CALLDATALOAD PUSH1 0 PUSH1 0 LOG2 STOP`.
fn emitter_deploy() -> Vec<u8> {
    let runtime = [
        0x60, 0x20, 0x35, 0x60, 0x00, 0x35, 0x60, 0x00, 0x60, 0x00, 0xa2, 0x00,
    ];
    let mut init = vec![
        0x60, 0x0c, 0x60, 0x0c, 0x60, 0x00, 0x39, 0x60, 0x0c, 0x60, 0x00, 0xf3,
    ];
    init.extend_from_slice(&runtime);
    init
}

/// A topic word.
fn word(n: u8) -> B256 {
    B256::with_last_byte(n)
}

/// Deploys a contract; its address.
fn deploy(addr: SocketAddr, owner: &mut Wallet, init: Vec<u8>) -> Address {
    let hash = owner.send(addr, None, U256::ZERO, init);
    let deployed = receipt(addr, &hash);
    deployed["contractAddress"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("deployed: {deployed}"))
}

/// Emits a log with topics `[t0, t1]` from `emitter`; the transaction's hash (not waited).
fn emit(addr: SocketAddr, owner: &mut Wallet, emitter: Address, t0: u8, t1: u8) -> String {
    let mut input = word(t0).to_vec();
    input.extend_from_slice(word(t1).as_slice());
    owner.send(addr, Some(emitter), U256::ZERO, input)
}

/// The transaction hashes of a list of logs.
fn log_txs(logs: &Value) -> Vec<String> {
    let logs = logs.as_array().unwrap_or_else(|| panic!("logs: {logs}"));
    logs.iter()
        .map(|l| l["transactionHash"].as_str().unwrap().to_string())
        .collect()
}

/// The error code of a call that must fail.
fn error_code(addr: SocketAddr, method: &str, params: Value) -> i64 {
    let response = rpc(addr, method, params);
    response["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("{method} must fail: {response}"))
}

/// Issue #14 item 2 over HTTP: log filters see exactly the matching logs (topic OR-lists,
/// `null` wildcards, address, block range), `eth_getFilterChanges` only what is new since
/// the last poll, block and pending filters the new blocks and admitted transactions, and
/// an uninstalled or unknown id is `-32000 filter not found`; the number of filters is
/// bounded (`-32005`).
#[test]
fn filters_report_matching_logs_blocks_and_pending_transactions_once() {
    let (_node, addr) = start();
    let mut owner = Wallet::new(&dev_secret());
    let emitter = deploy(addr, &mut owner, emitter_deploy());
    let topic = |n: u8| format!("{:#x}", word(n));
    let new_filter = |criteria: Value| result(addr, "eth_newFilter", json!([criteria]));
    let or = new_filter(json!({"address": emitter, "topics": [[topic(1), topic(2)]]}));
    let wildcard = new_filter(json!({"topics": [null, topic(9)]}));
    let blocks = result(addr, "eth_newBlockFilter", json!([]));
    let pending = result(addr, "eth_newPendingTransactionFilter", json!([]));
    let installed = head(addr);

    let sent = [(1, 9), (2, 8), (3, 9)].map(|(a, b)| emit(addr, &mut owner, emitter, a, b));
    let receipts = sent.each_ref().map(|h| receipt(addr, h));
    let changes = |id: &Value| result(addr, "eth_getFilterChanges", json!([id]));
    assert_eq!(
        log_txs(&changes(&or)),
        [&sent[0], &sent[1]].map(String::from)
    );
    assert_eq!(
        log_txs(&changes(&wildcard)),
        [&sent[0], &sent[2]].map(String::from)
    );
    assert_eq!(changes(&or), json!([]), "nothing new since the last poll");
    let pooled = changes(&pending);
    assert_eq!(pooled, json!(sent), "each admitted transaction, in order");
    assert_eq!(changes(&pending), json!([]));
    let reported = changes(&blocks);
    let first = consecutive_blocks(addr, &reported);
    assert!(
        first <= installed + 1,
        "from the install on: {first}, {installed}"
    );
    // Only what is new: one more matching log, one more non-matching.
    let fourth = emit(addr, &mut owner, emitter, 2, 7);
    let fifth = emit(addr, &mut owner, emitter, 4, 4);
    receipt(addr, &fourth);
    receipt(addr, &fifth);
    assert_eq!(log_txs(&changes(&or)), [&fourth].map(String::from));
    assert_eq!(changes(&wildcard), json!([]));
    let later = changes(&blocks);
    let next = first + reported.as_array().unwrap().len() as u64;
    assert_eq!(
        consecutive_blocks(addr, &later),
        next,
        "only blocks after the last poll"
    );

    // fromBlock/toBlock: exactly the second transaction's block.
    let second = &receipts[1]["blockNumber"];
    let ranged = new_filter(json!({"fromBlock": second, "toBlock": second, "address": emitter}));
    let logs = result(addr, "eth_getFilterLogs", json!([ranged]));
    assert_eq!(log_txs(&logs), [&sent[1]].map(String::from));
    let all = new_filter(
        json!({"fromBlock": "earliest", "address": emitter, "topics": [[topic(2), topic(3)]]}),
    );
    let logs = result(addr, "eth_getFilterLogs", json!([all]));
    assert_eq!(
        log_txs(&logs),
        [&sent[1], &sent[2], &fourth].map(String::from)
    );
    let same = result(
        addr,
        "eth_getLogs",
        json!([{"fromBlock": "earliest", "address": emitter, "topics": [[topic(2), topic(3)]]}]),
    );
    assert_eq!(logs, same);

    // Uninstalled, unknown: typed errors.
    assert_eq!(result(addr, "eth_uninstallFilter", json!([or])), true);
    assert_eq!(result(addr, "eth_uninstallFilter", json!([or])), false);
    let gone = rpc(addr, "eth_getFilterChanges", json!([or]));
    assert_eq!(gone["error"]["code"], -32000, "{gone}");
    assert_eq!(gone["error"]["message"], "filter not found", "{gone}");
    assert_eq!(
        error_code(addr, "eth_getFilterLogs", json!(["0x1234"])),
        -32000
    );
    assert_eq!(
        error_code(addr, "eth_getFilterLogs", json!([blocks])),
        -32000,
        "not a log filter"
    );
    assert_eq!(
        error_code(addr, "eth_getFilterChanges", json!(["zz"])),
        -32602
    );
    filter_bound(addr);
}

/// Checks that `hashes` are those of consecutive blocks; the first one's number.
fn consecutive_blocks(addr: SocketAddr, hashes: &Value) -> u64 {
    let hashes = hashes
        .as_array()
        .unwrap_or_else(|| panic!("hashes: {hashes}"));
    let block = |h: &Value| result(addr, "eth_getBlockByHash", json!([h, false]));
    let first = q(&block(&hashes[0])["number"]);
    for (i, h) in hashes.iter().enumerate() {
        assert_eq!(q(&block(h)["number"]), first + i as u64, "{hashes:?}");
    }
    first
}

/// Filters are bounded: installing past `MAX_FILTERS` (1,024) is refused with `-32005`.
fn filter_bound(addr: SocketAddr) {
    for installed in 0.. {
        let response = rpc(addr, "eth_newBlockFilter", json!([]));
        if response.get("error").is_some() {
            assert_eq!(response["error"]["code"], -32005, "{response}");
            assert!((1000..=1024).contains(&installed), "{installed}");
            return;
        }
        assert!(installed < 1024, "unbounded: {response}");
    }
}

fn dev_secret() -> [u8; 32] {
    hex::decode(node::chain_run::DEV_EVM_SECRET)
        .unwrap()
        .try_into()
        .unwrap()
}

/// Issue #14 item 2 over WebSocket (same port): `newHeads` for consecutive blocks (each the
/// header `eth_getBlockByNumber` serves), `logs` for a matching emitted event only, and
/// `newPendingTransactions` for a sent transaction; `eth_unsubscribe` ends one.
#[test]
fn websocket_subscriptions_push_heads_logs_and_pending_transactions() {
    let (_node, addr) = start();
    let mut owner = Wallet::new(&dev_secret());
    let emitter = deploy(addr, &mut owner, emitter_deploy());
    let mut ws = common::ws::Ws::connect(addr);
    let heads = ws.subscribe(json!(["newHeads"]));
    assert!(heads.starts_with("0x"), "{heads}");
    let topic = format!("{:#x}", word(5));
    let logs = ws.subscribe(json!(["logs", {"address": emitter, "topics": [topic]}]));
    let pending = ws.subscribe(json!(["newPendingTransactions"]));

    let other = emit(addr, &mut owner, emitter, 6, 1);
    let wanted = emit(addr, &mut owner, emitter, 5, 1);
    assert_eq!(ws.next(&pending), json!(other));
    assert_eq!(ws.next(&pending), json!(wanted));
    let log = ws.next(&logs);
    assert_eq!(
        log["transactionHash"],
        json!(wanted),
        "only the matching log: {log}"
    );
    assert_eq!(log["topics"][0], json!(topic));
    let included = receipt(addr, &wanted);
    assert_eq!(log, included["logs"][0]);

    let mut previous: Option<Value> = None;
    for _ in 0..4 {
        let header = ws.next(&heads);
        let n = q(&header["number"]);
        let served = result(
            addr,
            "eth_getBlockByNumber",
            json!([format!("{n:#x}"), false]),
        );
        assert_eq!(header["hash"], served["hash"]);
        assert_eq!(header["stateRoot"], served["stateRoot"]);
        if let Some(previous) = previous {
            assert_eq!(n, q(&previous["number"]) + 1, "consecutive");
            assert_eq!(header["parentHash"], previous["hash"]);
        }
        previous = Some(header);
    }
    assert_eq!(ws.call("eth_unsubscribe", json!([heads]))["result"], true);
    let bad = ws.call("eth_subscribe", json!(["nonsense"]));
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
}

/// Runtime of a contract that stores its calldata word in slot 0, or returns slot 0 when
/// called without data: `CALLDATASIZE ISZERO PUSH1 12 JUMPI PUSH1 0 CALLDATALOAD PUSH1 0
/// SSTORE STOP JUMPDEST PUSH1 0 SLOAD PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN`.
const STORE_RUNTIME: [u8; 24] = [
    0x36, 0x15, 0x60, 0x0c, 0x57, 0x60, 0x00, 0x35, 0x60, 0x00, 0x55, 0x00, 0x5b, 0x60, 0x00, 0x54,
    0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3,
];

/// Initcode of [`STORE_RUNTIME`].
fn store_deploy() -> Vec<u8> {
    let mut init = vec![
        0x60, 0x18, 0x60, 0x0c, 0x60, 0x00, 0x39, 0x60, 0x18, 0x60, 0x00, 0xf3,
    ];
    init.extend_from_slice(&STORE_RUNTIME);
    init
}

/// Stores `value` in the store contract and sends `wei` to `to`; waits for both; the
/// newest block of the two.
fn store_and_pay(
    addr: SocketAddr,
    owner: &mut Wallet,
    store: Address,
    value: u8,
    to: Address,
    wei: u64,
) -> u64 {
    let stored = owner.send(addr, Some(store), U256::ZERO, word(value).to_vec());
    let paid = owner.send(addr, Some(to), U256::from(wei), Vec::new());
    let a = q(&receipt(addr, &stored)["blockNumber"]);
    a.max(q(&receipt(addr, &paid)["blockNumber"]))
}

/// Issue #14 item 4 on `nexus-evm --eth-state-blocks 8`: `eth_getBalance`,
/// `eth_getStorageAt`, `eth_call`, `eth_getCode`, `eth_getTransactionCount` and
/// `eth_estimateGas` at an older block (by number and by hash) answer that block's values
/// after later blocks changed them; beyond the window, `-32000` naming it; a block not yet
/// executed is `header not found`.
#[test]
fn reads_and_calls_at_a_past_block_see_that_blocks_state() {
    let args = [
        "--rpc",
        "127.0.0.1:0",
        "--block-ms",
        "200",
        "--eth-state-blocks",
        "8",
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let node = common::start_exe(env!("CARGO_BIN_EXE_nexus-evm"), &args);
    let addr: SocketAddr = node.ready["eth_rpc"].as_str().unwrap().parse().unwrap();
    let mut owner = Wallet::new(&dev_secret());
    let payee = Address::with_last_byte(0x77);
    let hash = owner.send(addr, None, U256::ZERO, store_deploy());
    let deployed = receipt(addr, &hash);
    let store: Address = deployed["contractAddress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let before_deploy = format!("{:#x}", q(&deployed["blockNumber"]) - 1);
    let first = store_and_pay(addr, &mut owner, store, 0x11, payee, 5);
    let nonce_then = owner.nonce;
    let first_hash = result(
        addr,
        "eth_getBlockByNumber",
        json!([format!("{first:#x}"), false]),
    )["hash"]
        .clone();
    let estimate_then = result(
        addr,
        "eth_estimateGas",
        json!([{"to": store, "data": format!("{:#x}", word(0x33))}, before_deploy]),
    );
    store_and_pay(addr, &mut owner, store, 0x22, payee, 7);
    let at = format!("{first:#x}");

    let slot = |block: Value| result(addr, "eth_getStorageAt", json!([store, "0x0", block]));
    assert_eq!(slot(json!(at)), format!("{:#x}", word(0x11)));
    assert_eq!(
        slot(json!({"blockHash": first_hash})),
        format!("{:#x}", word(0x11))
    );
    assert_eq!(slot(json!("latest")), format!("{:#x}", word(0x22)));
    let call = |block: Value| result(addr, "eth_call", json!([{"to": store}, block]));
    assert_eq!(call(json!(at)), format!("{:#x}", word(0x11)));
    assert_eq!(call(json!("latest")), format!("{:#x}", word(0x22)));
    let balance = |block: &str| q(&result(addr, "eth_getBalance", json!([payee, block])));
    assert_eq!((balance(&at), balance("latest")), (5, 12));
    let nonce = q(&result(
        addr,
        "eth_getTransactionCount",
        json!([owner.address, at]),
    ));
    assert_eq!((nonce, owner.nonce), (nonce_then, nonce_then + 2));
    let code = result(addr, "eth_getCode", json!([store, at]));
    assert_eq!(code, format!("0x{}", hex::encode(STORE_RUNTIME)));
    assert_eq!(
        result(addr, "eth_getCode", json!([store, before_deploy])),
        "0x"
    );
    // Before the deploy a call to the address runs no code: intrinsic gas only (31 zero
    // calldata bytes at 4, one non-zero at 16).
    assert_eq!(q(&estimate_then), 21_000 + 31 * 4 + 16);
    let estimate_now = result(
        addr,
        "eth_estimateGas",
        json!([{"to": store, "data": format!("{:#x}", word(0x33))}]),
    );
    assert!(q(&estimate_now) > 21_000 + 140 + 2_000, "{estimate_now}");

    let future = rpc(addr, "eth_getBalance", json!([payee, "0xffffff"]));
    assert_eq!(future["error"]["code"], -32000, "{future}");
    assert!(future["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("header not found"));
    // Nine blocks later the first block's state is outside the window of eight.
    wait("the window to pass", || {
        (head(addr) > first + 9).then_some(())
    });
    let gone = rpc(addr, "eth_getBalance", json!([payee, at]));
    assert_eq!(gone["error"]["code"], -32000, "{gone}");
    let message = gone["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("keeps the state of the 8 blocks") && message.contains("eth_state_blocks"),
        "{message}"
    );
    assert_eq!(gone["error"]["data"]["window"], 8, "{gone}");
    let gone = rpc(addr, "eth_call", json!([{"to": store}, "earliest"]));
    assert_eq!(gone["error"]["code"], -32000, "{gone}");
    // Tracing the deployment needs the state before its block: gone too, the same error.
    let gone = rpc(addr, "debug_traceTransaction", json!([hash]));
    assert_eq!(gone["error"]["code"], -32000, "{gone}");
    let message = gone["error"]["message"].as_str().unwrap();
    assert!(message.contains("is not available"), "{message}");
    let gone = rpc(addr, "debug_traceCall", json!([{"to": store}, at]));
    assert_eq!(gone["error"]["data"]["window"], 8, "{gone}");
    let gone = rpc(addr, "eth_getProof", json!([store, [], at]));
    assert_eq!(gone["error"]["data"]["window"], 8, "{gone}");
}

/// `eth_getProof` (EIP-1186) of the store contract and its slot 0 at the head verifies
/// (alloy-trie's `verify_proof`) against that block's `stateRoot` from
/// `eth_getBlockByNumber`, with the balance, nonce, code hash and slot value the other
/// methods answer; an absent account proves its absence. At the past block that deployed
/// it (slot 0 still zero) and at the block before (no contract yet), the proofs verify
/// against those blocks' `stateRoot`s.
#[test]
fn proofs_verify_against_the_headers_state_root() {
    use alloy_trie::proof::verify_proof;
    use alloy_trie::{Nibbles, TrieAccount};
    let (_node, addr) = start();
    let mut owner = Wallet::new(&dev_secret());
    let hash = owner.send(addr, None, U256::ZERO, store_deploy());
    let deployed = receipt(addr, &hash);
    let store: Address = deployed["contractAddress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let stored = owner.send(addr, Some(store), U256::ZERO, word(0x11).to_vec());
    receipt(addr, &stored);
    let absent = Address::with_last_byte(0x99);
    let b = |v: &Value| v.as_str().unwrap().parse::<B256>().unwrap();
    let nodes = |v: &Value| -> Vec<Bytes> {
        let nodes = v.as_array().unwrap().iter();
        nodes
            .map(|n| n.as_str().unwrap().parse().unwrap())
            .collect()
    };
    // Blocks keep coming: ask at an explicit head until the head did not move in between.
    let (root, proof, gone) = wait("a proof at a stable head", || {
        let n = format!("{:#x}", head(addr));
        let proof = rpc(addr, "eth_getProof", json!([store, ["0x0"], n]));
        let gone = rpc(addr, "eth_getProof", json!([absent, [], n]));
        let block = result(addr, "eth_getBlockByNumber", json!([n, false]));
        let ok = proof["result"].is_object() && gone["result"].is_object();
        ok.then(|| {
            (
                b(&block["stateRoot"]),
                proof["result"].clone(),
                gone["result"].clone(),
            )
        })
    });
    let account = TrieAccount {
        nonce: q(&proof["nonce"]),
        balance: U256::from(q(&proof["balance"])),
        storage_root: b(&proof["storageHash"]),
        code_hash: b(&proof["codeHash"]),
    };
    assert_eq!(account.code_hash, keccak256(STORE_RUNTIME));
    assert_eq!(account.nonce, 1, "a contract starts at nonce 1");
    let key = Nibbles::unpack(keccak256(store));
    let leaf = Some(alloy_rlp::encode(account));
    verify_proof(root, key, leaf, &nodes(&proof["accountProof"])).expect("account proof");
    let slot = &proof["storageProof"][0];
    assert_eq!(q(&slot["value"]), 0x11);
    let key = Nibbles::unpack(keccak256(B256::ZERO));
    let value = Some(alloy_rlp::encode(U256::from(0x11)));
    verify_proof(account.storage_root, key, value, &nodes(&slot["proof"])).expect("slot proof");
    let key = Nibbles::unpack(keccak256(absent));
    verify_proof(root, key, None, &nodes(&gone["accountProof"])).expect("absence proof");
    assert_eq!(gone["storageHash"], EMPTY_TRIE);
    let deployed_in = q(&deployed["blockNumber"]);
    for (n, exists) in [(deployed_in, true), (deployed_in - 1, false)] {
        let n = format!("{n:#x}");
        let past = result(addr, "eth_getProof", json!([store, ["0x0"], n]));
        let block = result(addr, "eth_getBlockByNumber", json!([n, false]));
        let root = b(&block["stateRoot"]);
        let key = Nibbles::unpack(keccak256(store));
        let leaf = exists.then(|| {
            alloy_rlp::encode(TrieAccount {
                nonce: 1,
                balance: U256::ZERO,
                storage_root: b(&past["storageHash"]),
                code_hash: keccak256(STORE_RUNTIME),
            })
        });
        verify_proof(root, key, leaf, &nodes(&past["accountProof"]))
            .unwrap_or_else(|e| panic!("account proof at {n}: {e}: {past}"));
        let slot = &past["storageProof"][0];
        assert_eq!(q(&slot["value"]), 0, "{past}");
        let key = Nibbles::unpack(keccak256(B256::ZERO));
        verify_proof(b(&past["storageHash"]), key, None, &nodes(&slot["proof"]))
            .unwrap_or_else(|e| panic!("slot proof at {n}: {e}: {past}"));
    }
}

/// EIP-712's Mail example (the EIP's `Example.js`).
fn mail() -> Value {
    json!({
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"}
            ],
            "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
            "Mail": [
                {"name": "from", "type": "Person"},
                {"name": "to", "type": "Person"},
                {"name": "contents", "type": "string"}
            ]
        },
        "primaryType": "Mail",
        "domain": {
            "name": "Ether Mail", "version": "1", "chainId": 1,
            "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
        },
        "message": {
            "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
            "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
            "contents": "Hello, Bob!"
        }
    })
}

/// The EIP-712 digest of [`mail`] published in the EIP.
const MAIL_DIGEST: &str = "0xbe609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2";

/// The signer of a 65-byte `r || s || v` signature over `prehash`.
fn signer(signature: &Value, prehash: B256) -> Address {
    let bytes = hex::decode(signature.as_str().expect("hex")).expect("hex");
    assert!(
        bytes.len() == 65 && (bytes[64] == 27 || bytes[64] == 28),
        "{signature}"
    );
    let sig = alloy_primitives::Signature::from_raw(&bytes).expect("a signature");
    sig.recover_address_from_prehash(&prehash)
        .expect("recovers")
}

/// Development signing (issue #14 item 3) on `nexus-evm` (`eth_dev_signing` set):
/// `eth_accounts` is the development account; `personal_sign` and `eth_sign` recover to it
/// under EIP-191's prefix, `eth_signTypedData_v4` of the Mail example recovers to it over
/// the EIP's published digest; `eth_sendTransaction` fills nonce, gas and fees (EIP-1559 as
/// geth, legacy with a `gasPrice`) and the transactions execute; any other account is
/// `unknown account`.
#[test]
fn the_development_account_signs_messages_typed_data_and_transactions() {
    let (_node, addr) = start();
    let dev = Wallet::new(&dev_secret()).address;
    let accounts = result(addr, "eth_accounts", json!([]));
    assert_eq!(accounts, json!([format!("{dev:#x}")]));
    let message = b"nexus development signing";
    let eip191 = alloy_primitives::eip191_hash_message(message);
    let text = format!("0x{}", hex::encode(message));
    let personal = result(addr, "personal_sign", json!([text, dev]));
    assert_eq!(signer(&personal, eip191), dev);
    let signed = result(addr, "eth_sign", json!([dev, text]));
    assert_eq!(signer(&signed, eip191), dev);
    let digest: B256 = MAIL_DIGEST.parse().unwrap();
    let typed = result(
        addr,
        "eth_signTypedData_v4",
        json!([dev, mail().to_string()]),
    );
    assert_eq!(signer(&typed, digest), dev);
    let typed_object = result(addr, "eth_signTypedData_v4", json!([dev, mail()]));
    assert_eq!(typed_object, typed, "a string or an object");

    let stranger = Address::with_last_byte(0x99);
    let calls = [
        ("personal_sign", json!([text, stranger])),
        ("eth_sign", json!([stranger, text])),
        ("eth_signTypedData_v4", json!([stranger, mail()])),
        (
            "eth_sendTransaction",
            json!([{"from": stranger, "to": dev}]),
        ),
    ];
    for (method, params) in calls {
        let refused = rpc(addr, method, params);
        assert_eq!(refused["error"]["code"], -32000, "{method}: {refused}");
        let text = refused["error"]["message"].as_str().unwrap();
        assert!(text.starts_with("unknown account"), "{method}: {text}");
    }

    let payee = Address::with_last_byte(0x55);
    let sent = result(
        addr,
        "eth_sendTransaction",
        json!([{"from": dev, "to": payee, "value": "0x5"}]),
    );
    assert_eq!(receipt(addr, sent.as_str().unwrap())["status"], "0x1");
    let tx = result(addr, "eth_getTransactionByHash", json!([sent]));
    assert_eq!(tx["from"], format!("{dev:#x}"), "{tx}");
    assert_eq!(
        (&tx["type"], &tx["nonce"], &tx["gas"]),
        (&json!("0x2"), &json!("0x0"), &json!("0x5208")),
        "{tx}"
    );
    // geth's fees: the suggested tip (1 gwei) and twice the base fee (1 gwei) plus it.
    assert_eq!(tx["maxPriorityFeePerGas"], "0x3b9aca00", "{tx}");
    assert_eq!(tx["maxFeePerGas"], "0xb2d05e00", "{tx}");
    assert_eq!(
        q(&result(addr, "eth_getBalance", json!([payee, "latest"]))),
        5
    );
    // A deployment without gas (estimated), then a legacy transfer with a gas price.
    let deployed = result(
        addr,
        "eth_sendTransaction",
        json!([{"from": dev, "data": format!("0x{}", hex::encode(store_deploy()))}]),
    );
    let deployed = receipt(addr, deployed.as_str().unwrap());
    let store = deployed["contractAddress"].clone();
    let code = result(addr, "eth_getCode", json!([store, "latest"]));
    assert_eq!(code, format!("0x{}", hex::encode(STORE_RUNTIME)));
    let legacy = result(
        addr,
        "eth_sendTransaction",
        json!([{"from": dev, "to": payee, "value": "0x1", "gasPrice": "0x77359400"}]),
    );
    receipt(addr, legacy.as_str().unwrap());
    let tx = result(addr, "eth_getTransactionByHash", json!([legacy]));
    assert_eq!((&tx["type"], &tx["nonce"]), (&json!("0x0"), &json!("0x2")));
    assert_eq!(tx["gasPrice"], "0x77359400", "{tx}");
}

/// Runtime of a contract that calls `target` with its own calldata and returns the first
/// 32 bytes of memory (the callee's output, or its own calldata if the callee returned
/// nothing): `CALLDATASIZE PUSH1 0 PUSH1 0 CALLDATACOPY PUSH1 32 PUSH1 0 CALLDATASIZE PUSH1
/// 0 PUSH1 0 PUSH20 target GAS CALL POP PUSH1 32 PUSH1 0 RETURN`.
fn forwarder_deploy(target: Address) -> Vec<u8> {
    let mut runtime = vec![
        0x36, 0x60, 0x00, 0x60, 0x00, 0x37, 0x60, 0x20, 0x60, 0x00, 0x36, 0x60, 0x00, 0x60, 0x00,
        0x73,
    ];
    runtime.extend_from_slice(target.as_slice());
    runtime.extend_from_slice(&[0x5a, 0xf1, 0x50, 0x60, 0x20, 0x60, 0x00, 0xf3]);
    let mut init = vec![
        0x60, 0x2c, 0x60, 0x0c, 0x60, 0x00, 0x39, 0x60, 0x2c, 0x60, 0x00, 0xf3,
    ];
    init.extend_from_slice(&runtime);
    init
}

/// Tracing (issue #14 item 3) on `nexus-evm`: `debug_traceTransaction`'s struct logs of a
/// store list its opcodes in order and its gas is the receipt's; a contract calling
/// another has, under `callTracer`, the nested frame with the callee, input and output;
/// `debug_traceCall` at the head and at the block before the store see each state; an
/// unknown tracer and an unknown transaction are refused.
#[test]
fn traces_of_transactions_and_calls_are_geths() {
    let (_node, addr) = start();
    let mut owner = Wallet::new(&dev_secret());
    let store = deploy(addr, &mut owner, store_deploy());
    let forwarder = deploy(addr, &mut owner, forwarder_deploy(store));
    let stored = owner.send(addr, Some(store), U256::ZERO, word(0x11).to_vec());
    let stored_receipt = receipt(addr, &stored);
    let trace = result(addr, "debug_traceTransaction", json!([stored]));
    let ops: Vec<&str> = trace["structLogs"]
        .as_array()
        .unwrap_or_else(|| panic!("{trace}"))
        .iter()
        .map(|l| l["op"].as_str().unwrap())
        .collect();
    let expected = [
        "CALLDATASIZE",
        "ISZERO",
        "PUSH1",
        "JUMPI",
        "PUSH1",
        "CALLDATALOAD",
        "PUSH1",
        "SSTORE",
        "STOP",
    ];
    assert_eq!(ops, expected, "{trace}");
    assert_eq!(trace["gas"], q(&stored_receipt["gasUsed"]), "{trace}");
    assert_eq!(trace["structLogs"][7]["stack"], json!(["0x11", "0x0"]));
    let bare = result(
        addr,
        "debug_traceTransaction",
        json!([stored, {"disableStack": true}]),
    );
    assert!(bare["structLogs"][7].get("stack").is_none(), "{bare}");

    let read = owner.send(addr, Some(forwarder), U256::ZERO, Vec::new());
    receipt(addr, &read);
    let calls = json!({"tracer": "callTracer"});
    let frame = result(addr, "debug_traceTransaction", json!([read, calls]));
    let (word11, word0) = (format!("{:#x}", word(0x11)), format!("{:#x}", word(0)));
    assert_eq!(frame["to"], format!("{forwarder:#x}"), "{frame}");
    assert_eq!(frame["from"], format!("{:#x}", owner.address), "{frame}");
    assert_eq!(frame["output"], word11, "{frame}");
    let inner = &frame["calls"][0];
    assert_eq!(
        (&inner["type"], &inner["from"], &inner["to"]),
        (
            &json!("CALL"),
            &json!(format!("{forwarder:#x}")),
            &json!(format!("{store:#x}"))
        ),
        "{frame}"
    );
    assert_eq!(
        (&inner["input"], &inner["output"]),
        (&json!("0x"), &json!(word11))
    );

    let call = json!({"to": forwarder});
    let now = result(addr, "debug_traceCall", json!([call, "latest", calls]));
    assert_eq!(now["calls"][0]["output"], word11, "{now}");
    let before = format!("{:#x}", q(&stored_receipt["blockNumber"]) - 1);
    let then = result(addr, "debug_traceCall", json!([call, before, calls]));
    assert_eq!(then["calls"][0]["output"], word0, "{then}");

    let unknown = rpc(
        addr,
        "debug_traceTransaction",
        json!([stored, {"tracer": "prestateTracer"}]),
    );
    assert_eq!(unknown["error"]["code"], -32000, "{unknown}");
    let missing = format!("{:#x}", B256::with_last_byte(1));
    let missing = rpc(addr, "debug_traceTransaction", json!([missing]));
    assert!(
        missing["error"]["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("not found")),
        "{missing}"
    );
}

/// `debug_traceBlockByNumber` and `debug_traceBlockByHash` (geth's `[{txHash, result}]`):
/// a store and a read of it through the forwarder, sent in one batch (so most likely in one
/// block), traced block by block: each entry names the block's transactions in order and
/// equals that transaction's own `debug_traceTransaction`, under `callTracer` and the
/// struct logger; the read sees the store (a block trace commits each transaction before
/// the next); by hash equals by number; an unknown block and an unknown tracer are refused.
#[test]
fn a_blocks_trace_is_each_transactions_trace_in_order() {
    let (_node, addr) = start();
    let mut owner = Wallet::new(&dev_secret());
    let store = deploy(addr, &mut owner, store_deploy());
    let forwarder = deploy(addr, &mut owner, forwarder_deploy(store));
    let raw_store = owner.sign(owner.tx(
        common::EVM_CHAIN_ID,
        Some(store),
        U256::ZERO,
        word(0x22).to_vec(),
    ));
    owner.nonce += 1;
    let raw_read = owner.sign(owner.tx(
        common::EVM_CHAIN_ID,
        Some(forwarder),
        U256::ZERO,
        Vec::new(),
    ));
    owner.nonce += 1;
    let batch: Vec<Value> = [raw_store, raw_read]
        .iter()
        .enumerate()
        .map(|(id, raw)| json!({"jsonrpc": "2.0", "id": id, "method": "eth_sendRawTransaction", "params": [raw]}))
        .collect();
    let answers = common::post(addr, &Value::Array(batch));
    let hashes: Vec<String> = answers
        .as_array()
        .expect("a batch answer")
        .iter()
        .map(|a| {
            a["result"]
                .as_str()
                .unwrap_or_else(|| panic!("{answers}"))
                .to_string()
        })
        .collect();
    let read_receipt = receipt(addr, &hashes[1]);
    receipt(addr, &hashes[0]);
    let calls = json!({"tracer": "callTracer"});
    let mut blocks: Vec<Value> = hashes
        .iter()
        .map(|h| result(addr, "eth_getTransactionReceipt", json!([h]))["blockNumber"].clone())
        .collect();
    blocks.dedup();
    for number in &blocks {
        let block = result(addr, "eth_getBlockByNumber", json!([number, false]));
        for options in [calls.clone(), json!({})] {
            let traced = result(addr, "debug_traceBlockByNumber", json!([number, options]));
            let expected: Vec<Value> = block["transactions"]
                .as_array()
                .expect("hashes")
                .iter()
                .map(|tx| {
                    let one = result(addr, "debug_traceTransaction", json!([tx, options]));
                    json!({"txHash": tx, "result": one})
                })
                .collect();
            assert_eq!(traced, Value::Array(expected), "block {number}");
            let by_hash = result(
                addr,
                "debug_traceBlockByHash",
                json!([block["hash"], options]),
            );
            assert_eq!(by_hash, traced);
        }
    }
    let read_block = &read_receipt["blockNumber"];
    let traced = result(addr, "debug_traceBlockByNumber", json!([read_block, calls]));
    let read = traced
        .as_array()
        .expect("traces")
        .iter()
        .find(|t| t["txHash"] == json!(hashes[1]))
        .expect("the read in its block's trace");
    assert_eq!(
        read["result"]["output"],
        format!("{:#x}", word(0x22)),
        "{traced}"
    );

    let unknown = rpc(addr, "debug_traceBlockByNumber", json!(["0xffffff"]));
    assert_eq!(unknown["error"]["code"], -32000, "{unknown}");
    let missing = format!("{:#x}", B256::with_last_byte(1));
    let unknown = rpc(addr, "debug_traceBlockByHash", json!([missing]));
    assert_eq!(unknown["error"]["code"], -32000, "{unknown}");
    let tracer = rpc(
        addr,
        "debug_traceBlockByNumber",
        json!([read_block, {"tracer": "prestateTracer"}]),
    );
    assert_eq!(tracer["error"]["code"], -32000, "{tracer}");
}
