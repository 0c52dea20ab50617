#!/usr/bin/env bash
# A streamed answer against the same answer unstreamed: time to the first
# event, to the first delta (and how long after the model's first token
# it leaves), to done; through query-stream's handler, through the local
# gateway over loopback HTTP, and query-ask unstreamed. The model is an
# OpenAI-compatible server inside the bench writing --tokens tokens
# --token-ms apart, so the figures are our path's. Uses a scratch
# database on the test stack; stops the stack afterwards if it started it.
#
#   infra/bench/stream.sh [--runs N] [--tokens N] [--token-ms MS] [--keep]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. infra/bench/test-stack.sh
cargo build --quiet --release -p ragway-gateway --bin ragway-bench
RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/release/ragway-bench" stream "$@"
$bench_started_stack || echo "(the test stack was already running; left as it was)"
