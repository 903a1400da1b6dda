"""The import queue's functions: enqueue (a waiting task of the state machine), release, dispatch.

Three functions in template.yaml share this code (CodeUri functions/import_queue):

- ``enqueue_handler``: the state machine's ``Enqueue`` task (``lambda:invoke.waitForTaskToken``):
  ``{"state", "taskToken", "executionArn"}`` -> the file's queue entry holds the token; dispatch.
- ``release_handler``: the state machine's ``Release*`` tasks (``{"state", "executionArn"}``) and the
  EventBridge rule on executions that end ABORTED, TIMED_OUT or FAILED (the backstop for runs that
  never reached a release step): the entry leaves the queue, its slot is free; dispatch. For a split
  file's flow (``{"split": {"turn": ...}}``) the entry is the one holding the file's turn.
- ``dispatch_handler``: the EventBridge schedule: sweep (slots of ended executions, lost grants) and
  dispatch (backoff expiries).

Environment: IMPORT_QUEUE_TABLE, IMPORT_MAX_RUNNING_JOBS (default 10), IMPORT_QUEUE_RENOTIFY_SECONDS.
Each emits ImportJobsWaiting and ImportJobsRunning (the queue after the call).
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from experiture_ingest.files.import_tasks import ImportState
from experiture_ingest.observability import logger, metrics, setup_logging, tracer
from experiture_ingest.scheduling import (
    DispatchReport,
    Enqueue,
    QueueSettings,
    QueueTable,
    Scheduler,
    group_of,
    job_id_from_input,
)
from experiture_ingest.settings import load_settings

setup_logging()


@functools.cache
def scheduler() -> Scheduler:
    """The warm container's scheduler (DynamoDB and Step Functions clients reused)."""
    settings = load_settings(QueueSettings)
    table = QueueTable(boto3.client("dynamodb"), settings.table)
    return Scheduler(table, boto3.client("stepfunctions"), settings)


def _count(report: DispatchReport) -> dict[str, Any]:
    metrics.add_metric(name="ImportJobsWaiting", unit=MetricUnit.Count, value=report.waiting)
    metrics.add_metric(name="ImportJobsRunning", unit=MetricUnit.Count, value=report.running)
    if report.granted:
        metrics.add_metric(name="ImportStartsGranted", unit=MetricUnit.Count, value=len(report.granted))
    if report.released:
        metrics.add_metric(name="ImportSlotsReleased", unit=MetricUnit.Count, value=len(report.released))
    return {
        "granted": report.granted,
        "released": report.released,
        "waiting": report.waiting,
        "running": report.running,
    }


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def enqueue_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Put the file in the queue with its execution's task token; grant what can start now."""
    state = ImportState.model_validate(event["state"])
    run, progress = state.run, state.progress
    logger.append_keys(job_id=run.job_id, key=run.source.key, execution=progress.execution_name)
    request = Enqueue(
        job_id=run.job_id,
        object_name=run.object_name,
        group=group_of(
            run.object_name, run.source.bucket, run.source.key, parallel=bool(run.options.parallel_jobs)
        ),
        bucket=run.source.bucket,
        key=run.source.key,
        event_time=run.source.event_time or run.intake.received_at or progress.started_at,
        sequencer=run.source.sequencer,
        task_token=str(event["taskToken"]),
        execution_arn=str(event["executionArn"]),
        pause_seconds=float(progress.wait_seconds) if progress.start_attempts else None,
        turn=run.turn,
        part=run.part.index if run.part else None,
    )
    return _count(scheduler().enqueue(request))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def release_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Give the run's slot (or its place in the queue) back; from the state machine or EventBridge."""
    detail = event.get("detail")
    if isinstance(detail, dict):  # "Step Functions Execution Status Change"
        job_id = job_id_from_input(detail.get("input"))
        execution_arn = detail.get("executionArn")
        logger.info("execution ended %s", detail.get("status"), extra={"execution_arn": execution_arn})
    else:
        job_id = job_id_from_input(json.dumps(event.get("state") or {}))
        execution_arn = None
    if not job_id:
        logger.warning("no job id in the event; nothing to release")
        return {"released": [], "granted": []}
    logger.append_keys(job_id=job_id)
    return _count(scheduler().release(job_id, execution_arn=execution_arn))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def dispatch_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The schedule: free slots of ended executions, re-send lost grants, grant after backoffs."""
    report = _count(scheduler().sweep())
    report["at"] = datetime.now(UTC).isoformat()
    return report
