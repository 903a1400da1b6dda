"""End to end on the local stream stack (cli/streams_local.py): one queue feeding both destinations."""

from __future__ import annotations

import json
import random

import boto3

from cli.streams_local import LocalStream, handler_env
from experiture_ingest.streams.contract import ATTR_DESTINATION, ATTR_OBJECT, ATTR_OPERATION, Target, envelope
from sandbox.testing import SandboxHandle
from tests.integration.crm.conftest import crm_env
from tests.integration.streams.conftest import aws, run_settler, run_writer  # noqa: F401

CONTACTS = Target.parse("contacts:upsert:email")
VEHICLES = Target.parse("crm/vehicle:upsert")
GARAGES = Target.parse("crm/garage:upsert")


def test_mixed_messages_for_both_destinations_in_one_batch_land_once_in_the_right_system(
    aws: None,  # noqa: F811
    sandbox: SandboxHandle,
):
    # Given one queue holding, shuffled: contact envelopes (no destination: Experiture), vehicle and
    # garage envelopes naming the CRM, and bare vehicle records routed by message attributes
    stream = LocalStream.create(boto3.client("sqs"), boto3.client("s3"), dynamodb=boto3.client("dynamodb"))
    contacts = [{"email": f"c{i}@example.com", "tier": "gold"} for i in range(600)]
    vehicles = [{"identifiers": {"ext_id": f"v-{i}"}, "attributes": {"model": f"m{i}"}} for i in range(1500)]
    garages = [{"identifiers": {"ext_id": f"g-{i}"}, "attributes": {"name": f"G{i}"}} for i in range(40)]
    bodies: list[tuple[str, dict]] = []
    bodies += [(json.dumps(envelope(CONTACTS, contacts[i : i + 50])), {}) for i in range(0, 600, 50)]
    bodies += [(json.dumps(envelope(VEHICLES, vehicles[i : i + 100])), {}) for i in range(0, 1400, 100)]
    bodies += [(json.dumps(envelope(GARAGES, garages[i : i + 10])), {}) for i in range(0, 40, 10)]
    attributes = {
        ATTR_DESTINATION: {"DataType": "String", "StringValue": "crm"},
        ATTR_OBJECT: {"DataType": "String", "StringValue": "vehicle"},
        ATTR_OPERATION: {"DataType": "String", "StringValue": "upsert"},
    }
    bodies += [(json.dumps(vehicles[i : i + 50]), attributes) for i in range(1400, 1500, 50)]
    random.Random(14).shuffle(bodies)
    for i in range(0, len(bodies), 10):
        stream.sqs.send_message_batch(
            QueueUrl=stream.queue_url,
            Entries=[
                {"Id": str(n), "MessageBody": body, "MessageAttributes": attrs}
                for n, (body, attrs) in enumerate(bodies[i : i + 10])
            ],
        )

    # When the writer takes them in one batch and the jobs and processes settle
    with handler_env(crm_env(sandbox, stream)):
        assert run_writer(stream) == 1
        run_settler(stream)

    # Then each record landed once, in the system its message named
    stored_contacts = [r["email"] for r in sandbox.admin.records("contacts")]
    assert sorted(stored_contacts) == sorted(c["email"] for c in contacts)
    assert sorted(r["ext_id"] for r in sandbox.admin.crm_records("vehicle")) == sorted(
        v["identifiers"]["ext_id"] for v in vehicles
    )
    assert sorted(r["ext_id"] for r in sandbox.admin.crm_records("garage")) == sorted(
        g["identifiers"]["ext_id"] for g in garages
    )
    # And nothing went to the DLQ, no report was needed, no ticket is left
    assert stream.dead_letters() == [] and stream.keys("reports/") == []
    assert stream.depth(stream.settle_url) == 0
    # And each destination got its own requests: 2 vehicle upserts (1,000 + 500), 1 garage, 1 contacts
    crm_posts = [r["path"] for r in sandbox.admin.requests(method="POST") if r["path"].startswith("/crm/")]
    assert sorted(crm_posts) == sorted(
        ["/crm/v3/objects/vehicle/batch/upsert"] * 2 + ["/crm/v3/objects/garage/batch/upsert"]
    )
    assert len(sandbox.admin.batch_jobs()) == 1


def test_crm_messages_on_a_stack_without_a_crm_key_are_dead_lettered_with_the_reason(
    aws: None,  # noqa: F811
    sandbox: SandboxHandle,
):
    # Given a stack without a CRM key, and one message for each destination
    stream = LocalStream.create(boto3.client("sqs"), boto3.client("s3"))
    stream.sqs.send_message(
        QueueUrl=stream.queue_url,
        MessageBody=json.dumps(envelope(VEHICLES, [{"identifiers": {"ext_id": "v"}}])),
    )
    stream.sqs.send_message(
        QueueUrl=stream.queue_url, MessageBody=json.dumps(envelope(CONTACTS, [{"email": "a@example.com"}]))
    )

    # When the writer runs
    with handler_env(stream.env(sandbox.base_url, sandbox.token)):
        run_writer(stream)
        run_settler(stream)

    # Then the Experiture record landed and the CRM one is dead-lettered saying the destination is off
    assert [r["email"] for r in sandbox.admin.records("contacts")] == ["a@example.com"]
    (letter,) = stream.dead_letters()
    assert letter["attributes"]["experiture.errorCode"] == "CRM.DISABLED"
    assert "CrmSecretArn" in letter["attributes"]["experiture.errorMessage"]
    assert letter["body"]["destination"] == "crm"
