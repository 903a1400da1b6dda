"""Sending: one packed request to the destination, with what its refusals and failures mean.

- **accepted**: its messages' records are written (tracked by a settle ticket and the ledger);
- **refused for one record** (``record_index``): that record is dead-lettered, the destination's
  record check is read afresh and every other record it now refuses goes too, then the rest is sent
  again; refusals the fresh check does not explain, ``bisect_after`` times in a row, halve the rest;
- **refused, naming no record**: halved by message until the refused message is alone, which is
  then dead-lettered whole;
- **failed transiently** (after the client's own retries), or not tracked: its messages go back to
  the queue. A request is started only if its worst case fits in the time left.

A :class:`Sent` is returned instead of touching shared state, so requests can be sent at once from
several threads and merged afterwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from experiture_ingest.streams.deadletters import DeadLetter, dead_letter
from experiture_ingest.streams.destination import Accepted, Destination, DestinationError
from experiture_ingest.streams.packing import PackedRequest, StagedMessage, replace_message, split
from experiture_ingest.streams.settle import KeptRequest
from experiture_ingest.streams.timing import Budget
from experiture_ingest.streams.tracking import Outgoing, Tracker, TrackingError

logger = logging.getLogger(__name__)


@dataclass
class Sent:
    """What sending one request did, per message."""

    written: dict[str, int] = field(default_factory=dict)
    retry: set[str] = field(default_factory=set)
    out_of_time: set[str] = field(default_factory=set)
    letters: dict[str, list[DeadLetter]] = field(default_factory=dict)
    jobs: list[str] = field(default_factory=list)
    requests: int = 0
    refused: int = 0
    resent: int = 0
    fell_back: set[str] = field(default_factory=set)  # resumed messages whose kept request was refused

    def letter(self, message_id: str, letter: DeadLetter) -> None:
        self.letters.setdefault(message_id, []).append(letter)


class Sender:
    """Sends requests for one invocation."""

    def __init__(
        self,
        destination: Destination,
        tracker: Tracker,
        budget: Budget,
        *,
        fifo: bool,
        aws_call_seconds: float,
        bisect_after: int = 3,
    ) -> None:
        self._destination = destination
        self._tracker = tracker
        self._budget = budget
        self._fifo = fifo
        self._bisect_after = bisect_after
        # The worst case of one request: the API call and the AWS calls around it (plus one read before
        # it: the ledger look-up, or a kept request's payload).
        self.request_seconds = destination.call_seconds + (tracker.calls_per_request + 1) * aws_call_seconds

    def can_start(self) -> bool:
        """Whether one more request (and the ledger read or payload read before it) fits in the time left."""
        return self._budget.fits(self.request_seconds)

    def send(self, request: PackedRequest) -> Sent:
        sent = Sent()
        queue = [request]
        streak = 0  # record refusals in a row that a fresh check did not explain
        while queue:
            current = queue.pop(0)
            if not current.messages:
                continue
            if not self.can_start():
                ids = {m.message_id for rest in [current, *queue] for m in rest.messages}
                sent.out_of_time |= ids
                logger.warning("not enough time left for another request: %d messages go back", len(ids))
                break
            try:
                self._post(current, sent)
            except DestinationError as exc:
                sent.refused += 1
                if exc.retryable:
                    self._transient(current, queue, sent, exc)
                    if self._fifo:
                        break
                    continue
                parts, streak = self._split_refused(current, exc, sent, streak)
                queue[:0] = parts
            except TrackingError as exc:
                logger.error("%s; the messages go back to the queue", exc)
                sent.retry.update(m.message_id for m in current.messages)
                if self._fifo:
                    sent.retry.update(m.message_id for rest in queue for m in rest.messages)
                    break
        return sent

    def resend(self, kept: KeptRequest, location: str, here: list[str]) -> Sent:
        """Send a kept request again with its own key (its answer was lost); ``here``: its messages
        in this batch. A permanent refusal hands them back to be packed anew (``fell_back``)."""
        sent = Sent()
        if not self.can_start():
            sent.out_of_time.update(here)
            return sent
        outgoing = Outgoing(kept, location)
        try:
            sent.requests += 1
            sent.resent += 1
            accepted = self._destination.send_batch(kept.target, kept.body(), kept.idempotency_key)
            self._tracker.accepted(outgoing, accepted)
        except DestinationError as exc:
            sent.refused += 1
            if exc.retryable:
                logger.warning("re-sending kept request %s failed transiently: %s", location, exc)
                sent.retry.update(here)
            else:
                logger.warning("kept request %s refused (%s); its messages are packed anew", location, exc)
                sent.fell_back.update(here)
            return sent
        except TrackingError as exc:
            logger.error("%s; the messages go back to the queue", exc)
            sent.retry.update(here)
            return sent
        counts = {m.message_id: m.records for m in kept.manifest}
        for message_id in here:
            sent.written[message_id] = counts.get(message_id, 0)
        sent.jobs.append(accepted.job_id)
        logger.info(
            "kept request %s sent again with its key: job %s",
            location,
            accepted.job_id,
            extra={"job_id": accepted.job_id},
        )
        return sent

    def _post(self, request: PackedRequest, sent: Sent) -> Accepted:
        # Kept (and noted in the ledger) before posting: after a 202 only tracking is left.
        outgoing = self._tracker.keep(request)
        sent.requests += 1
        accepted = self._destination.send_batch(request.target, request.body(), outgoing.kept.idempotency_key)
        self._tracker.accepted(outgoing, accepted)
        for message in request.messages:
            sent.written[message.message_id] = sent.written.get(message.message_id, 0) + len(message.records)
        sent.jobs.append(accepted.job_id)
        logger.info(
            "%s accepted %s-batch of %d records for %s as job %s",
            self._destination.name,
            request.target.operation,
            request.record_count,
            request.target.object,
            accepted.job_id,
            extra={
                "correlation_id": accepted.correlation_id,
                "idempotency_key": outgoing.kept.idempotency_key,
            },
        )
        return accepted

    def _transient(
        self, current: PackedRequest, queue: list[PackedRequest], sent: Sent, exc: DestinationError
    ) -> None:
        ids = [m.message_id for m in current.messages]
        logger.warning(
            "request for %d messages failed transiently: %s",
            len(ids),
            exc,
            extra={"correlation_id": exc.correlation_id, "message_ids": ids},
        )
        sent.retry.update(ids)
        if self._fifo:  # keep the order: nothing after a failure may be written
            sent.retry.update(m.message_id for rest in queue for m in rest.messages)

    def _split_refused(
        self, request: PackedRequest, exc: DestinationError, sent: Sent, streak: int
    ) -> tuple[list[PackedRequest], int]:
        """After a permanent refusal: the requests still worth sending, and the new refusal streak."""
        if exc.record_level and exc.record_index is not None:
            located = request.record_location(exc.record_index)
            if located is not None:
                message, offset = located
                sent.letter(message.message_id, self._letter(message, offset, exc.code, str(exc), exc))
                rest = replace_message(request, message, message.without(offset))
                # The destination likely knows something our cached check did not: one fresh look
                # finds every other record it now refuses, instead of one request per bad record.
                rest, removed = self._recheck(rest, exc, sent)
                streak = 0 if removed else streak + 1
                if streak >= self._bisect_after and len(rest.messages) > 1:
                    return list(split(rest)), streak
                return [rest], streak
        if exc.record_level and len(request.messages) > 1:
            return list(split(request)), streak
        # The whole request is refused (unknown object, forbidden, or one message): dead-letter it.
        for message in request.messages:
            sent.letter(
                message.message_id,
                dead_letter(
                    exc.code,
                    str(exc),
                    target=message.target,
                    records=message.records,
                    message_id=message.message_id,
                    group_id=message.group_id,
                    correlation_id=exc.correlation_id,
                ),
            )
        return [], streak

    def _recheck(
        self, request: PackedRequest, exc: DestinationError, sent: Sent
    ) -> tuple[PackedRequest, int]:
        """``request`` without the records a fresh record check refuses (each dead-lettered)."""
        try:
            check = self._destination.checker(request.target, fresh=True)
        except DestinationError as err:
            logger.warning("could not re-read the record check of %s: %s", request.target, err)
            return request, 0
        removed = 0
        kept: list[StagedMessage] = []
        for message in request.messages:
            offsets = []
            for offset, record in enumerate(message.records):
                found = check(record)
                if found is not None:
                    offsets.append(offset)
                    sent.letter(message.message_id, self._letter(message, offset, found[0], found[1], exc))
            removed += len(offsets)
            kept.append(message.without(*offsets) if offsets else message)
        if not removed:
            return request, 0
        logger.warning(
            "the fresh check of %s refuses %d more records of a refused request; dead-lettered",
            request.target,
            removed,
            extra={"correlation_id": exc.correlation_id},
        )
        return PackedRequest.build(request.target, kept, request.frame), removed

    def _letter(
        self, message: StagedMessage, offset: int, code: str, reason: str, exc: DestinationError
    ) -> DeadLetter:
        return dead_letter(
            code,
            reason,
            target=message.target,
            records=[message.records[offset]],
            message_id=message.message_id,
            group_id=message.group_id,
            record_index=message.indices[offset],
            correlation_id=exc.correlation_id,
        )
