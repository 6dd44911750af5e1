#!/usr/bin/env bash
# End-to-end load: governed signals with durable receipts over HTTP against the release binary,
# beside the same server's trivial endpoint (/health/live) as the framework's ceiling, then the
# signal path at fixed rates for p50/p99. Uses oha (installed from crates.io when missing).
#   tools/load.sh [seconds per phase, default 10] [connections, default 256]
#   HTTP2_STREAMS=16 tools/load.sh 10 16   # HTTP/2 (h2c) instead: 16 connections x 16 streams
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-256}
# How oha connects: HTTP/1.1 with one request in flight per connection, or HTTP/2 with
# HTTP2_STREAMS streams per connection (Cloud Run's HTTP/2 end to end).
if [ -n "${HTTP2_STREAMS:-}" ]; then
  conn=(--http2 -c "$conns" -p "$HTTP2_STREAMS")
else
  conn=(-c "$conns")
fi
command -v oha >/dev/null || cargo install oha --locked
cargo build --release --locked -q
ROOT=$(pwd)
# shellcheck source=tools/serve.sh
source tools/serve.sh
# The signal path alone: the ledger audit's first pass would fall in the max-rate phase, and
# its cost is measured by itself (docs/PERFORMANCE.md, thirty-second session).
serve_start target/release/tai-autonomics TAI_LOG__LEVEL=warn TAI_LEDGER__AUDIT_INTERVAL_SECS=0 \
  TAI_RATE_LIMIT__PER_SECOND=10000000 TAI_RATE_LIMIT__BURST=10000000
base="http://127.0.0.1:$PORT"
# 500 tenants load-000 … load-499, each with its governor started by a first signal. Decisions
# are serialised per tenant (each waits for its durable receipt), so throughput grows with tenants.
for i in $(seq -w 0 499); do
  curl -sf -o /dev/null -XPOST "$base/marketplace" -H 'content-type: application/json' \
    -d "{\"tenant_id\":\"load-$i\",\"entitlement_id\":\"e\",\"action\":\"grant\"}"
  curl -sf -o /dev/null -XPOST "$base/v1/tenants/load-$i/signals" -H 'content-type: application/json' -d '{"metric":"cpu","value":1}'
done

summary() { # label, then oha output on stdin
  awk -v label="$1" '
    /Success rate:/ {ok=$3}
    /Requests\/sec:/ {rps=$2}
    # oha picks the unit of its latencies per run (ms, or s for slower runs): read it.
    function ms(v, unit) { return unit ~ /^s/ ? v * 1000 : unit ~ /^(µs|us)/ ? v / 1000 : v }
    /^ *50\.00% in/ {p50=ms($3, $4)}
    /^ *99\.00% in/ {p99=ms($3, $4)}
    END {printf "%-44s %10.0f req/s   p50 %7.2f ms   p99 %7.2f ms   success %s\n", label, rps, p50, p99, ok}'
}
signal=(-m POST -H 'content-type: application/json' -d '{"metric":"cpu_utilization","value":42.5}' --rand-regex-url "$base/v1/tenants/load-[0-4][0-9][0-9]/signals")

trivial=$(oha --no-tui -z "${secs}s" "${conn[@]}" "$base/health/live" | tee /dev/stderr | summary "trivial GET /health/live (ceiling)")
echo "$trivial"
max=$(oha --no-tui -z "${secs}s" "${conn[@]}" "${signal[@]}" | summary "governed signals, max rate")
echo "$max"
echo "ratio to the trivial endpoint: $(echo "$max $trivial" | awk '{printf "%.2f", $(NF/2-9) / $(NF-9)}')" 2>/dev/null || true
half=$(echo "$trivial" | awk '{print int($(NF-9)/2)}')
gmax=$(echo "$max" | awk '{print int($(NF-9))}')
for r in $((gmax / 4)) $((gmax / 2)) "$half"; do
  oha --no-tui -z "${secs}s" "${conn[@]}" -q "$r" "${signal[@]}" | summary "governed signals at $r req/s (fixed)"
done
echo "receipts made durable: $(curl -s "$base/metrics" | awk '/^tai_receipts_total/ {s+=$2} END {print s}')"
