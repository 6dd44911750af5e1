//! The PubsubConsumer actor: a streaming pull (`google-cloud-pubsub`) on the configured
//! subscription, supervised like every other child (a crash is a restart).
//!
//! Each message goes through [`super::deliver`] on a task of its own and is acked only after
//! its receipt is durable (or when it is a duplicate of one that is), nacked when it is
//! malformed (the dead-letter policy takes it) or when the failure is transient (redelivery).
//! Flow control bounds the messages delivered but not yet settled (`pubsub.max_outstanding`),
//! so a flood cannot exhaust memory. The crate resumes a stream after transport errors by
//! itself; when a stream fails for good (the subscription vanished, say), the consumer opens a
//! new one after a backoff that doubles up to `pubsub.reconnect_max_ms`. `PUBSUB_EMULATOR_HOST`
//! is mapped to an `http://` endpoint with anonymous credentials (the crate does not read it).

use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;
use google_cloud_auth::credentials::{anonymous, Credentials};
use google_cloud_pubsub::client::{Subscriber, TopicAdmin};

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
                        Some(Ok((m, handler))) => {
                            health.stream_delivered();
                            backoff = cfg.reconnect_min;
                            events::pubsub_outstanding(1.0);
                            health.outstanding(1, None);
                            let (intake, health) = (intake.clone(), health.clone());
                            actix_web::rt::spawn(async move {
                                let ack = match message_id(&m.message_id) {
                                    Ok(id) => {
                                        let d = Delivery {
                                            message_id: id,
                                            data: m.data.to_vec(),
                                            attributes: m.attributes,
                                        };
                                        deliver(&intake, "pull", &d).await.ack()
                                    }
                                    Err(e) => {
                                        tracing::warn!(error = %e, "pub/sub message with an unusable id");
                                        events::pubsub_message("pull", "malformed");
                                        false
                                    }
                                };
                                if ack {
                                    handler.ack();
                                    events::pubsub_settled("ack");
                                } else {
                                    handler.nack();
                                    events::pubsub_settled("nack");
                                }
                                events::pubsub_outstanding(-1.0);
                                health.outstanding(-1, Some(ack));
                            });
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
