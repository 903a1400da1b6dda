"""The import queue end to end: files dropped through the intake, the real state machine on moto
(Enqueue waits on a task token), the scheduler's functions in-process, the sandbox over HTTP.

What a user relies on is read back from the sandbox (each job's start and finish, the values stored)
and from the bucket (summaries), never from the scheduler's own bookkeeping.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import boto3
import pytest

from cli.local_aws import LocalAws, execution_status_event
from experiture_ingest.client import BearerToken, ExperitureClient, ImportJobInit, ImportMapping
from experiture_ingest.files.layout import result_key, version_result_key
from sandbox.testing import SandboxHandle

BUCKET = "queue-e2e"
FAST = {
    "IMPORT_POLL_INITIAL_SECONDS": "1",
    "IMPORT_POLL_FACTOR": "1",
    "IMPORT_POLL_MAX_SECONDS": "1",
}
OBJECTS = {
    "contacts": ["email", "tier"],
    "profiles": ["email", "city"],
    "orders": ["order_id", "email", "amount", "ordered_at", "status"],
}


def csv_bytes(header: list[str], rows: list[list[object]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def file_for(obj: str, n: int) -> bytes:
    """A file for ``obj`` whose shared row (same key in every file) carries ``n``: the last one wins."""
    if obj == "orders":
        rows: list[list[object]] = [["o-shared", "a@example.com", n, "2026-01-01T00:00:00Z", f"s{n}"]]
        rows.append([f"o-{n}", "b@example.com", 1, "2026-01-01T00:00:00Z", "new"])
    else:
        rows = [["shared@example.com", f"v{n}"], [f"u{n}@example.com", f"v{n}"]]
    return csv_bytes(OBJECTS[obj], rows)


def local_aws(sandbox: SandboxHandle, **env: str) -> LocalAws:
    return LocalAws(
        env={"EXPERITURE_API_URL": sandbox.base_url, "EXPERITURE_API_TOKEN": sandbox.token, **FAST, **env},
        schedule_seconds=0.5,
    )


@pytest.fixture
def aws(sandbox: SandboxHandle) -> Iterator[LocalAws]:
    with local_aws(sandbox) as local:
        local.s3.create_bucket(Bucket=BUCKET)
        local.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield local


def summary(aws: LocalAws, key: str) -> dict[str, Any]:
    return json.loads(aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def wait_all(aws: LocalAws, timeout: float) -> dict[str, str]:
    """Wait until every execution (through continuations) has ended: {execution arn: status}."""
    deadline = time.monotonic() + timeout
    while True:
        listed = aws.executions()
        if all(e["status"] != "RUNNING" for e in listed):
            return {e["executionArn"]: e["status"] for e in listed}
        if time.monotonic() > deadline:
            running = [e["name"] for e in listed if e["status"] == "RUNNING"]
            raise TimeoutError(f"still running after {timeout} s: {running}")
        time.sleep(0.2)


def intervals(jobs: list[dict[str, Any]]) -> list[tuple[datetime, datetime, dict[str, Any]]]:
    def when(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return [(when(j["startedAt"]), when(j["completedAt"]), j) for j in jobs if j.get("startedAt")]


def most_at_once(spans: list[tuple[datetime, datetime, dict[str, Any]]]) -> int:
    """The largest number of jobs running at the same moment (a finish frees its slot first)."""
    moments = sorted(
        [(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans], key=lambda m: (m[0], m[1])
    )
    running = peak = 0
    for _, change in moments:
        running += change
        peak = max(peak, running)
    return peak


# How the workspace refuses a start: its own concurrency answer (429 CONCURRENCY_LIMIT), and, until
# the sandbox can answer its limit each way, a 409 or a 429 RATE.LIMITED injected on some starts
# (the job stays ready: the fault answers before the start is processed).
REFUSALS = {
    "429-concurrency": (429, None),
    "409-while-ready": (409, {"status": 409}),
    "429-rate-limited": (429, {"status": 429, "retryAfter": 0}),
}


@pytest.mark.slow
@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_25_files_over_3_objects_all_complete_within_the_limit_one_job_per_object_in_drop_order(
    aws: LocalAws, sandbox: SandboxHandle, refusal: str
):
    # Given a workspace limited to 3 running jobs, one of them taken by another tool for a while
    sandbox.admin.configure(maxRunningImports=3, importJobSeconds=600.0, concurrencyRetryAfterSeconds=1)
    foreign = start_foreign_job(sandbox)
    sandbox.admin.configure(importJobSeconds=2.0)  # long enough for the three objects' jobs to overlap
    status, fault = REFUSALS[refusal]
    if fault:
        rule = {"method": "POST", "path": "/public/v1/import-jobs/*/start", "rate": 0.3, "times": 12, **fault}
        sandbox.admin.set_faults({"seed": 10, "rules": [rule]})

    # When 25 files over 3 objects are dropped at once (interleaved)
    dropped: list[tuple[str, str]] = []
    for n in range(25):
        obj = list(OBJECTS)[n % 3]
        key = f"incoming/{obj}/part-{n:02d}.csv"
        aws.drop(BUCKET, key, file_for(obj, n))
        dropped.append((obj, key))
    wait_for(
        lambda: concurrency_refusals(sandbox), timeout=60, what="a start refused at the workspace's limit"
    )
    sandbox.admin.fail_job(foreign, "the other tool's job ends")  # the workspace has room again
    statuses = wait_all(aws, timeout=240)

    # Then every file completed, and its summary says how long it waited
    assert set(statuses.values()) == {"SUCCEEDED"}
    summaries = {key: summary(aws, result_key(key)) for _, key in dropped}
    assert {s["outcome"] for s in summaries.values()} == {"completed"}
    assert all(s["scheduling"]["queuedAt"] and s["scheduling"]["startedAt"] for s in summaries.values())
    # ... the workspace never ran more than 3 jobs, and the capacity refusals were waited out
    ours = {s["jobId"]: key for key, s in summaries.items()}
    jobs = [j for j in sandbox.admin.import_jobs() if j["jobId"] in ours or j["jobId"] == foreign]
    spans = intervals(jobs)
    assert len(spans) == 26 and most_at_once(spans) <= 3
    refused = [
        r
        for r in sandbox.admin.requests(method="POST")
        if r["path"].endswith("/start") and r["status"] == status
    ]
    assert refused, "the workspace should have refused some starts"
    assert max(s["scheduling"]["startAttempts"] for s in summaries.values()) >= 2
    # ... never two jobs on one object at once, and per object in drop order
    for obj in OBJECTS:
        mine = sorted((s, e, j) for s, e, j in spans if j["jobId"] in ours and j["objectName"] == obj)
        assert most_at_once(mine) == 1, obj
        assert [ours[j["jobId"]] for _, _, j in mine] == [key for o, key in dropped if o == obj], obj
    # ... so the row every file of an object shares holds the last dropped file's value
    assert {r["email"]: r["tier"] for r in sandbox.admin.records("contacts")}["shared@example.com"] == "v24"
    assert {r["email"]: r["city"] for r in sandbox.admin.records("profiles")}["shared@example.com"] == "v22"
    assert {r["order_id"]: r["status"] for r in sandbox.admin.records("orders")}["o-shared"] == "s23"
    # ... and no slot is left held
    assert aws.queue() == []


def concurrency_refusals(sandbox: SandboxHandle) -> list[dict[str, Any]]:
    starts = [r for r in sandbox.admin.requests(method="POST") if r["path"].endswith("/start")]
    return [r for r in starts if r["status"] == 429 and not r.get("fault")]


def start_foreign_job(sandbox: SandboxHandle) -> str:
    """Another tool's job on the workspace (object ``events``): uploaded, mapped, started."""
    body = csv_bytes(["event_id", "event_type", "occurred_at"], [["e1", "visit", "2026-01-01T00:00:00Z"]])
    with ExperitureClient(sandbox.base_url, BearerToken(sandbox.token)) as client:
        slot = client.init_import(
            ImportJobInit(object_name="events", file_name="other.csv", file_size=len(body))
        )
        client.upload(slot, lambda: io.BytesIO(body), len(body))
        fields = {"event_id": "event_id", "event_type": "event_type", "occurred_at": "occurred_at"}
        client.set_mapping(
            slot.job_id, ImportMapping(source_fields=dict.fromkeys(fields, "string"), field_map=fields)
        )
        client.start_import(slot.job_id)
    return slot.job_id


