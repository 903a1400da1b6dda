"""25,000 records across 3 objects and both operations land in the fewest possible requests."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest

from cli.streams_local import LocalStream
from experiture_ingest.limits import BATCH_MAX_RECORDS
from experiture_ingest.streams.contract import Target
from experiture_ingest.streams.producer import message_bodies
from sandbox.testing import SandboxHandle
from tests.integration.streams.conftest import run_settler, run_writer

CONTACTS = Target.parse("contacts:upsert:email")
EVENTS = Target.parse("events:append")
ORDERS = Target.parse("orders:upsert")


def _records() -> dict[Target, list[dict]]:
    return {
        CONTACTS: [{"email": f"c{i}@example.com", "tier": "gold", "age": i % 90} for i in range(12_000)],
        EVENTS: [
            {
                "event_id": f"e{i}",
                "event_type": "click",
                "value": i / 2,
                "occurred_at": "2026-04-21T15:30:00+02:00",
            }
            for i in range(8_000)
        ],
        ORDERS: [
            {
                "order_id": f"o{i}",
                "email": f"c{i}@example.com",
                "amount": 9.5,
                "ordered_at": "2026-04-21T15:30:00Z",
            }
            for i in range(5_000)
        ],
    }


def _enqueue_interleaved(stream: LocalStream, records: dict[Target, list[dict]], per_message: int) -> int:
    bodies = [
        body
        for target, rows in records.items()
        for body in message_bodies(target, rows, max_bytes=1024 * 1024, max_records=per_message)
    ]
    random.Random(7).shuffle(bodies)  # the three groups arrive mixed
    for i in range(0, len(bodies), 10):
        stream.sqs.send_message_batch(
            QueueUrl=stream.queue_url,
            Entries=[{"Id": str(n), "MessageBody": b} for n, b in enumerate(bodies[i : i + 10])],
        )
    return len(bodies)


def _fewest(invocations) -> int:
    """Per invocation and group: ceil(records / 10,000), the least any packing could send."""
    total = 0
    for invocation in invocations:
        per_group: Counter[str] = Counter()
        for body in invocation.bodies:
            doc = json.loads(body)
            per_group[f"{doc['object']}:{doc['operation']}"] += len(doc["records"])
        total += sum(math.ceil(n / BATCH_MAX_RECORDS) for n in per_group.values())
    return total


@pytest.mark.slow
def test_25000_records_in_one_invocation_take_four_requests(stream: LocalStream, sandbox: SandboxHandle):
    # Given 25,000 records (12,000 contact upserts, 8,000 event appends, 5,000 order upserts) in 125
    # interleaved messages of 200 records: the whole batch fits one invocation (< 6 MB)
    records = _records()
    messages = _enqueue_interleaved(stream, records, per_message=200)
    assert messages == 125

    # When the writer runs and the jobs settle
    invocations = run_writer(stream)
    run_settler(stream)

    # Then one invocation sent ceil(12,000/10,000) + 1 + 1 = 4 requests: the fewest possible
    assert invocations == 1
    posts = sandbox.admin.requests(method="POST", path="/public/v1/records/")
    assert [p["status"] for p in posts] == [202] * 4
    assert Counter(p["path"].rsplit("/", 2)[-2] for p in posts) == {"contacts": 2, "events": 1, "orders": 1}
    # And every record is stored once, each job completed, nothing dead-lettered or left behind
    assert len(sandbox.admin.records("contacts")) == 12_000
    assert len(sandbox.admin.records("events")) == 8_000
    assert len(sandbox.admin.records("orders")) == 5_000
    jobs = sandbox.admin.batch_jobs()
    assert sorted(j["state"] for j in jobs) == ["completed"] * 4
    assert sum(j["metrics"]["mergedInserts"] for j in jobs) == 25_000
    assert stream.dead_letters() == []
    assert stream.depth(stream.queue_url) == 0
    assert stream.keys("payloads/") == []  # settled payloads are removed


@pytest.mark.slow
def test_smaller_invocations_still_pack_each_group_minimally(stream: LocalStream, sandbox: SandboxHandle):
    # Given the same 25,000 records in 250 messages of 100, and a batch size of 60 messages a call
    # (so 5 invocations, each holding a mix of the three groups)
    records = _records()
    _enqueue_interleaved(stream, records, per_message=100)

    # When the writer drains the queue
    invocations = run_writer(stream, batch_size=60)
    run_settler(stream)

    # Then each invocation sent exactly one request per group it held (no group reached 10,000):
    # the request count equals the minimum computed from what the invocations held
    assert invocations == 5
    posts = sandbox.admin.requests(method="POST", path="/public/v1/records/")
    assert len(posts) == _fewest(stream.invocations)
    assert (
        len(sandbox.admin.records("contacts"))
        + len(sandbox.admin.records("events"))
        + len(sandbox.admin.records("orders"))
        == 25_000
    )
