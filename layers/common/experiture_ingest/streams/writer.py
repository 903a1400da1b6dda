"""The record writer: an SQS batch in, batch requests out, every message accounted for.

One invocation runs in four steps, each its own part:

1. **check** every message (:mod:`~.checking`): records to send, dead letters, or back to the queue;
2. **resume** from the ledger (:mod:`~.tracking`): skip messages already written; send the requests
   whose answers were lost again, byte for byte with their keys, instead of packing them anew;
3. **pack and send** (:mod:`~.packing`, :mod:`~.sending`): independent requests at once over a
   bounded thread pool; on FIFO queues wave by wave, so each message group keeps its order and a
   group held up by a transient failure holds up no other;
4. **dead letters** of every message whose fate is final, then the report (:mod:`~.batch`).

The writer knows the destination only through :class:`~.destination.Destination`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from experiture_ingest.streams.batch import Batch, FlushReport
from experiture_ingest.streams.checking import Checker, InboundMessage
from experiture_ingest.streams.contract import Target
from experiture_ingest.streams.deadletters import DeadLetterQueue
from experiture_ingest.streams.destination import Destination
from experiture_ingest.streams.packing import PackedRequest, StagedMessage, fifo_waves, pack, pack_units
from experiture_ingest.streams.sending import Sender, Sent
from experiture_ingest.streams.sqs import SqsSendError
from experiture_ingest.streams.timing import Budget
from experiture_ingest.streams.tracking import KeptRequestGone, Tracker, TrackingError, message_key

logger = logging.getLogger(__name__)

__all__ = ["FlushReport", "InboundMessage", "StreamWriter"]


class StreamWriter:
    """Long-lived (a warm Lambda reuses it): the destination, the queues, the pool. Each call to
    :meth:`write` keeps its own state in a :class:`~.batch.Batch`."""

    def __init__(
        self,
        destination: Destination,
        tracker: Tracker,
        dead_letters: DeadLetterQueue,
        *,
        default_target: Target | None = None,
        concurrency: int = 6,
        aws_call_seconds: float = 15.0,
        bisect_after: int = 3,
    ) -> None:
        self._destination = destination
        self._tracker = tracker
        self._dead_letters = dead_letters
        self._default = default_target
        self._aws_seconds = aws_call_seconds
        self._bisect_after = bisect_after
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="stream-writer")
        self._concurrency = max(1, concurrency)

    def write(
        self, messages: Sequence[InboundMessage], *, fifo: bool, remaining_ms: Callable[[], int] | None = None
    ) -> FlushReport:
        """Write one SQS batch; the report says which messages go back to the queue (``retry``)."""
        # Kept back for the end: one dead-letter call, so decided dead letters are not lost to a timeout.
        budget = Budget(remaining_ms, reserve_seconds=self._aws_seconds)
        batch = Batch(messages, fifo=fifo)
        staged = self._check(batch, budget)
        sender = Sender(
            self._destination,
            self._tracker,
            budget,
            fifo=fifo,
            aws_call_seconds=self._aws_seconds,
            bisect_after=self._bisect_after,
        )
        staged = self._resume(batch, staged, sender)
        self._send(batch, staged, sender)
        return self._finish(batch, budget)

    # 1. check ------------------------------------------------------------------------------------

    def _check(self, batch: Batch, budget: Budget) -> list[StagedMessage]:
        checker = Checker(self._destination, self._default, budget)
        staged: list[StagedMessage] = []
        seen: set[str] = set()
        for position, message in enumerate(batch.messages):
            if message.message_id in seen:  # SQS delivered it twice in one batch: write it once
                continue
            seen.add(message.message_id)
            checked = checker.check(message, position)
            batch.report.records_received += checked.records
            batch.add_letters(message.message_id, checked.letters)
            if checked.retry:
                batch.send_back([message.message_id], out_of_time=not budget.fits(0))
                continue
            key = message_key(message)
            for part in checked.staged:
                part.ledger_key = f"{key}#{part.part}" if part.part else key
                staged.append(part)
        return staged

    # 2. resume -----------------------------------------------------------------------------------

    def _resume(self, batch: Batch, staged: list[StagedMessage], sender: Sender) -> list[StagedMessage]:
        """The staged messages still to pack, after skipping the written ones and re-sending lost requests."""
        staged = [m for m in staged if not batch.going_back(m.message_id)]
        if staged and not sender.can_start():
            batch.send_back((m.message_id for m in staged), out_of_time=True)
            return []
        try:
            entries = self._tracker.lookup(m.ledger_key for m in staged)
        except TrackingError as exc:
            # Without the ledger a regrouped redelivery could append twice: wait for it instead.
            logger.error("%s; the batch goes back to the queue", exc)
            batch.send_back(m.message_id for m in staged)
            return []
        fresh: list[StagedMessage] = []
        lost: dict[str, list[StagedMessage]] = {}
        for message in staged:
            entry = entries.get(message.ledger_key)
            if entry is not None and entry.written:
                batch.add_written(message.message_id, len(message.records))
                batch.report.already_written += 1
                logger.info(
                    "message %s is already in job %s; not sent again", message.message_id, entry.job_id
                )
            elif entry is not None and entry.payload_key:
                lost.setdefault(entry.payload_key, []).append(message)
            else:
                fresh.append(message)
        if not lost:
            return fresh
        results = self._map(
            lambda item: self._resend(sender, *item),
            list(lost.items()),
            lambda item: [m.message_id for m in item[1]],
        )
        fell_back: set[str] = set()
        for sent in results:
            self._merge(batch, sent)
            fell_back |= sent.fell_back
        again = [m for ms in lost.values() for m in ms if m.message_id in fell_back]
        return sorted(fresh + again, key=lambda m: m.position)

    def _resend(self, sender: Sender, location: str, messages: list[StagedMessage]) -> Sent:
        here = [m.message_id for m in messages]
        if not sender.can_start():
            return Sent(out_of_time=set(here))
        try:
            kept = self._tracker.load(location)
        except KeptRequestGone as exc:
            logger.error("%s; its messages are packed anew", exc)
            return Sent(fell_back=set(here))
        except TrackingError as exc:  # S3 did not answer: packing anew could append twice, so wait
            logger.error("%s; its messages go back to the queue", exc)
            return Sent(retry=set(here))
        return sender.resend(kept, location, here)

    # 3. pack and send ----------------------------------------------------------------------------

    def _send(self, batch: Batch, staged: list[StagedMessage], sender: Sender) -> None:
        limits = self._destination.limits
        frame = self._destination.frame
        if not batch.fifo:
            requests = pack(staged, max_records=limits.max_records, max_bytes=limits.max_bytes, frame=frame)
            self._send_all(batch, requests, sender)
            return
        waves = fifo_waves(staged, max_records=limits.max_records, max_bytes=limits.max_bytes, frame=frame)
        for wave in waves:
            # A group that stopped (a failure, no time) sends nothing from its stopping point on.
            runs = [[m for m in run if not batch.going_back(m.message_id)] for run in wave]
            requests = pack_units(
                runs, max_records=limits.max_records, max_bytes=limits.max_bytes, frame=frame
            )
            self._send_all(batch, requests, sender)

    def _send_all(self, batch: Batch, requests: list[PackedRequest], sender: Sender) -> None:
        for sent in self._map(sender.send, requests, lambda r: [m.message_id for m in r.messages]):
            self._merge(batch, sent)

    def _map(
        self, work: Callable[[Any], Sent], items: list[Any], ids: Callable[[Any], list[str]]
    ) -> list[Sent]:
        """``work`` on each item, at once over the pool; an unexpected error costs only that item's
        messages a trip back to the queue (what another item wrote stays written)."""

        def guarded(item: Any) -> Sent:
            try:
                return work(item)
            except Exception:
                logger.exception("sending failed unexpectedly; its messages go back to the queue")
                return Sent(retry=set(ids(item)))

        if len(items) <= 1 or self._concurrency == 1:
            return [guarded(item) for item in items]
        return list(self._pool.map(guarded, items))

    def _merge(self, batch: Batch, sent: Sent) -> None:
        for message_id, records in sent.written.items():
            batch.add_written(message_id, records)
        for message_id, letters in sent.letters.items():
            batch.add_letters(message_id, letters)
        batch.send_back(sent.retry)
        batch.send_back(sent.out_of_time, out_of_time=True)
        batch.report.requests_sent += sent.requests
        batch.report.requests_refused += sent.refused
        batch.report.requests_resent += sent.resent
        batch.report.jobs.extend(sent.jobs)

    # 4. dead letters -----------------------------------------------------------------------------

    def _finish(self, batch: Batch, budget: Budget) -> FlushReport:
        owned = batch.final_letters()
        letters = [letter for _, letter in owned]
        sent = letters
        if letters:
            try:
                unsent = self._dead_letters.send(letters, can_start=lambda: budget.fits(0), pool=self._pool)
            except SqsSendError as exc:
                logger.error(
                    "could not dead-letter %d records (%s); their messages go back", len(letters), exc
                )
                unsent = letters
            if unsent:
                gone = {id(letter) for letter in unsent}
                batch.send_back({mid for mid, letter in owned if id(letter) in gone}, keep_order=False)
                sent = [letter for letter in letters if id(letter) not in gone]
        return batch.finish(sent)
