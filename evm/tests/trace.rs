//! Tracing (`evm::trace`) on the executor: a transaction re-executed in its block sees the
//! effects of the transactions before it and of the block's credits, and its trace's gas
//! is the receipt's; the struct logs of a tiny contract list its opcodes in order with
//! their pcs, costs and stacks; the call tracer shows a contract's call to another with
//! the callee's address, input and output; calls are traced at the head and at a past
//! block; an unknown tracer is refused.

mod common;

use alloy_primitives::{Address, B256, U256};
use common::{address_of, deploy, signed};
use engine::{Engine, EngineConfig};
use evm::actions::Credit;
use evm::core_view::CoreSnapshot;
use evm::executor::{
    BlockInput, BlockOutput, CallOutcome, CallRequest, EvmConfig, Executor, Genesis, TxRecord,
};
use evm::history::StateHistory;
use evm::trace::{BlockReplay, GethDebugTracingOptions, TraceError, Tracer};
use k256::ecdsa::SigningKey;
use serde_json::{json, Value};

/// Runtime of a contract that stores its calldata word in slot 0, or returns slot 0 when
/// called without data: `CALLDATASIZE ISZERO PUSH1 12 JUMPI PUSH1 0 CALLDATALOAD PUSH1 0
/// SSTORE STOP JUMPDEST PUSH1 0 SLOAD PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN`.
const STORE_RUNTIME: [u8; 24] = [
    0x36, 0x15, 0x60, 0x0c, 0x57, 0x60, 0x00, 0x35, 0x60, 0x00, 0x55, 0x00, 0x5b, 0x60, 0x00, 0x54,
    0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3,
];

/// Runtime of a contract that calls `target` with its own calldata and returns the first
/// 32 bytes of memory (the callee's output, or its own calldata if the callee returned
/// nothing): `CALLDATASIZE PUSH1 0 PUSH1 0 CALLDATACOPY PUSH1 32 PUSH1 0 CALLDATASIZE PUSH1
/// 0 PUSH1 0 PUSH20 target GAS CALL POP PUSH1 32 PUSH1 0 RETURN`.
fn forwarder_runtime(target: Address) -> Vec<u8> {
    let mut code = vec![
        0x36, 0x60, 0x00, 0x60, 0x00, 0x37, 0x60, 0x20, 0x60, 0x00, 0x36, 0x60, 0x00, 0x60, 0x00,
        0x73,
    ];
    code.extend_from_slice(target.as_slice());
    code.extend_from_slice(&[0x5a, 0xf1, 0x50, 0x60, 0x20, 0x60, 0x00, 0xf3]);
    code
}

fn word(n: u8) -> B256 {
    B256::with_last_byte(n)
}

/// The chain of the tests: block 1 deploys the store and the forwarder; block 2 credits
/// `payer` (who had nothing), stores 0x11 directly, reads it through the forwarder, and
/// `payer` spends from its credit.
struct Chain {
    executor: Executor,
    history: StateHistory,
    blocks: Vec<BlockOutput>,
    store: Address,
    forwarder: Address,
}

fn chain(engine: &Engine) -> Chain {
    let owner = SigningKey::from_slice(&[7; 32]).expect("a key");
    let payer = SigningKey::from_slice(&[9; 32]).expect("a key");
    let ether = U256::from(10u64).pow(U256::from(18u64));
    let genesis = Genesis {
        alloc: vec![(address_of(&owner), ether)],
        escrow_wei: ether,
        timestamp: 1,
        tokens: Vec::new(),
    };
    let (mut executor, _) = Executor::genesis(EvmConfig::default(), &genesis);
    let store = address_of(&owner).create(0);
    let forwarder = address_of(&owner).create(1);
    let mut history = StateHistory::new(4);
    let mut blocks = Vec::new();
    let mut run = |executor: &mut Executor, height: u64, credits, txs| {
        let input = BlockInput {
            height,
            timestamp: 1 + height,
            credits,
            txs,
            ..Default::default()
        };
        let mut out = executor.execute_block(&CoreSnapshot::new(engine, height), input);
        assert!(out.receipts.iter().all(|r| r.status), "{:?}", out.receipts);
        history.push(height, std::mem::take(&mut out.undo));
        blocks.push(out);
    };
    let deploys = vec![
        signed(&owner, 0, None, 0, deploy(&STORE_RUNTIME)),
        signed(&owner, 1, None, 0, deploy(&forwarder_runtime(store))),
    ];
    run(&mut executor, 1, Vec::new(), deploys);
    let credit = Credit {
        to: address_of(&payer),
        wei: ether / U256::from(2u64),
        action_id: 1,
    };
    let txs = vec![
        signed(&owner, 2, Some(store), 0, word(0x11).to_vec()),
        signed(&owner, 3, Some(forwarder), 0, Vec::new()),
        signed(&payer, 0, Some(Address::with_last_byte(5)), 1, Vec::new()),
    ];
    run(&mut executor, 2, vec![credit], txs);
    Chain {
        executor,
        history,
        blocks,
        store,
        forwarder,
    }
}

