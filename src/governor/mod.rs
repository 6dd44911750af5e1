//! Governors: one state machine per tenant (SPEC §4).
//!
//! Owns the pure transition logic (`machine`), the Governor actor that drives it (`actor`), the
//! one Hibernator that sends idle governors to sleep (`hibernate`), the action sweeper that
//! starts governors for actions a process that ended left in flight (`sweep`), the eval-only tools
//! (`tools`) and the webhook executor's requests (`webhook`). Invariant: a governor's state advances only after the receipts
//! of its decision are durable; it is the only source of its tenant's governor receipts.

pub mod actor;
pub mod hibernate;
pub mod machine;
pub mod sweep;
pub mod tools;
pub mod webhook;

pub use actor::{
    CallTool, Control, CurrentView, EntitlementUpdate, Executor, GetView, Governor, GovernorDeps,
    GovernorError, GovernorView, Hibernate, Outcome, SubmitSignal,
};
pub use hibernate::Hibernator;
pub use machine::{Signal, State, Thresholds};
pub use sweep::{ActionSweeper, Sweep, SweepPolicy};
