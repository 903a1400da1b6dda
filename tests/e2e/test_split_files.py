"""Files over the part size, end to end: intake -> the real state machine's split branch (plan,
Distributed Map of upload workers, part imports one after the other as child runs) -> one summary.

The part size is lowered to its minimum (1 MiB) so a few-MiB file splits into several parts.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from cli.local_aws import LocalAws, execution_status_event
from experiture_ingest.files.layout import errors_key, part_result_key, plan_key, result_key
from experiture_ingest.files.summary import Summary
from sandbox.testing import SandboxHandle, peak_running, start_order
from tests.e2e.conftest import FAST_POLL_ENV, local_stack

BUCKET = "ingest-split"
MIB = 1024 * 1024


@pytest.fixture
def aws(sandbox: SandboxHandle) -> Iterator[LocalAws]:
    with _local(sandbox) as local:
        yield local


@contextmanager
def _local(sandbox: SandboxHandle, schedule_seconds: float | None = 1.0) -> Iterator[LocalAws]:
    """A local stack splitting at 1 MiB; without ``schedule_seconds``, no scheduled sweep/dispatch."""
    env = {"INTAKE_PART_MAX_BYTES": str(MIB), "INTAKE_PART_WORKERS": "3", **FAST_POLL_ENV}
    with local_stack(sandbox, BUCKET, env, schedule_seconds=schedule_seconds) as local:
        yield local


def _contacts_csv(rows: int, bad_every: int, seed: int = 11) -> tuple[bytes, set[int], list[str]]:
    """A CSV with quoted multi-line fields and scattered bad emails: (bytes, bad row numbers, good emails)."""
    rng = random.Random(seed)
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["email", "first_name", "city"])
    bad: set[int] = set()
    good: list[str] = []
    for n in range(1, rows + 1):
        if n % bad_every == 0 or rng.random() < 0.002:
            email = f"not-an-email-{n}"
            bad.add(n)
        else:
            email = f"user{n}@example.com"
            good.append(email)
        city = rng.choice(["Paris", 'Saint-"Denis"', "Oslo\nNorway", "Lima, Peru", "x" * 300])
        writer.writerow([email, f"Name {n}", city])
    return out.getvalue().encode(), bad, good


def _direct_parse_bad_rows(data: bytes) -> set[int]:
    reader = csv.DictReader(io.StringIO(data.decode(), newline=""))
    return {n for n, row in enumerate(reader, start=1) if "@" not in row["email"]}


def _summary(aws: LocalAws, key: str) -> dict[str, Any]:
    return json.loads(aws.s3.get_object(Bucket=BUCKET, Key=result_key(key))["Body"].read())


def _errors(aws: LocalAws, key: str) -> list[dict[str, Any]]:
    raw = aws.s3.get_object(Bucket=BUCKET, Key=errors_key(key))["Body"].read()
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def _run(aws: LocalAws, key: str, body: bytes, timeout: float = 180.0) -> dict[str, Any]:
    answer = aws.drop(BUCKET, key, body)
    assert answer["files"][0]["outcome"] == "splitting", answer
    done = aws.wait(_summary(aws, key)["executionArn"], timeout)
    summary = _summary(aws, key)
    summary["_status"] = done.status
    return summary


def test_a_csv_over_the_part_size_lands_every_good_row_once_and_reports_bad_rows_by_original_number(
    aws: LocalAws, sandbox: SandboxHandle
) -> None:
    # Given a ~3.5 MiB CSV (multi-line quoted fields, scattered bad rows) and parts of 1 MiB
    data, bad, good = _contacts_csv(40_000, bad_every=397)
    assert _direct_parse_bad_rows(data) == bad
    key = "incoming/contacts/big.csv"
    # When it is dropped
    summary = _run(aws, key, data)
    # Then it was cut into parts, each its own job, each starting with the header
    assert summary["_status"] == "SUCCEEDED", summary
    assert summary["outcome"] == "completed_with_errors"
    parts = summary["parts"]
    assert len(parts) == summary["split"]["parts"] >= 4
    assert [p["index"] for p in parts] == list(range(1, len(parts) + 1))
    assert all(p["outcome"] == "completed_with_errors" or p["outcome"] == "completed" for p in parts)
    for part in parts:
        uploaded = sandbox.admin.upload_bytes(part["jobId"])
        assert uploaded.startswith(b"email,first_name,city\r\n") and uploaded.endswith(b"\r\n")
        assert len(uploaded) == part["bytes"] <= MIB
    assert sum(p["rows"] for p in parts) == 40_000
    # And every good row landed exactly once
    emails = [r["email"] for r in sandbox.admin.records("contacts")]
    assert sorted(emails) == sorted(good) and len(set(emails)) == len(emails)
    # And the errors file lists exactly the bad rows, numbered as in the original file
    errors = _errors(aws, key)
    assert sorted(e["rowNumber"] for e in errors) == sorted(bad)
    assert all(e["sourceRow"]["email"] == f"not-an-email-{e['rowNumber']}" for e in errors)
    assert summary["metrics"]["rowsRejected"] == len(bad) and summary["metrics"]["readRows"] == 40_000
    # And the parts imported one after the other, in order, each through the import queue (its run
    # waited for a start slot in Enqueue and gave it back), and no slot is left held
    jobs = {j["jobId"]: j for j in sandbox.admin.import_jobs()}
    started = [jobs[p["jobId"]]["startedAt"] for p in parts]
    assert started == sorted(started)
    children = [e for e in aws.executions() if "-p0" in e["name"]]
    assert len(children) == len(parts)
    for child in children:
        entered = [
            e["stateEnteredEventDetails"]["name"]
            for e in aws.history(child["executionArn"])
            if e["type"].endswith("StateEntered")
        ]
        assert "Enqueue" in entered and "ReleaseAfterImport" in entered, entered
    assert aws.queue() == []
    # And the plan is there for the user to read
    plan = json.loads(aws.s3.get_object(Bucket=BUCKET, Key=plan_key(key))["Body"].read())
    assert len(plan["parts"]) == len(parts)


def test_a_jsonl_file_over_the_part_size_is_cut_on_lines(aws: LocalAws, sandbox: SandboxHandle) -> None:
    # Given ~2.5 MiB of JSONL with some rows whose email is invalid
    lines, bad = [], set()
    for n in range(1, 20_001):
        email = f"j{n}@example.com" if n % 501 else f"bad-{n}"
        if "@" not in email:
            bad.add(n)
        lines.append(json.dumps({"email": email, "first_name": f"N{n}", "city": "Oslo " * (n % 20)}))
    data = ("\n".join(lines) + "\n").encode()
    key = "incoming/contacts/big.jsonl"
    # When it is dropped with 1 MiB parts
    summary = _run(aws, key, data)
    # Then every part ends on a line, every good row landed once, the bad rows keep their numbers
    assert summary["_status"] == "SUCCEEDED", summary
    assert len(summary["parts"]) >= 3
    for part in summary["parts"]:
        uploaded = sandbox.admin.upload_bytes(part["jobId"])
        assert uploaded.endswith(b"\n") and all(json.loads(x) for x in uploaded.splitlines())
    emails = [r["email"] for r in sandbox.admin.records("contacts")]
    assert len(emails) == len(set(emails)) == 20_000 - len(bad)
    assert sorted(e["rowNumber"] for e in _errors(aws, key)) == sorted(bad)
    # And the file's summary and each part's own are the documented model, naming their executions
    split_run = next(e for e in aws.executions() if "-p0" not in e["name"])
    file_summary = Summary.model_validate({k: v for k, v in summary.items() if k != "_status"})
    assert file_summary.execution_arn == split_run["executionArn"] and file_summary.timings is not None
    assert file_summary.timings.upload_attempts == len(summary["parts"])
    children = {e["executionArn"] for e in aws.executions() if "-p0" in e["name"]}
    part_summaries = [
        Summary.model_validate_json(
            aws.s3.get_object(Bucket=BUCKET, Key=part_result_key(key, p["index"]))["Body"].read()
        )
        for p in summary["parts"]
    ]
    assert {s.execution_arn for s in part_summaries} == children
    assert all(s.part is not None and s.options is not None for s in part_summaries)


def test_a_parquet_file_over_the_part_size_is_cut_into_valid_parquet_parts(
    aws: LocalAws, sandbox: SandboxHandle
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Given ~3 MiB of Parquet in many row groups, some rows with an invalid email
    rng = random.Random(5)
    n_rows = 30_000
    emails = [f"p{n}@example.com" if n % 703 else f"bad-{n}" for n in range(1, n_rows + 1)]
    bad = {n for n in range(1, n_rows + 1) if n % 703 == 0}
    noise = ["".join(rng.choice("abcdefghij") for _ in range(80)) for _ in range(n_rows)]
    table = pa.table({"email": emails, "first_name": noise})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=2_000, compression="none")
    data = buf.getvalue()
    assert len(data) > 2 * MIB
    key = "incoming/contacts/big.parquet"
    # When it is dropped with 1 MiB parts
    summary = _run(aws, key, data)
    # Then every part is a Parquet file pyarrow reads, holding whole row groups, rows in order
    assert summary["_status"] == "SUCCEEDED", summary
    parts = summary["parts"]
    assert len(parts) >= 3
    read_back = []
    for part in parts:
        part_table = pq.read_table(io.BytesIO(sandbox.admin.upload_bytes(part["jobId"])))
        assert part_table.num_rows == part["rows"]
        read_back.append(part_table)
    assert pa.concat_tables(read_back).equals(table)
    # And every good row landed once; the errors file numbers rows as in the original file
    landed = [r["email"] for r in sandbox.admin.records("contacts")]
    assert sorted(landed) == sorted(e for e in emails if "@" in e)
    assert sorted(e["rowNumber"] for e in _errors(aws, key)) == sorted(bad)


def test_a_failed_part_makes_the_file_partially_failed_naming_its_rows_and_a_redrop_imports_nothing_twice(
    aws: LocalAws, sandbox: SandboxHandle
) -> None:
    # Given a CSV of several parts, and a workspace that fails the first import started (part 1)
    data, _, _ = _contacts_csv(30_000, bad_every=10**9)
    key = "incoming/contacts/half.csv"
    sandbox.admin.fail_next_jobs("import", times=1, error_message="CDP_ETL.IMPORT.PROCESSING_FAILED: boom")
    # When it is dropped
    summary = _run(aws, key, data)
    # Then the file is partially_failed, and names the rows of the part that did not land
    assert summary["_status"] == "FAILED"
    assert summary["outcome"] == "partially_failed"
    assert _leftovers(aws) == {}, "the file's turn and every part's slot were given back"
    first, *rest = summary["parts"]
    assert first["outcome"] == "failed"
    assert all(p["outcome"] in ("completed", "completed_with_errors") for p in rest)
    (failed,) = summary["failedRowRanges"]
    assert (failed["part"], failed["firstRowNumber"], failed["lastRowNumber"]) == (1, 1, first["rows"])
    assert failed["sourceBytes"]["start"] == 0 and failed["sourceBytes"]["end"] > 0
    assert f"rows 1-{first['rows']}" in summary["message"]
    landed = len(sandbox.admin.records("contacts"))
    assert landed == sum(p["rowsImported"] for p in rest) == summary["metrics"]["rowsImported"]
    assert sum(p["rows"] for p in rest) == 30_000 - first["rows"]
    jobs_before = len(sandbox.admin.import_jobs())

    # When the same version's event is delivered again, and the split flow is run again by hand
    put = aws.s3.head_object(Bucket=BUCKET, Key=key)
    from cli.local_aws import s3_event

    again = aws.invoke(
        "IntakeFunction", s3_event(BUCKET, key, len(data), put["ETag"].strip('"'), put.get("VersionId"))
    )
    handed = json.loads(
        aws.sfn.describe_execution(
            executionArn=next(e for e in aws.executions() if "-p0" not in e["name"])["executionArn"]
        )["input"]
    )
    rerun = aws.start(handed, name="rerun-of-the-split")
    aws.wait(rerun, 120)
    # Then nothing is imported twice: no new job, the same records
    assert again["files"][0]["outcome"] == "duplicate"
    assert len(sandbox.admin.import_jobs()) == jobs_before
    assert len(sandbox.admin.records("contacts")) == landed


def test_a_gzip_file_over_the_part_size_is_refused_with_its_size_and_the_fix(
    aws: LocalAws, sandbox: SandboxHandle
) -> None:
    # Given a gzip CSV larger than a 1 MiB part (it cannot be cut without inflating all of it)
    data, _, _ = _contacts_csv(40_000, bad_every=397)
    body = gzip.compress(data + os.urandom(MIB).hex().encode(), compresslevel=1)
    assert len(body) > MIB
    key = "incoming/contacts/big.csv.gz"
    # When it is dropped
    answer = aws.drop(BUCKET, key, body)
    # Then it is refused before any job or execution, naming its size, the part size and the fix
    assert answer["files"][0]["outcome"] == "refused"
    summary = _summary(aws, key)
    assert summary["reason"]["code"] == "GZIP_TOO_LARGE"
    assert (
        f"{len(body)} bytes" in summary["reason"]["message"]
        and f"{MIB} bytes" in summary["reason"]["message"]
    )
    assert "Split the data before compressing" in summary["reason"]["message"]
    assert sandbox.admin.import_jobs() == [] and aws.executions() == []


def _small_csv(header: list[str], rows: list[list[str]]) -> bytes:
    return ("\n".join(",".join(row) for row in [header, *rows]) + "\n").encode()


def _leftovers(aws: LocalAws) -> dict[str, list[str]]:
    """What the import queue's table still holds: entries (holders included), slots and object locks."""
    left: dict[str, list[str]] = {}
    for pk in ("queue", "slot", "lock"):
        items = aws.dynamodb.query(
            TableName=aws.queue_table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": pk}},
            ConsistentRead=True,
        )["Items"]
        if items:
            left[pk] = [item["sk"]["S"] for item in items]
    return left


