#!/usr/bin/env bash
# Installs what infra/gateway/tests/openapi.rs runs: schemathesis and
# openapi-spec-validator (infra/stack/fuzz-requirements.txt) into their
# own venv, .local/fuzz-venv, apart from the stack's tools. Idempotent and
# silent when all is there; infra/test.sh runs it before cargo test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOCAL="$ROOT/.local"
VENV="$LOCAL/fuzz-venv"
REQ="$ROOT/infra/stack/fuzz-requirements.txt"
STAMP="$VENV/.ragway-fuzz-requirements.sha256"
mkdir -p "$LOCAL"

log() { echo "infra/stack/fuzz.sh: $*" >&2; }

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
[[ -x "$VENV/bin/python" && "$(cat "$STAMP" 2>/dev/null)" == "$want" ]] && exit 0
if [[ ! -x "$VENV/bin/python" ]] && ! python3 -m venv "$VENV" >"$LOCAL/fuzz-venv-create.log" 2>&1; then
  log "'python3 -m venv' failed (.local/fuzz-venv-create.log): apt-get install python3-venv"
  exit 1
fi
log "installing infra/stack/fuzz-requirements.txt into .local/fuzz-venv"
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQ" \
  >"$LOCAL/pip-fuzz.log" 2>&1; then
  tail -n 15 "$LOCAL/pip-fuzz.log" | sed 's/^/    /' >&2 || true
  log "pip install -r infra/stack/fuzz-requirements.txt failed (.local/pip-fuzz.log)"
  exit 1
fi
echo "$want" >"$STAMP"
