#!/usr/bin/env python3
"""Smoke check of the local upload path: presigned PUT -> S3 -> SQS message.

    . "$(infra/stack.sh env)"; .local/venv/bin/python infra/stack/check_upload.py

Reads AWS_ENDPOINT_URL, BUCKET_NAME, INGEST_QUEUE_URL from the environment (the stack's
env file). Uploads a small object under workspaces/_smoke/ with a presigned PUT (plain
HTTP, like a browser would), waits for the matching ObjectCreated message on the ingest
queue, deletes that message and the object. Other messages are left alone (made visible
again). Do not run it while a gateway worker is draining the same queue.
"""

import json
import os
import sys
import time
import urllib.parse
import urllib.request
import uuid

import boto3
from botocore.config import Config


def main():
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    bucket = os.environ.get("BUCKET_NAME", "ragway-uploads")
    queue_url = os.environ["INGEST_QUEUE_URL"]
    kw = dict(
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    )
    s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **kw)
    sqs = boto3.client("sqs", **kw)

    key = f"workspaces/_smoke/{uuid.uuid4()}/hello world.txt"
    body = b"hello from check_upload.py\n"
    url = s3.generate_presigned_url(
        "put_object",
        Params={"Bucket": bucket, "Key": key, "ContentType": "text/plain"},
        ExpiresIn=300,
    )
    req = urllib.request.Request(
        url, data=body, method="PUT", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        print(f"PUT {resp.status} {key!r}")

    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(body), head
    assert head["ContentType"] == "text/plain", head

    deadline = time.monotonic() + 15
    found = None
    while found is None and time.monotonic() < deadline:
        resp = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for m in resp.get("Messages", []):
            records = json.loads(m["Body"]).get("Records", [])
            keys = [
                urllib.parse.unquote_plus(r.get("s3", {}).get("object", {}).get("key", ""))
                for r in records
            ]
            if key in keys and found is None:
                found = (m, records[0])
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            else:
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                )
    s3.delete_object(Bucket=bucket, Key=key)
    if found is None:
        print("FAIL: no ObjectCreated message for the upload on", queue_url, file=sys.stderr)
        return 1
    rec = found[1]
    print(
        "OK: message",
        rec.get("eventName"),
        "key as sent:",
        rec["s3"]["object"]["key"],
        "size:",
        rec["s3"]["object"].get("size"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
