# Sourced by the tool scripts that drive the real binary (mcp-clients.sh, openapi-check.sh,
# receipts-check.sh, signatures-check.sh, alerts-check.sh, load.sh): starts it on a free port
# with a fresh ledger and stops it again when the script exits; and installs the Python tools
# they drive it with.
#   pypi_venv DIR PACKAGE...              a venv at DIR/venv (kept between runs) with the
#                                          pinned PACKAGEs from PyPI
#   serve_start BINARY [NAME=VALUE ...]   sets PORT, PID and WORK (a scratch folder), or fails
#                                          with the service's log if it never becomes ready
serve_start() {
  local bin=$1
  shift
  WORK=$(mktemp -d)
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
  (cd "$ROOT" && exec env "$@" PORT="$PORT" TAI_LEDGER__SQLITE_PATH="$WORK/ledger.db" "$bin") \
    >"$WORK/service.log" 2>&1 &
  PID=$!
  trap serve_stop EXIT
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/health/ready" && return 0
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "the service at $bin did not become ready:" >&2
  cat "$WORK/service.log" >&2
  return 1
}

serve_stop() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}

pypi_venv() {
  local dir=$1
  shift
  mkdir -p "$dir"
  [ -x "$dir/venv/bin/python" ] || python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install -q "$@"
}
