#!/usr/bin/env bash
# Cold start to ready and idle resident memory of the release binary.
#   tools/startup-bench.sh [runs]   (default 5 runs; builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release --locked -q
bin=target/release/tai-autonomics
port=$((20000 + RANDOM % 20000))
for i in $(seq 1 "$runs"); do
  t0=$(date +%s%N)
  PORT=$port TAI_LOG__LEVEL=warn "$bin" >/dev/null 2>&1 &
  pid=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$port/health/ready"; do sleep 0.001; done
  t1=$(date +%s%N)
  sleep 1
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" || true
  echo "run $i: ready after $(( (t1 - t0) / 1000000 )) ms, idle RSS $((rss / 1024)) MiB ($rss kB)"
done
