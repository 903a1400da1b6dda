"""Who starts next: the dispatch decision, pure and typed (no AWS, no clock of its own).

Inputs are the queue's entries (waiting and running), the stack's capacity and the current time;
the output is the waiting entries to grant a start slot, in the order to grant them:

- at most ``capacity`` entries run at once;
- one running entry per *group* (the object, or the S3 key when ``parallelJobs`` opts a folder out):
  two jobs merging into one object never run together;
- files start in arrival order: S3 event time across keys, the ``sequencer`` within one key (S3 gives
  no order between events, the sequencer orders the events of one key);
- a capacity refusal by the API pauses every grant until ``paused_until`` (head-of-line: the refused
  file keeps its place, nothing behind it overtakes it, and the workspace is not hammered);
- a split file (or an export's load) holds its group's turn with one ``holding`` entry for as long as
  its parts are imported: its parts (entries whose ``turn`` is the holder's id) go at the holder's
  place, in part order, and later files of the group wait behind it. A holder is not a job: it never
  takes a slot.

>>> from datetime import UTC, timedelta
>>> t = datetime(2026, 1, 1, tzinfo=UTC)
>>> a = Entry("j1", "object:contacts", "b/incoming/contacts/a.csv", t, "0A", t)
>>> b = Entry("j2", "object:contacts", "b/incoming/contacts/b.csv", t + timedelta(seconds=1), "01", t)
>>> c = Entry("j3", "object:orders", "b/incoming/orders/c.csv", t + timedelta(seconds=2), "02", t)
>>> [e.job_id for e in plan_grants([c, b, a], [], capacity=10, now=t)]
['j1', 'j3']
>>> sequencer_value("0A") > sequencer_value("9"), padded_sequencer("0A")[-4:]
(True, '000A')
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

# registered: handed off by the intake, its execution not yet waiting (it blocks its group: a file
# dropped earlier is never overtaken by a later one of the same object that reached the queue first)
# holding: a split file (or an export's load) whose parts are being imported: it blocks its group for
# everything but its own parts, between them too, until the split flow ends
Status = Literal["registered", "waiting", "running", "holding"]
TURN_PREFIX = "turn:"
SEQUENCER_WIDTH = 64  # S3 sequencers are a few dozen hex digits at most


def sequencer_value(sequencer: str | None) -> int | None:
    """The S3 ``sequencer`` as a number: hex compared after left-padding, as S3 documents it."""
    if not sequencer:
        return None
    try:
        return int(sequencer, 16)
    except ValueError:
        return None


def padded_sequencer(sequencer: str) -> str:
    """Fixed width, upper case: compares as a string the way it compares as a number (DynamoDB)."""
    return sequencer.strip().upper().rjust(SEQUENCER_WIDTH, "0")


def group_of(object_name: str, bucket: str, key: str, *, parallel: bool) -> str:
    """The serialisation group: the object, or the file's own key when the folder opted out."""
    return f"key:{bucket}/{key}" if parallel else f"object:{object_name}"


def turn_id(execution_name: str) -> str:
    """The queue id of the entry that holds a split file's turn: named after its split execution.

    >>> turn_id("big.csv-0123abcd")
    'turn:big.csv-0123abcd'
    """
    return f"{TURN_PREFIX}{execution_name}"


@dataclass(frozen=True)
class Entry:
    """One file in the queue: what ordering and grouping need (the table stores more)."""

    job_id: str
    group: str
    source: str  # "<bucket>/<key>": versions of one key are ordered by sequencer
    event_time: datetime
    sequencer: str | None
    queued_at: datetime
    status: Status = "waiting"
    turn: str | None = None  # a part's: the id of the holder whose turn it runs in
    part: int | None = None  # a part's index: the holder lets its parts through in this order


