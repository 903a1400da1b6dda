"""No record can break a batch, no group can hold up another, no lost answer writes twice."""

from __future__ import annotations

import json

import pytest

from cli.streams_local import LocalStream
from experiture_ingest.streams.contract import Target, envelope
from experiture_ingest.streams.producer import send_records
from sandbox.testing import SandboxHandle
from tests.integration.streams.conftest import run_settler, run_writer

CONTACTS = Target.parse("contacts:upsert:email")
EVENTS = Target.parse("events:append")

# Poison records as raw JSON text (some cannot be written by json.dumps at all), with the code each earns.
DEEP = "[" * 5000 + "]" * 5000
POISON = {
    '{"email": "surrogate@example.com", "first_name": "\\ud800"}': "STREAM.INVALID_STRING",
    '{"email": "huge@example.com", "lifetime_value": 1' + "0" * 399 + "}": "STREAM.NUMBER_OUT_OF_RANGE",
    '{"email": "nan@example.com", "lifetime_value": NaN}': "STREAM.NUMBER_OUT_OF_RANGE",
    '{"email": "deep@example.com", "first_name": ' + DEEP + "}": "STREAM.TOO_DEEP",
    json.dumps({"email": "wide@example.com", **{f"f{i}": i for i in range(500)}}): "STREAM.TOO_MANY_FIELDS",
}


def _good(i: int) -> str:
    return json.dumps({"email": f"good{i}@example.com", "tier": "gold"})


def _envelope_text(target: Target, record_texts: list[str]) -> str:
    head = json.dumps(envelope(target, []))[: -len("[]}")]
    return head + "[" + ", ".join(record_texts) + "]}"


def test_every_poison_record_is_dead_lettered_alone_and_every_good_record_lands_once(
    stream: LocalStream, sandbox: SandboxHandle
):
    # Given one message mixing 25 good upserts with each poison record, 25 good upserts in a message
    # of their own, and each poison record alone in a message
    poison = list(POISON)
    mixed = [_good(i) for i in range(25)]
    for n, text in enumerate(poison):
        mixed.insert(2 + n * 5, text)
    bodies = [_envelope_text(CONTACTS, mixed), _envelope_text(CONTACTS, [_good(i) for i in range(25, 50)])]
    bodies += [_envelope_text(CONTACTS, [text]) for text in poison]
    for body in bodies:
        stream.sqs.send_message(QueueUrl=stream.queue_url, MessageBody=body)

    # When the writer runs once and the jobs settle
    import functions.record_writer.app as writer_app

    invocation = stream.invoke_writer(writer_app.handler)
    run_settler(stream)

    # Then that one invocation handled everything: nothing goes back to the queue
    assert invocation is not None and invocation.failures == [] and stream.depth(stream.queue_url) == 0
    # And every good record is stored exactly once
    stored = [r["email"] for r in sandbox.admin.records("contacts")]
    assert sorted(stored) == sorted(f"good{i}@example.com" for i in range(50))
    # And each poison record is in the DLQ alone, twice (mixed and alone), with its code and reason
    letters = stream.dead_letters()
    assert len(letters) == 2 * len(poison)
    by_code: dict[str, int] = {}
    for letter in letters:
        code = letter["attributes"]["experiture.errorCode"]
        by_code[code] = by_code.get(code, 0) + 1
        assert letter["attributes"]["experiture.errorMessage"]
        if isinstance(letter["body"], dict):
            assert len(letter["body"]["records"]) == 1
        else:  # the 5,000-deep record: kept as it was sent, too deep to parse here
            assert DEEP in letter["body"] and code == "STREAM.TOO_DEEP"
    expected: dict[str, int] = {}
    for code in POISON.values():
        expected[code] = expected.get(code, 0) + 2
    assert by_code == expected
    # And in the mixed message each letter names the poison record's own index
    mixed_letters = [
        d for d in letters if d["attributes"].get("experiture.sourceMessageId") == invocation.message_ids[0]
    ]
    assert sorted(int(d["attributes"]["experiture.recordIndex"]) for d in mixed_letters) == [2, 7, 12, 17, 22]


@pytest.mark.parametrize("name", ["..", ".", "a/b", "con\u0001tacts", ".hidden"])
def test_an_unsafe_object_name_is_dead_lettered_and_sends_no_request(
    stream: LocalStream, sandbox: SandboxHandle, name: str
):
    # Given an envelope and a bare record (target in attributes) for the object ``name``
    stream.sqs.send_message(
        QueueUrl=stream.queue_url,
        MessageBody=json.dumps({"object": name, "operation": "append", "record": {"a": 1}}),
    )
    stream.sqs.send_message(
        QueueUrl=stream.queue_url,
        MessageBody=json.dumps({"a": 1}),
        MessageAttributes={
            "experiture.object": {"DataType": "String", "StringValue": name},
            "experiture.operation": {"DataType": "String", "StringValue": "append"},
        },
    )

    # When the writer runs
    run_writer(stream)

    # Then both are dead-lettered with the name's problem, and the API saw no request at all
    letters = stream.dead_letters()
    assert [d["attributes"]["experiture.errorCode"] for d in letters] == ["STREAM.OBJECT_NAME_INVALID"] * 2
    assert all("must match" in d["attributes"]["experiture.errorMessage"] for d in letters)
    assert sandbox.admin.requests(path="/public/v1/") == []
    assert stream.depth(stream.queue_url) == 0


