"""Cutting one big file into parts, each under the part size and each a valid file on its own.

- CSV and JSONL: one streaming pass finds record boundaries (:mod:`.records`); each part ends on
  one, and every CSV part after the first is sent with the header line in front.
- Parquet: whole row groups, read from the footer alone (no pass over the data); a part is ``PAR1``
  + the groups' bytes + a rewritten footer (:func:`~experiture_ingest.files.parquet_footer.part_footer`).
- Gzip: a compressed stream cannot be cut without decompressing all of it in one pass, so a gzip
  file larger than a part is refused (see docs/files.md).

A plan only describes byte ranges of the source (never bytes), so it is small, and each worker
streams its own part with ranged GETs (:mod:`.upload`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from experiture_ingest.files.handoff import SourceObject
from experiture_ingest.files.parquet_footer import (
    TRAILER_BYTES,
    FooterPiece,
    ParquetFooterError,
    RowGroup,
    footer_length,
    part_footer,
    row_groups,
)
from experiture_ingest.files.parts.errors import SplitRefusedError
from experiture_ingest.files.parts.records import RecordScanner

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SCAN_CHUNK_BYTES = 4 * 1024 * 1024
PARQUET_MAGIC_BYTES = 4
PARQUET_FOOTER_MAX_BYTES = 64 * 1024 * 1024


class _Doc(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


class _ObjectVersion(Protocol):
    """One exact object version: what a byte range of it needs."""

    @property
    def bucket(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def version_id(self) -> str | None: ...
    @property
    def etag(self) -> str | None: ...


class ByteRange(_Doc):
    """Bytes ``[start, end)`` of one exact object version."""

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    start: int = Field(ge=0)
    end: int = Field(gt=0)
    newline_after: bool = False  # a manifest entry whose last line has no newline: one is added
    header: bool = False  # the CSV header sent in front of a part's records (not rows)
    rows: int | None = None  # data rows in the range, when known at planning (Parquet)

    @property
    def size(self) -> int:
        return self.end - self.start + (1 if self.newline_after else 0)

    @classmethod
    def of(cls, obj: _ObjectVersion, start: int, end: int, *, newline_after: bool = False) -> ByteRange:
        """Bytes ``[start, end)`` of ``obj``'s exact version (a source file, a manifest's part file)."""
        return cls(
            bucket=obj.bucket,
            key=obj.key,
            version_id=obj.version_id,
            etag=obj.etag,
            start=start,
            end=end,
            newline_after=newline_after,
        )


class ParquetPiece(_Doc):
    """Consecutive row groups of one Parquet source, sent as one byte range of the part."""

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int = Field(gt=0, description="The source's size: its footer is read from the end")
    row_groups: list[int]


class Segment(_Doc):
    """Where a part's rows come from in one source file: for reporting rows by their own file."""

    key: str
    first_row_number: int | None = None  # in that file, numbered as the API numbers rows
    rows: int | None = None


class PartSpec(_Doc):
    """One part: the ranges to stream (in order), its exact size, and the rows it holds."""

    index: int = Field(ge=1)
    ranges: list[ByteRange]
    parquet: list[ParquetPiece] | None = None  # set: PAR1 + ranges + a footer built from these
    bytes: int = Field(gt=0)
    first_row_number: int | None = None  # in the original file (split) or the load (manifest)
    rows: int | None = None
    segments: list[Segment] = Field(default_factory=list)


class PartPlan(_Doc):
    """Every part of one file (or of one manifest's load)."""

    kind: Literal["split", "manifest"] = "split"
    source: SourceObject
    part_max_bytes: int
    total_bytes: int
    total_rows: int | None = None
    header_bytes: int | None = None
    parts: list[PartSpec]
    scan_seconds: float | None = None
    scan_mb_per_second: float | None = None


