//! The one receipt schema (SPEC §7), its canonical text and hash.
//!
//! A [`ReceiptDraft`] is what a producer decides (type, event, states, reason, metadata); the
//! ledger writer seals it into a [`Receipt`] by giving it its place in the tenant's chain (`seq`,
//! `prev_hash`), the node and the time, and then its hash.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::jcs::{write_string, write_u64, write_value};

/// `prev_hash` of the first receipt of every chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What kind of outcome a receipt records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptType {
    Transition,
    Refusal,
    Action,
    ToolCall,
    Entitlement,
}

impl ReceiptType {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptType::Transition => "transition",
            ReceiptType::Refusal => "refusal",
            ReceiptType::Action => "action",
            ReceiptType::ToolCall => "tool_call",
            ReceiptType::Entitlement => "entitlement",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "transition" => ReceiptType::Transition,
            "refusal" => ReceiptType::Refusal,
            "action" => ReceiptType::Action,
            "tool_call" => ReceiptType::ToolCall,
            "entitlement" => ReceiptType::Entitlement,
            _ => return None,
        })
    }
}

/// A sealed receipt: every member always present (`null` where empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub receipt_id: String,
    pub tenant_id: String,
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: ReceiptType,
    pub event_type: String,
    pub state_from: Option<String>,
    pub state_to: Option<String>,
    pub reason: String,
    pub metadata: Value,
    pub node: String,
    pub timestamp: String,
    pub prev_hash: String,
    pub receipt_hash: String,
}

impl Receipt {
    /// The draft this receipt was sealed from: its place in the chain, node, time and hash
    /// forgotten, to be sealed again.
    pub fn unseal(self) -> ReceiptDraft {
        ReceiptDraft {
            receipt_id: self.receipt_id,
            tenant_id: self.tenant_id,
            kind: self.kind,
            event_type: self.event_type,
            state_from: self.state_from,
            state_to: self.state_to,
            reason: self.reason,
            metadata: self.metadata,
        }
    }

    /// A receipt with every member empty, to be filled in place (a store's reading loop).
    pub fn empty() -> Self {
        Receipt {
            receipt_id: String::new(),
            tenant_id: String::new(),
            seq: 0,
            kind: ReceiptType::Transition,
            event_type: String::new(),
            state_from: None,
            state_to: None,
            reason: String::new(),
            metadata: Value::Null,
            node: String::new(),
            timestamp: String::new(),
            prev_hash: String::new(),
            receipt_hash: String::new(),
        }
    }

