//! Verification of receipts held outside any store: what a tenant or an auditor saved from the
//! API, checked without the service, its configuration or its ledger.
//!
//! The input is JSON values one after another (newline-delimited or not): a receipt, an array
//! of receipts, or an object with a `receipts` array (a page of `GET …/receipts`, a governor's
//! answer). Receipts are grouped by tenant in the order read, and each tenant's chain is
//! verified from seq 1 as the store's chains are ([`Verifier`]), and against its [`Anchor`] when
//! the caller recorded one; a tenant whose receipts begin right after its anchor's seq is
//! checked from the anchor instead ([`Verifier::resume`]). Values are read one at a time, so a
//! newline-delimited file of any length is checked in constant memory.
//!
//! Stricter than a JSON parser: a receipt must have exactly the schema's members, and no object
//! anywhere may name a member twice. Otherwise a file could verify while another reader, taking
//! the first of two values where serde takes the last, saw a different receipt.

use std::collections::HashMap;
use std::io::Read;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::chain::{unreached_anchors, Anchor, Verifier, VerifyReport};
use super::receipt::Receipt;

/// Why the input could not be verified at all (a receipt that is only wrong breaks its chain
/// instead).
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("not JSON as this check reads it: {0}")]
    Json(String),
    /// The input could not be read (a directory, a read that failed part-way).
    #[error("{0}")]
    Read(String),
    #[error("receipt {index} of the input (counting from 1) is not a receipt: {reason}")]
    NotAReceipt { index: u64, reason: String },
}

/// Verifies every tenant's chain in `input`, each against its anchor in `anchors` if it has
/// one; one report per tenant, in the order first read, then one for each anchored tenant the
/// input lacks (broken: its chain does not reach the anchor). None for an input without
/// receipts.
pub fn verify_json(
    input: impl Read,
    anchors: &HashMap<String, Anchor>,
) -> Result<Vec<VerifyReport>, OfflineError> {
    let members: Vec<String> = match serde_json::to_value(Receipt::empty()) {
        Ok(Value::Object(m)) => m.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    };
    let mut chains = Chains {
        members,
        anchors,
        verifiers: Vec::new(),
        index: HashMap::new(),
        read: 0,
    };
    let values = serde_json::Deserializer::from_reader(input).into_iter::<Strict>();
    for value in values {
        let value = value.map_err(|e| match e.io_error_kind() {
            Some(_) => OfflineError::Read(e.to_string()),
            None => OfflineError::Json(e.to_string()),
        })?;
        match value.0 {
            Value::Array(items) => items.into_iter().try_for_each(|r| chains.feed(r))?,
            Value::Object(mut page) if !page.contains_key("receipt_id") => {
                match page.remove("receipts") {
                    Some(Value::Array(items)) => {
                        items.into_iter().try_for_each(|r| chains.feed(r))?
                    }
                    _ => {
                        return Err(OfflineError::Json(
                            "an object that is neither a receipt nor has a `receipts` array".into(),
                        ))
                    }
                }
            }
            other => chains.feed(other)?,
        }
    }
    if chains.read == 0 {
        return Ok(Vec::new());
    }
    let unreached = unreached_anchors(anchors, |t| chains.index.contains_key(t));
    Ok(chains
        .verifiers
        .into_iter()
        .map(|v| v.finish(None))
        .chain(unreached)
        .collect())
}

/// One verifier per tenant, in the order the tenants were first read.
struct Chains<'a> {
    /// The members of a receipt, as the schema names them.
    members: Vec<String>,
    anchors: &'a HashMap<String, Anchor>,
    verifiers: Vec<Verifier>,
    index: HashMap<String, usize>,
    read: u64,
}

