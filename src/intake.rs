//! The governed entry points that HTTP, Pub/Sub (push and pull) and later MCP share: a
//! validated signal goes to its tenant's governor (started on demand; unknown tenants are 404
//! and nothing is started or stored), a validated marketplace request to the Entitlements
//! actor. Every input gets an answer within `governance.decision_timeout_ms` (503
//! `decision_pending` past it); a crashed or restarting governor gives a prompt 503, and an
//! input that a governor left unhandled as it hibernated goes to the next one. Idempotency keys
//! become ledger ids beside the Pub/Sub message ids ([`idempotency_id`]), and a key's replay is
//! given only to the request it names ([`Replay`]). Callers add their own authentication, rate
//! limits and delivery semantics.

mod replay;

use std::time::Duration;

use serde::Deserialize;
use supervisors::{ChildRef, DynamicRef};

use crate::config::{MarketplaceSettings, Settings};
use crate::entitlements::signature::{verify, Expectations, Keys};
use crate::entitlements::{
    Action, ApplyEvent, Changed, Entitlement, Entitlements, Event, GetEntitlement, Marketplace,
    ReloadEntitlement,
};
use crate::governor::{CurrentView, Governor, GovernorView, Outcome, Signal, SubmitSignal};
use crate::http::error::{ApiError, ErrorCode};
use crate::tenant::TenantId;
pub use replay::{Keyed, Replay};

/// A signal as clients send it (`POST /v1/tenants/{t}/signals`, Pub/Sub `data` without the
/// tenant).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    pub metric: String,
    pub value: f64,
    #[serde(default, deserialize_with = "whole")]
    pub timestamp_ms: Option<u64>,
}

/// The marketplace's request (`POST /marketplace`, Pub/Sub `kind = marketplace`).
#[derive(Debug, Clone, Deserialize)]
pub struct MarketplaceRequest {
    pub tenant_id: String,
    pub entitlement_id: String,
    pub action: Action,
    pub sku: Option<String>,
    pub customer_id: Option<String>,
    pub reason: Option<String>,
    /// RFC 3339 UTC; the entitlement is inactive after it.
    pub expires_at: Option<String>,
    /// A JWT (RS256/ES256) over the same `tenant_id`, `entitlement_id` and `action`.
    pub signature: Option<String>,
}

/// A request body that must be a JSON object. serde's derived structs (and adjacently tagged
/// enums) also take a JSON array of their members in order, so `["cpu", 90, null]` would pass
/// for a signal; every body and Pub/Sub payload is read through this instead, and an array (or
/// any other JSON type) is refused as `invalid type: sequence, expected a JSON object`.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        object(d).map(Object)
    }
}

/// [`Object`] for a member (`#[serde(deserialize_with = "object")]`).
pub fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Members<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Members<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(Members(std::marker::PhantomData))
}

/// An optional whole number (`#[serde(default, deserialize_with = "whole")]`), which JSON
/// may also write with a zero fraction (`1700000000000.0`, as a client that computes it in
/// floating point sends it): JSON Schema's `integer`, as the OpenAPI document declares these
/// members. A fraction, a negative number or one past `u64` is refused.
pub fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::{Error, Unexpected};
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a non-negative whole number")
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
            whole_f64(v)
                .map(Some)
                .ok_or_else(|| E::invalid_value(Unexpected::Float(v), &self))
        }
    }
    d.deserialize_any(Whole)
}

/// A JSON value as a `u64` when it is a whole number in range, in any spelling ([`whole`]).
pub fn whole_value(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_f64().and_then(whole_f64))
}

fn whole_f64(v: f64) -> Option<u64> {
    // 2^64 is the first whole f64 past u64::MAX.
    (v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v)).then_some(v as u64)
}

/// One page of running governors.
pub struct GovernorPage {
    pub entries: Vec<(String, ChildRef<Governor>)>,
    /// The cursor of the next page, when there is one.
    pub next_after: Option<String>,
    /// Governors running in all.
    pub total: usize,
}

/// Handles to the actors inputs go to, and the rules they are checked by.
#[derive(Clone)]
pub struct Intake {
    governors: DynamicRef<String, Governor>,
    entitlements: ChildRef<Entitlements>,
    decision_timeout: Duration,
    marketplace: MarketplaceSettings,
    marketplace_keys: Option<Keys>,
}

