"""Powertools batch processing for the writer: per-message parsing, whole-batch packing.

Packing needs the whole SQS batch at once (records of many messages share one request), while
Powertools' processors work one record at a time. So processing runs in two phases inside one
Powertools processor:

1. Powertools' own loop calls the record handler (:meth:`StreamWriter.stage`) per message: parsing
   and schema checks. A message whose staging raises is a failure the Powertools way (and on FIFO
   queues its circuit breaker fails every later message unseen).
2. Our ``process`` override then flushes the writer (pack and send everything staged) and moves the
   messages it could not write from success to failure through Powertools' ``failure_handler``.

``process_partial_response`` and the processor's ``_clean`` then build ``batchItemFailures`` exactly
as they always do, so partial-failure semantics (and FIFO's "stop at the first failure, return the
rest") stay Powertools'.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, SqsFifoPartialProcessor
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from experiture_ingest.streams.writer import FlushReport, InboundMessage, StreamWriter, TransientWriteError


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


class _Packing:
    """Mixed into a Powertools SQS processor: stage per record, then flush the batch."""

    writer: StreamWriter
    report: FlushReport

    def stage(self, record: SQSRecord) -> None:
        """The record handler to pass to ``process_partial_response``."""
        self.writer.stage(inbound(record))

    def _flush_into(self, results: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        processor: Any = self
        for status, _, record in results:
            if status == "fail":
                self.writer.fail(record.message_id)
        context = getattr(self, "lambda_context", None)  # set by Powertools when a context is passed
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        self.report = self.writer.flush(remaining if callable(remaining) else None)
        out: list[tuple[Any, ...]] = []
        for entry in results:
            status, _, raw = entry
            if status == "success" and raw["messageId"] in self.report.retry:
                processor.success_messages.remove(raw)
                error = TransientWriteError("its batch request failed transiently; SQS will deliver it again")
                out.append(processor.failure_handler(SQSRecord(raw), (TransientWriteError, error, None)))
            else:
                out.append(entry)
        return out


class PackingBatchProcessor(_Packing, BatchProcessor):
    """Standard queues: only the messages whose request failed transiently are retried."""

    def __init__(self, writer: StreamWriter) -> None:
        super().__init__(EventType.SQS, raise_on_entire_batch_failure=False)
        self.writer = writer
        self.report = FlushReport()

    def process(self) -> list[tuple[Any, ...]]:
        self.writer.begin(fifo=False)
        return self._flush_into(super().process())


class PackingFifoProcessor(_Packing, SqsFifoPartialProcessor):
    """FIFO queues: processing stops at the first failure and every later message is returned."""

    def __init__(self, writer: StreamWriter) -> None:
        super().__init__()
        self.raise_on_entire_batch_failure = False
        self.writer = writer
        self.report = FlushReport()

    def process(self) -> list[tuple[Any, ...]]:
        self.writer.begin(fifo=True)
        return self._flush_into(super().process())


def processor_for(
    event: dict[str, Any], writer: StreamWriter
) -> PackingBatchProcessor | PackingFifoProcessor:
    return PackingFifoProcessor(writer) if is_fifo_event(event) else PackingBatchProcessor(writer)
