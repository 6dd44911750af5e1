//! Telling a client's retry from an `Idempotency-Key` used again for another request.
//!
//! A key names one request. The ledger finds the receipt a key was first recorded with; before
//! that receipt is replayed, the request in hand is held to what the receipt records of the
//! first one (its kind and its members, as the receipt's metadata holds them). A retry matches
//! and gets the replay; anything else is 422 `idempotency_key_reused`, and nothing is decided
//! or recorded. Pure: no actor, no I/O.

use serde_json::Value;

use crate::http::error::{ApiError, ErrorCode};
use crate::receipts::Receipt;

/// A request sent with an idempotency key, in the terms its receipt records it.
#[derive(Debug, Clone)]
pub enum Keyed {
    /// A signal: `metadata.input`. A missing `timestamp_ms` was the server's clock, so only a
    /// given one is compared.
    Signal {
        metric: String,
        value: f64,
        timestamp_ms: Option<u64>,
    },
    /// A tool call: `metadata.tool` and `metadata.args` (`{}` when none were sent).
    ToolCall { tool: String, args: Value },
    /// A marketplace request: `metadata.request` as the Entitlements actor records it.
    Marketplace(Value),
    /// An entitlement event: `metadata.request`, the event as recorded.
    EntitlementEvent(Value),
}

/// What a recorded request was, told from its receipt's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Signal,
    ToolCall,
    Marketplace,
    EntitlementEvent,
}

impl Kind {
    fn of(metadata: &Value) -> Option<Kind> {
        if metadata.get("tool").is_some() {
            Some(Kind::ToolCall)
        } else if metadata.get("input").is_some_and(Value::is_object) {
            Some(Kind::Signal)
        } else {
            let request = metadata.get("request")?;
            if request.get("action").is_some() {
                Some(Kind::Marketplace)
            } else if request.get("event").is_some() {
                Some(Kind::EntitlementEvent)
            } else {
                None
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Signal => "a signal",
            Kind::ToolCall => "a tool call",
            Kind::Marketplace => "a marketplace request",
            Kind::EntitlementEvent => "an entitlement event",
        }
    }
}

/// Members of a marketplace request that say what it asks for (`signature_verified` says how
/// it was checked, which a configuration change may alter between a request and its retry).
const MARKETPLACE_MEMBERS: [&str; 6] = [
    "action",
    "entitlement_id",
    "sku",
    "customer_id",
    "reason",
    "expires_at",
];

impl Keyed {
    fn kind(&self) -> Kind {
        match self {
            Keyed::Signal { .. } => Kind::Signal,
            Keyed::ToolCall { .. } => Kind::ToolCall,
            Keyed::Marketplace(_) => Kind::Marketplace,
            Keyed::EntitlementEvent(_) => Kind::EntitlementEvent,
        }
    }

    /// The first member in which `metadata` (of a receipt of this kind) records another
    /// request than this one, if any.
    fn differs(&self, metadata: &Value) -> Option<&'static str> {
        match self {
            Keyed::Signal {
                metric,
                value,
                timestamp_ms,
            } => {
                let input = &metadata["input"];
                if input["metric"].as_str() != Some(metric.as_str()) {
                    Some("metric")
                } else if input["value"].as_f64() != Some(*value) {
                    Some("value")
                } else if timestamp_ms.is_some_and(|t| input["timestamp_ms"].as_u64() != Some(t)) {
                    Some("timestamp_ms")
                } else {
                    None
                }
            }
            Keyed::ToolCall { tool, args } => {
                if metadata["tool"].as_str() != Some(tool.as_str()) {
                    Some("tool")
                } else if metadata.get("args").is_some_and(|a| a != args) {
                    // Receipts written before tool receipts recorded their arguments have none.
                    Some("args")
                } else {
                    None
                }
            }
            Keyed::Marketplace(request) => MARKETPLACE_MEMBERS
                .into_iter()
                .find(|m| metadata["request"][m] != request[m]),
            Keyed::EntitlementEvent(request) => ["event", "value"]
                .into_iter()
                .find(|m| metadata["request"][m] != request[m]),
        }
    }

