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
import re
from collections.abc import Callable, Mapping
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
OBJECT_NAME_INVALID = "STREAM.OBJECT_NAME_INVALID"
RECORD_INVALID = "STREAM.RECORD_INVALID"
TOO_MANY_FIELDS = "STREAM.TOO_MANY_FIELDS"
INVALID_STRING = "STREAM.INVALID_STRING"
NUMBER_OUT_OF_RANGE = "STREAM.NUMBER_OUT_OF_RANGE"
TOO_DEEP = "STREAM.TOO_DEEP"
RECORD_TOO_LARGE = "STREAM.RECORD_TOO_LARGE"
INTERNAL_ERROR = "STREAM.INTERNAL_ERROR"

# Per-record limits of the stream path (docs/streams.md, "Limits per record"). The API documents 500
# fields; depth, integer range and size are ours: no CDP field nests, 64-bit integers are what every
# JSON consumer downstream can hold, and a record must fit in one 256 KiB SQS message to be replayable.
RECORD_MAX_DEPTH = 32  # the record itself is level 1
RECORD_INT_MIN = -(2**63)
RECORD_INT_MAX = 2**63 - 1
RECORD_MAX_BYTES = 255 * 1024
# Object names: one safe path segment (no ".", "..", "/", spaces or control characters).
OBJECT_NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}"
_OBJECT_NAME = re.compile(OBJECT_NAME_PATTERN)
# Bodies nested deeper than this (from the body's root) are cut before parsing (see _cut_deep).
_PARSE_MAX_DEPTH = 100
_CUT_MARK = "\x00experiture:cut:"
# Skips text and whole strings up to the next run of brackets (group 1) or the end: one step per run.
# Possessive (no backtracking) and always matching, so any body is scanned in linear time.
_BRACKETS = re.compile(r'(?:[^"\[\]{}]++|"(?:[^"\\]++|\\.)*+(?:"|\\?\Z))*+(?:([\[{]+|[\]}]+)|\Z)')
# A run of 19+ digits may be an integer beyond 64 bits; only then are the values walked.
_LONG_DIGITS = re.compile(rb"\d{19,}")


class ContractError(Exception):
    """A message (or one record of it) that can never be written as sent: it is dead-lettered."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Target(BaseModel):
    """Where records go: an object, an operation, and the match key of an upsert."""

    model_config = ConfigDict(frozen=True)

    object: str = Field(min_length=1, max_length=255)
    operation: Operation
    match_key: str | None = Field(default=None, min_length=1)

    @field_validator("object")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _OBJECT_NAME.fullmatch(value):
            raise ValueError(
                f"object name {value!r} must match {OBJECT_NAME_PATTERN} (letters, digits, _ . -; "
                "not starting with a dot)"
            )
        return value

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
    """A message's target, its good records (in order, with their bytes and indices in the message),
    the records refused on their own, and the parts of a too-deep body cut before parsing."""

    target: Target
    records: list[dict[str, Any]]
    problems: list[RecordProblem] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    cuts: list[str] = field(default_factory=list)


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


def _strict_encoder() -> Callable[[Any], str]:
    """Compact, UTF-8 as is, no NaN: the client's ``encode_json`` bytes, refusing what JSON cannot hold.

    Built once (``json.dumps`` with options builds an encoder per call, a third of the cost here).
    """
    from json import encoder

    c_make_encoder = getattr(encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # a Python without the C accelerator
        return json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    make = c_make_encoder(
        None, _not_serializable, encoder.encode_basestring, None, ":", ",", False, False, False
    )
    return lambda value: "".join(make(value, 0))


_encode = _strict_encoder()


class RecordError(ValueError):
    """One record that breaks a per-record limit: ``code`` and a one-line message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode_record(
    record: Any,
    *,
    max_fields: int = RECORD_MAX_FIELDS,
    max_bytes: int = RECORD_MAX_BYTES,
    long_ints: bool | None = None,
) -> bytes:
    """The exact bytes a record is sent as; RecordError when it breaks a per-record limit.

    Costs one encoding on the common path: values are walked only when the bytes show nesting or
    the record may hold an integer of 19+ digits (``long_ints``: known from parsing; None: look).

    >>> encode_record({"email": "a@example.com", "n": 1})
    b'{"email":"a@example.com","n":1}'
    >>> def code(record):
    ...     try:
    ...         return encode_record(record)
    ...     except RecordError as exc:
    ...         return exc.code
    >>> [code(r) for r in ({}, {"s": "\\ud800"}, {"n": 10**30}, {"x": float("nan")}, {"a": [[[1]]]})]
    ['STREAM.RECORD_INVALID', 'STREAM.INVALID_STRING', 'STREAM.NUMBER_OUT_OF_RANGE', 'STREAM.NUMBER_OUT_OF_RANGE', b'{"a":[[[1]]]}']
    """
    if not isinstance(record, dict):
        raise RecordError(RECORD_INVALID, f"a record must be a JSON object, got {type(record).__name__}")
    if not record:
        raise RecordError(RECORD_INVALID, "a record must have at least one property")
    if len(record) > max_fields:
        raise RecordError(
            TOO_MANY_FIELDS, f"a record has at most {max_fields} fields, this one has {len(record)}"
        )
    try:
        encoded = _encode(record).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RecordError(
            INVALID_STRING,
            f"a string holds {exc.object[exc.start : exc.end]!a}, which is not valid Unicode text",
        ) from None
    except ValueError:
        raise RecordError(
            NUMBER_OUT_OF_RANGE, "a number is NaN or infinite (or too large for a float)"
        ) from None
    except RecursionError:
        raise RecordError(TOO_DEEP, f"values nest deeper than {RECORD_MAX_DEPTH} levels") from None
    if len(encoded) > max_bytes:
        raise RecordError(RECORD_TOO_LARGE, f"a record is {len(encoded)} bytes; the limit is {max_bytes}")
    if long_ints is None:
        long_ints = _LONG_DIGITS.search(encoded) is not None
    if long_ints or encoded.count(b"{") > 1 or b"[" in encoded:
        _walk(record, 1)
    return encoded


