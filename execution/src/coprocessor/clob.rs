//! The CLOB engine as co-processor 0: its code hash and its Core gas schedule.

use transactions::Action;

use super::{builtin_code_hash, CALL_BASE_GAS};

/// The code hash the genesis registry names the CLOB engine by.
pub fn clob_code_hash() -> [u8; 32] {
    builtin_code_hash("clob/v1")
}

/// Core gas of one typed action (the CLOB's public functions): what it can cost the
/// engine, in units of a cancel (5). A place or modify may match and rest (10), cancel-all
/// walks an account's orders in a market (20), balance and margin changes touch risk state
/// (10), an oracle price is one sample (5). A call of another co-processor is charged by
/// that co-processor; this returns [`CALL_BASE_GAS`] for it, the least any call costs.
pub fn clob_gas(action: &Action) -> u64 {
    match action {
        Action::Place { .. } | Action::Modify { .. } => 10,
        Action::Cancel { .. } | Action::OraclePrice { .. } => 5,
        Action::CancelAll { .. } => 20,
        Action::Withdraw { .. }
        | Action::TransferCollateral { .. }
        | Action::SetLeverage { .. }
        | Action::IsolatedMargin { .. }
        | Action::Deposit { .. } => 10,
        Action::Call { .. } => CALL_BASE_GAS,
    }
}
