"""The writer through Powertools' processors, against a scripted API and moto SQS/S3."""

from __future__ import annotations

import json

import httpx

from experiture_ingest.client import BearerToken, ExperitureClient, RetryPolicy
from experiture_ingest.streams.deadletters import DeadLetterQueue, replay
from experiture_ingest.streams.experiture import ExperitureRecordsApi
from experiture_ingest.streams.processing import write_event
from experiture_ingest.streams.settle import PayloadStore, SettleQueue
from experiture_ingest.streams.tracking import Tracker
from experiture_ingest.streams.writer import StreamWriter

SCHEMA = {
    "objectName": "contacts",
    "primaryKey": "email",
    "fields": [{"name": "email", "type": "string", "required": True}, {"name": "tier", "type": "string"}],
}


class Api:
    """Answers like the Records API; ``refuse(body) -> (status, error) | None`` scripts refusals."""

    def __init__(self, refuse=None):
        self.refuse = refuse or (lambda body: None)
        self.posts: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"success": True, "data": SCHEMA, "correlationId": "c-get"})
        body = json.loads(request.content)
        self.posts.append(body)
        refused = self.refuse(body)
        if refused is not None:
            status, error = refused
            return httpx.Response(status, json={"success": False, "error": error, "correlationId": "c-err"})
        n = len(self.posts)
        return httpx.Response(
            202,
            json={
                "success": True,
                "correlationId": f"c-{n}",
                "data": {
                    "operation": "upsert-batch",
                    "objectName": "contacts",
                    "jobId": f"job-{n}",
                    "acceptedRecords": len(body["records"]),
                },
            },
        )


def _client(api) -> ExperitureClient:
    return ExperitureClient(
        "https://api.test/public/v1",
        BearerToken("t"),
        transport=httpx.MockTransport(api),
        retry=RetryPolicy(max_attempts=1),
        sleep=lambda s: None,
    )


def _writer(aws, api, bucket: str = "kept") -> StreamWriter:
    """A writer against ``api`` (an :class:`Api` or any httpx handler) and moto SQS/S3."""
    sqs, s3, dlq, settle = aws
    client = _client(api)
    return StreamWriter(
        ExperitureRecordsApi(client),
        Tracker(PayloadStore(s3, bucket), SettleQueue(sqs, settle), None),
        DeadLetterQueue(sqs, dlq, s3, "kept"),
    )


def _event(bodies: list[dict], fifo: bool = False) -> dict:
    arn = "arn:aws:sqs:us-east-1:123456789012:records" + (".fifo" if fifo else "")
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": "r",
                "body": json.dumps(b),
                "attributes": {"MessageGroupId": "g"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            }
            for i, b in enumerate(bodies)
        ]
    }


def _run(writer: StreamWriter, event: dict, context=None) -> list[str]:
    response, _ = write_event(writer, event, context)
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def _dlq(aws) -> list[dict]:
    sqs, _, dlq, _ = aws
    got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
    return [
        {"body": json.loads(m["Body"]), "code": m["MessageAttributes"]["experiture.errorCode"]["StringValue"]}
        for m in got.get("Messages", [])
    ]


def _msg(*emails: str, obj: str = "contacts") -> dict:
    return {"object": obj, "operation": "upsert", "records": [{"email": e} for e in emails]}


def test_transient_failure_returns_only_the_messages_of_that_request(aws):
    # Given two groups, where the API answers 500 for the "leads" group only
    api = Api(
        lambda body: (
            (500, {"code": "CDP_ETL.INTERNAL_ERROR", "message": "down"})
            if body["records"][0]["email"].startswith("l")
            else None
        )
    )
    event = _event([_msg("a1"), _msg("l1", obj="leads"), _msg("a2"), _msg("l2", obj="leads")])
    # When the batch is processed
    failures = _run(_writer(aws, api), event)
    # Then only the leads messages are returned for retry, and nothing is dead-lettered
    assert failures == ["m1", "m3"]
    assert _dlq(aws) == []


