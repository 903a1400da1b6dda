"""`experiture-ingest status`: waiting and running files of a local table or a deployed stack."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from cli.local_aws import QUEUE_TABLE_ID, create_table, load_template
from cli.main import main
from experiture_ingest.scheduling import QueueEntry, QueueTable


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("dynamodb", region_name="us-east-1")


def entry(job: str, obj: str, key: str, minute: int, status: str = "waiting") -> QueueEntry:
    """A file queued ``10 - minute`` minutes ago."""
    at = datetime.now(UTC) - timedelta(minutes=10 - minute)
    return QueueEntry(
        job,
        obj,
        f"object:{obj}",
        "b",
        key,
        at,
        f"{minute:02X}",
        at,
        status,  # type: ignore[arg-type]
        task_token=f"token-{job}",
        granted_at=at if status == "running" else None,
        slot=0 if status == "running" else None,
    )


def fill(dynamodb: object, table: str) -> None:
    create_table(dynamodb, load_template(), QUEUE_TABLE_ID, table)
    queue = QueueTable(dynamodb, table)
    for item in (
        entry("imp_3", "orders", "incoming/orders/c.csv", 2),
        entry("imp_1", "contacts", "incoming/contacts/a.csv", 0, "running"),
        entry("imp_2", "contacts", "incoming/contacts/b.csv", 1),
    ):
        assert queue.add(item)


def test_status_lists_running_then_waiting_files_with_object_and_wait(dynamodb, capsys):
    # Given a local queue: one file running, two waiting
    fill(dynamodb, "experiture-ingest-import-queue")

    # When the user asks for the status of the local table
    assert main(["status", "--json"]) == 0

    # Then the running file comes first, the waiting ones in the order they will start, with waits
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["status"], r["object_name"], r["key"]) for r in rows] == [
        ("running", "contacts", "incoming/contacts/a.csv"),
        ("waiting", "contacts", "incoming/contacts/b.csv"),
        ("waiting", "orders", "incoming/orders/c.csv"),
    ]
    assert rows[0]["running_seconds"] >= 599 and rows[0]["waited_seconds"] == 0
    assert 539 <= rows[1]["waited_seconds"] <= 570


def test_status_of_a_deployed_stack_finds_its_table_through_cloudformation(dynamodb, capsys):
    # Given a stack whose output names its queue table
    cfn = boto3.client("cloudformation", region_name="us-east-1")
    template = {
        "Resources": {
            "ImportQueueTable": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "TableName": "prod-import-queue",
                    "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [
                        {"AttributeName": "pk", "AttributeType": "S"},
                        {"AttributeName": "sk", "AttributeType": "S"},
                    ],
                    "KeySchema": [
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"},
                    ],
                },
            }
        },
        "Outputs": {"ImportQueueTableName": {"Value": {"Ref": "ImportQueueTable"}}},
    }
    cfn.create_stack(StackName="prod-ingest", TemplateBody=json.dumps(template))
    QueueTable(dynamodb, "prod-import-queue").add(entry("imp_9", "profiles", "incoming/profiles/p.csv", 3))

    # When the user asks for the stack's status
    assert main(["status", "--stack", "prod-ingest"]) == 0

    # Then the table is the stack's and the file is listed
    out = capsys.readouterr().out
    assert "import queue prod-import-queue" in out
    assert "incoming/profiles/p.csv" in out and "0 running, 1 waiting" in out