def arrival_order(entries: Iterable[Entry]) -> list[Entry]:
    """Entries by S3 event time (then queue time, job id); within one key by sequencer.

    Event times of one key can tie or disagree with the sequencer (millisecond resolution, clock
    skew); the sequencer is S3's word for one key, so each key's entries are re-ordered by it within
    the positions that key holds.

    >>> from datetime import UTC, timedelta
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> v2 = Entry("v2", "g", "b/k", t, "0B", t)
    >>> v1 = Entry("v1", "g", "b/k", t + timedelta(seconds=1), "0A", t)
    >>> [e.job_id for e in arrival_order([v2, v1])]
    ['v1', 'v2']
    """
    ordered = sorted(entries, key=lambda e: (e.event_time, e.queued_at, e.job_id))
    positions: dict[str, list[int]] = {}
    for index, entry in enumerate(ordered):
        positions.setdefault(entry.source, []).append(index)
    result = list(ordered)
    for indexes in positions.values():
        if len(indexes) < 2:
            continue
        same_key = [ordered[i] for i in indexes]
        if any(sequencer_value(e.sequencer) is None for e in same_key):
            continue  # no sequencer to go by: event time it is
        for index, entry in zip(
            indexes, sorted(same_key, key=lambda e: sequencer_value(e.sequencer) or 0), strict=True
        ):
            result[index] = entry
    return result


def plan_grants(
    waiting: Sequence[Entry],
    running: Sequence[Entry],
    *,
    capacity: int,
    now: datetime,
    paused_until: datetime | None = None,
) -> list[Entry]:
    """The waiting entries to start now, in order (see the module's rules).

    ``waiting`` may hold ``registered`` entries (files handed off whose execution has not reached the
    queue yet): they are never granted, and nothing of their group behind them is either. It may hold
    ``holding`` entries too: at its place, the holder grants its own first waiting part (by index),
    and nothing else of its group behind it. A part whose holder is gone is an ordinary entry.

    >>> from datetime import UTC, timedelta
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> def at(s: int) -> datetime: return t + timedelta(seconds=s)
    >>> split = Entry("turn:big", "object:x", "b/x/big.csv", at(0), "01", at(0), "holding")
    >>> later = Entry("j9", "object:x", "b/x/small.csv", at(1), "02", at(1))
    >>> other = Entry("j8", "object:y", "b/y/y.csv", at(2), "03", at(2))
    >>> [e.job_id for e in plan_grants([later, split, other], [], capacity=10, now=at(3))]
    ['j8']
    >>> part2 = Entry("p2", "object:x", "b/x/big.csv", at(0), "01", at(5), turn="turn:big", part=2)
    >>> [e.job_id for e in plan_grants([later, split, other, part2], [], capacity=10, now=at(5))]
    ['p2', 'j8']
    """
    if paused_until is not None and now < paused_until:
        return []
    free = capacity - len(running)
    busy = {entry.group for entry in running}
    holders = {entry.job_id for entry in waiting if entry.status == "holding"}
    parts: dict[str, list[Entry]] = {}
    queue: list[Entry] = []
    for entry in waiting:
        if entry.turn is not None and entry.turn in holders:
            parts.setdefault(entry.turn, []).append(entry)
        else:
            queue.append(entry)
    grants: list[Entry] = []
    for entry in arrival_order(queue):
        if len(grants) >= free:
            break
        if entry.group in busy:
            continue
        busy.add(entry.group)
        # a holder's place goes to its first part; a holder with none waiting just blocks its group
        candidate = min(parts.get(entry.job_id, [entry]), key=_part_order)
        if candidate.status == "waiting":
            grants.append(candidate)
    return grants


def _part_order(entry: Entry) -> tuple[int, datetime, str]:
    return (entry.part or 0, entry.queued_at, entry.job_id)


def refusal_backoff(
    attempt: int,
    *,
    initial_seconds: float,
    max_seconds: float,
    retry_after: float | None,
    rng: Callable[[], float],
    factor: float = 2.0,
) -> float:
    """Seconds to pause starts after the ``attempt``-th refusal: capped, equal jitter, Retry-After floor.

    >>> refusal_backoff(1, initial_seconds=5, max_seconds=60, retry_after=None, rng=lambda: 0.0)
    2.5
    >>> refusal_backoff(9, initial_seconds=5, max_seconds=60, retry_after=600, rng=lambda: 1.0)
    60.0
    """
    ceiling = min(max_seconds, initial_seconds * factor ** max(0, attempt - 1))
    delay = ceiling / 2 + rng() * ceiling / 2
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_seconds))
    return float(delay)


def seconds_between(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds(), 3)


__all__ = [
    "SEQUENCER_WIDTH",
    "TURN_PREFIX",
    "Entry",
    "Status",
    "arrival_order",
    "group_of",
    "padded_sequencer",
    "plan_grants",
    "refusal_backoff",
    "seconds_between",
    "sequencer_value",
    "turn_id",
]