    /// The RFC 8785 text of the receipt without `receipt_hash`: what the hash covers. Members
    /// are written in their sorted order directly (all names are ASCII, so byte order is UTF-16
    /// order).
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(384);
        self.write_canonical(&mut out);
        out
    }

    /// Writes [`Receipt::canonical`] into `out` (cleared first), so a verifier can reuse one
    /// buffer for a whole chain.
    pub fn write_canonical(&self, out: &mut String) {
        self.write_canonical_with(out, |out| {
            write_value(out, &self.metadata);
            Some(())
        });
    }

    /// [`Receipt::write_canonical`] with the metadata given as the JSON text a store holds
    /// (`self.metadata` is not read): `None` when [`super::jcs::write_text`] leaves that text
    /// to the tree.
    pub fn write_canonical_text(&self, out: &mut String, metadata: &str) -> Option<()> {
        self.write_canonical_with(out, |out| super::jcs::write_text(out, metadata))
    }

    fn write_canonical_with(
        &self,
        out: &mut String,
        metadata: impl FnOnce(&mut String) -> Option<()>,
    ) -> Option<()> {
        out.clear();
        let opt = |out: &mut String, v: &Option<String>| match v {
            Some(s) => write_string(out, s),
            None => out.push_str("null"),
        };
        out.push_str("{\"event_type\":");
        write_string(out, &self.event_type);
        out.push_str(",\"metadata\":");
        metadata(out)?;
        out.push_str(",\"node\":");
        write_string(out, &self.node);
        out.push_str(",\"prev_hash\":");
        write_string(out, &self.prev_hash);
        out.push_str(",\"reason\":");
        write_string(out, &self.reason);
        out.push_str(",\"receipt_id\":");
        write_string(out, &self.receipt_id);
        out.push_str(",\"seq\":");
        write_u64(out, self.seq);
        out.push_str(",\"state_from\":");
        opt(out, &self.state_from);
        out.push_str(",\"state_to\":");
        opt(out, &self.state_to);
        out.push_str(",\"tenant_id\":");
        write_string(out, &self.tenant_id);
        out.push_str(",\"timestamp\":");
        write_string(out, &self.timestamp);
        out.push_str(",\"type\":");
        write_string(out, self.kind.as_str());
        out.push('}');
        Some(())
    }

    /// Lowercase hex SHA-256 of [`Receipt::canonical`].
    pub fn compute_hash(&self) -> String {
        let mut buf = String::with_capacity(512);
        hex(&self.digest_with(&mut buf))
    }

    /// The SHA-256 of the canonical text, using `buf` as scratch space.
    pub fn digest_with(&self, buf: &mut String) -> [u8; 32] {
        self.write_canonical(buf);
        Sha256::digest(buf.as_bytes()).into()
    }

    /// Whether the stored `receipt_hash` matches the content (no allocation with a warm `buf`).
    pub fn hash_matches(&self, buf: &mut String) -> bool {
        self.digest_matches(&self.digest_with(buf))
    }

    /// [`Receipt::hash_matches`] with the metadata as the JSON text a store holds; `None`
    /// when the text has to be parsed first.
    pub fn hash_matches_text(&self, buf: &mut String, metadata: &str) -> Option<bool> {
        self.write_canonical_text(buf, metadata)?;
        let digest: [u8; 32] = Sha256::digest(buf.as_bytes()).into();
        Some(self.digest_matches(&digest))
    }

    fn digest_matches(&self, digest: &[u8; 32]) -> bool {
        let stored = self.receipt_hash.as_bytes();
        stored.len() == 64
            && digest.iter().enumerate().all(|(i, b)| {
                stored[2 * i] == HEX[(b >> 4) as usize]
                    && stored[2 * i + 1] == HEX[(b & 15) as usize]
            })
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The 32 bytes of a lowercase (or uppercase) hex SHA-256; `None` for anything else.
pub fn digest_from_hex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
    }
    Some(out)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Levels of objects and arrays a receipt's metadata may nest, the metadata object itself
/// counted as one: well inside what every backend reads back (serde_json parses at most 128
/// levels of SQLite's text; Firestore holds maps at most 20 deep, and deeper metadata would go
/// there as text). The writer refuses a deeper receipt to its own caller before it joins a
/// batch, so it never fails other callers' commit; the edges keep client JSON well inside this
/// ([`crate::intake::check_recorded_json`]).
pub const MAX_METADATA_NESTING: usize = 16;

/// Levels of objects and arrays in `v`: 0 for a scalar, 1 for `{}` or `[1]`.
pub fn nesting(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(nesting).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// A receipt before it has its place in a chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiptDraft {
    pub receipt_id: String,
    pub tenant_id: String,
    pub kind: ReceiptType,
    pub event_type: String,
    pub state_from: Option<String>,
    pub state_to: Option<String>,
    pub reason: String,
    pub metadata: Value,
}

impl ReceiptDraft {
    /// A draft with a fresh UUIDv7 id and empty metadata.
    pub fn new(
        tenant_id: impl Into<String>,
        kind: ReceiptType,
        event_type: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ReceiptDraft {
            receipt_id: uuid::Uuid::now_v7().to_string(),
            tenant_id: tenant_id.into(),
            kind,
            event_type: event_type.into(),
            state_from: None,
            state_to: None,
            reason: reason.into(),
            metadata: Value::Object(Default::default()),
        }
    }

    /// Sets `state_from` / `state_to`.
    pub fn states(mut self, from: Option<&str>, to: Option<&str>) -> Self {
        self.state_from = from.map(str::to_owned);
        self.state_to = to.map(str::to_owned);
        self
    }