/// Maps a call to a governor that did not answer: it crashed or is restarting.
pub fn restarting(e: supervisors::CallError) -> ApiError {
    match e {
        supervisors::CallError::Timeout => ApiError::new(
            ErrorCode::Unavailable,
            "the governor did not answer in time",
        )
        .retry_after(1),
        other => ApiError::new(
            ErrorCode::GovernorRestarting,
            format!("the governor is restarting ({other}); retry shortly"),
        )
        .retry_after(1),
    }
}

/// How the ledger's message-id index tells an HTTP idempotency key from a Pub/Sub message id
/// (those never begin with it: Pub/Sub's are decimal, and push refuses the prefix).
pub const IDEMPOTENCY_PREFIX: &str = "http:";

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The ledger id of a client's `Idempotency-Key` for `tenant`: one receipt per id, as for a
/// Pub/Sub message id. Keys are per tenant (two tenants may use the same key).
pub fn idempotency_id(tenant: &TenantId, key: &str) -> Result<String, ApiError> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters (no spaces)"
            ),
        ));
    }
    Ok(format!("{IDEMPOTENCY_PREFIX}{tenant}:{key}"))
}

/// The client's key inside a ledger id made by [`idempotency_id`], if it is one.
pub fn idempotency_key(ledger_id: &str) -> Option<&str> {
    let rest = ledger_id.strip_prefix(IDEMPOTENCY_PREFIX)?;
    rest.split_once(':').map(|(_, key)| key)
}

/// Records an input's ledger message id in a receipt's metadata (an object): the client's
/// idempotency key as `idempotency_key`, a Pub/Sub message id as `pubsub_message_id`.
pub fn record_message_id(metadata: &mut serde_json::Value, message_id: &str) {
    if let serde_json::Value::Object(m) = metadata {
        match idempotency_key(message_id) {
            Some(key) => m.insert("idempotency_key".into(), key.into()),
            None => m.insert("pubsub_message_id".into(), message_id.into()),
        };
    }
}

/// Levels of objects and arrays that client JSON a receipt records (tool arguments) may nest:
/// the receipt's metadata holds it one or two levels down, well inside the ledger's
/// [`crate::receipts::receipt::MAX_METADATA_NESTING`].
pub const MAX_RECORDED_NESTING: usize = 8;

/// Bytes of JSON that client data a receipt records may take: receipts are an audit trail,
/// and a Firestore document holds at most 1 MiB whatever `http.max_body_bytes` allows.
pub const MAX_RECORDED_BYTES: usize = 16 * 1024;

/// Checks client JSON that a receipt will record; the message names `field`.
pub fn check_recorded_json(field: &str, v: &serde_json::Value) -> Result<(), String> {
    if crate::receipts::receipt::nesting(v) > MAX_RECORDED_NESTING {
        return Err(format!(
            "{field} may nest at most {MAX_RECORDED_NESTING} levels of objects and arrays"
        ));
    }
    let mut size = ByteCount(0);
    if serde_json::to_writer(&mut size, v).is_err() || size.0 > MAX_RECORDED_BYTES {
        return Err(format!(
            "{field} may take at most {} KiB as JSON",
            MAX_RECORDED_BYTES / 1024
        ));
    }
    Ok(())
}

/// The `limit` smallest keys above `after`, in order, with their values, from one visit of
/// every (key, value); also how many keys lie above `after`, and how many were visited. A
/// bounded max-heap holds the candidates, so only they are cloned.
fn page_after<T: Clone>(
    visit: impl FnOnce(&mut dyn FnMut(&str, &T)),
    after: &str,
    limit: usize,
) -> (Vec<(String, T)>, usize, usize) {
    struct ByKey<T>(String, T);
    impl<T> PartialEq for ByKey<T> {
        fn eq(&self, other: &Self) -> bool {
            self.0 == other.0
        }
    }
    impl<T> Eq for ByKey<T> {}
    impl<T> PartialOrd for ByKey<T> {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl<T> Ord for ByKey<T> {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            self.0.cmp(&other.0)
        }
    }
    let mut page: std::collections::BinaryHeap<ByKey<T>> = Default::default();
    let (mut above, mut total) = (0, 0);
    visit(&mut |k, v| {
        total += 1;
        if k <= after {
            return;
        }
        above += 1;
        if page.len() < limit {
            page.push(ByKey(k.to_owned(), v.clone()));
        } else if page.peek().is_some_and(|largest| k < largest.0.as_str()) {
            page.pop();
            page.push(ByKey(k.to_owned(), v.clone()));
        }
    });
    let entries = (page.into_sorted_vec().into_iter())
        .map(|ByKey(k, v)| (k, v))
        .collect();
    (entries, above, total)
}

/// Counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether `v` is 1 to `max` characters (Unicode scalar values, as JSON Schema's `maxLength`
/// counts them and the error messages say), none of them a control character.
pub fn printable(v: &str, max: usize) -> bool {
    !v.is_empty() && v.chars().take(max + 1).count() <= max && !v.chars().any(char::is_control)
}

fn short_text(field: &str, v: &str) -> Result<(), ApiError> {
    if !printable(v, 128) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{field} must be 1-128 printable characters"),
        ));
    }
    Ok(())
}

impl Intake {
    pub fn new(
        settings: &Settings,
        governors: DynamicRef<String, Governor>,
        entitlements: ChildRef<Entitlements>,
    ) -> anyhow::Result<Intake> {
        Ok(Intake {
            governors,
            entitlements,
            decision_timeout: Duration::from_millis(settings.governance.decision_timeout_ms),
            marketplace_keys: load_marketplace_keys(&settings.marketplace)?,
            marketplace: settings.marketplace.clone(),
        })
    }

    /// The tenant's governor, started on demand; 404 (and nothing started) for unknown tenants.
    pub async fn governor(&self, tenant: &TenantId) -> Result<ChildRef<Governor>, ApiError> {
        // A governor that has just hibernated is not returned: a fresh one is started below.
        if let Some(g) = (self.governors.get(&tenant.to_string())).filter(|g| !g.ended_in_order()) {
            return Ok(g);
        }
        let known = self
            .entitlements_within(GetEntitlement(tenant.to_string()), false)
            .await??;
        if known.is_none() {
            return Err(ApiError::new(
                ErrorCode::TenantNotFound,
                format!("tenant {tenant} not found"),
            ));
        }
        self.governors
            .get_or_start(tenant.to_string())
            .await
            .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))
    }

    /// Running governors in tenant order after `after`, at most `limit` (hibernated governors
    /// are not listed). One pass over the registry keeps only the page's candidates: a million
    /// governors are neither copied nor sorted for a page of ten.
    pub fn running_governors(&self, after: &str, limit: usize) -> GovernorPage {
        let (entries, above, total) =
            page_after(|f| self.governors.for_each(|k, c| f(k, c)), after, limit);
        let next_after = (above > limit)
            .then(|| entries.last().map(|(t, _)| t.clone()))
            .flatten();
        GovernorPage {
            entries,
            next_after,
            total,
        }
    }

    /// Sends `msg` to the tenant's governor (started on demand) and waits at most the decision
    /// deadline; also returns the governor that answered.
    pub async fn ask<M>(
        &self,
        tenant: &TenantId,
        msg: M,
    ) -> Result<(ChildRef<Governor>, M::Result), ApiError>
    where
        M: actix::Message + Clone + Send + 'static,
        M::Result: Send,
        Governor: actix::Handler<M>,
    {
        let deadline = self.decision_timeout;
        let on_deadline = || {
            ApiError::new(
                ErrorCode::DecisionPending,
                format!(
                    "the governor did not decide within {} ms (the ledger is slow); the input is \
                     still on its way and may yet be decided and recorded: read the tenant's \
                     receipts before sending it again",
                    deadline.as_millis()
                ),
            )
            .retry_after(1)
        };
        self.call_within(tenant, deadline, on_deadline, |g| g.call(msg.clone()))
            .await
    }

    /// The tenant's governor and its view as the chain stands ([`CurrentView`]: one store read,
    /// and a reload if another instance's governor decided since), within the decision
    /// deadline. A governor that is deciding (its receipt not yet durable, the ledger slow)
    /// answers when it has decided; past the deadline the read is 503 `decision_pending`.
    pub async fn view(
        &self,
        tenant: &TenantId,
    ) -> Result<(ChildRef<Governor>, GovernorView), ApiError> {
        let deadline = self.decision_timeout;
        let on_deadline = || {
            ApiError::new(
                ErrorCode::DecisionPending,
                format!(
                    "the governor is still deciding an input after {} ms (the ledger is slow); \
                     its state can be read once that decision is recorded",
                    deadline.as_millis()
                ),
            )
            .retry_after(1)
        };
        let (g, view) =
            (self.call_within(tenant, deadline, on_deadline, |g| g.call(CurrentView))).await?;
        Ok((g, view?))
    }

    /// Sends what `call` sends to the tenant's governor and waits at most `deadline`
    /// (`on_deadline` then). A governor that hibernated (stopped in order) just as the input
    /// came never decided it: the input goes once more, to a governor rebuilt from its chain,
    /// instead of the caller getting a 503 for a governor that never crashed.
    pub async fn call_within<R, F>(
        &self,
        tenant: &TenantId,
        deadline: Duration,
        on_deadline: impl Fn() -> ApiError,
        call: impl Fn(&ChildRef<Governor>) -> F,
    ) -> Result<(ChildRef<Governor>, R), ApiError>
    where
        F: std::future::Future<Output = Result<R, supervisors::CallError>>,
    {
        let mut g = self.governor(tenant).await?;
        let mut tries = 0;
        loop {
            tries += 1;
            match actix_web::rt::time::timeout(deadline, call(&g)).await {
                Ok(Ok(r)) => return Ok((g, r)),
                Ok(Err(
                    supervisors::CallError::StoppedBeforeAnswer | supervisors::CallError::Stopped,
                )) if tries == 1 => g = self.governor(tenant).await?,
                Ok(Err(e)) => return Err(restarting(e)),
                Err(_) => return Err(on_deadline()),
            }
        }
    }

    /// A signal for `tenant`, decided by its governor (`message_id`: the Pub/Sub message it
    /// came in, or an [`idempotency_id`], so a repeat gets the first receipt).
    pub async fn signal(
        &self,
        tenant: &TenantId,
        req: SignalRequest,
        message_id: Option<String>,
    ) -> Result<Outcome, ApiError> {
        if !printable(&req.metric, 128) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "metric must be 1-128 printable characters",
            ));
        }
        if !req.value.is_finite() {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "value must be a finite number",
            ));
        }
        let replay = Replay::of(message_id.as_deref(), || Keyed::Signal {
            metric: req.metric.clone(),
            value: req.value,
            timestamp_ms: req.timestamp_ms,
        });
        let signal = Signal {
            metric: req.metric,
            value: req.value,
            timestamp_ms: req.timestamp_ms.unwrap_or_else(crate::clock::now_ms),
        };
        let outcome = self
            .ask(tenant, SubmitSignal { signal, message_id })
            .await?
            .1?;
        replay.check(outcome.duplicate, outcome.receipts.last())?;
        Ok(outcome)
    }

    /// A marketplace request: fields checked, the signature when `marketplace.verify`, then the
    /// change decided by the Entitlements actor.
    pub async fn marketplace(
        &self,
        tenant: &TenantId,
        req: MarketplaceRequest,
        message_id: Option<String>,
    ) -> Result<Changed, ApiError> {
        self.change(tenant, req, message_id, self.marketplace.verify)
            .await
    }

    /// The same change asked for by an admin (MCP `taiea.entitlement.apply_event`), not by the
    /// marketplace: no signature.
    pub async fn entitlement_change(
        &self,
        tenant: &TenantId,
        req: MarketplaceRequest,
    ) -> Result<Changed, ApiError> {
        self.change(tenant, req, None, false).await
    }

    /// An entitlement event (SKU, packs, roles) for an existing tenant; `message_id` is the
    /// client's idempotency id, if any.
    pub async fn entitlement_event(
        &self,
        tenant: &TenantId,
        event: Event,
        message_id: Option<String>,
    ) -> Result<Changed, ApiError> {
        let replay = Replay::of(message_id.as_deref(), || {
            Keyed::EntitlementEvent(serde_json::to_value(&event).unwrap_or_default())
        });
        let msg = ApplyEvent {
            tenant_id: tenant.to_string(),
            event,
            message_id,
        };
        let changed = self.entitlements_within(msg, true).await??;
        replay.check(changed.duplicate, Some(&changed.receipt))?;
        Ok(changed)
    }

    /// The tenant's entitlement record (`None`: never granted).
    pub async fn entitlement(&self, tenant: &TenantId) -> Result<Option<Entitlement>, ApiError> {
        Ok(self
            .entitlements_within(GetEntitlement(tenant.to_string()), false)
            .await??)
    }

    /// The tenant's record read from the store past the Entitlements actor's cache, which
    /// drops what it held: after the ledger refused a receipt that named the cached record (a
    /// change made through another instance replaced it), and for a client's read of the
    /// record, which another instance may have changed.
    pub async fn reload_entitlement(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<Entitlement>, ApiError> {
        Ok(self
            .entitlements_within(ReloadEntitlement(tenant.to_string()), false)
            .await??)
    }

    /// Sends `msg` to the Entitlements actor and waits at most the decision deadline. The
    /// actor takes one change at a time and answers it once its receipt is durable, so while
    /// the ledger is slow every later message waits behind that change; past the deadline the
    /// caller gets 503 `decision_pending` (`change`: whether `msg` is a change itself).
    async fn entitlements_within<M>(&self, msg: M, change: bool) -> Result<M::Result, ApiError>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        Entitlements: actix::Handler<M>,
    {
        let deadline = self.decision_timeout;
        match actix_web::rt::time::timeout(deadline, self.entitlements.send(msg)).await {
            Ok(answer) => Ok(answer?),
            Err(_) => {
                let ms = deadline.as_millis();
                let message = if change {
                    format!(
                        "the entitlement change was not recorded within {ms} ms (the ledger is \
                         slow); it may yet be: read the tenant's entitlement before sending it again"
                    )
                } else {
                    format!(
                        "an entitlement change is still being recorded after {ms} ms (the ledger \
                         is slow); entitlements can be read once it is"
                    )
                };
                Err(ApiError::new(ErrorCode::DecisionPending, message).retry_after(1))
            }
        }
    }

    async fn change(
        &self,
        tenant: &TenantId,
        req: MarketplaceRequest,
        message_id: Option<String>,
        verify: bool,
    ) -> Result<Changed, ApiError> {
        short_text("entitlement_id", &req.entitlement_id)?;
        for (f, v) in [("sku", &req.sku), ("customer_id", &req.customer_id)] {
            if let Some(v) = v {
                short_text(f, v)?;
            }
        }
        let expires_at = match &req.expires_at {
            Some(e) => Some(crate::clock::normalize_rfc3339(e).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    "expires_at must be an RFC 3339 UTC timestamp such as 2027-01-01T00:00:00Z",
                )
            })?),
            None => None,
        };
        // Only a grant applies an expiry; with another action it is recorded in the receipt's
        // request as sent, and its time does not matter.
        if let Some(e) = expires_at.as_ref().filter(|_| req.action == Action::Grant) {
            // Both are RFC 3339 UTC with milliseconds, so the text orders as the time does.
            if *e <= crate::clock::now_rfc3339() {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("expires_at {e} is not in the future; an entitlement that has already expired cannot be granted"),
                ));
            }
        }
        let verified = verify;
        if verified {
            self.check_signature(&req)?;
        }
        let msg = Marketplace {
            tenant_id: tenant.to_string(),
            entitlement_id: req.entitlement_id,
            action: req.action,
            sku: req.sku,
            customer_id: req.customer_id,
            reason: req.reason.map(|r| r.chars().take(512).collect()),
            expires_at,
            signature_verified: verified,
            message_id,
        };
        let replay = Replay::of(msg.message_id.as_deref(), || {
            Keyed::Marketplace(msg.recorded_request())
        });
        let changed = self.entitlements_within(msg, true).await??;
        replay.check(changed.duplicate, Some(&changed.receipt))?;
        Ok(changed)
    }

    /// Checks the signature: pinned algorithms, `exp`/`iss`/`aud`, claims equal to the body.
    fn check_signature(&self, req: &MarketplaceRequest) -> Result<(), ApiError> {
        let refuse = |m: String| {
            crate::telemetry::events::refused("invalid_signature");
            // A misconfigured or hostile sender repeats these: one line a second (the metric
            // counts each).
            static REFUSED: crate::telemetry::budget::LogBudget =
                crate::telemetry::budget::LogBudget::new();
            if let Some(suppressed) = REFUSED.admit_now() {
                tracing::warn!(tenant = %req.tenant_id, reason = %m, suppressed, "marketplace signature refused");
            }
            ApiError::new(ErrorCode::InvalidSignature, m)
        };
        let token = req
            .signature
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refuse("signature is required".into()))?;
        let keys = self
            .marketplace_keys
            .as_ref()
            .ok_or_else(|| ApiError::internal("marketplace.verify is on but no key is loaded"))?;
        let m = &self.marketplace;
        let expect = Expectations {
            issuers: Some(m.issuer.clone())
                .filter(|s| !s.is_empty())
                .into_iter()
                .collect(),
            audience: Some(m.audience.clone()).filter(|s| !s.is_empty()),
            leeway_secs: m.leeway_secs,
            rs256_only: false,
        };
        let claims = verify(token, keys, &expect).map_err(|e| refuse(e.message))?;
        for (claim, body) in [
            ("tenant_id", req.tenant_id.as_str()),
            ("entitlement_id", req.entitlement_id.as_str()),
            ("action", req.action.as_str()),
        ] {
            if claims.get(claim).and_then(|v| v.as_str()) != Some(body) {
                return Err(refuse(format!(
                    "claim {claim} does not match the request body"
                )));
            }
        }
        Ok(())
    }
}

