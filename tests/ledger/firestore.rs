//! The contract on the official Firestore emulator, and two writers racing on one tenant.
//! `tools/test.sh` starts the emulator and exports FIRESTORE_EMULATOR_HOST.

use tai_autonomics::receipts::firestore::FirestoreStore;
use tai_autonomics::receipts::{AppendItem, LedgerStore, StoreError, Verifier};

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
