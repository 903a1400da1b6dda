"""What happens to bad records, flaky APIs, redeliveries and failed jobs: nothing is lost."""

from __future__ import annotations

import json

import pytest

import functions.record_writer.app as writer_app
from cli.streams_local import LocalStream
from experiture_ingest.streams.contract import Target
from experiture_ingest.streams.deadletters import replay
from experiture_ingest.streams.producer import send_records
from sandbox.testing import SandboxHandle
from tests.integration.streams.conftest import run_settler, run_writer

CONTACTS = Target.parse("contacts:upsert:email")
EVENTS = Target.parse("events:append")


def _event(i: int) -> dict:
    return {"event_id": f"e{i}", "event_type": "click", "occurred_at": "2026-04-21T15:30:00Z"}


def test_a_bad_record_is_dead_lettered_with_its_reason_while_its_neighbours_land(
    stream: LocalStream, sandbox: SandboxHandle
):
    # Given a message whose second record has a text age, neighbours that are fine, a malformed body
    # and a message for an object that does not exist
    bad = {"email": "bad@example.com", "age": "forty"}
    body = {
        "object": "contacts",
        "operation": "upsert",
        "matchKey": "email",
        "records": [{"email": "a@example.com"}, bad, {"email": "b@example.com"}],
    }
    stream.sqs.send_message(QueueUrl=stream.queue_url, MessageBody=json.dumps(body))
    send_records(stream.sqs, stream.queue_url, CONTACTS, [{"email": f"n{i}@example.com"} for i in range(50)])
    stream.sqs.send_message(QueueUrl=stream.queue_url, MessageBody="{not json")
    stream.sqs.send_message(
        QueueUrl=stream.queue_url,
        MessageBody=json.dumps({"object": "nope", "operation": "append", "record": {"a": 1}}),
    )

    # When the writer runs and the jobs settle
    run_writer(stream)
    run_settler(stream)

    # Then the neighbours landed (2 from the same message + 50 others)
    stored = {r["email"] for r in sandbox.admin.records("contacts")}
    assert len(stored) == 52 and "bad@example.com" not in stored
    # And the DLQ holds the bad record alone, the malformed body and the unknown object, with reasons
    letters = {d["attributes"]["experiture.errorCode"]: d for d in stream.dead_letters()}
    assert set(letters) == {"VALIDATION_TYPE_MISMATCH", "STREAM.MALFORMED_JSON", "CDP_ETL.OBJECT.NOT_FOUND"}
    typed = letters["VALIDATION_TYPE_MISMATCH"]
    assert typed["body"]["records"] == [bad] and typed["body"]["matchKey"] == "email"
    assert "age" in typed["attributes"]["experiture.errorMessage"]
    assert typed["attributes"]["experiture.recordIndex"] == "1"
    assert letters["STREAM.MALFORMED_JSON"]["body"] == "{not json"
    assert letters["CDP_ETL.OBJECT.NOT_FOUND"]["attributes"]["experiture.correlationId"]
    # And nothing waits for a retry
    assert stream.depth(stream.queue_url) == 0


def test_a_record_the_api_refuses_is_split_out_and_the_rest_lands(
    stream: LocalStream, sandbox: SandboxHandle
):
    # Given the writer's cached schema allows "nickname", which the API then drops from the schema
    sandbox.admin.set_schema(
        "fans",
        {
            "primaryKey": "email",
            "fields": [
                {"name": "email", "type": "string", "required": True},
                {"name": "nickname", "type": "string"},
            ],
        },
    )
    target = Target.parse("fans:upsert")
    send_records(stream.sqs, stream.queue_url, target, [{"email": "warm@example.com"}])
    run_writer(stream)
    sandbox.admin.set_schema(
        "fans", {"primaryKey": "email", "fields": [{"name": "email", "type": "string", "required": True}]}
    )
    records = [{"email": f"f{i}@example.com"} for i in range(30)]
    records[17]["nickname"] = "seventeen"
    send_records(stream.sqs, stream.queue_url, target, records[:20])
    send_records(stream.sqs, stream.queue_url, target, records[20:])

    # When the writer runs: the API answers 422 naming records[17]
    run_writer(stream)
    run_settler(stream)

    # Then record 17 is dead-lettered with the API's code and correlation id, the other 29 landed
    stored = {r["email"] for r in sandbox.admin.records("fans")}
    assert len(stored) == 30 and "f17@example.com" not in stored
    [letter] = stream.dead_letters()
    assert letter["attributes"]["experiture.errorCode"] == "CDP_ETL.VALIDATION.SCHEMA_MISMATCH"
    assert letter["attributes"]["experiture.correlationId"]
    assert letter["body"]["records"] == [records[17]]
    statuses = [p["status"] for p in sandbox.admin.requests(method="POST", path="/public/v1/records/fans/")]
    assert statuses == [202, 422, 202]


