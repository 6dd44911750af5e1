//! The Pub/Sub message format (SPEC §9), pure: `attributes.kind` = `signal` (the default; data
//! `{tenant_id, metric, value, timestamp_ms}`) or `marketplace` (data as `POST /marketplace`),
//! data JSON; and the push delivery around it: the standard envelope (`{"message": {data
//! (base64), attributes, messageId}, "subscription"}`), or, from a subscription with payload
//! unwrapping and write metadata, the bare data with the id and attributes in headers.
//! Anything else is malformed, with a reason that says why.

use std::collections::HashMap;

use base64::Engine as _;
use serde::Deserialize;

use crate::intake::{MarketplaceRequest, Object, SignalRequest};
use crate::tenant::TenantId;

/// A message id is at most this long (Pub/Sub's are decimal numbers of about 16 digits), in
/// visible ASCII like an `Idempotency-Key`, which shares its ledger index. So its characters
/// are its bytes: 128 characters of up to four bytes would escape to a Firestore document id
/// past its 1,500 bytes.
const MAX_MESSAGE_ID: usize = 128;

/// What a message asks for.
#[derive(Debug, Clone)]
pub enum Inbound {
    Signal {
        tenant: TenantId,
        signal: SignalRequest,
    },
    Marketplace {
        tenant: TenantId,
        request: MarketplaceRequest,
    },
}

/// Why a message cannot be processed (redelivery cannot help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalData {
    tenant_id: String,
    metric: String,
    value: f64,
    #[serde(default, deserialize_with = "crate::intake::whole")]
    timestamp_ms: Option<u64>,
}

fn tenant(raw: &str) -> Result<TenantId, Malformed> {
    TenantId::parse(raw).map_err(|m| Malformed(format!("tenant_id: {m}")))
}

/// Reads a message's data by its `kind` attribute.
pub fn parse(data: &[u8], attributes: &HashMap<String, String>) -> Result<Inbound, Malformed> {
    let json = |e: serde_json::Error| Malformed(format!("data is not the expected JSON: {e}"));
    match attributes.get("kind").map(String::as_str) {
        None | Some("signal") => {
            let Object(d) = serde_json::from_slice::<Object<SignalData>>(data).map_err(json)?;
            Ok(Inbound::Signal {
                tenant: tenant(&d.tenant_id)?,
                signal: SignalRequest {
                    metric: d.metric,
                    value: d.value,
                    timestamp_ms: d.timestamp_ms,
                },
            })
        }
        Some("marketplace") => {
            let Object(request) =
                serde_json::from_slice::<Object<MarketplaceRequest>>(data).map_err(json)?;
            Ok(Inbound::Marketplace {
                tenant: tenant(&request.tenant_id)?,
                request,
            })
        }
        Some(other) => Err(Malformed(format!(
            "attribute kind is {:?}; expected signal or marketplace",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

/// Checks a message id before it is stored.
pub fn message_id(raw: &str) -> Result<String, Malformed> {
    if raw.is_empty() || raw.len() > MAX_MESSAGE_ID || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Malformed(format!(
            "message id must be 1-{MAX_MESSAGE_ID} visible ASCII characters (no spaces)"
        )));
    }
    if raw.starts_with(crate::intake::IDEMPOTENCY_PREFIX) {
        return Err(Malformed(format!(
            "message ids beginning with {:?} are reserved for HTTP idempotency keys",
            crate::intake::IDEMPOTENCY_PREFIX
        )));
    }
    Ok(raw.to_owned())
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(deserialize_with = "crate::intake::object")]
    message: PushMessage,
    #[allow(dead_code)]
    subscription: Option<String>,
}

/// A push envelope's message. Pub/Sub writes its id (and publish time) twice, as `messageId`
/// and `message_id`: a struct member with the one as an alias of the other refused every real
/// delivery as a duplicate field.
#[derive(Deserialize)]
struct PushMessage {
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    attributes: Option<HashMap<String, String>>,
    #[serde(rename = "messageId", default)]
    camel_id: Option<String>,
    #[serde(rename = "message_id", default)]
    snake_id: Option<String>,
}

impl PushMessage {
    /// The message id, under either name; both, when given, must agree.
    fn id(&self) -> Result<&str, Malformed> {
        match (self.camel_id.as_deref(), self.snake_id.as_deref()) {
            (Some(a), Some(b)) if a != b => Err(Malformed(format!(
                "message.messageId and message.message_id differ ({:?}, {:?})",
                a.chars().take(64).collect::<String>(),
                b.chars().take(64).collect::<String>()
            ))),
            (Some(id), _) | (None, Some(id)) => Ok(id),
            (None, None) => Err(Malformed("message.messageId is missing".into())),
        }
    }
}

/// One message as delivered: id, data and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    pub data: Vec<u8>,
    pub attributes: HashMap<String, String>,
}

/// The header an unwrapped push carries its message id in (payload unwrapping with write
/// metadata); attributes come as headers named after them (`kind: marketplace`).
pub const UNWRAPPED_ID_HEADER: &str = "x-goog-pubsub-message-id";

/// Reads a push request body (the standard push envelope).
pub fn parse_push(body: &[u8]) -> Result<Delivery, Malformed> {
    let Object(env) = serde_json::from_slice::<Object<Envelope>>(body).map_err(|e| {
        Malformed(format!(
            "not a Pub/Sub push envelope: {e} (a subscription with payload unwrapping must \
             also write metadata, so that the message id comes in {UNWRAPPED_ID_HEADER})"
        ))
    })?;
    let data = match env.message.data.as_deref() {
        None | Some("") => Vec::new(),
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| Malformed(format!("message.data is not base64: {e}")))?,
    };
    Ok(Delivery {
        message_id: message_id(env.message.id()?)?,
        data,
        attributes: env.message.attributes.unwrap_or_default(),
    })
}

