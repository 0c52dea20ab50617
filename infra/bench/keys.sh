#!/usr/bin/env bash
# What an API key costs a request against a bearer token: workspaces-get
# and documents-list through the real handlers, the same requests with
# the user's access token and with a key, interleaved; and the credential
# step alone. Prints p50 and p95 of each. Uses a scratch database on the
# test stack; stops the stack afterwards if it started it.
#
#   infra/bench/keys.sh [--runs N] [--docs N] [--keep]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. infra/bench/test-stack.sh
cargo build --quiet --release -p ragway-gateway --bin ragway-bench
RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/release/ragway-bench" keys "$@"
$bench_started_stack || echo "(the test stack was already running; left as it was)"
