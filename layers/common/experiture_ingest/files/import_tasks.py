"""The import state machine's task logic: prepare, set the mapping, start, poll.

Each task takes the execution's state document (:class:`ImportState`) and returns it updated, with
``progress.next`` naming what the state machine does next (its Choice states only read that field):

- ``wait_start`` / ``wait_poll``: wait ``progress.waitSeconds`` (a Wait with ``SecondsPath``), then
  start again / poll again;
- ``collect``: the job completed; ``job_failed``, ``timed_out``, ``start_refused``: write a failure
  summary and end failed;
- ``progress.continueAsNew`` (with ``wait_start``/``wait_poll``): the loop has run
  ``poll.iterationsPerExecution`` rounds; continue as a new execution, which resumes the same wait
  (a Standard execution is limited to 25,000 history events).

Waits grow from ``poll.initialSeconds`` by ``poll.factor`` up to ``poll.maxSeconds`` (docs: 5 s to
60 s), whole seconds because ``SecondsPath`` takes an integer:

>>> from experiture_ingest.files.handoff import PollSettings
>>> [poll_wait(PollSettings(), n) for n in range(8)]
[5, 8, 11, 17, 25, 38, 57, 60]
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from experiture_ingest.client import (
    ConcurrencyLimitError,
    ConflictError,
    ExperitureClient,
    ExperitureError,
    RetryPolicy,
    WriteConflictError,
)
from experiture_ingest.client.idempotency import derived_key
from experiture_ingest.files.handoff import ImportRun, PollSettings
from experiture_ingest.files.mapping import MappingPlan, plan_mapping

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

Next = Literal[
    "mapping", "start", "wait_start", "wait_poll", "collect", "job_failed", "timed_out", "start_refused"
]
MAX_CORRELATION_IDS = 20
EXECUTION_NAME_MAX = 80


class _Doc(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


class Progress(_Doc):
    """Where the run is: phase, loop counters, the next wait, and when things began."""

    next: Next = "mapping"
    started_at: datetime
    execution_name: str
    root_name: str
    executions: int = 1
    iterations: int = 0
    attempts: int = 0
    phase_started_at: datetime | None = None
    job_started_at: datetime | None = None
    wait_seconds: int = 0
    continue_as_new: bool = False
    correlation_ids: list[str] = Field(default_factory=list)

    def remember(self, correlation_id: str | None) -> None:
        if correlation_id and correlation_id not in self.correlation_ids:
            self.correlation_ids = [*self.correlation_ids, correlation_id][-MAX_CORRELATION_IDS:]

    @property
    def next_execution_name(self) -> str:
        """A deterministic name for the continuation: a retried StartExecution is absorbed."""
        suffix = f"-c{self.executions + 1}"
        return self.root_name[: EXECUTION_NAME_MAX - len(suffix)] + suffix


class ImportState(_Doc):
    """The state machine's document: the hand-off, progress, the mapping, the job, a caught error."""

    run: ImportRun
    progress: Progress
    mapping: MappingPlan | None = None
    job: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def wire(self) -> dict[str, Any]:
        doc = super().wire()
        doc["run"] = self.run.wire()
        doc.setdefault("mapping", None)  # present (if null) so the continuation's Input paths resolve
        doc.setdefault("job", None)
        doc["progress"]["nextExecutionName"] = self.progress.next_execution_name
        return doc


class TaskRetryPolicy(RetryPolicy):
    """The client's policy, except that a refused start is not retried in-process.

    A concurrency refusal may last hours: the state machine waits between starts (a Wait costs
    nothing), instead of a Lambda sleeping.
    """

    def next_delay(self, error: ExperitureError, attempt: int, elapsed: float) -> float | None:
        if isinstance(error, ConcurrencyLimitError):
            return None
        return super().next_delay(error, attempt, elapsed)


@dataclass
class TaskDeps:
    """What the tasks talk to; handlers build one per warm process, tests pass their own."""

    s3: S3Client
    client: ExperitureClient
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    rng: Callable[[], float] = random.random


def poll_wait(poll: PollSettings, attempt: int) -> int:
    """Seconds to wait before poll number ``attempt + 1``: exponential, capped, at least 1."""
    seconds = min(poll.max_seconds, poll.initial_seconds * poll.factor**attempt)
    return max(1, round(seconds))


def start_wait(poll: PollSettings, attempt: int, retry_after: float | None, rng: Callable[[], float]) -> int:
    """Seconds to wait before starting again after ``attempt`` refusals: capped, with (equal) jitter.

    ``Retry-After`` is honoured as a floor, up to the cap (``poll.maxSeconds``).

    >>> start_wait(PollSettings(), 1, 30, lambda: 0.0), start_wait(PollSettings(), 9, None, lambda: 1.0)
    (30, 60)
    """
    ceiling = min(poll.max_seconds, poll.initial_seconds * poll.factor**attempt)
    delay = ceiling / 2 + rng() * ceiling / 2
    if retry_after is not None:
        delay = max(delay, min(retry_after, poll.max_seconds))
    return max(1, round(delay))


