//! Entitlements over HTTP: the marketplace lifecycle (on SQLite and on the Firestore emulator),
//! two instances changing one tenant's record on the Firestore emulator, entitlement events
//! with their errors, signed marketplace requests, unknown tenants and the per-tenant rate
//! limit.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use tai_autonomics::receipts::LedgerStore;

use crate::helpers::*;

fn grant(tenant: &str) -> Value {
    json!({"tenant_id": tenant, "entitlement_id": "ent-1", "action": "grant", "customer_id": "cust-9"})
}

fn action(tenant: &str, a: &str) -> Value {
    json!({"tenant_id": tenant, "entitlement_id": "ent-1", "action": a, "reason": "billing"})
}

async fn lifecycle(app: &TestApp) {
    let (s, body) = app.post_json("/marketplace", &grant("acme-corp")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["entitlement"]["sku"].as_str()),
        (Some("active"), Some("base"))
    );
    assert_eq!(
        (
            body["receipt"]["type"].as_str(),
            body["receipt"]["state_from"].clone(),
            body["receipt"]["state_to"].as_str()
        ),
        (Some("entitlement"), Value::Null, Some("active"))
    );

    let (s, body) = app
        .post_json("/marketplace", &action("acme-corp", "suspend"))
        .await;
    assert_eq!(
        (
            s,
            body["receipt"]["state_from"].as_str(),
            body["receipt"]["state_to"].as_str()
        ),
        (200, Some("active"), Some("suspended"))
    );
    let (s, body) = app
        .post_json("/marketplace", &action("acme-corp", "suspend"))
        .await;
    assert_eq!(
        (s, body["code"].as_str(), body["receipt"]["type"].as_str()),
        (409, Some("entitlement_conflict"), Some("refusal")),
        "an invalid transition is 409 with its receipt"
    );
    let (s, _) = app
        .post_json("/marketplace", &action("acme-corp", "resume"))
        .await;
    assert_eq!(s, 200);
    // A revoke that names another entitlement (a late message about an earlier purchase) is
    // refused with its receipt, and the tenant's own entitlement stays active.
    let mut stale = action("acme-corp", "revoke");
    stale["entitlement_id"] = json!("ent-0");
    let (s, body) = app.post_json("/marketplace", &stale).await;
    assert_eq!(
        (
            s,
            body["code"].as_str(),
            body["receipt"]["metadata"]["code"].as_str()
        ),
        (
            409,
            Some("entitlement_conflict"),
            Some("entitlement_mismatch")
        ),
        "{body}"
    );
    let (_, body) = app.get_json("/v1/tenants/acme-corp/entitlement").await;
    assert_eq!(body["entitlement"]["status"], "active", "{body}");
    let (s, body) = app
        .post_json("/marketplace", &action("acme-corp", "revoke"))
        .await;
    assert_eq!((s, body["status"].as_str()), (200, Some("revoked")));
    for a in ["grant", "resume", "suspend", "revoke"] {
        let (s, body) = app.post_json("/marketplace", &action("acme-corp", a)).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (409, Some("entitlement_conflict")),
            "revoke is final ({a})"
        );
    }
    let (s, body) = app.get_json("/v1/tenants/acme-corp/receipts/verify").await;
    assert_eq!(
        (
            s,
            body["valid"].as_bool(),
            body["receipts_checked"].as_u64()
        ),
        (200, Some(true), Some(10)),
        "{body}"
    );
    let (_, page) = app.get_json("/v1/tenants/acme-corp/receipts").await;
    let events: Vec<&str> = page["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        &events[..6],
        [
            "entitlement_granted",
            "entitlement_suspended",
            "entitlement_refused",
            "entitlement_resumed",
            "entitlement_refused",
            "entitlement_revoked"
        ]
    );
    let (s, body) = app.get_json("/v1/tenants/acme-corp/entitlement").await;
    assert_eq!(
        (
            s,
            body["entitlement"]["status"].as_str(),
            body["active"].as_bool()
        ),
        (200, Some("revoked"), Some(false))
    );
}

#[actix_web::test]
async fn the_marketplace_lifecycle_on_sqlite_leaves_a_verifying_chain() {
    let app = spawn_app(|_| {}).await;
    lifecycle(&app).await;
}

