//! The ledger store contract every backend implements (SQLite, Firestore).
//!
//! Invariants every backend keeps (the contract suite in `tests/ledger/contract.rs` checks them
//! on each): a batch is appended all-or-nothing; `(tenant_id, seq)` and `receipt_id` are unique,
//! so an append that would fork a chain fails with [`StoreError::Conflict`]; a Pub/Sub message id
//! is stored in the same commit as its receipt; nothing updates or deletes a receipt (the trait
//! has no method for it).

use serde_json::Value;

use super::chain::Verifier;
use super::receipt::{Receipt, ReceiptType};

/// One receipt to append, with what must be committed together with it.
#[derive(Debug, Clone)]
pub struct AppendItem {
    pub receipt: Receipt,
    /// The Pub/Sub message that produced it; a later delivery of the same id finds this receipt.
    pub message_id: Option<String>,
    /// The tenant's entitlement record as it stands after this receipt (upserted atomically).
    pub entitlement: Option<Value>,
    /// `receipt.metadata` as JSON text, when written ahead by [`AppendItem::sealed`]. Private
    /// so that it cannot disagree with the metadata it was written from.
    metadata_text: Option<String>,
}

/// Equal items append the same thing, whether or not the metadata's text was written ahead.
impl PartialEq for AppendItem {
    fn eq(&self, other: &Self) -> bool {
        self.receipt == other.receipt
            && self.message_id == other.message_id
            && self.entitlement == other.entitlement
    }
}

impl AppendItem {
    pub fn receipt(receipt: Receipt) -> Self {
        AppendItem {
            receipt,
            message_id: None,
            entitlement: None,
            metadata_text: None,
        }
    }

    pub fn with_message_id(mut self, message_id: Option<String>) -> Self {
        self.message_id = message_id;
        self
    }

    pub fn with_entitlement(mut self, entitlement: Option<Value>) -> Self {
        self.entitlement = entitlement;
        self
    }

    /// As the receipt writer builds them: the metadata's JSON text is written here, on the
    /// writer's thread as the receipt is sealed, not later on the thread that commits the
    /// batch (on SQLite that thread bounds the ledger's throughput).
    pub fn sealed(
        receipt: Receipt,
        message_id: Option<String>,
        entitlement: Option<Value>,
    ) -> Self {
        let metadata_text = serde_json::to_string(&receipt.metadata).ok();
        AppendItem {
            receipt,
            message_id,
            entitlement,
            metadata_text,
        }
    }

    /// The metadata's JSON text: written ahead, or now.
    pub fn metadata_text(&self) -> Result<std::borrow::Cow<'_, str>, StoreError> {
        match &self.metadata_text {
            Some(t) => Ok(std::borrow::Cow::Borrowed(t)),
            None => serde_json::to_string(&self.receipt.metadata)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| StoreError::Corrupt(e.to_string())),
        }
    }
}

/// What [`LedgerStore::verify_page`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageRead {
    /// Rows fed to the verifier: a break ends the page there, and a short page ends the chain.
    pub rows: usize,
    /// The `seq` of the last row fed.
    pub last_seq: Option<u64>,
}

impl PageRead {
    /// Feeds `r` to `verifier` and counts it; `false` once the chain is broken (the page ends
    /// there).
    pub fn feed(&mut self, verifier: &mut Verifier, r: &Receipt) -> bool {
        self.rows += 1;
        self.last_seq = Some(r.seq);
        verifier.feed(r)
    }

    /// [`PageRead::feed`] with the metadata as the text a store holds ([`Verifier::feed_text`]):
    /// `None`, with nothing fed or counted, when that text has to be parsed first.
    pub fn feed_text(
        &mut self,
        verifier: &mut Verifier,
        r: &Receipt,
        metadata: &str,
    ) -> Option<bool> {
        let fed = verifier.feed_text(r, metadata)?;
        self.rows += 1;
        self.last_seq = Some(r.seq);
        Some(fed)
    }

    /// Ends the page at a read that failed: data that cannot be read back
    /// ([`StoreError::Corrupt`]) breaks the chain at the next seq, and the page ends with the
    /// report; any other failure is the caller's, as before.
    pub fn unreadable(&mut self, verifier: &mut Verifier, e: StoreError) -> Result<(), StoreError> {
        match e {
            StoreError::Corrupt(why) => {
                verifier.unreadable(why);
                Ok(())
            }
            other => Err(other),
        }
    }
}

