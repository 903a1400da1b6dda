"""Which files the import API takes, and how to send each one: format, compression, Content-Type.

The accepted extensions are the Bulk File Import guide's (003), matched case-insensitively on the
longest suffix, so ``.csv.gz`` wins over ``.gz``:

>>> detect_format("spring-2026.CSV.GZ")
FileFormat(extension='.csv.gz', format='csv', compression='gzip', content_type='application/gzip')
>>> detect_format("export.ndjson").format
'jsonl'
>>> detect_format("notes.txt") is None
True
>>> supported_extensions()[:3]
('.csv', '.jsonl', '.ndjson')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Format = Literal["csv", "jsonl", "parquet"]


@dataclass(frozen=True)
class FileFormat:
    """One accepted extension: what the API will parse it as and the Content-Type of the upload."""

    extension: str
    format: Format
    compression: Literal["gzip"] | None
    content_type: str


_FORMATS = (
    FileFormat(".csv", "csv", None, "text/csv"),
    FileFormat(".jsonl", "jsonl", None, "application/x-ndjson"),
    FileFormat(".ndjson", "jsonl", None, "application/x-ndjson"),
    FileFormat(".parquet", "parquet", None, "application/vnd.apache.parquet"),
    FileFormat(".csv.gz", "csv", "gzip", "application/gzip"),
    FileFormat(".jsonl.gz", "jsonl", "gzip", "application/gzip"),
    FileFormat(".ndjson.gz", "jsonl", "gzip", "application/gzip"),
)
_LONGEST_FIRST = sorted(_FORMATS, key=lambda f: len(f.extension), reverse=True)


def supported_extensions() -> tuple[str, ...]:
    """The extensions a user may drop, in documentation order."""
    return tuple(f.extension for f in _FORMATS)


def detect_format(file_name: str) -> FileFormat | None:
    """The format of ``file_name`` by its extension (case-insensitive), or None when unsupported."""
    low = file_name.lower()
    return next(
        (f for f in _LONGEST_FIRST if low.endswith(f.extension) and len(low) > len(f.extension)), None
    )
