#!/usr/bin/env bash
# A real small reranker on this machine, over Cohere's rerank contract: nanoranker
# (PyPI, MIT) ships its two ONNX models inside the wheel, so nothing downloads at
# run time. It is NOT a cross-encoder: each text is embedded alone
# (universal-sentence-encoder-multilingual, 512 dims, plus a 64-dim character
# n-gram hash), and a small network trained on MS MARCO-derived pairs scores
# [query embedding, document embedding]. Relevance scores are that network's
# output, in [0, 1].
#
#   infra/stack/reranker.sh up      install (first time ~20 s: ~140 MB download, ~310 MB venv), start, wait until ready
#   infra/stack/reranker.sh down    stop what `up` started
#   infra/stack/reranker.sh status  one line
#   infra/stack/reranker.sh env     print the path of the env file (source it after the stack's)
#
# Profile: RAGWAY_PROFILE=dev (default, port 8093) or test (port 8094); override
# with RAGWAY_RERANKER_PORT. RAGWAY_RERANKER_THREADS (default 1) sets ONNX
# Runtime's threads; RAGWAY_RERANKER_MAX_CHARS (default 4096) cuts each text
# before it is embedded. Lives in .local/<profile>/reranker/.
#
# Contract (common/src/rerank.rs CohereRerank): POST /rerank or /v1/rerank with
# {model?, query, documents: [str | {text}], top_n?, return_documents?} ->
# {id, results: [{index, relevance_score}], meta}, best first. Any
# Authorization header is accepted and ignored. GET /health answers {"status":"ok"}.
# Document embeddings are cached (LRU, RAGWAY_RERANKER_CACHE texts, default 8192;
# 0 turns it off, as benchmarks of a cold reranker want), so a chunk seen again
# costs only the scoring network.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PROFILE="${RAGWAY_PROFILE:-dev}"
case "$PROFILE" in
  dev) def_port=8093 ;;
  test) def_port=8094 ;;
  *) echo "reranker.sh: RAGWAY_PROFILE must be 'dev' or 'test'" >&2; exit 1 ;;
esac
PORT="${RAGWAY_RERANKER_PORT:-$def_port}"
THREADS="${RAGWAY_RERANKER_THREADS:-1}"
MAX_CHARS="${RAGWAY_RERANKER_MAX_CHARS:-4096}"
DIR="$ROOT/.local/$PROFILE/reranker"
VENV="$DIR/venv"
PIDFILE="$DIR/reranker.pid"
PORTFILE="$DIR/reranker.port"
LOG="$DIR/reranker.log"
ENVFILE="$DIR/env"
MARKER="ragway-reranker-server"
MODEL="nanoranker"
CACHE="${RAGWAY_RERANKER_CACHE:-8192}"
# Pinned, installed with --no-deps: nanoranker and everything it imports. mmh3
# computes the same MurmurHash3 as nanoranker's pure-Python copy, ~10x faster.
PACKAGES=(
  nanoranker==1.2
  onnxruntime==1.32.0
  onnxruntime-extensions==0.15.2
  numpy==2.4.6
  flatbuffers==25.12.19
  packaging==26.4
  protobuf==7.36.2
  mmh3==5.3.1
)

log() { printf '[reranker %s] %s\n' "$PROFILE" "$*"; }
die() { printf 'reranker.sh (%s): error: %s\n' "$PROFILE" "$*" >&2; exit 1; }
rel() { printf '%s' "${1#"$ROOT"/}"; }

[[ "$PORT" =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT <= 65535)) || die "bad port number '$PORT' (RAGWAY_RERANKER_PORT)"
[[ "$THREADS" =~ ^[0-9]+$ ]] && ((THREADS > 0)) || die "bad thread count '$THREADS' (RAGWAY_RERANKER_THREADS)"
[[ "$CACHE" =~ ^[0-9]+$ ]] || die "bad cache size '$CACHE' (RAGWAY_RERANKER_CACHE)"
[[ "$MAX_CHARS" =~ ^[0-9]+$ ]] && ((MAX_CHARS > 0)) || die "bad character limit '$MAX_CHARS' (RAGWAY_RERANKER_MAX_CHARS)"

# The server. Arguments: marker port threads max_chars model cache_size.
# It builds its own ONNX sessions from the files nanoranker ships (importing
# nanoranker would build them with a thread count of its own choosing) and
# scores the way nanoranker.rank does. Texts are embedded one at a time: the
# encoder's batched output shifts with the padding of the other texts.
SERVER_PY='
import functools, importlib.util, json, os, re, signal, sys, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mmh3
import numpy as np
import onnxruntime as ort
from onnxruntime_extensions import get_library_path

