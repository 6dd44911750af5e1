//! OTP-style supervision trees for [actix](https://docs.rs/actix) actors.
//!
//! actix's own `Supervisor` restarts an actor only when it *stops*; a panicking actor is dropped
//! for good and there is no restart intensity, no strategy and no ordered shutdown. This crate
//! supplies what Erlang/OTP's `supervisor` does, on actix:
//!
//! - **[`ChildSpec`]**: `id`, a `start` factory called again on every restart, [`Restart`]
//!   (`permanent` | `transient` | `temporary`), [`Shutdown`] (`brutal_kill` | timeout |
//!   `infinity`), [`ChildKind`], and optional [`Backoff`] (beyond OTP).
//! - **[`Supervisor`]** with a [`Strategy`] (`one_for_one`, `one_for_all`, `rest_for_one`) and
//!   **[`DynamicSupervisor`]** (`simple_one_for_one`: children keyed at run time).
//! - **[`Intensity`]**: one sliding window per supervisor; exceeding it stops the children in
//!   reverse start order and the supervisor exits `shutdown(reached_max_restart_intensity)` to
//!   its parent, which applies its own strategy.
//! - **[`AutoShutdown`]** (OTP 24): a supervisor that ends by itself once any or all of its
//!   [significant](ChildSpec::significant) children have ended on their own.
//! - **Panic containment**: every supervised actor runs under `catch_unwind`; a panic in a
//!   handler or hook ends that incarnation with [`ExitReason::Panic`], and its arbiter, its
//!   siblings and the process live on. Needs `panic = "unwind"`.
//! - **Stable handles**: a [`ChildRef`] reaches whichever incarnation is current; while the child
//!   is down, calls fail at once ([`CallError`]) instead of hanging. A full mailbox refuses the
//!   bounded `call` and `try_tell` at once; `send` waits for room, and `tell` (for control
//!   messages) goes past it.
//! - **Monitors**: [`ChildRef::monitor`] is OTP's `erlang:monitor/2` on a child's running
//!   incarnation, a future that resolves with its exit reason ([`Down`]).
//! - **Introspection** (`which_children`, `count_children`, [`TreeSnapshot`]) and
//!   **[`SupervisorEvent`]s** delivered to an [`EventSink`]; the crate emits no metrics itself.
//!
//! ```
//! use actix::prelude::*;
//! use supervisors::{ChildSpec, Restart, Strategy, Supervisor};
//!
//! struct Ledger;
//! impl Actor for Ledger { type Context = Context<Self>; }
//!
//! #[derive(Message)]
//! #[rtype(result = "u32")]
//! struct Ping;
//!
//! struct Api;
//! impl Actor for Api { type Context = Context<Self>; }
//! impl Handler<Ping> for Api {
//!     type Result = u32;
//!     fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> u32 { 42 }
//! }
//!
//! #[actix::main]
//! async fn main() {
//!     let (ledger, _ledger_ref) = ChildSpec::worker("ledger", || Ledger);
//!     let (api, api_ref) = ChildSpec::worker("api", || Api);
//!     let root = Supervisor::new("root")
//!         .strategy(Strategy::RestForOne)
//!         .child(ledger)
//!         .child(api.restart(Restart::Transient))
//!         .start()
//!         .await;
//!     assert_eq!(api_ref.send(Ping).await, Ok(42));
//!     root.shutdown().await; // stops `api`, then `ledger`
//! }
//! ```

mod child;
mod dynamic;
mod event;
mod intensity;
mod reason;
mod snapshot;
mod spec;
mod supervisor;

pub use child::{being_dropped, exit, live_actors, CallError, ChildRef, ChildState, Down, Monitor};
pub use dynamic::{DynamicRef, DynamicSupervisor, Key, StartError};
pub use event::{EventSink, SupervisorEvent};
pub use intensity::{Backoff, Intensity};
pub use reason::ExitReason;
pub use snapshot::{ChildCounts, ChildInfo, NodeSnapshot, TreeSnapshot};
pub use spec::{ChildKind, ChildSpec, Restart, Shutdown, DEFAULT_MAILBOX};
pub use supervisor::{
    AutoShutdown, CountChildren, RestartChild, Snapshot, Stop, Strategy, Supervisor, SupervisorRef,
    TerminateChild, WhichChildren,
};
