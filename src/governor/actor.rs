//! The Governor actor: one per tenant, the glue between the pure machine and the world.
//!
//! On start it rebuilds its state from the tenant's chain (the last receipt that carries a
//! governor state, and the action in flight if that receipt is `action_started`) and loads the
//! entitlement. Each input is handled atomically: the machine decides, the receipts are appended
//! through the ReceiptWriter, and only once they are durable does the state advance and the
//! caller get its answer. If the ledger refuses, the state does not move (stop the line).
//!
//! Every receipt a governor decides names the entitlement record it was decided on, and the
//! writer seals it only if that is still the tenant's latest record. A decision that a change
//! overtook (a suspension made durable while the governor still held the active record) is
//! not recorded: the governor learns the new record from the Entitlements actor, records what
//! the change means for it, and decides the input again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::wrap_future;
use actix::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};
use supervisors::ChildRef;

use super::machine::{
    is_restore_boundary, restore, Effect, Facts, InFlight, Input, Machine, ReceiptSpec, Reply,
    Restored, Signal, State, Thresholds,
};
use super::webhook::Outcome as WebhookOutcome;
use crate::clock::millis_of;
use crate::entitlements::gates;
use crate::entitlements::{Entitlement, Entitlements, ReloadEntitlement};
use crate::receipts::receipt::digest_from_hex;
use crate::receipts::writer::{
    overtaken, record_fingerprint, LedgerError, LedgerHandle, NewReceipt,
};
use crate::receipts::{LedgerStore, Receipt, ReceiptDraft, ReceiptType, StoreError};
use crate::telemetry::budget::LogBudget;
use crate::telemetry::events;

/// What every governor shares.
#[derive(Clone)]
pub struct GovernorDeps {
    pub ledger: LedgerHandle,
    /// Asked for a tenant's record when a decision was overtaken by a change of it.
    pub entitlements: ChildRef<Entitlements>,
    pub thresholds: HashMap<String, Thresholds>,
    pub postpone_capacity: usize,
    pub action_timeout: Duration,
    pub idle_hibernate: Duration,
    /// Actions in flight across all governors, and the bound.
    pub actions_in_flight: Arc<AtomicUsize>,
    pub max_actions_in_flight: usize,
    pub executor: Executor,
}

/// How actions are carried out.
#[derive(Clone)]
pub enum Executor {
    /// Phase 1: the advice is recorded and the action completes at once with `advised`.
    Eval,
    /// Phase 2: POST to a URL; `2xx {"status":"completed"}` completes, 202 waits for a callback.
    Webhook(super::webhook::Webhook),
}

/// One tenant's governor.
///
/// Kept small: a million of them live at once. With the supervisor's runner around it, the
/// actor's task must fit tokio's 640-byte (5 × 128) task cell, not the next one, 768.
pub struct Governor {
    tenant: Box<str>,
    /// Shared by every governor (one pointer each, so a million governors stay small).
    deps: Arc<GovernorDeps>,
    machine: Machine,
    /// Boxed: most of a governor's life it is only read, and a million governors stay small.
    entitlement: Option<Box<Known>>,
    /// The seq of the chain's last receipt that records a governor state, as this governor
    /// knows it (0: none): its own last receipt, or the one it was rebuilt from. Its decisions
    /// follow it (see [`NewReceipt::follows`]).
    head_seq: u64,
    /// That receipt's `receipt_hash` as bytes (no heap string per governor); meaningless at
    /// seq 0.
    head_hash: [u8; 32],
    /// The armed action timeout (boxed: only while an action is in flight).
    timeout: Option<Box<SpawnHandle>>,
    /// Hibernator ticks since the last input (see [`Hibernate`]).
    idle_ticks: u8,
    /// Whether this governor holds one of the global action slots.
    holds_action_slot: bool,
    /// Whether its state is the chain's yet.
    chain: Chain,
}

/// Whether a governor has taken in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chain {
    /// Being read (at a start, or after a conflict); the mailbox waits for it.
    Reading,
    /// Taken in: the governor decides, and its state counts in `tai_governor_state`.
    Read,
    /// The store was unavailable at the last `n` reads in a row. Every input is answered with
    /// 503 `unavailable` (between reads at once; during one, the mailbox waits for it as at a
    /// start), and the chain is read again after [`REREAD`]'s backoff: a store that is away
    /// is not a crash, so it spends none of the governance supervisor's restart intensity
    /// (which an outage would pass, and then the root's, ending the process).
    Unread(u8),
    /// The chain's stored data could not be read back at the last `n` reads in a row
    /// ([`StoreError::Corrupt`]: a damaged file, a value no receipt has). Every input is
    /// answered with 500 `ledger_corrupt`, and the chain is read again after [`REREAD`]'s
    /// backoff, in case the ledger was restored. No restart: a new incarnation reads the same
    /// bytes, and the restarts of every damaged tenant would spend the governance supervisor's
    /// intensity, which all tenants share.
    Damaged(u8),
}

/// The lines of what governors try again a second later because the ledger refused it: in an
/// outage every governor with something to record tries once a second, so each kind is
/// logged at most once a second for all of them, with the count left out (`suppressed`).
static LOG_CHANGE: LogBudget = LogBudget::new();
static LOG_OUTCOME: LogBudget = LogBudget::new();
static LOG_EXPIRY: LogBudget = LogBudget::new();

/// The backoff between reads of the chain of a governor whose store was unavailable: from
/// 250 ms, doubling, up to 5 s, each up to a fifth longer at random so that governors that
/// failed together do not read together.
const REREAD: supervisors::Backoff = supervisors::Backoff {
    min: Duration::from_millis(250),
    max: Duration::from_secs(5),
    factor: 2.0,
    jitter: 0.2,
    reset_after: Duration::ZERO,
};

/// The tenant's entitlement record as a governor knows it, with the fingerprint that every
/// receipt decided on it expects (see [`NewReceipt::expects`]).
struct Known {
    record: Entitlement,
    fingerprint: u64,
}

impl Known {
    fn new(record: Entitlement) -> Box<Known> {
        let fingerprint = crate::entitlements::actor::fingerprint(&record);
        Box::new(Known {
            record,
            fingerprint,
        })
    }
}

/// The answer to a governed input.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub state: State,
    pub postponed: bool,
    /// `None` when accepted; else the HTTP status and reason of the refusal.
    #[serde(skip)]
    pub refused: Option<(u16, &'static str)>,
    /// Receipts appended for this input, in order.
    pub receipts: Vec<Receipt>,
    /// The input's Pub/Sub message id had a receipt already: `receipts` is that one receipt,
    /// and nothing was decided or appended this time.
    #[serde(skip)]
    pub duplicate: bool,
}

impl Outcome {
    fn duplicate(state: State, existing: Receipt) -> Self {
        events::pubsub_duplicate();
        Outcome {
            state,
            postponed: false,
            refused: None,
            receipts: vec![existing],
            duplicate: true,
        }
    }
}

/// Why an input got no governed answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GovernorError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A governor's public view.
#[derive(Debug, Clone, Serialize)]
pub struct GovernorView {
    pub tenant_id: String,
    pub state: State,
    pub seq: u64,
    pub head_hash: String,
    pub action_in_flight: Option<InFlight>,
    pub postponed: usize,
    pub entitlement_active: bool,
}

