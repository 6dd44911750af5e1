//! The PubsubConsumer actor: a streaming pull (`google-cloud-pubsub`) on the configured
//! subscription, supervised like every other child (a crash is a restart).
//!
//! Each message goes through [`super::deliver`] on a task of its own and is acked only after
//! its receipt is durable (or when it is a duplicate of one that is), nacked when it is
//! malformed (the dead-letter policy takes it) or when the failure is transient (redelivery).
//! Messages with an ordering key are decided one at a time per key, in delivery order
//! (`Lanes`): when one fails for a transient reason, the messages of its key queued behind
//! it, and those that arrive until it comes back, are nacked undecided, so that Pub/Sub
//! delivers them again after it instead of their being decided before it (not past its last
//! delivery attempt under the subscription's dead-letter policy, and for as long as its retry
//! policy may wait to deliver it again; both read at each stream's start).
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
use google_cloud_pubsub::client::{Subscriber, SubscriptionAdmin, TopicAdmin};
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

    /// When Pub/Sub gives up on a message this subscription delivers, and how long it may
    /// wait to deliver a nacked one again, read from the subscription (its dead-letter and
    /// retry policies); `Unknown` and a minute when it cannot be read (a service account
    /// allowed to consume but not to read the subscription, say).
    async fn policy(&self) -> Policy {
        let mut b = SubscriptionAdmin::builder();
        if let Some((endpoint, creds)) = self.endpoint() {
            b = b.with_endpoint(endpoint).with_credentials(creds);
        }
        let read = async {
            let admin = b.build().await.map_err(|e| e.to_string())?;
            let sub = admin
                .get_subscription()
                .set_subscription(self.subscription.clone())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((sub.dead_letter_policy, sub.retry_policy))
        };
        let (give_up, hold) = match actix_web::rt::time::timeout(Duration::from_secs(5), read).await
        {
            Ok(Ok((dead_letter, retry))) => (
                match dead_letter {
                    None => GiveUp::Never,
                    // 0 stands for Pub/Sub's default, 5.
                    Some(p) if p.max_delivery_attempts <= 0 => GiveUp::After(5),
                    Some(p) => GiveUp::After(p.max_delivery_attempts),
                },
                hold_for(retry.map(|r| {
                    r.maximum_backoff
                        .and_then(|d| u64::try_from(d.seconds()).ok())
                        .map(Duration::from_secs)
                })),
            ),
            Ok(Err(e)) => {
                tracing::warn!(subscription = %self.subscription, error = %e, "the subscription's dead-letter and retry policies could not be read: after a transient failure, only the messages of its ordering key already received are held back, for a minute at most");
                (GiveUp::Unknown, hold_for(None))
            }
            Err(_) => {
                tracing::warn!(subscription = %self.subscription, "the subscription's dead-letter and retry policies were not read within 5 s: after a transient failure, only the messages of its ordering key already received are held back, for a minute at most");
                (GiveUp::Unknown, hold_for(None))
            }
        };
        tracing::info!(subscription = %self.subscription, dead_letter_after = ?give_up, order_hold_secs = hold.as_secs(), "pub/sub subscription read");
        Policy { give_up, hold }
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
                let policy = cfg.policy().await;
                health.policy(policy.dead_letter_after(), policy.hold);
                {
                    let mut state = lanes.lock();
                    (state.give_up, state.hold) = (policy.give_up, policy.hold);
                }
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

/// When Pub/Sub gives up on a message that is not acked (its subscription's dead-letter
/// policy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum GiveUp {
    /// No dead-letter policy: it is delivered again until it is acked or expires.
    Never,
    /// After this many delivery attempts it goes to the dead-letter topic.
    After(i32),
    /// The subscription could not be read.
    #[default]
    Unknown,
}

/// What the consumer knows of its subscription's policies, read at each stream's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Policy {
    give_up: GiveUp,
    /// How long a key's later messages are held back behind one that failed, at most.
    hold: Duration,
}

impl Policy {
    /// For `GET /v1/pubsub`: `Some(None)` never, `Some(Some(n))` after n attempts, `None` not
    /// known.
    fn dead_letter_after(&self) -> Option<Option<i32>> {
        match self.give_up {
            GiveUp::Never => Some(None),
            GiveUp::After(n) => Some(Some(n)),
            GiveUp::Unknown => None,
        }
    }
}

/// How long a key's later messages are held back behind one that failed for a transient
/// reason, for a subscription with this retry policy (`None`: none, so a nacked message is
/// delivered again at once; `Some(None)`: one with Pub/Sub's default maximum backoff, 600 s):
/// the longest Pub/Sub may wait before delivering the failed message again, and a minute
/// more for the delivery itself.
fn hold_for(retry_max_backoff: Option<Option<Duration>>) -> Duration {
    const MARGIN: Duration = Duration::from_secs(60);
    const MAX_BACKOFF: Duration = Duration::from_secs(600);
    match retry_max_backoff {
        None => MARGIN,
        Some(max) => max.unwrap_or(MAX_BACKOFF).min(MAX_BACKOFF) + MARGIN,
    }
}

/// Which messages of its key a transient failure holds back ([`Lanes::failed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HoldBack {
    /// None: Pub/Sub dead-letters the failed message and goes on with the next.
    Nothing,
    /// Those received and waiting behind it.
    Waiting,
    /// Those waiting, and the later ones until it comes back.
    WaitingAndLater,
}