def prepare(
    event: dict[str, Any], execution_name: str, execution_start: str | None, now: datetime
) -> ImportState:
    """The state document from the execution's input: a fresh :class:`ImportRun` or a continuation.

    >>> state = prepare({"jobId": "imp_1", "objectName": "contacts", "source": {"bucket": "b",
    ...     "key": "incoming/contacts/a.csv", "size": 3, "format": "csv"}}, "exec-1", None,
    ...     datetime(2026, 1, 1, tzinfo=UTC))
    >>> state.progress.next, state.progress.executions, state.progress.next_execution_name
    ('mapping', 1, 'exec-1-c2')
    """
    if "run" in event and "progress" in event:
        state = ImportState.model_validate(event)
        state.progress.executions += 1
        state.progress.iterations = 0
        state.progress.continue_as_new = False
        state.error = None
        state.progress.execution_name = execution_name
        return state
    run = ImportRun.model_validate(event)
    started = datetime.fromisoformat(execution_start) if execution_start else now
    progress = Progress(started_at=started, execution_name=execution_name, root_name=execution_name)
    return ImportState(run=run, progress=progress)


def plan(state: ImportState, deps: TaskDeps) -> ImportState:
    """Decide the mapping (given, template or inferred from the header and the object's schema).

    A task of its own, so the plan is in the state document (and the summary) even when the API
    then refuses it.
    """
    run = state.run
    state.mapping, schema_cid = plan_mapping(deps.s3, deps.client, run.object_name, run.source, run.options)
    state.progress.remember(schema_cid)
    return state


def set_mapping(state: ImportState, deps: TaskDeps) -> ImportState:
    """Send the planned mapping; a 422 (unknown field, unmapped key) raises SchemaMismatchError."""
    run = state.run
    if state.mapping is None:
        raise ValueError("no mapping was planned; the PlanMapping state must run first")
    answer = deps.client.set_mapping(
        run.job_id, state.mapping.request(), idempotency_key=derived_key(run.job_id, "mapping")
    )
    state.progress.remember(answer.correlation_id)
    state.progress.next = "start"
    state.progress.phase_started_at = deps.now()
    state.progress.attempts = 0
    return state


def start(state: ImportState, deps: TaskDeps) -> ImportState:
    """Start the job; a concurrency refusal schedules another try (until ``poll.startRetrySeconds``)."""
    run, progress = state.run, state.progress
    now = deps.now()
    progress.phase_started_at = progress.phase_started_at or now
    # One key for every attempt: a refused start (429) is not stored under it, and a lost answer to
    # a start that did run is replayed instead of starting twice.
    key = derived_key(run.job_id, "start")
    try:
        answer = deps.client.start_import(run.job_id, idempotency_key=key)
        progress.remember(answer.correlation_id)
    except ConcurrencyLimitError as exc:
        progress.remember(exc.correlation_id)
        progress.attempts += 1
        progress.iterations += 1
        wait = start_wait(run.poll, progress.attempts, exc.retry_after, deps.rng)
        waited = (now - progress.phase_started_at).total_seconds()
        if waited + wait > run.poll.start_retry_seconds:
            state.error = _error_doc(
                exc, f"the workspace stayed at its running-jobs limit for {waited:.0f} s"
            )
            progress.next = "start_refused"
            return state
        logger.info(
            "start refused (workspace at its limit); trying again in %d s", wait, extra={"job_id": run.job_id}
        )
        progress.wait_seconds = wait
        progress.next = "wait_start"
        progress.continue_as_new = progress.iterations >= run.poll.iterations_per_execution
        return state
    except ConflictError as exc:
        if isinstance(exc, WriteConflictError):
            raise
        # An earlier attempt may have started it and lost the answer: believe the job's state.
        status = deps.client.get_import(run.job_id)
        if status.state not in ("running", "completed", "failed"):
            raise
        progress.remember(status.correlation_id)
    progress.job_started_at = now
    progress.attempts = 0
    progress.wait_seconds = poll_wait(run.poll, 0)
    progress.next = "wait_poll"
    return state


def poll(state: ImportState, deps: TaskDeps) -> ImportState:
    """Read the job's state; decide between collect, fail, time out, wait again or continue."""
    run, progress = state.run, state.progress
    status = deps.client.get_import(run.job_id)
    progress.remember(status.correlation_id)
    state.job = status.model_dump(by_alias=True, mode="json", exclude={"correlation_id"})
    progress.attempts += 1
    progress.iterations += 1
    if status.state == "completed":
        progress.next = "collect"
    elif status.state == "failed":
        progress.next = "job_failed"
    elif (deps.now() - progress.started_at).total_seconds() >= run.poll.deadline_seconds:
        progress.next = "timed_out"
    else:
        progress.wait_seconds = poll_wait(run.poll, progress.attempts)
        progress.next = "wait_poll"
        progress.continue_as_new = progress.iterations >= run.poll.iterations_per_execution
    return state


def _error_doc(exc: BaseException, note: str | None = None) -> dict[str, Any]:
    """The shape Step Functions gives a caught error: ``{"Error": type, "Cause": text}``."""
    message = f"{exc} ({note})" if note else str(exc)
    return {"Error": type(exc).__name__, "Cause": message}
