#!/usr/bin/env bash
# Hostile files (extraction::hostile: self-drawing and fanning-out PDFs,
# deep HTML, endless CSV lines, zip and entity bombs, NUL escapes, text
# without whitespace), each through a fresh extraction child of the
# release build with the worker's bounds from the stack's env: CPU and
# wall seconds, the child's peak RSS, and how it ended.
#
#   infra/bench/hostile.sh [NAME]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. infra/bench/test-stack.sh
cargo build --quiet --release -p ragway-gateway --bin ragway-bench
"${CARGO_TARGET_DIR:-target}/release/ragway-bench" hostile "$@"
