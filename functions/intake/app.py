"""Intake function: S3 ObjectCreated under ``incoming/`` -> an uploaded import job handed to the
state machine. Thin: parse the event, call :class:`experiture_ingest.files.intake.Intake`, report.

Environment (see :class:`~experiture_ingest.files.intake.IntakeSettings`): IMPORT_STATE_MACHINE_ARN
(required), INTAKE_SINGLE_PUT_MAX_BYTES, INTAKE_PART_MAX_BYTES, INTAKE_PART_WORKERS,
INTAKE_MAX_JOBS_PER_FILE, INTAKE_CHUNK_BYTES, INTAKE_READ_AHEAD_BYTES, IMPORT_POLL_* and
IMPORT_QUEUE_MAX_SECONDS (passed on in the hand-off), IMPORT_QUEUE_TABLE (the newest version of each
key), and the client's EXPERITURE_*.

Cold start: the module imports only Powertools' logger and metrics; boto3, the client and the file
logic load when the first event needs them (``intake()``), see bench/cold_start.py.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from experiture_ingest.observability import count_api_answer, logger, metrics, setup_logging, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from experiture_ingest.files.intake import Intake, IntakeOutcome

setup_logging()


class IntakeFailedError(Exception):
    """Some files failed for a reason worth retrying: Lambda retries, then the on-failure destination."""


@functools.cache
def intake() -> Intake:
    """The warm container's one intake (clients are reused across invocations)."""
    import boto3

    from experiture_ingest.client import ClientSettings, ExperitureClient
    from experiture_ingest.files.intake import Intake, IntakeSettings
    from experiture_ingest.scheduling import QueueTable
    from experiture_ingest.settings import load_settings

    settings = load_settings(IntakeSettings)
    return Intake(
        s3=boto3.client("s3"),
        sfn=boto3.client("stepfunctions"),
        client=ExperitureClient.from_settings(ClientSettings.from_env(), on_answer=count_api_answer),
        settings=settings,
        annotate=_annotate,
        versions=QueueTable(boto3.client("dynamodb"), settings.queue_table) if settings.queue_table else None,
    )


def _annotate(**keys: Any) -> None:
    job_id = keys.get("job_id")
    logger.append_keys(job_id=job_id, api_correlation_id=keys.get("correlation_id"))
    if job_id:
        tracer.put_annotation("job_id", job_id)


def _count(outcome: IntakeOutcome) -> None:
    metrics.add_metric(name="FilesReceived", unit=MetricUnit.Count, value=1)
    if outcome.outcome == "refused":
        metrics.add_metric(name="FilesRefused", unit=MetricUnit.Count, value=1)
    elif outcome.outcome == "duplicate":
        metrics.add_metric(name="DuplicateEvents", unit=MetricUnit.Count, value=1)
    elif outcome.outcome == "splitting":  # over the part size, or a manifest's load
        metrics.add_metric(name="FilesSplit", unit=MetricUnit.Count, value=1)
    elif outcome.outcome == "waiting":  # held until its export's manifest or _SUCCESS
        metrics.add_metric(name="FilesHeld", unit=MetricUnit.Count, value=1)
    elif outcome.outcome == "superseded":
        metrics.add_metric(name="FilesSuperseded", unit=MetricUnit.Count, value=1)
    elif outcome.outcome == "rejected":  # the API refused the file for good: the user's to fix, no page
        metrics.add_metric(name="FilesRejected", unit=MetricUnit.Count, value=1)
    elif outcome.outcome == "failed":
        metrics.add_metric(name="FilesFailed", unit=MetricUnit.Count, value=1)
    if outcome.bytes_uploaded:
        metrics.add_metric(name="BytesUploaded", unit=MetricUnit.Bytes, value=outcome.bytes_uploaded)
        metrics.add_metric(name="UploadSeconds", unit=MetricUnit.Seconds, value=outcome.upload_seconds)
    if outcome.abandoned_job_ids:
        metrics.add_metric(name="AbandonedJobs", unit=MetricUnit.Count, value=len(outcome.abandoned_job_ids))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Handle every record; raise (for Lambda's retries and DLQ) only if one needs retrying."""
    from experiture_ingest.files.intake import DroppedFile
    from experiture_ingest.files.routing import decode_event_key

    results = []
    retry = []
    for record in event.get("Records") or []:
        s3 = record["s3"]
        obj = s3["object"]
        dropped = DroppedFile(
            bucket=s3["bucket"]["name"],
            key=decode_event_key(obj["key"]),
            version_id=obj.get("versionId"),
            etag=obj.get("eTag") or None,
            sequencer=obj.get("sequencer"),
            event_time=record.get("eventTime"),
        )
        request_id = (record.get("responseElements") or {}).get("x-amz-request-id")
        logger.set_correlation_id(request_id)
        logger.append_keys(bucket=dropped.bucket, key=dropped.key, job_id=None, api_correlation_id=None)
        outcome = intake().handle(dropped)
        _count(outcome)
        results.append({"key": dropped.key, "outcome": outcome.outcome, "jobId": outcome.job_id})
        if outcome.retry:
            reason = outcome.summary.get("reason") or {}
            retry.append(f"{dropped.key}: {reason.get('message') or reason.get('code')}")
    if retry:
        raise IntakeFailedError("; ".join(retry))
    return {"files": results}
