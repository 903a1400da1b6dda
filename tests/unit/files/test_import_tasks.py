"""Task logic of the import state machine: waits, start refusals, deadlines, continuations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from experiture_ingest.client import ConcurrencyLimitError, ImportJobStatus, ImportStarted
from experiture_ingest.files.handoff import PollSettings
from experiture_ingest.files.import_tasks import (
    ImportState,
    TaskDeps,
    poll,
    poll_wait,
    prepare,
    start,
    start_wait,
)

T0 = datetime(2026, 4, 21, 15, 0, tzinfo=UTC)
RUN = {
    "jobId": "imp_1",
    "objectName": "contacts",
    "source": {"bucket": "b", "key": "incoming/contacts/a.csv", "size": 10, "format": "csv"},
}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class FakeApi:
    """Answers like the API: a start refused ``refusals`` times, then a job in ``states`` order."""

    def __init__(self, refusals: int = 0, states: list[str] | None = None) -> None:
        self.refusals = refusals
        self.states = states or ["running"]

    def start_import(self, job_id: str, *, idempotency_key: str | None = None) -> ImportStarted:
        if self.refusals:
            self.refusals -= 1
            raise ConcurrencyLimitError(
                "limit", status=429, code="CDP_ETL.IMPORT.CONCURRENCY_LIMIT", retry_after=30
            )
        return ImportStarted(status="started", job_id=job_id)

    def get_import(self, job_id: str) -> ImportJobStatus:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return ImportJobStatus(state=state, job_id=job_id, read_rows=3, valid_rows=3)


def deps(api: FakeApi, clock: Clock) -> TaskDeps:
    return TaskDeps(s3=None, client=api, now=clock, rng=lambda: 0.5)  # type: ignore[arg-type]


def fresh(poll_settings: dict[str, Any] | None = None) -> ImportState:
    return prepare({**RUN, "poll": poll_settings or {}}, "exec-1", T0.isoformat(), T0)


def test_poll_waits_follow_the_documented_cadence_and_can_be_shrunk():
    assert [poll_wait(PollSettings(), n) for n in range(9)] == [5, 8, 11, 17, 25, 38, 57, 60, 60]
    assert poll_wait(PollSettings(initial_seconds=0.1, max_seconds=0.2), 5) == 1  # never below 1 s


def test_start_wait_is_capped_jittered_and_honours_retry_after_up_to_the_cap():
    poll_settings = PollSettings()
    assert start_wait(poll_settings, 1, 30, lambda: 0.0) == 30
    assert start_wait(poll_settings, 20, 500, lambda: 1.0) == 60
    spread = {start_wait(poll_settings, 6, None, lambda r=r: r) for r in (0.0, 0.5, 1.0)}
    assert len(spread) == 3 and max(spread) <= 60


def test_a_refused_start_is_scheduled_again_then_starts():
    # Given a workspace full for two attempts
    clock, api = Clock(), FakeApi(refusals=2)
    state = fresh()
    # When the start task runs three times
    for expected in ("wait_start", "wait_start", "wait_poll"):
        state = start(state, deps(api, clock))
        assert state.progress.next == expected
        clock.now += timedelta(seconds=state.progress.wait_seconds)
    # Then the job started, the next wait is the first poll wait
    assert state.progress.job_started_at is not None
    assert state.progress.wait_seconds == 5


def test_a_start_refused_past_start_retry_seconds_gives_up_with_the_reason():
    clock, api = Clock(), FakeApi(refusals=100)
    state = fresh({"startRetrySeconds": 120})
    while state.progress.next in ("mapping", "start", "wait_start"):
        state = start(state, deps(api, clock))
        clock.now += timedelta(seconds=state.progress.wait_seconds)
    assert state.progress.next == "start_refused"
    assert state.error is not None and state.error["Error"] == "ConcurrencyLimitError"
    assert (clock.now - T0).total_seconds() <= 120 + 60


def test_poll_decides_collect_failed_deadline_and_continue():
    clock = Clock()
    assert poll(fresh(), deps(FakeApi(states=["completed"]), clock)).progress.next == "collect"
    assert poll(fresh(), deps(FakeApi(states=["failed"]), clock)).progress.next == "job_failed"
    late = Clock()
    late.now = T0 + timedelta(hours=49)
    assert poll(fresh(), deps(FakeApi(), late)).progress.next == "timed_out"
    state = fresh({"iterationsPerExecution": 2})
    state = poll(state, deps(FakeApi(), clock))
    assert (state.progress.next, state.progress.continue_as_new) == ("wait_poll", False)
    state = poll(state, deps(FakeApi(), clock))
    assert (state.progress.next, state.progress.continue_as_new) == ("wait_poll", True)


def test_a_continuation_resumes_with_fresh_counters_and_a_deterministic_next_name():
    state = fresh({"iterationsPerExecution": 1})
    state = poll(state, deps(FakeApi(), Clock()))
    doc = state.wire()
    assert doc["progress"]["nextExecutionName"] == "exec-1-c2"
    resumed = prepare(doc, "exec-1-c2", None, T0 + timedelta(hours=1))
    assert resumed.progress.executions == 2 and resumed.progress.iterations == 0
    assert resumed.progress.started_at == T0, "the deadline counts from the first execution"
    assert resumed.progress.next == "wait_poll" and not resumed.progress.continue_as_new
    assert resumed.wire()["progress"]["nextExecutionName"] == "exec-1-c3"


def test_prepare_refuses_an_input_that_is_not_an_import_run():
    with pytest.raises(ValueError, match="jobId"):
        prepare({"source": {"bucket": "b"}}, "x", None, T0)
