"""A batch job that never settles is not checked forever: past its age limit it is reported and
its messages dead-lettered (nothing lost)."""

from __future__ import annotations

import json

import httpx

from experiture_ingest.client import BearerToken, ExperitureClient, RetryPolicy, encode_json
from experiture_ingest.streams.contract import Target
from experiture_ingest.streams.deadletters import DeadLetterQueue
from experiture_ingest.streams.experiture import ExperitureRecordsApi
from experiture_ingest.streams.packing import records_frame
from experiture_ingest.streams.settle import (
    ManifestEntry,
    PayloadStore,
    SettleQueue,
    Settler,
    SettleTicket,
    payload_key,
)

HOUR = 3600.0
TARGET = Target.parse("events:append")


def _api(request: httpx.Request) -> httpx.Response:
    # The job is accepted and never moves on
    job = {"jobId": request.url.path.rsplit("/", 1)[-1], "state": "processing"}
    return httpx.Response(200, json={"success": True, "data": job, "correlationId": "c-stuck"})


def _settler(aws, now: float) -> Settler:
    sqs, s3, dlq, settle = aws
    client = ExperitureClient(
        "https://api.test/public/v1",
        BearerToken("t"),
        transport=httpx.MockTransport(_api),
        retry=RetryPolicy(max_attempts=1),
        sleep=lambda s: None,
    )
    return Settler(
        ExperitureRecordsApi(client),
        PayloadStore(s3, "kept"),
        SettleQueue(sqs, settle, (0, 1, 0)),
        DeadLetterQueue(sqs, dlq, s3, "kept"),
        clock=lambda: now,
    )


def _ticket(aws, accepted_at: float | None) -> SettleTicket:
    _, s3, _, _ = aws
    records = [{"event_id": f"e{i}", "event_type": "click"} for i in range(3)]
    key = "3f1c2a4e-0000-4000-8000-000000000001"
    location = payload_key(TARGET.object, key)
    manifest = [ManifestEntry("m1", 2), ManifestEntry("m2", 1)]
    encoded = [encode_json(r) for r in records]
    PayloadStore(s3, "kept").put(
        location, TARGET, key, manifest, frame=records_frame(TARGET), encoded_records=encoded
    )
    return SettleTicket(
        job_id="job-1",
        object="events",
        payload_key=location,
        idempotency_key=key,
        records=3,
        checks=40,
        accepted_at=accepted_at,
    )


def _messages(sqs, url: str) -> list[dict]:
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
    return got.get("Messages", [])


def test_a_job_still_running_after_the_age_limit_is_reported_and_its_messages_dead_lettered(aws):
    sqs, s3, dlq, settle = aws
    # Given a ticket for a job accepted 6 h and 1 s ago that the API still says is processing
    ticket = _ticket(aws, accepted_at=1_000.0)
    # When it is checked
    settled = _settler(aws, now=1_000.0 + 6 * HOUR + 1).settle(ticket)
    # Then the checks stop (no new ticket) ...
    assert settled.outcome == "stuck"
    assert _messages(sqs, settle) == []
    # ... each message's records are in the DLQ with STREAM.JOB_STUCK and the reason
    letters = {
        m["MessageAttributes"]["experiture.sourceMessageId"]["StringValue"]: m for m in _messages(sqs, dlq)
    }
    assert set(letters) == {"m1", "m2"}
    assert [len(json.loads(m["Body"])["records"]) for m in (letters["m1"], letters["m2"])] == [2, 1]
    for letter in letters.values():
        attributes = {k: v["StringValue"] for k, v in letter["MessageAttributes"].items()}
        assert attributes["experiture.errorCode"] == "STREAM.JOB_STUCK"
        assert "still processing" in attributes["experiture.errorMessage"]
        assert attributes["experiture.jobId"] == "job-1"
    # ... and a report names the job, its state and the kept payload
    report = json.loads(s3.get_object(Bucket="kept", Key=settled.report_key)["Body"].read())
    assert report["jobId"] == "job-1" and report["state"] == "processing"
    assert report["payload"] == f"s3://kept/{ticket.payload_key}"


def test_a_job_within_the_age_limit_is_checked_again_and_keeps_its_acceptance_time(aws):
    sqs, _, dlq, settle = aws
    # Given a ticket for a job accepted 5 h ago, and one from before tickets carried the time
    young = _ticket(aws, accepted_at=1_000.0)
    unknown = _ticket(aws, accepted_at=None)
    # When they are checked
    settler = _settler(aws, now=1_000.0 + 5 * HOUR)
    assert settler.settle(young).outcome == "pending"
    assert settler.settle(unknown).outcome == "pending"
    # Then both are sent back for a later check, aged from when they were accepted (or first seen)
    again = sorted(SettleTicket.model_validate_json(m["Body"]).accepted_at for m in _messages(sqs, settle))
    assert again == [1_000.0, 1_000.0 + 5 * HOUR]
    assert _messages(sqs, dlq) == []
