//! Governors: one state machine per tenant (SPEC §4).
//!
//! Owns the pure transition logic (`machine`), the Governor actor that drives it (`actor`) and
//! the eval-only tools (`tools`). Invariant: a governor's state advances only after the receipts
//! of its decision are durable; it is the only source of its tenant's governor receipts.

pub mod actor;
pub mod machine;
pub mod tools;

pub use actor::{
    CallTool, Control, EntitlementUpdate, Executor, GetView, Governor, GovernorDeps, GovernorError,
    GovernorView, Outcome, SubmitSignal,
};
pub use machine::{Signal, State, Thresholds};
