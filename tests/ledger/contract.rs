//! The store contract: every backend must pass every check here.

use serde_json::json;
use tai_autonomics::receipts::{
    open_actions_read, verify_chain, Anchor, AppendItem, GovernorSnapshot, Head, LedgerStore,
    OpenAction, Receipt, ReceiptDraft, ReceiptType, StoreError, Verifier,
};

/// A chain of `n` receipts for `tenant` after `prev`, with metadata of every JSON shape.
pub fn chain(tenant: &str, prev: Option<&Receipt>, n: usize) -> Vec<Receipt> {
    let mut out: Vec<Receipt> = Vec::new();
    for i in 0..n {
        let last = out.last().or(prev);
        let meta = json!({
            "input": {"metric": "cpu", "value": 72.5 + i as f64, "timestamp_ms": 1_769_437_845_123u64 + i as u64, "negative": -3},
            "gates": {"entitlement": "pass"},
            "empty": {}, "list": [1, "two", null, {"k": [true, false]}], "none": null,
            "text": "café ☃ \"q\"\n", "tiny": 1e-7, "big": 1e21,
        });
        let d = ReceiptDraft::new(
            tenant,
            if i % 2 == 0 {
                ReceiptType::Transition
            } else {
                ReceiptType::Refusal
            },
            "signal_processed",
            format!("step {i}"),
        )
        .states(
            Some("stable"),
            if i % 3 == 0 { None } else { Some("warning") },
        )
        .metadata(meta);
        out.push(d.seal(
            last.map(|r| (r.seq, r.receipt_hash.as_str())),
            "tai@contract",
            tai_autonomics::clock::now_rfc3339(),
        ));
    }
    out
}

fn items(rs: &[Receipt]) -> Vec<AppendItem> {
    rs.iter().cloned().map(AppendItem::receipt).collect()
}

