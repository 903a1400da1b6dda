"""The import state machine's task logic: prepare, set the mapping, start, poll.

Each task takes the execution's state document (:class:`ImportState`) and returns it updated, with
``progress.next`` naming what the state machine does next (its Choice states only read that field):

- ``enqueue``: wait in the queue for a start slot (a ``.waitForTaskToken`` task, see
  :mod:`experiture_ingest.scheduling`); after a capacity refusal, ``progress.waitSeconds`` says how
  long the scheduler pauses grants (capped, jittered backoff);
- ``wait_poll``: wait ``progress.waitSeconds`` (a Wait with ``SecondsPath``), then poll again;
- ``collect``: the job completed; ``job_failed``, ``timed_out``, ``start_refused``: write a failure
  summary and end failed;
- ``progress.continueAsNew`` (with ``enqueue``/``wait_poll``): the loop has run
  ``poll.iterationsPerExecution`` rounds; continue as a new execution, which resumes the same step
  (a Standard execution is limited to 25,000 history events).

Poll waits grow from ``poll.initialSeconds`` by ``poll.factor`` up to ``poll.maxSeconds`` (docs: 5 s
to 60 s), whole seconds because ``SecondsPath`` takes an integer:

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
    AuthenticationError,
    ConflictError,
    ExperitureClient,
    ExperitureError,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    TransportError,
    WriteConflictError,
)
from experiture_ingest.client.idempotency import derived_key
from experiture_ingest.files.handoff import ImportRun, PollSettings
from experiture_ingest.files.mapping import MappingPlan, plan_mapping
from experiture_ingest.limits import IMPORT_QUEUE_MAX_SECONDS
from experiture_ingest.scheduling.policy import refusal_backoff
from experiture_ingest.scheduling.table import QueueTable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

Next = Literal[
    "mapping", "start", "enqueue", "wait_poll", "collect", "job_failed", "timed_out", "start_refused"
]
# What polling rides out (back to the wait loop until the deadline): the API down, throttling, no
# answer, credentials refused even after the secret was read again (rotation in progress).
POLL_OUTAGES = (ServerError, RateLimitedError, TransportError, AuthenticationError)
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
    # The queue: when the file first asked for a slot, start attempts with a definite answer (each
    # one its own Idempotency-Key), the enqueue task's timeout (what is left of queueMaxSeconds).
    queued_at: datetime | None = None
    start_attempts: int = 0
    queue_timeout_seconds: int = IMPORT_QUEUE_MAX_SECONDS
    last_refusal: str | None = None
    # Polling through outages: the one in progress, how many there were, the longest, failed polls.
    outage_started_at: datetime | None = None
    poll_outages: int = 0
    longest_outage_seconds: float = 0.0
    failed_polls: int = 0

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
    grant: dict[str, Any] | None = None  # the scheduler's SendTaskSuccess output (ResultPath $.grant)

    def wire(self) -> dict[str, Any]:
        doc = super().wire()
        doc["run"] = self.run.wire()
        doc.setdefault("mapping", None)  # present (if null) so the continuation's Input paths resolve
        doc.setdefault("job", None)
        doc["progress"]["nextExecutionName"] = self.progress.next_execution_name
        return doc


class TaskRetryPolicy(RetryPolicy):
    """The client's policy, except that a 429 is never retried in-process.

    A refusal may last hours, and a server may replay a refusal cached under its Idempotency-Key:
    a refused start goes back to the queue (a fresh key for the next attempt), a throttled poll back
    to the wait loop, any other task to the state machine's Retry. Nothing sleeps in a Lambda.
    """

    def next_delay(self, error: ExperitureError, attempt: int, elapsed: float) -> float | None:
        if isinstance(error, RateLimitedError):
            return None
        return super().next_delay(error, attempt, elapsed)


@dataclass
class TaskDeps:
    """What the tasks talk to; handlers build one per warm process, tests pass their own."""

    s3: S3Client
    client: ExperitureClient
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    rng: Callable[[], float] = random.random
    # The queue's table: which version of a key is the newest (where a summary goes).
    queue: QueueTable | None = None


def poll_wait(poll: PollSettings, attempt: int) -> int:
    """Seconds to wait before poll number ``attempt + 1``: exponential, capped, at least 1."""
    seconds = min(poll.max_seconds, poll.initial_seconds * poll.factor**attempt)
    return max(1, round(seconds))


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
        state.grant = None
        state.progress.execution_name = execution_name
        if state.progress.next == "start":  # a continuation never resumes mid-start: ask for a slot
            state.progress.next = "enqueue"
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
    state.progress.next = "enqueue"
    state.progress.phase_started_at = deps.now()
    state.progress.attempts = 0
    state.progress.queue_timeout_seconds = max(1, int(run.poll.queue_max_seconds))
    return state


def start(state: ImportState, deps: TaskDeps) -> ImportState:
    """Start the job now that the queue granted a slot; a capacity refusal goes back to the queue.

    Capacity refusals: 429 (``IMPORT.CONCURRENCY_LIMIT`` or ``RATE.LIMITED``), or 409 while the job
    is still ``ready``. Each attempt after a definite answer carries a fresh Idempotency-Key (a server
    may cache a refusal under its key); a retry after a lost answer (the task raised) reuses it, so a
    start that ran is replayed, not repeated.
    """
    run, progress = state.run, state.progress
    now = deps.now()
    grant = state.grant or {}
    progress.queued_at = progress.queued_at or _when(grant.get("queuedAt")) or now
    attempt = progress.start_attempts + 1
    key = derived_key(run.job_id, "start", str(attempt))
    try:
        answer = deps.client.start_import(run.job_id, idempotency_key=key)
        progress.remember(answer.correlation_id)
    except RateLimitedError as exc:
        return _refused(state, deps, exc, attempt, now)
    except ConflictError as exc:
        if isinstance(exc, WriteConflictError):
            raise
        # Refused for the job's state: still ready means the workspace is full; running or beyond
        # means an earlier attempt started it and its answer was lost.
        status = deps.client.get_import(run.job_id)
        progress.remember(status.correlation_id)
        if status.state == "ready":
            return _refused(state, deps, exc, attempt, now)
        if status.state not in ("running", "completed", "failed"):
            raise
    progress.start_attempts = attempt
    progress.job_started_at = now
    progress.attempts = 0
    progress.wait_seconds = poll_wait(run.poll, 0)
    progress.next = "wait_poll"
    return state


def _refused(
    state: ImportState, deps: TaskDeps, exc: ExperitureError, attempt: int, now: datetime
) -> ImportState:
    """Back to the queue after a backoff, or give up once ``poll.queueMaxSeconds`` is spent."""
    run, progress = state.run, state.progress
    progress.remember(exc.correlation_id)
    progress.start_attempts = attempt
    progress.iterations += 1
    progress.last_refusal = f"{exc.status} {exc.code or type(exc).__name__}"
    pause = refusal_backoff(
        attempt,
        initial_seconds=run.poll.initial_seconds,
        max_seconds=run.poll.max_seconds,
        retry_after=exc.retry_after,
        rng=deps.rng,
    )
    waited = (now - (progress.queued_at or now)).total_seconds()
    if waited + pause > run.poll.queue_max_seconds:
        state.error = _error_doc(
            exc, f"the workspace refused {attempt} start(s) over {waited:.0f} s, the queue's limit"
        )
        progress.next = "start_refused"
        return state
    logger.info(
        "start refused (%s); back in the queue, starts paused %.0f s",
        progress.last_refusal,
        pause,
        extra={"job_id": run.job_id},
    )
    progress.wait_seconds = max(1, round(pause))
    progress.queue_timeout_seconds = max(1, int(run.poll.queue_max_seconds - waited))
    progress.next = "enqueue"
    progress.continue_as_new = progress.iterations >= run.poll.iterations_per_execution
    return state


def poll(state: ImportState, deps: TaskDeps) -> ImportState:
    """Read the job's state; decide between collect, fail, time out, wait again or continue.

    An outage (5xx, 429, no answer, 401 after the secret was read again) is another wait, counted
    in ``progress``; only the deadline (from the job's start) ends a run whose job may still finish.
    """
    run, progress = state.run, state.progress
    progress.attempts += 1
    progress.iterations += 1
    try:
        status = deps.client.get_import(run.job_id)
    except POLL_OUTAGES as exc:
        return _poll_outage(state, deps, exc)
    now = deps.now()
    _end_outage(progress, now)
    progress.remember(status.correlation_id)
    state.job = status.model_dump(by_alias=True, mode="json", exclude={"correlation_id"})
    if status.state == "completed":
        progress.next = "collect"
    elif status.state == "failed":
        progress.next = "job_failed"
    else:
        _wait_or_time_out(state, now)
    return state


def _poll_outage(state: ImportState, deps: TaskDeps, exc: ExperitureError) -> ImportState:
    progress = state.progress
    now = deps.now()
    progress.remember(exc.correlation_id)
    progress.failed_polls += 1
    if progress.outage_started_at is None:
        progress.outage_started_at = now
        logger.warning("polling failed (%s); waiting it out until the deadline", exc)
    _wait_or_time_out(state, now)
    if progress.next == "timed_out":
        _end_outage(progress, now)
    return state


def _end_outage(progress: Progress, now: datetime) -> None:
    if progress.outage_started_at is None:
        return
    lasted = (now - progress.outage_started_at).total_seconds()
    progress.poll_outages += 1
    progress.longest_outage_seconds = round(max(progress.longest_outage_seconds, lasted), 3)
    progress.outage_started_at = None


def _wait_or_time_out(state: ImportState, now: datetime) -> None:
    run, progress = state.run, state.progress
    since = progress.job_started_at or progress.started_at
    if (now - since).total_seconds() >= run.poll.deadline_seconds:
        progress.next = "timed_out"
        return
    progress.wait_seconds = poll_wait(run.poll, progress.attempts)
    progress.next = "wait_poll"
    progress.continue_as_new = progress.iterations >= run.poll.iterations_per_execution


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _error_doc(exc: BaseException, note: str | None = None) -> dict[str, Any]:
    """The shape Step Functions gives a caught error: ``{"Error": type, "Cause": text}``."""
    message = f"{exc} ({note})" if note else str(exc)
    return {"Error": type(exc).__name__, "Cause": message}
