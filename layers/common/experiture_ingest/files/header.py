"""The columns of a file in S3, read with bounded ranged GETs (never the whole object).

CSV: the first row. JSONL: the keys of the first record. Parquet: the footer's schema. Gzip is
decompressed incrementally from the first bytes only.

>>> columns_from_text("csv", 'Email,"First Name",age\\r\\nx@y.z,Ann,3\\n')
[SourceColumn(name='Email', type=None), SourceColumn(name='First Name', type=None), SourceColumn(name='age', type=None)]
>>> columns_from_text("jsonl", '\\n{"email": "a@b.c", "age": 3, "vip": true}\\n{"x": 1}')
[SourceColumn(name='email', type='string'), SourceColumn(name='age', type='integer'), SourceColumn(name='vip', type='boolean')]
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from experiture_ingest.files.handoff import SourceObject
from experiture_ingest.files.parquet_footer import (
    TRAILER_BYTES,
    ParquetFooterError,
    footer_length,
    parse_columns,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

HEADER_MAX_BYTES = 1024 * 1024  # a header row (or first record) longer than this is refused
PARQUET_FOOTER_MAX_BYTES = 16 * 1024 * 1024
_PARQUET_TAIL_GUESS = 64 * 1024  # one GET usually holds the whole footer
_CHUNK = 64 * 1024


class HeaderError(ValueError):
    """The file's header cannot be read; the message tells the user what to fix."""


class DuplicateColumnsError(HeaderError):
    """The header names a column twice: which value would be imported is ambiguous (the API keys a
    row by column name, so the last one wins, while a mapping reads as if it were the first)."""

    code = "DUPLICATE_COLUMNS"


@dataclass(frozen=True)
class SourceColumn:
    """A column of the source file and the type the file itself declares (Parquet, JSON), if any."""

    name: str
    type: str | None = None


def read_columns(s3: S3Client, source: SourceObject) -> list[SourceColumn]:
    """The columns of ``source``, in file order, from at most a few bounded ranged GETs."""
    if source.format == "parquet":
        if source.compression:
            raise HeaderError("compressed Parquet files are not supported (Parquet compresses internally)")
        return unique_columns(_parquet_columns(s3, source))
    text = _first_text(s3, source)
    return unique_columns(columns_from_text(source.format, text))


def unique_columns(columns: list[SourceColumn]) -> list[SourceColumn]:
    """``columns``, or :class:`DuplicateColumnsError` naming each column that appears twice.

    >>> unique_columns([SourceColumn("email"), SourceColumn("first_name"), SourceColumn("first_name")])
    Traceback (most recent call last):
    ...
    experiture_ingest.files.header.DuplicateColumnsError: DUPLICATE_COLUMNS: the header names 'first_name' more than once (columns 2 and 3); give each column its own name
    """
    positions: dict[str, list[int]] = {}
    for number, column in enumerate(columns, start=1):
        positions.setdefault(column.name, []).append(number)
    repeated = [(name, places) for name, places in positions.items() if len(places) > 1]
    if repeated:
        named = "; ".join(
            f"{name!r} more than once (columns {', '.join(map(str, places[:-1]))} and {places[-1]})"
            for name, places in repeated
        )
        raise DuplicateColumnsError(
            f"{DuplicateColumnsError.code}: the header names {named}; give each column its own name"
        )
    return columns


def columns_from_text(fmt: str, text: str) -> list[SourceColumn]:
    """The columns named by the beginning of a CSV or JSONL file."""
    if fmt == "csv":
        row = next(csv.reader(io.StringIO(text), strict=False), None)
        names = [name.strip() for name in row or []]
        if not any(names):
            raise HeaderError("the CSV file has no header row (the first row must name the columns)")
        return [SourceColumn(name) for name in names]
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise HeaderError("the first line of the JSONL file is not valid JSON") from None
        if not isinstance(record, dict) or not record:
            raise HeaderError("the first line of the JSONL file is not a JSON object with fields")
        return [SourceColumn(str(key), _json_type(value)) for key, value in record.items()]
    raise HeaderError("the JSONL file has no records")


def _json_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _get(s3: S3Client, source: SourceObject, byte_range: str) -> bytes:
    kwargs: dict[str, Any] = {"Bucket": source.bucket, "Key": source.key, "Range": byte_range}
    if source.version_id:
        kwargs["VersionId"] = source.version_id
    body = s3.get_object(**kwargs)["Body"]
    try:
        return body.read()
    finally:
        body.close()


def _stream(s3: S3Client, source: SourceObject, limit: int) -> Iterator[bytes]:
    kwargs: dict[str, Any] = {"Bucket": source.bucket, "Key": source.key, "Range": f"bytes=0-{limit - 1}"}
    if source.version_id:
        kwargs["VersionId"] = source.version_id
    body = s3.get_object(**kwargs)["Body"]
    try:
        yield from body.iter_chunks(_CHUNK)
    finally:
        body.close()


def _first_text(s3: S3Client, source: SourceObject) -> str:
    """Decoded text up to the end of the first complete line (or the bound), gzip included."""
    inflate = zlib.decompressobj(wbits=31) if source.compression == "gzip" else None
    data = b""
    for chunk in _stream(s3, source, HEADER_MAX_BYTES):
        data += inflate.decompress(chunk, HEADER_MAX_BYTES - len(data)) if inflate else chunk
        if _has_complete_first_line(data) or len(data) >= HEADER_MAX_BYTES:
            break
        if inflate is not None and inflate.eof:
            break
    if not _has_complete_first_line(data) and len(data) >= HEADER_MAX_BYTES:
        raise HeaderError(f"the first line is longer than {HEADER_MAX_BYTES} bytes; give a fieldMap")
    try:
        return data.decode("utf-8-sig") if _has_complete_first_line(data) else _decode_prefix(data)
    except UnicodeDecodeError:
        raise HeaderError("the file does not start with UTF-8 text") from None


def _has_complete_first_line(data: bytes) -> bool:
    stripped = data.lstrip(b"\r\n")
    return b"\n" in stripped


def _decode_prefix(data: bytes) -> str:
    # A bounded read may cut a multi-byte character in two: drop the incomplete tail.
    for cut in range(4):
        try:
            return data[: len(data) - cut].decode("utf-8-sig")
        except UnicodeDecodeError:
            continue
    raise UnicodeDecodeError("utf-8", data, 0, len(data), "not UTF-8")


def _parquet_columns(s3: S3Client, source: SourceObject) -> list[SourceColumn]:
    try:
        tail = _get(s3, source, f"bytes=-{min(source.size, _PARQUET_TAIL_GUESS)}")
        length = footer_length(tail[-TRAILER_BYTES:])
        if length > PARQUET_FOOTER_MAX_BYTES:
            raise HeaderError(
                f"the Parquet footer is {length} bytes (limit {PARQUET_FOOTER_MAX_BYTES}); give a fieldMap"
            )
        if length + TRAILER_BYTES > source.size:
            raise ParquetFooterError("the Parquet footer is longer than the file")
        if length + TRAILER_BYTES > len(tail):
            tail = _get(s3, source, f"bytes=-{length + TRAILER_BYTES}")
        columns = parse_columns(tail[-TRAILER_BYTES - length : -TRAILER_BYTES])
    except ParquetFooterError as exc:
        raise HeaderError(f"cannot read the Parquet schema: {exc}") from None
    return [SourceColumn(c.name, c.type) for c in columns]