def _wait_until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met after {timeout} s")
        time.sleep(0.1)
    return value


def _all_ended(aws: LocalAws, timeout: float = 120.0) -> dict[str, str]:
    """{execution name: status} once every execution (parts' runs included) has ended."""
    listed = _wait_until(
        lambda: (found := aws.executions()) and all(e["status"] != "RUNNING" for e in found) and found,
        timeout,
        "every execution ended",
    )
    return {e["name"]: e["status"] for e in listed}


def test_a_split_file_holds_its_objects_turn_so_a_later_file_of_the_object_starts_after_all_its_parts(
    aws: LocalAws, sandbox: SandboxHandle
) -> None:
    # Given a CSV of contacts over three 1 MiB parts, dropped first; jobs that take a moment
    sandbox.admin.configure(importJobSeconds=0.3)
    data, _, _ = _contacts_csv(30_000, bad_every=10**9)
    big = "incoming/contacts/big.csv"
    assert aws.drop(BUCKET, big, data)["files"][0]["outcome"] == "splitting"
    # Then from its hand-off it holds contacts' turn in the import queue (one entry, no slot)
    [holder] = [e for e in aws.queue() if e.status == "holding"]
    assert (holder.key, holder.group, holder.slot) == (big, "object:contacts", None)

    # When a small contacts file and an orders file are dropped after it (while its parts upload)
    later = "incoming/contacts/later.csv"
    orders = "incoming/orders/o1.csv"
    assert aws.drop(BUCKET, later, _small_csv(["email", "first_name"], [["late@example.com", "Late"]]))
    order = ["o-1", "a@example.com", "5", "2026-01-01T00:00:00Z", "new"]
    assert aws.drop(
        BUCKET, orders, _small_csv(["order_id", "email", "amount", "ordered_at", "status"], [order])
    )
    statuses = _all_ended(aws, timeout=180)

    # Then everything completed
    assert set(statuses.values()) == {"SUCCEEDED"}, statuses
    summary = _summary(aws, big)
    parts = [p["jobId"] for p in summary["parts"]]
    assert len(parts) >= 3 and summary["outcome"] in ("completed", "completed_with_errors")
    later_job, orders_job = _summary(aws, later)["jobId"], _summary(aws, orders)["jobId"]
    # And the workspace's timeline: every part of the split file started (in order) before the later
    # contacts file, never two contacts jobs at once, and orders was not held back by the split file
    timeline = sandbox.admin.import_timeline()
    assert start_order(timeline, "contacts", field="jobId") == [*parts, later_job]
    assert peak_running(timeline, "contacts") == 1
    started = start_order(timeline, field="jobId")
    assert started.index(orders_job) < started.index(parts[-1])
    # And the later file's row is the last written on contacts (nothing landed between two parts)
    assert sandbox.admin.records("contacts")[-1]["email"] == "late@example.com"
    # And no holder, slot or lock is left in the queue's table
    assert _leftovers(aws) == {}


