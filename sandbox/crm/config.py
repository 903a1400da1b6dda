"""The CRM emulator's object types (seeded at start, changed by admin) and its runtime switches."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

MAX_RECORDS = 1000
MAX_ATTRIBUTES = 500
MAX_ASSOCIATIONS = 10
# "1 MB" read as 10^6 bytes: the stricter of the two readings, so a client that fits here fits there.
MAX_BODY_BYTES = 1_000_000
OBJECT_TYPE_RE = re.compile(r"^[a-z0-9_]{1,32}$")
# The vendor's own objects: this endpoint refuses them (403), so they cannot be seeded either.
STANDARD_OBJECTS = frozenset({"contact", "company", "deal", "task", "note", "store", "order", "ticket"})

DEFAULT_OBJECT_TYPES: dict[str, dict[str, Any]] = {
    "vehicle": {
        "attributes": ["model", "brand", "year", "color", "price", "engine_type", "registered_at"],
        "associations": ["garage"],
    },
    "garage": {"attributes": ["name", "city", "country"], "associations": ["vehicle"]},
}


class ObjectTypeError(ValueError):
    """An object type definition that cannot be used."""


@dataclass
class ObjectType:
    name: str
    attributes: list[str]
    associations: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "attributes": list(self.attributes),
            "associations": list(self.associations),
        }


def normalise_object_type(name: str, raw: Any) -> ObjectType:
    """Check one definition: ``{"attributes": [...], "associations": [...]}``."""
    if not OBJECT_TYPE_RE.match(name):
        raise ObjectTypeError(
            f"object type {name!r}: lowercase letters, digits and '_' only, 1 to 32 of them"
        )
    if name in STANDARD_OBJECTS:
        raise ObjectTypeError(f"object type {name!r} is a standard object, not a custom one")
    if not isinstance(raw, dict) or set(raw) - {"attributes", "associations"}:
        raise ObjectTypeError(f"object type {name!r}: give an object with 'attributes' and 'associations'")
    attributes = raw.get("attributes", [])
    associations = raw.get("associations", [])
    for key, value in (("attributes", attributes), ("associations", associations)):
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ObjectTypeError(f"object type {name!r}: {key} must be a list of names")
        if len(set(value)) != len(value):
            raise ObjectTypeError(f"object type {name!r}: {key} has duplicates")
    if len(attributes) > MAX_ATTRIBUTES:
        raise ObjectTypeError(f"object type {name!r}: at most {MAX_ATTRIBUTES} attributes")
    if len(associations) > MAX_ASSOCIATIONS:
        raise ObjectTypeError(f"object type {name!r}: at most {MAX_ASSOCIATIONS} associated object types")
    return ObjectType(name, list(attributes), list(associations))


def parse_object_types(raw: Any) -> dict[str, ObjectType]:
    """``{"objectTypes": {name: definition}}`` (a file) or ``{name: definition}`` (options)."""
    if isinstance(raw, dict) and set(raw) == {"objectTypes"}:
        raw = raw["objectTypes"]
    if not isinstance(raw, dict):
        raise ObjectTypeError('object types must be a JSON object: {"objectTypes": {name: {...}}}')
    return {name: normalise_object_type(name, spec) for name, spec in raw.items()}


def load_object_types_file(path: str) -> dict[str, ObjectType]:
    """The defaults, extended or replaced by name by the file's object types."""
    loaded = parse_object_types(json.loads(Path(path).read_text(encoding="utf-8")))
    return {**parse_object_types(DEFAULT_OBJECT_TYPES), **loaded}


CHOICES: dict[str, tuple[Any, ...]] = {
    "unknownObjectTypeStatus": (400, 404),
    "bodyTooLargeStatus": (413, 400),
    "associationLimitScope": ("record", "object_type"),
    "associationCheck": ("request", "process"),
}


@dataclass
class CrmConfig:
    """Switches for the places where the vendor's reference allows more than one behaviour.

    Changed at run time through ``POST /_sandbox/crm/config`` (these camelCase names).
    """

    customObjectsEnabled: bool = True
    unknownObjectTypeStatus: int = 400
    bodyTooLargeStatus: int = 413
    maxBodyBytes: int = MAX_BODY_BYTES
    associationLimitScope: str = "record"
    associationCheck: str = "request"
    reportRejections: bool = True
    queueSeconds: float = 0.0
    processSeconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply known keys with checks; unknown keys are an error so typos surface."""
        known = {f.name for f in fields(self)}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown CRM config key {key!r}; known: {', '.join(sorted(known))}")
            setattr(self, key, self._checked(key, value))

    def _checked(self, key: str, value: Any) -> Any:
        current = getattr(self, key)
        if key in CHOICES:
            if isinstance(value, bool) or value not in CHOICES[key]:
                raise ValueError(f"{key} must be one of {list(CHOICES[key])}")
            return value
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{key} must be a non-negative number")
        return int(value) if isinstance(current, int) else float(value)

    def copy(self) -> CrmConfig:
        return copy.deepcopy(self)
