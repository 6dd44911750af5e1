//! The Entitlements actor: the only writer of entitlement records. Each change is decided by the
//! pure model, appended as a receipt (with the new record, in the same commit) and then
//! published to subscribers (the governors connect here). Changes are handled one at a time, so
//! two changes to a tenant can never both start from the same record; and each is recorded only
//! if the record it was decided on is still the tenant's latest in the ledger (another instance
//! sharing the store may have replaced it), else decided once more on the stored one.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use serde_json::{json, Value};

use super::model::{Action, Entitlement, EntitlementError, Event, Status};
use crate::receipts::writer::{LedgerError, LedgerHandle, NewReceipt};
use crate::receipts::{LedgerStore, Receipt, ReceiptDraft, ReceiptType, StoreError};

/// Records kept in memory before the cache starts over (each reloads from the store).
const CACHE_LIMIT: usize = 100_000;

/// Published after every durable change.
#[derive(Debug, Clone)]
pub struct EntitlementChanged {
    pub entitlement: Entitlement,
    pub receipt: Receipt,
}

/// A subscriber to entitlement changes.
pub type ChangeSink = Arc<dyn Fn(&EntitlementChanged) + Send + Sync>;

/// A durable change.
#[derive(Debug, Clone)]
pub struct Changed {
    pub entitlement: Entitlement,
    pub receipt: Receipt,
    /// The request's Pub/Sub message id had a receipt already: `receipt` is that one, and
    /// nothing changed this time.
    pub duplicate: bool,
}

/// Why a change did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChangeError {
    /// The tenant was never granted; nothing was stored.
    #[error("tenant {0} not found")]
    NotFound(String),
    /// The request names something that does not exist; nothing was stored.
    #[error(transparent)]
    Input(EntitlementError),
    /// A valid request the current state refuses; the refusal has its receipt.
    #[error("{error}")]
    Refused {
        error: EntitlementError,
        receipt: Box<Receipt>,
    },
    /// The ledger could not make the receipt durable; nothing changed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The Entitlements actor.
pub struct Entitlements {
    ledger: LedgerHandle,
    cache: HashMap<String, Entitlement>,
    /// Shared with the tree so subscriptions outlive a restart of this actor.
    subscribers: Subscribers,
}

/// The subscriber list, kept outside the actor so that it survives restarts.
pub type Subscribers = Arc<std::sync::RwLock<Vec<ChangeSink>>>;

impl Entitlements {
    pub fn new(ledger: LedgerHandle, subscribers: Subscribers) -> Self {
        Entitlements {
            ledger,
            cache: HashMap::new(),
            subscribers,
        }
    }
}

impl Actor for Entitlements {
    type Context = Context<Self>;
}

/// Loads a tenant's record (cache, then store).
async fn load(
    ledger: &LedgerHandle,
    cached: Option<Entitlement>,
    tenant: &str,
) -> Result<Option<Entitlement>, StoreError> {
    if cached.is_some() {
        return Ok(cached);
    }
    match ledger.store().entitlement(tenant).await? {
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("entitlement of {tenant}: {e}"))),
        None => Ok(None),
    }
}

/// The record as the ledger stores it.
fn record_json(e: &Entitlement) -> Value {
    serde_json::to_value(e).unwrap_or(Value::Null)
}

/// The fingerprint the ledger gives `e` as the tenant's latest record (see
/// [`NewReceipt::expects`]): what a receipt decided on `e` expects.
pub fn fingerprint(e: &Entitlement) -> u64 {
    crate::receipts::writer::record_fingerprint(Some(&record_json(e)))
}

/// What a receipt decided on `current` (`None`: no record yet) expects the tenant's latest
/// record to be (see [`NewReceipt::expects`]).
fn expects(current: Option<&Entitlement>) -> Option<u64> {
    Some(current.map_or(
        crate::receipts::writer::record_fingerprint(None),
        fingerprint,
    ))
}

