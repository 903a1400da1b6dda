"""The message ledger against moto DynamoDB: bulk look-ups, bulk writes, expiry."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from experiture_ingest.streams.ledger import MessageLedger, ledger_key


@pytest.fixture
def table(monkeypatch) -> Iterator[object]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    with mock_aws():
        db = boto3.client("dynamodb")
        db.create_table(
            TableName="ledger",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield db


def test_recorded_messages_are_found_in_bulk_with_their_job(table):
    # Given 260 messages recorded as job-1 (more than one BatchWriteItem and BatchGetItem call)
    ledger = MessageLedger(table, "ledger", clock=lambda: 1_000.0)
    keys = [ledger_key(f"m{i}", "h") for i in range(260)]
    ledger.record(keys, "job-1")
    # When the ledger is asked about them and 40 others
    found = ledger.written(keys + [ledger_key(f"n{i}", "h") for i in range(40)])
    # Then exactly the recorded ones are found, each with its job
    assert set(found) == set(keys) and set(found.values()) == {"job-1"}


def test_a_different_body_under_the_same_message_id_is_not_found(table):
    ledger = MessageLedger(table, "ledger")
    ledger.record([ledger_key("m1", "body-a")], "job-1")
    assert ledger.written([ledger_key("m1", "body-b")]) == {}


def test_an_expired_item_no_longer_counts(table):
    # Given an item recorded with a one-hour TTL, that DynamoDB has not deleted yet
    MessageLedger(table, "ledger", ttl_seconds=3600, clock=lambda: 0.0).record(["m1#h"], "job-1")
    # When asked two hours later
    later = MessageLedger(table, "ledger", clock=lambda: 7200.0)
    # Then it is not found
    assert later.written(["m1#h"]) == {}
