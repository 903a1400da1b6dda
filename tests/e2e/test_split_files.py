"""Files over the part size, end to end: intake -> the real state machine's split branch (plan,
Distributed Map of upload workers, part imports one after the other as child runs) -> one summary.

The part size is lowered to its minimum (1 MiB) so a few-MiB file splits into several parts.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from cli.local_aws import LocalAws
from experiture_ingest.files.layout import errors_key, plan_key, result_key
from sandbox.testing import SandboxHandle

BUCKET = "ingest-split"
MIB = 1024 * 1024


@pytest.fixture
def aws(sandbox: SandboxHandle) -> Iterator[LocalAws]:
    env = {
        "EXPERITURE_API_URL": sandbox.base_url,
        "EXPERITURE_API_TOKEN": sandbox.token,
        "INTAKE_PART_MAX_BYTES": str(MIB),
        "INTAKE_PART_WORKERS": "3",
        "IMPORT_POLL_INITIAL_SECONDS": "1",
        "IMPORT_POLL_FACTOR": "1",
        "IMPORT_POLL_MAX_SECONDS": "1",
    }
    with LocalAws(env=env) as local:
        local.s3.create_bucket(Bucket=BUCKET)
        local.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
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
    (execution,) = [e for e in aws.executions() if not e["name"].count("-p0")]
    done = aws.wait(execution["executionArn"], timeout)
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
    # And the parts imported one after the other, in order
    jobs = {j["jobId"]: j for j in sandbox.admin.import_jobs()}
    started = [jobs[p["jobId"]]["startedAt"] for p in parts]
    assert started == sorted(started)
    # And the plan is there for the user to read
    plan = json.loads(aws.s3.get_object(Bucket=BUCKET, Key=plan_key(key))["Body"].read())
    assert len(plan["parts"]) == len(parts)
