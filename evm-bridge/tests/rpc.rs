//! Ethereum JSON-RPC over real HTTP on loopback: deploy, send (EIP-1559 and legacy EIP-155),
//! call, estimate, receipts, logs, blocks; bad input gets a clear error and the server keeps
//! serving. Blocks are produced only by `nexus_mine`, so nothing depends on time.

mod common;

use alloy_primitives::{Address, U256};
use common::*;
use evm_bridge::chain::Chain;
use evm_bridge::rpc::{serve, Node, ServeConfig};
use evm_bridge::store::Store;
use evm_bridge::system::{abi::*, event_topic};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn post(addr: SocketAddr, body: &str) -> Value {
    let mut stream = TcpStream::connect(addr).unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn rpc(addr: SocketAddr, method: &str, params: Value) -> Result<Value, Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let reply = post(addr, &body.to_string());
    match reply.get("error") {
        Some(error) => Err(error.clone()),
        None => Ok(reply["result"].clone()),
    }
}

fn ok(addr: SocketAddr, method: &str, params: Value) -> Value {
    rpc(addr, method, params).unwrap_or_else(|e| panic!("{method}: {e}"))
}

fn hex_u64(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

fn raw_hex(bytes: &[u8]) -> String {
    format!("0x{}", alloy_primitives::hex::encode(bytes))
}

fn node(wallet: &Wallet, store: Option<Store>) -> Node {
    let (chain, genesis) = Chain::genesis(
        core_genesis(),
        config(),
        NATIVE,
        vec![(wallet.address, ether(10))],
        1_700_000_000,
    );
    Node::new(chain, genesis, store).unwrap()
}

fn start(node: Node) -> evm_bridge::rpc::RpcServer {
    serve(
        node,
        ServeConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            block_time: Duration::from_secs(3600),
        },
    )
    .unwrap()
}