impl Chain {
    /// Traces transaction `index` of block 2 (with `credits` as its credits).
    fn trace(
        &self,
        engine: &Engine,
        index: usize,
        credits: &[Credit],
        tracer: Tracer,
    ) -> Result<Value, TraceError> {
        let before = self
            .history
            .at(self.executor.db(), 2, 1)
            .expect("in the window");
        let block = &self.blocks[1];
        let txs: Vec<&TxRecord> = block.txs.iter().collect();
        let replay = BlockReplay {
            header: &block.header,
            credits,
            txs: &txs,
        };
        let view = CoreSnapshot::new(engine, 2);
        let trace = self
            .executor
            .trace_in_block(&view, &before, replay, index, tracer)?;
        Ok(serde_json::to_value(trace).expect("JSON"))
    }
}

fn options(value: Value) -> Tracer {
    let options: GethDebugTracingOptions = serde_json::from_value(value).expect("options");
    Tracer::from_options(options).expect("a served tracer")
}

fn hex32(n: u8) -> String {
    format!("{:#x}", word(n))
}

#[test]
fn struct_logs_list_the_opcodes_in_order_and_the_gas_is_the_receipts() {
    let engine: Engine = Engine::new(EngineConfig::default());
    let chain = chain(&engine);
    let block = &chain.blocks[1];
    let trace = chain
        .trace(&engine, 0, &block.credits, options(json!({})))
        .expect("traced");
    let logs = trace["structLogs"].as_array().expect("struct logs");
    let ops: Vec<&str> = logs.iter().map(|l| l["op"].as_str().unwrap()).collect();
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
    let pcs: Vec<u64> = logs.iter().map(|l| l["pc"].as_u64().unwrap()).collect();
    assert_eq!(pcs, [0, 1, 2, 4, 5, 7, 8, 10, 11]);
    assert!(logs.iter().all(|l| l["depth"] == 1), "{trace}");
    assert_eq!(logs[2]["gasCost"], 3, "PUSH1 costs 3: {trace}");
    // SSTORE's stack: the value under the slot (top last, as geth prints it).
    assert_eq!(logs[7]["stack"], json!(["0x11", "0x0"]), "{trace}");
    assert_eq!(trace["failed"], false);
    for (index, receipt) in block.receipts.iter().enumerate() {
        let trace = chain
            .trace(&engine, index, &block.credits, options(json!({})))
            .expect("traced");
        assert_eq!(trace["gas"], receipt.gas_used, "tx {index}: {trace}");
    }
    // Without its credit the payer could not pay: the replay applies the block's credits.
    let uncredited = chain.trace(&engine, 2, &[], options(json!({})));
    assert!(
        matches!(uncredited, Err(TraceError::Invalid(_))),
        "{uncredited:?}"
    );
    let beyond = chain.trace(&engine, 3, &block.credits, options(json!({})));
    assert_eq!(
        beyond.err(),
        Some(TraceError::NotInBlock { index: 3, len: 3 })
    );
}

