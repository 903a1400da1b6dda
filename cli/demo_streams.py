"""The stream part of ``make demo``: records through local SQS (moto), the writer and the settler
(in-process handlers) into the sandbox, with a bad record dead-lettered on the way. The same queue
also carries a handful of records for the second destination, the CRM emulator (``/crm/v3``).

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
GARAGES = Target.parse("crm/garage:upsert")
VEHICLES = Target.parse("crm/vehicle:upsert")


def _crm_records() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """3 garages and 6 vehicles; one vehicle has a typo'd attribute the CRM would silently drop."""
    garages = [
        {"identifiers": {"ext_id": f"demo-g{i}"}, "attributes": {"name": f"Garage {i}", "city": city}}
        for i, city in enumerate(("Lyon", "Nantes", "Lille"))
    ]
    vehicles = [
        {
            "identifiers": {"ext_id": f"demo-v{i}"},
            "attributes": {"model": model, "brand": "Renault", "year": 2020 + i},
            "associations": [
                {"object_type": "garage", "records": [{"identifiers": {"ext_id": f"demo-g{i % 3}"}}]}
            ],
        }
        for i, model in enumerate(("Clio", "Megane", "Zoe", "Captur", "Kangoo", "Twingo"))
    ]
    vehicles[4]["attributes"] = {"model": "Kangoo", "colour": "red"}  # colour: not an attribute of vehicle
    return garages, vehicles


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
            garages, vehicles = _crm_records()
            crm_before = {t: len(sandbox_handle.admin.crm_records(t)) for t in ("garage", "vehicle")}
            send_records(stream.sqs, stream.queue_url, GARAGES, garages)
            print(
                f"streams: enqueued {len(garages)} garages for the CRM on the same queue "
                '(an envelope with "destination": "crm")'
            )
            env = stream.env(
                sandbox_handle.base_url,
                sandbox_handle.token,
                crm_url=sandbox_handle.crm_base_url,
                crm_key=sandbox_handle.crm_api_key,
            )
            with handler_env(env):
                invocations = stream.drain_writer(writer_app.handler, batch_size=2000)
                stream.drain_settle(settler_app.handler)
                # A vehicle links to its garage, which must exist by then: they go once garages landed.
                send_records(stream.sqs, stream.queue_url, VEHICLES, vehicles)
                print(f"streams: enqueued {len(vehicles)} vehicles for the CRM, each linked to a garage")
                invocations += stream.drain_writer(writer_app.handler, batch_size=2000)
                stream.drain_settle(settler_app.handler)
                posts = sandbox_handle.admin.requests(method="POST", path="/public/v1/records/")
                crm_posts = sandbox_handle.admin.requests(method="POST", path="/crm/v3/objects/")
                print(
                    f"streams: writer ran {invocations} invocation(s): {len(posts)} batch request(s) to "
                    f"Experiture, {len(crm_posts)} upsert request(s) to the CRM; every job and process settled"
                )
            after = {
                "contacts": len(sandbox_handle.admin.records("contacts")),
                "events": len(sandbox_handle.admin.records("events")),
            }
            for name, count in after.items():
                print(f"streams: Experiture {name}: {count - before[name]} new records in the sandbox")
            for object_type, count in crm_before.items():
                rows = sandbox_handle.admin.crm_records(object_type)
                print(
                    f"streams: CRM {object_type}: {len(rows) - count} new records in the emulator "
                    f"({', '.join(sorted(r['ext_id'] for r in rows if str(r['ext_id']).startswith('demo-')))})"
                )
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
