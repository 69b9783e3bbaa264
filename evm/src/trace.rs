//! Tracing for `debug_traceTransaction` and `debug_traceCall` (docs/evm.md, "Tracing"):
//! geth's default struct-log tracer and its `callTracer`, both filled by revm-inspectors'
//! `TracingInspector` (built on the same revm) and answered as geth's JSON types.
//!
//! A call is traced on a given state ([`Executor::trace_call`]). A past transaction is
//! traced by re-executing its block on the state before the block
//! ([`Executor::trace_in_block`]): the block's credits, then its transactions in order up
//! to the one traced, in a scratch overlay that is dropped afterwards. The read
//! precompiles see the Core view they are given (the node passes Core as it is now).

use crate::actions::Credit;
use crate::core_view::CoreView;
use crate::executor::{BlockHeader, CallRequest, Executor, TxRecord, SPEC, SYSTEM_TX_TYPE};
use crate::history::PastState;
use crate::precompiles::NexusPrecompiles;
use crate::system;
use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_primitives::TxKind;
/// geth's tracing options and trace types, as served.
pub use alloy_rpc_types_trace::geth::{
    CallConfig, GethDebugBuiltInTracerType, GethDebugTracerType, GethDebugTracingOptions,
    GethDefaultTracingOptions, GethTrace,
};
use revm::context::{CfgEnv, Context, TxEnv};
use revm::context_interface::result::ExecutionResult;
use revm::database::{CacheDB, DatabaseRef, WrapDatabaseRef};
use revm::{Database, DatabaseCommit, ExecuteCommitEvm, InspectEvm, MainBuilder, MainContext};
use revm_inspectors::tracing::{
    TraceLimitBehavior, TraceLimits, TracingInspector, TracingInspectorConfig,
};
use std::convert::Infallible;
use std::num::NonZeroU64;

/// Most struct logs one trace records (the memory of the validator answering it is the
/// bound): a longer one is refused unless the options' `limit` asks for at most this many.
pub const MAX_STRUCT_LOGS: u64 = 100_000;
/// Most bytes one trace copies (call inputs, memory snapshots); beyond, it is refused.
pub const MAX_TRACE_BYTES: usize = 256 << 20;

/// Which of the two tracers served, with its options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracer {
    /// geth's default: one struct log per opcode (pc, op, gas, gasCost, depth, stack;
    /// memory, storage and return data by the options' flags).
    StructLogs(GethDefaultTracingOptions),
    /// `callTracer`: nested call frames.
    Calls(CallConfig),
}

/// Why a trace was not made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// A tracer other than the two served.
    #[error("tracer {0:?} is not supported: this node serves the default struct-log tracer (no \"tracer\") and \"callTracer\"")]
    Unsupported(String),
    /// A `tracerConfig` the tracer cannot read.
    #[error("tracerConfig: {0}")]
    Config(String),
    /// revm refused the transaction (not expected for an included one).
    #[error("transaction not executed: {0}")]
    Invalid(String),
    /// The trace would pass the node's bounds ([`MAX_STRUCT_LOGS`], [`MAX_TRACE_BYTES`]).
    #[error("trace too large: more than {MAX_STRUCT_LOGS} struct logs or {MAX_TRACE_BYTES} bytes recorded; pass a smaller \"limit\", disable memory, or use callTracer")]
    TooLarge,
    /// The transaction is not in the block given.
    #[error("transaction {index} is not in the block ({len} transactions)")]
    NotInBlock {
        /// The index asked for.
        index: usize,
        /// The block's transaction count.
        len: usize,
    },
}

impl Tracer {
    /// The tracer geth's options name: none is the struct logger, `callTracer` the call
    /// tracer (its `tracerConfig`: `onlyTopCall`, `withLog`); any other is refused.
    pub fn from_options(options: GethDebugTracingOptions) -> Result<Tracer, TraceError> {
        match options.tracer {
            None => Ok(Tracer::StructLogs(options.config)),
            Some(GethDebugTracerType::BuiltInTracer(GethDebugBuiltInTracerType::CallTracer)) => {
                let config = options.tracer_config.into_call_config();
                Ok(Tracer::Calls(
                    config.map_err(|e| TraceError::Config(e.to_string()))?,
                ))
            }
            Some(other) => Err(TraceError::Unsupported(other.as_str().to_string())),
        }
    }

