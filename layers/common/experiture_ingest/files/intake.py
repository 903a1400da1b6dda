"""The intake: one dropped S3 object becomes one import job, uploaded, and handed to the state machine.

Steps, each visible to the user in ``results/<key>.json`` and the object's tags:

1. **Refuse** what cannot be imported, without calling the API: a key outside ``incoming/<object>/``,
   a folder marker, an unsupported extension, an empty object, one over the single-PUT limit, a
   malformed ``config/<object>.json`` or malformed ``experiture-*`` metadata, a CSV or Parquet
   header naming a column twice.
2. **Skip duplicates**: S3 delivers events at least once. The execution name is derived from the
   object version, so a version already handed off is recognised (and a race between two deliveries
   is settled by Step Functions refusing a second execution of that name). **Skip stale versions**:
   S3 does not order events; a version older (by the event's ``sequencer``) than one already queued
   or imported for the same key ends ``superseded`` (summary beside the key's, see
   :func:`~experiture_ingest.files.layout.version_result_key`) and starts nothing.
3. **Init** ``POST /import-jobs`` with an Idempotency-Key derived from bucket, key and version id (or
   ETag): a duplicated init replays the same job instead of creating one.
4. **Upload** the exact object version, streamed (see :mod:`~experiture_ingest.files.streaming`),
   retried from byte 0 by the client; an expired slot, or one that keeps failing, is abandoned for a
   fresh job (a new, still deterministic, key) and its id recorded. A storage refusal that a fresh
   slot would get too (a signature or access refusal) fails the file, naming the storage's code,
   without opening another job.
5. **Hand off** to the import state machine (:class:`~experiture_ingest.files.handoff.ImportRun`).

A file larger than the part size (``INTAKE_PART_MAX_BYTES``) skips 3-4: it is handed off as
``{"split": SplitRun}`` and the state machine plans, uploads and imports its parts
(:mod:`experiture_ingest.files.parts`). In a folder whose config says ``waitFor``, data files are
held (``waiting``) and a manifest or ``_SUCCESS`` marker hands off all its parts as one load.

>>> import uuid
>>> key = idempotency_key("b", "incoming/contacts/a.csv", "v1", None)
>>> key == idempotency_key("b", "incoming/contacts/a.csv", "v1", None), uuid.UUID(key).version
(True, 4)
>>> key == idempotency_key("b", "incoming/contacts/a.csv", "v2", None)  # a new version: a new import
False
>>> execution_name("b", "incoming/contacts/spring sale.csv", "v1", None)[:16]
'spring_sale.csv-'
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from experiture_ingest.client import (
    AuthenticationError,
    ExperitureClient,
    ExperitureError,
    ForbiddenError,
    ImportJobInit,
    UploadError,
    UploadRefusedError,
    UploadResult,
    UploadSlot,
    UploadSlotExpiredError,
)
from experiture_ingest.client.idempotency import derived_key
from experiture_ingest.files.formats import FileFormat, detect_format, supported_extensions
from experiture_ingest.files.handoff import ImportRun, IntakeRecord, PollSettings, SourceObject, SplitRun
from experiture_ingest.files.header import DuplicateColumnsError, HeaderError, read_columns
from experiture_ingest.files.layout import INCOMING_PREFIX, result_key, version_result_key
from experiture_ingest.files.options import FileOptions
from experiture_ingest.files.parts.errors import PartsError
from experiture_ingest.files.parts.held import hold_unless_loaded, loaded_summary
from experiture_ingest.files.parts.manifest import (
    is_manifest_key,
    is_success_marker,
    read_manifest,
    success_folder_entries,
)
from experiture_ingest.files.parts.plan import gzip_refusal
from experiture_ingest.files.results import read_stored, summary_tags, tag_source, write_summary
from experiture_ingest.files.routing import Refusal, folder_of, load_config, resolve_options
from experiture_ingest.files.streaming import DEFAULT_CHUNK_BYTES, DEFAULT_READ_AHEAD_BYTES, S3Source
from experiture_ingest.files.summary import Problem, Split, Summary
from experiture_ingest.limits import (
    IMPORT_MAX_FILE_BYTES,
    IMPORT_POLL,
    IMPORT_QUEUE_MAX_SECONDS,
    PART_MAX_BYTES,
    PART_MIN_BYTES,
    SINGLE_PUT_MAX_BYTES,
)
from experiture_ingest.scheduling.policy import group_of, padded_sequencer, turn_id
from experiture_ingest.scheduling.table import QueueEntry, QueueTable, QueueUnavailableError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_stepfunctions import SFNClient

logger = logging.getLogger(__name__)

# A replayed init (Lambda retry, late duplicate) may return a slot that has already expired.
_SLOT_MARGIN_SECONDS = 0.0
# Hard cap on inits for one file, counting replayed slots that had already expired.
_MAX_GENERATIONS = 20
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class IntakeSettings(BaseModel):
    """The intake function's settings, from the environment (bucket-independent)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    state_machine_arn: str = Field(alias="IMPORT_STATE_MACHINE_ARN", min_length=1)
    single_put_max_bytes: int = Field(default=SINGLE_PUT_MAX_BYTES, gt=0, alias="INTAKE_SINGLE_PUT_MAX_BYTES")
    # A file larger than this is split into row-aligned parts, each its own job (files/parts).
    # Unset: 4 GiB, or the single-PUT limit if that is lower.
    part_max_bytes: int | None = Field(default=None, ge=PART_MIN_BYTES, alias="INTAKE_PART_MAX_BYTES")
    part_workers: int = Field(default=4, ge=1, le=1000, alias="INTAKE_PART_WORKERS")
    max_jobs_per_file: int = Field(default=3, ge=1, le=10, alias="INTAKE_MAX_JOBS_PER_FILE")
    chunk_bytes: int = Field(default=DEFAULT_CHUNK_BYTES, ge=64 * 1024, alias="INTAKE_CHUNK_BYTES")
    read_ahead_bytes: int = Field(default=DEFAULT_READ_AHEAD_BYTES, ge=0, alias="INTAKE_READ_AHEAD_BYTES")
    poll_initial_seconds: float = Field(default=IMPORT_POLL[0], gt=0, alias="IMPORT_POLL_INITIAL_SECONDS")
    poll_factor: float = Field(default=IMPORT_POLL[1], ge=1, alias="IMPORT_POLL_FACTOR")
    poll_max_seconds: float = Field(default=IMPORT_POLL[2], gt=0, alias="IMPORT_POLL_MAX_SECONDS")
    poll_deadline_seconds: float = Field(default=48 * 3600, gt=0, alias="IMPORT_DEADLINE_SECONDS")
    queue_max_seconds: float = Field(default=IMPORT_QUEUE_MAX_SECONDS, gt=0, alias="IMPORT_QUEUE_MAX_SECONDS")
    # The import queue's table, where the newest version of each key is recorded (unset: no check).
    queue_table: str | None = Field(default=None, min_length=3, alias="IMPORT_QUEUE_TABLE")

    @model_validator(mode="after")
    def _part_fits_one_put(self) -> IntakeSettings:
        if self.part_max_bytes is not None and self.part_max_bytes > self.single_put_max_bytes:
            raise ValueError(
                f"INTAKE_PART_MAX_BYTES ({self.part_max_bytes}) is above the single-PUT limit "
                f"({self.single_put_max_bytes} bytes): a part must fit one upload"
            )
        return self

    @property
    def part_size(self) -> int:
        """The most bytes one job takes: larger files are split into parts of at most this."""
        return self.part_max_bytes or min(PART_MAX_BYTES, self.single_put_max_bytes)

    def poll(self) -> PollSettings:
        return PollSettings(
            initial_seconds=self.poll_initial_seconds,
            factor=self.poll_factor,
            max_seconds=self.poll_max_seconds,
            deadline_seconds=self.poll_deadline_seconds,
            queue_max_seconds=self.queue_max_seconds,
        )


