"""The record writer's cost per 10,000 records, beside a naive one-request-per-record writer.

Both run in-process against the same local transport (httpx.MockTransport answering like the
Records API), so the numbers are the client side only: CPU time of the handler logic (parse, schema
checks, packing, request bodies, payload and ticket) and the number of HTTP requests. SQS and S3 are
in-memory stand-ins that only count calls, so moto's own cost does not blur the measurement.

    .tools/bin/uv run --frozen --no-sync python -m bench.stream_writer [--records 10000] [--per-message 100]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import httpx
from aws_lambda_powertools.utilities.batch import process_partial_response

from experiture_ingest.client import BearerToken, ExperitureClient, RetryPolicy
from experiture_ingest.streams.contract import Target, parse_message
from experiture_ingest.streams.deadletters import DeadLetterQueue
from experiture_ingest.streams.processing import processor_for
from experiture_ingest.streams.producer import message_bodies
from experiture_ingest.streams.schema import SchemaCache
from experiture_ingest.streams.settle import PayloadStore, SettleQueue
from experiture_ingest.streams.writer import StreamWriter

SCHEMA = {
    "objectName": "contacts",
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
}


class Api:
    def __init__(self) -> None:
        self.requests = 0
        self.reads = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            self.reads += 1
            return httpx.Response(200, json={"success": True, "data": SCHEMA, "correlationId": "c"})
        self.requests += 1
        data = {
            "operation": "upsert",
            "objectName": "contacts",
            "accepted": True,
            "jobId": f"job-{self.requests}",
            "acceptedRecords": 1,
        }
        return httpx.Response(
            202 if request.url.path.endswith("-batch") else 200,
            json={"success": True, "data": data, "correlationId": "c"},
        )


class Counting:
    """SQS and S3 stand-ins: accept every call."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        def call(**kwargs: Any) -> dict[str, Any]:
            self.calls += 1
            return {"Successful": [{"Id": e["Id"]} for e in kwargs.get("Entries", [])], "Failed": []}

        return call


def _client(api: Api) -> ExperitureClient:
    return ExperitureClient(
        "https://api.test/public/v1",
        BearerToken("t"),
        transport=httpx.MockTransport(api),
        retry=RetryPolicy(max_attempts=1),
    )


def _event(bodies: list[str]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": "r",
                "body": b,
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:records",
                "awsRegion": "us-east-1",
            }
            for i, b in enumerate(bodies)
        ]
    }


def packed(event: dict[str, Any]) -> tuple[float, int, int]:
    api, aws = Api(), Counting()
    client = _client(api)
    writer = StreamWriter(
        client,
        SchemaCache(client),
        DeadLetterQueue(aws, "dlq"),  # type: ignore[arg-type]
        PayloadStore(aws, "kept"),
        SettleQueue(aws, "settle"),
    )  # type: ignore[arg-type]
    started = time.process_time()
    processor = processor_for(event, writer)
    response = process_partial_response(event=event, record_handler=processor.stage, processor=processor)
    cpu = time.process_time() - started
    assert response["batchItemFailures"] == []
    return cpu, api.requests, api.reads


def naive(event: dict[str, Any]) -> tuple[float, int, int]:
    """One POST /upsert per record (the same parsing, no packing, no schema cache needed)."""
    api = Api()
    client = _client(api)
    written = 0
    started = time.process_time()
    for record in event["Records"]:
        message = parse_message(record["body"])
        for row in message.records:
            client.upsert(message.target.object, row, match_key=message.target.match_key)
            written += 1
    assert written == len(event["Records"]) * len(parse_message(event["Records"][0]["body"]).records)
    return time.process_time() - started, api.requests, api.reads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    target = Target.parse("contacts:upsert:email")
    rows = [
        {
            "email": f"user{i}@example.com",
            "first_name": "Ada",
            "tier": "gold",
            "age": 30 + i % 50,
            "lifetime_value": i * 1.5,
            "opted_in": i % 2 == 0,
            "last_seen": "2026-04-21T15:30:00+00:00",
        }
        for i in range(args.records)
    ]
    event = _event(list(message_bodies(target, rows, max_records=args.per_message, max_bytes=1024 * 1024)))
    scale = 10_000 / args.records
    print(
        f"stream writer: {args.records} records in {len(event['Records'])} messages "
        f"({len(json.dumps(event)) / 1e6:.1f} MB event), best of {args.rounds}, in-process transport"
    )
    for name, run in (("packed writer", packed), ("naive 1 request/record", naive)):
        results = [run(event) for _ in range(args.rounds)]
        cpu = min(r[0] for r in results)
        _, requests, reads = results[0]
        print(
            f"  {name:24s} CPU {cpu * scale * 1000:8.0f} ms / 10k records   "
            f"write requests {requests * scale:7.0f} / 10k records   (+{reads} schema read)"
        )


if __name__ == "__main__":
    main()
