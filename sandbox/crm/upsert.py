"""Read a batch upsert body into records, refusing what the vendor refuses at request time (400)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sandbox.crm.config import MAX_ASSOCIATIONS, MAX_ATTRIBUTES, MAX_RECORDS, CrmConfig
from sandbox.crm.errors import CrmError, invalid


@dataclass(frozen=True)
class Ident:
    """A record's identifiers: ``id`` (the vendor's) wins over ``ext_id`` (yours) when both are given."""

    id: int | None = None
    ext_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.id is not None:
            out["id"] = self.id
        if self.ext_id is not None:
            out["ext_id"] = self.ext_id
        return out


@dataclass
class AssociationOp:
    object_type: str
    action: str  # link | unlink
    targets: list[Ident]


@dataclass
class UpsertRecord:
    index: int
    ident: Ident
    attributes: dict[str, Any] = field(default_factory=dict)
    associations: list[AssociationOp] = field(default_factory=list)


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CrmError(400, "bad_request", "Input must be a valid JSON object") from None
    if not isinstance(value, dict):
        raise CrmError(400, "bad_request", "Input must be a valid JSON object")
    return value


def _ident(raw: Any, where: str, *, required: bool) -> Ident:
    if raw is None and not required:
        return Ident()
    if not isinstance(raw, dict):
        raise invalid(f"{where}: identifiers must be an object with id or ext_id")
    rid, ext = raw.get("id"), raw.get("ext_id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, int) or rid < 1):
        raise invalid(f"{where}.id: must be a positive integer")
    if ext is not None and (not isinstance(ext, str) or not ext.strip()):
        raise invalid(f"{where}.ext_id: must be a non-empty string")
    if required and rid is None and ext is None:
        raise invalid(f"{where}: give id or ext_id")
    return Ident(rid, ext)


def _associations(raw: Any, where: str, config: CrmConfig) -> list[AssociationOp]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid(f"{where}: associations must be a list")
    ops: list[AssociationOp] = []
    for j, entry in enumerate(raw):
        at = f"{where}[{j}]"
        if not isinstance(entry, dict):
            raise invalid(f"{at}: must be an object with object_type and records")
        object_type = entry.get("object_type")
        if not isinstance(object_type, str) or not object_type:
            raise invalid(f"{at}.object_type: required")
        action = entry.get("action", "link")
        if action not in ("link", "unlink"):
            raise invalid(f"{at}.action: must be 'link' or 'unlink'")
        records = entry.get("records")
        if not isinstance(records, list) or not records:
            raise invalid(f"{at}.records: must be a non-empty list")
        targets = []
        for k, item in enumerate(records):
            if not isinstance(item, dict):
                raise invalid(f"{at}.records[{k}]: must be an object with identifiers")
            targets.append(_ident(item.get("identifiers"), f"{at}.records[{k}].identifiers", required=True))
        ops.append(AssociationOp(object_type, action, targets))
    if config.associationLimitScope == "record":
        count = sum(len(op.targets) for op in ops)
        if count > MAX_ASSOCIATIONS:
            raise invalid(f"{where}: at most {MAX_ASSOCIATIONS} associations per object record (got {count})")
    else:
        per_type: Counter[str] = Counter()
        for op in ops:
            per_type[op.object_type] += len(op.targets)
        for object_type, count in per_type.items():
            if count > MAX_ASSOCIATIONS:
                raise invalid(
                    f"{where}: at most {MAX_ASSOCIATIONS} associated records of type {object_type} "
                    f"per object record (got {count})"
                )
    return ops


def parse_records(payload: dict[str, Any], config: CrmConfig) -> list[UpsertRecord]:
    """The ``records`` array checked for shape and limits; messages name the record's index."""
    if "records" not in payload:
        raise CrmError(400, "missing_parameter", "records is required")
    raw = payload["records"]
    if not isinstance(raw, list):
        raise invalid("records must be an array")
    if not raw:
        raise invalid("records cannot be empty")
    if len(raw) > MAX_RECORDS:
        raise invalid(f"records cannot be more than {MAX_RECORDS} (got {len(raw)})")
    out: list[UpsertRecord] = []
    for i, item in enumerate(raw):
        where = f"records[{i}]"
        if not isinstance(item, dict):
            raise invalid(f"{where}: must be an object")
        attributes = item.get("attributes", {})
        if attributes is None:
            attributes = {}
        if not isinstance(attributes, dict):
            raise invalid(f"{where}.attributes: must be an object")
        if len(attributes) > MAX_ATTRIBUTES:
            raise invalid(
                f"{where}.attributes: at most {MAX_ATTRIBUTES} attributes per object record "
                f"(got {len(attributes)})"
            )
        out.append(
            UpsertRecord(
                index=i,
                ident=_ident(item.get("identifiers"), f"{where}.identifiers", required=False),
                attributes=dict(attributes),
                associations=_associations(item.get("associations"), f"{where}.associations", config),
            )
        )
    return out