impl Governor {
    pub fn new(tenant: &str, deps: Arc<GovernorDeps>) -> Self {
        Governor {
            tenant: tenant.into(),
            machine: Machine::new(Thresholds::default(), deps.postpone_capacity),
            deps,
            entitlement: None,
            head_seq: 0,
            head_hash: [0; 32],
            timeout: None,
            idle_ticks: 0,
            holds_action_slot: false,
            chain: Chain::Reading,
        }
    }

    fn is_unread(&self) -> bool {
        matches!(self.chain, Chain::Unread(_) | Chain::Damaged(_))
    }

    /// While the chain is unread, the answer every input gets at once (see [`Chain::Unread`]).
    fn refused_unread<T: 'static>(&self) -> Option<AtomicResponse<Self, Result<T, GovernorError>>> {
        let refusal = match self.chain {
            Chain::Unread(_) => StoreError::Unavailable(
                "the governor could not read its chain yet; it reads it again shortly".into(),
            ),
            Chain::Damaged(_) => StoreError::Corrupt(format!(
                "the chain of tenant {} could not be read back (the log says where)",
                self.tenant
            )),
            Chain::Reading | Chain::Read => return None,
        };
        Some(AtomicResponse::new(Box::pin(actix::fut::ready(Err(
            GovernorError::Store(refusal),
        )))))
    }

    fn view(&self) -> GovernorView {
        GovernorView {
            tenant_id: self.tenant.to_string(),
            state: self.machine.state,
            seq: self.head_seq,
            head_hash: if self.head_seq == 0 {
                String::new()
            } else {
                crate::receipts::receipt::hex(&self.head_hash)
            },
            action_in_flight: self.machine.in_flight.as_deref().cloned(),
            postponed: self.machine.postponed.len(),
            entitlement_active: self.entitled(),
        }
    }

    fn record(&self) -> Option<&Entitlement> {
        self.entitlement.as_deref().map(|k| &k.record)
    }

    /// What this governor's decisions expect the tenant's latest record to be.
    fn fingerprint(&self) -> u64 {
        self.entitlement
            .as_deref()
            .map_or(record_fingerprint(None), |k| k.fingerprint)
    }

    fn entitled(&self) -> bool {
        self.record()
            .is_some_and(|e| e.is_active(&crate::clock::now_rfc3339()))
    }

    fn facts(&self, action_id: String) -> Facts {
        let gates = gates::evaluate(
            self.record(),
            &crate::clock::now_rfc3339(),
            None,
            &Value::Null,
        );
        Facts {
            entitled: gates.passed(),
            gates: gates.gates,
            new_action_id: action_id,
        }
    }

    fn set_thresholds(&mut self) {
        if let Some(e) = self.record() {
            if let Some(t) = self.deps.thresholds.get(&e.sku) {
                self.machine.thresholds = *t;
            }
        }
    }

    /// Decides `input` and records it (see [`Governor::decide`]). If a change of the tenant's
    /// entitlement overtook the decision, the governor learns the new record, records what it
    /// changes, and decides the input again (up to [`RETRIES`] times); the answer lists the
    /// receipts of both.
    fn run(
        &mut self,
        input: Input,
        message_id: Option<String>,
        ctx: &mut Context<Self>,
    ) -> Deciding {
        let again = (input.clone(), message_id.clone());
        let first = self.decide(input, message_id, ctx);
        self.retrying(first, move |act, ctx| match again.clone() {
            // What the new record changes was recorded as it was learned.
            (Input::EntitlementChanged { .. }, _) => {
                Box::pin(actix::fut::ready(Ok(act.unchanged())))
            }
            (input, message_id) => act.decide(input, message_id, ctx),
        })
    }

    /// Runs `first`; if its decision was overtaken by an entitlement change, learns the change
    /// and runs `again` instead, with the receipts of the change in front of its answer's. If
    /// the chain had moved on without this governor (a conflict), reloads the governor from the
    /// chain and runs `again` there. At most [`RETRIES`] times in a row: each one means that
    /// another decision or change was recorded meanwhile, so the tenant's story moves on.
    fn retrying(
        &mut self,
        first: Deciding,
        again: impl Fn(&mut Self, &mut Context<Self>) -> Deciding + Clone + 'static,
    ) -> Deciding {
        Self::retrying_up_to(RETRIES, first, again)
    }

    /// [`Governor::retrying`] with `left` retries.
    fn retrying_up_to(
        left: u32,
        first: Deciding,
        again: impl Fn(&mut Self, &mut Context<Self>) -> Deciding + Clone + 'static,
    ) -> Deciding {
        Box::pin(
            first.then(move |res, act, ctx| -> ResponseActFuture<Self, _> {
                if left == 0 {
                    return Box::pin(actix::fut::ready(res));
                }
                match res {
                    Err(GovernorError::Ledger(LedgerError::Superseded(_))) => {}
                    Err(GovernorError::Ledger(LedgerError::Conflict(e))) => {
                        // The chain moved on without this governor: it takes in the chain as
                        // it stands and decides the input again there.
                        tracing::info!(tenant = %act.tenant, error = %e, "the chain moved on without this governor; reloading it");
                        events::governor_reloaded();
                        return Box::pin(act.reload(ctx).then(
                            move |reloaded, act, ctx| -> ResponseActFuture<Self, _> {
                                match reloaded {
                                    Ok(reactivated) => {
                                        // Acted on after the input.
                                        to_self(ctx, Reconcile(reactivated));
                                        let next = again(act, ctx);
                                        Self::retrying_up_to(left - 1, next, again)
                                    }
                                    Err(e) => Box::pin(actix::fut::ready(Err(e))),
                                }
                            },
                        ));
                    }
                    res => return Box::pin(actix::fut::ready(res)),
                }
                events::decision_superseded();
                Box::pin(act.relearn(ctx).then(
                    move |learned, act, ctx| -> ResponseActFuture<Self, _> {
                        let changed = match learned {
                            Ok(changed) => changed,
                            // Recording what the change means ran into a decision of another
                            // instance's governor: reload, and run the input there.
                            Err(e @ GovernorError::Ledger(LedgerError::Conflict(_))) => {
                                let failed = Box::pin(actix::fut::ready(Err(e)));
                                return Self::retrying_up_to(left - 1, failed, again);
                            }
                            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
                        };
                        let next = again(act, ctx);
                        Box::pin(Self::retrying_up_to(left - 1, next, again).map(
                            move |res, _, _| {
                                res.map(|mut o| {
                                    if !o.duplicate {
                                        o.receipts.splice(0..0, changed);
                                    }
                                    o
                                })
                            },
                        ))
                    },
                ))
            }),
        )
    }

    /// An input that makes no sense in the governor's state (an action callback for no action
    /// in flight, a reset while not refusing, …) is refused with `reason`, nothing recorded, if
    /// the chain's last governor decision is still this governor's. If it is not (another
    /// instance's governor decided since: the callback of an action it started reached this
    /// instance), the answer is a conflict, and [`Governor::retrying`] reloads the governor
    /// from the chain and decides the input again.
    fn invalid_here(&self, reason: String) -> Deciding {
        let known = self.head_seq;
        Box::pin(
            wrap_future::<_, Self>(self.chain_now()).map(move |now, _, _| match now {
                Ok(ChainNow { seq, .. }) if seq != known => {
                    Err(GovernorError::Ledger(overtaken(seq, known)))
                }
                // Unread, the governor's own state decides.
                _ => Err(GovernorError::Invalid(reason)),
            }),
        )
    }

    /// What the chain holds now, read from the store: the seq of its last receipt that records
    /// a governor state (0: none) and the fingerprint of the tenant's entitlement record.
    fn chain_now(&self) -> impl std::future::Future<Output = Result<ChainNow, StoreError>> {
        let (ledger, tenant) = (self.deps.ledger.clone(), self.tenant.clone());
        async move {
            let snap = ledger
                .store()
                .governor_snapshot(&tenant, State::NAMES)
                .await?;
            Ok(ChainNow {
                seq: snap.last_state.map_or(0, |r| r.seq),
                fingerprint: record_fingerprint(snap.entitlement.as_ref()),
            })
        }
    }

    /// What this governor's decisions rest on, to compare with [`Governor::chain_now`].
    fn knows(&self) -> ChainNow {
        ChainNow {
            seq: self.head_seq,
            fingerprint: self.fingerprint(),
        }
    }

    /// An answer that records nothing and leaves the state as it is.
    fn unchanged(&self) -> Outcome {
        Outcome {
            state: self.machine.state,
            postponed: false,
            refused: None,
            receipts: Vec::new(),
            duplicate: false,
        }
    }

    /// After a decision was overtaken: asks the Entitlements actor for the tenant's record as
    /// stored (it answers once the change under way is durable and published) and learns it.
    fn relearn(
        &mut self,
        _: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Vec<Receipt>, GovernorError>> {
        let ask = self
            .deps
            .entitlements
            .call(ReloadEntitlement(self.tenant.to_string()));
        Box::pin(wrap_future::<_, Self>(ask).then(|got, act, ctx| match got {
            Ok(Ok(Some(record))) => act.learn(record, ctx),
            Ok(Ok(None)) => Box::pin(actix::fut::ready(Err(GovernorError::Ledger(
                LedgerError::Unavailable("the tenant's entitlement record is missing".into()),
            )))),
            Ok(Err(e)) => Box::pin(actix::fut::ready(Err(GovernorError::Store(e)))),
            Err(e) => Box::pin(actix::fut::ready(Err(GovernorError::Ledger(
                LedgerError::Unavailable(format!("the entitlements service did not answer: {e}")),
            )))),
        }))
    }

    /// Takes in the tenant's new entitlement record: the expiry timer and the SKU's thresholds
    /// follow it, and if it changes whether the tenant is entitled, that is decided as an input
    /// (`refusing` with the action cancelled, or back to `stable`). Returns its receipts.
    fn learn(
        &mut self,
        record: Entitlement,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Vec<Receipt>, GovernorError>> {
        let was = self.entitled();
        let expiry_moved = self.expiry_ms() != record.expires_at.as_deref().and_then(millis_of);
        self.entitlement = Some(Known::new(record));
        if expiry_moved {
            self.arm_expiry(ctx);
        }
        self.set_thresholds();
        let now = self.entitled();
        if was == now || self.machine.state == State::Boot {
            return Box::pin(actix::fut::ready(Ok(Vec::new())));
        }
        let fut = self.decide(Input::EntitlementChanged { active: now }, None, ctx);
        Box::pin(fut.map(move |res, act, ctx| {
            // The governor knows the new record now but could not record what it changes: it
            // tries again every second, as for a change missed while it was stopped. The next
            // input would record a lapse first anyway, but nothing else would record a
            // reactivation, and the governor would refuse an entitled tenant until a reset.
            // (A superseded change has a later one on its way.)
            match &res {
                Err(GovernorError::Ledger(LedgerError::Superseded(_))) | Ok(_) => {}
                // The chain moved on without this governor: at once, through `run`, which
                // reloads it first.
                Err(GovernorError::Ledger(LedgerError::Conflict(_))) => {
                    to_self(ctx, Reconcile(now));
                }
                Err(e) => {
                    if let Some(suppressed) = LOG_CHANGE.admit_now() {
                        tracing::warn!(tenant = %act.tenant, error = %e, suppressed, "could not record an entitlement change; trying again in a second");
                    }
                    to_self_later(ctx, Reconcile(now), Duration::from_secs(1));
                }
            }
            res.map(|o| o.receipts)
        }))
    }

    /// Applies a decided step: appends its receipts, then advances and carries out its effects.
    fn decide(
        &mut self,
        input: Input,
        message_id: Option<String>,
        ctx: &mut Context<Self>,
    ) -> Deciding {
        self.decide_after(Vec::new(), input, message_id, ctx)
    }

    /// [`Governor::decide`], with `before` (receipts of a step the governor took just before,
    /// in the same handler) appended first, in the same batch.
    fn decide_after(
        &mut self,
        before: Vec<ReceiptSpec>,
        input: Input,
        message_id: Option<String>,
        ctx: &mut Context<Self>,
    ) -> Deciding {
        self.idle_ticks = 0;
        let started = Instant::now();
        let facts = self.facts(uuid::Uuid::now_v7().to_string());
        let (next, mut step) = self.machine.step(input, &facts);
        step.receipts.splice(0..0, before);
        if let Reply::Invalid { reason } = step.reply {
            return self.invalid_here(reason);
        }
        let expects = Some(self.fingerprint());
        let follows = Some(self.head_seq);
        let mut drafts: Vec<NewReceipt> = step
            .receipts
            .iter_mut()
            .map(|s| NewReceipt {
                expects,
                follows,
                ..NewReceipt::new(self.draft(s))
            })
            .collect();
        // The receipt that records the input carries its Pub/Sub message id (in its metadata,
        // so the chain shows it, and beside it in the ledger, so a redelivery finds it).
        let first_id = drafts.first().map(|d| d.draft.receipt_id.clone());
        let records_input = drafts
            .iter()
            .position(|d| {
                let m = &d.draft.metadata;
                m.get("input").is_some() || m.get("tool").is_some()
            })
            .unwrap_or(0);
        if let (Some(mid), Some(d)) = (message_id, drafts.get_mut(records_input)) {
            crate::intake::record_message_id(&mut d.draft.metadata, &mid);
            d.message_id = Some(mid);
        }
        let ledger = self.deps.ledger.clone();
        let _ = ctx;
        Box::pin(
            wrap_future::<_, Self>(async move { ledger.append(drafts).await }).map(
                move |appended, act, ctx| {
                    let receipts = appended?;
                    if let Some(existing) = receipts
                        .first()
                        .filter(|r| Some(&r.receipt_id) != first_id.as_ref())
                    {
                        // The message has a receipt already (an earlier delivery's, which the
                        // writer found): it is the answer, and this decision never happened.
                        return Ok(Outcome::duplicate(act.machine.state, existing.clone()));
                    }
                    let from = act.machine.state;
                    act.machine = next;
                    if let Some(last) = receipts.last() {
                        act.head_seq = last.seq;
                        act.head_hash = digest_from_hex(&last.receipt_hash).unwrap_or_default();
                    }
                    for s in &step.receipts {
                        if matches!(s.event_type, "action_failed" | "action_timeout") {
                            events::action_failed("scale_up");
                        }
                        if let (Some(f), Some(t)) = (s.state_from, s.state_to) {
                            if f != t {
                                events::governor_transition(f.as_str(), t.as_str());
                            }
                        }
                    }
                    if from != act.machine.state {
                        events::governor_state_moved(from.as_str(), act.machine.state.as_str());
                    }
                    for effect in step.effects.clone() {
                        act.apply(effect, ctx);
                    }
                    let (postponed, refused) = match step.reply {
                        Reply::Accepted { postponed } => (postponed, None),
                        Reply::Refused { status, reason } => {
                            events::refused(reason);
                            (false, Some((status, reason)))
                        }
                        Reply::Invalid { .. } => (false, None),
                    };
                    if postponed {
                        events::postponed();
                    }
                    events::decision(started.elapsed());
                    Ok(Outcome {
                        state: act.machine.state,
                        postponed,
                        refused,
                        receipts,
                        duplicate: false,
                    })
                },
            ),
        )
    }

    /// The draft of a decided receipt. Its reason and metadata move into the draft (a clone of
    /// the metadata's map per signal showed in profiles); the spec keeps its kind, event and
    /// states, which is all the metrics read afterwards.
    fn draft(&self, s: &mut ReceiptSpec) -> ReceiptDraft {
        ReceiptDraft::new(
            &*self.tenant,
            s.kind,
            s.event_type,
            std::mem::take(&mut s.reason),
        )
        .states(
            s.state_from.map(State::as_str),
            s.state_to.map(State::as_str),
        )
        .metadata(std::mem::take(&mut s.metadata))
    }

    fn apply(&mut self, effect: Effect, ctx: &mut Context<Self>) {
        match effect {
            Effect::StartAction {
                action_id,
                kind,
                params,
            } => {
                events::action_attempted(&kind);
                // A fresh signal reserved its slot before the decision; an action started by
                // a replayed signal takes one here (it is decided already, so it may exceed
                // the bound for a while rather than go uncounted).
                self.hold_slot();
                match self.deps.executor.clone() {
                    // Phase 1: the advice is recorded and completes at once.
                    Executor::Eval => to_self(
                        ctx,
                        Callback(Input::ActionCompleted {
                            action_id,
                            result: json!("advised"),
                        }),
                    ),
                    Executor::Webhook(hook) => {
                        let body = json!({"action_id": action_id, "tenant_id": self.tenant, "type": kind, "params": params});
                        // Held until the outcome's receipt is durable: a shutdown waits for it.
                        let exchange = hook.exchanges.begin();
                        ctx.spawn(
                            wrap_future::<_, Self>(async move { hook.start(&body).await }).map(
                                move |outcome, act, ctx| {
                                    let input = match outcome {
                                        WebhookOutcome::Completed(result) => {
                                            Input::ActionCompleted { action_id, result }
                                        }
                                        WebhookOutcome::Failed(error) => {
                                            Input::ActionFailed { action_id, error }
                                        }
                                        WebhookOutcome::Accepted => return,
                                    };
                                    // Recorded here and now, not queued behind the mailbox:
                                    // a governor stopping in order drops what is queued.
                                    let recorded = act.outcome(input, ctx);
                                    ctx.wait(recorded.map(move |(), _, _| drop(exchange)));
                                },
                            ),
                        );
                    }
                }
            }
            Effect::RunTool {
                action_id,
                tool,
                args,
            } => {
                let result = super::tools::run(&tool, &args, &self.tenant);
                let ok = result.is_ok();
                to_self(
                    ctx,
                    Callback(Input::ToolFinished {
                        action_id,
                        ok,
                        result: result.unwrap_or_else(|e| json!({"error": e})),
                    }),
                );
            }
            Effect::CancelAction { action_id, reason } => {
                tracing::info!(tenant = %self.tenant, %action_id, reason, "action cancelled");
                self.release_slot();
                // The webhook's side may still be working on it: it is told, once, at the
                // same URL (best effort: a failure is logged; the receipts already say it).
                if let Executor::Webhook(hook) = self.deps.executor.clone() {
                    let body = json!({"action_id": action_id, "tenant_id": self.tenant, "event": "cancelled", "reason": reason});
                    let tenant = self.tenant.clone();
                    ctx.spawn(wrap_future::<_, Self>(async move {
                        if let Err(e) = hook.notify(&body).await {
                            tracing::warn!(%tenant, %action_id, error = %e, "the webhook was not told of a cancelled action");
                        }
                    }));
                }
            }
            Effect::ArmTimeout { action_id } => {
                self.arm_timeout(action_id, self.deps.action_timeout, ctx);
            }
            Effect::DisarmTimeout => {
                if let Some(h) = self.timeout.take() {
                    ctx.cancel_future(*h);
                }
                self.release_slot();
            }
        }
    }

    /// Sets the state timeout of action `action_id` to fall due `after` from now.
    fn arm_timeout(&mut self, action_id: String, after: Duration, ctx: &mut Context<Self>) {
        if let Some(h) = self.timeout.take() {
            ctx.cancel_future(*h);
        }
        self.timeout = Some(Box::new(ctx.run_later(after, move |_, ctx| {
            to_self(ctx, Callback(Input::ActionTimedOut { action_id }))
        })));
    }

    /// Takes a global action slot for an action that runs whatever the bound says.
    fn hold_slot(&mut self) {
        if !self.holds_action_slot {
            self.holds_action_slot = true;
            self.deps.actions_in_flight.fetch_add(1, Ordering::AcqRel);
            events::actions_pending(1.0);
        }
    }

    fn release_slot(&mut self) {
        if self.holds_action_slot {
            self.holds_action_slot = false;
            self.deps.actions_in_flight.fetch_sub(1, Ordering::AcqRel);
            events::actions_pending(-1.0);
        }
    }

    /// Takes a global action slot if this signal would start an action; `false` when saturated.
    fn reserve_slot_for(&mut self, sig: &Signal) -> bool {
        let would_start = matches!(
            self.machine.state,
            State::Stable | State::Warning | State::Boot
        ) && sig.value >= self.machine.thresholds.action
            && self.entitled();
        if !would_start || self.holds_action_slot {
            return true;
        }
        let n = self.deps.actions_in_flight.fetch_add(1, Ordering::AcqRel);
        if n >= self.deps.max_actions_in_flight {
            self.deps.actions_in_flight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.holds_action_slot = true;
        events::actions_pending(1.0);
        true
    }
}

/// What a governor rebuilds from.
struct Rebuilt {
    /// Its state as the chain left it (the last receipt with a governor state).
    restored: Option<Restored>,
    /// That receipt's seq and hash (0: none).
    seq: u64,
    hash: String,
    /// The entitlement record, fingerprinted as stored (what the writer compares with).
    record: Option<Entitlement>,
    fingerprint: u64,
    /// Whether the entitlement was reactivated after the governor last began refusing (a
    /// resume or grant that no incarnation was running to hear).
    reactivated: bool,
}

async fn rebuild(ledger: &LedgerHandle, tenant: &str) -> Result<Rebuilt, StoreError> {
    let snap = ledger
        .store()
        .governor_snapshot(tenant, State::NAMES)
        .await?;
    let fingerprint = record_fingerprint(snap.entitlement.as_ref());
    let entitlement: Option<Entitlement> = snap
        .entitlement
        .and_then(|v| serde_json::from_value(v).ok());
    let Some(head) = snap.head else {
        return Ok(Rebuilt {
            restored: None,
            seq: 0,
            hash: String::new(),
            record: entitlement,
            fingerprint,
            reactivated: false,
        });
    };
    let (seq, hash) = snap
        .last_state
        .as_ref()
        .map_or((0, String::new()), |r| (r.seq, r.receipt_hash.clone()));
    let restored = match snap.last_state {
        None => None,
        Some(r) if r.state_to.as_deref() != Some("intervening") => restore(&r, &[]),
        Some(r) if r.event_type == "action_started" => restore(&r, &[]),
        // Signals were postponed (or refused) since the governor entered `intervening`: read
        // back to where it did, for the action in flight and the whole queue.
        Some(_) => {
            let (boundary, tail) = since_intervening(ledger, tenant, head.seq).await?;
            boundary.and_then(|b| restore(&b, &tail))
        }
    };
    // Only a refusing governor whose tenant is entitled now can have missed a reactivation;
    // the read is skipped for every other start.
    let refusing = restored
        .as_ref()
        .is_some_and(|r| r.state == State::Refusing);
    let entitled = entitlement
        .as_ref()
        .is_some_and(|e: &Entitlement| e.is_active(&crate::clock::now_rfc3339()));
    let reactivated =
        refusing && entitled && reactivated_since_refusing(ledger, tenant, head.seq).await?;
    Ok(Rebuilt {
        restored,
        seq,
        hash,
        record: entitlement,
        fingerprint,
        reactivated,
    })
}

/// Reads the chain back from `head` to the receipt with which the governor began refusing;
/// `true` if an entitlement was granted or resumed after it.
async fn reactivated_since_refusing(
    ledger: &LedgerHandle,
    tenant: &str,
    head: u64,
) -> Result<bool, StoreError> {
    const PAGE: u64 = 256;
    let store = ledger.store();
    let mut reactivated = false;
    let mut upto = head;
    while upto > 0 {
        let from = upto.saturating_sub(PAGE);
        let page = store.range(tenant, from, (upto - from) as usize).await?;
        for r in page.into_iter().rev() {
            if r.kind == ReceiptType::Entitlement {
                reactivated |= matches!(
                    r.event_type.as_str(),
                    "entitlement_granted" | "entitlement_resumed"
                );
            } else if r.state_to.as_deref() == Some("refusing")
                && r.state_from.as_deref() != Some("refusing")
            {
                return Ok(reactivated);
            }
        }
        upto = from;
    }
    Ok(false)
}

/// Reads the chain back from `head` to the newest receipt that started an action or recorded
/// a governor state other than `intervening`; returns it and every receipt after it.
async fn since_intervening(
    ledger: &LedgerHandle,
    tenant: &str,
    head: u64,
) -> Result<(Option<Receipt>, Vec<Receipt>), StoreError> {
    const PAGE: u64 = 256;
    let store = ledger.store();
    let mut newer: Vec<Receipt> = Vec::new();
    let mut upto = head;
    while upto > 0 {
        let from = upto.saturating_sub(PAGE);
        let page = store.range(tenant, from, (upto - from) as usize).await?;
        for r in page.into_iter().rev() {
            if is_restore_boundary(&r) {
                newer.reverse();
                return Ok((Some(r), newer));
            }
            newer.push(r);
        }
        upto = from;
    }
    Ok((None, Vec::new()))
}

impl Governor {
    /// Takes in what [`rebuild`] read: the state, the action in flight and the queue the chain
    /// left, and the entitlement. Returns whether the chain has a reactivation this governor
    /// has yet to act on. A governor whose store was unavailable reads its chain again after
    /// a backoff, answering every input meanwhile with 503 (see [`Chain::Unread`]); one whose
    /// chain cannot be read back does the same, answering 500 (see [`Chain::Damaged`]).
    fn take_in(
        &mut self,
        res: Result<Rebuilt, StoreError>,
        ctx: &mut Context<Self>,
    ) -> Result<bool, StoreError> {
        let Rebuilt {
            restored,
            seq,
            hash,
            record,
            fingerprint,
            reactivated,
        } = match res {
            Ok(r) => r,
            Err(e @ (StoreError::Unavailable(_) | StoreError::Corrupt(_))) => {
                // A ledger that is away fails every start and every read again: one line a
                // second. A damaged chain fails the same way at every read: one line a second
                // too, at ERROR, since only an operator mends it.
                static AWAY: LogBudget = LogBudget::new();
                static DAMAGED: LogBudget = LogBudget::new();
                let failures = match self.chain {
                    Chain::Unread(n) | Chain::Damaged(n) => n.saturating_add(1),
                    Chain::Reading | Chain::Read => {
                        events::governor_unread(1.0);
                        1
                    }
                };
                let damaged = matches!(e, StoreError::Corrupt(_));
                self.chain = if damaged {
                    Chain::Damaged(failures)
                } else {
                    Chain::Unread(failures)
                };
                let after = REREAD.jittered(u32::from(failures) - 1);
                let retry_ms = crate::telemetry::log_ms(after);
                if damaged {
                    if let Some(suppressed) = DAMAGED.admit_now() {
                        tracing::error!(tenant = %self.tenant, error = %e, suppressed, retry_ms, "governor cannot rebuild its state: its chain's stored data cannot be read back; it answers 500 ledger_corrupt until the ledger is restored (README, Backup and restore)");
                    }
                } else if let Some(suppressed) = AWAY.admit_now() {
                    tracing::warn!(tenant = %self.tenant, error = %e, suppressed, retry_ms, "governor could not rebuild its state; reading its chain again");
                }
                ctx.run_later(after, |act, ctx| act.read_chain(ctx));
                return Err(e);
            }
            Err(e) => {
                static FAILED: LogBudget = LogBudget::new();
                if let Some(suppressed) = FAILED.admit_now() {
                    tracing::error!(tenant = %self.tenant, error = %e, suppressed, "governor could not rebuild its state; stopping");
                }
                supervisors::exit::<Self>(
                    ctx,
                    supervisors::ExitReason::Error(format!("rebuild failed: {e}")),
                );
                return Err(e);
            }
        };
        if let Chain::Unread(_) | Chain::Damaged(_) = self.chain {
            events::governor_unread(-1.0);
        }
        self.chain = Chain::Read;
        self.entitlement = record.map(|record| {
            Box::new(Known {
                record,
                fingerprint,
            })
        });
        self.set_thresholds();
        self.head_seq = seq;
        self.head_hash = digest_from_hex(&hash).unwrap_or_default();
        if let Some(r) = restored {
            self.machine.state = r.state;
            self.machine.postponed = r.postponed;
            if let Some(f) = r.in_flight {
                // An action was in flight when the previous incarnation ended: its state
                // timeout runs out when it would have without the restart (at once if it has
                // already), and the eval executor completes it (the queue is replayed when it
                // ends, as before the restart).
                let id = f.action_id.clone();
                self.machine.in_flight = Some(Box::new(f));
                // The previous incarnation released its slot as it stopped.
                self.hold_slot();
                let ran = r.started_ms.map_or(Duration::ZERO, |at| {
                    Duration::from_millis(crate::clock::now_ms().saturating_sub(at))
                });
                self.arm_timeout(
                    id.clone(),
                    self.deps.action_timeout.saturating_sub(ran),
                    ctx,
                );
                if matches!(self.deps.executor, Executor::Eval) {
                    to_self(
                        ctx,
                        Callback(Input::ActionCompleted {
                            action_id: id,
                            result: json!("advised"),
                        }),
                    );
                }
            } else if r.replay {
                to_self(ctx, Callback(Input::Resume));
            }
        }
        events::governor_state_moved("", self.machine.state.as_str());
        Ok(reactivated)
    }

    /// After a conflict (the chain moved on without this governor: another instance's governor
    /// decided, or an incarnation before this one had a commit land after this one was
    /// rebuilt): lets go of what it held (the action's timer and slot, the queue) and rebuilds
    /// from the chain as at a start. Answers whether the entitlement was reactivated since the
    /// governor last began refusing (for [`Governor::missed_change`], which the caller runs).
    fn reload(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<bool, GovernorError>> {
        if let Some(h) = self.timeout.take() {
            ctx.cancel_future(*h);
        }
        self.release_slot();
        events::governor_state_moved(self.machine.state.as_str(), "");
        self.chain = Chain::Reading;
        self.machine = Machine::new(Thresholds::default(), self.deps.postpone_capacity);
        let ledger = self.deps.ledger.clone();
        let tenant = self.tenant.clone();
        Box::pin(
            wrap_future::<_, Self>(async move { rebuild(&ledger, &tenant).await }).map(
                |res, act, ctx| {
                    let reactivated = act.take_in(res, ctx)?;
                    act.arm_expiry(ctx);
                    Ok(reactivated)
                },
            ),
        )
    }
}

impl Actor for Governor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.read_chain(ctx);
        // Idleness is checked when the service's one Hibernator asks (no timer per governor).
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.release_slot();
        match self.chain {
            Chain::Read => events::governor_state_moved(self.machine.state.as_str(), ""),
            Chain::Unread(_) | Chain::Damaged(_) => events::governor_unread(-1.0),
            Chain::Reading => {}
        }
    }
}

impl Governor {
    /// Rebuilds the governor from its chain (at its start, and again while its store is
    /// unavailable); the mailbox waits until it is done.
    fn read_chain(&mut self, ctx: &mut Context<Self>) {
        let ledger = self.deps.ledger.clone();
        let tenant = self.tenant.clone();
        ctx.wait(
            wrap_future::<_, Self>(async move { rebuild(&ledger, &tenant).await }).map(
                |res, act, ctx| {
                    if let Ok(reactivated) = act.take_in(res, ctx) {
                        // An entitlement change that no incarnation was running to hear is
                        // acted on now.
                        act.reconcile_entitlement(reactivated, ctx);
                    }
                },
            ),
        );
    }
}

/// Asks a governor to hibernate (stop normally) if it has been idle for `idle_hibernate` with
/// nothing in flight; a busy governor ignores it. Sent by the [`super::Hibernator`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hibernate;

impl Handler<Hibernate> for Governor {
    type Result = ();
    fn handle(&mut self, _: Hibernate, ctx: &mut Context<Self>) {
        // The Hibernator ticks every half `idle_hibernate`: the third tick without an input
        // comes between one and one and a half `idle_hibernate` after it.
        self.idle_ticks = self.idle_ticks.saturating_add(1);
        // One whose chain is unread may have an action in flight that it does not know of yet.
        if self.chain == Chain::Read && self.machine.in_flight.is_none() && self.idle_ticks >= 3 {
            tracing::debug!(tenant = %self.tenant, "governor idle: hibernating");
            ctx.stop();
        }
    }
}

/// A signal for the tenant, with the Pub/Sub message id it came in, or the ledger id of the
/// client's idempotency key: a repeat of either is answered with the first receipt.
#[derive(Message, Clone)]
#[rtype(result = "Result<Outcome, GovernorError>")]
pub struct SubmitSignal {
    pub signal: Signal,
    pub message_id: Option<String>,
}

impl Handler<SubmitSignal> for Governor {
    type Result = AtomicResponse<Self, Result<Outcome, GovernorError>>;
    fn handle(&mut self, msg: SubmitSignal, ctx: &mut Context<Self>) -> Self::Result {
        events::signal_received();
        if let Some(refused) = self.refused_unread() {
            return refused;
        }
        // A message id that has a receipt already is answered with it by the writer, which
        // looks ids up as they arrive; the decision made here then never happened (see `run`).
        AtomicResponse::new(self.decide_signal(msg.signal, msg.message_id, ctx))
    }
}

impl Governor {
    /// A new signal: refused when it would start an action over the global bound, else decided.
    fn decide_signal(
        &mut self,
        sig: Signal,
        message_id: Option<String>,
        ctx: &mut Context<Self>,
    ) -> Deciding {
        if !self.reserve_slot_for(&sig) {
            // Over the global bound: refuse with a receipt, the state stays.
            let again = (sig.clone(), message_id.clone());
            let from = self.machine.state;
            let mut metadata = json!({"input": sig});
            if let Some(mid) = &message_id {
                crate::intake::record_message_id(&mut metadata, mid);
            }
            let mut spec = ReceiptSpec {
                kind: ReceiptType::Refusal,
                event_type: "signal_refused",
                state_from: Some(from),
                state_to: Some(from),
                reason: "actions_saturated".into(),
                metadata,
            };
            let mut draft = NewReceipt::new(self.draft(&mut spec));
            draft.message_id = message_id;
            draft.follows = Some(self.head_seq);
            let draft_id = draft.draft.receipt_id.clone();
            let ledger = self.deps.ledger.clone();
            events::refused("actions_saturated");
            let refused = Box::pin(
                wrap_future::<_, Self>(async move { ledger.append(vec![draft]).await }).map(
                    move |res, act, _| {
                        let receipts = res?;
                        if let Some(existing) =
                            receipts.first().filter(|r| r.receipt_id != draft_id)
                        {
                            return Ok(Outcome::duplicate(act.machine.state, existing.clone()));
                        }
                        if let Some(last) = receipts.last() {
                            act.head_seq = last.seq;
                            act.head_hash = digest_from_hex(&last.receipt_hash).unwrap_or_default();
                        }
                        Ok(Outcome {
                            state: from,
                            postponed: false,
                            refused: Some((429, "actions_saturated")),
                            receipts,
                            duplicate: false,
                        })
                    },
                ),
            );
            let (sig, message_id) = again;
            return self.retrying(refused, move |act, ctx| {
                act.decide_signal(sig.clone(), message_id.clone(), ctx)
            });
        }
        let fut = self.run(Input::Signal(sig), message_id, ctx);
        Box::pin(fut.map(|res, act, _| {
            if res.is_err() || act.machine.in_flight.is_none() {
                act.release_slot();
            }
            res
        }))
    }
}

/// A tool call for the tenant.
#[derive(Message, Clone)]
#[rtype(result = "Result<Outcome, GovernorError>")]
pub struct CallTool {
    pub tool: String,
    pub args: Value,
    /// The ledger id of the call's idempotency key: a repeat gets the first receipt.
    pub message_id: Option<String>,
}

impl Handler<CallTool> for Governor {
    type Result = AtomicResponse<Self, Result<Outcome, GovernorError>>;
    fn handle(&mut self, msg: CallTool, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(refused) = self.refused_unread() {
            return refused;
        }
        // Overtaken by an entitlement change, the call is gated and decided again as a whole.
        let first = self.call_tool(msg.clone(), ctx);
        AtomicResponse::new(self.retrying(first, move |act, ctx| act.call_tool(msg.clone(), ctx)))
    }
}

impl Governor {
    fn call_tool(&mut self, msg: CallTool, ctx: &mut Context<Self>) -> Deciding {
        let now = crate::clock::now_rfc3339();
        let g = gates::evaluate(self.record(), &now, Some(&msg.tool), &msg.args);
        let input = Input::ToolCall {
            tool: msg.tool.clone(),
            args: msg.args.clone(),
            gates: g.gates.clone(),
            refusal: g.refusal.map(str::to_owned),
        };
        let facts = self.facts(uuid::Uuid::now_v7().to_string());
        let (running, step) = self.machine.step(input.clone(), &facts);
        let Some(Effect::RunTool { action_id, .. }) = step.effects.first().cloned() else {
            // Refused (gates, state): record it as decided.
            return self.decide(input, msg.message_id, ctx);
        };
        // Phase 1 tools are synchronous: run it now, in `intervening`, and record how it ended.
        // If the ledger refuses that receipt, the governor goes back to where it was.
        let before = self.machine.clone();
        self.machine = running;
        let result = super::tools::run(&msg.tool, &msg.args, &self.tenant);
        let ok = result.is_ok();
        let finished = Input::ToolFinished {
            action_id,
            ok,
            result: result.unwrap_or_else(|e| json!({"error": e})),
        };
        // A first input leaves `boot` on its way (`entitlement_verified`): that receipt goes
        // first, in the same batch as the tool's.
        let fut = self.decide_after(step.receipts, finished, msg.message_id, ctx);
        Box::pin(fut.map(move |res, act, _| match res {
            // A repeat of a call that was recorded, or not recorded: this call never happened.
            Ok(mut o) if o.duplicate => {
                act.machine = before;
                o.state = act.machine.state;
                Ok(o)
            }
            Err(e) => {
                act.machine = before;
                Err(e)
            }
            ok => ok,
        }))
    }
}

/// Internal: a result the governor sends itself (action completion, timeout, tool result).
#[derive(Message)]
#[rtype(result = "()")]
struct Callback(Input);

/// A decision under way in a governor's context: what its caller is answered.
type Deciding = ResponseActFuture<Governor, Result<Outcome, GovernorError>>;

/// How many times in a row an input is decided again after the ledger refused its decision
/// (a conflict: the chain moved on without this governor; or superseded: the entitlement
/// changed). Each refusal means that another decision or change was recorded meanwhile, so
/// the retries end; past them the caller gets 503 and may send the input again.
const RETRIES: u32 = 3;

/// How long an outcome that could not be recorded waits before it is decided again.
const OUTCOME_RETRY: Duration = Duration::from_secs(1);

impl Handler<Callback> for Governor {
    type Result = AtomicResponse<Self, ()>;
    fn handle(&mut self, msg: Callback, ctx: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(self.outcome(msg.0, ctx))
    }
}

impl Governor {
    /// Decides an input the governor sent itself (an action's outcome, a timer), and, when the
    /// ledger refuses an action outcome's receipt, sends it again in a second.
    fn outcome(&mut self, input: Input, ctx: &mut Context<Self>) -> ResponseActFuture<Self, ()> {
        // Left over from before a reload that failed: the chain, once read, tells what is due.
        if self.is_unread() {
            return Box::pin(actix::fut::ready(()));
        }
        let again = input.outcome_of().is_some().then(|| input.clone());
        let fut = self.run(input, None, ctx);
        Box::pin(fut.map(move |res, act, ctx| {
            let Err(GovernorError::Ledger(e)) = res else {
                return;
            };
            // The outcome of the action still in flight could not be recorded (the ledger
            // refused): it is decided again in a second, as long as that action is in flight.
            // A state timeout that fired has no timer left, so without this the governor would
            // stay `intervening` until a callback came, postponing and then refusing signals.
            let pending = |input: &Input| {
                let id = input.outcome_of();
                act.machine.in_flight.as_ref().is_some_and(|f| Some(f.action_id.as_str()) == id)
            };
            match again.filter(pending) {
                Some(input) => {
                    if let Some(suppressed) = LOG_OUTCOME.admit_now() {
                        tracing::warn!(tenant = %act.tenant, error = %e, suppressed, "could not record an action outcome; trying again in a second");
                    }
                    to_self_later(ctx, Callback(input), OUTCOME_RETRY);
                }
                None => {
                    tracing::warn!(tenant = %act.tenant, error = %e, "could not record an action outcome");
                }
            }
        }))
    }
}

/// Operator reset out of `refusing`, or an action callback (`complete` / `fail`).
#[derive(Message, Clone)]
#[rtype(result = "Result<Outcome, GovernorError>")]
pub struct Control(pub Input);

impl Handler<Control> for Governor {
    type Result = AtomicResponse<Self, Result<Outcome, GovernorError>>;
    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(refused) = self.refused_unread() {
            return refused;
        }
        AtomicResponse::new(self.run(msg.0, None, ctx))
    }
}