def test_300_records_with_a_field_the_api_dropped_cost_a_handful_of_requests(
    stream: LocalStream, sandbox: SandboxHandle
):
    # Given the writer's cached schema allows "nickname", which the API then drops from the schema
    fans = {"email": {"name": "email", "type": "string", "required": True}}
    nickname = {"name": "nickname", "type": "string"}
    sandbox.admin.set_schema("fans", {"primaryKey": "email", "fields": [fans["email"], nickname]})
    target = Target.parse("fans:upsert")
    send_records(stream.sqs, stream.queue_url, target, [{"email": "warm@example.com"}])
    run_writer(stream)
    sandbox.admin.set_schema("fans", {"primaryKey": "email", "fields": [fans["email"]]})
    # And 300 records that carry it, among 100 that do not, spread over several messages
    bad = [{"email": f"n{i}@example.com", "nickname": f"nick {i}"} for i in range(300)]
    good = [{"email": f"g{i}@example.com"} for i in range(100)]
    mixed = [r for pair in zip(bad[:100], good, strict=True) for r in pair] + bad[100:]
    assert send_records(stream.sqs, stream.queue_url, target, mixed, max_message_bytes=4096) > 3

    # When the writer runs: the API refuses the first record naming records[i]
    run_writer(stream)
    run_settler(stream)

    # Then a handful of POSTs did it (the refusal, then one accepted request), not one per bad record
    posts = sandbox.admin.requests(method="POST", path="/public/v1/records/fans/")
    assert [p["status"] for p in posts] == [202, 422, 202]
    # And every record with the dropped field is dead-lettered with its reason, the others landed
    letters = stream.dead_letters()
    assert sorted(r["email"] for d in letters for r in d["body"]["records"]) == sorted(
        r["email"] for r in bad
    )
    assert all("nickname" in d["attributes"]["experiture.errorMessage"] for d in letters)
    codes = [d["attributes"]["experiture.errorCode"] for d in letters]
    assert codes.count("CDP_ETL.VALIDATION.SCHEMA_MISMATCH") == 1 and codes.count("UNKNOWN_FIELD") == 299
    stored = {r["email"] for r in sandbox.admin.records("fans")}
    assert stored == {"warm@example.com"} | {r["email"] for r in good}


@pytest.mark.slow
def test_with_500s_and_429s_20000_upserts_arrive_exactly_once(stream: LocalStream, sandbox: SandboxHandle):
    # Given the sandbox answers 20% of API calls with 500 and 10% with 429 (0.8 * 0.125), and the
    # client gives up after 2 attempts, so some requests fail for good and go back to SQS
    sandbox.admin.set_faults(
        {
            "seed": 11,
            "rules": [
                {"path": "/public/v1/*", "status": 500, "rate": 0.2},
                {"path": "/public/v1/*", "status": 429, "rate": 0.125, "retryAfter": 0},
            ],
        }
    )
    records = [{"email": f"u{i}@example.com", "tier": "silver"} for i in range(20_000)]
    sent = send_records(stream.sqs, stream.queue_url, CONTACTS, records, max_message_bytes=4096)

    # When the writer and settler run until the queues are empty
    run_writer(stream, batch_size=10)
    run_settler(stream)

    # Then the faults did hit, and some messages came back through SQS at least once
    calls = sandbox.admin.requests(path="/public/v1/")
    assert {500, 429} <= {c["status"] for c in calls}
    assert any(inv.failures for inv in stream.invocations)
    # And every upsert is stored exactly once: 20,000 records, and no job merged a row twice
    assert len(sandbox.admin.records("contacts")) == 20_000
    jobs = [j for j in sandbox.admin.batch_jobs() if j["state"] == "completed"]
    assert sum(j["metrics"]["mergedInserts"] for j in jobs) == 20_000
    assert sum(j["metrics"]["mergedUpdates"] + j["metrics"]["mergedRetained"] for j in jobs) == 0
    # And no message is lost: every message was handled, none dead-lettered, none left
    handled = {mid for inv in stream.invocations for mid in inv.message_ids if mid not in inv.failures}
    assert len(handled) == sent
    assert stream.dead_letters() == [] and stream.depth(stream.queue_url) == 0