#[test]
fn deploy_send_call_receipts_logs_and_errors_over_http() {
    let wallet = Wallet::new(9);
    let server = start(node(&wallet, None));
    let addr = server.addr;
    let chain_id = config().chain_id;

    assert_eq!(hex_u64(&ok(addr, "eth_chainId", json!([]))), chain_id);
    assert_eq!(hex_u64(&ok(addr, "eth_blockNumber", json!([]))), 0);
    assert_eq!(
        ok(
            addr,
            "eth_getBalance",
            json!([format!("{:#x}", wallet.address), "latest"])
        ),
        json!(format!("{:#x}", ether(10)))
    );
    assert!(hex_u64(&ok(addr, "eth_gasPrice", json!([]))) >= config().base_fee_wei);
    assert!(hex_u64(&ok(addr, "eth_maxPriorityFeePerGas", json!([]))) > 0);
    let genesis = ok(addr, "eth_getBlockByNumber", json!(["latest", false]));
    assert_eq!(hex_u64(&genesis["number"]), 0);
    assert_eq!(hex_u64(&genesis["baseFeePerGas"]), config().base_fee_wei);

    // Estimate, then deploy the fixture with a signed EIP-1559 transaction.
    let from = format!("{:#x}", wallet.address);
    let deploy_code = market_maker_deploy(MARKET);
    let estimate = hex_u64(&ok(
        addr,
        "eth_estimateGas",
        json!([{"from": from, "data": raw_hex(&deploy_code)}]),
    ));
    assert!(estimate > 100_000, "{estimate}");
    let raw = wallet.eip1559(chain_id, 0, None, U256::ZERO, deploy_code, estimate);
    let tx_hash = ok(addr, "eth_sendRawTransaction", json!([raw_hex(&raw)]));
    assert_eq!(
        ok(addr, "eth_getTransactionReceipt", json!([tx_hash])),
        Value::Null,
        "not mined yet"
    );
    assert_eq!(
        hex_u64(&ok(
            addr,
            "eth_getTransactionCount",
            json!([from, "pending"])
        )),
        1
    );
    // The same nonce again is refused while the first is pooled.
    let again = wallet.eip1559(
        chain_id,
        0,
        Some(Address::repeat_byte(0x42)),
        U256::from(1),
        vec![],
        21_000,
    );
    let error = rpc(addr, "eth_sendRawTransaction", json!([raw_hex(&again)])).unwrap_err();
    assert!(
        error["message"].as_str().unwrap().contains("nonce too low"),
        "{error}"
    );

    assert_eq!(hex_u64(&ok(addr, "nexus_mine", json!([]))), 1);
    let receipt = ok(addr, "eth_getTransactionReceipt", json!([tx_hash]));
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    assert_eq!(hex_u64(&receipt["blockNumber"]), 1);
    assert!(hex_u64(&receipt["gasUsed"]) <= estimate);
    let mm: Address = receipt["contractAddress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let code = ok(addr, "eth_getCode", json!([format!("{mm:#x}"), "latest"]));
    assert!(code.as_str().unwrap().len() > 100);
    let block = ok(addr, "eth_getBlockByNumber", json!(["0x1", false]));
    assert_eq!(block["transactions"], json!([tx_hash]));
    let tx = ok(addr, "eth_getTransactionByHash", json!([tx_hash]));
    assert_eq!(tx["from"], json!(from));

    // eth_call a view.
    let market = ok(
        addr,
        "eth_call",
        json!([{"to": format!("{mm:#x}"), "data": raw_hex(&calldata("market()", &[]))}, "latest"]),
    );
    assert_eq!(
        word_at(
            &alloy_primitives::hex::decode(market.as_str().unwrap()).unwrap(),
            0
        ),
        MARKET as i128
    );
    // A reverting call reports code 3 with the reason.
    let error = rpc(
        addr,
        "eth_call",
        json!([{"to": format!("{mm:#x}"), "data": raw_hex(&calldata("cancelAll()", &[]))}]),
    )
    .unwrap_err();
    assert_eq!(error["code"], 3);
    assert!(
        error["message"].as_str().unwrap().contains("not owner"),
        "{error}"
    );

    // A legacy EIP-155 transaction calling quote(); its logs are found by eth_getLogs.
    let quote = calldata(
        "quote(uint64,uint64,uint64)",
        &[word_u64(90), word_u64(110), word_u64(3)],
    );
    // First (same block, lower log index) a deposit of 1,000 native units for the bid.
    let deposit = wallet.eip1559(
        chain_id,
        1,
        Some(mm),
        U256::from(1_000u64) * config().wei_per_unit,
        calldata("deposit()", &[]),
        300_000,
    );
    ok(addr, "eth_sendRawTransaction", json!([raw_hex(&deposit)]));
    let legacy = wallet.legacy(Some(chain_id), 2, Some(mm), U256::ZERO, quote);
    let quote_hash = ok(addr, "eth_sendRawTransaction", json!([raw_hex(&legacy)]));
    ok(addr, "nexus_mine", json!([]));
    let receipt = ok(addr, "eth_getTransactionReceipt", json!([quote_hash]));
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    assert_eq!(receipt["type"], "0x0");
    assert_eq!(
        receipt["logs"].as_array().unwrap().len(),
        3,
        "2 CoreWriter + Quoted"
    );
    let quoted = event_topic("Quoted(uint64,uint64,uint64,uint64,uint64)");
    let logs = ok(
        addr,
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "toBlock": "latest", "address": format!("{mm:#x}"),
                "topics": [format!("{quoted:#x}")]}]),
    );
    let logs = logs.as_array().unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["transactionHash"], quote_hash);
    // The orders reach Core in the next block (the deposit first, so the bid is funded; the
    // ask is refused: no base asset); the read precompile sees the bid after it.
    ok(addr, "nexus_mine", json!([]));
    let bbo = ok(
        addr,
        "eth_call",
        json!([{"to": format!("{mm:#x}"), "data": raw_hex(&calldata("bestBidOffer()", &[]))}]),
    );
    let bbo = alloy_primitives::hex::decode(bbo.as_str().unwrap()).unwrap();
    assert_eq!(
        (0..4).map(|i| word_at(&bbo, i)).collect::<Vec<_>>(),
        vec![90, 3, 0, 0]
    );

    // Bad input: a clear error each time, and the server keeps serving.
    let error = rpc(addr, "eth_sendRawTransaction", json!(["0x1234"])).unwrap_err();
    assert_eq!(error["code"], -32602);
    assert!(
        error["message"].as_str().unwrap().contains("malformed"),
        "{error}"
    );
    let error = rpc(addr, "eth_sendRawTransaction", json!(["not hex"])).unwrap_err();
    assert_eq!(error["code"], -32602);
    let wrong_chain = wallet.eip1559(chain_id + 1, 2, Some(mm), U256::ZERO, vec![], 50_000);
    let error = rpc(
        addr,
        "eth_sendRawTransaction",
        json!([raw_hex(&wrong_chain)]),
    )
    .unwrap_err();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("invalid chain id"),
        "{error}"
    );
    let pre_155 = wallet.legacy(None, 2, Some(mm), U256::ZERO, vec![]);
    let error = rpc(addr, "eth_sendRawTransaction", json!([raw_hex(&pre_155)])).unwrap_err();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("invalid chain id"),
        "{error}"
    );
    let stale = wallet.eip1559(chain_id, 0, Some(mm), U256::ZERO, vec![], 50_000);
    let error = rpc(addr, "eth_sendRawTransaction", json!([raw_hex(&stale)])).unwrap_err();
    assert!(
        error["message"].as_str().unwrap().contains("nonce too low"),
        "{error}"
    );
    let future = wallet.eip1559(chain_id, 9, Some(mm), U256::ZERO, vec![], 50_000);
    let error = rpc(addr, "eth_sendRawTransaction", json!([raw_hex(&future)])).unwrap_err();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("nonce too high"),
        "{error}"
    );
    let poor = Wallet::new(77).eip1559(chain_id, 0, Some(mm), U256::ZERO, vec![], 50_000);
    let error = rpc(addr, "eth_sendRawTransaction", json!([raw_hex(&poor)])).unwrap_err();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("insufficient funds"),
        "{error}"
    );
    let error = rpc(addr, "eth_frobnicate", json!([])).unwrap_err();
    assert_eq!(error["code"], -32601);
    let error = rpc(addr, "eth_getBalance", json!(["0xnope"])).unwrap_err();
    assert_eq!(error["code"], -32602);
    let garbage = post(addr, "{not json");
    assert_eq!(garbage["error"]["code"], -32700);
    assert_eq!(
        hex_u64(&ok(addr, "eth_blockNumber", json!([]))),
        3,
        "still serving"
    );
    server.stop();
}

