//! Governors end to end on the real application (SQLite on disk; one entitlement cycle, and two
//! instances sharing one tenant, on the Firestore emulator): the signal path with the eval
//! executor, entitlement loss and return, decisions overtaken by a change, governors that
//! another instance's governor overtook, operator reset, a crash under load, hibernation, and
//! the bad-input table.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tai_autonomics::receipts::LedgerStore;

use crate::helpers::*;

async fn signal(app: &TestApp, tenant: &str, value: f64) -> (u16, Value) {
    app.post_json(
        &format!("/v1/tenants/{tenant}/signals"),
        &json!({"metric": "cpu_utilization", "value": value}),
    )
    .await
}

async fn governor_state(app: &TestApp, tenant: &str) -> String {
    app.get_json(&format!("/v1/governors/{tenant}")).await.1["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[actix_web::test]
async fn signals_50_70_85_go_stable_warning_then_an_action_the_eval_executor_completes() {
    let app = spawn_app(|_| {}).await;
    grant(&app, "acme-corp").await;
    let (s, b) = signal(&app, "acme-corp", 50.0).await;
    assert_eq!(
        (
            s,
            b["decision"].as_str(),
            b["state"].as_str(),
            b["postponed"].as_bool()
        ),
        (200, Some("accept"), Some("stable"), Some(false)),
        "{b}"
    );
    let (_, b) = signal(&app, "acme-corp", 70.0).await;
    assert_eq!(
        (
            b["state"].as_str(),
            b["receipt"]["event_type"].as_str(),
            b["receipt"]["reason"].as_str()
        ),
        (
            Some("warning"),
            Some("signal_warning"),
            Some("value 70 >= warning threshold 60")
        )
    );
    let (_, b) = signal(&app, "acme-corp", 85.0).await;
    assert_eq!(
        (b["state"].as_str(), b["receipt"]["event_type"].as_str()),
        (Some("intervening"), Some("action_started"))
    );
    eventually(
        "the eval executor completes the action",
        Duration::from_secs(5),
        || async { (governor_state(&app, "acme-corp").await == "stable").then_some(()) },
    )
    .await;
    assert_eq!(
        events(&app, "acme-corp").await,
        [
            "entitlement_granted",
            "entitlement_verified",
            "signal_processed",
            "signal_warning",
            "action_started",
            "action_completed"
        ]
    );
    let (_, report) = app.get_json("/v1/tenants/acme-corp/receipts/verify").await;
    assert_eq!(report["valid"], true);
    let text = app.get_text("/metrics").await.1;
    assert!(
        text.contains("tai_actions_attempted_total{type=\"scale_up\"}")
            && text.contains("tai_signals_received_total"),
        "governor metrics exported"
    );
}

#[actix_web::test]
async fn suspend_makes_the_governor_refuse_and_resume_brings_it_back() {
    let app = spawn_app(|_| {}).await;
    grant(&app, "t1").await;
    signal(&app, "t1", 10.0).await;
    let (s, _) = app
        .post_json(
            "/marketplace",
            &json!({"tenant_id": "t1", "entitlement_id": "e", "action": "suspend"}),
        )
        .await;
    assert_eq!(s, 200);
    eventually(
        "the governor hears of the suspension",
        Duration::from_secs(5),
        || async { (governor_state(&app, "t1").await == "refusing").then_some(()) },
    )
    .await;
    let (s, b) = signal(&app, "t1", 10.0).await;
    assert_eq!(
        (s, b["code"].as_str(), b["receipt"]["event_type"].as_str()),
        (409, Some("governor_refusing"), Some("signal_refused"))
    );
    let (s, b) = app
        .post_json("/v1/governors/t1/tool-calls", &json!({"tool": "health"}))
        .await;
    assert_eq!(
        (s, b["receipt"]["event_type"].as_str()),
        (409, Some("tool_call_refused"))
    );
    app.post_json(
        "/marketplace",
        &json!({"tenant_id": "t1", "entitlement_id": "e", "action": "resume"}),
    )
    .await;
    eventually("resume brings it back", Duration::from_secs(5), || async {
        (governor_state(&app, "t1").await == "stable").then_some(())
    })
    .await;
    let ev = events(&app, "t1").await;
    assert!(
        ev.contains(&"entitlement_changed".to_owned())
            && ev.contains(&"entitlement_reactivated".to_owned()),
        "{ev:?}"
    );
    assert_eq!(
        app.get_json("/v1/tenants/t1/receipts/verify").await.1["valid"],
        true
    );
}

#[actix_web::test]
async fn a_signal_decided_as_its_tenant_is_suspended_is_decided_again_and_refused() {
    // Arrange: a running governor, and a suspension on its way to the ledger (stalled) that
    // the governor has not heard of: the Entitlements actor tells it once it is durable.
    let _counted = OVERTAKING.lock().await;
    let app = spawn_app(|s| s.chaos.enabled = true).await;
    grant(&app, "t9").await;
    assert_eq!(signal(&app, "t9", 10.0).await.0, 200);
    let (s, _) = app
        .post_json("/v1/chaos/ledger", &json!({"stall_ms": 400}))
        .await;
    assert_eq!(s, 202);
    let suspend = {
        let client = app.client.clone();
        let url = app.url("/marketplace");
        actix_web::rt::spawn(async move {
            let res = client
                .post(url)
                .send_json(&json!({"tenant_id": "t9", "entitlement_id": "e", "action": "suspend"}))
                .await
                .unwrap();
            res.status().as_u16()
        })
    };
    eventually(
        "the suspension waits on the ledger",
        Duration::from_secs(5),
        || async { (app.state.tree.ledger.queued() == 1).then_some(()) },
    )
    .await;

    // Act: a signal, decided on the record the governor holds (still active).
    let (s, b) = signal(&app, "t9", 10.0).await;

    // Assert: the decision was not recorded after the suspension; the governor learned it,
    // moved to `refusing`, and refused the signal.
    assert_eq!(suspend.await.unwrap(), 200);
    assert_eq!(
        (
            s,
            b["code"].as_str(),
            b["receipt"]["event_type"].as_str(),
            b["receipt"]["state_from"].as_str()
        ),
        (
            409,
            Some("governor_refusing"),
            Some("signal_refused"),
            Some("refusing")
        ),
        "{b}"
    );
    let receipts: Vec<&str> = b["receipts"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["event_type"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(receipts, ["entitlement_changed", "signal_refused"], "{b}");
    let ev = events(&app, "t9").await;
    let at = ev
        .iter()
        .position(|e| e == "entitlement_suspended")
        .unwrap();
    assert_eq!(
        ev[at..],
        [
            "entitlement_suspended",
            "entitlement_changed",
            "signal_refused"
        ],
        "{ev:?}"
    );
    let (_, page) = app.get_json("/v1/tenants/t9/receipts").await;
    assert!(
        page["receipts"].as_array().unwrap()[at + 1..]
            .iter()
            .all(|r| r["metadata"]["gates"]["entitlement"] != "pass"),
        "{page}"
    );
    let text = app.get_text("/metrics").await.1;
    assert!(metric(&text, "tai_decisions_superseded_total").unwrap_or(0.0) >= 1.0);
    assert_eq!(
        app.get_json("/v1/tenants/t9/receipts/verify").await.1["valid"],
        true
    );
}

/// A governor through suspension, resumption and restarts: each rebuilt governor's record
/// must be the one the ledger holds, so no decision is overtaken (and decided twice).
async fn entitlement_cycle_overtakes_nothing(app: &TestApp) {
    let _counted = OVERTAKING.lock().await;
    let overtaken = || async {
        let text = app.get_text("/metrics").await.1;
        metric(&text, "tai_decisions_superseded_total").unwrap_or(0.0)
    };
    let before = overtaken().await;
    grant(app, "cyc").await;
    let mut stamp = vec![signal(app, "cyc", 65.0).await.0];
    let marketplace =
        |action: &str| json!({"tenant_id": "cyc", "entitlement_id": "e", "action": action});
    for round in 0..2 {
        for (action, state) in [("suspend", "refusing"), ("resume", "stable")] {
            let (s, _) = app.post_json("/marketplace", &marketplace(action)).await;
            assert_eq!(s, 200, "{action}");
            eventually(state, Duration::from_secs(10), || async {
                (governor_state(app, "cyc").await == state).then_some(())
            })
            .await;
            if action == "suspend" {
                stamp.push(signal(app, "cyc", 10.0).await.0);
            }
        }
        // Rebuilt from the store: the record it reads is fingerprinted as the ledger has it.
        let (s, _) = app
            .post_json("/v1/chaos/governors/cyc/crash", &json!({}))
            .await;
        assert_eq!(s, 202, "round {round}");
        let next = eventually("answered again", Duration::from_secs(10), || async {
            let (s, _) = signal(app, "cyc", 10.0).await;
            (s != 503).then_some(s)
        })
        .await;
        stamp.push(next);
    }
    assert_eq!(stamp, [200, 409, 200, 409, 200]);
    assert_eq!(overtaken().await, before, "no decision was overtaken");
    assert_eq!(
        app.get_json("/v1/tenants/cyc/receipts/verify").await.1["valid"],
        true
    );
}

#[actix_web::test]
async fn a_governor_rebuilt_on_sqlite_holds_the_record_the_ledger_holds() {
    let app = spawn_app(|s| s.chaos.enabled = true).await;
    entitlement_cycle_overtakes_nothing(&app).await;
}

#[actix_web::test]
async fn a_governor_rebuilt_on_the_firestore_emulator_holds_the_record_the_ledger_holds() {
    let project = firestore_project("tai-gov");
    let app = spawn_app(move |s| {
        s.chaos.enabled = true;
        s.ledger.backend = tai_autonomics::config::LedgerBackend::Firestore;
        s.firestore.project_id = project;
    })
    .await;
    entitlement_cycle_overtakes_nothing(&app).await;
}

#[actix_web::test]
async fn a_suspension_made_through_one_instance_stops_the_other_instances_governor() {
    // Arrange: two instances on one Firestore project, each with a running governor for the
    // same tenant.
    let _counted = OVERTAKING.lock().await;
    let project = firestore_project("tai-two");
    let a = spawn_app(on_firestore(&project)).await;
    let b = spawn_app(on_firestore(&project)).await;
    grant(&a, "both").await;
    assert_eq!(signal(&a, "both", 10.0).await.0, 200);
    let (s, body) = signal(&b, "both", 10.0).await;
    assert_eq!(s, 200, "{body}");

    // Act: suspended through A; B hears nothing of it. (A's cached head is stale after B's
    // receipts: its first try may be a clean conflict, 503, and the retry succeeds.)
    let suspend = json!({"tenant_id": "both", "entitlement_id": "e", "action": "suspend"});
    let mut s = a.post_json("/marketplace", &suspend).await.0;
    if s == 503 {
        s = a.post_json("/marketplace", &suspend).await.0;
    }
    assert_eq!(s, 200);

    // Assert: B's next decision is not recorded on the record it held. Its cached head is
    // stale first (a clean conflict); it reloads its governor from the chain and decides again,
    // and the suspension refuses the signal. Whichever governor recorded the move to
    // `refusing` first (A's, told of the change, or B's, deciding), the other one finds it in
    // the chain: the move is recorded once.
    let (s, first) = signal(&b, "both", 10.0).await;
    let (s, b2) = if s == 503 {
        signal(&b, "both", 10.0).await
    } else {
        (s, first)
    };
    let receipts: Vec<&str> = b2["receipts"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["event_type"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        (s, b2["code"].as_str(), receipts.last().copied()),
        (409, Some("governor_refusing"), Some("signal_refused")),
        "{b2}"
    );
    eventually("A's governor refuses", Duration::from_secs(10), || async {
        (governor_state(&a, "both").await == "refusing").then_some(())
    })
    .await;
    let chain = events(&a, "both").await;
    assert_eq!(
        chain[4..],
        [
            "entitlement_suspended",
            "entitlement_changed",
            "signal_refused"
        ],
        "{chain:?}"
    );
    assert_eq!(
        b.get_json("/v1/tenants/both/receipts/verify").await.1["valid"],
        true
    );
}

/// A governor that comes back on one instance (here after a crash; hibernation is the same)
/// after the other instance's governor decided for its tenant knows more of the chain than
/// its own instance's writer, which still holds the tip it last wrote: its next decision is
/// recorded, not refused as behind.
#[actix_web::test]
async fn a_governor_back_after_the_other_instance_decided_is_not_refused_by_its_writers_old_tip() {
    // Arrange: the first instance's writer knows the tenant's tip from its own decision; then
    // the other instance decides, and the first instance's governor starts again from the
    // chain as it now stands.
    let project = firestore_project("tai-back");
    let a = spawn_app(|s: &mut tai_autonomics::config::Settings| {
        on_firestore(&project)(s);
        s.chaos.enabled = true;
    })
    .await;
    let b = spawn_app(on_firestore(&project)).await;
    grant(&a, "back").await;
    assert_eq!(signal(&a, "back", 50.0).await.1["state"], "stable");
    assert_eq!(signal(&b, "back", 70.0).await.1["state"], "warning");
    let back = crash_governor(&a, "back", 1).await;
    assert_eq!(back["state"], "warning", "{back}");

    // Act, twice: the second decision follows the first one's.
    let first = signal(&a, "back", 50.0).await;
    let second = signal(&a, "back", 70.0).await;
    // Then the other instance suspends the tenant, and the first instance's governor starts
    // again with the new record, which its writer has not seen.
    let suspend = json!({"tenant_id": "back", "entitlement_id": "e", "action": "suspend"});
    assert_eq!(b.post_json("/marketplace", &suspend).await.0, 200);
    crash_governor(&a, "back", 2).await;
    let refused = signal(&a, "back", 50.0).await;

    // Assert
    assert_eq!(
        (first.0, &first.1["state"]),
        (200, &json!("stable")),
        "{}",
        first.1
    );
    assert_eq!(
        (second.0, &second.1["state"]),
        (200, &json!("warning")),
        "{}",
        second.1
    );
    assert_eq!(
        (refused.0, refused.1["code"].as_str()),
        (409, Some("governor_refusing")),
        "{}",
        refused.1
    );
    // The governor's receipts (the entitlement's carry the entitlement's status) each start
    // in the state the one before left.
    let (_, page) = b.get_json("/v1/tenants/back/receipts?limit=1000").await;
    let governed: Vec<&Value> = (page["receipts"].as_array().unwrap().iter())
        .filter(|r| r["type"] != "entitlement")
        .collect();
    for pair in governed.windows(2) {
        assert_eq!(pair[1]["state_from"], pair[0]["state_to"], "{}", pair[1]);
    }
    assert_eq!(
        a.get_json("/v1/tenants/back/receipts/verify").await.1["valid"],
        true
    );
}

/// `taiea.governor.state` through `/mcp` (the stateless revision: one request, no session).
async fn mcp_governor_state(app: &TestApp, tenant: &str) -> Value {
    const MODERN: &str = "2026-07-28";
    let meta = json!({"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}, "io.modelcontextprotocol/clientInfo": {"name": "tai-tests", "version": "1"}});
    let mut res = (app.client.post(app.url("/mcp")))
        .insert_header(("accept", "application/json, text/event-stream"))
        .insert_header(("mcp-protocol-version", MODERN))
        .insert_header(("mcp-method", "tools/call"))
        .insert_header(("mcp-name", "taiea.governor.state"))
        .send_json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "taiea.governor.state", "arguments": {"tenant_id": tenant}, "_meta": meta}}))
        .await
        .expect("request sent");
    let body: Value = res.json().await.expect("a JSON-RPC answer");
    body["result"]["structuredContent"].clone()
}

#[actix_web::test]
async fn a_governor_read_through_the_other_instance_shows_the_chains_last_decision() {
    // Arrange: both instances run a governor for the tenant, and both show it `stable`.
    let project = firestore_project("tai-read");
    let a = spawn_app(on_firestore(&project)).await;
    let b = spawn_app(on_firestore(&project)).await;
    grant(&a, "read").await;
    assert_eq!(signal(&a, "read", 50.0).await.1["state"], "stable");
    assert_eq!(b.get_json("/v1/governors/read").await.1["state"], "stable");

    // Act: the first instance decides; the state is read through the other one, over HTTP
    // and through MCP's `taiea.governor.state`.
    let (status, decided) = signal(&a, "read", 70.0).await;
    let (read, shown) = b.get_json("/v1/governors/read").await;
    let through_mcp = mcp_governor_state(&b, "read").await;
    let next = signal(&b, "read", 50.0).await;

    // Assert: the other instance shows the decision the chain ends in, and decides from it.
    assert_eq!((status, read), (200, 200), "{decided} {shown}");
    let expected = (
        json!("warning"),
        decided["receipt"]["seq"].clone(),
        decided["receipt"]["receipt_hash"].clone(),
    );
    for view in [&shown, &through_mcp] {
        let got = (
            view["state"].clone(),
            view["seq"].clone(),
            view["head_hash"].clone(),
        );
        assert_eq!(got, expected, "{view}");
    }
    assert_eq!(
        (next.0, &next.1["receipt"]["state_from"]),
        (200, &json!("warning")),
        "{}",
        next.1
    );
}

#[actix_web::test]
async fn a_resumption_through_another_instance_shows_in_the_governors_state_read_here() {
    // Arrange: the tenant's governor runs on the second instance only, which suspends the
    // tenant; the first instance, with no governor to tell, resumes it.
    let project = firestore_project("tai-resume");
    let a = spawn_app(on_firestore(&project)).await;
    let b = spawn_app(on_firestore(&project)).await;
    grant(&a, "back").await;
    assert_eq!(signal(&b, "back", 50.0).await.1["state"], "stable");
    let change = |action| json!({"tenant_id": "back", "entitlement_id": "e", "action": action});
    assert_eq!(b.post_json("/marketplace", &change("suspend")).await.0, 200);
    assert_eq!(governor_state(&b, "back").await, "refusing");
    assert_eq!(a.post_json("/marketplace", &change("resume")).await.0, 200);

    // Act
    let (read, shown) = b.get_json("/v1/governors/back").await;

    // Assert: the governor took in the resumption, recorded what it changes, and shows it.
    assert_eq!(
        (read, &shown["state"], &shown["entitlement_active"]),
        (200, &json!("stable"), &json!(true)),
        "{shown}"
    );
    assert_eq!(
        events(&a, "back").await,
        [
            "entitlement_granted",
            "entitlement_verified",
            "signal_processed",
            "entitlement_suspended",
            "entitlement_changed",
            "entitlement_resumed",
            "entitlement_reactivated"
        ]
    );
    let (_, head) = a.get_json("/v1/tenants/back/receipts/verify").await;
    assert_eq!(
        (&head["valid"], &head["head_seq"], &head["head_hash"]),
        (&json!(true), &shown["seq"], &shown["head_hash"]),
        "{head}"
    );
}

#[actix_web::test]
async fn two_instances_deciding_for_one_tenant_in_turn_keep_one_governors_story() {
    // Arrange: two instances on one Firestore project; each runs a governor for the tenant as
    // soon as a signal reaches it (nothing keeps a tenant on one instance).
    let project = firestore_project("tai-turns");
    let a = spawn_app(on_firestore(&project)).await;
    let b = spawn_app(on_firestore(&project)).await;
    in_turn(&a, &b).await;
}

/// Two services on one SQLite file (the HTTP service and an agent's `mcp-stdio`, say) are two
/// instances on one ledger, as on Firestore: each one's writer commits to the file, and the
/// `(tenant_id, seq)` key refuses the second writer of a seq, whose governor reloads.
#[actix_web::test]
async fn two_services_on_one_sqlite_file_deciding_in_turn_keep_one_governors_story() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared.db");
    let on_shared =
        |s: &mut tai_autonomics::config::Settings| s.ledger.sqlite_path = shared.clone();
    let a = spawn_app(on_shared).await;
    let b = spawn_app(on_shared).await;
    in_turn(&a, &b).await;
}

/// Signals for one tenant alternate between `a` and `b`, two instances on one ledger; the
/// answers and the chain are one governor's.
async fn in_turn(a: &TestApp, b: &TestApp) {
    grant(a, "turns").await;

    // Act: signals alternate between the instances, through `warning`, an action (the eval
    // executor completes it) and back. Each instance's governor is behind the other's
    // decisions every time it is asked.
    let mut answered = Vec::new();
    for (i, value) in [50.0, 70.0, 50.0, 70.0, 85.0, 50.0, 70.0, 10.0]
        .into_iter()
        .enumerate()
    {
        let app = [a, b][i % 2];
        let (s, body) = signal(app, "turns", value).await;
        assert_eq!(s, 200, "signal {i} ({value}): {body}");
        answered.push(body["state"].as_str().unwrap_or_default().to_owned());
        if value == 85.0 {
            eventually("the action completes", Duration::from_secs(10), || async {
                events(a, "turns")
                    .await
                    .contains(&"action_completed".to_owned())
                    .then_some(())
            })
            .await;
        }
    }

    // Assert: every answer is what one governor would have given, the chain holds exactly its
    // receipts, and each decision starts in the state the one before it left.
    assert_eq!(
        answered,
        [
            "stable",
            "warning",
            "stable",
            "warning",
            "intervening",
            "stable",
            "warning",
            "stable"
        ]
    );
    let (_, page) = b.get_json("/v1/tenants/turns/receipts?limit=1000").await;
    let receipts = page["receipts"].as_array().unwrap();
    let decided: Vec<&str> = receipts[1..]
        .iter()
        .map(|r| r["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        decided,
        [
            "entitlement_verified",
            "signal_processed",
            "signal_warning",
            "signal_processed",
            "signal_warning",
            "action_started",
            "action_completed",
            "signal_processed",
            "signal_warning",
            "signal_processed"
        ]
    );
    for pair in receipts[1..].windows(2) {
        assert_eq!(pair[1]["state_from"], pair[0]["state_to"], "{}", pair[1]);
    }
    assert_eq!(
        a.get_json("/v1/tenants/turns/receipts/verify").await.1["valid"],
        true
    );
    // Each instance found the chain moved on by the other and reloaded its governor.
    for app in [a, b] {
        let (_, text) = app.get_text("/metrics").await;
        let reloads = metric(&text, "tai_governor_reloads_total").unwrap_or(0.0);
        assert!(reloads >= 1.0, "reloads: {reloads}");
    }
}

/// (A reset out of a failed or timed-out action: `actions.rs`,
/// `an_action_that_never_reports_times_out_into_refusing_and_reset_recovers`.)
#[actix_web::test]
async fn an_operator_reset_applies_to_a_refusing_governor_of_an_entitled_tenant() {
    let app = spawn_app(|_| {}).await;
    grant(&app, "t2").await;
    signal(&app, "t2", 1.0).await;
    let (s, b) = app.post_json("/v1/governors/t2/reset", &json!({})).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (409, Some("invalid_state")),
        "reset only applies to refusing"
    );
    app.post_json(
        "/marketplace",
        &json!({"tenant_id": "t2", "entitlement_id": "e", "action": "suspend"}),
    )
    .await;
    eventually("refusing", Duration::from_secs(5), || async {
        (governor_state(&app, "t2").await == "refusing").then_some(())
    })
    .await;
    // Suspended: a reset does not stand in for the entitlement (it would be `stable` until its
    // next input moved it straight back); resuming does.
    let (s, b) = app.post_json("/v1/governors/t2/reset", &json!({})).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("invalid_state")), "{b}");
    assert!(b["message"].as_str().unwrap().contains("resume it"), "{b}");
    assert_eq!(governor_state(&app, "t2").await, "refusing");
    app.post_json(
        "/marketplace",
        &json!({"tenant_id": "t2", "entitlement_id": "e", "action": "resume"}),
    )
    .await;
    eventually("stable again", Duration::from_secs(5), || async {
        (governor_state(&app, "t2").await == "stable").then_some(())
    })
    .await;
}

