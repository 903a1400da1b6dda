"""``experiture-ingest status``: which files hold a start slot, which wait, for how long.

Reads the import queue's table (see :mod:`experiture_ingest.scheduling.table`) through boto3:

    experiture-ingest status --stack my-ingest                 # a deployed stack (CloudFormation)
    experiture-ingest status --table experiture-ingest-import-queue --endpoint-url http://127.0.0.1:5000

With ``--stack``, the table is the stack's output ``ImportQueueTableName`` (or its resource
``ImportQueueTable``). Running files are listed first, then waiting ones in the order they will start;
a split file whose parts are being imported shows as ``holding`` (its object's turn, from hand-off to
the end of its flow: later files of the object wait behind it, its parts go at its place).
Then the depth of each dead-letter queue of the stack (intake failure queue, record DLQ, settle DLQ) and
the latest outcomes: the newest summaries under ``results/`` (at most ``--outcomes``, read from at most
``MAX_RESULT_PAGES`` listing pages, so a bucket with millions of results answers quickly). With
``--stack`` the queues and bucket come from the stack's outputs (else its resources); for a local stack
name them with ``--bucket``, ``--intake-dlq-url``, ``--record-dlq-url`` and ``--settle-dlq-url``.

>>> from datetime import UTC, datetime
>>> from experiture_ingest.scheduling import QueueEntry
>>> t = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
>>> waiting = QueueEntry("imp_2", "contacts", "object:contacts", "b", "incoming/contacts/b.csv", t, "02", t,
...     "waiting")
>>> print("\\n".join(render(status_rows([waiting], datetime(2026, 1, 1, 12, 5, tzinfo=UTC)))))
STATUS   OBJECT    WAITED  RUNNING  TRIES  FILE                     JOB
waiting  contacts  5m00s   -        0      incoming/contacts/b.csv  imp_2
0 running, 1 waiting
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import ClientError

from experiture_ingest.files.layout import RESULTS_PREFIX
from experiture_ingest.scheduling import QueueEntry, QueueTable, arrival_order

LOCAL_TABLE = "experiture-ingest-import-queue"
MAX_RESULT_PAGES = 10  # 10,000 summaries listed at most: ``status`` stays quick on any bucket
# {label: (stack output, logical resource)}: where the dead letters of the stack wait
DEAD_LETTER_QUEUES = {
    "intake failure queue": ("IntakeDeadLetterQueueUrl", "IntakeDeadLetterQueue"),
    "record DLQ": ("RecordDeadLetterQueueUrl", "RecordDeadLetterQueue"),
    "settle DLQ": ("SettleDeadLetterQueueUrl", "SettleDeadLetterQueue"),
}
BUCKET_OUTPUT = ("IngestBucketName", "IngestBucket")
LOCAL_QUEUE_FLAGS = {  # --flag: the output it stands for, when there is no stack to ask
    "intake-dlq-url": "IntakeDeadLetterQueueUrl",
    "record-dlq-url": "RecordDeadLetterQueueUrl",
    "settle-dlq-url": "SettleDeadLetterQueueUrl",
}


@dataclass(frozen=True)
class StatusRow:
    status: str
    object_name: str
    key: str
    job_id: str
    waited_seconds: float
    running_seconds: float | None
    start_attempts: int


def status_rows(entries: Sequence[QueueEntry], now: datetime) -> list[StatusRow]:
    """Running files (longest running first), then waiting files in the order they will start."""
    running = sorted((e for e in entries if e.status == "running"), key=lambda e: e.granted_at or now)
    by_id = {e.job_id: e for e in entries}
    waiting = [
        by_id[p.job_id] for p in arrival_order(e.policy_entry() for e in entries if e.status != "running")
    ]
    rows = []
    for entry in [*running, *waiting]:
        granted = entry.granted_at if entry.status == "running" else None
        rows.append(
            StatusRow(
                status=entry.status,
                object_name=entry.object_name,
                key=entry.key,
                job_id=entry.job_id,
                waited_seconds=round(((granted or now) - entry.queued_at).total_seconds(), 1),
                running_seconds=round((now - granted).total_seconds(), 1) if granted else None,
                start_attempts=entry.start_attempts,
            )
        )
    return rows


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def render(rows: Sequence[StatusRow]) -> list[str]:
    """The rows as an aligned table, with a count line."""
    table = [["STATUS", "OBJECT", "WAITED", "RUNNING", "TRIES", "FILE", "JOB"]]
    table += [
        [
            r.status,
            r.object_name,
            _duration(r.waited_seconds),
            _duration(r.running_seconds),
            str(r.start_attempts),
            r.key,
            r.job_id,
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    running = sum(r.status == "running" for r in rows)
    holding = sum(r.status == "holding" for r in rows)
    count = f"{running} running, {len(rows) - running - holding} waiting"
    lines.append(count + (f", {holding} split file(s) holding their object's turn" if holding else ""))
    return lines


def table_of_stack(stack: str, cloudformation: Any) -> str:
    """The queue table's name: the stack's output ImportQueueTableName, else its resource."""
    described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    for output in described.get("Outputs") or []:
        if output.get("OutputKey") == "ImportQueueTableName":
            return str(output["OutputValue"])
    resource = cloudformation.describe_stack_resource(StackName=stack, LogicalResourceId="ImportQueueTable")
    return str(resource["StackResourceDetail"]["PhysicalResourceId"])


@dataclass(frozen=True)
class Outcome:
    """One file's latest summary: its source key, outcome and when the summary was written."""

    key: str
    outcome: str
    at: datetime


