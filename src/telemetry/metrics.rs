//! The Prometheus recorder: installed once per process, every metric described, rendered for
//! `GET /metrics` together with the process metrics read from `/proc`.

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds (50 µs … 10 s).
const SECONDS_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Receipts per ledger commit.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Installs the recorder the first time; later calls (tests start many apps) reuse it.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("tai_ledger_batch_size".into()),
                    BATCH_BUCKETS,
                )
            })
            .expect("the bucket lists are non-empty constants");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe_all();
        super::events::zero_series();
        handle
    })
}

fn describe_all() {
    describe_gauge!(
        "tai_governor_state",
        "Running governors by state (boot, stable, warning, intervening, refusing)"
    );
    describe_counter!(
        "tai_governor_transitions_total",
        "Recorded governor state transitions, by from and to state"
    );
    describe_gauge!(
        "tai_governor_actions_pending",
        "Actions in flight, all governors together"
    );
    describe_counter!(
        "tai_signals_received_total",
        "Signals that reached a governor"
    );
    describe_counter!(
        "tai_refusals_total",
        "Inputs refused, by reason (a governor's refusal, rate limits, authentication, signatures, entitlement conflicts)"
    );
    describe_counter!(
        "tai_postpones_total",
        "Signals postponed while their governor's action ran"
    );
    describe_counter!("tai_actions_attempted_total", "Actions started, by type");
    describe_counter!(
        "tai_actions_failed_total",
        "Actions that failed or timed out, by type"
    );
    describe_histogram!(
        "tai_decision_latency_seconds",
        Unit::Seconds,
        "A governor's decision, from taking up the input to its receipts being durable"
    );
    describe_counter!(
        "tai_entitlement_changes_total",
        "Entitlement changes made durable, by the status they leave"
    );
    describe_counter!(
        "tai_pubsub_messages_total",
        "Pub/Sub messages handled, by delivery (push, pull) and outcome"
    );
    describe_counter!(
        "tai_pubsub_acks_total",
        "Pulled Pub/Sub messages acked or nacked"
    );
    describe_counter!(
        "tai_pubsub_redeliveries_deduplicated_total",
        "Pub/Sub redeliveries answered with their earlier receipt"
    );
    describe_counter!(
        "tai_decisions_superseded_total",
        "Governor decisions overtaken by an entitlement change before they were recorded, decided again"
    );
    describe_counter!(
        "tai_governor_reloads_total",
        "Governors that found their chain moved on without them (another instance decided) and reloaded it before deciding again or showing their state"
    );
    describe_gauge!(
        "tai_governors_unread",
        "Governors that could not read their chain (the ledger's store unavailable): they answer 503 and read it again with backoff"
    );
    describe_counter!(
        "tai_governors_swept_total",
        "Governors started for an action left in flight by a process that ended, so that its state timeout runs"
    );
    describe_counter!(
        "tai_pubsub_stream_reconnects_total",
        "Streaming pulls reopened after a failure"
    );
    describe_gauge!(
        "tai_pubsub_outstanding_messages",
        "Pulled Pub/Sub messages being processed"
    );
    describe_counter!(
        "tai_http_requests_total",
        "HTTP requests by method, route pattern and status"
    );
    describe_histogram!(
        "tai_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by method and route pattern"
    );
    describe_counter!(
        "tai_http_errors_total",
        "HTTP responses with status >= 400, by class (4xx, 5xx)"
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory of the process"
    );
    describe_counter!(
        "process_cpu_seconds_total",
        Unit::Seconds,
        "User plus system CPU time of the process"
    );
    describe_gauge!(
        "tai_actors",
        "Live supervised actors (the guide's erlang_processes)"
    );
    describe_counter!(
        "tai_supervisor_restarts_total",
        "Child restarts by supervisor"
    );
    describe_gauge!("tai_supervisor_children", "Running children by supervisor");
    describe_counter!(
        "tai_supervisor_intensity_exceeded_total",
        "Times a supervisor exceeded its restart intensity"
    );
    describe_counter!(
        "tai_child_exits_total",
        "Child exits by supervisor and reason (normal, shutdown, killed, error, panic)"
    );
    describe_counter!(
        "tai_child_start_failures_total",
        "Child start failures by supervisor"
    );
    describe_counter!("tai_panics_total", "Panics caught anywhere in the process");
    describe_counter!("tai_receipts_total", "Receipts made durable, by type");
    describe_histogram!(
        "tai_receipt_emission_seconds",
        Unit::Seconds,
        "From asking the ledger to the receipt being durable"
    );
    describe_counter!(
        "tai_firestore_writes_total",
        "Documents written to Firestore by the ledger"
    );
    describe_histogram!(
        "tai_ledger_batch_size",
        "Receipts per ledger commit (group commit)"
    );
    describe_histogram!(
        "tai_ledger_commit_seconds",
        Unit::Seconds,
        "Duration of one ledger commit"
    );
    describe_counter!(
        "tai_ledger_batch_failures_total",
        "Ledger commits that failed, by backend and kind (conflict: a race lost to another instance, whose callers are sealed once more)"
    );
}

/// `(resident bytes, cpu seconds)` of this process, from `/proc` (zeros where unavailable).
pub fn process_stats() -> (u64, f64) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    // Fields 14 and 15 of /proc/self/stat (after the parenthesised command name) are utime and
    // stime in clock ticks; Linux reports them at USER_HZ = 100.
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?) as f64 / 100.0)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

/// The Prometheus text exposition, with the process and actor gauges refreshed first.
pub fn render() -> String {
    let handle = install();
    let (rss, cpu) = process_stats();
    metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
    metrics::counter!("process_cpu_seconds_total").absolute(cpu.round() as u64);
    metrics::gauge!("tai_actors").set(supervisors::live_actors() as f64);
    handle.run_upkeep();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_stats_are_read_from_proc() {
        let (rss, _cpu) = process_stats();
        assert!(
            rss > 1024 * 1024,
            "resident memory of a test process is over 1 MiB: {rss}"
        );
    }
}
