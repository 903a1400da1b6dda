"""From a Lambda SQS event to the writer and back to a partial batch response.

The writer needs the whole batch at once (records of many messages share one request), so the
handler hands it every message and returns the ones the writer sends back in ``batchItemFailures``.
On FIFO queues those are a failed message and the later messages *of its group* only: SQS keeps order
per group, so the other groups' messages are deleted and go on (what Powertools' FIFO processor does
with ``skip_group_on_error``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from experiture_ingest.streams.batch import FlushReport
from experiture_ingest.streams.checking import InboundMessage
from experiture_ingest.streams.writer import StreamWriter


def inbound(record: SQSRecord) -> InboundMessage:
    """The writer's view of an SQS record: id, body, message attributes, FIFO group."""
    return InboundMessage(
        message_id=record.message_id,
        body=record.body or "",
        attributes=dict(record.get("messageAttributes") or {}),
        group_id=record.attributes.message_group_id,
    )


def is_fifo_event(event: dict[str, Any]) -> bool:
    records = event.get("Records") or []
    return bool(records) and str(records[0].get("eventSourceARN", "")).endswith(".fifo")


def write_event(
    writer: StreamWriter, event: dict[str, Any], context: Any = None
) -> tuple[dict[str, Any], FlushReport]:
    """The partial batch response for ``event`` and the writer's report."""
    messages = [inbound(SQSRecord(r)) for r in event.get("Records") or []]
    remaining: Callable[[], int] | None = getattr(context, "get_remaining_time_in_millis", None)
    report = writer.write(messages, fifo=is_fifo_event(event), remaining_ms=remaining)
    failures = [{"itemIdentifier": m.message_id} for m in messages if m.message_id in report.retry]
    return {"batchItemFailures": failures}, report
