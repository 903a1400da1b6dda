"""Near the end of an invocation nothing starts that cannot finish; unfinished work goes back to SQS."""

from __future__ import annotations

import httpx
import pytest

from experiture_ingest.client import BearerToken, ExperitureClient, RetryPolicy, encode_json
from experiture_ingest.streams.contract import Target
from experiture_ingest.streams.deadletters import DeadLetterQueue
from experiture_ingest.streams.experiture import ExperitureRecordsApi
from experiture_ingest.streams.packing import records_frame
from experiture_ingest.streams.settle import (
    ManifestEntry,
    OutOfTimeError,
    PayloadStore,
    SettleQueue,
    Settler,
    SettleTicket,
    payload_key,
)
from experiture_ingest.streams.timing import Budget

TARGET = Target.parse("events:append")


class FailedJobs:
    """Every job is failed; counts the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        job = {"jobId": "job-1", "state": "failed", "errorMessage": "merge worker lost"}
        return httpx.Response(200, json={"success": True, "data": job, "correlationId": "c"})


def _settler(aws, api: FailedJobs) -> Settler:
    sqs, s3, dlq, settle = aws
    client = ExperitureClient(
        "https://api.test/public/v1",
        BearerToken("t"),
        transport=httpx.MockTransport(api),
        retry=RetryPolicy(max_attempts=1),
    )
    return Settler(
        ExperitureRecordsApi(client),
        PayloadStore(s3, "kept"),
        SettleQueue(sqs, settle, (0, 1, 0)),
        DeadLetterQueue(sqs, dlq, s3, "kept"),
        max_redrives=0,
    )


def _ticket(aws, messages: int) -> SettleTicket:
    _, s3, _, _ = aws
    records = [{"event_id": f"e{i}", "event_type": "click"} for i in range(messages)]
    key = "3f1c2a4e-0000-4000-8000-000000000002"
    location = payload_key(TARGET.object, key)
    manifest = [ManifestEntry(f"m{i}", 1) for i in range(messages)]
    PayloadStore(s3, "kept").put(
        location,
        TARGET,
        key,
        manifest,
        frame=records_frame(TARGET),
        encoded_records=[encode_json(r) for r in records],
    )
    return SettleTicket(
        job_id="job-1", object="events", payload_key=location, idempotency_key=key, records=messages
    )


def _dlq_count(aws) -> int:
    sqs, _, dlq, _ = aws
    attrs = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def test_a_ticket_whose_worst_case_does_not_fit_is_not_started(aws):
    # Given a settler whose ticket may take 2 API calls (95 s each) and 3 AWS calls (15 s each)
    api = FailedJobs()
    settler = _settler(aws, api)
    assert settler.ticket_seconds == 2 * 95 + 3 * 15
    # When a ticket comes with a second less than that left
    with pytest.raises(OutOfTimeError):
        settler.settle(_ticket(aws, 3), Budget(lambda: (settler.ticket_seconds - 1) * 1000))
    # Then nothing was called and nothing dead-lettered: the ticket goes back to SQS whole
    assert api.calls == [] and _dlq_count(aws) == 0


def test_a_dead_letter_fan_out_that_runs_out_of_time_stops_and_the_ticket_comes_back(aws):
    # Given a failed job holding 35 messages (4 SendMessageBatch calls) and a clock that loses 60 s per
    # call it is asked about, starting with just enough for the ticket
    api = FailedJobs()
    settler = _settler(aws, api)
    left = [settler.ticket_seconds + 60.0]

    def remaining_ms() -> int:
        left[0] -= 60
        return int(left[0] * 1000)

    ticket = _ticket(aws, 35)
    # When it is settled, the fan-out stops when the next SQS call no longer fits
    with pytest.raises(OutOfTimeError, match="dead letters not sent in time"):
        settler.settle(ticket, Budget(remaining_ms))
    sent = _dlq_count(aws)
    assert 0 < sent < 35
    # And the payload is not marked settled, so the returned ticket does the rest
    _, s3, _, _ = aws
    tags = s3.get_object_tagging(Bucket="kept", Key=ticket.payload_key)["TagSet"]
    assert tags == [{"Key": "experiture-settled", "Value": "pending"}]
    # When the ticket comes back with time to spare, every message is dead-lettered (some twice; none lost)
    assert settler.settle(ticket, Budget(None)).outcome == "dead-lettered"
    assert _dlq_count(aws) == sent + 35


def test_the_settler_handler_returns_tickets_it_has_no_time_for(aws, monkeypatch):
    import functions.batch_settler.app as settler_app

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    api = FailedJobs()
    settler = _settler(aws, api)
    monkeypatch.setattr(settler_app, "settler", lambda: settler)
    ticket = _ticket(aws, 2)
    record = {
        "messageId": "t1",
        "receiptHandle": "r",
        "body": ticket.model_dump_json(),
        "attributes": {},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:settle",
        "awsRegion": "us-east-1",
    }

    class Context:
        function_name, aws_request_id, invoked_function_arn, memory_limit_in_mb = "s", "r", "arn", 512

        def get_remaining_time_in_millis(self) -> int:
            return 30_000

    # When the handler gets a ticket with 30 s left
    response = settler_app.handler({"Records": [record]}, Context())
    # Then it is returned unstarted
    assert response == {"batchItemFailures": [{"itemIdentifier": "t1"}]}
    assert api.calls == [] and _dlq_count(aws) == 0
