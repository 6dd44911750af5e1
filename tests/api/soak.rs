//! A seeded random mix against the real binary: signals (some with idempotency keys, some of
//! those sent again), Pub/Sub pushes and redeliveries, tool calls, webhook action callbacks,
//! suspensions, resumptions and grants, operator resets, governor crashes, crashes of the
//! receipt writer and the Entitlements actor, ledger failures and stalls, and reads, from
//! several callers at once, with governors hibernating whenever their tenant goes quiet for a
//! second. Afterwards every chain must hold every receipt an answer acknowledged, verify, and
//! tell one consistent story: each governor decision starts in the state the one before it
//! left, so does each entitlement change, nothing is accepted while the tenant is suspended,
//! each idempotency key and Pub/Sub message id decides once, each governor, read back, is in
//! the state its chain ends in, and a tenant entitled again after a lapse has its signals
//! accepted. A failure names its seed; `TAI_SOAK_SEED` gives every caller the same draws again
//! (the interleaving is the scheduler's). The mix also runs on two instances sharing the
//! Firestore emulator, each tenant's inputs reaching both.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::*;

const TENANTS: u64 = 10;
/// Tenants 0–3 take inputs all the time. The quiet ones take turns in three groups, each
/// addressed for `WINDOW` and then left alone for twice as long, so their governors hibernate
/// (1–1.5 s after their last input) and are woken again while the rest goes on.
const HOT: u64 = 4;
const WINDOW: Duration = Duration::from_millis(1500);
const CALLERS: u64 = 6;
/// Callers from this one on pause up to `MAX_PAUSE_MS` between inputs; the others send as fast
/// as they are answered.
const PACED: u64 = 4;
const MAX_PAUSE_MS: u64 = 16;
/// Every caller sends until then: each quiet group takes a turn and is left alone after it.
const RUN: Duration = Duration::from_secs(5);
/// Crashes of the receipt writer or the Entitlements actor in a run: the root supervisor
/// allows five restarts a minute.
const ACTOR_CRASHES: usize = 3;

