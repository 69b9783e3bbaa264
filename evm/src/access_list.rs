//! `eth_createAccessList`'s tracer: an inspector that records every account and storage
//! slot a call touches, as geth's `AccessListTracer` does (docs/evm.md, "JSON-RPC").
//!
//! Slots read or written (`SLOAD`, `SSTORE`) are listed under the executing contract;
//! accounts read (`BALANCE`, `EXTCODE*`, `SELFDESTRUCT`'s beneficiary) or called (`CALL`,
//! `CALLCODE`, `DELEGATECALL`, `STATICCALL`) are listed unless excluded: the sender, the
//! recipient (or the created contract) and every precompile, Nexus's included, which are
//! warm anyway.

use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_primitives::{Address, B256};
use revm::bytecode::opcode;
use revm::interpreter::interpreter::EthInterpreter;
use revm::interpreter::interpreter_types::{InputsTr, Jumps};
use revm::interpreter::Interpreter;
use revm::Inspector;
use std::collections::{BTreeMap, BTreeSet};

/// Accounts and slots touched by one call.
#[derive(Clone, Debug, Default)]
pub struct AccessListInspector {
    excluded: BTreeSet<Address>,
    touched: BTreeMap<Address, BTreeSet<B256>>,
}

impl AccessListInspector {
    /// A tracer starting from `list` (its entries stay, as in geth), never listing an
    /// address of `excluded` unless a slot of it is touched or given.
    pub fn new(list: &AccessList, excluded: BTreeSet<Address>) -> AccessListInspector {
        let mut inspector = AccessListInspector {
            excluded,
            touched: BTreeMap::new(),
        };
        for item in list.iter() {
            inspector.add_address(item.address);
            for slot in &item.storage_keys {
                inspector.add_slot(item.address, *slot);
            }
        }
        inspector
    }

    /// The list, accounts and slots in ascending order.
    pub fn access_list(&self) -> AccessList {
        AccessList(
            self.touched
                .iter()
                .map(|(address, slots)| AccessListItem {
                    address: *address,
                    storage_keys: slots.iter().copied().collect(),
                })
                .collect(),
        )
    }

    fn add_address(&mut self, address: Address) {
        if !self.excluded.contains(&address) {
            self.touched.entry(address).or_default();
        }
    }

    fn add_slot(&mut self, address: Address, slot: B256) {
        self.touched.entry(address).or_default().insert(slot);
    }
}

impl<CTX> Inspector<CTX, EthInterpreter> for AccessListInspector {
    fn step(&mut self, interp: &mut Interpreter<EthInterpreter>, _context: &mut CTX) {
        let operand = match interp.bytecode.opcode() {
            opcode::SLOAD | opcode::SSTORE => {
                if let Ok(slot) = interp.stack.peek(0) {
                    let contract = interp.input.target_address();
                    self.add_slot(contract, B256::from(slot.to_be_bytes::<32>()));
                }
                return;
            }
            opcode::EXTCODECOPY
            | opcode::EXTCODEHASH
            | opcode::EXTCODESIZE
            | opcode::BALANCE
            | opcode::SELFDESTRUCT => 0,
            opcode::CALL | opcode::CALLCODE | opcode::DELEGATECALL | opcode::STATICCALL => 1,
            _ => return,
        };
        if let Ok(word) = interp.stack.peek(operand) {
            self.add_address(Address::from_word(B256::from(word.to_be_bytes::<32>())));
        }
    }
}