def test_fifo_stops_at_the_first_failure_and_returns_the_rest(aws):
    # Given a FIFO batch a1, l1 (fails transiently), a2: FIFO packs consecutive runs in order
    api = Api(lambda body: (503, {"message": "busy"}) if body["records"][0]["email"] == "l1" else None)
    event = _event([_msg("a1"), _msg("l1", obj="leads"), _msg("a2")], fifo=True)
    # When processed
    failures = _run(_writer(aws, api), event)
    # Then a1 was written, l1 and everything after it is returned, and a2 was never sent
    assert failures == ["m1", "m2"]
    assert [p["records"] for p in api.posts] == [[{"email": "a1"}], [{"email": "l1"}]]


def test_a_refusal_that_names_no_record_is_bisected_down_to_the_bad_message(aws):
    # Given the API refuses (400, no path) any request that holds "bad"
    def refuse(body):
        if any(r["email"] == "bad" for r in body["records"]):
            return 400, {"code": "CDP_ETL.VALIDATION.REQUEST_INVALID", "message": "something is wrong"}
        return None

    api = Api(refuse)
    event = _event([_msg("a"), _msg("b"), _msg("bad"), _msg("c"), _msg("d")])
    # When processed
    failures = _run(_writer(aws, api), event)
    # Then no message is retried, the bad message alone is dead-lettered, the other four were accepted
    assert failures == []
    [letter] = _dlq(aws)
    assert letter["code"] == "CDP_ETL.VALIDATION.REQUEST_INVALID"
    assert letter["body"]["records"] == [{"email": "bad"}]
    accepted = sorted(
        r["email"]
        for p in api.posts
        if not any(x["email"] == "bad" for x in p["records"])
        for r in p["records"]
    )
    assert accepted == ["a", "b", "c", "d"]


def test_a_refusal_naming_a_record_splits_out_that_record_only(aws):
    # Given the API refuses the record "x2" by index, in a message that also holds x1 and x3
    def refuse(body):
        emails = [r["email"] for r in body["records"]]
        if "x2" in emails:
            i = emails.index("x2")
            return 422, {
                "code": "CDP_ETL.VALIDATION.SCHEMA_MISMATCH",
                "message": f"records[{i}].email: no",
                "details": {"path": f"records[{i}].email"},
            }
        return None

    api = Api(refuse)
    failures = _run(_writer(aws, api), _event([_msg("w1"), _msg("x1", "x2", "x3")]))
    # Then x2 alone is dead-lettered and the second request carried everything else
    assert failures == []
    assert [r["email"] for r in api.posts[-1]["records"]] == ["w1", "x1", "x3"]
    [letter] = _dlq(aws)
    assert letter["body"]["records"] == [{"email": "x2"}]


