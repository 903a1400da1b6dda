"""The record writer's CPU and wall time on a mixed batch, against bare JSON and sequential sending.

One SQS batch of ``--records`` records (default 25,000) for 3 objects x 2 operations (6 targets), in
messages of ``--per-message`` records, shuffled; a second run replaces 1% of the records with poison
(lone surrogate, 400-digit integer, NaN, 5,000-deep nesting, 501 fields, a schema type mismatch).

- **CPU** (``time.process_time``, no simulated latency): the writer's whole invocation (checks,
  packing, request bodies, payloads, ledger, tickets, dead letters) per 10,000 records, as a ratio to
  bare ``json.loads`` of every message body plus ``json.dumps`` of every record (the least any writer
  must do: read the messages, write the request bodies). Goal: at most 2x.
- **Wall time** of one invocation with a simulated 20 ms per API call and 10 ms per S3/SQS/DynamoDB
  call, sequential (one request at a time, as before) against concurrent (``STREAM_SEND_CONCURRENCY``).

The API is the real client over an in-process transport answering like the Records API; AWS is a
stand-in that accepts every call. A fresh writer per run (no warm schema cache or state carried over),
the order of the ways rotated each round, medians of ``--rounds`` rounds.

    .tools/bin/uv run --frozen --no-sync python -m bench.stream_writer [--records 25000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx

from experiture_ingest.client import BearerToken, ExperitureClient, RetryPolicy
from experiture_ingest.streams.checking import InboundMessage
from experiture_ingest.streams.contract import Target
from experiture_ingest.streams.deadletters import DeadLetterQueue
from experiture_ingest.streams.experiture import ExperitureRecordsApi
from experiture_ingest.streams.ledger import MessageLedger
from experiture_ingest.streams.producer import message_bodies
from experiture_ingest.streams.settle import PayloadStore, SettleQueue
from experiture_ingest.streams.tracking import Tracker
from experiture_ingest.streams.writer import FlushReport, StreamWriter

SCHEMAS: dict[str, dict[str, Any]] = {
    "contacts": {
        "primaryKey": "email",
        "fields": [
            {"name": "email", "type": "string", "format": "email", "required": True},
            {"name": "first_name", "type": "string"},
            {"name": "tier", "type": "string"},
            {"name": "age", "type": "integer"},
            {"name": "lifetime_value", "type": "number"},
            {"name": "opted_in", "type": "boolean"},
            {"name": "last_seen", "type": "datetime"},
        ],
    },
    "events": {
        "primaryKey": "event_id",
        "fields": [
            {"name": "event_id", "type": "string", "required": True},
            {"name": "event_type", "type": "string", "required": True},
            {"name": "value", "type": "number"},
            {"name": "occurred_at", "type": "datetime", "required": True},
        ],
    },
    "orders": {
        "primaryKey": "order_id",
        "fields": [
            {"name": "order_id", "type": "string", "required": True},
            {"name": "email", "type": "string", "format": "email", "required": True},
            {"name": "amount", "type": "number", "required": True},
            {"name": "quantity", "type": "integer"},
            {"name": "ordered_at", "type": "datetime", "required": True},
        ],
    },
}
TARGETS = [
    Target.parse(t) for t in ("contacts:upsert:email", "contacts:append", "events:upsert", "events:append")
]
TARGETS += [Target.parse("orders:upsert"), Target.parse("orders:append")]


def _row(obj: str, i: int) -> dict[str, Any]:
    if obj == "contacts":
        return {
            "email": f"user{i}@example.com",
            "first_name": "Ada",
            "tier": "gold",
            "age": 30 + i % 50,
            "lifetime_value": i * 1.5,
            "opted_in": i % 2 == 0,
            "last_seen": "2026-04-21T15:30:00+00:00",
        }
    if obj == "events":
        return {
            "event_id": f"e{i}",
            "event_type": "click",
            "value": i / 4,
            "occurred_at": "2026-04-21T15:30:00Z",
        }
    return {
        "order_id": f"o{i}",
        "email": f"user{i}@example.com",
        "amount": 9.5 + i,
        "quantity": 1 + i % 3,
        "ordered_at": "2026-04-21T15:30:00Z",
    }


POISON = [
    '{"email": "s@example.com", "first_name": "\\ud800"}',
    '{"email": "h@example.com", "age": 1' + "0" * 399 + "}",
    '{"email": "n@example.com", "lifetime_value": NaN}',
    '{"email": "d@example.com", "first_name": ' + "[" * 5000 + "]" * 5000 + "}",
    json.dumps({"email": "w@example.com", **{f"f{i}": i for i in range(500)}}),
    '{"email": "t@example.com", "age": "forty"}',
]


def batch(records: int, per_message: int, poison_rate: float) -> tuple[list[InboundMessage], int]:
    """The shuffled messages of one invocation, and how many poison records they hold."""
    per_target = records // len(TARGETS)
    bodies: list[str] = []
    for n, target in enumerate(TARGETS):
        rows = [_row(target.object, n * per_target + i) for i in range(per_target)]
        bodies += list(message_bodies(target, rows, max_records=per_message, max_bytes=1024 * 1024))
    poisoned = 0
    if poison_rate:
        # The contacts messages (a third of the records) hold the poison: ``poison_rate`` of all records.
        every = round(2 / len(TARGETS) / poison_rate)
        seen = 0
        out = []
        for body in bodies:
            doc = json.loads(body)
            if doc["object"] != "contacts":
                out.append(body)
                continue
            texts = [json.dumps(r) for r in doc["records"]]
            for i in range(len(texts)):
                seen += 1
                if seen % every == 0:
                    texts[i] = POISON[poisoned % len(POISON)]
                    poisoned += 1
            head = json.dumps({k: v for k, v in doc.items() if k != "records"})[:-1]
            out.append(head + ', "records": [' + ", ".join(texts) + "]}")
        bodies = out
    random.Random(7).shuffle(bodies)
    return [InboundMessage(f"m{i}", b) for i, b in enumerate(bodies)], poisoned


class Api:
    """Answers like the Records API after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.posts = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.delay:
            time.sleep(self.delay)
        obj = request.url.path.split("/")[-1 if request.method == "GET" else -2]
        if request.method == "GET":
            return httpx.Response(200, json={"success": True, "data": SCHEMAS[obj], "correlationId": "c"})
        self.posts += 1
        data = {"operation": "x", "objectName": obj, "jobId": f"job-{self.posts}", "acceptedRecords": 1}
        return httpx.Response(202, json={"success": True, "data": data, "correlationId": "c"})


