"""Warehouse exports loaded as one: a Redshift UNLOAD manifest, or a folder closed by ``_SUCCESS``.

With ``"waitFor": "manifest"`` (or ``"_SUCCESS"``) in ``config/<object>.json``, data files dropped
in the folder are held; the manifest (or marker) then loads all its parts in as few jobs as fit
under the part size, in manifest (or key) order:

- CSV: one header per job (every part's header must match the first), then each part's records;
- JSONL: the parts' lines, one after the other;
- gzip JSONL: whole parts as gzip members of one job (a gzip part is never cut); gzip CSV: one job
  per part, since each part's compressed header would otherwise reach the API as a row;
- Parquet: whole row groups of several parts in one job behind one merged footer (the parts must
  share one schema).

A part larger than a job is cut on record boundaries (row groups for Parquet) as a split file is.
No part ever imports on its own: a missing mandatory part fails the whole load, naming its keys.

>>> parse_manifest(b'{"entries": [{"url": "s3://b/k/0000_part_00.csv", "mandatory": true}]}')
[ManifestEntry(bucket='b', key='k/0000_part_00.csv', mandatory=True, size=None)]
>>> is_manifest_key("incoming/orders/unload/manifest"), is_manifest_key("x/run.manifest.json")
(True, True)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from experiture_ingest.files.formats import FileFormat, detect_format
from experiture_ingest.files.handoff import SourceObject
from experiture_ingest.files.header import HeaderError, columns_from_text
from experiture_ingest.files.layout import INCOMING_PREFIX
from experiture_ingest.files.parquet_footer import ParquetFooterError, RowGroup, schema_bytes
from experiture_ingest.files.parts.errors import ManifestError, PartsError
from experiture_ingest.files.parts.plan import (
    PARQUET_MAGIC_BYTES,
    ByteRange,
    ParquetPiece,
    PartPlan,
    PartSpec,
    Segment,
    parquet_groups,
    parquet_part_bytes,
    part_footer_bytes,
    plan_text,
    read_footer,
    read_range,
    stream_object,
)
from experiture_ingest.files.parts.records import RecordScanner

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MANIFEST_MAX_BYTES = 16 * 1024 * 1024
SUCCESS_MARKER = "_SUCCESS"
HEADER_SCAN_BYTES = 1024 * 1024
# A job's description travels as one Map item (Step Functions: 256 KiB); ~250 bytes a range.
MAX_RANGES_PER_JOB = 800


def is_manifest_key(key: str) -> bool:
    """A Redshift UNLOAD manifest's key: ends in ``manifest`` or ``.manifest.json``."""
    low = key.lower()
    return low.endswith("manifest") or low.endswith(".manifest.json")


def is_success_marker(key: str) -> bool:
    return key.rsplit("/", 1)[-1] == SUCCESS_MARKER


@dataclass(frozen=True)
class ManifestEntry:
    """One part a manifest names (or a data file found next to ``_SUCCESS``)."""

    bucket: str
    key: str
    mandatory: bool = True
    size: int | None = None


@dataclass(frozen=True)
class PartFile:
    """A manifest entry as it exists now: its exact version and size."""

    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    size: int

    def range(self, start: int, end: int, *, newline_after: bool = False) -> ByteRange:
        return ByteRange.of(self, start, end, newline_after=newline_after)

    def source(self, fmt: FileFormat) -> SourceObject:
        return SourceObject(
            bucket=self.bucket,
            key=self.key,
            version_id=self.version_id,
            etag=self.etag,
            size=self.size,
            format=fmt.format,
            compression=fmt.compression,
        )


