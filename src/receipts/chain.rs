//! Chain verification: recompute every hash from content, check `seq` continuity and
//! `prev_hash` linkage, and stop at the first break with its `seq` and why.
//!
//! Pure and streaming: a [`Verifier`] holds one previous hash, so a chain of any length is
//! checked in constant memory, page by page.
//!
//! A chain that verifies proves only that it is consistent: whoever can write the ledger can
//! change a receipt and seal every receipt after it again. An [`Anchor`] (a seq and its
//! `receipt_hash`, recorded somewhere the ledger's writers cannot change) closes that gap: since
//! each hash covers the one before it, a chain whose receipt at the anchor's seq still has the
//! recorded hash is, up to there, exactly the chain that was recorded.

use serde::Serialize;

use super::receipt::{Receipt, GENESIS_HASH};

/// Where and why a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    pub seq: u64,
    pub reason: String,
}

/// The outcome of verifying one tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub tenant_id: String,
    pub valid: bool,
    pub receipts_checked: u64,
    /// The last receipt that verified: with `head_hash`, the anchor to record for a later check.
    pub head_seq: u64,
    pub head_hash: String,
    pub first_broken: Option<Break>,
    /// The anchor the chain was checked against, if one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Anchor>,
}

/// A receipt's `receipt_hash` recorded at some time: the chain must still reach `seq` with that
/// hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
}

impl Anchor {
    /// An anchor from its parts: `seq` from 1, `hash` 64 lowercase hex digits (as receipts
    /// write it).
    pub fn new(seq: u64, hash: &str) -> Result<Self, String> {
        if seq == 0 {
            return Err("an anchor's seq starts at 1".into());
        }
        if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("an anchor's hash is 64 lowercase hex digits".into());
        }
        Ok(Anchor {
            seq,
            hash: hash.to_owned(),
        })
    }

    /// `SEQ:HASH`, as a report's `head_seq` and `head_hash` give them.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (seq, hash) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is not SEQ:HASH"))?;
        let seq = seq
            .parse()
            .map_err(|_| format!("{seq:?} is not a seq (a positive integer)"))?;
        Anchor::new(seq, hash)
    }
}

/// What a file of anchors held ([`read_anchors`]).
#[derive(Debug, Default)]
pub struct AnchorFile {
    /// One anchor per tenant.
    pub anchors: std::collections::HashMap<String, Anchor>,
    /// Reports of chains that did not verify, or had no receipt: they give no anchor.
    pub skipped: usize,
}

/// Why a file of anchors could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum AnchorsError {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
}

/// `TENANT:SEQ:HASH` (as `verify --anchor` takes it) split into the tenant and its anchor; the
/// tenant id is not checked here.
pub fn tenant_anchor(text: &str) -> Result<(String, Anchor), String> {
    let (tenant, rest) =
        (text.split_once(':')).ok_or_else(|| format!("{text:?} is not TENANT:SEQ:HASH"))?;
    Ok((tenant.to_owned(), Anchor::parse(rest)?))
}

/// [`read_anchors`] of the file at `path`.
pub fn read_anchors_file(path: &std::path::Path) -> Result<AnchorFile, AnchorsError> {
    let file = std::fs::File::open(path)?;
    read_anchors(std::io::BufReader::new(file))
}

