#!/usr/bin/env bash
# Foundation figures: release binary sizes, cold start (median of 20) and RSS
# of every function binary; with --build-times also clean debug and release
# build times (in a throwaway target dir, so your warm one is untouched).
#
#   infra/bench/foundation.sh [--build-times] [--runs N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

runs=20
build_times=false
while (( $# )); do
  case "$1" in
    --build-times) build_times=true ;;
    --runs) runs="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

target="${CARGO_TARGET_DIR:-target}"
bins=$(ls functions/*/src/bin/*.rs | xargs -n1 basename | sed 's/\.rs$//')
bin_flags=$(for b in $bins; do printf -- '--bin %s ' "$b"; done)

if $build_times; then
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  for profile in dev release; do
    start=$SECONDS
    # shellcheck disable=SC2086
    CARGO_TARGET_DIR="$scratch" cargo build --quiet --profile "$profile" $bin_flags
    echo "clean $profile build of the function binaries: $((SECONDS - start)) s"
  done
fi

# shellcheck disable=SC2086
cargo build --quiet --release $bin_flags
paths=$(for b in $bins; do echo "$target/release/$b"; done)
# shellcheck disable=SC2086
python3 infra/bench/coldstart.py --runs "$runs" $paths
