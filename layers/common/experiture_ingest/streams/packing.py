"""Pack staged messages into as few batch requests as the documented limits allow.

A message is the unit of retry (SQS redelivers whole messages), so its records are never split
across requests: a transient failure then never re-writes half a message. Within a group
(object, operation, matchKey) messages keep their order, and requests are filled greedily, which is
optimal for an ordered sequence of indivisible items under additive limits (records and bytes).

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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from experiture_ingest.client import encode_json
from experiture_ingest.client.idempotency import derived_key
from experiture_ingest.limits import BATCH_MAX_BYTES, BATCH_MAX_RECORDS
from experiture_ingest.streams.contract import Target

# Idempotency keys are UUIDs (as the API documents) derived by name from the request's content.


@dataclass
class StagedMessage:
    """A message's valid records, encoded once; ``position`` is its place in the SQS batch."""

    message_id: str
    position: int
    target: Target
    records: list[dict[str, Any]]
    encoded: list[bytes]
    group_id: str | None = None

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

    @property
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
        )


def _envelope_parts(target: Target) -> tuple[bytes, bytes]:
    suffix = b"]}"
    if target.operation == "upsert" and target.match_key:
        suffix = b'],"matchKey":' + encode_json(target.match_key) + b"}"
    return b'{"records":[', suffix


def request_overhead(target: Target) -> int:
    """Bytes of a request body around its records: ``{"records":[`` ... ``]`` and the matchKey."""
    prefix, suffix = _envelope_parts(target)
    return len(prefix) + len(suffix)


@dataclass
class PackedRequest:
    """One append-batch or upsert-batch request: its target and the whole messages it carries."""

    target: Target
    messages: list[StagedMessage] = field(default_factory=list)
    record_count: int = 0
    size: int = 0  # bytes of the body, kept up to date as messages are added

    @classmethod
    def build(cls, target: Target, messages: Iterable[StagedMessage] = ()) -> PackedRequest:
        request = cls(target, size=request_overhead(target))
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
        """The exact request body: equal to ``encode_json({"records": [...], "matchKey": ...})``."""
        prefix, suffix = _envelope_parts(self.target)
        return prefix + b",".join(e for m in self.messages for e in m.encoded) + suffix

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


def pack(
    messages: Iterable[StagedMessage],
    *,
    max_records: int = BATCH_MAX_RECORDS,
    max_bytes: int = BATCH_MAX_BYTES,
    contiguous: bool = False,
) -> list[PackedRequest]:
    """Requests for ``messages``: grouped by target (in order of first appearance), order kept.

    ``contiguous`` (FIFO queues): only consecutive messages of the same target share a request, so
    requests follow the batch's order and sending can stop at the first failure.
    """
    requests: list[PackedRequest] = []
    open_by_target: dict[Target, PackedRequest] = {}
    for message in messages:
        if not message.records:
            continue
        current = open_by_target.get(message.target)
        if contiguous and requests and requests[-1] is not current:
            current = None
        if current is None or not current.fits(message, max_records, max_bytes):
            current = PackedRequest.build(message.target)
            open_by_target[message.target] = current
            requests.append(current)
        current.add(message)
    return requests


def split(request: PackedRequest) -> tuple[PackedRequest, PackedRequest]:
    """Two halves of a request by message (for bisecting a refusal that names no record)."""
    half = len(request.messages) // 2
    return (
        PackedRequest.build(request.target, request.messages[:half]),
        PackedRequest.build(request.target, request.messages[half:]),
    )


def replace_message(request: PackedRequest, old: StagedMessage, new: StagedMessage | None) -> PackedRequest:
    """The same request with ``old`` replaced by ``new`` (or dropped when None or empty)."""
    kept: list[StagedMessage] = []
    for message in request.messages:
        if message is not old:
            kept.append(message)
        elif new is not None and new.records:
            kept.append(new)
    return PackedRequest.build(request.target, kept)
