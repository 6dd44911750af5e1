//! The Firestore ledger (Phase 2: several instances sharing one chain per tenant).
//!
//! Layout: `tenants/{tenant_id}` holds the chain head (and the entitlement record);
//! `tenants/{tenant_id}/receipts/{seq, zero-padded to 20}` holds each receipt;
//! `receipt_index/{receipt_id}` and `pubsub_messages/{message_id}` make receipts findable by id
//! and by Pub/Sub message. Every receipt, index and message document is created with an
//! `exists = false` precondition, all in one commit, so two instances appending the same `seq`
//! can never fork a chain: one commit wins, the other fails whole with [`StoreError::Conflict`].
//! Values are typed (integers as integers, doubles as doubles, maps as maps). Metadata that
//! Firestore cannot hold as a map (keys it refuses, arrays in arrays, integers past `i64`) is
//! stored as JSON text in `metadata_json` instead: a receipt must read back exactly.

use std::collections::BTreeMap;

use firestore::errors::FirestoreError;
use firestore::{FirestoreDb, FirestoreWritePrecondition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::receipt::{Receipt, ReceiptType};
use super::store::{
    seq_bound, AppendItem, Head, LedgerStore, OpenAction, StoreError, ACTION_EVENTS,
};

/// Documents one receipt costs in a commit: the receipt, its index entry, maybe a message.
const WRITES_PER_RECEIPT: usize = 3;
/// Firestore's limit of writes per commit.
const MAX_WRITES: usize = 500;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReceiptDoc {
    receipt_id: String,
    tenant_id: String,
    seq: i64,
    #[serde(rename = "type")]
    kind: String,
    event_type: String,
    state_from: Option<String>,
    state_to: Option<String>,
    reason: String,
    /// The metadata as a map when Firestore can hold it as one ([`native`]), else `null`.
    #[serde(serialize_with = "serialize_json")]
    metadata: Value,
    /// The metadata as JSON text when it cannot be a map: it must read back exactly, or the
    /// receipt would no longer match its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata_json: Option<String>,
    node: String,
    timestamp: String,
    prev_hash: String,
    receipt_hash: String,
}

impl From<&Receipt> for ReceiptDoc {
    fn from(r: &Receipt) -> Self {
        let native = native(&r.metadata, 1);
        ReceiptDoc {
            receipt_id: r.receipt_id.clone(),
            tenant_id: r.tenant_id.clone(),
            seq: r.seq as i64,
            kind: r.kind.as_str().to_owned(),
            event_type: r.event_type.clone(),
            state_from: r.state_from.clone(),
            state_to: r.state_to.clone(),
            reason: r.reason.clone(),
            metadata: if native {
                r.metadata.clone()
            } else {
                Value::Null
            },
            metadata_json: (!native).then(|| r.metadata.to_string()),
            node: r.node.clone(),
            timestamp: r.timestamp.clone(),
            prev_hash: r.prev_hash.clone(),
            receipt_hash: r.receipt_hash.clone(),
        }
    }
}

impl TryFrom<ReceiptDoc> for Receipt {
    type Error = StoreError;
    fn try_from(d: ReceiptDoc) -> Result<Self, StoreError> {
        let kind = ReceiptType::parse(&d.kind).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "receipt {}: unknown type {:?}",
                d.receipt_id, d.kind
            ))
        })?;
        // Firestore drops empty maps' identity to `null` in no case, but an absent field reads as
        // null: metadata is always an object. Text that does not parse (edited by hand) is kept
        // as a string, so verification reports this receipt rather than failing the read.
        let metadata = match d.metadata_json {
            Some(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            None if d.metadata.is_null() => Value::Object(Default::default()),
            None => d.metadata,
        };
        Ok(Receipt {
            receipt_id: d.receipt_id,
            tenant_id: d.tenant_id,
            seq: d.seq as u64,
            kind,
            event_type: d.event_type,
            state_from: d.state_from,
            state_to: d.state_to,
            reason: d.reason,
            metadata,
            node: d.node,
            timestamp: d.timestamp,
            prev_hash: d.prev_hash,
            receipt_hash: d.receipt_hash,
        })
    }
}

