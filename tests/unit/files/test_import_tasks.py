"""Task logic of the import state machine: waits, start refusals, polling outages, deadlines,
continuations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from experiture_ingest.client import (
    AuthenticationError,
    ConcurrencyLimitError,
    ConflictError,
    ExperitureError,
    ImportJobStatus,
    ImportStarted,
    RateLimitedError,
    ServerError,
    TransportError,
)
from experiture_ingest.files.handoff import PollSettings
from experiture_ingest.files.import_tasks import (
    ImportState,
    TaskDeps,
    poll,
    poll_wait,
    prepare,
    start,
)
from experiture_ingest.scheduling import refusal_backoff

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
    """Answers like the API: a start refused ``refusals`` times (``refusal``: 429 concurrency, 429 rate,
    or 409 while the job stays ready), then a job in ``states`` order; polls fail ``outages`` times."""

    def __init__(
        self,
        refusals: int = 0,
        states: list[str] | None = None,
        refusal: str = "concurrency",
        outages: list[ExperitureError] | None = None,
    ) -> None:
        self.refusals = refusals
        self.refusal = refusal
        self.states = states or ["running"]
        self.outages = list(outages or [])
        self.start_keys: list[str | None] = []
        self.started = False

    def start_import(self, job_id: str, *, idempotency_key: str | None = None) -> ImportStarted:
        self.start_keys.append(idempotency_key)
        if self.refusals:
            self.refusals -= 1
            if self.refusal == "rate":
                raise RateLimitedError("slow down", status=429, code="CDP_ETL.RATE.LIMITED", retry_after=2)
            if self.refusal == "conflict":
                raise ConflictError("not now", status=409, code="CDP_ETL.IMPORT.INVALID_STATE")
            raise ConcurrencyLimitError(
                "limit", status=429, code="CDP_ETL.IMPORT.CONCURRENCY_LIMIT", retry_after=30
            )
        self.started = True
        return ImportStarted(status="started", job_id=job_id)

    def get_import(self, job_id: str) -> ImportJobStatus:
        if self.outages:
            raise self.outages.pop(0)
        if not self.started and self.refusal == "conflict":
            return ImportJobStatus(state="ready", job_id=job_id)
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return ImportJobStatus(state=state, job_id=job_id, read_rows=3, valid_rows=3)


def deps(api: FakeApi, clock: Clock) -> TaskDeps:
    return TaskDeps(s3=None, client=api, now=clock, rng=lambda: 0.5)  # type: ignore[arg-type]


def fresh(poll_settings: dict[str, Any] | None = None) -> ImportState:
    return prepare({**RUN, "poll": poll_settings or {}}, "exec-1", T0.isoformat(), T0)


def test_poll_waits_follow_the_documented_cadence_and_can_be_shrunk():
    assert [poll_wait(PollSettings(), n) for n in range(9)] == [5, 8, 11, 17, 25, 38, 57, 60, 60]
    assert poll_wait(PollSettings(initial_seconds=0.1, max_seconds=0.2), 5) == 1  # never below 1 s


def test_the_refusal_backoff_is_capped_jittered_and_honours_retry_after_up_to_the_cap():
    def backoff(attempt: int, retry_after: float | None, r: float) -> float:
        return refusal_backoff(
            attempt, initial_seconds=5, max_seconds=60, retry_after=retry_after, rng=lambda: r
        )

    assert backoff(1, 30, 0.0) == 30
    assert backoff(20, 500, 1.0) == 60
    spread = {backoff(6, None, r) for r in (0.0, 0.5, 1.0)}
    assert len(spread) == 3 and max(spread) <= 60


@pytest.mark.parametrize("refusal", ["concurrency", "rate", "conflict"])
def test_a_refused_start_goes_back_to_the_queue_with_a_fresh_key_each_time(refusal: str):
    # Given a workspace full for two attempts, refusing with a 429 (either code) or a 409 while ready
    clock, api = Clock(), FakeApi(refusals=2, refusal=refusal)
    state = fresh()
    state.grant = {"queuedAt": T0.isoformat()}
    # When the start task runs three times (the queue granting a slot each time)
    for expected in ("enqueue", "enqueue", "wait_poll"):
        state = start(state, deps(api, clock))
        assert state.progress.next == expected
        clock.now += timedelta(seconds=state.progress.wait_seconds)
    # Then the job started on the third attempt, each attempt with its own Idempotency-Key
    assert state.progress.job_started_at is not None
    assert state.progress.start_attempts == 3
    assert len(set(api.start_keys)) == 3
    assert state.progress.queued_at == T0
    assert state.progress.wait_seconds == 5


def test_a_start_whose_answer_was_lost_is_retried_with_the_same_key():
    # Given a start attempt that raised (no answer: the state machine retries the task)
    class LostAnswer(FakeApi):
        def start_import(self, job_id: str, *, idempotency_key: str | None = None) -> ImportStarted:
            if not self.start_keys:
                self.start_keys.append(idempotency_key)
                raise TransportError("connection reset")
            return super().start_import(job_id, idempotency_key=idempotency_key)

    api, state = LostAnswer(), fresh()
    with pytest.raises(TransportError):
        start(state, deps(api, Clock()))
    # When the task runs again with the same document
    state = start(state, deps(api, Clock()))
    # Then it carried the same key, and the job started
    assert api.start_keys[0] == api.start_keys[1]
    assert state.progress.next == "wait_poll"


def test_a_start_refused_past_queue_max_seconds_gives_up_with_the_reason():
    clock, api = Clock(), FakeApi(refusals=100)
    state = fresh({"queueMaxSeconds": 120})
    while state.progress.next in ("mapping", "start", "enqueue"):
        state = start(state, deps(api, clock))
        clock.now += timedelta(seconds=state.progress.wait_seconds)
    assert state.progress.next == "start_refused"
    assert state.error is not None and state.error["Error"] == "ConcurrencyLimitError"
    assert (clock.now - T0).total_seconds() <= 120 + 60


@pytest.mark.parametrize(
    "outage",
    [
        ServerError("down", status=503),
        RateLimitedError("slow", status=429, code="CDP_ETL.RATE.LIMITED"),
        TransportError("timed out"),
        AuthenticationError("expired", status=401, code="CDP_ETL.AUTH.UNAUTHORIZED"),
    ],
    ids=["503", "429", "timeout", "401"],
)
def test_polling_rides_out_an_outage_and_counts_it(outage: ExperitureError):
    # Given a job whose status endpoint fails three times, then answers completed
    clock, api = Clock(), FakeApi(states=["completed"], outages=[outage] * 3)
    state = fresh()
    state.progress.job_started_at = T0
    # When it is polled until it ends
    while True:
        state = poll(state, deps(api, clock))
        if state.progress.next != "wait_poll":
            break
        clock.now += timedelta(seconds=state.progress.wait_seconds)
    # Then it is collected, and the outage is counted with its length
    assert state.progress.next == "collect"
    assert state.progress.poll_outages == 1 and state.progress.failed_polls == 3
    assert state.progress.longest_outage_seconds == 8 + 11 + 17  # the three waits it lasted


def test_an_outage_past_the_deadline_times_out_with_the_last_state_seen():
    clock, api = Clock(), FakeApi(states=["running"])
    state = fresh({"deadlineSeconds": 60})
    state.progress.job_started_at = T0
    state = poll(state, deps(api, clock))
    api.outages = [ServerError("down", status=503)] * 100
    while state.progress.next == "wait_poll":
        clock.now += timedelta(seconds=state.progress.wait_seconds)
        state = poll(state, deps(api, clock))
    assert state.progress.next == "timed_out"
    assert state.job is not None and state.job["state"] == "running"
    assert state.progress.poll_outages == 1


def test_poll_decides_collect_failed_deadline_and_continue():
    clock = Clock()
    assert poll(fresh(), deps(FakeApi(states=["completed"]), clock)).progress.next == "collect"
    assert poll(fresh(), deps(FakeApi(states=["failed"]), clock)).progress.next == "job_failed"
    late = Clock()
    late.now = T0 + timedelta(hours=49)  # the deadline counts from the job's start (else the run's)
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


def test_a_server_that_caches_its_refusal_under_the_key_cannot_hold_the_file_back():
    # Given a server that answers a key it refused once with the same refusal, for 24 hours (docs 002)
    class CachingApi(FakeApi):
        refused_keys: set[str | None] = set()

        def start_import(self, job_id: str, *, idempotency_key: str | None = None) -> ImportStarted:
            if idempotency_key in self.refused_keys:
                self.start_keys.append(idempotency_key)
                raise ConcurrencyLimitError("cached", status=429, code="CDP_ETL.IMPORT.CONCURRENCY_LIMIT")
            try:
                return super().start_import(job_id, idempotency_key=idempotency_key)
            except ConcurrencyLimitError:
                self.refused_keys.add(idempotency_key)
                raise

    clock, api = Clock(), CachingApi(refusals=1)
    state = fresh()
    # When the queue grants the slot again after the refusal
    state = start(state, deps(api, clock))
    clock.now += timedelta(seconds=state.progress.wait_seconds)
    state = start(state, deps(api, clock))
    # Then the second attempt, under a fresh key, started the job
    assert state.progress.next == "wait_poll" and api.started