_, _marker, port, threads, max_chars, model_name, cache_size = sys.argv
port, threads, max_chars, cache_size = int(port), int(threads), int(max_chars), int(cache_size)

spec = importlib.util.find_spec("nanoranker")
if spec is None or not spec.submodule_search_locations:
    sys.exit("nanoranker is not installed")
res = os.path.join(spec.submodule_search_locations[0], "resources")
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
opts.register_custom_ops_library(get_library_path())
def session(name):
    path = os.path.join(res, name)
    if not os.path.isfile(path):
        sys.exit(f"model file missing: {path}")
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
encoder = session("universal-sentence-encoder-multilingual.onnx")
scorer = session("reranker_nn_v2.onnx")

# nanoranker.textual_embed: sklearn HashingVectorizer(analyzer="char",
# ngram_range=(1, 6), n_features=64), L2-normalised; bit-identical.
_ws = re.compile(r"\s\s+")
def textual(text):
    text = _ws.sub(" ", text.lower())
    acc, n_len, h32 = [0] * 64, len(text), mmh3.hash
    for n in range(1, 7):
        for i in range(n_len - n + 1):
            h = h32(text[i:i + n], 0, True)
            if h >= 0:
                acc[h % 64] += 1
            else:
                acc[-h % 64] -= 1
    v = np.asarray(acc, dtype=np.float64)
    norm = np.sqrt((v * v).sum())
    return v / norm if norm > 0 else v

@functools.lru_cache(maxsize=cache_size)
def embed(text):
    text = text[:max_chars]
    sem = encoder.run(["outputs"], {"inputs": [text]})[0][0]
    v = np.concatenate([sem, textual(text)]).astype(np.float32)
    v.flags.writeable = False
    return v

def scores(query, docs):
    if not docs:
        return []
    q = embed(query)
    x = np.stack([np.concatenate([q, embed(d)]) for d in docs])
    return [float(s) for s in scorer.run(["output"], {"input": x})[0].reshape(-1)]

class BadRequest(Exception):
    pass

def parse(body):
    try:
        req = json.loads(body)
    except ValueError as e:
        raise BadRequest(f"body is not JSON: {e}")
    if not isinstance(req, dict):
        raise BadRequest("body must be a JSON object")
    query = req.get("query")
    if not isinstance(query, str):
        raise BadRequest("query must be a string")
    docs = req.get("documents")
    if not isinstance(docs, list):
        raise BadRequest("documents must be a list")
    texts = []
    for i, d in enumerate(docs):
        if isinstance(d, dict):
            d = d.get("text")
        if not isinstance(d, str):
            raise BadRequest(f"documents[{i}] must be a string or an object with a text string")
        texts.append(d)
    top_n = req.get("top_n")
    if top_n is None:
        top_n = len(texts)
    elif isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise BadRequest("top_n must be a positive integer")
    return query, texts, min(top_n, len(texts)), bool(req.get("return_documents", False))

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ragway-reranker"

    def reply(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/health":
            self.reply(200, {"status": "ok"})
        elif path in ("/models", "/v1/models"):
            self.reply(200, {"object": "list", "data": [{"id": model_name, "object": "model"}]})
        else:
            self.reply(404, {"message": f"no such path: {self.path}"})

    def do_POST(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            self.close_connection = True
            return self.reply(411, {"message": "Content-Length required"})
        if length < 0 or length > 64 << 20:
            self.close_connection = True
            return self.reply(413, {"message": "body too large"})
        body = self.rfile.read(length)
        if path not in ("/rerank", "/v1/rerank", "/v2/rerank"):
            return self.reply(404, {"message": f"no such path: {self.path}"})
        t0 = time.monotonic()
        try:
            query, texts, top_n, return_documents = parse(body)
            s = scores(query, texts)
        except BadRequest as e:
            return self.reply(400, {"message": str(e)})
        except Exception as e:
            return self.reply(500, {"message": f"rerank failed: {e}"})
        order = sorted(range(len(s)), key=lambda i: s[i], reverse=True)[:top_n]
        results = []
        for i in order:
            r = {"index": i, "relevance_score": s[i]}
            if return_documents:
                r["document"] = {"text": texts[i]}
            results.append(r)
        ms = (time.monotonic() - t0) * 1000
        self.reply(200, {
            "id": str(uuid.uuid4()),
            "model": model_name,
            "results": results,
            "meta": {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}},
        })
        print(f"rerank {len(texts)} documents in {ms:.0f} ms", file=sys.stderr, flush=True)

    def log_message(self, fmt, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
signal.signal(signal.SIGINT, lambda *_: os._exit(0))
print(f"ragway-reranker listening on http://127.0.0.1:{server.server_address[1]} "
      f"({model_name}, {threads} thread(s))", flush=True)
server.serve_forever()
'

# The PID from the PID file if that process is still the server.
running_pid() {
  local pid
  [[ -f "$PIDFILE" ]] || return 0
  read -r pid <"$PIDFILE" || true
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$MARKER" && printf '%s' "$pid"
  return 0
}

install() {
  local want="${PACKAGES[*]}"
  if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.packages" 2>/dev/null)" == "$want" ]]; then
    return 0
  fi
  command -v python3 >/dev/null || die "python3 not found (Debian: apt-get install python3 python3-venv)"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "onnxruntime ${PACKAGES[1]#*==} needs Python 3.10+, found $(python3 --version 2>&1)"
  rm -rf "$VENV"
  mkdir -p "$DIR"
  log "installing ${PACKAGES[*]} into $(rel "$VENV") (~140 MB download)"
  python3 -m venv "$VENV" >"$DIR/venv.log" 2>&1 ||
    { tail -n 20 "$DIR/venv.log" >&2; rm -rf "$VENV"; die "'python3 -m venv' failed: install python3-venv"; }
  "$VENV/bin/pip" install --disable-pip-version-check --no-input -q --no-deps "${PACKAGES[@]}" \
    >"$DIR/pip.log" 2>&1 ||
    { tail -n 20 "$DIR/pip.log" >&2; die "pip install failed (log: $(rel "$DIR")/pip.log). No wheel for this platform, or PyPI unreachable?"; }
  printf '%s\n' "$want" >"$VENV/.packages"
}

