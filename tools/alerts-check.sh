#!/usr/bin/env bash
# Holds the alert policies under tools/monitoring/alerts/ to the real binary with a real
# Prometheus (Debian's package, pinned, unpacked into target/alerts-check and kept between runs):
# - promtool parses every query of the policies and of both dashboards, and lints /metrics;
# - Prometheus scrapes the binary every second with the policies loaded as alerting rules
#   (each query as written, `for` 0 s: the policies' own durations are Cloud Monitoring's to
#   apply); nothing fires on a healthy idle service; governor panics fire the crash policy,
#   a failing ledger the error-rate policy, a stalled ledger the latency policy, a receipt
#   changed in the ledger file the broken-chain policy (the ledger audit runs every second
#   here), and the memory policy stays quiet throughout (tools/alerts_check.py).
#   tools/alerts-check.sh [BINARY]      (default: target/debug/tai-autonomics)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/debug/tai-autonomics}
DIR=$ROOT/target/alerts-check
VERSION=2.42.0+ds-5+b6
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build first)" >&2; exit 1; }
mkdir -p "$DIR"
if [ ! -x "$DIR/unpacked/usr/bin/prometheus" ]; then
  echo "==> fetching Debian's prometheus $VERSION"
  # The pinned version, else the archive's current one: Debian keeps only the latest build of
  # a package, and a security rebuild would otherwise fail this step for good.
  (cd "$DIR" && rm -f prometheus_*.deb &&
    { apt-get download -q "prometheus=$VERSION" >/dev/null 2>&1 ||
      apt-get download -q prometheus >/dev/null; })
  rm -rf "$DIR/unpacked"
  dpkg-deb -x "$DIR"/prometheus_*.deb "$DIR/unpacked"
fi
PROM=$DIR/unpacked/usr/bin

# shellcheck source=tools/serve.sh
source "$ROOT/tools/serve.sh"
serve_start "$BIN" TAI_CHAOS__ENABLED=true TAI_LEDGER__AUDIT_INTERVAL_SECS=1
python3 "$ROOT/tools/alerts_check.py" rules "$ROOT/tools/monitoring" "$WORK"
"$PROM/promtool" check rules "$WORK/alerts.yml" "$WORK/queries.yml"
# The exposition itself, by Prometheus's own linter (types, names, help, units).
curl -sf "http://127.0.0.1:$PORT/metrics" | "$PROM/promtool" check metrics

PROM_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [alerts.yml]
scrape_configs:
  - job_name: tai
    static_configs: [{targets: ['127.0.0.1:$PORT']}]
EOF
"$PROM/prometheus" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
trap 'kill "$PROM_PID" 2>/dev/null || true; wait "$PROM_PID" 2>/dev/null || true; serve_stop' EXIT
python3 "$ROOT/tools/alerts_check.py" run "http://127.0.0.1:$PORT" "http://127.0.0.1:$PROM_PORT" \
  "$WORK/ledger.db" ||
  { echo "Prometheus log:" >&2; tail -20 "$WORK/prometheus.log" >&2; exit 1; }
