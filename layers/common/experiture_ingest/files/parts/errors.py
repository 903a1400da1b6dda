"""The one exception tree of splitting, merging and reporting parts."""

from __future__ import annotations


class PartsError(Exception):
    """Something about parts went wrong; ``code`` names it for the summary, the message says what to do."""

    code = "PARTS_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(f"{code or self.code}: {message}")
        self.code = code or self.code
        self.message = message


class SplitRefusedError(PartsError):
    """The file cannot be cut into parts under the part size (the code says why: a record or row
    group larger than a part, gzip over the part size, unbalanced CSV quotes)."""

    code = "SPLIT_REFUSED"


class ManifestError(PartsError):
    """A manifest (or ``_SUCCESS`` folder) cannot be loaded: malformed, a missing mandatory part,
    parts that do not agree (format, CSV header, Parquet schema)."""

    code = "MANIFEST_INVALID"


class PartSourceChangedError(PartsError):
    """A part's bytes are not what was planned (the source changed, or a footer differs): no upload."""

    code = "PART_SOURCE_CHANGED"
