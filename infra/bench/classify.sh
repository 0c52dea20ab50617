#!/usr/bin/env bash
# Classification throughput with the default classifier: a corpus on four
# topics (2,000 documents of about 3,000 characters by default) imported
# into a new workspace, then a four-field scheme run over all of it
# through `POST .../schemes/{id}/jobs` and the stack's real queue until
# the job has succeeded; how often the topic and year are right; and
# how fast results read back as JSON and CSV. Uses a scratch database on
# the test stack; stops the stack afterwards if it started it.
#
#   infra/bench/classify.sh [--docs N] [--chars N] [--runs N] [--keep]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. infra/bench/test-stack.sh
cargo build --quiet --release -p ragway-gateway --bin ragway-bench
# As the worker runs in Lambda (template.yaml): 4 connections.
DATABASE_MAX_CONNECTIONS=4 RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/release/ragway-bench" classify "$@"
$bench_started_stack || echo "(the test stack was already running; left as it was)"
