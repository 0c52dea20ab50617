#!/usr/bin/env bash
# Ingestion throughput: a mixed corpus (2,000 documents by default: text,
# Markdown, HTML, CSV, JSON) put in the bucket and ingested through the
# ingest-worker handler (S3 GET, extraction, chunking, local embeddings,
# chunk replacement with the HNSW and full-text indexes in place), next to
# extraction+chunking alone and a raw COPY of the same chunk rows into an
# identically indexed table, in one run. Uses a scratch database on the
# test stack; stops the stack afterwards if it started it.
#
#   infra/bench/ingest.sh [--docs N] [--keep]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. infra/bench/test-stack.sh
cargo build --quiet --release -p ragway-gateway --bin ragway-bench
# As the worker runs in Lambda (template.yaml): 4 records at once, 4 connections.
DATABASE_MAX_CONNECTIONS=4 RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/release/ragway-bench" ingest "$@"
$bench_started_stack || echo "(the test stack was already running; left as it was)"
