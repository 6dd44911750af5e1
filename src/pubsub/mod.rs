//! Pub/Sub delivery (SPEC §9): push (`POST /pubsub`, in `http/pubsub.rs`) and pull (the
//! supervised [`consumer::PubsubConsumer`]) both hand each message to [`deliver`], the one path
//! from a message to a governed decision. A message id is stored with the receipt it produced,
//! in the same commit, so a redelivery is answered with that receipt and never makes a second.
//!
//! [`Delivered::ack`] is the rule both deliveries follow: every governed outcome (accepted, or
//! refused with its receipt, or a duplicate) is acknowledged; a malformed message or an unknown
//! tenant is refused so the subscription's dead-letter policy takes it; a transient failure
//! (ledger unavailable, governor restarting) is redelivered.

pub mod consumer;
pub mod message;
pub mod push_auth;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::error::{ApiError, ErrorCode};
use crate::intake::Intake;
use crate::telemetry::budget::LogBudget;
use crate::telemetry::events;
use message::{Delivery, Inbound};

/// What became of one message.
#[derive(Debug)]
pub enum Delivered {
    /// Decided and accepted; `receipt` records it.
    Accepted { receipt: Value, detail: Value },
    /// A governed refusal, with its receipt.
    Refused {
        code: ErrorCode,
        receipt: Value,
        detail: Value,
    },
    /// The message id had a receipt already; nothing new was decided.
    Duplicate { receipt: Value },
    /// Redelivery cannot help: malformed, unknown tenant, invalid request. Nothing was stored.
    Rejected(ApiError),
    /// Nothing was decided; a redelivery may succeed.
    Transient(ApiError),
}

impl Delivered {
    /// Whether Pub/Sub should consider the message delivered.
    pub fn ack(&self) -> bool {
        matches!(
            self,
            Delivered::Accepted { .. } | Delivered::Refused { .. } | Delivered::Duplicate { .. }
        )
    }

    /// The `outcome` label of the message metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Delivered::Accepted { .. } => "accepted",
            Delivered::Refused { .. } => "refused",
            Delivered::Duplicate { .. } => "duplicate",
            Delivered::Rejected(e) if e.code == ErrorCode::TenantNotFound => "unknown_tenant",
            Delivered::Rejected(_) => "malformed",
            Delivered::Transient(_) => "transient",
        }
    }

    /// The JSON answer of an acknowledged message.
    pub fn body(&self, message_id: &str) -> Value {
        match self {
            Delivered::Accepted { receipt, detail } => {
                json!({"ack": true, "outcome": "accepted", "message_id": message_id, "detail": detail, "receipt": receipt})
            }
            Delivered::Refused {
                code,
                receipt,
                detail,
            } => {
                json!({"ack": true, "outcome": "refused", "code": code, "message_id": message_id, "detail": detail, "receipt": receipt})
            }
            Delivered::Duplicate { receipt } => {
                json!({"ack": true, "outcome": "duplicate", "message_id": message_id, "receipt": receipt})
            }
            Delivered::Rejected(e) | Delivered::Transient(e) => {
                json!({"ack": false, "message_id": message_id, "code": e.code, "message": e.message})
            }
        }
    }
}

/// Sorts an error of the governed path: a refusal with a receipt is a governed outcome, a
/// client mistake is final, anything else may pass on redelivery.
fn classify(e: ApiError) -> Delivered {
    if let Some(receipt) = e.receipt.clone() {
        return Delivered::Refused {
            code: e.code,
            receipt,
            detail: json!({"message": e.message}),
        };
    }
    let status = e.code.status();
    if status.is_client_error() && e.code != ErrorCode::RateLimited {
        Delivered::Rejected(e)
    } else {
        let secs = e.retry_after_secs.unwrap_or(1);
        Delivered::Transient(e.retry_after(secs))
    }
}