def _walk(value: Any, depth: int) -> None:
    if isinstance(value, dict | list):
        if depth > RECORD_MAX_DEPTH:
            raise RecordError(TOO_DEEP, f"values nest deeper than {RECORD_MAX_DEPTH} levels")
        for item in value.values() if isinstance(value, dict) else value:
            _walk(item, depth + 1)
    elif (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not RECORD_INT_MIN <= value <= RECORD_INT_MAX
    ):
        raise RecordError(
            NUMBER_OUT_OF_RANGE,
            f"an integer of {len(str(abs(value)))} digits is outside the 64-bit range "
            f"[{RECORD_INT_MIN}, {RECORD_INT_MAX}]",
        )


def _cut_deep(body: str) -> tuple[str, list[str]]:
    """``body`` with every value nested deeper than the parser can go replaced by a marker string,
    and the cut texts (marker ``i`` stands for ``cuts[i]``), so the rest of the message still parses.

    Strings are skipped whole; runs of brackets are counted at once, so a 5,000-deep value costs two
    steps, not 10,000.

    >>> text, cuts = _cut_deep('[1, "[[", ' + "[" * 150 + "]" * 150 + "]")
    >>> len(json.loads(text)), [len(cut) for cut in cuts]
    (3, [102])
    """
    out: list[str] = []
    cuts: list[str] = []
    depth = 0
    last = 0
    start: int | None = None
    limit = _PARSE_MAX_DEPTH
    for token in _BRACKETS.finditer(body):
        run, at = token.group(1), token.start(1)
        if not run:
            break
        if run[0] in "[{":
            if start is None and depth <= limit < depth + len(run):
                start = at + (limit - depth)
            depth += len(run)
        else:
            if start is not None and depth - len(run) <= limit:
                end = at + (depth - limit)
                out.append(body[last:start])
                out.append(json.dumps(f"{_CUT_MARK}{len(cuts)}"))
                cuts.append(body[start:end])
                last, start = end, None
            depth -= len(run)
    out.append(body[last:])
    return "".join(out), cuts


def restore_cuts(text: str, cuts: list[str]) -> str:
    """A JSON text with the markers of :func:`_cut_deep` put back as the original values."""
    for i, cut in enumerate(cuts):
        text = text.replace(json.dumps(f"{_CUT_MARK}{i}"), cut)
    return text


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
    if obj is not None and not _OBJECT_NAME.fullmatch(obj):
        raise ContractError(
            OBJECT_NAME_INVALID,
            f"object name {obj!a} must match {OBJECT_NAME_PATTERN} (letters, digits, _ . -; not starting with a dot)",
        )
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
    body: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    default: Target | None = None,
    max_fields: int = RECORD_MAX_FIELDS,
    max_bytes: int = RECORD_MAX_BYTES,
) -> ParsedMessage:
    """Read one message body into its target and records; ContractError when it is unusable as a whole.

    Records that break a per-record limit are kept aside in ``problems`` so the rest still lands.
    """
    attributes = attributes or {}
    cuts: list[str] = []
    long_ints: list[str] = []

    def parse_int(text: str) -> int:
        if len(text) > 18:  # 19+ characters: maybe outside 64 bits; its records get walked
            long_ints.append(text)
        return int(text)

    try:
        try:
            document = json.loads(body, parse_int=parse_int)
        except RecursionError:
            # Too deep for the parser: cut the deep values out, so the other records still parse.
            text, cuts = _cut_deep(body)
            document = json.loads(text, parse_int=parse_int)
    except (ValueError, TypeError, RecursionError) as exc:
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
    parsed = ParsedMessage(target, [], cuts=cuts)
    for index, record in enumerate(raw):
        try:
            # Only a message that holds a long integer somewhere has its records looked at for one.
            encoded = encode_record(
                record, max_fields=max_fields, max_bytes=max_bytes, long_ints=None if long_ints else False
            )
        except RecordError as exc:
            parsed.problems.append(RecordProblem(index, exc.code, exc.message, record))
            continue
        parsed.records.append(record)
        parsed.encoded.append(encoded)
        parsed.indices.append(index)
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