    /// Whether `first`, the receipt the key `key` was first recorded with, records this same
    /// request: `Ok` for a retry, else 422 `idempotency_key_reused` naming the first request.
    /// A receipt whose metadata shows no request of a known kind is taken as a retry.
    pub fn check(&self, key: &str, first: &Receipt) -> Result<(), ApiError> {
        let Some(kind) = Kind::of(&first.metadata) else {
            return Ok(());
        };
        let what = if kind != self.kind() {
            format!("for {}, not {}", kind.name(), self.kind().name())
        } else {
            match self.differs(&first.metadata) {
                None => return Ok(()),
                Some(member) => format!("for {} with another {member}", kind.name()),
            }
        };
        Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            format!(
                "idempotency key {key} was used before {what} (receipt seq {}, {}); a key names \
                 one request, so send this one with a new key",
                first.seq, first.receipt_id
            ),
        ))
    }
}

/// A keyed request kept for checking its replay; it holds a request only when the request's
/// ledger id is a client's idempotency id (a Pub/Sub message id is one message, delivered again
/// as it was, and is not checked).
#[derive(Debug, Clone)]
pub struct Replay(Option<(String, Keyed)>);

impl Replay {
    /// `keyed` (built only when needed) for the ledger id `message_id`.
    pub fn of(message_id: Option<&str>, keyed: impl FnOnce() -> Keyed) -> Replay {
        Replay(
            message_id
                .and_then(super::idempotency_key)
                .map(|key| (key.to_owned(), keyed())),
        )
    }

