"""Record writer: an SQS batch of records in the message contract -> packed batch writes.

Thin: the writer takes the whole batch (records of many messages share one request) and says which
messages go back to the queue (see :mod:`experiture_ingest.streams.processing`). Only messages whose
request failed transiently, or that time ran out for, are returned in ``batchItemFailures``;
permanent problems went to the DLQ with their reasons.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from experiture_ingest.observability import count_api_answer, logger, metrics, setup_logging, tracer

if TYPE_CHECKING:  # the rest loads on the first batch (cold start: bench/cold_start.py)
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from experiture_ingest.client import RetryEvent
    from experiture_ingest.streams.batch import FlushReport
    from experiture_ingest.streams.writer import StreamWriter

setup_logging()


def _count_retry(event: RetryEvent) -> None:
    metrics.add_metric(name="ApiRetries", unit=MetricUnit.Count, value=1)


@functools.cache
def writer() -> StreamWriter:
    """The warm container's writer (its schema cache and HTTP pool live across invocations)."""
    import boto3

    from experiture_ingest.client import ClientSettings, ExperitureClient
    from experiture_ingest.streams.settings import StreamSettings, aws_client_config
    from experiture_ingest.streams.wiring import build_writer

    client = ExperitureClient.from_settings(
        ClientSettings.from_env(), on_retry=_count_retry, on_answer=count_api_answer
    )
    settings = StreamSettings.from_env()
    config = aws_client_config()
    dynamodb = boto3.client("dynamodb", config=config) if settings.ledger_table else None
    sqs, s3 = boto3.client("sqs", config=config), boto3.client("s3", config=config)
    return build_writer(settings, client, sqs, s3, dynamodb)


def _publish(report: FlushReport) -> None:
    for name, value in (
        ("RecordsReceived", report.records_received),
        ("RecordsWritten", report.records_written),
        ("RecordsDeadLettered", report.records_dead_lettered),
        ("MessagesDeadLettered", report.messages_dead_lettered),
        ("MessagesRetried", len(report.retry)),
        ("MessagesOutOfTime", report.out_of_time),
        ("MessagesAlreadyWritten", report.already_written),
        ("BatchRequestsResent", report.requests_resent),
        ("BatchRequestsSent", report.requests_sent),
        ("BatchRequestsRefused", report.requests_refused),
        ("BatchJobsAccepted", len(report.jobs)),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from experiture_ingest.streams.processing import write_event

    response, report = write_event(writer(), event, context)
    _publish(report)
    logger.info(
        "batch written",
        extra={
            "messages": len(event.get("Records") or []),
            "records_written": report.records_written,
            "requests": report.requests_sent,
            "jobs": report.jobs,
            "retry_message_ids": sorted(report.retry),
        },
    )
    return response