#[actix_web::test]
async fn tool_calls_pass_the_gates_or_are_refused_with_a_receipt() {
    let app = spawn_app(|_| {}).await;
    grant(&app, "t3").await; // base: health, support_model
    let (s, b) = app
        .post_json(
            "/v1/governors/t3/tool-calls",
            &json!({"tool": "support_model", "args": {}}),
        )
        .await;
    assert_eq!(
        (s, b["receipt"]["event_type"].as_str(), b["state"].as_str()),
        (200, Some("tool_call_succeeded"), Some("stable")),
        "{b}"
    );
    assert_eq!(
        b["receipt"]["metadata"]["result"]["support_model"],
        "tiered_enterprise"
    );
    // The tool call was the governor's first input: it left `boot` on the way, on the record.
    let answered: Vec<_> = b["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(answered, ["entitlement_verified", "tool_call_succeeded"]);
    assert_eq!(
        events(&app, "t3").await,
        [
            "entitlement_granted",
            "entitlement_verified",
            "tool_call_succeeded"
        ]
    );
    let (s, b) = app
        .post_json(
            "/v1/governors/t3/tool-calls",
            &json!({"tool": "entitlement_apply", "args": {"customer_id": "c", "feature_key": "f"}}),
        )
        .await;
    assert_eq!(
        (s, b["decision"].as_str(), b["receipt"]["reason"].as_str()),
        (200, Some("refuse"), Some("tool_not_entitled"))
    );
    assert_eq!(
        b["receipt"]["metadata"]["gates"],
        json!({"entitlement": "pass", "tool": "refuse", "preconditions": "skipped"})
    );
}

#[actix_web::test]
async fn a_crash_under_load_gives_prompt_503s_and_loses_or_duplicates_nothing() {
    let app = spawn_app(|s| {
        s.chaos.enabled = true;
        s.rate_limit.per_second = 100_000;
        s.rate_limit.burst = 100_000;
    })
    .await;
    grant(&app, "load").await;
    signal(&app, "load", 10.0).await;
    let before_restarts = metric(
        &app.get_text("/metrics").await.1,
        "tai_supervisor_restarts_total{supervisor=\"governance\"}",
    )
    .unwrap_or(0.0);
    let (ok, unavailable, slowest) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (url, client, ok, unavailable, slowest) = (
            app.url("/v1/tenants/load/signals"),
            app.client.clone(),
            ok.clone(),
            unavailable.clone(),
            slowest.clone(),
        );
        tasks.push(actix_web::rt::spawn(async move {
            for i in 0..40 {
                let t0 = Instant::now();
                let mut res = client
                    .post(&url)
                    .send_json(&json!({"metric": "cpu", "value": ((w * 7 + i) % 59) as f64}))
                    .await
                    .unwrap();
                let _ = res.body().await;
                slowest.fetch_max(t0.elapsed().as_millis() as usize, Ordering::Relaxed);
                match res.status().as_u16() {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    503 => unavailable.fetch_add(1, Ordering::Relaxed),
                    other => panic!("unexpected status {other}"),
                };
            }
        }));
    }
    for _ in 0..3 {
        actix_web::rt::time::sleep(Duration::from_millis(30)).await;
        app.post_json("/v1/chaos/governors/load/crash", &json!({}))
            .await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        slowest.load(Ordering::Relaxed) < 2000,
        "no caller waited on a crashed governor"
    );
    let text = app.get_text("/metrics").await.1;
    assert!(
        metric(
            &text,
            "tai_supervisor_restarts_total{supervisor=\"governance\"}"
        )
        .unwrap_or(0.0)
            >= before_restarts + 1.0,
        "restarts counted"
    );
    // Every 200 is exactly one durable receipt; the chain verifies and the state is rebuilt.
    let ev = events(&app, "load").await;
    let decided = ev
        .iter()
        .filter(|e| e.as_str() == "signal_processed")
        .count();
    assert_eq!(
        decided,
        ok.load(Ordering::Relaxed) + 1,
        "one receipt per accepted signal, none lost or duplicated"
    );
    assert_eq!(
        app.get_json("/v1/tenants/load/receipts/verify").await.1["valid"],
        true
    );
    assert_eq!(governor_state(&app, "load").await, "stable");
}

