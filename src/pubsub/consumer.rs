//! The PubsubConsumer actor: a streaming pull (`google-cloud-pubsub`) on the configured
//! subscription, supervised like every other child (a crash is a restart).
//!
//! Each message goes through [`super::deliver`] on a task of its own and is acked only after
//! its receipt is durable (or when it is a duplicate of one that is), nacked when it is
//! malformed (the dead-letter policy takes it) or when the failure is transient (redelivery).
//! Messages with an ordering key are decided one at a time per key, in delivery order
//! ([`Lanes`]): when one fails for a transient reason, the messages of its key queued behind
//! it are nacked undecided, so that Pub/Sub delivers them again after it instead of their
//! being decided before it.
//! Flow control bounds the messages delivered but not yet settled (`pubsub.max_outstanding`),
//! so a flood cannot exhaust memory. The crate resumes a stream after transport errors by
//! itself; when a stream fails for good (the subscription vanished, say), the consumer opens a
//! new one after a backoff that doubles up to `pubsub.reconnect_max_ms`. `PUBSUB_EMULATOR_HOST`
//! is mapped to an `http://` endpoint with anonymous credentials (the crate does not read it).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;
use google_cloud_auth::credentials::{anonymous, Credentials};
use google_cloud_pubsub::client::{Subscriber, TopicAdmin};
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler as Settle;

use super::message::{message_id, Delivery};
use super::{deliver, PubsubHealth};
use crate::config::PubsubSettings;
use crate::intake::Intake;
use crate::telemetry::events;

/// Where the consumer connects.
#[derive(Clone)]
pub struct ConsumerConfig {
    pub subscription: String,
    pub topic: Option<String>,
    /// `host:port` of the emulator, or empty for Google.
    pub emulator_host: String,
    pub max_outstanding: u32,
    pub lease_extension: Duration,
    pub max_lease: Duration,
    pub health_interval: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl ConsumerConfig {
    /// The consumer's configuration, when a subscription is set.
    pub fn from_settings(p: &PubsubSettings, project: Option<&str>) -> Option<ConsumerConfig> {
        Some(ConsumerConfig {
            subscription: p.subscription_path(project)?,
            topic: p.topic_path(project),
            emulator_host: p.emulator_host.clone(),
            max_outstanding: p.max_outstanding,
            lease_extension: Duration::from_secs(p.lease_extension_secs),
            max_lease: Duration::from_secs(p.max_lease_secs),
            health_interval: Duration::from_millis(p.health_interval_ms),
            reconnect_min: Duration::from_millis(p.reconnect_min_ms),
            reconnect_max: Duration::from_millis(p.reconnect_max_ms),
        })
    }

    fn endpoint(&self) -> Option<(String, Credentials)> {
        (!self.emulator_host.is_empty()).then(|| {
            let host = self.emulator_host.trim_start_matches("http://");
            (format!("http://{host}"), anonymous::Builder::new().build())
        })
    }

    async fn subscriber(&self) -> Result<Subscriber, String> {
        let mut b = Subscriber::builder();
        if let Some((endpoint, creds)) = self.endpoint() {
            b = b.with_endpoint(endpoint).with_credentials(creds);
        }
        b.build().await.map_err(|e| e.to_string())
    }

    /// Checks connectivity every `health_interval` for as long as the actor lives: the
    /// guide's check, a read of the topic (`pubsub.topics.get`).
    async fn probe_forever(self, health: PubsubHealth) {
        let deadline = self
            .health_interval
            .clamp(Duration::from_millis(200), Duration::from_secs(5));
        let mut admin: Option<TopicAdmin> = None;
        loop {
            let ok = match &self.topic {
                None => true,
                Some(topic) => {
                    if admin.is_none() {
                        let mut b = TopicAdmin::builder();
                        if let Some((endpoint, creds)) = self.endpoint() {
                            b = b.with_endpoint(endpoint).with_credentials(creds);
                        }
                        admin = b.build().await.ok();
                    }
                    match &admin {
                        Some(a) => {
                            let get = a.get_topic().set_topic(topic.clone()).send();
                            matches!(actix_web::rt::time::timeout(deadline, get).await, Ok(Ok(_)))
                        }
                        None => false,
                    }
                }
            };
            health.probe(ok);
            actix::clock::sleep(self.health_interval).await;
        }
    }
}

/// The supervised consumer.
pub struct PubsubConsumer {
    intake: Intake,
    cfg: ConsumerConfig,
    health: PubsubHealth,
}

impl PubsubConsumer {
    pub fn new(intake: Intake, cfg: ConsumerConfig, health: PubsubHealth) -> Self {
        PubsubConsumer {
            intake,
            cfg,
            health,
        }
    }
}

impl Actor for PubsubConsumer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(subscription = %self.cfg.subscription, emulator = %self.cfg.emulator_host, max_outstanding = self.cfg.max_outstanding, "pub/sub consumer started");
        ctx.spawn(wrap_future(pull(
            self.intake.clone(),
            self.cfg.clone(),
            self.health.clone(),
        )));
        ctx.spawn(wrap_future(
            self.cfg.clone().probe_forever(self.health.clone()),
        ));
    }
}

