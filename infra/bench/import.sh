#!/usr/bin/env bash
# Bulk import throughput: a JSONL corpus (10,000 documents of about 3.7
# chunks each by default) imported into a new workspace through
# `POST .../imports`, the bucket and the stack's real queue, timed from
# the upload's first byte to the last document `ready`, next to a raw
# COPY of the same chunk rows into an identically indexed table. Uses a
# scratch database on the test stack; stops the stack afterwards if it
# started it.
#
#   infra/bench/import.sh [--docs N] [--chars N] [--keep]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. infra/bench/test-stack.sh
cargo build --quiet --release -p ragway-gateway --bin ragway-bench
# As the worker runs in Lambda (template.yaml): 4 connections.
DATABASE_MAX_CONNECTIONS=4 RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/release/ragway-bench" import "$@"
$bench_started_stack || echo "(the test stack was already running; left as it was)"