/// The tenant's entitlement changed (published by the Entitlements actor).
#[derive(Message)]
#[rtype(result = "()")]
pub struct EntitlementUpdate(pub Entitlement);

impl Handler<EntitlementUpdate> for Governor {
    type Result = AtomicResponse<Self, ()>;
    fn handle(&mut self, msg: EntitlementUpdate, ctx: &mut Context<Self>) -> Self::Result {
        // The record is read with the chain, and acted on as a change missed while stopped.
        if self.is_unread() {
            return done();
        }
        let fut = self.learn(msg.0, ctx);
        // A superseded change has a later one on its way; `learn` retries any other failure.
        AtomicResponse::new(Box::pin(fut.map(|res, act, _| {
            if let Err(e) = res {
                tracing::debug!(tenant = %act.tenant, error = %e, "an entitlement change was not recorded yet");
            }
        })))
    }
}

/// The answer of a handler that has nothing to do.
fn done() -> AtomicResponse<Governor, ()> {
    AtomicResponse::new(Box::pin(actix::fut::ready(())))
}

/// Sends `msg` to this governor through its mailbox, never with `ctx.notify`. actix 0.13
/// polls notified messages (context items) right after the mailbox without first taking in
/// the wait that a mailbox message's `AtomicResponse` has just begun, so a notified input (an
/// action's outcome, a timer) was decided from the state that the other decision was about to
/// replace: two receipts from one state, the second applied over the first. The mailbox waits.
fn to_self<M>(ctx: &mut Context<Governor>, msg: M)
where
    Governor: Handler<M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    ctx.address().do_send(msg);
}

