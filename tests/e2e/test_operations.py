"""The operator's commands against the local stack: moto, the real handlers and state machine, the
sandbox over HTTP, with Lambda's asynchronous S3 deliveries and SQS triggers played by LocalStack."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from cli.local_stack import LocalStack
from cli.operations import redrive_intake, smoke
from sandbox.testing import SandboxHandle

API_DOWN = {"rules": [{"path": "/public/v1/*", "drop": "on_request"}]}
CSV = b"email,first_name\nr1@example.com,Ann\nr2@example.com,Bob\n"


@pytest.fixture
def stack(sandbox: SandboxHandle) -> Iterator[LocalStack]:
    env = {
        "EXPERITURE_API_URL": sandbox.base_url,
        "EXPERITURE_API_TOKEN": sandbox.token,
        "EXPERITURE_RETRY_MAX_ATTEMPTS": "2",
        "EXPERITURE_RETRY_BUDGET_SECONDS": "2",
        "IMPORT_POLL_INITIAL_SECONDS": "1",
        "IMPORT_POLL_MAX_SECONDS": "1",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    with LocalStack(env) as local:
        yield local


def _depth(stack: LocalStack) -> int:
    return stack.stream.depth(stack.intake_dlq_url)


def test_an_event_failing_all_three_deliveries_is_redriven_once_the_api_is_back(stack, sandbox):
    # Given the API down through an S3 event's three deliveries
    sandbox.admin.set_faults(API_DOWN)
    key = "incoming/contacts/while-down.csv"
    stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=CSV)
    stack.advance()

    # Then the event is in the intake's failure queue, in Lambda's on-failure record shape
    assert [(k, ok) for k, _, ok in stack.deliveries] == [(key, False)] * 3
    assert _depth(stack) == 1
    [message] = stack.sqs.receive_message(QueueUrl=stack.intake_dlq_url, VisibilityTimeout=0)["Messages"]
    record = json.loads(message["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestPayload"]["Records"][0]["s3"]["object"]["key"] == key
    assert record["responsePayload"]["errorType"] == "IntakeFailedError"
    summary = json.loads(stack.s3.get_object(Bucket=stack.bucket, Key=f"results/{key}.json")["Body"].read())
    assert summary["willRetry"] is True and sandbox.admin.records("contacts") == []

    # When a redrive runs while the API is still down, the event stays
    kept = redrive_intake(stack, say=lambda _: None)
    assert kept.succeeded == [] and [k for k, _ in kept.kept] == [key] and _depth(stack) == 1

    # When the API is back and redrive-intake runs
    sandbox.admin.clear_faults()
    done = redrive_intake(stack, say=lambda _: None)

    # Then the file is imported and the queue is empty
    assert done.succeeded == [key] and done.kept == []
    assert _depth(stack) == 0
    [execution] = stack.aws.executions()
    assert stack.aws.wait(execution["executionArn"], 60).status == "SUCCEEDED"
    final = json.loads(stack.s3.get_object(Bucket=stack.bucket, Key=f"results/{key}.json")["Body"].read())
    assert final["outcome"] == "completed"
    assert sorted(r["email"] for r in sandbox.admin.records("contacts")) == [
        "r1@example.com",
        "r2@example.com",
    ]


def test_redrive_leaves_a_message_that_is_not_an_s3_event_and_says_so(stack):
    # Given something else in the failure queue
    stack.sqs.send_message(QueueUrl=stack.intake_dlq_url, MessageBody='{"hello": 1}')
    # When redrive-intake runs, then it is kept (visible again) with the reason
    done = redrive_intake(stack, say=lambda _: None)
    assert done.succeeded == [] and "not an on-failure record" in done.kept[0][1]
    assert _depth(stack) == 1


def test_smoke_passes_against_the_local_stack(stack, sandbox):
    # When the smoke test runs against a healthy stack
    report = smoke(stack, timeout=60)

    # Then every check passes, and its file rows and records are stored in the CDP
    assert report.passed, report.table()
    assert [c.passed for c in report.checks] == [True, True, True]
    emails = {r["email"] for r in sandbox.admin.records("contacts")}
    # (smoke-<run id>-f<row>@ from the file, -r<n>@ from the records; the run id is random hex)
    assert len([e for e in emails if re.fullmatch(r"smoke-.+-f\d+@example\.com", e)]) == 2
    assert len([e for e in emails if re.fullmatch(r"smoke-.+-r\d+@example\.com", e)]) == 3
    assert "smoke test PASSED" in report.table()


def test_smoke_fails_clearly_when_the_api_refuses_the_token(stack, sandbox):
    # Given a stack whose token the API does not accept
    stack.set_env(EXPERITURE_API_TOKEN="revoked-token")

    # When the smoke test runs
    report = smoke(stack, timeout=60)

    # Then it fails at once on the credentials, saying so, and writes nothing
    table = report.table()
    assert not report.passed
    assert report.checks[0].passed is False
    assert "refused the credentials (HTTP 401" in report.checks[0].detail
    assert [c.passed for c in report.checks[1:]] == [None, None]
    assert "smoke test FAILED" in table and "Traceback" not in table
    assert sandbox.admin.import_jobs() == [] and sandbox.admin.batch_jobs() == []


def test_the_smoke_command_runs_locally_without_aws(capsys):
    from cli.main import main

    # When a user without a stack runs `experiture-ingest smoke --local`
    status = main(["smoke", "--local", "--timeout", "60"])

    # Then it prints the table and passes
    out = capsys.readouterr().out
    assert status == 0, out
    assert "smoke test PASSED" in out and out.count("PASS ") == 3