def dead_letter_depths(sqs: Any, queues: Mapping[str, str]) -> dict[str, int]:
    """{label: messages waiting (ApproximateNumberOfMessages)} of each queue URL."""
    depths = {}
    for label, url in queues.items():
        answer = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        depths[label] = int(answer["Attributes"]["ApproximateNumberOfMessages"])
    return depths


def _is_summary(key: str) -> bool:
    """A key's summary (``results/<key>.json``); an older version's (``.versions/``) is not its latest."""
    return key.endswith(".json") and ".versions/" not in key


def latest_outcomes(
    s3: Any, bucket: str, limit: int, max_pages: int = MAX_RESULT_PAGES, page_size: int = 1000
) -> list[Outcome]:
    """The newest ``limit`` summaries (``results/**.json``) among the first ``max_pages`` listed pages."""
    listed: list[dict[str, Any]] = []
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket,
        Prefix=RESULTS_PREFIX,
        PaginationConfig={"MaxItems": max_pages * page_size, "PageSize": page_size},
    )
    for page in pages:
        listed += [o for o in page.get("Contents", []) if _is_summary(o["Key"])]
    newest = sorted(listed, key=lambda o: o["LastModified"], reverse=True)[:limit]
    outcomes = []
    for listed_object in newest:
        body = json.loads(s3.get_object(Bucket=bucket, Key=listed_object["Key"])["Body"].read())
        named = listed_object["Key"][len(RESULTS_PREFIX) : -len(".json")]
        source = (body.get("source") or {}).get("key") or named
        outcomes.append(Outcome(str(source), str(body.get("outcome", "?")), listed_object["LastModified"]))
    return outcomes


def stack_health(
    outputs: Mapping[str, str], sqs: Any, s3: Any, limit: int
) -> tuple[dict[str, int], list[Outcome]]:
    """The dead-letter depths and latest outcomes of a stack known by its output names (the queues and
    bucket it lacks are left out)."""
    queues = {label: outputs[out] for label, (out, _) in DEAD_LETTER_QUEUES.items() if outputs.get(out)}
    bucket = outputs.get(BUCKET_OUTPUT[0])
    outcomes = latest_outcomes(s3, bucket, limit) if bucket and limit > 0 else []
    return dead_letter_depths(sqs, queues), outcomes


