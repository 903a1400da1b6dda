"""Dead letters: what could not be written goes to the DLQ at once, with its reason as attributes.

A dead letter's body is replayable as it stands: the envelope of the refused records (or the original
body when it could not be read). Its attributes say why (``experiture.errorCode``,
``experiture.errorMessage``, ``experiture.correlationId``) and where it came from
(``experiture.sourceMessageId``, ``experiture.recordIndex``, ``experiture.jobId``).

A body that would not fit in an SQS message beside its reason (256 KiB) is kept in the stream bucket
(``dead-letters/<hash>.json``) and the DLQ gets a small pointer document with the same reason
attributes plus ``experiture.bodyLocation``; ``replay`` sends the kept body back.

Every dead letter is built by :func:`dead_letter` (one place for bodies and attributes).

>>> letter = dead_letter("STREAM.MALFORMED_JSON", "the body is not JSON", body="{", message_id="m-1")
>>> sorted(letter.attributes())
['experiture.errorCode', 'experiture.errorMessage', 'experiture.sourceMessageId']
>>> dead_letter("STREAM.INVALID_STRING", "lone surrogate", target=Target.parse("c:append"),
...             records=[{"s": "\\ud800"}]).body
'{"object": "c", "operation": "append", "records": [{"s": "\\\\ud800"}]}'
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from experiture_ingest.streams.contract import (
    ATTR_MATCH_KEY,
    ATTR_OBJECT,
    ATTR_OPERATION,
    Target,
    envelope,
    restore_cuts,
)
from experiture_ingest.streams.sqs import (
    SQS_MAX_PAYLOAD_BYTES,
    SqsSendError,
    chunk_entries,
    entry_size,
    is_fifo,
    is_sqs_text,
    send_entries,
    string_attributes,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

logger = logging.getLogger(__name__)

ATTR_ERROR_CODE = "experiture.errorCode"
ATTR_ERROR_MESSAGE = "experiture.errorMessage"
ATTR_CORRELATION_ID = "experiture.correlationId"
ATTR_SOURCE_MESSAGE_ID = "experiture.sourceMessageId"
ATTR_RECORD_INDEX = "experiture.recordIndex"
ATTR_JOB_ID = "experiture.jobId"
ATTR_BODY_LOCATION = "experiture.bodyLocation"
DEAD_LETTER_PREFIX = "dead-letters/"
REASON_ATTRIBUTES = (
    ATTR_ERROR_CODE,
    ATTR_ERROR_MESSAGE,
    ATTR_CORRELATION_ID,
    ATTR_SOURCE_MESSAGE_ID,
    ATTR_RECORD_INDEX,
    ATTR_JOB_ID,
    ATTR_BODY_LOCATION,
)
# The target attributes a bare-record body needs to be replayed.
TARGET_ATTRIBUTES = (ATTR_OBJECT, ATTR_OPERATION, ATTR_MATCH_KEY)
_MAX_REASON_CHARS = 1000
_POOL_WAVE = 8  # SendMessageBatch calls in flight at once when a pool is given


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


def _attribute(attributes: Mapping[str, Any], name: str) -> str | None:
    value = attributes.get(name)
    if isinstance(value, Mapping):  # the SQS event shape: {"stringValue": ..., "dataType": ...}
        value = value.get("stringValue", value.get("StringValue"))
    return value if isinstance(value, str) else None


def records_body(target: Target, records: Sequence[Any], cuts: Sequence[str] = ()) -> str:
    """The replayable envelope of ``records``: UTF-8 as sent, ``\\u``-escaped only where SQS would
    refuse a character (a lone surrogate, U+FFFE), with parts cut from a too-deep body put back."""
    document = envelope(target, list(records))
    try:
        text = json.dumps(document, ensure_ascii=False)
    except RecursionError:
        # Nested past the encoder's reach (the parser took it, the encoder cannot): the reason says so.
        text = json.dumps(envelope(target, []), ensure_ascii=False).replace(
            '"records": []', '"records": [null]'
        )
    if not is_sqs_text(text):
        text = json.dumps(document, ensure_ascii=True)
    return restore_cuts(text, list(cuts)) if cuts else text


def dead_letter(
    code: str,
    reason: str,
    *,
    target: Target | None = None,
    records: Sequence[Any] | None = None,
    body: str | None = None,
    message_id: str | None = None,
    group_id: str | None = None,
    record_index: int | None = None,
    correlation_id: str | None = None,
    job_id: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    cuts: Sequence[str] = (),
) -> DeadLetter:
    """The one way to build a dead letter: ``records`` of ``target`` (an envelope body), or the
    message's own ``body`` (kept with its target ``attributes`` so a bare record stays replayable)."""
    if records is not None and target is not None:
        text = records_body(target, records, cuts)
    else:
        text = body if body is not None else ""
        if not is_sqs_text(text):
            text = json.dumps(text)  # not SQS text: kept as a JSON string of the original
    kept = tuple(
        (name, value)
        for name in TARGET_ATTRIBUTES
        if (value := _attribute(attributes or {}, name)) is not None
    )
    return DeadLetter(
        text,
        code,
        reason,
        correlation_id,
        message_id,
        record_index,
        job_id,
        group_id,
        kept,
    )


