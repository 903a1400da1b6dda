"""Pack staged messages into as few batch requests as the documented limits allow.

A message is the unit of retry (SQS redelivers whole messages), so its records are never split
across requests: a transient failure then never re-writes half a message. Within a group
(object, operation, matchKey) messages keep their order, and requests are filled greedily, which is
optimal for an ordered sequence of indivisible items under additive limits (records and bytes).

FIFO queues add an order per message group. :func:`fifo_waves` cuts each group's messages into
runs of one target that fit one request; run *k* of every group goes in wave *k*. The requests of
one wave are independent (each group has at most one run in it), so they may be sent at once; a
wave starts only after the one before it, and a group whose run failed takes no part in later waves.

Sizes are measured, not guessed: each record is encoded once with the client's ``encode_json`` (the
exact bytes sent) and the request body is assembled from those bytes, so the size of a request is
known as records are added without serializing the batch again.

>>> from experiture_ingest.streams.contract import Target
>>> t = Target.parse("contacts:upsert:email")
>>> staged = [StagedMessage.of(f"m{i}", i, t, [{"email": f"{i}@example.com"}] * 3) for i in range(5)]
>>> [len(r.messages) for r in pack(staged, max_records=7)]
[2, 2, 1]
>>> import json
>>> json.loads(pack(staged)[0].body())["matchKey"]
'email'
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from experiture_ingest.client import encode_json
from experiture_ingest.client.idempotency import derived_key
from experiture_ingest.limits import BATCH_MAX_BYTES, BATCH_MAX_RECORDS
from experiture_ingest.streams.contract import Target

# Idempotency keys are UUIDs (as the API documents) derived by name from the request's content.


Frame = tuple[bytes, bytes]


def records_frame(target: Target) -> Frame:
    """``{"records":[`` ... ``]}`` (with ``"matchKey"`` on an upsert): the default request body."""
    suffix = b"]}"
    if target.operation == "upsert" and target.match_key:
        suffix = b'],"matchKey":' + encode_json(target.match_key) + b"}"
    return b'{"records":[', suffix


@dataclass
class StagedMessage:
    """A message's valid records, encoded once; ``position`` is its place in the SQS batch and
    ``indices`` each record's place in the message (for a dead letter's ``recordIndex``)."""

    message_id: str
    position: int
    target: Target
    records: list[dict[str, Any]]
    encoded: list[bytes]
    group_id: str | None = None
    indices: list[int] = field(default_factory=list)
    # A message larger than one request of the destination goes out in parts (see split_to_fit);
    # each part is tracked in the ledger under its own key.
    part: int = 0
    ledger_key: str = ""

    def __post_init__(self) -> None:
        if not self.indices:
            self.indices = list(range(len(self.records)))

    @classmethod
    def of(
        cls,
        message_id: str,
        position: int,
        target: Target,
        records: list[dict[str, Any]],
        group_id: str | None = None,
    ) -> StagedMessage:
        return cls(message_id, position, target, records, [encode_json(r) for r in records], group_id)

    @cached_property
    def size(self) -> int:
        """Bytes this message adds to a request body's record list (records and their commas)."""
        return sum(len(e) for e in self.encoded) + len(self.encoded) - 1 if self.encoded else 0

    def without(self, *indices: int) -> StagedMessage:
        """A copy without the records at ``indices`` (after the API or a fresh schema refused them)."""
        drop = set(indices)
        keep = [i for i in range(len(self.records)) if i not in drop]
        return StagedMessage(
            self.message_id,
            self.position,
            self.target,
            [self.records[i] for i in keep],
            [self.encoded[i] for i in keep],
            self.group_id,
            [self.indices[i] for i in keep],
            self.part,
            self.ledger_key,
        )


