"""The deployed handlers on the sample events in events/ (moto SQS/S3, a scripted API)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import httpx
import pytest
from moto import mock_aws

import functions.record_writer.app as writer_app
from cli.streams_local import FakeContext
from experiture_ingest.client import BearerToken, ExperitureClient, RetryPolicy
from experiture_ingest.streams.settings import StreamSettings
from experiture_ingest.streams.wiring import build_writer

EVENTS = Path(__file__).resolve().parents[3] / "events"
SCHEMAS = {
    "contacts": {
        "primaryKey": "email",
        "fields": [
            {"name": "email", "type": "string", "required": True},
            {"name": "tier", "type": "string"},
            {"name": "first_name", "type": "string"},
            {"name": "age", "type": "integer"},
        ],
    },
    "events": {
        "primaryKey": "event_id",
        "fields": [
            {"name": "event_id", "type": "string", "required": True},
            {"name": "event_type", "type": "string", "required": True},
            {"name": "occurred_at", "type": "datetime", "required": True},
        ],
    },
}


def api(request: httpx.Request) -> httpx.Response:
    obj = request.url.path.split("/")[-1 if request.method == "GET" else -2]
    if request.method == "GET":
        return httpx.Response(200, json={"success": True, "data": SCHEMAS[obj], "correlationId": "c"})
    n = len(json.loads(request.content)["records"])
    return httpx.Response(
        202,
        json={
            "success": True,
            "correlationId": "c",
            "data": {"operation": "x", "objectName": obj, "jobId": f"job-{obj}", "acceptedRecords": n},
        },
    )


@pytest.fixture
def wired(monkeypatch):
    for k, v in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        sqs, s3 = boto3.client("sqs"), boto3.client("s3")
        s3.create_bucket(Bucket="kept")
        settings = StreamSettings(
            DEAD_LETTER_QUEUE_URL=sqs.create_queue(QueueName="dlq")["QueueUrl"],
            SETTLE_QUEUE_URL=sqs.create_queue(QueueName="settle")["QueueUrl"],
            PAYLOAD_BUCKET="kept",
        )
        client = ExperitureClient(
            "https://api.test/public/v1",
            BearerToken("t"),
            transport=httpx.MockTransport(api),
            retry=RetryPolicy(max_attempts=1),
        )
        writer_app.writer.cache_clear()
        monkeypatch.setattr(writer_app, "writer", lambda: build_writer(settings, client, sqs, s3))
        yield sqs, settings


@pytest.mark.parametrize("name", ["sqs_record_batch.json", "sqs_record_batch_fifo.json"])
def test_sample_events_are_written_with_bad_records_dead_lettered(wired, name):
    sqs, settings = wired
    # Given a sample event, when the handler runs, then nothing is returned for retry
    event = json.loads((EVENTS / name).read_text())
    assert writer_app.handler(event, FakeContext()) == {"batchItemFailures": []}
    # And every accepted job has a settle ticket; the bad record (if any) is in the DLQ with its reason
    depth = sqs.get_queue_attributes(QueueUrl=settings.settle_queue_url, AttributeNames=["All"])["Attributes"]
    assert int(depth["ApproximateNumberOfMessagesDelayed"]) >= 1
    dead = sqs.receive_message(QueueUrl=settings.dead_letter_queue_url, MessageAttributeNames=["All"])
    codes = [m["MessageAttributes"]["experiture.errorCode"]["StringValue"] for m in dead.get("Messages", [])]
    assert codes == (["VALIDATION_TYPE_MISMATCH"] if name == "sqs_record_batch.json" else [])


def test_missing_settings_fail_with_the_variable_name(monkeypatch):
    from experiture_ingest.settings import SettingsError

    with pytest.raises(SettingsError, match="PAYLOAD_BUCKET: missing"):
        StreamSettings.from_env({"DEAD_LETTER_QUEUE_URL": "u", "SETTLE_QUEUE_URL": "s"})
    with pytest.raises(SettingsError, match="STREAM_DEFAULT_TARGET"):
        StreamSettings.from_env(
            {
                "DEAD_LETTER_QUEUE_URL": "u",
                "SETTLE_QUEUE_URL": "s",
                "PAYLOAD_BUCKET": "kept",
                "STREAM_DEFAULT_TARGET": "contacts",
            }
        )


def test_cli_send_and_replay(monkeypatch, tmp_path, capsys):
    from cli.main import main

    for k, v in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        sqs = boto3.client("sqs")
        queue = sqs.create_queue(QueueName="q")["QueueUrl"]
        dlq = sqs.create_queue(QueueName="d")["QueueUrl"]
        source = tmp_path / "r.jsonl"
        source.write_text("\n".join(json.dumps({"email": f"{i}@x.io"}) for i in range(25)) + "\n")
        # Given a JSONL file, when sent, then one envelope message holds all 25 records
        assert (
            main(
                [
                    "send",
                    str(source),
                    "--queue-url",
                    queue,
                    "--object",
                    "contacts",
                    "--operation",
                    "upsert",
                    "--match-key",
                    "email",
                ]
            )
            == 0
        )
        [message] = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
        assert len(json.loads(message["Body"])["records"]) == 25
        # Given a dead letter with reasons, when replayed, then it is back on the queue without them
        sqs.send_message(
            QueueUrl=dlq,
            MessageBody=message["Body"],
            MessageAttributes={"experiture.errorCode": {"DataType": "String", "StringValue": "X"}},
        )
        assert main(["replay-dlq", "--dlq-url", dlq, "--queue-url", queue]) == 0
        assert "moved 1 message" in capsys.readouterr().out
        back = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        bodies = [m for m in back["Messages"] if "MessageAttributes" not in m]
        assert bodies and bodies[0]["Body"] == message["Body"]
        # A bad line is a one-line error, not a traceback
        source.write_text('{"email": "a@x.io"}\nnot json\n')
        assert (
            main(["send", str(source), "--queue-url", queue, "--object", "c", "--operation", "append"]) == 3
        )
        assert "line 2: not JSON" in capsys.readouterr().err
