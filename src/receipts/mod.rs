//! Receipts: the one schema, its canonical hash, the per-tenant chain, the ledger backends and
//! the single writer.
//!
//! Owns: [`receipt::Receipt`] and drafts, RFC 8785 canonical JSON ([`jcs`]), chain verification
//! ([`chain`]; of saved JSON, without a store: [`offline`]), the [`store::LedgerStore`] contract
//! with its SQLite and Firestore backends, the [`writer::ReceiptWriter`] actor, and the
//! [`audit::Auditor`] that verifies every chain again in the background.
//!
//! Invariant: only the ReceiptWriter appends; it assigns `seq` and `prev_hash`, so within an
//! instance a tenant's chain has exactly one writer. Nothing updates or deletes a receipt.

pub mod audit;
pub mod backup;
pub mod chain;
pub mod firestore;
pub mod jcs;
pub mod offline;
pub mod receipt;
pub mod restore;
pub mod sqlite;
pub mod store;
pub mod writer;

pub use chain::{Anchor, Break, Verifier, VerifyReport};
pub use receipt::{Receipt, ReceiptDraft, ReceiptType, GENESIS_HASH};
pub use store::{
    open_actions_read, AppendItem, GovernorSnapshot, Head, LedgerStore, OpenAction, PageRead,
    StoreError,
};

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

