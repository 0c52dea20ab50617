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
export RAGWAY_PROFILE=test

started=false
status="$(infra/stack.sh status)"
if ! grep -q '^postgres  *up' <<<"$status"; then
  started=true
  trap 'infra/stack.sh down' EXIT
fi
infra/stack.sh up --services-only
# shellcheck disable=SC1090
. "$(infra/stack.sh env)"
cargo build --quiet --release -p ragway-gateway --bin ragway-bench
RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/release/ragway-bench" ingest "$@"
$started || echo "(the test stack was already running; left as it was)"