/// [`to_self`] after `after`: the timer only posts the message, it decides nothing.
fn to_self_later<M>(ctx: &mut Context<Governor>, msg: M, after: Duration)
where
    Governor: Handler<M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    ctx.run_later(after, move |_, ctx| to_self(ctx, msg));
}

/// The entitlement's `expires_at` (milliseconds) is due: sent by [`Governor::arm_expiry`].
#[derive(Message)]
#[rtype(result = "()")]
struct ExpiryDue(u64);

/// The longest a governor waits for an expiry at a time; a later one is waited for in steps.
const EXPIRY_STEP_MS: u64 = 86_400_000;

impl Governor {
    fn expiry_ms(&self) -> Option<u64> {
        let e = self.record()?;
        e.expires_at.as_deref().and_then(millis_of)
    }

    /// Has the governor told when its entitlement expires (at once if it has). An expiry is an
    /// entitlement change like a suspension: `refusing`, the running action cancelled. A timer
    /// whose expiry was since moved finds another one and does nothing.
    fn arm_expiry(&self, ctx: &mut Context<Self>) {
        let Some(at) = self.expiry_ms() else {
            return;
        };
        // `is_active` holds up to and including the expiry's millisecond.
        let wait = (at + 1).saturating_sub(crate::clock::now_ms());
        to_self_later(
            ctx,
            ExpiryDue(at),
            Duration::from_millis(wait.min(EXPIRY_STEP_MS)),
        );
    }
}