impl Chains<'_> {
    fn feed(&mut self, value: Value) -> Result<(), OfflineError> {
        self.read += 1;
        let index = self.read;
        let wrong = |reason: String| OfflineError::NotAReceipt { index, reason };
        let Value::Object(map) = value else {
            return Err(wrong("not a JSON object".into()));
        };
        if let Some(extra) = map.keys().find(|k| !self.members.contains(k)) {
            return Err(wrong(format!(
                "it has a member {extra:?}, which receipts do not have"
            )));
        }
        if let Some(missing) = self.members.iter().find(|m| !map.contains_key(*m)) {
            return Err(wrong(format!("it has no member {missing:?}")));
        }
        let receipt: Receipt =
            serde_json::from_value(Value::Object(map)).map_err(|e| wrong(e.to_string()))?;
        let at = match self.index.get(&receipt.tenant_id) {
            Some(&at) => at,
            None => {
                let tenant = receipt.tenant_id.clone();
                let verifier = match self.anchors.get(&tenant).cloned() {
                    // Receipts that begin right after the anchor (an export `?after_seq=` the
                    // anchor's seq): only they are checked, linked to the anchor's hash.
                    Some(a) if a.seq.checked_add(1) == Some(receipt.seq) => {
                        Verifier::resume(tenant, a)
                    }
                    anchor => Verifier::new(tenant).with_anchor(anchor),
                };
                self.verifiers.push(verifier);
                self.index
                    .insert(receipt.tenant_id.clone(), self.verifiers.len() - 1);
                self.verifiers.len() - 1
            }
        };
        self.verifiers[at].feed(&receipt);
        Ok(())
    }
}

