"""Warehouse exports load as one, end to end: a Redshift UNLOAD manifest, or a folder closed by a
``_SUCCESS`` marker, in a folder whose config says ``waitFor``. Parts dropped before are held."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from cli.local_aws import LocalAws
from experiture_ingest.files.layout import errors_key, result_key
from experiture_ingest.files.summary import Summary
from sandbox.testing import SandboxHandle
from tests.e2e.conftest import FAST_POLL_ENV, local_stack

BUCKET = "ingest-exports"
MIB = 1024 * 1024


@pytest.fixture
def aws(sandbox: SandboxHandle) -> Iterator[LocalAws]:
    with local_stack(sandbox, BUCKET, {"INTAKE_PART_MAX_BYTES": str(MIB), **FAST_POLL_ENV}) as local:
        yield local


def _summary(aws: LocalAws, key: str) -> dict[str, Any]:
    return json.loads(aws.s3.get_object(Bucket=BUCKET, Key=result_key(key))["Body"].read())


def _config(aws: LocalAws, folder: str, wait_for: str) -> None:
    aws.s3.put_object(
        Bucket=BUCKET, Key=f"config/{folder}.json", Body=json.dumps({"waitFor": wait_for}).encode()
    )


def _is_bad(n: int, i: int) -> bool:
    return (n * 7919 + i) % 997 == 0


def _csv_part(n: int, rows: int) -> bytes:
    """A part file whose row i (from 0) is bad when ``_is_bad(n, i)``; quoted multi-line names."""
    lines = ["email,first_name,city"]
    lines += [
        f'{f"bad-{n}-{i}" if _is_bad(n, i) else f"p{n}r{i}@example.com"},"Name\n{i}",{"x" * 60}'
        for i in range(rows)
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def _load(aws: LocalAws, key: str, body: bytes, timeout: float = 240.0) -> tuple[str, dict[str, Any]]:
    answer = aws.drop(BUCKET, key, body)
    outcome = answer["files"][0]["outcome"]
    if outcome != "splitting":
        return outcome, _summary(aws, key)
    arn = _summary(aws, key)["executionArn"]
    done = aws.wait(arn, timeout)
    return done.status, _summary(aws, key)


def test_a_manifest_of_40_parts_loads_as_one_in_as_few_jobs_as_fit(
    aws: LocalAws, sandbox: SandboxHandle
) -> None:
    # Given a folder waiting for manifests, and 40 CSV parts (each with its header) dropped first
    _config(aws, "contacts", "manifest")
    keys, total = [], 0
    for n in range(40):
        key = f"incoming/contacts/unload/0000_part_{n:02d}.csv"
        body = _csv_part(n, 900)
        total += len(body)
        answer = aws.drop(BUCKET, key, body)
        assert answer["files"][0]["outcome"] == "waiting"
        keys.append(key)
    # Then no part imported on its own: each is held, saying what it waits for
    assert sandbox.admin.import_jobs() == []
    assert _summary(aws, keys[0])["waitingFor"] == "manifest"
    # When the manifest lands
    manifest = {
        "entries": [
            {"url": f"s3://{BUCKET}/{k}", "mandatory": True, "meta": {"content_length": 1}} for k in keys
        ]
    }
    status, summary = _load(aws, "incoming/contacts/unload/manifest", json.dumps(manifest).encode())
    # Then all parts load in at most ceil(total bytes / part size) jobs, every row once
    assert status == "SUCCEEDED", summary
    assert summary["outcome"] == "completed_with_errors"
    jobs = summary["parts"]
    assert len(jobs) <= math.ceil(total / MIB) and len(sandbox.admin.import_jobs()) == len(jobs)
    bad = {(keys[n], i + 1) for n in range(40) for i in range(900) if _is_bad(n, i)}
    emails = [r["email"] for r in sandbox.admin.records("contacts")]
    assert len(emails) == len(set(emails)) == 40 * 900 - len(bad)
    # And each rejected row is named by its part file and its row in that file
    raw = aws.s3.get_object(Bucket=BUCKET, Key=errors_key("incoming/contacts/unload/manifest"))["Body"].read()
    errors = [json.loads(line) for line in raw.splitlines()]
    assert {(e["key"], e["rowNumber"]) for e in errors} == bad and len(errors) == len(bad)
    # And each job holds one header and several parts, under the part size
    for job in jobs:
        uploaded = sandbox.admin.upload_bytes(job["jobId"])
        assert len(uploaded) <= MIB and uploaded.count(b"email,first_name,city") == 1
        assert len(job["segments"]) > 1, "no part is imported on its own"
    covered = [k for job in jobs for k in job["segments"]]
    assert list(dict.fromkeys(covered)) == keys  # every part, in manifest order (a cut part spans two jobs)
    plan_parts = summary["split"]["parts"]
    assert plan_parts == len(jobs) and all(
        len(sandbox.admin.upload_bytes(j["jobId"])) > MIB // 2 for j in jobs[:-1]
    )
    # And each held file's own summary no longer says "waiting": it names the load, its outcome and
    # the job(s) that held its rows
    manifest_key = "incoming/contacts/unload/manifest"
    for key in keys:
        held = _summary(aws, key)
        Summary.model_validate(held)
        assert held["outcome"] == "completed_with_errors" and held["waitingFor"] == "manifest"
        assert held["load"]["key"] == manifest_key
        assert held["load"]["summaryKey"] == result_key(manifest_key)
        assert held["load"]["jobIds"] == [j["jobId"] for j in jobs if key in j["segments"]]
        assert manifest_key in held["message"] and held["load"]["jobIds"][0] in held["message"]
        assert aws.s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"] == [
            {"Key": "experiture-status", "Value": "completed_with_errors"}
        ]


def test_a_manifest_missing_a_mandatory_part_fails_naming_it_and_imports_nothing(
    aws: LocalAws, sandbox: SandboxHandle
) -> None:
    _config(aws, "contacts", "manifest")
    aws.drop(BUCKET, "incoming/contacts/u2/0000_part_00.csv", _csv_part(0, 10))
    manifest = {
        "entries": [
            {"url": f"s3://{BUCKET}/incoming/contacts/u2/0000_part_00.csv", "mandatory": True},
            {"url": f"s3://{BUCKET}/incoming/contacts/u2/0001_part_00.csv", "mandatory": True},
            {"url": f"s3://{BUCKET}/incoming/contacts/u2/0002_part_00.csv", "mandatory": False},
        ]
    }
    status, summary = _load(aws, "incoming/contacts/u2/run.manifest.json", json.dumps(manifest).encode())
    assert status == "FAILED"
    assert summary["outcome"] == "failed" and summary["reason"]["code"] == "MANIFEST_PART_MISSING"
    assert "incoming/contacts/u2/0001_part_00.csv" in summary["reason"]["message"]
    assert "0002_part_00" not in summary["reason"]["message"]  # optional: skipped, not missing
    assert sandbox.admin.import_jobs() == []
    # And the held part says its load failed, that no job holds its rows, and where the reason is
    held = _summary(aws, "incoming/contacts/u2/0000_part_00.csv")
    Summary.model_validate(held)
    assert held["outcome"] == "failed" and held["waitingFor"] == "manifest"
    assert held["load"] == {
        "key": "incoming/contacts/u2/run.manifest.json",
        "summaryKey": result_key("incoming/contacts/u2/run.manifest.json"),
        "jobIds": [],
        "finishedAt": held["load"]["finishedAt"],
    }
    assert "No job was opened" in held["message"]
    assert aws.queue() == []  # the load's turn in the import queue was given back on the refusal


def test_a_success_marker_loads_its_folder_as_one(aws: LocalAws, sandbox: SandboxHandle) -> None:
    # Given a Spark-style folder of JSONL parts (and Spark's own files), waiting for _SUCCESS
    _config(aws, "contacts", "_SUCCESS")
    folder = "incoming/contacts/spark/run=1"
    for n in range(6):
        lines = [json.dumps({"email": f"s{n}-{i}@example.com", "first_name": "S"}) for i in range(2000)]
        assert (
            aws.drop(BUCKET, f"{folder}/part-{n:05d}-abc.jsonl", "\n".join(lines).encode())["files"][0][
                "outcome"
            ]
            == "waiting"
        )  # no final newline: one is added between parts
    aws.s3.put_object(Bucket=BUCKET, Key=f"{folder}/.part-00000-abc.jsonl.crc", Body=b"crc")
    assert sandbox.admin.import_jobs() == []
    # When _SUCCESS lands
    status, summary = _load(aws, f"{folder}/_SUCCESS", b"")
    # Then the folder's parts load as one, every row once
    assert status == "SUCCEEDED", summary
    emails = [r["email"] for r in sandbox.admin.records("contacts")]
    assert len(emails) == len(set(emails)) == 6 * 2000
    assert len(summary["parts"]) == len(sandbox.admin.import_jobs()) == 1
    # And every held part file's summary names the load and its one job
    for n in range(6):
        held = _summary(aws, f"{folder}/part-{n:05d}-abc.jsonl")
        assert held["outcome"] == "completed" and held["waitingFor"] == "_SUCCESS"
        assert held["load"]["key"] == f"{folder}/_SUCCESS"
        assert held["load"]["jobIds"] == [summary["parts"][0]["jobId"]]
    assert aws.queue() == []  # the load's turn in the import queue was given back


def test_a_parts_event_handled_after_its_manifests_load_leaves_the_loads_summary(
    aws: LocalAws, sandbox: SandboxHandle
) -> None:
    # Given a folder waiting for manifests and two part files, one whose S3 event is handled late
    _config(aws, "contacts", "manifest")
    keys = [f"incoming/contacts/u3/000{n}_part_00.csv" for n in range(2)]
    early_event, late_event = (aws.put(BUCKET, key, _csv_part(n, 50)) for n, key in enumerate(keys))
    assert aws.deliver(early_event)["files"][0]["outcome"] == "waiting"
    # When the manifest's load runs to its end before the late part's event is handled
    manifest_key = "incoming/contacts/u3/manifest"
    manifest = {"entries": [{"url": f"s3://{BUCKET}/{k}", "mandatory": True} for k in keys]}
    status, summary = _load(aws, manifest_key, json.dumps(manifest).encode())
    assert status == "SUCCEEDED", summary
    # And then the late part's event, and the early one's again, are handled
    answers = [aws.deliver(late_event), aws.deliver(early_event)]
    # Then neither is held again: both part files' summaries say how the load ended, none "waiting"
    assert [a["files"][0]["outcome"] for a in answers] == ["already_loaded", "already_loaded"]
    for key in keys:
        held = _summary(aws, key)
        Summary.model_validate(held)
        assert held["outcome"] == summary["outcome"] and held["waitingFor"] == "manifest"
        assert held["load"]["key"] == manifest_key and held["load"]["jobIds"] == [
            summary["parts"][0]["jobId"]
        ]
        assert aws.s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"] == [
            {"Key": "experiture-status", "Value": summary["outcome"]}
        ]
    # And every row was imported once, in the load's one job
    emails = [r["email"] for r in sandbox.admin.records("contacts")]
    assert len(emails) == len(set(emails)) == 100 - sum(_is_bad(n, i) for n in range(2) for i in range(50))
    assert len(sandbox.admin.import_jobs()) == 1
