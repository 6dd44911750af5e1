#!/usr/bin/env bash
# JWTs from an independent signer, PyPI's PyJWT and `cryptography` (pinned, installed into
# target/signatures-check and kept between runs), against the real binary: the marketplace
# signature check with a JWKS file, an RSA key in SPKI and in PKCS#1 PEM, and an EC PEM, and
# push verification with the JWKS (tools/signatures_check.py says which tokens must pass).
#   tools/signatures-check.sh [BINARY]      (default: target/debug/tai-autonomics)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/debug/tai-autonomics}
DIR=$ROOT/target/signatures-check
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build first)" >&2; exit 1; }
# shellcheck source=tools/serve.sh
source "$ROOT/tools/serve.sh"
pypi_venv "$DIR" 'PyJWT==2.10.1' 'cryptography==46.0.3'
PY=$DIR/venv/bin/python
# New keys every run.
KEYS=$DIR/keys
rm -rf "$KEYS"
"$PY" "$ROOT/tools/signatures_check.py" keys "$KEYS"
check() {
  local mode=$1
  shift
  serve_start "$BIN" TAI_MARKETPLACE__VERIFY=true "$@" TAI_PUBSUB__PUSH__VERIFY=true \
    "TAI_PUBSUB__PUSH__JWKS_FILE=$KEYS/jwks.json" \
    TAI_PUBSUB__PUSH__AUDIENCE=https://tai.example/pubsub \
    TAI_PUBSUB__PUSH__SERVICE_ACCOUNT_EMAIL=push@signatures-check.iam.gserviceaccount.com
  "$PY" "$ROOT/tools/signatures_check.py" run "http://127.0.0.1:$PORT" "$KEYS" "$mode" ||
    { echo "service log:" >&2; tail -20 "$WORK/service.log" >&2; exit 1; }
  serve_stop
}
check jwks "TAI_MARKETPLACE__JWKS_FILE=$KEYS/jwks.json"
check rsa_spki "TAI_MARKETPLACE__PUBLIC_KEY_FILE=$KEYS/rsa_spki.pem"
check rsa_pkcs1 "TAI_MARKETPLACE__PUBLIC_KEY_FILE=$KEYS/rsa_pkcs1.pem"
check ec "TAI_MARKETPLACE__PUBLIC_KEY_FILE=$KEYS/ec.pem"