def parse_manifest(raw: bytes) -> list[ManifestEntry]:
    """The entries of a Redshift UNLOAD manifest: ``{"entries": [{"url", "mandatory", "meta"}]}``."""
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise ManifestError(f"the manifest is not valid JSON: {exc}") from None
    entries = document.get("entries") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ManifestError('the manifest has no "entries" list (Redshift UNLOAD format)')
    out = []
    for number, entry in enumerate(entries, start=1):
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str) or not url.startswith("s3://") or "/" not in url[5:]:
            raise ManifestError(f'entry {number} has no "url" of the form s3://bucket/key')
        bucket, _, key = url[5:].partition("/")
        meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
        length = meta.get("content_length")
        out.append(
            ManifestEntry(
                bucket, key, bool(entry.get("mandatory", False)), length if isinstance(length, int) else None
            )
        )
    return out


def read_manifest(s3: S3Client, source: SourceObject) -> list[ManifestEntry]:
    kwargs: dict[str, Any] = {"Bucket": source.bucket, "Key": source.key}
    if source.version_id:
        kwargs["VersionId"] = source.version_id
    body = s3.get_object(**kwargs)["Body"]
    try:
        raw = body.read(MANIFEST_MAX_BYTES + 1)
    finally:
        body.close()
    if len(raw) > MANIFEST_MAX_BYTES:
        raise ManifestError(f"the manifest is larger than {MANIFEST_MAX_BYTES} bytes")
    return parse_manifest(raw)


def success_folder_entries(s3: S3Client, bucket: str, marker_key: str) -> list[ManifestEntry]:
    """The data files under the marker's folder (subfolders too), in key order; ``_``/``.`` names skipped."""
    prefix = marker_key.rsplit("/", 1)[0] + "/"
    entries = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            name = item["Key"].rsplit("/", 1)[-1]
            if name.startswith(("_", ".")) or item["Key"].endswith("/") or item["Size"] == 0:
                continue
            entries.append(ManifestEntry(bucket, item["Key"], True, item["Size"]))
    if not entries:
        raise ManifestError(f"no data files next to {marker_key}", code="MANIFEST_PART_MISSING")
    return sorted(entries, key=lambda e: e.key)


def resolve_entries(
    s3: S3Client, bucket: str, entries: list[ManifestEntry]
) -> tuple[list[PartFile], list[str]]:
    """Each entry's current version and size (HEAD), and the optional entries that are missing.

    A missing mandatory entry fails the whole load, naming every missing key; an entry in another
    bucket is refused (the stack reads only its own bucket).
    """
    elsewhere = sorted({f"s3://{e.bucket}/{e.key}" for e in entries if e.bucket != bucket})
    if elsewhere:
        raise ManifestError(
            f"the manifest names parts outside the ingest bucket {bucket}: {', '.join(elsewhere[:10])}; "
            "unload into this bucket's incoming/ folder"
        )
    outside = [e.key for e in entries if not e.key.startswith(INCOMING_PREFIX)]
    if outside:
        raise ManifestError(
            f"the manifest names parts outside {INCOMING_PREFIX}: {', '.join(outside[:10])}; the stack reads "
            f"only {INCOMING_PREFIX}, so unload there"
        )
    present: list[PartFile] = []
    missing: list[str] = []
    skipped: list[str] = []
    for entry in entries:
        try:
            head = s3.head_object(Bucket=bucket, Key=entry.key)
        except s3.exceptions.ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                raise
            (missing if entry.mandatory else skipped).append(entry.key)
            continue
        present.append(
            PartFile(
                bucket,
                entry.key,
                head.get("VersionId"),
                str(head.get("ETag", "")).strip('"') or None,
                int(head["ContentLength"]),
            )
        )
    if missing:
        raise ManifestError(
            f"{len(missing)} mandatory part(s) missing, so nothing was imported: {', '.join(missing[:50])}"
            + (" …" if len(missing) > 50 else ""),
            code="MANIFEST_PART_MISSING",
        )
    if not present:
        raise ManifestError("none of the manifest's parts exist", code="MANIFEST_PART_MISSING")
    return present, skipped