class Aws:
    """S3, SQS and DynamoDB stand-in: accepts every call after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        def call(**kwargs: Any) -> dict[str, Any]:
            self.calls += 1
            if self.delay:
                time.sleep(self.delay)
            return {"Successful": [{"Id": e["Id"]} for e in kwargs.get("Entries", [])], "Failed": []}

        return call


def run_writer(
    messages: list[InboundMessage], *, api_delay: float, aws_delay: float, concurrency: int
) -> tuple[float, float, FlushReport, int, int]:
    """(CPU s, wall s, report, API posts, AWS calls) of one invocation by a fresh writer."""
    api, aws = Api(api_delay), Aws(aws_delay)
    client = ExperitureClient(
        "https://api.test/public/v1",
        BearerToken("t"),
        transport=httpx.MockTransport(api),
        retry=RetryPolicy(max_attempts=1),
    )
    writer = StreamWriter(
        ExperitureRecordsApi(client),
        Tracker(PayloadStore(aws, "kept"), SettleQueue(aws, "settle"), MessageLedger(aws, "ledger")),  # type: ignore[arg-type]
        DeadLetterQueue(aws, "dlq"),  # type: ignore[arg-type]
        concurrency=concurrency,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    report = writer.write(messages, fifo=False)
    return time.process_time() - cpu, time.perf_counter() - wall, report, api.posts, aws.calls


def bare_json(messages: list[InboundMessage]) -> float:
    """CPU s of json.loads of every body and json.dumps of every record (compact, as sent)."""
    cpu = time.process_time()
    for message in messages:
        try:
            document = json.loads(message.body)
        except RecursionError:
            continue
        for record in document["records"]:
            with contextlib.suppress(ValueError, RecursionError):
                json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    return time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=25_000)
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=6)
    args = parser.parse_args()
    scale = 10_000 / args.records
    for poison_rate in (0.0, 0.01):
        messages, poisoned = batch(args.records, args.per_message, poison_rate)
        size = sum(len(m.body.encode("utf-8", "surrogatepass")) for m in messages) / 1e6
        label = f"{poisoned} poison records ({poisoned / args.records:.1%})" if poisoned else "no poison"
        print(
            f"\nstream writer: {args.records} records for 3 objects x 2 operations in {len(messages)} messages "
            f"({size:.1f} MB), {label}; medians of {args.rounds} rounds, order rotated"
        )
        slow = {"api_delay": 0.02, "aws_delay": 0.01}
        ways: dict[str, Callable[[], Any]] = {
            "cpu": functools.partial(run_writer, messages, api_delay=0, aws_delay=0, concurrency=1),
            "json": functools.partial(bare_json, messages),
            "sequential": functools.partial(run_writer, messages, **slow, concurrency=1),
            "concurrent": functools.partial(run_writer, messages, **slow, concurrency=args.concurrency),
        }
        results: dict[str, list[Any]] = {name: [] for name in ways}
        names = list(ways)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                results[name].append(ways[name]())
        cpu = statistics.median(r[0] for r in results["cpu"])
        bare = statistics.median(results["json"])
        _, _, report, posts, calls = results["cpu"][0]
        print(
            f"  CPU per 10k records: writer {cpu * scale * 1000:6.0f} ms, bare json.loads+dumps "
            f"{bare * scale * 1000:5.0f} ms, ratio {cpu / bare:4.2f}x (goal <= 2x)"
        )
        print(
            f"  one invocation: {posts} write requests, {calls} AWS calls, {report.records_written} records written, "
            f"{report.records_dead_lettered} dead-lettered, {len(report.retry)} messages back to the queue"
        )
        seq = statistics.median(r[1] for r in results["sequential"])
        conc = statistics.median(r[1] for r in results["concurrent"])
        bare_wall = statistics.median(r[1] for r in results["cpu"])
        print(
            f"  wall time, 20 ms/API call, 10 ms/AWS call: sequential {seq * 1000:6.0f} ms, "
            f"concurrent ({args.concurrency}) {conc * 1000:6.0f} ms ({seq / conc:.1f}x faster); "
            f"of which waiting on calls: {(seq - bare_wall) * 1000:.0f} ms vs {(conc - bare_wall) * 1000:.0f} ms "
            f"(the same invocation without latency: {bare_wall * 1000:.0f} ms)"
        )


if __name__ == "__main__":
    main()