#[actix_web::test]
async fn an_idle_governor_hibernates_and_returns_with_its_state_and_chain() {
    let app = spawn_app(|s| s.governance.idle_hibernate_secs = 1).await;
    grant(&app, "sleepy").await;
    let (_, b) = signal(&app, "sleepy", 65.0).await;
    assert_eq!(b["state"], "warning");
    let seq = b["receipt"]["seq"].as_u64().unwrap();
    eventually(
        "the governor hibernates",
        Duration::from_secs(10),
        || async {
            app.state
                .tree
                .governors
                .get(&"sleepy".to_owned())
                .is_none()
                .then_some(())
        },
    )
    .await;
    let (_, v) = app.get_json("/v1/governors/sleepy").await;
    assert_eq!(
        (v["state"].as_str(), v["seq"].as_u64()),
        (Some("warning"), Some(seq)),
        "rebuilt from the chain head"
    );
    let (_, b) = signal(&app, "sleepy", 10.0).await;
    assert_eq!(
        (
            b["state"].as_str(),
            b["receipt"]["seq"].as_u64(),
            b["receipt"]["state_from"].as_str()
        ),
        (Some("stable"), Some(seq + 1), Some("warning"))
    );
}

/// Grants `tenant` an entitlement that expires in 3 s, moves its governor to `warning`, and
/// returns once the governor hibernated before the expiry and the expiry has passed with
/// nothing to wake it (no live timer saw the expiry). The app hibernates after 1 s.
async fn asleep_past_expiry(app: &TestApp, tenant: &str) {
    let expires = tai_autonomics::clock::now_ms() + 3000;
    let grant = json!({"tenant_id": tenant, "entitlement_id": "e", "action": "grant",
                       "expires_at": tai_autonomics::clock::rfc3339_millis(expires)});
    let (s, b) = app.post_json("/marketplace", &grant).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(signal(app, tenant, 65.0).await.1["state"], "warning");
    let asleep = || app.state.tree.governors.get(&tenant.to_owned()).is_none();
    eventually("hibernated", Duration::from_secs(10), || async {
        asleep().then_some(())
    })
    .await;
    assert!(
        tai_autonomics::clock::now_ms() < expires,
        "asleep before the expiry, so no live timer saw it"
    );
    eventually("past the expiry", Duration::from_secs(10), || async {
        (tai_autonomics::clock::now_ms() > expires).then_some(())
    })
    .await;
    assert!(asleep(), "nothing woke it meanwhile");
}