def common_format(files: list[PartFile]) -> FileFormat:
    formats = {detect_format(f.key) for f in files}
    if None in formats:
        bad = next(f.key for f in files if detect_format(f.key) is None)
        raise ManifestError(
            f"part {bad} has no supported extension; unload with an extension (Redshift: EXTENSION 'csv')"
        )
    kinds = {(f.format, f.compression) for f in formats if f}
    if len(kinds) > 1:
        raise ManifestError(f"the parts mix formats ({sorted(str(k) for k in kinds)}); a load is one format")
    fmt = next(f for f in formats if f)
    if fmt.format == "parquet" and fmt.compression:
        raise ManifestError("compressed Parquet parts are not supported (Parquet compresses internally)")
    return fmt


# Planning ------------------------------------------------------------------------------------------


@dataclass
class _Piece:
    """A byte range (or Parquet row groups) of one part file, to be packed into a job."""

    file: PartFile
    ranges: list[ByteRange]
    size: int
    groups: list[RowGroup] | None = None
    metadata: bytes | None = None


def _csv_header(s3: S3Client, file: PartFile) -> tuple[int, list[str]]:
    """The header's length in bytes and its column names (every part must have the same)."""
    head = read_range(s3, file.range(0, min(HEADER_SCAN_BYTES, file.size)))
    scan = RecordScanner("csv")
    scan.feed(head)
    end = scan.first_boundary
    if end is None:
        raise ManifestError(
            f"part {file.key} has no complete header row in its first {HEADER_SCAN_BYTES} bytes"
        )
    try:
        names = [c.name for c in columns_from_text("csv", head[:end].decode("utf-8-sig"))]
    except (HeaderError, UnicodeDecodeError) as exc:
        raise ManifestError(f"part {file.key}: {exc}") from None
    return end, names


def _text_pieces(s3: S3Client, file: PartFile, fmt: FileFormat, budget: int, header: int) -> list[_Piece]:
    """A CSV/JSONL part's records as pieces of at most ``budget`` bytes (itself when it fits)."""
    newline = read_range(s3, file.range(file.size - 1, file.size)) == b"\n"
    body = file.size - header
    if body <= 0:
        return []
    if body + (0 if newline else 1) <= budget:
        return [
            _Piece(
                file, [file.range(header, file.size, newline_after=not newline)], body + (0 if newline else 1)
            )
        ]
    source = file.source(fmt)
    try:
        plan = plan_text(stream_object(s3, source), source, budget + header)
    except PartsError as exc:
        raise ManifestError(f"part {file.key}: {exc.message}", code=exc.code) from None
    pieces = []
    for spec in plan.parts:
        start, end = spec.ranges[-1].start, spec.ranges[-1].end
        start = max(start, header)
        last = end == file.size
        pieces.append(
            _Piece(
                file,
                [file.range(start, end, newline_after=last and not newline)],
                end - start + (1 if last and not newline else 0),
            )
        )
    return [p for p in pieces if p.size > 0]


def _parquet_pieces(s3: S3Client, file: PartFile, part_max: int) -> list[_Piece]:
    """A Parquet part's row groups, one piece each (they are packed into jobs afterwards)."""
    try:
        metadata = read_footer(s3, file.bucket, file.key, file.version_id, file.size)
        groups = parquet_groups(metadata, file.size)
    except ParquetFooterError as exc:
        raise ManifestError(f"part {file.key} is not readable Parquet: {exc}") from None
    pieces = []
    for group in groups:
        if parquet_part_bytes(group.size, len(metadata)) > part_max:
            raise ManifestError(
                f"row group {group.index} of {file.key} holds {group.size} bytes, more than a job of {part_max} "
                "bytes; write smaller row groups or raise INTAKE_PART_MAX_BYTES",
                code="ROW_GROUP_TOO_LARGE",
            )
        pieces.append(_Piece(file, [file.range(group.start, group.end)], group.size, [group], metadata))
    return pieces


