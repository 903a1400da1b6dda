"""Batch settler: one settle ticket per SQS message -> check the job, then re-check, report,
re-drive or dead-letter (see :mod:`experiture_ingest.streams.settle`).

A ticket whose check fails transiently, or that is not started because its worst case no longer
fits in the time left, is returned in ``batchItemFailures`` and checked again after the settle
queue's visibility timeout; the settle queue has its own DLQ and alarm.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from experiture_ingest.observability import count_api_answer, logger, metrics, setup_logging, tracer

if TYPE_CHECKING:  # the rest loads on the first batch (cold start: bench/cold_start.py)
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from experiture_ingest.streams.settle import Settler
    from experiture_ingest.streams.timing import Budget

setup_logging()

_OUTCOME_METRICS = {
    "pending": "BatchJobsPending",
    "completed": "BatchJobsCompleted",
    "reported": "BatchJobsWithInvalidRows",
    "redriven": "BatchJobsRedriven",
    "dead-lettered": "BatchJobsDeadLettered",
    "stuck": "BatchJobsStuck",
}


@functools.cache
def settler() -> Settler:
    import boto3

    from experiture_ingest.client import ClientSettings, ExperitureClient
    from experiture_ingest.streams.settings import StreamSettings, aws_client_config
    from experiture_ingest.streams.wiring import build_settler

    client = ExperitureClient.from_settings(ClientSettings.from_env(), on_answer=count_api_answer)
    config = aws_client_config()
    sqs, s3 = boto3.client("sqs", config=config), boto3.client("s3", config=config)
    return build_settler(StreamSettings.from_env(), client, sqs, s3)


def settle_record(record: SQSRecord, budget: Budget | None = None) -> str:
    """Settle one ticket; ``budget``: the invocation's time left (each ticket starts only if it fits)."""
    from experiture_ingest.streams.settle import SettleTicket

    ticket = SettleTicket.model_validate_json(record.body)
    logger.append_keys(job_id=ticket.job_id, object_name=ticket.object)
    settled = settler().settle(ticket, budget)
    metrics.add_metric(name=_OUTCOME_METRICS[settled.outcome], unit=MetricUnit.Count, value=1)
    if settled.dead_lettered:
        metrics.add_metric(name="MessagesDeadLettered", unit=MetricUnit.Count, value=settled.dead_lettered)
    return settled.outcome


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    from experiture_ingest.streams.timing import Budget

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    budget = Budget(context.get_remaining_time_in_millis)
    return dict(
        process_partial_response(
            event=event,
            record_handler=functools.partial(settle_record, budget=budget),
            processor=processor,
            context=context,
        )
    )