@dataclass
class PackedRequest:
    """One batch request: its target, its body's frame and the whole messages it carries."""

    target: Target
    frame: Frame
    messages: list[StagedMessage] = field(default_factory=list)
    record_count: int = 0
    size: int = 0  # bytes of the body, kept up to date as messages are added

    @classmethod
    def build(
        cls, target: Target, messages: Iterable[StagedMessage] = (), frame: Frame | None = None
    ) -> PackedRequest:
        frame = frame or records_frame(target)
        request = cls(target, frame, size=len(frame[0]) + len(frame[1]))
        for message in messages:
            request.add(message)
        return request

    def fits(self, message: StagedMessage, max_records: int, max_bytes: int) -> bool:
        comma = 1 if self.record_count else 0
        return (
            self.record_count + len(message.records) <= max_records
            and self.size + comma + message.size <= max_bytes
        )

    def add(self, message: StagedMessage) -> None:
        if not message.records:
            return
        self.size += message.size + (1 if self.record_count else 0)
        self.record_count += len(message.records)
        self.messages.append(message)

    def body(self) -> bytes:
        """The exact request body (by default ``encode_json({"records": [...], "matchKey": ...})``)."""
        prefix, suffix = self.frame
        return prefix + b",".join(e for m in self.messages for e in m.encoded) + suffix

    def fits_alone(self, messages: list[StagedMessage], max_records: int, max_bytes: int) -> bool:
        """Whether this (empty) request could take all of ``messages``."""
        records = sum(len(m.records) for m in messages)
        size = self.size + sum(m.size for m in messages) + max(0, sum(1 for m in messages if m.records) - 1)
        return records <= max_records and size <= max_bytes

    @property
    def idempotency_key(self) -> str:
        """Derived from the target, the message ids and every record's bytes: a redelivered batch
        packs into the same requests and so replays them; different content never reuses a key."""
        digest = hashlib.sha256(str(self.target).encode())
        for message in self.messages:
            digest.update(b"\x00" + message.message_id.encode() + b"\x00")
            for encoded in message.encoded:
                digest.update(hashlib.sha256(encoded).digest())
        return derived_key(digest.digest())

    def record_location(self, index: int) -> tuple[StagedMessage, int] | None:
        """Which message holds record ``index`` of this request, and where in it."""
        for message in self.messages:
            if index < len(message.records):
                return message, index
            index -= len(message.records)
        return None


def split_to_fit(
    message: StagedMessage, *, max_records: int, max_bytes: int, frame: Frame
) -> list[StagedMessage]:
    """``message`` as parts that each fit one request (itself, when it fits), records in order.

    >>> from experiture_ingest.streams.contract import Target
    >>> big = StagedMessage.of("m1", 0, Target.parse("c:append"), [{"a": i} for i in range(7)])
    >>> [(p.part, len(p.records), p.indices[0]) for p in split_to_fit(big, max_records=3, max_bytes=99, frame=(b"[", b"]"))]
    [(0, 3, 0), (1, 3, 3), (2, 1, 6)]
    """
    overhead = len(frame[0]) + len(frame[1])
    if len(message.records) <= max_records and overhead + message.size <= max_bytes:
        return [message]
    parts: list[StagedMessage] = []
    start, size = 0, overhead
    for i, encoded in enumerate(message.encoded):
        extra = len(encoded) + (1 if i > start else 0)
        if i > start and (i - start >= max_records or size + extra > max_bytes):
            parts.append(_part(message, start, i, len(parts)))
            start, size, extra = i, overhead, len(encoded)
        size += extra
    parts.append(_part(message, start, len(message.encoded), len(parts)))
    return parts


def _part(message: StagedMessage, start: int, end: int, number: int) -> StagedMessage:
    return StagedMessage(
        message.message_id,
        message.position,
        message.target,
        message.records[start:end],
        message.encoded[start:end],
        message.group_id,
        message.indices[start:end],
        number,
    )


