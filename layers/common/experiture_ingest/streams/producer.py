"""Send records to the record queue in the message contract, packed into few messages.

Records are packed into envelope messages up to SQS's message size (measured, with the same
incremental sizing as the writer) and sent ten messages a call.

>>> target = Target.parse("contacts:upsert:email")
>>> bodies = list(message_bodies(target, [{"email": f"{i}@example.com"} for i in range(1000)], max_bytes=4096))
>>> len(bodies), all(len(b.encode()) <= 4096 for b in bodies)
(7, True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from experiture_ingest.client import encode_json
from experiture_ingest.limits import BATCH_MAX_RECORDS
from experiture_ingest.streams.contract import RecordError, Target, encode_record, envelope
from experiture_ingest.streams.sqs import (
    SQS_MAX_PAYLOAD_BYTES,
    SqsSendError,
    chunk_entries,
    is_fifo,
    send_entries,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef


class ProducerError(ValueError):
    """A record that cannot be sent in the contract (the message says which and why)."""


class PartlySentError(SqsSendError):
    """Sending stopped partway. ``out_of_order``: records SQS took from the failing call beyond the
    last record reported to ``on_queued`` (they would be queued twice by a resume after that record)."""

    def __init__(self, cause: SqsSendError, out_of_order: int) -> None:
        super().__init__(str(cause), cause.sent_ids)
        self.out_of_order = out_of_order


def message_bodies(
    target: Target,
    records: Iterable[Mapping[str, Any]],
    *,
    max_bytes: int = SQS_MAX_PAYLOAD_BYTES,
    max_records: int = BATCH_MAX_RECORDS,
) -> Iterator[str]:
    """Envelope bodies holding ``records`` in order, each at most ``max_bytes`` and ``max_records``."""
    for body, _ in counted_bodies(target, records, max_bytes=max_bytes, max_records=max_records):
        yield body


def counted_bodies(
    target: Target,
    records: Iterable[Mapping[str, Any]],
    *,
    max_bytes: int = SQS_MAX_PAYLOAD_BYTES,
    max_records: int = BATCH_MAX_RECORDS,
) -> Iterator[tuple[str, int]]:
    """Like :func:`message_bodies`, with the number of records in each body."""
    head = encode_json(envelope(target, []))[:-2]  # ...,"records":[  (without the closing "]}")
    budget = max_bytes - len(head) - 2
    parts: list[bytes] = []
    size = 0
    for number, record in enumerate(records, start=1):
        try:
            encoded = encode_record(record)
        except RecordError as exc:
            raise ProducerError(f"record {number}: {exc.message} ({exc.code})") from None
        if len(encoded) > budget:
            raise ProducerError(
                f"record {number} is {len(encoded)} bytes; one message holds at most {budget} bytes of records"
            )
        extra = len(encoded) + (1 if parts else 0)
        if parts and (size + extra > budget or len(parts) >= max_records):
            yield (head + b",".join(parts) + b"]}").decode(), len(parts)
            parts, size, extra = [], 0, len(encoded)
        parts.append(encoded)
        size += extra
    if parts:
        yield (head + b",".join(parts) + b"]}").decode(), len(parts)


def send_records(
    sqs: SQSClient,
    queue_url: str,
    target: Target,
    records: Iterable[Mapping[str, Any]],
    *,
    group_id: str | None = None,
    max_message_bytes: int = SQS_MAX_PAYLOAD_BYTES,
    on_queued: Callable[[int], None] | None = None,
) -> int:
    """Send ``records`` to ``queue_url`` for ``target``; returns the number of messages sent.

    FIFO queues need ``group_id`` (records of one group are written in order); the deduplication
    id is the body's hash, so sending the same records twice within five minutes sends them once.
    ``on_queued(n)`` is called after each SendMessageBatch with the records it queued.
    """
    fifo = is_fifo(queue_url)
    if fifo and not group_id:
        raise ProducerError("a FIFO queue needs a message group id")
    sent = 0
    batch: list[SendMessageBatchRequestEntryTypeDef] = []
    counts: dict[str, int] = {}

    def flush() -> int:
        done = 0
        for chunk in chunk_entries(batch):  # one SendMessageBatch each: report exactly what was queued
            try:
                done += send_entries(sqs, queue_url, chunk)
            except SqsSendError as exc:
                prefix = 0
                for entry in chunk:
                    if entry["Id"] not in exc.sent_ids:
                        break
                    prefix += 1
                if on_queued is not None and prefix:
                    on_queued(sum(counts[e["Id"]] for e in chunk[:prefix]))
                later = sum(counts[e["Id"]] for e in chunk[prefix:] if e["Id"] in exc.sent_ids)
                raise PartlySentError(exc, later) from exc
            if on_queued is not None:
                on_queued(sum(counts[e["Id"]] for e in chunk))
        return done

    for body, count in counted_bodies(target, records, max_bytes=max_message_bytes):
        entry: SendMessageBatchRequestEntryTypeDef = {"Id": str(len(batch)), "MessageBody": body}
        if fifo and group_id:
            entry["MessageGroupId"] = group_id
            entry["MessageDeduplicationId"] = hashlib.sha256(body.encode()).hexdigest()
        batch.append(entry)
        counts[entry["Id"]] = count
        if len(batch) == 10:
            sent += flush()
            batch, counts = [], {}
    if batch:
        sent += flush()
    return sent
