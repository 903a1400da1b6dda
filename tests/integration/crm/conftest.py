"""The stream path to the CRM emulator: moto SQS/S3 in-process, the sandbox's /crm/v3 over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from cli.streams_local import LocalStream, handler_env
from experiture_ingest.streams.contract import Target
from sandbox.testing import SandboxHandle
from tests.integration.streams.conftest import aws  # noqa: F401  (the moto fixture)

VEHICLE = Target.parse("crm/vehicle:upsert")


def crm_env(sandbox: SandboxHandle, local: LocalStream, **extra: str) -> dict[str, str]:
    return local.env(
        sandbox.base_url,
        sandbox.token,
        crm_url=sandbox.crm_base_url,
        crm_key=sandbox.crm_api_key,
        EXPERITURE_RETRY_MAX_ATTEMPTS="2",
        CRM_RETRY_MAX_ATTEMPTS="4",
        **extra,
    )


@pytest.fixture
def crm_stream(aws: None, sandbox: SandboxHandle) -> Iterator[LocalStream]:  # noqa: F811
    local = LocalStream.create(boto3.client("sqs"), boto3.client("s3"), dynamodb=boto3.client("dynamodb"))
    with handler_env(crm_env(sandbox, local)):
        yield local


def vehicle(i: int, **attributes: Any) -> dict[str, Any]:
    return {
        "identifiers": {"ext_id": f"v-{i}"},
        "attributes": {"model": f"model {i}", "brand": "Renault", "year": 2020 + i % 5, **attributes},
    }


def enqueue(
    stream: LocalStream, target: Target, records: list[dict[str, Any]], per_message: int = 100
) -> None:
    from experiture_ingest.streams.contract import envelope

    bodies = [
        json.dumps(envelope(target, records[i : i + per_message]))
        for i in range(0, len(records), per_message)
    ]
    for i in range(0, len(bodies), 10):
        stream.sqs.send_message_batch(
            QueueUrl=stream.queue_url,
            Entries=[{"Id": str(n), "MessageBody": b} for n, b in enumerate(bodies[i : i + 10])],
        )


def letters_by_code(stream: LocalStream) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for letter in stream.dead_letters():
        out.setdefault(letter["attributes"]["experiture.errorCode"], []).append(letter)
    return out
