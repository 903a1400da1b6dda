"""``experiture-ingest send`` and ``experiture-ingest replay-dlq``: the stream path's user commands.

    experiture-ingest send --queue-url URL --object contacts --operation upsert --match-key email records.jsonl
    cat records.jsonl | experiture-ingest send --queue-url URL --object events --operation append -
    experiture-ingest replay-dlq --dlq-url DLQ_URL --queue-url URL [--max 100]

AWS credentials and region come from the usual boto3 sources (``--endpoint-url`` for local stacks).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from experiture_ingest.streams.contract import Target
from experiture_ingest.streams.deadletters import replay
from experiture_ingest.streams.producer import ProducerError, send_records
from experiture_ingest.streams.sqs import SqsSendError


def add_command(subparsers: Any) -> None:
    send = subparsers.add_parser(
        "send",
        help="send records from a JSONL file (or stdin) to the record queue",
        description="Send one JSON record a line to an SQS queue in the message contract (docs/streams.md).",
    )
    send.add_argument("file", help="JSONL file of records, or - for stdin")
    send.add_argument("--queue-url", required=True, help="the record queue (stack output RecordQueueUrl)")
    send.add_argument("--object", required=True, help="target object, e.g. contacts")
    send.add_argument("--operation", required=True, choices=["append", "upsert"])
    send.add_argument("--match-key", default=None, help="upsert only: the field to merge on")
    send.add_argument("--group-id", default=None, help="FIFO queues: the message group id")
    send.add_argument("--endpoint-url", default=None, help="SQS endpoint (local stacks)")
    send.set_defaults(run=_send)

    again = subparsers.add_parser(
        "replay-dlq",
        help="move dead-lettered records back to the record queue after a fix",
        description="Move messages from the DLQ to the record queue, dropping their reason attributes.",
    )
    again.add_argument("--dlq-url", required=True, help="stack output RecordDeadLetterQueueUrl")
    again.add_argument("--queue-url", required=True, help="stack output RecordQueueUrl")
    again.add_argument("--max", type=int, default=None, help="move at most this many messages")
    again.add_argument("--endpoint-url", default=None, help="SQS endpoint (local stacks)")
    again.set_defaults(run=_replay)


def _lines(stream: IO[str]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ProducerError(f"line {number}: not JSON ({exc.args[0] if exc.args else exc})") from None
        yield record


def _send(args: argparse.Namespace) -> int:
    try:
        target = Target.model_validate(
            {"object": args.object, "operation": args.operation, "match_key": args.match_key}
        )
    except ValidationError as exc:
        print(f"error: {exc.errors(include_url=False)[0]['msg']}", file=sys.stderr)
        return 2
    sqs = boto3.client("sqs", endpoint_url=args.endpoint_url)
    try:
        if args.file == "-":
            sent = send_records(sqs, args.queue_url, target, _lines(sys.stdin), group_id=args.group_id)
        else:
            with open(args.file, encoding="utf-8") as handle:
                sent = send_records(sqs, args.queue_url, target, _lines(handle), group_id=args.group_id)
    except (OSError, ProducerError, SqsSendError, ClientError, BotoCoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"sent {sent} message(s) to {args.queue_url} for {target}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    sqs = boto3.client("sqs", endpoint_url=args.endpoint_url)
    try:
        s3 = boto3.client("s3", endpoint_url=args.endpoint_url)
        result = replay(sqs, args.dlq_url, args.queue_url, limit=args.max, s3=s3)
    except (SqsSendError, ClientError, BotoCoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"moved {result.moved} message(s) back to {args.queue_url}; about {result.remaining_hint} left in the DLQ"
    )
    return 0