#[test]
fn state_survives_reopening_the_lmdb_store() {
    let dir = tempfile::tempdir().unwrap();
    let wallet = Wallet::new(5);
    let chain_id = config().chain_id;
    let (mm, balance, head_hash) = {
        let mut node = node(&wallet, Some(Store::open(dir.path()).unwrap()));
        let raw = wallet.eip1559(
            chain_id,
            0,
            None,
            U256::ZERO,
            market_maker_deploy(MARKET),
            3_000_000,
        );
        node.submit_raw(&raw).unwrap();
        let out = node.produce_block(1_700_000_001).unwrap();
        let mm = out.evm.receipts[0].contract_address.unwrap();
        // A deposit through the contract, so storage, escrow and the bridge queue change.
        let data = calldata("deposit()", &[]);
        let raw = wallet.eip1559(
            chain_id,
            1,
            Some(mm),
            U256::from(10u64) * config().wei_per_unit,
            data,
            500_000,
        );
        node.submit_raw(&raw).unwrap();
        let out = node.produce_block(1_700_000_002).unwrap();
        assert!(out.evm.receipts[0].status);
        assert_eq!(node.chain().bridge().pending_actions.len(), 1);
        let balance = node.chain().executor().account(wallet.address).balance;
        (mm, balance, out.evm.header.hash)
    };
    let mut node = Node::open(Store::open(dir.path()).unwrap(), config())
        .unwrap()
        .expect("stored chain");
    assert_eq!(node.chain().executor().head().number, 2);
    assert_eq!(node.chain().executor().head().hash, head_hash);
    assert_eq!(
        node.chain().executor().account(wallet.address).balance,
        balance
    );
    assert_eq!(node.chain().executor().account(wallet.address).nonce, 2);
    assert!(!node.chain().executor().code(mm).is_empty());
    let slot0 = node.chain().executor().storage(mm, U256::ZERO);
    let low160 = slot0 & ((U256::from(1u64) << 160) - U256::from(1u64));
    assert_eq!(
        low160,
        U256::from_be_slice(&word_address(wallet.address)),
        "owner in slot 0"
    );
    assert_eq!(
        node.chain().bridge().pending_actions.len(),
        1,
        "queue persisted"
    );
    let receipt = node
        .handle(
            "eth_getTransactionCount",
            &[json!(format!("{:#x}", wallet.address)), json!("latest")],
        )
        .unwrap();
    assert_eq!(receipt, json!("0x2"));
    // The reopened chain goes on: the queued deposit reaches Core.
    node.produce_block(1_700_000_003).unwrap();
    let account = evm_bridge::system::core_account(mm);
    assert_eq!(
        node.chain()
            .engine()
            .balance(account, NATIVE)
            .unwrap()
            .total,
        10
    );
}