#[actix_web::test]
async fn a_governor_woken_after_its_entitlement_expired_is_refusing_at_the_first_look() {
    // Arrange: a tenant whose entitlement expires while its governor hibernates.
    let app = spawn_app(|s| s.governance.idle_hibernate_secs = 1).await;
    asleep_past_expiry(&app, "lapsed").await;

    // Act: the first look wakes it.
    let (_, view) = app.get_json("/v1/governors/lapsed").await;

    // Assert: it already answers as what it is, with the expiry recorded once.
    assert_eq!(
        (view["state"].as_str(), view["entitlement_active"].as_bool()),
        (Some("refusing"), Some(false)),
        "{view}"
    );
    assert_eq!(
        events(&app, "lapsed").await,
        [
            "entitlement_granted",
            "entitlement_verified",
            "signal_warning",
            "entitlement_changed"
        ]
    );
}

#[actix_web::test]
async fn a_suspension_and_a_resume_while_the_governor_hibernates_reach_it_when_it_wakes() {
    let app = spawn_app(|s| s.governance.idle_hibernate_secs = 1).await;
    grant(&app, "napper").await;
    assert_eq!(signal(&app, "napper", 65.0).await.1["state"], "warning");
    let marketplace = |action: &str| serde_json::json!({"tenant_id": "napper", "entitlement_id": "e", "action": action});
    let asleep = || async {
        app.state
            .tree
            .governors
            .get(&"napper".to_owned())
            .is_none()
            .then_some(())
    };

    // Suspended while asleep: the suspension wakes it, and it records the lapse without
    // waiting for an input or a look (the receipts are read, which wakes nothing); then it
    // shows `refusing`, and a signal is refused.
    eventually("hibernated", Duration::from_secs(10), asleep).await;
    let (s, b) = app.post_json("/marketplace", &marketplace("suspend")).await;
    assert_eq!(s, 200, "{b}");
    eventually("the lapse recorded", Duration::from_secs(5), || async {
        let seen = events(&app, "napper").await;
        (seen.last().map(String::as_str) == Some("entitlement_changed")).then_some(())
    })
    .await;
    let (_, view) = app.get_json("/v1/governors/napper").await;
    assert_eq!(view["state"], "refusing", "{view}");
    let (s, b) = signal(&app, "napper", 65.0).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (409, Some("governor_refusing")),
        "{b}"
    );

    // Resumed while asleep (nothing wakes it): the first look finds it stable, and a signal
    // is decided.
    eventually("hibernated again", Duration::from_secs(10), asleep).await;
    let (s, b) = app.post_json("/marketplace", &marketplace("resume")).await;
    assert_eq!(s, 200, "{b}");
    let (_, view) = app.get_json("/v1/governors/napper").await;
    assert_eq!(view["state"], "stable", "{view}");
    assert_eq!(signal(&app, "napper", 65.0).await.1["state"], "warning");

    assert_eq!(
        events(&app, "napper").await,
        [
            "entitlement_granted",
            "entitlement_verified",
            "signal_warning",
            "entitlement_suspended",
            "entitlement_changed",
            "signal_refused",
            "entitlement_resumed",
            "entitlement_reactivated",
            "signal_warning"
        ]
    );
    assert!(
        app.get_json("/v1/tenants/napper/receipts/verify").await.1["valid"]
            .as_bool()
            .unwrap()
    );
}

