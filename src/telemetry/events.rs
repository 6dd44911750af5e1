//! Typed telemetry events: each one logs and counts in a single place, so metric names and
//! label sets live here and nowhere else.

use std::time::Duration;

use supervisors::SupervisorEvent;

use super::budget::LogBudget;

/// A supervision event from any supervisor in the tree.
pub fn supervision(event: &SupervisorEvent) {
    // The governors' supervisor has a child per tenant, and an outage of the ledger fails
    // their starts by the thousand: its exits and restarts are logged once a second each,
    // with the number left out (metrics and `/v1/supervision/events` keep every one).
    static TERMINATED: LogBudget = LogBudget::new();
    static RESTARTED: LogBudget = LogBudget::new();
    let supervisor = event.supervisor().to_owned();
    let budget = |b: &LogBudget| {
        if supervisor == "governance" {
            b.admit_now()
        } else {
            Some(0)
        }
    };
    match event {
        SupervisorEvent::ChildStarted { child, .. } => {
            tracing::debug!(%supervisor, %child, "child started");
        }
        SupervisorEvent::ChildExited { child, reason, .. } => {
            metrics::counter!("tai_child_exits_total", "supervisor" => supervisor.clone(), "reason" => reason.kind()).increment(1);
            if !reason.is_abnormal() {
                tracing::debug!(%supervisor, %child, %reason, "child exited");
            } else if let Some(suppressed) = budget(&TERMINATED) {
                if supervisor == "governance" {
                    // Worded for the operations guide's search,
                    // `jsonPayload.message=~'governor.*crash'`.
                    tracing::warn!(%supervisor, %child, tenant = %child, %reason, suppressed, "governor crashed; its supervisor restarts it from its chain");
                } else {
                    tracing::warn!(%supervisor, %child, %reason, suppressed, "child terminated");
                }
            }
        }
        SupervisorEvent::ChildRestarted {
            child, restarts, ..
        } => {
            metrics::counter!("tai_supervisor_restarts_total", "supervisor" => supervisor.clone())
                .increment(1);
            if let Some(suppressed) = budget(&RESTARTED) {
                tracing::info!(%supervisor, %child, restarts, suppressed, "child restarted");
            }
        }
        SupervisorEvent::ChildStartFailed { child, error, .. } => {
            metrics::counter!("tai_child_start_failures_total", "supervisor" => supervisor.clone())
                .increment(1);
            tracing::error!(%supervisor, %child, %error, "child failed to start");
        }
        SupervisorEvent::IntensityExceeded {
            max_restarts,
            period_ms,
            ..
        } => {
            metrics::counter!("tai_supervisor_intensity_exceeded_total", "supervisor" => supervisor.clone()).increment(1);
            tracing::error!(%supervisor, max_restarts, period_ms, "supervisor reached its max restart intensity");
        }
    }
}

/// Running children of one supervisor, refreshed from a tree snapshot at scrape time, and
/// its counters, present at 0 from the first scrape (see [`zero_series`]).
pub fn supervisor_children(supervisor: &str, running: usize) {
    metrics::gauge!("tai_supervisor_children", "supervisor" => supervisor.to_owned())
        .set(running as f64);
    for reason in supervisors::ExitReason::KINDS {
        metrics::counter!("tai_child_exits_total", "supervisor" => supervisor.to_owned(), "reason" => reason).increment(0);
    }
    for name in [
        "tai_supervisor_restarts_total",
        "tai_supervisor_intensity_exceeded_total",
        "tai_child_start_failures_total",
    ] {
        metrics::counter!(name, "supervisor" => supervisor.to_owned()).increment(0);
    }
}

/// Puts the series that alerts and dashboards take an `increase` or `rate` of at 0 before
/// their first event. Prometheus takes a counter's first sample as its start, so a series
/// that first appeared already at 3 (three governors panicking between two scrapes) showed
/// no increase at all, and the crash alert missed them. The gauges of governors by state
/// read 0 for a state that no governor is in, rather than nothing.
pub fn zero_series() {
    for class in ["4xx", "5xx"] {
        metrics::counter!("tai_http_errors_total", "class" => class).increment(0);
    }
    for name in [
        "tai_panics_total",
        "tai_signals_received_total",
        "tai_postpones_total",
        "tai_decisions_superseded_total",
        "tai_governor_reloads_total",
        "tai_governors_swept_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for state in crate::governor::machine::State::NAMES {
        metrics::gauge!("tai_governor_state", "state" => *state).increment(0.0);
    }
    metrics::gauge!("tai_governor_actions_pending").increment(0.0);
    metrics::gauge!("tai_governors_unread").increment(0.0);
    for kind in RECEIPT_TYPES {
        metrics::counter!("tai_receipts_total", "type" => kind).increment(0);
    }
    for outcome in PUBSUB_OUTCOMES {
        metrics::counter!("tai_pubsub_messages_total", "delivery" => "push", "outcome" => outcome)
            .increment(0);
    }
}