/// `eth_feeHistory` as web3.py calls it (`fee_history(4, "latest", [25, 75])`): one reward
/// per requested percentile per block, weighted by gas used over the block's user
/// transactions sorted by tip; `newestBlock` is honoured; no `reward` without percentiles;
/// bad percentiles and a block past the head are refused.
#[test]
fn fee_history_answers_per_percentile_and_honours_the_newest_block() {
    let wallet = Wallet::new(11);
    let mut node = node(&wallet, None);
    let chain_id = config().chain_id;
    let to = Some(Address::repeat_byte(0x42));
    // Block 1: a 1559 transfer (tip 0.1 gwei) and a legacy one (1.5 gwei: tip 0.5 gwei),
    // 21,000 gas each. Block 2: empty.
    let tip_1559 = 100_000_000u64;
    let tip_legacy = 1_500_000_000 - config().base_fee_wei;
    node.submit_raw(&wallet.eip1559(chain_id, 0, to, U256::from(1), vec![], 21_000))
        .unwrap();
    node.submit_raw(&wallet.legacy(Some(chain_id), 1, to, U256::from(1), vec![]))
        .unwrap();
    node.produce_block(1_700_000_001).unwrap();
    node.produce_block(1_700_000_002).unwrap();

    let history = node
        .handle(
            "eth_feeHistory",
            &[json!("0x2"), json!("latest"), json!([25, 75.0])],
        )
        .unwrap();
    assert_eq!(history["oldestBlock"], "0x1", "{history}");
    let base = format!("{:#x}", config().base_fee_wei);
    assert_eq!(history["baseFeePerGas"], json!([base, base, base]));
    let ratios = history["gasUsedRatio"].as_array().unwrap();
    assert_eq!(ratios.len(), 2);
    assert!(ratios[0].as_f64().unwrap() > 0.0 && ratios[1].as_f64().unwrap() == 0.0);
    assert_eq!(
        history["reward"],
        json!([
            [format!("{tip_1559:#x}"), format!("{tip_legacy:#x}")],
            ["0x0", "0x0"]
        ]),
        "one tip per percentile per block"
    );

    // newestBlock = 1, a plain-number count, no percentiles: no reward field.
    let history = node
        .handle("eth_feeHistory", &[json!(4), json!("0x1"), json!([])])
        .unwrap();
    assert_eq!(history["oldestBlock"], "0x0", "{history}");
    assert_eq!(history["gasUsedRatio"].as_array().unwrap().len(), 2);
    assert_eq!(history["baseFeePerGas"].as_array().unwrap().len(), 3);
    assert!(history.get("reward").is_none(), "{history}");
    let history = node
        .handle("eth_feeHistory", &[json!("0x1"), json!("0x1")])
        .unwrap();
    assert_eq!(history["oldestBlock"], "0x1");
    assert!(history.get("reward").is_none());

    let error = node
        .handle("eth_feeHistory", &[json!("0x1"), json!("0x9"), json!([50])])
        .unwrap_err();
    assert_eq!(error.code, -32000);
    assert!(error.message.contains("beyond head"), "{error:?}");
    for bad in [json!([75, 25]), json!([101]), json!(["50"]), json!(50)] {
        let error = node
            .handle(
                "eth_feeHistory",
                &[json!("0x1"), json!("latest"), bad.clone()],
            )
            .unwrap_err();
        assert_eq!(error.code, -32602, "{bad}: {error:?}");
    }
    let error = node.handle("eth_feeHistory", &[]).unwrap_err();
    assert_eq!(error.code, -32602);
}