def get_object_args(obj: SourceObject | ByteRange) -> dict[str, Any]:
    """GetObject arguments for one exact object version (and its bytes, for a :class:`ByteRange`)."""
    kwargs: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key}
    if isinstance(obj, ByteRange):
        kwargs["Range"] = f"bytes={obj.start}-{obj.end - 1}"
    if obj.version_id:
        kwargs["VersionId"] = obj.version_id
    elif obj.etag:  # an unversioned bucket: refuse to read a replaced object
        kwargs["IfMatch"] = f'"{obj.etag.strip(chr(34))}"'
    return kwargs


def read_range(s3: S3Client, byte_range: ByteRange) -> bytes:
    """The bytes of a small range, read at once (headers, a last byte)."""
    body = s3.get_object(**get_object_args(byte_range))["Body"]
    try:
        return body.read()
    finally:
        body.close()


def stream_object(s3: S3Client, source: SourceObject, chunk_bytes: int = SCAN_CHUNK_BYTES) -> Iterator[bytes]:
    """The object version's bytes in bounded chunks (one GET)."""
    body = s3.get_object(**get_object_args(source))["Body"]
    try:
        yield from body.iter_chunks(chunk_bytes)
    finally:
        body.close()


def plan_split(
    s3: S3Client,
    source: SourceObject,
    part_max_bytes: int,
    *,
    chunk_bytes: int = SCAN_CHUNK_BYTES,
    time_budget: float | None = None,
) -> PartPlan:
    """The parts of ``source`` (larger than ``part_max_bytes``), or :class:`SplitRefusedError`.

    With ``time_budget`` (seconds), a scan that, at the rate measured so far, would not finish in
    time is refused early with a reason, instead of timing out without one.
    """
    if source.compression == "gzip":
        raise SplitRefusedError(gzip_refusal(source.size, part_max_bytes), code="GZIP_TOO_LARGE")
    if source.format == "parquet":
        return plan_parquet(s3, source, part_max_bytes)
    started = time.perf_counter()
    chunks = stream_object(s3, source, chunk_bytes)
    if time_budget is not None:
        chunks = _within(chunks, source.size, time_budget)
    plan = plan_text(chunks, source, part_max_bytes)
    seconds = time.perf_counter() - started
    plan.scan_seconds = round(seconds, 3)
    plan.scan_mb_per_second = round(source.size / 1e6 / seconds, 1) if seconds > 0 else None
    return plan


def _within(chunks: Iterator[bytes], size: int, budget: float) -> Iterator[bytes]:
    """``chunks``, refused as soon as the rate so far says the pass would not end within ``budget``."""
    started = time.monotonic()
    done = 0
    for chunk in chunks:
        done += len(chunk)
        elapsed = time.monotonic() - started
        if elapsed > 5 and done < size and elapsed * size / done > budget:
            rate = done / 1e6 / elapsed
            raise SplitRefusedError(
                f"finding the record boundaries of this {size}-byte file runs at {rate:.0f} MB/s here and "
                f"would take {size / 1e6 / rate:.0f} s, more than the {budget:.0f} s a function may run; "
                "split the file before dropping it, or send it as Parquet (split from its footer alone)",
                code="SPLIT_TOO_SLOW",
            )
        yield chunk


def gzip_refusal(size: int, part_max_bytes: int) -> str:
    return (
        f"the gzip file has {size} bytes, over the part size of {part_max_bytes} bytes; a compressed "
        "stream cannot be cut into parts without decompressing all of it in one pass, which does not "
        "fit a function's 15 minutes at this size. Split the data before compressing it (each .gz "
        f"under {part_max_bytes} bytes), or send it uncompressed or as Parquet, which are split for you"
    )