    /// An inspector recording what this tracer reports, within the node's bounds: struct
    /// logs up to the options' `limit` if it is within [`MAX_STRUCT_LOGS`], else one more
    /// than the bound (so that [`Tracer::finish`] can tell a longer trace); copied bytes up
    /// to [`MAX_TRACE_BYTES`], then the run halts.
    fn inspector(&self) -> TracingInspector {
        let config = match self {
            Tracer::StructLogs(options) => {
                let asked = options.limit.filter(|&n| n != 0 && n <= MAX_STRUCT_LOGS);
                let mut config = TracingInspectorConfig::from_geth_config(options);
                config.step_limit = NonZeroU64::new(asked.unwrap_or(MAX_STRUCT_LOGS + 1));
                config
            }
            Tracer::Calls(config) => TracingInspectorConfig::from_geth_call_config(config),
        };
        let limits = TraceLimits::default()
            .set_max_recorded_bytes(Some(MAX_TRACE_BYTES))
            .set_behavior(TraceLimitBehavior::Halt);
        TracingInspector::new(config).with_limits(limits)
    }

    /// The trace of a finished run of a transaction with this gas limit (the top call
    /// frame's `gas`, as geth reports it, not what was left after the intrinsic gas).
    fn finish(
        &self,
        inspector: TracingInspector,
        result: &ExecutionResult,
        gas_limit: u64,
    ) -> Result<GethTrace, TraceError> {
        if inspector.limit_exceeded() {
            return Err(TraceError::TooLarge);
        }
        let gas_used = result.tx_gas_used();
        let builder = inspector
            .with_transaction_gas_limit(gas_limit)
            .into_geth_builder();
        Ok(match self {
            Tracer::StructLogs(options) => {
                let output = result.output().cloned().unwrap_or_default();
                let frame = builder.geth_traces(gas_used, output, *options);
                if frame.struct_logs.len() as u64 > MAX_STRUCT_LOGS {
                    return Err(TraceError::TooLarge);
                }
                frame.into()
            }
            Tracer::Calls(config) => builder.geth_call_traces(*config, gas_used).into(),
        })
    }

    /// The trace of a run that ended with `run` (a halt on the byte bound is `TooLarge`).
    fn conclude<E: std::fmt::Display>(
        &self,
        inspector: TracingInspector,
        run: Result<ExecutionResult, E>,
        gas_limit: u64,
    ) -> Result<GethTrace, TraceError> {
        match run {
            Ok(result) => self.finish(inspector, &result, gas_limit),
            Err(_) if inspector.limit_exceeded() => Err(TraceError::TooLarge),
            Err(e) => Err(TraceError::Invalid(e.to_string())),
        }
    }
}

/// A block to re-execute for a trace: its header, the credits applied before its
/// transactions ([`crate::executor::BlockOutput::credits`]) and its transactions in order
/// (callbacks included).
#[derive(Clone, Copy, Debug)]
pub struct BlockReplay<'a> {
    /// The block's header.
    pub header: &'a BlockHeader,
    /// Its credits, in order.
    pub credits: &'a [Credit],
    /// Its transactions, in order.
    pub txs: &'a [&'a TxRecord],
}

impl Executor {
    /// Traces a call on `db` (the state after `header`) without changing anything; the
    /// environment is that of `eth_call` there (the block after `header`, fee, nonce and
    /// balance checks off).
    pub fn trace_call<D: DatabaseRef<Error = Infallible>>(
        &self,
        core: &dyn CoreView,
        db: D,
        header: &BlockHeader,
        request: &CallRequest,
        tracer: Tracer,
    ) -> Result<GethTrace, TraceError> {
        let (cfg, block_env) = self.call_env_after(header);
        let tx = self.call_tx(request);
        let gas_limit = tx.gas_limit;
        let precompiles = NexusPrecompiles::new(SPEC, core, self.config().wei_per_unit);
        let ctx = Context::mainnet()
            .with_db(WrapDatabaseRef(db))
            .with_cfg(cfg)
            .with_block(block_env);
        let mut inspector = tracer.inspector();
        let mut evm = ctx
            .build_mainnet_with_inspector(&mut inspector)
            .with_precompiles(precompiles);
        let run = evm.inspect_tx(tx).map(|out| out.result);
        drop(evm);
        tracer.conclude(inspector, run, gas_limit)
    }

