"""The end of an import: rejected rows and a summary back in the user's bucket, and the source tagged.

Every run ends here, one way or the other:

- :func:`collect`: the job completed; its errors file (if any) is streamed into
  ``results/<key>.errors.jsonl`` with a multipart upload in bounded parts (constant memory, the
  location re-fetched if its URL expired), and ``results/<key>.json`` says what happened.
- :func:`report_failure`: anything else (a refused mapping, a failed or stuck job, a task that
  failed for good) writes the same summary with the reason, so no run ends silently. When the
  job had COMPLETED and only the report failed, the outcome is ``completed_report_incomplete``: the
  rows are in the CDP, the errors file is not.

S3 throttling or a 5xx that outlived botocore's own retries is raised as
:class:`StorageUnavailableError`, a name the state machine retries (a generic ``ClientError`` it
would not).

>>> describe_error({"Error": "SchemaMismatchError", "Cause": '{"errorType": "SchemaMismatchError", '
...     '"errorMessage": "422 CDP_ETL.VALIDATION.REQUEST_SCHEMA: no field nope (correlation id c-9)", '
...     '"stackTrace": ["File app.py"]}'})
{'type': 'SchemaMismatchError', 'message': '422 CDP_ETL.VALIDATION.REQUEST_SCHEMA: no field nope (correlation id c-9)', 'status': 422, 'code': 'CDP_ETL.VALIDATION.REQUEST_SCHEMA', 'correlationId': 'c-9'}
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from experiture_ingest.client import ErrorFileExpiredError, ExperitureClient, ExperitureError
from experiture_ingest.files.handoff import IntakeRecord
from experiture_ingest.files.import_tasks import ImportState, TaskDeps
from experiture_ingest.files.layout import (
    errors_key,
    part_errors_key,
    part_result_key,
    result_key,
    version_result_key,
)
from experiture_ingest.files.results import summary_tags, tag_source, write_summary
from experiture_ingest.files.summary import (
    Execution,
    Metrics,
    Outcome,
    PollOutages,
    Scheduling,
    Summary,
    Timings,
)
from experiture_ingest.scheduling.policy import padded_sequencer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

logger = logging.getLogger(__name__)

PART_BYTES = 8 * 1024 * 1024  # S3 parts are at least 5 MiB (but the last)
ERROR_FILE_ATTEMPTS = 3
_METRICS = (
    "readRows",
    "validRows",
    "invalidRows",
    "mergedInserts",
    "mergedUpdates",
    "rowsImported",
    "rowsRejected",
    "successRate",
)
_API_ERROR = re.compile(r"^(?P<status>\d{3}) (?P<code>[A-Z_]+(?:\.[A-Z_]+)+)?")
_CORRELATION = re.compile(r"\(correlation id (?P<id>[^)\s]+)\)")
_FAILURE_STAGE = {
    "mapping": "mapping",
    "start": "start",
    "enqueue": "queue",
    "start_refused": "start",
    "wait_poll": "poll",
    "timed_out": "poll",
    "job_failed": "import",
    "collect": "collect",
}


class SummaryImpossibleError(Exception):
    """The execution input does not say which bucket and key the summary belongs to."""


class StorageUnavailableError(Exception):
    """S3 throttled (SlowDown) or failed (5xx, connection) after botocore's retries: try again later."""


# S3's answers that mean "not now" rather than "never" (throttling, a busy or failing service).
_S3_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
    }
)