/// Reads an unwrapped push (payload unwrapping with write metadata): the body is the message's
/// data as published, the id is the `x-goog-pubsub-message-id` header's and `kind` the header of
/// that attribute's name (`None` when absent; a value that is not text is malformed).
pub fn parse_unwrapped(body: &[u8], id: &[u8], kind: Option<&[u8]>) -> Result<Delivery, Malformed> {
    let text = |what: &str, v: &[u8]| {
        std::str::from_utf8(v)
            .map(str::to_owned)
            .map_err(|_| Malformed(format!("header {what} is not text")))
    };
    let message_id = message_id(&text(UNWRAPPED_ID_HEADER, id)?)?;
    let attributes = match kind {
        Some(k) => [("kind".to_owned(), text("kind", k)?)].into(),
        None => HashMap::new(),
    };
    Ok(Delivery {
        message_id,
        data: body.to_vec(),
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unwrapped_push_takes_its_id_and_kind_from_headers_and_its_data_as_it_came() {
        let data = br#"{"tenant_id":"acme","metric":"cpu","value":72}"#;
        let d = parse_unwrapped(data, b"2070443601311540", Some(b"signal")).unwrap();
        assert_eq!(d.message_id, "2070443601311540");
        assert_eq!(d.data, data);
        assert_eq!(d.attributes, attrs(Some("signal")));
        assert!(parse(&d.data, &d.attributes).is_ok());
        assert!(parse_unwrapped(data, b"7", None)
            .unwrap()
            .attributes
            .is_empty());
        for (id, kind, says) in [
            (&b""[..], None, "message id"),
            (&b"a b"[..], None, "message id"),
            (&b"\xff"[..], None, "not text"),
            (&b"7"[..], Some(&b"\xff"[..]), "kind is not text"),
        ] {
            let e = parse_unwrapped(data, id, kind).unwrap_err();
            assert!(e.0.contains(says), "{e}");
        }
    }

    fn attrs(kind: Option<&str>) -> HashMap<String, String> {
        kind.map(|k| [("kind".to_owned(), k.to_owned())].into())
            .unwrap_or_default()
    }

    #[test]
    fn signals_are_the_default_kind() {
        let data = br#"{"tenant_id":"acme","metric":"cpu","value":72.5,"timestamp_ms":5}"#;
        for kind in [None, Some("signal")] {
            match parse(data, &attrs(kind)).unwrap() {
                Inbound::Signal { tenant, signal } => {
                    assert_eq!(tenant.as_str(), "acme");
                    assert_eq!(
                        (signal.metric.as_str(), signal.value, signal.timestamp_ms),
                        ("cpu", 72.5, Some(5))
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn marketplace_messages_carry_the_marketplace_body() {
        let data = br#"{"tenant_id":"acme","entitlement_id":"e1","action":"grant","sku":"base"}"#;
        assert!(matches!(
            parse(data, &attrs(Some("marketplace"))).unwrap(),
            Inbound::Marketplace { tenant, .. } if tenant.as_str() == "acme"
        ));
    }

    #[test]
    fn malformed_messages_say_why() {
        let cases: &[(&[u8], Option<&str>, &str)] = &[
            (b"not json", None, "JSON"),
            (
                br#"{"tenant_id":"acme","metric":"cpu","value":"NaN"}"#,
                None,
                "JSON",
            ),
            (
                br#"{"tenant_id":"acme","metric":"cpu","value":1e999}"#,
                None,
                "JSON",
            ),
            (br#"{"tenant_id":"acme","metric":"cpu"}"#, None, "value"),
            (
                br#"{"tenant_id":"../etc","metric":"cpu","value":1}"#,
                None,
                "tenant_id",
            ),
            (
                br#"{"tenant_id":"acme","metric":"cpu","value":1,"x":2}"#,
                None,
                "unknown field",
            ),
            (
                br#"{"tenant_id":"acme","metric":"cpu","value":1}"#,
                Some("bogus"),
                "kind",
            ),
            (
                br#"{"tenant_id":"acme","action":"grant"}"#,
                Some("marketplace"),
                "entitlement_id",
            ),
            // A derived struct would take its members as an array, in order.
            (br#"["acme","cpu",1,null]"#, None, "expected a JSON object"),
            (
                br#"["acme","e1","revoke",null,null,null,null,null]"#,
                Some("marketplace"),
                "expected a JSON object",
            ),
        ];
        for (data, kind, want) in cases {
            let e = parse(data, &attrs(*kind)).unwrap_err();
            assert!(e.0.contains(want), "{e} should mention {want}");
        }
    }

    #[test]
    fn push_envelopes_decode_base64_data() {
        let data = base64::engine::general_purpose::STANDARD.encode(b"{\"a\":1}");
        let body = json!({"message": {"data": data, "attributes": {"kind": "signal"}, "messageId": "123", "publishTime": "2026-01-01T00:00:00Z"}, "subscription": "projects/p/subscriptions/s"});
        let d = parse_push(body.to_string().as_bytes()).unwrap();
        assert_eq!(d.message_id, "123");
        assert_eq!(d.data, b"{\"a\":1}");
        assert_eq!(d.attributes["kind"], "signal");
        // The snake_case spelling Pub/Sub also sends works too, alone or, as Pub/Sub sends
        // it, beside the other.
        let body = json!({"message": {"message_id": "9"}});
        assert_eq!(
            parse_push(body.to_string().as_bytes()).unwrap().message_id,
            "9"
        );
        let body = json!({"subscription": "projects/p/subscriptions/s", "message": {
            "publishTime": "2026-12-07T09:04:04.159Z", "data": data, "publish_time": "2026-12-07T09:04:04.159Z",
            "messageId": "2", "attributes": {"kind": "signal"}, "message_id": "2"}});
        assert_eq!(
            parse_push(body.to_string().as_bytes()).unwrap().message_id,
            "2"
        );
        let longest = "~".repeat(MAX_MESSAGE_ID);
        let body = json!({"message": {"messageId": longest}});
        assert_eq!(
            parse_push(body.to_string().as_bytes()).unwrap().message_id,
            longest
        );
    }

    #[test]
    fn bad_envelopes_are_malformed() {
        for body in [
            json!({}),
            json!({"message": {}}),
            json!({"message": {"messageId": ""}}),
            json!({"message": {"messageId": "1", "data": "***"}}),
            json!({"message": {"messageId": "x".repeat(129)}}),
            json!({"message": {"messageId": "1 2"}}),
            json!({"message": {"messageId": "é"}}),
            json!({"message": {"messageId": 5}}),
            json!({"message": {"messageId": "1", "message_id": "2"}}),
            json!([{"messageId": "1"}, "projects/p/subscriptions/s"]),
            json!({"message": ["e30=", {}, "1"]}),
        ] {
            assert!(parse_push(body.to_string().as_bytes()).is_err(), "{body}");
        }
    }
}