/// The fields web3.py's result formatters and ethers' parsers read (checked against both by
/// examples/evm): identity methods, full blocks, receipts and transactions in hex quantities.
#[test]
fn blocks_receipts_and_identity_methods_have_the_fields_clients_format() {
    let wallet = Wallet::new(12);
    let mut node = node(&wallet, None);
    let chain_id = config().chain_id;
    assert_eq!(
        node.handle("net_version", &[]).unwrap(),
        json!(chain_id.to_string())
    );
    assert!(node
        .handle("web3_clientVersion", &[])
        .unwrap()
        .as_str()
        .unwrap()
        .starts_with("nexus-evm/"));
    assert_eq!(node.handle("eth_syncing", &[]).unwrap(), json!(false));
    assert_eq!(node.handle("eth_accounts", &[]).unwrap(), json!([]));

    let raw = wallet.eip1559(
        chain_id,
        0,
        None,
        U256::ZERO,
        market_maker_deploy(MARKET),
        3_000_000,
    );
    let tx_hash = node.submit_raw(&raw).unwrap();
    node.produce_block(1_700_000_001).unwrap();
    let is_quantity = |v: &Value| {
        v.as_str().is_some_and(|s| {
            s.strip_prefix("0x").is_some_and(|d| {
                !d.is_empty()
                    && (d == "0" || !d.starts_with('0'))
                    && d.chars().all(|c| c.is_ascii_hexdigit())
            })
        })
    };
    let block = node
        .handle("eth_getBlockByNumber", &[json!("0x1"), json!(true)])
        .unwrap();
    for field in [
        "number",
        "difficulty",
        "totalDifficulty",
        "gasLimit",
        "gasUsed",
        "timestamp",
        "baseFeePerGas",
        "size",
    ] {
        assert!(is_quantity(&block[field]), "{field}: {}", block[field]);
    }
    assert_eq!(block["logsBloom"].as_str().unwrap().len(), 2 + 512);
    assert_eq!(block["mixHash"].as_str().unwrap().len(), 66);
    assert_eq!(block["nonce"].as_str().unwrap().len(), 18);
    assert_eq!(
        block["transactions"][0]["hash"],
        json!(format!("{tx_hash:#x}"))
    );
    let receipt = node
        .handle(
            "eth_getTransactionReceipt",
            &[json!(format!("{tx_hash:#x}"))],
        )
        .unwrap();
    for field in [
        "blockNumber",
        "transactionIndex",
        "gasUsed",
        "cumulativeGasUsed",
        "effectiveGasPrice",
        "type",
        "status",
    ] {
        assert!(is_quantity(&receipt[field]), "{field}: {}", receipt[field]);
    }
    assert_eq!(receipt["type"], "0x2");
    assert_eq!(receipt["logsBloom"].as_str().unwrap().len(), 2 + 512);
    assert!(receipt["contractAddress"].is_string() && receipt["to"].is_null());
    let tx = node
        .handle(
            "eth_getTransactionByHash",
            &[json!(format!("{tx_hash:#x}"))],
        )
        .unwrap();
    for field in [
        "nonce",
        "gas",
        "gasPrice",
        "maxFeePerGas",
        "maxPriorityFeePerGas",
        "value",
        "type",
        "chainId",
        "v",
        "yParity",
        "r",
        "s",
    ] {
        assert!(is_quantity(&tx[field]), "{field}: {}", tx[field]);
    }
}

