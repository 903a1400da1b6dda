"""Check records against the object's schema before sending, so one bad record cannot poison a batch.

The schema comes from ``GET /metadata/objects/{name}`` and is cached per object for a TTL (warm
Lambdas reuse it across invocations). Types follow docs/api-choices.md: ``string``, ``integer``,
``number``, ``boolean``, ``datetime`` (ISO 8601 with an offset), and ``format: "email"``.

>>> from experiture_ingest.client import ObjectSchema
>>> schema = ObjectSchema.model_validate({"primaryKey": "email", "fields": [
...     {"name": "email", "type": "string", "format": "email", "required": True},
...     {"name": "age", "type": "integer"}]})
>>> check_record(schema, {"email": "a@example.com", "age": 3}, "append", None) is None
True
>>> check_record(schema, {"email": "a@example.com", "age": "3"}, "append", None)
('VALIDATION_TYPE_MISMATCH', 'age: expected integer, got str')
>>> check_record(schema, {"age": 3}, "append", None)
('REQUIRED_FIELD_MISSING', 'email: required field is missing')
>>> check_record(schema, {"age": 3}, "upsert", "age") is None  # an upsert may update a partial record
True
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from experiture_ingest.client import ExperitureClient, ExperitureError, ObjectSchema

# The same shape the API documents for an email; the API has the last word (invalidRows).
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")

# errorSummary codes of docs/api-choices.md, reused so a dead letter reads like an API report.
TYPE_MISMATCH = "VALIDATION_TYPE_MISMATCH"
REQUIRED_MISSING = "REQUIRED_FIELD_MISSING"
INVALID_EMAIL = "INVALID_EMAIL_FORMAT"
UNKNOWN_FIELD = "UNKNOWN_FIELD"
MATCH_KEY_MISSING = "MATCH_KEY_MISSING"


def _is_datetime(value: str) -> bool:
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return False
    return parsed.tzinfo is not None


_EXACT: dict[str, type] = {"string": str, "integer": int, "boolean": bool}


def _type_ok(kind: str, value: Any) -> bool:
    # Values come from JSON, so exact types (bool is not an int here, an int never overflows a check).
    kind_of = type(value)
    if kind == "string":
        return kind_of is str
    if kind == "integer":
        return kind_of is int
    if kind == "number":
        return kind_of is int or (kind_of is float and math.isfinite(value))
    if kind == "boolean":
        return kind_of is bool
    if kind == "datetime":
        return kind_of is str and _is_datetime(value)
    return True  # a type this package does not know yet: let the API decide


def check_record(
    schema: ObjectSchema, record: Mapping[str, Any], operation: str, match_key: str | None
) -> tuple[str, str] | None:
    """The first problem of ``record`` as (errorSummary code, message), or None when it may be sent.

    Append needs every required field; upsert may carry a partial record (it may update an
    existing one), but needs its match key (default: the primary key) and no explicit null in a
    required field.
    """
    return compile_check(schema, operation, match_key)(record)


def compile_check(
    schema: ObjectSchema, operation: str, match_key: str | None
) -> Callable[[Mapping[str, Any]], tuple[str, str] | None]:
    """:func:`check_record` for one schema and target, with the per-field work done once."""
    # Per field: its type, whether required, whether an email, and the one Python type it must be
    # when a type check is that simple (values come from JSON, so exact types are right).
    specs = {f.name: (f.type, f.required, f.format == "email", _EXACT.get(f.type)) for f in schema.fields}
    known = specs.keys()
    label = schema.object_name or "object"
    key = (match_key or schema.key_field) if operation == "upsert" else None
    required = [f.name for f in schema.fields if f.required] if operation == "append" else []

    def check(record: Mapping[str, Any]) -> tuple[str, str] | None:
        if not known >= record.keys():
            name = next(n for n in record if n not in specs)
            return UNKNOWN_FIELD, f"{name}: field is not in the {label} schema"
        if key and record.get(key) is None:
            return MATCH_KEY_MISSING, f"{key}: the match key is missing"
        for name, value in record.items():
            kind, needed, email, exact = specs[name]
            if value is None:
                if needed:
                    return REQUIRED_MISSING, f"{name}: required field is null"
                continue
            if (type(value) is not exact) if exact is not None else not _type_ok(kind, value):
                expected = f"{kind} with a timezone offset" if kind == "datetime" else kind
                return TYPE_MISMATCH, f"{name}: expected {expected}, got {type(value).__name__}"
            if email and not _EMAIL.match(value):
                return INVALID_EMAIL, f"{name}: invalid email format"
        for name in required:
            if name not in record:
                return REQUIRED_MISSING, f"{name}: required field is missing"
        return None

    return check


@dataclass
class _Entry:
    expires: float
    schema: ObjectSchema | None
    error: ExperitureError | None


class SchemaCache:
    """``GET /metadata/objects/{name}`` once per object per ``ttl_seconds``.

    A permanent answer (404 unknown object, 403) is cached too, so a flood of messages for an object
    that does not exist costs one request a TTL; transient errors are raised and not cached.
    """

    def __init__(
        self,
        client: ExperitureClient,
        ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def get(self, object_name: str) -> ObjectSchema:
        """The object's schema; raises the API error (retryable or not) when it cannot be had."""
        now = self._clock()
        entry = self._entries.get(object_name)
        if entry is None or entry.expires <= now:
            try:
                entry = _Entry(now + self._ttl, self._client.get_object_schema(object_name), None)
            except ExperitureError as exc:
                if exc.retryable:
                    raise
                entry = _Entry(now + self._ttl, None, exc)
            self._entries[object_name] = entry
        if entry.error is not None:
            raise entry.error
        assert entry.schema is not None
        return entry.schema

    def forget(self, object_name: str) -> None:
        """Drop a cached schema (after the API refused a request the cached schema allowed)."""
        self._entries.pop(object_name, None)