def execution_of(aws: LocalAws, key: str) -> str:
    """The execution the intake handed the file to (named after the file, see files.intake)."""
    name = key.rsplit("/", 1)[-1]
    [arn] = [e["executionArn"] for e in aws.executions() if e["name"].startswith(f"{name}-")]
    return str(arn)


def wait_for(condition: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met after {timeout} s")
        time.sleep(0.1)


@pytest.mark.parametrize("backstop", ["execution-status-event", "sweeper-only"])
def test_aborted_executions_give_their_slots_back_and_the_rest_complete(
    sandbox: SandboxHandle, backstop: str
):
    # Given a stack that runs one job at a time, and four files: one running, three waiting
    # (jobs long enough that the running one is still running when it is aborted, on a busy machine)
    sandbox.admin.configure(importJobSeconds=4.0)
    with local_aws(sandbox, IMPORT_MAX_RUNNING_JOBS="1") as aws:
        aws.s3.create_bucket(Bucket=BUCKET)
        keys = [
            f"incoming/{obj}/abort-{n}.csv"
            for n, obj in enumerate(["contacts", "profiles", "orders", "contacts"])
        ]
        for n, key in enumerate(keys):
            aws.drop(BUCKET, key, file_for(key.split("/")[1], n))
        running = wait_for(lambda: [e for e in aws.queue() if e.status == "running"], what="a running job")
        assert len(running) == 1
        [waiting, *_] = wait_for(
            lambda: [e for e in aws.queue() if e.status == "waiting"], what="a waiting file"
        )

        # When the running execution and a waiting one are aborted (a user's StopExecution)
        stopped = [running[0].key, waiting.key]
        aborted = [execution_of(aws, key) for key in stopped]
        for arn in aborted:
            aws.sfn.stop_execution(executionArn=arn, error="Aborted", cause="stopped by the user")
        for arn in aborted:
            wait_for(lambda arn=arn: aws.describe(arn).status == "ABORTED", what=f"{arn} aborted")
            if backstop == "execution-status-event":  # what EventBridge delivers in AWS (moto emits none)
                aws.invoke("ImportReleaseFunction", execution_status_event(aws.sfn, arn))
        statuses = wait_all(aws, timeout=90)

        # Then the other two files completed, and no slot or place in the queue is left
        rest = [key for key in keys if key not in stopped]
        assert {statuses[execution_of(aws, key)] for key in stopped} == {"ABORTED"}
        assert [statuses[execution_of(aws, key)] for key in rest] == ["SUCCEEDED", "SUCCEEDED"]
        assert [summary(aws, result_key(key))["outcome"] for key in rest] == ["completed", "completed"]
        wait_for(lambda: aws.queue() == [], timeout=5, what="an empty queue")


def test_a_late_event_for_an_older_version_is_superseded_and_imports_nothing(
    aws: LocalAws, sandbox: SandboxHandle
):
    # Given v1 then v2 of one key, and S3 delivering v2's event first
    key = "incoming/contacts/prices.csv"
    v1_event = aws.put(BUCKET, key, csv_bytes(["email", "tier"], [["ada@example.com", "v1"]]))
    v2_event = aws.put(BUCKET, key, csv_bytes(["email", "tier"], [["ada@example.com", "v2"]]))
    v1 = v1_event["Records"][0]["s3"]["object"]["versionId"]
    v2 = v2_event["Records"][0]["s3"]["object"]["versionId"]
    aws.deliver(v2_event)
    assert set(wait_all(aws, timeout=60).values()) == {"SUCCEEDED"}

    # When v1's event arrives late
    answer = aws.deliver(v1_event)

    # Then v1 starts nothing: the CDP holds v2's values, the key's summary names v2,
    # and v1's own summary (beside it) says superseded, naming v2
    assert answer["files"] == [{"key": key, "outcome": "superseded", "jobId": None}]
    assert len(aws.executions()) == 1 and len(sandbox.admin.import_jobs()) == 1
    assert sandbox.admin.records("contacts") == [{"email": "ada@example.com", "tier": "v2"}]
    newest = summary(aws, result_key(key))
    assert newest["outcome"] == "completed" and newest["source"]["versionId"] == v2
    older = summary(aws, version_result_key(key, v1))
    assert older["outcome"] == "superseded" and older["supersededBy"] == v2
    assert v2 in older["reason"]["message"]
    tags = aws.s3.get_object_tagging(Bucket=BUCKET, Key=key, VersionId=v1)["TagSet"]
    assert {"Key": "experiture-status", "Value": "superseded"} in tags


def test_versions_delivered_in_order_both_import_in_order_and_the_key_describes_the_newest(
    aws: LocalAws, sandbox: SandboxHandle
):
    # Given v1 then v2 of one key, delivered in order while v1's job is still running
    sandbox.admin.configure(importJobSeconds=1.0)
    key = "incoming/contacts/in-order.csv"
    v1_event = aws.put(BUCKET, key, csv_bytes(["email", "tier"], [["bo@example.com", "v1"]]))
    v2_event = aws.put(BUCKET, key, csv_bytes(["email", "tier"], [["bo@example.com", "v2"]]))
    v2 = v2_event["Records"][0]["s3"]["object"]["versionId"]

    # When both are delivered
    aws.deliver(v1_event)
    aws.deliver(v2_event)
    assert set(wait_all(aws, timeout=60).values()) == {"SUCCEEDED"}

    # Then both imported, v1 first, so the CDP holds v2's values, and results/<key>.json describes v2
    jobs = sorted(sandbox.admin.import_jobs(), key=lambda j: j["startedAt"])
    assert len(jobs) == 2 and jobs[0]["completedAt"] <= jobs[1]["startedAt"]
    assert sandbox.admin.records("contacts") == [{"email": "bo@example.com", "tier": "v2"}]
    assert summary(aws, result_key(key))["source"]["versionId"] == v2
    v1 = v1_event["Records"][0]["s3"]["object"]["versionId"]
    older = summary(aws, version_result_key(key, v1))
    assert older["outcome"] == "completed" and older["newerVersion"] == v2


@pytest.mark.slow
def test_a_job_completes_through_40_consecutive_503s_on_its_status(aws: LocalAws, sandbox: SandboxHandle):
    # Given a job whose status endpoint answers 503 forty times in a row once it is started
    sandbox.admin.configure(importJobSeconds=1.0)
    sandbox.admin.set_faults(
        {"rules": [{"method": "GET", "path": "/public/v1/import-jobs/imp_*", "status": 503, "times": 40}]}
    )
    key = "incoming/contacts/outage.csv"

    # When the file is dropped and runs to its end
    aws.drop(BUCKET, key, csv_bytes(["email", "tier"], [[f"o{i}@example.com", "x"] for i in range(7)]))
    assert set(wait_all(aws, timeout=240).values()) == {"SUCCEEDED"}

    # Then it completed with the right counts, and the summary tells of the outage it rode out
    done = summary(aws, result_key(key))
    assert done["outcome"] == "completed"
    assert done["metrics"]["rowsImported"] == len(sandbox.admin.records("contacts")) == 7
    assert sandbox.admin.faults()["rules"][0]["hits"] == 40
    assert done["pollOutages"]["count"] == 1
    assert done["pollOutages"]["longestSeconds"] > 0
    assert done["pollOutages"]["failedPolls"] >= 1


def test_a_job_completes_through_401s_fixed_by_a_rotated_secret(sandbox: SandboxHandle):
    # Given credentials from Secrets Manager, and a job that takes a few seconds
    sandbox.admin.configure(importJobSeconds=5.0)
    scopes = ["cdp:imports:write", "cdp:imports:read", "cdp:metadata:read"]
    sandbox.admin.add_token("token-before-rotation", scopes)
    with LocalAws(env={"EXPERITURE_API_URL": sandbox.base_url, **FAST}, schedule_seconds=0.5) as aws:
        secrets = boto3.client("secretsmanager", region_name="us-east-1")
        arn = secrets.create_secret(
            Name="experiture/api", SecretString=json.dumps({"token": "token-before-rotation"})
        )["ARN"]
        os.environ["EXPERITURE_SECRET_ARN"] = arn  # LocalAws restores the environment on exit
        aws.s3.create_bucket(Bucket=BUCKET)
        key = "incoming/contacts/rotated.csv"
        aws.drop(
            BUCKET, key, csv_bytes(["email", "tier"], [["r1@example.com", "x"], ["r2@example.com", "y"]])
        )
        job_id = summary(aws, result_key(key))["jobId"]
        wait_for(
            lambda: sandbox.admin.job(job_id)["state"] != "ready" and sandbox.admin.job(job_id)["startedAt"]
        )

        # When the token is revoked while the job runs (polls now get 401, even after re-reading the
        # secret), and only later the secret is rotated to a new token
        sandbox.admin.add_token("token-before-rotation", scopes, expires_in=0.001)
        wait_for(lambda: len(unauthorised(sandbox, job_id)) >= 2, what="two refused polls")
        sandbox.admin.add_token("token-after-rotation", scopes)
        secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"token": "token-after-rotation"}))
        assert set(wait_all(aws, timeout=60).values()) == {"SUCCEEDED"}

        # Then the file completed with the right counts, and the summary tells of the outage
        done = summary(aws, result_key(key))
    assert done["outcome"] == "completed"
    assert done["metrics"]["rowsImported"] == len(sandbox.admin.records("contacts")) == 2
    assert done["pollOutages"]["count"] == 1 and done["pollOutages"]["failedPolls"] >= 1


