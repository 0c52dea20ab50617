#!/usr/bin/env bash
# Retrieval at scale: 200,000 chunks (384 dimensions, local embedder) over
# 1,000 workspaces with Zipf-distributed sizes, of topical synthetic text
# (--uniform: uniformly random words, the worst case for the vector
# index). Hybrid query latency
# through the query handler next to the same retrieval run directly,
# semantic recall@10 against exact search per size bucket, and budget
# reserve+commit pairs per second from 32 clients. Scratch database on the
# test stack; stops the stack afterwards if it started it.
#
#   infra/bench/retrieval.sh [--chunks N] [--workspaces N] [--uniform] [--ef-sweep N,N] [--queries N] [--clients N] [--seconds N] [--budget-only] [--keep]
#   (--chunks 1000000 for the large run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. infra/bench/test-stack.sh
cargo build --quiet --release -p ragway-gateway --bin ragway-bench
RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/release/ragway-bench" retrieval "$@"
$bench_started_stack || echo "(the test stack was already running; left as it was)"
