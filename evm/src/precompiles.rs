//! The precompile provider: Ethereum's Cancun precompiles, the Core read precompiles and
//! the CoreWriter system contract.
//!
//! Reads answer from a [`CoreView`] borrowed for the block (Core as of the block's start).
//! CoreWriter never touches Core: it validates the call, charges its gas and pushes a log
//! into revm's journal, which drops the log if the call or any caller reverts.

use crate::actions::{action_topic, ActionKind};
use crate::core_view::CoreView;
use crate::system::{self, abi::*};
use alloy_primitives::{Address, Bytes, Log, LogData, B256, U256};
use engine::Side;
use revm::context::Cfg;
use revm::context_interface::{ContextTr, JournalTr, Transaction};
use revm::handler::{precompile_output_to_interpreter_result, EthPrecompiles, PrecompileProvider};
use revm::interpreter::{CallInputs, CallScheme, InterpreterResult};
use revm::precompile::{PrecompileHalt, PrecompileOutput};
use revm::primitives::hardfork::SpecId;
use revm::primitives::AddressSet;

/// Ethereum precompiles plus Nexus's, for one EVM block.
pub struct NexusPrecompiles<'a> {
    eth: EthPrecompiles,
    warm: AddressSet,
    core: &'a dyn CoreView,
    wei_per_unit: U256,
}

impl<'a> NexusPrecompiles<'a> {
    /// Precompiles of `spec` reading `core`; `wei_per_unit` converts native deposits.
    pub fn new(spec: SpecId, core: &'a dyn CoreView, wei_per_unit: U256) -> Self {
        NexusPrecompiles {
            eth: EthPrecompiles::new(spec),
            warm: NexusPrecompiles::addresses(spec),
            core,
            wei_per_unit,
        }
    }

    /// Every precompile address of `spec`: Ethereum's, the Core reads and CoreWriter.
    pub fn addresses(spec: SpecId) -> AddressSet {
        let mut all = EthPrecompiles::new(spec).warm_addresses().clone();
        all.extend(system::READ_PRECOMPILES);
        all.insert(system::CORE_WRITER);
        all
    }

    fn read(&self, address: Address, input: &[u8]) -> Result<(u64, Vec<u8>), String> {
        let core = self.core;
        let mut w = Words::new(input);
        let mut gas = system::READ_BASE_GAS;
        let mut out = Vec::with_capacity(7 * 32);
        match address {
            system::CORE_BLOCK => {
                w.finish()?;
                out.extend_from_slice(&word_u64(core.height()));
            }
            system::BALANCE => {
                let account = system::core_account(w.address()?);
                let asset = w.uint(32)? as u32;
                w.finish()?;
                let b = core.balance(account, asset).unwrap_or_default();
                out.extend_from_slice(&word_i128(b.total as i128));
                out.extend_from_slice(&word_i128(b.locked as i128));
            }
            system::POSITION => {
                let account = system::core_account(w.address()?);
                let market = w.uint(32)? as u32;
                w.finish()?;
                match core.position(account, market) {
                    Some(p) => {
                        out.extend_from_slice(&word_i128(p.size as i128));
                        out.extend_from_slice(&word_i128(p.open_notional));
                        out.extend_from_slice(&word_i128(p.unrealized_pnl));
                        out.extend_from_slice(&word_i128(p.unsettled_funding));
                        out.extend_from_slice(&word_u64(p.leverage as u64));
                        out.extend_from_slice(&word_bool(p.isolated));
                        out.extend_from_slice(&word_i128(p.isolated_margin as i128));
                    }
                    None => out.resize(7 * 32, 0),
                }
            }
            system::BBO => {
                let market = w.uint(32)? as u32;
                w.finish()?;
                for side in [Side::Buy, Side::Sell] {
                    let (price, lots) = core.best(market, side).unwrap_or((0, 0));
                    out.extend_from_slice(&word_i128(price as i128));
                    out.extend_from_slice(&word_i128(lots as i128));
                }
            }
            system::PRICES => {
                let market = w.uint(32)? as u32;
                w.finish()?;
                let (mark, oracle, last) = core
                    .perp_market(market)
                    .map(|m| (m.mark, m.oracle, m.last_trade))
                    .unwrap_or_default();
                for v in [mark, oracle, last] {
                    out.extend_from_slice(&word_i128(v as i128));
                }
            }
            system::OPEN_ORDERS => {
                let account = system::core_account(w.address()?);
                let market = w.uint(32)? as u32;
                w.finish()?;
                let (orders, scanned) =
                    core.open_orders(account, market, system::MAX_OPEN_ORDERS_RETURNED);
                gas += system::READ_PER_ORDER_GAS * scanned as u64;
                out.extend_from_slice(&word_u64(32));
                out.extend_from_slice(&word_u64(orders.len() as u64));
                for o in orders {
                    out.extend_from_slice(&word_u64(o.oid));
                    out.extend_from_slice(&word_bool(o.side == Side::Buy));
                    out.extend_from_slice(&word_i128(o.price as i128));
                    out.extend_from_slice(&word_i128(o.remaining as i128));
                }
            }
            system::CORE_ACCOUNT => {
                let account = system::core_account(w.address()?);
                w.finish()?;
                out.extend_from_slice(&word_u64(account));
            }
            system::PERP_COLLATERAL => {
                let account = system::core_account(w.address()?);
                w.finish()?;
                let (collateral, margin) = core.perp_collateral(account).unwrap_or_default();
                out.extend_from_slice(&word_i128(collateral as i128));
                out.extend_from_slice(&word_i128(margin as i128));
            }
            _ => unreachable!("only read precompile addresses are routed here"),
        }
        Ok((gas, out))
    }
}