    /// Sets the metadata (a JSON object).
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// Gives the draft its place after `prev` (`None` = genesis) and hashes it.
    pub fn seal(self, prev: Option<(u64, &str)>, node: &str, timestamp: String) -> Receipt {
        let (seq, prev_hash) = match prev {
            Some((seq, hash)) => (seq + 1, hash.to_owned()),
            None => (1, GENESIS_HASH.to_owned()),
        };
        let mut r = Receipt {
            receipt_id: self.receipt_id,
            tenant_id: self.tenant_id,
            seq,
            kind: self.kind,
            event_type: self.event_type,
            state_from: self.state_from,
            state_to: self.state_to,
            reason: self.reason,
            metadata: self.metadata,
            node: node.to_owned(),
            timestamp,
            prev_hash,
            receipt_hash: String::new(),
        };
        r.receipt_hash = r.compute_hash();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_counts_levels_of_objects_and_arrays() {
        use serde_json::json;
        for (v, levels) in [
            (json!(1), 0),
            (json!("a"), 0),
            (json!({}), 1),
            (json!([]), 1),
            (json!({"a": 1, "b": [1, {"c": []}]}), 4),
            (json!([[1], [[2]], 3]), 3),
        ] {
            assert_eq!(nesting(&v), levels, "{v}");
        }
    }

    #[test]
    fn every_shared_vector_is_reproduced_byte_for_byte() {
        // The authoritative vectors live in the shared folder beside the repository (CI lays it
        // out the same way); TAI_RECEIPT_VECTORS may point elsewhere.
        let path = std::env::var("TAI_RECEIPT_VECTORS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../shared/receipts/vectors.json")
            });
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("receipt vectors at {}: {e}", path.display()));
        let doc: Value = serde_json::from_str(&text).unwrap();
        let vectors = doc["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 4);
        for v in vectors {
            let r: Receipt = serde_json::from_value(v["receipt"].clone()).unwrap();
            assert_eq!(
                r.canonical(),
                v["canonical"].as_str().unwrap(),
                "canonical text of seq {}",
                r.seq
            );
            assert_eq!(r.compute_hash(), r.receipt_hash, "hash of seq {}", r.seq);
            // The general-purpose canonicalizer agrees with the receipt's own writer.
            let mut obj = v["receipt"].clone();
            obj.as_object_mut().unwrap().remove("receipt_hash");
            assert_eq!(super::super::jcs::canonical(&obj), r.canonical());
        }
    }

    #[test]
    fn a_sealed_chain_links_each_receipt_to_the_previous_hash() {
        let a = ReceiptDraft::new("t", ReceiptType::Transition, "x", "r").seal(
            None,
            "n",
            "2026-01-01T00:00:00.000Z".into(),
        );
        let b = ReceiptDraft::new("t", ReceiptType::Refusal, "y", "r").seal(
            Some((a.seq, &a.receipt_hash)),
            "n",
            "2026-01-01T00:00:00.001Z".into(),
        );
        assert_eq!((a.seq, a.prev_hash.as_str()), (1, GENESIS_HASH));
        assert_eq!((b.seq, b.prev_hash.as_str()), (2, a.receipt_hash.as_str()));
        assert_eq!(b.receipt_hash, b.compute_hash());
        assert_eq!(
            uuid::Uuid::parse_str(&a.receipt_id)
                .unwrap()
                .get_version_num(),
            7
        );
    }

    #[test]
    fn hex_digests_round_trip_and_reject_anything_else() {
        let d: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        assert_eq!(digest_from_hex(&hex(&d)), Some(d));
        assert_eq!(digest_from_hex(&hex(&d).to_uppercase()), Some(d));
        for bad in [
            "",
            "00",
            &"0".repeat(63),
            &"0".repeat(65),
            &"g".repeat(64),
            &"é".repeat(32),
        ] {
            assert_eq!(digest_from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn serialization_keeps_every_member_with_nulls() {
        let r =
            ReceiptDraft::new("t", ReceiptType::ToolCall, "x", "r").seal(None, "n", "ts".into());
        let v = serde_json::to_value(&r).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 13);
        assert!(v["state_from"].is_null() && v["type"] == "tool_call");
    }
}