#[actix_web::test]
async fn a_missed_expiry_that_the_ledger_refuses_at_wake_is_recorded_once_it_recovers() {
    // Arrange: the tenant's entitlement expires while its governor hibernates (a suspension
    // would wake it at once).
    let app = spawn_app(|s| {
        s.governance.idle_hibernate_secs = 1;
        s.chaos.enabled = true;
    })
    .await;
    asleep_past_expiry(&app, "t").await;

    // The governor wakes while every append fails: it cannot record the change yet.
    let (s, b) = app
        .post_json("/v1/chaos/ledger", &serde_json::json!({"fail_ms": 1000}))
        .await;
    assert_eq!(s, 202, "{b}");
    let (s, view) = app.get_json("/v1/governors/t").await;
    assert_eq!(
        (s, view["state"].as_str()),
        (200, Some("warning")),
        "{view}"
    );
    // Its gate still refuses signals meanwhile (503 while nothing can be recorded).
    assert_eq!(signal(&app, "t", 10.0).await.0, 503);

    // Once the ledger takes writes again, the change is recorded, once.
    eventually(
        "refusing after the outage",
        Duration::from_secs(10),
        || async { (app.get_json("/v1/governors/t").await.1["state"] == "refusing").then_some(()) },
    )
    .await;
    let changes = events(&app, "t")
        .await
        .iter()
        .filter(|e| *e == "entitlement_changed")
        .count();
    assert_eq!(changes, 1);
}