/// Anchors, one a line: the JSON reports `verify` printed (or `GET …/receipts/verify` gave),
/// of which every valid chain's `head_seq` and `head_hash` is its tenant's anchor, or
/// `TENANT:SEQ:HASH`. Blank lines are skipped, and so is the line `backup` prints before the
/// reports of its copy (`{"backup": …, "bytes": …}`); a tenant named twice is an error, since
/// the file would then say two things.
pub fn read_anchors(input: impl std::io::BufRead) -> Result<AnchorFile, AnchorsError> {
    #[derive(serde::Deserialize)]
    struct Report {
        tenant_id: String,
        valid: bool,
        head_seq: u64,
        head_hash: String,
    }
    let mut out = AnchorFile::default();
    let mut first_line = std::collections::HashMap::new();
    for (i, line) in input.lines().enumerate() {
        let (line, number) = (line?, i + 1);
        let text = line.trim();
        let at = |message: String| AnchorsError::Line {
            line: number,
            message,
        };
        let (tenant, anchor) = if text.is_empty() {
            continue;
        } else if text.starts_with('{') {
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| at(format!("not a verification report: {e}")))?;
            if value.get("backup").is_some() && value.get("tenant_id").is_none() {
                continue;
            }
            let r: Report = serde_json::from_value(value)
                .map_err(|e| at(format!("not a verification report: {e}")))?;
            if !r.valid || r.head_seq == 0 {
                out.skipped += 1;
                continue;
            }
            let anchor = Anchor::new(r.head_seq, &r.head_hash).map_err(at)?;
            (r.tenant_id, anchor)
        } else {
            tenant_anchor(text).map_err(at)?
        };
        crate::tenant::TenantId::parse(&tenant).map_err(|m| at(format!("{tenant:?}: {m}")))?;
        if let Some(earlier) = first_line.insert(tenant.clone(), number) {
            return Err(at(format!(
                "tenant {tenant} is named again (line {earlier})"
            )));
        }
        out.anchors.insert(tenant, anchor);
    }
    Ok(out)
}

/// The reports of the anchored tenants that `has_chain` says have no chain, in tenant order:
/// each is broken, since a chain that is not there does not reach its anchor.
pub fn unreached_anchors(
    anchors: &std::collections::HashMap<String, Anchor>,
    has_chain: impl Fn(&str) -> bool,
) -> Vec<VerifyReport> {
    let mut absent: Vec<(&String, &Anchor)> =
        anchors.iter().filter(|(t, _)| !has_chain(t)).collect();
    absent.sort_by(|a, b| a.0.cmp(b.0));
    absent
        .into_iter()
        .map(|(t, a)| {
            Verifier::new(t.clone())
                .with_anchor(Some(a.clone()))
                .finish(None)
        })
        .collect()
}

/// Checks receipts fed in `seq` order.
#[derive(Debug, Clone)]
pub struct Verifier {
    tenant_id: String,
    expected_seq: u64,
    prev_hash: String,
    checked: u64,
    broken: Option<Break>,
    anchor: Option<Anchor>,
    /// Scratch space for canonical texts, reused for every receipt.
    buf: String,
}

impl Verifier {
    pub fn new(tenant_id: impl Into<String>) -> Self {
        Verifier {
            tenant_id: tenant_id.into(),
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            checked: 0,
            broken: None,
            anchor: None,
            buf: String::with_capacity(1024),
        }
    }

    /// Also checks the chain against `anchor`: it must reach the anchor's seq, and the receipt
    /// there must have the anchor's hash.
    pub fn with_anchor(mut self, anchor: Option<Anchor>) -> Self {
        self.anchor = anchor;
        self
    }

    /// Checks the chain after `anchor` only, trusting the anchor for what comes before it: the
    /// first receipt fed must be the one at the anchor's seq + 1, linked to the anchor's hash.
    /// Verifying only what was added since the last check takes work in proportion to that.
    pub fn resume(tenant_id: impl Into<String>, anchor: Anchor) -> Self {
        let mut v = Verifier::new(tenant_id);
        v.expected_seq = anchor.seq.saturating_add(1);
        v.prev_hash.clone_from(&anchor.hash);
        v.anchor = Some(anchor);
        v
    }

    /// Gives up this verifier's scratch space: for one of many verifiers that share one
    /// buffer through [`Verifier::swap_scratch`] (a chain each, fed in turn), each keeping only
    /// its place in its chain.
    pub fn without_scratch(mut self) -> Self {
        self.buf = String::new();
        self
    }

    /// Swaps `scratch` in as this verifier's scratch space; called again, swaps it back.
    pub fn swap_scratch(&mut self, scratch: &mut String) {
        std::mem::swap(&mut self.buf, scratch);
    }

    /// Checks the next receipt; returns `false` once the chain is broken (further input is
    /// ignored).
    pub fn feed(&mut self, r: &Receipt) -> bool {
        self.feed_with(r, |r, buf| Some(r.hash_matches(buf)))
            .unwrap_or(false)
    }

