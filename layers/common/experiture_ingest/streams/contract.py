"""The message contract of the record queue: what a producer may put in an SQS message.

Three forms, tried in this order:

1. An **envelope** body: a JSON object whose keys are among ``object``, ``operation``, ``matchKey``,
   ``record``, ``records`` and which holds ``record`` (one) or ``records`` (a list of 1 to 10,000).
2. A **bare record** (or a JSON list of bare records) with the target in message attributes
   ``experiture.object``, ``experiture.operation`` and optionally ``experiture.matchKey``.
3. A **bare record** on a queue whose writer has a default target (``STREAM_DEFAULT_TARGET``,
   ``object:operation[:matchKey]``).

Envelope fields win over attributes, attributes over the queue default.

>>> message = parse_message('{"object": "contacts", "operation": "upsert", "matchKey": "email",'
...                         ' "records": [{"email": "a@example.com"}, {"email": "b@example.com"}]}')
>>> message.target, len(message.records)
(Target(object='contacts', operation='upsert', match_key='email'), 2)
>>> parse_message('{"email": "c@example.com"}', default=Target.parse("contacts:append")).target.operation
'append'
>>> parse_message('{"email": "c@example.com"}')  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
experiture_ingest.streams.contract.ContractError: STREAM.TARGET_MISSING: ...
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from experiture_ingest.limits import BATCH_MAX_RECORDS, RECORD_MAX_FIELDS

Operation = Literal["append", "upsert"]
OPERATIONS: tuple[str, ...] = ("append", "upsert")

ATTR_OBJECT = "experiture.object"
ATTR_OPERATION = "experiture.operation"
ATTR_MATCH_KEY = "experiture.matchKey"
_ENVELOPE_KEYS = frozenset({"object", "operation", "matchKey", "record", "records"})

# Reason codes this package puts on dead letters (the API's own codes are used as they come).
MALFORMED_JSON = "STREAM.MALFORMED_JSON"
CONTRACT_INVALID = "STREAM.CONTRACT_INVALID"
TARGET_MISSING = "STREAM.TARGET_MISSING"
RECORD_INVALID = "STREAM.RECORD_INVALID"


class ContractError(Exception):
    """A message (or one record of it) that can never be written as sent: it is dead-lettered."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Target(BaseModel):
    """Where records go: an object, an operation, and the match key of an upsert."""

    model_config = ConfigDict(frozen=True)

    object: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.-]+$")
    operation: Operation
    match_key: str | None = Field(default=None, min_length=1)

    @field_validator("match_key")
    @classmethod
    def _upsert_only(cls, value: str | None, info: Any) -> str | None:
        if value is not None and info.data.get("operation") == "append":
            raise ValueError("matchKey applies to upsert only")
        return value

    @classmethod
    def parse(cls, text: str) -> Target:
        """``object:operation[:matchKey]``, the form of ``STREAM_DEFAULT_TARGET``.

        >>> Target.parse("orders:upsert:order_id").match_key
        'order_id'
        """
        parts = text.strip().split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"expected object:operation[:matchKey], got {text!r}")
        return cls.model_validate(
            {"object": parts[0], "operation": parts[1], "match_key": parts[2] if len(parts) == 3 else None}
        )

    def __str__(self) -> str:
        return ":".join(p for p in (self.object, self.operation, self.match_key) if p)


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: str | None = None
    operation: str | None = None
    matchKey: str | None = None
    record: Any = None
    records: list[Any] | None = Field(default=None, min_length=1, max_length=BATCH_MAX_RECORDS)


@dataclass(frozen=True)
class RecordProblem:
    """One record that cannot be written: where it sits in its message and why."""

    index: int
    code: str
    message: str
    record: Any


@dataclass
class ParsedMessage:
    """A message's target, its good records (in order) and the records refused on their own."""

    target: Target
    records: list[dict[str, Any]]
    problems: list[RecordProblem] = field(default_factory=list)