up() {
  install
  local pid started="" running_port
  pid="$(running_pid)"
  if [[ -z "$pid" ]]; then
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && die "port $PORT is in use: set RAGWAY_RERANKER_PORT"
    log "starting $MODEL on 127.0.0.1:$PORT ($THREADS thread(s))"
    setsid "$VENV/bin/python" -c "$SERVER_PY" "$MARKER" "$PORT" "$THREADS" "$MAX_CHARS" "$MODEL" "$CACHE" \
      >"$LOG" 2>&1 </dev/null &
    pid=$! started=1
    printf '%s\n' "$pid" >"$PIDFILE"
    printf '%s\n' "$PORT" >"$PORTFILE"
  else
    running_port="$(cat "$PORTFILE" 2>/dev/null || echo '?')"
    [[ "$running_port" == "$PORT" ]] ||
      die "the reranker ($PROFILE) already runs on port $running_port, not $PORT: run 'RAGWAY_PROFILE=$PROFILE infra/stack/reranker.sh down' first"
    log "already running (pid $pid)"
  fi
  "$VENV/bin/python" - "$PORT" "$pid" <<'EOF' || not_ready "$started"
import os, sys, time, urllib.request
url, pid = "http://127.0.0.1:%s/health" % sys.argv[1], int(sys.argv[2])
for _ in range(600):
    try:
        urllib.request.urlopen(url, timeout=1).read()
        sys.exit(0)
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit(1)
        time.sleep(0.1)
sys.exit(1)
EOF
  cat >"$ENVFILE" <<EOF
# Written by infra/stack/reranker.sh up: do not edit.
export RERANK_PROVIDER=cohere
export RERANK_BASE_URL="http://127.0.0.1:$PORT"
export RERANK_MODEL="$MODEL"
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
  rm -f "$PIDFILE" "$PORTFILE" "$ENVFILE"
}

# After a failed readiness wait: show the log; stop the server only if this `up` started it.
not_ready() {
  tail -n 20 "$LOG" >&2
  [[ -n "$1" ]] && down >/dev/null
  die "the reranker did not become ready on port $PORT (log: $(rel "$LOG"))"
}

status() {
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    printf '%-9s up    pid %-8s http://127.0.0.1:%s  %s\n' reranker "$pid" "$(cat "$PORTFILE" 2>/dev/null || echo '?')" "$MODEL"
  else
    printf '%-9s down  %-12s port %s\n' reranker "" "$PORT"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) printf '%s\n' "$ENVFILE" ;;
  *) echo "usage: infra/stack/reranker.sh up|down|status|env" >&2; exit 2 ;;
esac