/// What a governor rebuilds from: the tenant's entitlement record, its chain head, and the last
/// receipt that records a governor state (not an entitlement receipt, `state_to` one of the
/// governor's state names; an entitlement refusal records the entitlement's status there).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GovernorSnapshot {
    pub entitlement: Option<Value>,
    pub head: Option<Head>,
    pub last_state: Option<Receipt>,
}

/// `after_seq` as the signed 64-bit integer both backends store seqs as. A seq past
/// `i64::MAX` cannot exist, so a bound beyond it is `i64::MAX` (an empty page), never the
/// negative number a plain cast makes of it (which read the chain from its start).
pub fn seq_bound(after_seq: u64) -> i64 {
    i64::try_from(after_seq).unwrap_or(i64::MAX)
}

/// Whether `r` records one of `states` (what [`GovernorSnapshot::last_state`] looks for).
pub fn records_state(r: &Receipt, states: &[&str]) -> bool {
    r.kind != ReceiptType::Entitlement && r.state_to.as_deref().is_some_and(|s| states.contains(&s))
}

/// The events that start an action or end one (an entitlement change to `refusing` cancels
/// it): a chain whose last receipt among them is `action_started` may have an action in flight.
pub const ACTION_EVENTS: [&str; 5] = [
    "action_started",
    "action_completed",
    "action_failed",
    "action_timeout",
    "entitlement_changed",
];

/// A tenant whose chain may end with an action in flight ([`LedgerStore::open_actions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAction {
    pub tenant_id: String,
    /// The `action_started` receipt's timestamp (RFC 3339).
    pub started_at: String,
}

/// [`LedgerStore::open_actions`] found by reading every chain (the trait's default; the
/// contract tests check each backend's index against it).
pub async fn open_actions_read<S: LedgerStore + ?Sized>(
    store: &S,
    limit: usize,
) -> Result<Vec<OpenAction>, StoreError> {
    let (mut open, mut after) = (Vec::new(), String::new());
    loop {
        let page = store.tenants(&after, 1000).await?;
        for t in &page {
            let Some(head) = store.head(t).await? else {
                continue;
            };
            let chain = store.range(t, 0, head.seq as usize).await?;
            let last =
                (chain.iter().rev()).find(|r| ACTION_EVENTS.contains(&r.event_type.as_str()));
            if let Some(r) = last.filter(|r| r.event_type == "action_started") {
                open.push(OpenAction {
                    tenant_id: t.clone(),
                    started_at: r.timestamp.clone(),
                });
                if open.len() == limit {
                    return Ok(open);
                }
            }
        }
        match page.last() {
            Some(t) if page.len() == 1000 => after.clone_from(t),
            _ => return Ok(open),
        }
    }
}

/// The last receipt of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another writer got there first (a `seq`, receipt id or message id already exists): the
    /// caller reloads the chain head and retries or refuses. Nothing of the batch was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend could not be reached or failed; nothing of the batch was written.
    #[error("ledger backend unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back as a receipt.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// A ledger backend.
