"""Packing: grouping, order, the documented limits measured on the exact bytes sent."""

from __future__ import annotations

import json
import math

from experiture_ingest.client import encode_json
from experiture_ingest.limits import BATCH_MAX_BYTES, BATCH_MAX_RECORDS
from experiture_ingest.streams.contract import Target
from experiture_ingest.streams.packing import StagedMessage, pack

UPSERT = Target.parse("contacts:upsert:email")
APPEND = Target.parse("events:append")


def _messages(target, count, per_message, start=0, pad=0):
    out = []
    for m in range(count):
        records = [{"email": f"{start + m}-{i}@example.com", "note": "é" * pad} for i in range(per_message)]
        out.append(StagedMessage.of(f"{target.object}-{start + m}", start + m, target, records))
    return out


def test_groups_are_packed_apart_in_order_into_the_fewest_requests():
    # Given 25,000 upserts and 3,000 appends in interleaved messages of 500 records
    upserts = _messages(UPSERT, 50, 500)
    appends = _messages(APPEND, 6, 500, start=100)
    mixed = [m for pair in zip(upserts, appends + [None] * 44, strict=True) for m in pair if m is not None]
    # When packed
    requests = pack(mixed)
    # Then ceil(25,000/10,000) + 1 requests, each group's records in their original order
    assert [(str(r.target), r.record_count) for r in requests] == [
        ("contacts:upsert:email", 10_000),
        ("events:append", 3_000),
        ("contacts:upsert:email", 10_000),
        ("contacts:upsert:email", 5_000),
    ]
    sent = [rec["email"] for r in requests if r.target == UPSERT for rec in json.loads(r.body())["records"]]
    assert sent == [rec["email"] for m in upserts for rec in m.records]


def test_body_is_exactly_what_the_client_would_encode_and_its_size_is_tracked():
    # Given messages with non-ASCII text, when packed, the body equals encode_json of the document
    [request] = pack(_messages(UPSERT, 3, 7, pad=5))
    document = {"records": [r for m in request.messages for r in m.records], "matchKey": "email"}
    assert request.body() == encode_json(document)
    assert request.size == len(request.body())
    [append] = pack(_messages(APPEND, 2, 3))
    assert append.body() == encode_json({"records": [r for m in append.messages for r in m.records]})


def test_the_10_mb_limit_binds_on_measured_bytes():
    # Given 40 messages of 100 records of about 3.6 KB each (about 14.4 MB in all)
    messages = _messages(UPSERT, 40, 100, pad=1800)
    total = sum(m.size for m in messages)
    # When packed, then every body is at most 10 MB, and the count is the fewest for whole messages
    requests = pack(messages)
    assert all(len(r.body()) <= BATCH_MAX_BYTES for r in requests)
    assert all(r.record_count <= BATCH_MAX_RECORDS for r in requests)
    assert len(requests) == math.ceil(total / BATCH_MAX_BYTES) == 2
    # And the first request could not have taken one more message
    assert requests[0].size + 1 + messages[len(requests[0].messages)].size > BATCH_MAX_BYTES


def test_a_message_is_never_split_across_requests():
    # Given messages of 3,000 records, 10,000 cannot be filled exactly: 3 messages a request
    requests = pack(_messages(UPSERT, 7, 3_000))
    assert [r.record_count for r in requests] == [9_000, 9_000, 3_000]


def test_fifo_packing_only_joins_consecutive_messages_of_a_target():
    # Given U U A U in batch order, when packed contiguously, then 3 requests follow the order
    u = _messages(UPSERT, 3, 2)
    a = _messages(APPEND, 1, 2, start=10)
    requests = pack([u[0], u[1], a[0], u[2]], contiguous=True)
    assert [[m.message_id for m in r.messages] for r in requests] == [
        ["contacts-0", "contacts-1"],
        ["events-10"],
        ["contacts-2"],
    ]


def test_idempotency_key_depends_on_message_ids_and_content_only():
    first = pack(_messages(UPSERT, 3, 2))[0].idempotency_key
    again = pack(_messages(UPSERT, 3, 2))[0].idempotency_key
    other_ids = pack(_messages(UPSERT, 3, 2, start=1))[0].idempotency_key
    changed = _messages(UPSERT, 3, 2)
    changed[1].records[0]["email"] = "x@example.com"
    changed[1] = StagedMessage.of(changed[1].message_id, 1, UPSERT, changed[1].records)
    assert first == again
    assert len({first, other_ids, pack(changed)[0].idempotency_key}) == 3
