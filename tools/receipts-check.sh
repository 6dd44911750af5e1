#!/usr/bin/env bash
# Receipts verified by an RFC 8785 implementation that is not ours: PyPI's `rfc8785` (pinned,
# installed into target/receipts-check and kept between runs) recomputes every receipt hash of
# an export from the real binary, after inputs chosen to be hard to canonicalise (extreme and
# easily misread doubles, big integers, UTF-16 key order, control and astral characters), and
# checks the chain's links and that every answered receipt is exported as answered
# (tools/receipts_check.py). On SQLite, and on the Firestore emulator too when
# FIRESTORE_EMULATOR_HOST is set.
#   tools/receipts-check.sh [BINARY]      (default: target/debug/tai-autonomics)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/debug/tai-autonomics}
DIR=$ROOT/target/receipts-check
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build first)" >&2; exit 1; }
# shellcheck source=tools/serve.sh
source "$ROOT/tools/serve.sh"
pypi_venv "$DIR" 'rfc8785==0.1.4'
check() {
  echo "--- ledger: $1"
  serve_start "$BIN" "${@:2}"
  "$DIR/venv/bin/python" "$ROOT/tools/receipts_check.py" "http://127.0.0.1:$PORT" ||
    { echo "service log:" >&2; tail -20 "$WORK/service.log" >&2; exit 1; }
  serve_stop
}
check sqlite
# The Firestore emulator, when tools/emulators.sh started one (tools/test.sh does), in a
# project of its own.
if [ -n "${FIRESTORE_EMULATOR_HOST:-}" ]; then
  check firestore TAI_LEDGER__BACKEND=firestore "FIRESTORE_PROJECT_ID=receipts-check-$$" \
    "FIRESTORE_EMULATOR_HOST=$FIRESTORE_EMULATOR_HOST"
fi
