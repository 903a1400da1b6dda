"""Collect and failure summaries: the errors file streamed in parts, summaries that explain."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws

from experiture_ingest.files.collect import describe_error, report_failure, stream_to_s3
from experiture_ingest.files.import_tasks import TaskDeps

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
