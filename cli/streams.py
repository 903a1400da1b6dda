"""``experiture-ingest send`` and ``experiture-ingest replay-dlq``: the stream path's user commands.

    experiture-ingest send --queue-url URL --object contacts --operation upsert --match-key email records.jsonl
    cat records.jsonl | experiture-ingest send --queue-url URL --object events --operation append -
    experiture-ingest replay-dlq --dlq-url DLQ_URL --queue-url URL [--max 100]

``send`` reads the whole file first and sends nothing unless every line is a record the writer
would take (the per-record limits of docs/streams.md). Every error is one line on stderr:

- exit 2: bad arguments (target, queue URL, --start-line);
- exit 3: the file cannot be sent as it is (unreadable, not UTF-8, a bad line); nothing was queued;
- exit 1: sending stopped partway; the message says how many records were queued and the
  ``--start-line`` that sends the rest without queuing any record twice.

AWS credentials and region come from the usual boto3 sources (``--endpoint-url`` for local stacks).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import IO, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from experiture_ingest.streams.contract import RECORD_MAX_DEPTH, RecordError, Target, encode_record
from experiture_ingest.streams.deadletters import replay
from experiture_ingest.streams.producer import PartlySentError, ProducerError, send_records
from experiture_ingest.streams.sqs import SqsSendError

EXIT_SEND_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_FILE = 3


class BadLine(Exception):
    """A line that cannot be sent; the message names it."""


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
    send.add_argument(
        "--start-line", type=int, default=1, help="send from this line on (to resume after a partial send)"
    )
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


def _records(stream: IO[bytes], start: int = 1) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for every non-blank line from ``start``; BadLine for the first bad one."""
    for number, raw in enumerate(stream, start=1):
        if number < start or not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadLine(
                f"line {number} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            ) from None
        try:
            record = json.loads(line)
        except RecursionError:
            raise BadLine(
                f"line {number}: values nest deeper than {RECORD_MAX_DEPTH} levels (STREAM.TOO_DEEP)"
            ) from None
        except ValueError as exc:
            raise BadLine(f"line {number}: not JSON ({exc.args[0] if exc.args else exc})") from None
        try:
            encode_record(record)
        except RecordError as exc:
            raise BadLine(f"line {number}: {exc.message} ({exc.code})") from None
        yield number, record


def _send(args: argparse.Namespace) -> int:
    try:
        return _send_file(args)
    except Exception as exc:  # never a traceback: one line, and what was done
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_SEND_FAILED


def _send_file(args: argparse.Namespace) -> int:
    try:
        target = Target.model_validate(
            {"object": args.object, "operation": args.operation, "match_key": args.match_key}
        )
    except ValidationError as exc:
        print(f"error: {exc.errors(include_url=False)[0]['msg']}", file=sys.stderr)
        return EXIT_USAGE
    if args.start_line < 1:
        print("error: --start-line counts from 1", file=sys.stderr)
        return EXIT_USAGE
    with tempfile.TemporaryFile() as spool:
        try:
            opened = _open(args.file, spool)
        except OSError as exc:
            print(f"error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_BAD_FILE
        with opened as source:
            # First the whole file: nothing is queued unless every line can be.
            try:
                total = sum(1 for _ in _records(source, args.start_line))
            except BadLine as exc:
                print(f"error: {exc}; nothing was sent", file=sys.stderr)
                return EXIT_BAD_FILE
            except OSError as exc:
                print(f"error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
                return EXIT_BAD_FILE
            source.seek(0)
            lines: list[int] = []
            queued = [0]

            def numbered() -> Iterator[dict[str, Any]]:
                for number, record in _records(source, args.start_line):
                    lines.append(number)
                    yield record

            sqs = boto3.client("sqs", endpoint_url=args.endpoint_url)
            try:
                sent = send_records(
                    sqs,
                    args.queue_url,
                    target,
                    numbered(),
                    group_id=args.group_id,
                    on_queued=lambda n: queued.__setitem__(0, queued[0] + n),
                )
            except (ProducerError, SqsSendError, ClientError, BotoCoreError) as exc:
                print(_partial(exc, queued[0], lines, args.start_line), file=sys.stderr)
                return EXIT_SEND_FAILED
    print(f"sent {total} record(s) in {sent} message(s) to {args.queue_url} for {target}")
    return 0


def _open(name: str, spool: IO[bytes]) -> AbstractContextManager[IO[bytes]]:
    """The file, or stdin copied to ``spool`` (it is read twice: checked, then sent)."""
    if name != "-":
        return open(name, "rb")
    shutil.copyfileobj(sys.stdin.buffer, spool)
    spool.seek(0)
    return nullcontext(spool)  # the spool's own context closes it


def _partial(exc: Exception, queued: int, lines: list[int], start: int) -> str:
    reason = " ".join(str(exc).split())
    if not queued:
        return f"error: {reason}; nothing was queued"
    last = lines[queued - 1]
    text = (
        f"error: {reason}; {queued} record(s) were queued (lines {start} to {last}); "
        f"re-run with --start-line {last + 1} to send the rest"
    )
    if isinstance(exc, PartlySentError) and exc.out_of_order:
        text += f" (SQS also took {exc.out_of_order} later record(s) of the failing call: they would be queued twice)"
    return text


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
