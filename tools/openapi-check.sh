#!/usr/bin/env bash
# Holds the binary's GET /openapi.json to the service with two independent tools from PyPI
# (pinned, installed into target/openapi-check and kept between runs):
# - openapi-spec-validator: the document is valid OpenAPI 3.1, not just JSON;
# - schemathesis, configured by tools/schemathesis.toml: requests drawn from the document (valid
#   ones, ones it rules out, boundary values, sequences) against the real binary with bearer
#   auth on. Every answer must be one the document declares, with its schema; what it rules
#   out must be refused; what it allows must be taken; no 5xx but 503.
# tests/api/docs.rs holds the document to the router.
#   tools/openapi-check.sh [BINARY]      (default: target/debug/tai-autonomics)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/debug/tai-autonomics}
DIR=$ROOT/target/openapi-check
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build first)" >&2; exit 1; }
# shellcheck source=tools/serve.sh
source "$ROOT/tools/serve.sh"
pypi_venv "$DIR" 'openapi-spec-validator==0.9.0' \
  'schemathesis==4.32.5' 'hypothesis==6.170.27' 'jsonschema_rs==0.60.3'

TOKEN=openapi-check-admin
DIGEST=$("$BIN" token-digest "$TOKEN")
# Rate limits out of the way: a few thousand requests go to a handful of tenants.
serve_start "$BIN" TAI_AUTH__MODE=bearer \
  "TAI_AUTH__TOKENS=[{sha256=\"$DIGEST\", role=\"admin\"}]" \
  TAI_RATE_LIMIT__PER_SECOND=1000000 TAI_RATE_LIMIT__BURST=1000000
curl -sf "http://127.0.0.1:$PORT/openapi.json" >"$WORK/openapi.json"
"$DIR/venv/bin/openapi-spec-validator" --schema 3.1 "$WORK/openapi.json"

# MCP's transport wants both media types in Accept, a header OpenAPI cannot declare.
(cd "$WORK" && "$DIR/venv/bin/schemathesis" --no-color --config-file "$ROOT/tools/schemathesis.toml" \
  run "http://127.0.0.1:$PORT/openapi.json" \
  -H "Authorization: Bearer $TOKEN" -H "Accept: application/json, text/event-stream")