/// The ledger's series that depend on its backend, at 0 (see [`zero_series`]): its failed
/// batches by kind (a lost race needs another instance on the same store: a Firestore
/// project, or a SQLite file two services share), and on Firestore its writes.
pub fn zero_ledger_series(backend: &'static str) {
    for kind in ["unavailable", "conflict"] {
        metrics::counter!("tai_ledger_batch_failures_total", "backend" => backend, "kind" => kind)
            .increment(0);
    }
    if backend == "firestore" {
        metrics::counter!("tai_firestore_writes_total").increment(0);
    }
}

/// The pull consumer's series, at 0 when it runs (see [`zero_series`]).
pub fn zero_pull_series() {
    for outcome in PUBSUB_OUTCOMES {
        metrics::counter!("tai_pubsub_messages_total", "delivery" => "pull", "outcome" => outcome)
            .increment(0);
    }
    for result in ["ack", "nack"] {
        metrics::counter!("tai_pubsub_acks_total", "result" => result).increment(0);
    }
    metrics::counter!("tai_pubsub_redeliveries_deduplicated_total").increment(0);
    metrics::counter!("tai_pubsub_stream_reconnects_total").increment(0);
    metrics::gauge!("tai_pubsub_outstanding_messages").increment(0.0);
}

/// The `type` label of `tai_receipts_total`: SPEC §7's receipt types.
const RECEIPT_TYPES: [&str; 5] = [
    "transition",
    "refusal",
    "action",
    "tool_call",
    "entitlement",
];

/// The `outcome` label of `tai_pubsub_messages_total` (see [`pubsub_message`]).
const PUBSUB_OUTCOMES: [&str; 6] = [
    "accepted",
    "refused",
    "duplicate",
    "malformed",
    "unknown_tenant",
    "transient",
];

/// The `method` label of a request: the methods of RFC 9110 (and PATCH) by name, anything else
/// as `other`. A client picks the method, and each new one would add a counter and a
/// histogram of 17 buckets per route to `/metrics`, without limit.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