    /// [`Verifier::feed`] with the receipt's metadata as the JSON text a store holds (the
    /// receipt's own `metadata` is not read), canonicalised without building a tree. `None`,
    /// with nothing checked, when that text has to be parsed first: parse it into the receipt
    /// and [`Verifier::feed`] it.
    pub fn feed_text(&mut self, r: &Receipt, metadata: &str) -> Option<bool> {
        self.feed_with(r, |r, buf| r.hash_matches_text(buf, metadata))
    }

    fn feed_with(
        &mut self,
        r: &Receipt,
        hash_matches: impl FnOnce(&Receipt, &mut String) -> Option<bool>,
    ) -> Option<bool> {
        if self.broken.is_some() {
            return Some(false);
        }
        // Breaks are reported at the chain position where they occur.
        let fail = |reason: String| Break {
            seq: self.expected_seq,
            reason,
        };
        let problem = if r.tenant_id != self.tenant_id {
            Some(fail(format!(
                "tenant_id is {:?}, expected {:?}",
                r.tenant_id, self.tenant_id
            )))
        } else if r.seq != self.expected_seq {
            Some(fail(format!(
                "seq {} found where {} was expected (gap or reorder)",
                r.seq, self.expected_seq
            )))
        } else if r.prev_hash != self.prev_hash {
            Some(fail(
                "prev_hash does not match the previous receipt's receipt_hash".to_owned(),
            ))
        } else if !hash_matches(r, &mut self.buf)? {
            Some(fail(
                "receipt_hash does not match the receipt's content".to_owned(),
            ))
        } else if self
            .anchor
            .as_ref()
            .is_some_and(|a| a.seq == r.seq && a.hash != r.receipt_hash)
        {
            // Consistent in itself, yet not the receipt recorded: the chain was sealed again
            // from this receipt or one before it.
            Some(fail(
                "receipt_hash is not the anchor's: the chain was rewritten at or before this seq"
                    .to_owned(),
            ))
        } else {
            None
        };
        Some(match problem {
            Some(b) => {
                self.broken = Some(b);
                false
            }
            None => {
                self.checked += 1;
                self.expected_seq += 1;
                self.prev_hash.clone_from(&r.receipt_hash);
                true
            }
        })
    }

    /// Reports the next receipt (the one at the seq expected now) as one that cannot be read
    /// back: a chain is broken where its stored data is damaged, as where it was changed.
    pub fn unreadable(&mut self, why: impl std::fmt::Display) {
        if self.broken.is_none() {
            self.broken = Some(Break {
                seq: self.expected_seq,
                reason: format!("the receipt at this seq cannot be read: {why}"),
            });
        }
    }

    /// Whether a break was found.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Receipts verified so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Reports the receipt at `seq`, past the chain head `head` that the verification read,
    /// that no head read afterwards covers either: it is not part of the chain.
    pub fn past_head(&mut self, seq: u64, head: u64) {
        if self.broken.is_none() {
            self.broken = Some(Break {
                seq,
                reason: format!(
                    "a receipt at seq {seq} lies past the chain head (seq {head}), and no later head covers it"
                ),
            });
        }
    }