impl Governor {
    /// At a (re)start: an entitlement change that no incarnation was running to hear (a
    /// suspension, revocation or expiry while the governor hibernated or restarted, or a resume
    /// or grant while it was refusing; `reactivated` says the chain has one) is handled as it
    /// would have been then. Run before the mailbox opens, so the caller who woke the governor
    /// finds it as a running one would be. An expiry still to come is armed.
    fn reconcile_entitlement(&mut self, reactivated: bool, ctx: &mut Context<Self>) {
        self.arm_expiry(ctx);
        if let Some(fut) = self.missed_change(reactivated, ctx) {
            ctx.wait(fut);
        }
    }

    /// Records the missed change, if one is still due; if the ledger refuses, tries again in a
    /// second (meanwhile the gate refuses every signal of a lapsed tenant by itself).
    fn missed_change(
        &mut self,
        reactivated: bool,
        ctx: &mut Context<Self>,
    ) -> Option<ResponseActFuture<Self, ()>> {
        let entitled = self.entitled();
        let lapsed = self.entitlement.is_some()
            && !entitled
            && !matches!(self.machine.state, State::Boot | State::Refusing);
        let back = reactivated && entitled && self.machine.state == State::Refusing;
        if !(lapsed || back) {
            return None;
        }
        let fut = self.run(Input::EntitlementChanged { active: back }, None, ctx);
        Some(Box::pin(fut.map(move |res, act, ctx| {
            if let Err(e) = res {
                if let Some(suppressed) = LOG_CHANGE.admit_now() {
                    tracing::warn!(tenant = %act.tenant, error = %e, suppressed, "could not record an entitlement change; trying again in a second");
                }
                to_self_later(ctx, Reconcile(reactivated), Duration::from_secs(1));
            }
        })))
    }
}