def plan_text(chunks: Iterator[bytes], source: SourceObject, part_max_bytes: int) -> PartPlan:
    """CSV or JSONL parts from one pass over ``chunks`` (the whole object, in order)."""
    fmt: Literal["csv", "jsonl"] = "csv" if source.format == "csv" else "jsonl"
    scan = RecordScanner(fmt)
    cuts: list[tuple[int, int]] = [(0, 0)]  # (boundary offset, records before it)
    header = 0
    limit = part_max_bytes
    for chunk in chunks:
        pos = 0
        while scan.offset + len(chunk) - pos > limit:
            take = limit - scan.offset
            start = cuts[-1][0]
            if take < 0:  # the record begun before the last cut is already longer than a part
                raise SplitRefusedError(
                    _record_too_large(fmt, scan.last_boundary, part_max_bytes, header),
                    code="RECORD_TOO_LARGE",
                )
            scan.feed(chunk[pos : pos + take])
            pos += take
            if scan.last_boundary <= start:
                raise SplitRefusedError(
                    _record_too_large(fmt, start, part_max_bytes, header), code="RECORD_TOO_LARGE"
                )
            cuts.append((scan.last_boundary, scan.records_at_last_boundary))
            if fmt == "csv":
                header = _header_bytes(scan, part_max_bytes)
            limit = scan.last_boundary + part_max_bytes - header
        scan.feed(chunk[pos:])
    scan.finish()
    if scan.offset != source.size:
        raise SplitRefusedError(
            f"read {scan.offset} bytes where the object has {source.size}; it changed while being read",
            code="OBJECT_CHANGED",
        )
    if fmt == "csv":
        header = _header_bytes(scan, part_max_bytes)
    cuts.append((source.size, scan.records))
    parts: list[PartSpec] = []
    header_rows = 1 if fmt == "csv" else 0
    for (start, before), (end, after) in pairwise(cuts):
        first_row = max(before - header_rows, 0) + 1
        rows = after - before - (header_rows if start == 0 else 0)
        if rows <= 0 and parts:
            continue  # only blank lines after the last cut
        ranges = [ByteRange.of(source, start, end)]
        if fmt == "csv" and start > 0:
            ranges.insert(0, ByteRange.of(source, 0, header).model_copy(update={"header": True}))
        parts.append(
            PartSpec(
                index=len(parts) + 1,
                ranges=ranges,
                bytes=sum(r.size for r in ranges),
                first_row_number=first_row,
                rows=rows,
                segments=[],
            )
        )
    return PartPlan(
        source=source,
        part_max_bytes=part_max_bytes,
        total_bytes=source.size,
        total_rows=scan.records - header_rows,
        header_bytes=header if fmt == "csv" else None,
        parts=parts,
    )


def _header_bytes(scan: RecordScanner, part_max_bytes: int) -> int:
    header = scan.first_boundary or 0
    if not header:
        raise SplitRefusedError("the CSV file has no complete header row", code="NO_HEADER")
    if header * 2 > part_max_bytes:
        raise SplitRefusedError(
            f"the CSV header is {header} bytes, too long to repeat in parts of {part_max_bytes} bytes",
            code="RECORD_TOO_LARGE",
        )
    return header


def _record_too_large(fmt: str, start: int, part_max_bytes: int, header: int) -> str:
    unit = "record" if fmt == "csv" else "line"
    return (
        f"a single {unit} starting at byte {start} is longer than a part ({part_max_bytes} bytes"
        + (f", less the {header}-byte header" if header else "")
        + f"), so the file cannot be cut between {unit}s; raise INTAKE_PART_MAX_BYTES or shorten the {unit}"
        + (" (an unbalanced quote makes the rest of a CSV file one record)" if fmt == "csv" else "")
    )


# Parquet -------------------------------------------------------------------------------------------


