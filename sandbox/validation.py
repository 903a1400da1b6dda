"""Value checks shared by the Records API and import processing.

Error codes follow docs/api-choices.md: VALIDATION_TYPE_MISMATCH, REQUIRED_FIELD_MISSING,
INVALID_EMAIL_FORMAT, UNKNOWN_FIELD, MATCH_KEY_MISSING.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
STRICT_INT_RE = re.compile(r"^[+-]?\d+$")
STRICT_NUM_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
TRUE_WORDS = {"true", "1", "yes", "y", "t"}
FALSE_WORDS = {"false", "0", "no", "n", "f"}


class RowError(Exception):
    """One rejected value: an errorSummary code and a human message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_datetime(text: str, *, assume_utc: bool = False) -> str:
    """ISO 8601 with an offset; a naive value is a type error unless ``assume_utc``."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise RowError("VALIDATION_TYPE_MISMATCH", "not an ISO 8601 datetime") from exc
    if value.tzinfo is None:
        if not assume_utc:
            raise RowError("VALIDATION_TYPE_MISMATCH", "naive datetime — include timezone offset")
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def check_json_value(field: dict[str, Any], value: Any) -> Any:
    """Records API: a JSON value must already have the field's type (no coercion)."""
    ftype = field["type"]
    ok = (
        (ftype == "string" and isinstance(value, str))
        or (ftype == "integer" and isinstance(value, int) and not isinstance(value, bool))
        or (
            ftype == "number"
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
        )
        or (ftype == "boolean" and isinstance(value, bool))
        or (ftype == "datetime" and isinstance(value, str))
    )
    if not ok:
        raise RowError("VALIDATION_TYPE_MISMATCH", f"expected {ftype}, got {type(value).__name__}")
    if ftype == "datetime":
        parse_datetime(value)
    if field.get("format") == "email" and not EMAIL_RE.match(value):
        raise RowError("INVALID_EMAIL_FORMAT", "invalid email format")
    return value


def validate_json_record(
    schema: dict[str, Any], record: dict[str, Any], *, match_key: str | None, is_insert: bool
) -> tuple[str, RowError] | None:
    """First problem of one Records API row as (field, error), or None when the row is valid."""
    fields = {f["name"]: f for f in schema["fields"]}
    if match_key is not None and record.get(match_key) is None:
        return match_key, RowError("MATCH_KEY_MISSING", f"match key {match_key!r} is missing")
    for name, value in record.items():
        field = fields[name]
        if value is None:
            if field["required"]:
                return name, RowError("REQUIRED_FIELD_MISSING", "required field is null")
            continue
        try:
            check_json_value(field, value)
        except RowError as err:
            return name, err
    if is_insert:
        for field in schema["fields"]:
            if field["required"] and record.get(field["name"]) is None:
                return field["name"], RowError("REQUIRED_FIELD_MISSING", "required field is missing")
    return None


def parse_source(raw: Any, source_type: str, mode: str) -> Any:
    """Read one file value by its declared source type.

    strict: canonical forms only; balanced: lenient text forms; landing_friendly: coerce or None.
    """
    try:
        return _parse_source(raw, source_type, strict=mode == "strict", assume_utc=mode == "landing_friendly")
    except RowError:
        if mode == "landing_friendly":
            return None
        raise


def _parse_source(raw: Any, source_type: str, *, strict: bool, assume_utc: bool) -> Any:
    mismatch = RowError("VALIDATION_TYPE_MISMATCH", f"expected {source_type}, got {raw!r}")
    if source_type == "string":
        if isinstance(raw, str):
            return raw
        if strict:
            raise mismatch
        return _to_text(raw)
    if source_type == "integer":
        if isinstance(raw, bool):
            raise mismatch
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float):
            if strict or not raw.is_integer():
                raise mismatch
            return int(raw)
        text = str(raw)
        if STRICT_INT_RE.match(text):
            return int(text)
        if strict:
            raise mismatch
        try:
            number = float(text.strip())
        except ValueError:
            raise mismatch from None
        if not number.is_integer():
            raise mismatch
        return int(number)
    if source_type == "number":
        if isinstance(raw, bool):
            raise mismatch
        if isinstance(raw, int | float):
            value = float(raw) if isinstance(raw, float) else raw
        else:
            text = str(raw) if strict else str(raw).strip()
            if not STRICT_NUM_RE.match(text):
                raise mismatch
            value = float(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise mismatch
        return value
    if source_type == "boolean":
        if isinstance(raw, bool):
            return raw
        text = str(raw)
        if strict:
            if text in ("true", "false"):
                return text == "true"
            raise mismatch
        low = text.strip().lower()
        if low in TRUE_WORDS:
            return True
        if low in FALSE_WORDS:
            return False
        raise mismatch
    if source_type == "datetime":
        if isinstance(raw, datetime):
            if raw.tzinfo is None and not assume_utc:
                raise RowError("VALIDATION_TYPE_MISMATCH", "naive datetime — include timezone offset")
            return (raw if raw.tzinfo else raw.replace(tzinfo=UTC)).isoformat()
        if not isinstance(raw, str):
            raise mismatch
        return parse_datetime(raw, assume_utc=assume_utc)
    raise mismatch


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def to_field(value: Any, source_type: str, field: dict[str, Any], mode: str) -> Any:
    """Fit a parsed source value into the destination field's type."""
    ftype = field["type"]
    try:
        if ftype == "string":
            out: Any = value if isinstance(value, str) else _to_text(value)
        elif ftype == source_type or (ftype == "number" and source_type == "integer"):
            out = value
        elif mode == "strict":
            raise RowError(
                "VALIDATION_TYPE_MISMATCH", f"source type {source_type} does not match field type {ftype}"
            )
        else:
            out = _parse_source(value, ftype, strict=False, assume_utc=mode == "landing_friendly")
        if field.get("format") == "email" and not EMAIL_RE.match(str(out)):
            raise RowError("INVALID_EMAIL_FORMAT", "invalid email format")
    except RowError:
        if mode == "landing_friendly" and not field.get("primaryKey"):
            return None
        raise
    return out