#[actix_web::test]
async fn an_input_queued_behind_hibernation_is_decided_by_the_next_governor_not_refused() {
    let app = spawn_app(|s| s.chaos.enabled = true).await;
    grant(&app, "dozy").await;
    assert_eq!(signal(&app, "dozy", 65.0).await.0, 200);
    let g = app.state.tree.governors.get(&"dozy".to_owned()).unwrap();
    // A stalled ledger holds the governor in a decision (its mailbox waits meanwhile).
    let (s, _) = app
        .post_json("/v1/chaos/ledger", &json!({"stall_ms": 800}))
        .await;
    assert_eq!(s, 202);
    let first = {
        let client = app.client.clone();
        let url = app.url("/v1/tenants/dozy/signals");
        actix_web::rt::spawn(async move {
            let mut res = client
                .post(url)
                .send_json(&json!({"metric": "cpu", "value": 66.0}))
                .await
                .unwrap();
            let body: Value = res.json().await.unwrap_or_default();
            (res.status().as_u16(), body["receipt"]["seq"].as_u64())
        })
    };
    eventually(
        "the decision waits on the ledger",
        Duration::from_secs(5),
        || async { (app.state.tree.ledger.queued() == 1).then_some(()) },
    )
    .await;
    // Three idle ticks queue up behind it: the governor hibernates as soon as it is free,
    // with the next signal still in its mailbox.
    for _ in 0..3 {
        g.try_tell(tai_autonomics::governor::Hibernate).unwrap();
    }
    let (status, body) = signal(&app, "dozy", 10.0).await;
    let (first_status, first_seq) = first.await.unwrap();
    assert_eq!(first_status, 200);
    assert_eq!(
        (
            status,
            body["receipt"]["state_from"].as_str(),
            body["receipt"]["seq"].as_u64()
        ),
        (200, Some("warning"), first_seq.map(|s| s + 1)),
        "decided by a governor rebuilt from the chain: {body}"
    );
    // The first one hibernated: its handle reads `restarting` from its exit until its
    // supervisor has taken the exit notice (on a busy machine, after the new governor
    // answered), then `stopped`, never restarted.
    eventually(
        "the first governor's exit taken as a hibernation",
        Duration::from_secs(5),
        || async { (g.state() == supervisors::ChildState::Stopped).then_some(()) },
    )
    .await;
    assert_eq!(g.restarts(), 0, "and never crashed");
    assert_eq!(
        app.get_json("/v1/tenants/dozy/receipts/verify").await.1["valid"],
        true
    );
}

#[actix_web::test]
async fn bad_input_gets_the_precise_4xx_and_nothing_is_stored() {
    let app = spawn_app(|s| s.http.max_body_bytes = 64 * 1024).await;
    grant(&app, "good").await;
    let big = format!("{{\"metric\":\"{}\",\"value\":1}}", "x".repeat(1 << 20));
    // 17 KiB of args, well inside the 64 KiB body limit.
    let wide_args = format!(
        "{{\"tool\":\"audit_log\",\"args\":{{\"note\":\"{}\"}}}}",
        "x".repeat(17 * 1024)
    );
    let long_metric = format!("{{\"metric\":\"{}\",\"value\":1}}", "€".repeat(129));
    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        (
            "malformed",
            "/v1/tenants/good/signals".into(),
            "{\"metric\": ",
            400,
            "invalid_json",
        ),
        (
            "value as string",
            "/v1/tenants/good/signals".into(),
            r#"{"metric":"cpu","value":"72.5"}"#,
            400,
            "invalid_request",
        ),
        (
            "NaN as string",
            "/v1/tenants/good/signals".into(),
            r#"{"metric":"cpu","value":"NaN"}"#,
            400,
            "invalid_request",
        ),
        (
            "Infinity literal",
            "/v1/tenants/good/signals".into(),
            r#"{"metric":"cpu","value":Infinity}"#,
            400,
            "invalid_json",
        ),
        (
            "huge number",
            "/v1/tenants/good/signals".into(),
            r#"{"metric":"cpu","value":1e999}"#,
            400,
            "invalid_json",
        ),
        (
            "missing value",
            "/v1/tenants/good/signals".into(),
            r#"{"metric":"cpu"}"#,
            400,
            "invalid_request",
        ),
        (
            "unknown field",
            "/v1/tenants/good/signals".into(),
            r#"{"metric":"cpu","value":1,"x":2}"#,
            400,
            "invalid_request",
        ),
        (
            "empty metric",
            "/v1/tenants/good/signals".into(),
            r#"{"metric":"","value":1}"#,
            400,
            "invalid_request",
        ),
        (
            "metric of 129 characters",
            "/v1/tenants/good/signals".into(),
            long_metric.as_str(),
            400,
            "invalid_request",
        ),
        (
            "negative timestamp",
            "/v1/tenants/good/signals".into(),
            r#"{"metric":"cpu","value":1,"timestamp_ms":-1}"#,
            400,
            "invalid_request",
        ),
        (
            "1 MB body",
            "/v1/tenants/good/signals".into(),
            big.as_str(),
            413,
            "payload_too_large",
        ),
        (
            "hostile tenant",
            "/v1/tenants/..%2F..%2Fetc/signals".into(),
            r#"{"metric":"cpu","value":1}"#,
            400,
            "invalid_tenant_id",
        ),
        (
            "unicode tenant",
            "/v1/tenants/t%C3%A9nant/signals".into(),
            r#"{"metric":"cpu","value":1}"#,
            400,
            "invalid_tenant_id",
        ),
        (
            "upper-case tenant",
            "/v1/tenants/GOOD/signals".into(),
            r#"{"metric":"cpu","value":1}"#,
            400,
            "invalid_tenant_id",
        ),
        (
            "unknown tenant",
            "/v1/tenants/nobody/signals".into(),
            r#"{"metric":"cpu","value":1}"#,
            404,
            "tenant_not_found",
        ),
        (
            "unknown tool shape",
            "/v1/governors/good/tool-calls".into(),
            r#"{"tool":"DROP TABLE","args":{}}"#,
            400,
            "invalid_request",
        ),
        (
            // A misspelt member is refused rather than ignored (the call would run without
            // the timeout it asked for).
            "tool call with a misspelt member",
            "/v1/governors/good/tool-calls".into(),
            r#"{"tool":"health","timout_ms":5}"#,
            400,
            "invalid_request",
        ),
        (
            "entitlement event with a misspelt member",
            "/v1/tenants/good/entitlement/events".into(),
            r#"{"event":"iam_role_added","value":"admin","reason":"x"}"#,
            400,
            "invalid_request",
        ),
        (
            "args not an object",
            "/v1/governors/good/tool-calls".into(),
            r#"{"tool":"health","args":[1]}"#,
            400,
            "invalid_request",
        ),
        (
            // Nine levels: a receipt recording it would nest past what Firestore stores.
            "args nested too deep",
            "/v1/governors/good/tool-calls".into(),
            r#"{"tool":"audit_log","args":{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":[]}}}}}}}}}"#,
            400,
            "invalid_request",
        ),
        (
            "args over 16 KiB",
            "/v1/governors/good/tool-calls".into(),
            wide_args.as_str(),
            400,
            "invalid_request",
        ),
        (
            "timeout_ms of zero",
            "/v1/governors/good/tool-calls".into(),
            r#"{"tool":"health","timeout_ms":0}"#,
            400,
            "invalid_request",
        ),
        (
            "timeout_ms past 30 s",
            "/v1/governors/good/tool-calls".into(),
            r#"{"tool":"health","timeout_ms":30001}"#,
            400,
            "invalid_request",
        ),
        // serde's derived structs also read a JSON array of their members in order; every
        // body must be an object.
        (
            "signal as an array",
            "/v1/tenants/good/signals".into(),
            r#"["cpu",50,null]"#,
            400,
            "invalid_request",
        ),
        (
            "tool call as an array",
            "/v1/governors/good/tool-calls".into(),
            r#"["health",{},null]"#,
            400,
            "invalid_request",
        ),
        (
            "entitlement event as an array",
            "/v1/tenants/good/entitlement/events".into(),
            r#"["iam_role_added","write_rollback"]"#,
            400,
            "invalid_request",
        ),
        (
            "marketplace revoke as an array",
            "/marketplace".into(),
            r#"["good","e","revoke",null,null,null,null,null]"#,
            400,
            "invalid_request",
        ),
    ];
    for (name, path, body, status, code) in cases {
        let mut res = app
            .client
            .post(app.url(&path))
            .insert_header(("content-type", "application/json"))
            .send_body(body.to_owned())
            .await
            .unwrap();
        let json: Value = res.json().limit(1 << 21).await.unwrap_or(Value::Null);
        assert_eq!(
            (res.status().as_u16(), json["code"].as_str()),
            (status, Some(code)),
            "{name}: {json}"
        );
    }
    let head = app
        .state
        .tree
        .ledger
        .store()
        .head("good")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.seq, 1, "only the grant is stored");
    assert!(
        app.state.tree.governors.get(&"nobody".to_owned()).is_none(),
        "no governor for an unknown tenant"
    );
    assert_eq!(
        app.state.tree.ledger.store().head("nobody").await.unwrap(),
        None
    );
}