#[test]
fn the_call_tracer_shows_the_nested_call_with_its_input_and_output() {
    let engine: Engine = Engine::new(EngineConfig::default());
    let chain = chain(&engine);
    let block = &chain.blocks[1];
    let calls = options(json!({"tracer": "callTracer"}));
    let trace = chain
        .trace(&engine, 1, &block.credits, calls)
        .expect("traced");
    let to = |a: Address| json!(format!("{a:#x}"));
    assert_eq!(trace["type"], "CALL", "{trace}");
    assert_eq!(trace["to"], to(chain.forwarder), "{trace}");
    assert_eq!(
        trace["gasUsed"],
        format!("{:#x}", block.receipts[1].gas_used)
    );
    assert_eq!(
        trace["gas"],
        format!("{:#x}", 300_000),
        "the gas limit, as geth: {trace}"
    );
    // The slot the transaction before it stored, read through the nested call.
    assert_eq!(trace["output"], hex32(0x11), "{trace}");
    let inner = &trace["calls"][0];
    assert_eq!(inner["type"], "CALL", "{trace}");
    assert_eq!(inner["from"], to(chain.forwarder), "{trace}");
    assert_eq!(inner["to"], to(chain.store), "{trace}");
    assert_eq!(inner["input"], "0x", "{trace}");
    assert_eq!(inner["output"], hex32(0x11), "{trace}");
    assert!(
        inner.get("calls").is_none(),
        "the store calls nothing: {trace}"
    );

    // A call traced at the head and on the state after block 1 (slot 0 still 0), the
    // nested call's input the word sent.
    let request = CallRequest {
        to: Some(chain.forwarder),
        data: word(0x22).to_vec().into(),
        ..Default::default()
    };
    let view = CoreSnapshot::new(&engine, 2);
    let calls = options(json!({"tracer": "callTracer"}));
    let head = chain.executor.db();
    let now = chain
        .executor
        .trace_call(&view, head, &chain.blocks[1].header, &request, calls);
    let now = serde_json::to_value(now.expect("traced")).expect("JSON");
    assert_eq!(now["calls"][0]["input"], hex32(0x22), "{now}");
    let read = CallRequest {
        to: Some(chain.forwarder),
        ..Default::default()
    };
    let past = chain.history.at(head, 2, 1).expect("in the window");
    let then = chain
        .executor
        .trace_call(&view, &past, &chain.blocks[0].header, &read, calls);
    let then = serde_json::to_value(then.expect("traced")).expect("JSON");
    assert_eq!(then["calls"][0]["output"], hex32(0), "{then}");
    let now = chain
        .executor
        .trace_call(&view, head, &chain.blocks[1].header, &read, calls);
    let now = serde_json::to_value(now.expect("traced")).expect("JSON");
    assert_eq!(now["calls"][0]["output"], hex32(0x11), "{now}");
}

#[test]
fn only_the_two_served_tracers_are_accepted() {
    let parse = |v: Value| {
        let options: GethDebugTracingOptions = serde_json::from_value(v).expect("options");
        Tracer::from_options(options)
    };
    assert!(matches!(
        parse(json!({"tracer": "prestateTracer"})),
        Err(TraceError::Unsupported(name)) if name == "prestateTracer"
    ));
    let only_top = parse(json!({"tracer": "callTracer", "tracerConfig": {"onlyTopCall": true}}));
    assert!(matches!(only_top, Ok(Tracer::Calls(c)) if c.only_top_call == Some(true)));
    let memory = parse(json!({"enableMemory": true, "disableStack": true}));
    assert!(
        matches!(memory, Ok(Tracer::StructLogs(o)) if o.is_memory_enabled() && !o.is_stack_enabled())
    );
    assert!(matches!(
        parse(json!({"tracer": "callTracer", "tracerConfig": {"onlyTopCall": 5}})),
        Err(TraceError::Config(_))
    ));
}