#[test]
fn a_failed_store_write_on_nexus_mine_stops_the_node() {
    let wallet = Wallet::new(1);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with_map_size(dir.path(), 1 << 20).unwrap();
    let mut node = node(&wallet, Some(store));
    // 600 KB of calldata: its stored record does not fit a 1 MiB map.
    let to = Some(Wallet::new(2).address);
    let raw = wallet.eip1559(
        config().chain_id,
        0,
        to,
        U256::ZERO,
        vec![0; 600_000],
        3_000_000,
    );
    node.submit_raw(&raw).unwrap();
    let server = start(node);
    let err = rpc(server.addr, "nexus_mine", json!([])).unwrap_err();
    assert!(
        err["message"].as_str().unwrap().contains("node stopped"),
        "{err}"
    );
    let err = rpc(server.addr, "eth_blockNumber", json!([])).unwrap_err();
    assert_eq!(err["message"], "node stopped", "{err}");
    let node = server.stop();
    assert!(node.stopped().is_some());
}

/// Issue #12, item 12: `maxPriorityFeePerGas > maxFeePerGas` is refused at admission with
/// geth's error (it used to be accepted, counted in the pending nonce, then dropped by revm
/// with no trace). So are the other refusals revm would make at execution that need no
/// state: intrinsic gas and initcode size. The pending nonce does not move.
#[test]
fn fee_and_gas_fields_revm_would_refuse_are_refused_at_admission() {
    let wallet = Wallet::new(21);
    let server = start(node(&wallet, None));
    let addr = server.addr;
    let chain_id = config().chain_id;
    let from = format!("{:#x}", wallet.address);
    let to = Some(Address::repeat_byte(0x42));
    let pending = || {
        hex_u64(&ok(
            addr,
            "eth_getTransactionCount",
            json!([from, "pending"]),
        ))
    };

    let tip_above = wallet.eip1559_with_fees(
        chain_id,
        0,
        to,
        vec![],
        21_000,
        2_000_000_000,
        3_000_000_000,
    );
    let error = rpc(addr, "eth_sendRawTransaction", json!([raw_hex(&tip_above)])).unwrap_err();
    assert_eq!(error["code"], -32000, "{error}");
    assert_eq!(
        error["message"], "max priority fee per gas higher than max fee per gas",
        "geth's text: {error}"
    );
    assert_eq!(pending(), 0, "a refused transaction is not counted");

    // A contract creation needs 53,000 gas + calldata: 21,000 is not enough.
    let create = wallet.eip1559_with_fees(
        chain_id,
        0,
        None,
        vec![0x60, 0x00],
        21_000,
        2_000_000_000,
        1,
    );
    let error = rpc(addr, "eth_sendRawTransaction", json!([raw_hex(&create)])).unwrap_err();
    assert_eq!(error["code"], -32000, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("intrinsic gas too low: gas 21000, minimum needed 53"),
        "{error}"
    );
    // Initcode over EIP-3860's 49,152 bytes.
    let big = wallet.eip1559_with_fees(
        chain_id,
        0,
        None,
        vec![0x5b; 49_153],
        3_000_000,
        2_000_000_000,
        1,
    );
    let error = rpc(addr, "eth_sendRawTransaction", json!([raw_hex(&big)])).unwrap_err();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("max initcode size exceeded: code size 49153, limit 49152"),
        "{error}"
    );
    assert_eq!(pending(), 0);

    // The same nonce with sane fees goes through; while pooled it reads as pending.
    let good = wallet.eip1559_with_fees(
        chain_id,
        0,
        to,
        vec![],
        21_000,
        2_000_000_000,
        2_000_000_000,
    );
    let hash = ok(addr, "eth_sendRawTransaction", json!([raw_hex(&good)]));
    assert_eq!(pending(), 1);
    let tx = ok(addr, "eth_getTransactionByHash", json!([hash]));
    assert_eq!(tx["hash"], hash, "{tx}");
    assert!(
        tx["blockHash"].is_null() && tx["blockNumber"].is_null(),
        "{tx}"
    );
    ok(addr, "nexus_mine", json!([]));
    let receipt = ok(addr, "eth_getTransactionReceipt", json!([hash]));
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    server.stop();
}