def test_accepted_jobs_keep_their_payload_and_get_a_settle_ticket(aws):
    sqs, s3, _, settle = aws
    failures = _run(_writer(aws, Api()), _event([_msg("a"), _msg("b")]))
    assert failures == []
    # Then the ticket waits the documented first 2 s before its first check
    delayed = sqs.get_queue_attributes(QueueUrl=settle, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert delayed["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"
    assert "Messages" not in sqs.receive_message(QueueUrl=settle)
    import time

    time.sleep(2.1)
    [ticket] = sqs.receive_message(QueueUrl=settle, MaxNumberOfMessages=10)["Messages"]
    ticket_doc = json.loads(ticket["Body"])
    kept = json.loads(s3.get_object(Bucket="kept", Key=ticket_doc["payload_key"])["Body"].read())
    assert ticket_doc["job_id"] == "job-1" and ticket_doc["records"] == 2
    assert [m["messageId"] for m in kept["messages"]] == ["m0", "m1"]
    assert kept["records"] == [{"email": "a"}, {"email": "b"}]


def _refuse_bad_by_index(body):
    emails = [r["email"] for r in body["records"]]
    bad = [i for i, e in enumerate(emails) if e.startswith("bad")]
    if bad:
        return 422, {
            "code": "CDP_ETL.VALIDATION.SCHEMA_MISMATCH",
            "message": f"records[{bad[0]}].email: refused",
            "details": {"path": f"records[{bad[0]}].email"},
        }
    return None


def test_refusals_the_fresh_schema_does_not_explain_fall_back_to_bisection(aws):
    # Given the API refuses records by index for a reason its schema does not show (the re-fetched
    # schema allows them), 4 bad messages among 6 good ones
    api = Api(_refuse_bad_by_index)
    emails = ["g0", "bad0", "g1", "bad1", "g2", "bad2", "g3", "bad3", "g4", "g5"]
    # When processed
    failures = _run(_writer(aws, api), _event([_msg(e) for e in emails]))
    # Then every bad record is dead-lettered alone and every good one accepted exactly once
    assert failures == []
    assert sorted(r["email"] for d in _dlq(aws) for r in d["body"]["records"]) == [
        f"bad{i}" for i in range(4)
    ]
    accepted = [r["email"] for p in api.posts if _refuse_bad_by_index(p) is None for r in p["records"]]
    assert sorted(accepted) == [f"g{i}" for i in range(6)]
    # And after three single-record refusals in a row the rest went out in halves, not whole again
    sizes = [len(p["records"]) for p in api.posts]
    assert sizes[:3] == [10, 9, 8]
    assert sizes[3] <= 4


class _Clock:
    """A Lambda context with plenty of time until the API has taken ``posts`` requests, then ``then_ms``."""

    def __init__(self, api: Api, posts: int, then_ms: int):
        self.api, self.posts, self.then_ms = api, posts, then_ms
        self.function_name, self.aws_request_id = "writer", "req"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000 if len(self.api.posts) < self.posts else self.then_ms


def test_with_little_time_left_no_new_request_starts_and_the_unsent_messages_are_retried(aws):
    # Given three targets (three requests), a malformed message, and a message of the last target that
    # also holds a record the schema refuses; after the first request, 100 s are left: less than one
    # request's worst case (95 s API call + 3 x 15 s S3/SQS) plus the 15 s kept for dead letters
    api = Api()
    event = _event([_msg("a1"), _msg("l1", obj="leads"), _msg("p1", obj="prospects"), _msg("a2")])
    event["Records"][2]["body"] = json.dumps(
        {"object": "prospects", "operation": "upsert", "records": [{"email": "p1"}, {"email": "p2", "x": 1}]}
    )
    event["Records"].append({**event["Records"][0], "messageId": "m4", "body": "{not json"})
    writer = StreamWriter(
        ExperitureRecordsApi(_client(api)),
        Tracker(PayloadStore(aws[1], "kept"), SettleQueue(aws[0], aws[3]), None),
        DeadLetterQueue(aws[0], aws[2], aws[1], "kept"),
        concurrency=1,
    )
    # When processed
    response, report = write_event(writer, event, _Clock(api, posts=1, then_ms=100_000))
    # Then only the first request was sent; the other targets' messages come back for a retry
    assert [[r["email"] for r in p["records"]] for p in api.posts] == [["a1", "a2"]]
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == ["m1", "m2"]
    assert report.out_of_time == 2
    # And the decided dead letter was sent, while the retried message's bad record waits for its retry
    sqs, _, dlq, _ = aws
    got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
    [letter] = got["Messages"]
    assert letter["Body"] == "{not json"
    assert letter["MessageAttributes"]["experiture.errorCode"]["StringValue"] == "STREAM.MALFORMED_JSON"


def test_fifo_with_little_time_left_returns_every_unsent_message_of_the_group_in_order(aws):
    # Given a FIFO batch a1, l1, a2 of one group (three runs) and no time to spare after the first request
    api = Api()
    event = _event([_msg("a1"), _msg("l1", obj="leads"), _msg("a2")], fifo=True)
    response, _ = write_event(_writer(aws, api), event, _Clock(api, posts=1, then_ms=100_000))
    # Then a1 was written and l1, a2 are returned
    assert [p["records"] for p in api.posts] == [[{"email": "a1"}]]
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == ["m1", "m2"]


def test_with_no_time_for_a_dead_letter_call_the_message_goes_back_instead(aws):
    # Given a malformed message and only 10 s left: less than one SQS call's worst case (15 s)
    api = Api()
    event = _event([_msg("a1")])
    event["Records"].append({**event["Records"][0], "messageId": "m1", "body": "{not json"})
    response, _ = write_event(_writer(aws, api), event, _Clock(api, posts=0, then_ms=10_000))
    # Then nothing was sent and both messages come back (none half done)
    assert api.posts == [] and _dlq(aws) == []
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == ["m0", "m1"]


def test_the_payload_is_kept_before_the_request_is_posted(aws):
    # Given an API that looks, at each POST, for the payload kept under the request's key
    _, s3, _, _ = aws
    api = Api()
    seen: list[bool] = []

    def post(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            key = f"payloads/contacts/{request.headers['Idempotency-Key']}.json"
            seen.append(s3.list_objects_v2(Bucket="kept", Prefix=key).get("KeyCount", 0) == 1)
        return api(request)

    writer = _writer(aws, post)
    # When a batch is written
    assert _run(writer, _event([_msg("a"), _msg("b")])) == []
    # Then the payload was already in S3 when the request went out, tagged unsettled until it settles
    assert seen == [True]
    [kept] = s3.list_objects_v2(Bucket="kept", Prefix="payloads/")["Contents"]
    tags = s3.get_object_tagging(Bucket="kept", Key=kept["Key"])["TagSet"]
    assert tags == [{"Key": "experiture-settled", "Value": "pending"}]


def test_when_the_payload_cannot_be_kept_nothing_is_sent_and_the_messages_are_retried(aws):
    # Given the stream bucket is gone
    api = Api()
    writer = _writer(aws, api, bucket="no-such-bucket")
    # When a batch is processed
    failures = _run(writer, _event([_msg("a"), _msg("l", obj="leads")]))
    # Then no request was posted (no job to lose track of), both messages come back, none dead-lettered
    assert api.posts == []
    assert failures == ["m0", "m1"]
    assert _dlq(aws) == []


def test_a_dead_letter_too_large_for_sqs_keeps_its_body_in_s3_and_its_reason_in_the_dlq(aws):
    # Given a message body of nearly 256 KiB that is not JSON (its reason would push it over the cap)
    sqs, s3, dlq, _ = aws
    source = sqs.create_queue(QueueName="records")["QueueUrl"]
    body = "{not json " + "é" * 131_000  # 262,020 bytes: fits alone, not with its reason
    event = _event([_msg("a")])
    event["Records"].append({**event["Records"][0], "messageId": "big", "body": body})
    # When processed
    failures = _run(_writer(aws, Api()), event)
    # Then it is not retried: the DLQ holds a small pointer with the reason, the body is in the bucket
    assert failures == []
    [letter] = sqs.receive_message(QueueUrl=dlq, MessageAttributeNames=["All"], VisibilityTimeout=0)[
        "Messages"
    ]
    attributes = {k: v["StringValue"] for k, v in letter["MessageAttributes"].items()}
    assert attributes["experiture.errorCode"] == "STREAM.MALFORMED_JSON"
    assert attributes["experiture.sourceMessageId"] == "big"
    location = json.loads(letter["Body"])["deadLetterBody"]
    assert location == attributes["experiture.bodyLocation"] and location.startswith(
        "s3://kept/dead-letters/"
    )
    kept = s3.get_object(Bucket="kept", Key=location.removeprefix("s3://kept/"))["Body"].read().decode()
    assert kept == body
    # And replaying the DLQ sends the original body back, without the reason attributes
    assert replay(sqs, dlq, source, s3=s3, wait_seconds=0).moved == 1
    [back] = sqs.receive_message(QueueUrl=source, MessageAttributeNames=["All"])["Messages"]
    assert back["Body"] == body and "MessageAttributes" not in back


def test_fifo_a_transient_failure_holds_up_only_its_own_group(aws):
    # Given FIFO groups g1: a1, l1 (the API fails "leads" transiently), a2 and g2: b1, b2
    api = Api(lambda body: (503, {"message": "busy"}) if body["records"][0]["email"] == "l1" else None)
    event = _event([_msg("a1"), _msg("l1", obj="leads"), _msg("b1"), _msg("a2"), _msg("b2")], fifo=True)
    for record, group in zip(event["Records"], ["g1", "g1", "g2", "g1", "g2"], strict=True):
        record["attributes"] = {"MessageGroupId": group}
    # When processed
    failures = _run(_writer(aws, api), event)
    # Then g1 stops at l1 (l1 and a2 come back, a2 never sent), while g2 is written whole, in order
    assert failures == ["m1", "m3"]
    sent = [r["email"] for p in api.posts for r in p["records"]]
    assert "a2" not in sent and sent.index("b1") < sent.index("b2")
    assert {"a1", "b1", "b2"} <= set(sent)


def test_a_destination_failing_inside_one_record_check_costs_only_that_record(aws, monkeypatch):
    # Given a record check that breaks on one record (a bug, or a value it cannot handle)
    from experiture_ingest.streams import experiture

    real = experiture.compile_check

    def fragile(schema, operation, match_key):
        check = real(schema, operation, match_key)

        def checked(record):
            if record.get("tier") == "boom":
                raise OverflowError("int too large to convert to float")
            return check(record)

        return checked

    monkeypatch.setattr(experiture, "compile_check", fragile)
    api = Api()
    body = {
        "object": "contacts",
        "operation": "upsert",
        "records": [{"email": "a"}, {"email": "b", "tier": "boom"}],
    }
    # When processed
    failures = _run(_writer(aws, api), _event([body, _msg("c")]))
    # Then the record is dead-lettered alone with STREAM.INTERNAL_ERROR and the others are written
    assert failures == []
    assert [r["email"] for p in api.posts for r in p["records"]] == ["a", "c"]
    [letter] = _dlq(aws)
    assert letter["code"] == "STREAM.INTERNAL_ERROR" and letter["body"]["records"] == [
        {"email": "b", "tier": "boom"}
    ]


def test_a_message_delivered_twice_in_one_batch_is_written_once(aws):
    # Given SQS handed the same message twice in one batch (standard queues deliver at least once)
    api = Api()
    event = _event([_msg("a"), _msg("b")])
    event["Records"].append(dict(event["Records"][0]))
    # When processed, then its records went out once
    assert _run(_writer(aws, api), event) == []
    assert sorted(r["email"] for p in api.posts for r in p["records"]) == ["a", "b"]


def test_an_operation_the_destination_does_not_offer_is_dead_lettered_without_a_request(aws):
    # Given a destination that offers upsert only (as the next one may)
    api = Api()
    writer = _writer(aws, api)
    writer._destination.operations = frozenset({"upsert"})
    body = {"object": "contacts", "operation": "append", "records": [{"email": "a"}]}
    # When an append arrives, then it is dead-lettered with the reason and nothing is sent
    assert _run(writer, _event([body, _msg("b")])) == []
    [letter] = _dlq(aws)
    assert letter["code"] == "STREAM.CONTRACT_INVALID" and letter["body"]["records"] == [{"email": "a"}]
    assert [r["email"] for p in api.posts for r in p["records"]] == ["b"]


def test_a_secret_that_cannot_be_read_sends_the_batch_back_and_dead_letters_nothing(aws):
    # Given credentials that cannot be read (Secrets Manager unreachable, say)
    from experiture_ingest.settings import SettingsError

    class Unreadable(httpx.Auth):
        def auth_flow(self, request):
            raise SettingsError("EXPERITURE_SECRET_ARN: cannot read the secret (GetParameterError)")
            yield request

    sqs, s3, dlq, settle = aws
    client = ExperitureClient(
        "https://api.test/public/v1", Unreadable(), transport=httpx.MockTransport(Api())
    )
    writer = StreamWriter(
        ExperitureRecordsApi(client),
        Tracker(PayloadStore(s3, "kept"), SettleQueue(sqs, settle), None),
        DeadLetterQueue(sqs, dlq, s3, "kept"),
    )
    # When a batch comes, then every message goes back to the queue and no good record is dead-lettered
    assert _run(writer, _event([_msg("a"), _msg("b")])) == ["m0", "m1"]
    assert _dlq(aws) == []


def test_an_unexpected_error_sending_one_request_sends_back_only_its_messages(aws):
    # Given an API client that breaks (not an API answer, a bug) on the "leads" request only
    api = Api()

    def breaking(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and "/leads/" in request.url.path:
            raise RuntimeError("something nobody expected")
        return api(request)

    event = _event([_msg("a1"), _msg("l1", obj="leads"), _msg("a2")])
    # When processed, then only the leads message goes back, and the contacts were written
    assert _run(_writer(aws, breaking), event) == ["m1"]
    assert sorted(r["email"] for p in api.posts for r in p["records"]) == ["a1", "a2"]
    assert _dlq(aws) == []