/// Runs every contract check on `store`, which must be empty. Tenant names are prefixed so a
/// shared backend can be reused.
pub async fn run<S: LedgerStore>(store: &S, prefix: &str) {
    let a = format!("{prefix}a");
    let b = format!("{prefix}b");

    // An empty store knows nothing.
    assert_eq!(store.head(&a).await.unwrap(), None);
    assert!(store.range(&a, 0, 10).await.unwrap().is_empty());
    assert_eq!(
        store
            .get("0190f3c2-7a1b-7c3d-8e4f-0a1b2c3d4e5f")
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.by_message_id("nope").await.unwrap(), None);
    assert_eq!(store.entitlement(&a).await.unwrap(), None);
    store.ping().await.unwrap();

    // A batch mixing two tenants is appended and read back exactly, hashes intact. Row to row,
    // some members change (tenant, type, state_to, reason) and some repeat, which a backend that
    // reuses what it bound for the previous row must get right.
    let ca = chain(&a, None, 3);
    let cb = chain(&b, None, 1);
    let mut batch = items(&ca);
    batch.extend(items(&cb));
    let handed_back = store.append(batch.clone()).await.unwrap();
    assert_eq!(
        handed_back, batch,
        "append hands the committed batch back as given"
    );
    let head = store.head(&a).await.unwrap().unwrap();
    assert_eq!(
        (head.seq, head.hash.as_str()),
        (3, ca[2].receipt_hash.as_str())
    );
    let back = store.range(&a, 0, 10).await.unwrap();
    assert_eq!(
        back,
        ca,
        "{} returns exactly what was appended",
        store.backend()
    );
    for r in &back {
        assert_eq!(
            r.compute_hash(),
            r.receipt_hash,
            "hash recomputed from stored content"
        );
    }
    assert_eq!(store.range(&a, 1, 1).await.unwrap(), vec![ca[1].clone()]);
    for past in [i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        assert!(
            store.range(&a, past, 10).await.unwrap().is_empty(),
            "nothing after seq {past}"
        );
    }
    assert_eq!(
        store.get(&ca[1].receipt_id).await.unwrap().as_ref(),
        Some(&ca[1])
    );
    assert_eq!(
        store.get(&cb[0].receipt_id).await.unwrap().as_ref(),
        Some(&cb[0])
    );
    let tenants = store.tenants(prefix, 10).await.unwrap();
    assert_eq!(tenants, vec![a.clone(), b.clone()]);
    assert_eq!(store.tenants(&a, 10).await.unwrap(), vec![b.clone()]);

    // All or nothing: a batch with one forking receipt writes nothing at all.
    let next = chain(&a, Some(&ca[2]), 1);
    let fork = chain(&a, Some(&ca[0]), 1); // a second seq 2
    let mut bad = items(&next);
    bad.extend(items(&fork));
    assert!(
        matches!(store.append(bad).await, Err(StoreError::Conflict(_))),
        "a fork is a conflict"
    );
    assert_eq!(
        store.head(&a).await.unwrap().unwrap().seq,
        3,
        "nothing of the failed batch was written"
    );
    assert_eq!(store.get(&next[0].receipt_id).await.unwrap(), None);

    // A message id is stored with its receipt; the same id again is a conflict.
    let with_msg = chain(&a, Some(&ca[2]), 1);
    store
        .append(vec![AppendItem::receipt(with_msg[0].clone())
            .with_message_id(Some("msg-1/x".into()))
            .with_entitlement(Some(
                json!({"status": "active", "packs": ["base"], "roles": [], "customer_id": null, "n": 1}),
            ))])
        .await
        .unwrap();
    assert_eq!(
        store.by_message_id("msg-1/x").await.unwrap().as_ref(),
        Some(&with_msg[0])
    );
    // Looked up together with ids that have no receipt: only the recorded one is found.
    let ids = [
        "nope".to_string(),
        "msg-1/x".to_string(),
        "msg-2".to_string(),
    ];
    let found = store.by_message_ids(&ids).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found.get("msg-1/x"), Some(&with_msg[0]));
    assert!(store.by_message_ids(&[]).await.unwrap().is_empty());
    let again = chain(&a, Some(&with_msg[0]), 1);
    let dup = AppendItem::receipt(again[0].clone()).with_message_id(Some("msg-1/x".into()));
    assert!(matches!(
        store.append(vec![dup]).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.head(&a).await.unwrap().unwrap().seq, 4);

    // Entitlement records: upserted with a receipt, kept by appends without one, replaced.
    assert_eq!(
        store.entitlement(&a).await.unwrap(),
        Some(
            json!({"status": "active", "packs": ["base"], "roles": [], "customer_id": null, "n": 1})
        )
    );
    store.append(items(&again)).await.unwrap();
    assert_eq!(
        store.entitlement(&a).await.unwrap().unwrap()["status"],
        "active"
    );
    let later = chain(&a, Some(&again[0]), 1);
    store
        .append(vec![AppendItem::receipt(later[0].clone())
            .with_entitlement(Some(json!({"status": "suspended"})))])
        .await
        .unwrap();
    assert_eq!(
        store.entitlement(&a).await.unwrap(),
        Some(json!({"status": "suspended"}))
    );
    assert_eq!(store.entitlement(&b).await.unwrap(), None);
    // Read together, as the writer loads a tenant whose decisions name their record.
    assert_eq!(
        store.head_and_entitlement(&a).await.unwrap(),
        (
            store.head(&a).await.unwrap(),
            store.entitlement(&a).await.unwrap()
        )
    );
    assert!(store.head_and_entitlement(&a).await.unwrap().0.is_some());
    assert_eq!(
        store.head_and_entitlement("nobody").await.unwrap(),
        (None, None)
    );

    // The whole chain verifies.
    let all = store.range(&a, 0, 100).await.unwrap();
    let mut v = Verifier::new(&a);
    assert!(all.iter().all(|r| v.feed(r)));
    let h = store.head(&a).await.unwrap().unwrap();
    assert!(v.finish(Some((h.seq, &h.hash))).valid);
    assert_eq!(all.len(), 6);

    // A governor's snapshot: entitlement record, head, and the last receipt whose state_to is a
    // governor state; entitlement receipts and an entitlement refusal (which records the
    // entitlement's status there) are passed over.
    const STATES: &[&str] = &["boot", "stable", "warning", "intervening", "refusing"];
    let c = format!("{prefix}c");
    let empty = store.governor_snapshot(&c, STATES).await.unwrap();
    assert_eq!(empty, GovernorSnapshot::default());
    let seal = |prev: Option<&Receipt>, kind, event: &str, to: &str| {
        ReceiptDraft::new(&c, kind, event, "contract")
            .states(Some(to), Some(to))
            .seal(
                prev.map(|r| (r.seq, r.receipt_hash.as_str())),
                "tai@contract",
                tai_autonomics::clock::now_rfc3339(),
            )
    };
    let warned = seal(None, ReceiptType::Transition, "signal_processed", "warning");
    let granted = seal(Some(&warned), ReceiptType::Entitlement, "grant", "active");
    let refused = seal(
        Some(&granted),
        ReceiptType::Refusal,
        "entitlement_refused",
        "active",
    );
    store
        .append(vec![
            AppendItem::receipt(warned.clone()),
            AppendItem::receipt(granted).with_entitlement(Some(json!({"status": "active"}))),
            AppendItem::receipt(refused.clone()),
        ])
        .await
        .unwrap();
    let snap = store.governor_snapshot(&c, STATES).await.unwrap();
    assert_eq!(snap.entitlement, Some(json!({"status": "active"})));
    assert_eq!(
        snap.head,
        Some(Head {
            seq: 3,
            hash: refused.receipt_hash.clone()
        })
    );
    assert_eq!(snap.last_state, Some(warned));

    // Open actions: tenants whose last action receipt started one. An action ended in a later
    // batch, or cancelled by an entitlement change in the same one, is closed; a postponed
    // signal after a start leaves it open. The backend's index agrees with reading every chain.
    assert!(store.open_actions(10).await.unwrap().is_empty());
    let steps = |t: &str, events: &[&str]| {
        let mut out: Vec<Receipt> = Vec::new();
        for event in events {
            let prev = out.last().map(|r| (r.seq, r.receipt_hash.as_str()));
            let d = ReceiptDraft::new(t, ReceiptType::Transition, *event, "contract")
                .states(Some("stable"), Some("intervening"));
            out.push(d.seal(prev, "tai@contract", tai_autonomics::clock::now_rfc3339()));
        }
        out
    };
    let (d, e, f, g) = (
        format!("{prefix}open-d"),
        format!("{prefix}open-e"),
        format!("{prefix}open-f"),
        format!("{prefix}open-g"),
    );
    let started_e = steps(&e, &["action_started"]);
    let mut batch = items(&steps(&d, &["signal_warning", "action_started"]));
    batch.extend(items(&started_e));
    batch.extend(items(&steps(&f, &["action_started", "signal_postponed"])));
    batch.extend(items(&steps(
        &g,
        &["action_started", "entitlement_changed"],
    )));
    store.append(batch).await.unwrap();
    let tenants =
        |open: Vec<OpenAction>| -> Vec<String> { open.into_iter().map(|o| o.tenant_id).collect() };
    let first = store.open_actions(10).await.unwrap();
    assert_eq!(first[1].started_at, started_e[0].timestamp);
    assert_eq!(tenants(first), [d.clone(), e.clone(), f.clone()]);
    let ended = ReceiptDraft::new(&e, ReceiptType::Transition, "action_completed", "contract")
        .seal(
            Some((1, started_e[0].receipt_hash.as_str())),
            "tai@contract",
            tai_autonomics::clock::now_rfc3339(),
        );
    store
        .append(vec![AppendItem::receipt(ended)])
        .await
        .unwrap();
    let open = store.open_actions(10).await.unwrap();
    assert_eq!(open, open_actions_read(store, 10).await.unwrap());
    assert_eq!(tenants(open), [d.clone(), f.clone()]);
    assert_eq!(tenants(store.open_actions(1).await.unwrap()), [d]);

    // Verification where the store reads: pages of 4 and 2, then nothing; the same report.
    let (v, first) = store
        .verify_page(&a, 0, 4, Verifier::new(&a))
        .await
        .unwrap();
    assert_eq!((first.rows, first.last_seq, v.checked()), (4, Some(4), 4));
    let (v, second) = store.verify_page(&a, 4, 4, v).await.unwrap();
    assert_eq!((second.rows, second.last_seq, v.checked()), (2, Some(6), 6));
    let (v, rest) = store.verify_page(&a, 6, 4, v).await.unwrap();
    assert_eq!((rest.rows, rest.last_seq), (0, None));
    assert!(v.finish(Some((h.seq, &h.hash))).valid);
    let report = verify_chain(store, &a, None, 4, |_| {}).await.unwrap();
    assert!(report.valid && report.receipts_checked == 6, "{report:?}");
    // Against an anchor: the recorded hash at seq 5 holds, another hash there or a seq past the
    // head does not (pages of 4, so the anchor lies on the second page).
    let fifth = store.range(&a, 4, 1).await.unwrap().remove(0);
    for (anchor, broken_at) in [
        (Anchor::new(5, &fifth.receipt_hash).unwrap(), None),
        (Anchor::new(5, &fifth.prev_hash).unwrap(), Some(5)),
        (Anchor::new(9, &fifth.receipt_hash).unwrap(), Some(7)),
    ] {
        let report = verify_chain(store, &a, Some(anchor.clone()), 4, |_| {})
            .await
            .unwrap();
        assert_eq!(report.first_broken.map(|b| b.seq), broken_at, "{anchor:?}");
        assert_eq!(report.anchor, Some(anchor));
    }
    // A verifier that expects another tenant stops at the first row.
    let (v, wrong) = store
        .verify_page(&a, 0, 4, Verifier::new(&b))
        .await
        .unwrap();
    assert!(v.is_broken() && wrong.rows == 1, "{wrong:?}");

    // Metadata of any JSON a client may have a receipt record (tool arguments) reads back
    // exactly and verifies, beside a receipt with ordinary metadata in the same batch: keys a
    // document store might refuse (empty, `__…__`, 1,600 bytes long, with NUL or dots), arrays
    // in arrays, integers past i64, negative zero, the largest doubles, NUL in text.
    let d = format!("{prefix}d");
    let long_key = "k".repeat(1600);
    let awkward: serde_json::Value = serde_json::from_str(&format!(
        r#"{{"args": {{"": 1, "__name__": 2, "__x__": [[1, [2]], []], "{long_key}": 3, "a.b": 4,
            "k\u0000": "v\u0000", "big": 18446744073709551615, "small": -9223372036854775809,
            "neg_zero": -0.0, "max": 1.7976931348623157e308, "deep": [[[[{{"x": [[]]}}]]]]}}}}"#
    ))
    .unwrap();
    let plain = chain(&d, None, 1);
    let odd = ReceiptDraft::new(&d, ReceiptType::Refusal, "tool_call_refused", "contract")
        .metadata(awkward)
        .seal(
            Some((plain[0].seq, &plain[0].receipt_hash)),
            "tai@contract",
            tai_autonomics::clock::now_rfc3339(),
        );
    let mut batch = items(&plain);
    batch.push(AppendItem::receipt(odd.clone()));
    store.append(batch).await.unwrap();
    assert_eq!(
        store.get(&odd.receipt_id).await.unwrap().as_ref(),
        Some(&odd)
    );
    let back = store.range(&d, 0, 10).await.unwrap();
    assert_eq!(back, vec![plain[0].clone(), odd]);
    let report = verify_chain(store, &d, None, 10, |_| {}).await.unwrap();
    assert!(report.valid && report.receipts_checked == 2, "{report:?}");
}
