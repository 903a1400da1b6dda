"""`experiture-ingest status`: waiting and running files of a local table or a deployed stack."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from cli.local_aws import QUEUE_TABLE_ID, create_table, load_template
from cli.main import main
from cli.status import latest_outcomes
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
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows = [r for r in lines if "status" in r]
    assert [(r["status"], r["object_name"], r["key"]) for r in rows] == [
        ("running", "contacts", "incoming/contacts/a.csv"),
        ("waiting", "contacts", "incoming/contacts/b.csv"),
        ("waiting", "orders", "incoming/orders/c.csv"),
    ]
    assert rows[0]["running_seconds"] >= 599 and rows[0]["waited_seconds"] == 0
    assert 539 <= rows[1]["waited_seconds"] <= 570


def test_status_shows_a_split_file_holding_its_objects_turn_before_the_files_behind_it(dynamodb, capsys):
    # Given a split file of contacts handed off (its turn held), and a later contacts file waiting
    create_table(dynamodb, load_template(), QUEUE_TABLE_ID, "experiture-ingest-import-queue")
    queue = QueueTable(dynamodb, "experiture-ingest-import-queue")
    assert queue.add(entry("turn:big.csv-01", "contacts", "incoming/contacts/big.csv", 0, "holding"))
    assert queue.add(entry("imp_2", "contacts", "incoming/contacts/later.csv", 1))

    # When the user asks for the status
    assert main(["status"]) == 0

    # Then the split file is listed first as holding, and counted apart from the waiting files
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out if "incoming/" in line]
    assert [(r[0], r[-2]) for r in rows] == [
        ("holding", "incoming/contacts/big.csv"),
        ("waiting", "incoming/contacts/later.csv"),
    ]
    assert "0 running, 1 waiting, 1 split file(s) holding their object's turn" in out


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


def test_status_shows_each_dead_letter_queue_depth_and_the_latest_outcomes_newest_first(dynamodb, capsys):
    # Given a stack naming its intake and record DLQs and bucket in outputs, its settle DLQ only as a
    # resource (an older stack), dead letters waiting, and three summaries written one after another
    queue_table = {
        "Type": "AWS::DynamoDB::Table",
        "Properties": {
            "TableName": "prod-import-queue",
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": k, "AttributeType": "S"} for k in ("pk", "sk")],
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
        },
    }
    template = {
        "Resources": {
            "ImportQueueTable": queue_table,
            "IngestBucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "prod-ingest-files"}},
            "IntakeDeadLetterQueue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "intake-dlq"}},
            "RecordDeadLetterQueue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "record-dlq"}},
            "SettleDeadLetterQueue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "settle-dlq"}},
        },
        "Outputs": {
            "ImportQueueTableName": {"Value": {"Ref": "ImportQueueTable"}},
            "IngestBucketName": {"Value": {"Ref": "IngestBucket"}},
            "IntakeDeadLetterQueueUrl": {"Value": {"Ref": "IntakeDeadLetterQueue"}},
            "RecordDeadLetterQueueUrl": {"Value": {"Ref": "RecordDeadLetterQueue"}},
        },
    }
    boto3.client("cloudformation", region_name="us-east-1").create_stack(
        StackName="prod-ingest", TemplateBody=json.dumps(template)
    )
    sqs = boto3.client("sqs", region_name="us-east-1")
    for name, count in [("record-dlq", 2), ("settle-dlq", 1)]:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        for n in range(count):
            sqs.send_message(QueueUrl=url, MessageBody=f"dead letter {n}")
    s3 = boto3.client("s3", region_name="us-east-1")
    for n, outcome in enumerate(["completed", "failed", "completed_with_errors"]):
        source = f"incoming/contacts/f{n}.csv"
        body = {"outcome": outcome, "source": {"key": source}}
        s3.put_object(Bucket="prod-ingest-files", Key=f"results/{source}.json", Body=json.dumps(body))
        s3.put_object(Bucket="prod-ingest-files", Key=f"results/{source}.errors.jsonl", Body=b"{}")
        time.sleep(1.05)  # S3 dates summaries to the second

    # When the user asks for the stack's status, with the two latest outcomes
    assert main(["status", "--stack", "prod-ingest", "--outcomes", "2"]) == 0

    # Then each DLQ's depth is shown, and the two newest summaries, newest first
    lines = capsys.readouterr().out.splitlines()
    assert "dead letters: intake failure queue 0, record DLQ 2, settle DLQ 1" in lines
    assert "latest outcomes (2):" in lines
    listed = lines[lines.index("latest outcomes (2):") + 2 :]
    assert [line.split()[2:] for line in listed] == [
        ["completed_with_errors", "incoming/contacts/f2.csv"],
        ["failed", "incoming/contacts/f1.csv"],
    ]


def test_status_outcomes_are_read_from_a_bounded_number_of_listed_pages(dynamodb):
    # Given a bucket with more summaries than one page of the listing (pages of two)
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="many")
    for n in range(5):
        s3.put_object(
            Bucket="many", Key=f"results/incoming/a/{n:04d}.csv.json", Body=b'{"outcome": "completed"}'
        )

    # When the latest outcomes are read from at most one page
    outcomes = latest_outcomes(s3, "many", limit=3, max_pages=1, page_size=2)

    # Then only that page's two summaries are read
    assert sorted(o.key for o in outcomes) == [
        "incoming/a/0000.csv",
        "incoming/a/0001.csv",
    ]
