//! Governors: one state machine per tenant (SPEC §4).
//!
//! Owns the pure transition logic (`machine`). The governor actor, the governance subtree and
//! the actions executor that drive it are not built yet (see README › Status).

pub mod machine;
