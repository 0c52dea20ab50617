# Sourced by the benchmark scripts: brings up the test stack's services
# (stopping them on exit if this run started them) and loads its env.
export RAGWAY_PROFILE=test
bench_started_stack=false
if ! grep -q '^postgres  *up' <<<"$(infra/stack.sh status)"; then
  bench_started_stack=true
  trap 'infra/stack.sh down' EXIT
fi
infra/stack.sh up --services-only
# shellcheck disable=SC1090
. "$(infra/stack.sh env)"