/// Turns one message into exactly one governed decision (or its earlier receipt).
pub async fn deliver(intake: &Intake, via: &'static str, d: &Delivery) -> Delivered {
    let out = match message::parse(&d.data, &d.attributes) {
        Err(m) => Delivered::Rejected(ApiError::new(ErrorCode::InvalidRequest, m.0)),
        Ok(Inbound::Signal { tenant, signal }) => {
            match intake
                .signal(&tenant, signal, Some(d.message_id.clone()))
                .await
            {
                Ok(o) => {
                    // The receipt that records this message (a decision may append several).
                    let receipt = o
                        .receipts
                        .iter()
                        .find(|r| {
                            r.metadata.get("pubsub_message_id").and_then(Value::as_str)
                                == Some(d.message_id.as_str())
                        })
                        .or(o.receipts.last())
                        .and_then(|r| serde_json::to_value(r).ok())
                        .unwrap_or(Value::Null);
                    let detail = json!({"tenant_id": tenant.as_str(), "state": o.state, "postponed": o.postponed});
                    match o.refused {
                        _ if o.duplicate => Delivered::Duplicate { receipt },
                        None => Delivered::Accepted { receipt, detail },
                        Some((_, reason)) => Delivered::Refused {
                            code: crate::http::governors::refusal_code(reason, 409),
                            receipt,
                            detail,
                        },
                    }
                }
                Err(e) => classify(e),
            }
        }
        Ok(Inbound::Marketplace { tenant, request }) => {
            match intake
                .marketplace(&tenant, request, Some(d.message_id.clone()))
                .await
            {
                Ok(c) => {
                    let receipt = serde_json::to_value(&c.receipt).unwrap_or(Value::Null);
                    if c.duplicate {
                        Delivered::Duplicate { receipt }
                    } else {
                        let detail =
                            json!({"tenant_id": tenant.as_str(), "status": c.entitlement.status});
                        Delivered::Accepted { receipt, detail }
                    }
                }
                Err(e) => classify(e),
            }
        }
    };
    events::pubsub_message(via, out.outcome());
    if let Delivered::Rejected(e) = &out {
        // A message refused for now (503: redelivered later) comes by the thousand while the
        // ledger is away: one line a second of those. Malformed ones are each told.
        static TRANSIENT: LogBudget = LogBudget::new();
        if e.code.status() != actix_web::http::StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(message_id = %d.message_id, via, code = ?e.code, error = %e.message, "pub/sub message rejected");
        } else if let Some(suppressed) = TRANSIENT.admit_now() {
            tracing::warn!(message_id = %d.message_id, via, code = ?e.code, error = %e.message, suppressed, "pub/sub message rejected");
        }
    }
    out
}

/// `checks.pubsub_ready` of `/health`: `disabled` without a subscription, `ok` while the topic
/// answers and the stream has not failed lately, `error` otherwise (reconnecting). It never
/// affects readiness: a Pub/Sub blip must not restart a healthy instance.
#[derive(Clone, Default)]
pub struct PubsubHealth(Arc<HealthInner>);

#[derive(Default)]
struct HealthInner {
    subscription: std::sync::OnceLock<String>,
    acked: AtomicU64,
    nacked: AtomicU64,
    outstanding: AtomicU64,
    reconnects: AtomicU64,
    enabled: AtomicBool,
    probe_ok: AtomicBool,
    /// When the stream last failed (ms since the epoch; 0 = never).
    stream_failed_ms: AtomicU64,
    /// How long after a stream failure the status stays `error`.
    settle_ms: AtomicU64,
    /// The subscription's policies as the consumer last read them.
    policy: std::sync::Mutex<Option<Value>>,
}

impl PubsubHealth {
    /// Pull is configured: the status starts as `error` until the first check passes.
    pub fn enable(&self, subscription: &str, settle_ms: u64) {
        let _ = self.0.subscription.set(subscription.to_owned());
        self.0.settle_ms.store(settle_ms, Ordering::Release);
        self.0.enabled.store(true, Ordering::Release);
    }

