"""The scheduler over its real table (moto DynamoDB) and Step Functions' task tokens (a stand-in that
keeps executions waiting on tokens, as Step Functions does): who gets a slot, when it comes back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from cli.local_aws import QUEUE_TABLE_ID, create_table, load_template
from experiture_ingest.scheduling import Enqueue, QueueSettings, QueueTable, Scheduler

T0 = datetime(2026, 4, 1, tzinfo=UTC)


@dataclass
class Executions:
    """Executions waiting on task tokens: SendTaskSuccess resumes one; an ended one refuses the token."""

    waiting: dict[str, str] = field(default_factory=dict)  # token -> execution arn
    status: dict[str, str] = field(default_factory=dict)  # arn -> RUNNING | ABORTED | SUCCEEDED
    granted: list[str] = field(default_factory=list)  # execution arns, in grant order

    def send_task_success(self, taskToken: str, output: str) -> None:
        arn = self.waiting.pop(taskToken, None)
        if arn is None or self.status.get(arn) != "RUNNING":
            raise ClientError({"Error": {"Code": "TaskTimedOut", "Message": "gone"}}, "SendTaskSuccess")
        assert json.loads(output)["queuedAt"]
        self.granted.append(arn)

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        return {"status": self.status[executionArn], "output": None}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def table() -> Iterator[QueueTable]:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        create_table(dynamodb, load_template(), QUEUE_TABLE_ID, "queue")
        yield QueueTable(dynamodb, "queue")


def scheduler(table: QueueTable, sfn: Executions, clock: Clock, capacity: int = 2) -> Scheduler:
    settings = QueueSettings(IMPORT_QUEUE_TABLE="queue", IMPORT_MAX_RUNNING_JOBS=capacity)
    return Scheduler(table, sfn, settings, clock=clock)


def enqueue(
    sched: Scheduler, sfn: Executions, job: str, obj: str, second: int, pause: float | None = None
) -> str:
    arn = f"arn:exec:{job}"
    token = f"token-{job}-{len(sfn.waiting)}-{second}"
    sfn.waiting[token] = arn
    sfn.status[arn] = "RUNNING"
    sched.enqueue(
        Enqueue(
            job_id=job,
            object_name=obj,
            group=f"object:{obj}",
            bucket="b",
            key=f"incoming/{obj}/{job}.csv",
            event_time=T0 + timedelta(seconds=second),
            sequencer=f"{second:02X}",
            task_token=token,
            execution_arn=arn,
            pause_seconds=pause,
        )
    )
    return arn


def test_slots_go_in_arrival_order_and_come_back_on_release(table: QueueTable):
    sfn, clock = Executions(), Clock()
    sched = scheduler(table, sfn, clock)
    for second, (job, obj) in enumerate(
        [("c1", "contacts"), ("c2", "contacts"), ("o1", "orders"), ("p1", "profiles")]
    ):
        enqueue(sched, sfn, job, obj, second)
    # Two slots: c1 and o1 start (c2 waits for contacts to be free)
    assert sfn.granted == ["arn:exec:c1", "arn:exec:o1"]
    # When c1 ends, contacts' next file takes the slot before p1 (it arrived first)
    sched.release("c1")
    assert sfn.granted[-1] == "arn:exec:c2"
    report = sched.release("o1")
    assert sfn.granted[-1] == "arn:exec:p1"
    assert (report.running, report.waiting) == (2, 0)
    sched.release("c2")
    sched.release("p1")
    assert table.entries() == []


def test_a_waiting_execution_that_was_aborted_gives_its_turn_to_the_next(table: QueueTable):
    sfn, clock = Executions(), Clock()
    sched = scheduler(table, sfn, clock, capacity=1)
    enqueue(sched, sfn, "a", "contacts", 0)
    enqueue(sched, sfn, "b", "orders", 1)
    enqueue(sched, sfn, "c", "profiles", 2)
    sfn.status["arn:exec:b"] = "ABORTED"  # stopped while it waited; no event delivered
    report = sched.release("a")
    assert sfn.granted == ["arn:exec:a", "arn:exec:c"]
    assert report.released == ["a", "b"]
    assert [e.job_id for e in table.entries()] == ["c"]


def test_a_refused_start_keeps_its_place_and_pauses_grants_for_the_backoff(table: QueueTable):
    sfn, clock = Executions(), Clock()
    sched = scheduler(table, sfn, clock, capacity=2)
    enqueue(sched, sfn, "a", "contacts", 0)
    enqueue(sched, sfn, "b", "orders", 1)
    enqueue(sched, sfn, "c", "profiles", 2)
    assert sfn.granted == ["arn:exec:a", "arn:exec:b"]
    # When a's start is refused: it enqueues again with a 30 s pause (the task's new token)
    enqueue(sched, sfn, "a", "contacts", 0, pause=30)
    # Then nothing is granted during the pause, not even c, which arrived later
    assert sfn.granted == ["arn:exec:a", "arn:exec:b"]
    clock.now += timedelta(seconds=29)
    sched.dispatch()
    assert len(sfn.granted) == 2
    # And after it, a goes first again
    clock.now += timedelta(seconds=1)
    sched.dispatch()
    assert sfn.granted[2] == "arn:exec:a"
    assert next(e for e in table.entries() if e.job_id == "a").start_attempts == 2


def test_the_sweeper_frees_a_slot_whose_execution_ended_without_a_release(table: QueueTable):
    sfn, clock = Executions(), Clock()
    sched = scheduler(table, sfn, clock, capacity=1)
    enqueue(sched, sfn, "a", "contacts", 0)
    enqueue(sched, sfn, "b", "orders", 1)
    sfn.status["arn:exec:a"] = "ABORTED"  # aborted while running: no release step ran
    report = sched.sweep()
    assert report.released == ["a"] and sfn.granted == ["arn:exec:a", "arn:exec:b"]


def test_a_dispatcher_acting_on_a_stale_view_cannot_overfill_a_slot_or_an_object(table: QueueTable):
    # Given a job running on contacts in slot 0, and two files waiting (one for contacts)
    sfn, clock = Executions(), Clock()
    sched = scheduler(table, sfn, clock, capacity=1)
    enqueue(sched, sfn, "a", "contacts", 0)
    enqueue(sched, sfn, "b", "orders", 1)
    enqueue(sched, sfn, "c", "contacts", 2)
    waiting = {e.job_id: e for e in table.entries() if e.status == "waiting"}
    # When another dispatcher, believing slot 0 free and contacts idle, grants them
    # Then the table refuses both; only a free slot on an idle object can be taken
    assert table.grant(waiting["b"], 0, clock.now) is False
    assert table.grant(waiting["c"], 3, clock.now) is False
    assert table.grant(waiting["b"], 1, clock.now) is True
    assert sorted(e.job_id for e in table.entries() if e.status == "running") == ["a", "b"]


def test_a_file_registered_at_hand_off_is_not_overtaken_by_a_later_file_of_its_object(table: QueueTable):
    # Given contacts' first file handed off (registered by the intake), its execution still mapping
    from experiture_ingest.scheduling import QueueEntry

    sfn, clock = Executions(), Clock()
    sched = scheduler(table, sfn, clock, capacity=5)
    table.add(
        QueueEntry(
            "c1", "contacts", "object:contacts", "b", "incoming/contacts/c1.csv", T0, "00", T0, "registered"
        )
    )
    # When a later contacts file and an orders file reach the queue first
    enqueue(sched, sfn, "c2", "contacts", 1)
    enqueue(sched, sfn, "o1", "orders", 2)
    # Then only orders starts; contacts waits for its first file, which starts once it arrives
    assert sfn.granted == ["arn:exec:o1"]
    enqueue(sched, sfn, "c1", "contacts", 0)
    assert sfn.granted == ["arn:exec:o1", "arn:exec:c1"]
    sched.release("c1")
    assert sfn.granted[-1] == "arn:exec:c2"


def test_a_split_files_turn_holds_its_object_between_its_parts_until_released(table: QueueTable):
    # Given a split file of contacts handed off (its turn registered by the intake), then a later
    # contacts file and an orders file waiting
    from experiture_ingest.scheduling import QueueEntry, turn_id

    sfn, clock = Executions(), Clock()
    sched = scheduler(table, sfn, clock, capacity=1)
    turn = turn_id("big.csv-00")
    split_arn = "arn:exec:split"
    sfn.status[split_arn] = "RUNNING"
    table.add(
        QueueEntry(
            turn, "contacts", "object:contacts", "b", "incoming/contacts/big.csv", T0, "00", T0, "holding",
            execution_arn=split_arn,
        )
    )  # fmt: skip
    enqueue(sched, sfn, "c2", "contacts", 1)
    enqueue(sched, sfn, "o1", "orders", 2)
    # Then orders takes the one slot (the holder takes none); contacts' later file waits
    assert sfn.granted == ["arn:exec:o1"]
    sched.release("o1")

    def enqueue_part(index: int) -> None:
        arn = f"arn:exec:part{index}"
        sfn.waiting[f"token-part{index}"] = arn
        sfn.status[arn] = "RUNNING"
        sched.enqueue(
            Enqueue(
                job_id=f"p{index}",
                object_name="contacts",
                group="key:b/incoming/contacts/other-key.csv",  # a manifest's part names another key
                bucket="b",
                key="incoming/contacts/big.csv",
                event_time=T0,
                sequencer="00",
                task_token=f"token-part{index}",
                execution_arn=arn,
                turn=turn,
                part=index,
            )
        )

    # When its parts come one after the other, each released before the next is queued
    for index in (1, 2, 3):
        enqueue_part(index)
        assert sfn.granted[-1] == f"arn:exec:part{index}"
        assert {e.job_id: e.group for e in table.entries()}[f"p{index}"] == "object:contacts"
        sched.release(f"p{index}")
        assert "arn:exec:c2" not in sfn.granted, "the later file started between two parts"
    # And when the flow ends and its turn is released, the later file starts, and nothing is left
    report = sched.release(turn)
    assert report.released == [turn] and sfn.granted[-1] == "arn:exec:c2"
    sched.release("c2")
    assert table.entries() == []


def test_the_sweeper_frees_the_turn_of_a_split_execution_that_ended_without_releasing_it(table: QueueTable):
    from experiture_ingest.scheduling import QueueEntry, turn_id

    sfn, clock = Executions(), Clock()
    sched = scheduler(table, sfn, clock, capacity=2)
    for name, arn, status in [("a", "arn:exec:split-a", "ABORTED"), ("b", "arn:exec:split-b", "RUNNING")]:
        sfn.status[arn] = status
        table.add(
            QueueEntry(
                turn_id(name), "contacts", "object:contacts", "b", f"incoming/contacts/{name}.csv",
                T0, "00", T0, "holding", execution_arn=arn,
            )
        )  # fmt: skip
    # An intake that wrote a turn but whose execution never started (a failed StartExecution)
    table.add(
        QueueEntry(
            turn_id("c"), "orders", "object:orders", "b", "incoming/orders/c.csv", T0, "00", T0, "holding",
            execution_arn="arn:exec:never-started",
        )
    )  # fmt: skip
    sfn_describe = sfn.describe_execution

    def describe(executionArn: str) -> dict[str, Any]:
        if executionArn not in sfn.status:
            raise ClientError({"Error": {"Code": "ExecutionDoesNotExist", "Message": "no"}}, "Describe")
        return sfn_describe(executionArn)

    sfn.describe_execution = describe  # type: ignore[method-assign]
    # When the sweeper runs: the ended execution's turn goes; the running one's stays; the never
    # started one stays within the grace time (its execution may be starting) and goes after it
    assert sched.sweep().released == [turn_id("a")]
    clock.now += timedelta(seconds=900)
    assert sched.sweep().released == [turn_id("c")]
    assert [e.job_id for e in table.entries()] == [turn_id("b")]