/// xorshift64*, so that a seed gives the same draws again.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// What the callers saw.
#[derive(Default)]
struct Seen {
    /// Every receipt an answer carried, by id.
    acked: HashMap<String, Value>,
    /// Answers by operation and status.
    statuses: BTreeMap<(&'static str, u16), usize>,
    /// Crashes the service acknowledged.
    crashes: usize,
    /// Answers that broke the API's promises (a 5xx other than 503, an unexpected status, a
    /// lost connection or a timeout).
    broken: Vec<String>,
}

impl Seen {
    fn record(&mut self, op: &'static str, status: u16, body: &Value, allowed: &[u16]) {
        *self.statuses.entry((op, status)).or_default() += 1;
        if !allowed.contains(&status) {
            self.broken.push(format!("{op}: {status} {body}"));
            return;
        }
        if !matches!(status, 200 | 409 | 429) {
            return;
        }
        let receipts = body["receipts"].as_array().into_iter().flatten();
        for r in receipts.chain(std::iter::once(&body["receipt"])) {
            let Some(id) = r["receipt_id"].as_str() else {
                continue;
            };
            if let Some(before) = self.acked.insert(id.to_owned(), r.clone()) {
                if before != *r {
                    self.broken.push(format!(
                        "{op}: receipt {id} answered as {before} and as {r}"
                    ));
                }
            }
        }
    }
}

async fn send(
    client: &awc::Client,
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let mut req = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    if let Some(k) = key {
        req = req.insert_header(("idempotency-key", k));
    }
    let sent = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    };
    let mut res = sent.map_err(|e| format!("{method} {url}: {e}"))?;
    let bytes = res
        .body()
        .limit(1 << 20)
        .await
        .map_err(|e| format!("{method} {url}: body: {e}"))?;
    Ok((
        res.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// One caller's inputs until `RUN` has passed since `start`.
async fn caller(port: u16, start: Instant, seed: u64, id: u64, seen: Arc<Mutex<Seen>>) {
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(15))
        .finish();
    let mut rng = Rng(seed ^ (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // Each key with the signal it was first sent with: a retry sends the same request.
    let mut keys: Vec<(String, Value)> = Vec::new();
    let mut messages: HashMap<u64, Vec<(String, Value)>> = HashMap::new();
    let mut actor_crashes = 0;
    // Caller 1 makes sure the mix holds a governor crash: from halfway through, until one is
    // acknowledged, it crashes the first hot tenant's governor (a short run, on a busy
    // machine, may not draw one).
    let mut crashed = id != 1;
    let mut n = 0;
    while start.elapsed() < RUN {
        n += 1;
        if id >= PACED {
            actix_web::rt::time::sleep(Duration::from_millis(rng.below(MAX_PAUSE_MS))).await;
        }
        let turn = (start.elapsed().as_millis() / WINDOW.as_millis()) as u64 % 3;
        let awake: Vec<u64> = (HOT..TENANTS).filter(|q| q % 3 == turn).collect();
        let force_crash = !crashed && start.elapsed() >= RUN / 2;
        let t = if force_crash {
            0
        } else if rng.below(10) < 7 {
            rng.below(HOT)
        } else {
            awake[rng.below(awake.len() as u64) as usize]
        };
        let tenant = format!("soak-{t}");
        let signal = json!({"metric": "cpu_utilization", "value": rng.below(100) as f64 + 0.5});
        let signals = format!("/v1/tenants/{tenant}/signals");
        let governor = format!("/v1/governors/{tenant}");
        let decided: &[u16] = &[200, 409, 429, 503];
        let r = if force_crash { 88 } else { rng.below(100) };
        // (operation, method, path, idempotency key, body, the statuses it may answer)
        let (op, method, path, key, body, allowed): (&str, _, _, _, _, &[u16]) = match r {
            0..=35 => ("signal", "POST", signals, None, Some(signal), decided),
            // Pub/Sub push, now and then a redelivery of an earlier message for this tenant
            // (only for this one: a quiet tenant must stay quiet outside its turn).
            36..=41 => {
                let sent = messages.entry(t).or_default();
                if sent.is_empty() || rng.below(3) > 0 {
                    let mut data = signal;
                    data["tenant_id"] = json!(tenant);
                    sent.push((format!("m-{id}-{n}"), data));
                }
                let (mid, data) = &sent[rng.below(sent.len() as u64) as usize];
                let envelope = json!({
                    "message": {"data": STANDARD.encode(data.to_string()), "messageId": mid},
                    "subscription": "projects/soak/subscriptions/push",
                });
                (
                    "push",
                    "POST",
                    "/pubsub".into(),
                    None,
                    Some(envelope),
                    &[200, 503],
                )
            }
            // The webhook accepted every action for later: a caller reports how one went.
            42..=49 => {
                let in_flight = match send(&client, "GET", &url(&governor), None, None).await {
                    Ok((200, v)) => v["action_in_flight"]["action_id"]
                        .as_str()
                        .map(str::to_owned),
                    _ => None,
                };
                let Some(action) = in_flight else { continue };
                let verb = ["fail", "complete", "complete", "complete"][rng.below(4) as usize];
                let path = format!("{governor}/actions/{action}/{verb}");
                // 409: the action ended meanwhile (timed out, cancelled, or reported by
                // another caller).
                (
                    "action callback",
                    "POST",
                    path,
                    None,
                    Some(json!({})),
                    &[200, 409, 503],
                )
            }
            50..=57 => {
                let key = format!("k-{id}-{n}");
                keys.push((key.clone(), signal.clone()));
                (
                    "keyed signal",
                    "POST",
                    signals,
                    Some(key),
                    Some(signal),
                    decided,
                )
            }
            // A key again with its signal, for whichever tenant this turn picked: a replay
            // where it was first sent, a first decision anywhere else.
            58..=61 if !keys.is_empty() => {
                let (key, signal) = keys[rng.below(keys.len() as u64) as usize].clone();
                (
                    "repeated key",
                    "POST",
                    signals,
                    Some(key),
                    Some(signal),
                    decided,
                )
            }
            58..=69 => {
                let path = format!("{governor}/tool-calls");
                let call = json!({"tool": "health", "args": {}});
                ("tool call", "POST", path, None, Some(call), decided)
            }
            // A grant re-activates a suspended tenant; an active one is granted once (409).
            70..=83 => {
                let action = match r {
                    70..=75 => "suspend",
                    76..=81 => "resume",
                    _ => "grant",
                };
                let body = json!({"tenant_id": tenant, "entitlement_id": "e", "action": action});
                let path = "/marketplace".to_owned();
                (action, "POST", path, None, Some(body), &[200, 409, 503])
            }
            84..=87 => {
                let path = format!("{governor}/reset");
                ("reset", "POST", path, None, None, &[200, 409, 503])
            }
            // 404: no governor runs for the tenant (it hibernated).
            88..=89 => {
                let path = format!("/v1/chaos/governors/{tenant}/crash");
                (
                    "crash",
                    "POST",
                    path,
                    None,
                    Some(json!({})),
                    &[202, 404, 503],
                )
            }
            90..=96 => ("read", "GET", governor, None, None, &[200, 503]),
            // Now and then the receipt writer or the Entitlements actor itself panics.
            _ if id == 0 && actor_crashes < ACTOR_CRASHES && rng.below(4) == 0 => {
                actor_crashes += 1;
                let actor = ["ledger", "entitlements"][rng.below(2) as usize];
                let path = format!("/v1/chaos/actors/{actor}/crash");
                ("actor crash", "POST", path, None, Some(json!({})), &[202])
            }
            _ if id == 0 => {
                let fault = [json!({"fail_ms": 80}), json!({"stall_ms": 150})];
                let body = Some(fault[rng.below(2) as usize].clone());
                let path = "/v1/chaos/ledger".to_owned();
                ("ledger fault", "POST", path, None, body, &[202])
            }
            _ => {
                let path = format!("/v1/tenants/{tenant}/receipts/verify");
                ("verify", "GET", path, None, None, &[200, 503])
            }
        };
        let answer = send(&client, method, &url(&path), key.as_deref(), body).await;
        let mut seen = seen.lock().unwrap();
        match answer {
            Ok((status, body)) => {
                if op == "crash" && status == 202 {
                    crashed = true;
                    seen.crashes += 1;
                }
                seen.record(op, status, &body, allowed);
            }
            Err(e) => seen.broken.push(e),
        }
    }
}

/// A webhook receiver in this process that accepts every action for a later callback (202);
/// returns its URL.
fn webhook() -> String {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/actions", listener.local_addr().unwrap());
    let server = HttpServer::new(|| {
        App::new().route(
            "/actions",
            web::post().to(|| async { HttpResponse::Accepted().json(json!({})) }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    url
}

/// Every receipt of `tenant`, in chain order, read a page at a time.
async fn chain(client: &awc::Client, bin: &Binary, tenant: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let path = format!("/v1/tenants/{tenant}/receipts?after_seq={after}&limit=1000");
        let (status, page) = send(client, "GET", &bin.url(&path), None, None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{page}");
        out.extend(page["receipts"].as_array().unwrap().iter().cloned());
        match page["next_after_seq"].as_u64() {
            Some(next) => after = next,
            None => return out,
        }
    }
}

/// The governor of `tenant` read back, and its chain read after it, once the two agree: the
/// governor is in the state of the chain's last governor receipt (`boot` if there is none),
/// and no governor receipt follows the seq it reports. A governor crashed again and again waits
/// out its restart backoff (up to 2 s), and one woken from hibernation or restarted records as
/// it comes back what it missed meanwhile (an entitlement change), so they may disagree for a
/// moment. With several instances, every one of `bins` must agree: a governor that another
/// instance's decisions left behind reloads from the chain when it is read. Answers the first
/// one's view.
async fn settled(
    client: &awc::Client,
    bins: &[Binary],
    tenant: &str,
    ctx: &str,
) -> (Value, Vec<Value>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut agreed = Vec::new();
    for bin in bins {
        loop {
            let path = format!("/v1/governors/{tenant}");
            let (status, view) = send(client, "GET", &bin.url(&path), None, None)
                .await
                .unwrap();
            let receipts = chain(client, bin, tenant).await;
            let governed: Vec<&Value> =
                receipts.iter().filter(|r| !entitlement_domain(r)).collect();
            // A chain with no governor receipt yet (a quiet tenant granted late in its turn,
            // all of whose inputs were refused before that) leaves its governor in `boot`.
            let last_state = (governed.iter().rev())
                .find_map(|r| r["state_to"].as_str())
                .or(Some("boot"));
            let newest = governed.last().and_then(|r| r["seq"].as_u64()).unwrap_or(0);
            if status == 200
                && view["state"].as_str() == last_state
                && view["seq"].as_u64().is_some_and(|seq| seq >= newest)
            {
                agreed.push((view, receipts));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{ctx}: {tenant}: the governor at {} ({status} {view}) never agreed with its chain, which ends {}",
                bin.url(""),
                tail(&receipts)
            );
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
    agreed.swap_remove(0)
}

/// Receipts the Entitlements actor writes (their states are the entitlement's status); every
/// other receipt is a governor's (its states are the governor's).
fn entitlement_domain(r: &Value) -> bool {
    let e = r["event_type"].as_str().unwrap_or_default();
    matches!(
        e,
        "entitlement_granted"
            | "entitlement_suspended"
            | "entitlement_resumed"
            | "entitlement_revoked"
            | "entitlement_refused"
    )
}

/// The last receipts of a chain, briefly, for a failure's message.
fn tail(receipts: &[Value]) -> String {
    let from = receipts.len().saturating_sub(12);
    receipts[from..]
        .iter()
        .map(|r| {
            format!(
                "{} {} {}→{} ({}, {})",
                r["seq"], r["event_type"], r["state_from"], r["state_to"], r["reason"], r["node"]
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Decisions that act on an input or on an action's outcome, which a suspended tenant must never
/// get (its action was cancelled as it was suspended).
const ACCEPTING: &[&str] = &[
    "signal_processed",
    "signal_warning",
    "signal_postponed",
    "action_started",
    "action_completed",
    "action_failed",
    "action_timeout",
    "tool_call_succeeded",
    "tool_call_failed",
];

#[actix_web::test]
async fn a_random_mix_with_crashes_and_ledger_faults_leaves_every_chain_whole_on_sqlite() {
    soak(&[], 1).await;
}

#[actix_web::test]
async fn a_random_mix_with_crashes_and_ledger_faults_leaves_every_chain_whole_on_the_firestore_emulator(
) {
    let project = firestore_project("tai-soak");
    soak(
        &[
            ("TAI_LEDGER__BACKEND", "firestore"),
            ("FIRESTORE_PROJECT_ID", &project),
        ],
        1,
    )
    .await;
}

/// Two instances share the Firestore project, and every tenant's inputs reach both: half the
/// callers send to each. Each chain still tells one governor's story.
#[actix_web::test]
async fn a_random_mix_on_two_instances_sharing_the_firestore_emulator_leaves_every_chain_whole() {
    let project = firestore_project("tai-soak2");
    soak(
        &[
            ("TAI_LEDGER__BACKEND", "firestore"),
            ("FIRESTORE_PROJECT_ID", &project),
        ],
        2,
    )
    .await;
}

/// The soak against `instances` binaries started with `backend` added to their environment;
/// caller `i` sends to instance `i % instances` (the chaos hooks on the stores and the actors,
/// caller 0's, to the first).
async fn soak(backend: &[(&str, &str)], instances: usize) {
    let seed = std::env::var("TAI_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| tai_autonomics::clock::now_ms() | 1);
    let hook = webhook();
    let mut env = backend.to_vec();
    env.extend([
        ("TAI_ACTIONS__EXECUTOR", "webhook"),
        ("TAI_ACTIONS__WEBHOOK_URL", &hook),
        // Actions nobody reports on time out into `refusing`, and a short queue fills.
        ("TAI_GOVERNANCE__ACTION_TIMEOUT_MS", "400"),
        ("TAI_GOVERNANCE__POSTPONE_CAPACITY", "4"),
        ("TAI_CHAOS__ENABLED", "true"),
        ("TAI_GOVERNANCE__IDLE_HIBERNATE_SECS", "1"),
        ("TAI_RATE_LIMIT__PER_SECOND", "1000000"),
        ("TAI_RATE_LIMIT__BURST", "1000000"),
    ]);
    // Each instance signs its receipts with a node name of its own.
    let names: Vec<String> = (0..instances).map(|i| format!("tai@soak-{i}")).collect();
    let bins: Vec<Binary> = (names.iter())
        .map(|name| {
            let mut env = env.clone();
            env.push(("TAI_NODE__NAME", name));
            start_binary(&env)
        })
        .collect();
    let bin = &bins[0];
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(15))
        .finish();
    for t in 0..TENANTS {
        let body =
            json!({"tenant_id": format!("soak-{t}"), "entitlement_id": "e", "action": "grant"});
        let (s, b) = send(&client, "POST", &bin.url("/marketplace"), None, Some(body))
            .await
            .unwrap();
        assert_eq!(s, 200, "{b}");
    }

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let start = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|id| {
            let port = bins[id as usize % instances].port;
            actix_web::rt::spawn(caller(port, start, seed, id, seen.clone()))
        })
        .collect();
    for c in callers {
        c.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let ctx = format!(
        "seed {seed} (TAI_SOAK_SEED={seed} repeats it); answers {:?}",
        seen.statuses
    );
    assert!(seen.broken.is_empty(), "{ctx}: {:#?}", seen.broken);

    let mut ids: HashSet<String> = HashSet::new();
    let mut message_ids: HashSet<String> = HashSet::new();
    let mut reactivations = 0;
    let mut views: Vec<String> = Vec::new();
    let mut decided = 0;
    for t in 0..TENANTS {
        let tenant = format!("soak-{t}");
        let (view, receipts) = settled(&client, &bins, &tenant, &ctx).await;
        views.push(format!(
            "{view} ending {}",
            tail(&receipts[receipts.len().saturating_sub(3)..])
        ));
        // A stall injected last may still hold the ledger's writer; reads go on regardless.
        let report = eventually("the chain is verified", Duration::from_secs(10), || async {
            let path = format!("/v1/tenants/{tenant}/receipts/verify");
            let (s, b) = send(&client, "GET", &bin.url(&path), None, None)
                .await
                .ok()?;
            (s == 200).then_some(b)
        })
        .await;
        assert_eq!(report["valid"], true, "{ctx}: {tenant}: {report}");
        // An action's state timeout may still append after the chain was read.
        assert!(
            report["receipts_checked"].as_u64() >= Some(receipts.len() as u64),
            "{ctx}: {tenant}: {report} covers the {} receipts read",
            receipts.len()
        );

        let mut state: Option<String> = None;
        let mut status: Option<String> = None;
        let mut suspended = false;
        // The governor refuses because the tenant's entitlement lapsed (not an action's end).
        let mut lapsed = false;
        let mut keys: HashSet<String> = HashSet::new();
        for (i, r) in receipts.iter().enumerate() {
            let id = r["receipt_id"].as_str().unwrap().to_owned();
            let event = r["event_type"].as_str().unwrap();
            if let Some(acked) = seen.acked.get(&id) {
                assert_eq!(
                    acked, r,
                    "{ctx}: the chain holds receipt {id} as it was answered"
                );
            }
            assert!(ids.insert(id.clone()), "{ctx}: receipt {id} stored twice");
            if let Some(mid) = r["metadata"]["pubsub_message_id"].as_str() {
                assert!(
                    message_ids.insert(mid.to_owned()),
                    "{ctx}: message {mid} decided twice"
                );
            }
            if let Some(key) = r["metadata"]["idempotency_key"].as_str() {
                assert!(
                    keys.insert(key.to_owned()),
                    "{ctx}: key {key} decided twice in {tenant}"
                );
            }
            if entitlement_domain(r) {
                match event {
                    "entitlement_suspended" => suspended = true,
                    "entitlement_resumed" | "entitlement_granted" => suspended = false,
                    _ => {}
                }
                // The entitlement's story: each change (or refusal) starts from the status
                // the change before it left.
                assert_eq!(
                    r["state_from"].as_str(),
                    status.as_deref(),
                    "{ctx}: {tenant}: an entitlement receipt starts where the one before left the record: {r}; the chain up to it: {}",
                    tail(&receipts[..=i])
                );
                status = r["state_to"].as_str().map(str::to_owned);
                continue;
            }
            decided += 1;
            assert!(
                !(suspended && ACCEPTING.contains(&event)),
                "{ctx}: {tenant} accepted an input while suspended: {r}; the chain up to it: {}",
                tail(&receipts[..=i])
            );
            if let (Some(from), Some(to)) = (r["state_from"].as_str(), r["state_to"].as_str()) {
                if to == "refusing" && from != "refusing" {
                    lapsed = matches!(event, "entitlement_changed" | "entitlement_check_failed");
                }
                if let Some(before) = &state {
                    assert_eq!(
                        from, before,
                        "{ctx}: {tenant}: a decision starts where the one before left the governor: {r}; the chain up to it: {}",
                        tail(&receipts[..=i])
                    );
                }
                state = Some(to.to_owned());
            }
        }
        // No governor receipt in the chain (all its inputs refused before the grant, see
        // `settled`): its governor is in `boot`.
        assert_eq!(
            view["state"].as_str(),
            state.as_deref().or(Some("boot")),
            "{ctx}: {tenant} reads back in the state its chain ends in"
        );
        // Entitled again, a tenant whose governor still refuses for the lapse gets its
        // signals accepted soon: the reactivation is recorded at the latest when a retry of
        // it (every second) or the next signal gets through.
        if state.as_deref() == Some("refusing") && lapsed && !suspended {
            let url = bin.url(&format!("/v1/tenants/{tenant}/signals"));
            let body = json!({"metric": "cpu_utilization", "value": 10.5});
            let mut answer = (0, Value::Null);
            for _ in 0..25 {
                answer = send(&client, "POST", &url, None, Some(body.clone()))
                    .await
                    .unwrap();
                if answer.0 == 200 {
                    break;
                }
                actix_web::rt::time::sleep(Duration::from_millis(200)).await;
            }
            assert_eq!(
                answer.0,
                200,
                "{ctx}: {tenant} is entitled again but refused for 5 s: {}; the chain ended {}",
                answer.1,
                tail(&receipts)
            );
            reactivations += 1;
        }
    }
    for id in seen.acked.keys() {
        assert!(
            ids.contains(id),
            "{ctx}: acknowledged receipt {id} is in no chain"
        );
    }
    assert!(
        decided > 0 && seen.crashes > 0,
        "{ctx}: the mix decided and crashed"
    );

    // Summed over the instances.
    let mut texts = Vec::new();
    for b in &bins {
        let mut res = client.get(b.url("/metrics")).send().await.unwrap();
        texts.push(String::from_utf8(res.body().limit(4 << 20).await.unwrap().to_vec()).unwrap());
    }
    let text = texts.join("\n");
    let sum = |series: &str| -> Option<f64> {
        texts
            .iter()
            .filter_map(|t| metric(t, series))
            .reduce(|a, b| a + b)
    };
    let restarts = sum("tai_supervisor_restarts_total{supervisor=\"governance\"}");
    assert!(
        restarts.unwrap_or(0.0) >= 1.0,
        "{ctx}: crashed governors were restarted: {restarts:?}"
    );
    let hibernated = sum("tai_child_exits_total{supervisor=\"governance\",reason=\"normal\"}");
    assert!(
        hibernated.unwrap_or(0.0) >= 1.0,
        "{ctx}: quiet governors hibernated: {hibernated:?}; the governors at the end: {views:#?}; metrics: {}",
        text.lines().filter(|l| l.starts_with("tai_child_exits_total") || l.starts_with("tai_supervisor")).collect::<Vec<_>>().join("\n")
    );
    // Each instance's governors were overtaken by the other's and reloaded themselves.
    let reloads = sum("tai_governor_reloads_total");
    assert!(
        instances == 1 || reloads.unwrap_or(0.0) >= 1.0,
        "{ctx}: governors reloaded: {reloads:?}"
    );
    println!(
        "{ctx}; {} receipts, {decided} of them governors', {} crashes acknowledged, {restarts:?} restarts, {hibernated:?} hibernations, {reloads:?} reloads, {reactivations} governors refusing an entitled tenant at the end",
        ids.len(),
        seen.crashes
    );
}
