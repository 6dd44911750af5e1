#!/usr/bin/env python3
"""Writes the monitoring files beside this script from one table of panels, so the Cloud
Monitoring dashboard and the Grafana dashboard show the same PromQL, and the alert policies
carry the operations guide's thresholds (one policy a file, as `gcloud` takes them).

Run it after changing a panel or a policy: `python3 tools/monitoring/generate.py`.
`tests/tidy.rs` checks the files it writes: only metrics the service writes, the guide's
key metrics all on the dashboards, the guide's thresholds in the policies.
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (title, [(PromQL, legend)])
PANELS = [
    ("Request rate (req/s)", [("sum(rate(tai_http_requests_total[5m]))", "requests")]),
    ("Error rate (share of requests, 4xx and 5xx)", [
        ("sum by (class) (rate(tai_http_errors_total[5m])) / scalar(sum(rate(tai_http_requests_total[5m])))", "{{class}}")]),
    ("Request latency (s)", [
        ("histogram_quantile(0.5, sum by (le) (rate(tai_http_request_duration_seconds_bucket[5m])))", "p50"),
        ("histogram_quantile(0.99, sum by (le) (rate(tai_http_request_duration_seconds_bucket[5m])))", "p99")]),
    ("Governors by state", [
        ("sum by (state) (tai_governor_state)", "{{state}}"),
        ("sum(tai_governors_unread)", "waiting to read their chain (the ledger away)")]),
    ("Governor transitions (per s)", [
        ("sum by (from, to) (rate(tai_governor_transitions_total[5m]))", "{{from}} → {{to}}")]),
    ("Actions pending", [("sum(tai_governor_actions_pending)", "pending")]),
    ("Signals and refusals (per s)", [
        ("sum(rate(tai_signals_received_total[5m]))", "signals"),
        ("sum by (reason) (rate(tai_refusals_total[5m]))", "refused: {{reason}}"),
        ("sum(rate(tai_decisions_superseded_total[5m]))", "overtaken by an entitlement change, decided again"),
        ("sum(rate(tai_governor_reloads_total[5m]))", "chain moved on elsewhere, governor reloaded")]),
    ("Decision latency p99 (s)", [
        ("histogram_quantile(0.99, sum by (le) (rate(tai_decision_latency_seconds_bucket[5m])))", "p99")]),
    ("Receipts emitted by type (per s)", [("sum by (type) (rate(tai_receipts_total[5m]))", "{{type}}")]),
    ("Receipt emission, request to durable (s)", [
        ("histogram_quantile(0.5, sum by (le) (rate(tai_receipt_emission_seconds_bucket[5m])))", "p50"),
        ("histogram_quantile(0.99, sum by (le) (rate(tai_receipt_emission_seconds_bucket[5m])))", "p99")]),
    ("Ledger batch size (receipts per commit, mean)", [
        ("sum(rate(tai_ledger_batch_size_sum[5m])) / sum(rate(tai_ledger_batch_size_count[5m]))", "mean")]),
    ("Firestore writes (per s)", [("sum(rate(tai_firestore_writes_total[5m]))", "writes")]),
    ("Ledger audit: chains broken, receipts verified again (per s)", [
        ("max(tai_ledger_chains_broken)", "chains broken"),
        ("sum(rate(tai_ledger_audit_receipts_total[5m]))", "receipts verified again")]),
    ("Supervisor restarts (per hour)", [
        ("sum by (supervisor) (increase(tai_supervisor_restarts_total[1h]))", "{{supervisor}}"),
        ("sum by (supervisor) (increase(tai_supervisor_intensity_exceeded_total[1h]))", "intensity exceeded: {{supervisor}}"),
        ("sum(increase(tai_governors_swept_total[1h]))", "governors started for actions a process that ended left in flight")]),
    ("Abnormal child exits and panics (per hour)", [
        ("sum by (supervisor, reason) (increase(tai_child_exits_total{reason=~\"panic|error|killed\"}[1h]))", "{{supervisor}} {{reason}}"),
        ("sum(increase(tai_panics_total[1h]))", "panics")]),
    ("Live supervised actors (the guide's erlang_processes)", [("sum(tai_actors)", "actors")]),
    ("Resident memory (bytes)", [("process_resident_memory_bytes", "{{instance}}")]),
    ("CPU (cores)", [("rate(process_cpu_seconds_total[5m])", "{{instance}}")]),
    ("Pub/Sub messages (per s) and outstanding", [
        ("sum by (outcome) (rate(tai_pubsub_messages_total[5m]))", "{{outcome}}"),
        ("sum(tai_pubsub_outstanding_messages)", "outstanding")]),
]

# The operations guide's recommended thresholds: (file, title, PromQL, duration, severity, what to do)
POLICIES = [
    ("error-rate", "TAI Autonomics: error rate above 1 % for 5 min",
     "sum(rate(tai_http_errors_total[5m])) / sum(rate(tai_http_requests_total[5m])) > 0.01",
     "300s", "CRITICAL",
     "Page on-call (operations guide). 4xx and 5xx answers over all requests; "
     "`tai_http_errors_total{class}` tells client errors from ours. Check the logs for `code` "
     "and the receipts of refusals."),
    ("latency-p99", "TAI Autonomics: p99 latency above 1 s for 10 min",
     "histogram_quantile(0.99, sum by (le) (rate(tai_http_request_duration_seconds_bucket[5m]))) > 1",
     "600s", "WARNING",
     "Investigate (operations guide). Compare `tai_receipt_emission_seconds` (the ledger) and "
     "`tai_decision_latency_seconds` (the governors) to see where the time goes."),
    ("memory", "TAI Autonomics: memory above 80 % of the 2 GiB limit for 5 min",
     "max(process_resident_memory_bytes) > 0.8 * 2147483648",
     "300s", "WARNING",
     "Review growth (operations guide). The limit is Cloud Run's `--memory=2Gi`; change "
     "2147483648 here if the service's limit changes. `tai_actors` and `tai_governor_state` "
     "show whether governors account for it."),
    ("governor-crashes", "TAI Autonomics: more than 2 governor crashes in an hour",
     "sum(increase(tai_child_exits_total{supervisor=\"governance\",reason=~\"panic|error|killed\"}[1h])) > 2",
     "0s", "CRITICAL",
     "Immediate investigation (operations guide). Crashed governors restart and rebuild from "
     "their chain head; `GET /v1/supervision/events` and `GET /observer` show which tenants "
     "and why."),
    ("ledger-chain-broken", "TAI Autonomics: a receipt chain does not verify",
     "max(tai_ledger_chains_broken) > 0",
     "0s", "CRITICAL",
     "The ledger audit found a chain that does not verify: a receipt was changed in the store, "
     "or the page that holds it is damaged. The service's ERROR line `the ledger audit found a "
     "broken chain` names the tenant, the seq and why; `GET /v1/tenants/{tenant}/receipts/verify` "
     "and `tai-autonomics verify --all` show the same. Treat a changed receipt as a security "
     "incident, and restore the ledger from a backup (README, Backup and restore): the policy "
     "clears when the audit finds the chain whole again."),
]


def write(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def cloud_dashboard():
    tiles = []
    for i, (title, queries) in enumerate(PANELS):
        tiles.append({
            "xPos": (i % 2) * 24, "yPos": (i // 2) * 16, "width": 24, "height": 16,
            "widget": {"title": title, "xyChart": {"dataSets": [
                {"timeSeriesQuery": {"prometheusQuery": q}, "plotType": "LINE", "legendTemplate": legend}
                for q, legend in queries]}}})
    return {"displayName": "TAI Autonomics", "dashboardFilters": [],
            "mosaicLayout": {"columns": 48, "tiles": tiles}}


def grafana_dashboard():
    source = {"type": "prometheus", "uid": "${datasource}"}
    panels = []
    for i, (title, queries) in enumerate(PANELS):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": title, "datasource": source,
            "gridPos": {"x": (i % 2) * 12, "y": (i // 2) * 8, "w": 12, "h": 8},
            "targets": [{"refId": chr(65 + j), "expr": q, "legendFormat": legend, "datasource": source}
                        for j, (q, legend) in enumerate(queries)]})
    return {
        "title": "TAI Autonomics", "uid": "tai-autonomics", "schemaVersion": 39, "version": 1,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "tags": ["tai-autonomics"],
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus"}]},
        "panels": panels,
    }


def policy(title, query, duration, severity, doc):
    return {"displayName": title, "combiner": "OR", "severity": severity,
            "conditions": [{"displayName": title, "conditionPrometheusQueryLanguage": {
                "query": query, "duration": duration, "evaluationInterval": "60s"}}],
            "documentation": {"mimeType": "text/markdown", "content": doc}}


if __name__ == "__main__":
    write(HERE / "cloud-monitoring-dashboard.json", cloud_dashboard())
    write(HERE / "grafana-dashboard.json", grafana_dashboard())
    for name, *rest in POLICIES:
        write(HERE / "alerts" / f"{name}.json", policy(*rest))