#[actix_web::test]
async fn the_marketplace_lifecycle_on_the_firestore_emulator_leaves_a_verifying_chain() {
    let project = firestore_project("tai-api");
    let app = spawn_app(on_firestore(&project)).await;
    lifecycle(&app).await;
}

#[actix_web::test]
async fn an_instance_that_cached_a_record_another_instance_changed_decides_on_the_stored_one() {
    // Arrange: two instances on one Firestore project. A grants (and caches the record); B
    // suspends, which A's cache does not hear of.
    let project = firestore_project("tai-ent2");
    let a = spawn_app(on_firestore(&project)).await;
    let b = spawn_app(on_firestore(&project)).await;
    assert_eq!(a.post_json("/marketplace", &grant("shared")).await.0, 200);
    let (s, body) = b
        .post_json("/marketplace", &action("shared", "suspend"))
        .await;
    assert_eq!(s, 200, "{body}");

    // Act: A resumes (its cache says `active`, where a resume is refused); then B applies an
    // event (its cache says `suspended`).
    let (resumed, resume) = a
        .post_json("/marketplace", &action("shared", "resume"))
        .await;
    let (evented, event) = b
        .post_json(
            "/v1/tenants/shared/entitlement/events",
            &json!({"event": "pack_enabled", "value": "enterprise"}),
        )
        .await;

    // Assert: each was decided on the record as stored: the resume is accepted, and the event
    // keeps the tenant active instead of bringing back the suspension B had cached. The
    // chain's entitlement receipts each start from the status the one before left.
    assert_eq!(resumed, 200, "{resume}");
    assert_eq!(evented, 200, "{event}");
    assert_eq!(event["entitlement"]["status"], "active", "{event}");
    let (_, page) = a.get_json("/v1/tenants/shared/receipts?limit=100").await;
    let receipts = page["receipts"].as_array().unwrap();
    let story: Vec<(&str, &Value, &Value)> = receipts
        .iter()
        .map(|r| {
            (
                r["event_type"].as_str().unwrap(),
                &r["state_from"],
                &r["state_to"],
            )
        })
        .collect();
    assert_eq!(
        story,
        [
            ("entitlement_granted", &Value::Null, &json!("active")),
            (
                "entitlement_suspended",
                &json!("active"),
                &json!("suspended")
            ),
            ("entitlement_resumed", &json!("suspended"), &json!("active")),
            ("pack_enabled", &json!("active"), &json!("active")),
        ]
    );
    // A's cache holds the record of its own resume; read through A, the record is the one
    // stored, with the pack that B enabled.
    let (_, read) = a.get_json("/v1/tenants/shared/entitlement").await;
    assert_eq!(read["entitlement"]["status"], "active", "{read}");
    assert!(
        (read["entitlement"]["packs"].as_array().unwrap()).contains(&json!("enterprise")),
        "{read}"
    );
}

