#!/usr/bin/env python3
"""Create ragway's S3/SQS resources in the local AWS emulator (moto), idempotently.

    setup_aws.py --endpoint http://127.0.0.1:4566 [--region us-east-1]

Creates:
  * bucket  ragway-uploads
  * queue   ragway-ingest-dlq
  * queue   ragway-ingest  (VisibilityTimeout 60, redrive to the DLQ after 5 receives)
  * bucket notification: s3:ObjectCreated:* with key prefix "workspaces/" -> ragway-ingest

Prints shell-friendly lines on stdout:
  INGEST_QUEUE_URL=<url>
  INGEST_DLQ_URL=<url>

Run by infra/stack.sh with the venv's python (boto3 comes with moto).
"""

import argparse
import json
import sys
import urllib.request

import boto3
from botocore.config import Config

BUCKET = "ragway-uploads"
QUEUE = "ragway-ingest"
DLQ = "ragway-ingest-dlq"
PREFIX = "workspaces/"
MAX_RECEIVE_COUNT = 5
VISIBILITY_TIMEOUT = 60
NOTIFICATION_ID = "ragway-ingest-object-created"


def clients(endpoint, region):
    kw = dict(
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **kw)
    sqs = boto3.client("sqs", **kw)
    return s3, sqs


def ensure_bucket(s3, region):
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if BUCKET in existing:
        return
    if region == "us-east-1":
        s3.create_bucket(Bucket=BUCKET)
    else:
        s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": region}
        )


def ensure_queue(sqs, name):
    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return sqs.create_queue(QueueName=name)["QueueUrl"]


def queue_arn(sqs, url):
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]


def wanted_notification(queue_arn_):
    return {
        "Id": NOTIFICATION_ID,
        "QueueArn": queue_arn_,
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": PREFIX}]}},
    }


def notification_matches(current, want):
    for qc in current.get("QueueConfigurations", []):
        rules = qc.get("Filter", {}).get("Key", {}).get("FilterRules", [])
        rules = {(r["Name"].lower(), r["Value"]) for r in rules}
        if (
            qc.get("QueueArn") == want["QueueArn"]
            and sorted(qc.get("Events", [])) == want["Events"]
            and rules == {("prefix", PREFIX)}
        ):
            return True
    return False


def drop_test_events(sqs, url):
    """S3 sends an s3:TestEvent when a notification is configured; remove it so the
    queue starts empty. Anything else received here is made visible again."""
    for _ in range(3):
        resp = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        msgs = resp.get("Messages", [])
        if not msgs:
            return
        for m in msgs:
            try:
                is_test = json.loads(m["Body"]).get("Event") == "s3:TestEvent"
            except (ValueError, AttributeError):
                is_test = False
            if is_test:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            else:
                sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                )


def freeze_key_restore(endpoint):
    """moto advances every object's restore state each time its status is
    read, and a multipart part (which has no bucket) then raises in
    /moto-api/data.json, the SES outbox tests read. Nothing of ours
    restores from Glacier, so keep that state still."""
    body = json.dumps(
        {"model_name": "s3::keyrestore",
         "transition": {"progression": "manual", "times": 2**31}}
    ).encode()
    req = urllib.request.Request(
        f"{endpoint}/moto-api/state-manager/set-transition", data=body, method="POST"
    )
    urllib.request.urlopen(req, timeout=10).read()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--region", default="us-east-1")
    args = ap.parse_args()

    s3, sqs = clients(args.endpoint, args.region)
    freeze_key_restore(args.endpoint)

    ensure_bucket(s3, args.region)

    dlq_url = ensure_queue(sqs, DLQ)
    dlq_arn = queue_arn(sqs, dlq_url)
    url = ensure_queue(sqs, QUEUE)
    arn = queue_arn(sqs, url)
    bucket_arn = f"arn:aws:s3:::{BUCKET}"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowS3ObjectCreated",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": bucket_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(
        QueueUrl=url,
        Attributes={
            "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
            ),
            "Policy": json.dumps(policy),
        },
    )

    want = wanted_notification(arn)
    current = s3.get_bucket_notification_configuration(Bucket=BUCKET)
    if not notification_matches(current, want):
        s3.put_bucket_notification_configuration(
            Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [want]}
        )
        drop_test_events(sqs, url)

    print(f"INGEST_QUEUE_URL={url}")
    print(f"INGEST_DLQ_URL={dlq_url}")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - one readable line for the shell script
        print(f"setup_aws.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