def _empty_ledger(stream: LocalStream) -> None:
    import boto3

    db = boto3.client("dynamodb")
    for item in db.scan(TableName=stream.ledger_table)["Items"]:
        db.delete_item(TableName=stream.ledger_table, Key={"pk": item["pk"]})


def test_a_redelivered_batch_does_not_append_twice(stream: LocalStream, sandbox: SandboxHandle):
    # Given a batch of 300 event appends the writer handled once (say the function then timed out,
    # so SQS delivers the same batch again)
    send_records(
        stream.sqs, stream.queue_url, EVENTS, [_event(i) for i in range(300)], max_message_bytes=4096
    )
    event, _ = stream.receive_event(2000)
    from cli.streams_local import FakeContext

    assert writer_app.handler(event, FakeContext()) == {"batchItemFailures": []}
    # (and its ledger items were lost, so only the Idempotency-Key guards the replay)
    _empty_ledger(stream)

    # When the same batch is delivered and handled again
    assert writer_app.handler(event, FakeContext()) == {"batchItemFailures": []}
    run_settler(stream)

    # Then the second request was a replay of the first and the events are stored once
    posts = sandbox.admin.requests(method="POST", path="/public/v1/records/events/")
    assert [p["replayed"] for p in posts] == [False, True]
    assert posts[0]["idempotencyKey"] == posts[1]["idempotencyKey"]
    assert len(sandbox.admin.records("events")) == 300


def test_a_batch_redelivered_in_a_different_grouping_does_not_append_twice(
    stream: LocalStream, sandbox: SandboxHandle
):
    # Given 300 event appends in 6 messages that the writer handled once (say the function then timed
    # out after the 202, so SQS delivers the messages again, this time split across two invocations)
    sent = send_records(
        stream.sqs, stream.queue_url, EVENTS, [_event(i) for i in range(300)], max_message_bytes=4500
    )
    assert sent == 6
    event, _ = stream.receive_event(2000)
    from cli.streams_local import FakeContext

    assert writer_app.handler(event, FakeContext()) == {"batchItemFailures": []}

    # When the same messages come back as two batches of 3 (different requests, different keys)
    first, second = {"Records": event["Records"][:3]}, {"Records": event["Records"][3:]}
    assert writer_app.handler(first, FakeContext()) == {"batchItemFailures": []}
    assert writer_app.handler(second, FakeContext()) == {"batchItemFailures": []}
    run_settler(stream)

    # Then the ledger kept them from being sent again: one request, and the events are stored once
    posts = sandbox.admin.requests(method="POST", path="/public/v1/records/events/")
    assert len(posts) == 1
    assert len(sandbox.admin.records("events")) == 300
    assert stream.dead_letters() == []


def test_a_failed_batch_job_is_redriven_then_dead_lettered_and_can_be_replayed(
    stream: LocalStream, sandbox: SandboxHandle
):
    # Given the sandbox fails the next 3 batch jobs (the first one and both re-drives)
    sandbox.admin.fail_next_jobs("batch", times=3, error_message="merge worker lost")
    records = [{"email": f"j{i}@example.com"} for i in range(40)]
    messages = send_records(stream.sqs, stream.queue_url, CONTACTS, records, max_message_bytes=1024)
    assert messages > 1

    # When the writer and settler run
    run_writer(stream)
    run_settler(stream)

    # Then the job was re-driven twice from the kept payload, and then every message was dead-lettered
    posts = sandbox.admin.requests(method="POST", path="/public/v1/records/contacts/")
    assert len(posts) == 3 and len({p["idempotencyKey"] for p in posts}) == 3
    letters = stream.dead_letters()
    assert len(letters) == messages
    assert {d["attributes"]["experiture.errorCode"] for d in letters} == {"STREAM.JOB_FAILED"}
    assert all("merge worker lost" in d["attributes"]["experiture.errorMessage"] for d in letters)
    assert sorted(r for d in letters for r in (x["email"] for x in d["body"]["records"])) == sorted(
        r["email"] for r in records
    )
    # And a report says what happened, next to the kept payload
    [report_key] = stream.keys("reports/contacts/")
    report = json.loads(stream.s3.get_object(Bucket=stream.bucket, Key=report_key)["Body"].read())
    assert report["state"] == "failed" and report["redrives"] == 2 and report["payload"].startswith("s3://")
    assert sandbox.admin.records("contacts") == []

    # When the user replays the DLQ after the fix
    assert replay(stream.sqs, stream.dlq_url, stream.queue_url).moved == messages
    run_writer(stream)
    run_settler(stream)

    # Then every record lands, and the DLQ is empty
    assert len(sandbox.admin.records("contacts")) == 40
    assert stream.dead_letters() == []


