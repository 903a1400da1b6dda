"""``results/<key>.json``: the one typed summary every outcome is written from.

One model for every document a user finds under ``results/``: the intake's (refused, rejected,
failed, uploaded, waiting, splitting, superseded), an import run's final one (and a part's own, under
``results/<key>.parts/``), a split file's or a warehouse load's combined one, and a held file's once
its load ended. Fields are optional because each outcome fills its own; unknown fields are refused
so no builder can write one the reference (docs/summary.md) does not list. A field a builder sets,
even to ``null``, is written; one it does not set is left out.

>>> s = Summary(outcome="refused", key="incoming/contacts/a.txt",
...             reason=Problem(code="UNSUPPORTED_FORMAT", message="use .csv"))
>>> s.wire()
{'schemaVersion': 1, 'outcome': 'refused', 'key': 'incoming/contacts/a.txt', 'reason': {'code': 'UNSUPPORTED_FORMAT', 'message': 'use .csv'}}
>>> Summary.model_validate({"outcome": "refused", "reasn": {}})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for Summary
reasn
  Extra inputs are not permitted ...
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer
from pydantic.alias_generators import to_camel

from experiture_ingest.files.handoff import SourceObject
from experiture_ingest.files.mapping import MappingPlan
from experiture_ingest.files.options import FileOptions

SCHEMA_VERSION: Literal[1] = 1

Outcome = Literal[
    # the intake
    "refused",
    "rejected",
    "failed",
    "uploaded",
    "superseded",
    "waiting",
    "splitting",
    # an import run, a split file, a warehouse load (and a held file once its load ended)
    "completed",
    "completed_with_errors",
    "completed_report_incomplete",
    "partially_failed",
    "timed_out",
]


class _Part(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_assignment=True
    )


class Problem(_Part):
    """Why a file was refused or rejected (``reason``) or what stopped a run (``error``)."""

    type: str | None = None
    status: int | None = None
    code: str | None = None
    message: str | None = None
    details: Any = None
    remediation: str | None = None
    correlation_id: str | None = None
    stage: str | None = Field(default=None, description="The step that failed (mapping, start, poll, ...)")


class Metrics(_Part):
    """The job's counts (summed over the parts of a split file or a load)."""

    read_rows: int | None = None
    valid_rows: int | None = None
    invalid_rows: int | None = None
    merged_inserts: int | None = None
    merged_updates: int | None = None
    rows_imported: int | None = None
    rows_rejected: int | None = None
    success_rate: float | None = None


class ErrorsFileRef(_Part):
    """``results/<key>.errors.jsonl``: the rejected rows, one JSON line each."""

    bucket: str
    key: str
    rows: int
    bytes: int


class Timings(_Part):
    """When things happened (ISO 8601) and how long they took (seconds)."""

    received_at: str | None = None
    uploaded_at: str | None = None
    upload_seconds: float | None = None
    upload_attempts: int | None = None
    execution_started_at: str | None = None
    job_started_at: str | None = None
    job_completed_at: str | None = None
    finished_at: str | None = None
    import_seconds: float | None = None
    total_seconds: float | None = None


class Scheduling(_Part):
    """The import queue: when the file asked for a start slot, when its job started, start attempts."""

    queued_at: str | None = None
    started_at: str | None = None
    waited_seconds: float | None = None
    start_attempts: int = 0
    last_refusal: str | None = None


class PollOutages(_Part):
    """API outages ridden out while polling."""

    count: int = 0
    longest_seconds: float = 0.0
    failed_polls: int = 0


class Execution(_Part):
    """The state machine execution that wrote the summary (the last continuation) and how many ran."""

    name: str | None = None
    executions: int | None = None


class PartOf(_Part):
    """A part's own summary (``results/<key>.parts/<n>.json``): which part of which file."""

    index: int
    count: int | None = None
    report_key: str | None = None
    first_row_number: int | None = None
    rows: int | None = None
    bytes: int | None = None


class Split(_Part):
    """How a file was cut (or a load grouped) into parts."""

    kind: Literal["split", "manifest"] | None = None
    part_max_bytes: int | None = None
    parts: int | None = None
    total_bytes: int | None = None
    total_rows: int | None = None
    header_bytes: int | None = None
    plan_key: str | None = None
    scan_seconds: float | None = None
    scan_mb_per_second: float | None = Field(default=None, alias="scanMBPerSecond")