def _transient_s3(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return exc.response.get("Error", {}).get("Code") in _S3_TRANSIENT_CODES or status >= 500 or status == 429


@contextmanager
def storage_errors(action: str) -> Iterator[None]:
    """Raise S3 throttling, 5xx and connection failures inside the block as StorageUnavailableError.

    >>> from botocore.exceptions import ClientError
    >>> slow = {"Error": {"Code": "SlowDown", "Message": "Reduce your request rate."}}
    >>> with storage_errors("writing the summary"):
    ...     raise ClientError(slow, "PutObject")
    Traceback (most recent call last):
    ...
    experiture_ingest.files.collect.StorageUnavailableError: S3 is unavailable while writing the summary: ...
    """
    try:
        yield
    except ClientError as exc:
        if not _transient_s3(exc):
            raise
        raise StorageUnavailableError(f"S3 is unavailable while {action}: {exc}") from exc
    except (BotoConnectionError, HTTPClientError) as exc:
        raise StorageUnavailableError(f"S3 is unavailable while {action}: {exc}") from exc


@dataclass(frozen=True)
class ErrorsFile:
    bucket: str
    key: str
    rows: int
    bytes: int

    def wire(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "rows": self.rows, "bytes": self.bytes}


@dataclass(frozen=True)
class Report:
    """What a final task wrote, for its result and its metrics."""

    outcome: str
    summary_key: str
    summary: dict[str, Any]  # the document written
    errors_file: ErrorsFile | None = None

    def wire(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"outcome": self.outcome, "summaryKey": self.summary_key}
        if self.errors_file:
            doc["errorsKey"] = self.errors_file.key
        return doc


# Errors file ---------------------------------------------------------------------------------------


def stream_to_s3(
    chunks: Iterable[bytes], s3: S3Client, bucket: str, key: str, *, part_bytes: int = PART_BYTES
) -> ErrorsFile:
    """Copy ``chunks`` into ``s3://bucket/key`` as a multipart upload; never holds more than a part.

    A failure aborts the upload, so no half-written object (or stray parts) is left behind.
    """
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/x-ndjson")[
        "UploadId"
    ]
    parts: list[CompletedPartTypeDef] = []
    buffer = bytearray()
    rows = total = 0
    last = b"\n"

    def send(body: bytes) -> None:
        number = len(parts) + 1
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)[
            "ETag"
        ]
        parts.append({"ETag": etag, "PartNumber": number})

    try:
        for chunk in chunks:
            if not chunk:
                continue
            buffer += chunk
            rows += chunk.count(b"\n")
            total += len(chunk)
            last = chunk[-1:]
            while len(buffer) >= part_bytes:
                send(bytes(buffer[:part_bytes]))
                del buffer[:part_bytes]
        if buffer or not parts:
            send(bytes(buffer))
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    if last != b"\n":
        rows += 1  # a last line without its newline
    return ErrorsFile(bucket, key, rows, total)


def _transient_download(exc: ExperitureError) -> bool:
    # The storage behind errorFileUrl may throttle (429) or fail (5xx) like any object store.
    return exc.retryable or exc.status in (408, 429)


