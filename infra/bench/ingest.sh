#!/usr/bin/env bash
# Ingestion throughput: a mixed corpus (2,000 documents by default: text,
# Markdown, HTML, CSV, JSON) put in the bucket and ingested through the
# ingest-worker handler (S3 GET, extraction, chunking, local embeddings,
# chunk replacement with the HNSW and full-text indexes in place), next to
# extraction+chunking alone and a raw COPY of the same chunk rows into an
# identically indexed table, in one run. Uses a scratch database on the
# test stack; stops the stack afterwards if it started it.
#
#   infra/bench/ingest.sh [--docs N] [--batch N] [--keep] [--fast-s3]
#
# --fast-s3 serves the bucket from s3s-fs (an S3 server in Rust, installed
# from crates.io into .local/tools on first use) instead of the stack's
# moto, whose ~2 ms of Python CPU per GET shares the two cores with the
# worker and Postgres. On AWS a GET costs the worker's host no server CPU.
# The worker's code and SDK calls are the same; only the endpoint differs.
# s3s-fs does not set TCP_NODELAY: its response body waits for the ACK of
# its headers, which the client delays by 40 ms. As root, the run turns on
# quickack for the 127.0.0.1 route (and turns it off again on exit);
# otherwise every GET stalls and the figures say so.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
fast_s3=false
args=()
for a in "$@"; do
  if [[ "$a" == --fast-s3 ]]; then fast_s3=true; else args+=("$a"); fi
done
. infra/bench/test-stack.sh
cargo build --quiet --release -p ragway-gateway --bin ragway-bench
if $fast_s3; then
  tools="$PWD/.local/tools"
  if [[ ! -x "$tools/bin/s3s-fs" ]]; then
    # 0.14 is the newest release that builds with rustc 1.95.
    cargo install --quiet s3s-fs@0.14.1 --features binary --locked --root "$tools"
  fi
  s3_root="$(mktemp -d)"
  mkdir "$s3_root/$BUCKET_NAME"
  "$tools/bin/s3s-fs" --host 127.0.0.1 --port 4569 \
    --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" "$s3_root" \
    >"$s3_root.log" 2>&1 &
  s3s_pid=$!
  route="$(ip route show table local exact 127.0.0.1/32 2>/dev/null | sed 's/ quickack [01]//' || true)"
  quickack=false
  if [[ -n "$route" ]] && ip route change $route table local quickack 1 2>/dev/null; then
    quickack=true
  else
    echo "warning: could not turn on quickack for 127.0.0.1 (not root?): GETs will stall on delayed ACKs" >&2
  fi
  # Replaces test-stack.sh's exit trap: stop s3s-fs, restore the route,
  # then stop the stack if this run started it.
  trap 'kill "$s3s_pid" 2>/dev/null; rm -rf "$s3_root" "$s3_root.log";
        if $quickack; then ip route change $route table local quickack 0; fi;
        if $bench_started_stack; then infra/stack.sh down; fi' EXIT
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/4569) 2>/dev/null && break
    sleep 0.1
  done
  # S3 only: the benchmark hands events to the worker itself.
  export AWS_ENDPOINT_URL=http://127.0.0.1:4569
  echo "S3: s3s-fs $("$tools/bin/s3s-fs" --version | awk '{print $2}') at $AWS_ENDPOINT_URL"
fi
# As the worker runs in Lambda (template.yaml): 4 records at once, 4 connections.
DATABASE_MAX_CONNECTIONS=4 RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/release/ragway-bench" ingest "${args[@]}"
$bench_started_stack || echo "(the test stack was already running; left as it was)"
