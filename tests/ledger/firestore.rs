//! The contract on the official Firestore emulator, two stores racing on one tenant, and a
//! writer whose commit loses such a race.
//! `tools/test.sh` starts the emulator and exports FIRESTORE_EMULATOR_HOST.

use std::time::Duration;

use tai_autonomics::receipts::firestore::FirestoreStore;
use tai_autonomics::receipts::writer::{LedgerError, NewReceipt};
use tai_autonomics::receipts::{
    verify_chain, AnyStore, AppendItem, LedgerStore, Receipt, ReceiptDraft, ReceiptType,
    StoreError, Verifier,
};

fn project() -> String {
    assert!(
        std::env::var("FIRESTORE_EMULATOR_HOST").is_ok_and(|h| !h.is_empty()),
        "FIRESTORE_EMULATOR_HOST is not set: run the tests through tools/test.sh, which starts the Firestore emulator"
    );
    // Data is separated by project id: one project per test run and test.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "tai-test-{}-{}-{n}",
        std::process::id(),
        tai_autonomics::clock::now_ms()
    )
}

#[actix_web::test]
async fn firestore_passes_the_store_contract_on_the_emulator() {
    let store = FirestoreStore::connect(&project()).await.unwrap();
    super::contract::run(&store, "c-").await;
}

#[actix_web::test]
async fn deep_metadata_is_refused_to_its_caller_alone_on_the_emulator() {
    let store = FirestoreStore::connect(&project()).await.unwrap();
    super::writer::deep_metadata_is_refused_to_its_caller_alone(
        tai_autonomics::receipts::AnyStore::Firestore(store),
    )
    .await;
}

#[actix_web::test]
async fn two_writers_racing_on_one_tenant_make_one_chain_and_one_clean_conflict() {
    let p = project();
    let one = FirestoreStore::connect(&p).await.unwrap();
    let two = FirestoreStore::connect(&p).await.unwrap();
    let genesis = super::contract::chain("race", None, 1);
    one.append(vec![AppendItem::receipt(genesis[0].clone())])
        .await
        .unwrap();
    for round in 0..5 {
        // Both instances read the same head and append the same next seq.
        let head = one.range("race", 0, 1000).await.unwrap().pop().unwrap();
        let mine = super::contract::chain("race", Some(&head), 1);
        let theirs = super::contract::chain("race", Some(&head), 1);
        let (a, b) = futures_join(
            one.append(vec![AppendItem::receipt(mine[0].clone())]),
            two.append(vec![AppendItem::receipt(theirs[0].clone())]),
        )
        .await;
        let oks = [a.is_ok(), b.is_ok()].iter().filter(|x| **x).count();
        assert_eq!(
            oks, 1,
            "round {round}: exactly one writer wins ({a:?} / {b:?})"
        );
        let err = if a.is_err() { a } else { b };
        assert!(
            matches!(err, Err(StoreError::Conflict(_))),
            "the loser gets a clean conflict: {err:?}"
        );
    }
    let all = one.range("race", 0, 1000).await.unwrap();
    assert_eq!(all.len(), 6);
    let mut v = Verifier::new("race");
    assert!(all.iter().all(|r| v.feed(r)), "one chain, no fork");
    let head = one.head("race").await.unwrap().unwrap();
    assert!(v.finish(Some((head.seq, &head.hash))).valid);
}

/// Polls two futures to completion concurrently on the current task.
async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    (ra.unwrap(), rb.unwrap())
}

/// Appends the receipt after the head of `tenant`'s chain, as another instance sharing the
/// project would, recording the governor state `to` (`None`: a receipt of no state).
async fn append_as_another_instance(
    other: &FirestoreStore,
    tenant: &str,
    to: Option<&str>,
    message_id: Option<&str>,
) -> Receipt {
    let head = other.head(tenant).await.unwrap();
    let kind = match to {
        Some(_) => ReceiptType::Transition,
        None => ReceiptType::Refusal,
    };
    let r = ReceiptDraft::new(tenant, kind, "by_the_other_instance", "r")
        .states(to.map(|_| "stable"), to)
        .seal(
            head.as_ref().map(|h| (h.seq, h.hash.as_str())),
            "tai@other",
            tai_autonomics::clock::now_rfc3339(),
        );
    let item = AppendItem::receipt(r.clone()).with_message_id(message_id.map(str::to_owned));
    other.append(vec![item]).await.unwrap();
    r
}