/// A JSON value read with every object checked for a member named twice.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(v.into())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(v.into())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
        Number::from_f64(v)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Strict(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Strict, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format!("member {key:?} appears twice")));
            }
            let Strict(v) = access.next_value()?;
            map.insert(key, v);
        }
        Ok(Strict(Value::Object(map)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipts::receipt::{ReceiptDraft, ReceiptType};
    use serde_json::json;

    fn chain(tenant: &str, n: usize) -> Vec<Receipt> {
        let mut out: Vec<Receipt> = Vec::new();
        for i in 0..n {
            let d = ReceiptDraft::new(tenant, ReceiptType::Transition, "signal_processed", "r")
                .states(Some("stable"), Some("warning"))
                .metadata(json!({"input": {"value": 60.5 + i as f64, "tiny": 1e-7, "n": -3}}));
            let prev = out.last().map(|r| (r.seq, r.receipt_hash.as_str()));
            out.push(d.seal(prev, "tai@test", "2026-11-29T03:00:00.000Z".into()));
        }
        out
    }

    fn text(v: &impl serde::Serialize) -> String {
        serde_json::to_string(v).unwrap()
    }

    fn verified(input: &str) -> Vec<(String, bool, u64, Option<u64>)> {
        verify_json(input.as_bytes(), &HashMap::new())
            .unwrap()
            .into_iter()
            .map(|r| {
                let broken = r.first_broken.map(|b| b.seq);
                (r.tenant_id, r.valid, r.receipts_checked, broken)
            })
            .collect()
    }

    #[test]
    fn chains_verify_as_lines_arrays_and_pages_and_are_grouped_by_tenant() {
        let (a, b) = (chain("a", 5), chain("b", 3));
        let lines: Vec<String> = a.iter().map(text).collect();
        let expected = vec![("a".to_owned(), true, 5, None)];
        assert_eq!(verified(&lines.join("\n")), expected);
        assert_eq!(verified(&text(&a)), expected);
        // Pages as `GET …/receipts` returns them, saved one after another, with b in between.
        let pages = format!(
            "{} {} {}",
            text(
                &json!({"tenant_id": "a", "head_seq": 5, "receipts": &a[..2], "next_after_seq": 2})
            ),
            text(&b),
            text(
                &json!({"tenant_id": "a", "head_seq": 5, "receipts": &a[2..], "next_after_seq": null})
            ),
        );
        assert_eq!(
            verified(&pages),
            vec![
                ("a".to_owned(), true, 5, None),
                ("b".to_owned(), true, 3, None)
            ]
        );
        assert!(verified("").is_empty());
    }

    #[test]
    fn a_changed_value_a_missing_receipt_and_a_late_start_break_the_chain_at_their_seq() {
        let a = chain("a", 6);
        let mut changed: Vec<Value> = a.iter().map(|r| serde_json::to_value(r).unwrap()).collect();
        changed[3]["metadata"]["input"]["value"] = json!(99.5);
        assert_eq!(
            verified(&text(&changed)),
            vec![("a".to_owned(), false, 3, Some(4))]
        );
        let gap: Vec<&Receipt> = a.iter().filter(|r| r.seq != 2).collect();
        assert_eq!(
            verified(&text(&gap)),
            vec![("a".to_owned(), false, 1, Some(2))]
        );
        assert_eq!(
            verified(&text(&a[2..].to_vec())),
            vec![("a".to_owned(), false, 0, Some(1))]
        );
    }

    #[test]
    fn what_is_not_exactly_a_receipt_is_an_error_with_its_place() {
        let a = chain("a", 2);
        let mut extra = serde_json::to_value(&a[1]).unwrap();
        extra["note"] = json!("added");
        let input = format!("{}\n{}", text(&a[0]), text(&extra));
        let e = verify_json(input.as_bytes(), &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("receipt 2 ") && e.contains("\"note\""), "{e}");

        let mut missing = serde_json::to_value(&a[0]).unwrap();
        missing.as_object_mut().unwrap().remove("node");
        let e = verify_json(text(&missing).as_bytes(), &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("receipt 1 ") && e.contains("\"node\""), "{e}");

        let mut typed = serde_json::to_value(&a[0]).unwrap();
        typed["seq"] = json!("1");
        assert!(matches!(
            verify_json(text(&typed).as_bytes(), &HashMap::new()),
            Err(OfflineError::NotAReceipt { index: 1, .. })
        ));

        // A member named twice, at the top or deep in the metadata, whichever value comes last.
        let one = text(&a[0]);
        let twice = one.replacen("\"reason\":", "\"reason\":\"other\",\"reason\":", 1);
        let deep = one.replacen("\"value\":", "\"value\":1,\"value\":", 1);
        for input in [twice, deep] {
            let e = verify_json(input.as_bytes(), &HashMap::new())
                .unwrap_err()
                .to_string();
            assert!(e.contains("appears twice"), "{e}");
        }
        for input in ["[1]", "{\"receipts\": 3}", "{\"x\": 1}", "{nope"] {
            assert!(
                verify_json(input.as_bytes(), &HashMap::new()).is_err(),
                "{input}"
            );
        }
    }

    #[test]
    fn each_chain_is_held_to_its_anchor_and_an_anchored_chain_that_is_absent_is_broken() {
        let (a, b) = (chain("a", 4), chain("b", 2));
        let input = format!("{}\n{}", text(&a), text(&b));
        let anchors = |entries: &[(&str, u64, &str)]| -> HashMap<String, Anchor> {
            entries
                .iter()
                .map(|(t, seq, hash)| (t.to_string(), Anchor::new(*seq, hash).unwrap()))
                .collect()
        };
        let check = |anchors: HashMap<String, Anchor>| -> Vec<(String, Option<u64>)> {
            verify_json(input.as_bytes(), &anchors)
                .unwrap()
                .into_iter()
                .map(|r| (r.tenant_id, r.first_broken.map(|b| b.seq)))
                .collect()
        };
        let held = anchors(&[("a", 3, &a[2].receipt_hash), ("b", 2, &b[1].receipt_hash)]);
        assert_eq!(check(held), [("a".into(), None), ("b".into(), None)]);
        // Another chain's hash at seq 3 (as a rewrite would give), and a chain not in the input.
        let wrong = anchors(&[("a", 3, &b[1].receipt_hash), ("c", 1, &a[0].receipt_hash)]);
        assert_eq!(
            check(wrong),
            [
                ("a".into(), Some(3)),
                ("b".into(), None),
                ("c".into(), Some(1))
            ]
        );
        // Receipts that begin right after the anchor are checked from it.
        let tail = a[2..].iter().map(text).collect::<Vec<_>>().join("\n");
        let from = |seq: u64, hash: &str| anchors(&[("a", seq, hash)]);
        let resumed = |anchors: HashMap<String, Anchor>| {
            let r = verify_json(tail.as_bytes(), &anchors).unwrap().remove(0);
            (r.receipts_checked, r.first_broken.map(|b| b.seq))
        };
        assert_eq!(resumed(from(2, &a[1].receipt_hash)), (2, None));
        assert_eq!(resumed(from(2, &a[0].receipt_hash)), (0, Some(3)));
        assert_eq!(
            resumed(from(1, &a[0].receipt_hash)),
            (0, Some(1)),
            "not after it: from seq 1"
        );
        // The largest seq an anchor can name is only out of reach.
        let far = anchors(&[("a", u64::MAX, &a[0].receipt_hash)]);
        let r = verify_json(input.as_bytes(), &far).unwrap().remove(0);
        assert_eq!(r.first_broken.map(|b| b.seq), Some(5));
        // No receipts at all stays "no receipts", anchors or not.
        let some = anchors(&[("c", 1, &a[0].receipt_hash)]);
        assert!(verify_json("".as_bytes(), &some).unwrap().is_empty());
    }
}