def copy_errors_file(
    client: ExperitureClient,
    s3: S3Client,
    job_id: str,
    bucket: str,
    key: str,
    *,
    part_bytes: int = PART_BYTES,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[ErrorsFile | None, list[str]]:
    """The job's rejected rows into ``s3://bucket/key`` (None when it has none) and correlation ids.

    An expired URL (403) or a throttled/failed download starts over from a fresh location.
    """
    correlation_ids: list[str] = []
    for attempt in range(1, ERROR_FILE_ATTEMPTS + 1):
        location = client.get_import_errors(job_id)
        if location.correlation_id:
            correlation_ids.append(location.correlation_id)
        if not location.has_errors or not location.error_file_url:
            return None, correlation_ids
        try:
            copied = stream_to_s3(
                client.iter_error_file(location.error_file_url), s3, bucket, key, part_bytes=part_bytes
            )
        except ErrorFileExpiredError:
            if attempt == ERROR_FILE_ATTEMPTS:
                raise
            logger.warning("the errors file URL expired; fetching a fresh location", extra={"job_id": job_id})
            continue
        except ExperitureError as exc:
            if attempt == ERROR_FILE_ATTEMPTS or not _transient_download(exc):
                raise
            logger.warning("errors file download failed (%s); starting over", exc, extra={"job_id": job_id})
            sleep(min(2.0**attempt, 10.0))
            continue
        return copied, correlation_ids
    raise AssertionError("unreachable")  # pragma: no cover


# Summaries -----------------------------------------------------------------------------------------


def describe_error(caught: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A caught error (``{"Error", "Cause"}``) as the summary shows it: type, message, status, code.

    A Lambda's Cause is its JSON error (type, message, stack trace); only type and message are kept.
    """
    if not caught:
        return None
    kind = str(caught.get("Error") or "Error")
    cause = caught.get("Cause")
    message = str(cause or kind)
    if isinstance(cause, str) and cause.startswith("{"):
        try:
            parsed = json.loads(cause)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            kind = str(parsed.get("errorType") or kind)
            message = str(parsed.get("errorMessage") or kind)
    doc: dict[str, Any] = {"type": kind, "message": message[:2000]}
    api = _API_ERROR.match(message)
    if api:
        doc["status"] = int(api["status"])
        if api["code"]:
            doc["code"] = api["code"]
    correlation = _CORRELATION.search(message)
    if correlation:
        doc["correlationId"] = correlation["id"]
    return doc


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)


def _seconds(start: Any, end: Any) -> float | None:
    try:
        a = start if isinstance(start, datetime) else datetime.fromisoformat(str(start))
        b = end if isinstance(end, datetime) else datetime.fromisoformat(str(end))
    except (TypeError, ValueError):
        return None
    return round((b - a).total_seconds(), 3)


def build_summary(
    state: ImportState,
    outcome: Outcome,
    finished_at: datetime,
    *,
    message: str,
    errors_file: ErrorsFile | None = None,
    error: dict[str, Any] | None = None,
) -> Summary:
    """``results/<key>.json``: what happened, in words and numbers a user (or a script) can act on."""
    run, progress, job = state.run, state.progress, state.job or {}
    mapping = state.mapping
    intake = run.intake
    began = intake.received_at or progress.started_at
    job_started = job.get("startedAt") or progress.job_started_at
    summary = Summary(
        outcome=outcome,
        message=message,
        job_id=run.job_id,
        object_name=run.object_name,
        source=run.source,
        options=run.options,
        metrics=Metrics.model_validate({name: job.get(name) for name in _METRICS}) if job else None,
        error_summary=job.get("errorSummary"),
        errors_file=errors_file.wire() if errors_file else None,
        mapping=mapping,
        unmapped_columns=mapping.unmapped_columns if mapping else [],
        unmapped_required_fields=mapping.unmapped_required_fields if mapping else [],
        timings=Timings(
            received_at=_iso(intake.received_at),
            uploaded_at=_iso(intake.uploaded_at),
            upload_seconds=intake.upload_seconds,
            upload_attempts=intake.upload_attempts,
            execution_started_at=_iso(progress.started_at),
            job_started_at=_iso(job_started),
            job_completed_at=job.get("completedAt"),
            finished_at=_iso(finished_at),
            import_seconds=_seconds(job_started, job.get("completedAt") or finished_at)
            if job_started
            else None,
            total_seconds=_seconds(began, finished_at),
        ),
        scheduling=scheduling_summary(state),
        poll_outages=poll_outages_summary(state, finished_at),
        correlation_ids=list(dict.fromkeys([*intake.correlation_ids, *progress.correlation_ids])),
        abandoned_job_ids=intake.abandoned_job_ids,
        execution_arn=intake.execution_arn,
        execution=Execution(name=progress.execution_name, executions=progress.executions),
    )
    if job.get("errorMessage"):
        summary.set(error_message=job["errorMessage"])
    if error:
        summary.set(error=error)
    return summary


def scheduling_summary(state: ImportState) -> Scheduling:
    """The queue's part: when the file asked for a slot, when its job started, attempts to start it."""
    progress = state.progress
    waited = (
        _seconds(progress.queued_at, progress.job_started_at)
        if progress.queued_at and progress.job_started_at
        else None
    )
    return Scheduling(
        queued_at=_iso(progress.queued_at),
        started_at=_iso(progress.job_started_at),
        waited_seconds=waited,
        start_attempts=progress.start_attempts,
        last_refusal=progress.last_refusal,
    )


def poll_outages_summary(state: ImportState, now: datetime) -> PollOutages:
    """Outages ridden out while polling: how many, the longest (seconds), polls that failed."""
    progress = state.progress
    count, longest = progress.poll_outages, progress.longest_outage_seconds
    if progress.outage_started_at is not None:  # still in one when the run ended
        count += 1
        longest = max(longest, (now - progress.outage_started_at).total_seconds())
    return PollOutages(count=count, longest_seconds=round(longest, 3), failed_polls=progress.failed_polls)


def summary_key_for(state: ImportState, deps: TaskDeps) -> tuple[str, str | None]:
    """``results/<key>.json`` if this is the key's newest version, else a version-suffixed key.

    Returns the key and, for an older version, the newer version's id.
    """
    source = state.run.source
    if deps.queue is not None and source.sequencer:
        newest = deps.queue.newest_version(source.bucket, source.key)
        if newest and newest[0] > padded_sequencer(source.sequencer):
            version = source.version_id or source.etag or source.sequencer
            return version_result_key(source.key, version), newest[1]
    return result_key(source.key), None


def _finish(state: ImportState, deps: TaskDeps, summary: Summary) -> str:
    source, part = state.run.source, state.run.part
    if part is not None:  # one part of a split file: its own key; the file's summary combines them
        summary.set(part=part.wire())
        with storage_errors("writing the part's summary"):
            return write_summary(
                deps.s3, source.bucket, source.key, summary, key=part_result_key(part.report_key, part.index)
            )
    with storage_errors("writing the summary"):
        key, newer = summary_key_for(state, deps)
        if newer:
            summary.set(
                newer_version=newer,
                message=f"{summary.message} A newer version ({newer}) of the file is imported after this one.",
            )
        key = write_summary(deps.s3, source.bucket, source.key, summary, key=key)
    try:
        tag_source(deps.s3, source.bucket, source.key, source.version_id, summary_tags(summary))
    except (ClientError, BotoCoreError) as exc:  # the summary is what matters; a tag is a convenience
        logger.warning("could not tag the source object: %s", exc, extra={"key": source.key})
    return key


def collect(state: ImportState, deps: TaskDeps, *, part_bytes: int = PART_BYTES) -> Report:
    """The job completed: copy its rejected rows (if any), write the summary, tag the source."""
    run, job = state.run, state.job or {}
    errors_file = None
    if (job.get("invalidRows") or 0) > 0 or (job.get("rowsRejected") or 0) > 0:
        with storage_errors("writing the errors file"):
            errors_file, cids = copy_errors_file(
                deps.client,
                deps.s3,
                run.job_id,
                run.source.bucket,
                errors_key(run.source.key)
                if run.part is None
                else part_errors_key(run.part.report_key, run.part.index),
                part_bytes=part_bytes,
            )
        for cid in cids:
            state.progress.remember(cid)
    rejected = job.get("rowsRejected") if job.get("rowsRejected") is not None else job.get("invalidRows") or 0
    imported = job.get("rowsImported") if job.get("rowsImported") is not None else job.get("validRows") or 0
    outcome: Outcome = "completed_with_errors" if rejected else "completed"
    message = f"Imported {imported} of {job.get('readRows') or 0} rows into {run.object_name}"
    message += (
        f"; {rejected} rows were rejected (see {errors_file.key})."
        if errors_file
        else (f"; {rejected} rows were rejected." if rejected else ".")
    )
    summary = build_summary(state, outcome, deps.now(), message=message, errors_file=errors_file)
    return Report(outcome, _finish(state, deps, summary), summary.wire(), errors_file)


def report_failure(document: Mapping[str, Any], deps: TaskDeps) -> Report:
    """Write the failure summary for whatever ended the run; the document may be a raw input."""
    state = _state_from(document, deps)
    run, progress = state.run, state.progress
    error = describe_error(document.get("error") if isinstance(document.get("error"), Mapping) else None)
    stage = _FAILURE_STAGE.get(progress.next, "prepare") if "progress" in document else "prepare"
    outcome: Outcome = "failed"
    if progress.next == "timed_out" and not error:
        outcome = "timed_out"
        seen = (state.job or {}).get("state")
        outages = poll_outages_summary(state, deps.now())
        message = (
            f"Job {run.job_id} did not finish within {run.poll.deadline_seconds:.0f} s of its start (last "
            f"state seen {seen!r}"
            + (f", {outages.count} polling outage(s)" if outages.count else "")
            + "). It may still finish in the CDP; ask support with the job id."
        )
    elif stage == "queue" and error and error["type"] == "States.Timeout":
        message = (
            f"The file waited for a start slot longer than {run.poll.queue_max_seconds:.0f} s "
            f"(IMPORT_QUEUE_MAX_SECONDS); job {run.job_id} was never started and stays ready in the CDP. "
            "Drop the file again to retry."
        )
    elif progress.next == "collect" and "progress" in document:
        # The CDP completed the job: the rows are imported, only the report (errors file) is missing.
        outcome = "completed_report_incomplete"
        job = state.job or {}
        message = (
            f"Job {run.job_id} completed in the CDP (imported {job.get('rowsImported') or 0} of "
            f"{job.get('readRows') or 0} rows, {job.get('rowsRejected') or 0} rejected), but the report "
            f"could not be completed: {error['message'] if error else 'unknown reason'}. The rows are "
            "imported; do not drop the file again. The rejected rows can be fetched with the job id."
        )
    elif progress.next == "job_failed" and not error:
        message = f"The CDP could not import the file: {(state.job or {}).get('errorMessage') or 'no reason given'}."
    elif error and progress.next == "start_refused":
        message = f"The job was never started: {error['message']}"
    elif error:
        message = f"The import stopped at the {stage} step: {error['message']}"
    else:
        message = f"The import stopped at the {stage} step for an unknown reason."
    if error:
        error["stage"] = stage
    summary = build_summary(state, outcome, deps.now(), message=message, error=error)
    return Report(outcome, _finish(state, deps, summary), summary.wire())


def _state_from(document: Mapping[str, Any], deps: TaskDeps) -> ImportState:
    """The state document, or one rebuilt from a raw input that failed before it was prepared."""
    try:
        return ImportState.model_validate(document)
    except ValueError:
        pass
    nested = document.get("run")
    raw: Mapping[str, Any] = nested if isinstance(nested, Mapping) else document
    source = raw.get("source")
    if not isinstance(source, Mapping) or not source.get("bucket") or not source.get("key"):
        raise SummaryImpossibleError(
            "the execution input names no source bucket and key; no summary can be written"
        )
    now = deps.now()
    lenient = {
        "jobId": str(raw.get("jobId") or "unknown"),
        "objectName": str(raw.get("objectName") or "unknown"),
        "source": {
            "bucket": source["bucket"],
            "key": source["key"],
            "versionId": source.get("versionId"),
            "size": source.get("size") if isinstance(source.get("size"), int) and source["size"] > 0 else 1,
            "format": source.get("format") if source.get("format") in ("csv", "jsonl", "parquet") else "csv",
        },
        "part": raw.get("part") if isinstance(raw.get("part"), Mapping) else None,
        "intake": _lenient_intake(raw.get("intake")),
    }
    return ImportState.model_validate(
        {
            "run": lenient,
            "progress": {
                "startedAt": now,
                "executionName": "unknown",
                "rootName": "unknown",
                "next": "mapping",
            },
        }
    )


def _lenient_intake(raw: Any) -> dict[str, Any]:
    """What a raw input's intake record still says, when the record as a whole does not validate."""
    if not isinstance(raw, Mapping):
        return {}
    try:
        return IntakeRecord.model_validate(raw).wire()
    except ValueError:
        arn = raw.get("executionArn")
        return {"executionArn": arn} if isinstance(arn, str) else {}


def summary_location(bucket: str, source_key: str) -> str:
    """``s3://`` address of a source file's summary, for messages."""
    return f"s3://{bucket}/{result_key(source_key)}"
