#!/usr/bin/env bash
# Study tools and the AI proxy: latency (p50/p95) through the handlers of
# summaries, Q&A, mind maps and ai/generate with the env's chat provider
# (the extractive default unless CHAT_PROVIDER says otherwise), and whether
# the tokens charged equal the usage the responses reported. Works in a
# scratch database of its own on the test stack; stops the stack afterwards
# if it started it.
#
#   infra/bench/study.sh [--runs N] [--sections N] [--keep]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. infra/bench/test-stack.sh
cargo build --quiet --release -p ragway-gateway --bin ragway-bench
RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/release/ragway-bench" study "$@"
$bench_started_stack || echo "(the test stack was already running; left as it was)"
