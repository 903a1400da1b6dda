"""Task functions of the import state machine: one module, one handler per task.

Seven functions in template.yaml share this code (CodeUri functions/import_job, Handler
``app.<task>_handler``): each task is a small step of the same state document, so they share its
parsing and shaping, while each function keeps its own timeout, memory and least-privilege role.

Handlers are thin: parse the state document, call :mod:`experiture_ingest.files.import_tasks` or
:mod:`experiture_ingest.files.collect`, return the document. Errors propagate: the state machine's
Retry and Catch match on the exception class name (``ServerError`` is transient,
``SchemaMismatchError`` is not), and every Catch leads to :func:`report_failure_handler`.

Cold start: the module imports only Powertools' logger and metrics; the task logic, the client and
boto3 load on the first invocation that needs them (see bench/cold_start.py).
"""

from __future__ import annotations

import functools
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from experiture_ingest.observability import count_api_answer, logger, metrics, setup_logging, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from experiture_ingest.files.import_tasks import ImportState, TaskDeps

setup_logging()


@functools.cache
def deps() -> TaskDeps:
    """The warm container's S3 and API clients (a 429 is left to the state machine), and the queue's
    table when IMPORT_QUEUE_TABLE is set (the final tasks read which version of a key is the newest)."""
    import boto3

    from experiture_ingest.client import ClientSettings, ExperitureClient
    from experiture_ingest.files import import_tasks as tasks
    from experiture_ingest.scheduling import QueueTable

    settings = ClientSettings.from_env()
    retry = tasks.TaskRetryPolicy(
        max_attempts=settings.retry_max_attempts, budget_seconds=settings.retry_budget_seconds
    )
    client = ExperitureClient.from_settings(settings, retry=retry, on_answer=count_api_answer)
    table = os.environ.get("IMPORT_QUEUE_TABLE")
    return tasks.TaskDeps(
        s3=boto3.client("s3"),
        client=client,
        queue=QueueTable(boto3.client("dynamodb"), table) if table else None,
    )


def _state(event: dict[str, Any]) -> ImportState:
    from experiture_ingest.files.import_tasks import ImportState

    state = ImportState.model_validate(event)
    logger.append_keys(
        job_id=state.run.job_id, key=state.run.source.key, execution=state.progress.execution_name
    )
    tracer.put_annotation("job_id", state.run.job_id)
    return state


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def prepare_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Execution input (an ImportRun, or a continuation's state) -> the state document."""
    execution = event.get("execution") or {}
    from experiture_ingest.files import import_tasks as tasks

    state = tasks.prepare(
        event["input"], str(execution.get("name") or "local"), execution.get("startTime"), datetime.now(UTC)
    )
    logger.append_keys(job_id=state.run.job_id, key=state.run.source.key)
    return state.wire()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def plan_mapping_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Decide the mapping: given, a saved template, or inferred from the file's header."""
    from experiture_ingest.files import import_tasks as tasks

    return tasks.plan(_state(event), deps()).wire()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def mapping_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Send the planned mapping to the job."""
    from experiture_ingest.files import import_tasks as tasks

    return tasks.set_mapping(_state(event), deps()).wire()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def start_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Start the job in its granted slot, or send it back to the queue after a capacity refusal."""
    from experiture_ingest.files import import_tasks as tasks

    state = tasks.start(_state(event), deps())
    if state.progress.next == "wait_poll":
        metrics.add_metric(name="ImportJobsStarted", unit=MetricUnit.Count, value=1)
    elif state.progress.next == "enqueue":
        metrics.add_metric(name="ImportStartsDeferred", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="ImportStartsRefused", unit=MetricUnit.Count, value=1)
    return state.wire()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def poll_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Read the job's state and decide what comes next (an API outage is another wait)."""
    from experiture_ingest.files import import_tasks as tasks

    return tasks.poll(_state(event), deps()).wire()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def collect_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The job completed: errors file and summary into the bucket, source tagged."""
    from experiture_ingest.files import collect

    report = collect.collect(_state(event), deps())
    metrics.add_metric(name="ImportJobsCompleted", unit=MetricUnit.Count, value=1)
    found = report.summary.get("metrics") or {}
    metrics.add_metric(name="RowsImported", unit=MetricUnit.Count, value=found.get("rowsImported") or 0)
    metrics.add_metric(name="RowsRejected", unit=MetricUnit.Count, value=found.get("rowsRejected") or 0)
    logger.info("import finished", extra={"outcome": report.outcome, "summary_key": report.summary_key})
    return report.wire()


# outcome -> (metric, the Fail state's error name); anything else is ImportJobsFailed / ImportFailed.
_FAILURE_NAMES = {
    "timed_out": ("ImportJobsTimedOut", "ImportTimedOut"),
    "completed_report_incomplete": ("ImportReportsIncomplete", "ImportReportIncomplete"),
}
# Errors that are the CDP's verdict on the user's file or mapping, not a broken pipeline.
_DATA_ERRORS = {"SchemaMismatchError", "ValidationError", "PayloadTooLargeError"}
_DATA_STATUSES = {400, 413, 415, 422}


def rejected_by_cdp(summary: dict[str, Any]) -> bool:
    """Whether a failed run ended on the user's data (FilesRejected, no page) rather than on the pipeline.

    The CDP failing the job itself counts as its verdict on the file; a refused mapping or start (422,
    400) too. Credentials, throttling, 5xx, timeouts and missing summaries are the pipeline's
    (ImportPipelineFailures, which pages).
    """
    if summary.get("outcome") != "failed":
        return False
    error = summary.get("error")
    if not error:
        return bool(summary.get("errorMessage"))  # the job failed in the CDP, with its reason
    return error.get("type") in _DATA_ERRORS or error.get("status") in _DATA_STATUSES


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def report_failure_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Whatever ended the run: a failure summary in the bucket, and the Fail state's error and cause."""
    from experiture_ingest.files import collect

    report = collect.report_failure(event, deps())
    metric, error = _FAILURE_NAMES.get(report.outcome, ("ImportJobsFailed", "ImportFailed"))
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    summary = report.summary
    kept_apart = "FilesRejected" if rejected_by_cdp(summary) else "ImportPipelineFailures"
    metrics.add_metric(name=kept_apart, unit=MetricUnit.Count, value=1)
    logger.warning("import failed", extra={"outcome": report.outcome, "summary_key": report.summary_key})
    bucket = summary["source"]["bucket"]
    return {
        **report.wire(),
        "error": error,
        "cause": f"{summary['message']} Summary: s3://{bucket}/{report.summary_key}"[:32000],
    }