    /// The answer to a keyed request, checked: when the ledger answered with the receipt the
    /// key was first recorded with instead of deciding (`duplicate`; `first`, the last of the
    /// answer's receipts), [`Keyed::check`] of that receipt.
    pub fn check(&self, duplicate: bool, first: Option<&Receipt>) -> Result<(), ApiError> {
        match (&self.0, first) {
            (Some((key, keyed)), Some(first)) if duplicate => keyed.check(key, first),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn receipt(metadata: Value) -> Receipt {
        let mut r: Receipt = serde_json::from_value(json!({
            "receipt_id": "r-1", "tenant_id": "acme", "seq": 7, "type": "transition",
            "event_type": "signal_processed", "state_from": null, "state_to": null,
            "reason": "", "metadata": {}, "node": "n", "timestamp": "t",
            "prev_hash": "0", "receipt_hash": "0",
        }))
        .unwrap();
        r.metadata = metadata;
        r
    }

    fn signal(metric: &str, value: f64, timestamp_ms: Option<u64>) -> Keyed {
        Keyed::Signal {
            metric: metric.into(),
            value,
            timestamp_ms,
        }
    }

    fn refused(keyed: &Keyed, metadata: Value) -> String {
        let e = keyed.check("k1", &receipt(metadata)).unwrap_err();
        assert_eq!(e.code, ErrorCode::IdempotencyKeyReused);
        assert_eq!(e.code.status().as_u16(), 422);
        e.message
    }

    #[test]
    fn a_retry_of_the_same_signal_is_replayed() {
        let first = json!({"input": {"metric": "cpu", "value": 50.0, "timestamp_ms": 17},
            "idempotency_key": "k1"});
        let r = receipt(first);
        assert!(signal("cpu", 50.0, None).check("k1", &r).is_ok());
        assert!(signal("cpu", 50.0, Some(17)).check("k1", &r).is_ok());
    }

    #[test]
    fn a_signal_with_other_members_is_refused_with_the_member() {
        let first = json!({"input": {"metric": "cpu", "value": 50.0, "timestamp_ms": 17}});
        let m = refused(&signal("mem", 50.0, None), first.clone());
        assert!(m.contains("for a signal with another metric"), "{m}");
        assert!(m.contains("receipt seq 7, r-1"), "{m}");
        let m = refused(&signal("cpu", 51.0, None), first.clone());
        assert!(m.contains("another value"), "{m}");
        let m = refused(&signal("cpu", 50.0, Some(18)), first);
        assert!(m.contains("another timestamp_ms"), "{m}");
    }

    #[test]
    fn a_key_of_another_kind_of_request_is_refused_with_both_kinds() {
        let tool = json!({"tool": "health", "args": {}, "result": {}});
        let m = refused(&signal("cpu", 50.0, None), tool);
        assert!(m.contains("for a tool call, not a signal"), "{m}");
        let grant = json!({"request": {"action": "grant", "entitlement_id": "e1"}});
        let m = refused(
            &Keyed::EntitlementEvent(json!({"event": "pack_enabled", "value": "enterprise"})),
            grant,
        );
        assert!(
            m.contains("for a marketplace request, not an entitlement event"),
            "{m}"
        );
        let event = json!({"request": {"event": "pack_enabled", "value": "enterprise"}});
        let m = refused(
            &Keyed::ToolCall {
                tool: "health".into(),
                args: json!({}),
            },
            event,
        );
        assert!(
            m.contains("for an entitlement event, not a tool call"),
            "{m}"
        );
    }

    #[test]
    fn tool_calls_compare_the_tool_and_recorded_arguments() {
        let call = |tool: &str, args: Value| Keyed::ToolCall {
            tool: tool.into(),
            args,
        };
        let first = json!({"tool": "receipts_verify", "args": {"receipt_id": "a"}});
        let r = receipt(first.clone());
        assert!(call("receipts_verify", json!({"receipt_id": "a"}))
            .check("k1", &r)
            .is_ok());
        let m = refused(
            &call("receipts_verify", json!({"receipt_id": "b"})),
            first.clone(),
        );
        assert!(m.contains("another args"), "{m}");
        let m = refused(&call("health", json!({"receipt_id": "a"})), first);
        assert!(m.contains("another tool"), "{m}");
        // A receipt from before tool receipts recorded their arguments.
        let old = receipt(json!({"tool": "health", "result": {}}));
        assert!(call("health", json!({"x": 1})).check("k1", &old).is_ok());
    }

    #[test]
    fn marketplace_requests_compare_what_they_ask_for_not_how_they_were_checked() {
        let first = json!({"request": {"action": "grant", "entitlement_id": "e1", "sku": "base",
            "customer_id": null, "reason": null, "expires_at": null, "signature_verified": true}});
        let mut again = first["request"].clone();
        again["signature_verified"] = json!(false);
        assert!(Keyed::Marketplace(again.clone())
            .check("k1", &receipt(first.clone()))
            .is_ok());
        again["sku"] = json!("enterprise");
        let m = refused(&Keyed::Marketplace(again), first);
        assert!(
            m.contains("for a marketplace request with another sku"),
            "{m}"
        );
    }

    #[test]
    fn receipts_of_no_known_request_and_pubsub_ids_are_left_alone() {
        let unknown = receipt(json!({"gates": {"entitlement": "pass"}}));
        assert!(signal("cpu", 1.0, None).check("k1", &unknown).is_ok());
        let tool = receipt(json!({"tool": "health"}));
        let keyed = || signal("cpu", 1.0, None);
        // A Pub/Sub message id is not a client's key; a first answer is no replay.
        assert!(Replay::of(Some("12345"), keyed)
            .check(true, Some(&tool))
            .is_ok());
        assert!(Replay::of(None, keyed).check(true, Some(&tool)).is_ok());
        let replay = Replay::of(Some("http:acme:k1"), keyed);
        assert!(replay.check(false, Some(&tool)).is_ok());
        assert!(replay.check(true, None).is_ok());
        let e = replay.check(true, Some(&tool)).unwrap_err();
        assert!(e.message.starts_with("idempotency key k1 was used before"));
    }
}