/// The cost of a trace (printed: `cargo test -p evm --test trace -- --nocapture`): a
/// transaction is traced after re-executing the ones before it in its block, so the time
/// grows with its index; the block's own execution for scale. Each trace's gas is the
/// receipt's.
#[test]
fn the_cost_of_a_trace_grows_with_the_transactions_before_it() {
    const TXS: u64 = 256;
    let engine: Engine = Engine::new(EngineConfig::default());
    let owner = SigningKey::from_slice(&[7; 32]).expect("a key");
    let genesis = Genesis {
        alloc: vec![(address_of(&owner), U256::from(10u64).pow(U256::from(20u64)))],
        ..Default::default()
    };
    let (mut executor, _) = Executor::genesis(EvmConfig::default(), &genesis);
    let to = |n: u64| Address::with_last_byte(1).create(n);
    let txs = (0..TXS)
        .map(|n| signed(&owner, n, Some(to(n)), 1, Vec::new()))
        .collect();
    let input = BlockInput {
        height: 1,
        timestamp: 2,
        txs,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let mut out = executor.execute_block(&CoreSnapshot::new(&engine, 1), input);
    let execute_us = started.elapsed().as_micros();
    let mut history = StateHistory::new(2);
    history.push(1, std::mem::take(&mut out.undo));
    let before = history.at(executor.db(), 1, 0).expect("in the window");
    let records: Vec<&TxRecord> = out.txs.iter().collect();
    let replay = BlockReplay {
        header: &out.header,
        credits: &out.credits,
        txs: &records,
    };
    let view = CoreSnapshot::new(&engine, 1);
    println!("block of {TXS} transfers: execute_block {execute_us} us");
    for index in [0, TXS as usize / 2, TXS as usize - 1] {
        let started = std::time::Instant::now();
        let trace = executor.trace_in_block(&view, &before, replay, index, options(json!({})));
        let trace_us = started.elapsed().as_micros();
        let trace = serde_json::to_value(trace.expect("traced")).expect("JSON");
        assert_eq!(trace["gas"], out.receipts[index].gas_used, "{trace}");
        println!("trace of transaction {index}: {trace_us} us");
    }
}

/// A trace is bounded: a loop running 250,000 steps (initcode `JUMPDEST PUSH1 0 JUMP` with a
/// gas limit of 1,000,000) is refused with `TooLarge` by the struct logger, answered with
/// five logs when `limit` asks for five, and answered by the call tracer (one frame).
#[test]
fn a_trace_past_the_bounds_is_refused_unless_limited() {
    let engine: Engine = Engine::new(EngineConfig::default());
    let (executor, _) = Executor::genesis(EvmConfig::default(), &Genesis::default());
    let view = CoreSnapshot::new(&engine, 0);
    let looping = CallRequest {
        gas: Some(1_000_000),
        data: vec![0x5b, 0x60, 0x00, 0x56].into(),
        ..Default::default()
    };
    let trace = |tracer| {
        let head = executor.head();
        executor.trace_call(&view, executor.db(), head, &looping, tracer)
    };
    assert_eq!(trace(options(json!({}))).err(), Some(TraceError::TooLarge));
    let limited = trace(options(json!({"limit": 5}))).expect("five logs");
    let limited = serde_json::to_value(limited).expect("JSON");
    assert_eq!(limited["structLogs"].as_array().map(Vec::len), Some(5));
    assert_eq!(limited["failed"], true, "out of gas: {limited}");
    let ops: Vec<&str> = limited["structLogs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["JUMPDEST", "PUSH1", "JUMP", "JUMPDEST", "PUSH1"]);
    let frame = trace(options(json!({"tracer": "callTracer"}))).expect("a frame");
    let frame = serde_json::to_value(frame).expect("JSON");
    assert_eq!(frame["type"], "CREATE", "{frame}");
    assert!(frame["error"].is_string(), "out of gas: {frame}");
}

/// `eth_call` and `eth_estimateGas` run on a read-only view of the state: what they load
/// (accounts that do not exist, the store's slot) leaves the state's cache as it was, so
/// calls cannot grow it; they still see the state (the store's slot 0 is 0x11).
#[test]
fn calls_leave_the_state_cache_as_it_was() {
    let engine = Engine::new(EngineConfig::default());
    let mut chain = chain(&engine);
    let view = CoreSnapshot::new(&engine, 2);
    let cached = |executor: &Executor| {
        let cache = &executor.db().cache;
        let slots: usize = cache.accounts.values().map(|a| a.storage.len()).sum();
        (cache.accounts.len(), slots, cache.block_hashes.len())
    };
    let before = cached(&chain.executor);
    for i in 0..100u8 {
        let fresh = CallRequest {
            to: Some(Address::repeat_byte(0x80 ^ i)),
            value: U256::ZERO,
            ..Default::default()
        };
        let outcome = chain.executor.call(&view, &fresh);
        assert!(
            matches!(outcome, CallOutcome::Success { .. }),
            "{outcome:?}"
        );
        let estimate = chain.executor.estimate_gas(&view, &fresh);
        assert_eq!(estimate.ok(), Some(21_000));
    }
    let read = CallRequest {
        to: Some(chain.store),
        ..Default::default()
    };
    match chain.executor.call(&view, &read) {
        CallOutcome::Success { output, .. } => assert_eq!(output.as_ref(), word(0x11).as_slice()),
        other => panic!("{other:?}"),
    }
    assert_eq!(cached(&chain.executor), before);
}
