#!/usr/bin/env python3
"""The two halves of tools/alerts-check.sh.

`rules MONITORING OUT` writes OUT/alerts.yml, one Prometheus alerting rule per policy under
MONITORING/alerts (named after its file, its query as written, `for` 0 s), and OUT/queries.yml,
every dashboard query as a recording rule, for promtool to parse.

`run SERVICE PROMETHEUS LEDGER` drives the service (chaos hooks on, its ledger audit every
second) into each policy's condition in turn and waits for Prometheus, which scrapes it, to fire
that policy and no other. The last condition is a receipt changed in the service's SQLite file
LEDGER by another process, as someone with access to the disk would change it.
"""

import calendar
import json
import sqlite3
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def dashboard_queries(v, out):
    if isinstance(v, dict):
        for k, x in v.items():
            if k in ("prometheusQuery", "expr", "query") and isinstance(x, str):
                if "tai_" in x or "process_" in x:
                    out.append(x)
            else:
                dashboard_queries(x, out)
    elif isinstance(v, list):
        for x in v:
            dashboard_queries(x, out)


def rules(monitoring, out):
    lines = ["groups:", "- name: policies", "  rules:"]
    for f in sorted((monitoring / "alerts").glob("*.json")):
        for c in json.loads(f.read_text())["conditions"]:
            query = c["conditionPrometheusQueryLanguage"]["query"]
            lines += [f"  - alert: {f.stem}", f"    expr: {json.dumps(query)}", "    for: 0s"]
    (out / "alerts.yml").write_text("\n".join(lines) + "\n")
    queries = []
    for name in ("cloud-monitoring-dashboard.json", "grafana-dashboard.json"):
        dashboard_queries(json.loads((monitoring / name).read_text()), queries)
    lines = ["groups:", "- name: dashboards", "  rules:"]
    for i, query in enumerate(queries):
        lines += [f"  - record: dashboard_query_{i}", f"    expr: {json.dumps(query)}"]
    (out / "queries.yml").write_text("\n".join(lines) + "\n")
    print(f"{len(list((monitoring / 'alerts').glob('*.json')))} policies, {len(queries)} dashboard queries")


def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"content-type": "application/json"}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait(what, condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    sys.exit(f"alerts-check: {what}: not within {timeout:.0f} s")


class Prometheus:
    def __init__(self, url):
        self.url = url

    def query(self, q):
        _, body = call("GET", f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": q}))
        return body["data"]["result"]

    def firing(self):
        _, body = call("GET", f"{self.url}/api/v1/alerts")
        return {a["labels"]["alertname"] for a in body["data"]["alerts"] if a["state"] == "firing"}

    def evaluated_since(self, t):
        """Whether every rule group has been evaluated after the Prometheus time `t`."""
        _, body = call("GET", f"{self.url}/api/v1/rules")
        groups = body["data"]["groups"]
        return groups and all(self.seconds(g["lastEvaluation"]) > t for g in groups)

    @staticmethod
    def seconds(rfc3339):
        # Prometheus writes nanoseconds; Python's parser takes at most microseconds.
        head, _, frac = rfc3339.rstrip("Z").partition(".")
        t = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
        return t + float("0." + (frac or "0"))

    def now(self):
        _, body = call("GET", f"{self.url}/api/v1/query?query=time()")
        return float(body["data"]["result"][1])


def run(service, prom_url, ledger):
    prom = Prometheus(prom_url)
    quiet = {"memory", "ledger-chain-broken"}  # no condition of this run may fire these

    def expect(fired, within=60.0):
        """Waits until the policies `fired` (and only those, of the ones induced so far) fire."""
        def check():
            now = prom.firing()
            assert not (now & quiet), f"fired without cause: {sorted(now & quiet)}"
            return fired <= now and now
        now = wait(f"{sorted(fired)} firing", check, within)
        print(f"firing: {sorted(now)}")

    # A healthy idle service: scraped a few times, every rule evaluated since, nothing fires.
    wait("three scrapes", lambda: prom.query("count_over_time(up[1m]) >= 3"))
    start = prom.now()
    wait("the rules evaluated after three scrapes", lambda: prom.evaluated_since(start + 1))
    idle = prom.firing()
    assert idle == set(), f"an idle service fires {sorted(idle)}"
    print("idle: nothing fires")

    # Three governor panics within the hour.
    status, body = call("POST", f"{service}/marketplace",
                        {"tenant_id": "alerts", "entitlement_id": "e-1", "action": "grant"})
    assert status == 200, (status, body)
    status, body = call("POST", f"{service}/v1/tenants/alerts/signals", {"metric": "cpu", "value": 1})
    assert status == 200, (status, body)

    def running():
        # The listing reads the supervisor, not the governor: a governor being restarted
        # would answer 503 itself, an error that the error-rate policy counts.
        _, page = call("GET", f"{service}/v1/governors")
        return any(g["tenant_id"] == "alerts" and g["child_state"] == "running"
                   for g in page["governors"])

    for _ in range(3):
        wait("the governor running", running)
        status, body = call("POST", f"{service}/v1/chaos/governors/alerts/crash")
        assert status == 202, (status, body)
    quiet |= {"error-rate", "latency-p99"}
    expect({"governor-crashes"})
    quiet -= {"error-rate"}

    # More than 1 % of answers are errors: the ledger fails every commit for a while.
    status, body = call("POST", f"{service}/v1/chaos/ledger", {"fail_ms": 3000})
    assert status == 202, (status, body)
    signal = {"metric": "cpu", "value": 10}
    codes = [call("POST", f"{service}/v1/tenants/alerts/signals", signal)[0] for _ in range(20)]
    assert 503 in codes, codes
    expect({"governor-crashes", "error-rate"})
    quiet -= {"latency-p99"}

    # p99 over 1 s: the ledger stalls each commit for 1.5 s under a dozen signals at once.
    status, body = call("POST", f"{service}/v1/chaos/ledger", {"stall_ms": 1500})
    assert status == 202, (status, body)
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda _: call("POST", f"{service}/v1/tenants/alerts/signals", signal), range(12)))
    expect({"governor-crashes", "error-rate", "latency-p99"})

    # A receipt changed in the ledger file: the audit finds it without anyone reading the chain.
    db = sqlite3.connect(ledger, timeout=10)
    db.execute("DROP TRIGGER receipts_are_append_only_update")
    changed = db.execute("UPDATE receipts SET reason = 'nothing happened' "
                         "WHERE tenant_id = 'alerts' AND seq = 2").rowcount
    db.commit()
    db.close()
    assert changed == 1, changed
    quiet -= {"ledger-chain-broken"}
    expect({"governor-crashes", "error-rate", "latency-p99", "ledger-chain-broken"})
    print("alert policies: each fires on its condition, and memory stays quiet")


if __name__ == "__main__":
    if sys.argv[1] == "rules":
        rules(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        run(sys.argv[2], sys.argv[3], sys.argv[4])