def record_problem(record: Any) -> str | None:
    """Why a record can never be sent (shape only: a JSON object, 1 to 500 properties), or None.

    >>> record_problem({}), record_problem([1])
    ('a record must have at least one property', 'a record must be a JSON object, got list')
    """
    if not isinstance(record, dict):
        return f"a record must be a JSON object, got {type(record).__name__}"
    if not record:
        return "a record must have at least one property"
    if len(record) > RECORD_MAX_FIELDS:
        return f"a record has at most {RECORD_MAX_FIELDS} fields, this one has {len(record)}"
    return None


def _attribute(attributes: Mapping[str, Any], name: str) -> str | None:
    value = attributes.get(name)
    if isinstance(value, Mapping):  # the SQS event shape: {"stringValue": ..., "dataType": ...}
        value = value.get("stringValue", value.get("StringValue"))
    return value if isinstance(value, str) and value else None


def _target(envelope: _Envelope | None, attributes: Mapping[str, Any], default: Target | None) -> Target:
    obj = (envelope.object if envelope else None) or _attribute(attributes, ATTR_OBJECT)
    operation = (envelope.operation if envelope else None) or _attribute(attributes, ATTR_OPERATION)
    match_key = (envelope.matchKey if envelope else None) or _attribute(attributes, ATTR_MATCH_KEY)
    if obj is None and operation is None and default is not None:
        return default if match_key is None else default.model_copy(update={"match_key": match_key})
    if obj is None or operation is None:
        raise ContractError(
            TARGET_MISSING,
            "the message names no target: give object and operation in the body, in the message "
            f"attributes {ATTR_OBJECT}/{ATTR_OPERATION}, or set STREAM_DEFAULT_TARGET on the writer",
        )
    try:
        return Target.model_validate({"object": obj, "operation": operation, "match_key": match_key})
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "target"
        raise ContractError(CONTRACT_INVALID, f"{where}: {first['msg']}") from None


def parse_message(
    body: str, attributes: Mapping[str, Any] | None = None, *, default: Target | None = None
) -> ParsedMessage:
    """Read one message body into its target and records; ContractError when it is unusable as a whole.

    Records with a bad shape are kept aside in ``problems`` so the rest of the message still lands.
    """
    attributes = attributes or {}
    try:
        document = json.loads(body)
    except (ValueError, TypeError) as exc:
        raise ContractError(MALFORMED_JSON, f"the body is not JSON ({exc})") from None
    envelope: _Envelope | None = None
    raw: list[Any]
    if (
        isinstance(document, dict)
        and ("record" in document or "records" in document)
        and document.keys() <= _ENVELOPE_KEYS
    ):
        try:
            envelope = _Envelope.model_validate(document)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ContractError(CONTRACT_INVALID, f"{where}: {first['msg']}") from None
        if (envelope.record is None) == (envelope.records is None):
            raise ContractError(CONTRACT_INVALID, "give either record or records, not both")
        raw = envelope.records if envelope.records is not None else [envelope.record]
    elif isinstance(document, list):
        if not 1 <= len(document) <= BATCH_MAX_RECORDS:
            raise ContractError(
                CONTRACT_INVALID, f"a list body holds 1 to {BATCH_MAX_RECORDS} records, got {len(document)}"
            )
        raw = document
    else:
        raw = [document]
    target = _target(envelope, attributes, default)
    parsed = ParsedMessage(target, [])
    for index, record in enumerate(raw):
        problem = record_problem(record)
        if problem is None:
            parsed.records.append(record)
        else:
            parsed.problems.append(RecordProblem(index, RECORD_INVALID, problem, record))
    return parsed


def envelope(target: Target, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The envelope body for ``records`` (what the producer and the dead-letter queue send).

    >>> envelope(Target.parse("contacts:upsert:email"), [{"email": "a@example.com"}])
    {'object': 'contacts', 'operation': 'upsert', 'matchKey': 'email', 'records': [{'email': 'a@example.com'}]}
    """
    body: dict[str, Any] = {"object": target.object, "operation": target.operation}
    if target.match_key:
        body["matchKey"] = target.match_key
    body["records"] = records
    return body