/// Appends the change's receipt together with the new record; `current` is the record it was
/// decided on.
async fn commit(
    ledger: &LedgerHandle,
    mut draft: ReceiptDraft,
    current: Option<&Entitlement>,
    next: Entitlement,
    message_id: Option<String>,
) -> Result<Changed, ChangeError> {
    if let Some(mid) = &message_id {
        crate::intake::record_message_id(&mut draft.metadata, mid);
    }
    let draft_id = draft.receipt_id.clone();
    let tenant = next.tenant_id.clone();
    let receipt = ledger
        .append_one(NewReceipt {
            draft,
            message_id,
            entitlement: Some(record_json(&next)),
            expects: expects(current),
            follows: None,
        })
        .await?;
    if receipt.receipt_id != draft_id {
        // Another delivery of the same message was recorded first; this change never happened.
        return duplicate(ledger, &tenant, receipt).await;
    }
    Ok(Changed {
        entitlement: next,
        receipt,
        duplicate: false,
    })
}

/// The answer to a redelivered message: its earlier receipt and the record as it is now.
async fn duplicate(
    ledger: &LedgerHandle,
    tenant: &str,
    existing: Receipt,
) -> Result<Changed, ChangeError> {
    let by_key = existing.metadata.get("idempotency_key").is_some();
    if !by_key {
        crate::telemetry::events::pubsub_duplicate();
    }
    let entitlement = load(ledger, None, tenant)
        .await?
        .ok_or_else(|| ChangeError::NotFound(tenant.to_owned()))?;
    Ok(Changed {
        entitlement,
        receipt: existing,
        duplicate: true,
    })
}

/// Appends the refusal receipt of a governed refusal and turns it into the error.
async fn refuse(
    ledger: &LedgerHandle,
    current: &Entitlement,
    error: EntitlementError,
    what: Value,
    message_id: Option<String>,
) -> ChangeError {
    let status = current.status.as_str();
    let mut metadata = json!({"request": what, "code": error.code()});
    if let Some(mid) = &message_id {
        crate::intake::record_message_id(&mut metadata, mid);
    }
    let draft = ReceiptDraft::new(
        &current.tenant_id,
        ReceiptType::Refusal,
        "entitlement_refused",
        error.to_string(),
    )
    .states(Some(status), Some(status))
    .metadata(metadata);
    let mut new = NewReceipt::new(draft);
    new.message_id = message_id;
    new.expects = expects(Some(current));
    match ledger.append_one(new).await {
        Ok(receipt) => ChangeError::Refused {
            error,
            receipt: Box::new(receipt),
        },
        Err(e) => ChangeError::Ledger(e),
    }
}

/// A marketplace request (`POST /marketplace`), already authenticated.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Changed, ChangeError>")]
pub struct Marketplace {
    pub tenant_id: String,
    pub entitlement_id: String,
    pub action: Action,
    pub sku: Option<String>,
    pub customer_id: Option<String>,
    pub reason: Option<String>,
    pub expires_at: Option<String>,
    /// Whether a signature was checked (recorded in the receipt).
    pub signature_verified: bool,
    /// The Pub/Sub message id it came in, or the client's idempotency id.
    pub message_id: Option<String>,
}

impl Marketplace {
    /// The request as its receipt records it (`metadata.request`).
    pub fn recorded_request(&self) -> Value {
        json!({
            "action": self.action.as_str(), "entitlement_id": self.entitlement_id, "sku": self.sku,
            "customer_id": self.customer_id, "reason": self.reason, "expires_at": self.expires_at,
            "signature_verified": self.signature_verified,
        })
    }
}

/// An entitlement event for an existing tenant.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Changed, ChangeError>")]
pub struct ApplyEvent {
    pub tenant_id: String,
    pub event: Event,
    /// The client's idempotency id ([`crate::intake::idempotency_id`]): a repeat is answered
    /// with the first receipt.
    pub message_id: Option<String>,
}

/// Reads a tenant's record.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Option<Entitlement>, StoreError>")]
pub struct GetEntitlement(pub String);

/// Reads a tenant's record from the store, past the cache (and drops the cached one): asked by
/// a governor whose decision a change of the record overtook. Handled after any change under
/// way has ended, so the store has it; read past the cache in case another instance made it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Option<Entitlement>, StoreError>")]
pub struct ReloadEntitlement(pub String);

impl Handler<ReloadEntitlement> for Entitlements {
    type Result = ResponseFuture<Result<Option<Entitlement>, StoreError>>;
    fn handle(&mut self, msg: ReloadEntitlement, _: &mut Context<Self>) -> Self::Result {
        // Not cached again: a change that starts while this read is under way must not be
        // overwritten by what the read found.
        self.cache.remove(&msg.0);
        let ledger = self.ledger.clone();
        Box::pin(async move { load(&ledger, None, &msg.0).await })
    }
}

