"""The split flow's task logic (the state machine's ``PlanParts`` … ``CombineParts`` states).

1. :func:`plan_parts`: plan the parts (or refuse the file), write ``results/<key>.parts/plan.json``
   and ``items.json`` (one item per part, what the Map states read).
2. :func:`upload_one`: a worker streams its part to its own job (Map, in parallel);
   :func:`record_upload_failure` writes the part's summary when its upload failed for good.
3. :func:`next_import`: the import of one part as a child run of the import state machine (Map,
   one at a time, so part 1 is imported before part 2); a part already imported is skipped.
4. :func:`combine`: one summary and one errors file for the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from experiture_ingest.client import ExperitureClient, ImportJobInit
from experiture_ingest.files.collect import PART_BYTES, describe_error, storage_errors
from experiture_ingest.files.formats import detect_format
from experiture_ingest.files.handoff import ImportRun, IntakeRecord, PartRef, SourceObject, SplitRun
from experiture_ingest.files.layout import (
    part_items_key,
    part_result_key,
    part_upload_key,
    plan_key,
    result_key,
)
from experiture_ingest.files.parts.errors import PartsError
from experiture_ingest.files.parts.held import LoadedFile, files_of, report_held_files
from experiture_ingest.files.parts.manifest import (
    common_format,
    plan_manifest,
    read_manifest,
    resolve_entries,
    success_folder_entries,
)
from experiture_ingest.files.parts.plan import PartPlan, PartSpec, plan_split
from experiture_ingest.files.parts.report import LANDED, combined_summary, merge_errors
from experiture_ingest.files.parts.upload import PartBody, part_file_name, part_identity, upload_part
from experiture_ingest.files.results import read_json, summary_tags, tag_source, write_summary
from experiture_ingest.files.streaming import DEFAULT_CHUNK_BYTES, DEFAULT_READ_AHEAD_BYTES
from experiture_ingest.files.summary import Execution, Outcome, PartOf, Problem, Split, Summary

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

EXECUTION_NAME_MAX = 80
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class WorkerSettings(BaseModel):
    """The split flow's settings, from the environment (the part size travels in the hand-off)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    chunk_bytes: int = Field(default=DEFAULT_CHUNK_BYTES, ge=64 * 1024, alias="INTAKE_CHUNK_BYTES")
    read_ahead_bytes: int = Field(default=DEFAULT_READ_AHEAD_BYTES, ge=0, alias="INTAKE_READ_AHEAD_BYTES")
    max_jobs_per_part: int = Field(default=3, ge=1, le=10, alias="INTAKE_MAX_JOBS_PER_FILE")


@dataclass
class PartsDeps:
    """What the split flow's tasks talk to; handlers build one per warm process."""

    s3: S3Client
    client: Callable[[], ExperitureClient] | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES
    max_jobs_per_part: int = 3
    # Seconds the current invocation may still run (a Lambda's remaining time, less a margin).
    time_budget: Callable[[], float | None] = field(default=lambda: None)


def _put_json(s3: S3Client, bucket: str, key: str, doc: Any) -> None:
    with storage_errors(f"writing {key}"):
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=json.dumps(doc, separators=(",", ":"), default=str).encode(),
            ContentType="application/json",
        )


def _get_json(s3: S3Client, bucket: str, key: str) -> Any:
    with storage_errors(f"reading {key}"):
        return read_json(s3, bucket, key)


def _finish(s3: S3Client, run: SplitRun, summary: Summary) -> str:
    source = run.source
    with storage_errors("writing the summary"):
        key = write_summary(s3, source.bucket, source.key, summary)
    try:
        tag_source(s3, source.bucket, source.key, source.version_id, summary_tags(summary))
    except ClientError as exc:  # the summary is what matters; a tag is a convenience
        logger.warning("could not tag the source object: %s", exc.response.get("Error", {}).get("Code"))
    return key


# 1. Plan -------------------------------------------------------------------------------------------


