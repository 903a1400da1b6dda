"""Run the stream path locally: queues and bucket in moto, the handlers in-process, the sandbox over HTTP.

What the Lambda service does for the record queue is imitated closely enough to test behaviour:
an invocation receives up to ``batch_size`` messages (stopping before the 6 MB invocation payload
cap), the handler's ``batchItemFailures`` stay on the queue (made visible again at once, instead of
after the visibility timeout), every other message is deleted; after ``max_receive_count``
receives SQS's redrive policy moves a message to the DLQ, as moto does.

Used by the integration tests, ``cli/demo_streams.py`` and ``bench/stream_writer.py``; never deployed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cli.lambda_context import LambdaContext

INVOCATION_PAYLOAD_CAP = 6 * 1024 * 1024
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def FakeContext(function_name: str = "local-record-writer") -> LambdaContext:
    """The writer's and settler's context: their 300 s timeout (template.yaml)."""
    return LambdaContext.for_function(function_name, timeout_seconds=300)


@dataclass
class Invocation:
    """One writer invocation: the messages it held and the ones it returned for retry."""

    message_ids: list[str]
    bodies: list[str]
    failures: list[str]
    payload_bytes: int


@dataclass
class LocalStream:
    sqs: Any
    s3: Any
    queue_url: str
    dlq_url: str
    settle_url: str
    settle_dlq_url: str
    bucket: str
    invocations: list[Invocation] = field(default_factory=list)
    ledger_table: str | None = None

    @classmethod
    def create(
        cls,
        sqs: Any,
        s3: Any,
        *,
        name: str = "records",
        fifo: bool = False,
        max_receive_count: int = 5,
        dynamodb: Any = None,
    ) -> LocalStream:
        """The queues and bucket of the Streams section (and its ledger table with ``dynamodb``)."""
        suffix = ".fifo" if fifo else ""
        fifo_attrs = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if fifo else {}
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq{suffix}", Attributes=fifo_attrs)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
        queue_url = sqs.create_queue(
            QueueName=f"{name}{suffix}",
            Attributes={**fifo_attrs, "RedrivePolicy": redrive, "VisibilityTimeout": "720"},
        )["QueueUrl"]
        settle_dlq = sqs.create_queue(QueueName=f"{name}-settle-dlq")["QueueUrl"]
        settle_dlq_arn = sqs.get_queue_attributes(QueueUrl=settle_dlq, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        settle_url = sqs.create_queue(
            QueueName=f"{name}-settle",
            Attributes={
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": settle_dlq_arn, "maxReceiveCount": "10"}),
                "VisibilityTimeout": "360",
            },
        )["QueueUrl"]
        bucket = f"{name}-payloads"
        s3.create_bucket(Bucket=bucket)
        ledger = None
        if dynamodb is not None:
            ledger = f"{name}-ledger"
            dynamodb.create_table(
                TableName=ledger,
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        return cls(sqs, s3, queue_url, dlq_url, settle_url, settle_dlq, bucket, ledger_table=ledger)

    def env(self, api_url: str, token: str, **extra: str) -> dict[str, str]:
        """The environment the two functions read (the template sets the same variables)."""
        return {
            "EXPERITURE_API_URL": api_url,
            "EXPERITURE_API_TOKEN": token,
            "DEAD_LETTER_QUEUE_URL": self.dlq_url,
            "SETTLE_QUEUE_URL": self.settle_url,
            "PAYLOAD_BUCKET": self.bucket,
            "SETTLE_POLL_FIRST_SECONDS": "0",
            **({"LEDGER_TABLE": self.ledger_table} if self.ledger_table else {}),
            **extra,
        }

    # The writer ----------------------------------------------------------------------------------

    def _arn(self, url: str) -> str:
        return f"arn:aws:sqs:us-east-1:123456789012:{url.rsplit('/', 1)[-1]}"

    def receive_event(self, batch_size: int) -> tuple[dict[str, Any], dict[str, str]]:
        """Up to ``batch_size`` messages as a Lambda SQS event (under the 6 MB cap), and their receipts."""
        records: list[dict[str, Any]] = []
        receipts: dict[str, str] = {}
        size = 0
        while len(records) < batch_size:
            answer = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, batch_size - len(records)),
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
                WaitTimeSeconds=0,
            )
            messages = answer.get("Messages", [])
            if not messages:
                break
            for message in messages:
                record = _event_record(message, self._arn(self.queue_url))
                this = len(json.dumps(record))
                if records and size + this > INVOCATION_PAYLOAD_CAP:
                    # Lambda would leave it for the next invocation.
                    self.sqs.change_message_visibility(
                        QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                    )
                    return {"Records": records}, receipts
                size += this
                records.append(record)
                receipts[message["MessageId"]] = message["ReceiptHandle"]
        return {"Records": records}, receipts

    def invoke_writer(self, handler: Handler, batch_size: int = 2000) -> Invocation | None:
        event, receipts = self.receive_event(batch_size)
        if not event["Records"]:
            return None
        response = handler(event, FakeContext())
        failures = [f["itemIdentifier"] for f in response.get("batchItemFailures", [])]
        self._settle_receipts(self.queue_url, receipts, failures)
        invocation = Invocation(
            [r["messageId"] for r in event["Records"]],
            [r["body"] for r in event["Records"]],
            failures,
            len(json.dumps(event)),
        )
        self.invocations.append(invocation)
        return invocation

    def drain_writer(self, handler: Handler, batch_size: int = 2000, max_invocations: int = 200) -> int:
        """Invoke the writer until the queue is empty; the number of invocations."""
        count = 0
        while count < max_invocations and self.invoke_writer(handler, batch_size) is not None:
            count += 1
        return count

    # The settler ---------------------------------------------------------------------------------

    def drain_settle(self, handler: Handler, timeout: float = 60.0) -> int:
        """Invoke the settler until no ticket is left (visible, delayed or in flight)."""
        deadline = time.monotonic() + timeout
        invocations = 0
        while time.monotonic() < deadline:
            answer = self.sqs.receive_message(
                QueueUrl=self.settle_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
            )
            messages = answer.get("Messages", [])
            if not messages:
                if self.depth(self.settle_url) == 0:
                    return invocations
                time.sleep(0.05)
                continue
            event = {"Records": [_event_record(m, self._arn(self.settle_url)) for m in messages]}
            response = handler(event, FakeContext(function_name="local-batch-settler"))
            failures = [f["itemIdentifier"] for f in response.get("batchItemFailures", [])]
            self._settle_receipts(
                self.settle_url, {m["MessageId"]: m["ReceiptHandle"] for m in messages}, failures
            )
            invocations += 1
            time.sleep(0.01)  # give the sandbox's job worker a moment between checks
        raise TimeoutError(f"settle tickets still pending after {timeout} s")

    # Inspection ----------------------------------------------------------------------------------

    def depth(self, url: str) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every DLQ message (body parsed when JSON, attributes as plain strings), left in place."""
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        while True:
            answer = self.sqs.receive_message(
                QueueUrl=self.dlq_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                VisibilityTimeout=60,  # longer than reading them all takes; made visible again below
            )
            messages = [m for m in answer.get("Messages", []) if m["MessageId"] not in seen]
            if not messages:
                break
            for m in messages:
                seen.add(m["MessageId"])
                try:
                    body: Any = json.loads(m["Body"])
                except (ValueError, RecursionError):  # not JSON, or nested too deep to parse here
                    body = m["Body"]
                attributes = {k: v.get("StringValue") for k, v in m.get("MessageAttributes", {}).items()}
                out.append({"body": body, "attributes": attributes, "receipt": m["ReceiptHandle"]})
        for item in out:  # leave them for the user (and a replay)
            self.sqs.change_message_visibility(
                QueueUrl=self.dlq_url, ReceiptHandle=item.pop("receipt"), VisibilityTimeout=0
            )
        return out

    def keys(self, prefix: str) -> list[str]:
        answer = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for o in answer.get("Contents", [])]

    def _settle_receipts(self, url: str, receipts: dict[str, str], failures: list[str]) -> None:
        done = [(mid, rh) for mid, rh in receipts.items() if mid not in failures]
        for i in range(0, len(done), 10):
            chunk = done[i : i + 10]
            self.sqs.delete_message_batch(
                QueueUrl=url, Entries=[{"Id": str(n), "ReceiptHandle": rh} for n, (_, rh) in enumerate(chunk)]
            )
        for mid in failures:
            if mid in receipts:
                self.sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=receipts[mid], VisibilityTimeout=0
                )


def _event_record(message: dict[str, Any], arn: str) -> dict[str, Any]:
    """An SQS message as Lambda's event source mapping hands it over."""
    attributes = {
        name: {
            "stringValue": value.get("StringValue"),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value.get("DataType", "String"),
        }
        for name, value in message.get("MessageAttributes", {}).items()
    }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": "us-east-1",
    }


@contextmanager
def handler_env(env: dict[str, str]) -> Iterator[None]:
    """Set the functions' environment for the block and rebuild their cached writer and settler."""
    import os

    import functions.batch_settler.app as settler_app
    import functions.record_writer.app as writer_app

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    writer_app.writer.cache_clear()
    settler_app.settler.cache_clear()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        writer_app.writer.cache_clear()
        settler_app.settler.cache_clear()