/// Whether Firestore stores `v`, at `depth` levels into a document, as typed values that read
/// back as the same JSON. It refuses the whole commit for map keys that are empty, longer than
/// 1,500 bytes or of the form `__…__`, for an array directly inside an array, and for maps and
/// arrays nested past 20 levels; and it has no integer above `i64::MAX`.
fn native(v: &Value, depth: usize) -> bool {
    match v {
        Value::Object(m) => {
            depth <= 20
                && m.iter().all(|(k, v)| {
                    !k.is_empty()
                        && k.len() <= 1500
                        && !(k.len() >= 4 && k.starts_with("__") && k.ends_with("__"))
                        && native(v, depth + 1)
                })
        }
        Value::Array(items) => {
            depth <= 20 && items.iter().all(|i| !i.is_array() && native(i, depth + 1))
        }
        Value::Number(n) => n.is_i64() || n.is_f64(),
        _ => true,
    }
}

/// Serializes JSON into Firestore values keeping explicit nulls (the crate's serializer would
/// drop them, and a receipt read back without its nulls would no longer match its hash).
fn serialize_json<S: serde::Serializer>(v: &Value, s: S) -> Result<S::Ok, S::Error> {
    FirestoreJson(v).serialize(s)
}

struct FirestoreJson<'a>(&'a Value);

impl Serialize for FirestoreJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Null => firestore::serialize_as_null::serialize(&None::<()>, s),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&FirestoreJson(item))?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut m = s.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    m.serialize_entry(k, &FirestoreJson(v))?;
                }
                m.end()
            }
            other => other.serialize(s),
        }
    }
}

fn serialize_opt_json<S: serde::Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => serialize_json(v, s),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TenantDoc {
    tenant_id: String,
    head_seq: i64,
    head_hash: String,
    #[serde(default, serialize_with = "serialize_opt_json")]
    entitlement: Option<Value>,
    /// Whether the last of the chain's [`ACTION_EVENTS`] is `action_started`, and that
    /// receipt's timestamp (written with each commit that appends one of them;
    /// `open_actions` asks for them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open_action: Option<bool>,
    #[serde(default)]
    open_action_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexDoc {
    tenant_id: String,
    seq: i64,
    receipt_id: String,
}

/// The Firestore backend.
#[derive(Clone)]
pub struct FirestoreStore {
    /// Appends: a commit without a time limit, so that one is never reported failed while it
    /// may still land (the decision deadline answers its callers meanwhile).
    db: FirestoreDb,
    /// Reads: [`READ_ATTEMPT`] per attempt, [`READ_DEADLINE`] in all (see [`bounded`]).
    reads: FirestoreDb,
}

/// How long one attempt of a read waits for Firestore before the `firestore` crate sends it
/// again (after a random pause of up to 1, 2, 4 s).
pub const READ_ATTEMPT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a read waits for Firestore in all. Reads take milliseconds; a store gone silent
/// (a network partition) used to hold every read, and the request behind it, without limit.
pub const READ_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

/// `read`, failed as unavailable past [`READ_DEADLINE`] (its attempts and the pauses between).
async fn bounded<T>(
    read: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    bounded_within(READ_DEADLINE, read).await
}

/// [`bounded`] with a deadline of its own (a page of many receipts takes longer to arrive).
async fn bounded_within<T>(
    deadline: std::time::Duration,
    read: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    actix_web::rt::time::timeout(deadline, read)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "Firestore did not answer a read within {} ms",
                deadline.as_millis()
            )))
        })
}

fn seq_id(seq: u64) -> String {
    format!("{seq:020}")
}

/// Document ids may not contain `/` and may not be `.`/`..`; message ids are escaped.
fn message_doc_id(message_id: &str) -> String {
    let mut out = String::with_capacity(message_id.len());
    for b in message_id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02x}"));
        }
    }
    format!("m-{out}")
}

