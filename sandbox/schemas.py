"""Object schemas: the default ones and loading/validating a schema file.

A schema file is JSON: ``{"objects": {"<name>": {"primaryKey": "<field>", "fields": [{"name": ...,
"type": "string|integer|number|boolean|datetime", "format": "email" (optional), "required": bool}]}}}``
(``{"<name>": {...}}`` without the ``objects`` wrapper is accepted too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIELD_TYPES = ("string", "integer", "number", "boolean", "datetime")


def _f(name: str, type_: str = "string", *, required: bool = False, fmt: str | None = None) -> dict[str, Any]:
    field: dict[str, Any] = {"name": name, "type": type_, "required": required}
    if fmt:
        field["format"] = fmt
    return field


DEFAULT_OBJECTS: dict[str, dict[str, Any]] = {
    "contacts": {
        "primaryKey": "email",
        "fields": [
            _f("email", required=True, fmt="email"),
            _f("first_name"),
            _f("last_name"),
            _f("phone"),
            _f("signup_source"),
            _f("tier"),
            _f("city"),
            _f("age", "integer"),
            _f("lifetime_value", "number"),
            _f("opted_in", "boolean"),
            _f("signed_up_at", "datetime"),
            _f("last_seen", "datetime"),
        ],
    },
    "profiles": {
        "primaryKey": "email",
        "fields": [
            _f("email", required=True, fmt="email"),
            _f("first_name"),
            _f("last_name"),
            _f("phone"),
            _f("city"),
            _f("country"),
            _f("age", "integer"),
            _f("lifetime_value", "number"),
            _f("opted_in", "boolean"),
            _f("signed_up_at", "datetime"),
            _f("last_seen", "datetime"),
            _f("import_source"),
        ],
    },
    "orders": {
        "primaryKey": "order_id",
        "fields": [
            _f("order_id", required=True),
            _f("email", required=True, fmt="email"),
            _f("amount", "number", required=True),
            _f("currency"),
            _f("quantity", "integer"),
            _f("status"),
            _f("ordered_at", "datetime", required=True),
        ],
    },
    "events": {
        "primaryKey": "event_id",
        "fields": [
            _f("event_id", required=True),
            _f("email", fmt="email"),
            _f("event_type", required=True),
            _f("source"),
            _f("value", "number"),
            _f("occurred_at", "datetime", required=True),
        ],
    },
}


class SchemaError(ValueError):
    """A schema definition that cannot be used."""


def normalise_object(name: str, spec: Any) -> dict[str, Any]:
    """Validate one object definition and return it in the canonical shape."""
    if not isinstance(spec, dict) or not isinstance(spec.get("fields"), list) or not spec["fields"]:
        raise SchemaError(f"{name}: expected an object with a non-empty 'fields' list")
    fields: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, raw in enumerate(spec["fields"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise SchemaError(f"{name}.fields[{i}]: 'name' must be a non-empty string")
        fname = raw["name"]
        if fname in seen:
            raise SchemaError(f"{name}.fields[{i}]: duplicate field {fname!r}")
        seen.add(fname)
        ftype = raw.get("type", "string")
        if ftype not in FIELD_TYPES:
            raise SchemaError(f"{name}.{fname}: type must be one of {', '.join(FIELD_TYPES)}")
        fmt = raw.get("format")
        if fmt not in (None, "email"):
            raise SchemaError(f"{name}.{fname}: only format 'email' is supported")
        fields.append(_f(fname, ftype, required=bool(raw.get("required", False)), fmt=fmt))
    pk = spec.get("primaryKey")
    if pk is None:
        pk_fields = [
            f["name"] for f, raw in zip(fields, spec["fields"], strict=True) if raw.get("primaryKey")
        ]
        pk = pk_fields[0] if pk_fields else fields[0]["name"]
    if pk not in seen:
        raise SchemaError(f"{name}: primaryKey {pk!r} is not a field")
    for f in fields:
        f["primaryKey"] = f["name"] == pk
        if f["primaryKey"]:
            f["required"] = True
    return {"objectName": name, "primaryKey": pk, "fields": fields}


def default_schemas() -> dict[str, dict[str, Any]]:
    return {name: normalise_object(name, spec) for name, spec in DEFAULT_OBJECTS.items()}


def load_schema_file(path: str | Path, *, include_defaults: bool = True) -> dict[str, dict[str, Any]]:
    """Read a schema file; its objects replace or extend the defaults."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    objects = raw.get("objects", raw) if isinstance(raw, dict) else None
    if not isinstance(objects, dict):
        raise SchemaError("schema file must be a JSON object of objects")
    result = default_schemas() if include_defaults else {}
    for name, spec in objects.items():
        result[name] = normalise_object(name, spec)
    return result
