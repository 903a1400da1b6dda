"""Dead letters: what could not be written goes to the DLQ at once, with its reason as attributes.

A dead letter's body is replayable as it stands: the envelope of the refused records (or the original
body when it could not be read). Its attributes say why (``experiture.errorCode``,
``experiture.errorMessage``, ``experiture.correlationId``) and where it came from
(``experiture.sourceMessageId``, ``experiture.recordIndex``, ``experiture.jobId``).

>>> letter = DeadLetter("{}", "STREAM.MALFORMED_JSON", "the body is not JSON", source_message_id="m-1")
>>> sorted(letter.attributes())
['experiture.errorCode', 'experiture.errorMessage', 'experiture.sourceMessageId']
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from experiture_ingest.streams.contract import ATTR_MATCH_KEY, ATTR_OBJECT, ATTR_OPERATION
from experiture_ingest.streams.sqs import is_fifo, send_entries, string_attributes

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

logger = logging.getLogger(__name__)

ATTR_ERROR_CODE = "experiture.errorCode"
ATTR_ERROR_MESSAGE = "experiture.errorMessage"
ATTR_CORRELATION_ID = "experiture.correlationId"
ATTR_SOURCE_MESSAGE_ID = "experiture.sourceMessageId"
ATTR_RECORD_INDEX = "experiture.recordIndex"
ATTR_JOB_ID = "experiture.jobId"
REASON_ATTRIBUTES = (
    ATTR_ERROR_CODE,
    ATTR_ERROR_MESSAGE,
    ATTR_CORRELATION_ID,
    ATTR_SOURCE_MESSAGE_ID,
    ATTR_RECORD_INDEX,
    ATTR_JOB_ID,
)
# The target attributes a bare-record body needs to be replayed.
TARGET_ATTRIBUTES = (ATTR_OBJECT, ATTR_OPERATION, ATTR_MATCH_KEY)
_MAX_REASON_CHARS = 1000


@dataclass(frozen=True)
class DeadLetter:
    """One message for the DLQ: a replayable body and the reason it could not be written."""

    body: str
    code: str
    reason: str
    correlation_id: str | None = None
    source_message_id: str | None = None
    record_index: int | None = None
    job_id: str | None = None
    group_id: str | None = None
    target_attributes: tuple[tuple[str, str], ...] = ()

    def attributes(self) -> dict[str, Any]:
        return string_attributes(
            {
                **dict(self.target_attributes),
                ATTR_ERROR_CODE: self.code,
                ATTR_ERROR_MESSAGE: self.reason[:_MAX_REASON_CHARS],
                ATTR_CORRELATION_ID: self.correlation_id,
                ATTR_SOURCE_MESSAGE_ID: self.source_message_id,
                ATTR_RECORD_INDEX: None if self.record_index is None else str(self.record_index),
                ATTR_JOB_ID: self.job_id,
            }
        )


class DeadLetterQueue:
    """Sends dead letters to one queue (FIFO queues get a group and a content-based dedup id)."""

    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self.queue_url = queue_url

    def send(self, letters: Sequence[DeadLetter]) -> int:
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        fifo = is_fifo(self.queue_url)
        for i, letter in enumerate(letters):
            entry: SendMessageBatchRequestEntryTypeDef = {
                "Id": str(i),
                "MessageBody": letter.body,
                "MessageAttributes": letter.attributes(),
            }
            if fifo:
                entry["MessageGroupId"] = letter.group_id or "dead-letters"
                seed = f"{letter.source_message_id}|{letter.record_index}|{letter.job_id}|{letter.body}"
                entry["MessageDeduplicationId"] = hashlib.sha256(seed.encode()).hexdigest()
            entries.append(entry)
        sent = send_entries(self._sqs, self.queue_url, entries)
        for letter in letters:
            logger.warning(
                "dead-lettered: %s %s",
                letter.code,
                letter.reason[:_MAX_REASON_CHARS],
                extra={
                    "source_message_id": letter.source_message_id,
                    "record_index": letter.record_index,
                    "correlation_id": letter.correlation_id,
                    "job_id": letter.job_id,
                },
            )
        return sent


@dataclass(frozen=True)
class ReplayResult:
    moved: int
    remaining_hint: int


def replay(
    sqs: SQSClient,
    dlq_url: str,
    source_url: str,
    *,
    limit: int | None = None,
    wait_seconds: int = 1,
) -> ReplayResult:
    """Move dead letters back to the source queue (after a fix), without their reason attributes.

    Each message is deleted from the DLQ only after the source queue accepted it, so a crash
    mid-replay duplicates at most the messages in flight and loses none.
    """
    moved = 0
    fifo = is_fifo(source_url)
    while limit is None or moved < limit:
        want = 10 if limit is None else max(1, min(10, limit - moved))
        answer: Any = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=want,
            WaitTimeSeconds=wait_seconds,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["MessageGroupId"],
            VisibilityTimeout=60,
        )
        messages = answer.get("Messages", [])
        if not messages:
            break
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        for i, message in enumerate(messages):
            attributes = {
                name: value
                for name, value in message.get("MessageAttributes", {}).items()
                if name not in REASON_ATTRIBUTES
            }
            entry: SendMessageBatchRequestEntryTypeDef = {
                "Id": str(i),
                "MessageBody": message["Body"],
                "MessageAttributes": attributes,
            }
            if fifo:
                entry["MessageGroupId"] = message.get("Attributes", {}).get("MessageGroupId", "replayed")
                entry["MessageDeduplicationId"] = message["MessageId"]
            entries.append(entry)
        send_entries(sqs, source_url, entries)
        sqs.delete_message_batch(
            QueueUrl=dlq_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )
        moved += len(messages)
    depth: Any = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
    return ReplayResult(moved, int(depth.get("Attributes", {}).get("ApproximateNumberOfMessages", 0)))
