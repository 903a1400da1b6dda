"""A worker's share of a split file: one part, streamed with ranged GETs to its own upload slot.

Memory stays at one read-ahead window whatever the part's size (:class:`~experiture_ingest.files.
streaming.ReadAhead` per range). Each attempt re-opens every range, so a failed upload restarts the
part at byte 0. A part's job is created with an Idempotency-Key derived from the object version,
the plan (part size) and the part's index: a retried worker, or a re-run of the same plan, replays
the same job instead of opening another.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from experiture_ingest.client import (
    ExperitureClient,
    ExperitureError,
    ImportJobInit,
    UploadError,
    UploadResult,
    UploadSlot,
    UploadSlotExpiredError,
)
from experiture_ingest.client.idempotency import derived_key
from experiture_ingest.files.formats import FileFormat
from experiture_ingest.files.handoff import SourceObject
from experiture_ingest.files.parquet_footer import MAGIC
from experiture_ingest.files.parts.errors import PartsError, PartSourceChangedError
from experiture_ingest.files.parts.plan import (
    PARQUET_MAGIC_BYTES,
    PartSpec,
    get_object_args,
    part_footer_bytes,
    read_footer,
)
from experiture_ingest.files.parts.records import RecordScanner
from experiture_ingest.files.streaming import DEFAULT_CHUNK_BYTES, DEFAULT_READ_AHEAD_BYTES, ReadAhead

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)


@dataclass
class PartBody:
    """The bytes of one part: ``PAR1`` (Parquet), each range in order, then the footer (Parquet)."""

    s3: S3Client
    spec: PartSpec
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES
    footer: bytes | None = None
    count: Literal["csv", "jsonl"] | None = None  # count each range's records while streaming
    range_rows: list[int | None] = field(default_factory=list)  # per range that is not a header

    @classmethod
    def prepare(cls, s3: S3Client, spec: PartSpec, **kwargs: Any) -> PartBody:
        """The body, its Parquet footer built and checked against the planned size."""
        footer = None
        if spec.parquet:
            pieces = [(read_footer(s3, p.bucket, p.key, p.version_id, p.size), p) for p in spec.parquet]
            footer = part_footer_bytes(pieces)
        size = sum(r.size for r in spec.ranges) + (PARQUET_MAGIC_BYTES + len(footer) if footer else 0)
        if size != spec.bytes:
            raise PartSourceChangedError(
                f"part {spec.index} would be {size} bytes where {spec.bytes} were planned; the source changed"
            )
        return cls(s3, spec, footer=footer, **kwargs)

    def open(self) -> Iterator[bytes]:
        """A fresh chunk iterator (pass ``body.open`` to ``client.upload``); closing it stops the reads."""
        if self.footer is not None:
            yield MAGIC
        self.range_rows = []
        for byte_range in self.spec.ranges:
            body = self.s3.get_object(**get_object_args(byte_range))["Body"]
            reader = ReadAhead(
                body, chunk_bytes=self.chunk_bytes, max_chunks=self.read_ahead_bytes // self.chunk_bytes
            )
            scan = RecordScanner(self.count) if self.count and not byte_range.header else None
            seen = 0
            try:
                for chunk in reader:
                    if scan is not None:
                        scan.feed(chunk)
                    seen += len(chunk)
                    if seen == byte_range.end - byte_range.start and not byte_range.header:
                        # Counted before the last chunk goes out: the upload stops reading once it has
                        # the part's bytes, so code after the final yield may never run.
                        self.range_rows.append(_finished(scan) if scan is not None else byte_range.rows)
                    yield chunk
            finally:
                reader.close()
            if byte_range.newline_after:
                yield b"\n"
        if self.footer is not None:
            yield self.footer


def _finished(scan: RecordScanner) -> int | None:
    try:
        scan.finish()
    except PartsError:
        return None
    return scan.records


@dataclass
class PartUpload:
    """What one worker did: the part's job and its upload (what the summary lists)."""

    index: int
    job_id: str
    bytes: int
    upload_seconds: float
    upload_attempts: int
    correlation_ids: list[str] = field(default_factory=list)
    abandoned_job_ids: list[str] = field(default_factory=list)
    range_rows: list[int | None] = field(default_factory=list)

    def wire(self) -> dict[str, Any]:
        return {
            "rangeRows": self.range_rows,
            "index": self.index,
            "jobId": self.job_id,
            "bytes": self.bytes,
            "uploadSeconds": round(self.upload_seconds, 3),
            "uploadAttempts": self.upload_attempts,
            "correlationIds": self.correlation_ids,
            "abandonedJobIds": self.abandoned_job_ids,
        }


def part_identity(source: SourceObject, part_max_bytes: int, index: int) -> bytes:
    """What a part's jobs and executions are derived from: object version, plan, index."""
    version = f"v:{source.version_id}" if source.version_id else f"e:{(source.etag or '').strip(chr(34))}"
    return "\0".join((source.bucket, source.key, version, f"part:{part_max_bytes}:{index}")).encode()


def part_file_name(file_name: str, fmt: FileFormat, index: int, count: int) -> str:
    """``spring.part-0002-of-0013.csv``: the name the API sees (the extension says the format).

    >>> from experiture_ingest.files.formats import detect_format
    >>> part_file_name("spring.csv", detect_format("spring.csv"), 2, 13)
    'spring.part-0002-of-0013.csv'
    """
    stem = (
        file_name[: len(file_name) - len(fmt.extension)]
        if file_name.lower().endswith(fmt.extension)
        else file_name
    )
    return f"{stem}.part-{index:04d}-of-{count:04d}{fmt.extension}"


def upload_part(
    client: ExperitureClient,
    body: PartBody,
    request: ImportJobInit,
    identity: bytes,
    content_type: str,
    *,
    max_jobs: int = 3,
) -> PartUpload:
    """Init the part's job and stream the part to its slot; an expired or failing slot gets a fresh job."""
    spec = body.spec
    abandoned: list[str] = []
    correlation_ids: list[str] = []
    last: ExperitureError | None = None
    for generation in range(1, max_jobs + 1):
        slot: UploadSlot = client.init_import(request, idempotency_key=derived_key(identity, str(generation)))
        if slot.correlation_id:
            correlation_ids.append(slot.correlation_id)
        try:
            result: UploadResult = client.upload(
                slot, body.open, spec.bytes, content_type=content_type, chunk_bytes=body.chunk_bytes
            )
        except UploadSlotExpiredError as exc:
            last = exc
        except UploadError as exc:
            if not exc.retryable and not _delivered(client, slot.job_id):
                raise
            if _delivered(client, slot.job_id):  # a twin worker (retried Lambda) already uploaded it
                return PartUpload(spec.index, slot.job_id, spec.bytes, 0.0, 0, correlation_ids, abandoned)
            last = exc
        else:
            return PartUpload(
                spec.index,
                slot.job_id,
                result.bytes_sent,
                result.seconds,
                result.attempts,
                correlation_ids,
                abandoned,
                list(body.range_rows),
            )
        logger.warning(
            "part %d: job %s abandoned (%s); initializing a fresh job", spec.index, slot.job_id, last
        )
        abandoned.append(slot.job_id)
    raise UploadError(
        f"the upload of part {spec.index} failed for {len(abandoned)} job(s) in a row; last error: {last}",
        status=last.status if last else None,
    )


def _delivered(client: ExperitureClient, job_id: str) -> bool:
    try:
        return client.get_import(job_id).state not in ("pending", "ready")
    except ExperitureError:
        return False