/// The metric handles of one (route, method, status), looked up once per thread: building the
/// labelled keys, owned label strings and all, and finding them in the registry took about 18
/// allocations per request (counted with uprobes on the allocator).
struct HttpSeries {
    method: &'static str,
    status: u16,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

thread_local! {
    /// By route pattern; few methods and statuses per route, so a short list each.
    static HTTP_SERIES: std::cell::RefCell<std::collections::HashMap<String, Vec<HttpSeries>>> =
        Default::default();
}

/// One HTTP request finished. `route` is the matched pattern (bounded), never the raw path;
/// `method` is one of [`method_label`]'s.
pub fn http_request(method: &'static str, route: &str, status: u16, elapsed: Duration) {
    HTTP_SERIES.with_borrow_mut(|series| {
        let by_route = match series.get_mut(route) {
            Some(list) => list,
            None => series.entry(route.to_owned()).or_default(),
        };
        let i = match by_route
            .iter()
            .position(|s| s.method == method && s.status == status)
        {
            Some(i) => i,
            None => {
                let route = route.to_owned();
                by_route.push(HttpSeries {
                    method,
                    status,
                    requests: metrics::counter!("tai_http_requests_total", "method" => method, "route" => route.clone(), "status" => status.to_string()),
                    duration: metrics::histogram!("tai_http_request_duration_seconds", "method" => method, "route" => route),
                });
                by_route.len() - 1
            }
        };
        let s = &by_route[i];
        s.requests.increment(1);
        s.duration.record(elapsed.as_secs_f64());
    });
    if status >= 400 {
        let class = if status >= 500 { "5xx" } else { "4xx" };
        metrics::counter!("tai_http_errors_total", "class" => class).increment(1);
    }
}

/// A panic happened somewhere in the process.
pub fn panicked() {
    metrics::counter!("tai_panics_total").increment(1);
}

/// A ledger batch became durable.
pub fn ledger_batch_committed(
    backend: &'static str,
    items: &[crate::receipts::AppendItem],
    elapsed: Duration,
) {
    let mut per_type = RECEIPT_TYPES.map(|kind| (0u64, kind));
    for item in items {
        if let Some(slot) = per_type
            .iter_mut()
            .find(|(_, t)| *t == item.receipt.kind.as_str())
        {
            slot.0 += 1;
        }
    }
    for (n, kind) in per_type {
        if n > 0 {
            metrics::counter!("tai_receipts_total", "type" => kind).increment(n);
        }
    }
    metrics::histogram!("tai_ledger_batch_size").record(items.len() as f64);
    metrics::histogram!("tai_ledger_commit_seconds", "backend" => backend)
        .record(elapsed.as_secs_f64());
    if backend == "firestore" && !items.is_empty() {
        let docs = crate::receipts::firestore::FirestoreStore::documents_written(items);
        metrics::counter!("tai_firestore_writes_total").increment(docs as u64);
    }
    tracing::trace!(
        backend,
        receipts = items.len(),
        elapsed_us = elapsed.as_micros() as u64,
        "ledger batch committed"
    );
}

/// A caller's receipts are durable, `elapsed` after it asked.
pub fn receipts_durable(elapsed: Duration) {
    metrics::histogram!("tai_receipt_emission_seconds").record(elapsed.as_secs_f64());
}

/// A ledger batch failed: refused to every caller in it, or (a lost race on a shared store,
/// `kind="conflict"`) sealed once more for them from the store as it stands.
pub fn ledger_batch_failed(
    backend: &'static str,
    receipts: usize,
    error: &crate::receipts::writer::LedgerError,
) {
    let kind = match error {
        crate::receipts::writer::LedgerError::Conflict(_) => "conflict",
        _ => "unavailable",
    };
    metrics::counter!("tai_ledger_batch_failures_total", "backend" => backend, "kind" => kind)
        .increment(1);
    tracing::debug!(backend, receipts, %error, "ledger batch failed");
}

/// An entitlement changed durably; `status` is the new status.
pub fn entitlement_changed(status: &'static str) {
    metrics::counter!("tai_entitlement_changes_total", "status" => status).increment(1);
}

/// A request was refused before reaching an actor (`reason` from a closed set).
pub fn refused(reason: &'static str) {
    metrics::counter!("tai_refusals_total", "reason" => reason).increment(1);
}

/// A governor moved from one state to another (empty `from` = a governor appeared, empty
/// `to` = it stopped): keeps the per-state gauge.
pub fn governor_state_moved(from: &str, to: &str) {
    if !from.is_empty() {
        metrics::gauge!("tai_governor_state", "state" => from.to_owned()).decrement(1.0);
    }
    if !to.is_empty() {
        metrics::gauge!("tai_governor_state", "state" => to.to_owned()).increment(1.0);
    }
}

/// A recorded governor transition.
pub fn governor_transition(from: &'static str, to: &'static str) {
    metrics::counter!("tai_governor_transitions_total", "from" => from, "to" => to).increment(1);
}

/// A signal reached a governor.
pub fn signal_received() {
    metrics::counter!("tai_signals_received_total").increment(1);
}

/// A signal was postponed while an action ran.
pub fn postponed() {
    metrics::counter!("tai_postpones_total").increment(1);
}

/// A governor's decision was overtaken by a change of its tenant's entitlement before it was
/// recorded, and was decided again on the new record.
pub fn decision_superseded() {
    metrics::counter!("tai_decisions_superseded_total").increment(1);
}

/// Governors whose store was unavailable when they read their chain, waiting to read it again
/// (`delta` +1 as one begins waiting, -1 as it reads it or stops).
pub fn governor_unread(delta: f64) {
    metrics::gauge!("tai_governors_unread").increment(delta);
}

/// A governor found that its tenant's chain had moved on without it (another instance's
/// governor decided, or a commit of an incarnation before it landed after its rebuild) and
/// reloaded itself from the chain.
pub fn governor_reloaded() {
    metrics::counter!("tai_governor_reloads_total").increment(1);
}

/// The action sweeper started `n` governors for tenants whose chain ends with an action in
/// flight that no running governor held (left by a process that ended).
pub fn governors_swept(n: usize) {
    metrics::counter!("tai_governors_swept_total").increment(n as u64);
}

/// An action was started.
pub fn action_attempted(kind: &str) {
    metrics::counter!("tai_actions_attempted_total", "type" => kind.to_owned()).increment(1);
}

/// An action failed or timed out.
pub fn action_failed(kind: &str) {
    metrics::counter!("tai_actions_failed_total", "type" => kind.to_owned()).increment(1);
}

/// Actions in flight changed by `delta`.
pub fn actions_pending(delta: f64) {
    metrics::gauge!("tai_governor_actions_pending").increment(delta);
}

/// A governed input was decided and its receipts made durable.
pub fn decision(elapsed: Duration) {
    metrics::histogram!("tai_decision_latency_seconds").record(elapsed.as_secs_f64());
}

/// A Pub/Sub message (push or pull) was handled: `outcome` is `accepted`, `refused` (a governed
/// refusal with its receipt), `duplicate`, `malformed`, `unknown_tenant` or `transient`.
pub fn pubsub_message(delivery: &'static str, outcome: &'static str) {
    metrics::counter!("tai_pubsub_messages_total", "delivery" => delivery, "outcome" => outcome)
        .increment(1);
}

/// A pulled message was acked (`ack`) or nacked (`nack`).
pub fn pubsub_settled(result: &'static str) {
    metrics::counter!("tai_pubsub_acks_total", "result" => result).increment(1);
}

/// A redelivered message found its earlier receipt and made no new one.
pub fn pubsub_duplicate() {
    metrics::counter!("tai_pubsub_redeliveries_deduplicated_total").increment(1);
}

/// The streaming pull was reopened after it failed.
pub fn pubsub_reconnect(error: &str) {
    metrics::counter!("tai_pubsub_stream_reconnects_total").increment(1);
    tracing::warn!(%error, "pub/sub stream failed; reconnecting");
}

/// Pulled messages being processed (delivered, not yet acked or nacked).
pub fn pubsub_outstanding(delta: f64) {
    metrics::gauge!("tai_pubsub_outstanding_messages").increment(delta);
}

/// The ledger audit's series at 0, when it runs (`ledger.audit_interval_secs` > 0): a
/// dashboard and the alert policy read 0 broken chains, not an absent series.
pub fn zero_audit_series() {
    metrics::counter!("tai_ledger_audit_receipts_total").increment(0);
    for result in ["complete", "stopped"] {
        metrics::counter!("tai_ledger_audit_passes_total", "result" => result).increment(0);
    }
    metrics::gauge!("tai_ledger_chains_broken").set(0.0);
    metrics::gauge!("tai_ledger_audit_last_pass_timestamp_seconds").set(0.0);
}

/// The ledger audit verified `receipts` more.
pub fn ledger_audited(receipts: u64) {
    metrics::counter!("tai_ledger_audit_receipts_total").increment(receipts);
}

/// The ledger audit verified `tenant`'s chain; `broken` chains stand broken now.
pub fn chain_audited(tenant: &str, change: &crate::receipts::audit::Change, broken: usize) {
    use crate::receipts::audit::Change;
    match change {
        Change::Same => {}
        Change::Broken(f) => tracing::error!(
            tenant,
            seq = f.seq,
            reason = %f.reason,
            "the ledger audit found a broken chain: a receipt was changed or damaged in the store (README, Backup and restore)"
        ),
        Change::Mended(f) => tracing::info!(
            tenant,
            seq = f.seq,
            "a chain the ledger audit had found broken verifies again"
        ),
        Change::Gone(f) => tracing::info!(
            tenant,
            seq = f.seq,
            "a chain the ledger audit had found broken is no longer in the ledger"
        ),
    }
    metrics::gauge!("tai_ledger_chains_broken").set(broken as f64);
}

/// The ledger audit starts from the anchors of `file`.
pub fn audit_anchors_read(file: &str, anchors: usize, skipped: usize) {
    tracing::info!(
        file,
        anchors,
        skipped,
        "the ledger audit checks every chain against the anchors of ledger.audit_anchors_file from its first pass"
    );
}

/// The ledger audit could not verify `tenant`'s chain in this pass, although the ledger
/// answered; the pass went on.
pub fn chain_not_audited(tenant: &str, error: &crate::receipts::StoreError) {
    tracing::warn!(tenant, %error, "the ledger audit could not verify a chain in this pass; it goes on with the others");
}

/// A ledger audit pass went over every chain in `took`.
pub fn audit_pass_complete(summary: &crate::receipts::audit::PassSummary, took: Duration) {
    metrics::counter!("tai_ledger_audit_passes_total", "result" => "complete").increment(1);
    let now = crate::clock::now_ms() as f64 / 1000.0;
    metrics::gauge!("tai_ledger_audit_last_pass_timestamp_seconds").set(now);
    tracing::info!(
        chains = summary.chains,
        receipts = summary.receipts,
        broken = summary.broken,
        skipped = summary.skipped,
        seconds = took.as_secs_f64(),
        "ledger audit pass complete"
    );
}

/// A ledger audit pass stopped: the ledger could not be read; the next starts after `retry`.
pub fn audit_pass_stopped(error: &crate::receipts::StoreError, retry: Duration) {
    metrics::counter!("tai_ledger_audit_passes_total", "result" => "stopped").increment(1);
    tracing::warn!(%error, retry_secs = retry.as_secs_f64(), "ledger audit pass stopped: the ledger cannot be read now");
}