def test_a_failed_job_that_succeeds_on_redrive_lands_without_dead_letters(
    stream: LocalStream, sandbox: SandboxHandle
):
    # Given the sandbox fails the next batch job once
    sandbox.admin.fail_next_jobs("batch", times=1)
    send_records(stream.sqs, stream.queue_url, CONTACTS, [{"email": f"r{i}@example.com"} for i in range(25)])

    # When the writer and settler run
    run_writer(stream)
    run_settler(stream)

    # Then the re-drive landed every record and nothing was dead-lettered or left in payloads/
    assert len(sandbox.admin.records("contacts")) == 25
    assert stream.dead_letters() == []
    assert stream.keys("payloads/") == []


def test_invalid_rows_the_api_finds_end_in_a_report(stream: LocalStream, sandbox: SandboxHandle):
    # Given a record that passes the writer's checks (the cached schema said age is text) but that the
    # batch job rejects (the object now says integer)
    sandbox.admin.set_schema(
        "members",
        {
            "primaryKey": "email",
            "fields": [
                {"name": "email", "type": "string", "required": True},
                {"name": "age", "type": "string"},
            ],
        },
    )
    target = Target.parse("members:upsert")
    send_records(stream.sqs, stream.queue_url, target, [{"email": "warm@example.com"}])
    run_writer(stream)
    sandbox.admin.set_schema(
        "members",
        {
            "primaryKey": "email",
            "fields": [
                {"name": "email", "type": "string", "required": True},
                {"name": "age", "type": "integer"},
            ],
        },
    )
    send_records(
        stream.sqs,
        stream.queue_url,
        target,
        [{"email": "x@example.com", "age": "old"}, {"email": "y@example.com", "age": "young"}],
    )

    # When it is written and settled
    run_writer(stream)
    run_settler(stream)

    # Then a report under reports/ names the job, the error summary and the kept payload
    reports = stream.keys("reports/members/")
    assert len(reports) == 1
    report = json.loads(stream.s3.get_object(Bucket=stream.bucket, Key=reports[0])["Body"].read())
    assert report["errorSummary"] == {"VALIDATION_TYPE_MISMATCH": 2}
    kept = report["payload"].split("/", 3)[3]
    assert kept in stream.keys("payloads/")
    tags = stream.s3.get_object_tagging(Bucket=stream.bucket, Key=kept)["TagSet"]
    assert {"Key": "experiture-settled", "Value": "invalid-rows"} in tags


def test_a_failed_jobs_dead_letters_keep_non_ascii_text_as_it_was_sent(
    stream: LocalStream, sandbox: SandboxHandle
):
    # Given records with non-ASCII text in a job the sandbox fails for good
    sandbox.admin.fail_next_jobs("batch", times=3)
    records = [{"email": f"z{i}@example.com", "tier": "Zürich — 東京"} for i in range(3)]
    send_records(stream.sqs, stream.queue_url, CONTACTS, records)

    # When the writer and settler run
    run_writer(stream)
    run_settler(stream)

    # Then the dead letter's body carries the text as UTF-8, not as \u escapes
    [raw] = stream.sqs.receive_message(QueueUrl=stream.dlq_url, VisibilityTimeout=0)["Messages"]
    assert "Zürich — 東京" in raw["Body"]
    assert json.loads(raw["Body"])["records"] == records
