//! Core blocks and EVM blocks in step: block `h` is Core block `h` (external commands,
//! then the CoreWriter actions of EVM block `h - 1`) followed by EVM block `h` (credits
//! and callbacks answering those actions, then user transactions), which reads Core as
//! of its start through a [`CoreSnapshot`]. Heights are equal on both sides.

use crate::bridge::Bridge;
use crate::core_view::CoreSnapshot;
use crate::executor::{
    BlockInput, BlockOutput, CallOutcome, CallRequest, EvmConfig, Executor, Genesis, SignedTx,
};
use alloy_primitives::{Address, B256, U256};
use engine::{ArrayLadder, Command, Engine, Event, PriceLadder};

/// What one step produced.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// Every engine event of the Core block, in order.
    pub core_events: Vec<Event>,
    /// The Core state root after the Core block.
    pub core_root: [u8; 32],
    /// External commands the bridge refused (native asset deposits/withdrawals), with why.
    pub refused_commands: Vec<(Command, String)>,
    /// The EVM block.
    pub evm: BlockOutput,
}

/// The engine, the EVM and the queues between them. One thread owns it.
pub struct Chain<L: PriceLadder = ArrayLadder> {
    engine: Engine<L>,
    executor: Executor,
    bridge: Bridge,
}

impl<L: PriceLadder> Chain<L> {
    /// A chain from its parts; the engine must have run exactly `executor.head().number`
    /// blocks.
    pub fn from_parts(engine: Engine<L>, executor: Executor, bridge: Bridge) -> Self {
        Chain {
            engine,
            executor,
            bridge,
        }
    }

    /// A new chain at height 0: `engine` already holds Core's genesis (assets, markets,
    /// balances); EVM genesis gets `alloc` and an escrow equal to Core's supply of the
    /// native asset, so the bridge invariant holds from the start.
    pub fn genesis(
        engine: Engine<L>,
        config: EvmConfig,
        native_asset: engine::AssetId,
        alloc: Vec<(Address, U256)>,
        timestamp: u64,
    ) -> (Self, BlockOutput) {
        let supply = engine.supply(native_asset).unwrap_or(0);
        assert!(supply >= 0, "supply is deposits minus withdrawals");
        let escrow_wei = U256::from(supply as u64) * config.wei_per_unit;
        let bridge = Bridge::new(native_asset, config.wei_per_unit);
        let genesis = Genesis {
            alloc,
            escrow_wei,
            timestamp,
        };
        let (executor, output) = Executor::genesis(config, &genesis);
        (Chain::from_parts(engine, executor, bridge), output)
    }

    /// The next block: Core block then EVM block, both at `head + 1`.
    pub fn step(&mut self, external: &[Command], txs: Vec<SignedTx>, timestamp: u64) -> StepOutput {
        let height = self.executor.head().number + 1;
        let mut core_events = Vec::new();
        let refused_commands =
            self.bridge
                .run_core_block(&mut self.engine, external, &mut core_events);
        let core_root = self.engine.commit();
        let (credits, callbacks) = self.bridge.take_evm_inputs();
        let input = BlockInput {
            height,
            timestamp,
            core_root: B256::from(core_root),
            credits,
            callbacks,
            txs,
        };
        let view = CoreSnapshot::new(&self.engine, height);
        let evm = self.executor.execute_block(&view, input);
        self.bridge.queue_actions(evm.actions.clone());
        self.bridge.requeue_callbacks(evm.undelivered.clone());
        StepOutput {
            core_events,
            core_root,
            refused_commands,
            evm,
        }
    }

    /// eth_call against the head, reading Core as it is now (= as of the next block's start).
    pub fn call(&mut self, request: &CallRequest) -> CallOutcome {
        let view = CoreSnapshot::new(&self.engine, self.executor.head().number);
        self.executor.call(&view, request)
    }

    /// eth_estimateGas against the head.
    pub fn estimate_gas(&mut self, request: &CallRequest) -> Result<u64, CallOutcome> {
        let view = CoreSnapshot::new(&self.engine, self.executor.head().number);
        self.executor.estimate_gas(&view, request)
    }

    /// The engine (read-only: it changes only through [`Chain::step`]).
    pub fn engine(&self) -> &Engine<L> {
        &self.engine
    }

    /// The EVM executor.
    pub fn executor(&mut self) -> &mut Executor {
        &mut self.executor
    }

    /// The bridge queues.
    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// Records `address` as the owner of its Core account before it sends any action, so
    /// callbacks for events of a Core account funded from outside reach it.
    pub fn register(&mut self, address: Address) {
        self.bridge
            .claim(crate::system::core_account(address), address);
    }

    /// Splits into parts (for persistence).
    pub fn parts(&self) -> (&Engine<L>, &Executor, &Bridge) {
        (&self.engine, &self.executor, &self.bridge)
    }
}
