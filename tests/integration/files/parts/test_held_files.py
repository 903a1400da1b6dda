"""Held files told how their load ended: only summaries that say ``waitingFor`` are rewritten."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from experiture_ingest.files.handoff import SourceObject, SplitRun
from experiture_ingest.files.layout import part_upload_key, result_key
from experiture_ingest.files.parts.held import report_held_files
from experiture_ingest.files.parts.tasks import PartsDeps, plan_parts, report_split_failure
from experiture_ingest.files.results import write_summary
from experiture_ingest.files.summary import Summary

BUCKET = "exports"
MANIFEST = "incoming/contacts/unload/manifest"


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _summary(s3: Any, key: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(s3.get_object(Bucket=BUCKET, Key=result_key(key))["Body"].read())
    return doc


def test_held_files_take_the_loads_outcome_and_files_imported_alone_keep_theirs(s3: Any) -> None:
    # Given a held part file, a file the manifest names that was imported on its own, and one never seen
    held, alone, unseen = (
        "incoming/contacts/unload/p0.csv",
        "incoming/other/p1.csv",
        "incoming/contacts/p2.csv",
    )
    for key in (held, alone):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"email\na@example.com\n")
    write_summary(
        s3,
        BUCKET,
        held,
        Summary(outcome="waiting", key=held, waiting_for="manifest", message="Held, not imported."),
    )
    write_summary(s3, BUCKET, alone, Summary(outcome="completed", key=alone, job_id="imp_own"))
    # When the load ends partially failed, the held file's rows in two jobs
    count = report_held_files(
        s3,
        BUCKET,
        MANIFEST,
        "partially_failed",
        {held: ["imp_1", "imp_2"], alone: ["imp_2"], unseen: []},
        finished_at=datetime(2026, 4, 1, tzinfo=UTC),
    )
    # Then only the held file's summary is rewritten: the load's outcome, its summary key, its jobs
    assert count == 1
    summary = _summary(s3, held)
    assert summary["outcome"] == "partially_failed" and summary["waitingFor"] == "manifest"
    assert summary["load"] == {
        "key": MANIFEST,
        "summaryKey": result_key(MANIFEST),
        "jobIds": ["imp_1", "imp_2"],
        "finishedAt": "2026-04-01T00:00:00+00:00",
    }
    assert "imp_1, imp_2" in summary["message"] and result_key(MANIFEST) in summary["message"]
    assert s3.get_object_tagging(Bucket=BUCKET, Key=held)["TagSet"] == [
        {"Key": "experiture-status", "Value": "partially_failed"}
    ]
    # And the file imported on its own keeps its summary; nothing is written for the unseen one
    assert _summary(s3, alone)["outcome"] == "completed" and "load" not in _summary(s3, alone)
    with pytest.raises(s3.exceptions.NoSuchKey):
        _summary(s3, unseen)


def test_a_split_flow_failure_tells_held_files_their_load_failed_and_which_job_held_their_rows(
    s3: Any,
) -> None:
    # Given three held part files and a manifest naming them, planned as one job whose upload recorded
    keys = [f"incoming/contacts/unload/000{n}_part_00.csv" for n in range(3)]
    for n, key in enumerate(keys):
        s3.put_object(Bucket=BUCKET, Key=key, Body=f"email\np{n}@example.com\n".encode())
        write_summary(s3, BUCKET, key, Summary(outcome="waiting", key=key, waiting_for="manifest"))
    manifest = {"entries": [{"url": f"s3://{BUCKET}/{k}", "mandatory": True} for k in keys]}
    body = json.dumps(manifest).encode()
    s3.put_object(Bucket=BUCKET, Key=MANIFEST, Body=body)
    run = SplitRun(
        object_name="contacts",
        source=SourceObject(bucket=BUCKET, key=MANIFEST, size=len(body), format="csv"),
        part_max_bytes=1024 * 1024,
        manifest="manifest",
    )
    deps = PartsDeps(s3=s3, now=lambda: datetime(2026, 4, 1, tzinfo=UTC))
    planned = plan_parts(run, deps, state_machine_arn="arn:sm", execution_name="load-1")
    assert planned["plan"]["parts"] == 1
    s3.put_object(
        Bucket=BUCKET, Key=part_upload_key(MANIFEST, 1), Body=json.dumps({"jobId": "imp_9"}).encode()
    )
    # When a step of the split flow fails for good
    report_split_failure(run, {"Error": "States.TaskFailed", "Cause": "boom"}, deps, execution_name="load-1")
    # Then the load's summary says failed, and so does each held file, naming the load and the job
    assert _summary(s3, MANIFEST)["outcome"] == "failed"
    for key in keys:
        held = _summary(s3, key)
        assert held["outcome"] == "failed" and held["load"]["jobIds"] == ["imp_9"]
        assert held["load"]["summaryKey"] == result_key(MANIFEST)