def unauthorised(sandbox: SandboxHandle, job_id: str) -> list[dict[str, Any]]:
    return [
        r
        for r in sandbox.admin.requests(method="GET", path=f"/public/v1/import-jobs/{job_id}")
        if r["status"] == 401
    ]


@pytest.mark.parametrize(
    ("status", "answer"),
    [(409, "409 CDP_ETL.FAULT.INJECTED"), (429, "429 CDP_ETL.RATE.LIMITED")],
    ids=["409-while-ready", "429-rate-limited"],
)
def test_starts_refused_with_409_or_429_wait_in_the_queue_and_complete(
    aws: LocalAws, sandbox: SandboxHandle, status: int, answer: str
):
    # Given a workspace that refuses the next three starts (the job stays ready), however it words it
    sandbox.admin.set_faults(
        {
            "rules": [
                {"method": "POST", "path": "/public/v1/import-jobs/*/start", "status": status, "times": 3}
                | ({"retryAfter": 0} if status == 429 else {})
            ]
        }
    )
    keys = [f"incoming/{obj}/refused-{n}.csv" for n, obj in enumerate(["contacts", "orders", "contacts"])]

    # When three files are dropped
    for n, key in enumerate(keys):
        aws.drop(BUCKET, key, file_for(key.split("/")[1], n))
    assert set(wait_all(aws, timeout=90).values()) == {"SUCCEEDED"}

    # Then all completed; the refused ones tried again, each attempt with its own Idempotency-Key
    summaries = [summary(aws, result_key(key)) for key in keys]
    assert [s["outcome"] for s in summaries] == ["completed"] * 3
    assert sum(s["scheduling"]["startAttempts"] for s in summaries) == 3 + 3
    assert answer in {s["scheduling"]["lastRefusal"] for s in summaries}
    for s in summaries:
        starts = [
            r for r in sandbox.admin.requests(method="POST") if r["path"].endswith(f"{s['jobId']}/start")
        ]
        assert len(starts) == s["scheduling"]["startAttempts"]
        seen = [
            r["idempotencyKey"] for r in starts if r["idempotencyKey"]
        ]  # a fault answers before reading it
        assert len(set(seen)) == len(seen)
    assert aws.queue() == []