def pack(
    messages: Iterable[StagedMessage],
    *,
    max_records: int = BATCH_MAX_RECORDS,
    max_bytes: int = BATCH_MAX_BYTES,
    contiguous: bool = False,
    frame: Callable[[Target], Frame] = records_frame,
) -> list[PackedRequest]:
    """Requests for ``messages``: grouped by target (in order of first appearance), order kept.

    ``contiguous``: only consecutive messages of the same target share a request.
    """
    return pack_units(
        [[m] for m in messages],
        max_records=max_records,
        max_bytes=max_bytes,
        contiguous=contiguous,
        frame=frame,
    )


def pack_units(
    units: Iterable[list[StagedMessage]],
    *,
    max_records: int = BATCH_MAX_RECORDS,
    max_bytes: int = BATCH_MAX_BYTES,
    contiguous: bool = False,
    frame: Callable[[Target], Frame] = records_frame,
) -> list[PackedRequest]:
    """Like :func:`pack`, for units of messages of one target that must share a request."""
    requests: list[PackedRequest] = []
    open_by_target: dict[Target, PackedRequest] = {}
    for given in units:
        unit = [m for m in given if m.records]
        if not unit:
            continue
        target = unit[0].target
        current = open_by_target.get(target)
        if contiguous and requests and requests[-1] is not current:
            current = None
        if current is None or not _fits(current, unit, max_records, max_bytes):
            current = PackedRequest.build(target, frame=frame(target))
            open_by_target[target] = current
            requests.append(current)
        for message in unit:
            current.add(message)
    return requests


def _fits(request: PackedRequest, unit: list[StagedMessage], max_records: int, max_bytes: int) -> bool:
    records = request.record_count + sum(len(m.records) for m in unit)
    size = request.size + sum(m.size + 1 for m in unit) - (0 if request.record_count else 1)
    return records <= max_records and size <= max_bytes


def fifo_waves(
    messages: Iterable[StagedMessage],
    *,
    max_records: int = BATCH_MAX_RECORDS,
    max_bytes: int = BATCH_MAX_BYTES,
    frame: Callable[[Target], Frame] = records_frame,
) -> list[list[list[StagedMessage]]]:
    """Per wave, the runs (one per group at most) that may be sent at once; see the module docstring.

    >>> from experiture_ingest.streams.contract import Target
    >>> c, e = Target.parse("contacts:append"), Target.parse("events:append")
    >>> ms = [StagedMessage.of("m1", 0, c, [{"a": 1}], "g1"), StagedMessage.of("m2", 1, e, [{"a": 2}], "g1"),
    ...       StagedMessage.of("m3", 2, c, [{"a": 3}], "g2")]
    >>> [[[m.message_id for m in run] for run in wave] for wave in fifo_waves(ms)]
    [[['m1'], ['m3']], [['m2']]]
    """
    waves: list[list[list[StagedMessage]]] = []
    runs: dict[str | None, tuple[int, list[StagedMessage]]] = {}
    for message in messages:
        if not message.records:
            continue
        level, run = runs.get(message.group_id, (-1, []))
        empty = PackedRequest.build(message.target, frame=frame(message.target))
        if (
            not run
            or run[0].target != message.target
            or not empty.fits_alone([*run, message], max_records, max_bytes)
        ):
            level, run = level + 1, []
            while len(waves) <= level:
                waves.append([])
            waves[level].append(run)
        run.append(message)
        runs[message.group_id] = (level, run)
    return waves


def split(request: PackedRequest) -> tuple[PackedRequest, PackedRequest]:
    """Two halves of a request by message (for bisecting a refusal that names no record)."""
    half = len(request.messages) // 2
    return (
        PackedRequest.build(request.target, request.messages[:half], request.frame),
        PackedRequest.build(request.target, request.messages[half:], request.frame),
    )


def replace_message(request: PackedRequest, old: StagedMessage, new: StagedMessage | None) -> PackedRequest:
    """The same request with ``old`` replaced by ``new`` (or dropped when None or empty)."""
    kept: list[StagedMessage] = []
    for message in request.messages:
        if message is not old:
            kept.append(message)
        elif new is not None and new.records:
            kept.append(new)
    return PackedRequest.build(request.target, kept, request.frame)