@pytest.mark.parametrize("backstop", ["execution-status-event", "sweeper-only"])
def test_aborting_a_split_execution_gives_its_objects_turn_back(
    sandbox: SandboxHandle, backstop: str
) -> None:
    # Given a split file of contacts importing its parts (slow jobs), and a later contacts file waiting
    # (with the event as the backstop, no scheduled sweep runs: the event alone must free the turn)
    schedule = None if backstop == "execution-status-event" else 1.0
    with _local(sandbox, schedule) as aws:
        sandbox.admin.configure(importJobSeconds=2.0)
        data, _, _ = _contacts_csv(30_000, bad_every=10**9)
        big, later = "incoming/contacts/big.csv", "incoming/contacts/later.csv"
        aws.drop(BUCKET, big, data)
        split_arn = _summary(aws, big)["executionArn"]
        aws.drop(BUCKET, later, _small_csv(["email", "first_name"], [["late@example.com", "Late"]]))
        _wait_until(lambda: [e for e in aws.executions() if "-p00001-" in e["name"]], 60, "part 1's run")
        # (the later file waits behind the split file's turn)
        later_job = _wait_until(
            lambda: _summary_or_none(aws, later).get("jobId"), 30, "the later file handed off"
        )
        queued = {e.job_id: e.status for e in aws.queue()}
        assert queued.get(later_job) in ("registered", "waiting") and "holding" in queued.values(), queued

        # When the split execution is aborted (a user's StopExecution), no release step of its own running
        aws.sfn.stop_execution(executionArn=split_arn, error="Aborted", cause="stopped by the user")
        _wait_until(lambda: aws.describe(split_arn).status == "ABORTED", 30, "the split execution aborted")
        if backstop == "execution-status-event":  # what EventBridge delivers in AWS (moto emits none)
            aws.invoke("ImportReleaseFunction", execution_status_event(aws.sfn, split_arn))

        # Then its turn is given back: the later contacts file starts and completes
        _wait_until(
            lambda: _summary_or_none(aws, later).get("outcome") not in (None, "uploaded"),
            90,
            "the later file",
        )
        done = _summary(aws, later)
        assert done["outcome"] == "completed", done
        assert later_job in start_order(sandbox.admin.import_timeline(), "contacts", field="jobId")
        # And once every run has ended, no holder, slot or lock is left
        _all_ended(aws, timeout=90)
        _wait_until(lambda: _leftovers(aws) == {}, 10, "an empty queue table")


