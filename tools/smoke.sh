#!/usr/bin/env bash
# The guide's smoke test: ./tools/smoke.sh [URL|canary]
#   URL     base URL of a running instance (default http://localhost:8080)
#   canary  the URL in $CANARY_URL (for example the Cloud Run canary service)
# Set TOKEN to send "Authorization: Bearer $TOKEN". Exits non-zero on the first failed check.
set -euo pipefail
target=${1:-http://localhost:8080}
if [ "$target" = canary ]; then target=${CANARY_URL:?set CANARY_URL to the canary service URL}; fi
target=${target%/}
auth=()
[ -n "${TOKEN:-}" ] && auth=(-H "Authorization: Bearer $TOKEN")

body=$(mktemp)
trap 'rm -f "$body"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
check() { # name, expected status, path
  local code
  code=$(curl -s --max-time 10 -o "$body" -w '%{http_code}' "${auth[@]}" "$target$3") || fail "$1: no answer"
  [ "$code" = "$2" ] || fail "$1: status $code, expected $2: $(head -c 300 "$body")"
  echo "ok   $1 ($code)"
}

check "health" 200 /health
grep -q '"status":"ok"' "$body" || fail "health: status is not ok"
check "liveness" 200 /health/live
check "readiness" 200 /health/ready
check "metrics" 200 /metrics
grep -q '^tai_http_requests_total' "$body" || fail "metrics: tai_http_requests_total missing"
check "supervision tree" 200 /v1/supervision
check "pub/sub consumer" 200 /v1/pubsub
check "unknown route is JSON 404" 404 /no-such-route
grep -q '"code":"not_found"' "$body" || fail "404 body is not the JSON error body"
echo "smoke test passed against $target"