#[allow(
    async_fn_in_trait,
    reason = "used with static dispatch on one thread per call site"
)]
pub trait LedgerStore {
    /// `sqlite` or `firestore`.
    fn backend(&self) -> &'static str;
    /// Appends a batch atomically (receipts of several tenants may be mixed, in chain order)
    /// and hands it back once it is durable. The batch is taken by value so that SQLite can
    /// commit on a thread of the blocking pool: the writer's own thread meanwhile gathers the
    /// next batch instead of leaving it queued in its mailbox until the commit ends.
    async fn append(&self, batch: Vec<AppendItem>) -> Result<Vec<AppendItem>, StoreError>;
    /// The chain head of `tenant`.
    async fn head(&self, tenant: &str) -> Result<Option<Head>, StoreError>;
    /// Up to `limit` receipts of `tenant` with `seq > after_seq`, in `seq` order (none for an
    /// `after_seq` beyond what a backend's signed 64-bit seq holds; see [`seq_bound`]).
    async fn range(
        &self,
        tenant: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Receipt>, StoreError>;
    /// Feeds up to `limit` receipts of `tenant` with `seq > after_seq` to `verifier` in `seq`
    /// order, stopping at the first break. Backends may verify where they read (SQLite does, on
    /// its reading thread, without collecting the page).
    async fn verify_page(
        &self,
        tenant: &str,
        after_seq: u64,
        limit: usize,
        mut verifier: Verifier,
    ) -> Result<(Verifier, PageRead), StoreError> {
        let mut read = PageRead::default();
        match self.range(tenant, after_seq, limit).await {
            Ok(rows) => {
                for r in &rows {
                    if !read.feed(&mut verifier, r) {
                        break;
                    }
                }
            }
            // A page that cannot be read is read again one receipt at a time, so that the
            // break names the receipt that cannot.
            Err(StoreError::Corrupt(_)) => {
                let mut after = after_seq;
                while read.rows < limit {
                    match self.range(tenant, after, 1).await {
                        Ok(one) => match one.first() {
                            Some(r) if read.feed(&mut verifier, r) => after = r.seq,
                            _ => break,
                        },
                        Err(e) => {
                            read.unreadable(&mut verifier, e)?;
                            break;
                        }
                    }
                }
            }
            Err(e) => return Err(e),
        }
        Ok((verifier, read))
    }
    /// Everything a starting governor reads, in one call and one snapshot: the record and the
    /// head as of one moment (receipts up to the head never change afterwards); `states` are
    /// the governor's state names (SQLite answers many concurrent starts with one pass over its
    /// read connection).
    async fn governor_snapshot(
        &self,
        tenant: &str,
        states: &'static [&'static str],
    ) -> Result<GovernorSnapshot, StoreError> {
        // One read where the backend keeps them together (Firestore): read apart, a change
        // committed between the two reads would pair the new head with the old record.
        let (head, entitlement) = self.head_and_entitlement(tenant).await?;
        let Some(head) = head else {
            return Ok(GovernorSnapshot {
                entitlement,
                ..Default::default()
            });
        };
        // Walk back from the head. The state-bearing receipt is almost always the last, so the
        // first page is that receipt alone: a backend that reads (and bills) by document, as
        // Firestore does, reads one, where a first page of 200 read 200 for every governor
        // start and every `GET /v1/governors/{t}`. Pages grow eightfold from there, to 512.
        let mut upto = head.seq;
        let mut size = 1;
        let mut last_state = None;
        while upto > 0 && last_state.is_none() {
            let from = upto.saturating_sub(size);
            let page = self.range(tenant, from, (upto - from) as usize).await?;
            last_state = page.into_iter().rev().find(|r| records_state(r, states));
            upto = from;
            size = (size * 8).min(512);
        }
        Ok(GovernorSnapshot {
            entitlement,
            head: Some(head),
            last_state,
        })
    }
    /// One receipt by id.
    async fn get(&self, receipt_id: &str) -> Result<Option<Receipt>, StoreError>;
    /// The receipt a Pub/Sub message produced.
    async fn by_message_id(&self, message_id: &str) -> Result<Option<Receipt>, StoreError>;
    /// The receipts of those of `message_ids` that produced one, keyed by message id (one
    /// round trip where the backend allows; the writer checks a whole batch with it).
    async fn by_message_ids(
        &self,
        message_ids: &[String],
    ) -> Result<std::collections::HashMap<String, Receipt>, StoreError> {
        let mut found = std::collections::HashMap::new();
        for id in message_ids {
            if let Some(r) = self.by_message_id(id).await? {
                found.insert(id.clone(), r);
            }
        }
        Ok(found)
    }
    /// Up to `limit` tenants with a chain, in id order, after `after`.
    async fn tenants(&self, after: &str, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Up to `limit` tenants, in id order, whose chain may end with an action in flight (the
    /// last of their receipts among [`ACTION_EVENTS`] is `action_started`), each with that
    /// receipt's timestamp. Their governors are restarted where none runs, so that the
    /// actions' state timeouts run. This default reads every chain; backends answer from an
    /// index.
    async fn open_actions(&self, limit: usize) -> Result<Vec<OpenAction>, StoreError> {
        open_actions_read(self, limit).await
    }
    /// The tenant's entitlement record.
    async fn entitlement(&self, tenant: &str) -> Result<Option<Value>, StoreError>;
    /// The chain head and the entitlement record together (one read where the backend keeps
    /// them together): what the writer loads for a tenant whose decisions name their record.
    async fn head_and_entitlement(
        &self,
        tenant: &str,
    ) -> Result<(Option<Head>, Option<Value>), StoreError> {
        Ok((self.head(tenant).await?, self.entitlement(tenant).await?))
    }
    /// Whether the backend answers (for readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipts::ReceiptDraft;

    /// A chain in memory that counts the receipts its reads hand out (the default
    /// `governor_snapshot` is what the Firestore backend runs).
    struct Counted {
        chain: Vec<Receipt>,
        handed: std::cell::Cell<usize>,
    }

    impl Counted {
        /// `n` receipts: a governor decision, then `tail` entitlement receipts after it.
        fn new(n: u64, tail: u64) -> Counted {
            let mut chain: Vec<Receipt> = Vec::new();
            for seq in 1..=n {
                let draft = if seq + tail > n {
                    ReceiptDraft::new("t", ReceiptType::Entitlement, "pack_enabled", "r")
                        .states(Some("active"), Some("active"))
                } else {
                    ReceiptDraft::new("t", ReceiptType::Transition, "signal_processed", "r")
                        .states(Some("stable"), Some("stable"))
                };
                let prev = chain.last().map(|r| (r.seq, r.receipt_hash.as_str()));
                let sealed = draft.seal(prev, "tai@test", "2026-12-07T00:00:00.000Z".into());
                chain.push(sealed);
            }
            Counted {
                chain,
                handed: Default::default(),
            }
        }
    }

    impl LedgerStore for Counted {
        fn backend(&self) -> &'static str {
            "memory"
        }
        async fn append(&self, _: Vec<AppendItem>) -> Result<Vec<AppendItem>, StoreError> {
            Err(StoreError::Unavailable("read only".into()))
        }
        async fn head(&self, _: &str) -> Result<Option<Head>, StoreError> {
            Ok(self.chain.last().map(|r| Head {
                seq: r.seq,
                hash: r.receipt_hash.clone(),
            }))
        }
        async fn range(
            &self,
            _: &str,
            after: u64,
            limit: usize,
        ) -> Result<Vec<Receipt>, StoreError> {
            let page: Vec<Receipt> = self
                .chain
                .iter()
                .filter(|r| r.seq > after)
                .take(limit)
                .cloned()
                .collect();
            self.handed.set(self.handed.get() + page.len());
            Ok(page)
        }
        async fn get(&self, _: &str) -> Result<Option<Receipt>, StoreError> {
            Ok(None)
        }
        async fn by_message_id(&self, _: &str) -> Result<Option<Receipt>, StoreError> {
            Ok(None)
        }
        async fn tenants(&self, _: &str, _: usize) -> Result<Vec<String>, StoreError> {
            Ok(Vec::new())
        }
        async fn entitlement(&self, _: &str) -> Result<Option<Value>, StoreError> {
            Ok(None)
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[actix_web::test]
    async fn a_snapshot_reads_back_only_as_far_as_the_last_state() {
        const STATES: &[&str] = &["stable"];
        // (chain length, entitlement receipts after the last decision, receipts read at most)
        for (n, tail, most) in [(1_000, 0, 1), (1_000, 5, 9), (1_000, 40, 73), (30, 29, 30)] {
            let store = Counted::new(n, tail);
            let snap = store.governor_snapshot("t", STATES).await.unwrap();
            let found = snap.last_state.expect("a state-bearing receipt");
            assert_eq!(found.seq, n - tail, "n {n}, tail {tail}");
            assert!(
                store.handed.get() <= most,
                "n {n}, tail {tail}: read {} receipts",
                store.handed.get()
            );
        }
        // No state-bearing receipt at all: the whole chain is read, and nothing found.
        let store = Counted::new(600, 600);
        let snap = store.governor_snapshot("t", STATES).await.unwrap();
        assert!(snap.last_state.is_none());
        assert_eq!(store.handed.get(), 600);
    }

    #[test]
    fn metadata_written_ahead_is_the_text_the_store_would_write() {
        let receipt = ReceiptDraft::new("t", ReceiptType::Transition, "signal_processed", "r")
            .metadata(serde_json::json!({"value": 80.0, "n": 3, "s": "é\"\n", "z": null}))
            .seal(None, "tai@test", "2026-11-28T00:00:00.000Z".into());
        let ahead = AppendItem::sealed(receipt.clone(), None, None);
        let now = AppendItem::receipt(receipt.clone());
        assert_eq!(ahead.metadata_text().unwrap(), now.metadata_text().unwrap());
        assert_eq!(ahead, now);
        // What is stored reads back as the same metadata (80.0 stays a float).
        let back: Value = serde_json::from_str(&ahead.metadata_text().unwrap()).unwrap();
        assert_eq!(back, receipt.metadata);
    }
}