    /// Traces transaction `index` of `block` by re-executing the block on `before` (the
    /// state after the block's parent): its credits, then its transactions before `index`
    /// (committed to a scratch overlay), then the one traced. Nothing is changed.
    pub fn trace_in_block(
        &self,
        core: &dyn CoreView,
        before: &PastState<'_>,
        block: BlockReplay<'_>,
        index: usize,
        tracer: Tracer,
    ) -> Result<GethTrace, TraceError> {
        let len = block.txs.len();
        let target = block
            .txs
            .get(index)
            .ok_or(TraceError::NotInBlock { index, len })?;
        let mut db = CacheDB::new(before);
        apply_credits(&mut db, block.credits);
        let header = block.header;
        let block_env = self.block_env_after(header.number, header.timestamp, header.parent_hash);
        let precompiles = || NexusPrecompiles::new(SPEC, core, self.config().wei_per_unit);
        let mut evm = Context::mainnet()
            .with_db(&mut db)
            .with_cfg(self.cfg())
            .with_block(block_env.clone())
            .build_mainnet()
            .with_precompiles(precompiles());
        for record in &block.txs[..index] {
            evm.ctx.modify_cfg(|cfg| system_rules(cfg, record));
            evm.transact_commit(replay_env(record))
                .map_err(|e| TraceError::Invalid(e.to_string()))?;
        }
        drop(evm);
        let mut cfg = self.cfg();
        system_rules(&mut cfg, target);
        let mut inspector = tracer.inspector();
        let mut evm = Context::mainnet()
            .with_db(&mut db)
            .with_cfg(cfg)
            .with_block(block_env)
            .build_mainnet_with_inspector(&mut inspector)
            .with_precompiles(precompiles());
        let run = evm.inspect_tx(replay_env(target)).map(|out| out.result);
        drop(evm);
        tracer.conclude(inspector, run, target.gas_limit)
    }

    /// Traces every transaction of `block` (`debug_traceBlockByNumber`): the block
    /// re-executed once on `before` (the state after its parent), its credits first, each
    /// transaction traced with its own inspector and committed to a scratch overlay before
    /// the next. One result per transaction, in block order; nothing is changed.
    pub fn trace_block(
        &self,
        core: &dyn CoreView,
        before: &PastState<'_>,
        block: BlockReplay<'_>,
        tracer: Tracer,
    ) -> Vec<Result<GethTrace, TraceError>> {
        let mut db = CacheDB::new(before);
        apply_credits(&mut db, block.credits);
        let header = block.header;
        let block_env = self.block_env_after(header.number, header.timestamp, header.parent_hash);
        let mut traces = Vec::with_capacity(block.txs.len());
        for record in block.txs {
            let mut cfg = self.cfg();
            system_rules(&mut cfg, record);
            let mut inspector = tracer.inspector();
            let mut evm = Context::mainnet()
                .with_db(&mut db)
                .with_cfg(cfg)
                .with_block(block_env.clone())
                .build_mainnet_with_inspector(&mut inspector)
                .with_precompiles(NexusPrecompiles::new(
                    SPEC,
                    core,
                    self.config().wei_per_unit,
                ));
            let run = evm.inspect_tx(replay_env(record));
            drop(evm);
            let run = run.map(|out| {
                db.commit(out.state);
                out.result
            });
            traces.push(tracer.conclude(inspector, run, record.gas_limit));
        }
        traces
    }
}

/// The credits of a block, applied as the executor does (escrow to recipient); the list
/// holds only credits the escrow covered when the block ran.
fn apply_credits<D: DatabaseRef<Error = Infallible>>(db: &mut CacheDB<D>, credits: &[Credit]) {
    for credit in credits {
        let mut escrow = db
            .basic(system::CORE_WRITER)
            .ok()
            .flatten()
            .unwrap_or_default();
        escrow.balance = escrow.balance.saturating_sub(credit.wei);
        db.insert_account_info(system::CORE_WRITER, escrow);
        let mut to = db.basic(credit.to).ok().flatten().unwrap_or_default();
        to.balance += credit.wei;
        db.insert_account_info(credit.to, to);
    }
}

/// Callbacks (system transactions) run without nonce and base-fee checks, as in the block.
fn system_rules(cfg: &mut CfgEnv, record: &TxRecord) {
    let system = record.tx_type == SYSTEM_TX_TYPE;
    cfg.disable_nonce_check = system;
    cfg.disable_base_fee = system;
}

/// The revm transaction of an executed one, from its record: the fields its signed
/// envelope gave revm (a callback as the executor builds it).
fn replay_env(record: &TxRecord) -> TxEnv {
    let mut tx = TxEnv::default();
    if record.tx_type != SYSTEM_TX_TYPE {
        tx.tx_type = record.tx_type;
        tx.gas_priority_fee = record.max_priority_fee_per_gas;
        tx.nonce = record.nonce;
    }
    tx.caller = record.from;
    tx.gas_limit = record.gas_limit;
    tx.gas_price = record.max_fee_per_gas;
    tx.kind = record.to.map_or(TxKind::Create, TxKind::Call);
    tx.value = record.value;
    tx.data = record.input.clone();
    tx.chain_id = record.chain_id;
    tx.access_list = AccessList(
        record
            .access_list
            .iter()
            .map(|(address, keys)| AccessListItem {
                address: *address,
                storage_keys: keys.clone(),
            })
            .collect(),
    );
    tx
}