/// Chaos hook: panic inside a handler.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

impl Handler<Crash> for PubsubConsumer {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("chaos: pub/sub consumer crash requested");
    }
}

/// Pulls for as long as the actor lives, reopening the stream after a backoff when it fails.
async fn pull(intake: Intake, cfg: ConsumerConfig, health: PubsubHealth) {
    let mut backoff = cfg.reconnect_min;
    let lanes = Lanes::default();
    loop {
        let failure = match cfg.subscriber().await {
            Err(e) => e,
            Ok(client) => {
                let mut stream = client
                    .subscribe(&cfg.subscription)
                    .set_max_outstanding_messages(i64::from(cfg.max_outstanding))
                    .set_max_lease_extension(cfg.lease_extension)
                    .set_max_lease(cfg.max_lease)
                    .build();
                loop {
                    match stream.next().await {
                        Some(Ok(pulled)) => {
                            health.stream_delivered();
                            backoff = cfg.reconnect_min;
                            events::pubsub_outstanding(1.0);
                            health.outstanding(1, None);
                            let key = pulled.0.ordering_key.clone();
                            let first = if key.is_empty() {
                                Some(pulled)
                            } else {
                                lanes.push(&key, pulled)
                            };
                            if let Some(first) = first {
                                let (intake, health, lanes) =
                                    (intake.clone(), health.clone(), lanes.clone());
                                actix_web::rt::spawn(async move {
                                    lanes.run(key, first, &intake, &health).await;
                                });
                            }
                        }
                        Some(Err(e)) => break e.to_string(),
                        None => break "the stream ended".to_owned(),
                    }
                }
            }
        };
        health.stream_failed();
        events::pubsub_reconnect(&failure);
        actix::clock::sleep(backoff).await;
        backoff = (backoff * 2).min(cfg.reconnect_max);
    }
}

/// A pulled message and the handle that settles it.
type Pulled = (Message, Settle);

/// How a pulled message was settled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settled {
    Acked,
    /// Nacked after a failure that a redelivery may not meet (the ledger away, a governor
    /// restarting).
    Transient,
    /// Nacked for good (malformed, unknown tenant): the dead-letter policy takes it.
    Rejected,
}

/// How long a key's later messages are held back behind one that failed, at most: Pub/Sub
/// delivers a nacked message again at once, or after the subscription's retry backoff.
const HOLD: Duration = Duration::from_secs(60);

/// The lanes of the ordering keys.
#[derive(Default)]
struct LaneState {
    /// The messages of each key that wait behind the one being decided, in delivery order.
    waiting: HashMap<String, VecDeque<Pulled>>,
    /// Keys whose message failed for a transient reason and has not come back yet: the id of
    /// that message, and since when.
    held: HashMap<String, (String, std::time::Instant)>,
}

/// The first message of a key runs its lane: it decides the key's messages one at a time
/// until none waits, so the outcome of each is known before the next is decided.
#[derive(Clone, Default)]
struct Lanes(Arc<Mutex<LaneState>>);

