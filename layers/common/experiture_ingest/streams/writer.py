"""The record writer: stage an SQS batch message by message, then pack and send it as a whole.

``stage`` reads one message (contract + schema checks) and is what the Powertools batch processor
calls per record; ``flush`` packs every staged record into append-batch/upsert-batch requests and
says which messages must come back for a retry. Per message the end is one of:

- **written**: all its good records are in accepted requests (each job tracked by a settle ticket);
- **dead-lettered**: what can never be written (malformed body, unknown object, a record refused by the
  schema or by the API) is sent to the DLQ with its reason, and the message is *not* retried;
- **retry**: a request carrying it failed transiently (after the client's own retries), so the
  message is returned in ``batchItemFailures`` and SQS redelivers it. Its dead letters wait until
  the retry decides, so a redelivery never dead-letters a record twice.

On FIFO queues requests follow the batch order and sending stops at the first transient failure:
that message and every later one are retried, none of them written.

The Lambda's time is watched too: when less than ``time_margin_seconds`` is left (a request may take
the client's whole retry budget), no new request is sent and the unsent messages are retried, rather
than the function timing out mid-batch with requests accepted but untracked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from experiture_ingest.client import (
    AuthenticationError,
    BatchAccepted,
    ExperitureClient,
    ExperitureError,
    PayloadTooLargeError,
    SchemaMismatchError,
    ValidationError,
)
from experiture_ingest.limits import BATCH_MAX_BYTES, BATCH_MAX_RECORDS
from experiture_ingest.streams.contract import (
    ATTR_MATCH_KEY,
    ATTR_OBJECT,
    ATTR_OPERATION,
    ContractError,
    Target,
    envelope,
    parse_message,
)
from experiture_ingest.streams.deadletters import DeadLetter, DeadLetterQueue
from experiture_ingest.streams.ledger import LedgerError, MessageLedger, ledger_key
from experiture_ingest.streams.packing import PackedRequest, StagedMessage, pack, replace_message, split
from experiture_ingest.streams.schema import UNKNOWN_FIELD, SchemaCache, check_record
from experiture_ingest.streams.settle import (
    ManifestEntry,
    PayloadStore,
    SettleQueue,
    SettleTicket,
    payload_key,
)
from experiture_ingest.streams.sqs import SqsSendError

logger = logging.getLogger(__name__)

_RECORD_PATH = re.compile(r"records\[(\d+)\]")


class TransientWriteError(Exception):
    """A message could not be written this time; SQS will deliver it again."""


class PayloadKeepError(Exception):
    """The request's payload could not be kept in S3, so the request was not sent."""


@dataclass(frozen=True)
class InboundMessage:
    """What the writer needs of an SQS message (the handler builds it from Powertools' SQSRecord)."""

    message_id: str
    body: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    group_id: str | None = None


@dataclass
class FlushReport:
    """The outcome of one batch, for the partial batch response, logs and metrics."""

    retry: set[str] = field(default_factory=set)
    records_received: int = 0
    records_written: int = 0
    records_dead_lettered: int = 0
    messages_dead_lettered: int = 0
    requests_sent: int = 0
    requests_refused: int = 0
    jobs: list[str] = field(default_factory=list)
    out_of_time: int = 0  # messages returned unsent because the invocation was about to time out
    already_written: int = 0  # messages the ledger says an earlier delivery wrote (counted as written)


@dataclass
class _Pending:
    """Per message: its dead letters, sent only once the message's fate is known."""

    letters: list[DeadLetter] = field(default_factory=list)
    written: int = 0