def plan_manifest(
    s3: S3Client, manifest: SourceObject, files: list[PartFile], fmt: FileFormat, part_max: int
) -> PartPlan:
    """The load's jobs: the parts' pieces, in order, packed into as few jobs as fit under ``part_max``."""
    header = 0
    pieces: list[_Piece] = []
    if fmt.format == "parquet":
        schema = None
        for file in files:
            file_pieces = _parquet_pieces(s3, file, part_max)
            metadata = file_pieces[0].metadata if file_pieces else None
            if metadata is not None:
                if schema is None:
                    schema = schema_bytes(metadata)
                elif schema_bytes(metadata) != schema:
                    raise ManifestError(f"part {file.key} has another Parquet schema than the first part")
            pieces += file_pieces
        return _pack_parquet(manifest, pieces, part_max, sum(f.size for f in files))
    if fmt.compression == "gzip":
        for file in files:
            if file.size > part_max:
                raise ManifestError(
                    f"gzip part {file.key} has {file.size} bytes, over the part size of {part_max} bytes; "
                    "a gzip part cannot be cut: unload smaller parts (Redshift MAXFILESIZE)",
                    code="GZIP_TOO_LARGE",
                )
            pieces.append(_Piece(file, [file.range(0, file.size)], file.size))
        alone = fmt.format == "csv"  # each gzip CSV part carries its own header
        return _pack(manifest, pieces, part_max, 0, sum(f.size for f in files), alone=alone)
    first_header: list[str] | None = None
    header_range: ByteRange | None = None
    for file in files:
        file_header = 0
        if fmt.format == "csv":
            file_header, names = _csv_header(s3, file)
            if first_header is None:
                first_header, header = names, file_header
                header_range = file.range(0, file_header).model_copy(update={"header": True})
            elif names != first_header:
                raise ManifestError(
                    f"part {file.key} has the header {names}, not {first_header} like the first part; "
                    "every part of a load must have the same columns",
                    code="HEADER_MISMATCH",
                )
        pieces += _text_pieces(s3, file, fmt, part_max - header, file_header)
    return _pack(
        manifest,
        pieces,
        part_max,
        header,
        sum(f.size for f in files),
        header_range=header_range,
        cut=lambda piece, room: _cut(s3, piece, room, fmt),
    )


def _segments(pieces: list[_Piece]) -> list[Segment]:
    out: list[Segment] = []
    for piece in pieces:
        if not out or out[-1].key != piece.file.key:
            out.append(Segment(key=piece.file.key))
    return out


def _cut(s3: S3Client, piece: _Piece, room: int, fmt: FileFormat) -> tuple[_Piece, _Piece] | None:
    """``piece`` cut at its last record boundary within ``room`` bytes (it starts on a boundary), or None."""
    (whole,) = piece.ranges
    kwargs: dict[str, Any] = {
        "Bucket": whole.bucket,
        "Key": whole.key,
        "Range": f"bytes={whole.start}-{min(whole.start + room, whole.end) - 1}",
    }
    if whole.version_id:
        kwargs["VersionId"] = whole.version_id
    scan = RecordScanner("csv" if fmt.format == "csv" else "jsonl")
    body = s3.get_object(**kwargs)["Body"]
    try:
        for chunk in body.iter_chunks(1024 * 1024):
            scan.feed(chunk)
    finally:
        body.close()
    cut = whole.start + scan.last_boundary
    if scan.last_boundary == 0 or cut >= whole.end:
        return None
    head = _Piece(piece.file, [piece.file.range(whole.start, cut)], cut - whole.start)
    tail_range = piece.file.range(cut, whole.end, newline_after=whole.newline_after)
    return head, _Piece(piece.file, [tail_range], tail_range.size)