def plan_parts(
    run: SplitRun, deps: PartsDeps, *, state_machine_arn: str, execution_name: str
) -> dict[str, Any]:
    """Plan the parts and write them for the Map states; a refusal ends the file with its summary."""
    source = run.source
    try:
        plan = _plan(run, deps)
    except PartsError as exc:
        summary = Summary(
            outcome="failed" if exc.code == "MANIFEST_PART_MISSING" else "refused",
            message=f"The file was not imported: {exc.message}",
            key=source.key,
            object_name=run.object_name,
            source=source,
            options=run.options,
            reason=Problem(code=exc.code, message=exc.message),
            split=Split(kind="manifest" if run.manifest else "split", part_max_bytes=run.part_max_bytes),
            execution_arn=run.intake.execution_arn,
            execution=Execution(name=execution_name),
        )
        logger.warning("file refused: %s", exc)
        summary_key = _finish(deps.s3, run, summary)
        _report_held(deps, run, summary.outcome, None)
        # the split stays in the state: the release step after a refusal gives the file's turn back
        return {"refused": True, "outcome": "refused", "summaryKey": summary_key, "split": run.wire()}
    return write_plan(deps.s3, run, plan, state_machine_arn=state_machine_arn)


def _plan(run: SplitRun, deps: PartsDeps) -> PartPlan:
    source = run.source
    if run.manifest is None:
        return plan_split(deps.s3, source, run.part_max_bytes, time_budget=deps.time_budget())
    entries = (
        read_manifest(deps.s3, source)
        if run.manifest == "manifest"
        else success_folder_entries(deps.s3, source.bucket, source.key)
    )
    files, skipped = resolve_entries(deps.s3, source.bucket, entries)
    if skipped:
        logger.warning("optional manifest entries missing, skipped: %s", ", ".join(skipped[:20]))
    return plan_manifest(deps.s3, source, files, common_format(files), run.part_max_bytes)


def write_plan(s3: S3Client, run: SplitRun, plan: PartPlan, *, state_machine_arn: str) -> dict[str, Any]:
    """``plan.json`` (for users and the report) and ``items.json`` (one small item per part)."""
    bucket, key = run.source.bucket, run.source.key
    _put_json(s3, bucket, plan_key(key), plan.wire())
    _put_json(s3, bucket, part_items_key(key), [spec.wire() for spec in plan.parts])
    logger.info(
        "planned %d parts of at most %d bytes", len(plan.parts), plan.part_max_bytes, extra={"key": key}
    )
    return {
        "refused": False,
        "split": run.wire(),
        "plan": {
            "bucket": bucket,
            "key": plan_key(key),
            "itemsKey": part_items_key(key),
            "parts": len(plan.parts),
            "workers": min(run.workers, len(plan.parts)),
            "stateMachineArn": state_machine_arn,
        },
    }


# 2. Upload -----------------------------------------------------------------------------------------


def _part_source(run: SplitRun, spec: PartSpec) -> SourceObject:
    """The object a part's import reads its header from: the file itself, or a manifest's first entry."""
    first = spec.ranges[0]
    if first.key == run.source.key:
        return run.source
    fmt = detect_format(first.key)
    return SourceObject(
        bucket=first.bucket,
        key=first.key,
        version_id=first.version_id,
        etag=first.etag,
        size=sum(r.size for r in spec.ranges),
        format=fmt.format if fmt else run.source.format,
        compression=fmt.compression if fmt else run.source.compression,
    )


def upload_one(run: SplitRun, spec: PartSpec, count: int, deps: PartsDeps) -> dict[str, Any]:
    """Stream one part to its own job and record what was uploaded (``<n>.upload.json``)."""
    if deps.client is None:
        raise ValueError("uploading a part needs the API client")
    fmt = detect_format(run.source.key) or detect_format(spec.ranges[0].key)
    if fmt is None:
        raise PartsError(f"{run.source.key} has no supported extension")
    # A manifest's job: count each part file's rows on the way, so rejected rows can be named by file.
    counter: Literal["csv", "jsonl"] | None = None
    if run.manifest and fmt.compression is None and fmt.format != "parquet":
        counter = "csv" if fmt.format == "csv" else "jsonl"
    body = PartBody.prepare(
        deps.s3, spec, chunk_bytes=deps.chunk_bytes, read_ahead_bytes=deps.read_ahead_bytes, count=counter
    )
    request = ImportJobInit(
        object_name=run.object_name,
        file_name=part_file_name(run.source.key.rsplit("/", 1)[-1], fmt, spec.index, count),
        file_size=spec.bytes,
        **run.options.init_fields(),
    )
    identity = part_identity(run.source, run.part_max_bytes, spec.index)
    uploaded = upload_part(
        deps.client(), body, request, identity, fmt.content_type, max_jobs=deps.max_jobs_per_part
    )
    record = {**uploaded.wire(), "uploadedAt": deps.now().isoformat()}
    _put_json(deps.s3, run.source.bucket, part_upload_key(run.source.key, spec.index), record)
    logger.info(
        "part %d: %d bytes uploaded in %.2f s",
        spec.index,
        uploaded.bytes,
        uploaded.upload_seconds,
        extra={"job_id": uploaded.job_id},
    )
    return {"index": spec.index, "jobId": uploaded.job_id}


