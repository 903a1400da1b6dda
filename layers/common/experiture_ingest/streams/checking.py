"""Checking: one SQS message at a time, into records worth sending and dead letters, each alone.

A message ends up as a :class:`Checked`: the records that may be sent (encoded once, with their
place in the message), one dead letter per record that can never be written (the contract's
per-record limits, then the destination's check), or the whole message dead-lettered when it is
unusable as a whole (malformed body, bad target). Only a destination that cannot be asked *now*
(its schema read failed transiently, or there is no time left to ask) sends the message back.

Nothing a record holds can fail the batch: every step for one record, and for one message, is
guarded, and an unexpected error is dead-lettered as ``STREAM.INTERNAL_ERROR`` with what it was.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from experiture_ingest.streams.contract import (
    CONTRACT_INVALID,
    INTERNAL_ERROR,
    RECORD_TOO_LARGE,
    ContractError,
    Target,
    parse_message,
)
from experiture_ingest.streams.deadletters import DeadLetter, dead_letter
from experiture_ingest.streams.destination import Destination, DestinationError, RecordCheck
from experiture_ingest.streams.packing import StagedMessage, split_to_fit
from experiture_ingest.streams.timing import Budget

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboundMessage:
    """What the writer needs of an SQS message (the handler builds it from the Lambda event)."""

    message_id: str
    body: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    group_id: str | None = None


@dataclass
class Checked:
    """One message after checking: what to send, what to dead-letter, or ``retry`` (ask again later)."""

    staged: list[StagedMessage] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    records: int = 0
    retry: bool = False


class Checker:
    """Checks the messages of one invocation (the destination's record check is fetched once per target)."""

    def __init__(self, destination: Destination, default: Target | None, budget: Budget) -> None:
        self._destination = destination
        self._default = default
        self._budget = budget
        self._checks: dict[Target, RecordCheck | DestinationError] = {}
        limits = destination.limits
        self._max_fields = limits.max_fields
        self._max_request_bytes = limits.max_bytes

    def check(self, message: InboundMessage, position: int) -> Checked:
        try:
            return self._check(message, position)
        except Exception as exc:  # a bug must cost one message (kept in the DLQ), never the batch
            logger.exception("checking message %s failed", message.message_id)
            return Checked(letters=[self._whole(message, INTERNAL_ERROR, _describe(exc))])

    def _check(self, message: InboundMessage, position: int) -> Checked:
        try:
            parsed = parse_message(
                message.body,
                message.attributes,
                default=self._default,
                max_fields=self._max_fields,
            )
        except ContractError as exc:
            return Checked(letters=[self._whole(message, exc.code, exc.message)])
        target = parsed.target
        checked = Checked(records=len(parsed.records) + len(parsed.problems))
        for problem in parsed.problems:
            checked.letters.append(
                self._letter(
                    message,
                    target,
                    problem.record,
                    (problem.code, problem.message),
                    index=problem.index,
                    cuts=parsed.cuts,
                )
            )
        if not parsed.records:
            return checked
        check = self._record_check(target)
        if check is None:
            checked.retry = True
            return checked
        if isinstance(check, DestinationError):
            checked.letters.append(
                dead_letter(
                    check.code,
                    check.message,
                    target=target,
                    records=parsed.records,
                    message_id=message.message_id,
                    group_id=message.group_id,
                    correlation_id=check.correlation_id,
                )
            )
            return checked
        good: list[dict[str, Any]] = []
        encoded: list[bytes] = []
        indices: list[int] = []
        frame = self._destination.frame(target)
        room = self._max_request_bytes - len(frame[0]) - len(frame[1])  # a record must fit one request
        for record, data, index in zip(parsed.records, parsed.encoded, parsed.indices, strict=True):
            try:
                found = (
                    check(record)
                    if len(data) <= room
                    else (RECORD_TOO_LARGE, f"a record is {len(data)} bytes; one request holds {room}")
                )
            except Exception as exc:  # one record's check must not fail its neighbours
                found = (INTERNAL_ERROR, f"checking the record failed: {_describe(exc)}")
            if found is None:
                good.append(record)
                encoded.append(data)
                indices.append(index)
            else:
                checked.letters.append(self._letter(message, target, record, found, index=index))
        if good:
            whole = StagedMessage(
                message.message_id, position, target, good, encoded, message.group_id, indices
            )
            limits = self._destination.limits
            checked.staged = split_to_fit(
                whole, max_records=limits.max_records, max_bytes=limits.max_bytes, frame=frame
            )
        return checked

    def _record_check(self, target: Target) -> RecordCheck | DestinationError | None:
        """The check for ``target``, the error refusing it for good, or None (ask again later)."""
        known = self._checks.get(target)
        if known is not None:
            return known
        if target.operation not in self._destination.operations:
            refused = DestinationError(
                CONTRACT_INVALID,
                f"{self._destination.name} does not offer the operation {target.operation!r}",
            )
            self._checks[target] = refused
            return refused
        if not self._budget.fits(self._destination.call_seconds):
            return None
        try:
            found: RecordCheck | DestinationError = self._destination.checker(target)
        except DestinationError as exc:
            if exc.retryable:
                logger.warning("cannot check records for %s now: %s", target, exc)
                return None
            found = exc
        except Exception:  # not the records' fault (credentials, configuration): ask again later
            logger.exception("cannot check records for %s now", target)
            return None
        self._checks[target] = found
        return found

    def _letter(
        self,
        message: InboundMessage,
        target: Target,
        record: Any,
        found: tuple[str, str],
        *,
        index: int,
        cuts: list[str] | None = None,
    ) -> DeadLetter:
        code, reason = found
        return dead_letter(
            code,
            reason,
            target=target,
            records=[record],
            message_id=message.message_id,
            group_id=message.group_id,
            record_index=index,
            cuts=cuts or (),
        )

    def _whole(self, message: InboundMessage, code: str, reason: str) -> DeadLetter:
        return dead_letter(
            code,
            reason,
            body=message.body,
            message_id=message.message_id,
            group_id=message.group_id,
            attributes=message.attributes,
        )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