impl AnyStore {
    /// At a clean stop, once nothing appends any more: SQLite's write-ahead log is copied
    /// into the ledger file and the store closed, so the file is whole by itself and alone
    /// (`cp data/ledger.db` of a stopped service copies every receipt). Firestore has nothing
    /// to do.
    pub async fn at_stop(&self) {
        if let AnyStore::Sqlite(s) = self {
            s.close_at_stop().await;
        }
    }
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
    async fn open_actions(&self, limit: usize) -> Result<Vec<OpenAction>, StoreError> {
        each!(self, s => s.open_actions(limit).await)
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
///
/// The chain verified is the one that ends at the head read first: a live tenant's receipts
/// go on being appended while the pages are read, and those are not part of this report (they
/// used to be read and then reported as a break against the head read before them). A
/// receipt past that head counts as appended since if a head read after it covers it (a
/// backend moves its head with every append, in the same commit); one that no head covers is
/// a break.
pub async fn verify_chain<S: LedgerStore>(
    store: &S,
    tenant: &str,
    anchor: Option<Anchor>,
    page: usize,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    verify_chain_paced(store, tenant, anchor, page, |n| {
        progress(n);
        std::future::ready(())
    })
    .await
}

/// [`verify_chain`] with an asynchronous `between` instead of `progress`: called the same way
/// after each page, and awaited before the next page is read (the ledger audit pauses there to
/// keep to its pace).
pub async fn verify_chain_paced<S: LedgerStore, F, P>(
    store: &S,
    tenant: &str,
    anchor: Option<Anchor>,
    page: usize,
    mut between: F,
) -> Result<VerifyReport, StoreError>
where
    F: FnMut(u64) -> P,
    P: std::future::Future<Output = ()>,
{
    let head = store.head(tenant).await?;
    let end = head.as_ref().map_or(0, |h| h.seq);
    let mut v = Verifier::new(tenant).with_anchor(anchor);
    let mut after = 0;
    while after < end {
        let want = usize::try_from(end - after).map_or(page, |left| left.min(page));
        let (next, read) = store.verify_page(tenant, after, want, v).await?;
        v = next;
        let Some(last) = read.last_seq else {
            break;
        };
        after = last;
        between(v.checked()).await;
        if v.is_broken() || read.rows < want {
            break;
        }
    }
    if !v.is_broken() {
        if let Some(past) = store.range(tenant, end, 1).await?.first() {
            let now = store.head(tenant).await?;
            if now.is_none_or(|h| h.seq < past.seq) {
                v.past_head(past.seq, end);
            }
        }
    }
    Ok(v.finish(head.as_ref().map(|h| (h.seq, h.hash.as_str()))))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A SQLite store (on disk) whose head the test controls: once the head has been read, the
    /// receipt in `after_head` is appended (a live tenant, its chain growing while it is
    /// verified); or every head read answers `frozen` (a receipt past the head that no head
    /// covers).
    struct Moving {
        inner: SqliteStore,
        after_head: RefCell<Option<AppendItem>>,
        frozen: Option<Option<Head>>,
    }

    impl LedgerStore for Moving {
        fn backend(&self) -> &'static str {
            "sqlite"
        }
        async fn append(&self, batch: Vec<AppendItem>) -> Result<Vec<AppendItem>, StoreError> {
            self.inner.append(batch).await
        }
        async fn head(&self, tenant: &str) -> Result<Option<Head>, StoreError> {
            if let Some(head) = &self.frozen {
                return Ok(head.clone());
            }
            let head = self.inner.head(tenant).await?;
            let later = self.after_head.borrow_mut().take();
            if let Some(item) = later {
                self.inner.append(vec![item]).await?;
            }
            Ok(head)
        }
        async fn range(
            &self,
            tenant: &str,
            after_seq: u64,
            limit: usize,
        ) -> Result<Vec<Receipt>, StoreError> {
            self.inner.range(tenant, after_seq, limit).await
        }
        async fn verify_page(
            &self,
            tenant: &str,
            after_seq: u64,
            limit: usize,
            verifier: Verifier,
        ) -> Result<(Verifier, PageRead), StoreError> {
            self.inner
                .verify_page(tenant, after_seq, limit, verifier)
                .await
        }
        async fn get(&self, receipt_id: &str) -> Result<Option<Receipt>, StoreError> {
            self.inner.get(receipt_id).await
        }
        async fn by_message_id(&self, message_id: &str) -> Result<Option<Receipt>, StoreError> {
            self.inner.by_message_id(message_id).await
        }
        async fn tenants(&self, after: &str, limit: usize) -> Result<Vec<String>, StoreError> {
            self.inner.tenants(after, limit).await
        }
        async fn entitlement(&self, tenant: &str) -> Result<Option<Value>, StoreError> {
            self.inner.entitlement(tenant).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.inner.ping().await
        }
    }

    /// A chain of `n` receipts of tenant `t`, and the receipt that would follow it.
    fn chain(n: usize) -> (Vec<AppendItem>, AppendItem) {
        let mut out: Vec<Receipt> = Vec::new();
        for i in 0..=n {
            let prev = out.last().map(|r| (r.seq, r.receipt_hash.as_str()));
            let d = ReceiptDraft::new("t", ReceiptType::Transition, "signal_processed", "r");
            out.push(d.seal(prev, "n", format!("2026-11-29T10:00:00.{i:03}Z")));
        }
        let next = AppendItem::receipt(out.pop().expect("n + 1 receipts"));
        (out.into_iter().map(AppendItem::receipt).collect(), next)
    }

    #[actix_web::test]
    async fn a_chain_that_grows_while_it_is_verified_is_verified_up_to_the_head_read_first() {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(&dir.path().join("l.db")).unwrap();
        let (five, sixth) = chain(5);
        inner.append(five).await.unwrap();
        let store = Moving {
            inner,
            after_head: RefCell::new(Some(sixth)),
            frozen: None,
        };

        let report = verify_chain(&store, "t", None, 2, |_| {}).await.unwrap();
        assert!(report.valid, "{report:?}");
        assert_eq!((report.receipts_checked, report.head_seq), (5, 5));
        let report = verify_chain(&store, "t", None, 2, |_| {}).await.unwrap();
        assert!(report.valid && report.receipts_checked == 6, "{report:?}");
    }

    #[actix_web::test]
    async fn a_receipt_past_the_head_that_no_head_covers_is_a_break() {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(&dir.path().join("l.db")).unwrap();
        let (five, sixth) = chain(5);
        inner.append(five).await.unwrap();
        let head = inner.head("t").await.unwrap();
        inner.append(vec![sixth]).await.unwrap();
        let store = Moving {
            inner,
            after_head: RefCell::new(None),
            frozen: Some(head),
        };

        let report = verify_chain(&store, "t", None, 1000, |_| {}).await.unwrap();
        let broken = report.first_broken.expect("broken");
        assert_eq!(broken.seq, 6);
        assert!(
            broken.reason.contains("past the chain head (seq 5)"),
            "{broken:?}"
        );
    }
}