/// Issue #12, item 12: a transaction the block builder refuses after admission (here one
/// pooled without the checks, since admission now refuses every kind revm would) is
/// dropped with a trace: `eth_getTransactionByHash` answers an error naming the reason,
/// the sender's later transaction is dropped with it (its nonce can no longer be next),
/// and the pending nonce is the state nonce again, so the sender can go on.
#[test]
fn a_transaction_the_block_builder_refuses_is_reported_not_silently_dropped() {
    let wallet = Wallet::new(22);
    let mut node = node(&wallet, None);
    let chain_id = config().chain_id;
    let to = Some(Address::repeat_byte(0x42));
    let decode = |raw: &[u8]| evm_bridge::executor::SignedTx::decode(raw, chain_id).unwrap();
    let bad = decode(&wallet.eip1559_with_fees(
        chain_id,
        0,
        to,
        vec![],
        21_000,
        2_000_000_000,
        3_000_000_000,
    ));
    let next = decode(&wallet.eip1559(chain_id, 1, to, U256::from(1), vec![], 21_000));
    let (bad_hash, next_hash) = (bad.hash, next.hash);
    node.pool_unchecked(bad);
    node.pool_unchecked(next);
    let out = node.produce_block(1_700_000_001).unwrap();
    assert!(out.evm.txs.is_empty());
    assert_eq!(
        out.evm
            .dropped
            .iter()
            .map(|d| (d.hash, d.reason.clone()))
            .collect::<Vec<_>>(),
        vec![
            (
                bad_hash,
                evm_bridge::executor::TxError::TipAboveFeeCap {
                    tip: 3_000_000_000,
                    max_fee: 2_000_000_000
                }
            ),
            (
                next_hash,
                evm_bridge::executor::TxError::FollowsDropped(bad_hash)
            ),
        ]
    );

    let error = node
        .handle(
            "eth_getTransactionByHash",
            &[json!(format!("{bad_hash:#x}"))],
        )
        .unwrap_err();
    assert_eq!(error.code, -32000);
    assert!(
        error.message.contains("dropped from block 1")
            && error
                .message
                .contains("max priority fee per gas higher than max fee per gas"),
        "{error:?}"
    );
    let data = error.data.unwrap();
    assert_eq!(data["block"], "0x1");
    assert_eq!(data["nonce"], "0x0");
    let error = node
        .handle(
            "eth_getTransactionByHash",
            &[json!(format!("{next_hash:#x}"))],
        )
        .unwrap_err();
    assert!(
        error.message.contains(&format!("{bad_hash:#x}")),
        "names the dropped one: {error:?}"
    );
    assert_eq!(
        node.handle(
            "eth_getTransactionReceipt",
            &[json!(format!("{bad_hash:#x}"))]
        )
        .unwrap(),
        Value::Null
    );
    let from = json!(format!("{:#x}", wallet.address));
    assert_eq!(
        node.handle("eth_getTransactionCount", &[from, json!("pending")])
            .unwrap(),
        json!("0x0"),
        "the pending nonce is the state nonce again"
    );
    node.submit_raw(&wallet.eip1559(chain_id, 0, to, U256::from(1), vec![], 21_000))
        .expect("nonce 0 is free again");
    let out = node.produce_block(1_700_000_002).unwrap();
    assert_eq!(out.evm.txs.len(), 1);
    assert!(out.evm.dropped.is_empty());
}