/// Adds a subscriber to every durable change.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub ChangeSink);

impl Handler<Subscribe> for Entitlements {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        self.subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg.0);
    }
}

impl Handler<GetEntitlement> for Entitlements {
    type Result = ResponseFuture<Result<Option<Entitlement>, StoreError>>;
    fn handle(&mut self, msg: GetEntitlement, _: &mut Context<Self>) -> Self::Result {
        let cached = self.cache.get(&msg.0).cloned();
        let ledger = self.ledger.clone();
        Box::pin(async move { load(&ledger, cached, &msg.0).await })
    }
}

impl Entitlements {
    /// Stores the outcome of a change in the cache and tells the subscribers.
    fn publish(&mut self, changed: &Changed) {
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(
            changed.entitlement.tenant_id.clone(),
            changed.entitlement.clone(),
        );
        let event = EntitlementChanged {
            entitlement: changed.entitlement.clone(),
            receipt: changed.receipt.clone(),
        };
        for s in self
            .subscribers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            s(&event);
        }
        crate::telemetry::events::entitlement_changed(changed.entitlement.status.as_str());
    }
}

/// Runs a change atomically (one at a time) and publishes it once durable; a repeat of a
/// `message_id` that was recorded is answered with its receipt. `change` decides
/// it on the record it is given (the cached one first; `None`: read from the store). A change
/// decided on a record that is no longer the tenant's latest (another instance changed it and
/// this one's cache did not hear, or a commit of this actor's incarnation before a crash landed
/// after the record was read) is refused by the ledger with nothing written; it is decided
/// once more on the record as stored. A record that is not known to be current is not
/// kept in the cache.
fn publish_after<F, Fut>(
    act: &Entitlements,
    tenant: String,
    message_id: Option<String>,
    change: F,
) -> AtomicResponse<Entitlements, Result<Changed, ChangeError>>
where
    F: Fn(Option<Entitlement>) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<Changed, ChangeError>> + 'static,
{
    let cached = act.cache.get(&tenant).cloned();
    let ledger = act.ledger.clone();
    let of = tenant.clone();
    let work = async move {
        // A request whose message id (Pub/Sub, or an idempotency key) has a receipt already is
        // answered with it. Changes are handled one at a time, so a redelivery always sees the
        // first delivery's receipt.
        if let Some(mid) = &message_id {
            if let Some(existing) = ledger.store().by_message_id(mid).await? {
                return duplicate(&ledger, &of, existing).await;
            }
        }
        match change(cached).await {
            Err(ChangeError::Ledger(LedgerError::Superseded(_) | LedgerError::Conflict(_))) => {
                change(None).await
            }
            res => res,
        }
    };
    AtomicResponse::new(Box::pin(
        actix::fut::wrap_future::<_, Entitlements>(work).map(move |res, act, _| {
            match &res {
                Ok(changed) if !changed.duplicate => act.publish(changed),
                Ok(_) | Err(ChangeError::Refused { .. } | ChangeError::Input(_)) => {}
                Err(_) => {
                    act.cache.remove(&tenant);
                }
            }
            res
        }),
    ))
}

impl Handler<Marketplace> for Entitlements {
    type Result = AtomicResponse<Self, Result<Changed, ChangeError>>;
    fn handle(&mut self, msg: Marketplace, _: &mut Context<Self>) -> Self::Result {
        let ledger = self.ledger.clone();
        let (tenant, mid) = (msg.tenant_id.clone(), msg.message_id.clone());
        publish_after(self, tenant, mid, move |cached| {
            marketplace_change(ledger.clone(), msg.clone(), cached)
        })
    }
}

