#!/usr/bin/env bash
# Documents at scale: list and sync page latency with 100,000 documents in
# one workspace (and 50,000 in a neighbour), through the real handlers and
# as the same SQL run raw, interleaved in one run. Works in a scratch
# database of its own on the test stack; stops the stack afterwards if it
# started it.
#
#   infra/bench/documents.sh [--docs N] [--pages N] [--keep]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. infra/bench/test-stack.sh
cargo build --quiet --release -p ragway-gateway --bin ragway-bench
RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/release/ragway-bench" documents "$@"
$bench_started_stack || echo "(the test stack was already running; left as it was)"