fn map_err(e: FirestoreError) -> StoreError {
    match e {
        FirestoreError::DataConflictError(c) => StoreError::Conflict(c.to_string()),
        FirestoreError::DeserializeError(d) => StoreError::Corrupt(d.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl FirestoreStore {
    /// Connects to the project's `(default)` database (the emulator when
    /// `FIRESTORE_EMULATOR_HOST` is set).
    pub async fn connect(project_id: &str) -> Result<FirestoreStore, StoreError> {
        let db = FirestoreDb::new(project_id).await.map_err(map_err)?;
        let reads = db.clone_with_request_timeout(Some(READ_ATTEMPT));
        Ok(FirestoreStore { db, reads })
    }

    /// The documents a commit of `items` writes: each receipt's document and its index
    /// entry, the Pub/Sub message's document where one produced it, and the head document of
    /// each tenant in the batch once (`tai_firestore_writes_total` counts these).
    pub fn documents_written(items: &[AppendItem]) -> usize {
        let tenants: std::collections::BTreeSet<&str> =
            items.iter().map(|i| i.receipt.tenant_id.as_str()).collect();
        let per_receipt: usize = items
            .iter()
            .map(|i| 2 + usize::from(i.message_id.is_some()))
            .sum();
        per_receipt + tenants.len()
    }

    /// Most receipts one commit can hold within Firestore's 500 writes.
    pub fn max_batch() -> usize {
        // One tenant document per receipt in the worst case (all different tenants).
        MAX_WRITES / (WRITES_PER_RECEIPT + 1)
    }

    fn tenant_parent(&self, tenant: &str) -> Result<String, StoreError> {
        self.db
            .parent_path("tenants", tenant)
            .map(String::from)
            .map_err(map_err)
    }

    /// The tenant's document: chain head and entitlement record.
    async fn tenant_doc(&self, tenant: &str) -> Result<Option<TenantDoc>, StoreError> {
        bounded(async {
            self.reads
                .fluent()
                .select()
                .by_id_in("tenants")
                .obj()
                .one(tenant)
                .await
                .map_err(map_err)
        })
        .await
    }

    async fn receipt_at(&self, tenant: &str, seq: u64) -> Result<Option<Receipt>, StoreError> {
        let parent = self.tenant_parent(tenant)?;
        let doc: Option<ReceiptDoc> = bounded(async {
            self.reads
                .fluent()
                .select()
                .by_id_in("receipts")
                .parent(parent)
                .obj()
                .one(seq_id(seq))
                .await
                .map_err(map_err)
        })
        .await?;
        doc.map(Receipt::try_from).transpose()
    }
}

impl LedgerStore for FirestoreStore {
    fn backend(&self) -> &'static str {
        "firestore"
    }

    async fn append(&self, batch: Vec<AppendItem>) -> Result<Vec<AppendItem>, StoreError> {
        if batch.is_empty() {
            return Ok(batch);
        }
        let writes = Self::documents_written(&batch);
        if writes > MAX_WRITES {
            return Err(StoreError::Unavailable(format!(
                "batch needs {writes} writes, over Firestore's {MAX_WRITES} per commit"
            )));
        }
        let mut tx = self.db.begin_transaction().await.map_err(map_err)?;
        let mut heads: BTreeMap<String, (Head, Option<Value>, Option<&str>)> = BTreeMap::new();
        for item in &batch {
            let r = &item.receipt;
            let parent = self.tenant_parent(&r.tenant_id)?;
            let doc = ReceiptDoc::from(r);
            self.db
                .fluent()
                .update()
                .in_col("receipts")
                .precondition(FirestoreWritePrecondition::Exists(false))
                .document_id(seq_id(r.seq))
                .parent(parent)
                .object(&doc)
                .add_to_transaction(&mut tx)
                .map_err(map_err)?;
            let index = IndexDoc {
                tenant_id: r.tenant_id.clone(),
                seq: r.seq as i64,
                receipt_id: r.receipt_id.clone(),
            };
            self.db
                .fluent()
                .update()
                .in_col("receipt_index")
                .precondition(FirestoreWritePrecondition::Exists(false))
                .document_id(&r.receipt_id)
                .object(&index)
                .add_to_transaction(&mut tx)
                .map_err(map_err)?;
            if let Some(id) = &item.message_id {
                self.db
                    .fluent()
                    .update()
                    .in_col("pubsub_messages")
                    .precondition(FirestoreWritePrecondition::Exists(false))
                    .document_id(message_doc_id(id))
                    .object(&index)
                    .add_to_transaction(&mut tx)
                    .map_err(map_err)?;
            }
            let entry = heads.entry(r.tenant_id.clone()).or_insert((
                Head {
                    seq: 0,
                    hash: String::new(),
                },
                None,
                None,
            ));
            entry.0 = Head {
                seq: r.seq,
                hash: r.receipt_hash.clone(),
            };
            if item.entitlement.is_some() {
                entry.1.clone_from(&item.entitlement);
            }
            if ACTION_EVENTS.contains(&r.event_type.as_str()) {
                // The start's time, or "" once the action ended.
                entry.2 = Some(if r.event_type == "action_started" {
                    r.timestamp.as_str()
                } else {
                    ""
                });
            }
        }
        for (tenant, (head, entitlement, open_action)) in &heads {
            let doc = TenantDoc {
                tenant_id: tenant.clone(),
                head_seq: head.seq as i64,
                head_hash: head.hash.clone(),
                entitlement: entitlement.clone(),
                open_action: open_action.map(|at| !at.is_empty()),
                open_action_at: open_action.unwrap_or_default().to_owned(),
            };
            let mut fields = vec!["tenant_id", "head_seq", "head_hash"];
            if entitlement.is_some() {
                fields.push("entitlement");
            }
            if open_action.is_some() {
                fields.extend(["open_action", "open_action_at"]);
            }
            self.db
                .fluent()
                .update()
                .fields(fields)
                .in_col("tenants")
                .document_id(tenant)
                .object(&doc)
                .add_to_transaction(&mut tx)
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(batch)
    }

    async fn head(&self, tenant: &str) -> Result<Option<Head>, StoreError> {
        Ok(self
            .tenant_doc(tenant)
            .await?
            .filter(|d| d.head_seq > 0)
            .map(|d| Head {
                seq: d.head_seq as u64,
                hash: d.head_hash,
            }))
    }

    async fn range(
        &self,
        tenant: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Receipt>, StoreError> {
        let parent = self.tenant_parent(tenant)?;
        // A millisecond more for each receipt asked for: 4 s for a page of 1,000.
        let deadline = READ_DEADLINE + std::time::Duration::from_millis(limit.min(10_000) as u64);
        let docs: Vec<ReceiptDoc> = bounded_within(deadline, async {
            self.reads
                .fluent()
                .select()
                .from("receipts")
                .parent(parent)
                .filter(|q| q.field("seq").greater_than(seq_bound(after_seq)))
                .order(|o| o.fields([o.field("seq").asc()]))
                .limit(limit.min(10_000) as u32)
                .obj()
                .query()
                .await
                .map_err(map_err)
        })
        .await?;
        docs.into_iter().map(Receipt::try_from).collect()
    }

    async fn get(&self, receipt_id: &str) -> Result<Option<Receipt>, StoreError> {
        if receipt_id.is_empty() || receipt_id.contains('/') {
            return Ok(None);
        }
        let index: Option<IndexDoc> = bounded(async {
            self.reads
                .fluent()
                .select()
                .by_id_in("receipt_index")
                .obj()
                .one(receipt_id)
                .await
                .map_err(map_err)
        })
        .await?;
        match index {
            Some(i) => self.receipt_at(&i.tenant_id, i.seq as u64).await,
            None => Ok(None),
        }
    }

    async fn by_message_id(&self, message_id: &str) -> Result<Option<Receipt>, StoreError> {
        let index: Option<IndexDoc> = bounded(async {
            self.reads
                .fluent()
                .select()
                .by_id_in("pubsub_messages")
                .obj()
                .one(message_doc_id(message_id))
                .await
                .map_err(map_err)
        })
        .await?;
        match index {
            Some(i) => self.receipt_at(&i.tenant_id, i.seq as u64).await,
            None => Ok(None),
        }
    }

    /// One batched read of the ids' index documents; the receipts are read only for the ids
    /// found (redeliveries, which are rare).
    async fn by_message_ids(
        &self,
        message_ids: &[String],
    ) -> Result<std::collections::HashMap<String, Receipt>, StoreError> {
        use futures_util::StreamExt as _;
        let mut found = std::collections::HashMap::new();
        if message_ids.is_empty() {
            return Ok(found);
        }
        bounded(async {
            let ids: std::collections::HashMap<String, &String> =
                message_ids.iter().map(|m| (message_doc_id(m), m)).collect();
            let mut docs = self
                .reads
                .fluent()
                .select()
                .by_id_in("pubsub_messages")
                .obj::<IndexDoc>()
                .batch_with_errors(ids.keys().cloned().collect::<Vec<_>>())
                .await
                .map_err(map_err)?;
            while let Some(doc) = docs.next().await {
                let (doc_id, index) = doc.map_err(map_err)?;
                if let (Some(i), Some(&mid)) = (index, ids.get(&doc_id)) {
                    if let Some(r) = self.receipt_at(&i.tenant_id, i.seq as u64).await? {
                        found.insert(mid.clone(), r);
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    async fn tenants(&self, after: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let after = after.to_owned();
        let docs: Vec<TenantDoc> = bounded(async {
            self.reads
                .fluent()
                .select()
                .from("tenants")
                .filter(move |q| q.field("tenant_id").greater_than(after.clone()))
                .order(|o| o.fields([o.field("tenant_id").asc()]))
                .limit(limit.min(10_000) as u32)
                .obj()
                .query()
                .await
                .map_err(map_err)
        })
        .await?;
        Ok(docs.into_iter().map(|d| d.tenant_id).collect())
    }

    async fn open_actions(&self, limit: usize) -> Result<Vec<OpenAction>, StoreError> {
        // One equality filter: served by Firestore's automatic single-field index.
        let docs: Vec<TenantDoc> = bounded(async {
            self.reads
                .fluent()
                .select()
                .from("tenants")
                .filter(|q| q.field("open_action").eq(true))
                .limit(limit.min(10_000) as u32)
                .obj()
                .query()
                .await
                .map_err(map_err)
        })
        .await?;
        let mut open: Vec<OpenAction> = (docs.into_iter())
            .map(|d| OpenAction {
                tenant_id: d.tenant_id,
                started_at: d.open_action_at,
            })
            .collect();
        open.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        Ok(open)
    }

    async fn entitlement(&self, tenant: &str) -> Result<Option<Value>, StoreError> {
        Ok(self.tenant_doc(tenant).await?.and_then(|d| d.entitlement))
    }

    async fn head_and_entitlement(
        &self,
        tenant: &str,
    ) -> Result<(Option<Head>, Option<Value>), StoreError> {
        // Both live in the tenant's document: one read, one snapshot.
        Ok(match self.tenant_doc(tenant).await? {
            None => (None, None),
            Some(d) => (
                (d.head_seq > 0).then_some(Head {
                    seq: d.head_seq as u64,
                    hash: d.head_hash,
                }),
                d.entitlement,
            ),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.reads.ping().await.map_err(map_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_writes_each_receipt_twice_each_message_once_and_each_tenant_head_once() {
        use crate::receipts::ReceiptDraft;
        let item = |tenant: &str, message: Option<&str>| {
            let r = ReceiptDraft::new(tenant, ReceiptType::Transition, "signal_processed", "r")
                .seal(None, "tai@test", "2026-12-07T00:00:00.000Z".into());
            let mut item = AppendItem::receipt(r);
            item.message_id = message.map(str::to_owned);
            item
        };
        // Three receipts of two tenants, one from a Pub/Sub message: 6 + 1 + 2 heads.
        let batch = [item("a", None), item("a", Some("m-1")), item("b", None)];
        assert_eq!(FirestoreStore::documents_written(&batch), 9);
        assert_eq!(FirestoreStore::documents_written(&[]), 0);
        // The largest batch the writer forms fits one commit whatever its mix.
        let widest: Vec<AppendItem> = (0..FirestoreStore::max_batch())
            .map(|i| item(&format!("t{i}"), Some("m")))
            .collect();
        assert!(FirestoreStore::documents_written(&widest) <= MAX_WRITES);
    }

    #[test]
    fn document_ids_are_safe_and_ordered() {
        assert_eq!(seq_id(42), "00000000000000000042");
        assert!(seq_id(9) < seq_id(10));
        assert_eq!(message_doc_id("123"), "m-123");
        assert_eq!(message_doc_id("a/b.."), "m-a~2fb~2e~2e");
    }
}
