#!/usr/bin/env bash
# Validates the binary's GET /openapi.json with an independent validator (PyPI's
# openapi-spec-validator, pinned, installed into target/openapi-check and kept between runs):
# the document must be valid OpenAPI 3.1, not just JSON. tests/api/docs.rs holds it to the router.
#   tools/openapi-check.sh [BINARY]      (default: target/debug/tai-autonomics)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/debug/tai-autonomics}
DIR=$ROOT/target/openapi-check
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build first)" >&2; exit 1; }
mkdir -p "$DIR"
[ -x "$DIR/venv/bin/python" ] || python3 -m venv "$DIR/venv"
"$DIR/venv/bin/pip" install -q 'openapi-spec-validator==0.9.0'

WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
PORT=$PORT TAI_LEDGER__SQLITE_PATH="$WORK/ledger.db" "$BIN" >"$WORK/service.log" 2>&1 &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
for _ in $(seq 1 300); do
  curl -sf -o /dev/null "http://127.0.0.1:$PORT/health/ready" && break
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/service.log" >&2; exit 1; }
  sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/openapi.json" >"$WORK/openapi.json"
"$DIR/venv/bin/openapi-spec-validator" --schema 3.1 "$WORK/openapi.json"