    /// The report; `head` is the stored head `(seq, hash)` when known, so a chain missing its
    /// tail (or a head that runs ahead) is reported as broken too.
    pub fn finish(mut self, head: Option<(u64, &str)>) -> VerifyReport {
        if self.broken.is_none() {
            if let Some((seq, hash)) = head {
                let last = self.expected_seq - 1;
                if seq != last || (last > 0 && hash != self.prev_hash) {
                    self.broken = Some(Break {
                        seq: last + 1,
                        reason: format!(
                            "the chain head says seq {seq} but the receipts end at seq {last}"
                        ),
                    });
                }
            }
        }
        if let Some(a) = self.anchor.as_ref().filter(|_| self.broken.is_none()) {
            let last = self.expected_seq - 1;
            if a.seq > last {
                self.broken = Some(Break {
                    seq: last + 1,
                    reason: format!(
                        "the chain ends at seq {last}, before the anchor's seq {}",
                        a.seq
                    ),
                });
            }
        }
        VerifyReport {
            tenant_id: self.tenant_id,
            valid: self.broken.is_none(),
            receipts_checked: self.checked,
            head_seq: self.expected_seq - 1,
            head_hash: self.prev_hash,
            first_broken: self.broken,
            anchor: self.anchor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipts::receipt::{ReceiptDraft, ReceiptType};
    use proptest::prelude::*;
    use serde_json::json;

    fn build_chain(payloads: &[(String, f64)]) -> Vec<Receipt> {
        let mut out: Vec<Receipt> = Vec::new();
        for (i, (reason, v)) in payloads.iter().enumerate() {
            let d = ReceiptDraft::new(
                "tenant-a",
                ReceiptType::Transition,
                "signal_processed",
                reason.clone(),
            )
            .states(Some("stable"), Some("stable"))
            .metadata(json!({"input": {"value": v, "i": i}}));
            let prev = out.last().map(|r| (r.seq, r.receipt_hash.as_str()));
            let r = d.seal(
                prev,
                "tai@test",
                format!("2026-01-01T00:00:{:02}.000Z", i % 60),
            );
            out.push(r);
        }
        out
    }

    fn verify(chain: &[Receipt]) -> VerifyReport {
        let mut v = Verifier::new("tenant-a");
        for r in chain {
            v.feed(r);
        }
        v.finish(chain.last().map(|r| (r.seq, r.receipt_hash.as_str())))
    }

    /// Changes one member of a receipt (index `member` of 12) without re-hashing it.
    fn tamper(r: &mut Receipt, member: usize) {
        match member {
            0 => r.receipt_id.push('x'),
            1 => r.tenant_id.push('x'),
            2 => r.seq += 1,
            3 => {
                r.kind = if r.kind == ReceiptType::Refusal {
                    ReceiptType::Action
                } else {
                    ReceiptType::Refusal
                }
            }
            4 => r.event_type.push('x'),
            5 => r.state_from = Some("tampered".into()),
            6 => r.state_to = None,
            7 => r.reason.push('x'),
            8 => r.metadata["input"]["value"] = json!(-1.25),
            9 => r.node.push('x'),
            10 => r.timestamp.push('x'),
            11 => r.prev_hash = "f".repeat(64),
            _ => r.receipt_hash = "0".repeat(64),
        }
    }

    proptest! {
        #[test]
        fn any_chain_built_by_the_code_verifies(payloads in proptest::collection::vec(("[a-zé ]{0,12}", -1e9f64..1e9), 1..40)) {
            let chain = build_chain(&payloads);
            let report = verify(&chain);
            prop_assert!(report.valid, "{:?}", report.first_broken);
            prop_assert_eq!(report.receipts_checked, chain.len() as u64);
        }

        /// What a store or a client reads back is what was hashed: every double, however
        /// small or large, parses from its written text to the same bits (serde_json's default
        /// reading is one unit off for about one double in five; see `float_roundtrip`).
        #[test]
        fn a_chain_read_back_from_its_text_holds_the_same_numbers_and_verifies(
            values in proptest::collection::vec(
                proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
                1..40,
            )
        ) {
            let payloads: Vec<(String, f64)> = values.iter().map(|v| (String::new(), *v)).collect();
            let chain = build_chain(&payloads);
            let read: Vec<Receipt> = chain
                .iter()
                .map(|r| serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap())
                .collect();
            for (r, v) in read.iter().zip(&values) {
                let back = r.metadata["input"]["value"].as_f64().unwrap();
                prop_assert_eq!(back.to_bits(), v.to_bits(), "{} read back as {}", v, back);
            }
            let report = verify(&read);
            prop_assert!(report.valid, "{:?}", report.first_broken);
        }

        #[test]
        fn changing_any_member_of_any_receipt_is_reported_at_its_seq(
            payloads in proptest::collection::vec(("[a-z]{1,8}", -1e6f64..1e6), 1..25),
            victim in any::<proptest::sample::Index>(),
            member in 0usize..13,
        ) {
            let mut chain = build_chain(&payloads);
            let i = victim.index(chain.len());
            let seq = chain[i].seq;
            tamper(&mut chain[i], member);
            let report = verify(&chain);
            prop_assert!(!report.valid);
            prop_assert_eq!(report.first_broken.unwrap().seq, seq);
        }
    }

    #[test]
    fn a_missing_tail_is_a_break_after_the_last_receipt() {
        let chain = build_chain(&[("a".into(), 1.0), ("b".into(), 2.0), ("c".into(), 3.0)]);
        let mut v = Verifier::new("tenant-a");
        for r in &chain[..2] {
            v.feed(r);
        }
        let report = v.finish(Some((3, &chain[2].receipt_hash)));
        assert_eq!(report.first_broken.map(|b| b.seq), Some(3));
    }

    /// `chain` checked against `anchor`.
    fn verify_anchored(chain: &[Receipt], anchor: Anchor) -> VerifyReport {
        let mut v = Verifier::new("tenant-a").with_anchor(Some(anchor));
        for r in chain {
            v.feed(r);
        }
        v.finish(chain.last().map(|r| (r.seq, r.receipt_hash.as_str())))
    }

    #[test]
    fn a_chain_sealed_again_verifies_alone_and_breaks_at_an_anchor_recorded_before() {
        let payloads: Vec<(String, f64)> = (0..9).map(|i| (format!("r{i}"), i as f64)).collect();
        let chain = build_chain(&payloads);
        let recorded = Anchor::new(8, &chain[7].receipt_hash).unwrap();
        // Whoever can write the ledger changes seq 4 and seals it and every receipt after it.
        let mut rewritten = chain[..3].to_vec();
        for r in &chain[3..] {
            let mut r = r.clone();
            if r.seq == 4 {
                r.reason = "forged".into();
            }
            let (node, timestamp) = (r.node.clone(), r.timestamp.clone());
            let prev = rewritten.last().map(|p| (p.seq, p.receipt_hash.clone()));
            let prev = prev.as_ref().map(|(seq, hash)| (*seq, hash.as_str()));
            rewritten.push(r.unseal().seal(prev, &node, timestamp));
        }
        assert_ne!(chain[7].receipt_hash, rewritten[7].receipt_hash);
        assert!(
            verify(&rewritten).valid,
            "a rewrite is consistent in itself"
        );

        let report = verify_anchored(&rewritten, recorded.clone());
        let broken = report.first_broken.expect("the anchor tells");
        assert_eq!(broken.seq, 8);
        assert!(broken.reason.contains("anchor"), "{}", broken.reason);
        assert_eq!(report.anchor, Some(recorded.clone()));
        // The original chain holds its anchor, and so does the rewrite one before the change.
        assert!(verify_anchored(&chain, recorded).valid);
        let before = Anchor::new(3, &chain[2].receipt_hash).unwrap();
        assert!(verify_anchored(&rewritten, before).valid);
    }

    #[test]
    fn a_chain_cut_short_of_its_anchor_breaks_after_its_end() {
        let chain = build_chain(&[("a".into(), 1.0), ("b".into(), 2.0), ("c".into(), 3.0)]);
        let report = verify_anchored(&chain[..2], Anchor::new(3, &chain[2].receipt_hash).unwrap());
        let broken = report.first_broken.unwrap();
        assert_eq!(broken.seq, 3);
        assert!(
            broken.reason.contains("before the anchor's seq 3"),
            "{}",
            broken.reason
        );
        let none = Verifier::new("t")
            .with_anchor(Some(Anchor::new(1, GENESIS_HASH).unwrap()))
            .finish(None);
        assert_eq!(none.first_broken.map(|b| b.seq), Some(1));
    }

    #[test]
    fn a_check_resumed_at_an_anchor_reads_only_what_follows_it() {
        let payloads: Vec<(String, f64)> = (0..6).map(|i| (format!("r{i}"), i as f64)).collect();
        let chain = build_chain(&payloads);
        let at = |i: usize| Anchor::new(chain[i].seq, &chain[i].receipt_hash).unwrap();
        let resumed = |anchor: Anchor, from: usize| {
            let mut v = Verifier::resume("tenant-a", anchor);
            for r in &chain[from..] {
                v.feed(r);
            }
            v.finish(chain.last().map(|r| (r.seq, r.receipt_hash.as_str())))
        };
        let report = resumed(at(2), 3);
        assert!(report.valid, "{:?}", report.first_broken);
        assert_eq!((report.receipts_checked, report.head_seq), (3, 6));
        // Another hash for seq 3: seq 4 does not link to it.
        let report = resumed(Anchor::new(3, &chain[1].receipt_hash).unwrap(), 3);
        let broken = report.first_broken.unwrap();
        assert_eq!(broken.seq, 4);
        assert!(broken.reason.contains("prev_hash"), "{}", broken.reason);
        // The receipts must begin right after the anchor.
        assert_eq!(resumed(at(1), 3).first_broken.map(|b| b.seq), Some(3));
        // Nothing after the anchor: the chain ends at it, which the head contradicts.
        assert_eq!(resumed(at(5), 6).first_broken, None);
        assert_eq!(resumed(at(4), 6).first_broken.map(|b| b.seq), Some(6));
    }

    #[test]
    fn anchors_are_read_as_seq_colon_hash() {
        let hash = "ab".repeat(32);
        assert_eq!(
            Anchor::parse(&format!("12:{hash}")),
            Ok(Anchor {
                seq: 12,
                hash: hash.clone()
            })
        );
        for bad in [
            format!("0:{hash}"),
            format!("-1:{hash}"),
            format!("x:{hash}"),
            format!("12:{}", hash.to_uppercase()),
            format!("12:{}", &hash[1..]),
            hash.clone(),
        ] {
            assert!(Anchor::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_chain_is_valid() {
        let report = Verifier::new("t").finish(None);
        assert!(report.valid && report.receipts_checked == 0 && report.head_hash == GENESIS_HASH);
    }

    #[test]
    fn anchors_are_read_from_verify_reports_and_tenant_seq_hash_lines() {
        let (h1, h2) = ("a".repeat(64), "b".repeat(64));
        let report = |t: &str, valid: bool, seq: u64, hash: &str| {
            let broken = (!valid).then(|| Break {
                seq: seq + 1,
                reason: "x".into(),
            });
            let r = VerifyReport {
                tenant_id: t.into(),
                valid,
                receipts_checked: seq,
                head_seq: seq,
                head_hash: hash.into(),
                first_broken: broken,
                anchor: Some(Anchor::new(1, &h1).unwrap()),
            };
            serde_json::to_string(&r).unwrap()
        };
        let text = [
            r#"{"backup":"backups/ledger.db","bytes":4096}"#.to_owned(),
            report("t1", true, 12, &h1),
            String::new(),
            format!("t2:3:{h2}"),
            // A broken chain, and an empty one, give no anchor.
            report("t3", false, 4, &h1),
            report("t4", true, 0, GENESIS_HASH),
        ]
        .join("\n");
        let file = read_anchors(text.as_bytes()).unwrap();
        assert_eq!(file.skipped, 2);
        let mut got: Vec<_> = file.anchors.into_iter().collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            [
                ("t1".to_owned(), Anchor::new(12, &h1).unwrap()),
                ("t2".to_owned(), Anchor::new(3, &h2).unwrap())
            ]
        );
        let line_of = |text: &str| match read_anchors(text.as_bytes()) {
            Err(AnchorsError::Line { line, message }) => (line, message),
            other => panic!("{text:?}: {other:?}"),
        };
        for (text, line, says) in [
            (format!("t1:1:{h1}\nt1:2:{h1}"), 2, "named again (line 1)"),
            (
                "\n{\"tenant_id\": \"t1\"}".to_owned(),
                2,
                "not a verification report",
            ),
            ("t1".to_owned(), 1, "\"t1\" is not TENANT:SEQ:HASH"),
            (format!("T1:1:{h1}"), 1, "\"T1\""),
            ("t1:0:00".to_owned(), 1, "seq starts at 1"),
            (format!("t1:1:{}", h1.to_uppercase()), 1, "64 lowercase hex"),
        ] {
            let (at, message) = line_of(&text);
            assert!(
                at == line && message.contains(says),
                "{text:?}: {at} {message}"
            );
        }
    }
}
