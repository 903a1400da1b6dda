"""Task functions of the split flow (a file larger than a part, or a manifest's load): one module,
one handler per task, each its own function in template.yaml (CodeUri functions/parts).

Thin: parse the event the state machine built, call :mod:`experiture_ingest.files.parts.tasks`,
return a small document (the plan and every part's results live in S3, never in the state).

Cold start: the module imports only Powertools' logger; the task logic, the client and boto3 load on
the first invocation that needs them (as functions/import_job does).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from experiture_ingest.observability import logger, metrics, setup_logging, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from experiture_ingest.files.handoff import SplitRun
    from experiture_ingest.files.parts.plan import PartSpec
    from experiture_ingest.files.parts.tasks import PartsDeps

setup_logging()

_PLAN_MARGIN_MS = 30_000  # room to write the refusal (or the plan) after the scan


@functools.cache
def deps() -> PartsDeps:
    """The warm container's S3 client and (lazily) the API client."""
    import boto3

    from experiture_ingest.client import client_from_env
    from experiture_ingest.files.parts import tasks
    from experiture_ingest.settings import load_settings

    settings = load_settings(tasks.WorkerSettings)
    return tasks.PartsDeps(
        s3=boto3.client("s3"),
        client=client_from_env,
        chunk_bytes=settings.chunk_bytes,
        read_ahead_bytes=settings.read_ahead_bytes,
        max_jobs_per_part=settings.max_jobs_per_part,
    )


def _run(event: dict[str, Any]) -> SplitRun:
    from experiture_ingest.files.handoff import SplitRun

    run = SplitRun.model_validate(event["split"])
    logger.append_keys(key=run.source.key, execution=(event.get("execution") or {}).get("name"))
    return run


def _spec(event: dict[str, Any]) -> PartSpec:
    from experiture_ingest.files.parts.plan import PartSpec

    spec = PartSpec.model_validate(event["spec"])
    logger.append_keys(part=spec.index)
    return spec


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def plan_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Plan the parts (one pass over a CSV/JSONL file, the footer of a Parquet file)."""
    from experiture_ingest.files.parts import tasks

    execution = event.get("execution") or {}
    planner = deps()
    planner.time_budget = lambda: max(context.get_remaining_time_in_millis() - _PLAN_MARGIN_MS, 1_000) / 1000
    planned = tasks.plan_parts(
        _run(event),
        planner,
        state_machine_arn=str(event["stateMachineArn"]),
        execution_name=str(execution.get("name") or "local"),
    )
    if planned["refused"]:  # the file cannot be cut (its summary says why): the user's to fix
        metrics.add_metric(name="FilesRefused", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="PartsPlanned", unit=MetricUnit.Count, value=planned["plan"]["parts"])
    return planned


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def upload_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """One worker: stream one part to its own job."""
    from experiture_ingest.files.parts import tasks

    return tasks.upload_one(_run(event), _spec(event), int(event["count"]), deps())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def upload_failed_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """A part's upload failed for good: its summary says so."""
    from experiture_ingest.files.parts import tasks

    return tasks.record_upload_failure(_run(event), _spec(event), event.get("error"), deps())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def next_import_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Start the child run importing one part, wait for it, or move on."""
    from experiture_ingest.files.parts import tasks

    return tasks.next_import(
        _run(event), _spec(event), int(event["count"]), event.get("previous") or {}, deps()
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def combine_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """One summary and one errors file for the file; or, after a failed step, the failure summary."""
    from experiture_ingest.files.parts import tasks

    run = _run(event)
    name = (event.get("execution") or {}).get("name")
    if event.get("error"):  # a step of the flow failed for good: the pipeline's, it pages
        metrics.add_metric(name="ImportPipelineFailures", unit=MetricUnit.Count, value=1)
        return tasks.report_split_failure(run, event["error"], deps(), execution_name=name)
    report = tasks.combine(run, deps(), execution_name=name)
    if report["outcome"] == "partially_failed":
        metrics.add_metric(name="FilesPartiallyFailed", unit=MetricUnit.Count, value=1)
    return report
