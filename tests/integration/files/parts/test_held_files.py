"""Held files told how their load ended: summaries that say ``waitingFor`` are rewritten, files of the
load's folder not seen yet get one, any other file is left alone; a hold and a load racing on one
summary (conditional writes) end with the load's."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from moto import mock_aws

from experiture_ingest.files.handoff import SourceObject, SplitRun
from experiture_ingest.files.layout import part_upload_key, result_key
from experiture_ingest.files.parts.held import LoadedFile, hold_unless_loaded, report_held_files
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
    # Given a held part file, a file the manifest names that was imported on its own, a part file of
    # the load's folder whose own event is still to come, and one of another folder never seen
    held, alone, unseen, elsewhere = (
        "incoming/contacts/unload/p0.csv",
        "incoming/other/p1.csv",
        "incoming/contacts/p2.csv",
        "incoming/other/p3.csv",
    )
    versions = {}
    for key in (held, alone, unseen, elsewhere):
        put = s3.put_object(Bucket=BUCKET, Key=key, Body=b"email\na@example.com\n")
        versions[key] = LoadedFile(job_ids=["imp_2"], etag=put["ETag"].strip('"'), planned=True)
    versions[held] = LoadedFile(job_ids=["imp_1", "imp_2"], etag=versions[held].etag, planned=True)
    write_summary(
        s3,
        BUCKET,
        held,
        Summary(outcome="waiting", key=held, waiting_for="manifest", message="Held, not imported."),
    )
    write_summary(s3, BUCKET, alone, Summary(outcome="completed", key=alone, job_id="imp_own"))
    # When the load ends partially failed, the held file's rows in two jobs
    count = report_held_files(
        s3, BUCKET, MANIFEST, "partially_failed", versions, finished_at=datetime(2026, 4, 1, tzinfo=UTC)
    )
    # Then the held file's summary is rewritten: the load's outcome, its summary key, its jobs
    assert count == 2
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
    # And the unseen file of the load's folder gets the load's summary already, naming its version
    early = _summary(s3, unseen)
    Summary.model_validate(early)
    assert early["outcome"] == "partially_failed" and early["waitingFor"] == "manifest"
    assert early["key"] == unseen and early["bucket"] == BUCKET and early["etag"] == versions[unseen].etag
    assert early["load"]["jobIds"] == ["imp_2"] and early["load"]["key"] == MANIFEST
    # And the file imported on its own keeps its summary; nothing is written for the other folder's
    assert _summary(s3, alone)["outcome"] == "completed" and "load" not in _summary(s3, alone)
    with pytest.raises(s3.exceptions.NoSuchKey):
        _summary(s3, elsewhere)


def test_a_load_that_ends_before_its_plan_tells_unseen_files_that_exist_and_skips_missing_ones(
    s3: Any,
) -> None:
    # Given a versioned bucket, one part file of the load's folder not seen by the intake yet, and a
    # part the manifest names that is not there
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    present, missing = (
        "incoming/contacts/unload/0000_part_00.csv",
        "incoming/contacts/unload/0001_part_00.csv",
    )
    put = s3.put_object(Bucket=BUCKET, Key=present, Body=b"email\na@example.com\n")
    # When the load fails before its plan (only the manifest's keys are known)
    count = report_held_files(
        s3, BUCKET, MANIFEST, "failed", [present, missing], finished_at=datetime(2026, 4, 1, tzinfo=UTC)
    )
    # Then the present file's summary says failed, for its current version; the missing one has none
    assert count == 1
    summary = _summary(s3, present)
    assert summary["outcome"] == "failed" and summary["versionId"] == put["VersionId"]
    assert summary["load"]["jobIds"] == [] and "No job was opened" in summary["message"]
    with pytest.raises(s3.exceptions.NoSuchKey):
        _summary(s3, missing)


class _WritesAfterFirstRead:
    """An S3 client whose first read of ``key`` is answered, then ``write`` runs (the other side's
    write), then the answer read before it is returned."""

    def __init__(self, s3: Any, key: str, write: Any) -> None:
        self._s3, self._key, self._write = s3, key, write

    def get_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"] != self._key or self._write is None:
            return self._s3.get_object(**kwargs)
        write, self._write = self._write, None
        try:
            answer = self._s3.get_object(**kwargs)
        except ClientError:
            write()
            raise
        body = answer["Body"].read()
        write()
        return {**answer, "Body": StreamingBody(io.BytesIO(body), len(body))}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


def test_a_hold_written_between_the_loads_read_and_write_is_read_again_and_told(s3: Any) -> None:
    # Given a part file with no summary yet, and its held event handled just after the load read
    key = "incoming/contacts/unload/0000_part_00.csv"
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=b"email\na@example.com\n")
    etag = put["ETag"].strip('"')
    waiting = Summary(outcome="waiting", key=key, etag=etag, waiting_for="manifest", received_at="t0")

    def hold() -> None:
        assert hold_unless_loaded(s3, BUCKET, key, waiting) is None

    racing = _WritesAfterFirstRead(s3, result_key(key), hold)
    # When the load ends
    report_held_files(
        racing,
        BUCKET,
        MANIFEST,
        "completed",
        {key: LoadedFile(job_ids=["imp_1"], etag=etag, planned=True)},
        finished_at=datetime(2026, 4, 1, tzinfo=UTC),
    )
    # Then the summary is the load's, over the hold (its conditional write lost, it read again)
    summary = _summary(s3, key)
    assert summary["outcome"] == "completed" and summary["load"]["jobIds"] == ["imp_1"]
    assert summary["receivedAt"] == "t0"  # the hold's, rewritten: not the one written blind


def test_a_load_written_between_the_holds_read_and_write_is_kept(s3: Any) -> None:
    # Given a part file with no summary yet, and its load ending just after the held event's read
    key = "incoming/contacts/unload/0000_part_00.csv"
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=b"email\na@example.com\n")
    etag = put["ETag"].strip('"')

    def load_ends() -> None:
        files = {key: LoadedFile(job_ids=["imp_1"], etag=etag, planned=True)}
        report_held_files(
            s3, BUCKET, MANIFEST, "completed", files, finished_at=datetime(2026, 4, 1, tzinfo=UTC)
        )

    racing = _WritesAfterFirstRead(s3, result_key(key), load_ends)
    # When the held event is handled
    waiting = Summary(outcome="waiting", key=key, etag=etag, waiting_for="manifest")
    loaded = hold_unless_loaded(racing, BUCKET, key, waiting)
    # Then the hold's write lost, it read again and left the load's summary (and the load's tag)
    assert loaded is not None and loaded.outcome == "completed"
    summary = _summary(s3, key)
    assert summary["outcome"] == "completed" and summary["load"]["jobIds"] == ["imp_1"]
    assert s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"] == [
        {"Key": "experiture-status", "Value": "completed"}
    ]


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


def test_a_file_of_the_loads_folder_whose_intake_will_retry_gets_the_loads_summary(s3: Any) -> None:
    # Given a part file of the load's folder whose event failed in the intake (to be retried by Lambda)
    key = "incoming/contacts/unload/0000_part_00.csv"
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=b"email\na@example.com\n")
    failed = Summary(outcome="failed", key=key, will_retry=True, reason={"code": "SlowDown", "message": "x"})
    write_summary(s3, BUCKET, key, failed)
    # When its load ends
    etag = put["ETag"].strip('"')
    files = {key: LoadedFile(job_ids=["imp_1"], etag=etag, planned=True)}
    report_held_files(s3, BUCKET, MANIFEST, "completed", files, finished_at=datetime(2026, 4, 1, tzinfo=UTC))
    # Then its summary is the load's (the retried event will find it), not the intake's failure
    summary = _summary(s3, key)
    assert summary["outcome"] == "completed" and summary["load"]["jobIds"] == ["imp_1"]
    assert "reason" not in summary and "willRetry" not in summary and summary["etag"] == etag


def test_a_summary_that_is_not_json_is_left_by_the_load_and_replaced_by_the_hold(s3: Any) -> None:
    # Given a part file of the load's folder whose results/<key>.json is not JSON
    key = "incoming/contacts/unload/0000_part_00.csv"
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=b"email\na@example.com\n")
    s3.put_object(Bucket=BUCKET, Key=result_key(key), Body=b"not json")
    etag = put["ETag"].strip('"')
    # When its load ends
    files = {key: LoadedFile(job_ids=["imp_1"], etag=etag, planned=True)}
    count = report_held_files(
        s3, BUCKET, MANIFEST, "completed", files, finished_at=datetime(2026, 4, 1, tzinfo=UTC)
    )
    # Then the load leaves it as it is
    assert count == 0
    assert s3.get_object(Bucket=BUCKET, Key=result_key(key))["Body"].read() == b"not json"
    # And when the file's event is held, its waiting summary replaces it
    waiting = Summary(outcome="waiting", key=key, etag=etag, waiting_for="manifest")
    assert hold_unless_loaded(s3, BUCKET, key, waiting) is None
    assert _summary(s3, key)["outcome"] == "waiting"
