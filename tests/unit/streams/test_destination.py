"""The writer and the settler through the Destination interface alone: a destination with tighter
limits, another body and its own checks gets every record once, in requests it accepts."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import pytest
from moto import mock_aws

from experiture_ingest.streams.checking import InboundMessage
from experiture_ingest.streams.contract import Target
from experiture_ingest.streams.deadletters import DeadLetterQueue
from experiture_ingest.streams.destination import Accepted, DestinationError, JobState, RequestLimits
from experiture_ingest.streams.ledger import MessageLedger
from experiture_ingest.streams.settle import PayloadStore, SettleQueue, Settler, SettleTicket
from experiture_ingest.streams.tracking import Tracker
from experiture_ingest.streams.writer import StreamWriter


class Tiny:
    """A peer API: 3 records and 120 bytes a request, 4 fields a record, upsert only, a bare JSON list
    as the body, records need an "id". Like a real API it replays a key's first answer."""

    name = "tiny"
    limits = RequestLimits(max_records=3, max_bytes=120, max_fields=4)
    operations = frozenset({"upsert"})
    call_seconds = 10.0

    def __init__(self, lose: int = 0) -> None:
        self.stored: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.answers: dict[str, Accepted] = {}
        self.lose = lose  # answers to lose (the work is done, the caller hears nothing)

    def frame(self, target: Target) -> tuple[bytes, bytes]:
        return b"[", b"]"

    def checker(self, target: Target, *, fresh: bool = False):
        def check(record: Mapping[str, Any]) -> tuple[str, str] | None:
            return None if "id" in record else ("NO_ID", "id: missing")

        return check

    def send_batch(self, target: Target, body: bytes, idempotency_key: str) -> Accepted:
        self.bodies.append(body)
        assert len(body) <= self.limits.max_bytes and len(json.loads(body)) <= self.limits.max_records
        if idempotency_key not in self.answers:
            self.stored.extend(json.loads(body))
            self.answers[idempotency_key] = Accepted(f"job-{len(self.answers)}")
        if self.lose:
            self.lose -= 1
            raise DestinationError("CONNECTION_LOST", "the answer was lost", retryable=True)
        return self.answers[idempotency_key]

    def job_state(self, object_name: str, job_id: str) -> JobState:
        return JobState(job_id, "done", finished=True)


@pytest.fixture
def aws(monkeypatch) -> Iterator[tuple[Any, ...]]:
    for k, v in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        sqs, s3, db = boto3.client("sqs"), boto3.client("s3"), boto3.client("dynamodb")
        s3.create_bucket(Bucket="kept")
        db.create_table(
            TableName="ledger",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
        settle = sqs.create_queue(QueueName="settle")["QueueUrl"]
        yield sqs, s3, db, dlq, settle


def _writer(aws, destination: Tiny) -> StreamWriter:
    sqs, s3, db, dlq, settle = aws
    tracker = Tracker(
        PayloadStore(s3, "kept"), SettleQueue(sqs, settle, (0, 1, 0)), MessageLedger(db, "ledger")
    )
    return StreamWriter(destination, tracker, DeadLetterQueue(sqs, dlq, s3, "kept"))


def _messages() -> list[InboundMessage]:
    upserts = {
        "object": "things",
        "operation": "upsert",
        "records": [{"id": i, "n": "x" * 10} for i in range(7)],
    }
    mixed = {
        "object": "things",
        "operation": "upsert",
        "records": [{"n": "no id"}, {"id": 7, "a": 1, "b": 2, "c": 3, "d": 4}, {"id": 8}],
    }
    append = {"object": "things", "operation": "append", "record": {"id": 9}}
    return [InboundMessage(f"m{i}", json.dumps(b)) for i, b in enumerate([upserts, mixed, append])]


def _letters(aws) -> dict[str, list[Any]]:
    sqs, _, _, dlq, _ = aws
    got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
    return {
        m["MessageAttributes"]["experiture.errorCode"]["StringValue"]: json.loads(m["Body"])["records"]
        for m in got.get("Messages", [])
    }


def test_a_destination_with_its_own_limits_body_and_checks_gets_every_record_once(aws):
    tiny = Tiny()
    # When a batch is written through it
    report = _writer(aws, tiny).write(_messages(), fifo=False)
    # Then nothing goes back, every good record is stored once, in requests within its limits and body
    assert report.retry == set()
    assert sorted(r["id"] for r in tiny.stored) == [0, 1, 2, 3, 4, 5, 6, 8]
    assert all(body.startswith(b"[") for body in tiny.bodies)
    # (the 7-record message went out in parts of at most 3 records, a message never split otherwise)
    assert len(tiny.bodies) >= 3
    # And what it cannot take is dead-lettered with its reasons: its own check, its field limit, its operations
    assert _letters(aws) == {
        "NO_ID": [{"n": "no id"}],
        "STREAM.TOO_MANY_FIELDS": [{"id": 7, "a": 1, "b": 2, "c": 3, "d": 4}],
        "STREAM.CONTRACT_INVALID": [{"id": 9}],
    }
    # And the settler, through the same interface, settles every job and drops the kept payloads
    sqs, s3, _, _, settle = aws
    tickets = sqs.receive_message(QueueUrl=settle, MaxNumberOfMessages=10)["Messages"]
    settler = Settler(tiny, PayloadStore(s3, "kept"), SettleQueue(sqs, settle), DeadLetterQueue(sqs, aws[3]))
    outcomes = [settler.settle(SettleTicket.model_validate_json(t["Body"])).outcome for t in tickets]
    assert outcomes and set(outcomes) == {"completed"}
    assert s3.list_objects_v2(Bucket="kept", Prefix="payloads/").get("KeyCount", 0) == 0


def test_a_lost_answer_for_one_part_of_a_split_message_writes_nothing_twice(aws):
    # Given the answer to the first request is lost (the destination took it)
    tiny = Tiny(lose=1)
    messages = _messages()[:1]  # 7 records: three parts
    # When the message is written, comes back, and is written again
    first = _writer(aws, tiny).write(messages, fifo=False)
    assert first.retry == {"m0"}
    again = _writer(aws, tiny).write(messages, fifo=False)
    # Then it is done, the lost part was sent again with its key (replayed), the others were skipped
    assert again.retry == set() and again.records_written == 7
    assert sorted(r["id"] for r in tiny.stored) == list(range(7))
    assert again.requests_resent == 1
