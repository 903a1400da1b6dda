"""What the intake function hands to the import state machine: the execution input.

One document, camelCase in Step Functions, validated on both sides:

>>> run = ImportRun.model_validate({
...     "jobId": "imp_1", "objectName": "contacts",
...     "source": {"bucket": "b", "key": "incoming/contacts/a.csv", "versionId": "v1", "size": 10,
...                "format": "csv"},
... })
>>> run.poll.initial_seconds, run.source.compression
(5.0, None)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from experiture_ingest.files.options import FileOptions
from experiture_ingest.limits import IMPORT_POLL, IMPORT_QUEUE_MAX_SECONDS


class _Doc(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


class SourceObject(_Doc):
    """The exact S3 object version being imported."""

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int = Field(gt=0)
    format: Literal["csv", "jsonl", "parquet"]
    compression: Literal["gzip"] | None = None
    # From the S3 event: the queue's order (event time across keys, sequencer within one key).
    sequencer: str | None = None
    event_time: datetime | None = None


class PollSettings(_Doc):
    """The wait-and-poll cadence (docs: 5 s growing to 60 s), also the backoff after a refused start
    (capped at ``max_seconds``), and how long to keep trying."""

    initial_seconds: float = Field(default=IMPORT_POLL[0], gt=0)
    factor: float = Field(default=IMPORT_POLL[1], ge=1)
    max_seconds: float = Field(default=IMPORT_POLL[2], gt=0)
    deadline_seconds: float = Field(default=48 * 3600, gt=0, description="Give up on a stuck job after this")
    queue_max_seconds: float = Field(
        default=IMPORT_QUEUE_MAX_SECONDS, gt=0, description="Wait for a start slot at most this long"
    )
    iterations_per_execution: int = Field(
        default=500, ge=1, description="Wait/poll rounds before continuing as a new execution (history limit)"
    )


class IntakeRecord(_Doc):
    """What happened before the hand-off, for the final summary."""

    received_at: datetime | None = None
    uploaded_at: datetime | None = None
    upload_seconds: float | None = None
    upload_attempts: int | None = None
    correlation_ids: list[str] = Field(default_factory=list)
    abandoned_job_ids: list[str] = Field(default_factory=list)
    # The execution started for the file (or, for a part, the part's run): the summary names it.
    execution_arn: str | None = None


class PartRef(_Doc):
    """Set when the run imports one part of a split file: its results go to the part's own keys
    (``results/<key>.parts/``), the source is left untagged, and the file's summary combines them."""

    index: int = Field(ge=1)
    count: int = Field(ge=1)
    report_key: str = Field(min_length=1, description="The dropped file (or manifest) the results belong to")
    first_row_number: int | None = None
    rows: int | None = None
    bytes: int | None = None


class ImportRun(_Doc):
    """The state machine's input: job, object, options, source and cadence."""

    job_id: str
    object_name: str
    source: SourceObject
    options: FileOptions = Field(default_factory=FileOptions)
    poll: PollSettings = Field(default_factory=PollSettings)
    intake: IntakeRecord = Field(default_factory=IntakeRecord)
    part: PartRef | None = None
    # A part's run: the import queue's entry holding its file's turn (scheduling.turn_id).
    turn: str | None = None


class SplitRun(_Doc):
    """The state machine's input for a file larger than a part (``{"split": ...}``): planned,
    uploaded by parallel workers, imported part after part, reported as one file."""

    object_name: str
    source: SourceObject
    options: FileOptions = Field(default_factory=FileOptions)
    poll: PollSettings = Field(default_factory=PollSettings)
    intake: IntakeRecord = Field(default_factory=IntakeRecord)
    part_max_bytes: int = Field(gt=0)
    workers: int = Field(default=4, ge=1, le=1000)
    execution_name: str | None = None
    # Set for a warehouse export: the source is its manifest (or _SUCCESS marker), whose parts load as one.
    manifest: Literal["manifest", "_SUCCESS"] | None = None
    # The import queue's entry holding the file's turn while its parts import (set by the intake when
    # it registered one): every part's run carries it, and the flow's release steps remove it.
    turn: str | None = None
