"""Per-invocation state: what became of each message of one SQS batch.

Each message ends written, dead-lettered, or back to the queue (``retry``). Its dead letters wait
here until its fate is known: a message that goes back to the queue sends none (its redelivery
decides again), so a record is never dead-lettered twice by a retry.

On FIFO queues a message that goes back takes every later message *of its group* with it, so a
group keeps its order; other groups are not held up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from experiture_ingest.streams.checking import InboundMessage
from experiture_ingest.streams.deadletters import DeadLetter


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
    requests_resent: int = 0  # requests whose answer was lost, sent again from their kept payload
    jobs: list[str] = field(default_factory=list)
    out_of_time: int = 0  # messages returned unsent because the invocation was about to time out
    already_written: int = 0  # messages the ledger says an earlier delivery wrote (counted as written)


class Batch:
    """The messages of one invocation, in order, and what became of each."""

    def __init__(self, messages: Sequence[InboundMessage], *, fifo: bool) -> None:
        self.messages = list(messages)
        self.fifo = fifo
        self.position = {m.message_id: i for i, m in enumerate(self.messages)}
        self.letters: dict[str, list[DeadLetter]] = {}
        self.written: dict[str, int] = {}
        self.report = FlushReport()
        self._stopped: dict[str | None, int] = {}  # FIFO: group -> first position going back

    def add_letters(self, message_id: str, letters: Iterable[DeadLetter]) -> None:
        self.letters.setdefault(message_id, []).extend(letters)

    def add_written(self, message_id: str, records: int) -> None:
        self.written[message_id] = self.written.get(message_id, 0) + records

    def send_back(
        self, message_ids: Iterable[str], *, out_of_time: bool = False, keep_order: bool = True
    ) -> None:
        """These messages go back to the queue (on FIFO, with the rest of their groups unless
        ``keep_order`` is False: their records are written and only their dead letters failed)."""
        ids = {i for i in message_ids if i in self.position} - self.report.retry
        if out_of_time:
            self.report.out_of_time += len(ids)
        self.report.retry.update(ids)
        if self.fifo and keep_order:
            for message_id in ids:
                group = self.messages[self.position[message_id]].group_id
                first = min(self._stopped.get(group, len(self.messages)), self.position[message_id])
                self._stopped[group] = first
            for message in self.messages:
                stop = self._stopped.get(message.group_id)
                if stop is not None and self.position[message.message_id] >= stop:
                    self.report.retry.add(message.message_id)

    def going_back(self, message_id: str) -> bool:
        return message_id in self.report.retry

    def final_letters(self) -> list[tuple[str, DeadLetter]]:
        """The dead letters of every message that does not go back, in batch order."""
        return [
            (m.message_id, letter)
            for m in self.messages
            if m.message_id not in self.report.retry
            for letter in self.letters.get(m.message_id, [])
        ]

    def finish(self, sent: Sequence[DeadLetter]) -> FlushReport:
        report = self.report
        report.records_dead_lettered = sum(1 for letter in sent if letter.record_index is not None)
        report.messages_dead_lettered = sum(1 for letter in sent if letter.record_index is None)
        report.records_written = sum(n for mid, n in self.written.items() if mid not in report.retry)
        return report
