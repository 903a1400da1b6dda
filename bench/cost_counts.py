"""Billable units of the whole stack, counted on the local stack: the inputs of docs/operations.md's
cost table.

Runs :class:`cli.local_stack.LocalStack` (moto, the real handlers and state machine, a sandbox at
``instant`` speed) and counts, for ``--files`` dropped files and ``--records`` records sent with
``experiture-ingest send``'s packing:

- every AWS API call the stack makes, by service and operation (a patch on botocore's
  ``_make_api_call``), and the bytes put to S3 -- the commands' own calls (the drops, the sends) are
  counted apart, as users' calls, not the stack's;
- Lambda invocations by function and their in-process wall time (an estimate of billed duration:
  the sandbox answers at once, so real API latency adds to it);
- Step Functions state transitions (``*StateEntered`` events in each execution's history).

Then prints them per 1,000 files and per million records. Everything else in the table (prices,
settle checks for a slower API, log bytes) is an assumption written next to it.

    python -m bench.cost_counts [--files 20] [--records 20000] [--rows 100]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import io
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import botocore.client

Counter = collections.Counter
# Calls only the local harness makes (finding new objects, waiting for executions, queue depths);
# Lambda's pollers' ReceiveMessage/DeleteMessageBatch are counted: SQS bills them to the account.
HARNESS_CALLS = {"s3:ListObjectVersions", "stepfunctions:ListExecutions", "sqs:GetQueueAttributes"}


class CountingStream(io.TextIOBase):
    """Stands in for stdout: counts the bytes of the log lines (JSON logs and EMF metrics) written."""

    def __init__(self) -> None:
        self.log_bytes = 0
        self.metric_bytes = 0

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if '"_aws"' in line:
                self.metric_bytes += len(line.encode()) + 1
            elif line.startswith("{"):
                self.log_bytes += len(line.encode()) + 1
        return len(text)


@contextmanager
def counting_aws_calls(calls: Counter[str], put_bytes: list[int]) -> Iterator[None]:
    original = botocore.client.BaseClient._make_api_call

    def counted(self: Any, operation: str, params: dict[str, Any]) -> Any:
        calls[f"{self.meta.service_model.service_name}:{operation}"] += 1
        body = params.get("Body")
        if operation in ("PutObject", "UploadPart") and isinstance(body, bytes | bytearray):
            put_bytes.append(len(body))
        return original(self, operation, params)

    with mock.patch.object(botocore.client.BaseClient, "_make_api_call", counted):
        yield


@contextmanager
def timing_handlers(stack: Any, durations: dict[str, list[float]]) -> Iterator[None]:
    """Wall time of every handler call: the intake and writer/settler directly, the tasks via routes."""
    import functions.batch_settler.app as settler_app
    import functions.record_writer.app as writer_app

    def timed(name: str, handler: Any) -> Any:
        def run(event: Any, context: Any) -> Any:
            started = time.perf_counter()
            try:
                return handler(event, context)
            finally:
                durations[name].append(time.perf_counter() - started)

        return run

    aws = stack.aws
    aws.functions = {name: timed(name, fn) for name, fn in aws.functions.items()}
    for arn, (name, fn) in list(aws.routes.items()):
        aws.routes[arn] = (name, timed(name, fn))
    with (
        mock.patch.object(writer_app, "handler", timed("RecordWriterFunction", writer_app.handler)),
        mock.patch.object(settler_app, "handler", timed("BatchSettlerFunction", settler_app.handler)),
    ):
        yield


def transitions(stack: Any) -> int:
    total = 0
    for execution in stack.aws.executions():
        total += sum(
            1 for e in stack.aws.history(execution["executionArn"]) if e["type"].endswith("StateEntered")
        )
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rows", type=int, default=100, help="rows per file")
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument(
        "--per-message",
        type=int,
        default=None,
        help="records per message (default: as many as fit, as `send` does)",
    )
    args = parser.parse_args(argv)

    from cli.local_stack import LocalStack
    from experiture_ingest.streams.contract import Target
    from experiture_ingest.streams.producer import message_bodies, send_records
    from experiture_ingest.streams.sqs import send_entries
    from sandbox.testing import running_sandbox

    calls: Counter[str] = Counter()
    user_calls: Counter[str] = Counter()
    put_bytes: list[int] = []
    durations: dict[str, list[float]] = collections.defaultdict(list)
    with running_sandbox(speed="instant") as sb:
        env = {
            "EXPERITURE_API_URL": sb.base_url,
            "EXPERITURE_API_TOKEN": sb.token,
            "IMPORT_POLL_INITIAL_SECONDS": "1",
            "IMPORT_POLL_MAX_SECONDS": "1",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }
        sink = CountingStream()
        from experiture_ingest.observability import logger as powertools_logger

        log_handler = powertools_logger.registered_handler
        previous = log_handler.setStream(sink)  # type: ignore[attr-defined]  (a StreamHandler)
        with LocalStack(env) as stack, timing_handlers(stack, durations), contextlib.redirect_stdout(sink):
            # The users' side: drops and sends (counted apart)
            file_bytes = 0
            with counting_aws_calls(user_calls, []):
                for n in range(args.files):
                    out = io.StringIO()
                    writer = csv.writer(out, lineterminator="\n")
                    writer.writerow(["email", "first_name"])
                    writer.writerows([f"f{n}-{i}@example.com", "Ann"] for i in range(args.rows))
                    body = out.getvalue().encode()
                    file_bytes += len(body)
                    stack.s3.put_object(Bucket=stack.bucket, Key=f"incoming/contacts/cost/{n}.csv", Body=body)
                records = ({"email": f"r{i}@example.com", "first_name": "Rae"} for i in range(args.records))
                target = Target(object="contacts", operation="upsert", match_key="email")
                if args.per_message:
                    messages = 0
                    bodies = list(message_bodies(target, records, max_records=args.per_message))
                    for start in range(0, len(bodies), 10):
                        entries = [
                            {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])
                        ]
                        messages += send_entries(stack.sqs, stack.outputs["RecordQueueUrl"], entries)  # type: ignore[arg-type]
                else:
                    messages = send_records(stack.sqs, stack.outputs["RecordQueueUrl"], target, records)
            # The stack's side
            with counting_aws_calls(calls, put_bytes):
                stack.advance()
                deadline = time.monotonic() + 300
                while [e for e in stack.aws.executions() if e["status"] == "RUNNING"] and (
                    time.monotonic() < deadline
                ):
                    time.sleep(0.2)
            states = transitions(stack)
            executions = len(stack.aws.executions())
            stored = len(sb.admin.records("contacts"))
        log_handler.setStream(previous)  # type: ignore[attr-defined]

    invocations = {name: len(values) for name, values in durations.items()}
    seconds = {name: sum(values) for name, values in durations.items()}
    file_fns = [n for n in invocations if n not in ("RecordWriterFunction", "BatchSettlerFunction")]
    stream_fns = ["RecordWriterFunction", "BatchSettlerFunction"]
    report = {
        "inputs": {
            "files": args.files,
            "rowsPerFile": args.rows,
            "fileBytes": file_bytes,
            "records": args.records,
            "messages": messages,
            "rowsStored": stored,
        },
        "perFile": {
            "lambdaInvocations": {n: invocations[n] / max(args.files, 1) for n in file_fns},
            "lambdaSeconds": {n: round(seconds[n] / max(args.files, 1), 4) for n in file_fns},
            "stateTransitions": states / max(args.files, 1),
            "executions": executions / max(args.files, 1),
        },
        "perMillionRecords": {
            "lambdaInvocations": {n: invocations.get(n, 0) * 1e6 / max(args.records, 1) for n in stream_fns},
            "lambdaSeconds": {
                n: round(seconds.get(n, 0) * 1e6 / max(args.records, 1), 1) for n in stream_fns
            },
            "messages": messages * 1e6 / max(args.records, 1),
        },
        "awsCalls": {k: v for k, v in sorted(calls.items()) if k not in HARNESS_CALLS},
        "userCalls": dict(sorted(user_calls.items())),
        "bytesPutToS3": sum(put_bytes),
        "logBytes": sink.log_bytes,
        "metricLogBytes": sink.metric_bytes,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
