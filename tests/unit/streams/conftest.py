"""Shared fixtures for the stream unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws


@pytest.fixture
def aws_env(monkeypatch) -> None:
    """A region and dummy credentials for moto: no test can reach a real account."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")


@pytest.fixture
def aws(aws_env) -> Iterator[tuple]:
    with mock_aws():
        sqs, s3 = boto3.client("sqs"), boto3.client("s3")
        s3.create_bucket(Bucket="kept")
        dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
        settle = sqs.create_queue(QueueName="settle")["QueueUrl"]
        yield sqs, s3, dlq, settle
