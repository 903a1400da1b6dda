"""Who starts next: arrival order, one job per object, capacity, the pause after a refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from experiture_ingest.scheduling import Entry, arrival_order, group_of, plan_grants, sequencer_value, turn_id
from experiture_ingest.scheduling.policy import Status

T0 = datetime(2026, 4, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def file(job: str, obj: str, second: float, sequencer: str = "01", key: str | None = None) -> Entry:
    key = key or f"incoming/{obj}/{job}.csv"
    return Entry(job, group_of(obj, "b", key, parallel=False), f"b/{key}", at(second), sequencer, at(second))


def ids(entries: list[Entry]) -> list[str]:
    return [e.job_id for e in entries]


def test_files_start_in_arrival_order_one_per_object_up_to_the_capacity():
    # Given six waiting files over three objects, dropped in this order
    waiting = [
        file("c1", "contacts", 1),
        file("o1", "orders", 2),
        file("c2", "contacts", 3),
        file("p1", "profiles", 4),
        file("o2", "orders", 5),
        file("p2", "profiles", 6),
    ]
    # When the queue is empty of running jobs, capacity 2
    # Then the first two objects' first files start
    assert ids(plan_grants(list(reversed(waiting)), [], capacity=2, now=at(10))) == ["c1", "o1"]
    # And with room for all: one per object, in order
    assert ids(plan_grants(waiting, [], capacity=10, now=at(10))) == ["c1", "o1", "p1"]


def test_a_busy_object_waits_without_holding_back_the_others():
    running = [file("c1", "contacts", 1)]
    waiting = [file("c2", "contacts", 2), file("o1", "orders", 3)]
    assert ids(plan_grants(waiting, running, capacity=10, now=at(10))) == ["o1"]
    assert plan_grants(waiting, running, capacity=1, now=at(10)) == [], "the running job fills the capacity"


def test_versions_of_one_key_follow_the_sequencer_even_against_event_time():
    # Given v1 and v2 of one key whose event times say the opposite (same millisecond, clock skew)
    v1 = file("v1", "contacts", 5, sequencer="00FF", key="incoming/contacts/k.csv")
    v2 = file("v2", "contacts", 4, sequencer="0100", key="incoming/contacts/k.csv")
    other = file("x", "contacts", 4.5)
    # Then v1 keeps the first position its key holds, v2 the later one
    assert ids(arrival_order([v2, other, v1])) == ["v1", "x", "v2"]
    assert sequencer_value("FF") == sequencer_value("00FF") < sequencer_value("0100")


def test_an_opted_out_folder_runs_in_parallel_but_never_two_versions_of_one_key():
    def parallel(job: str, key: str, second: float, sequencer: str) -> Entry:
        return Entry(
            job, group_of("events", "b", key, parallel=True), f"b/{key}", at(second), sequencer, at(second)
        )

    waiting = [
        parallel("a1", "incoming/events/a.csv", 1, "01"),
        parallel("b1", "incoming/events/b.csv", 2, "02"),
        parallel("a2", "incoming/events/a.csv", 3, "03"),
    ]
    assert ids(plan_grants(waiting, [], capacity=10, now=at(10))) == ["a1", "b1"]


def test_a_refusal_pauses_every_grant_until_its_backoff_expires():
    waiting = [file("c1", "contacts", 1), file("o1", "orders", 2)]
    assert plan_grants(waiting, [], capacity=10, now=at(10), paused_until=at(20)) == []
    assert ids(plan_grants(waiting, [], capacity=10, now=at(20), paused_until=at(20))) == ["c1", "o1"]


def test_a_file_handed_off_but_not_yet_waiting_keeps_its_objects_turn():
    # Given contacts' first file registered by the intake (its execution still mapping), and its
    # second file already waiting (its execution was faster)
    first = file("c1", "contacts", 1)
    first = Entry(
        first.job_id,
        first.group,
        first.source,
        first.event_time,
        first.sequencer,
        first.queued_at,
        "registered",
    )
    waiting = [first, file("c2", "contacts", 2), file("o1", "orders", 3)]
    # Then the second does not overtake the first; other objects are not held back
    assert ids(plan_grants(waiting, [], capacity=10, now=at(10))) == ["o1"]


def holder(name: str, obj: str, second: float) -> Entry:
    """A split file's turn, as the intake registers it at hand-off."""
    key = f"incoming/{obj}/{name}.csv"
    group = group_of(obj, "b", key, parallel=False)
    return Entry(turn_id(name), group, f"b/{key}", at(second), "01", at(second), "holding")


def part(job: str, of: Entry, index: int, queued: float, status: Status = "waiting") -> Entry:
    """One part's run of the split file ``of`` in the queue (it takes the holder's group)."""
    return Entry(job, of.group, of.source, of.event_time, of.sequencer, at(queued), status, of.job_id, index)


def test_a_split_file_holds_its_objects_turn_between_its_parts_and_lets_only_them_through():
    # Given a split file of contacts handed off first, then a small contacts file and an orders file
    big = holder("big", "contacts", 1)
    later, orders = file("c2", "contacts", 2), file("o1", "orders", 3)
    # When no part is waiting yet (the parts are uploading, or one part ended and the next is not queued)
    # Then the later contacts file waits behind the holder; orders is not held back
    assert ids(plan_grants([later, big, orders], [], capacity=10, now=at(10))) == ["o1"]
    # When part 1 waits (queued after the later file): it goes at its holder's place
    assert ids(plan_grants([later, orders, part("p1", big, 1, 9), big], [], capacity=10, now=at(10))) == [
        "p1",
        "o1",
    ]
    # When part 2 runs: the object is busy, the later file still waits
    running = [part("p2", big, 2, 11, "running")]
    assert plan_grants([later, big], running, capacity=10, now=at(12)) == []
    # And once the holder is gone (the split flow ended), the later file starts
    assert ids(plan_grants([later, orders], [], capacity=10, now=at(20))) == ["c2", "o1"]


def test_a_holder_lets_its_parts_through_in_part_order_and_waits_its_own_turn():
    # Given a contacts file dropped before the split file, still running
    earlier = file("c0", "contacts", 0)
    big = holder("big", "contacts", 1)
    parts = [part("p3", big, 3, 5), part("p2", big, 2, 6)]
    # Then the split file's parts wait for it
    assert plan_grants([big, *parts], [earlier], capacity=10, now=at(10)) == []
    # And when it ended: the lowest part first, one at a time
    assert ids(plan_grants([*parts, big], [], capacity=10, now=at(10))) == ["p2"]


def test_a_holder_never_takes_a_slot_and_a_part_whose_holder_is_gone_is_an_ordinary_file():
    big = holder("big", "contacts", 1)
    orphan = part("p1", big, 1, 5)
    orders = file("o1", "orders", 2)
    # A holder and a waiting file with capacity 1: the file starts (the holder counts for nothing)
    assert ids(plan_grants([big, orders], [], capacity=1, now=at(10))) == ["o1"]
    # A part whose holder left the queue (released by a backstop) starts in its arrival order
    assert ids(plan_grants([orders, orphan], [], capacity=10, now=at(10))) == ["p1", "o1"]