#[actix_web::test]
async fn entitlement_events_change_the_record_or_are_refused_with_a_reason() {
    let app = spawn_app(|_| {}).await;
    app.post_json("/marketplace", &grant("acme")).await;
    let ev = |e: &str, v: &str| json!({"event": e, "value": v});
    let (s, body) = app
        .post_json(
            "/v1/tenants/acme/entitlement/events",
            &ev("pack_enabled", "enterprise"),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert!(body["entitlement"]["tools"]
        .as_array()
        .unwrap()
        .contains(&json!("audit_log")));
    let cases = [
        (
            ev("pack_enabled", "enterprise"),
            409,
            "entitlement_conflict",
        ),
        (
            ev("pack_disabled", "professional"),
            409,
            "entitlement_conflict",
        ),
        (
            ev("iam_role_removed", "write_rollback"),
            409,
            "entitlement_conflict",
        ),
        (ev("pack_enabled", "platinum"), 400, "invalid_request"),
        (ev("sku_changed", "gold"), 400, "invalid_request"),
        (ev("iam_role_added", "root"), 400, "invalid_request"),
        (
            json!({"event": "drop", "value": "x"}),
            400,
            "invalid_request",
        ),
        (json!({"event": "pack_enabled"}), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let (s, r) = app
            .post_json("/v1/tenants/acme/entitlement/events", &body)
            .await;
        assert_eq!((s, r["code"].as_str()), (status, Some(code)), "{body}");
        assert_eq!(
            r["receipt"].is_object(),
            status == 409,
            "governed refusals carry their receipt: {r}"
        );
    }
    let (s, body) = app
        .post_json(
            "/v1/tenants/acme/entitlement/events",
            &ev("sku_changed", "enterprise"),
        )
        .await;
    assert_eq!(
        (s, body["entitlement"]["tools"].as_array().unwrap().len()),
        (200, 7)
    );
    let (s, body) = app
        .post_json(
            "/v1/tenants/acme/entitlement/events",
            &ev("iam_role_removed", "admin"),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        app.get_json("/v1/tenants/acme/receipts/verify").await.1["valid"],
        true
    );
}

#[actix_web::test]
async fn unknown_tenants_are_404_and_nothing_is_stored() {
    let app = spawn_app(|_| {}).await;
    for (path, body) in [
        ("/marketplace", action("ghost", "suspend")),
        (
            "/v1/tenants/ghost/entitlement/events",
            json!({"event": "pack_enabled", "value": "enterprise"}),
        ),
    ] {
        let (s, r) = app.post_json(path, &body).await;
        assert_eq!(
            (s, r["code"].as_str()),
            (404, Some("tenant_not_found")),
            "{path}"
        );
    }
    assert_eq!(app.get_json("/v1/tenants/ghost/entitlement").await.0, 404);
    assert_eq!(
        app.state.tree.ledger.store().head("ghost").await.unwrap(),
        None,
        "nothing stored"
    );
    assert_eq!(
        app.state
            .tree
            .ledger
            .store()
            .entitlement("ghost")
            .await
            .unwrap(),
        None
    );
    let (s, r) = app
        .post_json(
            "/marketplace",
            &json!({"tenant_id": "Bad Id", "entitlement_id": "e", "action": "grant"}),
        )
        .await;
    assert_eq!((s, r["code"].as_str()), (400, Some("invalid_tenant_id")));
    // Malformed, impossible dates, and a time already past.
    for expires_at in [
        "soon",
        "2027-02-30T00:00:00Z",
        "2027-02-29T00:00:00Z",
        "2020-01-01T00:00:00Z",
    ] {
        let (s, r) = app.post_json("/marketplace", &json!({"tenant_id": "t", "entitlement_id": "e", "action": "grant", "expires_at": expires_at})).await;
        assert_eq!(
            (s, r["code"].as_str()),
            (400, Some("invalid_request")),
            "{expires_at}"
        );
    }
    // Only a grant applies an expiry: a suspension that carries a past one is a suspension
    // (the time recorded in its receipt's request), and the record keeps its own expiry.
    assert_eq!(app.post_json("/marketplace", &grant("past")).await.0, 200);
    let (s, r) = app
        .post_json(
            "/marketplace",
            &json!({"tenant_id": "past", "entitlement_id": "ent-1", "action": "suspend",
                    "expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r["receipt"]["metadata"]["request"]["expires_at"],
        "2020-01-01T00:00:00.000Z"
    );
    let (_, body) = app.get_json("/v1/tenants/past/entitlement").await;
    assert_eq!(
        (
            &body["entitlement"]["status"],
            &body["entitlement"]["expires_at"]
        ),
        (&json!("suspended"), &Value::Null),
        "{body}"
    );
}

#[actix_web::test]
async fn an_expired_entitlement_is_inactive() {
    let app = spawn_app(|_| {}).await;
    let mut g = grant("short");
    let soon = tai_autonomics::clock::now_ms() + 300;
    g["expires_at"] = json!(tai_autonomics::clock::rfc3339_millis(soon));
    assert_eq!(app.post_json("/marketplace", &g).await.0, 200);
    let (_, body) = app.get_json("/v1/tenants/short/entitlement").await;
    assert_eq!(body["active"], true, "{body}");
    let body = eventually("expired", std::time::Duration::from_secs(5), || async {
        let (_, body) = app.get_json("/v1/tenants/short/entitlement").await;
        (body["active"] == false).then_some(body)
    })
    .await;
    assert_eq!(
        body["entitlement"]["status"], "active",
        "the record keeps its status"
    );
    // An active entitlement is granted once; an expired one, again (a renewal), and the
    // renewal's expiry replaces the one that passed (here: none).
    let (s, body) = app.post_json("/marketplace", &grant("short")).await;
    assert_eq!(s, 200, "{body}");
    let (_, body) = app.get_json("/v1/tenants/short/entitlement").await;
    assert_eq!(
        (&body["active"], &body["entitlement"]["expires_at"]),
        (&json!(true), &Value::Null),
        "{body}"
    );
    let (s, body) = app.post_json("/marketplace", &grant("short")).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (409, Some("entitlement_conflict")),
        "{body}"
    );
}

#[actix_web::test]
async fn signed_marketplace_requests_pass_and_every_bad_signature_is_401() {
    use base64::Engine as _;
    let app = spawn_app(|s| {
        s.marketplace.verify = true;
        s.marketplace.public_key_file = keys_dir().join("rsa_public.pem").display().to_string();
        s.marketplace.issuer = "cloud-marketplace".into();
        s.marketplace.audience = "tai-autonomics".into();
        s.marketplace.leeway_secs = 0;
    })
    .await;
    let now = (tai_autonomics::clock::now_ms() / 1000) as i64;
    let claims = |tenant: &str| json!({"iss": "cloud-marketplace", "aud": "tai-autonomics", "exp": now + 300, "tenant_id": tenant, "entitlement_id": "ent-1", "action": "grant"});
    let body = |tenant: &str, sig: String| {
        let mut b = grant(tenant);
        b["signature"] = json!(sig);
        b
    };
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());

    let (s, r) = app
        .post_json(
            "/marketplace",
            &body(
                "signed",
                sign(&claims("signed"), Algorithm::RS256, "rsa_private.pem"),
            ),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r["receipt"]["metadata"]["request"]["signature_verified"],
        true
    );

    let mut expired = claims("t1");
    expired["exp"] = json!(now - 600);
    let mut wrong_aud = claims("t1");
    wrong_aud["aud"] = json!("someone-else");
    let mut wrong_iss = claims("t1");
    wrong_iss["iss"] = json!("mallory");
    let good = sign(&claims("t1"), Algorithm::RS256, "rsa_private.pem");
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut evil = claims("t1");
    evil["action"] = json!("grant");
    evil["tenant_id"] = json!("t1");
    evil["exp"] = json!(now + 9999);
    parts[1] = b64(&evil);
    let tampered = parts.join(".");
    let cases: Vec<(&str, Value)> = vec![
        ("missing", grant("t1")),
        (
            "expired",
            body("t1", sign(&expired, Algorithm::RS256, "rsa_private.pem")),
        ),
        (
            "wrong audience",
            body("t1", sign(&wrong_aud, Algorithm::RS256, "rsa_private.pem")),
        ),
        (
            "wrong issuer",
            body("t1", sign(&wrong_iss, Algorithm::RS256, "rsa_private.pem")),
        ),
        (
            "alg none",
            body(
                "t1",
                format!(
                    "{}.{}.",
                    b64(&json!({"alg": "none", "typ": "JWT"})),
                    b64(&claims("t1"))
                ),
            ),
        ),
        (
            "HS256 with the public key as secret",
            body(
                "t1",
                sign(&claims("t1"), Algorithm::HS256, "rsa_public.pem"),
            ),
        ),
        (
            "wrong signer",
            body(
                "t1",
                sign(&claims("t1"), Algorithm::RS256, "other_rsa_private.pem"),
            ),
        ),
        (
            "claims for another tenant",
            body(
                "t1",
                sign(&claims("t2"), Algorithm::RS256, "rsa_private.pem"),
            ),
        ),
        ("tampered payload", body("t1", tampered)),
    ];
    for (name, b) in cases {
        let (s, r) = app.post_json("/marketplace", &b).await;
        assert_eq!(
            (s, r["code"].as_str()),
            (401, Some("invalid_signature")),
            "{name}: {r}"
        );
    }
    assert_eq!(
        app.state.tree.ledger.store().head("t1").await.unwrap(),
        None,
        "refused requests store nothing"
    );
}

#[actix_web::test]
async fn buckets_of_made_up_tenants_are_swept_once_there_are_too_many() {
    let app = spawn_app(|s| {
        s.rate_limit.per_second = 1000;
        s.rate_limit.max_tracked_tenants = 50;
    })
    .await;
    // Each unknown tenant takes a bucket before its 404.
    for i in 0..200 {
        let (status, _) = app
            .get_json(&format!("/v1/tenants/made-up-{i}/entitlement"))
            .await;
        assert_eq!(status, 404);
    }
    assert!(
        app.state.tree.limits.len() > 50,
        "{}",
        app.state.tree.limits.len()
    );
    // Full again after a millisecond, they are idle: swept within a second or two, not a minute.
    eventually("idle buckets are swept", Duration::from_secs(5), || async {
        (app.state.tree.limits.len() <= 50).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_burst_over_the_bucket_gets_429_and_the_tenant_recovers() {
    let app = spawn_app(|s| {
        s.rate_limit.per_second = 2;
        s.rate_limit.burst = 3;
    })
    .await;
    app.post_json("/marketplace", &grant("busy")).await; // takes one token
    app.post_json("/marketplace", &grant("calm")).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let res = app
            .client
            .get(app.url("/v1/tenants/busy/entitlement"))
            .send()
            .await
            .unwrap();
        if res.status() == 429 {
            retry_after = res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        }
        statuses.push(res.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "429 carries Retry-After"
    );
    assert_eq!(
        app.get_json("/v1/tenants/calm/entitlement").await.0,
        200,
        "other tenants are not limited"
    );
    eventually("the bucket refills", Duration::from_secs(5), || async {
        (app.get_json("/v1/tenants/busy/entitlement").await.0 == 200).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn entitlement_changes_and_reads_are_answered_within_the_decision_deadline() {
    let app = spawn_app(|s| {
        s.chaos.enabled = true;
        s.governance.decision_timeout_ms = 300;
    })
    .await;
    let (s, _) = app.post_json("/marketplace", &grant("known")).await;
    assert_eq!(s, 200);
    let (s, _) = app
        .post_json("/v1/chaos/ledger", &json!({"stall_ms": 2000}))
        .await;
    assert_eq!(s, 202);
    // The change waits on the stalled ledger; its caller is answered at the deadline.
    let (s, body) = app.post_json("/marketplace", &grant("newcomer")).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (503, Some("decision_pending")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("may yet"),
        "{body}"
    );
    // A read queued behind it is answered at the deadline too, and says why.
    let (s, body) = app.get_json("/v1/tenants/known/entitlement").await;
    assert_eq!(
        (s, body["code"].as_str()),
        (503, Some("decision_pending")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("still being recorded"),
        "{body}"
    );
    // As the first answer said, the grant is recorded once the ledger is back.
    eventually("the grant is recorded", Duration::from_secs(5), || async {
        let (s, body) = app.get_json("/v1/tenants/newcomer/entitlement").await;
        (s == 200 && body["entitlement"]["status"] == "active").then_some(())
    })
    .await;
}

#[actix_web::test]
async fn an_idempotency_key_makes_one_entitlement_change_and_a_repeat_gets_its_receipt() {
    let app = spawn_app(|_| {}).await;
    let head = || async {
        app.get_json("/v1/tenants/ik-ent/receipts").await.1["head_seq"]
            .as_u64()
            .unwrap()
    };
    let (s, replayed, first) = keyed(&app, "/marketplace", "g-1", grant("ik-ent")).await;
    assert_eq!(
        (s, replayed, &first["decision"]),
        (200, false, &json!("accept")),
        "{first}"
    );
    assert_eq!(first["receipt"]["metadata"]["idempotency_key"], "g-1");
    // A repeat of a key is answered with the first request's receipt, and decides nothing.
    let replays = |path: &'static str, key: &'static str, body: Value, first: Value| {
        let app = &app;
        async move {
            let (s, replayed, again) = keyed(app, path, key, body).await;
            assert_eq!(
                (s, replayed, &again["decision"]),
                (200, true, &json!("duplicate")),
                "{again}"
            );
            assert_eq!(
                again["receipt"]["receipt_id"],
                first["receipt"]["receipt_id"]
            );
        }
    };
    // A retried grant is the first one's answer, not a 409 for granting twice.
    replays("/marketplace", "g-1", grant("ik-ent"), first).await;
    assert_eq!(head().await, 1);
    let pack = json!({"event": "pack_enabled", "value": "professional"});
    let path = "/v1/tenants/ik-ent/entitlement/events";
    let (s, _, enabled) = keyed(&app, path, "p-1", pack.clone()).await;
    assert_eq!(s, 200, "{enabled}");
    replays(path, "p-1", pack.clone(), enabled).await;
    // A new key is a new request: enabling the pack twice is refused, with its receipt, and
    // that refusal is what a repeat of its key gets.
    let (s, _, refused) = keyed(&app, path, "p-2", pack.clone()).await;
    assert_eq!(
        (s, &refused["code"]),
        (409, &json!("entitlement_conflict")),
        "{refused}"
    );
    replays(path, "p-2", pack, refused).await;
    // A used key with another request is 422, whatever route it comes to, and changes nothing.
    let mut other_grant = grant("ik-ent");
    other_grant["sku"] = json!("enterprise");
    let reused = [
        (
            "/marketplace",
            "g-1",
            other_grant,
            "for a marketplace request with another sku",
        ),
        (
            path,
            "g-1",
            json!({"event": "sku_changed", "value": "enterprise"}),
            "for a marketplace request, not an entitlement event",
        ),
        (
            path,
            "p-1",
            json!({"event": "pack_enabled", "value": "enterprise"}),
            "for an entitlement event with another value",
        ),
        (
            "/v1/tenants/ik-ent/signals",
            "p-1",
            json!({"metric": "cpu", "value": 1.0}),
            "for an entitlement event, not a signal",
        ),
    ];
    for (path, key, body, says) in reused {
        let (s, replayed, refused) = keyed(&app, path, key, body).await;
        assert_eq!(
            (s, replayed, refused["code"].as_str()),
            (422, false, Some("idempotency_key_reused")),
            "{path} {key}: {refused}"
        );
        let message = refused["message"].as_str().unwrap();
        assert!(message.contains(says), "{path} {key}: {message}");
    }
    let (_, record) = app.get_json("/v1/tenants/ik-ent/entitlement").await;
    assert_eq!(record["entitlement"]["sku"], "base", "{record}");
    assert_eq!(
        head().await,
        3,
        "grant, pack enabled, refusal: nothing for the repeats"
    );
}

/// `GET /v1/tenants`: every tenant with a chain, in id order and paged, each with its
/// entitlement's standing and its chain's head, read from the store.
#[actix_web::test]
async fn operators_list_every_tenant_with_its_standing_page_by_page() {
    tenant_list(spawn_app(|_| {}).await).await;
}

#[actix_web::test]
async fn operators_list_every_tenant_on_the_firestore_emulator_too() {
    tenant_list(spawn_app(on_firestore(&firestore_project("tenants"))).await).await;
}

async fn tenant_list(app: TestApp) {
    for t in ["t-b", "t-a", "t-c"] {
        crate::helpers::grant(&app, t).await;
    }
    let suspend =
        serde_json::json!({"tenant_id": "t-b", "entitlement_id": "e", "action": "suspend"});
    assert_eq!(app.post_json("/marketplace", &suspend).await.0, 200);
    let (status, first) = app.get_json("/v1/tenants?limit=2").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        first,
        serde_json::json!({"tenants": [
            {"tenant_id": "t-a", "status": "active", "sku": "base", "active": true, "head_seq": 1},
            {"tenant_id": "t-b", "status": "suspended", "sku": "base", "active": false, "head_seq": 2},
        ], "next_after": "t-b"})
    );
    let (_, second) = app.get_json("/v1/tenants?limit=2&after=t-b").await;
    assert_eq!(second["tenants"][0]["tenant_id"], "t-c");
    assert_eq!(second["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(second["next_after"], serde_json::Value::Null);
    // Any cursor orders as a string would: one past every id, and one of any length.
    let (_, none) = app.get_json("/v1/tenants?after=zzz").await;
    assert_eq!(none["tenants"], serde_json::json!([]));
    let long = format!("/v1/tenants?after=t-a{}", "a".repeat(5000));
    let (status, page) = app.get_json(&long).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["tenants"][0]["tenant_id"], "t-b");
    // The same checks as every paged list.
    for bad in [
        "/v1/tenants?limit=0",
        "/v1/tenants?limit=x",
        "/v1/tenants?cursor=t-a",
    ] {
        let (status, body) = app.get_json(bad).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_request")),
            "{bad}"
        );
    }
}
