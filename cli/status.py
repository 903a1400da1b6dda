"""``experiture-ingest status``: which files hold a start slot, which wait, for how long.

Reads the import queue's table (see :mod:`experiture_ingest.scheduling.table`) through boto3:

    experiture-ingest status --stack my-ingest                 # a deployed stack (CloudFormation)
    experiture-ingest status --table experiture-ingest-import-queue --endpoint-url http://127.0.0.1:5000

With ``--stack``, the table is the stack's output ``ImportQueueTableName`` (or its resource
``ImportQueueTable``). Running files are listed first, then waiting ones in the order they will start.

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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import boto3

from experiture_ingest.scheduling import QueueEntry, QueueTable, arrival_order

LOCAL_TABLE = "experiture-ingest-import-queue"


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
    lines.append(f"{running} running, {len(rows) - running} waiting")
    return lines


def table_of_stack(stack: str, cloudformation: Any) -> str:
    """The queue table's name: the stack's output ImportQueueTableName, else its resource."""
    described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    for output in described.get("Outputs") or []:
        if output.get("OutputKey") == "ImportQueueTableName":
            return str(output["OutputValue"])
    resource = cloudformation.describe_stack_resource(StackName=stack, LogicalResourceId="ImportQueueTable")
    return str(resource["StackResourceDetail"]["PhysicalResourceId"])


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
    status.set_defaults(run=_status)


def _status(args: argparse.Namespace) -> int:
    session = boto3.session.Session(region_name=args.region)
    if args.stack:
        table = table_of_stack(args.stack, session.client("cloudformation"))
    else:
        table = args.table or LOCAL_TABLE
    dynamodb = session.client("dynamodb", endpoint_url=args.endpoint_url)
    rows = status_rows(QueueTable(dynamodb, table).entries(), datetime.now(UTC))
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)))
    else:
        print(f"import queue {table}")
        print("\n".join(render(rows)))
    return 0