def render_health(depths: Mapping[str, int], outcomes: Sequence[Outcome]) -> list[str]:
    """Dead-letter depths, then the latest outcomes, newest first."""
    lines = ["dead letters: " + (", ".join(f"{label} {n}" for label, n in depths.items()) or "-")]
    lines.append(f"latest outcomes ({len(outcomes)}):")
    table = [["WHEN", "OUTCOME", "FILE"]]
    table += [[o.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ"), o.outcome, o.key] for o in outcomes]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table]
    return lines


def stack_locations(stack: str, cloudformation: Any) -> dict[str, str]:
    """{output name: value} for the queue table, the bucket and the dead-letter queues of ``stack``:
    its outputs, else the physical ids of its resources (a queue's is its URL)."""
    described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    outputs = {o["OutputKey"]: str(o["OutputValue"]) for o in described.get("Outputs") or []}
    wanted = [("ImportQueueTableName", "ImportQueueTable"), BUCKET_OUTPUT, *DEAD_LETTER_QUEUES.values()]
    for output, logical in wanted:
        if output not in outputs:
            try:
                found = cloudformation.describe_stack_resource(StackName=stack, LogicalResourceId=logical)
            except ClientError:
                continue  # an older stack without this resource: shown as missing, not a failure
            outputs[output] = str(found["StackResourceDetail"]["PhysicalResourceId"])
    return outputs


def add_command(subparsers: Any) -> None:
    status = subparsers.add_parser(
        "status",
        help="list the files holding an import slot and those waiting, with their wait",
        description="Read the import queue of a deployed stack (--stack) or a table (--table, local stacks).",
    )
    where = status.add_mutually_exclusive_group()
    where.add_argument(
        "--stack", help="a deployed stack's name (its queue table is found through CloudFormation)"
    )
    where.add_argument("--table", help=f"the queue table's name (default for local stacks: {LOCAL_TABLE})")
    status.add_argument("--region", default=None, help="AWS region (default: your AWS configuration)")
    status.add_argument(
        "--endpoint-url", default=None, help="DynamoDB endpoint (local stacks, e.g. moto server)"
    )
    status.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    status.add_argument(
        "--outcomes", type=int, default=10, help="how many of the latest summaries to show (default 10)"
    )
    status.add_argument("--bucket", help="the ingest bucket (local stacks; --stack finds it)")
    for flag, output in LOCAL_QUEUE_FLAGS.items():
        status.add_argument(f"--{flag}", dest=output, help=f"{output} (local stacks; --stack finds it)")
    status.set_defaults(run=_status)


def _status(args: argparse.Namespace) -> int:
    session = boto3.session.Session(region_name=args.region)
    if args.stack:
        outputs = stack_locations(args.stack, session.client("cloudformation"))
        table = outputs.get("ImportQueueTableName") or table_of_stack(
            args.stack, session.client("cloudformation")
        )
    else:
        table = args.table or LOCAL_TABLE
        named = {output: getattr(args, output) for output in LOCAL_QUEUE_FLAGS.values()}
        outputs = {BUCKET_OUTPUT[0]: args.bucket or "", **{k: v for k, v in named.items() if v}}
    dynamodb = session.client("dynamodb", endpoint_url=args.endpoint_url)
    rows = status_rows(QueueTable(dynamodb, table).entries(), datetime.now(UTC))
    depths, outcomes = stack_health(
        outputs,
        session.client("sqs", endpoint_url=args.endpoint_url),
        session.client("s3", endpoint_url=args.endpoint_url),
        args.outcomes,
    )
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)))
        print(json.dumps({"deadLetters": depths}))
        for outcome in outcomes:
            print(json.dumps({"key": outcome.key, "outcome": outcome.outcome, "at": outcome.at.isoformat()}))
    else:
        print(f"import queue {table}")
        print("\n".join(render(rows)))
        print("\n".join(render_health(depths, outcomes)))
    return 0
