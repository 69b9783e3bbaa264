//! Issue #14, items 1 and 3, on the built `nexus-evm` binary: every block's header is
//! Ethereum's (hash = keccak256(rlp(header)) rebuilt from the JSON fields, the ordered
//! tries of transactions and receipts, empty-trie and empty-list roots, the bloom, the size,
//! parent hashes that chain), with legacy, EIP-2930, EIP-1559 and system (0x7f)
//! transactions; and the block, transaction, uncle, access-list, node and pool methods
//! answer as geth does. Bounded: every wait has a deadline, the process is killed on drop.

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