class PartLine(_Part):
    """One line of ``parts``: what was planned, its job, and how it ended."""

    index: int
    job_id: str | None = None
    bytes: int | None = None
    first_row_number: int | None = None
    rows: int | None = None
    outcome: str
    segments: list[str] | None = Field(default=None, description="A load's job: the part files it holds")
    rows_imported: int | None = None
    rows_rejected: int | None = None
    message: str | None = None


class SourceBytes(_Part):
    """A failed part's byte range in the dropped file, to re-drop only its rows."""

    key: str
    version_id: str | None = None
    start: int
    end: int


class SegmentRows(_Part):
    """Rows of one part file inside a failed job of a load."""

    key: str
    first_row_number: int | None = None
    rows: int | None = None


class RowRange(_Part):
    """One part that did not land: its rows and bytes."""

    part: int
    first_row_number: int | None = None
    rows: int | None = None
    last_row_number: int | None = None
    source_bytes: SourceBytes
    segments: list[SegmentRows] | None = None


class HeldLoad(_Part):
    """A held file of a warehouse export, once its load ended: which load, how, in which jobs."""

    key: str = Field(description="The manifest or _SUCCESS marker that loaded the file")
    summary_key: str
    job_ids: list[str] = Field(default_factory=list)
    finished_at: str | None = None


class Summary(_Part):
    """``results/<key>.json`` (and a part's, a stale version's, a held file's): what happened."""

    schema_version: Literal[1] = SCHEMA_VERSION
    outcome: Outcome
    message: str | None = None
    # The dropped object, as the intake saw it
    key: str | None = None
    bucket: str | None = None
    version_id: str | None = None
    etag: str | None = None
    file_name: str | None = None
    received_at: str | None = None
    size: int | None = None
    format: str | None = None
    compression: str | None = None
    content_type: str | None = None
    source: SourceObject | None = None
    # What it was imported as, and by which execution
    object_name: str | None = None
    options: FileOptions | None = None
    execution_name: str | None = None
    execution_arn: str | None = None
    execution: Execution | None = None
    # The intake's upload
    job_id: str | None = None
    uploaded_at: str | None = None
    upload_seconds: float | None = None
    upload_attempts: int | None = None
    bytes_uploaded: int | None = None
    abandoned_job_ids: list[str] | None = None
    correlation_ids: list[str] | None = None
    # Refusals, failures, versions, holds
    reason: Problem | None = None
    will_retry: bool | None = None
    superseded_by: str | None = None
    newer_version: str | None = None
    waiting_for: Literal["manifest", "_SUCCESS"] | None = None
    manifest_entries: int | None = None
    load: HeldLoad | None = None
    # The import
    mapping: MappingPlan | None = None
    unmapped_columns: list[str] | None = None
    unmapped_required_fields: list[str] | None = None
    metrics: Metrics | None = None
    error_summary: dict[str, int] | None = None
    errors_file: ErrorsFileRef | None = None
    error_message: str | None = None
    error: Problem | None = None
    timings: Timings | None = None
    scheduling: Scheduling | None = None
    poll_outages: PollOutages | None = None
    # Parts: a part's own summary, or a split file's / load's combined one
    part: PartOf | None = None
    split: Split | None = None
    job_ids: list[str] | None = None
    parts: list[PartLine] | None = None
    failed_row_ranges: list[RowRange] | None = None
    part_results: list[str] | None = None

    def model_post_init(self, context: Any, /) -> None:
        self.model_fields_set.add("schema_version")  # always written, whoever builds the summary

    @field_serializer("source", "options", "mapping")
    def _own_wire(self, value: SourceObject | FileOptions | MappingPlan | None) -> dict[str, Any] | None:
        return value.wire() if value is not None else None

    @classmethod
    def draft(cls, **fields: Any) -> Summary:
        """A summary the intake fills step by step, its outcome set last (before it is written)."""
        draft = cls.model_construct()  # type: ignore[call-arg]  # the outcome is set before writing
        return draft.set(**fields)

    def set(self, **fields: Any) -> Summary:
        """Set fields by their Python names (validated; an unknown name raises); returns self."""
        for name, value in fields.items():
            setattr(self, name, value)
        return self

    def wire(self) -> dict[str, Any]:
        """The JSON document, camelCase, with only the fields a builder set."""
        return self.model_dump(by_alias=True, mode="json", exclude_unset=True)