/// One writer's commit of several tenants' callers that loses a race to another instance on
/// one tenant fails no caller of another tenant: the batch is sealed again from the store. The
/// raced tenant's caller follows what the other instance wrote, or gets its conflict if a
/// governor decision of the other instance overtook it; a message id the other instance
/// recorded answers with that receipt.
#[actix_web::test]
async fn a_commit_that_loses_a_race_on_one_tenant_fails_no_other_tenants_caller() {
    use tai_autonomics::governor::State;
    let p = project();
    let store = AnyStore::Firestore(FirestoreStore::connect(&p).await.unwrap());
    let other = FirestoreStore::connect(&p).await.unwrap();
    // Callers that arrive within the linger share one commit; the other instance's appends
    // land well inside it.
    let (ledger, root) = super::writer::writer_with(
        store.clone(),
        512,
        1000,
        Duration::from_secs(1),
        State::NAMES,
    )
    .await;
    let decision = |tenant: &str, follows: u64| NewReceipt {
        follows: Some(follows),
        ..super::writer::draft(tenant, 0)
    };
    let together = |calls: Vec<NewReceipt>| {
        let handles: Vec<_> = (calls.into_iter())
            .map(|c| {
                let l = ledger.clone();
                actix_web::rt::spawn(async move { l.append(vec![c]).await })
            })
            .collect();
        async move {
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await.unwrap().map(|mut v| v.pop().unwrap()));
            }
            out
        }
    };
    let beside = ["beside-0", "beside-1", "beside-2"];
    // The writer knows each chain's tip and last governor decision (seq 1).
    let calls = (beside.iter().chain(&["raced"]))
        .map(|t| decision(t, 0))
        .collect();
    for r in together(calls).await {
        assert_eq!(r.unwrap().seq, 1);
    }

    // The other instance records no governor state: the writer's tip is stale, the decision
    // it seals is not.
    append_as_another_instance(&other, "raced", None, None).await;
    let calls = (beside.iter().chain(&["raced"]))
        .map(|t| decision(t, 1))
        .collect();
    let got = together(calls).await;
    let seqs: Vec<u64> = (got.iter())
        .map(|r| r.as_ref().expect("every caller is committed").seq)
        .collect();
    assert_eq!(seqs, [2, 2, 2, 3], "{got:?}");

    // The writer learns the tip again; then the other instance's governor decides, and this
    // writer's next caller for that tenant is behind.
    assert_eq!(
        ledger.append_one(decision("raced", 3)).await.unwrap().seq,
        4
    );
    append_as_another_instance(&other, "raced", Some("warning"), None).await;
    let calls = (beside.iter().map(|t| decision(t, 2)))
        .chain([decision("raced", 4)])
        .collect();
    let mut got = together(calls).await;
    let raced = got.pop().unwrap();
    assert!(
        matches!(&raced, Err(LedgerError::Conflict(m)) if m.contains("at seq 5, not at 4")),
        "{raced:?}"
    );
    for r in got {
        assert_eq!(r.expect("a caller beside the race is committed").seq, 3);
    }

    // A message id the other instance records while this writer's caller with it lingers:
    // the caller gets that receipt (found again after the lost race, or at once), and nothing
    // of its own is written.
    let mut delivery = super::writer::draft("delivered-here", 0);
    delivery.message_id = Some("m-1".into());
    let l = ledger.clone();
    let first = actix_web::rt::spawn(async move { l.append_one(delivery).await });
    let theirs = append_as_another_instance(&other, "delivered-there", None, Some("m-1")).await;
    let beside_0 = ledger.append_one(decision("beside-0", 3)).await.unwrap();
    assert_eq!(beside_0.seq, 4);
    let answered = first.await.unwrap().unwrap();
    assert_eq!(answered.receipt_id, theirs.receipt_id);
    assert_eq!(store.head("delivered-here").await.unwrap(), None);

    for t in beside.iter().chain(&["raced", "delivered-there"]) {
        let report = verify_chain(&store, t, None, 1000, |_| {}).await.unwrap();
        assert!(report.valid, "{t}: {report:?}");
    }
    assert_eq!(store.head("raced").await.unwrap().unwrap().seq, 5);
    root.shutdown().await;
}

/// A receipt document that cannot be read back as a receipt (a member of the wrong type, as a
/// foreign writer leaves it) breaks the chain at its seq: the page is read again one receipt
/// at a time to find it, and the receipts before it are verified.
#[actix_web::test]
async fn a_receipt_document_that_cannot_be_read_back_breaks_the_chain_at_its_seq() {
    let project = project();
    let store = FirestoreStore::connect(&project).await.unwrap();
    let mut prev: Option<Receipt> = None;
    for i in 0..6 {
        let r = ReceiptDraft::new(
            "t",
            ReceiptType::Transition,
            "signal_processed",
            format!("r{i}"),
        )
        .states(Some("stable"), Some("stable"))
        .seal(
            prev.as_ref().map(|p| (p.seq, p.receipt_hash.as_str())),
            "tai@test",
            tai_autonomics::clock::now_rfc3339(),
        );
        store
            .append(vec![AppendItem::receipt(r.clone())])
            .await
            .unwrap();
        prev = Some(r);
    }
    let host = std::env::var("FIRESTORE_EMULATOR_HOST").unwrap();
    let doc = format!(
        "http://{host}/v1/projects/{project}/databases/(default)/documents/tenants/t/receipts/{:020}?updateMask.fieldPaths=type",
        4
    );
    let res = awc::Client::default()
        .patch(doc)
        .insert_header(("Authorization", "Bearer owner"))
        .send_json(&serde_json::json!({"fields": {"type": {"integerValue": "7"}}}))
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert!(matches!(
        store.range("t", 3, 1).await,
        Err(StoreError::Corrupt(_))
    ));

    let report = verify_chain(&store, "t", None, 1000, |_| {}).await.unwrap();
    assert!(!report.valid);
    let broken = report.first_broken.expect("a break");
    assert_eq!(
        (broken.seq, report.receipts_checked),
        (4, 3),
        "{}",
        broken.reason
    );
    assert!(
        broken.reason.contains("cannot be read"),
        "{}",
        broken.reason
    );
}
