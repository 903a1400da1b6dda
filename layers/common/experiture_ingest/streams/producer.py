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
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from experiture_ingest.client import encode_json
from experiture_ingest.limits import BATCH_MAX_RECORDS
from experiture_ingest.streams.contract import Target, envelope, record_problem
from experiture_ingest.streams.sqs import SQS_MAX_PAYLOAD_BYTES, is_fifo, send_entries

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef


class ProducerError(ValueError):
    """A record that cannot be sent in the contract (the message says which and why)."""


def message_bodies(
    target: Target,
    records: Iterable[Mapping[str, Any]],
    *,
    max_bytes: int = SQS_MAX_PAYLOAD_BYTES,
    max_records: int = BATCH_MAX_RECORDS,
) -> Iterator[str]:
    """Envelope bodies holding ``records`` in order, each at most ``max_bytes`` and ``max_records``."""
    head = encode_json(envelope(target, []))[:-2]  # ...,"records":[  (without the closing "]}")
    budget = max_bytes - len(head) - 2
    parts: list[bytes] = []
    size = 0
    for number, record in enumerate(records, start=1):
        problem = record_problem(record)
        if problem is not None:
            raise ProducerError(f"record {number}: {problem}")
        encoded = encode_json(record)
        if len(encoded) > budget:
            raise ProducerError(
                f"record {number} is {len(encoded)} bytes; one message holds at most {budget} bytes of records"
            )
        extra = len(encoded) + (1 if parts else 0)
        if parts and (size + extra > budget or len(parts) >= max_records):
            yield (head + b",".join(parts) + b"]}").decode()
            parts, size, extra = [], 0, len(encoded)
        parts.append(encoded)
        size += extra
    if parts:
        yield (head + b",".join(parts) + b"]}").decode()


def send_records(
    sqs: SQSClient,
    queue_url: str,
    target: Target,
    records: Iterable[Mapping[str, Any]],
    *,
    group_id: str | None = None,
    max_message_bytes: int = SQS_MAX_PAYLOAD_BYTES,
) -> int:
    """Send ``records`` to ``queue_url`` for ``target``; returns the number of messages sent.

    FIFO queues need ``group_id`` (records of one group are written in order); the deduplication
    id is the body's hash, so sending the same records twice within five minutes sends them once.
    """
    fifo = is_fifo(queue_url)
    if fifo and not group_id:
        raise ProducerError("a FIFO queue needs a message group id")
    sent = 0
    batch: list[SendMessageBatchRequestEntryTypeDef] = []
    for body in message_bodies(target, records, max_bytes=max_message_bytes):
        entry: SendMessageBatchRequestEntryTypeDef = {"Id": str(len(batch)), "MessageBody": body}
        if fifo and group_id:
            entry["MessageGroupId"] = group_id
            entry["MessageDeduplicationId"] = hashlib.sha256(body.encode()).hexdigest()
        batch.append(entry)
        if len(batch) == 10:
            sent += send_entries(sqs, queue_url, batch)
            batch = []
    if batch:
        sent += send_entries(sqs, queue_url, batch)
    return sent