def _summary_or_none(aws: LocalAws, key: str) -> dict[str, Any]:
    try:
        return _summary(aws, key)
    except aws.s3.exceptions.NoSuchKey:
        return {}


@pytest.mark.slow
def test_a_csv_of_several_hundred_mb_splits_and_lands_every_good_row_once(sandbox: SandboxHandle) -> None:
    # Given a ~300 MB CSV (quoted multi-line fields, scattered bad rows) and 64 MiB parts
    rng = random.Random(3)
    out = io.BytesIO()
    out.write(b"email,first_name,city\r\n")
    bad: set[int] = set()
    good = 0
    pad = "y" * 250
    n = 0
    while out.tell() < 300 * 10**6:
        n += 1
        if rng.random() < 0.001:
            bad.add(n)
            email = f"not-an-email-{n}"
        else:
            good += 1
            email = f"u{n}@example.com"
        city = '"Oslo\nNorway"' if n % 7 == 0 else f'"{pad} ""{n}"""'
        out.write(f"{email},Name {n},{city}\r\n".encode())
    data = out.getvalue()
    assert _direct_parse_bad_rows(data) == bad
    env = {"INTAKE_PART_MAX_BYTES": str(64 * MIB), **FAST_POLL_ENV, "IMPORT_POLL_MAX_SECONDS": "2"}
    with local_stack(sandbox, BUCKET, env) as aws:
        key = "incoming/contacts/several-hundred-mb.csv"
        # When it is dropped
        summary = _run(aws, key, data, timeout=3600)
        # Then every part starts with the header and ends on a record boundary
        assert summary["_status"] == "SUCCEEDED", summary
        parts = summary["parts"]
        assert len(parts) == 5 and sum(p["rows"] for p in parts) == n
        for part in parts:
            uploaded = sandbox.admin.upload_bytes(part["jobId"])
            assert uploaded.startswith(b"email,first_name,city\r\n") and uploaded.endswith(b'"\r\n')
            assert len(uploaded) <= 64 * MIB
        # And every good row landed exactly once, and the errors file holds exactly the bad rows
        emails = _all_emails(sandbox)
        assert len(emails) == len(set(emails)) == good
        assert sorted(e["rowNumber"] for e in _errors(aws, key)) == sorted(bad)


def _all_emails(sandbox: SandboxHandle, page: int = 100_000) -> list[str]:
    """Every stored contact's email (the admin endpoint answers in pages of at most 100,000)."""
    emails: list[str] = []
    while True:
        rows = sandbox.admin._get("/objects/contacts/records", limit=page, offset=len(emails))["records"]
        emails += [row["data"]["email"] for row in rows]
        if len(rows) < page:
            return emails
