#!/usr/bin/env python3
"""Cold start of Lambda function binaries, without AWS.

Starts each binary N times against a local stub of the Lambda Runtime API and
measures process start -> its first `GET /runtime/invocation/next` (the moment
it is ready for an event), and its resident memory at that moment.

    coldstart.py [--runs 20] BINARY...
"""
import argparse
import http.server
import os
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "infra", "gateway", "tests", "fixtures")

ready = threading.Event()
ready_at = [0.0]


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server naming)
        if self.path.endswith("/runtime/invocation/next"):
            ready_at[0] = time.perf_counter()
            ready.set()
            # Never answer: the function stays parked until we kill it.
            time.sleep(5)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("binaries", nargs="+")
    args = parser.parse_args()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with open(os.path.join(FIXTURES, "test-ed25519.pem")) as f:
        key = f.read()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_LAMBDA_LOG_GROUP_NAME": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_LC_SYS_NO_JITTER_ENTROPY": "1",
        "DATABASE_URL": "postgres://ragway:ragway@127.0.0.1:1/ragway",
        "JWT_ISSUER": "https://bench.invalid",
        "JWT_KEY_ID": "bench",
        "JWT_SIGNING_KEY": key,
        "BUCKET_NAME": "bench",
        "INGEST_QUEUE_URL": "http://127.0.0.1:1/000000000000/bench",
        "RUST_LOG": "warn",
    }
    print(f"{'binary':<22} {'size MiB':>9} {'cold start ms (median)':>23} {'p90':>7} {'RSS MiB':>8}")
    for binary in args.binaries:
        times, rss = [], []
        for _ in range(args.runs):
            ready.clear()
            started = time.perf_counter()
            proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if not ready.wait(10):
                proc.kill()
                sys.exit(f"{binary} never asked for an event: {proc.stderr.read().decode()[:500]}")
            times.append((ready_at[0] - started) * 1000)
            rss.append(rss_kib(proc.pid) / 1024)
            proc.kill()
            proc.wait()
        times.sort()
        size = os.path.getsize(binary) / (1024 * 1024)
        print(f"{os.path.basename(binary):<22} {size:>9.1f} {statistics.median(times):>23.1f} "
              f"{times[int(len(times) * 0.9) - 1]:>7.1f} {statistics.median(rss):>8.1f}")
    server.shutdown()


if __name__ == "__main__":
    main()