/// Try again to record an entitlement change missed while stopped (see
/// [`Governor::reconcile_entitlement`]), or learned while running but refused by the ledger.
#[derive(Message)]
#[rtype(result = "()")]
struct Reconcile(bool);

impl Handler<Reconcile> for Governor {
    type Result = AtomicResponse<Self, ()>;
    fn handle(&mut self, msg: Reconcile, ctx: &mut Context<Self>) -> Self::Result {
        if self.is_unread() {
            return done();
        }
        match self.missed_change(msg.0, ctx) {
            Some(fut) => AtomicResponse::new(fut),
            None => done(),
        }
    }
}

impl Handler<ExpiryDue> for Governor {
    type Result = AtomicResponse<Self, ()>;
    fn handle(&mut self, msg: ExpiryDue, ctx: &mut Context<Self>) -> Self::Result {
        if self.is_unread() || self.expiry_ms() != Some(msg.0) {
            return done();
        }
        if self.entitled() {
            // Woken early: the expiry was more than a step away, or the entitlement is not
            // active for another reason and an update will say when it is.
            if crate::clock::now_ms() <= msg.0 {
                self.arm_expiry(ctx);
            }
            return done();
        }
        if matches!(self.machine.state, State::Boot | State::Refusing) {
            return done();
        }
        let (at, fut) = (
            msg.0,
            self.run(Input::EntitlementChanged { active: false }, None, ctx),
        );
        AtomicResponse::new(Box::pin(fut.map(move |res, act, ctx| {
            if let Err(e) = res {
                if let Some(suppressed) = LOG_EXPIRY.admit_now() {
                    tracing::warn!(tenant = %act.tenant, error = %e, suppressed, "could not record an expiry; trying again in a second");
                }
                to_self_later(ctx, ExpiryDue(at), Duration::from_secs(1));
            }
        })))
    }
}

