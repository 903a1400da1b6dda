"""Sending to SQS in batches: at most 10 entries and a bounded payload per SendMessageBatch call.

>>> [len(chunk) for chunk in chunk_entries([{"Id": str(i), "MessageBody": "x" * 100} for i in range(25)])]
[10, 10, 5]
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

SQS_BATCH_ENTRIES = 10
# SQS's classic message and batch payload cap (256 KiB). Newer queues accept 1 MiB; staying under the
# classic cap works on every queue.
SQS_MAX_PAYLOAD_BYTES = 256 * 1024
_RESENDS = 3
# The characters SQS accepts in a body or attribute value; anything else is refused with the request.
_NOT_SQS_TEXT = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def sqs_text(value: str) -> str:
    r"""``value`` with every character SQS refuses written as ``\uXXXX`` (lone surrogates included).

    >>> sqs_text("ok \x01 \ud800")
    'ok \\u0001 \\ud800'
    """
    return _NOT_SQS_TEXT.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


def is_sqs_text(value: str) -> bool:
    return _NOT_SQS_TEXT.search(value) is None


class SqsSendError(Exception):
    """Some messages could not be sent to a queue; the message names the queue and the reasons.

    ``sent_ids``: the entries of the failing call that SQS did accept.
    """

    def __init__(self, message: str, sent_ids: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.sent_ids = sent_ids


def entry_size(entry: SendMessageBatchRequestEntryTypeDef) -> int:
    """The bytes SQS counts for an entry: its body plus attribute names, types and values."""
    size = len(entry["MessageBody"].encode())
    for name, value in entry.get("MessageAttributes", {}).items():
        size += len(name.encode()) + len(value["DataType"].encode())
        size += len(str(value.get("StringValue", "")).encode())
    return size


def chunk_entries(
    entries: Sequence[SendMessageBatchRequestEntryTypeDef], max_bytes: int = SQS_MAX_PAYLOAD_BYTES
) -> Iterator[list[SendMessageBatchRequestEntryTypeDef]]:
    chunk: list[SendMessageBatchRequestEntryTypeDef] = []
    size = 0
    for entry in entries:
        this = entry_size(entry)
        if chunk and (len(chunk) == SQS_BATCH_ENTRIES or size + this > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += this
    if chunk:
        yield chunk


def send_entries(
    sqs: SQSClient, queue_url: str, entries: Sequence[SendMessageBatchRequestEntryTypeDef]
) -> int:
    """Send every entry (ids unique within ``entries``); resend entries SQS failed on its side.

    Raises SqsSendError when an entry is refused (sender fault) or keeps failing.
    """
    sent = 0
    for chunk in chunk_entries(entries):
        pending = chunk
        accepted: set[str] = set()
        for _ in range(_RESENDS):
            answer: Any = sqs.send_message_batch(QueueUrl=queue_url, Entries=pending)
            sent += len(answer.get("Successful", []))
            accepted.update(s["Id"] for s in answer.get("Successful", []))
            failed = answer.get("Failed", [])
            if not failed:
                pending = []
                break
            refused = [f for f in failed if f.get("SenderFault")]
            if refused:
                reasons = "; ".join(f"{f['Id']}: {f.get('Code')} {f.get('Message', '')}" for f in refused)
                raise SqsSendError(f"SQS refused messages for {queue_url}: {reasons}", frozenset(accepted))
            ids = {f["Id"] for f in failed}
            pending = [e for e in pending if e["Id"] in ids]
        if pending:
            raise SqsSendError(
                f"SQS kept failing {len(pending)} messages for {queue_url}", frozenset(accepted)
            )
    return sent


def string_attributes(values: dict[str, str | None]) -> dict[str, Any]:
    """SQS message attributes from plain strings (empty values left out)."""
    return {
        name: {"DataType": "String", "StringValue": sqs_text(value)}
        for name, value in values.items()
        if value
    }


def is_fifo(queue_url: str) -> bool:
    return queue_url.endswith(".fifo")
