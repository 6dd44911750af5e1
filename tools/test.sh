#!/usr/bin/env bash
# The test command: formatting, lints, every test (unit, integration, black-box, doc tests),
# the independent MCP clients against the real binary, an independent OpenAPI validator and
# schemathesis against it and its /openapi.json, its receipts verified with PyPI's rfc8785,
# JWTs from PyPI's PyJWT against its signature checks, and Prometheus evaluating the alert
# policies against it.
# It installs and starts whatever the tests need and stops it again; CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export RUST_BACKTRACE=${RUST_BACKTRACE:-0}
# A clean build gains nothing from incremental state, which only costs disk (CI's disk is small).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "emulators (Firestore, Pub/Sub)"
# shellcheck source=tools/emulators.sh
source tools/emulators.sh
trap emulators_stop EXIT
emulators_start

step "tests"
# The full-disk test lifts a file-size limit from outside the service, as freed space would;
# the read-only folder test reads the ledger as another user when the tests run as root.
for tool in prlimit setpriv; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: it comes with util-linux (apt-get install util-linux)" >&2; exit 1; }
done
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast --lib --bins --tests
fi

step "doc tests"
cargo test --workspace --doc --locked

step "rustdoc -D warnings (no broken or private links in the API docs)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "independent MCP clients (Python, TypeScript, Inspector, conformance)"
# The binary the black-box tests built (a separate `cargo build` would compile the dependency
# graph again with the non-test feature set).
tools/mcp-clients.sh target/debug/tai-autonomics

step "independent OpenAPI validator and schemathesis against /openapi.json"
tools/openapi-check.sh target/debug/tai-autonomics

step "receipts verified with an RFC 8785 implementation that is not ours"
tools/receipts-check.sh target/debug/tai-autonomics

step "signatures made with an independent JWT library"
tools/signatures-check.sh target/debug/tai-autonomics

step "the alert policies against the binary, with Prometheus"
tools/alerts-check.sh target/debug/tai-autonomics
