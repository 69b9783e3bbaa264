//! The Solidity package's mocks (`evm-bridge/contracts/nexus/mocks`) let a contract run in an
//! EVM without Nexus precompiles, as in Foundry: plain revm with `MockCoreWriter` at
//! CoreWriter's address and `MockPrecompile` at `BBO` and `BALANCE` (what `vm.etch` does).
//! The MarketMaker fixture reads the answers set, and its quote leaves `CoreAction` logs that
//! the chain's own decoder turns into the two orders it sent. Regenerate the mocks' code with
//! `evm-bridge/contracts/build.js` (solc-js 0.8.28).

use alloy_primitives::{address, hex, Address, Bytes, Log, TxKind, U256};
use engine::{Side, TimeInForce};
use evm::actions::{action_topic, ActionKind};
use evm::system::{selector, CORE_WRITER};
use revm::context::result::{ExecutionResult, Output};
use revm::context::{Context, TxEnv};
use revm::database::{CacheDB, EmptyDB};
use revm::state::{AccountInfo, Bytecode};
use revm::{ExecuteCommitEvm, MainBuilder, MainContext};
use serde_json::Value;

const OWNER: Address = address!("00000000000000000000000000000000000000aa");
const BALANCE: Address = address!("0000000000000000000000000000000000000801");
const BBO: Address = address!("0000000000000000000000000000000000000803");

fn contracts(file: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../evm-bridge/contracts/");
    let text = std::fs::read_to_string(format!("{path}{file}")).expect("fixture");
    serde_json::from_str(&text).expect("JSON")
}

fn bytes_of(value: &Value) -> Vec<u8> {
    hex::decode(value.as_str().expect("hex string")).expect("hex")
}

/// One 32-byte word holding `v` (a uint or a non-negative int).
fn word(v: u64) -> [u8; 32] {
    U256::from(v).to_be_bytes()
}

/// `selector(signature) || words`.
fn call_data(signature: &str, words: &[[u8; 32]]) -> Vec<u8> {
    let mut data = selector(signature).to_vec();
    words.iter().for_each(|w| data.extend_from_slice(w));
    data
}

/// ABI encoding of `(bytes a, bytes b)`.
fn two_bytes(a: &[u8], b: &[u8]) -> Vec<[u8; 32]> {
    let padded = |x: &[u8]| x.len().div_ceil(32) as u64;
    let mut words = vec![word(64), word(64 + 32 + 32 * padded(a))];
    for x in [a, b] {
        words.push(word(x.len() as u64));
        for chunk in x.chunks(32) {
            let mut w = [0u8; 32];
            w[..chunk.len()].copy_from_slice(chunk);
            words.push(w);
        }
    }
    words
}

/// A plain EVM (no Nexus precompiles) and the owner's transactions.
struct PlainEvm {
    db: CacheDB<EmptyDB>,
}

impl PlainEvm {
    fn new() -> PlainEvm {
        let mut db = CacheDB::new(EmptyDB::new());
        let funded = AccountInfo {
            balance: U256::from(10u128.pow(30)),
            ..AccountInfo::default()
        };
        db.insert_account_info(OWNER, funded);
        PlainEvm { db }
    }

    /// Puts `code` at `at`, as Foundry's `vm.etch`.
    fn etch(&mut self, at: Address, code: Vec<u8>) {
        let info = AccountInfo::from_bytecode(Bytecode::new_raw(Bytes::from(code)));
        self.db.insert_account_info(at, info);
    }

    fn run(&mut self, kind: TxKind, data: Vec<u8>) -> ExecutionResult {
        let tx = TxEnv {
            caller: OWNER,
            kind,
            data: data.into(),
            gas_limit: 5_000_000,
            ..TxEnv::default()
        };
        let mut evm = Context::mainnet().with_db(&mut self.db).build_mainnet();
        evm.ctx.modify_cfg(|cfg| cfg.disable_nonce_check = true);
        evm.transact_commit(tx).expect("valid transaction")
    }

    fn call(&mut self, to: Address, data: Vec<u8>) -> (Vec<u8>, Vec<Log>) {
        match self.run(TxKind::Call(to), data) {
            ExecutionResult::Success { output, logs, .. } => (output.into_data().to_vec(), logs),
            other => panic!("call to {to} failed: {other:?}"),
        }
    }
}