@dataclass(frozen=True)
class DroppedFile:
    """What an ObjectCreated event says about one object (key already URL-decoded)."""

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    sequencer: str | None = None
    event_time: str | None = None


@dataclass
class IntakeOutcome:
    """What happened to one file: the summary written (if any) and figures for metrics.

    ``outcome``: ``refused`` (bad input, no API call), ``rejected`` (the API refused the init),
    ``uploaded`` (handed off), ``duplicate`` (already handed off: nothing written), ``superseded``
    (a newer version of the key is already queued or imported: nothing imported), ``waiting`` (held
    in a ``waitFor`` folder), ``already_loaded`` (held, but its export's load already ended for this
    version: a late or repeated event, nothing written), ``failed``
    (transient or configuration failure: ``retry`` tells the handler to raise so Lambda retries and
    then sends the event to the on-failure destination).
    """

    outcome: str
    summary: dict[str, Any]  # the summary's JSON document (written unless a duplicate)
    retry: bool = False
    job_id: str | None = None
    bytes_uploaded: int = 0
    upload_seconds: float = 0.0
    abandoned_job_ids: list[str] = field(default_factory=list)


@dataclass
class _File:
    """One file's progress through the intake: what the summary will say."""

    dropped: DroppedFile
    version_id: str | None
    summary: Summary
    etag: str | None = None
    correlation_ids: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    refused_job_id: str | None = None  # the job whose upload the storage refused (left pending)


