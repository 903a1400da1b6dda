"""The stream path against moto SQS/S3 (in-process) and the sandbox over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

import functions.batch_settler.app as settler_app
import functions.record_writer.app as writer_app
from cli.streams_local import LocalStream, handler_env
from sandbox.testing import SandboxHandle


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.fixture
def stream(aws: None, sandbox: SandboxHandle) -> Iterator[LocalStream]:
    local = LocalStream.create(boto3.client("sqs"), boto3.client("s3"), dynamodb=boto3.client("dynamodb"))
    with handler_env(local.env(sandbox.base_url, sandbox.token, EXPERITURE_RETRY_MAX_ATTEMPTS="2")):
        yield local


def run_writer(stream: LocalStream, batch_size: int = 2000) -> int:
    return stream.drain_writer(writer_app.handler, batch_size)


def run_settler(stream: LocalStream) -> int:
    return stream.drain_settle(settler_app.handler)