/// Gas of a CoreWriter call: the action's Core cost plus the cross-domain message cost.
pub fn core_writer_gas(kind: &ActionKind, calldata_len: usize) -> u64 {
    kind.core_gas() + system::CROSS_MESSAGE_GAS + system::CROSS_BYTE_GAS * calldata_len as u64
}

/// Gas charged for a CoreWriter call that is refused (bad input), so garbage is not free.
pub const CORE_WRITER_REVERT_GAS: u64 = 1_000;

fn revert(message: &str, gas_limit: u64, reservoir: u64) -> InterpreterResult {
    let output = PrecompileOutput::revert(
        CORE_WRITER_REVERT_GAS.min(gas_limit),
        Bytes::from(error_string(message)),
        reservoir,
    );
    precompile_output_to_interpreter_result(output, gas_limit)
}

impl<CTX> PrecompileProvider<CTX> for NexusPrecompiles<'_>
where
    CTX: ContextTr<Cfg: Cfg<Spec = SpecId>>,
{
    type Output = InterpreterResult;

    fn set_spec(&mut self, spec: SpecId) -> bool {
        let changed = <EthPrecompiles as PrecompileProvider<CTX>>::set_spec(&mut self.eth, spec);
        if changed {
            self.warm = NexusPrecompiles::addresses(spec);
        }
        changed
    }

    fn run(
        &mut self,
        context: &mut CTX,
        inputs: &CallInputs,
    ) -> Result<Option<InterpreterResult>, String> {
        let address = inputs.bytecode_address;
        if address == system::CORE_WRITER {
            let (limit, reservoir) = (inputs.gas_limit, inputs.reservoir);
            // Only a plain CALL: a DELEGATECALL or CALLCODE would let a contract act with
            // its caller's identity, and a static call must not leave a log.
            if inputs.scheme != CallScheme::Call || inputs.target_address != system::CORE_WRITER {
                return Ok(Some(revert("CoreWriter: only CALL", limit, reservoir)));
            }
            if inputs.is_static {
                return Ok(Some(revert("CoreWriter: static call", limit, reservoir)));
            }
            // Callbacks are notifications: a system transaction (and anything it calls)
            // cannot act on Core, or one action could start an endless callback loop.
            if context.tx().caller() == system::SYSTEM_ADDRESS {
                return Ok(Some(revert(
                    "CoreWriter: not from a callback",
                    limit,
                    reservoir,
                )));
            }
            let calldata = inputs.input.bytes(context);
            let value = inputs.value.get();
            let decoded =
                ActionKind::decode_from(inputs.caller, &calldata, value, self.wei_per_unit);
            let kind = match decoded {
                Ok((kind, _)) => kind,
                Err(message) => return Ok(Some(revert(&message, limit, reservoir))),
            };
            let gas = core_writer_gas(&kind, calldata.len());
            if gas > limit {
                let output = PrecompileOutput::halt(PrecompileHalt::OutOfGas, reservoir);
                return Ok(Some(precompile_output_to_interpreter_result(output, limit)));
            }
            let mut data = Vec::with_capacity(96 + calldata.len().div_ceil(32) * 32);
            data.extend_from_slice(&value.to_be_bytes::<32>());
            data.extend_from_slice(&word_u64(64));
            data.extend_from_slice(&word_u64(calldata.len() as u64));
            data.extend_from_slice(&calldata);
            data.resize(96 + calldata.len().div_ceil(32) * 32, 0);
            let topics = vec![action_topic(), B256::from(word_address(inputs.caller))];
            context.journal_mut().log(Log {
                address: system::CORE_WRITER,
                data: LogData::new_unchecked(topics, data.into()),
            });
            let output = PrecompileOutput::new(gas, Bytes::new(), reservoir);
            return Ok(Some(precompile_output_to_interpreter_result(output, limit)));
        }
        if system::READ_PRECOMPILES.contains(&address) {
            let (limit, reservoir) = (inputs.gas_limit, inputs.reservoir);
            let input = inputs.input.bytes(context);
            let output = match self.read(address, &input) {
                Ok((gas, _)) if gas > limit => {
                    PrecompileOutput::halt(PrecompileHalt::OutOfGas, reservoir)
                }
                Ok((gas, out)) => PrecompileOutput::new(gas, out.into(), reservoir),
                Err(message) => PrecompileOutput::revert(
                    system::READ_BASE_GAS.min(limit),
                    Bytes::from(error_string(&format!("Nexus read: {message}"))),
                    reservoir,
                ),
            };
            return Ok(Some(precompile_output_to_interpreter_result(output, limit)));
        }
        <EthPrecompiles as PrecompileProvider<CTX>>::run(&mut self.eth, context, inputs)
    }

    fn warm_addresses(&self) -> &AddressSet {
        &self.warm
    }

    fn contains(&self, address: &Address) -> bool {
        self.warm.contains(address)
    }
}