def test_fifo_a_poison_record_does_not_hold_up_its_group_or_another(aws: None, sandbox: SandboxHandle):
    import boto3

    import functions.record_writer.app as writer_app
    from cli.streams_local import handler_env

    fifo = LocalStream.create(boto3.client("sqs"), boto3.client("s3"), name="ordered", fifo=True)
    with handler_env(fifo.env(sandbox.base_url, sandbox.token)):
        # Given group 1: good, poison, good; group 2: good (appends)
        messages = [
            ("g1", {"event_id": "e1", "event_type": "first", "occurred_at": "2026-04-21T15:30:00Z"}),
            ("g1", '{"event_id": "bad", "event_type": "\\udfff", "occurred_at": "2026-04-21T15:30:00Z"}'),
            ("g1", {"event_id": "e2", "event_type": "second", "occurred_at": "2026-04-21T15:31:00Z"}),
            ("g2", {"event_id": "e3", "event_type": "other", "occurred_at": "2026-04-21T15:30:00Z"}),
        ]
        for n, (group, record) in enumerate(messages):
            text = record if isinstance(record, str) else json.dumps(record)
            fifo.sqs.send_message(
                QueueUrl=fifo.queue_url,
                MessageBody=_envelope_text(EVENTS, [text]),
                MessageGroupId=group,
                MessageDeduplicationId=f"m{n}",
            )

        # When the writer runs (once is enough) and the jobs settle
        invocations = fifo.drain_writer(writer_app.handler)
        run_settler(fifo)

    # Then all three good records are stored, group 1's in order
    assert invocations == 1 and fifo.invocations[0].failures == []
    stored = [r["event_id"] for r in sandbox.admin.records("events")]
    assert sorted(stored) == ["e1", "e2", "e3"]
    assert stored.index("e1") < stored.index("e2")
    # And the poison record is in the DLQ with its reason, in its group
    [letter] = fifo.dead_letters()
    assert letter["attributes"]["experiture.errorCode"] == "STREAM.INVALID_STRING"
    assert "\\udfff" in letter["attributes"]["experiture.errorMessage"]
    assert fifo.depth(fifo.queue_url) == 0


@pytest.mark.parametrize(
    ("target", "obj"), [(EVENTS, "events"), (Target.parse("contacts:upsert:email"), "contacts")]
)
def test_lost_answers_and_regrouped_redeliveries_store_each_record_once(
    stream: LocalStream, sandbox: SandboxHandle, target: Target, obj: str
):
    import functions.record_writer.app as writer_app

    # Given 300 records in 6 messages, and an API that takes the request but loses its answer three
    # times in a row (the client gives up after 2 attempts, so the messages come back to the queue)
    if obj == "events":
        records = [
            {"event_id": f"e{i}", "event_type": "click", "occurred_at": "2026-04-21T15:30:00Z"}
            for i in range(300)
        ]
    else:
        records = [{"email": f"u{i}@example.com", "tier": "silver"} for i in range(300)]
    assert (
        send_records(
            stream.sqs, stream.queue_url, target, records, max_message_bytes=4500 if obj == "events" else 2500
        )
        == 6
    )
    sandbox.admin.set_faults(
        {
            "rules": [
                {
                    "method": "POST",
                    "path": f"/public/v1/records/{obj}/*",
                    "drop": "after_processing",
                    "times": 3,
                }
            ]
        }
    )

    # When the writer takes all 6, then the redeliveries come back three at a time (another grouping)
    first = stream.invoke_writer(writer_app.handler, batch_size=6)
    assert first is not None and len(first.failures) == 6
    stream.drain_writer(writer_app.handler, batch_size=3)
    run_settler(stream)

    # Then every record is stored exactly once
    assert len(sandbox.admin.records(obj)) == 300
    # And the lost answers did happen: the same request (one key) was sent again, never re-packed
    posts = sandbox.admin.requests(method="POST", path=f"/public/v1/records/{obj}/")
    assert len(posts) >= 4 and len({p["idempotencyKey"] for p in posts}) == 1
    jobs = [j for j in sandbox.admin.batch_jobs() if j["state"] == "completed"]
    if obj == "contacts":
        assert sum(j["metrics"]["mergedUpdates"] + j["metrics"]["mergedRetained"] for j in jobs) == 0
    assert stream.dead_letters() == [] and stream.depth(stream.queue_url) == 0