/// The marketplace signing keys, when signatures are verified.
fn load_marketplace_keys(m: &MarketplaceSettings) -> anyhow::Result<Option<Keys>> {
    if !m.verify {
        return Ok(None);
    }
    let keys = if !m.jwks_file.is_empty() {
        Keys::from_jwks_file(std::path::Path::new(&m.jwks_file))
    } else {
        Keys::from_pem_file(std::path::Path::new(&m.public_key_file))
    };
    keys.map(Some)
        .map_err(|e| anyhow::anyhow!("marketplace signature key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::{page_after, printable, Object, SignalRequest};

    #[test]
    fn whole_numbers_may_have_a_zero_fraction() {
        let read = |json: &str| {
            serde_json::from_str::<SignalRequest>(json)
                .map(|s| s.timestamp_ms)
                .map_err(|e| e.to_string())
        };
        let at = |t: &str| format!(r#"{{"metric":"cpu","value":1,"timestamp_ms":{t}}}"#);
        assert_eq!(read(r#"{"metric":"cpu","value":1}"#), Ok(None));
        assert_eq!(read(&at("null")), Ok(None));
        assert_eq!(read(&at("1700000000000")), Ok(Some(1_700_000_000_000)));
        assert_eq!(read(&at("1700000000000.0")), Ok(Some(1_700_000_000_000)));
        assert_eq!(read(&at("1.7e12")), Ok(Some(1_700_000_000_000)));
        assert_eq!(read(&at("18446744073709551615")), Ok(Some(u64::MAX)));
        for bad in [
            "1.5",
            "-1",
            "-1.0",
            "1.8446744073709552e19",
            "\"5\"",
            "true",
        ] {
            let e = read(&at(bad)).unwrap_err();
            assert!(
                e.contains("expected a non-negative whole number"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn printable_counts_characters_and_refuses_control_characters() {
        assert!(printable(&"€".repeat(128), 128));
        assert!(!printable(&"€".repeat(129), 128));
        assert!(printable("a", 1));
        for bad in ["", "a\nb", "\u{7f}", "a\u{85}"] {
            assert!(!printable(bad, 128), "{bad:?}");
        }
    }

    #[test]
    fn bodies_are_objects_and_keep_serdes_messages() {
        let Object(s) =
            serde_json::from_str::<Object<SignalRequest>>(r#"{"metric":"cpu","value":2}"#).unwrap();
        assert_eq!(
            (s.metric.as_str(), s.value, s.timestamp_ms),
            ("cpu", 2.0, None)
        );
        for (body, says) in [
            (
                r#"["cpu",2,null]"#,
                "invalid type: sequence, expected a JSON object",
            ),
            ("7", "invalid type: integer `7`, expected a JSON object"),
            (
                r#"{"metric":"cpu","value":2,"metric":"x"}"#,
                "duplicate field `metric` at line 1 column 34",
            ),
            (r#"{"metric":"cpu"}"#, "missing field `value`"),
        ] {
            let e = serde_json::from_str::<Object<SignalRequest>>(body).unwrap_err();
            assert!(
                e.is_data(),
                "{body}: a shape error, answered invalid_request"
            );
            assert!(e.to_string().contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn a_page_is_the_smallest_keys_after_the_cursor_in_order() {
        // 1,000 keys in a scrambled order (a registry's hash order), values their numbers.
        let keys: Vec<(String, u32)> = (0..1000u32)
            .map(|i| (i.wrapping_mul(7919) % 1000, i))
            .map(|(n, _)| (format!("t{n:04}"), n))
            .collect();
        let visit = |f: &mut dyn FnMut(&str, &u32)| keys.iter().for_each(|(k, v)| f(k, v));
        for (after, limit) in [("", 10), ("t0500", 3), ("t0997", 10), ("t0999", 5), ("", 0)] {
            let mut expected: Vec<(String, u32)> = keys
                .iter()
                .filter(|(k, _)| k.as_str() > after)
                .cloned()
                .collect();
            expected.sort();
            let above = expected.len();
            expected.truncate(limit);
            assert_eq!(
                page_after(visit, after, limit),
                (expected, above, 1000),
                "after {after:?}, limit {limit}"
            );
        }
    }
}
