//! Black-box tests of the service: the real application on port 0 (in process) or the real
//! binary (as a child process). One test binary, one module per feature.

mod access;
mod actions;
mod crash;
mod docs;
mod entitlements;
mod errors;
mod governors;
mod health;
mod helpers;
mod http2;
mod ledger_files;
mod lifecycle;
mod mcp;
mod partition;
mod pubsub;
mod receipts;
mod restore;
mod soak;
mod supervision;
