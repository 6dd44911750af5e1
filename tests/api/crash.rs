//! Crash safety on SQLite: the real binary is SIGKILLed in the middle of a stream of durable
//! appends, restarted on the same file, and every acknowledged receipt is there, nothing is
//! duplicated and every chain verifies.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const TENANTS: usize = 8;

async fn post(
    client: &awc::Client,
    url: &str,
    body: &serde_json::Value,
) -> Option<(u16, serde_json::Value)> {
    let mut res = client.post(url).send_json(body).await.ok()?;
    let bytes = res.body().await.ok()?;
    Some((res.status().as_u16(), serde_json::from_slice(&bytes).ok()?))
}

#[actix_web::test]
async fn every_acknowledged_receipt_survives_a_sigkill_and_chains_verify() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TAI_RATE_LIMIT__PER_SECOND", "1000000"),
        ("TAI_RATE_LIMIT__BURST", "1000000"),
    ];
    let mut bin = start_binary_in(dir.path(), &env);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .finish();
    for t in 0..TENANTS {
        let (s, _) = post(
            &client,
            &bin.url("/marketplace"),
            &json!({"tenant_id": format!("crash-{t}"), "entitlement_id": "e", "action": "grant"}),
        )
        .await
        .unwrap();
        assert_eq!(s, 200);
    }

    // Stream suspend/resume pairs on every tenant; remember each acknowledged receipt.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..TENANTS {
        let (acked, count, stop, url, client) = (
            acked.clone(),
            count.clone(),
            stop.clone(),
            bin.url("/marketplace"),
            client.clone(),
        );
        tasks.push(actix_web::rt::spawn(async move {
            let tenant = format!("crash-{t}");
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let action = if i % 2 == 0 { "suspend" } else { "resume" };
                match post(
                    &client,
                    &url,
                    &json!({"tenant_id": tenant, "entitlement_id": "e", "action": action}),
                )
                .await
                {
                    Some((200, body)) => {
                        acked.lock().unwrap().push((
                            tenant.clone(),
                            body["receipt"]["receipt_id"].as_str().unwrap().to_owned(),
                        ));
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Some((status, body)) => panic!("unexpected answer {status}: {body}"),
                    None => break, // the server is gone
                }
            }
        }));
    }
    eventually(
        "a few hundred acknowledged appends",
        Duration::from_secs(30),
        || {
            let n = count.load(Ordering::Relaxed);
            async move { (n >= 300).then_some(()) }
        },
    )
    .await;
    bin.signal("KILL");
    assert_eq!(
        bin.wait_exit(Duration::from_secs(5)),
        None,
        "killed by a signal, no exit code"
    );
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    // Restart on the same ledger file.
    let bin = start_binary_in(dir.path(), &env);
    let mut stored_ids = HashSet::new();
    for t in 0..TENANTS {
        let mut in_chain = 0u64;
        let tenant = format!("crash-{t}");
        let mut res = client
            .get(bin.url(&format!("/v1/tenants/{tenant}/receipts/verify")))
            .send()
            .await
            .unwrap();
        let report: serde_json::Value = res.json().await.unwrap();
        assert_eq!(report["valid"], true, "{report}");
        let mut after = 0;
        loop {
            let mut res = client
                .get(bin.url(&format!(
                    "/v1/tenants/{tenant}/receipts?after_seq={after}&limit=1000"
                )))
                .send()
                .await
                .unwrap();
            let page: serde_json::Value = res.json().limit(16 << 20).await.unwrap();
            for r in page["receipts"].as_array().unwrap() {
                assert!(
                    stored_ids.insert(r["receipt_id"].as_str().unwrap().to_owned()),
                    "no receipt is stored twice"
                );
                in_chain += 1;
            }
            match page["next_after_seq"].as_u64() {
                Some(n) => after = n,
                None => break,
            }
        }
        assert_eq!(
            report["receipts_checked"].as_u64(),
            Some(in_chain),
            "every stored receipt is in the verified chain"
        );
    }
    let missing: Vec<_> = acked
        .iter()
        .filter(|(_, id)| !stored_ids.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged receipts lost: {missing:?}"
    );
    drop(bin);
}