def record_upload_failure(
    run: SplitRun, spec: PartSpec, error: Mapping[str, Any] | None, deps: PartsDeps
) -> dict[str, Any]:
    """The part's summary when its upload failed for good (the file's summary lists it as failed)."""
    described = describe_error(error)
    summary = Summary(
        outcome="failed",
        message=f"The upload of part {spec.index} failed: {(described or {}).get('message', 'unknown reason')}",
        error={**(described or {}), "stage": "upload"},
        part=PartOf(index=spec.index, first_row_number=spec.first_row_number, rows=spec.rows),
    )
    key = part_result_key(run.source.key, spec.index)
    with storage_errors(f"writing {key}"):
        write_summary(deps.s3, run.source.bucket, run.source.key, summary, key=key)
    return {"index": spec.index, "outcome": "failed"}


# 3. Import, one part after the other --------------------------------------------------------------


def part_execution_name(run: SplitRun, index: int) -> str:
    """The child run's name: readable, unique per object version, plan and part (<= 80 chars)."""
    stem = _NAME_UNSAFE.sub("_", run.source.key.rsplit("/", 1)[-1])[:30].strip("_") or "file"
    digest = hashlib.sha256(part_identity(run.source, run.part_max_bytes, index)).hexdigest()[:40]
    return f"{stem}-p{index:05d}-{digest}"[:EXECUTION_NAME_MAX]


MAX_WAIT_ROUNDS = 3000  # x 60 s: longer than the poll deadline (48 h by default)


def next_import(
    run: SplitRun, spec: PartSpec, count: int, previous: Mapping[str, Any], deps: PartsDeps
) -> dict[str, Any]:
    """What the import Map does next for one part: ``start`` its child run, ``wait`` for a run that
    has not reported yet (it continued as a new execution), or ``done`` (it reported, or there is
    nothing to import)."""
    bucket, key = run.source.bucket, run.source.key
    name = part_execution_name(run, spec.index)
    ended = _get_json(deps.s3, bucket, part_result_key(key, spec.index))
    if ended is not None:
        return {"action": "done", "outcome": ended.get("outcome"), "name": name}
    upload = _get_json(deps.s3, bucket, part_upload_key(key, spec.index))
    if upload is None:
        return {"action": "done", "outcome": "not_uploaded", "name": name}
    if previous.get("name"):  # started before (here, or by an earlier run of this file's flow)
        rounds = int(previous.get("rounds") or 0) + 1
        if rounds > MAX_WAIT_ROUNDS:
            return {"action": "done", "outcome": "no_summary", "name": name}
        return {"action": "wait", "rounds": rounds, "name": name}
    child = ImportRun(
        job_id=upload["jobId"],
        object_name=run.object_name,
        source=_part_source(run, spec),
        options=run.options,
        poll=run.poll,
        intake=IntakeRecord(
            received_at=run.intake.received_at,
            uploaded_at=upload.get("uploadedAt"),
            upload_seconds=upload.get("uploadSeconds"),
            upload_attempts=upload.get("uploadAttempts"),
            correlation_ids=upload.get("correlationIds") or [],
            abandoned_job_ids=upload.get("abandonedJobIds") or [],
            execution_arn=_sibling_arn(run.intake.execution_arn, name),
        ),
        part=PartRef(
            index=spec.index,
            count=count,
            report_key=key,
            first_row_number=spec.first_row_number,
            rows=spec.rows,
            bytes=spec.bytes,
        ),
        turn=run.turn,
    )
    return {"action": "start", "rounds": 0, "name": name, "input": child.wire()}


# 4. Report -----------------------------------------------------------------------------------------


