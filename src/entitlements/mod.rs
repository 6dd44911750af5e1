//! Entitlements: what each tenant has bought, the gates that consult it, and the marketplace
//! lifecycle.
//!
//! Owns the model (`model`, pure), the gates (`gates`, pure), JWT verification with pinned
//! algorithms (`signature`) and the Entitlements actor (`actor`), the only writer of entitlement
//! records. Invariant: every change is a receipt in the tenant's chain, committed together with
//! the new record; a refusal of a valid request is a receipt too; unknown tenants get nothing
//! stored.

pub mod actor;
pub mod gates;
pub mod model;
pub mod signature;

pub use actor::{
    ApplyEvent, ChangeError, ChangeSink, Changed, EntitlementChanged, Entitlements, GetEntitlement,
    Marketplace, ReloadEntitlement, Subscribe, Subscribers,
};
pub use model::{Action, Entitlement, EntitlementError, Event, Status};