    /// The consumer read its subscription at a stream's start: when Pub/Sub dead-letters a
    /// message (`None`: not known, the subscription could not be read; `Some(None)`: never),
    /// and how long a key's later messages are held back behind one that failed.
    pub fn policy(&self, dead_letter_after: Option<Option<i32>>, order_hold: Duration) {
        let read = json!({
            "read": dead_letter_after.is_some(),
            "dead_letter_after": dead_letter_after.flatten(),
            "order_hold_secs": order_hold.as_secs(),
        });
        *self.0.policy.lock().unwrap_or_else(|e| e.into_inner()) = Some(read);
    }

    pub fn probe(&self, ok: bool) {
        self.0.probe_ok.store(ok, Ordering::Release);
    }

    /// A pulled message arrived (`delta` 1) or was settled (`delta` -1, `acked` or not).
    pub fn outstanding(&self, delta: i64, acked: Option<bool>) {
        let h = &self.0;
        if delta > 0 {
            h.outstanding.fetch_add(1, Ordering::AcqRel);
        } else {
            h.outstanding.fetch_sub(1, Ordering::AcqRel);
        }
        match acked {
            Some(true) => h.acked.fetch_add(1, Ordering::AcqRel),
            Some(false) => h.nacked.fetch_add(1, Ordering::AcqRel),
            None => 0,
        };
    }

    /// This instance's consumer: subscription, status and counters (`GET /v1/pubsub`).
    pub fn snapshot(&self) -> Value {
        let h = &self.0;
        json!({
            "pubsub_ready": self.status(),
            "subscription": h.subscription.get(),
            "acked": h.acked.load(Ordering::Acquire),
            "nacked": h.nacked.load(Ordering::Acquire),
            "outstanding": h.outstanding.load(Ordering::Acquire),
            "stream_reconnects": h.reconnects.load(Ordering::Acquire),
            "subscription_policy": h.policy.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        })
    }

    pub fn stream_failed(&self) {
        self.0.reconnects.fetch_add(1, Ordering::AcqRel);
        self.0
            .stream_failed_ms
            .store(crate::clock::now_ms(), Ordering::Release);
    }

    /// A message arrived: the stream is up whatever happened before.
    pub fn stream_delivered(&self) {
        self.0.stream_failed_ms.store(0, Ordering::Release);
    }

    pub fn status(&self) -> &'static str {
        let h = &self.0;
        if !h.enabled.load(Ordering::Acquire) {
            return "disabled";
        }
        let failed = h.stream_failed_ms.load(Ordering::Acquire);
        let recent = failed > 0
            && crate::clock::now_ms().saturating_sub(failed) < h.settle_ms.load(Ordering::Acquire);
        if h.probe_ok.load(Ordering::Acquire) && !recent {
            "ok"
        } else {
            "error"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_probe_and_stream() {
        let h = PubsubHealth::default();
        assert_eq!(h.status(), "disabled");
        h.enable("projects/p/subscriptions/s", 60_000);
        assert_eq!(h.status(), "error");
        h.probe(true);
        assert_eq!(h.status(), "ok");
        h.stream_failed();
        assert_eq!(h.status(), "error");
        h.stream_delivered();
        assert_eq!(h.status(), "ok");
        h.probe(false);
        assert_eq!(h.status(), "error");
    }

    #[test]
    fn governed_refusals_are_acked_and_mistakes_are_not() {
        let refused = classify(
            ApiError::new(ErrorCode::GovernorRefusing, "refusing").with_receipt(
                &crate::receipts::ReceiptDraft::new(
                    "t",
                    crate::receipts::ReceiptType::Refusal,
                    "x",
                    "r",
                )
                .seal(None, "n", "ts".into()),
            ),
        );
        assert!(refused.ack());
        let unknown = classify(ApiError::new(ErrorCode::TenantNotFound, "no"));
        assert!(!unknown.ack());
        assert_eq!(unknown.outcome(), "unknown_tenant");
        let busy = classify(ApiError::new(ErrorCode::Unavailable, "ledger"));
        assert!(matches!(&busy, Delivered::Transient(e) if e.retry_after_secs == Some(1)));
    }
}
