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

# shellcheck source=tools/serve.sh
source "$ROOT/tools/serve.sh"
serve_start "$BIN"
curl -sf "http://127.0.0.1:$PORT/openapi.json" >"$WORK/openapi.json"
"$DIR/venv/bin/openapi-spec-validator" --schema 3.1 "$WORK/openapi.json"