#[test]
fn a_contract_runs_on_the_mocks_and_its_actions_decode_as_the_chain_decodes_them() {
    let mocks = contracts("nexus/mocks/Mocks.json");
    let market_maker = contracts("MarketMaker.json");
    let mut evm = PlainEvm::new();
    evm.etch(
        CORE_WRITER,
        bytes_of(&mocks["MockCoreWriter"]["deployedBytecode"]),
    );
    for at in [BBO, BALANCE] {
        evm.etch(at, bytes_of(&mocks["MockPrecompile"]["deployedBytecode"]));
    }
    let mut create = bytes_of(&market_maker["bytecode"]);
    create.extend_from_slice(&word(0)); // constructor(uint32 market = 0)
    let mm = match evm.run(TxKind::Create, create) {
        ExecutionResult::Success {
            output: Output::Create(_, Some(address)),
            ..
        } => address,
        other => panic!("deploy failed: {other:?}"),
    };

    // BBO answers (90 x 5, 110 x 7) for market 0; the contract reads them through it.
    let answer = [word(90), word(5), word(110), word(7)].concat();
    let set = call_data("setAnswer(bytes,bytes)", &two_bytes(&word(0), &answer));
    evm.call(BBO, set);
    let (read, _) = evm.call(mm, call_data("bestBidOffer()", &[]));
    assert_eq!(read, answer);
    // A read the mock was given no answer for reverts (here: the contract's balance).
    let unanswered = evm.run(
        TxKind::Call(mm),
        call_data("coreBalance(uint32)", &[word(1)]),
    );
    assert!(
        matches!(unanswered, ExecutionResult::Revert { .. }),
        "{unanswered:?}"
    );

    // quote(90, 110, 3): two CoreAction logs from CoreWriter's address, for the chain's decoder.
    let (_, logs) = evm.call(
        mm,
        call_data(
            "quote(uint64,uint64,uint64)",
            &[word(90), word(110), word(3)],
        ),
    );
    let actions: Vec<ActionKind> = logs
        .iter()
        .filter(|log| log.address == CORE_WRITER && log.topics()[0] == action_topic())
        .map(|log| {
            assert_eq!(log.topics()[1].as_slice()[12..], mm.0[..], "sender topic");
            let data = &log.data.data;
            let len = U256::from_be_slice(&data[64..96]).to::<usize>();
            ActionKind::decode(&data[96..96 + len], U256::ZERO, U256::from(1)).expect("decodes")
        })
        .collect();
    let place = |oid, side, price| ActionKind::Place {
        market: 0,
        oid,
        side,
        price: Some(price),
        qty: 3,
        tif: TimeInForce::Gtc,
        reduce_only: false,
    };
    assert_eq!(
        actions,
        vec![place(1, Side::Buy, 90), place(2, Side::Sell, 110)]
    );
    let mut key = [0u8; 32];
    key[12..].copy_from_slice(mm.as_slice());
    let (count, _) = evm.call(CORE_WRITER, call_data("actions(address)", &[key]));
    assert_eq!(
        count,
        word(2),
        "the mock counted the contract's two actions"
    );
}

/// The package's CoreWriter interface (as the mock implements it) has exactly the functions
/// the chain decodes, with the same signatures.
#[test]
fn the_packages_core_writer_functions_are_the_ones_the_chain_decodes() {
    use evm::actions::signatures::*;
    let abi = &contracts("nexus/mocks/Mocks.json")["MockCoreWriter"]["abi"];
    let mut package: Vec<String> = abi
        .as_array()
        .expect("ABI")
        .iter()
        .filter(|item| item["type"] == "function" && item["name"] != "actions")
        .map(|item| {
            let inputs: Vec<&str> = item["inputs"]
                .as_array()
                .expect("inputs")
                .iter()
                .map(|input| input["type"].as_str().expect("type"))
                .collect();
            format!(
                "{}({})",
                item["name"].as_str().expect("name"),
                inputs.join(",")
            )
        })
        .collect();
    package.sort();
    let mut chain: Vec<String> = [
        PLACE,
        CANCEL,
        CANCEL_ALL,
        MODIFY,
        DEPOSIT,
        WITHDRAW,
        TRANSFER_COLLATERAL,
        SET_LEVERAGE,
        ISOLATED_MARGIN,
        WITHDRAW_ASSET,
        ASSET_TO_CORE,
    ]
    .map(String::from)
    .to_vec();
    chain.sort();
    assert_eq!(package, chain);
}