def combine(
    run: SplitRun, deps: PartsDeps, *, execution_name: str | None, part_bytes: int = PART_BYTES
) -> dict[str, Any]:
    """Write the file's summary and errors file from the parts' own results."""
    bucket, key = run.source.bucket, run.source.key
    plan = PartPlan.model_validate(_get_json(deps.s3, bucket, plan_key(key)))
    summaries = {
        spec.index: _get_json(deps.s3, bucket, part_result_key(key, spec.index)) for spec in plan.parts
    }
    uploads = {
        spec.index: _get_json(deps.s3, bucket, part_upload_key(key, spec.index)) for spec in plan.parts
    }
    with_errors = [
        spec
        for spec in plan.parts
        if (summaries.get(spec.index) or {}).get("outcome") in LANDED
        and (summaries.get(spec.index) or {}).get("errorsFile")
    ]
    with storage_errors("writing the errors file"):
        errors_file = merge_errors(deps.s3, plan, with_errors, uploads, part_bytes=part_bytes)
    summary = combined_summary(
        run, plan, summaries, uploads, errors_file, finished_at=deps.now(), execution_name=execution_name
    )
    summary_key = _finish(deps.s3, run, summary)
    _report_held(deps, run, summary.outcome, plan, {p.index: p.job_id for p in summary.parts or []})
    return {"outcome": summary.outcome, "summaryKey": summary_key}


def report_split_failure(
    run: SplitRun, error: Mapping[str, Any] | None, deps: PartsDeps, *, execution_name: str | None
) -> dict[str, Any]:
    """A step of the split flow failed for good: the file's summary says which and why."""
    described = describe_error(error)
    summary = Summary(
        outcome="failed",
        message=f"The split import stopped: {(described or {}).get('message', 'unknown reason')}",
        key=run.source.key,
        object_name=run.object_name,
        source=run.source,
        options=run.options,
        error=described,
        split=Split(
            kind="manifest" if run.manifest else "split",
            part_max_bytes=run.part_max_bytes,
            plan_key=plan_key(run.source.key),
        ),
        execution_arn=run.intake.execution_arn,
        execution=Execution(name=execution_name),
    )
    summary_key = _finish(deps.s3, run, summary)
    raw_plan = _get_json(deps.s3, run.source.bucket, plan_key(run.source.key)) if run.manifest else None
    uploads: dict[int, str | None] = {}
    plan = PartPlan.model_validate(raw_plan) if raw_plan else None
    for spec in plan.parts if plan else []:
        upload = _get_json(deps.s3, run.source.bucket, part_upload_key(run.source.key, spec.index))
        uploads[spec.index] = (upload or {}).get("jobId")
    _report_held(deps, run, "failed", plan, uploads)
    return {"outcome": "failed", "summaryKey": summary_key}


def _report_held(
    deps: PartsDeps,
    run: SplitRun,
    outcome: Outcome,
    plan: PartPlan | None,
    job_ids: Mapping[int, str | None] | None = None,
) -> None:
    """A warehouse load ended: its held files' summaries say how (:mod:`.held`)."""
    if run.manifest is None:
        return
    source = run.source
    held: dict[str, LoadedFile] | list[str]
    if plan is not None:
        held = files_of(plan, job_ids or {})
    else:  # ended before a plan: the files the manifest (or folder) names
        try:
            entries = (
                read_manifest(deps.s3, source)
                if run.manifest == "manifest"
                else success_folder_entries(deps.s3, source.bucket, source.key)
            )
        except PartsError:
            return  # nothing readable names them
        held = [e.key for e in entries if e.bucket == source.bucket]
    count = report_held_files(deps.s3, source.bucket, source.key, outcome, held, finished_at=deps.now())
    logger.info("held files told how their load ended: %d", count, extra={"key": source.key})


def _sibling_arn(execution_arn: str | None, name: str) -> str | None:
    """The ARN of another execution (``name``) of the same state machine as ``execution_arn``.

    >>> _sibling_arn("arn:aws:states:eu-west-1:1:execution:ImportJob:big.csv-ab12", "big.csv-p00001-cd")
    'arn:aws:states:eu-west-1:1:execution:ImportJob:big.csv-p00001-cd'
    """
    if not execution_arn or ":execution:" not in execution_arn:
        return None
    return f"{execution_arn.rsplit(':', 1)[0]}:{name}"


def summary_key_of(run: SplitRun) -> str:
    return result_key(run.source.key)
