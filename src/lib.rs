//! TAI Autonomics: per-tenant autonomic governance on supervised actix actors.
//! See README.md › Architecture for the map of the crate.

pub mod auth;
pub mod clock;
pub mod config;
pub mod entitlements;
pub mod governor;
pub mod http;
pub mod intake;
pub mod limits;
pub mod mcp;
pub mod outbound;
pub mod pubsub;
pub mod receipts;
pub mod startup;
pub mod telemetry;
pub mod tenant;
pub mod tree;

/// The service allocates and frees across threads all the time (a request's body on an HTTP
/// worker, its receipt on the writer, a governor's snapshot on a reading thread); mimalloc's
/// thread-local free lists make that cheap where glibc's arenas consolidate and lock. Declared
/// here so the binary, the tests and the benchmarks all measure the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
