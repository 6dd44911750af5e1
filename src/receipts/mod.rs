//! Receipts: the one schema, its canonical hash, the per-tenant chain, the ledger backends and
//! the single writer.
//!
//! Owns: [`receipt::Receipt`] and drafts, RFC 8785 canonical JSON ([`jcs`]), chain verification
//! ([`chain`]; of saved JSON, without a store: [`offline`]), the [`store::LedgerStore`] contract
//! with its SQLite and Firestore backends, and the [`writer::ReceiptWriter`] actor.
//!
//! Invariant: only the ReceiptWriter appends; it assigns `seq` and `prev_hash`, so within an
//! instance a tenant's chain has exactly one writer. Nothing updates or deletes a receipt.

pub mod chain;
pub mod firestore;
pub mod jcs;
pub mod offline;
pub mod receipt;
pub mod sqlite;
pub mod store;
pub mod writer;

pub use chain::{Anchor, Break, Verifier, VerifyReport};
pub use receipt::{Receipt, ReceiptDraft, ReceiptType, GENESIS_HASH};
pub use store::{AppendItem, GovernorSnapshot, Head, LedgerStore, PageRead, StoreError};

use serde_json::Value;

use self::firestore::FirestoreStore;
use self::sqlite::SqliteStore;

/// The configured backend (static dispatch over the two implementations).
#[derive(Clone)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Firestore(FirestoreStore),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $e,
            AnyStore::Firestore($s) => $e,
        }
    };
}

impl LedgerStore for AnyStore {
    fn backend(&self) -> &'static str {
        each!(self, s => s.backend())
    }
    async fn append(&self, batch: Vec<AppendItem>) -> Result<Vec<AppendItem>, StoreError> {
        each!(self, s => s.append(batch).await)
    }
    async fn head(&self, tenant: &str) -> Result<Option<Head>, StoreError> {
        each!(self, s => s.head(tenant).await)
    }
    async fn range(
        &self,
        tenant: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Receipt>, StoreError> {
        each!(self, s => s.range(tenant, after_seq, limit).await)
    }
    async fn verify_page(
        &self,
        tenant: &str,
        after_seq: u64,
        limit: usize,
        verifier: Verifier,
    ) -> Result<(Verifier, PageRead), StoreError> {
        each!(self, s => s.verify_page(tenant, after_seq, limit, verifier).await)
    }
    async fn governor_snapshot(
        &self,
        tenant: &str,
        states: &'static [&'static str],
    ) -> Result<GovernorSnapshot, StoreError> {
        each!(self, s => s.governor_snapshot(tenant, states).await)
    }
    async fn get(&self, receipt_id: &str) -> Result<Option<Receipt>, StoreError> {
        each!(self, s => s.get(receipt_id).await)
    }
    async fn by_message_id(&self, message_id: &str) -> Result<Option<Receipt>, StoreError> {
        each!(self, s => s.by_message_id(message_id).await)
    }
    async fn by_message_ids(
        &self,
        message_ids: &[String],
    ) -> Result<std::collections::HashMap<String, Receipt>, StoreError> {
        each!(self, s => s.by_message_ids(message_ids).await)
    }
    async fn tenants(&self, after: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        each!(self, s => s.tenants(after, limit).await)
    }
    async fn entitlement(&self, tenant: &str) -> Result<Option<Value>, StoreError> {
        each!(self, s => s.entitlement(tenant).await)
    }
    async fn head_and_entitlement(
        &self,
        tenant: &str,
    ) -> Result<(Option<Head>, Option<Value>), StoreError> {
        each!(self, s => s.head_and_entitlement(tenant).await)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        each!(self, s => s.ping().await)
    }
}

/// Verifies `tenant`'s whole chain page by page (constant memory), and against `anchor` when
/// one is given, with `progress` called after each page with the number of receipts checked so
/// far.
pub async fn verify_chain<S: LedgerStore>(
    store: &S,
    tenant: &str,
    anchor: Option<Anchor>,
    page: usize,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    let head = store.head(tenant).await?;
    let mut v = Verifier::new(tenant).with_anchor(anchor);
    let mut after = 0;
    loop {
        let (next, read) = store.verify_page(tenant, after, page, v).await?;
        v = next;
        let Some(last) = read.last_seq else {
            break;
        };
        after = last;
        progress(v.checked());
        if v.is_broken() || read.rows < page {
            break;
        }
    }
    Ok(v.finish(head.as_ref().map(|h| (h.seq, h.hash.as_str()))))
}