def _identity(bucket: str, key: str, version_id: str | None, etag: str | None) -> bytes:
    version = f"v:{version_id}" if version_id else f"e:{(etag or '').strip(chr(34))}"
    return "\0".join((bucket, key, version)).encode()


def idempotency_key(
    bucket: str, key: str, version_id: str | None, etag: str | None, generation: int = 1
) -> str:
    """A UUID (v4-shaped, as the API asks) determined by the object version and the job generation."""
    return derived_key(_identity(bucket, key, version_id, etag), str(generation))


def execution_name(bucket: str, key: str, version_id: str | None, etag: str | None) -> str:
    """The one Step Functions execution name for an object version (<= 80 chars, readable prefix)."""
    stem = _NAME_UNSAFE.sub("_", key.rsplit("/", 1)[-1])[:39].strip("_") or "file"
    return f"{stem}-{hashlib.sha256(_identity(bucket, key, version_id, etag)).hexdigest()[:40]}"


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _source_of(file: _File, size: int, fmt: FileFormat, received: datetime) -> SourceObject:
    """The exact object version being imported, with what orders it (sequencer, event time)."""
    dropped = file.dropped
    return SourceObject(
        bucket=dropped.bucket,
        key=dropped.key,
        version_id=file.version_id,
        etag=file.etag,
        size=size,
        format=fmt.format,
        compression=fmt.compression,
        sequencer=dropped.sequencer,
        event_time=_event_time(dropped.event_time) or received,
    )


def _event_time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def _clean_version(version_id: str | None) -> str | None:
    return None if version_id in (None, "", "null") else version_id


