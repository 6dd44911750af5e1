//! House rules that no compiler checks: every source file opens with a `//!` header saying what
//! it owns, no stubs or debugging leftovers are committed, every metric written is described,
//! and the monitoring files under `tools/monitoring/` query only metrics the service writes,
//! with the operations guide's alert thresholds; the container image's build context leaves
//! out build outputs and ledgers.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn all_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "src",
        "tests",
        "supervisors/src",
        "supervisors/tests",
        "supervisors/benches",
        "walbuf/src",
        "walbuf/tests",
        "benches",
    ] {
        if root.join(dir).exists() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    files
}

#[test]
fn every_source_file_starts_with_a_module_header() {
    let missing: Vec<_> = all_sources()
        .into_iter()
        .filter(|p| !std::fs::read_to_string(p).unwrap().starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! header: {missing:?}"
    );
}

#[test]
fn no_stubs_or_debug_leftovers_are_committed() {
    // Spelled in pieces so this file does not match itself.
    let banned = [
        ["to", "do!("].concat(),
        ["unimpl", "emented!("].concat(),
        ["db", "g!("].concat(),
        ["#[ig", "nore"].concat(),
    ];
    let mut hits = Vec::new();
    for p in all_sources() {
        let text = std::fs::read_to_string(&p).unwrap();
        for b in &banned {
            if text.contains(b.as_str()) {
                hits.push(format!("{}: {b}", p.display()));
            }
        }
    }
    assert!(hits.is_empty(), "{hits:?}");
}

/// The names given as a string literal to the macros in `macros` (`counter!("name"`, …).
fn macro_names(text: &str, macros: &[&str]) -> Vec<String> {
    let mut names = Vec::new();
    for m in macros {
        for (i, _) in text.match_indices(m) {
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue; // `describe_counter!(` when looking for `counter!(`
            }
            let rest = text[i + m.len()..].trim_start();
            if let Some(quoted) = rest.strip_prefix('"') {
                if let Some(end) = quoted.find('"') {
                    names.push(quoted[..end].to_owned());
                }
            }
        }
    }
    names
}

/// Every metric the service writes has a `# HELP` line (a description in `telemetry::metrics`):
/// the exposition is what operators and Cloud Monitoring read it by. Ten did not, the
/// governor metrics of SPEC §12 among them.
#[test]
fn every_metric_the_service_writes_is_described() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    rust_files(&root.join("src"), &mut sources);
    let (mut written, mut described) = (Vec::new(), Vec::new());
    for p in sources {
        let text = std::fs::read_to_string(&p).unwrap();
        written.extend(macro_names(&text, &["counter!(", "gauge!(", "histogram!("]));
        described.extend(macro_names(
            &text,
            &[
                "describe_counter!(",
                "describe_gauge!(",
                "describe_histogram!(",
            ],
        ));
    }
    assert!(written.len() >= 30, "found {} metric writes", written.len());
    let mut missing: Vec<&String> = written.iter().filter(|w| !described.contains(w)).collect();
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "written but not described: {missing:?}");
}

/// Metric names in `text`: every run of `[a-z0-9_]` that starts with `tai_` or `process_`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for prefix in ["tai_", "process_"] {
        for (i, _) in text.match_indices(prefix) {
            let boundary = text[..i]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            if !boundary {
                continue;
            }
            let end = text[i..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .map_or(text.len(), |n| i + n);
            names.push(text[i..end].to_owned());
        }
    }
    names
}

/// Every query string (`prometheusQuery`, `expr`, `query`) anywhere in a JSON document.
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("prometheusQuery" | "expr" | "query", serde_json::Value::String(q)) => {
                        out.push(q.clone())
                    }
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

fn monitoring_file(path: &str) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/monitoring");
    let text = std::fs::read_to_string(root.join(path)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn monitoring_files_query_only_metrics_the_service_writes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut written = std::collections::HashSet::new();
    for f in ["src/telemetry/events.rs", "src/telemetry/metrics.rs"] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        for name in metric_names(&text) {
            written.insert(name);
        }
    }
    assert!(written.contains("tai_governor_state"), "{written:?}");
    let mut files = vec![
        "cloud-monitoring-dashboard.json".to_owned(),
        "grafana-dashboard.json".to_owned(),
    ];
    for policy in std::fs::read_dir(root.join("tools/monitoring/alerts")).unwrap() {
        let name = policy.unwrap().file_name().into_string().unwrap();
        files.push(format!("alerts/{name}"));
    }
    assert_eq!(
        files.len(),
        7,
        "two dashboards and five policies: {files:?}"
    );
    let mut unknown = Vec::new();
    let mut used = std::collections::HashSet::new();
    for file in &files {
        let mut qs = Vec::new();
        queries(&monitoring_file(file), &mut qs);
        assert!(!qs.is_empty(), "{file} has queries");
        for name in qs.iter().flat_map(|q| metric_names(q)) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| written.contains(*b)))
                .unwrap_or(&name)
                .to_owned();
            if written.contains(&base) {
                used.insert(base);
            } else {
                unknown.push(format!("{file}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics the service never writes: {unknown:?}"
    );
    // The guide's key metrics are all on the dashboards.
    for key in [
        "tai_http_requests_total",
        "tai_http_request_duration_seconds",
        "tai_governor_state",
        "tai_governor_transitions_total",
        "tai_governor_actions_pending",
        "tai_receipts_total",
        "tai_receipt_emission_seconds",
        "tai_firestore_writes_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "tai_actors",
    ] {
        assert!(used.contains(key), "{key} is on no dashboard");
    }
}

#[test]
fn alert_policies_hold_the_operations_guides_thresholds() {
    // (file, what the query must compare, how long it must hold)
    let expected = [
        ("alerts/error-rate.json", "> 0.01", "300s"),
        ("alerts/latency-p99.json", "> 1", "600s"),
        ("alerts/memory.json", "> 0.8 *", "300s"),
        ("alerts/governor-crashes.json", "[1h])) > 2", "0s"),
        // Not from the guide: the ledger audit's broken chains page at once.
        (
            "alerts/ledger-chain-broken.json",
            "tai_ledger_chains_broken) > 0",
            "0s",
        ),
    ];
    for (file, comparison, duration) in expected {
        let policy = monitoring_file(file);
        let condition = &policy["conditions"][0]["conditionPrometheusQueryLanguage"];
        let query = condition["query"].as_str().unwrap();
        assert!(query.contains(comparison), "{file}: {query}");
        assert_eq!(condition["duration"], duration, "{file}");
        assert!(policy["documentation"]["content"].is_string(), "{file}");
    }
}

#[test]
fn the_image_build_context_is_the_sources_without_outputs_or_ledgers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    // Gigabytes of build output, local receipts and the history stay out of the context.
    for left_out in [".git", "target", "data", "*.db", "*.db-wal"] {
        assert!(patterns.contains(&left_out), "{left_out} is not ignored");
    }
    // What the build needs is sent: the workspace and the configuration it copies.
    let containerfile = std::fs::read_to_string(root.join("container/Containerfile")).unwrap();
    assert!(containerfile.contains("COPY config/ /app/config/"));
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "config",
        "supervisors",
        "walbuf",
    ] {
        assert!(root.join(needed).exists(), "{needed}");
        let hit = patterns
            .iter()
            .find(|p| **p == needed || needed.starts_with(&format!("{p}/")));
        assert!(hit.is_none(), "{needed} is left out by {hit:?}");
    }
}
