"""Collect and failure summaries: the errors file streamed in parts, summaries that explain."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from experiture_ingest.files.collect import (
    StorageUnavailableError,
    collect,
    describe_error,
    report_failure,
    stream_to_s3,
)
from experiture_ingest.files.import_tasks import ImportState, TaskDeps, prepare

BUCKET = "collect-bucket"
MIB = 1024 * 1024


@pytest.fixture
def s3() -> Iterator:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def lines(n: int, width: int = 200) -> Iterator[bytes]:
    for i in range(n):
        yield (f'{{"rowNumber": {i}, "error": "{"x" * width}"}}\n').encode()


def test_errors_are_streamed_in_bounded_parts_and_land_whole(s3):
    # Given 12+ MiB of error lines arriving in small chunks
    expected = b"".join(lines(60_000))
    # When streamed with 5 MiB parts
    copied = stream_to_s3(lines(60_000), s3, BUCKET, "results/a.errors.jsonl", part_bytes=5 * MIB)
    # Then the object is the exact bytes, in three parts, with the rows counted
    etag = s3.head_object(Bucket=BUCKET, Key="results/a.errors.jsonl")["ETag"]
    assert etag.strip('"').endswith("-3"), "a multipart object of three parts"
    assert s3.get_object(Bucket=BUCKET, Key="results/a.errors.jsonl")["Body"].read() == expected
    assert (copied.rows, copied.bytes) == (60_000, len(expected))


def test_a_last_line_without_newline_counts_and_an_empty_file_is_written(s3):
    assert stream_to_s3(iter([b'{"a":1}\n{"b"', b":2}"]), s3, BUCKET, "k1").rows == 2
    assert stream_to_s3(iter([]), s3, BUCKET, "k2").rows == 0
    assert s3.get_object(Bucket=BUCKET, Key="k2")["Body"].read() == b""


def test_a_failed_stream_leaves_no_object_and_no_pending_upload(s3):
    def broken() -> Iterator[bytes]:
        yield b"x" * (6 * MIB)
        raise ConnectionError("lost")

    with pytest.raises(ConnectionError):
        stream_to_s3(broken(), s3, BUCKET, "results/b.errors.jsonl", part_bytes=5 * MIB)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_an_input_that_failed_before_preparation_still_gets_a_summary(s3):
    # Given a raw hand-off with a bad field, caught at Prepare
    s3.put_object(Bucket=BUCKET, Key="incoming/contacts/a.csv", Body=b"email\n")
    document = {
        "jobId": "imp_9",
        "source": {"bucket": BUCKET, "key": "incoming/contacts/a.csv", "size": 6, "format": "xlsx"},
        "error": {
            "Error": "ValidationError",
            "Cause": '{"errorType": "ValidationError", "errorMessage": "format: bad"}',
        },
    }
    deps = TaskDeps(s3=s3, client=None, now=lambda: datetime(2026, 1, 1, tzinfo=UTC))  # type: ignore[arg-type]
    # When the failure is reported
    report = report_failure(document, deps)
    # Then the summary is where the user looks, says failed at prepare, and the source is tagged
    assert report.summary_key == "results/incoming/contacts/a.csv.json"
    assert report.summary["outcome"] == "failed"
    assert report.summary["error"] == {
        "type": "ValidationError",
        "message": "format: bad",
        "stage": "prepare",
    }
    tags = s3.get_object_tagging(Bucket=BUCKET, Key="incoming/contacts/a.csv")["TagSet"]
    assert {"Key": "experiture-status", "Value": "failed"} in tags


def test_describe_error_keeps_type_and_message_never_the_stack_trace():
    described = describe_error(
        {
            "Error": "ServerError",
            "Cause": '{"errorType": "ServerError", "errorMessage": "503 X.Y: down", "stackTrace": ["secret"]}',
        }
    )
    assert described == {"type": "ServerError", "message": "503 X.Y: down", "status": 503, "code": "X.Y"}
    assert describe_error({"Error": "States.Timeout", "Cause": "Task timed out"}) == {
        "type": "States.Timeout",
        "message": "Task timed out",
    }


T0 = datetime(2026, 1, 1, tzinfo=UTC)
COMPLETED_JOB = {"state": "completed", "readRows": 5, "validRows": 3, "rowsImported": 3, "rowsRejected": 2}


def completed_state(s3) -> ImportState:
    """A run whose poll saw the job COMPLETED (next: collect), its source in the bucket."""
    s3.put_object(Bucket=BUCKET, Key="incoming/contacts/done.csv", Body=b"email\n")
    run = {
        "jobId": "imp_7",
        "objectName": "contacts",
        "source": {"bucket": BUCKET, "key": "incoming/contacts/done.csv", "size": 6, "format": "csv"},
    }
    state = prepare(run, "exec-7", T0.isoformat(), T0)
    state.progress.next = "collect"
    state.job = dict(COMPLETED_JOB)
    return state


def answer_put_object_with(s3, status: int, code: str) -> None:
    """S3 answers PutObject with ``status``/``code``, as it would after botocore's retries ran out."""

    def answer(**_: object) -> tuple[object, dict[str, object]]:
        http = type("Http", (), {"status_code": status, "headers": {}})()
        return http, {
            "Error": {"Code": code, "Message": f"{code} from S3"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }

    s3.meta.events.register("before-call.s3.PutObject", answer)


def test_s3_throttling_while_writing_the_summary_is_a_named_transient_error(s3):
    # Given a completed job and S3 answering SlowDown to the summary's PutObject
    state = completed_state(s3)
    state.job = {**COMPLETED_JOB, "rowsRejected": 0, "validRows": 5, "rowsImported": 5}
    answer_put_object_with(s3, 503, "SlowDown")
    deps = TaskDeps(s3=s3, client=None, now=lambda: T0)  # type: ignore[arg-type]

    # When collect runs, Then it raises the error the state machine retries by name
    with pytest.raises(StorageUnavailableError, match="SlowDown"):
        collect(state, deps)


def test_a_permanent_s3_refusal_is_not_retried_as_transient(s3):
    # Given S3 refusing the summary's PutObject for good (no permission)
    state = completed_state(s3)
    state.job = {**COMPLETED_JOB, "rowsRejected": 0}
    answer_put_object_with(s3, 403, "AccessDenied")
    deps = TaskDeps(s3=s3, client=None, now=lambda: T0)  # type: ignore[arg-type]

    # When collect runs, Then the ClientError stays what it is (the run ends with a summary attempt)
    with pytest.raises(ClientError) as caught:
        collect(state, deps)
    assert not isinstance(caught.value, StorageUnavailableError)


def test_a_collect_failure_after_the_job_completed_is_not_summarised_as_a_failed_import(s3):
    # Given the job COMPLETED, and Collect failed for good copying its errors file
    document = completed_state(s3).wire()
    document["error"] = {
        "Error": "NotFoundError",
        "Cause": '{"errorType": "NotFoundError", "errorMessage": "404 CDP_ETL.NOT_FOUND: no errors file"}',
    }
    deps = TaskDeps(s3=s3, client=None, now=lambda: T0)  # type: ignore[arg-type]

    # When the failure is reported
    report = report_failure(document, deps)

    # Then the summary says the rows are imported and only the report is incomplete, with the error
    summary = report.summary
    assert summary["outcome"] == "completed_report_incomplete"
    assert summary["metrics"]["rowsImported"] == 3 and summary["metrics"]["rowsRejected"] == 2
    assert summary["error"]["stage"] == "collect" and summary["error"]["status"] == 404
    assert "completed in the CDP" in summary["message"] and "no errors file" in summary["message"]
    stored = s3.get_object(Bucket=BUCKET, Key="results/incoming/contacts/done.csv.json")["Body"].read()
    assert b"completed_report_incomplete" in stored
    tags = s3.get_object_tagging(Bucket=BUCKET, Key="incoming/contacts/done.csv")["TagSet"]
    assert {"Key": "experiture-status", "Value": "completed_report_incomplete"} in tags


def test_a_run_that_waited_too_long_for_a_slot_says_so_and_that_the_job_was_never_started(s3):
    # Given a run whose Enqueue task timed out (queueMaxSeconds spent in the queue)
    state = completed_state(s3)
    state.job = None
    state.progress.next = "enqueue"
    state.progress.start_attempts = 4
    state.progress.last_refusal = "429 CDP_ETL.IMPORT.CONCURRENCY_LIMIT"
    document = state.wire()
    document["error"] = {"Error": "States.Timeout", "Cause": ""}

    # When the failure is reported
    summary = report_failure(document, TaskDeps(s3=s3, client=None, now=lambda: T0)).summary  # type: ignore[arg-type]

    # Then the summary names the queue, the limit and the job left ready, and the attempts made
    assert summary["outcome"] == "failed" and summary["error"]["stage"] == "queue"
    assert (
        "waited for a start slot longer than" in summary["message"] and "never started" in summary["message"]
    )
    assert summary["scheduling"]["startAttempts"] == 4
    assert summary["scheduling"]["lastRefusal"] == "429 CDP_ETL.IMPORT.CONCURRENCY_LIMIT"


def test_a_deadline_during_an_outage_times_out_with_the_last_state_seen(s3):
    # Given a run polled while the job was running, then through an outage until the deadline
    state = completed_state(s3)
    state.job = {**COMPLETED_JOB, "state": "running"}
    state.progress.next = "timed_out"
    state.progress.outage_started_at = T0
    state.progress.failed_polls = 12

    # When the ending is reported five minutes later
    later = T0.replace(minute=5)
    summary = report_failure(state.wire(), TaskDeps(s3=s3, client=None, now=lambda: later)).summary  # type: ignore[arg-type]

    # Then it is timed_out (never failed): the job may still finish; the outage is counted
    assert summary["outcome"] == "timed_out"
    assert "last state seen 'running'" in summary["message"] and "1 polling outage" in summary["message"]
    assert summary["pollOutages"] == {"count": 1, "longestSeconds": 300.0, "failedPolls": 12}