class Intake:
    """The intake logic over its three adapters: S3, Step Functions and the Experiture client."""

    def __init__(
        self,
        *,
        s3: S3Client,
        sfn: SFNClient,
        client: ExperitureClient,
        settings: IntakeSettings,
        annotate: Callable[..., None] | None = None,
        clock: Callable[[], datetime] = _now,
        versions: QueueTable | None = None,
    ) -> None:
        self.s3 = s3
        self.sfn = sfn
        self.client = client
        self.settings = settings
        self.versions = versions
        self._annotate = annotate or (lambda **_: None)
        self._clock = clock

    # The one entry point ----------------------------------------------------------------------

    def handle(self, dropped: DroppedFile) -> IntakeOutcome:
        """Refuse, skip, or import one dropped object; never raises for a file's own problems."""
        received = self._clock()
        file = _File(
            dropped,
            _clean_version(dropped.version_id),
            Summary.draft(
                bucket=dropped.bucket,
                key=dropped.key,
                version_id=_clean_version(dropped.version_id),
                etag=dropped.etag,
                file_name=dropped.key.rsplit("/", 1)[-1],
                received_at=_iso(received),
            ),
            etag=dropped.etag,
        )
        try:
            folder = folder_of(dropped.key)
            if is_manifest_key(dropped.key) or is_success_marker(dropped.key):
                config = load_config(self.s3, dropped.bucket, folder)
                if config.wait_for is not None:
                    return self._load_export(file, folder, config, received)
            fmt = self._format(file.summary.file_name or "")
            head = self._head(dropped.bucket, dropped.key, file.version_id)
            file.version_id = _clean_version(head.get("VersionId")) or file.version_id
            file.etag = str(head.get("ETag") or dropped.etag or "").strip('"') or None
            size = int(head["ContentLength"])
            file.summary.set(version_id=file.version_id, etag=file.etag, size=size)
            split = self._check_size(size, fmt)
            options = resolve_options(
                load_config(self.s3, dropped.bucket, folder), head.get("Metadata") or {}
            )
            source = _source_of(file, size, fmt, received)
            self._check_header(source)
        except Refusal as refusal:
            return self._refuse(file, refusal, tag=refusal.code != "OBJECT_GONE")
        except (ClientError, BotoCoreError) as exc:
            return self._aws_failure(file, exc, "read the object or its config")

        object_name = options.object_name or folder
        if options.wait_for is not None:
            return self._hold(file, options, object_name)
        name = execution_name(dropped.bucket, dropped.key, file.version_id, file.etag)
        file.summary.set(
            object_name=object_name,
            format=fmt.format,
            compression=fmt.compression,
            options=options,
            execution_name=name,
        )
        try:
            handed_off = self._execution_exists(self._execution_arn(name))
        except (ClientError, BotoCoreError) as exc:
            return self._aws_failure(file, exc, "check for a previous hand-off")
        if handed_off:
            logger.info("object version already handed off as %s; duplicate event ignored", name)
            return IntakeOutcome("duplicate", file.summary.wire())
        try:
            newer = self._newer_version(file)
        except (ClientError, BotoCoreError) as exc:
            return self._aws_failure(file, exc, "record the version")
        except QueueUnavailableError as exc:  # DynamoDB throttled or failed: Lambda retries the event
            cause = exc.__cause__
            assert isinstance(cause, ClientError | BotoCoreError)
            return self._aws_failure(file, cause, "record the version")
        if newer:
            return self._superseded(file, newer)

        if split:
            return self._hand_off_split(
                file, source=source, options=options, object_name=object_name, received=received, name=name
            )

        request = ImportJobInit(
            object_name=object_name,
            file_name=file.summary.file_name or "",
            file_size=size,
            **options.init_fields(),
        )
        try:
            slot, result = self._init_and_upload(file, request, fmt)
        except ExperitureError as exc:
            return self._api_failure(file, exc)
        except (ClientError, BotoCoreError) as exc:
            return self._aws_failure(file, exc, "read the object")

        uploaded = self._clock()
        run = ImportRun(
            job_id=slot.job_id,
            object_name=object_name,
            source=source,
            options=options,
            poll=self.settings.poll(),
            intake=IntakeRecord(
                received_at=received,
                uploaded_at=uploaded,
                upload_seconds=round(result.seconds, 3),
                upload_attempts=result.attempts,
                correlation_ids=file.correlation_ids,
                abandoned_job_ids=file.abandoned,
                execution_arn=self._execution_arn(name),
            ),
        )
        file.summary.set(
            job_id=slot.job_id,
            uploaded_at=_iso(uploaded),
            upload_seconds=round(result.seconds, 3),
            upload_attempts=result.attempts,
            bytes_uploaded=result.bytes_sent,
            content_type=fmt.content_type,
            correlation_ids=file.correlation_ids,
            abandoned_job_ids=file.abandoned,
        )
        try:
            self._register(run, name)
        except (ClientError, BotoCoreError, QueueUnavailableError) as exc:
            return self._queue_failure(file, exc)
        try:
            started = self.sfn.start_execution(
                stateMachineArn=self.settings.state_machine_arn,
                name=name,
                input=json.dumps(run.wire(), separators=(",", ":")),
            )
        except self.sfn.exceptions.ExecutionAlreadyExists:
            logger.info("a concurrent delivery of this event already started %s; duplicate ignored", name)
            return IntakeOutcome("duplicate", file.summary.wire(), job_id=slot.job_id)
        except ClientError as exc:
            return self._aws_failure(file, exc, "start the import state machine")
        file.summary.set(outcome="uploaded", execution_arn=started["executionArn"])
        self._report(file, tag=True)
        logger.info(
            "uploaded %d bytes in %.2f s (%d attempt(s)); import handed off",
            result.bytes_sent,
            result.seconds,
            result.attempts,
            extra={"bytes": result.bytes_sent, "execution_name": name},
        )
        return IntakeOutcome(
            "uploaded",
            file.summary.wire(),
            job_id=slot.job_id,
            bytes_uploaded=result.bytes_sent,
            upload_seconds=result.seconds,
            abandoned_job_ids=file.abandoned,
        )

    # Warehouse exports ------------------------------------------------------------------------

    def _hold(self, file: _File, options: FileOptions, object_name: str) -> IntakeOutcome:
        """A data file in a ``waitFor`` folder: imported with its manifest or ``_SUCCESS``, never alone."""
        marker = (
            "a manifest naming it" if options.wait_for == "manifest" else "a _SUCCESS marker in its folder"
        )
        file.summary.set(
            outcome="waiting",
            waiting_for=options.wait_for,
            object_name=object_name,
            message=(
                f"Held, not imported: config/{folder_of(file.dropped.key)}.json says waitFor "
                f"{options.wait_for!r}, so this file is imported with the rest of its export when {marker} "
                "lands (that load's summary lists it)."
            ),
        )
        if self._older_version_key(file) is not None:  # a newer version is known: this one's goes beside
            self._report(file, tag=True)
            return IntakeOutcome("waiting", file.summary.wire())
        dropped = file.dropped
        try:
            loaded = hold_unless_loaded(self.s3, dropped.bucket, dropped.key, file.summary)
        except (ClientError, BotoCoreError) as exc:
            # Nothing is written: a "failed" summary could hide the load's. Lambda retries the event.
            logger.error("could not hold the file (its summary was left as it is): %s", exc)
            return IntakeOutcome("failed", file.summary.wire(), retry=True)
        if loaded is not None:
            logger.info(
                "already loaded with its export (%s): late or repeated event, summary left as it is",
                loaded.load.key if loaded.load else "?",
            )
            return IntakeOutcome("already_loaded", loaded.wire())
        return IntakeOutcome("waiting", file.summary.wire())

    def _load_export(
        self, file: _File, folder: str, config: FileOptions, received: datetime
    ) -> IntakeOutcome:
        """A manifest or ``_SUCCESS`` marker in a ``waitFor`` folder: hand off all its parts as one load."""
        dropped = file.dropped
        kind = "_SUCCESS" if is_success_marker(dropped.key) else "manifest"
        if kind != config.wait_for:
            return self._refuse(
                file,
                Refusal(
                    "UNSUPPORTED_FORMAT",
                    f"config/{folder}.json waits for {config.wait_for!r}, and this key is a {kind}; "
                    "it is not imported",
                ),
                tag=True,
            )
        try:
            head = self._head(dropped.bucket, dropped.key, file.version_id)
            file.version_id = _clean_version(head.get("VersionId")) or file.version_id
            file.etag = str(head.get("ETag") or dropped.etag or "").strip('"') or None
            size = max(int(head["ContentLength"]), 1)
            options = resolve_options(config, head.get("Metadata") or {})
            probe = SourceObject(
                bucket=dropped.bucket, key=dropped.key, version_id=file.version_id, size=size, format="csv"
            )
            entries = (
                read_manifest(self.s3, probe)
                if kind == "manifest"
                else success_folder_entries(self.s3, dropped.bucket, dropped.key)
            )
            fmt = detect_format(entries[0].key)
            if fmt is None:
                raise Refusal(
                    "MANIFEST_INVALID",
                    f"part {entries[0].key} has no supported extension; unload with one (Redshift: EXTENSION 'csv')",
                )
        except Refusal as refusal:
            return self._refuse(file, refusal, tag=refusal.code != "OBJECT_GONE")
        except PartsError as exc:
            return self._refuse(file, Refusal(exc.code, exc.message), tag=True)
        except (ClientError, BotoCoreError) as exc:
            return self._aws_failure(file, exc, "read the manifest")
        source = _source_of(file, size, fmt, received)
        object_name = options.object_name or folder
        name = execution_name(dropped.bucket, dropped.key, file.version_id, file.etag)
        file.summary.set(
            object_name=object_name, format=fmt.format, execution_name=name, manifest_entries=len(entries)
        )
        try:
            if self._execution_exists(self._execution_arn(name)):
                return IntakeOutcome("duplicate", file.summary.wire())
        except (ClientError, BotoCoreError) as exc:
            return self._aws_failure(file, exc, "check for a previous hand-off")
        return self._hand_off_split(
            file,
            source=source,
            options=options,
            object_name=object_name,
            received=received,
            name=name,
            manifest=kind,
        )

    # Split files ------------------------------------------------------------------------------

    def _hand_off_split(
        self,
        file: _File,
        *,
        source: SourceObject,
        options: FileOptions,
        object_name: str,
        received: datetime,
        name: str,
        manifest: Literal["manifest", "_SUCCESS"] | None = None,
    ) -> IntakeOutcome:
        """A file over the part size (or an export's manifest): the state machine plans, uploads and
        imports its parts. The file holds its object's turn in the queue until the flow ends."""
        try:
            turn = self._register_turn(source, object_name, options, name)
        except (ClientError, BotoCoreError, QueueUnavailableError) as exc:
            return self._queue_failure(file, exc)
        run = SplitRun(
            object_name=object_name,
            source=source,
            options=options,
            poll=self.settings.poll(),
            intake=IntakeRecord(received_at=received, execution_arn=self._execution_arn(name)),
            part_max_bytes=self.settings.part_size,
            workers=self.settings.part_workers,
            execution_name=name,
            manifest=manifest,
            turn=turn,
        )
        try:
            started = self.sfn.start_execution(
                stateMachineArn=self.settings.state_machine_arn,
                name=name,
                input=json.dumps({"split": run.wire()}, separators=(",", ":")),
            )
        except self.sfn.exceptions.ExecutionAlreadyExists:
            logger.info("a concurrent delivery of this event already started %s; duplicate ignored", name)
            return IntakeOutcome("duplicate", file.summary.wire())
        except ClientError as exc:
            return self._aws_failure(file, exc, "start the import state machine")
        file.summary.set(
            outcome="splitting",
            message=(
                f"The {manifest} names the parts of one export: they load as one, in as few jobs as fit "
                f"under the part size of {self.settings.part_size} bytes. This summary is replaced by one "
                "listing the jobs when they are done."
                if manifest
                else f"The file has {source.size} bytes, over the part size of {self.settings.part_size} "
                "bytes: it is being cut into row-aligned parts, each uploaded and imported as its own job. "
                "This summary is replaced by one listing the parts when they are done."
            ),
            options=options,
            split=Split(kind="manifest" if manifest else "split", part_max_bytes=self.settings.part_size),
            execution_arn=started["executionArn"],
        )
        self._report(file, tag=True)
        logger.info("file over the part size: split import handed off", extra={"execution_name": name})
        return IntakeOutcome("splitting", file.summary.wire())

    # Checks -----------------------------------------------------------------------------------

    @staticmethod
    def _format(file_name: str) -> FileFormat:
        fmt = detect_format(file_name)
        if fmt is None:
            raise Refusal(
                "UNSUPPORTED_FORMAT",
                f"{file_name!r} has an unsupported extension; use one of {', '.join(supported_extensions())}",
            )
        return fmt

    def _head(self, bucket: str, key: str, version_id: str | None) -> dict[str, Any]:
        try:
            if version_id:
                return dict(self.s3.head_object(Bucket=bucket, Key=key, VersionId=version_id))
            return dict(self.s3.head_object(Bucket=bucket, Key=key))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                raise Refusal(
                    "OBJECT_GONE", "the object (version) no longer exists; nothing to import"
                ) from None
            raise

    def _check_size(self, size: int, fmt: FileFormat) -> bool:
        """Whether the file is split into parts; refuses what cannot be imported at its size."""
        if size == 0:
            raise Refusal("EMPTY_OBJECT", "the object is empty (0 bytes)")
        if size > IMPORT_MAX_FILE_BYTES:
            raise Refusal(
                "TOO_LARGE",
                f"the object has {size} bytes, over the API's maximum file size of {IMPORT_MAX_FILE_BYTES} "
                "bytes; split it into smaller files",
            )
        part_max = self.settings.part_size
        if size <= part_max:
            return False
        if fmt.compression == "gzip":
            raise Refusal("GZIP_TOO_LARGE", gzip_refusal(size, part_max))
        return True

    def _check_header(self, source: SourceObject) -> None:
        """Refuse a header that names a column twice before any job exists (one small ranged GET).

        Other header problems are left to the mapping step, which reports them as before.
        """
        if source.format not in ("csv", "parquet"):
            return
        try:
            read_columns(self.s3, source)
        except DuplicateColumnsError as exc:
            raise Refusal(exc.code, str(exc).removeprefix(f"{exc.code}: ")) from None
        except HeaderError:
            return

    # Init + upload ----------------------------------------------------------------------------

    def _init_and_upload(
        self, file: _File, request: ImportJobInit, fmt: FileFormat
    ) -> tuple[UploadSlot, UploadResult]:
        dropped = file.dropped
        source = S3Source(
            self.s3,
            dropped.bucket,
            dropped.key,
            file.version_id,
            file.etag,
            chunk_bytes=self.settings.chunk_bytes,
            read_ahead_bytes=self.settings.read_ahead_bytes,
        )
        fresh_slots = 0
        last_error: ExperitureError | None = None
        for generation in range(1, _MAX_GENERATIONS + 1):
            key = idempotency_key(dropped.bucket, dropped.key, file.version_id, file.etag, generation)
            slot = self.client.init_import(request, idempotency_key=key)
            if slot.correlation_id and slot.correlation_id not in file.correlation_ids:
                file.correlation_ids.append(slot.correlation_id)
            self._annotate(job_id=slot.job_id, correlation_id=slot.correlation_id)
            if (
                slot.expires_at is not None
                and (slot.expires_at - self._clock()).total_seconds() < _SLOT_MARGIN_SECONDS
            ):
                # A replay (Lambda retry, late duplicate) of a job whose slot has already expired.
                logger.warning("job %s: its upload slot has expired; initializing a fresh job", slot.job_id)
                file.abandoned.append(slot.job_id)
                continue
            fresh_slots += 1
            try:
                result = self.client.upload(
                    slot,
                    source.open,
                    request.file_size,
                    content_type=fmt.content_type,
                    chunk_bytes=self.settings.chunk_bytes,
                )
                return slot, result
            except UploadSlotExpiredError as exc:
                last_error = exc
                logger.warning("job %s: upload slot expired (%s); initializing a fresh job", slot.job_id, exc)
            except UploadRefusedError:
                if self._delivered_by_twin(slot.job_id):
                    return slot, UploadResult(0, request.file_size, 0, 0.0)
                # A signature or access refusal: a fresh job would be refused alike (and left pending).
                file.refused_job_id = slot.job_id
                raise
            except ExperitureError as exc:
                if not exc.retryable and self._delivered_by_twin(slot.job_id):
                    # The slot is closed because a concurrent delivery uploaded and started this job.
                    return slot, UploadResult(0, request.file_size, 0, 0.0)
                if not exc.retryable and not isinstance(exc, UploadError):
                    raise
                last_error = exc
                logger.warning(
                    "job %s: upload keeps failing (%s); initializing a fresh job", slot.job_id, exc
                )
            file.abandoned.append(slot.job_id)
            if fresh_slots >= self.settings.max_jobs_per_file:
                break
        raise UploadError(
            f"the upload failed for {len(file.abandoned)} job(s) in a row; last error: "
            f"{last_error or 'every upload slot had expired'}",
            status=last_error.status if last_error else None,
        )

    def _delivered_by_twin(self, job_id: str) -> bool:
        try:
            return self.client.get_import(job_id).state not in ("pending", "ready")
        except ExperitureError:
            return False

    # Versions of one key -----------------------------------------------------------------------

    def _newer_version(self, file: _File) -> str | None:
        """The id of a newer version already queued or imported for the key, or None (this one is newest)."""
        dropped = file.dropped
        if self.versions is None or not dropped.sequencer:
            return None  # no table (a bare local run) or no sequencer (a hand-made event): no order known
        version = file.version_id or file.etag or dropped.sequencer
        return self.versions.claim_version(dropped.bucket, dropped.key, dropped.sequencer, version)

    def _older_version_key(self, file: _File) -> str | None:
        """The version-suffixed summary key if a newer version of the key is known, else None."""
        dropped = file.dropped
        if self.versions is None or not dropped.sequencer:
            return None
        try:
            newest = self.versions.newest_version(dropped.bucket, dropped.key)
        except (ClientError, BotoCoreError, QueueUnavailableError):
            return None  # the summary is what matters: write it where it would usually go
        if newest is None or newest[0] <= padded_sequencer(dropped.sequencer):
            return None
        return version_result_key(dropped.key, file.version_id or file.etag or dropped.sequencer)

    def _register(self, run: ImportRun, name: str) -> None:
        """The file takes its place in the queue (and its object's turn) before its execution starts:
        a file of the same object dropped later cannot start first because its execution was faster."""
        if self.versions is None:
            return
        self.versions.add(
            self._queue_entry(
                run.job_id, run.source, run.object_name, run.options, status="registered", name=name
            )
        )

    def _register_turn(
        self, source: SourceObject, object_name: str, options: FileOptions, name: str
    ) -> str | None:
        """A split file (or an export's load) holds its object's turn from hand-off until its flow
        ends, so a file dropped later cannot start between two of its parts; its id, or None (no
        queue table: a bare local run)."""
        if self.versions is None:
            return None
        turn = turn_id(name)
        # False: a concurrent delivery wrote it; start_execution tells which won
        self.versions.add(self._queue_entry(turn, source, object_name, options, status="holding", name=name))
        return turn

    def _queue_failure(self, file: _File, exc: Exception) -> IntakeOutcome:
        """The queue table could not be written: a transient failure, the event is retried."""
        cause = exc.__cause__ if isinstance(exc, QueueUnavailableError) else exc
        assert isinstance(cause, ClientError | BotoCoreError)
        return self._aws_failure(file, cause, "put the file in the import queue")

    def _queue_entry(
        self,
        job_id: str,
        source: SourceObject,
        object_name: str,
        options: FileOptions,
        *,
        status: Literal["registered", "holding"],
        name: str,
    ) -> QueueEntry:
        """The file's queue entry, ordered by its S3 event (time, sequencer) in its object's group."""
        return QueueEntry(
            job_id=job_id,
            object_name=object_name,
            group=group_of(object_name, source.bucket, source.key, parallel=bool(options.parallel_jobs)),
            bucket=source.bucket,
            key=source.key,
            event_time=source.event_time or self._clock(),
            sequencer=source.sequencer,
            queued_at=self._clock(),
            status=status,
            execution_arn=self._execution_arn(name),
        )

    def _superseded(self, file: _File, newer: str) -> IntakeOutcome:
        dropped = file.dropped
        file.summary.set(
            outcome="superseded",
            superseded_by=newer,
            reason={
                "code": "SUPERSEDED",
                "message": (
                    f"a newer version ({newer}) of {dropped.key} is already queued or imported; this older "
                    "version is not imported (S3 delivered its event late)"
                ),
            },
        )
        logger.warning("older version of %s: superseded by %s, not imported", dropped.key, newer)
        version = file.version_id or file.etag or dropped.sequencer or "unknown"
        write_summary(
            self.s3, dropped.bucket, dropped.key, file.summary, key=version_result_key(dropped.key, version)
        )
        try:
            tag_source(self.s3, dropped.bucket, dropped.key, file.version_id, summary_tags(file.summary))
        except ClientError as exc:
            logger.warning("could not tag the source object: %s", exc.response.get("Error", {}).get("Code"))
        return IntakeOutcome("superseded", file.summary.wire())

    # Step Functions ---------------------------------------------------------------------------

    def _execution_arn(self, name: str) -> str:
        return f"{self.settings.state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{name}"

    def _execution_exists(self, execution_arn: str) -> bool:
        try:
            self.sfn.describe_execution(executionArn=execution_arn)
        except self.sfn.exceptions.ExecutionDoesNotExist:
            return False
        return True

    # Outcomes ---------------------------------------------------------------------------------

    def _refuse(self, file: _File, refusal: Refusal, *, tag: bool) -> IntakeOutcome:
        file.summary.set(outcome="refused", reason=Problem(code=refusal.code, message=refusal.message))
        logger.warning("file refused: %s", refusal)
        self._report(file, tag=tag and file.dropped.key.startswith(INCOMING_PREFIX))
        return IntakeOutcome("refused", file.summary.wire())

    def _api_failure(self, file: _File, exc: ExperitureError) -> IntakeOutcome:
        if exc.correlation_id and exc.correlation_id not in file.correlation_ids:
            file.correlation_ids.append(exc.correlation_id)
        # Auth problems and exhausted transient failures are worth retrying once fixed or recovered;
        # any other refusal by the API is about this file and would be refused again.
        retry = exc.retryable or isinstance(exc, AuthenticationError | ForbiddenError | UploadError)
        outcome = "failed" if retry else "rejected"
        file.summary.set(
            outcome=outcome,
            reason=exc.to_dict(),
            correlation_ids=file.correlation_ids,
            abandoned_job_ids=file.abandoned,
            will_retry=retry,
        )
        if file.refused_job_id:
            file.summary.set(job_id=file.refused_job_id)
        logger.error("file %s: %s", outcome, exc)
        self._report(file, tag=True)
        return IntakeOutcome(outcome, file.summary.wire(), retry=retry, abandoned_job_ids=file.abandoned)

    def _aws_failure(self, file: _File, exc: ClientError | BotoCoreError, step: str) -> IntakeOutcome:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
        else:  # no answer from AWS (endpoint, timeout, a broken stream): the class says what happened
            error = {"Code": type(exc).__name__, "Message": "no usable answer from AWS"}
        file.summary.set(
            outcome="failed",
            reason=Problem(code=error.get("Code"), message=f"could not {step}: {error.get('Message')}"),
            abandoned_job_ids=file.abandoned,
            will_retry=True,
        )
        logger.error("could not %s: %s", step, error.get("Code"))
        self._report(file, tag=False)
        return IntakeOutcome("failed", file.summary.wire(), retry=True, abandoned_job_ids=file.abandoned)

    def _already_loaded(self, file: _File) -> bool:
        """Whether ``results/<key>.json`` already says how this version's export load ended."""
        dropped = file.dropped
        try:
            stored = read_stored(self.s3, dropped.bucket, result_key(dropped.key))
        except (ClientError, BotoCoreError, ValueError):
            return False  # unknown: the refusal or failure is written as always
        return loaded_summary(stored, file.version_id, file.etag) is not None

    def _report(self, file: _File, *, tag: bool) -> None:
        """Write the summary and tag the source; a tagging failure must not hide the summary.

        ``results/<key>.json`` always describes the key's newest version: a summary of an older one
        (a newer version's event was handled meanwhile) goes beside it. A refusal or failure does
        not replace the summary of a held file whose export's load already ended for this version
        (a late event for a part since deleted, or one that failed on its way to the hold).
        """
        if file.summary.outcome in ("refused", "failed") and self._already_loaded(file):
            logger.warning("%s: not written over the summary of this version's load", file.summary.outcome)
            return
        write_summary(
            self.s3, file.dropped.bucket, file.dropped.key, file.summary, key=self._older_version_key(file)
        )
        if not tag:
            return
        try:
            tag_source(
                self.s3, file.dropped.bucket, file.dropped.key, file.version_id, summary_tags(file.summary)
            )
        except ClientError as exc:
            logger.warning("could not tag the source object: %s", exc.response.get("Error", {}).get("Code"))
