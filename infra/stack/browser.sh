#!/usr/bin/env bash
# Installs what infra/gateway/tests/widget_browser.rs drives: Debian's
# chromium and chromium-driver (apt-get, with sudo when not root) and
# selenium (infra/stack/browser-requirements.txt) into .local/venv, which
# `infra/stack.sh up` creates. Idempotent and silent when all is there;
# infra/test.sh runs it before cargo test. Exits non-zero when something
# could not be installed (the test then says what is missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOCAL="$ROOT/.local"
VENV="$LOCAL/venv"
REQ="$ROOT/infra/stack/browser-requirements.txt"
STAMP="$VENV/.ragway-browser-requirements.sha256"
mkdir -p "$LOCAL"

log() { echo "infra/stack/browser.sh: $*" >&2; }

status=0
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
  sudo=()
  if (( EUID != 0 )); then
    if command -v sudo >/dev/null; then
      sudo=(sudo -n)
    else
      log "chromium missing and not root, no sudo: apt-get install chromium chromium-driver"
      status=1
    fi
  fi
  if (( status == 0 )); then
    log "installing chromium and chromium-driver (apt-get; log: .local/apt-browser.log)"
    if ! { "${sudo[@]}" apt-get update -qq &&
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
        >"$LOCAL/apt-browser.log" 2>&1; then
      tail -n 15 "$LOCAL/apt-browser.log" | sed 's/^/    /' >&2 || true
      log "apt-get install chromium chromium-driver failed"
      status=1
    fi
  fi
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log ".local/venv missing: run 'infra/stack.sh up' first"
  exit 1
fi
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]]; then
  log "installing infra/stack/browser-requirements.txt into .local/venv"
  if "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQ" \
    >"$LOCAL/pip-browser.log" 2>&1; then
    echo "$want" >"$STAMP"
  else
    tail -n 15 "$LOCAL/pip-browser.log" | sed 's/^/    /' >&2 || true
    log "pip install -r infra/stack/browser-requirements.txt failed (.local/pip-browser.log)"
    status=1
  fi
fi
exit "$status"