impl Lanes {
    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `m`, of `key`, comes while an earlier message of its key that failed has not
    /// come back: it is then nacked undecided. The failed message itself ends the hold.
    fn held_back(&self, key: &str, m: &Message) -> bool {
        let mut lanes = self.lock();
        let Some((id, since)) = lanes.held.get(key) else {
            return false;
        };
        if *id == m.message_id || since.elapsed() > HOLD {
            lanes.held.remove(key);
            return false;
        }
        true
    }

    /// Queues `p` behind the message of `key` being decided; hands it back when there is
    /// none, for the caller to run the key's lane with it.
    fn push(&self, key: &str, p: Pulled) -> Option<Pulled> {
        let mut lanes = self.lock();
        let lanes = &mut lanes.waiting;
        match lanes.get_mut(key) {
            Some(waiting) => {
                waiting.push_back(p);
                None
            }
            None => {
                lanes.insert(key.to_owned(), VecDeque::new());
                Some(p)
            }
        }
    }

    /// The next message of `key`; `None` closes its lane.
    fn next(&self, key: &str) -> Option<Pulled> {
        let mut lanes = self.lock();
        let lanes = &mut lanes.waiting;
        let next = lanes.get_mut(key)?.pop_front();
        if next.is_none() {
            lanes.remove(key);
        }
        next
    }

    /// Every message waiting behind the one of `key` being decided, which failed; from now on
    /// the key's messages are held back until `failed` comes again, unless Pub/Sub may give
    /// up on it (a dead-letter policy: `delivery_attempt` is set), since the later ones would
    /// then be held back, each hold a delivery attempt, until they were dead-lettered too.
    fn failed(&self, key: &str, failed: String, may_give_up: bool) -> VecDeque<Pulled> {
        let mut lanes = self.lock();
        if !may_give_up {
            lanes
                .held
                .insert(key.to_owned(), (failed, std::time::Instant::now()));
        }
        lanes
            .waiting
            .get_mut(key)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Decides `first` and then every message of `key` queued behind it, one at a time (a
    /// message with no key is a lane of its own). After a transient failure, the messages
    /// waiting are nacked undecided: with message ordering, Pub/Sub delivers the failed
    /// message again before them.
    async fn run(&self, key: String, first: Pulled, intake: &Intake, health: &PubsubHealth) {
        let mut current = Some(first);
        while let Some(p) = current {
            if !key.is_empty() && self.held_back(&key, &p.0) {
                hold_back(p, &key, health);
            } else {
                let (id, may_give_up) = (p.0.message_id.clone(), p.1.delivery_attempt().is_some());
                if settle(p, intake, health).await == Settled::Transient && !key.is_empty() {
                    for p in self.failed(&key, id, may_give_up) {
                        hold_back(p, &key, health);
                    }
                }
            }
            current = if key.is_empty() {
                None
            } else {
                self.next(&key)
            };
        }
    }
}

/// Nacks `p` undecided: an earlier message of its key failed and is to be decided first.
fn hold_back((m, handler): Pulled, key: &str, health: &PubsubHealth) {
    tracing::debug!(message_id = %m.message_id, ordering_key = %key, "nacked behind a message of its key that failed");
    handler.nack();
    events::pubsub_settled("nack");
    events::pubsub_outstanding(-1.0);
    health.outstanding(-1, Some(false));
}

/// Decides one pulled message and acks or nacks it.
async fn settle((m, handler): Pulled, intake: &Intake, health: &PubsubHealth) -> Settled {
    let settled = match message_id(&m.message_id) {
        Ok(id) => {
            let d = Delivery {
                message_id: id,
                data: m.data.to_vec(),
                attributes: m.attributes,
            };
            let out = deliver(intake, "pull", &d).await;
            match out {
                _ if out.ack() => Settled::Acked,
                super::Delivered::Transient(_) => Settled::Transient,
                _ => Settled::Rejected,
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "pub/sub message with an unusable id");
            events::pubsub_message("pull", "malformed");
            Settled::Rejected
        }
    };
    let ack = settled == Settled::Acked;
    if ack {
        handler.ack();
        events::pubsub_settled("ack");
    } else {
        handler.nack();
        events::pubsub_settled("nack");
    }
    events::pubsub_outstanding(-1.0);
    health.outstanding(-1, Some(ack));
    settled
}
