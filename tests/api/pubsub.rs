//! Pub/Sub end to end: pull through the official Pub/Sub emulator (`tools/test.sh` starts it
//! and exports `PUBSUB_EMULATOR_HOST`), push through `POST /pubsub`, with the real application
//! and SQLite on disk. Each test uses topics and subscriptions of its own (the emulator has no
//! reset).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use crate::helpers::*;

const PROJECT: &str = "tai-test";

fn emulator() -> String {
    std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_else(|_| {
        panic!("PUBSUB_EMULATOR_HOST is not set: run tools/test.sh, or `source tools/emulators.sh && emulators_start`")
    })
}

/// A fresh topic and subscription name pair.
fn names(what: &str) -> (String, String) {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let id = format!("{what}-{}-{n}", std::process::id());
    (format!("topic-{id}"), format!("sub-{id}"))
}

/// Talks to the emulator's REST admin and publish API.
struct Emulator {
    host: String,
    client: awc::Client,
}

impl Emulator {
    fn at(host: String) -> Emulator {
        Emulator {
            host,
            client: awc::Client::builder()
                .timeout(Duration::from_secs(10))
                .finish(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("http://{}/v1/projects/{PROJECT}/{path}", self.host);
        let req = match method {
            "PUT" => self.client.put(url),
            _ => self.client.post(url),
        };
        let mut res = req.send_json(&body).await.map_err(|e| e.to_string())?;
        let bytes = res.body().await.map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!(
                "{}: {}",
                res.status(),
                String::from_utf8_lossy(&bytes)
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }

    /// Creates the topic and a subscription on it (ack deadline 10 s, the minimum).
    async fn create(&self, topic: &str, sub: &str) -> Result<(), String> {
        self.call("PUT", &format!("topics/{topic}"), json!({}))
            .await?;
        self.call(
            "PUT",
            &format!("subscriptions/{sub}"),
            json!({"topic": format!("projects/{PROJECT}/topics/{topic}"), "ackDeadlineSeconds": 10}),
        )
        .await?;
        Ok(())
    }

    /// Creates the topic and a push subscription on it that delivers to `endpoint`.
    async fn create_push(&self, topic: &str, sub: &str, endpoint: &str) -> Result<(), String> {
        self.create_push_config(topic, sub, json!({"pushEndpoint": endpoint}))
            .await
    }

    /// Creates the topic and a push subscription on it with this `pushConfig`.
    async fn create_push_config(
        &self,
        topic: &str,
        sub: &str,
        config: Value,
    ) -> Result<(), String> {
        self.call("PUT", &format!("topics/{topic}"), json!({}))
            .await?;
        self.call(
            "PUT",
            &format!("subscriptions/{sub}"),
            json!({"topic": format!("projects/{PROJECT}/topics/{topic}"), "ackDeadlineSeconds": 10,
                   "pushConfig": config}),
        )
        .await?;
        Ok(())
    }

    /// Publishes raw data with an optional `kind`; returns the message ids.
    async fn publish(&self, topic: &str, messages: &[(Vec<u8>, Option<&str>)]) -> Vec<String> {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|(data, kind)| {
                let mut m = json!({"data": base64::engine::general_purpose::STANDARD.encode(data)});
                if let Some(k) = kind {
                    m["attributes"] = json!({"kind": k});
                }
                m
            })
            .collect();
        let out = self
            .call(
                "POST",
                &format!("topics/{topic}:publish"),
                json!({"messages": msgs}),
            )
            .await
            .expect("publish");
        out["messageIds"]
            .as_array()
            .expect("message ids")
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    /// Publishes signals as messages with an ordering key each, `(tenant, value, key)` in
    /// order, in one request.
    async fn publish_ordered(&self, topic: &str, messages: &[(&str, f64, &str)]) {
        let msgs: Vec<Value> = (messages.iter())
            .map(|(tenant, value, key)| {
                json!({"data": base64::engine::general_purpose::STANDARD.encode(signal_data(tenant, *value)),
                       "orderingKey": key})
            })
            .collect();
        self.call(
            "POST",
            &format!("topics/{topic}:publish"),
            json!({"messages": msgs}),
        )
        .await
        .expect("publish");
    }
}

fn signal_data(tenant: &str, value: f64) -> Vec<u8> {
    json!({"tenant_id": tenant, "metric": "cpu_utilization", "value": value})
        .to_string()
        .into_bytes()
}

/// The application pulling from `sub` on the emulator at `host`.
async fn pulling_app(
    host: &str,
    topic: &str,
    sub: &str,
    adjust: impl FnOnce(&mut tai_autonomics::config::Settings),
) -> TestApp {
    let (host, topic, sub) = (host.to_owned(), topic.to_owned(), sub.to_owned());
    spawn_app(move |s| {
        s.gcp.project_id = PROJECT.into();
        s.pubsub.emulator_host = host;
        s.pubsub.topic = topic;
        s.pubsub.subscription = sub;
        s.pubsub.health_interval_ms = 100;
        s.pubsub.reconnect_min_ms = 100;
        s.pubsub.reconnect_max_ms = 1000;
        adjust(s);
    })
    .await
}

/// The shared emulator with a fresh topic and subscription, and the application pulling from it
/// with `tenants` granted.
async fn pulling(
    what: &str,
    tenants: &[&str],
    adjust: impl FnOnce(&mut tai_autonomics::config::Settings),
) -> (Emulator, String, TestApp) {
    let emu = Emulator::at(emulator());
    let (topic, sub) = names(what);
    emu.create(&topic, &sub).await.unwrap();
    let app = pulling_app(&emu.host, &topic, &sub, adjust).await;
    for t in tenants {
        grant(&app, t).await;
    }
    (emu, topic, app)
}

/// Every receipt of `tenant`'s chain (one page).
async fn receipts(app: &TestApp, tenant: &str) -> Vec<Value> {
    let (status, page) = app
        .get_json(&format!("/v1/tenants/{tenant}/receipts?limit=1000"))
        .await;
    assert_eq!(status, 200, "{page}");
    page["receipts"].as_array().unwrap().clone()
}

/// The Pub/Sub message ids recorded in `tenant`'s chain, in chain order.
async fn recorded_ids(app: &TestApp, tenant: &str) -> Vec<String> {
    receipts(app, tenant)
        .await
        .iter()
        .filter_map(|r| {
            r["metadata"]["pubsub_message_id"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

async fn metrics(app: &TestApp) -> String {
    app.get_text("/metrics").await.1
}

/// This instance's consumer counters (`GET /v1/pubsub`): metrics are shared by every app of
/// the test process, these are not.
async fn consumer(app: &TestApp) -> Value {
    app.get_json("/v1/pubsub").await.1
}

async fn verified(app: &TestApp, tenant: &str) {
    let (_, v) = app
        .get_json(&format!("/v1/tenants/{tenant}/receipts/verify"))
        .await;
    assert_eq!(v["valid"], true, "{v}");
}

async fn pubsub_ready(app: &TestApp) -> String {
    app.get_json("/health").await.1["checks"]["pubsub_ready"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[actix_web::test]
async fn pulled_signals_drive_the_governors_and_each_message_is_acked_once_after_its_receipt() {
    let tenants = ["pull-a", "pull-b", "pull-c"];
    let (emu, topic, app) = pulling("pull", &tenants, |_| {}).await;
    let mut messages = Vec::new();
    for i in 0..20 {
        for t in tenants {
            // Below the warning threshold, and some above it: stable and warning decisions.
            messages.push((signal_data(t, if i % 5 == 4 { 65.0 } else { 40.0 }), None));
        }
    }
    let ids = emu.publish(&topic, &messages).await;
    assert_eq!(ids.len(), 60);
    eventually("every message acked", Duration::from_secs(30), || async {
        let c = consumer(&app).await;
        (c["acked"] == 60 && c["outstanding"] == 0).then_some(())
    })
    .await;
    let mut seen = HashSet::new();
    for t in tenants {
        let recorded = recorded_ids(&app, t).await;
        assert_eq!(recorded.len(), 20, "{t}: one receipt per message");
        for id in recorded {
            assert!(seen.insert(id.clone()), "message {id} recorded twice");
        }
        verified(&app, t).await;
    }
    assert_eq!(seen, ids.into_iter().collect::<HashSet<_>>());
    let c = consumer(&app).await;
    assert_eq!(
        (c["acked"].as_u64(), c["nacked"].as_u64()),
        (Some(60), Some(0)),
        "{c}"
    );
    // The metrics are the process's (every test app adds to them): at least these 60.
    let m = metrics(&app).await;
    let accepted = metric(
        &m,
        "tai_pubsub_messages_total{delivery=\"pull\",outcome=\"accepted\"}",
    );
    assert!(accepted.unwrap_or(0.0) >= 60.0, "{accepted:?}");
    assert_eq!(pubsub_ready(&app).await, "ok");
}

/// A subscription with message ordering delivers the messages of one ordering key in the order
/// they were published, and the consumer decides them in that order: a governor's decisions
/// depend on the order of its signals. Messages of other keys go on meanwhile.
#[actix_web::test]
async fn pulled_messages_with_an_ordering_key_are_decided_in_the_order_they_were_published() {
    let tenants = ["ord-a", "ord-b"];
    let (emu, topic, app) = pulling_ordered("ordered", &tenants, None).await;
    // Values below the warning threshold, each different, the two keys interleaved.
    let published: Vec<(&str, f64, &str)> = (0..40)
        .flat_map(|i| tenants.map(|t| (t, 10.0 + f64::from(i) * 0.5, t)))
        .collect();
    emu.publish_ordered(&topic, &published).await;
    acked_and_decided_in_order(&app, &tenants, &published).await;
}

/// A message of an ordering key that fails for a transient reason (the ledger away) is not
/// overtaken by the later messages of its key: those are nacked undecided until it comes
/// back, and Pub/Sub delivers them again after it, in order.
#[actix_web::test]
async fn an_ordered_message_nacked_in_an_outage_is_not_overtaken_by_the_later_ones_of_its_key() {
    not_overtaken_in_an_outage("ordered-outage", None).await;
}

/// The same with a dead-letter policy, which Pub/Sub has not reached for the failed message:
/// the consumer read it from the subscription, so it knows the message will come back.
#[actix_web::test]
async fn with_a_dead_letter_policy_an_ordered_message_nacked_in_an_outage_is_not_overtaken() {
    not_overtaken_in_an_outage("ordered-dead-letter", Some(100)).await;
}

async fn not_overtaken_in_an_outage(what: &str, dead_letter_after: Option<u32>) {
    let tenants = ["out-a", "out-b"];
    let (emu, topic, app) = pulling_ordered(what, &tenants, dead_letter_after).await;
    // The ledger refuses commits from the start, and comes back once a message has been
    // nacked, while the later ones are delivered.
    let chaos = &app.state.tree.ledger.chaos;
    chaos.fail_for(Duration::from_secs(30));
    let published: Vec<(&str, f64, &str)> = (0..150)
        .flat_map(|i| tenants.map(|t| (t, 10.0 + f64::from(i) * 0.25, t)))
        .collect();
    emu.publish_ordered(&topic, &published).await;
    eventually("a message nacked", Duration::from_secs(30), || async {
        (consumer(&app).await["nacked"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    chaos.fail_for(Duration::ZERO);
    acked_and_decided_in_order(&app, &tenants, &published).await;
}

/// The consumer reads its subscription's dead-letter and retry policies at the stream's start,
/// and holds an ordering key's later messages behind a failed one for as long as the retry
/// policy may wait to deliver it again (the emulator keeps the policy, though it delivers a
/// nacked message again at once).
#[actix_web::test]
async fn the_consumer_holds_a_key_back_as_long_as_the_subscriptions_retry_policy_may_wait() {
    let emu = Emulator::at(emulator());
    for (what, policies, expected) in [
        (
            "plain",
            json!({}),
            json!({"read": true, "dead_letter_after": null, "order_hold_secs": 60}),
        ),
        (
            "retrying",
            json!({"retryPolicy": {"minimumBackoff": "10s", "maximumBackoff": "120s"},
                   "deadLetterPolicy": {"maxDeliveryAttempts": 7}}),
            json!({"read": true, "dead_letter_after": 7, "order_hold_secs": 180}),
        ),
        (
            "default-backoff",
            json!({"retryPolicy": {"minimumBackoff": "10s"}}),
            json!({"read": true, "dead_letter_after": null, "order_hold_secs": 660}),
        ),
    ] {
        let (topic, sub) = names(&format!("policy-{what}"));
        emu.call("PUT", &format!("topics/{topic}"), json!({}))
            .await
            .unwrap();
        let mut config = json!({"topic": format!("projects/{PROJECT}/topics/{topic}"),
                                "enableMessageOrdering": true});
        for (k, v) in policies.as_object().unwrap() {
            config[k] = v.clone();
        }
        if config.get("deadLetterPolicy").is_some() {
            let dead = format!("{topic}-dead");
            emu.call("PUT", &format!("topics/{dead}"), json!({}))
                .await
                .unwrap();
            config["deadLetterPolicy"]["deadLetterTopic"] =
                json!(format!("projects/{PROJECT}/topics/{dead}"));
        }
        emu.call("PUT", &format!("subscriptions/{sub}"), config)
            .await
            .unwrap();
        let app = pulling_app(&emu.host, &topic, &sub, |_| {}).await;
        let read = eventually("the subscription read", Duration::from_secs(20), || async {
            let policy = consumer(&app).await["subscription_policy"].clone();
            (!policy.is_null()).then_some(policy)
        })
        .await;
        assert_eq!(read, expected, "{what}");
    }
}

/// The shared emulator with a fresh topic and a subscription with message ordering (and a
/// dead-letter policy after that many delivery attempts), and the application pulling from
/// it with `tenants` granted.
async fn pulling_ordered(
    what: &str,
    tenants: &[&str],
    dead_letter_after: Option<u32>,
) -> (Emulator, String, TestApp) {
    let emu = Emulator::at(emulator());
    let (topic, sub) = names(what);
    emu.call("PUT", &format!("topics/{topic}"), json!({}))
        .await
        .unwrap();
    let mut config = json!({"topic": format!("projects/{PROJECT}/topics/{topic}"),
                            "ackDeadlineSeconds": 10, "enableMessageOrdering": true});
    if let Some(max) = dead_letter_after {
        let dead = format!("{topic}-dead");
        emu.call("PUT", &format!("topics/{dead}"), json!({}))
            .await
            .unwrap();
        config["deadLetterPolicy"] = json!({"deadLetterTopic": format!("projects/{PROJECT}/topics/{dead}"),
                                            "maxDeliveryAttempts": max});
    }
    emu.call("PUT", &format!("subscriptions/{sub}"), config)
        .await
        .unwrap();
    let app = pulling_app(&emu.host, &topic, &sub, |_| {}).await;
    for t in tenants {
        grant(&app, t).await;
    }
    (emu, topic, app)
}

/// Waits until every message of `published` is acked, then checks that each tenant's signals
/// were decided in the order published, and that its chain verifies.
async fn acked_and_decided_in_order(
    app: &TestApp,
    tenants: &[&str],
    published: &[(&str, f64, &str)],
) {
    eventually("every message acked", Duration::from_secs(60), || async {
        let c = consumer(app).await;
        (c["acked"] == published.len() && c["outstanding"] == 0).then_some(())
    })
    .await;
    for t in tenants {
        let decided: Vec<f64> = (receipts(app, t).await.iter())
            .filter(|r| r["event_type"] == "signal_processed")
            .map(|r| r["metadata"]["input"]["value"].as_f64().unwrap())
            .collect();
        let sent: Vec<f64> = (published.iter())
            .filter(|(tenant, _, _)| tenant == t)
            .map(|(_, value, _)| *value)
            .collect();
        assert_eq!(decided, sent, "{t}: decided in the order published");
        verified(app, t).await;
    }
}

#[actix_web::test]
async fn malformed_messages_are_nacked_and_counted_and_the_consumer_keeps_going() {
    let (emu, topic, app) = pulling("malformed", &["bad-input"], |_| {}).await;
    let ids = emu
        .publish(
            &topic,
            &[
                (b"not json".to_vec(), None),
                (signal_data("bad-input", 10.0), Some("weather")),
                (signal_data("never-granted", 10.0), None),
                (
                    br#"{"tenant_id":"bad-input","metric":"cpu","value":"NaN"}"#.to_vec(),
                    None,
                ),
                (signal_data("bad-input", 10.0), None),
            ],
        )
        .await;
    eventually(
        "the valid message processed",
        Duration::from_secs(20),
        || async { (recorded_ids(&app, "bad-input").await == [ids[4].clone()]).then_some(()) },
    )
    .await;
    eventually(
        "the bad ones nacked and counted",
        Duration::from_secs(20),
        || async {
            let m = metrics(&app).await;
            let malformed = metric(
                &m,
                "tai_pubsub_messages_total{delivery=\"pull\",outcome=\"malformed\"}",
            )?;
            let unknown = metric(
                &m,
                "tai_pubsub_messages_total{delivery=\"pull\",outcome=\"unknown_tenant\"}",
            )?;
            let nacks = consumer(&app).await["nacked"].as_u64()?;
            (malformed >= 3.0 && unknown >= 1.0 && nacks >= 4).then_some(())
        },
    )
    .await;
    // Nothing was stored for the unknown tenant.
    let (status, _) = app.get_json("/v1/tenants/never-granted/receipts").await;
    assert_eq!(status, 404);
    // And the consumer keeps going.
    let more = emu
        .publish(&topic, &[(signal_data("bad-input", 20.0), None)])
        .await;
    eventually(
        "a later message processed",
        Duration::from_secs(20),
        || async { (recorded_ids(&app, "bad-input").await.len() == 2).then_some(()) },
    )
    .await;
    assert_eq!(recorded_ids(&app, "bad-input").await[1], more[0]);
}

#[actix_web::test]
async fn a_message_nacked_on_a_transient_failure_is_redelivered_and_makes_one_receipt() {
    let (emu, topic, app) = pulling("nack", &["nacked"], |_| {}).await;
    // The ledger refuses every commit for a while: the decision cannot become durable, the
    // message is nacked, and Pub/Sub delivers it again until it can.
    app.state
        .tree
        .ledger
        .chaos
        .fail_for(Duration::from_millis(1500));
    let ids = emu
        .publish(&topic, &[(signal_data("nacked", 30.0), None)])
        .await;
    eventually(
        "the message recorded once the ledger is back",
        Duration::from_secs(30),
        || async { (recorded_ids(&app, "nacked").await == ids).then_some(()) },
    )
    .await;
    // The ack follows the durable receipt, so the count may trail the receipt by a moment.
    let c = eventually("the message acked", Duration::from_secs(10), || async {
        let c = consumer(&app).await;
        (c["acked"] == 1 && c["outstanding"] == 0).then_some(c)
    })
    .await;
    assert!(c["nacked"].as_u64().unwrap() >= 1, "{c}");
    let m = metrics(&app).await;
    assert!(
        metric(
            &m,
            "tai_pubsub_messages_total{delivery=\"pull\",outcome=\"transient\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    verified(&app, "nacked").await;
}

#[actix_web::test]
async fn a_redelivery_after_the_lease_ran_out_gets_the_first_receipt_and_makes_no_second() {
    // The consumer stops extending a lease after 1 s and asks for 10 s at a time, so a message
    // whose decision takes 12 s is delivered a second time while the first is still running:
    // the first ack is as good as lost.
    let (emu, topic, app) = pulling("lease", &["late-ack"], |s| {
        s.pubsub.lease_extension_secs = 10;
        s.pubsub.max_lease_secs = 1;
        s.governance.decision_timeout_ms = 30_000;
    })
    .await;
    app.state
        .tree
        .ledger
        .chaos
        .stall_for(Duration::from_secs(12));
    let ids = emu
        .publish(&topic, &[(signal_data("late-ack", 30.0), None)])
        .await;
    eventually(
        "the redelivery answered as a duplicate",
        Duration::from_secs(40),
        // Both deliveries are acked: the first with its new receipt, the second with it too.
        || async { (consumer(&app).await["acked"] == 2).then_some(()) },
    )
    .await;
    assert_eq!(
        recorded_ids(&app, "late-ack").await,
        ids,
        "exactly one receipt"
    );
    let m = metrics(&app).await;
    assert!(metric(&m, "tai_pubsub_redeliveries_deduplicated_total").unwrap_or(0.0) >= 1.0);
    verified(&app, "late-ack").await;
}

#[actix_web::test]
async fn when_the_emulator_goes_away_health_shows_it_and_the_consumer_reconnects_by_itself() {
    let port = free_port();
    let mut own = OwnEmulator::pubsub(port);
    let emu = Emulator::at(format!("127.0.0.1:{port}"));
    let (topic, sub) = names("outage");
    eventually("the emulator is up", Duration::from_secs(90), || async {
        emu.create(&topic, &sub).await.ok()
    })
    .await;
    let app = pulling_app(&emu.host, &topic, &sub, |_| {}).await;
    grant(&app, "outage").await;
    let first = emu
        .publish(&topic, &[(signal_data("outage", 10.0), None)])
        .await;
    eventually(
        "the first message processed",
        Duration::from_secs(20),
        || async { (recorded_ids(&app, "outage").await == first).then_some(()) },
    )
    .await;
    eventually("pubsub_ready ok", Duration::from_secs(10), || async {
        (pubsub_ready(&app).await == "ok").then_some(())
    })
    .await;

    own.kill();
    eventually(
        "pubsub_ready error during the outage",
        Duration::from_secs(10),
        || async { (pubsub_ready(&app).await == "error").then_some(()) },
    )
    .await;
    // Readiness does not follow Pub/Sub: the instance stays in service.
    assert_eq!(app.get_json("/health/ready").await.0, 200);
    assert_eq!(app.get_json("/health").await.0, 200);

    // The emulator comes back empty (it keeps nothing on disk): the topic and subscription are
    // created again, and the consumer finds them without being told.
    let _own = OwnEmulator::pubsub(port);
    eventually("the emulator is back", Duration::from_secs(90), || async {
        emu.create(&topic, &sub).await.ok()
    })
    .await;
    eventually("pubsub_ready ok again", Duration::from_secs(30), || async {
        (pubsub_ready(&app).await == "ok").then_some(())
    })
    .await;
    // A restarted emulator numbers messages from 1 again (Pub/Sub never reuses an id within a
    // topic, and the service keys its receipts by message id): burn the ids the first run used.
    emu.call("PUT", "topics/scratch-ids", json!({}))
        .await
        .unwrap();
    let burnt = emu.publish("scratch-ids", &[(b"x".to_vec(), None)]).await;
    assert_eq!(burnt, first, "the emulator restarted its numbering");
    let second = emu
        .publish(&topic, &[(signal_data("outage", 20.0), None)])
        .await;
    assert_ne!(second, first);
    eventually(
        "the message after the outage processed",
        Duration::from_secs(30),
        || async { (recorded_ids(&app, "outage").await.len() == 2).then_some(()) },
    )
    .await;
    assert_eq!(recorded_ids(&app, "outage").await, [first, second].concat());
    verified(&app, "outage").await;
}

/// A fresh process (the shared recorder of the in-process apps shows every series any test
/// made) on Firestore, pulling: the series of its ledger and of its consumer that dashboards
/// take a rate of are at 0 before their first event, so that the first one counts.
#[actix_web::test]
async fn a_fresh_binary_on_firestore_pulling_logs_its_ledger_and_shows_its_series_at_zero() {
    let emu = Emulator::at(emulator());
    let (topic, sub) = names("zero");
    emu.create(&topic, &sub).await.unwrap();
    let project = firestore_project("zero");
    let bin = start_binary(&[
        ("TAI_LEDGER__BACKEND", "firestore"),
        ("FIRESTORE_PROJECT_ID", &project),
        ("GOOGLE_CLOUD_PROJECT", PROJECT),
        ("PUBSUB_TOPIC", &topic),
        ("PUBSUB_SUBSCRIPTION", &sub),
    ]);
    let connected = (bin.first_lines.lock().unwrap().iter())
        .find(|l| l["message"] == "Firestore ledger connected")
        .cloned()
        .expect("the ledger is logged before the service is ready");
    assert_eq!(
        (&connected["project"], &connected["emulator"]),
        (&json!(project), &json!(true)),
        "{connected}"
    );
    let text = bin.metrics().await;
    for series in [
        "tai_firestore_writes_total",
        r#"tai_ledger_batch_failures_total{backend="firestore",kind="conflict"}"#,
        r#"tai_ledger_batch_failures_total{backend="firestore",kind="unavailable"}"#,
        r#"tai_pubsub_messages_total{delivery="pull",outcome="accepted"}"#,
        r#"tai_pubsub_messages_total{delivery="pull",outcome="transient"}"#,
        r#"tai_pubsub_acks_total{result="nack"}"#,
        "tai_pubsub_redeliveries_deduplicated_total",
        "tai_pubsub_stream_reconnects_total",
        "tai_pubsub_outstanding_messages",
    ] {
        assert_eq!(metric(&text, series), Some(0.0), "{series} in\n{text}");
    }
}

fn envelope(id: &str, data: &[u8], kind: Option<&str>) -> Value {
    let mut m = json!({"data": base64::engine::general_purpose::STANDARD.encode(data), "messageId": id, "publishTime": "2026-11-27T10:00:00Z"});
    if let Some(k) = kind {
        m["attributes"] = json!({"kind": k});
    }
    json!({"message": m, "subscription": "projects/tai-test/subscriptions/push"})
}

/// Pub/Sub itself (the emulator) pushing to `POST /pubsub`. Its envelope names the id twice,
/// `messageId` and `message_id`, which the service refused as a duplicate field: every real
/// push was 400, so dead-lettered or redelivered, and none was ever governed. Hand-made
/// envelopes had named it once.
#[actix_web::test]
async fn the_emulator_s_own_push_deliveries_are_governed_and_acked() {
    let app = spawn_app(|_| {}).await;
    grant(&app, "emulated").await;
    let emu = Emulator::at(emulator());
    let (topic, sub) = names("push");
    emu.create_push(&topic, &sub, &app.url("/pubsub"))
        .await
        .unwrap();
    let ids = emu
        .publish(
            &topic,
            &[
                (signal_data("emulated", 70.0), None),
                (signal_data("emulated", 10.0), Some("signal")),
            ],
        )
        .await;
    let recorded = eventually("both pushes governed", Duration::from_secs(20), || async {
        let r = recorded_ids(&app, "emulated").await;
        (r.len() == 2).then_some(r)
    })
    .await;
    assert_eq!(
        recorded.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
    verified(&app, "emulated").await;
}

/// A subscription with payload unwrapping and write metadata delivers the data as the body
/// and the id and attributes as headers (the emulator sends them so, with a form content type).
#[actix_web::test]
async fn the_emulator_s_unwrapped_pushes_with_metadata_are_governed_once_per_message_id() {
    let app = spawn_app(|_| {}).await;
    grant(&app, "unwrapped").await;
    let emu = Emulator::at(emulator());
    let (topic, sub) = names("unwrapped");
    let config = json!({"pushEndpoint": app.url("/pubsub"), "noWrapper": {"writeMetadata": true}});
    emu.create_push_config(&topic, &sub, config).await.unwrap();
    let marketplace = json!({"tenant_id": "unwrapped", "entitlement_id": "e", "action": "suspend"});
    let ids = emu
        .publish(
            &topic,
            &[
                (signal_data("unwrapped", 70.0), None),
                (
                    serde_json::to_vec(&marketplace).unwrap(),
                    Some("marketplace"),
                ),
            ],
        )
        .await;
    let recorded = eventually("both pushes governed", Duration::from_secs(20), || async {
        let r = recorded_ids(&app, "unwrapped").await;
        (r.len() == 2).then_some(r)
    })
    .await;
    // Pushes without an ordering key may come in any order.
    assert_eq!(
        recorded.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
    let (_, entitlement) = app.get_json("/v1/tenants/unwrapped/entitlement").await;
    assert_eq!(
        entitlement["entitlement"]["status"], "suspended",
        "the kind header was read: {entitlement}"
    );

    // Redelivered, the same id gets its first receipt and decides nothing.
    let again = app
        .client
        .post(app.url("/pubsub"))
        .insert_header(("x-goog-pubsub-message-id", ids[0].as_str()))
        .insert_header(("content-type", "application/x-www-form-urlencoded"))
        .send_body(signal_data("unwrapped", 90.0))
        .await;
    let mut again = again.unwrap();
    assert_eq!(again.status(), 200);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["outcome"], "duplicate", "{body}");
    assert_eq!(recorded_ids(&app, "unwrapped").await.len(), 2);

    // Unwrapped without the metadata: no id to decide once by, 400 saying what is missing.
    let bare = app
        .client
        .post(app.url("/pubsub"))
        .send_body(signal_data("unwrapped", 90.0))
        .await;
    let mut bare = bare.unwrap();
    assert_eq!(bare.status(), 400);
    let body: Value = bare.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("x-goog-pubsub-message-id"), "{message}");
    verified(&app, "unwrapped").await;
}

#[actix_web::test]
async fn push_deliveries_are_governed_once_per_message_id_and_bad_envelopes_are_400() {
    let app = spawn_app(|_| {}).await;
    // A marketplace grant through push.
    let grant_body =
        json!({"tenant_id": "pushed", "entitlement_id": "e", "action": "grant", "sku": "base"});
    let (s, b) = app
        .post_json(
            "/pubsub",
            &envelope(
                "m-grant",
                grant_body.to_string().as_bytes(),
                Some("marketplace"),
            ),
        )
        .await;
    assert_eq!((s, b["outcome"].as_str()), (200, Some("accepted")), "{b}");
    // The same grant again is the same receipt, not a 409 refusal.
    let (s, again) = app
        .post_json(
            "/pubsub",
            &envelope(
                "m-grant",
                grant_body.to_string().as_bytes(),
                Some("marketplace"),
            ),
        )
        .await;
    assert_eq!((s, again["outcome"].as_str()), (200, Some("duplicate")));
    assert_eq!(again["receipt"]["receipt_id"], b["receipt"]["receipt_id"]);

    let (s, first) = app
        .post_json(
            "/pubsub",
            &envelope("m-1", &signal_data("pushed", 85.0), None),
        )
        .await;
    assert_eq!(
        (s, first["outcome"].as_str()),
        (200, Some("accepted")),
        "{first}"
    );
    assert_eq!(first["receipt"]["metadata"]["pubsub_message_id"], "m-1");
    for _ in 0..3 {
        let (s, replay) = app
            .post_json(
                "/pubsub",
                &envelope("m-1", &signal_data("pushed", 85.0), None),
            )
            .await;
        assert_eq!((s, replay["outcome"].as_str()), (200, Some("duplicate")));
        assert_eq!(
            replay["receipt"]["receipt_id"],
            first["receipt"]["receipt_id"]
        );
    }
    assert_eq!(recorded_ids(&app, "pushed").await, ["m-grant", "m-1"]);
    // The replays decided nothing: once the governor has settled, the chain holds one decision
    // on a signal of 85 (no replay postponed and replayed later, no second action).
    eventually("the action ends", Duration::from_secs(10), || async {
        (app.get_json("/v1/governors/pushed").await.1["action_in_flight"].is_null()).then_some(())
    })
    .await;
    let decided = (receipts(&app, "pushed").await.iter())
        .filter(|r| r["metadata"]["input"]["value"] == json!(85.0))
        .count();
    assert_eq!(decided, 1);

    // Malformed envelopes and payloads: 400 with the JSON error body, never 5xx, nothing stored.
    let before = receipts(&app, "pushed").await.len();
    let bad: Vec<Value> = vec![
        json!({}),
        json!({"message": {"data": "!!!", "messageId": "b1"}}),
        json!({"message": {"messageId": ""}}),
        envelope("b2", b"not json", None),
        envelope("b3", &signal_data("pushed", 1.0), Some("weather")),
        envelope(
            "b4",
            br#"{"tenant_id":"pushed","metric":"cpu","value":"Infinity"}"#,
            None,
        ),
        envelope(
            "b5",
            br#"{"tenant_id":"../../etc","metric":"cpu","value":1}"#,
            None,
        ),
        envelope(
            "b6",
            br#"{"tenant_id":"pushed","entitlement_id":"e","action":"explode"}"#,
            Some("marketplace"),
        ),
    ];
    for body in &bad {
        let (s, e) = app.post_json("/pubsub", body).await;
        assert_eq!(s, 400, "{body} gave {e}");
        assert_eq!(e["type"], "refusal");
        assert!(e["code"].is_string());
    }
    let res = app
        .client
        .post(app.url("/pubsub"))
        .insert_header(("content-type", "application/json"))
        .send_body("{\"message\": ")
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    // An unknown tenant is 404 (the dead-letter policy takes it) and nothing is stored.
    let (s, _) = app
        .post_json(
            "/pubsub",
            &envelope("u1", &signal_data("nobody-here", 1.0), None),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(
        app.get_json("/v1/tenants/nobody-here/receipts").await.0,
        404
    );
    assert_eq!(receipts(&app, "pushed").await.len(), before);
    let m = metrics(&app).await;
    assert!(
        metric(
            &m,
            "tai_pubsub_messages_total{delivery=\"push\",outcome=\"malformed\"}"
        )
        .unwrap_or(0.0)
            >= 8.0
    );
    verified(&app, "pushed").await;
}

#[actix_web::test]
async fn push_tokens_are_verified_and_anything_else_is_401_with_nothing_processed() {
    const AUD: &str = "https://tai.example/pubsub";
    const EMAIL: &str = "push@tai-test.iam.gserviceaccount.com";
    let app = spawn_app(|s| {
        s.pubsub.push.verify = true;
        s.pubsub.push.audience = AUD.into();
        s.pubsub.push.service_account_email = EMAIL.into();
        s.pubsub.push.jwks_file = keys_dir().join("jwks.json").display().to_string();
        s.pubsub.push.leeway_secs = 0;
    })
    .await;
    grant(&app, "oidc").await;
    let now = (tai_autonomics::clock::now_ms() / 1000) as i64;
    let claims_from = |iss: &str, aud: &str, email: &str, exp: i64| json!({"iss": iss, "aud": aud, "email": email, "email_verified": true, "exp": exp, "iat": now, "sub": "1234"});
    let claims = |aud: &str, email: &str, exp: i64| {
        claims_from("https://accounts.google.com", aud, email, exp)
    };
    let post = |token: Option<String>, id: &str| {
        let req = app.client.post(app.url("/pubsub"));
        let req = match token {
            Some(t) => req.insert_header(("authorization", format!("Bearer {t}"))),
            None => req,
        };
        let body = envelope(id, &signal_data("oidc", 10.0), None);
        async move {
            let mut res = req.send_json(&body).await.unwrap();
            let b: Value =
                serde_json::from_slice(&res.body().await.unwrap()).unwrap_or(Value::Null);
            (res.status().as_u16(), b)
        }
    };
    let valid = sign(
        &claims(AUD, EMAIL, now + 300),
        Algorithm::RS256,
        "rsa_private.pem",
    );
    let (s, b) = post(Some(valid), "ok-1").await;
    assert_eq!((s, b["outcome"].as_str()), (200, Some("accepted")), "{b}");
    // Google also writes its issuer without the scheme (its libraries accept both).
    let schemeless = sign(
        &claims_from("accounts.google.com", AUD, EMAIL, now + 300),
        Algorithm::RS256,
        "rsa_private.pem",
    );
    let (s, b) = post(Some(schemeless), "ok-2").await;
    assert_eq!((s, b["outcome"].as_str()), (200, Some("accepted")), "{b}");

    let refused: HashMap<&str, Option<String>> = [
        (
            "wrong audience",
            Some(sign(
                &claims("https://elsewhere", EMAIL, now + 300),
                Algorithm::RS256,
                "rsa_private.pem",
            )),
        ),
        (
            "expired",
            Some(sign(
                &claims(AUD, EMAIL, now - 60),
                Algorithm::RS256,
                "rsa_private.pem",
            )),
        ),
        (
            "wrong signer",
            Some(sign(
                &claims(AUD, EMAIL, now + 300),
                Algorithm::RS256,
                "other_rsa_private.pem",
            )),
        ),
        (
            "wrong service account",
            Some(sign(
                &claims(AUD, "someone@else.com", now + 300),
                Algorithm::RS256,
                "rsa_private.pem",
            )),
        ),
        (
            "ES256",
            Some(sign(
                &claims(AUD, EMAIL, now + 300),
                Algorithm::ES256,
                "ec_private.pem",
            )),
        ),
        (
            "HS256",
            Some(sign(
                &claims(AUD, EMAIL, now + 300),
                Algorithm::HS256,
                "rsa_public.pem",
            )),
        ),
        (
            "another issuer",
            Some(sign(
                &claims_from("https://issuer.example", AUD, EMAIL, now + 300),
                Algorithm::RS256,
                "rsa_private.pem",
            )),
        ),
        ("not a JWT", Some("abc.def".into())),
        ("missing header", None),
    ]
    .into_iter()
    .collect();
    for (case, token) in refused {
        let (s, b) = post(token, &format!("no-{}", case.replace(' ', "-"))).await;
        assert_eq!(s, 401, "{case}: {b}");
        assert_eq!(b["code"], "unauthorized", "{case}");
    }
    assert_eq!(
        recorded_ids(&app, "oidc").await,
        ["ok-1", "ok-2"],
        "nothing processed for a 401"
    );
}

/// A JWKS URL serving `tests/keys/jwks.json`: it counts its fetches, answers each after
/// `delay`, and answers 500 while `failing` is set.
struct JwksServer {
    url: String,
    fetched: std::sync::Arc<AtomicU32>,
    failing: std::sync::Arc<AtomicBool>,
}

fn jwks_server(delay: Duration) -> JwksServer {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let jwks = std::fs::read_to_string(keys_dir().join("jwks.json")).unwrap();
    let fetched = std::sync::Arc::new(AtomicU32::new(0));
    let failing = std::sync::Arc::new(AtomicBool::new(false));
    let (counter, fail) = (fetched.clone(), failing.clone());
    let server = HttpServer::new(move || {
        let (jwks, counter, fail) = (jwks.clone(), counter.clone(), fail.clone());
        App::new().route(
            "/certs",
            web::get().to(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                let (body, fail) = (jwks.clone(), fail.load(Ordering::Relaxed));
                async move {
                    actix_web::rt::time::sleep(delay).await;
                    if fail {
                        HttpResponse::InternalServerError().finish()
                    } else {
                        HttpResponse::Ok()
                            .content_type("application/json")
                            .body(body)
                    }
                }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let url = format!("http://{}/certs", server.addrs()[0]);
    actix_web::rt::spawn(server.run());
    JwksServer {
        url,
        fetched,
        failing,
    }
}

/// An app that verifies push tokens against `jwks_url` (audience `aud`), with `tenant` granted.
async fn verifying_app(jwks_url: String, tenant: &str) -> TestApp {
    let app = spawn_app(move |s| {
        s.pubsub.push.verify = true;
        s.pubsub.push.audience = "aud".into();
        s.pubsub.push.jwks_url = jwks_url;
    })
    .await;
    grant(&app, tenant).await;
    app
}

/// A push token for audience `aud`, signed with the private key `key` of `tests/keys`.
fn push_token(key: &str) -> String {
    let now = (tai_autonomics::clock::now_ms() / 1000) as i64;
    sign(
        &json!({"iss": "https://accounts.google.com", "aud": "aud", "exp": now + 60}),
        Algorithm::RS256,
        key,
    )
}

/// Pushes a signal for `tenant` as message `id` with `token`: the status and the JSON body.
async fn push_signed(app: &TestApp, token: &str, id: &str, tenant: &str) -> (u16, Value) {
    let mut res = app
        .client
        .post(app.url("/pubsub"))
        .insert_header(("authorization", format!("Bearer {token}")))
        .send_json(&envelope(id, &signal_data(tenant, 5.0), None))
        .await
        .expect("an answer before the client's timeout");
    let body = res.body().await.unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert!(
        res.status() != 503 || res.headers().contains_key("retry-after"),
        "a 503 says when to retry"
    );
    (res.status().as_u16(), json)
}

#[actix_web::test]
async fn push_keys_can_come_from_a_jwks_url() {
    let jwks = jwks_server(Duration::ZERO);
    let app = verifying_app(jwks.url.clone(), "by-url").await;
    for (i, (key, want)) in [
        ("rsa_private.pem", 200),
        ("other_rsa_private.pem", 401),
        ("rsa_private.pem", 200),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, body) =
            push_signed(&app, &push_token(key), &format!("url-{i}"), "by-url").await;
        assert_eq!(status, want, "{body}");
    }
    // Fetched once and kept (a wrong signature is not a reason to fetch again).
    assert_eq!(jwks.fetched.load(Ordering::Relaxed), 1);
}

#[actix_web::test]
async fn concurrent_pushes_fetch_the_jwks_once_and_a_failed_fetch_is_not_repeated_by_each() {
    // Slow enough that every push of a round arrives during the fetch.
    let jwks = jwks_server(Duration::from_millis(200));
    jwks.failing.store(true, Ordering::Relaxed);
    let app = verifying_app(jwks.url.clone(), "many").await;
    let token = push_token("rsa_private.pem");
    let push_all = |round: &'static str| {
        let (app, token) = (&app, &token);
        futures_util::future::join_all((0..12).map(move |i| async move {
            push_signed(app, token, &format!("{round}-{i}"), "many")
                .await
                .0
        }))
    };
    // The JWKS URL fails: every push is 503, and one fetch was made for all of them.
    assert_eq!(push_all("down").await, vec![503; 12]);
    assert_eq!(
        jwks.fetched.load(Ordering::Relaxed),
        1,
        "one fetch for the lot"
    );
    // It recovers; after the retry delay one fetch serves all the pushes at once.
    jwks.failing.store(false, Ordering::Relaxed);
    eventually(
        "the retry delay passes",
        Duration::from_secs(10),
        || async { (push_signed(&app, &token, "probe", "many").await.0 == 200).then_some(()) },
    )
    .await;
    assert_eq!(jwks.fetched.load(Ordering::Relaxed), 2);
    assert_eq!(push_all("up").await, vec![200; 12]);
    assert_eq!(jwks.fetched.load(Ordering::Relaxed), 2, "the keys are kept");
}

#[actix_web::test]
async fn a_jwks_url_whose_answer_stops_arriving_gives_503_not_a_hang() {
    let app = verifying_app(format!("http://{}/certs", stalling_server()), "stalled").await;
    // The client gives up after 10 s; the fetch's deadline is 5 s.
    let (status, body) =
        push_signed(&app, &push_token("rsa_private.pem"), "stalled-1", "stalled").await;
    assert_eq!(
        (status, &body["code"]),
        (503, &json!("unavailable")),
        "{body}"
    );
    assert!(
        recorded_ids(&app, "stalled").await.is_empty(),
        "nothing processed"
    );
}

#[actix_web::test]
async fn a_jwks_url_over_https_is_fetched_over_tls_with_its_certificate_checked() {
    // The receiver's certificate comes from the test CA, which the bundled roots do not hold:
    // the handshake is made and refused (before, the client had no TLS at all).
    let (address, failures) = https_hook();
    let app = verifying_app(format!("https://{address}/certs"), "tls-keys").await;
    let (status, body) =
        push_signed(&app, &push_token("rsa_private.pem"), "tls-1", "tls-keys").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("certificate"),
        "{body}"
    );
    handshakes_failed(&failures, 1).await;
}

#[actix_web::test]
async fn a_crashed_consumer_is_restarted_by_its_supervisor_and_keeps_consuming() {
    let (emu, topic, app) = pulling("crash", &["crashy"], |s| s.chaos.enabled = true).await;
    let first = emu
        .publish(&topic, &[(signal_data("crashy", 10.0), None)])
        .await;
    eventually(
        "the first message processed",
        Duration::from_secs(20),
        || async { (recorded_ids(&app, "crashy").await == first).then_some(()) },
    )
    .await;
    let (status, _) = app
        .post_json("/v1/chaos/actors/pubsub/crash", &json!({}))
        .await;
    assert_eq!(status, 202);
    let consumer_child = eventually(
        "the consumer restarted",
        Duration::from_secs(10),
        || async {
            let (_, snap) = app.get_json("/v1/supervision").await;
            snap["children"]
                .as_array()?
                .iter()
                .find(|c| c["id"] == "pubsub" && c["restarts"].as_u64() >= Some(1))
                .cloned()
        },
    )
    .await;
    assert_eq!(consumer_child["state"], "running", "{consumer_child}");
    // The emulator (0.8.20) never releases a stream whose client went away abruptly (its
    // RST_STREAM handler throws NoSuchMethodError): messages it routes to the dead stream stay
    // leased to it. Real Pub/Sub redelivers them after the ack deadline. So this test checks
    // that the new stream consumes, publishing until a message reaches it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut after: Vec<String> = Vec::new();
    let reached = 'published: loop {
        after.extend(
            emu.publish(&topic, &[(signal_data("crashy", 20.0), None)])
                .await,
        );
        let wait_until = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < wait_until {
            let recorded = recorded_ids(&app, "crashy").await;
            if let Some(id) = recorded.iter().find(|id| after.contains(id)) {
                break 'published id.clone();
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no message published after the crash reached the restarted consumer"
        );
    };
    eprintln!(
        "published {} after the crash; {reached} reached the new stream",
        after.len()
    );
    verified(&app, "crashy").await;
}
