"""The stream part of ``make demo``: records through local SQS (moto), the writer and the settler
(in-process handlers) into the sandbox, with a bad record dead-lettered on the way.

``run(sandbox_handle, workdir)`` prints its progress; the lead's ``cli/demo.py`` calls it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from experiture_ingest.streams.contract import Target
from experiture_ingest.streams.producer import send_records

CONTACTS = Target.parse("contacts:upsert:email")
EVENTS = Target.parse("events:append")


def run(sandbox_handle: Any, workdir: Path) -> None:
    import boto3
    from moto import mock_aws

    import functions.batch_settler.app as settler_app
    import functions.record_writer.app as writer_app
    from cli.streams_local import LocalStream, handler_env

    quiet = {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }
    saved = {k: os.environ.get(k) for k in quiet}
    os.environ.update(quiet)
    # The handlers log structured JSON at INFO; the demo prints its own summary instead.
    noisy = [logging.getLogger(name) for name in ("experiture-ingest", "experiture_ingest", "httpx")]
    levels = [log.level for log in noisy]
    for log in noisy:
        log.setLevel(logging.ERROR)
    try:
        with mock_aws():
            stream = LocalStream.create(boto3.client("sqs"), boto3.client("s3"), name="demo-records")
            print("streams: local SQS queue, DLQ, settle queue and payload bucket created (moto)")
            before = {
                "contacts": len(sandbox_handle.admin.records("contacts")),
                "events": len(sandbox_handle.admin.records("events")),
            }
            contacts = [
                {"email": f"stream{i}@example.com", "tier": "gold", "age": 20 + i % 60} for i in range(3000)
            ]
            contacts[1234]["age"] = "unknown"  # a bad record: dead-lettered alone, its neighbours land
            events = [
                {"event_id": f"stream-e{i}", "event_type": "page_view", "occurred_at": "2026-04-21T15:30:00Z"}
                for i in range(2000)
            ]
            sent = send_records(stream.sqs, stream.queue_url, CONTACTS, contacts, max_message_bytes=16 * 1024)
            sent += send_records(stream.sqs, stream.queue_url, EVENTS, events, max_message_bytes=16 * 1024)
            print(
                f"streams: enqueued {len(contacts)} contact upserts and {len(events)} event appends in {sent} messages"
            )
            env = stream.env(sandbox_handle.base_url, sandbox_handle.token)
            with handler_env(env):
                invocations = stream.drain_writer(writer_app.handler, batch_size=2000)
                posts = sandbox_handle.admin.requests(method="POST", path="/public/v1/records/")
                print(
                    f"streams: writer ran {invocations} invocation(s), sending {len(posts)} batch request(s)"
                )
                stream.drain_settle(settler_app.handler)
                print("streams: every batch job settled")
            after = {
                "contacts": len(sandbox_handle.admin.records("contacts")),
                "events": len(sandbox_handle.admin.records("events")),
            }
            for name, count in after.items():
                print(f"streams: {name}: {count - before[name]} new records in the sandbox")
            letters = stream.dead_letters()
            for letter in letters:
                attrs = letter["attributes"]
                print(
                    f"streams: dead letter: {attrs['experiture.errorCode']}: {attrs['experiture.errorMessage']} "
                    f"(message {attrs.get('experiture.sourceMessageId')}, record {attrs.get('experiture.recordIndex')})"
                )
            out = Path(workdir) / "stream-dead-letters.json"
            out.write_text(json.dumps(letters, indent=2))
            print(f"streams: dead letters written to {out}")
    finally:
        for log, level in zip(noisy, levels, strict=True):
            log.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