impl HoldBack {
    /// For a message nacked at its `attempt`-th delivery (`None`: the subscription does not
    /// count, having no dead-letter policy) on a subscription that gives up as `give_up` says.
    fn after(attempt: Option<i32>, give_up: GiveUp) -> HoldBack {
        match (attempt, give_up) {
            (Some(n), GiveUp::After(max)) if n >= max => HoldBack::Nothing,
            (Some(_), GiveUp::Unknown) => HoldBack::Waiting,
            _ => HoldBack::WaitingAndLater,
        }
    }
}

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

/// The lanes of the ordering keys.
#[derive(Default)]
struct LaneState {
    /// The messages of each key that wait behind the one being decided, in delivery order.
    waiting: HashMap<String, VecDeque<Pulled>>,
    /// When Pub/Sub gives up on a message of the subscription, as read at the stream's start.
    give_up: GiveUp,
    /// How long a key's later messages are held back behind one that failed, at most
    /// ([`hold_for`]); zero until the subscription is read.
    hold: Duration,
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
        if *id == m.message_id || since.elapsed() > lanes.hold {
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

    /// The messages of `key` to nack undecided after `failed` (delivered for the
    /// `attempt`-th time, when the subscription counts) failed for a transient reason: those
    /// waiting behind it, and from now on the key's later ones until `failed` comes again.
    /// Not when this nack is its last delivery attempt: Pub/Sub dead-letters it and goes on
    /// with the next, so the key's messages are decided as they come. And when it is not
    /// known whether Pub/Sub gives up on it, only those waiting: held back while it is gone,
    /// the later ones would spend their own delivery attempts until they were dead-lettered
    /// too.
    fn failed(&self, key: &str, failed: String, attempt: Option<i32>) -> VecDeque<Pulled> {
        let mut lanes = self.lock();
        let hold = HoldBack::after(attempt, lanes.give_up);
        if hold == HoldBack::WaitingAndLater {
            // Holds whose message never came back end here too, not only when their key's
            // next message comes.
            let hold = lanes.hold;
            lanes.held.retain(|_, (_, since)| since.elapsed() <= hold);
            lanes
                .held
                .insert(key.to_owned(), (failed, std::time::Instant::now()));
        }
        if hold == HoldBack::Nothing {
            return VecDeque::new();
        }
        lanes
            .waiting
            .get_mut(key)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Decides `first` and then every message of `key` queued behind it, one at a time (a
    /// message with no key is a lane of its own). After a transient failure, the key's
    /// messages are held back as [`Lanes::failed`] says: with message ordering, Pub/Sub
    /// delivers the failed message again before them.
    async fn run(&self, key: String, first: Pulled, intake: &Intake, health: &PubsubHealth) {
        let mut current = Some(first);
        while let Some(p) = current {
            if !key.is_empty() && self.held_back(&key, &p.0) {
                hold_back(p, &key, health);
            } else {
                let (id, attempt) = (p.0.message_id.clone(), p.1.delivery_attempt());
                if settle(p, intake, health).await == Settled::Transient && !key.is_empty() {
                    for p in self.failed(&key, id, attempt) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_holds_back_its_key_unless_pub_sub_gives_up_on_it() {
        use HoldBack::*;
        // No dead-letter policy: the message comes back, whatever the subscription said.
        assert_eq!(HoldBack::after(None, GiveUp::Never), WaitingAndLater);
        assert_eq!(HoldBack::after(None, GiveUp::Unknown), WaitingAndLater);
        // A policy read from the subscription: held until the last attempt.
        assert_eq!(HoldBack::after(Some(1), GiveUp::After(5)), WaitingAndLater);
        assert_eq!(HoldBack::after(Some(4), GiveUp::After(5)), WaitingAndLater);
        assert_eq!(HoldBack::after(Some(5), GiveUp::After(5)), Nothing);
        assert_eq!(HoldBack::after(Some(9), GiveUp::After(5)), Nothing);
        // A policy that could not be read: the later ones might wait for a message that is gone.
        assert_eq!(HoldBack::after(Some(1), GiveUp::Unknown), Waiting);
    }

    #[test]
    fn a_key_is_held_back_for_as_long_as_the_retry_policy_may_wait() {
        let secs = Duration::from_secs;
        // No retry policy: a nacked message comes back at once.
        assert_eq!(hold_for(None), secs(60));
        // A retry policy: its maximum backoff (Pub/Sub's default 600 s, and at most that).
        assert_eq!(hold_for(Some(None)), secs(660));
        assert_eq!(hold_for(Some(Some(secs(120)))), secs(180));
        assert_eq!(hold_for(Some(Some(secs(3600)))), secs(660));

        let message = |id: &str| Message::new().set_message_id(id);
        let lanes = Lanes::default();
        lanes.lock().hold = hold_for(Some(Some(secs(120))));
        assert!(lanes.failed("k", "1".into(), None).is_empty());
        assert!(lanes.held_back("k", &message("2")));
        assert!(!lanes.held_back("other", &message("3")));
        // The failed message coming back ends the hold.
        assert!(!lanes.held_back("k", &message("1")));
        assert!(!lanes.held_back("k", &message("2")));
        // So does the hold running out.
        lanes.lock().hold = Duration::ZERO;
        lanes.failed("k", "1".into(), None);
        std::thread::sleep(Duration::from_millis(2));
        assert!(!lanes.held_back("k", &message("2")));
        let after = |give_up| {
            Policy {
                give_up,
                hold: secs(60),
            }
            .dead_letter_after()
        };
        assert_eq!(after(GiveUp::Unknown), None);
        assert_eq!(after(GiveUp::Never), Some(None));
        assert_eq!(after(GiveUp::After(5)), Some(Some(5)));
    }
}