class DeadLetterQueue:
    """Sends dead letters to one queue (FIFO queues get a group and a content-based dedup id).

    ``s3`` and ``bucket``: where a body too large for SQS beside its reason is kept (without them
    such a letter raises SqsSendError, so its message is retried rather than its reason lost).
    """

    def __init__(
        self, sqs: SQSClient, queue_url: str, s3: S3Client | None = None, bucket: str | None = None
    ) -> None:
        self._sqs = sqs
        self.queue_url = queue_url
        self._s3 = s3
        self._bucket = bucket

    def send(
        self,
        letters: Sequence[DeadLetter],
        *,
        can_start: Callable[[], bool] | None = None,
        pool: Executor | None = None,
    ) -> list[DeadLetter]:
        """Send ``letters`` (in waves over ``pool``, if given); the letters left unsent because
        ``can_start`` said no time is left for another SQS call. Raises SqsSendError."""
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        fifo = is_fifo(self.queue_url)
        for i, letter in enumerate(letters):
            seed = f"{letter.source_message_id}|{letter.record_index}|{letter.job_id}|{letter.body}"
            digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()
            entry: SendMessageBatchRequestEntryTypeDef = {
                "Id": str(i),
                "MessageBody": letter.body,
                "MessageAttributes": letter.attributes(),
            }
            if entry_size(entry) > SQS_MAX_PAYLOAD_BYTES:
                self._keep_body(entry, letter, f"{DEAD_LETTER_PREFIX}{digest}.json")
            if fifo:
                entry["MessageGroupId"] = letter.group_id or "dead-letters"
                entry["MessageDeduplicationId"] = digest
            entries.append(entry)
        chunks = list(chunk_entries(entries))
        width = 1 if pool is None else _POOL_WAVE
        sent: set[str] = set()
        for start in range(0, len(chunks), width):
            if can_start is not None and not can_start():
                break
            wave = chunks[start : start + width]
            if pool is None or len(wave) == 1:
                for chunk in wave:
                    send_entries(self._sqs, self.queue_url, chunk)
            else:
                for future in [pool.submit(send_entries, self._sqs, self.queue_url, c) for c in wave]:
                    future.result()
            sent.update(e["Id"] for chunk in wave for e in chunk)
        _log_sent([letter for i, letter in enumerate(letters) if str(i) in sent])
        return [letter for i, letter in enumerate(letters) if str(i) not in sent]

    def _keep_body(self, entry: SendMessageBatchRequestEntryTypeDef, letter: DeadLetter, key: str) -> None:
        """Put the body in S3 and make ``entry`` a pointer to it, with the same reason attributes."""
        if self._s3 is None or not self._bucket:
            raise SqsSendError(f"a dead letter of {len(letter.body.encode())} bytes does not fit in SQS")
        body = letter.body.encode("utf-8", "surrogatepass")
        self._s3.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType="application/json")
        location = f"s3://{self._bucket}/{key}"
        entry["MessageBody"] = json.dumps(
            {
                "deadLetterBody": location,
                "bytes": len(body),
                "note": "the body was too large for SQS beside its reason; replay-dlq sends it from S3",
            }
        )
        entry["MessageAttributes"] = {
            **entry["MessageAttributes"],
            **string_attributes({ATTR_BODY_LOCATION: location}),
        }


def _log_sent(letters: Sequence[DeadLetter]) -> None:
    """One warning per reason code (not per letter: 100,000 bad records are not 100,000 log lines)."""
    by_code: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        by_code.setdefault(letter.code, []).append(letter)
    for code, same in by_code.items():
        first = same[0]
        logger.warning(
            "dead-lettered %d: %s %s",
            len(same),
            code,
            first.reason[:_MAX_REASON_CHARS],
            extra={
                "source_message_ids": sorted({x.source_message_id for x in same if x.source_message_id})[:10],
                "correlation_id": first.correlation_id,
                "job_id": first.job_id,
            },
        )


def _kept_body(s3: S3Client, location: str) -> str:
    bucket, _, key = location.removeprefix("s3://").partition("/")
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()


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
    s3: S3Client | None = None,
) -> ReplayResult:
    """Move dead letters back to the source queue (after a fix), without their reason attributes.

    Each message is deleted from the DLQ only after the source queue accepted it, so a crash
    mid-replay duplicates at most the messages in flight and loses none. A pointer to a body kept in
    S3 is replaced by that body (``s3`` needed; without it the pointer is moved as it is).
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
            body = message["Body"]
            kept = message.get("MessageAttributes", {}).get(ATTR_BODY_LOCATION, {}).get("StringValue")
            if kept and s3 is not None:
                body = _kept_body(s3, kept)
            entry: SendMessageBatchRequestEntryTypeDef = {
                "Id": str(i),
                "MessageBody": body,
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
