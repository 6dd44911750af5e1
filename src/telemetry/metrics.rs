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
        metrics::gauge!("tai_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
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
        "tai_build_info",
        "Always 1; its version label is this build's (CARGO_PKG_VERSION)"
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
        "Ledger commits that failed, by backend and kind (conflict: a race lost to another instance on the same store)"
    );
    describe_counter!(
        "tai_ledger_audit_receipts_total",
        "Receipts the ledger audit verified again"
    );
    describe_counter!(
        "tai_ledger_audit_passes_total",
        "Ledger audit passes over every chain, by result (stopped: the ledger could not be read)"
    );
    describe_gauge!(
        "tai_ledger_chains_broken",
        "Chains the ledger audit found broken and has not since found whole"
    );
    describe_gauge!(
        "tai_ledger_audit_last_pass_timestamp_seconds",
        Unit::Seconds,
        "When the last complete ledger audit pass ended, in seconds since the Unix epoch (0: none yet)"
    );
}

/// This process as `/proc` shows it; a value that cannot be read is 0.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// User plus system CPU time, to the clock tick (10 ms).
    pub cpu_seconds: f64,
    pub threads: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
    pub open_fds: u64,
    /// The soft limit on open files.
    pub max_fds: u64,
}

/// Linux reports times in `/proc` at USER_HZ, which is 100 on every architecture it runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads [`ProcessStats`] from `/proc/self` (and the boot time from `/proc/stat`).
pub fn process_stats() -> ProcessStats {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let mut p = ProcessStats::default();
    let status = read("/proc/self/status");
    p.resident_bytes = (status.lines().find_map(|l| l.strip_prefix("VmRSS:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    // /proc/self/stat after the parenthesised command name: field 3 (state) is index 0, so
    // utime (14) and stime (15) are 11 and 12, num_threads (20) 17, starttime (22, ticks
    // after boot) 19 and vsize (23, bytes) 20.
    let stat = read("/proc/self/stat");
    let fields: Vec<u64> = (stat.rfind(')').and_then(|i| stat.get(i + 2..)))
        .unwrap_or_default()
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    p.cpu_seconds = (field(11) + field(12)) as f64 / TICKS_PER_SECOND;
    p.threads = field(17);
    p.virtual_bytes = field(20);
    let boot = (read("/proc/stat")
        .lines()
        .find_map(|l| l.strip_prefix("btime ")))
    .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(boot) = boot.filter(|_| fields.len() > 19) {
        p.start_time_seconds = boot as f64 + field(19) as f64 / TICKS_PER_SECOND;
    }
    p.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    p.max_fds = (read("/proc/self/limits").lines())
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(0);
    p
}

/// The process families in the text format, as Prometheus's own client libraries name them.
/// Written here rather than recorded: the recorder's counters are whole numbers, and CPU
/// seconds rounded to whole seconds made `rate(process_cpu_seconds_total[1m])` a staircase.
fn process_text(p: &ProcessStats) -> String {
    let families: [(&str, &str, &str, f64); 7] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "User plus system CPU time of the process in seconds",
            p.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the process in bytes",
            p.resident_bytes as f64,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory of the process in bytes",
            p.virtual_bytes as f64,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process in seconds since the Unix epoch",
            p.start_time_seconds,
        ),
        (
            "process_open_fds",
            "gauge",
            "Open file descriptors of the process",
            p.open_fds as f64,
        ),
        (
            "process_max_fds",
            "gauge",
            "The process's soft limit on open file descriptors",
            p.max_fds as f64,
        ),
        (
            "process_threads",
            "gauge",
            "Threads of the process",
            p.threads as f64,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in families {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
        ));
    }
    out
}

/// The Prometheus text exposition: the recorder's families (the actor gauge refreshed first),
/// then the process families read from `/proc`.
pub fn render() -> String {
    let handle = install();
    metrics::gauge!("tai_actors").set(supervisors::live_actors() as f64);
    handle.run_upkeep();
    let mut text = handle.render();
    text.push_str(&process_text(&process_stats()));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_stats_are_read_from_proc() {
        let p = process_stats();
        assert!(p.resident_bytes > 1024 * 1024, "{p:?}");
        assert!(p.virtual_bytes >= p.resident_bytes, "{p:?}");
        assert!(
            p.threads >= 1 && p.open_fds >= 3 && p.max_fds >= p.open_fds,
            "{p:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Started before now, and not before this test binary could have been built.
        assert!(
            p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 3600.0,
            "{p:?} at {now}"
        );
    }

    #[test]
    fn process_families_are_written_in_the_text_format_with_fractions_kept() {
        let p = ProcessStats {
            cpu_seconds: 12.34,
            resident_bytes: 5,
            ..ProcessStats::default()
        };
        let text = process_text(&p);
        assert!(text.contains(
            "# HELP process_cpu_seconds_total User plus system CPU time of the process in seconds\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.34\n"
        ));
        assert!(text.contains("\nprocess_resident_memory_bytes 5\n"));
        assert_eq!(text.matches("# TYPE ").count(), 7);
    }
}