class StreamWriter:
    """Turns SQS messages into batch writes; see the module docstring for what happens to each."""

    def __init__(
        self,
        client: ExperitureClient,
        schemas: SchemaCache,
        dead_letters: DeadLetterQueue,
        payloads: PayloadStore,
        tickets: SettleQueue,
        *,
        default_target: Target | None = None,
        fifo: bool = False,
        max_records: int = BATCH_MAX_RECORDS,
        max_bytes: int = BATCH_MAX_BYTES,
        on_request: Callable[[PackedRequest], None] | None = None,
        bisect_after: int = 3,
        time_margin_seconds: float = 30.0,
        ledger: MessageLedger | None = None,
    ) -> None:
        self._client = client
        self._schemas = schemas
        self._dead_letters = dead_letters
        self._payloads = payloads
        self._tickets = tickets
        self._default = default_target
        self._fifo = fifo
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._on_request = on_request
        self._bisect_after = bisect_after
        self._margin_ms = time_margin_seconds * 1000
        self._remaining_ms: Callable[[], int] | None = None
        self._ledger = ledger
        self._streak = 0  # record-level refusals in a row that the fresh schema did not explain
        self.begin()

    def begin(self, *, fifo: bool | None = None) -> None:
        """Forget the previous batch (a warm Lambda reuses the writer); ``fifo`` as the queue is."""
        if fifo is not None:
            self._fifo = fifo
        self._staged: list[StagedMessage] = []
        self._pending: dict[str, _Pending] = {}
        self._order: list[str] = []
        self._ledger_keys: dict[str, str] = {}
        self._report = FlushReport()

    # Phase 1: one message at a time --------------------------------------------------------------

    def stage(self, message: InboundMessage) -> None:
        """Read and check one message; raise TransientWriteError if it must be retried as a whole."""
        pending = self._pending.setdefault(message.message_id, _Pending())
        self._order.append(message.message_id)
        digest = hashlib.sha256(message.body.encode()).hexdigest()
        self._ledger_keys[message.message_id] = ledger_key(message.message_id, digest)
        try:
            parsed = parse_message(message.body, message.attributes, default=self._default)
        except ContractError as exc:
            pending.letters.append(self._letter(message, message.body, exc.code, exc.message))
            return
        target = parsed.target
        self._report.records_received += len(parsed.records) + len(parsed.problems)
        for problem in parsed.problems:
            pending.letters.append(
                self._letter(
                    message, _body(target, [problem.record]), problem.code, problem.message, problem.index
                )
            )
        try:
            schema = self._schemas.get(target.object)
        except ExperitureError as exc:
            if exc.retryable or isinstance(exc, AuthenticationError):
                raise TransientWriteError(f"schema of {target.object}: {exc}") from exc
            pending.letters.append(
                self._letter(
                    message,
                    _body(target, parsed.records),
                    exc.code or "API_ERROR",
                    str(exc),
                    correlation_id=exc.correlation_id,
                )
            )
            return
        if target.match_key and schema.field(target.match_key) is None:
            pending.letters.append(
                self._letter(
                    message,
                    _body(target, parsed.records),
                    UNKNOWN_FIELD,
                    f"matchKey {target.match_key!r} is not a field of {target.object}",
                )
            )
            return
        good: list[dict[str, Any]] = []
        problems = {p.index for p in parsed.problems}
        index = 0
        for record in parsed.records:
            while index in problems:
                index += 1
            found = check_record(schema, record, target.operation, target.match_key)
            if found is None:
                good.append(record)
            else:
                pending.letters.append(self._letter(message, _body(target, [record]), *found, index))
            index += 1
        if good:
            self._staged.append(
                StagedMessage.of(message.message_id, len(self._order) - 1, target, good, message.group_id)
            )

    def fail(self, message_id: str) -> None:
        """Note that the batch processor failed this message before or while staging it."""
        self._report.retry.add(message_id)

    # Phase 2: the whole batch --------------------------------------------------------------------

    @property
    def report(self) -> FlushReport:
        return self._report

    def flush(self, remaining_ms: Callable[[], int] | None = None) -> FlushReport:
        """Send every staged record; dead-letter what is final; return which messages to retry.

        ``remaining_ms`` (the Lambda context's ``get_remaining_time_in_millis``): no request is
        started with less than the time margin left; the unsent messages are retried.
        """
        self._remaining_ms = remaining_ms
        report = self._report
        staged = [m for m in self._staged if m.message_id not in report.retry]
        cutoff: int | None = None
        if self._fifo and report.retry:
            cutoff = min(self._order.index(mid) for mid in report.retry if mid in self._order)
            staged = [m for m in staged if m.position < cutoff]
        staged = self._skip_written(staged)
        requests = pack(
            staged, max_records=self._max_records, max_bytes=self._max_bytes, contiguous=self._fifo
        )
        for request in requests:
            failed = self._send(request)  # gives the messages back unsent when time runs short
            if failed:
                report.retry.update(failed)
                if self._fifo:
                    # Requests follow the batch order: stop here; this and every later message retry.
                    first = min(m.position for m in request.messages if m.message_id in failed)
                    cutoff = first if cutoff is None else min(cutoff, first)
                    break
        if self._fifo and cutoff is not None:
            report.retry.update(self._order[cutoff:])
        letters: list[DeadLetter] = []
        owners: list[str] = []
        for message_id in self._order:
            if message_id in report.retry:
                continue
            pending = self._pending[message_id]
            letters.extend(pending.letters)
            owners.extend([message_id] * len(pending.letters))
        if letters:
            try:
                self._dead_letters.send(letters)
            except SqsSendError as exc:
                logger.error(
                    "could not dead-letter %d records (%s); their messages will be retried", len(letters), exc
                )
                report.retry.update(owners)
                letters = []
        report.records_dead_lettered = sum(1 for letter in letters if letter.record_index is not None)
        report.messages_dead_lettered = sum(1 for letter in letters if letter.record_index is None)
        report.records_written = sum(p.written for mid, p in self._pending.items() if mid not in report.retry)
        return report

    def _send(self, request: PackedRequest) -> set[str]:
        """Send one request, splitting out what the API refuses; the message ids to retry."""
        queue = [request]
        retry: set[str] = set()
        self._streak = 0
        while queue:
            current = queue.pop(0)
            if not current.messages:
                continue
            if self._out_of_time():
                unsent = [m for rest in [current, *queue] for m in rest.messages]
                self._give_back(unsent)
                retry.update(m.message_id for m in unsent)
                break
            try:
                accepted = self._post(current)
            except ExperitureError as exc:
                self._report.requests_refused += 1
                if exc.retryable or isinstance(exc, AuthenticationError):
                    logger.warning(
                        "request for %d messages failed transiently: %s",
                        len(current.messages),
                        exc,
                        extra={
                            "correlation_id": exc.correlation_id,
                            "message_ids": [m.message_id for m in current.messages],
                        },
                    )
                    retry.update(m.message_id for m in current.messages)
                    if self._fifo:  # keep the order: nothing after a failure may be written
                        retry.update(m.message_id for rest in queue for m in rest.messages)
                        break
                    continue
                queue[:0] = self._split_refused(current, exc)
                continue
            except (PayloadKeepError, SqsSendError) as exc:
                if isinstance(exc, SqsSendError):
                    logger.error("accepted but not tracked (%s); the messages will be retried", exc)
                else:
                    logger.error("%s; nothing was sent, the messages will be retried", exc)
                retry.update(m.message_id for m in current.messages)
                if self._fifo:
                    retry.update(m.message_id for rest in queue for m in rest.messages)
                    break
                continue
            self._streak = 0
            for message in current.messages:
                self._pending[message.message_id].written += len(message.records)
            self._report.jobs.append(accepted.job_id)
            self._remember(current, accepted.job_id)
        return retry

    def _skip_written(self, staged: list[StagedMessage]) -> list[StagedMessage]:
        """``staged`` without the messages the ledger says are already in an accepted job."""
        if self._ledger is None or not staged:
            return staged
        try:
            done = self._ledger.written(self._ledger_keys[m.message_id] for m in staged)
        except (LedgerError, BotoCoreError, ClientError) as exc:
            # Without the ledger a redelivery regrouped differently may append twice; say so loudly.
            logger.error("could not read the message ledger (%s); writing without it", exc)
            return staged
        keep: list[StagedMessage] = []
        for message in staged:
            job = done.get(self._ledger_keys[message.message_id])
            if job is None:
                keep.append(message)
                continue
            self._pending[message.message_id].written += len(message.records)
            self._report.already_written += 1
            logger.info(
                "message %s is already in job %s; not sent again",
                message.message_id,
                job,
                extra={"job_id": job},
            )
        return keep

    def _remember(self, request: PackedRequest, job_id: str) -> None:
        if self._ledger is None:
            return
        try:
            self._ledger.record([self._ledger_keys[m.message_id] for m in request.messages], job_id)
        except (LedgerError, BotoCoreError, ClientError) as exc:
            logger.error("job %s is tracked but not in the message ledger (%s)", job_id, exc)

    def _out_of_time(self) -> bool:
        return self._remaining_ms is not None and self._remaining_ms() < self._margin_ms

    def _give_back(self, unsent: list[StagedMessage]) -> None:
        ids = {m.message_id for m in unsent}
        self._report.retry.update(ids)
        self._report.out_of_time += len(ids)
        logger.warning(
            "less than %.0f s left: %d messages go back to SQS unsent",
            self._margin_ms / 1000,
            len(ids),
            extra={"message_ids": sorted(ids)},
        )

    def _post(self, request: PackedRequest) -> BatchAccepted:
        body = request.body()
        key = request.idempotency_key
        target = request.target
        location = payload_key(target.object, key)
        manifest = [ManifestEntry(m.message_id, len(m.records), m.group_id) for m in request.messages]
        # Keep the payload first: after a 202 only the settle ticket is left to send.
        try:
            self._payloads.put(location, target, key, manifest, body)
        except Exception as exc:
            raise PayloadKeepError(
                f"could not keep the payload at {location}: {type(exc).__name__}: {exc}"
            ) from exc
        if self._on_request is not None:
            self._on_request(request)
        self._report.requests_sent += 1
        if target.operation == "upsert":
            accepted = self._client.upsert_batch(target.object, body=body, idempotency_key=key)
        else:
            accepted = self._client.append_batch(target.object, body=body, idempotency_key=key)
        try:
            self._tickets.send(
                SettleTicket(
                    job_id=accepted.job_id,
                    object=target.object,
                    payload_key=location,
                    idempotency_key=key,
                    records=request.record_count,
                    correlation_id=accepted.correlation_id,
                    accepted_at=time.time(),
                )
            )
        except Exception as exc:
            # The job is accepted but untracked: retrying the same batch replays the same key.
            raise SqsSendError(
                f"could not record job {accepted.job_id}: {type(exc).__name__}: {exc}"
            ) from exc
        logger.info(
            "accepted %s-batch of %d records for %s as job %s",
            target.operation,
            request.record_count,
            target.object,
            accepted.job_id,
            extra={"correlation_id": accepted.correlation_id, "idempotency_key": key},
        )
        return accepted

    def _split_refused(self, request: PackedRequest, exc: ExperitureError) -> list[PackedRequest]:
        """After a permanent refusal: the requests still worth sending (the refused part is dead-lettered)."""
        record_level = isinstance(exc, ValidationError | SchemaMismatchError | PayloadTooLargeError)
        index = _record_index(exc) if record_level else None
        if index is not None:
            located = request.record_location(index)
            if located is not None:
                message, offset = located
                self._dead_letter_records(message, [offset], exc)
                self._schemas.forget(request.target.object)  # our schema copy let this through
                rest = replace_message(request, message, message.without(offset))
                # The schema likely changed under us: one fresh look finds every other record it now
                # refuses, instead of one re-sent request per bad record.
                rest, removed = self._recheck(rest, exc)
                self._streak = 0 if removed else self._streak + 1
                if self._streak >= self._bisect_after and len(rest.messages) > 1:
                    # Refusals the schema does not explain, one record at a time: halve instead.
                    return list(split(rest))
                return [rest]
        if record_level and len(request.messages) > 1:
            first, second = split(request)
            return [first, second]
        # The whole request is refused (unknown object, forbidden, or one message): dead-letter it.
        for message in request.messages:
            self._dead_letter_records(message, None, exc)
        return []

    def _recheck(self, request: PackedRequest, exc: ExperitureError) -> tuple[PackedRequest, int]:
        """``request`` without the records a freshly fetched schema refuses (each dead-lettered with
        its reason); also how many were removed."""
        target = request.target
        try:
            schema = self._schemas.get(target.object)
        except ExperitureError as err:
            logger.warning("could not re-read the schema of %s: %s", target.object, err)
            return request, 0
        removed = 0
        kept: list[StagedMessage] = []
        for message in request.messages:
            offsets: list[int] = []
            for offset, record in enumerate(message.records):
                found = check_record(schema, record, target.operation, target.match_key)
                if found is None:
                    continue
                offsets.append(offset)
                self._pending[message.message_id].letters.append(
                    DeadLetter(
                        _body(target, [record]),
                        found[0],
                        found[1],
                        exc.correlation_id,
                        message.message_id,
                        record_index=offset,
                        group_id=message.group_id,
                    )
                )
            removed += len(offsets)
            kept.append(message.without(*offsets) if offsets else message)
        if not removed:
            return request, 0
        logger.warning(
            "the current %s schema refuses %d more records of a refused request; dead-lettered",
            target.object,
            removed,
            extra={"correlation_id": exc.correlation_id},
        )
        return PackedRequest.build(target, kept), removed

    def _dead_letter_records(
        self, message: StagedMessage, offsets: list[int] | None, exc: ExperitureError
    ) -> None:
        pending = self._pending[message.message_id]
        code = exc.code or f"HTTP_{exc.status}"
        if offsets is None:
            pending.letters.append(
                DeadLetter(
                    _body(message.target, message.records),
                    code,
                    str(exc),
                    exc.correlation_id,
                    message.message_id,
                    group_id=message.group_id,
                )
            )
            return
        for offset in offsets:
            pending.letters.append(
                DeadLetter(
                    _body(message.target, [message.records[offset]]),
                    code,
                    str(exc),
                    exc.correlation_id,
                    message.message_id,
                    record_index=offset,
                    group_id=message.group_id,
                )
            )

    def _letter(
        self,
        message: InboundMessage,
        body: str,
        code: str,
        reason: str,
        record_index: int | None = None,
        *,
        correlation_id: str | None = None,
    ) -> DeadLetter:
        keep = tuple(
            (name, value)
            for name in (ATTR_OBJECT, ATTR_OPERATION, ATTR_MATCH_KEY)
            if (value := _attr(message.attributes, name)) is not None
        )
        return DeadLetter(
            body,
            code,
            reason,
            correlation_id,
            message.message_id,
            record_index,
            group_id=message.group_id,
            target_attributes=keep,
        )


def _body(target: Target, records: list[Any]) -> str:
    return json.dumps(envelope(target, records), ensure_ascii=False)


def _attr(attributes: Mapping[str, Any], name: str) -> str | None:
    value = attributes.get(name)
    if isinstance(value, Mapping):
        value = value.get("stringValue", value.get("StringValue"))
    return value if isinstance(value, str) else None


def _record_index(exc: ExperitureError) -> int | None:
    """The ``records[i]`` an error names, in ``details.path`` or in its message."""
    for text in (exc.details.get("path"), exc.message):
        if isinstance(text, str) and (found := _RECORD_PATH.search(text)):
            return int(found.group(1))
    return None