def read_footer(s3: S3Client, bucket: str, key: str, version_id: str | None, size: int) -> bytes:
    """The serialized ``FileMetaData`` of a Parquet object (bounded ranged GETs from its end)."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    tail = _read(s3, kwargs, f"bytes=-{min(size, 64 * 1024)}")
    length = footer_length(tail[-TRAILER_BYTES:])
    if length > PARQUET_FOOTER_MAX_BYTES or length + TRAILER_BYTES + PARQUET_MAGIC_BYTES > size:
        raise ParquetFooterError(f"the footer length {length} does not fit the file")
    if length + TRAILER_BYTES > len(tail):
        tail = _read(s3, kwargs, f"bytes=-{length + TRAILER_BYTES}")
    return tail[-TRAILER_BYTES - length : -TRAILER_BYTES]


def _read(s3: S3Client, kwargs: dict[str, Any], byte_range: str) -> bytes:
    body = s3.get_object(**kwargs, Range=byte_range)["Body"]
    try:
        return body.read()
    finally:
        body.close()


def parquet_groups(metadata: bytes, size: int) -> list[RowGroup]:
    """The row groups, checked to lie inside the file between the magic and the footer."""
    groups = row_groups(metadata)
    data_end = size - TRAILER_BYTES - len(metadata)
    for group in groups:
        if group.start < PARQUET_MAGIC_BYTES or group.end > data_end or group.end <= group.start:
            raise ParquetFooterError(f"row group {group.index} lies outside the file's data")
    return groups


def parquet_part_bytes(data_bytes: int, footer_bound: int) -> int:
    return PARQUET_MAGIC_BYTES + data_bytes + footer_bound + TRAILER_BYTES


def plan_parquet(s3: S3Client, source: SourceObject, part_max_bytes: int) -> PartPlan:
    """Parts of whole consecutive row groups, each with a footer bounded by the source's own."""
    try:
        metadata = read_footer(s3, source.bucket, source.key, source.version_id, source.size)
        groups = parquet_groups(metadata, source.size)
    except ParquetFooterError as exc:
        raise SplitRefusedError(f"cannot split the Parquet file: {exc}", code="PARQUET_UNREADABLE") from None
    runs: list[list[RowGroup]] = []
    bound = len(metadata)  # a part's footer never exceeds the source's (it has fewer groups)
    for group in groups:
        if parquet_part_bytes(group.size, bound) > part_max_bytes:
            raise SplitRefusedError(
                f"row group {group.index} holds {group.size} bytes ({group.rows} rows), more than a part "
                f"of {part_max_bytes} bytes with its footer; a part is made of whole row groups, so write "
                "the file with smaller row groups (pyarrow row_group_size, Spark parquet.block.size) or "
                "raise INTAKE_PART_MAX_BYTES",
                code="ROW_GROUP_TOO_LARGE",
            )
        run = runs[-1] if runs else None
        if run is not None and parquet_part_bytes(group.end - run[0].start, bound) <= part_max_bytes:
            run.append(group)
        else:
            runs.append([group])
    parts: list[PartSpec] = []
    first_row = 1
    for run in runs:
        piece = ParquetPiece(
            bucket=source.bucket,
            key=source.key,
            version_id=source.version_id,
            etag=source.etag,
            size=source.size,
            row_groups=[g.index for g in run],
        )
        ranges = [ByteRange.of(source, run[0].start, run[-1].end)]
        rows = sum(g.rows for g in run)
        size = PARQUET_MAGIC_BYTES + ranges[0].size + len(part_footer_bytes([(metadata, piece)]))
        parts.append(
            PartSpec(
                index=len(parts) + 1,
                ranges=ranges,
                parquet=[piece],
                bytes=size,
                first_row_number=first_row,
                rows=rows,
            )
        )
        first_row += rows
    return PartPlan(
        source=source,
        part_max_bytes=part_max_bytes,
        total_bytes=source.size,
        total_rows=sum(g.rows for g in groups),
        parts=parts,
    )


def part_footer_bytes(pieces: list[tuple[bytes, ParquetPiece]]) -> bytes:
    """The footer (with trailer) of a part made of ``pieces`` (each: its source's metadata, its groups),
    the groups' bytes following ``PAR1`` in order. The planner sizes it; the worker writes it."""
    new_start = PARQUET_MAGIC_BYTES
    footer_pieces = []
    for metadata, piece in pieces:
        groups = row_groups(metadata)
        run = [groups[i] for i in piece.row_groups]
        footer_pieces.append(FooterPiece(metadata, tuple(piece.row_groups), new_start))
        new_start += run[-1].end - run[0].start
    return part_footer(footer_pieces)