/// A transaction deferred for lack of block gas holds back its sender's later ones (they
/// used to be tried in the same block and dropped for their nonce): all are included, in
/// order, in the next block.
#[test]
fn a_deferred_transaction_holds_back_the_same_senders_later_ones() {
    let a = Wallet::new(23);
    let b = Wallet::new(24);
    let (chain, genesis) = Chain::genesis(
        core_genesis(),
        config(),
        NATIVE,
        vec![(a.address, ether(10)), (b.address, ether(10))],
        1_700_000_000,
    );
    let mut node = Node::new(chain, genesis, None).unwrap();
    let chain_id = config().chain_id;
    let to = Some(Address::repeat_byte(0x42));
    // Initcode `JUMPDEST PUSH1 0 JUMP` loops until out of gas: it uses its whole limit.
    let burn = 20_000_000;
    let burner = node
        .submit_raw(&a.eip1559(
            chain_id,
            0,
            None,
            U256::ZERO,
            vec![0x5b, 0x60, 0x00, 0x56],
            burn,
        ))
        .unwrap();
    // 20M + 20M > 30M: b's first is deferred; its second (21,000) would fit but must wait.
    let b0 = node
        .submit_raw(&b.eip1559(chain_id, 0, to, U256::from(1), vec![], burn))
        .unwrap();
    let b1 = node
        .submit_raw(&b.eip1559(chain_id, 1, to, U256::from(1), vec![], 21_000))
        .unwrap();
    let out = node.produce_block(1_700_000_001).unwrap();
    assert!(out.evm.dropped.is_empty(), "{:?}", out.evm.dropped);
    assert_eq!(
        out.evm.txs.iter().map(|t| t.hash).collect::<Vec<_>>(),
        vec![burner]
    );
    assert_eq!(node.pending_hashes(), vec![b0, b1]);
    let from = json!(format!("{:#x}", b.address));
    assert_eq!(
        node.handle("eth_getTransactionCount", &[from, json!("pending")])
            .unwrap(),
        json!("0x2")
    );
    let out = node.produce_block(1_700_000_002).unwrap();
    assert!(out.evm.dropped.is_empty(), "{:?}", out.evm.dropped);
    assert_eq!(
        out.evm.txs.iter().map(|t| t.hash).collect::<Vec<_>>(),
        vec![b0, b1]
    );
}

/// Issue #12, item 13: resending a mined transaction answers geth's `nonce too low: next
/// nonce N, tx nonce M` (ethers: NONCE_EXPIRED), not `already known` (ethers:
/// UNKNOWN_ERROR); `already known` stays for a transaction still in the pool.
#[test]
fn resending_a_mined_transaction_answers_nonce_too_low() {
    let wallet = Wallet::new(25);
    let server = start(node(&wallet, None));
    let addr = server.addr;
    let chain_id = config().chain_id;
    let to = Some(Address::repeat_byte(0x42));
    let raw = raw_hex(&wallet.eip1559(chain_id, 0, to, U256::from(1), vec![], 21_000));
    let hash = ok(addr, "eth_sendRawTransaction", json!([raw]));
    let error = rpc(addr, "eth_sendRawTransaction", json!([raw])).unwrap_err();
    assert_eq!(error["code"], -32000);
    assert_eq!(error["message"], "already known", "still pooled: {error}");
    ok(addr, "nexus_mine", json!([]));
    assert_eq!(
        ok(addr, "eth_getTransactionReceipt", json!([hash]))["status"],
        "0x1"
    );
    let error = rpc(addr, "eth_sendRawTransaction", json!([raw])).unwrap_err();
    assert_eq!(error["code"], -32000);
    assert_eq!(
        error["message"], "nonce too low: next nonce 1, tx nonce 0",
        "mined: {error}"
    );
    server.stop();
}
