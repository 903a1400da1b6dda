"""The whole stack in one process, for the operator commands' tests: what ``sam deploy`` would create,
in moto, with the Lambda service's part played here.

:class:`LocalStack` joins :class:`cli.local_aws.LocalAws` (the ingest bucket, the REAL import state
machine, the functions' handlers) and :class:`cli.streams_local.LocalStream` (record, settle and
dead-letter queues, payload bucket, ledger table), adds the intake's failure queue, and answers
``outputs`` with the stack's output names. :meth:`LocalStack.advance` does what Lambda would do
between two looks by an operator:

- every new object under ``incoming/`` is an S3 event delivered to the intake *asynchronously*: up to
  three deliveries (the template's ``MaximumRetryAttempts: 2``), then the on-failure destination
  record (Lambda's shape, below) in the intake's failure queue;
- the record queue's and settle queue's triggers run the writer and settler until both are empty.

The destination record Lambda sends for an asynchronous invocation that failed every delivery::

    {"version": "1.0", "timestamp": "...",
     "requestContext": {"requestId": "...", "functionArn": "...:$LATEST",
                        "condition": "RetriesExhausted", "approximateInvokeCount": 3},
     "requestPayload": {<the S3 event>},
     "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
     "responsePayload": {"errorType": "...", "errorMessage": "..."}}
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import uuid
from collections.abc import Mapping
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import boto3

from cli.local_aws import REGION, LocalAws, function_arn, reset_warm_caches, s3_event
from cli.operations import Invoked
from cli.streams_local import LocalStream, handler_env
from experiture_ingest.client import ClientSettings, ExperitureClient

INTAKE = "IntakeFunction"
ASYNC_DELIVERIES = 3  # the first and Lambda's two retries (EventInvokeConfig.MaximumRetryAttempts)


def destination_record(event: Mapping[str, Any], error: BaseException, attempts: int) -> dict[str, Any]:
    """What Lambda sends to an on-failure destination after an asynchronous invocation failed for good."""
    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": function_arn(INTAKE, "$LATEST"),
            "condition": "RetriesExhausted",
            "approximateInvokeCount": attempts,
        },
        "requestPayload": dict(event),
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {
            "errorType": type(error).__name__,
            "errorMessage": str(error),
            "stackTrace": traceback.format_tb(error.__traceback__)[-3:],
        },
    }


class LocalStack:
    """moto + the real handlers + the sandbox: the operator commands' :class:`cli.operations.Stack`."""

    name = "local"

    def __init__(self, env: Mapping[str, str]) -> None:
        """``env``: the functions' API settings (EXPERITURE_API_URL and a token or secret ARN, ...)."""
        self.env = dict(env)
        self._stack = ExitStack()
        self._seen: set[tuple[str, str]] = set()
        self.deliveries: list[tuple[str, int, bool]] = []  # (key, attempt, succeeded)

    def __enter__(self) -> LocalStack:
        self.aws = self._stack.enter_context(LocalAws(env=self.env))
        self.s3 = self.aws.s3
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        self.bucket = "experiture-ingest-local"
        self.s3.create_bucket(Bucket=self.bucket)
        self.s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        self.stream = LocalStream.create(self.sqs, self.s3, name="stream", dynamodb=self.dynamodb)
        self.intake_dlq_url = self.sqs.create_queue(QueueName="intake-failures")["QueueUrl"]
        stream_env = {
            "DEAD_LETTER_QUEUE_URL": self.stream.dlq_url,
            "SETTLE_QUEUE_URL": self.stream.settle_url,
            "PAYLOAD_BUCKET": self.stream.bucket,
            "LEDGER_TABLE": self.stream.ledger_table or "",
            "SETTLE_POLL_FIRST_SECONDS": "0",
        }
        self._stack.enter_context(handler_env({**self.env, **stream_env}))
        self.outputs = {
            "IngestBucketName": self.bucket,
            "ImportStateMachineArn": self.aws.state_machine_arn,
            "IntakeDeadLetterQueueUrl": self.intake_dlq_url,
            "IntakeFunctionName": INTAKE,
            "RecordQueueUrl": self.stream.queue_url,
            "RecordDeadLetterQueueUrl": self.stream.dlq_url,
            "StreamPayloadBucketName": self.stream.bucket,
            "StreamMessageLedgerName": self.stream.ledger_table or "",
        }
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def set_env(self, **changes: str) -> None:
        """Change the functions' environment (a new token, say) as a redeploy would."""
        self.env.update(changes)
        self._stack.enter_context(mock.patch.dict(os.environ, changes))
        self._stack.enter_context(handler_env(changes))  # writer and settler rebuilt with it
        modules = {sys.modules[handler.__module__] for handler in self.aws.functions.values()}
        reset_warm_caches(list(modules))  # every other function's cached clients too

    # What the operator commands use (cli.operations.Stack) -------------------------------------

    def api_client(self) -> ExperitureClient:
        return ExperitureClient.from_settings(ClientSettings.from_env(self.env))

    def invoke_intake(self, event: Mapping[str, Any]) -> Invoked:
        """A synchronous invocation (what redrive-intake does): the handler's answer or its error."""
        try:
            self.aws.invoke(INTAKE, event)
        except Exception as exc:  # what Lambda reports as FunctionError: Unhandled
            return Invoked(ok=False, error=f"{type(exc).__name__}: {exc}")
        return Invoked(ok=True)

    def advance(self) -> None:
        """Deliver new S3 events to the intake, then run the writer and settler until their queues empty."""
        self.deliver_new_objects()
        import functions.batch_settler.app as settler_app
        import functions.record_writer.app as writer_app

        self.stream.drain_writer(writer_app.handler)
        self.stream.drain_settle(settler_app.handler, timeout=30)

    # The Lambda service's part ----------------------------------------------------------------

    def deliver_new_objects(self) -> int:
        """Each object version under incoming/ not seen yet becomes one asynchronous intake invocation."""
        delivered = 0
        paginator = self.s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix="incoming/"):
            for version in page.get("Versions", []):
                ident = (version["Key"], version.get("VersionId") or "null")
                if ident in self._seen:
                    continue
                self._seen.add(ident)
                event = s3_event(
                    self.bucket,
                    version["Key"],
                    version["Size"],
                    version["ETag"].strip('"'),
                    version.get("VersionId"),
                )
                self.invoke_async(event)
                delivered += 1
        return delivered

    def invoke_async(self, event: Mapping[str, Any]) -> bool:
        """Lambda's asynchronous invocation: up to three deliveries, then the on-failure destination."""
        key = event["Records"][0]["s3"]["object"]["key"]
        error: BaseException | None = None
        for attempt in range(1, ASYNC_DELIVERIES + 1):
            try:
                self.aws.invoke(INTAKE, event)
            except Exception as exc:
                error = exc
                self.deliveries.append((key, attempt, False))
                continue
            self.deliveries.append((key, attempt, True))
            return True
        assert error is not None
        self.sqs.send_message(
            QueueUrl=self.intake_dlq_url,
            MessageBody=json.dumps(destination_record(event, error, ASYNC_DELIVERIES), default=str),
        )
        return False