/// Text limits count characters, as their messages and the OpenAPI `maxLength` say: 128
/// three-byte characters are a metric (384 bytes), and an entitlement id of 128 of them is
/// granted.
#[actix_web::test]
async fn text_limits_count_characters_not_bytes() {
    let app = spawn_app(|_| {}).await;
    let (s, body) = app
        .post_json(
            "/marketplace",
            &json!({"tenant_id": "wide", "entitlement_id": "€".repeat(128), "action": "grant"}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = app
        .post_json(
            "/v1/tenants/wide/signals",
            &json!({"metric": "€".repeat(128), "value": 1.0}),
        )
        .await;
    assert_eq!(
        (s, body["decision"].as_str()),
        (200, Some("accept")),
        "{body}"
    );
    assert_eq!(
        body["receipt"]["metadata"]["input"]["metric"],
        "€".repeat(128)
    );
}

#[actix_web::test]
async fn running_governors_are_listed_in_pages() {
    let app = spawn_app(|_| {}).await;
    for t in ["pa", "pb", "pc"] {
        grant(&app, t).await;
        signal(&app, t, 1.0).await;
    }
    let (s, page) = app.get_json("/v1/governors?limit=2").await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = page["governors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["tenant_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        (ids, page["next_after"].as_str(), page["total"].as_u64()),
        (vec!["pa", "pb"], Some("pb"), Some(3))
    );
    assert_eq!(page["governors"][0]["governor"]["state"], "stable");
    let (_, rest) = app.get_json("/v1/governors?limit=2&after=pb").await;
    assert_eq!(
        (
            rest["governors"][0]["tenant_id"].as_str(),
            rest["next_after"].is_null()
        ),
        (Some("pc"), true)
    );
}

#[actix_web::test]
async fn an_idempotency_key_makes_one_decision_per_key_and_tenant() {
    let app = spawn_app(|s| {
        s.chaos.enabled = true;
        s.governance.decision_timeout_ms = 200;
    })
    .await;
    grant(&app, "ika").await;
    grant(&app, "ikb").await;
    let head = |t: &'static str| {
        let app = &app;
        async move {
            app.get_json(&format!("/v1/tenants/{t}/receipts")).await.1["head_seq"]
                .as_u64()
                .unwrap()
        }
    };
    let hot = json!({"metric": "cpu", "value": 65.0});
    let (s, replayed, first) = keyed(&app, "/v1/tenants/ika/signals", "k-1", hot.clone()).await;
    assert_eq!(
        (s, replayed, first["decision"].as_str()),
        (200, false, Some("accept"))
    );
    let receipt = &first["receipt"];
    assert_eq!(receipt["metadata"]["idempotency_key"], "k-1", "{receipt}");
    assert!(receipt["metadata"].get("pubsub_message_id").is_none());
    let seq = head("ika").await;

    // The same request with the same key again: the first receipt, nothing decided.
    let (s, replayed, again) = keyed(&app, "/v1/tenants/ika/signals", "k-1", hot.clone()).await;
    assert_eq!(
        (s, replayed, again["decision"].as_str()),
        (200, true, Some("duplicate"))
    );
    assert_eq!(again["receipt"]["receipt_id"], receipt["receipt_id"]);
    assert_eq!(again["state"], "warning");
    // Another request with that key is refused, naming the first, and nothing is decided.
    let reused = [
        (
            "/v1/tenants/ika/signals",
            json!({"metric": "cpu", "value": 10.0}),
            "for a signal with another value",
        ),
        (
            "/v1/tenants/ika/signals",
            json!({"metric": "mem", "value": 65.0}),
            "for a signal with another metric",
        ),
        (
            "/v1/governors/ika/tool-calls",
            json!({"tool": "health"}),
            "for a signal, not a tool call",
        ),
        (
            "/v1/tenants/ika/entitlement/events",
            json!({"event": "pack_enabled", "value": "enterprise"}),
            "for a signal, not an entitlement event",
        ),
    ];
    for (path, body, says) in reused {
        let (s, replayed, refused) = keyed(&app, path, "k-1", body).await;
        assert_eq!(
            (s, replayed, refused["code"].as_str()),
            (422, false, Some("idempotency_key_reused")),
            "{path}: {refused}"
        );
        let message = refused["message"].as_str().unwrap();
        assert!(message.contains(says), "{path}: {message}");
        let first_seq = format!("receipt seq {}", receipt["seq"]);
        assert!(message.contains(&first_seq), "{message}");
    }
    assert_eq!(head("ika").await, seq);
    assert_eq!(governor_state(&app, "ika").await, "warning");
    // Keys are per tenant.
    let (s, replayed, other) = keyed(&app, "/v1/tenants/ikb/signals", "k-1", hot.clone()).await;
    assert_eq!(
        (s, replayed, other["decision"].as_str()),
        (200, false, Some("accept"))
    );

    // A tool call with a key runs once; its repeat leaves the governor where it was.
    let tool = json!({"tool": "health"});
    let (s, _, call) = keyed(&app, "/v1/governors/ika/tool-calls", "t-1", tool.clone()).await;
    assert_eq!(
        (s, call["receipt"]["event_type"].as_str()),
        (200, Some("tool_call_succeeded"))
    );
    let (s, replayed, again) = keyed(&app, "/v1/governors/ika/tool-calls", "t-1", tool).await;
    assert_eq!(
        (s, replayed, again["decision"].as_str()),
        (200, true, Some("duplicate"))
    );
    assert_eq!(
        again["receipt"]["receipt_id"],
        call["receipt"]["receipt_id"]
    );
    // The tool's receipt records its arguments, and the key names them too.
    assert_eq!(call["receipt"]["metadata"]["args"], json!({}));
    let other = json!({"tool": "health", "args": {"verbose": true}});
    let (s, _, refused) = keyed(&app, "/v1/governors/ika/tool-calls", "t-1", other).await;
    assert_eq!(
        (s, refused["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{refused}"
    );
    let (s, _, refused) = keyed(&app, "/v1/tenants/ika/signals", "t-1", hot.clone()).await;
    assert_eq!(
        (s, refused["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    assert_eq!(governor_state(&app, "ika").await, "warning");
    let seq = head("ika").await;

    // The case keys are for: an answer lost to the deadline, then a retry.
    app.post_json("/v1/chaos/ledger", &json!({"stall_ms": 600}))
        .await;
    let (s, _, pending) = keyed(&app, "/v1/tenants/ika/signals", "k-2", hot.clone()).await;
    assert_eq!(
        (s, pending["code"].as_str()),
        (503, Some("decision_pending"))
    );
    let retried = eventually("the retry is answered", Duration::from_secs(5), || async {
        let (s, replayed, body) = keyed(&app, "/v1/tenants/ika/signals", "k-2", hot.clone()).await;
        (s == 200).then_some((replayed, body))
    })
    .await;
    assert_eq!(
        (retried.0, retried.1["decision"].as_str()),
        (true, Some("duplicate")),
        "{}",
        retried.1
    );
    assert_eq!(head("ika").await, seq + 1, "one decision for the key");

    // Malformed keys are 400 and nothing is stored.
    for bad in ["", "has space", "é", &"x".repeat(129)] {
        let (s, _, body) = keyed(&app, "/v1/tenants/ika/signals", bad, hot.clone()).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (400, Some("invalid_request")),
            "{bad:?}"
        );
    }
    let mut res = app
        .client
        .post(app.url("/v1/tenants/ika/signals"))
        .insert_header(("idempotency-key", "a"))
        .append_header(("idempotency-key", "b"))
        .send_json(&hot)
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "{:?}", res.body().await);
    assert_eq!(head("ika").await, seq + 1);
    // Pub/Sub message ids cannot take a key's place.
    let data = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        json!({"tenant_id": "ika", "metric": "cpu", "value": 65.0}).to_string(),
    );
    let (s, body) = app
        .post_json(
            "/pubsub",
            &json!({"message": {"data": data, "messageId": "http:ika:k-3"}}),
        )
        .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    assert_eq!(
        app.get_json("/v1/tenants/ika/receipts/verify").await.1["valid"],
        true
    );
}

#[actix_web::test]
async fn a_governor_that_boots_refusing_records_the_input_it_refused() {
    let app = spawn_app(|_| {}).await;
    grant(&app, "boot-off").await;
    let suspend = json!({"tenant_id": "boot-off", "entitlement_id": "e", "action": "suspend"});
    assert_eq!(app.post_json("/marketplace", &suspend).await.0, 200);
    // The governor's first input meets the inactive entitlement.
    let signal = json!({"metric": "cpu", "value": 42.5, "timestamp_ms": 7});
    let path = "/v1/tenants/boot-off/signals";
    let (s, _, refused) = keyed(&app, path, "b-1", signal.clone()).await;
    assert_eq!(
        (s, refused["receipt"]["event_type"].as_str()),
        (409, Some("entitlement_check_failed")),
        "{refused}"
    );
    let metadata = &refused["receipt"]["metadata"];
    assert_eq!(
        metadata["input"],
        json!({"metric": "cpu", "value": 42.5, "timestamp_ms": 7})
    );
    assert_eq!(metadata["idempotency_key"], "b-1");
    // So its key names that signal: a retry is its replay, another signal is 422.
    let (s, replayed, again) = keyed(&app, path, "b-1", signal).await;
    assert_eq!((s, replayed), (200, true), "{again}");
    assert_eq!(
        again["receipt"]["receipt_id"],
        refused["receipt"]["receipt_id"]
    );
    let other = json!({"metric": "cpu", "value": 99.0});
    let (s, _, reused) = keyed(&app, path, "b-1", other).await;
    assert_eq!(
        (s, reused["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
}

#[actix_web::test]
async fn reading_a_governor_that_is_deciding_never_waits_for_the_ledger() {
    let app = spawn_app(|s| {
        s.chaos.enabled = true;
        s.governance.decision_timeout_ms = 300;
    })
    .await;
    for t in ["busy", "idle"] {
        grant(&app, t).await;
        assert_eq!(signal(&app, t, 10.0).await.0, 200);
    }
    let (s, _) = app
        .post_json("/v1/chaos/ledger", &json!({"stall_ms": 4000}))
        .await;
    assert_eq!(s, 202);
    // `busy` decides a signal whose receipt waits on the stalled ledger.
    let (client, url) = (app.client.clone(), app.url("/v1/tenants/busy/signals"));
    actix_web::rt::spawn(async move {
        let _ = client
            .post(url)
            .send_json(&json!({"metric": "cpu", "value": 20.0}))
            .await;
    });
    let answer = eventually("busy reads as deciding", Duration::from_secs(2), || async {
        let (s, b) = app.get_json("/v1/governors/busy").await;
        (s == 503).then_some(b)
    })
    .await;
    assert_eq!(answer["code"], "decision_pending", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("still deciding"),
        "a read is not an input that may yet be recorded: {answer}"
    );
    // The list does not wait for it (the stall outlasts the list's wait): the busy governor
    // is listed without its state, the idle one with it.
    let (s, list) = app.get_json("/v1/governors").await;
    assert_eq!(s, 200, "{list}");
    let by_tenant = |t: &str| {
        list["governors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["tenant_id"] == t)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert!(by_tenant("busy")["governor"].is_null(), "{list}");
    assert_eq!(by_tenant("idle")["governor"]["state"], "stable", "{list}");
}