/// A marketplace request decided on `cached` (or the stored record) and recorded.
async fn marketplace_change(
    ledger: LedgerHandle,
    msg: Marketplace,
    cached: Option<Entitlement>,
) -> Result<Changed, ChangeError> {
    let now = crate::clock::now_rfc3339();
    let current = load(&ledger, cached, &msg.tenant_id).await?;
    let request = msg.recorded_request();
    let (next, from) = match (&current, msg.action) {
        (None, Action::Grant) => {
            let sku = msg.sku.as_deref().unwrap_or("base");
            let e = Entitlement::new(
                &msg.tenant_id,
                &msg.entitlement_id,
                msg.customer_id.clone(),
                sku,
                msg.expires_at.clone(),
                &now,
            )
            .map_err(ChangeError::Input)?;
            (e, None)
        }
        (None, _) => return Err(ChangeError::NotFound(msg.tenant_id.clone())),
        (Some(cur), action) => {
            if let Some(sku) = &msg.sku {
                if super::model::sku_packs(sku).is_none() {
                    return Err(ChangeError::Input(EntitlementError::UnknownSku(
                        sku.clone(),
                    )));
                }
            }
            let renewal = action == Action::Grant && cur.is_expired(&now);
            let status = match cur.marketplace_transition(action, &msg.entitlement_id, &now) {
                Ok(s) => s,
                Err(error) => {
                    return Err(refuse(&ledger, cur, error, request, msg.message_id.clone()).await)
                }
            };
            let mut e = cur.clone();
            e.status = status;
            e.updated_at = now.clone();
            if action == Action::Grant {
                e.entitlement_id.clone_from(&msg.entitlement_id);
                if let Some(sku) = &msg.sku {
                    e = e
                        .apply(&Event::SkuChanged(sku.clone()), &now)
                        .map_err(ChangeError::Input)?;
                }
                // A renewal replaces the expiry that passed (none: no expiry).
                if msg.expires_at.is_some() || renewal {
                    e.expires_at.clone_from(&msg.expires_at);
                }
            }
            if msg.customer_id.is_some() {
                e.customer_id.clone_from(&msg.customer_id);
            }
            (e, Some(cur.status))
        }
    };
    let event_type = match msg.action {
        Action::Grant => "entitlement_granted",
        Action::Suspend => "entitlement_suspended",
        Action::Resume => "entitlement_resumed",
        Action::Revoke => "entitlement_revoked",
    };
    let reason = match (&msg.reason, msg.action) {
        (Some(r), _) => format!("marketplace {}: {r}", msg.action.as_str()),
        (None, Action::Grant) => format!("marketplace grant (sku {})", next.sku),
        (None, a) => format!("marketplace {}", a.as_str()),
    };
    let draft = ReceiptDraft::new(&msg.tenant_id, ReceiptType::Entitlement, event_type, reason)
        .states(from.map(Status::as_str), Some(next.status.as_str()))
        .metadata(json!({"request": request, "sku": next.sku, "packs": next.packs}));
    commit(
        &ledger,
        draft,
        current.as_ref(),
        next,
        msg.message_id.clone(),
    )
    .await
}

impl Handler<ApplyEvent> for Entitlements {
    type Result = AtomicResponse<Self, Result<Changed, ChangeError>>;
    fn handle(&mut self, msg: ApplyEvent, _: &mut Context<Self>) -> Self::Result {
        let ledger = self.ledger.clone();
        let (tenant, mid) = (msg.tenant_id.clone(), msg.message_id.clone());
        publish_after(self, tenant, mid, move |cached| {
            event_change(ledger.clone(), msg.clone(), cached)
        })
    }
}

/// An entitlement event decided on `cached` (or the stored record) and recorded.
async fn event_change(
    ledger: LedgerHandle,
    msg: ApplyEvent,
    cached: Option<Entitlement>,
) -> Result<Changed, ChangeError> {
    let now = crate::clock::now_rfc3339();
    let current = load(&ledger, cached, &msg.tenant_id)
        .await?
        .ok_or_else(|| ChangeError::NotFound(msg.tenant_id.clone()))?;
    let request = serde_json::to_value(&msg.event).unwrap_or(Value::Null);
    let next = match current.apply(&msg.event, &now) {
        Ok(n) => n,
        Err(e) if e.is_input_error() => return Err(ChangeError::Input(e)),
        Err(e) => return Err(refuse(&ledger, &current, e, request, msg.message_id.clone()).await),
    };
    let status = next.status.as_str();
    let draft = ReceiptDraft::new(&msg.tenant_id, ReceiptType::Entitlement, msg.event.name(), format!("{} applied", msg.event.name()))
                .states(Some(status), Some(status))
                .metadata(json!({"request": request, "sku": next.sku, "packs": next.packs, "tools": next.tools, "iam_roles": next.iam_roles}));
    commit(&ledger, draft, Some(&current), next, msg.message_id.clone()).await
}

/// Chaos hook: panic inside a handler.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

impl Handler<Crash> for Entitlements {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("chaos: entitlements crash requested");
    }
}