/// The governor's view (`None` while its chain is unread).
#[derive(Message, Clone)]
#[rtype(result = "Option<GovernorView>")]
pub struct GetView;

impl Handler<GetView> for Governor {
    type Result = MessageResult<GetView>;
    fn handle(&mut self, _: GetView, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.chain == Chain::Read).then(|| self.view()))
    }
}

/// The chain's last governor decision and the tenant's entitlement record, as seq and
/// fingerprint ([`Governor::chain_now`], [`Governor::knows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChainNow {
    seq: u64,
    fingerprint: u64,
}

/// The governor's view as the chain stands (`GET /v1/governors/{t}`, MCP's
/// `taiea.governor.state`). If the chain moved on without this governor (another instance's
/// governor decided for the tenant, or the tenant's entitlement changed through an instance
/// with no governor to tell), the governor first reloads from the chain and records what a
/// change it missed means for it, as it would at its next input. Unread (the store failing),
/// it shows its own state.
#[derive(Message, Clone)]
#[rtype(result = "Result<GovernorView, GovernorError>")]
pub struct CurrentView;

impl Handler<CurrentView> for Governor {
    type Result = AtomicResponse<Self, Result<GovernorView, GovernorError>>;
    fn handle(&mut self, _: CurrentView, _: &mut Context<Self>) -> Self::Result {
        if let Some(refused) = self.refused_unread() {
            return refused;
        }
        let known = self.knows();
        AtomicResponse::new(Box::pin(wrap_future::<_, Self>(self.chain_now()).then(
            move |now, act, ctx| -> ResponseActFuture<Self, _> {
                match now {
                    Ok(now) if now != known => {
                        tracing::info!(tenant = %act.tenant, ?now, ?known, "the chain moved on without this governor; reloading it to show its state");
                        events::governor_reloaded();
                        Box::pin(act.reload(ctx).then(
                            |reloaded, act, ctx| -> ResponseActFuture<Self, _> {
                                let missed = match reloaded {
                                    Ok(reactivated) => act.missed_change(reactivated, ctx),
                                    Err(e) => return Box::pin(actix::fut::ready(Err(e))),
                                };
                                match missed {
                                    Some(fut) => Box::pin(fut.map(|(), act, _| Ok(act.view()))),
                                    None => Box::pin(actix::fut::ready(Ok(act.view()))),
                                }
                            },
                        ))
                    }
                    _ => Box::pin(actix::fut::ready(Ok(act.view()))),
                }
            },
        )))
    }
}

/// Chaos hook: panic inside a handler.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

impl Handler<Crash> for Governor {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("chaos: governor crash requested");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_governor_is_small_enough_for_the_smaller_task_cell() {
        // tokio aligns task cells to 128 bytes on x86_64: the supervisor's runner around a
        // governor's actix context fits the 640-byte cell with a governor of at most 152 bytes;
        // 8 bytes more and every governor takes a 768-byte cell (128 bytes each, 128 MB a million).
        let size = std::mem::size_of::<super::Governor>();
        assert!(size <= 152, "Governor is {size} bytes");
    }
}