def _pack(
    manifest: SourceObject,
    pieces: list[_Piece],
    part_max: int,
    header: int,
    total: int,
    *,
    header_range: ByteRange | None = None,
    alone: bool = False,
    cut: Callable[[_Piece, int], tuple[_Piece, _Piece] | None] | None = None,
) -> PartPlan:
    """Pieces in order into jobs of at most ``part_max`` bytes; with ``cut``, a piece that does not
    fit is cut on a record boundary to fill the job, so the load takes as few jobs as the bytes need."""
    jobs: list[list[_Piece]] = []
    size = 0
    queue = list(reversed(pieces))
    while queue:
        piece = queue.pop()
        if jobs and not alone and size + piece.size <= part_max and len(jobs[-1]) < MAX_RANGES_PER_JOB:
            jobs[-1].append(piece)
            size += piece.size
            continue
        room = part_max - size
        if jobs and not alone and cut is not None and room > 0 and len(jobs[-1]) < MAX_RANGES_PER_JOB:
            halves = cut(piece, room)
            if halves is not None:
                jobs[-1].append(halves[0])
                queue.append(halves[1])
                size = part_max  # the job is full: the rest starts the next one
                continue
        jobs.append([piece])
        size = header + piece.size
    parts = []
    for index, job in enumerate(jobs, start=1):
        ranges = [r for piece in job for r in piece.ranges]
        if header_range is not None:
            ranges.insert(0, header_range)
        parts.append(
            PartSpec(index=index, ranges=ranges, bytes=sum(r.size for r in ranges), segments=_segments(job))
        )
    return PartPlan(
        kind="manifest",
        source=manifest,
        part_max_bytes=part_max,
        total_bytes=total,
        header_bytes=header or None,
        parts=parts,
    )


def _pack_parquet(manifest: SourceObject, pieces: list[_Piece], part_max: int, total: int) -> PartPlan:
    """Row groups packed into jobs; consecutive groups of one file become one range (one footer piece)."""
    jobs: list[list[_Piece]] = []
    data = footers = 0
    seen: set[str] = set()
    for piece in pieces:
        assert piece.metadata is not None
        extra_footer = 0 if piece.file.key in seen else len(piece.metadata)
        if (
            jobs
            and parquet_part_bytes(data + piece.size, footers + extra_footer) <= part_max
            and len(jobs[-1]) < MAX_RANGES_PER_JOB
        ):
            jobs[-1].append(piece)
            data += piece.size
            footers += extra_footer
        else:
            jobs.append([piece])
            data, footers, seen = piece.size, len(piece.metadata), set()
        seen.add(piece.file.key)
    parts = []
    rows_before = 0
    for index, job in enumerate(jobs, start=1):
        runs: list[tuple[_Piece, list[RowGroup]]] = []
        for piece in job:
            assert piece.groups is not None
            group = piece.groups[0]
            if runs and runs[-1][0].file.key == piece.file.key and runs[-1][1][-1].end == group.start:
                runs[-1][1].append(group)
            else:
                runs.append((piece, [group]))
        ranges = [
            piece.file.range(groups[0].start, groups[-1].end).model_copy(
                update={"rows": sum(g.rows for g in groups)}
            )
            for piece, groups in runs
        ]
        footer_pieces = [
            (
                piece.metadata or b"",
                ParquetPiece(
                    bucket=piece.file.bucket,
                    key=piece.file.key,
                    version_id=piece.file.version_id,
                    etag=piece.file.etag,
                    size=piece.file.size,
                    row_groups=[g.index for g in groups],
                ),
            )
            for piece, groups in runs
        ]
        footer = part_footer_bytes(footer_pieces)
        rows = sum(g.rows for _, groups in runs for g in groups)
        parts.append(
            PartSpec(
                index=index,
                ranges=ranges,
                parquet=[p for _, p in footer_pieces],
                bytes=PARQUET_MAGIC_BYTES + sum(r.size for r in ranges) + len(footer),
                first_row_number=rows_before + 1,
                rows=rows,
                segments=_segments(job),
            )
        )
        rows_before += rows
    return PartPlan(
        kind="manifest",
        source=manifest,
        part_max_bytes=part_max,
        total_bytes=total,
        total_rows=rows_before,
        parts=parts,
    )
