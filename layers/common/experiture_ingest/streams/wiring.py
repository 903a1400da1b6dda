"""Build the writer and the settler from settings and AWS clients (handlers, demo and tests share it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from experiture_ingest.client import ExperitureClient
from experiture_ingest.streams.deadletters import DeadLetterQueue
from experiture_ingest.streams.experiture import ExperitureRecordsApi
from experiture_ingest.streams.ledger import MessageLedger
from experiture_ingest.streams.settings import AWS_CALL_SECONDS, StreamSettings
from experiture_ingest.streams.settle import PayloadStore, SettleQueue, Settler
from experiture_ingest.streams.tracking import Tracker
from experiture_ingest.streams.writer import StreamWriter

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


def build_writer(
    settings: StreamSettings,
    client: ExperitureClient,
    sqs: SQSClient,
    s3: S3Client,
    dynamodb: Any = None,
) -> StreamWriter:
    """``dynamodb`` (a boto3 client) is needed when ``LEDGER_TABLE`` is set."""
    ledger = None
    if settings.ledger_table:
        if dynamodb is None:
            raise ValueError("LEDGER_TABLE is set but no DynamoDB client was given")
        ledger = MessageLedger(dynamodb, settings.ledger_table)
    return StreamWriter(
        ExperitureRecordsApi(client, settings.schema_ttl_seconds),
        Tracker(
            PayloadStore(s3, settings.payload_bucket),
            SettleQueue(sqs, settings.settle_queue_url, settings.cadence),
            ledger,
        ),
        DeadLetterQueue(sqs, settings.dead_letter_queue_url, s3, settings.payload_bucket),
        default_target=settings.default_target,
        concurrency=settings.send_concurrency,
        aws_call_seconds=AWS_CALL_SECONDS,
    )


def build_settler(
    settings: StreamSettings, client: ExperitureClient, sqs: SQSClient, s3: S3Client
) -> Settler:
    return Settler(
        ExperitureRecordsApi(client, settings.schema_ttl_seconds),
        PayloadStore(s3, settings.payload_bucket),
        SettleQueue(sqs, settings.settle_queue_url, settings.cadence),
        DeadLetterQueue(sqs, settings.dead_letter_queue_url, s3, settings.payload_bucket),
        max_redrives=settings.max_redrives,
        max_age_seconds=settings.max_age_seconds,
        aws_call_seconds=AWS_CALL_SECONDS,
    )
