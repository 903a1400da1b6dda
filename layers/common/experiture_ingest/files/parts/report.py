"""One report for a split file (or a manifest's load): the parts' summaries summed, their errors
files merged with rows numbered as in the original file, and the rows that did not land named.

Outcomes: ``completed`` / ``completed_with_errors`` (every part landed), ``partially_failed`` (some
parts did not: ``failedRowRanges`` names their rows and source bytes, so only those are re-dropped),
``failed`` (no part landed).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from experiture_ingest.files.collect import ErrorsFile, stream_to_s3
from experiture_ingest.files.handoff import SplitRun
from experiture_ingest.files.layout import errors_key, part_errors_key, part_result_key, plan_key
from experiture_ingest.files.parts.plan import PartPlan, PartSpec
from experiture_ingest.files.summary import (
    Execution,
    Metrics,
    Outcome,
    PartLine,
    RowRange,
    SegmentRows,
    SourceBytes,
    Split,
    Summary,
    Timings,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

LANDED = frozenset({"completed", "completed_with_errors", "completed_report_incomplete"})
_SUMMED = (
    "readRows",
    "validRows",
    "invalidRows",
    "mergedInserts",
    "mergedUpdates",
    "rowsImported",
    "rowsRejected",
)


def _row_range(spec: PartSpec) -> RowRange:
    first = spec.first_row_number
    body = spec.ranges[-1]
    row_range = RowRange(
        part=spec.index,
        first_row_number=first,
        rows=spec.rows,
        source_bytes=SourceBytes(key=body.key, version_id=body.version_id, start=body.start, end=body.end),
    )
    if first is not None and spec.rows is not None:
        row_range.last_row_number = first + spec.rows - 1
    if spec.segments:
        row_range.segments = [SegmentRows.model_validate(s.wire()) for s in spec.segments]
    return row_range


def part_entry(
    spec: PartSpec, summary: Mapping[str, Any] | None, upload: Mapping[str, Any] | None
) -> PartLine:
    """One line of ``parts``: what was planned, the job, and how it ended."""
    outcome = str(summary.get("outcome")) if summary else ("not_imported" if upload else "not_uploaded")
    entry = PartLine(
        index=spec.index,
        job_id=(summary or {}).get("jobId") or (upload or {}).get("jobId"),
        bytes=spec.bytes,
        first_row_number=spec.first_row_number,
        rows=spec.rows,
        outcome=outcome,
    )
    if spec.segments:  # a manifest's load: which part files the job holds
        entry.segments = [segment.key for segment in spec.segments]
    metrics = (summary or {}).get("metrics") or {}
    if metrics:
        entry.rows_imported = metrics.get("rowsImported", metrics.get("validRows"))
        entry.rows_rejected = metrics.get("rowsRejected", metrics.get("invalidRows"))
    if outcome not in LANDED:
        entry.message = (summary or {}).get("message") or (
            "the part was uploaded but its import never ran" if upload else "the part's upload failed"
        )
    return entry


RowMap = list[tuple[str, int, int]]  # per range of a job: (part file key, rows, first row in that file)


def row_maps(plan: PartPlan, uploads: Mapping[int, Mapping[str, Any] | None]) -> dict[int, RowMap]:
    """For a manifest's load: which part file each job's rows come from, when every count is known.

    Rows are counted per range by the worker (text) or known from the footer (Parquet); a file whose
    rows are not all known (gzip, or a worker that replayed an earlier upload) keeps job numbering.
    """
    next_row: dict[str, int] = {}
    unknown: set[str] = set()
    maps: dict[int, RowMap] = {}
    for spec in plan.parts:
        data = [r for r in spec.ranges if not r.header]
        counted = (uploads.get(spec.index) or {}).get("rangeRows")
        rows = counted if isinstance(counted, list) and len(counted) == len(data) else [r.rows for r in data]
        entries: RowMap = []
        for byte_range, n in zip(data, rows, strict=True):
            if n is None or byte_range.key in unknown:
                unknown.add(byte_range.key)
                continue
            first = next_row.get(byte_range.key, 1)
            entries.append((byte_range.key, n, first))
            next_row[byte_range.key] = first + n
        maps[spec.index] = entries if len(entries) == len(data) else []
    return maps


def _locate(row: int, entries: RowMap) -> tuple[str, int] | None:
    before = 0
    for key, rows, first in entries:
        if row <= before + rows:
            return key, first + row - before - 1
        before += rows
    return None


def _error_lines(
    s3: S3Client, bucket: str, key: str, *, offset: int, index: int, entries: RowMap | None
) -> Iterator[bytes]:
    """A part's errors file with ``rowNumber`` moved to the original file's numbering (a split file)
    or to the row of the part file it came from (a manifest's load, ``key`` naming the file)."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        for line in body.iter_lines():
            if not line.strip():
                continue
            doc = json.loads(line)
            row = doc.get("rowNumber")
            if isinstance(row, int):
                doc["partRowNumber"] = row
                located = _locate(row, entries) if entries else None
                if located is not None:
                    doc["key"], doc["rowNumber"] = located
                elif entries is None:
                    doc["rowNumber"] = row + offset
            doc["part"] = index
            yield json.dumps(doc, separators=(",", ":")).encode() + b"\n"
    finally:
        body.close()


def merge_errors(
    s3: S3Client,
    plan: PartPlan,
    with_errors: list[PartSpec],
    uploads: Mapping[int, Mapping[str, Any] | None],
    *,
    part_bytes: int,
) -> ErrorsFile | None:
    """``results/<key>.errors.jsonl`` from the parts' errors files, in part order (constant memory)."""
    if not with_errors:
        return None
    source = plan.source
    maps = row_maps(plan, uploads) if plan.kind == "manifest" else {}

    def lines() -> Iterator[bytes]:
        for spec in with_errors:
            offset = (spec.first_row_number or 1) - 1
            entries = maps.get(spec.index) if plan.kind == "manifest" else None
            yield from _error_lines(
                s3,
                source.bucket,
                part_errors_key(source.key, spec.index),
                offset=offset,
                index=spec.index,
                entries=entries,
            )

    return stream_to_s3(lines(), s3, source.bucket, errors_key(source.key), part_bytes=part_bytes)


def combined_summary(
    run: SplitRun,
    plan: PartPlan,
    summaries: Mapping[int, Mapping[str, Any] | None],
    uploads: Mapping[int, Mapping[str, Any] | None],
    errors_file: ErrorsFile | None,
    *,
    finished_at: datetime,
    execution_name: str | None,
) -> Summary:
    """``results/<key>.json`` for a split file or a manifest's load."""
    parts = [part_entry(spec, summaries.get(spec.index), uploads.get(spec.index)) for spec in plan.parts]
    landed = [p for p in parts if p.outcome in LANDED]
    failed_specs = [spec for spec, p in zip(plan.parts, parts, strict=True) if p.outcome not in LANDED]
    metrics: dict[str, Any] = dict.fromkeys(_SUMMED, 0)
    error_summary: Counter[str] = Counter()
    for index in (p.index for p in landed):
        landed_summary = summaries.get(index) or {}
        for name in _SUMMED:
            metrics[name] += (landed_summary.get("metrics") or {}).get(name) or 0
        error_summary.update(landed_summary.get("errorSummary") or {})
    metrics["successRate"] = (
        round(metrics["rowsImported"] / metrics["readRows"], 4) if metrics["readRows"] else None
    )
    rejected = metrics["rowsRejected"] or metrics["invalidRows"]
    outcome: Outcome
    if not failed_specs:
        outcome = "completed_with_errors" if rejected else "completed"
    elif landed:
        outcome = "partially_failed"
    else:
        outcome = "failed"
    noun = "load" if plan.kind == "manifest" else "file"
    message = (
        f"Imported {metrics['rowsImported']} of {metrics['readRows']} rows into {run.object_name} "
        f"in {len(landed)} of {len(parts)} parts"
    )
    if rejected:
        message += f"; {rejected} rows were rejected" + (f" (see {errors_file.key})" if errors_file else "")
    if failed_specs:
        ranges = ", ".join(
            f"part {s.index} (rows {s.first_row_number}-{(s.first_row_number or 0) + (s.rows or 0) - 1})"
            if s.first_row_number is not None and s.rows is not None
            else f"part {s.index}"
            for s in failed_specs
        )
        message += (
            f". These parts did not land: {ranges}. Re-drop only their rows (README, 'Re-dropping the parts "
            f"that failed'); re-dropping this same {noun} would not import them again"
        )
    return Summary(
        outcome=outcome,
        message=message + ".",
        key=run.source.key,
        object_name=run.object_name,
        source=run.source,
        options=run.options,
        split=Split(
            kind=plan.kind,
            part_max_bytes=plan.part_max_bytes,
            parts=len(plan.parts),
            total_bytes=plan.total_bytes,
            total_rows=plan.total_rows,
            header_bytes=plan.header_bytes,
            plan_key=plan_key(run.source.key),
            scan_seconds=plan.scan_seconds,
            scan_mb_per_second=plan.scan_mb_per_second,
        ),
        job_ids=[p.job_id for p in parts if p.job_id],
        parts=parts,
        metrics=Metrics.model_validate(metrics),
        error_summary=dict(error_summary) or None,
        errors_file=errors_file.wire() if errors_file else None,
        failed_row_ranges=[_row_range(spec) for spec in failed_specs],
        timings=Timings(
            received_at=run.intake.received_at.isoformat() if run.intake.received_at else None,
            finished_at=finished_at.isoformat(),
            upload_seconds=round(
                sum(float((u or {}).get("uploadSeconds") or 0) for u in uploads.values()), 3
            ),
            upload_attempts=sum(int((u or {}).get("uploadAttempts") or 0) for u in uploads.values()),
        ),
        abandoned_job_ids=[j for u in uploads.values() for j in (u or {}).get("abandonedJobIds") or []],
        execution_arn=run.intake.execution_arn,
        execution=Execution(name=execution_name),
        part_results=[part_result_key(run.source.key, spec.index) for spec in plan.parts],
    )
